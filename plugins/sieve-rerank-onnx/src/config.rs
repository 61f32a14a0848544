//! How a [`crate::CrossEncoder`] is loaded and run: sequence length, windows, batching, session,
//! precision and budget profiles, with the checks applied at load time.

use std::collections::BTreeMap;
use std::path::Path;

use sieve_core::RerankError;
use sieve_onnx::SessionOptions;

use crate::load_err;
use crate::windows::WindowAggregation;

/// The longest sequence used when the model does not say otherwise, and the cap on what
/// `config.json` may ask for (BERT-family position tables hold 512 positions).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// Windows per long document when neither the caller nor the model's manifest says otherwise.
pub const DEFAULT_MAX_WINDOWS: usize = 8;

/// Which graphs of a segmented (Matryoshka) model to load; single-graph models load the file they
/// are given. When the preferred file of a segment is missing, the other precision's is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Int8 graphs on the CPU (faster there), fp32 graphs on CUDA (default).
    #[default]
    Auto,
    /// The int8 graphs (`file_int8` in the manifest).
    Int8,
    /// The fp32 graphs (`file` in the manifest).
    Fp32,
}

/// How to load and run a [`CrossEncoder`](crate::CrossEncoder).
#[derive(Debug, Clone)]
pub struct CrossEncoderConfig {
    /// Longest (query, window) sequence in tokens, special tokens included. `None` (default):
    /// the model directory's `config.json` `max_position_embeddings` (less the two positions
    /// RoBERTa-family models reserve), capped at [`DEFAULT_MAX_LENGTH`]; without a
    /// `config.json`, [`DEFAULT_MAX_LENGTH`]. For a Matryoshka model, the manifest's
    /// `max_length`, which a value given here can only lower.
    pub max_length: Option<usize>,
    /// The query is cut to this many tokens (special tokens not counted) before the document gets
    /// the rest of `max_length`. Default 64: queries are short, documents need the room. Not used
    /// by Matryoshka models, whose manifest's `query_cap` is what they were trained with.
    pub query_max_tokens: usize,
    /// Distance in tokens between the starts of consecutive windows of a long document. `None`
    /// (default): half the document budget, so windows overlap by half and any passage up to
    /// half a window long is seen whole by some window. Clamped to `1..=budget`.
    pub window_stride: Option<usize>,
    /// The most windows scored per document; see [`plan_windows`](crate::plan_windows) for which windows are chosen
    /// when a document needs more. 1 means plain truncation. `None` (default): the Matryoshka
    /// manifest's `max_windows` (what the model was trained with), else
    /// [`DEFAULT_MAX_WINDOWS`].
    pub max_windows: Option<usize>,
    /// How window scores are combined (default: the best window).
    pub aggregation: WindowAggregation,
    /// Upper bound on `rows × padded length` per model call. Default 512 tokens, tuned on a 2-core
    /// CPU, where small calls stay in cache (a 100-pair DL19 window scores 1.66× faster than in
    /// calls of 8,192 tokens; docs/bench); a GPU wants far larger calls (`--batch-tokens`).
    pub batch_tokens: usize,
    /// Upper bound on rows per model call (default 64).
    pub max_batch: usize,
    /// Upper bound on `rows × padded document length` per call of a late-joined model's joint
    /// blocks (its towers use `batch_tokens`). Default 4,096: a block row runs only the query's
    /// tokens through the layer (the document enters as its stored codes), so a call needs many
    /// more rows than a full pair's graph to fill the cores. Measured on 2 cores (100 SciFact
    /// test queries, window 100, int8): full-depth rerank 101 ms at 4,096 against 135 ms at 512.
    pub block_batch_tokens: usize,
    /// Session settings: threads (default: every core), device (default: CPU) and spinning
    /// (default: off, unlike [`SessionOptions::default`]: a reranker alternates between its
    /// sessions, see [`SessionOptions::spinning`]).
    pub session: SessionOptions,
    /// Int8 or fp32 graphs for Matryoshka models (default: int8 on CPU, fp32 on CUDA).
    pub precision: Precision,
    /// Named budget profiles that replace or add to a Matryoshka manifest's (name → an exit
    /// `L:W` or a cascade `K@L[:W],...`), so a deployment can tune its plans without editing the
    /// model directory. Empty by default; not used by single-graph models.
    pub profiles: BTreeMap<String, String>,
    /// The profile [`Budget::Default`](sieve_core::Budget::Default) runs, replacing the manifest's `default_profile`.
    pub default_profile: Option<String>,
}

impl Default for CrossEncoderConfig {
    fn default() -> Self {
        Self {
            max_length: None,
            query_max_tokens: 64,
            window_stride: None,
            max_windows: None,
            aggregation: WindowAggregation::Max,
            batch_tokens: 512,
            max_batch: 64,
            block_batch_tokens: 4096,
            session: SessionOptions {
                spinning: false,
                ..SessionOptions::default()
            },
            precision: Precision::Auto,
            profiles: BTreeMap::new(),
            default_profile: None,
        }
    }
}

/// Refuses settings that cannot run (zero lengths, windows, batches).
pub(crate) fn validate_config(config: &CrossEncoderConfig) -> Result<(), RerankError> {
    let bad = |what: &str| {
        Err(load_err(format!(
            "invalid cross-encoder configuration: {what}"
        )))
    };
    if config.query_max_tokens == 0 {
        return bad("query_max_tokens must be at least 1");
    }
    if config.max_windows == Some(0) {
        return bad("max_windows must be at least 1");
    }
    if config.window_stride == Some(0) {
        return bad("window_stride must be at least 1");
    }
    if config.batch_tokens == 0 || config.max_batch == 0 || config.block_batch_tokens == 0 {
        return bad("batch_tokens, block_batch_tokens and max_batch must be at least 1");
    }
    if config.max_length == Some(0) {
        return bad("max_length must be at least 1");
    }
    Ok(())
}

/// `max_length` from the configuration, else from the model directory's `config.json`.
pub(crate) fn resolve_max_length(
    configured: Option<usize>,
    model_dir: &Path,
) -> Result<usize, RerankError> {
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
