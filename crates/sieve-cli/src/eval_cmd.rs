//! `sieve eval`: score a TREC run file against qrels.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve::FusionSpec;
use sieve_eval::{MetricSpec, Qrels, Run, evaluate};

use sieve_harness::{DEFAULT_CACHE_DIR, DatasetEval, EvalStage, RerankEval, evaluate_dataset};

use crate::eval_report::{comparison_table, stage_table};
use crate::progress::Bars;
use crate::rerank_opts::{RerankerArgs, parse_blend};
use crate::table::Table;

/// Arguments of `sieve eval`: either score run files (`--qrels` + `--run`) or evaluate the
/// pipeline's stages on a BEIR-layout data set (`--dataset`).
#[derive(Args)]
pub struct EvalArgs {
    /// BEIR-layout data set directory (corpus.parquet, queries.jsonl, qrels/<split>.tsv).
    #[arg(long, conflicts_with_all = ["qrels", "run"], required_unless_present = "qrels")]
    dataset: Option<PathBuf>,
    /// Split whose qrels are used (qrels/<split>.tsv).
    #[arg(long, default_value = "test")]
    split: String,
    /// Stages to evaluate, comma separated: bm25, dense, hybrid, rerank (the hybrid stage's
    /// fused top `--window`, reranked once per `--budgets` entry).
    #[arg(long, default_value = "bm25,dense,hybrid", value_delimiter = ',')]
    stages: Vec<EvalStage>,
    /// Rerank a given TREC run's top `--window` per query instead of sieve's own first stage
    /// (documents come from the data set's corpus).
    #[arg(long, value_name = "RUN", requires = "dataset")]
    rerank_run: Option<PathBuf>,
    /// Fused candidates reranked per query.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// A budget the rerank stage is measured at; repeat it (or separate with `;`) for one row
    /// each: default, a profile (fast, balanced, full), an exit L:W, a cascade K@L,... or NNms.
    #[arg(long = "budget", default_value = "default", value_delimiter = ';')]
    budgets: Vec<String>,
    /// Blend for the rerank stage (a blended row is added beside each pure one): model, off or
    /// a reranker weight W in [0, 1].
    #[arg(long, default_value = "model")]
    blend: String,
    /// Also report every exit head of a Matryoshka reranker, each from one full-depth pass per
    /// budget (scores of that head; time = first stage + tokenizing + the segments up to it).
    #[arg(long)]
    every_exit: bool,
    #[command(flatten)]
    reranker: RerankerArgs,
    /// Fusion for the hybrid stage: rrf, rrf:K or weighted:W.
    #[arg(long, default_value = "rrf")]
    fusion: FusionSpec,
    /// Candidates per retriever, and run depth.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Where the data set's index is cached [default: .sieve/eval-cache/<dataset>].
    #[arg(long)]
    index_dir: Option<PathBuf>,
    /// Bi-encoder model directory [default: the bundled one].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Write a TREC run file per stage into this directory.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Evaluate only the first N judged queries (quick checks).
    #[arg(long)]
    max_queries: Option<usize>,
    /// Relevance judgments to score runs against: BEIR tsv or TREC qrels (detected).
    #[arg(long, requires = "run")]
    qrels: Option<PathBuf>,
    /// TREC run files to score (`qid Q0 docid rank score tag`).
    #[arg(long, num_args = 1..)]
    run: Vec<PathBuf>,
    /// Metrics, comma separated.
    #[arg(
        long,
        default_value = "ndcg@10,mrr@10,recall@100,map@100",
        value_delimiter = ','
    )]
    metrics: Vec<String>,
    /// Lowest grade counted as relevant by MRR, Recall and MAP [default: 2 for TREC DL data
    /// sets, else 1].
    #[arg(long)]
    relevance_threshold: Option<i32>,
    /// JSON output: with --dataset, the report file [default: .sieve/eval/<dataset>-<split>.json,
    /// plot beside it]; with --run, print JSON instead of a table.
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<PathBuf>,
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
    let is_trec_dl = args
        .dataset
        .as_deref()
        .or(args.qrels.as_deref())
        .is_some_and(|p| p.to_string_lossy().contains("trec-dl"));
    let threshold = args
        .relevance_threshold
        .unwrap_or(if is_trec_dl { 2 } else { 1 });
    let spec = MetricSpec::parse(&args.metrics)?.with_relevance_threshold(threshold);
    if args.dataset.is_some() {
        return run_dataset(spec, args);
    }
    let qrels_path = args.qrels.context("--qrels is required with --run")?;
    let qrels = load_qrels(&qrels_path)?;
    let mut reports = Vec::new();
    for path in &args.run {
        let run = Run::load_trec(path)?;
        reports.push((path.display().to_string(), evaluate(&qrels, &run, &spec)));
    }
    if args.json.is_some() {
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

/// `sieve eval --dataset`: resolves the models, runs the harness with progress bars, prints its
/// tables and writes the report (JSON + SVG).
fn run_dataset(spec: MetricSpec, args: EvalArgs) -> Result<()> {
    let dataset = args.dataset.context("--dataset is required")?;
    let json = args.json.filter(|p| p.as_os_str() != "-");
    let embedder_model = match crate::paths::embedder_model(args.model.as_deref()) {
        Ok(path) => path,
        // Reranking a given run builds no index, so it needs no bi-encoder.
        Err(_) if args.rerank_run.is_some() && args.model.is_none() => {
            PathBuf::from(sieve::DEFAULT_EMBEDDER)
        }
        Err(error) => return Err(error),
    };
    let wants_rerank = args.rerank_run.is_some() || args.stages.contains(&EvalStage::Rerank);
    let mut rerank_codec = None;
    let rerank = if wants_rerank {
        if args.window == 0 {
            anyhow::bail!("--window must be at least 1");
        }
        let budgets = args
            .budgets
            .iter()
            .map(|b| sieve::Budget::parse(b).map_err(|e| anyhow::anyhow!("--budget: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let reranker = args.reranker.load()?;
        // A late-joined reranker's states go into the index the eval builds (none for a given
        // run), when its towers are this embedder.
        if reranker.is_late_joined() && args.rerank_run.is_none() {
            let dir = reranker.model_dir().to_string_lossy().into_owned();
            rerank_codec = crate::paths::rerank_codec(&dir, &embedder_model)
                .ok()
                .flatten();
        }
        Some(RerankEval {
            reranker,
            window: args.window,
            budgets,
            blend: parse_blend(&args.blend)?,
            every_exit: args.every_exit,
        })
    } else {
        None
    };
    let job = DatasetEval {
        dataset,
        split: args.split,
        stages: args.stages,
        rerank,
        rerank_run: args.rerank_run,
        fusion: args.fusion,
        depth: args.depth,
        spec,
        index_dir: args.index_dir,
        cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
        embedder_model,
        rerank_codec,
        run_dir: args.run_dir,
        max_queries: args.max_queries,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = evaluate_dataset(&job, &Bars::new(false))?;
    print!("{}", stage_table(&report, &job.spec));
    let quality = sieve_eval::Metric::ndcg(10).to_string();
    if !report.comparison.is_empty() {
        println!(
            "\n{quality} vs cost — gain over the reranked candidates with its 95% paired-bootstrap \
             interval; share of the full-depth gain kept (same blend; shown only when that gain's \
             interval is above 0) and speed-up against full depth; ◆ = Pareto front (mean \
             ms/query end to end)"
        );
        print!(
            "{}",
            comparison_table(&report.comparison, &quality, report.candidates.as_deref())
        );
    }
    let json_path = json.unwrap_or_else(|| {
        PathBuf::from(".sieve/eval").join(format!("{}-{}.json", report.dataset, report.split))
    });
    let svg_path = report.write(&json_path, &quality)?;
    println!(
        "report: {}  plot: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}
