//! `sieve eval`: score a TREC run file against qrels.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve_eval::{MetricSpec, Qrels, Run, evaluate};

use crate::table::Table;

/// Arguments of `sieve eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Relevance judgments: BEIR `qrels/<split>.tsv` (query-id, corpus-id, score) or TREC
    /// (`qid 0 docid rel`) format, detected from the first line.
    #[arg(long)]
    qrels: PathBuf,
    /// TREC run files to score (`qid Q0 docid rank score tag`).
    #[arg(long, required = true, num_args = 1..)]
    run: Vec<PathBuf>,
    /// Metrics, comma separated.
    #[arg(
        long,
        default_value = "ndcg@10,mrr@10,recall@100,map@100",
        value_delimiter = ','
    )]
    metrics: Vec<String>,
    /// Lowest relevance grade counted as relevant by MRR, Recall and MAP (TREC DL uses 2).
    #[arg(long, default_value_t = 1)]
    relevance_threshold: i32,
    /// Print JSON (means, per-query values) instead of a table.
    #[arg(long)]
    json: bool,
}

fn load_qrels(path: &PathBuf) -> Result<Qrels> {
    let first = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let trec = first.split_whitespace().count() == 4;
    Ok(if trec {
        Qrels::load_trec(path)?
    } else {
        Qrels::load_beir(path)?
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    let spec = MetricSpec::parse(&args.metrics)?.with_relevance_threshold(args.relevance_threshold);
    let qrels = load_qrels(&args.qrels)?;
    let mut reports = Vec::new();
    for path in &args.run {
        let run = Run::load_trec(path)?;
        reports.push((path.display().to_string(), evaluate(&qrels, &run, &spec)));
    }
    if args.json {
        let value: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(name, report)| Ok((name.clone(), serde_json::to_value(report)?)))
            .collect::<Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut header: Vec<(&str, bool)> = vec![("run", false), ("queries", true)];
    let names: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    header.extend(names.iter().map(|n| (n.as_str(), true)));
    let mut table = Table::new(&header);
    for (name, report) in &reports {
        let mut row = vec![name.clone(), report.num_queries.to_string()];
        row.extend(
            spec.metrics
                .iter()
                .map(|m| format!("{:.4}", report.mean(*m).unwrap_or(0.0))),
        );
        table.row(row);
    }
    print!("{}", table.render());
    Ok(())
}
