//! Helpers shared by the end-to-end tests: paths, Parquet writers, running the `sieve` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the repository, when present (CI and developer machines have it; a user's
/// fresh clone does not).
pub fn shared_dir() -> Option<PathBuf> {
    let dir = repo_root().join("../shared");
    dir.join("data").is_dir().then_some(dir)
}

/// The bundled sample corpus.
pub fn sample_corpus() -> PathBuf {
    repo_root().join("examples/sample/corpus.parquet")
}

/// The bundled bi-encoder.
pub fn embedder_model() -> PathBuf {
    repo_root().join("models/all-MiniLM-L6-v2")
}

/// A command running the `sieve` binary built for these tests.
pub fn sieve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sieve"))
}

/// Runs `sieve args...` and returns its output.
pub fn run_sieve(args: &[&str]) -> Output {
    sieve().args(args).output().expect("the sieve binary runs")
}

/// stdout and stderr as text.
pub fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes record batches to a Parquet file with the given row-group size.
pub fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize) {
    let schema = batches[0].schema();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let file = std::fs::File::create(path).expect("create parquet");
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write batch");
    }
    writer.close().expect("close parquet");
}

/// A batch of string columns; `None` cells are nulls.
pub fn string_batch(columns: &[(&str, Vec<Option<String>>)]) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, _)| Field::new(*name, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, values)| Arc::new(StringArray::from(values.clone())) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
}

/// `n` documents `doc-{start+i}` with distinct texts.
pub fn docs_batch(start: usize, n: usize) -> RecordBatch {
    let ids = (start..start + n)
        .map(|i| Some(format!("doc-{i}")))
        .collect();
    let texts = (start..start + n)
        .map(|i| Some(format!("document number {i} talks about topic {}", i % 17)))
        .collect();
    string_batch(&[("id", ids), ("text", texts)])
}

/// A vector column as `FixedSizeList<Float32>` (`fixed = true`) or `List<Float32>`.
pub fn vector_array(vectors: &[Option<Vec<f32>>], fixed: bool) -> ArrayRef {
    if fixed {
        let dim = vectors.iter().flatten().map(Vec::len).next().unwrap_or(1);
        let mut builder = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
        for v in vectors {
            match v {
                Some(v) => {
                    builder.values().append_slice(v);
                    builder.append(true);
                }
                None => {
                    builder.values().append_slice(&vec![0.0; dim]);
                    builder.append(false);
                }
            }
        }
        Arc::new(builder.finish())
    } else {
        let mut builder = ListBuilder::new(Float32Builder::new());
        for v in vectors {
            match v {
                Some(v) => {
                    builder.values().append_slice(v);
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        Arc::new(builder.finish())
    }
}

/// Documents with ids, texts and a vector column.
pub fn vector_batch(ids: &[String], vectors: &[Option<Vec<f32>>], fixed: bool) -> RecordBatch {
    let id_array: ArrayRef = Arc::new(StringArray::from(ids.to_vec()));
    let text_array: ArrayRef = Arc::new(StringArray::from(
        ids.iter()
            .map(|i| format!("text of {i}"))
            .collect::<Vec<_>>(),
    ));
    let vectors = vector_array(vectors, fixed);
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("emb", vectors.data_type().clone(), true),
    ]);
    RecordBatch::try_new(Arc::new(schema), vec![id_array, text_array, vectors]).expect("batch")
}

/// Deterministic pseudo-random unit vectors around `clusters` centres (like real embeddings,
/// which are clustered by topic), from a fixed seed.
pub fn clustered_unit_vectors(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // uniform in [-1, 1)
        (state >> 11) as f32 / (1u64 << 52) as f32 * 2.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let centre = &centres[i % clusters];
            let mut v: Vec<f32> = centre.iter().map(|c| c + 0.8 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// The sample corpus indexed once per test binary with `sieve index` (the index lives as long
/// as the process).
pub fn sample_index() -> &'static PathBuf {
    static INDEX: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &INDEX
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let out = dir.path().join("idx");
            let output = run_sieve(&[
                "index",
                sample_corpus().to_str().expect("utf-8 path"),
                "--out",
                out.to_str().expect("utf-8 path"),
            ]);
            let (stdout, stderr) = texts(&output);
            assert!(output.status.success(), "{stdout}\n{stderr}");
            assert!(stdout.contains("indexed 120 documents"), "{stdout}");
            (dir, out)
        })
        .1
}

/// `sieve search INDEX ARGS --json` on the bundled sample's index; -> the parsed response.
pub fn search_json(args: &[&str]) -> serde_json::Value {
    let index = sample_index().to_str().unwrap().to_string();
    let mut all = vec!["search", index.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    let output = run_sieve(&all);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_str(&stdout).expect("search --json prints one JSON document")
}

/// Runs `sieve ARGS`, expecting a clear failure (non-zero exit, no panic); -> its stderr.
pub fn failure(args: &[&str]) -> String {
    let output = run_sieve(args);
    let (_, stderr) = texts(&output);
    assert!(!output.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "no panics: {stderr}");
    stderr
}

/// The toy Matryoshka cross-encoder (a real ONNX graph; see
/// plugins/sieve-rerank-onnx/tests/fixtures/make_fixtures.py).
pub fn toy_matryoshka() -> String {
    repo_root()
        .join("plugins/sieve-rerank-onnx/tests/fixtures/matryoshka")
        .to_str()
        .unwrap()
        .to_string()
}

/// Every document `read_documents` yields from `files` under `mapping`, in order (batches of 1,024).
pub fn read_all(
    files: &[PathBuf],
    mapping: &sieve_index::ingest::ColumnMapping,
) -> Result<Vec<sieve_index::ingest::SourceDoc>, sieve_index::IndexError> {
    let mut docs = Vec::new();
    sieve_index::ingest::read_documents(files, mapping, 1024, &mut |_, batch| {
        docs.extend(batch);
        Ok(())
    })?;
    Ok(docs)
}

/// The default column mapping plus precomputed vectors in the column `emb`.
pub fn vector_mapping() -> sieve_index::ingest::ColumnMapping {
    sieve_index::ingest::ColumnMapping {
        vector: Some("emb".into()),
        ..Default::default()
    }
}
