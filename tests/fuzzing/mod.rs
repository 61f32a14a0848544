//! The fuzz harness's engine (tests/fuzz.rs runs it): a deterministic mutation generator for
//! bytes and text, the outcome tally of one target (accepted, refused, crash, hang), the table of
//! targets with the part split `scripts/fuzz.sh` uses, and the report.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A case slower than this counts as a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// xorshift64*: deterministic, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

pub const HOSTILE: &[&str] = &[
    "\u{0}",
    "\u{1b}[31m",
    "\u{feff}",
    "\u{202e}",
    "\"",
    "\\",
    "\t",
    "\r\n",
    "{",
    "}",
    "[",
    "]",
    ":",
    "null",
    "-1",
    "1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "the of and a to in",
    "Q0",
    "\u{fffd}",
];

/// One mutation of `seed`, byte-level or (for text) line- and token-level.
pub fn mutate(seed: &[u8], rng: &mut Rng, text: bool) -> Vec<u8> {
    let mut data = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = data.len().max(1);
        match rng.below(if text { 10 } else { 7 }) {
            0 => {
                // Flip a few bits.
                for _ in 0..1 + rng.below(8) {
                    if !data.is_empty() {
                        let i = rng.below(data.len());
                        data[i] ^= 1 << rng.below(8);
                    }
                }
            }
            1 => {
                // Overwrite a range with random bytes.
                let at = rng.below(len);
                for i in at..(at + 1 + rng.below(64)).min(data.len()) {
                    data[i] = rng.next() as u8;
                }
            }
            2 => {
                let cut = rng.below(len);
                data.truncate(cut);
            }
            3 => {
                let at = rng.below(len).min(data.len());
                let junk: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, junk);
            }
            4 => {
                let at = rng.below(len).min(data.len());
                let end = (at + 1 + rng.below(256)).min(data.len());
                data.drain(at..end);
            }
            5 => {
                // Duplicate a range (repeated ids, repeated records).
                let at = rng.below(len).min(data.len());
                let end = (at + 1 + rng.below(512)).min(data.len());
                let chunk = data[at..end].to_vec();
                let to = rng.below(len).min(data.len());
                data.splice(to..to, chunk);
            }
            6 => {
                // Set a 4- or 8-byte field to an extreme (lengths, counts, offsets).
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                if data.len() > width {
                    let at = rng.below(data.len() - width);
                    let value: u64 = [0, 1, u64::MAX, u64::MAX / 2, 0x7fff_ffff][rng.below(5)];
                    data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            7 => {
                let s = HOSTILE[rng.below(HOSTILE.len())].as_bytes();
                let at = rng.below(len).min(data.len());
                data.splice(at..at, s.iter().copied());
            }
            8 => {
                // Swap two lines.
                let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                }
                data = lines.join(&b'\n');
            }
            _ => {
                // A very long line.
                let at = rng.below(len).min(data.len());
                let long = vec![b'a' + rng.below(26) as u8; 1 << (10 + rng.below(11))];
                data.splice(at..at, long);
            }
        }
    }
    data
}

/// The outcome counts of one target.
pub struct Tally {
    pub name: &'static str,
    pub started: Instant,
    pub seconds: f64,
    pub cases: usize,
    pub accepted: usize,
    pub refused: usize,
    pub crashes: Vec<String>,
    pub hangs: Vec<String>,
    pub slowest: Duration,
}

impl Tally {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            seconds: 0.0,
            cases: 0,
            accepted: 0,
            refused: 0,
            crashes: Vec::new(),
            hangs: Vec::new(),
            slowest: Duration::ZERO,
        }
    }

    /// Records the target's wall time; the tally is complete.
    pub fn finish(mut self) -> Self {
        self.seconds = self.started.elapsed().as_secs_f64();
        self
    }

    pub fn run(&mut self, label: String, case: impl FnOnce() -> Result<(), String>) {
        self.cases += 1;
        if std::env::var_os("FUZZ_VERBOSE").is_some() {
            eprintln!("{label}");
        }
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(case));
        let took = started.elapsed();
        self.slowest = self.slowest.max(took);
        if took > HANG {
            self.hangs.push(format!("{label}: {took:.1?}"));
        }
        match outcome {
            Ok(Ok(())) => self.accepted += 1,
            Ok(Err(_)) => self.refused += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.crashes.push(format!("{label}: {message}"));
            }
        }
    }
}

/// Every target, in the order they run, with its cost in seconds per 1,000 cases measured on
/// the 2-core development machine (release build). `FUZZ_PART=i/n` runs the i-th of n parts
/// that split the targets by cost (largest first, each to the least loaded part), so that
/// `scripts/fuzz.sh` can run one part per core and finish them together.
pub const TARGETS: &[(&str, f64)] = &[
    ("parquet", 0.7),
    ("corpus jsonl", 0.7),
    ("queries jsonl", 0.3),
    ("qrels tsv", 0.3),
    ("run trec", 0.3),
    ("qrels trec", 0.3),
    ("late_joined.json", 0.3),
    ("state_codec.bin", 0.3),
    ("tokenizer.json", 2.3),
    ("onnx truncated", 4.7),
    ("index dir", 22.7),
    ("query string", 8.0),
    ("http /v1/rerank", 4.0),
    ("http /v2/rerank", 4.0),
    ("http /rerank (TEI)", 2.0),
    ("http /weaviate", 3.3),
    ("http /search", 1.0),
];

/// Whether this process runs `target` (see [`TARGETS`]; `FUZZ_TARGET=name` runs only that one).
pub fn wanted(target: &str) -> bool {
    if let Ok(only) = std::env::var("FUZZ_TARGET") {
        return only == target;
    }
    let Ok(part) = std::env::var("FUZZ_PART") else {
        return true;
    };
    let (i, n) = part
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(i, n)| i < n)
        .expect("FUZZ_PART is i/n with i < n, e.g. 0/2");
    let mut by_cost: Vec<&(&str, f64)> = TARGETS.iter().collect();
    by_cost.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut load = vec![0.0f64; n];
    for (name, cost) in by_cost {
        let lightest = (0..n)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]))
            .expect("n > 0");
        load[lightest] += cost;
        if *name == target {
            return lightest == i;
        }
    }
    panic!("target {target} is not listed in TARGETS");
}

/// The mutation sequence of one target: the seed mixed with the target's name (FNV-1a), so a
/// target's cases do not depend on which other targets run before it.
pub fn rng_for(target: &str) -> Rng {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in target.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Rng((seed() ^ hash) | 1)
}

pub fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

pub fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed)
}

/// Runs `reader` on `cases()` mutations of `seed_file`, each written to a fresh file `name`;
/// `None` when `target` is not in this process's part (`FUZZ_PART`).
pub fn fuzz_file(
    target: &'static str,
    seed_file: &Path,
    name: &str,
    text: bool,
    dir: &Path,
    reader: &dyn Fn(&Path) -> Result<(), String>,
) -> Option<Tally> {
    if !wanted(target) {
        return None;
    }
    let mut tally = Tally::new(target);
    let mut rng = rng_for(target);
    let original = std::fs::read(seed_file).expect("seed file");
    for case in 0..cases() {
        let bytes = mutate(&original, &mut rng, text);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write case");
        let failures = tally.crashes.len() + tally.hangs.len();
        tally.run(format!("{name} case {case}"), || reader(&path));
        if tally.crashes.len() + tally.hangs.len() > failures {
            save_crash(target, case, &bytes);
        }
    }
    Some(tally.finish())
}

/// With `FUZZ_SAVE_CRASHES=dir`, keeps a crashing or hanging input as `dir/<target> <case>` (to
/// reproduce it, or to make it a regression fixture).
pub fn save_crash(target: &str, case: usize, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("FUZZ_SAVE_CRASHES") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("crash directory");
        std::fs::write(dir.join(format!("{target} {case}")), bytes).expect("save crash");
    }
}

/// Prints the table of every target's outcomes, and writes it as JSON to `FUZZ_REPORT` when set.
pub fn report(done: &[Tally]) {
    println!(
        "{:<18} {:>6} {:>9} {:>8} {:>8} {:>6} {:>11} {:>9}",
        "target", "cases", "accepted", "refused", "crashes", "hangs", "slowest ms", "seconds"
    );
    let mut rows = Vec::new();
    for t in done {
        println!(
            "{:<18} {:>6} {:>9} {:>8} {:>8} {:>6} {:>11.1} {:>9.1}",
            t.name,
            t.cases,
            t.accepted,
            t.refused,
            t.crashes.len(),
            t.hangs.len(),
            t.slowest.as_secs_f64() * 1e3,
            t.seconds
        );
        let position = TARGETS.iter().position(|(name, _)| *name == t.name);
        rows.push(serde_json::json!({
            "target": t.name, "position": position, "cases": t.cases, "accepted": t.accepted, "refused": t.refused,
            "crashes": t.crashes, "hangs": t.hangs, "slowest_ms": t.slowest.as_secs_f64() * 1e3,
            "seconds": t.seconds,
        }));
    }
    if let Ok(path) = std::env::var("FUZZ_REPORT") {
        let report = serde_json::json!({
            "cases_per_target": cases(), "seed": seed(), "hang_threshold_s": HANG.as_secs(),
            "part": std::env::var("FUZZ_PART").unwrap_or_else(|_| "0/1".into()),
            "targets": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
