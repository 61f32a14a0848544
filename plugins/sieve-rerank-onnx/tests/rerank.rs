//! Behaviour of the ONNX cross-encoder on the toy lexical fixtures: pair encoding and truncation,
//! logit layouts and calibration, long-document windows, batching invariance.

mod common;

use common::*;
use sieve_core::{RerankDoc, RerankError, RerankOutput, Reranker, sigmoid};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig, WindowAggregation, plan_windows};

fn doc(text: &str) -> RerankDoc<'_> {
    RerankDoc::new("", text)
}

fn rerank(encoder: &CrossEncoder, query: &str, texts: &[&str]) -> RerankOutput {
    let docs: Vec<RerankDoc<'_>> = texts.iter().map(|t| doc(t)).collect();
    let out = encoder.rerank(query, &docs).expect("rerank");
    assert_eq!(out.scores.len(), texts.len(), "one score per document");
    out
}

const STATINS: &str = "how do statins lower cholesterol";
const DOCS: [&str; 5] = [
    "Statins lower cholesterol by blocking an enzyme the liver uses to make it.",
    "The weather in Paris is mild in spring, with frequent light rain.",
    "Cholesterol is carried in the blood by lipoproteins.",
    "",
    "A recipe for bread: flour, water, salt and yeast, kneaded and left to rise overnight.",
];

// ---------------------------------------------------------------- pair encoding, truncation

#[test]
fn short_pairs_match_the_tokenizers_own_pair_encoding() {
    let encoder = open(&lexical_dir(), CrossEncoderConfig::default());
    let reference = reference_tokenizer();
    for (title, text) in [
        ("", DOCS[0]),
        ("Statins", "They lower LDL cholesterol."),
        ("", ""),
    ] {
        let windows = encoder
            .encode_windows(STATINS, RerankDoc::new(title, text))
            .expect("encode");
        assert_eq!(windows.len(), 1, "a short document is one window");
        let second = if title.is_empty() {
            text.to_string()
        } else {
            format!("{title} {text}")
        };
        let expected = reference
            .encode((STATINS, second.as_str()), true)
            .expect("reference encoding");
        assert_eq!(
            windows[0].ids,
            expected.get_ids(),
            "ids for {title:?}/{text:?}"
        );
        assert_eq!(windows[0].type_ids, expected.get_type_ids());
    }

    // The structure is [CLS] q [SEP] d [SEP] with token types 0 then 1.
    let w = &encoder
        .encode_windows(STATINS, doc(DOCS[0]))
        .expect("encode")[0];
    let q = reference.encode(STATINS, false).expect("q");
    let d = reference.encode(DOCS[0], false).expect("d");
    let (cls, sep) = (101, 102);
    let mut expected = vec![cls];
    expected.extend_from_slice(q.get_ids());
    expected.push(sep);
    expected.extend_from_slice(d.get_ids());
    expected.push(sep);
    assert_eq!(w.ids, expected);
    let query_part = q.len() + 2;
    assert!(w.type_ids[..query_part].iter().all(|&t| t == 0));
    assert!(w.type_ids[query_part..].iter().all(|&t| t == 1));
    assert_eq!(w.doc_tokens, 0..d.len());
    assert_eq!(encoder.pair_special_tokens(), 3);
}

#[test]
fn long_query_is_cut_to_its_cap_and_the_document_fills_the_rest() {
    let encoder = open(&lexical_dir(), CrossEncoderConfig::default());
    assert_eq!(encoder.max_length(), 512, "from config.json");
    let reference = reference_tokenizer();
    let words = filler();
    let query: String = words
        .split_whitespace()
        .take(200)
        .collect::<Vec<_>>()
        .join(" ");
    let q = reference.encode(query.as_str(), false).expect("q");
    assert!(
        q.len() >= 200,
        "the query really is long ({} tokens)",
        q.len()
    );
    let long_doc = words.repeat(3);
    let d = reference.encode(long_doc.as_str(), false).expect("d");

    let windows = encoder
        .encode_windows(&query, doc(&long_doc))
        .expect("encode");
    assert!(
        windows.len() > 1,
        "a {}-token document needs windows",
        d.len()
    );
    let budget = 512 - 3 - 64;
    for w in &windows {
        assert_eq!(w.ids.len(), 512, "every window fills max_length exactly");
        assert_eq!(
            w.type_ids.iter().filter(|&&t| t == 0).count(),
            64 + 2,
            "query cut to 64"
        );
        assert_eq!(
            &w.ids[1..65],
            &q.get_ids()[..64],
            "the query's first 64 tokens"
        );
        assert_eq!(w.ids[65], 102);
        assert_eq!(w.doc_tokens.len(), budget);
        assert_eq!(&w.ids[66..511], &d.get_ids()[w.doc_tokens.clone()]);
        assert_eq!(w.ids[511], 102);
    }
    assert_eq!(windows[0].doc_tokens.start, 0);
    assert_eq!(
        windows.last().expect("windows").doc_tokens.end,
        d.len(),
        "the tail is covered"
    );
    // Default stride: half the budget.
    assert_eq!(windows[1].doc_tokens.start, budget / 2);
}

#[test]
fn max_length_comes_from_config_json_or_the_configuration() {
    let dir = temp_model_dir(&lexical_dir().join("model.onnx"), true);
    let config_json = dir.path().join("config.json");

    // No config.json: 512.
    let encoder = open(dir.path(), CrossEncoderConfig::default());
    assert_eq!(encoder.max_length(), 512);

    std::fs::write(
        &config_json,
        r#"{"model_type": "bert", "max_position_embeddings": 128}"#,
    )
    .expect("write");
    let encoder = open(dir.path(), CrossEncoderConfig::default());
    assert_eq!(encoder.max_length(), 128);
    let long = filler();
    for w in encoder.encode_windows(STATINS, doc(&long)).expect("encode") {
        assert_eq!(w.ids.len(), 128);
    }

    // RoBERTa-family positions start at 2: 514 → 512, 130 → 128.
    std::fs::write(
        &config_json,
        r#"{"model_type": "xlm-roberta", "max_position_embeddings": 130}"#,
    )
    .expect("write");
    assert_eq!(
        open(dir.path(), CrossEncoderConfig::default()).max_length(),
        128
    );

    // Capped at 512.
    std::fs::write(&config_json, r#"{"max_position_embeddings": 4096}"#).expect("write");
    assert_eq!(
        open(dir.path(), CrossEncoderConfig::default()).max_length(),
        512
    );

    // An explicit max_length wins.
    let config = CrossEncoderConfig {
        max_length: Some(100),
        ..CrossEncoderConfig::default()
    };
    assert_eq!(open(dir.path(), config).max_length(), 100);
}

// ---------------------------------------------------------------- logits and calibration

#[test]
fn one_and_two_class_outputs_and_graphs_without_token_types_agree() {
    let single = open(&lexical_dir(), CrossEncoderConfig::default());
    let two = open(&two_class_model(), CrossEncoderConfig::default());
    let untyped = open(&no_token_types_model(), CrossEncoderConfig::default());
    assert_eq!(single.logit_classes(), 1);
    assert_eq!(two.logit_classes(), 2);
    assert!(single.uses_token_type_ids());
    assert!(!untyped.uses_token_type_ids());
    assert_eq!(
        two.model_dir(),
        lexical_dir(),
        "a file in onnx/ uses the folder above"
    );

    let a = rerank(&single, STATINS, &DOCS);
    let b = rerank(&two, STATINS, &DOCS);
    let c = rerank(&untyped, STATINS, &DOCS);
    for i in 0..DOCS.len() {
        let (ra, rb, rc) = (a.scores[i].raw, b.scores[i].raw, c.scores[i].raw);
        assert!((ra - rb).abs() < 1e-5, "doc {i}: [B,1] {ra} vs [B,2] {rb}");
        assert!(
            (ra - rc).abs() < 1e-5,
            "doc {i}: typed {ra} vs untyped {rc}"
        );
        for s in [&a.scores[i], &b.scores[i]] {
            assert!(
                (s.calibrated - sigmoid(s.raw)).abs() < 1e-6,
                "no calibration: sigmoid"
            );
        }
    }
    // The toy model has real signal: the statin document wins, the empty one loses.
    let best = (0..DOCS.len())
        .max_by(|&i, &j| a.scores[i].raw.total_cmp(&a.scores[j].raw))
        .expect("scores");
    assert_eq!(best, 0);
    assert!(a.scores[0].raw > a.scores[1].raw + 2.0);
    assert!(a.scores[3].raw < a.scores[1].raw);
    assert!(a.scores[0].calibrated > 0.5 && a.scores[1].calibrated < 0.5);
}

#[test]
fn calibration_file_is_applied_and_validated() {
    let plain = open(&lexical_dir(), CrossEncoderConfig::default());
    let expected = rerank(&plain, STATINS, &DOCS);

    let dir = temp_model_dir(&two_class_model(), true);
    let calibration = dir.path().join("sieve_calibration.json");
    std::fs::write(&calibration, r#"{"temperature": 2.0, "bias": -1.0}"#).expect("write");
    let calibrated = open(dir.path(), CrossEncoderConfig::default());
    let c = calibrated.calibration().expect("calibration read");
    assert_eq!((c.temperature, c.bias), (2.0, -1.0));
    let got = rerank(&calibrated, STATINS, &DOCS);
    for (e, g) in expected.scores.iter().zip(&got.scores) {
        assert!(
            (e.raw - g.raw).abs() < 1e-5,
            "calibration leaves raw scores alone"
        );
        let want = sigmoid(g.raw / 2.0 - 1.0);
        assert!(
            (g.calibrated - want).abs() < 1e-6,
            "{} vs {want}",
            g.calibrated
        );
    }
    let relevant = &got.scores[0];
    assert!(
        (relevant.calibrated - sigmoid(relevant.raw)).abs() > 0.05,
        "differs from plain sigmoid: {} vs {}",
        relevant.calibrated,
        sigmoid(relevant.raw)
    );

    for bad in [
        r#"{"temperature": 0}"#,
        r#"{"temperature": "warm"}"#,
        "not json",
    ] {
        std::fs::write(&calibration, bad).expect("write");
        match CrossEncoder::open(dir.path(), CrossEncoderConfig::default()) {
            Err(RerankError::Load(message)) => {
                assert!(message.contains("sieve_calibration.json"), "{message}")
            }
            other => panic!("calibration {bad:?} accepted: {other:?}"),
        }
    }
}

#[test]
fn stats_description_and_edge_cases() {
    let encoder = open(&lexical_dir(), CrossEncoderConfig::default());
    let long = filler().repeat(4);
    let out = rerank(&encoder, STATINS, &[DOCS[0], &long, DOCS[1]]);
    let windows: usize = out.scores.iter().map(|s| s.windows).sum();
    assert!(out.scores[1].windows > 1);
    assert_eq!(out.stats.pairs, windows);
    assert!(out.stats.batches >= 1);
    assert!(out.stats.padded_tokens >= 512 * (windows - 2));
    assert!(out.stats.model_ms > 0.0 && out.stats.tokenize_ms > 0.0);
    assert_eq!(out.stats.device, "cpu");
    let description = encoder.describe();
    assert!(
        description.starts_with("onnx:") && description.ends_with("(cpu)"),
        "{description}"
    );
    assert!(description.contains("lexical"), "{description}");

    let empty = encoder.rerank(STATINS, &[]).expect("no documents");
    assert!(empty.scores.is_empty());
    assert_eq!(empty.stats.pairs, 0);
    for query in ["", "   "] {
        match encoder.rerank(query, &[doc("text")]) {
            Err(RerankError::Invalid(message)) => assert!(message.contains("empty"), "{message}"),
            other => panic!("empty query accepted: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- long documents

#[test]
fn windows_find_query_words_anywhere_and_beat_truncation() {
    let encoder = open(&lexical_dir(), CrossEncoderConfig::default());
    let reference = reference_tokenizer();
    let filler = filler().repeat(6);
    let at_start = format!("{QUERY}. {filler}");
    let at_end = format!("{filler} {QUERY}.");
    let absent = filler.clone();
    let doc_len = reference.encode(at_end.as_str(), false).expect("d").len();
    assert!(doc_len > 2000, "{doc_len} tokens");

    let out = rerank(&encoder, QUERY, &[&at_start, &at_end, &absent]);
    let (start, end, none) = (out.scores[0], out.scores[1], out.scores[2]);
    let query_len = reference.encode(QUERY, false).expect("q").len();
    let budget = 512 - 3 - query_len;
    let expected_windows = plan_windows(doc_len, budget, budget / 2, 8).len();
    assert!(expected_windows > 1 && expected_windows <= 8);
    assert_eq!(end.windows, expected_windows);
    assert_eq!(start.best_window, 0);
    assert_eq!(
        end.best_window,
        end.windows - 1,
        "the words are in the last window"
    );
    assert!(
        (start.raw - end.raw).abs() < 0.05,
        "start {} vs end {}",
        start.raw,
        end.raw
    );
    assert!(
        end.raw > none.raw + 2.0,
        "end {} vs absent {}",
        end.raw,
        none.raw
    );

    // Plain truncation (one window) cannot see the end.
    let truncating = open(
        &lexical_dir(),
        CrossEncoderConfig {
            max_windows: Some(1),
            ..CrossEncoderConfig::default()
        },
    );
    let cut = rerank(&truncating, QUERY, &[&at_start, &at_end]);
    assert_eq!(cut.scores[1].windows, 1);
    assert!(
        (cut.scores[0].raw - start.raw).abs() < 1e-4,
        "start case unchanged"
    );
    assert!(
        end.raw > cut.scores[1].raw + 2.0,
        "windows {} vs truncation {}",
        end.raw,
        cut.scores[1].raw
    );

    // A cap below the natural count still reaches the end (windows are spread).
    let capped = open(
        &lexical_dir(),
        CrossEncoderConfig {
            max_windows: Some(2),
            ..CrossEncoderConfig::default()
        },
    );
    let two = rerank(&capped, QUERY, &[&at_end]);
    assert_eq!((two.scores[0].windows, two.scores[0].best_window), (2, 1));
    assert!((two.scores[0].raw - end.raw).abs() < 0.05);

    // Mean of the top two windows: never above the max; equal to it for a one-window document.
    let mean2 = open(
        &lexical_dir(),
        CrossEncoderConfig {
            aggregation: WindowAggregation::MeanTop2,
            ..CrossEncoderConfig::default()
        },
    );
    let m = rerank(&mean2, QUERY, &[&at_end, DOCS[0]]);
    let single = rerank(&encoder, QUERY, &[DOCS[0]]);
    assert!(
        m.scores[0].raw < end.raw - 0.5,
        "{} vs {}",
        m.scores[0].raw,
        end.raw
    );
    assert_eq!(m.scores[0].best_window, end.best_window);
    assert!((m.scores[1].raw - single.scores[0].raw).abs() < 1e-5);
}

#[test]
fn a_huge_document_is_scored_over_its_beginning_without_tokenizing_all_of_it() {
    // Windows are spread over the tokenized document, which is cut at max_windows × max_length
    // tokens' worth of characters (8 × 512 × 101 here): a 50 MB document (one tokenizer pass over
    // it took gigabytes) is scored like its first 414 KB.
    let encoder = open(&lexical_dir(), CrossEncoderConfig::default());
    let filler = filler();
    let head = format!("{QUERY}. {}", filler.repeat(420_000 / filler.len() + 1));
    let cut: String = head.chars().take(8 * 512 * 101).collect();
    let huge = format!("{cut}{}", " unrelated words".repeat(50_000_000 / 16));
    let out = rerank(&encoder, QUERY, &[&huge, &cut]);
    assert_eq!(
        out.scores[0].raw, out.scores[1].raw,
        "the huge document scores as its cut"
    );
    // Uncut, its 8 windows would be spread over 12 M tokens of "unrelated words".
    assert_eq!(out.scores[0].windows, out.scores[1].windows);
    assert_eq!(out.scores[0].best_window, 0, "the query words open the cut");
}

// ---------------------------------------------------------------- batching

#[test]
fn scores_do_not_depend_on_batching_or_order() {
    let filler = filler();
    let long_a = format!("{} {QUERY}", filler.repeat(3));
    let long_b = filler.repeat(2);
    let medium = format!("glacier lakes {}", &filler[..600]);
    let texts: Vec<&str> = vec![
        DOCS[0],
        &long_a,
        "moraine",
        DOCS[1],
        &medium,
        "",
        &long_b,
        "sediment glacier moraine",
        DOCS[2],
    ];
    let query = "glacier moraine sediment statins";
    let baseline = open(&lexical_dir(), CrossEncoderConfig::default());
    let base = rerank(&baseline, query, &texts);
    assert!(
        base.stats.pairs > texts.len(),
        "some documents have several windows"
    );

    let variants = [
        (1, 64),       // one row per batch
        (1024, 64),    // a couple of rows
        (100_000, 3),  // rows capped
        (100_000, 64), // everything at once
        (8192, 1),
    ];
    let mut batch_counts = Vec::new();
    for (batch_tokens, max_batch) in variants {
        let encoder = open(
            &lexical_dir(),
            CrossEncoderConfig {
                batch_tokens,
                max_batch,
                ..CrossEncoderConfig::default()
            },
        );
        let out = rerank(&encoder, query, &texts);
        batch_counts.push(out.stats.batches);
        assert_eq!(out.stats.pairs, base.stats.pairs);
        for (i, (b, o)) in base.scores.iter().zip(&out.scores).enumerate() {
            assert!(
                (b.raw - o.raw).abs() < 1e-4,
                "doc {i} with ({batch_tokens}, {max_batch}): {} vs {}",
                b.raw,
                o.raw
            );
            assert_eq!((b.windows, b.best_window), (o.windows, o.best_window));
        }
    }
    assert_eq!(batch_counts[0], base.stats.pairs, "one pair per batch");
    assert_eq!(batch_counts[4], base.stats.pairs);
    assert!(batch_counts[3] < batch_counts[2], "{batch_counts:?}");
    assert!(base.stats.batches < base.stats.pairs);

    // Permuted input: same score per document.
    let n = texts.len();
    for permutation in [
        (0..n).rev().collect::<Vec<_>>(),
        (0..n).map(|i| (i + 4) % n).collect(),
    ] {
        let permuted: Vec<&str> = permutation.iter().map(|&i| texts[i]).collect();
        let out = rerank(&baseline, query, &permuted);
        for (slot, &i) in permutation.iter().enumerate() {
            assert!(
                (out.scores[slot].raw - base.scores[i].raw).abs() < 1e-4,
                "doc {i} at position {slot}"
            );
            assert_eq!(out.scores[slot].windows, base.scores[i].windows);
        }
    }
}

#[test]
fn one_encoder_serves_concurrent_callers() {
    let encoder = std::sync::Arc::new(open(&lexical_dir(), CrossEncoderConfig::default()));
    let expected = rerank(&encoder, STATINS, &DOCS);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let encoder = encoder.clone();
            std::thread::spawn(move || rerank(&encoder, STATINS, &DOCS))
        })
        .collect();
    for handle in handles {
        let out = handle.join().expect("thread");
        for (a, b) in expected.scores.iter().zip(&out.scores) {
            assert!((a.raw - b.raw).abs() < 1e-5);
        }
    }
}
