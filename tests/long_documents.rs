//! Long documents on real text: a relevant passage late in a long document must be found as
//! well as one at its start.
//!
//! For SciFact test queries, each candidate is a long document of five real abstracts. The
//! answer-bearing candidate holds the judged-relevant abstract either first or last; the
//! distractors hold only other abstracts (those BM25 ranks highest for the query, so they are
//! on-topic). Accuracy is how often the answer-bearing candidate ranks first. With token windows
//! the two positions score the same; plain truncation (one window) fails the "end" case.
//!
//! The scorer is the toy lexical cross-encoder of the plugin's tests (query-term overlap) until
//! sieve's own cross-encoder ships; the windowing under test is the same for any model.

mod common;

use std::collections::HashMap;

use common::*;
use sieve::{RerankDoc, Reranker};
use sieve_eval::{Qrels, load_beir_queries};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig};

const ABSTRACTS_PER_DOC: usize = 5;
const DISTRACTORS: usize = 4;
const QUERIES: usize = 40;

fn accuracy(encoder: &CrossEncoder, cases: &[(String, Vec<String>)]) -> f64 {
    let mut correct = 0;
    for (query, candidates) in cases {
        let docs: Vec<RerankDoc<'_>> = candidates
            .iter()
            .map(|text| RerankDoc::new("", text))
            .collect();
        let scores = encoder.rerank(query, &docs).unwrap().scores;
        // Candidate 0 is the answer-bearing one; ties count as failures.
        if scores[1..].iter().all(|s| s.raw < scores[0].raw) {
            correct += 1;
        }
    }
    correct as f64 / cases.len() as f64
}

#[test]
fn answers_late_in_long_documents_are_found_as_well_as_early_ones() {
    let Some(shared) = shared_dir() else {
        println!("SKIPPED long_documents: ../shared/data not found beside the repository");
        return;
    };
    let data = shared.join("data/scifact");
    let corpus: HashMap<String, String> = std::fs::read_to_string(data.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = format!(
                "{} {}",
                v["title"].as_str().unwrap_or(""),
                v["text"].as_str().unwrap_or("")
            );
            (v["_id"].as_str().unwrap().to_string(), text)
        })
        .collect();
    let mut ids: Vec<&String> = corpus.keys().collect();
    ids.sort();
    let qrels = Qrels::load_beir(data.join("qrels/test.tsv")).unwrap();
    let queries = load_beir_queries(data.join("queries.jsonl")).unwrap();

    // Build the cases deterministically: distractor abstracts picked by a fixed stride.
    let mut start_cases = Vec::new();
    let mut end_cases = Vec::new();
    let mut pick = 0usize;
    for (qid, query) in queries
        .iter()
        .filter(|(id, _)| qrels.get(id).is_some())
        .take(QUERIES)
    {
        let relevant: Vec<&String> = qrels
            .get(qid)
            .unwrap()
            .iter()
            .filter(|(_, r)| **r > 0)
            .map(|(d, _)| d)
            .collect();
        let Some(answer) = relevant.first().and_then(|d| corpus.get(*d)) else {
            continue;
        };
        let mut filler = || {
            loop {
                pick = (pick + 7919) % ids.len();
                let id = ids[pick];
                if !relevant.contains(&id) {
                    return corpus[id].clone();
                }
            }
        };
        let background: Vec<String> = (0..ABSTRACTS_PER_DOC - 1).map(|_| filler()).collect();
        let distractors: Vec<String> = (0..DISTRACTORS)
            .map(|_| {
                (0..ABSTRACTS_PER_DOC)
                    .map(|_| filler())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let at_start = format!("{answer} {}", background.join(" "));
        let at_end = format!("{} {answer}", background.join(" "));
        let mut start = vec![at_start];
        start.extend(distractors.iter().cloned());
        let mut end = vec![at_end];
        end.extend(distractors);
        start_cases.push((query.clone(), start));
        end_cases.push((query.clone(), end));
    }
    assert!(start_cases.len() >= 30);

    let model = repo_root().join("plugins/sieve-rerank-onnx/tests/fixtures/lexical");
    let windowed = CrossEncoder::open(
        &model,
        CrossEncoderConfig {
            max_windows: Some(16),
            ..Default::default()
        },
    )
    .unwrap();
    let truncating = CrossEncoder::open(
        &model,
        CrossEncoderConfig {
            max_windows: Some(1),
            ..Default::default()
        },
    )
    .unwrap();

    let windowed_start = accuracy(&windowed, &start_cases);
    let windowed_end = accuracy(&windowed, &end_cases);
    let truncated_start = accuracy(&truncating, &start_cases);
    let truncated_end = accuracy(&truncating, &end_cases);
    println!(
        "long documents ({} SciFact queries, {ABSTRACTS_PER_DOC} abstracts per document, {DISTRACTORS} distractors): \
         windows start {windowed_start:.3} end {windowed_end:.3}; truncation start {truncated_start:.3} end {truncated_end:.3}",
        start_cases.len()
    );
    assert!(
        windowed_start >= 0.5,
        "the scorer has signal: {windowed_start}"
    );
    assert!(
        (windowed_start - windowed_end).abs() <= 0.05,
        "position does not matter with windows"
    );
    assert!(
        truncated_end <= windowed_end - 0.3,
        "truncation misses late answers"
    );
}
