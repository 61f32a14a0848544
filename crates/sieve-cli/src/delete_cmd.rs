//! `sieve delete`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use sieve_index::{BuildOptions, IndexBuilder, Manifest};

use crate::progress::Bars;

/// Arguments of `sieve delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// The index to delete documents from.
    index: PathBuf,
    /// Ids to delete: a text file with one id per line, JSON lines with an `id` (or `_id`)
    /// field, or a Parquet file's id column (`--id-col`). May be given more than once.
    #[arg(long)]
    ids: Vec<PathBuf>,
    /// An id to delete (may be given more than once).
    #[arg(long = "id")]
    id: Vec<String>,
    /// The id column of Parquet id lists (and the field of JSON lines).
    #[arg(long, default_value = "id")]
    id_col: String,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print what was done as JSON (and no progress bars).
    #[arg(long)]
    json: bool,
}

pub fn run(args: DeleteArgs) -> Result<()> {
    let mut delete = args.id.clone();
    for file in &args.ids {
        delete.extend(
            sieve_index::ids::read_id_list(file, &args.id_col)
                .with_context(|| format!("reading ids from {}", file.display()))?,
        );
    }
    if delete.is_empty() {
        bail!("no ids to delete: pass --ids FILE or --id ID");
    }
    let manifest = Manifest::load(&args.index)?;
    let mut options = BuildOptions::new(manifest.models.embedder.path.clone());
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    let report = IndexBuilder::new(options)
        .delete(&args.index, &delete, &Bars::new(args.json))
        .with_context(|| format!("deleting from {} failed", args.index.display()))?;
    crate::index_cmd::print_update(&report, args.json)
}
