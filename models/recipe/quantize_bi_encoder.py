#!/usr/bin/env python3
"""Build sieve's compute-int8 bi-encoder: all-MiniLM-L6-v2 -> onnx/model_qint8.onnx.

What
    Produces an ONNX graph of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) in which every
    dense layer (the 36 weight MatMuls: Q, K, V, attention-out, FFN-in, FFN-out of 6 layers) runs
    as int8 arithmetic: ONNX Runtime *dynamic* quantisation, i.e. DynamicQuantizeLinear on the
    activations (uint8, per tensor, computed at run time) + MatMulInteger against int8 weights
    that are quantised per output channel (symmetric). ONNX Runtime fuses these into its
    MatMulIntegerToFloat / DynamicQuantizeMatMul kernels at session start.

Why
    The model_int8.onnx that sieve already ships stores its weights as int8 but de-quantises them
    with Cast+Mul; ONNX Runtime constant-folds that at load, so it *computes in fp32* and is no
    faster than fp32. This graph computes the dense layers in int8 and is ~1.7x faster on CPU
    (numbers in ../all-MiniLM-L6-v2/SIEVE.md).

How (deterministic, no torch needed)
    1. The graph structure is taken from model_int8.onnx (a torch-dynamo export of the upstream
       model; inputs input_ids / attention_mask / token_type_ids int64 [batch, sequence], output
       last_hidden_state float32 [batch, sequence, 384]).
    2. Every Cast+Mul de-quantised weight of the 36 MatMuls is replaced by the ORIGINAL fp32
       weight from the upstream model.safetensors (the linear layer is identified by the bias
       its MatMul feeds, and the weight is transposed to the MatMul's [in, out] layout). Each
       replacement is checked to lie within half a quantisation step of the int8 value it
       replaces, and every other fp32 tensor (biases, LayerNorm, token-type embeddings) is
       checked to equal the safetensors tensor bit for bit - so the mapping cannot be wrong.
       The result is the exact fp32 model (kept only as an intermediate, --fp32-out to save it).
    3. The two large embedding tables (word 30522x384, position 512x384) are not matrix products
       and cost nothing at run time, so they stay *stored* as int8 with one fp32 scale per row
       (Cast+Mul, folded to fp32 by ONNX Runtime at load). Their int8 values are recomputed here
       from the safetensors (scale = max|row|/127, round half to even), which reproduces the
       tensors in model_int8.onnx exactly. This keeps the file ~23 MB instead of ~58 MB.
       (--fp32-embeddings keeps them fp32 instead.)
    4. onnxruntime.quantization.quantize_dynamic(op_types_to_quantize=["MatMul"],
       per_channel=True, reduce_range=True, weight_type=QInt8). MatMuls whose B is not a constant
       (the attention score / context products) are left fp32 (MatMulConstBOnly, ORT default).
       reduce_range=True stores the weights in 7 bits ([-64, 64]): x86 CPUs without VNNI
       (AVX2 / AVX-512 without VNNI, e.g. AMD Zen 2/3, Intel before Ice Lake) compute u8 x s8
       products with a 16-bit saturating instruction and can overflow with full 8-bit weights;
       7-bit weights cannot overflow, so the same file gives the same results on every CPU.
       (--no-reduce-range gives slightly better accuracy on VNNI/ARM CPUs; on non-VNNI x86 it
       then needs the ORT session option session.x64quantprecision=1 to stay exact.)
    5. Provenance is written into the model's metadata_props; inputs/outputs are verified.

Inputs
    --int8-onnx     models/all-MiniLM-L6-v2/onnx/model_int8.onnx   (graph template)
    --safetensors   upstream model.safetensors of sentence-transformers/all-MiniLM-L6-v2
                    (sha256 in SIEVE.md)
Outputs
    --out           models/all-MiniLM-L6-v2/onnx/model_qint8.onnx
    --fp32-out      optional: the restored exact-fp32 graph (~90 MB; not shipped)

Exact command (from the repository root, Python 3.11, versions in requirements-quantize.txt):
    python3 -m venv /tmp/qenv
    /tmp/qenv/bin/pip install -r models/recipe/requirements-quantize.txt
    /tmp/qenv/bin/python models/recipe/quantize_bi_encoder.py \
        --int8-onnx models/all-MiniLM-L6-v2/onnx/model_int8.onnx \
        --safetensors /work/shared/models/all-MiniLM-L6-v2/model.safetensors \
        --out models/all-MiniLM-L6-v2/onnx/model_qint8.onnx

    Add  --check-corpus /work/shared/data/scifact  to compare embeddings against the exact fp32
    model (mean pooling + L2, truncation 256) on scifact documents and queries.

Re-running with the same inputs and package versions produces a byte-identical file (the
script prints its sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HIDDEN = 384


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quantise_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per row (what model_int8.onnx stores for embeddings)."""
    scale = (np.abs(w).max(axis=1, keepdims=True) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def restore_fp32(int8_path: Path, safetensors_path: Path) -> onnx.ModelProto:
    """Replace model_int8.onnx's Cast+Mul de-quantised weights by the original fp32 weights."""
    from safetensors.numpy import load_file

    model = onnx.load(str(int8_path))
    graph = model.graph
    st = load_file(str(safetensors_path))
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    drop_nodes: set[int] = set()
    drop_inits: set[str] = set()
    new_inits: list[onnx.TensorProto] = []
    restored = 0
    embeddings: list[str] = []
    for idx, node in enumerate(graph.node):
        if node.op_type != "Cast" or not node.input[0].endswith("_q") or node.input[0] not in inits:
            continue
        q_name = node.input[0]
        base = q_name[: -len("_q")]
        (mul,) = consumers[node.output[0]]
        assert mul.op_type == "Mul" and mul.input[1] == base + "_scale", mul
        weight_name = mul.output[0]
        q_old = numpy_helper.to_array(inits[q_name])
        scale_old = numpy_helper.to_array(inits[base + "_scale"])

        if weight_name.startswith("inner.embeddings."):
            w = st[weight_name[len("inner."):]]
            assert w.shape == q_old.shape, weight_name
            q_new, scale_new = quantise_rows(w)
            same = np.array_equal(q_new, q_old) and np.array_equal(scale_new, scale_old)
            print(f"  embedding {weight_name}: per-row int8 of the safetensors table is "
                  f"{'identical to' if same else 'DIFFERENT from'} model_int8.onnx's")
            steps = np.abs(w - q_old.astype(np.float32) * scale_old) / scale_old
            assert steps.max() <= 0.5 + 1e-3, f"{weight_name}: safetensors table does not match"
            embeddings.append(weight_name)
        else:
            # A linear layer: Cast -> Mul -> MatMul(x, W) -> Add(., <module>.bias)
            (matmul,) = consumers[weight_name]
            assert matmul.op_type == "MatMul" and matmul.input[1] == weight_name, matmul
            (add,) = consumers[matmul.output[0]]
            assert add.op_type == "Add", add
            bias = next(i for i in add.input if i != matmul.output[0])
            assert bias.startswith("inner.") and bias.endswith(".bias"), bias
            w = st[bias[len("inner."):-len(".bias")] + ".weight"].T  # torch Linear is [out, in]
            assert w.shape == q_old.shape, (weight_name, w.shape, q_old.shape)
            steps = np.abs(w - q_old.astype(np.float32) * scale_old) / scale_old
            assert steps.max() <= 0.5 + 1e-3, f"{weight_name}: safetensors weight does not match ({steps.max()})"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(w, np.float32), weight_name))
        drop_nodes |= {idx, list(graph.node).index(mul)}
        drop_inits |= {q_name, base + "_scale"}
        restored += weight_name not in embeddings

    # Every other float tensor must already be the original.
    checked = 0
    for name, tensor in inits.items():
        key = name[len("inner."):] if name.startswith("inner.") else None
        if key in st and name not in drop_inits and tensor.data_type == onnx.TensorProto.FLOAT:
            assert np.array_equal(numpy_helper.to_array(tensor), st[key].reshape(tuple(tensor.dims))), name
            checked += 1
    print(f"  restored {restored} MatMul weights from safetensors, {len(embeddings)} embedding tables, "
          f"{checked} other tensors verified identical")
    assert restored == 36, restored

    keep = [n for i, n in enumerate(graph.node) if i not in drop_nodes]
    del graph.node[:]
    graph.node.extend(keep)
    keep_inits = [t for t in graph.initializer if t.name not in drop_inits] + new_inits
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    onnx.checker.check_model(model, full_check=True)
    return model


def store_embeddings_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store the embedding tables as per-row int8 + Cast+Mul (ORT folds it to fp32 at load)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = []
    for tensor in graph.initializer:
        name = tensor.name
        if not (name.startswith("inner.embeddings.") and name.endswith("_embeddings.weight")):
            continue
        w = numpy_helper.to_array(tensor)
        if w.shape[0] < 100:  # token_type_embeddings (2 x 384) is not worth it
            continue
        q, scale = quantise_rows(w)
        tensor.CopyFrom(numpy_helper.from_array(q, name + "_q"))
        graph.initializer.append(numpy_helper.from_array(scale, name + "_scale"))
        nodes.append(onnx.helper.make_node("Cast", [name + "_q"], [name + "_f"], to=onnx.TensorProto.FLOAT,
                                           name=name + "_cast"))
        nodes.append(onnx.helper.make_node("Mul", [name + "_f", name + "_scale"], [name], name=name + "_dequant"))
    assert len(nodes) == 4, "expected word and position embedding tables"
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    onnx.checker.check_model(model, full_check=True)
    return model


def check_signature(model: onnx.ModelProto) -> None:
    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    ins = {i.name: (i.type.tensor_type.elem_type, dims(i)) for i in model.graph.input}
    outs = {o.name: (o.type.tensor_type.elem_type, dims(o)) for o in model.graph.output}
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        elem, shape = ins[name]
        assert elem == onnx.TensorProto.INT64 and len(shape) == 2 and all(isinstance(d, str) for d in shape), (name, ins[name])
    elem, shape = outs["last_hidden_state"]
    assert elem == onnx.TensorProto.FLOAT and len(shape) == 3 and shape[2] == HIDDEN and all(
        isinstance(d, str) for d in shape[:2]), outs
    print(f"  signature ok: inputs {ins} -> outputs {outs}")


def check_embeddings(fp32_path: Path, qint8_path: Path, tokenizer_path: Path, corpus_dir: Path,
                     n_docs: int = 2000, threads: int = 2) -> None:
    """Cosine of mean-pooled, L2-normalised embeddings: quantised vs exact fp32."""
    import json

    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(256)
    docs = []
    with open(corpus_dir / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            docs.append((d.get("title", "") + " " + d["text"]).strip())
            if len(docs) == n_docs:
                break
    with open(corpus_dir / "queries.jsonl") as f:
        queries = [json.loads(line)["text"] for line in f]

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def embed(sess, texts, batch=32):
        encs = tok.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encs[i].ids))
        out = np.zeros((len(texts), HIDDEN), np.float32)
        for b in range(0, len(order), batch):
            idx = order[b:b + batch]
            length = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), length), np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, :len(encs[i].ids)] = encs[i].ids
                mask[r, :len(encs[i].ids)] = 1
            h = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                 "token_type_ids": np.zeros_like(ids)})[0]
            v = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    ref, new = session(fp32_path), session(qint8_path)
    rd, rq = embed(ref, docs), embed(ref, queries)
    nd, nq = embed(new, docs), embed(new, queries)
    cos = np.concatenate([(rd * nd).sum(1), (rq * nq).sum(1)])
    top_ref = np.argsort(-(rq[:100] @ rd.T), axis=1)[:, :10]
    top_new = np.argsort(-(nq[:100] @ nd.T), axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ref, top_new)])
    print(f"  {len(cos)} texts ({len(docs)} docs + {len(queries)} queries): cosine vs fp32 "
          f"mean {cos.mean():.5f} min {cos.min():.5f}; overlap@10 (100 queries x {len(docs)} docs) {overlap:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--int8-onnx", type=Path, required=True)
    ap.add_argument("--safetensors", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fp32-out", type=Path)
    ap.add_argument("--no-reduce-range", dest="reduce_range", action="store_false")
    ap.add_argument("--per-tensor", dest="per_channel", action="store_false",
                    help="per-tensor weight scales (much less accurate for this model; not recommended)")
    ap.add_argument("--fp32-embeddings", action="store_true")
    ap.add_argument("--check-corpus", type=Path, help="BEIR-style dir with corpus.jsonl + queries.jsonl")
    args = ap.parse_args()

    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    print(f"inputs: {args.int8_onnx} sha256 {sha256(args.int8_onnx)}")
    print(f"        {args.safetensors} sha256 {sha256(args.safetensors)}")

    fp32 = restore_fp32(args.int8_onnx, args.safetensors)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = args.fp32_out or Path(tmp) / "model_fp32.onnx"
        fp32_path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(fp32, str(fp32_path))
        to_quantise = Path(tmp) / "model_to_quantise.onnx"
        onnx.save(fp32 if args.fp32_embeddings else store_embeddings_int8(fp32), str(to_quantise))
        q_path = Path(tmp) / "model_qint8.onnx"
        logging.getLogger().setLevel(logging.ERROR)  # silence the "consider pre-processing" hint
        quantize_dynamic(to_quantise, q_path, op_types_to_quantize=["MatMul"], per_channel=args.per_channel,
                         reduce_range=args.reduce_range, weight_type=QuantType.QInt8)
        model = onnx.load(str(q_path))
        check_signature(model)
        onnx.checker.check_model(model, full_check=True)
        ops: dict[str, int] = {}
        for n in model.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        assert ops.get("MatMulInteger") == 36 and ops.get("DynamicQuantizeLinear", 0) > 0, ops
        print(f"  ops: MatMulInteger {ops['MatMulInteger']}, DynamicQuantizeLinear "
              f"{ops['DynamicQuantizeLinear']}, float MatMul left {ops.get('MatMul', 0)} (attention)")
        meta = {
            "sieve.recipe": "models/recipe/quantize_bi_encoder.py",
            "sieve.source": "sentence-transformers/all-MiniLM-L6-v2 model.safetensors sha256 "
                            + sha256(args.safetensors),
            "sieve.graph_template": args.int8_onnx.name + " sha256 " + sha256(args.int8_onnx),
            "sieve.quantization": (f"onnxruntime {onnxruntime.__version__} quantize_dynamic MatMul "
                                   f"weight=QInt8 per_channel={args.per_channel} "
                                   f"reduce_range={args.reduce_range} activations=QUInt8 dynamic; "
                                   + ("embeddings fp32" if args.fp32_embeddings
                                      else "embeddings stored int8 per-row (Cast+Mul)")),
        }
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(args.out))
        print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes) sha256 {sha256(args.out)}")
        if args.check_corpus:
            check_embeddings(fp32_path, args.out, args.int8_onnx.parent.parent / "tokenizer.json",
                             args.check_corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
