//! Content checks of the index files whose readers trust their input.
//!
//! tantivy's segment readers and hnsw_rs's graph loader assume well-formed files: on damaged ones
//! they may panic, allocate what a corrupt length field says (aborting the process), or exit it.
//! So a build records the size and SHA-256 of every such file in the manifest
//! (`checked_files`), and [`verify`] compares them before those readers see the files: a damaged
//! index is refused with a clear error. The files sieve reads itself (document store, vectors,
//! rerank states) are checked structurally as they are read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IndexError;
use crate::dense::GRAPH_FILES;
use crate::staging::sha256_file;

/// Size and SHA-256 of one index file, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Path relative to the index directory (`/`-separated).
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The digests of the files to check in the index being written in `dir`: the HNSW graph files
/// and every file of the tantivy index (lock files aside).
pub(crate) fn checked_files(dir: &Path) -> Result<Vec<FileDigest>, IndexError> {
    let mut files: Vec<String> = GRAPH_FILES.iter().map(|f| f.to_string()).collect();
    let bm25 = dir.join("bm25");
    let mut names: Vec<String> = std::fs::read_dir(&bm25)
        .map_err(IndexError::io(&bm25))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    files.extend(names.into_iter().map(|n| format!("bm25/{n}")));
    files
        .into_iter()
        .map(|file| {
            let path = dir.join(&file);
            let bytes = std::fs::metadata(&path)
                .map_err(IndexError::io(&path))?
                .len();
            Ok(FileDigest {
                sha256: sha256_file(&path)?,
                file,
                bytes,
            })
        })
        .collect()
}

/// Checks the files of the index in `dir` against `expected`: present, same size, same content.
pub fn verify(dir: &Path, expected: &[FileDigest]) -> Result<(), IndexError> {
    for digest in expected {
        let path: PathBuf = dir.join(&digest.file);
        let damaged = |what: String| IndexError::Damaged {
            path: path.clone(),
            message: what,
        };
        let bytes = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return Err(damaged("missing".into())),
        };
        if bytes != digest.bytes {
            return Err(damaged(format!(
                "{bytes} bytes, the manifest recorded {}",
                digest.bytes
            )));
        }
        if sha256_file(&path)? != digest.sha256 {
            return Err(damaged(
                "content differs from the SHA-256 the manifest recorded".into(),
            ));
        }
    }
    Ok(())
}
