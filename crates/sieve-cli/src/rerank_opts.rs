//! Command-line options shared by everything that loads a cross-encoder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use sieve_rerank_onnx::{CrossEncoder, CrossEncoderConfig, Device, Precision, WindowAggregation};

/// Where and how the cross-encoder runs.
#[derive(Args, Clone)]
pub struct RerankerArgs {
    /// Cross-encoder model directory (HF layout: model.onnx or onnx/*.onnx + tokenizer.json)
    /// [default: models/sieve-ce-minilm-l6-lj].
    #[arg(long, value_name = "DIR")]
    pub reranker: Option<PathBuf>,
    /// Where the reranker runs: cpu, cuda or cuda:N (needs a build with --features cuda and the
    /// onnxruntime-gpu library; never falls back silently).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Longest query part of a pair, in tokens.
    #[arg(long, default_value_t = 64)]
    pub query_max_tokens: usize,
    /// Longest pair in tokens [default: the model's, at most 512].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Windows per long document (1 = plain truncation) [default: the model manifest's
    /// `max_windows`, else 8].
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Document score from its windows: max or mean-top2.
    #[arg(long, default_value = "max")]
    pub window_score: String,
    /// Token budget per model call (rows × padded length); the default suits CPUs, raise it on a GPU.
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Token budget per call of a late-joined model's joint blocks (rows × padded document
    /// length); their rows are cheap, so it is larger than --batch-tokens.
    #[arg(long, default_value_t = 4096)]
    pub block_batch_tokens: usize,
    /// Which graphs of a Matryoshka model run: auto (int8 on CPU, fp32 on CUDA), int8 or fp32.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// JSON file of budget profiles that replace or add to the model manifest's:
    /// `{"profiles": {"NAME": "L:W" | "K@L[:W],...", ...}, "default_profile": "NAME"}`.
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
}

/// The contents of a `--profiles` file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    #[serde(default)]
    profiles: BTreeMap<String, String>,
    #[serde(default)]
    default_profile: Option<String>,
}

fn read_profiles(path: &Path) -> Result<ProfilesFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the profiles file {}", path.display()))?;
    let file: ProfilesFile = serde_json::from_str(&text)
        .with_context(|| format!("the profiles file {} is not valid", path.display()))?;
    if file.profiles.is_empty() && file.default_profile.is_none() {
        anyhow::bail!(
            "the profiles file {} defines neither `profiles` nor `default_profile`",
            path.display()
        );
    }
    Ok(file)
}

/// `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceArg(pub Device);

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceArg(Device::Cpu)),
            "cuda" => Ok(DeviceArg(Device::Cuda(0))),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| DeviceArg(Device::Cuda(n)))
                .ok_or_else(|| format!("unknown device `{other}` (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl RerankerArgs {
    /// Loads the cross-encoder these options describe.
    pub fn load(&self) -> Result<Arc<CrossEncoder>> {
        let dir = crate::paths::reranker_model(self.reranker.as_deref())?;
        let aggregation = match self.window_score.as_str() {
            "max" => WindowAggregation::Max,
            "mean-top2" => WindowAggregation::MeanTop2,
            other => anyhow::bail!("unknown --window-score `{other}` (expected max or mean-top2)"),
        };
        let mut config = CrossEncoderConfig {
            query_max_tokens: self.query_max_tokens,
            max_length: self.max_length,
            max_windows: self.max_windows,
            aggregation,
            batch_tokens: self.batch_tokens,
            block_batch_tokens: self.block_batch_tokens,
            ..CrossEncoderConfig::default()
        };
        config.session.device = self.device.0;
        if let Some(path) = &self.profiles {
            let file = read_profiles(path)?;
            config.profiles = file.profiles;
            config.default_profile = file.default_profile;
        }
        config.precision = match self.precision.as_str() {
            "auto" => Precision::Auto,
            "int8" => Precision::Int8,
            "fp32" => Precision::Fp32,
            other => anyhow::bail!("unknown --precision `{other}` (expected auto, int8 or fp32)"),
        };
        let encoder = CrossEncoder::open(&dir, config)
            .with_context(|| format!("cannot load reranker {}", dir.display()))?;
        Ok(Arc::new(encoder))
    }
}

/// How much of a Matryoshka reranker each query spends.
#[derive(Args, Clone, Default)]
pub struct BudgetArgs {
    /// A named budget profile of the model (fast, balanced, full, or one its manifest defines).
    #[arg(long, value_name = "NAME", group = "plan")]
    pub budget: Option<String>,
    /// One exit: LAYER:WIDTH (e.g. 4:96) — run the model up to LAYER, score with that width's head.
    #[arg(long, value_name = "LAYER:WIDTH", group = "plan")]
    pub exit: Option<String>,
    /// A cascade, e.g. 100@2,30@4,10@6: all 100 scored at layer 2, the best 30 carried to
    /// layer 4, the best 10 to layer 6 (KEEP@LAYER[:WIDTH], KEEP never growing).
    #[arg(long, value_name = "SPEC", group = "plan")]
    pub cascade: Option<String>,
    /// The deepest plan the model's measured cost table (`sieve calibrate`) predicts fits in
    /// this many milliseconds.
    #[arg(long, value_name = "MS", group = "plan")]
    pub latency_ms: Option<f64>,
}

impl BudgetArgs {
    /// The budget these options choose (`Budget::Default` when none is given).
    pub fn budget(&self) -> Result<sieve::Budget> {
        use sieve::Budget;
        let parsed = if let Some(name) = &self.budget {
            match Budget::parse(name).map_err(anyhow::Error::msg)? {
                b @ (Budget::Profile(_) | Budget::Default) => b,
                _ => anyhow::bail!(
                    "--budget takes a profile name (fast, balanced, full, ...); use --exit, --cascade or --latency-ms for the others"
                ),
            }
        } else if let Some(exit) = &self.exit {
            match Budget::parse(exit).map_err(|e| anyhow::anyhow!("--exit: {e}"))? {
                b @ Budget::Exit { .. } => b,
                _ => anyhow::bail!("--exit takes LAYER:WIDTH, e.g. 4:96"),
            }
        } else if let Some(spec) = &self.cascade {
            match Budget::parse(spec).map_err(|e| anyhow::anyhow!("--cascade: {e}"))? {
                b @ Budget::Cascade(_) => b,
                _ => anyhow::bail!("--cascade takes KEEP@LAYER[:WIDTH],..., e.g. 100@2,30@4,10@6"),
            }
        } else if let Some(ms) = self.latency_ms {
            if !(ms.is_finite() && ms > 0.0) {
                anyhow::bail!("--latency-ms must be a positive number of milliseconds");
            }
            Budget::LatencyMs(ms)
        } else {
            Budget::Default
        };
        Ok(parsed)
    }
}

/// Parses `--blend`: `model`, `off`, or a weight in [0, 1].
pub fn parse_blend(s: &str) -> Result<sieve::BlendChoice> {
    s.parse().map_err(|e: String| anyhow::anyhow!("--{e}"))
}
