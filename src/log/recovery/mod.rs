//! Opening a log directory: the rows of docs/recovery.md, in code.
//!
//! | row | situation                                            | action                          |
//! |-----|------------------------------------------------------|---------------------------------|
//! | R1  | clean-shutdown marker valid and matches the files    | no scan; sealed segments' indexes deferred to first use, active's loaded |
//! | R2  | segment entirely below the recovery point            | trusted: load indexes + tail    |
//! | R3  | trusted segment with missing/damaged index           | rebuild by full scan            |
//! | R4  | damage (bad CRC, zeros, bad offset) in trusted data  | corruption: fail / read-only    |
//! | R5  | segment at or past the recovery point                | full scan from position 0       |
//! | R6  | scan stops below the recovery point                  | corruption: fail / read-only    |
//! | R7  | every offset up to the next segment is present (trusted or scanned), only zeros or junk of a failed write follow | crash during seal: keep, re-seal |
//! | R8  | scan stops at or past the recovery point otherwise   | torn tail: truncate here, delete later segments |
//! | R9  | recovery point beyond the recovered end, or a gap/overlap between segments below it | corruption (synced data missing) |
//! | R10 | segments entirely below the log start checkpoint     | delete (crash during retention) |
//! | R11 | no segments                                          | create an empty one at log start |
//! | R12 | temp files, index files without a `.log`             | delete (once the plan succeeds) |
//! | R13 | no valid recovery point beside segments, not clean   | refuse: `RecoveryPointLost`     |
//! | R14 | `Salvage` meets R4/R6/R9/R13 or a gap below the rp    | keep the valid prefix, report every cut |
//!
//! Open computes the whole plan first (`plan.rs`, reading through `survey.rs`), then executes it;
//! `inspect.rs` computes the same plan for `oncelog verify` and `oncelog stat`, and `verify.rs`
//! judges it and checks what open uses without reading it in full (for `oncelog verify` and
//! the crash simulation).

mod inspect;
pub mod plan;
pub mod survey;
mod verify;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

pub use inspect::{inspect, inspect_at, BatchStart, Depth, Inspection, SegmentWalk};
pub use plan::{Cut, Examined, Fate, Plan, Rule, SegmentStep, Verdict};
use plan::{Loaded, LoadedIndex, Scanned, SegmentSource, TrustedFacts};
use survey::ByteAccess;
pub use verify::{verify, Findings, Verification};

use super::checkpoints::{RecoveryPointFile, CLEAN_SHUTDOWN_FILE};
use super::flush::Background;
use super::producers::{self, SnapshotLoad};
use super::{Appender, Log, LogInner, SyncCursor, SyncState};
use crate::config::{LogConfig, RecoveryMode};
use crate::error::{Error, Result};
use crate::io::fs::LOCK_FILE;
use crate::io::Storage;
use crate::segment::index::{IndexBuilder, IndexEntries};
use crate::segment::load;
use crate::segment::scan::scan_segment;
use crate::segment::{
    remove_segment_files, Deferred, IndexLoadStats, Segment, SegmentTail, INDEX_FILES,
    SEGMENT_FILES,
};

/// What open found and did. `oncelog stat` and the tests read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The directory held a valid clean-shutdown marker matching its files (row R1).
    pub clean_shutdown: bool,
    /// The recovery point read from the checkpoint.
    pub checkpoint_recovery_point: u64,
    /// Segment files found by open.
    pub segments: usize,
    /// Segments scanned batch by batch (0 after a clean shutdown).
    pub segments_scanned: usize,
    /// Bytes read by those scans.
    pub bytes_scanned: u64,
    /// Indexes rebuilt at open (row R3). Rebuilds of deferred indexes happen on first use and
    /// are counted by `Log::index_loads`.
    pub indexes_rebuilt: usize,
    /// Sealed segments whose index (and tail) open did not load: a clean open reads no index
    /// file and no byte of them (docs/recovery.md, "Deferred index loading").
    pub indexes_deferred: usize,
    /// The torn tail that was cut off (row R8): offset of the first dropped byte's batch.
    pub truncated_at: Option<u64>,
    /// Bytes removed by that cut.
    pub bytes_truncated: u64,
    /// Segment files deleted by open (below the log start, row R10, or after a torn tail, row R8).
    pub segments_deleted: usize,
    /// Set when the log was opened read-only because of corruption.
    pub corruption: Option<String>,
    /// Only in `RecoveryMode::Salvage`: segments existed beside a missing recovery point (or one
    /// with no valid slot) and no clean-shutdown marker vouched for them, so every segment was
    /// treated as unsynced and the longest valid prefix kept; each cut is in `cuts` with the
    /// rule `salvage`. Every other mode refuses that directory with `Error::RecoveryPointLost`
    /// (row R13) and this is never set.
    pub recovery_point_missing: bool,
    /// Every cut open made: file, byte position, offsets, bytes and the row that decided it.
    /// Outside `RecoveryMode::Salvage` no cut removes an offset below the recovery point.
    pub cuts: Vec<Cut>,
    /// Segments whose transaction index was loaded from `.txnindex` or rebuilt from batches.
    pub txn_indexes: super::TxnIndexLoad,
}

/// How a log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `Log::open`: create the directory if needed, take the lock, execute the plan.
    ReadWrite,
    /// `Log::open_read_only`: change nothing, take no lock, serve the planned view from memory.
    ReadOnly,
}

/// Open's segment source: maps files (the directory lock keeps every other writer out) and
/// loads trusted segments from their index files, walking only the tail (docs/recovery.md, R2).
/// A read-only open holds no lock and another process may be appending: it reads the bytes
/// into memory instead (`ByteAccess::Read`), as `oncelog verify` does.
struct OpenSource<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    access: ByteAccess,
    index_interval: u32,
    /// Bytes scanned by the segments' scans so far, for the progress events.
    scanned: u64,
    /// The next progress event is due when `scanned` reaches this.
    next_progress: u64,
}

impl SegmentSource for OpenSource<'_> {
    fn trusted(&mut self, base: u64, next_base: Option<u64>) -> Result<TrustedFacts> {
        let bytes = survey::segment_bytes(self.storage, self.dir, base, self.access)?;
        let b = bytes.bytes();
        let load = load::load_trusted(
            self.storage,
            self.dir,
            base,
            b,
            next_base,
            self.index_interval,
        );
        Ok(TrustedFacts::of(load, b))
    }

    fn scan(&mut self, base: u64) -> Result<Scanned> {
        let bytes = survey::segment_bytes(self.storage, self.dir, base, self.access)?;
        let b = bytes.bytes();
        let (before, next) = (self.scanned, &mut self.next_progress);
        let total = b.len() as u64;
        let out = scan_segment(b, base, self.index_interval, |pos, view| {
            let done = before + (pos + view.len()) as u64;
            if done >= *next {
                tracing::info!(
                    segment = base,
                    segment_bytes = total,
                    scanned_bytes = done,
                    "recovery: scanning"
                );
                *next = done + crate::observe::RECOVERY_PROGRESS_BYTES;
            }
        });
        self.scanned += out.valid_len as u64;
        Ok(plan::scanned(base, out, b))
    }

    fn defers(&self) -> bool {
        true
    }
}

/// Opens the log under an info span `log_open` whose fields carry what recovery found (the
/// figures of [`RecoveryReport`]), closed by a `log opened` event (or a warning on failure).
pub(super) fn open(dir: &Path, config: LogConfig, access: Access) -> Result<Log> {
    let span = tracing::info_span!(
        "log_open",
        dir = %dir.display(),
        access = ?access,
        clean_shutdown = tracing::field::Empty,
        segments = tracing::field::Empty,
        segments_scanned = tracing::field::Empty,
        bytes_scanned = tracing::field::Empty,
        bytes_truncated = tracing::field::Empty,
        segments_deleted = tracing::field::Empty,
        read_only = tracing::field::Empty,
        log_end = tracing::field::Empty,
    );
    let _entered = span.enter();
    let started = std::time::Instant::now();
    let opened = match access {
        Access::ReadWrite => open_inner(dir, config, access),
        Access::ReadOnly => open_read_only_retrying(dir, config),
    };
    let log = match opened {
        Ok(log) => log,
        Err(e) => {
            tracing::warn!(error = %e, "log open failed");
            return Err(e);
        }
    };
    let r = log.recovery_report();
    metrics::counter!(crate::observe::RECOVERY_SCANNED_BYTES).increment(r.bytes_scanned);
    span.record("clean_shutdown", r.clean_shutdown);
    span.record("segments", r.segments);
    span.record("segments_scanned", r.segments_scanned);
    span.record("bytes_scanned", r.bytes_scanned);
    span.record("bytes_truncated", r.bytes_truncated);
    span.record("segments_deleted", r.segments_deleted);
    span.record("read_only", log.is_read_only());
    span.record("log_end", log.log_end_offset().0);
    if let Some(why) = &r.corruption {
        tracing::warn!(corruption = %why, "log opened read-only: corruption found");
    }
    for cut in &r.cuts {
        tracing::warn!(cut = ?cut, "recovery cut the log");
    }
    tracing::info!(
        clean_shutdown = r.clean_shutdown,
        segments_scanned = r.segments_scanned,
        bytes_scanned = r.bytes_scanned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log opened"
    );
    Ok(log)
}

/// How many times a read-only open starts over when a file it listed vanished before it was
/// read (another process's retention, seal or snapshot rotation).
const READ_ONLY_ATTEMPTS: usize = 8;

/// A read-only open, started over when a file it listed disappeared under it: another
/// process writing the log deletes segments (retention), index files and snapshots at any time.
fn open_read_only_retrying(dir: &Path, config: LogConfig) -> Result<Log> {
    let mut attempt = 1;
    loop {
        match open_inner(dir, config.clone(), Access::ReadOnly) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && attempt < READ_ONLY_ATTEMPTS
                    && storage_has_dir(config.storage.as_ref(), dir) =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn storage_has_dir(storage: &dyn Storage, dir: &Path) -> bool {
    storage.list(dir).is_ok()
}

fn open_inner(dir: &Path, config: LogConfig, access: Access) -> Result<Log> {
    config.validate()?;
    let storage = Arc::clone(&config.storage);
    let storage: &dyn Storage = storage.as_ref();
    let explicit_read_only = access == Access::ReadOnly;
    let lock_path = dir.join(LOCK_FILE);
    let (lock, lock_file_existed) = if explicit_read_only {
        // Nothing is created, not even the directory or a lock file, and no lock is taken:
        // another process may hold the exclusive lock and go on writing (docs/recovery.md,
        // "Read-only open").
        match storage.list(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoLog {
                    dir: dir.to_path_buf(),
                    reason: "the directory does not exist".into(),
                })
            }
            Err(e) => return Err(Error::io("list log directory", dir, e)),
        }
        (None, true)
    } else {
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create log directory", dir, e))?;
        let existed = storage.exists(&lock_path);
        let lock = storage.lock_dir(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
            _ => Error::io("lock log directory", dir, e),
        })?;
        (Some(lock), existed)
    };
    // Decide everything before changing anything: a plan that fails mutates nothing, not even
    // the lock file, which this open removes again (still holding the lock) if it created it.
    // Best effort: the plan's error is what the caller needs; a lock file left behind is empty
    // and any later open reuses it.
    let refuse = |e: Error| {
        if !lock_file_existed {
            let _ = storage.remove(&lock_path);
        }
        e
    };
    let facts = survey::read_dir_facts(storage, dir).map_err(refuse)?;
    // No segment: a writable open would create the first one (row R11). A directory of
    // foreign files alone is left to the plan (`ForeignDirectory`).
    if explicit_read_only
        && facts.bases.is_empty()
        && (facts.holds_a_log || facts.foreign.is_empty())
    {
        return Err(Error::NoLog {
            dir: dir.to_path_buf(),
            reason: if facts.holds_a_log {
                "no segment file".into()
            } else {
                "the directory is empty".into()
            },
        });
    }
    let mut source = OpenSource {
        storage,
        dir,
        access: if explicit_read_only {
            ByteAccess::Read
        } else {
            ByteAccess::Map
        },
        index_interval: config.index_interval_bytes,
        scanned: 0,
        next_progress: crate::observe::RECOVERY_PROGRESS_BYTES,
    };
    let mut plan = plan::plan(&facts, &mut source, config.recovery).map_err(refuse)?;
    let read_only = match (&plan.verdict, plan.error.take()) {
        (Verdict::Open, _) => explicit_read_only,
        (Verdict::RecoveryPointLost(_), Some(e)) => return Err(refuse(e)),
        (_, Some(e)) if config.recovery != RecoveryMode::ReadOnlyOnCorruption => {
            return Err(refuse(e))
        }
        (_, _) => true,
    };
    assert_plan_consistent(&plan, &facts);

    let index_loads = Arc::new(IndexLoadStats::default());
    let mut report = RecoveryReport {
        clean_shutdown: plan.clean,
        checkpoint_recovery_point: plan.recovery_point,
        segments: 0,
        segments_scanned: plan.segments_scanned,
        bytes_scanned: plan.bytes_scanned,
        indexes_rebuilt: plan.indexes_rebuilt,
        indexes_deferred: plan.indexes_deferred,
        truncated_at: plan.truncated_at,
        bytes_truncated: plan.bytes_truncated,
        segments_deleted: 0,
        corruption: match &plan.verdict {
            Verdict::Corrupt(why) => Some(why.clone()),
            _ => None,
        },
        recovery_point_missing: !plan.recovery_point_found
            && !facts.bases.is_empty()
            && !plan.clean,
        cuts: plan.cuts.clone(),
        txn_indexes: Default::default(),
    };
    let deferred = |next_offset| Deferred {
        storage: Arc::clone(&config.storage),
        next_offset,
        index_interval: config.index_interval_bytes,
        write_back: !read_only,
        stats: Arc::clone(&index_loads),
    };
    let recovery_point = plan.recovery_point;
    let log_start_ckpt = plan.log_start;
    let planned_end = plan.log_end();
    let loaded = std::mem::take(&mut plan.loaded);
    // Before open removes the active segment's index files (it grows past them).
    let txn_files = super::txns::read_files(
        storage,
        dir,
        &loaded.iter().map(|l| l.base).collect::<Vec<_>>(),
    );
    let (segments, rp_file) = if read_only {
        let first_base = plan
            .segments
            .iter()
            .find(|s| s.rule != Rule::R10)
            .map(|s| s.base);
        let segs = open_read_only(storage, dir, loaded, first_base, &deferred)?;
        (segs, RecoveryPointFile::open(storage, dir, false)?)
    } else {
        // Row R12 first, then the recovery point exists durably before any segment can hold
        // data (a new log's first slot goes before its first segment file).
        for (name, _) in &plan.remove {
            let path = dir.join(name);
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove leftover file", &path, e))?;
        }
        let mut rp_file = RecoveryPointFile::open(storage, dir, true)?;
        rp_file.ensure_written()?;
        // A salvage cuts below the recovery point: lower it durably first, as truncation does,
        // so the next open does not find the same synced data missing again.
        if let Some(end) = planned_end.filter(|&e| rp_file.value() > e) {
            rp_file.store(end)?;
        }
        // Rows R8/R10/R11: delete what the plan deletes, durably, before anything is reused.
        let deleted: Vec<u64> = plan
            .segments
            .iter()
            .filter(|s| s.fate == Fate::Delete)
            .map(|s| s.base)
            .collect();
        for base in &deleted {
            remove_segment_files(storage, dir, *base, &SEGMENT_FILES)?;
        }
        report.segments_deleted = deleted.len();
        if !deleted.is_empty() || !plan.remove.is_empty() {
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
        }
        let keep: Vec<Loaded> = loaded
            .into_iter()
            .filter(|l| !deleted.contains(&l.base))
            .collect();
        let segs = match plan.create_first {
            Some(start) => {
                debug_assert!(keep.is_empty());
                vec![Arc::new(Segment::create(
                    storage,
                    dir,
                    start,
                    config.segment_bytes,
                )?)]
            }
            None => open_for_append(storage, dir, &config, keep, &deferred)?,
        };
        (segs, rp_file)
    };
    report.segments = segments.len();

    let marker_path = dir.join(CLEAN_SHUTDOWN_FILE);

    let log_end = segments.last().map_or(0, |s| s.next_offset());
    // Paired with the plan: the executed log ends where the plan said, and its segments chain.
    if let Some(end) = planned_end {
        assert_eq!(
            log_end, end,
            "recovery executed a different log end than it planned"
        );
    }
    assert!(
        segments
            .windows(2)
            .all(|w| w[0].next_offset() == w[1].base_offset()),
        "recovered segments do not chain"
    );
    let first_base = segments.first().map_or(0, |s| s.base_offset());
    let log_start = log_start_ckpt
        .unwrap_or(first_base)
        .clamp(first_base, log_end);
    let active = Arc::clone(segments.last().ok_or(Error::Closed)?);
    let builder = active_builder(&config, &active)?;
    let mut snapshot_load = SnapshotLoad::default();
    let producer_cfg = producers::producer_config(&config);
    let witness = super::txns::checkpoint_witness(&segments, plan.first_open.as_ref());
    let (producers, stale_snapshots) = producers::rebuild_state(
        storage,
        dir,
        producer_cfg,
        &segments,
        producers::Known {
            log_start,
            open_at_first_base: &super::txns::first_open_at_base(
                &segments,
                &txn_files,
                witness.as_ref(),
            ),
            retained: None,
        },
        &mut snapshot_load,
    )?;
    if !read_only && !stale_snapshots.is_empty() {
        // Snapshots above the recovered end describe a lost history: record what they alone
        // knew (producers below the log) in a snapshot at the end, then remove them.
        producers::write_snapshot(storage, dir, &producers)?;
        producers::remove_snapshots(storage, dir, &stale_snapshots)?;
    }
    report.txn_indexes = super::txns::resolve(
        storage,
        dir,
        &segments,
        txn_files,
        &producers,
        witness.as_ref(),
        !read_only,
    )?;
    let txn_view = super::txns::TxnView::new(&producers);
    let ids = producers::load_producer_ids(storage, dir, &producers)?;
    let epochs = producers::load_issued_epochs(storage, dir)?;
    let last_append_ms = active.tail()?.last_append_ms;

    let inner = Arc::new(LogInner {
        dir: dir.to_path_buf(),
        segments: RwLock::new(Arc::new(segments)),
        log_start: AtomicU64::new(log_start),
        log_end: AtomicU64::new(log_end),
        recovery_point: AtomicU64::new(recovery_point.min(log_end)),
        appender: Mutex::new(Appender {
            writer: if read_only {
                None
            } else {
                active.map().writer()
            },
            active,
            index: builder,
            leader_epoch: 0,
            last_append_ms,
            prefaulted_to: 0,
            prefaulter: (!read_only && config.prefault_bytes > 0)
                .then(super::prefault::Prefaulter::start),
            producers,
            ids,
            epochs,
            bytes_since_snapshot: 0,
        }),
        sync: Mutex::new(SyncState::new(
            recovery_point.min(log_end),
            SyncCursor::NONE,
        )),
        synced: Condvar::new(),
        checkpoint: Mutex::new(rp_file),
        poisoned: AtomicBool::new(false),
        poison_reason: Mutex::new(None),
        read_only,
        closed: AtomicBool::new(false),
        handles: std::sync::atomic::AtomicUsize::new(1),
        background: Mutex::new(None),
        snapshot_fence: Mutex::new(0),
        snapshot_generation: AtomicU64::new(0),
        report,
        metrics: crate::observe::LogMetrics::register(dir),
        txn_view: Mutex::new(txn_view),
        index_loads,
        snapshot_load,
        lock: Mutex::new(lock),
        spares: Default::default(),
        leftovers: Default::default(),
        sync_idle_waiters: Default::default(),
        config,
    });
    let log = Log {
        inner,
        counted: true,
    };
    if !read_only {
        // Everything recovered becomes durable before the recovery point moves (KAFKA-10101),
        // and the marker goes before the first write, so a crash from here on is unclean.
        log.flush_unchecked()?;
        log.inner.checkpoint.lock().ensure_written()?;
        if storage.exists(&marker_path) {
            storage
                .remove(&marker_path)
                .map_err(|e| Error::io("remove clean-shutdown marker", &marker_path, e))?;
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
        }
        if log.inner.config.background_thread {
            *log.inner.background.lock() = Some(Background::start(&log));
            log.request_spare();
        }
    }
    Ok(log)
}

fn open_for_append(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    keep: Vec<Loaded>,
    deferred: &dyn Fn(u64) -> Deferred,
) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(keep.len());
    let count = keep.len();
    for (i, l) in keep.into_iter().enumerate() {
        let active = i + 1 == count;
        let seg = match l.index {
            LoadedIndex::Deferred => {
                assert!(
                    !active,
                    "the active segment's index is always loaded at open"
                );
                Segment::open_deferred(storage, dir, l.base, deferred(l.tail.next_offset))?
            }
            LoadedIndex::Now {
                valid_len,
                entries,
                needs_reseal,
            } => {
                let seg = Segment::open(
                    storage,
                    dir,
                    l.base,
                    valid_len,
                    active,
                    config.segment_bytes,
                    entries,
                    l.tail,
                )?;
                if !active && needs_reseal {
                    seg.write_index_files(storage)?;
                }
                seg
            }
        };
        if active {
            // Index files of the active segment are from an earlier clean close; it grows
            // past them now, and they are rewritten when it is sealed or closed.
            remove_segment_files(storage, dir, l.base, &INDEX_FILES)?;
        }
        segments.push(Arc::new(seg));
    }
    Ok(segments)
}

fn open_read_only(
    storage: &dyn Storage,
    dir: &Path,
    mut loaded: Vec<Loaded>,
    first_base: Option<u64>,
    deferred: &dyn Fn(u64) -> Deferred,
) -> Result<Vec<Arc<Segment>>> {
    if loaded.is_empty() {
        // Damage before the first valid batch: serve an empty log at the first segment's base.
        let base = first_base.ok_or(Error::ReadOnly)?;
        loaded.push(Loaded {
            base,
            tail: SegmentTail::empty(base),
            index: LoadedIndex::Now {
                valid_len: 0,
                entries: IndexEntries::default(),
                needs_reseal: false,
            },
        });
    }
    loaded
        .into_iter()
        .map(|l| match l.index {
            LoadedIndex::Deferred => {
                Segment::open_deferred(storage, dir, l.base, deferred(l.tail.next_offset))
            }
            LoadedIndex::Now {
                valid_len, entries, ..
            } => Segment::open_read_only(storage, dir, l.base, valid_len, entries, l.tail),
        })
        .map(|s| s.map(Arc::new))
        .collect()
}

/// What a plan must hold before open executes it (paired with the checks after execution in
/// `open`): the segments it keeps form one chain of offsets, and it keeps no offset it found
/// missing.
fn assert_plan_consistent(plan: &Plan, facts: &survey::DirFacts) {
    let mut prev: Option<u64> = None;
    for l in &plan.loaded {
        if let Some(p) = prev {
            assert_eq!(p, l.base, "recovery plan keeps a broken chain of segments");
        }
        assert!(l.tail.next_offset >= l.base, "segment ends before its base");
        prev = Some(l.tail.next_offset);
    }
    assert_eq!(
        plan.segments.len(),
        facts.bases.len(),
        "the plan names every segment file exactly once"
    );
}

fn active_builder(config: &LogConfig, active: &Segment) -> Result<IndexBuilder> {
    let entries = active.index()?.snapshot();
    let since = active.size() - entries.offsets.last().map_or(0, |e| u64::from(e.position));
    Ok(IndexBuilder::resume(
        config.index_interval_bytes,
        &entries,
        since,
        active.tail()?.max_timestamp,
    ))
}
