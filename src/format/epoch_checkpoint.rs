//! The leader-epoch checkpoint file: the entries of a leader epoch cache (epoch -> start offset).
//!
//! ```text
//! Format: { magic "OLEP" | version u8 | reserved u8 x 3 | count u32 |
//!           entries { epoch i32 | start_offset u64 } x count | crc u32 }
//! ```
//!
//! The CRC-32 covers every byte before it. Entries are strictly increasing in both epoch and start
//! offset and epochs are >= 0; a file that breaks this is rejected, not repaired (the cache is then
//! rebuilt from the log's batch epochs). Kafka's checkpoint is a text file without a checksum,
//! and dropping one fsync of it corrupted it (KAFKA-15046); this file is written whole with the
//! crate's atomic-write helper (temp file, fsync, rename, fsync directory).
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
pub const MAGIC: [u8; 4] = *b"OLEP";
/// The format version this build writes.
pub const VERSION: u8 = 1;
/// Byte position of the `magic` field in the file.
pub const MAGIC_OFFSET: usize = 0;
/// Byte position of the `version` field in the file.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
/// Byte position of the `reserved` field in the file.
pub const RESERVED_OFFSET: usize = VERSION_OFFSET + 1;
/// Byte position of the `count` field in the file.
pub const COUNT_OFFSET: usize = RESERVED_OFFSET + 3;
/// Byte position of the first entry (the header's end).
pub const ENTRIES_OFFSET: usize = COUNT_OFFSET + 4;
const _: () = assert!(ENTRIES_OFFSET == 12);

/// Byte position of `epoch` within an entry.
pub const ENTRY_EPOCH_OFFSET: usize = 0;
/// Byte position of `start_offset` within an entry.
pub const ENTRY_START_OFFSET: usize = ENTRY_EPOCH_OFFSET + 4;
/// Bytes of one entry.
pub const ENTRY_SIZE: usize = ENTRY_START_OFFSET + 8;
/// Bytes of the trailing CRC-32.
pub const CRC_SIZE: usize = 4;

/// One entry: `epoch` became leader epoch at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The leader epoch (>= 0).
    pub epoch: i32,
    /// The offset of the first batch written in that epoch.
    pub start_offset: u64,
}

/// Encoded size of a file with `count` entries.
pub const fn encoded_len(count: usize) -> usize {
    ENTRIES_OFFSET + ENTRY_SIZE * count + CRC_SIZE
}

// Format: { magic | version | reserved | count | entries | crc }
/// Encodes `entries` as a whole file (CRC-32 appended); `decode` checks their order.
pub fn encode(entries: &[EpochStart]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(entries.len()));
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    // A cache holds one entry per leader epoch ever seen in the retained log; u32 is plenty.
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for e in entries {
        out.extend_from_slice(&e.epoch.to_le_bytes());
        out.extend_from_slice(&e.start_offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a whole checkpoint file; trailing bytes are an error (the file is written whole).
pub fn decode(buf: &[u8]) -> Result<Vec<EpochStart>, DecodeError> {
    if buf.get(..4) != Some(&MAGIC[..]) {
        return Err(DecodeError::BadMagic {
            magic: buf.first().copied().unwrap_or(0),
        });
    }
    let version = le::u8_at(buf, VERSION_OFFSET)?;
    if version != VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let count = le::u32_at(buf, COUNT_OFFSET)?;
    // Bound the count by the bytes present before trusting it for arithmetic or allocation.
    let max_count = (buf.len().saturating_sub(ENTRIES_OFFSET + CRC_SIZE) / ENTRY_SIZE) as u64;
    if u64::from(count) > max_count {
        return Err(DecodeError::TooShort {
            need: (ENTRIES_OFFSET + CRC_SIZE) as u64 + u64::from(count) * ENTRY_SIZE as u64,
            have: buf.len() as u64,
        });
    }
    let count = count as usize;
    let len = encoded_len(count);
    if buf.len() != len {
        return Err(DecodeError::BadField {
            field: "epoch checkpoint length",
            value: i64::try_from(buf.len()).unwrap_or(i64::MAX),
        });
    }
    let body = buf.get(..len - CRC_SIZE).ok_or(DecodeError::TooShort {
        need: len as u64,
        have: buf.len() as u64,
    })?;
    let stored = le::u32_at(buf, len - CRC_SIZE)?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let mut entries: Vec<EpochStart> = Vec::with_capacity(count);
    for i in 0..count {
        let at = ENTRIES_OFFSET + ENTRY_SIZE * i;
        let entry = EpochStart {
            epoch: le::i32_at(buf, at + ENTRY_EPOCH_OFFSET)?,
            start_offset: le::u64_at(buf, at + ENTRY_START_OFFSET)?,
        };
        if entry.epoch < 0 {
            return Err(DecodeError::BadField {
                field: "leader epoch",
                value: i64::from(entry.epoch),
            });
        }
        if let Some(prev) = entries.last() {
            if entry.epoch <= prev.epoch || entry.start_offset <= prev.start_offset {
                return Err(DecodeError::BadField {
                    field: "epoch entry order",
                    value: i64::from(entry.epoch),
                });
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<EpochStart> {
        vec![
            EpochStart {
                epoch: 0,
                start_offset: 0,
            },
            EpochStart {
                epoch: 3,
                start_offset: 17,
            },
            EpochStart {
                epoch: 4,
                start_offset: 1 << 40,
            },
        ]
    }

    #[test]
    fn round_trip_and_every_flip_is_detected() {
        let bytes = encode(&sample());
        assert_eq!(bytes.len(), encoded_len(3));
        assert_eq!(decode(&bytes).unwrap(), sample());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[0u8; 64]).is_err(), "zeros");
    }

    #[test]
    fn empty_cache_round_trips() {
        let bytes = encode(&[]);
        assert_eq!(decode(&bytes).unwrap(), vec![]);
    }

    #[test]
    fn out_of_order_or_negative_entries_are_rejected_even_with_a_valid_crc() {
        let unordered = [
            EpochStart {
                epoch: 2,
                start_offset: 5,
            },
            EpochStart {
                epoch: 1,
                start_offset: 9,
            },
        ];
        assert!(matches!(
            decode(&encode(&unordered)),
            Err(DecodeError::BadField { .. })
        ));
        let same_start = [
            EpochStart {
                epoch: 1,
                start_offset: 5,
            },
            EpochStart {
                epoch: 2,
                start_offset: 5,
            },
        ];
        assert!(decode(&encode(&same_start)).is_err());
        let negative = [EpochStart {
            epoch: -1,
            start_offset: 0,
        }];
        assert!(decode(&encode(&negative)).is_err());
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut bytes = encode(&sample());
        bytes[COUNT_OFFSET..COUNT_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(DecodeError::TooShort { .. })));
    }
}
