//! A typed client of the controller process: one method per request, each answering the
//! expected message or a [`NetError`] (an error reply is `NetErrorKind::Remote`, an answer of
//! the wrong kind `UnexpectedResponse`). Like [`Connection`], it never re-sends a failed call.
//!
//! With several controller addresses (controllers on etcd, [`ControllerClient::for_cluster`]),
//! a call that could not reach its controller (any error but an error reply) moves the client
//! to the next address for the next call; the caller's retry then reaches another controller.
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

use super::cluster_file::ClusterFile;
use super::security::Member;
use super::tls::Security;
use super::transport::{unexpected, Connection, NetError, NetErrorKind, TransportConfig};
use super::wire::{ClusterMetadata, Message};
use crate::replication::controller::Election;
use crate::replication::{AlterIsrRequest, Incarnation, LeaderAndIsr, LogRecovery, ReplicaId};
use crate::types::{Offset, ProducerEpoch, ProducerId};

#[derive(Debug)]
/// A client of the controller (of every controller address, failing over on an unreachable one).
pub struct ControllerClient {
    /// One per controller address; never empty.
    conns: Vec<Connection>,
    /// The one the next call uses.
    current: usize,
    /// Per call, connecting included.
    pub timeout: Duration,
}

impl ControllerClient {
    /// A client of the controller at `addr`; `timeout` bounds each call, connecting included.
    pub fn new(addr: SocketAddr, config: TransportConfig, timeout: Duration) -> Self {
        Self::with_addrs(addr, &[], config, timeout)
    }

    /// A client of every controller the cluster file names (the first one first).
    pub fn for_cluster(cluster: &ClusterFile, config: TransportConfig, timeout: Duration) -> Self {
        Self::with_addrs(
            cluster.controller,
            &cluster.standby_controllers,
            config,
            timeout,
        )
    }

    fn with_addrs(
        first: SocketAddr,
        others: &[SocketAddr],
        config: TransportConfig,
        timeout: Duration,
    ) -> Self {
        let mut conns = vec![Connection::new(first, config)];
        conns.extend(others.iter().map(|a| Connection::new(*a, config)));
        ControllerClient {
            conns,
            current: 0,
            timeout,
        }
    }

    /// Speaks TLS with `security` (when given) to servers that must be the controller (every
    /// address this client may fail over to).
    pub fn with_security(mut self, security: Option<Security>) -> Self {
        if let Some(s) = security {
            for conn in &mut self.conns {
                conn.set_tls(s.clone(), Member::Controller);
            }
        }
        self
    }

    /// The controller the next call goes to.
    pub fn addr(&self) -> SocketAddr {
        self.conns
            .get(self.current)
            .or(self.conns.first())
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), Connection::addr)
    }

    /// The raw call, for requests without a typed method. A controller that cannot be reached
    /// (no answer, as opposed to an error reply) is skipped: the request goes to the next
    /// address, each at most once, and the one that answers stays current. Sending a request
    /// again is safe: the controllers on etcd apply each change by compare-and-set, so an ISR
    /// change that did land before its answer was lost is refused as stale, a registration or
    /// heartbeat is repeated, a second producer-id block only skips ids, and a repeated
    /// election at most starts one more leader epoch.
    pub fn call(&mut self, request: &Message) -> Result<Message, NetError> {
        let n = self.conns.len().max(1);
        let mut result = Err(NetError {
            addr: self.addr(),
            kind: NetErrorKind::Closed,
        });
        for _ in 0..n {
            let Some(conn) = self.conns.get_mut(self.current % n) else {
                break;
            };
            result = conn.call(request, self.timeout);
            if !matches!(&result, Err(e) if e.remote().is_none()) {
                break;
            }
            self.current = (self.current + 1) % n;
        }
        result
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

    /// Long-polls the record: answers as soon as the controller's record is newer than `known`
    /// (the leader and partition epochs of the record the replica holds; `None`: it holds
    /// none), or after about `max_wait` with the record as it is. `SessionExpired`: the
    /// controller does not hold this life alive. Use a client of its own, whose `timeout`
    /// exceeds `max_wait`: the call is parked at the controller meanwhile.
    pub fn watch_partition(
        &mut self,
        replica: ReplicaId,
        incarnation: Incarnation,
        known: Option<&LeaderAndIsr>,
        max_wait: Duration,
    ) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::WatchPartition {
            replica,
            incarnation,
            leader_epoch: known.map_or(-1, |k| k.leader_epoch),
            partition_epoch: known.map_or(-1, |k| k.partition_epoch),
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
        })
    }

    /// Proposes an ISR change; answers the controller's record after it, or why it was refused.
    pub fn alter_isr(&mut self, req: &AlterIsrRequest) -> Result<LeaderAndIsr, NetError> {
        self.record(Message::AlterIsr(req.clone()))
    }

    /// Reports `replica` stopped (controlled shutdown); answers the controller's record after it.
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

    /// The controller's view of the cluster: the record and every replica's session.
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
