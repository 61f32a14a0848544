//! Finding the bundled model when the user names none.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Resolves the bi-encoder model directory: the user's choice, else `$SIEVE_MODEL_DIR`, else the
/// bundled `models/all-MiniLM-L6-v2` found beside the executable or the current directory (or
/// one of their ancestors, which covers `target/release/sieve` in a checkout).
pub fn embedder_model(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.exists() {
            bail!("model not found: {}", path.display());
        }
        return Ok(path.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("SIEVE_MODEL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        starts.push(dir.to_path_buf());
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(sieve::DEFAULT_EMBEDDER);
            if candidate.is_dir() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "the bundled embedding model ({}) was not found beside the executable or in the current \
         directory; pass --model DIR or set SIEVE_MODEL_DIR",
        sieve::DEFAULT_EMBEDDER
    )
}
