//! Living indexes: `sieve index --append` and `sieve delete` publish new generations that answer
//! as a fresh build of the same corpus would, refuse what would mix or lose data, and leave
//! readers of the previous generation answering.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use sieve::{Mode, SearchRequest, Sieve};
use sieve_index::SieveIndex;
use sieve_index::ingest::{ColumnMapping, read_documents};

/// (id, title, text)
type Doc = (String, String, String);

fn read_corpus(file: &Path) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mapping = ColumnMapping {
        title: Some("title".into()),
        ..ColumnMapping::default()
    };
    read_documents(&[file.to_path_buf()], &mapping, 1024, &mut |_, batch| {
        docs.extend(batch.into_iter().map(|d| (d.id, d.title, d.text)));
        Ok(())
    })
    .unwrap();
    docs
}

fn write_corpus(path: &Path, docs: &[Doc]) {
    let column = |f: fn(&Doc) -> &String| docs.iter().map(|d| Some(f(d).clone())).collect();
    let batch = string_batch(&[
        ("id", column(|d| &d.0)),
        ("title", column(|d| &d.1)),
        ("text", column(|d| &d.2)),
    ]);
    write_parquet(path, &[batch], 1024);
}

fn sieve_ok(args: &[&str]) -> String {
    let output = run_sieve(args);
    let (stdout, stderr) = texts(&output);
    assert!(
        output.status.success(),
        "sieve {args:?}\n{stdout}\n{stderr}"
    );
    stdout
}

fn sieve_err(args: &[&str]) -> String {
    let output = run_sieve(args);
    let (stdout, stderr) = texts(&output);
    assert!(
        !output.status.success(),
        "sieve {args:?} should fail\n{stdout}"
    );
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn queries(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Builds `docs` in two halves (build + append), deletes `delete`, builds the remaining corpus
/// fresh, and compares the two indexes: BM25 identical, dense agreeing, every stored vector and
/// state carried along.
fn updated_equals_fresh(dir: &Path, docs: &[Doc], delete: &[String], queries: &[String]) {
    let half = docs.len() / 2;
    let (a, b) = (dir.join("a.parquet"), dir.join("b.parquet"));
    write_corpus(&a, &docs[..half]);
    write_corpus(&b, &docs[half..]);
    let updated = dir.join("updated");
    sieve_ok(&["index", s(&a), "--out", s(&updated), "--json"]);
    let appended: serde_json::Value = serde_json::from_str(&sieve_ok(&[
        "index",
        "--append",
        s(&b),
        "--into",
        s(&updated),
        "--json",
    ]))
    .unwrap();
    assert_eq!(appended["added"], docs.len() - half);
    assert_eq!(appended["generation"], 2);
    let ids_file = dir.join("delete.txt");
    std::fs::write(&ids_file, delete.join("\n")).unwrap();
    let deleted: serde_json::Value = serde_json::from_str(&sieve_ok(&[
        "delete",
        s(&updated),
        "--ids",
        s(&ids_file),
        "--json",
    ]))
    .unwrap();
    assert_eq!(deleted["deleted"], delete.len());
    assert_eq!(deleted["documents"], docs.len() - delete.len());

    let remaining: Vec<Doc> = docs
        .iter()
        .filter(|d| !delete.contains(&d.0))
        .cloned()
        .collect();
    let all = dir.join("final.parquet");
    write_corpus(&all, &remaining);
    let fresh = dir.join("fresh");
    sieve_ok(&["index", s(&all), "--out", s(&fresh), "--json"]);

    let (u, f) = (
        SieveIndex::open(&updated).unwrap(),
        SieveIndex::open(&fresh).unwrap(),
    );
    assert_eq!(u.len(), remaining.len());
    let kinds: Vec<&str> = u.manifest.history.iter().map(|g| g.kind.as_str()).collect();
    assert_eq!(kinds, ["build", "append", "delete"]);
    assert_eq!(u.manifest.generation(), 3);
    assert_eq!(u.manifest.source.files.len(), 2);

    // Every kept document brought its text, vector and rerank states along.
    let ordinals = |index: &SieveIndex| -> HashMap<String, u32> {
        (0..index.len() as u32)
            .map(|o| (index.docs.get(o).unwrap().id, o))
            .collect()
    };
    let (uo, fo) = (ordinals(&u), ordinals(&f));
    assert_eq!(
        uo.keys().collect::<std::collections::BTreeSet<_>>(),
        fo.keys().collect()
    );
    let dim = u.manifest.counts.vector_dim;
    let uv = sieve_index::dense::read_vectors(&updated.join("vectors.f32"), u.len(), dim).unwrap();
    let fv = sieve_index::dense::read_vectors(&fresh.join("vectors.f32"), f.len(), dim).unwrap();
    let (us, fs) = (u.states.as_ref().unwrap(), f.states.as_ref().unwrap());
    for (id, &o) in &uo {
        let p = fo[id];
        assert_eq!(u.docs.get(o).unwrap(), f.docs.get(p).unwrap());
        let (x, y) = (o as usize * dim, p as usize * dim);
        let cos: f32 = (0..dim).map(|i| uv[x + i] * fv[y + i]).sum();
        assert!(cos > 0.9999, "{id}: stored vector differs (cos {cos})");
        assert_eq!(
            us.get(o).unwrap().tokens(),
            fs.get(p).unwrap().tokens(),
            "{id}"
        );
    }
    assert_eq!(
        u.manifest.rerank_states.as_ref().unwrap().tokens,
        f.manifest.rerank_states.as_ref().unwrap().tokens
    );
    drop((u, f));

    // Searches: BM25 identical (ids and scores), dense and hybrid the same documents.
    let (u, f) = (Sieve::open(&updated).unwrap(), Sieve::open(&fresh).unwrap());
    let mut dense_recall = [0.0f64; 2];
    for q in queries {
        let search = |engine: &Sieve, mode: Mode| {
            let mut request = SearchRequest::new(q.clone());
            request.mode = mode;
            engine.search(&request).unwrap().hits
        };
        let (ub, fb) = (search(&u, Mode::Bm25), search(&f, Mode::Bm25));
        // Same documents with the same scores (to float rounding: tantivy sums per segment);
        // equal scores may come in either order (ordinals differ).
        let by_id = |hits: &[sieve::Hit]| -> std::collections::BTreeMap<String, f32> {
            hits.iter().map(|h| (h.id.clone(), h.fused.score)).collect()
        };
        let (ub, fb) = (by_id(&ub), by_id(&fb));
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
        // Documents in one top-10 only must tie with the last score (a tie at the cut).
        let cut = fb.values().copied().fold(f32::INFINITY, f32::min);
        for (id, score) in &ub {
            match fb.get(id) {
                Some(&other) => assert!(close(*score, other), "{q:?}: {id} {score} vs {other}"),
                None => assert!(
                    close(*score, cut),
                    "BM25 top-10 of {q:?}: {id} only after update"
                ),
            }
        }
        assert_eq!(ub.len(), fb.len(), "BM25 top-10 of {q:?}");
        for (n, engine) in [&u, &f].into_iter().enumerate() {
            let hits = search(engine, Mode::Dense);
            let opened = engine.index();
            let exact = opened
                .dense
                .exact_search(&engine.embed_query(q).unwrap(), 10)
                .unwrap();
            let exact_ids: Vec<String> = exact
                .candidates
                .iter()
                .map(|c| opened.docs.get(c.doc).unwrap().id)
                .collect();
            let found = hits.iter().filter(|h| exact_ids.contains(&h.id)).count();
            dense_recall[n] += found as f64 / exact_ids.len().max(1) as f64;
        }
    }
    for (n, recall) in dense_recall.iter().enumerate() {
        let recall = recall / queries.len() as f64;
        assert!(
            recall >= 0.99,
            "dense recall@10 vs exact search {recall:.4} ({})",
            ["updated", "fresh"][n]
        );
    }
}

#[test]
fn append_then_delete_answers_as_a_fresh_build_of_the_same_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let docs = read_corpus(&sample_corpus());
    let delete: Vec<String> = docs.iter().step_by(12).map(|d| d.0.clone()).collect();
    let queries = queries(&repo_root().join("examples/sample/queries.jsonl"));
    updated_equals_fresh(dir.path(), &docs, &delete, &queries);
}

/// The check on a real corpus: SciFact built in two halves, 100 documents deleted,
/// against a fresh build of the same final corpus, over all 300 test queries.
#[test]
fn scifact_in_two_halves_minus_100_equals_a_fresh_build() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipped: ../shared/data not found");
        return;
    };
    let data = shared.join("data/scifact");
    let dir = tempfile::tempdir().unwrap();
    let docs = read_corpus(&data.join("corpus.parquet"));
    let delete: Vec<String> = docs
        .iter()
        .skip(7)
        .step_by(docs.len() / 100)
        .take(100)
        .map(|d| d.0.clone())
        .collect();
    let test_qids: std::collections::HashSet<String> =
        std::fs::read_to_string(data.join("qrels/test.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect();
    let queries: Vec<String> = std::fs::read_to_string(data.join("queries.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|q| test_qids.contains(q["_id"].as_str().unwrap_or_default()))
        .map(|q| q["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(queries.len(), 300);
    updated_equals_fresh(dir.path(), &docs, &delete, &queries);
}

#[test]
fn duplicates_replacement_readers_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let docs = read_corpus(&sample_corpus());
    let base = dir.path().join("base.parquet");
    write_corpus(&base, &docs[..30]);
    let idx = dir.path().join("idx");
    sieve_ok(&["index", s(&base), "--out", s(&idx)]);
    let manifest = || std::fs::read(idx.join("manifest.json")).unwrap();
    let before = manifest();

    // A reader opened now keeps answering from its generation after updates.
    let reader = Sieve::open(&idx).unwrap();
    let mut probe = SearchRequest::new(docs[3].1.clone());
    probe.mode = Mode::Bm25;
    let answer = reader.search(&probe).unwrap().hits;

    // An id already indexed: refused by default, naming file, row and id; nothing changes.
    let dup = dir.path().join("dup.parquet");
    let new_text = "zebra quantum accordion: a replacement body".to_string();
    write_corpus(
        &dup,
        &[
            ("fresh-1".into(), "".into(), "a new document".into()),
            (docs[0].0.clone(), "Replaced".into(), new_text.clone()),
        ],
    );
    let err = sieve_err(&["index", "--append", s(&dup), "--into", s(&idx)]);
    assert!(
        err.contains("dup.parquet")
            && err.contains("row 1")
            && err.contains(&docs[0].0)
            && err.contains("already in the index"),
        "{err}"
    );
    assert_eq!(manifest(), before, "a refused append changes nothing");

    // Replace: the id keeps one document, with the new content.
    let out: serde_json::Value = serde_json::from_str(&sieve_ok(&[
        "index",
        "--append",
        s(&dup),
        "--into",
        s(&idx),
        "--on-duplicate",
        "replace",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (out["added"].as_u64(), out["replaced"].as_u64()),
        (Some(1), Some(1))
    );
    let now = Sieve::open(&idx).unwrap();
    assert_eq!(now.index().len(), 31);
    let mut q = SearchRequest::new("zebra quantum accordion");
    q.mode = Mode::Bm25;
    let hits = now.search(&q).unwrap().hits;
    assert_eq!(
        (hits[0].id.as_str(), hits[0].text.as_str()),
        (docs[0].0.as_str(), new_text.as_str())
    );
    assert_eq!(hits.iter().filter(|h| h.id == docs[0].0).count(), 1);

    // The old reader still answers exactly as before.
    assert_eq!(reader.search(&probe).unwrap().hits, answer);

    // Unknown ids are reported and publish nothing; deleting everything is refused.
    let gen_before = SieveIndex::open(&idx).unwrap().manifest.generation();
    let out: serde_json::Value = serde_json::from_str(&sieve_ok(&[
        "delete",
        s(&idx),
        "--id",
        "no-such-id",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["published"], false);
    assert_eq!(out["not_found"][0], "no-such-id");
    assert_eq!(
        SieveIndex::open(&idx).unwrap().manifest.generation(),
        gen_before
    );
    let all = dir.path().join("all.jsonl");
    let lines: Vec<String> = (0..now.index().len() as u32)
        .map(|o| format!("{{\"id\": \"{}\"}}", now.index().docs.get(o).unwrap().id))
        .collect();
    std::fs::write(&all, lines.join("\n")).unwrap();
    let err = sieve_err(&["delete", s(&idx), "--ids", s(&all)]);
    assert!(err.contains("delete every document"), "{err}");

    // A model swapped under the index (another sha256) is refused, not silently mixed.
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(idx.join("manifest.json")).unwrap()).unwrap();
    m["models"]["embedder"]["sha256"] = "0".repeat(64).into();
    std::fs::write(idx.join("manifest.json"), m.to_string()).unwrap();
    let more = dir.path().join("more.parquet");
    write_corpus(&more, &[("fresh-2".into(), "".into(), "another".into())]);
    let err = sieve_err(&["index", "--append", s(&more), "--into", s(&idx)]);
    assert!(
        err.contains("not the one this index was built with"),
        "{err}"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".sieve-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
