//! What an evaluation produces: per-stage quality and latency, the report of a whole data set,
//! and writing it (JSON, TREC run files, an SVG of quality against cost).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_eval::{MetricSpec, PlotPoint, Qrels, Run, evaluate, quality_cost_svg, write_trec};

use crate::comparison::BudgetRow;
use crate::error::{HarnessError, Result};

/// Latency of one stage over all queries, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Mean per query.
    pub mean_ms: f64,
    /// Median per query.
    pub p50_ms: f64,
    /// 95th percentile per query.
    pub p95_ms: f64,
    /// Queries per second, one after another (1000 / mean).
    pub queries_per_second: f64,
}

impl Latency {
    /// Summarises per-query samples in milliseconds (all zero for no samples).
    pub fn of(mut samples: Vec<f64>) -> Latency {
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
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One stage's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage's name (`bm25`, `hybrid`, `rerank 50@2,10@6 + blend 0.40`, ...).
    pub stage: String,
    /// Metric name -> mean over the queries.
    pub metrics: BTreeMap<String, f64>,
    /// Queries scored.
    pub queries: usize,
    /// Per query, end to end (a rerank row: its first stage + the rerank).
    pub latency: Latency,
    /// Per query, the rerank alone (rerank rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_latency: Option<Latency>,
    /// The TREC run file written for this stage, if any.
    pub run_file: Option<PathBuf>,
    /// Rerank rows: the plan every query ran (`L:W` or a cascade), or `per query` when it
    /// varied (latency budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Blended rows: the reranker's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<f32>,
    /// Exit-head rows read out of a deeper pass (`every_exit`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_of_pass: bool,
    /// Query id -> metric -> value (kept in memory for the paired comparison; the TREC run
    /// files hold what is needed to recompute it).
    #[serde(skip)]
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The whole report, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetReport {
    /// The data set's directory name.
    pub dataset: String,
    /// The split whose qrels scored the runs.
    pub split: String,
    /// Judged queries evaluated.
    pub queries: usize,
    /// Documents in the index (or loaded from the corpus for a given run).
    pub documents: usize,
    /// The index directory (or the corpus file for a given run).
    pub index: PathBuf,
    /// Candidates per retriever, and run depth.
    pub depth: usize,
    /// The hybrid stage's fusion.
    pub fusion: String,
    /// Lowest grade counted as relevant by MRR, Recall and MAP.
    pub relevance_threshold: i32,
    /// The command line that made the report.
    pub command: String,
    /// The machine it ran on (`2 cores`).
    pub machine: String,
    /// Every stage, in the order they ran.
    pub stages: Vec<StageReport>,
    /// The stage whose lists the rerank rows reranked (when it is in `stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<String>,
    /// Every stage on quality and cost: gain over the candidates, share of the full-depth gain
    /// kept, speed-up over full depth, Pareto front.
    #[serde(default)]
    pub comparison: Vec<BudgetRow>,
}

impl DatasetReport {
    /// Writes the report as JSON to `json_path` and a plot of `quality_metric` against mean
    /// ms/query beside it (same name, `.svg`); returns the plot's path.
    pub fn write(&self, json_path: &Path, quality_metric: &str) -> Result<PathBuf> {
        if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(HarnessError::io("create", parent))?;
        }
        std::fs::write(json_path, serde_json::to_vec_pretty(self)?)
            .map_err(HarnessError::io("write", json_path))?;
        let svg_path = json_path.with_extension("svg");
        let points: Vec<PlotPoint> = self
            .stages
            .iter()
            .filter_map(|s| {
                Some(PlotPoint {
                    label: s.stage.clone(),
                    ms: s.latency.mean_ms,
                    quality: *s.metrics.get(quality_metric)?,
                })
            })
            .collect();
        let title = format!(
            "{} {} ({} queries): {quality_metric} vs cost",
            self.dataset, self.split, self.queries
        );
        std::fs::write(&svg_path, quality_cost_svg(&points, &title, quality_metric))
            .map_err(HarnessError::io("write", &svg_path))?;
        Ok(svg_path)
    }
}

/// Scores runs and writes them as TREC files.
pub struct StageWriter<'a> {
    /// The judgments (only the evaluated queries').
    pub qrels: &'a Qrels,
    /// Metrics and relevance threshold.
    pub spec: &'a MetricSpec,
    /// Where each stage's TREC run goes, if anywhere.
    pub run_dir: Option<&'a Path>,
    /// File name prefix, `<dataset>-<split>`.
    pub prefix: String,
}

impl StageWriter<'_> {
    /// Evaluates `run`, writes its TREC file (if asked) and returns the stage's report.
    pub fn report(
        &self,
        stage: &str,
        run: &Run,
        latency: Latency,
        rerank_latency: Option<Latency>,
    ) -> Result<StageReport> {
        let report = evaluate(self.qrels, run, self.spec);
        let run_file = match self.run_dir {
            Some(dir) => Some(self.write_run(dir, stage, run)?),
            None => None,
        };
        Ok(StageReport {
            stage: stage.to_string(),
            metrics: report.mean.clone(),
            queries: report.num_queries,
            latency,
            rerank_latency,
            run_file,
            plan: None,
            blend: None,
            head_of_pass: false,
            per_query: report.per_query,
        })
    }

    /// Writes `run` as `<dir>/<prefix>-<stage>.trec` (the stage name made file-safe).
    fn write_run(&self, dir: &Path, stage: &str, run: &Run) -> Result<PathBuf> {
        let file_stage: String = stage
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{}-{file_stage}.trec", self.prefix));
        let file = std::fs::File::create(&path).map_err(HarnessError::io("write", &path))?;
        write_trec(
            run,
            &format!("sieve-{file_stage}"),
            std::io::BufWriter::new(file),
        )
        .map_err(HarnessError::io("write", &path))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summarises_samples_by_nearest_rank() {
        let latency = Latency::of(vec![4.0, 1.0, 3.0, 2.0, 10.0]);
        assert_eq!(latency.mean_ms, 4.0);
        assert_eq!(latency.p50_ms, 3.0);
        assert_eq!(latency.p95_ms, 10.0);
        assert_eq!(latency.queries_per_second, 250.0);
        let none = Latency::of(Vec::new());
        assert_eq!(
            (none.mean_ms, none.p50_ms, none.queries_per_second),
            (0.0, 0.0, 0.0)
        );
    }
}
