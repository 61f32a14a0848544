//! `matryoshka.json`: the exits, segments, calibration and profiles of a segmented model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sieve_core::{Budget, RerankError};

use super::plan::{Plan, resolve_plan};
use crate::{Calibration, read_json};

/// The manifest of a segmented Matryoshka model directory.
pub const MANIFEST_FILE: &str = "matryoshka.json";

/// The manifest format this crate reads (`format` field of [`MANIFEST_FILE`]).
pub const MANIFEST_FORMAT: &str = "sieve-matryoshka-ce/1";

/// The contents of [`MANIFEST_FILE`] that this crate uses (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must be [`MANIFEST_FORMAT`].
    pub format: String,
    /// The model's name, for descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Longest (query, window) sequence in tokens, special tokens included.
    pub max_length: usize,
    /// The query is cut to this many tokens.
    pub query_cap: usize,
    /// Width of the hidden states passed between segments.
    pub hidden_size: usize,
    /// Windows scored per long document by default: 1 (plain truncation) for a model trained on
    /// the first `max_length` tokens of each pair. Absent: the crate's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_windows: Option<usize>,
    /// How token types are fed (informative; the graph's inputs decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type_ids: Option<String>,
    /// The exits (must agree with the segments' exit layers and widths when present).
    #[serde(default)]
    pub exits: Vec<ManifestExit>,
    /// The segments, in order.
    pub segments: Vec<ManifestSegment>,
    /// The whole model as one graph (optional; not used by the segmented engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<ManifestFull>,
    /// Per-head calibration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<ManifestCalibration>,
    /// Named plans (`"fast": "2:384"`, `"balanced": "100@2,30@6"`), each an exit or a cascade in
    /// [`Budget::parse`] syntax. `fast`, `balanced` and `full` default to the first, middle and
    /// last exit at the widest width.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, String>,
    /// The profile [`Budget::Default`] runs (default `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Recommended blending with the first-stage score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<ManifestBlend>,
}

/// One exit of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestExit {
    /// Layer after which the heads sit (1-based).
    pub layer: u32,
    /// Head widths at this exit.
    pub widths: Vec<u32>,
}

/// One segment of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSegment {
    /// Segment number, 1-based, in order.
    pub segment: u32,
    /// First and last layer of the segment (informative).
    #[serde(default)]
    pub layers: Vec<u32>,
    /// The exit layer the segment ends at.
    pub exit_layer: u32,
    /// Head widths, in the order of the `logits` columns.
    pub widths: Vec<u32>,
    /// The fp32 graph, relative to the model directory.
    pub file: String,
    /// The int8 graph, relative to the model directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_int8: Option<String>,
    /// Head names (`l2_w384`, informative).
    #[serde(default)]
    pub heads: Vec<String>,
}

/// The optional whole-model graph of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFull {
    /// The fp32 graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The int8 graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_int8: Option<String>,
}

/// Per-head calibration of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ManifestCalibration {
    /// `head name (l{layer}_w{width}) -> calibration`; heads without one use `sigmoid(raw)`.
    #[serde(default)]
    pub heads: BTreeMap<String, Calibration>,
}

/// Recommended blending of a [`Manifest`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ManifestBlend {
    /// Weight of the reranker score in `w·reranker + (1−w)·fused`, in `[0, 1]`.
    pub reranker_weight: f32,
}

/// The head name of an exit and width, as the manifest's calibration keys it.
pub fn head_name(layer: u32, width: u32) -> String {
    format!("l{layer}_w{width}")
}

impl Manifest {
    /// Reads and checks a manifest; errors name the file.
    pub fn read(path: &Path) -> Result<Self, RerankError> {
        read_json(path, "manifest", Self::validate)
    }

    /// Checks the manifest's consistency (format, segments, exits, calibration, profiles, blend).
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format is {:?}, expected {MANIFEST_FORMAT:?}",
                self.format
            ));
        }
        if self.max_length == 0 || self.query_cap == 0 || self.hidden_size == 0 {
            return Err("max_length, query_cap and hidden_size must be at least 1".into());
        }
        if self.max_windows == Some(0) {
            return Err("max_windows must be at least 1".into());
        }
        if self.segments.is_empty() {
            return Err("no segments".into());
        }
        let mut previous = 0;
        for (i, s) in self.segments.iter().enumerate() {
            if s.segment as usize != i + 1 {
                return Err(format!(
                    "segments must be numbered 1, 2, ... in order; found segment {} at position {}",
                    s.segment,
                    i + 1
                ));
            }
            if s.exit_layer <= previous {
                return Err(format!(
                    "segment {}: exit_layer {} does not come after the previous segment's {previous}",
                    s.segment, s.exit_layer
                ));
            }
            previous = s.exit_layer;
            if s.widths.is_empty() || s.widths.contains(&0) {
                return Err(format!(
                    "segment {}: widths must be a non-empty list of positive numbers",
                    s.segment
                ));
            }
            if (1..s.widths.len()).any(|j| s.widths[..j].contains(&s.widths[j])) {
                return Err(format!("segment {}: repeated width", s.segment));
            }
            if s.file.trim().is_empty() {
                return Err(format!("segment {}: empty file name", s.segment));
            }
        }
        if !self.exits.is_empty() {
            let from_segments: Vec<ManifestExit> = self
                .segments
                .iter()
                .map(|s| ManifestExit {
                    layer: s.exit_layer,
                    widths: s.widths.clone(),
                })
                .collect();
            if self.exits != from_segments {
                return Err(format!(
                    "exits {} do not match the segments' exit layers and widths {}",
                    describe_exits(&self.exits),
                    describe_exits(&from_segments)
                ));
            }
        }
        if let Some(calibration) = &self.calibration {
            for (name, c) in &calibration.heads {
                if !self.segments.iter().any(|s| {
                    s.widths
                        .iter()
                        .any(|&w| head_name(s.exit_layer, w) == *name)
                }) {
                    return Err(format!(
                        "calibration for unknown head {name:?} (heads: {})",
                        self.head_names().join(", ")
                    ));
                }
                c.check()
                    .map_err(|e| format!("calibration of {name}: {e}"))?;
            }
        }
        if let Some(blend) = self.blend
            && !(blend.reranker_weight.is_finite() && (0.0..=1.0).contains(&blend.reranker_weight))
        {
            return Err(format!(
                "blend.reranker_weight must be in [0, 1], got {}",
                blend.reranker_weight
            ));
        }
        let profiles = self.profiles()?;
        let default = self.default_profile_name();
        if !profiles.contains_key(default) {
            return Err(format!(
                "default_profile {default:?} is not a profile (profiles: {})",
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// Every head's name, shallowest exit first.
    pub fn head_names(&self) -> Vec<String> {
        self.segments
            .iter()
            .flat_map(|s| s.widths.iter().map(|&w| head_name(s.exit_layer, w)))
            .collect()
    }

    /// The profile [`Budget::Default`] runs.
    pub fn default_profile_name(&self) -> &str {
        self.default_profile.as_deref().unwrap_or("full")
    }

    /// The profiles, resolved to plans: the manifest's, plus `fast`, `balanced` and `full` where
    /// it does not define them.
    pub fn profiles(&self) -> Result<BTreeMap<String, Plan>, String> {
        profile_plans(&self.exit_list(), &self.profiles)
    }

    /// The exits, from the segments.
    pub fn exit_list(&self) -> Vec<ManifestExit> {
        self.segments
            .iter()
            .map(|s| ManifestExit {
                layer: s.exit_layer,
                widths: s.widths.clone(),
            })
            .collect()
    }
}

/// Named plans over `exits`: `fast`, `balanced` and `full` (the first, middle and last exit at
/// the widest width) unless `custom` redefines them, plus every plan of `custom` (name → an exit
/// or a cascade in [`Budget::parse`] syntax).
pub(crate) fn profile_plans(
    exits: &[ManifestExit],
    custom: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Plan>, String> {
    let widest = |e: &ManifestExit| Plan::exit(e.layer, max_width(&e.widths));
    let mut plans = BTreeMap::new();
    if let (Some(first), Some(last)) = (exits.first(), exits.last()) {
        plans.insert("fast".to_string(), widest(first));
        plans.insert(
            "balanced".to_string(),
            widest(&exits[(exits.len() - 1) / 2]),
        );
        plans.insert("full".to_string(), widest(last));
    }
    for (name, value) in custom {
        let budget =
            Budget::parse(value).map_err(|e| format!("profile {name:?} = {value:?}: {e}"))?;
        let plan = match &budget {
            Budget::Exit { .. } | Budget::Cascade(_) => resolve_plan(exits, &budget),
            _ => Err(format!(
                "must be an exit (LAYER:WIDTH) or a cascade (KEEP@LAYER[:WIDTH],...), got                  '{budget}'"
            )),
        }
        .map_err(|e| format!("profile {name:?} = {value:?}: {e}"))?;
        plans.insert(name.clone(), plan);
    }
    Ok(plans)
}

pub(crate) fn max_width(widths: &[u32]) -> u32 {
    widths.iter().copied().max().unwrap_or(0)
}

/// `2:{384,96}, 4:{384,96}`.
pub(crate) fn describe_exits(exits: &[ManifestExit]) -> String {
    exits
        .iter()
        .map(|e| {
            let widths: Vec<String> = e.widths.iter().map(u32::to_string).collect();
            format!("{}:{{{}}}", e.layer, widths.join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
