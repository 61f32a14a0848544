//! Plans: which exits a call scores, in which order, and how a cascade's output is ordered.

use std::fmt;

use serde::{Deserialize, Serialize};
use sieve_core::{Budget, CascadeStep, RerankOutput};

use super::manifest::{ManifestExit, max_width};

/// A concrete plan: the steps of a cascade, or a single step for one exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, layers strictly increasing, `keep` never growing.
    pub steps: Vec<PlanStep>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// How many documents the step scores: the first `keep` in input order for the first step,
    /// the best `keep` of the previous step's for the others; `None` = all of them.
    pub keep: Option<usize>,
    /// Exit layer.
    pub layer: u32,
    /// Head width.
    pub width: u32,
}

impl Plan {
    /// Every document scored at one exit.
    pub fn exit(layer: u32, width: u32) -> Self {
        Self {
            steps: vec![PlanStep {
                keep: None,
                layer,
                width,
            }],
        }
    }

    /// The last step (`None` for an empty plan).
    pub fn last(&self) -> Option<&PlanStep> {
        self.steps.last()
    }

    /// How many of `n` documents reach the last step.
    pub fn reaching_last(&self, n: usize) -> usize {
        self.steps
            .iter()
            .fold(n, |count, s| count.min(s.keep.unwrap_or(usize::MAX)))
    }
}

/// `L:W` for one exit over every document, else `K@L:W,...` (the syntax of [`Budget::parse`]).
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.steps.as_slice()
            && only.keep.is_none()
        {
            return write!(f, "{}:{}", only.layer, only.width);
        }
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            match step.keep {
                Some(k) => write!(f, "{k}@{}:{}", step.layer, step.width)?,
                None => write!(f, "all@{}:{}", step.layer, step.width)?,
            }
        }
        Ok(())
    }
}

/// Resolves an exit or a cascade against the model's exits (widths default to the widest).
pub(crate) fn resolve_plan(exits: &[ManifestExit], budget: &Budget) -> Result<Plan, String> {
    let available = || {
        let all: Vec<String> = exits
            .iter()
            .flat_map(|e| e.widths.iter().map(move |w| format!("{}:{w}", e.layer)))
            .collect();
        all.join(", ")
    };
    let check = |layer: u32, width: Option<u32>| -> Result<u32, String> {
        let exit = exits
            .iter()
            .find(|e| e.layer == layer)
            .ok_or_else(|| format!("layer {layer} is not an exit (exits: {})", available()))?;
        match width {
            None => Ok(max_width(&exit.widths)),
            Some(w) if exit.widths.contains(&w) => Ok(w),
            Some(w) => Err(format!(
                "exit {layer}:{w} does not exist (exits: {})",
                available()
            )),
        }
    };
    match budget {
        Budget::Exit { layer, width } => Ok(Plan::exit(*layer, check(*layer, Some(*width))?)),
        Budget::Cascade(steps) => {
            if steps.is_empty() {
                return Err("a cascade needs at least one step".into());
            }
            let mut plan = Vec::with_capacity(steps.len());
            for (i, &CascadeStep { keep, layer, width }) in steps.iter().enumerate() {
                if keep == 0 {
                    return Err(format!("cascade step {}: keep must be at least 1", i + 1));
                }
                if i > 0 && (layer <= steps[i - 1].layer || keep > steps[i - 1].keep) {
                    return Err(
                        "cascade layers must increase and keep must not grow from step to step"
                            .into(),
                    );
                }
                plan.push(PlanStep {
                    keep: (keep != usize::MAX).then_some(keep),
                    layer,
                    width: check(layer, width)?,
                });
            }
            Ok(Plan { steps: plan })
        }
        other => Err(format!("'{other}' is not an exit or a cascade")),
    }
}

/// The order a caller should present a rerank output in: for a Matryoshka output, the survivors
/// of the last step by score (best first), then the documents pruned at the previous step by
/// theirs, and so on back to the first step, then the documents that were never scored
/// (`pruned_at == Some(0)`) in input order; ties keep input order. For an output without traces
/// (single-graph models), simply by score. Returns input indices.
pub fn cascade_order(output: &RerankOutput) -> Vec<usize> {
    let n = output.scores.len();
    // Group rank: survivors first (u32::MAX), then deeper pruning layers first, unscored last.
    let group = |i: usize| -> u32 {
        match output.traces.get(i).map(|t| t.pruned_at) {
            None | Some(None) => u32::MAX,
            Some(Some(layer)) => layer,
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        group(b).cmp(&group(a)).then_with(|| {
            if group(a) == 0 {
                a.cmp(&b)
            } else {
                output.scores[b]
                    .raw
                    .total_cmp(&output.scores[a].raw)
                    .then(a.cmp(&b))
            }
        })
    });
    order
}
