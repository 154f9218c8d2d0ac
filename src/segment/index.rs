//! The in-memory sparse offset and time index of one segment.
//!
//! Invariants (asserted in `push`):
//! * offset entries are strictly increasing in relative offset and in position;
//! * time entries are strictly increasing in timestamp and non-decreasing in relative offset;
//! * every entry points at the start of a batch inside the segment's valid bytes.
//!
//! The active segment's index lives only in memory (rebuilt by the recovery scan after a
//! crash); it is written to `.index`/`.timeindex` files when the segment is sealed or the log
//! closes cleanly, and loaded from them (checksum-verified) on open, or, for a sealed segment
//! of a cleanly closed log, on its first lookup (`Segment::ensure_index`).

use parking_lot::RwLock;

use crate::format::index::{OffsetEntry, TimeEntry};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
/// A segment's sparse index entries, in memory.
pub struct IndexEntries {
    /// Offset entries, ascending.
    pub offsets: Vec<OffsetEntry>,
    /// Time entries, ascending in timestamp and offset.
    pub times: Vec<TimeEntry>,
}

/// Builds index entries from a stream of batches, Kafka's rule: an entry is added for a batch
/// when more than `interval` bytes were appended since the previous entry.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    interval: u64,
    bytes_since_entry: u64,
    max_timestamp: i64,
    last_ts: Option<i64>,
}

impl IndexBuilder {
    /// A builder that adds an entry after more than `interval` bytes of batches.
    pub fn new(interval: u32) -> Self {
        IndexBuilder {
            interval: u64::from(interval),
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
            last_ts: None,
        }
    }

    /// Continues after `entries` (for a segment reopened for appends).
    pub fn resume(
        interval: u32,
        entries: &IndexEntries,
        bytes_since_entry: u64,
        max_timestamp: i64,
    ) -> Self {
        let last_ts = entries.times.last().map(|t| t.timestamp);
        IndexBuilder {
            interval: u64::from(interval),
            bytes_since_entry,
            max_timestamp,
            last_ts,
        }
    }

    /// Called for each batch in order; returns the entries to add for it.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        len: u32,
        max_timestamp: i64,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let mut out = (None, None);
        if self.bytes_since_entry >= self.interval {
            out.0 = Some(OffsetEntry {
                relative_offset,
                position,
            });
            if max_timestamp.max(self.max_timestamp) > self.last_indexed_ts() {
                out.1 = Some(TimeEntry {
                    timestamp: max_timestamp.max(self.max_timestamp),
                    relative_offset,
                });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(len);
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if let Some(t) = out.1 {
            self.last_ts = Some(t.timestamp);
        }
        out
    }

    fn last_indexed_ts(&self) -> i64 {
        self.last_ts.unwrap_or(i64::MIN)
    }
}

/// A segment's index, shared between the appender (which pushes) and readers (which look up).
#[derive(Debug, Default)]
pub struct SegmentIndex {
    entries: RwLock<IndexEntries>,
}

impl SegmentIndex {
    /// An index holding `entries`.
    pub fn new(entries: IndexEntries) -> Self {
        SegmentIndex {
            entries: RwLock::new(entries),
        }
    }

    /// Appends entries (either may be `None`); called by the single appender.
    pub fn push(&self, offset: Option<OffsetEntry>, time: Option<TimeEntry>) {
        if offset.is_none() && time.is_none() {
            return;
        }
        let mut e = self.entries.write();
        if let Some(o) = offset {
            if let Some(last) = e.offsets.last() {
                assert!(o.relative_offset > last.relative_offset && o.position > last.position);
            }
            e.offsets.push(o);
        }
        if let Some(t) = time {
            if let Some(last) = e.times.last() {
                assert!(t.timestamp > last.timestamp && t.relative_offset >= last.relative_offset);
            }
            e.times.push(t);
        }
    }

    /// Installs the entries of a deferred index on its first load. Invariant: nothing was
    /// pushed before (a deferred index belongs to a sealed segment, which nobody appends to).
    pub fn install(&self, entries: IndexEntries) {
        let mut e = self.entries.write();
        assert!(
            e.offsets.is_empty() && e.times.is_empty(),
            "a deferred index is installed into an empty one"
        );
        *e = entries;
    }

    /// Offset entries held.
    pub fn len(&self) -> usize {
        self.entries.read().offsets.len()
    }

    /// Whether no offset entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        let e = self.entries.read();
        let i = e
            .offsets
            .partition_point(|x| x.relative_offset <= relative_offset);
        i.checked_sub(1)
            .and_then(|i| e.offsets.get(i))
            .map_or(0, |x| x.position)
    }

    /// The relative offset to start scanning from for the first batch with a max timestamp at
    /// or after `timestamp`: every batch before it has a smaller max timestamp.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> u32 {
        let e = self.entries.read();
        let i = e.times.partition_point(|t| t.timestamp < timestamp);
        i.checked_sub(1)
            .and_then(|i| e.times.get(i))
            .map_or(0, |t| t.relative_offset)
    }

    /// The last offset entry (used to find the segment's tail cheaply).
    pub fn last_offset_entry(&self) -> Option<OffsetEntry> {
        self.entries.read().offsets.last().copied()
    }

    /// A copy of the entries (to write the index files).
    pub fn snapshot(&self) -> IndexEntries {
        self.entries.read().clone()
    }
}
