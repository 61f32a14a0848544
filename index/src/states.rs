//! The rerank state store: each document's compressed token states for a late-joined reranker.
//!
//! `rerank_states.bin` holds one [`DocStates`] record per document in ordinal order
//! ([`DocStates::to_bytes`]); `rerank_states.offsets` holds `documents + 1` little-endian u64
//! byte offsets into it. Both are written in the build's staging directory, so the store is
//! published (or not) together with the rest of the index. The manifest records which codec made
//! the codes ([`RerankStatesInfo`]); a reranker with another codec never gets them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_core::DocStates;

use crate::IndexError;

/// The records file.
pub const STATES_FILE: &str = "rerank_states.bin";
/// The offsets file.
pub const OFFSETS_FILE: &str = "rerank_states.offsets";

/// What the manifest says about an index's state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankStatesInfo {
    /// The codec file the states were compressed with (absolute path when written).
    pub codec: PathBuf,
    /// Its sha256: rerankers compare it with their own codec's.
    pub codec_sha256: String,
    /// Codes per token.
    pub rank: usize,
    /// Tokens stored, over all documents.
    pub tokens: u64,
    /// Bytes of the records file.
    pub bytes: u64,
    /// Bytes stored per token (codes + scale), the store's price.
    pub bytes_per_token: usize,
}

/// Writes the store during a build.
pub struct StateStoreWriter {
    file: BufWriter<File>,
    path: PathBuf,
    offsets: Vec<u64>,
    tokens: u64,
}

impl StateStoreWriter {
    /// Creates the records file in `dir`.
    pub fn create(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(STATES_FILE);
        let file = File::create(&path).map_err(IndexError::io(&path))?;
        Ok(Self {
            file: BufWriter::new(file),
            path,
            offsets: vec![0],
            tokens: 0,
        })
    }

    /// Appends the next document's record.
    pub fn append(&mut self, states: &DocStates) -> Result<(), IndexError> {
        let bytes = states.to_bytes();
        self.file
            .write_all(&bytes)
            .map_err(IndexError::io(&self.path))?;
        let end = self.offsets.last().copied().unwrap_or(0) + bytes.len() as u64;
        self.offsets.push(end);
        self.tokens += states.tokens() as u64;
        Ok(())
    }

    /// Flushes both files; returns (documents, tokens, bytes).
    pub fn finish(mut self) -> Result<(usize, u64, u64), IndexError> {
        self.file.flush().map_err(IndexError::io(&self.path))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(IndexError::io(&self.path))?;
        let offsets_path = self.path.with_file_name(OFFSETS_FILE);
        let bytes: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        std::fs::write(&offsets_path, bytes).map_err(IndexError::io(&offsets_path))?;
        let total = self.offsets.last().copied().unwrap_or(0);
        Ok((self.offsets.len() - 1, self.tokens, total))
    }
}

/// An opened state store: offsets in memory, records read on demand.
pub struct StateStore {
    file: File,
    path: PathBuf,
    offsets: Vec<u64>,
    /// What the manifest says about it.
    pub info: RerankStatesInfo,
}

impl StateStore {
    /// Opens the store of an index with `documents` documents, checking the offsets against the
    /// records file.
    pub fn open(dir: &Path, documents: usize, info: RerankStatesInfo) -> Result<Self, IndexError> {
        let path = dir.join(STATES_FILE);
        let bad = |message: String| IndexError::BadManifest {
            path: path.clone(),
            message,
        };
        let offsets_path = dir.join(OFFSETS_FILE);
        let raw = std::fs::read(&offsets_path).map_err(IndexError::io(&offsets_path))?;
        if raw.len() != 8 * (documents + 1) {
            return Err(bad(format!(
                "{} holds {} bytes of offsets; {documents} documents need {}",
                offsets_path.display(),
                raw.len(),
                8 * (documents + 1)
            )));
        }
        let offsets: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let len = file.metadata().map_err(IndexError::io(&path))?.len();
        if offsets.windows(2).any(|w| w[1] < w[0]) || offsets.last() != Some(&len) {
            return Err(bad(format!(
                "offsets do not fit the {len}-byte records file (truncated or rewritten?)"
            )));
        }
        Ok(Self {
            file,
            path,
            offsets,
            info,
        })
    }

    /// The states of document `ordinal`.
    pub fn get(&self, ordinal: u32) -> Result<DocStates, IndexError> {
        let i = ordinal as usize;
        let (Some(&start), Some(&end)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return Err(IndexError::InvalidSetting(format!(
                "document ordinal {ordinal} is outside the state store"
            )));
        };
        let mut buf = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(IndexError::io(&self.path))?;
        DocStates::from_bytes(&buf).map_err(|e| IndexError::BadManifest {
            path: self.path.clone(),
            message: format!("document {ordinal}: {e}"),
        })
    }
}
