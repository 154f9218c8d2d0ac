//! `oncelog node` (feature `net`): one replica as a process, a TCP transport (`crate::net`) over the
//! [`ReplicaNode`] that the simulation and the thread cluster run too.
//!
//! The node sits behind one mutex; every thread steps it and routes its outputs
//! (`Shared::dispatch`): an answer goes to the slot of the request it answers, a message for the
//! controller to the control thread's queue, a fetch to the fetcher thread.
//! - The transport's server threads turn `Fetch` and `Produce` requests into node messages with
//!   a slot of their own and wait on a condition variable until the node answers that slot: a
//!   follower's fetch at the leader's log end is parked (long poll) and answered the moment data
//!   arrives, an acks=all produce when the high-water mark passes it. `Read` (committed data
//!   only) and `InitProducerId { Some }` (an epoch bump) read the replica directly.
//! - The control thread sends the node's heartbeats (a registration while the node registers)
//!   and ISR proposals to the controller and steps the answers back in (the controller answers
//!   only the incarnation it knows, so a record meant for an earlier life is never applied);
//!   while the controller cannot be reached it backs off (the tick doubled per failure, at most
//!   1 s) and says so.
//! - The watch thread long-polls the controller for a newer record (`WatchPartition`, on a
//!   connection of its own) and steps each answer in exactly as a heartbeat's answer, so a new
//!   leader, epoch or ISR reaches the node when the controller makes the change rather than at
//!   its next heartbeat ([`NodeOptions::watch_controller`]). A controller that does not know
//!   the request (an older version) is left alone: heartbeats still carry every change.
//! - The fetcher thread sends the node's fetches to the leader and steps the answers back in.
//! - The ticker thread ticks the node at its next wake-up (acks=all deadlines, long-poll
//!   deadlines, ISR changes, heartbeat times).
//!
//! Invariant: the node mutex is never held across a network call.
//!
//! [`Node::shutdown`] (what `oncelog node` runs on SIGTERM or SIGINT) stops the server and the
//! threads, then closes the replica and its log cleanly, so the next start does not scan.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::net::{
    ClusterFile, ControllerClient, ErrorReply, Handler, Message, RemoteError, ReplicaClient,
    Security, Server, ServerSecurity, TransportConfig,
};
use crate::replica::{
    Acks, Msg, NodeEvent, NodeTiming, Output, Replica, ReplicaConfig, ReplicaNode,
};
use crate::replication::{LeaderAndIsr, LeaderConfig, LogRecovery, ReplicaId, ReplicationError};
use crate::types::Offset;

mod client;
pub use client::PartitionClient;

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The cluster file: controller and node addresses, security rules.
    pub cluster: ClusterFile,
    /// This node's replica id (in the cluster file).
    pub id: ReplicaId,
    /// The node's data directory.
    pub dir: PathBuf,
    /// Settings of the node's log.
    pub log: LogConfig,
    /// Heartbeat and replica tick period.
    pub tick_ms: u64,
    /// `replica.lag.time.max.ms`.
    pub lag_ms: u64,
    /// How long one request to the controller or another node may take.
    pub request_timeout: Duration,
    /// The limits of the node's server (connections, deadlines, request size). A request
    /// limit below what a produce of `log.max_batch_bytes` needs is raised to it at start
    /// ([`NodeOptions::server_transport`]).
    pub transport: TransportConfig,
    /// This member's TLS material (`Security::for_member`): the node serves TLS and
    /// authorizes every request by the cluster file's rules, and speaks TLS to the controller
    /// and the leader. `None`: plain TCP (`oncelog node --insecure`).
    pub security: Option<Security>,
    /// Log refused handshakes and requests on stderr (the `oncelog node` process does).
    pub log_refusals: bool,
    /// Long-poll the controller for record changes (the watch thread, see the module doc);
    /// `false`: learn them from heartbeat answers only, one heartbeat period late at worst.
    pub watch_controller: bool,
}

impl NodeOptions {
    /// Defaults: the default log config, 50 ms ticks, 2 s lag limit and request timeout, plain TCP.
    pub fn new(cluster: ClusterFile, id: ReplicaId, dir: PathBuf) -> NodeOptions {
        NodeOptions {
            cluster,
            id,
            dir,
            log: LogConfig::default(),
            tick_ms: 50,
            lag_ms: 2_000,
            request_timeout: Duration::from_secs(2),
            transport: TransportConfig::default(),
            security: None,
            log_refusals: false,
            watch_controller: true,
        }
    }

    /// The server's limits: `transport`, with `max_request_bytes` at least a produce request
    /// of the largest batch the log accepts (so an oversized batch is refused by the log as
    /// `BatchTooLarge`, not by the transport).
    pub fn server_transport(&self) -> TransportConfig {
        let mut t = self.transport;
        let produce = self
            .log
            .max_batch_bytes
            .saturating_add(PRODUCE_REQUEST_OVERHEAD);
        t.max_request_bytes = t.max_request_bytes.max(produce);
        t
    }
}

/// Bytes of a produce request frame around its batch: envelope, acks, timeout, batch length.
const PRODUCE_REQUEST_OVERHEAD: u32 = 1 << 10;

/// The longest a node waits between attempts to reach an unreachable controller.
const MAX_CONTROLLER_BACKOFF: Duration = Duration::from_secs(1);

struct State {
    node: ReplicaNode<u64>,
    /// Answers of the node by request slot, until their server thread takes them.
    answers: HashMap<u64, Msg>,
    /// Messages for the controller, oldest first (at most one heartbeat).
    to_controller: VecDeque<Msg>,
    /// The fetch for the fetcher thread to send.
    fetch: Option<(ReplicaId, Msg)>,
    /// Registrations the controller answered (the watch thread waits for the next one).
    registrations: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when an answer lands in `answers`.
    answered: Condvar,
    /// Signalled when work lands in `to_controller` or `fetch`, or the node stops.
    work: Condvar,
    /// Signalled when a registration is answered (`State::registrations`), or the node stops.
    registered: Condvar,
    next_slot: AtomicU64,
    stop: AtomicBool,
    started: Instant,
    id: ReplicaId,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Steps the node with `msg` (a request answered to `slot`) and routes what comes out.
    fn step(&self, st: &mut State, slot: Option<u64>, msg: Msg) {
        let record = matches!(msg, Msg::Record { .. });
        let before = leader_of(st);
        let was_registering = st.node.is_registering();
        let mut out = Vec::new();
        st.node.step(slot, msg, self.now_ms(), &mut out);
        self.dispatch(st, out);
        if was_registering && !st.node.is_registering() {
            st.registrations += 1;
            self.registered.notify_all();
        }
        let after = leader_of(st);
        if record && after != before && !st.node.replica().is_leader() {
            // Tests time leader changes by this line (the new leader logs `leads epoch`).
            tracing::info!(
                replica = self.id.0,
                "oncelog node {}: follows leader {} in epoch {}",
                self.id,
                after
                    .0
                    .map_or_else(|| "none".to_string(), |l| l.to_string()),
                after.1
            );
        }
    }

    fn tick(&self, st: &mut State) {
        let mut out = Vec::new();
        st.node.tick(self.now_ms(), &mut out);
        self.dispatch(st, out);
    }

    fn dispatch(&self, st: &mut State, out: Vec<Output<u64>>) {
        let (mut answered, mut work) = (false, false);
        for o in out {
            match o {
                Output::Reply(slot, msg) => {
                    st.answers.insert(slot, msg);
                    answered = true;
                }
                Output::ToController(msg) => {
                    if matches!(msg, Msg::Heartbeat { .. }) {
                        st.to_controller
                            .retain(|m| !matches!(m, Msg::Heartbeat { .. }));
                    }
                    st.to_controller.push_back(msg);
                    work = true;
                }
                Output::ToReplica(leader, msg) => {
                    st.fetch = Some((leader, msg));
                    work = true;
                }
                Output::Event(NodeEvent::Failed(e)) => {
                    tracing::warn!(replica = self.id.0, "oncelog node {}: {e}", self.id);
                }
                Output::Event(NodeEvent::Leads(epoch)) => {
                    // Tests read this line: no two nodes may lead the same epoch.
                    tracing::info!(
                        replica = self.id.0,
                        "oncelog node {}: leads epoch {epoch}",
                        self.id
                    );
                }
                Output::Event(NodeEvent::Truncated { from, to }) => {
                    tracing::info!(
                        replica = self.id.0,
                        "oncelog node {}: truncated its log from {} to {}",
                        self.id,
                        from.0,
                        to.0
                    );
                }
            }
        }
        if answered {
            self.answered.notify_all();
        }
        if work {
            self.work.notify_all();
        }
    }

    /// Steps a request into the node and waits for its answer; `None` once the node stops.
    fn call(&self, msg: impl FnOnce(u64) -> Msg) -> Option<Msg> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        self.step(&mut st, Some(slot), msg(slot));
        loop {
            if let Some(answer) = st.answers.remove(&slot) {
                return Some(answer);
            }
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            // The ticker answers at the deadlines; wake up anyway to see a stop.
            self.answered.wait_for(&mut st, Duration::from_millis(100));
        }
    }
}

/// The leader and leader epoch the node's replica follows or leads.
fn leader_of(st: &State) -> (Option<ReplicaId>, crate::types::LeaderEpoch) {
    let r = st.node.replica();
    (r.leader(), r.leader_epoch())
}

/// The node timing of `oncelog node`: the leader parks a follower's fetch for up to half the
/// request timeout (at most 500 ms), so its answer always comes before the fetch times out.
pub fn node_timing(o: &NodeOptions) -> NodeTiming {
    let request_ms = u64::try_from(o.request_timeout.as_millis()).unwrap_or(u64::MAX);
    let fetch_wait_ms = (request_ms / 2).min(500);
    NodeTiming {
        tick_ms: o.tick_ms,
        heartbeat_ms: o.tick_ms,
        fetch_wait_ms,
        fetch_timeout_ms: request_ms.saturating_add(fetch_wait_ms),
        fetch_backoff_ms: o.tick_ms,
        idle_fetch_ms: o.tick_ms,
        wake_followers_on_hw: true,
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    server: Option<Server>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

fn error_reply(e: &Error) -> Message {
    Message::Error(ErrorReply::from_error(e))
}

impl Node {
    /// Opens the replica's log, binds its address from the cluster file and starts serving.
    pub fn start(opts: NodeOptions) -> Result<Node> {
        let entry = opts.cluster.replica(opts.id).cloned().ok_or_else(|| {
            Error::InvalidConfig(format!("replica {} is not in the cluster file", opts.id))
        })?;
        let ids = opts.cluster.replica_ids();
        let mut cfg = ReplicaConfig::new(opts.id, &ids, opts.log.clone());
        cfg.leader = LeaderConfig {
            min_insync_replicas: opts.cluster.min_insync_replicas as usize,
            replica_lag_time_max_ms: opts.lag_ms,
        };
        cfg.hw_checkpoint_interval_ms = 1_000;
        cfg.verify_after_unclean_open = true;
        // Lives are ordered by wall-clock start time (a restart within the same millisecond
        // is impossible: opening the log takes longer).
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let replica = Replica::open(&opts.dir, cfg, incarnation)?;
        let recovery = replica.log_recovery();
        let listener = TcpListener::bind(entry.addr)
            .map_err(|e| Error::io("bind replica address", entry.addr.to_string(), e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                // Every life registers.
                node: ReplicaNode::new(replica, node_timing(&opts), Some(recovery)),
                answers: HashMap::new(),
                to_controller: VecDeque::new(),
                fetch: None,
                registrations: 0,
            }),
            answered: Condvar::new(),
            work: Condvar::new(),
            registered: Condvar::new(),
            next_slot: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            id: opts.id,
        });
        let transport = opts.server_transport();
        let handler: Arc<dyn Handler> = Arc::new(NodeHandler {
            shared: Arc::clone(&shared),
            max_answer_bytes: transport
                .max_frame_bytes
                .saturating_sub(ANSWER_OVERHEAD)
                .max(1),
        });
        let security = opts
            .security
            .clone()
            .map(|tls| ServerSecurity::new(tls, &opts.cluster, opts.log_refusals));
        let server = Server::start_secure(listener, handler, transport, security)
            .map_err(|e| Error::io("start replica server", entry.addr.to_string(), e))?;
        let mut threads = Vec::new();
        let (s, o) = (Arc::clone(&shared), opts.clone());
        threads.push(spawn("oncelog-control", move || control_loop(&s, &o))?);
        let (s, o) = (Arc::clone(&shared), opts.clone());
        threads.push(spawn("oncelog-fetcher", move || fetch_loop(&s, &o))?);
        if opts.watch_controller {
            let (s, o) = (Arc::clone(&shared), opts.clone());
            threads.push(spawn("oncelog-watch", move || watch_loop(&s, &o))?);
        }
        let (s, o) = (Arc::clone(&shared), opts);
        threads.push(spawn("oncelog-ticker", move || tick_loop(&s, &o))?);
        Ok(Node {
            shared,
            server: Some(server),
            threads,
        })
    }

    /// The controller record the replica last applied, if any.
    pub fn known_record(&self) -> Option<LeaderAndIsr> {
        self.shared
            .state
            .lock()
            .node
            .replica()
            .known_record()
            .cloned()
    }

    /// Requests its server refused as unauthorized (security on).
    pub fn refused_requests(&self) -> u64 {
        self.server.as_ref().map_or(0, Server::refused_requests)
    }

    /// TLS handshakes its server saw fail (security on).
    pub fn failed_handshakes(&self) -> u64 {
        self.server.as_ref().map_or(0, Server::failed_handshakes)
    }

    /// Stops the threads and closes the replica cleanly.
    pub fn shutdown(mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.work.notify_all();
        self.shared.registered.notify_all();
        self.shared.answered.notify_all();
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Every thread that held the state was joined above, so this is the last reference;
        // if it were not, the log could not be closed cleanly, and saying so beats a silent
        // skip (the next start would scan).
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared.state.into_inner().node.into_replica().close(),
            Err(_) => Err(Error::io(
                "close the replica's log",
                "",
                std::io::Error::other("a node thread still holds the replica"),
            )),
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io("spawn thread", name, e))
}

/// Answers a node's requests. A fetch or read asks for up to `max_bytes`; the node gathers at
/// most what fits in an answer frame (`max_answer_bytes`), so a request's claim cannot make it
/// collect more than it can send.
struct NodeHandler {
    shared: Arc<Shared>,
    max_answer_bytes: u32,
}

/// Bytes of a fetch or read answer frame around its batches (envelope, offsets, epochs).
const ANSWER_OVERHEAD: u32 = 4 << 10;

/// The answer to a request whose node stopped before answering: appended or not, the outcome
/// is unknown to the client.
fn stopped() -> Message {
    error_reply(&Error::Timeout)
}

impl Handler for NodeHandler {
    fn handle(&self, request: Message) -> Message {
        let sh = &self.shared;
        match request {
            Message::Fetch(mut req) => {
                req.max_bytes = req.max_bytes.min(self.max_answer_bytes);
                match sh.call(|id| Msg::Fetch { id, req }) {
                    Some(Msg::FetchResponse { result, .. }) => match result {
                        Ok(resp) => Message::FetchResponse(resp),
                        Err(e) => Message::Error(e),
                    },
                    _ => stopped(),
                }
            }
            Message::Produce {
                acks,
                timeout_ms,
                batch,
            } => match produce(sh, acks, timeout_ms, batch) {
                Ok(answer) => answer,
                Err(e) => error_reply(&e),
            },
            Message::Read { offset, max_bytes } => {
                let max_bytes = max_bytes.min(self.max_answer_bytes);
                let st = sh.state.lock();
                let r = st.node.replica();
                match r.read_committed(offset, max_bytes as usize) {
                    Ok(f) => Message::ReadResponse {
                        high_watermark: r.high_watermark(),
                        log_end: r.log_end_offset(),
                        bytes: f.bytes().to_vec(),
                    },
                    Err(e) => error_reply(&e),
                }
            }
            Message::InitProducerId {
                producer_id: Some(pid),
            } => {
                let st = sh.state.lock();
                let r = st.node.replica();
                if !r.is_leader() {
                    return error_reply(&Error::NotLeader {
                        leader: r.leader().map(|r| r.0),
                        leader_epoch: r.leader_epoch(),
                    });
                }
                match r.log().reinit_external_producer(pid) {
                    Ok((producer_id, epoch)) => Message::ProducerIdAssigned { producer_id, epoch },
                    Err(e) => error_reply(&e),
                }
            }
            other => Message::Error(ErrorReply::new(
                RemoteError::Internal,
                format!("a node does not answer {}", other.name()),
            )),
        }
    }
}

fn produce(sh: &Shared, acks: i8, timeout_ms: u32, batch: Vec<u8>) -> Result<Message> {
    let acks = Acks::from_wire(acks)
        .ok_or_else(|| Error::InvalidConfig(format!("acks must be 0, 1 or -1, not {acks}")))?;
    let batch = RecordBatch::from_bytes(batch)?;
    let answer = sh.call(|token| Msg::Produce {
        token,
        batch,
        acks,
        timeout_ms: u64::from(timeout_ms),
    });
    Ok(match answer {
        Some(Msg::ProduceResult { result, .. }) => match result {
            Ok(info) => Message::ProduceResponse(info),
            Err(e) => Message::Error(e),
        },
        _ => stopped(),
    })
}

/// Waits for the next message for the controller; `None` once the node stops.
fn next_for_controller(sh: &Shared, tick: Duration) -> Option<Msg> {
    let mut st = sh.state.lock();
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return None;
        }
        if let Some(msg) = st.to_controller.pop_front() {
            return Some(msg);
        }
        sh.work.wait_for(&mut st, tick);
    }
}

fn control_loop(sh: &Shared, o: &NodeOptions) {
    let mut controller =
        ControllerClient::for_cluster(&o.cluster, TransportConfig::default(), o.request_timeout)
            .with_security(o.security.clone());
    let mut unreachable = Unreachable::default();
    let tick = Duration::from_millis(o.tick_ms.max(1));
    while let Some(msg) = next_for_controller(sh, tick) {
        let (answer, incarnation) = match msg {
            Msg::Heartbeat { incarnation, .. } => {
                // The node's state now, not when the heartbeat was queued: a registration
                // answered meanwhile must not be sent again.
                let (registering, log_end) = {
                    let st = sh.state.lock();
                    (st.node.registration(), st.node.replica().log_end_offset())
                };
                let answer = match registering {
                    Some(recovery) => {
                        let recovery = at_birth(&mut controller, recovery, log_end);
                        controller.register(o.id, incarnation, recovery)
                    }
                    None => controller.heartbeat(o.id, incarnation, log_end),
                };
                (answer, Some(incarnation))
            }
            Msg::AlterIsr(req) => (controller.alter_isr(&req), None),
            _ => continue,
        };
        match &answer {
            Err(e) if e.remote().is_none() => unreachable.failed(o, e),
            _ => unreachable.reached(o),
        }
        let msg = match (answer, incarnation) {
            (Ok(rec), Some(_)) => Msg::Record { rec, incarnation },
            (Err(e), Some(_)) => {
                let expired = matches!(
                    e.remote().map(|r| &r.error),
                    Some(RemoteError::SessionExpired { .. })
                );
                if !expired {
                    pause(sh, unreachable.delay(o.tick_ms));
                    continue;
                }
                Msg::SessionExpired
            }
            (result, None) => {
                Msg::AlterIsrResult(result.map_err(|_| ReplicationError::InvalidIsr {
                    reason: "refused by the controller or not answered",
                }))
            }
        };
        let mut st = sh.state.lock();
        sh.step(&mut st, None, msg);
    }
}

/// The watch thread (see the module doc): long-polls the controller for a record newer than
/// the replica's and steps it in as `Msg::Record`, the message a heartbeat answer becomes.
/// While the node registers, and after the controller says this life is not alive (the
/// control thread registers it again), it waits for the next registration to be answered (a
/// record answers only a registered life), at most a tick: sleeping a whole tick instead
/// left a node that had just registered, or had just been resumed, deaf to the controller
/// until its next heartbeat. After a transport failure it waits the tick doubled per
/// consecutive failure (at most 1 s; the control thread reports unreachable controllers).
fn watch_loop(sh: &Shared, o: &NodeOptions) {
    // Parked at the controller as long as a follower's fetch at the leader.
    let wait = Duration::from_millis(node_timing(o).fetch_wait_ms.clamp(100, 500));
    let mut controller = ControllerClient::for_cluster(
        &o.cluster,
        TransportConfig::default(),
        o.request_timeout.saturating_add(wait),
    )
    .with_security(o.security.clone());
    let tick = Duration::from_millis(o.tick_ms.max(1));
    let mut failed = Unreachable::default();
    let mut idle = Duration::ZERO;
    while !sh.stop.load(Ordering::Acquire) {
        pause(sh, idle);
        let (incarnation, registering, known, registrations) = {
            let st = sh.state.lock();
            let r = st.node.replica();
            (
                r.incarnation(),
                st.node.is_registering(),
                r.known_record().cloned(),
                st.registrations,
            )
        };
        idle = Duration::ZERO;
        if registering {
            wait_for_registration(sh, registrations, tick);
            continue;
        }
        match controller.watch_partition(o.id, incarnation, known.as_ref(), wait) {
            Ok(rec) => {
                failed.failures = 0;
                let epochs = (rec.leader_epoch, rec.partition_epoch);
                let mut st = sh.state.lock();
                let incarnation = Some(incarnation);
                sh.step(&mut st, None, Msg::Record { rec, incarnation });
                // A record the replica could not apply would be answered again at once.
                let taken = st
                    .node
                    .replica()
                    .known_record()
                    .is_some_and(|k| (k.leader_epoch, k.partition_epoch) >= epochs);
                idle = if taken { Duration::ZERO } else { tick };
            }
            Err(e) => {
                if matches!(
                    e.remote().map(|r| &r.error),
                    Some(RemoteError::InvalidRequest)
                ) {
                    tracing::info!(
                        "oncelog node {}: the controller at {} does not answer WatchPartition \
                         ({e}); record changes arrive with heartbeat answers only",
                        o.id,
                        e.addr
                    );
                    return;
                }
                if matches!(
                    e.remote().map(|r| &r.error),
                    Some(RemoteError::SessionExpired { .. })
                ) {
                    // This life is not (yet, or any more) alive at the controller.
                    failed.failures = 0;
                    wait_for_registration(sh, registrations, tick);
                    continue;
                }
                failed.failures = failed.failures.saturating_add(1);
                idle = failed.delay(o.tick_ms);
            }
        }
    }
}

/// At the birth of a partition every log is empty and has no previous life; that is not a lost
/// disk. Anywhere later, an empty new directory is (KAFKA-14139).
fn at_birth(
    controller: &mut ControllerClient,
    recovery: LogRecovery,
    log_end: Offset,
) -> LogRecovery {
    if recovery == LogRecovery::EmptyOrDamaged && log_end.0 == 0 {
        if let Ok(m) = controller.metadata() {
            if m.state.leader_epoch == 0 && m.state.partition_epoch == 0 {
                return LogRecovery::Intact;
            }
        }
    }
    recovery
}

/// Ticks the node at its next wake-up (at least every tick).
fn tick_loop(sh: &Shared, o: &NodeOptions) {
    let tick = o.tick_ms.max(1);
    let mut st = sh.state.lock();
    while !sh.stop.load(Ordering::Acquire) {
        sh.tick(&mut st);
        let now = sh.now_ms();
        let wait = st.node.next_wakeup().saturating_sub(now).clamp(1, tick);
        // Released while waiting; `work` is signalled at a stop.
        sh.work.wait_for(&mut st, Duration::from_millis(wait));
    }
}

/// Waits until the controller has answered a registration beyond the first `seen`, the node
/// stops, or `at_most` passes.
fn wait_for_registration(sh: &Shared, seen: u64, at_most: Duration) {
    let until = Instant::now() + at_most;
    let mut st = sh.state.lock();
    while st.registrations <= seen && !sh.stop.load(Ordering::Acquire) {
        if sh.registered.wait_until(&mut st, until).timed_out() {
            return;
        }
    }
}

/// Sleeps `d`, waking early when the node stops.
fn pause(sh: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !sh.stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Consecutive failures to reach the controller: the control loop backs off (the tick,
/// doubled per failure, up to [`MAX_CONTROLLER_BACKOFF`]) and says so on stderr at the 1st,
/// 2nd, 4th, 8th... failure, and once when it gets through again.
#[derive(Debug, Default)]
struct Unreachable {
    failures: u32,
}

impl Unreachable {
    fn delay(&self, tick_ms: u64) -> Duration {
        let tick = Duration::from_millis(tick_ms);
        let factor = 1u32 << self.failures.min(16);
        tick.saturating_mul(factor)
            .min(MAX_CONTROLLER_BACKOFF.max(tick))
    }

    fn failed(&mut self, o: &NodeOptions, e: &crate::net::NetError) {
        self.failures = self.failures.saturating_add(1);
        if self.failures.is_power_of_two() {
            tracing::warn!(
                "oncelog node {}: cannot reach the controller at {} ({} failed attempts): {e}; \
                 retrying in {} ms",
                o.id,
                e.addr,
                self.failures,
                self.delay(o.tick_ms).as_millis()
            );
        }
    }

    fn reached(&mut self, o: &NodeOptions) {
        if self.failures > 0 {
            tracing::info!(
                "oncelog node {}: reached a controller again after {} failed attempts",
                o.id,
                self.failures
            );
            self.failures = 0;
        }
    }
}

fn fetch_loop(sh: &Shared, o: &NodeOptions) {
    let mut clients: HashMap<ReplicaId, ReplicaClient> = HashMap::new();
    let tick = Duration::from_millis(o.tick_ms.max(1));
    loop {
        let (leader, id, req) = {
            let mut st = sh.state.lock();
            loop {
                if sh.stop.load(Ordering::Acquire) {
                    return;
                }
                match st.fetch.take() {
                    Some((leader, Msg::Fetch { id, req })) => break (leader, id, req),
                    Some(_) | None => {
                        sh.work.wait_for(&mut st, tick);
                    }
                }
            }
        };
        let Some(addr) = o.cluster.replica(leader).map(|e| e.addr) else {
            sh.state.lock().node.fetch_undeliverable(id, sh.now_ms());
            continue;
        };
        let client = clients.entry(leader).or_insert_with(|| {
            ReplicaClient::new(addr, TransportConfig::default(), o.request_timeout)
                .with_security(o.security.clone(), leader)
        });
        let result = client.fetch(&req);
        let mut st = sh.state.lock();
        match result {
            Ok(resp) => sh.step(
                &mut st,
                None,
                Msg::FetchResponse {
                    id,
                    result: Ok(resp),
                },
            ),
            Err(e) => match e.remote() {
                Some(reply) => {
                    let result = Err(reply.clone());
                    sh.step(&mut st, None, Msg::FetchResponse { id, result });
                }
                None => st.node.fetch_undeliverable(id, sh.now_ms()),
            },
        }
    }
}
