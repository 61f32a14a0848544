//! Relevance judgements ("qrels"): which documents are relevant to which
//! query, and how relevant.
//!
//! Two on-disk formats are supported:
//!
//! * BEIR `qrels/<split>.tsv`: tab-separated `query-id  corpus-id  score`,
//!   with an optional header line of exactly those column names.
//! * TREC qrels: whitespace-separated `qid iteration docid relevance`; the
//!   iteration column is ignored, as `trec_eval` does.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use crate::EvalError;
use crate::lines::{for_each_line, open};

/// Graded relevance judgements: query id -> document id -> relevance.
///
/// Relevance is an integer grade; `0` or negative means judged non-relevant.
/// Maps are ordered so iteration (and therefore any report built from it) is
/// deterministic. If the same (query, document) pair is judged twice, the
/// later judgement replaces the earlier one, matching `pytrec_eval`, which
/// stores qrels in a dictionary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qrels {
    judgments: BTreeMap<String, BTreeMap<String, i32>>,
}

impl Qrels {
    /// Creates an empty set of judgements.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `doc_id` has grade `relevance` for `query_id`, replacing
    /// any previous judgement of the same pair.
    pub fn insert(
        &mut self,
        query_id: impl Into<String>,
        doc_id: impl Into<String>,
        relevance: i32,
    ) {
        self.judgments
            .entry(query_id.into())
            .or_default()
            .insert(doc_id.into(), relevance);
    }

    /// The judgements of one query (document id -> relevance), if it has any.
    pub fn get(&self, query_id: &str) -> Option<&BTreeMap<String, i32>> {
        self.judgments.get(query_id)
    }

    /// The relevance of `doc_id` for `query_id`, or `None` if unjudged.
    pub fn relevance(&self, query_id: &str, doc_id: &str) -> Option<i32> {
        self.judgments.get(query_id)?.get(doc_id).copied()
    }

    /// Iterates over queries and their judgements, in query id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, i32>)> {
        self.judgments.iter().map(|(q, d)| (q.as_str(), d))
    }

    /// Number of judged queries (including those with no relevant document).
    pub fn len(&self) -> usize {
        self.judgments.len()
    }

    /// True when no query is judged.
    pub fn is_empty(&self) -> bool {
        self.judgments.is_empty()
    }

    /// Total number of (query, document) judgements.
    pub fn num_judgments(&self) -> usize {
        self.judgments.values().map(BTreeMap::len).sum()
    }

    /// Loads a BEIR qrels file (`qrels/<split>.tsv`).
    ///
    /// Errors name the file and 1-based line of the first malformed line.
    pub fn load_beir(path: impl AsRef<Path>) -> Result<Self, EvalError> {
        let path = path.as_ref();
        Self::parse_beir(open(path)?, path)
    }

    /// Parses BEIR qrels TSV from `reader`; `origin` names the source in
    /// error messages.
    ///
    /// Each record is `query-id<TAB>corpus-id<TAB>score` with an integer
    /// score. A header line (`query-id corpus-id score`) is accepted as the
    /// first non-blank line only; blank lines are skipped.
    pub fn parse_beir(reader: impl BufRead, origin: impl AsRef<Path>) -> Result<Self, EvalError> {
        let origin = origin.as_ref();
        let mut qrels = Qrels::new();
        let mut first = true;
        for_each_line(reader, origin, |line_no, line| {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            let is_first = std::mem::replace(&mut first, false);
            if is_first && is_beir_header(&fields) {
                return Ok(());
            }
            let [query_id, doc_id, score] = fields[..] else {
                return Err(EvalError::parse(
                    origin,
                    line_no,
                    format!(
                        "expected 3 tab-separated fields (query-id, corpus-id, score), found {}",
                        fields.len()
                    ),
                ));
            };
            let (query_id, doc_id) = check_ids(origin, line_no, query_id, doc_id)?;
            let relevance = parse_relevance(origin, line_no, score)?;
            qrels.insert(query_id, doc_id, relevance);
            Ok(())
        })?;
        Ok(qrels)
    }

    /// Loads a TREC qrels file (`qid iteration docid relevance`).
    ///
    /// Errors name the file and 1-based line of the first malformed line.
    pub fn load_trec(path: impl AsRef<Path>) -> Result<Self, EvalError> {
        let path = path.as_ref();
        Self::parse_trec(open(path)?, path)
    }

    /// Parses TREC qrels from `reader`; `origin` names the source in error
    /// messages.
    ///
    /// Each record has exactly four whitespace-separated fields; the second
    /// (iteration) is ignored, the fourth must be an integer.
    pub fn parse_trec(reader: impl BufRead, origin: impl AsRef<Path>) -> Result<Self, EvalError> {
        let origin = origin.as_ref();
        let mut qrels = Qrels::new();
        for_each_line(reader, origin, |line_no, line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [query_id, _iteration, doc_id, rel] = fields[..] else {
                return Err(EvalError::parse(
                    origin,
                    line_no,
                    format!(
                        "expected 4 whitespace-separated fields (qid iter docid rel), found {}",
                        fields.len()
                    ),
                ));
            };
            let relevance = parse_relevance(origin, line_no, rel)?;
            qrels.insert(query_id, doc_id, relevance);
            Ok(())
        })?;
        Ok(qrels)
    }
}

impl FromIterator<(String, String, i32)> for Qrels {
    /// Builds judgements from `(query id, doc id, relevance)` triples; later
    /// duplicates win.
    fn from_iter<I: IntoIterator<Item = (String, String, i32)>>(iter: I) -> Self {
        let mut qrels = Qrels::new();
        for (q, d, r) in iter {
            qrels.insert(q, d, r);
        }
        qrels
    }
}

/// True if `fields` is the BEIR header `query-id corpus-id score`.
fn is_beir_header(fields: &[&str]) -> bool {
    matches!(fields, [q, d, s]
        if q.eq_ignore_ascii_case("query-id")
            && d.eq_ignore_ascii_case("corpus-id")
            && s.eq_ignore_ascii_case("score"))
}

/// Rejects empty ids (e.g. from doubled tabs) with a located error.
fn check_ids<'a>(
    origin: &Path,
    line_no: usize,
    query_id: &'a str,
    doc_id: &'a str,
) -> Result<(&'a str, &'a str), EvalError> {
    if query_id.is_empty() {
        return Err(EvalError::parse(origin, line_no, "empty query id"));
    }
    if doc_id.is_empty() {
        return Err(EvalError::parse(origin, line_no, "empty document id"));
    }
    Ok((query_id, doc_id))
}

/// Parses an integer relevance grade with a located error.
fn parse_relevance(origin: &Path, line_no: usize, text: &str) -> Result<i32, EvalError> {
    text.parse::<i32>().map_err(|e| {
        EvalError::parse(
            origin,
            line_no,
            format!("relevance must be an integer, got {text:?} ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beir_header_is_tolerated_and_grades_kept() {
        let text = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\r\n\nq2\td1\t-1\n";
        let qrels = Qrels::parse_beir(text.as_bytes(), "mem.tsv").expect("valid qrels");
        assert_eq!(qrels.len(), 2);
        assert_eq!(qrels.num_judgments(), 3);
        assert_eq!(qrels.relevance("q1", "d1"), Some(2));
        assert_eq!(qrels.relevance("q1", "d2"), Some(0));
        assert_eq!(qrels.relevance("q2", "d1"), Some(-1));
        assert_eq!(qrels.relevance("q2", "d9"), None);
    }

    #[test]
    fn beir_header_only_allowed_first() {
        let text = "q1\td1\t1\nquery-id\tcorpus-id\tscore\n";
        let err = Qrels::parse_beir(text.as_bytes(), "x.tsv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.tsv:2: relevance must be an integer, got \"score\" (invalid digit found in string)"
        );
    }

    #[test]
    fn beir_wrong_field_count_is_located() {
        let text = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 1\n";
        let err = Qrels::parse_beir(text.as_bytes(), "qrels/test.tsv").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("qrels/test.tsv:3: expected 3 tab-separated"),
            "{msg}"
        );
    }

    #[test]
    fn beir_empty_id_rejected() {
        let err = Qrels::parse_beir("\td1\t1\n".as_bytes(), "a.tsv").unwrap_err();
        assert_eq!(err.to_string(), "a.tsv:1: empty query id");
    }

    #[test]
    fn trec_qrels_parse_and_errors() {
        let text = "1 0 d1 3\n1 0 d2 0\n2\tQ0\td3\t1\n";
        let qrels = Qrels::parse_trec(text.as_bytes(), "q.txt").expect("valid");
        assert_eq!(qrels.relevance("1", "d1"), Some(3));
        assert_eq!(qrels.relevance("2", "d3"), Some(1));

        let err = Qrels::parse_trec("1 0 d1 3\n1 0 d2\n".as_bytes(), "q.txt").unwrap_err();
        assert!(err.to_string().starts_with("q.txt:2: expected 4"), "{err}");
        let err = Qrels::parse_trec("1 0 d1 x\n".as_bytes(), "q.txt").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("q.txt:1: relevance must be an integer"),
            "{err}"
        );
    }

    #[test]
    fn later_duplicate_wins() {
        let qrels = Qrels::parse_trec("1 0 d1 3\n1 0 d1 1\n".as_bytes(), "q").expect("valid");
        assert_eq!(qrels.relevance("1", "d1"), Some(1));
    }
}
