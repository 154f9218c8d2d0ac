//! Key-latest compaction of the offsets log, by rewrite: append the live committed offsets
//! again as plain batches, then move the log start past what they replace
//! (docs/transactions.md, "Consumer offsets").
//!
//! The rewrite copies the committed offsets as of `s`, the offset the store had applied up to
//! when it took the copy; every record carries `as_of = s` and, by rule O-rewrite
//! (`state.rs`), sets only a key not changed at or after `s`. Other writers (transactional
//! producers, the coordinator's markers) append concurrently, so batches may land between `s`
//! and the rewrite; their changes stay in the log and win. The new log start is
//! `min(s, first offset of any transaction pending at s, the log's last stable offset)`: every
//! batch from there on stays, so a replay from it reaches exactly the state before the
//! compaction (the proof is in docs/transactions.md; `state_tests.rs` checks it on random
//! histories). Without concurrent writers `s` is the rewrite's own first offset.
//!
//! Order: the rewrite batches are appended and flushed (durable) before `advance_log_start`
//! checkpoints the new start and deletes whole segments below it, so a crash at any point
//! leaves either the old log plus redundant rewrite records, or the compacted log; both replay
//! to the same state.

use crate::broker::TopicPartition;
use crate::error::Result;
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::offsets::record::{encode_key, encode_value, OffsetKey, OffsetValue};
use crate::offsets::state::OffsetsState;
use crate::offsets::OffsetStore;
use crate::types::Offset;

/// An upper bound on a record's bytes besides its key and value (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count as varints).
const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 1;

/// When the store compacts by itself (after a commit, and on [`OffsetStore::maybe_compact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact once at least this many bytes were appended since the last rewrite, and at
    /// least as many as a rewrite would write (so the rewrites cost at most as much as what
    /// they reclaim).
    pub min_dirty_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_dirty_bytes: 4 << 20,
        }
    }
}

impl CompactionPolicy {
    /// Whether `state` is due for a compaction on a log that starts at `log_start`: enough
    /// bytes since the last rewrite, and no transaction pending from the log start (it would
    /// pin the start where it is, so a rewrite would reclaim nothing).
    pub fn wants(&self, state: &OffsetsState, log_start: u64) -> bool {
        let dirty = state.bytes_since_rewrite();
        dirty >= self.min_dirty_bytes.max(state.live_bytes())
            && state.first_pending_offset().is_none_or(|p| p > log_start)
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// The offset the rewrite copied the committed offsets as of.
    pub as_of: Offset,
    /// Records and batches rewritten.
    pub records: usize,
    /// Batches written by the rewrite.
    pub batches: usize,
    /// The log start afterwards.
    pub log_start: Offset,
    /// Segments deleted below the new log start.
    pub segments_deleted: usize,
}

/// The rewrite of `state`'s committed offsets as of its `applied_to`: plain batches of at most
/// `max_batch_bytes` each (a record alone larger than that makes a larger batch, which the log
/// refuses with `BatchTooLarge`), records stamped `now`. Empty when nothing is committed.
pub fn rewrite_batches(
    state: &OffsetsState,
    now: i64,
    max_batch_bytes: usize,
) -> Result<Vec<RecordBatch>> {
    let as_of = Some(state.applied_to());
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for (group, tp, c) in state.live() {
        let key = encode_key(&OffsetKey::new(group, tp.clone())?);
        let value = encode_value(&OffsetValue {
            offset: c.offset,
            commit_timestamp: c.commit_timestamp,
            as_of,
            metadata: c.metadata.clone(),
        });
        let need = key.len() + value.len() + RECORD_OVERHEAD;
        if b.record_count() > 0 && b.size() + need > max_batch_bytes {
            out.push(std::mem::take(&mut b).build()?);
        }
        b.push(now, Some(&key), Some(&value));
    }
    if b.record_count() > 0 {
        out.push(b.build()?);
    }
    Ok(out)
}

impl OffsetStore {
    /// Compacts if the policy says so (`None` if it does not).
    pub fn maybe_compact(&self) -> Result<Option<CompactionOutcome>> {
        let mut state = self.state.lock();
        self.catch_up(&mut state)?;
        self.maybe_compact_locked(&mut state)
    }

    /// Compacts now, whatever the policy says.
    pub fn compact(&self) -> Result<CompactionOutcome> {
        self.compact_locked(&mut self.state.lock())
    }

    pub(super) fn maybe_compact_locked(
        &self,
        state: &mut OffsetsState,
    ) -> Result<Option<CompactionOutcome>> {
        if !self.policy.wants(state, self.log.log_start_offset().0) {
            return Ok(None);
        }
        self.compact_locked(state).map(Some)
    }

    fn compact_locked(&self, state: &mut OffsetsState) -> Result<CompactionOutcome> {
        self.catch_up(state)?;
        let as_of = state.applied_to();
        let pinned = state.first_pending_offset().unwrap_or(u64::MAX);
        let now = self.log.config().clock.now_ms();
        let max = self.log.config().max_batch_bytes as usize;
        let batches = rewrite_batches(state, now, max)?;
        let rewritten: Vec<(String, TopicPartition)> = state
            .live()
            .map(|(g, tp, _)| (g.to_string(), tp.clone()))
            .collect();
        for b in &batches {
            self.log.append(b)?;
        }
        // Durable before any segment they replace is deleted.
        self.log.flush()?;
        self.catch_up(state)?;
        // Paired with the copy above: every offset committed at the snapshot is now set at or
        // after it (by the rewrite, or by a later change), so nothing below the snapshot is
        // needed for it.
        for (group, tp) in &rewritten {
            let set_at = state.committed_entry(group, tp).map(|c| c.set_at);
            assert!(
                set_at.is_some_and(|at| at >= as_of),
                "{group}/{tp}: set at {set_at:?} after a rewrite as of {as_of}"
            );
        }
        let new_start = as_of.min(pinned).min(self.log.last_stable_offset().0);
        let deleted = self.log.advance_log_start(Offset(new_start))?;
        Ok(CompactionOutcome {
            as_of: Offset(as_of),
            records: batches.iter().map(|b| b.record_count() as usize).sum(),
            batches: batches.len(),
            log_start: self.log.log_start_offset(),
            segments_deleted: deleted.segments_deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::Stamp;
    use crate::offsets::record::OffsetMetadata;
    use crate::types::ProducerId;

    /// Applies `b` at the state's next offset.
    fn apply(state: &mut OffsetsState, b: RecordBatch) {
        let batch = b.stamped(Stamp {
            base_offset: state.applied_to(),
            leader_epoch: 0,
            append_timestamp: 0,
        });
        state.apply_batch(&batch.view()).unwrap();
        state.check_invariants();
    }

    fn commits(mut b: BatchBuilder, groups: usize, partitions: u32) -> RecordBatch {
        for g in 0..groups {
            for p in 0..partitions {
                let tp = TopicPartition::new("t", p).unwrap();
                let key = OffsetKey::new(&format!("group-{g}"), tp).unwrap();
                let v = OffsetValue {
                    metadata: OffsetMetadata::new("é".repeat(g + p as usize)).unwrap(),
                    ..OffsetValue::commit(u64::from(p) * 10, 5)
                };
                b.push(0, Some(&encode_key(&key)), Some(&encode_value(&v)));
            }
        }
        b.build().unwrap()
    }

    fn state_with(groups: usize, partitions: u32) -> OffsetsState {
        let mut s = OffsetsState::new(3);
        apply(&mut s, commits(BatchBuilder::new(), groups, partitions));
        s
    }

    type Row = (String, TopicPartition, u64, i64, OffsetMetadata);

    fn rows(state: &OffsetsState) -> Vec<Row> {
        state
            .live()
            .map(|(g, tp, c)| {
                let m = c.metadata.clone();
                (g.to_string(), tp.clone(), c.offset, c.commit_timestamp, m)
            })
            .collect()
    }

    #[test]
    fn a_rewrite_copies_every_committed_offset_within_the_batch_limit() {
        let state = state_with(7, 9);
        let batches = rewrite_batches(&state, 77, 1024).unwrap();
        assert!(batches.len() > 1);
        let mut again = OffsetsState::new(0);
        for b in batches {
            assert!(b.len() <= 1024);
            apply(&mut again, b);
        }
        assert_eq!(rows(&again), rows(&state));
        assert_eq!(again.bytes_since_rewrite(), 0);
        // The size accounting counts the metadata: the rewrite's key and value bytes.
        let written: u64 = rewrite_batches(&state, 77, 1 << 20)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let v = b.view();
                let lens: Vec<u64> = v
                    .records()
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key.unwrap().len() + r.value.unwrap().len()) as u64
                    })
                    .collect();
                lens
            })
            .sum();
        assert_eq!(written, state.live_bytes());
        assert!(rewrite_batches(&OffsetsState::new(0), 0, 1024)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_policy_waits_for_enough_dirty_bytes_and_an_unpinned_start() {
        let policy = |min| CompactionPolicy {
            min_dirty_bytes: min,
        };
        let state = state_with(2, 3);
        let dirty = state.bytes_since_rewrite();
        assert!(dirty > state.live_bytes());
        assert!(policy(dirty).wants(&state, 3));
        assert!(!policy(dirty + 1).wants(&state, 3));

        // Fewer dirty bytes than a rewrite would write: not yet.
        let mut big = state_with(6, 6);
        for b in rewrite_batches(&big, 0, 1 << 20).unwrap() {
            apply(&mut big, b);
        }
        apply(&mut big, commits(BatchBuilder::new(), 1, 1));
        assert!(big.bytes_since_rewrite() < big.live_bytes());
        assert!(!policy(0).wants(&big, 3));

        // A transaction pending from the log start pins it: nothing to reclaim.
        let mut pinned = OffsetsState::new(0);
        let txn = BatchBuilder::new()
            .producer(ProducerId(1), 0, 0)
            .transactional();
        apply(&mut pinned, commits(txn, 1, 1));
        apply(&mut pinned, commits(BatchBuilder::new(), 1, 1));
        assert_eq!(pinned.first_pending_offset(), Some(0));
        assert!(!policy(0).wants(&pinned, 0));
    }
}
