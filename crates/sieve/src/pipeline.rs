//! The search pipeline: first stage (BM25 ∥ dense), fusion, top-k, document fetch, rerank.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sieve_core::{
    DocStates, FusedCandidate, FusedList, RankedList, RerankDoc, RerankError, Reranker,
    RetrieveError, Retriever, StageScore,
};
use sieve_embed::{BiEncoder, EmbedderConfig};
use sieve_index::SieveIndex;

use crate::error::SieveError;
use crate::request::{Mode, SearchRequest};
use crate::rerank_stage::{rerank_order, rerank_window, stored_states};
use crate::response::{FirstStage, Hit, RerankReport, SearchResponse, Timings};
use crate::retrievers::{Bm25Retriever, DenseRetriever};

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
