"""Data for sieve-ce v2: tower states written by lj_states.py, the PCA state codec, batches.

The codec is what the index stores per document token: codes = P (h - mean) (r numbers), int8 with
one float32 scale per token (max |code| / 127). Training sees exactly the dequantised codes that
serving will feed to the joint blocks.
"""
import json, os, random

import numpy as np
import torch

H = 384


class States:
    """Token states (fp16) and pooled vectors of documents or queries, keyed 'set/id'."""

    def __init__(self, lj_dir, kind):
        meta = json.load(open(os.path.join(lj_dir, 'queries.json' if kind == 'query' else f'{kind}s.json')))
        self.index = {m['key']: (m['off'], m['len']) for m in meta}
        self.keys = [m['key'] for m in meta]
        self.rows = {m['key']: i for i, m in enumerate(meta)}
        self.states = np.fromfile(os.path.join(lj_dir, f'{kind}_states.f16'), dtype=np.float16).reshape(-1, H)
        self.vecs = np.fromfile(os.path.join(lj_dir, f'{kind}_vecs.f32'), dtype=np.float32).reshape(-1, H)

    def __contains__(self, key):
        return key in self.index

    def get(self, key):
        off, n = self.index[key]
        return self.states[off: off + n], self.vecs[self.rows[key]]


class Codec:
    """PCA of tower states: mean [H], directions P [r, H] (orthonormal rows)."""

    def __init__(self, mean, P):
        self.mean, self.P = mean.astype(np.float32), P.astype(np.float32)

    @property
    def rank(self):
        return self.P.shape[0]

    @staticmethod
    def fit(states, rank, sample=200_000, seed=13):
        rng = np.random.default_rng(seed)
        idx = rng.choice(states.shape[0], size=min(sample, states.shape[0]), replace=False)
        X = states[np.sort(idx)].astype(np.float64)
        mean = X.mean(0)
        C = np.cov((X - mean).T)
        w, V = np.linalg.eigh(C)
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
        explained = float(w[:rank].sum() / w.sum())
        return Codec(mean, V[:, :rank].T), explained

    def encode(self, h):
        """[L, H] -> int8 codes [L, r], scales [L] (float32)."""
        c = (h.astype(np.float32) - self.mean) @ self.P.T
        scale = np.abs(c).max(1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(c / scale[:, None]), -127, 127).astype(np.int8)
        return q, scale

    def decode_codes(self, q, scale):
        return q.astype(np.float32) * scale[:, None]

    def roundtrip(self, h):
        """The dequantised codes serving feeds to the blocks, [L, r] float32. For the storage
        trade-off (`lj_eval.py --code-bits/--code-rank`), set `bits` (32 = float codes, 16 = fp16,
        2..8 = symmetric per-token integers with one float32 scale) and/or `keep` (only the first
        `keep` principal components stored, the rest fed as zeros); `exact` = bits 32."""
        bits = 32 if getattr(self, 'exact', False) else getattr(self, 'bits', 8)
        keep = getattr(self, 'keep', None)
        if bits == 8 and keep is None:
            return self.decode_codes(*self.encode(h))  # what the index stores
        c = (h.astype(np.float32) - self.mean) @ self.P.T
        if keep is not None:
            c[:, keep:] = 0.0
        if bits >= 32:
            return c
        if bits == 16:
            return c.astype(np.float16).astype(np.float32)
        levels = 2 ** (bits - 1) - 1
        scale = np.abs(c).max(1) / levels
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        return (np.clip(np.rint(c / scale[:, None]), -levels, levels) * scale[:, None]).astype(np.float32)

    def bytes_per_token(self):
        """Index bytes per token of the current `bits`/`keep` setting (integers carry a float32 scale)."""
        bits = 32 if getattr(self, 'exact', False) else getattr(self, 'bits', 8)
        keep = getattr(self, 'keep', None) or self.rank
        return keep * bits / 8 + (4 if bits <= 8 else 0)

    def save(self, path):
        np.savez(path, mean=self.mean, P=self.P)

    @staticmethod
    def load(path):
        z = np.load(path)
        return Codec(z['mean'], z['P'])


def code_all(docs, codec):
    """Dict key -> dequantised codes [L, r] float16 (the training/eval inputs)."""
    return {k: codec.roundtrip(docs.get(k)[0]).astype(np.float16) for k in docs.keys}


def pad_batch(q_list, d_list, d_vecs):
    """q_list: [L_i, H] arrays, d_list: [L_j, r] arrays -> torch tensors for the model."""
    Lq = max(x.shape[0] for x in q_list)
    Ld = max(x.shape[0] for x in d_list)
    n, r = len(q_list), d_list[0].shape[1]
    qs = np.zeros((n, Lq, H), dtype=np.float32)
    qm = np.zeros((n, Lq), dtype=np.int64)
    ds = np.zeros((n, Ld, r), dtype=np.float32)
    dm = np.zeros((n, Ld), dtype=np.int64)
    for i, (q, d) in enumerate(zip(q_list, d_list)):
        qs[i, : q.shape[0]] = q
        qm[i, : q.shape[0]] = 1
        ds[i, : d.shape[0]] = d
        dm[i, : d.shape[0]] = 1
    return (torch.from_numpy(qs), torch.from_numpy(qm), torch.from_numpy(ds), torch.from_numpy(dm),
            torch.from_numpy(np.stack(d_vecs).astype(np.float32)))


def sample_group(rec, negatives, rng, keep=None):
    """[positive, negatives...]; `keep(pos, neg)` filters the negative pool for the drawn positive
    (at least two negatives stay: the ones it would keep first, else the pool's head)."""
    pos = rng.choice(rec['positives'])['doc']
    pool = [n['doc'] for n in rec['negatives']]
    if keep is not None:
        kept = [d for d in pool if keep(pos, d)]
        pool = kept if len(kept) >= 2 else (kept + [d for d in pool if d not in kept])[:2]
    negs = rng.sample(pool, min(negatives, len(pool)))
    while len(negs) < negatives:
        negs.append(rng.choice(pool))
    return [pos] + negs


def fold_codec_into(model, codec):
    """Makes the blocks read r-dimensional codes: K = W_k (mean + P^T c) + b = (W_k P^T) c + (W_k mean + b)."""
    import torch.nn as nn
    P = torch.from_numpy(codec.P)
    mean = torch.from_numpy(codec.mean)
    for b in model.blocks:
        for name in ('k', 'v'):
            old = getattr(b, name)
            new = nn.Linear(codec.rank, old.out_features)
            with torch.no_grad():
                new.weight.copy_(old.weight @ P.T)
                new.bias.copy_(old.weight @ mean + old.bias)
            setattr(b, name, new)


__all__ = ['States', 'Codec', 'code_all', 'pad_batch', 'sample_group', 'fold_codec_into', 'random']
