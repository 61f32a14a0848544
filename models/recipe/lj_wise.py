#!/usr/bin/env python3
"""Weight-space interpolation toward the init (WiSE-FT, Wortsman et al. 2022) for sieve-ce v2.

The init is exactly the bi-encoder (gates 0, heads' output layers 0), so `alpha * trained +
(1 - alpha) * init` moves every parameter part of the way back to it: at alpha 0 the model is the
bi-encoder, at 1 the trained checkpoint. Each alpha of `--grid` is scored on the checkpoint's own
held-out TRAIN slices (lj_train.py's split and windows, never a test/dev split or DL19), and the
checkpoint written is, among the alphas not below init on any held-out set, the one with the best
mean gain over init on the retrieval sets; or, with --keep-gain K, the smallest alpha that keeps at
least K of the trained checkpoint's held-out gain on every retrieval set: WiSE-FT's finding is
that the interpolated weights are more robust out of domain than either end, and the held-out
slices are all in domain, so they can say how much in-domain gain a step back costs but not what
it buys elsewhere (none admissible: nothing is written).
"""
import argparse, json, os, sys, time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from lj_data import States, fold_codec_into  # noqa: E402
from lj_model import LateJoined  # noqa: E402
from lj_train import heldout_eval, heldout_records, heldout_windows, load_checkpoint, save_checkpoint, selection  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--base', default=os.path.join(REPO, '..', 'shared', 'models', 'all-MiniLM-L6-v2', 'model.safetensors'))
    ap.add_argument('--ckpt', required=True)
    ap.add_argument('--grid', default='0.25,0.5,0.75,1.0')
    ap.add_argument('--out', required=True)
    ap.add_argument('--keep-gain', type=float, default=0.0,
                    help='pick the smallest admissible alpha keeping this share of the alpha-1 gain on every retrieval set')
    ap.add_argument('--only', default='',
                    help="interpolate only parameters whose names start with one of these (comma-separated, e.g. "
                         "'qlayers.': the query layers go back toward the tower, the blocks stay trained)")
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lj = os.path.join(args.work, 'lj')
    ck = torch.load(args.ckpt, map_location='cpu', weights_only=False)
    trained, codec = load_checkpoint(args.ckpt)
    cfg = ck['config']
    targs = cfg.get('train_args') or {}
    shape = dict(blocks=cfg['blocks'], widths=cfg['widths'], self_attn=cfg.get('self_attn', False),
                 query_layers=trained.query_layers)
    init = LateJoined(**shape)
    init.init_from_base(args.base)
    fold_codec_into(init, codec)
    qst, docs = States(lj, 'query'), States(lj, 'doc')
    held = heldout_records(args.work, targs, docs, qst)
    windows = heldout_windows(args.work, args.data_root, held, targs.get('heldout_windows', 100))
    t_sd, i_sd = trained.state_dict(), init.state_dict()
    model = LateJoined(state_dim=codec.rank, **shape).eval()
    moved = lambda k: not args.only or any(k.startswith(p) for p in args.only.split(','))
    best, rows, states = None, [], {}
    grid = sorted(float(a) for a in args.grid.split(','))
    if args.keep_gain and grid[-1] != 1.0:
        grid.append(1.0)
    for alpha in grid:
        t0 = time.time()
        model.load_state_dict({k: alpha * t_sd[k] + (1 - alpha) * i_sd[k] if moved(k) else t_sd[k] for k in t_sd})
        ev = heldout_eval(model, qst, docs, codec, held, windows)
        score = selection(ev)
        rows.append({'alpha': alpha, 'heldout': ev, 'selection': score})
        print(json.dumps({'alpha': alpha, 'gains': {k: round(v['gain'], 4) for k, v in ev.items()},
                          'deepest': {k: round(v['deepest'], 4) for k, v in ev.items()},
                          'selection': round(score, 4), 'wall_s': round(time.time() - t0)}), flush=True)
        states[alpha] = (score, ev, {k: v.clone() for k, v in model.state_dict().items()})
        if score >= 0 and (best is None or score > best[0]):
            best = (score, alpha, ev, states[alpha][2])
    if args.keep_gain:
        full = states[1.0][1]
        ir = [k for k in full if k != 'wordnet']
        keeps = [a for a in grid if states[a][0] >= 0 and all(
            states[a][1][k]['gain'] >= args.keep_gain * full[k]['gain'] for k in ir)]
        best = (states[keeps[0]][0], keeps[0], states[keeps[0]][1], states[keeps[0]][2]) if keeps else None
    if best is None:
        print(json.dumps({'written': None, 'reason': 'no alpha is at or above init on every held-out set'}))
        return
    model.load_state_dict(best[3])
    extra = dict(ck['extra'], wise={'alpha': best[1], 'keep_gain': args.keep_gain, 'only': args.only, 'grid': rows, 'from': os.path.abspath(args.ckpt)}, heldout=best[2])
    save_checkpoint(args.out, model, codec, cfg, extra)
    print(json.dumps({'written': args.out, 'alpha': best[1], 'selection': round(best[0], 4)}))


if __name__ == '__main__':
    main()
