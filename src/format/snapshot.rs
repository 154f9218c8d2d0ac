//! Producer-state snapshot: the whole producer table as of a log offset.
//!
//! ```text
//! Format: { magic "OLPS" | version u8 | flags u8 | reserved u16 | snapshot_offset u64 |
//!           producer_count u32 | crc u32 | entries }
//! entry:  { pid_delta varlong | epoch varint | entry_flags u8 | last_append_delta varlong |
//!           [txn_first_offset varlong] | [coordinator_epoch varint] | [marker_offset varlong] |
//!           batches, newest first }
//! newest: { last_offset_delta varlong | span varlong | [seq_span varint] | last_seq varint |
//!           time_delta varlong }
//! older:  { offset_gap varlong | span varlong | [seq_span varint] | seq_gap varint |
//!           time_delta varlong }
//! ```
//!
//! Fixed-width fields are little-endian; varints are Kafka's zig-zag varints (`varint.rs`). The
//! CRC-32 (IEEE, crc32fast) covers every byte except the crc field. Entries are sorted by producer
//! id and every number is a delta from its neighbour, so a producer with 5 batches takes about
//! 30-40 bytes (Kafka stores 46 bytes for only the newest batch; we keep all 5, closing the
//! restart dedup gap). `docs/producer-idempotence.md` has the byte table and the delta rules:
//!
//! - `pid_delta` = pid - previous pid (-1 before the first entry), always >= 1;
//! - `entry_flags`: bits 0-2 batch count (0..=5), bit 3 `txn_first_offset` present, bit 4
//!   `coordinator_epoch` present (version 2; absent means -1, no marker seen), bit 5
//!   `marker_offset` present (version 2: the offset of the producer's latest marker), bit 6
//!   the window's tail is unverified (version 3: `ProducerEntry::tail_unverified`), bit 7 0;
//! - versions 1 (before transaction markers: no bits 4 and 5) and 2 (no bit 6) are still read;
//! - `last_append_delta` = last_append_ms - previous entry's (0 before the first), wrapping;
//! - `last_offset_delta` = newest last_offset - previous entry's newest last_offset (0 at first);
//! - `span` = last_offset - first_offset when the batch is *normal* (its sequence span equals its
//!   offset span); otherwise `!span` (negative) followed by `seq_span` = last_seq - first_seq
//!   mod 2^31. Zig-zag makes that one flag bit;
//! - newest `time_delta` = append_time - last_append_ms; older `time_delta` = newer append_time
//!   - this append_time (both wrapping);
//! - `offset_gap` = newer.first_offset - last_offset - 1 (>= 0, log order);
//! - `seq_gap` = newer.first_seq - last_seq - 1 mod 2^31, centred on [-2^30, 2^30) (0 when
//!   contiguous, including across the wrap after i32::MAX).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use super::varint::{get_varlong, put_varint, put_varlong};
use super::{le, DecodeError};
use crate::producer::{
    BatchMetadata, ProducerEntry, ProducerStateManager, BATCHES_RETAINED, NO_COORDINATOR_EPOCH,
};
use crate::types::{seq_add, seq_distance, ProducerId};

/// The magic bytes every such file starts with.
pub const MAGIC: [u8; 4] = *b"OLPS";
/// Version 2 added the coordinator epoch of a producer's latest marker (entry flag bit 4) and
/// its offset (bit 5); version 3 the unverified-tail flag (bit 6).
pub const VERSION: u8 = 3;
/// The oldest version `decode` reads.
pub const OLDEST_VERSION: u8 = 1;
/// Byte position of the `magic` field in the file.
pub const MAGIC_OFFSET: usize = 0;
/// Byte position of the `version` field in the file.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
/// Byte position of the `flags` field in the file.
pub const FLAGS_OFFSET: usize = VERSION_OFFSET + 1;
/// Byte position of the `reserved` field in the file.
pub const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
/// Byte position of the `snapshot_offset` field in the file.
pub const SNAPSHOT_OFFSET_OFFSET: usize = RESERVED_OFFSET + 2;
/// Byte position of the `count` field in the file.
pub const COUNT_OFFSET: usize = SNAPSHOT_OFFSET_OFFSET + 8;
/// Byte position of the `crc` field in the file.
pub const CRC_OFFSET: usize = COUNT_OFFSET + 4;
/// Byte position of the first entry (the header's end).
pub const ENTRIES_OFFSET: usize = CRC_OFFSET + 4;
/// Size of the fixed header.
pub const HEADER_SIZE: usize = ENTRIES_OFFSET;
const _: () = assert!(HEADER_SIZE == 24);

/// Entry flag bits 0-2: the number of retained batches.
pub const ENTRY_BATCH_COUNT_MASK: u8 = 0x07;
/// Entry flag bit 3: a `txn_first_offset` varlong follows.
pub const ENTRY_HAS_TXN: u8 = 0x08;
/// Entry flag bit 4 (version 2): a `coordinator_epoch` varint follows.
pub const ENTRY_HAS_COORDINATOR: u8 = 0x10;
/// Entry flag bit 5 (version 2): a `marker_offset` varlong follows.
pub const ENTRY_HAS_MARKER: u8 = 0x20;
/// Entry flag bit 6 (version 3): the window may end before batches the log no longer holds.
pub const ENTRY_TAIL_UNVERIFIED: u8 = 0x40;
const _: () = assert!(BATCHES_RETAINED <= ENTRY_BATCH_COUNT_MASK as usize);

/// The smallest encoded entry: pid delta, epoch, flags, last-append delta (one byte each).
const MIN_ENTRY_SIZE: usize = 4;
const SEQ_RING: i64 = 1 << 31;
const HALF_RING: i64 = 1 << 30;

/// Encodes the table of `state` as of log offset `offset` (normally `state.map_end_offset()`).
pub fn encode(offset: u64, state: &ProducerStateManager) -> Vec<u8> {
    assert!(
        u32::try_from(state.len()).is_ok(),
        "more than u32::MAX producers"
    );
    let count = u32::try_from(state.len()).unwrap_or(u32::MAX);
    // Format: { magic | version | flags | reserved | snapshot_offset | count | crc | entries }
    let mut out = Vec::with_capacity(HEADER_SIZE + state.len() * 40);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len(), ENTRIES_OFFSET);

    let mut prev_pid: i64 = -1;
    let mut prev_append_ms: i64 = 0;
    let mut prev_last_offset: i64 = 0;
    for (pid, entry) in state.entries() {
        // Format: { pid_delta | epoch | entry_flags | last_append_delta | [txn] | batches }
        put_varlong(&mut out, pid.0 - prev_pid);
        prev_pid = pid.0;
        put_varint(&mut out, i32::from(entry.epoch));
        let n = u8::try_from(entry.batches().len()).unwrap_or(0);
        let txn = if entry.txn_first_offset.is_some() {
            ENTRY_HAS_TXN
        } else {
            0
        };
        let coordinator = if entry.coordinator_epoch != NO_COORDINATOR_EPOCH {
            ENTRY_HAS_COORDINATOR
        } else {
            0
        };
        let marker = if entry.marker_offset.is_some() {
            ENTRY_HAS_MARKER
        } else {
            0
        };
        let unverified = if entry.tail_unverified {
            ENTRY_TAIL_UNVERIFIED
        } else {
            0
        };
        out.push(n | txn | coordinator | marker | unverified);
        put_varlong(&mut out, entry.last_append_ms.wrapping_sub(prev_append_ms));
        prev_append_ms = entry.last_append_ms;
        if let Some(o) = entry.txn_first_offset {
            put_varlong(&mut out, offset_i64(o));
        }
        if coordinator != 0 {
            put_varint(&mut out, entry.coordinator_epoch);
        }
        if let Some(o) = entry.marker_offset {
            put_varlong(&mut out, offset_i64(o));
        }
        let mut newer: Option<&BatchMetadata> = None;
        for b in entry.batches().rev() {
            match newer {
                None => {
                    // Format: { last_offset_delta | span | [seq_span] | last_seq | time_delta }
                    put_varlong(&mut out, offset_i64(b.last_offset) - prev_last_offset);
                    prev_last_offset = offset_i64(b.last_offset);
                    put_span(&mut out, b);
                    put_varint(&mut out, b.last_seq);
                    put_varlong(
                        &mut out,
                        b.append_time_ms.wrapping_sub(entry.last_append_ms),
                    );
                }
                Some(n) => {
                    // Format: { offset_gap | span | [seq_span] | seq_gap | time_delta }
                    put_varlong(
                        &mut out,
                        offset_i64(n.first_offset) - offset_i64(b.last_offset) - 1,
                    );
                    put_span(&mut out, b);
                    let mut gap = seq_distance(b.last_seq, n.first_seq) - 1;
                    if gap >= HALF_RING {
                        gap -= SEQ_RING;
                    }
                    put_varlong(&mut out, gap);
                    put_varlong(&mut out, n.append_time_ms.wrapping_sub(b.append_time_ms));
                }
            }
            newer = Some(b);
        }
    }

    let crc = checksum(&out).to_le_bytes();
    if let Some(dst) = out.get_mut(CRC_OFFSET..ENTRIES_OFFSET) {
        dst.copy_from_slice(&crc);
    }
    out
}

/// Offsets in the table are `<= i64::MAX` (state invariant I2/I3).
fn offset_i64(o: u64) -> i64 {
    debug_assert!(o <= i64::MAX as u64);
    i64::try_from(o).unwrap_or(i64::MAX)
}

fn put_span(out: &mut Vec<u8>, b: &BatchMetadata) {
    let offset_span = offset_i64(b.last_offset - b.first_offset);
    let seq_span = seq_distance(b.first_seq, b.last_seq);
    if seq_span == offset_span {
        put_varlong(out, offset_span);
    } else {
        put_varlong(out, !offset_span);
        put_varlong(out, seq_span);
    }
}

fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(buf.get(..CRC_OFFSET).unwrap_or(&[]));
    h.update(buf.get(ENTRIES_OFFSET..).unwrap_or(&[]));
    h.finalize()
}

/// Decodes a snapshot into its offset and its entries (sorted by producer id, each satisfying
/// the state invariants), ready for [`ProducerStateManager::from_entries`]. Never panics.
#[allow(clippy::type_complexity)]
pub fn decode(bytes: &[u8]) -> Result<(u64, Vec<(ProducerId, ProducerEntry)>), DecodeError> {
    if bytes.len() < HEADER_SIZE {
        return Err(DecodeError::TooShort {
            need: HEADER_SIZE as u64,
            have: bytes.len() as u64,
        });
    }
    let magic = le::u32_at(bytes, MAGIC_OFFSET)?;
    if magic != u32::from_le_bytes(MAGIC) {
        return Err(DecodeError::BadField {
            field: "snapshot magic",
            value: i64::from(magic),
        });
    }
    let version = le::u8_at(bytes, VERSION_OFFSET)?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let flags = le::u8_at(bytes, FLAGS_OFFSET)?;
    if flags != 0 {
        return Err(DecodeError::BadField {
            field: "snapshot flags",
            value: i64::from(flags),
        });
    }
    let reserved = le::u16_at(bytes, RESERVED_OFFSET)?;
    if reserved != 0 {
        return Err(DecodeError::BadField {
            field: "snapshot reserved",
            value: i64::from(reserved),
        });
    }
    let offset = le::u64_at(bytes, SNAPSHOT_OFFSET_OFFSET)?;
    let count = le::u32_at(bytes, COUNT_OFFSET)?;
    let stored = le::u32_at(bytes, CRC_OFFSET)?;
    let computed = checksum(bytes);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }

    let body = bytes.get(ENTRIES_OFFSET..).unwrap_or(&[]);
    // A hostile count cannot make us allocate more than the bytes could hold.
    let capacity = (count as usize).min(body.len() / MIN_ENTRY_SIZE);
    let mut entries = Vec::with_capacity(capacity);
    let mut cursor = Cursor {
        buf: body,
        version,
        pos: 0,
        prev_pid: -1,
        prev_append_ms: 0,
        prev_last_offset: 0,
    };
    for index in 0..count {
        let entry = cursor
            .entry()
            .map_err(|reason| DecodeError::BadSnapshotEntry {
                index: u64::from(index),
                reason,
            })?;
        entries.push(entry);
    }
    if cursor.pos != body.len() {
        return Err(DecodeError::BadSnapshotEntry {
            index: u64::from(count),
            reason: "trailing bytes after the last entry",
        });
    }
    Ok((offset, entries))
}

/// Decoding state: the position and the previous values deltas are relative to.
struct Cursor<'a> {
    buf: &'a [u8],
    version: u8,
    pos: usize,
    prev_pid: i64,
    prev_append_ms: i64,
    prev_last_offset: i64,
}

type Why = &'static str;

impl Cursor<'_> {
    fn var(&mut self) -> Result<i64, Why> {
        get_varlong(self.buf, &mut self.pos).map_err(|_| "truncated or malformed varint")
    }

    fn byte(&mut self) -> Result<u8, Why> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    fn entry(&mut self) -> Result<(ProducerId, ProducerEntry), Why> {
        let pid_delta = self.var()?;
        if pid_delta < 1 {
            return Err("producer ids not strictly increasing");
        }
        let pid = self
            .prev_pid
            .checked_add(pid_delta)
            .ok_or("producer id overflows")?;
        self.prev_pid = pid;
        let epoch = i16::try_from(self.var()?)
            .ok()
            .filter(|e| *e >= 0)
            .ok_or("producer epoch out of range")?;
        let flags = self.byte()?;
        let known = match self.version {
            1 => ENTRY_BATCH_COUNT_MASK | ENTRY_HAS_TXN,
            2 => ENTRY_BATCH_COUNT_MASK | ENTRY_HAS_TXN | ENTRY_HAS_COORDINATOR | ENTRY_HAS_MARKER,
            _ => {
                ENTRY_BATCH_COUNT_MASK
                    | ENTRY_HAS_TXN
                    | ENTRY_HAS_COORDINATOR
                    | ENTRY_HAS_MARKER
                    | ENTRY_TAIL_UNVERIFIED
            }
        };
        if flags & !known != 0 {
            return Err("unknown entry flags");
        }
        let n = usize::from(flags & ENTRY_BATCH_COUNT_MASK);
        if n > BATCHES_RETAINED {
            return Err("more than 5 batches");
        }
        let last_append_ms = self.prev_append_ms.wrapping_add(self.var()?);
        self.prev_append_ms = last_append_ms;
        let txn_first_offset = if flags & ENTRY_HAS_TXN != 0 {
            let o = self.var()?;
            Some(u64::try_from(o).map_err(|_| "negative transaction first offset")?)
        } else {
            None
        };
        let coordinator_epoch = if flags & ENTRY_HAS_COORDINATOR != 0 {
            i32::try_from(self.var()?)
                .ok()
                .filter(|e| *e >= 0)
                .ok_or("coordinator epoch out of range")?
        } else {
            NO_COORDINATOR_EPOCH
        };
        let marker_offset = if flags & ENTRY_HAS_MARKER != 0 {
            let o = self.var()?;
            Some(u64::try_from(o).map_err(|_| "negative marker offset")?)
        } else {
            None
        };

        let mut newest_first: Vec<BatchMetadata> = Vec::with_capacity(n);
        for _ in 0..n {
            let b = match newest_first.last() {
                None => {
                    let last_offset = self
                        .prev_last_offset
                        .checked_add(self.var()?)
                        .filter(|o| *o >= 0)
                        .ok_or("offset out of range")?;
                    self.prev_last_offset = last_offset;
                    let (offset_span, seq_span) = self.span()?;
                    let last_seq = i32::try_from(self.var()?)
                        .ok()
                        .filter(|s| *s >= 0)
                        .ok_or("sequence out of range")?;
                    let append_time_ms = last_append_ms.wrapping_add(self.var()?);
                    batch(last_offset, offset_span, last_seq, seq_span, append_time_ms)?
                }
                Some(newer) => {
                    let newer = *newer;
                    let gap = self.var()?;
                    if gap < 0 {
                        return Err("batches out of log order");
                    }
                    let last_offset = offset_i64(newer.first_offset)
                        .checked_sub(1)
                        .and_then(|o| o.checked_sub(gap))
                        .filter(|o| *o >= 0)
                        .ok_or("offset out of range")?;
                    let (offset_span, seq_span) = self.span()?;
                    let seq_gap = self.var()?;
                    if !(-HALF_RING..HALF_RING).contains(&seq_gap) {
                        return Err("sequence gap out of range");
                    }
                    let last_seq = seq_add(newer.first_seq, -1 - seq_gap);
                    let append_time_ms = newer.append_time_ms.wrapping_sub(self.var()?);
                    batch(last_offset, offset_span, last_seq, seq_span, append_time_ms)?
                }
            };
            newest_first.push(b);
        }
        newest_first.reverse();
        let mut entry = ProducerEntry::new(epoch, &newest_first, last_append_ms, txn_first_offset)
            .ok_or("entry breaks a producer-state invariant")?;
        entry.coordinator_epoch = coordinator_epoch;
        entry.marker_offset = marker_offset;
        entry.tail_unverified = flags & ENTRY_TAIL_UNVERIFIED != 0;
        Ok((ProducerId(pid), entry))
    }

    /// `(offset_span, seq_span)`.
    fn span(&mut self) -> Result<(i64, i64), Why> {
        let v = self.var()?;
        if v >= 0 {
            if v >= SEQ_RING {
                return Err("normal batch spans more sequences than exist");
            }
            Ok((v, v))
        } else {
            let seq_span = self.var()?;
            if !(0..SEQ_RING).contains(&seq_span) {
                return Err("sequence span out of range");
            }
            Ok((!v, seq_span))
        }
    }
}

fn batch(
    last_offset: i64,
    offset_span: i64,
    last_seq: i32,
    seq_span: i64,
    append_time_ms: i64,
) -> Result<BatchMetadata, Why> {
    let first_offset = last_offset
        .checked_sub(offset_span)
        .filter(|o| *o >= 0)
        .ok_or("offset out of range")?;
    Ok(BatchMetadata {
        first_seq: seq_add(last_seq, -seq_span),
        last_seq,
        first_offset: first_offset.unsigned_abs(),
        last_offset: last_offset.unsigned_abs(),
        append_time_ms,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::producer::ProducerConfig;
    use proptest::prelude::*;

    const CFG: ProducerConfig = ProducerConfig {
        expiration_ms: 86_400_000,
        max_producers: usize::MAX / 2,
    };

    fn round_trip_bytes(bytes: Vec<u8>) -> ProducerStateManager {
        let (offset, entries) = decode(&bytes).unwrap();
        ProducerStateManager::from_entries(CFG, entries, offset)
    }

    fn round_trip(state: &ProducerStateManager) -> ProducerStateManager {
        let bytes = encode(state.map_end_offset(), state);
        let (offset, entries) = decode(&bytes).unwrap();
        ProducerStateManager::from_entries(state.config(), entries, offset)
    }

    /// 1,000,000 producers with 5 batches each, written the way a busy partition sees them:
    /// sequential ids, 1,000 producers active at a time interleaving their batches of 48..80
    /// records, one batch per millisecond of log clock.
    #[test]
    fn a_million_producers_fit_in_64_bytes_each() {
        const PRODUCERS: usize = 1_000_000;
        const ACTIVE: usize = 1_000;
        let mut state = ProducerStateManager::new(CFG);
        let mut offset: u64 = 0;
        let mut now: i64 = 1_780_000_000_000;
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut pid: i64 = 0;
        for _group in 0..PRODUCERS / ACTIVE {
            let mut next_seq = [0i32; ACTIVE];
            for _round in 0..5 {
                for (i, seq) in next_seq.iter_mut().enumerate() {
                    rng = rng
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let records = 48 + (rng >> 59) as i32;
                    let meta = BatchMetadata {
                        first_seq: *seq,
                        last_seq: *seq + records - 1,
                        first_offset: offset,
                        last_offset: offset + records as u64 - 1,
                        append_time_ms: now,
                    };
                    state.record(ProducerId(pid + i as i64), 0, meta);
                    *seq += records;
                    offset += records as u64;
                    now += 1;
                }
            }
            pid += ACTIVE as i64;
        }
        state.set_map_end_offset(offset);
        assert_eq!(state.len(), PRODUCERS);
        let bytes = encode(offset, &state);
        let per_producer = (bytes.len() - HEADER_SIZE) as f64 / PRODUCERS as f64;
        println!(
            "snapshot of {PRODUCERS} producers x 5 batches: {} bytes, {per_producer:.2} bytes/producer",
            bytes.len()
        );
        assert!(per_producer <= 64.0, "{per_producer} bytes per producer");
        assert_eq!(round_trip(&state), state);
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let state = ProducerStateManager::new(CFG);
        let bytes = encode(42, &state);
        assert_eq!(bytes.len(), HEADER_SIZE);
        assert_eq!(&bytes[..4], b"OLPS");
        assert_eq!(decode(&bytes).unwrap(), (42, vec![]));
    }

    #[test]
    fn header_damage_is_reported() {
        let mut state = ProducerStateManager::new(CFG);
        state.record(
            ProducerId(3),
            1,
            BatchMetadata {
                first_seq: 0,
                last_seq: 9,
                first_offset: 100,
                last_offset: 109,
                append_time_ms: 5,
            },
        );
        let good = encode(110, &state);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::BadField {
                field: "snapshot magic",
                ..
            })
        ));
        let mut bad = good.clone();
        bad[VERSION_OFFSET] = VERSION + 1;
        assert_eq!(
            decode(&bad),
            Err(DecodeError::BadMagic { magic: VERSION + 1 })
        );
        let mut bad = good.clone();
        bad[SNAPSHOT_OFFSET_OFFSET] ^= 1;
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
        let mut bad = good.clone();
        bad[CRC_OFFSET] ^= 1;
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
        for len in 0..good.len() {
            assert!(
                decode(&good[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    /// Recomputes the checksum so the entry parser itself sees the damage.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.len() >= HEADER_SIZE {
            let crc = checksum(&bytes).to_le_bytes();
            bytes[CRC_OFFSET..ENTRIES_OFFSET].copy_from_slice(&crc);
        }
        bytes
    }

    #[test]
    fn resealed_damage_in_entries_is_reported() {
        let mut state = ProducerStateManager::new(CFG);
        state.record(
            ProducerId(3),
            1,
            BatchMetadata {
                first_seq: 0,
                last_seq: 9,
                first_offset: 100,
                last_offset: 109,
                append_time_ms: 5,
            },
        );
        let good = encode(110, &state);
        // Count says two entries, bytes hold one.
        let mut bad = good.clone();
        bad[COUNT_OFFSET] = 2;
        assert_eq!(
            decode(&reseal(bad)),
            Err(DecodeError::BadSnapshotEntry {
                index: 1,
                reason: "truncated or malformed varint"
            })
        );
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            decode(&reseal(bad)),
            Err(DecodeError::BadSnapshotEntry { index: 1, .. })
        ));
        // pid delta 0 (zig-zag 0).
        let mut bad = good.clone();
        bad[ENTRIES_OFFSET] = 0;
        assert!(matches!(
            decode(&reseal(bad)),
            Err(DecodeError::BadSnapshotEntry {
                index: 0,
                reason: "producer ids not strictly increasing"
            })
        ));
        // Six batches.
        let mut bad = good.clone();
        bad[ENTRIES_OFFSET + 2] = 6;
        assert!(matches!(
            decode(&reseal(bad)),
            Err(DecodeError::BadSnapshotEntry {
                index: 0,
                reason: "more than 5 batches"
            })
        ));
        let text = decode(&reseal({
            let mut b = good.clone();
            b[ENTRIES_OFFSET + 2] = 0x81;
            b
        }))
        .unwrap_err()
        .to_string();
        assert_eq!(text, "producer snapshot entry 0: unknown entry flags");
    }

    fn batch_strategy() -> impl Strategy<Value = (i32, i32, u64, u64, i64, bool)> {
        (
            prop_oneof![0..=i32::MAX, (i32::MAX - 100)..=i32::MAX, 0..100i32],
            0..2_000i32,
            0..(1u64 << 24),
            0..(1u64 << 24),
            prop_oneof![any::<i64>(), 0..10i64],
            any::<bool>(),
        )
    }

    fn entry_strategy() -> impl Strategy<Value = ProducerEntry> {
        (
            prop_oneof![0..=i16::MAX, Just(0i16)],
            prop_oneof![
                0..(1u64 << 40),
                (i64::MAX as u64 - (1 << 32))..(i64::MAX as u64 - (1 << 31))
            ],
            proptest::collection::vec(batch_strategy(), 0..=5),
            any::<i64>(),
            proptest::option::weighted(0.2, 0..=i64::MAX as u64),
            prop_oneof![Just(NO_COORDINATOR_EPOCH), 0..=i32::MAX],
            proptest::option::weighted(0.3, 0..=i64::MAX as u64),
            proptest::bool::weighted(0.2),
        )
            .prop_map(
                |(epoch, start, raw, last_append_ms, txn, coordinator, marker, unverified)| {
                    let mut offset = start;
                    let mut batches = Vec::new();
                    for (first_seq, len, gap, odd_span, time, normal) in raw {
                        offset += gap;
                        let span = if normal { len as u64 } else { odd_span };
                        batches.push(BatchMetadata {
                            first_seq,
                            last_seq: seq_add(first_seq, i64::from(len)),
                            first_offset: offset,
                            last_offset: offset + span,
                            append_time_ms: time,
                        });
                        offset += span + 1;
                    }
                    let mut e = ProducerEntry::new(epoch, &batches, last_append_ms, txn).unwrap();
                    e.coordinator_epoch = coordinator;
                    e.marker_offset = marker;
                    e.tail_unverified = unverified;
                    e
                },
            )
    }

    fn state_strategy() -> impl Strategy<Value = ProducerStateManager> {
        (
            proptest::collection::btree_map(
                prop_oneof![0..=i64::MAX, 0..64i64],
                entry_strategy(),
                0..12,
            ),
            any::<u64>(),
        )
            .prop_map(|(entries, offset)| {
                ProducerStateManager::from_entries(
                    CFG,
                    entries.into_iter().map(|(p, e)| (ProducerId(p), e)),
                    offset,
                )
            })
    }

    proptest! {
        /// A version-1 snapshot (before markers) is the same bytes without coordinator epochs:
        /// it still loads, each producer with no coordinator epoch; a version-1 entry with the
        /// version-2 flag is refused.
        #[test]
        fn version_1_snapshots_still_load(state in state_strategy()) {
            let mut v1 = state.clone();
            let entries: Vec<_> = v1
                .entries()
                .map(|(p, e)| {
                    let mut e = e.clone();
                    e.coordinator_epoch = NO_COORDINATOR_EPOCH;
                    e.marker_offset = None;
                    e.tail_unverified = false;
                    (p, e)
                })
                .collect();
            v1 = ProducerStateManager::from_entries(CFG, entries, v1.map_end_offset());
            let mut bytes = encode(v1.map_end_offset(), &v1);
            bytes[VERSION_OFFSET] = 1;
            prop_assert_eq!(round_trip_bytes(reseal(bytes)), v1);
            let with_coordinator = state.entries().any(|(_, e)| {
                e.coordinator_epoch >= 0 || e.marker_offset.is_some() || e.tail_unverified
            });
            let mut bytes = encode(state.map_end_offset(), &state);
            bytes[VERSION_OFFSET] = 1;
            prop_assert_eq!(decode(&reseal(bytes)).is_err(), with_coordinator);
        }

        /// A version-2 snapshot (before the unverified-tail flag) is the same bytes without
        /// the flag: it still loads, every window's tail verified; a version-2 entry with the
        /// version-3 flag is refused.
        #[test]
        fn version_2_snapshots_still_load(state in state_strategy()) {
            let entries: Vec<_> = state
                .entries()
                .map(|(p, e)| {
                    let mut e = e.clone();
                    e.tail_unverified = false;
                    (p, e)
                })
                .collect();
            let v2 = ProducerStateManager::from_entries(CFG, entries, state.map_end_offset());
            let mut bytes = encode(v2.map_end_offset(), &v2);
            bytes[VERSION_OFFSET] = 2;
            prop_assert_eq!(round_trip_bytes(reseal(bytes)), v2);
            let flagged = state.entries().any(|(_, e)| e.tail_unverified);
            let mut bytes = encode(state.map_end_offset(), &state);
            bytes[VERSION_OFFSET] = 2;
            prop_assert_eq!(decode(&reseal(bytes)).is_err(), flagged);
        }

        #[test]
        fn snapshots_round_trip(state in state_strategy()) {
            state.check_invariants();
            prop_assert_eq!(round_trip(&state), state);
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = decode(&reseal(bytes));
        }

        #[test]
        fn resealed_mutations_decode_to_valid_state_or_error(
            state in state_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encode(state.map_end_offset(), &state);
            for (at, value) in edits {
                let i = HEADER_SIZE + at.index(bytes.len() - HEADER_SIZE + 1);
                if let Some(b) = bytes.get_mut(i) {
                    *b = value;
                }
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Ok((offset, entries)) = decode(&reseal(bytes)) {
                // Whatever decodes is a valid table that round-trips again.
                let rebuilt = ProducerStateManager::from_entries(CFG, entries, offset);
                rebuilt.check_invariants();
                prop_assert_eq!(round_trip(&rebuilt), rebuilt);
            }
        }
    }
}
