//! Vector columns in Parquet: plain, large and fixed-size lists of float16, float32 and float64
//! read the same as f32; ragged, null, non-finite, out-of-range and wrongly typed vectors are
//! refused naming their row.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use sieve_index::ingest::ColumnMapping;

#[test]
fn list_and_fixed_size_list_vectors_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    let vectors: Vec<Option<Vec<f32>>> = (0..3).map(|i| Some(vec![i as f32, 1.0, 2.0])).collect();
    let mut read = Vec::new();
    for fixed in [true, false] {
        let file = dir.path().join(format!("vec-{fixed}.parquet"));
        write_parquet(&file, &[vector_batch(&ids, &vectors, fixed)], 2);
        let docs = read_all(&[file], &vector_mapping()).unwrap();
        read.push(
            docs.into_iter()
                .map(|d| d.vector.unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(read[0], read[1]);
    assert_eq!(read[0][2], vec![2.0, 1.0, 2.0]);
}

#[test]
fn ragged_and_null_vectors_are_rejected_with_their_row() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
    let ragged = vec![
        Some(vec![1.0, 2.0]),
        Some(vec![1.0, 2.0]),
        Some(vec![1.0, 2.0, 3.0]),
        Some(vec![1.0, 2.0]),
    ];
    let file = dir.path().join("ragged.parquet");
    write_parquet(&file, &[vector_batch(&ids, &ragged, false)], 10);
    let msg = read_all(&[file], &vector_mapping())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ragged.parquet")
            && msg.contains("row 2")
            && msg.contains("`emb`")
            && msg.contains("ragged"),
        "{msg}"
    );

    let nulls = vec![
        Some(vec![1.0, 2.0]),
        None,
        Some(vec![1.0, 2.0]),
        Some(vec![0.5, 2.0]),
    ];
    for fixed in [true, false] {
        let file = dir.path().join(format!("null-{fixed}.parquet"));
        write_parquet(&file, &[vector_batch(&ids, &nulls, fixed)], 10);
        let msg = read_all(&[file], &vector_mapping())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("row 1") && msg.contains("null"), "{msg}");
    }
}

#[test]
fn vector_column_of_wrong_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("novec.parquet");
    write_parquet(&file, &[docs_batch(0, 2)], 10);
    let msg = read_all(
        &[file],
        &ColumnMapping {
            vector: Some("text".into()),
            ..ColumnMapping::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("`text`") && msg.contains("List") && msg.contains("Float32"),
        "{msg}"
    );
}

/// One vector column of item type `T` as a plain, large or fixed-size list.
fn typed_lists<T: arrow_array::ArrowPrimitiveType>(
    vectors: &[Vec<T::Native>],
    kind: &str,
) -> ArrayRef {
    use arrow_array::{FixedSizeListArray, LargeListArray, ListArray};
    let rows = vectors
        .iter()
        .map(|v| Some(v.iter().map(|x| Some(*x)).collect::<Vec<_>>()));
    match kind {
        "fixed" => Arc::new(FixedSizeListArray::from_iter_primitive::<T, _, _>(
            rows,
            vectors[0].len() as i32,
        )),
        "large" => Arc::new(LargeListArray::from_iter_primitive::<T, _, _>(rows)),
        _ => Arc::new(ListArray::from_iter_primitive::<T, _, _>(rows)),
    }
}

fn write_vectors(file: &Path, vectors: ArrayRef) {
    let n = vectors.len();
    let ids: ArrayRef = Arc::new(StringArray::from(
        (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>(),
    ));
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["t"; n]));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("emb", vectors.data_type().clone(), true),
    ]);
    let batch = RecordBatch::try_new(Arc::new(schema), vec![ids, texts, vectors]).unwrap();
    write_parquet(file, &[batch], 2);
}

#[test]
fn float16_and_float64_vectors_of_every_list_kind_read_as_f32() {
    use arrow_array::types::{Float16Type, Float32Type, Float64Type};
    let dir = tempfile::tempdir().unwrap();
    // Values exact in f16, so every variant must read back identically.
    let vectors: Vec<Vec<f64>> = (0..5)
        .map(|i| vec![i as f64 * 0.5, -1.0, 0.25, 1024.0])
        .collect();
    let expected: Vec<Vec<f32>> = vectors
        .iter()
        .map(|v| v.iter().map(|&x| x as f32).collect())
        .collect();
    for kind in ["list", "large", "fixed"] {
        let variants: [(&str, ArrayRef); 3] = [
            (
                "f16",
                typed_lists::<Float16Type>(
                    &vectors
                        .iter()
                        .map(|v| v.iter().map(|&x| half::f16::from_f64(x)).collect())
                        .collect::<Vec<_>>(),
                    kind,
                ),
            ),
            (
                "f32",
                typed_lists::<Float32Type>(
                    &vectors
                        .iter()
                        .map(|v| v.iter().map(|&x| x as f32).collect())
                        .collect::<Vec<_>>(),
                    kind,
                ),
            ),
            ("f64", typed_lists::<Float64Type>(&vectors, kind)),
        ];
        for (name, array) in variants {
            let file = dir.path().join(format!("{kind}-{name}.parquet"));
            write_vectors(&file, array);
            let docs = read_all(&[file], &vector_mapping())
                .unwrap_or_else(|e| panic!("{kind} of {name}: {e}"));
            let got: Vec<Vec<f32>> = docs.into_iter().map(|d| d.vector.unwrap()).collect();
            assert_eq!(got, expected, "{kind} of {name}");
        }
    }
}

#[test]
fn float64_vectors_beyond_f32_or_not_finite_are_refused_with_their_row() {
    use arrow_array::types::Float64Type;
    let dir = tempfile::tempdir().unwrap();
    for (bad, says) in [
        (1e300, "32-bit float"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "infinite"),
    ] {
        let file = dir.path().join("bad.parquet");
        let vectors = vec![vec![0.1, 0.2], vec![0.3, bad], vec![0.5, 0.6]];
        write_vectors(&file, typed_lists::<Float64Type>(&vectors, "list"));
        let msg = read_all(&[file], &vector_mapping())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("row 1") && msg.contains("`emb`") && msg.contains(says),
            "{msg}"
        );
    }
}
