//! The controller's state in etcd (cargo feature `etcd`): [`EtcdStore`] implements
//! [`ControllerStore`] over the `etcd-client` crate, so several `oncelog controller --etcd`
//! processes share one partition record, replica sessions are etcd leases, and one process at
//! a time is the acting controller (etcd's election API, `election`).
//!
//! tokio stays inside this module: an [`EtcdStore`] owns a small runtime (one worker thread,
//! which also runs the election task) and every method is a `block_on` with a deadline, so the
//! rest of the crate stays synchronous.
//!
//! Keys, under a prefix (default `/oncelog`; `docs/replication.md`, "Controller on etcd"):
//! - `PREFIX/partition`: the controller record (`net::controller_record`, version 1). Written
//!   only by a transaction comparing its `mod_revision` with the one read (0: absent).
//! - `PREFIX/sessions/ID`: replica ID's session; the value is its incarnation in decimal, the
//!   key is attached to a lease of the session timeout, kept alive by the replica's heartbeats.
//! - `PREFIX/producer-ids`: the next producer id in decimal, advanced by compare-and-set.
//! - `PREFIX/controller/...`: the election of the acting controller (keys etcd's election
//!   service creates, one per candidate, each on the candidate's lease).
//!
//! [`ControllerStore::watch`] (`watch` module) watches `PREFIX/sessions/` and `PREFIX/partition`
//! on one etcd watch stream and calls the service's wake-up on every event, so a lease that
//! expires (its session key deleted) and a record another process wrote are seen at once.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod election;
mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use parking_lot::Mutex;

use crate::net::controller_record;
use crate::net::{ControllerStore, RecordVersion, StoreError};
use crate::replication::{InProcessController, Incarnation, ReplicaId};
use crate::types::ProducerId;

pub use election::Election;

/// How to reach etcd and where the partition's keys live.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://HOST:PORT` client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// The key prefix of this partition (no trailing `/`).
    pub prefix: String,
    /// The longest one etcd call may take before it fails as unreachable.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Settings for these etcd endpoints (`host:port`), with the default key prefix and a 2 s request timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/oncelog";

/// A connection to etcd holding one partition's controller state. See the module doc.
pub struct EtcdStore {
    // Field order: the election stops (and resigns) before the runtime goes.
    election: Mutex<Option<Election>>,
    acting: Arc<AtomicBool>,
    client: Client,
    config: EtcdConfig,
    /// When this process last renewed each session lease, and the lease's time to live
    /// (heartbeats arrive every tick; a lease is renewed at most every third of its TTL).
    renewed: Mutex<BTreeMap<i64, (Instant, Duration)>>,
    /// The watch task pushing changes to the service, once started.
    watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.config)
            .field("acting", &self.acting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The smallest session lease etcd is asked for, in seconds (it may raise it to its minimum).
const MIN_TTL_S: i64 = 1;

impl EtcdStore {
    /// Connects to `config.endpoints` (fails if none answers within the request timeout).
    pub fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::new("connect to etcd", "no endpoint given"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("oncelog-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::new("start the etcd client runtime", e))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(1), config.request_timeout);
        let endpoints = config.endpoints.clone();
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    config.request_timeout,
                    Client::connect(endpoints, Some(options)),
                )
                .await
            })
            .map_err(|_| StoreError::new("connect to etcd", "timed out"))?
            .map_err(|e| StoreError::new("connect to etcd", e))?;
        Ok(EtcdStore {
            election: Mutex::new(None),
            acting: Arc::new(AtomicBool::new(false)),
            client,
            config,
            renewed: Mutex::new(BTreeMap::new()),
            watch: Mutex::new(None),
            rt,
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Joins the election of the acting controller as `candidate` (any text naming this
    /// process, e.g. its listen address), on a lease of `ttl_s` seconds: when this process
    /// stops renewing it (killed, or cut from etcd), another candidate wins within about
    /// that long. Runs until the store is dropped.
    pub fn campaign(&self, candidate: &str, ttl_s: i64) {
        let mut slot = self.election.lock();
        if slot.is_none() {
            *slot = Some(Election::start(
                &self.rt,
                self.client.clone(),
                self.key("controller"),
                candidate.to_string(),
                ttl_s.max(MIN_TTL_S),
                Arc::clone(&self.acting),
            ));
        }
    }

    /// The acting controller's candidate text, if there is one.
    pub fn acting_candidate(&self) -> Result<Option<String>, StoreError> {
        let name = self.key("controller");
        let op = "read the acting controller";
        let r = self.call(op, |mut c| async move { c.leader(name).await });
        match r {
            Ok(r) => Ok(r
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // etcd answers "election: no leader" as an error.
            Err(e) if e.message.contains("no leader") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.config.prefix)
    }

    fn session_key(&self, replica: ReplicaId) -> String {
        format!("{}/sessions/{}", self.config.prefix, replica.0)
    }

    /// Runs one etcd call on the runtime with the request timeout.
    fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let fut = f(self.client.clone());
        self.rt
            .block_on(async { tokio::time::timeout(self.config.request_timeout, fut).await })
            .map_err(|_| StoreError::new(op, "etcd did not answer in time"))?
            .map_err(|e| StoreError::new(op, e))
    }

    /// The value and `mod_revision` of `key` (revision 0: absent), with its lease.
    fn get(
        &self,
        op: &'static str,
        key: String,
    ) -> Result<Option<(Vec<u8>, i64, i64)>, StoreError> {
        let r = self.call(op, |mut c| async move { c.get(key, None).await })?;
        Ok(r.kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision(), kv.lease())))
    }

    /// Puts `value` at `key` if its `mod_revision` is still `expected` (0: absent).
    fn put_if(
        &self,
        op: &'static str,
        key: String,
        expected: i64,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        let r = self.call(op, |mut c| async move { c.txn(txn).await })?;
        Ok(r.succeeded())
    }

    /// Renews `lease`; false if etcd says it expired.
    fn renew(&self, lease: i64) -> Result<bool, StoreError> {
        let ttl_s = self.call("renew a session lease", |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.map_or(0, |m| m.ttl()))
        })?;
        Ok(ttl_s > 0)
    }
}

fn decimal<T: std::str::FromStr>(op: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<T>().ok())
        .ok_or_else(|| {
            StoreError::new(
                op,
                format!("not a decimal number: {:?}", String::from_utf8_lossy(bytes)),
            )
        })
}

impl ControllerStore for EtcdStore {
    fn load(&self) -> Result<Option<(InProcessController, RecordVersion)>, StoreError> {
        let op = "load the partition record";
        let Some((bytes, revision, _)) = self.get(op, self.key("partition"))? else {
            return Ok(None);
        };
        let c = controller_record::decode(&bytes).map_err(|e| {
            StoreError::new(
                op,
                format!("damaged record at {}: {e}", self.key("partition")),
            )
        })?;
        Ok(Some((c, revision)))
    }

    fn compare_and_set(
        &self,
        expected: Option<RecordVersion>,
        next: &InProcessController,
    ) -> Result<bool, StoreError> {
        self.put_if(
            "write the partition record",
            self.key("partition"),
            expected.unwrap_or(0),
            controller_record::encode(next),
        )
    }

    fn start_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let ttl_s = i64::try_from(ttl_ms.div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(MIN_TTL_S);
        let key = self.session_key(replica);
        let lease = self.call("grant a session lease", |mut c| async move {
            let lease = c.lease_grant(ttl_s, None).await?.id();
            let put = PutOptions::new().with_lease(lease);
            c.put(key, incarnation.to_string(), Some(put)).await?;
            Ok(lease)
        })?;
        let ttl = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(1));
        let mut renewed = self.renewed.lock();
        // Forget leases not renewed for a while (ended or expired): the map stays small.
        renewed.retain(|_, (at, ttl)| at.elapsed() < ttl.saturating_mul(4));
        renewed.insert(lease, (Instant::now(), ttl));
        Ok(())
    }

    fn keep_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
    ) -> Result<bool, StoreError> {
        let op = "read a session";
        let Some((value, _, lease)) = self.get(op, self.session_key(replica))? else {
            return Ok(false);
        };
        if decimal::<Incarnation>(op, &value)? != incarnation {
            return Ok(false);
        }
        let due = match self.renewed.lock().get(&lease) {
            Some((at, ttl)) => at.elapsed() >= *ttl / 3,
            None => true,
        };
        if !due {
            return Ok(true);
        }
        let alive = self.renew(lease)?;
        let mut renewed = self.renewed.lock();
        if alive {
            let ttl = renewed.get(&lease).map_or(Duration::from_secs(1), |r| r.1);
            renewed.insert(lease, (Instant::now(), ttl));
        } else {
            renewed.remove(&lease);
        }
        Ok(alive)
    }

    fn end_session(&self, replica: ReplicaId) -> Result<(), StoreError> {
        let op = "end a session";
        if let Some((_, _, lease)) = self.get(op, self.session_key(replica))? {
            self.renewed.lock().remove(&lease);
            if lease != 0 {
                // Revoking deletes the key with it.
                self.call(op, |mut c| async move { c.lease_revoke(lease).await })?;
                return Ok(());
            }
        }
        let key = self.session_key(replica);
        self.call(op, |mut c| async move { c.delete(key, None).await })?;
        Ok(())
    }

    fn sessions(&self) -> Result<BTreeMap<ReplicaId, Incarnation>, StoreError> {
        let op = "list the sessions";
        let prefix = format!("{}/sessions/", self.config.prefix);
        let p = prefix.clone();
        let r = self.call(op, |mut c| async move {
            c.get(p, Some(GetOptions::new().with_prefix())).await
        })?;
        let mut out = BTreeMap::new();
        for kv in r.kvs() {
            let id = kv.key().get(prefix.len()..).unwrap_or_default();
            out.insert(
                ReplicaId(decimal(op, id)?),
                decimal::<Incarnation>(op, kv.value())?,
            );
        }
        Ok(out)
    }

    fn allocate_producer_id(&self) -> Result<ProducerId, StoreError> {
        let op = "allocate a producer id";
        let key = self.key("producer-ids");
        for _ in 0..CAS_ATTEMPTS {
            let (next, revision) = match self.get(op, key.clone())? {
                Some((v, revision, _)) => (decimal::<i64>(op, &v)?, revision),
                None => (0, 0),
            };
            let after = next
                .checked_add(1)
                .ok_or_else(|| StoreError::new(op, "producer ids exhausted"))?;
            if self.put_if(op, key.clone(), revision, after.to_string().into_bytes())? {
                return Ok(ProducerId(next));
            }
        }
        Err(StoreError::new(op, "lost every compare-and-set race"))
    }

    fn is_acting(&self) -> bool {
        self.acting.load(Ordering::Acquire)
    }

    fn watch(&self, wake: crate::net::StoreWake) -> bool {
        let mut slot = self.watch.lock();
        if let Some(old) = slot.take() {
            old.abort();
        }
        *slot = Some(self.rt.spawn(watch::watch_forever(
            self.client.clone(),
            self.config.prefix.clone(),
            wake,
        )));
        true
    }
}

/// Attempts of one compare-and-set loop before it gives up (each loses only to another
/// writer's success, so giving up means heavy contention).
const CAS_ATTEMPTS: usize = 32;

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Resign first, so another candidate takes over now rather than after the lease TTL.
        if let Some(e) = self.election.lock().take() {
            e.stop(&self.rt, self.client.clone());
        }
        if let Some(w) = self.watch.lock().take() {
            w.abort();
        }
    }
}
