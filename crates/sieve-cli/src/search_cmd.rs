//! `sieve search`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve::{FusionSpec, Mode, OpenOptions, RerankSettings, SearchRequest, Sieve};

use crate::rerank_opts::{BudgetArgs, RerankerArgs, parse_blend};
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
    #[command(flatten)]
    budget: BudgetArgs,
    /// Blend with the fused first-stage score: `model` (the weight in the model's manifest, if
    /// any), `off` (pure reranker order) or a reranker weight W in [0, 1].
    #[arg(long, default_value = "model", value_name = "model|off|W")]
    blend: String,
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

/// `2:-1.20 4:0.85 6:1.93 (pruned after 4)`.
fn exit_cell(trace: &sieve::ExitTrace) -> String {
    let mut cell = trace
        .exits
        .iter()
        .map(|e| format!("{}:{:.2}", e.layer, e.raw))
        .collect::<Vec<_>>()
        .join(" ");
    match trace.pruned_at {
        Some(0) => cell.push_str("(not scored: over the latency budget)"),
        Some(layer) => cell.push_str(&format!(" (pruned after {layer})")),
        None => {}
    }
    cell
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
        rerank: if args.rerank {
            Some(RerankSettings {
                window: args.window,
                min_score: args.min_score,
                budget: args.budget.budget()?,
                blend: parse_blend(&args.blend)?,
            })
        } else {
            None
        },
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
    let has_exits = response.hits.iter().any(|h| h.exits.is_some());
    if args.explain && reranked {
        header.extend([("fused rank/score", true), ("windows", true)]);
        if has_exits {
            header.push(("exit scores (layer:raw)", false));
        }
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
            if has_exits {
                row.push(
                    hit.exits
                        .as_ref()
                        .map(exit_cell)
                        .unwrap_or_else(|| "-".into()),
                );
            }
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
            if !s.plan.is_empty() {
                summary.push_str(&format!("\nplan: {}", s.plan));
                for seg in &s.segments {
                    summary.push_str(&format!(
                        "; segment {} (to layer {}): {} pairs, {:.1} ms",
                        seg.segment, seg.exit_layer, seg.pairs, seg.ms
                    ));
                }
            }
            match rerank.blend {
                Some(w) => summary.push_str(&format!(
                    "\nscore = {w:.2}·reranker + {:.2}·fused (both min-max normalised over the window; --blend off for the pure reranker order)",
                    1.0 - w
                )),
                None => summary.push_str("\nscore = reranker raw score (no blend)"),
            }
            if let Some(note) = &s.budget_note {
                summary.push_str(&format!("\nbudget: {note}"));
            }
        }
    }
    println!("{summary}");
    Ok(())
}
