//! A segment's transaction file (`.txnindex`): the aborted transactions whose ABORT marker is
//! in the segment, and the transactions open at its base and at its end, bound to the segment's
//! length and end offset.
//!
//! ```text
//! Format: { magic "OLTX" | version u8 | reserved [u8; 3] | base_offset u64 | log_length u64 |
//!           next_offset u64 | open_at_base u32 | open_at_end u32 | aborted u32 | crc u32 |
//!           open entry { producer_id i64 | first_offset u64 } x (open_at_base + open_at_end) |
//!           aborted entry { producer_id i64 | first_offset u64 | last_offset u64 |
//!                           last_stable_offset u64 } x aborted }
//! ```
//!
//! Little-endian; the CRC-32 (IEEE) covers every byte except the crc field. The file is derived
//! data: the log rebuilds it from the segment's batches when it is missing, damaged or bound to
//! other bytes (another length or end offset), so it never decides what the log holds.
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
use crate::producer::AbortedTxn;
use crate::types::ProducerId;

/// The magic bytes every such file starts with.
pub const MAGIC: [u8; 4] = *b"OLTX";
/// The format version this build writes.
pub const VERSION: u8 = 1;
/// Byte position of the `version` field in the file.
pub const VERSION_OFFSET: usize = 4;
/// Byte position of the `base_offset` field in the file.
pub const BASE_OFFSET_OFFSET: usize = 8;
/// Byte position of the `log_length` field in the file.
pub const LOG_LENGTH_OFFSET: usize = 16;
/// Byte position of the `next_offset` field in the file.
pub const NEXT_OFFSET_OFFSET: usize = 24;
/// Byte position of the `open_at_base` field in the file.
pub const OPEN_AT_BASE_OFFSET: usize = 32;
/// Byte position of the `open_at_end` field in the file.
pub const OPEN_AT_END_OFFSET: usize = 36;
/// Byte position of the `aborted` field in the file.
pub const ABORTED_OFFSET: usize = 40;
/// Byte position of the `crc` field in the file.
pub const CRC_OFFSET: usize = 44;
/// Byte position of the first entry (the header's end).
pub const ENTRIES_OFFSET: usize = 48;
/// Bytes of one open-transaction entry (producer id i64, first offset u64).
pub const OPEN_ENTRY_SIZE: usize = 16;
/// Bytes of one aborted-transaction entry (producer id, first, last and last stable offsets).
pub const ABORTED_ENTRY_SIZE: usize = 32;

/// Transactions open at a point of the log: `(first offset, producer)`, ascending.
pub type OpenTxns = Vec<(u64, ProducerId)>;

/// `producer 7 from offset 12, producer 9 from offset 40` (or `none`): how `oncelog dump` and
/// `verify` print a set of open transactions.
pub fn fmt_open_txns(open: &[(u64, ProducerId)]) -> String {
    if open.is_empty() {
        return "none".into();
    }
    open.iter()
        .map(|(first, pid)| format!("producer {} from offset {first}", pid.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a `.txnindex` file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTxnFile {
    /// The segment's base offset.
    pub base_offset: u64,
    /// The segment's byte length the file describes.
    pub log_length: u64,
    /// The segment's end offset (after its last batch) the file describes.
    pub next_offset: u64,
    /// Transactions open at the segment's base offset.
    pub open_at_base: OpenTxns,
    /// Transactions open at the segment's end.
    pub open_at_end: OpenTxns,
    /// Ascending by marker offset (`last_offset`), all within the segment.
    pub aborted: Vec<AbortedTxn>,
}

/// Encodes `f` as a whole `.txnindex` file (CRC-32 included).
pub fn encode(f: &SegmentTxnFile) -> Vec<u8> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::with_capacity(
        ENTRIES_OFFSET
            + OPEN_ENTRY_SIZE * (f.open_at_base.len() + f.open_at_end.len())
            + ABORTED_ENTRY_SIZE * f.aborted.len(),
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&f.base_offset.to_le_bytes());
    out.extend_from_slice(&f.log_length.to_le_bytes());
    out.extend_from_slice(&f.next_offset.to_le_bytes());
    out.extend_from_slice(&count(f.open_at_base.len()));
    out.extend_from_slice(&count(f.open_at_end.len()));
    out.extend_from_slice(&count(f.aborted.len()));
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len(), ENTRIES_OFFSET);
    for (first, pid) in f.open_at_base.iter().chain(&f.open_at_end) {
        out.extend_from_slice(&pid.0.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
    }
    for a in &f.aborted {
        out.extend_from_slice(&a.producer_id.0.to_le_bytes());
        out.extend_from_slice(&a.first_offset.to_le_bytes());
        out.extend_from_slice(&a.last_offset.to_le_bytes());
        out.extend_from_slice(&a.last_stable_offset.to_le_bytes());
    }
    let crc = checksum(&out).to_le_bytes();
    if let Some(dst) = out.get_mut(CRC_OFFSET..ENTRIES_OFFSET) {
        dst.copy_from_slice(&crc);
    }
    out
}

fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(buf.get(..CRC_OFFSET).unwrap_or(&[]));
    h.update(buf.get(ENTRIES_OFFSET..).unwrap_or(&[]));
    h.finalize()
}

/// Decodes and checks a file: magic, version, checksum, exact length, and that every entry
/// lies where it must (open entries below the bound they describe, aborted markers inside the
/// segment in ascending order, first offset <= marker). Never panics.
pub fn decode(bytes: &[u8]) -> Result<SegmentTxnFile, DecodeError> {
    let bad = |field, value: u64| DecodeError::BadField {
        field,
        value: value as i64,
    };
    if bytes.len() < ENTRIES_OFFSET {
        return Err(DecodeError::TooShort {
            need: ENTRIES_OFFSET as u64,
            have: bytes.len() as u64,
        });
    }
    if bytes.get(..4) != Some(&MAGIC[..]) {
        return Err(bad("txn index magic", u64::from(le::u32_at(bytes, 0)?)));
    }
    let version = le::u8_at(bytes, VERSION_OFFSET)?;
    if version != VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let stored = le::u32_at(bytes, CRC_OFFSET)?;
    let computed = checksum(bytes);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let base_offset = le::u64_at(bytes, BASE_OFFSET_OFFSET)?;
    let log_length = le::u64_at(bytes, LOG_LENGTH_OFFSET)?;
    let next_offset = le::u64_at(bytes, NEXT_OFFSET_OFFSET)?;
    let n_base = le::u32_at(bytes, OPEN_AT_BASE_OFFSET)? as usize;
    let n_end = le::u32_at(bytes, OPEN_AT_END_OFFSET)? as usize;
    let n_aborted = le::u32_at(bytes, ABORTED_OFFSET)? as usize;
    let need = (n_base as u64 + n_end as u64) * OPEN_ENTRY_SIZE as u64
        + n_aborted as u64 * ABORTED_ENTRY_SIZE as u64
        + ENTRIES_OFFSET as u64;
    if need != bytes.len() as u64 {
        return Err(DecodeError::BadLength {
            length: bytes.len() as u64,
        });
    }
    if next_offset < base_offset {
        return Err(bad("txn index next_offset", next_offset));
    }
    let mut pos = ENTRIES_OFFSET;
    let mut open = |n: usize, bound: u64| -> Result<OpenTxns, DecodeError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let pid = ProducerId(le::i64_at(bytes, pos)?);
            let first = le::u64_at(bytes, pos + 8)?;
            pos += OPEN_ENTRY_SIZE;
            if !pid.is_some() || first >= bound {
                return Err(bad("txn index open entry", first));
            }
            v.push((first, pid));
        }
        if v.windows(2).any(|w| w.first() >= w.get(1)) {
            return Err(bad("txn index open entries order", n as u64));
        }
        Ok(v)
    };
    let open_at_base = open(n_base, base_offset)?;
    let open_at_end = open(n_end, next_offset)?;
    let mut aborted = Vec::with_capacity(n_aborted);
    for _ in 0..n_aborted {
        let a = AbortedTxn {
            producer_id: ProducerId(le::i64_at(bytes, pos)?),
            first_offset: le::u64_at(bytes, pos + 8)?,
            last_offset: le::u64_at(bytes, pos + 16)?,
            last_stable_offset: le::u64_at(bytes, pos + 24)?,
        };
        pos += ABORTED_ENTRY_SIZE;
        let prev = aborted.last().map(|p: &AbortedTxn| p.last_offset);
        if !(base_offset..next_offset).contains(&a.last_offset)
            || a.first_offset > a.last_offset
            || prev.is_some_and(|p| p >= a.last_offset)
            || !a.producer_id.is_some()
        {
            return Err(bad("txn index aborted entry", a.last_offset));
        }
        aborted.push(a);
    }
    Ok(SegmentTxnFile {
        base_offset,
        log_length,
        next_offset,
        open_at_base,
        open_at_end,
        aborted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SegmentTxnFile {
        SegmentTxnFile {
            base_offset: 100,
            log_length: 4096,
            next_offset: 200,
            open_at_base: vec![(40, ProducerId(3)), (90, ProducerId(1))],
            open_at_end: vec![(40, ProducerId(3)), (150, ProducerId(9))],
            aborted: vec![
                AbortedTxn {
                    producer_id: ProducerId(1),
                    first_offset: 90,
                    last_offset: 120,
                    last_stable_offset: 40,
                },
                AbortedTxn {
                    producer_id: ProducerId(5),
                    first_offset: 130,
                    last_offset: 140,
                    last_stable_offset: 40,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let f = sample();
        assert_eq!(decode(&encode(&f)).unwrap(), f);
        let empty = SegmentTxnFile {
            base_offset: 0,
            ..Default::default()
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn damage_is_an_error() {
        let good = encode(&sample());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut b = bytes.clone();
            if b.len() >= ENTRIES_OFFSET {
                b[..4].copy_from_slice(&MAGIC);
                b[VERSION_OFFSET] = VERSION;
                let crc = checksum(&b).to_le_bytes();
                b[CRC_OFFSET..ENTRIES_OFFSET].copy_from_slice(&crc);
                let _ = decode(&b);
            }
        }
    }
}
