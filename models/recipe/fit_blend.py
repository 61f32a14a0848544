#!/usr/bin/env python3
"""Fit the blend weight of the reranker with the fused first-stage score, on held-out TRAIN queries.

  python models/recipe/fit_blend.py [--model models/sieve-ce-minilm-l6-2dm] [--depth 100]

Why: a reranker trained on little data may order the first stage's top-k worse than the
first stage itself; blending its score with the fused score keeps the first stage's strength.
sieve computes the blend exactly like this (crates/sieve/src/pipeline.rs, `rerank_order`):
    final = w * minmax(reranker raw score) + (1 - w) * minmax(fused RRF score)
min-max taken over the reranked window of one query. This script reranks the hybrid
first-stage top-`--depth` of the held-out TRAIN queries (the ones train.py kept out of training,
recorded in matryoshka.json's training section), scores every head, grid-searches w in
[0, 1] (step 0.05) for nDCG@10 per head, and writes `blend` into matryoshka.json:
    {"reranker_weight": w of the default (deepest, widest) head, "per_head": {...}, "fitted_on": ...}
Never uses scifact test or nfcorpus dev.
"""
import argparse, collections, json, os, sys, time
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PairTokenizer, load_docs, ndcg_at, read_jsonl_gz
from verify import Runner, np_batch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))


def read_run(path):
    r = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            p = line.split()
            r[p[0]].append((p[2], float(p[4])))
    for k in r:
        r[k].sort(key=lambda x: (-x[1], [-ord(c) for c in x[0]]))
    return r


def read_qrels(path):
    q = collections.defaultdict(dict)
    with open(path) as f:
        for i, line in enumerate(f):
            p = line.rstrip('\n').split('\t')
            if i == 0 and p[0] == 'query-id':
                continue
            q[p[0]][p[1]] = int(p[2])
    return q


def minmax(x):
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=os.path.join(REPO, 'models', 'sieve-ce-minilm-l6-2dm'))
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--depth', type=int, default=100)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch', type=int, default=32)
    a = ap.parse_args()
    man_path = os.path.join(a.model, 'matryoshka.json')
    man = json.load(open(man_path))
    held = man['training'].get('heldout_qids')
    if not held:
        sys.exit('matryoshka.json has no training.heldout_qids (export.py records them)')
    tok = PairTokenizer(os.path.join(a.model, 'tokenizer.json'), man['max_length'], man['query_cap'],
                        'all zero' in man['token_type_ids'])
    runner = Runner(a.model, man, True, a.threads)
    docs = load_docs(os.path.join(a.work, 'data'))
    recs = {(r['set'], r['qid']): r['query'] for r in read_jsonl_gz(os.path.join(a.work, 'data', 'train.jsonl.gz'))}
    exits = [e['layer'] for e in man['exits']]
    widths = man['exits'][0]['widths']
    heads = [f'l{e}_w{w}' for e in exits for w in widths]
    per_query = []
    t0 = time.time()
    runs, qrels = {}, {}
    for s, qid in held:
        if s not in runs:
            runs[s] = read_run(os.path.join(a.work, 'runs', f'{s}-train-hybrid.trec'))
            qrels[s] = read_qrels(os.path.join(a.data_root, s, 'qrels', 'train.tsv'))
        cands = runs[s].get(qid, [])[: a.depth]
        judged = qrels[s].get(qid, {})
        if not cands or not any(v > 0 for v in judged.values()) or (s, qid) not in recs:
            continue
        missing = [d for d, _ in cands if (s, d) not in docs]
        if missing:
            continue
        q = tok.ids([recs[(s, qid)]])[0]
        dids = tok.ids([docs[(s, d)] for d, _ in cands])
        pairs = [tok.pair(q, d) for d in dids]
        out = []
        for i in range(0, len(pairs), a.batch):
            out.append(runner.chain(*np_batch(tok, pairs[i:i + a.batch])))
        lg = np.concatenate(out).reshape(len(pairs), -1)  # [n, exits*widths]
        per_query.append(([d for d, _ in cands], np.array([x for _, x in cands]), lg, judged))
    print(f'[blend] scored {len(per_query)} held-out TRAIN queries x top-{a.depth} in {time.time() - t0:.0f}s', flush=True)
    if not per_query:
        sys.exit('no held-out query with candidates and judgments')
    grid = [round(x, 2) for x in np.arange(0, 1.0001, 0.05)]
    table = {}
    for j, h in enumerate(heads):
        curve = []
        for w in grid:
            vals = []
            for ids, fused, lg, judged in per_query:
                final = w * minmax(lg[:, j]) + (1 - w) * minmax(fused)
                order = sorted(range(len(ids)), key=lambda i: (-final[i], i))
                vals.append(ndcg_at([ids[i] for i in order], judged))
            curve.append(float(np.mean(vals)))
        best = int(np.argmax(curve))
        table[h] = {'weight': grid[best], 'ndcg@10': round(curve[best], 4),
                    'ndcg@10_pure': round(curve[-1], 4), 'ndcg@10_fused': round(curve[0], 4)}
        print(f'[blend] {h}: best w={grid[best]:.2f} nDCG@10 {curve[best]:.4f} (pure reranker {curve[-1]:.4f}, fused {curve[0]:.4f})', flush=True)
    default = f'l{exits[-1]}_w{max(widths)}'
    man['blend'] = {'reranker_weight': table[default]['weight'], 'head': default, 'per_head': table,
                    'formula': 'w * minmax(reranker raw) + (1 - w) * minmax(fused score), over the window',
                    'fitted_on': f'{len(per_query)} held-out TRAIN queries (hybrid top-{a.depth})',
                    'grid': 'w in 0..1 step 0.05, nDCG@10'}
    json.dump(man, open(man_path, 'w'), indent=1)
    card = os.path.join(a.model, 'README.md')
    if os.path.exists(card):
        rows = '\n'.join(f"| {h} | {v['weight']:.2f} | {v['ndcg@10']:.4f} | {v['ndcg@10_pure']:.4f} | {v['ndcg@10_fused']:.4f} |" for h, v in table.items())
        text = (f"sieve orders the reranked window by `w · minmax(reranker) + (1 − w) · minmax(fused)` with "
                f"w = **{table[default]['weight']:.2f}** (head {default}), fitted on {len(per_query)} held-out TRAIN "
                f"queries (hybrid top-{a.depth}, nDCG@10, grid step 0.05); `--blend off` gives the pure reranker.\n\n"
                "| head | best w | nDCG@10 blended | pure reranker | fused only |\n|---|---|---|---|---|\n" + rows)
        c = open(card).read()
        open(card, 'w').write(c.replace('{{BLEND}}', text))
    print(f'[blend] wrote blend.reranker_weight={table[default]["weight"]} into {man_path}')


if __name__ == '__main__':
    main()
