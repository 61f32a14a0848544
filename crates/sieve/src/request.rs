//! What a search asks for: the first-stage mode, fusion, candidate depths and the optional
//! rerank settings (budget, window, blend).

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sieve_core::{Budget, FusionSpec, Reranker};

/// Which first-stage retrievers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 only.
    Bm25,
    /// Dense only.
    Dense,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bm25" => Ok(Mode::Bm25),
            "dense" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(format!(
                "unknown mode `{other}` (expected bm25, dense or hybrid)"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Bm25 => "bm25",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        })
    }
}

/// One search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query text (must not be blank).
    pub query: String,
    /// Results to return.
    pub k: usize,
    /// Which retrievers run.
    pub mode: Mode,
    /// How hybrid lists are fused.
    pub fusion: FusionSpec,
    /// Candidates taken from BM25.
    pub bm25_k: usize,
    /// Candidates taken from the dense retriever.
    pub dense_k: usize,
    /// Rerank the top of the fused list, if set (needs a reranker attached to the engine).
    #[serde(default)]
    pub rerank: Option<RerankSettings>,
}

/// How the rerank stage runs for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankSettings {
    /// How many fused candidates are reranked (the rerank window).
    pub window: usize,
    /// Drop reranked results whose calibrated score is below this.
    pub min_score: Option<f32>,
    /// How much of a Matryoshka reranker to spend (exit, cascade, profile, latency).
    #[serde(default)]
    pub budget: Budget,
    /// Whether and how the reranker's score is blended with the fused first-stage score.
    #[serde(default)]
    pub blend: BlendChoice,
}

impl Default for RerankSettings {
    fn default() -> Self {
        Self {
            window: 100,
            min_score: None,
            budget: Budget::Default,
            blend: BlendChoice::Model,
        }
    }
}

/// How the final order of the rerank window is computed from the reranker's and the fused scores.
///
/// A blend is `w·r + (1−w)·f`, where `r` and `f` are the reranker's raw scores and the fused scores
/// min-max normalised over the reranked candidates: `w = 1` is the pure reranker order, `w = 0`
/// the fused order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendChoice {
    /// The weight the model's manifest recommends (fitted on held-out data), else the pure
    /// reranker order.
    #[default]
    Model,
    /// The pure reranker order.
    Off,
    /// This weight of the reranker's score, in `[0, 1]`.
    Weight(f32),
}

impl FromStr for BlendChoice {
    type Err = String;

    /// `model` (or `auto`), `off` (or `none`), or a reranker weight in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "model" | "auto" => BlendChoice::Model,
            "off" | "none" => BlendChoice::Off,
            w => {
                let weight: f32 = w
                    .parse()
                    .ok()
                    .filter(|w: &f32| (0.0..=1.0).contains(w))
                    .ok_or_else(|| {
                        format!("blend `{w}`: expected model, off or a weight in [0, 1]")
                    })?;
                BlendChoice::Weight(weight)
            }
        })
    }
}

impl BlendChoice {
    /// The reranker weight to use with `reranker`; `None` = the pure reranker order.
    pub fn weight_for(self, reranker: &dyn Reranker) -> Option<f32> {
        match self {
            BlendChoice::Model => reranker.recommended_blend(),
            BlendChoice::Off => None,
            BlendChoice::Weight(w) => Some(w),
        }
    }
}

impl SearchRequest {
    /// A hybrid RRF search for `query` with the defaults: k = 10, 100 candidates per retriever.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            k: 10,
            mode: Mode::Hybrid,
            fusion: FusionSpec::default(),
            bm25_k: 100,
            dense_k: 100,
            rerank: None,
        }
    }
}
