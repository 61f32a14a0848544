#!/usr/bin/env bash
# The main job on the bundled sample: set up, build sieve (release), index the sample corpus
# (examples/sample/corpus.parquet, 120 documents written for the project), and search it, with
# and without the rerank stage (sieve's own late-joined reranker, models/sieve-ce-minilm-l6-lj,
# reading the document states the index stores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p sieve-cli
SIEVE="${CARGO_TARGET_DIR:-target}/release/sieve"
INDEX=.sieve/demo-index

echo "== sieve index examples/sample/corpus.parquet --out $INDEX"
$SIEVE index examples/sample/corpus.parquet --out "$INDEX"

for query in "how do statins lower cholesterol" "why do coral reefs turn white" "Varroa mite"; do
    echo
    echo "== sieve search $INDEX \"$query\" --k 5"
    $SIEVE search "$INDEX" "$query" --k 5
done

echo
echo "== sieve search $INDEX \"why does bread dough rise\" --rerank --k 5 --explain   (sieve's own reranker, full depth)"
$SIEVE search "$INDEX" "why does bread dough rise" --rerank --k 5 --explain

echo
echo "== sieve search $INDEX \"why does bread dough rise\" --rerank --cascade 50@6,10@8 --k 5 --explain"
$SIEVE search "$INDEX" "why does bread dough rise" --rerank --cascade 50@6,10@8 --k 5 --explain

echo
echo "== sieve search $INDEX \"can an RNA shot rewrite my genes\" --fusion weighted:0.7 --k 3 --json"
$SIEVE search "$INDEX" "can an RNA shot rewrite my genes" --fusion weighted:0.7 --k 3 --json
