//! Error replies on the wire: [`ErrorReply`] (defined with the replica, `replica::error_reply`)
//! encoded as its code, the fields of that code, and the message.
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

use super::codec::{Reader, Writer};
use crate::format::DecodeError;
use crate::replica::error_reply::saturating_u32;
pub use crate::replica::error_reply::{ErrorReply, RemoteError};
use crate::replication::{ReplicaId, ReplicationError};
use crate::types::{Offset, ProducerId};

/// The wire code of each [`InvalidIsr`](ReplicationError::InvalidIsr) reason the crate uses;
/// any other reason travels as 0 and comes back as [`UNSPECIFIED_ISR_REASON`].
const ISR_REASONS: [&str; 2] = [
    "a member is named twice",
    "the ISR does not contain the leader",
];
/// The `InvalidIsr` reason decoded from wire code 0 (a reason without a code of its own).
pub const UNSPECIFIED_ISR_REASON: &str = "unspecified (see the error message)";

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
    use crate::error::Error;

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
