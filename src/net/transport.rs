//! Blocking request/response over TCP (std::net): the client [`Connection`], the [`Handler`]
//! a [`Server`] (`net::server`) runs, and the limits of both ([`TransportConfig`]).
//!
//! Protocol: the client writes one frame (`wire`), the server answers it with one frame carrying
//! the same correlation id, in order; there is no pipelining.
//!
//! Invariants:
//! - nothing here panics on a closed, reset or silent socket: every failure is a [`NetError`]
//!   naming the peer address (client) or ends that connection's thread (server);
//! - a [`Connection`] is dropped after any failure (timeout, reset, undecodable or mismatched
//!   answer), so a late answer to one call can never be taken for the answer to the next; the
//!   next call reconnects. A failed call is **not** re-sent: whether the server acted on it is
//!   unknown, and only the caller knows whether the request is safe to repeat (an idempotent
//!   produce is; an election is not);
//! - a client reads an answer into a buffer that grows with the bytes received, up to
//!   `max_frame_bytes` (`frame_io`); before reusing an idle connection it checks, without
//!   blocking, that the server has not closed it (the server's idle timeout), and reconnects
//!   if it has, so no request is sent into a closed socket;
//! - the server side's limits are described in `net::server`;
//! - a connection given TLS material ([`Connection::set_tls`]) handshakes right after
//!   connecting, within the call's deadline, and checks that the server's certificate names
//!   the member it meant to reach (`net::tls`); a TLS failure is [`NetErrorKind::Tls`].
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::frame_io;
use super::remote_error::ErrorReply;
use super::security::Member;
pub use super::server::Server;
use super::stream::{NetStream, Socket};
use super::tls::Security;
use super::wire::{self, FrameTooLarge, Message, LENGTH_SIZE};
use crate::format::DecodeError;

/// Default of [`TransportConfig::max_request_bytes`]: a default-sized batch (1 MiB + 12 bytes,
/// `LogConfig::max_batch_bytes`) in a produce request, with room for the envelope.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = (1 << 20) + (4 << 10);
/// Default of [`TransportConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of [`TransportConfig::frame_timeout`].
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`TransportConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits and timeouts of both ends. The defaults and why they were chosen are in
/// `docs/replication.md`, "Connection limits".
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    /// The largest frame `length` a client sends or accepts, and the largest answer a server
    /// sends (a fetch answer carries up to its `max_bytes` of batches).
    pub max_frame_bytes: u32,
    /// Server: the largest request frame `length` read; a longer request is dropped unread and
    /// answered `InvalidRequest`.
    pub max_request_bytes: u32,
    /// Client: the most a connection attempt may take (also bounded by the call's timeout).
    pub connect_timeout: Duration,
    /// Server: once the first byte of a request has arrived, the whole frame must arrive
    /// within this (a deadline, not a per-read timeout: trickling bytes does not extend it);
    /// writing the answer is bounded by it too.
    pub frame_timeout: Duration,
    /// Server: a connection that does not start a request within this is closed (`None`:
    /// never).
    pub idle_timeout: Option<Duration>,
    /// Server: connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            connect_timeout: Duration::from_secs(1),
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// What went wrong with a call, always naming the peer.
#[derive(Debug)]
pub struct NetError {
    /// The peer.
    pub addr: SocketAddr,
    /// What went wrong.
    pub kind: NetErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
/// What went wrong with a call.
pub enum NetErrorKind {
    /// Could not connect (refused, unreachable, timed out).
    Connect(io::Error),
    /// Sending or receiving failed (`op` says which).
    Io {
        /// What was attempted.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The call's timeout passed before the answer arrived.
    Timeout,
    /// The peer closed the connection before answering.
    Closed,
    /// The answer is not a valid frame.
    BadFrame(DecodeError),
    /// The answer carries another call's correlation id.
    CorrelationMismatch {
        /// The call's correlation id.
        expected: u64,
        /// The answer's.
        got: u64,
    },
    /// The request does not fit in a frame; nothing was sent.
    RequestTooLarge(FrameTooLarge),
    /// The peer answered with an error.
    Remote(ErrorReply),
    /// The peer answered with a message that does not answer this request.
    UnexpectedResponse {
        /// The request sent.
        request: &'static str,
        /// The answer received.
        response: &'static str,
    },
    /// TLS failed: a certificate was refused (ours by the server, or the server's by us), or
    /// the peer does not speak TLS. Retrying will not help until the certificates change.
    Tls(io::Error),
}

impl NetError {
    fn new(addr: SocketAddr, kind: NetErrorKind) -> Self {
        NetError { addr, kind }
    }

    /// The error reply, if the peer answered with one.
    pub fn remote(&self) -> Option<&ErrorReply> {
        match &self.kind {
            NetErrorKind::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// True when the request may or may not have been carried out (it was sent, or may have
    /// been, and no answer was decoded).
    pub fn outcome_unknown(&self) -> bool {
        !matches!(
            self.kind,
            NetErrorKind::Connect(_)
                | NetErrorKind::RequestTooLarge(_)
                | NetErrorKind::Remote(_)
                | NetErrorKind::UnexpectedResponse { .. }
        )
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match &self.kind {
            NetErrorKind::Connect(e) => write!(f, "{addr}: cannot connect: {e}"),
            NetErrorKind::Io { op, source } => write!(f, "{addr}: {op} failed: {source}"),
            NetErrorKind::Timeout => write!(f, "{addr}: no answer within the timeout"),
            NetErrorKind::Closed => write!(f, "{addr}: connection closed before the answer"),
            NetErrorKind::BadFrame(e) => write!(f, "{addr}: invalid answer frame: {e}"),
            NetErrorKind::CorrelationMismatch { expected, got } => {
                write!(f, "{addr}: answer for request {got}, expected {expected}")
            }
            NetErrorKind::RequestTooLarge(e) => write!(f, "{addr}: request not sent: {e}"),
            NetErrorKind::Remote(r) => write!(f, "{addr}: {r}"),
            NetErrorKind::UnexpectedResponse { request, response } => {
                write!(f, "{addr}: {request} answered with {response}")
            }
            NetErrorKind::Tls(e) => write!(f, "{addr}: TLS failed: {e}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            NetErrorKind::Connect(e)
            | NetErrorKind::Io { source: e, .. }
            | NetErrorKind::Tls(e) => Some(e),
            NetErrorKind::BadFrame(e) => Some(e),
            NetErrorKind::Remote(r) => Some(r),
            _ => None,
        }
    }
}

/// The `kind` of the [`crate::Error::Remote`] a failed TLS handshake or alert becomes.
pub const TLS_FAILED: &str = "tls";

/// For [`crate::producer::ProduceTarget`]-style callers: an error reply becomes the typed
/// local error; a request too large to send is `BatchTooLarge`; every other transport failure
/// is `Timeout` (the request or its answer was lost: outcome unknown, see `producer::retry`).
impl From<NetError> for crate::Error {
    fn from(e: NetError) -> Self {
        match e.kind {
            NetErrorKind::Remote(reply) => reply.into_error(),
            NetErrorKind::RequestTooLarge(t) => crate::Error::BatchTooLarge {
                size: t.length,
                max: u64::from(t.max),
            },
            NetErrorKind::UnexpectedResponse { .. } => crate::Error::Remote {
                kind: "unexpected_response",
                message: e.to_string(),
            },
            NetErrorKind::Tls(_) => crate::Error::Remote {
                kind: TLS_FAILED,
                message: e.to_string(),
            },
            _ => crate::Error::Timeout,
        }
    }
}

/// Answers requests. Called concurrently from every connection's thread.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request` (an error is `Message::Error`).
    fn handle(&self, request: Message) -> Message;
}

impl<F: Fn(Message) -> Message + Send + Sync + 'static> Handler for F {
    fn handle(&self, request: Message) -> Message {
        self(request)
    }
}

/// A client connection to one server address: connects lazily, and again after any failure.
/// One call at a time (`&mut self`); wrap it in a mutex to share it.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    config: TransportConfig,
    stream: Option<NetStream>,
    /// TLS material and the member the server must be.
    tls: Option<(Security, Member)>,
    next_correlation: u64,
}

impl Connection {
    /// A connection to `addr`; nothing happens until the first call.
    pub fn new(addr: SocketAddr, config: TransportConfig) -> Self {
        Connection {
            addr,
            config,
            stream: None,
            tls: None,
            next_correlation: 0,
        }
    }

    /// From the next connection on, speaks TLS with `security` to a server whose certificate
    /// names `server`.
    pub fn set_tls(&mut self, security: Security, server: Member) {
        self.disconnect();
        self.tls = Some((security, server));
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Closes the socket; the next call reconnects.
    pub fn disconnect(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.tcp().shutdown(Shutdown::Both);
        }
    }

    /// Sends `request` and waits at most `timeout` (connecting included) for its answer. An
    /// error answer is `Err` with [`NetErrorKind::Remote`]; any other failure drops the
    /// connection (see the module invariants) and is not retried here.
    pub fn call(&mut self, request: &Message, timeout: Duration) -> Result<Message, NetError> {
        let deadline = Instant::now() + timeout;
        let result = self.call_inner(request, deadline);
        match &result {
            Ok(_) => {}
            Err(e) if matches!(e.kind, NetErrorKind::Remote(_)) => {}
            Err(e) if matches!(e.kind, NetErrorKind::RequestTooLarge(_)) => {}
            Err(_) => self.disconnect(),
        }
        result
    }

    fn err(&self, kind: NetErrorKind) -> NetError {
        NetError::new(self.addr, kind)
    }

    /// The time left before `deadline`, or `Timeout`.
    fn left(&self, deadline: Instant) -> Result<Duration, NetError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(self.err(NetErrorKind::Timeout));
        }
        Ok(left)
    }

    fn call_inner(&mut self, request: &Message, deadline: Instant) -> Result<Message, NetError> {
        let id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let frame = wire::encode_frame(id, request, self.config.max_frame_bytes)
            .map_err(|e| self.err(NetErrorKind::RequestTooLarge(e)))?;
        // A connection the server closed while it sat idle (its idle timeout) is replaced
        // before anything is sent on it, so the request is not lost to a dead socket.
        if self
            .stream
            .as_ref()
            .is_some_and(|s| frame_io::unusable(s.tcp()))
        {
            self.disconnect();
        }
        if self.stream.is_none() {
            let t = self.left(deadline)?.min(self.config.connect_timeout);
            let s = TcpStream::connect_timeout(&self.addr, t)
                .map_err(|e| self.err(NetErrorKind::Connect(e)))?;
            let _ = s.set_nodelay(true);
            let s = match &self.tls {
                None => NetStream::Plain(s),
                Some((security, server)) => security
                    .connect(s, *server, deadline)
                    .map_err(|e| self.err(tls_error(e)))?,
            };
            self.stream = Some(s);
        }
        let left = self.left(deadline)?;
        let addr = self.addr;
        let io_err = |op: &'static str, e: io::Error| {
            let kind = match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetErrorKind::Timeout,
                io::ErrorKind::UnexpectedEof => NetErrorKind::Closed,
                // Only TLS reports bad data from a socket (an alert, a refused certificate).
                io::ErrorKind::InvalidData => NetErrorKind::Tls(e),
                _ => NetErrorKind::Io { op, source: e },
            };
            NetError::new(addr, kind)
        };
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| NetError::new(addr, NetErrorKind::Closed))?;
        frame_io::write_before(stream, &frame, Instant::now() + left)
            .map_err(|e| io_err("send request", e))?;

        let mut prefix = [0u8; LENGTH_SIZE];
        frame_io::read_before(stream, &mut prefix, deadline)
            .map_err(|e| io_err("receive answer", e))?;
        let length = wire::frame_length(prefix, self.config.max_frame_bytes)
            .map_err(|e| NetError::new(addr, NetErrorKind::BadFrame(e)))?;
        let body = frame_io::read_body(stream, length, deadline)
            .map_err(|e| io_err("receive answer", e))?;
        let answer =
            wire::decode_body(&body).map_err(|e| NetError::new(addr, NetErrorKind::BadFrame(e)))?;
        if answer.correlation_id != id {
            return Err(NetError::new(
                addr,
                NetErrorKind::CorrelationMismatch {
                    expected: id,
                    got: answer.correlation_id,
                },
            ));
        }
        match answer.message {
            Message::Error(reply) => Err(NetError::new(addr, NetErrorKind::Remote(reply))),
            m => Ok(m),
        }
    }
}

/// The error of a failed TLS handshake: a TLS failure is `Tls`, a timeout `Timeout`, anything
/// else an I/O failure of the handshake.
fn tls_error(e: io::Error) -> NetErrorKind {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported => {
            NetErrorKind::Tls(e)
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetErrorKind::Timeout,
        io::ErrorKind::UnexpectedEof => NetErrorKind::Closed,
        _ => NetErrorKind::Io {
            op: "TLS handshake",
            source: e,
        },
    }
}

/// The error for an answer of the wrong kind (typed clients use it).
pub fn unexpected(addr: SocketAddr, request: &Message, response: &Message) -> NetError {
    NetError::new(
        addr,
        NetErrorKind::UnexpectedResponse {
            request: request.name(),
            response: response.name(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::remote_error::RemoteError;
    use crate::replication::{LeaderAndIsr, ReplicaId};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    fn echo_server() -> Server {
        let handler = Arc::new(|m: Message| match m {
            Message::Metadata => Message::LeaderAndIsr(LeaderAndIsr {
                leader: Some(ReplicaId(1)),
                leader_epoch: 1,
                partition_epoch: 1,
                isr: vec![ReplicaId(1)],
            }),
            Message::ReplicaFailed { .. } => {
                std::thread::sleep(Duration::from_millis(300));
                Message::Metadata
            }
            other => Message::Error(ErrorReply::new(RemoteError::InvalidRequest, other.name())),
        });
        Server::bind("127.0.0.1:0", handler, TransportConfig::default()).unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn calls_errors_timeouts_and_reconnects() {
        let server = echo_server();
        let mut c = Connection::new(server.local_addr(), TransportConfig::default());
        for _ in 0..3 {
            assert!(matches!(
                c.call(&Message::Metadata, T).unwrap(),
                Message::LeaderAndIsr(_)
            ));
        }
        // An error answer keeps the connection.
        let e = c
            .call(
                &Message::ElectLeader {
                    preferred: None,
                    allow_unclean: false,
                },
                T,
            )
            .unwrap_err();
        assert_eq!(e.remote().unwrap().error, RemoteError::InvalidRequest);
        assert!(!e.outcome_unknown());
        assert!(c.is_connected());
        // A slow answer times out and drops the connection; the next call reconnects.
        let slow = Message::ReplicaFailed {
            replica: ReplicaId(1),
        };
        let e = c.call(&slow, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e.kind, NetErrorKind::Timeout), "{e}");
        assert!(e.outcome_unknown());
        assert!(!c.is_connected());
        assert!(matches!(
            c.call(&Message::Metadata, T).unwrap(),
            Message::LeaderAndIsr(_)
        ));
        // The server goes away: a typed error naming the address, then connect failures.
        let addr = server.local_addr();
        server.shutdown();
        let e = c.call(&Message::Metadata, T).unwrap_err();
        assert_eq!(e.addr, addr);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        let e = c.call(&Message::Metadata, T).unwrap_err();
        assert!(matches!(e.kind, NetErrorKind::Connect(_)), "{e}");
        assert!(matches!(crate::Error::from(e), crate::Error::Timeout));
    }

    #[test]
    fn a_server_survives_garbage_and_oversized_frames() {
        let server = echo_server();
        let addr = server.local_addr();
        // Garbage, a huge length, a bad CRC, a half frame then close: each only ends its own
        // connection.
        let mut good = wire::encode_frame(1, &Message::Metadata, 1 << 20).unwrap();
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        for junk in [
            b"hello world, not a frame".to_vec(),
            u32::MAX.to_le_bytes().to_vec(),
            bad_crc,
            good[..10].to_vec(),
        ] {
            let mut s = TcpStream::connect(addr).unwrap();
            // The server may close first (it stops reading at a bad length): our write or
            // shutdown may then fail, which is fine.
            let _ = s.write_all(&junk);
            let _ = s.shutdown(Shutdown::Write);
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(rest.is_empty(), "no answer to a bad frame");
        }
        // A sound envelope with an undecodable payload is answered with InvalidRequest.
        good[super::wire::KIND_OFFSET] = 200;
        let body_end = good.len() - 4;
        let crc = crc32fast::hash(&good[LENGTH_SIZE..body_end]);
        good[body_end..].copy_from_slice(&crc.to_le_bytes());
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&good).unwrap();
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
        s.read_exact(&mut body).unwrap();
        let answer = wire::decode_body(&body).unwrap();
        assert_eq!(answer.correlation_id, 1);
        assert!(matches!(
            answer.message,
            Message::Error(ErrorReply {
                error: RemoteError::InvalidRequest,
                ..
            })
        ));
        // And the server still answers.
        let mut c = Connection::new(addr, TransportConfig::default());
        assert!(c.call(&Message::Metadata, T).is_ok());
    }

    #[test]
    fn a_request_too_large_is_not_sent() {
        let server = echo_server();
        let cfg = TransportConfig {
            max_frame_bytes: 100,
            ..TransportConfig::default()
        };
        let mut c = Connection::new(server.local_addr(), cfg);
        let e = c
            .call(
                &Message::Produce {
                    acks: 1,
                    timeout_ms: 0,
                    batch: vec![0; 200],
                },
                T,
            )
            .unwrap_err();
        assert!(matches!(e.kind, NetErrorKind::RequestTooLarge(_)));
        assert!(!c.is_connected(), "never connected for it");
        assert!(c.call(&Message::Metadata, T).is_ok());
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut c = Connection::new(addr, TransportConfig::default());
        let e = c.call(&Message::Metadata, T).unwrap_err();
        assert!(matches!(e.kind, NetErrorKind::Connect(_)), "{e}");
        assert!(!e.outcome_unknown());
    }
}
