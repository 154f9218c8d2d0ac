//! Transport-agnostic messages between leader, followers and controller.
//!
//! Invariants:
//! - a [`FetchResponse`] carries either a `diverging` epoch, or `out_of_range`, or batches; never
//!   batches together with one of the other two (a follower that must truncate gets no data).
//! - [`FetchedBatch`]es of one response are contiguous: each starts at the previous `last + 1`.

use crate::types::{LeaderEpoch, Offset};

use super::{Incarnation, PartitionEpoch, ReplicaId};

/// `(epoch, end offset)` as answered by `LeaderEpochCache::end_offset_for`: `epoch` is the
/// largest epoch <= the one asked about, `end_offset` the start of the next higher epoch (or the
/// log end for the latest epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    /// The largest epoch at most the one asked about.
    pub epoch: LeaderEpoch,
    /// Where that epoch ends: the next epoch's start, or the log end.
    pub end_offset: Offset,
}

/// A follower's fetch (Kafka's Fetch with replica id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The follower's replica id.
    pub replica: ReplicaId,
    /// The follower's incarnation (broker epoch).
    pub incarnation: Incarnation,
    /// The follower's log end offset: the next offset it wants.
    pub fetch_offset: Offset,
    /// Epoch of the last batch in the follower's log; `None` for an empty log.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch the follower believes current (fencing).
    pub current_leader_epoch: LeaderEpoch,
    /// Most bytes of batches to return (at least one batch is always sent).
    pub max_bytes: u32,
}

/// One batch as shipped to a follower. `bytes` is the whole encoded batch (it may be empty in
/// tests that only track offsets and epochs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of the batch's last record.
    pub last_offset: Offset,
    /// The leader epoch the batch was written in.
    pub leader_epoch: LeaderEpoch,
    /// The whole encoded batch.
    pub bytes: Vec<u8>,
}

/// The leader's answer to a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// The leader's high watermark.
    pub high_watermark: Offset,
    /// The leader log's first offset.
    pub log_start: Offset,
    /// The leader log's end offset.
    pub log_end: Offset,
    /// Set when the follower's log diverges from the leader's: truncate, then fetch again.
    pub diverging: Option<EpochEndOffset>,
    /// Set when the fetch offset or epoch cannot be served (below log start, above log end,
    /// unknown epoch).
    pub out_of_range: bool,
    /// Batches from the fetch offset, contiguous; empty with `diverging` or `out_of_range`.
    pub batches: Vec<FetchedBatch>,
}

/// One proposed ISR member; `incarnation` is what the leader saw in the member's fetches
/// (`None` if it has not heard from it in this leader epoch; only allowed for current members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsrMember {
    /// The member.
    pub replica: ReplicaId,
    /// The incarnation the leader saw in its fetches.
    pub incarnation: Option<Incarnation>,
}

/// A leader's proposal to change the ISR (Kafka's AlterPartition), compare-and-set on
/// `partition_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsrRequest {
    /// The proposing leader.
    pub leader: ReplicaId,
    /// Its leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal was computed from.
    pub partition_epoch: PartitionEpoch,
    /// The whole new ISR, leader included, sorted by replica id.
    pub new_isr: Vec<IsrMember>,
}

impl AlterIsrRequest {
    /// The proposed ISR as replica ids.
    pub fn isr(&self) -> Vec<ReplicaId> {
        self.new_isr.iter().map(|m| m.replica).collect()
    }
}

/// The controller's record of a partition (its answer to every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    /// `None` while the partition is offline (no replica can lead safely).
    pub leader: Option<ReplicaId>,
    /// The leader epoch: incremented at every leader change.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch: incremented at every accepted change.
    pub partition_epoch: PartitionEpoch,
    /// Sorted by replica id; never empty.
    pub isr: Vec<ReplicaId>,
}
