//! `sieve eval` end to end: TREC runs scored against qrels, BEIR data sets (Parquet or JSONL
//! corpora) run through every stage, reranked windows and given runs, and a Matryoshka reranker's
//! exits and cascades in the report.

mod common;

use common::*;
use serde_json::Value;

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
