//! The controller process: [`InProcessController`] behind TCP, with replica sessions and
//! cluster-wide producer ids.
//!
//! Requests (`wire::Message`): `Register` (a replica's new life: `replica_restarted`),
//! `Heartbeat` (keeps its session; answers the current record), `WatchPartition` (a long poll:
//! parked until the record is newer than the replica's, so replicas learn leader and ISR
//! changes as they happen rather than at their next heartbeat), `AlterIsr`, `ElectLeader` (to
//! `preferred` if given: `elect_preferred`), `ReplicaFailed` (controlled shutdown), `Metadata`,
//! `InitProducerId`.
//!
//! Invariants (held under the one mutex of [`ControllerService`]):
//! - a replica is alive in the controller iff it has a session: every replica gets one when the
//!   controller starts (`InProcessController::new` starts them all alive), `Register` starts a
//!   new one, `ReplicaFailed` and expiry end it;
//! - a session that saw no register or heartbeat for `session_timeout_ms` (by the injected
//!   [`Clock`]) expires: the replica is `replica_failed`, which re-elects if it led. Expiry runs
//!   before every request and on a ticker thread;
//! - a heartbeat is accepted only from a registered session of the incarnation the controller
//!   knows; anything else is answered `SessionExpired` and changes nothing (the replica must
//!   register, reporting how its log recovered);
//! - producer ids come from a [`ProducerIdAllocator`] persisted in the controller's directory,
//!   so they are unique across leaders and controller restarts;
//! - the published snapshot (`Published`, what parked `WatchPartition` requests read) is the
//!   record as this process last loaded, wrote or changed it: it is replaced after every
//!   request and expiry check, under the service mutex, and every parked watch is woken then.
//!   A watch never takes the service mutex, so parked watches cost no request any latency.
//!
//! Two backends:
//! - in memory ([`ControllerService::open`], one process): the partition record lives in this
//!   process only. A restarted controller starts again at leader epoch 0 with every replica in
//!   the ISR, so it could hand out leader epochs that were already used and elect a replica
//!   that lost data: restarting it under a cluster that holds data is not supported (only the
//!   producer ids survive a restart). See `docs/replication.md`, "TCP driver".
//! - a [`ControllerStore`] ([`ControllerService::with_store`], e.g. etcd): the record, the
//!   sessions (leases) and the producer-id counter live in the store, shared by every
//!   controller process of the partition. Each request loads the record, applies the same
//!   [`InProcessController`] rule in memory and writes it back by compare-and-set, retrying
//!   on a lost race; a store that cannot be reached makes the request fail as `Unavailable`
//!   (the caller retries). Sessions expire in the store (their lease); only the acting
//!   controller ([`ControllerStore::is_acting`]) turns a missing session into
//!   `replica_failed`: a replica alive in the record whose session it saw disappear at once,
//!   one whose session it never saw after `session_timeout_ms` (so a new acting controller
//!   gives replicas one timeout to register). A store that pushes changes
//!   ([`ControllerStore::watch`], etcd's watches) wakes the ticker thread at once, so a
//!   session deleted in the store is expired, and a record written by another controller
//!   process is published to parked watches, without waiting for the next check; the periodic
//!   check stays as the safety net. `docs/replication.md`, "Controller on etcd".
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, Sender};
use parking_lot::{Condvar, Mutex};

use super::cluster_file::ClusterFile;
use super::controller_store::{ControllerStore, StoreError};
use super::producer_ids::ProducerIdAllocator;
use super::remote_error::{ErrorReply, RemoteError};
use super::server::ServerSecurity;
use super::tls::Security;
use super::transport::{Handler, Server, TransportConfig};
use super::wire::{ClusterMetadata, Message, ReplicaStatus};
use crate::clock::Clock;
use crate::error::Result;
use crate::io::Storage;
use crate::replication::{
    AlterIsrRequest, Controller, InProcessController, Incarnation, LeaderAndIsr, LogRecovery,
    PartitionEpoch, ReplicaId, ReplicationError,
};
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Settings of the controller process.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where the producer-id counter lives (created if missing, locked while running).
    pub dir: PathBuf,
    /// A replica without a register or heartbeat for this long is failed.
    pub session_timeout_ms: u64,
    /// How often the ticker thread checks sessions.
    pub expiry_check_interval: Duration,
    /// The server's limits (connections, deadlines, request size).
    pub transport: TransportConfig,
    /// Print every state change to stderr (the `oncelog controller` process does), and the
    /// refused handshakes and requests.
    pub verbose: bool,
    /// TLS and authorization (`docs/security.md`); `None`: plain TCP, everyone may do
    /// everything.
    pub security: Option<Security>,
}

impl ControllerConfig {
    /// Defaults for a controller keeping its state in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ControllerConfig {
            dir: dir.into(),
            session_timeout_ms: 3_000,
            expiry_check_interval: Duration::from_millis(100),
            transport: TransportConfig::default(),
            verbose: false,
            security: None,
        }
    }
}

/// One replica's session.
#[derive(Debug, Clone, Copy)]
struct Session {
    last_seen_ms: TimestampMs,
    /// Started by `Register` (not just by the controller's own start).
    registered: bool,
    log_end: Option<Offset>,
}

#[derive(Debug)]
struct Inner {
    /// In memory: the record. With a store: the record as last loaded or written.
    controller: InProcessController,
    /// In memory: exactly the replicas the controller holds alive (invariant). With a store:
    /// the replicas this process heard from (status only; the sessions are in the store).
    sessions: BTreeMap<ReplicaId, Session>,
    /// Last heartbeat log end of replicas without a session (for status only).
    last_log_end: BTreeMap<ReplicaId, Offset>,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Memory {
        ids: ProducerIdAllocator,
    },
    Store {
        store: Arc<dyn ControllerStore>,
        /// While acting: the alive replicas whose session this process saw.
        seen: BTreeSet<ReplicaId>,
        /// While acting: when each alive replica was first found without a session.
        missing_since: BTreeMap<ReplicaId, TimestampMs>,
    },
}

/// Compare-and-set attempts per request before it fails as `Unavailable`.
const CAS_ATTEMPTS: usize = 32;

/// The longest a `WatchPartition` is parked, whatever it asks for.
const MAX_WATCH_WAIT: Duration = Duration::from_secs(30);

/// What parked `WatchPartition` requests compare against (see the module invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    state: LeaderAndIsr,
    /// The life of every replica the record holds alive.
    lives: BTreeMap<ReplicaId, Incarnation>,
}

impl Published {
    fn of(c: &InProcessController) -> Published {
        let lives = c
            .replicas()
            .iter()
            .filter(|r| c.is_alive(**r))
            .filter_map(|r| c.incarnation(*r).map(|i| (*r, i)))
            .collect();
        Published {
            state: c.leader_and_isr(),
            lives,
        }
    }
}

fn unavailable(e: &StoreError) -> ErrorReply {
    ErrorReply::new(RemoteError::Unavailable, e.to_string())
}

/// The controller's request handler; see the module invariants.
#[derive(Debug)]
pub struct ControllerService {
    cluster: ClusterFile,
    clock: Arc<dyn Clock>,
    session_timeout_ms: u64,
    verbose: bool,
    inner: Mutex<Inner>,
    /// Lock order: `inner`, then `published`.
    published: Mutex<Published>,
    /// Signalled when `published` changes or the service closes.
    published_changed: Condvar,
    /// Set when the server stops: parked watches are answered at once.
    closing: AtomicBool,
}

impl ControllerService {
    /// A controller for `cluster` whose sessions start now; producer ids in `config.dir`.
    pub fn open(
        cluster: ClusterFile,
        config: &ControllerConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
    ) -> Result<ControllerService> {
        let ids = ProducerIdAllocator::open(storage, &config.dir)?;
        let replicas = cluster.replica_ids();
        Ok(Self::with_backend(
            cluster,
            config,
            clock,
            InProcessController::new(&replicas),
            Backend::Memory { ids },
        ))
    }

    /// A controller whose record, sessions and producer ids live in `store`, shared with the
    /// partition's other controller processes (`config.dir` is not used). The record is
    /// created there on first use; one holding other replicas than `cluster` is refused then.
    pub fn with_store(
        cluster: ClusterFile,
        config: &ControllerConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn ControllerStore>,
    ) -> ControllerService {
        let replicas = cluster.replica_ids();
        Self::with_backend(
            cluster,
            config,
            clock,
            InProcessController::new(&replicas),
            Backend::Store {
                store,
                seen: BTreeSet::new(),
                missing_since: BTreeMap::new(),
            },
        )
    }

    fn with_backend(
        cluster: ClusterFile,
        config: &ControllerConfig,
        clock: Arc<dyn Clock>,
        controller: InProcessController,
        backend: Backend,
    ) -> ControllerService {
        let now = clock.now_ms();
        let replicas = cluster.replica_ids();
        let sessions = replicas
            .iter()
            .map(|r| {
                let s = Session {
                    last_seen_ms: now,
                    registered: false,
                    log_end: None,
                };
                (*r, s)
            })
            .collect();
        ControllerService {
            published: Mutex::new(Published::of(&controller)),
            published_changed: Condvar::new(),
            closing: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                controller,
                sessions,
                last_log_end: BTreeMap::new(),
                backend,
            }),
            session_timeout_ms: config.session_timeout_ms,
            verbose: config.verbose,
            clock,
            cluster,
        }
    }

    /// The cluster file the controller serves.
    pub fn cluster(&self) -> &ClusterFile {
        &self.cluster
    }

    /// The current record (with a store: as this process last loaded or wrote it).
    pub fn state(&self) -> LeaderAndIsr {
        self.inner.lock().controller.leader_and_isr()
    }

    /// A copy of the controller's state (for tests and diagnostics).
    pub fn controller(&self) -> InProcessController {
        self.inner.lock().controller.clone()
    }

    /// Fails every replica whose session expired; returns them. With a store, only while
    /// this process is the acting controller (see the module doc); a store that cannot be
    /// reached fails nobody.
    pub fn expire_sessions(&self) -> Vec<ReplicaId> {
        let mut inner = self.inner.lock();
        let failed = match &inner.backend {
            Backend::Memory { .. } => self.expire_locked(&mut inner),
            Backend::Store { .. } => self.expire_in_store(&mut inner).unwrap_or_default(),
        };
        self.publish(&inner.controller);
        failed
    }

    /// Sets the gauges and the published snapshot from `c` (the record under the service
    /// mutex), waking the parked watches if it changed.
    fn publish(&self, c: &InProcessController) {
        publish_state(&c.leader_and_isr());
        let next = Published::of(c);
        let mut p = self.published.lock();
        if *p != next {
            *p = next;
            self.published_changed.notify_all();
        }
    }

    /// Asks the store to push its changes to `wake` ([`ControllerStore::watch`]); `false`
    /// in memory or when the store cannot.
    fn watch_store(&self, wake: super::StoreWake) -> bool {
        match &self.inner.lock().backend {
            Backend::Memory { .. } => false,
            Backend::Store { store, .. } => store.watch(wake),
        }
    }

    /// Answers every parked watch now and every later one at once (the server stops).
    fn release_watches(&self) {
        self.closing.store(true, Ordering::Release);
        let _p = self.published.lock();
        self.published_changed.notify_all();
    }

    /// A `WatchPartition`: the published record once it is newer than `known` (leader epoch,
    /// partition epoch), or as it is after `max_wait_ms` (a transport deadline, in real time
    /// like the server's others); `SessionExpired` whenever the record does not hold
    /// `incarnation` of `replica` alive. Never takes the service mutex.
    fn watch_partition(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
        known: (LeaderEpoch, PartitionEpoch),
        max_wait_ms: u32,
    ) -> std::result::Result<Message, ErrorReply> {
        self.check_replica(replica)?;
        let wait = Duration::from_millis(u64::from(max_wait_ms)).min(MAX_WATCH_WAIT);
        let deadline = Instant::now() + wait;
        let mut p = self.published.lock();
        loop {
            let alive = p.lives.get(&replica).copied();
            if alive != Some(incarnation) {
                return Err(ErrorReply::new(
                    RemoteError::SessionExpired { replica },
                    format!(
                        "replica {replica} incarnation {incarnation} is not alive in the record \
                         (alive as {alive:?}): nothing to watch"
                    ),
                ));
            }
            let newer = (p.state.leader_epoch, p.state.partition_epoch) > known;
            if newer || self.closing.load(Ordering::Acquire) || Instant::now() >= deadline {
                return Ok(Message::LeaderAndIsr(p.state.clone()));
            }
            self.published_changed.wait_until(&mut p, deadline);
        }
    }

    /// Loads the record from the store, lets `f` change it and writes it back by
    /// compare-and-set, retrying `f` on the newer record after a lost race (in memory: `f` on
    /// the record). Writes nothing when `f` changed nothing (but creates a missing record).
    fn transact<R>(
        &self,
        inner: &mut Inner,
        mut f: impl FnMut(&mut InProcessController) -> R,
    ) -> std::result::Result<R, ErrorReply> {
        let store = match &inner.backend {
            Backend::Memory { .. } => return Ok(f(&mut inner.controller)),
            Backend::Store { store, .. } => Arc::clone(store),
        };
        for _ in 0..CAS_ATTEMPTS {
            let (current, version) = match store.load().map_err(|e| unavailable(&e))? {
                Some((c, v)) => (c, Some(v)),
                None => (InProcessController::new(&self.cluster.replica_ids()), None),
            };
            if current.replicas() != self.cluster.replica_ids().as_slice() {
                return Err(ErrorReply::new(
                    RemoteError::Internal,
                    format!(
                        "the stored partition has replicas {:?}, the cluster file {:?}: another \
                         cluster's record (use another key prefix)",
                        current.replicas(),
                        self.cluster.replica_ids()
                    ),
                ));
            }
            let mut next = current.clone();
            let r = f(&mut next);
            let unchanged = next == current && version.is_some();
            if unchanged
                || store
                    .compare_and_set(version, &next)
                    .map_err(|e| unavailable(&e))?
            {
                inner.controller = next;
                return Ok(r);
            }
        }
        Err(ErrorReply::new(
            RemoteError::Unavailable,
            format!("lost {CAS_ATTEMPTS} compare-and-set races in a row on the partition record"),
        ))
    }

    /// The acting controller's expiry (see the module doc).
    fn expire_in_store(
        &self,
        inner: &mut Inner,
    ) -> std::result::Result<Vec<ReplicaId>, ErrorReply> {
        let Backend::Store { store, .. } = &inner.backend else {
            return Ok(Vec::new());
        };
        let store = Arc::clone(store);
        if !store.is_acting() {
            if let Backend::Store {
                seen,
                missing_since,
                ..
            } = &mut inner.backend
            {
                seen.clear();
                missing_since.clear();
            }
            // Not acting: only refresh the record (another process may have written it).
            self.transact(inner, |_| ())?;
            return Ok(Vec::new());
        }
        let sessions = store.sessions().map_err(|e| unavailable(&e))?;
        self.transact(inner, |_| ())?;
        let now = self.clock.now_ms();
        let timeout = i64::try_from(self.session_timeout_ms).unwrap_or(i64::MAX);
        let c = inner.controller.clone();
        let mut failed = Vec::new();
        if let Backend::Store {
            seen,
            missing_since,
            ..
        } = &mut inner.backend
        {
            for &r in c.replicas() {
                if !c.is_alive(r) {
                    seen.remove(&r);
                    missing_since.remove(&r);
                } else if sessions.get(&r).copied() == c.incarnation(r) {
                    seen.insert(r);
                    missing_since.remove(&r);
                } else {
                    let since = *missing_since.entry(r).or_insert(now);
                    if seen.contains(&r) || now.saturating_sub(since) > timeout {
                        failed.push(r);
                    }
                }
            }
        }
        for &r in &failed {
            self.end_session(inner, r);
            // Only the life whose session ended: a new life that registered meanwhile through
            // another controller process is left alone.
            let life = c.incarnation(r);
            let s = self.transact(inner, |now| {
                if now.incarnation(r) == life {
                    now.replica_failed(r)
                } else {
                    now.leader_and_isr()
                }
            })?;
            self.note(format!("replica {r} session lease expired"), &s);
        }
        Ok(failed)
    }

    fn expire_locked(&self, inner: &mut Inner) -> Vec<ReplicaId> {
        let now = self.clock.now_ms();
        let timeout = i64::try_from(self.session_timeout_ms).unwrap_or(i64::MAX);
        let expired: Vec<ReplicaId> = inner
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_seen_ms) > timeout)
            .map(|(r, _)| *r)
            .collect();
        for r in &expired {
            self.end_session(inner, *r);
            let s = inner.controller.replica_failed(*r);
            self.note(format!("replica {r} session expired"), &s);
        }
        expired
    }

    fn end_session(&self, inner: &mut Inner, r: ReplicaId) {
        if let Some(s) = inner.sessions.remove(&r) {
            if let Some(o) = s.log_end {
                inner.last_log_end.insert(r, o);
            }
        }
    }

    fn note(&self, what: String, s: &LeaderAndIsr) {
        publish_state(s);
        if self.verbose {
            let isr: Vec<String> = s.isr.iter().map(ToString::to_string).collect();
            tracing::info!(
                "controller: {what}; leader {} leader_epoch {} partition_epoch {} isr {}",
                s.leader.map_or("none".to_string(), |l| l.to_string()),
                s.leader_epoch,
                s.partition_epoch,
                isr.join(",")
            );
        }
    }

    fn check_replica(&self, r: ReplicaId) -> std::result::Result<(), ErrorReply> {
        if self.cluster.replica(r).is_none() {
            return Err(ErrorReply::from_replication(
                &ReplicationError::UnknownReplica(r),
            ));
        }
        Ok(())
    }

    /// Answers one request (what the TCP server calls).
    pub fn handle(&self, request: Message) -> Message {
        metrics::counter!(crate::observe::CONTROLLER_REQUESTS).increment(1);
        let answer = match request {
            // Parked without the service mutex; it changes nothing.
            Message::WatchPartition {
                replica,
                incarnation,
                leader_epoch,
                partition_epoch,
                max_wait_ms,
            } => self.watch_partition(
                replica,
                incarnation,
                (leader_epoch, partition_epoch),
                max_wait_ms,
            ),
            other => {
                let answer = self.answer(other);
                self.publish(&self.inner.lock().controller);
                answer
            }
        };
        answer.unwrap_or_else(Message::Error)
    }

    fn answer(&self, request: Message) -> std::result::Result<Message, ErrorReply> {
        let mut inner = self.inner.lock();
        if let Backend::Memory { .. } = inner.backend {
            self.expire_locked(&mut inner);
        }
        let now = self.clock.now_ms();
        match request {
            Message::Register {
                replica,
                incarnation,
                recovery,
            } => {
                self.check_replica(replica)?;
                Ok(Message::LeaderAndIsr(self.register(
                    &mut inner,
                    replica,
                    incarnation,
                    recovery,
                    now,
                )?))
            }
            Message::Heartbeat {
                replica,
                incarnation,
                log_end,
            } => {
                self.check_replica(replica)?;
                let has_session = match &inner.backend {
                    Backend::Memory { .. } => None,
                    Backend::Store { store, .. } => {
                        let store = Arc::clone(store);
                        let kept = store
                            .keep_session(replica, incarnation)
                            .map_err(|e| unavailable(&e))?;
                        self.transact(&mut inner, |_| ())?;
                        let alive = kept && inner.controller.is_alive(replica);
                        if alive {
                            let s = inner.sessions.entry(replica).or_insert(Session {
                                last_seen_ms: now,
                                registered: true,
                                log_end: None,
                            });
                            s.registered = true;
                        }
                        Some(alive)
                    }
                };
                let known = inner.controller.incarnation(replica);
                match inner.sessions.get_mut(&replica) {
                    Some(s)
                        if s.registered
                            && known == Some(incarnation)
                            && has_session != Some(false) =>
                    {
                        s.last_seen_ms = now;
                        s.log_end = Some(log_end);
                        Ok(Message::LeaderAndIsr(inner.controller.leader_and_isr()))
                    }
                    _ => Err(ErrorReply::new(
                        RemoteError::SessionExpired { replica },
                        format!(
                            "replica {replica} incarnation {incarnation} has no session (the \
                             controller knows incarnation {known:?}): register again"
                        ),
                    )),
                }
            }
            Message::AlterIsr(req) => self.alter_isr(&mut inner, &req).map(Message::LeaderAndIsr),
            Message::ElectLeader {
                preferred,
                allow_unclean,
            } => {
                let election = self
                    .transact(&mut inner, |c| match preferred {
                        Some(r) => c.elect_preferred(r, allow_unclean),
                        None => c.elect_leader(allow_unclean),
                    })?
                    .map_err(|e| ErrorReply::from_replication(&e))?;
                let what = match (preferred, election.unclean) {
                    (Some(r), false) => format!("leadership moved to {r}"),
                    (_, true) => "UNCLEAN election: committed data may be lost".to_string(),
                    (None, false) => "leader elected".to_string(),
                };
                self.note(what, &election.state);
                Ok(Message::Elected {
                    state: election.state,
                    unclean: election.unclean,
                })
            }
            Message::ReplicaFailed { replica } => {
                self.check_replica(replica)?;
                if let Backend::Store { store, .. } = &inner.backend {
                    store.end_session(replica).map_err(|e| unavailable(&e))?;
                }
                self.end_session(&mut inner, replica);
                let s = self.transact(&mut inner, |c| c.replica_failed(replica))?;
                self.note(format!("replica {replica} reported failed"), &s);
                Ok(Message::LeaderAndIsr(s))
            }
            Message::Metadata => {
                self.transact(&mut inner, |_| ())?;
                Ok(Message::MetadataResponse(self.metadata(&inner, now)))
            }
            Message::InitProducerId { producer_id: None } => {
                let id = match &mut inner.backend {
                    Backend::Memory { ids } => {
                        ids.allocate().map_err(|e| ErrorReply::from_error(&e))?
                    }
                    Backend::Store { store, .. } => {
                        store.allocate_producer_id().map_err(|e| unavailable(&e))?
                    }
                };
                Ok(Message::ProducerIdAssigned {
                    producer_id: id,
                    epoch: 0,
                })
            }
            Message::InitProducerId {
                producer_id: Some(id),
            } => Err(ErrorReply::new(
                RemoteError::InvalidRequest,
                format!(
                    "the controller allocates new producer ids only; bump the epoch of producer \
                     {} at the partition leader",
                    id.0
                ),
            )),
            other => Err(ErrorReply::new(
                RemoteError::InvalidRequest,
                format!("the controller does not answer {}", other.name()),
            )),
        }
    }

    fn register(
        &self,
        inner: &mut Inner,
        replica: ReplicaId,
        incarnation: Incarnation,
        recovery: LogRecovery,
        now: TimestampMs,
    ) -> std::result::Result<LeaderAndIsr, ErrorReply> {
        if let Backend::Store { store, .. } = &inner.backend {
            store
                .start_session(replica, incarnation, self.session_timeout_ms)
                .map_err(|e| unavailable(&e))?;
        }
        let log_end = inner.last_log_end.remove(&replica);
        inner.sessions.insert(
            replica,
            Session {
                last_seen_ms: now,
                registered: true,
                log_end,
            },
        );
        let s = self.transact(inner, |c| {
            c.replica_restarted(replica, incarnation, recovery)
        })?;
        self.note(
            format!("replica {replica} registered as incarnation {incarnation} ({recovery:?})"),
            &s,
        );
        Ok(s)
    }

    fn alter_isr(
        &self,
        inner: &mut Inner,
        req: &AlterIsrRequest,
    ) -> std::result::Result<LeaderAndIsr, ErrorReply> {
        let s = self
            .transact(inner, |c| c.alter_isr(req))?
            .map_err(|e| ErrorReply::from_replication(&e))?;
        self.note(format!("ISR changed by leader {}", req.leader), &s);
        Ok(s)
    }

    fn metadata(&self, inner: &Inner, now: TimestampMs) -> ClusterMetadata {
        let c = &inner.controller;
        let replicas = self
            .cluster
            .replicas
            .iter()
            .map(|r| {
                let session = inner.sessions.get(&r.id);
                ReplicaStatus {
                    replica: r.id,
                    addr: r.addr,
                    alive: c.is_alive(r.id),
                    needs_catch_up: c.needs_catch_up(r.id),
                    incarnation: c.incarnation(r.id),
                    log_end: session
                        .and_then(|s| s.log_end)
                        .or_else(|| inner.last_log_end.get(&r.id).copied()),
                    last_seen_ms_ago: session
                        .map(|s| u64::try_from(now.saturating_sub(s.last_seen_ms)).unwrap_or(0)),
                }
            })
            .collect();
        ClusterMetadata {
            state: c.leader_and_isr(),
            min_insync_replicas: self.cluster.min_insync_replicas,
            replicas,
        }
    }
}

impl Handler for ControllerService {
    fn handle(&self, request: Message) -> Message {
        ControllerService::handle(self, request)
    }
}

/// A running controller: the TCP server and the session ticker. Stops on
/// [`ControllerServer::shutdown`] or drop.
#[derive(Debug)]
pub struct ControllerServer {
    service: Arc<ControllerService>,
    server: Option<Server>,
    /// Dropping it stops the ticker.
    stop_ticker: Option<Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl ControllerServer {
    /// Serves `cluster` on `listener` (bind `127.0.0.1:0` in tests; the cluster file's
    /// `controller` address in the `oncelog controller` process).
    pub fn start(
        listener: TcpListener,
        cluster: ClusterFile,
        config: ControllerConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
    ) -> Result<ControllerServer> {
        let service = ControllerService::open(cluster, &config, clock, storage)?;
        Self::serve(listener, service, &config)
    }

    /// Serves `service` (e.g. [`ControllerService::with_store`]) on `listener`, with the
    /// session ticker `config` asks for.
    pub fn serve(
        listener: TcpListener,
        service: ControllerService,
        config: &ControllerConfig,
    ) -> Result<ControllerServer> {
        let addr = listener.local_addr().ok();
        let security = config
            .security
            .clone()
            .map(|tls| ServerSecurity::new(tls, &service.cluster, config.verbose));
        let service = Arc::new(service);
        let server = Server::start_secure(
            listener,
            Arc::clone(&service) as Arc<dyn Handler>,
            config.transport,
            security,
        )
        .map_err(|e| {
            crate::Error::io(
                "start controller server",
                addr.map_or_else(String::new, |a| a.to_string()),
                e,
            )
        })?;
        let (tx, rx) = bounded::<()>(0);
        // A store that pushes its changes wakes the ticker at once (coalesced: one pending
        // wake-up is enough, the ticker reads the store again on it).
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let watching = service.watch_store(Box::new(move || {
            let _ = wake_tx.try_send(());
        }));
        let mut wake = if watching { wake_rx } else { never() };
        let s = Arc::clone(&service);
        let interval = config.expiry_check_interval;
        let ticker = std::thread::Builder::new()
            .name("oncelog-controller-ticker".into())
            .spawn(move || loop {
                select! {
                    recv(rx) -> _ => return,
                    recv(wake) -> woken => {
                        if woken.is_err() {
                            wake = never(); // the store stopped watching: poll only
                        }
                        s.expire_sessions();
                    }
                    default(interval) => {
                        s.expire_sessions();
                    }
                }
            })
            .map_err(|e| crate::Error::io("start controller ticker", "", e))?;
        Ok(ControllerServer {
            service,
            server: Some(server),
            stop_ticker: Some(tx),
            ticker: Some(ticker),
        })
    }

    /// The address it listens on (`None` when not serving).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::local_addr)
    }

    /// Requests refused as unauthorized (security on).
    pub fn refused_requests(&self) -> u64 {
        self.server.as_ref().map_or(0, Server::refused_requests)
    }

    /// TLS handshakes that failed (security on).
    pub fn failed_handshakes(&self) -> u64 {
        self.server.as_ref().map_or(0, Server::failed_handshakes)
    }

    /// The controller's state machine, shared with its server threads.
    pub fn service(&self) -> &Arc<ControllerService> {
        &self.service
    }

    /// Stops serving and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.service.release_watches();
        self.stop_ticker.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

impl Drop for ControllerServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets the controller's gauges (docs/operations.md, "Metrics") from the record it serves;
/// with no recorder installed these are no-ops.
fn publish_state(s: &LeaderAndIsr) {
    use crate::observe::{CONTROLLER_ISR_SIZE, CONTROLLER_LEADER, CONTROLLER_LEADER_EPOCH};
    metrics::gauge!(CONTROLLER_LEADER).set(s.leader.map_or(-1.0, |l| f64::from(l.0)));
    metrics::gauge!(CONTROLLER_LEADER_EPOCH).set(f64::from(s.leader_epoch));
    metrics::gauge!(CONTROLLER_ISR_SIZE).set(s.isr.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::io::fs::RealStorage;
    use crate::replication::IsrMember;

    fn service(clock: Arc<ManualClock>) -> (tempfile::TempDir, ControllerService) {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterFile::parse(
            "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nreplica 2 127.0.0.1:3\n\
             replica 3 127.0.0.1:4\nmin_insync_replicas 2\n",
        )
        .unwrap();
        let mut cfg = ControllerConfig::new(dir.path());
        cfg.session_timeout_ms = 1_000;
        let s =
            ControllerService::open(cluster, &cfg, clock, Arc::new(RealStorage::new())).unwrap();
        (dir, s)
    }

    fn register(s: &ControllerService, r: u32, inc: u64) -> LeaderAndIsr {
        match s.handle(Message::Register {
            replica: ReplicaId(r),
            incarnation: inc,
            recovery: LogRecovery::Intact,
        }) {
            Message::LeaderAndIsr(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn heartbeat(s: &ControllerService, r: u32, inc: u64) -> Message {
        s.handle(Message::Heartbeat {
            replica: ReplicaId(r),
            incarnation: inc,
            log_end: Offset(10),
        })
    }

    #[test]
    fn sessions_expire_by_the_injected_clock() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (_d, s) = service(Arc::clone(&clock));
        for r in 1..=3 {
            register(&s, r, 100 + u64::from(r));
        }
        let leader = s.state().leader.unwrap();
        clock.advance(600);
        for r in [2, 3] {
            assert!(matches!(
                heartbeat(&s, r, 100 + u64::from(r)),
                Message::LeaderAndIsr(_)
            ));
        }
        clock.advance(600);
        // r1 was last seen 1200 ms ago: expired before this request was answered.
        assert_eq!(leader, ReplicaId(1));
        let Message::LeaderAndIsr(st) = heartbeat(&s, 2, 102) else {
            panic!()
        };
        assert_eq!(st.leader, Some(ReplicaId(2)));
        assert_eq!(st.isr, vec![ReplicaId(2), ReplicaId(3)]);
        assert!(matches!(
            heartbeat(&s, 1, 101),
            Message::Error(ErrorReply {
                error: RemoteError::SessionExpired { .. },
                ..
            })
        ));
        // A heartbeat from another incarnation is refused too, and changes nothing.
        assert!(matches!(heartbeat(&s, 3, 999), Message::Error(_)));
        assert!(s.controller().is_alive(ReplicaId(3)));
        s.controller().check_invariants();
    }

    #[test]
    fn unregistered_replicas_expire_after_the_first_timeout() {
        let clock = Arc::new(ManualClock::new(0));
        let (_d, s) = service(Arc::clone(&clock));
        register(&s, 2, 7);
        clock.advance(500);
        assert!(matches!(heartbeat(&s, 2, 7), Message::LeaderAndIsr(_)));
        clock.advance(501);
        assert_eq!(s.expire_sessions(), vec![ReplicaId(1), ReplicaId(3)]);
        let st = s.state();
        assert_eq!(st.leader, Some(ReplicaId(2)));
        assert_eq!(st.isr, vec![ReplicaId(2)]);
    }

    #[test]
    fn requests_it_does_not_serve_are_invalid() {
        let (_d, s) = service(Arc::new(ManualClock::new(0)));
        for m in [
            Message::Read {
                offset: Offset(0),
                max_bytes: 1,
            },
            Message::InitProducerId {
                producer_id: Some(crate::types::ProducerId(1)),
            },
        ] {
            assert!(matches!(
                s.handle(m),
                Message::Error(ErrorReply {
                    error: RemoteError::InvalidRequest,
                    ..
                })
            ));
        }
        let bad = Message::AlterIsr(AlterIsrRequest {
            leader: ReplicaId(2),
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![IsrMember {
                replica: ReplicaId(2),
                incarnation: None,
            }],
        });
        assert!(matches!(
            s.handle(bad),
            Message::Error(ErrorReply {
                error: RemoteError::Replication(ReplicationError::NotLeader { .. }),
                ..
            })
        ));
        assert!(matches!(
            s.handle(Message::ReplicaFailed {
                replica: ReplicaId(9)
            }),
            Message::Error(_)
        ));
    }
}
