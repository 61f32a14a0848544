//! What single-graph and segmented models share at the ONNX boundary: id inputs discovered from
//! the graph, length-sorted token-budget batches, padded id tensors.

use std::borrow::Cow;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{Outlet, Tensor, TensorElementType};
use sieve_core::RerankError;

use crate::encode::Pair;

/// Integer element type of an id input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdType {
    I64,
    I32,
}

/// An integer `[batch, sequence]` input of a graph.
#[derive(Debug, Clone)]
pub(crate) struct IdInput {
    pub name: String,
    pub ty: IdType,
}

/// The id inputs of a graph that takes token ids.
#[derive(Debug, Clone)]
pub(crate) struct IdInputs {
    pub input_ids: IdInput,
    pub attention_mask: IdInput,
    pub token_type_ids: Option<IdInput>,
}

/// Finds the `[batch, sequence]` integer input `name`, if the graph has one. `unsupported` turns a
/// problem into the caller's error (which names the model file).
pub(crate) fn id_input(
    inputs: &[Outlet],
    name: &str,
    unsupported: &dyn Fn(String) -> RerankError,
) -> Result<Option<IdInput>, RerankError> {
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
}

/// Refuses any input not in `allowed`.
pub(crate) fn only_inputs(
    inputs: &[Outlet],
    allowed: &[&str],
    unsupported: &dyn Fn(String) -> RerankError,
) -> Result<(), RerankError> {
    let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
    if let Some(extra) = names.iter().find(|n| !allowed.contains(n)) {
        return Err(unsupported(format!(
            "unexpected input `{extra}` (inputs: {names:?}; only {} can be fed)",
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// The `input_ids`, `attention_mask` (required) and `token_type_ids` (optional) inputs of a graph
/// fed with token ids, refusing any other input.
pub(crate) fn id_inputs(
    inputs: &[Outlet],
    unsupported: &dyn Fn(String) -> RerankError,
) -> Result<IdInputs, RerankError> {
    let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
    let input_ids = id_input(inputs, "input_ids", unsupported)?
        .ok_or_else(|| unsupported(format!("no `input_ids` input (inputs: {names:?})")))?;
    let attention_mask = id_input(inputs, "attention_mask", unsupported)?
        .ok_or_else(|| unsupported(format!("no `attention_mask` input (inputs: {names:?})")))?;
    let token_type_ids = id_input(inputs, "token_type_ids", unsupported)?;
    only_inputs(
        inputs,
        &["input_ids", "attention_mask", "token_type_ids"],
        unsupported,
    )?;
    Ok(IdInputs {
        input_ids,
        attention_mask,
        token_type_ids,
    })
}

/// A model call's worth of pairs: indices into the caller's list, padded to `seq_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub members: Vec<usize>,
    pub seq_len: usize,
}

/// Packs items of the given token lengths into batches: longest first (stable, so ties keep
/// input order), a batch's first item sets its padded length, and a batch holds at most
/// `batch_tokens / seq_len` (at least 1) and at most `max_batch` items. Similar lengths share
/// batches, which keeps padding small.
pub(crate) fn plan_batches(lengths: &[usize], batch_tokens: usize, max_batch: usize) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let seq_len = lengths[order[start]].max(1);
        let fit = (batch_tokens / seq_len).clamp(1, max_batch.max(1));
        let end = (start + fit).min(order.len());
        batches.push(Batch {
            members: order[start..end].to_vec(),
            seq_len,
        });
        start = end;
    }
    batches
}

/// The `input_ids`, `attention_mask` and `token_type_ids` of `pairs` padded to `seq_len`,
/// `[rows, seq_len]` row-major.
pub(crate) struct PaddedIds {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub types: Vec<i64>,
}

pub(crate) fn pad_pairs(pairs: &[&Pair], seq_len: usize, pad_id: u32) -> PaddedIds {
    let rows = pairs.len();
    let mut padded = PaddedIds {
        ids: vec![i64::from(pad_id); rows * seq_len],
        mask: vec![0i64; rows * seq_len],
        types: vec![0i64; rows * seq_len],
    };
    for (r, pair) in pairs.iter().enumerate() {
        let row = r * seq_len;
        for (c, (&id, &ty)) in pair.ids.iter().zip(&pair.type_ids).enumerate() {
            padded.ids[row + c] = i64::from(id);
            padded.mask[row + c] = 1;
            padded.types[row + c] = i64::from(ty);
        }
    }
    padded
}

/// `data` (`[rows, seq_len]`) as a tensor of the input's element type.
pub(crate) fn id_tensor(
    input: &IdInput,
    shape: [usize; 2],
    data: Vec<i64>,
) -> Result<SessionInputValue<'static>, String> {
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
}

/// The session inputs for a batch of token-id pairs.
pub(crate) fn id_batch_inputs<'a>(
    io: &'a IdInputs,
    pairs: &[&Pair],
    seq_len: usize,
    pad_id: u32,
) -> Result<Vec<(Cow<'a, str>, SessionInputValue<'static>)>, String> {
    let shape = [pairs.len(), seq_len];
    let padded = pad_pairs(pairs, seq_len, pad_id);
    let mut inputs = vec![
        (
            Cow::from(io.input_ids.name.as_str()),
            id_tensor(&io.input_ids, shape, padded.ids)?,
        ),
        (
            Cow::from(io.attention_mask.name.as_str()),
            id_tensor(&io.attention_mask, shape, padded.mask)?,
        ),
    ];
    if let Some(input) = &io.token_type_ids {
        inputs.push((
            Cow::from(input.name.as_str()),
            id_tensor(input, shape, padded.types)?,
        ));
    }
    Ok(inputs)
}

/// The float32 output `name` of a model call: its shape and values.
pub(crate) fn float_output<'a>(
    outputs: &'a SessionOutputs<'_>,
    name: &str,
) -> Result<(Vec<i64>, &'a [f32]), String> {
    let value = outputs
        .get(name)
        .ok_or_else(|| format!("output `{name}` missing"))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    Ok((shape.to_vec(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_length_sorted_and_token_budgeted() {
        let batches = plan_batches(&[3, 10, 10, 4, 1], 20, 64);
        assert_eq!(
            batches,
            vec![
                Batch {
                    members: vec![1, 2],
                    seq_len: 10
                },
                Batch {
                    members: vec![3, 0, 4],
                    seq_len: 4
                },
            ]
        );
        // max_batch caps rows; an item longer than the budget still gets a batch of its own.
        let batches = plan_batches(&[2, 2, 2, 50], 20, 2);
        let members: Vec<Vec<usize>> = batches.iter().map(|b| b.members.clone()).collect();
        assert_eq!(members, vec![vec![3], vec![0, 1], vec![2]]);
        assert!(plan_batches(&[], 20, 2).is_empty());
    }
}
