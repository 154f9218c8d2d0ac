//! The in-process driver: one thread per [`Replica`], crossbeam channels between them, and the
//! [`InProcessController`] behind a `parking_lot::Mutex` that every thread calls directly.
//!
//! Thread model (one partition, replicas `r1..=rN`, each in `base_dir/replica-<id>`):
//! - each replica thread owns a [`crate::replica::ReplicaNode`] (the node `oncelog node` and the
//!   simulation run too; `threads_node.rs` is the channel transport) and waits on its inbox
//!   (node messages with a reply channel, inspection closures, stop) and on the answers to its
//!   own fetches, until the node's next wake-up; fetch scheduling, the leader's long poll
//!   (`fetch_wait_ms`) and acks=all answers are the node's;
//! - a leader's ISR proposal goes to the controller synchronously and the new record is sent to
//!   every other replica's inbox while the controller lock is held (so every inbox sees records
//!   in the controller's order), addressed to the incarnation the controller knows for it;
//! - clients ([`ClusterClient`]) look the leader up in the controller and send their produce
//!   request to its inbox with a reply channel;
//! - the control operations ([`ThreadCluster::kill_replica`], `restart_replica`, `move_leader`)
//!   run in the caller's thread: they stop or start a replica thread and tell the controller,
//!   which elects and publishes.
//!
//! Producer ids and epochs come from a counter beside the controller, never from a replica's
//! log: every leader the producer ever talks to must agree on them.
//!
//! Invariants:
//! - at most one thread per replica id runs, and only a running replica has an inbox in the
//!   registry;
//! - lock order: controller (`control`), then the inbox registry (`inboxes`); no replica thread
//!   waits for another thread while holding either;
//! - the cluster never panics on a closed channel: a send to a stopped replica is a lost message
//!   (the sender retries or times out).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::log::{AppendInfo, Fetch};
use crate::producer::retry::Attempts;
use crate::producer::{AttemptOutcome, ProduceTarget};
use crate::replica::ErrorReply;
use crate::replica::{Acks, Msg, Replica, ReplicaConfig};
use crate::replication::{
    controller::Election, Controller, InProcessController, LeaderAndIsr, LeaderConfig, ReplicaId,
};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

use super::threads_node::Node;

/// Settings of a [`ThreadCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Every replica's log settings (each replica gets its own directory).
    pub log: LogConfig,
    /// `min_insync_replicas` and `replica_lag_time_max_ms`.
    pub leader: LeaderConfig,
    /// Longest time the leader holds a follower's fetch at the log end (Kafka's
    /// `replica.fetch.wait.max.ms`). 0 = answer at once (the follower then polls every tick).
    pub fetch_wait_ms: u64,
    /// How often each thread ticks its replica (acks=all timeouts, ISR changes, HW checkpoint).
    pub tick_ms: u64,
    /// Most bytes a follower asks for per fetch.
    pub fetch_max_bytes: u32,
    /// How often a replica rewrites its high-water-mark checkpoint.
    pub hw_checkpoint_interval_ms: u64,
    /// Default timeout of a [`ClusterClient`] request (its acks=all deadline too).
    pub request_timeout_ms: u64,
    /// Answer a parked follower fetch as soon as the leader's high-water mark moves (followers
    /// learn the HW at once, at the price of one more fetch round trip per HW move); otherwise
    /// they learn it with the next data or after `fetch_wait_ms` (Kafka's behaviour).
    pub wake_followers_on_hw: bool,
    /// Check every replica's invariants after every event (tests; panics the thread).
    pub check_invariants: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            log: LogConfig::default(),
            leader: LeaderConfig::default(),
            fetch_wait_ms: 500,
            tick_ms: 10,
            fetch_max_bytes: 1 << 20,
            hw_checkpoint_interval_ms: 5_000,
            request_timeout_ms: 30_000,
            wake_followers_on_hw: true,
            check_invariants: false,
        }
    }
}

/// What one replica thread reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's id.
    pub id: ReplicaId,
    /// The replica's current incarnation (a new value at every restart).
    pub incarnation: u64,
    /// The leader it follows (itself when leading), `None` while offline.
    pub leader: Option<ReplicaId>,
    /// Whether the replica leads the partition now.
    pub is_leader: bool,
    /// The leader epoch of the newest controller record the replica applied.
    pub leader_epoch: LeaderEpoch,
    /// Readers see only offsets below this.
    pub high_watermark: Offset,
    /// The replica log's first offset.
    pub log_start: Offset,
    /// The replica log's end offset (may be above the high watermark).
    pub log_end: Offset,
    /// The committed ISR as this replica knows it.
    pub isr: Vec<ReplicaId>,
    /// The last error the thread met (a failed fetch response, tick or record), if any.
    pub last_error: Option<String>,
}

/// How a replica thread stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopMode {
    /// `Replica::close`: HW checkpoint, clean-shutdown marker.
    Close,
    /// `Replica::simulate_crash`: nothing written, like kill -9.
    Crash,
}

/// What a replica thread receives.
pub(super) enum Event {
    /// A message for the node; a request carries the channel its answer goes to.
    Deliver {
        msg: Msg,
        reply_to: Option<Sender<Msg>>,
    },
    Inspect(Box<dyn FnOnce(&Replica) + Send>),
    Status(Sender<ReplicaStatus>),
    Stop(StopMode),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Deliver { msg, .. } => f.debug_tuple("Deliver").field(&msg.name()).finish(),
            Event::Inspect(_) => f.write_str("Inspect"),
            Event::Status(_) => f.write_str("Status"),
            Event::Stop(m) => f.debug_tuple("Stop").field(m).finish(),
        }
    }
}

/// The controller and what lives beside it.
#[derive(Debug)]
pub(super) struct ControlPlane {
    pub(super) ctl: InProcessController,
    next_producer_id: i64,
    producer_epochs: HashMap<ProducerId, ProducerEpoch>,
}

/// What every thread of a cluster shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) opts: ClusterOptions,
    base_dir: PathBuf,
    replicas: Vec<ReplicaId>,
    /// The zero of every `now_ms` (monotonic).
    epoch: Instant,
    pub(super) control: Mutex<ControlPlane>,
    /// Inboxes of the running replica threads.
    inboxes: RwLock<BTreeMap<ReplicaId, Sender<Event>>>,
    /// Set by `shutdown` (or dropping the cluster): clients fail with `Closed` at once.
    closed: AtomicBool,
}

impl Shared {
    /// Monotonic milliseconds since the cluster started (the replicas' `now_ms`).
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn inbox(&self, id: ReplicaId) -> Option<Sender<Event>> {
        self.inboxes.read().get(&id).cloned()
    }

    /// Sends `rec` to every running replica but `skip`, addressed to the incarnation `ctl`
    /// knows for it. Call with the controller lock held (`ctl` is behind it), so that every
    /// inbox receives the records in the controller's order.
    pub(super) fn publish(
        &self,
        ctl: &InProcessController,
        rec: &LeaderAndIsr,
        skip: Option<ReplicaId>,
    ) {
        for (id, inbox) in self.inboxes.read().iter() {
            if Some(*id) != skip {
                // A replica that stopped meanwhile gets the current record when it restarts.
                let msg = Msg::Record {
                    rec: rec.clone(),
                    incarnation: ctl.incarnation(*id),
                };
                let _ = inbox.send(Event::Deliver {
                    msg,
                    reply_to: None,
                });
            }
        }
    }

    fn replica_dir(&self, id: ReplicaId) -> PathBuf {
        self.base_dir.join(format!("replica-{}", id.0))
    }

    fn replica_config(&self, id: ReplicaId) -> ReplicaConfig {
        let mut cfg = ReplicaConfig::new(id, &self.replicas, self.opts.log.clone());
        cfg.leader = self.opts.leader;
        cfg.fetch_max_bytes = self.opts.fetch_max_bytes;
        cfg.hw_checkpoint_interval_ms = self.opts.hw_checkpoint_interval_ms;
        cfg
    }
}

/// A running replica thread.
#[derive(Debug)]
struct Running {
    handle: JoinHandle<Result<()>>,
}

/// One partition replicated over `replica_count` in-process replicas, a thread each. See the
/// module documentation for the thread model.
#[derive(Debug)]
pub struct ThreadCluster {
    shared: Arc<Shared>,
    running: Mutex<BTreeMap<ReplicaId, Running>>,
}

impl ThreadCluster {
    /// Creates a new partition of `replica_count` replicas (`r1..=rN`) in
    /// `base_dir/replica-<id>` and starts a thread for each; `r1` leads in leader epoch 0.
    ///
    /// The controller keeps its state in memory only, so the replica directories must be new
    /// (absent or empty): a controller that forgot the leader epochs and the ISR of an earlier
    /// run could elect a replica that misses committed records.
    pub fn start(
        base_dir: impl AsRef<Path>,
        replica_count: u32,
        opts: ClusterOptions,
    ) -> Result<ThreadCluster> {
        if replica_count == 0 {
            return Err(Error::InvalidConfig(
                "a cluster needs at least one replica".into(),
            ));
        }
        if opts.tick_ms == 0 {
            return Err(Error::InvalidConfig("tick_ms must be at least 1".into()));
        }
        opts.log.validate()?;
        let base_dir = base_dir.as_ref().to_path_buf();
        let replicas: Vec<ReplicaId> = (1..=replica_count).map(ReplicaId).collect();
        let shared = Arc::new(Shared {
            control: Mutex::new(ControlPlane {
                ctl: InProcessController::new(&replicas),
                next_producer_id: 0,
                producer_epochs: HashMap::new(),
            }),
            opts,
            base_dir,
            replicas: replicas.clone(),
            epoch: Instant::now(),
            inboxes: RwLock::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
        });
        std::fs::create_dir_all(&shared.base_dir)
            .map_err(|e| Error::io("create cluster directory", &shared.base_dir, e))?;
        for &id in &replicas {
            let dir = shared.replica_dir(id);
            let used = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
            if used {
                return Err(Error::InvalidConfig(format!(
                    "{} is not empty: a ThreadCluster starts a new partition (its controller \
                     keeps no state across runs)",
                    dir.display()
                )));
            }
        }
        let cluster = ThreadCluster {
            shared: Arc::clone(&shared),
            running: Mutex::new(BTreeMap::new()),
        };
        for &id in &replicas {
            // The controller starts with every replica alive in incarnation 0.
            let replica = Replica::open(shared.replica_dir(id), shared.replica_config(id), 0)?;
            cluster.spawn(replica)?;
        }
        let control = shared.control.lock();
        shared.publish(&control.ctl, &control.ctl.leader_and_isr(), None);
        drop(control);
        Ok(cluster)
    }

    fn spawn(&self, replica: Replica) -> Result<()> {
        let id = replica.id();
        let dir = replica.dir().to_path_buf();
        let (tx, rx) = crossbeam_channel::unbounded();
        let node = Node::new(replica, Arc::clone(&self.shared), rx);
        let handle = std::thread::Builder::new()
            .name(format!("oncelog-replica-{}", id.0))
            .spawn(move || node.run())
            .map_err(|e| Error::io("spawn replica thread", dir, e))?;
        self.shared.inboxes.write().insert(id, tx);
        self.running.lock().insert(id, Running { handle });
        Ok(())
    }

    /// Stops replica `id`'s thread (`mode`) and waits for it; `false` if it was not running,
    /// the thread's error (or panic) if it ended with one.
    fn stop(&self, id: ReplicaId, mode: StopMode) -> Result<bool> {
        let Some(running) = self.running.lock().remove(&id) else {
            return Ok(false);
        };
        // Out of the registry first: nobody sends it anything new.
        if let Some(inbox) = self.shared.inboxes.write().remove(&id) {
            let _ = inbox.send(Event::Stop(mode));
        }
        join(running.handle, &self.shared.replica_dir(id))?;
        Ok(true)
    }

    /// A client handle: the target of an idempotent [`crate::producer::Producer`].
    pub fn producer_handle(&self) -> ClusterClient {
        ClusterClient {
            shared: Arc::clone(&self.shared),
            acks: Acks::All,
            timeout: Duration::from_millis(self.shared.opts.request_timeout_ms),
            retries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The replica ids, `r1..=rN`.
    pub fn replicas(&self) -> Vec<ReplicaId> {
        self.shared.replicas.clone()
    }

    /// The directory of replica `id`'s log.
    pub fn replica_dir(&self, id: ReplicaId) -> PathBuf {
        self.shared.replica_dir(id)
    }

    /// The controller's current record.
    pub fn leader_and_isr(&self) -> LeaderAndIsr {
        self.shared.control.lock().ctl.leader_and_isr()
    }

    /// The leader according to the controller (`None` while the partition is offline).
    pub fn leader(&self) -> Option<ReplicaId> {
        self.leader_and_isr().leader
    }

    /// Whether replica `id`'s thread runs.
    pub fn is_running(&self, id: ReplicaId) -> bool {
        self.running.lock().contains_key(&id)
    }

    /// Runs `f` on replica `id`'s thread, between two events, and returns its result;
    /// `Error::Closed` if the replica is not running.
    pub fn with_replica<R: Send + 'static>(
        &self,
        id: ReplicaId,
        f: impl FnOnce(&Replica) -> R + Send + 'static,
    ) -> Result<R> {
        let inbox = self.shared.inbox(id).ok_or(Error::Closed)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job = Box::new(move |r: &Replica| {
            let _ = tx.send(f(r));
        });
        inbox.send(Event::Inspect(job)).map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)
    }

    /// What replica `id` reports about itself; `None` if it is not running.
    pub fn status(&self, id: ReplicaId) -> Option<ReplicaStatus> {
        let inbox = self.shared.inbox(id)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        inbox.send(Event::Status(tx)).ok()?;
        rx.recv().ok()
    }

    /// The leader's high-water mark (`None` without a running leader).
    pub fn high_watermark(&self) -> Option<Offset> {
        let leader = self.leader()?;
        self.with_replica(leader, |r| r.high_watermark()).ok()
    }

    /// Committed batches from `offset` (at most `max_bytes`, at least one batch), read on the
    /// leader: only offsets below its high-water mark.
    pub fn read_committed(&self, offset: Offset, max_bytes: usize) -> Result<Fetch> {
        let rec = self.leader_and_isr();
        let leader = rec.leader.ok_or(Error::NotLeader {
            leader: None,
            leader_epoch: rec.leader_epoch,
        })?;
        self.read_committed_from(leader, offset, max_bytes)
    }

    /// Like [`ThreadCluster::read_committed`], on replica `id` below its own high-water mark
    /// (a follower learns the leader's one fetch later).
    pub fn read_committed_from(
        &self,
        id: ReplicaId,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Fetch> {
        self.with_replica(id, move |r| r.read_committed(offset, max_bytes))?
    }

    /// Crashes replica `id` (`Replica::simulate_crash`: no checkpoint, no clean-shutdown
    /// marker, like kill -9 of its process) and then reports it failed to the controller, which
    /// removes it from the ISR and, if it led, elects a new leader from the ISR. Its waiting
    /// clients see a lost response (`Timeout`) and retry. Returns the new record.
    pub fn kill_replica(&self, id: ReplicaId) -> Result<LeaderAndIsr> {
        self.stop_and_report(id, StopMode::Crash)
    }

    /// Stops replica `id` cleanly (`Replica::close`) and reports it failed to the controller.
    pub fn stop_replica(&self, id: ReplicaId) -> Result<LeaderAndIsr> {
        self.stop_and_report(id, StopMode::Close)
    }

    /// Stops `id` and reports it failed to the controller — also when its thread ended with an
    /// error or a panic (returned after the report: the controller must not keep a dead leader).
    fn stop_and_report(&self, id: ReplicaId, mode: StopMode) -> Result<LeaderAndIsr> {
        let stopped = match self.stop(id, mode) {
            Ok(false) => return Err(Error::InvalidConfig(format!("replica {id} is not running"))),
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        };
        let rec = {
            let mut control = self.shared.control.lock();
            let rec = control.ctl.replica_failed(id);
            self.shared.publish(&control.ctl, &rec, None);
            rec
        };
        stopped.map(|()| rec)
    }

    /// Reopens a stopped replica (recovering its log) as a new incarnation and registers it with
    /// the controller (`replica_restarted` with its `log_recovery()`); it rejoins the ISR once
    /// the leader sees it caught up. Returns the new record.
    pub fn restart_replica(&self, id: ReplicaId) -> Result<LeaderAndIsr> {
        if !self.shared.replicas.contains(&id) {
            return Err(Error::InvalidConfig(format!(
                "replica {id} is not a replica"
            )));
        }
        if self.is_running(id) {
            return Err(Error::InvalidConfig(format!("replica {id} is running")));
        }
        let incarnation = self
            .shared
            .control
            .lock()
            .ctl
            .incarnation(id)
            .map_or(0, |i| i + 1);
        let replica = Replica::open(
            self.shared.replica_dir(id),
            self.shared.replica_config(id),
            incarnation,
        )?;
        let recovery = replica.log_recovery();
        self.spawn(replica)?;
        let mut control = self.shared.control.lock();
        let rec = control.ctl.replica_restarted(id, incarnation, recovery);
        // Everyone, the restarted replica included (it knows no record yet).
        self.shared.publish(&control.ctl, &rec, None);
        Ok(rec)
    }

    /// Moves leadership to `to` (a preferred-replica election: a new leader epoch). Only a clean
    /// candidate — an alive ISR member that has not lost data — may be chosen
    /// (`IneligibleReplica` otherwise); nothing changes if `to` already leads. The old leader's
    /// waiting acks=all requests are answered `NotLeader` (a `ClusterClient` retries them
    /// against `to`). Returns the new record.
    pub fn move_leader(&self, to: ReplicaId) -> Result<LeaderAndIsr> {
        let mut control = self.shared.control.lock();
        let election = control.ctl.elect_preferred(to, false)?;
        self.shared.publish(&control.ctl, &election.state, None);
        Ok(election.state)
    }

    /// Asks the controller for a new leader election (`Controller::elect_leader`); with
    /// `allow_unclean` any alive replica may be chosen when no clean candidate exists (the
    /// answer says so: committed records may be lost).
    pub fn elect_leader(&self, allow_unclean: bool) -> Result<Election> {
        let mut control = self.shared.control.lock();
        let election = control.ctl.elect_leader(allow_unclean)?;
        self.shared.publish(&control.ctl, &election.state, None);
        Ok(election)
    }

    /// Stops every replica cleanly (HW checkpoint, clean-shutdown marker); returns the first
    /// error.
    pub fn shutdown(self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.stop_all(StopMode::Close)
    }

    fn stop_all(&self, mode: StopMode) -> Result<()> {
        let ids: Vec<ReplicaId> = self.running.lock().keys().copied().collect();
        let mut first = Ok(());
        for id in ids {
            if let Err(e) = self.stop(id, mode) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for ThreadCluster {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.stop_all(StopMode::Close);
    }
}

fn join(handle: JoinHandle<Result<()>>, dir: &Path) -> Result<()> {
    match handle.join() {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            Err(Error::io(
                "replica thread",
                dir,
                std::io::Error::other(format!("panicked: {msg}")),
            ))
        }
    }
}

/// A produce request sent to the leader, not yet answered.
#[derive(Debug)]
pub struct PendingProduce {
    rx: Receiver<Msg>,
    deadline: Instant,
}

impl PendingProduce {
    /// Waits for the answer. A request whose answer cannot come any more (the leader stopped)
    /// or did not come in time is `Timeout`: the outcome is unknown (see [`ClusterClient`]).
    pub fn wait(self) -> Result<AppendInfo> {
        // The replica answers a timed-out acks=all request at its next tick after the deadline.
        let grace = Duration::from_millis(1_000);
        let wait = self.deadline.saturating_duration_since(Instant::now()) + grace;
        match self.rx.recv_timeout(wait) {
            Ok(msg) => answer(msg),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Err(Error::Timeout),
        }
    }

    /// The answer if it has come.
    pub fn try_wait(&self) -> Option<Result<AppendInfo>> {
        self.rx.try_recv().ok().map(answer)
    }
}

/// The client's view of the node's answer to its produce request.
fn answer(msg: Msg) -> Result<AppendInfo> {
    match msg {
        Msg::ProduceResult { result, .. } => result.map_err(ErrorReply::into_error),
        other => Err(Error::InvalidConfig(format!(
            "a produce request was answered with {}",
            other.name()
        ))),
    }
}

/// A client of a [`ThreadCluster`]: sends produce requests to the current leader and allocates
/// producer ids. Cheap to clone, usable from any thread; once the cluster is shut down (or
/// dropped) requests fail with `Closed`.
///
/// Answers of a request: `NotLeader` means it was *not written* (no leader, the leader was not
/// running, or the replica did not lead when it arrived): always safe to re-send. `Timeout`
/// means the outcome is *unknown* (no answer in time, the leader stopped with the request, or
/// it stepped down while the acks=all request waited: the batch may be in the log).
///
/// As a [`ProduceTarget`] (for the idempotent [`crate::producer::Producer`]) a produce waits for
/// the answer and re-sends the same bytes to the current leader until `timeout` after
/// `NotLeader`, and also after `Timeout` when the batch is idempotent (a duplicate is then
/// answered with its original offsets); otherwise it answers `Timeout` — the Producer's retry
/// loop treats only `Timeout` (not `NotLeader`) as retriable. A plain batch with an unknown
/// outcome is returned as `Timeout` at once, never written twice by the client.
/// `NotEnoughReplicas` (refused before appending) is re-sent like `NotLeader` until `timeout`,
/// then returned as itself unless an attempt's outcome was unknown (`producer::retry`). Every
/// other error is returned at once.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    shared: Arc<Shared>,
    /// The acks of every request.
    pub acks: Acks,
    /// How long a request may take, retries included; also the acks=all deadline.
    pub timeout: Duration,
    /// Re-sends by [`ProduceTarget::produce`], shared by the clones of this client.
    retries: Arc<AtomicU64>,
}

impl ClusterClient {
    /// Sets the acks of every request sent from now on.
    pub fn with_acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets how long a request may take, retries included (also the acks=all deadline).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times [`ProduceTarget::produce`] re-sent a request (no leader, leader moved or
    /// stopped before answering), over this client and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// One attempt: sends `batch` to the current leader and returns without waiting (several
    /// requests may be in flight; a leader answers them in order for acks=0/1, and acks=all ones
    /// as the high-water mark passes them). `NotLeader` (not sent) if no leader is known or it
    /// is not running.
    pub fn send(&self, batch: RecordBatch) -> Result<PendingProduce> {
        let deadline = Instant::now() + self.timeout;
        self.send_until(batch, deadline)
    }

    fn send_until(&self, batch: RecordBatch, deadline: Instant) -> Result<PendingProduce> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let rec = self.shared.control.lock().ctl.leader_and_isr();
        let leader = rec.leader.ok_or(Error::NotLeader {
            leader: None,
            leader_epoch: rec.leader_epoch,
        })?;
        // Not delivered (the leader is not running): nothing was written.
        let not_delivered = Error::NotLeader {
            leader: Some(leader.0),
            leader_epoch: rec.leader_epoch,
        };
        let Some(inbox) = self.shared.inbox(leader) else {
            return Err(not_delivered);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX / 2);
        let (tx, rx) = crossbeam_channel::bounded(1);
        inbox
            .send(Event::Deliver {
                msg: Msg::Produce {
                    token: 0,
                    batch,
                    acks: self.acks,
                    timeout_ms,
                },
                reply_to: Some(tx),
            })
            .map_err(|_| not_delivered)?;
        Ok(PendingProduce { rx, deadline })
    }
}

impl ProduceTarget for ClusterClient {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let deadline = Instant::now() + self.timeout;
        // An unknown outcome is re-sent only when a duplicate would be recognised.
        let idempotent = batch.header().is_idempotent();
        let mut backoff = Duration::from_millis(1);
        let mut attempts = Attempts::default();
        loop {
            let result = self
                .send_until(batch.clone(), deadline)
                .and_then(PendingProduce::wait);
            match result {
                Err(e) if AttemptOutcome::of(&e).may_resend(idempotent) => {
                    let outcome = AttemptOutcome::of(&e);
                    attempts.failed(e, outcome);
                }
                other => return other,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(attempts.give_up());
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(Duration::from_millis(50));
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        let mut control = self.shared.control.lock();
        let id = ProducerId(control.next_producer_id);
        control.next_producer_id += 1;
        control.producer_epochs.insert(id, 0);
        Ok((id, 0))
    }

    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        let mut control = self.shared.control.lock();
        let current = control.producer_epochs.get(&id).copied().unwrap_or(0);
        let next = current.checked_add(1).ok_or(Error::ProducerFenced {
            producer_id: id,
            epoch: current,
            current_epoch: current,
        })?;
        control.producer_epochs.insert(id, next);
        Ok((id, next))
    }
}
