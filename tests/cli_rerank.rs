//! `sieve search --rerank` and `sieve calibrate` end to end on the bundled sample: cascades over a
//! toy Matryoshka reranker with every exit explained, cost tables and latency budgets, and the
//! bundled late-joined reranker as the default.

mod common;

use common::*;
use serde_json::Value;

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
