//! Cohere's rerank API, `POST /v1/rerank` and `POST /v2/rerank` (Jina's clients send the same
//! request shape to `/v1/rerank` and read the same answer fields).
//!
//! `relevance_score` is the model's calibrated probability of relevance (in [0, 1], as Cohere's);
//! results are in sieve's order, best first, cut to `top_n`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SieveFields, parse_json, read_body, rerank, response_id};
use crate::error::{ApiError, Flavor, InFlavor, Rejection};
use crate::server::AppState;
use crate::text::LongDocuments;

/// A document as Cohere v1 accepts it: a string or an object with a `text` field.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum DocumentIn {
    Text(String),
    Object(serde_json::Map<String, Value>),
}

#[derive(Debug, Deserialize)]
struct RerankRequest {
    query: String,
    documents: Vec<DocumentIn>,
    #[serde(default)]
    top_n: Option<i64>,
    #[serde(default)]
    return_documents: Option<bool>,
    #[serde(default)]
    max_tokens_per_doc: Option<i64>,
    #[serde(default)]
    rank_fields: Option<Vec<String>>,
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    sieve: SieveFields,
}

#[derive(Debug, Serialize)]
pub(crate) struct ResultItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Value>,
    index: usize,
    relevance_score: f32,
}

#[derive(Debug, Serialize)]
pub(crate) struct ApiVersion {
    version: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct BilledUnits {
    search_units: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Meta {
    api_version: ApiVersion,
    billed_units: BilledUnits,
}

#[derive(Debug, Serialize)]
pub(crate) struct RerankResponse {
    id: String,
    results: Vec<ResultItem>,
    meta: Meta,
}

/// The text sieve scores for document `i`: the string, or an object's `text` (or its
/// `rank_fields`, each written `field: value` on its own line, as Cohere does).
fn document_text(
    i: usize,
    doc: &DocumentIn,
    rank_fields: Option<&[String]>,
) -> Result<String, ApiError> {
    match doc {
        DocumentIn::Text(text) => Ok(text.clone()),
        DocumentIn::Object(map) => match rank_fields {
            Some(fields) if !fields.is_empty() => {
                let mut lines = Vec::new();
                for field in fields {
                    match map.get(field) {
                        Some(Value::String(s)) => lines.push(format!("{field}: {s}")),
                        Some(other) => lines.push(format!("{field}: {other}")),
                        None => {}
                    }
                }
                if lines.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "documents[{i}] has none of the rank_fields {fields:?}"
                    )));
                }
                Ok(lines.join("\n"))
            }
            _ => match map.get("text") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(ApiError::invalid(format!(
                    "documents[{i}] is an object without a string `text` field"
                ))),
            },
        },
    }
}

async fn handle(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    version: &'static str,
) -> Result<Json<RerankResponse>, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request: RerankRequest = parse_json(&bytes)?;
    let _ = &request.model; // any model name is accepted: one model is loaded
    let budget = request.sieve.budget(&headers)?;
    if let Some(n) = request.top_n
        && n < 1
    {
        return Err(ApiError::invalid("top_n must be at least 1"));
    }
    let cut = match request.max_tokens_per_doc {
        Some(n) if n < 1 => return Err(ApiError::invalid("max_tokens_per_doc must be at least 1")),
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(state.model.max_input_tokens),
        None => state.model.max_input_tokens,
    };
    let texts = request
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| document_text(i, d, request.rank_fields.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let count = texts.len();
    let reranked = rerank(
        &state,
        request.query,
        texts,
        LongDocuments::Cut(cut),
        budget,
        "documents",
    )
    .await?;
    let top_n = request
        .top_n
        .map_or(count, |n| usize::try_from(n).unwrap_or(count));
    // Documents are echoed only when asked (v2's SDK has no such option; other clients send it).
    let echo = request.return_documents.unwrap_or(false);
    let results = reranked
        .order
        .iter()
        .take(top_n)
        .map(|&i| ResultItem {
            document: echo.then(|| match &request.documents[i] {
                DocumentIn::Text(text) => serde_json::json!({ "text": text }),
                DocumentIn::Object(map) => Value::Object(map.clone()),
            }),
            index: i,
            relevance_score: reranked.scored.output.scores[i].calibrated,
        })
        .collect();
    Ok(Json(RerankResponse {
        id: response_id(),
        results,
        meta: Meta {
            api_version: ApiVersion { version },
            billed_units: BilledUnits {
                search_units: count.div_ceil(100),
            },
        },
    }))
}

/// `POST /v1/rerank`.
pub(crate) async fn rerank_v1(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, Rejection> {
    handle(state, headers, body, "1")
        .await
        .in_flavor(Flavor::Cohere)
}

/// `POST /v2/rerank`.
pub(crate) async fn rerank_v2(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, Rejection> {
    handle(state, headers, body, "2")
        .await
        .in_flavor(Flavor::Cohere)
}
