#!/usr/bin/env python3
"""Self-supervised in-domain training groups for sieve-ce v2: a paper's title -> its abstract.

The issue's suggestion for more in-domain data that is legally usable here: the SciFact and
NFCorpus corpora (the documents any query of those sets is ranked over; no query, qrel or split of
them is read) are scientific papers with titles, and a title reads much like a SciFact claim or an
NFCorpus question. Query = a document's title, positive = the same document's text without its
title, negatives = the --negatives texts of the same corpus nearest to the title by the bi-encoder
(its shipped int8 graph), the document itself excluded.

Writes work/data/titles.jsonl.gz and titles_docs.jsonl.gz in lj_general.py's format (set
'titles', document ids '<corpus>:<id>'); `lj_states.py` picks them up when present and
`lj_train.py --titles` trains on them. The run made with them is in README.md ("Title groups").
"""
import argparse, gzip, json, os, sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from lj_debian import embed  # noqa: E402


def papers(path, min_title_words, min_text_words):
    """(id, title, text) of the corpus documents whose title and text are both long enough."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            title, text = (d.get('title') or '').strip(), (d.get('text') or '').strip()
            if len(title.split()) >= min_title_words and len(text.split()) >= min_text_words:
                out.append((str(d['_id']), title, text))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--corpora', default='scifact,nfcorpus')
    ap.add_argument('--negatives', type=int, default=32)
    ap.add_argument('--min-title-words', type=int, default=4)
    ap.add_argument('--min-text-words', type=int, default=25)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.bi_encoder, 'tokenizer.json'))
    tok.enable_truncation(256)
    tok.no_padding()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    session = ort.InferenceSession(os.path.join(args.bi_encoder, 'onnx', 'model.onnx'), so,
                                   providers=['CPUExecutionProvider'])
    data = os.path.join(args.work, 'data')
    os.makedirs(data, exist_ok=True)
    stats = {}
    with gzip.open(os.path.join(data, 'titles.jsonl.gz.tmp'), 'wt') as groups, \
            gzip.open(os.path.join(data, 'titles_docs.jsonl.gz.tmp'), 'wt') as docs:
        for corpus in args.corpora.split(','):
            ps = papers(os.path.join(args.data_root, corpus, 'corpus.jsonl'), args.min_title_words, args.min_text_words)
            if len(ps) <= args.negatives:
                sys.exit(f'lj_titles: {corpus} has only {len(ps)} documents with a title and a text')
            sim = embed(session, tok, [p[1] for p in ps]) @ embed(session, tok, [p[2] for p in ps]).T
            first = 0
            for i, (pid, title, text) in enumerate(ps):
                order = np.argsort(-sim[i])
                first += int(order[0] == i)
                negs = [int(j) for j in order[: args.negatives + 1] if j != i][: args.negatives]
                groups.write(json.dumps({'qid': f'{corpus}:{pid}', 'set': 'titles', 'kind': corpus, 'query': title,
                                         'positives': [{'doc': f'{corpus}:{pid}', 'grade': 1, 'teacher': 1.0}],
                                         'negatives': [{'doc': f'{corpus}:{ps[j][0]}', 'teacher': 0.0} for j in negs]}) + '\n')
                docs.write(json.dumps({'set': 'titles', 'doc': f'{corpus}:{pid}', 'text': text}) + '\n')
            stats[corpus] = {'groups': len(ps), 'init_ranks_positive_first': round(first / len(ps), 4)}
    for name in ('titles', 'titles_docs'):
        os.replace(os.path.join(data, f'{name}.jsonl.gz.tmp'), os.path.join(data, f'{name}.jsonl.gz'))
    print(json.dumps(stats))


if __name__ == '__main__':
    main()
