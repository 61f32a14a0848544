//! The protocols, and what they share: reading a bounded JSON body, sieve's optional budget
//! fields, and one rerank call through the model worker.

pub mod cohere;
pub mod search;
pub mod tei;
pub mod weaviate;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sieve::Budget;
use tokio::sync::oneshot;

use crate::batcher::{RerankJob, Scored};
use crate::error::{ApiError, ErrorKind};
use crate::server::AppState;
use crate::text::{Document, LongDocuments};

/// The header that carries a budget for clients that cannot add body fields.
pub const BUDGET_HEADER: &str = "x-sieve-budget";

/// Reads the body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::new(
                ErrorKind::BodyTooLarge,
                format!("the request body is larger than the server's limit of {limit} bytes"),
            )
        } else {
            ApiError::invalid(format!("cannot read the request body: {e}"))
        }
    })
}

/// Parses a JSON body (whatever its content type: `curl -d` sends a form type).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorKind::Syntax,
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("the JSON body does not fit: {e}"))
        }
        _ => ApiError::new(
            ErrorKind::Syntax,
            format!("the request body is not valid JSON: {e}"),
        ),
    })
}

/// sieve's own fields, accepted beside every protocol's (the originals ignore them).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SieveFields {
    /// A budget in the CLI's forms: a profile (`fast`), `L:W`, a cascade `100@6,30@7,10@8`.
    #[serde(default)]
    pub budget: Option<String>,
    /// One exit, `L:W`.
    #[serde(default)]
    pub exit: Option<String>,
    /// A cascade, `KEEP@L[:W],...`.
    #[serde(default)]
    pub cascade: Option<String>,
}

impl SieveFields {
    /// The budget the fields (else the `x-sieve-budget` header) ask for.
    pub fn budget(&self, headers: &HeaderMap) -> Result<Budget, ApiError> {
        let given: Vec<(&str, &str)> = [
            ("budget", self.budget.as_deref()),
            ("exit", self.exit.as_deref()),
            ("cascade", self.cascade.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
        let (name, spec) = match given.as_slice() {
            [] => match headers.get(BUDGET_HEADER) {
                None => return Ok(Budget::Default),
                Some(value) => (
                    BUDGET_HEADER,
                    value.to_str().map_err(|_| {
                        ApiError::invalid(format!("the {BUDGET_HEADER} header is not text"))
                    })?,
                ),
            },
            [one] => *one,
            _ => {
                return Err(ApiError::invalid(
                    "give at most one of `budget`, `exit` and `cascade`",
                ));
            }
        };
        let budget = Budget::parse(spec).map_err(|e| ApiError::invalid(format!("{name}: {e}")))?;
        let fits = match name {
            "exit" => matches!(budget, Budget::Exit { .. }),
            "cascade" => matches!(budget, Budget::Cascade(_)),
            _ => true,
        };
        if !fits {
            return Err(ApiError::invalid(format!(
                "{name} `{spec}` is not of the form {}",
                if name == "exit" {
                    "LAYER:WIDTH"
                } else {
                    "KEEP@LAYER[:WIDTH],..."
                }
            )));
        }
        Ok(budget)
    }
}

/// One rerank through the model worker: the documents as scored and the worker's answer.
pub(crate) struct Reranked {
    /// The documents as the model read them (after any cut).
    pub docs: Vec<Document>,
    /// The scores, in input order.
    pub scored: Scored,
    /// Positions into `docs`, best first (sieve's CLI order).
    pub order: Vec<usize>,
}

/// Checks `query` and `texts` against the limits, cuts or refuses long documents under `policy`,
/// queues the request and waits for its answer (or the deadline). `field` names the documents
/// field in errors.
pub(crate) async fn rerank(
    state: &Arc<AppState>,
    query: String,
    texts: Vec<String>,
    policy: LongDocuments,
    budget: Budget,
    field: &'static str,
) -> Result<Reranked, ApiError> {
    let deadline = Instant::now() + state.config.request_timeout;
    if query.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::Empty, "`query` cannot be empty"));
    }
    if texts.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Empty,
            format!("`{field}` cannot be empty"),
        ));
    }
    if texts.len() > state.config.max_documents {
        return Err(ApiError::new(
            ErrorKind::TooManyDocuments,
            format!(
                "batch size {} > maximum allowed batch size {} (`{field}` holds too many documents)",
                texts.len(),
                state.config.max_documents
            ),
        ));
    }
    let worker_state = state.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let tokens = &worker_state.model.tokens;
        let query_tokens = tokens.count(&query)?;
        let max_query = worker_state.config.max_query_tokens;
        if query_tokens > max_query {
            return Err(ApiError::new(
                ErrorKind::TooLong,
                format!("`query` must have less than {max_query} tokens. Given: {query_tokens}"),
            ));
        }
        Ok((query, tokens.prepare(texts, policy, field)?))
    })
    .await
    .map_err(|e| ApiError::new(ErrorKind::Backend, format!("tokenization task failed: {e}")))??;
    let (query, docs) = prepared;
    let (reply, answer) = oneshot::channel();
    state.batcher.rerank(RerankJob {
        query,
        docs: docs.clone(),
        budget,
        deadline,
        reply,
    })?;
    let scored = match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "the model worker stopped before answering",
            ));
        }
        Err(_) => {
            state
                .metrics
                .timed_out
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::new(
                ErrorKind::Timeout,
                "the request was not answered within the server's deadline",
            ));
        }
    };
    let no_first_stage = vec![0.0; docs.len()];
    let order = sieve::rerank_order(&scored.output, &no_first_stage, None)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    Ok(Reranked {
        docs,
        scored,
        order,
    })
}

/// A Cohere-style `id`: unique per answer, without a random-number dependency.
pub(crate) fn response_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = Sha256::digest(format!("{now}:{n}:{}", std::process::id()));
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_come_from_one_field_or_the_header() {
        let none = SieveFields::default();
        let mut headers = HeaderMap::new();
        assert_eq!(none.budget(&headers).unwrap(), Budget::Default);
        headers.insert(BUDGET_HEADER, "fast".parse().unwrap());
        assert_eq!(
            none.budget(&headers).unwrap(),
            Budget::Profile("fast".into())
        );
        let exit = SieveFields {
            exit: Some("7:192".into()),
            ..SieveFields::default()
        };
        assert_eq!(
            exit.budget(&headers).unwrap(),
            Budget::Exit {
                layer: 7,
                width: 192
            }
        );
        let wrong = SieveFields {
            exit: Some("100@6".into()),
            ..SieveFields::default()
        };
        assert!(wrong.budget(&headers).is_err());
        let two = SieveFields {
            budget: Some("fast".into()),
            cascade: Some("100@6,10@8".into()),
            ..SieveFields::default()
        };
        assert!(two.budget(&headers).is_err());
        let id = response_id();
        assert_eq!(id.len(), 36);
        assert_ne!(id, response_id());
    }

    #[test]
    fn json_errors_say_syntax_or_shape() {
        #[derive(Deserialize, Debug)]
        struct Q {
            #[allow(dead_code)]
            query: String,
        }
        assert_eq!(parse_json::<Q>(b"").unwrap_err().kind, ErrorKind::Syntax);
        assert_eq!(
            parse_json::<Q>(b"{bad").unwrap_err().kind,
            ErrorKind::Syntax
        );
        let missing = parse_json::<Q>(b"{}").unwrap_err();
        assert_eq!(missing.kind, ErrorKind::Validation);
        assert!(missing.message.contains("query"), "{}", missing.message);
    }
}
