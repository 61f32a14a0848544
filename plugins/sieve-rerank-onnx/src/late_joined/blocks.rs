//! The joint blocks' graphs: loading, checking their inputs, and running one block over a batch
//! of documents.
//!
//! Every block graph takes `x` `[B, Lq, H]` (the query token states: the tower's for the first
//! block, the previous block's `x_out` after that), `q_mask` `[B, Lq]` (int64), `d_codes`
//! `[B, Ld, rank]` (the documents' dequantised state codes), `d_mask` `[B, Ld]` (int64) and `d_vec`
//! `[B, H]` (the documents' pooled vectors), and returns `scores` `[B, widths]` (one column per
//! width of its exit, in the manifest's order) and, except for the last block, `x_out`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{Array2, Array3};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use sieve_core::{DocStates, RerankError};

use crate::io::float_output;
use crate::{CrossEncoderConfig, load_err, run_err};

const INPUTS: [&str; 5] = ["x", "q_mask", "d_codes", "d_mask", "d_vec"];

/// One loaded block graph.
pub(crate) struct Block {
    pub session: Mutex<Session>,
    pub path: PathBuf,
    pub layer: u32,
    pub widths: usize,
    pub has_x_out: bool,
}

/// One (query, document) pair of a block batch: the query's token states entering the block
/// (`lq` × hidden), and the document's states.
pub(crate) struct BlockRow<'a> {
    pub x: &'a [f32],
    pub lq: usize,
    pub states: &'a DocStates,
}

/// One block's results for a batch: scores per document and, when kept, the new query states.
pub(crate) struct BlockOut {
    pub scores: Vec<Vec<f32>>,
    pub x_out: Vec<Vec<f32>>,
}

impl Block {
    pub fn load(
        path: &Path,
        layer: u32,
        widths: usize,
        config: &CrossEncoderConfig,
    ) -> Result<Self, RerankError> {
        let session = sieve_onnx::load_session(path, &config.session)
            .map_err(|e| load_err(format!("joint block {}: {e}", path.display())))?;
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for want in INPUTS {
            if !inputs.iter().any(|i| i == want) {
                return Err(load_err(format!(
                    "joint block {} has no input `{want}` (inputs: {inputs:?}; expected {INPUTS:?})",
                    path.display()
                )));
            }
        }
        if let Some(extra) = inputs.iter().find(|i| !INPUTS.contains(&i.as_str())) {
            return Err(load_err(format!(
                "joint block {} has an unexpected input `{extra}`",
                path.display()
            )));
        }
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if !outputs.iter().any(|o| o == "scores") {
            return Err(load_err(format!(
                "joint block {} has no output `scores` (outputs: {outputs:?})",
                path.display()
            )));
        }
        let has_x_out = outputs.iter().any(|o| o == "x_out");
        Ok(Self {
            session: Mutex::new(session),
            path: path.to_path_buf(),
            layer,
            widths,
            has_x_out,
        })
    }

    /// Runs the block on `rows`, padding query states to the longest query of the batch (padded
    /// tokens are masked out of the pooling, and each query token attends only to the document,
    /// so a row's scores do not depend on its batch companions) and documents to `ld` tokens.
    pub fn run(
        &self,
        rows: &[BlockRow<'_>],
        ld: usize,
        hidden: usize,
        keep_x: bool,
    ) -> Result<BlockOut, RerankError> {
        let n = rows.len();
        let lq = rows.iter().map(|r| r.lq).max().unwrap_or(0);
        let rank = rows.first().map_or(0, |r| r.states.rank);
        let mut xs = Array3::<f32>::zeros((n, lq, hidden));
        let mut q_mask = Array2::<i64>::zeros((n, lq));
        let mut codes = Array3::<f32>::zeros((n, ld, rank));
        let mut d_mask = Array2::<i64>::zeros((n, ld));
        let mut d_vec = Array2::<f32>::zeros((n, hidden));
        for (r, row) in rows.iter().enumerate() {
            if row.x.len() != row.lq * hidden {
                return Err(run_err("internal: query states of the wrong size"));
            }
            xs.slice_mut(ndarray::s![r, ..row.lq, ..])
                .iter_mut()
                .zip(row.x)
                .for_each(|(o, &v)| *o = v);
            q_mask
                .slice_mut(ndarray::s![r, ..row.lq])
                .iter_mut()
                .for_each(|v| *v = 1);
            let s = row.states;
            let tokens = s.tokens().min(ld);
            if let Some(slice) = codes.slice_mut(ndarray::s![r, ..tokens, ..]).as_slice_mut() {
                s.dequantise_into(slice);
            } else {
                return Err(run_err("internal: code buffer is not contiguous"));
            }
            d_mask
                .slice_mut(ndarray::s![r, ..tokens])
                .iter_mut()
                .for_each(|v| *v = 1);
            d_vec
                .slice_mut(ndarray::s![r, ..])
                .iter_mut()
                .zip(&s.vector)
                .for_each(|(o, &v)| *o = v);
        }
        let err = |e: ort::Error| run_err(format!("joint block {}: {e}", self.path.display()));
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("x".into(), Tensor::from_array(xs).map_err(err)?.into()),
            (
                "q_mask".into(),
                Tensor::from_array(q_mask).map_err(err)?.into(),
            ),
            (
                "d_codes".into(),
                Tensor::from_array(codes).map_err(err)?.into(),
            ),
            (
                "d_mask".into(),
                Tensor::from_array(d_mask).map_err(err)?.into(),
            ),
            (
                "d_vec".into(),
                Tensor::from_array(d_vec).map_err(err)?.into(),
            ),
        ];
        let mut session = self
            .session
            .lock()
            .map_err(|_| run_err("joint block session poisoned by an earlier panic"))?;
        let outputs = session.run(inputs).map_err(err)?;
        let bad = |m: String| run_err(format!("joint block {}: {m}", self.path.display()));
        let (shape, data) = float_output(&outputs, "scores").map_err(bad)?;
        if shape != [n as i64, self.widths as i64] {
            return Err(bad(format!(
                "`scores` has shape {shape:?}, expected [{n}, {}]",
                self.widths
            )));
        }
        let scores = data
            .chunks_exact(self.widths)
            .map(<[f32]>::to_vec)
            .collect();
        let x_out = if keep_x {
            let (shape, data) = float_output(&outputs, "x_out").map_err(bad)?;
            if shape != [n as i64, lq as i64, hidden as i64] {
                return Err(bad(format!("`x_out` has shape {shape:?}")));
            }
            data.chunks_exact(lq * hidden)
                .zip(rows)
                .map(|(chunk, row)| chunk[..row.lq * hidden].to_vec())
                .collect()
        } else {
            Vec::new()
        };
        Ok(BlockOut { scores, x_out })
    }
}
