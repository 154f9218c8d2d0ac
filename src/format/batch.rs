//! The record batch: oncelog's on-disk and in-memory unit of append, replication and dedup.
//!
//! Layout (little-endian; see `docs/format.md`):
//!
//! ```text
//! Format: { base_offset u64 | batch_length u32 | leader_epoch i32 | append_timestamp i64 |
//!           magic u8 | crc u32 |
//!           attributes u16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//!           producer_id i64 | producer_epoch i16 | base_sequence i32 | record_count i32 |
//!           records (Kafka v2 record encoding) }
//! ```
//!
//! The checksum is CRC-32 (IEEE, crc32fast) over every byte except the crc field itself:
//! `[0, CRC_OFFSET) ++ [ATTRIBUTES_OFFSET, batch_length)`. Unlike Kafka's CRC-32C it covers the
//! base offset and the leader epoch, so a batch written at the wrong offset or re-stamped by the
//! wrong leader fails its check. The builder hashes the tail `[ATTRIBUTES_OFFSET, end)` once;
//! stamping offsets at append hashes only the 25-byte prefix and combines the two checksums.
//!
//! `append_timestamp` is not in Kafka's header: it is the log's clock at append, stamped with
//! the base offset. Producer expiry and time retention use it, so every replica and every
//! recovery decides them identically and client timestamps cannot drive deletion.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use super::le;
use super::varint::{
    get_varint, put_varint, put_varlong, read_varint, read_varlong, varint_len, varlong_len,
};
use super::DecodeError;
use crate::types::{increment_sequence, LeaderEpoch, ProducerEpoch, ProducerId, Sequence};

/// Byte offset of `base_offset` (u64) in the header.
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Byte offset of `batch_length` (u32): total bytes of the batch, header included.
pub const LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
/// Byte offset of `leader_epoch` (i32).
pub const LEADER_EPOCH_OFFSET: usize = LENGTH_OFFSET + 4;
/// Byte offset of `append_timestamp` (i64, ms, the log's clock at append).
pub const APPEND_TIMESTAMP_OFFSET: usize = LEADER_EPOCH_OFFSET + 4;
/// Byte offset of `magic` (u8, [`MAGIC`]).
pub const MAGIC_OFFSET: usize = APPEND_TIMESTAMP_OFFSET + 8;
/// Byte offset of `crc` (u32), the one field the checksum does not cover.
pub const CRC_OFFSET: usize = MAGIC_OFFSET + 1;
/// Byte offset of `attributes` (u16, see [`attributes`]).
pub const ATTRIBUTES_OFFSET: usize = CRC_OFFSET + 4;
/// Byte offset of `last_offset_delta` (i32): last record's offset minus `base_offset`.
pub const LAST_OFFSET_DELTA_OFFSET: usize = ATTRIBUTES_OFFSET + 2;
/// Byte offset of `base_timestamp` (i64, ms): the first record's timestamp.
pub const BASE_TIMESTAMP_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + 4;
/// Byte offset of `max_timestamp` (i64, ms): the largest record timestamp.
pub const MAX_TIMESTAMP_OFFSET: usize = BASE_TIMESTAMP_OFFSET + 8;
/// Byte offset of `producer_id` (i64, -1 when not idempotent).
pub const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + 8;
/// Byte offset of `producer_epoch` (i16).
pub const PRODUCER_EPOCH_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
/// Byte offset of `base_sequence` (i32): the first record's sequence.
pub const BASE_SEQUENCE_OFFSET: usize = PRODUCER_EPOCH_OFFSET + 2;
/// Byte offset of `record_count` (i32).
pub const RECORD_COUNT_OFFSET: usize = BASE_SEQUENCE_OFFSET + 4;
/// Byte offset of the first record: the header's end.
pub const RECORDS_OFFSET: usize = RECORD_COUNT_OFFSET + 4;
/// Size of the batch header.
pub const HEADER_SIZE: usize = RECORDS_OFFSET;
const _: () = assert!(
    HEADER_SIZE == 69,
    "Kafka's 61-byte v2 header plus the append timestamp"
);

/// The magic byte: version 1 of oncelog's batch format.
pub const MAGIC: u8 = 1;
/// The largest batch any build accepts (a config may lower it).
pub const MAX_BATCH_SIZE: u32 = 1 << 30;

/// Attribute bits (Kafka's layout): 0-2 compression, 3 timestamp type, 4 transactional, 5 control.
pub mod attributes {
    /// Bits 0-2: compression codec; this build supports none (0) only.
    pub const COMPRESSION_MASK: u16 = 0x07;
    /// Bit 3: timestamps are the log's append time (not supported by this build).
    pub const TIMESTAMP_LOG_APPEND: u16 = 0x08;
    /// Bit 4: the batch belongs to a transaction.
    pub const TRANSACTIONAL: u16 = 0x10;
    /// Bit 5: a control batch (a COMMIT or ABORT marker), written only by the log.
    pub const CONTROL: u16 = 0x20;
    /// The bits this build gives a meaning to; a batch with any other bit is refused.
    pub const SUPPORTED: u16 = TRANSACTIONAL | CONTROL;
}

/// The decoded fixed-size header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; written by the log at append (0 until stamped).
    pub base_offset: u64,
    /// Total bytes of the batch, header included.
    pub batch_length: u32,
    /// Leader epoch of the leader that appended the batch; written at append.
    pub leader_epoch: LeaderEpoch,
    /// The log's clock when the batch was appended (ms); -1 until stamped.
    pub append_timestamp: i64,
    /// Format version, [`MAGIC`].
    pub magic: u8,
    /// CRC-32 (IEEE) of every byte of the batch except this field.
    pub crc: u32,
    /// Attribute bits ([`attributes`]).
    pub attributes: u16,
    /// Last record's offset minus `base_offset` (record count - 1 for a built batch).
    pub last_offset_delta: i32,
    /// The first record's timestamp (ms since the epoch, set by the client); -1 if empty.
    pub base_timestamp: i64,
    /// The largest record timestamp (ms); the time index is built from it.
    pub max_timestamp: i64,
    /// The idempotent producer, or [`ProducerId::NONE`].
    pub producer_id: ProducerId,
    /// The producer's epoch (-1 when not idempotent).
    pub producer_epoch: ProducerEpoch,
    /// Sequence of the first record (-1 when not idempotent); later records follow it.
    pub base_sequence: Sequence,
    /// Records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes and structurally checks a header (not the checksum). `buf` may be longer.
    pub fn decode(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
        if buf.len() < HEADER_SIZE {
            return Err(DecodeError::TooShort {
                need: HEADER_SIZE as u64,
                have: buf.len() as u64,
            });
        }
        let batch_length = le::u32_at(buf, LENGTH_OFFSET)?;
        let header = BatchHeader {
            base_offset: le::u64_at(buf, BASE_OFFSET_OFFSET)?,
            batch_length,
            leader_epoch: le::i32_at(buf, LEADER_EPOCH_OFFSET)?,
            append_timestamp: le::i64_at(buf, APPEND_TIMESTAMP_OFFSET)?,
            magic: le::u8_at(buf, MAGIC_OFFSET)?,
            crc: le::u32_at(buf, CRC_OFFSET)?,
            attributes: le::u16_at(buf, ATTRIBUTES_OFFSET)?,
            last_offset_delta: le::i32_at(buf, LAST_OFFSET_DELTA_OFFSET)?,
            base_timestamp: le::i64_at(buf, BASE_TIMESTAMP_OFFSET)?,
            max_timestamp: le::i64_at(buf, MAX_TIMESTAMP_OFFSET)?,
            producer_id: ProducerId(le::i64_at(buf, PRODUCER_ID_OFFSET)?),
            producer_epoch: le::i16_at(buf, PRODUCER_EPOCH_OFFSET)?,
            base_sequence: le::i32_at(buf, BASE_SEQUENCE_OFFSET)?,
            record_count: le::i32_at(buf, RECORD_COUNT_OFFSET)?,
        };
        header.check_fields()?;
        Ok(header)
    }

    fn check_fields(&self) -> Result<(), DecodeError> {
        if self.batch_length == 0 && self.magic == 0 && self.crc == 0 && self.record_count == 0 {
            return Err(DecodeError::Zeroes);
        }
        if (self.batch_length as usize) < HEADER_SIZE || self.batch_length > MAX_BATCH_SIZE {
            return Err(DecodeError::BadLength {
                length: u64::from(self.batch_length),
            });
        }
        if self.magic != MAGIC {
            return Err(DecodeError::BadMagic { magic: self.magic });
        }
        let codec = (self.attributes & attributes::COMPRESSION_MASK) as u8;
        if codec != 0 {
            return Err(DecodeError::UnsupportedCompression { codec });
        }
        let bad = |field, value: i64| Err(DecodeError::BadField { field, value });
        if self.last_offset_delta < 0 {
            return bad("last_offset_delta", i64::from(self.last_offset_delta));
        }
        if self.record_count != self.last_offset_delta.wrapping_add(1) {
            return bad("record_count", i64::from(self.record_count));
        }
        if self.base_offset > i64::MAX as u64 - self.last_offset_delta as u64 {
            return bad("base_offset", self.base_offset as i64);
        }
        if self.is_control() {
            // A marker: one record, a producer and its epoch, no sequence (Kafka's -1).
            if !self.is_transactional() || !self.producer_id.is_some() || self.producer_epoch < 0 {
                return bad("attributes", i64::from(self.attributes));
            }
            if self.base_sequence != -1 {
                return bad("base_sequence", i64::from(self.base_sequence));
            }
            if self.record_count != 1 {
                return bad("record_count", i64::from(self.record_count));
            }
            return Ok(());
        }
        if self.is_transactional() && !self.producer_id.is_some() {
            return bad("attributes", i64::from(self.attributes));
        }
        if self.producer_id.is_some() && (self.producer_epoch < 0 || self.base_sequence < 0) {
            return bad(
                "producer_epoch/base_sequence",
                i64::from(self.base_sequence),
            );
        }
        Ok(())
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta as u64
    }

    /// The offset after the batch (where the next batch starts).
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// The sequence of the batch's last record (wrapping after `i32::MAX`).
    pub fn last_sequence(&self) -> Sequence {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// Whether the batch carries a producer id (deduplicated by sequence).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.is_some()
    }

    /// Whether this is a control batch (a transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & attributes::CONTROL != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & attributes::TRANSACTIONAL != 0
    }
}

/// CRC-32 of `prefix` followed by a tail whose checksum `tail_crc` and length are known.
/// Tails shorter than this are hashed again when their batch checksum is needed with another
/// prefix; longer ones are combined with their known checksum. Breakeven measured with
/// callgrind: a combine (crc32fast's GF(2) matrix method, ~3,400 instructions whatever the
/// length) costs about as much as hashing 16 KiB with its PCLMULQDQ path.
const REHASH_BELOW: usize = 16 << 10;

/// The batch checksum of `prefix` followed by `tail`, whose own checksum is `tail_crc`: the
/// tail hashed again when short, the two checksums combined when long (`REHASH_BELOW`).
fn prefixed_crc(prefix: &[u8], tail: &[u8], tail_crc: u32) -> u32 {
    if tail.len() < REHASH_BELOW {
        return crc_of(prefix, tail);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.combine(&crc32fast::Hasher::new_with_initial_len(
        tail_crc,
        tail.len() as u64,
    ));
    h.finalize()
}

/// The batch checksum of a header prefix and the bytes from the attributes on, in one
/// streaming pass.
fn crc_of(prefix: &[u8], tail: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.update(tail);
    h.finalize()
}

/// Computes the checksum of a whole batch (`bytes` is exactly one batch). One streaming pass
/// over prefix then tail: the same value as a combine, without the cost of a combine, which
/// on this machine exceeds hashing a 2 KB batch (docs/benchmarks.md, sequential reads).
pub fn compute_crc(bytes: &[u8]) -> Result<u32, DecodeError> {
    let prefix = bytes.get(..CRC_OFFSET);
    let tail = bytes.get(ATTRIBUTES_OFFSET..);
    match (prefix, tail) {
        (Some(prefix), Some(tail)) => Ok(crc_of(prefix, tail)),
        _ => Err(DecodeError::TooShort {
            need: HEADER_SIZE as u64,
            have: bytes.len() as u64,
        }),
    }
}

/// A validated, zero-copy view of one batch in a buffer (a segment mapping or a `Vec`).
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Parses the batch at the start of `buf` and verifies its checksum. Returns the view and
    /// the bytes after it.
    pub fn parse(buf: &'a [u8]) -> Result<(BatchView<'a>, &'a [u8]), DecodeError> {
        let (view, rest) = Self::parse_unverified(buf)?;
        let computed = compute_crc(view.bytes)?;
        if computed != view.header.crc {
            return Err(DecodeError::ChecksumMismatch {
                stored: view.header.crc,
                computed,
            });
        }
        Ok((view, rest))
    }

    /// [`BatchView::parse`] without the checksum check: the header decodes and the batch fits
    /// in `buf`. For a reader that checks the bytes itself later, as a follower does in
    /// [`RecordBatch::from_bytes`] (the leader's fetch path would otherwise hash every batch
    /// once more per follower).
    pub fn parse_unverified(buf: &'a [u8]) -> Result<(BatchView<'a>, &'a [u8]), DecodeError> {
        let header = BatchHeader::decode(buf)?;
        let len = header.batch_length as usize;
        let (bytes, rest) = match (buf.get(..len), buf.get(len..)) {
            (Some(b), Some(r)) => (b, r),
            _ => {
                return Err(DecodeError::TooShort {
                    need: len as u64,
                    have: buf.len() as u64,
                })
            }
        };
        Ok((BatchView { header, bytes }, rest))
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the batch's first record.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    /// Total bytes of the batch, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the view holds no byte (never true for a decoded batch).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Iterates the records. Each item is a `Result`: record bytes are decoded lazily.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: self.bytes.get(RECORDS_OFFSET..).unwrap_or(&[]),
            index: 0,
            count: self.header.record_count as u32,
            base_timestamp: self.header.base_timestamp,
        }
    }

    /// Decodes every record and checks count, offset deltas, that records fill the batch, and
    /// that the header's max timestamp is the records' largest (the time index trusts it).
    pub fn verify_records(&self) -> Result<(), DecodeError> {
        let mut found = 0u32;
        let mut max_ts = i64::MIN;
        for rec in self.records() {
            let rec = rec?;
            if rec.offset_delta != found as i32 {
                return Err(DecodeError::BadRecord {
                    index: found,
                    reason: "offset delta",
                });
            }
            max_ts = max_ts.max(rec.timestamp);
            found += 1;
        }
        if found > 0 && max_ts != self.header.max_timestamp {
            return Err(DecodeError::BadField {
                field: "max_timestamp",
                value: self.header.max_timestamp,
            });
        }
        let declared = self.header.record_count as u32;
        if found != declared {
            return Err(DecodeError::RecordCountMismatch { declared, found });
        }
        Ok(())
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's offset minus its batch's base offset.
    pub offset_delta: i32,
    /// The record's timestamp (ms since the epoch, as the client set it).
    pub timestamp: i64,
    /// The key; `None` for a null key (distinct from an empty one).
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The encoded headers (count already consumed); see [`Record::headers`].
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> Record<'a> {
    /// Iterates `(key, value)` headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers,
            pos: 0,
            left: self.header_count,
        }
    }
}

/// The `len` bytes at `*pos` (`None` for -1, a null field), advancing `*pos` past them.
#[inline]
fn take<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    len: i32,
    index: u32,
) -> Result<Option<&'a [u8]>, DecodeError> {
    if len == -1 {
        return Ok(None);
    }
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|len| buf.get(*pos..)?.get(..len));
    match bytes {
        Some(bytes) => {
            *pos += bytes.len();
            Ok(Some(bytes))
        }
        None => Err(DecodeError::BadRecord {
            index,
            reason: "field length",
        }),
    }
}

/// The `len` bytes at the front of `*buf` (`None` for -1, a null field), advancing `*buf` past
/// them.
#[inline(always)]
fn take_front<'a>(
    buf: &mut &'a [u8],
    len: i32,
    index: u32,
) -> Result<Option<&'a [u8]>, DecodeError> {
    if len == -1 {
        return Ok(None);
    }
    match usize::try_from(len)
        .ok()
        .and_then(|len| buf.split_at_checked(len))
    {
        Some((bytes, rest)) => {
            *buf = rest;
            Ok(Some(bytes))
        }
        None => Err(DecodeError::BadRecord {
            index,
            reason: "field length",
        }),
    }
}

/// Lazily decodes the records of a batch.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    /// The bytes from the next record to the end of the batch.
    rest: &'a [u8],
    index: u32,
    count: u32,
    base_timestamp: i64,
}

impl<'a> RecordIter<'a> {
    /// Decodes the record at the front of `self.rest` and moves past it. The record's length
    /// varint is checked against the batch once; every field is then read from the front of the
    /// record's own bytes, each read checked against what is left of them. The common varints
    /// take the inline one- and two-byte path (`varint::read_varint`).
    #[inline(always)]
    fn decode_one(&mut self) -> Result<Record<'a>, DecodeError> {
        let index = self.index;
        let bad = |reason| DecodeError::BadRecord { index, reason };
        let mut rest = self.rest;
        let Ok(len) = read_varint(&mut rest) else {
            return Err(bad("length varint"));
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(bad("negative length"));
        };
        let Some((body, after)) = rest.split_at_checked(len) else {
            return Err(bad("length past batch end"));
        };
        // The attributes byte (written 0, ignored on read).
        let Some((_attributes, mut b)) = body.split_first() else {
            return Err(bad("attributes"));
        };
        let Ok(ts_delta) = read_varlong(&mut b) else {
            return Err(bad("timestamp delta"));
        };
        let Ok(offset_delta) = read_varint(&mut b) else {
            return Err(bad("offset delta"));
        };
        let Ok(key_len) = read_varint(&mut b) else {
            return Err(bad("key length"));
        };
        let key = take_front(&mut b, key_len, index)?;
        let Ok(value_len) = read_varint(&mut b) else {
            return Err(bad("value length"));
        };
        let value = take_front(&mut b, value_len, index)?;
        let Ok(header_count) = read_varint(&mut b) else {
            return Err(bad("header count"));
        };
        let Ok(header_count) = u32::try_from(header_count) else {
            return Err(bad("header count"));
        };
        let headers = b;
        if header_count == 0 {
            if !headers.is_empty() {
                return Err(bad("trailing bytes"));
            }
        } else {
            Self::check_headers(headers, header_count, index)?;
        }
        self.rest = after;
        Ok(Record {
            offset_delta,
            timestamp: self.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
            header_count,
        })
    }

    /// Walks a record's headers once so a malformed one is reported when the record is
    /// decoded, not later by [`Record::headers`].
    #[inline(never)]
    fn check_headers(headers: &[u8], count: u32, index: u32) -> Result<(), DecodeError> {
        let bad = |reason| DecodeError::BadRecord { index, reason };
        let mut walk = HeaderIter {
            buf: headers,
            pos: 0,
            left: count,
        };
        for h in walk.by_ref() {
            h.map_err(|_| bad("header"))?;
        }
        if walk.pos != headers.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(())
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            if !self.rest.is_empty() {
                self.rest = &[];
                return Some(Err(DecodeError::BadRecord {
                    index: self.index,
                    reason: "bytes after the last record",
                }));
            }
            return None;
        }
        let item = self.decode_one();
        self.index += 1;
        if item.is_err() {
            self.index = self.count;
            self.rest = &[];
        }
        Some(item)
    }
}

/// Iterates `(key, value)` record headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut one = || {
            let klen = get_varint(self.buf, &mut self.pos)?;
            let key = take(self.buf, &mut self.pos, klen, 0)?.ok_or(DecodeError::BadRecord {
                index: 0,
                reason: "null header key",
            })?;
            let vlen = get_varint(self.buf, &mut self.pos)?;
            let value = take(self.buf, &mut self.pos, vlen, 0)?;
            Ok((key, value))
        };
        let item = one();
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }
}

/// The fields the log writes into a batch at append: they are covered by the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Epoch of the leader appending the batch.
    pub leader_epoch: LeaderEpoch,
    /// The log's clock at append (ms since the epoch); -1 while unstamped.
    pub append_timestamp: i64,
}

impl Stamp {
    /// What a freshly built batch carries until the log stamps it.
    pub const UNSTAMPED: Stamp = Stamp {
        base_offset: 0,
        leader_epoch: -1,
        append_timestamp: -1,
    };
}

/// An owned, valid batch ready to append: produced by [`BatchBuilder`] or validated by
/// [`RecordBatch::from_bytes`]. It caches the checksum of its tail so the log can stamp a base
/// offset and leader epoch without re-hashing the records.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    header: BatchHeader,
    tail_crc: u32,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch: header, checksum and every record. Of the
    /// attribute bits only transactional and control are accepted (a control batch must be a
    /// COMMIT/ABORT marker, `format::control`); the others are refused until the features they
    /// announce exist (compression, LogAppendTime): a client must not be able to write a batch
    /// the log would misread. Whether a client may append a control batch is the log's rule.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<RecordBatch, DecodeError> {
        Self::validated(bytes, true)
    }

    /// [`RecordBatch::from_bytes`] for a follower appending its leader's batch: header,
    /// length, attributes and checksum are checked, the records are not parsed again. The
    /// checksum shows the bytes are the ones the leader stored, and the leader parsed every
    /// record when it accepted the batch (`from_bytes`) or built it (`BatchBuilder`).
    pub fn from_replicated_bytes(bytes: Vec<u8>) -> Result<RecordBatch, DecodeError> {
        Self::validated(bytes, false)
    }

    fn validated(bytes: Vec<u8>, parse_records: bool) -> Result<RecordBatch, DecodeError> {
        let (view, rest) = BatchView::parse_unverified(&bytes)?;
        // The tail's checksum is kept for stamping; the batch's follows from it and the 17-byte
        // prefix (a second pass over a short tail, a combine for a long one: `prefixed_crc`).
        let tail = bytes.get(ATTRIBUTES_OFFSET..view.len()).unwrap_or(&[]);
        let tail_crc = crc32fast::hash(tail);
        let prefix = bytes.get(..CRC_OFFSET).unwrap_or(&[]);
        let computed = prefixed_crc(prefix, tail, tail_crc);
        if computed != view.header().crc {
            return Err(DecodeError::ChecksumMismatch {
                stored: view.header().crc,
                computed,
            });
        }
        if view.header().attributes & !attributes::SUPPORTED != 0 {
            return Err(DecodeError::BadField {
                field: "attributes",
                value: i64::from(view.header().attributes),
            });
        }
        super::control::Marker::of(&view)?;
        if !rest.is_empty() {
            return Err(DecodeError::BadLength {
                length: bytes.len() as u64,
            });
        }
        if parse_records {
            view.verify_records()?;
        }
        let header = *view.header();
        Ok(RecordBatch {
            bytes,
            header,
            tail_crc,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included, as it will be stored (the stamp aside).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Total bytes of the batch, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the batch holds no byte (never true for a decoded or built batch).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Records in the batch.
    pub fn record_count(&self) -> u32 {
        self.header.record_count as u32
    }

    /// A borrowed view of the batch, for reading its records.
    pub fn view(&self) -> BatchView<'_> {
        BatchView {
            header: self.header,
            bytes: &self.bytes,
        }
    }

    /// Copies the batch into `dst` (exactly `self.len()` bytes) with a new base offset, leader
    /// epoch and append timestamp, and writes the checksum of the new prefix with the cached
    /// tail (`prefixed_crc`).
    pub fn write_stamped(&self, dst: &mut [u8], stamp: Stamp) {
        assert_eq!(
            dst.len(),
            self.bytes.len(),
            "destination must fit the batch exactly"
        );
        dst.copy_from_slice(&self.bytes);
        let mut prefix = [0u8; CRC_OFFSET];
        prefix.copy_from_slice(self.bytes.get(..CRC_OFFSET).unwrap_or(&[0; CRC_OFFSET]));
        prefix[BASE_OFFSET_OFFSET..LENGTH_OFFSET].copy_from_slice(&stamp.base_offset.to_le_bytes());
        prefix[LEADER_EPOCH_OFFSET..APPEND_TIMESTAMP_OFFSET]
            .copy_from_slice(&stamp.leader_epoch.to_le_bytes());
        prefix[APPEND_TIMESTAMP_OFFSET..MAGIC_OFFSET]
            .copy_from_slice(&stamp.append_timestamp.to_le_bytes());
        let tail = self.bytes.get(ATTRIBUTES_OFFSET..).unwrap_or(&[]);
        let crc = prefixed_crc(&prefix, tail, self.tail_crc);
        if let Some(head) = dst.get_mut(..CRC_OFFSET) {
            head.copy_from_slice(&prefix);
        }
        if let Some(field) = dst.get_mut(CRC_OFFSET..ATTRIBUTES_OFFSET) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// An unstamped batch of `header` and the encoded records in `buf` (`buf[..HEADER_SIZE]` is
    /// overwritten): the header is checked, encoded, and both checksums computed. What
    /// [`BatchBuilder::build`] finishes with and [`RecordBatch::set_producer`] redoes.
    fn sealed(header: BatchHeader, mut buf: Vec<u8>) -> Result<RecordBatch, DecodeError> {
        header.check_fields()?;
        if buf.len() != header.batch_length as usize {
            return Err(DecodeError::BadLength {
                length: buf.len() as u64,
            });
        }
        encode_header(&header, &mut buf);
        let tail_crc = crc32fast::hash(buf.get(ATTRIBUTES_OFFSET..).unwrap_or(&[]));
        let batch = RecordBatch {
            bytes: buf,
            header,
            tail_crc,
        };
        Ok(batch.stamped(Stamp::UNSTAMPED))
    }

    /// The same records under another producer id, epoch and base sequence, unstamped: what
    /// the `Producer` handle re-sends after an epoch bump, without keeping the builder. The
    /// producer fields are inside the tail, so both checksums are computed again.
    pub fn set_producer(
        &mut self,
        id: ProducerId,
        epoch: ProducerEpoch,
        base_sequence: Sequence,
    ) -> Result<(), DecodeError> {
        let header = BatchHeader {
            base_offset: Stamp::UNSTAMPED.base_offset,
            leader_epoch: Stamp::UNSTAMPED.leader_epoch,
            append_timestamp: Stamp::UNSTAMPED.append_timestamp,
            crc: 0,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence,
            ..self.header
        };
        header.check_fields()?; // before the bytes are taken: an error leaves `self` intact
        *self = RecordBatch::sealed(header, std::mem::take(&mut self.bytes))?;
        Ok(())
    }

    /// A copy with a new stamp (used by tests and replication).
    pub fn stamped(&self, stamp: Stamp) -> RecordBatch {
        let mut bytes = vec![0u8; self.bytes.len()];
        self.write_stamped(&mut bytes, stamp);
        let mut header = self.header;
        header.base_offset = stamp.base_offset;
        header.leader_epoch = stamp.leader_epoch;
        header.append_timestamp = stamp.append_timestamp;
        header.crc = le::u32_at(&bytes, CRC_OFFSET).unwrap_or(0);
        RecordBatch {
            bytes,
            header,
            tail_crc: self.tail_crc,
        }
    }
}

/// Encodes records into a [`RecordBatch`] (Kafka v2 record encoding, no compression).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
    base_sequence: Sequence,
    attributes: u16,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty builder with room for 4 KiB of batch.
    pub fn new() -> BatchBuilder {
        Self::with_capacity(4096)
    }

    /// An empty builder with room for `bytes` bytes (at least the header) before it grows.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_SIZE));
        buf.resize(HEADER_SIZE, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id: ProducerId::NONE,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
        }
    }

    /// Marks the batch idempotent: producer id, epoch and the sequence of its first record.
    pub fn producer(
        mut self,
        id: ProducerId,
        epoch: ProducerEpoch,
        base_sequence: Sequence,
    ) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch transactional: it opens (or continues) its producer's transaction, and
    /// `read_committed` readers see it only once a COMMIT marker decides it
    /// (docs/transactions.md). Needs a producer (`producer`).
    pub fn transactional(mut self) -> Self {
        self.attributes |= attributes::TRANSACTIONAL;
        self
    }

    /// Sets attribute bits (the control-batch builder uses it).
    pub(crate) fn attributes(mut self, bits: u16) -> Self {
        self.attributes |= bits;
        self
    }

    /// Sets the producer fields in place (used by the `Producer` handle when it assigns
    /// sequences to an already-filled builder).
    pub fn set_producer(&mut self, id: ProducerId, epoch: ProducerEpoch, base_sequence: Sequence) {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Bytes the batch would have if built now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record with no headers.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> &mut Self {
        self.push_with_headers(timestamp, key, value, &[])
    }

    /// Appends a record. Header keys are UTF-8 in Kafka; here they are plain bytes.
    pub fn push_with_headers(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(base);
        let offset_delta = self.count;
        let field_len = |b: Option<&[u8]>| match b {
            None => varint_len(-1),
            Some(b) => varint_len(len_i32(b.len())) + b.len(),
        };
        let mut body_len = 1 + varlong_len(ts_delta) + varint_len(offset_delta);
        body_len += field_len(key) + field_len(value);
        body_len += varint_len(len_i32(headers.len()));
        for (hk, hv) in headers {
            body_len += field_len(Some(hk)) + field_len(*hv);
        }
        let out = &mut self.buf;
        put_varint(out, len_i32(body_len));
        out.push(0);
        put_varlong(out, ts_delta);
        put_varint(out, offset_delta);
        let put_field = |out: &mut Vec<u8>, b: Option<&[u8]>| match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, len_i32(b.len()));
                out.extend_from_slice(b);
            }
        };
        put_field(out, key);
        put_field(out, value);
        put_varint(out, len_i32(headers.len()));
        for (hk, hv) in headers {
            put_field(out, Some(hk));
            put_field(out, *hv);
        }
        self.count += 1;
        self
    }

    /// Finishes the batch: base offset 0 and leader epoch -1 until the log stamps them.
    pub fn build(self) -> Result<RecordBatch, DecodeError> {
        let BatchBuilder { buf, count, .. } = self;
        if count == 0 {
            return Err(DecodeError::BadField {
                field: "record_count",
                value: 0,
            });
        }
        let batch_length = u32::try_from(buf.len())
            .ok()
            .filter(|&l| l <= MAX_BATCH_SIZE)
            .ok_or(DecodeError::BadLength {
                length: buf.len() as u64,
            })?;
        let header = BatchHeader {
            base_offset: 0,
            batch_length,
            leader_epoch: -1,
            append_timestamp: -1,
            magic: MAGIC,
            crc: 0,
            attributes: self.attributes,
            last_offset_delta: count - 1,
            base_timestamp: self.base_timestamp.unwrap_or(-1),
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: count,
        };
        RecordBatch::sealed(header, buf)
    }
}

fn len_i32(len: usize) -> i32 {
    // Batches are at most MAX_BATCH_SIZE (1 GiB) bytes; build() rejects longer ones, so a field
    // longer than i32::MAX is clamped here and rejected there.
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Writes every header field except the checksum into `buf[..HEADER_SIZE]`.
// Format: { base_offset | batch_length | leader_epoch | magic | crc | attributes | ... }
fn encode_header(h: &BatchHeader, buf: &mut [u8]) {
    let Some(out) = buf.get_mut(..HEADER_SIZE) else {
        return;
    };
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = out.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(BASE_OFFSET_OFFSET, &h.base_offset.to_le_bytes());
    put(LENGTH_OFFSET, &h.batch_length.to_le_bytes());
    put(LEADER_EPOCH_OFFSET, &h.leader_epoch.to_le_bytes());
    put(APPEND_TIMESTAMP_OFFSET, &h.append_timestamp.to_le_bytes());
    put(MAGIC_OFFSET, &[h.magic]);
    put(CRC_OFFSET, &h.crc.to_le_bytes());
    put(ATTRIBUTES_OFFSET, &h.attributes.to_le_bytes());
    put(LAST_OFFSET_DELTA_OFFSET, &h.last_offset_delta.to_le_bytes());
    put(BASE_TIMESTAMP_OFFSET, &h.base_timestamp.to_le_bytes());
    put(MAX_TIMESTAMP_OFFSET, &h.max_timestamp.to_le_bytes());
    put(PRODUCER_ID_OFFSET, &h.producer_id.0.to_le_bytes());
    put(PRODUCER_EPOCH_OFFSET, &h.producer_epoch.to_le_bytes());
    put(BASE_SEQUENCE_OFFSET, &h.base_sequence.to_le_bytes());
    put(RECORD_COUNT_OFFSET, &h.record_count.to_le_bytes());
}
