#!/usr/bin/env python3
"""Choose among the models `lj_train.py --keep-evals` saved, with the Debian guard as the judge.

  python models/recipe/lj_guard_choice.py 'models/recipe/work/lj/ckpt-f.step*.pt' [more checkpoints ...]

The held-out TRAIN slices are all training domains, and none of them predicted the losses out of
domain (README: "An out-of-domain guard"). So the rule, fixed before any test split is scored:
1. admissible on the held-out slices: no held-out set below init (the gains each checkpoint
   recorded at its evaluation);
2. admissible on the guard: pure rerank (`8:384`, no blend) of the guard's hybrid top-100 not
   below the init's nDCG@10 there (exit 6:384, the bi-encoder);
3. of those, the best mean held-out gain on the retrieval sets (lj_train's `selection`).
Each candidate is exported as int8 blocks only (`lj_export.py --fixture`, a scratch directory
inside models/ so the tower path resolves) and scored with the release `sieve eval`; prints one
JSON line per candidate and the choice. Needs guard_debian.py's set and `cargo build --release`.
"""
import argparse, glob, json, os, shutil, subprocess, sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from lj_train import selection  # noqa: E402


def ndcg(report, stage):
    """nDCG@10 of `stage` in a `sieve eval --json` report."""
    for row in report['stages']:
        if row['stage'] == stage:
            return row['metrics']['ndcg@10']
    sys.exit(f'no stage {stage!r} in the guard report')


def guard_score(ckpt, scratch, guard, sieve):
    subprocess.run([sys.executable, os.path.join(HERE, 'lj_export.py'), '--ckpt', ckpt, '--out', scratch, '--fixture'],
                   check=True, stdout=subprocess.DEVNULL)
    out = os.path.join(scratch, 'guard.json')
    subprocess.run([sieve, 'eval', '--dataset', guard, '--split', 'test', '--stages', 'dense,rerank', '--window', '100',
                    '--budget', '8:384', '--blend', 'off', '--reranker', scratch, '--json', out],
                   check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    with open(out) as f:
        rep = json.load(f)
    return ndcg(rep, 'rerank 8:384'), ndcg(rep, 'dense')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('ckpts', nargs='+', help='checkpoints (globs allowed)')
    ap.add_argument('--guard', default=os.path.join(HERE, 'work', 'guard', 'debian'))
    ap.add_argument('--sieve', default=os.path.join(REPO, 'target', 'release', 'sieve'))
    ap.add_argument('--scratch', default=os.path.join(REPO, 'models', 'sieve-ce-guard-choice'))
    args = ap.parse_args()
    paths = sorted({p for pat in args.ckpts for p in (glob.glob(pat) or [pat])})
    rows = []
    try:
        for p in paths:
            extra = torch.load(p, map_location='cpu', weights_only=False)['extra']
            held = extra['heldout']
            row = {'ckpt': p, 'step': extra.get('step'), 'heldout_gain': {k: round(v['gain'], 4) for k, v in held.items()},
                   'selection': round(selection(held), 4)}
            row['heldout_ok'] = min(v['gain'] for v in held.values()) >= 0
            if row['heldout_ok']:
                row['guard'], row['guard_init'] = guard_score(p, args.scratch, args.guard, args.sieve)
                row['guard_ok'] = row['guard'] >= row['guard_init']
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(args.scratch, ignore_errors=True)
    ok = [r for r in rows if r['heldout_ok'] and r.get('guard_ok')]
    if not ok:
        sys.exit('no candidate is admissible on both the held-out slices and the guard')
    best = max(ok, key=lambda r: r['selection'])
    print(json.dumps({'chosen': best['ckpt'], 'step': best['step'], 'guard': best['guard'], 'selection': best['selection']}))


if __name__ == '__main__':
    main()
