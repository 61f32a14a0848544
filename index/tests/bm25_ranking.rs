//! BM25 ranking on a hand-made corpus: stemming, stop words, term rarity and length
//! normalisation behave as BM25 says they should.

use sieve_index::bm25::{AnalyzerConfig, Bm25Index, Bm25Writer};

const CORPUS: &[(&str, &str)] = &[
    (
        "Statins",
        "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver.",
    ),
    (
        "Eggs",
        "An egg contains cholesterol, but dietary cholesterol matters less than saturated fat.",
    ),
    (
        "Running",
        "Runners who run long distances adapt their muscles and heart.",
    ),
    (
        "Bread",
        "Yeast ferments sugars and the dough rises as carbon dioxide is trapped.",
    ),
    (
        "Cholesterol everywhere",
        "Cholesterol cholesterol cholesterol: a long text that repeats the word cholesterol many times, together with many other words about lipids, membranes, hormones, bile acids, vitamin D synthesis and the transport of fats in lipoproteins through the blood.",
    ),
    ("", "The the the of and a an is are was were."),
];

fn build(analyzer: &AnalyzerConfig) -> (tempfile::TempDir, Bm25Index) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Bm25Writer::create(dir.path(), analyzer, 1).unwrap();
    for (i, (title, text)) in CORPUS.iter().enumerate() {
        writer.add(i as u32, title, text).unwrap();
    }
    writer.finish().unwrap();
    let index = Bm25Index::open(dir.path(), analyzer).unwrap();
    (dir, index)
}

fn ranking(index: &Bm25Index, query: &str) -> Vec<u32> {
    index
        .search(query, 10)
        .unwrap()
        .candidates
        .iter()
        .map(|c| c.doc)
        .collect()
}

#[test]
fn rare_terms_outweigh_common_ones() {
    let (_dir, index) = build(&AnalyzerConfig::default());
    assert_eq!(index.num_docs(), CORPUS.len() as u64);
    // "reductase" appears once; "cholesterol" in three docs: the statin doc must win.
    let r = ranking(&index, "cholesterol reductase");
    assert_eq!(r[0], 0, "{r:?}");
    assert!(r.contains(&1) && r.contains(&4));
}

#[test]
fn term_frequency_saturates_and_length_normalises() {
    let (_dir, index) = build(&AnalyzerConfig::default());
    // Doc 4 repeats "cholesterol" 5 times but is long; doc 1 has it twice and is short.
    let list = index.search("cholesterol", 10).unwrap();
    let score = |doc| list.candidates.iter().find(|c| c.doc == doc).unwrap().score;
    assert!(score(4) > score(1), "more occurrences still help");
    assert!(
        score(4) < 2.5 * score(1),
        "but far less than proportionally (k1 saturation, length norm)"
    );
}

#[test]
fn stemming_matches_inflections_and_can_be_disabled() {
    let (_dir, index) = build(&AnalyzerConfig::default());
    assert_eq!(
        ranking(&index, "runs")[0],
        2,
        "runs/runners/run stem to run"
    );
    assert_eq!(ranking(&index, "ferment rising dough")[0], 3);

    let no_stem = AnalyzerConfig {
        stemmer: None,
        ..AnalyzerConfig::default()
    };
    let (_dir2, plain) = build(&no_stem);
    assert!(
        ranking(&plain, "runs").is_empty(),
        "without stemming `runs` matches nothing"
    );
}

#[test]
fn stop_words_are_dropped_unless_disabled() {
    let (_dir, index) = build(&AnalyzerConfig::default());
    assert!(ranking(&index, "the of and").is_empty());
    let keep = AnalyzerConfig {
        stopwords: None,
        ..AnalyzerConfig::default()
    };
    let (_dir2, all_words) = build(&keep);
    assert_eq!(ranking(&all_words, "the of and")[0], 5);
}

#[test]
fn titles_are_searchable_and_odd_syntax_is_forgiven() {
    let (_dir, index) = build(&AnalyzerConfig::default());
    assert_eq!(ranking(&index, "statins")[0], 0);
    // Unbalanced quotes, field syntax and operators do not make the query fail.
    assert_eq!(ranking(&index, "\"statins AND (liver: ")[0], 0);
    assert!(index.search("statins", 0).unwrap().candidates.is_empty());
}

#[test]
fn unknown_languages_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = AnalyzerConfig {
        stemmer: Some("klingon".into()),
        stopwords: None,
    };
    let msg = Bm25Writer::create(dir.path(), &bad, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("klingon"), "{msg}");
}
