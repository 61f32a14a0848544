#!/usr/bin/env python3
"""Evaluate sieve-ce v2 checkpoints in Python (torch): pure rerank nDCG@10 per exit and width on
SciFact test (hybrid top-100), NFCorpus dev (hybrid top-100) and DL19 (the published BM25 top-100,
never trained on), beside the first stage and the init (= bi-encoder cosine). The shipped numbers
come from `sieve eval`; this is the quick check used while training.
"""
import argparse, collections, json, os, sys, time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from common import ndcg_at, read_jsonl_gz, trec_order  # noqa: E402
from lj_data import Codec, States, pad_batch  # noqa: E402

DL = 'trec-dl-2019-passage'


def score_candidates(model, qst, docs, codec, key_q, cand_keys, batch=128, codes=None):
    """-> array [n_cand, 1 + n_blocks, n_widths] (exit 0 first). `codes`: an optional cache of
    each document's dequantised codes, keyed like `docs`."""
    q, qv = qst.get(key_q)
    out = []
    for s in range(0, len(cand_keys), batch):
        ks = cand_keys[s: s + batch]
        dl, dv = [], []
        for k in ks:
            st, v = docs.get(k)
            if codes is not None and k in codes:
                c = codes[k]
            else:
                c = codec.roundtrip(st) if codec is not None else st.astype(np.float32)
                if codes is not None:
                    codes[k] = c
            dl.append(c)
            dv.append(v)
        qs, qm, ds, dm, dvec = pad_batch([q] * len(ks), dl, dv)
        with torch.no_grad():
            e0 = model.exit0(torch.from_numpy(np.stack([qv] * len(ks))), dvec)
            deep = model(qs, qm, ds, dm, dvec)
        out.append(torch.cat([e0.unsqueeze(1), deep], dim=1).numpy())
    return np.concatenate(out, 0)


def eval_lists(model, qst, docs, codec, lists, depth):
    """lists: [(set, qid, qrels {doc: grade}, [(doc, first_stage_score)])] -> per-head mean nDCG@10."""
    sums, n = collections.defaultdict(float), 0
    for ds, qid, qrels, cand in lists:
        cand = [(d, s) for d, s in cand[:depth] if f'{ds}/{d}' in docs]
        if not cand:
            continue
        sc = score_candidates(model, qst, docs, codec, f'{ds}/{qid}', [f'{ds}/{d}' for d, _ in cand])
        sums['first_stage'] += ndcg_at(trec_order(cand), qrels)
        for e, layer in enumerate(model.exit_layers):
            for w_i, w in enumerate(model.widths):
                ranked = trec_order([(d, float(sc[i, e, w_i])) for i, (d, _) in enumerate(cand)])
                sums[f'{layer}:{w}'] += ndcg_at(ranked, qrels)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()} | {'queries': n}


def load_eval_lists(work, data_root):
    out = collections.defaultdict(list)
    for r in read_jsonl_gz(os.path.join(work, 'data', 'eval.jsonl.gz')):
        out[f"{r['set']}-{r['split']}"].append((r['set'], r['qid'], {d: int(g) for d, g in r['qrels'].items()},
                                                [(d, float(s)) for d, s in r['hybrid']]))
    qrels = collections.defaultdict(dict)
    with open(os.path.join(data_root, DL, 'qrels', 'test.tsv')) as f:
        for i, line in enumerate(f):
            p = line.split()
            if i == 0 and p[0] == 'query-id':
                continue
            qrels[p[0]][p[1]] = int(p[2])
    run = collections.defaultdict(list)
    with open(os.path.join(data_root, DL, 'runs', 'bm25_top100.trec')) as f:
        for line in f:
            p = line.split()
            run[p[0]].append((p[2], float(p[4])))
    for qid in sorted(run):
        if qid in qrels:
            out[f'{DL}-test'].append((DL, qid, qrels[qid], sorted(run[qid], key=lambda x: -x[1])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--ckpt', default=None, help='checkpoint (default work/lj/ckpt.pt); "init" = untrained')
    ap.add_argument('--depth', type=int, default=100)
    ap.add_argument('--max-queries', type=int, default=0)
    ap.add_argument('--sets', default='scifact-test,nfcorpus-dev,trec-dl-2019-passage-test')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default=None)
    ap.add_argument('--exact-codes', action='store_true', help='feed float codes (no int8): the quantisation loss')
    ap.add_argument('--code-bits', type=int, default=8,
                    help='store the codes with this precision: 32, 16 (fp16) or 2..8 bits per code plus a float scale')
    ap.add_argument('--code-rank', type=int, default=None,
                    help='store only the first N principal components (the rest fed as zeros)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lj_train import load_checkpoint
    lj = os.path.join(args.work, 'lj')
    model, codec = load_checkpoint(args.ckpt or os.path.join(lj, 'ckpt.pt'))
    codec.exact = args.exact_codes
    codec.bits, codec.keep = args.code_bits, args.code_rank
    print(json.dumps({'code_bits': 32 if args.exact_codes else args.code_bits, 'code_rank': args.code_rank or codec.rank,
                      'bytes_per_token': codec.bytes_per_token()}), flush=True)
    qst, docs = States(lj, 'query'), States(lj, 'doc')
    lists = load_eval_lists(args.work, args.data_root)
    report = {}
    for name in args.sets.split(','):
        ls = lists[name][: args.max_queries or None]
        t = time.time()
        report[name] = eval_lists(model, qst, docs, codec, ls, args.depth)
        report[name]['wall_s'] = round(time.time() - t, 1)
        report[name]['bytes_per_token'] = codec.bytes_per_token()
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report[name].items()}), flush=True)
    if args.json:
        json.dump(report, open(args.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
