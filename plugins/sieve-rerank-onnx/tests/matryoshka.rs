//! The segmented 2D-Matryoshka engine on the toy fixture (real ONNX graphs): loading, and early
//! exit against the full graph and an independent numpy reference, batching, threads. Cascades are
//! in `cascades.rs`, profiles, budgets and manifests in `manifests.rs`.

mod toy;

use sieve_core::{Budget, RerankDoc, Reranker, sigmoid};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig, Precision};
use toy::*;

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
