#!/usr/bin/env python3
"""Builds the cross-encoder every rerank peer of scripts/bench.py loads: one model, one ONNX file.

all-MiniLM-L6-v2's six layers (the upstream safetensors, its pooler included) under a
`BertForSequenceClassification` head with one label whose weights are drawn from a fixed seed.
It is a *speed and agreement* model: same shapes and cost as the MiniLM-L6 cross-encoders users
run (e.g. ms-marco-MiniLM-L-6-v2), but its scores rank nothing (no pretrained cross-encoder can be
obtained here). Written as a Hugging Face directory, so that sentence-transformers' CrossEncoder,
fastembed-rs, a plain onnxruntime loop and sieve all load the very same files:

    OUT/config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, vocab.txt, onnx/model.onnx (output `logits` [batch, 1])

The ONNX graph is exported like sieve's bi-encoder (models/recipe/export_bi_encoder.py): the
TorchScript exporter with eager attention, then ONNX Runtime's BERT fusions (Attention, BiasGelu,
SkipLayerNormalization, EmbedLayerNormalization), fp32.

    python bench/make_bench_ce.py --base ../shared/models/all-MiniLM-L6-v2 --out .sieve/bench/minilm-l6-ce
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="all-MiniLM-L6-v2 directory (safetensors + tokenizer)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from onnxruntime.transformers.optimizer import optimize_model
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(args.seed)
    config = BertConfig.from_pretrained(args.base, num_labels=1, architectures=["BertForSequenceClassification"])
    config._attn_implementation = "eager"
    model = BertForSequenceClassification(config)
    state = {f"bert.{k}": v for k, v in load_file(str(args.base / "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"}, missing
    assert not [k for k in unexpected if "position_ids" not in k], unexpected
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.zero_()
    model.eval()

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "onnx").mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(args.base / name, out / name)

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.randint(1000, 2000, (2, 16))

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        with torch.no_grad():
            torch.onnx.export(Logits(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(plain),
                              input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
        fused = optimize_model(str(plain), model_type="bert", num_heads=12, hidden_size=384, opt_level=1)
        stats = fused.get_fused_operator_statistics()
        assert stats.get("Attention") == 6 and stats.get("SkipLayerNormalization") == 12, stats
        fused.save_model_to_file(str(out / "onnx" / "model.onnx"))
    print(f"wrote {out} (fusions {stats})")


if __name__ == "__main__":
    main()
