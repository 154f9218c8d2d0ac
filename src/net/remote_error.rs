//! Error replies on the wire: a typed code, the fields a client acts on, and the remote's
//! message. Every [`crate::Error`] and every [`ReplicationError`] maps to one code, and the
//! typed ones come back as the same variant with the same fields ([`ErrorReply::into_error`]),
//! so a network client can drive the same retry rules as a local one (`producer::client`).
//!
//! ```text
//! Format: { code u8 | fields (per code, see docs/format.md) | message string }
//! ```
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

use super::codec::{Reader, Writer};
use crate::error::Error;
use crate::format::DecodeError;
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

/// The wire code of each [`InvalidIsr`](ReplicationError::InvalidIsr) reason the crate uses;
/// any other reason travels as 0 and comes back as [`UNSPECIFIED_ISR_REASON`].
const ISR_REASONS: [&str; 2] = [
    "a member is named twice",
    "the ISR does not contain the leader",
];
/// The `InvalidIsr` reason decoded from wire code 0 (a reason without a code of its own).
pub const UNSPECIFIED_ISR_REASON: &str = "unspecified (see the error message)";

fn saturating_u32(n: usize) -> u32 {
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

fn offset(r: &mut Reader<'_>) -> Result<Offset, DecodeError> {
    r.u64().map(Offset)
}

fn replica(r: &mut Reader<'_>) -> Result<ReplicaId, DecodeError> {
    r.u32().map(ReplicaId)
}

pub(super) fn encode(w: &mut Writer, reply: &ErrorReply) {
    let e = &reply.error;
    w.u8(e.code());
    match e {
        RemoteError::NotLeader {
            leader,
            leader_epoch,
        } => {
            w.option(*leader, |w, r| w.u32(r.0));
            w.i32(*leader_epoch);
        }
        RemoteError::NotEnoughReplicas { isr, min_isr } => {
            w.u32(*isr);
            w.u32(*min_isr);
        }
        RemoteError::NotEnoughReplicasAfterAppend {
            maximal_isr,
            min_isr,
        } => {
            w.u32(*maximal_isr);
            w.u32(*min_isr);
        }
        RemoteError::OutOfOrderSequence {
            producer_id,
            epoch,
            first_sequence,
            expected_sequence,
        } => {
            w.i64(producer_id.0);
            w.i16(*epoch);
            w.i32(*first_sequence);
            w.i32(*expected_sequence);
        }
        RemoteError::ProducerFenced {
            producer_id,
            epoch,
            current_epoch,
        } => {
            w.i64(producer_id.0);
            w.i16(*epoch);
            w.i16(*current_epoch);
        }
        RemoteError::DuplicateSequence {
            producer_id,
            epoch,
            first_sequence,
        } => {
            w.i64(producer_id.0);
            w.i16(*epoch);
            w.i32(*first_sequence);
        }
        RemoteError::UnknownProducerId {
            producer_id,
            first_sequence,
        } => {
            w.i64(producer_id.0);
            w.i32(*first_sequence);
        }
        RemoteError::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        }
        | RemoteError::Replication(ReplicationError::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        }) => {
            w.u64(requested.0);
            w.u64(log_start.0);
            w.u64(log_end.0);
        }
        RemoteError::UnexpectedAppendOffset { expected, actual }
        | RemoteError::Replication(ReplicationError::UnexpectedAppendOffset { expected, actual }) =>
        {
            w.u64(expected.0);
            w.u64(actual.0);
        }
        RemoteError::BatchTooLarge { size, max } => {
            w.u64(*size);
            w.u64(*max);
        }
        RemoteError::SessionExpired { replica } => w.u32(replica.0),
        RemoteError::Timeout
        | RemoteError::InvalidBatch
        | RemoteError::Corrupt
        | RemoteError::Io
        | RemoteError::Unavailable
        | RemoteError::InvalidRequest
        | RemoteError::Internal
        | RemoteError::Unauthorized
        | RemoteError::Replication(ReplicationError::NoEligibleLeader) => {}
        RemoteError::Replication(e) => encode_replication_fields(w, e),
    }
    w.string(&reply.message);
}

/// The fields of the replication codes not shared with a storage code (see `encode`).
fn encode_replication_fields(w: &mut Writer, e: &ReplicationError) {
    match e {
        ReplicationError::InvalidEpochEntry {
            epoch,
            start_offset,
        } => {
            w.i32(*epoch);
            w.u64(start_offset.0);
        }
        ReplicationError::UnknownReplica(r) | ReplicationError::IneligibleReplica(r) => w.u32(r.0),
        ReplicationError::FencedLeaderEpoch { request, current }
        | ReplicationError::UnknownLeaderEpoch { request, current } => {
            w.i32(*request);
            w.i32(*current);
        }
        ReplicationError::NotEnoughReplicas { isr, min_isr } => {
            w.u32(saturating_u32(*isr));
            w.u32(saturating_u32(*min_isr));
        }
        ReplicationError::BadBatchEpoch { base_offset, epoch } => {
            w.u64(base_offset.0);
            w.i32(*epoch);
        }
        ReplicationError::StalePartitionEpoch { proposed, current } => {
            w.i32(*proposed);
            w.i32(*current);
        }
        ReplicationError::NotLeader { replica } => w.u32(replica.0),
        ReplicationError::InvalidIsr { reason } => {
            let code = ISR_REASONS
                .iter()
                .position(|r| r == reason)
                .map_or(0, |i| i + 1);
            w.u8(u8::try_from(code).unwrap_or(0));
        }
        ReplicationError::StaleIncarnation {
            replica,
            proposed,
            current,
        } => {
            w.u32(replica.0);
            w.u64(*proposed);
            w.u64(*current);
        }
        // Encoded by `encode` (shared layouts or no fields).
        ReplicationError::OffsetOutOfRange { .. }
        | ReplicationError::UnexpectedAppendOffset { .. }
        | ReplicationError::NoEligibleLeader => {}
    }
}

pub(super) fn decode(r: &mut Reader<'_>) -> Result<ErrorReply, DecodeError> {
    let code = r.u8()?;
    let error = match code {
        1 => RemoteError::NotLeader {
            leader: r.option("leader present", replica)?,
            leader_epoch: r.i32()?,
        },
        2 => RemoteError::NotEnoughReplicas {
            isr: r.u32()?,
            min_isr: r.u32()?,
        },
        3 => RemoteError::NotEnoughReplicasAfterAppend {
            maximal_isr: r.u32()?,
            min_isr: r.u32()?,
        },
        4 => RemoteError::Timeout,
        5 => RemoteError::OutOfOrderSequence {
            producer_id: ProducerId(r.i64()?),
            epoch: r.i16()?,
            first_sequence: r.i32()?,
            expected_sequence: r.i32()?,
        },
        6 => RemoteError::ProducerFenced {
            producer_id: ProducerId(r.i64()?),
            epoch: r.i16()?,
            current_epoch: r.i16()?,
        },
        7 => RemoteError::DuplicateSequence {
            producer_id: ProducerId(r.i64()?),
            epoch: r.i16()?,
            first_sequence: r.i32()?,
        },
        8 => RemoteError::UnknownProducerId {
            producer_id: ProducerId(r.i64()?),
            first_sequence: r.i32()?,
        },
        9 => RemoteError::OffsetOutOfRange {
            requested: offset(r)?,
            log_start: offset(r)?,
            log_end: offset(r)?,
        },
        10 => RemoteError::UnexpectedAppendOffset {
            expected: offset(r)?,
            actual: offset(r)?,
        },
        11 => RemoteError::BatchTooLarge {
            size: r.u64()?,
            max: r.u64()?,
        },
        12 => RemoteError::InvalidBatch,
        13 => RemoteError::Corrupt,
        14 => RemoteError::Io,
        15 => RemoteError::Unavailable,
        16 => RemoteError::SessionExpired {
            replica: replica(r)?,
        },
        17 => RemoteError::InvalidRequest,
        18 => RemoteError::Internal,
        19 => RemoteError::Unauthorized,
        32..=44 => RemoteError::Replication(decode_replication(code, r)?),
        _ => {
            return Err(DecodeError::BadField {
                field: "error code",
                value: i64::from(code),
            })
        }
    };
    let message = r.string("error message")?;
    Ok(ErrorReply { error, message })
}

fn decode_replication(code: u8, r: &mut Reader<'_>) -> Result<ReplicationError, DecodeError> {
    Ok(match code {
        32 => ReplicationError::InvalidEpochEntry {
            epoch: r.i32()?,
            start_offset: offset(r)?,
        },
        33 => ReplicationError::UnknownReplica(replica(r)?),
        34 => ReplicationError::FencedLeaderEpoch {
            request: r.i32()?,
            current: r.i32()?,
        },
        35 => ReplicationError::UnknownLeaderEpoch {
            request: r.i32()?,
            current: r.i32()?,
        },
        36 => ReplicationError::OffsetOutOfRange {
            requested: offset(r)?,
            log_start: offset(r)?,
            log_end: offset(r)?,
        },
        37 => ReplicationError::UnexpectedAppendOffset {
            expected: offset(r)?,
            actual: offset(r)?,
        },
        38 => ReplicationError::BadBatchEpoch {
            base_offset: offset(r)?,
            epoch: r.i32()?,
        },
        39 => ReplicationError::StalePartitionEpoch {
            proposed: r.i32()?,
            current: r.i32()?,
        },
        40 => ReplicationError::NotLeader {
            replica: replica(r)?,
        },
        41 => {
            let reason = match r.u8()? {
                0 => UNSPECIFIED_ISR_REASON,
                n => *ISR_REASONS
                    .get(usize::from(n) - 1)
                    .ok_or(DecodeError::BadField {
                        field: "invalid ISR reason",
                        value: i64::from(n),
                    })?,
            };
            ReplicationError::InvalidIsr { reason }
        }
        42 => ReplicationError::StaleIncarnation {
            replica: replica(r)?,
            proposed: r.u64()?,
            current: r.u64()?,
        },
        43 => ReplicationError::IneligibleReplica(replica(r)?),
        _ => ReplicationError::NoEligibleLeader,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One value of every code (and every InvalidIsr reason).
    pub(crate) fn every_error() -> Vec<RemoteError> {
        let pid = ProducerId(42);
        let mut v = vec![
            RemoteError::NotLeader {
                leader: Some(ReplicaId(2)),
                leader_epoch: 7,
            },
            RemoteError::NotLeader {
                leader: None,
                leader_epoch: -1,
            },
            RemoteError::NotEnoughReplicas { isr: 1, min_isr: 2 },
            RemoteError::NotEnoughReplicasAfterAppend {
                maximal_isr: 1,
                min_isr: 3,
            },
            RemoteError::Timeout,
            RemoteError::OutOfOrderSequence {
                producer_id: pid,
                epoch: 1,
                first_sequence: 10,
                expected_sequence: 5,
            },
            RemoteError::ProducerFenced {
                producer_id: pid,
                epoch: 1,
                current_epoch: 2,
            },
            RemoteError::DuplicateSequence {
                producer_id: pid,
                epoch: 0,
                first_sequence: 3,
            },
            RemoteError::UnknownProducerId {
                producer_id: pid,
                first_sequence: 9,
            },
            RemoteError::OffsetOutOfRange {
                requested: Offset(9),
                log_start: Offset(1),
                log_end: Offset(5),
            },
            RemoteError::UnexpectedAppendOffset {
                expected: Offset(4),
                actual: Offset(6),
            },
            RemoteError::BatchTooLarge { size: 10, max: 5 },
            RemoteError::InvalidBatch,
            RemoteError::Corrupt,
            RemoteError::Io,
            RemoteError::Unavailable,
            RemoteError::SessionExpired {
                replica: ReplicaId(3),
            },
            RemoteError::InvalidRequest,
            RemoteError::Internal,
            RemoteError::Unauthorized,
        ];
        let repl = [
            ReplicationError::InvalidEpochEntry {
                epoch: 3,
                start_offset: Offset(8),
            },
            ReplicationError::UnknownReplica(ReplicaId(9)),
            ReplicationError::FencedLeaderEpoch {
                request: 1,
                current: 2,
            },
            ReplicationError::UnknownLeaderEpoch {
                request: 3,
                current: 2,
            },
            ReplicationError::OffsetOutOfRange {
                requested: Offset(1),
                log_start: Offset(2),
                log_end: Offset(3),
            },
            ReplicationError::UnexpectedAppendOffset {
                expected: Offset(1),
                actual: Offset(2),
            },
            ReplicationError::BadBatchEpoch {
                base_offset: Offset(5),
                epoch: 9,
            },
            ReplicationError::StalePartitionEpoch {
                proposed: 1,
                current: 4,
            },
            ReplicationError::NotLeader {
                replica: ReplicaId(2),
            },
            ReplicationError::InvalidIsr {
                reason: ISR_REASONS[0],
            },
            ReplicationError::InvalidIsr {
                reason: ISR_REASONS[1],
            },
            ReplicationError::InvalidIsr {
                reason: UNSPECIFIED_ISR_REASON,
            },
            ReplicationError::StaleIncarnation {
                replica: ReplicaId(3),
                proposed: 0,
                current: 1,
            },
            ReplicationError::IneligibleReplica(ReplicaId(3)),
            ReplicationError::NoEligibleLeader,
        ];
        v.extend(repl.into_iter().map(RemoteError::Replication));
        v
    }

    fn round_trip(reply: &ErrorReply) -> ErrorReply {
        let mut w = Writer::default();
        encode(&mut w, reply);
        let mut r = Reader::new(&w.buf);
        let back = decode(&mut r).unwrap();
        r.finish().unwrap();
        back
    }

    #[test]
    fn every_code_round_trips() {
        let mut codes = std::collections::BTreeSet::new();
        for e in every_error() {
            let reply = ErrorReply::new(e.clone(), format!("because {}", e.name()));
            assert_eq!(round_trip(&reply), reply, "{e:?}");
            codes.insert(e.code());
        }
        assert_eq!(codes.len(), 19 + 13, "every code is exercised once");
    }

    #[test]
    fn typed_errors_come_back_as_the_same_error() {
        let local = [
            Error::NotLeader {
                leader: Some(3),
                leader_epoch: 4,
            },
            Error::NotEnoughReplicas { isr: 1, min_isr: 2 },
            Error::OutOfOrderSequence {
                producer_id: ProducerId(1),
                epoch: 2,
                first_sequence: 3,
                expected_sequence: 4,
            },
            Error::DuplicateSequence {
                producer_id: ProducerId(1),
                epoch: 2,
                first_sequence: 3,
            },
            Error::Replication(ReplicationError::StalePartitionEpoch {
                proposed: 1,
                current: 2,
            }),
            Error::Timeout,
        ];
        for e in local {
            let reply = round_trip(&ErrorReply::from_error(&e));
            assert_eq!(reply.message, e.to_string());
            assert_eq!(reply.into_error().to_string(), e.to_string());
        }
        // NotEnoughReplicas from the replication rules travels as the storage code.
        let e = ReplicationError::NotEnoughReplicas { isr: 1, min_isr: 2 };
        let reply = ErrorReply::from_replication(&e);
        assert_eq!(reply.error.code(), 2);
        assert!(matches!(
            reply.into_error(),
            Error::NotEnoughReplicas { isr: 1, min_isr: 2 }
        ));
        // Message-only codes keep their kind through a relay.
        let relayed = ErrorReply::new(RemoteError::Corrupt, "bad crc").into_error();
        assert!(matches!(
            relayed,
            Error::Remote {
                kind: "corrupt",
                ..
            }
        ));
        assert_eq!(RemoteError::from_error(&relayed), RemoteError::Corrupt);
    }

    #[test]
    fn unknown_codes_and_reasons_are_rejected() {
        for code in [0u8, 20, 31, 45, 255] {
            let bytes = [code, 0, 0, 0, 0];
            let mut r = Reader::new(&bytes);
            assert!(decode(&mut r).is_err(), "code {code}");
        }
        let mut r = Reader::new(&[41, 3, 0, 0, 0, 0]);
        assert!(decode(&mut r).is_err());
    }
}
