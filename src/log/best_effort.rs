//! Failures of best-effort work: work the log can do without (preparing the next segment ahead,
//! writing a producer snapshot on the append path, the background thread's retention runs). Such a failure never fails an append and
//! never poisons the log; it is counted (for an embedder, [`Log::best_effort_failures`]) and
//! reported on stderr once per log and kind, with the first error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Log;
use crate::error::{report_once, Error};

/// One kind of best-effort work of one log: its failures and whether one was reported.
#[derive(Debug, Default)]
pub(super) struct BestEffort {
    failures: AtomicU64,
    reported: AtomicBool,
}

impl BestEffort {
    /// Counts a failure; the first one is reported (`what` failed, `then` what the log does
    /// instead).
    pub(super) fn failed(&self, what: &str, e: &Error, then: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        report_once(&self.reported, || {
            format!("{what} failed ({e}); {then} (later failures are only counted)")
        });
    }

    pub(super) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn reported(&self) -> bool {
        self.reported.load(Ordering::Relaxed)
    }
}

/// Failures of best-effort work so far ([`Log::best_effort_failures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BestEffortFailures {
    /// Spare preparations or renames that failed (the roll created its segment inline).
    pub spare: u64,
    /// Producer snapshots of the append path (at a roll, every `snapshot_interval_bytes`) that
    /// failed: the next open replays more batches. Their temporary file is removed.
    pub snapshot: u64,
    /// Retention runs of the background thread that failed (for example a full disk refusing
    /// the producer snapshot or log-start checkpoint written before segments are deleted): the
    /// segments stay, the log start does not move, and the next tick tries again.
    pub retention: u64,
    /// Whether a `spare` failure was reported (a warning, once per log).
    pub spare_reported: bool,
    /// Whether a `snapshot` failure was reported (a warning, once per log).
    pub snapshot_reported: bool,
    /// Whether a `retention` failure was reported (a warning, once per log).
    pub retention_reported: bool,
}

impl Log {
    /// Failures of best-effort work since open: counted here, reported on stderr once.
    pub fn best_effort_failures(&self) -> BestEffortFailures {
        let s = &self.inner.spares;
        BestEffortFailures {
            spare: s.failures.failures(),
            snapshot: s.snapshot_failures.failures(),
            retention: s.retention_failures.failures(),
            spare_reported: s.failures.reported(),
            snapshot_reported: s.snapshot_failures.reported(),
            retention_reported: s.retention_failures.reported(),
        }
    }

    /// A retention run of the background thread failed: counted and reported once. A log that
    /// refuses work (closed, read-only, poisoned by a failed sync) is not a retention failure:
    /// its own error says so on every call.
    pub(super) fn retention_failed(&self, e: &Error) {
        if matches!(e, Error::Closed | Error::ReadOnly | Error::PreviousIo) {
            return;
        }
        self.inner.spares.retention_failures.failed(
            "background retention",
            e,
            "the segments past retention stay and the next tick retries",
        );
    }
}
