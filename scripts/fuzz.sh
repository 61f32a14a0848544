#!/usr/bin/env bash
# Fuzzes every reader sieve exposes to untrusted input (tests/fuzz.rs): N mutated cases per
# target (default 1000), release build; prints cases, accepted, refused, crashes (goal 0), hangs
# (goal 0) and the slowest case per target, and writes the table to docs/eval/fuzz.json (or $2).
#   scripts/fuzz.sh 100000            # the long run
#   FUZZ_SEED=7 scripts/fuzz.sh 500   # another sequence of mutations
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
CASES="${1:-1000}"
REPORT="${2:-docs/eval/fuzz.json}"
mkdir -p "$(dirname "$REPORT")"
FUZZ_CASES="$CASES" FUZZ_REPORT="$PWD/$REPORT" \
    cargo test --release --locked -p sieve-cli --test fuzz -- --nocapture
echo "fuzz: report $REPORT"
