//! File names: the 20-digit, zero-padded base offset plus a suffix, so `ls` sorts numerically
//! (Kafka's `LogFileUtils`). One pair of functions builds and parses every name.

use crate::types::Offset;

/// Digits in a file name's offset.
pub const OFFSET_WIDTH: usize = 20;

/// The kinds of per-offset files in a log directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Segment data: concatenated batches (`.log`).
    Log,
    /// Sparse offset index (`.index`).
    Index,
    /// Sparse time index (`.timeindex`).
    TimeIndex,
    /// Producer-state snapshot (`.snapshot`).
    Snapshot,
    /// A segment's aborted and open transactions (`.txnindex`, `format::txn_index`).
    TxnIndex,
}

impl FileKind {
    /// Every kind of per-segment file, in a fixed order.
    pub const ALL: [FileKind; 5] = [
        FileKind::Log,
        FileKind::Index,
        FileKind::TimeIndex,
        FileKind::Snapshot,
        FileKind::TxnIndex,
    ];

    /// The file name's suffix, dot included (`.log`, `.index`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Log => ".log",
            FileKind::Index => ".index",
            FileKind::TimeIndex => ".timeindex",
            FileKind::Snapshot => ".snapshot",
            FileKind::TxnIndex => ".txnindex",
        }
    }
}

/// `00000000000000000042.log` for `(Offset(42), FileKind::Log)`.
pub fn file_name(offset: Offset, kind: FileKind) -> String {
    format!(
        "{:0width$}{}",
        offset.0,
        kind.suffix(),
        width = OFFSET_WIDTH
    )
}

/// The inverse of [`file_name`]; `None` for any other name (temp files included).
pub fn parse_file_name(name: &str) -> Option<(Offset, FileKind)> {
    let kind = FileKind::ALL
        .into_iter()
        .find(|k| name.ends_with(k.suffix()))?;
    let digits = name.strip_suffix(kind.suffix())?;
    if digits.len() != OFFSET_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|o| (Offset(o), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        for kind in FileKind::ALL {
            for o in [0u64, 1, 42, 9_999_999_999, u64::MAX >> 1] {
                let name = file_name(Offset(o), kind);
                assert_eq!(name.len(), OFFSET_WIDTH + kind.suffix().len());
                assert_eq!(parse_file_name(&name), Some((Offset(o), kind)));
            }
        }
        assert!(file_name(Offset(9), FileKind::Log) < file_name(Offset(10), FileKind::Log));
    }

    #[test]
    fn other_names_are_rejected() {
        for name in [
            "0.log",
            "0000000000000000000a.log",
            "00000000000000000000.log.tmp",
            "LOCK",
            "00000000000000000000.txt",
            "+0000000000000000001.log",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }
}
