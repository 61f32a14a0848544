//! The error type shared by every loader and parser in this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading evaluation inputs or parsing
/// metric names.
///
/// File-related variants carry the path (or, for in-memory readers, the
/// origin label the caller supplied) and, where a specific line is at fault,
/// its 1-based line number, so that a user can jump straight to the problem.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file that could not be opened.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Reading a line failed (I/O error or invalid UTF-8).
    #[error("{}:{line}: cannot read line", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// 1-based number of the line that could not be read.
        line: usize,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A line does not follow the expected format.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based number of the malformed line.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },

    /// A JSON Lines record is not valid JSON or lacks a required field.
    #[error("{}:{line}: invalid JSON record", path.display())]
    Json {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based number of the malformed line.
        line: usize,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// A metric name such as `"ndcg@10"` could not be parsed.
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidMetric {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl EvalError {
    /// Builds a [`EvalError::Parse`] for `path:line`.
    pub(crate) fn parse(path: &std::path::Path, line: usize, message: impl Into<String>) -> Self {
        EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}
