//! Line-oriented reading shared by the text-format loaders.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::EvalError;

/// Opens `path` for buffered reading, mapping failure to [`EvalError::Open`].
pub(crate) fn open(path: &Path) -> Result<BufReader<File>, EvalError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| EvalError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Calls `f(line_number, line)` for every non-blank line of `reader`.
///
/// Line numbers are 1-based and count blank lines too, so they match what an
/// editor shows. A trailing `\r` (CRLF files) is stripped; blank or
/// whitespace-only lines are skipped because they carry no record.
pub(crate) fn for_each_line<R: BufRead>(
    reader: R,
    origin: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|source| EvalError::Read {
            path: origin.to_path_buf(),
            line: number,
            source,
        })?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.trim().is_empty() {
            continue;
        }
        f(number, line)?;
    }
    Ok(())
}
