//! Prefaulting the active segment ahead of the appender.
//!
//! The first write to a page of a fresh file mapping is the slow part of an mmap append on
//! this kind of machine (measured: ~0.4 GiB/s when the appender faults every page itself,
//! ~7.5 GiB/s into resident pages). A dedicated thread keeps the next `prefault_bytes` of the
//! active segment faulted in (`MADV_POPULATE_WRITE`) in chunks, so on a second core the
//! appender mostly writes into resident pages. It has its own thread because the background
//! thread's seals (an msync of a whole segment) would make it fall behind. Best effort: if it
//! lags, the appender faults the pages itself; nothing depends on it for correctness.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::segment::Segment;

/// Size of one populate call: large enough that the prefaulter and the appender do not fight
/// over the same pages (1 MiB chunks measured slower than none).
pub const CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug)]
pub(super) struct Prefaulter {
    tx: Option<Sender<(Arc<Segment>, usize, usize)>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefaulter {
    pub(super) fn start() -> Prefaulter {
        let (tx, rx) = crossbeam_channel::unbounded::<(Arc<Segment>, usize, usize)>();
        let handle = std::thread::Builder::new()
            .name("oncelog-prefault".into())
            .spawn(move || {
                for (seg, from, to) in rx {
                    // A sealed segment is trimmed: populating past its end would only fail.
                    if !seg.is_sealed() {
                        seg.map().populate(from, to);
                    }
                }
            })
            .ok();
        Prefaulter {
            tx: Some(tx),
            handle,
        }
    }

    pub(super) fn request(&self, seg: &Arc<Segment>, from: usize, to: usize) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((Arc::clone(seg), from, to));
        }
    }
}

impl Drop for Prefaulter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
