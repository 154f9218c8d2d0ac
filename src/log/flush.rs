//! Durability: sync lanes, the background sealer, clean close and simulated crashes.
//!
//! Group commit keeps several syncs in flight (`Log::sync_to`, bookkeeping in `lanes.rs`): an
//! appender that needs durability takes the `sync` mutex briefly and either finds its batch
//! covered (by the recovery point: return; by a lane in flight: wait on `synced`) or *claims*
//! everything published after the last claim as a new lane. It msyncs its lane outside the
//! mutex, concurrently with other lanes, then marks it done. The recovery point moves only over
//! the contiguous prefix of completed lanes, written to the checkpoint by one writer at a time
//! (whichever waiter the prefix covers), outside the mutex so claims go on meanwhile. No thread
//! hand-off sits on the latency path (docs/architecture.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::checkpoints::{self, CLEAN_SHUTDOWN_FILE};
use super::lanes::Step;
use super::{Log, LogInner, SyncCursor, SyncState};
use crate::config::SyncMode;
use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointKind;
use crate::segment::Segment;

const BACKGROUND_THREAD: &str = "oncelog-background";

/// Work for the background thread.
#[derive(Debug)]
pub(super) enum Job {
    /// Seal a rolled segment (msync, trim, index files).
    Seal(Arc<Segment>),
    /// Write a producer snapshot encoded by the appender (dropped if a fence made it obsolete).
    Snapshot(super::producers::QueuedSnapshot),
    /// Create the spare for the next roll (`src/log/spare.rs`).
    PrepareSpare,
    /// Finish queued seals and exit.
    Stop,
    /// Exit now, dropping queued work (simulated crash).
    Abort,
}

#[derive(Debug)]
pub(super) struct Background {
    tx: Sender<Job>,
    handle: Option<JoinHandle<()>>,
    /// Set by a simulated crash: queued work is dropped, not done.
    abort: Arc<AtomicBool>,
    /// Seals and snapshots sent and not yet done.
    pending: Arc<AtomicUsize>,
}

impl Background {
    pub(super) fn start(log: &Log) -> Background {
        let (tx, rx) = crossbeam_channel::unbounded();
        let weak = Arc::downgrade(&log.inner);
        let abort = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (Arc::clone(&abort), Arc::clone(&pending));
        let handle = std::thread::Builder::new()
            .name(BACKGROUND_THREAD.into())
            .spawn(move || background_loop(&weak, &rx, &flag, &count))
            .ok();
        Background {
            tx,
            handle,
            abort,
            pending,
        }
    }

    pub(super) fn send(&self, job: Job) {
        // If the thread is gone (spawn failed), do seals inline via the caller's fallback.
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Seals and snapshots queued or in progress.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn stop(mut self, job: Job) {
        if matches!(job, Job::Abort) {
            self.abort.store(true, Ordering::Release);
        }
        let _ = self.tx.send(job);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.handle.is_some()
    }
}

fn background_loop(
    weak: &Weak<LogInner>,
    rx: &Receiver<Job>,
    abort: &AtomicBool,
    pending: &AtomicUsize,
) {
    let tick = Duration::from_millis(50);
    let mut last_sync = Instant::now();
    loop {
        let job = rx.recv_timeout(tick);
        if abort.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let log = Log {
            inner,
            counted: false,
        };
        if let Ok(Job::Seal(_) | Job::Snapshot(_)) = &job {
            // A requested spare goes first: it is queued behind the previous roll's seal and
            // snapshots, which can take longer than filling a segment (spare.rs).
            log.prepare_spare();
        }
        match job {
            Ok(Job::Seal(seg)) => {
                if let Err(e) = seal(&log, &seg) {
                    log.poison(&e);
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(Job::Snapshot(queued)) => {
                log.write_queued_snapshot(queued);
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(Job::PrepareSpare) => {
                log.prepare_spare();
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(Job::Stop) => {
                // Queued snapshots are dropped: close writes one at the log end itself.
                while let Ok(job) = rx.try_recv() {
                    if let Job::Seal(seg) = job {
                        if let Err(e) = seal(&log, &seg) {
                            log.poison(&e);
                        }
                    }
                }
                return;
            }
            Ok(Job::Abort) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let SyncMode::Interval { ms, bytes } = log.inner.config.sync {
            let unsynced = log.unsynced_bytes();
            if unsynced > 0
                && (last_sync.elapsed() >= Duration::from_millis(ms) || unsynced >= bytes)
            {
                last_sync = Instant::now();
                // Unchecked: close sets `closed` before stopping this thread, and an interval
                // sync racing it must not turn into a poisoning `Closed` error.
                if let Err(e) = log.flush_unchecked() {
                    log.poison(&e);
                }
            }
        }
        log.sync_recovery_point_if_due();
        if log.inner.config.retention_ms.is_some() || log.inner.config.retention_bytes.is_some() {
            if let Err(e) = log.apply_retention() {
                log.retention_failed(&e);
            }
        }
    }
}

/// The seal's msync, done ahead in pieces of this size so that a spare requested meanwhile (by
/// a roll during a long seal) is prepared between them instead of after the whole segment.
const SEAL_FLUSH_CHUNK: usize = 32 << 20;

fn seal(log: &Log, seg: &Segment) -> Result<()> {
    // The seal fsyncs the directory (index files) after its msync: that covers every spare
    // renamed before the last piece was msynced, so the mark is taken again after each piece.
    let mut began = log.inner.spares.dir_sync_began();
    // A seal queued at a roll may find the segment already sealed (by close or truncation) or
    // deleted: then it must not move the recovery point.
    let storage = log.inner.config.storage.as_ref();
    let between = || {
        log.prepare_spare();
        began = log.inner.spares.dir_sync_began();
    };
    if seg.seal_in_pieces(storage, SEAL_FLUSH_CHUNK, between)? {
        log.inner.spares.dir_synced(began);
        log.note_sealed(seg)?;
    }
    Ok(())
}

impl Log {
    /// Makes every batch appended so far durable and advances the recovery point to the log end.
    /// A read-only log writes nothing: [`Error::ReadOnly`].
    pub fn flush(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        self.flush_unchecked()
    }

    pub(super) fn flush_unchecked(&self) -> Result<()> {
        self.sync_to(self.inner.log_end.load(Ordering::Acquire))
    }

    /// True when the background thread has no seal or producer snapshot queued or in progress
    /// (always true without a background thread). For tests and tools that look at the
    /// directory and need it quiet; appends may queue more work at any time.
    pub fn background_idle(&self) -> bool {
        self.inner
            .background
            .lock()
            .as_ref()
            .is_none_or(|bg| bg.pending() == 0)
    }

    /// Bytes published but not yet covered by the recovery point (approximate).
    pub fn unsynced_bytes(&self) -> u64 {
        let sync = self.inner.sync.lock();
        let durable = sync.durable_cursor();
        let rp = sync.recovery_point();
        drop(sync);
        self.segments()
            .iter()
            .filter(|s| s.next_offset() > rp)
            .map(|s| {
                let covered = if s.base_offset() == durable.base {
                    durable.len as u64
                } else {
                    0
                };
                s.size().saturating_sub(covered)
            })
            .sum()
    }

    /// A sealed segment is durable as a whole: if everything before it was, the recovery point
    /// moves to its end, so damage in it is reported as corruption, never cut as a torn tail.
    ///
    /// Waits until no checkpoint writer is active and writes the checkpoint under the `sync`
    /// mutex (once per roll, so blocking claims for one fdatasync is cheap). Lanes in flight
    /// below the new recovery point no longer hold it back and never lower it; claims restart
    /// at the segment's end unless they are already past it.
    pub(super) fn note_sealed(&self, seg: &Segment) -> Result<()> {
        let mut sync = self.inner.sync.lock();
        while sync.writing() {
            self.inner.synced.wait(&mut sync);
        }
        if self.is_poisoned() {
            // fsyncgate: after a failed sync, the seal's msync may succeed over pages the
            // kernel already dropped, so on a poisoned log it vouches for nothing.
            return Ok(());
        }
        let rp = sync.recovery_point();
        let in_log = self.segments().iter().any(|s| std::ptr::eq(&**s, seg));
        if in_log && rp >= seg.base_offset() && rp < seg.next_offset() {
            if let Err(e) = self
                .make_names_durable(seg.next_offset())
                .and_then(|()| self.checkpoint_recovery_point(seg.next_offset()))
            {
                sync.poison();
                self.poison_locked(&e);
                return Err(e);
            }
            let cursor = SyncCursor {
                base: seg.base_offset(),
                len: seg.map().published(),
            };
            sync.sealed(seg.next_offset(), cursor);
            self.publish_recovery_point(&sync);
        }
        Ok(())
    }

    /// Stores the lanes' recovery point in `LogInner::recovery_point` (under the `sync` mutex,
    /// after the checkpoint write that made it durable) and wakes every waiter.
    pub(super) fn publish_recovery_point(&self, sync: &SyncState) {
        let rp = sync.recovery_point();
        self.assert_recovery_point(rp);
        self.inner.recovery_point.store(rp, Ordering::Release);
        self.inner.synced.notify_all();
    }

    /// The one place the log writes its recovery-point checkpoint: the lanes' checkpoint writer,
    /// `note_sealed` and truncation all store through it. Caller holds the writer role or the
    /// `sync` mutex with no writer active (see `LogInner::checkpoint`): every caller computed
    /// `rp` under the `sync` mutex with no truncation between that and this store (the writer
    /// role and `note_sealed` exclude truncation, which waits for them and lowers the recovery
    /// point itself), so `rp` can never pass the log end; checked here in release builds too
    /// (one atomic load next to an fdatasync), because a recovery point past the data makes the
    /// next open fail (docs/architecture.md, "The recovery-point rule").
    /// Every store is timed here (`oncelog_sync_seconds{kind="checkpoint"}`), whichever path
    /// writes it.
    pub(super) fn checkpoint_recovery_point(&self, rp: u64) -> Result<()> {
        self.assert_recovery_point(rp);
        let started = std::time::Instant::now();
        let r = self.inner.checkpoint.lock().store(rp);
        let m = &self.inner.metrics;
        m.checkpoint_seconds.record(started.elapsed().as_secs_f64());
        r
    }

    /// The lanes' checkpoint write: the data below `rp` is durable (its lane's msync returned),
    /// so the value needs one write; the file's fdatasync follows at most
    /// `LogConfig::recovery_point_lag_ms` later (here, or on the background thread's tick, or
    /// at the next seal, truncation or close). One flush per durable point instead of two;
    /// the price is that damage to synced data in the lag window is cut as a torn tail, not
    /// reported (docs/recovery.md, "The lagging recovery point"). Timed with the other stores.
    fn checkpoint_recovery_point_lazily(&self, rp: u64) -> Result<()> {
        self.assert_recovery_point(rp);
        let started = std::time::Instant::now();
        let now = self.inner.config.clock.now_ms();
        let lag = self.inner.config.recovery_point_lag_ms;
        let r = self.inner.checkpoint.lock().store_lazily(rp, now, lag);
        let m = &self.inner.metrics;
        m.checkpoint_seconds.record(started.elapsed().as_secs_f64());
        r
    }

    /// Fdatasyncs a lazily written recovery point once it is `recovery_point_lag_ms` old: the
    /// background thread's tick, so the lag stays bounded while no append comes. A failure
    /// poisons the log like any failed sync.
    fn sync_recovery_point_if_due(&self) {
        let now = self.inner.config.clock.now_ms();
        let lag = self.inner.config.recovery_point_lag_ms;
        let r = self.inner.checkpoint.lock().sync_if_older(now, lag);
        if let Err(e) = r {
            self.poison(&e);
        }
    }

    /// A recovery point never passes the log end (it would vouch for data that does not
    /// exist): checked whenever one is stored, in the checkpoint or in memory.
    fn assert_recovery_point(&self, rp: u64) {
        let end = self.inner.log_end.load(Ordering::Acquire);
        assert!(rp <= end, "recovery point {rp} past the log end {end}");
    }

    /// Waits (releasing the `sync` mutex meanwhile) until no lane is in flight and no
    /// checkpoint writer is active, so the caller may lower the recovery point or touch the
    /// files lanes msync (truncation, close). New claims may start while it waits, but they are
    /// bounded by what is already published. A lane or writer may fail (and poison the log)
    /// meanwhile: a caller that then writes must check `is_poisoned` again under the lock.
    pub(super) fn wait_sync_idle(&self, sync: &mut parking_lot::MutexGuard<'_, SyncState>) {
        if sync.idle() {
            return;
        }
        let waiters = &self.inner.sync_idle_waiters;
        waiters.fetch_add(1, Ordering::AcqRel);
        while !sync.idle() {
            self.inner.synced.wait(sync);
        }
        waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Test hook: threads currently blocked waiting for the sync lanes to drain (a truncation
    /// or close waiting for a lane msync or the checkpoint writer to finish). Lets a test
    /// force the interleaving of finding 11 (docs/fuzzing.md) without sleeping. Costs two atomic
    /// updates per wait that actually blocks; only truncation and close wait.
    #[doc(hidden)]
    pub fn threads_waiting_for_sync_idle(&self) -> usize {
        self.inner.sync_idle_waiters.load(Ordering::Acquire)
    }

    /// The most sync lanes (concurrent msyncs of `SyncMode::EveryAppend` or `flush`) that were
    /// in flight at once since open: a statistic for tests and benchmarks.
    pub fn max_sync_lanes_in_flight(&self) -> usize {
        self.inner.sync.lock().max_in_flight()
    }

    /// Group commit with sync lanes: returns once every batch below `target` is durable (or,
    /// if a truncation removed some of them meanwhile, every batch below the new log end).
    /// Never returns Ok for a target the recovery point does not cover.
    pub(super) fn sync_to(&self, target: u64) -> Result<()> {
        if self.inner.recovery_point.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let mut sync = self.inner.sync.lock();
        loop {
            // Only truncation lowers the log end, and it does so under this mutex.
            let want = target.min(self.inner.log_end.load(Ordering::Acquire));
            match sync.next(want, self.is_poisoned()) {
                Step::Durable => return Ok(()),
                Step::Poisoned => return Err(Error::PreviousIo),
                Step::Wait => self.inner.synced.wait(&mut sync),
                Step::Claim => {
                    // Load the end first: every batch below it is published in its segment
                    // (and the segment is in the list), so the published bytes read afterwards
                    // cover it.
                    let end = self.inner.log_end.load(Ordering::Acquire);
                    let (from, cursor) = sync.claimed();
                    let mut ranges = Vec::new();
                    let mut last = cursor;
                    for seg in self.segments().iter().filter(|s| s.next_offset() > from) {
                        let start = if seg.base_offset() == cursor.base {
                            cursor.len
                        } else {
                            0
                        };
                        let to = seg.map().published();
                        if to > start {
                            ranges.push((Arc::clone(seg), start, to));
                        }
                        last = SyncCursor {
                            base: seg.base_offset(),
                            len: to.max(start),
                        };
                    }
                    let lane = sync.claim(end, last);
                    let result = parking_lot::MutexGuard::unlocked(&mut sync, || {
                        let started = std::time::Instant::now();
                        let r = ranges
                            .iter()
                            .try_for_each(|(seg, from, to)| seg.flush_range(*from, *to));
                        let m = &self.inner.metrics;
                        m.msync_seconds.record(started.elapsed().as_secs_f64());
                        r
                    });
                    match result {
                        Ok(()) => sync.complete(lane),
                        Err(e) => {
                            sync.fail(lane);
                            self.poison_locked(&e);
                            return Err(e);
                        }
                    }
                    self.inner.synced.notify_all();
                }
                Step::Write { to, cursor } => {
                    let result = parking_lot::MutexGuard::unlocked(&mut sync, || {
                        self.make_names_durable(to)?;
                        self.checkpoint_recovery_point_lazily(to)
                    });
                    if let Err(e) = result {
                        sync.write_failed();
                        self.poison_locked(&e);
                        return Err(e);
                    }
                    sync.written(to, cursor);
                    self.publish_recovery_point(&sync);
                }
            }
        }
    }

    /// [`Log::poison`] for a caller holding the `sync` mutex: also wakes every waiter, which
    /// then returns `PreviousIo`.
    fn poison_locked(&self, e: &Error) {
        self.poison(e);
        self.inner.synced.notify_all();
    }

    /// Marks the log failed after an I/O error in a sync: the kernel may have dropped the dirty
    /// pages, so a retried sync could report success for lost data (fsyncgate).
    pub(super) fn poison(&self, e: &Error) {
        self.inner
            .poison_reason
            .lock()
            .get_or_insert_with(|| e.to_string());
        self.inner.poisoned.store(true, Ordering::Release);
    }

    /// The error that poisoned the log, if one did.
    pub fn poison_reason(&self) -> Option<String> {
        self.inner.poison_reason.lock().clone()
    }

    /// True after a failed sync; the log refuses writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Closes the log cleanly: seals pending segments, syncs everything, writes the active
    /// segment's index files, trims it, writes the clean-shutdown marker and releases the lock.
    /// The next open needs no scan.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    /// Drops the log the way a crash would: no sync, no index files, no marker. Queued seals are
    /// abandoned. The directory lock is released so the same process can reopen the log.
    // Test machinery, not API: hidden from the embedder's documentation.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.simulate_crash_shared();
    }

    /// [`Log::close`] through a shared handle: a broker closes its partitions even while an
    /// embedder still holds an `Arc<Log>` of one; that handle answers `Closed` from then on.
    pub(crate) fn close_shared(&self) -> Result<()> {
        self.close_inner()
    }

    /// [`Log::simulate_crash`] through a shared handle (see [`Log::close_shared`]).
    pub(crate) fn simulate_crash_shared(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let bg = inner.background.lock().take();
        if let Some(bg) = bg {
            bg.stop(Job::Abort);
        }
        let _appender = inner.appender.lock();
        inner.lock.lock().take();
    }
}

impl Log {
    pub(super) fn close_inner(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.inner.close_steps(self);
        self.inner.lock.lock().take();
        result
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // The last user handle closes the log cleanly (best effort; call `close` to see errors),
        // even while the background thread holds its temporary handle: closing stops that
        // thread, which finishes its iteration first. The temporary handle never closes: it
        // would join its own thread.
        if !self.counted {
            return;
        }
        let last = self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1;
        let on_background = std::thread::current().name() == Some(BACKGROUND_THREAD);
        if last && !on_background && !self.inner.closed.load(Ordering::Acquire) {
            let _ = self.close_inner();
        }
    }
}

impl LogInner {
    fn close_steps(&self, log: &Log) -> Result<()> {
        // Stop the background thread after its queued seals (it may need the appender lock),
        // then wait for an in-flight append.
        let bg = self.background.lock().take();
        if let Some(bg) = bg {
            bg.stop(Job::Stop);
        }
        let mut appender = self.appender.lock();
        if self.read_only {
            return Ok(());
        }
        log.discard_spare();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::PreviousIo);
        }
        appender.writer = None;
        let storage = self.config.storage.as_ref();
        let segments = Arc::clone(&self.segments.read());
        for seg in segments.iter().take(segments.len().saturating_sub(1)) {
            seg.seal(storage)?;
        }
        log.flush_unchecked()?;
        // Leave no lane in flight: the steps below trim the active segment's file.
        log.wait_sync_idle(&mut self.sync.lock());
        // A lane or checkpoint writer waited for above may have failed meanwhile and poisoned
        // the log: a poisoned log never vouches for its files with a clean-shutdown marker
        // (after fsyncgate, a later successful sync proves nothing about the failed pages).
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::PreviousIo);
        }
        // The lanes may have written the recovery point lazily: durable before the marker.
        self.checkpoint.lock().sync()?;
        super::producers::write_snapshot(storage, &self.dir, &appender.producers)?;
        let active = &appender.active;
        // The active segment ends here: its `.txnindex` records what is open at the end.
        active.txns().open_at_end = Some(super::txns::open_txns(&appender.producers));
        // Files of segments retention dropped but could not unlink: the marker below must
        // describe the directory exactly (finding 15). `write_index_files` fsyncs the
        // directory after.
        log.remove_leftovers()?;
        active.write_index_files(storage)?;
        active.trim_for_close()?;
        let leo = self.log_end.load(Ordering::Acquire);
        let bases: Vec<u64> = segments.iter().map(|s| s.base_offset()).collect();
        debug_assert_eq!(bases.last(), Some(&active.base_offset()));
        let values = super::recovery::plan::marker_values(leo, &bases, active.size());
        checkpoints::write_values(
            storage,
            &self.dir.join(CLEAN_SHUTDOWN_FILE),
            CheckpointKind::CleanShutdown,
            &values,
        )
    }
}
