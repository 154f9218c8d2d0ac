//! The error a replica answers a request with: a typed code, the fields a client acts on, and
//! the replica's message. Every [`crate::Error`] and every [`ReplicationError`] maps to one
//! code, and the typed ones come back as the same variant with the same fields
//! ([`ErrorReply::into_error`]), so a client in another thread, simulated node or process drives
//! the same retry rules as a local one (`producer::client`). Every transport carries it: the
//! simulation and `cluster::ThreadCluster` as a value, the TCP driver encoded (`net::wire`,
//! `docs/format.md`, "Wire protocol").
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;

use crate::error::Error;
use crate::replication::{ReplicaId, ReplicationError};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};

/// What went wrong on the remote side. Codes 1-31 are storage, produce and transport errors,
/// 32-63 the [`ReplicationError`] variants (`ReplicationError::NotEnoughReplicas` travels as
/// code 2, like `Error::NotEnoughReplicas`, which it converts to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// 1: this replica does not lead (in the epoch asked for); `leader` is the one it knows.
    NotLeader {
        /// The leader it knows, if any.
        leader: Option<ReplicaId>,
        /// The leader epoch that answer is for.
        leader_epoch: LeaderEpoch,
    },
    /// 2: acks=all refused before appending (ISR below `min.insync.replicas`).
    NotEnoughReplicas {
        /// Size of the committed ISR.
        isr: u32,
        /// The effective min ISR.
        min_isr: u32,
    },
    /// 3: acks=all appended, but the ISR shrank below `min.insync.replicas`.
    NotEnoughReplicasAfterAppend {
        /// Size of the maximal ISR.
        maximal_isr: u32,
        /// The effective min ISR.
        min_isr: u32,
    },
    /// 4: an acks=all request was not committed before its timeout.
    Timeout,
    /// 5
    OutOfOrderSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        epoch: ProducerEpoch,
        /// The batch's first sequence.
        first_sequence: Sequence,
        /// The sequence the log expected.
        expected_sequence: Sequence,
    },
    /// 6
    ProducerFenced {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        epoch: ProducerEpoch,
        /// The epoch the log holds.
        current_epoch: ProducerEpoch,
    },
    /// 7
    DuplicateSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        epoch: ProducerEpoch,
        /// The batch's first sequence.
        first_sequence: Sequence,
    },
    /// 8
    UnknownProducerId {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's first sequence.
        first_sequence: Sequence,
    },
    /// 9: a read outside the log.
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log's first offset.
        log_start: Offset,
        /// The log's end offset.
        log_end: Offset,
    },
    /// 10: a replicated append did not start at the log end.
    UnexpectedAppendOffset {
        /// The log end offset.
        expected: Offset,
        /// The batch's base offset.
        actual: Offset,
    },
    /// 11
    BatchTooLarge {
        /// The batch's size in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// 12: the request's batch bytes are not a valid batch (the reason is in the message).
    InvalidBatch,
    /// 13: the remote found damaged data (file and position in the message).
    Corrupt,
    /// 14: an I/O call failed on the remote.
    Io,
    /// 15: the remote's log is closed, read-only, locked, or refuses writes after a failed sync.
    Unavailable,
    /// 16: the controller has no live session for this replica (never registered, expired, or
    /// another incarnation): register again.
    SessionExpired {
        /// The replica without a session.
        replica: ReplicaId,
    },
    /// 17: the request is malformed or not one this server answers.
    InvalidRequest,
    /// 18: anything else (configuration, unclassified).
    Internal,
    /// 19: security is on and this peer may not send this request (no certificate, not the
    /// member the request speaks for, or an operation the ACL does not grant it); the message
    /// says which (`docs/security.md`).
    Unauthorized,
    /// 32-44: a replication message or state change was refused.
    Replication(ReplicationError),
}

/// An error answer: the typed error and the remote's human-readable description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The typed error.
    pub error: RemoteError,
    /// The remote's description.
    pub message: String,
}

impl ErrorReply {
    /// An answer with `error` and its description.
    pub fn new(error: RemoteError, message: impl Into<String>) -> Self {
        ErrorReply {
            error,
            message: message.into(),
        }
    }

    /// The reply for a local error (its `Display` becomes the message).
    pub fn from_error(e: &Error) -> Self {
        ErrorReply::new(RemoteError::from_error(e), e.to_string())
    }

    /// The reply for a refused replication message.
    pub fn from_replication(e: &ReplicationError) -> Self {
        ErrorReply::new(RemoteError::from_replication(e.clone()), e.to_string())
    }

    /// The local error for this reply: typed codes become the same [`Error`] variant, the
    /// message-only ones [`Error::Remote`].
    pub fn into_error(self) -> Error {
        let ErrorReply { error, message } = self;
        match error {
            RemoteError::NotLeader {
                leader,
                leader_epoch,
            } => Error::NotLeader {
                leader: leader.map(|r| r.0),
                leader_epoch,
            },
            RemoteError::NotEnoughReplicas { isr, min_isr } => Error::NotEnoughReplicas {
                isr: isr as usize,
                min_isr: min_isr as usize,
            },
            RemoteError::NotEnoughReplicasAfterAppend {
                maximal_isr,
                min_isr,
            } => Error::NotEnoughReplicasAfterAppend {
                maximal_isr: maximal_isr as usize,
                min_isr: min_isr as usize,
            },
            RemoteError::Timeout => Error::Timeout,
            RemoteError::OutOfOrderSequence {
                producer_id,
                epoch,
                first_sequence,
                expected_sequence,
            } => Error::OutOfOrderSequence {
                producer_id,
                epoch,
                first_sequence,
                expected_sequence,
            },
            RemoteError::ProducerFenced {
                producer_id,
                epoch,
                current_epoch,
            } => Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch,
            },
            RemoteError::DuplicateSequence {
                producer_id,
                epoch,
                first_sequence,
            } => Error::DuplicateSequence {
                producer_id,
                epoch,
                first_sequence,
            },
            RemoteError::UnknownProducerId {
                producer_id,
                first_sequence,
            } => Error::UnknownProducerId {
                producer_id,
                first_sequence: (first_sequence >= 0).then_some(first_sequence),
            },
            RemoteError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => Error::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            },
            RemoteError::UnexpectedAppendOffset { expected, actual } => {
                Error::UnexpectedAppendOffset { expected, actual }
            }
            RemoteError::BatchTooLarge { size, max } => Error::BatchTooLarge { size, max },
            RemoteError::Replication(e) => Error::from(e),
            other @ (RemoteError::InvalidBatch
            | RemoteError::Corrupt
            | RemoteError::Io
            | RemoteError::Unavailable
            | RemoteError::SessionExpired { .. }
            | RemoteError::InvalidRequest
            | RemoteError::Internal
            | RemoteError::Unauthorized) => Error::Remote {
                kind: other.name(),
                message,
            },
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.error.name())
    }
}

impl std::error::Error for ErrorReply {}

pub(crate) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RemoteError {
    /// The code of a local error; `Error::Replication` keeps the replication code.
    pub fn from_error(e: &Error) -> RemoteError {
        match e {
            Error::Io { .. } => RemoteError::Io,
            Error::Corrupt { .. } | Error::CorruptFile { .. } | Error::RecoveryPointLost { .. } => {
                RemoteError::Corrupt
            }
            Error::PreviousIo | Error::Locked(_) | Error::ReadOnly | Error::Closed => {
                RemoteError::Unavailable
            }
            Error::InvalidConfig(_) | Error::ForeignDirectory { .. } | Error::NoLog { .. } => {
                RemoteError::Internal
            }
            Error::InvalidBatch(_) => RemoteError::InvalidBatch,
            Error::BatchTooLarge { size, max } => RemoteError::BatchTooLarge {
                size: *size,
                max: *max,
            },
            Error::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => RemoteError::OffsetOutOfRange {
                requested: *requested,
                log_start: *log_start,
                log_end: *log_end,
            },
            Error::UnexpectedAppendOffset { expected, actual } => {
                RemoteError::UnexpectedAppendOffset {
                    expected: *expected,
                    actual: *actual,
                }
            }
            Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch,
            } => RemoteError::ProducerFenced {
                producer_id: *producer_id,
                epoch: *epoch,
                current_epoch: *current_epoch,
            },
            Error::OutOfOrderSequence {
                producer_id,
                epoch,
                first_sequence,
                expected_sequence,
            } => RemoteError::OutOfOrderSequence {
                producer_id: *producer_id,
                epoch: *epoch,
                first_sequence: *first_sequence,
                expected_sequence: *expected_sequence,
            },
            Error::DuplicateSequence {
                producer_id,
                epoch,
                first_sequence,
            } => RemoteError::DuplicateSequence {
                producer_id: *producer_id,
                epoch: *epoch,
                first_sequence: *first_sequence,
            },
            Error::Timeout => RemoteError::Timeout,
            // Transactions do not cross the wire yet: the coordinator is in-process only.
            Error::InvalidTxnState { .. }
            | Error::CoordinatorFenced { .. }
            | Error::InvalidRecord { .. }
            | Error::ConcurrentTransactions { .. }
            | Error::UnknownPartition { .. }
            | Error::InvalidProducerIdMapping { .. } => RemoteError::InvalidRequest,
            Error::UnknownProducerId {
                producer_id,
                first_sequence,
            } => RemoteError::UnknownProducerId {
                producer_id: *producer_id,
                // -1 on the wire: no sequence (an epoch asked for an id never issued).
                first_sequence: first_sequence.unwrap_or(-1),
            },
            Error::NotLeader {
                leader,
                leader_epoch,
            } => RemoteError::NotLeader {
                leader: leader.map(ReplicaId),
                leader_epoch: *leader_epoch,
            },
            Error::NotEnoughReplicas { isr, min_isr } => RemoteError::NotEnoughReplicas {
                isr: saturating_u32(*isr),
                min_isr: saturating_u32(*min_isr),
            },
            Error::NotEnoughReplicasAfterAppend {
                maximal_isr,
                min_isr,
            } => RemoteError::NotEnoughReplicasAfterAppend {
                maximal_isr: saturating_u32(*maximal_isr),
                min_isr: saturating_u32(*min_isr),
            },
            Error::Replication(e) => RemoteError::from_replication(e.clone()),
            // A relayed remote error keeps its kind.
            Error::Remote { kind, .. } => RemoteError::message_only(kind),
        }
    }

    /// The code of a refused replication message (`NotEnoughReplicas` as code 2).
    pub fn from_replication(e: ReplicationError) -> RemoteError {
        match e {
            ReplicationError::NotEnoughReplicas { isr, min_isr } => {
                RemoteError::NotEnoughReplicas {
                    isr: saturating_u32(isr),
                    min_isr: saturating_u32(min_isr),
                }
            }
            e => RemoteError::Replication(e),
        }
    }

    /// The message-only error named `name` (as [`RemoteError::name`] gives it), else
    /// `Internal`.
    fn message_only(name: &str) -> RemoteError {
        [
            RemoteError::InvalidBatch,
            RemoteError::Corrupt,
            RemoteError::Io,
            RemoteError::Unavailable,
            RemoteError::InvalidRequest,
            RemoteError::Unauthorized,
        ]
        .into_iter()
        .find(|e| e.name() == name)
        .unwrap_or(RemoteError::Internal)
    }

    /// The wire code.
    pub fn code(&self) -> u8 {
        match self {
            RemoteError::NotLeader { .. } => 1,
            RemoteError::NotEnoughReplicas { .. } => 2,
            RemoteError::NotEnoughReplicasAfterAppend { .. } => 3,
            RemoteError::Timeout => 4,
            RemoteError::OutOfOrderSequence { .. } => 5,
            RemoteError::ProducerFenced { .. } => 6,
            RemoteError::DuplicateSequence { .. } => 7,
            RemoteError::UnknownProducerId { .. } => 8,
            RemoteError::OffsetOutOfRange { .. } => 9,
            RemoteError::UnexpectedAppendOffset { .. } => 10,
            RemoteError::BatchTooLarge { .. } => 11,
            RemoteError::InvalidBatch => 12,
            RemoteError::Corrupt => 13,
            RemoteError::Io => 14,
            RemoteError::Unavailable => 15,
            RemoteError::SessionExpired { .. } => 16,
            RemoteError::InvalidRequest => 17,
            RemoteError::Internal => 18,
            RemoteError::Unauthorized => 19,
            RemoteError::Replication(e) => match e {
                ReplicationError::InvalidEpochEntry { .. } => 32,
                ReplicationError::UnknownReplica(_) => 33,
                ReplicationError::FencedLeaderEpoch { .. } => 34,
                ReplicationError::UnknownLeaderEpoch { .. } => 35,
                ReplicationError::OffsetOutOfRange { .. } => 36,
                ReplicationError::NotEnoughReplicas { .. } => 2,
                ReplicationError::UnexpectedAppendOffset { .. } => 37,
                ReplicationError::BadBatchEpoch { .. } => 38,
                ReplicationError::StalePartitionEpoch { .. } => 39,
                ReplicationError::NotLeader { .. } => 40,
                ReplicationError::InvalidIsr { .. } => 41,
                ReplicationError::StaleIncarnation { .. } => 42,
                ReplicationError::IneligibleReplica(_) => 43,
                ReplicationError::NoEligibleLeader => 44,
            },
        }
    }

    /// A short stable name (`not_leader`, `fenced_leader_epoch`, ...) for messages and
    /// [`Error::Remote`].
    pub fn name(&self) -> &'static str {
        match self {
            RemoteError::NotLeader { .. } => "not_leader",
            RemoteError::NotEnoughReplicas { .. } => "not_enough_replicas",
            RemoteError::NotEnoughReplicasAfterAppend { .. } => "not_enough_replicas_after_append",
            RemoteError::Timeout => "timeout",
            RemoteError::OutOfOrderSequence { .. } => "out_of_order_sequence",
            RemoteError::ProducerFenced { .. } => "producer_fenced",
            RemoteError::DuplicateSequence { .. } => "duplicate_sequence",
            RemoteError::UnknownProducerId { .. } => "unknown_producer_id",
            RemoteError::OffsetOutOfRange { .. } => "offset_out_of_range",
            RemoteError::UnexpectedAppendOffset { .. } => "unexpected_append_offset",
            RemoteError::BatchTooLarge { .. } => "batch_too_large",
            RemoteError::InvalidBatch => "invalid_batch",
            RemoteError::Corrupt => "corrupt",
            RemoteError::Io => "io",
            RemoteError::Unavailable => "unavailable",
            RemoteError::SessionExpired { .. } => "session_expired",
            RemoteError::InvalidRequest => "invalid_request",
            RemoteError::Internal => "internal",
            RemoteError::Unauthorized => "unauthorized",
            RemoteError::Replication(e) => match e {
                ReplicationError::InvalidEpochEntry { .. } => "invalid_epoch_entry",
                ReplicationError::UnknownReplica(_) => "unknown_replica",
                ReplicationError::FencedLeaderEpoch { .. } => "fenced_leader_epoch",
                ReplicationError::UnknownLeaderEpoch { .. } => "unknown_leader_epoch",
                ReplicationError::OffsetOutOfRange { .. } => "fetch_offset_out_of_range",
                ReplicationError::NotEnoughReplicas { .. } => "not_enough_replicas",
                ReplicationError::UnexpectedAppendOffset { .. } => "fetch_unexpected_append_offset",
                ReplicationError::BadBatchEpoch { .. } => "bad_batch_epoch",
                ReplicationError::StalePartitionEpoch { .. } => "stale_partition_epoch",
                ReplicationError::NotLeader { .. } => "isr_proposal_not_from_leader",
                ReplicationError::InvalidIsr { .. } => "invalid_isr",
                ReplicationError::StaleIncarnation { .. } => "stale_incarnation",
                ReplicationError::IneligibleReplica(_) => "ineligible_replica",
                ReplicationError::NoEligibleLeader => "no_eligible_leader",
            },
        }
    }
}
