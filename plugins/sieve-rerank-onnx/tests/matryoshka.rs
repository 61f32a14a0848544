//! The segmented 2D-Matryoshka engine on the toy fixture (real ONNX graphs): early exit against
//! the full graph and an independent numpy reference, cascades, batching, profiles, bad budgets
//! and bad manifests.

mod toy;

use sieve_core::{
    Budget, CascadeStep, ExitTrace, PruneBlend, RerankDoc, RerankError, RerankOutput, RerankScore,
    Reranker, sigmoid,
};
use sieve_rerank_onnx::{
    CrossEncoder, CrossEncoderConfig, Plan, PlanStep, Precision, cascade_order,
};
use toy::*;

fn exit(layer: u32, width: u32) -> Budget {
    Budget::Exit { layer, width }
}

fn parse(s: &str) -> Budget {
    Budget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

// ---------------------------------------------------------------- loading

#[test]
fn opens_with_the_manifests_settings() {
    let encoder = open_toy(CrossEncoderConfig::default());
    assert!(encoder.is_matryoshka());
    assert_eq!(encoder.max_length(), 128, "max_length from the manifest");
    assert_eq!(
        encoder.query_max_tokens(),
        32,
        "query cap from the manifest"
    );
    assert!(encoder.uses_token_type_ids());
    // The int8 files named by the manifest do not exist: fp32 is the fallback.
    assert_eq!(encoder.precision(), Some("fp32"));
    let names: Vec<String> = encoder
        .segment_paths()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["seg1.onnx", "seg2.onnx", "seg3.onnx"]);
    assert!(encoder.model_path().ends_with("matryoshka.json"));
    let description = encoder.describe();
    assert_mentions(&description, &["matryoshka", "2/4/6", "fp32", "cpu"]);
    assert_eq!(encoder.recommended_blend(), None);
    let calibration = encoder.head_calibration(4, 8).expect("l4_w8 calibration");
    assert_eq!((calibration.temperature, calibration.bias), (1.5, 0.0));

    // The manifest file itself opens the same model; max_length can only be lowered.
    let config = CrossEncoderConfig {
        max_length: Some(100),
        ..CrossEncoderConfig::default()
    };
    let lowered = open_at(&toy_dir().join("matryoshka.json"), config);
    assert_eq!(lowered.max_length(), 100);
    let config = CrossEncoderConfig {
        max_length: Some(1000),
        ..CrossEncoderConfig::default()
    };
    assert_eq!(open_toy(config).max_length(), 128);
}

#[test]
fn precision_prefers_int8_on_cpu_and_falls_back() {
    let dir = temp_toy();
    for k in 1..=3 {
        std::fs::copy(
            dir.path().join(format!("seg{k}.onnx")),
            dir.path().join(format!("seg{k}_int8.onnx")),
        )
        .expect("copy");
    }
    let auto = open_at(dir.path(), CrossEncoderConfig::default());
    assert_eq!(auto.precision(), Some("int8"));
    assert!(auto.segment_paths()[1].ends_with("seg2_int8.onnx"));
    assert_mentions(&auto.describe(), &["int8"]);

    let fp32 = CrossEncoderConfig {
        precision: Precision::Fp32,
        ..CrossEncoderConfig::default()
    };
    let explicit = open_at(dir.path(), fp32.clone());
    assert_eq!(explicit.precision(), Some("fp32"));
    assert!(explicit.segment_paths()[1].ends_with("seg2.onnx"));

    // One preferred file missing: that segment falls back.
    std::fs::remove_file(dir.path().join("seg2.onnx")).expect("rm");
    assert_eq!(open_at(dir.path(), fp32.clone()).precision(), Some("mixed"));
    // Both missing: a load error naming both files.
    std::fs::remove_file(dir.path().join("seg2_int8.onnx")).expect("rm");
    let message = load_error(dir.path(), fp32);
    assert_mentions(&message, &["segment 2", "seg2.onnx", "seg2_int8.onnx"]);
}

// ---------------------------------------------------------------- scores

#[test]
fn chained_segments_equal_the_full_graph() {
    let matryoshka = open_toy(CrossEncoderConfig::default());
    // The full graph through the single-graph loader, with the manifest's length and query cap.
    let config = CrossEncoderConfig {
        max_length: Some(128),
        query_max_tokens: 32,
        ..CrossEncoderConfig::default()
    };
    let single = open_at(&toy_dir().join("model.onnx"), config);
    assert!(!single.is_matryoshka());
    let texts = doc_texts();
    let docs = as_docs(&texts);
    let full = single.rerank(QUERY, &docs).expect("full graph");
    let chained = matryoshka.rerank(QUERY, &docs).expect("matryoshka");
    assert_eq!(
        chained.stats.plan, "6:8",
        "the default plan is the last exit, widest head"
    );
    assert!(
        full.scores.iter().any(|s| s.windows > 1),
        "long documents are windowed"
    );
    for (d, (a, b)) in chained.scores.iter().zip(&full.scores).enumerate() {
        assert!(
            (a.raw - b.raw).abs() < 1e-3,
            "document {d}: chain {} vs full {}",
            a.raw,
            b.raw
        );
        assert_eq!(a.windows, b.windows, "document {d}");
        assert_eq!(a.best_window, b.best_window, "document {d}");
    }
    // Same number of pairs; each segment ran on all of them once.
    assert_eq!(chained.stats.pairs, full.stats.pairs);
    let per_segment: Vec<(u32, u32, usize)> = chained
        .stats
        .segments
        .iter()
        .map(|s| (s.segment, s.exit_layer, s.pairs))
        .collect();
    let pairs = full.stats.pairs;
    assert_eq!(per_segment, [(1, 2, pairs), (2, 4, pairs), (3, 6, pairs)]);
    assert!(chained.stats.model_ms > 0.0 && chained.stats.batches >= 3);
}

#[test]
fn every_exit_matches_the_numpy_reference() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let text = std::fs::read_to_string(toy_dir().join("reference.json")).expect("reference");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("json");
    let query = reference["query"].as_str().expect("query");
    let refs = reference["docs"].as_array().expect("docs");
    let texts: Vec<&str> = refs
        .iter()
        .map(|d| d["text"].as_str().expect("text"))
        .collect();
    let docs: Vec<RerankDoc<'_>> = texts.iter().map(|t| RerankDoc::new("", t)).collect();
    for (doc, r) in docs.iter().zip(refs) {
        let windows = encoder.encode_windows(query, *doc).expect("encode");
        assert_eq!(windows.len(), 1);
        let ids: Vec<u32> = serde_json::from_value(r["ids"].clone()).expect("ids");
        let types: Vec<u32> = serde_json::from_value(r["type_ids"].clone()).expect("types");
        assert_eq!(windows[0].ids, ids, "pair encoding of {:?}", doc.text);
        assert_eq!(windows[0].type_ids, types);
    }
    for layer in EXITS {
        for width in WIDTHS {
            let out = encoder
                .rerank_budgeted(query, &docs, &exit(layer, width))
                .expect("exit");
            assert_eq!(out.stats.plan, format!("{layer}:{width}"));
            let calibration = encoder.head_calibration(layer, width).expect("calibrated");
            for (d, (score, r)) in out.scores.iter().zip(refs).enumerate() {
                let want = r["logits"][format!("l{layer}_w{width}")]
                    .as_f64()
                    .expect("logit") as f32;
                assert!(
                    (score.raw - want).abs() < 1e-4,
                    "exit {layer}:{width}, document {d}: {} vs numpy {want}",
                    score.raw
                );
                let expected = sigmoid(score.raw / calibration.temperature + calibration.bias);
                assert!((score.calibrated - expected).abs() < 1e-6);
                assert_eq!(out.traces[d].pruned_at, None);
            }
            // Only the segments up to the exit ran.
            let ran: Vec<u32> = out.stats.segments.iter().map(|s| s.exit_layer).collect();
            let expected: Vec<u32> = EXITS.iter().copied().filter(|&l| l <= layer).collect();
            assert_eq!(ran, expected);
        }
    }
}

#[test]
fn an_early_exit_equals_the_same_head_in_a_deeper_run() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let deep = run(&encoder, &Budget::Default);
    for trace in &deep.traces {
        let heads: Vec<(u32, u32)> = trace.exits.iter().map(|e| (e.layer, e.width)).collect();
        assert_eq!(heads, [(2, 8), (2, 4), (4, 8), (4, 4), (6, 8), (6, 4)]);
        assert_eq!(trace.pruned_at, None);
    }
    for layer in [2, 4] {
        for width in WIDTHS {
            let shallow = run(&encoder, &exit(layer, width));
            for d in 0..shallow.scores.len() {
                let want = trace_raw(&deep, d, layer, width);
                assert!(
                    close(shallow.scores[d].raw, want, 1e-5),
                    "exit {layer}:{width}, document {d}: {} vs {want}",
                    shallow.scores[d].raw
                );
                assert_eq!(shallow.traces[d].exits.len(), (layer as usize / 2) * 2);
            }
        }
    }
    // The final score is the plan's head, calibrated with that head's calibration.
    let c = encoder.head_calibration(6, 8).expect("calibration");
    for (d, s) in deep.scores.iter().enumerate() {
        assert_eq!(s.raw, trace_raw(&deep, d, 6, 8));
        assert!((s.calibrated - c.apply(s.raw)).abs() < 1e-6);
    }
}

#[test]
fn scores_do_not_depend_on_batching() {
    let default_encoder = open_toy(CrossEncoderConfig::default());
    let cascade = parse("10@2,5@4,2@6");
    let reference = run(&default_encoder, &Budget::Default);
    let cascade_reference = run(&default_encoder, &cascade);
    for (batch_tokens, max_batch) in [(1, 1), (200, 64), (300, 2)] {
        let encoder = open_toy(CrossEncoderConfig {
            batch_tokens,
            max_batch,
            ..CrossEncoderConfig::default()
        });
        let plain = run(&encoder, &Budget::Default);
        for d in 0..plain.scores.len() {
            assert!(
                close(plain.scores[d].raw, reference.scores[d].raw, 1e-5),
                "batch_tokens {batch_tokens}, max_batch {max_batch}: document {d}"
            );
        }
        if max_batch == 1 {
            assert_eq!(
                plain.stats.batches,
                3 * plain.stats.pairs,
                "one pair per call"
            );
        }
        let out = run(&encoder, &cascade);
        for d in 0..out.scores.len() {
            assert!(
                close(out.scores[d].raw, cascade_reference.scores[d].raw, 1e-5),
                "cascade, batch_tokens {batch_tokens}: document {d}"
            );
            assert_eq!(
                out.traces[d].pruned_at,
                cascade_reference.traces[d].pruned_at
            );
        }
        assert_eq!(out.stats.segments.len(), 3);
    }
    assert!(
        reference.stats.batches < 3 * reference.stats.pairs,
        "default batches share calls"
    );
}

// ---------------------------------------------------------------- cascades

/// The survivors of `candidates` by `score` (best first, ties in input order), `keep` of them,
/// returned in input order.
fn top(candidates: &[usize], keep: usize, score: impl Fn(usize) -> f32) -> Vec<usize> {
    let mut ranked = candidates.to_vec();
    ranked.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
    ranked.truncate(keep);
    ranked.sort_unstable();
    ranked
}

#[test]
fn a_cascade_keeps_exactly_the_top_survivors_and_never_recomputes() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let full = run(&encoder, &Budget::Default); // every head of every document
    let windows: Vec<usize> = full.scores.iter().map(|s| s.windows).collect();

    let budget = Budget::Cascade(vec![
        CascadeStep {
            keep: 10,
            layer: 2,
            width: None,
        },
        CascadeStep {
            keep: 5,
            layer: 4,
            width: Some(4),
        },
        CascadeStep {
            keep: 2,
            layer: 6,
            width: None,
        },
    ]);
    let out = run(&encoder, &budget);
    assert_eq!(out.stats.plan, "10@2:8,5@4:4,2@6:8");

    let step1: Vec<usize> = (0..10).collect();
    let step2 = top(&step1, 5, |d| trace_raw(&full, d, 2, 8));
    let step3 = top(&step2, 2, |d| trace_raw(&full, d, 4, 4));
    for (d, &doc_windows) in windows.iter().enumerate() {
        let (expected_pruned, layer, width) = if step3.contains(&d) {
            (None, 6, 8)
        } else if step2.contains(&d) {
            (Some(4), 4, 4)
        } else if step1.contains(&d) {
            (Some(2), 2, 8)
        } else {
            (Some(0), 0, 0)
        };
        assert_eq!(out.traces[d].pruned_at, expected_pruned, "document {d}");
        if layer == 0 {
            assert_eq!(
                out.scores[d],
                RerankScore {
                    raw: 0.0,
                    calibrated: 0.0,
                    windows: 0,
                    best_window: 0
                }
            );
            assert!(out.traces[d].exits.is_empty());
            continue;
        }
        let want = trace_raw(&full, d, layer, width);
        assert!(close(out.scores[d].raw, want, 1e-5), "document {d}");
        let c = encoder.head_calibration(layer, width).expect("calibration");
        assert!((out.scores[d].calibrated - c.apply(out.scores[d].raw)).abs() < 1e-6);
        assert_eq!(out.scores[d].windows, doc_windows);
        // Every head of every segment the document went through, shallowest first.
        let heads: Vec<u32> = out.traces[d].exits.iter().map(|e| e.layer).collect();
        let expected: Vec<u32> = EXITS
            .iter()
            .filter(|&&l| l <= layer)
            .flat_map(|&l| [l, l])
            .collect();
        assert_eq!(heads, expected, "document {d}");
        for e in &out.traces[d].exits {
            assert!(close(e.raw, trace_raw(&full, d, e.layer, e.width), 1e-5));
        }
    }

    // No recomputation: each segment ran once, on exactly the windows of its step's documents.
    let pairs = |docs: &[usize]| docs.iter().map(|&d| windows[d]).sum::<usize>();
    let per_segment: Vec<(u32, usize)> = out
        .stats
        .segments
        .iter()
        .map(|s| (s.segment, s.pairs))
        .collect();
    assert_eq!(
        per_segment,
        [(1, pairs(&step1)), (2, pairs(&step2)), (3, pairs(&step3))]
    );
    assert_eq!(out.stats.pairs, pairs(&step1));

    // The documented order: survivors, then pruned at 4, then at 2, each by score, then unscored.
    let mut expected = Vec::new();
    for group in [&step3, &step2, &step1] {
        let mut g: Vec<usize> = group
            .iter()
            .copied()
            .filter(|d| !expected.contains(d))
            .collect();
        g.sort_by(|&a, &b| {
            out.scores[b]
                .raw
                .total_cmp(&out.scores[a].raw)
                .then(a.cmp(&b))
        });
        expected.extend(g);
    }
    expected.extend([10, 11]);
    assert_eq!(cascade_order(&out), expected);
}

#[test]
fn a_blended_cascade_keeps_the_top_survivors_of_the_blend() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let texts = doc_texts();
    let docs = as_docs(&texts);
    let full = run(&encoder, &Budget::Default);
    // A first stage that disagrees with the model: it prefers the later documents.
    let first_stage: Vec<f32> = (0..docs.len()).map(|d| d as f32 * 0.5).collect();
    let budget = parse("10@2,5@4,2@6");
    let blended = |weight: f32| {
        encoder
            .rerank_blended(
                QUERY,
                &docs,
                &budget,
                PruneBlend {
                    first_stage: &first_stage,
                    weight,
                },
            )
            .expect("blended cascade")
    };
    let survivors = |out: &RerankOutput, layer: u32| -> Vec<usize> {
        (0..docs.len())
            .filter(|&d| out.traces[d].exits.iter().any(|e| e.layer == layer))
            .collect()
    };
    for weight in [0.0, 0.3, 1.0] {
        let out = blended(weight);
        let blend = PruneBlend {
            first_stage: &first_stage,
            weight,
        };
        let step1: Vec<usize> = (0..10).collect();
        let by_blend = |members: &[usize], layer: u32, keep: usize| {
            let exit: Vec<f32> = members
                .iter()
                .map(|&d| trace_raw(&full, d, layer, 8))
                .collect();
            let score = blend.scores(members, &exit);
            top(members, keep, |d| {
                score[members.iter().position(|&m| m == d).unwrap()]
            })
        };
        let step2 = by_blend(&step1, 2, 5);
        let step3 = by_blend(&step2, 4, 2);
        assert_eq!(survivors(&out, 4), step2, "weight {weight}: after layer 2");
        assert_eq!(survivors(&out, 6), step3, "weight {weight}: after layer 4");
        if weight == 0.0 {
            assert_eq!(step2, [5, 6, 7, 8, 9], "the first stage alone decides");
        }
    }
    // Weight 1 is the plain cascade; scores of the survivors are unchanged by the blend.
    let plain = run(&encoder, &budget);
    let one = blended(1.0);
    assert_eq!(survivors(&plain, 6), survivors(&one, 6));
    for d in survivors(&one, 6) {
        assert!(close(plain.scores[d].raw, one.scores[d].raw, 1e-6));
    }
    // A wrong number of first-stage scores is refused.
    let short = encoder.rerank_blended(
        QUERY,
        &docs,
        &budget,
        PruneBlend {
            first_stage: &first_stage[..3],
            weight: 0.5,
        },
    );
    assert_mentions(&invalid(short), &["first-stage scores"]);
}

#[test]
fn a_cascade_runs_intermediate_segments_and_caps_keep_at_the_candidates() {
    let encoder = open_toy(CrossEncoderConfig::default());
    // 100 > 12 documents: all enter; the second step skips exit 4 but must run segment 2.
    let out = run(&encoder, &parse("100@2,3@6:4"));
    assert_eq!(out.stats.plan, "100@2:8,3@6:4");
    let survivors: Vec<usize> = (0..12)
        .filter(|&d| out.traces[d].pruned_at.is_none())
        .collect();
    assert_eq!(survivors.len(), 3);
    let per_segment: Vec<usize> = out.stats.segments.iter().map(|s| s.pairs).collect();
    let windows = |d: usize| out.scores[d].windows;
    let survivor_pairs: usize = survivors.iter().map(|&d| windows(d)).sum();
    assert_eq!(
        per_segment,
        [out.stats.pairs, survivor_pairs, survivor_pairs]
    );
    for &d in &survivors {
        let layers: Vec<u32> = out.traces[d].exits.iter().map(|e| e.layer).collect();
        assert_eq!(
            layers,
            [2, 2, 4, 4, 6, 6],
            "the intermediate exit is traced too"
        );
        assert_eq!(out.scores[d].raw, trace_raw(&out, d, 6, 4));
    }
    // A cascade whose first step keeps everyone is the same as scoring everyone at its exit.
    let all = run(&encoder, &exit(2, 8));
    for d in 0..12 {
        assert!(close(trace_raw(&out, d, 2, 8), all.scores[d].raw, 1e-5));
    }
}

#[test]
fn cascade_order_groups_by_depth_and_keeps_input_order_on_ties() {
    let score = |raw: f32| RerankScore {
        raw,
        calibrated: sigmoid(raw),
        windows: 1,
        best_window: 0,
    };
    let trace = |pruned_at| ExitTrace {
        exits: Vec::new(),
        pruned_at,
    };
    let out = RerankOutput {
        scores: vec![
            score(0.0),
            score(5.0),
            score(1.0),
            score(9.0),
            score(1.0),
            score(0.0),
            score(2.0),
        ],
        traces: vec![
            trace(Some(0)),
            trace(Some(2)),
            trace(None),
            trace(Some(2)),
            trace(None),
            trace(Some(0)),
            trace(Some(4)),
        ],
        ..RerankOutput::default()
    };
    assert_eq!(cascade_order(&out), [2, 4, 6, 3, 1, 0, 5]);
    // Without traces (single-graph output): by score, ties in input order.
    let plain = RerankOutput {
        traces: Vec::new(),
        ..out
    };
    assert_eq!(cascade_order(&plain), [3, 1, 6, 2, 4, 0, 5]);
}

// ---------------------------------------------------------------- profiles, blend

#[test]
fn default_profiles_resolve_to_the_widest_heads() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let profiles: Vec<(String, String)> = encoder
        .profiles()
        .into_iter()
        .map(|(k, p)| (k, p.to_string()))
        .collect();
    let expected = [("balanced", "4:8"), ("fast", "2:8"), ("full", "6:8")];
    assert_eq!(
        profiles,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        encoder.resolve_budget(&Budget::Default).expect("default"),
        Plan::exit(6, 8)
    );
    let fast = run(&encoder, &Budget::Profile("fast".into()));
    assert_eq!(fast.stats.plan, "2:8");
    assert_eq!(
        fast.stats.segments.len(),
        1,
        "the fast profile stops after segment 1"
    );
}

#[test]
fn manifest_profiles_default_profile_and_blend() {
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["profiles"] = serde_json::json!({"fast": "2:4", "balanced": "6@2,3@6", "mine": "4:4"});
        m["default_profile"] = "balanced".into();
        m["blend"] = serde_json::json!({"reranker_weight": 0.6});
    });
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    assert_eq!(encoder.recommended_blend(), Some(0.6));
    let resolve = |b: &Budget| encoder.resolve_budget(b).expect("resolve").to_string();
    assert_eq!(resolve(&Budget::Profile("fast".into())), "2:4");
    assert_eq!(resolve(&Budget::Profile("mine".into())), "4:4");
    assert_eq!(
        resolve(&Budget::Profile("full".into())),
        "6:8",
        "defaults fill the rest"
    );
    assert_eq!(resolve(&Budget::Default), "6@2:8,3@6:8");
    assert_eq!(
        encoder
            .resolve_budget(&Budget::Default)
            .expect("plan")
            .steps,
        [
            PlanStep {
                keep: Some(6),
                layer: 2,
                width: 8
            },
            PlanStep {
                keep: Some(3),
                layer: 6,
                width: 8
            }
        ]
    );
    let out = run(&encoder, &Budget::Default);
    assert_eq!(out.stats.plan, "6@2:8,3@6:8");
    assert_eq!(
        out.traces.iter().filter(|t| t.pruned_at.is_none()).count(),
        3
    );
    assert_eq!(
        out.traces.iter().filter(|t| t.pruned_at == Some(0)).count(),
        6
    );
}

#[test]
fn profiles_given_in_the_config_replace_and_add_to_the_manifests() {
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["profiles"] = serde_json::json!({"fast": "2:4", "mine": "4:4"});
    });
    let config = CrossEncoderConfig {
        profiles: [
            ("fast".to_string(), "4:8".to_string()),
            ("quick".to_string(), "8@2,2@4".to_string()),
        ]
        .into(),
        default_profile: Some("quick".into()),
        ..CrossEncoderConfig::default()
    };
    let encoder = open_at(dir.path(), config);
    let resolve = |b: &Budget| encoder.resolve_budget(b).expect("resolve").to_string();
    assert_eq!(resolve(&Budget::Profile("fast".into())), "4:8", "replaced");
    assert_eq!(resolve(&Budget::Profile("mine".into())), "4:4", "kept");
    assert_eq!(
        resolve(&Budget::Default),
        "8@2:8,2@4:8",
        "the given default"
    );
    let out = run(&encoder, &Budget::Default);
    assert_eq!(out.stats.plan, "8@2:8,2@4:8");

    // A bad given profile or default is refused at load time, naming the model.
    for (profiles, default) in [
        (vec![("deep", "9:8")], None),
        (vec![("odd", "fast")], None),
        (vec![], Some("nowhere")),
    ] {
        let config = CrossEncoderConfig {
            profiles: profiles
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default_profile: default.map(str::to_string),
            ..CrossEncoderConfig::default()
        };
        let message = load_error(dir.path(), config);
        assert_mentions(&message, &["profiles given for", "matryoshka.json"]);
    }
}

#[test]
fn the_manifest_sets_how_many_windows_a_long_document_gets() {
    let texts = doc_texts();
    let docs = as_docs(&texts);
    let windows = |encoder: &CrossEncoder| -> usize {
        encoder
            .window_lengths(QUERY, &docs)
            .expect("windows")
            .iter()
            .map(Vec::len)
            .sum()
    };
    let default = windows(&open_toy(CrossEncoderConfig::default()));
    assert!(default > docs.len(), "long documents get several windows");

    let dir = temp_toy();
    edit_manifest(dir.path(), |m| m["max_windows"] = 1.into());
    let truncating = open_at(dir.path(), CrossEncoderConfig::default());
    assert_eq!(windows(&truncating), docs.len(), "one window per document");
    let overridden = open_at(
        dir.path(),
        CrossEncoderConfig {
            max_windows: Some(8),
            ..CrossEncoderConfig::default()
        },
    );
    assert_eq!(windows(&overridden), default, "the caller's setting wins");

    edit_manifest(dir.path(), |m| m["max_windows"] = 0.into());
    assert_mentions(
        &load_error(dir.path(), CrossEncoderConfig::default()),
        &["max_windows"],
    );
}

// ---------------------------------------------------------------- bad budgets, requests

#[test]
fn bad_budgets_are_invalid_and_name_what_is_available() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let texts = doc_texts();
    let docs = as_docs(&texts);
    let rerank = |b: &Budget| encoder.rerank_budgeted(QUERY, &docs, b);

    let message = invalid(rerank(&exit(3, 8)));
    assert_mentions(&message, &["layer 3", "2:8", "2:4", "4:8", "6:4"]);
    let message = invalid(rerank(&exit(4, 5)));
    assert_mentions(&message, &["4:5", "4:8", "4:4"]);
    let message = invalid(rerank(&Budget::Profile("turbo".into())));
    assert_mentions(
        &message,
        &["turbo", "fast (2:8)", "balanced (4:8)", "full (6:8)"],
    );
    let message = invalid(rerank(&Budget::Cascade(vec![
        CascadeStep {
            keep: 5,
            layer: 2,
            width: None,
        },
        CascadeStep {
            keep: 8,
            layer: 4,
            width: None,
        },
    ])));
    assert_mentions(&message, &["keep must not grow"]);
    let message = invalid(rerank(&Budget::Cascade(vec![
        CascadeStep {
            keep: 5,
            layer: 4,
            width: None,
        },
        CascadeStep {
            keep: 2,
            layer: 4,
            width: Some(4),
        },
    ])));
    assert_mentions(&message, &["layers must increase"]);
    assert_mentions(
        &invalid(rerank(&Budget::Cascade(Vec::new()))),
        &["at least one step"],
    );
    assert_mentions(&invalid(rerank(&parse("5@2,2@5"))), &["layer 5"]);
    let message = invalid(rerank(&Budget::LatencyMs(50.0)));
    assert_mentions(&message, &["sieve calibrate", "cost.json"]);
    assert_mentions(
        &invalid(encoder.rerank_budgeted("  ", &docs, &Budget::Default)),
        &["query is empty"],
    );

    // No documents: an empty output, but the plan is still checked.
    let empty = encoder
        .rerank_budgeted(QUERY, &[], &Budget::Default)
        .expect("empty");
    assert!(empty.scores.is_empty() && empty.traces.is_empty());
    assert!(matches!(
        encoder.rerank_budgeted(QUERY, &[], &exit(9, 8)),
        Err(RerankError::Invalid(_))
    ));

    // A single-graph model serves only the default budget.
    let config = CrossEncoderConfig {
        max_length: Some(128),
        ..CrossEncoderConfig::default()
    };
    let single = open_at(&toy_dir().join("model.onnx"), config);
    assert_mentions(
        &invalid(single.rerank_budgeted(QUERY, &docs, &exit(2, 8))),
        &["matryoshka.json", "single exit"],
    );
    assert_mentions(
        &invalid(single.resolve_budget(&Budget::Default)),
        &["single-graph"],
    );
    assert_eq!(
        single
            .rerank_budgeted(QUERY, &docs, &Budget::Default)
            .expect("ok")
            .scores
            .len(),
        12
    );
}

#[test]
fn a_first_segment_without_token_types_gives_the_same_scores() {
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["segments"][0]["file"] = "seg1_no_token_types.onnx".into();
    });
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    assert!(!encoder.uses_token_type_ids());
    let with = run(&open_toy(CrossEncoderConfig::default()), &Budget::Default);
    let without = run(&encoder, &Budget::Default);
    for d in 0..with.scores.len() {
        assert!(
            close(with.scores[d].raw, without.scores[d].raw, 1e-5),
            "document {d}"
        );
    }
}

// ---------------------------------------------------------------- bad manifests

#[test]
fn a_missing_segment_file_is_named() {
    let dir = temp_toy();
    std::fs::remove_file(dir.path().join("seg3.onnx")).expect("rm");
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["segment 3", "seg3.onnx", "does not exist"]);
}

#[test]
fn malformed_or_foreign_manifests_are_refused_naming_the_file() {
    type Breaker = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Breaker, Vec<&str>)> = vec![
        (
            "malformed JSON",
            Box::new(|d| std::fs::write(d.join("matryoshka.json"), "{ \"format\": ").expect("w")),
            vec!["EOF"],
        ),
        (
            "wrong format",
            Box::new(|d| edit_manifest(d, |m| m["format"] = "sieve-matryoshka-ce/9".into())),
            vec!["format", "sieve-matryoshka-ce/9", "sieve-matryoshka-ce/1"],
        ),
        (
            "missing field",
            Box::new(|d| {
                edit_manifest(d, |m| {
                    m.as_object_mut().expect("object").remove("segments");
                })
            }),
            vec!["segments"],
        ),
        (
            "exits disagree with segments",
            Box::new(|d| edit_manifest(d, |m| m["exits"][1]["layer"] = 3.into())),
            vec!["exits", "do not match"],
        ),
        (
            "segments out of order",
            Box::new(|d| edit_manifest(d, |m| m["segments"][1]["segment"] = 3.into())),
            vec!["numbered"],
        ),
        (
            "calibration of an unknown head",
            Box::new(|d| {
                edit_manifest(d, |m| {
                    m["calibration"]["heads"]["l3_w8"] = serde_json::json!({"temperature": 1.0})
                })
            }),
            vec!["l3_w8"],
        ),
        (
            "bad calibration",
            Box::new(|d| {
                edit_manifest(d, |m| {
                    m["calibration"]["heads"]["l2_w8"]["temperature"] = 0.into()
                })
            }),
            vec!["l2_w8", "temperature"],
        ),
        (
            "bad profile",
            Box::new(|d| edit_manifest(d, |m| m["profiles"] = serde_json::json!({"fast": "3:8"}))),
            vec!["profile", "fast", "layer 3"],
        ),
        (
            "unknown default profile",
            Box::new(|d| edit_manifest(d, |m| m["default_profile"] = "warp".into())),
            vec!["default_profile", "warp"],
        ),
        (
            "blend out of range",
            Box::new(|d| {
                edit_manifest(d, |m| {
                    m["blend"] = serde_json::json!({"reranker_weight": 1.5})
                })
            }),
            vec!["reranker_weight"],
        ),
        (
            "no room for documents",
            Box::new(|d| edit_manifest(d, |m| m["max_length"] = 30.into())),
            vec!["max_length 30", "no room"],
        ),
    ];
    for (what, break_it, needles) in cases {
        let dir = temp_toy();
        break_it(dir.path());
        let message = load_error(dir.path(), CrossEncoderConfig::default());
        let mut needles = needles;
        if what != "no room for documents" {
            needles.push("matryoshka.json");
        }
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {needle:?} not in {message:?}"
            );
        }
    }
}

#[test]
fn wrong_graphs_and_missing_tokenizer_are_refused() {
    // A segment graph in the wrong place: the full graph has no hidden_states_out.
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["segments"][0]["file"] = "model.onnx".into()
    });
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["model.onnx", "hidden_states_out"]);

    // Segment 1's graph as segment 2: it takes token ids, not hidden states.
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["segments"][1]["file"] = "seg1.onnx".into()
    });
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["seg1.onnx", "hidden_states"]);

    // A hidden size that does not match the graphs fails the probe run.
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| m["hidden_size"] = 16.into());
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["seg1.onnx", "hidden_size 16"]);

    // Widths that do not match the logits' columns.
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["segments"][2]["widths"] = serde_json::json!([8, 4, 2]);
        m["exits"][2]["widths"] = serde_json::json!([8, 4, 2]);
    });
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["seg3.onnx", "logits", "[1, 3]"]);

    let dir = temp_toy();
    std::fs::remove_file(dir.path().join("tokenizer.json")).expect("rm");
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["tokenizer.json", "matryoshka.json"]);
}

#[test]
fn one_instance_serves_many_threads() {
    let encoder = std::sync::Arc::new(open_toy(CrossEncoderConfig::default()));
    let reference = run(&encoder, &parse("8@2,4@4,2@6"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let encoder = encoder.clone();
            std::thread::spawn(move || run(&encoder, &parse("8@2,4@4,2@6")))
        })
        .collect();
    for handle in handles {
        let out = handle.join().expect("thread");
        assert_eq!(out.traces, reference.traces);
    }
    let _: &CrossEncoder = &encoder;
}
