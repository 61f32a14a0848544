use serde::{Deserialize, Serialize};

/// One document proposed by a retriever: its ordinal in the index and the retriever's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The document's ordinal in the index.
    pub doc: u32,
    /// The retriever's raw score (higher is better).
    pub score: f32,
}

/// A retriever's output: the stage name and its candidates, best first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankedList {
    /// The stage that produced the list (`bm25`, `dense`).
    pub stage: String,
    /// Candidates, best first.
    pub candidates: Vec<Candidate>,
}

impl RankedList {
    /// Builds a list, sorting candidates by score descending (ties: lower ordinal first) so that
    /// ranks are well defined whatever order the retriever produced them in.
    pub fn new(stage: impl Into<String>, mut candidates: Vec<Candidate>) -> Self {
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        Self {
            stage: stage.into(),
            candidates,
        }
    }
}

/// Where a document stood in one stage: 1-based rank and raw score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageScore {
    /// 1-based rank within the stage.
    pub rank: usize,
    /// The stage's raw score.
    pub score: f32,
}

/// A document after fusion: the fused score plus where it stood in every input stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedCandidate {
    /// The document's ordinal in the index.
    pub doc: u32,
    /// The fused score (higher is better).
    pub score: f32,
    /// Per input list, in input order: the document's rank and score there, if it was retrieved.
    pub stages: Vec<Option<StageScore>>,
}

/// Fusion's output, best first.
pub type FusedList = Vec<FusedCandidate>;
