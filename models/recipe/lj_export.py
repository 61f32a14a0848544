#!/usr/bin/env python3
"""Export a sieve-ce v2 checkpoint (lj_train.py) as a late-joined model directory sieve loads:

  late_joined.json      manifest: towers (the bi-encoder directory + its ONNX sha256), codec,
                        exits 0 / 7 / 8 x widths, blocks, profiles, per-head calibration, blend
  state_codec.bin       the PCA codec the index compresses document token states with
  block7.onnx, block8.onnx (+ _int8): the joint blocks (inputs x, q_mask, d_codes, d_mask, d_vec;
                        outputs x_out (not the last), scores [B, widths])
  query_tower.onnx      only for a checkpoint with query layers (lj_query_graph.py): the query
                        side's graph whose states the blocks read (manifest format /2)

Calibration (temperature + bias per head) and the blend weight are fitted on the checkpoint's
held-out TRAIN queries (never a test or dev split), by reranking their top-`--blend-depth` (sieve's
own run files): the windows a reranker really scores. Calibration uses the hybrid windows; the
blend weight is the best mean nDCG@10 over both sets × every first stage of `--blend-stages`
(default hybrid, sieve's default first stage; `hybrid,bm25` makes one weight serve a strong and
a weak first stage) among 0.05, 0.10, …, 0.95 (not the ends: they are the first stage and the
pure reranker themselves). The `balanced` profile is the cascade `lj_profile.choose_balanced` picks
on the same hybrid windows.
"""
import argparse, collections, hashlib, json, os, shutil, sys, time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from common import ndcg_at, trec_order  # noqa: E402
from lj_data import States  # noqa: E402
from lj_eval import score_candidates  # noqa: E402
from lj_model import add_mask, mean_pool  # noqa: E402
import lj_query_graph  # noqa: E402
from lj_profile import MIN_SPEEDUP, choice_record, choose_balanced, minmax  # noqa: E402
from prepare_data import read_run  # noqa: E402
from lj_train import heldout_records, load_checkpoint  # noqa: E402


class BlockGraph(nn.Module):
    def __init__(self, model, b):
        super().__init__()
        self.block, self.heads, self.last = model.blocks[b], model.heads[b], b == len(model.blocks) - 1

    def forward(self, x, q_mask, d_codes, d_mask, d_vec):
        x = self.block(x, d_codes, add_mask(d_mask, x.dtype), add_mask(q_mask, x.dtype))
        u = mean_pool(x, q_mask)
        scores = torch.stack([h(u, d_vec) for h in self.heads], dim=-1)
        return scores if self.last else (x, scores)


def export_blocks(model, codec, out):
    files = []
    H, r = 384, codec.rank
    ex = (torch.randn(2, 7, H), torch.ones(2, 7, dtype=torch.long), torch.randn(2, 11, r),
          torch.ones(2, 11, dtype=torch.long), torch.nn.functional.normalize(torch.randn(2, H), dim=-1))
    for b in range(len(model.blocks)):
        g = BlockGraph(model, b).eval()
        layer = model.exit_layers[b + 1]
        path = os.path.join(out, f'block{layer}.onnx')
        outputs = ['scores'] if g.last else ['x_out', 'scores']
        dyn = {'x': {0: 'batch', 1: 'q_len'}, 'q_mask': {0: 'batch', 1: 'q_len'}, 'd_codes': {0: 'batch', 1: 'd_len'},
               'd_mask': {0: 'batch', 1: 'd_len'}, 'd_vec': {0: 'batch'}, 'scores': {0: 'batch'}}
        if not g.last:
            dyn['x_out'] = {0: 'batch', 1: 'q_len'}
        torch.onnx.export(g, ex, path, input_names=['x', 'q_mask', 'd_codes', 'd_mask', 'd_vec'],
                          output_names=outputs, dynamic_axes=dyn, opset_version=17, dynamo=False)
        from onnxruntime.quantization import QuantType, quantize_dynamic
        q_path = os.path.join(out, f'block{layer}_int8.onnx')
        import onnx
        # The heads are tiny (and their zero-initialised output layers trip the quantiser): fp32.
        heads = [n.name for n in onnx.load(path).graph.node if '/heads' in n.name]
        quantize_dynamic(path, q_path, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=heads)
        files.append({'layer': layer, 'file': os.path.basename(path), 'file_int8': os.path.basename(q_path)})
    return files


def verify_export(model, codec, out, blocks, qst, docs, held, max_queries=40):
    """ORT fp32 graphs vs torch (max |diff|), and int8 vs fp32 (Spearman per head), on held-out pairs."""
    import onnxruntime as ort
    from lj_data import pad_batch
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = {(b['layer'], prec): ort.InferenceSession(os.path.join(out, b[key]), so, providers=['CPUExecutionProvider'])
            for b in blocks for prec, key in (('fp32', 'file'), ('int8', 'file_int8'))}
    per = {prec: collections.defaultdict(list) for prec in ('torch', 'fp32', 'int8')}
    worst = 0.0
    for r in held[:max_queries]:
        cand = [p['doc'] for p in r['positives']] + [x['doc'] for x in r['negatives']]
        q, _ = qst.get(f"{r['set']}/{r['qid']}")
        dl, dv = [], []
        for d in cand:
            st, v = docs.get(f"{r['set']}/{d}")
            dl.append(codec.roundtrip(st))
            dv.append(v)
        qs, qm, ds, dm, dvec = pad_batch([q] * len(cand), dl, dv)
        with torch.no_grad():
            ref = model(qs, qm, ds, dm, dvec).numpy()
        with torch.no_grad():
            x0 = model.query_input(qs, qm).numpy()
        for prec in ('fp32', 'int8'):
            x = x0
            for bi, b in enumerate(blocks):
                res = sess[(b['layer'], prec)].run(None, {'x': x, 'q_mask': qm.numpy(), 'd_codes': ds.numpy(),
                                                          'd_mask': dm.numpy(), 'd_vec': dvec.numpy()})
                if len(res) == 2:
                    x, sc = res
                else:
                    sc = res[0]
                for w_i, w in enumerate(model.widths):
                    per[prec][(b['layer'], w)] += sc[:, w_i].tolist()
                    if prec == 'fp32':
                        worst = max(worst, float(np.abs(sc[:, w_i] - ref[:, bi, w_i]).max()))
                        per['torch'][(b['layer'], w)] += ref[:, bi, w_i].tolist()

    def spearman(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])
    return {'max_abs_diff_torch_vs_onnx_fp32': worst,
            'spearman_int8_vs_fp32': {f'l{l}_w{w}': round(spearman(per['int8'][(l, w)], per['fp32'][(l, w)]), 5)
                                      for (l, w) in per['fp32']},
            'pairs': len(next(iter(per['fp32'].values())))}


def add_query_tower(manifest, model):
    """Names the query graph of a model with query layers; such a manifest is format /2, which a
    sieve that does not know query graphs refuses instead of serving the wrong query states."""
    if model.query_layers:
        manifest['format'] = 'sieve-late-joined-ce/2'
        manifest['query_tower'] = {'file': lj_query_graph.QUERY_FILE, 'layers': model.query_layers}


def write_codec(codec, path):
    with open(path, 'wb') as f:
        f.write(b'SVSCODE1')
        f.write(np.array([codec.P.shape[1], codec.rank], dtype='<u4').tobytes())
        f.write(codec.mean.astype('<f4').tobytes())
        f.write(codec.P.astype('<f4').tobytes())


def fit_calibration(raw, labels):
    """sigmoid(a*raw + c) by logistic regression (Adam on standardised scores) -> {temperature: 1/a, bias: c}."""
    x = np.asarray(raw, dtype=np.float64)
    mu, sd = x.mean(), max(x.std(), 1e-6)
    xs = torch.tensor((x - mu) / sd)
    y = torch.tensor(labels, dtype=torch.float64)
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, c], lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * xs + c, y)
        loss.backward()
        opt.step()
    # back to raw scores: a*(x - mu)/sd + c = (a/sd) x + (c - a mu / sd)
    slope = max(float(a) / sd, 1e-3)
    bias = float(c) - float(a) * mu / sd
    p = 1 / (1 + np.exp(-(slope * x + bias)))
    return {'temperature': round(1.0 / slope, 6), 'bias': round(bias, 6)}, ece(p, labels)


def ece(p, y, bins=10):
    p, y = np.asarray(p), np.asarray(y)
    e = 0.0
    for i in range(bins):
        m = (p >= i / bins) & (p < (i + 1) / bins if i < bins - 1 else p <= 1)
        if m.any():
            e += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--ckpt', default=None)
    ap.add_argument('--out', default=os.path.join(REPO, 'models', 'sieve-ce-minilm-l6-lj'))
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--tower-rel', default='../all-MiniLM-L6-v2', help='bi-encoder path written into the manifest')
    ap.add_argument('--name', default='sieve-ce-minilm-l6-lj')
    ap.add_argument('--blend-depth', type=int, default=100)
    ap.add_argument('--blend-stages', default='hybrid',
                    help="first stages whose held-out TRAIN windows fit the blend weight (sieve's work/runs/*-train-STAGE.trec)")
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--fixture', action='store_true',
                    help='test fixture: int8 graphs only, no calibration, blend or export check')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lj = os.path.join(args.work, 'lj')
    ck_path = args.ckpt or os.path.join(lj, 'ckpt.pt')
    model, codec = load_checkpoint(ck_path)
    ck = torch.load(ck_path, map_location='cpu', weights_only=False)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    blocks = export_blocks(model, codec, args.out)
    write_codec(codec, os.path.join(args.out, 'state_codec.bin'))
    onnx = os.path.join(args.bi_encoder, 'onnx', 'model.onnx')
    sha = hashlib.sha256(open(onnx, 'rb').read()).hexdigest()
    query_path = os.path.join(args.out, lj_query_graph.QUERY_FILE)
    if model.query_layers:
        lj_query_graph.build(model, onnx, query_path)
    elif os.path.exists(query_path):
        os.remove(query_path)

    if args.fixture:
        for b in blocks:
            os.remove(os.path.join(args.out, b['file']))
            b['file'] = b['file_int8']
        exits = [{'layer': l, 'widths': model.widths} for l in model.exit_layers]
        manifest = {'format': 'sieve-late-joined-ce/1', 'name': args.name,
                    'tower': {'model': args.tower_rel, 'onnx_sha256': sha, 'doc_max_length': 256, 'query_cap': 64},
                    'codec': {'file': 'state_codec.bin', 'rank': codec.rank}, 'hidden_size': 384,
                    'exits': exits, 'blocks': blocks}
        add_query_tower(manifest, model)
        with open(os.path.join(args.out, 'late_joined.json'), 'w') as f:
            json.dump(manifest, f, indent=1)
            f.write('\n')
        print(json.dumps({'out': args.out, 'fixture': True}))
        return

    # held-out TRAIN queries, exactly as lj_train.py split them
    qst, docs = States(lj, 'query'), States(lj, 'doc')
    targs = ck['config'].get('train_args') or {}
    held = [r for r in heldout_records(args.work, targs, docs, qst) if r['set'] in ('scifact', 'nfcorpus')]  # the retrieval sets (their train runs fit the blend)

    # blend weight on the held-out queries' top-k of each first stage in --blend-stages (sieve
    # reranks hybrid windows by default, a BM25 or dense window with --stages, any run with
    # --rerank-run: one weight serves them all); calibration on the hybrid windows
    stages = args.blend_stages.split(',')
    runs = {(ds, st): read_run(os.path.join(args.work, 'runs', f'{ds}-train-{st}.trec'))
            for ds in ('scifact', 'nfcorpus') for st in stages}
    grid = [round(x, 2) for x in np.arange(0, 1.0001, 0.05)]
    per_w = {f'{ds}/{st}': collections.defaultdict(list) for ds, st in runs}
    raw, labels = collections.defaultdict(list), []
    windows = []  # (exit scores at width 384, fused scores) of the hybrid windows: the balanced cascade's choice
    for r in held:
        ds = r['set']
        qrels = {p['doc']: p['grade'] for p in r['positives']}
        for st in stages:
            cand = [(d, s) for d, s in runs[(ds, st)].get(r['qid'], [])[: args.blend_depth] if f'{ds}/{d}' in docs]
            if not cand:
                continue
            full = score_candidates(model, qst, docs, codec, f"{ds}/{r['qid']}", [f'{ds}/{d}' for d, _ in cand])
            if st == 'hybrid':
                labels += [int(qrels.get(d, 0) > 0) for d, _ in cand]
                windows.append((full[:, :, 0], np.array([s for _, s in cand], np.float32)))
                for e, layer in enumerate(model.exit_layers):
                    for w_i, w in enumerate(model.widths):
                        raw[f'l{layer}_w{w}'] += full[:, e, w_i].tolist()
            sc = full[:, -1, 0]
            fused, rer = minmax([s for _, s in cand]), minmax(sc)
            for w in grid:
                mix = w * rer + (1 - w) * fused
                per_w[f'{ds}/{st}'][w].append(ndcg_at(trec_order([(d, float(m)) for (d, _), m in zip(cand, mix)]), qrels))
    blend_table = {w: {k: float(np.mean(per_w[k][w])) for k in per_w} for w in grid}
    # calibration per head, on the same windows (the candidates a reranker really scores)
    calibration, eces = {}, {}
    for head, values in raw.items():
        calibration[head], eces[head] = fit_calibration(values, labels)
    # The weight is chosen inside the grid (0.05-0.95): its ends are the two orders the blend mixes,
    # the first stage and the pure reranker, each reported on its own row; on a flat curve (held-out
    # nDCG within noise at every weight) an end would turn the default blend into one of them.
    best_w = max(grid[1:-1], key=lambda w: (np.mean(list(blend_table[w].values())), w))
    balanced, balanced_table = choose_balanced(windows, model.exit_layers, best_w)

    exits = [{'layer': l, 'widths': model.widths} for l in model.exit_layers]
    deep = model.exit_layers[-1]
    manifest = {
        'format': 'sieve-late-joined-ce/1',
        'name': args.name,
        'tower': {'model': args.tower_rel, 'onnx_sha256': sha, 'doc_max_length': 256, 'query_cap': 64},
        'codec': {'file': 'state_codec.bin', 'rank': codec.rank},
        'hidden_size': 384,
        'exits': exits,
        'blocks': blocks,
        'calibration': {'heads': calibration},
        'profiles': {'fast': f'{model.exit_layers[0]}:384',
                     'balanced': balanced, 'full': f'{deep}:384'},
        'default_profile': 'full',
        'blend': {'reranker_weight': best_w},
    }
    add_query_tower(manifest, model)
    with open(os.path.join(args.out, 'late_joined.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
        f.write('\n')
    check = verify_export(model, codec, args.out, blocks, qst, docs, held)
    if model.query_layers:
        check['query_tower'] = lj_query_graph.check(model, args.bi_encoder, query_path, [r['query'] for r in held[:100]])
    record = {'checkpoint': ck['extra'], 'export_check': check, 'calibration_ece': eces, 'blend_table': blend_table, 'blend_weight': best_w,
              'balanced_choice': choice_record(balanced, balanced_table, MIN_SPEEDUP, len(windows)),
              'heldout_queries': len(held), 'export_s': round(time.time() - t0, 1)}
    with open(os.path.join(args.out, 'training.json'), 'w') as f:
        json.dump(record, f, indent=1)
    print(json.dumps({'out': args.out, 'export_check': check, 'blend_weight': best_w, 'ece': {k: round(v, 4) for k, v in eces.items()},
                      'blend_table': {w: {k: round(v, 4) for k, v in t.items()} for w, t in blend_table.items()}}, indent=1))


if __name__ == '__main__':
    main()
