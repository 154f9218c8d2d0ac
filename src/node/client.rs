//! A client of a TCP cluster: finds the leader through the controller and produces to it,
//! riding out leader changes. It is a [`ProduceTarget`], so the idempotent
//! [`crate::producer::Producer`] runs over it unchanged. It re-sends by the same policy as the
//! thread driver's client ([`crate::producer::retry`]): a plain batch whose outcome is unknown
//! (the leader died or stepped down with it) is returned as `Timeout`, never sent twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::log::AppendInfo;
use crate::net::transport::TLS_FAILED;
use crate::net::{
    ClusterFile, ControllerClient, NetErrorKind, ReadResult, RemoteError, ReplicaClient, Security,
    TransportConfig,
};
use crate::producer::retry::Attempts;
use crate::producer::{AttemptOutcome, ProduceTarget};
use crate::replica::Acks;
use crate::replication::ReplicaId;
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// Produces to and reads from the current leader of a cluster.
#[derive(Debug)]
pub struct PartitionClient {
    cluster: ClusterFile,
    controller: Mutex<ControllerClient>,
    replicas: Mutex<HashMap<ReplicaId, ReplicaClient>>,
    /// The acks of every produce.
    pub acks: Acks,
    /// How long an acks=all request may wait on the leader.
    pub produce_timeout_ms: u32,
    /// How long `produce` keeps re-sending a batch (after "not written" answers, and after
    /// lost answers when the batch is idempotent: see [`crate::producer::retry`]) before it
    /// returns `Timeout` to its caller.
    pub retry_for: Duration,
    request_timeout: Duration,
    security: Option<Security>,
}

impl PartitionClient {
    /// A client of `cluster` with `acks`: 5 s acks=all waits, 10 s of retries, 2 s requests, plain TCP.
    pub fn new(cluster: ClusterFile, acks: Acks) -> PartitionClient {
        let request_timeout = Duration::from_secs(2);
        PartitionClient {
            controller: Mutex::new(ControllerClient::for_cluster(
                &cluster,
                TransportConfig::default(),
                request_timeout,
            )),
            cluster,
            replicas: Mutex::new(HashMap::new()),
            acks,
            produce_timeout_ms: 5_000,
            retry_for: Duration::from_secs(10),
            request_timeout,
            security: None,
        }
    }

    /// Speaks TLS with `security` to the controller and the replicas (when given): the
    /// certificate it presents names the principal the cluster file's ACL grants operations
    /// (`docs/security.md`).
    pub fn with_security(mut self, security: Option<Security>) -> PartitionClient {
        // Every controller address, as `new` builds it: with controllers on etcd a secure
        // client still fails over between them.
        let controller = ControllerClient::for_cluster(
            &self.cluster,
            TransportConfig::default(),
            self.request_timeout,
        )
        .with_security(security.clone());
        self.controller = Mutex::new(controller);
        self.replicas = Mutex::new(HashMap::new());
        self.security = security;
        self
    }

    /// The leader the controller names now.
    pub fn leader(&self) -> Result<ReplicaId> {
        let m = self.controller.lock().metadata()?;
        m.state.leader.ok_or(Error::NotLeader {
            leader: None,
            leader_epoch: m.state.leader_epoch,
        })
    }

    fn with_replica<T>(
        &self,
        id: ReplicaId,
        f: impl FnOnce(&mut ReplicaClient) -> std::result::Result<T, crate::net::NetError>,
    ) -> Result<T> {
        self.replica_call(id, f)?.map_err(Error::from)
    }

    /// `f` on the client of replica `id`; the outer error is a replica missing from the
    /// cluster file (nothing sent), the inner one what the call returned.
    fn replica_call<T>(
        &self,
        id: ReplicaId,
        f: impl FnOnce(&mut ReplicaClient) -> std::result::Result<T, crate::net::NetError>,
    ) -> Result<std::result::Result<T, crate::net::NetError>> {
        let addr =
            self.cluster.replica(id).map(|e| e.addr).ok_or_else(|| {
                Error::InvalidConfig(format!("replica {id} is not in the cluster"))
            })?;
        let mut replicas = self.replicas.lock();
        let c = replicas.entry(id).or_insert_with(|| {
            ReplicaClient::new(addr, TransportConfig::default(), self.request_timeout)
                .with_security(self.security.clone(), id)
        });
        Ok(f(c))
    }

    /// Sends `f` to the current leader, again while [`AttemptOutcome::may_resend`] allows it
    /// (`idempotent`: whether a request whose outcome is unknown may be sent twice), for up to
    /// `retry_for`; then `Timeout`. An attempt that sent nothing (no leader known, the
    /// controller did not answer, the leader refused the connection) did not write.
    fn at_leader<T>(
        &self,
        idempotent: bool,
        mut f: impl FnMut(&mut ReplicaClient) -> std::result::Result<T, crate::net::NetError>,
    ) -> Result<T> {
        let until = Instant::now() + self.retry_for;
        let mut attempts = Attempts::default();
        loop {
            let (e, outcome) = match self.leader() {
                Ok(l) => match self.replica_call(l, &mut f) {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(net)) if matches!(net.kind, NetErrorKind::Connect(_)) => {
                        (Error::from(net), AttemptOutcome::NotWritten)
                    }
                    Ok(Err(net)) => {
                        let e = Error::from(net);
                        let outcome = AttemptOutcome::of(&e);
                        (e, outcome)
                    }
                    Err(e) => (e, AttemptOutcome::Answered),
                },
                // The controller refused this client (its certificate grants nothing, it
                // presented none, or the handshake failed on a certificate): no retry changes
                // that, so the caller hears it now, not as `Timeout` after `retry_for`.
                Err(e) if is_refusal(&e) => return Err(e),
                Err(e) => (e, AttemptOutcome::NotWritten),
            };
            if !outcome.may_resend(idempotent) {
                return Err(e);
            }
            attempts.failed(e, outcome);
            if Instant::now() >= until {
                return Err(attempts.give_up());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Committed batches from `offset` at the leader.
    pub fn read(&self, offset: Offset, max_bytes: u32) -> Result<ReadResult> {
        self.at_leader(true, |c| c.read(offset, max_bytes))
    }

    /// Committed batches from `offset` at replica `id`.
    pub fn read_at(&self, id: ReplicaId, offset: Offset, max_bytes: u32) -> Result<ReadResult> {
        self.with_replica(id, |c| c.read(offset, max_bytes))
    }
}

/// An `Unauthorized` answer (`docs/security.md`, "Authorization table"), or a failed TLS
/// handshake (a certificate the other end refused, or a server that is not the member asked
/// for): definite answers about who is talking, not lost requests.
fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Remote { kind, .. }
        if *kind == RemoteError::Unauthorized.name() || *kind == TLS_FAILED)
}

impl ProduceTarget for PartitionClient {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let (acks, timeout) = (self.acks.to_wire(), self.produce_timeout_ms);
        let idempotent = batch.header().is_idempotent();
        self.at_leader(idempotent, |c| c.produce(batch.as_bytes(), acks, timeout))
    }

    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        Ok(self.controller.lock().init_producer_id()?)
    }

    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        // Bumping twice only skips an epoch: safe to repeat.
        self.at_leader(true, |c| c.bump_producer_epoch(id))
    }
}
