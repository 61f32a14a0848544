//! sieve's rerank stage over HTTP: what `sieve serve` runs.
//!
//! One process loads one reranker (and optionally one index) and answers, on one port:
//!
//! | route | protocol |
//! |---|---|
//! | `POST /v1/rerank`, `POST /v2/rerank` | Cohere rerank (also what Jina's clients send) |
//! | `POST /rerank`, `GET /health`, `GET /info` | Hugging Face Text Embeddings Inference |
//! | `/weaviate/.well-known/{live,ready}`, `GET /weaviate/meta`, `POST /weaviate/rerank` | Weaviate's `reranker-transformers` module |
//! | `POST /search` | sieve's own: a `sieve search` over the loaded index, same JSON as the CLI |
//! | `GET /metrics` | Prometheus text |
//!
//! Every scoring request goes through one model worker ([`batcher`]) that packs concurrent
//! requests into shared batches, behind a bounded queue (429 when full), with a per-request
//! deadline (504), cancellation of work whose client went away, and limits on body size,
//! documents per request and tokens per document ([`ServeConfig`]). Errors come back in the shape
//! and with the status codes of the protocol the request used ([`error`]).
//!
//! ```no_run
//! # async fn run(reranker: std::sync::Arc<dyn sieve::Reranker>) -> Result<(), Box<dyn std::error::Error>> {
//! use sieve_serve::{ModelInfo, ServeConfig, Server};
//! let model = ModelInfo::new("sieve-ce-minilm-l6-lj", reranker, "models/all-MiniLM-L6-v2/tokenizer.json".as_ref(), 256)?;
//! let server = Server::new(ServeConfig::default(), model, None)?;
//! server.run(sieve_serve::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod batcher;
pub mod cache;
mod config;
pub mod error;
pub mod metrics;
mod protocol;
mod server;
pub mod text;

pub use config::ServeConfig;
pub use error::{ApiError, ErrorKind, Flavor};
pub use server::{ModelInfo, Server, shutdown_signal};
