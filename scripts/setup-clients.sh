#!/usr/bin/env bash
# Installs the Python libraries the tests drive (pinned in tests/serve/): the peers' clients for
# the `sieve serve` tests (the official Cohere SDK, LanceDB, Haystack's TEI ranker, LlamaIndex's
# Cohere reranker) and the Parquet writers of tests/interop (pandas, polars, DuckDB) into
# .sieve/clients-venv. Idempotent: does nothing when the pins have not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.sieve/clients-venv
STAMP="$VENV/.pins.sha256"
PINS=$(cat tests/serve/requirements.txt tests/serve/constraints.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PINS" ] && [ -x "$VENV/bin/python" ]; then
    echo "setup-clients: client libraries already installed ($VENV)"
    exit 0
fi
echo "setup-clients: installing the peers' client libraries into $VENV (about a minute)"
# A venv cannot be moved (its scripts record its path): build it in place; the stamp, written
# last, marks it complete, so an interrupted install is redone on the next run.
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r tests/serve/requirements.txt -c tests/serve/constraints.txt
echo "$PINS" > "$STAMP"
