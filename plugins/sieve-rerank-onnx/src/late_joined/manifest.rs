//! `late_joined.json`: what a late-joined model directory holds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sieve_core::RerankError;

use crate::matryoshka::{ManifestBlend, ManifestCalibration, ManifestExit, Plan, profile_plans};
use crate::read_json;

/// The manifest file that marks a late-joined model directory.
pub const LATE_JOINED_FILE: &str = "late_joined.json";

/// The manifest format of models whose blocks read the towers' query states.
pub const LATE_JOINED_FORMAT: &str = "sieve-late-joined-ce/1";

/// The manifest format of models whose blocks read the states of their own query graph
/// ([`QueryTowerSpec`]). A separate format, so that a sieve that does not know query graphs
/// refuses such a model instead of feeding its blocks the wrong states.
pub const LATE_JOINED_FORMAT_QUERY_TOWER: &str = "sieve-late-joined-ce/2";

/// The manifest of a late-joined (sieve-ce v2) model directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LateJoinedManifest {
    /// [`LATE_JOINED_FORMAT`], or [`LATE_JOINED_FORMAT_QUERY_TOWER`] with a `query_tower`.
    pub format: String,
    /// The model's name, for descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The towers: the bi-encoder both sides run.
    pub tower: TowerSpec,
    /// The query side's own graph, when the model has trained query layers: the blocks read its
    /// states instead of the tower's (exit 6 keeps the tower's pooled query vector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_tower: Option<QueryTowerSpec>,
    /// The state codec of the document side.
    pub codec: CodecSpec,
    /// Width of the token states and of the blocks' hidden states.
    pub hidden_size: usize,
    /// The exits: the first is the towers' cosine (numbered by the towers' depth, 6 for
    /// all-MiniLM-L6), then one per joint block (7, 8, ...).
    pub exits: Vec<ManifestExit>,
    /// The joint blocks, in order.
    pub blocks: Vec<BlockSpec>,
    /// Per-head calibration (`l{layer}_w{width}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<ManifestCalibration>,
    /// Named plans (exits or cascades in `Budget::parse` syntax); `fast`, `balanced` and `full`
    /// default to the first, middle and last exit at the widest width.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, String>,
    /// The profile `Budget::Default` runs (default `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Recommended blending with the first-stage score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<ManifestBlend>,
}

/// The towers of a [`LateJoinedManifest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TowerSpec {
    /// The bi-encoder's model directory (or ONNX file), relative to the model directory.
    pub model: String,
    /// The sha256 of the bi-encoder's ONNX file the blocks were trained on; a different file is
    /// refused (its states would not be the ones the blocks expect).
    pub onnx_sha256: String,
    /// Documents are cut to this many tokens, special tokens included (the bi-encoder's own
    /// `max_length`, so that index states and rerank-time states agree).
    pub doc_max_length: usize,
    /// Queries are cut to this many tokens, special tokens excluded.
    pub query_cap: usize,
}

/// The query graph of a [`LateJoinedManifest`]: the tower's lower layers with trained copies of its
/// last `layers` layers on top. Same inputs and tokenisation as the tower (`[CLS] query [SEP]`,
/// cut to `query_cap`); its `last_hidden_state` is what the first block reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryTowerSpec {
    /// The ONNX graph, relative to the model directory.
    pub file: String,
    /// How many of the tower's layers it re-runs with trained weights (for descriptions).
    pub layers: u32,
}

/// The state codec of a [`LateJoinedManifest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodecSpec {
    /// The codec file, relative to the model directory.
    pub file: String,
    /// Codes per token (must match the file).
    pub rank: usize,
}

/// One joint block of a [`LateJoinedManifest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockSpec {
    /// The exit layer after the block (7 for the first block on a 6-layer tower).
    pub layer: u32,
    /// The fp32 graph, relative to the model directory.
    pub file: String,
    /// The int8 graph, relative to the model directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_int8: Option<String>,
}

impl LateJoinedManifest {
    /// Reads and checks a manifest; errors name the file.
    pub fn read(path: &Path) -> Result<Self, RerankError> {
        read_json(path, "late-joined manifest", Self::validate)
    }

    /// Checks formats, exits, blocks and profiles against each other.
    pub fn validate(&self) -> Result<(), String> {
        match (self.format.as_str(), &self.query_tower) {
            (LATE_JOINED_FORMAT, None) | (LATE_JOINED_FORMAT_QUERY_TOWER, Some(_)) => {}
            (LATE_JOINED_FORMAT, Some(_)) => {
                return Err(format!(
                    "format {LATE_JOINED_FORMAT:?} has no query_tower; a model with one is \
                     {LATE_JOINED_FORMAT_QUERY_TOWER:?}"
                ));
            }
            (LATE_JOINED_FORMAT_QUERY_TOWER, None) => {
                return Err(format!(
                    "format {LATE_JOINED_FORMAT_QUERY_TOWER:?} needs a query_tower"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "format is {other:?}, this sieve reads {LATE_JOINED_FORMAT:?} and \
                     {LATE_JOINED_FORMAT_QUERY_TOWER:?}"
                ));
            }
        }
        if let Some(q) = &self.query_tower
            && (q.file.is_empty() || q.layers == 0)
        {
            return Err("query_tower needs a file and at least one layer".into());
        }
        if self.hidden_size == 0 || self.codec.rank == 0 || self.codec.rank > self.hidden_size {
            return Err(format!(
                "hidden_size {} and codec rank {} do not fit",
                self.hidden_size, self.codec.rank
            ));
        }
        if self.tower.doc_max_length < 3 || self.tower.query_cap == 0 {
            return Err("tower doc_max_length must be at least 3 and query_cap positive".into());
        }
        let Some(first) = self.exits.first() else {
            return Err("no exits".into());
        };
        if first.layer == 0 {
            return Err(
                "exit layers start at 1 (the towers' exit is numbered by their depth)".into(),
            );
        }
        if self.exits.len() != self.blocks.len() + 1 {
            return Err(format!(
                "{} exits but {} blocks: every block needs exactly one exit after it",
                self.exits.len(),
                self.blocks.len()
            ));
        }
        for (exit, block) in self.exits[1..].iter().zip(&self.blocks) {
            if exit.layer != block.layer {
                return Err(format!(
                    "block with exit layer {} is listed against exit {}",
                    block.layer, exit.layer
                ));
            }
        }
        for pair in self.exits.windows(2) {
            if pair[1].layer <= pair[0].layer {
                return Err("exit layers must increase".into());
            }
        }
        for exit in &self.exits {
            if exit.widths.is_empty()
                || exit
                    .widths
                    .iter()
                    .any(|&w| w == 0 || w as usize > self.hidden_size)
            {
                return Err(format!(
                    "exit {} has widths {:?}: each must be in 1..={}",
                    exit.layer, exit.widths, self.hidden_size
                ));
            }
        }
        if let Some(blend) = &self.blend
            && !(0.0..=1.0).contains(&blend.reranker_weight)
        {
            return Err(format!(
                "blend reranker_weight {} is not in [0, 1]",
                blend.reranker_weight
            ));
        }
        if let Some(calibration) = &self.calibration {
            for (head, c) in &calibration.heads {
                c.check()
                    .map_err(|e| format!("calibration of {head}: {e}"))?;
            }
        }
        let plans = self.profiles()?;
        let name = self.default_profile_name();
        if !plans.contains_key(name) {
            return Err(format!("default profile {name:?} is not defined"));
        }
        Ok(())
    }

    /// The profile `Budget::Default` runs.
    pub fn default_profile_name(&self) -> &str {
        self.default_profile.as_deref().unwrap_or("full")
    }

    /// The profiles, resolved to plans.
    pub fn profiles(&self) -> Result<BTreeMap<String, Plan>, String> {
        profile_plans(&self.exits, &self.profiles)
    }
}
