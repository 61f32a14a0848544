//! sieve as a library: open an index and search it.
//!
//! ```no_run
//! use sieve::{Sieve, SearchRequest, Mode};
//! # fn main() -> Result<(), sieve::SieveError> {
//! let engine = Sieve::open("idx".as_ref())?;
//! let response = engine.search(&SearchRequest::new("how do statins lower cholesterol"))?;
//! for hit in &response.hits {
//!     println!("{} {} {:.4}", hit.rank, hit.id, hit.score);
//! }
//! # Ok(()) }
//! ```
//!
//! A search runs the first-stage retrievers the [`Mode`] asks for (BM25 and the dense retriever
//! concurrently in hybrid mode), fuses their lists ([`FusionSpec`]: RRF or weighted), keeps the top
//! `k` and fetches their documents. [`Sieve`] is `Send + Sync`: share it in an `Arc` across
//! threads, or call [`Sieve::search_async`] from tokio (the work runs on the blocking pool).

mod error;
mod pipeline;
mod request;
mod rerank_stage;
mod response;
mod retrievers;

pub use error::SieveError;
pub use pipeline::{OpenOptions, Sieve};
pub use request::{BlendChoice, Mode, RerankSettings, SearchRequest};
pub use rerank_stage::{rerank_order, rerank_window, stored_states};
pub use response::{FirstStage, Hit, RerankReport, SearchResponse, Timings};
pub use retrievers::{Bm25Retriever, DenseRetriever};
pub use sieve_core::{
    Budget, Candidate, CascadeStep, DocStates, ExitScore, ExitTrace, FusedCandidate, Fusion,
    FusionSpec, PruneBlend, RankedList, RerankDoc, RerankError, RerankOutput, RerankQuery,
    RerankScore, RerankStats, Reranker, Retriever, Rrf, SegmentTiming, StageScore, WeightedFusion,
};
pub use sieve_index::SieveIndex;

/// Where the bundled bi-encoder lives in a checkout, relative to the repository root.
pub const DEFAULT_EMBEDDER: &str = "models/all-MiniLM-L6-v2";
