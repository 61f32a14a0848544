//! What a search answers: hits with their stage scores, timings, and the rerank report.

use serde::{Deserialize, Serialize};
use sieve_core::{ExitTrace, FusedList, RankedList, RerankScore, RerankStats, StageScore};

use crate::request::Mode;

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

/// The answer to a [`SearchRequest`](crate::SearchRequest).
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
