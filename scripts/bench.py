#!/usr/bin/env python3
"""sieve against what users would pick instead, side by side: one invocation, interleaved rounds,
same machine, same inputs, same ONNX file, same thread count (2 intra-op threads everywhere).

  embedding  SciFact documents (title + text, <= 256 tokens, mean pooling, L2):
             sieve library (sieve-bench) on its default graph (int8 weight products, activations
             per token: models/recipe/quantize_bi_encoder.py) and on the fp32 graph it was made
             from; fastembed-rs TextEmbedding (user-defined model) and Python onnxruntime (the
             straightforward loop), each on the fp32 graph (what their users load) and on sieve's
             int8 graph (the same file); sentence-transformers on torch (the fp32 reference the
             cosines are measured against)
  rerank     a MiniLM-L6 cross-encoder (bench/make_bench_ce.py, one ONNX file for everyone) on
             SciFact test queries with sieve's hybrid top-100 and DL19 queries with the published
             BM25 top-100: sieve library, sieve CLI (a process per query, model load included),
             fastembed-rs TextRerank, Python onnxruntime (the window as one batch),
             sentence-transformers CrossEncoder (torch fp32, the score reference)
  indexing   `sieve index` end to end on SciFact and NFCorpus, documents/s per phase
  the limit  FLOPs per token from the model's shapes, achieved GFLOP/s, and this machine's GEMM
             peak (fp32, bf16, int8; torch, same 2 threads), measured in the same run

Set up once with scripts/setup-bench.sh (pinned peers in .sieve/bench-venv, fastembed-rs built
from bench/peers/fastembed, the bench cross-encoder). Run:

    .sieve/bench-venv/bin/python scripts/bench.py --out docs/bench

Writes OUT/bench.json (every measurement), OUT/bench.md (tables) and OUT/bench.svg (throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
WORK = REPO / ".sieve" / "bench"
SIEVE = REPO / "target" / "release" / "sieve"
SIEVE_BENCH = REPO / "target" / "release" / "sieve-bench"
FASTEMBED = REPO / "bench" / "peers" / "fastembed" / "target" / "release" / "fastembed-peer"
BI_ENCODER = REPO / "models" / "all-MiniLM-L6-v2"
FP32_GRAPH = BI_ENCODER / "onnx" / "model_fp32.onnx"
INT8_GRAPH = BI_ENCODER / "onnx" / "model.onnx"  # the default
TORCH_BI_ENCODER = SHARED / "models" / "all-MiniLM-L6-v2"  # safetensors, for sentence-transformers
CROSS_ENCODER = WORK / "minilm-l6-ce"
THREADS = 2
H, INTER, LAYERS = 384, 1536, 6


# ----------------------------------------------------------------------------- peers in Python
def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def peer_ort_embed(inp: Path, out: Path, max_length: int, graph: Path = FP32_GRAPH) -> dict:
    """The straightforward onnxruntime loop: batches of 32 in corpus order, padded to the batch."""
    import numpy as np
    from tokenizers import Tokenizer

    texts = read_jsonl(inp)
    tok = Tokenizer.from_file(str(BI_ENCODER / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding()
    session = ort_session(graph)

    def run(batch):
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        h = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        v = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    run(texts[:8])
    start = time.perf_counter()
    vectors = [row for i in range(0, len(texts), 32) for row in run(texts[i:i + 32]).tolist()]
    seconds = time.perf_counter() - start
    out.write_text(json.dumps(vectors))
    return {"items": len(texts), "seconds": seconds}


def peer_st_embed(inp: Path, out: Path, max_length: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    texts = read_jsonl(inp)
    model = SentenceTransformer(str(TORCH_BI_ENCODER), device="cpu")
    model.max_seq_length = max_length
    model.encode(texts[:8])
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    out.write_text(json.dumps(vectors.tolist()))
    return {"items": len(texts), "seconds": seconds}


def peer_ort_rerank(inp: Path, out: Path, max_length: int) -> dict:
    """The straightforward onnxruntime loop: each window as one batch of (query, document) pairs."""
    import numpy as np
    from tokenizers import Tokenizer

    windows = read_jsonl(inp)
    tok = Tokenizer.from_file(str(CROSS_ENCODER / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding()
    session = ort_session(CROSS_ENCODER / "onnx" / "model.onnx")
    scores, per_query, pairs = [], [], 0
    for i, w in enumerate(windows):
        start = time.perf_counter()
        enc = tok.encode_batch([(w["query"], d) for d in w["docs"]])
        feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        logits = session.run(None, feed)[0][:, 0]
        ms = (time.perf_counter() - start) * 1e3
        if i > 0:
            per_query.append(ms)
            pairs += len(w["docs"])
        scores.append(logits.tolist())
    out.write_text(json.dumps(scores))
    return {"items": pairs, "seconds": sum(per_query) / 1e3, "per_query_ms": per_query}


def peer_st_rerank(inp: Path, out: Path, max_length: int) -> dict:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(THREADS)
    windows = read_jsonl(inp)
    model = CrossEncoder(str(CROSS_ENCODER), device="cpu", max_length=max_length,
                         activation_fn=torch.nn.Identity())
    scores, per_query, pairs = [], [], 0
    for i, w in enumerate(windows):
        start = time.perf_counter()
        s = model.predict([(w["query"], d) for d in w["docs"]], batch_size=32, show_progress_bar=False)
        ms = (time.perf_counter() - start) * 1e3
        if i > 0:
            per_query.append(ms)
            pairs += len(w["docs"])
        scores.append([float(x) for x in s])
    out.write_text(json.dumps(scores))
    return {"items": pairs, "seconds": sum(per_query) / 1e3, "per_query_ms": per_query}


PEERS = {"ort-embed": peer_ort_embed, "st-embed": peer_st_embed,
         "ort-embed-int8": lambda inp, out, n: peer_ort_embed(inp, out, n, INT8_GRAPH),
         "ort-rerank": peer_ort_rerank, "st-rerank": peer_st_rerank}


# ----------------------------------------------------------------------------- systems
def env() -> dict:
    e = dict(os.environ)
    lib = REPO / ".sieve" / "onnxruntime" / "onnxruntime" / "capi"
    found = sorted(lib.glob("libonnxruntime.so.*"))
    if found:
        e.setdefault("ORT_DYLIB_PATH", str(found[-1]))
    e["OMP_NUM_THREADS"] = str(THREADS)
    return e


def python_peer(name: str):
    return lambda inp, out, n: [sys.executable, __file__, "--peer", name, str(inp), str(out), str(n)]


EMBED_SYSTEMS = {
    "sieve": lambda inp, out, n: [str(SIEVE_BENCH), "embed", str(BI_ENCODER), str(inp), str(out), str(n)],
    "sieve, fp32 graph": lambda inp, out, n: [str(SIEVE_BENCH), "embed", str(FP32_GRAPH), str(inp), str(out), str(n)],
    "fastembed-rs 5.13.2": lambda inp, out, n: [str(FASTEMBED), "embed", str(BI_ENCODER), str(FP32_GRAPH),
                                                 str(inp), str(out), str(n), "256"],
    "fastembed-rs 5.13.2, sieve's int8 graph": lambda inp, out, n: [str(FASTEMBED), "embed", str(BI_ENCODER), str(INT8_GRAPH),
                                                                     str(inp), str(out), str(n), "256"],
    "onnxruntime 1.31.1 (Python)": python_peer("ort-embed"),
    "onnxruntime 1.31.1 (Python), sieve's int8 graph": python_peer("ort-embed-int8"),
    "sentence-transformers 5.1.2 (torch 2.5.1)": python_peer("st-embed"),
}
EMBED_REFERENCE = "sentence-transformers 5.1.2 (torch 2.5.1)"

RERANK_SYSTEMS = {
    "sieve": lambda inp, out, n: [str(SIEVE_BENCH), "rerank", str(CROSS_ENCODER), str(inp), str(out), str(n)],
    "fastembed-rs 5.13.2": lambda inp, out, n: [str(FASTEMBED), "rerank", str(CROSS_ENCODER), str(CROSS_ENCODER / "onnx" / "model.onnx"),
                                                 str(inp), str(out), str(n), "256"],
    "onnxruntime 1.31.1 (Python)": python_peer("ort-rerank"),
    "sentence-transformers 5.1.2 (torch 2.5.1)": python_peer("st-rerank"),
}
RERANK_REFERENCE = "sentence-transformers 5.1.2 (torch 2.5.1)"


def run_system(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- inputs
def corpus_texts(dataset: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    t = pq.read_table(dataset / "corpus.parquet")
    titles = t.column("title").to_pylist() if "title" in t.column_names else [""] * t.num_rows
    return {str(i): (f"{a} {b}" if a else b) for i, a, b in zip(t.column("id").to_pylist(), titles, t.column("text").to_pylist())}


def queries(dataset: Path) -> dict[str, str]:
    return {str(q["_id"]): q["text"] for q in read_jsonl(dataset / "queries.jsonl")}


def top_k(run: Path, k: int) -> dict[str, list[str]]:
    lists: dict[str, list[tuple[int, str]]] = {}
    for line in run.read_text().splitlines():
        qid, _, doc, rank, *_ = line.split()
        lists.setdefault(qid, []).append((int(rank), doc))
    return {q: [d for _, d in sorted(v)[:k]] for q, v in lists.items()}


def scifact_hybrid_run() -> Path:
    """sieve's own hybrid top-100 for SciFact test (cached in .sieve/bench)."""
    run_dir = WORK / "runs"
    run = run_dir / "scifact-test-hybrid.trec"
    if not run.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(SIEVE), "eval", "--dataset", str(SHARED / "data" / "scifact"), "--split", "test",
                        "--stages", "hybrid", "--run-dir", str(run_dir), "--json", str(run_dir / "eval.json")],
                       check=True, env=env(), cwd=REPO)
    return run


def write_windows(path: Path, dataset: Path, run: Path, n_queries: int, depth: int) -> list[int]:
    texts, qs = corpus_texts(dataset), queries(dataset)
    lists = top_k(run, depth)
    chosen = sorted(lists)[: n_queries]
    with path.open("w") as f:
        for q in chosen:
            f.write(json.dumps({"qid": q, "query": qs[q], "docs": [texts[d] for d in lists[q]]}) + "\n")
    return [len(lists[q]) for q in chosen]


# ----------------------------------------------------------------------------- agreement, FLOPs, peak
def cosines(a_path: Path, b_path: Path) -> tuple[float, float]:
    import numpy as np

    a, b = np.array(json.loads(a_path.read_text())), np.array(json.loads(b_path.read_text()))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(1)
    return float(c.min()), float(c.mean())


def max_score_diff(a_path: Path, b_path: Path) -> float:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def token_lengths(tokenizer: Path, items: list, max_length: int, pairs: bool) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_length)
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(items)]


def flops(lengths: list[int]) -> float:
    """Multiply-adds x 2 of the encoder for sequences of these lengths (embeddings excluded)."""
    dense = 2 * (4 * H * H + 2 * H * INTER)
    return float(sum(LAYERS * L * (dense + 4 * L * H) for L in lengths))


def gemm_peak() -> dict:
    import torch

    torch.set_num_threads(THREADS)
    out = {}
    n = 2048
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)]:
        if dtype == torch.int8:
            a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            f = lambda: torch._int_mm(a, b)
        else:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            f = lambda: a @ b
        f()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * n ** 3 / best / 1e9
    return out


# ----------------------------------------------------------------------------- report
def summarize(samples: list[dict], items_key: str = "items") -> dict:
    rates = [s[items_key] / s["seconds"] for s in samples]
    per_query = [ms for s in samples for ms in s.get("per_query_ms", [])]
    out = {"per_s": statistics.median(rates), "rounds": rates}
    if per_query:
        q = sorted(per_query)
        out["p50_ms"] = q[len(q) // 2]
        out["p95_ms"] = q[min(len(q) - 1, int(0.95 * len(q)))]
    return out


def svg(report: dict, path: Path) -> None:
    rows = []
    for task in ("embedding", "rerank scifact", "rerank dl19"):
        for name, r in report[task]["systems"].items():
            rows.append((task, name, r["per_s"]))
    width, bar_h, left = 760, 18, 330
    height = 30 + len(rows) * (bar_h + 6) + 30
    top = max(r[2] for r in rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<text x="10" y="18" font-weight="bold">Throughput, 2 threads, graphs as named (documents/s or pairs/s; longer is better)</text>']
    y = 30
    for task, name, rate in rows:
        w = (width - left - 80) * rate / top
        color = "#2a6fdb" if name.startswith("sieve") else "#999"
        parts.append(f'<text x="10" y="{y + 13}">{task}: {name}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 5:.1f}" y="{y + 13}">{rate:.1f}</text>')
        y += bar_h + 6
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def markdown(report: dict) -> str:
    lines = [f"# sieve vs peers — {report['date']}, {report['machine']}", "",
             f"Command: `{report['command']}`", ""]
    peak = report["peak_gflops"]
    for task, unit in (("embedding", "documents/s"), ("rerank scifact", "pairs/s"), ("rerank dl19", "pairs/s")):
        t = report[task]
        lines += [f"## {task} — {t['inputs']}", "",
                  f"| system | {unit} (median of rounds) | rounds | p50 / p95 ms per query | sieve ÷ system | agreement with the reference | GFLOP/s | of the GEMM peak |",
                  "|---|---|---|---|---|---|---|---|"]
        sieve_rate = t["systems"]["sieve"]["per_s"]
        for name, r in t["systems"].items():
            lat = f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}" if "p50_ms" in r else "—"
            agree = r.get("agreement", "—")
            kind = r.get("precision", "int8" if "int8" in name else "fp32")
            lines.append(f"| {name} | {r['per_s']:.1f} | {', '.join(f'{x:.1f}' for x in r['rounds'])} | {lat} | "
                         f"{sieve_rate / r['per_s']:.2f}× | {agree} | {r['gflops']:.0f} | "
                         f"{100 * r['gflops'] / peak[kind]:.0f}% of {kind} |")
        lines.append("")
    if "cli" in report:
        c = report["cli"]
        lines += [f"sieve CLI end to end (`sieve rerank`, a process per query: start, model load, tokenise, score, JSON out): "
                  f"p50 {c['p50_ms']:.0f} ms per query of {c['docs']} documents over {c['queries']} DL19 queries.", ""]
    if "index" in report:
        lines += ["## `sieve index` end to end", "", "| corpus | documents | seconds | documents/s | phases (s) |", "|---|---|---|---|---|"]
        for name, r in report["index"].items():
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"])
            lines.append(f"| {name} | {r['documents']} | {r['seconds']:.1f} | {r['documents'] / r['seconds']:.1f} | {phases} |")
        lines.append("")
    lines += ["## This machine's GEMM peak (torch, 2 threads, 2048³)", "",
              " | ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), ""]
    return "\n".join(lines)


def index_bench(name: str, dataset: Path, extra: list[str]) -> dict:
    out = WORK / f"index-{name}"
    start = time.perf_counter()
    done = subprocess.run([str(SIEVE), "index", str(dataset / "corpus.parquet"), "--out", str(out), "--json"] + extra,
                          capture_output=True, text=True, env=env(), cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sieve index {name} failed:\n{done.stderr[-2000:]}")
    manifest = json.loads(done.stdout)
    return {"documents": manifest["counts"]["documents"], "seconds": seconds, "phases": manifest["build"]["phases"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--embed-docs", type=int, default=500)
    ap.add_argument("--scifact-queries", type=int, default=11, help="the first one warms up and is not counted")
    ap.add_argument("--dl19-queries", type=int, default=21)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--cli-queries", type=int, default=6)
    ap.add_argument("--no-index", action="store_true", help="skip the `sieve index` runs (minutes)")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT/bench.md and bench.svg from OUT/bench.json")
    args = ap.parse_args()
    if args.report_only:
        report = json.loads((args.out / "bench.json").read_text())
        (args.out / "bench.md").write_text(markdown(report))
        svg(report, args.out / "bench.svg")
        print(markdown(report))
        return

    for path, what in [(SIEVE_BENCH, "cargo build --release -p sieve-bench"), (SIEVE, "cargo build --release"),
                       (FASTEMBED, "scripts/setup-bench.sh"), (CROSS_ENCODER, "scripts/setup-bench.sh"),
                       (FP32_GRAPH, "the checkout's models/")]:
        if not path.exists():
            raise SystemExit(f"{path} is missing: {what}")
    WORK.mkdir(parents=True, exist_ok=True)
    inputs = WORK / "inputs"
    inputs.mkdir(exist_ok=True)
    scifact, dl19 = SHARED / "data" / "scifact", SHARED / "data" / "trec-dl-2019-passage"

    texts = list(corpus_texts(scifact).values())[: args.embed_docs]
    (inputs / "embed.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    write_windows(inputs / "scifact.jsonl", scifact, scifact_hybrid_run(), args.scifact_queries, args.depth)
    write_windows(inputs / "dl19.jsonl", dl19, dl19 / "runs" / "bm25_top100.trec", args.dl19_queries, args.depth)

    tasks = {
        "embedding": (EMBED_SYSTEMS, inputs / "embed.jsonl", 256, EMBED_REFERENCE),
        "rerank scifact": (RERANK_SYSTEMS, inputs / "scifact.jsonl", 512, RERANK_REFERENCE),
        "rerank dl19": (RERANK_SYSTEMS, inputs / "dl19.jsonl", 512, RERANK_REFERENCE),
    }
    samples: dict[str, dict[str, list[dict]]] = {t: {s: [] for s in tasks[t][0]} for t in tasks}
    outputs = WORK / "outputs"
    outputs.mkdir(exist_ok=True)
    for round_ in range(args.rounds):
        for task, (systems, inp, max_length, _) in tasks.items():
            for name, make in systems.items():
                slug = "".join(c if c.isalnum() else "-" for c in name.lower())
                out = outputs / f"{task.replace(' ', '-')}--{slug}.json"
                result = run_system(make(inp, out, max_length))
                result["out"] = str(out)
                samples[task][name].append(result)
                print(f"round {round_ + 1} {task:15s} {name:42s} {result['items'] / result['seconds']:8.1f}/s", flush=True)

    peak = gemm_peak()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{os.cpu_count()} vCPU, {THREADS} intra-op threads everywhere",
              "command": " ".join(["scripts/bench.py"] + sys.argv[1:]), "peak_gflops": peak}
    for task, (systems, inp, max_length, reference) in tasks.items():
        items = read_jsonl(inp)
        if task == "embedding":
            lengths = token_lengths(BI_ENCODER / "tokenizer.json", items, max_length, False)
            desc = f"{len(items)} SciFact documents, {sum(lengths)} tokens (≤ {max_length} each)"
        else:
            counted = items[1:]
            lengths = token_lengths(CROSS_ENCODER / "tokenizer.json", [(w["query"], d) for w in counted for d in w["docs"]],
                                    max_length, True)
            desc = (f"{len(counted)} queries × top-{args.depth} (+1 warm-up query), {len(lengths)} pairs, "
                    f"{sum(lengths)} tokens (≤ {max_length} per pair)")
        work = flops(lengths)
        per_item = work / len(lengths)
        ref_out = Path(samples[task][reference][-1]["out"])
        systems_report = {}
        for name in systems:
            s = summarize(samples[task][name])
            s["gflops"] = s["per_s"] * per_item / 1e9
            s["precision"] = "int8" if task == "embedding" and (name == "sieve" or "int8" in name) else "fp32"
            out = Path(samples[task][name][-1]["out"])
            if task == "embedding":
                lo, mean = cosines(out, ref_out)
                s["agreement"] = f"cosine min {lo:.6f}, mean {mean:.6f}"
                s["cosine_min"] = lo
            else:
                d = max_score_diff(out, ref_out)
                s["agreement"] = f"max abs score diff {d:.2e}"
                s["max_abs_score_diff"] = d
            systems_report[name] = s
        report[task] = {"inputs": desc, "flops_per_item": per_item, "reference": reference, "systems": systems_report}

    # The CLI end to end: one process per query (model load included), DL19 windows.
    windows = read_jsonl(inputs / "dl19.jsonl")[: args.cli_queries]
    cli_ms = []
    for w in windows:
        docs = inputs / "cli-docs.jsonl"
        docs.write_text("".join(json.dumps({"id": str(i), "text": d}) + "\n" for i, d in enumerate(w["docs"])))
        start = time.perf_counter()
        subprocess.run([str(SIEVE), "rerank", "--query", w["query"], "--docs", str(docs), "--reranker", str(CROSS_ENCODER),
                        "--max-windows", "1", "--max-length", "512", "--json"], check=True, capture_output=True, env=env(), cwd=REPO)
        cli_ms.append((time.perf_counter() - start) * 1e3)
    report["cli"] = {"queries": len(cli_ms), "docs": args.depth, "p50_ms": sorted(cli_ms)[len(cli_ms) // 2], "all_ms": cli_ms}

    if not args.no_index:
        fp32 = ["--model", str(FP32_GRAPH)]
        nfcorpus = SHARED / "data" / "nfcorpus"
        report["index"] = {"SciFact": index_bench("scifact", scifact, []),
                           "NFCorpus": index_bench("nfcorpus", nfcorpus, []),
                           "SciFact, fp32 graph (no rerank states)": index_bench("scifact-fp32", scifact, fp32)}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=1))
    (args.out / "bench.md").write_text(markdown(report))
    svg(report, args.out / "bench.svg")
    print(markdown(report))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        name, inp, out, max_length = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(PEERS[name](inp, out, max_length)))
    else:
        main()
