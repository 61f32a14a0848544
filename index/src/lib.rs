//! The on-disk sieve index and how it is built from Parquet.
//!
//! An index directory holds:
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | format version, counts, models (path + sha256), analyzer, HNSW parameters, build stats, sha256 of the files whose readers trust their input ([`integrity`]), generations |
//! | `bm25/` | a tantivy index over `title + text` with the document ordinal as a fast field |
//! | `dense.hnsw.graph`, `dense.hnsw.data` | the hnsw_rs graph over L2-normalised embeddings (dot product = cosine) |
//! | `vectors.f32` | the same embeddings, row-major little-endian f32 (exact search, rebuilds) |
//! | `docs.jsonl`, `docs.offsets` | the document store: one JSON line per document, and their byte offsets |
//!
//! Documents are addressed internally by their ordinal (`0..documents`, the order they were read
//! in). [`IndexBuilder`] writes everything into a hidden temporary directory beside the target and
//! renames it into place only when complete, so a killed build leaves the previous index (or none),
//! never a broken one. [`SieveIndex`] opens a finished index.
//!
//! [`IndexBuilder::update`] appends, replaces and deletes documents without a rebuild: it writes
//! the next generation the same atomic way, reusing the stored embeddings and rerank states of
//! every document it keeps, so only new documents are embedded.

pub mod bm25;
mod builder;
pub mod dense;
pub mod docstore;
mod error;
pub mod ids;
pub mod ingest;
pub mod integrity;
pub mod jsonl;
pub mod manifest;
mod reader;
mod staging;
pub mod states;
mod update;

pub use builder::{BuildOptions, BuildReport, IndexBuilder, NoProgress, Progress};
pub use error::IndexError;
pub use ingest::ColumnMapping;
pub use manifest::{Generation, Manifest};
pub use reader::SieveIndex;
pub use update::{OnDuplicate, Update, UpdateReport};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
