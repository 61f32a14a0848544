#!/usr/bin/env bash
# Runs every test of the workspace (after the same set-up as the demo). Tests that need
# ../shared (real IR data sets) print why they skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked --all-targets "$@"
