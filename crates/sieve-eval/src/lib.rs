//! IR evaluation for sieve.
//!
//! This crate loads the standard evaluation inputs used by BEIR and TREC
//! (relevance judgements, queries and run files) and scores runs with
//! metrics that reproduce `trec_eval` / `pytrec_eval` numbers exactly, so
//! that sieve's results can be compared with published baselines.
//!
//! * [`qrels`]: graded relevance judgements ([`Qrels`]) from BEIR TSV or
//!   TREC qrels files.
//! * [`run`]: ranked result lists ([`Run`]) read from and written to TREC
//!   run files.
//! * [`queries`]: BEIR `queries.jsonl` loader.
//! * [`metrics`]: nDCG@k, MRR@k, Recall@k and MAP@k ([`evaluate`]).
//!
//! All loaders report malformed input as [`EvalError`] values naming the file
//! and the 1-based line number; none of them panics on user input.

pub mod error;
pub mod metrics;
pub mod plot;
pub mod qrels;
pub mod queries;
pub mod run;

mod lines;

pub use error::EvalError;
pub use metrics::{Metric, MetricKind, MetricSpec, Report, evaluate, trec_order};
pub use plot::{PlotPoint, pareto_front, quality_cost_svg};
pub use qrels::Qrels;
pub use queries::{load_beir_queries, parse_beir_queries};
pub use run::{Run, write_trec};
