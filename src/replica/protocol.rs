//! The one message enum of replication: what replicas, their controller and their clients say
//! to each other. The seeded simulation queues these values, the thread driver sends them over
//! channels and the TCP node maps each onto a request or answer of its wire protocol
//! (`crate::net::wire`); [`super::ReplicaNode`] consumes and produces them.

use crate::format::batch::RecordBatch;
use crate::log::AppendInfo;
use crate::replica::{Acks, ErrorReply};
use crate::replication::{
    AlterIsrRequest, FetchRequest, FetchResponse, Incarnation, LeaderAndIsr, LogRecovery,
    ReplicationError,
};
use crate::types::Offset;

/// A replication message. Cloneable, so a simulated network can duplicate it.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Follower → leader. `id` tags the answer; a follower keeps one fetch in flight.
    Fetch {
        /// The follower's tag of this fetch.
        id: u64,
        /// The request.
        req: FetchRequest,
    },
    /// Leader → follower: the answer to fetch `id`, or why it was refused (not the leader of
    /// that epoch, a fenced or stale follower, a newer fetch of the same follower superseded
    /// it).
    FetchResponse {
        /// The fetch's tag.
        id: u64,
        /// The answer.
        result: Result<FetchResponse, ErrorReply>,
    },
    /// Client → leader: one batch (a COMMIT/ABORT marker batch is appended as a marker).
    Produce {
        /// The client's tag of this request.
        token: u64,
        /// The batch.
        batch: RecordBatch,
        /// When to answer.
        acks: Acks,
        /// How long an acks=all request may wait for the high-water mark.
        timeout_ms: u64,
    },
    /// Leader → client: where the batch is, or why it failed (`Timeout`: appended, outcome
    /// unknown; `NotLeader`: not written).
    ProduceResult {
        /// The request's tag.
        token: u64,
        /// The answer.
        result: Result<AppendInfo, ErrorReply>,
    },
    /// Controller → replica: the partition record, with the incarnation the controller knows
    /// for the recipient. A replica applies it only if that is its own (a record meant for an
    /// earlier life, or sent before the controller saw this life register, is stale).
    Record {
        /// The partition record.
        rec: LeaderAndIsr,
        /// The recipient's incarnation as the controller knows it.
        incarnation: Option<Incarnation>,
    },
    /// Replica → controller, every heartbeat period: the replica is alive.
    Heartbeat {
        /// The sender's incarnation.
        incarnation: Incarnation,
        /// Set until the controller answered this life: what its log recovered (the replica
        /// registers).
        registering: Option<LogRecovery>,
        /// The sender's log end.
        log_end: Offset,
    },
    /// Controller → replica: the replica's session expired; it must register again.
    SessionExpired,
    /// Leader → controller: an ISR change.
    AlterIsr(AlterIsrRequest),
    /// Controller → leader: the answer to [`Msg::AlterIsr`].
    AlterIsrResult(Result<LeaderAndIsr, ReplicationError>),
}

impl Msg {
    /// The message's name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Fetch { .. } => "Fetch",
            Msg::FetchResponse { .. } => "FetchResponse",
            Msg::Produce { .. } => "Produce",
            Msg::ProduceResult { .. } => "ProduceResult",
            Msg::Record { .. } => "Record",
            Msg::Heartbeat { .. } => "Heartbeat",
            Msg::SessionExpired => "SessionExpired",
            Msg::AlterIsr(_) => "AlterIsr",
            Msg::AlterIsrResult(_) => "AlterIsrResult",
        }
    }
}

/// Where a [`super::ReplicaNode`] sends a message, and what it reports.
#[derive(Debug)]
pub enum Output<A> {
    /// To another replica (a follower's fetch to its leader).
    ToReplica(crate::replication::ReplicaId, Msg),
    /// To the controller (heartbeats, ISR proposals).
    ToController(Msg),
    /// The answer to a request, to the address it came from.
    Reply(A, Msg),
    /// Something a driver may log or count.
    Event(NodeEvent),
}

/// What happened inside a node, for the driver's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The replica became leader of this epoch.
    Leads(crate::types::LeaderEpoch),
    /// A fetch answer truncated the log from `from` down to `to`.
    Truncated {
        /// Log end before.
        from: Offset,
        /// Log end after.
        to: Offset,
    },
    /// An operation failed in a way that a correct run on a working disk does not produce
    /// (a storage error, a refused controller record); the node goes on.
    Failed(String),
}
