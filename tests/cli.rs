//! The `sieve` binary end to end on the bundled sample corpus: indexing, the three search modes,
//! both fusion methods, JSON output, and clear errors (never a panic) on bad input.

mod common;

use common::*;
use serde_json::Value;

fn search_json(args: &[&str]) -> Value {
    let index = sample_index().to_str().unwrap().to_string();
    let mut all = vec!["search", index.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    let output = run_sieve(&all);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_str(&stdout).expect("search --json prints one JSON document")
}

fn ids(response: &Value) -> Vec<String> {
    response["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

fn failure(args: &[&str]) -> String {
    let output = run_sieve(args);
    let (_, stderr) = texts(&output);
    assert!(!output.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "no panics: {stderr}");
    stderr
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

#[test]
fn eval_scores_trec_runs() {
    let dir = tempfile::tempdir().unwrap();
    let qrels = dir.path().join("qrels.tsv");
    std::fs::write(
        &qrels,
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\n",
    )
    .unwrap();
    let run = dir.path().join("run.trec");
    std::fs::write(
        &run,
        "q1 Q0 d1 1 3.0 x\nq1 Q0 d9 2 2.0 x\nq2 Q0 d8 1 1.0 x\nq2 Q0 d3 2 0.5 x\n",
    )
    .unwrap();
    let output = run_sieve(&[
        "eval",
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--metrics",
        "mrr@10,recall@1",
        "--json",
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let mean = &report[run.to_str().unwrap()]["mean"];
    assert!(
        (mean["mrr@10"].as_f64().unwrap() - 0.75).abs() < 1e-9,
        "{mean}"
    );
    assert!(
        (mean["recall@1"].as_f64().unwrap() - 0.25).abs() < 1e-9,
        "{mean}"
    );

    std::fs::write(&run, "q1 Q0 d1 one 3.0 x\n").unwrap();
    let msg = failure(&[
        "eval",
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ]);
    assert!(msg.contains("run.trec:1"), "{msg}");
}

#[test]
fn dataset_eval_scores_exactly_the_queries_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let runs = dir.path().join("runs");
    let output = run_sieve(&[
        "eval",
        "--dataset",
        repo_root().join("examples/sample").to_str().unwrap(),
        "--index-dir",
        sample_index().to_str().unwrap(),
        "--max-queries",
        "3",
        "--json",
        report_path.to_str().unwrap(),
        "--run-dir",
        runs.to_str().unwrap(),
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("hybrid"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["queries"], 3);
    for stage in report["stages"].as_array().unwrap() {
        assert_eq!(
            stage["queries"], 3,
            "means are over the 3 queries run: {stage}"
        );
        let ndcg = stage["metrics"]["ndcg@10"].as_f64().unwrap();
        assert!(ndcg > 0.5, "the sample's easy queries are found: {stage}");
    }
    assert!(report_path.with_extension("svg").is_file());
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        3,
        "one TREC run per stage"
    );
}

/// The toy lexical cross-encoder the rerank tests use (a real ONNX graph; see
/// plugins/sieve-rerank-onnx/tests/fixtures/make_fixtures.py).
fn toy_reranker() -> String {
    repo_root()
        .join("plugins/sieve-rerank-onnx/tests/fixtures/lexical")
        .to_str()
        .unwrap()
        .to_string()
}

fn run_lines(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p[0].to_string(), p[2].to_string())
        })
        .collect()
}

#[test]
fn eval_reranks_exactly_the_fused_window_and_a_given_run_alike() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let sample = repo_root().join("examples/sample");
    let reranker = toy_reranker();
    let eval = |extra: &[&str], report: &std::path::Path| {
        let mut args = vec![
            "eval",
            "--dataset",
            sample.to_str().unwrap(),
            "--index-dir",
            sample_index().to_str().unwrap(),
            "--max-queries",
            "6",
            "--reranker",
            reranker.as_str(),
            "--window",
            "5",
            "--blend",
            "0.5",
            "--json",
            report.to_str().unwrap(),
            "--run-dir",
            runs.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = run_sieve(&args);
        let (stdout, stderr) = texts(&output);
        assert!(output.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"));
        (
            stdout,
            serde_json::from_slice::<Value>(&std::fs::read(report).unwrap()).unwrap(),
        )
    };
    let (stdout, own) = eval(&["--stages", "hybrid,rerank"], &dir.path().join("own.json"));
    let report = &own;
    assert!(stdout.contains("rerank default"), "{stdout}");
    let names: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["hybrid", "rerank default", "rerank default + blend 0.50"]
    );
    let rerank = &report["stages"][1];
    assert!(rerank["rerank_latency"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(
        rerank["latency"]["mean_ms"].as_f64().unwrap()
            >= rerank["rerank_latency"]["mean_ms"].as_f64().unwrap(),
        "end-to-end latency includes the first stage"
    );

    // Per query, the reranked run holds the same documents as the hybrid run: the window is
    // permuted, the rest keeps its place.
    let hybrid = run_lines(&runs.join("sample-test-hybrid.trec"));
    let reranked = run_lines(&runs.join("sample-test-rerank_default.trec"));
    assert_eq!(hybrid.len(), reranked.len());
    let by_query = |lines: &[(String, String)]| {
        let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (q, d) in lines {
            map.entry(q.clone()).or_default().push(d.clone());
        }
        map
    };
    let (h, r) = (by_query(&hybrid), by_query(&reranked));
    assert_eq!(h.len(), 6);
    for (q, docs) in &h {
        let mut window_h = docs[..5].to_vec();
        let mut window_r = r[q][..5].to_vec();
        window_h.sort();
        window_r.sort();
        assert_eq!(window_h, window_r, "query {q}: same window");
        assert_eq!(docs[5..], r[q][5..], "query {q}: the rest in fused order");
    }

    // Reranking the hybrid run file given from outside gives the very same rerank run.
    let given = runs.join("given-hybrid.trec");
    std::fs::copy(runs.join("sample-test-hybrid.trec"), &given).unwrap();
    let (_, report) = eval(
        &["--rerank-run", given.to_str().unwrap()],
        &dir.path().join("given.json"),
    );
    let stages = report["stages"].as_array().unwrap();
    assert!(stages[0]["stage"].as_str().unwrap().starts_with("run "));
    assert_eq!(
        stages[0]["metrics"]["ndcg@10"], own["stages"][0]["metrics"]["ndcg@10"],
        "the given run is scored as is"
    );
    // The window is reranked identically. (Beyond it, the two runs may order exact score ties
    // differently: sieve's fused order vs trec_eval's doc-id tie-break of the run file.)
    let again = by_query(&run_lines(&runs.join("sample-test-rerank_default.trec")));
    for (q, docs) in &r {
        assert_eq!(docs[..5], again[q][..5], "query {q}: same window order");
    }
}

#[test]
fn eval_reads_a_beir_corpus_jsonl_and_names_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("jsonl-sample");
    std::fs::create_dir_all(dataset.join("qrels")).unwrap();
    let sample = repo_root().join("examples/sample");
    std::fs::copy(sample.join("queries.jsonl"), dataset.join("queries.jsonl")).unwrap();
    std::fs::copy(
        sample.join("qrels/test.tsv"),
        dataset.join("qrels/test.tsv"),
    )
    .unwrap();
    // The sample corpus as BEIR JSONL.
    let mut jsonl = String::new();
    let mapping = sieve_index::ColumnMapping {
        title: Some("title".into()),
        ..Default::default()
    };
    sieve_index::ingest::read_documents(&[sample_corpus()], &mapping, 64, &mut |_, docs| {
        for d in docs {
            jsonl.push_str(
                &serde_json::json!({"_id": d.id, "title": d.title, "text": d.text}).to_string(),
            );
            jsonl.push('\n');
        }
        Ok(())
    })
    .unwrap();
    std::fs::write(dataset.join("corpus.jsonl"), &jsonl).unwrap();
    let index = dir.path().join("index");
    let output = sieve()
        .current_dir(dir.path())
        .args([
            "eval",
            "--dataset",
            dataset.to_str().unwrap(),
            "--index-dir",
            index.to_str().unwrap(),
            "--stages",
            "bm25",
            "--max-queries",
            "4",
            "--json",
            dir.path().join("r.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("converted"), "{stderr}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(index.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["counts"]["documents"], 120);

    // A malformed line is named; nothing half-written is left behind.
    std::fs::write(
        dataset.join("corpus.jsonl"),
        format!("{jsonl}{{\"_id\": \"x\", \"text\": \n"),
    )
    .unwrap();
    let output = sieve()
        .current_dir(dir.path())
        .args([
            "eval",
            "--dataset",
            dataset.to_str().unwrap(),
            "--index-dir",
            dir.path().join("index2").to_str().unwrap(),
            "--stages",
            "bm25",
        ])
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("corpus.jsonl") && stderr.contains("row 121"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(!dir.path().join("index2").exists());
}

fn toy_matryoshka() -> String {
    repo_root()
        .join("plugins/sieve-rerank-onnx/tests/fixtures/matryoshka")
        .to_str()
        .unwrap()
        .to_string()
}

/// `sieve search` on the sample with the toy Matryoshka model: the 12 fused best under a cascade.
fn cascade_search(model: &str, cascade: &str, blend: &str) -> Value {
    search_json(&[
        "why does bread dough rise",
        "--rerank",
        "--reranker",
        model,
        "--window",
        "12",
        "--cascade",
        cascade,
        "--blend",
        blend,
        "-k",
        "12",
    ])
}

#[test]
fn search_runs_a_cascade_and_explains_every_exit() {
    let model = toy_matryoshka();
    let response = cascade_search(&model, "12@2,6@4,3@6", "off");
    let stats = &response["rerank"]["stats"];
    assert_eq!(stats["plan"], "12@2:8,6@4:8,3@6:8");
    let segments = stats["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3, "{stats}");
    let survivors: Vec<u64> = segments
        .iter()
        .map(|s| s["pairs"].as_u64().unwrap())
        .collect();
    assert!(survivors[0] >= 12 && survivors[1] < survivors[0] && survivors[2] < survivors[1]);
    let hits = response["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 12);
    let reached_order: Vec<u64> = hits
        .iter()
        .map(|h| h["fused"]["rank"].as_u64().unwrap())
        .collect();
    // The first three reached layer 6, the next three were pruned after 4, the rest after 2.
    let reached: Vec<usize> = hits
        .iter()
        .map(|h| h["exits"]["exits"].as_array().unwrap().len())
        .collect();
    assert!(reached[..3].iter().all(|&n| n == 6), "{reached:?}");
    assert!(reached[3..6].iter().all(|&n| n == 4), "{reached:?}");
    assert!(reached[6..].iter().all(|&n| n == 2), "{reached:?}");
    assert_eq!(hits[4]["exits"]["pruned_at"], 4);
    assert_eq!(hits[8]["exits"]["pruned_at"], 2);
    assert!(hits[0]["exits"]["pruned_at"].is_null());

    // With a blend, the cascade prunes on it: at weight 0 the survivors are the fused top 3 and
    // the final order is the fused order, whatever the exits say.
    let response = cascade_search(&model, "12@2,3@6", "0");
    let hits = response["hits"].as_array().unwrap();
    let fused_ranks: Vec<u64> = hits
        .iter()
        .map(|h| h["fused"]["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(fused_ranks, (1..=12).collect::<Vec<u64>>());
    assert!(hits[..3].iter().all(|h| h["exits"]["pruned_at"].is_null()));
    assert!(hits[3..].iter().all(|h| h["exits"]["pruned_at"] == 2));
    assert_ne!(
        reached_order, fused_ranks,
        "the pure cascade's order is the model's, not the fused one"
    );

    // Profiles from a file replace or add to the manifest's; a bad file is named.
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.json");
    std::fs::write(
        &profiles,
        r#"{"profiles": {"quick": "10@2,3@4"}, "default_profile": "quick"}"#,
    )
    .unwrap();
    for budget in [&[][..], &["--budget", "quick"][..]] {
        let mut args = vec![
            "bread",
            "--rerank",
            "--reranker",
            model.as_str(),
            "--profiles",
            profiles.to_str().unwrap(),
        ];
        args.extend_from_slice(budget);
        let response = search_json(&args);
        assert_eq!(response["rerank"]["stats"]["plan"], "10@2:8,3@4:8");
    }
    let index = sample_index().to_str().unwrap().to_string();
    for (content, needle) in [
        ("{not json", "profiles.json"),
        (r#"{"profiles": {"deep": "9:8"}}"#, "profiles given for"),
        (r#"{"profile": {"deep": "2:8"}}"#, "profile"),
        ("{}", "neither"),
    ] {
        std::fs::write(&profiles, content).unwrap();
        let stderr = failure(&[
            "search",
            index.as_str(),
            "bread",
            "--rerank",
            "--reranker",
            model.as_str(),
            "--profiles",
            profiles.to_str().unwrap(),
        ]);
        assert!(stderr.contains(needle), "{content}: {stderr}");
    }

    // Named profiles and explicit exits run too; a bad exit is named.
    for budget in [["--budget", "fast"], ["--exit", "4:4"]] {
        let response = search_json(&[
            "bread",
            "--rerank",
            "--reranker",
            model.as_str(),
            budget[0],
            budget[1],
        ]);
        assert!(response["rerank"]["stats"]["plan"].is_string());
    }
    let stderr = failure(&[
        "search",
        index.as_str(),
        "bread",
        "--rerank",
        "--reranker",
        model.as_str(),
        "--exit",
        "3:8",
    ]);
    assert!(stderr.contains("3") && stderr.contains("exit"), "{stderr}");
    let stderr = failure(&[
        "search",
        index.as_str(),
        "bread",
        "--rerank",
        "--reranker",
        model.as_str(),
        "--exit",
        "4:4",
        "--cascade",
        "10@2,5@6",
    ]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn calibrate_measures_a_cost_table_and_latency_budgets_use_it() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the toy model, so the cost table is written beside it.
    let model = dir.path().join("toy");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(toy_matryoshka()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let model = model.to_str().unwrap().to_string();
    let index = sample_index().to_str().unwrap().to_string();
    // No cost table yet: a latency budget says what to do.
    let stderr = failure(&[
        "search",
        index.as_str(),
        "bread",
        "--rerank",
        "--reranker",
        model.as_str(),
        "--latency-ms",
        "50",
    ]);
    assert!(stderr.contains("sieve calibrate"), "{stderr}");

    let report = dir.path().join("check.json");
    let output = run_sieve(&[
        "calibrate",
        "--reranker",
        model.as_str(),
        "--repetitions",
        "2",
        "--check",
        "3",
        "--window",
        "20",
        "--json",
        report.to_str().unwrap(),
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("segment"), "{stdout}");
    assert!(std::path::Path::new(&model).join("cost.json").is_file());
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["budget"] == "6:8"), "{report}");
    for row in rows {
        let budget = row["budget"].as_str().unwrap();
        if !budget.ends_with("ms") {
            assert!(row["predicted_ms"].as_f64().unwrap() > 0.0, "{row}");
            assert!(row["measured_ms_median"].as_f64().unwrap() > 0.0, "{row}");
        } else {
            assert!(row["plan"].is_string(), "{row}");
        }
    }
    assert!(
        rows.iter()
            .filter(|r| r["budget"].as_str().unwrap().ends_with("ms"))
            .count()
            >= 3
    );

    // With the table, a generous latency budget runs the deepest plan.
    let response = search_json(&[
        "bread",
        "--rerank",
        "--reranker",
        model.as_str(),
        "--window",
        "10",
        "--latency-ms",
        "10000",
    ]);
    let plan = response["rerank"]["stats"]["plan"].as_str().unwrap();
    assert!(plan.ends_with("6:8"), "{plan}");
}

#[test]
fn eval_reports_every_exit_and_cascades_of_a_matryoshka_reranker() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("m.json");
    let model = toy_matryoshka();
    let output = run_sieve(&[
        "eval",
        "--dataset",
        repo_root().join("examples/sample").to_str().unwrap(),
        "--index-dir",
        sample_index().to_str().unwrap(),
        "--max-queries",
        "5",
        "--stages",
        "rerank",
        "--reranker",
        model.as_str(),
        "--window",
        "10",
        "--budget",
        "full",
        "--budget",
        "10@2,4@6",
        "--every-exit",
        "--blend",
        "off",
        "--json",
        report_path.to_str().unwrap(),
    ]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    let row = |name: &str| {
        stages
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {stdout}"))
    };
    let full = row("rerank full");
    let deepest = row("exit 6:8 (in full)");
    assert_eq!(
        full["metrics"]["ndcg@10"], deepest["metrics"]["ndcg@10"],
        "the full profile is the 6:8 head"
    );
    let shallow = row("exit 2:8 (in full)");
    assert!(
        shallow["rerank_latency"]["mean_ms"].as_f64().unwrap()
            <= deepest["rerank_latency"]["mean_ms"].as_f64().unwrap()
    );
    for head in ["2:4", "4:8", "4:4", "6:4"] {
        row(&format!("exit {head} (in full)"));
    }
    let cascade = row("rerank 10@2,4@6");
    assert_eq!(cascade["plan"], "10@2:8,4@6:8");
    assert_eq!(full["plan"], "6:8");
    assert_eq!(shallow["head_of_pass"], true);
    assert!(
        !stages.iter().any(|s| s["stage"] == "hybrid"),
        "hybrid ran only to feed the rerank stage"
    );

    // The comparison: every row, speed-ups against the full-depth pass, a Pareto front.
    let comparison = report["comparison"].as_array().unwrap();
    assert_eq!(comparison.len(), stages.len());
    let compared = |name: &str| comparison.iter().find(|r| r["stage"] == name).unwrap();
    assert_eq!(compared("rerank full")["speedup"].as_f64(), Some(1.0));
    let speedup = compared("rerank 10@2,4@6")["speedup"].as_f64().unwrap();
    let expected = full["rerank_latency"]["mean_ms"].as_f64().unwrap()
        / cascade["rerank_latency"]["mean_ms"].as_f64().unwrap();
    assert!((speedup - expected).abs() < 1e-9, "{speedup} vs {expected}");
    assert!(
        report["candidates"].is_null() && compared("rerank full")["gain"].is_null(),
        "no gain without the candidates' own row"
    );
    assert!(comparison.iter().any(|r| r["pareto"] == true));
    assert!(
        stdout.contains("Pareto front") && stdout.contains("speed-up"),
        "{stdout}"
    );
}

#[test]
fn the_bundled_reranker_runs_by_default_on_the_sample() {
    // No --reranker: sieve's own model from models/ (it ships with the repository).
    let response = search_json(&[
        "why does bread dough rise",
        "--rerank",
        "--window",
        "20",
        "-k",
        "5",
    ]);
    let rerank = &response["rerank"];
    assert!(
        rerank["model"]
            .as_str()
            .unwrap()
            .contains("sieve-ce-minilm-l6-lj"),
        "{rerank}"
    );
    // Towers, block 7, block 8; the sample index stores the document states (`sieve index`
    // does by default for the bundled late-joined reranker), so the document tower never runs.
    let segments = rerank["stats"]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3, "{rerank}");
    assert_eq!(
        segments[0]["pairs"], 0,
        "states come from the index: {rerank}"
    );
    assert_eq!(segments[1]["pairs"], 20);
    assert!(rerank["blend"].is_number(), "{rerank}");
    let hits = response["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 5);
    for hit in hits {
        let p = hit["rerank"]["calibrated"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{hit}");
        // exits 6 (the towers), 7 and 8, three widths each
        assert_eq!(hit["exits"]["exits"].as_array().unwrap().len(), 9);
    }
    // The cheapest profile is the towers' cosine: no joint block runs.
    let fast = search_json(&["bread", "--rerank", "--budget", "fast", "--window", "10"]);
    let segments = fast["rerank"]["stats"]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{fast}");
    assert_eq!(segments[0]["exit_layer"], 6);
    // Without stored states (another index, built with --rerank-states off) the scores are the
    // same: the reranker computes the states itself.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let output = run_sieve(&[
        "index",
        sample_corpus().to_str().unwrap(),
        "--out",
        plain.to_str().unwrap(),
        "--rerank-states",
        "off",
    ]);
    assert!(output.status.success(), "{}", texts(&output).1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["rerank_states"].is_null());
    let args = [
        "why does bread dough rise",
        "--rerank",
        "--window",
        "20",
        "-k",
        "5",
        "--json",
    ];
    let mut all = vec!["search", plain.to_str().unwrap()];
    all.extend_from_slice(&args);
    let output = run_sieve(&all);
    assert!(output.status.success(), "{}", texts(&output).1);
    let computed: serde_json::Value = serde_json::from_str(&texts(&output).0).unwrap();
    assert_eq!(computed["rerank"]["stats"]["segments"][0]["pairs"], 20);
    let scores = |r: &serde_json::Value| -> Vec<(String, f64)> {
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["id"].as_str().unwrap().to_string(),
                    h["rerank"]["raw"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(scores(&computed), scores(&response));
}
