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

/// Removes staging/retired siblings of `out` left by builds whose process no longer runs (a
/// retired index whose replacement never arrived is moved back to `out` instead).
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
        let retired = rest.strip_prefix(RETIRED_MARK);
        let pid = rest.strip_prefix(STAGING_MARK).or(retired);
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            // An index renamed aside by a publication that was killed before the new one took
            // its place is the only copy: put it back.
            if retired.is_some() && !out.exists() && std::fs::rename(entry.path(), out).is_ok() {
                continue;
            }
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

    /// Moves the finished index to `out`. An older index there is swapped with the new one in
    /// one atomic step (`renameat2(RENAME_EXCHANGE)` on Linux) and then deleted, so at every
    /// instant `out` is the old index or the new one, whenever the process is killed. Where the
    /// exchange is unsupported, the old index is first renamed aside; a build killed between the
    /// two renames leaves it there, and the next build or update puts it back (see
    /// [`remove_leftovers`]).
    pub(crate) fn commit(mut self, out: &Path) -> Result<(), IndexError> {
        let Some(staging) = self.path.take() else {
            return Ok(());
        };
        if out.exists() {
            match exchange(&staging, out) {
                Ok(()) => {
                    // `staging` now holds the old index.
                    let _ = std::fs::remove_dir_all(&staging);
                    return Ok(());
                }
                Err(e) if !exchange_unsupported(&e) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(IndexError::io(out)(e));
                }
                Err(_) => {}
            }
        }
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

/// Swaps two directory entries atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; renameat2 only
    // reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether `exchange` failed because the platform or file system cannot do it (then the two
/// renames are used), rather than for a reason that would fail them too.
fn exchange_unsupported(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    ) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        (400_000..u32::MAX)
            .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .unwrap_or(u32::MAX)
    }

    fn index_with(dir: &Path, content: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), content).unwrap();
    }

    #[test]
    fn publishing_over_an_index_swaps_it_and_leaves_nothing_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("idx");
        index_with(&out, "old");
        let staging = Staging::create(&out).unwrap();
        index_with(staging.path(), "new");
        staging.commit(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(),
            "new"
        );
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["idx"], "only the index is left");
    }

    #[test]
    fn an_index_renamed_aside_by_a_killed_publication_is_put_back() {
        // The two-rename fallback killed between its renames: the old index sits aside, `out` is
        // gone. The next build's staging puts it back instead of deleting the only copy.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("idx");
        let pid = dead_pid();
        index_with(&tmp.path().join(format!(".idx{RETIRED_MARK}{pid}")), "old");
        index_with(&tmp.path().join(format!(".idx{STAGING_MARK}{pid}")), "new?");
        let staging = Staging::create(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(),
            "old"
        );
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!(".idx{STAGING_MARK}{}", std::process::id()),
                "idx".to_string()
            ]
        );
        drop(staging);
    }
}
