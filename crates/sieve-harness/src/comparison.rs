//! Every stage of an eval report side by side on quality and cost, so that a rerank budget can
//! be chosen by numbers: each row's gain over the candidates it reranked, the share of the
//! full-depth rerank's gain it keeps, its rerank-time speed-up over full depth, and whether it is
//! on the Pareto front (no other row is both cheaper and better). Each gain carries a 95%
//! paired-bootstrap interval over the queries, so a gain that is within noise reads as such.

use serde::{Deserialize, Serialize};
use sieve_eval::{PlotPoint, pareto_front};

use crate::report::StageReport;

/// One stage in the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetRow {
    /// The stage's name.
    pub stage: String,
    /// The rerank plan (rerank rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The quality metric (nDCG@10).
    pub quality: f64,
    /// Quality minus the candidates stage's (rerank rows, when that stage is in the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain: Option<f64>,
    /// 95% paired-bootstrap interval of `gain` (queries resampled with replacement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_ci: Option<(f64, f64)>,
    /// `gain` over the full-depth row's gain with the same blend — only when that gain is real
    /// (positive, and its interval above zero): a share of a loss or of noise means nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_kept: Option<f64>,
    /// Mean end-to-end ms per query (the cost axis of the plot and of the front).
    pub mean_ms: f64,
    /// Mean rerank-only ms per query (rerank rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_mean_ms: Option<f64>,
    /// The full-depth row's mean rerank time over this row's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// On the quality/cost Pareto front of all rows.
    pub pareto: bool,
}

/// Resamplings of the paired bootstrap.
const RESAMPLES: usize = 2000;

/// The 95% paired-bootstrap interval of the mean per-query difference `row − base` (queries both
/// have), with a fixed seed so that a report is reproducible.
fn paired_interval(row: &StageReport, base: &StageReport, metric: &str) -> Option<(f64, f64)> {
    let deltas: Vec<f64> = row
        .per_query
        .iter()
        .filter_map(|(q, m)| Some(m.get(metric)? - base.per_query.get(q)?.get(metric)?))
        .collect();
    bootstrap_interval(&deltas, RESAMPLES, 0x5eed_cafe)
}

/// 2.5th and 97.5th percentiles of the mean of `values` over `resamples` resamplings with
/// replacement (SplitMix64 draws). `None` for fewer than two values.
fn bootstrap_interval(values: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if values.len() < 2 || resamples == 0 {
        return None;
    }
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..n)
                .map(|_| values[(next() % n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((resamples - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

/// `layer:width` of a single-exit plan.
fn single_exit(plan: &str) -> Option<(u32, u32)> {
    let (layer, width) = plan.split_once(':')?;
    Some((layer.parse().ok()?, width.parse().ok()?))
}

/// The full-depth rerank row for a blend: the single-exit plan at the deepest layer and widest
/// width, preferring a pass of its own over a head read out of a deeper pass.
fn full_depth(stages: &[StageReport], blend: Option<f32>) -> Option<&StageReport> {
    stages
        .iter()
        .filter(|s| s.blend == blend && s.rerank_latency.is_some())
        .filter_map(|s| Some((single_exit(s.plan.as_deref()?)?, !s.head_of_pass, s)))
        .max_by_key(|(exit, own_pass, _)| (*exit, *own_pass))
        .map(|(_, _, s)| s)
}

/// The comparison rows, in report order. `candidates` names the stage the rerank rows reranked.
pub fn summarize(stages: &[StageReport], candidates: Option<&str>, metric: &str) -> Vec<BudgetRow> {
    let quality = |s: &StageReport| s.metrics.get(metric).copied();
    let base_stage = candidates.and_then(|name| stages.iter().find(|s| s.stage == name));
    let base = base_stage.and_then(quality);
    let points: Vec<PlotPoint> = stages
        .iter()
        .map(|s| PlotPoint {
            label: s.stage.clone(),
            ms: s.latency.mean_ms,
            quality: quality(s).unwrap_or(f64::NAN),
        })
        .collect();
    let front = pareto_front(&points);
    stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let q = quality(s)?;
            let reranked = s.rerank_latency.as_ref();
            let full = reranked.and(full_depth(stages, s.blend));
            let gain = base.filter(|_| reranked.is_some()).map(|b| q - b);
            // A share of the full-depth gain only means something if that gain is real: positive,
            // and with its interval above zero when there is one.
            let full_gain = full
                .and_then(quality)
                .zip(base)
                .map(|(f, b)| f - b)
                .filter(|g| *g > 0.0)
                .filter(|_| {
                    let interval = full
                        .zip(base_stage)
                        .and_then(|(f, b)| paired_interval(f, b, metric));
                    interval.is_none_or(|(lo, _)| lo > 0.0)
                });
            Some(BudgetRow {
                stage: s.stage.clone(),
                plan: s.plan.clone(),
                quality: q,
                gain,
                gain_ci: base_stage
                    .filter(|_| reranked.is_some())
                    .and_then(|b| paired_interval(s, b, metric)),
                gain_kept: gain.zip(full_gain).map(|(g, f)| g / f),
                mean_ms: s.latency.mean_ms,
                rerank_mean_ms: reranked.map(|l| l.mean_ms),
                speedup: reranked
                    .zip(full.and_then(|f| f.rerank_latency.as_ref()))
                    .filter(|(own, _)| own.mean_ms > 0.0)
                    .map(|(own, full)| full.mean_ms / own.mean_ms),
                pareto: front.contains(&i),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    fn stage(name: &str, ndcg: f64, ms: f64, rerank: Option<(&str, f64)>) -> StageReport {
        let latency = |ms: f64| Latency::of(vec![ms]);
        StageReport {
            stage: name.into(),
            metrics: [("ndcg@10".to_string(), ndcg)].into(),
            queries: 10,
            latency: latency(ms + rerank.map_or(0.0, |r| r.1)),
            rerank_latency: rerank.map(|r| latency(r.1)),
            run_file: None,
            plan: rerank.map(|r| r.0.to_string()),
            blend: None,
            head_of_pass: false,
            per_query: Default::default(),
        }
    }

    #[test]
    fn the_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_queries() {
        let noisy: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.3 } else { -0.1 })
            .collect();
        let (lo, hi) = bootstrap_interval(&noisy, 2000, 7).unwrap();
        assert!(lo < 0.1 && 0.1 < hi && lo > -0.1 && hi < 0.3, "{lo} {hi}");
        let more: Vec<f64> = noisy.iter().cycle().take(400).copied().collect();
        let (lo2, hi2) = bootstrap_interval(&more, 2000, 7).unwrap();
        assert!(hi2 - lo2 < (hi - lo) / 2.0, "{lo2} {hi2}");
        assert_eq!(
            bootstrap_interval(&noisy, 2000, 7),
            Some((lo, hi)),
            "reproducible"
        );
        assert_eq!(bootstrap_interval(&[0.5], 2000, 7), None);
        let constant = vec![0.2; 10];
        let (a, b) = bootstrap_interval(&constant, 100, 1).unwrap();
        assert!((a - 0.2).abs() < 1e-12 && (b - 0.2).abs() < 1e-12);
    }

    #[test]
    fn gains_carry_a_paired_interval() {
        let mut base = stage("hybrid", 0.5, 10.0, None);
        let mut better = stage("rerank full", 0.6, 10.0, Some(("6:384", 100.0)));
        for q in 0..30 {
            let b = f64::from(q % 5) / 10.0;
            base.per_query
                .insert(format!("q{q}"), [("ndcg@10".to_string(), b)].into());
            better
                .per_query
                .insert(format!("q{q}"), [("ndcg@10".to_string(), b + 0.1)].into());
        }
        let mut cascade = stage(
            "rerank 10@2,3@6",
            0.55,
            10.0,
            Some(("10@2:384,3@6:384", 50.0)),
        );
        cascade.per_query = base.per_query.clone();
        let rows = summarize(
            &[base.clone(), better.clone(), cascade.clone()],
            Some("hybrid"),
            "ndcg@10",
        );
        let (lo, hi) = rows[1].gain_ci.unwrap();
        assert!(
            (lo - 0.1).abs() < 1e-9 && (hi - 0.1).abs() < 1e-9,
            "paired: {lo} {hi}"
        );
        assert!(rows[0].gain_ci.is_none());
        assert!((rows[2].gain_kept.unwrap() - 0.5).abs() < 1e-9);

        // A full-depth "gain" that is noise (its interval straddles 0): no share of it is shown.
        let mut noise = better;
        noise.metrics.insert("ndcg@10".into(), 0.51);
        for (q, m) in noise.per_query.iter_mut() {
            let i: usize = q[1..].parse().unwrap();
            let b = base.per_query[q]["ndcg@10"];
            m.insert(
                "ndcg@10".into(),
                b + if i.is_multiple_of(2) { 0.3 } else { -0.28 },
            );
        }
        let rows = summarize(&[base, noise, cascade], Some("hybrid"), "ndcg@10");
        let (lo, hi) = rows[1].gain_ci.unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        assert_eq!(rows[2].gain_kept, None);
    }

    #[test]
    fn gains_and_speed_ups_are_relative_to_the_deepest_widest_exit() {
        let stages = vec![
            stage("hybrid", 0.50, 10.0, None),
            stage("rerank full", 0.70, 10.0, Some(("6:384", 300.0))),
            stage("rerank fast", 0.55, 10.0, Some(("2:384", 100.0))),
            stage(
                "rerank 50@2,10@6",
                0.66,
                10.0,
                Some(("50@2:384,10@6:384", 120.0)),
            ),
            stage("rerank 4:96", 0.52, 10.0, Some(("4:96", 250.0))),
        ];
        let rows = summarize(&stages, Some("hybrid"), "ndcg@10");
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0].gain, None,
            "the candidates stage has no gain over itself"
        );
        let cascade = &rows[3];
        assert!((cascade.gain.unwrap() - 0.16).abs() < 1e-9);
        assert!((cascade.gain_kept.unwrap() - 0.8).abs() < 1e-9);
        assert!((cascade.speedup.unwrap() - 2.5).abs() < 1e-9);
        assert!((rows[1].speedup.unwrap() - 1.0).abs() < 1e-9);
        // 4:96 is dominated by the cascade (slower and worse); hybrid, fast, the cascade and
        // full are each the best at their cost.
        let front: Vec<&str> = rows
            .iter()
            .filter(|r| r.pareto)
            .map(|r| r.stage.as_str())
            .collect();
        assert_eq!(
            front,
            ["hybrid", "rerank full", "rerank fast", "rerank 50@2,10@6"]
        );
    }

    #[test]
    fn no_share_of_a_loss() {
        let stages = vec![
            stage("hybrid", 0.70, 10.0, None),
            stage("rerank full", 0.45, 10.0, Some(("6:384", 300.0))),
            stage("rerank fast", 0.12, 10.0, Some(("2:384", 100.0))),
        ];
        let rows = summarize(&stages, Some("hybrid"), "ndcg@10");
        assert!(rows[2].gain.unwrap() < 0.0);
        assert_eq!(rows[2].gain_kept, None);
        assert!((rows[2].speedup.unwrap() - 3.0).abs() < 1e-9);
    }
}
