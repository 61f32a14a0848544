//! BEIR `queries.jsonl` loader.
//!
//! Each line is a JSON object with an `_id` (string or number) and a `text`
//! field; other fields (e.g. `metadata`) are ignored.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::EvalError;
use crate::lines::{for_each_line, open};

/// A query id as it appears in BEIR files: some datasets store ids as JSON
/// numbers, others as strings. Both are normalised to a string, because
/// qrels and runs refer to ids textually.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonId {
    /// `"_id": "123"`.
    Text(String),
    /// `"_id": 123`.
    Number(serde_json::Number),
}

impl JsonId {
    /// The id as text (numbers in their JSON spelling, e.g. `123`).
    fn into_string(self) -> String {
        match self {
            JsonId::Text(s) => s,
            JsonId::Number(n) => n.to_string(),
        }
    }
}

/// One `queries.jsonl` record; unknown fields are ignored.
#[derive(Deserialize)]
struct QueryRecord {
    /// Query id.
    #[serde(rename = "_id")]
    id: JsonId,
    /// Query text.
    text: String,
}

/// Loads a BEIR `queries.jsonl` file as `(query id, text)` pairs in file
/// order.
///
/// Errors name the file and 1-based line of the first malformed record
/// (invalid JSON, missing `_id`/`text`, or a `_id` that is neither a string
/// nor a number).
pub fn load_beir_queries(path: impl AsRef<Path>) -> Result<Vec<(String, String)>, EvalError> {
    let path = path.as_ref();
    parse_beir_queries(open(path)?, path)
}

/// Parses BEIR queries JSON Lines from `reader`; `origin` names the source
/// in error messages. Blank lines are skipped.
pub fn parse_beir_queries(
    reader: impl BufRead,
    origin: impl AsRef<Path>,
) -> Result<Vec<(String, String)>, EvalError> {
    let origin = origin.as_ref();
    let mut queries = Vec::new();
    for_each_line(reader, origin, |line_no, line| {
        let record: QueryRecord = serde_json::from_str(line).map_err(|source| EvalError::Json {
            path: origin.to_path_buf(),
            line: line_no,
            source,
        })?;
        queries.push((record.id.into_string(), record.text));
        Ok(())
    })?;
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_numeric_ids() {
        let text = concat!(
            "{\"_id\": \"264014\", \"text\": \"how long is life cycle of flea\"}\n",
            "\n",
            "{\"_id\": 42, \"text\": \"answer\", \"metadata\": {}}\n",
        );
        let queries = parse_beir_queries(text.as_bytes(), "queries.jsonl").expect("valid");
        assert_eq!(
            queries,
            vec![
                (
                    "264014".to_string(),
                    "how long is life cycle of flea".to_string()
                ),
                ("42".to_string(), "answer".to_string()),
            ]
        );
    }

    #[test]
    fn bad_records_are_located() {
        let text = "{\"_id\": \"1\", \"text\": \"a\"}\n{\"_id\": \"2\"}\n";
        let err = parse_beir_queries(text.as_bytes(), "queries.jsonl").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("queries.jsonl:2: invalid JSON record"),
            "{err}"
        );

        let err =
            parse_beir_queries("{\"_id\": [1], \"text\": \"a\"}\n".as_bytes(), "q").unwrap_err();
        assert!(
            err.to_string().starts_with("q:1: invalid JSON record"),
            "{err}"
        );

        let err = parse_beir_queries(
            "{\"_id\": \"1\", \"text\": \"a\"}\nnot json\n".as_bytes(),
            "q",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("q:2: invalid JSON record"),
            "{err}"
        );
    }
}
