//! The partition log: an ordered list of segments, the last one active.
//!
//! Invariants (checked by [`Log::check_invariants`] in tests):
//! * `log_start_offset <= log_end_offset` and `recovery_point <= log_end_offset` (the recovery
//!   point may lag behind a log start that retention moved);
//! * segments are ordered by base offset and contiguous: each segment's base offset is the
//!   previous segment's next offset; the last segment is the only active (unsealed) one, except
//!   for segments waiting for the background sealer; the first one holds the log start
//!   (`base <= log_start <= next_offset`);
//! * the append path pairs its checks (release asserts, O(1)): before the copy the write
//!   position is the published end and the active segment ends at the log end; after it the
//!   published end grew by the batch and the segment ends at the last assigned offset + 1; the
//!   recovery point is at most the log end wherever it is stored;
//! * every batch below `log_end_offset` is published in its segment's map; every batch below
//!   `recovery_point` is durable;
//! * after an fsync/msync error (`poisoned`) no append succeeds until the log is reopened.
//!
//! Threads: any number of readers (lock-free apart from an `Arc` clone of the segment list),
//! one appender at a time (the `appender` mutex), durable syncs in *lanes* (`lanes.rs`,
//! `Log::sync_to`: each syncer claims what was published since the last claim under the `sync`
//! mutex and msyncs it outside it, concurrently with other lanes; one checkpoint writer at a
//! time records the contiguous msynced prefix), a background thread that seals
//! rolled segments (moving the recovery point), writes the append path's producer snapshots,
//! runs interval syncs and retention, and a
//! prefault thread that faults in the active segment ahead of the appender.

mod append;
mod best_effort;
pub mod checkpoints;
pub mod dir_files;
mod flush;
mod lanes;
pub(crate) mod log_start;
mod prefault;
mod producers;
mod read;
pub mod recovery;
mod retention;
mod spare;
mod truncate;
mod txns;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::io::DirLock;
use crate::segment::index::IndexBuilder;
use crate::segment::Segment;
use crate::types::{LeaderEpoch, Offset};

pub use append::AppendInfo;
pub use best_effort::BestEffortFailures;
pub(crate) use producers::snapshot_usable_as_base;
pub use producers::{apply_batch, SnapshotLoad};
pub use producers::{PRODUCER_EPOCHS_FILE, PRODUCER_IDS_FILE, PRODUCER_ID_BLOCK};
pub use read::Fetch;
pub use recovery::RecoveryReport;
pub use retention::RetentionOutcome;
pub use spare::{RollStats, SPARE_FILE};
pub use txns::{
    rebuild_segment_txns, CommittedRecord, IsolatedFetch, Isolation, TxnFile, TxnIndexLoad,
};

use checkpoints::RecoveryPointFile;
use flush::Background;

/// A handle to an open log; cheap to clone and usable from many threads.
#[derive(Debug)]
pub struct Log {
    inner: Arc<LogInner>,
    /// A user's handle (counted in `LogInner::handles`), not the background thread's temporary
    /// one: the last user handle to drop closes the log, whatever the background thread holds.
    counted: bool,
}

impl Clone for Log {
    fn clone(&self) -> Log {
        self.inner.handles.fetch_add(1, Ordering::AcqRel);
        Log {
            inner: Arc::clone(&self.inner),
            counted: true,
        }
    }
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    config: LogConfig,
    /// Invariant: ordered by base offset, contiguous; never empty.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    log_start: AtomicU64,
    log_end: AtomicU64,
    /// Every batch below this offset is durable, and this value is written in the
    /// recovery-point checkpoint (durable at once for seals and truncation, within
    /// `recovery_point_lag_ms` for sync lanes). A copy of `sync.recovery_point()`, stored only
    /// under the `sync` mutex, after the checkpoint write; read lock-free.
    recovery_point: AtomicU64,
    appender: Mutex<Appender>,
    /// Sync lanes (see [`SyncState`]).
    sync: Mutex<SyncState>,
    /// Signalled (`notify_all`) whenever `sync` changes in a way a waiter may care about: a lane
    /// completed or failed, a checkpoint write finished or failed (a failure also poisons the
    /// log), a seal or truncation moved the recovery point.
    synced: Condvar,
    /// The recovery-point checkpoint file. Written only by the holder of the writer role
    /// (`Step::Write`, without the `sync` mutex) or under the `sync` mutex while no writer is
    /// active (`note_sealed`, truncation), so its value never falls except by truncation; the
    /// background tick and close only fdatasync what was written (`sync_if_older`, `sync`).
    checkpoint: Mutex<RecoveryPointFile>,
    /// Set by a failed sync; sticky until reopen.
    poisoned: AtomicBool,
    /// The first error that poisoned the log (for diagnostics).
    poison_reason: Mutex<Option<String>>,
    read_only: bool,
    closed: AtomicBool,
    /// Live user handles (`Log::counted`).
    handles: std::sync::atomic::AtomicUsize,
    background: Mutex<Option<Background>>,
    /// Generation of the snapshot fence (`Log::fence_snapshots`): a snapshot queued for the
    /// background thread is written only if it is unchanged, under this lock.
    snapshot_fence: Mutex<u64>,
    /// The fence's generation, readable without its lock. Every raise happens under the
    /// appender lock (truncation, `snapshot_locked`), so the appender reads the current value
    /// here instead of locking the fence, which the background thread holds across a
    /// snapshot's fdatasyncs: waiting for it put a device flush on the append path.
    snapshot_generation: std::sync::atomic::AtomicU64,
    report: RecoveryReport,
    /// Metric handles, registered at open (`observe::LogMetrics`).
    metrics: crate::observe::LogMetrics,
    /// The earliest open transaction and the completed ones not yet below the HW, for the
    /// last stable offset (`txns.rs`). Lock order: `appender` before `txn_view`.
    txn_view: Mutex<txns::TxnView>,
    /// Deferred index loads of this log's sealed segments (first uses after a clean open).
    index_loads: Arc<crate::segment::IndexLoadStats>,
    snapshot_load: SnapshotLoad,
    lock: Mutex<Option<Box<dyn DirLock>>>,
    /// The prepared next segment file and the renames it made that await a directory fsync.
    spares: spare::Spares,
    /// Base offsets of segments below the log start that retention dropped from the list but
    /// could not unlink (an I/O error after its log-start checkpoint, its commit point): the
    /// next retention pass and `close` (before its clean-shutdown marker, which must describe
    /// the files exactly) unlink them again. Open deletes them in any case (row R10).
    leftovers: Mutex<std::collections::VecDeque<u64>>,
    /// Threads blocked in `Log::wait_sync_idle` (a truncation or close waiting for the sync
    /// lanes to drain); read only by [`Log::threads_waiting_for_sync_idle`], a test hook.
    sync_idle_waiters: std::sync::atomic::AtomicUsize,
}

/// Deferred index loads so far ([`Log::index_loads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexLoads {
    /// Deferred indexes loaded by a first use (from their files, or rebuilt).
    pub loaded: usize,
    /// Of those, rebuilt by a scan (index files missing, damaged or stale: row R3) and
    /// written back (unless read-only).
    pub rebuilt: usize,
    /// Segment bytes read by those rebuild scans.
    pub bytes_scanned: u64,
    /// First uses that found the segment damaged (`Error::Corrupt`, row R4).
    pub failed: usize,
}

/// State owned by the single appender.
#[derive(Debug)]
struct Appender {
    active: Arc<Segment>,
    writer: Option<crate::io::mmap::MapWriter>,
    index: IndexBuilder,
    leader_epoch: LeaderEpoch,
    /// The largest append timestamp stamped so far: append timestamps never go backwards.
    last_append_ms: i64,
    /// The active segment is prefaulted up to this byte position.
    prefaulted_to: usize,
    /// The prefault thread (none for read-only logs or `prefault_bytes == 0`).
    prefaulter: Option<prefault::Prefaulter>,
    /// Idempotent-producer state as of the log end (`producers.map_end_offset() == log_end`).
    producers: crate::producer::ProducerStateManager,
    ids: producers::ProducerIds,
    /// The newest epoch `reinit_producer` issued per producer id, as durable in the
    /// `producer-epochs` checkpoint (a client batch with a lower epoch is fenced).
    epochs: crate::producer::IssuedEpochs,
    bytes_since_snapshot: u64,
}

/// Where a claim ended: a segment (by base offset; `u64::MAX` for none) and a byte position in
/// it. The next claim msyncs that segment from `len` and every later segment from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyncCursor {
    base: u64,
    len: usize,
}

impl SyncCursor {
    /// No position known: the next claim msyncs every segment above the recovery point whole
    /// (after open and after a truncation; re-msyncing clean pages is harmless).
    const NONE: SyncCursor = SyncCursor {
        base: u64::MAX,
        len: 0,
    };
}

/// The sync lanes, under the `sync` mutex. Invariants (`lanes.rs` documents and checks them):
/// * `recovery_point <= done_to <= claimed_to`; every byte below `done_to` is msynced (a
///   contiguous prefix of completed lanes, or sealed whole); `recovery_point` is durable in the
///   checkpoint before it is published in `LogInner::recovery_point`;
/// * at most one checkpoint writer; a lane or writer failure poisons the log, and no waiter
///   returns Ok for a target above the recovery point;
/// * `note_sealed` raises the recovery point only while no writer is active, and a lane
///   completing below it never lowers it;
/// * truncation lowers it only while no lane is in flight and no writer is active
///   (`Log::wait_sync_idle`), so no lane from before a truncation can raise it past the
///   truncated end; close leaves no lane in flight the same way.
type SyncState = lanes::Lanes<SyncCursor>;

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering after a crash. See
    /// docs/recovery.md for what open does with each state the directory can be in.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        recovery::open(dir.as_ref(), config, recovery::Access::ReadWrite)
    }

    /// Opens the log in `dir` for reading only, for inspecting a log on read-only media (a
    /// read-only mount, a snapshot) or beside the process that writes it. It creates, writes,
    /// truncates, renames and deletes nothing, takes no directory lock, and maps the segment
    /// files read-only (`PROT_READ`). Recovery runs in memory only: the plan
    /// [`Log::open`] would execute is computed (with `config.recovery`), and the log serves
    /// what that plan keeps; a torn tail open would cut is simply not served, and damage is
    /// refused or (with [`RecoveryMode::ReadOnlyOnCorruption`](crate::RecoveryMode::ReadOnlyOnCorruption))
    /// reported in [`RecoveryReport::corruption`], as `oncelog verify` reports it.
    ///
    /// Reads (`read`, `read_with`, `offset_for_timestamp`) serve the log as it was at open;
    /// another process's later appends are not seen (open again to see them). Every write
    /// (`append`, `roll`, `flush`, `truncate_to`, retention, producer ids, snapshots) returns
    /// [`Error::ReadOnly`]. A directory that does not exist, holds no segment, or holds files
    /// of no log is refused with [`Error::NoLog`] or [`Error::ForeignDirectory`], and nothing is
    /// created. docs/recovery.md, "Read-only open", has the details and the limits.
    pub fn open_read_only(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        recovery::open(dir.as_ref(), config, recovery::Access::ReadOnly)
    }

    /// The directory the log was opened in (as given to [`Log::open`]).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log was opened with (validated).
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.inner.log_start.load(Ordering::Acquire))
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.inner.log_end.load(Ordering::Acquire))
    }

    /// Every record below this offset is durable.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.inner.recovery_point.load(Ordering::Acquire))
    }

    /// What open found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// What the first uses of deferred indexes (sealed segments after a clean open) have done
    /// so far: the work a clean open no longer does (docs/recovery.md, "Deferred index
    /// loading").
    pub fn index_loads(&self) -> IndexLoads {
        let s = &self.inner.index_loads;
        IndexLoads {
            loaded: s.loaded.load(Ordering::Relaxed),
            rebuilt: s.rebuilt.load(Ordering::Relaxed),
            bytes_scanned: s.bytes_scanned.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Whether the log is read-only: opened by [`Log::open_read_only`], or
    /// [`RecoveryMode::ReadOnlyOnCorruption`](crate::RecoveryMode::ReadOnlyOnCorruption) met
    /// damage; every write then fails with [`Error::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The current segments, oldest first.
    pub fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.inner.segments.read())
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.size()).sum()
    }

    /// Sets the leader epoch stamped on batches appended from now on.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        self.inner.appender.lock().leader_epoch = epoch;
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(Error::PreviousIo);
        }
        Ok(())
    }

    /// Asserts the invariants listed in the module documentation.
    pub fn check_invariants(&self) {
        let start = self.inner.log_start.load(Ordering::Acquire);
        let end = self.inner.log_end.load(Ordering::Acquire);
        let rp = self.inner.recovery_point.load(Ordering::Acquire);
        assert!(start <= end, "log start {start} > log end {end}");
        assert!(rp <= end, "recovery point {rp} > log end {end}");
        let segments = self.segments();
        assert!(!segments.is_empty(), "a log always has an active segment");
        for pair in segments.windows(2) {
            assert_eq!(
                pair[0].next_offset(),
                pair[1].base_offset(),
                "segments not contiguous"
            );
        }
        let last = segments.last().map(|s| s.next_offset());
        assert_eq!(
            last,
            Some(end),
            "log end is the active segment's next offset"
        );
        // The first segment holds the log start: retention deletes only segments wholly below
        // it and open clamps it to the first base. (At most its next offset: a log start moved
        // to the log end sits at the end of the active segment.)
        let first = &segments[0];
        assert!(
            first.base_offset() <= start && start <= first.next_offset(),
            "log start {start} outside the first segment [{}, {}]",
            first.base_offset(),
            first.next_offset()
        );
        // Transactions (txns.rs): each segment's aborted markers lie inside it, ascending;
        // each ended segment's open-at-end is the next one's open-at-base.
        for s in segments.iter() {
            let t = s.txns();
            assert!(
                t.aborted
                    .windows(2)
                    .all(|w| w[0].last_offset < w[1].last_offset)
                    && t.aborted.iter().all(|a| {
                        (s.base_offset()..s.next_offset()).contains(&a.last_offset)
                            && a.first_offset <= a.last_offset
                    }),
                "aborted transactions of segment {} out of place: {:?}",
                s.base_offset(),
                t.aborted
            );
        }
        for pair in segments.windows(2) {
            let (a, b) = (
                pair[0].txns().open_at_end.clone(),
                pair[1].txns().open_at_base.clone(),
            );
            if let Some(end) = a {
                assert_eq!(
                    end,
                    b,
                    "open transactions differ across segment {}",
                    pair[1].base_offset()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_two_segments(dir: &Path) -> Log {
        let log = Log::open(dir, LogConfig::for_tests()).unwrap();
        let mut b = crate::format::batch::BatchBuilder::new();
        b.push(0, None, Some(b"v"));
        let batch = b.build().unwrap();
        for _ in 0..3 {
            log.append(&batch).unwrap();
        }
        log.roll().unwrap();
        log.append(&batch).unwrap();
        log.check_invariants();
        log
    }

    /// The first-segment check can fail: a log start below the first segment's base.
    #[test]
    #[should_panic(expected = "outside the first segment")]
    fn check_invariants_catches_a_log_start_below_the_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_two_segments(dir.path());
        log.advance_log_start(Offset(3)).unwrap();
        assert_eq!(log.segments().len(), 1);
        log.check_invariants();
        log.inner.log_start.store(2, Ordering::Release);
        log.check_invariants();
    }

    /// And a log start past the first segment (retention forgot to delete it).
    #[test]
    #[should_panic(expected = "outside the first segment")]
    fn check_invariants_catches_a_log_start_past_the_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_two_segments(dir.path());
        log.inner.log_start.store(4, Ordering::Release);
        log.check_invariants();
    }
}
