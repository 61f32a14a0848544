#!/usr/bin/env python3
"""Diagnostics: the late-joined model fed an intermediate tower layer's states instead of the last.

`--side docs`: the blocks cross-attend to tower layer N's document states (the first probe's joint
layers read layers 4 and 5; the shipped blocks read the last layer, which the index computes anyway).
`--side queries`: the query's layer-N states, for `lj_train.py --query-layers 6-N`, which puts a trainable copy of
tower layers N+1..6 in front of the blocks (the probe trained the query side of layers 5-6).

Writes a work directory with that side's states for one set (same graph, same tokens as
lj_states.py; the pooled vectors stay the real last-layer ones, so exit 6 is unchanged) and the
other side, data and runs linked from the real work directory. Train and evaluate with `--work OUT`:

  python models/recipe/lj_layer_states.py --layer 4 --side docs --set scifact --out /tmp/l4
  python models/recipe/lj_train.py --work /tmp/l4 --set-repeat scifact=1 --heldout scifact=100 ...
  python models/recipe/lj_eval.py --work /tmp/l4 --ckpt ... --sets scifact-test

Results (2026-12-07): recipe README, "Architecture variants tried".
"""
import argparse, json, os, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from common import read_jsonl_gz  # noqa: E402
from lj_states import Tower, read_jsonl, write  # noqa: E402


def write_queries(args, lj, out_lj, t, query_cap=64):
    """Layer-N states of the set's TRAIN and evaluation queries, tokenised as lj_states.py does."""
    queries = {}
    for name in ('train.jsonl.gz', 'eval.jsonl.gz', 'general.jsonl.gz', 'debian.jsonl.gz'):
        path = os.path.join(args.work, 'data', name)
        if os.path.exists(path):
            for r in read_jsonl_gz(path):
                if args.set in ('all', r['set']):
                    queries[f"{r['set']}/{r['qid']}"] = r['query']
    dl = 'trec-dl-2019-passage'
    if args.set in ('all', dl):
        for q in read_jsonl(os.path.join(args.data_root, dl, 'queries.jsonl')):
            queries[f"{dl}/{q['_id']}"] = q['text']
    all_meta = json.load(open(os.path.join(lj, 'queries.json')))
    rows = {x['key']: i for i, x in enumerate(all_meta)}
    keys = sorted(k for k in queries if k in rows)
    raw = [e.ids for e in t.tok.encode_batch([queries[k] for k in keys], add_special_tokens=False)]
    cls, sep = t.tok.token_to_id('[CLS]'), t.tok.token_to_id('[SEP]')
    ids = [[cls] + r[:query_cap] + [sep] for r in raw]
    bad = sum(len(i) != all_meta[rows[k]]['len'] for i, k in zip(ids, keys))
    if bad:
        sys.exit(f'{bad} queries tokenise differently from lj_states.py: rerun it first')
    res = t.run(ids, progress=f'{args.set} queries layer {args.layer}')
    vecs = np.fromfile(os.path.join(lj, 'query_vecs.f32'), dtype=np.float32).reshape(-1, 384)
    offs = write(os.path.join(out_lj, 'query'), keys, [(st, vecs[rows[k]]) for k, (st, _) in zip(keys, res)])
    with open(os.path.join(out_lj, 'queries.json'), 'w') as f:
        json.dump(offs, f)
    print(json.dumps({'queries': len(keys), 'layer': args.layer, 'out': args.out}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--data-root', default=os.path.join(REPO, '..', 'shared', 'data'))
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--layer', type=int, default=4, help='tower layer (1..5) whose output the blocks read')
    ap.add_argument('--side', choices=['docs', 'queries'], default='docs')
    ap.add_argument('--set', default='scifact', help="documents or queries of this set only ('all': every query)")
    ap.add_argument('--out', required=True, help='new work directory')
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    import onnx
    if not 1 <= args.layer <= 5:
        sys.exit('--layer must be 1..5 (6 is the shipped states)')
    lj = os.path.join(args.work, 'lj')
    out_lj = os.path.join(args.out, 'lj')
    tower = os.path.join(args.out, 'tower')
    os.makedirs(os.path.join(tower, 'onnx'), exist_ok=True)
    os.makedirs(out_lj, exist_ok=True)
    for name in ('data', 'runs'):
        if not os.path.exists(os.path.join(args.out, name)):
            os.symlink(os.path.abspath(os.path.join(args.work, name)), os.path.join(args.out, name))
    linked = ('docs.json', 'doc_states.f16', 'doc_vecs.f32') if args.side == 'queries' else \
        ('queries.json', 'query_states.f16', 'query_vecs.f32')
    for name in linked:
        if not os.path.exists(os.path.join(out_lj, name)):
            os.symlink(os.path.abspath(os.path.join(lj, name)), os.path.join(out_lj, name))

    # the shipped graph with layer N's output (its second LayerNormalization) as the first output
    m = onnx.load(os.path.join(args.bi_encoder, 'onnx', 'model.onnx'))
    name = f'/layers.{args.layer - 1}/ln2/LayerNormalization_output_0'
    if not any(name in n.output for n in m.graph.node):
        sys.exit(f'the bi-encoder graph has no tensor {name}')
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.save(m, os.path.join(tower, 'onnx', 'model.onnx'))
    with open(os.path.join(args.bi_encoder, 'tokenizer.json'), 'rb') as f, open(os.path.join(tower, 'tokenizer.json'), 'wb') as g:
        g.write(f.read())

    t = Tower(tower, args.threads, 256)
    if args.side == 'queries':
        return write_queries(args, lj, out_lj, t)
    all_meta = json.load(open(os.path.join(lj, 'docs.json')))
    rows = {x['key']: i for i, x in enumerate(all_meta)}
    meta = [x for x in all_meta if x['key'].startswith(args.set + '/')]
    texts = {f"{d['set']}/{d['doc']}": d['text'] for d in read_jsonl_gz(os.path.join(args.work, 'data', 'docs.jsonl.gz'))
             if d['set'] == args.set}
    for d in read_jsonl(os.path.join(args.data_root, args.set, 'corpus.jsonl')):
        texts.setdefault(f"{args.set}/{d['_id']}", ((d.get('title') or '') + ' ' + (d.get('text') or '')).strip())
    keys = [x['key'] for x in meta]
    ids = t.encode_ids([texts[k] for k in keys])
    bad = sum(len(i) != x['len'] for i, x in zip(ids, meta))
    if bad:
        sys.exit(f'{bad} documents tokenise differently from lj_states.py: rerun it first')
    res = t.run(ids, progress=f'{args.set} layer {args.layer}')
    vecs = np.fromfile(os.path.join(lj, 'doc_vecs.f32'), dtype=np.float32).reshape(-1, 384)
    offs = write(os.path.join(out_lj, 'doc'), keys, [(st, vecs[rows[k]]) for k, (st, _) in zip(keys, res)])
    with open(os.path.join(out_lj, 'docs.json'), 'w') as f:
        json.dump(offs, f)
    print(json.dumps({'documents': len(keys), 'tokens': int(sum(x['len'] for x in offs)), 'layer': args.layer, 'out': args.out}))


if __name__ == '__main__':
    main()
