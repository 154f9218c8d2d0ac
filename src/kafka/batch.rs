//! Kafka's v2 record batch ↔ oncelog's batch: the translation between what a client sends or
//! fetches and what the log stores (docs/kafka-wire.md, "Batches").
//!
//! Kafka's header (big-endian, 61 bytes):
//!
//! ```text
//! Format: { base_offset i64 | batch_length i32 (bytes after this field) |
//!           partition_leader_epoch i32 | magic i8 (2) | crc u32 (CRC-32C of attributes..end) |
//!           attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//!           producer_id i64 | producer_epoch i16 | base_sequence i32 | record_count i32 |
//!           records }
//! ```
//!
//! Every field from `attributes` on exists in ours with the same meaning; the records use the
//! same v2 encoding. So a produced batch keeps its record bytes (decompressed first if the
//! client compressed them: our format stores records uncompressed), and a fetched one is our
//! records behind a Kafka header with a fresh CRC-32C.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]
// Kafka's wire integers are big-endian; this module is where they meet ours.
#![allow(clippy::big_endian_bytes)]

use std::fmt;

use super::compression::{self, Codec};
use crate::format::batch::{
    attributes, compute_crc, BatchView, RecordBatch, ATTRIBUTES_OFFSET, CRC_OFFSET, HEADER_SIZE,
    LENGTH_OFFSET, MAGIC, MAGIC_OFFSET,
};
use crate::format::DecodeError;

/// Bytes of Kafka's v2 batch header.
pub const KAFKA_HEADER_SIZE: usize = 61;
/// Where Kafka's header and ours start to agree: `attributes` through `record_count`.
const KAFKA_ATTRIBUTES_OFFSET: usize = 21;
const KAFKA_CRC_OFFSET: usize = 17;
const KAFKA_MAGIC_OFFSET: usize = 16;
/// The bytes of Kafka's `batch_length` field and those before it (not counted by it).
const KAFKA_LENGTH_PREFIX: usize = 12;
/// Kafka's record-batch format version; v0/v1 message sets are refused.
pub const KAFKA_MAGIC: u8 = 2;

/// Why a client's batch was refused; each maps to a Kafka error code (`kafka::errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Truncated, a bad length, magic or CRC-32C: Kafka's CORRUPT_MESSAGE.
    Corrupt(String),
    /// Well-formed bytes we do not accept (no batch, more than one, a control batch, a
    /// LogAppendTime batch, undecodable records): Kafka's INVALID_RECORD.
    Invalid(String),
    /// Decompressed records above the limit: MESSAGE_TOO_LARGE.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Corrupt(m) => write!(f, "corrupt batch: {m}"),
            BatchError::Invalid(m) => write!(f, "invalid batch: {m}"),
            BatchError::TooLarge { limit } => {
                write!(f, "batch larger than {limit} bytes once decompressed")
            }
        }
    }
}

fn be_i32(b: &[u8], at: usize) -> Result<i32, BatchError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or_else(|| BatchError::Corrupt(format!("truncated at byte {at}")))
}

fn be_u16(b: &[u8], at: usize) -> Result<u16, BatchError> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| BatchError::Corrupt(format!("truncated at byte {at}")))
}

/// Converts the `records` of one partition of a Produce request (exactly one v2 batch, as
/// Kafka requires) into a batch our log accepts. `max_bytes` bounds the converted batch (and
/// so the decompressed records).
pub fn from_kafka(bytes: &[u8], max_bytes: usize) -> Result<RecordBatch, BatchError> {
    if bytes.len() < KAFKA_HEADER_SIZE {
        return Err(BatchError::Corrupt(format!(
            "{} bytes, shorter than the 61-byte v2 header",
            bytes.len()
        )));
    }
    let magic = bytes.get(KAFKA_MAGIC_OFFSET).copied().unwrap_or(0);
    if magic != KAFKA_MAGIC {
        return Err(BatchError::Corrupt(format!(
            "magic {magic}: only record batch v2 is supported"
        )));
    }
    let declared = be_i32(bytes, 8)?;
    let len = usize::try_from(declared)
        .ok()
        .and_then(|l| l.checked_add(KAFKA_LENGTH_PREFIX))
        .filter(|&l| l >= KAFKA_HEADER_SIZE && l <= bytes.len())
        .ok_or_else(|| {
            BatchError::Corrupt(format!(
                "batch length {declared} does not fit the {} bytes sent",
                bytes.len()
            ))
        })?;
    if len != bytes.len() {
        return Err(BatchError::Invalid(format!(
            "{} bytes after the batch: a produce request carries exactly one batch",
            bytes.len() - len
        )));
    }
    let stored_crc = be_i32(bytes, KAFKA_CRC_OFFSET)? as u32;
    let covered = bytes
        .get(KAFKA_ATTRIBUTES_OFFSET..len)
        .ok_or_else(|| BatchError::Corrupt("truncated".into()))?;
    let computed = crc32c::crc32c(covered);
    if computed != stored_crc {
        return Err(BatchError::Corrupt(format!(
            "CRC-32C mismatch: stored {stored_crc:#010x}, computed {computed:#010x}"
        )));
    }
    let attrs = be_u16(bytes, KAFKA_ATTRIBUTES_OFFSET)?;
    if attrs & attributes::CONTROL != 0 {
        return Err(BatchError::Invalid(
            "a client may not produce a control batch".into(),
        ));
    }
    if attrs & attributes::TIMESTAMP_LOG_APPEND != 0 {
        return Err(BatchError::Invalid(
            "LogAppendTime batches are not supported".into(),
        ));
    }
    let codec = Codec::from_attributes(attrs).map_err(BatchError::Invalid)?;
    let raw = bytes
        .get(KAFKA_HEADER_SIZE..len)
        .ok_or_else(|| BatchError::Corrupt("truncated".into()))?;
    let room = max_bytes.saturating_sub(HEADER_SIZE);
    let records = compression::decompress(codec, raw, room)?;
    // Our header: the stamped fields zero/-1 until the log stamps them, then Kafka's fields from
    // attributes on (same order and meaning, little-endian here), then the records.
    let fields = bytes
        .get(KAFKA_ATTRIBUTES_OFFSET..KAFKA_HEADER_SIZE)
        .ok_or_else(|| BatchError::Corrupt("truncated".into()))?;
    let total = HEADER_SIZE
        .checked_add(records.len())
        .filter(|&t| t <= max_bytes)
        .ok_or(BatchError::TooLarge { limit: max_bytes })?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&(-1i32).to_le_bytes());
    out.extend_from_slice(&(-1i64).to_le_bytes());
    out.push(MAGIC);
    out.extend_from_slice(&0u32.to_le_bytes());
    // attributes u16, last_offset_delta i32, base_timestamp i64, max_timestamp i64,
    // producer_id i64, producer_epoch i16, base_sequence i32, record_count i32.
    let attrs_ours = attrs & attributes::TRANSACTIONAL;
    out.extend_from_slice(&attrs_ours.to_le_bytes());
    for (at, width) in [(2, 4), (6, 8), (14, 8), (22, 8), (30, 2), (32, 4), (36, 4)] {
        let field = fields
            .get(at..at + width)
            .ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
        out.extend(field.iter().rev());
    }
    debug_assert_eq!(out.len(), HEADER_SIZE);
    out.extend_from_slice(&records);
    let crc = compute_crc(&out).map_err(|e| BatchError::Corrupt(e.to_string()))?;
    if let Some(slot) = out.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    RecordBatch::from_bytes(out).map_err(|e| match e {
        DecodeError::ChecksumMismatch { .. } | DecodeError::TooShort { .. } => {
            BatchError::Corrupt(e.to_string())
        }
        other => BatchError::Invalid(other.to_string()),
    })
}

/// Appends `view` (one stored batch) to `out` as a Kafka v2 batch: Kafka's header over our
/// record bytes, uncompressed, with its CRC-32C.
pub fn append_as_kafka(view: &BatchView<'_>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let bytes = view.as_bytes();
    let h = view.header();
    let records = bytes.get(HEADER_SIZE..).ok_or(DecodeError::TooShort {
        need: HEADER_SIZE as u64,
        have: bytes.len() as u64,
    })?;
    let length = KAFKA_HEADER_SIZE - KAFKA_LENGTH_PREFIX + records.len();
    let length = i32::try_from(length).map_err(|_| DecodeError::BadLength {
        length: length as u64,
    })?;
    let start = out.len();
    out.extend_from_slice(&(h.base_offset as i64).to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&h.leader_epoch.to_be_bytes());
    out.push(KAFKA_MAGIC);
    out.extend_from_slice(&0u32.to_be_bytes());
    let attrs = h.attributes & (attributes::TRANSACTIONAL | attributes::CONTROL);
    out.extend_from_slice(&attrs.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.0.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.record_count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(out.get(start + KAFKA_ATTRIBUTES_OFFSET..).unwrap_or(&[]));
    if let Some(slot) = out.get_mut(start + KAFKA_CRC_OFFSET..start + KAFKA_ATTRIBUTES_OFFSET) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

// Our header's layout is what `from_kafka` writes field by field.
const _: () = assert!(LENGTH_OFFSET == 8 && MAGIC_OFFSET == 24 && ATTRIBUTES_OFFSET == 29);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::BatchBuilder;
    use crate::types::ProducerId;
    use std::io::Write;

    /// A Kafka v2 batch as a client sends it (base offset 0, leader epoch -1) around the
    /// records of `src`, compressed with `codec` bits already applied to `records`.
    fn kafka_batch(src: &RecordBatch, attrs: u16, records: &[u8]) -> Vec<u8> {
        let h = src.header();
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((KAFKA_HEADER_SIZE - 12 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&attrs.to_be_bytes());
        b.extend_from_slice(&h.last_offset_delta.to_be_bytes());
        b.extend_from_slice(&h.base_timestamp.to_be_bytes());
        b.extend_from_slice(&h.max_timestamp.to_be_bytes());
        b.extend_from_slice(&h.producer_id.0.to_be_bytes());
        b.extend_from_slice(&h.producer_epoch.to_be_bytes());
        b.extend_from_slice(&h.base_sequence.to_be_bytes());
        b.extend_from_slice(&h.record_count.to_be_bytes());
        b.extend_from_slice(records);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn sample() -> RecordBatch {
        let mut b = BatchBuilder::new().producer(ProducerId(42), 3, 17);
        for i in 0..20u8 {
            b.push(1_700_000_000_000 + i64::from(i), Some(&[i]), Some(&[i; 30]));
        }
        b.build().unwrap()
    }

    #[test]
    fn a_client_batch_round_trips_byte_for_byte() {
        let ours = sample();
        let kafka = kafka_batch(&ours, 0, &ours.as_bytes()[HEADER_SIZE..]);
        let converted = from_kafka(&kafka, 1 << 20).unwrap();
        assert_eq!(converted.header().producer_id, ProducerId(42));
        assert_eq!(converted.header().producer_epoch, 3);
        assert_eq!(converted.header().base_sequence, 17);
        assert_eq!(converted.header().record_count, 20);
        assert_eq!(
            converted.header().max_timestamp,
            ours.header().max_timestamp
        );
        assert_eq!(
            &converted.as_bytes()[HEADER_SIZE..],
            &ours.as_bytes()[HEADER_SIZE..]
        );
        let mut back = Vec::new();
        append_as_kafka(&converted.view(), &mut back).unwrap();
        assert_eq!(back, kafka);
    }

    #[test]
    fn a_compressed_batch_is_stored_with_its_records_decompressed() {
        let ours = sample();
        let records = &ours.as_bytes()[HEADER_SIZE..];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(records).unwrap();
        let kafka = kafka_batch(&ours, 1, &gz.finish().unwrap());
        let converted = from_kafka(&kafka, 1 << 20).unwrap();
        assert_eq!(&converted.as_bytes()[HEADER_SIZE..], records);
        assert_eq!(converted.header().attributes, 0);
        assert!(matches!(
            from_kafka(&kafka, HEADER_SIZE + records.len() - 1),
            Err(BatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn damaged_or_unsupported_batches_are_refused_without_panicking() {
        let ours = sample();
        let records = &ours.as_bytes()[HEADER_SIZE..];
        let good = kafka_batch(&ours, 0, records);
        for cut in 0..good.len() {
            assert!(from_kafka(&good[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[70] ^= 1;
        assert!(
            matches!(from_kafka(&flipped, 1 << 20), Err(BatchError::Corrupt(m)) if m.contains("CRC"))
        );
        let mut magic1 = good.clone();
        magic1[16] = 1;
        assert!(matches!(
            from_kafka(&magic1, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let two = [good.clone(), good.clone()].concat();
        assert!(matches!(
            from_kafka(&two, 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        for attrs in [0x20 | 0x10, 0x08, 0x07] {
            assert!(
                matches!(
                    from_kafka(&kafka_batch(&ours, attrs, records), 1 << 20),
                    Err(BatchError::Invalid(_))
                ),
                "attributes {attrs:#x}"
            );
        }
        // A record count that disagrees with the records: the log's own record checks refuse it.
        let mut miscounted = kafka_batch(&ours, 0, &records[..records.len() - 5]);
        let crc = crc32c::crc32c(&miscounted[21..]);
        miscounted[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(from_kafka(&miscounted, 1 << 20).is_err());
    }
}
