//! Pure byte codecs for every on-disk structure. No I/O here; every decoder returns
//! [`DecodeError`] on hostile bytes and never panics (indexing is denied in this module).
//!
//! All integers are little-endian. `docs/format.md` holds the byte tables these codecs mirror.

pub mod batch;
pub mod checkpoint;
pub mod control;
pub mod epoch_checkpoint;
pub mod file_name;
pub mod index;
pub mod snapshot;
pub mod txn_index;
pub mod varint;

#[cfg(test)]
mod record_decode_tests;

use std::fmt;

/// Why a byte string is not a valid encoding of the structure it was decoded as.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    TooShort {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The declared batch length is below the header size or above the allowed maximum.
    BadLength {
        /// The declared length.
        length: u64,
    },
    /// Unknown format version (magic byte).
    BadMagic {
        /// The byte found.
        magic: u8,
    },
    /// The stored checksum does not match the bytes.
    ChecksumMismatch {
        /// The checksum in the bytes.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A compression codec this build does not implement.
    UnsupportedCompression {
        /// The codec number (attribute bits 0-2).
        codec: u8,
    },
    /// A header field has an impossible value.
    BadField {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A record inside a batch is malformed.
    BadRecord {
        /// The record's index in the batch, from 0.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The records do not match the header's count or offset range.
    RecordCountMismatch {
        /// The header's record count.
        declared: u32,
        /// Records decoded.
        found: u32,
    },
    /// An all-zero region (preallocated, never written).
    Zeroes,
    /// An entry of a producer-state snapshot is malformed (index counts from 0).
    BadSnapshotEntry {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The segment file starting at `base` does not continue the chain of segments: the one
    /// before it ends at `prev_end` (offsets missing when `base > prev_end`, else overlapping).
    SegmentChain {
        /// The segment's base offset.
        base: u64,
        /// Where the previous segment ends.
        prev_end: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            DecodeError::BadLength { length } => write!(f, "impossible batch length {length}"),
            DecodeError::BadMagic { magic } => write!(f, "unknown format version {magic}"),
            DecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            DecodeError::UnsupportedCompression { codec } => {
                write!(f, "unsupported compression codec {codec}")
            }
            DecodeError::BadField { field, value } => {
                write!(f, "field {field} = {value} is invalid")
            }
            DecodeError::BadRecord { index, reason } => write!(f, "record {index}: {reason}"),
            DecodeError::RecordCountMismatch { declared, found } => {
                write!(f, "header declares {declared} records, found {found}")
            }
            DecodeError::Zeroes => write!(f, "all-zero region (preallocated, never written)"),
            DecodeError::BadSnapshotEntry { index, reason } => {
                write!(f, "producer snapshot entry {index}: {reason}")
            }
            DecodeError::SegmentChain { base, prev_end } => write!(
                f,
                "segment starts at offset {base} but the previous one ends at {prev_end} ({})",
                if base > prev_end {
                    "offsets missing"
                } else {
                    "offsets overlap"
                }
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Little-endian field readers over a slice, bounds-checked: a short slice is a `DecodeError`.
pub(crate) mod le {
    use super::DecodeError;

    fn field<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], DecodeError> {
        buf.get(at..at + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeError::TooShort {
                need: (at + N) as u64,
                have: buf.len() as u64,
            })
    }

    pub fn u8_at(buf: &[u8], at: usize) -> Result<u8, DecodeError> {
        Ok(field::<1>(buf, at)?[0])
    }
    pub fn u16_at(buf: &[u8], at: usize) -> Result<u16, DecodeError> {
        field(buf, at).map(u16::from_le_bytes)
    }
    pub fn i16_at(buf: &[u8], at: usize) -> Result<i16, DecodeError> {
        field(buf, at).map(i16::from_le_bytes)
    }
    pub fn u32_at(buf: &[u8], at: usize) -> Result<u32, DecodeError> {
        field(buf, at).map(u32::from_le_bytes)
    }
    pub fn i32_at(buf: &[u8], at: usize) -> Result<i32, DecodeError> {
        field(buf, at).map(i32::from_le_bytes)
    }
    pub fn u64_at(buf: &[u8], at: usize) -> Result<u64, DecodeError> {
        field(buf, at).map(u64::from_le_bytes)
    }
    pub fn i64_at(buf: &[u8], at: usize) -> Result<i64, DecodeError> {
        field(buf, at).map(i64::from_le_bytes)
    }
}
