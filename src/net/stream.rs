//! The byte stream of a connection: plain TCP, or TLS over TCP (feature `tls`), behind one type
//! so `frame_io`, the server and the client do not care which.
//!
//! Invariant: socket timeouts are set on the TCP socket underneath ([`Socket::tcp`]); a TLS
//! read or write reaches the socket only through it, so the deadlines of `frame_io` bound TLS
//! connections exactly as they bound plain ones.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A stream `frame_io` can move frames over: readable, writable, and with a TCP socket
/// underneath to set timeouts on.
pub trait Socket: Read + Write {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// One connection's stream.
#[derive(Debug)]
pub enum NetStream {
    Plain(TcpStream),
    /// The client end of a TLS connection.
    #[cfg(feature = "tls")]
    TlsClient(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// The server end of a TLS connection.
    #[cfg(feature = "tls")]
    TlsServer(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Socket for NetStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => &s.sock,
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => &s.sock,
        }
    }
}

impl Read for NetStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NetStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => s.read(buf),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => s.read(buf),
        }
    }
}

impl Write for NetStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NetStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => s.write(buf),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => s.write(buf),
        }
    }

    /// For TLS, sends what `write` encrypted but could not send yet.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => s.flush(),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => s.flush(),
        }
    }
}
