//! Kafka's framing: a big-endian i32 size, then that many bytes. Reads tolerate the socket's
//! read timeout (used to notice shutdown) without losing a partly read frame.
#![allow(clippy::big_endian_bytes)]

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why no frame was read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames, or the server is stopping.
    Closed,
    /// A size below the request header's 8 bytes or above the limit.
    BadSize(i64),
    Io(io::Error),
}

/// The smallest request: api key i16, api version i16, correlation id i32.
const MIN_REQUEST: usize = 8;

/// Reads one frame of at most `max` bytes.
pub fn read_frame(r: &mut impl Read, max: usize, stop: &AtomicBool) -> Result<Vec<u8>, FrameError> {
    let mut size = [0u8; 4];
    if !read_full(r, &mut size, stop, true)? {
        return Err(FrameError::Closed);
    }
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|&n| (MIN_REQUEST..=max).contains(&n))
        .ok_or(FrameError::BadSize(i64::from(size)))?;
    // Grown as bytes arrive, so a peer announcing a large frame and sending nothing holds no
    // large buffer.
    let mut frame = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    while frame.len() < len {
        let want = (len - frame.len()).min(chunk.len());
        let part = chunk.get_mut(..want).unwrap_or(&mut []);
        read_full(r, part, stop, false)?;
        frame.extend_from_slice(part);
    }
    Ok(frame)
}

/// Fills `buf`; `Ok(false)` for an end of stream before its first byte when `at_boundary`.
fn read_full(
    r: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
    at_boundary: bool,
) -> Result<bool, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(FrameError::Closed);
        }
        match r.read(buf.get_mut(filled..).unwrap_or(&mut [])) {
            Ok(0) if filled == 0 && at_boundary => return Ok(false),
            Ok(0) => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                )))
            }
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// Writes `body` as one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let size = i32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "response above 2 GiB"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_bounds_and_cut_frames_are_errors() {
        let stop = AtomicBool::new(false);
        let ok = [&[0, 0, 0, 8][..], &[1; 8]].concat();
        assert_eq!(read_frame(&mut &ok[..], 100, &stop).unwrap(), vec![1; 8]);
        for bad in [&[0xff, 0xff, 0xff, 0xff][..], &[0, 0, 0, 7], &[0, 0, 1, 0]] {
            assert!(matches!(
                read_frame(&mut &bad[..], 100, &stop),
                Err(FrameError::BadSize(_))
            ));
        }
        let cut = [&[0, 0, 0, 9][..], &[1; 8]].concat();
        assert!(matches!(
            read_frame(&mut &cut[..], 100, &stop),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &[][..], 100, &stop),
            Err(FrameError::Closed)
        ));
    }
}
