#!/usr/bin/env bash
# Installs what sieve needs beside the Rust toolchain, into the repository (idempotent, fast when
# already done):
#   - ONNX Runtime 1.31.1's shared library, from the PyPI wheel `onnxruntime`, under
#     .sieve/onnxruntime/ (sieve finds it there; or set SIEVE_ORT_LIB to another copy).
# The bi-encoder model ships in models/ and the sample corpus in examples/sample/, so nothing else
# is fetched. Requires: python3 with pip, network access to PyPI on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_DIR=.sieve/onnxruntime
ORT_LIB="$ORT_DIR/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"

if [ -n "${SIEVE_ORT_LIB:-}" ] && [ -f "$SIEVE_ORT_LIB" ]; then
    echo "setup: using ONNX Runtime from SIEVE_ORT_LIB=$SIEVE_ORT_LIB"
elif [ -f "$ORT_LIB" ]; then
    echo "setup: ONNX Runtime $ORT_VERSION already installed ($ORT_LIB)"
else
    echo "setup: installing ONNX Runtime $ORT_VERSION (PyPI wheel) into $ORT_DIR"
    rm -rf "$ORT_DIR.partial"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
        --target "$ORT_DIR.partial" "onnxruntime==$ORT_VERSION"
    rm -rf "$ORT_DIR"
    mv "$ORT_DIR.partial" "$ORT_DIR"
    test -f "$ORT_LIB" || { echo "setup: $ORT_LIB missing after install" >&2; exit 1; }
fi

for f in models/all-MiniLM-L6-v2/onnx/model.onnx models/all-MiniLM-L6-v2/tokenizer.json examples/sample/corpus.parquet; do
    test -f "$f" || { echo "setup: $f is missing from the checkout" >&2; exit 1; }
done
