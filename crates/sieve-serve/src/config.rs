//! What a server is allowed to do: its address, limits and batching settings.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one `sieve serve` process. [`ServeConfig::default`] is what `sieve serve` runs
/// with when given no options.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen. The default binds loopback only: exposing the server is a decision.
    pub addr: SocketAddr,
    /// Largest request body in bytes; larger bodies get 413 before they are parsed.
    pub max_body_bytes: usize,
    /// Most documents (TEI `texts`) in one request; more get 413 (TEI) or 400 (Cohere).
    pub max_documents: usize,
    /// Longest query in tokens; longer queries are refused (the model reads only its first
    /// `query_max_tokens` anyway, so this bounds work, not quality).
    pub max_query_tokens: usize,
    /// TEI's `truncate` when a request leaves it out: `true` cuts long documents to the model's
    /// input length, `false` refuses them with 413 as TEI does.
    pub auto_truncate: bool,
    /// Requests waiting for the model at most; one more is answered 429 at once.
    pub max_queue: usize,
    /// How long the batcher waits for more requests to join a batch, counted from the arrival of
    /// the batch's first request (0 = only what is already queued joins).
    pub batch_wait: Duration,
    /// Document tokens one batch gathers at most, across requests.
    pub max_batch_tokens: usize,
    /// Requests one batch gathers at most (1 = no batching across requests).
    pub max_batch_requests: usize,
    /// A request still waiting or running after this long is answered 504 and its queued work
    /// is dropped.
    pub request_timeout: Duration,
    /// Bytes of document states (the late-joined reranker's precomputed tower output) kept in
    /// memory for documents seen before; 0 disables the cache.
    pub state_cache_bytes: usize,
    /// The bearer token every scoring route requires, if set (health, readiness and info routes
    /// stay open so that orchestrators can probe them).
    pub api_key: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            max_documents: 1000,
            max_query_tokens: 512,
            auto_truncate: true,
            max_queue: 64,
            batch_wait: Duration::from_millis(5),
            max_batch_tokens: 16384,
            max_batch_requests: 32,
            request_timeout: Duration::from_secs(60),
            state_cache_bytes: 256 * 1024 * 1024,
            api_key: None,
        }
    }
}

impl ServeConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max body bytes", self.max_body_bytes),
            ("max documents", self.max_documents),
            ("max query tokens", self.max_query_tokens),
            ("max queue", self.max_queue),
            ("max batch tokens", self.max_batch_tokens),
            ("max batch requests", self.max_batch_requests),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("the request timeout must be positive".into());
        }
        if matches!(&self.api_key, Some(k) if k.trim().is_empty()) {
            return Err("the API key is empty".into());
        }
        Ok(())
    }
}
