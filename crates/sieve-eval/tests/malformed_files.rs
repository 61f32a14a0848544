//! Loading real files: malformed lines must produce errors that name the
//! file path and the 1-based line number; missing files name the path.

use std::fs;
use std::path::PathBuf;

use sieve_eval::{EvalError, Qrels, Run, load_beir_queries};

/// Writes `contents` to a fresh file under Cargo's per-target temp dir.
fn write_file(name: &str, contents: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sieve-eval-malformed");
    fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(name);
    fs::write(&path, contents).expect("write temp file");
    path
}

/// Asserts that `err` is a located error for `path` at `line`.
fn assert_located(err: &EvalError, path: &std::path::Path, line: usize) {
    let prefix = format!("{}:{line}: ", path.display());
    assert!(
        err.to_string().starts_with(&prefix),
        "expected prefix {prefix:?}, got {err}"
    );
    let (EvalError::Parse {
        path: p, line: l, ..
    }
    | EvalError::Json {
        path: p, line: l, ..
    }
    | EvalError::Read {
        path: p, line: l, ..
    }) = err
    else {
        panic!("expected a located error, got {err:?}");
    };
    assert_eq!((p.as_path(), *l), (path, line));
}

#[test]
fn beir_qrels_bad_score_names_file_and_line() {
    let path = write_file(
        "beir-bad-score.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n\nq1\td2\thigh\n",
    );
    let err = Qrels::load_beir(&path).expect_err("malformed");
    assert_located(&err, &path, 4);
}

#[test]
fn beir_qrels_missing_column_names_file_and_line() {
    let path = write_file("beir-short.tsv", "q1\td1\t1\nq1\td2\n");
    let err = Qrels::load_beir(&path).expect_err("malformed");
    assert_located(&err, &path, 2);
}

#[test]
fn trec_qrels_bad_line_names_file_and_line() {
    let path = write_file("trec.qrels", "1 0 d1 1\n1 0 d2 1 extra\n");
    let err = Qrels::load_trec(&path).expect_err("malformed");
    assert_located(&err, &path, 2);
}

#[test]
fn trec_run_bad_score_names_file_and_line() {
    let path = write_file(
        "bad.trec",
        "q1 Q0 d1 1 1.5 t\nq1 Q0 d2 2 1.4 t\nq1 Q0 d3 3 abc t\n",
    );
    let err = Run::load_trec(&path).expect_err("malformed");
    assert_located(&err, &path, 3);
}

#[test]
fn queries_bad_json_names_file_and_line() {
    let path = write_file(
        "queries.jsonl",
        "{\"_id\": 1, \"text\": \"ok\"}\n{\"_id\": 2, \"text\": }\n",
    );
    let err = load_beir_queries(&path).expect_err("malformed");
    assert_located(&err, &path, 2);
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sieve-eval-malformed");
    fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join("latin1.tsv");
    fs::write(&path, b"q1\td1\t1\nq1\td\xe9\t1\n").expect("write");
    let err = Qrels::load_beir(&path).expect_err("malformed");
    assert_located(&err, &path, 2);
}

#[test]
fn missing_file_names_path() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sieve-eval-does-not-exist.tsv");
    let err = Qrels::load_beir(&path).expect_err("missing");
    assert!(matches!(err, EvalError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn valid_files_round_trip() {
    let qrels = write_file("ok.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\n");
    let qrels = Qrels::load_beir(&qrels).expect("valid");
    assert_eq!(qrels.relevance("q1", "d1"), Some(2));

    let mut run = Run::new();
    run.push("q1", "d1", 0.75);
    run.push("q1", "d2", 0.5);
    let mut buf = Vec::new();
    sieve_eval::write_trec(&run, "sieve", &mut buf).expect("write");
    let path = write_file("ok.trec", &String::from_utf8(buf).expect("utf8"));
    assert_eq!(Run::load_trec(&path).expect("valid"), run);
}
