//! The ONNX cross-encoder rerank backend of sieve.
//!
//! [`CrossEncoder`] drives any Hugging Face-layout cross-encoder export through ONNX Runtime and
//! implements [`sieve_core::Reranker`]:
//!
//! * **Model directory**: `model.onnx` or `onnx/model*.onnx` (or an `.onnx` file given directly),
//!   `tokenizer.json` beside it (or, for a file inside `onnx/`, in the folder above), optionally
//!   `config.json` (for `max_position_embeddings`) and [`CALIBRATION_FILE`]. The graph's inputs are
//!   discovered by name: `input_ids` and `attention_mask` (required) and `token_type_ids`
//!   (optional), int64 or int32; no other input is allowed. The output is `logits` (or the only
//!   output) of shape `[batch, 1]` (a relevance logit) or `[batch, 2]` (two classes, the second
//!   meaning relevant). Anything else is refused at [`CrossEncoder::open`] with a
//!   [`RerankError::Load`] naming the file and the problem.
//! * **Pairs** are encoded as the tokenizer's pair template gives them (`[CLS] query [SEP] doc
//!   [SEP]` with token types 0/1 for BERT), but truncation is done here, on token ids: the query is
//!   cut to [`CrossEncoderConfig::query_max_tokens`], the document gets the rest of `max_length`.
//! * **Long documents** are split into overlapping windows ([`plan_windows`]); the document's
//!   score is the best window's ([`WindowAggregation`]).
//! * **Throughput**: every (query, window) pair of a call is sorted by length and packed into
//!   batches by a token budget; the session is built once (graph optimisation level 3, one
//!   intra-op thread per core) and shared behind a mutex, since running it needs `&mut`.
//! * **Scores**: `raw` is the logit (for two classes, `logit[1] - logit[0]`, so that
//!   `sigmoid(raw)` is the softmax probability of the relevant class); `calibrated` is
//!   `sigmoid(raw)`, or `sigmoid(raw / T + b)` when the model directory has a calibration file.

mod windows;

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType};
use serde::{Deserialize, Serialize};
use sieve_core::{
    RerankDoc, RerankError, RerankOutput, RerankScore, RerankStats, Reranker, sigmoid,
};
pub use sieve_onnx::{Device, SessionOptions};
use tokenizers::{Encoding, PostProcessor, Token, Tokenizer};

pub use windows::{WindowAggregation, plan_windows};

/// The longest sequence used when the model does not say otherwise, and the cap on what
/// `config.json` may ask for (BERT-family position tables hold 512 positions).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// The optional calibration file of a model directory: `{"temperature": T, "bias": b}`.
pub const CALIBRATION_FILE: &str = "sieve_calibration.json";

/// How to load and run a [`CrossEncoder`].
#[derive(Debug, Clone)]
pub struct CrossEncoderConfig {
    /// Longest (query, window) sequence in tokens, special tokens included. `None` (default):
    /// the model directory's `config.json` `max_position_embeddings` (less the two positions
    /// RoBERTa-family models reserve), capped at [`DEFAULT_MAX_LENGTH`]; without a
    /// `config.json`, [`DEFAULT_MAX_LENGTH`].
    pub max_length: Option<usize>,
    /// The query is cut to this many tokens (special tokens not counted) before the document gets
    /// the rest of `max_length`. Default 64: queries are short, documents need the room.
    pub query_max_tokens: usize,
    /// Distance in tokens between the starts of consecutive windows of a long document. `None`
    /// (default): half the document budget, so windows overlap by half and any passage up to
    /// half a window long is seen whole by some window. Clamped to `1..=budget`.
    pub window_stride: Option<usize>,
    /// The most windows scored per document (default 8); see [`plan_windows`] for which windows
    /// are chosen when a document needs more. 1 means plain truncation.
    pub max_windows: usize,
    /// How window scores are combined (default: the best window).
    pub aggregation: WindowAggregation,
    /// Upper bound on `rows × padded length` per model call (default 8192 tokens).
    pub batch_tokens: usize,
    /// Upper bound on rows per model call (default 64).
    pub max_batch: usize,
    /// Session settings: threads (default: every core) and device (default: CPU).
    pub session: SessionOptions,
}

impl Default for CrossEncoderConfig {
    fn default() -> Self {
        Self {
            max_length: None,
            query_max_tokens: 64,
            window_stride: None,
            max_windows: 8,
            aggregation: WindowAggregation::Max,
            batch_tokens: 8192,
            max_batch: 64,
            session: SessionOptions::default(),
        }
    }
}

/// A score calibration fitted for a model, read from [`CALIBRATION_FILE`] in its directory:
/// `calibrated = sigmoid(raw / temperature + bias)` (temperature scaling plus a shift, the
/// Platt-style correction that makes `calibrated` track the probability of relevance, so that
/// thresholds such as `--min-score` mean the same thing across models).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Divides the raw logit; must be finite and positive. Default 1.
    #[serde(default = "one")]
    pub temperature: f32,
    /// Added after the division; must be finite. Default 0.
    #[serde(default)]
    pub bias: f32,
}

fn one() -> f32 {
    1.0
}

impl Calibration {
    /// The calibrated score of a raw logit.
    pub fn apply(&self, raw: f32) -> f32 {
        sigmoid(raw / self.temperature + self.bias)
    }

    /// Reads `dir/sieve_calibration.json` if it exists. A file that exists but is not a valid
    /// calibration is an error rather than silently ignored (scores would change meaning).
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, RerankError> {
        let path = dir.join(CALIBRATION_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let err = |message: String| load_err(format!("calibration {}: {message}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let calibration: Self = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if !(calibration.temperature.is_finite() && calibration.temperature > 0.0) {
            return Err(err(format!(
                "temperature must be finite and positive, got {}",
                calibration.temperature
            )));
        }
        if !calibration.bias.is_finite() {
            return Err(err(format!(
                "bias must be finite, got {}",
                calibration.bias
            )));
        }
        Ok(Some(calibration))
    }
}

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

/// Integer element type of an id input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    I64,
    I32,
}

#[derive(Debug, Clone)]
struct IdInput {
    name: String,
    ty: IdType,
}

/// What the graph takes and gives, discovered from the session.
#[derive(Debug, Clone)]
struct GraphIo {
    input_ids: IdInput,
    attention_mask: IdInput,
    token_type_ids: Option<IdInput>,
    output: String,
    /// 1 or 2 once known; `None` while the graph leaves the class dimension symbolic.
    classes: Option<usize>,
}

/// A (query, window) pair waiting for the model.
struct Pair {
    doc: usize,
    ids: Vec<u32>,
    type_ids: Vec<u32>,
}

/// A loaded cross-encoder; `Send + Sync`, so one instance can serve many threads (model calls
/// are serialised on the session, tokenization is not).
pub struct CrossEncoder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    io: GraphIo,
    classes: usize,
    pad_id: u32,
    pair_special_tokens: usize,
    max_length: usize,
    calibration: Option<Calibration>,
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
            .field("classes", &self.classes)
            .field("max_length", &self.max_length)
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

/// `cpu` or `cuda:N`, as shown in stats and descriptions.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
    }
}

impl CrossEncoder {
    /// Loads a cross-encoder from a model directory (or an `.onnx` file with its tokenizer beside
    /// it, or in the folder above `onnx/`), checks that its graph can be driven, and runs it once
    /// on a probe pair so that a model that loads but cannot run fails here, not mid-search.
    pub fn open(path: &Path, config: CrossEncoderConfig) -> Result<Self, RerankError> {
        validate_config(&config)?;
        if !path.exists() {
            return Err(load_err(format!(
                "model path {} does not exist",
                path.display()
            )));
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
        // load_tokenizer switches padding off; truncation is done here on token ids, so it is
        // switched off too.
        let mut tokenizer = sieve_embed::load_tokenizer(&tokenizer_path, DEFAULT_MAX_LENGTH)
            .map_err(|e| load_err(e.to_string()))?;
        tokenizer.with_truncation(None).map_err(|e| {
            load_err(format!(
                "tokenizer {}: cannot disable truncation: {e}",
                tokenizer_path.display()
            ))
        })?;
        let pair_special_tokens = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        // Padding is masked out by attention_mask; the pad id only matters to graphs that look
        // at ids without the mask, so use the tokenizer's own pad token where it has one.
        let pad_id = ["[PAD]", "<pad>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .unwrap_or(0);

        let max_length = resolve_max_length(config.max_length, &model_dir)?;
        if max_length <= pair_special_tokens + config.query_max_tokens {
            return Err(load_err(format!(
                "max_length {max_length} leaves no room for the document ({pair_special_tokens} \
                 special tokens + up to {} query tokens)",
                config.query_max_tokens
            )));
        }
        let calibration = Calibration::from_dir(&model_dir)?;

        let mut session = sieve_onnx::load_session(&model_path, &config.session)
            .map_err(|e| load_err(e.to_string()))?;
        let mut io = inspect_graph(&session, &model_path)?;
        let classes = probe(&mut session, &io, &tokenizer, pad_id, &model_path)?;
        io.classes = Some(classes);

        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
            io,
            classes,
            pad_id,
            pair_special_tokens,
            max_length,
            calibration,
            device: device_name(config.session.device),
            config,
            model_dir,
            model_path,
            tokenizer_path,
        })
    }

    /// The ONNX file that was loaded.
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
        self.max_length
    }

    /// Special tokens the pair template adds (3 for BERT's `[CLS] a [SEP] b [SEP]`).
    pub fn pair_special_tokens(&self) -> usize {
        self.pair_special_tokens
    }

    /// 1 for a `[batch, 1]` logit output, 2 for `[batch, 2]` class logits.
    pub fn logit_classes(&self) -> usize {
        self.classes
    }

    /// Whether the graph takes `token_type_ids`.
    pub fn uses_token_type_ids(&self) -> bool {
        self.io.token_type_ids.is_some()
    }

    /// The calibration read from the model directory, if any.
    pub fn calibration(&self) -> Option<Calibration> {
        self.calibration
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

    /// The sequences a document is scored through for `query`: one per window, exactly as they
    /// are fed to the model (without padding). For inspection (`--explain`) and tests.
    pub fn encode_windows(
        &self,
        query: &str,
        doc: RerankDoc<'_>,
    ) -> Result<Vec<EncodedWindow>, RerankError> {
        let query_tokens = self.query_tokens(query)?;
        let encoding = self
            .tokenizer
            .encode(doc_text(&doc).as_ref(), false)
            .map_err(|e| run_err(format!("tokenizing the document failed: {e}")))?;
        self.window_ranges(encoding.len(), query_tokens.len())
            .into_iter()
            .map(|range| {
                let (ids, type_ids) =
                    encode_pair(&self.tokenizer, &query_tokens, &encoding, range.clone())?;
                Ok(EncodedWindow {
                    ids,
                    type_ids,
                    doc_tokens: range,
                })
            })
            .collect()
    }

    /// The query's tokens (no special tokens), cut to `query_max_tokens`.
    fn query_tokens(&self, query: &str) -> Result<Vec<Token>, RerankError> {
        if query.trim().is_empty() {
            return Err(RerankError::Invalid("the query is empty".into()));
        }
        let encoding = self
            .tokenizer
            .encode(query, false)
            .map_err(|e| run_err(format!("tokenizing the query failed: {e}")))?;
        let n = encoding.len().min(self.config.query_max_tokens);
        if n == 0 {
            return Err(RerankError::Invalid(format!(
                "the query {query:?} has no tokens for this model"
            )));
        }
        Ok(tokens_of(&encoding, 0..n))
    }

    /// Window ranges over a document of `doc_len` tokens, given the query's length.
    fn window_ranges(&self, doc_len: usize, query_len: usize) -> Vec<Range<usize>> {
        // open() checked max_length > specials + query_max_tokens >= specials + query_len.
        let budget = self
            .max_length
            .saturating_sub(self.pair_special_tokens + query_len)
            .max(1);
        let stride = self.config.window_stride.unwrap_or(budget / 2);
        plan_windows(doc_len, budget, stride, self.config.max_windows)
    }

    /// Runs `pairs` through the model in length-sorted, token-budgeted batches; returns one raw
    /// score per pair (input order) and fills the batch counters of `stats`.
    fn score_pairs(
        &self,
        pairs: &[Pair],
        stats: &mut RerankStats,
    ) -> Result<Vec<f32>, RerankError> {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        // Longest first (stable, so ties keep input order): a batch's first pair sets its padded
        // length, and similar lengths share batches, which keeps padding small.
        order.sort_by_key(|&i| std::cmp::Reverse(pairs[i].ids.len()));
        let mut raw = vec![0f32; pairs.len()];
        let mut start = 0;
        while start < order.len() {
            let seq_len = pairs[order[start]].ids.len().max(1);
            let fit = (self.config.batch_tokens / seq_len).clamp(1, self.config.max_batch.max(1));
            let end = (start + fit).min(order.len());
            let batch: Vec<&Pair> = order[start..end].iter().map(|&i| &pairs[i]).collect();
            let mut session = self
                .session
                .lock()
                .map_err(|_| run_err("the rerank session was poisoned by an earlier panic"))?;
            let began = Instant::now();
            let (shape, data) =
                run_batch(&mut session, &self.io, self.pad_id, &batch, seq_len).map_err(run_err)?;
            drop(session);
            stats.model_ms += began.elapsed().as_secs_f64() * 1e3;
            let scores = raw_scores(&shape, &data, batch.len(), self.classes)
                .map_err(|e| run_err(format!("model {}: {e}", self.model_path.display())))?;
            for (&slot, score) in order[start..end].iter().zip(scores) {
                if !score.is_finite() {
                    return Err(run_err(format!(
                        "model {} gave a non-finite score ({score}) for document {}",
                        self.model_path.display(),
                        pairs[slot].doc
                    )));
                }
                raw[slot] = score;
            }
            stats.batches += 1;
            stats.padded_tokens += batch.len() * seq_len;
            start = end;
        }
        stats.pairs += pairs.len();
        Ok(raw)
    }

    fn calibrate(&self, raw: f32) -> f32 {
        match &self.calibration {
            Some(c) => c.apply(raw),
            None => sigmoid(raw),
        }
    }
}

impl Reranker for CrossEncoder {
    fn describe(&self) -> String {
        format!("onnx:{} ({})", self.model_dir.display(), self.device)
    }

    fn rerank(&self, query: &str, docs: &[RerankDoc<'_>]) -> Result<RerankOutput, RerankError> {
        let mut stats = RerankStats {
            device: self.device.clone(),
            ..RerankStats::default()
        };
        let began = Instant::now();
        let query_tokens = self.query_tokens(query)?;
        if docs.is_empty() {
            stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;
            return Ok(RerankOutput {
                scores: Vec::new(),
                stats,
            });
        }
        let texts: Vec<String> = docs.iter().map(|d| doc_text(d).into_owned()).collect();
        let encodings = self
            .tokenizer
            .encode_batch(texts, false)
            .map_err(|e| run_err(format!("tokenizing the documents failed: {e}")))?;
        let mut pairs = Vec::new();
        let mut windows = Vec::with_capacity(docs.len());
        for (doc, encoding) in encodings.iter().enumerate() {
            let ranges = self.window_ranges(encoding.len(), query_tokens.len());
            windows.push(ranges.len());
            for range in ranges {
                let (ids, type_ids) = encode_pair(&self.tokenizer, &query_tokens, encoding, range)?;
                pairs.push(Pair { doc, ids, type_ids });
            }
        }
        stats.tokenize_ms = began.elapsed().as_secs_f64() * 1e3;

        let raw = self.score_pairs(&pairs, &mut stats)?;

        // Pairs are grouped by document, windows in order.
        let mut scores = Vec::with_capacity(docs.len());
        let mut next = 0;
        for &n in &windows {
            let (score, best_window) = self.config.aggregation.combine(&raw[next..next + n]);
            next += n;
            scores.push(RerankScore {
                raw: score,
                calibrated: self.calibrate(score),
                windows: n,
                best_window,
            });
        }
        Ok(RerankOutput { scores, stats })
    }
}

/// The text a document is scored by: `title + " " + text` (either alone when the other is empty),
/// the usual way cross-encoders were trained on titled passages.
fn doc_text<'a>(doc: &RerankDoc<'a>) -> Cow<'a, str> {
    let title = doc.title.trim();
    if title.is_empty() {
        Cow::Borrowed(doc.text)
    } else if doc.text.trim().is_empty() {
        Cow::Borrowed(doc.title)
    } else {
        Cow::Owned(format!("{title} {}", doc.text))
    }
}

fn tokens_of(encoding: &Encoding, range: Range<usize>) -> Vec<Token> {
    let ids = encoding.get_ids();
    let values = encoding.get_tokens();
    let offsets = encoding.get_offsets();
    range
        .map(|i| Token::new(ids[i], values[i].clone(), offsets[i]))
        .collect()
}

/// Assembles `query + doc[range]` with the tokenizer's pair post-processor (its special tokens
/// and token types), returning `(ids, type_ids)`.
fn encode_pair(
    tokenizer: &Tokenizer,
    query: &[Token],
    doc: &Encoding,
    range: Range<usize>,
) -> Result<(Vec<u32>, Vec<u32>), RerankError> {
    let first = Encoding::from_tokens(query.to_vec(), 0);
    let second = Encoding::from_tokens(tokens_of(doc, range), 1);
    let pair = tokenizer
        .post_process(first, Some(second), true)
        .map_err(|e| run_err(format!("assembling a (query, document) pair failed: {e}")))?;
    Ok((pair.get_ids().to_vec(), pair.get_type_ids().to_vec()))
}

fn validate_config(config: &CrossEncoderConfig) -> Result<(), RerankError> {
    let bad = |what: &str| {
        Err(load_err(format!(
            "invalid cross-encoder configuration: {what}"
        )))
    };
    if config.query_max_tokens == 0 {
        return bad("query_max_tokens must be at least 1");
    }
    if config.max_windows == 0 {
        return bad("max_windows must be at least 1");
    }
    if config.window_stride == Some(0) {
        return bad("window_stride must be at least 1");
    }
    if config.batch_tokens == 0 || config.max_batch == 0 {
        return bad("batch_tokens and max_batch must be at least 1");
    }
    if config.max_length == Some(0) {
        return bad("max_length must be at least 1");
    }
    Ok(())
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

/// `max_length` from the configuration, else from the model directory's `config.json`.
fn resolve_max_length(configured: Option<usize>, model_dir: &Path) -> Result<usize, RerankError> {
    if let Some(n) = configured {
        return Ok(n);
    }
    let path = model_dir.join("config.json");
    if !path.is_file() {
        return Ok(DEFAULT_MAX_LENGTH);
    }
    let err = |message: String| {
        load_err(format!(
            "{}: {message} (set max_length explicitly to skip it)",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let Some(positions) = json.get("max_position_embeddings") else {
        return Ok(DEFAULT_MAX_LENGTH);
    };
    let positions = positions.as_u64().ok_or_else(|| {
        err(format!(
            "max_position_embeddings is not a count: {positions}"
        ))
    })?;
    // RoBERTa-family models number positions from padding_idx + 1 = 2: two slots are not usable.
    let model_type = json
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let reserved = if model_type.contains("roberta") || model_type == "camembert" {
        2
    } else {
        0
    };
    let usable = usize::try_from(positions)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserved);
    if usable == 0 {
        return Err(err(format!(
            "max_position_embeddings {positions} leaves no usable positions"
        )));
    }
    Ok(usable.min(DEFAULT_MAX_LENGTH))
}

/// Checks the graph's inputs and output against what a cross-encoder must have.
fn inspect_graph(session: &Session, model_path: &Path) -> Result<GraphIo, RerankError> {
    let unsupported = |message: String| {
        load_err(format!(
            "model {} cannot be used as a cross-encoder: {message}",
            model_path.display()
        ))
    };
    let inputs = session.inputs();
    let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
    let id_input = |name: &str| -> Result<Option<IdInput>, RerankError> {
        let Some(input) = inputs.iter().find(|i| i.name() == name) else {
            return Ok(None);
        };
        let ty = match input.dtype().tensor_type() {
            Some(TensorElementType::Int64) => IdType::I64,
            Some(TensorElementType::Int32) => IdType::I32,
            other => {
                return Err(unsupported(format!(
                    "input `{name}` has element type {other:?}; expected int64 or int32"
                )));
            }
        };
        if let Some(shape) = input.dtype().tensor_shape()
            && shape.len() != 2
        {
            return Err(unsupported(format!(
                "input `{name}` has shape {shape}; expected [batch, sequence]"
            )));
        }
        Ok(Some(IdInput {
            name: name.to_string(),
            ty,
        }))
    };
    let input_ids = id_input("input_ids")?
        .ok_or_else(|| unsupported(format!("no `input_ids` input (inputs: {names:?})")))?;
    let attention_mask = id_input("attention_mask")?
        .ok_or_else(|| unsupported(format!("no `attention_mask` input (inputs: {names:?})")))?;
    let token_type_ids = id_input("token_type_ids")?;
    if let Some(extra) = names
        .iter()
        .find(|n| !["input_ids", "attention_mask", "token_type_ids"].contains(n))
    {
        return Err(unsupported(format!(
            "unexpected input `{extra}` (inputs: {names:?}; only input_ids, attention_mask and \
             token_type_ids can be fed)"
        )));
    }

    let outputs = session.outputs();
    let output = outputs
        .iter()
        .find(|o| o.name() == "logits")
        .or_else(|| outputs.first())
        .ok_or_else(|| unsupported("the graph has no outputs".into()))?;
    let name = output.name().to_string();
    if output.dtype().tensor_type() != Some(TensorElementType::Float32) {
        return Err(unsupported(format!(
            "output `{name}` has element type {:?}; expected float32",
            output.dtype().tensor_type()
        )));
    }
    let classes = match output.dtype().tensor_shape().map(|s| s.to_vec()) {
        Some(shape) if shape.len() == 2 => match shape[1] {
            1 | 2 => Some(shape[1] as usize),
            d if d < 0 => None,
            _ => {
                return Err(unsupported(format!(
                    "output `{name}` has shape {shape:?}; expected [batch, 1] or [batch, 2]"
                )));
            }
        },
        shape => {
            return Err(unsupported(format!(
                "output `{name}` has shape {:?}; expected [batch, 1] or [batch, 2]",
                shape.unwrap_or_default()
            )));
        }
    };
    Ok(GraphIo {
        input_ids,
        attention_mask,
        token_type_ids,
        output: name,
        classes,
    })
}

/// Runs one probe pair and returns the number of logit classes the model really outputs.
fn probe(
    session: &mut Session,
    io: &GraphIo,
    tokenizer: &Tokenizer,
    pad_id: u32,
    model_path: &Path,
) -> Result<usize, RerankError> {
    let failed = |message: String| {
        load_err(format!(
            "model {} failed a test run: {message}",
            model_path.display()
        ))
    };
    let encode = |text: &str| {
        tokenizer
            .encode(text, false)
            .map_err(|e| failed(format!("tokenizer error: {e}")))
    };
    let query = encode("probe query")?;
    let doc = encode("probe document")?;
    let (ids, type_ids) = encode_pair(
        tokenizer,
        &tokens_of(&query, 0..query.len()),
        &doc,
        0..doc.len(),
    )?;
    let pair = Pair {
        doc: 0,
        ids,
        type_ids,
    };
    let seq_len = pair.ids.len().max(1);
    let (shape, _) = run_batch(session, io, pad_id, &[&pair], seq_len).map_err(failed)?;
    let classes = match shape.as_slice() {
        [1, c @ (1 | 2)] => *c,
        _ => {
            return Err(load_err(format!(
                "model {} cannot be used as a cross-encoder: output `{}` has shape {shape:?} for \
                 one pair; expected [1, 1] or [1, 2]",
                model_path.display(),
                io.output
            )));
        }
    };
    if io.classes.is_some_and(|c| c != classes) {
        return Err(failed(format!(
            "output `{}` declares {:?} classes but produced {classes}",
            io.output, io.classes
        )));
    }
    Ok(classes)
}

/// Pads `batch` to `seq_len`, runs the model, and returns the output's shape and values.
fn run_batch(
    session: &mut Session,
    io: &GraphIo,
    pad_id: u32,
    batch: &[&Pair],
    seq_len: usize,
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let rows = batch.len();
    let mut ids = vec![i64::from(pad_id); rows * seq_len];
    let mut mask = vec![0i64; rows * seq_len];
    let mut types = vec![0i64; rows * seq_len];
    for (r, pair) in batch.iter().enumerate() {
        let row = r * seq_len;
        for (c, (&id, &ty)) in pair.ids.iter().zip(&pair.type_ids).enumerate() {
            ids[row + c] = i64::from(id);
            mask[row + c] = 1;
            types[row + c] = i64::from(ty);
        }
    }
    let shape = [rows, seq_len];
    let tensor = |input: &IdInput, data: Vec<i64>| -> Result<SessionInputValue<'static>, String> {
        let value: SessionInputValue<'static> = match input.ty {
            IdType::I64 => Tensor::from_array((shape, data))
                .map_err(|e| e.to_string())?
                .into(),
            IdType::I32 => {
                let data: Vec<i32> = data
                    .into_iter()
                    .map(|v| i32::try_from(v).unwrap_or(i32::MAX))
                    .collect();
                Tensor::from_array((shape, data))
                    .map_err(|e| e.to_string())?
                    .into()
            }
        };
        Ok(value)
    };
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
        (
            Cow::from(io.input_ids.name.as_str()),
            tensor(&io.input_ids, ids)?,
        ),
        (
            Cow::from(io.attention_mask.name.as_str()),
            tensor(&io.attention_mask, mask)?,
        ),
    ];
    if let Some(input) = &io.token_type_ids {
        inputs.push((Cow::from(input.name.as_str()), tensor(input, types)?));
    }
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    let value = outputs
        .get(&io.output)
        .ok_or_else(|| format!("output `{}` missing", io.output))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
    Ok((shape, data.to_vec()))
}

/// One raw score per row from a `[rows, classes]` output: the logit, or for two classes
/// `logit[1] - logit[0]` (whose sigmoid is the softmax probability of class 1).
fn raw_scores(
    shape: &[usize],
    data: &[f32],
    rows: usize,
    classes: usize,
) -> Result<Vec<f32>, String> {
    if shape != [rows, classes] || data.len() != rows * classes {
        return Err(format!(
            "output has shape {shape:?}; expected [{rows}, {classes}]"
        ));
    }
    Ok(match classes {
        1 => data.to_vec(),
        _ => data.chunks_exact(2).map(|c| c[1] - c[0]).collect(),
    })
}
