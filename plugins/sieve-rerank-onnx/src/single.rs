//! Single-graph cross-encoders (Hugging Face exports): one ONNX graph from token ids to logits.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorElementType;
use sieve_core::{RerankError, RerankStats};

use crate::encode::{Pair, PairEncoder};
use crate::io::{IdInputs, float_output, id_batch_inputs, id_inputs, plan_batches};
use crate::{SessionOptions, load_err, run_err};

/// What the graph takes and gives, discovered from the session.
#[derive(Debug, Clone)]
struct GraphIo {
    ids: IdInputs,
    output: String,
    /// 1 or 2 once known; `None` while the graph leaves the class dimension symbolic.
    classes: Option<usize>,
}

/// A loaded single-graph model.
pub(crate) struct SingleGraph {
    session: Mutex<Session>,
    io: GraphIo,
    classes: usize,
    model_path: std::path::PathBuf,
}

impl SingleGraph {
    /// Loads the graph, checks that it can be driven, and runs it once on a probe pair.
    pub fn load(
        model_path: &Path,
        encoder: &PairEncoder,
        options: &SessionOptions,
    ) -> Result<Self, RerankError> {
        let mut session =
            sieve_onnx::load_session(model_path, options).map_err(|e| load_err(e.to_string()))?;
        let mut io = inspect_graph(&session, model_path)?;
        let classes = probe(&mut session, &io, encoder, model_path)?;
        io.classes = Some(classes);
        Ok(Self {
            session: Mutex::new(session),
            io,
            classes,
            model_path: model_path.to_path_buf(),
        })
    }

    /// 1 for a `[batch, 1]` logit output, 2 for `[batch, 2]` class logits.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Whether the graph takes `token_type_ids`.
    pub fn uses_token_type_ids(&self) -> bool {
        self.io.ids.token_type_ids.is_some()
    }

    /// Runs `pairs` through the model in length-sorted, token-budgeted batches; returns one raw
    /// score per pair (input order) and fills the batch counters of `stats`.
    pub fn score_pairs(
        &self,
        pairs: &[Pair],
        encoder: &PairEncoder,
        batch_tokens: usize,
        max_batch: usize,
        stats: &mut RerankStats,
    ) -> Result<Vec<f32>, RerankError> {
        let lengths: Vec<usize> = pairs.iter().map(|p| p.ids.len()).collect();
        let mut raw = vec![0f32; pairs.len()];
        for batch in plan_batches(&lengths, batch_tokens, max_batch) {
            let rows: Vec<&Pair> = batch.members.iter().map(|&i| &pairs[i]).collect();
            let mut session = self
                .session
                .lock()
                .map_err(|_| run_err("the rerank session was poisoned by an earlier panic"))?;
            let began = Instant::now();
            let (shape, data) =
                run_batch(&mut session, &self.io, encoder.pad_id, &rows, batch.seq_len)
                    .map_err(run_err)?;
            drop(session);
            stats.model_ms += began.elapsed().as_secs_f64() * 1e3;
            let scores = raw_scores(&shape, &data, rows.len(), self.classes)
                .map_err(|e| run_err(format!("model {}: {e}", self.model_path.display())))?;
            for (&slot, score) in batch.members.iter().zip(scores) {
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
            stats.padded_tokens += rows.len() * batch.seq_len;
        }
        stats.pairs += pairs.len();
        Ok(raw)
    }
}

/// Checks the graph's inputs and output against what a cross-encoder must have.
fn inspect_graph(session: &Session, model_path: &Path) -> Result<GraphIo, RerankError> {
    let unsupported = |message: String| {
        load_err(format!(
            "model {} cannot be used as a cross-encoder: {message}",
            model_path.display()
        ))
    };
    let ids = id_inputs(session.inputs(), &unsupported)?;

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
        ids,
        output: name,
        classes,
    })
}

/// Runs one probe pair and returns the number of logit classes the model really outputs.
fn probe(
    session: &mut Session,
    io: &GraphIo,
    encoder: &PairEncoder,
    model_path: &Path,
) -> Result<usize, RerankError> {
    let failed = |message: String| {
        load_err(format!(
            "model {} failed a test run: {message}",
            model_path.display()
        ))
    };
    let pair = encoder.probe_pair().map_err(failed)?;
    let seq_len = pair.ids.len().max(1);
    let (shape, _) = run_batch(session, io, encoder.pad_id, &[&pair], seq_len).map_err(failed)?;
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
    let inputs = id_batch_inputs(&io.ids, batch, seq_len, pad_id)?;
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    let (shape, data) = float_output(&outputs, &io.output)?;
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
