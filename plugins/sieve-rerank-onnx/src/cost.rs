//! The measured cost of a segmented model's segments, and latency budgets.
//!
//! A [`CostTable`] (stored as [`COST_FILE`] beside the model, written by `sieve calibrate` through
//! [`crate::CrossEncoder::measure_costs`]) gives, for the machine, thread count, device and
//! precision it was measured with, the milliseconds one (query, window) pair costs in each
//! segment, for pairs padded to each of a few token-length buckets. [`CostTable::predict_ms`]
//! predicts the model time of a [`Plan`] from the documents' window lengths, and a
//! [`sieve_core::Budget::LatencyMs`] budget runs the deepest plan predicted to fit.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sieve_core::{RerankDoc, RerankError};
use tokenizers::Encoding;

use crate::encode::{Pair, PairEncoder, doc_text, encode_pair, tokens_of};
use crate::io::plan_batches;
use crate::matryoshka::{Matryoshka, Plan, PlanStep};
use crate::{CrossEncoderConfig, read_json};

/// The cost table's file name in a model directory.
pub const COST_FILE: &str = "cost.json";

/// The format this crate writes and reads (`format` field of [`COST_FILE`]).
pub const COST_FORMAT: &str = "sieve-matryoshka-cost/1";

/// Measured per-pair costs of a segmented model's segments on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostTable {
    /// Must be [`COST_FORMAT`].
    pub format: String,
    /// The model it was measured for (its manifest's name, or its directory).
    pub model: String,
    /// The machine (CPU model name and core count, or the architecture).
    pub machine: String,
    /// Intra-op threads of the sessions.
    pub threads: usize,
    /// Where the model ran (`cpu`, `cuda:0`); latency budgets refuse a table of another device.
    pub device: String,
    /// `int8`, `fp32` or `mixed`; latency budgets refuse a table of another precision.
    pub precision: String,
    /// The batch token budget the measurement used ([`CostTable::predict_ms`] batches with it).
    pub batch_tokens: usize,
    /// The most rows per batch the measurement used (default 64).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Upper ends of the token-length buckets, increasing; a pair costs what its bucket costs.
    pub buckets: Vec<usize>,
    /// Per segment, in order.
    pub segments: Vec<SegmentCost>,
}

/// One segment's row of a [`CostTable`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentCost {
    /// Segment number (1-based).
    pub segment: u32,
    /// The exit layer the segment ends at.
    pub exit_layer: u32,
    /// Milliseconds per pair, one per bucket.
    pub ms_per_pair: Vec<f64>,
}

fn default_max_batch() -> usize {
    64
}

/// How [`crate::CrossEncoder::measure_costs`] measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostOptions {
    /// Token-length buckets to measure, increasing, each at most the model's `max_length`;
    /// empty (default) = multiples of 64 below `max_length`, then `max_length`.
    pub buckets: Vec<usize>,
    /// Untimed runs per bucket before measuring (default 2).
    pub warmup: usize,
    /// Timed runs per bucket; the median is kept (default 5).
    pub repetitions: usize,
}

impl Default for CostOptions {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            warmup: 2,
            repetitions: 5,
        }
    }
}

impl CostTable {
    /// Reads and checks a cost table; errors name the file.
    pub fn load(path: &Path) -> Result<Self, RerankError> {
        read_json(path, "cost table", Self::validate)
    }

    /// Writes the table as pretty JSON (through a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), RerankError> {
        let err = |message: String| {
            RerankError::Run(format!("writing cost table {}: {message}", path.display()))
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Checks the table's consistency (format, buckets, one finite non-negative cost per bucket).
    pub fn validate(&self) -> Result<(), String> {
        if self.format != COST_FORMAT {
            return Err(format!(
                "format is {:?}, expected {COST_FORMAT:?}",
                self.format
            ));
        }
        if self.buckets.is_empty()
            || self.buckets[0] == 0
            || self.buckets.windows(2).any(|w| w[1] <= w[0])
        {
            return Err(format!(
                "buckets must be positive and increasing, got {:?}",
                self.buckets
            ));
        }
        if self.segments.is_empty() {
            return Err("no segments".into());
        }
        for s in &self.segments {
            if s.ms_per_pair.len() != self.buckets.len() {
                return Err(format!(
                    "segment {}: {} costs for {} buckets",
                    s.segment,
                    s.ms_per_pair.len(),
                    self.buckets.len()
                ));
            }
            if s.ms_per_pair.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
                return Err(format!(
                    "segment {}: costs must be finite and non-negative",
                    s.segment
                ));
            }
        }
        Ok(())
    }

    /// Milliseconds one pair of `len` tokens costs in the segment at `index` (0-based): the cost
    /// of the smallest bucket that holds it; beyond the largest, that bucket's cost scaled by
    /// length.
    pub fn pair_ms(&self, index: usize, len: usize) -> f64 {
        let Some(segment) = self.segments.get(index) else {
            return 0.0;
        };
        match self.buckets.iter().position(|&b| b >= len) {
            Some(b) => segment.ms_per_pair[b],
            None => {
                let last = self.buckets.len() - 1;
                segment.ms_per_pair[last] * len as f64 / self.buckets[last] as f64
            }
        }
    }

    /// Predicted model milliseconds of `plan` over documents whose windows have the given token
    /// lengths (`windows[d]`, documents in input order), batched as the measurement was
    /// ([`batch_tokens`](Self::batch_tokens), [`max_batch`](Self::max_batch)).
    pub fn predict_ms(&self, plan: &Plan, windows: &[Vec<usize>]) -> Result<f64, RerankError> {
        self.predict_batched(plan, windows, self.batch_tokens, self.max_batch)
    }

    /// [`predict_ms`](Self::predict_ms) for the given batching. Each segment's pairs are packed
    /// into batches exactly as a rerank call packs them (length-sorted, token-budgeted), and a
    /// batch costs its rows times the per-pair cost of its padded length. The first step scores
    /// the first documents; for later steps, which documents survive is not known in advance, so
    /// the longest ones are assumed (the prediction errs on the slow side).
    pub fn predict_batched(
        &self,
        plan: &Plan,
        windows: &[Vec<usize>],
        batch_tokens: usize,
        max_batch: usize,
    ) -> Result<f64, RerankError> {
        let mut pool: Vec<usize> = Vec::new();
        let mut done = 0;
        let mut total = 0.0;
        for (i, step) in plan.steps.iter().enumerate() {
            let target = self
                .segments
                .iter()
                .position(|s| s.exit_layer == step.layer)
                .ok_or_else(|| {
                    RerankError::Invalid(format!(
                        "plan {plan}: the cost table has no segment ending at layer {}",
                        step.layer
                    ))
                })?;
            if target < done {
                return Err(RerankError::Invalid(format!(
                    "plan {plan}: layers must increase"
                )));
            }
            let keep = step.keep.unwrap_or(usize::MAX);
            if i == 0 {
                pool = (0..windows.len().min(keep)).collect();
            } else {
                let tokens = |d: usize| windows[d].iter().sum::<usize>();
                pool.sort_by_key(|&d| std::cmp::Reverse(tokens(d)));
                pool.truncate(keep);
            }
            let lengths: Vec<usize> = pool.iter().flat_map(|&d| windows[d].clone()).collect();
            let batches = plan_batches(&lengths, batch_tokens, max_batch);
            for s in done..=target {
                total += batches
                    .iter()
                    .map(|b| b.members.len() as f64 * self.pair_ms(s, b.seq_len))
                    .sum::<f64>();
            }
            done = target + 1;
        }
        Ok(total)
    }
}

/// The plan a latency budget runs, its prediction, and the note when even the cheapest plan does
/// not fit.
pub(crate) struct LatencyChoice {
    pub plan: Plan,
    pub note: Option<String>,
}

/// The deepest plan predicted to fit in `budget_ms − spent_ms`, among the model's profiles, every
/// single exit, and two-step cascades (every document at a shallower exit, as many as fit at a
/// deeper one). Preference: deeper last exit, then more documents at the last exit, then a wider
/// last head, then fewer steps, then a smaller prediction. When not even the cheapest single exit fits, the first
/// documents that fit are scored at the shallowest exit, and the note says so.
pub(crate) fn choose_plan(
    table: &CostTable,
    model: &Matryoshka,
    config: &CrossEncoderConfig,
    budget_ms: f64,
    spent_ms: f64,
    windows: &[Vec<usize>],
) -> Result<LatencyChoice, RerankError> {
    let available = budget_ms - spent_ms;
    let n = windows.len();
    let exits = model.exits();
    let widest = |widths: &[u32]| widths.iter().copied().max().unwrap_or(0);
    let predict =
        |plan: &Plan| table.predict_batched(plan, windows, config.batch_tokens, config.max_batch);

    let mut candidates: Vec<Plan> = model.profiles.values().cloned().collect();
    for e in &exits {
        for &w in &e.widths {
            candidates.push(Plan::exit(e.layer, w));
        }
    }
    for (i, a) in exits.iter().enumerate() {
        for b in &exits[i + 1..] {
            let cascade = |k: usize| Plan {
                steps: vec![
                    PlanStep {
                        keep: Some(n),
                        layer: a.layer,
                        width: widest(&a.widths),
                    },
                    PlanStep {
                        keep: Some(k),
                        layer: b.layer,
                        width: widest(&b.widths),
                    },
                ],
            };
            if let Some(k) = largest_fitting(n.saturating_sub(1), |k| {
                Ok(predict(&cascade(k))? <= available)
            })? && k > 0
            {
                candidates.push(cascade(k));
            }
        }
    }

    let mut best: Option<(Plan, f64)> = None;
    for plan in candidates {
        let predicted = predict(&plan)?;
        if predicted > available {
            continue;
        }
        let better = match &best {
            None => true,
            Some((current, current_ms)) => {
                let key = |p: &Plan| {
                    let last = p.last().copied().unwrap_or(PlanStep {
                        keep: None,
                        layer: 0,
                        width: 0,
                    });
                    (last.layer, p.reaching_last(n), last.width)
                };
                key(&plan)
                    .cmp(&key(current))
                    .then(current.steps.len().cmp(&plan.steps.len()))
                    .then(current_ms.total_cmp(&predicted))
                    .is_gt()
            }
        };
        if better {
            best = Some((plan, predicted));
        }
    }
    if let Some((plan, _)) = best {
        return Ok(LatencyChoice { plan, note: None });
    }

    let shallowest = exits
        .first()
        .ok_or_else(|| RerankError::Invalid("the model has no exits".into()))?;
    let (layer, width) = (shallowest.layer, widest(&shallowest.widths));
    let partial = |m: usize| Plan {
        steps: vec![PlanStep {
            keep: Some(m),
            layer,
            width,
        }],
    };
    let all_ms = predict(&Plan::exit(layer, width))?;
    let m = largest_fitting(n, |m| Ok(predict(&partial(m))? <= available))?.unwrap_or(0);
    let plan = partial(m);
    let note = format!(
        "latency budget {budget_ms} ms ({available:.1} ms left after tokenizing) is too small: \
         scoring all {n} documents at the cheapest exit {layer}:{width} is predicted to take \
         {all_ms:.1} ms; scored the first {m} ({:.1} ms predicted), the other {} keep their fused \
         order",
        predict(&plan)?,
        n - m
    );
    Ok(LatencyChoice {
        plan,
        note: Some(note),
    })
}

/// The largest `k` in `0..=max` for which the monotone predicate `fits` holds (`None` if even 0
/// does not).
fn largest_fitting(
    max: usize,
    fits: impl Fn(usize) -> Result<bool, RerankError>,
) -> Result<Option<usize>, RerankError> {
    if !fits(0)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0, max); // fits(lo) holds
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(Some(lo))
}

/// The default buckets: multiples of 64 below `max_length`, then `max_length`.
fn default_buckets(max_length: usize) -> Vec<usize> {
    let mut buckets: Vec<usize> = (1..)
        .map(|i| i * 64)
        .take_while(|&b| b < max_length)
        .collect();
    buckets.push(max_length);
    buckets
}

/// CPU model name and core count, or the architecture.
fn machine() -> String {
    let cores = sieve_onnx::available_cores();
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .map_or_else(
            || format!("{} ({cores} cores)", std::env::consts::ARCH),
            |name| format!("{name} ({cores} cores)"),
        )
}

/// Measures a [`CostTable`]: for each bucket, a full batch of pairs of exactly that length (the
/// query cut and the documents' tokens cycled to fit) is run through the whole chain, `warmup`
/// times untimed, then `repetitions` times; each segment's median time over the rows is its cost
/// per pair.
pub(crate) fn measure(
    model: &Matryoshka,
    encoder: &PairEncoder,
    config: &CrossEncoderConfig,
    device: &str,
    query: &str,
    docs: &[RerankDoc<'_>],
    options: &CostOptions,
) -> Result<CostTable, RerankError> {
    let invalid = |m: String| RerankError::Invalid(m);
    let specials = encoder.pair_special_tokens;
    let buckets = if options.buckets.is_empty() {
        default_buckets(encoder.max_length)
    } else {
        options.buckets.clone()
    };
    if buckets.is_empty()
        || buckets.windows(2).any(|w| w[1] <= w[0])
        || buckets[0] < specials + 2
        || buckets.last().is_some_and(|&b| b > encoder.max_length)
    {
        return Err(invalid(format!(
            "cost buckets {buckets:?} must increase, from at least {} tokens to at most the \
             model's max_length {}",
            specials + 2,
            encoder.max_length
        )));
    }
    if options.repetitions == 0 {
        return Err(invalid(
            "cost measurement needs at least one repetition".into(),
        ));
    }
    let query_tokens = encoder.query_tokens(query)?;
    let text: Vec<String> = docs.iter().map(|d| doc_text(d).into_owned()).collect();
    let encoding = encoder
        .tokenizer
        .encode(text.join(" "), false)
        .map_err(|e| RerankError::Run(format!("tokenizing the sample documents failed: {e}")))?;
    if encoding.is_empty() {
        return Err(invalid(
            "cost measurement needs sample documents with some text".into(),
        ));
    }
    let max_bucket = buckets.last().copied().unwrap_or(0);
    let sample = tokens_of(&encoding, 0..encoding.len());
    let stream_len = 2 * max_bucket + sample.len();
    let stream =
        Encoding::from_tokens(sample.iter().cycle().take(stream_len).cloned().collect(), 1);

    let mut segments: Vec<Vec<f64>> = vec![Vec::with_capacity(buckets.len()); model.segments.len()];
    for &bucket in &buckets {
        let q = query_tokens.len().min((bucket - specials) / 2).max(1);
        let d = bucket - specials - q;
        let rows = (config.batch_tokens / bucket).clamp(1, config.max_batch.max(1));
        let mut pairs = Vec::with_capacity(rows);
        for r in 0..rows {
            let start = (r * 131) % (stream_len - d + 1);
            let (ids, type_ids) = encode_pair(
                &encoder.tokenizer,
                &query_tokens[..q],
                &stream,
                start..start + d,
            )?;
            pairs.push(Pair {
                doc: r,
                ids,
                type_ids,
            });
        }
        let seq_len = pairs.iter().map(|p| p.ids.len()).max().unwrap_or(1).max(1);
        let batch: Vec<&Pair> = pairs.iter().collect();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); model.segments.len()];
        for rep in 0..options.warmup + options.repetitions {
            model
                .run_chain(&batch, seq_len, encoder.pad_id, |s, out| {
                    if rep >= options.warmup {
                        times[s].push(out.ms);
                    }
                })
                .map_err(RerankError::Run)?;
        }
        for (s, mut t) in times.into_iter().enumerate() {
            t.sort_by(f64::total_cmp);
            // Nanosecond resolution is plenty and keeps the file readable.
            segments[s].push((t[t.len() / 2] / rows as f64 * 1e6).round() / 1e6);
        }
    }
    let table = CostTable {
        format: COST_FORMAT.into(),
        model: model.manifest.name.clone().unwrap_or_else(|| {
            model
                .manifest_path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        }),
        machine: machine(),
        threads: config.session.intra_threads,
        device: device.to_string(),
        precision: model.precision.clone(),
        batch_tokens: config.batch_tokens,
        max_batch: config.max_batch,
        buckets,
        segments: model
            .segments
            .iter()
            .zip(segments)
            .map(|(s, ms_per_pair)| SegmentCost {
                segment: s.number,
                exit_layer: s.exit_layer,
                ms_per_pair,
            })
            .collect(),
    };
    table
        .validate()
        .map_err(|e| RerankError::Run(format!("measured cost table is inconsistent: {e}")))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_end_at_max_length() {
        assert_eq!(default_buckets(256), vec![64, 128, 192, 256]);
        assert_eq!(default_buckets(128), vec![64, 128]);
        assert_eq!(default_buckets(100), vec![64, 100]);
        assert_eq!(default_buckets(50), vec![50]);
    }

    #[test]
    fn largest_fitting_searches_a_monotone_predicate() {
        let f = |limit: usize| move |k: usize| Ok::<_, RerankError>(k <= limit);
        assert_eq!(largest_fitting(10, f(4)).ok().flatten(), Some(4));
        assert_eq!(largest_fitting(10, f(10)).ok().flatten(), Some(10));
        assert_eq!(largest_fitting(10, f(20)).ok().flatten(), Some(10));
        assert_eq!(largest_fitting(0, f(0)).ok().flatten(), Some(0));
        let never = |_: usize| Ok::<_, RerankError>(false);
        assert_eq!(largest_fitting(10, never).ok().flatten(), None);
    }
}
