//! `sieve rerank`: rerank given candidates with a cross-encoder, no index needed.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use sieve::{RerankDoc, Reranker};

use crate::rerank_opts::{BudgetArgs, RerankerArgs};
use crate::table::{Table, snippet};

/// Arguments of `sieve rerank`.
#[derive(Args)]
pub struct RerankArgs {
    /// The query.
    #[arg(long)]
    query: String,
    /// Candidates, one JSON object per line: {"id": ..., "title": ..., "text": ...} (id and
    /// title optional).
    #[arg(long)]
    docs: PathBuf,
    /// Cross-encoder model directory (same as --reranker).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    #[command(flatten)]
    reranker: RerankerArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Show only the best N.
    #[arg(long, short)]
    k: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct InputDoc {
    #[serde(default, alias = "_id")]
    id: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    text: String,
}

fn read_docs(path: &PathBuf) -> Result<Vec<(String, String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut docs = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: cannot read line", path.display(), number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: InputDoc = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a JSON object with a \"text\" field",
                path.display(),
                number + 1
            )
        })?;
        let id = match doc.id {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => (docs.len() + 1).to_string(),
        };
        docs.push((id, doc.title.unwrap_or_default(), doc.text));
    }
    if docs.is_empty() {
        bail!("{} holds no documents", path.display());
    }
    Ok(docs)
}

pub fn run(mut args: RerankArgs) -> Result<()> {
    if args.query.trim().is_empty() {
        bail!("the query is empty");
    }
    if args.model.is_some() {
        args.reranker.reranker = args.model.take();
    }
    let docs = read_docs(&args.docs)?;
    let encoder = args.reranker.load()?;
    let inputs: Vec<RerankDoc<'_>> = docs
        .iter()
        .map(|(_, title, text)| RerankDoc::new(title, text))
        .collect();
    let started = std::time::Instant::now();
    let output = encoder.rerank_budgeted(&args.query, &inputs, &args.budget.budget()?)?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    // Raw score order (ties keep input order); under a cascade, survivors of deeper steps first.
    let no_fused_scores = vec![0.0; docs.len()];
    let mut order: Vec<usize> = sieve::rerank_order(&output, &no_fused_scores, None)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    order.truncate(args.k.unwrap_or(docs.len()));
    if args.json {
        let results: Vec<serde_json::Value> = order
            .iter()
            .enumerate()
            .map(|(rank, &i)| {
                serde_json::json!({
                    "rank": rank + 1,
                    "id": docs[i].0,
                    "input_position": i + 1,
                    "score": output.scores[i],
                    "exits": output.traces.get(i),
                })
            })
            .collect();
        let value = serde_json::json!({
            "query": args.query,
            "model": encoder.describe(),
            "results": results,
            "stats": output.stats,
            "elapsed_ms": elapsed_ms,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut table = Table::new(&[
        ("rank", true),
        ("id", false),
        ("raw", true),
        ("p(rel)", true),
        ("windows", true),
        ("text", false),
    ]);
    for (rank, &i) in order.iter().enumerate() {
        let s = output.scores[i];
        table.row(vec![
            (rank + 1).to_string(),
            docs[i].0.clone(),
            format!("{:.4}", s.raw),
            format!("{:.3}", s.calibrated),
            s.windows.to_string(),
            snippet(&format!("{} {}", docs[i].1, docs[i].2), 70),
        ]);
    }
    print!("{}", table.render());
    println!(
        "{} documents reranked by {} in {:.1} ms ({} pairs, {} batches)",
        docs.len(),
        encoder.describe(),
        elapsed_ms,
        output.stats.pairs,
        output.stats.batches
    );
    Ok(())
}
