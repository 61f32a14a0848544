//! Errors of the HTTP layer, answered in the shape and with the status code of the protocol the
//! request came in with (Cohere, TEI, Weaviate or sieve's own).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which protocol's error conventions an answer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Cohere (`/v1/rerank`, `/v2/rerank`): `{"message": ...}`.
    Cohere,
    /// Text Embeddings Inference (`/rerank`): `{"error": ..., "error_type": ...}`.
    Tei,
    /// Weaviate's reranker-transformers container (`/weaviate/...`): `{"error": ...}`, the
    /// field Weaviate's module reports.
    Weaviate,
    /// sieve's own routes (`/search`): TEI's shape, which carries a machine-readable kind.
    Sieve,
}

/// What went wrong, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON, or not JSON of the expected shape.
    Syntax,
    /// A field is missing, has the wrong type or an unusable value.
    Validation,
    /// The query or the document list is empty.
    Empty,
    /// Too many documents in one request.
    TooManyDocuments,
    /// A document or query longer than allowed, and truncation is off.
    TooLong,
    /// The body is larger than the server accepts.
    BodyTooLarge,
    /// The queue is full: try again later.
    Overloaded,
    /// The request was not answered within the server's deadline.
    Timeout,
    /// A missing or wrong API key.
    Unauthorized,
    /// The model failed.
    Backend,
    /// The server is shutting down or its model worker stopped.
    Unavailable,
    /// The route needs something this server was not started with (e.g. `/search` without
    /// `--index`).
    NotConfigured,
}

/// An error answer: a kind and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The explanation sent to the client.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A validation error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    /// The HTTP status this error gets under `flavor`'s conventions.
    pub fn status(&self, flavor: Flavor) -> StatusCode {
        use ErrorKind::*;
        match (flavor, self.kind) {
            (_, Overloaded) => StatusCode::TOO_MANY_REQUESTS,
            (_, Timeout) => StatusCode::GATEWAY_TIMEOUT,
            (_, Unauthorized) => StatusCode::UNAUTHORIZED,
            (_, Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            (_, BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            (_, NotConfigured) => StatusCode::NOT_FOUND,
            // TEI: validation errors (batch size, input length) and JSON data errors are 422,
            // JSON syntax errors and empty inputs 400, backend failures 424
            // (router/src/http/server.rs and axum's Json rejections).
            (Flavor::Tei | Flavor::Sieve, Validation | TooManyDocuments | TooLong) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            (Flavor::Tei | Flavor::Sieve, Syntax | Empty) => StatusCode::BAD_REQUEST,
            (Flavor::Tei | Flavor::Sieve, Backend) => StatusCode::FAILED_DEPENDENCY,
            // Cohere: every request problem is a 400 `invalid request: ...`.
            (Flavor::Cohere, Syntax | Validation | Empty | TooManyDocuments | TooLong) => {
                StatusCode::BAD_REQUEST
            }
            // The Weaviate container is a FastAPI app: body validation is 422.
            (Flavor::Weaviate, Syntax | Validation | Empty | TooManyDocuments | TooLong) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            (Flavor::Cohere | Flavor::Weaviate, Backend) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// TEI's `error_type` for this error: the name of TEI's `ErrorType` variant.
    fn tei_type(&self) -> &'static str {
        use ErrorKind::*;
        match self.kind {
            Syntax | Validation | TooManyDocuments | TooLong | BodyTooLarge => "Validation",
            Empty => "Empty",
            Overloaded => "Overloaded",
            Backend => "Backend",
            Unavailable | Timeout => "Unhealthy",
            Unauthorized => "Unauthorized",
            NotConfigured => "NotFound",
        }
    }

    /// The full answer under `flavor`'s conventions.
    pub fn respond(&self, flavor: Flavor) -> Response {
        let body = match flavor {
            Flavor::Cohere => json!({ "message": self.cohere_message() }),
            Flavor::Tei | Flavor::Sieve => {
                json!({ "error": self.message, "error_type": self.tei_type() })
            }
            Flavor::Weaviate => json!({ "error": self.message }),
        };
        (self.status(flavor), axum::Json(body)).into_response()
    }

    fn cohere_message(&self) -> String {
        match self.kind {
            ErrorKind::Syntax
            | ErrorKind::Validation
            | ErrorKind::Empty
            | ErrorKind::TooManyDocuments
            | ErrorKind::TooLong => format!("invalid request: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// An [`ApiError`] bound to the protocol it is answered in: what handlers return.
#[derive(Debug)]
pub struct Rejection(pub Flavor, pub ApiError);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.1.respond(self.0)
    }
}

/// Attaches a protocol to errors, for `?` in handlers.
pub trait InFlavor<T> {
    /// The error answered under `flavor`'s conventions.
    fn in_flavor(self, flavor: Flavor) -> Result<T, Rejection>;
}

impl<T> InFlavor<T> for Result<T, ApiError> {
    fn in_flavor(self, flavor: Flavor) -> Result<T, Rejection> {
        self.map_err(|e| Rejection(flavor, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_gets_its_own_status_codes() {
        let too_many = ApiError::new(ErrorKind::TooManyDocuments, "2000 > 1000");
        assert_eq!(
            too_many.status(Flavor::Tei),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(too_many.status(Flavor::Cohere), StatusCode::BAD_REQUEST);
        let empty = ApiError::new(ErrorKind::Empty, "query is empty");
        assert_eq!(empty.status(Flavor::Tei), StatusCode::BAD_REQUEST);
        assert_eq!(
            empty.status(Flavor::Weaviate),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let busy = ApiError::new(ErrorKind::Overloaded, "queue full");
        for flavor in [Flavor::Tei, Flavor::Cohere, Flavor::Weaviate, Flavor::Sieve] {
            assert_eq!(busy.status(flavor), StatusCode::TOO_MANY_REQUESTS);
        }
        assert_eq!(empty.cohere_message(), "invalid request: query is empty");
        assert_eq!(busy.tei_type(), "Overloaded");
    }
}
