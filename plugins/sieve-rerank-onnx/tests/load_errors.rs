//! Models the cross-encoder cannot drive are refused at load time with a clear
//! `RerankError::Load` that names the file and the problem.

mod common;

use std::path::Path;

use common::*;
use sieve_core::RerankError;
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig, Device, SessionOptions};

/// Opens `path` and returns the load error's message, failing on success or another error kind.
fn load_error(path: &Path, config: CrossEncoderConfig) -> String {
    match CrossEncoder::open(path, config) {
        Err(RerankError::Load(message)) => message,
        Err(other) => panic!("{}: expected a load error, got {other:?}", path.display()),
        Ok(encoder) => panic!("{}: loaded {encoder:?}", path.display()),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[test]
fn missing_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-model");
    let message = load_error(&missing, CrossEncoderConfig::default());
    assert_mentions(&message, &["no-such-model", "does not exist"]);
}

#[test]
fn directory_without_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(tokenizer_file(), dir.path().join("tokenizer.json")).expect("copy");
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &message,
        &["no ONNX model", &dir.path().display().to_string()],
    );
}

#[test]
fn directory_without_tokenizer() {
    let dir = temp_model_dir(&lexical_dir().join("model.onnx"), false);
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &message,
        &["tokenizer.json", &dir.path().display().to_string()],
    );

    // A model file given directly needs its tokenizer beside it too.
    let message = load_error(
        &dir.path().join("model.onnx"),
        CrossEncoderConfig::default(),
    );
    assert_mentions(&message, &["tokenizer.json"]);
}

#[test]
fn broken_tokenizer() {
    let dir = temp_model_dir(&lexical_dir().join("model.onnx"), false);
    std::fs::write(dir.path().join("tokenizer.json"), "{ not a tokenizer").expect("write");
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["tokenizer.json", "could not load tokenizer"]);
}

#[test]
fn garbage_model_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(tokenizer_file(), dir.path().join("tokenizer.json")).expect("copy");
    let model = dir.path().join("model.onnx");
    std::fs::write(
        &model,
        b"this is not an ONNX protobuf, just some bytes \x00\x01\x02",
    )
    .expect("write");
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &message,
        &["could not load ONNX model", &model.display().to_string()],
    );
}

#[test]
fn model_without_input_ids() {
    let dir = temp_model_dir(&fixtures().join("broken/no_input_ids.onnx"), true);
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &message,
        &[
            "model.onnx",
            "cannot be used as a cross-encoder",
            "no `input_ids` input",
            "ids",
        ],
    );
}

#[test]
fn model_with_an_unexpected_input() {
    let dir = temp_model_dir(&fixtures().join("broken/extra_input.onnx"), true);
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(&message, &["model.onnx", "unexpected input `position_ids`"]);
}

#[test]
fn model_with_three_logits() {
    let dir = temp_model_dir(&fixtures().join("broken/three_logits.onnx"), true);
    let message = load_error(dir.path(), CrossEncoderConfig::default());
    assert_mentions(
        &message,
        &["model.onnx", "`logits`", "[batch, 1] or [batch, 2]"],
    );
}

#[test]
fn configurations_that_cannot_work() {
    let config = CrossEncoderConfig {
        max_length: Some(60),
        ..CrossEncoderConfig::default()
    };
    let message = load_error(&lexical_dir(), config);
    assert_mentions(&message, &["max_length 60", "no room for the document"]);

    let config = CrossEncoderConfig {
        max_windows: Some(0),
        ..CrossEncoderConfig::default()
    };
    assert_mentions(&load_error(&lexical_dir(), config), &["max_windows"]);

    let config = CrossEncoderConfig {
        window_stride: Some(0),
        ..CrossEncoderConfig::default()
    };
    assert_mentions(&load_error(&lexical_dir(), config), &["window_stride"]);
}

/// Without the `cuda` feature, asking for CUDA is an error, never a silent CPU fallback.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_cuda_feature_is_refused() {
    let config = CrossEncoderConfig {
        session: SessionOptions {
            device: Device::Cuda(0),
            ..SessionOptions::default()
        },
        ..CrossEncoderConfig::default()
    };
    let message = load_error(&lexical_dir(), config);
    assert_mentions(&message, &["CUDA", "--features cuda"]);
}

/// With the `cuda` feature, CUDA either works (and says so) or fails plainly.
#[cfg(feature = "cuda")]
#[test]
fn cuda_with_the_cuda_feature_runs_or_fails_plainly() {
    use sieve_core::{RerankDoc, Reranker};
    let config = CrossEncoderConfig {
        session: SessionOptions {
            device: Device::Cuda(0),
            ..SessionOptions::default()
        },
        ..CrossEncoderConfig::default()
    };
    match CrossEncoder::open(&lexical_dir(), config) {
        Ok(encoder) => {
            assert_eq!(encoder.device(), "cuda:0");
            let docs = [RerankDoc::new("", "glacier moraine")];
            let out = encoder.rerank(QUERY, &docs).expect("rerank on CUDA");
            assert_eq!(out.stats.device, "cuda:0");
        }
        Err(RerankError::Load(message)) => assert_mentions(&message, &["CUDA"]),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}
