//! Observability: the names of the metrics the library and the binaries report, the handles a
//! log caches, and a small Prometheus recorder with its HTTP endpoint.
//!
//! Events and spans go through the `tracing` facade and metrics through the `metrics` facade:
//! with no subscriber and no recorder installed (an embedder that installs neither) nothing is
//! printed or kept. docs/operations.md ("Observability") lists every span, event and metric.
//!
//! A log registers its metric handles when it is opened (`LogMetrics::register`): install a
//! recorder before opening a log whose metrics it should see (the `oncelog` binary installs
//! its own before anything else). A recorder installed later sees the replication gauges but
//! none of that log's counters.

// A socket: the processes' endpoint, feature `net`.
#[cfg(feature = "net")]
pub mod http;
pub mod prometheus;

use metrics::{Counter, Gauge, Histogram};

/// Seconds from the start of `Log::append`/`append_replicated`/`append_marker` to its return
/// (a durable return with `SyncMode::EveryAppend`). Histogram, no labels.
pub const APPEND_SECONDS: &str = "oncelog_append_seconds";
/// Seconds of one sync of the log: label `kind` = `msync` (a sync lane's msync of appended
/// bytes) or `checkpoint` (the recovery-point checkpoint write, with its fdatasync when it has one). Histogram.
pub const SYNC_SECONDS: &str = "oncelog_sync_seconds";
/// Bytes of batches appended (duplicates excluded). Counter.
pub const APPENDED_BYTES: &str = "oncelog_appended_bytes_total";
/// Batches appended (duplicates excluded). Counter.
pub const APPENDED_BATCHES: &str = "oncelog_appended_batches_total";
/// Segment rolls (by size, age, index space, offset range or `Log::roll`). Counter.
pub const SEGMENT_ROLLS: &str = "oncelog_segment_rolls_total";
/// Bytes scanned batch by batch by open's recovery. Counter.
pub const RECOVERY_SCANNED_BYTES: &str = "oncelog_recovery_scanned_bytes_total";
/// The last stable offset last computed for a read (read_committed isolation). Gauge.
pub const LAST_STABLE_OFFSET: &str = "oncelog_last_stable_offset";
/// The high-water mark of the replica (leader or follower); label `log`. Gauge.
pub const HIGH_WATERMARK: &str = "oncelog_high_watermark";
/// The committed ISR's size as the leader knows it; label `log`. Gauge.
pub const ISR_SIZE: &str = "oncelog_isr_size";
/// Records a follower is behind the leader's log end, as of its last fetch; labels `log` and
/// `replica`. Gauge, reported by the leader.
pub const FOLLOWER_LAG_RECORDS: &str = "oncelog_follower_lag_records";

/// The controller's view: the leader's replica id (-1 while the partition has none). Gauge,
/// reported by `oncelog controller`.
pub const CONTROLLER_LEADER: &str = "oncelog_controller_leader";
/// The controller's view: the leader epoch. Gauge.
pub const CONTROLLER_LEADER_EPOCH: &str = "oncelog_controller_leader_epoch";
/// The controller's view: the committed ISR's size. Gauge.
pub const CONTROLLER_ISR_SIZE: &str = "oncelog_controller_isr_size";
/// Requests the controller answered (refusals and errors included). Counter.
pub const CONTROLLER_REQUESTS: &str = "oncelog_controller_requests_total";

/// Every metric: name, Prometheus type, help text. The recorder describes them up front.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        APPEND_SECONDS,
        Kind::Histogram,
        "Seconds an append took, durable return included with SyncMode::EveryAppend",
    ),
    (
        SYNC_SECONDS,
        Kind::Histogram,
        "Seconds of one sync: kind=msync (a sync lane) or kind=checkpoint (recovery-point write)",
    ),
    (
        APPENDED_BYTES,
        Kind::Counter,
        "Bytes of batches appended (duplicates excluded)",
    ),
    (
        APPENDED_BATCHES,
        Kind::Counter,
        "Batches appended (duplicates excluded)",
    ),
    (SEGMENT_ROLLS, Kind::Counter, "Segment rolls"),
    (
        RECOVERY_SCANNED_BYTES,
        Kind::Counter,
        "Bytes scanned batch by batch by recovery at open",
    ),
    (
        LAST_STABLE_OFFSET,
        Kind::Gauge,
        "Last stable offset as of the last read_committed read",
    ),
    (
        HIGH_WATERMARK,
        Kind::Gauge,
        "High-water mark of the replica",
    ),
    (
        ISR_SIZE,
        Kind::Gauge,
        "Size of the committed ISR (reported by the leader)",
    ),
    (
        FOLLOWER_LAG_RECORDS,
        Kind::Gauge,
        "Records a follower is behind the leader's log end at its last fetch",
    ),
    (
        CONTROLLER_LEADER,
        Kind::Gauge,
        "The leader's replica id as the controller records it (-1: none)",
    ),
    (
        CONTROLLER_LEADER_EPOCH,
        Kind::Gauge,
        "The leader epoch as the controller records it",
    ),
    (
        CONTROLLER_ISR_SIZE,
        Kind::Gauge,
        "Size of the committed ISR as the controller records it",
    ),
    (
        CONTROLLER_REQUESTS,
        Kind::Counter,
        "Requests the controller answered, refusals included",
    ),
];

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to a value.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The word after `# TYPE name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A log's metric handles, registered once at open so the append path does no registry lookup
/// (with no recorder they are no-ops).
#[derive(Debug)]
pub(crate) struct LogMetrics {
    pub append_seconds: Histogram,
    pub msync_seconds: Histogram,
    pub checkpoint_seconds: Histogram,
    pub appended_bytes: Counter,
    pub appended_batches: Counter,
    pub segment_rolls: Counter,
    pub last_stable_offset: Gauge,
}

impl LogMetrics {
    /// The handles of the log in `dir`. Gauges are per log, labelled `log` with the directory's
    /// name (several logs in one process, as under `oncelog serve`, would otherwise overwrite
    /// one another); counters and histograms add up over the process's logs.
    pub(crate) fn register(dir: &std::path::Path) -> LogMetrics {
        let log = log_label(dir);
        LogMetrics {
            append_seconds: metrics::histogram!(APPEND_SECONDS),
            msync_seconds: metrics::histogram!(SYNC_SECONDS, "kind" => "msync"),
            checkpoint_seconds: metrics::histogram!(SYNC_SECONDS, "kind" => "checkpoint"),
            appended_bytes: metrics::counter!(APPENDED_BYTES),
            appended_batches: metrics::counter!(APPENDED_BATCHES),
            segment_rolls: metrics::counter!(SEGMENT_ROLLS),
            last_stable_offset: metrics::gauge!(LAST_STABLE_OFFSET, "log" => log),
        }
    }
}

/// The `log` label of the log in `dir`: the directory's name (its whole path if it has none).
pub fn log_label(dir: &std::path::Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The replication gauges of one replica, labelled `log` like its log's own gauges
/// ([`log_label`]), so the replicas of several partitions in one process (or one scrape of
/// several processes) keep theirs apart: the high-water mark, the ISR size and each
/// follower's lag. The replica registers them when it opens its log and hands them to the
/// leader and follower state machines it runs ([`LeaderState::with_gauges`],
/// [`FollowerState::with_gauges`]); a state machine without them reports nothing.
///
/// [`LeaderState::with_gauges`]: crate::replication::LeaderState::with_gauges
/// [`FollowerState::with_gauges`]: crate::replication::FollowerState::with_gauges
#[derive(Debug, Clone)]
pub struct ReplicationGauges {
    log: String,
    high_watermark: Gauge,
    isr_size: Gauge,
}

impl ReplicationGauges {
    /// The gauges of the replica whose log is labelled `log` (see [`log_label`]).
    pub fn register(log: &str) -> ReplicationGauges {
        ReplicationGauges {
            log: log.to_string(),
            high_watermark: metrics::gauge!(HIGH_WATERMARK, "log" => log.to_string()),
            isr_size: metrics::gauge!(ISR_SIZE, "log" => log.to_string()),
        }
    }

    /// The label these gauges carry.
    pub fn log(&self) -> &str {
        &self.log
    }

    pub(crate) fn set_high_watermark(&self, hw: u64) {
        self.high_watermark.set(hw as f64);
    }

    pub(crate) fn set_isr_size(&self, size: usize) {
        self.isr_size.set(size as f64);
    }

    /// Looked up at each fetch (a registry lookup, like the label of any dynamic metric).
    pub(crate) fn set_follower_lag(&self, replica: u32, records: u64) {
        metrics::gauge!(
            FOLLOWER_LAG_RECORDS,
            "log" => self.log.clone(),
            "replica" => replica.to_string()
        )
        .set(records as f64);
    }
}

/// Recovery reports its progress every this many bytes scanned (an info event).
pub const RECOVERY_PROGRESS_BYTES: u64 = 64 << 20;
