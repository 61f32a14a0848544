#!/usr/bin/env bash
# Runs every test of the workspace (after the same set-up as the demo), then the server's tests
# with the peers' client libraries. Tests that need
# ../shared (real IR data sets) print why they skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -d ../shared/data ]; then
    echo "test: ../shared/data not found beside the repository: the SciFact, long-document and DL19 tests"
    echo "      will pass without checking anything (each prints why with -- --nocapture)"
fi
cargo test --workspace --locked --all-targets "$@"
# `sieve serve` against the peers' own clients (Cohere SDK, LanceDB, Haystack's TEI ranker,
# LlamaIndex), on loopback ports, and `sieve index` on Parquet files written by pandas, polars,
# DuckDB and pyarrow, with the binary cargo test just built.
scripts/setup-clients.sh
SIEVE_BIN="$PWD/target/debug/sieve" .sieve/clients-venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/serve tests/interop
