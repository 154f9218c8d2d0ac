//! A client of a TCP cluster: finds the leader through the controller and produces to it,
//! riding out leader changes. It is a [`ProduceTarget`], so the idempotent
//! [`crate::producer::Producer`] runs over it unchanged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::log::AppendInfo;
use crate::net::{ClusterFile, ControllerClient, ReadResult, ReplicaClient, TransportConfig};
use crate::producer::ProduceTarget;
use crate::replica::Acks;
use crate::replication::ReplicaId;
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// Produces to and reads from the current leader of a cluster.
#[derive(Debug)]
pub struct PartitionClient {
    cluster: ClusterFile,
    controller: Mutex<ControllerClient>,
    replicas: Mutex<HashMap<ReplicaId, ReplicaClient>>,
    pub acks: Acks,
    /// How long an acks=all request may wait on the leader.
    pub produce_timeout_ms: u32,
    /// How long `produce` keeps retrying retriable answers (no leader, not leader, not enough
    /// replicas, lost answers) before it returns `Timeout` to its caller.
    pub retry_for: Duration,
    request_timeout: Duration,
}

/// Answers worth retrying with the same bytes, perhaps at another leader.
fn retriable(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout
            | Error::NotLeader { .. }
            | Error::NotEnoughReplicas { .. }
            | Error::NotEnoughReplicasAfterAppend { .. }
            | Error::Closed
            | Error::Remote { .. }
            | Error::Replication(_)
    )
}

impl PartitionClient {
    pub fn new(cluster: ClusterFile, acks: Acks) -> PartitionClient {
        let request_timeout = Duration::from_secs(2);
        PartitionClient {
            controller: Mutex::new(ControllerClient::new(
                cluster.controller,
                TransportConfig::default(),
                request_timeout,
            )),
            cluster,
            replicas: Mutex::new(HashMap::new()),
            acks,
            produce_timeout_ms: 5_000,
            retry_for: Duration::from_secs(10),
            request_timeout,
        }
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
        let addr =
            self.cluster.replica(id).map(|e| e.addr).ok_or_else(|| {
                Error::InvalidConfig(format!("replica {id} is not in the cluster"))
            })?;
        let mut replicas = self.replicas.lock();
        let c = replicas.entry(id).or_insert_with(|| {
            ReplicaClient::new(addr, TransportConfig::default(), self.request_timeout)
        });
        f(c).map_err(Error::from)
    }

    /// Retries `f` against the current leader while the answer is retriable.
    fn at_leader<T>(
        &self,
        mut f: impl FnMut(&mut ReplicaClient) -> std::result::Result<T, crate::net::NetError>,
    ) -> Result<T> {
        let until = Instant::now() + self.retry_for;
        loop {
            let e = match self.leader() {
                Ok(l) => match self.with_replica(l, &mut f) {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !retriable(&e) {
                return Err(e);
            }
            if Instant::now() >= until {
                return Err(Error::Timeout);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Committed batches from `offset` at the leader.
    pub fn read(&self, offset: Offset, max_bytes: u32) -> Result<ReadResult> {
        self.at_leader(|c| c.read(offset, max_bytes))
    }

    /// Committed batches from `offset` at replica `id`.
    pub fn read_at(&self, id: ReplicaId, offset: Offset, max_bytes: u32) -> Result<ReadResult> {
        self.with_replica(id, |c| c.read(offset, max_bytes))
    }
}

impl ProduceTarget for PartitionClient {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let (acks, timeout) = (self.acks.to_wire(), self.produce_timeout_ms);
        self.at_leader(|c| c.produce(batch.as_bytes(), acks, timeout))
    }

    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        Ok(self.controller.lock().init_producer_id()?)
    }

    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.at_leader(|c| c.bump_producer_epoch(id))
    }
}
