//! Killing `sieve index` at any moment leaves the previous index (or none), never a broken one,
//! and the next build cleans up what the killed one left.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sieve_index::SieveIndex;

/// Writes `n` documents with 384-d precomputed vectors (so the build skips embedding and spends
/// its time reading, in BM25 and in HNSW: a wide window to kill it in).
fn corpus(path: &Path, n: usize, seed: u64) {
    corpus_with_ids(path, n, seed, "doc")
}

fn corpus_with_ids(path: &Path, n: usize, seed: u64, prefix: &str) {
    let vectors: Vec<Option<Vec<f32>>> = clustered_unit_vectors(n, 384, 50, seed)
        .into_iter()
        .map(Some)
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let batches: Vec<_> = ids
        .chunks(5_000)
        .zip(vectors.chunks(5_000))
        .map(|(i, v)| vector_batch(i, v, true))
        .collect();
    write_parquet(path, &batches, 1_000);
}

fn start_build(input: &Path, out: &Path) -> Child {
    start_index(&[], input, out)
}

fn start_append(input: &Path, out: &Path) -> Child {
    start_index(&["--append"], input, out)
}

fn start_index(extra: &[&str], input: &Path, out: &Path) -> Child {
    sieve()
        .arg("index")
        .args(extra)
        .args([
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--vector-col",
            "emb",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sieve index")
}

/// Kills the build after `after`; returns false if it had already finished.
fn kill_after(mut child: Child, after: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

fn staging_dirs(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".sieve-tmp-") || n.contains(".sieve-old-"))
        .collect()
}

#[test]
fn killed_builds_never_leave_a_broken_index() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.parquet");
    let small = dir.path().join("small.parquet");
    corpus(&big, 40_000, 1);
    corpus(&small, 300, 2);
    let out = dir.path().join("idx");

    // 1. No index yet: a killed build leaves none (only a hidden staging directory).
    assert!(
        kill_after(start_build(&big, &out), Duration::from_millis(2_500)),
        "build finished before it could be killed"
    );
    assert!(!out.exists(), "a killed first build must leave no index");
    assert_eq!(
        staging_dirs(dir.path()).len(),
        1,
        "the killed build's staging directory is hidden beside the target"
    );

    // 2. A complete build; it also removes the dead build's leftovers.
    let status = start_build(&small, &out).wait().unwrap();
    assert!(status.success());
    assert!(
        staging_dirs(dir.path()).is_empty(),
        "leftovers of killed builds are cleaned up"
    );
    let before = std::fs::read(out.join("manifest.json")).unwrap();

    // 3. Rebuilds killed at several moments keep the old index intact and usable.
    for millis in [300, 1_200, 2_500, 4_000] {
        let killed = kill_after(start_build(&big, &out), Duration::from_millis(millis));
        let index = SieveIndex::open(&out).expect("the old index still opens");
        if killed {
            assert_eq!(index.len(), 300, "killed after {millis} ms: old index kept");
            assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
            let probe = clustered_unit_vectors(300, 384, 50, 2);
            assert_eq!(
                index.dense.search(&probe[10], 1).unwrap().candidates[0].doc,
                10
            );
        } else {
            // Finished before the kill: then it is the complete new index.
            assert_eq!(index.len(), 40_000);
            return;
        }
    }
}

#[test]
fn killed_appends_leave_the_previous_generation_answering() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.parquet");
    let big = dir.path().join("big.parquet");
    corpus(&small, 300, 2);
    corpus_with_ids(&big, 40_000, 3, "new");
    let out = dir.path().join("idx");
    assert!(start_build(&small, &out).wait().unwrap().success());
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let probe = clustered_unit_vectors(300, 384, 50, 2);
    let answers = |index: &SieveIndex| -> Vec<u32> {
        probe
            .iter()
            .step_by(30)
            .map(|v| index.dense.search(v, 1).unwrap().candidates[0].doc)
            .collect()
    };
    let expected = answers(&SieveIndex::open(&out).unwrap());

    for millis in [200, 700, 1_500, 2_500, 4_000] {
        let killed = kill_after(start_append(&big, &out), Duration::from_millis(millis));
        let index = SieveIndex::open(&out).expect("the index still opens");
        if !killed {
            // Finished before the kill: then it is the complete next generation.
            assert_eq!(index.len(), 40_300);
            assert_eq!(index.manifest.generation(), 2);
            return;
        }
        assert_eq!(
            index.len(),
            300,
            "killed after {millis} ms: previous generation kept"
        );
        assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
        assert_eq!(answers(&index), expected, "killed after {millis} ms");
    }
    // A complete append afterwards cleans up what the killed ones left.
    assert!(start_append(&big, &out).wait().unwrap().success());
    let index = SieveIndex::open(&out).unwrap();
    assert_eq!(index.len(), 40_300);
    // Old documents keep their ordinals and vectors (exact search: HNSW over 40,300 may miss).
    let exact: Vec<u32> = probe
        .iter()
        .step_by(30)
        .map(|v| index.dense.exact_search(v, 1).unwrap().candidates[0].doc)
        .collect();
    assert_eq!(exact, expected, "old documents keep their answers");
    assert!(
        staging_dirs(dir.path()).is_empty(),
        "{:?}",
        staging_dirs(dir.path())
    );
}
