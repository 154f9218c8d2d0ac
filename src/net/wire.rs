//! The wire format of the TCP driver: every request and response is one frame.
//!
//! ```text
//! Format: { length u32 | version u8 | kind u8 | correlation_id u64 | payload | crc u32 }
//! ```
//!
//! `length` counts every byte after itself (version through crc), at least 14 and at most the
//! receiver's `max_frame_bytes`; the CRC-32 (IEEE, `crc32fast`) covers every byte after the
//! length and before the crc. A response carries the correlation id of its request. The payload
//! of each [`Message`] kind is tabulated in `docs/format.md` ("Wire protocol").
//!
//! Invariants: decoding is total (hostile bytes give a [`DecodeError`], never a panic, and
//! nothing is allocated from an untrusted count) and canonical (whatever decodes re-encodes to
//! the same bytes: booleans and presence bytes are 0 or 1, no trailing bytes, controller
//! records sorted).
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
use std::net::SocketAddr;

use super::codec::{Reader, Writer};
use super::remote_error::{self, ErrorReply};
use crate::format::DecodeError;
use crate::log::AppendInfo;
use crate::replication::PartitionEpoch;
use crate::replication::{
    AlterIsrRequest, EpochEndOffset, FetchRequest, FetchResponse, FetchedBatch, Incarnation,
    IsrMember, LeaderAndIsr, LogRecovery, ReplicaId,
};
use crate::types::LeaderEpoch;
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// The only frame version so far.
pub const VERSION: u8 = 1;
/// Bytes of a frame's leading `length` (u32), which counts the bytes after it.
pub const LENGTH_SIZE: usize = 4;
/// Byte position of the frame version (u8).
pub const VERSION_OFFSET: usize = LENGTH_SIZE;
/// Byte position of the message kind (u8).
pub const KIND_OFFSET: usize = VERSION_OFFSET + 1;
/// Byte position of the correlation id (u64).
pub const CORRELATION_OFFSET: usize = KIND_OFFSET + 1;
/// Byte position of the payload.
pub const PAYLOAD_OFFSET: usize = CORRELATION_OFFSET + 8;
/// Bytes of the trailing CRC-32.
pub const CRC_SIZE: usize = 4;
/// The smallest `length`: version, kind, correlation id and crc around an empty payload.
pub const MIN_LENGTH: u32 = (PAYLOAD_OFFSET - LENGTH_SIZE + CRC_SIZE) as u32;
/// Default limit on `length` (a fetch response carries up to `max_bytes` of batches).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 << 20;

/// acks values of [`Message::Produce`] (Kafka's): none, leader, all in-sync replicas.
pub const ACKS_NONE: i8 = 0;
/// acks=1: answered once the leader appended.
pub const ACKS_LEADER: i8 = 1;
/// acks=all (-1): answered once the high watermark passed the batch.
pub const ACKS_ALL: i8 = -1;

/// Every request and response of the protocol. Requests name their answer; any request may
/// instead be answered with [`Message::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 1, follower -> leader: answered by `FetchResponse`.
    Fetch(FetchRequest),
    /// 2
    FetchResponse(FetchResponse),
    /// 3: the answer to any request that failed.
    Error(ErrorReply),
    /// 4, client -> leader: one whole encoded `RecordBatch`. `acks`: 0, 1 or -1 (all);
    /// `timeout_ms`: how long an acks=all request may wait for the high-water mark. Answered by
    /// `ProduceResponse`.
    Produce {
        /// 0, 1 or -1 (all).
        acks: i8,
        /// How long an acks=all request may wait for the high watermark (ms).
        timeout_ms: u32,
        /// One whole encoded batch.
        batch: Vec<u8>,
    },
    /// 5: where the batch is (`duplicate`: a retry of a batch already in the log).
    ProduceResponse(AppendInfo),
    /// 6, client -> controller (`None`: a new producer id, epoch 0) or -> leader (`Some`: the
    /// next epoch of a known id, `Log::reinit_external_producer`). Answered by
    /// `ProducerIdAssigned`.
    InitProducerId {
        /// `None`: a new id; `Some`: the next epoch of this id.
        producer_id: Option<ProducerId>,
    },
    /// 7
    ProducerIdAssigned {
        /// The producer id.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: ProducerEpoch,
    },
    /// 8, client -> leader: committed batches from `offset`. Answered by `ReadResponse`.
    Read {
        /// The first offset wanted.
        offset: Offset,
        /// Most bytes of batches to return.
        max_bytes: u32,
    },
    /// 9: whole batches, all below `high_watermark`.
    ReadResponse {
        /// Readers see only offsets below this.
        high_watermark: Offset,
        /// The leader log's end offset.
        log_end: Offset,
        /// Whole encoded batches.
        bytes: Vec<u8>,
    },
    /// 10, anyone -> controller: answered by `MetadataResponse`.
    Metadata,
    /// 11
    MetadataResponse(ClusterMetadata),
    /// 12, replica -> controller, once per life: starts its session. Answered by
    /// `LeaderAndIsr`.
    Register {
        /// The replica registering.
        replica: ReplicaId,
        /// Its incarnation (new at every start).
        incarnation: Incarnation,
        /// What opening its log found.
        recovery: LogRecovery,
    },
    /// 13, replica -> controller, periodically: keeps the session. Answered by `LeaderAndIsr`,
    /// or `SessionExpired` (register again).
    Heartbeat {
        /// The replica.
        replica: ReplicaId,
        /// The incarnation it registered with.
        incarnation: Incarnation,
        /// Its log end offset.
        log_end: Offset,
    },
    /// 14, leader -> controller: answered by `LeaderAndIsr` or an error.
    AlterIsr(AlterIsrRequest),
    /// 15, operator -> controller: a new leader (`preferred` if given). Answered by `Elected`.
    ElectLeader {
        /// The replica to elect, if any.
        preferred: Option<ReplicaId>,
        /// Whether a replica outside the ISR may be elected (committed data may be lost).
        allow_unclean: bool,
    },
    /// 16, replica or operator -> controller: the replica stopped (controlled shutdown).
    /// Answered by `LeaderAndIsr`.
    ReplicaFailed {
        /// The replica that stopped.
        replica: ReplicaId,
    },
    /// 17: the controller's record.
    LeaderAndIsr(LeaderAndIsr),
    /// 18: the record after an election; `unclean`: committed data may have been lost.
    Elected {
        /// The record after the election.
        state: LeaderAndIsr,
        /// Whether the election was unclean.
        unclean: bool,
    },
    /// 19, replica -> controller, on a connection of its own (long poll): answered by
    /// `LeaderAndIsr` as soon as the controller's record is newer than the epochs given (or at
    /// once if it already is), else after `max_wait_ms` with the record as it is; or
    /// `SessionExpired` when the controller does not hold this life alive. Changes nothing.
    WatchPartition {
        /// The replica.
        replica: ReplicaId,
        /// The incarnation it registered with.
        incarnation: Incarnation,
        /// The leader epoch of the record it knows (-1: none).
        leader_epoch: LeaderEpoch,
        /// The partition epoch of the record it knows (-1: none).
        partition_epoch: PartitionEpoch,
        /// The longest the controller may hold the request (it may answer sooner).
        max_wait_ms: u32,
    },
}

/// The controller's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The partition's leader, epochs and ISR.
    pub state: LeaderAndIsr,
    /// The cluster's `min.insync.replicas`.
    pub min_insync_replicas: u32,
    /// Sorted by replica id.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's id.
    pub replica: ReplicaId,
    /// Its address in the cluster file.
    pub addr: SocketAddr,
    /// Has a live session (or has not missed one since the controller started).
    pub alive: bool,
    /// Restarted having lost data: not electable until back in the ISR.
    pub needs_catch_up: bool,
    /// The incarnation of its current session, if it registered.
    pub incarnation: Option<Incarnation>,
    /// The log end offset of its last heartbeat.
    pub log_end: Option<Offset>,
    /// Milliseconds since its last register or heartbeat.
    pub last_seen_ms_ago: Option<u64>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Pairs a response with its request.
    pub correlation_id: u64,
    /// The message.
    pub message: Message,
}

/// A message whose frame would exceed the limit (nothing was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The frame's length in bytes.
    pub length: u64,
    /// The limit, in bytes.
    pub max: u32,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame of {} bytes exceeds the maximum of {} bytes",
            self.length, self.max
        )
    }
}

impl std::error::Error for FrameTooLarge {}

impl Message {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Fetch(_) => 1,
            Message::FetchResponse(_) => 2,
            Message::Error(_) => 3,
            Message::Produce { .. } => 4,
            Message::ProduceResponse(_) => 5,
            Message::InitProducerId { .. } => 6,
            Message::ProducerIdAssigned { .. } => 7,
            Message::Read { .. } => 8,
            Message::ReadResponse { .. } => 9,
            Message::Metadata => 10,
            Message::MetadataResponse(_) => 11,
            Message::Register { .. } => 12,
            Message::Heartbeat { .. } => 13,
            Message::AlterIsr(_) => 14,
            Message::ElectLeader { .. } => 15,
            Message::ReplicaFailed { .. } => 16,
            Message::LeaderAndIsr(_) => 17,
            Message::Elected { .. } => 18,
            Message::WatchPartition { .. } => 19,
        }
    }

    /// The variant's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Fetch(_) => "Fetch",
            Message::FetchResponse(_) => "FetchResponse",
            Message::Error(_) => "Error",
            Message::Produce { .. } => "Produce",
            Message::ProduceResponse(_) => "ProduceResponse",
            Message::InitProducerId { .. } => "InitProducerId",
            Message::ProducerIdAssigned { .. } => "ProducerIdAssigned",
            Message::Read { .. } => "Read",
            Message::ReadResponse { .. } => "ReadResponse",
            Message::Metadata => "Metadata",
            Message::MetadataResponse(_) => "MetadataResponse",
            Message::Register { .. } => "Register",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::AlterIsr(_) => "AlterIsr",
            Message::ElectLeader { .. } => "ElectLeader",
            Message::ReplicaFailed { .. } => "ReplicaFailed",
            Message::LeaderAndIsr(_) => "LeaderAndIsr",
            Message::Elected { .. } => "Elected",
            Message::WatchPartition { .. } => "WatchPartition",
        }
    }
}

/// The whole frame of `message`, or `FrameTooLarge` if its `length` would exceed
/// `max_frame_bytes`.
pub fn encode_frame(
    correlation_id: u64,
    message: &Message,
    max_frame_bytes: u32,
) -> Result<Vec<u8>, FrameTooLarge> {
    let mut w = Writer::default();
    w.u32(0); // length, filled in below
    w.u8(VERSION);
    w.u8(message.kind());
    w.u64(correlation_id);
    encode_payload(&mut w, message);
    let crc = crc32fast::hash(w.buf.get(LENGTH_SIZE..).unwrap_or_default());
    w.u32(crc);
    let mut frame = w.buf;
    let length = (frame.len() - LENGTH_SIZE) as u64;
    let too_large = FrameTooLarge {
        length,
        max: max_frame_bytes,
    };
    let length = u32::try_from(length).map_err(|_| too_large)?;
    if length > max_frame_bytes {
        return Err(too_large);
    }
    if let Some(prefix) = frame.get_mut(..LENGTH_SIZE) {
        prefix.copy_from_slice(&length.to_le_bytes());
    }
    Ok(frame)
}

/// The `length` field of a frame, checked against `[MIN_LENGTH, max_frame_bytes]` before
/// anything is read or allocated.
pub fn frame_length(prefix: [u8; LENGTH_SIZE], max_frame_bytes: u32) -> Result<u32, DecodeError> {
    let length = u32::from_le_bytes(prefix);
    if length < MIN_LENGTH || length > max_frame_bytes {
        return Err(DecodeError::BadLength {
            length: u64::from(length),
        });
    }
    Ok(length)
}

/// The checked envelope of a frame body (the bytes after the length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The message kind byte.
    pub kind: u8,
    /// The correlation id.
    pub correlation_id: u64,
    /// The payload, still encoded.
    pub payload: &'a [u8],
}

/// Checks a frame body's CRC and version and splits it. A receiver that gets an envelope but
/// cannot decode its payload can still answer with the correlation id.
pub fn open_envelope(body: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let min = MIN_LENGTH as usize;
    if body.len() < min {
        return Err(DecodeError::TooShort {
            need: min as u64,
            have: body.len() as u64,
        });
    }
    let crc_at = body.len() - CRC_SIZE;
    let (covered, stored) = body.split_at(crc_at);
    let mut r = Reader::new(stored);
    let stored = r.u32()?;
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let mut r = Reader::new(covered);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let kind = r.u8()?;
    let correlation_id = r.u64()?;
    let payload = r.take(r.remaining())?;
    Ok(Envelope {
        kind,
        correlation_id,
        payload,
    })
}

/// Decodes a frame body (the bytes after the length).
pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
    let env = open_envelope(body)?;
    Ok(Frame {
        correlation_id: env.correlation_id,
        message: decode_payload(env.kind, env.payload)?,
    })
}

/// Decodes one whole frame; `frame` must be exactly one frame long.
pub fn decode_frame(frame: &[u8], max_frame_bytes: u32) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(frame);
    let prefix = r.u32()?.to_le_bytes();
    let length = frame_length(prefix, max_frame_bytes)?;
    let body = r.take(length as usize)?;
    r.finish()?;
    decode_body(body)
}

// ---- payload encoders ------------------------------------------------------------------------

fn encode_payload(w: &mut Writer, m: &Message) {
    match m {
        Message::Fetch(f) => {
            w.u32(f.replica.0);
            w.u64(f.incarnation);
            w.u64(f.fetch_offset.0);
            w.option(f.last_fetched_epoch, |w, e| w.i32(e));
            w.i32(f.current_leader_epoch);
            w.u32(f.max_bytes);
        }
        Message::FetchResponse(f) => {
            w.i32(f.leader_epoch);
            w.u64(f.high_watermark.0);
            w.u64(f.log_start.0);
            w.u64(f.log_end.0);
            w.option(f.diverging, |w, d| {
                w.i32(d.epoch);
                w.u64(d.end_offset.0);
            });
            w.bool(f.out_of_range);
            w.list(&f.batches, |w, b| {
                w.u64(b.base_offset.0);
                w.u64(b.last_offset.0);
                w.i32(b.leader_epoch);
                w.bytes(&b.bytes);
            });
        }
        Message::Error(e) => remote_error::encode(w, e),
        Message::Produce {
            acks,
            timeout_ms,
            batch,
        } => {
            w.i8(*acks);
            w.u32(*timeout_ms);
            w.bytes(batch);
        }
        Message::ProduceResponse(info) => {
            w.u64(info.base_offset.0);
            w.u64(info.last_offset.0);
            w.i64(info.append_time_ms);
            w.bool(info.duplicate);
        }
        Message::InitProducerId { producer_id } => w.option(*producer_id, |w, p| w.i64(p.0)),
        Message::ProducerIdAssigned { producer_id, epoch } => {
            w.i64(producer_id.0);
            w.i16(*epoch);
        }
        Message::Read { offset, max_bytes } => {
            w.u64(offset.0);
            w.u32(*max_bytes);
        }
        Message::ReadResponse {
            high_watermark,
            log_end,
            bytes,
        } => {
            w.u64(high_watermark.0);
            w.u64(log_end.0);
            w.bytes(bytes);
        }
        Message::Metadata => {}
        Message::MetadataResponse(m) => {
            encode_leader_and_isr(w, &m.state);
            w.u32(m.min_insync_replicas);
            w.list(&m.replicas, |w, s| {
                w.u32(s.replica.0);
                w.socket_addr(s.addr);
                w.bool(s.alive);
                w.bool(s.needs_catch_up);
                w.option(s.incarnation, |w, i| w.u64(i));
                w.option(s.log_end, |w, o| w.u64(o.0));
                w.option(s.last_seen_ms_ago, |w, ms| w.u64(ms));
            });
        }
        Message::Register {
            replica,
            incarnation,
            recovery,
        } => {
            w.u32(replica.0);
            w.u64(*incarnation);
            w.u8(match recovery {
                LogRecovery::Intact => 0,
                LogRecovery::MayHaveLostTail => 1,
                LogRecovery::EmptyOrDamaged => 2,
            });
        }
        Message::Heartbeat {
            replica,
            incarnation,
            log_end,
        } => {
            w.u32(replica.0);
            w.u64(*incarnation);
            w.u64(log_end.0);
        }
        Message::AlterIsr(a) => {
            w.u32(a.leader.0);
            w.i32(a.leader_epoch);
            w.i32(a.partition_epoch);
            w.list(&a.new_isr, |w, m| {
                w.u32(m.replica.0);
                w.option(m.incarnation, |w, i| w.u64(i));
            });
        }
        Message::ElectLeader {
            preferred,
            allow_unclean,
        } => {
            w.option(*preferred, |w, r| w.u32(r.0));
            w.bool(*allow_unclean);
        }
        Message::ReplicaFailed { replica } => w.u32(replica.0),
        Message::LeaderAndIsr(s) => encode_leader_and_isr(w, s),
        Message::Elected { state, unclean } => {
            encode_leader_and_isr(w, state);
            w.bool(*unclean);
        }
        Message::WatchPartition {
            replica,
            incarnation,
            leader_epoch,
            partition_epoch,
            max_wait_ms,
        } => {
            w.u32(replica.0);
            w.u64(*incarnation);
            w.i32(*leader_epoch);
            w.i32(*partition_epoch);
            w.u32(*max_wait_ms);
        }
    }
}

fn encode_leader_and_isr(w: &mut Writer, s: &LeaderAndIsr) {
    w.option(s.leader, |w, r| w.u32(r.0));
    w.i32(s.leader_epoch);
    w.i32(s.partition_epoch);
    w.list(&s.isr, |w, r| w.u32(r.0));
}

// ---- payload decoders ------------------------------------------------------------------------

fn offset(r: &mut Reader<'_>) -> Result<Offset, DecodeError> {
    r.u64().map(Offset)
}

fn replica(r: &mut Reader<'_>) -> Result<ReplicaId, DecodeError> {
    r.u32().map(ReplicaId)
}

fn bad(field: &'static str, value: i64) -> DecodeError {
    DecodeError::BadField { field, value }
}

/// Decodes the payload of a message of `kind`; every byte must be used.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(payload);
    let m = match kind {
        1 => Message::Fetch(FetchRequest {
            replica: replica(&mut r)?,
            incarnation: r.u64()?,
            fetch_offset: offset(&mut r)?,
            last_fetched_epoch: r.option("last fetched epoch present", |r| r.i32())?,
            current_leader_epoch: r.i32()?,
            max_bytes: r.u32()?,
        }),
        2 => Message::FetchResponse(decode_fetch_response(&mut r)?),
        3 => Message::Error(remote_error::decode(&mut r)?),
        4 => {
            let acks = r.i8()?;
            if ![ACKS_NONE, ACKS_LEADER, ACKS_ALL].contains(&acks) {
                return Err(bad("acks", i64::from(acks)));
            }
            Message::Produce {
                acks,
                timeout_ms: r.u32()?,
                batch: r.bytes()?.to_vec(),
            }
        }
        5 => Message::ProduceResponse(AppendInfo {
            base_offset: offset(&mut r)?,
            last_offset: offset(&mut r)?,
            append_time_ms: r.i64()?,
            duplicate: r.bool("duplicate")?,
        }),
        6 => Message::InitProducerId {
            producer_id: r.option("producer id present", |r| r.i64().map(ProducerId))?,
        },
        7 => Message::ProducerIdAssigned {
            producer_id: ProducerId(r.i64()?),
            epoch: r.i16()?,
        },
        8 => Message::Read {
            offset: offset(&mut r)?,
            max_bytes: r.u32()?,
        },
        9 => Message::ReadResponse {
            high_watermark: offset(&mut r)?,
            log_end: offset(&mut r)?,
            bytes: r.bytes()?.to_vec(),
        },
        10 => Message::Metadata,
        11 => Message::MetadataResponse(decode_metadata(&mut r)?),
        12 => Message::Register {
            replica: replica(&mut r)?,
            incarnation: r.u64()?,
            recovery: match r.u8()? {
                0 => LogRecovery::Intact,
                1 => LogRecovery::MayHaveLostTail,
                2 => LogRecovery::EmptyOrDamaged,
                v => return Err(bad("log recovery", i64::from(v))),
            },
        },
        13 => Message::Heartbeat {
            replica: replica(&mut r)?,
            incarnation: r.u64()?,
            log_end: offset(&mut r)?,
        },
        14 => Message::AlterIsr(AlterIsrRequest {
            leader: replica(&mut r)?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
            // Not checked here: the controller answers a malformed proposal with a typed error.
            new_isr: r.list(|r| {
                Ok(IsrMember {
                    replica: replica(r)?,
                    incarnation: r.option("incarnation present", |r| r.u64())?,
                })
            })?,
        }),
        15 => Message::ElectLeader {
            preferred: r.option("preferred present", replica)?,
            allow_unclean: r.bool("allow unclean")?,
        },
        16 => Message::ReplicaFailed {
            replica: replica(&mut r)?,
        },
        17 => Message::LeaderAndIsr(decode_leader_and_isr(&mut r)?),
        18 => Message::Elected {
            state: decode_leader_and_isr(&mut r)?,
            unclean: r.bool("unclean")?,
        },
        19 => Message::WatchPartition {
            replica: replica(&mut r)?,
            incarnation: r.u64()?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
            max_wait_ms: r.u32()?,
        },
        _ => return Err(bad("message kind", i64::from(kind))),
    };
    r.finish()?;
    Ok(m)
}

/// Keeps the `FetchResponse` invariant: diverging, out of range, or batches — one of them.
fn decode_fetch_response(r: &mut Reader<'_>) -> Result<FetchResponse, DecodeError> {
    let leader_epoch = r.i32()?;
    let high_watermark = offset(r)?;
    let log_start = offset(r)?;
    let log_end = offset(r)?;
    let diverging = r.option("diverging present", |r| {
        Ok(EpochEndOffset {
            epoch: r.i32()?,
            end_offset: offset(r)?,
        })
    })?;
    let out_of_range = r.bool("out of range")?;
    let batches = r.list(|r| {
        let b = FetchedBatch {
            base_offset: offset(r)?,
            last_offset: offset(r)?,
            leader_epoch: r.i32()?,
            bytes: r.bytes()?.to_vec(),
        };
        if b.last_offset < b.base_offset {
            return Err(bad("fetched batch last offset", b.last_offset.0 as i64));
        }
        Ok(b)
    })?;
    let outcomes = usize::from(diverging.is_some())
        + usize::from(out_of_range)
        + usize::from(!batches.is_empty());
    if outcomes > 1 {
        return Err(bad("fetch response outcomes", outcomes as i64));
    }
    Ok(FetchResponse {
        leader_epoch,
        high_watermark,
        log_start,
        log_end,
        diverging,
        out_of_range,
        batches,
    })
}

/// Keeps the `LeaderAndIsr` invariant: the ISR is non-empty and strictly increasing.
fn decode_leader_and_isr(r: &mut Reader<'_>) -> Result<LeaderAndIsr, DecodeError> {
    let s = LeaderAndIsr {
        leader: r.option("leader present", replica)?,
        leader_epoch: r.i32()?,
        partition_epoch: r.i32()?,
        isr: r.list(replica)?,
    };
    if s.isr.is_empty() || !s.isr.windows(2).all(|p| p.first() < p.get(1)) {
        return Err(bad("ISR order", s.isr.len() as i64));
    }
    Ok(s)
}

fn decode_metadata(r: &mut Reader<'_>) -> Result<ClusterMetadata, DecodeError> {
    let state = decode_leader_and_isr(r)?;
    let min_insync_replicas = r.u32()?;
    let replicas = r.list(|r| {
        Ok(ReplicaStatus {
            replica: replica(r)?,
            addr: r.socket_addr()?,
            alive: r.bool("alive")?,
            needs_catch_up: r.bool("needs catch up")?,
            incarnation: r.option("incarnation present", |r| r.u64())?,
            log_end: r.option("log end present", offset)?,
            last_seen_ms_ago: r.option("last seen present", |r| r.u64())?,
        })
    })?;
    if !replicas.windows(2).all(|p| match p {
        [a, b] => a.replica < b.replica,
        _ => true,
    }) {
        return Err(bad("replica order", replicas.len() as i64));
    }
    Ok(ClusterMetadata {
        state,
        min_insync_replicas,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::remote_error::tests::every_error;

    fn state() -> LeaderAndIsr {
        LeaderAndIsr {
            leader: Some(ReplicaId(2)),
            leader_epoch: 5,
            partition_epoch: 9,
            isr: vec![ReplicaId(1), ReplicaId(2)],
        }
    }

    /// At least one message of every kind, with optional fields both present and absent.
    pub(crate) fn every_message() -> Vec<Message> {
        let fetch = FetchRequest {
            replica: ReplicaId(3),
            incarnation: 77,
            fetch_offset: Offset(100),
            last_fetched_epoch: Some(4),
            current_leader_epoch: 5,
            max_bytes: 1 << 20,
        };
        let response = FetchResponse {
            leader_epoch: 5,
            high_watermark: Offset(90),
            log_start: Offset(0),
            log_end: Offset(120),
            diverging: None,
            out_of_range: false,
            batches: vec![
                FetchedBatch {
                    base_offset: Offset(100),
                    last_offset: Offset(109),
                    leader_epoch: 5,
                    bytes: vec![1, 2, 3],
                },
                FetchedBatch {
                    base_offset: Offset(110),
                    last_offset: Offset(119),
                    leader_epoch: 5,
                    bytes: vec![],
                },
            ],
        };
        let mut v = vec![
            Message::Fetch(fetch.clone()),
            Message::Fetch(FetchRequest {
                last_fetched_epoch: None,
                ..fetch
            }),
            Message::FetchResponse(response.clone()),
            Message::FetchResponse(FetchResponse {
                diverging: Some(EpochEndOffset {
                    epoch: 3,
                    end_offset: Offset(95),
                }),
                batches: vec![],
                ..response.clone()
            }),
            Message::FetchResponse(FetchResponse {
                out_of_range: true,
                batches: vec![],
                ..response
            }),
            Message::Produce {
                acks: ACKS_ALL,
                timeout_ms: 30_000,
                batch: vec![9; 70],
            },
            Message::Produce {
                acks: ACKS_NONE,
                timeout_ms: 0,
                batch: vec![],
            },
            Message::ProduceResponse(AppendInfo {
                base_offset: Offset(10),
                last_offset: Offset(14),
                append_time_ms: 1_700_000_000_000,
                duplicate: true,
            }),
            Message::InitProducerId { producer_id: None },
            Message::InitProducerId {
                producer_id: Some(ProducerId(12)),
            },
            Message::ProducerIdAssigned {
                producer_id: ProducerId(12),
                epoch: 3,
            },
            Message::Read {
                offset: Offset(5),
                max_bytes: 4096,
            },
            Message::ReadResponse {
                high_watermark: Offset(10),
                log_end: Offset(12),
                bytes: vec![7; 33],
            },
            Message::Metadata,
            Message::MetadataResponse(ClusterMetadata {
                state: state(),
                min_insync_replicas: 2,
                replicas: vec![
                    ReplicaStatus {
                        replica: ReplicaId(1),
                        addr: "127.0.0.1:7071".parse().unwrap(),
                        alive: true,
                        needs_catch_up: false,
                        incarnation: Some(5),
                        log_end: Some(Offset(120)),
                        last_seen_ms_ago: Some(40),
                    },
                    ReplicaStatus {
                        replica: ReplicaId(2),
                        addr: "[::1]:7072".parse().unwrap(),
                        alive: false,
                        needs_catch_up: true,
                        incarnation: None,
                        log_end: None,
                        last_seen_ms_ago: None,
                    },
                ],
            }),
            Message::Register {
                replica: ReplicaId(1),
                incarnation: 1,
                recovery: LogRecovery::Intact,
            },
            Message::Register {
                replica: ReplicaId(2),
                incarnation: 2,
                recovery: LogRecovery::MayHaveLostTail,
            },
            Message::Register {
                replica: ReplicaId(3),
                incarnation: 3,
                recovery: LogRecovery::EmptyOrDamaged,
            },
            Message::Heartbeat {
                replica: ReplicaId(1),
                incarnation: 1,
                log_end: Offset(55),
            },
            Message::AlterIsr(AlterIsrRequest {
                leader: ReplicaId(1),
                leader_epoch: 2,
                partition_epoch: 3,
                new_isr: vec![
                    IsrMember {
                        replica: ReplicaId(1),
                        incarnation: None,
                    },
                    IsrMember {
                        replica: ReplicaId(3),
                        incarnation: Some(8),
                    },
                ],
            }),
            Message::ElectLeader {
                preferred: Some(ReplicaId(2)),
                allow_unclean: false,
            },
            Message::ElectLeader {
                preferred: None,
                allow_unclean: true,
            },
            Message::ReplicaFailed {
                replica: ReplicaId(2),
            },
            Message::LeaderAndIsr(state()),
            Message::LeaderAndIsr(LeaderAndIsr {
                leader: None,
                ..state()
            }),
            Message::Elected {
                state: state(),
                unclean: true,
            },
            Message::WatchPartition {
                replica: ReplicaId(2),
                incarnation: 9,
                leader_epoch: -1,
                partition_epoch: 7,
                max_wait_ms: 500,
            },
        ];
        for e in every_error() {
            let message = format!("{} happened", e.name());
            v.push(Message::Error(ErrorReply::new(e, message)));
        }
        v
    }

    const MAX: u32 = DEFAULT_MAX_FRAME_BYTES;

    #[test]
    fn every_message_kind_round_trips() {
        let mut kinds = std::collections::BTreeSet::new();
        for (i, m) in every_message().into_iter().enumerate() {
            let id = 1000 + i as u64;
            let frame = encode_frame(id, &m, MAX).unwrap();
            let back = decode_frame(&frame, MAX).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            assert_eq!(back.correlation_id, id);
            assert_eq!(back.message, m);
            // Canonical: the decoded message encodes to the same bytes.
            assert_eq!(encode_frame(id, &back.message, MAX).unwrap(), frame);
            kinds.insert(m.kind());
        }
        assert_eq!(kinds, (1..=19).collect(), "every kind is exercised");
    }

    #[test]
    fn every_truncation_of_a_frame_is_an_error() {
        for m in every_message() {
            let frame = encode_frame(1, &m, MAX).unwrap();
            for len in 0..frame.len() {
                let cut = &frame[..len];
                assert!(decode_frame(cut, MAX).is_err(), "{m:?} cut at {len}");
                // A body cut short, with its length field fixed up, fails the CRC or the layout.
                if len > LENGTH_SIZE {
                    assert!(decode_body(&cut[LENGTH_SIZE..]).is_err(), "{m:?} at {len}");
                }
            }
            let mut longer = frame.clone();
            longer.push(0);
            assert!(decode_frame(&longer, MAX).is_err());
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        for m in every_message() {
            let frame = encode_frame(7, &m, MAX).unwrap();
            for bit in 0..frame.len() * 8 {
                let mut bad = frame.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let err = decode_frame(&bad, MAX).expect_err("a flipped bit must not decode");
                if bit >= LENGTH_SIZE * 8 {
                    // Past the length, only the CRC can notice (and always does).
                    assert!(
                        matches!(err, DecodeError::ChecksumMismatch { .. }),
                        "{m:?} bit {bit}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn frame_limits() {
        let big = Message::ReadResponse {
            high_watermark: Offset(0),
            log_end: Offset(0),
            bytes: vec![0; 1000],
        };
        let frame = encode_frame(1, &big, MAX).unwrap();
        let length = (frame.len() - LENGTH_SIZE) as u32;
        assert!(encode_frame(1, &big, length).is_ok());
        assert_eq!(
            encode_frame(1, &big, length - 1),
            Err(FrameTooLarge {
                length: u64::from(length),
                max: length - 1
            })
        );
        assert!(matches!(
            decode_frame(&frame, length - 1),
            Err(DecodeError::BadLength { .. })
        ));
        let prefix = |n: u32| n.to_le_bytes();
        assert!(frame_length(prefix(MIN_LENGTH - 1), MAX).is_err());
        assert!(frame_length(prefix(MIN_LENGTH), MAX).is_ok());
        assert!(frame_length(prefix(u32::MAX), MAX).is_err());
    }

    /// Builds a valid frame around an arbitrary kind and payload.
    fn raw_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![version, kind];
        body.extend_from_slice(&9u64.to_le_bytes());
        body.extend_from_slice(payload);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn unknown_versions_kinds_and_non_canonical_payloads_are_rejected() {
        assert_eq!(
            decode_frame(&raw_frame(VERSION, 10, &[]), MAX).unwrap(),
            Frame {
                correlation_id: 9,
                message: Message::Metadata
            }
        );
        assert!(matches!(
            decode_frame(&raw_frame(2, 10, &[]), MAX),
            Err(DecodeError::BadMagic { magic: 2 })
        ));
        for kind in [0u8, 20, 255] {
            let frame = raw_frame(VERSION, kind, &[]);
            let env = open_envelope(&frame[LENGTH_SIZE..]).unwrap();
            assert_eq!(env.correlation_id, 9, "the envelope survives a bad kind");
            assert!(decode_frame(&raw_frame(VERSION, kind, &[]), MAX).is_err());
        }
        // Trailing payload bytes, acks outside {0, 1, -1}, a presence byte of 2, a bad recovery.
        assert!(decode_frame(&raw_frame(VERSION, 10, &[0]), MAX).is_err());
        assert!(decode_frame(&raw_frame(VERSION, 4, &[2, 0, 0, 0, 0, 0, 0, 0, 0]), MAX).is_err());
        assert!(decode_frame(&raw_frame(VERSION, 6, &[2]), MAX).is_err());
        let mut register = vec![1, 0, 0, 0];
        register.extend_from_slice(&[0; 8]);
        register.push(3);
        assert!(decode_frame(&raw_frame(VERSION, 12, &register), MAX).is_err());
        // An empty or unsorted ISR in a controller record.
        let mut w = Writer::default();
        encode_leader_and_isr(
            &mut w,
            &LeaderAndIsr {
                isr: vec![ReplicaId(2), ReplicaId(1)],
                ..state()
            },
        );
        assert!(decode_frame(&raw_frame(VERSION, 17, &w.buf), MAX).is_err());
        let mut w = Writer::default();
        encode_leader_and_isr(
            &mut w,
            &LeaderAndIsr {
                isr: vec![],
                ..state()
            },
        );
        assert!(decode_frame(&raw_frame(VERSION, 17, &w.buf), MAX).is_err());
    }

    /// Re-frames a mutated body: correct length and CRC, so the payload decoders see it.
    fn reframe(body_without_crc: &[u8]) -> Vec<u8> {
        let mut frame = ((body_without_crc.len() + CRC_SIZE) as u32)
            .to_le_bytes()
            .to_vec();
        frame.extend_from_slice(body_without_crc);
        let crc = crc32fast::hash(body_without_crc);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame
    }

    #[test]
    fn mutated_payloads_with_a_valid_crc_never_panic_and_round_trip() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let mut accepted = 0;
        for m in every_message() {
            let frame = encode_frame(3, &m, MAX).unwrap();
            let body = &frame[LENGTH_SIZE..frame.len() - CRC_SIZE];
            for _ in 0..300 {
                let mut b = body.to_vec();
                for _ in 0..1 + rand(3) {
                    let at = rand(b.len());
                    match rand(4) {
                        0 => b[at] = rand(256) as u8,
                        1 => b[at] ^= 1 << rand(8),
                        2 => b.insert(at, rand(256) as u8),
                        _ if b.len() > 2 => {
                            b.remove(at);
                        }
                        _ => {}
                    }
                }
                let f = reframe(&b);
                if decode_frame(&f, MAX).is_ok() {
                    accepted += 1;
                }
                crate::fuzzing::decode_wire(&f);
            }
        }
        assert!(
            accepted > 100,
            "mutations should often stay valid: {accepted}"
        );
    }

    #[test]
    fn a_fetch_response_with_two_outcomes_is_rejected() {
        let Message::FetchResponse(mut r) = every_message()[2].clone() else {
            unreachable!()
        };
        r.out_of_range = true;
        let mut w = Writer::default();
        encode_payload(&mut w, &Message::FetchResponse(r));
        assert!(decode_frame(&raw_frame(VERSION, 2, &w.buf), MAX).is_err());
    }
}
