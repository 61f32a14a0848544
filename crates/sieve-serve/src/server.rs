//! The server: shared state, routes, authentication, metrics and graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use sieve::{Reranker, Sieve};
use tokio::net::TcpListener;

use crate::batcher::Batcher;
use crate::config::ServeConfig;
use crate::error::{ApiError, ErrorKind, Flavor};
use crate::metrics::Metrics;
use crate::protocol;
use crate::text::TokenCounter;

/// The reranker a server loads, with what the protocols report about it.
pub struct ModelInfo {
    /// The name clients see (`model_id` in TEI's `/info`, `model` in answers).
    pub id: String,
    /// The reranker.
    pub reranker: Arc<dyn Reranker>,
    /// Its tokenizer, for the protocols' token limits.
    pub tokens: TokenCounter,
    /// The most document tokens the model reads (TEI's `max_input_length`).
    pub max_input_tokens: usize,
}

impl ModelInfo {
    /// Describes `reranker`, whose tokenizer is `tokenizer` and which reads at most
    /// `max_input_tokens` tokens of a document.
    pub fn new(
        id: impl Into<String>,
        reranker: Arc<dyn Reranker>,
        tokenizer: &Path,
        max_input_tokens: usize,
    ) -> Result<Self, String> {
        if max_input_tokens < 3 {
            return Err(format!(
                "the model's input length ({max_input_tokens}) is too small"
            ));
        }
        Ok(Self {
            id: id.into(),
            reranker,
            tokens: TokenCounter::open(tokenizer)?,
            max_input_tokens,
        })
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub config: ServeConfig,
    pub model: ModelInfo,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub has_index: bool,
    pub started: Instant,
    key_digest: Option<[u8; 32]>,
}

/// A configured server, not yet listening.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Starts the model worker for `model` (and `engine`, for `/search`).
    pub fn new(
        config: ServeConfig,
        model: ModelInfo,
        engine: Option<Arc<Sieve>>,
    ) -> Result<Self, String> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let has_index = engine.is_some();
        let batcher = Batcher::start(model.reranker.clone(), engine, &config, metrics.clone())
            .map_err(|e| format!("cannot start the model worker: {e}"))?;
        let key_digest = config
            .api_key
            .as_deref()
            .map(|k| Sha256::digest(k.trim().as_bytes()).into());
        Ok(Self {
            state: Arc::new(AppState {
                config,
                model,
                batcher,
                metrics,
                has_index,
                started: Instant::now(),
                key_digest,
            }),
        })
    }

    /// The routes, for serving on a listener of one's own (or for tests).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let open = Router::new()
            .route("/health", get(health))
            .route("/info", get(protocol::tei::info))
            .route("/weaviate/.well-known/live", get(no_content))
            .route("/weaviate/.well-known/ready", get(no_content))
            // Weaviate joins its base URL and the path by concatenation: a base URL with a
            // trailing slash asks for `//rerank`.
            .route("/weaviate//.well-known/live", get(no_content))
            .route("/weaviate//.well-known/ready", get(no_content));
        let guarded = Router::new()
            .route("/v1/rerank", post(protocol::cohere::rerank_v1))
            .route("/v2/rerank", post(protocol::cohere::rerank_v2))
            .route("/rerank", post(protocol::tei::rerank_route))
            .route("/weaviate/meta", get(protocol::weaviate::meta))
            .route("/weaviate/rerank", post(protocol::weaviate::rerank))
            .route("/weaviate//meta", get(protocol::weaviate::meta))
            .route("/weaviate//rerank", post(protocol::weaviate::rerank))
            .route("/search", post(protocol::search::search))
            .route("/metrics", get(metrics_text))
            .layer(middleware::from_fn_with_state(state.clone(), authenticate));
        open.merge(guarded)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(state.clone(), count_request))
            .with_state(state)
    }

    /// Binds the configured address and serves until `shutdown` completes; then stops taking
    /// connections, finishes the requests in flight and the queued work, and returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.state.config.addr).await?;
        self.run_on(listener, shutdown).await
    }

    /// [`run`](Self::run) on a listener already bound (port 0 for tests).
    pub async fn run_on(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        let state = self.state;
        tokio::task::spawn_blocking(move || state.batcher.shutdown())
            .await
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The protocol whose conventions a path follows.
pub(crate) fn flavor_of(path: &str) -> Flavor {
    if path.starts_with("/v1/") || path.starts_with("/v2/") {
        Flavor::Cohere
    } else if path.starts_with("/weaviate") {
        Flavor::Weaviate
    } else if path == "/rerank" || path == "/info" || path == "/health" {
        Flavor::Tei
    } else {
        Flavor::Sieve
    }
}

/// Constant-time equality of two digests.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.key_digest else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|token| -> [u8; 32] { Sha256::digest(token.trim().as_bytes()).into() });
    match given {
        Some(digest) if same_digest(&digest, expected) => next.run(request).await,
        _ => ApiError::new(
            ErrorKind::Unauthorized,
            "invalid api token: send `Authorization: Bearer <key>`",
        )
        .respond(flavor_of(request.uri().path())),
    }
}

async fn count_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.record_request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found(headers: HeaderMap, request: Request) -> Response {
    let _ = headers;
    let path = request.uri().path().to_string();
    let mut response = ApiError::new(
        ErrorKind::NotConfigured,
        format!(
            "no route {} {path}; sieve serves /v1/rerank, /v2/rerank, /rerank, /weaviate/..., /search, /health, /info, /metrics",
            request.method()
        ),
    )
    .respond(flavor_of(&path));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_and_paths_map_to_protocols() {
        let a: [u8; 32] = Sha256::digest(b"key").into();
        let b: [u8; 32] = Sha256::digest(b"other").into();
        assert!(same_digest(&a, &a));
        assert!(!same_digest(&a, &b));
        assert_eq!(flavor_of("/v2/rerank"), Flavor::Cohere);
        assert_eq!(flavor_of("/rerank"), Flavor::Tei);
        assert_eq!(flavor_of("/weaviate/rerank"), Flavor::Weaviate);
        assert_eq!(flavor_of("/search"), Flavor::Sieve);
    }
}
