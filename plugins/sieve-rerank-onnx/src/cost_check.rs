//! How well a [`CostTable`] predicts real rerank calls: every profile, every single exit and a
//! set of latency budgets run on a fixed workload, predicted against measured model time
//! (`sieve calibrate --check`).

use serde::Serialize;
use sieve_core::{Budget, RerankDoc, RerankError, Reranker};

use crate::{CostTable, CrossEncoder};

/// What [`CrossEncoder::check_costs`] runs.
#[derive(Debug, Clone)]
pub struct CostCheckOptions {
    /// Rerank calls per plan (the median is compared).
    pub calls: usize,
    /// Candidates per call (at most the number of sample documents).
    pub window: usize,
    /// Latency budgets to check, in ms; empty: five spread from "only the cheapest exit fits,
    /// barely" to "the deepest plan fits".
    pub latency_ms: Vec<f64>,
}

/// One plan's row of the check.
#[derive(Debug, Clone, Serialize)]
pub struct CostCheckRow {
    /// The budget asked for.
    pub budget: String,
    /// The plan the calls ran.
    pub plan: String,
    /// Calls made.
    pub calls: usize,
    /// The table's prediction (median over the calls).
    pub predicted_ms: f64,
    /// Measured model time, median over the calls (latency budgets: tokenizing + model, the
    /// whole call a latency budget covers).
    pub measured_ms_median: f64,
    /// Measured, worst call.
    pub measured_ms_max: f64,
    /// (median measured − predicted) / predicted (latency rows include tokenizing in the
    /// measurement, so their error is biased up by it).
    pub error: f64,
    /// Latency budgets: the worst call's overshoot of the budget, as a fraction (≤ 0 = within).
    pub overshoot: Option<f64>,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CostCheck {
    /// The model the table describes.
    pub model: String,
    /// The machine the table was measured on.
    pub machine: String,
    /// Candidates per call.
    pub window: usize,
    /// Calls per plan.
    pub calls_per_plan: usize,
    /// One row per budget.
    pub rows: Vec<CostCheckRow>,
    /// The largest |error| over the rows.
    pub worst_abs_error: f64,
    /// The largest overshoot of a latency budget (−∞ when none was checked).
    pub worst_overshoot: f64,
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl CrossEncoder {
    /// Runs every profile, every single exit and the latency budgets of `options` on a fixed
    /// workload — call i reranks `window` of `docs` from a rotating offset, so every call gets
    /// different documents — and compares `table`'s predictions with the measured model time.
    /// Errors for single-graph models, an empty `docs`, or a failed call.
    pub fn check_costs(
        &self,
        table: &CostTable,
        query: &str,
        docs: &[RerankDoc<'_>],
        options: &CostCheckOptions,
    ) -> Result<CostCheck, RerankError> {
        if docs.is_empty() {
            return Err(RerankError::Invalid(
                "the cost check needs sample documents".into(),
            ));
        }
        let window = options.window.clamp(1, docs.len());
        let call_docs = |i: usize| -> Vec<RerankDoc<'_>> {
            (0..window)
                .map(|j| docs[(i * 7 + j) % docs.len()])
                .collect()
        };
        let mut budgets: Vec<Budget> = self
            .profiles()
            .into_iter()
            .map(|(name, _)| Budget::Profile(name))
            .collect();
        for exit in self.manifest().map(|m| m.exit_list()).unwrap_or_default() {
            for &width in &exit.widths {
                budgets.push(Budget::Exit {
                    layer: exit.layer,
                    width,
                });
            }
        }
        // Latency budgets: given, or spread over the range the plans span on this workload.
        let lengths = self.window_lengths(query, &call_docs(0))?;
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for budget in &budgets {
            let predicted = table.predict_ms(&self.resolve_budget(budget)?, &lengths)?;
            (lo, hi) = (lo.min(predicted), hi.max(predicted));
        }
        // Warm up once; its tokenization time is the fixed part a latency budget also pays.
        let overhead = self.rerank(query, &call_docs(0))?.stats.tokenize_ms;
        let latencies: Vec<f64> = if options.latency_ms.is_empty() {
            [0.6, 1.0, 1.5, 2.0, 3.0]
                .iter()
                .map(|f| (overhead + (lo * f).min(hi * 1.2)).ceil().max(1.0))
                .collect()
        } else {
            options.latency_ms.clone()
        };
        budgets.extend(latencies.iter().map(|&ms| Budget::LatencyMs(ms)));

        let rows = budgets
            .iter()
            .map(|budget| self.check_budget(table, query, budget, options.calls, &call_docs))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CostCheck {
            model: table.model.clone(),
            machine: table.machine.clone(),
            window,
            calls_per_plan: options.calls,
            worst_abs_error: rows.iter().map(|r| r.error.abs()).fold(0.0, f64::max),
            worst_overshoot: rows
                .iter()
                .filter_map(|r| r.overshoot)
                .fold(f64::NEG_INFINITY, f64::max),
            rows,
        })
    }

    /// One budget's row: `calls` calls (documents of call i + 1), predicted vs measured.
    fn check_budget<'d>(
        &self,
        table: &CostTable,
        query: &str,
        budget: &Budget,
        calls: usize,
        call_docs: &dyn Fn(usize) -> Vec<RerankDoc<'d>>,
    ) -> Result<CostCheckRow, RerankError> {
        let mut measured = Vec::with_capacity(calls);
        let mut predicted = Vec::with_capacity(calls);
        let mut plan = String::new();
        for i in 0..calls {
            let batch = call_docs(i + 1);
            let output = self.rerank_budgeted(query, &batch, budget)?;
            plan = output.stats.plan.clone();
            // A latency budget too small for even one document runs `0@L:W`: nothing to predict.
            let ran = Budget::parse(&plan)
                .ok()
                .map(|b| self.resolve_budget(&b))
                .transpose()?;
            let lengths = self.window_lengths(query, &batch)?;
            predicted.push(match ran {
                Some(ran) => table.predict_ms(&ran, &lengths)?,
                None => 0.0,
            });
            // A latency budget covers the whole call: tokenizing + model.
            measured.push(match budget {
                Budget::LatencyMs(_) => output.stats.tokenize_ms + output.stats.model_ms,
                _ => output.stats.model_ms,
            });
        }
        let predicted_ms = median(&mut predicted);
        let measured_max = measured.iter().copied().fold(0.0, f64::max);
        let measured_ms = median(&mut measured);
        Ok(CostCheckRow {
            budget: budget.to_string(),
            plan,
            calls,
            predicted_ms,
            measured_ms_median: measured_ms,
            measured_ms_max: measured_max,
            error: if predicted_ms > 0.0 {
                (measured_ms - predicted_ms) / predicted_ms
            } else {
                0.0
            },
            overshoot: match budget {
                Budget::LatencyMs(ms) => Some((measured_max - ms) / ms),
                _ => None,
            },
        })
    }
}
