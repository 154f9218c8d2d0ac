//! Kafka's framing: a big-endian i32 size, then that many bytes, read under the connection's
//! limits:
//!
//! - between requests, the wait for a frame's first byte ends after the idle timeout
//!   ([`FrameError::Idle`]), and is woken every 200 ms to notice shutdown;
//! - once the first byte arrived, the rest of the frame must arrive within the frame deadline
//!   ([`FrameError::Deadline`]): every socket read is given the time left (`net::frame_io`), so
//!   a client trickling bytes cannot hold the connection's thread past it;
//! - the body is read into a buffer that grows with the bytes received, never allocated from
//!   the size the header claims;
//! - a response must be written within the frame deadline too (a client that stops reading
//!   cannot hold the thread).
#![allow(clippy::big_endian_bytes)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::net::frame_io;
use crate::net::stream::Socket;

/// Why no frame was read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames, or the server is stopping.
    Closed,
    /// A size below the smallest frame expected or above the limit.
    BadSize(i64),
    /// No request started within the idle timeout.
    Idle(Duration),
    /// A frame started but did not arrive whole within the frame deadline.
    Deadline(Duration),
    /// The socket failed.
    Io(io::Error),
}

/// The smallest request: api key i16, api version i16, correlation id i32.
pub const MIN_REQUEST: usize = 8;

/// The bounds a frame is read under.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// The smallest frame size accepted ([`MIN_REQUEST`] for a request; a raw SASL token may
    /// be shorter).
    pub min: usize,
    /// The largest frame size accepted.
    pub max: usize,
    /// From a frame's first byte to its last.
    pub deadline: Duration,
    /// The longest wait for a frame's first byte.
    pub idle: Duration,
}

/// How often a wait between requests looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Reads one frame's body within `limits` (see the module documentation).
pub fn read_frame<S: Socket + ?Sized>(
    s: &mut S,
    limits: FrameLimits,
    stop: &AtomicBool,
) -> Result<Vec<u8>, FrameError> {
    let idle_until = Instant::now() + limits.idle;
    // The size header; the first read takes what of it has arrived (usually all of it).
    let mut head = [0u8; 4];
    let got = loop {
        if stop.load(Ordering::Relaxed) {
            return Err(FrameError::Closed);
        }
        let left = idle_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::Idle(limits.idle));
        }
        let wait = left.min(STOP_POLL).max(Duration::from_millis(1));
        s.tcp()
            .set_read_timeout(Some(wait))
            .map_err(FrameError::Io)?;
        match s.read(&mut head) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => break n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // A TLS peer that closes without close_notify between requests.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
            Err(e) => return Err(FrameError::Io(e)),
        }
    };
    let deadline = Instant::now() + limits.deadline;
    let in_frame = |e: io::Error| match e.kind() {
        io::ErrorKind::TimedOut => FrameError::Deadline(limits.deadline),
        _ => FrameError::Io(e),
    };
    if let Some(rest) = head.get_mut(got..) {
        frame_io::read_before(s, rest, deadline).map_err(in_frame)?;
    }
    let size = i32::from_be_bytes(head);
    let len = u32::try_from(size)
        .ok()
        .filter(|&n| (limits.min..=limits.max).contains(&(n as usize)))
        .ok_or(FrameError::BadSize(i64::from(size)))?;
    frame_io::read_body(s, len, deadline).map_err(in_frame)
}

/// Writes `body` as one frame within `deadline` from now.
pub fn write_frame<S: Socket + ?Sized>(
    s: &mut S,
    body: &[u8],
    deadline: Duration,
) -> io::Result<()> {
    let size = i32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "response above 2 GiB"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    frame_io::write_before(s, &out, Instant::now() + deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    const LIMITS: FrameLimits = FrameLimits {
        min: MIN_REQUEST,
        max: 100,
        deadline: Duration::from_millis(300),
        idle: Duration::from_millis(300),
    };

    #[test]
    fn sizes_out_of_bounds_cut_frames_and_stalls_are_errors() {
        let stop = AtomicBool::new(false);
        let (mut tx, mut rx) = pair();
        tx.write_all(&[&[0, 0, 0, 8][..], &[1; 8]].concat())
            .unwrap();
        assert_eq!(read_frame(&mut rx, LIMITS, &stop).unwrap(), vec![1; 8]);
        for bad in [[0xff, 0xff, 0xff, 0xff], [0, 0, 0, 7], [0, 0, 1, 0]] {
            tx.write_all(&bad).unwrap();
            assert!(matches!(
                read_frame(&mut rx, LIMITS, &stop),
                Err(FrameError::BadSize(_))
            ));
        }
        // Nothing sent: idle; two bytes of a header: the deadline.
        assert!(matches!(
            read_frame(&mut rx, LIMITS, &stop),
            Err(FrameError::Idle(_))
        ));
        tx.write_all(&[0, 0]).unwrap();
        let start = Instant::now();
        assert!(matches!(
            read_frame(&mut rx, LIMITS, &stop),
            Err(FrameError::Deadline(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
        // A cut frame, then the end of the stream.
        let (mut tx, mut rx) = pair();
        tx.write_all(&[&[0, 0, 0, 9][..], &[1; 8]].concat())
            .unwrap();
        drop(tx);
        assert!(matches!(
            read_frame(&mut rx, LIMITS, &stop),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut rx, LIMITS, &stop),
            Err(FrameError::Closed)
        ));
    }
}
