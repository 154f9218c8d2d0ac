//! The consumer offsets a log holds: a pure materialiser fed every batch of the offsets log in
//! offset order (read_uncommitted), no I/O. `OffsetStore` drives it from a `Log`; the table
//! tests and the model proptest in `state_tests.rs` drive it from hand-built batches.
//!
//! # Rules (docs/transactions.md, "Consumer offsets")
//!
//! - **O-plain.** The records of a non-transactional batch are committed at once, in record
//!   order (a later record for the same key wins). The key's `set_at` becomes the batch's base
//!   offset.
//! - **O-pending.** The records of a transactional data batch of producer P are pending for P
//!   (the latest record per key wins); P's pending transaction starts at the first such batch.
//! - **O-marker.** A COMMIT marker for P applies P's pending offsets, each with `set_at` = the
//!   marker's offset; an ABORT drops them; a marker for a producer with nothing pending changes
//!   nothing. So a pending offset applied at COMMIT wins over a plain commit written between
//!   the transaction's batch and its marker (the order Kafka's GroupMetadataManager uses: the
//!   decision comes later in the log).
//! - **O-rewrite.** A record of a compaction rewrite carries `as_of = s`: it sets its key only if
//!   the key is absent or its `set_at < s`. A key changed at or after `s` keeps its value, so a
//!   rewrite never reverts a change that landed between the snapshot it copies and the rewrite
//!   itself (markers and transactional batches are written by others, concurrently).
//!
//! A batch is applied whole or not at all: its records are decoded before anything changes.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeMap;
use std::fmt;

use super::record::{
    decode_key, decode_value, value_fixed_len, OffsetKey, OffsetMetadata, OffsetValue,
};
use crate::broker::TopicPartition;
use crate::format::batch::BatchView;
use crate::format::control::{Marker, MarkerKind};
use crate::format::DecodeError;
use crate::types::ProducerId;

/// Why a batch of the offsets log cannot be applied. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// The offset of the record (or batch) at fault.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: DecodeError,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consumer-offsets log at offset {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for ApplyError {}

/// A committed offset and where in the log it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The committed offset: the next offset the group will consume.
    pub offset: u64,
    /// When it was committed (ms, the offsets log's clock).
    pub commit_timestamp: i64,
    /// Kafka's metadata string committed with it ("" when none).
    pub metadata: OffsetMetadata,
    /// The log offset of the batch (plain commit, rewrite) or COMMIT marker that set it.
    pub set_at: u64,
}

/// A producer's offsets awaiting its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingTxn {
    /// The base offset of its first transactional batch in this log.
    pub(super) first_offset: u64,
    /// Latest per key; never empty.
    pub(super) offsets: BTreeMap<OffsetKey, OffsetValue>,
}

/// The committed and pending offsets of an offsets log, as of `applied_to`.
///
/// Invariants (`check_invariants`):
/// - every group's map is non-empty, every `set_at` is in `[start, applied_to)`;
/// - every pending transaction holds at least one offset, none a rewrite, and its
///   `first_offset` is in `[start, applied_to)`;
/// - `live_bytes` is the encoded size of the committed offsets as a rewrite would write them
///   (metadata strings included).
#[derive(Debug, Clone)]
pub struct OffsetsState {
    /// The offset the state was started at (the log start when it was replayed).
    start: u64,
    /// The next offset to apply: every batch below it has been applied.
    applied_to: u64,
    pub(super) groups: BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    pub(super) pending: BTreeMap<ProducerId, PendingTxn>,
    /// Bytes of the batches applied since the last batch holding a rewrite record.
    bytes_since_rewrite: u64,
    /// Encoded key + value bytes of the committed offsets, as rewrite records.
    live_bytes: u64,
}

/// What one batch asks for, decoded before anything is applied.
enum Change {
    /// A plain batch: commits, rewrites, and deletions (a record without a value).
    Plain(Vec<(OffsetKey, Option<OffsetValue>)>),
    Pending(ProducerId, Vec<(OffsetKey, OffsetValue)>),
    Marker(Marker),
}

impl OffsetsState {
    /// An empty state for a log whose first batch starts at `start`.
    pub fn new(start: u64) -> OffsetsState {
        OffsetsState {
            start,
            applied_to: start,
            groups: BTreeMap::new(),
            pending: BTreeMap::new(),
            bytes_since_rewrite: 0,
            live_bytes: 0,
        }
    }

    /// Applies the next batch of the log (rules O-plain, O-pending, O-marker, O-rewrite). Its
    /// base offset must be at or after [`OffsetsState::applied_to`]. On error nothing changed.
    pub fn apply_batch(&mut self, batch: &BatchView<'_>) -> Result<(), ApplyError> {
        let base = batch.base_offset();
        if base < self.applied_to {
            return Err(ApplyError {
                offset: base,
                reason: DecodeError::BadField {
                    field: "offsets batch below the applied offset",
                    value: i64::try_from(self.applied_to).unwrap_or(i64::MAX),
                },
            });
        }
        let change = decode_batch(batch)?;
        let mut rewrite = false;
        match change {
            Change::Plain(records) => {
                for (key, value) in records {
                    let Some(value) = value else {
                        self.remove(&key);
                        continue;
                    };
                    rewrite |= value.as_of.is_some();
                    let applies = match value.as_of {
                        None => true,
                        Some(s) => self.get(&key).is_none_or(|c| c.set_at < s),
                    };
                    if applies {
                        self.set(key, value, base);
                    }
                }
            }
            Change::Pending(pid, records) => {
                let txn = self.pending.entry(pid).or_insert_with(|| PendingTxn {
                    first_offset: base,
                    offsets: BTreeMap::new(),
                });
                txn.offsets.extend(records);
            }
            Change::Marker(m) => {
                if let Some(txn) = self.pending.remove(&m.producer_id) {
                    if m.kind == MarkerKind::Commit {
                        for (key, value) in txn.offsets {
                            self.set(key, value, base);
                        }
                    }
                }
            }
        }
        let len = batch.len() as u64;
        self.bytes_since_rewrite = if rewrite {
            0
        } else {
            self.bytes_since_rewrite.saturating_add(len)
        };
        self.applied_to = batch.header().next_offset();
        Ok(())
    }

    fn get(&self, key: &OffsetKey) -> Option<&CommittedOffset> {
        self.groups.get(key.group())?.get(key.partition())
    }

    fn set(&mut self, key: OffsetKey, value: OffsetValue, set_at: u64) {
        let bytes = rewrite_record_len(&key, &value.metadata);
        let key_len = key.encoded_len();
        let (group, tp) = key.into_parts();
        let committed = CommittedOffset {
            offset: value.offset,
            commit_timestamp: value.commit_timestamp,
            metadata: value.metadata,
            set_at,
        };
        let old = self.groups.entry(group).or_default().insert(tp, committed);
        // The replaced entry's rewrite record differs from the new one only by its metadata.
        let old_bytes = old.map_or(0, |c| {
            (key_len + value_fixed_len(true) + c.metadata.len()) as u64
        });
        self.live_bytes = self.live_bytes.saturating_sub(old_bytes) + bytes;
    }

    /// Forgets the committed offset of `key` (a deletion record: its topic was deleted).
    fn remove(&mut self, key: &OffsetKey) {
        let Some(offsets) = self.groups.get_mut(key.group()) else {
            return;
        };
        if let Some(c) = offsets.remove(key.partition()) {
            self.live_bytes = self
                .live_bytes
                .saturating_sub(rewrite_record_len(key, &c.metadata));
        }
        if offsets.is_empty() {
            self.groups.remove(key.group());
        }
    }

    /// The committed offset of `group` for `tp`.
    pub fn committed(&self, group: &str, tp: &TopicPartition) -> Option<u64> {
        self.committed_entry(group, tp).map(|c| c.offset)
    }

    /// The committed offset of `group` for `tp`, with where it was set.
    pub fn committed_entry(&self, group: &str, tp: &TopicPartition) -> Option<&CommittedOffset> {
        self.groups.get(group)?.get(tp)
    }

    /// Every committed offset of `group`.
    pub fn committed_for_group(&self, group: &str) -> BTreeMap<TopicPartition, u64> {
        self.groups
            .get(group)
            .map(|m| m.iter().map(|(tp, c)| (tp.clone(), c.offset)).collect())
            .unwrap_or_default()
    }

    /// Every committed offset of `group`, with its metadata and where it was set.
    pub fn committed_entries_for_group(
        &self,
        group: &str,
    ) -> impl Iterator<Item = (&TopicPartition, &CommittedOffset)> + '_ {
        self.groups.get(group).into_iter().flat_map(|m| m.iter())
    }

    /// Every committed offset, by group and partition.
    pub fn live(&self) -> impl Iterator<Item = (&str, &TopicPartition, &CommittedOffset)> + '_ {
        self.groups
            .iter()
            .flat_map(|(g, m)| m.iter().map(move |(tp, c)| (g.as_str(), tp, c)))
    }

    /// The producers with offsets pending (a transactional batch here, no marker yet),
    /// ascending.
    pub fn pending_producers(&self) -> Vec<ProducerId> {
        self.pending.keys().copied().collect()
    }

    /// Whether an open transaction holds an offset of `group` for `tp` (Kafka answers such a
    /// fetch that asks for stable offsets with UNSTABLE_OFFSET_COMMIT).
    pub fn is_pending(&self, group: &str, tp: &TopicPartition) -> bool {
        OffsetKey::new(group, tp.clone())
            .is_ok_and(|key| self.pending.values().any(|t| t.offsets.contains_key(&key)))
    }

    /// The first offset of the earliest pending transaction: a compaction may not move the
    /// log start past it (its offsets would be lost).
    pub fn first_pending_offset(&self) -> Option<u64> {
        self.pending.values().map(|t| t.first_offset).min()
    }

    /// The next offset to apply.
    pub fn applied_to(&self) -> u64 {
        self.applied_to
    }

    /// Bytes of the batches applied since the last one holding a rewrite record (or since the
    /// state started): what a compaction could reclaim.
    pub fn bytes_since_rewrite(&self) -> u64 {
        self.bytes_since_rewrite
    }

    /// Encoded key and value bytes of the committed offsets as rewrite records.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Asserts the invariants listed on the type.
    pub fn check_invariants(&self) {
        let window = self.start..self.applied_to;
        let mut live = 0;
        for (group, m) in &self.groups {
            assert!(!m.is_empty(), "group {group:?} has an empty offset map");
            for (tp, c) in m {
                assert!(
                    window.contains(&c.set_at),
                    "{group}/{tp}: set at {} outside {window:?}",
                    c.set_at
                );
                let key = OffsetKey::new(group, tp.clone());
                assert!(key.is_ok(), "group name {group:?}");
                live += key
                    .as_ref()
                    .map_or(0, |k| rewrite_record_len(k, &c.metadata));
            }
        }
        assert_eq!(live, self.live_bytes, "live bytes");
        for (pid, t) in &self.pending {
            assert!(!t.offsets.is_empty(), "producer {pid:?}: empty pending");
            assert!(
                window.contains(&t.first_offset),
                "producer {pid:?}: pending from {} outside {window:?}",
                t.first_offset
            );
            assert!(t.offsets.values().all(|v| v.as_of.is_none()));
        }
    }
}

/// Key and value bytes of a key's rewrite record carrying `metadata`.
fn rewrite_record_len(key: &OffsetKey, metadata: &OffsetMetadata) -> u64 {
    (key.encoded_len() + value_fixed_len(true) + metadata.len()) as u64
}

/// Decodes what a batch asks for, checking everything first (so a batch applies whole or not
/// at all): a control batch is a marker; every data record has a valid key and value; a
/// transactional batch holds no rewrite record.
fn decode_batch(batch: &BatchView<'_>) -> Result<Change, ApplyError> {
    let h = batch.header();
    let base = batch.base_offset();
    if h.is_control() {
        let fail = |reason| ApplyError {
            offset: base,
            reason,
        };
        let m = Marker::of(batch).map_err(fail)?;
        let m = m.ok_or_else(|| {
            fail(DecodeError::BadRecord {
                index: 0,
                reason: "control batch without a marker",
            })
        })?;
        return Ok(Change::Marker(m));
    }
    let mut records = Vec::with_capacity(usize::try_from(h.record_count).unwrap_or(0));
    for r in batch.records() {
        let r = r.map_err(|reason| ApplyError {
            offset: base,
            reason,
        })?;
        let offset = base.saturating_add(u64::try_from(r.offset_delta).unwrap_or(0));
        let fail = |reason| ApplyError { offset, reason };
        let missing = |what| DecodeError::BadRecord {
            index: u32::try_from(r.offset_delta).unwrap_or(0),
            reason: what,
        };
        let key = r
            .key
            .ok_or_else(|| fail(missing("offsets record without a key")))?;
        let key = decode_key(key).map_err(fail)?;
        // No value: a deletion, only in a plain batch.
        let value = match r.value {
            Some(v) => Some(decode_value(v).map_err(fail)?),
            None if h.is_transactional() => {
                return Err(fail(missing("offsets record without a value")))
            }
            None => None,
        };
        if h.is_transactional() && value.as_ref().is_some_and(|v| v.as_of.is_some()) {
            return Err(fail(missing("a rewrite record in a transactional batch")));
        }
        records.push((key, value));
    }
    Ok(if h.is_transactional() {
        let records = records
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Change::Pending(h.producer_id, records)
    } else {
        Change::Plain(records)
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
