//! Parquet edge cases: every bad input gets an error naming file, row and column; good inputs
//! of every supported shape are read completely and in order.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use sieve_index::ingest::{ColumnMapping, expand_inputs};
use sieve_index::{BuildOptions, IndexBuilder, IndexError, NoProgress, SieveIndex};

fn mapping() -> ColumnMapping {
    ColumnMapping::default()
}

#[test]
fn null_id_is_rejected_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nulls.parquet");
    let batch = string_batch(&[
        ("id", vec![Some("a".into()), None, Some("c".into())]),
        (
            "text",
            vec![Some("x".into()), Some("y".into()), Some("z".into())],
        ),
    ]);
    write_parquet(&file, &[batch], 100);
    let err = read_all(std::slice::from_ref(&file), &mapping()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IndexError::BadValue { row: 1, .. }), "{msg}");
    assert!(
        msg.contains("nulls.parquet") && msg.contains("row 1") && msg.contains("`id`"),
        "{msg}"
    );
}

#[test]
fn null_text_and_title_are_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.parquet");
    let batch = string_batch(&[
        ("id", vec![Some("a".into()), Some("b".into())]),
        ("title", vec![None, Some("T".into())]),
        ("text", vec![Some("x".into()), None]),
    ]);
    write_parquet(&file, &[batch], 100);
    let docs = read_all(
        &[file],
        &ColumnMapping {
            title: Some("title".into()),
            ..mapping()
        },
    )
    .unwrap();
    assert_eq!((docs[0].title.as_str(), docs[0].text.as_str()), ("", "x"));
    assert_eq!((docs[1].title.as_str(), docs[1].text.as_str()), ("T", ""));
}

#[test]
fn wrong_column_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.parquet");
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Int64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![7])) as ArrayRef,
        ],
    )
    .unwrap();
    write_parquet(&file, &[batch], 100);
    let msg = read_all(&[file], &mapping()).unwrap_err().to_string();
    assert!(
        msg.contains("types.parquet") && msg.contains("`text`") && msg.contains("Int64"),
        "{msg}"
    );
}

#[test]
fn integer_ids_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ints.parquet");
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![42, 7])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
        ],
    )
    .unwrap();
    write_parquet(&file, &[batch], 100);
    let ids: Vec<String> = read_all(&[file], &mapping())
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["42", "7"]);
}

#[test]
fn missing_column_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cols.parquet");
    write_parquet(&file, &[docs_batch(0, 3)], 100);
    let msg = read_all(
        &[file],
        &ColumnMapping {
            text: "body".into(),
            ..mapping()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("cols.parquet")
            && msg.contains("`body` not found")
            && msg.contains("id, text"),
        "{msg}"
    );
}

#[test]
fn many_row_groups_and_files_stream_in_order_with_file_relative_rows() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.parquet");
    let second = dir.path().join("b.parquet");
    // 10,000 rows in row groups of 250, written as several batches.
    let batches: Vec<RecordBatch> = (0..10).map(|i| docs_batch(i * 1000, 1000)).collect();
    write_parquet(&first, &batches, 250);
    let meta =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&first).unwrap())
            .unwrap();
    assert_eq!(
        parquet::file::reader::FileReader::metadata(&meta).num_row_groups(),
        40
    );
    write_parquet(&second, &[docs_batch(10_000, 5)], 2);

    let files = expand_inputs(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(files, vec![first.clone(), second.clone()]);
    let docs = read_all(&files, &mapping()).unwrap();
    assert_eq!(docs.len(), 10_005);
    assert!(
        docs.iter()
            .enumerate()
            .all(|(i, d)| d.id == format!("doc-{i}"))
    );
    assert_eq!(docs[10_003].row, 3, "rows are numbered within their file");

    // A null deep inside the file is reported at its exact row.
    let mut ids: Vec<Option<String>> = (0..10_000).map(|i| Some(format!("d{i}"))).collect();
    ids[7_777] = None;
    let texts = (0..10_000).map(|_| Some("t".to_string())).collect();
    let bad = dir.path().join("bad.parquet");
    write_parquet(&bad, &[string_batch(&[("id", ids), ("text", texts)])], 333);
    let msg = read_all(&[bad], &mapping()).unwrap_err().to_string();
    assert!(msg.contains("row 7777"), "{msg}");
}

#[test]
fn malformed_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage.parquet");
    std::fs::write(&file, b"this is not parquet at all, just bytes").unwrap();
    let msg = read_all(&[file], &mapping()).unwrap_err().to_string();
    assert!(
        msg.contains("garbage.parquet") && msg.contains("not a valid Parquet file"),
        "{msg}"
    );

    let missing = dir.path().join("nope.parquet");
    let msg = expand_inputs(&[missing]).unwrap_err().to_string();
    assert!(msg.contains("nope.parquet"), "{msg}");
}

/// A mutation of the sample corpus (found by tests/fuzz.rs) on which the Parquet reader panics
/// ("offset + len out of bounds" decoding definition levels) instead of returning an error.
#[test]
fn a_file_the_parquet_reader_panics_on_is_a_clear_error_without_a_panic() {
    let file = repo_root().join("tests/fixtures/damaged-definition-levels.parquet");
    let mapping = ColumnMapping {
        title: Some("title".into()),
        ..mapping()
    };
    let msg = read_all(std::slice::from_ref(&file), &mapping)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("damaged-definition-levels.parquet") && msg.contains("the file is damaged"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    let file_arg = file.to_string_lossy();
    let output = run_sieve(&[
        "index",
        &file_arg,
        "--out",
        &out.to_string_lossy(),
        "--title-col",
        "title",
    ]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the file is damaged"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "no index (partial or whole) is left behind");
}

/// A mutation of the sample corpus (found by tests/fuzz.rs) whose page header has a damaged
/// Thrift list length: the Parquet reader skipped it with one `read` per element past the end
/// of the file (4 million reads, 25 s). It is refused at the first read past the end.
#[test]
fn a_page_header_reaching_past_the_end_is_refused_at_once() {
    let file = repo_root().join("tests/fixtures/page-header-list-past-end.parquet");
    let mapping = ColumnMapping {
        title: Some("title".into()),
        ..mapping()
    };
    let msg = read_all(std::slice::from_ref(&file), &mapping)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("page-header-list-past-end.parquet") && msg.contains("past the end"),
        "{msg}"
    );
}

fn build(files: &[PathBuf], out: &Path, mapping: ColumnMapping) -> Result<(), IndexError> {
    let mut options = BuildOptions::new(embedder_model());
    options.mapping = mapping;
    IndexBuilder::new(options)
        .build(files, out, &NoProgress)
        .map(|_| ())
}

#[test]
fn empty_files_are_skipped_but_an_empty_corpus_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.parquet");
    write_parquet(&empty, &[docs_batch(0, 0)], 10);
    assert!(
        read_all(std::slice::from_ref(&empty), &mapping())
            .unwrap()
            .is_empty()
    );

    let out = dir.path().join("idx");
    let msg = build(std::slice::from_ref(&empty), &out, mapping())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no documents") && msg.contains("empty.parquet"),
        "{msg}"
    );
    assert!(!out.exists(), "a failed build leaves no index behind");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no staging directory left: {leftovers:?}"
    );

    let full = dir.path().join("full.parquet");
    write_parquet(&full, &[docs_batch(0, 5)], 10);
    build(&[empty, full], &out, mapping()).unwrap();
    assert_eq!(SieveIndex::open(&out).unwrap().len(), 5);
}

#[test]
fn duplicate_ids_across_files_are_rejected_naming_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    let b = dir.path().join("b.parquet");
    write_parquet(&a, &[docs_batch(0, 10)], 10);
    write_parquet(&b, &[docs_batch(5, 2)], 10);
    let out = dir.path().join("idx");
    let msg = build(&[a, b], &out, mapping()).unwrap_err().to_string();
    assert!(
        msg.contains("duplicate id `doc-5`")
            && msg.contains("b.parquet: row 0")
            && msg.contains("a.parquet row 5"),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn precomputed_vectors_must_match_the_query_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
    let small: Vec<Option<Vec<f32>>> = (0..4).map(|i| Some(vec![1.0, i as f32])).collect();
    let file = dir.path().join("dim2.parquet");
    write_parquet(&file, &[vector_batch(&ids, &small, true)], 10);
    let out = dir.path().join("idx");
    let msg = build(&[file], &out, vector_mapping())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2 dimensions") && msg.contains("384"), "{msg}");

    // 384-d vectors from a column are indexed as they are (after normalisation).
    let vectors: Vec<Option<Vec<f32>>> = clustered_unit_vectors(50, 384, 5, 7)
        .into_iter()
        .map(Some)
        .collect();
    let ids: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let file = dir.path().join("dim384.parquet");
    write_parquet(&file, &[vector_batch(&ids, &vectors, false)], 10);
    build(&[file], &out, vector_mapping()).unwrap();
    let index = SieveIndex::open(&out).unwrap();
    assert_eq!(index.manifest.dense.vectors_from, "column:emb");
    let top = index
        .dense
        .search(vectors[17].as_ref().unwrap(), 1)
        .unwrap();
    assert_eq!(top.candidates[0].doc, 17);
}

/// What pandas writes for a `category` column: `Dictionary(Int8, LargeUtf8)`.
fn category(values: &[&str]) -> ArrayRef {
    use arrow_array::types::Int8Type;
    use arrow_array::{DictionaryArray, Int8Array, LargeStringArray};
    let mut distinct: Vec<&str> = values.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let keys: Vec<i8> = values
        .iter()
        .map(|v| distinct.iter().position(|d| d == v).unwrap() as i8)
        .collect();
    Arc::new(
        DictionaryArray::<Int8Type>::try_new(
            Int8Array::from(keys),
            Arc::new(LargeStringArray::from(distinct)),
        )
        .unwrap(),
    )
}

#[test]
fn dictionary_encoded_ids_texts_and_titles_read_as_their_values() {
    use arrow_array::types::Int32Type;
    use arrow_array::{DictionaryArray, Int32Array};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("category.parquet");
    // Ids dictionary-encoded over Int64 values (pyarrow's `dictionary_encode()` of an id column),
    // text and title as pandas `category` columns, one null title.
    let ids: ArrayRef = Arc::new(
        DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![2, 0, 1]),
            Arc::new(Int64Array::from(vec![10, 11, 12])),
        )
        .unwrap(),
    );
    let texts = category(&["shared body", "other body", "shared body"]);
    let titles: ArrayRef = {
        use arrow_array::types::Int8Type;
        use arrow_array::{DictionaryArray, Int8Array, LargeStringArray};
        Arc::new(
            DictionaryArray::<Int8Type>::try_new(
                Int8Array::from(vec![Some(0), None, Some(0)]),
                Arc::new(LargeStringArray::from(vec!["T"])),
            )
            .unwrap(),
        )
    };
    let schema = Schema::new(vec![
        Field::new("id", ids.data_type().clone(), false),
        Field::new("text", texts.data_type().clone(), false),
        Field::new("title", titles.data_type().clone(), true),
    ]);
    let batch = RecordBatch::try_new(Arc::new(schema), vec![ids, texts, titles]).unwrap();
    write_parquet(&file, &[batch], 2);
    let docs = read_all(
        &[file],
        &ColumnMapping {
            title: Some("title".into()),
            ..mapping()
        },
    )
    .unwrap();
    let got: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| (d.id.as_str(), d.title.as_str(), d.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("12", "T", "shared body"),
            ("10", "", "other body"),
            ("11", "T", "shared body")
        ]
    );
}

#[test]
fn partitioned_directories_are_read_recursively_skipping_writer_markers() {
    let dir = tempfile::tempdir().unwrap();
    // pyarrow.dataset / Spark / DuckDB layout: key=value folders, marker files beside them.
    for (part, start) in [("lang=en", 0), ("lang=fr", 3)] {
        let folder = dir.path().join(part);
        std::fs::create_dir_all(&folder).unwrap();
        write_parquet(&folder.join("part-0.parquet"), &[docs_batch(start, 3)], 10);
    }
    std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
    std::fs::create_dir_all(dir.path().join(".spark-staging")).unwrap();
    std::fs::write(
        dir.path().join(".spark-staging").join("x.parquet"),
        b"not parquet",
    )
    .unwrap();
    let files = expand_inputs(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let docs = read_all(&files, &mapping()).unwrap();
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["doc-0", "doc-1", "doc-2", "doc-3", "doc-4", "doc-5"]);
}
