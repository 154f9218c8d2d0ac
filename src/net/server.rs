//! The server half of the transport: an accept thread and one thread per connection around a
//! [`Handler`], with the limits of [`TransportConfig`] (`docs/replication.md`, "Connection
//! limits").
//!
//! Invariants:
//! - at most `max_connections` connections are served at once; a connection accepted beyond
//!   that is closed at once, and counted ([`Server::refused_connections`]);
//! - a connection waits at most `idle_timeout` for the first byte of a request (a deadline,
//!   so bytes of a TLS record trickled before it do not extend it); once it has come, the whole frame must arrive within `frame_timeout` (the deadline is not reset by
//!   later bytes), and the answer must be written within `frame_timeout` too;
//! - a request body is read into a buffer that grows with the bytes received
//!   (`frame_io::read_body`): memory follows what a peer sent, never what its header claims;
//! - a request longer than `max_request_bytes` is read through and dropped without being
//!   buffered, then answered `InvalidRequest` naming the limit, so a well-behaved client gets a
//!   typed refusal and the connection stays in step; if the rest does not arrive by the frame
//!   deadline the connection is closed;
//! - a frame whose length, CRC or version is wrong closes its connection (the stream can no
//!   longer be trusted); a sound envelope whose payload does not decode is answered
//!   `InvalidRequest`. Nothing a peer sends ends another connection or the server;
//! - with [`ServerSecurity`], a connection starts with a TLS handshake that must end within
//!   `frame_timeout` (a failed one closes the connection and is counted:
//!   [`Server::failed_handshakes`]); then every request is checked by the
//!   [`Authorizer`] before the handler sees it, and a refused one is answered `Unauthorized`
//!   on the same connection and counted ([`Server::refused_requests`]). Both are logged on
//!   stderr at the 1st, 2nd, 4th, 8th... occurrence when `log` is set.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::authorize::{Authorizer, Peer};
use super::frame_io::{discard_before, read_before, read_body, write_before};
use super::remote_error::{ErrorReply, RemoteError};
use super::stream::{NetStream, Socket};
use super::tls::Security;
use super::transport::{Handler, TransportConfig};
use super::wire::{self, Message, CORRELATION_OFFSET, LENGTH_SIZE, PAYLOAD_OFFSET, VERSION};

/// A running server: an accept thread and one thread per connection. Stops on
/// [`Server::shutdown`] or drop.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
}

/// TLS and authorization of a server (`docs/security.md`).
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    /// The CA clients are verified against and the certificate served (it must have one:
    /// [`Security::can_serve`]).
    pub tls: Security,
    /// Who may send which request.
    pub authorizer: Authorizer,
    /// Log failed handshakes and refused requests on stderr (at the 1st, 2nd, 4th...).
    pub log: bool,
}

impl ServerSecurity {
    /// TLS with `tls` and the ACL and members of `cluster`.
    pub fn new(tls: Security, cluster: &super::ClusterFile, log: bool) -> ServerSecurity {
        ServerSecurity {
            tls,
            authorizer: Authorizer::new(cluster),
            log,
        }
    }
}

#[derive(Debug)]
struct ServerShared {
    stop: AtomicBool,
    next_conn: AtomicU64,
    refused: AtomicU64,
    security: Option<ServerSecurity>,
    unauthorized: AtomicU64,
    failed_handshakes: AtomicU64,
    /// Open connections, by id.
    conns: Mutex<HashMap<u64, OpenConnection>>,
}

/// A clone of a connection's stream (to shut it down) and its thread (to join it).
#[derive(Debug)]
struct OpenConnection {
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `handler` on an already bound listener (bind `127.0.0.1:0` for an ephemeral port,
    /// then ask [`Server::local_addr`]).
    pub fn start(
        listener: TcpListener,
        handler: Arc<dyn Handler>,
        config: TransportConfig,
    ) -> io::Result<Server> {
        Server::start_secure(listener, handler, config, None)
    }

    /// [`Server::start`], with TLS and authorization when `security` is given.
    pub fn start_secure(
        listener: TcpListener,
        handler: Arc<dyn Handler>,
        config: TransportConfig,
        security: Option<ServerSecurity>,
    ) -> io::Result<Server> {
        if security.as_ref().is_some_and(|s| !s.tls.can_serve()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TLS server needs a certificate and key",
            ));
        }
        let addr = listener.local_addr()?;
        let shared = Arc::new(ServerShared {
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            security,
            unauthorized: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("oncelog-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, handler, config, s))?;
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Binds `addr` and serves `handler` on it.
    pub fn bind(
        addr: impl ToSocketAddrs,
        handler: Arc<dyn Handler>,
        config: TransportConfig,
    ) -> io::Result<Server> {
        Server::start(TcpListener::bind(addr)?, handler, config)
    }

    /// The address it listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being served now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().len()
    }

    /// Connections closed at accept because `max_connections` were open.
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Requests refused by the [`Authorizer`] (answered `Unauthorized`).
    pub fn refused_requests(&self) -> u64 {
        self.shared.unauthorized.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (an untrusted certificate, not TLS at all, too slow).
    pub fn failed_handshakes(&self) -> u64 {
        self.shared.failed_handshakes.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
        let conns: Vec<_> = self.shared.conns.lock().drain().collect();
        for (_, conn) in conns {
            let _ = conn.stream.shutdown(Shutdown::Both);
            if let Some(t) = conn.thread {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    config: TransportConfig,
    shared: Arc<ServerShared>,
) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Per-connection accept errors (ECONNABORTED, EMFILE): back off briefly, go on.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            // Registered before the thread starts, so the thread's own removal always finds
            // it; the cap is checked under the same lock.
            let mut conns = shared.conns.lock();
            if conns.len() >= config.max_connections {
                drop(conns);
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            conns.insert(
                id,
                OpenConnection {
                    stream: handle,
                    thread: None,
                },
            );
        }
        let h = Arc::clone(&handler);
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("oncelog-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, h.as_ref(), &config, &s);
                // The handler goes before the entry: once a thread has left the map (and so
                // will not be joined by `shutdown`), it holds nothing of the server's.
                drop(h);
                s.conns.lock().remove(&id);
            });
        match spawned {
            Ok(t) => {
                if let Some(entry) = shared.conns.lock().get_mut(&id) {
                    entry.thread = Some(t);
                }
            }
            Err(_) => {
                if let Some(c) = shared.conns.lock().remove(&id) {
                    let _ = c.stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Waits up to `idle` for the first byte of the next frame. `None`: the peer closed, the wait
/// timed out or the socket failed. `idle` is a deadline, not a per-read timeout: over TLS the
/// first byte of a frame comes out of a whole record, and a peer trickling that record's bytes
/// must not keep the connection past it.
fn first_byte(stream: &mut NetStream, idle: Option<Duration>) -> Option<u8> {
    let mut one = [0u8; 1];
    if let Some(idle) = idle {
        // A zero wait would be refused by the socket; treat it as the smallest one.
        let deadline = Instant::now() + idle.max(Duration::from_millis(1));
        read_before(stream, &mut one, deadline).ok()?;
        return Some(one[0]);
    }
    stream.tcp().set_read_timeout(None).ok()?;
    loop {
        match stream.read(&mut one) {
            Ok(1) => return Some(one[0]),
            Ok(_) => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// What one request frame turned out to be.
enum Request {
    /// A whole frame's body (the bytes after the length).
    Body(Vec<u8>),
    /// A frame over the request limit, read through and dropped.
    TooLarge { correlation_id: u64, length: u32 },
}

/// Reads the rest of a frame whose first byte is `first`, before `deadline`. `None` closes the
/// connection.
fn read_request(
    stream: &mut NetStream,
    first: u8,
    deadline: Instant,
    config: &TransportConfig,
) -> Option<Request> {
    let mut prefix = [first, 0, 0, 0];
    read_before(stream, prefix.get_mut(1..)?, deadline).ok()?;
    let length = u32::from_le_bytes(prefix);
    if length < wire::MIN_LENGTH {
        return None;
    }
    if length <= config.max_request_bytes {
        return read_body(stream, length, deadline).ok().map(Request::Body);
    }
    // Too large: keep only the header (version, kind, correlation id), drop the rest.
    let mut header = [0u8; PAYLOAD_OFFSET - LENGTH_SIZE];
    read_before(stream, &mut header, deadline).ok()?;
    if header.first() != Some(&VERSION) {
        return None;
    }
    let at = CORRELATION_OFFSET - LENGTH_SIZE;
    let correlation_id = u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?);
    let rest = u64::from(length) - header.len() as u64;
    discard_before(stream, rest, deadline).ok()?;
    Some(Request::TooLarge {
        correlation_id,
        length,
    })
}

/// A warning at the 1st, 2nd, 4th, 8th... event counted by `count` (its new value).
fn log_sometimes(log: bool, count: u64, what: impl FnOnce() -> String) {
    if log && count.is_power_of_two() {
        tracing::warn!("{} ({count} so far)", what());
    }
}

/// The connection's stream and peer: a TLS handshake first when security is on. `None`
/// (the handshake failed) closes the connection.
fn open<'s>(
    stream: TcpStream,
    config: &TransportConfig,
    shared: &'s ServerShared,
) -> Option<(NetStream, Option<(Peer, &'s ServerSecurity)>)> {
    let _ = stream.set_nodelay(true);
    let Some(sec) = &shared.security else {
        return Some((NetStream::Plain(stream), None));
    };
    let from = stream.peer_addr().ok();
    match sec
        .tls
        .accept(stream, Instant::now() + config.frame_timeout)
    {
        Ok((stream, names)) => Some((stream, Some((sec.authorizer.peer(names), sec)))),
        Err(e) => {
            let n = shared.failed_handshakes.fetch_add(1, Ordering::Relaxed) + 1;
            log_sometimes(sec.log, n, || {
                let from = from.map_or_else(|| "?".to_string(), |a| a.to_string());
                format!("TLS handshake with {from} failed: {e}; connection closed")
            });
            None
        }
    }
}

/// The handler's answer to `request`, unless the connection's peer may not send it.
fn answer(
    handler: &dyn Handler,
    request: Message,
    secured: Option<&(Peer, &ServerSecurity)>,
    shared: &ServerShared,
) -> Message {
    if let Some((peer, sec)) = secured {
        if let Err(why) = sec.authorizer.check(peer, &request) {
            let n = shared.unauthorized.fetch_add(1, Ordering::Relaxed) + 1;
            log_sometimes(sec.log, n, || format!("refused a request: {why}"));
            return Message::Error(ErrorReply::new(RemoteError::Unauthorized, why));
        }
    }
    handler.handle(request)
}

/// Answers frames on one connection until it closes, idles out, misses a deadline or fails.
fn serve_connection(
    stream: TcpStream,
    handler: &dyn Handler,
    config: &TransportConfig,
    shared: &ServerShared,
) {
    let Some((mut stream, secured)) = open(stream, config, shared) else {
        return;
    };
    while let Some(first) = first_byte(&mut stream, config.idle_timeout) {
        let deadline = Instant::now() + config.frame_timeout;
        let Some(request) = read_request(&mut stream, first, deadline, config) else {
            return;
        };
        let (correlation_id, answer) = match request {
            Request::Body(body) => {
                let Ok(env) = wire::open_envelope(&body) else {
                    return;
                };
                let answer = match wire::decode_payload(env.kind, env.payload) {
                    Ok(request) => answer(handler, request, secured.as_ref(), shared),
                    Err(e) => invalid(format!("cannot decode request of kind {}: {e}", env.kind)),
                };
                (env.correlation_id, answer)
            }
            Request::TooLarge {
                correlation_id,
                length,
            } => (
                correlation_id,
                invalid(format!(
                    "request of {length} bytes exceeds this server's limit of {} bytes",
                    config.max_request_bytes
                )),
            ),
        };
        let frame = wire::encode_frame(correlation_id, &answer, config.max_frame_bytes).or_else(
            |too_large| {
                // The answer itself does not fit: say so instead (that always fits).
                wire::encode_frame(
                    correlation_id,
                    &Message::Error(ErrorReply::new(
                        RemoteError::Internal,
                        format!("answer not sent: {too_large}"),
                    )),
                    config.max_frame_bytes,
                )
            },
        );
        let Ok(frame) = frame else {
            return;
        };
        let deadline = Instant::now() + config.frame_timeout;
        if write_before(&mut stream, &frame, deadline).is_err() {
            return;
        }
    }
}

fn invalid(message: String) -> Message {
    Message::Error(ErrorReply::new(RemoteError::InvalidRequest, message))
}
