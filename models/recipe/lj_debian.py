#!/usr/bin/env python3
"""Experimental general-domain training groups for sieve-ce v2 from Debian package descriptions.

Query = a package's one-line synopsis, positive = its long description, negatives = the 32
descriptions nearest to the synopsis by the bi-encoder (its shipped int8 graph) among the other
training packages. The packages are the ones guard_debian.py makes eligible *after* the guard's
8,000 (same seed and order), so the guard's documents are never trained on; with these groups in
training the guard measures unseen packages of a trained domain, no longer an untouched one.

Writes work/data/debian.jsonl.gz and debian_docs.jsonl.gz in lj_general.py's format (set
'debian'); `lj_states.py` picks them up when present and `lj_train.py --debian` trains on them.
The runs made with them are in README.md ("Debian groups").
"""
import argparse, gzip, json, os, random, sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from guard_debian import eligible_packages  # noqa: E402


def embed(session, tok, texts, budget=512):
    """Mean-pooled, normalised embeddings, length-sorted batches of about `budget` tokens."""
    names = [i.name for i in session.get_inputs()]
    enc = tok.encode_batch(texts)
    order = np.argsort([-len(e.ids) for e in enc])
    out = np.zeros((len(texts), 384), np.float32)
    i = 0
    while i < len(order):
        length = len(enc[order[i]].ids)
        idx = order[i: i + max(1, budget // length)]
        ids = np.zeros((len(idx), length), np.int64)
        mask = np.zeros_like(ids)
        for r, j in enumerate(idx):
            ids[r, : len(enc[j].ids)] = enc[j].ids
            mask[r, : len(enc[j].ids)] = 1
        feed = {'input_ids': ids, 'attention_mask': mask}
        if 'token_type_ids' in names:
            feed['token_type_ids'] = np.zeros_like(ids)
        h = session.run(None, feed)[0]
        v = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        out[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
        i += len(idx)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--guard-docs', type=int, default=8000, help="the guard's documents, skipped")
    ap.add_argument('--groups', type=int, default=6000)
    ap.add_argument('--negatives', type=int, default=32)
    ap.add_argument('--seed', type=int, default=7, help="guard_debian.py's seed")
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    chosen = eligible_packages()
    random.Random(args.seed).shuffle(chosen)
    train = chosen[args.guard_docs: args.guard_docs + args.groups]
    tok = Tokenizer.from_file(os.path.join(args.bi_encoder, 'tokenizer.json'))
    tok.enable_truncation(256)
    tok.no_padding()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    session = ort.InferenceSession(os.path.join(args.bi_encoder, 'onnx', 'model.onnx'), so, providers=['CPUExecutionProvider'])
    sim = embed(session, tok, [p[2] for p in train]) @ embed(session, tok, [p[3] for p in train]).T
    data = os.path.join(args.work, 'data')
    os.makedirs(data, exist_ok=True)
    first = 0
    with gzip.open(os.path.join(data, 'debian.jsonl.gz'), 'wt') as groups, \
            gzip.open(os.path.join(data, 'debian_docs.jsonl.gz'), 'wt') as docs:
        for i, p in enumerate(train):
            order = np.argsort(-sim[i])
            first += int(order[0] == i)
            negs = [int(j) for j in order[: args.negatives + 1] if j != i][: args.negatives]
            groups.write(json.dumps({'qid': f'q{i}', 'set': 'debian', 'kind': 'synopsis', 'query': p[2],
                                     'positives': [{'doc': p[0], 'grade': 1, 'teacher': 1.0}],
                                     'negatives': [{'doc': train[j][0], 'teacher': 0.0} for j in negs]}) + '\n')
            docs.write(json.dumps({'set': 'debian', 'doc': p[0], 'text': p[3]}) + '\n')
    print(json.dumps({'groups': len(train), 'init_ranks_positive_first': round(first / len(train), 4)}))


if __name__ == '__main__':
    main()
