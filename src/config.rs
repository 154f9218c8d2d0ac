//! Configuration of a log, validated at open.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::format::batch::HEADER_SIZE;
use crate::io::fs::RealStorage;
use crate::io::Storage;

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// No fsync/msync on the hot path (Kafka's default): durability comes from the OS writing
    /// dirty pages back, from `flush()`, from segment rolls and from clean close. A process
    /// crash loses nothing; power loss may lose the unsynced tail (never synced data).
    Os,
    /// A background flusher syncs when `ms` have passed or `bytes` are unsynced, whichever first.
    Interval {
        /// Longest time, in milliseconds, appended bytes stay unsynced.
        ms: u64,
        /// Most bytes that may be unsynced before the flusher syncs.
        bytes: u64,
    },
    /// `append` returns only after its bytes are durable. Concurrent appenders share msyncs and
    /// recovery-point writes (group commit with sync lanes: several msyncs in flight at once).
    EveryAppend,
}

/// What open does when it finds damage in data that was durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Fail with [`Error::Corrupt`] (the default): never silently drop synced data.
    FailOnCorruption,
    /// Open read-only, serving the valid prefix before the damage; appends return `ReadOnly`.
    ReadOnlyOnCorruption,
    /// The operator's explicit word: keep the longest valid prefix and cut everything after
    /// the first damage, also in synced data, and also when the recovery-point checkpoint is
    /// missing or damaged. Every cut is reported (`RecoveryReport::cuts`, with the rule
    /// `Rule::Salvage`). Never a default: it can drop acknowledged records.
    Salvage,
}

/// Settings of one partition log. `LogConfig::default()` has Kafka's defaults.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Size a segment file is preallocated to; the segment rolls when the next batch would not fit.
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this (by the log clock).
    pub segment_ms: Option<u64>,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// Maximum entries of one segment's offset (and time) index; the segment rolls when full.
    pub index_max_entries: u32,
    /// The largest batch accepted.
    pub max_batch_bytes: u32,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// When appended bytes are made durable (default [`SyncMode::Os`]).
    pub sync: SyncMode,
    /// What open does with damage in synced data (default [`RecoveryMode::FailOnCorruption`]).
    pub recovery: RecoveryMode,
    /// Bytes to prefault ahead of the append position in the active segment (0 = off).
    pub prefault_bytes: u64,
    /// Producer state of a producer idle for this long (on the log's clock) is dropped.
    pub producer_id_expiration_ms: u64,
    /// Maximum live producers; the least recently active idle ones are evicted beyond it.
    pub max_producers: usize,
    /// A producer-state snapshot is taken after this many appended bytes (plus at roll and close).
    pub snapshot_interval_bytes: u64,
    /// How long the recovery point on disk may lag the durable data, in ms on the log's clock
    /// (default 50). A durable point (an `EveryAppend` append, `flush`, an interval sync) costs
    /// one flush of the data; the recovery-point file is rewritten at once but fdatasynced at
    /// most this often, so a power loss may bring back a recovery point up to this old. No
    /// synced record is lost either way; what the lag gives up is the *report* of damage to
    /// synced data written in the window (bit rot there is cut like a torn tail, with the cut
    /// reported). 0 fdatasyncs the recovery point after every sync: two flushes per durable
    /// point, every synced byte covered (docs/recovery.md, "The lagging recovery point").
    pub recovery_point_lag_ms: u64,
    /// Run the background thread (seals of rolled segments, interval syncs, retention). Off,
    /// rolled segments are sealed inline by the appender and interval syncs and retention run
    /// only when called; deterministic simulations turn it off so that every storage operation
    /// happens in the simulation's own order.
    pub background_thread: bool,
    /// The file system (real by default; simulated in tests).
    pub storage: Arc<dyn Storage>,
    /// The clock (system by default; manual in tests).
    pub clock: Arc<dyn Clock>,
}

/// Milliseconds in a day (the default `segment_ms` is seven of them, Kafka's `log.roll.ms`).
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// The default [`LogConfig::max_batch_bytes`]: Kafka's `message.max.bytes` (1 MiB + 12).
pub const DEFAULT_MAX_BATCH_BYTES: u32 = (1 << 20) + 12;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            index_interval_bytes: 4096,
            index_max_entries: (10 << 20) / 8,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            retention_bytes: None,
            retention_ms: Some(7 * DAY_MS),
            sync: SyncMode::Os,
            recovery: RecoveryMode::FailOnCorruption,
            prefault_bytes: 32 << 20,
            producer_id_expiration_ms: 7 * DAY_MS,
            max_producers: 1_000_000,
            snapshot_interval_bytes: 64 << 20,
            recovery_point_lag_ms: 50,
            background_thread: true,
            storage: Arc::new(RealStorage),
            clock: Arc::new(SystemClock),
        }
    }
}

impl LogConfig {
    /// Tiny settings that push the code into its corners: 4 KiB segments, an index entry for
    /// every batch, frequent snapshots.
    pub fn for_tests() -> Self {
        LogConfig {
            segment_bytes: 4096,
            segment_ms: None,
            index_interval_bytes: 1,
            index_max_entries: 64,
            max_batch_bytes: 2048,
            retention_bytes: None,
            retention_ms: None,
            prefault_bytes: 0,
            snapshot_interval_bytes: 8192,
            ..LogConfig::default()
        }
    }

    /// Sets `segment_bytes`; a `max_batch_bytes` left at its default is lowered to fit one
    /// segment (a batch never spans two), any other value is kept and checked by `validate`.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        if self.max_batch_bytes == DEFAULT_MAX_BATCH_BYTES {
            let fits = u32::try_from(segment_bytes).unwrap_or(u32::MAX);
            self.max_batch_bytes = DEFAULT_MAX_BATCH_BYTES.min(fits);
        }
        self
    }

    /// Replaces the file system the log uses (a simulated one in tests).
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Replaces the clock the log reads time from (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        let min_segment = 2 * HEADER_SIZE as u64;
        if self.segment_bytes < min_segment || self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!(
                "segment_bytes = {} must be in [{min_segment}, {}] (positions are u32)",
                self.segment_bytes,
                u32::MAX
            ));
        }
        if (self.max_batch_bytes as usize) < HEADER_SIZE {
            return bad(format!(
                "max_batch_bytes = {} must be at least a batch header ({HEADER_SIZE} bytes)",
                self.max_batch_bytes
            ));
        }
        if u64::from(self.max_batch_bytes) > self.segment_bytes {
            let default = if self.max_batch_bytes == DEFAULT_MAX_BATCH_BYTES {
                " (its default)"
            } else {
                ""
            };
            return bad(format!(
                "max_batch_bytes = {}{default} is larger than segment_bytes = {}: a batch must \
                 fit in one segment; set max_batch_bytes to at most segment_bytes, or use \
                 LogConfig::with_segment_bytes, which lowers the default to fit",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1".into());
        }
        if self.index_max_entries < 2 {
            return bad(format!(
                "index_max_entries = {} must be at least 2",
                self.index_max_entries
            ));
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms must be positive (or None)".into());
        }
        if self.retention_ms == Some(0) {
            return bad("retention_ms must be positive (or None)".into());
        }
        if let SyncMode::Interval { ms, bytes } = self.sync {
            if ms == 0 || bytes == 0 {
                return bad("SyncMode::Interval needs ms > 0 and bytes > 0".into());
            }
        }
        if self.max_producers == 0 {
            return bad("max_producers must be at least 1".into());
        }
        if self.producer_id_expiration_ms == 0 {
            return bad("producer_id_expiration_ms must be positive".into());
        }
        if self.snapshot_interval_bytes == 0 {
            return bad("snapshot_interval_bytes must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        LogConfig::default().validate().unwrap();
        LogConfig::for_tests().validate().unwrap();
    }

    #[test]
    fn small_segments_with_the_default_batch_limit() {
        // The struct-update form keeps the default limit, which does not fit: the error says
        // which field, that it is the default, and what to do.
        let err = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("max_batch_bytes = 1048588 (its default) is larger than segment_bytes"),
            "{err}"
        );
        assert!(err.contains("with_segment_bytes"), "{err}");
        // The builder derives the limit from the segment size.
        let cfg = LogConfig::default().with_segment_bytes(1 << 20);
        cfg.validate().unwrap();
        assert_eq!(cfg.max_batch_bytes, 1 << 20);
        // A limit set on purpose is kept, and refused if it does not fit.
        let cfg = LogConfig {
            max_batch_bytes: 3 << 20,
            ..LogConfig::default()
        }
        .with_segment_bytes(1 << 20);
        assert_eq!(cfg.max_batch_bytes, 3 << 20);
        assert!(cfg.validate().is_err());
        // Large segments keep the default.
        let cfg = LogConfig::default().with_segment_bytes(64 << 20);
        assert_eq!(cfg.max_batch_bytes, DEFAULT_MAX_BATCH_BYTES);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(LogConfig, &str)> = vec![
            (
                LogConfig {
                    segment_bytes: 10,
                    ..LogConfig::for_tests()
                },
                "segment_bytes",
            ),
            (
                LogConfig {
                    segment_bytes: 1 << 40,
                    ..LogConfig::for_tests()
                },
                "segment_bytes",
            ),
            (
                LogConfig {
                    max_batch_bytes: 8192,
                    ..LogConfig::for_tests()
                },
                "max_batch_bytes",
            ),
            (
                LogConfig {
                    index_interval_bytes: 0,
                    ..LogConfig::for_tests()
                },
                "index_interval",
            ),
            (
                LogConfig {
                    index_max_entries: 1,
                    ..LogConfig::for_tests()
                },
                "index_max_entries",
            ),
            (
                LogConfig {
                    segment_ms: Some(0),
                    ..LogConfig::for_tests()
                },
                "segment_ms",
            ),
            (
                LogConfig {
                    sync: SyncMode::Interval { ms: 0, bytes: 1 },
                    ..LogConfig::for_tests()
                },
                "Interval",
            ),
            (
                LogConfig {
                    max_producers: 0,
                    ..LogConfig::for_tests()
                },
                "max_producers",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
