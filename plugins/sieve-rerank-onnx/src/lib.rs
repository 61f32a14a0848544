//! The ONNX cross-encoder rerank backend of sieve.
//!
//! [`CrossEncoder`] drives cross-encoders through ONNX Runtime and implements
//! [`sieve_core::Reranker`]. [`CrossEncoder::open`] is the one entry point for any model
//! directory: one with a [`LATE_JOINED_FILE`] is a late-joined model, one with a
//! [`MANIFEST_FILE`] a segmented 2D-Matryoshka model (see below), any other a single-graph
//! Hugging Face export.
//!
//! * **Single-graph model directory**: `model.onnx` or `onnx/model*.onnx` (or an `.onnx` file
//!   given directly), `tokenizer.json` beside it (or, for a file inside `onnx/`, in the folder
//!   above), optionally `config.json` (for `max_position_embeddings`) and [`CALIBRATION_FILE`]. The
//!   graph's inputs are discovered by name: `input_ids` and `attention_mask` (required) and
//!   `token_type_ids` (optional), int64 or int32; no other input is allowed. The output is
//!   `logits` (or the only output) of shape `[batch, 1]` (a relevance logit) or `[batch, 2]` (two
//!   classes, the second meaning relevant). Anything else is refused at [`CrossEncoder::open`]
//!   with a [`RerankError::Load`] naming the file and the problem.
//! * **Segmented (Matryoshka) model directory**: [`MANIFEST_FILE`], `tokenizer.json` and one ONNX
//!   graph per segment (int8 or fp32, see [`Precision`]); scoring at an exit runs only the
//!   segments up to it, and [`sieve_core::Budget`]s choose exits and cascades per call
//!   ([`Reranker::rerank_budgeted`](sieve_core::Reranker::rerank_budgeted)). Maximum length, query cap and per-head calibration come from
//!   the manifest. The order of a cascade's output is given by [`cascade_order`]. With a measured
//!   [`CostTable`] ([`COST_FILE`], see [`CrossEncoder::measure_costs`]), latency budgets pick the
//!   deepest plan predicted to fit.
//! * **Late-joined model directory** (sieve-ce v2): [`LATE_JOINED_FILE`], a state codec and one
//!   ONNX graph per joint block; the towers are the bi-encoder the manifest names (checked by
//!   sha256). Documents may come with precomputed [`sieve_core::DocStates`] (an index's state
//!   store), else the towers run here; exits start at 0 (the towers' cosine). See the
//!   `late_joined` module.
//! * **Pairs** are encoded as the tokenizer's pair template gives them (`[CLS] query [SEP] doc
//!   [SEP]` with token types 0/1 for BERT), but truncation is done here, on token ids: the query is
//!   cut to [`CrossEncoderConfig::query_max_tokens`] (a Matryoshka model: its manifest's
//!   `query_cap`), the document gets the rest of `max_length`.
//! * **Long documents** are split into overlapping windows ([`plan_windows`]); the document's
//!   score is the best window's ([`WindowAggregation`]).
//! * **Throughput**: every (query, window) pair of a call is sorted by length and packed into
//!   batches by a token budget; sessions are built once (graph optimisation level 3, one
//!   intra-op thread per core) and shared behind a mutex, since running one needs `&mut`.
//! * **Scores**: `raw` is the logit (for two classes, `logit[1] - logit[0]`, so that
//!   `sigmoid(raw)` is the softmax probability of the relevant class); `calibrated` is
//!   `sigmoid(raw)`, or `sigmoid(raw / T + b)` when the model has a calibration (a calibration
//!   file, or per head in a Matryoshka manifest).

mod calibration;
mod config;
mod cost;
mod cost_check;
mod encode;
mod io;
mod late_joined;
mod matryoshka;
mod scoring;
mod single;
mod windows;

use std::ops::Range;
use std::path::{Path, PathBuf};

use sieve_core::{Budget, RerankDoc, RerankError};
pub use sieve_onnx::{Device, SessionOptions};

pub use calibration::{CALIBRATION_FILE, Calibration};
pub use config::{CrossEncoderConfig, DEFAULT_MAX_LENGTH, DEFAULT_MAX_WINDOWS, Precision};
pub use cost::{COST_FILE, COST_FORMAT, CostOptions, CostTable, SegmentCost};
pub use cost_check::{CostCheck, CostCheckOptions, CostCheckRow};
pub use late_joined::{
    BlockSpec, CodecSpec, LATE_JOINED_FILE, LATE_JOINED_FORMAT, LATE_JOINED_FORMAT_QUERY_TOWER,
    LateJoinedManifest, QueryTowerSpec, TowerSpec, state_codec_of,
};
pub use matryoshka::{
    MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ManifestBlend, ManifestCalibration, ManifestExit,
    ManifestFull, ManifestSegment, Plan, PlanStep, cascade_order, head_name,
};
pub use windows::{WindowAggregation, plan_windows};

use config::{resolve_max_length, validate_config};
use encode::{PairEncoder, check_room, load_pair_tokenizer};
use late_joined::LateJoined;
use matryoshka::Matryoshka;
use single::SingleGraph;

/// One (query, window) sequence as it is fed to the model, from [`CrossEncoder::encode_windows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedWindow {
    /// Token ids, special tokens included (`[CLS] query [SEP] window [SEP]` for BERT).
    pub ids: Vec<u32>,
    /// Token type ids as the tokenizer's pair template assigns them (0 query, 1 document for BERT).
    pub type_ids: Vec<u32>,
    /// Which of the document's tokens (special tokens excluded) the window holds.
    pub doc_tokens: Range<usize>,
}

/// The model behind a [`CrossEncoder`].
enum Engine {
    Single {
        graph: Box<SingleGraph>,
        calibration: Option<Calibration>,
    },
    Matryoshka(Box<Matryoshka>),
    LateJoined(Box<LateJoined>),
}

/// A loaded cross-encoder, single-graph or segmented; `Send + Sync`, so one instance can serve
/// many threads (model calls are serialised on each session, tokenization is not).
pub struct CrossEncoder {
    encoder: PairEncoder,
    engine: Engine,
    config: CrossEncoderConfig,
    model_dir: PathBuf,
    model_path: PathBuf,
    tokenizer_path: PathBuf,
    device: String,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("model", &self.model_path)
            .field("matryoshka", &self.is_matryoshka())
            .field("classes", &self.logit_classes())
            .field("max_length", &self.encoder.max_length)
            .field("device", &self.device)
            .finish()
    }
}

fn load_err(message: impl Into<String>) -> RerankError {
    RerankError::Load(message.into())
}

fn run_err(message: impl Into<String>) -> RerankError {
    RerankError::Run(message.into())
}

/// Reads a JSON file of the model directory and checks it; errors are [`RerankError::Load`]s
/// naming `what` and the file.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, RerankError> {
    let err = |message: String| load_err(format!("{what} {}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: T = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    check(&value).map_err(err)?;
    Ok(value)
}

/// `cpu` or `cuda:N`, as shown in stats and descriptions.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
    }
}

impl CrossEncoder {
    /// Loads a cross-encoder from a model directory (or an `.onnx` file with its tokenizer beside
    /// it, or in the folder above `onnx/`), checks that its graphs can be driven, and runs them
    /// once on a probe pair so that a model that loads but cannot run fails here, not mid-search.
    ///
    /// A directory holding a [`MANIFEST_FILE`] (or that file itself) is opened as a segmented
    /// Matryoshka model: every segment's session is built once, for the configured
    /// [`Precision`]; the manifest's `max_length`, `query_cap` and per-head calibration apply, and
    /// a [`COST_FILE`] beside it is read for latency budgets (a broken one only makes latency
    /// budgets fail, saying why).
    pub fn open(path: &Path, config: CrossEncoderConfig) -> Result<Self, RerankError> {
        validate_config(&config)?;
        if !path.exists() {
            return Err(load_err(format!(
                "model path {} does not exist",
                path.display()
            )));
        }
        if let Some(manifest_path) = late_joined::manifest_in(path) {
            return Self::open_late_joined(&manifest_path, config);
        }
        if let Some(manifest_path) = matryoshka::manifest_in(path) {
            return Self::open_matryoshka(&manifest_path, config);
        }
        let model_path = sieve_embed::find_onnx_model(path).map_err(|e| load_err(e.to_string()))?;
        let model_dir = model_directory(path, &model_path);
        let tokenizer_path = model_dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(load_err(format!(
                "no tokenizer.json in {} (the cross-encoder {} needs its tokenizer beside it)",
                model_dir.display(),
                model_path.display()
            )));
        }
        let (tokenizer, pair_special_tokens, pad_id) = load_pair_tokenizer(&tokenizer_path)?;
        let max_length = resolve_max_length(config.max_length, &model_dir)?;
        check_room(max_length, pair_special_tokens, config.query_max_tokens)?;
        let calibration = Calibration::from_dir(&model_dir)?;
        let encoder = PairEncoder {
            tokenizer,
            pad_id,
            pair_special_tokens,
            max_length,
            query_max_tokens: config.query_max_tokens,
            window_stride: config.window_stride,
            max_windows: config.max_windows.unwrap_or(DEFAULT_MAX_WINDOWS),
        };
        let graph = SingleGraph::load(&model_path, &encoder, &config.session)?;
        Ok(Self {
            encoder,
            engine: Engine::Single {
                graph: Box::new(graph),
                calibration,
            },
            device: device_name(config.session.device),
            config,
            model_dir,
            model_path,
            tokenizer_path,
        })
    }

    fn open_late_joined(
        manifest_path: &Path,
        config: CrossEncoderConfig,
    ) -> Result<Self, RerankError> {
        let model = LateJoined::load(manifest_path, &config)?;
        let model_dir = manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        // The pair encoder only serves `encode_windows` (inspection); scoring uses the towers.
        let tokenizer_path = model.tower.tokenizer_path().to_path_buf();
        let (tokenizer, pair_special_tokens, pad_id) = load_pair_tokenizer(&tokenizer_path)?;
        let max_length = model.manifest.tower.doc_max_length + model.manifest.tower.query_cap;
        let encoder = PairEncoder {
            tokenizer,
            pad_id,
            pair_special_tokens,
            max_length,
            query_max_tokens: model.manifest.tower.query_cap,
            window_stride: config.window_stride,
            max_windows: 1,
        };
        Ok(Self {
            encoder,
            engine: Engine::LateJoined(Box::new(model)),
            device: device_name(config.session.device),
            config,
            model_dir,
            model_path: manifest_path.to_path_buf(),
            tokenizer_path,
        })
    }

    fn open_matryoshka(
        manifest_path: &Path,
        config: CrossEncoderConfig,
    ) -> Result<Self, RerankError> {
        let model_dir = manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut manifest = Manifest::read(manifest_path)?;
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
        let tokenizer_path = model_dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(load_err(format!(
                "no tokenizer.json in {} (the Matryoshka model {} needs its tokenizer beside it)",
                model_dir.display(),
                manifest_path.display()
            )));
        }
        let (tokenizer, pair_special_tokens, pad_id) = load_pair_tokenizer(&tokenizer_path)?;
        let max_length = config
            .max_length
            .map_or(manifest.max_length, |n| n.min(manifest.max_length));
        check_room(max_length, pair_special_tokens, manifest.query_cap)?;
        let encoder = PairEncoder {
            tokenizer,
            pad_id,
            pair_special_tokens,
            max_length,
            query_max_tokens: manifest.query_cap,
            window_stride: config.window_stride,
            max_windows: config
                .max_windows
                .or(manifest.max_windows)
                .unwrap_or(DEFAULT_MAX_WINDOWS),
        };
        let model = Matryoshka::load(manifest, manifest_path, &model_dir, &encoder, &config)?;
        Ok(Self {
            encoder,
            engine: Engine::Matryoshka(Box::new(model)),
            device: device_name(config.session.device),
            config,
            model_dir,
            model_path: manifest_path.to_path_buf(),
            tokenizer_path,
        })
    }

    /// The ONNX file that was loaded; for a Matryoshka model, its [`MANIFEST_FILE`].
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The model directory: the directory given to [`open`](Self::open), or for a file, the
    /// directory its `tokenizer.json` was found in. `config.json` and [`CALIBRATION_FILE`] are
    /// read from here.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// The tokenizer file that was loaded.
    pub fn tokenizer_path(&self) -> &Path {
        &self.tokenizer_path
    }

    /// The longest (query, window) sequence fed to the model, special tokens included.
    pub fn max_length(&self) -> usize {
        self.encoder.max_length
    }

    /// The most query tokens a pair holds (the configuration's, or a Matryoshka manifest's).
    pub fn query_max_tokens(&self) -> usize {
        self.encoder.query_max_tokens
    }

    /// Special tokens the pair template adds (3 for BERT's `[CLS] a [SEP] b [SEP]`).
    pub fn pair_special_tokens(&self) -> usize {
        self.encoder.pair_special_tokens
    }

    /// 1 for a `[batch, 1]` logit output, 2 for `[batch, 2]` class logits (1 for Matryoshka
    /// models: one logit per head).
    pub fn logit_classes(&self) -> usize {
        match &self.engine {
            Engine::Single { graph, .. } => graph.classes(),
            Engine::Matryoshka(_) | Engine::LateJoined(_) => 1,
        }
    }

    /// Whether the graph (the first segment of a Matryoshka model) takes `token_type_ids`.
    pub fn uses_token_type_ids(&self) -> bool {
        match &self.engine {
            Engine::Single { graph, .. } => graph.uses_token_type_ids(),
            Engine::Matryoshka(m) => m.uses_token_type_ids(),
            Engine::LateJoined(_) => false,
        }
    }

    /// The calibration read from the model directory, if any (`None` for Matryoshka models, see
    /// [`head_calibration`](Self::head_calibration)).
    pub fn calibration(&self) -> Option<Calibration> {
        match &self.engine {
            Engine::Single { calibration, .. } => *calibration,
            Engine::Matryoshka(_) | Engine::LateJoined(_) => None,
        }
    }

    /// The configuration the model runs with (`max_length` as given, see
    /// [`max_length`](Self::max_length) for the value in use).
    pub fn config(&self) -> &CrossEncoderConfig {
        &self.config
    }

    /// Where the model runs: `cpu` or `cuda:N`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Whether this is a segmented Matryoshka model.
    pub fn is_matryoshka(&self) -> bool {
        matches!(self.engine, Engine::Matryoshka(_))
    }

    /// Whether this is a late-joined (sieve-ce v2) model.
    pub fn is_late_joined(&self) -> bool {
        matches!(self.engine, Engine::LateJoined(_))
    }

    /// The late-joined manifest, if this is one.
    pub fn late_joined_manifest(&self) -> Option<&LateJoinedManifest> {
        match &self.engine {
            Engine::LateJoined(m) => Some(&m.manifest),
            _ => None,
        }
    }

    /// The Matryoshka manifest, if this is one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.matryoshka().ok().map(|m| &m.manifest)
    }

    /// The segment files loaded (Matryoshka models; empty otherwise), in order.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.matryoshka()
            .map(|m| m.segments.iter().map(|s| s.path.clone()).collect())
            .unwrap_or_default()
    }

    /// `int8`, `fp32` or `mixed` (segments of both) for a Matryoshka model; `None` otherwise.
    pub fn precision(&self) -> Option<&str> {
        match &self.engine {
            Engine::LateJoined(m) => Some(m.precision.as_str()),
            _ => self.matryoshka().ok().map(|m| m.precision.as_str()),
        }
    }

    /// The named profiles and the plans they resolve to (empty for single-graph models).
    pub fn profiles(&self) -> Vec<(String, Plan)> {
        if let Engine::LateJoined(m) = &self.engine {
            return m
                .profiles
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
        }
        self.matryoshka()
            .map(|m| {
                m.profiles
                    .iter()
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The calibration of the head at `layer`, `width` (Matryoshka models), if the manifest has
    /// one; scores of a head without one are `sigmoid(raw)`.
    pub fn head_calibration(&self, layer: u32, width: u32) -> Option<Calibration> {
        if let Engine::LateJoined(m) = &self.engine {
            return m.head_calibration(layer, width);
        }
        self.matryoshka()
            .ok()
            .and_then(|m| m.head_calibration(layer, width))
    }

    /// The concrete plan a budget runs (any budget but [`Budget::LatencyMs`], which depends on
    /// the documents). Errors ([`RerankError::Invalid`]) for unknown profiles, exits and widths
    /// name what is available; single-graph models have no plans.
    pub fn resolve_budget(&self, budget: &Budget) -> Result<Plan, RerankError> {
        if let Engine::LateJoined(m) = &self.engine {
            return m.resolve(budget);
        }
        self.matryoshka()?.resolve(budget)
    }

    /// The token lengths of each document's windows for `query` (documents in input order), as
    /// [`CostTable::predict_ms`] takes them.
    pub fn window_lengths(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
    ) -> Result<Vec<Vec<usize>>, RerankError> {
        let query_tokens = self.encoder.query_tokens(query)?;
        let encoded = self.encoder.encode_docs(&query_tokens, docs)?;
        Ok(matryoshka::window_lengths(&encoded))
    }

    /// The cost table latency budgets use: the one read from [`COST_FILE`] at load time or set
    /// with [`set_cost_table`](Self::set_cost_table). `Ok(None)` when there is none; an error
    /// when the file was there but unusable (or for single-graph models).
    pub fn cost_table(&self) -> Result<Option<CostTable>, RerankError> {
        let m = self.matryoshka()?;
        let guard = m
            .cost
            .read()
            .map_err(|_| run_err("cost table lock poisoned"))?;
        guard.clone().map_err(RerankError::Invalid)
    }

    /// Replaces the cost table latency budgets use (in memory; save it with
    /// [`CostTable::save`] to keep it). Refuses a table whose segments are not this model's.
    pub fn set_cost_table(&self, table: Option<CostTable>) -> Result<(), RerankError> {
        let m = self.matryoshka()?;
        if let Some(t) = &table {
            m.check_cost_table(t).map_err(RerankError::Invalid)?;
        }
        *m.cost
            .write()
            .map_err(|_| run_err("cost table lock poisoned"))? = Ok(table);
        Ok(())
    }

    /// Measures this model's [`CostTable`] on this machine with the configured threads, device,
    /// precision and batch budget: pairs are built from `query` and the sample `docs` (whose
    /// tokens are cycled to fill each length bucket), each bucket's full batch runs through every
    /// segment `options.warmup` times untimed and `options.repetitions` times timed, and the
    /// median time per pair is kept. The caller saves it ([`CostTable::save`] to
    /// `model_dir/`[`COST_FILE`]) and may install it with [`set_cost_table`](Self::set_cost_table).
    pub fn measure_costs(
        &self,
        query: &str,
        docs: &[RerankDoc<'_>],
        options: &CostOptions,
    ) -> Result<CostTable, RerankError> {
        let m = self.matryoshka()?;
        cost::measure(
            m,
            &self.encoder,
            &self.config,
            &self.device,
            query,
            docs,
            options,
        )
    }

    /// The sequences a document is scored through for `query`: one per window, exactly as they
    /// are fed to the model (without padding). For inspection (`--explain`) and tests.
    pub fn encode_windows(
        &self,
        query: &str,
        doc: RerankDoc<'_>,
    ) -> Result<Vec<EncodedWindow>, RerankError> {
        self.encoder.encode_windows(query, doc)
    }

    fn matryoshka(&self) -> Result<&Matryoshka, RerankError> {
        match &self.engine {
            Engine::Matryoshka(m) => Ok(m),
            Engine::Single { .. } => Err(self.needs_matryoshka("exits, profiles and cost tables")),
            Engine::LateJoined(_) => Err(RerankError::Invalid(format!(
                "cost tables and window lengths are for segmented Matryoshka models; {} is a \
                 late-joined model",
                self.model_path.display()
            ))),
        }
    }

    fn needs_matryoshka(&self, what: &str) -> RerankError {
        RerankError::Invalid(format!(
            "{what} need a Matryoshka model ({MANIFEST_FILE}); {} is a single-graph model with a \
             single exit",
            self.model_path.display()
        ))
    }
}

/// The model directory for `path` as given and the model file found from it.
fn model_directory(path: &Path, model_path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    let parent = model_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.join("tokenizer.json").is_file()
        && parent.file_name().is_some_and(|n| n == "onnx")
        && let Some(above) = parent.parent()
    {
        let above = if above.as_os_str().is_empty() {
            Path::new(".")
        } else {
            above
        };
        return above.to_path_buf();
    }
    parent.to_path_buf()
}
