//! sieve's side of `scripts/bench.py`: times the library's embedding path
//! ([`sieve_embed::BiEncoder::embed`]) or rerank path ([`sieve_rerank_onnx::CrossEncoder`] through
//! the [`Reranker`] trait) on inputs the script prepared, exactly as an application embedding
//! sieve would call them. Prints one JSON object (items, seconds, per-query ms) and writes the
//! outputs (vectors or raw scores) for the script's agreement check.
//!
//! ```text
//! sieve-bench embed  MODEL TEXTS_JSONL   OUT_JSON MAX_LENGTH [BATCH_TOKENS]
//! sieve-bench rerank MODEL WINDOWS_JSONL OUT_JSON MAX_LENGTH [BATCH_TOKENS]
//! ```
//! BATCH_TOKENS overrides the library's default token budget per model call (for tuning it).
//! MODEL is a model directory or an `.onnx` file (tokenizer.json beside it or in its parent).
//! TEXTS_JSONL: one JSON string per line; WINDOWS_JSONL: `{"query": "...", "docs": ["...", ...]}`
//! per line. Documents are passed as untitled text, so every peer sees the same strings; long
//! pairs are truncated (one window), as the peers do.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sieve_core::{RerankDoc, Reranker};
use sieve_embed::{BiEncoder, EmbedderConfig};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig};

fn lines(path: &str) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(&line?).with_context(|| format!("{path} line {}", i + 1))
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|d| d.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn embed(
    model: &Path,
    input: &str,
    out: &str,
    max_length: usize,
    batch: Option<usize>,
) -> Result<Value> {
    let texts: Vec<String> = lines(input)?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let encoder = BiEncoder::open(
        model,
        EmbedderConfig {
            max_length,
            batch_tokens: batch.unwrap_or(EmbedderConfig::default().batch_tokens),
            ..EmbedderConfig::default()
        },
    )?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    encoder.embed(&refs[..refs.len().min(8)])?; // warm-up
    let start = Instant::now();
    let vectors = encoder.embed(&refs)?;
    let seconds = start.elapsed().as_secs_f64();
    std::fs::write(out, serde_json::to_vec(&vectors)?)?;
    Ok(json!({"items": texts.len(), "seconds": seconds}))
}

fn rerank(
    model: &Path,
    input: &str,
    out: &str,
    max_length: usize,
    batch: Option<usize>,
) -> Result<Value> {
    let windows = lines(input)?;
    let reranker = CrossEncoder::open(
        model,
        CrossEncoderConfig {
            max_length: Some(max_length),
            max_windows: Some(1),
            batch_tokens: batch.unwrap_or(CrossEncoderConfig::default().batch_tokens),
            ..CrossEncoderConfig::default()
        },
    )?;
    let (mut all_scores, mut per_query_ms, mut pairs) = (Vec::new(), Vec::new(), 0usize);
    for (i, window) in windows.iter().enumerate() {
        let query = window["query"].as_str().unwrap_or_default();
        let texts = strings(&window["docs"]);
        let docs: Vec<RerankDoc<'_>> = texts.iter().map(|t| RerankDoc::new("", t)).collect();
        let start = Instant::now();
        let output = reranker.rerank(query, &docs)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            // The first query warms the session up, as in every peer.
            per_query_ms.push(ms);
            pairs += docs.len();
        }
        all_scores.push(output.scores.iter().map(|s| s.raw).collect::<Vec<f32>>());
    }
    std::fs::write(out, serde_json::to_vec(&all_scores)?)?;
    let seconds = per_query_ms.iter().sum::<f64>() / 1e3;
    Ok(json!({"items": pairs, "seconds": seconds, "per_query_ms": per_query_ms}))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(6..=7).contains(&args.len()) {
        bail!(
            "usage: sieve-bench embed|rerank MODEL INPUT_JSONL OUT_JSON MAX_LENGTH [BATCH_TOKENS]"
        );
    }
    let batch = match args.get(6) {
        Some(b) => Some(b.parse().context("BATCH_TOKENS")?),
        None => None,
    };
    let model = Path::new(&args[2]);
    let max_length: usize = args[5].parse().context("MAX_LENGTH")?;
    let report = match args[1].as_str() {
        "embed" => embed(model, &args[3], &args[4], max_length, batch)?,
        "rerank" => rerank(model, &args[3], &args[4], max_length, batch)?,
        other => bail!("unknown mode {other} (embed or rerank)"),
    };
    println!("{report}");
    Ok(())
}
