//! Measures sieve's pipeline on a BEIR-layout data set: every first-stage mode and the rerank
//! stage under each budget, scored with trec_eval-compatible metrics and timed per query, plus a
//! comparison of the rerank rows on quality and cost (gain over the candidates with a paired
//! bootstrap interval, share of the full-depth gain kept, speed-up, Pareto front).
//!
//! `sieve eval --dataset` is a thin shell over [`evaluate_dataset`]: it builds a
//! [`DatasetEval`], draws progress, prints the report's tables and writes it with
//! [`DatasetReport::write`].
//!
//! ```no_run
//! use sieve_harness::{DEFAULT_CACHE_DIR, DatasetEval, EvalStage, evaluate_dataset};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let job = DatasetEval {
//!     dataset: "../shared/data/scifact".into(),
//!     split: "test".into(),
//!     stages: vec!["bm25".parse()?, "hybrid".parse()?],
//!     rerank: None,
//!     rerank_run: None,
//!     fusion: "rrf".parse()?,
//!     depth: 100,
//!     spec: sieve_eval::MetricSpec::parse(&["ndcg@10".to_string()])?,
//!     index_dir: None,
//!     cache_dir: DEFAULT_CACHE_DIR.into(),
//!     embedder_model: "models/all-MiniLM-L6-v2".into(),
//!     rerank_codec: None,
//!     run_dir: None,
//!     max_queries: Some(50),
//!     command: String::new(),
//! };
//! let report = evaluate_dataset(&job, &sieve_index::NoProgress)?;
//! for stage in &report.stages {
//!     println!("{} {:.4}", stage.stage, stage.metrics["ndcg@10"]);
//! }
//! # let _ = EvalStage::Rerank;
//! # Ok(()) }
//! ```

mod comparison;
mod corpus;
mod dataset;
mod error;
mod report;
mod rerank_stage;

pub use comparison::{BudgetRow, summarize};
pub use dataset::{DEFAULT_CACHE_DIR, DatasetEval, EvalStage, evaluate_dataset};
pub use error::{HarnessError, Result};
pub use report::{DatasetReport, Latency, StageReport, StageWriter};
pub use rerank_stage::{QueryCandidates, RerankEval, rerank_stages};
