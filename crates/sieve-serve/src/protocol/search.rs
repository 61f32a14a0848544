//! sieve's own `POST /search`: a `sieve search` over the index the server was started with,
//! the CLI's options as JSON fields (same names and defaults), the CLI's `--json` answer.
//!
//! ```json
//! {"query": "how do statins lower cholesterol", "k": 5, "rerank": true, "budget": "fast"}
//! ```

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use sieve::{BlendChoice, FusionSpec, Mode, RerankSettings, SearchRequest, SearchResponse};
use tokio::sync::oneshot;

use super::{SieveFields, parse_json, read_body};
use crate::batcher::SearchJob;
use crate::error::{ApiError, ErrorKind, Flavor, InFlavor, Rejection};
use crate::server::AppState;

/// Longest query accepted, in bytes (BM25 and the query embedder read far less).
const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most candidates a retriever may be asked for.
const MAX_CANDIDATES: usize = 10_000;

fn default_k() -> usize {
    10
}
fn default_candidates() -> usize {
    100
}
fn default_mode() -> String {
    "hybrid".into()
}
fn default_fusion() -> String {
    "rrf".into()
}
fn default_blend() -> String {
    "model".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_fusion")]
    fusion: String,
    #[serde(default = "default_candidates")]
    bm25_k: usize,
    #[serde(default = "default_candidates")]
    dense_k: usize,
    #[serde(default)]
    rerank: bool,
    #[serde(default = "default_candidates")]
    window: usize,
    #[serde(default)]
    min_score: Option<f32>,
    #[serde(default = "default_blend")]
    blend: String,
    #[serde(default)]
    budget: Option<String>,
    #[serde(default)]
    exit: Option<String>,
    #[serde(default)]
    cascade: Option<String>,
}

impl SearchBody {
    fn request(self, headers: &HeaderMap, max_window: usize) -> Result<SearchRequest, ApiError> {
        if self.query.trim().is_empty() {
            return Err(ApiError::new(ErrorKind::Empty, "`query` is empty"));
        }
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::new(
                ErrorKind::TooLong,
                format!("`query` is longer than {MAX_QUERY_BYTES} bytes"),
            ));
        }
        for (name, value, max) in [
            ("k", self.k, MAX_CANDIDATES),
            ("bm25_k", self.bm25_k, MAX_CANDIDATES),
            ("dense_k", self.dense_k, MAX_CANDIDATES),
            ("window", self.window, max_window),
        ] {
            if value == 0 || value > max {
                return Err(ApiError::invalid(format!(
                    "`{name}` must be between 1 and {max}, not {value}"
                )));
            }
        }
        let mode: Mode = self
            .mode
            .parse()
            .map_err(|e| ApiError::invalid(format!("mode: {e}")))?;
        let fusion: FusionSpec = self
            .fusion
            .parse()
            .map_err(|e| ApiError::invalid(format!("fusion: {e}")))?;
        let budget = SieveFields {
            budget: self.budget,
            exit: self.exit,
            cascade: self.cascade,
        }
        .budget(headers)?;
        let blend: BlendChoice = self.blend.parse().map_err(ApiError::invalid)?;
        if !self.rerank && self.min_score.is_some() {
            return Err(ApiError::invalid("`min_score` needs `rerank: true`"));
        }
        Ok(SearchRequest {
            query: self.query,
            k: self.k,
            mode,
            fusion,
            bm25_k: self.bm25_k,
            dense_k: self.dense_k,
            rerank: self.rerank.then_some(RerankSettings {
                window: self.window,
                min_score: self.min_score,
                budget,
                blend,
            }),
        })
    }
}

async fn handle(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SearchResponse>, ApiError> {
    if !state.has_index {
        return Err(ApiError::new(
            ErrorKind::NotConfigured,
            "this server has no index: start it with `sieve serve --index DIR`",
        ));
    }
    let deadline = Instant::now() + state.config.request_timeout;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let body: SearchBody = parse_json(&bytes)?;
    let request = body.request(&headers, state.config.max_documents)?;
    let (reply, answer) = oneshot::channel();
    state.batcher.search(SearchJob {
        request,
        deadline,
        reply,
    })?;
    match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(result)) => Ok(Json(result?)),
        Ok(Err(_)) => Err(ApiError::new(
            ErrorKind::Unavailable,
            "the model worker stopped before answering",
        )),
        Err(_) => Err(ApiError::new(
            ErrorKind::Timeout,
            "the search was not answered within the server's deadline",
        )),
    }
}

/// `POST /search`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SearchResponse>, Rejection> {
    handle(state, headers, body).await.in_flavor(Flavor::Sieve)
}
