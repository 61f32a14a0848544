//! `sieve serve`: the rerank stage over HTTP (Cohere, TEI and Weaviate protocols, `/search`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use sieve::{Reranker, Sieve};
use sieve_serve::{ModelInfo, ServeConfig, Server};

use crate::rerank_opts::RerankerArgs;

/// Arguments of `sieve serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback unless told otherwise: 0.0.0.0 exposes the server).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 = any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Index directory for `POST /search` (the rerank routes need no index).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    #[command(flatten)]
    reranker: RerankerArgs,
    /// File holding the bearer token every scoring route requires (or set SIEVE_API_KEY).
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Document tokens one batch gathers at most, across concurrent requests.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Requests one batch gathers at most (1 = no batching across requests).
    #[arg(long, default_value_t = 32)]
    max_batch_requests: usize,
    /// How long a batch waits for more requests after its first one arrived.
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
    /// Requests waiting for the model at most; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Most documents in one request.
    #[arg(long, default_value_t = 1000)]
    max_documents: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Longest query, in tokens.
    #[arg(long, default_value_t = 512)]
    max_query_tokens: usize,
    /// Requests not answered within this many milliseconds get 504.
    #[arg(long, default_value_t = 60_000)]
    request_timeout_ms: u64,
    /// Memory for the document-state cache of the late-joined reranker, in MiB (0 = off).
    #[arg(long, default_value_t = 256)]
    state_cache_mb: usize,
    /// Refuse TEI requests' long documents unless they send `truncate: true` (TEI's default);
    /// without this flag they are cut to the model's input length.
    #[arg(long)]
    no_auto_truncate: bool,
}

fn api_key(args: &ServeArgs) -> Result<Option<String>> {
    let key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the API key file {}", path.display()))?,
        ),
        None => std::env::var("SIEVE_API_KEY").ok(),
    };
    match key.map(|k| k.trim().to_string()) {
        Some(k) if k.is_empty() => bail!("the API key is empty"),
        other => Ok(other),
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let encoder = args.reranker.load()?;
    let model_dir = encoder.model_dir().to_path_buf();
    let id = model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model_dir.display().to_string());
    let max_input_tokens = encoder
        .late_joined_manifest()
        .map(|m| m.tower.doc_max_length)
        .unwrap_or_else(|| encoder.max_length());
    let tokenizer = encoder.tokenizer_path().to_path_buf();
    let reranker: Arc<dyn Reranker> = encoder;
    let engine = match &args.index {
        Some(dir) => Some(Arc::new(
            Sieve::open(dir)
                .with_context(|| format!("cannot open index {}", dir.display()))?
                .with_reranker(reranker.clone()),
        )),
        None => None,
    };
    let config = ServeConfig {
        addr: SocketAddr::new(args.host, args.port),
        max_body_bytes: args.max_body_bytes,
        max_documents: args.max_documents,
        max_query_tokens: args.max_query_tokens,
        auto_truncate: !args.no_auto_truncate,
        max_queue: args.max_queue,
        batch_wait: Duration::from_millis(args.batch_wait_ms),
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        state_cache_bytes: args.state_cache_mb.saturating_mul(1024 * 1024),
        api_key: api_key(&args)?,
    };
    let describe = reranker.describe();
    let with_key = config.api_key.is_some();
    let model =
        ModelInfo::new(id, reranker, &tokenizer, max_input_tokens).map_err(anyhow::Error::msg)?;
    let server = Server::new(config, model, engine).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "sieve serve: listening on http://{addr} — reranker {describe}{}{}",
            args.index
                .as_ref()
                .map(|d| format!(", index {}", d.display()))
                .unwrap_or_default(),
            if with_key { ", API key required" } else { "" }
        );
        eprintln!(
            "  routes: POST /v1/rerank /v2/rerank (Cohere), POST /rerank GET /info /health (TEI), /weaviate/* (Weaviate), POST /search, GET /metrics"
        );
        server
            .run_on(listener, sieve_serve::shutdown_signal())
            .await
            .context("the server failed")?;
        eprintln!("sieve serve: stopped (in-flight requests answered)");
        Ok(())
    })
}
