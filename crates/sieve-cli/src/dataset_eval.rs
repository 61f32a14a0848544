//! `sieve eval --dataset DIR`: evaluate every stage of the pipeline on a BEIR-layout data set.
//!
//! The corpus is indexed once and cached (`--index-dir`, by default
//! `.sieve/eval-cache/<dataset>`; rebuilt when the corpus file or the embedder changes). Each stage
//! runs on its own for every judged query of the split, so its latency is its own: `bm25` and
//! `dense` alone, `hybrid` (both concurrently, then fusion). Output: an aligned table, a JSON
//! report, a TREC run file per stage, and an SVG plot of quality against ms/query.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sieve::{FusionSpec, Mode, SearchRequest, Sieve};
use sieve_eval::{
    Metric, MetricSpec, PlotPoint, Qrels, Run, evaluate, load_beir_queries, quality_cost_svg,
    write_trec,
};
use sieve_index::{BuildOptions, IndexBuilder, Manifest};

use crate::progress::Bars;
use crate::table::Table;
use sieve_index::Progress;

/// What `sieve eval --dataset` was asked to do.
pub struct DatasetEval {
    pub dataset: PathBuf,
    pub split: String,
    pub stages: Vec<Mode>,
    pub fusion: FusionSpec,
    pub depth: usize,
    pub spec: MetricSpec,
    pub index_dir: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub max_queries: Option<usize>,
    pub quiet: bool,
}

/// Latency of one stage over all queries, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub queries_per_second: f64,
}

/// One stage's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub queries: usize,
    pub latency: Latency,
    pub run_file: Option<PathBuf>,
}

/// The whole report, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetReport {
    pub dataset: String,
    pub split: String,
    pub queries: usize,
    pub documents: usize,
    pub index: PathBuf,
    pub depth: usize,
    pub fusion: String,
    pub relevance_threshold: i32,
    pub command: String,
    pub machine: String,
    pub stages: Vec<StageReport>,
}

/// Identifies the corpus and embedder an index was built from, to decide whether a cached
/// index can be reused.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CacheStamp {
    corpus: PathBuf,
    corpus_bytes: u64,
    corpus_modified_unix: u64,
    embedder: PathBuf,
}

fn stamp_for(corpus: &Path, embedder: &Path) -> Result<CacheStamp> {
    let meta =
        std::fs::metadata(corpus).with_context(|| format!("cannot read {}", corpus.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(CacheStamp {
        corpus: std::path::absolute(corpus)?,
        corpus_bytes: meta.len(),
        corpus_modified_unix: modified,
        embedder: std::path::absolute(embedder)?,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn latency(mut samples: Vec<f64>) -> Latency {
    samples.sort_by(f64::total_cmp);
    let total: f64 = samples.iter().sum();
    let n = samples.len().max(1) as f64;
    Latency {
        mean_ms: total / n,
        p50_ms: percentile(&samples, 0.5),
        p95_ms: percentile(&samples, 0.95),
        queries_per_second: if total > 0.0 { n * 1e3 / total } else { 0.0 },
    }
}

/// Builds (or reuses) the data set's index and returns its directory.
fn ensure_index(job: &DatasetEval, name: &str, bars: &Bars) -> Result<PathBuf> {
    let corpus = job.dataset.join("corpus.parquet");
    if !corpus.is_file() {
        bail!(
            "{} not found: sieve eval reads the corpus as Parquet (columns id, title, text)",
            corpus.display()
        );
    }
    let model = crate::paths::embedder_model(job.model.as_deref())?;
    let index_dir = job
        .index_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".sieve/eval-cache").join(name));
    let stamp = stamp_for(&corpus, &model)?;
    let stamp_path = index_dir.join("eval-stamp.json");
    let cached = Manifest::load(&index_dir).is_ok()
        && std::fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheStamp>(&b).ok())
            .is_some_and(|s| s == stamp);
    // An index the user points at explicitly is reused if it was built from this corpus.
    if !cached
        && job.index_dir.is_some()
        && let Ok(manifest) = Manifest::load(&index_dir)
    {
        let sources: Vec<PathBuf> = manifest
            .source
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect();
        if sources == [stamp.corpus.clone()] {
            if !job.quiet {
                eprintln!(
                    "using index {} (built from {})",
                    index_dir.display(),
                    corpus.display()
                );
            }
            return Ok(index_dir);
        }
        bail!(
            "{} holds an index of {:?}, not of {}; choose another --index-dir",
            index_dir.display(),
            sources,
            corpus.display()
        );
    }
    if cached {
        if !job.quiet {
            eprintln!("using cached index {}", index_dir.display());
        }
        return Ok(index_dir);
    }
    if !job.quiet {
        eprintln!("indexing {} into {}", corpus.display(), index_dir.display());
    }
    if let Some(parent) = index_dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = BuildOptions::new(model);
    options.mapping.title = Some("title".into());
    IndexBuilder::new(options).build(&[corpus], &index_dir, bars)?;
    std::fs::write(&stamp_path, serde_json::to_vec_pretty(&stamp)?)?;
    Ok(index_dir)
}

pub fn run(job: DatasetEval) -> Result<()> {
    let name = job
        .dataset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let qrels_path = job.dataset.join("qrels").join(format!("{}.tsv", job.split));
    let qrels = Qrels::load_beir(&qrels_path)?;
    let mut queries: Vec<(String, String)> = load_beir_queries(job.dataset.join("queries.jsonl"))?
        .into_iter()
        .filter(|(id, _)| qrels.get(id).is_some_and(|j| j.values().any(|&r| r > 0)))
        .collect();
    if let Some(max) = job.max_queries {
        queries.truncate(max);
    }
    // Score exactly the queries that are run: a subset must not be averaged over the whole split.
    let qrels: Qrels = queries
        .iter()
        .filter_map(|(id, _)| qrels.get(id).map(|judged| (id, judged)))
        .flat_map(|(id, judged)| {
            judged
                .iter()
                .map(move |(doc, &rel)| (id.clone(), doc.clone(), rel))
        })
        .collect();
    if queries.is_empty() {
        bail!(
            "no query of {} has a relevance judgment in {}",
            job.dataset.display(),
            qrels_path.display()
        );
    }

    let bars = Bars::new(job.quiet);
    let index_dir = ensure_index(&job, &name, &bars)?;
    let engine = Sieve::open_with(
        &index_dir,
        sieve::OpenOptions {
            embedder_model: job.model.clone(),
            ..Default::default()
        },
    )?;
    // Warm up: the first query pays for lazy initialisation in ONNX Runtime.
    engine.first_stage(&SearchRequest::new(queries[0].1.clone()))?;

    if let Some(dir) = &job.run_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut stages = Vec::new();
    for &mode in &job.stages {
        let stage_name = mode.to_string();
        bars.start(&stage_name, queries.len() as u64);
        let mut run = Run::new();
        let mut samples = Vec::with_capacity(queries.len());
        for (qid, text) in &queries {
            let request = SearchRequest {
                mode,
                fusion: job.fusion,
                bm25_k: job.depth,
                dense_k: job.depth,
                ..SearchRequest::new(text.clone())
            };
            let started = Instant::now();
            let stage = engine.first_stage(&request)?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            for candidate in stage.fused.iter().take(job.depth) {
                let doc = engine.index().docs.get(candidate.doc)?;
                run.push(qid.clone(), doc.id, f64::from(candidate.score));
            }
            bars.advance(1);
        }
        bars.finish();
        let report = evaluate(&qrels, &run, &job.spec);
        let run_file = match &job.run_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}-{}-{stage_name}.trec", job.split));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                write_trec(
                    &run,
                    &format!("sieve-{stage_name}"),
                    std::io::BufWriter::new(file),
                )?;
                Some(path)
            }
            None => None,
        };
        stages.push(StageReport {
            stage: stage_name,
            metrics: report.mean.clone(),
            queries: report.num_queries,
            latency: latency(samples),
            run_file,
        });
    }

    let report = DatasetReport {
        dataset: name.clone(),
        split: job.split.clone(),
        queries: queries.len(),
        documents: engine.index().len(),
        index: index_dir,
        depth: job.depth,
        fusion: job.fusion.to_string(),
        relevance_threshold: job.spec.relevance_threshold,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: format!("{} cores", sieve_onnx::available_cores()),
        stages,
    };
    print_table(&report, &job.spec);

    let json_path = job
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(".sieve/eval").join(format!("{name}-{}.json", job.split)));
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let svg_path = json_path.with_extension("svg");
    let quality = Metric::ndcg(10).to_string();
    let points: Vec<PlotPoint> = report
        .stages
        .iter()
        .filter_map(|s| {
            Some(PlotPoint {
                label: s.stage.clone(),
                ms: s.latency.mean_ms,
                quality: *s.metrics.get(&quality)?,
            })
        })
        .collect();
    let title = format!(
        "{name} {} ({} queries): {quality} vs cost",
        job.split, report.queries
    );
    std::fs::write(&svg_path, quality_cost_svg(&points, &title, &quality))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    println!(
        "report: {}  plot: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn print_table(report: &DatasetReport, spec: &MetricSpec) {
    let names: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    let mut header: Vec<(&str, bool)> = vec![("stage", false)];
    header.extend(names.iter().map(|n| (n.as_str(), true)));
    header.extend([("p50 ms", true), ("p95 ms", true), ("q/s", true)]);
    let mut table = Table::new(&header);
    for stage in &report.stages {
        let mut row = vec![stage.stage.clone()];
        row.extend(
            names
                .iter()
                .map(|n| format!("{:.4}", stage.metrics.get(n).copied().unwrap_or(0.0))),
        );
        row.push(format!("{:.2}", stage.latency.p50_ms));
        row.push(format!("{:.2}", stage.latency.p95_ms));
        row.push(format!("{:.1}", stage.latency.queries_per_second));
        table.row(row);
    }
    println!(
        "{} {} — {} queries, {} documents, depth {}, fusion {}, relevance ≥ {}",
        report.dataset,
        report.split,
        report.queries,
        report.documents,
        report.depth,
        report.fusion,
        report.relevance_threshold
    );
    print!("{}", table.render());
}
