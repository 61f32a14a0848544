//! The state codec of a late-joined reranker: how a document's token states are compressed for
//! the index.
//!
//! Each token's last hidden state `h` (the bi-encoder's, `dim` floats) becomes `rank` codes
//! `c = P (h − mean)` — its coordinates along the codec's principal directions `P` (`rank × dim`,
//! fitted on training documents) — stored as int8 with one float scale per token
//! (`max |c| / 127`). The reranker's joint blocks read the dequantised codes directly (the
//! directions are folded into their key/value projections), so `rank + 4` bytes per token is all
//! the index stores.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sieve_core::DocStates;

use crate::{EmbedError, TokenStates};

const MAGIC: &[u8; 8] = b"SVSCODE1";

/// The sha256 of a file, hex (how models and codecs are identified in manifests).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(format!("{:x}", Sha256::digest(std::fs::read(path)?)))
}

/// A loaded state codec (`state_codec.bin`: magic `SVSCODE1`, u32 `dim`, u32 `rank`, then `mean`
/// and `P` as little-endian f32).
#[derive(Debug, Clone)]
pub struct StateCodec {
    dim: usize,
    rank: usize,
    mean: Vec<f32>,
    directions: Vec<f32>,
    id: String,
    path: PathBuf,
}

impl StateCodec {
    /// Reads and checks a codec file; its sha256 becomes the codec's [`id`](Self::id).
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        let bad = |message: String| EmbedError::UnsupportedModel {
            path: path.to_path_buf(),
            message,
        };
        let bytes =
            std::fs::read(path).map_err(|e| bad(format!("cannot read state codec: {e}")))?;
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a state codec (bad magic)".into()));
        }
        let u = |i: usize| {
            u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
        };
        let (dim, rank) = (u(8), u(12));
        if dim == 0 || rank == 0 || rank > dim {
            return Err(bad(format!("state codec has dim {dim}, rank {rank}")));
        }
        let floats = dim * (rank + 1);
        if bytes.len() != 16 + 4 * floats {
            return Err(bad(format!(
                "state codec is {} bytes; dim {dim} and rank {rank} need {}",
                bytes.len(),
                16 + 4 * floats
            )));
        }
        let values: Vec<f32> = bytes[16..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().any(|x| !x.is_finite()) {
            return Err(bad("state codec holds a value that is not finite".into()));
        }
        let id = format!("{:x}", Sha256::digest(&bytes));
        Ok(Self {
            dim,
            rank,
            mean: values[..dim].to_vec(),
            directions: values[dim..].to_vec(),
            id,
            path: path.to_path_buf(),
        })
    }

    /// The token state dimension the codec expects.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Codes per token.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The sha256 of the codec file: indexes record it, and states made with another codec are
    /// never mixed in.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The codec file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compresses one text's token states (from [`crate::BiEncoder::embed_token_states`]).
    pub fn encode(&self, states: &TokenStates) -> Result<DocStates, EmbedError> {
        if states.states.len() != states.tokens * self.dim || states.vector.len() != self.dim {
            return Err(EmbedError::Run(format!(
                "token states of {} values for {} tokens do not fit the codec's dimension {}",
                states.states.len(),
                states.tokens,
                self.dim
            )));
        }
        // One matrix product for all tokens: (states - mean) · directionsᵀ → [tokens, rank].
        let mut centred =
            ndarray::Array2::from_shape_vec((states.tokens, self.dim), states.states.clone())
                .map_err(|e| EmbedError::Run(e.to_string()))?;
        let mean = ndarray::ArrayView1::from(&self.mean[..]);
        centred -= &mean;
        let directions =
            ndarray::ArrayView2::from_shape((self.rank, self.dim), &self.directions[..])
                .map_err(|e| EmbedError::Run(e.to_string()))?;
        let coords = centred.dot(&directions.t());
        let mut codes = Vec::with_capacity(states.tokens * self.rank);
        let mut scales = Vec::with_capacity(states.tokens);
        for row in coords.rows() {
            let max = row.iter().fold(0f32, |m, c| m.max(c.abs()));
            let scale = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            };
            scales.push(scale);
            codes.extend(
                row.iter()
                    .map(|c| (c / scale).round_ties_even().clamp(-127.0, 127.0) as i8),
            );
        }
        Ok(DocStates {
            vector: states.vector.clone(),
            codes,
            scales,
            rank: self.rank,
        })
    }

    /// Writes a codec file (used by tests and tools; the recipe writes the same layout).
    pub fn write(path: &Path, mean: &[f32], directions: &[f32]) -> std::io::Result<()> {
        let dim = mean.len();
        let rank = directions.len() / dim.max(1);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(dim as u32).to_le_bytes());
        bytes.extend_from_slice(&(rank as u32).to_le_bytes());
        for x in mean.iter().chain(directions) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_quantised_coordinates() {
        let dir = std::env::temp_dir().join(format!("sieve-codec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state_codec.bin");
        // dim 3, rank 2: directions e0 and e2, mean (1, 0, 0).
        StateCodec::write(&path, &[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        let codec = StateCodec::open(&path).unwrap();
        assert_eq!((codec.dim(), codec.rank()), (3, 2));
        let states = TokenStates {
            vector: vec![1.0, 0.0, 0.0],
            states: vec![3.0, 9.0, -1.0, 1.0, 5.0, 0.0],
            tokens: 2,
        };
        let enc = codec.encode(&states).unwrap();
        assert_eq!(enc.codes, vec![127, -64, 0, 0]);
        assert!((enc.scales[0] - 2.0 / 127.0).abs() < 1e-7);
        assert_eq!(enc.scales[1], 1.0);
        std::fs::write(&path, b"SVSCODE1\x03\0\0\0\x02\0\0\0").unwrap();
        assert!(
            StateCodec::open(&path)
                .unwrap_err()
                .to_string()
                .contains("need")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
