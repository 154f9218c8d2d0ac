//! Control records: the COMMIT/ABORT markers a transaction coordinator writes into a
//! partition log, in Kafka's encoding so the wire layer can pass them through unchanged.
//!
//! A marker is a batch with the transactional and control attribute bits set, the producer's
//! id and (new) epoch, base sequence -1, and exactly one record:
//!
//! ```text
//! key:   { version i16 = 0 | type i16 (ABORT = 0, COMMIT = 1) }        big-endian, 4 bytes
//! value: { version i16 = 0 | coordinator_epoch i32 }                   big-endian, 6 bytes
//! ```
//!
//! Big-endian like Kafka (the batch header around it is little-endian, docs/format.md): the
//! one place the crate writes big-endian, so a marker is byte for byte a Kafka control record.
#![allow(clippy::big_endian_bytes)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use super::batch::{attributes, BatchBuilder, BatchView, RecordBatch};
use super::DecodeError;
use crate::types::{ProducerEpoch, ProducerId};

/// A control batch's marker type (Kafka's `ControlRecordType`: ABORT = 0, COMMIT = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    /// Kafka's ABORT (code 0): the transaction's records are dropped by `read_committed` readers.
    Abort,
    /// Kafka's COMMIT (code 1): the transaction's records become visible to `read_committed` readers.
    Commit,
}

impl MarkerKind {
    fn code(self) -> i16 {
        match self {
            MarkerKind::Abort => 0,
            MarkerKind::Commit => 1,
        }
    }
}

/// A COMMIT or ABORT marker as the log sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The producer whose transaction the marker ends.
    pub producer_id: ProducerId,
    /// The producer epoch the marker carries: the epoch of the producer's *next* transaction
    /// (every marker that ends a transaction bumps it, docs/transactions.md).
    pub producer_epoch: ProducerEpoch,
    /// The epoch of the coordinator that wrote it; a lower one than the log has seen for the
    /// producer is a stale coordinator (`Error::CoordinatorFenced`).
    pub coordinator_epoch: i32,
    /// COMMIT or ABORT.
    pub kind: MarkerKind,
}

/// Bytes of the control record key and value.
pub const KEY_LEN: usize = 4;
/// Bytes of the control record value (version i16, coordinator epoch i32).
pub const VALUE_LEN: usize = 6;

impl Marker {
    /// The control batch for this marker, stamped by the log at append like any batch.
    pub fn to_batch(&self, timestamp: i64) -> Result<RecordBatch, DecodeError> {
        let mut key = [0u8; KEY_LEN];
        key[2..].copy_from_slice(&self.kind.code().to_be_bytes());
        let mut value = [0u8; VALUE_LEN];
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        let mut b = BatchBuilder::with_capacity(128)
            .producer(self.producer_id, self.producer_epoch, -1)
            .attributes(attributes::TRANSACTIONAL | attributes::CONTROL);
        b.push(timestamp, Some(&key), Some(&value));
        b.build()
    }

    /// The marker of a control batch (`None` for a data batch). A control batch whose record
    /// is not a marker of a known version is an error: the log writes only markers, and
    /// `RecordBatch::from_bytes` refuses any other control batch.
    pub fn of(view: &BatchView<'_>) -> Result<Option<Marker>, DecodeError> {
        let h = view.header();
        if !h.is_control() {
            return Ok(None);
        }
        let bad = |reason| DecodeError::BadRecord { index: 0, reason };
        let rec = view
            .records()
            .next()
            .ok_or(bad("control batch without a record"))??;
        let key = rec.key.ok_or(bad("control record without a key"))?;
        let value = rec.value.ok_or(bad("control record without a value"))?;
        let (&[kv0, kv1, k0, k1], &[vv0, vv1, e0, e1, e2, e3]) = (
            <&[u8; KEY_LEN]>::try_from(key).map_err(|_| bad("control key length"))?,
            <&[u8; VALUE_LEN]>::try_from(value).map_err(|_| bad("control value length"))?,
        );
        if i16::from_be_bytes([kv0, kv1]) != 0 || i16::from_be_bytes([vv0, vv1]) != 0 {
            return Err(bad("unknown control record version"));
        }
        let kind = match i16::from_be_bytes([k0, k1]) {
            0 => MarkerKind::Abort,
            1 => MarkerKind::Commit,
            _ => return Err(bad("unknown control record type")),
        };
        Ok(Some(Marker {
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            coordinator_epoch: i32::from_be_bytes([e0, e1, e2, e3]),
            kind,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_marker_round_trips_through_its_control_batch() {
        for kind in [MarkerKind::Abort, MarkerKind::Commit] {
            let m = Marker {
                producer_id: ProducerId(7),
                producer_epoch: 3,
                coordinator_epoch: 11,
                kind,
            };
            let b = m.to_batch(5).unwrap();
            let again = RecordBatch::from_bytes(b.as_bytes().to_vec()).unwrap();
            let h = again.header();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.base_sequence, h.record_count), (-1, 1));
            assert_eq!(Marker::of(&again.view()).unwrap(), Some(m));
        }
    }

    #[test]
    fn a_data_batch_is_no_marker() {
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(b"v"));
        assert_eq!(Marker::of(&b.build().unwrap().view()).unwrap(), None);
    }

    #[test]
    fn a_control_batch_that_is_not_a_marker_is_refused() {
        let mut b = BatchBuilder::new()
            .producer(ProducerId(1), 0, -1)
            .attributes(attributes::TRANSACTIONAL | attributes::CONTROL);
        b.push(0, Some(&[0, 0, 0, 9]), Some(&[0; VALUE_LEN]));
        let batch = b.build().unwrap();
        assert!(matches!(
            RecordBatch::from_bytes(batch.as_bytes().to_vec()),
            Err(DecodeError::BadRecord {
                reason: "unknown control record type",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_control_records_never_panic(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        ) {
            let mut b = BatchBuilder::new()
                .producer(ProducerId(1), 0, -1)
                .attributes(attributes::TRANSACTIONAL | attributes::CONTROL);
            b.push(0, key.as_deref(), value.as_deref());
            let batch = b.build().unwrap();
            let _ = Marker::of(&batch.view());
            let _ = RecordBatch::from_bytes(batch.as_bytes().to_vec());
        }
    }
}
