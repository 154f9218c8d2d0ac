//! A segment: one `.log` file of concatenated batches plus its sparse offset and time indexes.
//!
//! Lifecycle: `Active` (preallocated to `segment_bytes`, mapped read-write, one appender) ->
//! `Sealed` (synced, trimmed to its valid length, index files written) -> `Deleted` (unlinked;
//! the mapping lives on until the last reader drops its `Arc<Segment>`).
//!
//! Invariants:
//! * the first batch starts at `base_offset`, and offsets are contiguous batch to batch;
//! * `next_offset` and the index only describe published bytes;
//! * a sealed segment's file length equals its published length, and nothing writes to it.
//!
//! A sealed segment opened after a clean shutdown starts with a *deferred* index
//! ([`Deferred`], docs/recovery.md "Deferred index loading"): open knows only its base, its
//! next offset (the next segment's base) and its size (the file length). The index files are
//! read, verified and bound to the file by the first lookup ([`Segment::ensure_index`]), with
//! the checks recovery would have run at open (`load::load_trusted`); until then the index is
//! empty and the tail fields other than `next_offset` are unknown, so every accessor of them
//! goes through `ensure_index`.

pub mod index;
pub mod load;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::batch::{BatchHeader, BatchView};
use crate::format::file_name::{file_name, FileKind};
use crate::format::index as index_format;
use crate::format::txn_index::{self, OpenTxns};
use crate::format::DecodeError;
use crate::io::{AppendMap, OpenMode, Storage, StorageFile};
use crate::producer::AbortedTxn;
use crate::types::Offset;
use index::{IndexEntries, SegmentIndex};

/// Facts about a segment's last batch, kept so retention and rolls need no scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTail {
    /// The offset after the segment's last batch (its base offset when empty).
    pub next_offset: u64,
    /// The largest client `max_timestamp` of the segment's batches; `i64::MIN` when it has
    /// none. An appender resuming the segment continues its time index from this running
    /// maximum, so it must be the batches' own (a -1 here once turned every later entry for
    /// negative timestamps into -1, unlike the entries a scan builds).
    pub max_timestamp: i64,
    /// The log clock at the segment's first append (ms); -1 when empty.
    pub first_append_ms: i64,
    /// The log clock at its last append (ms); -1 when empty. Time retention reads it.
    pub last_append_ms: i64,
}

impl SegmentTail {
    /// The tail of an empty segment at `base_offset`.
    pub fn empty(base_offset: u64) -> Self {
        SegmentTail {
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            first_append_ms: -1,
            last_append_ms: -1,
        }
    }
}

/// What a sealed segment whose index is deferred needs to load it on first use.
#[derive(Debug, Clone)]
pub struct Deferred {
    /// The file system the files are read from.
    pub storage: Arc<dyn Storage>,
    /// The next segment's base offset: the segment must end exactly there (every offset of a
    /// clean log is in exactly one segment). The first load checks it.
    pub next_offset: u64,
    /// `LogConfig::index_interval_bytes`, for a rebuild.
    pub index_interval: u32,
    /// Whether an index rebuilt on first use is written back to the index files (false for
    /// read-only logs, which change nothing on disk).
    pub write_back: bool,
    /// Shared counters of the log's deferred loads.
    pub stats: Arc<IndexLoadStats>,
}

/// Counts of deferred index loads, shared by the segments of one log (`Log::index_loads`).
#[derive(Debug, Default)]
pub struct IndexLoadStats {
    /// Deferred indexes loaded (from their files or rebuilt) by a first use.
    pub loaded: AtomicUsize,
    /// Of those, indexes rebuilt by a scan because their files were missing, damaged or bound
    /// to another file (row R3, found on first use).
    pub rebuilt: AtomicUsize,
    /// Bytes those rebuilds scanned.
    pub bytes_scanned: AtomicU64,
    /// First uses that found damage in the segment (row R4, found on first use).
    pub failed: AtomicUsize,
}

/// A sealed segment's index state. Transitions: `Deferred -> Ready` or `Deferred -> Failed`,
/// once, under `Segment::index_state`'s lock; `Ready` and `Failed` are final.
#[derive(Debug)]
enum IndexState {
    /// The index and the tail fields describe the published bytes (`index_ready` is true).
    Ready,
    /// Not loaded yet: the index is empty, only `next_offset` of the tail is known.
    Deferred(Deferred),
    /// The first use found damage; every later use reports the same error.
    Failed(Damage),
}

/// Where a deferred load found damage (reported as `Error::Corrupt`).
#[derive(Debug, Clone)]
struct Damage {
    path: PathBuf,
    position: u64,
    reason: DecodeError,
}

impl Damage {
    fn error(&self) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            position: self.position,
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug)]
/// One segment: a `.log` file mapped for appends and reads, its sparse indexes and its
/// transactions. Active (appended to) until rolled, then sealed (its index files written).
pub struct Segment {
    base_offset: u64,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    map: Arc<AppendMap>,
    /// Invariant: empty while `index_state` is not `Ready`.
    index: SegmentIndex,
    /// Invariant: true exactly when `index_state` is `Ready` (set after the index and the tail
    /// fields are installed, with Release; readers check it with Acquire before using them).
    index_ready: AtomicBool,
    index_state: parking_lot::Mutex<IndexState>,
    next_offset: AtomicU64,
    max_timestamp: AtomicI64,
    first_append_ms: AtomicI64,
    last_append_ms: AtomicI64,
    sealed: AtomicBool,
    /// Serialises seal and delete: a queued background seal of a segment that truncation or
    /// retention has since deleted or replaced must not write files under its old name.
    lifecycle: parking_lot::Mutex<Lifecycle>,
    /// The segment's transactions (aborted ones, open at base and end): set by the log at open,
    /// appended to by the marker path, written to `.txnindex` at seal and clean close.
    txns: parking_lot::Mutex<SegmentTxns>,
}

/// A segment's transactions, in memory (`format::txn_index` on disk).
///
/// Invariants: `aborted` is ascending by marker offset, every marker inside the segment;
/// `open_at_end` is `Some` only once the segment ends (it was rolled or closed): appends after
/// it would make it stale, so the appender clears it when it writes into the segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTxns {
    /// Transactions open at the segment's base offset.
    pub open_at_base: OpenTxns,
    /// Aborted transactions whose ABORT marker is in the segment.
    pub aborted: Vec<AbortedTxn>,
    /// Transactions open at the segment's end, once it ended.
    pub open_at_end: Option<OpenTxns>,
}

/// Where a segment is in Active -> Sealed -> Deleted, beyond the `sealed` flag readers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Live,
    Deleted,
}

/// The path of the segment file of `kind` at `base_offset` in `dir`.
pub fn segment_path(dir: &Path, base_offset: u64, kind: FileKind) -> PathBuf {
    dir.join(file_name(Offset(base_offset), kind))
}

/// The files of a segment: its data, its two indexes and its transaction file.
pub const SEGMENT_FILES: [FileKind; 4] = [
    FileKind::Log,
    FileKind::Index,
    FileKind::TimeIndex,
    FileKind::TxnIndex,
];
/// A segment's index files alone (derived from its data; rebuilt when missing).
pub const INDEX_FILES: [FileKind; 3] = [FileKind::Index, FileKind::TimeIndex, FileKind::TxnIndex];

/// Removes the files of kinds `kinds` of the segment at `base_offset` that exist (no directory
/// fsync: callers batch that).
pub fn remove_segment_files(
    storage: &dyn Storage,
    dir: &Path,
    base_offset: u64,
    kinds: &[FileKind],
) -> Result<()> {
    for &kind in kinds {
        let path = segment_path(dir, base_offset, kind);
        if storage.exists(&path) {
            storage
                .remove(&path)
                .map_err(io_err("remove segment file", &path))?;
        }
    }
    Ok(())
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

/// Opens an existing file for reading and maps all of it read-only, changing nothing; returns
/// the file length too.
pub(crate) fn map_whole_file(
    storage: &dyn Storage,
    path: &Path,
) -> Result<(Box<dyn StorageFile>, crate::io::MappedRegion, u64)> {
    map_file_read_only(storage, path, None)
}

/// Opens an existing file for reading and maps its first `len` bytes read-only (all of it
/// when `None`; at most its length), changing nothing; returns the file length too.
fn map_file_read_only(
    storage: &dyn Storage,
    path: &Path,
    len: Option<u64>,
) -> Result<(Box<dyn StorageFile>, crate::io::MappedRegion, u64)> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(io_err("open segment", path))?;
    let file_len = file.len().map_err(io_err("stat segment", path))?;
    let map_len = len.map_or(file_len, |l| l.min(file_len));
    let region = file
        .map_read_only(map_len as usize)
        .map_err(io_err("mmap segment", path))?;
    Ok((file, region, file_len))
}

/// Creates `path` and reserves `len` bytes of real blocks (fallocate, or zeros where the file
/// system refuses it: never a sparse file), then fdatasyncs it; the directory is *not* fsynced.
/// A file already at `path` is a leftover (a stale segment a crash kept, a spare whose removal
/// failed) and is replaced. On failure the new file is removed (best effort). Shared by
/// [`Segment::create`] and the log's prepared spare segment (`src/log/spare.rs`).
pub fn create_preallocated(
    storage: &dyn Storage,
    path: &Path,
    len: u64,
) -> Result<Box<dyn StorageFile>> {
    if storage.exists(path) {
        storage
            .remove(path)
            .map_err(io_err("remove stale segment", path))?;
    }
    let file = storage
        .open(path, OpenMode::CreateNew)
        .map_err(io_err("create segment", path))?;
    let reserve = || -> Result<()> {
        file.allocate(len)
            .map_err(io_err("fallocate segment", path))?;
        file.sync_data().map_err(io_err("fsync new segment", path))
    };
    match reserve() {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = storage.remove(path);
            Err(e)
        }
    }
}

impl Segment {
    /// Creates a new, empty active segment: create, preallocate, sync the file and the
    /// directory entry, then map.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        segment_bytes: u64,
    ) -> Result<Segment> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        let file = create_preallocated(storage, &path, segment_bytes)?;
        if let Err(e) = storage.sync_dir(dir) {
            drop(file);
            let _ = storage.remove(&path);
            return Err(Error::io("fsync directory", dir, e));
        }
        Segment::map_new(base_offset, path.clone(), file, segment_bytes).inspect_err(|_| {
            let _ = storage.remove(&path);
        })
    }

    /// Makes a prepared spare file (made by [`create_preallocated`] under the name `spare`) the
    /// new, empty active segment at `base_offset`: rename it to the segment's name, then map it.
    /// The rename is *not* made durable here: the log fsyncs the directory before its recovery
    /// point moves past `base_offset` (docs/architecture.md, "The prepared spare segment"). On
    /// failure whichever name the file has is removed (best effort).
    pub fn adopt_spare(
        storage: &dyn Storage,
        dir: &Path,
        spare: &Path,
        file: Box<dyn StorageFile>,
        base_offset: u64,
        segment_bytes: u64,
    ) -> Result<Segment> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        if let Err(e) = storage.rename(spare, &path) {
            drop(file);
            let _ = storage.remove(spare);
            return Err(Error::io("rename spare segment", &path, e));
        }
        Segment::map_new(base_offset, path.clone(), file, segment_bytes).inspect_err(|_| {
            let _ = storage.remove(&path);
        })
    }

    /// Maps a new, empty, preallocated segment file for appends.
    fn map_new(
        base_offset: u64,
        path: PathBuf,
        file: Box<dyn StorageFile>,
        segment_bytes: u64,
    ) -> Result<Segment> {
        let region = file
            .map(segment_bytes as usize)
            .map_err(io_err("mmap segment", &path))?;
        Ok(Segment::assemble(
            base_offset,
            path,
            file,
            AppendMap::new(region, 0),
            IndexEntries::default(),
            SegmentTail::empty(base_offset),
            false,
        ))
    }

    /// Opens an existing segment whose first `valid_len` bytes are verified batches. With
    /// `active`, the file is extended to `segment_bytes` (zeros past `valid_len`) and mapped for
    /// appends; otherwise it is trimmed to `valid_len` and mapped for reads.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        valid_len: u64,
        active: bool,
        segment_bytes: u64,
        entries: IndexEntries,
        tail: SegmentTail,
    ) -> Result<Segment> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        let file = storage
            .open(&path, OpenMode::Existing)
            .map_err(io_err("open segment", &path))?;
        let file_len = file.len().map_err(io_err("stat segment", &path))?;
        let map_len = if active {
            if file_len != valid_len {
                // Drop whatever lies past the valid end (a torn tail, stale batches of an earlier
                // run) so it can never be mistaken for data after a later crash, then reserve
                // the space again: fallocate gives zeroed blocks.
                file.set_len(valid_len)
                    .map_err(io_err("truncate segment tail", &path))?;
                file.sync_data().map_err(io_err("fsync segment", &path))?;
            }
            let target = segment_bytes.max(valid_len);
            file.allocate(target)
                .map_err(io_err("fallocate segment", &path))?;
            file.sync_data().map_err(io_err("fsync segment", &path))?;
            target
        } else {
            if file_len != valid_len {
                file.set_len(valid_len)
                    .map_err(io_err("trim segment", &path))?;
                file.sync_data().map_err(io_err("fsync segment", &path))?;
            }
            valid_len
        };
        let region = file
            .map(map_len as usize)
            .map_err(io_err("mmap segment", &path))?;
        let map = AppendMap::new(region, valid_len as usize);
        Ok(Segment::assemble(
            base_offset,
            path,
            file,
            map,
            entries,
            tail,
            !active,
        ))
    }

    /// Maps the first `valid_len` bytes of an existing segment read-only, without changing its
    /// file (read-only logs: [`Log::open_read_only`](crate::Log::open_read_only), or
    /// corruption met by `RecoveryMode::ReadOnlyOnCorruption`). Bytes past `valid_len` (a
    /// torn tail, another process's appends) are not mapped.
    pub fn open_read_only(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        valid_len: u64,
        entries: IndexEntries,
        tail: SegmentTail,
    ) -> Result<Segment> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        let (file, region, file_len) = map_file_read_only(storage, &path, Some(valid_len))?;
        let map = AppendMap::new(region, valid_len.min(file_len) as usize);
        Ok(Segment::assemble(
            base_offset,
            path,
            file,
            map,
            entries,
            tail,
            true,
        ))
    }

    /// Maps a sealed segment of a cleanly closed log without reading its index files or its
    /// bytes: its size is the file length, its next offset `deferred.next_offset`; the index and
    /// the rest of the tail are loaded by the first lookup ([`Segment::ensure_index`]). Changes
    /// nothing on disk (the first lookup may rewrite the index files, if `write_back`).
    pub fn open_deferred(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        deferred: Deferred,
    ) -> Result<Segment> {
        assert!(
            deferred.next_offset >= base_offset,
            "segment {base_offset} cannot end at {}",
            deferred.next_offset
        );
        let path = segment_path(dir, base_offset, FileKind::Log);
        let (file, region, file_len) = map_whole_file(storage, &path)?;
        let map = AppendMap::new(region, file_len as usize);
        let mut tail = SegmentTail::empty(base_offset);
        tail.next_offset = deferred.next_offset;
        let mut seg = Segment::assemble(
            base_offset,
            path,
            file,
            map,
            IndexEntries::default(),
            tail,
            true,
        );
        seg.index_state = parking_lot::Mutex::new(IndexState::Deferred(deferred));
        seg.index_ready = AtomicBool::new(false);
        Ok(seg)
    }

    fn assemble(
        base_offset: u64,
        path: PathBuf,
        file: Box<dyn StorageFile>,
        map: Arc<AppendMap>,
        entries: IndexEntries,
        tail: SegmentTail,
        sealed: bool,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            file,
            map,
            index: SegmentIndex::new(entries),
            index_ready: AtomicBool::new(true),
            index_state: parking_lot::Mutex::new(IndexState::Ready),
            next_offset: AtomicU64::new(tail.next_offset),
            max_timestamp: AtomicI64::new(tail.max_timestamp),
            first_append_ms: AtomicI64::new(tail.first_append_ms),
            last_append_ms: AtomicI64::new(tail.last_append_ms),
            sealed: AtomicBool::new(sealed),
            lifecycle: parking_lot::Mutex::new(Lifecycle::Live),
            txns: parking_lot::Mutex::new(SegmentTxns::default()),
        }
    }

    /// The offset of the segment's first batch (its file name).
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The `.log` file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping of the `.log` file.
    pub fn map(&self) -> &Arc<AppendMap> {
        &self.map
    }

    /// The segment's index, loaded first if it was deferred (see [`Segment::ensure_index`]).
    pub fn index(&self) -> Result<&SegmentIndex> {
        self.ensure_index()?;
        Ok(&self.index)
    }

    /// Whether the index and tail are loaded (false only for a deferred index before its first
    /// use, or one whose first use found damage).
    pub fn index_loaded(&self) -> bool {
        self.index_ready.load(Ordering::Acquire)
    }

    /// Loads a deferred index (docs/recovery.md, "Deferred index loading"): the index files if
    /// they pass every check and describe this very file, otherwise a rebuild by scanning, which
    /// is written back to the index files. Damage the load finds in the segment's bytes, an
    /// untrimmed file, or an end that is not the next segment's base is `Error::Corrupt`, now and
    /// on every later call. A no-op (one atomic load) once loaded.
    pub fn ensure_index(&self) -> Result<()> {
        if self.index_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.index_state.lock();
        let deferred = match &*state {
            IndexState::Ready => return Ok(()),
            IndexState::Failed(damage) => return Err(damage.error()),
            IndexState::Deferred(d) => d.clone(),
        };
        let stats = &deferred.stats;
        let loaded = match self.load_deferred(&deferred) {
            Ok(loaded) => loaded,
            Err(damage) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let e = damage.error();
                *state = IndexState::Failed(damage);
                return Err(e);
            }
        };
        self.install(&loaded);
        *state = IndexState::Ready;
        self.index_ready.store(true, Ordering::Release);
        stats.loaded.fetch_add(1, Ordering::Relaxed);
        if loaded.rebuilt {
            stats.rebuilt.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_scanned
                .fetch_add(loaded.bytes_scanned, Ordering::Relaxed);
            // Still under the state lock, so later first uses wait for the files. A write error
            // is the caller's to see; the index is correct in memory either way, and the next
            // open's first use rebuilds the files again. A segment deleted or replaced meanwhile
            // (retention, truncation) gets no files under its old name.
            let lifecycle = self.lifecycle.lock();
            if deferred.write_back && *lifecycle == Lifecycle::Live {
                self.write_index_files(deferred.storage.as_ref())?;
            }
        }
        Ok(())
    }

    /// Runs recovery's trusted load on this segment's bytes and checks what open assumed: the
    /// file holds nothing after its last batch (a sealed segment was trimmed before the clean
    /// close) and the last batch ends at the next segment's base.
    fn load_deferred(&self, d: &Deferred) -> std::result::Result<load::Trusted, Damage> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let bytes = self.map.published_bytes();
        let loaded = load::load_trusted(
            d.storage.as_ref(),
            dir,
            self.base_offset,
            bytes,
            Some(d.next_offset),
            d.index_interval,
        )
        .map_err(|damaged| Damage {
            path: self.path.clone(),
            position: damaged.position,
            reason: damaged.reason,
        })?;
        if loaded.valid_len != bytes.len() as u64 {
            let (pos, reason) = loaded.stop.clone().unwrap_or((
                loaded.valid_len as usize,
                DecodeError::BadLength {
                    length: bytes.len() as u64,
                },
            ));
            return Err(Damage {
                path: self.path.clone(),
                position: pos as u64,
                reason,
            });
        }
        if loaded.tail.next_offset != d.next_offset {
            // Synced data is missing between this segment and the next (as recovery's gap rule
            // below the recovery point).
            return Err(Damage {
                path: segment_path(dir, d.next_offset, FileKind::Log),
                position: 0,
                reason: DecodeError::SegmentChain {
                    base: d.next_offset,
                    prev_end: loaded.tail.next_offset,
                },
            });
        }
        Ok(loaded)
    }

    /// Installs a deferred segment's loaded index and tail (before `index_ready` is set).
    fn install(&self, loaded: &load::Trusted) {
        assert!(self.is_sealed(), "only sealed segments defer their index");
        assert_eq!(
            loaded.valid_len,
            self.size(),
            "a deferred index covers the whole file"
        );
        assert_eq!(loaded.tail.next_offset, self.next_offset());
        self.index.install(loaded.entries.clone());
        self.max_timestamp
            .store(loaded.tail.max_timestamp, Ordering::Release);
        self.first_append_ms
            .store(loaded.tail.first_append_ms, Ordering::Release);
        self.last_append_ms
            .store(loaded.tail.last_append_ms, Ordering::Release);
    }

    /// Published bytes.
    pub fn size(&self) -> u64 {
        self.map.published() as u64
    }

    /// The offset after the segment's last batch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.next_offset() == self.base_offset
    }

    /// Whether the segment was rolled (no more appends).
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Next offset, largest client timestamp, first and last append times; loads a deferred
    /// index first (only `next_offset` is known without it).
    pub fn tail(&self) -> Result<SegmentTail> {
        self.ensure_index()?;
        Ok(SegmentTail {
            next_offset: self.next_offset(),
            max_timestamp: self.max_timestamp.load(Ordering::Acquire),
            first_append_ms: self.first_append_ms.load(Ordering::Acquire),
            last_append_ms: self.last_append_ms.load(Ordering::Acquire),
        })
    }

    /// Relative offset of `offset` in this segment.
    pub fn relative(&self, offset: u64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX)
    }

    /// Whether a batch ending at `last_offset` can still be indexed relative to the base.
    pub fn fits_offset(&self, last_offset: u64) -> bool {
        last_offset - self.base_offset <= u64::from(u32::MAX)
    }

    /// Records a published batch: index entries, then the offsets readers use.
    pub fn on_published(
        &self,
        h: &BatchHeader,
        entries: (
            Option<index_format::OffsetEntry>,
            Option<index_format::TimeEntry>,
        ),
    ) {
        self.index.push(entries.0, entries.1);
        self.max_timestamp
            .fetch_max(h.max_timestamp, Ordering::AcqRel);
        let _ = self.first_append_ms.compare_exchange(
            -1,
            h.append_timestamp,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.last_append_ms
            .store(h.append_timestamp, Ordering::Release);
        self.next_offset.store(h.next_offset(), Ordering::Release);
    }

    /// msync of published bytes `[from, to)`.
    pub fn flush_range(&self, from: usize, to: usize) -> Result<()> {
        self.map
            .flush(from, to)
            .map_err(io_err("msync segment", &self.path))
    }

    /// Seals the segment: msync everything, trim the file to its valid length, fsync, and write
    /// the index files (fsynced, directory fsynced). Idempotent.
    /// Returns whether this call sealed it (false: already sealed, deleted or replaced).
    pub fn seal(&self, storage: &dyn Storage) -> Result<bool> {
        self.seal_in_pieces(storage, usize::MAX, || {})
    }

    /// [`Segment::seal`] with its msync split into pieces of `piece` bytes, calling `between`
    /// after each piece (the background thread prepares a requested spare segment there, so a
    /// long seal does not hold it back).
    pub fn seal_in_pieces(
        &self,
        storage: &dyn Storage,
        piece: usize,
        mut between: impl FnMut(),
    ) -> Result<bool> {
        let lifecycle = self.lifecycle.lock();
        if self.is_sealed() || *lifecycle == Lifecycle::Deleted {
            return Ok(false);
        }
        // Only sealed segments defer their index, so an unsealed one's is always loaded.
        assert!(
            self.index_loaded(),
            "unsealed segment with a deferred index"
        );
        let len = self.map.published();
        let mut from = 0;
        while from < len {
            let to = from.saturating_add(piece).min(len);
            self.flush_range(from, to)?;
            from = to;
            between();
        }
        self.file
            .set_len(len as u64)
            .map_err(io_err("trim segment", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_err("fsync segment", &self.path))?;
        self.write_index_files(storage)?;
        self.sealed.store(true, Ordering::Release);
        Ok(true)
    }

    /// The log length and last batch checksum that index files of this segment are bound to.
    pub fn index_binding(&self) -> index_format::IndexBinding {
        assert!(self.index_loaded(), "binding of an unloaded index");
        let bytes = self.map.published_bytes();
        let mut pos = self
            .index
            .last_offset_entry()
            .map_or(0, |e| e.position as usize);
        let mut last_batch_crc = 0;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            let Ok(h) = BatchHeader::decode(rest) else {
                break;
            };
            last_batch_crc = h.crc;
            pos += h.batch_length as usize;
        }
        index_format::IndexBinding {
            log_length: bytes.len() as u64,
            last_batch_crc,
        }
    }

    /// The segment's transactions.
    pub fn txns(&self) -> parking_lot::MutexGuard<'_, SegmentTxns> {
        self.txns.lock()
    }

    /// The aborted transactions whose marker is in the segment, with `last_offset >= from` and
    /// `first_offset < to` (the read_committed fetch's rule), appended to `out`; returns `true`
    /// once an entry's last stable offset reaches `to`: every transaction aborted after it
    /// began at or after that LSO, so no later entry, in this or a later segment, can overlap
    /// `[from, to)` (docs/transactions.md).
    pub fn collect_aborted(&self, from: u64, to: u64, out: &mut Vec<AbortedTxn>) -> bool {
        let t = self.txns.lock();
        let start = t.aborted.partition_point(|a| a.last_offset < from);
        for a in t.aborted.get(start..).unwrap_or(&[]) {
            if a.first_offset < to {
                out.push(*a);
            }
            if a.last_stable_offset >= to {
                return true;
            }
        }
        false
    }

    /// Writes `.txnindex` for the segment as it is now (fsynced; the caller fsyncs the
    /// directory). Needs `open_at_end`: only a segment that ends has a complete file.
    pub fn write_txn_file(&self, storage: &dyn Storage) -> Result<()> {
        let file = {
            let t = self.txns.lock();
            let Some(end) = t.open_at_end.clone() else {
                return Ok(());
            };
            txn_index::SegmentTxnFile {
                base_offset: self.base_offset,
                log_length: self.map.published() as u64,
                next_offset: self.next_offset(),
                open_at_base: t.open_at_base.clone(),
                open_at_end: end,
                aborted: t.aborted.clone(),
            }
        };
        self.write_derived_file(storage, FileKind::TxnIndex, &txn_index::encode(&file))
    }

    /// Creates (or truncates) one of the segment's derived files, writes `bytes` and fdatasyncs
    /// it; the caller fsyncs the directory.
    fn write_derived_file(
        &self,
        storage: &dyn Storage,
        kind: FileKind,
        bytes: &[u8],
    ) -> Result<()> {
        let (create, write, fsync) = match kind {
            FileKind::TxnIndex => ("create txn index", "write txn index", "fsync txn index"),
            _ => ("create index", "write index", "fsync index"),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let path = segment_path(dir, self.base_offset, kind);
        let f = storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(io_err(create, &path))?;
        f.write_at(0, bytes).map_err(io_err(write, &path))?;
        f.sync_data().map_err(io_err(fsync, &path))
    }

    /// Marks the segment replaced (by truncation's copy under the same name): no later seal may
    /// write its files.
    pub fn retire(&self) {
        *self.lifecycle.lock() = Lifecycle::Deleted;
    }

    /// Writes `.index` and `.timeindex` (each fsynced), then fsyncs the directory.
    pub fn write_index_files(&self, storage: &dyn Storage) -> Result<()> {
        let entries = self.index.snapshot();
        let bind = self.index_binding();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let files = [
            (
                FileKind::Index,
                index_format::encode_offset_index(self.base_offset, bind, &entries.offsets),
            ),
            (
                FileKind::TimeIndex,
                index_format::encode_time_index(self.base_offset, bind, &entries.times),
            ),
        ];
        for (kind, bytes) in files {
            self.write_derived_file(storage, kind, &bytes)?;
        }
        self.write_txn_file(storage)?;
        storage
            .sync_dir(dir)
            .map_err(io_err("fsync directory", dir))
    }

    /// Trims the active segment's file to its valid length for a clean close (the next open
    /// extends it again). The caller has synced the data.
    pub fn trim_for_close(&self) -> Result<()> {
        let len = self.map.published() as u64;
        self.file
            .set_len(len)
            .map_err(io_err("trim segment", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_err("fsync segment", &self.path))
    }

    /// Removes the segment's files. Readers holding the segment keep its mapping.
    pub fn delete_files(&self, storage: &dyn Storage) -> Result<()> {
        let mut lifecycle = self.lifecycle.lock();
        *lifecycle = Lifecycle::Deleted;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        remove_segment_files(storage, dir, self.base_offset, &SEGMENT_FILES)
    }

    fn corrupt(&self, position: usize, reason: DecodeError) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            position: position as u64,
            reason,
        }
    }

    /// The byte range `[start, end)` of whole batches to return for a read at `offset`: the
    /// batch containing `offset` first (whole, even past `max_bytes`), then following batches
    /// while they fit in `max_bytes` and start below `limit` (exclusive offset bound); and the
    /// offset after the range's last batch.
    pub fn locate(
        &self,
        offset: u64,
        max_bytes: usize,
        limit: u64,
    ) -> Result<Option<(usize, usize, u64)>> {
        self.ensure_index()?;
        let bytes = self.map.published_bytes();
        let mut pos = self.index.position_for(self.relative(offset)) as usize;
        let start = loop {
            let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) else {
                return Ok(None);
            };
            let h = BatchHeader::decode(rest).map_err(|e| self.corrupt(pos, e))?;
            if h.base_offset >= limit {
                return Ok(None);
            }
            if h.last_offset() >= offset {
                break pos;
            }
            pos += h.batch_length as usize;
        };
        let mut end = start;
        let mut next_offset = offset;
        while let Some(rest) = bytes.get(end..).filter(|r| !r.is_empty()) {
            let h = BatchHeader::decode(rest).map_err(|e| self.corrupt(end, e))?;
            let len = h.batch_length as usize;
            if h.base_offset >= limit || (end > start && end - start + len > max_bytes) {
                break;
            }
            end += len;
            next_offset = h.next_offset();
        }
        Ok(Some((start, end, next_offset)))
    }

    /// The first offset at or after `offset_floor` whose record timestamp is `>= timestamp`.
    pub fn find_timestamp(&self, timestamp: i64, limit: u64) -> Result<Option<u64>> {
        self.ensure_index()?;
        if self.max_timestamp.load(Ordering::Acquire) < timestamp {
            return Ok(None);
        }
        let bytes = self.map.published_bytes();
        let rel = self.index.offset_for_timestamp(timestamp);
        let mut pos = self.index.position_for(rel) as usize;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            let (view, _) = BatchView::parse(rest).map_err(|e| self.corrupt(pos, e))?;
            let h = view.header();
            if h.base_offset >= limit {
                return Ok(None);
            }
            if h.max_timestamp >= timestamp {
                for rec in view.records() {
                    let rec = rec.map_err(|e| self.corrupt(pos, e))?;
                    if rec.timestamp >= timestamp {
                        return Ok(Some(h.base_offset + rec.offset_delta as u64));
                    }
                }
            }
            pos += view.len();
        }
        Ok(None)
    }
}
