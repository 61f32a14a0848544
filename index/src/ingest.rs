//! Streaming Parquet ingestion with column mapping and validation.
//!
//! [`read_documents`] reads one or more Parquet files batch by batch (only the mapped columns),
//! checks types and values, and hands [`SourceDoc`]s to a callback, so memory stays bounded by one
//! record batch. Errors name the file, the 0-based row within it and the column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::IndexError;

/// Which Parquet columns play which role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMapping {
    /// Unique document id (string or integer column).
    pub id: String,
    /// Document body (string column; nulls read as empty).
    pub text: String,
    /// Optional title (string column; nulls read as empty).
    pub title: Option<String>,
    /// Optional precomputed embeddings: `FixedSizeList<Float32>` or `List<Float32>`.
    pub vector: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            id: "id".into(),
            text: "text".into(),
            title: None,
            vector: None,
        }
    }
}

/// One document as read from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    /// The user's id.
    pub id: String,
    /// Title, empty when absent.
    pub title: String,
    /// Body text.
    pub text: String,
    /// The precomputed embedding, when a vector column is mapped.
    pub vector: Option<Vec<f32>>,
    /// 0-based row within its file.
    pub row: u64,
}

/// Expands input paths: files are taken as given, directories contribute their `*.parquet`
/// files (sorted by name, not recursive).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, IndexError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_file() {
            files.push(input.clone());
        } else if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(IndexError::io(input))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
                .collect();
            if found.is_empty() {
                return Err(IndexError::NoParquetFiles(input.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            return Err(IndexError::InputNotFound(input.clone()));
        }
    }
    Ok(files)
}

/// Total row count of the files, from their footers (cheap), for progress bars.
pub fn count_rows(files: &[PathBuf]) -> Result<u64, IndexError> {
    let mut total = 0u64;
    for file in files {
        let builder = open_builder(file)?;
        total += builder.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Ok(total)
}

fn open_builder(file: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, IndexError> {
    let handle = File::open(file).map_err(IndexError::io(file))?;
    ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| IndexError::Parquet {
        file: file.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads every file, calling `on_batch(file_index, docs)` for each record batch of documents.
///
/// Validation (per file, before any row is delivered): every mapped column exists and has a
/// usable type. Per row: ids are not null, vectors are not null, contain no nulls and all have the
/// same dimension (across files too).
pub fn read_documents(
    files: &[PathBuf],
    mapping: &ColumnMapping,
    batch_rows: usize,
    on_batch: &mut dyn FnMut(usize, Vec<SourceDoc>) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let mut vector_dim: Option<usize> = None;
    for (file_index, file) in files.iter().enumerate() {
        let builder = open_builder(file)?;
        let schema = builder.schema().clone();
        let roles = ColumnRoles::resolve(file, &schema, mapping)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roles.indices());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| IndexError::Parquet {
                file: file.clone(),
                message: e.to_string(),
            })?;
        let mut row_base = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| IndexError::Parquet {
                file: file.clone(),
                message: e.to_string(),
            })?;
            let docs = roles.extract(file, &batch, row_base, &mut vector_dim)?;
            row_base += batch.num_rows() as u64;
            on_batch(file_index, docs)?;
        }
    }
    Ok(())
}

/// The mapped columns of one file, resolved to positions in its schema.
struct ColumnRoles<'m> {
    mapping: &'m ColumnMapping,
    /// (role column name, index in the file schema)
    id: usize,
    text: usize,
    title: Option<usize>,
    vector: Option<usize>,
}

const STRING_TYPES: &str = "a string column (Utf8, LargeUtf8 or Utf8View)";

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

impl<'m> ColumnRoles<'m> {
    fn resolve(
        file: &Path,
        schema: &Schema,
        mapping: &'m ColumnMapping,
    ) -> Result<Self, IndexError> {
        let find = |name: &str| {
            schema
                .index_of(name)
                .map_err(|_| IndexError::MissingColumn {
                    file: file.to_path_buf(),
                    column: name.to_string(),
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let wrong = |name: &str, dt: &DataType, expected: &'static str| IndexError::WrongType {
            file: file.to_path_buf(),
            column: name.to_string(),
            found: dt.to_string(),
            expected,
        };
        let id = find(&mapping.id)?;
        let id_type = schema.field(id).data_type();
        if !is_string(id_type)
            && !matches!(
                id_type,
                DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
            )
        {
            return Err(wrong(
                &mapping.id,
                id_type,
                "a string or integer column (Utf8, LargeUtf8, Utf8View, Int32, Int64, UInt32, UInt64)",
            ));
        }
        let string_col = |name: &str| -> Result<usize, IndexError> {
            let index = find(name)?;
            let dt = schema.field(index).data_type();
            if is_string(dt) {
                Ok(index)
            } else {
                Err(wrong(name, dt, STRING_TYPES))
            }
        };
        let text = string_col(&mapping.text)?;
        let title = mapping.title.as_deref().map(string_col).transpose()?;
        let vector = match mapping.vector.as_deref() {
            None => None,
            Some(name) => {
                let index = find(name)?;
                let dt = schema.field(index).data_type();
                let item = match dt {
                    DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
                        Some(f.data_type())
                    }
                    _ => None,
                };
                if item != Some(&DataType::Float32) {
                    return Err(wrong(
                        name,
                        dt,
                        "FixedSizeList<Float32>, List<Float32> or LargeList<Float32>",
                    ));
                }
                Some(index)
            }
        };
        Ok(Self {
            mapping,
            id,
            text,
            title,
            vector,
        })
    }

    fn indices(&self) -> Vec<usize> {
        let mut v = vec![self.id, self.text];
        v.extend(self.title);
        v.extend(self.vector);
        v.sort_unstable();
        v.dedup();
        v
    }

    fn extract(
        &self,
        file: &Path,
        batch: &RecordBatch,
        row_base: u64,
        vector_dim: &mut Option<usize>,
    ) -> Result<Vec<SourceDoc>, IndexError> {
        // The projected batch keeps the file's column names.
        let column = |name: &str| -> Result<&ArrayRef, IndexError> {
            batch
                .column_by_name(name)
                .ok_or_else(|| IndexError::MissingColumn {
                    file: file.to_path_buf(),
                    column: name.to_string(),
                    available: String::new(),
                })
        };
        let ids = column(&self.mapping.id)?;
        let texts = column(&self.mapping.text)?;
        let titles = self.mapping.title.as_deref().map(column).transpose()?;
        let vectors = self.mapping.vector.as_deref().map(column).transpose()?;

        let bad = |row: usize, column: &str, message: String| IndexError::BadValue {
            file: file.to_path_buf(),
            row: row_base + row as u64,
            column: column.to_string(),
            message,
        };
        let mut docs = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let id = string_value(ids, row)
                .ok_or_else(|| bad(row, &self.mapping.id, "id is null".into()))?;
            if id.trim().is_empty() {
                return Err(bad(row, &self.mapping.id, "id is empty".into()));
            }
            let text = string_value(texts, row).unwrap_or_default();
            let title = titles
                .and_then(|t| string_value(t, row))
                .unwrap_or_default();
            let vector = match (vectors, self.mapping.vector.as_deref()) {
                (Some(array), Some(name)) => {
                    let v = vector_value(array, row).map_err(|m| bad(row, name, m))?;
                    match vector_dim {
                        None => *vector_dim = Some(v.len()),
                        Some(dim) if *dim != v.len() => {
                            return Err(bad(
                                row,
                                name,
                                format!(
                                    "ragged vectors: this one has {} values, earlier ones {}",
                                    v.len(),
                                    dim
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                    Some(v)
                }
                _ => None,
            };
            docs.push(SourceDoc {
                id,
                title,
                text,
                vector,
                row: row_base + row as u64,
            });
        }
        Ok(docs)
    }
}

/// Reads a string or integer cell as a string; `None` for null.
fn string_value(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        _ => return None,
    })
}

/// Reads a list-of-f32 cell; errors on null lists, null items, empty or non-finite vectors.
fn vector_value(array: &ArrayRef, row: usize) -> Result<Vec<f32>, String> {
    if array.is_null(row) {
        return Err("vector is null".into());
    }
    let values = match array.data_type() {
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(row),
        DataType::List(_) => array.as_list::<i32>().value(row),
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        other => return Err(format!("unexpected type {other}")),
    };
    let floats = values.as_primitive::<Float32Type>();
    if floats.null_count() > 0 {
        return Err("vector contains null values".into());
    }
    if floats.is_empty() {
        return Err("vector is empty".into());
    }
    let v: Vec<f32> = floats.values().to_vec();
    if v.iter().any(|x| !x.is_finite()) {
        return Err("vector contains NaN or infinite values".into());
    }
    Ok(v)
}

/// The top-level column names of a Parquet file (read from its footer).
pub fn column_names(file: &Path) -> Result<Vec<String>, IndexError> {
    let builder = open_builder(file)?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect())
}
