//! Deleting old data: size and time retention, and moving the log start offset.
//!
//! Only whole sealed segments are deleted, never the active one. The new log start is
//! checkpointed (atomically, fsynced) before any file is removed, so a crash in between leaves
//! segments below the checkpointed start, which the next open deletes (recovery row R10).
//! Time retention uses the log's own append timestamps, never client timestamps, so a bogus
//! client timestamp (or a zero-padded index, KAFKA-10207) cannot delete data early.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::log_start::{self, LogStartCheckpoint};
use super::{Appender, Log};
use crate::error::{Error, Result};
use crate::segment::{remove_segment_files, Segment, SEGMENT_FILES};
use crate::types::Offset;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Sealed segments deleted.
    pub segments_deleted: usize,
    /// Bytes of the deleted segment files.
    pub bytes_deleted: u64,
}

impl Log {
    /// Unlinks the files of segments an earlier retention pass dropped but could not unlink
    /// (`LogInner::leftovers`); the caller fsyncs the directory.
    pub(super) fn remove_leftovers(&self) -> Result<()> {
        let storage = self.inner.config.storage.as_ref();
        // Only below the first live segment: a truncation below every segment may have made
        // a leftover's name a live segment's again.
        let first = self
            .segments()
            .first()
            .map_or(u64::MAX, |s| s.base_offset());
        let mut leftovers = self.inner.leftovers.lock();
        while let Some(&base) = leftovers.front() {
            if base < first {
                remove_segment_files(storage, &self.inner.dir, base, &SEGMENT_FILES)?;
            }
            leftovers.pop_front();
        }
        Ok(())
    }

    /// Deletes the oldest sealed segments that are past `retention_ms` (by their newest append
    /// timestamp) or that keep the log above `retention_bytes`.
    pub fn apply_retention(&self) -> Result<RetentionOutcome> {
        self.check_writable()?;
        let cfg = &self.inner.config;
        if cfg.retention_ms.is_none() && cfg.retention_bytes.is_none() {
            return Ok(RetentionOutcome::default());
        }
        let mut a = self.inner.appender.lock();
        let now = cfg.clock.now_ms();
        let segments = self.segments();
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let mut count = 0;
        for seg in segments.iter().take(segments.len().saturating_sub(1)) {
            if !seg.is_sealed() {
                break;
            }
            let too_big = cfg.retention_bytes.is_some_and(|b| total - seg.size() >= b);
            // The newest append time needs the segment's tail, which a deferred index loads
            // first: only asked when size alone does not delete the segment.
            let too_old = || -> Result<bool> {
                let Some(ms) = cfg.retention_ms else {
                    return Ok(false);
                };
                let last_append = seg.tail()?.last_append_ms;
                Ok(last_append >= 0 && now.saturating_sub(last_append) > ms as i64)
            };
            if !(too_big || too_old()?) {
                break;
            }
            total -= seg.size();
            count += 1;
        }
        if count == 0 {
            return Ok(RetentionOutcome::default());
        }
        let new_start = segments.get(count).map_or(0, |s| s.base_offset());
        self.delete_prefix(&mut a, &segments, count, new_start)
    }

    /// Deletes every record below `offset` (Kafka's DeleteRecords): the log start moves to
    /// `offset` and whole segments below it are removed.
    pub fn advance_log_start(&self, offset: Offset) -> Result<RetentionOutcome> {
        self.check_writable()?;
        let mut a = self.inner.appender.lock();
        let end = self.inner.log_end.load(Ordering::Acquire);
        let start = self.inner.log_start.load(Ordering::Acquire);
        if offset.0 > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: Offset(start),
                log_end: Offset(end),
            });
        }
        if offset.0 <= start {
            return Ok(RetentionOutcome::default());
        }
        let segments = self.segments();
        let count = segments
            .iter()
            .take(segments.len().saturating_sub(1))
            .take_while(|s| s.next_offset() <= offset.0)
            .count();
        self.delete_prefix(&mut a, &segments, count, offset.0)
    }

    /// Checkpoints `new_start`, then removes the first `count` segments. Caller holds the
    /// appender lock.
    fn delete_prefix(
        &self,
        a: &mut Appender,
        segments: &Arc<Vec<Arc<Segment>>>,
        count: usize,
        new_start: u64,
    ) -> Result<RetentionOutcome> {
        let storage = self.inner.config.storage.as_ref();
        // Producers whose batches are about to go live on only in snapshots: write one first
        // (at the log end, inside the new range), so a crash at any later step keeps them
        // (RP PR 29623, T18).
        self.snapshot_locked(a)?;
        let served = self.inner.log_start.load(Ordering::Acquire);
        let start = served.max(new_start);
        // With the segment that becomes the first, what is open at its base: once the
        // segments below are gone nothing else durable is sure to know it (`log::log_start`).
        let checkpoint = LogStartCheckpoint::at_segment(start, &segments[count]);
        if let Err(e) = log_start::write(storage, &self.inner.dir, &checkpoint) {
            // Failed after its rename, the new start may be on disk while this log serves the
            // old one (a later truncation and appends below the new start would then be hidden
            // by the next open): poisoned, the log takes no more writes until a reopen reads
            // whichever start is durable.
            if log_start::changed_on_disk(storage, &self.inner.dir, served) {
                self.poison(&e);
            }
            return Err(e);
        }
        self.inner.log_start.store(start, Ordering::Release);
        let removed: Vec<Arc<Segment>> = segments.iter().take(count).cloned().collect();
        {
            let mut list = self.inner.segments.write();
            *list = Arc::new(list.iter().skip(count).cloned().collect());
        }
        let mut out = RetentionOutcome::default();
        // Past the checkpoint (the commit point) a failed unlink leaves the segment to be
        // unlinked again later (`LogInner::leftovers`); the error is still returned.
        let mut leftovers = self.inner.leftovers.lock();
        leftovers.extend(removed.iter().map(|s| s.base_offset()));
        for seg in &removed {
            seg.delete_files(storage)?;
            leftovers.retain(|&b| b != seg.base_offset());
            out.segments_deleted += 1;
            out.bytes_deleted += seg.size();
        }
        drop(leftovers);
        self.remove_leftovers()?;
        if !removed.is_empty() {
            storage
                .sync_dir(&self.inner.dir)
                .map_err(|e| Error::io("fsync directory", &self.inner.dir, e))?;
        }
        tracing::info!(
            dir = %self.inner.dir.display(),
            log_start = start,
            segments_deleted = out.segments_deleted,
            bytes_deleted = out.bytes_deleted,
            "log start advanced, segments deleted"
        );
        Ok(out)
    }
}
