//! `sieve eval --dataset`'s tables for people: every stage's metrics and latency, and the
//! quality/cost comparison of the rerank rows ([`sieve_harness::BudgetRow`]).

use sieve_eval::MetricSpec;
use sieve_harness::{BudgetRow, DatasetReport};

use crate::table::Table;

/// A share of the full-depth gain as a percentage; shares below −999% (a loss many times a small
/// gain) are shown as such rather than as long numbers.
fn format_share(share: f64) -> String {
    if share < -9.99 {
        "< −999%".into()
    } else {
        format!("{:.0}%", share * 100.0)
    }
}

/// The comparison as an aligned table.
pub fn comparison_table(rows: &[BudgetRow], metric: &str, candidates: Option<&str>) -> String {
    let gain_title = format!("Δ vs {} [95% CI]", candidates.unwrap_or("candidates"));
    let mut table = Table::new(&[
        ("stage", false),
        (metric, true),
        (&gain_title, true),
        ("gain kept", true),
        ("ms/query", true),
        ("rerank ms", true),
        ("speed-up", true),
        ("front", false),
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    for row in rows {
        table.row(vec![
            row.stage.clone(),
            format!("{:.4}", row.quality),
            or_dash(row.gain.map(|g| match row.gain_ci {
                Some((lo, hi)) => format!("{g:+.4} [{lo:+.3}, {hi:+.3}]"),
                None => format!("{g:+.4}"),
            })),
            or_dash(row.gain_kept.map(format_share)),
            format!("{:.1}", row.mean_ms),
            or_dash(row.rerank_mean_ms.map(|m| format!("{m:.1}"))),
            or_dash(row.speedup.map(|s| format!("{s:.2}×"))),
            if row.pareto {
                "◆".into()
            } else {
                String::new()
            },
        ]);
    }
    table.render()
}

/// The stages' metrics and latencies, under a line naming the data set and settings.
pub fn stage_table(report: &DatasetReport, spec: &MetricSpec) -> String {
    let names: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    let mut header: Vec<(&str, bool)> = vec![("stage", false)];
    header.extend(names.iter().map(|n| (n.as_str(), true)));
    header.extend([("p50 ms", true), ("p95 ms", true), ("q/s", true)]);
    let mut table = Table::new(&header);
    for stage in &report.stages {
        let mut row = vec![stage.stage.clone()];
        row.extend(
            names
                .iter()
                .map(|n| format!("{:.4}", stage.metrics.get(n).copied().unwrap_or(0.0))),
        );
        row.push(format!("{:.2}", stage.latency.p50_ms));
        row.push(format!("{:.2}", stage.latency.p95_ms));
        row.push(format!("{:.1}", stage.latency.queries_per_second));
        table.row(row);
    }
    format!(
        "{} {} — {} queries, {} documents, depth {}, fusion {}, relevance ≥ {}\n{}",
        report.dataset,
        report.split,
        report.queries,
        report.documents,
        report.depth,
        report.fusion,
        report.relevance_threshold,
        table.render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_shows_shares_speed_ups_and_the_front() {
        let row =
            |stage: &str, gain: Option<f64>, kept: Option<f64>, speedup: Option<f64>| BudgetRow {
                stage: stage.into(),
                plan: None,
                quality: 0.5,
                gain,
                gain_ci: gain.map(|g| (g - 0.01, g + 0.01)),
                gain_kept: kept,
                mean_ms: 10.0,
                rerank_mean_ms: speedup.map(|_| 5.0),
                speedup,
                pareto: kept.is_some(),
            };
        let rows = [
            row("hybrid", None, None, None),
            row("rerank 50@2,10@6", Some(0.16), Some(0.8), Some(2.5)),
            row("rerank fast", Some(-0.5), Some(-12.0), Some(3.0)),
        ];
        let text = comparison_table(&rows, "ndcg@10", Some("hybrid"));
        assert!(text.contains("Δ vs hybrid [95% CI]"), "{text}");
        assert!(text.contains("+0.1600 [+0.150, +0.170]"), "{text}");
        assert!(text.contains("80%") && text.contains("2.50×"), "{text}");
        assert!(text.contains("< −999%") && text.contains("◆"), "{text}");
    }
}
