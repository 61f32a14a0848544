//! `sieve calibrate`: measure a segmented (Matryoshka) reranker's cost table on this machine,
//! store it beside the model, and check how well it predicts real rerank calls.
//!
//! The cost table (`cost.json`) gives milliseconds per (query, window) pair per segment per
//! token-length bucket; `--latency-ms` budgets use it to pick the deepest plan that fits. The
//! check (`--check N`) runs every profile, every single exit and a set of latency budgets on a
//! fixed workload — the bundled sample corpus, rotated so every call gets different documents —
//! and reports predicted against measured model time: the tolerance the predictions hold.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use sieve::RerankDoc;
use sieve_rerank_onnx::{COST_FILE, CostCheckOptions, CostOptions, CrossEncoder};

use crate::rerank_opts::RerankerArgs;
use crate::table::Table;

/// Arguments of `sieve calibrate`.
#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    reranker: RerankerArgs,
    /// Parquet corpus (columns id, text, optional title) the sample pairs are cut from
    /// [default: the bundled examples/sample/corpus.parquet].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Query of the sample pairs.
    #[arg(
        long,
        default_value = "what does the study find about the effect of treatment"
    )]
    query: String,
    /// Token-length buckets, comma separated [default: multiples of 64 up to the model's max].
    #[arg(long, value_delimiter = ',')]
    buckets: Vec<usize>,
    /// Timed repetitions per bucket (the median is kept).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Write the table here instead of `<model>/cost.json`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the model's existing cost table instead of measuring a new one (with --check).
    #[arg(long)]
    reuse: bool,
    /// After measuring, run this many rerank calls per plan on the fixed workload and report
    /// predicted vs measured model time (0 = no check).
    #[arg(long, default_value_t = 0)]
    check: usize,
    /// Candidates per call in the check.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// Latency budgets (ms) checked with --check, comma separated [default: spread between the
    /// cheapest and the deepest plan's predicted time].
    #[arg(long, value_delimiter = ',')]
    latency_ms: Vec<f64>,
    /// Write the check's report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn load_sample_docs(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let mapping = sieve_index::ColumnMapping {
        title: sieve_index::ingest::column_names(path)?
            .iter()
            .any(|c| c == "title")
            .then(|| "title".to_string()),
        ..Default::default()
    };
    let mut docs = Vec::new();
    sieve_index::ingest::read_documents(&[path.to_path_buf()], &mapping, 1024, &mut |_, batch| {
        docs.extend(batch.into_iter().map(|d| (d.title, d.text)));
        Ok(())
    })?;
    if docs.is_empty() {
        bail!("{} holds no documents", path.display());
    }
    Ok(docs)
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    let encoder = args.reranker.load()?;
    if !encoder.is_matryoshka() {
        bail!(
            "{} is a single-graph cross-encoder: cost tables and latency budgets need a segmented \
             Matryoshka model (matryoshka.json)",
            encoder.model_dir().display()
        );
    }
    let corpus = match &args.corpus {
        Some(path) => path.clone(),
        None => crate::paths::sample_corpus().context(
            "the bundled sample corpus (examples/sample/corpus.parquet) was not found; pass --corpus",
        )?,
    };
    let texts = load_sample_docs(&corpus)?;
    let docs: Vec<RerankDoc<'_>> = texts
        .iter()
        .map(|(title, text)| RerankDoc::new(title, text))
        .collect();

    let table = if args.reuse {
        encoder
            .cost_table()?
            .context("--reuse: the model has no usable cost table yet; run sieve calibrate")?
    } else {
        let options = CostOptions {
            buckets: args.buckets.clone(),
            repetitions: args.repetitions.max(1),
            ..CostOptions::default()
        };
        eprintln!(
            "measuring {} on {} ({} threads)…",
            encoder.model_dir().display(),
            encoder.device(),
            sieve_onnx::available_cores()
        );
        let table = encoder.measure_costs(&args.query, &docs, &options)?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| encoder.model_dir().join(COST_FILE));
        table
            .save(&out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        encoder.set_cost_table(Some(table.clone()))?;
        eprintln!("cost table written to {}", out.display());
        table
    };
    let mut header: Vec<(String, bool)> = vec![("segment".into(), false)];
    header.extend(
        table
            .buckets
            .iter()
            .map(|b| (format!("≤{b} tok ms/pair"), true)),
    );
    let header_refs: Vec<(&str, bool)> = header.iter().map(|(h, r)| (h.as_str(), *r)).collect();
    let mut out = Table::new(&header_refs);
    for seg in &table.segments {
        let mut row = vec![format!("{} (to layer {})", seg.segment, seg.exit_layer)];
        row.extend(seg.ms_per_pair.iter().map(|ms| format!("{ms:.3}")));
        out.row(row);
    }
    println!(
        "{} — {} ({} threads, {}, {}, batch {} tokens)",
        table.model,
        table.machine,
        table.threads,
        table.device,
        table.precision,
        table.batch_tokens
    );
    print!("{}", out.render());
    if args.check > 0 {
        check(&encoder, &table, &args, &docs)?;
    }
    Ok(())
}

/// Predicted vs measured model time on a fixed workload, for every profile, every single exit
/// and a few latency budgets ([`CrossEncoder::check_costs`]), as a table (and JSON if asked).
fn check(
    encoder: &CrossEncoder,
    table: &sieve_rerank_onnx::CostTable,
    args: &CalibrateArgs,
    docs: &[RerankDoc<'_>],
) -> Result<()> {
    let options = CostCheckOptions {
        calls: args.check,
        window: args.window,
        latency_ms: args.latency_ms.clone(),
    };
    let report = encoder.check_costs(table, &args.query, docs, &options)?;
    let mut out = Table::new(&[
        ("budget", false),
        ("plan", false),
        ("predicted ms", true),
        ("measured ms (median)", true),
        ("max", true),
        ("error", true),
        ("over budget (worst)", true),
    ]);
    for r in &report.rows {
        out.row(vec![
            r.budget.clone(),
            r.plan.clone(),
            format!("{:.1}", r.predicted_ms),
            format!("{:.1}", r.measured_ms_median),
            format!("{:.1}", r.measured_ms_max),
            format!("{:+.1}%", r.error * 100.0),
            r.overshoot
                .map(|o| format!("{:+.1}%", o * 100.0))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    println!(
        "\ncheck: {} calls per plan, {} candidates each (model time only)",
        report.calls_per_plan, report.window
    );
    print!("{}", out.render());
    println!(
        "worst |prediction error| {:.1}%; worst latency-budget overshoot {:+.1}%",
        report.worst_abs_error * 100.0,
        report.worst_overshoot * 100.0
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
