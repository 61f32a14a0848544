//! Metric names and evaluation specs: which metrics, at which cutoffs,
//! with which relevance threshold.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::EvalError;

/// The family of a metric; combined with a cutoff in [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Normalised discounted cumulative gain with linear graded gains
    /// (`trec_eval` `ndcg_cut`).
    Ndcg,
    /// Reciprocal rank of the first relevant document (`recip_rank` cut at k).
    Mrr,
    /// Fraction of the relevant documents retrieved (`recall`).
    Recall,
    /// Average precision cut at k (`map_cut`).
    Map,
}

impl MetricKind {
    /// The canonical lowercase name used in metric names (`"ndcg"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Ndcg => "ndcg",
            MetricKind::Mrr => "mrr",
            MetricKind::Recall => "recall",
            MetricKind::Map => "map",
        }
    }
}

/// A metric at a rank cutoff, e.g. nDCG@10.
///
/// Parses from and displays as `"<kind>@<k>"` (`"ndcg@10"`, `"mrr@10"`,
/// `"recall@100"`, `"map@100"`); see [`Metric::from_str`] for the accepted
/// spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric {
    /// Which metric.
    pub kind: MetricKind,
    /// Rank cutoff: only the top `k` results are considered. Always >= 1.
    pub k: usize,
}

impl Metric {
    /// nDCG@k.
    pub fn ndcg(k: usize) -> Self {
        Metric {
            kind: MetricKind::Ndcg,
            k,
        }
    }

    /// MRR@k.
    pub fn mrr(k: usize) -> Self {
        Metric {
            kind: MetricKind::Mrr,
            k,
        }
    }

    /// Recall@k.
    pub fn recall(k: usize) -> Self {
        Metric {
            kind: MetricKind::Recall,
            k,
        }
    }

    /// MAP@k.
    pub fn map(k: usize) -> Self {
        Metric {
            kind: MetricKind::Map,
            k,
        }
    }
}

impl fmt::Display for Metric {
    /// Writes the canonical name, e.g. `ndcg@10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.kind.as_str(), self.k)
    }
}

impl FromStr for Metric {
    type Err = EvalError;

    /// Parses a metric name, case-insensitively.
    ///
    /// Accepted: `ndcg@K`, `mrr@K`, `recall@K`, `map@K`, and the `trec_eval`
    /// spellings `ndcg_cut_K`, `map_cut_K`, `recall_K`, `recip_rank@K`.
    /// `K` must be a positive integer.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| EvalError::InvalidMetric {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let lower = name.trim().to_ascii_lowercase();
        let (kind, k) = if let Some((kind, k)) = lower.split_once('@') {
            let kind = match kind {
                "ndcg" => MetricKind::Ndcg,
                "mrr" | "recip_rank" => MetricKind::Mrr,
                "recall" => MetricKind::Recall,
                "map" => MetricKind::Map,
                _ => return Err(invalid("unknown metric; expected ndcg, mrr, recall or map")),
            };
            (kind, k)
        } else if let Some(k) = lower.strip_prefix("ndcg_cut_") {
            (MetricKind::Ndcg, k)
        } else if let Some(k) = lower.strip_prefix("map_cut_") {
            (MetricKind::Map, k)
        } else if let Some(k) = lower.strip_prefix("recall_") {
            (MetricKind::Recall, k)
        } else {
            return Err(invalid("expected <metric>@<k>, e.g. ndcg@10"));
        };
        let k: usize = k
            .parse()
            .map_err(|_| invalid("cutoff must be a positive integer"))?;
        if k == 0 {
            return Err(invalid("cutoff must be a positive integer"));
        }
        Ok(Metric { kind, k })
    }
}

impl Serialize for Metric {
    /// Serialises as the canonical name, e.g. `"ndcg@10"`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What to compute: the metrics and the relevance threshold for binary
/// metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    /// Metrics to compute, in report order. Duplicates are computed once.
    pub metrics: Vec<Metric>,
    /// Minimum grade for a judged document to count as relevant in MRR,
    /// Recall and MAP (`trec_eval -l`). nDCG ignores it.
    pub relevance_threshold: i32,
}

impl MetricSpec {
    /// Relevance threshold used unless overridden: grade >= 1 is relevant.
    pub const DEFAULT_RELEVANCE_THRESHOLD: i32 = 1;

    /// A spec for `metrics` with the default relevance threshold.
    pub fn new(metrics: Vec<Metric>) -> Self {
        MetricSpec {
            metrics,
            relevance_threshold: Self::DEFAULT_RELEVANCE_THRESHOLD,
        }
    }

    /// Parses metric names such as `["ndcg@10", "recall@100"]` into a spec
    /// with the default relevance threshold.
    pub fn parse<I, S>(names: I) -> Result<Self, EvalError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let metrics = names
            .into_iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<Metric>, _>>()?;
        Ok(Self::new(metrics))
    }

    /// Returns the spec with a different relevance threshold (e.g. 2 for
    /// TREC Deep Learning).
    pub fn with_relevance_threshold(mut self, threshold: i32) -> Self {
        self.relevance_threshold = threshold;
        self
    }
}

impl Default for MetricSpec {
    /// The usual BEIR set: nDCG@10, MRR@10, Recall@10, Recall@100, MAP@100,
    /// threshold 1.
    fn default() -> Self {
        Self::new(vec![
            Metric::ndcg(10),
            Metric::mrr(10),
            Metric::recall(10),
            Metric::recall(100),
            Metric::map(100),
        ])
    }
}
