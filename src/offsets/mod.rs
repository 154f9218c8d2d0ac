//! Consumer offsets: what each consumer group has committed for each partition, kept in an
//! oncelog log (the broker hosts it as partition `__consumer_offsets-0`), committed plainly or
//! inside a producer's transaction (docs/transactions.md, "Consumer offsets").
//!
//! - `record.rs`: the record codec (docs/format.md, "Consumer-offset records").
//! - `state.rs`: `OffsetsState`, the pure materialiser fed every batch of the log.
//! - `compaction.rs`: key-latest compaction by rewrite.
//! - here: `OffsetStore`, which drives the state from the log.
//!
//! The store reads the log from its start at creation and catches up (reads every batch from
//! where it stopped to the log end) before every answer, so it sees the transactional batches
//! and markers that producers and the coordinator append to the log directly. It never owns the
//! log's lifecycle.

pub mod compaction;
pub mod record;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::log::Log;
use crate::types::{Offset, ProducerEpoch, ProducerId, Sequence};

pub use compaction::{CompactionOutcome, CompactionPolicy};
pub use record::{
    validate_group, MetadataTooLarge, OffsetKey, OffsetMetadata, OffsetValue, MAX_GROUP_LEN,
    MAX_METADATA_LEN,
};
pub use state::{ApplyError, CommittedOffset, OffsetsState};

/// The topic of the consumer-offsets log.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes asked of the log per read while catching up.
const READ_BYTES: usize = 1 << 20;

/// A committed offset with Kafka's metadata string (what a commit stores and a fetch answers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The offset the group consumes next.
    pub offset: Offset,
    /// The metadata string ("" when the commit carried none).
    pub metadata: OffsetMetadata,
}

impl OffsetAndMetadata {
    /// An offset without metadata.
    pub fn new(offset: Offset) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            metadata: OffsetMetadata::default(),
        }
    }

    /// `offset` with `metadata`; [`MetadataTooLarge`] above [`MAX_METADATA_LEN`] bytes.
    pub fn with_metadata(
        offset: Offset,
        metadata: impl Into<String>,
    ) -> std::result::Result<OffsetAndMetadata, MetadataTooLarge> {
        Ok(OffsetAndMetadata {
            offset,
            metadata: OffsetMetadata::new(metadata)?,
        })
    }
}

/// Offsets without metadata as commits.
pub(crate) fn without_metadata(
    offsets: &[(TopicPartition, Offset)],
) -> Vec<(TopicPartition, OffsetAndMetadata)> {
    offsets
        .iter()
        .map(|(tp, o)| (tp.clone(), OffsetAndMetadata::new(*o)))
        .collect()
}

/// The consumer offsets of one offsets log.
///
/// Only committed offsets are ever returned: a transactional offset becomes visible when its
/// COMMIT marker is in the log and never after an ABORT. Thread-safe: a mutex inside orders
/// commits, catch-ups and compactions. One store per log: two would interleave their
/// compactions' rewrites, which the compaction argument excludes (`compaction.rs`).
#[derive(Debug)]
pub struct OffsetStore {
    log: Arc<Log>,
    policy: CompactionPolicy,
    state: Mutex<OffsetsState>,
}

impl OffsetStore {
    /// [`OffsetStore::with_policy`] with the default compaction policy.
    pub fn new(log: Arc<Log>) -> Result<OffsetStore> {
        Self::with_policy(log, CompactionPolicy::default())
    }

    /// Replays `log` from its start: the state is whatever the log holds, so committed offsets
    /// survive crashes exactly as the log's batches do.
    ///
    /// The log must have no size or time retention (`InvalidConfig` otherwise): retention would
    /// delete live offsets; the store compacts the log itself.
    pub fn with_policy(log: Arc<Log>, policy: CompactionPolicy) -> Result<OffsetStore> {
        let cfg = log.config();
        if cfg.retention_ms.is_some() || cfg.retention_bytes.is_some() {
            return Err(Error::InvalidConfig(format!(
                "the consumer-offsets log must have no retention (retention_ms = {:?}, \
                 retention_bytes = {:?}): it would delete live offsets; the offset store \
                 compacts the log itself",
                cfg.retention_ms, cfg.retention_bytes
            )));
        }
        let start = log.log_start_offset();
        // The log start may lie inside a batch (a DeleteRecords not ours): replay it whole.
        let first = log.read(start, 1)?;
        let first_base = first.batches().next().transpose()?.map(|b| b.base_offset());
        let state = OffsetsState::new(first_base.unwrap_or(start.0).min(start.0));
        let store = OffsetStore {
            log,
            policy,
            state: Mutex::new(state),
        };
        store.catch_up(&mut store.state.lock())?;
        Ok(store)
    }

    /// The offsets log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Commits `offsets` for `group` as one plain (non-idempotent) batch: all or none. When it
    /// returns `Ok` the offsets are visible to [`OffsetStore::fetch_committed`] and durable as
    /// the log's sync mode makes appends durable. Then compacts the log if the policy says so;
    /// an error of that step is returned, the commit itself is in the log (committing the same
    /// offsets again is harmless). An empty list commits nothing.
    pub fn commit_offsets(&self, group: &str, offsets: &[(TopicPartition, Offset)]) -> Result<()> {
        self.commit_offsets_with_metadata(group, &without_metadata(offsets))
    }

    /// [`OffsetStore::commit_offsets`] with a metadata string per offset (Kafka's
    /// `OffsetAndMetadata`), kept with the offset and answered by
    /// [`OffsetStore::fetch_committed_with_metadata`].
    pub fn commit_offsets_with_metadata(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        let Some(batch) = self.offsets_batch(group, offsets, BatchBuilder::new())? else {
            return Ok(());
        };
        let mut state = self.state.lock();
        self.log.append(&batch)?;
        self.catch_up(&mut state)?;
        self.maybe_compact_locked(&mut state)?;
        Ok(())
    }

    /// Deletes every group's committed offset of a partition of `topic` (the topic was
    /// deleted: a topic created again under the name starts with no committed offsets, as in
    /// Kafka), as one plain batch of deletion records (a key without a value), durable as the
    /// log's sync mode makes appends durable. Returns how many offsets it deleted. Offsets
    /// still pending in an open transaction are not touched (a transaction holding a deleted
    /// topic's offsets commits them).
    pub fn delete_topic_offsets(&self, topic: &str) -> Result<usize> {
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        let keys: Vec<OffsetKey> = state
            .live()
            .filter(|(_, tp, _)| tp.topic() == topic)
            .map(|(g, tp, _)| OffsetKey::new(g, tp.clone()))
            .collect::<Result<_>>()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let now = self.log.config().clock.now_ms();
        // Batches of at most 1,024 deletions (a few tens of KiB), far below any batch limit;
        // a crash between two leaves some, and the deletion is redone at the next open.
        for chunk in keys.chunks(1024) {
            let mut b = BatchBuilder::new();
            for key in chunk {
                b.push(now, Some(&record::encode_key(key)), None);
            }
            self.log.append(&b.build()?)?;
        }
        self.catch_up(&mut state)?;
        debug_assert!(state.live().all(|(_, tp, _)| tp.topic() != topic));
        Ok(keys.len())
    }

    /// The transactional batch holding `offsets` for `group` that a transactional producer
    /// appends itself (through `Log::append`, so the log's sequence and transaction rules
    /// apply), after adding the offsets partition to its transaction. Its offsets become
    /// visible when the coordinator's COMMIT marker is in the log. `InvalidConfig` for a bad
    /// group name or an empty list.
    pub fn txn_offsets_batch(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        first_sequence: Sequence,
    ) -> Result<RecordBatch> {
        self.txn_offsets_batch_with_metadata(
            group,
            &without_metadata(offsets),
            producer_id,
            epoch,
            first_sequence,
        )
    }

    /// [`OffsetStore::txn_offsets_batch`] with a metadata string per offset.
    pub fn txn_offsets_batch_with_metadata(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        first_sequence: Sequence,
    ) -> Result<RecordBatch> {
        let b = BatchBuilder::new()
            .producer(producer_id, epoch, first_sequence)
            .transactional();
        self.offsets_batch(group, offsets, b)?.ok_or_else(|| {
            Error::InvalidConfig(format!(
                "a transactional offset commit for group {group:?} needs at least one offset"
            ))
        })
    }

    /// `offsets` as records of `b`, stamped with the log's clock; `None` for an empty list.
    fn offsets_batch(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        mut b: BatchBuilder,
    ) -> Result<Option<RecordBatch>> {
        validate_group(group)?;
        if offsets.is_empty() {
            return Ok(None);
        }
        let now = self.log.config().clock.now_ms();
        for (tp, o) in offsets {
            let key = OffsetKey::new(group, tp.clone())?;
            let value = OffsetValue {
                metadata: o.metadata.clone(),
                ..OffsetValue::commit(o.offset.0, now)
            };
            b.push(
                now,
                Some(&record::encode_key(&key)),
                Some(&record::encode_value(&value)),
            );
        }
        Ok(Some(b.build()?))
    }

    /// The committed offset of `group` for `tp`, after catching up with the log.
    pub fn fetch_committed(&self, group: &str, tp: &TopicPartition) -> Result<Option<Offset>> {
        validate_group(group)?;
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state.committed(group, tp).map(Offset))
    }

    /// The committed offset of `group` for `tp` with its metadata, after catching up.
    pub fn fetch_committed_with_metadata(
        &self,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<Option<OffsetAndMetadata>> {
        validate_group(group)?;
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state.committed_entry(group, tp).map(|c| OffsetAndMetadata {
            offset: Offset(c.offset),
            metadata: c.metadata.clone(),
        }))
    }

    /// Every committed offset of `group` with its metadata, after catching up.
    pub fn committed_offsets_with_metadata(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        validate_group(group)?;
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state
            .committed_entries_for_group(group)
            .map(|(tp, c)| {
                let o = OffsetAndMetadata {
                    offset: Offset(c.offset),
                    metadata: c.metadata.clone(),
                };
                (tp.clone(), o)
            })
            .collect())
    }

    /// Every committed offset of `group`, after catching up with the log.
    pub fn committed_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, Offset>> {
        validate_group(group)?;
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state
            .committed_for_group(group)
            .into_iter()
            .map(|(tp, o)| (tp, Offset(o)))
            .collect())
    }

    /// Whether a transaction not ended yet holds an offset of `group` for `tp`, after
    /// catching up.
    pub fn has_pending(&self, group: &str, tp: &TopicPartition) -> Result<bool> {
        validate_group(group)?;
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state.is_pending(group, tp))
    }

    /// The producers whose transactional offsets await a marker, after catching up.
    pub fn pending_producers(&self) -> Result<Vec<ProducerId>> {
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state.pending_producers())
    }

    /// A copy of the materialised state, after catching up (for tests and tools).
    pub fn state(&self) -> Result<OffsetsState> {
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        Ok(state.clone())
    }

    /// Applies every batch from where the state stopped to the log end. A batch that is not an
    /// offsets batch is `CorruptFile` naming the log and the offset, and nothing of it applies.
    fn catch_up(&self, state: &mut OffsetsState) -> Result<()> {
        let from = state.applied_to();
        loop {
            let fetch = self.log.read(Offset(state.applied_to()), READ_BYTES)?;
            if fetch.is_empty() {
                if cfg!(debug_assertions) && state.applied_to() != from {
                    state.check_invariants();
                }
                return Ok(());
            }
            for batch in fetch.batches() {
                state.apply_batch(&batch?).map_err(|e| Error::CorruptFile {
                    path: self.log.dir().to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
    }
}
