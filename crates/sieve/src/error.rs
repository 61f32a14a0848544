//! What can go wrong opening an index or searching it.

use sieve_core::{RerankError, RetrieveError};
use sieve_index::IndexError;

use crate::response::SearchResponse;

/// Errors from opening or searching.
#[derive(Debug, thiserror::Error)]
pub enum SieveError {
    /// The index could not be opened or read.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The query embedder could not be loaded.
    #[error("query embedder: {0}")]
    Embed(#[from] sieve_embed::EmbedError),
    /// A retriever failed.
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    /// The request is invalid (empty query, k = 0, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The bi-encoder file the index was built with is gone or has changed: queries embedded by
    /// another graph would not match the stored document vectors, so the index is refused.
    #[error("{0}")]
    EmbedderChanged(String),
    /// The reranker failed. `fallback` is the same search answered in fused first-stage order,
    /// so a caller can degrade gracefully instead of failing the search.
    #[error("{error} (the fused first-stage order is available as a fallback)")]
    Rerank {
        /// What went wrong.
        error: RerankError,
        /// The search answered without reranking.
        fallback: Box<SearchResponse>,
    },
    /// The blocking task running a search panicked or was cancelled.
    #[error("search task failed: {0}")]
    Task(String),
}
