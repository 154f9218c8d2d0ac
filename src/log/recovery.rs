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
//! | R9  | recovery point beyond the recovered end              | corruption (synced data missing) |
//! | R10 | segments entirely below the log start checkpoint     | delete (crash during retention) |
//! | R11 | no segments                                          | create an empty one at log start |
//! | R12 | temp files, index files without a `.log`             | delete                          |

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use super::checkpoints::{self, RecoveryPointFile, CLEAN_SHUTDOWN_FILE, LOG_START_FILE};
use super::flush::Background;
use super::producers::{self, SnapshotLoad};
use super::{Appender, Log, LogInner, SyncCursor, SyncState};
use crate::config::{LogConfig, RecoveryMode};
use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointKind;
use crate::format::file_name::{parse_file_name, FileKind};
use crate::format::DecodeError;
use crate::io::{AppendMap, OpenMode, Storage};
use crate::segment::index::{IndexBuilder, IndexEntries};
use crate::segment::load::{self, tail_of};
use crate::segment::scan::scan_segment;
use crate::segment::{
    remove_segment_files, segment_path, Deferred, IndexLoadStats, Segment, SegmentTail,
    INDEX_FILES, SEGMENT_FILES,
};

/// What open found and did. `oncelog stat` and the tests read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The directory held a valid clean-shutdown marker matching its files (row R1).
    pub clean_shutdown: bool,
    /// The recovery point read from the checkpoint.
    pub checkpoint_recovery_point: u64,
    pub segments: usize,
    /// Segments scanned batch by batch (0 after a clean shutdown).
    pub segments_scanned: usize,
    pub bytes_scanned: u64,
    /// Indexes rebuilt at open (row R3). Rebuilds of deferred indexes happen on first use and
    /// are counted by `Log::index_loads`.
    pub indexes_rebuilt: usize,
    /// Sealed segments whose index (and tail) open did not load: a clean open reads no index
    /// file and no byte of them (docs/recovery.md, "Deferred index loading").
    pub indexes_deferred: usize,
    /// The torn tail that was cut off (row R8): offset of the first dropped byte's batch.
    pub truncated_at: Option<u64>,
    pub bytes_truncated: u64,
    pub segments_deleted: usize,
    /// Set when the log was opened read-only because of corruption.
    pub corruption: Option<String>,
    /// Segments existed but the recovery-point checkpoint had no valid slot: every segment was
    /// treated as unsynced, so damage in it could only be reported as a torn tail.
    pub recovery_point_missing: bool,
}

/// One segment as recovery sees it before it is opened for use.
#[derive(Debug)]
struct Loaded {
    base: u64,
    /// For a deferred index only `next_offset` is known (the next segment's base); the other
    /// fields are placeholders that nothing reads (`Segment::open_deferred` does not take them).
    tail: SegmentTail,
    index: LoadedIndex,
}

#[derive(Debug)]
enum LoadedIndex {
    /// Loaded (or rebuilt) at open.
    Now {
        valid_len: u64,
        entries: IndexEntries,
        /// The file's bytes past `valid_len` must go, or index files must be (re)written.
        needs_reseal: bool,
    },
    /// A sealed segment of a cleanly closed log: index, length and tail are loaded on first use.
    Deferred,
}

impl Loaded {
    fn now(base: u64, t: load::Trusted, needs_reseal: bool) -> Loaded {
        Loaded {
            base,
            tail: t.tail,
            index: LoadedIndex::Now {
                valid_len: t.valid_len,
                entries: t.entries,
                needs_reseal,
            },
        }
    }
}

struct Ctx<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    config: &'a LogConfig,
    report: RecoveryReport,
    /// The valid prefix of the segment where corruption was found (served read-only).
    damaged_prefix: Option<Loaded>,
}

fn corrupt(path: PathBuf, position: u64, reason: DecodeError) -> Error {
    Error::Corrupt {
        path,
        position,
        reason,
    }
}

impl Ctx<'_> {
    fn log_path(&self, base: u64) -> PathBuf {
        segment_path(self.dir, base, FileKind::Log)
    }

    /// Maps a segment file read-only-in-spirit (nothing writes through this map) for scanning.
    fn map_file(&self, base: u64) -> Result<Arc<AppendMap>> {
        let path = self.log_path(base);
        let file = self
            .storage
            .open(&path, OpenMode::Existing)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .len()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        let region = file
            .map(len as usize)
            .map_err(|e| Error::io("mmap segment", &path, e))?;
        Ok(AppendMap::new(region, len as usize))
    }

    /// Row R2/R3/R4: a segment whose bytes are all durable and exactly as long as its file.
    fn load_trusted(&mut self, base: u64, next_base: Option<u64>) -> Result<Loaded> {
        let map = self.map_file(base)?;
        let result = load::load_trusted(
            self.storage,
            self.dir,
            base,
            map.published_bytes(),
            next_base,
            self.config.index_interval_bytes,
        );
        let rebuilt = match &result {
            Ok(t) => t.rebuilt.then_some(t.bytes_scanned),
            Err(d) => Some(d.prefix.bytes_scanned),
        };
        if let Some(bytes) = rebuilt {
            self.report.indexes_rebuilt += 1;
            self.report.bytes_scanned += bytes;
        }
        match result {
            Ok(t) => {
                let needs_reseal = t.rebuilt;
                Ok(Loaded::now(base, t, needs_reseal))
            }
            Err(d) => {
                self.damaged_prefix = Some(Loaded::now(base, *d.prefix, true));
                Err(corrupt(self.log_path(base), d.position, d.reason))
            }
        }
    }

    /// Row R1 for a sealed segment: nothing is read now; the first lookup loads and checks the
    /// index exactly as `load_trusted` would (`Segment::ensure_index`).
    fn defer(&mut self, base: u64, next_base: u64) -> Loaded {
        self.report.indexes_deferred += 1;
        let mut tail = SegmentTail::empty(base);
        tail.next_offset = next_base;
        Loaded {
            base,
            tail,
            index: LoadedIndex::Deferred,
        }
    }
}

/// How a scanned segment ended.
enum ScanEnd {
    /// Consumed or stopped exactly where the next segment begins (rows R5, R7).
    Complete,
    /// Torn tail at `offset` (row R8): keep this prefix, drop everything after.
    Torn { offset: u64, dropped: u64 },
}

pub(super) fn open(dir: &Path, config: LogConfig) -> Result<Log> {
    config.validate()?;
    let storage = Arc::clone(&config.storage);
    let storage: &dyn Storage = storage.as_ref();
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create log directory", dir, e))?;
    let lock = storage.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        _ => Error::io("lock log directory", dir, e),
    })?;
    let mut ctx = Ctx {
        storage,
        dir,
        config: &config,
        report: RecoveryReport::default(),
        damaged_prefix: None,
    };

    // Row R12: leftovers of interrupted atomic writes and orphaned indexes.
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list log directory", dir, e))?;
    let mut bases: Vec<u64> = Vec::new();
    let mut index_bases: Vec<(u64, PathBuf)> = Vec::new();
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".tmp") {
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove temp file", &path, e))?;
            continue;
        }
        match parse_file_name(name) {
            Some((o, FileKind::Log)) => bases.push(o.0),
            Some((o, FileKind::Index | FileKind::TimeIndex)) => index_bases.push((o.0, path)),
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in index_bases {
        if bases.binary_search(&base).is_err() {
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove orphan index", &path, e))?;
        }
    }

    let marker_path = dir.join(CLEAN_SHUTDOWN_FILE);
    let marker = checkpoints::read_values(storage, &marker_path, CheckpointKind::CleanShutdown)
        .ok()
        .flatten();
    let mut corruption: Option<Error> = None;
    let log_start_path = dir.join(LOG_START_FILE);
    let log_start_ckpt =
        match checkpoints::read_values(storage, &log_start_path, CheckpointKind::LogStart) {
            Ok(v) => v.and_then(|v| v.first().copied()),
            Err(e) => {
                // Written atomically, so damage here is real corruption (R4 for checkpoints).
                corruption = Some(e);
                None
            }
        };
    let rp_file = RecoveryPointFile::open(storage, dir)?;
    let recovery_point = rp_file.value();
    ctx.report.checkpoint_recovery_point = recovery_point;

    // Row R1: the marker must describe the files as they are.
    let clean = match (&marker, bases.last()) {
        (Some(v), Some(&last)) if v.len() == 3 && v[1] == last => {
            let len = storage
                .open(&ctx.log_path(last), OpenMode::Existing)
                .and_then(|f| f.len())
                .ok();
            len == Some(v[2])
        }
        _ => false,
    };
    ctx.report.clean_shutdown = clean;
    let index_loads = Arc::new(IndexLoadStats::default());

    // Row R10 before everything else: a segment whose successor starts at or below the log
    // start holds only deleted records, so it is never loaded, and neither damage in it nor a
    // gap after it can fail the open. Such a gap is legal: one retention pass unlinks several
    // segments and fsyncs the directory once, and a crash can keep any subset of those unlinks
    // (finding 10: a failed unlink left an older segment, a later pass removed the next one).
    let start_ckpt = log_start_ckpt.unwrap_or(0);
    let below_start = bases.windows(2).take_while(|w| w[1] <= start_ckpt).count();
    let mut loaded: Vec<Loaded> = Vec::new();
    for (i, &base) in bases.iter().enumerate().skip(below_start) {
        let next_base = bases.get(i + 1).copied();
        if let Some(prev) = loaded.last() {
            if prev.tail.next_offset != base {
                // A gap between segments: legal only past the recovery point (an unsynced
                // segment whose predecessor lost its tail); below it, synced data is missing.
                if prev.tail.next_offset < recovery_point {
                    corruption.get_or_insert(corrupt(
                        ctx.log_path(base),
                        0,
                        DecodeError::BadField {
                            field: "segment base offset",
                            value: base as i64,
                        },
                    ));
                } else {
                    ctx.report.truncated_at = Some(prev.tail.next_offset);
                }
                break;
            }
        }
        let trusted = clean || next_base.is_some_and(|nb| nb <= recovery_point);
        let result = if let (true, Some(next_base)) = (clean, next_base) {
            // Row R1, sealed segment: close sealed it (trimmed, index files written) before
            // the marker, and nothing has changed it since; its index loads on first use.
            Ok((ctx.defer(base, next_base), ScanEnd::Complete))
        } else if trusted {
            ctx.load_trusted(base, next_base)
                .map(|l| (l, ScanEnd::Complete))
        } else {
            scan_one(&mut ctx, base, next_base, recovery_point)
        };
        match result {
            Ok((l, end)) => {
                loaded.push(l);
                if let ScanEnd::Torn { offset, dropped } = end {
                    ctx.report.truncated_at = Some(offset);
                    ctx.report.bytes_truncated += dropped;
                    break;
                }
            }
            Err(e) => {
                corruption.get_or_insert(e);
                // Read-only opens serve the valid prefix of the damaged segment.
                loaded.extend(ctx.damaged_prefix.take());
                break;
            }
        }
    }
    let dropped_bases: Vec<u64> = bases
        .iter()
        .copied()
        .filter(|b| !loaded.iter().any(|l| l.base == *b))
        .collect();

    let leo = loaded.last().map_or(0, |l| l.tail.next_offset);
    // Row R9: offsets below the recovery point were durable; those at or past the log start
    // must still be here. Missing offsets below the log start were deleted on purpose (the log
    // restarts empty at the log start, R11), but a recovery point above the log start vouches
    // for records the log still holds, so it may not pass the recovered end even then: an open
    // that accepted it would keep it durable past the data, and the next open after a crash
    // would fail on the first new segment's preallocated zeros (R6), as in finding 11.
    if corruption.is_none() && recovery_point > leo.max(log_start_ckpt.unwrap_or(0)) {
        corruption = Some(Error::CorruptFile {
            path: dir.join(checkpoints::RECOVERY_POINT_FILE),
            reason: format!("recovery point {recovery_point} is beyond the recovered log end {leo}: synced data is missing"),
        });
    }

    let read_only = match corruption {
        None => false,
        Some(e) => match config.recovery {
            RecoveryMode::FailOnCorruption => return Err(e),
            RecoveryMode::ReadOnlyOnCorruption => {
                ctx.report.corruption = Some(e.to_string());
                true
            }
        },
    };

    let mut report = ctx.report;
    report.recovery_point_missing = !rp_file.found() && !bases.is_empty() && !clean;
    let deferred = |next_offset| Deferred {
        storage: Arc::clone(&config.storage),
        next_offset,
        index_interval: config.index_interval_bytes,
        write_back: !read_only,
        stats: Arc::clone(&index_loads),
    };
    let segments = if read_only {
        open_read_only(
            storage,
            dir,
            loaded,
            bases.get(below_start).copied(),
            &deferred,
        )?
    } else {
        // Rows R8/R10: drop segments after a torn tail and segments below the log start.
        for base in &dropped_bases {
            remove_segment_files(storage, dir, *base, &SEGMENT_FILES)?;
            report.segments_deleted += 1;
        }
        let start = log_start_ckpt.unwrap_or(0);
        let mut keep: Vec<Loaded> = Vec::new();
        let count = loaded.len();
        for (i, l) in loaded.into_iter().enumerate() {
            if l.tail.next_offset <= start && i + 1 < count {
                remove_segment_files(storage, dir, l.base, &SEGMENT_FILES)?;
                report.segments_deleted += 1;
            } else {
                keep.push(l);
            }
        }
        if !dropped_bases.is_empty() || report.segments_deleted > 0 {
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
        }
        open_for_append(storage, dir, &config, keep, start, &deferred)?
    };
    report.segments = segments.len();

    let log_end = segments.last().map_or(0, |s| s.next_offset());
    let first_base = segments.first().map_or(0, |s| s.base_offset());
    let log_start = log_start_ckpt
        .unwrap_or(first_base)
        .clamp(first_base, log_end);
    let active = Arc::clone(segments.last().ok_or(Error::Closed)?);
    let builder = active_builder(&config, &active)?;
    let mut snapshot_load = SnapshotLoad::default();
    let producer_cfg = producers::producer_config(&config);
    let (producers, stale_snapshots) = producers::rebuild_state(
        storage,
        dir,
        producer_cfg,
        &segments,
        log_start,
        None,
        &mut snapshot_load,
    )?;
    if !read_only && !stale_snapshots.is_empty() {
        // Snapshots above the recovered end describe a lost history: record what they alone
        // knew (producers below the log) in a snapshot at the end, then remove them.
        producers::write_snapshot(storage, dir, &producers)?;
        producers::remove_snapshots(storage, dir, &stale_snapshots)?;
    }
    let ids = producers::load_producer_ids(storage, dir, &producers)?;
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
            pending_epochs: Default::default(),
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
        index_loads,
        snapshot_load,
        lock: Mutex::new(Some(lock)),
        spares: Default::default(),
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

/// Rows R5-R8 for one segment.
fn scan_one(
    ctx: &mut Ctx<'_>,
    base: u64,
    next_base: Option<u64>,
    recovery_point: u64,
) -> Result<(Loaded, ScanEnd)> {
    ctx.report.segments_scanned += 1;
    let map = ctx.map_file(base)?;
    let bytes = map.published_bytes();
    let out = scan_segment(bytes, base, ctx.config.index_interval_bytes, |_, _| {});
    ctx.report.bytes_scanned += out.valid_len as u64;
    let tail = tail_of(base, &out, bytes);
    let loaded = |needs_reseal| Loaded {
        base,
        tail,
        index: LoadedIndex::Now {
            valid_len: out.valid_len as u64,
            entries: out.entries.clone(),
            needs_reseal,
        },
    };
    let Some((pos, reason)) = out.stop.clone() else {
        return Ok((loaded(false), ScanEnd::Complete));
    };
    if out.next_offset < recovery_point {
        // Row R6: the batch at `pos` was durable, so this is damage, not a torn write.
        ctx.damaged_prefix = Some(loaded(true));
        return Err(corrupt(ctx.log_path(base), pos as u64, reason));
    }
    if next_base == Some(out.next_offset) {
        // Row R7: every offset up to the next segment is here; the segment was rolled but its
        // seal (trim, index files) did not finish. What follows its last batch is never data.
        return Ok((loaded(true), ScanEnd::Complete));
    }
    let dropped = garbage_len(bytes.get(pos..).unwrap_or(&[]));
    if next_base.is_none() && dropped == 0 {
        // The active segment simply ends at its preallocated zeros: nothing is cut.
        return Ok((loaded(true), ScanEnd::Complete));
    }
    // Row R8: a torn tail.
    Ok((
        loaded(true),
        ScanEnd::Torn {
            offset: out.next_offset,
            dropped,
        },
    ))
}

/// Bytes of non-zero data at the start of `rest`, looking no further than 64 KiB of zeros past
/// the last non-zero byte (the report figure must not cost a scan of a preallocated gigabyte;
/// the cut itself is done by truncating the file).
fn garbage_len(rest: &[u8]) -> u64 {
    const QUIET: usize = 64 << 10;
    let mut last_nonzero = None;
    for (i, &b) in rest.iter().enumerate() {
        if b != 0 {
            last_nonzero = Some(i);
        } else if i - last_nonzero.map_or(0, |l| l + 1) >= QUIET {
            break;
        }
    }
    last_nonzero.map_or(0, |i| i as u64 + 1)
}

fn open_for_append(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    keep: Vec<Loaded>,
    start: u64,
    deferred: &dyn Fn(u64) -> Deferred,
) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(keep.len() + 1);
    if keep.is_empty() || keep.last().is_some_and(|l| l.tail.next_offset < start) {
        // Row R11 (and a log start past every segment): start empty at the log start.
        for l in &keep {
            remove_segment_files(storage, dir, l.base, &SEGMENT_FILES)?;
        }
        let seg = Segment::create(storage, dir, start, config.segment_bytes)?;
        segments.push(Arc::new(seg));
        return Ok(segments);
    }
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
