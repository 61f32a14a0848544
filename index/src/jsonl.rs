//! BEIR `corpus.jsonl` support: converts `{"_id", "title", "text"}` lines into a Parquet file
//! the indexer reads like any other (columns `id`, `title`, `text`).
//!
//! The conversion streams (bounded memory), validates every line (errors name `file:line`) and
//! writes through a temporary file renamed into place, so a failed conversion never leaves a
//! partial Parquet file behind.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::IndexError;

/// Rows per Parquet row group / record batch written.
const BATCH_ROWS: usize = 8192;

/// Converts a BEIR `corpus.jsonl` into Parquet at `out`; returns the number of documents.
///
/// Each line is a JSON object with a string (or integer) `_id` (or `id`), an optional `title`
/// and a `text`; blank lines are skipped. Duplicate ids are left to the indexer, which names both
/// rows.
pub fn beir_jsonl_to_parquet(jsonl: &Path, out: &Path) -> Result<u64, IndexError> {
    let file = File::open(jsonl).map_err(IndexError::io(jsonl))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
    ]));
    let tmp = temp_path(out);
    let result = (|| {
        let sink = File::create(&tmp).map_err(IndexError::io(&tmp))?;
        let mut writer =
            ArrowWriter::try_new(sink, schema.clone(), None).map_err(|e| IndexError::Parquet {
                file: tmp.clone(),
                message: e.to_string(),
            })?;
        let mut rows = Rows::default();
        let mut count = 0u64;
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(IndexError::io(jsonl))?;
            if line.trim().is_empty() {
                continue;
            }
            let (id, title, text) = parse_line(&line).map_err(|message| IndexError::BadValue {
                file: jsonl.to_path_buf(),
                row: number as u64 + 1,
                column: "line".into(),
                message,
            })?;
            rows.push(id, title, text);
            count += 1;
            if rows.len() == BATCH_ROWS {
                write_batch(&mut writer, &schema, &mut rows, &tmp)?;
            }
        }
        if rows.len() > 0 {
            write_batch(&mut writer, &schema, &mut rows, &tmp)?;
        }
        writer.close().map_err(|e| IndexError::Parquet {
            file: tmp.clone(),
            message: e.to_string(),
        })?;
        Ok(count)
    })();
    match result {
        Ok(count) => {
            std::fs::rename(&tmp, out).map_err(IndexError::io(out))?;
            Ok(count)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            Err(error)
        }
    }
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corpus.parquet".into());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    titles: Vec<Option<String>>,
    texts: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, id: String, title: Option<String>, text: Option<String>) {
        self.ids.push(id);
        self.titles.push(title);
        self.texts.push(text);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

fn write_batch(
    writer: &mut ArrowWriter<File>,
    schema: &Arc<Schema>,
    rows: &mut Rows,
    file: &Path,
) -> Result<(), IndexError> {
    let taken = std::mem::take(rows);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(taken.ids)),
        Arc::new(StringArray::from(taken.titles)),
        Arc::new(StringArray::from(taken.texts)),
    ];
    let parquet_err = |message: String| IndexError::Parquet {
        file: file.to_path_buf(),
        message,
    };
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| parquet_err(e.to_string()))?;
    writer.write(&batch).map_err(|e| parquet_err(e.to_string()))
}

/// One JSONL line → (id, title, text).
fn parse_line(line: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_string())?;
    let id = match object.get("_id").or_else(|| object.get("id")) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`_id` must be a non-empty string or an integer".into()),
        None => return Err("missing `_id`".into()),
    };
    let string_field = |name: &str| -> Result<Option<String>, String> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let title = string_field("title")?;
    let text = string_field("text")?;
    if text.is_none() && title.is_none() {
        return Err(format!("document `{id}` has neither `text` nor `title`"));
    }
    Ok((id, title, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_lines_and_names_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("corpus.jsonl");
        std::fs::write(
            &jsonl,
            "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"one\"}\n\n{\"_id\": 7, \"text\": \"two\"}\n",
        )
        .unwrap();
        let out = dir.path().join("corpus.parquet");
        assert_eq!(beir_jsonl_to_parquet(&jsonl, &out).unwrap(), 2);
        let mut seen = Vec::new();
        let mapping = crate::ColumnMapping {
            title: Some("title".into()),
            ..Default::default()
        };
        crate::ingest::read_documents(std::slice::from_ref(&out), &mapping, 10, &mut |_, docs| {
            seen.extend(docs.into_iter().map(|d| (d.id, d.title, d.text)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("d1".to_string(), "T".to_string(), "one".to_string()),
                ("7".to_string(), String::new(), "two".to_string()),
            ]
        );

        std::fs::write(
            &jsonl,
            "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"b\", \"text\": 3}\n",
        )
        .unwrap();
        let bad = dir.path().join("bad.parquet");
        let err = beir_jsonl_to_parquet(&jsonl, &bad).unwrap_err().to_string();
        assert!(
            err.contains("row 2") && err.contains("`text` must be a string"),
            "{err}"
        );
        assert!(!bad.exists(), "no partial output");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
