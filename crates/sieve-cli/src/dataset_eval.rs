//! `sieve eval --dataset DIR`: evaluate every stage of the pipeline on a BEIR-layout data set.
//!
//! The corpus is indexed once and cached (`--index-dir`, by default
//! `.sieve/eval-cache/<dataset>`; rebuilt when the corpus file or the embedder changes). Each stage
//! runs on its own for every judged query of the split, so its latency is its own: `bm25` and
//! `dense` alone, `hybrid` (both concurrently, then fusion). Output: an aligned table, a JSON
//! report, a TREC run file per stage, and an SVG plot of quality against ms/query.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sieve::{
    BlendChoice, Budget, FusionSpec, Mode, RerankDoc, Reranker, SearchRequest, Sieve, rerank_order,
};
use sieve_eval::{
    Metric, MetricSpec, PlotPoint, Qrels, Run, evaluate, load_beir_queries, quality_cost_svg,
    write_trec,
};
use sieve_index::{BuildOptions, IndexBuilder, Manifest};
use std::sync::Arc;

use crate::budget_summary::{self, BudgetRow};
use crate::progress::Bars;
use crate::table::Table;
use sieve_index::Progress;

/// A stage `sieve eval` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalStage {
    /// A first-stage mode (bm25, dense, hybrid).
    First(Mode),
    /// The hybrid stage's fused window, reranked (once per budget).
    Rerank,
}

impl std::str::FromStr for EvalStage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rerank" => Ok(EvalStage::Rerank),
            other => other.parse().map(EvalStage::First).map_err(|_| {
                format!("unknown stage `{other}` (expected bm25, dense, hybrid or rerank)")
            }),
        }
    }
}

/// How the rerank stage is evaluated.
pub struct RerankEval {
    /// The reranker.
    pub reranker: Arc<dyn Reranker>,
    /// Fused candidates reranked per query.
    pub window: usize,
    /// One rerank row per budget.
    pub budgets: Vec<Budget>,
    /// Blend choice; a blended row is added beside each pure one when it resolves to a weight.
    pub blend: BlendChoice,
    /// Also report every exit head (Matryoshka models), each from the deepest budget's pass:
    /// its scores are that head's, its time the first stage + tokenizing + the segments up to
    /// its exit, as measured in that same pass.
    pub every_exit: bool,
    /// The reranker's model directory when it is a late-joined model: indexes the eval builds
    /// then store its document states.
    pub late_joined_dir: Option<PathBuf>,
}

/// What `sieve eval --dataset` was asked to do.
pub struct DatasetEval {
    pub dataset: PathBuf,
    pub split: String,
    pub stages: Vec<EvalStage>,
    pub rerank: Option<RerankEval>,
    pub rerank_run: Option<PathBuf>,
    pub fusion: FusionSpec,
    pub depth: usize,
    pub spec: MetricSpec,
    pub index_dir: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub max_queries: Option<usize>,
    pub quiet: bool,
}

/// Latency of one stage over all queries, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub queries_per_second: f64,
}

/// One stage's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub queries: usize,
    /// Per query, end to end (a rerank row: its first stage + the rerank).
    pub latency: Latency,
    /// Per query, the rerank alone (rerank rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_latency: Option<Latency>,
    pub run_file: Option<PathBuf>,
    /// Rerank rows: the plan every query ran (`L:W` or a cascade), or `per query` when it
    /// varied (latency budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Blended rows: the reranker's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<f32>,
    /// Exit-head rows read out of a deeper pass (`--every-exit`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_of_pass: bool,
    /// Query id -> metric -> value (kept in memory for the paired comparison; the TREC run
    /// files hold what is needed to recompute it).
    #[serde(skip)]
    pub per_query: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

/// The whole report, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetReport {
    pub dataset: String,
    pub split: String,
    pub queries: usize,
    pub documents: usize,
    pub index: PathBuf,
    pub depth: usize,
    pub fusion: String,
    pub relevance_threshold: i32,
    pub command: String,
    pub machine: String,
    pub stages: Vec<StageReport>,
    /// The stage whose lists the rerank rows reranked (when it is in `stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<String>,
    /// Every stage on quality and cost: gain over the candidates, share of the full-depth gain
    /// kept, speed-up over full depth, Pareto front.
    #[serde(default)]
    pub comparison: Vec<BudgetRow>,
}

/// Identifies the corpus and embedder an index was built from, to decide whether a cached
/// index can be reused.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CacheStamp {
    corpus: PathBuf,
    corpus_bytes: u64,
    corpus_modified_unix: u64,
    embedder: PathBuf,
    /// The state codec the index stores rerank states with (its file), if any.
    #[serde(default)]
    rerank_codec: Option<PathBuf>,
}

fn stamp_for(corpus: &Path, embedder: &Path, codec: Option<&Path>) -> Result<CacheStamp> {
    let meta =
        std::fs::metadata(corpus).with_context(|| format!("cannot read {}", corpus.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(CacheStamp {
        corpus: std::path::absolute(corpus)?,
        corpus_bytes: meta.len(),
        corpus_modified_unix: modified,
        embedder: std::path::absolute(embedder)?,
        rerank_codec: codec.map(std::path::absolute).transpose()?,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn latency(mut samples: Vec<f64>) -> Latency {
    samples.sort_by(f64::total_cmp);
    let total: f64 = samples.iter().sum();
    let n = samples.len().max(1) as f64;
    Latency {
        mean_ms: total / n,
        p50_ms: percentile(&samples, 0.5),
        p95_ms: percentile(&samples, 0.95),
        queries_per_second: if total > 0.0 { n * 1e3 / total } else { 0.0 },
    }
}

/// The data set's corpus as Parquet: `corpus.parquet`, or `corpus.jsonl` converted once into
/// `.sieve/eval-cache/<name>-corpus.parquet` (redone when the JSONL is newer).
fn corpus_parquet(dataset: &Path, name: &str, quiet: bool) -> Result<PathBuf> {
    let parquet = dataset.join("corpus.parquet");
    if parquet.is_file() {
        return Ok(parquet);
    }
    let jsonl = dataset.join("corpus.jsonl");
    if !jsonl.is_file() {
        bail!(
            "{} has neither corpus.parquet nor corpus.jsonl (BEIR layout)",
            dataset.display()
        );
    }
    let converted = PathBuf::from(".sieve/eval-cache").join(format!("{name}-corpus.parquet"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = matches!((modified(&converted), modified(&jsonl)), (Some(c), Some(j)) if c >= j);
    if !fresh {
        if let Some(parent) = converted.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let docs = sieve_index::jsonl::beir_jsonl_to_parquet(&jsonl, &converted)
            .with_context(|| format!("cannot convert {}", jsonl.display()))?;
        if !quiet {
            eprintln!(
                "converted {} ({docs} documents) to {}",
                jsonl.display(),
                converted.display()
            );
        }
    }
    Ok(converted)
}

/// One query's first-stage candidates (documents and fused scores, best first).
pub struct QueryCandidates {
    pub qid: String,
    pub query: String,
    pub candidates: Vec<(sieve_index::docstore::StoredDoc, f32)>,
    /// The candidates' stored rerank states (the index's state store, when it was made with the
    /// reranker's codec); empty when there are none, and then [`rerank_stages`] computes them.
    pub states: Vec<sieve::DocStates>,
    /// What the first stage cost for this query (0 for a given run file).
    pub first_stage_ms: f64,
}

/// Scores runs and writes them as TREC files.
pub struct StageWriter<'a> {
    pub qrels: &'a Qrels,
    pub spec: &'a MetricSpec,
    pub run_dir: Option<&'a Path>,
    /// File name prefix, `<dataset>-<split>`.
    pub prefix: String,
}

impl StageWriter<'_> {
    /// Evaluates `run`, writes its TREC file (if asked) and returns the stage's report.
    pub fn report(
        &self,
        stage: &str,
        run: &Run,
        latency: Latency,
        rerank_latency: Option<Latency>,
    ) -> Result<StageReport> {
        let report = evaluate(self.qrels, run, self.spec);
        let run_file = match self.run_dir {
            Some(dir) => {
                let file_stage: String = stage
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = dir.join(format!("{}-{file_stage}.trec", self.prefix));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                write_trec(
                    run,
                    &format!("sieve-{file_stage}"),
                    std::io::BufWriter::new(file),
                )?;
                Some(path)
            }
            None => None,
        };
        Ok(StageReport {
            stage: stage.to_string(),
            metrics: report.mean.clone(),
            queries: report.num_queries,
            latency,
            rerank_latency,
            run_file,
            plan: None,
            blend: None,
            head_of_pass: false,
            per_query: report.per_query,
        })
    }
}

/// The rerank states of every list's window, once per document: the lists' stored ones where they
/// have them, else computed by the reranker (one tower pass over each distinct document), else
/// none (rerankers that read no states).
fn document_states(
    rerank: &RerankEval,
    lists: &[QueryCandidates],
    bars: &Bars,
) -> Result<Vec<Vec<sieve::DocStates>>> {
    let window = |l: &QueryCandidates| rerank.window.min(l.candidates.len());
    if rerank.reranker.state_codec_id().is_none()
        || lists.iter().all(|l| l.states.len() >= window(l))
    {
        return Ok(lists.iter().map(|l| l.states.clone()).collect());
    }
    let mut distinct: std::collections::HashMap<&str, usize> = Default::default();
    let mut docs: Vec<&sieve_index::docstore::StoredDoc> = Vec::new();
    for list in lists.iter().filter(|l| l.states.len() < window(l)) {
        for (doc, _) in &list.candidates[..window(list)] {
            distinct.entry(doc.id.as_str()).or_insert_with(|| {
                docs.push(doc);
                docs.len() - 1
            });
        }
    }
    bars.start("document states", docs.len() as u64);
    let mut computed = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(256) {
        let batch: Vec<RerankDoc<'_>> = chunk
            .iter()
            .map(|d| RerankDoc::new(&d.title, &d.text))
            .collect();
        let states = rerank
            .reranker
            .document_states(&batch)
            .context("computing document states for the rerank stage")?
            .unwrap_or_default();
        computed.extend(states);
        bars.advance(chunk.len() as u64);
    }
    bars.finish();
    if computed.len() != docs.len() {
        return Ok(lists.iter().map(|l| l.states.clone()).collect());
    }
    Ok(lists
        .iter()
        .map(|l| {
            if l.states.len() >= window(l) {
                return l.states.clone();
            }
            l.candidates[..window(l)]
                .iter()
                .map(|(d, _)| computed[distinct[d.id.as_str()]].clone())
                .collect()
        })
        .collect())
}

/// Reranks every query's candidates (its first `window`) once per budget; the rest of each list
/// follows in first-stage order. Returns a pure row per budget and, when the blend resolves to
/// a weight, a blended row beside it (same model calls, so the same cost).
pub fn rerank_stages(
    rerank: &RerankEval,
    lists: &[QueryCandidates],
    writer: &StageWriter<'_>,
    bars: &Bars,
) -> Result<Vec<StageReport>> {
    let blend = rerank.blend.weight_for(rerank.reranker.as_ref());
    // Warm up (session initialisation must not count against the first query).
    if let Some(first) = lists.iter().find(|l| !l.candidates.is_empty()) {
        let (doc, _) = &first.candidates[0];
        let warm = [RerankDoc::new(&doc.title, &doc.text)];
        rerank
            .reranker
            .rerank(&first.query, &warm)
            .context("reranker warm-up failed")?;
    }
    let states = document_states(rerank, lists, bars)?;
    let mut reports = Vec::new();
    for budget in &rerank.budgets {
        let label = format!("rerank {budget}");
        bars.start(&label, lists.len() as u64);
        let (mut pure, mut blended) = (Run::new(), Run::new());
        let (mut totals, mut rerank_only) = (Vec::new(), Vec::new());
        let (mut blended_totals, mut blended_only) = (Vec::new(), Vec::new());
        // (layer, width) -> (run, end-to-end ms, rerank-only ms), from this budget's pass.
        let mut heads: std::collections::BTreeMap<(u32, u32), HeadRows> = Default::default();
        let mut plans: std::collections::BTreeSet<String> = Default::default();
        for (list, list_states) in lists.iter().zip(&states) {
            let window = rerank.window.min(list.candidates.len());
            let docs: Vec<RerankDoc<'_>> = list.candidates[..window]
                .iter()
                .enumerate()
                .map(|(i, (d, _))| RerankDoc {
                    states: list_states.get(i),
                    ..RerankDoc::new(&d.title, &d.text)
                })
                .collect();
            let started = Instant::now();
            let output = rerank
                .reranker
                .rerank_budgeted(&list.query, &docs, budget)
                .with_context(|| format!("reranking query {} under budget {budget}", list.qid))?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            plans.insert(output.stats.plan.clone());
            rerank_only.push(ms);
            totals.push(list.first_stage_ms + ms);
            let fused: Vec<f32> = list.candidates[..window].iter().map(|(_, s)| *s).collect();
            push_reranked(&mut pure, list, window, &output, &fused, None);
            if blend.is_some() {
                // A cascade that pruned chooses other survivors when it prunes on the blend:
                // the blended row gets a pass (and a time) of its own.
                let pruned = output
                    .traces
                    .iter()
                    .any(|t| matches!(t.pruned_at, Some(layer) if layer > 0));
                let repass = if pruned {
                    let started = Instant::now();
                    let output = sieve::rerank_window(
                        rerank.reranker.as_ref(),
                        &list.query,
                        &docs,
                        budget,
                        &fused,
                        blend,
                    )
                    .with_context(|| {
                        format!("reranking query {} under budget {budget}", list.qid)
                    })?;
                    Some((output, started.elapsed().as_secs_f64() * 1e3))
                } else {
                    None
                };
                let (blended_output, blended_ms) =
                    repass.as_ref().map_or((&output, ms), |(o, ms)| (o, *ms));
                push_reranked(&mut blended, list, window, blended_output, &fused, blend);
                blended_only.push(blended_ms);
                blended_totals.push(list.first_stage_ms + blended_ms);
            }
            // Per-head rows come from single-plan passes (not cascades or latency budgets, whose
            // documents stop at different exits).
            if rerank.every_exit && !matches!(budget, Budget::Cascade(_) | Budget::LatencyMs(_)) {
                for (key, head) in exit_outputs(&output) {
                    let upto: f64 = output
                        .stats
                        .segments
                        .iter()
                        .filter(|s| s.exit_layer <= key.0)
                        .map(|s| s.ms)
                        .sum();
                    let head_ms = output.stats.tokenize_ms + upto;
                    let entry = heads.entry(key).or_default();
                    push_reranked(&mut entry.0, list, window, &head, &fused, None);
                    entry.1.push(list.first_stage_ms + head_ms);
                    entry.2.push(head_ms);
                }
            }
            bars.advance(1);
        }
        bars.finish();
        let plan = match plans.len() {
            0 => None,
            1 => plans.pop_first().filter(|p| !p.is_empty()),
            _ => Some("per query".to_string()),
        };
        let mut row = writer.report(&label, &pure, latency(totals), Some(latency(rerank_only)))?;
        row.plan = plan.clone();
        reports.push(row);
        if let Some(w) = blend {
            let mut row = writer.report(
                &format!("{label} + blend {w:.2}"),
                &blended,
                latency(blended_totals),
                Some(latency(blended_only)),
            )?;
            row.plan = plan;
            row.blend = Some(w);
            reports.push(row);
        }
        for ((layer, width), (run, total, only)) in heads {
            let mut row = writer.report(
                &format!("exit {layer}:{width} (in {budget})"),
                &run,
                latency(total),
                Some(latency(only)),
            )?;
            row.plan = Some(format!("{layer}:{width}"));
            row.head_of_pass = true;
            reports.push(row);
        }
    }
    Ok(reports)
}

/// Per (layer, width) head that every document reached, an output holding that head's scores
/// (heads a cascade pruned documents before are left out).
fn exit_outputs(output: &sieve::RerankOutput) -> Vec<((u32, u32), sieve::RerankOutput)> {
    let mut keys: Vec<(u32, u32)> = output
        .traces
        .iter()
        .flat_map(|t| t.exits.iter().map(|e| (e.layer, e.width)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let scores = output
                .traces
                .iter()
                .map(|t| {
                    t.exits
                        .iter()
                        .find(|e| (e.layer, e.width) == key)
                        .map(|e| sieve::RerankScore {
                            raw: e.raw,
                            calibrated: sieve_core::sigmoid(e.raw),
                            windows: 1,
                            best_window: 0,
                        })
                })
                .collect::<Option<Vec<_>>>()?;
            Some((
                key,
                sieve::RerankOutput {
                    scores,
                    ..Default::default()
                },
            ))
        })
        .collect()
}

/// One exit head's run, end-to-end ms and rerank-only ms per query (`--every-exit`).
type HeadRows = (Run, Vec<f64>, Vec<f64>);

/// Appends one query's reranked list to `run`: the window in its final order, then the rest of
/// the first-stage list. Run scores are rank-based so that trec_eval's sort reproduces the order.
fn push_reranked(
    run: &mut Run,
    list: &QueryCandidates,
    window: usize,
    output: &sieve::RerankOutput,
    fused: &[f32],
    blend: Option<f32>,
) {
    let total = list.candidates.len();
    let order = rerank_order(output, fused, blend);
    let reranked = order.iter().map(|(i, _)| *i);
    for (rank, i) in reranked.chain(window..total).enumerate() {
        run.push(
            list.qid.clone(),
            list.candidates[i].0.id.clone(),
            (total - rank) as f64,
        );
    }
}

/// The candidates of a given TREC run (its top `depth` per query, trec_eval's order: score
/// desc, then doc id desc), with their texts from the data set's corpus. Returns the lists (in
/// query order; queries absent from the run get an empty list), the corpus path and how many
/// documents were loaded.
fn given_run_candidates(
    job: &DatasetEval,
    name: &str,
    queries: &[(String, String)],
    run_path: &Path,
) -> Result<(Vec<QueryCandidates>, PathBuf, usize)> {
    let run = Run::load_trec(run_path)?;
    let mut wanted: std::collections::HashMap<String, Option<sieve_index::docstore::StoredDoc>> =
        std::collections::HashMap::new();
    let mut ranked: Vec<Vec<(String, f32)>> = Vec::with_capacity(queries.len());
    for (qid, _) in queries {
        let mut results: Vec<(String, f64)> = run.get(qid).map(<[_]>::to_vec).unwrap_or_default();
        results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        results.truncate(job.depth);
        for (doc, _) in &results {
            wanted.entry(doc.clone()).or_insert(None);
        }
        ranked.push(results.into_iter().map(|(d, s)| (d, s as f32)).collect());
    }
    let corpus = corpus_parquet(&job.dataset, name, job.quiet)?;
    let mapping = sieve_index::ColumnMapping {
        title: Some("title".into()),
        ..Default::default()
    };
    sieve_index::ingest::read_documents(
        std::slice::from_ref(&corpus),
        &mapping,
        4096,
        &mut |_, docs| {
            for doc in docs {
                if let Some(slot) = wanted.get_mut(&doc.id) {
                    *slot = Some(sieve_index::docstore::StoredDoc {
                        id: doc.id,
                        title: doc.title,
                        text: doc.text,
                    });
                }
            }
            Ok(())
        },
    )?;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(id, _)| id)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} documents of {} are not in {} (e.g. {})",
            missing.len(),
            run_path.display(),
            corpus.display(),
            missing[0]
        );
    }
    let lists = queries
        .iter()
        .zip(ranked)
        .map(|((qid, query), results)| QueryCandidates {
            qid: qid.clone(),
            query: query.clone(),
            candidates: results
                .into_iter()
                .filter_map(|(id, score)| Some((wanted.get(&id)?.clone()?, score)))
                .collect(),
            states: Vec::new(),
            first_stage_ms: 0.0,
        })
        .collect();
    Ok((lists, corpus, wanted.len()))
}

/// Builds (or reuses) the data set's index and returns its directory.
fn ensure_index(job: &DatasetEval, name: &str, bars: &Bars) -> Result<PathBuf> {
    let corpus = corpus_parquet(&job.dataset, name, job.quiet)?;
    let model = crate::paths::embedder_model(job.model.as_deref())?;
    let index_dir = job
        .index_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".sieve/eval-cache").join(name));
    // A late-joined reranker's states go into the index, when its towers are this embedder.
    let codec = match job
        .rerank
        .as_ref()
        .and_then(|r| r.late_joined_dir.as_deref())
    {
        Some(dir) => crate::paths::rerank_codec(&dir.to_string_lossy(), &model)
            .ok()
            .flatten(),
        None => None,
    };
    let stamp = stamp_for(&corpus, &model, codec.as_deref())?;
    let stamp_path = index_dir.join("eval-stamp.json");
    let cached = Manifest::load(&index_dir).is_ok()
        && std::fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheStamp>(&b).ok())
            .is_some_and(|s| s == stamp);
    // An index the user points at explicitly is reused if it was built from this corpus.
    if !cached
        && job.index_dir.is_some()
        && let Ok(manifest) = Manifest::load(&index_dir)
    {
        let sources: Vec<PathBuf> = manifest
            .source
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect();
        if sources == [stamp.corpus.clone()] {
            if !job.quiet {
                eprintln!(
                    "using index {} (built from {})",
                    index_dir.display(),
                    corpus.display()
                );
            }
            return Ok(index_dir);
        }
        bail!(
            "{} holds an index of {:?}, not of {}; choose another --index-dir",
            index_dir.display(),
            sources,
            corpus.display()
        );
    }
    if cached {
        if !job.quiet {
            eprintln!("using cached index {}", index_dir.display());
        }
        return Ok(index_dir);
    }
    if !job.quiet {
        eprintln!("indexing {} into {}", corpus.display(), index_dir.display());
    }
    if let Some(parent) = index_dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = BuildOptions::new(model);
    options.mapping.title = Some("title".into());
    options.rerank_codec = codec;
    IndexBuilder::new(options).build(&[corpus], &index_dir, bars)?;
    std::fs::write(&stamp_path, serde_json::to_vec_pretty(&stamp)?)?;
    Ok(index_dir)
}

pub fn run(job: DatasetEval) -> Result<()> {
    let name = job
        .dataset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let qrels_path = job.dataset.join("qrels").join(format!("{}.tsv", job.split));
    let qrels = Qrels::load_beir(&qrels_path)?;
    let mut queries: Vec<(String, String)> = load_beir_queries(job.dataset.join("queries.jsonl"))?
        .into_iter()
        .filter(|(id, _)| qrels.get(id).is_some_and(|j| j.values().any(|&r| r > 0)))
        .collect();
    if let Some(max) = job.max_queries {
        queries.truncate(max);
    }
    // Score exactly the queries that are run: a subset must not be averaged over the whole split.
    let qrels: Qrels = queries
        .iter()
        .filter_map(|(id, _)| qrels.get(id).map(|judged| (id, judged)))
        .flat_map(|(id, judged)| {
            judged
                .iter()
                .map(move |(doc, &rel)| (id.clone(), doc.clone(), rel))
        })
        .collect();
    if queries.is_empty() {
        bail!(
            "no query of {} has a relevance judgment in {}",
            job.dataset.display(),
            qrels_path.display()
        );
    }

    let bars = Bars::new(job.quiet);
    if let Some(dir) = &job.run_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let writer = StageWriter {
        qrels: &qrels,
        spec: &job.spec,
        run_dir: job.run_dir.as_deref(),
        prefix: format!("{name}-{}", job.split),
    };
    let (stages, index_dir, documents) = match &job.rerank_run {
        Some(run_path) => {
            let rerank = job
                .rerank
                .as_ref()
                .context("--rerank-run needs a reranker")?;
            let (lists, corpus, documents) = given_run_candidates(&job, &name, &queries, run_path)?;
            let mut stages = vec![writer.report(
                &format!("run {}", run_path.display()),
                &Run::load_trec(run_path)?,
                latency(vec![0.0; lists.len()]),
                None,
            )?];
            stages.extend(rerank_stages(rerank, &lists, &writer, &bars)?);
            (stages, corpus, documents)
        }
        None => {
            let index_dir = ensure_index(&job, &name, &bars)?;
            let engine = Sieve::open_with(
                &index_dir,
                sieve::OpenOptions {
                    embedder_model: job.model.clone(),
                    ..Default::default()
                },
            )?;
            // Warm up: the first query pays for lazy initialisation in ONNX Runtime.
            engine.first_stage(&SearchRequest::new(queries[0].1.clone()))?;

            let wants_rerank = job.stages.contains(&EvalStage::Rerank);
            let mut modes: Vec<Mode> = job
                .stages
                .iter()
                .filter_map(|s| match s {
                    EvalStage::First(m) => Some(*m),
                    EvalStage::Rerank => None,
                })
                .collect();
            // The rerank stage reranks the hybrid stage's own fused lists: run hybrid if it was not asked.
            let hybrid_only_for_rerank = wants_rerank && !modes.contains(&Mode::Hybrid);
            if hybrid_only_for_rerank {
                modes.push(Mode::Hybrid);
            }
            let mut stages = Vec::new();
            let mut hybrid_lists: Vec<QueryCandidates> = Vec::new();
            for &mode in &modes {
                let stage_name = mode.to_string();
                bars.start(&stage_name, queries.len() as u64);
                let mut run = Run::new();
                let mut samples = Vec::with_capacity(queries.len());
                for (qid, text) in &queries {
                    let request = SearchRequest {
                        mode,
                        fusion: job.fusion,
                        bm25_k: job.depth,
                        dense_k: job.depth,
                        ..SearchRequest::new(text.clone())
                    };
                    let started = Instant::now();
                    let stage = engine.first_stage(&request)?;
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    samples.push(ms);
                    let mut kept = Vec::new();
                    for candidate in stage.fused.iter().take(job.depth) {
                        let doc = engine.index().docs.get(candidate.doc)?;
                        run.push(qid.clone(), doc.id.clone(), f64::from(candidate.score));
                        kept.push((doc, candidate.score));
                    }
                    if mode == Mode::Hybrid && wants_rerank {
                        let states = match &job.rerank {
                            Some(r) => sieve::stored_states(
                                engine.index(),
                                r.reranker.as_ref(),
                                stage
                                    .fused
                                    .iter()
                                    .take(job.depth.min(r.window))
                                    .map(|c| c.doc),
                            )?,
                            None => Vec::new(),
                        };
                        hybrid_lists.push(QueryCandidates {
                            qid: qid.clone(),
                            query: text.clone(),
                            candidates: kept,
                            states,
                            first_stage_ms: ms,
                        });
                    }
                    bars.advance(1);
                }
                bars.finish();
                if !(mode == Mode::Hybrid && hybrid_only_for_rerank) {
                    stages.push(writer.report(&stage_name, &run, latency(samples), None)?);
                }
            }
            if wants_rerank {
                let rerank = job
                    .rerank
                    .as_ref()
                    .context("the rerank stage needs a reranker")?;
                stages.extend(rerank_stages(rerank, &hybrid_lists, &writer, &bars)?);
            }

            let documents = engine.index().len();
            (stages, index_dir, documents)
        }
    };

    let quality = Metric::ndcg(10).to_string();
    let candidates = job
        .rerank
        .as_ref()
        .map(|_| match &job.rerank_run {
            Some(path) => format!("run {}", path.display()),
            None => Mode::Hybrid.to_string(),
        })
        .filter(|name| stages.iter().any(|s| &s.stage == name));
    let comparison = if job.rerank.is_some() {
        budget_summary::summarize(&stages, candidates.as_deref(), &quality)
    } else {
        Vec::new()
    };
    let report = DatasetReport {
        dataset: name.clone(),
        split: job.split.clone(),
        queries: queries.len(),
        documents,
        index: index_dir,
        depth: job.depth,
        fusion: job.fusion.to_string(),
        relevance_threshold: job.spec.relevance_threshold,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: format!("{} cores", sieve_onnx::available_cores()),
        stages,
        candidates,
        comparison,
    };
    print_table(&report, &job.spec);
    if !report.comparison.is_empty() {
        println!(
            "\n{quality} vs cost — gain over the reranked candidates with its 95% paired-bootstrap \
             interval; share of the full-depth gain kept (same blend; shown only when that gain's \
             interval is above 0) and speed-up against full depth; ◆ = Pareto front (mean \
             ms/query end to end)"
        );
        print!(
            "{}",
            budget_summary::render(&report.comparison, &quality, report.candidates.as_deref())
        );
    }

    let json_path = job
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(".sieve/eval").join(format!("{name}-{}.json", job.split)));
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let svg_path = json_path.with_extension("svg");
    let points: Vec<PlotPoint> = report
        .stages
        .iter()
        .filter_map(|s| {
            Some(PlotPoint {
                label: s.stage.clone(),
                ms: s.latency.mean_ms,
                quality: *s.metrics.get(&quality)?,
            })
        })
        .collect();
    let title = format!(
        "{name} {} ({} queries): {quality} vs cost",
        job.split, report.queries
    );
    std::fs::write(&svg_path, quality_cost_svg(&points, &title, &quality))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    println!(
        "report: {}  plot: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn print_table(report: &DatasetReport, spec: &MetricSpec) {
    let names: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    let mut header: Vec<(&str, bool)> = vec![("stage", false)];
    header.extend(names.iter().map(|n| (n.as_str(), true)));
    header.extend([("p50 ms", true), ("p95 ms", true), ("q/s", true)]);
    let mut table = Table::new(&header);
    for stage in &report.stages {
        let mut row = vec![stage.stage.clone()];
        row.extend(
            names
                .iter()
                .map(|n| format!("{:.4}", stage.metrics.get(n).copied().unwrap_or(0.0))),
        );
        row.push(format!("{:.2}", stage.latency.p50_ms));
        row.push(format!("{:.2}", stage.latency.p95_ms));
        row.push(format!("{:.1}", stage.latency.queries_per_second));
        table.row(row);
    }
    println!(
        "{} {} — {} queries, {} documents, depth {}, fusion {}, relevance ≥ {}",
        report.dataset,
        report.split,
        report.queries,
        report.documents,
        report.depth,
        report.fusion,
        report.relevance_threshold
    );
    print!("{}", table.render());
}
