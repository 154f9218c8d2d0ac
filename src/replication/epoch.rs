//! The leader epoch cache: for every leader epoch whose batches are in the log, the offset of its
//! first batch (Kafka's `LeaderEpochFileCache`).
//!
//! Invariants (checked by [`LeaderEpochCache::check_invariants`]):
//! - every epoch is `>= 0`;
//! - entries are strictly increasing in epoch **and** in start offset (so every entry but the
//!   latest covers a non-empty offset range `[start, next.start)`);
//! - after `truncate_from_end(o)` no entry starts at or after `o`; after `truncate_from_start(o)`
//!   no entry starts before `o`.
//!
//! Only the latest entry may be empty (a leader records `(new_epoch, LEO)` before it writes).
//! Persisting is the caller's job: [`LeaderEpochCache::to_checkpoint`] gives the bytes of
//! `format::epoch_checkpoint`, to be written atomically after `assign` and before the first
//! batch of the new epoch is acknowledged.

use crate::format::epoch_checkpoint::{self, EpochStart};
use crate::format::DecodeError;
use crate::types::{LeaderEpoch, Offset};

use super::ReplicationError;

/// `epoch` began at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// The offset of the first batch written in that epoch.
    pub start_offset: Offset,
}

/// Ordered `epoch -> start offset`. See the module invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Invariant: strictly increasing in `epoch` and in `start_offset`; epochs >= 0.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache from stored entries; refuses entries that break the invariants.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<Self, ReplicationError> {
        for (i, e) in entries.iter().enumerate() {
            let ordered = i == 0
                || entries
                    .get(i - 1)
                    .is_some_and(|p| p.epoch < e.epoch && p.start_offset < e.start_offset);
            if e.epoch < 0 || !ordered {
                return Err(ReplicationError::InvalidEpochEntry {
                    epoch: e.epoch,
                    start_offset: e.start_offset,
                });
            }
        }
        Ok(LeaderEpochCache { entries })
    }

    /// Every entry, ascending by epoch (and start offset).
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest entry.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, `None` for an empty cache.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.latest().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`). Returns whether the cache
    /// changed.
    ///
    /// No-op when `epoch` is the latest epoch and `start_offset` is not before its start (later
    /// batches of the same epoch). Otherwise every entry with an epoch `>= epoch` or a start
    /// `>= start_offset` is removed from the tail before `(epoch, start_offset)` is added: a same
    /// epoch at a smaller offset replaces the entry, a higher epoch at the same offset replaces an
    /// epoch that never got data, and an older epoch wipes newer ones.
    pub fn assign(
        &mut self,
        epoch: LeaderEpoch,
        start_offset: Offset,
    ) -> Result<bool, ReplicationError> {
        if epoch < 0 {
            return Err(ReplicationError::InvalidEpochEntry {
                epoch,
                start_offset,
            });
        }
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch && start_offset >= latest.start_offset {
                return Ok(false);
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(true)
    }

    /// Kafka's `endOffsetFor`: `(largest epoch <= requested, start offset of the next higher
    /// epoch)`, or `(requested, log_end)` when `requested` is the latest epoch. `None` (Kafka's
    /// undefined `(-1, -1)`) when `requested < 0` or no epoch is higher than `requested` (the
    /// requester knows an epoch this log never saw). If every known epoch is higher, the answer
    /// is `(requested, start of the first epoch)`: nothing before that can be compared.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested < 0 {
            return None;
        }
        if self.latest_epoch() == Some(requested) {
            return Some((requested, log_end));
        }
        let higher = self.entries.iter().find(|e| e.epoch > requested)?;
        let floor = self.entries.iter().rev().find(|e| e.epoch <= requested);
        Some((floor.map_or(requested, |f| f.epoch), higher.start_offset))
    }

    /// Removes every entry that starts at or after `end_offset` (the log was truncated to end
    /// there). Kafka does this even when the log itself did not shrink, to drop an empty latest
    /// epoch that a former leader recorded before it wrote anything.
    pub fn truncate_from_end(&mut self, end_offset: Offset) {
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= end_offset)
        {
            self.entries.pop();
        }
    }

    /// The log now starts at `start_offset`: removes every entry starting at or before it and
    /// re-inserts the last removed epoch as starting at `start_offset`, so the epoch covering the
    /// new log start survives.
    pub fn truncate_from_start(&mut self, start_offset: Offset) {
        let removed = self
            .entries
            .iter()
            .take_while(|e| e.start_offset <= start_offset)
            .count();
        if removed == 0 {
            return;
        }
        let covering = self.entries.get(removed - 1).map(|e| e.epoch);
        self.entries.drain(..removed);
        if let Some(epoch) = covering {
            self.entries.insert(
                0,
                EpochEntry {
                    epoch,
                    start_offset,
                },
            );
        }
    }

    /// The epoch whose range holds `offset` (offsets past the log end map to the latest epoch);
    /// `None` before the first entry.
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Panics if a module invariant does not hold. For tests and debug assertions.
    pub fn check_invariants(&self) {
        for e in &self.entries {
            assert!(e.epoch >= 0, "negative epoch in {self:?}");
        }
        for w in self.entries.windows(2) {
            if let [a, b] = w {
                assert!(a.epoch < b.epoch, "epochs not increasing: {self:?}");
                assert!(
                    a.start_offset < b.start_offset,
                    "start offsets not increasing: {self:?}"
                );
            }
        }
    }

    /// The bytes of the checkpoint file (`format::epoch_checkpoint`).
    pub fn to_checkpoint(&self) -> Vec<u8> {
        let entries: Vec<EpochStart> = self
            .entries
            .iter()
            .map(|e| EpochStart {
                epoch: e.epoch,
                start_offset: e.start_offset.0,
            })
            .collect();
        epoch_checkpoint::encode(&entries)
    }

    /// A cache from checkpoint bytes (the codec already enforces the invariants).
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self, DecodeError> {
        let entries = epoch_checkpoint::decode(bytes)?
            .into_iter()
            .map(|e| EpochEntry {
                epoch: e.epoch,
                start_offset: Offset(e.start_offset),
            })
            .collect();
        Ok(LeaderEpochCache { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_entries(
            entries
                .iter()
                .map(|&(epoch, start)| EpochEntry {
                    epoch,
                    start_offset: Offset(start),
                })
                .collect(),
        )
        .unwrap()
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, u64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset.0))
            .collect()
    }

    #[test]
    fn assign_follows_kafka() {
        let mut c = LeaderEpochCache::new();
        assert!(c.assign(2, Offset(6)).unwrap());
        // Same epoch, later offset: no-op.
        assert!(!c.assign(2, Offset(10)).unwrap());
        // Same epoch, earlier offset: replaces.
        assert!(c.assign(2, Offset(5)).unwrap());
        assert_eq!(pairs(&c), [(2, 5)]);
        assert!(c.assign(3, Offset(8)).unwrap());
        // Higher epoch at the same offset replaces the epoch without data.
        assert!(c.assign(4, Offset(8)).unwrap());
        assert_eq!(pairs(&c), [(2, 5), (4, 8)]);
        // An older epoch wipes newer ones.
        assert!(c.assign(1, Offset(9)).unwrap());
        assert_eq!(pairs(&c), [(1, 9)]);
        // A newer epoch at an older offset wipes entries starting at or after it.
        let mut c = cache(&[(1, 0), (2, 5), (3, 9)]);
        c.assign(4, Offset(5)).unwrap();
        assert_eq!(pairs(&c), [(1, 0), (4, 5)]);
        assert!(c.assign(-1, Offset(0)).is_err());
        c.check_invariants();
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 5), (6, 9)]);
        let leo = Offset(12);
        assert_eq!(c.end_offset_for(6, leo), Some((6, leo)));
        assert_eq!(c.end_offset_for(3, leo), Some((3, Offset(9))));
        // Epoch 4 and 5 unknown here: the largest epoch below, ending where 6 starts.
        assert_eq!(c.end_offset_for(5, leo), Some((3, Offset(9))));
        assert_eq!(c.end_offset_for(2, leo), Some((1, Offset(5))));
        // Below every epoch: the requested epoch, ending at the first start.
        assert_eq!(c.end_offset_for(0, leo), Some((0, Offset(0))));
        // Above every epoch, or undefined.
        assert_eq!(c.end_offset_for(7, leo), None);
        assert_eq!(c.end_offset_for(-1, leo), None);
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, leo), None);
    }

    #[test]
    fn truncation_and_lookup() {
        let mut c = cache(&[(1, 0), (3, 5), (6, 9)]);
        assert_eq!(c.epoch_for_offset(Offset(4)), Some(1));
        assert_eq!(c.epoch_for_offset(Offset(5)), Some(3));
        assert_eq!(c.epoch_for_offset(Offset(100)), Some(6));
        c.truncate_from_end(Offset(9));
        assert_eq!(pairs(&c), [(1, 0), (3, 5)]);
        c.truncate_from_end(Offset(6));
        assert_eq!(pairs(&c), [(1, 0), (3, 5)]);
        c.truncate_from_start(Offset(7));
        assert_eq!(pairs(&c), [(3, 7)]);
        assert_eq!(c.epoch_for_offset(Offset(6)), None);
        c.truncate_from_start(Offset(2));
        assert_eq!(pairs(&c), [(3, 7)]);
        c.truncate_from_start(Offset(7));
        assert_eq!(pairs(&c), [(3, 7)]);
        c.truncate_from_end(Offset(0));
        assert!(c.is_empty());
    }

    #[test]
    fn from_entries_and_checkpoint() {
        assert!(LeaderEpochCache::from_entries(vec![
            EpochEntry {
                epoch: 2,
                start_offset: Offset(3)
            },
            EpochEntry {
                epoch: 2,
                start_offset: Offset(4)
            },
        ])
        .is_err());
        let c = cache(&[(0, 0), (3, 5)]);
        assert_eq!(
            LeaderEpochCache::from_checkpoint(&c.to_checkpoint()).unwrap(),
            c
        );
    }
}
