//! Late-joined (sieve-ce v2) models on real text: the untrained export is exactly the
//! bi-encoder, stored and computed document states give the same scores, cascades prune at the
//! towers' exit, and broken model directories are refused with the file named.
//!
//! Fixtures: `tests/fixtures/lj-init` is the recipe's export of the model *before training*
//! (`models/recipe/lj_export.py` on the step-0 checkpoint of `lj_train.py`), the shipped
//! `models/sieve-ce-minilm-l6-lj` the trained one; both run on the bundled bi-encoder.

use std::path::{Path, PathBuf};

use sieve_core::{Budget, RerankDoc, RerankError, RerankQuery, Reranker};
use sieve_embed::{BiEncoder, EmbedderConfig};
use sieve_rerank_onnx::{
    CrossEncoder, CrossEncoderConfig, LATE_JOINED_FILE, LATE_JOINED_FORMAT,
    LATE_JOINED_FORMAT_QUERY_TOWER,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn init_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lj-init")
}

fn shipped_model() -> PathBuf {
    repo().join("models/sieve-ce-minilm-l6-lj")
}

const QUERIES: [&str; 3] = [
    "do statins lower the risk of heart attacks",
    "how does sleep deprivation affect memory",
    "vaccines and autoimmune disease",
];

/// Real passages (written for the project's sample corpus, CC0), titles and texts.
fn passages() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "Statins and cardiovascular risk",
            "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase, and large trials found fewer heart attacks and strokes in people who took them.",
        ),
        (
            "Sleep and memory",
            "During deep sleep the hippocampus replays the day's experiences, and people deprived of sleep remember less of what they learned.",
        ),
        (
            "",
            "Autoimmune diseases arise when the immune system attacks the body's own tissues; large cohort studies found no link between routine vaccination and their onset.",
        ),
        (
            "Coffee",
            "Coffee contains caffeine, an adenosine receptor antagonist that increases alertness for a few hours.",
        ),
        (
            "Volcanoes",
            "Basaltic eruptions produce runny lava that travels far, while silica-rich magma traps gas and erupts explosively.",
        ),
        (
            "Exercise",
            "Regular aerobic exercise raises HDL cholesterol and lowers blood pressure, reducing cardiovascular events.",
        ),
    ]
}

fn docs<'a>(p: &'a [(&'a str, &'a str)]) -> Vec<RerankDoc<'a>> {
    p.iter().map(|(t, x)| RerankDoc::new(t, x)).collect()
}

fn bi_encoder() -> BiEncoder {
    BiEncoder::open(
        &repo().join("models/all-MiniLM-L6-v2"),
        EmbedderConfig::default(),
    )
    .expect("bundled bi-encoder")
}

/// The dense vectors of `p`, embedded as the index embeds documents.
fn passage_vectors(encoder: &BiEncoder, p: &[(&str, &str)]) -> Vec<Vec<f32>> {
    let texts: Vec<String> = p
        .iter()
        .map(|(t, x)| sieve_embed::document_text(t, x))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    encoder.embed(&refs).expect("embed docs")
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn the_untrained_model_is_exactly_the_bi_encoder() {
    let model =
        CrossEncoder::open(&init_model(), CrossEncoderConfig::default()).expect("open init");
    assert!(model.is_late_joined());
    let encoder = bi_encoder();
    let p = passages();
    let doc_vectors = passage_vectors(&encoder, &p);
    let mut worst = 0f32;
    for query in QUERIES {
        let q = encoder.embed_one(query).expect("embed query");
        let out = model
            .rerank_budgeted(
                query,
                &docs(&p),
                &Budget::Exit {
                    layer: 8,
                    width: 384,
                },
            )
            .expect("rerank");
        for (d, (score, trace)) in out.scores.iter().zip(&out.traces).enumerate() {
            let cosine = dot(&q, &doc_vectors[d]);
            let at = |layer| {
                trace
                    .exits
                    .iter()
                    .find(|e| e.layer == layer && e.width == 384)
                    .map(|e| e.raw)
            };
            let exit0 = at(6).expect("the towers' exit reached");
            worst = worst
                .max((score.raw - cosine).abs())
                .max((exit0 - cosine).abs());
            assert!(
                (score.raw - cosine).abs() < 1e-4,
                "{query} / doc {d}: exit 8 {} vs cosine {cosine}",
                score.raw
            );
            assert!(
                (exit0 - cosine).abs() < 1e-5,
                "{query} / doc {d}: exit 6 {exit0} vs cosine {cosine}"
            );
        }
    }
    eprintln!("init model vs bi-encoder cosine: worst |diff| {worst:.2e}");
}

#[test]
fn stored_states_give_the_same_scores_as_computed_ones() {
    let model =
        CrossEncoder::open(&shipped_model(), CrossEncoderConfig::default()).expect("open shipped");
    let p = passages();
    let plain = docs(&p);
    let states = model
        .document_states(&plain)
        .expect("states")
        .expect("late-joined has states");
    assert_eq!(states.len(), plain.len());
    assert!(
        states
            .iter()
            .all(|s| s.tokens() > 10 && s.rank == states[0].rank)
    );
    let with: Vec<RerankDoc<'_>> = plain
        .iter()
        .zip(&states)
        .map(|(d, s)| RerankDoc {
            states: Some(s),
            ..*d
        })
        .collect();
    for query in QUERIES {
        let computed = model.rerank(query, &plain).expect("computed");
        let stored = model.rerank(query, &with).expect("stored");
        for (a, b) in computed.scores.iter().zip(&stored.scores) {
            assert_eq!(a.raw, b.raw, "{query}: stored and computed states differ");
        }
        // The towers ran on every document in one case and on none in the other.
        assert_eq!(computed.stats.segments[0].pairs, plain.len());
        assert_eq!(stored.stats.segments[0].pairs, 0);
    }
}

#[test]
fn the_trained_model_ranks_the_answer_first() {
    let model =
        CrossEncoder::open(&shipped_model(), CrossEncoderConfig::default()).expect("open shipped");
    let p = passages();
    for (qi, query) in QUERIES.iter().enumerate() {
        let out = model.rerank(query, &docs(&p)).expect("rerank");
        let best = (0..p.len())
            .max_by(|&a, &b| out.scores[a].raw.total_cmp(&out.scores[b].raw))
            .expect("scores");
        assert_eq!(best, qi, "{query}: best was {:?}", p[best]);
        assert!(
            out.scores
                .iter()
                .all(|s| (0.0..=1.0).contains(&s.calibrated))
        );
    }
}

#[test]
fn cascades_prune_at_the_towers_and_run_blocks_only_on_survivors() {
    let model =
        CrossEncoder::open(&shipped_model(), CrossEncoderConfig::default()).expect("open shipped");
    let p = passages();
    let budget = Budget::parse("6@6,3@7,1@8").expect("budget");
    let out = model
        .rerank_budgeted(QUERIES[0], &docs(&p), &budget)
        .expect("cascade");
    let pruned_at: Vec<Option<u32>> = out.traces.iter().map(|t| t.pruned_at).collect();
    assert_eq!(
        pruned_at.iter().filter(|p| **p == Some(6)).count(),
        3,
        "{pruned_at:?}"
    );
    assert_eq!(
        pruned_at.iter().filter(|p| **p == Some(7)).count(),
        2,
        "{pruned_at:?}"
    );
    assert_eq!(
        pruned_at.iter().filter(|p| p.is_none()).count(),
        1,
        "{pruned_at:?}"
    );
    // Segment timings: towers, block 7 on the 3 best by cosine, block 8 on the best 1 of those.
    let pairs: Vec<(u32, usize)> = out
        .stats
        .segments
        .iter()
        .map(|s| (s.exit_layer, s.pairs))
        .collect();
    assert_eq!(&pairs[1..], &[(7, 3), (8, 1)]);
    // The survivor is the statins passage.
    let survivor = pruned_at
        .iter()
        .position(|p| p.is_none())
        .expect("one survivor");
    assert_eq!(survivor, 0);
    let err = model.rerank_budgeted(QUERIES[0], &docs(&p), &Budget::parse("4@5").expect("parse"));
    assert!(matches!(err, Err(RerankError::Invalid(m)) if m.contains("not an exit")));
    let err = model.rerank_budgeted(QUERIES[0], &docs(&p), &Budget::LatencyMs(10.0));
    assert!(matches!(err, Err(RerankError::Invalid(m)) if m.contains("latency")));
    let err = model.rerank("  ", &docs(&p));
    assert!(matches!(err, Err(RerankError::Invalid(m)) if m.contains("empty")));
}

/// Scores of many queries run together against each run alone, worst difference.
fn batched_vs_alone(precision: sieve_rerank_onnx::Precision) -> f32 {
    let model = CrossEncoder::open(
        &shipped_model(),
        CrossEncoderConfig {
            precision,
            ..CrossEncoderConfig::default()
        },
    )
    .expect("open shipped");
    let p = passages();
    let all = docs(&p);
    let budgets = [
        Budget::Default,
        Budget::parse("6@6,3@7,1@8").expect("cascade"),
        Budget::parse("7:192").expect("exit"),
        Budget::Default,
    ];
    // Different queries (different token counts), document sets and budgets, one empty query.
    let sets: [&[RerankDoc<'_>]; 4] = [&all, &all[1..], &all[..4], &all];
    let texts = [QUERIES[0], QUERIES[1], QUERIES[2], "  "];
    let queries: Vec<RerankQuery<'_>> = (0..4)
        .map(|i| RerankQuery {
            query: texts[i],
            docs: sets[i],
            budget: &budgets[i],
        })
        .collect();
    let together = model.rerank_many(&queries);
    assert_eq!(together.len(), 4);
    assert!(matches!(&together[3], Err(RerankError::Invalid(m)) if m.contains("empty")));
    let mut worst = 0f32;
    for (i, got) in together.iter().take(3).enumerate() {
        let got = got.as_ref().expect("scored together");
        let alone = model
            .rerank_budgeted(texts[i], sets[i], &budgets[i])
            .expect("scored alone");
        assert_eq!(got.scores.len(), sets[i].len());
        for (a, b) in got.scores.iter().zip(&alone.scores) {
            worst = worst.max((a.raw - b.raw).abs());
        }
        let pruned = |o: &sieve_core::RerankOutput| -> Vec<Option<u32>> {
            o.traces.iter().map(|t| t.pruned_at).collect()
        };
        assert_eq!(pruned(got), pruned(&alone), "query {i}");
        let exits = |o: &sieve_core::RerankOutput| -> Vec<usize> {
            o.traces.iter().map(|t| t.exits.len()).collect()
        };
        assert_eq!(exits(got), exits(&alone), "query {i}");
        let best = |o: &sieve_core::RerankOutput| {
            (0..o.scores.len()).max_by(|&a, &b| o.scores[a].raw.total_cmp(&o.scores[b].raw))
        };
        assert_eq!(best(got), best(&alone), "query {i}");
    }
    worst
}

#[test]
fn many_queries_in_one_call_score_as_each_alone() {
    // fp32 blocks: the same numbers (padded query tokens are masked; each query token attends
    // only to its document).
    let fp32 = batched_vs_alone(sieve_rerank_onnx::Precision::Fp32);
    assert!(
        fp32 < 1e-5,
        "fp32 scores differ by up to {fp32} when batched"
    );
    // int8 blocks quantise activations per tensor, so a batch's companions move scores a little
    // (as a window's other documents already do): bounded, and the same plan and best document.
    let int8 = batched_vs_alone(sieve_rerank_onnx::Precision::Int8);
    assert!(
        int8 < 1e-2,
        "int8 scores differ by up to {int8} when batched"
    );
}

/// The joint blocks' call size (`block_batch_tokens`) changes how pairs are packed, never the fp32
/// scores: one document per call and the default calls agree, for full depth and a cascade.
#[test]
fn block_call_size_does_not_change_fp32_scores() {
    let open = |block_batch_tokens: usize| {
        CrossEncoder::open(
            &shipped_model(),
            CrossEncoderConfig {
                precision: sieve_rerank_onnx::Precision::Fp32,
                block_batch_tokens,
                ..CrossEncoderConfig::default()
            },
        )
        .expect("open shipped")
    };
    let (small, large) = (
        open(1),
        open(CrossEncoderConfig::default().block_batch_tokens),
    );
    let p = passages();
    let all = docs(&p);
    for budget in [
        Budget::Default,
        Budget::parse("6@6,4@7,2@8").expect("cascade"),
    ] {
        let a = small
            .rerank_budgeted(QUERIES[0], &all, &budget)
            .expect("one document per call");
        let b = large
            .rerank_budgeted(QUERIES[0], &all, &budget)
            .expect("default calls");
        assert!(
            a.stats.batches > b.stats.batches,
            "{budget}: calls were not split"
        );
        for (x, y) in a.scores.iter().zip(&b.scores) {
            assert!(
                (x.raw - y.raw).abs() < 1e-5,
                "{budget}: {} vs {}",
                x.raw,
                y.raw
            );
        }
    }
}

/// Copies the init fixture into a temp dir (its tower path rewritten to stay valid).
fn copy_of_init() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(init_model()).expect("read fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let manifest_path = dir.path().join(LATE_JOINED_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    manifest["tower"]["model"] = repo()
        .join("models/all-MiniLM-L6-v2")
        .to_string_lossy()
        .into_owned()
        .into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("json")).expect("write");
    dir
}

fn load_error(path: &Path) -> String {
    match CrossEncoder::open(path, CrossEncoderConfig::default()) {
        Err(RerankError::Load(m)) => m,
        Err(other) => panic!("expected a load error, got {other:?}"),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[test]
fn broken_late_joined_directories_are_refused_with_the_file_named() {
    let good = copy_of_init();
    CrossEncoder::open(good.path(), CrossEncoderConfig::default()).expect("the copy loads");

    let corrupt_codec = copy_of_init();
    std::fs::write(
        corrupt_codec.path().join("state_codec.bin"),
        b"SVSCODE1 truncated",
    )
    .expect("write");
    let m = load_error(corrupt_codec.path());
    assert!(m.contains("state_codec.bin"), "{m}");

    let wrong_tower = copy_of_init();
    let path = wrong_tower.path().join(LATE_JOINED_FILE);
    let text = std::fs::read_to_string(&path).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["tower"]["onnx_sha256"] = "0".repeat(64).into();
    std::fs::write(&path, v.to_string()).expect("write");
    let m = load_error(wrong_tower.path());
    assert!(m.contains("sha256") && m.contains("model.onnx"), "{m}");

    let corrupt_block = copy_of_init();
    let block = std::fs::read_dir(corrupt_block.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "onnx"))
        .expect("a block graph");
    std::fs::write(&block, b"not an onnx graph").expect("write");
    let m = load_error(corrupt_block.path());
    assert!(
        m.contains(
            &block
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        ),
        "{m}"
    );

    let bad_json = copy_of_init();
    std::fs::write(bad_json.path().join(LATE_JOINED_FILE), b"{\"format\": 3").expect("write");
    let m = load_error(bad_json.path());
    assert!(m.contains(LATE_JOINED_FILE), "{m}");
}

/// The init fixture as a format-/2 model whose query graph is `graph` (absolute path).
fn init_with_query_graph(graph: &Path) -> tempfile::TempDir {
    let dir = copy_of_init();
    let path = dir.path().join(LATE_JOINED_FILE);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
    v["format"] = LATE_JOINED_FORMAT_QUERY_TOWER.into();
    v["query_tower"] = serde_json::json!({"file": graph.to_string_lossy(), "layers": 2});
    std::fs::write(&path, v.to_string()).expect("write");
    dir
}

#[test]
fn the_blocks_read_the_query_graph_and_exit_6_keeps_the_towers_vector() {
    // The untrained blocks pass the query states through unchanged, so with the fp32 bi-encoder
    // as the query graph, exit 8 must be the cosine of the fp32 query embedding with the (int8)
    // document vectors, while exit 6 stays the int8 towers' cosine.
    let fp32_graph = repo().join("models/all-MiniLM-L6-v2/onnx/model_fp32.onnx");
    let dir = init_with_query_graph(&fp32_graph);
    let model = CrossEncoder::open(dir.path(), CrossEncoderConfig::default()).expect("open");
    let int8 = bi_encoder();
    let fp32 = BiEncoder::open(&fp32_graph, EmbedderConfig::default()).expect("fp32 bi-encoder");
    let p = passages();
    let doc_vectors = passage_vectors(&int8, &p);
    let (mut worst, mut apart) = (0f32, 0f32);
    for query in QUERIES {
        let (q8, q32) = (
            int8.embed_one(query).expect("int8 query"),
            fp32.embed_one(query).expect("fp32 query"),
        );
        let budget = Budget::Exit {
            layer: 8,
            width: 384,
        };
        let out = model
            .rerank_budgeted(query, &docs(&p), &budget)
            .expect("rerank");
        for (d, (score, trace)) in out.scores.iter().zip(&out.traces).enumerate() {
            let (tower_cos, graph_cos) = (dot(&q8, &doc_vectors[d]), dot(&q32, &doc_vectors[d]));
            let exit6 = trace
                .exits
                .iter()
                .find(|e| e.layer == 6 && e.width == 384)
                .map(|e| e.raw)
                .expect("the towers' exit reached");
            assert!(
                (exit6 - tower_cos).abs() < 1e-5,
                "exit 6 {exit6} vs {tower_cos}"
            );
            assert!(
                (score.raw - graph_cos).abs() < 1e-4,
                "{query} / doc {d}: exit 8 {} vs the query graph's cosine {graph_cos}",
                score.raw
            );
            worst = worst.max((score.raw - graph_cos).abs());
            apart = apart.max((graph_cos - tower_cos).abs());
        }
    }
    // otherwise the test could not tell the two query inputs apart
    assert!(apart > 2e-4, "fp32 and int8 query vectors agree to {apart}");
    eprintln!(
        "exit 8 vs the query graph's cosine: worst {worst:.2e}; int8 vs fp32 query {apart:.2e}"
    );
}

#[test]
fn query_graph_manifests_are_checked() {
    let missing = init_with_query_graph(Path::new("/nonexistent/query_tower.onnx"));
    let m = load_error(missing.path());
    assert!(
        m.contains("query graph") && m.contains("query_tower.onnx"),
        "{m}"
    );

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let dir = init_with_query_graph(&repo().join("models/all-MiniLM-L6-v2/onnx/model.onnx"));
        let path = dir.path().join(LATE_JOINED_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
        f(&mut v);
        std::fs::write(&path, v.to_string()).expect("write");
        load_error(dir.path())
    };
    let m = edit(&|v| v["format"] = LATE_JOINED_FORMAT.into());
    assert!(m.contains("has no query_tower"), "{m}");
    let m = edit(&|v| {
        v.as_object_mut().expect("object").remove("query_tower");
    });
    assert!(m.contains("needs a query_tower"), "{m}");
    let m = edit(&|v| v["format"] = "sieve-late-joined-ce/3".into());
    assert!(
        m.contains("sieve-late-joined-ce/3") && m.contains(LATE_JOINED_FILE),
        "{m}"
    );
}
