//! Where the controller keeps its partition record, replica sessions and producer-id counter
//! when they must outlive one process and be shared by several controller processes (the
//! controller on etcd, `crate::etcd`). Without a store, [`super::ControllerService`] keeps all
//! of it in its own memory (one process).
//!
//! The store never decides anything: the rules stay in [`InProcessController`]. The service
//! loads the record, applies one request to it in memory and writes it back with
//! [`ControllerStore::compare_and_set`]; a lost race is retried on the newer record.
//!
//! Every method blocks the calling thread (an implementation owns whatever runtime it needs).

use std::collections::BTreeMap;
use std::fmt;

use crate::replication::{InProcessController, Incarnation, ReplicaId};
use crate::types::ProducerId;

/// A version of the stored record (etcd's `mod_revision` of its key): it changes on every
/// write, so a write conditioned on it is a compare-and-set.
pub type RecordVersion = i64;

/// A store call that failed or could not reach the store (it may or may not have applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What was attempted ("load the partition record", "grant a session lease"...).
    pub op: &'static str,
    /// The store's description of the failure.
    pub message: String,
}

impl StoreError {
    /// A failure of `op`, described by `message`.
    pub fn new(op: &'static str, message: impl fmt::Display) -> Self {
        StoreError {
            op,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "controller store: {}: {}", self.op, self.message)
    }
}

impl std::error::Error for StoreError {}

/// The shared state of the controller processes of one partition. See the module doc.
pub trait ControllerStore: Send + Sync + fmt::Debug {
    /// The stored record and its version, or `None` before the first write.
    fn load(&self) -> Result<Option<(InProcessController, RecordVersion)>, StoreError>;

    /// Writes `next` only if the stored version is still `expected` (`None`: no record yet).
    /// `Ok(false)`: another writer got there first; nothing was written.
    fn compare_and_set(
        &self,
        expected: Option<RecordVersion>,
        next: &InProcessController,
    ) -> Result<bool, StoreError>;

    /// Starts the session of `replica`'s life `incarnation` (replacing any earlier one). It
    /// ends by itself `ttl_ms` (rounded up to what the store supports) after the last
    /// [`keep_session`](Self::keep_session).
    fn start_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    /// Extends the session of `replica` as `incarnation`; `Ok(false)` if it has none (expired,
    /// ended, or started by another life).
    fn keep_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
    ) -> Result<bool, StoreError>;

    /// Ends the session of `replica` now (a controlled shutdown).
    fn end_session(&self, replica: ReplicaId) -> Result<(), StoreError>;

    /// Every live session: replica → incarnation.
    fn sessions(&self) -> Result<BTreeMap<ReplicaId, Incarnation>, StoreError>;

    /// A producer id no controller process handed out before.
    fn allocate_producer_id(&self) -> Result<ProducerId, StoreError>;

    /// Whether this process is the acting controller now: only the acting one turns missing
    /// sessions into `replica_failed` (every process may serve requests, since each change is
    /// a compare-and-set).
    fn is_acting(&self) -> bool;

    /// Starts calling `wake` whenever the record or a session changes in the store, and once
    /// more after every resynchronization (a watch that had to start again); `false` if the
    /// store cannot push changes (the default), in which case the service only polls. `wake`
    /// must return at once: it runs on the store's own threads, which the service's calls
    /// need (it should only signal a channel). Calls may be spurious or coalesced; the
    /// service reads the store again on each.
    fn watch(&self, wake: StoreWake) -> bool {
        let _ = wake;
        false
    }
}

/// What a store calls when it saw a change (see [`ControllerStore::watch`]).
pub type StoreWake = Box<dyn Fn() + Send + Sync>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::net::{ClusterFile, ControllerConfig, ControllerService, Message};
    use crate::replication::{Controller, LeaderAndIsr, LogRecovery};

    /// A store in this process's memory, with a hook that plays another controller process.
    #[derive(Default)]
    struct MemoryStore {
        state: Mutex<MemoryState>,
        acting: AtomicBool,
        /// Before the next compare-and-set, another writer fails this replica (once).
        interfere: Mutex<Option<ReplicaId>>,
        /// The service's wake-up, once it asked for one (`watch`).
        wake: Mutex<Option<StoreWake>>,
    }

    impl MemoryStore {
        /// Another party ends `r`'s session (a lease expiring): the watch pushes it.
        fn session_lost(&self, r: ReplicaId) {
            self.state.lock().sessions.remove(&r);
            if let Some(wake) = self.wake.lock().as_ref() {
                wake();
            }
        }
    }

    impl fmt::Debug for MemoryStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MemoryStore").finish_non_exhaustive()
        }
    }

    #[derive(Debug, Default)]
    struct MemoryState {
        record: Option<(InProcessController, RecordVersion)>,
        sessions: BTreeMap<ReplicaId, Incarnation>,
        next_id: i64,
    }

    impl ControllerStore for MemoryStore {
        fn load(&self) -> Result<Option<(InProcessController, RecordVersion)>, StoreError> {
            Ok(self.state.lock().record.clone())
        }
        fn compare_and_set(
            &self,
            expected: Option<RecordVersion>,
            next: &InProcessController,
        ) -> Result<bool, StoreError> {
            let mut st = self.state.lock();
            if let Some(r) = self.interfere.lock().take() {
                if let Some((c, v)) = st.record.as_mut() {
                    c.replica_failed(r);
                    *v += 1;
                }
            }
            let current = st.record.as_ref().map(|(_, v)| *v);
            if current != expected {
                return Ok(false);
            }
            st.record = Some((next.clone(), current.unwrap_or(0) + 1));
            Ok(true)
        }
        fn start_session(&self, r: ReplicaId, i: Incarnation, _: u64) -> Result<(), StoreError> {
            self.state.lock().sessions.insert(r, i);
            Ok(())
        }
        fn keep_session(&self, r: ReplicaId, i: Incarnation) -> Result<bool, StoreError> {
            Ok(self.state.lock().sessions.get(&r) == Some(&i))
        }
        fn end_session(&self, r: ReplicaId) -> Result<(), StoreError> {
            self.state.lock().sessions.remove(&r);
            Ok(())
        }
        fn sessions(&self) -> Result<BTreeMap<ReplicaId, Incarnation>, StoreError> {
            Ok(self.state.lock().sessions.clone())
        }
        fn allocate_producer_id(&self) -> Result<ProducerId, StoreError> {
            let mut st = self.state.lock();
            st.next_id += 1;
            Ok(ProducerId(st.next_id - 1))
        }
        fn is_acting(&self) -> bool {
            self.acting.load(Ordering::Acquire)
        }
        fn watch(&self, wake: StoreWake) -> bool {
            *self.wake.lock() = Some(wake);
            true
        }
    }

    fn service(store: &Arc<MemoryStore>, clock: &Arc<ManualClock>) -> ControllerService {
        let cluster = ClusterFile::parse(
            "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nreplica 2 127.0.0.1:3\n\
             replica 3 127.0.0.1:4\n",
        )
        .unwrap();
        let mut config = ControllerConfig::new("unused");
        config.session_timeout_ms = 1_000;
        ControllerService::with_store(
            cluster,
            &config,
            Arc::clone(clock) as Arc<dyn crate::clock::Clock>,
            Arc::clone(store) as Arc<dyn ControllerStore>,
        )
    }

    fn register(s: &ControllerService, r: u32) -> LeaderAndIsr {
        match s.handle(Message::Register {
            replica: ReplicaId(r),
            incarnation: 5,
            recovery: LogRecovery::Intact,
        }) {
            Message::LeaderAndIsr(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lost_race_is_retried_on_the_newer_record() {
        let store = Arc::new(MemoryStore::default());
        let s = service(&store, &Arc::new(ManualClock::new(0)));
        for r in 1..=3 {
            register(&s, r);
        }
        *store.interfere.lock() = Some(ReplicaId(3));
        let Message::Elected { state, unclean } = s.handle(Message::ElectLeader {
            preferred: Some(ReplicaId(2)),
            allow_unclean: false,
        }) else {
            panic!("not elected")
        };
        assert!(!unclean);
        // Both changes are in: the other writer's (r3 failed) and ours, applied on top of it.
        assert_eq!(state.leader, Some(ReplicaId(2)));
        assert_eq!(state.isr, vec![ReplicaId(1), ReplicaId(2)]);
        let (stored, _) = store.load().unwrap().unwrap();
        assert_eq!(stored.leader_and_isr(), state);
        assert!(!stored.is_alive(ReplicaId(3)));
        stored.check_invariants();
    }

    #[test]
    fn only_the_acting_controller_expires_and_gives_unseen_replicas_one_timeout() {
        let store = Arc::new(MemoryStore::default());
        let clock = Arc::new(ManualClock::new(0));
        let s = service(&store, &clock);
        register(&s, 1);
        register(&s, 2);
        clock.advance(5_000);
        assert!(s.expire_sessions().is_empty(), "not acting");
        store.acting.store(true, Ordering::Release);
        // r3 never registered: this acting controller gives it one timeout from now.
        assert!(s.expire_sessions().is_empty());
        clock.advance(1_001);
        assert_eq!(s.expire_sessions(), vec![ReplicaId(3)]);
        // r1's session (seen) ends in the store: failed at the next check, re-elected away.
        store.state.lock().sessions.remove(&ReplicaId(1));
        assert_eq!(s.expire_sessions(), vec![ReplicaId(1)]);
        let st = s.state();
        assert_eq!(st.leader, Some(ReplicaId(2)));
        assert_eq!(st.isr, vec![ReplicaId(2)]);
        // Its heartbeat is refused from now on; a new registration brings it back.
        assert!(matches!(
            s.handle(Message::Heartbeat {
                replica: ReplicaId(1),
                incarnation: 5,
                log_end: crate::types::Offset(0),
            }),
            Message::Error(_)
        ));
        register(&s, 1);
        assert!(s.controller().is_alive(ReplicaId(1)));
        assert!(s.expire_sessions().is_empty());
    }

    #[test]
    fn a_pushed_change_is_expired_at_once_not_at_the_next_check() {
        use crate::net::ControllerServer;
        let store = Arc::new(MemoryStore::default());
        store.acting.store(true, Ordering::Release);
        let clock = Arc::new(ManualClock::new(0));
        let mut config = ControllerConfig::new("unused");
        config.expiry_check_interval = std::time::Duration::from_secs(600);
        let service = service(&store, &clock);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = ControllerServer::serve(listener, service, &config).unwrap();
        for r in 1..=3 {
            register(server.service(), r);
        }
        // One check (what a first wake-up does): the acting controller sees every session.
        assert!(server.service().expire_sessions().is_empty());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        store.session_lost(ReplicaId(1));
        while server.service().controller().is_alive(ReplicaId(1)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the pushed change was not acted on (the periodic check runs every 600 s)"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let st = server.service().state();
        assert_eq!(st.isr, vec![ReplicaId(2), ReplicaId(3)]);
        assert_ne!(st.leader, Some(ReplicaId(1)));
        server.shutdown();
    }
}
