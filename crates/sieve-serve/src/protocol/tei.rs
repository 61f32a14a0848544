//! Hugging Face Text Embeddings Inference's reranker routes: `POST /rerank` and `GET /info`
//! (`GET /health` is in the server).
//!
//! `score` is the model's calibrated probability (TEI applies a sigmoid to the logit), or its
//! raw score with `raw_scores: true`; results are sorted best first.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{SieveFields, parse_json, read_body, rerank};
use crate::error::{ApiError, Flavor, InFlavor, Rejection};
use crate::server::AppState;
use crate::text::LongDocuments;

#[derive(Debug, Deserialize)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(flatten)]
    sieve: SieveFields,
}

#[derive(Debug, Serialize)]
pub(crate) struct Rank {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    score: f32,
}

async fn handle(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<Rank>>, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request: RerankRequest = parse_json(&bytes)?;
    let budget = request.sieve.budget(&headers)?;
    let max = state.model.max_input_tokens;
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let policy = match (truncate, request.truncation_direction.as_deref()) {
        (false, _) => LongDocuments::Refuse(max),
        (true, None | Some("Right" | "right")) => LongDocuments::Cut(max),
        (true, Some("Left" | "left")) => LongDocuments::CutLeft(max),
        (true, Some(other)) => {
            return Err(ApiError::invalid(format!(
                "truncation_direction: unknown variant `{other}`, expected `Left` or `Right`"
            )));
        }
    };
    let reranked = rerank(
        &state,
        request.query,
        request.texts,
        policy,
        budget,
        "texts",
    )
    .await?;
    let scores = &reranked.scored.output.scores;
    let ranks = reranked
        .order
        .iter()
        .map(|&i| Rank {
            index: i,
            text: request.return_text.then(|| reranked.docs[i].text.clone()),
            score: if request.raw_scores {
                scores[i].raw
            } else {
                scores[i].calibrated
            },
        })
        .collect();
    Ok(Json(ranks))
}

/// `POST /rerank`.
pub(crate) async fn rerank_route(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<Rank>>, Rejection> {
    handle(state, headers, body).await.in_flavor(Flavor::Tei)
}

/// `GET /info`: TEI's fields, then sieve's own under `sieve`.
pub(crate) async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let config = &state.config;
    let reranker = &state.model.reranker;
    Json(json!({
        "model_id": state.model.id,
        "model_sha": Value::Null,
        "served_model_name": state.model.id,
        "model_dtype": if reranker.describe().contains("int8") { "int8" } else { "float32" },
        "model_type": {
            "reranker": {
                "id2label": { "0": "LABEL_0" },
                "label2id": { "LABEL_0": 0 }
            }
        },
        "max_concurrent_requests": config.max_queue,
        "max_input_length": state.model.max_input_tokens,
        "max_batch_tokens": config.max_batch_tokens,
        "max_batch_requests": config.max_batch_requests,
        "max_client_batch_size": config.max_documents,
        "auto_truncate": config.auto_truncate,
        "tokenization_workers": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": Value::Null,
        "docker_label": Value::Null,
        "sieve": {
            "model": reranker.describe(),
            "recommended_blend": reranker.recommended_blend().map(|w| (f64::from(w) * 1e4).round() / 1e4),
            "reads_document_states": reranker.state_codec_id().is_some(),
            "index": state.has_index,
            "batch_wait_ms": config.batch_wait.as_secs_f64() * 1e3,
            "request_timeout_ms": config.request_timeout.as_secs_f64() * 1e3,
            "max_body_bytes": config.max_body_bytes,
            "state_cache_bytes": config.state_cache_bytes,
            "uptime_s": state.started.elapsed().as_secs_f64(),
        }
    }))
}
