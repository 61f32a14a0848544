//! The bundled bi-encoder graphs (`models/all-MiniLM-L6-v2/onnx/`): the default graph (int8
//! weight products, activations quantised per token) gives the same embeddings whatever the batch
//! shape and stays within a cosine of 0.999 of the fp32 graph it was made from, which agrees with
//! the upstream export it replaced. Real model files, the sample corpus' texts.

use std::path::{Path, PathBuf};

use sieve_embed::{BiEncoder, EmbedderConfig, document_text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample_texts() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo().join("examples/sample/sample.jsonl")).expect("sample");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            document_text(
                v["title"].as_str().unwrap_or_default(),
                v["text"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

fn embed(model: &Path, batch_tokens: usize, texts: &[String]) -> Vec<Vec<f32>> {
    let encoder = BiEncoder::open(
        model,
        EmbedderConfig {
            batch_tokens,
            ..EmbedderConfig::default()
        },
    )
    .expect("open the bi-encoder");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    encoder.embed(&refs).expect("embed")
}

fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
        .collect()
}

#[test]
fn the_default_graph_does_not_depend_on_the_batch_shape() {
    let texts = sample_texts();
    let model = repo().join("models/all-MiniLM-L6-v2");
    let small = embed(&model, 512, &texts);
    let large = embed(&model, 16_384, &texts);
    let worst = cosines(&small, &large).into_iter().fold(1f32, f32::min);
    assert!(
        worst > 0.99999,
        "batch shape changed an embedding: cosine {worst}"
    );
}

#[test]
fn the_default_int8_graph_stays_close_to_the_fp32_one() {
    let texts = sample_texts();
    let int8 = embed(&repo().join("models/all-MiniLM-L6-v2"), 512, &texts);
    let fp32 = embed(
        &repo().join("models/all-MiniLM-L6-v2/onnx/model_fp32.onnx"),
        512,
        &texts,
    );
    let c = cosines(&fp32, &int8);
    let worst = c.iter().copied().fold(1f32, f32::min);
    let mean = c.iter().sum::<f32>() / c.len() as f32;
    assert!(
        worst > 0.998 && mean > 0.999,
        "int8 drifted: min {worst}, mean {mean}"
    );
    // It must still be a different computation (really int8), not the fp32 graph again.
    assert!(
        mean < 0.99999,
        "int8 graph gives fp32 results: mean cosine {mean}"
    );
}

#[test]
fn the_fp32_graph_agrees_with_the_upstream_export() {
    let upstream = repo().join("../shared/models/all-MiniLM-L6-v2/onnx/model_int8.onnx");
    if !upstream.exists() {
        eprintln!("skipped: {} is not here", upstream.display());
        return;
    }
    let texts = sample_texts();
    let ours = embed(
        &repo().join("models/all-MiniLM-L6-v2/onnx/model_fp32.onnx"),
        512,
        &texts,
    );
    let theirs = embed(&upstream, 512, &texts);
    let worst = cosines(&ours, &theirs).into_iter().fold(1f32, f32::min);
    assert!(
        worst > 0.998,
        "the fused graph disagrees with upstream's: cosine {worst}"
    );
}

/// Copies the model directory's small files and the default graph into `dir`.
fn copy_model(dir: &Path) {
    let src = repo().join("models/all-MiniLM-L6-v2");
    std::fs::create_dir_all(dir.join("onnx")).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("model dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::copy(src.join("onnx/model.onnx"), dir.join("onnx/model.onnx")).expect("copy graph");
}

#[test]
fn an_index_refuses_a_bi_encoder_swapped_under_it() {
    let sieve = env!("CARGO_BIN_EXE_sieve");
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    copy_model(&model);
    let index = tmp.path().join("idx");
    let built = std::process::Command::new(sieve)
        .args([
            "index",
            "examples/sample/corpus.parquet",
            "--rerank-states",
            "off",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&index)
        .current_dir(repo())
        .output()
        .expect("run sieve index");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let search = || {
        let out = std::process::Command::new(sieve)
            .arg("search")
            .arg(&index)
            .arg("statins and cholesterol")
            .current_dir(repo())
            .output()
            .expect("run sieve search");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(search().0, "the untouched index answers");

    // Another graph at the recorded path (here the fp32 one): refused, not silently mixed.
    std::fs::copy(
        repo().join("models/all-MiniLM-L6-v2/onnx/model_fp32.onnx"),
        model.join("onnx/model.onnx"),
    )
    .expect("swap");
    let (ok, err) = search();
    assert!(!ok, "a swapped bi-encoder must be refused");
    assert!(
        err.contains("not the one the index was built with") && err.contains("re-index"),
        "{err}"
    );

    // The file gone: refused with what to do.
    std::fs::remove_file(model.join("onnx/model.onnx")).expect("remove");
    let (ok, err) = search();
    assert!(
        !ok && err.contains("no longer there") && err.contains("sieve index"),
        "{err}"
    );
}

#[test]
fn a_huge_document_embeds_like_its_beginning() {
    // Text past what 256 tokens can cover is cut before tokenizing (a 50 MB document cost 3.4 GB of
    // tokenizer memory); the cut must not change what the model sees.
    let sentence = "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver. ";
    let huge = sentence.repeat(5_000_000 / sentence.len());
    let head: String = huge.chars().take(4_000).collect();
    let texts = [huge, head];
    let v = embed(&repo().join("models/all-MiniLM-L6-v2"), 512, &texts);
    let c = cosines(&v[..1], &v[1..])[0];
    assert!(c > 0.99999, "the cut changed the embedding: cosine {c}");
}
