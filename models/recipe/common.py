"""Shared pieces of the recipe: pair tokenisation, a small BERT with Matryoshka exits, data I/O.

The BERT is written out here (not transformers' BertModel) so that training, the segmented ONNX
export and the Rust side see exactly the same computation, independent of transformers versions.
Weights load from the base model's safetensors (keys as in sentence-transformers' BertModel).
"""
import gzip, json, math, os
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- tokenisation
class PairTokenizer:
    """[CLS] query [SEP] title text [SEP]; query capped at query_cap tokens, pair at max_length.
    Token type ids: 0 for [CLS] q [SEP], 1 for d [SEP] -- or all zero (zero_token_types)."""

    def __init__(self, tokenizer_json, max_length=256, query_cap=64, zero_token_types=True):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(tokenizer_json)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.cls = self.tok.token_to_id('[CLS]')
        self.sep = self.tok.token_to_id('[SEP]')
        self.pad = self.tok.token_to_id('[PAD]') or 0
        self.max_length, self.query_cap, self.zero_tt = max_length, query_cap, zero_token_types

    def ids(self, texts, char_cap=4000):
        return [e.ids for e in self.tok.encode_batch([t[:char_cap] for t in texts], add_special_tokens=False)]

    def pair(self, q_ids, d_ids):
        q = q_ids[: self.query_cap]
        room = max(self.max_length - len(q) - 3, 0)
        d = d_ids[:room]
        ids = [self.cls] + q + [self.sep] + d + [self.sep]
        tt = [0] * (len(q) + 2) + ([0] if self.zero_tt else [1]) * (len(d) + 1)
        return ids, tt

    def batch(self, pairs):
        """pairs: list of (ids, tt) -> LongTensors input_ids, attention_mask, token_type_ids."""
        L = max(len(i) for i, _ in pairs)
        ids = torch.full((len(pairs), L), self.pad, dtype=torch.long)
        tt = torch.zeros((len(pairs), L), dtype=torch.long)
        m = torch.zeros((len(pairs), L), dtype=torch.long)
        for r, (i, t) in enumerate(pairs):
            ids[r, : len(i)] = torch.tensor(i)
            tt[r, : len(t)] = torch.tensor(t)
            m[r, : len(i)] = 1
        return ids, m, tt


# ---------------------------------------------------------------- model
class Layer(nn.Module):
    def __init__(self, H, heads, inter, eps, drop):
        super().__init__()
        self.nh, self.hd = heads, H // heads
        self.q, self.k, self.v = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.ao, self.ln1 = nn.Linear(H, H), nn.LayerNorm(H, eps=eps)
        self.i, self.o, self.ln2 = nn.Linear(H, inter), nn.Linear(inter, H), nn.LayerNorm(H, eps=eps)
        self.drop = nn.Dropout(drop)

    def forward(self, h, add_mask):
        B, S, H = h.shape
        sh = lambda x: x.view(B, S, self.nh, self.hd).transpose(1, 2)
        q, k, v = sh(self.q(h)), sh(self.k(h)), sh(self.v(h))
        a = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd) + add_mask
        a = self.drop(torch.softmax(a, dim=-1))
        c = torch.matmul(a, v).transpose(1, 2).reshape(B, S, H)
        h = self.ln1(h + self.drop(self.ao(c)))
        return self.ln2(h + self.drop(self.o(F.gelu(self.i(h)))))


def add_mask_of(attention_mask, dtype):
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0


def mean_pool(h, attention_mask):
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class CrossEncoder(nn.Module):
    def __init__(self, cfg, exits=(2, 4, 6), widths=(384, 96), dropout=0.1, zero_token_types=True):
        super().__init__()
        H = cfg['hidden_size']
        self.cfg, self.exits, self.widths, self.zero_tt = cfg, list(exits), list(widths), zero_token_types
        self.word = nn.Embedding(cfg['vocab_size'], H)
        self.pos = nn.Embedding(cfg['max_position_embeddings'], H)
        self.typ = nn.Embedding(cfg['type_vocab_size'], H)
        self.eln = nn.LayerNorm(H, eps=cfg['layer_norm_eps'])
        self.edrop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(Layer(H, cfg['num_attention_heads'], cfg['intermediate_size'],
                                          cfg['layer_norm_eps'], dropout) for _ in range(cfg['num_hidden_layers']))
        self.heads = nn.ModuleDict({f'l{l}_w{w}': nn.Linear(w, 1) for l in self.exits for w in self.widths})
        for hd in self.heads.values():
            nn.init.normal_(hd.weight, std=0.02); nn.init.zeros_(hd.bias)

    @staticmethod
    def head_names(exits, widths):
        return [f'l{l}_w{w}' for l in exits for w in widths]

    def embed(self, input_ids, token_type_ids=None):
        S = input_ids.shape[1]
        pos = torch.arange(S, device=input_ids.device).unsqueeze(0)
        if self.zero_tt or token_type_ids is None:
            t = self.typ.weight[0].view(1, 1, -1)
        else:
            t = self.typ(token_type_ids)
        return self.edrop(self.eln(self.word(input_ids) + self.pos(pos) + t))

    def exit_logits(self, layer, h, attention_mask):
        p = mean_pool(h, attention_mask)
        return torch.cat([self.heads[f'l{layer}_w{w}'](p[:, :w]) for w in self.widths], dim=-1)  # [B, n_widths]

    def forward(self, input_ids, attention_mask, token_type_ids=None, upto=None):
        """-> logits [B, n_exits, n_widths] (exits up to `upto` layers)."""
        h = self.embed(input_ids, token_type_ids)
        am = add_mask_of(attention_mask, h.dtype)
        out = []
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h, am)
            if i in self.exits:
                out.append(self.exit_logits(i, h, attention_mask))
            if upto is not None and i >= upto:
                break
        return torch.stack(out, dim=1)

    def load_base(self, path):
        from safetensors.torch import load_file
        sd = load_file(path)
        g = lambda k: sd[k].float()
        with torch.no_grad():
            self.word.weight.copy_(g('embeddings.word_embeddings.weight'))
            self.pos.weight.copy_(g('embeddings.position_embeddings.weight'))
            self.typ.weight.copy_(g('embeddings.token_type_embeddings.weight'))
            self.eln.weight.copy_(g('embeddings.LayerNorm.weight')); self.eln.bias.copy_(g('embeddings.LayerNorm.bias'))
            for i, L in enumerate(self.layers):
                p = f'encoder.layer.{i}.'
                for mod, key in [(L.q, 'attention.self.query'), (L.k, 'attention.self.key'), (L.v, 'attention.self.value'),
                                 (L.ao, 'attention.output.dense'), (L.i, 'intermediate.dense'), (L.o, 'output.dense'),
                                 (L.ln1, 'attention.output.LayerNorm'), (L.ln2, 'output.LayerNorm')]:
                    mod.weight.copy_(g(p + key + '.weight')); mod.bias.copy_(g(p + key + '.bias'))


# ---------------------------------------------------------------- segments for export
class Segment(nn.Module):
    """Layers (start, end] of the model plus the exit at `end`. First segment embeds."""

    def __init__(self, model, start, end, first, last):
        super().__init__()
        self.m, self.start, self.end, self.first, self.last = model, start, end, first, last

    def forward(self, x, attention_mask, token_type_ids=None):
        h = self.m.embed(x, token_type_ids) if self.first else x
        am = add_mask_of(attention_mask, h.dtype)
        for i in range(self.start, self.end):
            h = self.m.layers[i](h, am)
        logits = self.m.exit_logits(self.end, h, attention_mask)
        return logits if self.last else (h, logits)


class Full(nn.Module):
    """Single graph: deepest exit, widest head -> logits [B, 1]."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.m.embed(input_ids, token_type_ids)
        am = add_mask_of(attention_mask, h.dtype)
        for layer in self.m.layers[: self.m.exits[-1]]:
            h = layer(h, am)
        p = mean_pool(h, attention_mask)
        w = self.m.widths[0] if self.m.widths[0] == max(self.m.widths) else max(self.m.widths)
        return self.m.heads[f'l{self.m.exits[-1]}_w{w}'](p[:, :w])


# ---------------------------------------------------------------- data
def read_jsonl_gz(path):
    with gzip.open(path, 'rt') as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_docs(data_dir):
    return {(d['set'], d['doc']): d['text'] for d in read_jsonl_gz(os.path.join(data_dir, 'docs.jsonl.gz'))}


def heldout_split(recs, frac, seed, min_n=1):
    import random
    rng = random.Random(seed)
    idx = list(range(len(recs)))
    rng.shuffle(idx)
    n = max(min_n, int(round(frac * len(recs))))
    ho = set(idx[:n])
    return [r for i, r in enumerate(recs) if i not in ho], [r for i, r in enumerate(recs) if i in ho]


def ndcg_at(ranked, qrels, k=10):
    """trec_eval ndcg_cut: gain = grade, discount log2(rank+1), ideal over all judged grades."""
    dcg = sum(qrels.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:k]) if qrels.get(d, 0) > 0)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked, qrels, k=10, thr=1):
    for r, d in enumerate(ranked[:k]):
        if qrels.get(d, 0) >= thr:
            return 1.0 / (r + 1)
    return 0.0


def trec_order(scored):
    """trec_eval ordering: score desc, then doc id desc."""
    return [d for d, _ in sorted(scored, key=lambda x: (x[1], x[0]), reverse=True)]
