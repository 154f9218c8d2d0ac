//! The append path: validate, stamp, maybe roll, copy into the map, publish, index.
//!
//! Order (docs/architecture.md): everything that can fail without side effects runs first;
//! the copy into the map cannot fail (the file is preallocated); publishing the segment's end
//! (Release) happens before the log end offset moves, so a reader that sees an offset below the
//! log end always finds its bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::flush::Job;
use super::{producers, Appender, Log};
use crate::config::SyncMode;
use crate::error::{Error, Result};
use crate::format::batch::{RecordBatch, Stamp};
use crate::producer::{CheckResult, Marker};
use crate::segment::index::IndexBuilder;
use crate::types::Offset;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of the batch's last record (`base_offset + record count - 1`).
    pub last_offset: Offset,
    /// The log's clock when the batch was appended (the batch's `append_timestamp`).
    pub append_time_ms: i64,
    /// The batch was a retry of one already in the log: nothing was appended and the offsets
    /// are the original ones.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A client batch: the log assigns offsets, leader epoch and append time.
    Client,
    /// A batch copied from a leader (or replayed): stored verbatim at its own offsets.
    Replicated,
}

impl Log {
    /// Appends a batch: assigns offsets from the log end and stamps the leader epoch and the
    /// log's clock. With `SyncMode::EveryAppend` it returns only once the batch is durable.
    ///
    /// A transactional batch (`BatchBuilder::transactional`) opens or continues its producer's
    /// transaction; a non-transactional batch from a producer with an open transaction is
    /// `InvalidTxnState`. A control batch is `InvalidRecord`: markers come through
    /// [`Log::append_marker`].
    pub fn append(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        if batch.header().is_control() {
            return Err(Error::InvalidRecord {
                reason:
                    "a client batch may not be a control batch (markers come through append_marker)",
            });
        }
        self.append_with(batch, Origin::Client, None)
    }

    /// Appends a COMMIT or ABORT marker for `marker.producer_id` (the transaction
    /// coordinator's path), stamped like a client batch. Checks, before anything is written
    /// (docs/transactions.md): a producer epoch below the producer's is `ProducerFenced`; a
    /// coordinator epoch below its latest marker's is `CoordinatorFenced`; a marker ending an
    /// open transaction must bump the producer epoch (`InvalidTxnState`). A marker for a
    /// producer without an open transaction is written, updates its epochs and completes
    /// nothing. An ABORT that completes a transaction adds an entry to the active segment's
    /// aborted-transaction index.
    pub fn append_marker(&self, marker: &Marker) -> Result<AppendInfo> {
        let now = self.inner.config.clock.now_ms();
        let batch = marker
            .to_batch(now)
            .map_err(|reason| Error::InvalidRecord {
                reason: match reason {
                    crate::format::DecodeError::BadField { field, .. } => field,
                    _ => "marker batch",
                },
            })?;
        self.append_with(&batch, Origin::Client, Some(marker))
    }

    /// Appends a batch verbatim (same offsets, epoch, append time and bytes), as a follower
    /// does with a leader's batches. Its base offset must equal the log end offset.
    pub fn append_replicated(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let marker = Marker::of(&batch.view()).map_err(|reason| Error::InvalidRecord {
            reason: match reason {
                crate::format::DecodeError::BadRecord { reason, .. } => reason,
                _ => "control batch",
            },
        })?;
        self.append_with(batch, Origin::Replicated, marker.as_ref())
    }

    /// `marker`: the batch's marker when it is a control batch (the client path passes only
    /// the marker it built; the replicated path decodes it). Reports the append's metrics.
    fn append_with(
        &self,
        batch: &RecordBatch,
        origin: Origin,
        marker: Option<&Marker>,
    ) -> Result<AppendInfo> {
        let started = std::time::Instant::now();
        let result = self.append_unmeasured(batch, origin, marker);
        let m = &self.inner.metrics;
        if let Ok(AppendInfo {
            duplicate: false, ..
        }) = result
        {
            m.appended_batches.increment(1);
            m.appended_bytes.increment(batch.len() as u64);
        }
        m.append_seconds.record(started.elapsed().as_secs_f64());
        result
    }

    fn append_unmeasured(
        &self,
        batch: &RecordBatch,
        origin: Origin,
        marker: Option<&Marker>,
    ) -> Result<AppendInfo> {
        debug_assert_eq!(marker.is_some(), batch.header().is_control());
        self.check_writable()?;
        let len = batch.len();
        let max = self.inner.config.max_batch_bytes;
        if len > max as usize {
            return Err(Error::BatchTooLarge {
                size: len as u64,
                max: u64::from(max),
            });
        }
        let mut guard = self.inner.appender.lock();
        self.check_writable()?;
        let a = &mut *guard;
        let leo = self.inner.log_end.load(Ordering::Acquire);
        let stamp = match origin {
            Origin::Client => {
                let now = self.inner.config.clock.now_ms().max(a.last_append_ms);
                Stamp {
                    base_offset: leo,
                    leader_epoch: a.leader_epoch,
                    append_timestamp: now,
                }
            }
            Origin::Replicated => {
                let h = batch.header();
                if h.base_offset != leo {
                    return Err(Error::UnexpectedAppendOffset {
                        expected: Offset(leo),
                        actual: Offset(h.base_offset),
                    });
                }
                Stamp {
                    base_offset: h.base_offset,
                    leader_epoch: h.leader_epoch,
                    append_timestamp: h.append_timestamp,
                }
            }
        };
        let h = batch.header();
        if origin == Origin::Client && h.is_idempotent() {
            if let Some(issued) = a.epochs.issued(h.producer_id) {
                if h.producer_epoch < issued {
                    return Err(Error::ProducerFenced {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        current_epoch: issued,
                    });
                }
            }
            let check = match marker {
                Some(m) => {
                    a.producers.check_marker(m)?;
                    CheckResult::Append
                }
                None => {
                    let check = a.producers.check(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        h.last_sequence(),
                        stamp.append_timestamp,
                    )?;
                    if check == CheckResult::Append {
                        a.producers
                            .check_txn_data(h.producer_id, h.is_transactional())?;
                    }
                    check
                }
            };
            if let CheckResult::Duplicate(meta) = check {
                drop(guard);
                if self.inner.config.sync == SyncMode::EveryAppend {
                    self.sync_to(meta.last_offset + 1)?;
                }
                return Ok(AppendInfo {
                    base_offset: Offset(meta.first_offset),
                    last_offset: Offset(meta.last_offset),
                    append_time_ms: meta.append_time_ms,
                    duplicate: true,
                });
            }
        }
        let last = leo + u64::from(batch.record_count()) - 1;
        self.maybe_roll(a, len, last, stamp.append_timestamp)?;
        let writer = a.writer.as_mut().ok_or(Error::ReadOnly)?;
        let pos = writer.position();
        // Paired with the checks after the publish: the writer starts at the published end
        // (no leftover unpublished bytes), and the active segment ends at the log end.
        assert_eq!(
            pos,
            a.active.map().published(),
            "write position is not the published end of segment {}",
            a.active.base_offset()
        );
        assert_eq!(
            a.active.next_offset(),
            leo,
            "the active segment does not end at the log end"
        );
        let Some(dst) = writer.reserve(len) else {
            return Err(Error::BatchTooLarge {
                size: len as u64,
                max: writer.remaining() as u64,
            });
        };
        match origin {
            Origin::Client => batch.write_stamped(dst, stamp),
            Origin::Replicated => dst.copy_from_slice(batch.as_bytes()),
        }
        writer.advance(len);
        writer.publish();
        let mut header = *batch.header();
        header.base_offset = stamp.base_offset;
        header.leader_epoch = stamp.leader_epoch;
        header.append_timestamp = stamp.append_timestamp;
        let entries = a.index.on_batch(
            a.active.relative(leo),
            pos as u32,
            len as u32,
            header.max_timestamp,
        );
        a.active.on_published(&header, entries);
        // The batch is published whole, and its header (which readers and recovery go by)
        // names the offsets the log assigned from its record count.
        assert_eq!(
            a.active.map().published(),
            pos + len,
            "published end is not the old end plus the batch"
        );
        assert_eq!(
            a.active.next_offset(),
            last + 1,
            "the batch's header and record count disagree on its last offset"
        );
        a.last_append_ms = a.last_append_ms.max(stamp.append_timestamp);
        self.inner.log_end.store(last + 1, Ordering::Release);
        let completed = producers::apply_batch(&mut a.producers, &header, marker);
        if header.is_transactional() {
            self.on_txn_batch(a, completed);
        }
        a.bytes_since_snapshot += len as u64;
        if a.bytes_since_snapshot >= self.inner.config.snapshot_interval_bytes {
            self.snapshot_in_background(a);
        }
        self.maybe_prefault(a, pos + len);
        drop(guard);

        if self.inner.config.sync == SyncMode::EveryAppend {
            self.sync_to(last + 1)?;
        }
        Ok(AppendInfo {
            base_offset: Offset(leo),
            last_offset: Offset(last),
            append_time_ms: stamp.append_timestamp,
            duplicate: false,
        })
    }

    /// Rolls to a new segment when the batch does not fit, the index is full, the offsets would
    /// not fit relative to the base, or the segment is older than `segment_ms`.
    fn maybe_roll(&self, a: &mut Appender, len: usize, last_offset: u64, now: i64) -> Result<()> {
        let cfg = &self.inner.config;
        let active = &a.active;
        if active.is_empty() {
            return Ok(());
        }
        let remaining = a.writer.as_ref().map_or(0, |w| w.remaining());
        let tail = active.tail()?;
        let roll = remaining < len
            || active.index()?.len() >= cfg.index_max_entries as usize
            || !active.fits_offset(last_offset)
            || cfg
                .segment_ms
                .is_some_and(|ms| now.saturating_sub(tail.first_append_ms) >= ms as i64);
        if roll {
            self.roll_locked(a)?;
        }
        Ok(())
    }

    /// Rolls the log now: the active segment is closed to appends (sealed in the background,
    /// as a roll by size or age is) and a new, empty active segment starts at the log end.
    /// Returns the base offset of the active segment afterwards (= the log end offset).
    ///
    /// An empty active segment is not rolled (a segment is named by its base offset, and an
    /// empty one already starts at the log end): the call changes nothing and returns its base
    /// offset. Errors: `ReadOnly`, `Closed`, `PreviousIo` (poisoned by a failed sync), or the
    /// I/O error of creating the new segment file (nothing changed then).
    ///
    /// Kafka's `Log.roll()`: lets an embedder cut a segment boundary (before retention or
    /// an export) without waiting for `segment_bytes` or `segment_ms`.
    pub fn roll(&self) -> Result<Offset> {
        self.check_writable()?;
        let mut guard = self.inner.appender.lock();
        self.check_writable()?;
        let a = &mut *guard;
        if !a.active.is_empty() {
            self.roll_locked(a)?;
        }
        Ok(Offset(a.active.base_offset()))
    }

    /// Starts a new active segment at the log end; the old one is sealed in the background.
    fn roll_locked(&self, a: &mut Appender) -> Result<()> {
        let cfg = &self.inner.config;
        let leo = self.inner.log_end.load(Ordering::Acquire);
        let seg = Arc::new(self.new_segment(leo)?);
        // The transactions open here end the old segment and start the new one (its seal
        // writes them to its `.txnindex`).
        let open = super::txns::open_txns(&a.producers);
        a.active.txns().open_at_end = Some(open.clone());
        seg.txns().open_at_base = open;
        // Prepare the next roll's file now, ahead of the old segment's seal in the queue.
        self.request_spare();
        a.writer = None;
        let old = std::mem::replace(&mut a.active, Arc::clone(&seg));
        let (sealed_base, sealed_bytes) = (old.base_offset(), old.size());
        a.writer = seg.map().writer();
        a.index = IndexBuilder::new(cfg.index_interval_bytes);
        a.prefaulted_to = 0;
        {
            let mut segments = self.inner.segments.write();
            let mut list = (**segments).clone();
            list.push(seg);
            *segments = Arc::new(list);
        }
        match self
            .inner
            .background
            .lock()
            .as_ref()
            .filter(|b| b.is_running())
        {
            Some(bg) => bg.send(Job::Seal(old)),
            None => {
                old.seal(cfg.storage.as_ref())?;
                self.note_sealed(&old)?;
            }
        }
        // A snapshot at every segment base bounds replay after a crash to one segment.
        self.snapshot_in_background(a);
        self.inner.metrics.segment_rolls.increment(1);
        tracing::info!(
            dir = %self.inner.dir.display(),
            sealed_base,
            sealed_bytes,
            new_base = leo,
            "segment rolled"
        );
        Ok(())
    }

    /// Asks the background thread to fault in the next region of the active segment before the
    /// appender reaches it (the first touch of a fresh mapped page is the slow part).
    fn maybe_prefault(&self, a: &mut Appender, written_to: usize) {
        let ahead = self.inner.config.prefault_bytes as usize;
        let capacity = a.active.map().capacity();
        let Some(prefaulter) = a.prefaulter.as_ref() else {
            return;
        };
        // Keep `ahead` bytes past the write position requested, in whole chunks.
        while ahead > 0 && a.prefaulted_to < capacity && a.prefaulted_to < written_to + ahead {
            let from = a.prefaulted_to.max(written_to);
            let to = (from + super::prefault::CHUNK_BYTES).min(capacity);
            prefaulter.request(&a.active, from, to);
            a.prefaulted_to = to;
        }
    }
}
