#!/usr/bin/env python3
"""Build the training/eval data for sieve's 2D-Matryoshka cross-encoder into models/recipe/work/.

Needs this machine's ../shared/data and the built sieve binary (target/release/sieve); the GPU
machine only needs what this writes under work/base and work/data (carry those two paths).

Outputs (work/ is git-ignored):
  work/runs/<set>-<split>-{bm25,dense,hybrid}.trec   sieve's own first-stage runs (big, not carried)
  work/<set>-train.json, work/<set>-<split>.json      sieve eval reports
  work/data/train.jsonl.gz   one record per TRAIN query: qid, set, query, positives [{doc, grade,
                             teacher}], negatives [{doc, teacher}] (doc ids; texts in docs.jsonl.gz)
  work/data/eval.jsonl.gz    one record per EVAL query (scifact test, nfcorpus dev): qid, set, query,
                             qrels {doc: grade}, bm25/dense/hybrid [[doc, score], ...] (top-100)
  work/data/docs.jsonl.gz    {"set", "doc", "text"} for every doc referenced above ("title text")
  work/data/counts.json      data-count summary
  work/base/                 the base model (config, tokenizer, vocab, model.safetensors in fp16 by
                             default so work/base + work/data fit the device tool's 64 MiB carry)

Teacher score (Margin-MSE): per query, min-max normalise the BM25 and the dense (cosine) scores of
sieve's top-100 lists to [0,1] and average them: t = 0.5*bm25n + 0.5*densen, a doc missing from
one list gets 0 for it. Docs in neither list get teacher = null and are masked out of the
Margin-MSE term (a positive that first stage missed must not be taught to rank low). We do not
use the RRF score itself: it is rank-only and nearly flat (1/61 .. 1/160), a poor margin target.
DL19 (judged pool, qrels/test.tsv; grade 0 = judged negatives, 1-3 positives) has no sieve index
here, so its teacher is null (listwise CE only). Using DL19 for training means it can no longer
be used for evaluation.
"""
import argparse, collections, gzip, json, os, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))


def read_jsonl(path):
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_qrels(path):
    q = collections.defaultdict(dict)
    with open(path) as f:
        for i, line in enumerate(f):
            p = line.rstrip('\n').split('\t')
            if i == 0 and p[0] == 'query-id':
                continue
            q[p[0]][p[1]] = int(p[2])
    return q


def read_run(path):
    r = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            p = line.split()
            r[p[0]].append((p[2], float(p[4])))
    for k in r:
        r[k].sort(key=lambda x: -x[1])
    return r


def run_sieve(args, ds, split, max_queries):
    sets_dir = args.data_root  # keep the path spelled as the cached index recorded it
    dpath = os.path.join(sets_dir, ds)
    run_dir = os.path.join(args.work, 'runs')
    os.makedirs(run_dir, exist_ok=True)
    stages = ['bm25', 'dense', 'hybrid']
    outs = {s: os.path.join(run_dir, f'{ds}-{split}-{s}.trec') for s in stages}
    if args.reuse_runs and all(os.path.exists(p) for p in outs.values()):
        print(f'[prepare] reusing runs for {ds} {split}', flush=True)
    else:
        idx = args.index_dir.replace('{set}', ds)
        cmd = [args.sieve, 'eval', '--dataset', dpath, '--split', split, '--stages', 'bm25,dense,hybrid',
               '--run-dir', run_dir, '--index-dir', idx, '--json',
               os.path.join(args.work, f'{ds}-{split}.json')]
        if max_queries:
            cmd += ['--max-queries', str(max_queries)]
        print('[prepare] $', ' '.join(cmd), flush=True)
        t = time.time()
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f'[prepare] sieve eval {ds} {split}: {time.time() - t:.0f}s', flush=True)
    return {s: read_run(p) for s, p in outs.items()}


def minmax(lst):
    if not lst:
        return {}
    vals = [s for _, s in lst]
    lo, hi = min(vals), max(vals)
    return {d: ((s - lo) / (hi - lo) if hi > lo else 1.0) for d, s in lst}


def teacher_fn(runs, qid):
    b = minmax(runs['bm25'].get(qid, []))
    d = minmax(runs['dense'].get(qid, []))

    def t(doc):
        if doc not in b and doc not in d:
            return None
        return round(0.5 * b.get(doc, 0.0) + 0.5 * d.get(doc, 0.0), 5)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'),
                    help='BEIR data sets (spelled like the cached indexes were built with)')
    ap.add_argument('--base-model', default=os.path.join(REPO, '..', 'shared', 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--base-dtype', choices=['fp16', 'fp32'], default='fp16',
                    help='dtype of the copied base weights (fp16: 45 MB, fits the 64 MiB carry)')
    ap.add_argument('--sieve', default=os.path.join(REPO, 'target', 'release', 'sieve'))
    ap.add_argument('--index-dir', default='/tmp/idx-{set}', help='cached sieve index per set ({set} is replaced)')
    ap.add_argument('--max-queries', type=int, default=0, help='TRAIN queries per set (0 = all; smoke: 30)')
    ap.add_argument('--max-eval-queries', type=int, default=0, help='EVAL queries per set (0 = all)')
    ap.add_argument('--neg-pool', type=int, default=32, help='hard negatives kept per query')
    ap.add_argument('--no-dl19', action='store_true', help='leave the DL19 judged pool out of training')
    ap.add_argument('--no-eval', action='store_true', help='skip the eval-split runs (scifact test, nfcorpus dev)')
    ap.add_argument('--reuse-runs', action='store_true', help='reuse existing work/runs/*.trec')
    args = ap.parse_args()
    t0 = time.time()
    data_dir = os.path.join(args.work, 'data')
    os.makedirs(data_dir, exist_ok=True)
    counts = {'train': {}, 'eval': {}, 'teacher': 'mean of per-query min-max BM25 and dense scores (sieve top-100); null if in neither'}
    need_docs = collections.defaultdict(set)
    train_recs = []

    # ---- scifact / nfcorpus TRAIN
    for ds in ['scifact', 'nfcorpus']:
        dpath = os.path.join(args.data_root, ds)
        qrels = read_qrels(os.path.join(dpath, 'qrels', 'train.tsv'))
        queries = {q['_id']: q['text'] for q in read_jsonl(os.path.join(dpath, 'queries.jsonl'))}
        runs = run_sieve(args, ds, 'train', args.max_queries)
        qids = [q for q in runs['hybrid'] if q in qrels]
        n_pos = n_neg = n_tmiss = 0
        for qid in qids:
            t = teacher_fn(runs, qid)
            judged = qrels[qid]
            pos = [{'doc': d, 'grade': g, 'teacher': t(d)} for d, g in judged.items() if g > 0]
            if not pos:
                continue
            best = {}
            for s in ['hybrid', 'bm25', 'dense']:
                for r, (d, _) in enumerate(runs[s].get(qid, [])):
                    if d not in judged:
                        best[d] = min(best.get(d, 10 ** 9), r)
            negs = sorted(best, key=lambda d: best[d])[:args.neg_pool]
            negs = [{'doc': d, 'teacher': t(d)} for d in negs]
            train_recs.append({'qid': qid, 'set': ds, 'query': queries[qid], 'positives': pos, 'negatives': negs})
            n_pos += len(pos); n_neg += len(negs); n_tmiss += sum(p['teacher'] is None for p in pos)
            for x in pos + negs:
                need_docs[ds].add(x['doc'])
        counts['train'][ds] = {'queries': sum(r['set'] == ds for r in train_recs), 'positives': n_pos,
                               'negatives': n_neg, 'positives_without_teacher': n_tmiss}
        print(f'[prepare] {ds} train: {counts["train"][ds]}', flush=True)

    # ---- DL19 judged pool (train only; DL19 then not usable for evaluation)
    if not args.no_dl19:
        ds = 'trec-dl-2019-passage'
        dpath = os.path.join(args.data_root, ds)
        qrels = read_qrels(os.path.join(dpath, 'qrels', 'test.tsv'))
        queries = {q['_id']: q['text'] for q in read_jsonl(os.path.join(dpath, 'queries.jsonl'))}
        n_pos = n_neg = nq = n_missing = 0
        have = {d['_id'] for d in read_jsonl(os.path.join(dpath, 'corpus.jsonl'))}
        for qid in sorted(qrels, key=lambda x: int(x) if x.isdigit() else x):
            if args.max_queries and nq >= args.max_queries:
                break
            pos = [{'doc': d, 'grade': g, 'teacher': None} for d, g in qrels[qid].items() if g > 0 and d in have]
            negs = [{'doc': d, 'teacher': None} for d, g in sorted(qrels[qid].items()) if g == 0 and d in have]
            n_missing += sum(d not in have for d in qrels[qid])
            if not pos or not negs or qid not in queries:
                continue
            nq += 1
            train_recs.append({'qid': qid, 'set': ds, 'query': queries[qid], 'positives': pos, 'negatives': negs})
            n_pos += len(pos); n_neg += len(negs)
            for x in pos + negs:
                need_docs[ds].add(x['doc'])
        counts['train'][ds] = {'queries': nq, 'positives': n_pos, 'negatives': n_neg,
                               'judged_docs_missing_from_corpus': n_missing,
                               'grades': 'positives 1-3, negatives = judged 0', 'teacher': None}
        print(f'[prepare] {ds} train (judged pool): {counts["train"][ds]}', flush=True)

    with gzip.open(os.path.join(data_dir, 'train.jsonl.gz'), 'wt') as f:
        for r in train_recs:
            f.write(json.dumps(r) + '\n')

    # ---- EVAL splits (first-stage top-100 for reranking in verify.py)
    eval_recs = []
    if not args.no_eval:
        for ds, split in [('scifact', 'test'), ('nfcorpus', 'dev')]:
            dpath = os.path.join(args.data_root, ds)
            qrels = read_qrels(os.path.join(dpath, 'qrels', f'{split}.tsv'))
            queries = {q['_id']: q['text'] for q in read_jsonl(os.path.join(dpath, 'queries.jsonl'))}
            runs = run_sieve(args, ds, split, args.max_eval_queries)
            n = 0
            for qid in runs['hybrid']:
                if qid not in qrels:
                    continue
                rec = {'qid': qid, 'set': ds, 'split': split, 'query': queries[qid], 'qrels': qrels[qid]}
                for s in ['bm25', 'dense', 'hybrid']:
                    rec[s] = [[d, sc] for d, sc in runs[s].get(qid, [])]  # unrounded: RRF scores tie when rounded
                    need_docs[ds].update(d for d, _ in rec[s])
                eval_recs.append(rec)
                n += 1
            counts['eval'][f'{ds}-{split}'] = {'queries': n}
            print(f'[prepare] {ds} {split} eval: {n} queries', flush=True)
    with gzip.open(os.path.join(data_dir, 'eval.jsonl.gz'), 'wt') as f:
        for r in eval_recs:
            f.write(json.dumps(r) + '\n')

    # ---- doc texts ("title text")
    nd = 0
    with gzip.open(os.path.join(data_dir, 'docs.jsonl.gz'), 'wt') as f:
        for ds, ids in need_docs.items():
            for d in read_jsonl(os.path.join(args.data_root, ds, 'corpus.jsonl')):
                if d['_id'] in ids:
                    text = ((d.get('title') or '') + ' ' + (d.get('text') or '')).strip()
                    f.write(json.dumps({'set': ds, 'doc': d['_id'], 'text': text}) + '\n')
                    nd += 1
    counts['docs'] = nd
    counts['licences'] = {'scifact': 'CC BY-NC 2.0 (BEIR)', 'nfcorpus': 'CC BY-SA 4.0 (BEIR)',
                          'trec-dl-2019-passage': 'MS MARCO terms (non-commercial research)'}

    # ---- base model
    base = os.path.join(args.work, 'base')
    os.makedirs(base, exist_ok=True)
    for fn in ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'README.md']:
        src = os.path.join(args.base_model, fn)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(base, fn))
    from safetensors.torch import load_file, save_file
    sd = load_file(os.path.join(args.base_model, 'model.safetensors'))
    if args.base_dtype == 'fp16':
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(base, 'model.safetensors'))
    counts['base'] = {'from': os.path.abspath(args.base_model), 'dtype': args.base_dtype}
    counts['wall_s'] = round(time.time() - t0, 1)
    with open(os.path.join(data_dir, 'counts.json'), 'w') as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts, indent=1))
    sz = sum(os.path.getsize(os.path.join(dp, fn)) for p in [data_dir, base] for dp, _, fns in os.walk(p) for fn in fns)
    print(f'[prepare] work/base + work/data = {sz / 2**20:.1f} MiB (device carry limit 64 MiB)')


if __name__ == '__main__':
    main()
