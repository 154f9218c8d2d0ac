//! Reads: zero-copy views of whole batches below a bound, and lookups by timestamp.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Log;
use crate::error::{Error, Result};
use crate::format::batch::BatchView;
use crate::format::DecodeError;
use crate::segment::Segment;
use crate::types::Offset;

/// Whole batches from one segment, borrowed from its mapping. Holding a `Fetch` keeps the
/// segment mapped even if retention or truncation deletes it meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    segment: Option<Arc<Segment>>,
    start: usize,
    end: usize,
    /// The offset after the last batch (found by `Segment::locate` as it sized the range).
    next_offset: u64,
}

/// `BatchView::parse` or `BatchView::parse_unverified`.
type ParseBatch<'a> = fn(&'a [u8]) -> std::result::Result<(BatchView<'a>, &'a [u8]), DecodeError>;

impl Fetch {
    /// The raw bytes of the batches, exactly as stored.
    pub fn bytes(&self) -> &[u8] {
        self.segment
            .as_ref()
            .and_then(|s| s.map().bytes(self.start, self.end))
            .unwrap_or(&[])
    }

    /// Whether the fetch holds no batch.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The offset after the last batch of the fetch (`None` if empty), where the next read
    /// continues. Known from the read that made the fetch: no batch is walked again.
    pub fn end_offset(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.next_offset)
    }

    /// The batches, each checksum-verified as it is yielded. A checksum failure is an
    /// `Error::Corrupt` naming the file and byte position, and ends the iteration.
    pub fn batches(&self) -> impl Iterator<Item = Result<BatchView<'_>>> + '_ {
        self.batches_with(BatchView::parse)
    }

    /// The batches with their headers and lengths checked but not their checksums, for a
    /// reader that checks them itself: a leader serving a follower, which verifies every batch
    /// before appending it (`RecordBatch::from_bytes`), so a batch is hashed once per copy.
    pub fn batches_unverified(&self) -> impl Iterator<Item = Result<BatchView<'_>>> + '_ {
        self.batches_with(BatchView::parse_unverified)
    }

    fn batches_with<'a>(
        &'a self,
        parse: ParseBatch<'a>,
    ) -> impl Iterator<Item = Result<BatchView<'a>>> + 'a {
        let mut rest = self.bytes();
        let mut pos = self.start;
        let path = self.segment.as_ref().map(|s| s.path().to_path_buf());
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            match parse(rest) {
                Ok((view, tail)) => {
                    rest = tail;
                    pos += view.len();
                    Some(Ok(view))
                }
                Err(reason) => {
                    rest = &[];
                    let path = path.clone().unwrap_or_default();
                    Some(Err(Error::Corrupt {
                        path,
                        position: pos as u64,
                        reason,
                    }))
                }
            }
        })
    }
}

impl Log {
    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (the first batch is returned whole even if larger), below the log end offset.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Fetch> {
        self.read_bounded(offset, max_bytes, Offset(u64::MAX))
    }

    /// Like [`Log::read`], returning only batches that start below `limit` (a high-water mark).
    pub fn read_bounded(&self, offset: Offset, max_bytes: usize, limit: Offset) -> Result<Fetch> {
        let start = self.inner.log_start.load(Ordering::Acquire);
        let end = self.inner.log_end.load(Ordering::Acquire);
        if offset.0 < start || offset.0 > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: Offset(start),
                log_end: Offset(end),
            });
        }
        let limit = limit.0.min(end);
        if offset.0 >= limit {
            return Ok(Fetch::default());
        }
        let segments = self.segments();
        let i = segments.partition_point(|s| s.base_offset() <= offset.0);
        let Some(seg) = i.checked_sub(1).and_then(|i| segments.get(i)) else {
            // Retention deleted the segments below since `start` was loaded (fuzz finding 17):
            // it stores the new start before it swaps the list, so a load after the list sees
            // it, and the error names the start to resume from, not a stale one at or below
            // `offset`.
            let start = self.inner.log_start.load(Ordering::Acquire);
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: Offset(start),
                log_end: Offset(end),
            });
        };
        match seg.locate(offset.0, max_bytes, limit)? {
            Some((s, e, next_offset)) => Ok(Fetch {
                segment: Some(Arc::clone(seg)),
                start: s,
                end: e,
                next_offset,
            }),
            None => Ok(Fetch::default()),
        }
    }

    /// The first offset (at or after the log start) of a record whose timestamp is at or after
    /// `timestamp`, or `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>> {
        let start = self.inner.log_start.load(Ordering::Acquire);
        let end = self.inner.log_end.load(Ordering::Acquire);
        for seg in self.segments().iter().filter(|s| s.next_offset() > start) {
            if let Some(o) = seg.find_timestamp(timestamp, end)? {
                return Ok(Some(Offset(o.max(start))));
            }
        }
        Ok(None)
    }
}
