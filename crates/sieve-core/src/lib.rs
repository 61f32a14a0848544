//! Core types and traits of sieve.
//!
//! A search runs one or more first-stage [`Retriever`]s (BM25, dense, ...), each returning a
//! [`RankedList`] of [`Candidate`]s, then a [`Fusion`] method merges those lists into one
//! [`FusedList`]; a [`Reranker`] can then reorder the top of it precisely. All are traits so that new retrievers and fusion methods plug in without
//! touching the pipeline. Everything here is `Send + Sync` so a pipeline can be shared across
//! threads and tokio tasks.

pub mod contain;
pub mod fusion;
pub mod rerank;
pub mod states;
mod types;

pub use fusion::{Fusion, FusionSpec, Rrf, WeightedFusion};
pub use rerank::{
    Budget, CascadeStep, ExitScore, ExitTrace, PruneBlend, RerankDoc, RerankError, RerankOutput,
    RerankQuery, RerankScore, RerankStats, Reranker, SegmentTiming, min_max, sigmoid,
};
pub use states::{DocStates, StatesFormatError};
pub use types::{Candidate, FusedCandidate, FusedList, RankedList, StageScore};

/// An error from a first-stage retriever.
#[derive(Debug, thiserror::Error)]
#[error("{stage} retrieval failed: {message}")]
pub struct RetrieveError {
    /// The retriever's name (`bm25`, `dense`, ...).
    pub stage: String,
    /// What went wrong.
    pub message: String,
}

impl RetrieveError {
    /// Builds an error for the named stage.
    pub fn new(stage: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            stage: stage.into(),
            message: message.to_string(),
        }
    }
}

/// A first-stage retriever: maps a query to the `k` best documents of an index.
///
/// Documents are identified by their ordinal in the index (`0..num_docs`), which the index maps
/// back to the user's ids; this keeps hot paths free of string handling.
pub trait Retriever: Send + Sync {
    /// A short stable name used in outputs and explanations (`bm25`, `dense`).
    fn name(&self) -> &str;

    /// Returns up to `k` candidates, best first.
    fn retrieve(&self, query: &str, k: usize) -> Result<RankedList, RetrieveError>;
}
