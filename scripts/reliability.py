#!/usr/bin/env python3
"""sieve's reliability figures, measured with the release binary on real data, in one run:

  kills      `sieve index` rebuilding an existing index is killed with SIGKILL at --kills points
             spread over every phase (read + BM25, embed + rerank states, HNSW, checksums +
             manifest, publish): each time the index must open and answer byte-identically to the
             old one (or, when the kill came after the publication, to the new one), and no
             staging directory may survive the next build.
  disk full  the same rebuild on a small tmpfs (needs root to mount it): a clear error naming the
             problem, the old index intact and answering identically, nothing left behind.
  memory     peak RSS of `sieve index` against corpus size: SciFact repeated 1x..10x with new ids
             (vectors from a column, so that the streaming phases and the HNSW are what is
             measured), and 1x / 2x with the bundled bi-encoder and rerank states.
  bounds     a 50 MB document (index and search), a rerank window of 10,000, and a rerank request
             of 100,000 documents to `sieve serve`.

Needs python3 with numpy and pyarrow (scripts/setup-bench.sh's venv has both), a release build
(`cargo build --release`), and ../shared (SciFact). Writes docs/eval/reliability.json:

    .sieve/bench-venv/bin/python scripts/reliability.py --out docs/eval/reliability.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIEVE = REPO / "target" / "release" / "sieve"
SAMPLE = REPO / "examples" / "sample" / "corpus.parquet"
SCIFACT = REPO.parent / "shared" / "data" / "scifact" / "corpus.parquet"
WORK = REPO / ".sieve" / "reliability"
QUERIES = ["statins and cholesterol", "how does sleep affect memory", "volcanic eruptions"]
PHASES = ["read + BM25", "embed + rerank states", "HNSW", "checksums + manifest", "publish"]
TIMING_KEY = re.compile(r"(^ms|_ms|_s|seconds|millis|elapsed|timings?)$")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=REPO, **kw)


def run_measured(args: list) -> dict:
    """Runs a command to its end: exit code, wall seconds, peak RSS (MB), stdout and stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(a) for a in args], stdout=out, stderr=err, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "seconds": time.perf_counter() - start,
                "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out.read(), "stderr": err.read()}


def strip_timings(value):
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if not TIMING_KEY.search(k)}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def answers(index: Path) -> str | None:
    """What the index answers to the probe queries (plain and reranked), timings removed; None if
    it does not open."""
    out = []
    for i, q in enumerate(QUERIES):
        extra = ["--rerank"] if i == 0 else []
        done = run([SIEVE, "search", index, q, "--json"] + extra)
        if done.returncode != 0:
            return None
        out.append(strip_timings(json.loads(done.stdout)))
    return json.dumps(out, sort_keys=True)


def leftovers(index: Path) -> list[str]:
    return sorted(p.name for p in index.parent.iterdir() if p.name.startswith(f".{index.name}.sieve-"))


# ----------------------------------------------------------------------------- kills
def build_old(index: Path) -> None:
    done = run([SIEVE, "index", SAMPLE, "--out", index, "--max-length", "128"])
    if done.returncode != 0:
        raise SystemExit(f"building the old index failed:\n{done.stderr}")


def phase_durations(index: Path) -> dict[str, float]:
    done = run([SIEVE, "index", SAMPLE, "--out", index, "--progress-json"])
    if done.returncode != 0:
        raise SystemExit(f"a traced build failed:\n{done.stderr}")
    durations = {}
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event["event"] == "finish":
                durations[event["phase"]] = event["seconds"]
    missing = [p for p in PHASES if p not in durations]
    if missing:
        raise SystemExit(f"the traced build did not report phases {missing}: {done.stderr[-2000:]}")
    return durations


def kill_during(index: Path, phase: str, delay: float) -> str:
    """Starts a rebuild and SIGKILLs it `delay` s after `phase` starts: 'killed' or 'finished'."""
    proc = subprocess.Popen([str(SIEVE), "index", str(SAMPLE), "--out", str(index), "--progress-json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line).get("phase") == phase and '"start"' in line:
            if delay > 0:
                time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
            break
    proc.wait()
    return "finished"


def kills(n: int, seed: int) -> dict:
    work = WORK / "kills"
    run(["rm", "-rf", work])
    work.mkdir(parents=True)
    index, new_ref = work / "idx", work / "new"
    durations = phase_durations(new_ref)
    new_answers = answers(new_ref)
    build_old(index)
    old_answers = answers(index)
    if old_answers is None or new_answers is None or old_answers == new_answers:
        raise SystemExit("the old and new reference indexes must open and answer differently")
    rng = random.Random(seed)
    cases = []
    for k in range(n):
        phase = PHASES[k % len(PHASES)]
        delay = rng.uniform(0, durations[phase])
        outcome = kill_during(index, phase, delay)
        got = answers(index)
        state = "old" if got == old_answers else "new" if got == new_answers else "BROKEN"
        left = leftovers(index)
        cases.append({"phase": phase, "delay_ms": round(delay * 1e3, 2), "process": outcome, "index": state,
                      "leftovers": left})
        log(f"kill {k + 1:2d}/{n} in {phase:22s} after {delay * 1e3:8.1f} ms: {outcome:8s} -> {state} index, "
            f"{len(left)} leftover dir(s)")
        if state != "old":
            build_old(index)
    # A complete build afterwards removes what the killed ones left.
    done = run([SIEVE, "index", SAMPLE, "--out", index, "--max-length", "128"])
    return {"kills": n, "seed": seed, "phase_seconds": durations,
            "killed": sum(c["process"] == "killed" for c in cases),
            "old_index_answered_identically": sum(c["process"] == "killed" and c["index"] == "old" for c in cases),
            "new_index_complete": sum(c["index"] == "new" for c in cases),
            "broken": sum(c["index"] == "BROKEN" for c in cases),
            "leftovers_after_next_build": leftovers(index) if done.returncode == 0 else ["(rebuild failed)"],
            "cases": cases}


# ----------------------------------------------------------------------------- disk full
def disk_full() -> dict:
    mount = WORK / "tmpfs"
    run(["umount", mount])
    mount.mkdir(parents=True, exist_ok=True)
    index = mount / "idx"
    probe = WORK / "size-probe"
    run(["rm", "-rf", probe])
    build_old(probe)
    size_mb = sum(f.stat().st_size for f in probe.rglob("*") if f.is_file()) / 2**20
    limit_mb = int(size_mb) + 16
    done = run(["mount", "-t", "tmpfs", "-o", f"size={limit_mb}m", "tmpfs", mount])
    if done.returncode != 0:
        return {"skipped": f"could not mount a tmpfs (needs root): {done.stderr.strip()}"}
    try:
        build_old(index)
        before = answers(index)
        result = run_measured([SIEVE, "index", SCIFACT, "--out", index])
        after = answers(index)
        error = next((l for l in result["stderr"].splitlines() if l.strip()), "")
        return {"tmpfs_mb": limit_mb, "old_index_mb": round(size_mb, 1),
                "rebuild": f"SciFact ({SCIFACT.name}), needs ~117 MB",
                "exit_code": result["rc"], "seconds_to_fail": round(result["seconds"], 1),
                "error": result["stderr"].strip()[-600:], "names_the_problem": "No space left on device" in result["stderr"],
                "old_index_answers_identically": before is not None and before == after,
                "leftovers": leftovers(index), "first_error_line": error}
    finally:
        run(["umount", mount])


# ----------------------------------------------------------------------------- memory
def scaled_corpus(times: int, vectors: bool) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = WORK / "corpora" / f"scifact-x{times}{'-vectors' if vectors else ''}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    base = pq.read_table(SCIFACT, columns=["id", "title", "text"])
    rng = np.random.default_rng(7)
    writer = None
    for r in range(times):
        ids = pa.array([f"{i}-r{r}" for i in base.column("id").to_pylist()])
        cols = {"id": ids, "title": base.column("title"), "text": base.column("text")}
        if vectors:
            v = rng.standard_normal((base.num_rows, 384)).astype(np.float32)
            cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 384)
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(str(path) + ".partial", table.schema)
        writer.write_table(table, row_group_size=2048)
    writer.close()
    os.replace(str(path) + ".partial", path)
    return path


def index_with_phase_rss(args: list) -> dict:
    """Runs `sieve index ... --progress-json`, sampling the process's RSS every 20 ms: peak RSS
    per phase (MB, attributed by the phase events on stderr; short spikes can fall between
    samples) and over the whole run (exact)."""
    import threading

    proc = subprocess.Popen([str(a) for a in args] + ["--progress-json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    phase = {"name": "start-up"}
    stderr_tail: list[str] = []

    def follow() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{"):
                event = json.loads(line)
                phase["name"] = event["phase"] if event["event"] == "start" else f"after {event['phase']}"
            else:
                stderr_tail.append(line)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    stdout_chunks: list[str] = []
    out_reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True)
    out_reader.start()
    peaks: dict[str, float] = {}
    start = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            peaks[phase["name"]] = max(peaks.get(phase["name"], 0.0), rss)
        except (OSError, AttributeError):
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    reader.join(timeout=5)
    out_reader.join(timeout=5)
    # The phase figures are samples; the whole run's peak is the kernel's (ru_maxrss).
    return {"rc": proc.returncode, "seconds": seconds, "stdout": "".join(stdout_chunks),
            "stderr": "".join(stderr_tail), "phase_peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()},
            "peak_rss_mb": usage.ru_maxrss / 1024}


def memory(vector_scales: list[int], model_scales: list[int]) -> list[dict]:
    rows = []
    for times, vectors in [(t, True) for t in vector_scales] + [(t, False) for t in model_scales]:
        corpus = scaled_corpus(times, vectors)
        out = WORK / "memory-idx"
        run(["rm", "-rf", out])
        extra = ["--vector-col", "vector", "--rerank-states", "off"] if vectors else []
        r = index_with_phase_rss([SIEVE, "index", corpus, "--out", out, "--json"] + extra)
        if r["rc"] != 0:
            raise SystemExit(f"indexing {corpus} failed:\n{r['stderr'][-2000:]}")
        manifest = json.loads(r["stdout"])
        docs = manifest["counts"]["documents"]
        rows.append({"corpus": f"SciFact x{times}", "documents": docs,
                     "embeddings": "vector column (random), no rerank states" if vectors else "bundled bi-encoder + rerank states",
                     "seconds": round(r["seconds"], 1), "docs_per_s": round(docs / r["seconds"], 1),
                     "peak_rss_mb": round(r["peak_rss_mb"], 1), "phase_peak_rss_mb": r["phase_peak_rss_mb"],
                     "phases": manifest["build"]["phases"]})
        log(f"memory: {rows[-1]['corpus']:12s} {rows[-1]['embeddings']:40s} {docs:7d} docs "
            f"{r['seconds']:7.1f} s peak RSS {r['peak_rss_mb']:7.1f} MB {r['phase_peak_rss_mb']}")
    run(["rm", "-rf", WORK / "memory-idx"])
    return rows


# ----------------------------------------------------------------------------- bounds
def huge_document() -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = pq.read_table(SAMPLE)
    sentence = "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver. "
    huge = sentence * (50_000_000 // len(sentence))
    extra = pa.table({c: pa.array([v], type=base.schema.field(c).type) for c, v in
                      zip(base.column_names, ["huge-doc", "A 50 MB document", huge][: len(base.column_names)])})
    path = WORK / "huge.parquet"
    pq.write_table(pa.concat_tables([base, extra.select(base.column_names)]), path)
    index = WORK / "huge-idx"
    run(["rm", "-rf", index])
    built = run_measured([SIEVE, "index", path, "--out", index])
    searched = run_measured([SIEVE, "search", index, "statins cholesterol liver", "--rerank", "--json"])
    top = json.loads(searched["stdout"])["hits"][0]["id"] if searched["rc"] == 0 else None
    return {"document_mb": round(len(huge) / 1e6, 1),
            "index": {"exit_code": built["rc"], "seconds": round(built["seconds"], 1), "peak_rss_mb": round(built["peak_rss_mb"], 1)},
            "search_rerank": {"exit_code": searched["rc"], "seconds": round(searched["seconds"], 1),
                              "peak_rss_mb": round(searched["peak_rss_mb"], 1), "top_id": top}}


def big_window() -> dict:
    index = WORK / "scifact-idx"
    if not (index / "manifest.json").exists():
        done = run([SIEVE, "index", SCIFACT, "--out", index])
        if done.returncode != 0:
            raise SystemExit(done.stderr)
    r = run_measured([SIEVE, "search", index, "how do statins lower cholesterol", "--rerank", "--bm25-k", "10000",
                      "--dense-k", "10000", "--window", "10000", "--json"])
    out = json.loads(r["stdout"]) if r["rc"] == 0 else {}
    reranked = (out.get("rerank") or {}).get("window")
    return {"exit_code": r["rc"], "seconds": round(r["seconds"], 1), "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "window_asked": 10000, "reranked": reranked, "corpus_documents": 5183,
            "error": r["stderr"].strip()[-400:] if r["rc"] else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, str, float]:
    start = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, resp.read().decode()[:300], time.perf_counter() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()[:400], time.perf_counter() - start


def huge_request() -> dict:
    port = free_port()
    server = subprocess.Popen([str(SIEVE), "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        docs = [f"document {i} about statins and cholesterol" for i in range(100_000)]
        body = json.dumps({"query": "statins", "documents": docs}).encode()
        status, text, seconds = post(url + "/v1/rerank", body)
        short = json.dumps({"query": "statins", "documents": [f"d{i}" for i in range(100_000)]}).encode()
        short_status, short_text, short_seconds = post(url + "/v1/rerank", short)
        ok_status, _, ok_seconds = post(url + "/v1/rerank", json.dumps({"query": "statins", "documents": docs[:10]}).encode())
        usage = open(f"/proc/{server.pid}/status").read()
        rss = int(re.search(r"VmHWM:\s+(\d+)", usage).group(1)) / 1024
        return {"documents": len(docs), "body_mb": round(len(body) / 1e6, 1), "status": status, "answer": text,
                "seconds": round(seconds, 2),
                "short_documents": {"body_mb": round(len(short) / 1e6, 2), "status": short_status, "answer": short_text,
                                    "seconds": round(short_seconds, 2)},
                "then_10_documents": {"status": ok_status, "seconds": round(ok_seconds, 2)},
                "server_peak_rss_mb": round(rss, 1)}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "eval" / "reliability.json")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--vector-scales", default="1,2,5,10")
    ap.add_argument("--model-scales", default="1,2")
    ap.add_argument("--only", default="kills,disk_full,memory,bounds")
    args = ap.parse_args()
    if not SIEVE.exists():
        raise SystemExit(f"{SIEVE} is missing: cargo build --release")
    WORK.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.update({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} vCPU",
                   "command": " ".join(["scripts/reliability.py"] + sys.argv[1:])})
    if "kills" in only:
        report["kills"] = kills(args.kills, args.seed)
    if "disk_full" in only:
        report["disk_full"] = disk_full()
        log(f"disk full: {json.dumps(report['disk_full'])[:400]}")
    if "memory" in only:
        report["memory"] = memory([int(x) for x in args.vector_scales.split(",") if x],
                                  [int(x) for x in args.model_scales.split(",") if x])
    if "bounds" in only:
        report["bounds"] = {"huge_document": huge_document(), "window_10000": big_window(),
                            "rerank_request_100000_documents": huge_request()}
        log(f"bounds: {json.dumps(report['bounds'])[:600]}")
    fuzz = REPO / "docs" / "eval" / "fuzz.json"
    if fuzz.exists():
        f = json.loads(fuzz.read_text())
        report["fuzz"] = {"source": "docs/eval/fuzz.json (scripts/fuzz.sh)", "cases_per_target": f["cases_per_target"],
                          "targets": len(f["targets"]), "crashes": sum(len(t["crashes"]) for t in f["targets"]),
                          "hangs": sum(len(t["hangs"]) for t in f["targets"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
