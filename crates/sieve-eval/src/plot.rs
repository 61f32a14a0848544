//! A quality-versus-cost plot as a standalone SVG: one labelled point per system (a retrieval
//! stage, a rerank budget), nDCG (or any quality metric) against milliseconds per query on a log
//! scale, with the Pareto front (the points no other point beats on both axes) joined by a line.

use std::fmt::Write;

/// One system on the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    /// Label drawn beside the point.
    pub label: String,
    /// Cost: milliseconds per query (must be > 0 for the log axis; smaller values are clamped).
    pub ms: f64,
    /// Quality, e.g. nDCG@10.
    pub quality: f64,
}

/// Indices of the points on the Pareto front (no other point is both cheaper-or-equal and
/// better-or-equal with one strict), sorted by cost.
pub fn pareto_front(points: &[PlotPoint]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            !points.iter().enumerate().any(|(j, other)| {
                j != i
                    && other.ms <= points[i].ms
                    && other.quality >= points[i].quality
                    && (other.ms < points[i].ms || other.quality > points[i].quality)
            })
        })
        .collect();
    front.sort_by(|&a, &b| points[a].ms.total_cmp(&points[b].ms));
    front
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the plot; `title` goes on top, `quality_name` labels the y axis.
pub fn quality_cost_svg(points: &[PlotPoint], title: &str, quality_name: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 460.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 40.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let min_ms = 0.01;
    let xs: Vec<f64> = points.iter().map(|p| p.ms.max(min_ms).log10()).collect();
    let (mut x_lo, mut x_hi) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    if !x_lo.is_finite() {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    x_lo = x_lo.floor();
    x_hi = x_hi.ceil().max(x_lo + 1.0);
    let (mut y_lo, mut y_hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.quality), hi.max(p.quality))
        });
    if !y_lo.is_finite() {
        (y_lo, y_hi) = (0.0, 1.0);
    }
    let pad = ((y_hi - y_lo) * 0.15).max(0.01);
    y_lo = ((y_lo - pad) * 50.0).floor() / 50.0;
    y_hi = ((y_hi + pad) * 50.0).ceil() / 50.0;

    let px = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - y_lo) / (y_hi - y_lo) * (H - TOP - BOTTOM);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Axes and grid.
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        H - BOTTOM
    );
    let mut decade = x_lo;
    while decade <= x_hi + 1e-9 {
        let x = px(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 18.0,
            format_ms(10f64.powf(decade))
        );
        decade += 1.0;
    }
    let steps = 5;
    for i in 0..=steps {
        let y = y_lo + (y_hi - y_lo) * f64::from(i) / f64::from(steps);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/>"##,
            py(y),
            W - RIGHT,
            py(y)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"#,
            LEFT - 6.0,
            py(y) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">ms per query (log scale)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        escape(quality_name)
    );
    // Pareto front.
    let front = pareto_front(points);
    if front.len() > 1 {
        let path: Vec<String> = front
            .iter()
            .map(|&i| format!("{:.1},{:.1}", px(xs[i]), py(points[i].quality)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#2a7" stroke-width="1.5" stroke-dasharray="5,3"/>"##,
            path.join(" ")
        );
    }
    for (i, p) in points.iter().enumerate() {
        let (x, y) = (px(xs[i]), py(p.quality));
        let colour = if front.contains(&i) { "#2a7" } else { "#36c" };
        let _ = writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{colour}"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{} ({:.3}, {})</text>"#,
            x + 7.0,
            y - 6.0,
            escape(&p.label),
            p.quality,
            format_ms(p.ms)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, ms: f64, quality: f64) -> PlotPoint {
        PlotPoint {
            label: label.into(),
            ms,
            quality,
        }
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let points = vec![
            point("bm25", 1.0, 0.66),
            point("dense", 10.0, 0.64), // dominated by bm25
            point("hybrid", 12.0, 0.71),
            point("slow", 100.0, 0.70), // dominated by hybrid
            point("rerank", 300.0, 0.74),
        ];
        assert_eq!(pareto_front(&points), vec![0, 2, 4]);
    }

    #[test]
    fn svg_has_every_point_and_escapes_labels() {
        let points = vec![point("a<b", 0.5, 0.3), point("c", 50.0, 0.6)];
        let svg = quality_cost_svg(&points, "T & t", "nDCG@10");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.contains("T &amp; t"));
        assert!(svg.contains("<polyline"));
    }
}
