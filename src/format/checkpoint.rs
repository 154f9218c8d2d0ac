//! Small fixed-layout checkpoint records: recovery point, log start offset, clean-shutdown
//! marker, producer-id block, issued producer epochs, a replica's high-water mark and boot id.
//!
//! ```text
//! Format: { magic "OLCP" | version u8 | kind u8 | count u16 | sequence u64 |
//!           values u64 x count | crc u32 }
//! ```
//!
//! The CRC-32 covers every byte before it. `sequence` orders the two in-place slots of the
//! recovery-point file (the newer valid slot wins); other checkpoints use 0.
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
pub const MAGIC: [u8; 4] = *b"OLCP";
/// The format version this build writes.
pub const VERSION: u8 = 1;
/// Byte position of the `kind` field in the file.
pub const KIND_OFFSET: usize = 5;
/// Byte position of the `count` field in the file.
pub const COUNT_OFFSET: usize = KIND_OFFSET + 1;
/// Byte position of the `sequence` field in the file.
pub const SEQUENCE_OFFSET: usize = COUNT_OFFSET + 2;
/// Byte position of the `values` field in the file.
pub const VALUES_OFFSET: usize = SEQUENCE_OFFSET + 8;

/// What a checkpoint record holds; the kind byte keeps one file from being read as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `[recovery_point_offset]`: every batch below it is durable.
    RecoveryPoint = 1,
    /// `[log_start_offset]`.
    LogStart = 2,
    /// `[log_end_offset, active_segment_base, active_segment_length]`.
    CleanShutdown = 3,
    /// `[next_unallocated_producer_id]`.
    ProducerIds = 4,
    /// `[high_watermark]` of a replica (Kafka's replication-offset-checkpoint).
    HighWatermark = 5,
    /// `[boot_id]` of the machine when the replica last opened its log.
    BootId = 6,
    /// `[unlisted_next, id_0, epoch_0, id_1, epoch_1, ...]`: the newest epoch issued per
    /// producer id (`producer::IssuedEpochs`).
    ProducerEpochs = 7,
}

/// Encoded size of a record with `count` values.
pub const fn encoded_len(count: usize) -> usize {
    VALUES_OFFSET + 8 * count + 4
}

/// Encodes a record of `kind` with `sequence` and `values` (CRC-32 appended); the inverse of `decode`.
pub fn encode(kind: CheckpointKind, sequence: u64, values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(values.len()));
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(
        &u16::try_from(values.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&sequence.to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a record of `kind` at the start of `buf` (trailing bytes are ignored, so a slot in a
/// larger file decodes too). Returns `(sequence, values)`.
pub fn decode(buf: &[u8], kind: CheckpointKind) -> Result<(u64, Vec<u64>), DecodeError> {
    if buf.get(..4) != Some(&MAGIC[..]) {
        return Err(DecodeError::BadMagic {
            magic: buf.first().copied().unwrap_or(0),
        });
    }
    let version = le::u8_at(buf, 4)?;
    if version != VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let found = le::u8_at(buf, KIND_OFFSET)?;
    if found != kind as u8 {
        return Err(DecodeError::BadField {
            field: "checkpoint kind",
            value: i64::from(found),
        });
    }
    let count = usize::from(le::u16_at(buf, COUNT_OFFSET)?);
    let len = encoded_len(count);
    let body = buf.get(..len - 4).ok_or(DecodeError::TooShort {
        need: len as u64,
        have: buf.len() as u64,
    })?;
    let stored = le::u32_at(buf, len - 4)?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let sequence = le::u64_at(buf, SEQUENCE_OFFSET)?;
    let values = (0..count)
        .map(|i| le::u64_at(buf, VALUES_OFFSET + 8 * i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sequence, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_detected() {
        let bytes = encode(CheckpointKind::CleanShutdown, 7, &[1, 2, 3]);
        assert_eq!(
            decode(&bytes, CheckpointKind::CleanShutdown).unwrap(),
            (7, vec![1, 2, 3])
        );
        assert!(decode(&bytes, CheckpointKind::LogStart).is_err());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode(&bad, CheckpointKind::CleanShutdown).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], CheckpointKind::CleanShutdown).is_err());
        }
        assert!(
            decode(&[0u8; 64], CheckpointKind::CleanShutdown).is_err(),
            "zeros"
        );
    }
}
