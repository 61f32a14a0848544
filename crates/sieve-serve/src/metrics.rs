//! Counters and histograms of a running server, written in Prometheus' text exposition format
//! at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Latency buckets, seconds.
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Size buckets (requests or documents per batch).
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// Everything `/metrics` reports. Shared by the HTTP layer and the batcher.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    route_latency: Mutex<BTreeMap<String, Histogram>>,
    stage_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    batch_requests: Mutex<Histogram>,
    batch_documents: Mutex<Histogram>,
    /// Requests waiting for the model now.
    pub queue_depth: AtomicUsize,
    /// Query-document pairs scored.
    pub pairs: AtomicU64,
    /// Document tokens of the pairs scored (after truncation).
    pub tokens: AtomicU64,
    /// Documents whose states came from the state cache.
    pub state_cache_hits: AtomicU64,
    /// Documents whose states the towers computed.
    pub state_cache_misses: AtomicU64,
    /// Queued requests dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests that ran past the deadline.
    pub timed_out: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected_overload: AtomicU64,
    /// Newer index generations picked up without a restart.
    pub index_reloads: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            route_latency: Mutex::default(),
            stage_latency: Mutex::default(),
            batch_requests: Mutex::new(Histogram::new(SIZES)),
            batch_documents: Mutex::new(Histogram::new(SIZES)),
            queue_depth: AtomicUsize::new(0),
            pairs: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            state_cache_hits: AtomicU64::new(0),
            state_cache_misses: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            rejected_overload: AtomicU64::new(0),
            index_reloads: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves consistent-enough numbers: keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// Counts one answered request of `route` with `status`, which took `seconds`.
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        lock(&self.route_latency)
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(SECONDS))
            .observe(seconds);
    }

    /// Records the time one request spent in `stage` (`queue`, `states`, `rerank`, `search`).
    pub fn record_stage(&self, stage: &'static str, seconds: f64) {
        lock(&self.stage_latency)
            .entry(stage)
            .or_insert_with(|| Histogram::new(SECONDS))
            .observe(seconds);
    }

    /// Records one batch of the model worker: how many requests and documents it packed.
    pub fn record_batch(&self, requests: usize, documents: usize) {
        lock(&self.batch_requests).observe(requests as f64);
        lock(&self.batch_documents).observe(documents as f64);
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP sieve_requests_total Requests answered, by route and status code.\n");
        out.push_str("# TYPE sieve_requests_total counter\n");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "sieve_requests_total{{route=\"{route}\",code=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP sieve_errors_total Requests answered with a 4xx or 5xx status.\n");
        out.push_str("# TYPE sieve_errors_total counter\n");
        let mut errors: BTreeMap<u16, u64> = BTreeMap::new();
        for ((_, status), n) in lock(&self.requests).iter() {
            if *status >= 400 {
                *errors.entry(*status).or_default() += n;
            }
        }
        for (status, n) in errors {
            let _ = writeln!(out, "sieve_errors_total{{code=\"{status}\"}} {n}");
        }
        out.push_str("# HELP sieve_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE sieve_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.route_latency).iter() {
            h.write(
                &mut out,
                "sieve_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str(
            "# HELP sieve_stage_duration_seconds Time per request in each stage: queue (waiting \
             for the model), states (document towers), rerank (query side and joint blocks), \
             search (a whole /search).\n",
        );
        out.push_str("# TYPE sieve_stage_duration_seconds histogram\n");
        for (stage, h) in lock(&self.stage_latency).iter() {
            h.write(
                &mut out,
                "sieve_stage_duration_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        out.push_str("# HELP sieve_batch_requests Requests packed into one model batch.\n");
        out.push_str("# TYPE sieve_batch_requests histogram\n");
        lock(&self.batch_requests).write(&mut out, "sieve_batch_requests", "");
        out.push_str("# HELP sieve_batch_documents Documents packed into one model batch.\n");
        out.push_str("# TYPE sieve_batch_documents histogram\n");
        lock(&self.batch_documents).write(&mut out, "sieve_batch_documents", "");
        let gauges = [(
            "sieve_queue_depth",
            "Requests waiting for the model.",
            self.queue_depth.load(Ordering::Relaxed) as u64,
        )];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "sieve_pairs_scored_total",
                "Query-document pairs scored.",
                &self.pairs,
            ),
            (
                "sieve_tokens_scored_total",
                "Document tokens scored.",
                &self.tokens,
            ),
            (
                "sieve_state_cache_hits_total",
                "Documents whose states came from the cache.",
                &self.state_cache_hits,
            ),
            (
                "sieve_state_cache_misses_total",
                "Documents whose states the towers computed.",
                &self.state_cache_misses,
            ),
            (
                "sieve_index_reloads_total",
                "Newer index generations (appends, deletes) picked up without a restart.",
                &self.index_reloads,
            ),
            (
                "sieve_cancelled_total",
                "Queued requests dropped because the client went away.",
                &self.cancelled,
            ),
            (
                "sieve_timeouts_total",
                "Requests past the deadline.",
                &self.timed_out,
            ),
            (
                "sieve_overload_rejections_total",
                "Requests refused with 429 because the queue was full.",
                &self.rejected_overload,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_render() {
        let m = Metrics::default();
        m.record_request("/v2/rerank", 200, 0.02);
        m.record_request("/v2/rerank", 200, 3.0);
        m.record_request("/rerank", 429, 0.001);
        m.record_batch(3, 40);
        m.pairs.fetch_add(40, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("sieve_requests_total{route=\"/v2/rerank\",code=\"200\"} 2"));
        assert!(text.contains("sieve_errors_total{code=\"429\"} 1"));
        assert!(text.contains(
            "sieve_request_duration_seconds_bucket{route=\"/v2/rerank\",le=\"0.025\"} 1"
        ));
        assert!(
            text.contains(
                "sieve_request_duration_seconds_bucket{route=\"/v2/rerank\",le=\"+Inf\"} 2"
            )
        );
        assert!(text.contains("sieve_batch_documents_bucket{le=\"64\"} 1"));
        assert!(text.contains("sieve_pairs_scored_total 40"));
    }
}
