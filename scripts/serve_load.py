#!/usr/bin/env python3
"""Load test of `sieve serve` on loopback, bounded in time and count, stopping itself.

Starts the servers it measures (one at a time: they would share the same 2 cores), sends the
SciFact test queries with their hybrid top-K documents as Cohere v2 rerank requests from N
concurrent closed-loop clients, and samples the server's RSS every second. Phases run
interleaved in one invocation so that configurations are compared side by side:

    scripts/serve_load.py --dataset ../shared/data/scifact --run runs/scifact-test-hybrid.trec \
        --phase batched:--max-batch-requests=32 --phase single:--max-batch-requests=1 \
        --rounds 2 --seconds 60 --clients 16 --window 50 --out docs/eval/serve-batching.json

`--warmup` first sends every query once (4 clients, not measured) so that the server's document
state cache holds the workload's documents, as it would after a while in production; the cold
pass's time is reported. `--overload X` adds, after the closed-loop phases, an open-loop phase at X times the first
phase's measured throughput against a server with a small queue: 429s expected, no crash, no
other error. The JSON report and an SVG plot land beside --out.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_workload(dataset: Path, run: Path, window: int, max_queries: int):
    corpus = {}
    for d in read_jsonl(dataset / "corpus.jsonl"):
        title, text = d.get("title") or "", d.get("text") or ""
        corpus[str(d["_id"])] = f"{title}\n{text}" if title else text
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(dataset / "queries.jsonl")}
    ranked = {}
    with open(run) as f:
        for line in f:
            qid, _, doc, rank, *_ = line.split()
            ranked.setdefault(qid, []).append((int(rank), doc))
    work = []
    for qid, docs in ranked.items():
        docs.sort()
        texts = [corpus[d] for _, d in docs[:window] if d in corpus]
        if qid in queries and texts:
            work.append((queries[qid], texts))
    return work[:max_queries]


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Served:
    def __init__(self, binary: str, args: list[str]):
        self.proc = subprocess.Popen([binary, "serve", "--port", "0", *args], cwd=REPO,
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise RuntimeError("sieve serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=300)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def closed_loop(url, work, clients, seconds, max_requests, pid):
    """N clients, each sending its next request as soon as the last is answered."""
    stop_at = time.time() + seconds
    lock = threading.Lock()
    results, counter = [], [0]
    rss = []

    def client(c):
        session = requests.Session()
        i = c
        while time.time() < stop_at:
            with lock:
                if counter[0] >= max_requests:
                    return
                counter[0] += 1
            query, texts = work[i % len(work)]
            i += clients
            started = time.time()
            try:
                r = session.post(url + "/v2/rerank", json={"model": "sieve", "query": query,
                                 "documents": texts, "top_n": 10}, timeout=300)
                code = r.status_code
            except requests.RequestException:
                code = -1
            with lock:
                results.append((started, time.time() - started, code))

    def sample():
        while time.time() < stop_at:
            rss.append((time.time(), rss_mb(pid)))
            time.sleep(1.0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    sampler = threading.Thread(target=sample, daemon=True)
    began = time.time()
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarise(results, rss, time.time() - began)


def open_loop(url, work, rate, seconds, pid):
    """Requests arrive at `rate` per second whatever the server does."""
    results, rss, lock = [], [], threading.Lock()
    threads = []

    def one(i):
        query, texts = work[i % len(work)]
        started = time.time()
        try:
            code = requests.post(url + "/v2/rerank", json={"model": "sieve", "query": query,
                                 "documents": texts, "top_n": 10}, timeout=300).status_code
        except requests.RequestException:
            code = -1
        with lock:
            results.append((started, time.time() - started, code))

    began = time.time()
    i = 0
    while time.time() - began < seconds:
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        i += 1
        rss.append((time.time(), rss_mb(pid)))
        time.sleep(1.0 / rate)
    for t in threads:
        t.join()
    return summarise(results, rss, time.time() - began)


def summarise(results, rss, wall):
    ok = [lat for _, lat, code in results if code == 200]
    codes = {}
    for _, _, code in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    rss_values = [m for _, m in rss]
    warm = rss_values[len(rss_values) // 4:] or rss_values
    return {
        "requests": len(results),
        "ok": len(ok),
        "codes": codes,
        "errors_other_than_429": sum(n for c, n in codes.items() if c not in ("200", "429")),
        "seconds": round(wall, 1),
        "throughput_rps": round(len(ok) / wall, 3) if wall else 0,
        "p50_ms": round(1e3 * percentile(ok, 50), 1) if ok else None,
        "p95_ms": round(1e3 * percentile(ok, 95), 1) if ok else None,
        "p99_ms": round(1e3 * percentile(ok, 99), 1) if ok else None,
        "rss_mb_peak": round(max(rss_values), 1) if rss_values else None,
        "rss_mb_after_warmup": [round(min(warm), 1), round(max(warm), 1)] if warm else None,
        "timeline": [[round(t, 2), round(lat * 1e3, 1), code] for t, lat, code in results],
        "rss_timeline": [[round(t, 1), round(m, 1)] for t, m in rss],
    }


def svg_plot(report, path: Path):
    """Latency of every request over time per phase, and RSS, as one small SVG."""
    phases = report["phases"]
    width, height, pad = 900, 420, 50
    all_points = [(p, pt) for p in phases for pt in p["result"]["timeline"]]
    if not all_points:
        return
    t0 = min(pt[0] for _, pt in all_points)
    t1 = max(pt[0] for _, pt in all_points) or t0 + 1
    lmax = max(pt[1] for _, pt in all_points) or 1
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    names = sorted({p["name"] for p in phases})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="{pad}" y="20">sieve serve load test: latency per request (dots, left axis, max {lmax:.0f} ms); 429s as crosses</text>']
    x = lambda t: pad + (t - t0) / (t1 - t0 + 1e-9) * (width - 2 * pad)
    y = lambda v: height - pad - v / lmax * (height - 2 * pad)
    out.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>')
    out.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>')
    for p in phases:
        c = colors[names.index(p["name"]) % len(colors)]
        for t, lat, code in p["result"]["timeline"]:
            if code == 200:
                out.append(f'<circle cx="{x(t):.1f}" cy="{y(lat):.1f}" r="1.6" fill="{c}"/>')
            else:
                out.append(f'<text x="{x(t):.1f}" y="{y(lat):.1f}" fill="{c}">x</text>')
    for i, n in enumerate(names):
        out.append(f'<text x="{width - 220}" y="{40 + 16 * i}" fill="{colors[i % len(colors)]}">● {n}</text>')
    out.append(f'<text x="{pad}" y="{height - 15}">time (s), {t1 - t0:.0f} s in all</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sieve", default=str(REPO / "target/release/sieve"))
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="TREC run: the hybrid top-K per query")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--max-queries", type=int, default=300)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-requests", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--phase", action="append", required=True,
                    help="NAME:ARGS, ARGS = sieve serve options joined by commas")
    ap.add_argument("--overload", type=float, default=0.0)
    ap.add_argument("--warmup", action="store_true",
                    help="send every query once before measuring (fills the state cache)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    work = load_workload(args.dataset, args.run, args.window, args.max_queries)
    print(f"load: {len(work)} queries, {args.window} documents each, {args.clients} clients")
    phases = []
    for r in range(args.rounds):
        for spec in args.phase:
            name, _, opts = spec.partition(":")
            server_args = [o for o in opts.split(",") if o]
            server = Served(args.sieve, server_args)
            warmup = None
            if args.warmup:
                warm = closed_loop(server.url, work, 4, 3600, len(work), server.proc.pid)
                warmup = {k: warm[k] for k in ("requests", "codes", "seconds", "throughput_rps",
                                                 "p50_ms", "rss_mb_peak")}
                print(f"  {name:>12} warm-up: {warmup}")
            result = closed_loop(server.url, work, args.clients, args.seconds, args.max_requests,
                                 server.proc.pid)
            result["warmup"] = warmup
            result["server_exit_code"] = server.stop()
            phases.append({"name": name, "round": r + 1, "server_args": server_args, "result": result})
            print(f"  {name:>12} round {r + 1}: {result['throughput_rps']:.2f} req/s, p50 {result['p50_ms']} ms, "
                  f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, codes {result['codes']}, "
                  f"peak RSS {result['rss_mb_peak']} MB")
    if args.overload > 0:
        rate = args.overload * max(phases[0]["result"]["throughput_rps"], 0.05)
        name, _, opts = args.phase[0].partition(":")
        server = Served(args.sieve, [o for o in opts.split(",") if o] + ["--max-queue=8"])
        result = open_loop(server.url, work, rate, args.seconds, server.proc.pid)
        healthy = requests.get(server.url + "/health", timeout=30).status_code
        result["health_after"] = healthy
        result["server_exit_code"] = server.stop()
        phases.append({"name": f"overload {args.overload:g}x", "round": 1,
                       "server_args": [opts, "--max-queue=8"], "rate_rps": round(rate, 3), "result": result})
        print(f"  overload at {rate:.2f} req/s: codes {result['codes']}, health after {healthy}, "
              f"p50 of answered {result['p50_ms']} ms, peak RSS {result['rss_mb_peak']} MB")
    by_name = {}
    for p in phases:
        if not p["name"].startswith("overload"):
            by_name.setdefault(p["name"], []).append(p["result"]["throughput_rps"])
    report = {
        "command": "scripts/serve_load.py " + " ".join(os.sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs",
        "queries": len(work), "window": args.window, "clients": args.clients,
        "throughput_by_phase": {n: round(statistics.mean(v), 3) for n, v in by_name.items()},
        "phases": phases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    svg_plot(report, args.out.with_suffix(".svg"))
    print(f"load: report {args.out}, plot {args.out.with_suffix('.svg')}")
    print("throughput by phase (req/s):", report["throughput_by_phase"])


if __name__ == "__main__":
    main()
