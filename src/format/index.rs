//! Sparse offset and time index files.
//!
//! ```text
//! Format: { magic "OLIX" | version u8 | kind u8 | reserved u16 | base_offset u64 |
//!           log_length u64 | last_batch_crc u32 | entry_count u32 | crc u32 | entries }
//! offset entry (8 B):  { relative_offset u32 | position u32 }
//! time entry   (12 B): { timestamp i64 | relative_offset u32 }
//! ```
//!
//! The CRC-32 covers the header bytes before it and every entry. Kafka's indexes carry no
//! checksum and are trusted by length; ours are verified, and a mismatch means "rebuild".
//! `log_length` and `last_batch_crc` bind an index to the exact log file it describes: a
//! checksum-valid index left over from another file with the same base offset (a stale copy,
//! a truncated-and-regrown segment) does not match and is rebuilt.
//! Index files are written whole when a segment is sealed or the log closes cleanly.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use super::{le, DecodeError};

/// The magic bytes every such file starts with.
pub const MAGIC: [u8; 4] = *b"OLIX";
/// The format version this build writes.
pub const VERSION: u8 = 1;
/// Byte position of the `magic` field in the file.
pub const MAGIC_OFFSET: usize = 0;
/// Byte position of the `version` field in the file.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
/// Byte position of the `kind` field in the file.
pub const KIND_OFFSET: usize = VERSION_OFFSET + 1;
/// Byte position of the `base_offset` field in the file.
pub const BASE_OFFSET_OFFSET: usize = KIND_OFFSET + 1 + 2;
/// Byte position of the `log_length` field in the file.
pub const LOG_LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
/// Byte position of the `last_batch_crc` field in the file.
pub const LAST_BATCH_CRC_OFFSET: usize = LOG_LENGTH_OFFSET + 8;
/// Byte position of the `count` field in the file.
pub const COUNT_OFFSET: usize = LAST_BATCH_CRC_OFFSET + 4;
/// Byte position of the `crc` field in the file.
pub const CRC_OFFSET: usize = COUNT_OFFSET + 4;
/// Byte position of the first entry (the header's end).
pub const ENTRIES_OFFSET: usize = CRC_OFFSET + 4;
const _: () = assert!(ENTRIES_OFFSET == 36);

/// The log file an index describes: its length and the checksum of its last batch (0 if empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexBinding {
    /// Length in bytes of the `.log` file the index describes.
    pub log_length: u64,
    /// CRC of the segment's last batch (0 for an empty segment).
    pub last_batch_crc: u32,
}

/// Bytes of one offset-index entry (relative offset u32, position u32).
pub const OFFSET_ENTRY_SIZE: usize = 8;
/// Bytes of one time-index entry (timestamp i64, relative offset u32).
pub const TIME_ENTRY_SIZE: usize = 12;

/// Which index a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// An offset index (`.index`): [`OffsetEntry`] per entry.
    Offset = 0,
    /// A time index (`.timeindex`): [`TimeEntry`] per entry.
    Time = 1,
}

/// `relative offset -> byte position` of the batch starting there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// The batch's base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// The batch's byte position in the segment file.
    pub position: u32,
}

/// `max timestamp so far -> relative offset` of the batch that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest record timestamp (ms) up to and including the batch.
    pub timestamp: i64,
    /// The batch's base offset minus the segment's base offset.
    pub relative_offset: u32,
}

fn encode_header(
    out: &mut Vec<u8>,
    kind: IndexKind,
    base_offset: u64,
    bind: IndexBinding,
    count: u32,
) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&bind.log_length.to_le_bytes());
    out.extend_from_slice(&bind.last_batch_crc.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(out.get(..CRC_OFFSET).unwrap_or(&[]));
    h.update(out.get(ENTRIES_OFFSET..).unwrap_or(&[]));
    let crc = h.finalize().to_le_bytes();
    if let Some(dst) = out.get_mut(CRC_OFFSET..ENTRIES_OFFSET) {
        dst.copy_from_slice(&crc);
    }
    out
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Encodes an offset index file for the segment at `base_offset`, bound to `bind`.
pub fn encode_offset_index(
    base_offset: u64,
    bind: IndexBinding,
    entries: &[OffsetEntry],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRIES_OFFSET + entries.len() * OFFSET_ENTRY_SIZE);
    encode_header(
        &mut out,
        IndexKind::Offset,
        base_offset,
        bind,
        count_u32(entries.len()),
    );
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_le_bytes());
        out.extend_from_slice(&e.position.to_le_bytes());
    }
    seal(out)
}

/// Encodes a time index file for the segment at `base_offset`, bound to `bind`.
pub fn encode_time_index(base_offset: u64, bind: IndexBinding, entries: &[TimeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRIES_OFFSET + entries.len() * TIME_ENTRY_SIZE);
    encode_header(
        &mut out,
        IndexKind::Time,
        base_offset,
        bind,
        count_u32(entries.len()),
    );
    for e in entries {
        out.extend_from_slice(&e.timestamp.to_le_bytes());
        out.extend_from_slice(&e.relative_offset.to_le_bytes());
    }
    seal(out)
}

/// Checks magic, version, kind, base offset, length and checksum; returns the binding and the
/// entry bytes.
fn open(
    buf: &[u8],
    kind: IndexKind,
    base_offset: u64,
    entry: usize,
) -> Result<(IndexBinding, &[u8]), DecodeError> {
    let magic = buf.get(..4).ok_or(DecodeError::TooShort {
        need: ENTRIES_OFFSET as u64,
        have: buf.len() as u64,
    })?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            magic: magic.first().copied().unwrap_or(0),
        });
    }
    let version = le::u8_at(buf, VERSION_OFFSET)?;
    if version != VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let found_kind = le::u8_at(buf, KIND_OFFSET)?;
    if found_kind != kind as u8 {
        return Err(DecodeError::BadField {
            field: "index kind",
            value: i64::from(found_kind),
        });
    }
    let reserved = le::u16_at(buf, KIND_OFFSET + 1)?;
    if reserved != 0 {
        return Err(DecodeError::BadField {
            field: "index reserved",
            value: i64::from(reserved),
        });
    }
    let found_base = le::u64_at(buf, BASE_OFFSET_OFFSET)?;
    if found_base != base_offset {
        return Err(DecodeError::BadField {
            field: "base_offset",
            value: found_base as i64,
        });
    }
    let count = le::u32_at(buf, COUNT_OFFSET)? as usize;
    let stored = le::u32_at(buf, CRC_OFFSET)?;
    let need = count
        .checked_mul(entry)
        .and_then(|n| n.checked_add(ENTRIES_OFFSET));
    if need != Some(buf.len()) {
        return Err(DecodeError::BadLength {
            length: buf.len() as u64,
        });
    }
    let entries = buf.get(ENTRIES_OFFSET..).unwrap_or(&[]);
    let mut h = crc32fast::Hasher::new();
    h.update(buf.get(..CRC_OFFSET).unwrap_or(&[]));
    h.update(entries);
    let computed = h.finalize();
    if computed != stored {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let bind = IndexBinding {
        log_length: le::u64_at(buf, LOG_LENGTH_OFFSET)?,
        last_batch_crc: le::u32_at(buf, LAST_BATCH_CRC_OFFSET)?,
    };
    Ok((bind, entries))
}

/// Decodes an offset index; entries must be strictly increasing in offset and position.
pub fn decode_offset_index(
    buf: &[u8],
    base_offset: u64,
) -> Result<(IndexBinding, Vec<OffsetEntry>), DecodeError> {
    let (bind, raw) = open(buf, IndexKind::Offset, base_offset, OFFSET_ENTRY_SIZE)?;
    let mut out: Vec<OffsetEntry> = Vec::with_capacity(raw.len() / OFFSET_ENTRY_SIZE);
    for chunk in raw.chunks_exact(OFFSET_ENTRY_SIZE) {
        let e = OffsetEntry {
            relative_offset: le::u32_at(chunk, 0)?,
            position: le::u32_at(chunk, 4)?,
        };
        if let Some(prev) = out.last() {
            if e.relative_offset <= prev.relative_offset || e.position <= prev.position {
                return Err(DecodeError::BadField {
                    field: "offset index order",
                    value: i64::from(e.relative_offset),
                });
            }
        }
        out.push(e);
    }
    Ok((bind, out))
}

/// Decodes a time index; timestamps strictly increase, offsets never decrease.
pub fn decode_time_index(
    buf: &[u8],
    base_offset: u64,
) -> Result<(IndexBinding, Vec<TimeEntry>), DecodeError> {
    let (bind, raw) = open(buf, IndexKind::Time, base_offset, TIME_ENTRY_SIZE)?;
    let mut out: Vec<TimeEntry> = Vec::with_capacity(raw.len() / TIME_ENTRY_SIZE);
    for chunk in raw.chunks_exact(TIME_ENTRY_SIZE) {
        let e = TimeEntry {
            timestamp: le::i64_at(chunk, 0)?,
            relative_offset: le::u32_at(chunk, 8)?,
        };
        if let Some(prev) = out.last() {
            if e.timestamp <= prev.timestamp || e.relative_offset < prev.relative_offset {
                return Err(DecodeError::BadField {
                    field: "time index order",
                    value: e.timestamp,
                });
            }
        }
        out.push(e);
    }
    Ok((bind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_index_round_trips_and_detects_damage() {
        let entries: Vec<OffsetEntry> = (1..50)
            .map(|i| OffsetEntry {
                relative_offset: i * 3,
                position: i * 4096,
            })
            .collect();
        let bind = IndexBinding {
            log_length: 123_456,
            last_batch_crc: 0xdead_beef,
        };
        let bytes = encode_offset_index(77, bind, &entries);
        assert_eq!(decode_offset_index(&bytes, 77).unwrap(), (bind, entries));
        assert!(
            decode_offset_index(&bytes, 78).is_err(),
            "wrong base offset"
        );
        assert!(decode_time_index(&bytes, 77).is_err(), "wrong kind");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_offset_index(&bad, 77).is_err(),
                "flip at {i} not detected"
            );
        }
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 8]);
        assert!(
            decode_offset_index(&padded, 77).is_err(),
            "zero padding not detected"
        );
    }

    #[test]
    fn time_index_round_trips() {
        let entries: Vec<TimeEntry> = (0..20)
            .map(|i| TimeEntry {
                timestamp: 1_000 + i64::from(i) * 10,
                relative_offset: i * 2,
            })
            .collect();
        let bind = IndexBinding {
            log_length: 9,
            last_batch_crc: 7,
        };
        let bytes = encode_time_index(5, bind, &entries);
        assert_eq!(decode_time_index(&bytes, 5).unwrap(), (bind, entries));
    }

    proptest! {
        #[test]
        fn hostile_index_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_offset_index(&bytes, 0);
            let _ = decode_time_index(&bytes, 0);
        }
    }
}
