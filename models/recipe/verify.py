#!/usr/bin/env python3
"""Verify an exported model dir (from the shipped files + work/data/eval.jsonl.gz only).

  python models/recipe/verify.py [--model models/sieve-ce-minilm-l6-2dm] [--pairs 1000] [--write-card]

(a) chained segments == full graph (fp32, |diff| <= 1e-3) on real pairs;
(b) int8 vs fp32 Spearman per head on --pairs real pairs (issue bar: >= 0.98);
(c) latency: segment 1 alone vs full graph (int8 and fp32, same batch) -- should be ~1/3;
(d) quality per (layer, width) head: rerank the hybrid first stage's top-100 for scifact test and
    nfcorpus dev; nDCG@10 / MRR@10 (trec_eval conventions, computed here and, when the sieve
    binary exists, also by `sieve eval --qrels --run` on the TREC runs written to work/verify/).
Prints a markdown table; --write-card puts it into the model dir's README.md.
"""
import argparse, json, os, subprocess, sys, time
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PairTokenizer, load_docs, mrr_at, ndcg_at, read_jsonl_gz, trec_order

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))


class Runner:
    def __init__(self, d, man, int8, threads):
        import onnxruntime as ort
        so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
        k = 'file_int8' if int8 else 'file'
        prov = ['CUDAExecutionProvider', 'CPUExecutionProvider'] if (not int8 and 'CUDAExecutionProvider' in ort.get_available_providers()) else ['CPUExecutionProvider']
        self.segs = [ort.InferenceSession(os.path.join(d, s[k]), so, providers=prov) for s in man['segments']]
        self.in0 = [i.name for i in self.segs[0].get_inputs()]
        # The full single graph is produced by export.py but not shipped (size): optional.
        full = os.path.join(d, man.get('full', {}).get(k, ''))
        self.full = ort.InferenceSession(full, so, providers=prov) if os.path.isfile(full) else None
        self.fin = [i.name for i in self.full.get_inputs()] if self.full else []

    @staticmethod
    def available(d, man, int8):
        k = 'file_int8' if int8 else 'file'
        return all(os.path.isfile(os.path.join(d, s[k])) for s in man['segments'])

    def feed(self, names, ids, m, tt):
        src = {'input_ids': ids, 'attention_mask': m, 'token_type_ids': tt}
        return {n: src[n] for n in names}

    def chain(self, ids, m, tt, upto=None):
        """-> logits [B, n_exits_run, n_widths]"""
        out = []
        h, lg = self.segs[0].run(None, self.feed(self.in0, ids, m, tt))
        out.append(lg)
        for s in self.segs[1:upto]:
            r = s.run(None, {'hidden_states': h, 'attention_mask': m})
            if len(r) == 2:
                h, lg = r
            else:
                lg = r[0]
            out.append(lg)
        return np.stack(out, 1)

    def full_logits(self, ids, m, tt):
        return self.full.run(None, self.feed(self.fin, ids, m, tt))[0]


def np_batch(tok, pairs):
    ids, m, tt = tok.batch(pairs)
    return ids.numpy(), m.numpy(), tt.numpy()


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float); rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=os.path.join(REPO, 'models', 'sieve-ce-minilm-l6-2dm'))
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--pairs', type=int, default=1000, help='real pairs for (a) and (b)')
    ap.add_argument('--queries', type=int, default=0, help='eval queries per set for (d) (0 = all)')
    ap.add_argument('--depth', type=int, default=100, help='first-stage candidates reranked')
    ap.add_argument('--precision', choices=['int8', 'fp32'], default='int8', help='files used for (d)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--timing-batch', type=int, default=32)
    ap.add_argument('--timing-reps', type=int, default=5)
    ap.add_argument('--sieve', default=os.path.join(REPO, 'target', 'release', 'sieve'))
    ap.add_argument('--write-card', action='store_true')
    a = ap.parse_args()
    man = json.load(open(os.path.join(a.model, 'matryoshka.json')))
    widths = man['exits'][0]['widths']
    exits = [e['layer'] for e in man['exits']]
    names = [f'l{e}_w{w}' for e in exits for w in widths]
    tok = PairTokenizer(os.path.join(a.model, 'tokenizer.json'), man['max_length'], man['query_cap'],
                        man['token_type_ids'].startswith('all zero'))
    data = os.path.join(a.work, 'data')
    evals = list(read_jsonl_gz(os.path.join(data, 'eval.jsonl.gz')))
    docs = load_docs(data)
    i8 = Runner(a.model, man, True, a.threads)
    # fp32 files are produced by export.py; the shipped model holds the int8 segments only, so
    # (a) and (b) run where the export's full output is (they are recorded in the model card).
    f32 = Runner(a.model, man, False, a.threads) if Runner.available(a.model, man, False) else None
    report = {'model': a.model}
    if f32 is None and a.precision == 'fp32':
        sys.exit('--precision fp32 needs the fp32 segment files (export.py writes them)')

    # real pairs: hybrid candidates of eval queries, round-robin over queries and ranks
    pairs = []
    for rank in range(a.depth):
        for r in evals:
            if rank < len(r['hybrid']) and len(pairs) < a.pairs:
                pairs.append((r['query'], docs[(r['set'], r['hybrid'][rank][0])]))
    qt, dt = tok.ids([q for q, _ in pairs]), tok.ids([d for _, d in pairs])
    enc = [tok.pair(q, d) for q, d in zip(qt, dt)]
    S32, S8, maxdiff = [], [], None
    for i in range(0, len(enc), a.batch):
        ids, m, tt = np_batch(tok, enc[i:i + a.batch])
        S8.append(i8.chain(ids, m, tt).reshape(len(ids), -1))
        if f32 is None:
            continue
        c32 = f32.chain(ids, m, tt); S32.append(c32.reshape(len(ids), -1))
        if f32.full is not None:
            full = f32.full_logits(ids, m, tt)[:, 0]
            d = float(np.abs(full - c32[:, -1, widths.index(max(widths))]).max())
            maxdiff = d if maxdiff is None else max(maxdiff, d)
    sp = None
    if maxdiff is not None:
        report['a_chain_vs_full_fp32_maxabs'] = maxdiff
        report['a_pass'] = maxdiff <= 1e-3
        print(f'(a) chained segments vs full graph (fp32), {len(enc)} pairs: max |diff| = {maxdiff:.2e}  ->  {"PASS" if maxdiff <= 1e-3 else "FAIL"}')
    else:
        print('(a) skipped: no fp32 full graph in this directory (export.py output has it)')
    if S32:
        S32, S8 = np.concatenate(S32), np.concatenate(S8)
        sp = {n: round(spearman(S32[:, j], S8[:, j]), 4) for j, n in enumerate(names)}
        report['b_int8_vs_fp32_spearman'] = sp
        print(f'(b) int8 vs fp32 Spearman per head ({len(enc)} pairs; bar 0.98):', json.dumps(sp),
              '-> ' + ('PASS' if min(sp.values()) >= 0.98 else 'BELOW 0.98'))
    else:
        print('(b) skipped: no fp32 segment files in this directory (export.py output has them)')

    # (c) timing
    tb = enc[: a.timing_batch]
    ids, m, tt = np_batch(tok, tb)
    tim = {}
    for label, rn in [('int8', i8), ('fp32', f32)]:
        if rn is None:
            continue
        steps = [('segment1', lambda: rn.segs[0].run(None, rn.feed(rn.in0, ids, m, tt))),
                 ('chain_all', lambda: rn.chain(ids, m, tt))]
        if rn.full is not None:
            steps.append(('full', lambda: rn.full_logits(ids, m, tt)))
        for what, fn in steps:
            fn()
            t = time.perf_counter()
            for _ in range(a.timing_reps):
                fn()
            tim[f'{label}_{what}_ms'] = round((time.perf_counter() - t) / a.timing_reps * 1000, 1)
        ref = tim.get(f'{label}_full_ms', tim[f'{label}_chain_all_ms'])
        tim[f'{label}_segment1_over_full'] = round(tim[f'{label}_segment1_ms'] / ref, 3)
    report['c_timing'] = {'batch': len(tb), 'seq': int(ids.shape[1]), 'threads': a.threads, **tim}
    print('(c) timing (batch %d, seq %d):' % (len(tb), ids.shape[1]), json.dumps(tim))

    # (d) quality
    rn = i8 if a.precision == 'int8' else f32
    vdir = os.path.join(a.work, 'verify'); os.makedirs(vdir, exist_ok=True)
    table = {}
    t0 = time.time()
    for ds in sorted({(r['set'], r['split']) for r in evals}):
        recs = [r for r in evals if (r['set'], r['split']) == ds]
        if a.queries:
            recs = recs[: a.queries]
        blend = man.get('blend')
        bname = f"blend:{blend['head']}" if blend else None
        runs = {k: {} for k in ['bm25', 'hybrid'] + names + ([bname] if blend else [])}
        for r in recs:
            cands = [d for d, _ in r['hybrid'][: a.depth]]
            q = tok.ids([r['query']])[0]
            e = [tok.pair(q, x) for x in tok.ids([docs[(r['set'], d)] for d in cands])]
            sc = np.concatenate([rn.chain(*np_batch(tok, e[i:i + a.batch])).reshape(len(e[i:i + a.batch]), -1)
                                 for i in range(0, len(e), a.batch)])
            runs['bm25'][r['qid']] = [(d, s) for d, s in r['bm25'][: a.depth]]
            runs['hybrid'][r['qid']] = [(d, s) for d, s in r['hybrid'][: a.depth]]
            for j, n in enumerate(names):
                runs[n][r['qid']] = list(zip(cands, sc[:, j].tolist()))
            if blend:
                # sieve's blend (crates/sieve/src/pipeline.rs rerank_order): min-max over the window
                def mm(x):
                    lo, hi = float(np.min(x)), float(np.max(x))
                    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)
                w = blend['reranker_weight']
                fused = np.array([sc_ for _, sc_ in r['hybrid'][: a.depth]])
                fin = w * mm(sc[:, names.index(blend['head'])]) + (1 - w) * mm(fused)
                runs[bname][r['qid']] = list(zip(cands, fin.tolist()))
        qrels = {r['qid']: r['qrels'] for r in recs}
        key = f'{ds[0]} {ds[1]}'
        table[key] = {}
        qpath = os.path.join(vdir, f'{ds[0]}-{ds[1]}.qrels.tsv')
        with open(qpath, 'w') as f:
            f.write('query-id\tcorpus-id\tscore\n')
            for q, d in qrels.items():
                for doc, g in d.items():
                    f.write(f'{q}\t{doc}\t{g}\n')
        rpaths = []
        for n, run in runs.items():
            nd = [ndcg_at(trec_order(run[q]), qrels[q]) for q in run]
            mr = [mrr_at(trec_order(run[q]), qrels[q]) for q in run]
            table[key][n] = {'ndcg@10': round(float(np.mean(nd)), 4), 'mrr@10': round(float(np.mean(mr)), 4)}
            p = os.path.join(vdir, f'{ds[0]}-{ds[1]}-{n}.trec'); rpaths.append(p)
            with open(p, 'w') as f:
                for q in run:
                    sc = dict(run[q])
                    for rank, d in enumerate(trec_order(run[q])):
                        f.write(f'{q} Q0 {d} {rank + 1} {sc[d]!r} {n}\n')
        table[key]['_queries'] = len(recs)
        if os.path.exists(a.sieve):
            cp = subprocess.run([a.sieve, 'eval', '--qrels', qpath, '--run', *rpaths, '--metrics', 'ndcg@10,mrr@10', '--json'],
                                capture_output=True, text=True)
            if cp.returncode == 0:
                js = json.loads(cp.stdout)
                means = {os.path.basename(p)[len(f'{ds[0]}-{ds[1]}-'):-5]: js[p]['mean'] for p in js if p in rpaths}
                diff = max(abs(means[n][mt] - table[key][n][mt]) for n in means for mt in ('ndcg@10', 'mrr@10'))
                table[key]['_sieve_eval'] = {'means': means, 'max_abs_diff_vs_python': round(diff, 5)}
                print(f'(d) {key}: sieve eval cross-check, max |python - sieve| = {diff:.5f}')
            else:
                table[key]['_sieve_eval'] = 'error: ' + cp.stderr[-500:]
    report['d_quality'] = table
    report['d_wall_s'] = round(time.time() - t0, 1)
    sets = list(table)
    lines = ['| system | ' + ' | '.join(f'{s} nDCG@10 | {s} MRR@10' for s in sets) + ' |',
             '|---|' + '---|---|' * len(sets)]
    for n in ['bm25', 'hybrid'] + names + ([bname] if man.get('blend') else []):
        if n.startswith('blend:'):
            lines.append(f"| blend {man['blend']['reranker_weight']:.2f} × {n[6:]} + fused (hybrid top-{a.depth}) | " + ' | '.join(f"{table[s][n]['ndcg@10']:.4f} | {table[s][n]['mrr@10']:.4f}" for s in sets) + ' |')
            continue
        label = n if n in ('bm25', 'hybrid') else f'rerank hybrid top-{a.depth}: head layer {n.split("_")[0][1:]} width {n.split("_w")[1]} ({a.precision})'
        lines.append(f'| {label} | ' + ' | '.join(f"{table[s][n]['ndcg@10']:.4f} | {table[s][n]['mrr@10']:.4f}" for s in sets) + ' |')
    md = '\n'.join(lines) + '\n\nQueries: ' + ', '.join(f'{s}: {table[s]["_queries"]}' for s in sets) + \
        f'. nDCG@10 gain = grade, MRR@10 relevance >= 1 (trec_eval conventions); runs in {vdir}.'
    print('(d) quality:\n' + md)
    json.dump(report, open(os.path.join(vdir, 'report.json'), 'w'), indent=1)
    print('report:', os.path.join(vdir, 'report.json'))
    if a.write_card:
        p = os.path.join(a.model, 'README.md'); c = open(p).read()
        s, e = c.index('<!-- VERIFY-TABLE -->'), c.index('<!-- /VERIFY-TABLE -->')
        extra = (f"\n\nint8 vs fp32 Spearman per head ({len(enc)} pairs): {json.dumps(sp)}" if sp else '') + \
            f"\n\nsegment 1 / full latency: " + ', '.join(f"{k[:-len('_segment1_over_full')]} {v}" for k, v in tim.items() if k.endswith('_over_full')) + '\n'
        open(p, 'w').write(c[:s] + '<!-- VERIFY-TABLE -->\n' + md + extra + c[e:])


if __name__ == '__main__':
    main()
