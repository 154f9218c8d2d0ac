//! The byte stream of a connection: plain TCP, or TLS over TCP (feature `tls`), behind one type
//! so `frame_io`, the server and the client do not care which.
//!
//! Invariants:
//! - socket timeouts are set on the TCP socket underneath ([`Socket::tcp`]);
//! - a TLS `read`, `write` or `flush` makes at most one socket call, then returns: what it
//!   read or accepted, or `Interrupted` ("call again") when the socket call moved only TLS
//!   bytes. `frame_io` re-arms the socket timeout with the time left before its deadline on
//!   every call, so a peer trickling the bytes of a TLS record cannot stretch a deadline (as it
//!   could if one `read` looped over socket reads until a record was whole, like rustls'
//!   `Stream` does).

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
    /// Plain TCP.
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
            NetStream::TlsClient(s) => tls_io::read(&mut *s.conn, &mut s.sock, buf),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => tls_io::read(&mut *s.conn, &mut s.sock, buf),
        }
    }
}

impl Write for NetStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NetStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => tls_io::write(&mut *s.conn, &mut s.sock, buf),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => tls_io::write(&mut *s.conn, &mut s.sock, buf),
        }
    }

    /// For TLS, sends what `write` encrypted and did not send yet (`Interrupted` until all of
    /// it is sent).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            NetStream::TlsClient(s) => tls_io::flush(&mut *s.conn, &mut s.sock),
            #[cfg(feature = "tls")]
            NetStream::TlsServer(s) => tls_io::flush(&mut *s.conn, &mut s.sock),
        }
    }
}

/// TLS reads and writes of at most one socket call each (see the module invariants).
#[cfg(feature = "tls")]
mod tls_io {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;

    use rustls::{ConnectionCommon, SideData};

    fn again() -> io::Error {
        io::ErrorKind::Interrupted.into()
    }

    /// Decrypted bytes if there are any; else one socket read, then what it decrypted (or
    /// `Interrupted`). The end of the stream is `Ok(0)` after the peer's close_notify and
    /// `UnexpectedEof` without it.
    pub(super) fn read<S: SideData>(
        conn: &mut ConnectionCommon<S>,
        sock: &mut TcpStream,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        match conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        if conn.read_tls(sock)? == 0 {
            return conn.reader().read(buf);
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (an alert is queued), best effort.
            let _ = conn.write_tls(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        match conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(again()),
            done => done,
        }
    }

    /// Sends pending TLS bytes (one socket write, then `Interrupted`), else encrypts from
    /// `buf`.
    pub(super) fn write<S: SideData>(
        conn: &mut ConnectionCommon<S>,
        sock: &mut TcpStream,
        buf: &[u8],
    ) -> io::Result<usize> {
        if conn.wants_write() {
            conn.write_tls(sock)?;
            return Err(again());
        }
        conn.writer().write(buf)
    }

    /// One socket write of pending TLS bytes; `Ok` once none are left.
    pub(super) fn flush<S: SideData>(
        conn: &mut ConnectionCommon<S>,
        sock: &mut TcpStream,
    ) -> io::Result<()> {
        conn.writer().flush()?;
        if conn.wants_write() {
            conn.write_tls(sock)?;
            if conn.wants_write() {
                return Err(again());
            }
        }
        Ok(())
    }
}
