//! Score calibration: `calibrated = sigmoid(raw / temperature + bias)`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sieve_core::{RerankError, sigmoid};

use crate::read_json;

/// The optional calibration file of a model directory: `{"temperature": T, "bias": b}`.
pub const CALIBRATION_FILE: &str = "sieve_calibration.json";

/// A score calibration fitted for a model, read from [`CALIBRATION_FILE`] in its directory (or,
/// per head, from a Matryoshka manifest): `calibrated = sigmoid(raw / temperature + bias)`
/// (temperature scaling plus a shift, the Platt-style correction that makes `calibrated` track
/// the probability of relevance, so that thresholds such as `--min-score` mean the same thing
/// across models).
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

    /// Checks that the temperature is finite and positive and the bias finite.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "temperature must be finite and positive, got {}",
                self.temperature
            ));
        }
        if !self.bias.is_finite() {
            return Err(format!("bias must be finite, got {}", self.bias));
        }
        Ok(())
    }

    /// Reads `dir/sieve_calibration.json` if it exists. A file that exists but is not a valid
    /// calibration is an error rather than silently ignored (scores would change meaning).
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, RerankError> {
        let path = dir.join(CALIBRATION_FILE);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path, "calibration", Self::check).map(Some)
    }
}
