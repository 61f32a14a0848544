//! The rerank stage's interface: a model that scores (query, document) pairs precisely.

use serde::{Deserialize, Serialize};

/// A document to rerank: title and body are passed separately so a model can encode them the
/// way it was trained (typically `title + " " + text` as the second segment of the pair).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankDoc<'a> {
    /// Title, may be empty.
    pub title: &'a str,
    /// Body text, of any length (long documents are split into windows by the reranker).
    pub text: &'a str,
    /// The document's precomputed states, when its index stores them for the reranker (see
    /// [`Reranker::state_codec_id`]); rerankers that do not use states ignore them, and a
    /// late-joined reranker computes them itself when absent.
    pub states: Option<&'a crate::DocStates>,
}

impl<'a> RerankDoc<'a> {
    /// A document without precomputed states.
    pub fn new(title: &'a str, text: &'a str) -> Self {
        Self {
            title,
            text,
            states: None,
        }
    }
}

/// One document's rerank score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RerankScore {
    /// The model's raw score (logit) for the document, aggregated over its windows.
    pub raw: f32,
    /// A probability-like score in `[0, 1]`: the model's calibration if it has one, else
    /// `sigmoid(raw)`. Thresholds (`--min-score`) apply to this value.
    pub calibrated: f32,
    /// How many token windows of the document were scored.
    pub windows: usize,
    /// Which window (0-based) gave the best score.
    pub best_window: usize,
}

/// A document's score at one exit of a Matryoshka reranker (see [`Budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExitScore {
    /// Transformer layer after which the head sits (1-based).
    pub layer: u32,
    /// Width (prefix of the pooled hidden vector) of the head.
    pub width: u32,
    /// The head's raw score (logit), aggregated over the document's windows.
    pub raw: f32,
}

/// What a Matryoshka plan did to one document: the score at every exit it reached and, for a
/// cascade, the layer after which it was pruned (`None` when it reached the plan's last exit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitTrace {
    /// Scores at each exit the document reached, shallowest first.
    pub exits: Vec<ExitScore>,
    /// The exit layer at which the document was dropped by the cascade, if it was; `Some(0)`
    /// when it was never scored (a latency budget too small for the whole window).
    pub pruned_at: Option<u32>,
}

/// How much of a Matryoshka reranker to spend on one query. Models without exits accept only
/// [`Budget::Default`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// The model's default plan (full depth, widest head, unless its manifest says otherwise).
    #[default]
    Default,
    /// A named profile from the model's manifest or a config file (`fast`, `balanced`, `full`).
    Profile(String),
    /// One exit: run the segments up to `layer` and score with the head of `width`.
    Exit {
        /// Exit layer (must be one of the model's exits).
        layer: u32,
        /// Head width (must be one of that exit's widths).
        width: u32,
    },
    /// A cascade: every step scores its candidates at `layer` and passes on the best `keep`
    /// (the first step's `keep` caps how many candidates enter the cascade).
    Cascade(Vec<CascadeStep>),
    /// The deepest plan the model's measured cost table predicts fits in this many milliseconds.
    LatencyMs(f64),
}

/// One step of a cascade plan (`100@2` = the best 100 candidates are scored at layer 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadeStep {
    /// How many candidates this step scores (the best of the previous step's); `usize::MAX`
    /// (written `all`) = every one.
    pub keep: usize,
    /// Exit layer of this step.
    pub layer: u32,
    /// Head width at that exit (`None` = the widest).
    pub width: Option<u32>,
}

impl Budget {
    /// Parses the CLI forms: `fast|balanced|full|NAME` (profile), `L:W` (exit), `K@L[:W],...`
    /// (cascade), `NNms` (latency).
    pub fn parse(s: &str) -> Result<Budget, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty budget".into());
        }
        if s.contains('@') {
            let mut steps = Vec::new();
            for part in s.split(',') {
                let (keep, rest) = part
                    .trim()
                    .split_once('@')
                    .ok_or_else(|| format!("cascade step '{part}' is not KEEP@LAYER[:WIDTH]"))?;
                let keep: usize = match keep.trim() {
                    "all" => usize::MAX,
                    k => k.parse().map_err(|_| {
                        format!("cascade step '{part}': KEEP must be a positive integer or `all`")
                    })?,
                };
                let (layer, width) =
                    parse_layer_width(rest).map_err(|e| format!("cascade step '{part}': {e}"))?;
                if keep == 0 {
                    return Err(format!("cascade step '{part}': KEEP must be at least 1"));
                }
                steps.push(CascadeStep { keep, layer, width });
            }
            for w in steps.windows(2) {
                if w[1].layer <= w[0].layer || w[1].keep > w[0].keep {
                    return Err(format!(
                        "cascade '{s}': layers must increase and KEEP must not grow from step to step"
                    ));
                }
            }
            return Ok(Budget::Cascade(steps));
        }
        if let Some(ms) = s.strip_suffix("ms") {
            let ms: f64 = ms
                .trim()
                .parse()
                .map_err(|_| format!("latency budget '{s}' is not a number of milliseconds"))?;
            if !(ms.is_finite() && ms > 0.0) {
                return Err(format!("latency budget '{s}' must be positive"));
            }
            return Ok(Budget::LatencyMs(ms));
        }
        if s.contains(':') {
            let (layer, width) = parse_layer_width(s)?;
            let width = width.ok_or_else(|| format!("exit '{s}' needs LAYER:WIDTH"))?;
            return Ok(Budget::Exit { layer, width });
        }
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Ok(if s == "default" {
                Budget::Default
            } else {
                Budget::Profile(s.to_string())
            });
        }
        Err(format!(
            "budget '{s}' is not a profile name, LAYER:WIDTH, a cascade or NNms"
        ))
    }
}

fn parse_layer_width(s: &str) -> Result<(u32, Option<u32>), String> {
    let (l, w) = match s.split_once(':') {
        Some((l, w)) => (l, Some(w)),
        None => (s, None),
    };
    let layer: u32 = l
        .trim()
        .parse()
        .map_err(|_| format!("layer '{l}' is not a positive integer"))?;
    let width = match w {
        Some(w) => Some(
            w.trim()
                .parse::<u32>()
                .map_err(|_| format!("width '{w}' is not a positive integer"))?,
        ),
        None => None,
    };
    // Layer 0 would collide with `ExitTrace::pruned_at == Some(0)` (never scored).
    if layer == 0 || width == Some(0) {
        return Err("layer and width must be at least 1".into());
    }
    Ok((layer, width))
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Default => write!(f, "default"),
            Budget::Profile(p) => write!(f, "{p}"),
            Budget::Exit { layer, width } => write!(f, "{layer}:{width}"),
            Budget::Cascade(steps) => {
                for (i, st) in steps.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    if st.keep == usize::MAX {
                        write!(f, "all@{}", st.layer)?;
                    } else {
                        write!(f, "{}@{}", st.keep, st.layer)?;
                    }
                    if let Some(w) = st.width {
                        write!(f, ":{w}")?;
                    }
                }
                Ok(())
            }
            Budget::LatencyMs(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// Time spent in one segment of a segmented (early-exit) model during a rerank call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentTiming {
    /// Segment number (1-based).
    pub segment: u32,
    /// The exit layer the segment ends at.
    pub exit_layer: u32,
    /// (query, window) pairs the segment ran on.
    pub pairs: usize,
    /// Milliseconds in the segment's model calls.
    pub ms: f64,
}

/// What a rerank call did, for `--explain` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankStats {
    /// (query, window) pairs run through the model.
    pub pairs: usize,
    /// Model calls (batches).
    pub batches: usize,
    /// Tokens fed to the model, padding included.
    pub padded_tokens: usize,
    /// Tokenization time, milliseconds.
    pub tokenize_ms: f64,
    /// Model time, milliseconds.
    pub model_ms: f64,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// The concrete plan that ran (`full`, `4:96`, `100@2,30@4,10@6`); empty for single-graph
    /// models.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan: String,
    /// Per-segment timings (segmented models only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentTiming>,
    /// Set when a `LatencyMs` budget could not be met by any plan: says why, and the scores
    /// cover only the candidates the cheapest plan could afford (the rest keep fused order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_note: Option<String>,
}

/// Scores for every input document, in input order, plus what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankOutput {
    /// One score per input document, in input order. A document a cascade pruned keeps the
    /// score of the last exit it reached; a document a latency budget left unscored has raw and
    /// calibrated 0 and `pruned_at == Some(0)` in its trace.
    pub scores: Vec<RerankScore>,
    /// Per document (input order), the exits it reached; empty for single-graph models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<ExitTrace>,
    /// Cost accounting.
    pub stats: RerankStats,
}

/// Why a rerank failed. The pipeline turns any of these into "keep the fused order" for
/// library callers that ask for it, so a broken model never breaks search.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RerankError {
    /// The model could not be loaded (missing files, unsupported graph, no CUDA, ...).
    #[error("reranker could not be loaded: {0}")]
    Load(String),
    /// The model failed while scoring.
    #[error("reranker failed: {0}")]
    Run(String),
    /// The request cannot be served (empty query, ...).
    #[error("invalid rerank request: {0}")]
    Invalid(String),
}

/// A reranker: scores documents against a query. `Send + Sync`; batch in, scores out.
pub trait Reranker: Send + Sync {
    /// A short description of the model (`onnx:models/sieve-ce (int8, cpu)`), for outputs.
    fn describe(&self) -> String;

    /// Scores `docs` against `query`; the output has exactly one score per document.
    fn rerank(&self, query: &str, docs: &[RerankDoc<'_>]) -> Result<RerankOutput, RerankError>;

    /// The weight the model's manifest recommends for blending its score with the fused
    /// first-stage score (`w·reranker + (1−w)·fused`, both min-max normalised over the window),
    /// fitted on held-out data; `None` means use the reranker's order as is.
    fn recommended_blend(&self) -> Option<f32> {
        None
    }

    /// The identity (sha256) of the state codec whose [`DocStates`](crate::DocStates) this
    /// reranker reads, or `None` when it reads none. An index stores states made with one codec;
    /// callers pass them in [`RerankDoc::states`] only when the ids agree.
    fn state_codec_id(&self) -> Option<String> {
        None
    }

    /// Computes the [`DocStates`](crate::DocStates) this reranker reads for `docs` (what an index
    /// would store), so that a caller reranking the same documents many times computes them once;
    /// `None` for rerankers that read no states.
    fn document_states(
        &self,
        docs: &[RerankDoc<'_>],
    ) -> Result<Option<Vec<crate::DocStates>>, RerankError> {
        let _ = docs;
        Ok(None)
    }

    /// Scores `docs` under a [`Budget`]. Models without Matryoshka exits serve only
    /// [`Budget::Default`] and refuse the rest with [`RerankError::Invalid`].
    ///
    /// For a cascade, every document still gets a score: the one of the deepest exit it reached,
    /// and callers must order pruned documents after the survivors of later steps (see
    /// [`ExitTrace::pruned_at`]).
    fn rerank_budgeted(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
    ) -> Result<RerankOutput, RerankError> {
        match budget {
            Budget::Default => self.rerank(query, docs),
            other => Err(RerankError::Invalid(format!(
                "budget '{other}' needs a Matryoshka model (matryoshka.json); {} has a single exit",
                self.describe()
            ))),
        }
    }

    /// [`rerank_budgeted`](Self::rerank_budgeted) for a caller that will rank by a blend of the
    /// reranker with the first stage: a cascade then keeps, at each step, the documents best on
    /// that same blend ([`PruneBlend::scores`]), so a shallow exit that is weaker than the first
    /// stage cannot throw away what the first stage ranked high. Plans without pruning score the
    /// same as `rerank_budgeted`, which is what rerankers without cascades do.
    fn rerank_blended(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
        blend: PruneBlend<'_>,
    ) -> Result<RerankOutput, RerankError> {
        blend.check(docs.len())?;
        self.rerank_budgeted(query, docs, budget)
    }

    /// Scores several queries' documents at once — what a server does with concurrent requests —
    /// one result per query, in order, each what [`rerank_budgeted`](Self::rerank_budgeted) gives
    /// for it alone. Rerankers that can share model calls across queries (sieve's late-joined
    /// model packs every query's pairs into the same batches) override this; the default scores
    /// the queries one after the other.
    fn rerank_many(&self, queries: &[RerankQuery<'_>]) -> Vec<Result<RerankOutput, RerankError>> {
        queries
            .iter()
            .map(|q| self.rerank_budgeted(q.query, q.docs, q.budget))
            .collect()
    }
}

/// One query of a [`Reranker::rerank_many`] call.
#[derive(Debug, Clone, Copy)]
pub struct RerankQuery<'a> {
    /// The query.
    pub query: &'a str,
    /// Its documents.
    pub docs: &'a [RerankDoc<'a>],
    /// How much of the model it spends.
    pub budget: &'a Budget,
}

/// The blend a cascade prunes by: `weight · exit score + (1 − weight) · first-stage score`, the
/// exit scores min-max normalised over the documents still in the cascade and the first-stage
/// scores over all of the call's documents — the way the final order is blended.
#[derive(Debug, Clone, Copy)]
pub struct PruneBlend<'a> {
    /// Each document's first-stage score, in the order of the documents.
    pub first_stage: &'a [f32],
    /// The reranker's weight, in `[0, 1]`.
    pub weight: f32,
}

impl PruneBlend<'_> {
    /// Checks there is one first-stage score per document and a usable weight.
    pub fn check(&self, docs: usize) -> Result<(), RerankError> {
        if self.first_stage.len() != docs {
            return Err(RerankError::Invalid(format!(
                "{} first-stage scores for {docs} documents",
                self.first_stage.len()
            )));
        }
        if !(self.weight.is_finite() && (0.0..=1.0).contains(&self.weight)) {
            return Err(RerankError::Invalid(format!(
                "blend weight must be in [0, 1], got {}",
                self.weight
            )));
        }
        Ok(())
    }

    /// The blended score of each of `members` (indices into the documents), given their exit
    /// scores in the same order.
    pub fn scores(&self, members: &[usize], exit_scores: &[f32]) -> Vec<f32> {
        let first = min_max(self.first_stage);
        let exit = min_max(exit_scores);
        members
            .iter()
            .zip(exit)
            .map(|(&d, e)| self.weight * e + (1.0 - self.weight) * first[d])
            .collect()
    }
}

/// Min-max normalisation to `[0, 1]`; all-equal (or non-finite-range) inputs map to 1.
pub fn min_max(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    values
        .iter()
        .map(|&v| {
            if range > 0.0 && range.is_finite() {
                (v - lo) / range
            } else {
                1.0
            }
        })
        .collect()
}

/// The logistic function, used to turn logits into calibrated scores.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_print_back() {
        for (text, budget) in [
            (
                "all@2,5@6",
                Budget::Cascade(vec![
                    CascadeStep {
                        keep: usize::MAX,
                        layer: 2,
                        width: None,
                    },
                    CascadeStep {
                        keep: 5,
                        layer: 6,
                        width: None,
                    },
                ]),
            ),
            ("fast", Budget::Profile("fast".into())),
            ("default", Budget::Default),
            (
                "4:96",
                Budget::Exit {
                    layer: 4,
                    width: 96,
                },
            ),
            ("40ms", Budget::LatencyMs(40.0)),
            (
                "100@2,30@4:96,10@6",
                Budget::Cascade(vec![
                    CascadeStep {
                        keep: 100,
                        layer: 2,
                        width: None,
                    },
                    CascadeStep {
                        keep: 30,
                        layer: 4,
                        width: Some(96),
                    },
                    CascadeStep {
                        keep: 10,
                        layer: 6,
                        width: None,
                    },
                ]),
            ),
        ] {
            assert_eq!(Budget::parse(text).unwrap(), budget, "{text}");
            assert_eq!(budget.to_string(), text);
        }
    }

    #[test]
    fn bad_budgets_say_what_is_wrong() {
        for (text, expect) in [
            ("", "empty"),
            ("4:", "width"),
            ("0:96", "at least 1"),
            ("100@4,30@2", "layers must increase"),
            ("10@2,30@4", "KEEP must not grow"),
            ("0@2", "at least 1"),
            ("x@2", "KEEP"),
            ("-5ms", "must be positive"),
            ("fivems", "not a number"),
            ("fast mode", "not a profile"),
        ] {
            let err = Budget::parse(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
