//! Bi-encoder text embeddings through ONNX Runtime.
//!
//! [`BiEncoder`] drives a sentence-transformers style ONNX export (e.g. all-MiniLM-L6-v2): it
//! tokenizes with the model's `tokenizer.json`, runs the graph, mean-pools the last hidden state
//! over the attention mask and L2-normalises, so that a dot product between two embeddings is
//! their cosine similarity. Graphs that already output a pooled `[batch, dim]` embedding are used
//! as they are (then only normalised).
//!
//! For throughput, texts are sorted by token length and packed into batches by a token budget
//! (not a fixed count), which keeps padding small; the session is created once and uses every
//! core for its operators.

mod codec;

pub use codec::{StateCodec, sha256_file};

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::Array2;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use sieve_onnx::{OnnxError, SessionOptions};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Errors from loading or running an embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// ONNX Runtime could not be loaded or refused the model.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// No ONNX graph was found in the model directory.
    #[error(
        "no ONNX model in {0} (looked for model.onnx, onnx/model.onnx, onnx/model_int8.onnx, onnx/*.onnx)"
    )]
    NoModel(PathBuf),
    /// The tokenizer file is missing or invalid.
    #[error("could not load tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The graph's inputs or outputs are not those of a text encoder.
    #[error("model {path} cannot be used as a text encoder: {message}")]
    UnsupportedModel {
        /// The model file.
        path: PathBuf,
        /// Why not.
        message: String,
    },
    /// Running the model failed.
    #[error("embedding failed: {0}")]
    Run(String),
}

/// How to load and run a [`BiEncoder`].
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Longest input in tokens (texts are truncated to it). all-MiniLM-L6-v2 was trained with 256.
    pub max_length: usize,
    /// Upper bound on `batch_size × padded_length` per model call. Default 512, tuned on a 2-core
    /// CPU: small calls keep each layer's activations and attention scores in cache (a 256-token
    /// SciFact document embeds 1.4× faster in calls of 512 tokens than of 16,384; docs/bench).
    /// A GPU wants far larger calls.
    pub batch_tokens: usize,
    /// Upper bound on texts per model call.
    pub max_batch: usize,
    /// Session settings (threads, device).
    pub session: SessionOptions,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            max_length: 256,
            batch_tokens: 512,
            max_batch: 128,
            session: SessionOptions::default(),
        }
    }
}

/// A loaded bi-encoder; `Send + Sync`, so one instance can serve many threads.
pub struct BiEncoder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    input_ids: String,
    attention_mask: String,
    token_type_ids: Option<String>,
    output: String,
    pooled_output: bool,
    dim: usize,
    config: EmbedderConfig,
    model_path: PathBuf,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for BiEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiEncoder")
            .field("model", &self.model_path)
            .field("dim", &self.dim)
            .finish()
    }
}

/// Finds the ONNX graph inside a Hugging Face style model directory (or accepts a file).
pub fn find_onnx_model(path: &Path) -> Result<PathBuf, EmbedError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for candidate in [
        "model.onnx",
        "onnx/model.onnx",
        "onnx/model_int8.onnx",
        "onnx/model_quantized.onnx",
    ] {
        let p = path.join(candidate);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut any: Vec<PathBuf> = std::fs::read_dir(path.join("onnx"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    any.sort();
    any.into_iter()
        .next()
        .ok_or_else(|| EmbedError::NoModel(path.to_path_buf()))
}

/// Finds `tokenizer.json` beside a model file or in a model directory (or its parent).
fn find_tokenizer(model_dir: &Path, model_file: &Path) -> PathBuf {
    let mut candidates = vec![model_dir.join("tokenizer.json")];
    if let Some(parent) = model_file.parent() {
        candidates.push(parent.join("tokenizer.json"));
        if let Some(grand) = parent.parent() {
            candidates.push(grand.join("tokenizer.json"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

impl BiEncoder {
    /// Loads a model from a directory (HF layout: `tokenizer.json` + `model.onnx` or `onnx/*.onnx`)
    /// or from an `.onnx` file with `tokenizer.json` beside it.
    pub fn open(path: &Path, config: EmbedderConfig) -> Result<Self, EmbedError> {
        let model_path = find_onnx_model(path)?;
        let tokenizer_path = find_tokenizer(path, &model_path);
        Self::open_files(&model_path, &tokenizer_path, config)
    }

    /// Loads an ONNX file with a tokenizer from elsewhere: a graph that shares another model's
    /// tokenizer (a late-joined reranker's query graph shares the bi-encoder's).
    pub fn open_files(
        model_path: &Path,
        tokenizer_path: &Path,
        config: EmbedderConfig,
    ) -> Result<Self, EmbedError> {
        let (model_path, tokenizer_path) = (model_path.to_path_buf(), tokenizer_path.to_path_buf());
        let tokenizer = load_tokenizer(&tokenizer_path, config.max_length)?;
        let session = sieve_onnx::load_session(&model_path, &config.session)?;
        let unsupported = |message: String| EmbedError::UnsupportedModel {
            path: model_path.clone(),
            message,
        };

        let input_names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let find_input = |name: &str| input_names.iter().find(|n| n.as_str() == name).cloned();
        let input_ids = find_input("input_ids").ok_or_else(|| {
            unsupported(format!("no `input_ids` input (inputs: {input_names:?})"))
        })?;
        let attention_mask = find_input("attention_mask").ok_or_else(|| {
            unsupported(format!(
                "no `attention_mask` input (inputs: {input_names:?})"
            ))
        })?;
        let token_type_ids = find_input("token_type_ids");
        if let Some(extra) = input_names.iter().find(|n| {
            ![&input_ids, &attention_mask].contains(n) && Some(*n) != token_type_ids.as_ref()
        }) {
            return Err(unsupported(format!("unexpected input `{extra}`")));
        }

        // Prefer an explicitly pooled output, then the last hidden state, then the first output.
        let outputs: Vec<(String, usize)> = session
            .outputs()
            .iter()
            .map(|o| {
                let rank = o.dtype().tensor_shape().map(|s| s.len()).unwrap_or(0);
                (o.name().to_string(), rank)
            })
            .collect();
        let (output, rank) = ["sentence_embedding", "last_hidden_state"]
            .iter()
            .find_map(|want| outputs.iter().find(|(n, _)| n == want))
            .or_else(|| outputs.first())
            .cloned()
            .ok_or_else(|| unsupported("the graph has no outputs".into()))?;
        let pooled_output = match rank {
            2 => true,
            3 => false,
            other => {
                return Err(unsupported(format!(
                    "output `{output}` has rank {other}; expected [batch, dim] or [batch, seq, dim]"
                )));
            }
        };

        let mut encoder = Self {
            session: Mutex::new(session),
            tokenizer,
            input_ids,
            attention_mask,
            token_type_ids,
            output,
            pooled_output,
            dim: 0,
            config,
            model_path: model_path.clone(),
            tokenizer_path,
        };
        // The output dimension is often symbolic in the graph: measure it once.
        let probe = encoder.embed(&["dimension probe"])?;
        encoder.dim = probe.first().map(Vec::len).unwrap_or(0);
        if encoder.dim == 0 {
            return Err(unsupported("the model produced an empty embedding".into()));
        }
        Ok(encoder)
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The ONNX file that was loaded.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The tokenizer file that was loaded.
    pub fn tokenizer_path(&self) -> &Path {
        &self.tokenizer_path
    }

    /// The configuration the encoder runs with.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Run("no embedding returned".into()))
    }

    /// Embeds texts; the result is in input order, each vector L2-normalised.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with_progress(texts, &mut |_| {})
    }

    /// Like [`embed`](Self::embed), calling `progress(n)` after each batch with the number of texts
    /// just embedded.
    pub fn embed_with_progress(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encoded = self.tokenize(texts, None)?;
        Ok(self
            .run_sorted(&encoded, false, progress)?
            .into_iter()
            .map(|t| t.vector)
            .collect())
    }

    /// Embeds texts and keeps every token's last hidden state as well (what a late-joined
    /// reranker reads: see `sieve-rerank-onnx`). `max_tokens` cuts each input to that many tokens
    /// (special tokens included, the closing `[SEP]` kept) below the configured `max_length`. Needs
    /// a graph that outputs per-token states (`last_hidden_state`), not a pooled one.
    pub fn embed_token_states(
        &self,
        texts: &[&str],
        max_tokens: Option<usize>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<TokenStates>, EmbedError> {
        if self.pooled_output {
            return Err(EmbedError::UnsupportedModel {
                path: self.model_path.clone(),
                message: format!(
                    "output `{}` is already pooled; token states need a [batch, seq, dim] output",
                    self.output
                ),
            });
        }
        let encoded = self.tokenize(texts, max_tokens)?;
        self.run_sorted(&encoded, true, progress)
    }

    /// Token ids and attention masks of `texts`, cut to `max_tokens` when given.
    fn tokenize(
        &self,
        texts: &[&str],
        max_tokens: Option<usize>,
    ) -> Result<Vec<Tokenized>, EmbedError> {
        // The model sees at most `max_length` tokens, and a WordPiece token never spans more than
        // MAX_CHARS_PER_TOKEN characters, so anything past that many characters per token cannot
        // reach the model: cutting it first keeps a 50 MB document from costing gigabytes of
        // tokenizer memory, and changes nothing for text whose first tokens lie inside the cut.
        let cut: Vec<&str> = texts
            .iter()
            .map(|t| text_within_tokens(t, self.config.max_length))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(cut, true)
            .map_err(|e| EmbedError::Run(format!("tokenization failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let (mut ids, mut mask) = (e.get_ids().to_vec(), e.get_attention_mask().to_vec());
                if let Some(max) = max_tokens.filter(|&m| m >= 2 && ids.len() > m) {
                    let last = ids[ids.len() - 1];
                    ids.truncate(max - 1);
                    ids.push(last);
                    mask.truncate(max);
                }
                (ids, mask)
            })
            .collect())
    }

    /// Runs the model over tokenized texts, longest first in token-budgeted batches; results in
    /// input order.
    fn run_sorted(
        &self,
        encoded: &[Tokenized],
        keep_states: bool,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<TokenStates>, EmbedError> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].0.len()));
        let mut result: Vec<Option<TokenStates>> = (0..encoded.len()).map(|_| None).collect();
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first, so the first text of a batch sets its padded length.
            let longest = encoded[order[start]].0.len().max(1);
            let fit = (self.config.batch_tokens / longest).clamp(1, self.config.max_batch.max(1));
            let end = (start + fit).min(order.len());
            let batch: Vec<&Tokenized> = order[start..end].iter().map(|&i| &encoded[i]).collect();
            let out = self.run_batch(&batch, longest, keep_states)?;
            for (slot, item) in order[start..end].iter().zip(out) {
                result[*slot] = Some(item);
            }
            progress(end - start);
            start = end;
        }
        result
            .into_iter()
            .map(|r| r.ok_or_else(|| EmbedError::Run("a text got no embedding".into())))
            .collect()
    }

    fn run_batch(
        &self,
        batch: &[&Tokenized],
        seq_len: usize,
        keep_states: bool,
    ) -> Result<Vec<TokenStates>, EmbedError> {
        let rows = batch.len();
        let mut ids = Array2::<i64>::zeros((rows, seq_len));
        let mut mask = Array2::<i64>::zeros((rows, seq_len));
        for (r, (enc_ids, enc_mask)) in batch.iter().enumerate() {
            for (c, (&id, &m)) in enc_ids.iter().zip(enc_mask).enumerate() {
                ids[[r, c]] = i64::from(id);
                mask[[r, c]] = i64::from(m);
            }
        }
        let run_err = |e: ort::Error| EmbedError::Run(e.to_string());
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                Cow::from(self.input_ids.as_str()),
                Tensor::from_array(ids).map_err(run_err)?.into(),
            ),
            (
                Cow::from(self.attention_mask.as_str()),
                Tensor::from_array(mask.clone()).map_err(run_err)?.into(),
            ),
        ];
        if let Some(name) = &self.token_type_ids {
            let types = Array2::<i64>::zeros((rows, seq_len));
            inputs.push((
                Cow::from(name.as_str()),
                Tensor::from_array(types).map_err(run_err)?.into(),
            ));
        }
        let mut session = self.session.lock().map_err(|_| {
            EmbedError::Run("embedding session poisoned by an earlier panic".into())
        })?;
        let outputs = session.run(inputs).map_err(run_err)?;
        let output = outputs
            .get(&self.output)
            .ok_or_else(|| EmbedError::Run(format!("output `{}` missing", self.output)))?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(run_err)?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        let bad_shape = || EmbedError::Run(format!("unexpected output shape {shape:?}"));

        let mut out = Vec::with_capacity(rows);
        if self.pooled_output {
            if shape.len() != 2 || shape[0] != rows {
                return Err(bad_shape());
            }
            for row in data.chunks_exact(shape[1]) {
                let mut vector = row.to_vec();
                l2_normalise(&mut vector);
                out.push(TokenStates {
                    vector,
                    states: Vec::new(),
                    tokens: 0,
                });
            }
        } else {
            if shape.len() != 3 || shape[0] != rows || shape[1] != seq_len {
                return Err(bad_shape());
            }
            let dim = shape[2];
            for (r, tokens) in data.chunks_exact(seq_len * dim).enumerate() {
                // Mean over the tokens the attention mask keeps.
                let mut vector = vec![0f32; dim];
                let mut count = 0usize;
                for (t, token) in tokens.chunks_exact(dim).enumerate() {
                    if mask[[r, t]] == 0 {
                        continue;
                    }
                    count += 1;
                    vector.iter_mut().zip(token).for_each(|(acc, x)| *acc += x);
                }
                let count = count.max(1) as f32;
                vector.iter_mut().for_each(|x| *x /= count);
                l2_normalise(&mut vector);
                let length = batch[r].0.len();
                let states = if keep_states {
                    tokens[..length * dim].to_vec()
                } else {
                    Vec::new()
                };
                out.push(TokenStates {
                    vector,
                    states,
                    tokens: if keep_states { length } else { 0 },
                });
            }
        }
        Ok(out)
    }
}

/// A tokenized text: token ids and attention mask.
type Tokenized = (Vec<u32>, Vec<u32>);

/// One text's encoder output from [`BiEncoder::embed_token_states`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenStates {
    /// The mean-pooled, L2-normalised embedding (the dense vector).
    pub vector: Vec<f32>,
    /// The last hidden state of every token, `tokens × dim`, row-major (empty from
    /// [`BiEncoder::embed`]).
    pub states: Vec<f32>,
    /// How many tokens `states` holds (special tokens included).
    pub tokens: usize,
}

/// What the bi-encoder embeds for a document: title and text, as BEIR does. The index and the
/// late-joined reranker encode documents through this one function, so their states agree.
pub fn document_text(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_string()
    } else {
        format!("{title} {text}")
    }
}

/// Characters per token beyond which text cannot reach the model: BERT's WordPiece turns a
/// word longer than 100 characters into one `[UNK]`, and shorter words into at least one token.
const MAX_CHARS_PER_TOKEN: usize = 101;

/// The part of `text` that its first `tokens` WordPiece tokens can cover: everything past
/// `tokens × 101` characters is cut (a token never spans more), so a huge document costs no more
/// tokenizer time and memory than the model can use, and the first `tokens` tokens are unchanged.
pub fn text_within_tokens(text: &str, tokens: usize) -> &str {
    prefix_chars(text, tokens.saturating_mul(MAX_CHARS_PER_TOKEN))
}

/// The longest prefix of `text` with at most `chars` characters.
fn prefix_chars(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Scales `v` to unit length (leaves an all-zero vector unchanged).
pub fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Parses `tokenizer.json` as it is (no truncation or padding changed). Its error or panic
/// (tokenizers unwraps some of its own deserialization errors: a damaged `decoder` section
/// panics, see [`sieve_core::contain`]) comes back as a message.
pub fn read_tokenizer_file(path: &Path) -> Result<Tokenizer, String> {
    match sieve_core::contain::contained(|| Tokenizer::from_file(path)) {
        Ok(Ok(tokenizer)) => Ok(tokenizer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("the file is damaged ({panic})")),
    }
}

/// Loads `tokenizer.json`, truncating to `max_length` and with padding switched off (batches are
/// padded to their own longest text, not to a fixed length).
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer, EmbedError> {
    let err = |message: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(err("file not found".into()));
    }
    let mut tokenizer = read_tokenizer_file(path).map_err(err)?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| err(e.to_string()))?;
    Ok(tokenizer)
}
