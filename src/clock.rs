//! Injectable time. The log reads time only through [`Clock`], so tests and simulations control
//! it (segment age, retention, producer expiry, append timestamps).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::TimestampMs;

/// The source of wall-clock time for a log: segment age, retention, producer expiry and append
/// timestamps all read it. Must be cheap and safe to call from any thread.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `start_ms` (milliseconds since the Unix epoch) until moved.
    pub fn new(start_ms: TimestampMs) -> Self {
        ManualClock(AtomicI64::new(start_ms))
    }

    /// Moves the clock to `ms` (milliseconds since the Unix epoch); it may go backwards.
    pub fn set(&self, ms: TimestampMs) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` milliseconds (backward if negative).
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        self.0.load(Ordering::SeqCst)
    }
}
