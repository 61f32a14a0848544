//! Late-joined cross-encoders (sieve-ce v2): a reranker grown on top of the bi-encoder.
//!
//! A directory with a [`LATE_JOINED_FILE`] holds a model in three stages:
//! * **Towers** — the bi-encoder itself (the manifest names its directory and the sha256 of its
//!   ONNX file), run once on `[CLS] query [SEP]` and once per document on
//!   `[CLS] title text [SEP]`. The documents' side is what an index stores
//!   ([`sieve_core::DocStates`], compressed by the model's [`StateCodec`]): documents that come
//!   with states skip the tower entirely; the others run it here, with the same codec, so both
//!   paths give the same scores.
//! * **Query graph** (optional, format `/2`) — the tower's lower layers with trained copies of its
//!   upper layers, run once per query; the blocks read its states instead of the tower's (the
//!   tower's pooled query vector stays exit 6's). Same tokens, so documents are unaffected.
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
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve_core::{
    Budget, DocStates, PruneBlend, RerankDoc, RerankError, RerankOutput, RerankStats,
    SegmentTiming, sigmoid,
};
use sieve_embed::{BiEncoder, EmbedderConfig, StateCodec, TokenStates, document_text};

pub use manifest::{
    BlockSpec, CodecSpec, LATE_JOINED_FILE, LATE_JOINED_FORMAT, LATE_JOINED_FORMAT_QUERY_TOWER,
    LateJoinedManifest, QueryTowerSpec, TowerSpec,
};

use crate::matryoshka::{ManifestExit, Plan, head_name, resolve_plan};
use crate::{Calibration, CrossEncoderConfig, Device, Precision, load_err, run_err};
use blocks::Block;
use run::Job;

/// One query of a multi-query call: the query, its documents, its budget and, for a caller that
/// ranks by a blend with the first stage, what a cascade prunes on.
pub(crate) type RerankRequest<'a> = (
    &'a str,
    &'a [RerankDoc<'a>],
    &'a Budget,
    Option<PruneBlend<'a>>,
);

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
    /// The query graph, when the manifest names one: the blocks' query input.
    query_tower: Option<BiEncoder>,
    pub codec: StateCodec,
    blocks: Vec<Block>,
    pub profiles: BTreeMap<String, Plan>,
    pub precision: String,
    /// Per block call: at most this many document tokens (rows × padded length) and rows.
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
        let tower_config = EmbedderConfig {
            max_length: manifest.tower.doc_max_length,
            batch_tokens: config.batch_tokens.max(manifest.tower.doc_max_length),
            max_batch: config.max_batch,
            session: config.session.clone(),
        };
        let tower = BiEncoder::open(&tower_path, tower_config.clone()).map_err(|e| {
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
        let query_tower = match &manifest.query_tower {
            None => None,
            Some(spec) => {
                let path = dir.join(&spec.file);
                let graph = BiEncoder::open_files(&path, tower.tokenizer_path(), tower_config)
                    .map_err(|e| {
                        load_err(format!(
                            "the query graph of {} ({}): {e}",
                            manifest_path.display(),
                            path.display()
                        ))
                    })?;
                if graph.dim() != manifest.hidden_size {
                    return Err(load_err(format!(
                        "the query graph {} gives {}-d states; the manifest says hidden_size {}",
                        path.display(),
                        graph.dim(),
                        manifest.hidden_size
                    )));
                }
                Some(graph)
            }
        };
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
            query_tower,
            codec,
            blocks,
            profiles,
            precision,
            batch_tokens: config.block_batch_tokens,
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

    /// The queries' tower outputs as the blocks read them: the tower's pooled vector (exit 6)
    /// and, per token, the query graph's states where the model has one, else the tower's.
    pub fn query_states(&self, queries: &[&str]) -> Result<Vec<TokenStates>, RerankError> {
        let embed_err = |e: sieve_embed::EmbedError| run_err(format!("towers: {e}"));
        let cap = Some(self.manifest.tower.query_cap + 2);
        let mut states = self
            .tower
            .embed_token_states(queries, cap, &mut |_| {})
            .map_err(embed_err)?;
        if states.len() != queries.len() {
            return Err(run_err("towers: one query's states are missing"));
        }
        if let Some(graph) = &self.query_tower {
            let joint = graph
                .embed_token_states(queries, cap, &mut |_| {})
                .map_err(|e| run_err(format!("query graph: {e}")))?;
            if joint.len() != states.len() {
                return Err(run_err("query graph: one query's states are missing"));
            }
            for (tower, own) in states.iter_mut().zip(joint) {
                if own.tokens != tower.tokens {
                    return Err(run_err(format!(
                        "query graph: {} tokens where the tower has {}",
                        own.tokens, tower.tokens
                    )));
                }
                tower.states = own.states;
            }
        }
        Ok(states)
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
        self.rerank_many(&[(query, docs, budget, blend)], device)
            .pop()
            .unwrap_or_else(|| Err(run_err("internal: no result for the query")))
    }

    /// Scores several queries' documents in one run: one query-tower call for all queries, one
    /// document-tower call for every document that came without states, and each joint block
    /// over all queries' pairs in shared batches ([`run`]). One result per request, in order,
    /// equal to what [`rerank`](Self::rerank) gives for each alone.
    pub fn rerank_many(
        &self,
        requests: &[RerankRequest<'_>],
        device: &str,
    ) -> Vec<Result<RerankOutput, RerankError>> {
        let mut results: Vec<Option<Result<RerankOutput, RerankError>>> =
            requests.iter().map(|_| None).collect();
        let began = Instant::now();
        // Plans, and how many documents enter each.
        let mut valid: Vec<(usize, Plan, usize)> = Vec::new();
        for (r, (query, docs, budget, _)) in requests.iter().enumerate() {
            if query.trim().is_empty() {
                results[r] = Some(Err(RerankError::Invalid("the query is empty".into())));
                continue;
            }
            match self.resolve(budget) {
                Ok(plan) => {
                    let first = plan
                        .steps
                        .first()
                        .and_then(|s| s.keep)
                        .unwrap_or(usize::MAX)
                        .min(docs.len());
                    valid.push((r, plan, first));
                }
                Err(e) => results[r] = Some(Err(e)),
            }
        }
        if let Err(e) = self.run_valid(requests, &valid, &mut results, began, device) {
            for &(r, ..) in &valid {
                results[r] = Some(Err(e.clone()));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(run_err("internal: a query was not run"))))
            .collect()
    }

    /// The towers and the plans of the `valid` requests; their results go into `results`.
    fn run_valid(
        &self,
        requests: &[RerankRequest<'_>],
        valid: &[(usize, Plan, usize)],
        results: &mut [Option<Result<RerankOutput, RerankError>>],
        began: Instant,
        device: &str,
    ) -> Result<(), RerankError> {
        if valid.is_empty() {
            return Ok(());
        }
        let queries: Vec<&str> = valid.iter().map(|&(r, ..)| requests[r].0).collect();
        let query_states = self.query_states(&queries)?;
        let tokenize_ms = began.elapsed().as_secs_f64() * 1e3;

        // Document states: the caller's where usable, else one towers call for all requests.
        let towers_began = Instant::now();
        let mut missing: Vec<(usize, usize)> = Vec::new(); // (valid index, document)
        for (v, &(r, _, first)) in valid.iter().enumerate() {
            let docs = requests[r].1;
            missing.extend(
                (0..first)
                    .filter(|&i| !docs[i].states.is_some_and(|s| self.usable(s)))
                    .map(|i| (v, i)),
            );
        }
        let wanted: Vec<RerankDoc<'_>> = missing
            .iter()
            .map(|&(v, i)| requests[valid[v].0].1[i])
            .collect();
        let mut computed: Vec<Vec<Option<DocStates>>> = valid
            .iter()
            .map(|&(_, _, first)| vec![None; first])
            .collect();
        if !wanted.is_empty() {
            for (&(v, i), s) in missing.iter().zip(self.document_states(&wanted)?) {
                computed[v][i] = Some(s);
            }
        }
        let towers_ms = towers_began.elapsed().as_secs_f64() * 1e3;
        let mut jobs = Vec::with_capacity(valid.len());
        for ((v, (r, plan, first)), query) in valid.iter().enumerate().zip(query_states) {
            let (_, docs, _, blend) = requests[*r];
            let states: Vec<&DocStates> = (0..*first)
                .map(|i| match (&computed[v][i], docs[i].states) {
                    (Some(own), _) => Ok(own),
                    (None, Some(given)) => Ok(given),
                    (None, None) => Err(run_err("internal: a document has no states")),
                })
                .collect::<Result<_, _>>()?;
            let own = missing.iter().filter(|&&(mv, _)| mv == v).count();
            let share = if missing.is_empty() {
                0.0
            } else {
                towers_ms * own as f64 / missing.len() as f64
            };
            let stats = RerankStats {
                device: device.to_string(),
                plan: plan.to_string(),
                tokenize_ms,
                model_ms: share,
                pairs: *first,
                segments: vec![SegmentTiming {
                    segment: 0,
                    exit_layer: self.manifest.exits[0].layer,
                    pairs: own,
                    ms: share,
                }],
                ..RerankStats::default()
            };
            jobs.push(Job {
                query,
                states,
                n: docs.len(),
                plan: plan.clone(),
                blend,
                stats,
            });
        }
        let outcomes = self.execute_many(&mut jobs);
        for ((&(r, ..), job), outcome) in valid.iter().zip(jobs).zip(outcomes) {
            results[r] = Some(outcome.map(|(scores, traces)| RerankOutput {
                scores,
                traces,
                stats: job.stats,
            }));
        }
        Ok(())
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
