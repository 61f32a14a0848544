//! `sieve`: index Parquet corpora and search them from the command line.

mod calibrate_cmd;
mod delete_cmd;
mod eval_cmd;
mod eval_report;
mod index_cmd;
mod paths;
mod progress;
mod rerank_cmd;
mod rerank_opts;
mod search_cmd;
mod serve_cmd;
mod table;

use clap::{Parser, Subcommand};

/// sieve: hybrid retrieval (BM25 + dense) with a budgeted rerank stage.
#[derive(Parser)]
#[command(name = "sieve", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an index (BM25 + dense HNSW + document store) from Parquet files, or add to one
    /// (--append).
    Index(index_cmd::IndexArgs),
    /// Delete documents from an index by id (a new generation, published atomically).
    Delete(delete_cmd::DeleteArgs),
    /// Search an index (optionally reranking the fused top with a cross-encoder).
    Search(search_cmd::SearchArgs),
    /// Rerank given candidates (JSON lines) with a cross-encoder, without an index.
    Rerank(rerank_cmd::RerankArgs),
    /// Evaluate the pipeline's stages on a BEIR data set, or score TREC run files against qrels.
    Eval(eval_cmd::EvalArgs),
    /// Measure a Matryoshka reranker's per-segment cost table on this machine (for --latency-ms).
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// Serve the rerank stage over HTTP: Cohere, TEI and Weaviate rerank protocols, /search.
    Serve(serve_cmd::ServeArgs),
}

fn main() {
    // A reader panic that sieve contains and reports as an error naming the damaged input is
    // not printed as a panic too.
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !sieve_core::contain::containing_panic() {
            report_panic(info);
        }
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Index(args) => index_cmd::run(args),
        Command::Delete(args) => delete_cmd::run(args),
        Command::Search(args) => search_cmd::run(args),
        Command::Rerank(args) => rerank_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Calibrate(args) => calibrate_cmd::run(args),
        Command::Serve(args) => serve_cmd::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
