//! A typed client of the controller process: one method per request, each answering the
//! expected message or a [`NetError`] (an error reply is `NetErrorKind::Remote`, an answer of
//! the wrong kind `UnexpectedResponse`). Like [`Connection`], it never re-sends a failed call.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::net::SocketAddr;
use std::time::Duration;

use super::security::Member;
use super::tls::Security;
use super::transport::{unexpected, Connection, NetError, TransportConfig};
use super::wire::{ClusterMetadata, Message};
use crate::replication::controller::Election;
use crate::replication::{AlterIsrRequest, Incarnation, LeaderAndIsr, LogRecovery, ReplicaId};
use crate::types::{Offset, ProducerEpoch, ProducerId};

#[derive(Debug)]
pub struct ControllerClient {
    conn: Connection,
    /// Per call, connecting included.
    pub timeout: Duration,
}

impl ControllerClient {
    pub fn new(addr: SocketAddr, config: TransportConfig, timeout: Duration) -> Self {
        ControllerClient {
            conn: Connection::new(addr, config),
            timeout,
        }
    }

    /// Speaks TLS with `security` (when given) to a server that must be the controller.
    pub fn with_security(mut self, security: Option<Security>) -> Self {
        if let Some(s) = security {
            self.conn.set_tls(s, Member::Controller);
        }
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.conn.addr()
    }

    /// The raw call, for requests without a typed method.
    pub fn call(&mut self, request: &Message) -> Result<Message, NetError> {
        self.conn.call(request, self.timeout)
    }

    fn record(&mut self, request: Message) -> Result<LeaderAndIsr, NetError> {
        match self.call(&request)? {
            Message::LeaderAndIsr(s) => Ok(s),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    /// Starts a session for this life of `replica`.
    pub fn register(
        &mut self,
        replica: ReplicaId,
        incarnation: Incarnation,
        recovery: LogRecovery,
    ) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::Register {
            replica,
            incarnation,
            recovery,
        })
    }

    /// Keeps the session; `SessionExpired` means register again.
    pub fn heartbeat(
        &mut self,
        replica: ReplicaId,
        incarnation: Incarnation,
        log_end: Offset,
    ) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::Heartbeat {
            replica,
            incarnation,
            log_end,
        })
    }

    pub fn alter_isr(&mut self, req: &AlterIsrRequest) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::AlterIsr(req.clone()))
    }

    pub fn replica_failed(&mut self, replica: ReplicaId) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::ReplicaFailed { replica })
    }

    /// A new leader: `preferred` if it is a clean candidate (Kafka's preferred election),
    /// otherwise the first clean candidate; unclean only with `allow_unclean`.
    pub fn elect_leader(
        &mut self,
        preferred: Option<ReplicaId>,
        allow_unclean: bool,
    ) -> Result<Election, NetError> {
        let request = Message::ElectLeader {
            preferred,
            allow_unclean,
        };
        match self.call(&request)? {
            Message::Elected { state, unclean } => Ok(Election { state, unclean }),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    pub fn metadata(&mut self) -> Result<ClusterMetadata, NetError> {
        let request = Message::Metadata;
        match self.call(&request)? {
            Message::MetadataResponse(m) => Ok(m),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    /// A new cluster-wide producer id (epoch 0).
    pub fn init_producer_id(&mut self) -> Result<(ProducerId, ProducerEpoch), NetError> {
        let request = Message::InitProducerId { producer_id: None };
        match self.call(&request)? {
            Message::ProducerIdAssigned { producer_id, epoch } => Ok((producer_id, epoch)),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }
}
