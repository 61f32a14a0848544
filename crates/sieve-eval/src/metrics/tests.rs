//! Hand-worked metric cases; expected values are derived in comments.

use super::*;

const EPS: f64 = 1e-12;

fn qrels(triples: &[(&str, &str, i32)]) -> Qrels {
    triples
        .iter()
        .map(|&(q, d, r)| (q.to_string(), d.to_string(), r))
        .collect()
}

fn run(triples: &[(&str, &str, f64)]) -> Run {
    triples
        .iter()
        .map(|&(q, d, s)| (q.to_string(), d.to_string(), s))
        .collect()
}

fn value(report: &Report, query: &str, metric: Metric) -> f64 {
    report
        .query_value(query, metric)
        .unwrap_or_else(|| panic!("no {metric} for {query}"))
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < EPS,
        "got {actual}, expected {expected}"
    );
}

#[test]
fn graded_ndcg_uses_all_judged_docs_for_ideal() {
    // Judged: a=3, b=2, c=1 (never retrieved), z=0, n=-2.
    // Retrieved (after sorting by score): z, b, x (unjudged), n.
    // Gains in rank order: 0, 2, 0, 0 (negative grade gives no gain).
    //   DCG@10 = 2/log2(3)                       = 1.2618595
    //   IDCG@10 = 3/log2(2) + 2/log2(3) + 1/log2(4)
    //           = 3 + 1.2618595 + 0.5           = 4.7618595
    //   nDCG@10 = 1.2618595 / 4.7618595          = 0.2649930
    //   nDCG@2: DCG@2 = 1.2618595, IDCG@2 = 4.2618595 -> 0.2960819
    //   nDCG@1: DCG@1 = 0 -> 0
    // Linear gain (not 2^rel-1): exponential would give IDCG = 7+1.89+0.5.
    let q = qrels(&[
        ("q", "a", 3),
        ("q", "b", 2),
        ("q", "c", 1),
        ("q", "z", 0),
        ("q", "n", -2),
    ]);
    let r = run(&[
        ("q", "n", 1.0),
        ("q", "x", 2.0),
        ("q", "b", 3.0),
        ("q", "z", 4.0),
    ]);
    let spec = MetricSpec::new(vec![Metric::ndcg(10), Metric::ndcg(2), Metric::ndcg(1)]);
    let report = evaluate(&q, &r, &spec);
    let l3 = 3f64.log2();
    assert_close(
        value(&report, "q", Metric::ndcg(10)),
        (2.0 / l3) / (3.0 + 2.0 / l3 + 0.5),
    );
    assert_close(
        value(&report, "q", Metric::ndcg(2)),
        (2.0 / l3) / (3.0 + 2.0 / l3),
    );
    assert_close(value(&report, "q", Metric::ndcg(1)), 0.0);
    assert!((value(&report, "q", Metric::ndcg(10)) - 0.2649930).abs() < 1e-7);
    assert!((value(&report, "q", Metric::ndcg(2)) - 0.2960819).abs() < 1e-7);
}

#[test]
fn ties_are_broken_by_doc_id_descending() {
    // All four documents score 1.0; file order is d1, d10, d2, d9.
    // trec_eval order = doc id descending as strings: d9, d2, d10, d1
    // (note "d9" > "d2" > "d10" > "d1" byte-wise).
    // Relevant: d10 only -> rank 3.
    //   MRR@10 = 1/3, MRR@2 = 0
    //   nDCG@10 = (1/log2(4)) / (1/log2(2)) = 0.5
    let q = qrels(&[("q", "d10", 1)]);
    let r = run(&[
        ("q", "d1", 1.0),
        ("q", "d10", 1.0),
        ("q", "d2", 1.0),
        ("q", "d9", 1.0),
    ]);
    let ranked: Vec<&str> = trec_order(r.get("q").unwrap_or(&[]))
        .iter()
        .map(|(d, _)| *d)
        .collect();
    assert_eq!(ranked, ["d9", "d2", "d10", "d1"]);
    let spec = MetricSpec::new(vec![Metric::mrr(10), Metric::mrr(2), Metric::ndcg(10)]);
    let report = evaluate(&q, &r, &spec);
    assert_close(value(&report, "q", Metric::mrr(10)), 1.0 / 3.0);
    assert_close(value(&report, "q", Metric::mrr(2)), 0.0);
    assert_close(value(&report, "q", Metric::ndcg(10)), 0.5);
}

#[test]
fn score_order_beats_file_order_and_zero_signs_tie() {
    // File lists low scores first; ranking must be by score: c(3), b(2), a(-0.0)/z(0.0)
    // a and z tie at zero despite the sign, so doc id descending puts z first.
    let r = run(&[
        ("q", "a", -0.0),
        ("q", "b", 2.0),
        ("q", "z", 0.0),
        ("q", "c", 3.0),
    ]);
    let ranked: Vec<&str> = trec_order(r.get("q").unwrap_or(&[]))
        .iter()
        .map(|(d, _)| *d)
        .collect();
    assert_eq!(ranked, ["c", "b", "z", "a"]);
}

#[test]
fn duplicates_keep_first_occurrence() {
    // d1 appears twice: first with score 0.1, later with 5.0 (ignored).
    // Ranking: d2 (0.5), d1 (0.1) -> relevant d1 at rank 2.
    //   MRR@10 = 0.5; Recall@10 = 1/1 (counted once, not twice).
    let q = qrels(&[("q", "d1", 1)]);
    let r = run(&[("q", "d1", 0.1), ("q", "d2", 0.5), ("q", "d1", 5.0)]);
    let report = evaluate(
        &q,
        &r,
        &MetricSpec::new(vec![Metric::mrr(10), Metric::recall(10)]),
    );
    assert_close(value(&report, "q", Metric::mrr(10)), 0.5);
    assert_close(value(&report, "q", Metric::recall(10)), 1.0);
}

#[test]
fn mrr_respects_cutoff_and_threshold() {
    // Ranking: a (rel 0), b (rel 1), c (unjudged), d (rel 2), e (rel 3).
    // Threshold 1: first relevant is b at rank 2 -> MRR@10 = 0.5, MRR@1 = 0.
    // Threshold 2: first relevant is d at rank 4 -> MRR@10 = 0.25, MRR@3 = 0.
    let q = qrels(&[("q", "a", 0), ("q", "b", 1), ("q", "d", 2), ("q", "e", 3)]);
    let r = run(&[
        ("q", "a", 5.0),
        ("q", "b", 4.0),
        ("q", "c", 3.0),
        ("q", "d", 2.0),
        ("q", "e", 1.0),
    ]);
    let spec = MetricSpec::new(vec![Metric::mrr(10), Metric::mrr(1), Metric::mrr(3)]);
    let t1 = evaluate(&q, &r, &spec);
    assert_close(value(&t1, "q", Metric::mrr(10)), 0.5);
    assert_close(value(&t1, "q", Metric::mrr(1)), 0.0);
    let t2 = evaluate(&q, &r, &spec.with_relevance_threshold(2));
    assert_eq!(t2.relevance_threshold, 2);
    assert_close(value(&t2, "q", Metric::mrr(10)), 0.25);
    assert_close(value(&t2, "q", Metric::mrr(3)), 0.0);
}

#[test]
fn recall_counts_relevant_in_top_k() {
    // Relevant (rel >= 1): r1, r2, r3, r4 (r4 never retrieved); n is rel 0.
    // Ranking: r1, n, r2, x, r3.
    //   Recall@3 = |{r1, r2}| / 4 = 0.5
    //   Recall@5 = |{r1, r2, r3}| / 4 = 0.75
    // Threshold 2 with r1=2, r3=3 relevant only: Recall@3 = 1/2, Recall@5 = 2/2.
    let q = qrels(&[
        ("q", "r1", 2),
        ("q", "r2", 1),
        ("q", "r3", 3),
        ("q", "r4", 1),
        ("q", "n", 0),
    ]);
    let r = run(&[
        ("q", "r1", 5.0),
        ("q", "n", 4.0),
        ("q", "r2", 3.0),
        ("q", "x", 2.0),
        ("q", "r3", 1.0),
    ]);
    let spec = MetricSpec::parse(["recall@3", "recall@5"]).expect("valid names");
    let t1 = evaluate(&q, &r, &spec);
    assert_close(value(&t1, "q", Metric::recall(3)), 0.5);
    assert_close(value(&t1, "q", Metric::recall(5)), 0.75);
    let t2 = evaluate(&q, &r, &spec.with_relevance_threshold(2));
    assert_close(value(&t2, "q", Metric::recall(3)), 0.5);
    assert_close(value(&t2, "q", Metric::recall(5)), 1.0);
}

#[test]
fn map_divides_by_all_relevant() {
    // Relevant: a, b, c, d (d never retrieved). Ranking: a, x, b, y, c.
    //   Precision at relevant ranks: a@1 = 1/1, b@3 = 2/3, c@5 = 3/5.
    //   MAP@10 = (1 + 2/3 + 3/5) / 4 = 2.2666667 / 4 = 0.5666667
    //   MAP@4  = (1 + 2/3) / 4       = 1.6666667 / 4 = 0.4166667
    //   MAP@1  = 1 / 4               = 0.25
    let q = qrels(&[
        ("q", "a", 1),
        ("q", "b", 1),
        ("q", "c", 2),
        ("q", "d", 1),
        ("q", "x", 0),
    ]);
    let r = run(&[
        ("q", "a", 5.0),
        ("q", "x", 4.0),
        ("q", "b", 3.0),
        ("q", "y", 2.0),
        ("q", "c", 1.0),
    ]);
    let spec = MetricSpec::parse(["map@10", "map@4", "map@1"]).expect("valid names");
    let report = evaluate(&q, &r, &spec);
    assert_close(
        value(&report, "q", Metric::map(10)),
        (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 4.0,
    );
    assert_close(value(&report, "q", Metric::map(4)), (1.0 + 2.0 / 3.0) / 4.0);
    assert_close(value(&report, "q", Metric::map(1)), 0.25);
    assert!((value(&report, "q", Metric::map(10)) - 0.5666667).abs() < 1e-7);
}

#[test]
fn query_set_follows_trec_eval_c() {
    // q1: relevant d1 retrieved at rank 1 -> nDCG@10 = 1.
    // q2: judged relevant, absent from the run -> counts as 0.
    // q3: only rel-0 judgements -> excluded.
    // q9: in the run but not judged -> ignored.
    // Mean nDCG@10 = (1 + 0) / 2 = 0.5 over 2 queries.
    let q = qrels(&[
        ("q1", "d1", 1),
        ("q2", "d1", 2),
        ("q3", "d1", 0),
        ("q3", "d2", -1),
    ]);
    let r = run(&[("q1", "d1", 1.0), ("q3", "d1", 1.0), ("q9", "d1", 1.0)]);
    let report = evaluate(&q, &r, &MetricSpec::default());
    assert_eq!(report.num_queries, 2);
    assert_eq!(report.queries_missing_from_run, ["q2"]);
    assert_eq!(report.queries_without_relevant, ["q3"]);
    assert_eq!(report.unjudged_run_queries, ["q9"]);
    assert_eq!(report.per_query.keys().collect::<Vec<_>>(), ["q1", "q2"]);
    assert_close(report.mean(Metric::ndcg(10)).unwrap_or(f64::NAN), 0.5);
    assert_close(report.mean(Metric::mrr(10)).unwrap_or(f64::NAN), 0.5);
    assert_close(value(&report, "q2", Metric::recall(100)), 0.0);
    assert_eq!(report.mean(Metric::ndcg(5)), None);
}

#[test]
fn empty_inputs_give_zero_means() {
    let report = evaluate(&Qrels::new(), &Run::new(), &MetricSpec::default());
    assert_eq!(report.num_queries, 0);
    assert_eq!(report.mean(Metric::ndcg(10)), Some(0.0));
}

#[test]
fn duplicate_metrics_computed_once() {
    let spec = MetricSpec::parse(["ndcg@10", "NDCG_CUT_10", "mrr@10"]).expect("valid");
    let report = evaluate(&qrels(&[("q", "d", 1)]), &Run::new(), &spec);
    assert_eq!(report.metrics, [Metric::ndcg(10), Metric::mrr(10)]);
}

#[test]
fn metric_names_parse_and_display() {
    for (name, metric) in [
        ("ndcg@10", Metric::ndcg(10)),
        ("MRR@10", Metric::mrr(10)),
        ("recip_rank@10", Metric::mrr(10)),
        ("recall@100", Metric::recall(100)),
        ("map@100", Metric::map(100)),
        ("ndcg_cut_5", Metric::ndcg(5)),
        ("map_cut_1000", Metric::map(1000)),
        ("recall_20", Metric::recall(20)),
    ] {
        assert_eq!(name.parse::<Metric>().ok(), Some(metric), "{name}");
    }
    assert_eq!(Metric::recall(100).to_string(), "recall@100");
    for bad in ["ndcg", "ndcg@", "ndcg@0", "ndcg@-1", "p@10", "ndcg@ten", ""] {
        let err = bad.parse::<Metric>().expect_err(bad);
        assert!(err.to_string().starts_with("invalid metric name"), "{err}");
    }
}

#[test]
fn report_serializes_to_json() {
    let q = qrels(&[("q", "d", 1)]);
    let r = run(&[("q", "d", 1.0)]);
    let report = evaluate(&q, &r, &MetricSpec::parse(["ndcg@10"]).expect("valid"));
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["metrics"][0], "ndcg@10");
    assert_eq!(json["num_queries"], 1);
    assert_eq!(json["mean"]["ndcg@10"], 1.0);
    assert_eq!(json["per_query"]["q"]["ndcg@10"], 1.0);
    assert_eq!(json["relevance_threshold"], 1);
}
