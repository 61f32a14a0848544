//! The `sieve` binary end to end on the bundled sample corpus: indexing, the three search modes,
//! both fusion methods, JSON output, and clear errors (never a panic) on bad input.

mod common;

use common::*;
use serde_json::Value;

fn ids(response: &Value) -> Vec<String> {
    response["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn manifest_records_what_was_built() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(sample_index().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["counts"]["documents"], 120);
    assert_eq!(manifest["counts"]["vector_dim"], 384);
    assert_eq!(
        manifest["source"]["columns"]["title"], "title",
        "title column detected"
    );
    assert_eq!(
        manifest["models"]["embedder"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(manifest["analyzer"]["stemmer"], "english");
    assert_eq!(manifest["dense"]["hnsw"]["m"], 16);
    // The bundled reranker is late-joined: its document states are stored, 64 bytes a token.
    let states = &manifest["rerank_states"];
    assert_eq!(states["bytes_per_token"], 64, "{manifest}");
    assert_eq!(states["rank"], 60);
    assert!(states["tokens"].as_u64().unwrap() > 120 * 50);
}

#[test]
fn hybrid_search_finds_the_answer_and_explains_stages() {
    let index = sample_index().to_str().unwrap().to_string();
    let output = run_sieve(&[
        "search",
        &index,
        "how do statins lower cholesterol",
        "--k",
        "5",
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    let first_rows: Vec<&str> = stdout.lines().skip(2).take(3).collect();
    assert!(
        first_rows.iter().any(|l| l.contains("doc-001")),
        "statin doc in the top 3:\n{stdout}"
    );
    assert!(stdout.lines().next().unwrap().contains("bm25 rank/score"));

    let response = search_json(&["how do statins lower cholesterol", "--k", "5"]);
    assert_eq!(response["mode"], "hybrid");
    assert_eq!(response["hits"].as_array().unwrap().len(), 5);
    for key in [
        "bm25_ms",
        "dense_ms",
        "embed_ms",
        "fusion_ms",
        "fetch_ms",
        "total_ms",
    ] {
        assert!(response["timings"][key].as_f64().unwrap() >= 0.0, "{key}");
    }
    // RRF arithmetic end to end: fused = Σ 1/(60 + rank).
    for hit in response["hits"].as_array().unwrap() {
        let part = |stage: &str| {
            hit[stage]["rank"]
                .as_f64()
                .map(|r| 1.0 / (60.0 + r))
                .unwrap_or(0.0)
        };
        let fused = hit["score"].as_f64().unwrap();
        assert!((fused - part("bm25") - part("dense")).abs() < 1e-5, "{hit}");
    }
}

#[test]
fn paraphrased_queries_are_found_by_dense_retrieval() {
    // "reefs turn white" never says "bleaching"; BM25 alone ranks the answer low.
    let dense = search_json(&[
        "why do coral reefs turn white",
        "--mode",
        "dense",
        "--k",
        "3",
    ]);
    assert_eq!(dense["mode"], "dense");
    assert!(dense["hits"][0]["bm25"].is_null());
    assert!(dense["hits"][0]["dense"]["score"].as_f64().unwrap() > 0.3);
    let top = ids(&dense);
    let hybrid = ids(&search_json(&[
        "why do coral reefs turn white",
        "--k",
        "10",
    ]));
    assert!(
        hybrid.contains(&top[0]),
        "hybrid keeps the dense winner in its top 10"
    );
}

#[test]
fn weighted_fusion_interpolates_between_the_two_retrievers() {
    let q = "caffeine and sleep";
    let bm25 = ids(&search_json(&[q, "--mode", "bm25", "--k", "5"]));
    let dense = ids(&search_json(&[q, "--mode", "dense", "--k", "5"]));
    assert_eq!(
        ids(&search_json(&[q, "--fusion", "weighted:0", "--k", "5"])),
        bm25
    );
    assert_eq!(
        ids(&search_json(&[q, "--fusion", "weighted:1", "--k", "5"])),
        dense
    );
    let mixed = search_json(&[q, "--fusion", "weighted:0.7", "--k", "5"]);
    assert!(
        mixed["fusion"]
            .as_str()
            .unwrap()
            .starts_with("weighted(0.3")
    );
}

#[test]
fn bad_requests_fail_clearly() {
    let index = sample_index().to_str().unwrap().to_string();
    assert!(failure(&["search", &index, "   "]).contains("query is empty"));
    assert!(failure(&["search", &index, "x", "--k", "0"]).contains("k must be at least 1"));
    assert!(failure(&["search", &index, "x", "--fusion", "max"]).contains("unknown method"));
    assert!(failure(&["search", "/nonexistent/idx", "x"]).contains("not a sieve index"));
}

#[test]
fn bad_inputs_to_index_fail_clearly_and_keep_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let corpus = sample_corpus();
    let corpus_s = corpus.to_str().unwrap();

    let msg = failure(&["index", "/nonexistent/corpus.parquet", "--out", out_s]);
    assert!(msg.contains("/nonexistent/corpus.parquet"), "{msg}");
    let msg = failure(&["index", corpus_s, "--out", out_s, "--text-col", "body"]);
    assert!(
        msg.contains("`body` not found") && msg.contains("id, title, text"),
        "{msg}"
    );
    let msg = failure(&[
        "index",
        corpus_s,
        "--out",
        out_s,
        "--model",
        "/nonexistent/model",
    ]);
    assert!(msg.contains("model not found"), "{msg}");

    // A corrupt model file is reported, not a crash.
    let bad_model = dir.path().join("bad-model");
    std::fs::create_dir_all(&bad_model).unwrap();
    std::fs::write(bad_model.join("model.onnx"), b"not an onnx graph").unwrap();
    std::fs::copy(
        embedder_model().join("tokenizer.json"),
        bad_model.join("tokenizer.json"),
    )
    .unwrap();
    let msg = failure(&[
        "index",
        corpus_s,
        "--out",
        out_s,
        "--model",
        bad_model.to_str().unwrap(),
    ]);
    assert!(
        msg.contains("could not load ONNX model") && msg.contains("model.onnx"),
        "{msg}"
    );
    assert!(!out.exists(), "failed builds leave nothing behind");

    // An existing directory that is not an index is never overwritten.
    let precious = dir.path().join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("thesis.txt"), b"years of work").unwrap();
    let msg = failure(&["index", corpus_s, "--out", precious.to_str().unwrap()]);
    assert!(
        msg.contains("not a sieve index") && msg.contains("refusing"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(precious.join("thesis.txt")).unwrap(),
        b"years of work"
    );
}

#[test]
fn huge_documents_are_indexed_and_searchable_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.parquet");
    let mut body = "filler words about nothing in particular. ".repeat(40_000);
    body.push_str("The final sentence mentions a zygomorphic orchid.");
    let batch = string_batch(&[
        ("id", vec![Some("huge".into()), Some("small".into())]),
        (
            "text",
            vec![Some(body), Some("a short note about orchids".into())],
        ),
    ]);
    write_parquet(&file, &[batch], 10);
    let out = dir.path().join("idx");
    let output = run_sieve(&[
        "index",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    let manifest: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(manifest["counts"]["documents"], 2);

    let output = run_sieve(&[
        "search",
        out.to_str().unwrap(),
        "zygomorphic",
        "--mode",
        "bm25",
        "--json",
    ]);
    let response: Value = serde_json::from_str(&texts(&output).0).unwrap();
    assert_eq!(response["hits"][0]["id"], "huge");
}
