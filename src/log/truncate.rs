//! Follower truncation: remove every batch from the one containing an offset onwards.
//!
//! Bytes a reader may hold are never rewritten: the kept prefix of the segment that contains
//! the truncation point is copied into a new file that atomically replaces the old name
//! (rename); the old file stays mapped until its last reader drops it. The recovery-point
//! checkpoint is lowered first, so a crash at any step leaves segments that recovery treats as
//! an unsynced tail, never as lost synced data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Log;
use crate::error::{Error, Result};
use crate::format::batch::BatchHeader;
use crate::format::file_name::FileKind;
use crate::io::AtomicReplace;
use crate::segment::index::{IndexBuilder, IndexEntries};
use crate::segment::{remove_segment_files, segment_path, Segment, SegmentTail, INDEX_FILES};
use crate::types::Offset;

impl Log {
    /// Truncates the log so it ends before the batch that contains `offset`. Returns the new
    /// log end offset (unchanged if `offset` is at or past it).
    pub fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        self.check_writable()?;
        let _span = tracing::info_span!(
            "log_truncate",
            dir = %self.inner.dir.display(),
            to = offset.0,
            log_end = self.log_end_offset().0
        )
        .entered();
        let result = self.truncate_inner(offset);
        self.poison_if_half_done(&result);
        match &result {
            Ok(end) => tracing::info!(new_log_end = end.0, "log truncated"),
            Err(e) => tracing::warn!(error = %e, "truncation failed"),
        }
        result
    }

    /// A half-done truncation (an I/O error or damage met on the way) leaves files the
    /// in-memory state no longer describes: the log is poisoned, and reopening recovers from
    /// the files (every step is crash-safe). Idempotent.
    fn poison_if_half_done<T>(&self, result: &Result<T>) {
        if let Err(e @ (Error::Io { .. } | Error::Corrupt { .. })) = result {
            self.poison(e);
        }
    }

    fn truncate_inner(&self, offset: Offset) -> Result<Offset> {
        let cfg = &self.inner.config;
        let storage = cfg.storage.as_ref();
        let dir = self.inner.dir.clone();
        let mut a = self.inner.appender.lock();
        let end = self.inner.log_end.load(Ordering::Acquire);
        if offset.0 >= end {
            return Ok(Offset(end));
        }
        // No background snapshot of the history this cuts off may land from here on (it would
        // be loaded as a base once the log grows past its offset with other batches).
        let _fence = self.fence_snapshots();
        let segments = self.segments();
        // Finish pending seals first: a queued seal must never write files for a segment this
        // truncation deletes or replaces (it waits on the segment's lifecycle lock).
        for s in segments.iter().take(segments.len().saturating_sub(1)) {
            s.seal(storage)?;
            self.note_sealed(s)?;
        }
        // No lane may be in flight while the recovery point is lowered and files are replaced:
        // a lane claimed before the truncation would otherwise complete after it and could
        // raise the recovery point over bytes that are gone (or msync a retired file).
        let mut sync = self.inner.sync.lock();
        self.wait_sync_idle(&mut sync);
        // A lane or the checkpoint writer this waited for may have failed meanwhile (finding
        // 11): the log is then poisoned, and `check_writable` above is stale. A poisoned log
        // changes nothing; going on once cut the data under a failed checkpoint write whose
        // slot (the higher recovery point) outlived the truncation's lowering store.
        if self.is_poisoned() {
            return Err(Error::PreviousIo);
        }
        // Every step below runs under the sync lock, and a failure poisons the log before the
        // lock is released: otherwise a background interval sync could slip in between and
        // store a recovery point over segments this truncation already unlinked.
        let result = (|| -> Result<u64> {
            let idx = segments
                .partition_point(|s| s.base_offset() <= offset.0)
                .saturating_sub(1);
            let seg = Arc::clone(&segments[idx]);
            // Find the first batch whose last offset is at or past `offset`.
            let bytes = seg.map().published_bytes();
            let mut pos = seg.index()?.position_for(seg.relative(offset.0)) as usize;
            let mut new_end = seg.base_offset();
            while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
                let h = BatchHeader::decode(rest).map_err(|reason| Error::Corrupt {
                    path: seg.path().to_path_buf(),
                    position: pos as u64,
                    reason,
                })?;
                if h.last_offset() >= offset.0 {
                    new_end = h.base_offset;
                    break;
                }
                pos += h.batch_length as usize;
                new_end = h.next_offset();
            }
            // Below every segment (retention deleted that range): Kafka's truncateFullyAndStartAt.
            // Nothing of the log survives and the new, empty log starts exactly at `offset`.
            let new_end = if offset.0 < seg.base_offset() {
                pos = 0;
                offset.0
            } else {
                new_end.max(seg.base_offset())
            };

            // 1. The log start and the recovery point never stay above the data they describe.
            if self.inner.log_start.load(Ordering::Acquire) > new_end {
                // The first segment keeps its base unless the cut is below it: so does the
                // witness of what is open there (`log::log_start`).
                let first = &segments[0];
                let checkpoint = if new_end >= first.base_offset() {
                    super::log_start::LogStartCheckpoint::at_segment(new_end, first)
                } else {
                    super::log_start::LogStartCheckpoint {
                        log_start: new_end,
                        first_open: None,
                    }
                };
                super::log_start::write(storage, &dir, &checkpoint)?;
                self.inner.log_start.store(new_end, Ordering::Release);
            }
            let rp = sync.recovery_point().min(new_end);
            if let Err(e) = self.checkpoint_recovery_point(rp) {
                sync.poison();
                return Err(e);
            }
            sync.truncated(rp, super::SyncCursor::NONE);
            self.publish_recovery_point(&sync);

            // 2. Remove the later segments, newest first.
            a.writer = None;
            for later in segments.iter().skip(idx + 1).rev() {
                later.delete_files(storage)?;
            }
            // 3. Replace the containing segment by a copy of its kept prefix (or drop it).
            remove_segment_files(storage, &dir, seg.base_offset(), &INDEX_FILES)?;
            if pos == 0 {
                seg.delete_files(storage)?;
            } else {
                seg.retire();
            }
            let new_active = if pos == 0 {
                storage
                    .sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))?;
                Segment::create(storage, &dir, new_end, cfg.segment_bytes)?
            } else {
                let path = segment_path(&dir, seg.base_offset(), FileKind::Log);
                let prefix = bytes.get(..pos).unwrap_or(&[]);
                // A failure removes the copy (`AtomicReplace`), leaving the old segment.
                let copy = AtomicReplace::create(storage, &path)
                    .map_err(|e| Error::io("create segment copy", &path, e))?;
                let (f, tmp) = (copy.file(), copy.tmp_path());
                f.allocate(cfg.segment_bytes.max(pos as u64))
                    .map_err(|e| Error::io("fallocate segment copy", tmp, e))?;
                f.write_at(0, prefix)
                    .map_err(|e| Error::io("write segment copy", tmp, e))?;
                f.set_len(pos as u64)
                    .map_err(|e| Error::io("trim segment copy", tmp, e))?;
                copy.commit().map_err(|e| {
                    Error::io(
                        "replace segment by its copy (fdatasync, rename, directory fsync)",
                        &path,
                        e,
                    )
                })?;
                let old = seg.index()?.snapshot();
                let entries = IndexEntries {
                    offsets: old
                        .offsets
                        .into_iter()
                        .filter(|e| (e.position as usize) < pos)
                        .collect(),
                    times: old
                        .times
                        .into_iter()
                        .filter(|t| seg.base_offset() + u64::from(t.relative_offset) < new_end)
                        .collect(),
                };
                let mut tail = SegmentTail::empty(seg.base_offset());
                tail.next_offset = new_end;
                tail.max_timestamp = prefix_max_timestamp(prefix);
                tail.first_append_ms = seg.tail()?.first_append_ms;
                tail.last_append_ms = last_append_ms(prefix);
                Segment::open(
                    storage,
                    &dir,
                    seg.base_offset(),
                    pos as u64,
                    true,
                    cfg.segment_bytes,
                    entries,
                    tail,
                )?
            };
            let new_active = Arc::new(new_active);
            if pos != 0 {
                // The copy keeps the transactions that began before its base and the aborted
                // entries whose marker survives; the rest is replayed below.
                let old = seg.txns().clone();
                let mut t = new_active.txns();
                t.open_at_base = old.open_at_base;
                t.aborted = old
                    .aborted
                    .into_iter()
                    .filter(|x| x.last_offset < new_end)
                    .collect();
            }
            {
                let mut list = self.inner.segments.write();
                let mut v: Vec<Arc<Segment>> = segments.iter().take(idx).cloned().collect();
                v.push(Arc::clone(&new_active));
                *list = Arc::new(v);
            }
            let entries = new_active.index()?.snapshot();
            let since =
                new_active.size() - entries.offsets.last().map_or(0, |e| u64::from(e.position));
            a.index = IndexBuilder::resume(
                cfg.index_interval_bytes,
                &entries,
                since,
                new_active.tail()?.max_timestamp,
            );
            a.writer = new_active.map().writer();
            a.active = new_active;
            a.prefaulted_to = 0;
            self.inner.log_end.store(new_end, Ordering::Release);
            let start = self.inner.log_start.load(Ordering::Acquire);
            if start > new_end {
                self.inner.log_start.store(new_end, Ordering::Release);
            }
            Ok(new_end)
        })();
        self.poison_if_half_done(&result);
        drop(sync);
        // Waiters re-evaluate against the new log end and recovery point (or the poison).
        self.inner.synced.notify_all();
        let new_end = result?;
        self.rebuild_producers(&mut a)?;
        if a.active.is_empty() {
            // A new empty segment: what is open at the log end is open at its base.
            a.active.txns().open_at_base = super::txns::open_txns(&a.producers);
        }
        self.reset_txn_view(&a, new_end);
        Ok(Offset(new_end))
    }
}

fn walk_headers(prefix: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::decode(prefix.get(pos..)?).ok()?;
        pos += h.batch_length as usize;
        Some(h)
    })
}

fn prefix_max_timestamp(prefix: &[u8]) -> i64 {
    walk_headers(prefix)
        .map(|h| h.max_timestamp)
        .max()
        .unwrap_or(i64::MIN)
}

fn last_append_ms(prefix: &[u8]) -> i64 {
    walk_headers(prefix)
        .last()
        .map_or(-1, |h| h.append_timestamp)
}
