//! The document store: returns a document's id, title and text by ordinal.
//!
//! `docs.jsonl` holds one JSON object per document in ordinal order; `docs.offsets` holds
//! `documents + 1` little-endian u64 byte offsets into it, so a lookup is one positioned read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IndexError;

/// The document lines.
pub const DOCS_FILE: &str = "docs.jsonl";
/// Their byte offsets.
pub const OFFSETS_FILE: &str = "docs.offsets";

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDoc {
    /// The user's id.
    pub id: String,
    /// Title, empty when the corpus has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Body text.
    pub text: String,
}

/// Appends documents to a new store.
pub struct DocStoreWriter {
    docs: BufWriter<File>,
    offsets: Vec<u64>,
    dir: PathBuf,
}

impl DocStoreWriter {
    /// Creates the store files in `dir`.
    pub fn create(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(DOCS_FILE);
        let file = File::create(&path).map_err(IndexError::io(&path))?;
        Ok(Self {
            docs: BufWriter::new(file),
            offsets: vec![0],
            dir: dir.to_path_buf(),
        })
    }

    /// Appends a document; its ordinal is the number of documents appended before it.
    pub fn append(&mut self, doc: &StoredDoc) -> Result<(), IndexError> {
        let path = self.dir.join(DOCS_FILE);
        let mut line = serde_json::to_vec(doc).map_err(|e| IndexError::DocStore {
            path: path.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        self.docs.write_all(&line).map_err(IndexError::io(&path))?;
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + line.len() as u64);
        Ok(())
    }

    /// Flushes the documents and writes the offsets; returns the document count.
    pub fn finish(mut self) -> Result<usize, IndexError> {
        let path = self.dir.join(DOCS_FILE);
        self.docs.flush().map_err(IndexError::io(&path))?;
        let offsets_path = self.dir.join(OFFSETS_FILE);
        let bytes: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        std::fs::write(&offsets_path, bytes).map_err(IndexError::io(&offsets_path))?;
        Ok(self.offsets.len() - 1)
    }
}

/// A read-only document store.
pub struct DocStore {
    file: File,
    offsets: Vec<u64>,
    path: PathBuf,
}

impl DocStore {
    /// Opens the store in `dir`, checking the offsets against the file size.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(DOCS_FILE);
        let offsets_path = dir.join(OFFSETS_FILE);
        let raw = std::fs::read(&offsets_path).map_err(IndexError::io(&offsets_path))?;
        let bad = |message: String| IndexError::DocStore {
            path: path.clone(),
            message,
        };
        if raw.len() % 8 != 0 || raw.is_empty() {
            return Err(bad(format!(
                "{OFFSETS_FILE} has a bad size ({} bytes)",
                raw.len()
            )));
        }
        let offsets: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let size = file.metadata().map_err(IndexError::io(&path))?.len();
        if offsets.last().copied() != Some(size) || offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad(format!(
                "offsets do not match the file ({} bytes)",
                size
            )));
        }
        Ok(Self {
            file,
            offsets,
            path,
        })
    }

    /// The number of documents.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads document `ordinal`.
    pub fn get(&self, ordinal: u32) -> Result<StoredDoc, IndexError> {
        let i = ordinal as usize;
        let (start, end) = match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&s), Some(&e)) => (s, e),
            _ => {
                return Err(IndexError::DocStore {
                    path: self.path.clone(),
                    message: format!(
                        "no document with ordinal {ordinal} (store has {})",
                        self.len()
                    ),
                });
            }
        };
        let mut buf = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(IndexError::io(&self.path))?;
        serde_json::from_slice(&buf).map_err(|e| IndexError::DocStore {
            path: self.path.clone(),
            message: format!("document {ordinal}: {e}"),
        })
    }
}
