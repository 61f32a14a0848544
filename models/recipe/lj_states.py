#!/usr/bin/env python3
"""Tower states for sieve-ce v2 training and evaluation: runs the bi-encoder's shipped ONNX
graph (the very file sieve's index embeds with, so training sees the states serving will see) on
every document and query that prepare_data.py's work/data references, every document of the
SciFact/NFCorpus TRAIN queries' hybrid top-100 (the held-out TRAIN windows lj_train.py selects
checkpoints on), the groups of lj_general.py, lj_debian.py and lj_titles.py when made, plus the DL19 BM25 top-100 run
(evaluation only, never trained on).

Writes work/lj/:
  docs.json          [{key: "set/doc", off, len}], offsets into doc_states.f16 (token rows)
  doc_states.f16     [n_tokens, 384] float16: last hidden states of `[CLS] title text [SEP]` (<= 256)
  doc_vecs.f32       [n_docs, 384] float32: mean-pooled over the mask, L2-normalised (the dense vector)
  queries.json, query_states.f16, query_vecs.f32: the same for `[CLS] query [SEP]` (<= 64 query tokens)
"""
import argparse, collections, json, os, sys, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from common import read_jsonl_gz  # noqa: E402


def read_jsonl(path):
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class Tower:
    def __init__(self, model_dir, threads, max_length):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(os.path.join(model_dir, 'onnx', 'model.onnx'), so,
                                         providers=['CPUExecutionProvider'])
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.tok = Tokenizer.from_file(os.path.join(model_dir, 'tokenizer.json'))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)

    def encode_ids(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts)]

    def run(self, id_lists, batch_tokens=4096, max_batch=32, progress=None):
        """-> list of (states [L, 384] fp16, vec [384] fp32) in input order."""
        order = sorted(range(len(id_lists)), key=lambda i: -len(id_lists[i]))
        out = [None] * len(id_lists)
        s, done, t0 = 0, 0, time.time()
        while s < len(order):
            L = max(len(id_lists[order[s]]), 1)
            n = max(1, min(max_batch, batch_tokens // L))
            idx = order[s: s + n]
            ids = np.zeros((len(idx), L), dtype=np.int64)
            mask = np.zeros((len(idx), L), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : len(id_lists[i])] = id_lists[i]
                mask[r, : len(id_lists[i])] = 1
            feed = {'input_ids': ids, 'attention_mask': mask}
            if 'token_type_ids' in self.inputs:
                feed['token_type_ids'] = np.zeros_like(ids)
            h = self.sess.run(None, feed)[0]
            for r, i in enumerate(idx):
                n_tok = len(id_lists[i])
                st = h[r, :n_tok]
                v = st.mean(0)
                v = v / max(np.linalg.norm(v), 1e-12)
                out[i] = (st.astype(np.float16), v.astype(np.float32))
            s += n
            done += len(idx)
            if progress and (s >= len(order) or done % 512 < len(idx)):
                el = time.time() - t0
                print(f'[states] {progress}: {done}/{len(order)} in {el:.0f}s ({done / max(el, 1e-9):.1f}/s)', flush=True)
        return out


def write(prefix, keys, results):
    offs, off = [], 0
    with open(prefix + '_states.f16', 'wb') as f:
        for k, (st, _) in zip(keys, results):
            f.write(st.tobytes())
            offs.append({'key': k, 'off': off, 'len': int(st.shape[0])})
            off += st.shape[0]
    np.stack([v for _, v in results]).astype(np.float32).tofile(prefix + '_vecs.f32')
    return offs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--doc-max-length', type=int, default=256)
    ap.add_argument('--query-cap', type=int, default=64)
    args = ap.parse_args()
    out = os.path.join(args.work, 'lj')
    os.makedirs(out, exist_ok=True)
    data = os.path.join(args.work, 'data')

    docs = {}
    for d in read_jsonl_gz(os.path.join(data, 'docs.jsonl.gz')):
        docs[f"{d['set']}/{d['doc']}"] = d['text']
    queries = {}
    for r in read_jsonl_gz(os.path.join(data, 'train.jsonl.gz')):
        queries[f"{r['set']}/{r['qid']}"] = r['query']
    for r in read_jsonl_gz(os.path.join(data, 'eval.jsonl.gz')):
        queries[f"{r['set']}/{r['qid']}"] = r['query']
    # the general-domain groups of lj_general.py and lj_debian.py, and lj_titles.py's, when made
    for name in ('general', 'debian', 'titles'):
        if os.path.exists(os.path.join(data, f'{name}.jsonl.gz')):
            for d in read_jsonl_gz(os.path.join(data, f'{name}_docs.jsonl.gz')):
                docs[f"{d['set']}/{d['doc']}"] = d['text']
            for r in read_jsonl_gz(os.path.join(data, f'{name}.jsonl.gz')):
                queries[f"{r['set']}/{r['qid']}"] = r['query']
    # every document of the TRAIN queries' hybrid top-100 (the held-out TRAIN queries are scored on
    # these windows during training, the task `sieve eval` measures)
    for ds in ['scifact', 'nfcorpus']:
        run = os.path.join(args.work, 'runs', f'{ds}-train-hybrid.trec')
        if not os.path.exists(run):
            continue
        with open(run) as f:
            want = {line.split()[2] for line in f} - {k.split('/', 1)[1] for k in docs if k.startswith(ds + '/')}
        for d in read_jsonl(os.path.join(args.data_root, ds, 'corpus.jsonl')):
            if d['_id'] in want:
                docs[f"{ds}/{d['_id']}"] = ((d.get('title') or '') + ' ' + (d.get('text') or '')).strip()
    dl = 'trec-dl-2019-passage'
    dl_dir = os.path.join(args.data_root, dl)
    run_docs = set()
    with open(os.path.join(dl_dir, 'runs', 'bm25_top100.trec')) as f:
        for line in f:
            run_docs.add(line.split()[2])
    for d in read_jsonl(os.path.join(dl_dir, 'corpus.jsonl')):
        if d['_id'] in run_docs:
            docs[f"{dl}/{d['_id']}"] = ((d.get('title') or '') + ' ' + (d.get('text') or '')).strip()
    for q in read_jsonl(os.path.join(dl_dir, 'queries.jsonl')):
        queries[f"{dl}/{q['_id']}"] = q['text']
    print(f'[states] {len(docs)} documents, {len(queries)} queries', flush=True)

    t0 = time.time()
    tower = Tower(args.bi_encoder, args.threads, args.doc_max_length)
    qkeys = sorted(queries)
    raw = [e.ids for e in tower.tok.encode_batch([queries[k] for k in qkeys], add_special_tokens=False)]
    cls, sep = tower.tok.token_to_id('[CLS]'), tower.tok.token_to_id('[SEP]')
    qids = [[cls] + r[: args.query_cap] + [sep] for r in raw]
    qres = tower.run(qids, progress='queries')
    qmeta = write(os.path.join(out, 'query'), qkeys, qres)
    json.dump(qmeta, open(os.path.join(out, 'queries.json'), 'w'))
    dkeys = sorted(docs)
    dres = tower.run(tower.encode_ids([docs[k] for k in dkeys]), max_batch=128, progress='documents')
    dmeta = write(os.path.join(out, 'doc'), dkeys, dres)
    json.dump(dmeta, open(os.path.join(out, 'docs.json'), 'w'))
    tokens = sum(m['len'] for m in dmeta)
    print(json.dumps({'docs': len(dkeys), 'doc_tokens': tokens, 'queries': len(qkeys),
                      'wall_s': round(time.time() - t0, 1)}), flush=True)


if __name__ == '__main__':
    main()
