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

mod manifest;
mod plan;

pub(crate) use manifest::profile_plans;
pub use manifest::*;
pub(crate) use plan::resolve_plan;
pub use plan::*;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType};
use sieve_core::{
    Budget, ExitScore, ExitTrace, PruneBlend, RerankDoc, RerankError, RerankOutput, RerankScore,
    RerankStats, SegmentTiming, sigmoid,
};

use crate::cost::{self, COST_FILE, CostTable};
use crate::encode::{EncodedDocs, Pair, PairEncoder};
use crate::io::{
    IdInput, IdInputs, float_output, id_batch_inputs, id_input, id_inputs, id_tensor, only_inputs,
    plan_batches,
};
use crate::{Calibration, CrossEncoderConfig, Device, Precision, load_err, run_err};

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

/// The directory's manifest, when `path` is a Matryoshka model directory or its manifest.
pub(crate) fn manifest_in(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let manifest = path.join(MANIFEST_FILE);
        return manifest.is_file().then_some(manifest);
    }
    (path.is_file() && path.file_name().is_some_and(|n| n == MANIFEST_FILE))
        .then(|| path.to_path_buf())
}

impl Matryoshka {
    /// Loads every segment once (int8 or fp32 per `precision`), checks the graphs' inputs and
    /// outputs and runs a probe pair through the chain.
    pub fn load(
        manifest: Manifest,
        manifest_path: &Path,
        model_dir: &Path,
        encoder: &PairEncoder,
        config: &CrossEncoderConfig,
    ) -> Result<Self, RerankError> {
        let bad_manifest =
            |message: String| load_err(format!("manifest {}: {message}", manifest_path.display()));
        let profiles = manifest.profiles().map_err(bad_manifest)?;
        let mut calibration = BTreeMap::new();
        if let Some(c) = &manifest.calibration {
            for s in &manifest.segments {
                for &w in &s.widths {
                    if let Some(head) = c.heads.get(&head_name(s.exit_layer, w)) {
                        calibration.insert((s.exit_layer, w), *head);
                    }
                }
            }
        }
        let n = manifest.segments.len();
        let mut segments = Vec::with_capacity(n);
        for (i, spec) in manifest.segments.iter().enumerate() {
            let (path, int8) = choose_file(spec, model_dir, config)?;
            let session = sieve_onnx::load_session(&path, &config.session)
                .map_err(|e| load_err(e.to_string()))?;
            let (input, hidden_out, logits) = inspect_segment(&session, &path, i == 0, i + 1 == n)?;
            segments.push(Segment {
                number: spec.segment,
                exit_layer: spec.exit_layer,
                widths: spec.widths.clone(),
                path,
                int8,
                session: Mutex::new(session),
                input,
                hidden_out,
                logits,
            });
        }
        let precision = if segments.iter().all(|s| s.int8) {
            "int8"
        } else if segments.iter().all(|s| !s.int8) {
            "fp32"
        } else {
            "mixed"
        }
        .to_string();
        let cost_path = model_dir.join(COST_FILE);
        let cost = if cost_path.is_file() {
            CostTable::load(&cost_path)
                .map(Some)
                .map_err(|e| e.to_string())
        } else {
            Ok(None)
        };
        let model = Self {
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            segments,
            profiles,
            calibration,
            cost: RwLock::new(Ok(None)),
            precision,
        };
        model.probe(encoder)?;
        let cost = cost.and_then(|table| match table {
            Some(t) => model
                .check_cost_table(&t)
                .map(|()| Some(t))
                .map_err(|e| format!("{}: {e}", cost_path.display())),
            None => Ok(None),
        });
        *model
            .cost
            .write()
            .map_err(|_| load_err("cost table lock poisoned"))? = cost;
        Ok(model)
    }

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

    /// Runs a probe pair through every segment, checking the outputs' shapes.
    fn probe(&self, encoder: &PairEncoder) -> Result<(), RerankError> {
        let failed = |e: String| {
            load_err(format!(
                "model {} failed a test run: {e}",
                self.manifest_path.display()
            ))
        };
        let pair = encoder.probe_pair().map_err(failed)?;
        let len = pair.ids.len().max(1);
        self.run_chain(&[&pair], len, encoder.pad_id, |_, _| ())
            .map_err(failed)
    }

    /// Runs one batch of pairs, padded to `seq_len`, through every segment, carrying the hidden
    /// states from one to the next, and calls `each` with every segment's index and output.
    /// Errors name the segment.
    pub fn run_chain(
        &self,
        pairs: &[&Pair],
        seq_len: usize,
        pad_id: u32,
        mut each: impl FnMut(usize, &SegmentOut),
    ) -> Result<(), String> {
        let h = self.hidden_size();
        let mut hidden: Vec<f32> = Vec::new();
        for (s, segment) in self.segments.iter().enumerate() {
            let rows: Vec<(&[f32], usize)> = pairs
                .iter()
                .enumerate()
                .map(|(r, p)| {
                    let start = r * seq_len * h;
                    let states = hidden.get(start..start + p.ids.len() * h).unwrap_or(&[]);
                    (states, p.ids.len())
                })
                .collect();
            let feed = if s == 0 {
                Feed::Ids(pairs)
            } else {
                Feed::Hidden(&rows)
            };
            let want_hidden = s + 1 < self.segments.len();
            let out = self
                .run_segment(segment, feed, seq_len, pad_id, want_hidden)
                .map_err(|e| {
                    format!(
                        "segment {} ({}): {e}",
                        segment.number,
                        segment.path.display()
                    )
                })?;
            each(s, &out);
            hidden = out.hidden.unwrap_or_default();
        }
        Ok(())
    }

    /// Runs one segment on one batch padded to `seq_len`. Checks the output shapes.
    pub fn run_segment(
        &self,
        segment: &Segment,
        feed: Feed<'_>,
        seq_len: usize,
        pad_id: u32,
        want_hidden: bool,
    ) -> Result<SegmentOut, String> {
        let h = self.hidden_size();
        let rows = match &feed {
            Feed::Ids(pairs) => pairs.len(),
            Feed::Hidden(states) => states.len(),
        };
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'static>)> = match (&segment.input, feed) {
            (SegmentInput::Ids(io), Feed::Ids(pairs)) => {
                id_batch_inputs(io, pairs, seq_len, pad_id)?
            }
            (SegmentInput::Hidden { hidden, mask }, Feed::Hidden(rows)) => {
                let n = rows.len();
                let mut states = vec![0f32; n * seq_len * h];
                let mut mask_data = vec![0i64; n * seq_len];
                for (r, &(values, len)) in rows.iter().enumerate() {
                    if values.len() != len * h || len > seq_len {
                        return Err(format!(
                            "internal: hidden states of {} values for {len} tokens",
                            values.len()
                        ));
                    }
                    states[r * seq_len * h..r * seq_len * h + len * h].copy_from_slice(values);
                    mask_data[r * seq_len..r * seq_len + len].fill(1);
                }
                let tensor =
                    Tensor::from_array(([n, seq_len, h], states)).map_err(|e| e.to_string())?;
                vec![
                    (Cow::from(hidden.as_str()), tensor.into()),
                    (
                        Cow::from(mask.name.as_str()),
                        id_tensor(mask, [n, seq_len], mask_data)?,
                    ),
                ]
            }
            _ => return Err("internal: segment fed the wrong kind of input".into()),
        };
        let mut session = segment
            .session
            .lock()
            .map_err(|_| "the segment's session was poisoned by an earlier panic".to_string())?;
        let began = Instant::now();
        let outputs = session.run(inputs).map_err(|e| e.to_string())?;
        let ms = began.elapsed().as_secs_f64() * 1e3;
        let widths = segment.widths.len();
        let (shape, data) = float_output(&outputs, &segment.logits)?;
        if shape != [rows as i64, widths as i64] {
            return Err(format!(
                "output `{}` has shape {shape:?}; expected [{rows}, {widths}] (one column per \
                 width {:?})",
                segment.logits, segment.widths
            ));
        }
        let logits = data.to_vec();
        let hidden = match (&segment.hidden_out, want_hidden) {
            (Some(name), true) => {
                let (shape, data) = float_output(&outputs, name)?;
                if shape != [rows as i64, seq_len as i64, h as i64] {
                    return Err(format!(
                        "output `{name}` has shape {shape:?}; expected [{rows}, {seq_len}, {h}] \
                         (hidden_size {h} in the manifest)"
                    ));
                }
                Some(data.to_vec())
            }
            _ => None,
        };
        Ok(SegmentOut { logits, hidden, ms })
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

    /// Runs `plan` over the documents whose windows are in `encoded` (the first documents of the
    /// call, `n` in all), returning one score and one trace per document.
    fn execute(
        &self,
        &Runner {
            encoder, config, ..
        }: &Runner<'_>,
        encoded: &EncodedDocs,
        n: usize,
        plan: &Plan,
        blend: Option<PruneBlend<'_>>,
        stats: &mut RerankStats,
    ) -> Result<(Vec<RerankScore>, Vec<ExitTrace>), RerankError> {
        let unscored = RerankScore {
            raw: 0.0,
            calibrated: 0.0,
            windows: 0,
            best_window: 0,
        };
        let mut scores = vec![unscored; n];
        let mut traces = vec![
            ExitTrace {
                exits: Vec::new(),
                pruned_at: Some(0),
            };
            n
        ];
        let steps: Vec<(PlanStep, usize)> = plan
            .steps
            .iter()
            .map(|s| {
                self.segment_of(s.layer)
                    .map(|seg| (*s, seg))
                    .ok_or_else(|| {
                        RerankError::Invalid(format!("plan {plan}: no exit at layer {}", s.layer))
                    })
            })
            .collect::<Result<_, _>>()?;
        let Some(&(_, last_segment)) = steps.last() else {
            return Ok((scores, traces));
        };
        let first = steps[0].0.keep.unwrap_or(usize::MAX).min(n);
        if first > encoded.windows.len() {
            return Err(run_err(
                "internal: fewer encoded documents than the plan scores",
            ));
        }
        let pairs = &encoded.pairs;
        let mut hidden: Vec<Option<Vec<f32>>> = vec![None; pairs.len()];
        let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); pairs.len()];
        let mut active: Vec<usize> = (0..first).collect();
        let mut step_score = vec![0f32; n];
        let mut done = 0; // segments run so far
        let mut previous_layer = 0;
        stats.pairs = active.iter().map(|&d| encoded.windows[d].len()).sum();
        for (i, &(step, target)) in steps.iter().enumerate() {
            if i > 0 {
                let keep = step.keep.unwrap_or(usize::MAX).min(active.len());
                // Survivors: the best on the exit score, or on its blend with the first stage.
                let mut prune_score = step_score.clone();
                if let Some(blend) = &blend {
                    let exit: Vec<f32> = active.iter().map(|&d| step_score[d]).collect();
                    for (&d, s) in active.iter().zip(blend.scores(&active, &exit)) {
                        prune_score[d] = s;
                    }
                }
                let mut ranked = active.clone();
                ranked.sort_by(|&a, &b| prune_score[b].total_cmp(&prune_score[a]).then(a.cmp(&b)));
                for &d in &ranked[keep..] {
                    traces[d].pruned_at = Some(previous_layer);
                    for p in encoded.windows[d].clone() {
                        hidden[p] = None;
                    }
                }
                ranked.truncate(keep);
                ranked.sort_unstable();
                active = ranked;
            }
            if active.is_empty() {
                break;
            }
            let active_pairs: Vec<usize> = active
                .iter()
                .flat_map(|&d| encoded.windows[d].clone())
                .collect();
            for s in done..=target {
                let keep_hidden = s < last_segment;
                self.run_segment_over(
                    s,
                    &active_pairs,
                    pairs,
                    &mut hidden,
                    &mut logits,
                    keep_hidden,
                    encoder.pad_id,
                    config,
                    stats,
                )?;
                let segment = &self.segments[s];
                for &d in &active {
                    for (j, &width) in segment.widths.iter().enumerate() {
                        let raw: Vec<f32> = encoded.windows[d]
                            .clone()
                            .map(|p| logits[p][s][j])
                            .collect();
                        traces[d].exits.push(ExitScore {
                            layer: segment.exit_layer,
                            width,
                            raw: config.aggregation.combine(&raw).0,
                        });
                    }
                }
            }
            done = target + 1;
            let column = self.segments[target]
                .widths
                .iter()
                .position(|&w| w == step.width)
                .ok_or_else(|| {
                    RerankError::Invalid(format!(
                        "plan {plan}: exit {} has no width {}",
                        step.layer, step.width
                    ))
                })?;
            for &d in &active {
                let raw: Vec<f32> = encoded.windows[d]
                    .clone()
                    .map(|p| logits[p][target][column])
                    .collect();
                let (score, best_window) = config.aggregation.combine(&raw);
                step_score[d] = score;
                scores[d] = RerankScore {
                    raw: score,
                    calibrated: self.calibrate(step.layer, step.width, score),
                    windows: raw.len(),
                    best_window,
                };
                traces[d].pruned_at = None;
            }
            previous_layer = step.layer;
        }
        Ok((scores, traces))
    }

    /// Runs segment `s` over the pairs `members` in length-sorted, token-budgeted batches,
    /// storing each pair's logits and (when `keep_hidden`) its hidden states for the next segment.
    #[allow(clippy::too_many_arguments)]
    fn run_segment_over(
        &self,
        s: usize,
        members: &[usize],
        pairs: &[Pair],
        hidden: &mut [Option<Vec<f32>>],
        logits: &mut [Vec<Vec<f32>>],
        keep_hidden: bool,
        pad_id: u32,
        config: &CrossEncoderConfig,
        stats: &mut RerankStats,
    ) -> Result<(), RerankError> {
        let segment = &self.segments[s];
        let h = self.hidden_size();
        let widths = segment.widths.len();
        let lengths: Vec<usize> = members.iter().map(|&p| pairs[p].ids.len()).collect();
        let mut ms = 0.0;
        let failed = |e: String| {
            run_err(format!(
                "segment {} ({}): {e}",
                segment.number,
                segment.path.display()
            ))
        };
        for batch in plan_batches(&lengths, config.batch_tokens, config.max_batch) {
            let rows: Vec<usize> = batch.members.iter().map(|&k| members[k]).collect();
            let out = if s == 0 {
                let batch_pairs: Vec<&Pair> = rows.iter().map(|&p| &pairs[p]).collect();
                self.run_segment(
                    segment,
                    Feed::Ids(&batch_pairs),
                    batch.seq_len,
                    pad_id,
                    keep_hidden,
                )
            } else {
                let mut feed = Vec::with_capacity(rows.len());
                for &p in &rows {
                    let states = hidden[p].as_deref().ok_or_else(|| {
                        run_err(format!(
                            "internal: no hidden states for segment {}",
                            segment.number
                        ))
                    })?;
                    feed.push((states, pairs[p].ids.len()));
                }
                self.run_segment(
                    segment,
                    Feed::Hidden(&feed),
                    batch.seq_len,
                    pad_id,
                    keep_hidden,
                )
            }
            .map_err(failed)?;
            ms += out.ms;
            for (r, &p) in rows.iter().enumerate() {
                let row = &out.logits[r * widths..(r + 1) * widths];
                if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
                    return Err(failed(format!(
                        "non-finite score ({bad}) for document {}",
                        pairs[p].doc
                    )));
                }
                if logits[p].len() <= s {
                    logits[p].resize(s + 1, Vec::new());
                }
                logits[p][s] = row.to_vec();
                hidden[p] = match &out.hidden {
                    Some(states) if keep_hidden => {
                        let start = r * batch.seq_len * h;
                        Some(states[start..start + pairs[p].ids.len() * h].to_vec())
                    }
                    _ => None,
                };
            }
            stats.batches += 1;
            stats.padded_tokens += rows.len() * batch.seq_len;
        }
        stats.model_ms += ms;
        stats.segments.push(SegmentTiming {
            segment: segment.number,
            exit_layer: segment.exit_layer,
            pairs: members.len(),
            ms,
        });
        Ok(())
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

/// The file of a segment for the configured precision, falling back to the other precision when
/// the preferred file is missing.
fn choose_file(
    spec: &ManifestSegment,
    model_dir: &Path,
    config: &CrossEncoderConfig,
) -> Result<(PathBuf, bool), RerankError> {
    let prefer_int8 = match config.precision {
        Precision::Auto => config.session.device == Device::Cpu,
        Precision::Int8 => true,
        Precision::Fp32 => false,
    };
    let fp32 = Some((model_dir.join(&spec.file), false));
    let int8 = spec.file_int8.as_ref().map(|f| (model_dir.join(f), true));
    let order = if prefer_int8 {
        [int8, fp32]
    } else {
        [fp32, int8]
    };
    for (path, is_int8) in order.iter().flatten() {
        if path.is_file() {
            return Ok((path.clone(), *is_int8));
        }
    }
    let named: Vec<String> = order
        .iter()
        .flatten()
        .map(|(p, _)| p.display().to_string())
        .collect();
    Err(load_err(format!(
        "segment {}: no model file: {} does not exist",
        spec.segment,
        named.join(" nor ")
    )))
}

/// Checks a segment's graph: inputs (ids for the first, hidden states + mask for the others) and
/// outputs (`logits`, and `hidden_states_out` except on the last).
fn inspect_segment(
    session: &Session,
    path: &Path,
    first: bool,
    last: bool,
) -> Result<(SegmentInput, Option<String>, String), RerankError> {
    let unsupported = |message: String| {
        load_err(format!(
            "segment {} cannot be used: {message}",
            path.display()
        ))
    };
    let inputs = session.inputs();
    let input = if first {
        SegmentInput::Ids(id_inputs(inputs, &unsupported)?)
    } else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
        let hidden = inputs
            .iter()
            .find(|i| i.name() == "hidden_states")
            .ok_or_else(|| unsupported(format!("no `hidden_states` input (inputs: {names:?})")))?;
        if hidden.dtype().tensor_type() != Some(TensorElementType::Float32)
            || hidden.dtype().tensor_shape().is_some_and(|s| s.len() != 3)
        {
            return Err(unsupported(format!(
                "input `hidden_states` is {}; expected float32 [batch, seq, hidden]",
                hidden.dtype()
            )));
        }
        let mask = id_input(inputs, "attention_mask", &unsupported)?
            .ok_or_else(|| unsupported(format!("no `attention_mask` input (inputs: {names:?})")))?;
        only_inputs(inputs, &["hidden_states", "attention_mask"], &unsupported)?;
        SegmentInput::Hidden {
            hidden: "hidden_states".into(),
            mask,
        }
    };
    let outputs = session.outputs();
    let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
    let float_output = |name: &str, rank: usize| -> Result<Option<String>, RerankError> {
        let Some(o) = outputs.iter().find(|o| o.name() == name) else {
            return Ok(None);
        };
        if o.dtype().tensor_type() != Some(TensorElementType::Float32)
            || o.dtype().tensor_shape().is_some_and(|s| s.len() != rank)
        {
            return Err(unsupported(format!(
                "output `{name}` is {}; expected a float32 tensor of rank {rank}",
                o.dtype()
            )));
        }
        Ok(Some(name.to_string()))
    };
    let logits = float_output("logits", 2)?
        .ok_or_else(|| unsupported(format!("no `logits` output (outputs: {names:?})")))?;
    let hidden_out = float_output("hidden_states_out", 3)?;
    if hidden_out.is_none() && !last {
        return Err(unsupported(format!(
            "no `hidden_states_out` output (outputs: {names:?}); every segment but the last \
             must pass its hidden states on"
        )));
    }
    Ok((input, hidden_out, logits))
}

#[cfg(test)]
mod tests;
