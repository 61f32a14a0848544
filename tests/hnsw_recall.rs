//! The HNSW graph against brute force: recall@10 ≥ 0.95 on 12,000 clustered 384-d unit vectors
//! with the default parameters, and the dump/reload round trip keeps results identical.

mod common;

use common::clustered_unit_vectors as vectors;
use sieve_index::dense::{self, DenseIndex, HnswParams, exact_top_k};

#[test]
fn recall_at_10_is_at_least_095_against_brute_force() {
    let dim = 384;
    let all = vectors(12_200, dim, 200, 42);
    let (data, queries) = all.split_at(12_000);
    let dir = tempfile::tempdir().unwrap();
    let params = HnswParams::default();
    dense::build(dir.path(), data, &params, &mut |_| {}).unwrap();
    let index = DenseIndex::open(dir.path(), dim, data.len(), &params).unwrap();
    let flat: Vec<f32> = data.iter().flatten().copied().collect();

    let mut found = 0usize;
    for q in queries {
        let truth: Vec<u32> = exact_top_k(&flat, dim, q, 10)
            .candidates
            .iter()
            .map(|c| c.doc)
            .collect();
        let approx = index.search(q, 10).unwrap();
        found += approx
            .candidates
            .iter()
            .filter(|c| truth.contains(&c.doc))
            .count();
        // Scores are cosines of unit vectors.
        assert!(
            approx
                .candidates
                .iter()
                .all(|c| (-1.001..=1.001).contains(&c.score))
        );
    }
    let recall = found as f64 / (queries.len() * 10) as f64;
    println!(
        "HNSW recall@10 = {recall:.4} (M={}, ef_construction={}, ef_search={}, 12,000 × 384)",
        params.m, params.ef_construction, params.ef_search
    );
    assert!(recall >= 0.95, "recall@10 {recall}");

    // The exact search over the stored vectors agrees with the in-memory brute force.
    let exact = index.exact_search(&queries[0], 10).unwrap();
    let truth = exact_top_k(&flat, dim, &queries[0], 10);
    assert_eq!(exact, truth);
}

#[test]
fn bad_parameters_and_dimension_mismatch_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = vectors(10, 8, 2, 1);
    let bad = HnswParams {
        m: 300,
        ..HnswParams::default()
    };
    assert!(
        dense::build(dir.path(), &data, &bad, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("256")
    );
    dense::build(dir.path(), &data, &HnswParams::default(), &mut |_| {}).unwrap();
    let index = DenseIndex::open(dir.path(), 8, 10, &HnswParams::default()).unwrap();
    let msg = index.search(&[1.0, 0.0], 3).unwrap_err().to_string();
    assert!(msg.contains("2 dimensions"), "{msg}");
    let msg = DenseIndex::open(dir.path(), 8, 11, &HnswParams::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("10 points"), "{msg}");
}
