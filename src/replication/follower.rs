//! One partition on a follower: what to fetch, and what a fetch response means.
//! Kafka's `AbstractFetcherThread` with truncate-on-fetch (KIP-101 and KIP-279).
//!
//! Invariants (checked by [`FollowerState::check_invariants`]):
//! - `log_start <= high_watermark <= log_end`;
//! - the epoch cache satisfies its own invariants and no entry starts after `log_end`;
//! - the follower truncates only to a point computed from leader epochs
//!   ([`offset_truncation`]), never merely to its own HW; a response whose leader epoch is not the
//!   one being followed changes nothing;
//! - appended batches start exactly at `log_end` and carry epochs between the log's latest epoch
//!   and the leader's epoch.
//!
//! The state assumes the driver carries out each returned decision on the log (append, truncate,
//! move the log start). If the driver fails to, it must rebuild the state from the log with
//! [`FollowerState::new`].

use crate::observe::ReplicationGauges;
use crate::types::{LeaderEpoch, Offset};

use super::epoch::LeaderEpochCache;
use super::messages::{EpochEndOffset, FetchRequest, FetchResponse, FetchedBatch};
use super::{check_leader_epoch, Incarnation, ReplicaId, ReplicationError};

/// Where to truncate, and whether the divergence point has been reached (`done == false`: the
/// leader named an epoch this log lacks; fetch again with the new latest epoch, KIP-279).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncationPoint {
    /// The offset to truncate the log to.
    pub offset: Offset,
    /// Whether this is the divergence point (`false`: fetch again with the new latest epoch).
    pub done: bool,
}

/// Kafka's `getOffsetTruncationState` for a log with `cache` ending at `log_end`, given the
/// leader's answer for the follower's last epoch:
/// - `leader == None` (no epoch information): truncate to `fetch_offset`; done.
/// - the log's own end for the leader's epoch has the same epoch: truncate to
///   `min(leader end, own end, log_end)`; done.
/// - the log lacks that epoch: truncate to `min(own end of the largest smaller epoch, log_end)`,
///   not done.
/// - the log has no end for that epoch (it knows no higher epoch and it is not its latest):
///   `min(leader end, log_end)`; done.
pub fn offset_truncation(
    cache: &LeaderEpochCache,
    log_end: Offset,
    fetch_offset: Offset,
    leader: Option<EpochEndOffset>,
) -> TruncationPoint {
    let Some(leader) = leader else {
        return TruncationPoint {
            offset: fetch_offset,
            done: true,
        };
    };
    match cache.end_offset_for(leader.epoch, log_end) {
        Some((epoch, end)) if epoch == leader.epoch => TruncationPoint {
            offset: leader.end_offset.min(end).min(log_end),
            done: true,
        },
        Some((_, end)) => TruncationPoint {
            offset: end.min(log_end),
            done: false,
        },
        None => TruncationPoint {
            offset: leader.end_offset.min(log_end),
            done: true,
        },
    }
}

/// What the driver must do with a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerDecision {
    /// Append `batches` (starting at `from`, the old log end; may be empty) as follower, then set
    /// the HW and the log start (delete below it) to the given values.
    Append {
        /// The follower's log end before the append; the first batch starts here.
        from: Offset,
        /// The batches to append, contiguous.
        batches: Vec<FetchedBatch>,
        /// The leader's high watermark, clamped to the follower's log.
        high_watermark: Offset,
        /// The leader's log start; delete below it.
        log_start: Offset,
    },
    /// Truncate the log (and its producer state and epoch cache) to end at `to`, then fetch
    /// again. `to` may equal the log end (only the epoch cache changes).
    Truncate {
        /// The new log end.
        to: Offset,
        /// Whether this is the divergence point (`false`: fetch again with the new latest epoch).
        done: bool,
    },
    /// The leader's log ends before ours and no epoch information helps (unclean election):
    /// truncate to `to`, losing records the leader does not have.
    TruncateUnclean {
        /// The new log end (the leader's).
        to: Offset,
    },
    /// The leader's log starts after ours ends: delete everything and restart at `start_at`.
    TruncateFullyAndStartAt {
        /// The leader's log start: the new, empty log starts here.
        start_at: Offset,
    },
    /// Nothing to do; fetch again (after a backoff).
    Retry,
}

/// One partition on a follower. See the module invariants.
#[derive(Debug, Clone)]
pub struct FollowerState {
    replica: ReplicaId,
    incarnation: Incarnation,
    /// The leader epoch being followed; responses from any other epoch are discarded.
    leader_epoch: LeaderEpoch,
    log_start: Offset,
    /// The next offset to fetch. Invariant: `>= high_watermark`.
    log_end: Offset,
    /// Invariant: `log_start <= high_watermark <= log_end`.
    high_watermark: Offset,
    /// Invariant: no entry starts after `log_end`.
    epoch_cache: LeaderEpochCache,
    /// Where the HW is reported; none until the driver names the log
    /// ([`FollowerState::with_gauges`]).
    gauges: Option<ReplicationGauges>,
}

impl FollowerState {
    /// A follower of `leader_epoch` over a log `[log_start, log_end)` with its epoch cache. The
    /// HW is clamped to `[log_start, log_end]`; cache entries past `log_end` are dropped.
    pub fn new(
        replica: ReplicaId,
        incarnation: Incarnation,
        leader_epoch: LeaderEpoch,
        log_start: Offset,
        log_end: Offset,
        high_watermark: Offset,
        mut epoch_cache: LeaderEpochCache,
    ) -> Self {
        let log_start = log_start.min(log_end);
        // Kafka keeps an entry starting exactly at the log end (an epoch without data yet).
        if let Some(next) = log_end.0.checked_add(1) {
            epoch_cache.truncate_from_end(Offset(next));
        }
        FollowerState {
            replica,
            incarnation,
            leader_epoch,
            log_start,
            log_end,
            high_watermark: high_watermark.clamp(log_start, log_end),
            epoch_cache,
            gauges: None,
        }
    }

    /// Reports this follower's HW to `gauges` from now on (the current one at once), labelled
    /// with its log.
    pub fn with_gauges(mut self, gauges: ReplicationGauges) -> Self {
        gauges.set_high_watermark(self.high_watermark.0);
        self.gauges = Some(gauges);
        self
    }

    /// This follower's replica id.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }
    /// The leader epoch it follows in.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }
    /// Its log's first offset.
    pub fn log_start(&self) -> Offset {
        self.log_start
    }
    /// Its log's end offset.
    pub fn log_end(&self) -> Offset {
        self.log_end
    }
    /// The high watermark learned from the leader.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }
    /// Its log's leader-epoch cache.
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epoch_cache
    }

    /// A new leader (epoch) to follow; older epochs are ignored. Keeps the log: divergence is
    /// found by the next fetch.
    pub fn on_new_leader_epoch(&mut self, leader_epoch: LeaderEpoch) -> bool {
        if leader_epoch <= self.leader_epoch {
            return false;
        }
        tracing::info!(
            replica = self.replica.0,
            from = self.leader_epoch,
            to = leader_epoch,
            "leader epoch changed"
        );
        self.leader_epoch = leader_epoch;
        true
    }

    /// The next fetch: from the log end, naming the epoch of the last batch.
    pub fn fetch_request(&self, max_bytes: u32) -> FetchRequest {
        FetchRequest {
            replica: self.replica,
            incarnation: self.incarnation,
            fetch_offset: self.log_end,
            last_fetched_epoch: self.epoch_cache.latest_epoch(),
            current_leader_epoch: self.leader_epoch,
            max_bytes,
        }
    }

    fn truncate(&mut self, to: Offset) {
        // Always truncate the cache, even when `to == log_end` (an empty latest epoch).
        self.epoch_cache.truncate_from_end(to);
        if to < self.log_end {
            self.log_end = to;
            self.high_watermark = self.high_watermark.min(to);
            self.log_start = self.log_start.min(to);
        }
    }

    /// Applies a fetch response and says what the driver must do.
    ///
    /// A response from another leader epoch is an error and changes nothing. A diverging epoch
    /// leads to `Truncate` (data in the response is ignored); out-of-range to an unclean
    /// truncation, a full restart at the leader's log start, or a retry; batches to `Append`,
    /// with HW := min(leader HW, new log end).
    pub fn on_fetch_response(
        &mut self,
        resp: FetchResponse,
    ) -> Result<FollowerDecision, ReplicationError> {
        check_leader_epoch(resp.leader_epoch, self.leader_epoch)?;
        if let Some(div) = resp.diverging {
            let point = offset_truncation(&self.epoch_cache, self.log_end, self.log_end, Some(div));
            self.truncate(point.offset);
            return Ok(FollowerDecision::Truncate {
                to: point.offset,
                done: point.done,
            });
        }
        if resp.out_of_range {
            if resp.log_end < self.log_end {
                self.truncate(resp.log_end);
                return Ok(FollowerDecision::TruncateUnclean { to: resp.log_end });
            }
            if resp.log_start > self.log_end {
                self.epoch_cache = LeaderEpochCache::new();
                self.log_start = resp.log_start;
                self.log_end = resp.log_start;
                self.high_watermark = resp.log_start;
                return Ok(FollowerDecision::TruncateFullyAndStartAt {
                    start_at: resp.log_start,
                });
            }
            return Ok(FollowerDecision::Retry);
        }
        // Validate everything before changing anything.
        let mut next = self.log_end;
        let mut last_epoch = self.epoch_cache.latest_epoch().unwrap_or(0);
        for b in &resp.batches {
            if b.base_offset != next || b.last_offset < b.base_offset {
                return Err(ReplicationError::UnexpectedAppendOffset {
                    expected: next,
                    actual: b.base_offset,
                });
            }
            if b.leader_epoch < last_epoch || b.leader_epoch > self.leader_epoch {
                return Err(ReplicationError::BadBatchEpoch {
                    base_offset: b.base_offset,
                    epoch: b.leader_epoch,
                });
            }
            last_epoch = b.leader_epoch;
            next = b.last_offset.plus(1);
        }
        let from = self.log_end;
        for b in &resp.batches {
            self.epoch_cache.assign(b.leader_epoch, b.base_offset)?;
        }
        self.log_end = next;
        let log_start = self.log_start.max(resp.log_start.min(next));
        if log_start > self.log_start {
            self.epoch_cache.truncate_from_start(log_start);
            self.log_start = log_start;
        }
        let hw = resp.high_watermark.min(next).max(self.log_start);
        if hw != self.high_watermark {
            tracing::debug!(
                replica = self.replica.0,
                high_watermark = hw.0,
                "HW advanced"
            );
            if let Some(g) = &self.gauges {
                g.set_high_watermark(hw.0);
            }
        }
        self.high_watermark = hw;
        Ok(FollowerDecision::Append {
            from,
            batches: resp.batches,
            high_watermark: self.high_watermark,
            log_start: self.log_start,
        })
    }

    /// Panics if a module invariant does not hold.
    pub fn check_invariants(&self) {
        assert!(self.log_start <= self.high_watermark, "{self:?}");
        assert!(self.high_watermark <= self.log_end, "{self:?}");
        self.epoch_cache.check_invariants();
        if let Some(latest) = self.epoch_cache.latest() {
            assert!(latest.start_offset <= self.log_end, "{self:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::epoch::EpochEntry;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_entries(
            entries
                .iter()
                .map(|&(epoch, s)| EpochEntry {
                    epoch,
                    start_offset: Offset(s),
                })
                .collect(),
        )
        .unwrap()
    }

    fn div(epoch: i32, end: u64) -> Option<EpochEndOffset> {
        Some(EpochEndOffset {
            epoch,
            end_offset: Offset(end),
        })
    }

    #[test]
    fn truncation_rules() {
        let c = cache(&[(1, 0), (2, 5)]);
        let leo = Offset(8);
        assert_eq!(
            offset_truncation(&c, leo, Offset(3), None),
            TruncationPoint {
                offset: Offset(3),
                done: true
            }
        );
        // Same epoch: the smaller end.
        assert_eq!(offset_truncation(&c, leo, leo, div(2, 6)).offset, Offset(6));
        assert_eq!(offset_truncation(&c, leo, leo, div(1, 7)).offset, Offset(5));
        // The leader names epoch 3... which this log lacks between 2 and 4: own end of 2 = LEO.
        let c2 = cache(&[(1, 0), (4, 5)]);
        assert_eq!(
            offset_truncation(&c2, leo, leo, div(2, 6)),
            TruncationPoint {
                offset: Offset(5),
                done: false
            }
        );
        // No epoch above the leader's: the leader's end.
        assert_eq!(offset_truncation(&c, leo, leo, div(7, 4)).offset, Offset(4));
    }

    fn resp(epoch: i32, hw: u64, batches: &[(u64, i32)]) -> FetchResponse {
        FetchResponse {
            leader_epoch: epoch,
            high_watermark: Offset(hw),
            log_start: Offset(0),
            log_end: Offset(100),
            diverging: None,
            out_of_range: false,
            batches: batches
                .iter()
                .map(|&(o, e)| FetchedBatch {
                    base_offset: Offset(o),
                    last_offset: Offset(o),
                    leader_epoch: e,
                    bytes: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn append_sets_hw_to_min_of_leader_hw_and_own_end() {
        let mut f = FollowerState::new(
            ReplicaId(2),
            1,
            3,
            Offset(0),
            Offset(2),
            Offset(1),
            cache(&[(1, 0)]),
        );
        let d = f.on_fetch_response(resp(3, 10, &[(2, 1), (3, 3)])).unwrap();
        assert!(matches!(
            d,
            FollowerDecision::Append {
                from: Offset(2),
                high_watermark: Offset(4),
                ..
            }
        ));
        assert_eq!(f.epoch_cache().latest_epoch(), Some(3));
        assert!(f.on_fetch_response(resp(3, 10, &[(5, 3)])).is_err(), "gap");
        assert!(
            f.on_fetch_response(resp(3, 10, &[(4, 2)])).is_err(),
            "older epoch"
        );
        assert!(
            f.on_fetch_response(resp(2, 10, &[])).is_err(),
            "stale response"
        );
        assert_eq!(f.log_end(), Offset(4));
        f.check_invariants();
    }
}
