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

pub mod index;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::batch::{BatchHeader, BatchView};
use crate::format::file_name::{file_name, FileKind};
use crate::format::index as index_format;
use crate::format::DecodeError;
use crate::io::{AppendMap, OpenMode, Storage, StorageFile};
use crate::types::Offset;
use index::{IndexEntries, SegmentIndex};

/// Facts about a segment's last batch, kept so retention and rolls need no scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTail {
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub first_append_ms: i64,
    pub last_append_ms: i64,
}

impl SegmentTail {
    pub fn empty(base_offset: u64) -> Self {
        SegmentTail {
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: -1,
            last_append_ms: -1,
        }
    }
}

#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    map: Arc<AppendMap>,
    index: SegmentIndex,
    next_offset: AtomicU64,
    max_timestamp: AtomicI64,
    first_append_ms: AtomicI64,
    last_append_ms: AtomicI64,
    sealed: AtomicBool,
    /// Serialises seal and delete: a queued background seal of a segment that truncation or
    /// retention has since deleted or replaced must not write files under its old name.
    lifecycle: parking_lot::Mutex<Lifecycle>,
}

/// Where a segment is in Active -> Sealed -> Deleted, beyond the `sealed` flag readers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Live,
    Deleted,
}

pub fn segment_path(dir: &Path, base_offset: u64, kind: FileKind) -> PathBuf {
    dir.join(file_name(Offset(base_offset), kind))
}

/// The files of a segment: its data and its two indexes.
pub const SEGMENT_FILES: [FileKind; 3] = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];
/// A segment's index files alone.
pub const INDEX_FILES: [FileKind; 2] = [FileKind::Index, FileKind::TimeIndex];

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
        if storage.exists(&path) {
            // A leftover from a crash (never part of the recovered log): replace it.
            storage
                .remove(&path)
                .map_err(io_err("remove stale segment", &path))?;
        }
        let file = storage
            .open(&path, OpenMode::CreateNew)
            .map_err(io_err("create segment", &path))?;
        let setup = || -> Result<Arc<AppendMap>> {
            file.allocate(segment_bytes)
                .map_err(io_err("fallocate segment", &path))?;
            file.sync_data()
                .map_err(io_err("fsync new segment", &path))?;
            storage
                .sync_dir(dir)
                .map_err(io_err("fsync directory", dir))?;
            let region = file
                .map(segment_bytes as usize)
                .map_err(io_err("mmap segment", &path))?;
            Ok(AppendMap::new(region, 0))
        };
        let map = match setup() {
            Ok(map) => map,
            Err(e) => {
                drop(file);
                let _ = storage.remove(&path);
                return Err(e);
            }
        };
        Ok(Segment::assemble(
            base_offset,
            path,
            file,
            map,
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

    /// Maps an existing segment without changing its file (read-only logs after corruption).
    pub fn open_read_only(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        valid_len: u64,
        entries: IndexEntries,
        tail: SegmentTail,
    ) -> Result<Segment> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        let file = storage
            .open(&path, OpenMode::Existing)
            .map_err(io_err("open segment", &path))?;
        let file_len = file.len().map_err(io_err("stat segment", &path))?;
        let region = file
            .map(file_len as usize)
            .map_err(io_err("mmap segment", &path))?;
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
            next_offset: AtomicU64::new(tail.next_offset),
            max_timestamp: AtomicI64::new(tail.max_timestamp),
            first_append_ms: AtomicI64::new(tail.first_append_ms),
            last_append_ms: AtomicI64::new(tail.last_append_ms),
            sealed: AtomicBool::new(sealed),
            lifecycle: parking_lot::Mutex::new(Lifecycle::Live),
        }
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn map(&self) -> &Arc<AppendMap> {
        &self.map
    }

    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// Published bytes.
    pub fn size(&self) -> u64 {
        self.map.published() as u64
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset() == self.base_offset
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub fn tail(&self) -> SegmentTail {
        SegmentTail {
            next_offset: self.next_offset(),
            max_timestamp: self.max_timestamp.load(Ordering::Acquire),
            first_append_ms: self.first_append_ms.load(Ordering::Acquire),
            last_append_ms: self.last_append_ms.load(Ordering::Acquire),
        }
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
        let lifecycle = self.lifecycle.lock();
        if self.is_sealed() || *lifecycle == Lifecycle::Deleted {
            return Ok(false);
        }
        let len = self.map.published();
        self.flush_range(0, len)?;
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
            let path = segment_path(dir, self.base_offset, kind);
            let f = storage
                .open(&path, OpenMode::CreateTruncate)
                .map_err(io_err("create index", &path))?;
            f.write_at(0, &bytes)
                .map_err(io_err("write index", &path))?;
            f.sync_data().map_err(io_err("fsync index", &path))?;
        }
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
    /// while they fit in `max_bytes` and start below `limit` (exclusive offset bound).
    pub fn locate(
        &self,
        offset: u64,
        max_bytes: usize,
        limit: u64,
    ) -> Result<Option<(usize, usize)>> {
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
        while let Some(rest) = bytes.get(end..).filter(|r| !r.is_empty()) {
            let h = BatchHeader::decode(rest).map_err(|e| self.corrupt(end, e))?;
            let len = h.batch_length as usize;
            if h.base_offset >= limit || (end > start && end - start + len > max_bytes) {
                break;
            }
            end += len;
        }
        Ok(Some((start, end)))
    }

    /// The first offset at or after `offset_floor` whose record timestamp is `>= timestamp`.
    pub fn find_timestamp(&self, timestamp: i64, limit: u64) -> Result<Option<u64>> {
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
