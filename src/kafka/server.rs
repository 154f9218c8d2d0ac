//! The listener, the shared state of every connection, and shutdown.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::acl::Acl;
use super::limits::ConnectionSlots;
use super::sasl::Users;
use super::security::{ServeError, ServeSasl, ServeTls};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::net::Security;

/// Settings of `oncelog serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (port 0: any free port, see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// The host and port Metadata tells clients to connect to; `None`: the bound address, with
    /// an unspecified IP (0.0.0.0) advertised as 127.0.0.1.
    pub advertised: Option<(String, u16)>,
    /// Partitions of a topic created on first use (Metadata with auto-creation).
    pub default_partitions: u32,
    /// The largest request frame accepted; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// Test-only fault: after every N-th Produce request that appended, close the connection
    /// without answering (the client must retry and be answered with the original offsets).
    pub test_drop_after_append: Option<u64>,
    /// Test-only mode for the produce bench: every Produce is decoded, checked and answered
    /// with made-up offsets, but nothing is stored (no log append, no deduplication), which
    /// measures the protocol's own cost. Never set it on a server holding real data.
    pub test_ack_without_storing: bool,
    /// TLS on the listener (every connection), if set; plaintext otherwise.
    pub tls: Option<ServeTls>,
    /// SASL/PLAIN authentication, if set.
    pub sasl: Option<ServeSasl>,
    /// The ACL file (`acl`); `None`: every authenticated principal may do everything.
    pub acl: Option<PathBuf>,
    /// Connections served at once; one beyond is closed on accept.
    pub max_connections: usize,
    /// From a request frame's first byte to its last (and the TLS handshake, and writing a
    /// response); a connection that misses it is closed.
    pub frame_deadline: Duration,
    /// A connection that starts no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub idle_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            default_partitions: 4,
            max_frame_bytes: 100 << 20,
            test_drop_after_append: None,
            test_ack_without_storing: false,
            tls: None,
            sasl: None,
            acl: None,
            max_connections: 1024,
            frame_deadline: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// What every connection thread shares.
#[derive(Debug)]
pub(super) struct State {
    pub broker: Broker,
    pub config: ServeConfig,
    pub host: String,
    pub port: u16,
    pub stop: AtomicBool,
    /// Bumped after every append; long-polling fetches wait for it to move.
    appends: Mutex<u64>,
    appended: Condvar,
    /// Produce requests that appended, for the test fault.
    pub produces: AtomicU64,
    /// The consumer groups (membership is in memory; their offsets are in the broker).
    pub groups: super::groups::Groups,
    /// The transactional producers' sessions (`txn_api`).
    pub txn: super::txn_api::TxnSessions,
    /// Held while a topic is checked and created (CreateTopics, Metadata auto-creation).
    pub topic_creation: Mutex<()>,
    /// Batches answered as duplicates of one already stored (logged under the test fault).
    pub duplicates: AtomicU64,
    /// The next made-up offset under `test_ack_without_storing` (one counter for every
    /// partition: each partition still sees its offsets grow).
    pub unstored_offsets: AtomicU64,
    /// The listener's TLS material, when it serves TLS.
    pub tls: Option<Security>,
    /// The SASL/PLAIN users, when SASL is on.
    pub users: Option<Users>,
    /// The ACL, if one was given.
    pub acl: Option<Acl>,
}

impl State {
    /// The append counter, to pass to [`State::wait_for_append`].
    pub fn append_count(&self) -> u64 {
        *self.appends.lock()
    }

    pub fn notify_append(&self) {
        *self.appends.lock() += 1;
        self.appended.notify_all();
    }

    /// Waits until an append after `seen`, the deadline or shutdown.
    pub fn wait_for_append(&self, seen: u64, deadline: Instant) {
        let mut n = self.appends.lock();
        while *n == seen && !self.stop.load(Ordering::Relaxed) {
            // Woken at least every 100 ms to notice shutdown.
            let until = deadline.min(Instant::now() + Duration::from_millis(100));
            if self.appended.wait_until(&mut n, until).timed_out() && Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// A listening Kafka-protocol server over a broker.
#[derive(Debug)]
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Loads the security material (TLS, users, ACL: a bad setting or file is a typed
    /// [`ServeError`]) and binds the listener; connections are accepted by
    /// [`Server::run_until`].
    pub fn bind(broker: Broker, config: ServeConfig) -> std::result::Result<Server, ServeError> {
        let loaded = config.load_security()?;
        Server::bind_listener(broker, config, loaded).map_err(ServeError::Bind)
    }

    fn bind_listener(
        broker: Broker,
        config: ServeConfig,
        loaded: super::security::Loaded,
    ) -> Result<Server> {
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| Error::io("bind", config.listen.to_string(), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", config.listen.to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("set_nonblocking", local_addr.to_string(), e))?;
        let (host, port) = match &config.advertised {
            Some((h, p)) => (h.clone(), *p),
            None if local_addr.ip().is_unspecified() => ("127.0.0.1".into(), local_addr.port()),
            None => (local_addr.ip().to_string(), local_addr.port()),
        };
        let txn = super::txn_api::TxnSessions::rebuild(&broker)?;
        Ok(Server {
            state: Arc::new(State {
                broker,
                config,
                host,
                port,
                stop: AtomicBool::new(false),
                appends: Mutex::new(0),
                appended: Condvar::new(),
                produces: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                unstored_offsets: AtomicU64::new(0),
                topic_creation: Mutex::new(()),
                groups: super::groups::Groups::default(),
                txn,
                tls: loaded.tls,
                users: loaded.users,
                acl: loaded.acl,
            }),
            listener,
            local_addr,
        })
    }

    #[cfg(test)]
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// A server on an ephemeral loopback port over a broker in a new temporary directory
    /// (1 MiB segments), for handler tests that call the handlers directly.
    #[cfg(test)]
    pub(super) fn for_tests() -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().unwrap();
        let mut broker_config = crate::broker::BrokerConfig::default();
        broker_config.log = broker_config.log.with_segment_bytes(1 << 20);
        let broker = Broker::open(dir.path(), broker_config).unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        };
        (dir, Server::bind(broker, config).unwrap())
    }

    /// The address the server listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts and serves connections (a thread each) until `stop()` returns true, then stops
    /// every connection and closes the broker cleanly. Also runs the broker's periodic work
    /// (`Broker::tick`) about once a second.
    pub fn run_until(self, stop: impl Fn() -> bool) -> Result<()> {
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut last_tick = Instant::now();
        let slots = ConnectionSlots::new(self.state.config.max_connections);
        while !stop() {
            match self.listener.accept() {
                Ok((stream, peer)) => match slots.take() {
                    // Over the cap: closed at once (dropped), counted and logged; the loop's
                    // periodic work below still runs however fast connections arrive.
                    None => drop(stream),
                    Some(slot) => {
                        let state = Arc::clone(&self.state);
                        let spawned = std::thread::Builder::new()
                            .name(format!("kafka-conn-{peer}"))
                            .spawn(move || {
                                serve(&state, stream, peer);
                                drop(slot);
                            });
                        match spawned {
                            Ok(t) => threads.push(t),
                            Err(e) => tracing::error!(
                                "oncelog serve: cannot start a thread for {peer}: {e}"
                            ),
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!("oncelog serve: accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            threads.retain(|t| !t.is_finished());
            slots.log_refusals();
            self.state.groups.tick();
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                // Aborts transactions past their timeout (markers move last stable offsets).
                match self.state.broker.tick() {
                    Ok(aborted) if !aborted.is_empty() => {
                        tracing::info!("oncelog serve: transaction timeout aborted {aborted:?}");
                        self.state.notify_append();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("oncelog serve: broker tick: {e}"),
                }
            }
        }
        self.state.stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
        let Server { state, .. } = self;
        match Arc::try_unwrap(state) {
            Ok(state) => state.broker.close(),
            Err(_) => Err(Error::InvalidConfig(
                "a connection still holds the broker at shutdown".into(),
            )),
        }
    }
}

fn serve(state: &State, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = super::conn::serve_connection(state, stream) {
        tracing::info!("oncelog serve: connection {peer} closed: {e}");
    }
}
