//! Late-joined cross-encoders (sieve-ce v2): a reranker grown on top of the bi-encoder.
//!
//! A directory with a [`LATE_JOINED_FILE`] holds a model in three stages:
//! * **Towers** — the bi-encoder itself (the manifest names its directory and the sha256 of its
//!   ONNX file), run once on `[CLS] query [SEP]` and once per document on
//!   `[CLS] title text [SEP]`. The documents' side is what an index stores
//!   ([`sieve_core::DocStates`], compressed by the model's [`StateCodec`]): documents that come
//!   with states skip the tower entirely; the others run it here, with the same codec, so both
//!   paths give the same scores.
//! * **Joint blocks** — one ONNX graph per block ([`blocks`]): only the query tokens run them,
//!   cross-attending to the document's state codes (one-way), so a pair costs a few query tokens'
//!   worth of layers however long the document is.
//! * **Heads** — the first exit is the towers' cosine (the dense score, free; numbered by the
//!   towers' depth, 6), then one exit after each block (7, 8); every exit has widths that are
//!   prefixes of the pooled vectors.
//!
//! Budgets, cascades (pruning on the exit score or on its blend with the first stage), profiles
//! and per-head calibration work as for segmented Matryoshka models; latency budgets need a cost
//! table, which these models do not have yet.

mod blocks;
mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve_core::{
    Budget, DocStates, ExitScore, ExitTrace, PruneBlend, RerankDoc, RerankError, RerankOutput,
    RerankScore, RerankStats, SegmentTiming, sigmoid,
};
use sieve_embed::{BiEncoder, EmbedderConfig, StateCodec, TokenStates, document_text};

pub use manifest::{
    BlockSpec, CodecSpec, LATE_JOINED_FILE, LATE_JOINED_FORMAT, LateJoinedManifest, TowerSpec,
};

use crate::io::plan_batches;
use crate::matryoshka::{ManifestExit, Plan, head_name, resolve_plan};
use crate::{Calibration, CrossEncoderConfig, Device, Precision, load_err, run_err};
use blocks::Block;

/// The manifest inside `path` (a directory holding [`LATE_JOINED_FILE`], or that file).
pub(crate) fn manifest_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return (path.file_name()? == LATE_JOINED_FILE).then(|| path.to_path_buf());
    }
    let candidate = path.join(LATE_JOINED_FILE);
    candidate.is_file().then_some(candidate)
}

/// The state codec a late-joined model directory (or manifest) compresses document states with,
/// and the sha256 of the bi-encoder ONNX file its towers must be, so that an index can store
/// states for it; `Ok(None)` when `path` is not a late-joined model.
pub fn state_codec_of(path: &Path) -> Result<Option<(PathBuf, String)>, RerankError> {
    let Some(manifest_path) = manifest_in(path) else {
        return Ok(None);
    };
    let manifest = LateJoinedManifest::read(&manifest_path)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    Ok(Some((
        dir.join(&manifest.codec.file),
        manifest.tower.onnx_sha256,
    )))
}

/// A loaded late-joined model.
pub(crate) struct LateJoined {
    pub manifest: LateJoinedManifest,
    pub manifest_path: PathBuf,
    pub tower: BiEncoder,
    pub codec: StateCodec,
    blocks: Vec<Block>,
    pub profiles: BTreeMap<String, Plan>,
    pub precision: String,
    /// Per block call: at most this many (query + document) tokens and rows.
    batch_tokens: usize,
    max_batch: usize,
}

impl LateJoined {
    /// Loads the towers, codec and blocks and scores a probe pair.
    pub fn load(manifest_path: &Path, config: &CrossEncoderConfig) -> Result<Self, RerankError> {
        let dir = manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut manifest = LateJoinedManifest::read(manifest_path)?;
        if !config.profiles.is_empty() || config.default_profile.is_some() {
            manifest
                .profiles
                .extend(config.profiles.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(name) = &config.default_profile {
                manifest.default_profile = Some(name.clone());
            }
            manifest.validate().map_err(|e| {
                load_err(format!(
                    "profiles given for {}: {e}",
                    manifest_path.display()
                ))
            })?;
        }
        let profiles = manifest.profiles().map_err(load_err)?;
        let tower_path = dir.join(&manifest.tower.model);
        let tower = BiEncoder::open(
            &tower_path,
            EmbedderConfig {
                max_length: manifest.tower.doc_max_length,
                batch_tokens: config.batch_tokens.max(manifest.tower.doc_max_length),
                max_batch: config.max_batch,
                session: config.session.clone(),
            },
        )
        .map_err(|e| {
            load_err(format!(
                "the towers of {} ({}): {e}",
                manifest_path.display(),
                tower_path.display()
            ))
        })?;
        let sha = sha256_file(tower.model_path())?;
        if sha != manifest.tower.onnx_sha256 {
            return Err(load_err(format!(
                "the towers of {} must be the bi-encoder the blocks were trained on (sha256 {}), \
                 but {} has sha256 {sha}",
                manifest_path.display(),
                manifest.tower.onnx_sha256,
                tower.model_path().display()
            )));
        }
        if tower.dim() != manifest.hidden_size {
            return Err(load_err(format!(
                "the bi-encoder {} gives {}-d states; the manifest says hidden_size {}",
                tower.model_path().display(),
                tower.dim(),
                manifest.hidden_size
            )));
        }
        let codec_path = dir.join(&manifest.codec.file);
        let codec = StateCodec::open(&codec_path).map_err(|e| load_err(e.to_string()))?;
        if codec.rank() != manifest.codec.rank || codec.dim() != manifest.hidden_size {
            return Err(load_err(format!(
                "state codec {} has rank {} and dim {}; the manifest says rank {} and hidden_size {}",
                codec_path.display(),
                codec.rank(),
                codec.dim(),
                manifest.codec.rank,
                manifest.hidden_size
            )));
        }
        let int8 = match config.precision {
            Precision::Int8 => true,
            Precision::Fp32 => false,
            Precision::Auto => config.session.device == Device::Cpu,
        };
        let mut blocks = Vec::with_capacity(manifest.blocks.len());
        let mut used = Vec::new();
        for (spec, exit) in manifest.blocks.iter().zip(&manifest.exits[1..]) {
            let preferred = if int8 {
                spec.file_int8.as_ref()
            } else {
                Some(&spec.file)
            };
            let file = preferred
                .map(|f| dir.join(f))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| {
                    dir.join(
                        spec.file_int8
                            .as_ref()
                            .filter(|_| !int8)
                            .unwrap_or(&spec.file),
                    )
                });
            used.push(
                if spec.file_int8.as_ref().is_some_and(|f| dir.join(f) == file) {
                    "int8"
                } else {
                    "fp32"
                },
            );
            blocks.push(Block::load(&file, spec.layer, exit.widths.len(), config)?);
        }
        used.dedup();
        let precision = match used.as_slice() {
            [one] => one.to_string(),
            [] => "none".to_string(),
            _ => "mixed".to_string(),
        };
        let model = Self {
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            tower,
            codec,
            blocks,
            profiles,
            precision,
            batch_tokens: config.batch_tokens,
            max_batch: config.max_batch,
        };
        let probe = [RerankDoc::new("probe", "a probe document")];
        let deepest = model
            .manifest
            .exits
            .last()
            .map(|e| (e.layer, max_width(&e.widths)));
        if let Some((layer, width)) = deepest {
            model
                .rerank(
                    "probe query",
                    &probe,
                    &Budget::Exit { layer, width },
                    None,
                    "cpu",
                )
                .map_err(|e| {
                    load_err(format!(
                        "{} loads but cannot score: {e}",
                        manifest_path.display()
                    ))
                })?;
        }
        Ok(model)
    }

    /// The exits, shallowest first.
    pub fn exits(&self) -> &[ManifestExit] {
        &self.manifest.exits
    }

    /// The calibration of one head, if the manifest has one.
    pub fn head_calibration(&self, layer: u32, width: u32) -> Option<Calibration> {
        self.manifest
            .calibration
            .as_ref()
            .and_then(|c| c.heads.get(&head_name(layer, width)).copied())
    }

    fn calibrate(&self, layer: u32, width: u32, raw: f32) -> f32 {
        self.head_calibration(layer, width)
            .map_or_else(|| sigmoid(raw), |c| c.apply(raw))
    }

    /// The plan a budget runs.
    pub fn resolve(&self, budget: &Budget) -> Result<Plan, RerankError> {
        let invalid = RerankError::Invalid;
        match budget {
            Budget::Default => {
                let name = self.manifest.default_profile_name();
                self.profiles
                    .get(name)
                    .cloned()
                    .ok_or_else(|| invalid(format!("the default profile {name:?} is not defined")))
            }
            Budget::Profile(name) => self.profiles.get(name).cloned().ok_or_else(|| {
                let known: Vec<String> = self
                    .profiles
                    .iter()
                    .map(|(k, p)| format!("{k} ({p})"))
                    .collect();
                invalid(format!(
                    "unknown profile {name:?} (profiles of {}: {})",
                    self.manifest_path.display(),
                    known.join(", ")
                ))
            }),
            Budget::LatencyMs(_) => Err(invalid(format!(
                "latency budgets need a measured cost table, which late-joined models ({}) do not \
                 have yet; choose an exit, a cascade or a profile",
                self.manifest_path.display()
            ))),
            other => resolve_plan(self.exits(), other)
                .map_err(|e| invalid(format!("budget '{other}': {e}"))),
        }
    }

    /// Whether states handed in by a caller fit this model (codec rank, vector size, lengths).
    fn usable(&self, states: &DocStates) -> bool {
        states.rank == self.codec.rank()
            && states.vector.len() == self.manifest.hidden_size
            && states.tokens() > 0
            && states.codes.len() == states.tokens() * states.rank
    }

    /// Runs the document tower on `docs` and compresses its states with the codec: exactly what
    /// an index stores for them.
    pub fn document_states(&self, docs: &[RerankDoc<'_>]) -> Result<Vec<DocStates>, RerankError> {
        let embed_err = |e: sieve_embed::EmbedError| run_err(format!("towers: {e}"));
        let texts: Vec<String> = docs
            .iter()
            .map(|d| document_text(d.title, d.text))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.tower
            .embed_token_states(&refs, None, &mut |_| {})
            .map_err(embed_err)?
            .iter()
            .map(|t| self.codec.encode(t).map_err(embed_err))
            .collect()
    }

    /// Scores `docs` under `budget`; see the module documentation.
    pub fn rerank(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        budget: &Budget,
        blend: Option<PruneBlend<'_>>,
        device: &str,
    ) -> Result<RerankOutput, RerankError> {
        if query.trim().is_empty() {
            return Err(RerankError::Invalid("the query is empty".into()));
        }
        let mut stats = RerankStats {
            device: device.to_string(),
            ..RerankStats::default()
        };
        let began = Instant::now();
        let plan = self.resolve(budget)?;
        stats.plan = plan.to_string();
        let n = docs.len();
        let first = plan
            .steps
            .first()
            .and_then(|s| s.keep)
            .unwrap_or(usize::MAX)
            .min(n);
        let embed_err = |e: sieve_embed::EmbedError| run_err(format!("towers: {e}"));
        let query_states = self
            .tower
            .embed_token_states(
                &[query],
                Some(self.manifest.tower.query_cap + 2),
                &mut |_| {},
            )
            .map_err(embed_err)?
            .pop()
            .ok_or_else(|| run_err("towers: no query states"))?;
        stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;

        // Document states: the caller's where usable, else the towers here.
        let towers_began = Instant::now();
        let missing: Vec<usize> = (0..first)
            .filter(|&i| !docs[i].states.is_some_and(|s| self.usable(s)))
            .collect();
        let mut computed: Vec<Option<DocStates>> = vec![None; first];
        if !missing.is_empty() {
            let wanted: Vec<RerankDoc<'_>> = missing.iter().map(|&i| docs[i]).collect();
            for (&i, s) in missing.iter().zip(self.document_states(&wanted)?) {
                computed[i] = Some(s);
            }
        }
        let states: Vec<&DocStates> = (0..first)
            .map(|i| match (&computed[i], docs[i].states) {
                (Some(own), _) => Ok(own),
                (None, Some(given)) => Ok(given),
                (None, None) => Err(run_err("internal: a document has no states")),
            })
            .collect::<Result<_, _>>()?;
        let towers_ms = towers_began.elapsed().as_secs_f64() * 1e3;
        stats.segments.push(SegmentTiming {
            segment: 0,
            exit_layer: self.manifest.exits[0].layer,
            pairs: missing.len(),
            ms: towers_ms,
        });
        stats.model_ms += towers_ms;
        stats.pairs = first;

        let (scores, traces) = self.execute(&query_states, &states, n, &plan, blend, &mut stats)?;
        Ok(RerankOutput {
            scores,
            traces,
            stats,
        })
    }

    /// Runs `plan` over the first `states.len()` of `n` documents.
    fn execute(
        &self,
        query: &TokenStates,
        states: &[&DocStates],
        n: usize,
        plan: &Plan,
        blend: Option<PruneBlend<'_>>,
        stats: &mut RerankStats,
    ) -> Result<(Vec<RerankScore>, Vec<ExitTrace>), RerankError> {
        let unscored = RerankScore {
            raw: 0.0,
            calibrated: 0.0,
            windows: 0,
            best_window: 0,
        };
        let mut scores = vec![unscored; n];
        let mut traces = vec![
            ExitTrace {
                exits: Vec::new(),
                pruned_at: Some(0),
            };
            n
        ];
        let first = states.len();
        // exit index (0 = towers) -> per document, one score per width of that exit
        let mut exit_scores: Vec<Vec<Option<Vec<f32>>>> =
            vec![vec![None; first]; self.manifest.exits.len()];
        let towers_exit = &self.manifest.exits[0];
        for (d, s) in states.iter().enumerate() {
            let row: Vec<f32> = towers_exit
                .widths
                .iter()
                .map(|&w| prefix_cosine(&query.vector, &s.vector, w as usize))
                .collect();
            for (&width, &raw) in towers_exit.widths.iter().zip(&row) {
                traces[d].exits.push(ExitScore {
                    layer: towers_exit.layer,
                    width,
                    raw,
                });
            }
            exit_scores[0][d] = Some(row);
        }
        let mut x: Vec<Option<Vec<f32>>> = vec![None; first];
        let mut active: Vec<usize> = (0..first).collect();
        let mut step_score = vec![0f32; n];
        let mut done = 0; // blocks run so far
        let mut previous_layer = 0;
        for (i, step) in plan.steps.iter().enumerate() {
            let exit_index = self
                .manifest
                .exits
                .iter()
                .position(|e| e.layer == step.layer)
                .ok_or_else(|| {
                    RerankError::Invalid(format!("plan {plan}: no exit at layer {}", step.layer))
                })?;
            if i > 0 {
                let keep = step.keep.unwrap_or(usize::MAX).min(active.len());
                let mut prune_score = step_score.clone();
                if let Some(blend) = &blend {
                    let exit: Vec<f32> = active.iter().map(|&d| step_score[d]).collect();
                    for (&d, s) in active.iter().zip(blend.scores(&active, &exit)) {
                        prune_score[d] = s;
                    }
                }
                let mut ranked = active.clone();
                ranked.sort_by(|&a, &b| prune_score[b].total_cmp(&prune_score[a]).then(a.cmp(&b)));
                for &d in &ranked[keep..] {
                    traces[d].pruned_at = Some(previous_layer);
                    x[d] = None;
                }
                ranked.truncate(keep);
                ranked.sort_unstable();
                active = ranked;
            }
            if active.is_empty() {
                break;
            }
            while done < exit_index {
                let keep_x = done + 1 < self.blocks.len();
                self.run_block(done, &active, query, states, &mut x, keep_x, stats)
                    .map(|rows| {
                        let exit = &self.manifest.exits[done + 1];
                        for (&d, row) in active.iter().zip(rows) {
                            for (&width, &raw) in exit.widths.iter().zip(&row) {
                                traces[d].exits.push(ExitScore {
                                    layer: exit.layer,
                                    width,
                                    raw,
                                });
                            }
                            exit_scores[done + 1][d] = Some(row);
                        }
                    })?;
                done += 1;
            }
            let column = self.manifest.exits[exit_index]
                .widths
                .iter()
                .position(|&w| w == step.width)
                .ok_or_else(|| {
                    RerankError::Invalid(format!(
                        "plan {plan}: exit {} has no width {}",
                        step.layer, step.width
                    ))
                })?;
            for &d in &active {
                let raw = exit_scores[exit_index][d]
                    .as_ref()
                    .and_then(|row| row.get(column).copied())
                    .ok_or_else(|| run_err("internal: an active document has no exit score"))?;
                step_score[d] = raw;
                scores[d] = RerankScore {
                    raw,
                    calibrated: self.calibrate(step.layer, step.width, raw),
                    windows: 1,
                    best_window: 0,
                };
                traces[d].pruned_at = None;
            }
            previous_layer = step.layer;
        }
        Ok((scores, traces))
    }

    /// Runs block `b` over the `active` documents in token-budgeted batches of similar length;
    /// returns their scores (active order) and keeps their new query states in `x` if asked.
    #[allow(clippy::too_many_arguments)]
    fn run_block(
        &self,
        b: usize,
        active: &[usize],
        query: &TokenStates,
        states: &[&DocStates],
        x: &mut [Option<Vec<f32>>],
        keep_x: bool,
        stats: &mut RerankStats,
    ) -> Result<Vec<Vec<f32>>, RerankError> {
        let block = &self.blocks[b];
        if keep_x && !block.has_x_out {
            return Err(run_err(format!(
                "joint block {} has no output `x_out`, but a deeper block follows it",
                block.path.display()
            )));
        }
        let began = Instant::now();
        let hidden = self.manifest.hidden_size;
        let lq = query.tokens;
        let lengths: Vec<usize> = active.iter().map(|&d| states[d].tokens()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); active.len()];
        for batch in plan_batches(&lengths, self.batch_tokens, self.max_batch) {
            let members: Vec<usize> = batch.members.iter().map(|&j| active[j]).collect();
            let inputs: Vec<&[f32]> = (0..states.len())
                .map(|d| x[d].as_deref().unwrap_or(&query.states))
                .collect();
            let result = block.run(&members, &inputs, lq, states, batch.seq_len, hidden, keep_x)?;
            stats.batches += 1;
            stats.padded_tokens += members.len() * (lq + batch.seq_len);
            for (&j, row) in batch.members.iter().zip(result.scores) {
                out[j] = row;
            }
            if keep_x {
                for (&d, state) in members.iter().zip(result.x_out) {
                    x[d] = Some(state);
                }
            }
        }
        let ms = began.elapsed().as_secs_f64() * 1e3;
        stats.model_ms += ms;
        stats.segments.push(SegmentTiming {
            segment: b as u32 + 1,
            exit_layer: block.layer,
            pairs: active.len(),
            ms,
        });
        Ok(out)
    }
}

/// Cosine of the first `width` values of two vectors.
fn prefix_cosine(a: &[f32], b: &[f32], width: usize) -> f32 {
    let w = width.min(a.len()).min(b.len());
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a[..w].iter().zip(&b[..w]) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
    }
}

fn max_width(widths: &[u32]) -> u32 {
    widths.iter().copied().max().unwrap_or(0)
}

fn sha256_file(path: &Path) -> Result<String, RerankError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path)
        .map_err(|e| load_err(format!("cannot read {}: {e}", path.display())))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}
