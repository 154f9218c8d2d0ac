//! The metrics endpoint: a std `TcpListener` answering `GET /metrics` (any path) with the
//! recorder's Prometheus text.
//!
//! One thread serves one connection at a time: a scrape is small, and each connection is
//! bounded (a request head of at most [`MAX_REQUEST_BYTES`], read and written within
//! [`IO_TIMEOUT`]), so a stalled or hostile client delays scrapes by at most that long and
//! holds no memory. It serves only the page: no other method, no keep-alive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::prometheus::PrometheusRecorder;

/// The most bytes of a request head read.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// A connection must send its request head, and take the answer, within this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running endpoint; dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `recorder` from a thread named `oncelog-metrics`.
    pub fn start(addr: SocketAddr, recorder: PrometheusRecorder) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("oncelog-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &recorder) {
                                tracing::debug!(error = %e, "metrics request failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen when `start` was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop; if the connection fails the thread is left to the process.
        if TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn answer(mut stream: TcpStream, recorder: &PrometheusRecorder) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST_BYTES {
            return respond(&mut stream, "431 Request Header Fields Too Large", "");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    if !(head.starts_with(b"GET ") || head.starts_with(b"HEAD ")) {
        return respond(&mut stream, "405 Method Not Allowed", "");
    }
    let body = recorder.render();
    if head.starts_with(b"HEAD ") {
        let h = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        return stream.write_all(h.as_bytes());
    }
    respond(&mut stream, "200 OK", &body)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes())?;
    stream.flush()
}
