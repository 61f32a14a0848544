//! The rerank stage's interface: a model that scores (query, document) pairs precisely.

use serde::{Deserialize, Serialize};

/// A document to rerank: title and body are passed separately so a model can encode them the
/// way it was trained (typically `title + " " + text` as the second segment of the pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RerankDoc<'a> {
    /// Title, may be empty.
    pub title: &'a str,
    /// Body text, of any length (long documents are split into windows by the reranker).
    pub text: &'a str,
}

/// One document's rerank score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RerankScore {
    /// The model's raw score (logit) for the document, aggregated over its windows.
    pub raw: f32,
    /// A probability-like score in `[0, 1]`: the model's calibration if it has one, else
    /// `sigmoid(raw)`. Thresholds (`--min-score`) apply to this value.
    pub calibrated: f32,
    /// How many token windows of the document were scored.
    pub windows: usize,
    /// Which window (0-based) gave the best score.
    pub best_window: usize,
}

/// What a rerank call did, for `--explain` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankStats {
    /// (query, window) pairs run through the model.
    pub pairs: usize,
    /// Model calls (batches).
    pub batches: usize,
    /// Tokens fed to the model, padding included.
    pub padded_tokens: usize,
    /// Tokenization time, milliseconds.
    pub tokenize_ms: f64,
    /// Model time, milliseconds.
    pub model_ms: f64,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
}

/// Scores for every input document, in input order, plus what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankOutput {
    /// One score per input document, in input order.
    pub scores: Vec<RerankScore>,
    /// Cost accounting.
    pub stats: RerankStats,
}

/// Why a rerank failed. The pipeline turns any of these into "keep the fused order" for
/// library callers that ask for it, so a broken model never breaks search.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RerankError {
    /// The model could not be loaded (missing files, unsupported graph, no CUDA, ...).
    #[error("reranker could not be loaded: {0}")]
    Load(String),
    /// The model failed while scoring.
    #[error("reranker failed: {0}")]
    Run(String),
    /// The request cannot be served (empty query, ...).
    #[error("invalid rerank request: {0}")]
    Invalid(String),
}

/// A reranker: scores documents against a query. `Send + Sync`; batch in, scores out.
pub trait Reranker: Send + Sync {
    /// A short description of the model (`onnx:models/sieve-ce (int8, cpu)`), for outputs.
    fn describe(&self) -> String;

    /// Scores `docs` against `query`; the output has exactly one score per document.
    fn rerank(&self, query: &str, docs: &[RerankDoc<'_>]) -> Result<RerankOutput, RerankError>;
}

/// The logistic function, used to turn logits into calibrated scores.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
