//! Moving whole frames over a blocking socket under a deadline, with memory bounded by what
//! arrived.
//!
//! Invariants:
//! - a read or write never outlives its deadline: every `read`/`write` call is given the time
//!   left as its socket timeout, so a peer that trickles one byte at a time cannot stretch a
//!   frame past the deadline (a per-call timeout alone would be reset by every byte); a TLS
//!   stream makes one socket call per `read`/`write` and answers `Interrupted` when it only
//!   moved TLS bytes (`net::stream`), and `Interrupted` is retried here with the time left;
//! - a frame body is read into a buffer that grows with the bytes received (doubling, from
//!   [`FIRST_CHUNK`]), never allocated from the length its header claims: a peer that claims a
//!   large frame and sends little costs little memory;
//! - [`discard_before`] drops bytes through a fixed stack buffer, allocating nothing.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::io;
#[cfg(test)]
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::stream::Socket;

/// The first allocation for a frame body; later ones double what was received.
pub const FIRST_CHUNK: usize = 64 << 10;

/// The time left before `deadline`, or `TimedOut` when less than a millisecond is left (a zero
/// socket timeout would mean "block forever").
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// `read_exact` that gives up at `deadline` (`TimedOut`); a peer that closes first is
/// `UnexpectedEof`.
pub fn read_before<S: Socket + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.tcp().set_read_timeout(Some(left(deadline)?))?;
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match stream.read(rest) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a frame body of `length` bytes before `deadline` into a buffer that grows with what
/// arrives (see the module invariants).
pub fn read_body<S: Socket + ?Sized>(
    stream: &mut S,
    length: u32,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let length = length as usize;
    let mut body: Vec<u8> = Vec::new();
    while body.len() < length {
        let filled = body.len();
        let target = length.min(filled.saturating_mul(2).max(FIRST_CHUNK));
        body.resize(target, 0);
        if let Some(chunk) = body.get_mut(filled..target) {
            read_before(stream, chunk, deadline)?;
        }
    }
    Ok(body)
}

/// Reads and drops `n` bytes before `deadline`, allocating nothing.
pub fn discard_before<S: Socket + ?Sized>(
    stream: &mut S,
    mut n: u64,
    deadline: Instant,
) -> io::Result<()> {
    let mut sink = [0u8; 8 << 10];
    while n > 0 {
        let want = usize::try_from(n).unwrap_or(usize::MAX).min(sink.len());
        let Some(chunk) = sink.get_mut(..want) else {
            break;
        };
        stream.tcp().set_read_timeout(Some(left(deadline)?))?;
        match stream.read(chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => n = n.saturating_sub(got as u64),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write_all` then `flush` (a TLS stream may hold encrypted bytes back) that gives up at
/// `deadline` (`TimedOut`): a peer that reads slowly cannot hold the writer past it.
pub fn write_before<S: Socket + ?Sized>(
    stream: &mut S,
    buf: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        stream.tcp().set_write_timeout(Some(left(deadline)?))?;
        let Some(rest) = buf.get(sent..) else {
            break;
        };
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        stream.tcp().set_write_timeout(Some(left(deadline)?))?;
        match stream.flush() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
}

/// True when the peer has closed (or reset) an idle client connection, or sent something
/// nobody asked for: either way the connection must not carry the next request. Checked
/// without blocking.
pub fn unusable(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut one = [0u8; 1];
    let verdict = match stream.peek(&mut one) {
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        Ok(_) => true, // 0: closed; more: an unsolicited byte
    };
    stream.set_nonblocking(false).is_err() || verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_trickled_body_times_out_at_the_deadline_not_per_byte() {
        let (mut tx, mut rx) = pair();
        let feeder = std::thread::spawn(move || {
            for _ in 0..20 {
                if tx.write_all(&[7]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let start = Instant::now();
        let deadline = start + Duration::from_millis(200);
        let e = read_body(&mut rx, 100, deadline).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(took < Duration::from_millis(600), "{took:?}");
        drop(rx);
        feeder.join().unwrap();
    }

    #[test]
    fn a_body_grows_with_what_arrives() {
        let (mut tx, mut rx) = pair();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let sent = data.clone();
        let t = std::thread::spawn(move || tx.write_all(&sent).unwrap());
        let far = Instant::now() + Duration::from_secs(10);
        let body = read_body(&mut rx, 200_000, far).unwrap();
        assert_eq!(body, data);
        t.join().unwrap();
        // A claim of 64 MiB with 10 bytes sent: the buffer holds one first chunk.
        let (mut tx, mut rx) = pair();
        tx.write_all(&[1; 10]).unwrap();
        drop(tx);
        let e = read_body(&mut rx, 64 << 20, far).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_idle_connection_closed_by_the_peer_is_unusable() {
        let (a, b) = pair();
        assert!(!unusable(&a));
        drop(b);
        std::thread::sleep(Duration::from_millis(50));
        assert!(unusable(&a));
    }
}
