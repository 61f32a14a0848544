#!/usr/bin/env python3
"""Average the weights of several sieve-ce v2 runs (a model soup, Wortsman et al., ICML 2022).

  python models/recipe/lj_soup.py --out models/recipe/work/lj/soup.pt CKPT CKPT [CKPT ...]

Two runs of one recipe that differ only in the order of their training groups end in different
places: on the held-out slices and the guard they differ by as much as settings do (README, "Weight
averaging (EMA)"). Choosing one of them picks noise; averaging them keeps what they agree on, and
a uniform average is a model of the same architecture that costs nothing more at query time. It
works only for runs in one basin: all start from the same init (the bi-encoder, gates 0), but a
gate may open with either sign (`gate_sign_flips`), and runs whose gates disagree are refused.

Every ingredient must also share the soup's architecture, its state codec (fitted on the
documents' states when a run starts: runs on one build of work/ share it, runs on another do not)
and its held-out split (else the soup's held-out score would count queries that one of its
ingredients trained on). The soup is scored on the held-out TRAIN slices exactly as lj_train.py
scores its checkpoints and written with those gains, so `lj_guard_choice.py` judges it like any
other candidate. `--greedy` builds a greedy soup instead: ingredients in order of their own
recorded held-out selection score, each kept only if the soup's selection score does not drop.
"""
import argparse, json, os, sys, time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from lj_data import States  # noqa: E402
from lj_train import gate_values, heldout_eval, heldout_records, heldout_windows, load_checkpoint, save_checkpoint, selection  # noqa: E402


def load_ingredient(path):
    """-> (raw checkpoint dict, its model, its codec)."""
    ck = torch.load(path, map_location='cpu', weights_only=False)
    model, codec = load_checkpoint(path)
    return ck, model, codec


def same_codec(a, b):
    return a.mean.shape == b.mean.shape and a.P.shape == b.P.shape and \
        np.array_equal(np.asarray(a.mean), np.asarray(b.mean)) and np.array_equal(np.asarray(a.P), np.asarray(b.P))


def gate_sign_flips(a, b):
    """Names of the scalar gates (`g_*`) that opened with opposite signs in two models. Every gate
    starts at 0 and tanh(g) multiplies a branch whose output layer starts from the tower's weights,
    so the sign a gate takes in its first steps depends on the order of the data, and a run whose
    gate went negative learned to subtract that branch: averaging it with a run that adds it
    cancels the branch (three runs here, one with both feed-forward gates negative: the uniform
    soup's held-out SciFact gain fell from +0.088 to +0.015)."""
    ga, gb = gate_values(a), gate_values(b)
    return [k for k in ga if ga[k] * gb[k] < 0]


def average(state_dicts):
    """Uniform mean of floating-point tensors; other tensors must be equal and are taken as they are."""
    out = {}
    for k, v in state_dicts[0].items():
        if v.is_floating_point():
            out[k] = torch.stack([sd[k].float() for sd in state_dicts]).mean(0).to(v.dtype)
        else:
            if any(not torch.equal(v, sd[k]) for sd in state_dicts[1:]):
                sys.exit(f'ingredients differ in the non-float tensor {k!r}: not one architecture')
            out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('ckpts', nargs='+', help='checkpoints of runs on the same build of work/')
    ap.add_argument('--out', required=True)
    ap.add_argument('--greedy', action='store_true', help='greedy soup instead of a uniform one')
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    if len(args.ckpts) < 2:
        sys.exit('a soup needs at least two checkpoints')
    torch.set_num_threads(args.threads)
    ingredients = [(p, *load_ingredient(p)) for p in args.ckpts]
    first_path, first_ck, first_model, codec = ingredients[0]
    for p, ck, model, c in ingredients[1:]:
        if not same_codec(codec, c):
            sys.exit(f'{p}: its state codec differs from {first_path}\'s (a run on another build of work/)')
        split = ('heldout', 'seed', 'general', 'debian', 'retrieved_positives')
        theirs, ours = ck['config'].get('train_args') or {}, first_ck['config'].get('train_args') or {}
        if any(theirs.get(k) != ours.get(k) for k in split):
            sys.exit(f'{p}: held out other TRAIN queries than {first_path} (its {split} differ), '
                     'so the soup would be scored on queries one of its ingredients trained on')
        if set(model.state_dict()) != set(first_model.state_dict()) or any(
                v.shape != first_model.state_dict()[k].shape for k, v in model.state_dict().items()):
            sys.exit(f'{p}: not the architecture of {first_path}')
        flipped = gate_sign_flips(first_model, model)
        if flipped:
            sys.exit(f'{p}: its gates {flipped} opened with the other sign than {first_path}\'s, so the two runs '
                     'sit in different basins and their average cancels those branches (leave it out of the soup)')

    targs = first_ck['config'].get('train_args') or {}
    lj = os.path.join(args.work, 'lj')
    qst, docs = States(lj, 'query'), States(lj, 'doc')
    held = heldout_records(args.work, targs, docs, qst)
    windows = heldout_windows(args.work, args.data_root, held, targs.get('heldout_windows', 100))
    soup = load_checkpoint(first_path)[0]

    def score(paths):
        t0 = time.time()
        soup.load_state_dict(average([m.state_dict() for p, _, m, _ in ingredients if p in paths]))
        ev = heldout_eval(soup, qst, docs, codec, held, windows)
        print(json.dumps({'ingredients': paths, 'gains': {k: round(v['gain'], 4) for k, v in ev.items()},
                          'selection': round(selection(ev), 4), 'wall_s': round(time.time() - t0)}), flush=True)
        return ev

    if args.greedy:
        ranked = sorted(ingredients, key=lambda t: -selection(t[1]['extra']['heldout']))
        chosen = [ranked[0][0]]
        best = ranked[0][1]['extra']['heldout']
        for p, *_ in ranked[1:]:
            ev = score(chosen + [p])
            if selection(ev) >= selection(best):
                chosen, best = chosen + [p], ev
        if len(chosen) == 1:
            print(json.dumps({'written': None, 'reason': 'no second ingredient kept the held-out score'}))
            return
    else:
        chosen = [p for p, *_ in ingredients]
        best = score(chosen)
    soup.load_state_dict(average([m.state_dict() for p, _, m, _ in ingredients if p in chosen]))
    used = [(p, ck['extra']) for p, ck, _, _ in ingredients if p in chosen]
    extra = {k: v for k, v in first_ck['extra'].items() if k not in ('pairs', 'wall_s', 'wise')}
    extra.update(soup={'greedy': args.greedy, 'ingredients': [
        {'ckpt': os.path.abspath(p), 'step': e.get('step'), 'pairs': e.get('pairs')} for p, e in used]},
        heldout=best, step=f'soup of {len(chosen)}')
    save_checkpoint(args.out, soup, codec, first_ck['config'], extra)
    print(json.dumps({'written': args.out, 'ingredients': chosen, 'selection': round(selection(best), 4)}))


if __name__ == '__main__':
    main()
