//! The `log-start-offset` checkpoint: the log start offset, and the transactions open at the
//! first segment's base that began below it (docs/format.md, docs/transactions.md).
//!
//! Why the second part lives here: once retention deletes the segments below the first one,
//! a transaction begun in them and still open is known only from what outlived them. Producer
//! snapshots rotate away, and the first segment's own `.txnindex` is written only when it is
//! sealed or closed (an active segment has none, and truncation removes the file of the
//! segment it copies). This file is replaced atomically before any segment is deleted, and
//! nothing but a change of the first segment's base changes the set (it depends only on the
//! history below that base), so it is the one durable witness that is always there.
//!
//! Values: `[log_start]` (written before the witness existed, or when no segment is known), or
//! `[log_start, first_base, first_offset_0, producer_id_0, first_offset_1, producer_id_1, ...]`
//! with the open transactions ascending by first offset, every one below `first_base`.

use std::path::Path;

use super::checkpoints::{self, LOG_START_FILE};
use crate::error::Result;
use crate::format::checkpoint::CheckpointKind;
use crate::format::txn_index::OpenTxns;
use crate::io::Storage;
use crate::types::ProducerId;

/// The first segment's base and the transactions open there that began below it.
pub type FirstOpen = (u64, OpenTxns);

/// What the `log-start-offset` file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStartCheckpoint {
    /// The log start offset.
    pub log_start: u64,
    /// The first segment's base and the transactions open there that began below it.
    pub first_open: Option<FirstOpen>,
}

impl LogStartCheckpoint {
    /// A checkpoint of `log_start` with the first segment's base and what is open there
    /// (`open`: a segment's `open_at_base`, which holds only transactions begun below it).
    pub fn new(log_start: u64, first_base: u64, open: &OpenTxns) -> LogStartCheckpoint {
        debug_assert!(open.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(open.iter().all(|(first, _)| *first < first_base));
        // What `from_values` accepts, whatever the caller's set holds.
        let mut open: OpenTxns = open
            .iter()
            .filter(|(first, _)| *first < first_base)
            .copied()
            .collect();
        open.sort_unstable();
        open.dedup_by_key(|(first, _)| *first);
        LogStartCheckpoint {
            log_start,
            first_open: Some((first_base, open)),
        }
    }

    /// A checkpoint of `log_start` with `first` as the first segment: its base and the
    /// transactions open there.
    pub(super) fn at_segment(
        log_start: u64,
        first: &crate::segment::Segment,
    ) -> LogStartCheckpoint {
        Self::new(log_start, first.base_offset(), &first.txns().open_at_base)
    }

    /// The checkpoint's values (module doc).
    pub fn values(&self) -> Vec<u64> {
        let mut v = vec![self.log_start];
        if let Some((base, open)) = &self.first_open {
            v.push(*base);
            for (first, pid) in open {
                v.push(*first);
                v.push(pid.0 as u64);
            }
        }
        v
    }

    /// Reads the values back; a layout the module doc does not allow is an error (the file is
    /// then damaged, as a bad checksum would make it).
    pub fn from_values(v: &[u64]) -> std::result::Result<Self, String> {
        let (&log_start, rest) = v.split_first().ok_or("no value")?;
        let Some((&base, pairs)) = rest.split_first() else {
            return Ok(LogStartCheckpoint {
                log_start,
                first_open: None,
            });
        };
        if pairs.len() % 2 != 0 {
            return Err(format!(
                "{} values: an open transaction without its producer",
                v.len()
            ));
        }
        let open: OpenTxns = pairs
            .chunks_exact(2)
            .map(|p| (p[0], ProducerId(p[1] as i64)))
            .collect();
        if open.iter().any(|(first, _)| *first >= base) {
            return Err(format!(
                "an open transaction at or above the first segment's base {base}"
            ));
        }
        if !open.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("open transactions not ascending by first offset".into());
        }
        Ok(LogStartCheckpoint {
            log_start,
            first_open: Some((base, open)),
        })
    }
}

/// Replaces the `log-start-offset` file of `dir` atomically (temp, fdatasync, rename,
/// directory fsync).
pub fn write(storage: &dyn Storage, dir: &Path, c: &LogStartCheckpoint) -> Result<()> {
    checkpoints::write_values(
        storage,
        &dir.join(LOG_START_FILE),
        CheckpointKind::LogStart,
        &c.values(),
    )
}

/// After a failed [`write`]: whether the disk may no longer hold the log start `served` (the
/// one the live log still serves). A replace that failed after its rename (at the directory
/// fsync) leaves the new file in place without a durable directory entry, so a crash may bring
/// back either file: the outcome is uncertain, and the caller must poison the log so that the
/// next open, not the live log, decides. A file that cannot be read counts as changed; a
/// missing one holds 0.
pub fn changed_on_disk(storage: &dyn Storage, dir: &Path, served: u64) -> bool {
    let on_disk =
        checkpoints::read_values(storage, &dir.join(LOG_START_FILE), CheckpointKind::LogStart);
    match on_disk {
        Ok(Some(v)) => LogStartCheckpoint::from_values(&v).map_or(true, |c| c.log_start != served),
        Ok(None) => served != 0,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_layouts_are_refused() {
        let with = LogStartCheckpoint {
            log_start: 90,
            first_open: Some((88, vec![(40, ProducerId(3)), (78, ProducerId(1))])),
        };
        for c in [with.clone(), LogStartCheckpoint::default()] {
            assert_eq!(LogStartCheckpoint::from_values(&c.values()), Ok(c));
        }
        assert!(LogStartCheckpoint::from_values(&[]).is_err());
        assert!(LogStartCheckpoint::from_values(&[90, 88, 40]).is_err());
        assert!(LogStartCheckpoint::from_values(&[90, 88, 88, 1]).is_err());
        assert!(LogStartCheckpoint::from_values(&[90, 88, 50, 1, 40, 2]).is_err());
        assert_eq!(
            LogStartCheckpoint::from_values(&[90, 88])
                .unwrap()
                .first_open,
            Some((88, vec![]))
        );
    }
}
