//! `trec_eval`-compatible ranking metrics: nDCG@k, MRR@k, Recall@k, MAP@k.
//!
//! The conventions follow `trec_eval` (and therefore `pytrec_eval` and the
//! BEIR evaluation scripts) so that numbers can be compared with published
//! results:
//!
//! * **Ranking order.** Each query's results are re-sorted by score
//!   descending, ties broken by document id descending (byte-wise string
//!   comparison), regardless of their order in the run. If a document occurs
//!   more than once for a query, only its first occurrence (in run order) is
//!   kept.
//! * **nDCG@k** (`ndcg_cut_k`): gain is the relevance grade itself (linear,
//!   not `2^rel - 1`); grades `<= 0` give no gain. The discount at 1-based
//!   rank `r` is `log2(r + 1)`. The ideal DCG is computed from *all* judged
//!   documents of the query with positive grade (retrieved or not), sorted
//!   by grade descending and cut at `k`.
//! * **MRR@k**: `1 / rank` of the first relevant document within the top
//!   `k`, else 0.
//! * **Recall@k**: relevant documents in the top `k` divided by all
//!   relevant judged documents of the query.
//! * **MAP@k** (`map_cut_k`): the sum of precision@rank over the relevant
//!   documents retrieved within the top `k`, divided by the number of
//!   relevant judged documents of the query.
//!
//! For MRR, Recall and MAP a judged document is *relevant* when its grade is
//! at least [`MetricSpec::relevance_threshold`] (default 1; TREC Deep
//! Learning uses 2, i.e. `trec_eval -l 2`). Unjudged documents are never
//! relevant. nDCG always uses graded gains.
//!
//! **Which queries count.** Every query of the qrels with at least one
//! judgement of grade `>= 1` is evaluated, whether or not the run has
//! results for it (`trec_eval -c`): a query missing from the run scores 0 on
//! every metric. Queries whose judgements are all `<= 0` are excluded, since
//! no ranking can score on them. Run queries absent from the qrels are
//! ignored. The [`Report`] lists each of these sets explicitly.

mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

pub use spec::{Metric, MetricKind, MetricSpec};

use crate::{Qrels, Run};

/// Evaluation results: per-query values, means, and which queries counted.
///
/// Metric names in the maps are canonical (`"ndcg@10"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The metrics computed, in spec order without duplicates.
    pub metrics: Vec<Metric>,
    /// The relevance threshold used for MRR, Recall and MAP.
    pub relevance_threshold: i32,
    /// Number of evaluated queries: the denominator of every mean.
    pub num_queries: usize,
    /// Mean of each metric over the evaluated queries (0 if there are none).
    pub mean: BTreeMap<String, f64>,
    /// Query id -> metric name -> value, for every evaluated query.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
    /// Evaluated queries the run has no results for; they score 0.
    pub queries_missing_from_run: Vec<String>,
    /// Judged queries excluded because no judgement has grade >= 1.
    pub queries_without_relevant: Vec<String>,
    /// Run queries absent from the qrels; ignored.
    pub unjudged_run_queries: Vec<String>,
}

impl Report {
    /// The mean of `metric`, or `None` if it was not computed.
    pub fn mean(&self, metric: Metric) -> Option<f64> {
        self.mean.get(&metric.to_string()).copied()
    }

    /// The value of `metric` for one query, or `None` if the query was not
    /// evaluated or the metric not computed.
    pub fn query_value(&self, query_id: &str, metric: Metric) -> Option<f64> {
        self.per_query
            .get(query_id)?
            .get(&metric.to_string())
            .copied()
    }
}

/// Orders one query's results the `trec_eval` way and drops duplicates.
///
/// Returns the results sorted by score descending, ties broken by document
/// id descending (byte-wise). When a document id occurs more than once, only
/// its first occurrence in `results` is kept. `-0.0` and `0.0` compare equal;
/// NaN scores (which the loaders reject) sort deterministically instead of
/// panicking.
pub fn trec_order(results: &[(String, f64)]) -> Vec<(&str, f64)> {
    let mut seen = HashSet::with_capacity(results.len());
    let mut ranked: Vec<(&str, f64)> = results
        .iter()
        .filter(|(doc, _)| seen.insert(doc.as_str()))
        .map(|(doc, score)| (doc.as_str(), *score))
        .collect();
    // Adding 0.0 maps -0.0 to +0.0 so that total_cmp agrees with `==` on zero.
    ranked.sort_by(|(da, sa), (db, sb)| (sb + 0.0).total_cmp(&(sa + 0.0)).then_with(|| db.cmp(da)));
    ranked
}

/// Scores `run` against `qrels` with the metrics of `spec`.
///
/// See the [module documentation](self) for the exact conventions.
pub fn evaluate(qrels: &Qrels, run: &Run, spec: &MetricSpec) -> Report {
    let mut metrics: Vec<Metric> = Vec::with_capacity(spec.metrics.len());
    for m in &spec.metrics {
        if !metrics.contains(m) {
            metrics.push(*m);
        }
    }
    let names: Vec<String> = metrics.iter().map(Metric::to_string).collect();
    let threshold = spec.relevance_threshold;

    let mut per_query = BTreeMap::new();
    let mut sums = vec![0.0_f64; metrics.len()];
    let mut missing = Vec::new();
    let mut without_relevant = Vec::new();

    for (query_id, judgments) in qrels.iter() {
        if !judgments.values().any(|&rel| rel >= 1) {
            without_relevant.push(query_id.to_string());
            continue;
        }
        let results = match run.get(query_id) {
            Some(results) => results,
            None => {
                missing.push(query_id.to_string());
                &[]
            }
        };
        let ranking = trec_order(results);
        let judged = QueryJudgments::new(judgments, threshold);
        let rels: Vec<Option<i32>> = ranking
            .iter()
            .map(|(doc, _)| judgments.get(*doc).copied())
            .collect();
        let mut values = BTreeMap::new();
        for ((metric, name), sum) in metrics.iter().zip(&names).zip(sums.iter_mut()) {
            let value = judged.score(*metric, &rels);
            *sum += value;
            values.insert(name.clone(), value);
        }
        per_query.insert(query_id.to_string(), values);
    }

    let num_queries = per_query.len();
    let mean = names
        .iter()
        .zip(&sums)
        .map(|(name, sum)| {
            let mean = if num_queries == 0 {
                0.0
            } else {
                sum / num_queries as f64
            };
            (name.clone(), mean)
        })
        .collect();
    let unjudged_run_queries = run
        .iter()
        .filter(|(q, _)| qrels.get(q).is_none())
        .map(|(q, _)| q.to_string())
        .collect();

    Report {
        metrics,
        relevance_threshold: threshold,
        num_queries,
        mean,
        per_query,
        queries_missing_from_run: missing,
        queries_without_relevant: without_relevant,
        unjudged_run_queries,
    }
}

/// Per-query quantities that do not depend on the ranking.
struct QueryJudgments {
    /// Relevance threshold for binary metrics.
    threshold: i32,
    /// Number of judged documents with grade >= threshold.
    num_relevant: usize,
    /// Positive grades of all judged documents, descending (ideal ranking).
    ideal_gains: Vec<i32>,
}

impl QueryJudgments {
    /// Precomputes the relevant count and the ideal gain vector.
    fn new(judgments: &BTreeMap<String, i32>, threshold: i32) -> Self {
        let num_relevant = judgments.values().filter(|&&r| r >= threshold).count();
        let mut ideal_gains: Vec<i32> = judgments.values().copied().filter(|&r| r > 0).collect();
        ideal_gains.sort_unstable_by(|a, b| b.cmp(a));
        QueryJudgments {
            threshold,
            num_relevant,
            ideal_gains,
        }
    }

    /// True if a document with judgement `rel` (None = unjudged) is relevant.
    fn is_relevant(&self, rel: Option<i32>) -> bool {
        rel.is_some_and(|r| r >= self.threshold)
    }

    /// Computes `metric` for a ranking given as the judgements of its
    /// documents in rank order.
    fn score(&self, metric: Metric, rels: &[Option<i32>]) -> f64 {
        let top = &rels[..metric.k.min(rels.len())];
        match metric.kind {
            MetricKind::Ndcg => {
                let ideal = dcg(self.ideal_gains.iter().take(metric.k).copied());
                if ideal > 0.0 {
                    dcg(top.iter().map(|r| r.unwrap_or(0))) / ideal
                } else {
                    0.0
                }
            }
            MetricKind::Mrr => top
                .iter()
                .position(|&r| self.is_relevant(r))
                .map_or(0.0, |i| 1.0 / (i + 1) as f64),
            MetricKind::Recall => {
                if self.num_relevant == 0 {
                    return 0.0;
                }
                let hits = top.iter().filter(|&&r| self.is_relevant(r)).count();
                hits as f64 / self.num_relevant as f64
            }
            MetricKind::Map => {
                if self.num_relevant == 0 {
                    return 0.0;
                }
                let mut hits = 0usize;
                let mut sum = 0.0;
                for (i, &r) in top.iter().enumerate() {
                    if self.is_relevant(r) {
                        hits += 1;
                        sum += hits as f64 / (i + 1) as f64;
                    }
                }
                sum / self.num_relevant as f64
            }
        }
    }
}

/// Discounted cumulative gain of grades in rank order: sum of
/// `grade / log2(rank + 1)` over positive grades (1-based rank).
fn dcg(gains: impl Iterator<Item = i32>) -> f64 {
    gains
        .enumerate()
        .filter(|&(_, g)| g > 0)
        .map(|(i, g)| f64::from(g) / ((i + 2) as f64).log2())
        .sum()
}
