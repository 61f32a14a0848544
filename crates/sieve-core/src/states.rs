//! Precomputed document states for late-joined rerankers.
//!
//! A late-joined reranker (sieve-ce v2) reads, for every document, the bi-encoder's last hidden
//! state of each token, compressed by the model's state codec to `rank` int8 codes plus one
//! scale per token, and the document's pooled dense vector. The index stores them so that a
//! rerank need not run the document tower at query time; [`DocStates`] is that record.

/// A document's compressed token states and pooled vector, as the index stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct DocStates {
    /// The pooled, L2-normalised document vector (the bi-encoder's dense embedding).
    pub vector: Vec<f32>,
    /// Per-token codes, `tokens × rank`, row-major.
    pub codes: Vec<i8>,
    /// One dequantisation scale per token: code value × scale = the codec coordinate.
    pub scales: Vec<f32>,
    /// Codes per token (the codec's rank).
    pub rank: usize,
}

/// Why bytes could not be read back as [`DocStates`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document states record is malformed: {0}")]
pub struct StatesFormatError(pub String);

const HEADER: usize = 12;

impl DocStates {
    /// How many tokens the record holds.
    pub fn tokens(&self) -> usize {
        self.scales.len()
    }

    /// Writes the dequantised codes (`tokens × rank` floats) into `out`, which must hold exactly
    /// that many.
    pub fn dequantise_into(&self, out: &mut [f32]) {
        for ((row, codes), &scale) in out
            .chunks_exact_mut(self.rank.max(1))
            .zip(self.codes.chunks_exact(self.rank.max(1)))
            .zip(&self.scales)
        {
            for (o, &c) in row.iter_mut().zip(codes) {
                *o = f32::from(c) * scale;
            }
        }
    }

    /// Bytes of the token part (codes and scales) per token: what the index pays per token.
    pub fn bytes_per_token(&self) -> usize {
        self.rank + 4
    }

    /// Serialises the record (little-endian): `tokens, rank, dim` as u32, the vector, the scales,
    /// the codes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER + 4 * (self.vector.len() + self.scales.len()) + self.codes.len(),
        );
        for n in [self.tokens(), self.rank, self.vector.len()] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for x in self.vector.iter().chain(&self.scales) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(self.codes.iter().map(|&c| c as u8));
        out
    }

    /// Reads a record written by [`to_bytes`](Self::to_bytes), checking every length and that
    /// all floats are finite.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatesFormatError> {
        let err = |m: String| StatesFormatError(m);
        if bytes.len() < HEADER {
            return Err(err(format!(
                "{} bytes, shorter than its header",
                bytes.len()
            )));
        }
        let u = |i: usize| {
            u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
        };
        let (tokens, rank, dim) = (u(0), u(4), u(8));
        let floats = tokens
            .checked_add(dim)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| err("sizes overflow".into()))?;
        let want = tokens
            .checked_mul(rank)
            .and_then(|c| c.checked_add(floats))
            .and_then(|n| n.checked_add(HEADER))
            .ok_or_else(|| err("sizes overflow".into()))?;
        if bytes.len() != want {
            return Err(err(format!(
                "{} bytes, but {tokens} tokens × rank {rank} with a {dim}-d vector need {want}",
                bytes.len()
            )));
        }
        let f = |i: usize| {
            let o = HEADER + 4 * i;
            f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
        };
        let vector: Vec<f32> = (0..dim).map(f).collect();
        let scales: Vec<f32> = (dim..dim + tokens).map(f).collect();
        if vector.iter().chain(&scales).any(|x| !x.is_finite()) {
            return Err(err("a vector value or scale is not finite".into()));
        }
        let codes = bytes[HEADER + floats..].iter().map(|&b| b as i8).collect();
        Ok(Self {
            vector,
            codes,
            scales,
            rank,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DocStates {
        DocStates {
            vector: vec![0.6, 0.8],
            codes: vec![1, -2, 127, -127, 0, 5],
            scales: vec![0.5, 0.25, 2.0],
            rank: 2,
        }
    }

    #[test]
    fn records_round_trip_and_dequantise() {
        let s = sample();
        let back = DocStates::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        let mut out = vec![0f32; 6];
        s.dequantise_into(&mut out);
        assert_eq!(out, vec![0.5, -1.0, 31.75, -31.75, 0.0, 10.0]);
        assert_eq!(s.bytes_per_token(), 6);
    }

    #[test]
    fn truncated_or_corrupt_records_are_refused() {
        let bytes = sample().to_bytes();
        for cut in [0, 5, 12, bytes.len() - 1] {
            assert!(
                DocStates::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut nan = bytes.clone();
        nan[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(
            DocStates::from_bytes(&nan)
                .unwrap_err()
                .0
                .contains("finite")
        );
        let mut huge = bytes;
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(DocStates::from_bytes(&huge).is_err());
    }
}
