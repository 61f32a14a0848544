//! The rerank stage's pure functions: stored states for a window, reranking it under a budget
//! (pruning on the blend when there is one) and the window's final order.

use sieve_core::{
    Budget, DocStates, PruneBlend, RerankDoc, RerankError, RerankOutput, Reranker, min_max,
};
use sieve_index::SieveIndex;

use crate::error::SieveError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use sieve_core::{ExitScore, ExitTrace, RerankScore, RerankStats};

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
