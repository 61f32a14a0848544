//! Finding the bundled model when the user names none.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Resolves the bi-encoder model directory: the user's choice, else `$SIEVE_MODEL_DIR`, else the
/// bundled `models/all-MiniLM-L6-v2` found beside the executable or the current directory (or
/// one of their ancestors, which covers `target/release/sieve` in a checkout).
pub fn embedder_model(explicit: Option<&Path>) -> Result<PathBuf> {
    resolve(explicit, "SIEVE_MODEL_DIR", sieve::DEFAULT_EMBEDDER, "model")?.ok_or_else(|| {
        anyhow::anyhow!(
            "the bundled embedding model ({}) was not found beside the executable or in the current \
             directory; pass --model DIR or set SIEVE_MODEL_DIR",
            sieve::DEFAULT_EMBEDDER
        )
    })
}

/// The default reranker model directory, relative to the repository root.
pub const DEFAULT_RERANKER: &str = "models/sieve-ce-minilm-l6-lj";

/// Resolves the cross-encoder model directory: the user's choice, else `$SIEVE_RERANKER_DIR`,
/// else the bundled default.
pub fn reranker_model(explicit: Option<&Path>) -> Result<PathBuf> {
    resolve(
        explicit,
        "SIEVE_RERANKER_DIR",
        DEFAULT_RERANKER,
        "reranker model",
    )?
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no default reranker: {DEFAULT_RERANKER} is not in this checkout; pass --reranker DIR \
             (a Hugging Face-layout cross-encoder ONNX export: model.onnx + tokenizer.json) or set \
             SIEVE_RERANKER_DIR"
        )
    })
}

/// The state codec `sieve index` stores rerank states with. `off`: none. `auto`: the default
/// reranker's (`$SIEVE_RERANKER_DIR` or the bundled one) when it is a late-joined model whose
/// towers are this embedder, else none. A directory: that reranker's, which must be late-joined
/// and built on this embedder.
pub fn rerank_codec(choice: &str, embedder_model: &Path) -> Result<Option<PathBuf>> {
    let (dir, explicit) = match choice {
        "off" | "none" => return Ok(None),
        "auto" => match reranker_model(None) {
            Ok(dir) => (dir, false),
            Err(_) => return Ok(None),
        },
        dir => (PathBuf::from(dir), true),
    };
    let Some((codec, tower_sha)) = sieve_rerank_onnx::state_codec_of(&dir)? else {
        if explicit {
            bail!(
                "--rerank-states {}: not a late-joined reranker (no {})",
                dir.display(),
                sieve_rerank_onnx::LATE_JOINED_FILE
            );
        }
        return Ok(None);
    };
    let onnx = sieve_embed::find_onnx_model(embedder_model)?;
    let sha = sieve_embed::sha256_file(&onnx)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", onnx.display()))?;
    if sha != tower_sha {
        if explicit {
            bail!(
                "--rerank-states {}: its towers are the bi-encoder with sha256 {tower_sha}, but \
                 this index embeds with {} (sha256 {sha}); its states would not fit",
                dir.display(),
                onnx.display()
            );
        }
        return Ok(None);
    }
    Ok(Some(codec))
}

/// The bundled sample corpus (`examples/sample/corpus.parquet`), when this checkout has it.
pub fn sample_corpus() -> Option<PathBuf> {
    bundled("examples/sample/corpus.parquet")
}

/// An explicit path (which must exist), else the environment variable, else the bundled
/// directory; `None` when nothing was given and the bundled directory is absent.
fn resolve(
    explicit: Option<&Path>,
    env_var: &str,
    relative: &str,
    what: &str,
) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        if !path.exists() {
            bail!("{what} not found: {}", path.display());
        }
        return Ok(Some(path.to_path_buf()));
    }
    if let Some(dir) = std::env::var_os(env_var) {
        return Ok(Some(PathBuf::from(dir)));
    }
    Ok(bundled(relative))
}

/// Finds `relative` (a path inside the repository) beside the executable or the current
/// directory, or one of their ancestors (covers `target/release/sieve` in a checkout).
fn bundled(relative: &str) -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        starts.push(dir.to_path_buf());
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    starts
        .iter()
        .flat_map(|start| start.ancestors())
        .map(|dir| dir.join(relative))
        .find(|candidate| candidate.exists())
}
