//! Cost tables and latency budgets on the toy segmented model: round trips, predictions, the
//! plan a latency budget picks (with hand-made `cost.json` files), and a real measurement.

mod toy;

use sieve_core::{Budget, RerankError, Reranker};
use sieve_rerank_onnx::{
    COST_FILE, COST_FORMAT, CostOptions, CostTable, CrossEncoder, CrossEncoderConfig, Plan,
    PlanStep, SegmentCost,
};
use toy::*;

/// A table for the toy model: every pair costs `ms[s]` in segment `s`, whatever its length, or
/// as given per bucket.
fn table(ms_per_pair: [Vec<f64>; 3], buckets: Vec<usize>) -> CostTable {
    CostTable {
        format: COST_FORMAT.into(),
        model: "toy-matryoshka".into(),
        machine: "hand-made".into(),
        threads: 1,
        device: "cpu".into(),
        precision: "fp32".into(),
        batch_tokens: 8192,
        max_batch: 64,
        buckets,
        segments: ms_per_pair
            .into_iter()
            .zip([2, 4, 6])
            .enumerate()
            .map(|(i, (ms_per_pair, exit_layer))| SegmentCost {
                segment: i as u32 + 1,
                exit_layer,
                ms_per_pair,
            })
            .collect(),
    }
}

fn flat(ms: f64) -> [Vec<f64>; 3] {
    [vec![ms], vec![ms], vec![ms]]
}

/// A copy of the toy model with `table` as its cost.json, opened.
fn with_costs(table: &CostTable) -> (tempfile::TempDir, CrossEncoder) {
    let dir = temp_toy();
    table.save(&dir.path().join(COST_FILE)).expect("save");
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    (dir, encoder)
}

fn short_docs(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                String::new(),
                format!("statins and cholesterol, document number {i}"),
            )
        })
        .collect()
}

#[test]
fn cost_table_round_trip_and_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(COST_FILE);
    let t = table(
        [vec![0.5, 1.0], vec![0.25, 0.75], vec![1.5, 2.0]],
        vec![64, 128],
    );
    t.save(&path).expect("save");
    assert_eq!(CostTable::load(&path).expect("load"), t);
    assert!(!dir.path().join("cost.json.tmp").exists());

    let broken = |t: &CostTable| {
        t.save(&path).expect("save");
        match CostTable::load(&path) {
            Err(RerankError::Load(message)) => message,
            other => panic!("expected a load error, got {other:?}"),
        }
    };
    let mut bad = t.clone();
    bad.format = "other/1".into();
    assert_mentions(&broken(&bad), &["cost.json", "format", "other/1"]);
    let mut bad = t.clone();
    bad.segments[1].ms_per_pair.pop();
    assert_mentions(
        &broken(&bad),
        &["cost.json", "segment 2", "1 costs for 2 buckets"],
    );
    let mut bad = t.clone();
    bad.buckets = vec![128, 64];
    assert_mentions(&broken(&bad), &["increasing"]);
    let mut bad = t.clone();
    bad.segments[0].ms_per_pair[0] = -1.0;
    assert_mentions(&broken(&bad), &["non-negative"]);
    std::fs::write(&path, "not json").expect("write");
    assert!(matches!(CostTable::load(&path), Err(RerankError::Load(m)) if m.contains("cost.json")));
}

#[test]
fn predictions_follow_buckets_and_plans() {
    let t = table(
        [vec![1.0, 2.0], vec![10.0, 20.0], vec![100.0, 200.0]],
        vec![64, 128],
    );
    // Pair lengths pick their bucket; beyond the last one, cost scales with length.
    assert_eq!(t.pair_ms(0, 10), 1.0);
    assert_eq!(t.pair_ms(0, 64), 1.0);
    assert_eq!(t.pair_ms(0, 65), 2.0);
    assert_eq!(t.pair_ms(1, 256), 40.0);
    // Three documents: one window of 50, two windows of 100, one window of 60. With a budget of
    // 200 tokens a batch, the pairs are batched as [100, 100], [60, 50].
    let windows = vec![vec![50], vec![100, 100], vec![60]];
    let mut t = t;
    t.batch_tokens = 200;
    let predict = |plan: &Plan| t.predict_ms(plan, &windows).expect("predict");
    assert_eq!(predict(&Plan::exit(2, 8)), 1.0 + 4.0 + 1.0);
    assert_eq!(predict(&Plan::exit(4, 4)), 11.0 + 44.0 + 11.0);
    assert_eq!(predict(&Plan::exit(6, 8)), 111.0 + 444.0 + 111.0);
    let step = |keep, layer| PlanStep {
        keep: Some(keep),
        layer,
        width: 8,
    };
    // The first step takes the first documents; later ones assume the longest survive.
    assert_eq!(
        predict(&Plan {
            steps: vec![step(2, 2)]
        }),
        5.0
    );
    assert_eq!(
        predict(&Plan {
            steps: vec![step(3, 2), step(1, 6)]
        }),
        6.0 + 440.0
    );
    assert_eq!(
        predict(&Plan {
            steps: vec![step(3, 2), step(2, 4), step(1, 6)]
        }),
        6.0 + (40.0 + 10.0) + 400.0
    );
    // With one batch for everything, every pair is padded to the longest (bucket 128).
    assert_eq!(
        t.predict_batched(&Plan::exit(2, 8), &windows, 8192, 64)
            .expect("predict"),
        4.0 * 2.0
    );
    assert!(matches!(
        t.predict_ms(&Plan::exit(3, 8), &windows),
        Err(RerankError::Invalid(m)) if m.contains("layer 3")
    ));
}

#[test]
fn latency_budgets_run_the_deepest_plan_that_fits() {
    // 100 ms per pair and segment (predicted; the toy runs in well under 1 ms), ten one-window
    // documents: all ten at layer 6 cost 3000 ms, at layer 2 1000 ms.
    let (_dir, encoder) = with_costs(&table(flat(100.0), vec![128]));
    let texts = short_docs(10);
    let docs = as_docs(&texts);
    let run = |ms: f64| {
        encoder
            .rerank_budgeted(QUERY, &docs, &Budget::LatencyMs(ms))
            .unwrap_or_else(|e| panic!("{ms} ms: {e}"))
    };

    let out = run(10_000.0);
    assert_eq!(
        out.stats.plan, "6:8",
        "everything fits: the deepest exit, widest head"
    );
    assert_eq!(out.stats.budget_note, None);

    // 2500 ms: layer 6 for all does not fit; 10@2 then 7@6 (1000 + 1400) does, and reaches
    // layer 6 with more documents than 10@4 then 4@6 (2000 + 800).
    let out = run(2_500.0);
    assert_eq!(out.stats.plan, "10@2:8,7@6:8");
    assert_eq!(
        out.traces.iter().filter(|t| t.pruned_at.is_none()).count(),
        7
    );
    let per_segment: Vec<usize> = out.stats.segments.iter().map(|s| s.pairs).collect();
    assert_eq!(per_segment, [10, 7, 7]);

    // 1500 ms: 2 documents can still reach layer 6 (1000 + 400); deeper beats more documents.
    assert_eq!(run(1_500.0).stats.plan, "10@2:8,2@6:8");

    // 1050 ms: only layer 2 for all fits.
    assert_eq!(run(1_050.0).stats.plan, "2:8");

    // 750 ms: not even the cheapest exit fits all ten: the first seven are scored at layer 2,
    // the others keep their fused order, and the note says so.
    let out = run(750.0);
    assert_eq!(out.stats.plan, "7@2:8");
    let note = out.stats.budget_note.expect("a budget note");
    assert_mentions(&note, &["750", "2:8", "first 7", "other 3"]);
    for d in 0..10 {
        let expected = if d < 7 { None } else { Some(0) };
        assert_eq!(out.traces[d].pruned_at, expected, "document {d}");
    }
    assert_eq!(out.scores[8].raw, 0.0);

    // A budget too small for anything scores nothing, still one (zero) score per document.
    let out = run(1.0);
    assert_eq!(out.stats.plan, "0@2:8");
    assert_eq!(out.scores.len(), 10);
    assert!(out.traces.iter().all(|t| t.pruned_at == Some(0)));
    assert!(out.stats.segments.is_empty());
}

#[test]
fn latency_budgets_consider_the_profiles() {
    let dir = temp_toy();
    edit_manifest(dir.path(), |m| {
        m["profiles"] = serde_json::json!({"wide": "4@2,4@4,3@6:4", "same": "50@2,20@6"});
    });
    table(flat(100.0), vec![128])
        .save(&dir.path().join(COST_FILE))
        .expect("save");
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    let texts = short_docs(10);
    let docs = as_docs(&texts);
    // 1300 ms: two-step cascades reach layer 6 with at most 1 document (1000 + 200); the
    // profile (400 + 400 + 300 = 1100 ms) reaches it with 3.
    let out = encoder
        .rerank_budgeted(QUERY, &docs, &Budget::LatencyMs(1_300.0))
        .expect("rerank");
    assert_eq!(out.stats.plan, "4@2:8,4@4:8,3@6:4");
    // With room for everything, the single exit wins over a profile cascade that keeps every
    // document anyway (same depth, same documents, same cost, fewer steps).
    let out = encoder
        .rerank_budgeted(QUERY, &docs, &Budget::LatencyMs(10_000.0))
        .expect("rerank");
    assert_eq!(out.stats.plan, "6:8");
}

#[test]
fn latency_budgets_need_a_usable_cost_table() {
    let texts = short_docs(3);
    let docs = as_docs(&texts);
    let latency = Budget::LatencyMs(100.0);

    let encoder = open_toy(CrossEncoderConfig::default());
    assert!(encoder.cost_table().expect("no table").is_none());
    assert_mentions(
        &invalid(encoder.rerank_budgeted(QUERY, &docs, &latency)),
        &["sieve calibrate", "cost.json"],
    );

    // A broken cost.json does not stop the model from loading; only latency budgets fail.
    let dir = temp_toy();
    std::fs::write(dir.path().join(COST_FILE), "{ broken").expect("write");
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    assert!(
        encoder
            .rerank_budgeted(QUERY, &docs, &Budget::Default)
            .is_ok()
    );
    assert_mentions(
        &invalid(encoder.rerank_budgeted(QUERY, &docs, &latency)),
        &["cost.json", "sieve calibrate"],
    );

    // A table for other segments is refused the same way.
    let dir = temp_toy();
    let mut other = table(flat(1.0), vec![128]);
    other.segments[2].exit_layer = 12;
    other.save(&dir.path().join(COST_FILE)).expect("save");
    let encoder = open_at(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &invalid(encoder.rerank_budgeted(QUERY, &docs, &latency)),
        &["cost.json", "segments"],
    );
    assert!(encoder.set_cost_table(Some(other)).is_err());

    // A table measured on another device or precision.
    let mut cuda = table(flat(1.0), vec![128]);
    cuda.device = "cuda:0".into();
    let (_dir, encoder) = with_costs(&cuda);
    assert_mentions(
        &invalid(encoder.rerank_budgeted(QUERY, &docs, &latency)),
        &["cuda:0", "cpu", "sieve calibrate"],
    );
    let mut int8 = table(flat(1.0), vec![128]);
    int8.precision = "int8".into();
    encoder.set_cost_table(Some(int8)).expect("same segments");
    assert_mentions(
        &invalid(encoder.rerank_budgeted(QUERY, &docs, &latency)),
        &["int8", "fp32"],
    );
}

#[test]
fn measured_costs_are_usable() {
    let encoder = open_toy(CrossEncoderConfig::default());
    let texts = doc_texts();
    let options = CostOptions {
        buckets: vec![32, 64, 128],
        warmup: 1,
        repetitions: 3,
    };
    let measured = encoder
        .measure_costs(QUERY, &as_docs(&texts), &options)
        .expect("measure");
    assert_eq!(measured.format, COST_FORMAT);
    assert_eq!(measured.buckets, [32, 64, 128]);
    assert_eq!(measured.device, "cpu");
    assert_eq!(measured.precision, "fp32");
    assert_eq!(measured.model, "toy-matryoshka");
    assert!(measured.threads >= 1 && !measured.machine.is_empty());
    let layers: Vec<u32> = measured.segments.iter().map(|s| s.exit_layer).collect();
    assert_eq!(layers, [2, 4, 6]);
    for s in &measured.segments {
        assert_eq!(s.ms_per_pair.len(), 3);
        assert!(
            s.ms_per_pair.iter().all(|&c| c.is_finite() && c > 0.0),
            "{s:?}"
        );
    }
    // Saved where the model looks for it, it is found at the next load.
    let dir = temp_toy();
    measured.save(&dir.path().join(COST_FILE)).expect("save");
    let reopened = open_at(dir.path(), CrossEncoderConfig::default());
    let loaded = reopened.cost_table().expect("table").expect("found");
    assert_eq!(loaded.buckets, measured.buckets);
    for (a, b) in loaded.segments.iter().zip(&measured.segments) {
        assert_eq!((a.segment, a.exit_layer), (b.segment, b.exit_layer));
        for (x, y) in a.ms_per_pair.iter().zip(&b.ms_per_pair) {
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
    // Installed in memory, a generous budget runs the full model.
    encoder.set_cost_table(Some(measured)).expect("set");
    let docs = as_docs(&texts);
    let out = encoder
        .rerank_budgeted(QUERY, &docs, &Budget::LatencyMs(60_000.0))
        .expect("rerank");
    assert_eq!(out.stats.plan, "6:8");

    // Default buckets follow max_length; bad options are refused.
    let bad = CostOptions {
        buckets: vec![64, 256],
        ..CostOptions::default()
    };
    assert_mentions(
        &invalid(encoder.measure_costs(QUERY, &docs, &bad)),
        &["max_length 128"],
    );
    let nothing = [sieve_core::RerankDoc::new("", "")];
    assert_mentions(
        &invalid(encoder.measure_costs(QUERY, &nothing, &CostOptions::default())),
        &["sample documents"],
    );

    // Single-graph models have no cost tables.
    let config = CrossEncoderConfig {
        max_length: Some(128),
        ..CrossEncoderConfig::default()
    };
    let single = open_at(&toy_dir().join("model.onnx"), config);
    assert_mentions(
        &invalid(single.measure_costs(QUERY, &docs, &CostOptions::default())),
        &["single-graph"],
    );
}
