//! The connection cap of `oncelog serve` (`--max-connections`): a slot per served connection,
//! taken on accept and given back when the connection's thread ends. A connection beyond the
//! cap is closed at once; refusals are counted and logged at most once a second, so a flood of
//! connections cannot flood the log too. (The frame deadline and the idle timeout are in
//! `frame`, the TLS handshake's deadline in `conn`.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The connections served at once, and the refused ones not yet logged.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// One served connection's slot, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionSlots {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            last_log: Mutex::new(None),
        })
    }

    /// A slot, or `None` when `max` connections are open (the refusal is counted).
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            return Some(Slot(Arc::clone(self)));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.log_refusals();
        None
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Logs the refusals counted since the last line, unless a line was written less than a
    /// second ago (the next refusal or [`ConnectionSlots::log_refusals`] call after that
    /// second writes them).
    pub fn log_refusals(&self) {
        let mut last = self.last_log.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        let n = self.refused.swap(0, Ordering::Relaxed);
        if n > 0 {
            *last = Some(now);
            tracing::warn!(
                "oncelog serve: refused {n} connection(s) over the cap of {} (--max-connections)",
                self.max
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let slots = ConnectionSlots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert!(slots.take().is_none());
        assert_eq!(slots.open(), 2);
        drop(a);
        let c = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop((b, c));
        assert_eq!(slots.open(), 0);
    }
}
