"""sieve-ce v2: a late-joined, one-way cross-encoder grown on top of the bi-encoder.

Towers: the bi-encoder itself (all-MiniLM-L6-v2, frozen, its shipped ONNX graph), run once
on `[CLS] q [SEP]` and once on `[CLS] title text [SEP]`. Its last hidden states are what sieve's
index already computes for the dense vector, so document states cost nothing extra at index time.

Joint blocks (appended after tower layer 6, so they are "layers 7 and 8"): only the query tokens
run them (one-way, as in MORES); each block is a gated cross-attention from the query tokens to the
document's token states, then a gated feed-forward (Flamingo's tanh(g) gates, g = 0 at init), with
weights copied from tower layer 6. At init every block is the identity. (`self_attn=True` adds a
gated self-attention among the query tokens between the two, as in MORES's interaction blocks;
tried on 2026-12-07, not in the shipped model: recipe README, "Architecture variants tried".)

Query layers (`query_layers=N`, 0 = none): a trainable copy of the tower's last N layers on the
query side, between the frozen tower's layer 6-N and the first block; the blocks then read the
query through them, while exit 6 keeps the bi-encoder's own pooled query vector (the stored one).
At init the copy is the tower itself, so the init property holds. Training reads the query's
layer-(6-N) states (`lj_layer_states.py --side queries`); serving runs a query graph (the tower's
layers 1..6-N with these layers on top, `query_tower.onnx`) once per query.

Exits: 6 = the towers' cosine after their 6 layers (exactly the dense score), then one after each
block (7, 8). The score at
exit e, width w is cos(u_e[:w], v[:w]) + MLP_{e,w}([u ⊙ v, |u − v|]) where u_e is the mean-pooled
query after block e and v the document's pooled (dense) vector; the MLP's output layer starts at
0. So at init the deepest exit's score equals the bi-encoder cosine of the pair.

Document states are compressed for the index by a PCA codec (mean + r principal directions of the
tower's last hidden states) and int8 per token; the export folds the codec's directions into the
blocks' key/value projections, so the graphs read the r-dimensional codes directly.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Layer

TOWER_LAYERS = 6
# common.Layer's attributes and the upstream safetensors' names of the same weights
QUERY_LAYER_KEYS = [('q', 'attention.self.query'), ('k', 'attention.self.key'), ('v', 'attention.self.value'),
                    ('ao', 'attention.output.dense'), ('i', 'intermediate.dense'), ('o', 'output.dense'),
                    ('ln1', 'attention.output.LayerNorm'), ('ln2', 'output.LayerNorm')]


def add_mask(mask, dtype):
    """[B, L] 0/1 -> additive [B, 1, 1, L]."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


def mean_pool(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class JointBlock(nn.Module):
    """Gated cross-attention (query tokens -> document states), optionally a gated self-attention
    among the query tokens (MORES's interaction block: what each token read from the document is
    shared with the rest of the query), then a gated feed-forward."""

    def __init__(self, H=384, heads=12, inter=1536, eps=1e-12, state_dim=384, self_attn=False):
        super().__init__()
        self.nh, self.hd = heads, H // heads
        self.ln_x = nn.LayerNorm(H, eps=eps)
        self.q, self.o = nn.Linear(H, H), nn.Linear(H, H)
        self.k, self.v = nn.Linear(state_dim, H), nn.Linear(state_dim, H)
        self.self_attn = self_attn
        if self_attn:
            self.ln_s = nn.LayerNorm(H, eps=eps)
            self.sq, self.sk, self.sv, self.so = (nn.Linear(H, H) for _ in range(4))
            self.g_s = nn.Parameter(torch.zeros(()))
        self.ln_f = nn.LayerNorm(H, eps=eps)
        self.i, self.out = nn.Linear(H, inter), nn.Linear(inter, H)
        self.g_x = nn.Parameter(torch.zeros(()))
        self.g_f = nn.Parameter(torch.zeros(()))

    def init_from_tower_layer(self, sd, layer_index):
        """Copies attention and feed-forward weights of tower layer `layer_index` (0-based)."""
        p = f'encoder.layer.{layer_index}.'
        g = lambda k: sd[k].float()
        pairs = [(self.q, 'attention.self.query'), (self.k, 'attention.self.key'),
                 (self.v, 'attention.self.value'), (self.o, 'attention.output.dense'),
                 (self.i, 'intermediate.dense'), (self.out, 'output.dense')]
        if self.self_attn:
            pairs += [(self.sq, 'attention.self.query'), (self.sk, 'attention.self.key'),
                      (self.sv, 'attention.self.value'), (self.so, 'attention.output.dense')]
        with torch.no_grad():
            for mod, key in pairs:
                mod.weight.copy_(g(p + key + '.weight'))
                mod.bias.copy_(g(p + key + '.bias'))

    def _attend(self, q, k, v, add_mask):
        B, Lq, H = q.shape
        Lk = k.shape[1]
        q = q.view(B, Lq, self.nh, self.hd).transpose(1, 2)
        k = k.view(B, Lk, self.nh, self.hd).transpose(1, 2)
        v = v.view(B, Lk, self.nh, self.hd).transpose(1, 2)
        a = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd) + add_mask
        return torch.matmul(torch.softmax(a, dim=-1), v).transpose(1, 2).reshape(B, Lq, H)

    def forward(self, x, d_states, d_add_mask, q_add_mask=None):
        y = self.ln_x(x)
        x = x + torch.tanh(self.g_x) * self.o(self._attend(self.q(y), self.k(d_states), self.v(d_states), d_add_mask))
        if self.self_attn:
            y = self.ln_s(x)
            x = x + torch.tanh(self.g_s) * self.so(self._attend(self.sq(y), self.sk(y), self.sv(y), q_add_mask))
        return x + torch.tanh(self.g_f) * self.out(F.gelu(self.i(self.ln_f(x))))


class Head(nn.Module):
    """cos(u[:w], v[:w]) + MLP([u*v, |u-v|]); the MLP's output layer starts at zero."""

    def __init__(self, width, hidden=64):
        super().__init__()
        self.w = width
        self.fc = nn.Linear(2 * width, hidden)
        self.fc_out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, u, v):
        u = F.normalize(u[:, : self.w], dim=-1)
        v = F.normalize(v[:, : self.w], dim=-1)
        cos = (u * v).sum(-1)
        hidden = F.gelu(self.fc(torch.cat([u * v, (u - v).abs()], dim=-1)))
        # written as a matmul, not nn.Linear: exported as MatMul (a Gemm with a zero weight shared
        # between heads trips onnxruntime's quantiser)
        return cos + (hidden @ self.fc_out.weight.t()).squeeze(-1) + self.fc_out.bias[0]


class LateJoined(nn.Module):
    def __init__(self, blocks=2, widths=(384, 192, 96), H=384, heads=12, inter=1536, state_dim=384, self_attn=False,
                 query_layers=0):
        super().__init__()
        self.widths = list(widths)
        self.query_layers = query_layers
        self.qlayers = nn.ModuleList(Layer(H, heads, inter, 1e-12, 0.0) for _ in range(query_layers))
        self.blocks = nn.ModuleList(JointBlock(H, heads, inter, 1e-12, state_dim, self_attn) for _ in range(blocks))
        self.heads = nn.ModuleList(nn.ModuleList(Head(w) for w in widths) for _ in range(blocks))

    @property
    def exit_layers(self):
        return [TOWER_LAYERS] + [TOWER_LAYERS + 1 + b for b in range(len(self.blocks))]

    def init_from_base(self, safetensors_path):
        from safetensors.torch import load_file
        sd = load_file(safetensors_path)
        for b in self.blocks:
            b.init_from_tower_layer(sd, TOWER_LAYERS - 1)
        with torch.no_grad():
            for j, layer in enumerate(self.qlayers):
                p = f'encoder.layer.{TOWER_LAYERS - self.query_layers + j}.'
                for attr, key in QUERY_LAYER_KEYS:
                    getattr(layer, attr).weight.copy_(sd[p + key + '.weight'].float())
                    getattr(layer, attr).bias.copy_(sd[p + key + '.bias'].float())

    def query_input(self, q_states, q_mask):
        """The blocks' query input: the query layers run over the tower's layer-(6-N) states."""
        h, am = q_states, add_mask(q_mask, q_states.dtype)
        for layer in self.qlayers:
            h = layer(h, am)
        return h

    def exit0(self, q_vec, d_vec):
        """[B, n_widths]: the towers' cosine at every width prefix."""
        return torch.stack([(F.normalize(q_vec[:, :w], dim=-1) * F.normalize(d_vec[:, :w], dim=-1)).sum(-1)
                            for w in self.widths], dim=-1)

    def forward(self, q_states, q_mask, d_states, d_mask, d_vec, upto=None):
        """-> [B, n_blocks, n_widths] scores after each block (up to `upto` blocks)."""
        dm, qm = add_mask(d_mask, q_states.dtype), add_mask(q_mask, q_states.dtype)
        x, out = self.query_input(q_states, q_mask), []
        for b, (block, heads) in enumerate(zip(self.blocks, self.heads)):
            x = block(x, d_states, dm, qm)
            u = mean_pool(x, q_mask)
            out.append(torch.stack([h(u, d_vec) for h in heads], dim=-1))
            if upto is not None and b + 1 >= upto:
                break
        return torch.stack(out, dim=1)
