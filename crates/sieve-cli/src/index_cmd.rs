//! `sieve index`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sieve_index::bm25::AnalyzerConfig;
use sieve_index::dense::HnswParams;
use sieve_index::ingest::{self, ColumnMapping};
use sieve_index::{BuildOptions, IndexBuilder, OnDuplicate, Progress, UpdateReport};

use crate::progress::{Bars, JsonLines};

/// Arguments of `sieve index`.
#[derive(Args)]
pub struct IndexArgs {
    /// Parquet files, or directories of *.parquet files (read recursively: partitioned datasets).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Index directory to create (an existing sieve index there is replaced atomically); with
    /// --append, the index to add to.
    #[arg(long, short, visible_alias = "into")]
    out: PathBuf,
    /// Add the inputs' documents to the existing index at --out/--into instead of building it
    /// anew: a new generation is published atomically, and only the new documents are embedded.
    /// The index keeps its own model, analyzer, HNSW and state settings.
    #[arg(long)]
    append: bool,
    /// With --append, what an id that is already indexed does: `error` (nothing changes) or
    /// `replace` (the new document replaces the old one).
    #[arg(long, default_value = "error", requires = "append", value_parser = ["error", "replace"])]
    on_duplicate: String,
    /// Column holding unique document ids (string or integer).
    #[arg(long, default_value = "id")]
    id_col: String,
    /// Column holding the document text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Column holding titles [default: `title` when the first file has it].
    #[arg(long)]
    title_col: Option<String>,
    /// Index without titles even if a `title` column exists.
    #[arg(long, conflicts_with = "title_col")]
    no_title: bool,
    /// Column of precomputed embeddings (a List, LargeList or FixedSizeList of Float16, Float32 or Float64); they must come
    /// from the same model as --model, which embeds queries.
    #[arg(long)]
    vector_col: Option<String>,
    /// Bi-encoder model directory [default: the bundled models/all-MiniLM-L6-v2].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Longest document input to the bi-encoder, in tokens.
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    /// Stemmer language for BM25, or `none`.
    #[arg(long, default_value = "english")]
    stemmer: String,
    /// Stop-word list for BM25, or `none`.
    #[arg(long, default_value = "english")]
    stopwords: String,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    hnsw_m: usize,
    /// HNSW build-time candidate list size.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW default search-time candidate list size.
    #[arg(long, default_value_t = 128)]
    ef_search: usize,
    /// Store each document's token states for a late-joined reranker, so that reranking never
    /// runs the document tower: `auto` (the default reranker's codec, when it is late-joined and
    /// built on --model), `off`, or a reranker directory.
    #[arg(long, default_value = "auto")]
    rerank_states: String,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the manifest as JSON instead of a summary (and no progress bars).
    #[arg(long)]
    json: bool,
    /// Report each phase's start and end as JSON lines on stderr instead of progress bars.
    #[arg(long)]
    progress_json: bool,
}

fn language_or_none(value: &str) -> Option<String> {
    (value != "none").then(|| value.to_string())
}

pub fn run(args: IndexArgs) -> Result<()> {
    let model = crate::paths::embedder_model(args.model.as_deref())?;
    let files = ingest::expand_inputs(&args.inputs)?;
    let title = match (&args.title_col, args.no_title) {
        (Some(col), _) => Some(col.clone()),
        (None, true) => None,
        (None, false) => {
            let first = files.first().context("no input files")?;
            ingest::column_names(first)?
                .iter()
                .any(|c| c == "title")
                .then(|| "title".to_string())
        }
    };
    let rerank_codec = crate::paths::rerank_codec(&args.rerank_states, &model)?;
    let mut options = BuildOptions::new(model);
    options.rerank_codec = rerank_codec;
    options.mapping = ColumnMapping {
        id: args.id_col,
        text: args.text_col,
        title,
        vector: args.vector_col,
    };
    options.embedder.max_length = args.max_length;
    options.analyzer = AnalyzerConfig {
        stemmer: language_or_none(&args.stemmer),
        stopwords: language_or_none(&args.stopwords),
    };
    options.hnsw = HnswParams {
        m: args.hnsw_m,
        ef_construction: args.ef_construction,
        ef_search: args.ef_search,
        ..HnswParams::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
        options.embedder.session.intra_threads = threads.max(1);
    }

    let bars: Box<dyn Progress> = if args.progress_json {
        Box::new(JsonLines::new())
    } else {
        Box::new(Bars::new(args.json))
    };
    let bars = &*bars;
    if args.append {
        let on_duplicate = if args.on_duplicate == "replace" {
            OnDuplicate::Replace
        } else {
            OnDuplicate::Error
        };
        let report = IndexBuilder::new(options)
            .append(&args.out, &files, on_duplicate, bars)
            .with_context(|| format!("appending to {} failed", args.out.display()))?;
        return print_update(&report, args.json);
    }
    let report = IndexBuilder::new(options)
        .build(&files, &args.out, bars)
        .with_context(|| format!("indexing into {} failed", args.out.display()))?;
    let m = &report.manifest;
    if args.json {
        let mut value = serde_json::to_value(m)?;
        value["index_bytes"] = report.bytes.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let secs = m.build.seconds.max(1e-9);
        println!(
            "indexed {} documents into {} in {:.1} s ({:.0} docs/s); {:.1} MB on disk",
            m.counts.documents,
            report.path.display(),
            m.build.seconds,
            m.counts.documents as f64 / secs,
            report.bytes as f64 / 1e6
        );
        print_phases(&m.build.phases);
    }
    Ok(())
}

/// Prints what an update (`sieve index --append`, `sieve delete`) did.
pub fn print_update(report: &UpdateReport, json: bool) -> Result<()> {
    let m = &report.manifest;
    if json {
        let value = serde_json::json!({
            "index": report.path,
            "published": report.published,
            "generation": m.generation(),
            "documents": m.counts.documents,
            "added": report.added,
            "replaced": report.replaced,
            "deleted": report.deleted,
            "not_found": report.not_found,
            "seconds": if report.published { m.build.seconds } else { 0.0 },
            "phases": if report.published { m.build.phases.clone() } else { Vec::new() },
            "index_bytes": report.bytes,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if !report.published {
        println!(
            "nothing to change in {} (generation {}, {} documents)",
            report.path.display(),
            m.generation(),
            m.counts.documents
        );
    } else {
        println!(
            "{}: generation {} published in {:.1} s: {} added, {} replaced, {} deleted; {} documents, {:.1} MB on disk",
            report.path.display(),
            m.generation(),
            m.build.seconds,
            report.added,
            report.replaced,
            report.deleted,
            m.counts.documents,
            report.bytes as f64 / 1e6
        );
        print_phases(&m.build.phases);
    }
    if !report.not_found.is_empty() {
        let shown: Vec<&str> = report
            .not_found
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        println!(
            "{} ids were not in the index: {}{}",
            report.not_found.len(),
            shown.join(", "),
            if report.not_found.len() > 5 {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn print_phases(phases: &[(String, f64)]) {
    let phases: Vec<String> = phases
        .iter()
        .map(|(name, s)| format!("{name} {s:.1} s"))
        .collect();
    println!("phases: {}", phases.join(", "));
}
