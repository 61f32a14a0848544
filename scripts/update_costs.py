#!/usr/bin/env python3
"""What index updates cost, measured side by side in one run on a real corpus.

    .sieve/clients-venv/bin/python scripts/update_costs.py --dataset ../shared/data/scifact \
        --out docs/eval/updates.json

1. builds the first 90% of the corpus, appends the last 10% (`sieve index --append`), and builds
   the whole corpus fresh: the append's time against the full build's;
2. serves the updated index (`sieve serve --index`), measures /search latency (hybrid, k 10) over
   the data set's test queries, deletes 100 documents (`sieve delete`) while it runs, and measures
   again once the server picked up the new generation.
The release binary is used (`cargo build --release` first). Prints a table, writes JSON.
"""

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import requests

REPO = Path(__file__).resolve().parents[1]


def sieve(binary, *args):
    done = subprocess.run([binary, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sieve {' '.join(map(str, args))} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def latencies(url, queries):
    out = []
    for q in queries:
        started = time.perf_counter()
        r = requests.post(url + "/search", json={"query": q, "k": 10}, timeout=120)
        r.raise_for_status()
        out.append(1e3 * (time.perf_counter() - started))
    return out


def summary(ms):
    ms = sorted(ms)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "mean_ms": round(statistics.mean(ms), 2), "queries": len(ms)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sieve", default=str(REPO / "target/release/sieve"))
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--share", type=float, default=0.1, help="share of the corpus appended")
    ap.add_argument("--delete", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    corpus = pq.read_table(args.dataset / "corpus.parquet")
    n = corpus.num_rows
    cut = n - int(round(n * args.share))
    qids = {line.split("\t")[0] for line in (args.dataset / f"qrels/{args.split}.tsv").read_text().splitlines()[1:]}
    queries = [json.loads(l)["text"] for l in (args.dataset / "queries.jsonl").read_text().splitlines()
               if l.strip() and json.loads(l)["_id"] in qids]
    tmp = Path(tempfile.mkdtemp(prefix="sieve-updates-"))
    head, tail, full = tmp / "head.parquet", tmp / "tail.parquet", tmp / "full.parquet"
    pq.write_table(corpus.slice(0, cut), head)
    pq.write_table(corpus.slice(cut), tail)
    pq.write_table(corpus, full)
    idx, fresh = tmp / "idx", tmp / "fresh"

    print(f"updates: {args.dataset.name}, {n} documents: build {cut}, append {n - cut}, build {n} fresh")
    built = sieve(args.sieve, "index", head, "--out", idx, "--json")
    appended = sieve(args.sieve, "index", "--append", tail, "--into", idx, "--json")
    whole = sieve(args.sieve, "index", full, "--out", fresh, "--json")

    server = subprocess.Popen([args.sieve, "serve", "--port", "0", "--index", idx], cwd=REPO,
                              stderr=subprocess.PIPE, text=True)
    log = []
    for line in server.stderr:
        log.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    else:
        raise SystemExit("sieve serve did not start:\n" + "".join(log))
    threading.Thread(target=lambda: [log.append(l) for l in server.stderr], daemon=True).start()
    try:
        latencies(url, queries[:20])  # warm-up
        before = latencies(url, queries)
        ids = corpus.column("id").to_pylist()[7::max(1, n // args.delete)][: args.delete]
        id_file = tmp / "delete.txt"
        id_file.write_text("\n".join(map(str, ids)))
        deleted = sieve(args.sieve, "delete", idx, "--ids", id_file, "--json")
        time.sleep(1.5)
        latencies(url, queries[:20])  # the first search after the delete reopens the index
        after = latencies(url, queries)
        metrics = requests.get(url + "/metrics", timeout=30).text
        reloads = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
                      if l.startswith("sieve_index_reloads_total"))
    finally:
        server.terminate()
        server.wait(timeout=120)

    report = {
        "command": "scripts/update_costs.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                       if k in ("dataset", "split", "share", "delete")),
        "documents": n,
        "build_head": {"documents": cut, "seconds": round(built["build"]["seconds"], 2),
                       "phases": built["build"]["phases"]},
        "append_tail": {"documents": n - cut, "seconds": round(appended["seconds"], 2),
                        "phases": appended["phases"], "generation": appended["generation"]},
        "full_build": {"documents": n, "seconds": round(whole["build"]["seconds"], 2),
                       "phases": whole["build"]["phases"]},
        "append_over_full_build": round(appended["seconds"] / whole["build"]["seconds"], 4),
        "delete": {"documents": deleted["deleted"], "seconds": round(deleted["seconds"], 2),
                   "phases": deleted["phases"]},
        "search_before_delete": summary(before),
        "search_after_delete": summary(after),
        "server_reloads": reloads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    rows = [("full build", n, whole["build"]["seconds"]),
            (f"build first {100 - 100 * args.share:.0f}%", cut, built["build"]["seconds"]),
            (f"append last {100 * args.share:.0f}%", n - cut, appended["seconds"]),
            (f"delete {deleted['deleted']}", deleted["deleted"], deleted["seconds"])]
    print(f"{'step':<18} {'documents':>9} {'seconds':>8}")
    for name, docs, secs in rows:
        print(f"{name:<18} {docs:>9} {secs:>8.1f}")
    print(f"append / full build: {report['append_over_full_build']:.3f}")
    print(f"/search p50 before delete {report['search_before_delete']['p50_ms']} ms, "
          f"after {report['search_after_delete']['p50_ms']} ms (server reloads: {reloads:g})")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
