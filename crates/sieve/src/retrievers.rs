//! The two built-in first-stage retrievers, over an opened [`SieveIndex`].

use std::sync::Arc;
use std::time::Instant;

use sieve_core::{RankedList, RetrieveError, Retriever};
use sieve_embed::BiEncoder;
use sieve_index::SieveIndex;

/// BM25 over the index's tantivy part.
pub struct Bm25Retriever {
    index: Arc<SieveIndex>,
}

impl Bm25Retriever {
    /// A BM25 retriever over `index`.
    pub fn new(index: Arc<SieveIndex>) -> Self {
        Self { index }
    }
}

impl Retriever for Bm25Retriever {
    fn name(&self) -> &str {
        "bm25"
    }

    fn retrieve(&self, query: &str, k: usize) -> Result<RankedList, RetrieveError> {
        self.index
            .bm25
            .search(query, k)
            .map_err(|e| RetrieveError::new("bm25", e))
    }
}

/// Dense retrieval: embeds the query with the bi-encoder, then searches the HNSW graph.
pub struct DenseRetriever {
    index: Arc<SieveIndex>,
    encoder: Arc<BiEncoder>,
}

impl DenseRetriever {
    /// A dense retriever over `index`, embedding queries with `encoder`.
    pub fn new(index: Arc<SieveIndex>, encoder: Arc<BiEncoder>) -> Self {
        Self { index, encoder }
    }

    /// The query encoder, shared.
    pub fn shared_encoder(&self) -> Arc<BiEncoder> {
        self.encoder.clone()
    }

    /// The query encoder.
    pub fn encoder(&self) -> &BiEncoder {
        &self.encoder
    }

    /// Retrieves and also returns how long the query embedding took (ms), for stage timings.
    pub fn retrieve_timed(
        &self,
        query: &str,
        k: usize,
    ) -> Result<(RankedList, f64), RetrieveError> {
        let started = Instant::now();
        let vector = self
            .encoder
            .embed_one(query)
            .map_err(|e| RetrieveError::new("dense", e))?;
        let embed_ms = started.elapsed().as_secs_f64() * 1e3;
        let list = self
            .index
            .dense
            .search(&vector, k)
            .map_err(|e| RetrieveError::new("dense", e))?;
        Ok((list, embed_ms))
    }
}

impl Retriever for DenseRetriever {
    fn name(&self) -> &str {
        "dense"
    }

    fn retrieve(&self, query: &str, k: usize) -> Result<RankedList, RetrieveError> {
        self.retrieve_timed(query, k).map(|(list, _)| list)
    }
}
