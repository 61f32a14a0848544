//! Profiles, blend, budgets and manifests of the segmented 2D-Matryoshka engine on the toy fixture
//! (real ONNX graphs): what the manifest and the config resolve to, and what is refused, naming why.

mod toy;

use sieve_core::{Budget, CascadeStep, RerankError, Reranker};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig, Plan, PlanStep};
use toy::*;

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
