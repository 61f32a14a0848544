//! Progress bars for long work, drawn on stderr only when it is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use sieve_index::Progress;

/// Draws one bar per phase with indicatif; silent when `quiet` or stderr is not a terminal.
pub struct Bars {
    current: Mutex<Option<ProgressBar>>,
    enabled: bool,
    quiet: bool,
}

impl Bars {
    /// Bars that draw unless `quiet` or stderr is redirected.
    pub fn new(quiet: bool) -> Self {
        Self {
            current: Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
            quiet,
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if let Ok(mut guard) = self.current.lock() {
            f(&mut guard);
        }
    }
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(phase.to_string());
        self.with_bar(|slot| *slot = Some(bar));
    }

    fn advance(&self, n: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(n);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish();
            }
        });
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}

/// Reports each phase's start and end as one JSON line on stderr
/// (`{"event":"start","phase":"embed","total":5183}`, `{"event":"finish","phase":"embed","seconds":1.2}`),
/// for scripts and supervisors that follow a long build.
pub struct JsonLines {
    current: Mutex<Option<(String, std::time::Instant)>>,
}

impl JsonLines {
    /// A reporter with no phase started yet.
    pub fn new() -> Self {
        Self {
            current: Mutex::new(None),
        }
    }
}

impl Progress for JsonLines {
    fn start(&self, phase: &str, total: u64) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "start", "phase": phase, "total": total})
        );
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some((phase.to_string(), std::time::Instant::now()));
        }
    }

    fn advance(&self, _: u64) {}

    fn note(&self, message: &str) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "note", "message": message})
        );
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.current.lock()
            && let Some((phase, started)) = slot.take()
        {
            eprintln!(
                "{}",
                serde_json::json!({"event": "finish", "phase": phase,
                    "seconds": started.elapsed().as_secs_f64()})
            );
        }
    }
}
