//! The rerank stage inside the search pipeline: it reorders exactly the fused window, applies
//! `--min-score` to calibrated scores, explains itself, and a failing reranker never breaks a
//! search (the CLI reports an error; the library returns the fused order as a fallback).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use serde_json::Value;
use sieve::{
    RerankDoc, RerankError, RerankOutput, RerankSettings, Reranker, SearchRequest, Sieve,
    SieveError,
};

/// The toy lexical cross-encoder generated for the plugin's tests (query-term overlap).
fn toy_reranker() -> PathBuf {
    repo_root().join("plugins/sieve-rerank-onnx/tests/fixtures/lexical")
}

fn rerank_json(extra: &[&str]) -> Value {
    let index = sample_index().to_str().unwrap().to_string();
    let reranker = toy_reranker().to_str().unwrap().to_string();
    let mut args = vec![
        "search",
        index.as_str(),
        "how do statins lower cholesterol",
        "--rerank",
        "--reranker",
        reranker.as_str(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = run_sieve(&args);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn rerank_orders_the_window_by_model_score_and_explains() {
    let response = rerank_json(&["--window", "20", "--k", "10"]);
    let hits = response["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    let raw: Vec<f64> = hits
        .iter()
        .map(|h| h["rerank"]["raw"].as_f64().unwrap())
        .collect();
    assert!(
        raw.windows(2).all(|w| w[0] >= w[1]),
        "sorted by rerank score: {raw:?}"
    );
    for hit in hits {
        assert!(
            hit["fused"]["rank"].as_u64().unwrap() <= 20,
            "only window members are reranked"
        );
        let calibrated = hit["rerank"]["calibrated"].as_f64().unwrap();
        let expected = 1.0 / (1.0 + (-hit["rerank"]["raw"].as_f64().unwrap()).exp());
        assert!((calibrated - expected).abs() < 1e-5);
        assert_eq!(hit["score"], hit["rerank"]["raw"]);
    }
    let report = &response["rerank"];
    assert_eq!(report["window"], 20);
    assert_eq!(report["stats"]["pairs"], 20);
    assert!(response["timings"]["rerank_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn min_score_filters_on_calibrated_scores() {
    let all = rerank_json(&["--window", "30", "--k", "30"]);
    let kept = rerank_json(&["--window", "30", "--k", "30", "--min-score", "0.8"]);
    let expected = all["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["rerank"]["calibrated"].as_f64().unwrap() >= 0.8)
        .count();
    assert!(
        expected > 0 && expected < 30,
        "the threshold must split the window ({expected})"
    );
    assert_eq!(kept["hits"].as_array().unwrap().len(), expected);
    assert_eq!(kept["rerank"]["below_min_score"], 30 - expected as u64);
}

#[test]
fn a_window_smaller_than_k_is_followed_by_the_fused_order() {
    let response = rerank_json(&["--window", "3", "--k", "6"]);
    let hits = response["hits"].as_array().unwrap();
    assert!(hits[..3].iter().all(|h| !h["rerank"].is_null()));
    let tail: Vec<u64> = hits[3..]
        .iter()
        .map(|h| h["fused"]["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(tail, vec![4, 5, 6]);
}

/// tokenizers panics (`expect("Helper")`) on a `decoder` section that is not valid JSON, where it
/// should return an error (found by tests/fuzz.rs): sieve reports it as a damaged file.
#[test]
fn cli_reports_a_damaged_tokenizer_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.onnx"] {
        std::fs::copy(toy_reranker().join(file), dir.path().join(file)).unwrap();
    }
    let tokenizer = std::fs::read_to_string(toy_reranker().join("tokenizer.json")).unwrap();
    let decoder = "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":";
    assert!(
        tokenizer.contains(decoder),
        "the fixture's decoder section moved"
    );
    let damaged = tokenizer.replacen(
        decoder,
        "\"decoder\":{\"type\":\"WordPiece\",\"prefix\" ",
        1,
    );
    let damaged_file = dir.path().join("tokenizer.json");
    std::fs::write(&damaged_file, damaged).unwrap();

    let message = sieve_embed::load_tokenizer(&damaged_file, 128)
        .unwrap_err()
        .to_string();
    assert!(message.contains("the file is damaged"), "{message}");

    let index = sample_index().to_str().unwrap().to_string();
    let output = run_sieve(&[
        "search",
        &index,
        "statins",
        "--rerank",
        "--reranker",
        dir.path().to_str().unwrap(),
    ]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tokenizer.json") && stderr.contains("the file is damaged"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_reports_an_unloadable_reranker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"garbage").unwrap();
    std::fs::copy(
        toy_reranker().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let index = sample_index().to_str().unwrap().to_string();
    let output = run_sieve(&[
        "search",
        &index,
        "statins",
        "--rerank",
        "--reranker",
        dir.path().to_str().unwrap(),
    ]);
    let (_, stderr) = texts(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot load reranker") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A reranker that fails at scoring time, as a model can (out of memory, a GPU lost mid-run).
struct FailingReranker;

impl Reranker for FailingReranker {
    fn describe(&self) -> String {
        "failing".into()
    }

    fn rerank(&self, _: &str, _: &[RerankDoc<'_>]) -> Result<RerankOutput, RerankError> {
        Err(RerankError::Run("device lost".into()))
    }
}

#[test]
fn library_callers_get_the_fused_order_when_the_reranker_fails() {
    let engine = Sieve::open(sample_index())
        .unwrap()
        .with_reranker(Arc::new(FailingReranker));
    let plain = engine
        .search(&SearchRequest::new("why does bread dough rise"))
        .unwrap();
    let request = SearchRequest {
        rerank: Some(RerankSettings::default()),
        ..SearchRequest::new("why does bread dough rise")
    };
    match engine.search(&request) {
        Err(SieveError::Rerank { error, fallback }) => {
            assert!(error.to_string().contains("device lost"));
            let ids = |hits: &[sieve::Hit]| hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            assert_eq!(
                ids(&fallback.hits),
                ids(&plain.hits),
                "fallback is the fused order"
            );
            assert!(fallback.rerank.is_none());
        }
        other => panic!("expected a rerank error with a fallback, got {other:?}"),
    }
}
