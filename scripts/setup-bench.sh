#!/usr/bin/env bash
# Sets up scripts/bench.py's peers, all from package registries and local files (no model hub):
#   .sieve/bench-venv            Python peers pinned in bench/requirements.txt (onnxruntime,
#                                sentence-transformers on torch) + the tools to build the model below
#   bench/peers/fastembed        fastembed-rs, built as its own cargo package (its Cargo.lock is
#                                committed; sieve's dependency tree does not include it)
#   .sieve/bench/minilm-l6-ce    the cross-encoder every rerank peer loads (bench/make_bench_ce.py)
#   target/release/sieve(-bench) sieve's CLI and its bench driver
# Needs ../shared (all-MiniLM-L6-v2's safetensors; the data sets the bench reads). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

VENV=.sieve/bench-venv
STAMP="$VENV/.pins.sha256"
PINS=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PINS" ]; then
    echo "setup-bench: installing the Python peers into $VENV (several minutes: torch)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
    echo "$PINS" > "$STAMP"
fi

echo "setup-bench: building sieve and fastembed-rs (release)"
cargo build --release --locked -p sieve-cli -p sieve-bench
(cd bench/peers/fastembed && cargo build --release --locked)

if [ ! -f .sieve/bench/minilm-l6-ce/onnx/model.onnx ]; then
    "$VENV/bin/python" bench/make_bench_ce.py --base ../shared/models/all-MiniLM-L6-v2 --out .sieve/bench/minilm-l6-ce
fi
echo "setup-bench: ready — run $VENV/bin/python scripts/bench.py"
