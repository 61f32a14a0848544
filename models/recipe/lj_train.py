#!/usr/bin/env python3
"""Train sieve-ce v2 (see lj_model.py): towers frozen (their states precomputed by lj_states.py),
only the joint blocks, gates and heads learn.

Data: prepare_data.py's work/data/train.jsonl.gz (SciFact + NFCorpus TRAIN queries, positives from
qrels, hard negatives mined from sieve's own BM25/dense/hybrid top-100). A held-out slice of TRAIN
queries per domain is scored every --eval-every seconds against the init (= bi-encoder cosine on
the same candidates); the checkpoint kept is the best one that is not below init on any domain.

Loss per step, over groups of 1 positive + --negatives hard negatives: listwise softmax CE at every
(exit, width) head (scores x --tau), + --self-distill x KL(deepest widest head || each other head),
+ --init-reg x KL(init cosine's distribution || deepest heads), a pull toward what the bi-encoder
knows that keeps the model general.
"""
import argparse, json, os, random, sys, time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from common import heldout_split, read_jsonl_gz  # noqa: E402
from lj_data import Codec, States, fold_codec_into, pad_batch, sample_group  # noqa: E402
from lj_model import LateJoined  # noqa: E402


def load_checkpoint(path):
    """-> (model, codec); path 'init' builds the untrained model with a codec fitted fresh."""
    ck = torch.load(path, map_location='cpu', weights_only=False)
    cfg = ck['config']
    codec = Codec(np.asarray(ck['codec_mean']), np.asarray(ck['codec_P']))
    # (the first query-layer checkpoints, from a wrapper script, did not record query_layers)
    query_layers = cfg.get('query_layers', len({k.split('.')[1] for k in ck['state_dict'] if k.startswith('qlayers.')}))
    model = LateJoined(blocks=cfg['blocks'], widths=cfg['widths'], state_dim=codec.rank,
                       self_attn=cfg.get('self_attn', False), query_layers=query_layers)
    model.load_state_dict(ck['state_dict'])
    model.eval()
    return model, codec


def save_checkpoint(path, model, codec, cfg, extra):
    torch.save({'state_dict': model.state_dict(), 'config': cfg, 'codec_mean': codec.mean, 'codec_P': codec.P,
                'extra': extra}, path + '.tmp')
    os.replace(path + '.tmp', path)


def heldout_windows(work, data_root, held, depth=100):
    """For held-out TRAIN queries of the retrieval sets: their hybrid top-`depth` window and every
    qrel of the TRAIN split, i.e. the task `sieve eval` measures (reranking the first stage's window),
    not positives among mined negatives. -> {(set, qid): (candidates, qrels)}"""
    from prepare_data import read_qrels, read_run
    out = {}
    for ds in sorted({r['set'] for r in held} - {'wordnet'}):
        run = os.path.join(work, 'runs', f'{ds}-train-hybrid.trec')
        if not os.path.exists(run):
            continue
        hyb, qrels = read_run(run), read_qrels(os.path.join(data_root, ds, 'qrels', 'train.tsv'))
        for r in held:
            if r['set'] == ds and r['qid'] in hyb:
                out[(ds, r['qid'])] = ([d for d, _ in hyb[r['qid']][:depth]], dict(qrels[r['qid']]))
    return out


def training_records(work, targs, docs, qst):
    """The TRAIN groups a run with these arguments uses (SciFact + NFCorpus, plus the general sets it
    names), each cut to the documents and queries whose states exist; groups left with no positive
    or fewer than two negatives are dropped."""
    recs = [r for r in read_jsonl_gz(os.path.join(work, 'data', 'train.jsonl.gz')) if r['set'] in ('scifact', 'nfcorpus')]
    for flag, name in (('general', 'general'), ('debian', 'debian'), ('titles', 'titles')):
        if targs.get(flag):
            recs += list(read_jsonl_gz(os.path.join(work, 'data', f'{name}.jsonl.gz')))
    for r in recs:
        r['positives'] = [p for p in r['positives'] if f"{r['set']}/{p['doc']}" in docs]
        r['negatives'] = [n for n in r['negatives'] if f"{r['set']}/{n['doc']}" in docs]
    return [r for r in recs if r['positives'] and len(r['negatives']) >= 2 and f"{r['set']}/{r['qid']}" in qst]


def split_records(recs, heldout, seed):
    """(train, held-out) per set: `heldout` is 'set=N,...' (50 for a set it does not name)."""
    hold_n = {k: int(v) for k, v in (x.split('=') for x in heldout.split(','))}
    out = {}
    for ds in sorted({r['set'] for r in recs}):
        rs = [r for r in recs if r['set'] == ds]
        out[ds] = heldout_split(rs, hold_n.get(ds, 50) / len(rs), seed)
    return out


def heldout_records(work, targs, docs, qst):
    """The held-out TRAIN queries exactly as lj_train.py split them."""
    recs = training_records(work, targs, docs, qst)
    split = split_records(recs, targs.get('heldout', 'scifact=60,nfcorpus=80'), targs.get('seed', 13))
    return [r for ds in sorted(split) for r in split[ds][1]]


_CODES = {}  # held-out documents' dequantised codes, made once (the codec is fixed during a run)


def heldout_eval(model, qst, docs, codec, recs, windows=None):
    from common import ndcg_at, trec_order
    from lj_eval import score_candidates
    per = {}
    for ds in sorted({r['set'] for r in recs}):
        init = deep = 0.0
        n = 0
        for r in (x for x in recs if x['set'] == ds):
            if windows and (ds, r['qid']) in windows:
                cand, qrels = windows[(ds, r['qid'])]
                cand = [d for d in cand if f'{ds}/{d}' in docs]
            else:
                cand = [p['doc'] for p in r['positives']] + [x['doc'] for x in r['negatives']]
                qrels = {p['doc']: p['grade'] for p in r['positives']}
            sc = score_candidates(model, qst, docs, codec, f"{ds}/{r['qid']}", [f'{ds}/{d}' for d in cand], codes=_CODES)
            init += ndcg_at(trec_order([(d, float(sc[i, 0, 0])) for i, d in enumerate(cand)]), qrels)
            deep += ndcg_at(trec_order([(d, float(sc[i, -1, 0])) for i, d in enumerate(cand)]), qrels)
            n += 1
        per[ds] = {'init': init / n, 'deepest': deep / n, 'gain': (deep - init) / n, 'queries': n}
    return per


AUXILIARY_SETS = ('wordnet', 'titles')


def selection(ev):
    """Checkpoint score: the mean gain over init on the held-out slices of the retrieval-like sets
    (not the auxiliary WordNet and title groups), if no held-out set (the auxiliary ones included)
    is below init; otherwise below every admissible one."""
    gains = [v['gain'] for v in ev.values()]
    ir = [v['gain'] for k, v in ev.items() if k not in AUXILIARY_SETS] or gains
    return sum(ir) / len(ir) if min(gains) >= 0 else min(gains) - 1.0


def gate_values(model):
    """The blocks' scalar gates (g, before tanh): their signs tell which runs can be averaged
    (lj_soup.py), since a gate that opened negative makes its run subtract the branch others add."""
    return {k: round(float(v), 4) for k, v in model.state_dict().items()
            if k.rsplit('.', 1)[-1].startswith('g_') and v.numel() == 1}


class WeightAverage:
    """An exponential moving average of a model's floating-point weights (Polyak averaging), with
    the usual warm-up (decay min(d, (1 + t) / (10 + t))) so that early steps do not leave the
    starting weights in the average for long. An average along the trajectory sits in a flatter
    region than any single step: the candidate it gives is tried against the raw weights."""

    def __init__(self, model, decay):
        self.decay = decay
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.avg:
                self.avg[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def swap_in(self, model):
        """Loads the average into `model`; -> the raw state it had, to load back."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({**raw, **self.avg})
        return raw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--base', default=os.path.join(REPO, '..', 'shared', 'models', 'all-MiniLM-L6-v2', 'model.safetensors'))
    ap.add_argument('--out', default=None, help='checkpoint path (default work/lj/ckpt.pt)')
    ap.add_argument('--blocks', type=int, default=2)
    ap.add_argument('--widths', default='384,192,96')
    ap.add_argument('--query-self-attn', action='store_true',
                    help="each block also has a gated self-attention among the query tokens (after the "
                         "cross-attention, as in MORES's interaction blocks), initialised from tower layer 6's")
    ap.add_argument('--query-layers', type=int, default=0,
                    help="a trainable copy of the tower's last N layers on the query side (lj_model.py); the work "
                         "directory's query states must be tower layer 6-N's (lj_layer_states.py --side queries)")
    ap.add_argument('--rank', type=int, default=60, help='PCA codec rank (index bytes/token = rank + 4)')
    ap.add_argument('--negatives', type=int, default=7)
    ap.add_argument('--batch', type=int, default=8, help='queries per step')
    ap.add_argument('--tau', type=float, default=20.0)
    ap.add_argument('--lr', type=float, default=5e-5)
    ap.add_argument('--scalar-lr-mult', type=float, default=20.0, help='gates')
    ap.add_argument('--head-lr-mult', type=float, default=1.0, help='interaction MLPs of the heads')
    ap.add_argument('--warmup-steps', type=int, default=100)
    ap.add_argument('--train', choices=['all', 'cross'], default='all',
                    help='cross: only the cross-attention, gates and heads learn (the feed-forwards stay at init)')
    ap.add_argument('--retrieved-positives', action='store_true',
                    help="train only on positives the first stage retrieved (teacher not null): the reranker never sees the others")
    ap.add_argument('--self-distill', type=float, default=0.5)
    ap.add_argument('--init-reg', type=float, default=0.1)
    ap.add_argument('--denoise', default='',
                    help="per set, e.g. nfcorpus=0: drop a group's negatives whose init cosine is above its positive's "
                         "by more than this margin (RocketQA's denoising with the bi-encoder as the judge; for sets "
                         "whose qrels leave most relevant documents unjudged)")
    ap.add_argument('--set-repeat', default='scifact=3', help='sampling weight per set')
    ap.add_argument('--heldout', default='scifact=60,nfcorpus=80,wordnet=200', help='held-out TRAIN queries per set')
    ap.add_argument('--heldout-windows', type=int, default=100,
                    help='score held-out SciFact/NFCorpus queries on their hybrid top-N window with all TRAIN '
                         'qrels (the task sieve eval measures); 0 = positives + mined negatives only')
    ap.add_argument('--general', action='store_true',
                    help="add lj_general.py's WordNet groups (set 'wordnet'; weight it with --set-repeat)")
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--max-minutes', type=float, default=12)
    ap.add_argument('--eval-every', type=float, default=120, help='seconds')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-bf16', action='store_true')
    ap.add_argument('--seed', type=int, default=13)
    ap.add_argument('--debian', action='store_true',
                    help="add lj_debian.py's Debian synopsis->description groups (set 'debian'; weight it with --set-repeat)")
    ap.add_argument('--titles', action='store_true',
                    help="add lj_titles.py's title->abstract groups of the SciFact and NFCorpus corpora (set 'titles'; "
                         "weight it with --set-repeat)")
    ap.add_argument('--order-seed', type=int, default=None,
                    help='seed of the batch order only (default --seed, which also fixes the held-out split): '
                         'a --resume run keeps --seed and changes this, so it does not replay the same batches')
    ap.add_argument('--keep-evals', action='store_true',
                    help='also save the model at every held-out evaluation (OUT.stepN.pt), for a choice by a '
                         'set outside the held-out slices (the Debian guard)')
    ap.add_argument('--resume', default=None, help='continue from this checkpoint (its codec and weights)')
    ap.add_argument('--ema', type=float, default=0.0,
                    help='keep an exponential moving average of the weights with this decay (e.g. 0.999) and '
                         'evaluate and save it instead of the raw weights (0: off)')
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed if args.order_seed is None else args.order_seed)
    torch.set_num_threads(args.threads)
    lj = os.path.join(args.work, 'lj')
    out = args.out or os.path.join(lj, 'ckpt.pt')
    log = open(os.path.join(lj, 'train-log.jsonl'), 'a')
    emit = lambda rec: (log.write(json.dumps(rec) + '\n'), log.flush(), print(json.dumps(rec), flush=True))

    qst, docs = States(lj, 'query'), States(lj, 'doc')
    recs = training_records(args.work, vars(args), docs, qst)
    if args.retrieved_positives:
        kept_pos = lambda r: [p for p in r['positives'] if p.get('teacher') is not None]
    else:
        kept_pos = lambda r: r['positives']
    train, held = [], []
    for ds, (tr, ho) in split_records(recs, args.heldout, args.seed).items():
        train += [dict(r, positives=kept_pos(r)) for r in tr if kept_pos(r)]
        held += ho
    reps = {k: float(v) for k, v in (x.split('=') for x in args.set_repeat.split(',') if x)}
    denoise = {k: float(v) for k, v in (x.split('=') for x in args.denoise.split(',') if x)}
    init_cos = {}
    for r in train:
        if r['set'] in denoise:
            qv = qst.get(f"{r['set']}/{r['qid']}")[1]
            for x in r['positives'] + r['negatives']:
                init_cos[(r['set'], r['qid'], x['doc'])] = float(qv @ docs.get(f"{r['set']}/{x['doc']}")[1])
    weights = [reps.get(r['set'], 1.0) for r in train]

    # codec on the training documents only
    train_docs = sorted({f"{r['set']}/{x['doc']}" for r in train for x in r['positives'] + r['negatives']})
    sample = np.concatenate([docs.get(k)[0] for k in train_docs[:: max(1, len(train_docs) // 3000)]])
    if args.resume:
        model, codec = load_checkpoint(args.resume)
        explained = float('nan')
    else:
        codec, explained = Codec.fit(sample, args.rank)
    codes = {}

    def code(k):
        if k not in codes:
            codes[k] = codec.roundtrip(docs.get(k)[0]).astype(np.float16)
        return codes[k]

    widths = [int(w) for w in args.widths.split(',')]
    if not args.resume:
        model = LateJoined(blocks=args.blocks, widths=widths, self_attn=args.query_self_attn,
                           query_layers=args.query_layers)
        model.init_from_base(args.base)
        fold_codec_into(model, codec)
    cfg = {'blocks': args.blocks, 'widths': widths, 'rank': args.rank, 'tau': args.tau,
           'self_attn': bool(model.blocks[0].self_attn), 'query_layers': model.query_layers, 'train_args': vars(args)}
    is_gate = lambda n: n.endswith('.g_x') or n.endswith('.g_f') or n.endswith('.g_s')
    gates = [p for n, p in model.named_parameters() if is_gate(n)]
    heads = [p for n, p in model.named_parameters() if n.startswith('heads.')]
    frozen = lambda n: args.train == 'cross' and any(f'.{m}.' in n for m in ('i', 'out', 'ln_f'))
    for n, p in model.named_parameters():
        p.requires_grad_(not frozen(n))
    others = [p for n, p in model.named_parameters() if not (is_gate(n) or n.startswith('heads.') or frozen(n))]
    groups = [{'params': others, 'lr': args.lr}, {'params': gates, 'lr': args.lr * args.scalar_lr_mult, 'weight_decay': 0.0},
              {'params': heads, 'lr': args.lr * args.head_lr_mult}]
    for g in groups:
        g['base_lr'] = g['lr']
    # The listwise temperature learns too (as the probe's scale s did): sharpening the scores then
    # costs one scalar instead of pulling on the blocks, whose gradients are left to the ranking.
    log_tau = torch.nn.Parameter(torch.tensor(float(np.log(args.tau))))
    if args.resume:
        prev = torch.load(args.resume, map_location='cpu', weights_only=False)
        log_tau.data.fill_(float(np.log(prev['extra'].get('tau', args.tau))))
    groups.append({'params': [log_tau], 'lr': args.lr * args.scalar_lr_mult, 'weight_decay': 0.0,
                   'base_lr': args.lr * args.scalar_lr_mult})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    ema = WeightAverage(model, args.ema) if args.ema > 0 else None
    bf16 = not args.no_bf16
    emit({'event': 'start', 'args': vars(args), 'train_queries': len(train), 'heldout_queries': len(held),
          'train_by_set': {ds: sum(r['set'] == ds for r in train) for ds in sorted({r['set'] for r in train})},
          'codec_rank': args.rank, 'codec_explained_variance': round(explained, 4), 'bf16': bf16,
          'torch': torch.__version__})

    windows = heldout_windows(args.work, args.data_root, held, args.heldout_windows) if args.heldout_windows else None
    model.eval()
    base_eval = heldout_eval(model, qst, docs, codec, held, windows)
    emit({'event': 'eval', 'step': 0, 'heldout': base_eval})
    best = (selection(base_eval) if args.resume else 0.0, 0)
    save_checkpoint(out, model, codec, cfg, {'step': 0, 'heldout': base_eval})
    t0 = time.time()
    last_eval, step, pairs = t0, 0, 0
    G = 1 + args.negatives
    while time.time() - t0 < args.max_minutes * 60:
        model.train()
        batch = rng.choices(train, weights=weights, k=args.batch)
        ql, dl, dv, qv = [], [], [], []
        for r in batch:
            qs, qvec = qst.get(f"{r['set']}/{r['qid']}")
            keep = None
            if r['set'] in denoise:
                c = lambda d: init_cos[(r['set'], r['qid'], d)]
                m = denoise[r['set']]
                keep = lambda pos, neg: c(neg) <= c(pos) + m
            for d in sample_group(r, args.negatives, rng, keep):
                k = f"{r['set']}/{d}"
                ql.append(qs)
                dl.append(code(k))
                dv.append(docs.get(k)[1])
                qv.append(qvec)
        qs, qm, ds_, dm, dvec = pad_batch(ql, dl, dv)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            sc = model(qs, qm, ds_, dm, dvec)
        sc = sc.float().view(args.batch, G, *sc.shape[1:])  # [B, G, blocks, widths]
        init = model.exit0(torch.from_numpy(np.stack(qv)), dvec).view(args.batch, G, -1)[..., 0]
        tau = log_tau.exp()
        logits = sc * tau
        target = torch.zeros(args.batch, dtype=torch.long)
        ce = sum(F.cross_entropy(logits[:, :, b, w], target) for b in range(sc.shape[2]) for w in range(sc.shape[3]))
        ce = ce / (sc.shape[2] * sc.shape[3])
        teacher = F.softmax(logits[:, :, -1, 0].detach(), dim=1)
        sd = sum(F.kl_div(F.log_softmax(logits[:, :, b, w], dim=1), teacher, reduction='batchmean')
                 for b in range(sc.shape[2]) for w in range(sc.shape[3]) if (b, w) != (sc.shape[2] - 1, 0))
        p_init = F.softmax(init * args.tau, dim=1)  # the bi-encoder's own distribution, fixed
        reg = sum(F.kl_div(F.log_softmax(logits[:, :, -1, w], dim=1), p_init, reduction='batchmean') for w in range(sc.shape[3]))
        loss = ce + args.self_distill * sd + args.init_reg * reg
        warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
        for g in opt.param_groups:
            g['lr'] = g['base_lr'] * warm
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if ema:
            ema.update(model, step)
        pairs += len(ql)
        if step % 20 == 0:
            el = time.time() - t0
            emit({'event': 'train', 'step': step, 'pairs': pairs, 'pairs_per_s': round(pairs / el, 1),
                  'ce': round(ce.item(), 4), 'tau': round(float(log_tau.exp()), 2), 'sd': round(float(sd), 4), 'reg': round(float(reg), 4),
                  'gates': [round(float(torch.tanh(b.g_x)), 4) for b in model.blocks] +
                           [round(float(torch.tanh(b.g_f)), 4) for b in model.blocks] +
                           [round(float(torch.tanh(b.g_s)), 4) for b in model.blocks if b.self_attn]})
        if time.time() - last_eval >= args.eval_every:
            model.eval()
            raw = ema.swap_in(model) if ema else None
            ev = heldout_eval(model, qst, docs, codec, held, windows)
            score = selection(ev)
            kept = score > best[0]
            if kept:
                best = (score, step)
                save_checkpoint(out, model, codec, cfg, {'step': step, 'pairs': pairs, 'heldout': ev,
                                                         'tau': float(log_tau.exp())})
            if args.keep_evals:
                save_checkpoint(out.replace('.pt', '') + f'.step{step}.pt', model, codec, cfg,
                                {'step': step, 'pairs': pairs, 'heldout': ev, 'tau': float(log_tau.exp())})
            emit({'event': 'eval', 'step': step, 'pairs': pairs, 'elapsed_s': round(time.time() - t0), 'heldout': ev,
                  'kept': kept, 'ema': bool(ema), 'gates': gate_values(model)})
            if raw is not None:
                model.load_state_dict(raw)
            last_eval = time.time()
    model.eval()
    if ema:  # from here on the model is the average
        ema.swap_in(model)
    ev = heldout_eval(model, qst, docs, codec, held, windows)
    score = selection(ev)
    if score > best[0]:
        best = (score, step)
        save_checkpoint(out, model, codec, cfg, {'step': step, 'pairs': pairs, 'heldout': ev})
    save_checkpoint(out.replace('.pt', '') + '.last.pt', model, codec, cfg,
                    {'step': step, 'pairs': pairs, 'heldout': ev, 'tau': float(log_tau.exp())})
    if args.keep_evals:  # the final evaluation is one of the candidates too
        save_checkpoint(out.replace('.pt', '') + f'.step{step}.pt', model, codec, cfg,
                        {'step': step, 'pairs': pairs, 'heldout': ev, 'tau': float(log_tau.exp())})
    emit({'event': 'done', 'steps': step, 'pairs': pairs, 'wall_s': round(time.time() - t0),
          'pairs_per_s': round(pairs / (time.time() - t0), 1), 'final_heldout': ev, 'best_step': best[1],
          'best_score': round(best[0], 4)})


if __name__ == '__main__':
    main()
