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
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// A follower's fetch (Kafka's Fetch with replica id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica: ReplicaId,
    /// The follower's incarnation (broker epoch).
    pub incarnation: Incarnation,
    /// The follower's log end offset: the next offset it wants.
    pub fetch_offset: Offset,
    /// Epoch of the last batch in the follower's log; `None` for an empty log.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch the follower believes current (fencing).
    pub current_leader_epoch: LeaderEpoch,
    pub max_bytes: u32,
}

/// One batch as shipped to a follower. `bytes` is the whole encoded batch (it may be empty in
/// tests that only track offsets and epochs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub bytes: Vec<u8>,
}

/// The leader's answer to a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub leader_epoch: LeaderEpoch,
    pub high_watermark: Offset,
    pub log_start: Offset,
    pub log_end: Offset,
    /// Set when the follower's log diverges from the leader's: truncate, then fetch again.
    pub diverging: Option<EpochEndOffset>,
    /// Set when the fetch offset or epoch cannot be served (below log start, above log end,
    /// unknown epoch).
    pub out_of_range: bool,
    pub batches: Vec<FetchedBatch>,
}

/// One proposed ISR member; `incarnation` is what the leader saw in the member's fetches
/// (`None` if it has not heard from it in this leader epoch; only allowed for current members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsrMember {
    pub replica: ReplicaId,
    pub incarnation: Option<Incarnation>,
}

/// A leader's proposal to change the ISR (Kafka's AlterPartition), compare-and-set on
/// `partition_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsrRequest {
    pub leader: ReplicaId,
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
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// Sorted by replica id; never empty.
    pub isr: Vec<ReplicaId>,
}
