#!/usr/bin/env python3
"""The query graph of a late-joined model with query layers (lj_model.py, `query_layers=N`).

`query_tower.onnx` is the shipped bi-encoder graph (models/all-MiniLM-L6-v2/onnx/model.onnx, the
tower the blocks were trained on: int8 products) cut after tower layer 6-N, with the checkpoint's
trained copies of layers 7-N..6 on top (fp32 arithmetic, weights stored as fp16 behind a Cast as
export_bi_encoder.py stores them). Inputs are the tower's (input_ids, attention_mask,
token_type_ids); the output `last_hidden_state` [batch, tokens, 384] is the blocks' query input.
sieve runs it once per query, beside the tower (whose pooled vector stays exit 6's).

Training read the same tensor the cut exposes (lj_layer_states.py adds it as an output of the same
graph), so the served query states are the trained ones up to fp16 storage of the new layers;
`check` measures that on real queries.
"""
import os
import tempfile

import numpy as np
import torch
import torch.nn as nn

from lj_model import TOWER_LAYERS

QUERY_FILE = 'query_tower.onnx'
PREFIX = 'query_layers/'


def cut_name(query_layers):
    """The tower tensor the query layers read: the output of tower layer 6-N."""
    return f'/layers.{TOWER_LAYERS - query_layers - 1}/ln2/LayerNormalization_output_0'


class QueryLayers(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, h, attention_mask):
        return self.model.query_input(h, attention_mask)


def _export_layers(model, path):
    ex = (torch.randn(2, 7, 384), torch.ones(2, 7, dtype=torch.long))
    dyn = {'h': {0: 'batch', 1: 'tokens'}, 'attention_mask': {0: 'batch', 1: 'tokens'},
           'last_hidden_state': {0: 'batch', 1: 'tokens'}}
    torch.onnx.export(QueryLayers(model).eval(), ex, path, input_names=['h', 'attention_mask'],
                      output_names=['last_hidden_state'], dynamic_axes=dyn, opset_version=17, dynamo=False)


def build(model, tower_onnx, out_path):
    """Writes the query graph of `model` (query_layers > 0) on top of `tower_onnx`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    if not model.query_layers:
        raise ValueError('the model has no query layers')
    tower = onnx.load(tower_onnx)
    g = tower.graph
    cut = cut_name(model.query_layers)
    # the tower's nodes the cut tensor depends on
    needed, keep = {cut}, []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    if not keep:
        raise ValueError(f'{tower_onnx} has no tensor {cut}')
    keep.reverse()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'layers.onnx')
        _export_layers(model, path)
        layers = onnx.load(path).graph

    def rename(name):
        if name in ('', 'attention_mask', 'last_hidden_state'):
            return name
        return cut if name == 'h' else PREFIX + name
    nodes = []
    for node in layers.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = PREFIX + node.name
        n.input[:] = [rename(i) for i in node.input]
        n.output[:] = [rename(o) for o in node.output]
        nodes.append(n)
    inits, casts = [], []
    for t in layers.initializer:
        a = numpy_helper.to_array(t)
        if t.data_type == TensorProto.FLOAT and a.size >= 4096:
            half = numpy_helper.from_array(a.astype(np.float16), rename(t.name) + '_fp16')
            inits.append(half)
            casts.append(helper.make_node('Cast', [half.name], [rename(t.name)], to=TensorProto.FLOAT,
                                          name=rename(t.name) + '_cast'))
        else:
            inits.append(numpy_helper.from_array(a, rename(t.name)))
    tower_inits = [t for t in g.initializer if t.name in needed]
    inputs = [i for i in g.input if i.name in needed or i.name == 'attention_mask']
    out = helper.make_tensor_value_info('last_hidden_state', TensorProto.FLOAT, ['batch', 'tokens', 384])
    graph = helper.make_graph(keep + casts + nodes, 'sieve_query_tower', inputs, [out], tower_inits + inits)
    merged = helper.make_model(graph, opset_imports=list(tower.opset_import), producer_name='sieve lj_query_graph.py')
    merged.ir_version = tower.ir_version
    onnx.checker.check_model(merged)
    onnx.save(merged, out_path)


def check(model, tower_dir, query_graph, texts, query_cap=64):
    """The query graph's states against torch's query layers over the tower's cut states, on
    `texts` tokenised as sieve tokenises queries: max |diff| and min cosine of the pooled vectors."""
    import onnx
    import onnxruntime as ort
    from tokenizers import Tokenizer
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    m = onnx.load(os.path.join(tower_dir, 'onnx', 'model.onnx'))
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info(cut_name(model.query_layers), onnx.TensorProto.FLOAT, None))
    cut_sess = ort.InferenceSession(m.SerializeToString(), so, providers=['CPUExecutionProvider'])
    sess = ort.InferenceSession(query_graph, so, providers=['CPUExecutionProvider'])
    tok = Tokenizer.from_file(os.path.join(tower_dir, 'tokenizer.json'))
    cls, sep = tok.token_to_id('[CLS]'), tok.token_to_id('[SEP]')
    worst, min_cos = 0.0, 1.0
    for text in texts:
        ids = [cls] + tok.encode(text, add_special_tokens=False).ids[:query_cap] + [sep]
        feed = {'input_ids': np.array([ids], np.int64), 'attention_mask': np.ones((1, len(ids)), np.int64),
                'token_type_ids': np.zeros((1, len(ids)), np.int64)}
        h = cut_sess.run(None, feed)[0]
        with torch.no_grad():
            ref = model.query_input(torch.from_numpy(h), torch.from_numpy(feed['attention_mask'])).numpy()[0]
        got = sess.run(None, {k: v for k, v in feed.items() if k in {i.name for i in sess.get_inputs()}})[0][0]
        worst = max(worst, float(np.abs(got - ref).max()))
        a, b = got.mean(0), ref.mean(0)
        min_cos = min(min_cos, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return {'queries': len(texts), 'max_abs_diff': worst, 'min_pooled_cosine': min_cos}
