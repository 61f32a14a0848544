//! Embedding sieve in an application: open an index once, share it, search from async tasks.
//!
//! ```text
//! sieve index examples/sample/corpus.parquet --out idx
//! cargo run -p sieve-examples --example embed -- idx "how do statins lower cholesterol" "why does bread rise"
//! ```

use std::sync::Arc;

use anyhow::{Context, Result};
use sieve::{FusionSpec, Mode, SearchRequest, Sieve};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let index = args.next().context("usage: embed INDEX_DIR QUERY...")?;
    let queries: Vec<String> = args.collect();
    anyhow::ensure!(!queries.is_empty(), "usage: embed INDEX_DIR QUERY...");

    // Opening loads the manifest, BM25, the HNSW graph and the query embedder: do it once.
    let engine = Arc::new(Sieve::open(index.as_ref())?);

    // Searches are independent: run them concurrently on tokio's blocking pool.
    let tasks: Vec<_> = queries
        .into_iter()
        .map(|query| {
            let engine = engine.clone();
            let request = SearchRequest {
                k: 3,
                mode: Mode::Hybrid,
                fusion: FusionSpec::Rrf { k: 60.0 },
                ..SearchRequest::new(query)
            };
            tokio::spawn(engine.search_async(request))
        })
        .collect();

    for task in tasks {
        let response = task.await??;
        println!("{} ({:.1} ms)", response.query, response.timings.total_ms);
        for hit in &response.hits {
            println!(
                "  {:>2}. {:<10} {:.4}  {}",
                hit.rank, hit.id, hit.score, hit.title
            );
        }
    }
    Ok(())
}
