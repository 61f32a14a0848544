//! Running a segmented model: segment calls on padded batches, the chain of segments carrying
//! hidden states, and a plan's steps (exits, cascades) over a call's windows.

use std::borrow::Cow;
use std::time::Instant;

use ort::session::SessionInputValue;
use ort::value::Tensor;
use sieve_core::{
    ExitScore, ExitTrace, PruneBlend, RerankError, RerankScore, RerankStats, SegmentTiming,
};

use super::{Feed, Matryoshka, Plan, PlanStep, Runner, Segment, SegmentInput, SegmentOut};
use crate::encode::{EncodedDocs, Pair};
use crate::io::{float_output, id_batch_inputs, id_tensor, plan_batches};
use crate::{CrossEncoderConfig, run_err};

impl Matryoshka {
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

    /// Runs `plan` over the documents whose windows are in `encoded` (the first documents of the
    /// call, `n` in all), returning one score and one trace per document.
    pub(super) fn execute(
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
