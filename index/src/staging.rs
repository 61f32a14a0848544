//! Atomic publication of an index directory: every build or update writes into a hidden
//! staging directory beside the target and renames it into place only when complete.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::IndexError;
use crate::manifest::MANIFEST_FILE;

pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

pub(crate) fn sha256_file(path: &Path) -> Result<String, IndexError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(IndexError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                dir_size(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Refuses to replace anything that is not a sieve index or an empty directory.
pub(crate) fn check_output(out: &Path) -> Result<(), IndexError> {
    if !out.exists() {
        return Ok(());
    }
    if out.is_dir() {
        if out.join(MANIFEST_FILE).is_file() {
            return Ok(());
        }
        let empty = std::fs::read_dir(out)
            .map_err(IndexError::io(out))?
            .next()
            .is_none();
        if empty {
            return Ok(());
        }
    }
    Err(IndexError::OutputNotAnIndex(out.to_path_buf()))
}

/// A hidden directory beside the output that becomes the output on [`commit`](Self::commit) and
/// is removed if dropped before that (an error, a panic). A killed process leaves it behind;
/// the next build for the same output removes such leftovers.
pub(crate) struct Staging {
    path: Option<PathBuf>,
}

const STAGING_MARK: &str = ".sieve-tmp-";
const RETIRED_MARK: &str = ".sieve-old-";

fn sibling(out: &Path, mark: &str) -> Result<PathBuf, IndexError> {
    let name = out
        .file_name()
        .ok_or_else(|| IndexError::InvalidSetting(format!("bad output path {}", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(
        ".{}{mark}{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Removes staging/retired siblings of `out` left by builds whose process no longer runs.
fn remove_leftovers(out: &Path) {
    let (Some(name), Some(parent)) = (out.file_name(), out.parent()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest
            .strip_prefix(STAGING_MARK)
            .or_else(|| rest.strip_prefix(RETIRED_MARK));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Staging {
    pub(crate) fn create(out: &Path) -> Result<Self, IndexError> {
        remove_leftovers(out);
        let path = sibling(out, STAGING_MARK)?;
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(IndexError::io(&path))?;
        }
        std::fs::create_dir_all(&path).map_err(IndexError::io(&path))?;
        Ok(Self { path: Some(path) })
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    /// Moves the finished index to `out`. An older index there is first renamed aside and
    /// deleted after the move, so at every instant `out` is the old index, absent, or the new one.
    pub(crate) fn commit(mut self, out: &Path) -> Result<(), IndexError> {
        let Some(staging) = self.path.take() else {
            return Ok(());
        };
        let retired = if out.exists() {
            let retired = sibling(out, RETIRED_MARK)?;
            std::fs::rename(out, &retired).map_err(IndexError::io(out))?;
            Some(retired)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&staging, out) {
            // Put the old index back rather than leave nothing.
            if let Some(retired) = &retired {
                let _ = std::fs::rename(retired, out);
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(IndexError::io(out)(e));
        }
        if let Some(retired) = retired {
            let _ = std::fs::remove_dir_all(retired);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
