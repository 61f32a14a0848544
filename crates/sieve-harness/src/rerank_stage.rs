//! The rerank stage of an evaluation: every query's first-stage window reranked once per budget,
//! a pure row and (when the blend resolves to a weight) a blended row per budget, and optionally
//! one row per exit head of a Matryoshka reranker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use sieve::{BlendChoice, Budget, RerankDoc, Reranker, rerank_order};
use sieve_eval::Run;
use sieve_index::Progress;
use sieve_index::docstore::StoredDoc;

use crate::error::{HarnessError, Result};
use crate::report::{Latency, StageReport, StageWriter};

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
}

/// One query's first-stage candidates (documents and fused scores, best first).
pub struct QueryCandidates {
    /// The query's id in the qrels.
    pub qid: String,
    /// The query's text.
    pub query: String,
    /// The candidates with their first-stage scores.
    pub candidates: Vec<(StoredDoc, f32)>,
    /// The candidates' stored rerank states (the index's state store, when it was made with the
    /// reranker's codec); empty when there are none, and then [`rerank_stages`] computes them.
    pub states: Vec<sieve::DocStates>,
    /// What the first stage cost for this query (0 for a given run file).
    pub first_stage_ms: f64,
}

/// The rerank states of every list's window, once per document: the lists' stored ones where they
/// have them, else computed by the reranker (one tower pass over each distinct document), else
/// none (rerankers that read no states).
fn document_states(
    rerank: &RerankEval,
    lists: &[QueryCandidates],
    progress: &dyn Progress,
) -> Result<Vec<Vec<sieve::DocStates>>> {
    let window = |l: &QueryCandidates| rerank.window.min(l.candidates.len());
    if rerank.reranker.state_codec_id().is_none()
        || lists.iter().all(|l| l.states.len() >= window(l))
    {
        return Ok(lists.iter().map(|l| l.states.clone()).collect());
    }
    let mut distinct: HashMap<&str, usize> = Default::default();
    let mut docs: Vec<&StoredDoc> = Vec::new();
    for list in lists.iter().filter(|l| l.states.len() < window(l)) {
        for (doc, _) in &list.candidates[..window(list)] {
            distinct.entry(doc.id.as_str()).or_insert_with(|| {
                docs.push(doc);
                docs.len() - 1
            });
        }
    }
    progress.start("document states", docs.len() as u64);
    let mut computed = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(256) {
        let batch: Vec<RerankDoc<'_>> = chunk
            .iter()
            .map(|d| RerankDoc::new(&d.title, &d.text))
            .collect();
        let states = rerank
            .reranker
            .document_states(&batch)
            .map_err(HarnessError::rerank(
                "computing document states for the rerank stage",
            ))?
            .unwrap_or_default();
        computed.extend(states);
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
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
    progress: &dyn Progress,
) -> Result<Vec<StageReport>> {
    let blend = rerank.blend.weight_for(rerank.reranker.as_ref());
    // Warm up (session initialisation must not count against the first query).
    if let Some(first) = lists.iter().find(|l| !l.candidates.is_empty()) {
        let (doc, _) = &first.candidates[0];
        let warm = [RerankDoc::new(&doc.title, &doc.text)];
        rerank
            .reranker
            .rerank(&first.query, &warm)
            .map_err(HarnessError::rerank("reranker warm-up failed"))?;
    }
    let states = document_states(rerank, lists, progress)?;
    let mut reports = Vec::new();
    for budget in &rerank.budgets {
        let label = format!("rerank {budget}");
        progress.start(&label, lists.len() as u64);
        let (mut pure, mut blended) = (Run::new(), Run::new());
        let (mut totals, mut rerank_only) = (Vec::new(), Vec::new());
        let (mut blended_totals, mut blended_only) = (Vec::new(), Vec::new());
        // (layer, width) -> (run, end-to-end ms, rerank-only ms), from this budget's pass.
        let mut heads: BTreeMap<(u32, u32), HeadRows> = Default::default();
        let mut plans: BTreeSet<String> = Default::default();
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
                .map_err(HarnessError::rerank(format!(
                    "reranking query {} under budget {budget}",
                    list.qid
                )))?;
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
                    .map_err(HarnessError::rerank(format!(
                        "reranking query {} under budget {budget}",
                        list.qid
                    )))?;
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
            progress.advance(1);
        }
        progress.finish();
        let plan = match plans.len() {
            0 => None,
            1 => plans.pop_first().filter(|p| !p.is_empty()),
            _ => Some("per query".to_string()),
        };
        let mut row = writer.report(
            &label,
            &pure,
            Latency::of(totals),
            Some(Latency::of(rerank_only)),
        )?;
        row.plan = plan.clone();
        reports.push(row);
        if let Some(w) = blend {
            let mut row = writer.report(
                &format!("{label} + blend {w:.2}"),
                &blended,
                Latency::of(blended_totals),
                Some(Latency::of(blended_only)),
            )?;
            row.plan = plan;
            row.blend = Some(w);
            reports.push(row);
        }
        for ((layer, width), (run, total, only)) in heads {
            let mut row = writer.report(
                &format!("exit {layer}:{width} (in {budget})"),
                &run,
                Latency::of(total),
                Some(Latency::of(only)),
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
