//! Replication as pure state machines: messages and ticks in, decisions out, no I/O.
//!
//! - [`epoch::LeaderEpochCache`]: which leader epoch started at which offset (Kafka's
//!   `LeaderEpochFileCache`), the basis of follower truncation.
//! - [`leader::LeaderState`]: one partition on its leader: follower progress, high-water mark,
//!   committed and maximal ISR, acks=all checks.
//! - [`follower::FollowerState`]: one partition on a follower: what to fetch, and whether a
//!   response means "append" or "truncate to the divergence point".
//! - [`controller`]: the authority for leader, leader epoch and ISR (compare-and-set on the
//!   partition epoch), with an in-process implementation.
//! - [`messages`]: transport-agnostic request/response structs.
//!
//! A driver (not in this module) owns the log and the network: it feeds these structs the
//! messages and the time, carries out the decisions they return, and persists what they ask.
//! `docs/replication.md` has the glossary, the rules and the guarantees per acks/SyncMode.
//!
//! Invariants common to the whole module (each file lists its own):
//! - offsets are [`Offset`]s, leader epochs are [`LeaderEpoch`]s (`>= 0` once assigned), the
//!   partition epoch is a [`PartitionEpoch`]; the three are never mixed.
//! - nothing here reads a clock: every time is an argument `now_ms` (monotonic milliseconds).

pub mod controller;
pub mod epoch;
pub mod follower;
pub mod leader;
pub mod messages;

use std::fmt;

use crate::types::{LeaderEpoch, Offset};

pub use controller::{Controller, InProcessController, LogRecovery};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use follower::{FollowerDecision, FollowerState, TruncationPoint};
pub use leader::{
    AcksAllStatus, BecomeLeader, FetchDecision, FollowerProgress, HwDecision, HwHold, LeaderConfig,
    LeaderState, PendingIsrChange,
};
pub use messages::{
    AlterIsrRequest, EpochEndOffset, FetchRequest, FetchResponse, FetchedBatch, IsrMember,
    LeaderAndIsr,
};

/// The id of one replica (Kafka's broker id) of a partition.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u32);

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Version of the (leader, leader epoch, ISR) record of a partition; every change the controller
/// accepts increments it, and ISR changes are compare-and-set on it (Kafka's partition epoch).
pub type PartitionEpoch = i32;

/// One life of a replica process (Kafka's broker epoch): a new value after every restart, so a
/// proposal built from what an older life reported can be recognised as stale (KAFKA-14139).
pub type Incarnation = u64;

/// Leader-epoch fencing of a request or response: an older epoch is fenced, a newer one is not
/// known here yet (Kafka's FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH).
pub(crate) fn check_leader_epoch(
    request: LeaderEpoch,
    current: LeaderEpoch,
) -> Result<(), ReplicationError> {
    if request < current {
        return Err(ReplicationError::FencedLeaderEpoch { request, current });
    }
    if request > current {
        return Err(ReplicationError::UnknownLeaderEpoch { request, current });
    }
    Ok(())
}

/// Why a replication message or proposal was refused. Decisions that are part of the protocol
/// (diverging epoch, "wait") are not errors; these are. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicationError {
    /// An epoch-cache entry with a negative epoch, or entries not strictly increasing.
    InvalidEpochEntry {
        /// The entry's epoch.
        epoch: LeaderEpoch,
        /// The entry's start offset.
        start_offset: Offset,
    },
    /// The replica is not one of the partition's replicas.
    UnknownReplica(ReplicaId),
    /// A request carries an older leader epoch than this replica's (Kafka's FENCED_LEADER_EPOCH).
    FencedLeaderEpoch {
        /// The request's epoch.
        request: LeaderEpoch,
        /// This replica's epoch.
        current: LeaderEpoch,
    },
    /// A request carries a newer leader epoch than this replica knows (UNKNOWN_LEADER_EPOCH):
    /// retry after learning the new leader.
    UnknownLeaderEpoch {
        /// The request's epoch.
        request: LeaderEpoch,
        /// This replica's epoch.
        current: LeaderEpoch,
    },
    /// The fetch offset is outside what the leader can serve or compare.
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The leader log's first offset.
        log_start: Offset,
        /// The leader log's end offset.
        log_end: Offset,
    },
    /// acks=all refused before appending: the committed ISR is below min ISR.
    NotEnoughReplicas {
        /// Size of the committed ISR.
        isr: usize,
        /// The effective min ISR.
        min_isr: usize,
    },
    /// The follower response's batches do not continue the log at its end.
    UnexpectedAppendOffset {
        /// The follower log's end offset.
        expected: Offset,
        /// The first batch's base offset.
        actual: Offset,
    },
    /// A fetched batch carries an epoch older than the log's latest or newer than the leader's.
    BadBatchEpoch {
        /// The batch's first offset.
        base_offset: Offset,
        /// The batch's epoch.
        epoch: LeaderEpoch,
    },
    /// An ISR proposal was based on an older partition epoch (compare-and-set failed).
    StalePartitionEpoch {
        /// The partition epoch the proposal was computed from.
        proposed: PartitionEpoch,
        /// The controller's partition epoch.
        current: PartitionEpoch,
    },
    /// An ISR proposal came from a replica that is not the current leader.
    NotLeader {
        /// The proposer.
        replica: ReplicaId,
    },
    /// A proposed ISR is malformed (empty, without the leader, or naming a non-replica).
    InvalidIsr {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A proposed member is known under a different incarnation (it restarted since).
    StaleIncarnation {
        /// The member.
        replica: ReplicaId,
        /// The incarnation the proposal names.
        proposed: Incarnation,
        /// The incarnation the controller holds.
        current: Incarnation,
    },
    /// A proposed member is down, or must catch up before it may join.
    IneligibleReplica(ReplicaId),
    /// No replica may be elected leader without losing committed data.
    NoEligibleLeader,
}

impl fmt::Display for ReplicationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationError::InvalidEpochEntry {
                epoch,
                start_offset,
            } => write!(
                f,
                "invalid leader-epoch entry: epoch {epoch} at offset {start_offset}"
            ),
            ReplicationError::UnknownReplica(r) => write!(f, "replica {r} is not a replica"),
            ReplicationError::FencedLeaderEpoch { request, current } => write!(
                f,
                "fenced: request leader epoch {request} is older than {current}"
            ),
            ReplicationError::UnknownLeaderEpoch { request, current } => write!(
                f,
                "unknown leader epoch {request} (this replica knows {current})"
            ),
            ReplicationError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => write!(
                f,
                "offset {requested} out of range [{log_start}, {log_end}]"
            ),
            ReplicationError::NotEnoughReplicas { isr, min_isr } => write!(
                f,
                "not enough in-sync replicas: {isr} < min.insync.replicas {min_isr}"
            ),
            ReplicationError::UnexpectedAppendOffset { expected, actual } => write!(
                f,
                "fetched batch starts at {actual}, log ends at {expected}"
            ),
            ReplicationError::BadBatchEpoch { base_offset, epoch } => write!(
                f,
                "fetched batch at {base_offset} has impossible leader epoch {epoch}"
            ),
            ReplicationError::StalePartitionEpoch { proposed, current } => write!(
                f,
                "stale ISR proposal: partition epoch {proposed}, current {current}"
            ),
            ReplicationError::NotLeader { replica } => {
                write!(f, "replica {replica} is not the leader")
            }
            ReplicationError::InvalidIsr { reason } => write!(f, "invalid ISR: {reason}"),
            ReplicationError::StaleIncarnation {
                replica,
                proposed,
                current,
            } => write!(
                f,
                "replica {replica} restarted: proposal names incarnation {proposed}, current \
                 {current}"
            ),
            ReplicationError::IneligibleReplica(r) => {
                write!(
                    f,
                    "replica {r} is down or has not caught up since losing data"
                )
            }
            ReplicationError::NoEligibleLeader => {
                write!(f, "no replica can lead without losing committed data")
            }
        }
    }
}

impl std::error::Error for ReplicationError {}
