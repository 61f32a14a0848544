//! Fuzzing every reader sieve exposes to untrusted input, on stable Rust.
//!
//! Each target takes a real seed file (the sample corpus, its index, the bundled models' JSON and
//! codec files, qrels and runs), mutates it with a deterministic generator (bit flips, random
//! overwrites, truncation, insertion, deletion and duplication of byte ranges, and for text
//! targets line shuffles and hostile strings: control characters, invalid UTF-8, huge numbers,
//! megabyte lines) and feeds it to the reader. A case ends in one of: accepted, refused with an
//! error (both fine), a panic (a *crash*: caught and counted) or more than [`HANG`] of wall
//! time (a *hang*). The test fails on any crash or hang and prints, per target, the cases tried,
//! outcomes and the slowest case.
//!
//! `FUZZ_CASES` sets the cases per target (default 40, what CI runs); `FUZZ_SEED` the seed (each
//! target mixes in its name, so its cases are the same whichever targets run with it);
//! `FUZZ_PART=i/n` runs the i-th of n parts, `FUZZ_TARGET=name` one target;
//! `FUZZ_SAVE_CRASHES=dir` keeps crashing and hanging inputs; `FUZZ_REPORT=path.json` writes the table as
//! JSON. `scripts/fuzz.sh N` runs it in release, one part per core.

mod common;
mod fuzzing;

use std::path::{Path, PathBuf};

use common::*;
use fuzzing::*;
use sieve::{Mode, SearchRequest, Sieve};
use sieve_index::SieveIndex;
use sieve_index::ingest::{ColumnMapping, read_documents};

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            out.extend(files_below(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out.sort();
    out
}

fn search_all_modes(engine: &Sieve, query: &str) -> Result<(), String> {
    for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
        let mut request = SearchRequest::new(query);
        request.mode = mode;
        engine.search(&request).map_err(err)?;
    }
    Ok(())
}

#[test]
fn every_reader_survives_mutated_input() {
    let root = repo_root();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut done: Vec<Tally> = Vec::new();
    // As `sieve` does: a reader panic that sieve contains (and reports as an error) is not
    // printed, so every panic message in the output is a crash.
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !sieve_core::contain::containing_panic() {
            report_panic(info);
        }
    }));

    // Parquet bytes: the sample corpus.
    let mapping = ColumnMapping {
        title: Some("title".into()),
        ..ColumnMapping::default()
    };
    done.extend(fuzz_file(
        "parquet",
        &sample_corpus(),
        "corpus.parquet",
        false,
        dir,
        &|path| {
            read_documents(&[path.to_path_buf()], &mapping, 64, &mut |_, _| Ok(())).map_err(err)
        },
    ));

    // JSONL corpora (BEIR layout) -> Parquet.
    let out = dir.join("converted.parquet");
    done.extend(fuzz_file(
        "corpus jsonl",
        &root.join("examples/sample/sample.jsonl"),
        "corpus.jsonl",
        true,
        dir,
        &|path| {
            sieve_index::jsonl::beir_jsonl_to_parquet(path, &out)
                .map(|_| ())
                .map_err(err)
        },
    ));

    // Queries, qrels (BEIR tsv and TREC), runs (TREC).
    done.extend(fuzz_file(
        "queries jsonl",
        &root.join("examples/sample/queries.jsonl"),
        "queries.jsonl",
        true,
        dir,
        &|path| sieve_eval::load_beir_queries(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "qrels tsv",
        &root.join("examples/sample/qrels/test.tsv"),
        "qrels.tsv",
        true,
        dir,
        &|path| sieve_eval::Qrels::load_beir(path).map(|_| ()).map_err(err),
    ));
    let trec_run = dir.join("seed.trec");
    let qrels_trec = dir.join("seed.qrels");
    {
        let mut run = String::new();
        let mut qrels = String::new();
        for q in 1..=6 {
            for r in 1..=20 {
                run.push_str(&format!(
                    "q{q} Q0 doc-{r:03} {r} {} sieve\n",
                    1.0 / r as f64
                ));
                if r % 4 == 0 {
                    qrels.push_str(&format!("q{q} 0 doc-{r:03} {}\n", r % 3));
                }
            }
        }
        std::fs::write(&trec_run, run).unwrap();
        std::fs::write(&qrels_trec, qrels).unwrap();
    }
    done.extend(fuzz_file(
        "run trec",
        &trec_run,
        "run.trec",
        true,
        dir,
        &|path| sieve_eval::Run::load_trec(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "qrels trec",
        &qrels_trec,
        "qrels.trec",
        true,
        dir,
        &|path| sieve_eval::Qrels::load_trec(path).map(|_| ()).map_err(err),
    ));

    // Model files: late_joined.json, the state codec, tokenizer.json.
    let lj = root.join("models/sieve-ce-minilm-l6-lj");
    done.extend(fuzz_file(
        "late_joined.json",
        &lj.join("late_joined.json"),
        "late_joined.json",
        true,
        dir,
        &|path| {
            sieve_rerank_onnx::LateJoinedManifest::read(path)
                .map(|_| ())
                .map_err(err)
        },
    ));
    done.extend(fuzz_file(
        "state_codec.bin",
        &lj.join("state_codec.bin"),
        "state_codec.bin",
        false,
        dir,
        &|path| sieve_embed::StateCodec::open(path).map(|_| ()).map_err(err),
    ));
    done.extend(fuzz_file(
        "tokenizer.json",
        &embedder_model().join("tokenizer.json"),
        "tokenizer.json",
        true,
        dir,
        &|path| {
            let tokenizer = sieve_embed::load_tokenizer(path, 256).map_err(err)?;
            tokenizer
                .encode("how do statins lower cholesterol", true)
                .map(|_| ())
                .map_err(err)
        },
    ));

    // Truncated ONNX graphs (the bi-encoder), a tenth of the cases: each writes a prefix of
    // the 35 MB file and opens it.
    if wanted("onnx truncated") {
        let mut tally = Tally::new("onnx truncated");
        let mut rng = rng_for(tally.name);
        let onnx = std::fs::read(embedder_model().join("onnx/model.onnx")).unwrap();
        let model = dir.join("model");
        copy_dir(&embedder_model(), &model);
        for case in 0..(cases() / 10).max(3) {
            let mut bytes = onnx[..rng.below(onnx.len())].to_vec();
            if case % 2 == 1 && !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] ^= 0x55;
            }
            std::fs::write(model.join("onnx/model.onnx"), &bytes).unwrap();
            tally.run(format!("onnx case {case}"), || {
                sieve_embed::BiEncoder::open(&model, sieve_embed::EmbedderConfig::default())
                    .map(|_| ())
                    .map_err(err)
            });
        }
        done.push(tally.finish());
    }

    // Index directories: one file removed, truncated or bit-flipped, then opened and searched.
    let index = sample_index();
    if wanted("index dir") {
        let mut tally = Tally::new("index dir");
        let mut rng = rng_for(tally.name);
        let files: Vec<PathBuf> = files_below(index)
            .into_iter()
            .map(|f| f.strip_prefix(index).unwrap().to_path_buf())
            .collect();
        for case in 0..cases() {
            let copy = dir.join(format!("idx-{case}"));
            copy_dir(index, &copy);
            let victim = copy.join(&files[rng.below(files.len())]);
            let bytes = std::fs::read(&victim).unwrap();
            match rng.below(3) {
                0 => std::fs::remove_file(&victim).unwrap(),
                1 => std::fs::write(&victim, &bytes[..rng.below(bytes.len().max(1))]).unwrap(),
                _ => std::fs::write(&victim, mutate(&bytes, &mut rng, false)).unwrap(),
            }
            let label = format!(
                "index case {case} ({})",
                victim.strip_prefix(&copy).unwrap().display()
            );
            tally.run(label, || {
                let engine = Sieve::open(&copy).map_err(err)?;
                search_all_modes(&engine, "how do statins lower cholesterol")?;
                let opened = SieveIndex::open(&copy).map_err(err)?;
                for ordinal in 0..opened.len() as u32 {
                    opened.docs.get(ordinal).map_err(err)?;
                    if let Some(states) = &opened.states {
                        states.get(ordinal).map_err(err)?;
                    }
                }
                Ok(())
            });
            let _ = std::fs::remove_dir_all(&copy);
        }
        done.push(tally.finish());
    }

    // Query strings against the real sample index.
    if wanted("query string") {
        let engine = Sieve::open(index).unwrap();
        let mut tally = Tally::new("query string");
        let mut rng = rng_for(tally.name);
        let seeds = std::fs::read_to_string(root.join("examples/sample/queries.jsonl")).unwrap();
        for case in 0..cases() {
            let base = seeds.lines().nth(case % 24).unwrap_or("q").as_bytes();
            let query = match case % 5 {
                0 => "the of and to a in is it".to_string(),
                1 => "x".repeat(1 << 20),
                _ => String::from_utf8_lossy(&mutate(base, &mut rng, true)).into_owned(),
            };
            tally.run(format!("query case {case} ({} bytes)", query.len()), || {
                search_all_modes(&engine, &query)
            });
        }
        done.push(tally.finish());
    }

    // HTTP bodies per route, through `sieve serve`'s router in process (the bundled reranker and
    // the sample index; default limits). A panic or a 500 is a crash; 4xx is a refusal.
    done.extend(fuzz_http_bodies(index));

    // The table, and the JSON report when asked.
    report(&done);
    let crashes: Vec<&String> = done.iter().flat_map(|t| &t.crashes).collect();
    let hangs: Vec<&String> = done.iter().flat_map(|t| &t.hangs).collect();
    assert!(crashes.is_empty(), "crashes: {crashes:#?}");
    assert!(hangs.is_empty(), "hangs: {hangs:#?}");
}

/// One target per scoring route: mutations of a valid body of that route's protocol.
fn fuzz_http_bodies(index_dir: &Path) -> Vec<Tally> {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    if !TARGETS
        .iter()
        .any(|(t, _)| t.starts_with("http ") && wanted(t))
    {
        return Vec::new();
    }

    let reranker_dir = repo_root().join("models/sieve-ce-minilm-l6-lj");
    let encoder = std::sync::Arc::new(
        sieve_rerank_onnx::CrossEncoder::open(
            &reranker_dir,
            sieve_rerank_onnx::CrossEncoderConfig::default(),
        )
        .expect("bundled reranker"),
    );
    let tokenizer = encoder.tokenizer_path().to_path_buf();
    let reranker: std::sync::Arc<dyn sieve::Reranker> = encoder;
    let model = sieve_serve::ModelInfo::new("sieve-ce", reranker.clone(), &tokenizer, 256)
        .expect("model info");
    let index = std::sync::Arc::new(
        Sieve::open(index_dir)
            .expect("sample index")
            .with_reranker(reranker),
    );
    let server = sieve_serve::Server::new(sieve_serve::ServeConfig::default(), model, Some(index))
        .expect("server");
    let router = server.router();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let docs = r#"["Statins lower LDL cholesterol.", "Volcanoes erupt.", "Sleep and memory."]"#;
    let routes: [(&'static str, &str, String); 5] = [
        (
            "http /v1/rerank",
            "/v1/rerank",
            format!(
                r#"{{"query":"statins","documents":{docs},"top_n":2,"return_documents":true}}"#
            ),
        ),
        (
            "http /v2/rerank",
            "/v2/rerank",
            format!(r#"{{"model":"m","query":"statins","documents":{docs},"top_n":2}}"#),
        ),
        (
            "http /rerank (TEI)",
            "/rerank",
            format!(
                r#"{{"query":"statins","texts":{docs},"raw_scores":false,"return_text":true,"truncate":true}}"#
            ),
        ),
        (
            "http /weaviate",
            "/weaviate/rerank",
            format!(r#"{{"query":"statins","documents":{docs}}}"#),
        ),
        (
            "http /search",
            "/search",
            r#"{"query":"how do statins lower cholesterol","k":5,"rerank":true,"budget":"fast"}"#
                .to_string(),
        ),
    ];
    let mut tallies = Vec::new();
    for (name, route, seed_body) in routes.into_iter().filter(|(name, _, _)| wanted(name)) {
        let mut tally = Tally::new(name);
        let mut rng = rng_for(name);
        for case in 0..cases() {
            let body = mutate(seed_body.as_bytes(), &mut rng, true);
            let request = Request::post(route)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request");
            tally.run(format!("{route} case {case}"), || {
                let response = runtime
                    .block_on(router.clone().oneshot(request))
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let bytes = runtime
                    .block_on(axum::body::to_bytes(response.into_body(), 1 << 26))
                    .map_err(|e| e.to_string())?;
                if status.is_server_error() && status.as_u16() != 503 && status.as_u16() != 504 {
                    panic!("{status}: {}", String::from_utf8_lossy(&bytes));
                }
                if status.is_success() {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map(|_| ())
                        .map_err(|e| format!("2xx with a body that is not JSON: {e}"))
                } else {
                    Err(format!("{status}"))
                }
            });
        }
        tallies.push(tally.finish());
    }
    tallies
}
