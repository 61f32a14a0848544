//! Weaviate's `reranker-transformers` inference container, under `/weaviate`: point Weaviate's
//! module at it with `RERANKER_INFERENCE_API=http://HOST:PORT/weaviate`.
//!
//! `POST /weaviate/rerank` takes `{"query", "documents": [...]}` and answers
//! `{"query", "scores": [{"document", "score"}], "property": null, "score": null}` with the
//! scores in the documents' order (Weaviate assigns them by position and sorts them itself), or,
//! given only `property`, scores that one text: `{"query", "scores": null, "property", "score"}`.
//! `GET /weaviate/meta` describes the model. The readiness and liveness probes are in the
//! server. Weaviate's module sends no Content-Type and no API key.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{SieveFields, parse_json, read_body, rerank as run_rerank};
use crate::error::{ApiError, Flavor, InFlavor, Rejection};
use crate::server::AppState;
use crate::text::LongDocuments;

#[derive(Debug, Deserialize)]
struct RerankRequest {
    query: String,
    /// The documents; older module versions send a single `property` text instead.
    #[serde(default)]
    documents: Option<Vec<String>>,
    #[serde(default)]
    property: Option<String>,
    #[serde(flatten)]
    sieve: SieveFields,
}

#[derive(Debug, Serialize)]
pub(crate) struct DocumentScore {
    document: String,
    score: f32,
}

/// All four keys are always present, as the container's answer has them.
#[derive(Debug, Serialize)]
pub(crate) struct RerankResponse {
    query: String,
    scores: Option<Vec<DocumentScore>>,
    property: Option<String>,
    score: Option<f32>,
}

async fn handle(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request: RerankRequest = parse_json(&bytes)?;
    let budget = request.sieve.budget(&headers)?;
    // Batch mode when `documents` is given (Weaviate also sends `"property": ""` then); else
    // the single text `property` is scored.
    let (documents, single) = match (request.documents, request.property) {
        (Some(documents), _) => (documents, None),
        (None, Some(property)) => (vec![property.clone()], Some(property)),
        (None, None) => {
            return Err(ApiError::invalid(
                "missing field `documents` (or `property`)",
            ));
        }
    };
    let query = request.query.clone();
    let reranked = run_rerank(
        &state,
        request.query,
        documents.clone(),
        LongDocuments::Cut(state.model.max_input_tokens),
        budget,
        "documents",
    )
    .await?;
    let scores = &reranked.scored.output.scores;
    if let Some(property) = single {
        return Ok(Json(RerankResponse {
            query,
            scores: None,
            property: Some(property),
            score: scores.first().map(|s| s.calibrated),
        }));
    }
    let scores = documents
        .into_iter()
        .zip(scores)
        .map(|(document, s)| DocumentScore {
            document,
            score: s.calibrated,
        })
        .collect();
    Ok(Json(RerankResponse {
        query,
        scores: Some(scores),
        property: None,
        score: None,
    }))
}

/// `POST /weaviate/rerank`.
pub(crate) async fn rerank(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, Rejection> {
    handle(state, headers, body)
        .await
        .in_flavor(Flavor::Weaviate)
}

/// `GET /weaviate/meta`.
pub(crate) async fn meta(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "model": {
            "_name_or_path": state.model.id,
            "architectures": ["SieveLateJoinedCrossEncoder"],
            "max_position_embeddings": state.model.max_input_tokens,
            "sieve": state.model.reranker.describe(),
        }
    }))
}
