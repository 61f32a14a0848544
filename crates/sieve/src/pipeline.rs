//! The search pipeline: first stage (BM25 ∥ dense), fusion, top-k, document fetch.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sieve_core::{
    FusedCandidate, FusedList, FusionSpec, RankedList, RetrieveError, Retriever, StageScore,
};
use sieve_embed::{BiEncoder, EmbedderConfig};
use sieve_index::{IndexError, SieveIndex};

use crate::retrievers::{Bm25Retriever, DenseRetriever};

/// Errors from opening or searching.
#[derive(Debug, thiserror::Error)]
pub enum SieveError {
    /// The index could not be opened or read.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The query embedder could not be loaded.
    #[error("query embedder: {0}")]
    Embed(#[from] sieve_embed::EmbedError),
    /// A retriever failed.
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    /// The request is invalid (empty query, k = 0, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The blocking task running a search panicked or was cancelled.
    #[error("search task failed: {0}")]
    Task(String),
}

/// Which first-stage retrievers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 only.
    Bm25,
    /// Dense only.
    Dense,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bm25" => Ok(Mode::Bm25),
            "dense" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(format!(
                "unknown mode `{other}` (expected bm25, dense or hybrid)"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Bm25 => "bm25",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        })
    }
}

/// One search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query text (must not be blank).
    pub query: String,
    /// Results to return.
    pub k: usize,
    /// Which retrievers run.
    pub mode: Mode,
    /// How hybrid lists are fused.
    pub fusion: FusionSpec,
    /// Candidates taken from BM25.
    pub bm25_k: usize,
    /// Candidates taken from the dense retriever.
    pub dense_k: usize,
}

impl SearchRequest {
    /// A hybrid RRF search for `query` with the defaults: k = 10, 100 candidates per retriever.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            k: 10,
            mode: Mode::Hybrid,
            fusion: FusionSpec::default(),
            bm25_k: 100,
            dense_k: 100,
        }
    }
}

/// Milliseconds spent per stage of one search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// BM25 retrieval (runs concurrently with the dense stage in hybrid mode).
    pub bm25_ms: f64,
    /// Query embedding (part of the dense stage).
    pub embed_ms: f64,
    /// Dense stage: embedding + HNSW search.
    pub dense_ms: f64,
    /// Fusion.
    pub fusion_ms: f64,
    /// Fetching the returned documents.
    pub fetch_ms: f64,
    /// Everything, wall clock.
    pub total_ms: f64,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// 1-based rank.
    pub rank: usize,
    /// The document's id.
    pub id: String,
    /// Fused score (the stage's own score in single-retriever modes).
    pub score: f32,
    /// BM25 rank and score, if BM25 retrieved it.
    pub bm25: Option<StageScore>,
    /// Dense rank and cosine, if the dense retriever retrieved it.
    pub dense: Option<StageScore>,
    /// Title (may be empty).
    pub title: String,
    /// Body text.
    pub text: String,
}

/// The answer to a [`SearchRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// The query.
    pub query: String,
    /// Which retrievers ran.
    pub mode: Mode,
    /// The fusion method, in hybrid mode.
    pub fusion: Option<String>,
    /// Fused candidates before the cut to `k`.
    pub candidates: usize,
    /// Results, best first.
    pub hits: Vec<Hit>,
    /// Time per stage.
    pub timings: Timings,
}

/// The first stage's full output, before the cut to `k`: what evaluation and reranking consume.
#[derive(Debug, Clone)]
pub struct FirstStage {
    /// Each retriever's list, in the order BM25, dense (those that ran).
    pub lists: Vec<RankedList>,
    /// The fused list (a single list passed through in single-retriever modes).
    pub fused: FusedList,
    /// Stage timings (fetch and total not yet filled in).
    pub timings: Timings,
}

/// How to open an index.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Use this embedder model directory instead of the one recorded in the manifest.
    pub embedder_model: Option<PathBuf>,
    /// Embedder settings; `max_length` defaults to the manifest's.
    pub embedder: Option<EmbedderConfig>,
}

/// An opened index with its query embedder: the search engine.
pub struct Sieve {
    index: Arc<SieveIndex>,
    bm25: Bm25Retriever,
    dense: DenseRetriever,
}

impl Sieve {
    /// Opens the index in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, SieveError> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// Opens the index in `dir`. The query embedder is the model recorded in the manifest unless
    /// overridden; it must produce vectors of the index's dimension.
    pub fn open_with(dir: &Path, options: OpenOptions) -> Result<Self, SieveError> {
        let index = Arc::new(SieveIndex::open(dir)?);
        let recorded = &index.manifest.models.embedder;
        let model = options
            .embedder_model
            .clone()
            .unwrap_or_else(|| recorded.path.clone());
        let config = options.embedder.clone().unwrap_or_else(|| EmbedderConfig {
            max_length: recorded.max_length,
            ..EmbedderConfig::default()
        });
        let encoder = Arc::new(BiEncoder::open(&model, config)?);
        if encoder.dim() != index.manifest.counts.vector_dim {
            return Err(SieveError::InvalidRequest(format!(
                "query embedder {} produces {} dimensions, the index holds {}",
                model.display(),
                encoder.dim(),
                index.manifest.counts.vector_dim
            )));
        }
        Ok(Self {
            bm25: Bm25Retriever::new(index.clone()),
            dense: DenseRetriever::new(index.clone(), encoder),
            index,
        })
    }

    /// The opened index.
    pub fn index(&self) -> &SieveIndex {
        &self.index
    }

    /// The query embedding the dense retriever searches with (unit length).
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>, SieveError> {
        Ok(self.dense.encoder().embed_one(query)?)
    }

    /// Runs the first stage (retrievers + fusion) without cutting or fetching documents.
    pub fn first_stage(&self, request: &SearchRequest) -> Result<FirstStage, SieveError> {
        if request.query.trim().is_empty() {
            return Err(SieveError::InvalidRequest("the query is empty".into()));
        }
        let mut timings = Timings::default();
        let query = request.query.as_str();
        let timed_bm25 = || {
            let started = Instant::now();
            let list = self.bm25.retrieve(query, request.bm25_k);
            (list, started.elapsed().as_secs_f64() * 1e3)
        };
        let timed_dense = || {
            let started = Instant::now();
            let out = self.dense.retrieve_timed(query, request.dense_k);
            (out, started.elapsed().as_secs_f64() * 1e3)
        };
        let mut lists = Vec::new();
        match request.mode {
            Mode::Bm25 => {
                let (list, ms) = timed_bm25();
                timings.bm25_ms = ms;
                lists.push(list?);
            }
            Mode::Dense => {
                let (out, ms) = timed_dense();
                let (list, embed_ms) = out?;
                (timings.dense_ms, timings.embed_ms) = (ms, embed_ms);
                lists.push(list);
            }
            Mode::Hybrid => {
                let ((bm25, bm25_ms), dense) = std::thread::scope(|scope| {
                    let dense = scope.spawn(timed_dense);
                    (timed_bm25(), dense.join())
                });
                let (dense, dense_ms) =
                    dense.map_err(|_| RetrieveError::new("dense", "retriever thread panicked"))?;
                let (dense, embed_ms) = dense?;
                (timings.bm25_ms, timings.dense_ms, timings.embed_ms) =
                    (bm25_ms, dense_ms, embed_ms);
                lists.push(bm25?);
                lists.push(dense);
            }
        }
        let started = Instant::now();
        let fused = if lists.len() == 1 {
            passthrough(&lists[0])
        } else {
            request.fusion.build().fuse(&lists)
        };
        timings.fusion_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(FirstStage {
            lists,
            fused,
            timings,
        })
    }

    /// Searches: first stage, cut to `k`, fetch documents.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SieveError> {
        let started = Instant::now();
        if request.k == 0 {
            return Err(SieveError::InvalidRequest("k must be at least 1".into()));
        }
        let stage = self.first_stage(request)?;
        let mut timings = stage.timings;
        let fetch_started = Instant::now();
        let stage_of = |candidate: &FusedCandidate, name: &str| {
            stage
                .lists
                .iter()
                .position(|l| l.stage == name)
                .and_then(|i| candidate.stages.get(i).copied().flatten())
        };
        let mut hits = Vec::with_capacity(request.k.min(stage.fused.len()));
        for (position, candidate) in stage.fused.iter().take(request.k).enumerate() {
            let doc = self.index.docs.get(candidate.doc)?;
            hits.push(Hit {
                rank: position + 1,
                id: doc.id,
                score: candidate.score,
                bm25: stage_of(candidate, "bm25"),
                dense: stage_of(candidate, "dense"),
                title: doc.title,
                text: doc.text,
            });
        }
        timings.fetch_ms = fetch_started.elapsed().as_secs_f64() * 1e3;
        timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(SearchResponse {
            query: request.query.clone(),
            mode: request.mode,
            fusion: (request.mode == Mode::Hybrid).then(|| request.fusion.build().describe()),
            candidates: stage.fused.len(),
            hits,
            timings,
        })
    }

    /// [`search`](Self::search) on tokio's blocking pool, for async applications.
    pub async fn search_async(
        self: Arc<Self>,
        request: SearchRequest,
    ) -> Result<SearchResponse, SieveError> {
        tokio::task::spawn_blocking(move || self.search(&request))
            .await
            .map_err(|e| SieveError::Task(e.to_string()))?
    }
}

/// A single retriever's list as a fused list (score = the stage's own score).
fn passthrough(list: &RankedList) -> FusedList {
    list.candidates
        .iter()
        .enumerate()
        .map(|(i, c)| FusedCandidate {
            doc: c.doc,
            score: c.score,
            stages: vec![Some(StageScore {
                rank: i + 1,
                score: c.score,
            })],
        })
        .collect()
}
