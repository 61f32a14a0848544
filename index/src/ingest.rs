//! Streaming Parquet ingestion with column mapping and validation.
//!
//! [`read_documents`] reads one or more Parquet files batch by batch (only the mapped columns),
//! checks types and values, and hands [`SourceDoc`]s to a callback, so memory stays bounded by one
//! record batch. Errors name the file, the 0-based row within it and the column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type,
};
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
    /// Optional precomputed embeddings: a `List`, `LargeList` or `FixedSizeList` of `Float16`,
    /// `Float32` or `Float64` (cast to f32; values that do not fit f32 are refused).
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

/// Expands input paths: files are taken as given, directories contribute every `*.parquet`
/// file below them, recursively (the layout of pyarrow's, Spark's and DuckDB's partitioned
/// writers: `dir/key=value/part-0.parquet`), sorted by path. Hidden entries and those starting
/// with `_` (`_SUCCESS`, `_metadata`, `.crc` files) are skipped, as those writers' readers do.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, IndexError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_file() {
            files.push(input.clone());
        } else if input.is_dir() {
            let mut found = Vec::new();
            collect_parquet_files(input, &mut found)?;
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

fn collect_parquet_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), IndexError> {
    for entry in std::fs::read_dir(dir).map_err(IndexError::io(dir))? {
        let path = entry.map_err(IndexError::io(dir))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_parquet_files(&path, found)?;
        } else if path.is_file() && path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
    Ok(())
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

fn open_builder(file: &Path) -> Result<ParquetRecordBatchReaderBuilder<InputFile>, IndexError> {
    let handle = File::open(file).map_err(IndexError::io(file))?;
    let len = handle.metadata().map_err(IndexError::io(file))?.len();
    parquet_call(file, || {
        ParquetRecordBatchReaderBuilder::try_new(InputFile { file: handle, len })
    })
}

/// A Parquet file to read, whose sequential readers fail on a read past its end instead of
/// returning 0 bytes. The Parquet reader skips unknown Thrift fields of a page header with
/// `io::copy`, which takes 0 bytes as "done" and goes on: a damaged list length in a header
/// made it issue one read per list element past the end of the file (4 million `read` calls,
/// 25 s, found by tests/fuzz.rs; a length up to 2^31 would take hours). With this, the first
/// read past the end stops the header and the file is refused at once.
struct InputFile {
    file: File,
    len: u64,
}

impl parquet::file::reader::Length for InputFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for InputFile {
    type T = std::io::BufReader<PastEndFails>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(start))?;
        let rest = file.take(self.len.saturating_sub(start));
        Ok(std::io::BufReader::new(PastEndFails(rest)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.file.get_bytes(start, length)
    }
}

/// See [`InputFile`]: a read that finds no byte left is an error, not an end.
struct PastEndFails(std::io::Take<File>);

impl std::io::Read for PastEndFails {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.0.read(buf)? {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a page header reaches past the end of the file",
            )),
            n => Ok(n),
        }
    }
}

/// One call into the Parquet reader, its error or panic (on some damaged files it panics
/// rather than failing: see [`sieve_core::contain`]) turned into an error naming the file.
fn parquet_call<T, E: std::fmt::Display>(
    file: &Path,
    call: impl FnOnce() -> Result<T, E>,
) -> Result<T, IndexError> {
    let message = match sieve_core::contain::contained(call) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => format!("the file is damaged (the Parquet reader failed: {panic})"),
    };
    Err(IndexError::Parquet {
        file: file.to_path_buf(),
        message,
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
        let mut reader = parquet_call(file, || {
            builder
                .with_projection(mask)
                .with_batch_size(batch_rows.max(1))
                .build()
        })?;
        let mut row_base = 0u64;
        while let Some(batch) = parquet_call(file, || reader.next().transpose())? {
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

const STRING_TYPES: &str =
    "a string column (Utf8, LargeUtf8, Utf8View, or a dictionary of one: pandas `category`)";

/// The type a cell is read as: a dictionary column (pandas `category`, pyarrow's
/// `dictionary_encode`, Spark's and DuckDB's dictionary pages read as such) reads as its values.
fn value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, values) => value_type(values),
        other => other,
    }
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        value_type(dt),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_integer(dt: &DataType) -> bool {
    matches!(
        value_type(dt),
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
    )
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

impl<'m> ColumnRoles<'m> {
    fn resolve(
        file: &Path,
        schema: &Schema,
        mapping: &'m ColumnMapping,
    ) -> Result<Self, IndexError> {
        let find = |name: &str| find_column(file, schema, name);
        let wrong = |name: &str, dt: &DataType, expected: &'static str| IndexError::WrongType {
            file: file.to_path_buf(),
            column: name.to_string(),
            found: dt.to_string(),
            expected,
        };
        let id = find(&mapping.id)?;
        let id_type = schema.field(id).data_type();
        if !is_string(id_type) && !is_integer(id_type) {
            return Err(wrong(
                &mapping.id,
                id_type,
                "a string or integer column (Utf8, LargeUtf8, Utf8View, Int32, Int64, UInt32, UInt64, or a dictionary of one)",
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
                if !item.is_some_and(is_float) {
                    return Err(wrong(
                        name,
                        dt,
                        "a List, LargeList or FixedSizeList of Float32 (or Float16, Float64)",
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
        let ids = TextColumn::new(column(&self.mapping.id)?);
        let texts = TextColumn::new(column(&self.mapping.text)?);
        let titles = self
            .mapping
            .title
            .as_deref()
            .map(column)
            .transpose()?
            .map(TextColumn::new);
        let vectors = self.mapping.vector.as_deref().map(column).transpose()?;

        let bad = |row: usize, column: &str, message: String| IndexError::BadValue {
            file: file.to_path_buf(),
            row: row_base + row as u64,
            column: column.to_string(),
            message,
        };
        let mut docs = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let id = ids
                .get(row)
                .ok_or_else(|| bad(row, &self.mapping.id, "id is null".into()))?;
            if id.trim().is_empty() {
                return Err(bad(row, &self.mapping.id, "id is empty".into()));
            }
            let text = texts.get(row).unwrap_or_default();
            let title = titles.as_ref().and_then(|t| t.get(row)).unwrap_or_default();
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

/// A string or integer column of one record batch, read cell by cell as strings; a dictionary
/// column's keys are resolved once per batch.
struct TextColumn<'a> {
    array: &'a ArrayRef,
    dictionary: Option<(Vec<usize>, &'a ArrayRef)>,
}

impl<'a> TextColumn<'a> {
    fn new(array: &'a ArrayRef) -> Self {
        let dictionary = array
            .as_any_dictionary_opt()
            .map(|d| (d.normalized_keys(), d.values()));
        Self { array, dictionary }
    }

    /// The cell as a string; `None` for null.
    fn get(&self, row: usize) -> Option<String> {
        if self.array.is_null(row) {
            return None;
        }
        match &self.dictionary {
            Some((keys, values)) => plain_string_value(values, *keys.get(row)?),
            None => plain_string_value(self.array, row),
        }
    }
}

/// Reads a string or integer cell of a plain (not dictionary) array; `None` for null.
fn plain_string_value(array: &ArrayRef, row: usize) -> Option<String> {
    if row >= array.len() || array.is_null(row) {
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

/// Reads a list-of-floats cell as f32; errors on null lists, null items, empty vectors and
/// values that are NaN, infinite, or (from Float64) beyond f32's range.
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
    if values.null_count() > 0 {
        return Err("vector contains null values".into());
    }
    if values.is_empty() {
        return Err("vector is empty".into());
    }
    let v: Vec<f32> = match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float16 => values
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        DataType::Float64 => {
            let wide = values.as_primitive::<Float64Type>().values();
            if let Some(x) = wide
                .iter()
                .find(|x| x.is_finite() && x.abs() > f32::MAX as f64)
            {
                return Err(format!("vector value {x} does not fit in a 32-bit float"));
            }
            wide.iter().map(|&x| x as f32).collect()
        }
        other => return Err(format!("unexpected vector item type {other}")),
    };
    if v.iter().any(|x| !x.is_finite()) {
        return Err("vector contains NaN or infinite values".into());
    }
    Ok(v)
}

/// The position of column `name` in a file's schema; the error lists the columns there are.
fn find_column(file: &Path, schema: &Schema, name: &str) -> Result<usize, IndexError> {
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
}

/// Reads one id column of a Parquet file (string or integer, or a dictionary of them), in row
/// order; null cells are refused with their row.
pub fn read_id_column(file: &Path, column: &str) -> Result<Vec<String>, IndexError> {
    let builder = open_builder(file)?;
    let schema = builder.schema().clone();
    let index = find_column(file, &schema, column)?;
    let dt = schema.field(index).data_type();
    if !is_string(dt) && !is_integer(dt) {
        return Err(IndexError::WrongType {
            file: file.to_path_buf(),
            column: column.to_string(),
            found: dt.to_string(),
            expected: "a string or integer column",
        });
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| IndexError::Parquet {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| IndexError::Parquet {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let cells = TextColumn::new(batch.column(0));
        for row in 0..batch.num_rows() {
            let id = cells.get(row).ok_or_else(|| IndexError::BadValue {
                file: file.to_path_buf(),
                row: ids.len() as u64,
                column: column.to_string(),
                message: "id is null".into(),
            })?;
            ids.push(id);
        }
    }
    Ok(ids)
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
