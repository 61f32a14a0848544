#!/usr/bin/env python3
"""Diagnostic: a trainable copy of the query tower's upper layers in front of the joint blocks.

The shipped model keeps the whole query tower frozen (it is the bi-encoder), so only the two
blocks after it learn. The first probe's one-way model instead re-ran tower layers 5-6 on the
query side with the cross-attention added and trained them. This wraps lj_train.py / lj_eval.py
so that the query's layer-N states (`lj_layer_states.py --side queries --layer N`) go through a
copy of tower layers N+1..6 (initialised from the bi-encoder's weights, trained with the blocks)
before the blocks. Exit 6 stays the bi-encoder's cosine (the stored query vector); at init the
blocks see the bi-encoder's own last states (within int8-vs-fp32 arithmetic: pooled cosine
0.9998 to the shipped graph's). Serving it would take a second query graph (the trained layers),
run once per query.

  python models/recipe/lj_layer_states.py --layer 4 --side queries --set scifact --out /tmp/qt
  python models/recipe/lj_query_tower.py train --work /tmp/qt --set-repeat scifact=1 --heldout scifact=100 \\
      --batch 4 --retrieved-positives --init-reg 0.1 --max-minutes 8 --eval-every 120 --out /tmp/qt.pt
  python models/recipe/lj_query_tower.py eval --work /tmp/qt --ckpt /tmp/qt.last.pt --sets scifact-test

`--query-layer N` (default 4) must match the states. Results (2026-12-07): recipe README,
"Architecture variants tried".
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import lj_model  # noqa: E402
from common import Layer  # noqa: E402
from lj_model import TOWER_LAYERS, add_mask  # noqa: E402

KEYS = [('q', 'attention.self.query'), ('k', 'attention.self.key'), ('v', 'attention.self.value'),
        ('ao', 'attention.output.dense'), ('i', 'intermediate.dense'), ('o', 'output.dense'),
        ('ln1', 'attention.output.LayerNorm'), ('ln2', 'output.LayerNorm')]


def pop_query_layer(argv):
    """Removes `--query-layer N` from argv (the wrapped scripts do not know it) -> N."""
    if '--query-layer' in argv:
        i = argv.index('--query-layer')
        n = int(argv[i + 1])
        del argv[i: i + 2]
        return n
    return 4


QUERY_LAYER = pop_query_layer(sys.argv)


class QueryTowerLateJoined(lj_model.LateJoined):
    """LateJoined whose query input is tower layer QUERY_LAYER's states, run through trainable
    copies of the tower's remaining layers first."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        n = TOWER_LAYERS - QUERY_LAYER
        self.qlayers = nn.ModuleList(Layer(384, 12, 1536, 1e-12, 0.0) for _ in range(n))

    def init_from_base(self, path):
        super().init_from_base(path)
        from safetensors.torch import load_file
        sd = load_file(path)
        with torch.no_grad():
            for j, layer in enumerate(self.qlayers):
                p = f'encoder.layer.{QUERY_LAYER + j}.'
                for attr, key in KEYS:
                    getattr(layer, attr).weight.copy_(sd[p + key + '.weight'].float())
                    getattr(layer, attr).bias.copy_(sd[p + key + '.bias'].float())

    def forward(self, q_states, q_mask, d_states, d_mask, d_vec, upto=None):
        h, am = q_states, add_mask(q_mask, q_states.dtype)
        for layer in self.qlayers:
            h = layer(h, am)
        return super().forward(h, q_mask, d_states, d_mask, d_vec, upto)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ('train', 'eval'):
        sys.exit('usage: lj_query_tower.py train|eval [--query-layer N] <lj_train.py or lj_eval.py arguments>')
    mode = sys.argv.pop(1)
    lj_model.LateJoined = QueryTowerLateJoined  # before lj_train imports the name
    if mode == 'train':
        import lj_train
        lj_train.main()
    else:
        import lj_eval
        lj_eval.main()


if __name__ == '__main__':
    main()
