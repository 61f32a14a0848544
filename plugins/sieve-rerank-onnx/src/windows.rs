//! How a long document is split into token windows, and how window scores become one score.

use std::ops::Range;

/// How the scores of a document's windows are combined into the document's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowAggregation {
    /// The best window's score (default): a document is as relevant as its most relevant passage,
    /// the usual choice for passage-trained cross-encoders (MaxP).
    #[default]
    Max,
    /// The mean of the two best windows' scores (the best window alone when there is only one):
    /// damps a single lucky window, rewarding documents that are relevant in more than one place.
    MeanTop2,
}

impl WindowAggregation {
    /// Combines window scores (at least one) into `(document score, index of the best window)`.
    pub fn combine(self, scores: &[f32]) -> (f32, usize) {
        let mut best = 0;
        let mut second: Option<usize> = None;
        for (i, &s) in scores.iter().enumerate().skip(1) {
            if s > scores[best] {
                second = Some(best);
                best = i;
            } else if second.is_none_or(|j| s > scores[j]) {
                second = Some(i);
            }
        }
        let Some(&top) = scores.get(best) else {
            return (f32::NEG_INFINITY, 0);
        };
        let score = match (self, second) {
            (Self::MeanTop2, Some(j)) => (top + scores[j]) / 2.0,
            _ => top,
        };
        (score, best)
    }
}

/// The token ranges of the windows that a document of `len` tokens is scored through, when each
/// window holds at most `budget` document tokens and consecutive windows start `stride` tokens
/// apart (`stride` is clamped to `1..=budget`, so windows overlap or touch but never leave gaps).
///
/// * A document that fits (`len <= budget`, including the empty document) is one window
///   `0..len`.
/// * Otherwise windows start at `0, stride, 2·stride, …` and the last one is aligned to the end
///   of the document (`len - budget .. len`), so every window is full and the tail is always seen.
/// * If that takes more than `max_windows` windows, `max_windows` full windows are instead spread
///   evenly from the start to the end of the document (the first at 0, the last ending at `len`):
///   coverage of the middle thins out, but the beginning and the end are both scored. With
///   `max_windows == 1` this is plain truncation (the first `budget` tokens).
pub fn plan_windows(
    len: usize,
    budget: usize,
    stride: usize,
    max_windows: usize,
) -> Vec<Range<usize>> {
    let budget = budget.max(1);
    if len <= budget {
        return std::iter::once(0..len).collect();
    }
    let stride = stride.clamp(1, budget);
    let max_windows = max_windows.max(1);
    let last = len - budget;
    let natural = last.div_ceil(stride) + 1;
    let starts: Vec<usize> = if natural <= max_windows {
        (0..natural).map(|i| (i * stride).min(last)).collect()
    } else if max_windows == 1 {
        vec![0]
    } else {
        let gaps = max_windows - 1;
        (0..max_windows)
            .map(|i| (i * last + gaps / 2) / gaps)
            .collect()
    };
    starts.into_iter().map(|s| s..s + budget).collect()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-window plans are exactly what is asserted
mod tests {
    use super::*;

    #[test]
    fn short_documents_are_one_window() {
        assert_eq!(plan_windows(0, 100, 50, 8), [0..0]);
        assert_eq!(plan_windows(100, 100, 50, 8), [0..100]);
    }

    #[test]
    fn long_documents_overlap_and_end_at_the_tail() {
        assert_eq!(
            plan_windows(250, 100, 50, 8),
            vec![0..100, 50..150, 100..200, 150..250]
        );
        // The last window is aligned to the end rather than running past it.
        assert_eq!(
            plan_windows(230, 100, 50, 8),
            vec![0..100, 50..150, 100..200, 130..230]
        );
        // A stride larger than the budget is clamped: no gaps.
        assert_eq!(
            plan_windows(300, 100, 500, 8),
            vec![0..100, 100..200, 200..300]
        );
    }

    #[test]
    fn capped_windows_spread_from_start_to_end() {
        let w = plan_windows(10_000, 100, 50, 4);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], 0..100);
        assert_eq!(w[3], 9_900..10_000);
        assert!(w.windows(2).all(|p| p[0].start < p[1].start));
        assert_eq!(plan_windows(10_000, 100, 50, 1), [0..100]);
    }

    #[test]
    fn aggregation() {
        assert_eq!(WindowAggregation::Max.combine(&[1.0, 3.0, 2.0]), (3.0, 1));
        assert_eq!(
            WindowAggregation::MeanTop2.combine(&[1.0, 3.0, 2.0]),
            (2.5, 1)
        );
        assert_eq!(
            WindowAggregation::MeanTop2.combine(&[3.0, 1.0, 2.0]),
            (2.5, 0)
        );
        assert_eq!(WindowAggregation::MeanTop2.combine(&[4.0]), (4.0, 0));
        assert_eq!(WindowAggregation::Max.combine(&[2.0, 2.0]), (2.0, 0));
    }
}
