//! `sieve search`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve::{FusionSpec, Mode, OpenOptions, RerankSettings, SearchRequest, Sieve};

use crate::rerank_opts::RerankerArgs;
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
    /// Rerank the fused top `--window` with the cross-encoder.
    #[arg(long)]
    rerank: bool,
    /// How many fused candidates the reranker scores.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Keep only reranked results whose calibrated score (a probability) is at least this.
    #[arg(long, requires = "rerank")]
    min_score: Option<f32>,
    #[command(flatten)]
    reranker: RerankerArgs,
    /// Show every stage's rank and score per result, the rerank windows and stage timings.
    #[arg(long)]
    explain: bool,
    /// Print one JSON document (hits, per-stage ranks and scores, rerank scores, timings).
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
    let mut engine = Sieve::open_with(
        &args.index,
        OpenOptions {
            embedder_model: args.model.clone(),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open index {}", args.index.display()))?;
    if args.rerank {
        engine = engine.with_reranker(args.reranker.load()?);
    }
    let request = SearchRequest {
        query: args.query.clone(),
        k: args.k,
        mode: args.mode,
        fusion: args.fusion,
        bm25_k: args.bm25_k,
        dense_k: args.dense_k,
        rerank: args.rerank.then_some(RerankSettings {
            window: args.window,
            min_score: args.min_score,
        }),
    };
    let response = engine.search(&request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    let reranked = response.rerank.is_some();
    let mut header = vec![("rank", true), ("id", false), ("score", true)];
    if reranked {
        header.push(("p(rel)", true));
    }
    if args.explain || !reranked {
        header.extend([("bm25 rank/score", true), ("dense rank/cos", true)]);
    }
    if args.explain && reranked {
        header.extend([("fused rank/score", true), ("windows", true)]);
    }
    header.push(("title / snippet", false));
    let mut table = Table::new(&header);
    for hit in &response.hits {
        let label = if hit.title.is_empty() {
            snippet(&hit.text, 70)
        } else {
            format!("{} — {}", snippet(&hit.title, 40), snippet(&hit.text, 40))
        };
        let mut row = vec![
            hit.rank.to_string(),
            hit.id.clone(),
            format!("{:.4}", hit.score),
        ];
        if reranked {
            row.push(
                hit.rerank
                    .map(|r| format!("{:.3}", r.calibrated))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        if args.explain || !reranked {
            row.push(stage_cell(hit.bm25, 2));
            row.push(stage_cell(hit.dense, 3));
        }
        if args.explain && reranked {
            row.push(stage_cell(Some(hit.fused), 4));
            row.push(
                hit.rerank
                    .map(|r| format!("{} (best {})", r.windows, r.best_window + 1))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.push(label);
        table.row(row);
    }
    print!("{}", table.render());
    let t = &response.timings;
    let mut summary = format!(
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
    if let Some(rerank) = &response.rerank {
        summary.push_str(&format!(", rerank {:.1} ms", t.rerank_ms));
        if args.explain {
            let s = &rerank.stats;
            summary.push_str(&format!(
                "\nrerank: {} over the top {} ({} pairs in {} batches, {} padded tokens; tokenize {:.1} ms, model {:.1} ms on {}; {} below --min-score)",
                rerank.model, rerank.window, s.pairs, s.batches, s.padded_tokens, s.tokenize_ms, s.model_ms, s.device, rerank.below_min_score
            ));
        }
    }
    println!("{summary}");
    Ok(())
}
