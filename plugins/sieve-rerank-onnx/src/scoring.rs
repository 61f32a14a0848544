//! How a [`CrossEncoder`] scores: the [`Reranker`] implementation, dispatching each call to the
//! single graph, the segmented (Matryoshka) runner or the late-joined model.

use sieve_core::{
    Budget, PruneBlend, RerankDoc, RerankError, RerankOutput, RerankScore, RerankStats, Reranker,
    sigmoid,
};

use crate::late_joined;
use crate::matryoshka::Runner;
use crate::single::SingleGraph;
use crate::{Calibration, CrossEncoder, Engine};

impl Reranker for CrossEncoder {
    fn describe(&self) -> String {
        match &self.engine {
            Engine::Single { .. } => format!("onnx:{} ({})", self.model_dir.display(), self.device),
            Engine::Matryoshka(m) => {
                let exits: Vec<String> = m
                    .segments
                    .iter()
                    .map(|s| s.exit_layer.to_string())
                    .collect();
                format!(
                    "onnx:{} (matryoshka, exits {}, {}, {})",
                    self.model_dir.display(),
                    exits.join("/"),
                    m.precision,
                    self.device
                )
            }
            Engine::LateJoined(m) => {
                let exits: Vec<String> = m.exits().iter().map(|e| e.layer.to_string()).collect();
                format!(
                    "onnx:{} (late-joined, exits {}, {}, {})",
                    self.model_dir.display(),
                    exits.join("/"),
                    m.precision,
                    self.device
                )
            }
        }
    }

    fn rerank(&self, query: &str, docs: &[RerankDoc<'_>]) -> Result<RerankOutput, RerankError> {
        self.rerank_budgeted(query, docs, &Budget::Default)
    }

    fn recommended_blend(&self) -> Option<f32> {
        match &self.engine {
            Engine::LateJoined(m) => m.manifest.blend.map(|b| b.reranker_weight),
            _ => self
                .manifest()
                .and_then(|m| m.blend)
                .map(|b| b.reranker_weight),
        }
    }

    fn document_states(
        &self,
        docs: &[RerankDoc<'_>],
    ) -> Result<Option<Vec<sieve_core::DocStates>>, RerankError> {
        match &self.engine {
            Engine::LateJoined(m) => m.document_states(docs).map(Some),
            _ => Ok(None),
        }
    }

    fn state_codec_id(&self) -> Option<String> {
        match &self.engine {
            Engine::LateJoined(m) => Some(m.codec.id().to_string()),
            _ => None,
        }
    }

    /// Single-graph models serve only [`Budget::Default`]. Matryoshka models serve every budget:
    /// see [`cascade_order`](crate::cascade_order) for the order a cascade's output must be presented in.
    fn rerank_budgeted(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
    ) -> Result<RerankOutput, RerankError> {
        self.rerank_pruning_on(query, docs, budget, None)
    }

    fn rerank_blended(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
        blend: PruneBlend<'_>,
    ) -> Result<RerankOutput, RerankError> {
        blend.check(docs.len())?;
        self.rerank_pruning_on(query, docs, budget, Some(blend))
    }

    /// Late-joined models run all queries' towers and joint blocks in shared batches; the
    /// others score the queries one after the other.
    fn rerank_many(
        &self,
        queries: &[sieve_core::RerankQuery<'_>],
    ) -> Vec<Result<RerankOutput, RerankError>> {
        match &self.engine {
            Engine::LateJoined(m) => {
                let requests: Vec<late_joined::RerankRequest<'_>> = queries
                    .iter()
                    .map(|q| (q.query, q.docs, q.budget, None))
                    .collect();
                m.rerank_many(&requests, &self.device)
            }
            _ => queries
                .iter()
                .map(|q| self.rerank_budgeted(q.query, q.docs, q.budget))
                .collect(),
        }
    }
}

impl CrossEncoder {
    /// Scores a single-graph model's pairs (one exit, no budgets).
    fn rerank_single(
        &self,
        graph: &SingleGraph,
        calibration: Option<Calibration>,
        query: &str,
        docs: &[RerankDoc<'_>],
    ) -> Result<RerankOutput, RerankError> {
        let mut stats = RerankStats {
            device: self.device.clone(),
            ..RerankStats::default()
        };
        let began = std::time::Instant::now();
        let query_tokens = self.encoder.query_tokens(query)?;
        if docs.is_empty() {
            stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;
            return Ok(RerankOutput {
                scores: Vec::new(),
                traces: Vec::new(),
                stats,
            });
        }
        let encoded = self.encoder.encode_docs(&query_tokens, docs)?;
        stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;

        let raw = graph.score_pairs(
            &encoded.pairs,
            &self.encoder,
            self.config.batch_tokens,
            self.config.max_batch,
            &mut stats,
        )?;

        let scores = encoded
            .windows
            .iter()
            .map(|range| {
                let (score, best_window) = self.config.aggregation.combine(&raw[range.clone()]);
                RerankScore {
                    raw: score,
                    calibrated: calibration.map_or_else(|| sigmoid(score), |c| c.apply(score)),
                    windows: range.len(),
                    best_window,
                }
            })
            .collect();
        Ok(RerankOutput {
            scores,
            traces: Vec::new(),
            stats,
        })
    }

    /// Scores under `budget`; a cascade prunes on the exit scores, or on their blend with the
    /// first stage when `blend` is given.
    fn rerank_pruning_on(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
        blend: Option<PruneBlend<'_>>,
    ) -> Result<RerankOutput, RerankError> {
        match &self.engine {
            Engine::Single { graph, calibration } => match budget {
                Budget::Default => self.rerank_single(graph, *calibration, query, docs),
                other => Err(self.needs_matryoshka(&format!("budgets such as '{other}'"))),
            },
            Engine::Matryoshka(m) => m.rerank(
                &Runner {
                    encoder: &self.encoder,
                    config: &self.config,
                    device: &self.device,
                },
                query,
                docs,
                budget,
                blend,
            ),
            Engine::LateJoined(m) => m.rerank(query, docs, budget, blend, &self.device),
        }
    }
}
