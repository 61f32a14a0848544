//! The error type of the harness.

use std::path::PathBuf;

/// Everything that can stop an evaluation. Messages name the file, query or budget involved.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was attempted (`read`, `write`, `create`).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Qrels, queries or a run file could not be loaded.
    #[error(transparent)]
    Eval(#[from] sieve_eval::EvalError),
    /// The data set's index could not be built, opened or read.
    #[error(transparent)]
    Index(#[from] sieve_index::IndexError),
    /// The first stage failed.
    #[error(transparent)]
    Search(#[from] sieve::SieveError),
    /// The reranker failed; `context` says on which query and budget.
    #[error("{context}")]
    Rerank {
        /// What was being reranked.
        context: String,
        /// The reranker's error.
        #[source]
        source: sieve::RerankError,
    },
    /// The job cannot run as asked (no judged query, an index of another corpus, ...).
    #[error("{0}")]
    Invalid(String),
    /// The report or the cache stamp could not be encoded.
    #[error("cannot encode JSON")]
    Json(#[from] serde_json::Error),
}

impl HarnessError {
    /// An I/O error on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| HarnessError::Io {
            action,
            path,
            source,
        }
    }

    /// A reranker error while doing `context`.
    pub(crate) fn rerank(context: impl Into<String>) -> impl FnOnce(sieve::RerankError) -> Self {
        let context = context.into();
        move |source| HarnessError::Rerank { context, source }
    }
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
