//! Cascades of the segmented 2D-Matryoshka engine on the toy fixture (real ONNX graphs): the
//! survivors of each step, blended pruning, intermediate segments, and the order of the output.

mod toy;

use sieve_core::{
    Budget, CascadeStep, ExitTrace, PruneBlend, RerankOutput, RerankScore, Reranker, sigmoid,
};
use sieve_rerank_onnx::{CrossEncoderConfig, cascade_order};
use toy::*;

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
