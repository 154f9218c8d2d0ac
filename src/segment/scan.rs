//! The recovery scan: walks a segment's bytes batch by batch, verifying each checksum and the
//! offset chain, and rebuilds the sparse index on the way. Pure: bytes in, outcome out, so the
//! `recover_segment` fuzz target and the crash tests drive exactly the code recovery runs.
//!
//! The scan never decides whether a stop is a torn tail or corruption: that depends on whether
//! the stop lies in synced data, which only the caller knows (docs/recovery.md).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use crate::format::batch::{BatchHeader, BatchView};
use crate::format::DecodeError;
use crate::segment::index::{IndexBuilder, IndexEntries};

/// What a scan found.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    /// Bytes of valid, contiguous batches from position 0.
    pub valid_len: usize,
    /// The offset after the last valid batch (the segment's base offset if none).
    pub next_offset: u64,
    /// Valid batches found.
    pub batch_count: u64,
    /// The index rebuilt from the valid batches.
    pub entries: IndexEntries,
    /// Where the index builder stands after the last batch (to continue appending).
    pub builder: IndexBuilder,
    /// Header of the last valid batch.
    pub last_batch: Option<BatchHeader>,
    /// Largest client max timestamp of the valid batches.
    pub max_timestamp: i64,
    /// Why the scan stopped before the end of the bytes, and where; `None` if it consumed them.
    pub stop: Option<(usize, DecodeError)>,
}

impl ScanOutcome {
    /// True when the scan stopped at an all-zero header (preallocated space): the normal end of
    /// an active segment, and no damage when it lies past the synced point.
    pub fn stopped_at_zeroes(&self) -> bool {
        matches!(self.stop, Some((_, DecodeError::Zeroes)))
    }
}

/// Scans `bytes` (a segment's data from position 0) whose first batch must start at
/// `base_offset`. `on_batch` sees every valid batch in order.
pub fn scan_segment<'a>(
    bytes: &'a [u8],
    base_offset: u64,
    index_interval: u32,
    mut on_batch: impl FnMut(usize, &BatchView<'a>),
) -> ScanOutcome {
    let mut out = ScanOutcome {
        valid_len: 0,
        next_offset: base_offset,
        batch_count: 0,
        entries: IndexEntries::default(),
        builder: IndexBuilder::new(index_interval),
        last_batch: None,
        max_timestamp: i64::MIN,
        stop: None,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or(&[]);
        let view = match BatchView::parse(rest) {
            Ok((view, _)) => view,
            Err(e) => {
                out.stop = Some((pos, e));
                break;
            }
        };
        let h = *view.header();
        if h.base_offset != out.next_offset {
            let e = DecodeError::BadField {
                field: "base_offset",
                value: h.base_offset as i64,
            };
            out.stop = Some((pos, e));
            break;
        }
        let Ok(relative) = u32::try_from(h.last_offset() - base_offset) else {
            let e = DecodeError::BadField {
                field: "relative offset",
                value: h.last_offset() as i64,
            };
            out.stop = Some((pos, e));
            break;
        };
        let Ok(position) = u32::try_from(pos) else {
            out.stop = Some((pos, DecodeError::BadLength { length: pos as u64 }));
            break;
        };
        let first_relative = relative - h.last_offset_delta as u32;
        let (o, t) =
            out.builder
                .on_batch(first_relative, position, h.batch_length, h.max_timestamp);
        out.entries.offsets.extend(o);
        out.entries.times.extend(t);
        on_batch(pos, &view);
        pos += view.len();
        out.valid_len = pos;
        out.next_offset = h.next_offset();
        out.batch_count += 1;
        out.max_timestamp = out.max_timestamp.max(h.max_timestamp);
        out.last_batch = Some(h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::{BatchBuilder, Stamp};

    fn segment_bytes(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = 10u64;
        for i in 0..n {
            let mut b = BatchBuilder::new();
            for r in 0..=(i % 3) {
                b.push(1000 + i as i64, None, Some(format!("v{i}-{r}").as_bytes()));
            }
            let batch = b.build().unwrap();
            let stamp = Stamp {
                base_offset: next,
                leader_epoch: 0,
                append_timestamp: 5,
            };
            out.extend_from_slice(batch.stamped(stamp).as_bytes());
            next += batch.record_count() as u64;
        }
        out
    }

    #[test]
    fn scan_reads_every_batch_and_builds_the_index() {
        let bytes = segment_bytes(20);
        let out = scan_segment(&bytes, 10, 1, |_, _| {});
        assert!(out.stop.is_none());
        assert_eq!(out.valid_len, bytes.len());
        assert_eq!(out.batch_count, 20);
        assert_eq!(
            out.entries.offsets.len(),
            19,
            "every batch but the first is indexed"
        );
    }

    #[test]
    fn scan_stops_at_every_torn_tail_and_zero_fill() {
        let bytes = segment_bytes(6);
        let full = scan_segment(&bytes, 10, 1, |_, _| {});
        let mut boundaries = vec![0usize];
        let mut acc = Vec::new();
        scan_segment(&bytes, 10, 1, |pos, v| acc.push(pos + v.len()));
        boundaries.extend(acc);
        for cut in 0..=bytes.len() {
            let mut torn = bytes[..cut].to_vec();
            torn.resize(bytes.len() + 200, 0);
            let out = scan_segment(&torn, 10, 1, |_, _| {});
            // The longest run of whole batches the torn copy still holds intact (a batch whose
            // last bytes are zeros survives a cut inside those zeros).
            let expect = *boundaries
                .iter()
                .filter(|&&b| torn[..b] == bytes[..b])
                .max()
                .unwrap();
            assert_eq!(out.valid_len, expect, "cut at {cut}");
            assert!(out.stop.is_some());
        }
        assert_eq!(full.valid_len, bytes.len());
    }

    #[test]
    fn wrong_base_offset_stops_the_scan() {
        let bytes = segment_bytes(3);
        let out = scan_segment(&bytes, 11, 1, |_, _| {});
        assert_eq!(out.valid_len, 0);
        assert!(matches!(out.stop, Some((0, DecodeError::BadField { .. }))));
    }
}
