//! The toy segmented Matryoshka model (see `tests/fixtures/make_matryoshka_fixture.py`): hidden
//! size 8, exits after layers 2, 4 and 6 (one segment each), head widths [8, 4], max_length 128,
//! query cap 32, per-head calibration, fp32 files only (the int8 names point at missing files).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sieve_core::{Budget, RerankDoc, RerankError, RerankOutput, Reranker};
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig};

/// `tests/fixtures/matryoshka/`.
pub fn toy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/matryoshka")
}

/// Exits and widths of the toy model.
pub const EXITS: [u32; 3] = [2, 4, 6];
pub const WIDTHS: [u32; 2] = [8, 4];

/// Opens a model directory, panicking with the error.
pub fn open_at(path: &Path, config: CrossEncoderConfig) -> CrossEncoder {
    CrossEncoder::open(path, config).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Opens the toy model.
pub fn open_toy(config: CrossEncoderConfig) -> CrossEncoder {
    open_at(&toy_dir(), config)
}

/// A writable copy of the toy model directory.
pub fn temp_toy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(toy_dir()).expect("read toy dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

/// Rewrites `dir/matryoshka.json` through `edit`.
pub fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("matryoshka.json");
    let text = std::fs::read_to_string(&path).expect("read manifest");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("parse manifest");
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
}

/// Opens `path` and returns the load error's message, failing on success or another error kind.
pub fn load_error(path: &Path, config: CrossEncoderConfig) -> String {
    match CrossEncoder::open(path, config) {
        Err(RerankError::Load(message)) => message,
        Err(other) => panic!("{}: expected a load error, got {other:?}", path.display()),
        Ok(encoder) => panic!("{}: loaded {encoder:?}", path.display()),
    }
}

/// The message of an `Invalid` error, failing on anything else.
pub fn invalid(result: Result<impl std::fmt::Debug, RerankError>) -> String {
    match result {
        Err(RerankError::Invalid(message)) => message,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

pub fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// Real prose (about 380 tokens: several windows at max_length 128).
pub fn filler() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filler.txt"))
        .expect("filler.txt")
}

pub const QUERY: &str = "how do statins lower cholesterol";

/// Twelve documents: short ones, an empty one, titled ones and two long ones (several windows).
pub fn doc_texts() -> Vec<(String, String)> {
    let filler = filler();
    let half = filler[..filler.len() / 2].to_string();
    [
        (
            "",
            "Statins lower cholesterol by blocking an enzyme the liver uses to make it.",
        ),
        (
            "",
            "The weather in Paris is mild in spring, with frequent light rain.",
        ),
        (
            "Lipids",
            "Cholesterol is carried in the blood by lipoproteins.",
        ),
        ("", ""),
        ("", "A recipe for bread: flour, water, salt and yeast."),
        ("Long", filler.as_str()),
        (
            "",
            "HMG-CoA reductase inhibitors reduce LDL cholesterol and cardiovascular risk.",
        ),
        ("", half.as_str()),
        ("Sports", "The match ended in a draw after extra time."),
        ("", "Dietary fibre can modestly lower blood cholesterol."),
        ("", "Glaciers carve valleys and leave moraines behind."),
        (
            "",
            "Statin side effects include muscle pain in some patients.",
        ),
    ]
    .iter()
    .map(|(t, x)| (t.to_string(), x.to_string()))
    .collect()
}

pub fn as_docs(texts: &[(String, String)]) -> Vec<RerankDoc<'_>> {
    texts
        .iter()
        .map(|(title, text)| RerankDoc::new(title, text))
        .collect()
}

/// Reranks the standard documents under `budget`.
pub fn run(encoder: &CrossEncoder, budget: &Budget) -> RerankOutput {
    let texts = doc_texts();
    let out = encoder
        .rerank_budgeted(QUERY, &as_docs(&texts), budget)
        .unwrap_or_else(|e| panic!("budget {budget}: {e}"));
    assert_eq!(out.scores.len(), texts.len(), "one score per document");
    assert_eq!(out.traces.len(), texts.len(), "one trace per document");
    out
}

/// The trace score of one head for document `d`.
pub fn trace_raw(out: &RerankOutput, d: usize, layer: u32, width: u32) -> f32 {
    out.traces[d]
        .exits
        .iter()
        .find(|e| e.layer == layer && e.width == width)
        .unwrap_or_else(|| panic!("document {d} has no exit {layer}:{width} in its trace"))
        .raw
}

/// `|a - b| <= tol * max(1, |b|)`.
pub fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// The one-exit budget after `layer` with the `width`-wide head.
pub fn exit(layer: u32, width: u32) -> Budget {
    Budget::Exit { layer, width }
}

/// `s` parsed as a budget (`8@2,4@4,2@6`, `4:8`, a profile name); panics naming it if invalid.
pub fn parse(s: &str) -> Budget {
    Budget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}
