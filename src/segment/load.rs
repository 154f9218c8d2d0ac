//! Loading the index and tail of a *trusted* segment (every byte durable: docs/recovery.md rows
//! R2-R4, R7): from its `.index`/`.timeindex` files when they describe this very file, otherwise
//! by a full scan. Recovery runs it at open for the segments it must load eagerly; a sealed
//! segment opened with a deferred index runs it on its first lookup (`Segment::ensure_index`).
//! Both get exactly the same checks.

use std::path::Path;

use crate::format::batch::BatchView;
use crate::format::file_name::FileKind;
use crate::format::index::{self as index_format, IndexBinding};
use crate::format::DecodeError;
use crate::io::{OpenMode, Storage};
use crate::segment::index::IndexEntries;
use crate::segment::scan::{scan_segment, ScanOutcome};
use crate::segment::{segment_path, SegmentTail};

/// A trusted segment's index and tail.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Bytes of valid, contiguous batches from position 0.
    pub valid_len: u64,
    /// The index entries, loaded from the files or rebuilt.
    pub entries: IndexEntries,
    /// The facts about the last batch.
    pub tail: SegmentTail,
    /// The index files were missing, damaged or bound to another file, and the index was
    /// rebuilt by a scan (row R3): the files must be rewritten.
    pub rebuilt: bool,
    /// Bytes the rebuild scanned (0 when the index files were used).
    pub bytes_scanned: u64,
    /// Why the rebuild's scan stopped before the end of the bytes, and where: only zeros follow
    /// (or the segment already reaches `next_base`: row R7). `None` when the bytes end with the
    /// last batch.
    pub stop: Option<(usize, DecodeError)>,
}

/// Damage in trusted bytes (row R4): the scan stopped inside them.
#[derive(Debug, Clone)]
pub struct Damaged {
    /// The valid prefix before the damage (served by read-only opens).
    pub prefix: Box<Trusted>,
    /// Byte position of the damage in the file.
    pub position: u64,
    /// What is wrong there.
    pub reason: DecodeError,
}

/// Loads the index of the trusted segment at `base` whose bytes are `bytes` (the whole file).
/// `next_base` is the next segment's base offset, if there is one (row R7's test).
pub fn load_trusted(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    bytes: &[u8],
    next_base: Option<u64>,
    index_interval: u32,
) -> Result<Trusted, Damaged> {
    match from_index_files(storage, dir, base, bytes) {
        Some(t) => Ok(t),
        None => rebuild(bytes, base, next_base, index_interval),
    }
}

/// Rows R2/R3: the index files, if they pass every check; `None` means "rebuild".
fn from_index_files(storage: &dyn Storage, dir: &Path, base: u64, bytes: &[u8]) -> Option<Trusted> {
    let (bind, entries) = read_index_files(storage, dir, base, bytes.len() as u64)?;
    // Walk only the tail after the last index entry (at most one index interval).
    let (start_pos, start_offset) = entries.offsets.last().map_or((0usize, base), |e| {
        (e.position as usize, base + u64::from(e.relative_offset))
    });
    let mut pos = start_pos;
    let mut next = start_offset;
    let mut last_crc = 0;
    let mut tail = SegmentTail::empty(base);
    tail.max_timestamp = entries.times.last().map_or(i64::MIN, |t| t.timestamp);
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or(&[]);
        // Not a clean tail: the full scan decides between an untrimmed zero tail (R7) and
        // damage (R4).
        let (view, _) = BatchView::parse(rest).ok()?;
        let h = view.header();
        if h.base_offset != next {
            return None;
        }
        next = h.next_offset();
        last_crc = h.crc;
        tail.max_timestamp = tail.max_timestamp.max(h.max_timestamp);
        tail.last_append_ms = h.append_timestamp;
        pos += view.len();
    }
    tail.next_offset = next;
    if let Ok((view, _)) = BatchView::parse(bytes) {
        tail.first_append_ms = view.header().append_timestamp;
    }
    // Time entries must point inside the segment (bogus entries never steer lookups).
    let in_range = entries
        .times
        .iter()
        .all(|t| base + u64::from(t.relative_offset) < next);
    // The index must describe this very file (not a stale copy with the same base).
    if !in_range || bind.last_batch_crc != last_crc {
        return None;
    }
    Some(Trusted {
        valid_len: bytes.len() as u64,
        entries,
        tail,
        rebuilt: false,
        bytes_scanned: 0,
        stop: None,
    })
}

/// Row R3: rebuild the index; any stop inside the bytes is damage in synced data (R4), unless
/// only zeros follow or the segment already reaches the next one (R7).
pub fn rebuild(
    bytes: &[u8],
    base: u64,
    next_base: Option<u64>,
    index_interval: u32,
) -> Result<Trusted, Damaged> {
    let out = scan_segment(bytes, base, index_interval, |_, _| {});
    let loaded = Trusted {
        valid_len: out.valid_len as u64,
        entries: out.entries.clone(),
        tail: tail_of(base, &out, bytes),
        rebuilt: true,
        bytes_scanned: out.valid_len as u64,
        stop: out.stop.clone(),
    };
    if let Some((pos, reason)) = out.stop {
        // R7 for a synced segment: every offset up to the next segment is here, so what
        // follows the last batch was never data (preallocated zeros, or bytes of a write
        // whose sync failed). Zeros to the end of the file are also accepted here; whether
        // the segment is whole is then checked against the next segment's base.
        let whole = next_base == Some(out.next_offset);
        if !whole && !all_zero(bytes.get(pos..).unwrap_or(&[])) {
            return Err(Damaged {
                prefix: Box::new(loaded),
                position: pos as u64,
                reason,
            });
        }
    }
    Ok(loaded)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Loads and checks both index files; `None` if either is missing or fails any check.
fn read_index_files(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    log_len: u64,
) -> Option<(IndexBinding, IndexEntries)> {
    let read = |kind| {
        let path = segment_path(dir, base, kind);
        storage
            .open(&path, OpenMode::Read)
            .and_then(|f| f.read_all())
            .ok()
    };
    let (bind, offsets) = index_format::decode_offset_index(&read(FileKind::Index)?, base).ok()?;
    let (time_bind, times) =
        index_format::decode_time_index(&read(FileKind::TimeIndex)?, base).ok()?;
    if bind != time_bind || bind.log_length != log_len {
        return None;
    }
    if offsets.iter().any(|e| u64::from(e.position) >= log_len) {
        return None;
    }
    Some((bind, IndexEntries { offsets, times }))
}

/// The tail facts of the valid batches a scan found.
pub fn tail_of(base: u64, out: &ScanOutcome, bytes: &[u8]) -> SegmentTail {
    let first_append_ms = BatchView::parse(bytes).map_or(-1, |(v, _)| v.header().append_timestamp);
    let tail = SegmentTail {
        next_offset: out.next_offset,
        max_timestamp: out.max_timestamp,
        first_append_ms: if out.batch_count == 0 {
            -1
        } else {
            first_append_ms
        },
        last_append_ms: out.last_batch.map_or(-1, |h| h.append_timestamp),
    };
    debug_assert!(tail.next_offset >= base);
    tail
}
