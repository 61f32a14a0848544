use std::path::PathBuf;

/// Everything that can go wrong building or opening an index. Messages name the file, row and
/// column involved where there is one.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// An input path does not exist or holds no Parquet files.
    #[error("input not found: {0}")]
    InputNotFound(PathBuf),
    /// A directory was given that contains no `*.parquet` file.
    #[error("no .parquet files in directory {0}")]
    NoParquetFiles(PathBuf),
    /// The file is not readable Parquet.
    #[error("{file}: not a valid Parquet file: {message}")]
    Parquet {
        /// The file.
        file: PathBuf,
        /// What the Parquet reader said.
        message: String,
    },
    /// A mapped column is absent.
    #[error("{file}: column `{column}` not found (columns: {available})")]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// The missing column.
        column: String,
        /// The columns the file has.
        available: String,
    },
    /// A mapped column has a type sieve cannot use for its role.
    #[error("{file}: column `{column}` has type {found}, expected {expected}")]
    WrongType {
        /// The file.
        file: PathBuf,
        /// The column.
        column: String,
        /// The Arrow type found.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A value is unusable (null id, ragged or null vector, ...).
    #[error("{file}: row {row}, column `{column}`: {message}")]
    BadValue {
        /// The file.
        file: PathBuf,
        /// 0-based row within the file.
        row: u64,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The same id appears twice.
    #[error(
        "{file}: row {row}, column `{column}`: duplicate id `{id}` (first seen in {first_file} row {first_row})"
    )]
    DuplicateId {
        /// The file of the second occurrence.
        file: PathBuf,
        /// 0-based row of the second occurrence.
        row: u64,
        /// The id column.
        column: String,
        /// The duplicated id.
        id: String,
        /// Where it was first seen.
        first_file: PathBuf,
        /// 0-based row of the first occurrence.
        first_row: u64,
    },
    /// An appended document's id is already in the index and replacing was not asked for.
    #[error(
        "{file}: row {row}, column `{column}`: id `{id}` is already in the index (replace it with --on-duplicate replace, or delete it first)"
    )]
    AlreadyIndexed {
        /// The appended file.
        file: PathBuf,
        /// 0-based row in it.
        row: u64,
        /// The id column.
        column: String,
        /// The id.
        id: String,
    },
    /// The index changed on disk while an update was being written.
    #[error(
        "{path}: another writer published generation {found} while this update was built on generation {expected}; nothing was changed, run the update again"
    )]
    ConcurrentUpdate {
        /// The index.
        path: PathBuf,
        /// The generation the update started from.
        expected: u64,
        /// The generation found at commit time.
        found: u64,
    },
    /// An index file is missing or its content is not what the build wrote.
    #[error("{path}: damaged index file ({message}); rebuild the index with `sieve index`")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// The inputs hold no rows at all.
    #[error("no documents found in the inputs ({0})")]
    Empty(String),
    /// The output path exists and is not a sieve index: refusing to replace it.
    #[error("{0} exists and is not a sieve index (no manifest.json); refusing to overwrite it")]
    OutputNotAnIndex(PathBuf),
    /// The directory is not a sieve index.
    #[error("{0} is not a sieve index (no manifest.json)")]
    NotAnIndex(PathBuf),
    /// The manifest cannot be read or is of another format version.
    #[error("{path}: bad manifest: {message}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The embedding model failed.
    #[error(transparent)]
    Embed(#[from] sieve_embed::EmbedError),
    /// The BM25 index (tantivy) failed.
    #[error("BM25 index {path}: {message}")]
    Bm25 {
        /// The tantivy directory.
        path: PathBuf,
        /// What tantivy said.
        message: String,
    },
    /// The HNSW graph failed to build, save or load.
    #[error("dense index {path}: {message}")]
    Dense {
        /// The graph's directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The document store is inconsistent.
    #[error("document store {path}: {message}")]
    DocStore {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed. The I/O error is part of the message (not a separate source, so
    /// that error chains print it once).
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl IndexError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
        let path = path.into();
        move |error| IndexError::Io { path, error }
    }
}
