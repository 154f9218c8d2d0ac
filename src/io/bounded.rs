//! Reading a whole file that should be small, without trusting it to be: at most `limit` bytes
//! are read, and a file with more (or one that never ends, such as `/dev/zero` or a pipe that
//! keeps writing) is refused after reading one byte past the limit. Memory follows the bytes
//! read, never a size the file reports.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// Why [`read_bounded`] returned no contents.
#[derive(Debug)]
pub enum BoundedReadError {
    /// The file holds more than `limit` bytes; only `limit + 1` were read.
    TooLarge {
        /// The largest size accepted, in bytes.
        limit: u64,
    },
    /// Opening or reading failed.
    Io(io::Error),
}

impl fmt::Display for BoundedReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundedReadError::TooLarge { limit } => write!(f, "larger than {limit} bytes"),
            BoundedReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BoundedReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BoundedReadError::Io(e) => Some(e),
            BoundedReadError::TooLarge { .. } => None,
        }
    }
}

/// The contents of `path` if it holds at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BoundedReadError> {
    let file = std::fs::File::open(path).map_err(BoundedReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(BoundedReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_and_endless_ones_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_bounded(&p, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_bounded(&p, 9),
            Err(BoundedReadError::TooLarge { limit: 9 })
        ));
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            assert!(matches!(
                read_bounded(zero, 4096),
                Err(BoundedReadError::TooLarge { limit: 4096 })
            ));
        }
        assert!(matches!(
            read_bounded(&dir.path().join("missing"), 1),
            Err(BoundedReadError::Io(_))
        ));
    }
}
