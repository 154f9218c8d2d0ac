//! The transaction-state log's records: one record per state change, its key naming what
//! changed (the coordinator epoch, or one transactional id) and its value holding the whole new
//! state, so the latest record of a key is that key's state and a replay from the log start
//! rebuilds every state (docs/format.md, "Transaction-state records").
//!
//! ```text
//! Format: key   { version u16 = 0 | kind u8 | transactional_id bytes (kind 1 only) }
//!         value (kind 0, coordinator epoch) { version u16 = 0 | coordinator_epoch i32 }
//!         value (kind 1, transaction) { version u16 = 0 | producer_id i64 | producer_epoch i16 |
//!               last_producer_id i64 | last_producer_epoch i16 | state u8 | timeout_ms i32 |
//!               txn_start_ms i64 | last_update_ms i64 | partition_count u32 |
//!               partition { topic_len u16 | topic bytes | partition u32 } x partition_count }
//! ```
//!
//! Little-endian. No checksum of its own: a record lives inside a record batch, whose CRC
//! covers it. Decoding is total (hostile bytes are a `DecodeError`, never a panic; nothing is
//! allocated from an untrusted count) and canonical (partitions strictly ascending, nothing
//! after the last field), and every accepted transaction record holds the metadata invariants
//! (`TxnMetadata::validate`).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeSet;

use super::metadata::{TxnMetadata, TxnState};
use crate::broker::TopicPartition;
use crate::format::{le, DecodeError};
use crate::types::ProducerId;

/// The version of keys and values this code writes and reads.
pub const VERSION: u16 = 0;
/// Key kind of the coordinator-epoch record.
pub const KIND_COORDINATOR_EPOCH: u8 = 0;
/// Key kind of a transactional id's record.
pub const KIND_TRANSACTION: u8 = 1;

/// Bytes of a key before the transactional id.
pub const KEY_HEADER_LEN: usize = 3;
/// Bytes of a transaction value before its partitions.
pub const TXN_VALUE_FIXED_LEN: usize = 2 + 8 + 2 + 8 + 2 + 1 + 4 + 8 + 8 + 4;
/// Bytes of a coordinator-epoch value.
pub const EPOCH_VALUE_LEN: usize = 2 + 4;

/// One change of the coordinator's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    /// A coordinator instance started with this epoch (each open writes the previous + 1); its
    /// markers carry it, so partitions fence the markers of older instances.
    CoordinatorEpoch(i32),
    /// A transactional id's whole new state.
    Txn(TxnMetadata),
    /// A transactional id idle past its expiration between transactions: the coordinator
    /// forgets it (its key without a value). An InitProducerId for it starts afresh.
    Expired(String),
}

/// What a record's key names: the latest record of each key is live.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    /// The coordinator-epoch record.
    CoordinatorEpoch,
    /// The record of one transactional id.
    Txn(String),
}

impl TxnRecord {
    /// The key of the record: its latest record per key is live.
    pub fn key(&self) -> RecordKey {
        match self {
            TxnRecord::CoordinatorEpoch(_) => RecordKey::CoordinatorEpoch,
            TxnRecord::Txn(m) => RecordKey::Txn(m.transactional_id.clone()),
            TxnRecord::Expired(tid) => RecordKey::Txn(tid.clone()),
        }
    }
}

/// The record's key and value bytes (no value: an expiry).
pub fn encode(rec: &TxnRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Vec::with_capacity(KEY_HEADER_LEN + 64);
    key.extend_from_slice(&VERSION.to_le_bytes());
    match rec {
        TxnRecord::CoordinatorEpoch(epoch) => {
            key.push(KIND_COORDINATOR_EPOCH);
            let mut value = Vec::with_capacity(EPOCH_VALUE_LEN);
            value.extend_from_slice(&VERSION.to_le_bytes());
            value.extend_from_slice(&epoch.to_le_bytes());
            (key, Some(value))
        }
        TxnRecord::Txn(m) => {
            key.push(KIND_TRANSACTION);
            key.extend_from_slice(m.transactional_id.as_bytes());
            (key, Some(encode_metadata(m)))
        }
        TxnRecord::Expired(tid) => {
            key.push(KIND_TRANSACTION);
            key.extend_from_slice(tid.as_bytes());
            (key, None)
        }
    }
}

fn encode_metadata(m: &TxnMetadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(TXN_VALUE_FIXED_LEN + 32 * m.partitions.len());
    v.extend_from_slice(&VERSION.to_le_bytes());
    v.extend_from_slice(&m.producer_id.0.to_le_bytes());
    v.extend_from_slice(&m.producer_epoch.to_le_bytes());
    v.extend_from_slice(&m.last_producer_id.0.to_le_bytes());
    v.extend_from_slice(&m.last_producer_epoch.to_le_bytes());
    v.push(m.state.code());
    // Validated metadata has 1 <= timeout_ms <= i32::MAX.
    let timeout = i32::try_from(m.timeout_ms).unwrap_or(i32::MAX);
    v.extend_from_slice(&timeout.to_le_bytes());
    v.extend_from_slice(&m.txn_start_ms.to_le_bytes());
    v.extend_from_slice(&m.last_update_ms.to_le_bytes());
    let count = u32::try_from(m.partitions.len()).unwrap_or(u32::MAX);
    v.extend_from_slice(&count.to_le_bytes());
    for tp in &m.partitions {
        // A topic is at most 249 bytes (`TopicPartition::new`).
        let len = u16::try_from(tp.topic().len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(tp.topic().as_bytes());
        v.extend_from_slice(&tp.partition().to_le_bytes());
    }
    v
}

/// Decodes one record of the state log. A `None` key is refused; a `None` value only of a
/// transactional id's key (an expiry).
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<TxnRecord, DecodeError> {
    let key = key.ok_or(bad("state record without a key"))?;
    check_version(le::u16_at(key, 0)?, "key version")?;
    let kind = le::u8_at(key, 2)?;
    let id = key.get(KEY_HEADER_LEN..).unwrap_or_default();
    let Some(value) = value else {
        if kind != KIND_TRANSACTION {
            return Err(bad("state record without a value"));
        }
        let tid = std::str::from_utf8(id).map_err(|_| bad("transactional id is not UTF-8"))?;
        if tid.is_empty() {
            return Err(bad("an expiry of an empty transactional id"));
        }
        return Ok(TxnRecord::Expired(tid.to_string()));
    };
    let mut r = Reader { buf: value, pos: 0 };
    check_version(r.u16()?, "value version")?;
    let rec = match kind {
        KIND_COORDINATOR_EPOCH => {
            if !id.is_empty() {
                return Err(bad("coordinator-epoch key with an id"));
            }
            let epoch = r.i32()?;
            if epoch < 0 {
                return Err(DecodeError::BadField {
                    field: "coordinator_epoch",
                    value: i64::from(epoch),
                });
            }
            TxnRecord::CoordinatorEpoch(epoch)
        }
        KIND_TRANSACTION => {
            let tid = std::str::from_utf8(id).map_err(|_| bad("transactional id is not UTF-8"))?;
            TxnRecord::Txn(decode_metadata(tid, &mut r)?)
        }
        other => {
            return Err(DecodeError::BadField {
                field: "key kind",
                value: i64::from(other),
            })
        }
    };
    if r.pos != value.len() {
        return Err(bad("bytes after the last field"));
    }
    Ok(rec)
}

fn decode_metadata(tid: &str, r: &mut Reader<'_>) -> Result<TxnMetadata, DecodeError> {
    let producer_id = ProducerId(r.i64()?);
    let producer_epoch = r.i16()?;
    let last_producer_id = ProducerId(r.i64()?);
    let last_producer_epoch = r.i16()?;
    let code = r.u8()?;
    let state = TxnState::from_code(code).ok_or(DecodeError::BadField {
        field: "state",
        value: i64::from(code),
    })?;
    let timeout_ms = i64::from(r.i32()?);
    let txn_start_ms = r.i64()?;
    let last_update_ms = r.i64()?;
    let count = r.u32()?;
    let mut partitions = BTreeSet::new();
    let mut previous: Option<TopicPartition> = None;
    // Each partition takes at least 7 bytes, so `count` is bounded by the value's length
    // before anything is allocated for it (a BTreeSet grows one entry at a time anyway).
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let topic = std::str::from_utf8(r.bytes(len)?).map_err(|_| bad("topic is not UTF-8"))?;
        let tp = TopicPartition::new(topic, r.u32()?).map_err(|_| bad("invalid topic name"))?;
        if previous.as_ref().is_some_and(|p| *p >= tp) {
            return Err(bad("partitions not strictly ascending"));
        }
        previous = Some(tp.clone());
        partitions.insert(tp);
    }
    let m = TxnMetadata {
        transactional_id: tid.to_string(),
        producer_id,
        producer_epoch,
        last_producer_id,
        last_producer_epoch,
        state,
        partitions,
        timeout_ms,
        txn_start_ms,
        last_update_ms,
    };
    m.validate().map_err(bad)?;
    Ok(m)
}

fn bad(reason: &'static str) -> DecodeError {
    DecodeError::BadRecord { index: 0, reason }
}

fn check_version(version: u16, field: &'static str) -> Result<(), DecodeError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(DecodeError::BadField {
            field,
            value: i64::from(version),
        })
    }
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn advance<T>(&mut self, width: usize, v: Result<T, DecodeError>) -> Result<T, DecodeError> {
        let v = v?;
        self.pos += width;
        Ok(v)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.advance(1, le::u8_at(self.buf, self.pos))
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.advance(2, le::u16_at(self.buf, self.pos))
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.advance(2, le::i16_at(self.buf, self.pos))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.advance(4, le::u32_at(self.buf, self.pos))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.advance(4, le::i32_at(self.buf, self.pos))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.advance(8, le::i64_at(self.buf, self.pos))
    }
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let s =
            self.buf
                .get(self.pos..self.pos.saturating_add(len))
                .ok_or(DecodeError::TooShort {
                    need: (self.pos.saturating_add(len)) as u64,
                    have: self.buf.len() as u64,
                })?;
        self.pos += len;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `encode` of a record with a value.
    fn encode_both(rec: &TxnRecord) -> (Vec<u8>, Vec<u8>) {
        let (k, v) = encode(rec);
        (k, v.expect("a record with a value"))
    }

    /// An expiry is a transactional id's key without a value, and only that: a coordinator
    /// epoch without a value, or an expiry of an empty id, is refused.
    #[test]
    fn an_expiry_is_a_key_without_a_value() {
        let rec = TxnRecord::Expired("app-1".into());
        let (k, v) = encode(&rec);
        assert_eq!(v, None);
        assert_eq!(decode(Some(&k), None), Ok(rec));
        let (epoch_key, _) = encode(&TxnRecord::CoordinatorEpoch(3));
        assert!(decode(Some(&epoch_key), None).is_err());
        let (empty, _) = encode(&TxnRecord::Expired(String::new()));
        assert!(decode(Some(&empty), None).is_err());
        let mut states = crate::coordinator::TxnStates::new();
        states.apply(&TxnRecord::Txn(ongoing()));
        states.apply(&TxnRecord::Expired(ongoing().transactional_id));
        assert!(states.is_empty());
    }

    fn tp(topic: &str, p: u32) -> TopicPartition {
        TopicPartition::new(topic, p).unwrap()
    }

    fn ongoing() -> TxnMetadata {
        TxnMetadata {
            transactional_id: "orders-tx".into(),
            producer_id: ProducerId(7),
            producer_epoch: 3,
            last_producer_id: ProducerId(7),
            last_producer_epoch: 2,
            state: TxnState::Ongoing,
            partitions: [tp("a", 0), tp("a", 1), tp("b.c", 9)].into(),
            timeout_ms: 60_000,
            txn_start_ms: 1_000,
            last_update_ms: 1_500,
        }
    }

    fn samples() -> Vec<TxnRecord> {
        let mut empty = ongoing();
        empty.state = TxnState::Empty;
        empty.partitions.clear();
        let mut prepare = ongoing();
        prepare.state = TxnState::PrepareCommit;
        prepare.producer_epoch = 4;
        prepare.last_producer_epoch = 3;
        let mut exhausted = empty.clone();
        exhausted.state = TxnState::CompleteAbort;
        exhausted.producer_id = ProducerId(8);
        exhausted.producer_epoch = 0;
        exhausted.last_producer_epoch = i16::MAX - 1;
        vec![
            TxnRecord::CoordinatorEpoch(0),
            TxnRecord::CoordinatorEpoch(i32::MAX),
            TxnRecord::Txn(ongoing()),
            TxnRecord::Txn(empty),
            TxnRecord::Txn(prepare),
            TxnRecord::Txn(exhausted),
        ]
    }

    #[test]
    fn records_round_trip() {
        for rec in samples() {
            let (k, v) = encode_both(&rec);
            assert_eq!(decode(Some(&k), Some(&v)).unwrap(), rec);
        }
    }

    #[test]
    fn the_byte_table_holds() {
        let (k, v) = encode_both(&TxnRecord::Txn(ongoing()));
        assert_eq!(&k[..KEY_HEADER_LEN], &[0, 0, KIND_TRANSACTION]);
        assert_eq!(&k[KEY_HEADER_LEN..], b"orders-tx");
        assert_eq!(&v[2..10], &7i64.to_le_bytes());
        assert_eq!(&v[10..12], &3i16.to_le_bytes());
        assert_eq!(v[22], TxnState::Ongoing.code());
        assert_eq!(&v[23..27], &60_000i32.to_le_bytes());
        assert_eq!(
            &v[TXN_VALUE_FIXED_LEN - 4..TXN_VALUE_FIXED_LEN],
            &3u32.to_le_bytes()
        );
        // "a"-0: topic_len 1, 'a', partition 0.
        assert_eq!(
            &v[TXN_VALUE_FIXED_LEN..TXN_VALUE_FIXED_LEN + 7],
            &[1, 0, b'a', 0, 0, 0, 0]
        );
        let (k, v) = encode_both(&TxnRecord::CoordinatorEpoch(5));
        assert_eq!(k, [0, 0, KIND_COORDINATOR_EPOCH]);
        assert_eq!(v, [0, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn every_truncation_and_every_extension_is_refused() {
        for rec in samples() {
            let (k, v) = encode_both(&rec);
            for cut in 0..v.len() {
                assert!(
                    decode(Some(&k), Some(&v[..cut])).is_err(),
                    "{rec:?} cut {cut}"
                );
            }
            let mut longer = v.clone();
            longer.push(0);
            assert!(decode(Some(&k), Some(&longer)).is_err());
            for cut in 0..KEY_HEADER_LEN {
                assert!(decode(Some(&k[..cut]), Some(&v)).is_err());
            }
            assert!(decode(None, Some(&v)).is_err());
            // Without its value, a transactional id's key is that id's expiry.
            match &rec {
                TxnRecord::Txn(m) => assert_eq!(
                    decode(Some(&k), None),
                    Ok(TxnRecord::Expired(m.transactional_id.clone()))
                ),
                _ => assert!(decode(Some(&k), None).is_err()),
            }
        }
    }

    #[test]
    fn bad_fields_are_refused() {
        let (k, v) = encode_both(&TxnRecord::Txn(ongoing()));
        let refuse = |k: &[u8], v: &[u8], why: &str| {
            assert!(decode(Some(k), Some(v)).is_err(), "{why}");
        };
        let mut bad_key = k.clone();
        bad_key[0] = 1;
        refuse(&bad_key, &v, "key version");
        bad_key = k.clone();
        bad_key[2] = 2;
        refuse(&bad_key, &v, "key kind");
        refuse(&[0, 0, KIND_TRANSACTION], &v, "empty id");
        refuse(&[0, 0, KIND_TRANSACTION, 0xff], &v, "id not UTF-8");
        refuse(
            &[0, 0, KIND_COORDINATOR_EPOCH, b'x'],
            &[0, 0, 1, 0, 0, 0],
            "epoch key with id",
        );
        refuse(
            &[0, 0, KIND_COORDINATOR_EPOCH],
            &[0, 0, 0xff, 0xff, 0xff, 0xff],
            "epoch -1",
        );
        let patch = |at: usize, bytes: &[u8], why: &str| {
            let mut v = v.clone();
            v[at..at + bytes.len()].copy_from_slice(bytes);
            refuse(&k, &v, why);
        };
        patch(0, &[1, 0], "value version");
        patch(2, &(-1i64).to_le_bytes(), "negative producer id");
        patch(10, &(-1i16).to_le_bytes(), "negative epoch");
        patch(22, &[6], "state code");
        patch(22, &[TxnState::Empty.code()], "Empty with partitions");
        patch(23, &0i32.to_le_bytes(), "zero timeout");
        patch(TXN_VALUE_FIXED_LEN + 2, b"/", "topic name");
        // Partitions out of order: swap the first two ("a"-0, "a"-1).
        patch(
            TXN_VALUE_FIXED_LEN + 3,
            &1u32.to_le_bytes(),
            "duplicate partition",
        );
        // A partition count far beyond the bytes: refused without allocating for it.
        patch(
            TXN_VALUE_FIXED_LEN - 4,
            &u32::MAX.to_le_bytes(),
            "huge count",
        );
    }

    #[test]
    fn prepare_at_the_last_epoch_is_the_only_state_that_may_hold_it() {
        let mut m = ongoing();
        m.state = TxnState::PrepareAbort;
        m.producer_epoch = i16::MAX;
        m.last_producer_epoch = i16::MAX - 1;
        let (k, v) = encode_both(&TxnRecord::Txn(m.clone()));
        assert!(decode(Some(&k), Some(&v)).is_ok());
        m.state = TxnState::Ongoing;
        let (k, v) = encode_both(&TxnRecord::Txn(m));
        assert!(decode(Some(&k), Some(&v)).is_err());
    }
}
