//! The search pipeline: first stage (BM25 ∥ dense), fusion, top-k, document fetch.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sieve_core::{
    Budget, DocStates, ExitTrace, FusedCandidate, FusedList, FusionSpec, PruneBlend, RankedList,
    RerankDoc, RerankError, RerankOutput, RerankScore, RerankStats, Reranker, RetrieveError,
    Retriever, StageScore, min_max,
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
    /// The bi-encoder file the index was built with is gone or has changed: queries embedded by
    /// another graph would not match the stored document vectors, so the index is refused.
    #[error("{0}")]
    EmbedderChanged(String),
    /// The reranker failed. `fallback` is the same search answered in fused first-stage order,
    /// so a caller can degrade gracefully instead of failing the search.
    #[error("{error} (the fused first-stage order is available as a fallback)")]
    Rerank {
        /// What went wrong.
        error: RerankError,
        /// The search answered without reranking.
        fallback: Box<SearchResponse>,
    },
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
    /// Rerank the top of the fused list, if set (needs a reranker attached to the engine).
    #[serde(default)]
    pub rerank: Option<RerankSettings>,
}

/// How the rerank stage runs for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankSettings {
    /// How many fused candidates are reranked (the rerank window).
    pub window: usize,
    /// Drop reranked results whose calibrated score is below this.
    pub min_score: Option<f32>,
    /// How much of a Matryoshka reranker to spend (exit, cascade, profile, latency).
    #[serde(default)]
    pub budget: Budget,
    /// Whether and how the reranker's score is blended with the fused first-stage score.
    #[serde(default)]
    pub blend: BlendChoice,
}

impl Default for RerankSettings {
    fn default() -> Self {
        Self {
            window: 100,
            min_score: None,
            budget: Budget::Default,
            blend: BlendChoice::Model,
        }
    }
}

/// How the final order of the rerank window is computed from the reranker's and the fused scores.
///
/// A blend is `w·r + (1−w)·f`, where `r` and `f` are the reranker's raw scores and the fused scores
/// min-max normalised over the reranked candidates: `w = 1` is the pure reranker order, `w = 0`
/// the fused order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendChoice {
    /// The weight the model's manifest recommends (fitted on held-out data), else the pure
    /// reranker order.
    #[default]
    Model,
    /// The pure reranker order.
    Off,
    /// This weight of the reranker's score, in `[0, 1]`.
    Weight(f32),
}

impl FromStr for BlendChoice {
    type Err = String;

    /// `model` (or `auto`), `off` (or `none`), or a reranker weight in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "model" | "auto" => BlendChoice::Model,
            "off" | "none" => BlendChoice::Off,
            w => {
                let weight: f32 = w
                    .parse()
                    .ok()
                    .filter(|w: &f32| (0.0..=1.0).contains(w))
                    .ok_or_else(|| {
                        format!("blend `{w}`: expected model, off or a weight in [0, 1]")
                    })?;
                BlendChoice::Weight(weight)
            }
        })
    }
}

impl BlendChoice {
    /// The reranker weight to use with `reranker`; `None` = the pure reranker order.
    pub fn weight_for(self, reranker: &dyn Reranker) -> Option<f32> {
        match self {
            BlendChoice::Model => reranker.recommended_blend(),
            BlendChoice::Off => None,
            BlendChoice::Weight(w) => Some(w),
        }
    }
}

/// The stored rerank states of the documents `ordinals` of `index`, in order — when the index has
/// a state store made with `reranker`'s own codec ([`Reranker::state_codec_id`]); an empty vector
/// otherwise, so a reranker never reads states from another codec (it computes its own).
pub fn stored_states(
    index: &SieveIndex,
    reranker: &dyn Reranker,
    ordinals: impl Iterator<Item = u32>,
) -> Result<Vec<DocStates>, SieveError> {
    let (Some(store), Some(codec)) = (&index.states, reranker.state_codec_id()) else {
        return Ok(Vec::new());
    };
    if store.info.codec_sha256 != codec {
        return Ok(Vec::new());
    }
    Ok(ordinals
        .map(|o| store.get(o))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Reranks a window under `budget`. With a blend, a cascade prunes on that blend of each exit's
/// score with the fused score (see [`Reranker::rerank_blended`]), so the survivors of every step
/// are the ones [`rerank_order`] would put first; without one, on the exit scores alone.
pub fn rerank_window(
    reranker: &dyn Reranker,
    query: &str,
    docs: &[RerankDoc<'_>],
    budget: &Budget,
    fused_scores: &[f32],
    blend: Option<f32>,
) -> Result<RerankOutput, RerankError> {
    match blend {
        Some(weight) => reranker.rerank_blended(
            query,
            docs,
            budget,
            PruneBlend {
                first_stage: fused_scores,
                weight: weight.clamp(0.0, 1.0),
            },
        ),
        None => reranker.rerank_budgeted(query, docs, budget),
    }
}

/// The final order of a reranked window: positions (0-based, into the window) best first, and
/// each one's final score.
///
/// Candidates are ordered in tiers by how deep a cascade carried them (survivors of the last
/// step first, then those pruned at the previous step, ..., then any left unscored, in fused
/// order); within a tier by the blended score when `blend` is set, else by the reranker's raw
/// score. Ties keep the fused order. `fused_scores` are the window's fused scores, in order.
pub fn rerank_order(
    output: &RerankOutput,
    fused_scores: &[f32],
    blend: Option<f32>,
) -> Vec<(usize, f32)> {
    let n = output.scores.len().min(fused_scores.len());
    // Depth tier: higher = reached deeper. Unscored (pruned_at 0) lowest.
    let tier = |i: usize| -> i64 {
        match output.traces.get(i).map(|t| t.pruned_at) {
            None | Some(None) => i64::MAX,
            Some(Some(layer)) => i64::from(layer),
        }
    };
    let final_score: Vec<f32> = match blend {
        None => output.scores[..n].iter().map(|s| s.raw).collect(),
        Some(w) => {
            let w = w.clamp(0.0, 1.0);
            // Normalise the reranker's scores within each tier (a tier's scores come from one
            // head) and the fused scores over the whole window.
            let fused = min_max(&fused_scores[..n]);
            let mut blended = vec![0.0f32; n];
            let mut tiers: Vec<i64> = (0..n).map(tier).collect();
            tiers.sort_unstable();
            tiers.dedup();
            for t in tiers {
                let members: Vec<usize> = (0..n).filter(|&i| tier(i) == t).collect();
                let raw: Vec<f32> = members.iter().map(|&i| output.scores[i].raw).collect();
                for (&i, r) in members.iter().zip(min_max(&raw)) {
                    blended[i] = if t == 0 {
                        fused[i]
                    } else {
                        w * r + (1.0 - w) * fused[i]
                    };
                }
            }
            blended
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let unscored = |i: usize| tier(i) == 0;
        tier(b)
            .cmp(&tier(a))
            .then_with(|| {
                if unscored(a) && unscored(b) {
                    std::cmp::Ordering::Equal
                } else {
                    final_score[b].total_cmp(&final_score[a])
                }
            })
            .then(a.cmp(&b))
    });
    order.into_iter().map(|i| (i, final_score[i])).collect()
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
            rerank: None,
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
    /// Fetching documents (the rerank window's, or the returned ones).
    pub fetch_ms: f64,
    /// The rerank stage (tokenization + model), when it ran.
    pub rerank_ms: f64,
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
    /// The final score: when reranked, the reranker's raw score, or the blend of the normalised
    /// reranker and fused scores when a blend is on; else the fused score.
    pub score: f32,
    /// Rank and score after fusion (the stage's own in single-retriever modes).
    pub fused: StageScore,
    /// BM25 rank and score, if BM25 retrieved it.
    pub bm25: Option<StageScore>,
    /// Dense rank and cosine, if the dense retriever retrieved it.
    pub dense: Option<StageScore>,
    /// The rerank score (raw, calibrated, windows), when the rerank stage scored it.
    pub rerank: Option<RerankScore>,
    /// For Matryoshka rerankers: the score at every exit the candidate reached and where a
    /// cascade pruned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exits: Option<ExitTrace>,
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
    /// The reranker and what it did, when the rerank stage ran.
    pub rerank: Option<RerankReport>,
    /// Time per stage.
    pub timings: Timings,
}

/// What the rerank stage did for one search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankReport {
    /// The reranker's description.
    pub model: String,
    /// Candidates reranked.
    pub window: usize,
    /// Reranked candidates dropped by `min_score`.
    pub below_min_score: usize,
    /// The reranker weight of the blend with the fused score (`None`: pure reranker order).
    pub blend: Option<f32>,
    /// Pairs, batches, tokens and time inside the reranker.
    pub stats: RerankStats,
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

/// Refuses a query embedder whose ONNX file is not the one the index's documents were embedded
/// with (same sha256), naming the file and what to do.
fn check_embedder(
    model: &Path,
    recorded: &sieve_index::manifest::ModelInfo,
) -> Result<(), SieveError> {
    let file = sieve_embed::find_onnx_model(model).map_err(|_| {
        SieveError::EmbedderChanged(format!(
            "the index was built with the bi-encoder {} (sha256 {}), which is no longer there: \
             restore that file, or re-index with `sieve index` to use the current model",
            recorded.onnx.display(),
            recorded.sha256
        ))
    })?;
    let sha = sieve_embed::sha256_file(&file).map_err(|e| {
        SieveError::EmbedderChanged(format!(
            "cannot read the bi-encoder {}: {e}",
            file.display()
        ))
    })?;
    if sha != recorded.sha256 {
        return Err(SieveError::EmbedderChanged(format!(
            "the bi-encoder {} (sha256 {sha}) is not the one the index was built with ({}, sha256 \
             {}): its query vectors would not match the stored document vectors; re-index with \
             `sieve index`, or restore that file",
            file.display(),
            recorded.onnx.display(),
            recorded.sha256
        )));
    }
    Ok(())
}

/// An opened index with its query embedder: the search engine.
pub struct Sieve {
    index: Arc<SieveIndex>,
    bm25: Bm25Retriever,
    dense: DenseRetriever,
    reranker: Option<Arc<dyn Reranker>>,
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
        // Queries must be embedded by the very graph that embedded the documents: use the ONNX
        // file the manifest recorded, not whatever the model directory resolves to today.
        let model = options.embedder_model.clone().unwrap_or_else(|| {
            if recorded.onnx.is_file() {
                recorded.onnx.clone()
            } else {
                recorded.path.clone()
            }
        });
        check_embedder(&model, recorded)?;
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
            reranker: None,
        })
    }

    /// The index's current generation when another writer published a newer one since this
    /// engine opened it (`sieve index --append`, `sieve delete`, [`sieve_index::IndexBuilder::update`]),
    /// sharing this engine's query embedder and reranker; `None` when it is unchanged. This
    /// engine keeps answering from its own generation, so a server swaps engines between
    /// requests and never stops answering.
    pub fn reopen_if_updated(&self) -> Result<Option<Self>, SieveError> {
        let current = &self.index.manifest;
        let on_disk = sieve_index::Manifest::load(self.index.path())?;
        if on_disk.generation() == current.generation() && on_disk.build == current.build {
            return Ok(None);
        }
        let index = Arc::new(SieveIndex::open(self.index.path())?);
        if index.manifest.counts.vector_dim != current.counts.vector_dim
            || index.manifest.models.embedder.sha256 != current.models.embedder.sha256
        {
            return Err(SieveError::InvalidRequest(format!(
                "{} was rebuilt with another embedding model; open it anew",
                self.index.path().display()
            )));
        }
        Ok(Some(Self {
            bm25: Bm25Retriever::new(index.clone()),
            dense: DenseRetriever::new(index.clone(), self.dense.shared_encoder()),
            index,
            reranker: self.reranker.clone(),
        }))
    }

    /// Attaches the reranker used by requests that ask for the rerank stage.
    pub fn with_reranker(mut self, reranker: Arc<dyn Reranker>) -> Self {
        self.reranker = Some(reranker);
        self
    }

    /// The attached reranker, if any.
    pub fn reranker(&self) -> Option<&Arc<dyn Reranker>> {
        self.reranker.as_ref()
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

    /// Searches: first stage, then (if asked) the rerank stage over the fused window, cut to
    /// `k`, documents fetched.
    ///
    /// A reranker failure returns [`SieveError::Rerank`] carrying the fused-order answer.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SieveError> {
        let started = Instant::now();
        if request.k == 0 {
            return Err(SieveError::InvalidRequest("k must be at least 1".into()));
        }
        let reranker = match &request.rerank {
            Some(settings) => {
                if settings.window == 0 {
                    return Err(SieveError::InvalidRequest(
                        "the rerank window must be at least 1".into(),
                    ));
                }
                Some(self.reranker.as_ref().ok_or_else(|| {
                    SieveError::InvalidRequest(
                        "reranking was requested but no reranker is attached".into(),
                    )
                })?)
            }
            None => None,
        };
        let stage = self.first_stage(request)?;
        let mut response = SearchResponse {
            query: request.query.clone(),
            mode: request.mode,
            fusion: (request.mode == Mode::Hybrid).then(|| request.fusion.build().describe()),
            candidates: stage.fused.len(),
            hits: Vec::new(),
            rerank: None,
            timings: stage.timings.clone(),
        };
        let (Some(reranker), Some(settings)) = (reranker, request.rerank.as_ref()) else {
            let fetch_started = Instant::now();
            response.hits = self.fused_hits(&stage, request.k)?;
            response.timings.fetch_ms = fetch_started.elapsed().as_secs_f64() * 1e3;
            response.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
            return Ok(response);
        };

        let window = settings.window.min(stage.fused.len());
        let fetch_started = Instant::now();
        let docs = stage.fused[..window]
            .iter()
            .map(|c| self.index.docs.get(c.doc))
            .collect::<Result<Vec<_>, _>>()?;
        let states = self.stored_states(reranker.as_ref(), &stage.fused[..window])?;
        response.timings.fetch_ms = fetch_started.elapsed().as_secs_f64() * 1e3;
        let rerank_docs: Vec<RerankDoc<'_>> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| RerankDoc {
                states: states.get(i),
                ..RerankDoc::new(&d.title, &d.text)
            })
            .collect();
        let blend = settings.blend.weight_for(reranker.as_ref());
        let fused_scores: Vec<f32> = stage.fused[..window].iter().map(|c| c.score).collect();
        let rerank_started = Instant::now();
        let output = match rerank_window(
            reranker.as_ref(),
            &request.query,
            &rerank_docs,
            &settings.budget,
            &fused_scores,
            blend,
        ) {
            Ok(output) if output.scores.len() == window => output,
            Ok(output) => {
                return Err(self.rerank_failed(
                    RerankError::Run(format!(
                        "{} scores for {window} documents",
                        output.scores.len()
                    )),
                    response,
                    &stage,
                    request.k,
                    started,
                ));
            }
            Err(error) => {
                return Err(self.rerank_failed(error, response, &stage, request.k, started));
            }
        };
        response.timings.rerank_ms = rerank_started.elapsed().as_secs_f64() * 1e3;

        // The reranked window in its final order (cascade tiers, blend), then the min-score
        // filter on the calibrated score (never-scored candidates cannot pass a threshold).
        let order = rerank_order(&output, &fused_scores, blend);
        let unscored = |i: usize| matches!(output.traces.get(i), Some(t) if t.pruned_at == Some(0));
        let passing: Vec<(usize, f32)> = order
            .into_iter()
            .filter(|&(i, _)| match settings.min_score {
                Some(threshold) => !unscored(i) && output.scores[i].calibrated >= threshold,
                None => true,
            })
            .collect();
        let below_min_score = window - passing.len();
        for &(i, score) in passing.iter().take(request.k) {
            let candidate = &stage.fused[i];
            let doc = docs[i].clone();
            let mut hit = self.hit(&stage, candidate, i, doc);
            hit.rank = response.hits.len() + 1;
            if !unscored(i) {
                hit.score = score;
                hit.rerank = Some(output.scores[i]);
                hit.exits = output.traces.get(i).cloned();
            }
            response.hits.push(hit);
        }
        // Without a threshold, candidates beyond the window follow in fused order.
        if settings.min_score.is_none() && response.hits.len() < request.k {
            for (position, candidate) in stage
                .fused
                .iter()
                .enumerate()
                .skip(window)
                .take(request.k - response.hits.len())
            {
                let mut hit = self.hit(
                    &stage,
                    candidate,
                    position,
                    self.index.docs.get(candidate.doc)?,
                );
                hit.rank = response.hits.len() + 1;
                response.hits.push(hit);
            }
        }
        response.rerank = Some(RerankReport {
            model: reranker.describe(),
            window,
            below_min_score,
            blend,
            stats: output.stats,
        });
        response.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(response)
    }

    /// The index's stored rerank states of `candidates`, when the index has a state store made
    /// with the reranker's own codec; empty otherwise (the reranker then computes what it needs).
    fn stored_states(
        &self,
        reranker: &dyn Reranker,
        candidates: &[FusedCandidate],
    ) -> Result<Vec<DocStates>, SieveError> {
        stored_states(&self.index, reranker, candidates.iter().map(|c| c.doc))
    }

    fn rerank_failed(
        &self,
        error: RerankError,
        mut response: SearchResponse,
        stage: &FirstStage,
        k: usize,
        started: Instant,
    ) -> SieveError {
        match self.fused_hits(stage, k) {
            Ok(hits) => {
                response.hits = hits;
                response.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
                SieveError::Rerank {
                    error,
                    fallback: Box::new(response),
                }
            }
            Err(fetch_error) => fetch_error,
        }
    }

    /// The top `k` of the fused list as hits.
    fn fused_hits(&self, stage: &FirstStage, k: usize) -> Result<Vec<Hit>, SieveError> {
        stage
            .fused
            .iter()
            .take(k)
            .enumerate()
            .map(|(position, candidate)| {
                Ok(self.hit(
                    stage,
                    candidate,
                    position,
                    self.index.docs.get(candidate.doc)?,
                ))
            })
            .collect()
    }

    /// A hit for the fused candidate at 0-based `position`, with its stage positions.
    fn hit(
        &self,
        stage: &FirstStage,
        candidate: &FusedCandidate,
        position: usize,
        doc: sieve_index::docstore::StoredDoc,
    ) -> Hit {
        let stage_of = |name: &str| {
            stage
                .lists
                .iter()
                .position(|l| l.stage == name)
                .and_then(|i| candidate.stages.get(i).copied().flatten())
        };
        Hit {
            rank: position + 1,
            id: doc.id,
            score: candidate.score,
            fused: StageScore {
                rank: position + 1,
                score: candidate.score,
            },
            bm25: stage_of("bm25"),
            dense: stage_of("dense"),
            rerank: None,
            exits: None,
            title: doc.title,
            text: doc.text,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sieve_core::ExitScore;

    fn score(raw: f32) -> RerankScore {
        RerankScore {
            raw,
            calibrated: sieve_core::sigmoid(raw),
            windows: 1,
            best_window: 0,
        }
    }

    fn output(raws: &[f32], pruned: &[Option<u32>]) -> RerankOutput {
        RerankOutput {
            scores: raws.iter().map(|&r| score(r)).collect(),
            traces: pruned
                .iter()
                .zip(raws)
                .map(|(&p, &raw)| ExitTrace {
                    exits: vec![ExitScore {
                        layer: 2,
                        width: 384,
                        raw,
                    }],
                    pruned_at: p,
                })
                .collect(),
            stats: RerankStats::default(),
        }
    }

    #[test]
    fn pure_order_is_by_raw_score_ties_keep_fused_order() {
        let out = RerankOutput {
            scores: [0.5, 2.0, 0.5, -1.0].iter().map(|&r| score(r)).collect(),
            ..Default::default()
        };
        let order: Vec<usize> = rerank_order(&out, &[4.0, 3.0, 2.0, 1.0], None)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(order, vec![1, 0, 2, 3]);
    }

    #[test]
    fn cascade_survivors_come_before_pruned_and_unscored_keep_fused_order() {
        // 0,1 reached the end; 2,3 were pruned at layer 2 (one with a high shallow score);
        // 4,5 were never scored.
        let out = output(
            &[0.1, 0.9, 5.0, 0.3, 0.0, 0.0],
            &[None, None, Some(2), Some(2), Some(0), Some(0)],
        );
        let order: Vec<usize> = rerank_order(&out, &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0], None)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(order, vec![1, 0, 2, 3, 4, 5]);
    }

    #[test]
    fn blend_weights_move_between_fused_and_reranker_order() {
        // The reranker reverses the fused order.
        let out = RerankOutput {
            scores: [0.0, 1.0, 2.0].iter().map(|&r| score(r)).collect(),
            ..Default::default()
        };
        let fused = [3.0, 2.0, 1.0];
        let ids = |w: f32| -> Vec<usize> {
            rerank_order(&out, &fused, Some(w))
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(ids(1.0), vec![2, 1, 0]);
        assert_eq!(ids(0.0), vec![0, 1, 2]);
        // w = 0.5: every blended score is 0.5, ties keep the fused order.
        assert_eq!(ids(0.5), vec![0, 1, 2]);
        let scored = rerank_order(&out, &fused, Some(0.75));
        assert_eq!(scored[0].0, 2);
        assert!((scored[0].1 - 0.75).abs() < 1e-6);
    }
}
