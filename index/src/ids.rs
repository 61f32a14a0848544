//! Lists of document ids, as `sieve delete` reads them: a Parquet file's id column, JSON lines
//! with an `id` (or BEIR's `_id`) field, or plain text with one id per line.

use std::path::Path;

use crate::IndexError;
use crate::ingest;

/// Reads the ids listed in `file`, by its extension: `.parquet` (column `column`), `.jsonl` /
/// `.json` (field `column`, else `_id`; strings or integers), anything else one id per line
/// (surrounding blanks trimmed, empty lines skipped).
pub fn read_id_list(file: &Path, column: &str) -> Result<Vec<String>, IndexError> {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if extension == "parquet" {
        return ingest::read_id_column(file, column);
    }
    let text = std::fs::read_to_string(file).map_err(IndexError::io(file))?;
    let bad = |row: usize, message: String| IndexError::BadValue {
        file: file.to_path_buf(),
        row: row as u64,
        column: column.to_string(),
        message,
    };
    let mut ids = Vec::new();
    for (row, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if extension == "jsonl" || extension == "json" {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| bad(row, format!("not a JSON object: {e}")))?;
            let id = value.get(column).or_else(|| value.get("_id"));
            ids.push(match id {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(bad(
                        row,
                        format!("no `{column}` (or `_id`) string or number"),
                    ));
                }
            });
        } else {
            ids.push(line.to_string());
        }
    }
    Ok(ids)
}
