//! One partition on its leader: follower progress, high-water mark (HW), ISR and acks=all.
//! Kafka's `Partition.scala` / `Replica.scala` (`maybeIncrementLeaderHW`, ISR expand and shrink,
//! `DelayedProduce`, `readRecords`).
//!
//! Invariants (checked by [`LeaderState::check_invariants`]):
//! - `log_start <= high_watermark <= log_end`;
//! - the HW never decreases while this state exists (one leader epoch); it only moves in
//!   [`LeaderState::maybe_advance_hw`], to the minimum log end offset over the leader and the
//!   maximal ISR, and not at all while the committed ISR is below the effective min ISR;
//! - the leader is in the committed ISR; the ISR is a sorted subset of the replicas;
//! - the maximal ISR is the committed ISR, plus the proposed members while an expansion is
//!   pending (a pending shrink is not assumed to succeed); at most one change is pending;
//! - the epoch cache's latest entry is `(leader_epoch, leader_epoch_start_offset)` and
//!   `leader_epoch_start_offset <= log_end`;
//! - a follower's known log end offset is `<= log_end` (a fetch beyond it is refused);
//! - a follower state is changed only by a fetch that does not diverge, except that a follower
//!   the controller removes from the ISR on its own (it failed) loses its fetch times, so only a
//!   fresh fetch makes it eligible again and a dead follower is never named in an expansion.
//!
//! Nothing here waits: the driver calls [`LeaderState::maybe_expand_isr`] after fetches and
//! [`LeaderState::maybe_shrink_isr`] every `replica_lag_time_max_ms / 2`, sends the proposals to
//! the controller and reports its answer with [`LeaderState::on_isr_committed`] or
//! [`LeaderState::on_isr_rejected`].

use std::collections::BTreeMap;

use crate::observe::ReplicationGauges;
use crate::types::{LeaderEpoch, Offset};

use super::epoch::LeaderEpochCache;
use super::messages::{
    AlterIsrRequest, EpochEndOffset, FetchRequest, FetchResponse, FetchedBatch, IsrMember,
};
use super::{check_leader_epoch, Incarnation, PartitionEpoch, ReplicaId, ReplicationError};

/// Settings of the leader role (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// `min.insync.replicas`; the effective value is capped at the replication factor.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: an ISR follower not caught up within this long is removed.
    pub replica_lag_time_max_ms: u64,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// What the leader knows about one follower (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The fetch offset of its last non-diverging fetch; `None` until it fetched in this epoch.
    pub log_end_offset: Option<Offset>,
    /// When it last fetched (ms, the driver's clock); `None` until it fetched in this epoch.
    pub last_fetch_time_ms: Option<u64>,
    /// The leader's log end offset when that fetch was served.
    pub last_fetch_leader_log_end: Option<Offset>,
    /// Last time it was known to have everything the leader had (Kafka's rules in 10.1);
    /// `None` = never in this epoch.
    pub last_caught_up_time_ms: Option<u64>,
    /// The incarnation seen in its fetches.
    pub incarnation: Option<Incarnation>,
    /// It reported an empty or damaged log (or a lost tail): it may join the ISR only after a
    /// fetch at the leader's log end offset (KAFKA-14139).
    pub needs_catch_up: bool,
}

impl FollowerProgress {
    /// Kafka's `isCaughtUp`: at the leader's log end, or caught up within the lag time.
    pub fn is_caught_up(&self, leader_log_end: Offset, now_ms: u64, lag_ms: u64) -> bool {
        self.log_end_offset == Some(leader_log_end)
            || self
                .last_caught_up_time_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= lag_ms)
    }
}

/// The one ISR change that may be in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingIsrChange {
    /// The proposed ISR includes new members; they count for HW and acks=all immediately.
    Expand {
        /// The proposed ISR, sorted.
        proposed: Vec<ReplicaId>,
    },
    /// The proposed ISR drops members; until committed they still count.
    Shrink {
        /// The proposed ISR, sorted.
        proposed: Vec<ReplicaId>,
    },
}

/// Everything a replica needs to become leader of one partition in a new leader epoch.
#[derive(Debug, Clone)]
pub struct BecomeLeader {
    /// The replica becoming leader.
    pub leader: ReplicaId,
    /// Every replica of the partition.
    pub replicas: Vec<ReplicaId>,
    /// The committed ISR from the controller (contains the leader).
    pub isr: Vec<ReplicaId>,
    /// The new leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the controller's record.
    pub partition_epoch: PartitionEpoch,
    /// The leader's log start offset.
    pub log_start: Offset,
    /// The leader's log end offset; the new epoch starts here.
    pub log_end: Offset,
    /// The HW from the replication-offset checkpoint; clamped to `[log_start, log_end]`.
    pub high_watermark: Offset,
    /// The log's epoch cache; `(leader_epoch, log_end)` is assigned to it (persist it after).
    pub epoch_cache: LeaderEpochCache,
}

/// The leader's answer to a fetch that is in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchDecision {
    /// Send batches from `from` up to `log_end` (followers read past the HW), and the HW.
    Read {
        /// The follower's fetch offset.
        from: Offset,
        /// Send up to this offset (the leader's log end).
        log_end: Offset,
        /// The high watermark to tell the follower.
        high_watermark: Offset,
    },
    /// The follower's log diverges: it must truncate (its state here is untouched).
    Diverging {
        /// The largest epoch the leader has that is at most the follower's last epoch.
        epoch: LeaderEpoch,
        /// Where that epoch ends in the leader's log: truncate to at most here.
        end_offset: Offset,
    },
}

/// Why the HW did not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwHold {
    /// The committed ISR is smaller than the effective min ISR (Kafka 3.7+, KAFKA-15583).
    BelowMinIsr {
        /// Size of the committed ISR.
        isr: usize,
        /// The effective min ISR.
        min_isr: usize,
    },
    /// A member of the maximal ISR has not fetched in this epoch.
    UnknownFollowerLeo(ReplicaId),
    /// The minimum log end offset is not above the current HW.
    NotHigher {
        /// The minimum log end offset over the maximal ISR.
        candidate: Offset,
    },
}

/// The result of one HW computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwDecision {
    /// The HW moved.
    Advanced {
        /// The HW before.
        from: Offset,
        /// The HW now.
        to: Offset,
    },
    /// The HW stayed.
    Unchanged {
        /// The HW.
        hw: Offset,
        /// Why it did not move.
        hold: HwHold,
    },
}

impl HwDecision {
    /// The HW after the decision.
    pub fn high_watermark(&self) -> Offset {
        match *self {
            HwDecision::Advanced { to, .. } => to,
            HwDecision::Unchanged { hw, .. } => hw,
        }
    }
}

/// The HW rule as a pure function: the minimum log end offset over the leader and the maximal
/// ISR's followers, if it is above `current_hw`; nothing moves while `committed_isr_len <
/// effective_min_isr` or while a maximal-ISR follower's log end offset is unknown.
pub fn compute_high_watermark(
    current_hw: Offset,
    leader_log_end: Offset,
    committed_isr_len: usize,
    effective_min_isr: usize,
    maximal_isr_followers: &[(ReplicaId, Option<Offset>)],
) -> HwDecision {
    if committed_isr_len < effective_min_isr {
        return HwDecision::Unchanged {
            hw: current_hw,
            hold: HwHold::BelowMinIsr {
                isr: committed_isr_len,
                min_isr: effective_min_isr,
            },
        };
    }
    let mut candidate = leader_log_end;
    for &(replica, leo) in maximal_isr_followers {
        match leo {
            None => {
                return HwDecision::Unchanged {
                    hw: current_hw,
                    hold: HwHold::UnknownFollowerLeo(replica),
                }
            }
            Some(leo) => candidate = candidate.min(leo),
        }
    }
    if candidate > current_hw {
        HwDecision::Advanced {
            from: current_hw,
            to: candidate,
        }
    } else {
        HwDecision::Unchanged {
            hw: current_hw,
            hold: HwHold::NotHigher { candidate },
        }
    }
}

/// Where an acks=all produce stands after its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAllStatus {
    /// The HW has not passed the last offset yet: keep waiting (the driver owns the timeout).
    Waiting,
    /// Committed on the maximal ISR, which is at least min ISR.
    Complete,
    /// The HW passed the last offset but the maximal ISR is below min ISR: the records stay in
    /// the log, the producer gets NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    NotEnoughReplicasAfterAppend {
        /// Size of the maximal ISR.
        maximal_isr: usize,
        /// The effective min ISR.
        min_isr: usize,
    },
}

/// One partition on its leader. See the module invariants.
#[derive(Debug, Clone)]
pub struct LeaderState {
    leader: ReplicaId,
    /// Invariant: sorted, unique, contains `leader`.
    replicas: Vec<ReplicaId>,
    /// The committed ISR. Invariant: sorted, contains `leader`, subset of `replicas`.
    isr: Vec<ReplicaId>,
    /// Invariant: at most one change in flight.
    pending: Option<PendingIsrChange>,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    /// Where this leader epoch's batches begin; followers must reach it to join the ISR.
    leader_epoch_start_offset: Offset,
    log_start: Offset,
    /// Invariant: never decreases.
    log_end: Offset,
    /// Invariant: `log_start <= high_watermark <= log_end`; never decreases.
    high_watermark: Offset,
    /// One entry per replica other than the leader.
    followers: BTreeMap<ReplicaId, FollowerProgress>,
    /// Invariant: latest entry is `(leader_epoch, leader_epoch_start_offset)`.
    epoch_cache: LeaderEpochCache,
    config: LeaderConfig,
    /// Where the HW, ISR size and follower lags are reported; none until the driver names
    /// the log ([`LeaderState::with_gauges`]).
    gauges: Option<ReplicationGauges>,
}

fn sorted_unique(ids: &[ReplicaId]) -> Vec<ReplicaId> {
    let mut v = ids.to_vec();
    v.sort();
    v.dedup();
    v
}

impl LeaderState {
    /// Becomes leader in `args.leader_epoch` (Kafka's `makeLeader`): records the new epoch at the
    /// log end in the epoch cache, marks ISR followers caught up now and every follower's log end
    /// offset unknown, then tries to advance the HW.
    pub fn new(
        args: BecomeLeader,
        config: LeaderConfig,
        now_ms: u64,
    ) -> Result<Self, ReplicationError> {
        let replicas = sorted_unique(&args.replicas);
        let isr = sorted_unique(&args.isr);
        if !replicas.contains(&args.leader) {
            return Err(ReplicationError::UnknownReplica(args.leader));
        }
        if !isr.contains(&args.leader) {
            return Err(ReplicationError::InvalidIsr {
                reason: "the ISR does not contain the leader",
            });
        }
        if let Some(r) = isr.iter().find(|r| !replicas.contains(r)) {
            return Err(ReplicationError::UnknownReplica(*r));
        }
        let mut epoch_cache = args.epoch_cache;
        epoch_cache.assign(args.leader_epoch, args.log_end)?;
        let leader_epoch_start_offset = epoch_cache
            .latest()
            .map_or(args.log_end, |e| e.start_offset);
        let followers = replicas
            .iter()
            .filter(|r| **r != args.leader)
            .map(|r| {
                let progress = FollowerProgress {
                    last_caught_up_time_ms: isr.contains(r).then_some(now_ms),
                    ..FollowerProgress::default()
                };
                (*r, progress)
            })
            .collect();
        let log_start = args.log_start.min(args.log_end);
        let mut state = LeaderState {
            leader: args.leader,
            replicas,
            isr,
            pending: None,
            leader_epoch: args.leader_epoch,
            partition_epoch: args.partition_epoch,
            leader_epoch_start_offset,
            log_start,
            log_end: args.log_end,
            high_watermark: args.high_watermark.clamp(log_start, args.log_end),
            followers,
            epoch_cache,
            config,
            gauges: None,
        };
        tracing::info!(
            leader = state.leader.0,
            leader_epoch = state.leader_epoch,
            partition_epoch = state.partition_epoch,
            leader_epoch_start_offset = state.leader_epoch_start_offset.0,
            isr = ?state.isr,
            "leading"
        );
        state.maybe_advance_hw();
        Ok(state)
    }

    /// Reports this leader's HW, ISR size and follower lags to `gauges` from now on (the
    /// current HW and ISR size at once), labelled with its log.
    pub fn with_gauges(mut self, gauges: ReplicationGauges) -> Self {
        gauges.set_isr_size(self.isr.len());
        gauges.set_high_watermark(self.high_watermark.0);
        self.gauges = Some(gauges);
        self
    }

    /// The leader's replica id.
    pub fn leader(&self) -> ReplicaId {
        self.leader
    }
    /// Every replica of the partition.
    pub fn replicas(&self) -> &[ReplicaId] {
        &self.replicas
    }
    /// The committed ISR.
    pub fn isr(&self) -> &[ReplicaId] {
        &self.isr
    }
    /// The ISR change waiting for the controller's answer, if any.
    pub fn pending(&self) -> Option<&PendingIsrChange> {
        self.pending.as_ref()
    }
    /// The ISR used for HW and acks=all: committed plus a pending expansion.
    pub fn maximal_isr(&self) -> &[ReplicaId] {
        match &self.pending {
            Some(PendingIsrChange::Expand { proposed }) => proposed,
            _ => &self.isr,
        }
    }
    /// The leader epoch this state leads in.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }
    /// The partition epoch of the newest controller record known.
    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }
    /// The offset where this leader epoch started (the log end at election).
    pub fn leader_epoch_start_offset(&self) -> Offset {
        self.leader_epoch_start_offset
    }
    /// The leader log's first offset.
    pub fn log_start(&self) -> Offset {
        self.log_start
    }
    /// The leader log's end offset.
    pub fn log_end(&self) -> Offset {
        self.log_end
    }
    /// Readers see only offsets below this; never decreases in this epoch.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }
    /// The leader log's epoch cache.
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epoch_cache
    }
    /// The leader settings.
    pub fn config(&self) -> LeaderConfig {
        self.config
    }
    /// What the leader knows about follower `replica` (`None` if not a follower).
    pub fn follower(&self, replica: ReplicaId) -> Option<&FollowerProgress> {
        self.followers.get(&replica)
    }
    /// `min(min.insync.replicas, replication factor)`.
    pub fn effective_min_isr(&self) -> usize {
        self.config.min_insync_replicas.min(self.replicas.len())
    }

    /// A fetch from a follower, with leader-epoch fencing and incarnation tracking; then
    /// [`LeaderState::on_fetch`].
    pub fn on_fetch_request(
        &mut self,
        req: &FetchRequest,
        now_ms: u64,
    ) -> Result<FetchDecision, ReplicationError> {
        check_leader_epoch(req.current_leader_epoch, self.leader_epoch)?;
        let progress = self
            .followers
            .get_mut(&req.replica)
            .ok_or(ReplicationError::UnknownReplica(req.replica))?;
        if let Some(current) = progress.incarnation.filter(|c| req.incarnation < *c) {
            // A fetch from an earlier life, delivered late: its offset describes a log that may
            // have lost its tail since (Kafka fences fetches by broker epoch).
            return Err(ReplicationError::StaleIncarnation {
                replica: req.replica,
                proposed: req.incarnation,
                current,
            });
        }
        if progress.incarnation != Some(req.incarnation) {
            // A new life: what the old one fetched says nothing about the new log.
            progress.incarnation = Some(req.incarnation);
            progress.log_end_offset = None;
            progress.last_fetch_time_ms = None;
            progress.last_fetch_leader_log_end = None;
        }
        self.on_fetch(
            req.replica,
            req.fetch_offset,
            req.last_fetched_epoch,
            now_ms,
        )
    }

    /// A fetch from `follower` at `fetch_offset` whose last batch has `last_fetched_epoch`
    /// (Kafka's `Partition.readRecords` + `updateFollowerFetchState`).
    ///
    /// Divergence is checked first: if the leader's end offset for `last_fetched_epoch` has an
    /// older epoch or ends before `fetch_offset`, the answer is `Diverging` and nothing about
    /// the follower is recorded. Otherwise the follower's log end offset and caught-up time are
    /// updated and the HW may advance. Offsets the leader cannot serve are `OffsetOutOfRange`.
    pub fn on_fetch(
        &mut self,
        follower: ReplicaId,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
        now_ms: u64,
    ) -> Result<FetchDecision, ReplicationError> {
        if !self.followers.contains_key(&follower) {
            return Err(ReplicationError::UnknownReplica(follower));
        }
        let out_of_range = ReplicationError::OffsetOutOfRange {
            requested: fetch_offset,
            log_start: self.log_start,
            log_end: self.log_end,
        };
        if fetch_offset < self.log_start {
            return Err(out_of_range);
        }
        if let Some(epoch) = last_fetched_epoch {
            let Some((end_epoch, end_offset)) =
                self.epoch_cache.end_offset_for(epoch, self.log_end)
            else {
                return Err(out_of_range);
            };
            if end_epoch < epoch || end_offset < fetch_offset {
                return Ok(FetchDecision::Diverging {
                    epoch: end_epoch,
                    end_offset,
                });
            }
        }
        if fetch_offset > self.log_end {
            return Err(out_of_range);
        }
        let log_end = self.log_end;
        if let Some(p) = self.followers.get_mut(&follower) {
            if fetch_offset >= log_end {
                p.last_caught_up_time_ms =
                    Some(p.last_caught_up_time_ms.map_or(now_ms, |t| t.max(now_ms)));
            } else if let (Some(prev_end), Some(prev_time)) =
                (p.last_fetch_leader_log_end, p.last_fetch_time_ms)
            {
                // It now has everything the leader had at its previous fetch.
                if fetch_offset >= prev_end {
                    p.last_caught_up_time_ms = Some(
                        p.last_caught_up_time_ms
                            .map_or(prev_time, |t| t.max(prev_time)),
                    );
                }
            }
            p.log_end_offset = Some(fetch_offset);
            p.last_fetch_leader_log_end = Some(log_end);
            p.last_fetch_time_ms = Some(now_ms);
            if let Some(g) = &self.gauges {
                g.set_follower_lag(follower.0, log_end.0.saturating_sub(fetch_offset.0));
            }
        }
        self.maybe_advance_hw();
        Ok(FetchDecision::Read {
            from: fetch_offset,
            log_end,
            high_watermark: self.high_watermark,
        })
    }

    /// Builds the response for a fetch outcome; `batches` are what the driver read for `Read`.
    /// `OffsetOutOfRange` becomes `out_of_range`; other errors pass through.
    pub fn fetch_response(
        &self,
        outcome: Result<FetchDecision, ReplicationError>,
        batches: Vec<FetchedBatch>,
    ) -> Result<FetchResponse, ReplicationError> {
        let mut resp = FetchResponse {
            leader_epoch: self.leader_epoch,
            high_watermark: self.high_watermark,
            log_start: self.log_start,
            log_end: self.log_end,
            diverging: None,
            out_of_range: false,
            batches: Vec::new(),
        };
        match outcome {
            Ok(FetchDecision::Read { .. }) => resp.batches = batches,
            Ok(FetchDecision::Diverging { epoch, end_offset }) => {
                resp.diverging = Some(EpochEndOffset { epoch, end_offset });
            }
            Err(ReplicationError::OffsetOutOfRange { .. }) => resp.out_of_range = true,
            Err(e) => return Err(e),
        }
        Ok(resp)
    }

    /// The leader appended; its log now ends at `log_end`. Returns the new HW if it moved.
    pub fn on_append(&mut self, log_end: Offset) -> Option<Offset> {
        assert!(
            log_end >= self.log_end,
            "leader log end went back: {log_end:?}"
        );
        self.log_end = log_end;
        self.maybe_advance_hw()
    }

    /// The log start moved forward (retention, delete-records); never past the HW.
    pub fn on_log_start(&mut self, log_start: Offset) {
        assert!(log_start <= self.high_watermark, "log start past HW");
        self.log_start = self.log_start.max(log_start);
    }

    /// The HW rule (module invariants); returns the new HW if it moved.
    pub fn maybe_advance_hw(&mut self) -> Option<Offset> {
        match self.hw_decision() {
            HwDecision::Advanced { to, .. } => {
                self.high_watermark = to;
                tracing::debug!(leader = self.leader.0, high_watermark = to.0, "HW advanced");
                if let Some(g) = &self.gauges {
                    g.set_high_watermark(to.0);
                }
                Some(to)
            }
            HwDecision::Unchanged { .. } => None,
        }
    }

    /// What [`LeaderState::maybe_advance_hw`] would do, and why.
    pub fn hw_decision(&self) -> HwDecision {
        let followers: Vec<(ReplicaId, Option<Offset>)> = self
            .maximal_isr()
            .iter()
            .filter(|r| **r != self.leader)
            .map(|r| (*r, self.followers.get(r).and_then(|p| p.log_end_offset)))
            .collect();
        compute_high_watermark(
            self.high_watermark,
            self.log_end,
            self.isr.len(),
            self.effective_min_isr(),
            &followers,
        )
    }

    /// Whether `replica` may join the ISR now: it fetched in this epoch under a known
    /// incarnation, its log end offset is at least the HW and the start of this leader epoch,
    /// and, if it lost data, it was at the leader's log end on its last fetch.
    pub fn is_isr_eligible(&self, replica: ReplicaId) -> bool {
        let Some(p) = self.followers.get(&replica) else {
            return false;
        };
        let Some(leo) = p.log_end_offset else {
            return false;
        };
        p.incarnation.is_some()
            && leo >= self.high_watermark
            && leo >= self.leader_epoch_start_offset
            && (!p.needs_catch_up || p.last_fetch_leader_log_end.is_some_and(|end| leo >= end))
    }

    fn member(&self, replica: ReplicaId) -> IsrMember {
        IsrMember {
            replica,
            incarnation: self.followers.get(&replica).and_then(|p| p.incarnation),
        }
    }

    fn proposal(&mut self, proposed: Vec<ReplicaId>, expand: bool) -> AlterIsrRequest {
        tracing::info!(
            leader = self.leader.0,
            leader_epoch = self.leader_epoch,
            isr = ?self.isr,
            proposed = ?proposed,
            "proposing ISR {}",
            if expand { "expansion" } else { "shrink" }
        );
        let request = AlterIsrRequest {
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: proposed.iter().map(|r| self.member(*r)).collect(),
        };
        self.pending = Some(if expand {
            PendingIsrChange::Expand { proposed }
        } else {
            PendingIsrChange::Shrink { proposed }
        });
        request
    }

    /// Proposes adding every ISR-eligible follower that fetched within
    /// `replica_lag_time_max_ms`, unless a change is in flight. The added members count in the
    /// maximal ISR from now on.
    pub fn maybe_expand_isr(&mut self, now_ms: u64) -> Option<AlterIsrRequest> {
        if self.pending.is_some() {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        // Only followers heard from within the lag time: a dead one that once was eligible
        // would be refused by the controller, and with it every live member of the proposal.
        let added: Vec<ReplicaId> = self
            .followers
            .iter()
            .filter(|(r, p)| {
                !self.isr.contains(r)
                    && p.last_fetch_time_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) <= lag)
                    && self.is_isr_eligible(**r)
            })
            .map(|(r, _)| *r)
            .collect();
        if added.is_empty() {
            return None;
        }
        let proposed = sorted_unique(&[self.isr.clone(), added].concat());
        Some(self.proposal(proposed, true))
    }

    /// Proposes removing every ISR follower that is not caught up (at the leader's log end, or
    /// caught up within `replica_lag_time_max_ms`), unless a change is in flight. Until the
    /// controller commits, the removed members still count for the HW.
    pub fn maybe_shrink_isr(&mut self, now_ms: u64) -> Option<AlterIsrRequest> {
        if self.pending.is_some() {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let out: Vec<ReplicaId> = self
            .isr
            .iter()
            .filter(|r| **r != self.leader)
            .filter(|r| {
                !self
                    .followers
                    .get(r)
                    .is_some_and(|p| p.is_caught_up(self.log_end, now_ms, lag))
            })
            .copied()
            .collect();
        if out.is_empty() {
            return None;
        }
        let proposed: Vec<ReplicaId> = self
            .isr
            .iter()
            .filter(|r| !out.contains(r))
            .copied()
            .collect();
        Some(self.proposal(proposed, false))
    }

    /// The controller committed `isr` at `partition_epoch`. Stale answers (older partition epoch)
    /// are refused. Clears the pending change and returns the new HW if it moved.
    pub fn on_isr_committed(
        &mut self,
        partition_epoch: PartitionEpoch,
        isr: &[ReplicaId],
    ) -> Result<Option<Offset>, ReplicationError> {
        let isr = sorted_unique(isr);
        if partition_epoch < self.partition_epoch
            || (partition_epoch == self.partition_epoch && isr != self.isr)
        {
            return Err(ReplicationError::StalePartitionEpoch {
                proposed: partition_epoch,
                current: self.partition_epoch,
            });
        }
        if !isr.contains(&self.leader) {
            return Err(ReplicationError::InvalidIsr {
                reason: "the ISR does not contain the leader",
            });
        }
        if let Some(r) = isr.iter().find(|r| !self.replicas.contains(r)) {
            return Err(ReplicationError::UnknownReplica(*r));
        }
        for r in &isr {
            if let Some(p) = self.followers.get_mut(r) {
                p.needs_catch_up = false;
            }
        }
        // Members the controller removed without this leader proposing it failed: forget when
        // they last fetched, or an expansion would name a dead replica and be refused whole.
        let proposed_out: Vec<ReplicaId> = match &self.pending {
            Some(PendingIsrChange::Shrink { proposed }) => self
                .isr
                .iter()
                .filter(|r| !proposed.contains(r))
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        for r in self.isr.iter().filter(|r| !isr.contains(r)) {
            if proposed_out.contains(r) {
                continue;
            }
            if let Some(p) = self.followers.get_mut(r) {
                p.last_fetch_time_ms = None;
                p.last_caught_up_time_ms = None;
            }
        }
        if isr != self.isr {
            tracing::info!(
                leader = self.leader.0,
                partition_epoch,
                from = ?self.isr,
                to = ?isr,
                "ISR {}",
                if isr.len() < self.isr.len() { "shrunk" } else { "changed" }
            );
        }
        if let Some(g) = &self.gauges {
            g.set_isr_size(isr.len());
        }
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.pending = None;
        Ok(self.maybe_advance_hw())
    }

    /// The controller refused the pending change (or it timed out): the committed ISR stands.
    pub fn on_isr_rejected(&mut self) {
        self.pending = None;
    }

    /// The controller reports that `replica` restarted having lost data (empty, damaged or
    /// lost its unsynced tail): it may rejoin the ISR only once it has fully caught up.
    pub fn mark_needs_catch_up(&mut self, replica: ReplicaId) {
        if let Some(p) = self.followers.get_mut(&replica) {
            p.needs_catch_up = true;
        }
    }

    /// acks=all, before appending: refuse if the committed ISR is below the effective min ISR
    /// (nothing is appended then).
    pub fn check_enough_replicas(&self) -> Result<(), ReplicationError> {
        let min_isr = self.effective_min_isr();
        if self.isr.len() < min_isr {
            return Err(ReplicationError::NotEnoughReplicas {
                isr: self.isr.len(),
                min_isr,
            });
        }
        Ok(())
    }

    /// acks=all, after appending a batch ending at `last_offset`: complete once the HW is past
    /// it, with NOT_ENOUGH_REPLICAS_AFTER_APPEND if the maximal ISR is below min ISR then.
    pub fn acks_all_check(&self, last_offset: Offset) -> AcksAllStatus {
        if self.high_watermark <= last_offset {
            return AcksAllStatus::Waiting;
        }
        let min_isr = self.effective_min_isr();
        let maximal = self.maximal_isr().len();
        if maximal < min_isr {
            AcksAllStatus::NotEnoughReplicasAfterAppend {
                maximal_isr: maximal,
                min_isr,
            }
        } else {
            AcksAllStatus::Complete
        }
    }

    /// Panics if a module invariant does not hold.
    pub fn check_invariants(&self) {
        assert!(
            self.log_start <= self.high_watermark,
            "log start > HW: {self:?}"
        );
        assert!(self.high_watermark <= self.log_end, "HW > LEO: {self:?}");
        assert!(
            self.isr.contains(&self.leader),
            "leader not in ISR: {self:?}"
        );
        assert!(
            self.isr.windows(2).all(|w| w.first() < w.get(1)),
            "ISR unsorted"
        );
        assert!(
            self.isr.iter().all(|r| self.replicas.contains(r)),
            "ISR not replicas"
        );
        assert!(
            self.isr.iter().all(|r| self.maximal_isr().contains(r)),
            "maximal ISR misses a committed member: {self:?}"
        );
        assert_eq!(
            self.epoch_cache.latest().map(|e| (e.epoch, e.start_offset)),
            Some((self.leader_epoch, self.leader_epoch_start_offset)),
            "epoch cache does not end with this leader epoch"
        );
        assert!(self.leader_epoch_start_offset <= self.log_end);
        self.epoch_cache.check_invariants();
        for (r, p) in &self.followers {
            assert!(self.replicas.contains(r) && *r != self.leader);
            if let Some(leo) = p.log_end_offset {
                assert!(
                    leo <= self.log_end,
                    "follower {r} beyond leader LEO: {self:?}"
                );
            }
        }
        assert_eq!(self.followers.len() + 1, self.replicas.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<ReplicaId> {
        v.iter().map(|&i| ReplicaId(i)).collect()
    }

    fn leader(isr: &[u32], min_isr: usize, log_end: u64, hw: u64) -> LeaderState {
        let mut cache = LeaderEpochCache::new();
        cache.assign(0, Offset(0)).unwrap();
        LeaderState::new(
            BecomeLeader {
                leader: ReplicaId(1),
                replicas: ids(&[1, 2, 3]),
                isr: ids(isr),
                leader_epoch: 1,
                partition_epoch: 1,
                log_start: Offset(0),
                log_end: Offset(log_end),
                high_watermark: Offset(hw),
                epoch_cache: cache,
            },
            LeaderConfig {
                min_insync_replicas: min_isr,
                replica_lag_time_max_ms: 100,
            },
            0,
        )
        .unwrap()
    }

    #[test]
    fn hw_waits_for_every_maximal_isr_member_and_never_decreases() {
        let mut l = leader(&[1, 2, 3], 2, 10, 4);
        assert_eq!(l.high_watermark(), Offset(4));
        l.on_fetch(ReplicaId(2), Offset(8), Some(0), 1).unwrap();
        assert_eq!(l.high_watermark(), Offset(4), "r3 unknown");
        l.on_fetch(ReplicaId(3), Offset(6), Some(0), 1).unwrap();
        assert_eq!(l.high_watermark(), Offset(6));
        l.on_fetch(ReplicaId(3), Offset(3), None, 2).unwrap();
        assert_eq!(l.high_watermark(), Offset(6), "never decreases");
        l.check_invariants();
    }

    #[test]
    fn hw_is_frozen_below_min_isr_and_acks_all_is_refused() {
        let mut l = leader(&[1], 2, 10, 4);
        assert_eq!(l.on_append(Offset(12)), None);
        assert_eq!(l.high_watermark(), Offset(4));
        assert!(matches!(
            l.check_enough_replicas(),
            Err(ReplicationError::NotEnoughReplicas { isr: 1, min_isr: 2 })
        ));
        assert_eq!(l.acks_all_check(Offset(11)), AcksAllStatus::Waiting);
    }

    #[test]
    fn diverging_fetch_leaves_follower_untouched() {
        let mut l = leader(&[1, 2, 3], 1, 10, 0);
        // The follower claims epoch 0 up to offset 12, but epoch 1 starts at 10 here... the
        // leader's end for epoch 0 is 10 < 12: diverging.
        let d = l.on_fetch(ReplicaId(2), Offset(12), Some(0), 5).unwrap();
        assert_eq!(
            d,
            FetchDecision::Diverging {
                epoch: 0,
                end_offset: Offset(10)
            }
        );
        assert_eq!(l.follower(ReplicaId(2)).unwrap().log_end_offset, None);
        assert!(l.on_fetch(ReplicaId(2), Offset(11), None, 5).is_err());
        assert!(l.on_fetch(ReplicaId(9), Offset(1), None, 5).is_err());
    }

    #[test]
    fn expand_needs_epoch_start_and_shrink_needs_lag() {
        let mut l = leader(&[1, 2], 1, 10, 0);
        l.on_fetch_request(
            &FetchRequest {
                replica: ReplicaId(3),
                incarnation: 7,
                fetch_offset: Offset(9),
                last_fetched_epoch: Some(0),
                current_leader_epoch: 1,
                max_bytes: 1,
            },
            5,
        )
        .unwrap();
        assert_eq!(l.maybe_expand_isr(5), None, "below the epoch start 10");
        l.on_fetch(ReplicaId(3), Offset(10), Some(0), 6).unwrap();
        let p = l.maybe_expand_isr(6).unwrap();
        assert_eq!(p.isr(), ids(&[1, 2, 3]));
        assert_eq!(l.maximal_isr(), &ids(&[1, 2, 3])[..]);
        assert_eq!(l.maybe_shrink_isr(1000), None, "change in flight");
        l.on_isr_committed(2, &ids(&[1, 2, 3])).unwrap();
        assert!(l.on_isr_committed(1, &ids(&[1, 2])).is_err(), "stale");
        // r2 never fetched; lag 100 after becoming leader at 0.
        assert_eq!(l.maybe_shrink_isr(100), None);
        let p = l.maybe_shrink_isr(101).unwrap();
        assert_eq!(p.isr(), ids(&[1, 3]));
        assert_eq!(l.maximal_isr(), &ids(&[1, 2, 3])[..], "shrink not assumed");
        l.check_invariants();
    }
}
