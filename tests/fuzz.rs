//! Fuzzing every reader sieve exposes to untrusted input, on stable Rust.
//!
//! Each target takes a real seed file (the sample corpus, its index, the bundled models' JSON and
//! codec files, qrels and runs), mutates it with a deterministic generator (bit flips, random
//! overwrites, truncation, insertion, deletion and duplication of byte ranges, and for text
//! targets line shuffles and hostile strings: control characters, invalid UTF-8, huge numbers,
//! megabyte lines) and feeds it to the reader. A case ends in one of: accepted, refused with an
//! error (both fine), a panic (a *crash*: caught and counted) or more than [`HANG`] of wall
//! time (a *hang*). The test fails on any crash or hang and prints, per target, the cases tried,
//! outcomes and the slowest case.
//!
//! `FUZZ_CASES` sets the cases per target (default 40, what CI runs); `FUZZ_SEED` the seed (each
//! target mixes in its name, so its cases are the same whichever targets run with it);
//! `FUZZ_PART=i/n` runs the i-th of n parts, `FUZZ_TARGET=name` one target;
//! `FUZZ_SAVE_CRASHES=dir` keeps crashing and hanging inputs; `FUZZ_REPORT=path.json` writes the table as
//! JSON. `scripts/fuzz.sh N` runs it in release, one part per core.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use sieve::{Mode, SearchRequest, Sieve};
use sieve_index::SieveIndex;
use sieve_index::ingest::{ColumnMapping, read_documents};

/// A case slower than this counts as a hang.
const HANG: Duration = Duration::from_secs(10);

/// xorshift64*: deterministic, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const HOSTILE: &[&str] = &[
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
fn mutate(seed: &[u8], rng: &mut Rng, text: bool) -> Vec<u8> {
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
struct Tally {
    name: &'static str,
    started: Instant,
    seconds: f64,
    cases: usize,
    accepted: usize,
    refused: usize,
    crashes: Vec<String>,
    hangs: Vec<String>,
    slowest: Duration,
}

impl Tally {
    fn new(name: &'static str) -> Self {
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
    fn finish(mut self) -> Self {
        self.seconds = self.started.elapsed().as_secs_f64();
        self
    }

    fn run(&mut self, label: String, case: impl FnOnce() -> Result<(), String>) {
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
const TARGETS: &[(&str, f64)] = &[
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
fn wanted(target: &str) -> bool {
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
fn rng_for(target: &str) -> Rng {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in target.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Rng((seed() ^ hash) | 1)
}

fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed)
}

/// Runs `reader` on `cases()` mutations of `seed_file`, each written to a fresh file `name`;
/// `None` when `target` is not in this process's part (`FUZZ_PART`).
fn fuzz_file(
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
fn save_crash(target: &str, case: usize, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("FUZZ_SAVE_CRASHES") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("crash directory");
        std::fs::write(dir.join(format!("{target} {case}")), bytes).expect("save crash");
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            out.extend(files_below(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out.sort();
    out
}

fn search_all_modes(engine: &Sieve, query: &str) -> Result<(), String> {
    for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
        let mut request = SearchRequest::new(query);
        request.mode = mode;
        engine.search(&request).map_err(err)?;
    }
    Ok(())
}

#[test]
fn every_reader_survives_mutated_input() {
    let root = repo_root();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut done: Vec<Tally> = Vec::new();
    // As `sieve` does: a reader panic that sieve contains (and reports as an error) is not
    // printed, so every panic message in the output is a crash.
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !sieve_core::contain::containing_panic() {
            report_panic(info);
        }
    }));

    // Parquet bytes: the sample corpus.
    let mapping = ColumnMapping {
        title: Some("title".into()),
        ..ColumnMapping::default()
    };
    done.extend(fuzz_file(
        "parquet",
        &sample_corpus(),
        "corpus.parquet",
        false,
        dir,
        &|path| {
            read_documents(&[path.to_path_buf()], &mapping, 64, &mut |_, _| Ok(())).map_err(err)
        },
    ));

    // JSONL corpora (BEIR layout) -> Parquet.
    let out = dir.join("converted.parquet");
    done.extend(fuzz_file(
        "corpus jsonl",
        &root.join("examples/sample/sample.jsonl"),
        "corpus.jsonl",
        true,
        dir,
        &|path| {
            sieve_index::jsonl::beir_jsonl_to_parquet(path, &out)
                .map(|_| ())
                .map_err(err)
        },
    ));

    // Queries, qrels (BEIR tsv and TREC), runs (TREC).
    done.extend(fuzz_file(
        "queries jsonl",
        &root.join("examples/sample/queries.jsonl"),
        "queries.jsonl",
        true,
        dir,
        &|path| sieve_eval::load_beir_queries(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "qrels tsv",
        &root.join("examples/sample/qrels/test.tsv"),
        "qrels.tsv",
        true,
        dir,
        &|path| sieve_eval::Qrels::load_beir(path).map(|_| ()).map_err(err),
    ));
    let trec_run = dir.join("seed.trec");
    let qrels_trec = dir.join("seed.qrels");
    {
        let mut run = String::new();
        let mut qrels = String::new();
        for q in 1..=6 {
            for r in 1..=20 {
                run.push_str(&format!(
                    "q{q} Q0 doc-{r:03} {r} {} sieve\n",
                    1.0 / r as f64
                ));
                if r % 4 == 0 {
                    qrels.push_str(&format!("q{q} 0 doc-{r:03} {}\n", r % 3));
                }
            }
        }
        std::fs::write(&trec_run, run).unwrap();
        std::fs::write(&qrels_trec, qrels).unwrap();
    }
    done.extend(fuzz_file(
        "run trec",
        &trec_run,
        "run.trec",
        true,
        dir,
        &|path| sieve_eval::Run::load_trec(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "qrels trec",
        &qrels_trec,
        "qrels.trec",
        true,
        dir,
        &|path| sieve_eval::Qrels::load_trec(path).map(|_| ()).map_err(err),
    ));

    // Model files: late_joined.json, the state codec, tokenizer.json.
    let lj = root.join("models/sieve-ce-minilm-l6-lj");
    done.extend(fuzz_file(
        "late_joined.json",
        &lj.join("late_joined.json"),
        "late_joined.json",
        true,
        dir,
        &|path| {
            sieve_rerank_onnx::LateJoinedManifest::read(path)
                .map(|_| ())
                .map_err(err)
        },
    ));
    done.extend(fuzz_file(
        "state_codec.bin",
        &lj.join("state_codec.bin"),
        "state_codec.bin",
        false,
        dir,
        &|path| sieve_embed::StateCodec::open(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "tokenizer.json",
        &embedder_model().join("tokenizer.json"),
        "tokenizer.json",
        true,
        dir,
        &|path| {
            let tokenizer = sieve_embed::load_tokenizer(path, 256).map_err(err)?;
            tokenizer
                .encode("how do statins lower cholesterol", true)
                .map(|_| ())
                .map_err(err)
        },
    ));

    // Truncated ONNX graphs (the bi-encoder), a tenth of the cases: each writes a prefix of
    // the 35 MB file and opens it.
    if wanted("onnx truncated") {
        let mut tally = Tally::new("onnx truncated");
        let mut rng = rng_for(tally.name);
        let onnx = std::fs::read(embedder_model().join("onnx/model.onnx")).unwrap();
        let model = dir.join("model");
        copy_dir(&embedder_model(), &model);
        for case in 0..(cases() / 10).max(3) {
            let mut bytes = onnx[..rng.below(onnx.len())].to_vec();
            if case % 2 == 1 && !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] ^= 0x55;
            }
            std::fs::write(model.join("onnx/model.onnx"), &bytes).unwrap();
            tally.run(format!("onnx case {case}"), || {
                sieve_embed::BiEncoder::open(&model, sieve_embed::EmbedderConfig::default())
                    .map(|_| ())
                    .map_err(err)
            });
        }
        done.push(tally.finish());
    }

    // Index directories: one file removed, truncated or bit-flipped, then opened and searched.
    let index = sample_index();
    if wanted("index dir") {
        let mut tally = Tally::new("index dir");
        let mut rng = rng_for(tally.name);
        let files: Vec<PathBuf> = files_below(index)
            .into_iter()
            .map(|f| f.strip_prefix(index).unwrap().to_path_buf())
            .collect();
        for case in 0..cases() {
            let copy = dir.join(format!("idx-{case}"));
            copy_dir(index, &copy);
            let victim = copy.join(&files[rng.below(files.len())]);
            let bytes = std::fs::read(&victim).unwrap();
            match rng.below(3) {
                0 => std::fs::remove_file(&victim).unwrap(),
                1 => std::fs::write(&victim, &bytes[..rng.below(bytes.len().max(1))]).unwrap(),
                _ => std::fs::write(&victim, mutate(&bytes, &mut rng, false)).unwrap(),
            }
            let label = format!(
                "index case {case} ({})",
                victim.strip_prefix(&copy).unwrap().display()
            );
            tally.run(label, || {
                let engine = Sieve::open(&copy).map_err(err)?;
                search_all_modes(&engine, "how do statins lower cholesterol")?;
                let opened = SieveIndex::open(&copy).map_err(err)?;
                for ordinal in 0..opened.len() as u32 {
                    opened.docs.get(ordinal).map_err(err)?;
                    if let Some(states) = &opened.states {
                        states.get(ordinal).map_err(err)?;
                    }
                }
                Ok(())
            });
            let _ = std::fs::remove_dir_all(&copy);
        }
        done.push(tally.finish());
    }

    // Query strings against the real sample index.
    if wanted("query string") {
        let engine = Sieve::open(index).unwrap();
        let mut tally = Tally::new("query string");
        let mut rng = rng_for(tally.name);
        let seeds = std::fs::read_to_string(root.join("examples/sample/queries.jsonl")).unwrap();
        for case in 0..cases() {
            let base = seeds.lines().nth(case % 24).unwrap_or("q").as_bytes();
            let query = match case % 5 {
                0 => "the of and to a in is it".to_string(),
                1 => "x".repeat(1 << 20),
                _ => String::from_utf8_lossy(&mutate(base, &mut rng, true)).into_owned(),
            };
            tally.run(format!("query case {case} ({} bytes)", query.len()), || {
                search_all_modes(&engine, &query)
            });
        }
        done.push(tally.finish());
    }

    // HTTP bodies per route, through `sieve serve`'s router in process (the bundled reranker and
    // the sample index; default limits). A panic or a 500 is a crash; 4xx is a refusal.
    done.extend(fuzz_http_bodies(index));

    // The table, and the JSON report when asked.
    println!(
        "{:<18} {:>6} {:>9} {:>8} {:>8} {:>6} {:>11} {:>9}",
        "target", "cases", "accepted", "refused", "crashes", "hangs", "slowest ms", "seconds"
    );
    let mut rows = Vec::new();
    for t in &done {
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
    let crashes: Vec<&String> = done.iter().flat_map(|t| &t.crashes).collect();
    let hangs: Vec<&String> = done.iter().flat_map(|t| &t.hangs).collect();
    assert!(crashes.is_empty(), "crashes: {crashes:#?}");
    assert!(hangs.is_empty(), "hangs: {hangs:#?}");
}

/// One target per scoring route: mutations of a valid body of that route's protocol.
fn fuzz_http_bodies(index_dir: &Path) -> Vec<Tally> {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    if !TARGETS
        .iter()
        .any(|(t, _)| t.starts_with("http ") && wanted(t))
    {
        return Vec::new();
    }

    let reranker_dir = repo_root().join("models/sieve-ce-minilm-l6-lj");
    let encoder = std::sync::Arc::new(
        sieve_rerank_onnx::CrossEncoder::open(
            &reranker_dir,
            sieve_rerank_onnx::CrossEncoderConfig::default(),
        )
        .expect("bundled reranker"),
    );
    let tokenizer = encoder.tokenizer_path().to_path_buf();
    let reranker: std::sync::Arc<dyn sieve::Reranker> = encoder;
    let model = sieve_serve::ModelInfo::new("sieve-ce", reranker.clone(), &tokenizer, 256)
        .expect("model info");
    let index = std::sync::Arc::new(
        Sieve::open(index_dir)
            .expect("sample index")
            .with_reranker(reranker),
    );
    let server = sieve_serve::Server::new(sieve_serve::ServeConfig::default(), model, Some(index))
        .expect("server");
    let router = server.router();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let docs = r#"["Statins lower LDL cholesterol.", "Volcanoes erupt.", "Sleep and memory."]"#;
    let routes: [(&'static str, &str, String); 5] = [
        (
            "http /v1/rerank",
            "/v1/rerank",
            format!(
                r#"{{"query":"statins","documents":{docs},"top_n":2,"return_documents":true}}"#
            ),
        ),
        (
            "http /v2/rerank",
            "/v2/rerank",
            format!(r#"{{"model":"m","query":"statins","documents":{docs},"top_n":2}}"#),
        ),
        (
            "http /rerank (TEI)",
            "/rerank",
            format!(
                r#"{{"query":"statins","texts":{docs},"raw_scores":false,"return_text":true,"truncate":true}}"#
            ),
        ),
        (
            "http /weaviate",
            "/weaviate/rerank",
            format!(r#"{{"query":"statins","documents":{docs}}}"#),
        ),
        (
            "http /search",
            "/search",
            r#"{"query":"how do statins lower cholesterol","k":5,"rerank":true,"budget":"fast"}"#
                .to_string(),
        ),
    ];
    let mut tallies = Vec::new();
    for (name, route, seed_body) in routes.into_iter().filter(|(name, _, _)| wanted(name)) {
        let mut tally = Tally::new(name);
        let mut rng = rng_for(name);
        for case in 0..cases() {
            let body = mutate(seed_body.as_bytes(), &mut rng, true);
            let request = Request::post(route)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request");
            tally.run(format!("{route} case {case}"), || {
                let response = runtime
                    .block_on(router.clone().oneshot(request))
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let bytes = runtime
                    .block_on(axum::body::to_bytes(response.into_body(), 1 << 26))
                    .map_err(|e| e.to_string())?;
                if status.is_server_error() && status.as_u16() != 503 && status.as_u16() != 504 {
                    panic!("{status}: {}", String::from_utf8_lossy(&bytes));
                }
                if status.is_success() {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map(|_| ())
                        .map_err(|e| format!("2xx with a body that is not JSON: {e}"))
                } else {
                    Err(format!("{status}"))
                }
            });
        }
        tallies.push(tally.finish());
    }
    tallies
}
