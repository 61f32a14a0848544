//! Evaluating every stage of the pipeline on a BEIR-layout data set.
//!
//! The corpus is indexed once and cached (`index_dir`, by default `<cache_dir>/<dataset>`;
//! rebuilt when the corpus file, the embedder or the state codec changes). Each stage runs on its
//! own for every judged query of the split, so its latency is its own: `bm25` and `dense` alone,
//! `hybrid` (both concurrently, then fusion), and the rerank stage on the hybrid stage's own
//! fused lists, or on a given TREC run's lists.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve::{FusionSpec, Mode, SearchRequest, Sieve};
use sieve_eval::{Metric, MetricSpec, Qrels, Run, load_beir_queries};
use sieve_index::Progress;

use crate::comparison;
use crate::corpus::{ensure_index, given_run_candidates};
use crate::error::{HarnessError, Result};
use crate::report::{DatasetReport, Latency, StageReport, StageWriter};
use crate::rerank_stage::{QueryCandidates, RerankEval, rerank_stages};

/// Where converted corpora and eval indexes are cached unless a job says otherwise.
pub const DEFAULT_CACHE_DIR: &str = ".sieve/eval-cache";

/// A stage an evaluation can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalStage {
    /// A first-stage mode (bm25, dense, hybrid).
    First(Mode),
    /// The hybrid stage's fused window, reranked (once per budget).
    Rerank,
}

impl std::str::FromStr for EvalStage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rerank" => Ok(EvalStage::Rerank),
            other => other.parse().map(EvalStage::First).map_err(|_| {
                format!("unknown stage `{other}` (expected bm25, dense, hybrid or rerank)")
            }),
        }
    }
}

/// What to evaluate on a data set.
pub struct DatasetEval {
    /// BEIR-layout directory: corpus.parquet or corpus.jsonl, queries.jsonl, `qrels/<split>.tsv`.
    pub dataset: PathBuf,
    /// The split whose qrels score the runs.
    pub split: String,
    /// Stages to measure, in order.
    pub stages: Vec<EvalStage>,
    /// How the rerank stage runs (needed by [`EvalStage::Rerank`] and `rerank_run`).
    pub rerank: Option<RerankEval>,
    /// Rerank this TREC run's lists instead of sieve's own first stage (no index is built).
    pub rerank_run: Option<PathBuf>,
    /// The hybrid stage's fusion.
    pub fusion: FusionSpec,
    /// Candidates per retriever, and run depth.
    pub depth: usize,
    /// Metrics and relevance threshold.
    pub spec: MetricSpec,
    /// The index to use or build (default: `<cache_dir>/<dataset name>`).
    pub index_dir: Option<PathBuf>,
    /// Where converted corpora and cached indexes live ([`DEFAULT_CACHE_DIR`]).
    pub cache_dir: PathBuf,
    /// The bi-encoder model directory an index built here embeds with (queries always use the
    /// graph the index recorded).
    pub embedder_model: PathBuf,
    /// The state codec (a late-joined reranker's) an index built here stores rerank states with.
    pub rerank_codec: Option<PathBuf>,
    /// Write one TREC run file per stage here.
    pub run_dir: Option<PathBuf>,
    /// Evaluate only the first N judged queries.
    pub max_queries: Option<usize>,
    /// The command line recorded in the report.
    pub command: String,
}

impl DatasetEval {
    /// The data set's name: its directory's name.
    pub fn name(&self) -> String {
        self.dataset
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into())
    }
}

/// The split's judged queries (those with at least one relevant document), the first
/// `max_queries` of them, and the qrels restricted to exactly those queries — a subset must not
/// be averaged over the whole split.
fn judged_queries(job: &DatasetEval) -> Result<(Vec<(String, String)>, Qrels)> {
    let qrels_path = job.dataset.join("qrels").join(format!("{}.tsv", job.split));
    let qrels = Qrels::load_beir(&qrels_path)?;
    let mut queries: Vec<(String, String)> = load_beir_queries(job.dataset.join("queries.jsonl"))?
        .into_iter()
        .filter(|(id, _)| qrels.get(id).is_some_and(|j| j.values().any(|&r| r > 0)))
        .collect();
    if let Some(max) = job.max_queries {
        queries.truncate(max);
    }
    if queries.is_empty() {
        return Err(HarnessError::Invalid(format!(
            "no query of {} has a relevance judgment in {}",
            job.dataset.display(),
            qrels_path.display()
        )));
    }
    let qrels: Qrels = queries
        .iter()
        .filter_map(|(id, _)| qrels.get(id).map(|judged| (id, judged)))
        .flat_map(|(id, judged)| {
            judged
                .iter()
                .map(move |(doc, &rel)| (id.clone(), doc.clone(), rel))
        })
        .collect();
    Ok((queries, qrels))
}

/// Runs the job: every asked stage over every judged query, scored and timed, plus the
/// quality/cost comparison of the rerank rows. Long phases report to `progress`; notes
/// (index reused or built) go to [`Progress::note`].
pub fn evaluate_dataset(job: &DatasetEval, progress: &dyn Progress) -> Result<DatasetReport> {
    let name = job.name();
    let (queries, qrels) = judged_queries(job)?;
    if let Some(dir) = &job.run_dir {
        std::fs::create_dir_all(dir).map_err(HarnessError::io("create", dir))?;
    }
    let writer = StageWriter {
        qrels: &qrels,
        spec: &job.spec,
        run_dir: job.run_dir.as_deref(),
        prefix: format!("{name}-{}", job.split),
    };
    let (stages, index, documents) = match &job.rerank_run {
        Some(run_path) => given_run_stages(job, &queries, run_path, &writer, progress)?,
        None => pipeline_stages(job, &queries, &writer, progress)?,
    };
    let quality = Metric::ndcg(10).to_string();
    let candidates = job
        .rerank
        .as_ref()
        .map(|_| match &job.rerank_run {
            Some(path) => format!("run {}", path.display()),
            None => Mode::Hybrid.to_string(),
        })
        .filter(|name| stages.iter().any(|s| &s.stage == name));
    let comparison = if job.rerank.is_some() {
        comparison::summarize(&stages, candidates.as_deref(), &quality)
    } else {
        Vec::new()
    };
    Ok(DatasetReport {
        dataset: name,
        split: job.split.clone(),
        queries: queries.len(),
        documents,
        index,
        depth: job.depth,
        fusion: job.fusion.to_string(),
        relevance_threshold: job.spec.relevance_threshold,
        command: job.command.clone(),
        machine: format!("{} cores", sieve_onnx::available_cores()),
        stages,
        candidates,
        comparison,
    })
}

/// The given run's own row, then its lists reranked. Returns the stages, the corpus file and the
/// number of documents loaded.
fn given_run_stages(
    job: &DatasetEval,
    queries: &[(String, String)],
    run_path: &Path,
    writer: &StageWriter<'_>,
    progress: &dyn Progress,
) -> Result<(Vec<StageReport>, PathBuf, usize)> {
    let rerank = job.rerank.as_ref().ok_or_else(|| {
        HarnessError::Invalid("reranking a given run needs a reranker".to_string())
    })?;
    let run = Run::load_trec(run_path)?;
    let (lists, corpus, documents) = given_run_candidates(job, queries, &run, run_path, progress)?;
    let mut stages = vec![writer.report(
        &format!("run {}", run_path.display()),
        &run,
        Latency::of(vec![0.0; lists.len()]),
        None,
    )?];
    stages.extend(rerank_stages(rerank, &lists, writer, progress)?);
    Ok((stages, corpus, documents))
}

/// sieve's own first-stage modes, then the rerank stage on the hybrid stage's fused lists
/// (hybrid runs for it even when it was not asked, without a row of its own). Returns the
/// stages, the index directory and its number of documents.
fn pipeline_stages(
    job: &DatasetEval,
    queries: &[(String, String)],
    writer: &StageWriter<'_>,
    progress: &dyn Progress,
) -> Result<(Vec<StageReport>, PathBuf, usize)> {
    let index_dir = ensure_index(job, progress)?;
    // Queries are embedded by the very graph the index recorded.
    let engine = Sieve::open(&index_dir)?;
    // Warm up: the first query pays for lazy initialisation in ONNX Runtime.
    engine.first_stage(&SearchRequest::new(queries[0].1.clone()))?;

    let rerank = if job.stages.contains(&EvalStage::Rerank) {
        Some(job.rerank.as_ref().ok_or_else(|| {
            HarnessError::Invalid("the rerank stage needs a reranker".to_string())
        })?)
    } else {
        None
    };
    let mut modes: Vec<Mode> = job
        .stages
        .iter()
        .filter_map(|s| match s {
            EvalStage::First(m) => Some(*m),
            EvalStage::Rerank => None,
        })
        .collect();
    let hybrid_only_for_rerank = rerank.is_some() && !modes.contains(&Mode::Hybrid);
    if hybrid_only_for_rerank {
        modes.push(Mode::Hybrid);
    }
    let mut stages = Vec::new();
    let mut hybrid_lists: Vec<QueryCandidates> = Vec::new();
    for &mode in &modes {
        let stage_name = mode.to_string();
        progress.start(&stage_name, queries.len() as u64);
        let mut run = Run::new();
        let mut samples = Vec::with_capacity(queries.len());
        for (qid, text) in queries {
            let request = SearchRequest {
                mode,
                fusion: job.fusion,
                bm25_k: job.depth,
                dense_k: job.depth,
                ..SearchRequest::new(text.clone())
            };
            let started = Instant::now();
            let stage = engine.first_stage(&request)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            samples.push(ms);
            let mut kept = Vec::new();
            for candidate in stage.fused.iter().take(job.depth) {
                let doc = engine.index().docs.get(candidate.doc)?;
                run.push(qid.clone(), doc.id.clone(), f64::from(candidate.score));
                kept.push((doc, candidate.score));
            }
            if let (Mode::Hybrid, Some(rerank)) = (mode, rerank) {
                let window = stage.fused.iter().take(job.depth.min(rerank.window));
                let states = sieve::stored_states(
                    engine.index(),
                    rerank.reranker.as_ref(),
                    window.map(|c| c.doc),
                )?;
                hybrid_lists.push(QueryCandidates {
                    qid: qid.clone(),
                    query: text.clone(),
                    candidates: kept,
                    states,
                    first_stage_ms: ms,
                });
            }
            progress.advance(1);
        }
        progress.finish();
        if !(mode == Mode::Hybrid && hybrid_only_for_rerank) {
            stages.push(writer.report(&stage_name, &run, Latency::of(samples), None)?);
        }
    }
    if let Some(rerank) = rerank {
        stages.extend(rerank_stages(rerank, &hybrid_lists, writer, progress)?);
    }
    Ok((stages, index_dir, engine.index().len()))
}
