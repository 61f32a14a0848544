//! Running budget plans over the joint blocks, for one query or many at once.
//!
//! Every query (a [`Job`]) walks its own plan: score the towers' exit, then for each step prune to
//! its `keep` (on the exit score or its blend with the first stage) and run the blocks up to the
//! step's exit. Many jobs walk in lockstep: whenever some jobs need block `b`, the pairs of all of
//! them go through that block together, in token-budgeted batches of similar document length,
//! queries padded to the batch's longest and masked. A block treats every query token on its own
//! (it attends only to the document's states) and pools under the query mask, so a job's scores
//! do not depend on its companions: running many jobs together gives what running each alone
//! gives, in fewer, fuller model calls.

use std::time::Instant;

use sieve_core::{
    DocStates, ExitScore, ExitTrace, PruneBlend, RerankError, RerankScore, RerankStats,
    SegmentTiming,
};
use sieve_embed::TokenStates;

use super::LateJoined;
use super::blocks::BlockRow;
use crate::io::plan_batches;
use crate::matryoshka::Plan;
use crate::run_err;

/// One query's share of a run.
pub(super) struct Job<'a> {
    /// The query tower's output.
    pub query: TokenStates,
    /// The states of the documents entering the plan (the first `states.len()` of `n`).
    pub states: Vec<&'a DocStates>,
    /// All documents of the request (those past `states.len()` are never scored).
    pub n: usize,
    pub plan: Plan,
    pub blend: Option<PruneBlend<'a>>,
    pub stats: RerankStats,
}

/// A job's progress through its plan.
struct Progress {
    scores: Vec<RerankScore>,
    traces: Vec<ExitTrace>,
    /// Exit index (0 = towers) → per entering document, one score per width of that exit.
    exit_scores: Vec<Vec<Option<Vec<f32>>>>,
    /// Per entering document, the query states after the last block run (None = the tower's).
    x: Vec<Option<Vec<f32>>>,
    active: Vec<usize>,
    step_score: Vec<f32>,
    /// Blocks run so far.
    done: usize,
    /// The next plan step, and whether its pruning has happened.
    step: usize,
    pruned: bool,
    previous_layer: u32,
}

/// Scores and traces of one finished job.
pub(super) type Scored = (Vec<RerankScore>, Vec<ExitTrace>);

impl LateJoined {
    /// Runs every job's plan; one result per job, in order. A failing model call fails the jobs
    /// whose pairs it held; the others go on.
    pub(super) fn execute_many(&self, jobs: &mut [Job<'_>]) -> Vec<Result<Scored, RerankError>> {
        let mut progress: Vec<Result<Progress, RerankError>> =
            jobs.iter().map(|job| Ok(self.start(job))).collect();
        loop {
            let mut wanted: Vec<(usize, usize)> = Vec::new(); // (job, block)
            for (j, slot) in progress.iter_mut().enumerate() {
                if let Ok(p) = slot {
                    match self.advance(&jobs[j], p) {
                        Ok(Some(block)) => wanted.push((j, block)),
                        Ok(None) => {}
                        Err(e) => *slot = Err(e),
                    }
                }
            }
            let Some(block) = wanted.iter().map(|&(_, b)| b).min() else {
                break;
            };
            let members: Vec<usize> = wanted
                .iter()
                .filter(|&&(_, b)| b == block)
                .map(|&(j, _)| j)
                .collect();
            if let Err(e) = self.run_block(block, &members, jobs, &mut progress) {
                for &j in &members {
                    progress[j] = Err(e.clone());
                }
            }
        }
        progress
            .into_iter()
            .map(|p| p.map(|p| (p.scores, p.traces)))
            .collect()
    }

    /// A job before any block: every entering document scored at the towers' exit.
    fn start(&self, job: &Job<'_>) -> Progress {
        let unscored = RerankScore {
            raw: 0.0,
            calibrated: 0.0,
            windows: 0,
            best_window: 0,
        };
        let first = job.states.len();
        let mut p = Progress {
            scores: vec![unscored; job.n],
            traces: vec![
                ExitTrace {
                    exits: Vec::new(),
                    pruned_at: Some(0),
                };
                job.n
            ],
            exit_scores: vec![vec![None; first]; self.manifest.exits.len()],
            x: vec![None; first],
            active: (0..first).collect(),
            step_score: vec![0f32; job.n],
            done: 0,
            step: 0,
            pruned: false,
            previous_layer: 0,
        };
        let towers = &self.manifest.exits[0];
        for (d, s) in job.states.iter().enumerate() {
            let row: Vec<f32> = towers
                .widths
                .iter()
                .map(|&w| super::prefix_cosine(&job.query.vector, &s.vector, w as usize))
                .collect();
            for (&width, &raw) in towers.widths.iter().zip(&row) {
                p.traces[d].exits.push(ExitScore {
                    layer: towers.layer,
                    width,
                    raw,
                });
            }
            p.exit_scores[0][d] = Some(row);
        }
        p
    }

    /// Walks `p` through its plan until it needs a block it has not run (returned) or is done
    /// (`None`).
    fn advance(&self, job: &Job<'_>, p: &mut Progress) -> Result<Option<usize>, RerankError> {
        let plan = &job.plan;
        while let Some(step) = plan.steps.get(p.step) {
            let exit_index = self
                .manifest
                .exits
                .iter()
                .position(|e| e.layer == step.layer)
                .ok_or_else(|| {
                    RerankError::Invalid(format!("plan {plan}: no exit at layer {}", step.layer))
                })?;
            if !p.pruned {
                p.pruned = true;
                if p.step > 0 {
                    self.prune(job, p, step.keep);
                }
                if p.active.is_empty() {
                    p.step = plan.steps.len();
                    return Ok(None);
                }
            }
            if p.done < exit_index {
                return Ok(Some(p.done));
            }
            let column = self.manifest.exits[exit_index]
                .widths
                .iter()
                .position(|&w| w == step.width)
                .ok_or_else(|| {
                    RerankError::Invalid(format!(
                        "plan {plan}: exit {} has no width {}",
                        step.layer, step.width
                    ))
                })?;
            for &d in &p.active {
                let raw = p.exit_scores[exit_index][d]
                    .as_ref()
                    .and_then(|row| row.get(column).copied())
                    .ok_or_else(|| run_err("internal: an active document has no exit score"))?;
                p.step_score[d] = raw;
                p.scores[d] = RerankScore {
                    raw,
                    calibrated: self.calibrate(step.layer, step.width, raw),
                    windows: 1,
                    best_window: 0,
                };
                p.traces[d].pruned_at = None;
            }
            p.previous_layer = step.layer;
            p.step += 1;
            p.pruned = false;
        }
        Ok(None)
    }

    /// Keeps the best `keep` active documents on the last step's score (or its blend).
    fn prune(&self, job: &Job<'_>, p: &mut Progress, keep: Option<usize>) {
        let keep = keep.unwrap_or(usize::MAX).min(p.active.len());
        let mut prune_score = p.step_score.clone();
        if let Some(blend) = &job.blend {
            let exit: Vec<f32> = p.active.iter().map(|&d| p.step_score[d]).collect();
            for (&d, s) in p.active.iter().zip(blend.scores(&p.active, &exit)) {
                prune_score[d] = s;
            }
        }
        let mut ranked = p.active.clone();
        ranked.sort_by(|&a, &b| prune_score[b].total_cmp(&prune_score[a]).then(a.cmp(&b)));
        for &d in &ranked[keep..] {
            p.traces[d].pruned_at = Some(p.previous_layer);
            p.x[d] = None;
        }
        ranked.truncate(keep);
        ranked.sort_unstable();
        p.active = ranked;
    }

    /// Runs block `b` over the active documents of the `members` jobs, in token-budgeted batches
    /// of similar document length shared across jobs; records each job's exit scores, new query
    /// states and statistics.
    fn run_block(
        &self,
        b: usize,
        members: &[usize],
        jobs: &mut [Job<'_>],
        progress: &mut [Result<Progress, RerankError>],
    ) -> Result<(), RerankError> {
        let block = &self.blocks[b];
        let keep_x = b + 1 < self.blocks.len();
        if keep_x && !block.has_x_out {
            return Err(run_err(format!(
                "joint block {} has no output `x_out`, but a deeper block follows it",
                block.path.display()
            )));
        }
        let began = Instant::now();
        let hidden = self.manifest.hidden_size;
        let mut pairs: Vec<(usize, usize)> = Vec::new(); // (job, document)
        for &j in members {
            if let Ok(p) = &progress[j] {
                pairs.extend(p.active.iter().map(|&d| (j, d)));
            }
        }
        let lengths: Vec<usize> = pairs
            .iter()
            .map(|&(j, d)| jobs[j].states[d].tokens())
            .collect();
        let exit = &self.manifest.exits[b + 1];
        for batch in plan_batches(&lengths, self.batch_tokens, self.max_batch) {
            let result = {
                let rows: Vec<BlockRow<'_>> = batch
                    .members
                    .iter()
                    .map(|&k| {
                        let (j, d) = pairs[k];
                        let job = &jobs[j];
                        let x = match &progress[j] {
                            Ok(p) => p.x[d].as_deref().unwrap_or(&job.query.states),
                            Err(_) => &job.query.states,
                        };
                        BlockRow {
                            x,
                            lq: job.query.tokens,
                            states: job.states[d],
                        }
                    })
                    .collect();
                let lq = rows.iter().map(|r| r.lq).max().unwrap_or(0);
                let out = block.run(&rows, batch.seq_len, hidden, keep_x)?;
                (out, lq)
            };
            let (out, lq) = result;
            let mut seen = Vec::new();
            for (i, (&k, row)) in batch.members.iter().zip(out.scores).enumerate() {
                let (j, d) = pairs[k];
                if !seen.contains(&j) {
                    seen.push(j);
                    jobs[j].stats.batches += 1;
                }
                jobs[j].stats.padded_tokens += lq + batch.seq_len;
                if let Ok(p) = &mut progress[j] {
                    for (&width, &raw) in exit.widths.iter().zip(&row) {
                        p.traces[d].exits.push(ExitScore {
                            layer: exit.layer,
                            width,
                            raw,
                        });
                    }
                    p.exit_scores[b + 1][d] = Some(row);
                    if keep_x && let Some(state) = out.x_out.get(i) {
                        p.x[d] = Some(state.clone());
                    }
                }
            }
        }
        // The block's time, shared among the jobs by their pairs.
        let ms = began.elapsed().as_secs_f64() * 1e3;
        for &j in members {
            let mine = pairs.iter().filter(|&&(pj, _)| pj == j).count();
            let share = if pairs.is_empty() {
                0.0
            } else {
                ms * mine as f64 / pairs.len() as f64
            };
            jobs[j].stats.model_ms += share;
            jobs[j].stats.segments.push(SegmentTiming {
                segment: b as u32 + 1,
                exit_layer: block.layer,
                pairs: mine,
                ms: share,
            });
            if let Ok(p) = &mut progress[j] {
                p.done += 1;
            }
        }
        Ok(())
    }
}
