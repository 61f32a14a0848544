//! Runs: the ranked documents a system returned for each query.
//!
//! Runs are read from and written to the TREC run format,
//! `qid Q0 docid rank score tag`, one retrieved document per line.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::Path;

use crate::EvalError;
use crate::lines::{for_each_line, open};

/// Retrieved documents per query: query id -> `(doc id, score)` list.
///
/// Each list keeps the order in which entries were inserted or read from the
/// file. Evaluation does not rely on that order: [`crate::evaluate`] re-sorts
/// every list the `trec_eval` way (score descending, ties by doc id
/// descending), so the rank column of a run file is informational only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    results: BTreeMap<String, Vec<(String, f64)>>,
}

impl Run {
    /// Creates an empty run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one retrieved document to `query_id`'s list.
    pub fn push(&mut self, query_id: impl Into<String>, doc_id: impl Into<String>, score: f64) {
        self.results
            .entry(query_id.into())
            .or_default()
            .push((doc_id.into(), score));
    }

    /// Sets the whole result list of `query_id`, replacing any previous one.
    pub fn insert(&mut self, query_id: impl Into<String>, results: Vec<(String, f64)>) {
        self.results.insert(query_id.into(), results);
    }

    /// The result list of one query, in stored order.
    pub fn get(&self, query_id: &str) -> Option<&[(String, f64)]> {
        self.results.get(query_id).map(Vec::as_slice)
    }

    /// Iterates over queries and their result lists, in query id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[(String, f64)])> {
        self.results.iter().map(|(q, r)| (q.as_str(), r.as_slice()))
    }

    /// Number of queries with a result list.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// True when the run has no query.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Loads a TREC run file (`qid Q0 docid rank score tag`).
    ///
    /// Errors name the file and 1-based line of the first malformed line.
    pub fn load_trec(path: impl AsRef<Path>) -> Result<Self, EvalError> {
        let path = path.as_ref();
        Self::parse_trec(open(path)?, path)
    }

    /// Parses a TREC run from `reader`; `origin` names the source in error
    /// messages.
    ///
    /// Every line must have exactly six whitespace-separated fields; the rank
    /// must be an integer and the score a finite number. The `Q0` and tag
    /// columns are not checked (`trec_eval` ignores them too). Entries keep
    /// file order.
    pub fn parse_trec(reader: impl BufRead, origin: impl AsRef<Path>) -> Result<Self, EvalError> {
        let origin = origin.as_ref();
        let mut run = Run::new();
        for_each_line(reader, origin, |line_no, line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [query_id, _q0, doc_id, rank, score, _tag] = fields[..] else {
                return Err(EvalError::parse(
                    origin,
                    line_no,
                    format!(
                        "expected 6 whitespace-separated fields (qid Q0 docid rank score tag), found {}",
                        fields.len()
                    ),
                ));
            };
            rank.parse::<i64>().map_err(|e| {
                EvalError::parse(
                    origin,
                    line_no,
                    format!("rank must be an integer, got {rank:?} ({e})"),
                )
            })?;
            let score = score
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .ok_or_else(|| {
                    EvalError::parse(
                        origin,
                        line_no,
                        format!("score must be a finite number, got {score:?}"),
                    )
                })?;
            run.push(query_id, doc_id, score);
            Ok(())
        })?;
        Ok(run)
    }
}

impl FromIterator<(String, String, f64)> for Run {
    /// Builds a run from `(query id, doc id, score)` triples, keeping their
    /// order within each query.
    fn from_iter<I: IntoIterator<Item = (String, String, f64)>>(iter: I) -> Self {
        let mut run = Run::new();
        for (q, d, s) in iter {
            run.push(q, d, s);
        }
        run
    }
}

/// Writes `run` in TREC run format (`qid Q0 docid rank score tag`).
///
/// Queries are written in query id order; within a query, entries are
/// written in stored order with ranks 1, 2, 3, ... so the file reflects the
/// caller's ranking. Scores use Rust's shortest round-trip formatting, so
/// reading the file back yields identical values. Ids and the tag must be
/// non-empty and free of whitespace, otherwise the line could not be parsed
/// back; this is reported as [`io::ErrorKind::InvalidInput`].
pub fn write_trec(run: &Run, tag: &str, mut writer: impl Write) -> io::Result<()> {
    check_token("run tag", tag)?;
    for (query_id, results) in run.iter() {
        check_token("query id", query_id)?;
        for (index, (doc_id, score)) in results.iter().enumerate() {
            check_token("document id", doc_id)?;
            writeln!(writer, "{query_id} Q0 {doc_id} {} {score} {tag}", index + 1)?;
        }
    }
    writer.flush()
}

/// Ensures `value` can be written as a single whitespace-free TREC field.
fn check_token(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {value:?} is empty or contains whitespace and cannot be written to a TREC run"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_file_order() {
        let text = "q1 Q0 d2 1 3.5 tag\nq1 Q0 d1 2 7 tag\n\nq2 Q0 d9 1 -1e-3 tag\n";
        let run = Run::parse_trec(text.as_bytes(), "r.trec").expect("valid run");
        assert_eq!(run.len(), 2);
        assert_eq!(
            run.get("q1"),
            Some(&[("d2".to_string(), 3.5), ("d1".to_string(), 7.0)][..])
        );
        assert_eq!(run.get("q2"), Some(&[("d9".to_string(), -0.001)][..]));
    }

    #[test]
    fn malformed_lines_are_located() {
        let err =
            Run::parse_trec("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 2.0\n".as_bytes(), "r.trec").unwrap_err();
        assert!(err.to_string().starts_with("r.trec:2: expected 6"), "{err}");
        let err = Run::parse_trec("q1 Q0 d1 one 2.0 t\n".as_bytes(), "r.trec").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("r.trec:1: rank must be an integer"),
            "{err}"
        );
        let err = Run::parse_trec("\nq1 Q0 d1 1 NaN t\n".as_bytes(), "r.trec").unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.trec:2: score must be a finite number, got \"NaN\""
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let mut run = Run::new();
        run.push("q2", "dB", 0.1 + 0.2);
        run.push("q1", "dX", 10.0);
        run.push("q1", "dY", 12.5);
        let mut out = Vec::new();
        write_trec(&run, "sieve", &mut out).expect("write to Vec");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "q1 Q0 dX 1 10 sieve\nq1 Q0 dY 2 12.5 sieve\nq2 Q0 dB 1 0.30000000000000004 sieve\n"
        );
        let back = Run::parse_trec(text.as_bytes(), "mem").expect("re-read");
        assert_eq!(back, run);
    }

    #[test]
    fn write_rejects_whitespace_in_fields() {
        let mut run = Run::new();
        run.push("q1", "d 1", 1.0);
        let err = write_trec(&run, "t", Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = write_trec(&Run::new(), "my tag", Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
