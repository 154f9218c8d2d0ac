//! `oncelog node`: one replica as a process, talking TCP (`crate::net`).
//!
//! Three threads around one [`Replica`] behind a mutex:
//! - the transport's server threads answer `Fetch` (leader side), `Produce` (an acks=all request
//!   blocks its connection's thread on a condition variable until the replica completes it),
//!   `Read` (committed data only) and `InitProducerId { Some }` (an epoch bump);
//! - the control thread registers with the controller once per life, heartbeats every tick
//!   (the answer is the controller's record, applied with `on_leader_and_isr`; the controller
//!   answers only the incarnation it knows, so a record meant for an earlier life is never
//!   applied), ticks the replica and sends its ISR proposals; while the controller cannot be
//!   reached it backs off (the tick doubled per failure, at most 1 s) and says so on stderr;
//! - the fetcher thread, while following, fetches from the leader in a loop.
//!
//! Invariant: the replica mutex is never held across a network call.
//!
//! [`Node::shutdown`] (what `oncelog node` runs on SIGTERM or SIGINT) stops the server and the
//! threads, then closes the replica and its log cleanly, so the next start does not scan.

use std::collections::HashMap;
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
use crate::log::AppendInfo;
use crate::net::{
    ClusterFile, ControllerClient, ErrorReply, Handler, Message, RemoteError, ReplicaClient,
    Security, Server, ServerSecurity, TransportConfig,
};
use crate::replica::{Acks, Produced, Replica, ReplicaConfig};
use crate::replication::{LeaderConfig, LogRecovery, ReplicaId, ReplicationError};

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
    replica: Replica,
    /// Answers of waiting acks=all requests, by token.
    done: HashMap<u64, Result<AppendInfo>>,
}

struct Shared {
    state: Mutex<State>,
    completed: Condvar,
    next_token: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Moves the replica's completions to `done` and wakes the waiters.
    fn collect(&self, st: &mut State) {
        let c = st.replica.take_completions();
        if !c.is_empty() {
            for c in c {
                st.done.insert(c.token, c.result);
            }
            self.completed.notify_all();
        }
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
        let listener = TcpListener::bind(entry.addr)
            .map_err(|e| Error::io("bind replica address", entry.addr.to_string(), e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                replica,
                done: HashMap::new(),
            }),
            completed: Condvar::new(),
            next_token: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            started: Instant::now(),
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
        threads.push(spawn("oncelog-control", move || {
            control_loop(&s, &o, incarnation)
        })?);
        let (s, o) = (Arc::clone(&shared), opts);
        threads.push(spawn("oncelog-fetcher", move || fetch_loop(&s, &o))?);
        Ok(Node {
            shared,
            server: Some(server),
            threads,
        })
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
            Ok(shared) => shared.state.into_inner().replica.close(),
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

impl Handler for NodeHandler {
    fn handle(&self, request: Message) -> Message {
        let sh = &self.shared;
        match request {
            Message::Fetch(mut req) => {
                req.max_bytes = req.max_bytes.min(self.max_answer_bytes);
                let mut st = sh.state.lock();
                let r = st.replica.handle_fetch(&req, sh.now_ms());
                sh.collect(&mut st);
                match r {
                    Ok(resp) => Message::FetchResponse(resp),
                    Err(e) => error_reply(&e),
                }
            }
            Message::Produce {
                acks,
                timeout_ms,
                batch,
            } => match produce(sh, acks, timeout_ms, batch) {
                Ok(info) => Message::ProduceResponse(info),
                Err(e) => error_reply(&e),
            },
            Message::Read { offset, max_bytes } => {
                let max_bytes = max_bytes.min(self.max_answer_bytes);
                let st = sh.state.lock();
                match st.replica.read_committed(offset, max_bytes as usize) {
                    Ok(f) => Message::ReadResponse {
                        high_watermark: st.replica.high_watermark(),
                        log_end: st.replica.log_end_offset(),
                        bytes: f.bytes().to_vec(),
                    },
                    Err(e) => error_reply(&e),
                }
            }
            Message::InitProducerId {
                producer_id: Some(pid),
            } => {
                let st = sh.state.lock();
                if !st.replica.is_leader() {
                    return error_reply(&Error::NotLeader {
                        leader: st.replica.leader().map(|r| r.0),
                        leader_epoch: st.replica.leader_epoch(),
                    });
                }
                match st.replica.log().reinit_external_producer(pid) {
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

fn produce(sh: &Shared, acks: i8, timeout_ms: u32, batch: Vec<u8>) -> Result<AppendInfo> {
    let acks = Acks::from_wire(acks)
        .ok_or_else(|| Error::InvalidConfig(format!("acks must be 0, 1 or -1, not {acks}")))?;
    let batch = RecordBatch::from_bytes(batch)?;
    let token = sh.next_token.fetch_add(1, Ordering::Relaxed);
    let mut st = sh.state.lock();
    let deadline = sh.now_ms() + u64::from(timeout_ms);
    let out = st.replica.produce(&batch, acks, token, deadline);
    sh.collect(&mut st);
    match out? {
        Produced::Done(info) => Ok(info),
        Produced::Waiting(_) => loop {
            if let Some(r) = st.done.remove(&token) {
                return r;
            }
            if sh.stop.load(Ordering::Acquire) {
                // Appended, not yet committed: the outcome is unknown to the client.
                return Err(Error::Timeout);
            }
            // The control thread's tick answers `Timeout` at the deadline; wake up anyway.
            sh.completed.wait_for(&mut st, Duration::from_millis(100));
        },
    }
}

fn control_loop(sh: &Shared, o: &NodeOptions, incarnation: u64) {
    let mut controller =
        ControllerClient::for_cluster(&o.cluster, TransportConfig::default(), o.request_timeout)
            .with_security(o.security.clone());
    let mut registered = false;
    let mut recovery = sh.state.lock().replica.log_recovery();
    let mut unreachable = Unreachable::default();
    while !sh.stop.load(Ordering::Acquire) {
        pause(sh, unreachable.delay(o.tick_ms));
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        let log_end = sh.state.lock().replica.log_end_offset();
        let answer = if registered {
            controller.heartbeat(o.id, incarnation, log_end)
        } else {
            // At the birth of a partition every log is empty and has no previous life; that is
            // not a lost disk. Anywhere later, an empty new directory is (KAFKA-14139).
            if recovery == LogRecovery::EmptyOrDamaged && log_end.0 == 0 {
                if let Ok(m) = controller.metadata() {
                    if m.state.leader_epoch == 0 && m.state.partition_epoch == 0 {
                        recovery = LogRecovery::Intact;
                    }
                }
            }
            controller.register(o.id, incarnation, recovery)
        };
        match &answer {
            Err(e) if e.remote().is_none() => unreachable.failed(o, e),
            _ => unreachable.reached(o),
        }
        match answer {
            Ok(rec) => {
                if !registered {
                    registered = true;
                    // Re-registering after an expired session: this life's log is whole.
                    recovery = LogRecovery::Intact;
                }
                let mut st = sh.state.lock();
                let _ = st.replica.on_leader_and_isr(&rec, sh.now_ms());
                sh.collect(&mut st);
            }
            Err(e) => {
                if matches!(
                    e.remote().map(|r| &r.error),
                    Some(RemoteError::SessionExpired { .. })
                ) {
                    registered = false;
                }
                continue;
            }
        }
        let proposal = {
            let mut st = sh.state.lock();
            let p = st.replica.tick(sh.now_ms());
            sh.collect(&mut st);
            p
        };
        if let Ok(Some(req)) = proposal {
            let result = controller
                .alter_isr(&req)
                .map_err(|_| ReplicationError::InvalidIsr {
                    reason: "refused by the controller or not answered",
                });
            let mut st = sh.state.lock();
            let _ = st.replica.on_alter_isr_result(result, sh.now_ms());
            sh.collect(&mut st);
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
    while !sh.stop.load(Ordering::Acquire) {
        let next = sh.state.lock().replica.fetch_request();
        let Some((leader, req)) = next else {
            std::thread::sleep(Duration::from_millis(o.tick_ms));
            continue;
        };
        let Some(addr) = o.cluster.replica(leader).map(|e| e.addr) else {
            std::thread::sleep(Duration::from_millis(o.tick_ms));
            continue;
        };
        let client = clients.entry(leader).or_insert_with(|| {
            ReplicaClient::new(addr, TransportConfig::default(), o.request_timeout)
                .with_security(o.security.clone(), leader)
        });
        match client.fetch(&req) {
            Ok(resp) => {
                let idle = resp.batches.is_empty();
                let mut st = sh.state.lock();
                let _ = st.replica.handle_fetch_response(resp);
                sh.collect(&mut st);
                drop(st);
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(o.tick_ms)),
        }
    }
}
