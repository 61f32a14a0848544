//! Loading a segmented model: the manifest, one ONNX session per segment (int8 or fp32), each
//! graph's inputs and outputs checked, and a probe pair run through the chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use ort::session::Session;
use ort::value::TensorElementType;
use sieve_core::RerankError;

use super::{
    MANIFEST_FILE, Manifest, ManifestSegment, Matryoshka, Segment, SegmentInput, head_name,
};
use crate::cost::{COST_FILE, CostTable};
use crate::encode::PairEncoder;
use crate::io::{id_input, id_inputs, only_inputs};
use crate::{CrossEncoderConfig, Device, Precision, load_err};

/// The directory's manifest, when `path` is a Matryoshka model directory or its manifest.
pub(crate) fn manifest_in(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let manifest = path.join(MANIFEST_FILE);
        return manifest.is_file().then_some(manifest);
    }
    (path.is_file() && path.file_name().is_some_and(|n| n == MANIFEST_FILE))
        .then(|| path.to_path_buf())
}

impl Matryoshka {
    /// Loads every segment once (int8 or fp32 per `precision`), checks the graphs' inputs and
    /// outputs and runs a probe pair through the chain.
    pub fn load(
        manifest: Manifest,
        manifest_path: &Path,
        model_dir: &Path,
        encoder: &PairEncoder,
        config: &CrossEncoderConfig,
    ) -> Result<Self, RerankError> {
        let bad_manifest =
            |message: String| load_err(format!("manifest {}: {message}", manifest_path.display()));
        let profiles = manifest.profiles().map_err(bad_manifest)?;
        let mut calibration = BTreeMap::new();
        if let Some(c) = &manifest.calibration {
            for s in &manifest.segments {
                for &w in &s.widths {
                    if let Some(head) = c.heads.get(&head_name(s.exit_layer, w)) {
                        calibration.insert((s.exit_layer, w), *head);
                    }
                }
            }
        }
        let n = manifest.segments.len();
        let mut segments = Vec::with_capacity(n);
        for (i, spec) in manifest.segments.iter().enumerate() {
            let (path, int8) = choose_file(spec, model_dir, config)?;
            let session = sieve_onnx::load_session(&path, &config.session)
                .map_err(|e| load_err(e.to_string()))?;
            let (input, hidden_out, logits) = inspect_segment(&session, &path, i == 0, i + 1 == n)?;
            segments.push(Segment {
                number: spec.segment,
                exit_layer: spec.exit_layer,
                widths: spec.widths.clone(),
                path,
                int8,
                session: Mutex::new(session),
                input,
                hidden_out,
                logits,
            });
        }
        let precision = if segments.iter().all(|s| s.int8) {
            "int8"
        } else if segments.iter().all(|s| !s.int8) {
            "fp32"
        } else {
            "mixed"
        }
        .to_string();
        let cost_path = model_dir.join(COST_FILE);
        let cost = if cost_path.is_file() {
            CostTable::load(&cost_path)
                .map(Some)
                .map_err(|e| e.to_string())
        } else {
            Ok(None)
        };
        let model = Self {
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            segments,
            profiles,
            calibration,
            cost: RwLock::new(Ok(None)),
            precision,
        };
        model.probe(encoder)?;
        let cost = cost.and_then(|table| match table {
            Some(t) => model
                .check_cost_table(&t)
                .map(|()| Some(t))
                .map_err(|e| format!("{}: {e}", cost_path.display())),
            None => Ok(None),
        });
        *model
            .cost
            .write()
            .map_err(|_| load_err("cost table lock poisoned"))? = cost;
        Ok(model)
    }

    /// Runs a probe pair through every segment, checking the outputs' shapes.
    fn probe(&self, encoder: &PairEncoder) -> Result<(), RerankError> {
        let failed = |e: String| {
            load_err(format!(
                "model {} failed a test run: {e}",
                self.manifest_path.display()
            ))
        };
        let pair = encoder.probe_pair().map_err(failed)?;
        let len = pair.ids.len().max(1);
        self.run_chain(&[&pair], len, encoder.pad_id, |_, _| ())
            .map_err(failed)
    }
}

/// The file of a segment for the configured precision, falling back to the other precision when
/// the preferred file is missing.
fn choose_file(
    spec: &ManifestSegment,
    model_dir: &Path,
    config: &CrossEncoderConfig,
) -> Result<(PathBuf, bool), RerankError> {
    let prefer_int8 = match config.precision {
        Precision::Auto => config.session.device == Device::Cpu,
        Precision::Int8 => true,
        Precision::Fp32 => false,
    };
    let fp32 = Some((model_dir.join(&spec.file), false));
    let int8 = spec.file_int8.as_ref().map(|f| (model_dir.join(f), true));
    let order = if prefer_int8 {
        [int8, fp32]
    } else {
        [fp32, int8]
    };
    for (path, is_int8) in order.iter().flatten() {
        if path.is_file() {
            return Ok((path.clone(), *is_int8));
        }
    }
    let named: Vec<String> = order
        .iter()
        .flatten()
        .map(|(p, _)| p.display().to_string())
        .collect();
    Err(load_err(format!(
        "segment {}: no model file: {} does not exist",
        spec.segment,
        named.join(" nor ")
    )))
}

/// Checks a segment's graph: inputs (ids for the first, hidden states + mask for the others) and
/// outputs (`logits`, and `hidden_states_out` except on the last).
fn inspect_segment(
    session: &Session,
    path: &Path,
    first: bool,
    last: bool,
) -> Result<(SegmentInput, Option<String>, String), RerankError> {
    let unsupported = |message: String| {
        load_err(format!(
            "segment {} cannot be used: {message}",
            path.display()
        ))
    };
    let inputs = session.inputs();
    let input = if first {
        SegmentInput::Ids(id_inputs(inputs, &unsupported)?)
    } else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
        let hidden = inputs
            .iter()
            .find(|i| i.name() == "hidden_states")
            .ok_or_else(|| unsupported(format!("no `hidden_states` input (inputs: {names:?})")))?;
        if hidden.dtype().tensor_type() != Some(TensorElementType::Float32)
            || hidden.dtype().tensor_shape().is_some_and(|s| s.len() != 3)
        {
            return Err(unsupported(format!(
                "input `hidden_states` is {}; expected float32 [batch, seq, hidden]",
                hidden.dtype()
            )));
        }
        let mask = id_input(inputs, "attention_mask", &unsupported)?
            .ok_or_else(|| unsupported(format!("no `attention_mask` input (inputs: {names:?})")))?;
        only_inputs(inputs, &["hidden_states", "attention_mask"], &unsupported)?;
        SegmentInput::Hidden {
            hidden: "hidden_states".into(),
            mask,
        }
    };
    let outputs = session.outputs();
    let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
    let float_output = |name: &str, rank: usize| -> Result<Option<String>, RerankError> {
        let Some(o) = outputs.iter().find(|o| o.name() == name) else {
            return Ok(None);
        };
        if o.dtype().tensor_type() != Some(TensorElementType::Float32)
            || o.dtype().tensor_shape().is_some_and(|s| s.len() != rank)
        {
            return Err(unsupported(format!(
                "output `{name}` is {}; expected a float32 tensor of rank {rank}",
                o.dtype()
            )));
        }
        Ok(Some(name.to_string()))
    };
    let logits = float_output("logits", 2)?
        .ok_or_else(|| unsupported(format!("no `logits` output (outputs: {names:?})")))?;
    let hidden_out = float_output("hidden_states_out", 3)?;
    if hidden_out.is_none() && !last {
        return Err(unsupported(format!(
            "no `hidden_states_out` output (outputs: {names:?}); every segment but the last \
             must pass its hidden states on"
        )));
    }
    Ok((input, hidden_out, logits))
}
