//! Fusion methods: merge several ranked lists into one.
//!
//! * [`Rrf`]: reciprocal rank fusion, `score(d) = Σ_lists 1 / (k + rank(d))` (Cormack et al.,
//!   2009), ranks 1-based, documents absent from a list contribute nothing. Robust when score
//!   scales differ; the default.
//! * [`WeightedFusion`]: a convex combination of min-max-normalised scores,
//!   `score(d) = Σ w_i · (s_i(d) − min_i) / (max_i − min_i)`; a document absent from a list
//!   contributes 0 for it. When a list's scores are all equal, every present document gets 1.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{FusedCandidate, FusedList, RankedList, StageScore};

/// A method that merges ranked lists into one.
pub trait Fusion: Send + Sync {
    /// A description such as `rrf(k=60)`, shown in outputs.
    fn describe(&self) -> String;

    /// Fuses `lists` into one list, best first. Ties are broken by ordinal, ascending, so the
    /// result is deterministic.
    fn fuse(&self, lists: &[RankedList]) -> FusedList;
}

/// Reciprocal rank fusion with constant `k` (60 by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rrf {
    /// The rank constant; larger values flatten the contribution of top ranks.
    pub k: f32,
}

impl Default for Rrf {
    fn default() -> Self {
        Self { k: 60.0 }
    }
}

impl Fusion for Rrf {
    fn describe(&self) -> String {
        format!("rrf(k={})", self.k)
    }

    fn fuse(&self, lists: &[RankedList]) -> FusedList {
        fuse_with(lists, |_, stage| 1.0 / (self.k + stage.rank as f32))
    }
}

/// Convex combination of min-max-normalised scores, one weight per input list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedFusion {
    /// One weight per input list, in input order; they should sum to 1.
    pub weights: Vec<f32>,
}

impl Fusion for WeightedFusion {
    fn describe(&self) -> String {
        let weights: Vec<String> = self.weights.iter().map(|w| format!("{w}")).collect();
        format!("weighted({})", weights.join(","))
    }

    fn fuse(&self, lists: &[RankedList]) -> FusedList {
        let ranges: Vec<(f32, f32)> = lists
            .iter()
            .map(|list| {
                list.candidates
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), c| {
                        (lo.min(c.score), hi.max(c.score))
                    })
            })
            .collect();
        fuse_with(lists, |list_index, stage| {
            let weight = self.weights.get(list_index).copied().unwrap_or(0.0);
            let (lo, hi) = ranges[list_index];
            let normalised = if hi > lo {
                (stage.score - lo) / (hi - lo)
            } else {
                1.0
            };
            weight * normalised
        })
    }
}

/// Shared fusion skeleton: collects every document's stage positions, sums `contribution` over
/// the lists it appears in, sorts by fused score (ties: ordinal ascending).
fn fuse_with(lists: &[RankedList], contribution: impl Fn(usize, &StageScore) -> f32) -> FusedList {
    let mut by_doc: HashMap<u32, FusedCandidate> = HashMap::new();
    for (list_index, list) in lists.iter().enumerate() {
        for (position, candidate) in list.candidates.iter().enumerate() {
            let entry = by_doc
                .entry(candidate.doc)
                .or_insert_with(|| FusedCandidate {
                    doc: candidate.doc,
                    score: 0.0,
                    stages: vec![None; lists.len()],
                });
            // A retriever returning a document twice keeps its best (first) position.
            if entry.stages[list_index].is_none() {
                let stage = StageScore {
                    rank: position + 1,
                    score: candidate.score,
                };
                entry.score += contribution(list_index, &stage);
                entry.stages[list_index] = Some(stage);
            }
        }
    }
    let mut fused: FusedList = by_doc.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    fused
}

/// A fusion method as a user names it: `rrf`, `rrf:K`, or `weighted:W`.
///
/// For the two-list hybrid search (BM25 first, dense second), `weighted:W` gives the **dense**
/// list weight `W` and BM25 weight `1 − W` (as Weaviate's and LanceDB's hybrid `alpha` do).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum FusionSpec {
    /// Reciprocal rank fusion with constant `k`.
    Rrf {
        /// The rank constant.
        k: f32,
    },
    /// Weighted min-max fusion; `dense_weight` in `[0, 1]`.
    Weighted {
        /// The dense list's weight; BM25 gets `1 - dense_weight`.
        dense_weight: f32,
    },
}

impl Default for FusionSpec {
    fn default() -> Self {
        FusionSpec::Rrf { k: 60.0 }
    }
}

impl FusionSpec {
    /// Builds the fusion method for the two-list hybrid search (BM25, dense).
    pub fn build(&self) -> Box<dyn Fusion> {
        match *self {
            FusionSpec::Rrf { k } => Box::new(Rrf { k }),
            FusionSpec::Weighted { dense_weight } => Box::new(WeightedFusion {
                weights: vec![1.0 - dense_weight, dense_weight],
            }),
        }
    }
}

impl fmt::Display for FusionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FusionSpec::Rrf { k } => write!(f, "rrf:{k}"),
            FusionSpec::Weighted { dense_weight } => write!(f, "weighted:{dense_weight}"),
        }
    }
}

/// Why a fusion name could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "invalid fusion `{input}`: {reason} (expected `rrf`, `rrf:K` with K > 0, or `weighted:W` with 0 <= W <= 1)"
)]
pub struct ParseFusionError {
    input: String,
    reason: &'static str,
}

impl FromStr for FusionSpec {
    type Err = ParseFusionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseFusionError {
            input: input.to_string(),
            reason,
        };
        let (method, arg) = match input.split_once(':') {
            Some((m, a)) => (m.trim(), Some(a.trim())),
            None => (input.trim(), None),
        };
        let number = |a: &str| a.parse::<f32>().map_err(|_| err("not a number"));
        match (method, arg) {
            ("rrf", None) => Ok(FusionSpec::default()),
            ("rrf", Some(a)) => {
                let k = number(a)?;
                if k.is_finite() && k > 0.0 {
                    Ok(FusionSpec::Rrf { k })
                } else {
                    Err(err("K must be positive"))
                }
            }
            ("weighted", None) => Ok(FusionSpec::Weighted { dense_weight: 0.5 }),
            ("weighted", Some(a)) => {
                let w = number(a)?;
                if (0.0..=1.0).contains(&w) {
                    Ok(FusionSpec::Weighted { dense_weight: w })
                } else {
                    Err(err("W must be within [0, 1]"))
                }
            }
            _ => Err(err("unknown method")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Candidate;

    fn list(stage: &str, pairs: &[(u32, f32)]) -> RankedList {
        RankedList::new(
            stage,
            pairs
                .iter()
                .map(|&(doc, score)| Candidate { doc, score })
                .collect(),
        )
    }

    fn approx(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn rrf_sums_reciprocal_ranks() {
        let bm25 = list("bm25", &[(1, 9.0), (2, 7.0), (3, 1.0)]);
        let dense = list("dense", &[(3, 0.9), (1, 0.8)]);
        let fused = Rrf { k: 60.0 }.fuse(&[bm25, dense]);
        let score = |doc| fused.iter().find(|f| f.doc == doc).map(|f| f.score);
        assert!(approx(score(1).unwrap(), 1.0 / 61.0 + 1.0 / 62.0));
        assert!(approx(score(2).unwrap(), 1.0 / 62.0));
        assert!(approx(score(3).unwrap(), 1.0 / 63.0 + 1.0 / 61.0));
        // doc 3 (ranks 3 and 1) beats doc 1 (ranks 1 and 2)? 1/63+1/61 < 1/61+1/62, so no.
        assert_eq!(
            fused.iter().map(|f| f.doc).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        let doc2 = fused.iter().find(|f| f.doc == 2).unwrap();
        assert_eq!(
            doc2.stages,
            vec![
                Some(StageScore {
                    rank: 2,
                    score: 7.0
                }),
                None
            ]
        );
    }

    #[test]
    fn rrf_constant_changes_order() {
        // doc 10: rank 1 in list A only; doc 20: rank 3 in both lists.
        let a = list("a", &[(10, 3.0), (30, 2.0), (20, 1.0)]);
        let b = list("b", &[(40, 3.0), (50, 2.0), (20, 1.0)]);
        let small_k = Rrf { k: 1.0 }.fuse(&[a.clone(), b.clone()]);
        // k=1: doc10 = 1/2 = 0.5, doc20 = 2/4 = 0.5 -> tie, ordinal breaks it (10 first).
        assert_eq!(small_k[0].doc, 10);
        let large_k = Rrf { k: 60.0 }.fuse(&[a, b]);
        // k=60: doc20 = 2/63 > doc10 = 1/61.
        assert_eq!(large_k[0].doc, 20);
    }

    #[test]
    fn weighted_min_max_arithmetic() {
        let bm25 = list("bm25", &[(1, 10.0), (2, 6.0), (3, 2.0)]);
        let dense = list("dense", &[(3, 0.9), (4, 0.5), (1, 0.4)]);
        let fusion = FusionSpec::Weighted { dense_weight: 0.7 }.build();
        let fused = fusion.fuse(&[bm25, dense]);
        let score = |doc| fused.iter().find(|f| f.doc == doc).unwrap().score;
        // bm25 normalised: 1 -> 1.0, 2 -> 0.5, 3 -> 0.0; dense: 3 -> 1.0, 4 -> 0.2, 1 -> 0.0
        assert!(approx(score(1), 0.3 * 1.0 + 0.7 * 0.0));
        assert!(approx(score(2), 0.3 * 0.5));
        assert!(approx(score(3), 0.3 * 0.0 + 0.7 * 1.0));
        assert!(approx(score(4), 0.7 * 0.2));
        assert_eq!(
            fused.iter().map(|f| f.doc).collect::<Vec<_>>(),
            vec![3, 1, 2, 4]
        );
    }

    #[test]
    fn weighted_constant_list_gives_full_weight() {
        let bm25 = list("bm25", &[(1, 5.0), (2, 5.0)]);
        let fused = FusionSpec::Weighted { dense_weight: 0.25 }
            .build()
            .fuse(&[bm25, list("dense", &[])]);
        assert!(fused.iter().all(|f| approx(f.score, 0.75)));
        assert_eq!(fused[0].doc, 1);
    }

    #[test]
    fn duplicate_docs_keep_first_position() {
        let a = RankedList {
            stage: "a".into(),
            candidates: vec![
                Candidate { doc: 1, score: 2.0 },
                Candidate { doc: 1, score: 1.0 },
            ],
        };
        let fused = Rrf::default().fuse(&[a]);
        assert_eq!(fused.len(), 1);
        assert!(approx(fused[0].score, 1.0 / 61.0));
    }

    #[test]
    fn parse_fusion_specs() {
        assert_eq!("rrf".parse::<FusionSpec>(), Ok(FusionSpec::Rrf { k: 60.0 }));
        assert_eq!(
            "rrf:10".parse::<FusionSpec>(),
            Ok(FusionSpec::Rrf { k: 10.0 })
        );
        assert_eq!(
            "weighted:0.7".parse::<FusionSpec>(),
            Ok(FusionSpec::Weighted { dense_weight: 0.7 })
        );
        for bad in ["rrf:0", "rrf:x", "weighted:1.5", "max", "weighted:-1"] {
            let err = bad.parse::<FusionSpec>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
