//! `sieve search`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve::{FusionSpec, Mode, OpenOptions, SearchRequest, Sieve};

use crate::table::{Table, snippet};

/// Arguments of `sieve search`.
#[derive(Args)]
pub struct SearchArgs {
    /// Index directory made by `sieve index`.
    index: PathBuf,
    /// The query.
    query: String,
    /// Number of results.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    /// Retrievers: bm25, dense or hybrid.
    #[arg(long, default_value = "hybrid")]
    mode: Mode,
    /// Fusion for hybrid mode: rrf, rrf:K, or weighted:W (W = dense weight, BM25 gets 1-W).
    #[arg(long, default_value = "rrf")]
    fusion: FusionSpec,
    /// Candidates taken from BM25.
    #[arg(long, default_value_t = 100)]
    bm25_k: usize,
    /// Candidates taken from the dense retriever.
    #[arg(long, default_value_t = 100)]
    dense_k: usize,
    /// Query embedder model directory [default: the one recorded in the index].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print one JSON document (hits, per-stage ranks and scores, timings).
    #[arg(long)]
    json: bool,
}

fn stage_cell(stage: Option<sieve::StageScore>, precision: usize) -> String {
    match stage {
        Some(s) => format!("{:>3} {:.*}", s.rank, precision, s.score),
        None => "-".to_string(),
    }
}

pub fn run(args: SearchArgs) -> Result<()> {
    let engine = Sieve::open_with(
        &args.index,
        OpenOptions {
            embedder_model: args.model.clone(),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open index {}", args.index.display()))?;
    let request = SearchRequest {
        query: args.query.clone(),
        k: args.k,
        mode: args.mode,
        fusion: args.fusion,
        bm25_k: args.bm25_k,
        dense_k: args.dense_k,
    };
    let response = engine.search(&request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    let mut table = Table::new(&[
        ("rank", true),
        ("id", false),
        ("score", true),
        ("bm25 rank/score", true),
        ("dense rank/cos", true),
        ("title / snippet", false),
    ]);
    for hit in &response.hits {
        let label = if hit.title.is_empty() {
            snippet(&hit.text, 70)
        } else {
            format!("{} — {}", snippet(&hit.title, 40), snippet(&hit.text, 40))
        };
        table.row(vec![
            hit.rank.to_string(),
            hit.id.clone(),
            format!("{:.4}", hit.score),
            stage_cell(hit.bm25, 2),
            stage_cell(hit.dense, 3),
            label,
        ]);
    }
    print!("{}", table.render());
    let t = &response.timings;
    println!(
        "{} hits of {} candidates ({}{}) in {:.1} ms: bm25 {:.1} ms, dense {:.1} ms (embed {:.1}), fusion {:.2} ms, fetch {:.2} ms",
        response.hits.len(),
        response.candidates,
        response.mode,
        response
            .fusion
            .as_deref()
            .map(|f| format!(", {f}"))
            .unwrap_or_default(),
        t.total_ms,
        t.bm25_ms,
        t.dense_ms,
        t.embed_ms,
        t.fusion_ms,
        t.fetch_ms
    );
    Ok(())
}
