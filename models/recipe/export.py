#!/usr/bin/env python3
"""Export a trained checkpoint to segmented ONNX (real early exit) + full graph, fp32 and int8.

  python models/recipe/export.py [--ckpt work/ckpt] [--out models/sieve-ce-minilm-l6-2dm]

Writes into --out: seg{k}.onnx / seg{k}_int8.onnx (one per exit), model.onnx / model_int8.onnx
(single graph, deepest exit + widest head as `logits` [B,1] for plugins/sieve-rerank-onnx),
matryoshka.json (exits, widths, files, I/O names, max length, query cap, per-head calibration
{temperature, bias} fitted on held-out TRAIN queries by log-loss, ECE before/after),
tokenizer.json, config.json, README.md (model card template; verify.py fills the metrics).
Segment 1: (input_ids, attention_mask[, token_type_ids]) -> hidden_states_out [B,S,H], logits [B,n_widths]
Segment k: (hidden_states, attention_mask) -> hidden_states_out, logits   (last: logits only)
(ONNX forbids a graph input and output of the same name, hence `hidden_states_out`.)
"""
import argparse, json, os, shutil, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CrossEncoder, Full, PairTokenizer, Segment, load_docs, read_jsonl_gz

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))


def load_ckpt(ckpt):
    cc = json.load(open(os.path.join(ckpt, 'ce_config.json')))
    m = CrossEncoder(cc['base_config'], cc['exits'], cc['widths'], 0.0, cc['token_types'] == 'zero')
    from safetensors.torch import load_file
    m.load_state_dict(load_file(os.path.join(ckpt, 'model.safetensors')))
    return m.eval(), cc


def ece(p, y, bins=10):
    e, n = 0.0, len(p)
    for b in range(bins):
        sel = (p >= b / bins) & ((p < (b + 1) / bins) if b < bins - 1 else (p <= 1))
        if sel.any():
            e += sel.sum() / n * abs(p[sel].mean() - y[sel].mean())
    return float(e)


def fit_calibration(s, y):
    """p = sigmoid(s / T + bias); minimise log-loss (LBFGS on a = 1/T, bias)."""
    st, yt = torch.tensor(s, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a = torch.ones((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=200, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        l = torch.nn.functional.binary_cross_entropy_with_logits(a * st + b, yt)
        l.backward()
        return l
    opt.step(closure)
    a_, b_ = float(a), float(b)
    if a_ <= 1e-6:  # degenerate (untrained) head: keep the ordering, flat probability
        a_ = 1e-6
    return 1.0 / a_, b_


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ckpt', default=os.path.join(HERE, 'work', 'ckpt'))
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--out', default=os.path.join(REPO, 'models', 'sieve-ce-minilm-l6-2dm'))
    ap.add_argument('--name', default='sieve-ce-minilm-l6-2dm', help='model name recorded in matryoshka.json')
    ap.add_argument('--opset', type=int, default=17)
    ap.add_argument('--calib-queries', type=int, default=0, help='held-out queries for calibration (0 = all)')
    ap.add_argument('--no-per-channel', action='store_true')
    ap.add_argument('--keep-fp32', action='store_true', default=True)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    m, cc = load_ckpt(a.ckpt)
    exits, widths, H = cc['exits'], cc['widths'], cc['base_config']['hidden_size']
    tok = PairTokenizer(os.path.join(a.ckpt, 'tokenizer.json'), cc['max_length'], cc['query_cap'], cc['token_types'] == 'zero')
    use_tt = cc['token_types'] != 'zero'
    ids, mask, tt = tok.batch([tok.pair(tok.ids(['a query'])[0], tok.ids(['a document text here'])[0])] * 2)

    from onnxruntime.quantization import QuantType, quantize_dynamic
    import onnx
    segs, prev, h = [], 0, None
    with torch.no_grad():
        for k, e in enumerate(exits):
            first, last = k == 0, k == len(exits) - 1
            mod = Segment(m, prev, e, first, last).eval()
            fn = f'seg{k + 1}.onnx'
            if first:
                args = (ids, mask, tt) if use_tt else (ids, mask)
                in_names = ['input_ids', 'attention_mask'] + (['token_type_ids'] if use_tt else [])
                dyn = {n: {0: 'batch', 1: 'seq'} for n in in_names}
            else:
                args = (h, mask)
                in_names = ['hidden_states', 'attention_mask']
                dyn = {'hidden_states': {0: 'batch', 1: 'seq'}, 'attention_mask': {0: 'batch', 1: 'seq'}}
            out_names = ['logits'] if last else ['hidden_states_out', 'logits']
            dyn.update({'logits': {0: 'batch'}})
            if not last:
                dyn['hidden_states_out'] = {0: 'batch', 1: 'seq'}
            torch.onnx.export(mod, args, os.path.join(a.out, fn), input_names=in_names, output_names=out_names,
                              dynamic_axes=dyn, opset_version=a.opset, do_constant_folding=True)
            res = mod(*args)
            h = None if last else res[0]
            segs.append({'segment': k + 1, 'layers': [prev + 1, e], 'exit_layer': e, 'widths': widths,
                         'file': fn, 'file_int8': fn.replace('.onnx', '_int8.onnx'), 'inputs': in_names,
                         'outputs': {n: ('[batch, seq, %d]' % H if n == 'hidden_states_out' else '[batch, %d] (one column per width, order of widths)' % len(widths)) for n in out_names},
                         'heads': [f'l{e}_w{w}' for w in widths]})
            prev = e
        full = Full(m).eval()
        args = (ids, mask, tt) if use_tt else (ids, mask)
        in_names = ['input_ids', 'attention_mask'] + (['token_type_ids'] if use_tt else [])
        dyn = {n: {0: 'batch', 1: 'seq'} for n in in_names}; dyn['logits'] = {0: 'batch'}
        torch.onnx.export(full, args, os.path.join(a.out, 'model.onnx'), input_names=in_names, output_names=['logits'],
                          dynamic_axes=dyn, opset_version=a.opset, do_constant_folding=True)
    files = [s['file'] for s in segs] + ['model.onnx']
    for fn in files:
        onnx.checker.check_model(os.path.join(a.out, fn))
        quantize_dynamic(os.path.join(a.out, fn), os.path.join(a.out, fn.replace('.onnx', '_int8.onnx')),
                         weight_type=QuantType.QInt8, per_channel=not a.no_per_channel)
    print(f'[export] onnx fp32 + int8 written: {time.time() - t0:.0f}s', flush=True)

    # ---- calibration on held-out TRAIN queries (recorded in the checkpoint)
    data = os.path.join(a.work, 'data')
    held = {tuple(x) for x in cc['heldout']['qids']}
    recs = [r for r in read_jsonl_gz(os.path.join(data, 'train.jsonl.gz')) if (r['set'], r['qid']) in held]
    if a.calib_queries:
        recs = recs[: a.calib_queries]
    docs = load_docs(data)
    pairs, y = [], []
    for r in recs:
        q = tok.ids([r['query']])[0]
        for p in r['positives'][:8]:
            pairs.append((q, (r['set'], p['doc']))); y.append(1.0)
        for n in r['negatives'][:32]:
            pairs.append((q, (r['set'], n['doc']))); y.append(0.0)
    dt = {}
    for _, k in pairs:
        dt.setdefault(k, None)
    keys = list(dt)
    dt = dict(zip(keys, tok.ids([docs[k] for k in keys])))
    enc = [tok.pair(q, dt[k]) for q, k in pairs]
    scores = []
    with torch.no_grad():
        for i in range(0, len(enc), 32):
            bi, bm, bt = tok.batch(enc[i:i + 32])
            scores.append(m(bi, bm, bt).view(len(enc[i:i + 32]), -1).numpy())
    S = np.concatenate(scores) if scores else np.zeros((0, len(exits) * len(widths)))
    y = np.array(y)
    calib = {}
    for j, name in enumerate(CrossEncoder.head_names(exits, widths)):
        s = S[:, j]
        T, b = fit_calibration(s, y)
        p0 = 1 / (1 + np.exp(-s)); p1 = 1 / (1 + np.exp(-(s / T + b)))
        calib[name] = {'temperature': round(T, 6), 'bias': round(b, 6),
                       'ece_before': round(ece(p0, y), 4), 'ece_after': round(ece(p1, y), 4)}
    print('[export] calibration (held-out TRAIN, %d pairs, %d positive):' % (len(y), int(y.sum())), json.dumps(calib), flush=True)

    man = {'format': 'sieve-matryoshka-ce/1', 'name': a.name,
           'base_model': 'sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)',
           'input': cc['input'], 'max_length': cc['max_length'], 'query_cap': cc['query_cap'],
           # trained on the first max_length tokens of each pair: score documents the same way
           'max_windows': 1,
           'token_type_ids': 'all zero (not a graph input)' if not use_tt else '0 for [CLS] q [SEP], 1 for d [SEP]',
           'pooling': cc['pooling'], 'hidden_size': H, 'exits': [{'layer': e, 'widths': widths} for e in exits],
           'segments': segs,
           'full': {'file': 'model.onnx', 'file_int8': 'model_int8.onnx', 'inputs': in_names,
                    'outputs': {'logits': '[batch, 1] = head l%d_w%d' % (exits[-1], max(widths))}},
           'calibration': {'method': 'p = sigmoid(score / temperature + bias), log-loss on held-out TRAIN queries',
                           'pairs': int(len(y)), 'positives': int(y.sum()), 'ece_bins': 10, 'heads': calib},
           'training': cc['train'] | {'args': {k: v for k, v in cc['train']['args'].items() if k not in ('work', 'out')},
                                       'heldout_qids': cc['heldout']['qids']},
           # Named budgets (`sieve search --rerank --budget NAME`); sieve calibrate / sieve eval
           # measure them, and they may be edited to the measured Pareto points.
           'profiles': {'fast': f'{exits[0]}:{max(widths)}',
                        'balanced': f'100@{exits[0]},20@{exits[-1]}',
                        'full': f'{exits[-1]}:{max(widths)}'},
           'default_profile': 'full',
           'quantization': {'int8': 'onnxruntime quantize_dynamic QInt8, per_channel=%s' % (not a.no_per_channel)}}
    json.dump(man, open(os.path.join(a.out, 'matryoshka.json'), 'w'), indent=1)
    for fn in ['tokenizer.json', 'config.json']:
        shutil.copyfile(os.path.join(a.ckpt, fn), os.path.join(a.out, fn))
    card = open(os.path.join(HERE, 'MODEL_CARD.template.md')).read()
    tr = cc['train']
    card = card.replace('{{TRAINING}}', f"{tr['steps']} steps, {tr['pairs_seen']} pairs, {tr['wall_s']} s on {tr['device']} (torch {tr['torch']}, bf16 {tr['bf16']})")
    card = card.replace('{{COUNTS}}', '```json\n' + json.dumps(tr['counts'], indent=1) + '\n```')
    card = card.replace('{{CALIBRATION}}', '\n'.join(f"| {k} | {v['temperature']} | {v['bias']} | {v['ece_before']} | {v['ece_after']} |" for k, v in calib.items()))
    open(os.path.join(a.out, 'README.md'), 'w').write(card)
    sizes = {f: round(os.path.getsize(os.path.join(a.out, f)) / 2**20, 2) for f in sorted(os.listdir(a.out)) if f.endswith('.onnx')}
    print('[export] sizes MiB:', json.dumps(sizes))
    print(f'[export] done in {time.time() - t0:.0f}s -> {a.out}')


if __name__ == '__main__':
    main()
