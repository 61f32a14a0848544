#!/usr/bin/env python3
"""Train sieve's 2D-Matryoshka cross-encoder (heads at layers x width prefixes) from all-MiniLM-L6-v2.

  python models/recipe/train.py                 # GPU-sized defaults
  python models/recipe/train.py --smoke         # CPU check: 40 steps, batch 2, length 128

Input work/data/{train,docs}.jsonl.gz + work/base (prepare_data.py). Output work/ckpt/ (or --out):
model.safetensors (encoder + all heads), ce_config.json; log lines in work/train-log.jsonl.

Loss per step, summed over every (exit layer, width) head:
  listwise softmax CE over [positive, N hard negatives]               (target = the positive)
  + margin_mse * MSE(s_pos - s_neg, teacher_scale * (t_pos - t_neg))   (masked where no teacher)
  + self_distill * KL(p_deepest_widest || p_head)                      (deepest head detached)
Pooling at every exit = mean over the pair's tokens (attention mask), as the base was trained.
"""
import argparse, json, math, os, platform, random, sys, time
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CrossEncoder, PairTokenizer, heldout_split, load_docs, mrr_at, ndcg_at,
                    read_jsonl_gz)

HERE = os.path.dirname(os.path.abspath(__file__))


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--out', default=None, help='checkpoint dir [work/ckpt]')
    ap.add_argument('--exits', default='2,4,6')
    ap.add_argument('--widths', default='384,96')
    ap.add_argument('--max-length', type=int, default=256)
    ap.add_argument('--query-cap', type=int, default=64)
    ap.add_argument('--token-types', choices=['zero', 'pair'], default='zero',
                    help="zero: all-zero token_type_ids (the base only saw type 0); pair: 0 query / 1 doc")
    ap.add_argument('--negatives', type=int, default=7, help='hard negatives per positive (listwise group = 1+N)')
    ap.add_argument('--max-pos-per-query', type=int, default=16, help='positives sampled per query and epoch (0 = all)')
    ap.add_argument('--set-repeat', default='', help='repeat a set per epoch, e.g. scifact=4,trec-dl-2019-passage=4 '
                    '(full data is ~95%% nfcorpus examples at --max-pos-per-query 16)')
    ap.add_argument('--batch', type=int, default=32, help='groups per micro-batch (pairs = batch*(1+N))')
    ap.add_argument('--accum', type=int, default=1, help='gradient accumulation steps')
    ap.add_argument('--epochs', type=float, default=4)
    ap.add_argument('--max-steps', type=int, default=0, help='optimizer steps (overrides epochs when > 0)')
    ap.add_argument('--max-minutes', type=float, default=0,
                    help='wall-clock budget: the LR schedule follows max(step/steps, elapsed/budget) and training '
                         'stops when the budget is spent (0 = no limit; sizes a CPU run to the time it has)')
    ap.add_argument('--lr', type=float, default=4e-5)
    ap.add_argument('--head-lr-mult', type=float, default=10.0)
    ap.add_argument('--weight-decay', type=float, default=0.01)
    ap.add_argument('--warmup', type=float, default=0.06, help='warmup fraction of steps')
    ap.add_argument('--dropout', type=float, default=0.1)
    ap.add_argument('--margin-mse', type=float, default=1.0, help='Margin-MSE weight (0 = off)')
    ap.add_argument('--teacher-scale', type=float, default=10.0, help='teacher margins are in [-1,1]; scaled to logit units')
    ap.add_argument('--self-distill', type=float, default=1.0, help='KL weight deepest-widest -> other heads (0 = off)')
    ap.add_argument('--exit-weights', default='', help='per-exit loss weights, e.g. 1,1,1 (default all 1)')
    ap.add_argument('--heldout-frac', type=float, default=0.03, help='TRAIN queries held out for eval/calibration')
    ap.add_argument('--eval-every', type=int, default=500)
    ap.add_argument('--eval-queries', type=int, default=200, help='held-out queries used per eval')
    ap.add_argument('--log-every', type=int, default=50)
    ap.add_argument('--seed', type=int, default=13)
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = leave)')
    ap.add_argument('--no-bf16', action='store_true', help='disable bf16 autocast')
    ap.add_argument('--smoke', action='store_true', help='tiny CPU run: 40 steps, batch 2, length 128')
    a = ap.parse_args()
    if a.smoke:
        a.max_steps = a.max_steps or 40
        a.batch, a.accum, a.max_length, a.eval_every, a.eval_queries, a.log_every = 2, 1, 128, 20, 6, 5
        a.heldout_frac = 0.05
        a.threads = a.threads or 2
    a.exits = [int(x) for x in a.exits.split(',')]
    a.widths = [int(x) for x in a.widths.split(',')]
    a.out = a.out or os.path.join(a.work, 'ckpt')
    SET_REPEAT.update({k: int(v) for k, v in (x.split('=') for x in a.set_repeat.split(',') if x)})
    return a


def device_name(dev):
    if dev.type == 'cuda':
        return torch.cuda.get_device_name(dev)
    return f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


SET_REPEAT = {}


def build_examples(recs, max_pos, rng):
    ex = []
    for qi, r in enumerate(recs):
        for _ in range(SET_REPEAT.get(r['set'], 1)):
            pos = list(r['positives'])
            rng.shuffle(pos)
            pos.sort(key=lambda p: -p['grade'])  # prefer higher grades when capping
            for p in (pos[:max_pos] if max_pos else pos):
                ex.append((qi, p))
    rng.shuffle(ex)
    return ex


def main():
    a = parse()
    random.seed(a.seed); np.random.seed(a.seed); torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    data = os.path.join(a.work, 'data')
    base = os.path.join(a.work, 'base')
    os.makedirs(a.out, exist_ok=True)
    logf = open(os.path.join(a.work, 'train-log.jsonl'), 'a')

    def log(d):
        d = {'t': round(time.time() - t0, 1), **d}
        print(json.dumps(d), flush=True)
        logf.write(json.dumps(d) + '\n'); logf.flush()

    t0 = time.time()
    cfg = json.load(open(os.path.join(base, 'config.json')))
    tok = PairTokenizer(os.path.join(base, 'tokenizer.json'), a.max_length, a.query_cap, a.token_types == 'zero')
    recs = list(read_jsonl_gz(os.path.join(data, 'train.jsonl.gz')))
    docs = load_docs(data)
    train, held = heldout_split(recs, a.heldout_frac, a.seed)
    # pre-tokenise
    keys = sorted(docs)
    dids = dict(zip(keys, tok.ids([docs[k] for k in keys])))
    qids = {(r['set'], r['qid']): i for i, r in enumerate(tok.ids([r['query'] for r in recs]))} if False else None
    qtok = tok.ids([r['query'] for r in recs])
    qmap = {(r['set'], r['qid']): q for r, q in zip(recs, qtok)}

    rng = random.Random(a.seed)
    per_epoch = build_examples(train, a.max_pos_per_query, random.Random(a.seed))
    steps_per_epoch = max(1, len(per_epoch) // (a.batch * a.accum))
    total = a.max_steps or int(math.ceil(a.epochs * steps_per_epoch))
    counts = {'train_queries': len(train), 'heldout_queries': len(held),
              'examples_per_epoch': len(per_epoch), 'pairs_per_epoch': len(per_epoch) * (1 + a.negatives),
              'docs': len(docs), 'by_set': {}}
    for r in train:
        s = counts['by_set'].setdefault(r['set'], {'queries': 0, 'positives': 0, 'negatives': 0})
        s['queries'] += 1; s['positives'] += len(r['positives']); s['negatives'] += len(r['negatives'])
    model = CrossEncoder(cfg, a.exits, a.widths, a.dropout, a.token_types == 'zero')
    model.load_base(os.path.join(base, 'model.safetensors'))
    model.to(dev).train()
    names = CrossEncoder.head_names(a.exits, a.widths)
    deep_idx = (len(a.exits) - 1, a.widths.index(max(a.widths)))
    ew = [float(x) for x in a.exit_weights.split(',')] if a.exit_weights else [1.0] * len(a.exits)
    ew = torch.tensor(ew, device=dev).view(1, -1, 1)

    use_bf16 = not a.no_bf16
    if use_bf16 and dev.type == 'cpu':
        try:
            with torch.autocast('cpu', dtype=torch.bfloat16):
                torch.ones(2, 2) @ torch.ones(2, 2)
        except Exception:
            use_bf16 = False
    head_p = [p for n, p in model.named_parameters() if n.startswith('heads.')]
    enc_p = [p for n, p in model.named_parameters() if not n.startswith('heads.')]
    nd = lambda ps: [p for p in ps if p.dim() >= 2]
    wd = lambda ps: [p for p in ps if p.dim() < 2]
    opt = torch.optim.AdamW([
        {'params': nd(enc_p), 'lr': a.lr, 'weight_decay': a.weight_decay},
        {'params': wd(enc_p), 'lr': a.lr, 'weight_decay': 0.0},
        {'params': head_p, 'lr': a.lr * a.head_lr_mult, 'weight_decay': 0.0}])
    warm = max(1, int(a.warmup * total))
    t_train = time.time()

    def lr_factor(s):
        # Progress is the larger of the step fraction and, under --max-minutes, the time fraction,
        # so a time-limited run still warms up and decays to zero by the end of its budget.
        prog = s / total
        if a.max_minutes > 0:
            prog = max(prog, (time.time() - t_train) / (60 * a.max_minutes))
        wfrac = warm / total
        if prog < wfrac:
            return (prog + 1 / total) / wfrac
        return max(0.0, (1 - prog) / max(1e-9, 1 - wfrac))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    log({'event': 'start', 'device': device_name(dev), 'torch': torch.__version__, 'bf16': use_bf16,
         'steps': total, 'steps_per_epoch': steps_per_epoch, 'counts': counts,
         'args': {k: v for k, v in vars(a).items()}})

    def group(qi, pos, recset):
        r = recset[qi]
        negs = r['negatives']
        if len(negs) >= a.negatives:
            chosen = rng.sample(negs, a.negatives)
        else:
            chosen = [rng.choice(negs) for _ in range(a.negatives)]
        q = qmap[(r['set'], r['qid'])]
        items = [pos] + chosen
        pairs = [tok.pair(q, dids[(r['set'], x['doc'])]) for x in items]
        t = [x['teacher'] for x in items]
        return pairs, t

    def evaluate(step):
        model.eval()
        res = {n: {'ndcg@10': [], 'mrr@10': []} for n in names}
        tres = {'ndcg@10': [], 'mrr@10': []}
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            for r in held[: a.eval_queries]:
                cands = [p['doc'] for p in r['positives'][:8]] + [n['doc'] for n in r['negatives'][:32]]
                qrels = {p['doc']: p['grade'] for p in r['positives']}
                q = qmap[(r['set'], r['qid'])]
                pairs = [tok.pair(q, dids[(r['set'], d)]) for d in cands]
                out = []
                for i in range(0, len(pairs), 64):
                    ids, m, tt = (x.to(dev) for x in tok.batch(pairs[i:i + 64]))
                    out.append(model(ids, m, tt).float().cpu())
                lg = torch.cat(out).view(len(cands), -1)
                for j, n in enumerate(names):
                    order = [cands[k] for k in torch.argsort(-lg[:, j]).tolist()]
                    res[n]['ndcg@10'].append(ndcg_at(order, qrels)); res[n]['mrr@10'].append(mrr_at(order, qrels))
                tmap = {x['doc']: x['teacher'] for x in r['positives'] + r['negatives']}
                order = sorted(cands, key=lambda d: -(tmap.get(d) if tmap.get(d) is not None else -1))
                tres['ndcg@10'].append(ndcg_at(order, qrels)); tres['mrr@10'].append(mrr_at(order, qrels))
        model.train()
        out = {n: {k: round(float(np.mean(v)), 4) for k, v in d.items()} for n, d in res.items()}
        log({'event': 'eval', 'step': step, 'heldout_queries': min(len(held), a.eval_queries),
             'candidates': 'positives[:8] + mined negatives[:32]', 'heads': out,
             'teacher': {k: round(float(np.mean(v)), 4) for k, v in tres.items()}})
        return out

    step, micro, seen_pairs, ep = 0, 0, 0, 0
    stream = list(per_epoch)
    tl = time.time(); pairs_since = 0
    agg = {'ce': 0.0, 'mmse': 0.0, 'sd': 0.0, 'n': 0}
    out_of_time = False
    while step < total and not out_of_time:
        if len(stream) < a.batch:
            ep += 1
            stream += build_examples(train, a.max_pos_per_query, random.Random(a.seed + ep))
        batch, stream = stream[: a.batch], stream[a.batch:]
        allpairs, teach = [], []
        for qi, pos in batch:
            p, t = group(qi, pos, train)
            allpairs += p; teach.append(t)
        ids, m, tt = (x.to(dev) for x in tok.batch(allpairs))
        G = 1 + a.negatives
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            lg = model(ids, m, tt)
        lg = lg.float().view(len(batch), G, len(a.exits), len(a.widths)).permute(0, 2, 3, 1)  # [B,E,W,G]
        logp = F.log_softmax(lg, dim=-1)
        ce = -(logp[..., 0] * ew).mean(0).sum()
        loss = ce
        mm = torch.zeros((), device=dev)
        if a.margin_mse > 0:
            tv = torch.tensor([[x if x is not None else float('nan') for x in t] for t in teach], device=dev)
            tm = a.teacher_scale * (tv[:, :1] - tv[:, 1:])  # [B, N]
            mask = ~torch.isnan(tm)
            if mask.any():
                sm = lg[..., :1] - lg[..., 1:]  # [B,E,W,N]
                d = (sm - torch.nan_to_num(tm)[:, None, None, :]) ** 2 * mask[:, None, None, :]
                mm = (d * ew[..., None]).sum((0, 3)).sum() / mask.sum()
                loss = loss + a.margin_mse * mm
        sd = torch.zeros((), device=dev)
        if a.self_distill > 0:
            tgt = logp[:, deep_idx[0], deep_idx[1]].detach().exp()  # [B,G]
            kl = (tgt[:, None, None, :] * (tgt.clamp_min(1e-9).log()[:, None, None, :] - logp)).sum(-1)  # [B,E,W]
            kl[:, deep_idx[0], deep_idx[1]] = 0
            sd = (kl * ew).mean(0).sum()
            loss = loss + a.self_distill * sd
        (loss / a.accum).backward()
        agg['ce'] += ce.item(); agg['mmse'] += mm.item(); agg['sd'] += sd.item(); agg['n'] += 1
        pairs_since += len(allpairs); seen_pairs += len(allpairs)
        micro += 1
        if micro % a.accum:
            continue
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        step += 1
        out_of_time = (a.max_minutes > 0 and time.time() - t_train >= 60 * a.max_minutes) \
            or os.path.exists(os.path.join(a.out, 'STOP'))  # touch work/ckpt/STOP to end early, saved
        if step % a.log_every == 0 or step == total or out_of_time:
            el = time.time() - tl
            log({'event': 'train', 'step': step, 'epoch': round(seen_pairs / max(1, counts['pairs_per_epoch']), 3),
                 'loss_ce': round(agg['ce'] / agg['n'], 4), 'loss_margin_mse': round(agg['mmse'] / agg['n'], 4),
                 'loss_self_distill': round(agg['sd'] / agg['n'], 4), 'lr': sched.get_last_lr()[0],
                 'pairs_per_s': round(pairs_since / el, 1), 'pairs_seen': seen_pairs})
            agg = {'ce': 0.0, 'mmse': 0.0, 'sd': 0.0, 'n': 0}; tl = time.time(); pairs_since = 0
        if step % a.eval_every == 0 or step == total or out_of_time:
            last_eval = evaluate(step)

    # ---- save
    from safetensors.torch import save_file
    model.eval()
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              os.path.join(a.out, 'model.safetensors'))
    ce_cfg = {'base_config': cfg, 'exits': a.exits, 'widths': a.widths, 'heads': names,
              'pooling': 'mean over attention mask', 'max_length': a.max_length, 'query_cap': a.query_cap,
              'token_types': a.token_types, 'input': '[CLS] query [SEP] title text [SEP]',
              'heldout': {'frac': a.heldout_frac, 'seed': a.seed, 'qids': [[r['set'], r['qid']] for r in held]},
              'train': {'steps': step, 'pairs_seen': seen_pairs, 'wall_s': round(time.time() - t0, 1),
                        'device': device_name(dev), 'torch': torch.__version__, 'bf16': use_bf16,
                        'counts': counts, 'args': vars(a), 'last_eval': last_eval}}
    json.dump(ce_cfg, open(os.path.join(a.out, 'ce_config.json'), 'w'), indent=1)
    for fn in ['tokenizer.json', 'config.json', 'vocab.txt']:
        import shutil
        shutil.copyfile(os.path.join(base, fn), os.path.join(a.out, fn))
    log({'event': 'done', 'steps': step, 'pairs_seen': seen_pairs, 'wall_s': round(time.time() - t0, 1),
         'checkpoint': a.out})


if __name__ == '__main__':
    main()
