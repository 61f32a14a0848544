#!/usr/bin/env bash
# Fuzzes every reader sieve exposes to untrusted input (tests/fuzz.rs): N mutated cases per
# target (default 1000; the truncated-ONNX target runs N/10, each case writes a 35 MB prefix),
# release build, the targets split into one part per core (FUZZ_PARTS, default nproc) run side by
# side; prints cases, accepted, refused, crashes (goal 0), hangs (goal 0), the slowest case and
# the seconds per target, and writes the merged table to docs/eval/fuzz.json (or $2).
#   scripts/fuzz.sh 100000            # the long run
#   FUZZ_SEED=7 scripts/fuzz.sh 500   # another sequence of mutations
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
CASES="${1:-1000}"
REPORT="${2:-docs/eval/fuzz.json}"
PARTS="${FUZZ_PARTS:-$(nproc)}"
mkdir -p "$(dirname "$REPORT")"
cargo test --release --locked -p sieve-cli --test fuzz --no-run
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
pids=()
for ((i = 0; i < PARTS; i++)); do
    FUZZ_CASES="$CASES" FUZZ_PART="$i/$PARTS" FUZZ_REPORT="$work/part-$i.json" \
        cargo test --release --locked -p sieve-cli --test fuzz -- --nocapture \
        >"$work/part-$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for ((i = 0; i < PARTS; i++)); do
    if ! wait "${pids[$i]}"; then
        failed=1
        echo "fuzz: part $i/$PARTS failed:"
        tail -n 40 "$work/part-$i.log"
    fi
done
python3 - "$work" "$PARTS" "$REPORT" "$(($(date +%s) - started))" <<'PY'
import json, sys
work, parts, report, wall = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
merged = None
for i in range(parts):
    try:
        with open(f"{work}/part-{i}.json") as f:
            part = json.load(f)
    except FileNotFoundError:
        sys.exit(f"fuzz: part {i}/{parts} wrote no report (see its log above)")
    if merged is None:
        merged = {k: v for k, v in part.items() if k not in ("targets", "part")}
        merged["parts"], merged["wall_seconds"], merged["targets"] = parts, wall, []
    merged["targets"] += part["targets"]
merged["targets"].sort(key=lambda t: t["position"])
print(f"{'target':<18} {'cases':>7} {'accepted':>9} {'refused':>8} {'crashes':>8} {'hangs':>6} {'slowest ms':>11} {'seconds':>8}")
for t in merged["targets"]:
    print(f"{t['target']:<18} {t['cases']:>7} {t['accepted']:>9} {t['refused']:>8} {len(t['crashes']):>8} "
          f"{len(t['hangs']):>6} {t['slowest_ms']:>11.1f} {t['seconds']:>8.1f}")
cases = sum(t["cases"] for t in merged["targets"])
crashes = sum(len(t["crashes"]) for t in merged["targets"])
hangs = sum(len(t["hangs"]) for t in merged["targets"])
print(f"{len(merged['targets'])} targets, {cases} cases, {crashes} crashes, {hangs} hangs, "
      f"{wall} s on {parts} parts")
with open(report, "w") as f:
    json.dump(merged, f, indent=2)
    f.write("\n")
PY
echo "fuzz: report $REPORT"
exit "$failed"
