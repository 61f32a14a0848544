//! Fixtures shared by the integration tests (see `tests/fixtures/make_fixtures.py`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig};

/// `tests/fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The lexical toy cross-encoder's directory (`model.onnx`: logits `[B, 1]`, with token types).
pub fn lexical_dir() -> PathBuf {
    fixtures().join("lexical")
}

/// The two-class variant (logits `[B, 2]` = `[-s/2, s/2]`).
pub fn two_class_model() -> PathBuf {
    lexical_dir().join("onnx/model_two_class.onnx")
}

/// The variant without a `token_type_ids` input.
pub fn no_token_types_model() -> PathBuf {
    lexical_dir().join("onnx/model_no_token_types.onnx")
}

/// The fixture tokenizer (all-MiniLM-L6-v2's).
pub fn tokenizer_file() -> PathBuf {
    lexical_dir().join("tokenizer.json")
}

/// The tokenizer loaded independently of the crate, with its own padding and truncation off,
/// to compare against.
pub fn reference_tokenizer() -> tokenizers::Tokenizer {
    let mut tokenizer = tokenizers::Tokenizer::from_file(tokenizer_file()).expect("tokenizer");
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).expect("no truncation");
    tokenizer
}

/// Opens the lexical fixture with `config`.
pub fn open(path: &Path, config: CrossEncoderConfig) -> CrossEncoder {
    CrossEncoder::open(path, config).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A temporary model directory holding `model` as `model.onnx`, plus `tokenizer.json` when
/// `with_tokenizer`.
pub fn temp_model_dir(model: &Path, with_tokenizer: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(model, dir.path().join("model.onnx")).expect("copy model");
    if with_tokenizer {
        std::fs::copy(tokenizer_file(), dir.path().join("tokenizer.json")).expect("copy tokenizer");
    }
    dir
}

/// Real prose (about 380 tokens) that shares no words with [`QUERY`].
pub fn filler() -> String {
    std::fs::read_to_string(fixtures().join("filler.txt")).expect("filler.txt")
}

/// A query whose words appear nowhere in [`filler`].
pub const QUERY: &str = "glacier moraine sediment";
