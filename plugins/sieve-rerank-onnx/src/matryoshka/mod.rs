//! Segmented 2D-Matryoshka cross-encoders: real early exit over a chain of ONNX segments.
//!
//! A model directory with a [`MANIFEST_FILE`] (written by `models/recipe/export.py`) holds one
//! ONNX graph per *segment*. Segment 1 takes the token ids and returns the hidden states after
//! its last layer (`hidden_states_out`, `[batch, seq, H]`) and the logits of the heads at that
//! exit (`logits`, `[batch, widths]`, one column per head width in the manifest's order); segment
//! k > 1 takes `hidden_states` and `attention_mask` and returns the same (the last segment no
//! hidden states). Scoring at exit L runs the segments up to L in order, carrying each pair's
//! hidden states from one segment to the next: nothing is recomputed, and a cascade
//! ([`Budget::Cascade`]) runs the deeper segments only on the windows of the documents it keeps.
//!
//! Document scores come from window scores exactly as for single-graph models (windows, query
//! cap, [`crate::WindowAggregation`]); each head has its own calibration from the manifest.
//!
//! **Order of a cascade's output**: every document gets the score of the deepest exit it reached,
//! but scores of different exits are not comparable. Callers must order the survivors of the last
//! step by their score, then the documents pruned at the step before by theirs, and so on, then
//! the documents that were never scored in input (fused) order: [`cascade_order`] does exactly
//! that.

mod execute;
mod load;
mod manifest;
mod plan;

pub(crate) use load::manifest_in;
pub(crate) use manifest::profile_plans;
pub use manifest::*;
pub(crate) use plan::resolve_plan;
pub use plan::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use ort::session::Session;
use sieve_core::{Budget, PruneBlend, RerankDoc, RerankError, RerankOutput, RerankStats, sigmoid};

use crate::cost::{self, COST_FILE, CostTable};
use crate::encode::{EncodedDocs, Pair, PairEncoder};
use crate::io::{IdInput, IdInputs};
use crate::{Calibration, CrossEncoderConfig, run_err};

/// What a [`Matryoshka`] call runs with, from the [`CrossEncoder`](crate::CrossEncoder) that owns
/// it: the pair encoder, the settings and the device name (for stats and cost tables).
#[derive(Clone, Copy)]
pub(crate) struct Runner<'a> {
    pub encoder: &'a PairEncoder,
    pub config: &'a CrossEncoderConfig,
    pub device: &'a str,
}

/// What a segment's graph takes.
enum SegmentInput {
    Ids(IdInputs),
    Hidden { hidden: String, mask: IdInput },
}

/// A loaded segment.
pub(crate) struct Segment {
    pub number: u32,
    pub exit_layer: u32,
    pub widths: Vec<u32>,
    pub path: PathBuf,
    pub int8: bool,
    session: Mutex<Session>,
    input: SegmentInput,
    hidden_out: Option<String>,
    logits: String,
}

/// What one segment call is fed.
pub(crate) enum Feed<'a> {
    /// Token-id pairs (segment 1).
    Ids(&'a [&'a Pair]),
    /// Per row, the previous segment's hidden states (`len × H`, unpadded) and the length.
    Hidden(&'a [(&'a [f32], usize)]),
}

/// What one segment call gave.
pub(crate) struct SegmentOut {
    /// `[rows, widths]`.
    pub logits: Vec<f32>,
    /// `[rows, seq_len, H]`, when asked for and the segment has it.
    pub hidden: Option<Vec<f32>>,
    pub ms: f64,
}

/// A loaded segmented model.
pub(crate) struct Matryoshka {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub segments: Vec<Segment>,
    pub profiles: BTreeMap<String, Plan>,
    calibration: BTreeMap<(u32, u32), Calibration>,
    pub cost: RwLock<Result<Option<CostTable>, String>>,
    pub precision: String,
}

impl Matryoshka {
    /// The exits, from the manifest.
    pub fn exits(&self) -> Vec<ManifestExit> {
        self.manifest.exit_list()
    }

    /// Whether the first segment takes `token_type_ids`.
    pub fn uses_token_type_ids(&self) -> bool {
        self.segments.first().is_some_and(
            |s| matches!(&s.input, SegmentInput::Ids(io) if io.token_type_ids.is_some()),
        )
    }

    /// Width of the hidden states passed between segments.
    pub fn hidden_size(&self) -> usize {
        self.manifest.hidden_size
    }

    /// The calibration of a head.
    pub fn head_calibration(&self, layer: u32, width: u32) -> Option<Calibration> {
        self.calibration.get(&(layer, width)).copied()
    }

    fn calibrate(&self, layer: u32, width: u32, raw: f32) -> f32 {
        match self.calibration.get(&(layer, width)) {
            Some(c) => c.apply(raw),
            None => sigmoid(raw),
        }
    }

    /// Index of the segment that ends at `layer`.
    pub fn segment_of(&self, layer: u32) -> Option<usize> {
        self.segments.iter().position(|s| s.exit_layer == layer)
    }

    /// A budget other than [`Budget::LatencyMs`] as a concrete plan.
    pub fn resolve(&self, budget: &Budget) -> Result<Plan, RerankError> {
        let invalid = |m: String| RerankError::Invalid(m);
        match budget {
            Budget::Default => {
                let name = self.manifest.default_profile_name();
                self.profiles
                    .get(name)
                    .cloned()
                    .ok_or_else(|| invalid(format!("the default profile {name:?} is not defined")))
            }
            Budget::Profile(name) => self.profiles.get(name).cloned().ok_or_else(|| {
                let known: Vec<String> = self
                    .profiles
                    .iter()
                    .map(|(k, p)| format!("{k} ({p})"))
                    .collect();
                invalid(format!(
                    "unknown profile {name:?} (profiles of {}: {})",
                    self.manifest_path.display(),
                    known.join(", ")
                ))
            }),
            Budget::LatencyMs(_) => Err(invalid(
                "a latency budget is resolved per call, from the documents' lengths".into(),
            )),
            other => resolve_plan(&self.exits(), other)
                .map_err(|e| invalid(format!("budget '{other}': {e}"))),
        }
    }

    /// Checks a cost table against this model's segments.
    pub fn check_cost_table(&self, table: &CostTable) -> Result<(), String> {
        table.validate()?;
        let ours: Vec<(u32, u32)> = self
            .segments
            .iter()
            .map(|s| (s.number, s.exit_layer))
            .collect();
        let theirs: Vec<(u32, u32)> = table
            .segments
            .iter()
            .map(|s| (s.segment, s.exit_layer))
            .collect();
        if ours != theirs {
            return Err(format!(
                "the cost table's segments (segment, exit layer) {theirs:?} are not the model's \
                 {ours:?}"
            ));
        }
        Ok(())
    }

    /// Scores `docs` under `budget`.
    pub fn rerank(
        &self,
        runner: &Runner<'_>,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
        blend: Option<PruneBlend<'_>>,
    ) -> Result<RerankOutput, RerankError> {
        let &Runner {
            encoder,
            config,
            device,
        } = runner;
        let mut stats = RerankStats {
            device: device.to_string(),
            ..RerankStats::default()
        };
        let began = Instant::now();
        let query_tokens = encoder.query_tokens(query)?;
        let n = docs.len();
        let (plan, encoded) = match budget {
            Budget::LatencyMs(ms) => {
                let table = self.usable_cost_table(device)?;
                let encoded = encoder.encode_docs(&query_tokens, docs)?;
                let windows = window_lengths(&encoded);
                let spent = began.elapsed().as_secs_f64() * 1e3;
                let choice = cost::choose_plan(&table, self, config, *ms, spent, &windows)?;
                stats.budget_note = choice.note;
                (choice.plan, encoded)
            }
            other => {
                let plan = self.resolve(other)?;
                let first = plan
                    .steps
                    .first()
                    .and_then(|s| s.keep)
                    .unwrap_or(usize::MAX)
                    .min(n);
                (plan, encoder.encode_docs(&query_tokens, &docs[..first])?)
            }
        };
        stats.plan = plan.to_string();
        stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;
        let (scores, traces) = self.execute(runner, &encoded, n, &plan, blend, &mut stats)?;
        Ok(RerankOutput {
            scores,
            traces,
            stats,
        })
    }

    /// The loaded cost table, checked against the device and precision the model runs with.
    pub fn usable_cost_table(&self, device: &str) -> Result<CostTable, RerankError> {
        let guard = self
            .cost
            .read()
            .map_err(|_| run_err("cost table lock poisoned"))?;
        let dir = self
            .manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(COST_FILE);
        let table = match &*guard {
            Err(e) => {
                return Err(RerankError::Invalid(format!(
                    "latency budgets need a usable cost table, but {e}; run `sieve calibrate` \
                     to measure it again"
                )));
            }
            Ok(None) => {
                return Err(RerankError::Invalid(format!(
                    "latency budgets need the model's measured costs ({} does not exist): run \
                     `sieve calibrate` first",
                    dir.display()
                )));
            }
            Ok(Some(t)) => t.clone(),
        };
        if table.device != device || table.precision != self.precision {
            return Err(RerankError::Invalid(format!(
                "the cost table {} was measured on {} ({}) but the model runs on {device} ({}): \
                 run `sieve calibrate` on this device",
                dir.display(),
                table.device,
                table.precision,
                self.precision
            )));
        }
        Ok(table)
    }
}

/// Per document, the token lengths of its windows.
pub(crate) fn window_lengths(encoded: &EncodedDocs) -> Vec<Vec<usize>> {
    encoded
        .windows
        .iter()
        .map(|w| w.clone().map(|p| encoded.pairs[p].ids.len()).collect())
        .collect()
}

#[cfg(test)]
mod tests;
