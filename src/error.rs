//! The one error type of the crate.
//!
//! Operating errors (I/O, corrupt bytes, bad input, bad configuration, producer protocol
//! violations) are values of [`Error`]; programmer errors are assertions. Every variant carries the
//! context a user needs to act on it (file, byte position, offsets, producer id).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::DecodeError;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};

/// The crate's result type: [`Error`] unless another is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an operation of the crate can fail. Each variant says what happened, whether
/// anything was written, and what the caller can do; `Display` gives a one-line message with
/// the same context. New variants may be added (`#[non_exhaustive]`).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed. An append or roll that fails this way was not
    /// acknowledged; a failed fsync/msync also poisons the log (later writes return
    /// [`Error::PreviousIo`]) because the kernel may have dropped the unsynced pages. A full disk
    /// is told apart by [`Error::is_disk_full`]; reopen the log once the cause is fixed.
    Io {
        /// The operation that failed, e.g. `"fsync recovery point"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Bytes on disk are damaged in a region that was durable (or is otherwise not a torn tail).
    /// Nothing was changed on disk: open refuses ([`RecoveryMode::FailOnCorruption`]), or a
    /// read of a damaged sealed segment fails. Keep the directory for inspection (`oncelog
    /// verify`); [`RecoveryMode::ReadOnlyOnCorruption`] serves the prefix before the damage,
    /// [`RecoveryMode::Salvage`] cuts it on the operator's word.
    ///
    /// [`RecoveryMode::FailOnCorruption`]: crate::RecoveryMode::FailOnCorruption
    /// [`RecoveryMode::ReadOnlyOnCorruption`]: crate::RecoveryMode::ReadOnlyOnCorruption
    /// [`RecoveryMode::Salvage`]: crate::RecoveryMode::Salvage
    Corrupt {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte position in the file of the batch that fails to decode.
        position: u64,
        /// What is wrong with the bytes there (bad CRC, offset, length...).
        reason: DecodeError,
    },
    /// A file other than a batch (index, snapshot, checkpoint) failed validation.
    /// Nothing was written; the file is left as found for inspection.
    CorruptFile {
        /// The file that failed validation.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The recovery-point checkpoint is missing or has no valid slot beside segment files:
    /// nothing says which bytes were synced, so open cannot tell a torn tail from damage and
    /// refuses (`RecoveryMode::Salvage` keeps the longest valid prefix instead).
    /// Nothing was changed on disk.
    RecoveryPointLost {
        /// The recovery-point checkpoint file.
        path: PathBuf,
        /// Missing, or why no slot is valid.
        reason: String,
    },
    /// An earlier fsync/msync failed; the log refuses writes until it is reopened. Nothing was
    /// written by this call. Records acknowledged as durable before the failure stay durable;
    /// the reopen recovers the rest like a crash would.
    PreviousIo,
    /// The configuration is invalid; the message names the field and the rule. Returned by
    /// [`LogConfig::validate`](crate::LogConfig::validate) and open before anything is written.
    InvalidConfig(String),
    /// Input bytes or arguments are not a valid batch. Nothing was written; fix the input.
    InvalidBatch(DecodeError),
    /// A batch is larger than the configured maximum.
    /// Nothing was written; split the batch or raise `max_batch_bytes`.
    BatchTooLarge {
        /// The batch's size in bytes.
        size: u64,
        /// The configured maximum in bytes.
        max: u64,
    },
    /// The offset is outside `[log_start_offset, log_end_offset]`. A reader fell behind
    /// retention (restart from `log_start`) or asked past the end.
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log's start offset at the time of the call.
        log_start: Offset,
        /// The log's end offset at the time of the call.
        log_end: Offset,
    },
    /// The directory holds files and none of them is a log's (`file` is one of them): open
    /// refuses to write a log among them. Use an empty or new directory.
    /// Nothing in the directory was changed.
    ForeignDirectory {
        /// The directory given to open.
        dir: PathBuf,
        /// One of the files in it that oncelog never writes.
        file: String,
    },
    /// [`Log::open_read_only`](crate::Log::open_read_only) found no log to serve: the
    /// directory does not exist, is empty, or holds a log's files but no segment. Nothing was
    /// created.
    NoLog {
        /// The directory given to open.
        dir: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// Another process (or another `Log` in this process) holds the directory lock (the path is
    /// the log directory). Nothing was read or written; close the other holder first.
    Locked(PathBuf),
    /// The log is read-only: opened by [`Log::open_read_only`](crate::Log::open_read_only), or
    /// after corruption was reported. Nothing was written; reads still work (of the prefix
    /// before the damage, after corruption).
    ReadOnly,
    /// The log is closed (by `close` on another handle). Nothing was written; reopen it.
    Closed,
    /// A follower append did not start at the log end offset.
    /// Nothing was written; the follower must truncate or fetch from `expected`.
    UnexpectedAppendOffset {
        /// The log end offset the batch had to start at.
        expected: Offset,
        /// The batch's base offset.
        actual: Offset,
    },
    /// The batch's producer epoch is older than the one recorded (Kafka's INVALID_PRODUCER_EPOCH).
    /// Nothing was written; a newer instance of this producer exists, so this one must stop.
    ProducerFenced {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's (stale) epoch.
        epoch: ProducerEpoch,
        /// The epoch the log holds for the producer.
        current_epoch: ProducerEpoch,
    },
    /// A sequence gap, partial overlap or other mismatch (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER).
    /// Nothing was written; re-sending the same batch fails the same way.
    OutOfOrderSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        epoch: ProducerEpoch,
        /// The batch's first sequence.
        first_sequence: Sequence,
        /// The sequence the log expected next (last appended + 1).
        expected_sequence: Sequence,
    },
    /// The batch was written long ago: its sequence range is older than the retained window.
    /// Nothing was appended; the client must treat the batch as written (not re-send it).
    DuplicateSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        epoch: ProducerEpoch,
        /// The batch's first sequence.
        first_sequence: Sequence,
    },
    /// A transaction rule was broken: a non-transactional write while the producer's
    /// transaction is open, or a marker ending a transaction without an epoch bump
    /// (docs/transactions.md). Nothing was written.
    InvalidTxnState {
        /// The producer.
        producer_id: ProducerId,
        /// Which rule was broken.
        reason: String,
    },
    /// A client append carried a batch only the log itself may write (a control batch: COMMIT
    /// and ABORT markers come through `Log::append_marker`). Nothing was written.
    InvalidRecord {
        /// Why the batch is refused.
        reason: &'static str,
    },
    /// A marker's coordinator epoch is older than the producer's latest marker's: a stale
    /// coordinator. Nothing was written.
    CoordinatorFenced {
        /// The producer the marker was for.
        producer_id: ProducerId,
        /// The marker's coordinator epoch.
        coordinator_epoch: i32,
        /// The coordinator epoch of the producer's latest marker.
        current: i32,
    },
    /// The outcome is unknown: the request or its answer was lost, or the leader stopped
    /// leading while the request waited (the batch may be in the log). An idempotent batch may
    /// be re-sent with the same bytes (a duplicate is recognised); a plain one may be written
    /// twice if re-sent (see `producer::retry`).
    Timeout,
    /// The producer id is unknown: an append whose batch does not start at sequence 0
    /// (`first_sequence: Some(_)`: the log forgot or never knew the producer), or an epoch asked
    /// for an id this log never issued (`first_sequence: None`, `Log::reinit_producer`).
    /// Nothing was written; the producer should get a new id or epoch (`init_producer`).
    UnknownProducerId {
        /// The producer id asked for.
        producer_id: ProducerId,
        /// The batch's first sequence; `None` for an epoch request.
        first_sequence: Option<Sequence>,
    },
    /// This replica does not lead the partition (in the epoch asked for); `leader` is the one
    /// it knows, if any (Kafka's NOT_LEADER_OR_FOLLOWER).
    /// Nothing was written; send the request to `leader` (or ask the controller).
    NotLeader {
        /// The replica id of the leader this replica knows, if any.
        leader: Option<u32>,
        /// The leader epoch that answer is for.
        leader_epoch: LeaderEpoch,
    },
    /// acks=all refused before appending: the ISR is below `min.insync.replicas`. Nothing was
    /// appended; retriable.
    NotEnoughReplicas {
        /// Replicas in the ISR, leader included.
        isr: usize,
        /// The configured `min.insync.replicas`.
        min_isr: usize,
    },
    /// acks=all: the batch was appended and committed, but the ISR shrank below
    /// `min.insync.replicas` meanwhile. Retrying is safe (an idempotent retry is a duplicate).
    NotEnoughReplicasAfterAppend {
        /// The ISR size that remained.
        maximal_isr: usize,
        /// The configured `min.insync.replicas`.
        min_isr: usize,
    },
    /// A replication message or state change was refused (the inner error says which and
    /// why); nothing was applied.
    Replication(crate::replication::ReplicationError),
    /// The transaction coordinator is still completing the previous transaction of this
    /// transactional id (its markers are not all written yet). Nothing changed; retriable.
    ConcurrentTransactions {
        /// The transactional id.
        transactional_id: String,
    },
    /// A coordinator request named a producer id (or an epoch above the one issued) that the
    /// coordinator does not hold for this transactional id, or a transactional id it does not
    /// know (Kafka's INVALID_PRODUCER_ID_MAPPING). Nothing changed; call `init_transactions`.
    InvalidProducerIdMapping {
        /// The transactional id of the request.
        transactional_id: String,
        /// The producer id the request named.
        producer_id: ProducerId,
    },
    /// A broker has no such partition (create its topic first: `Broker::create_topic`).
    /// Nothing was written.
    UnknownPartition {
        /// The partition, as `topic-index`.
        partition: String,
    },
    /// A remote replica or controller answered with an error that has no typed variant here
    /// (its storage failed, it found corruption, it refused a malformed request): `kind` names
    /// the wire error code (`net::RemoteError::name`), `message` is the remote's description.
    /// Whether the remote wrote anything depends on `kind`; treat the outcome as unknown.
    Remote {
        /// The wire error code's name.
        kind: &'static str,
        /// The remote's description.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is a full disk (ENOSPC / EFBIG / EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "{op} failed on {}: {source}", path.display())
            }
            Error::Corrupt {
                path,
                position,
                reason,
            } => write!(
                f,
                "corruption in {} at byte {position}: {reason}",
                path.display()
            ),
            Error::CorruptFile { path, reason } => {
                write!(f, "corrupt file {}: {reason}", path.display())
            }
            Error::RecoveryPointLost { path, reason } => write!(
                f,
                "recovery point lost: {}: {reason}; segments exist, so open cannot tell a torn \
                 tail from damage (open with RecoveryMode::Salvage to keep the longest valid \
                 prefix)",
                path.display()
            ),
            Error::PreviousIo => write!(
                f,
                "an earlier fsync/msync failed; the log refuses writes until it is reopened"
            ),
            Error::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            Error::InvalidBatch(reason) => write!(f, "invalid batch: {reason}"),
            Error::BatchTooLarge { size, max } => {
                write!(
                    f,
                    "batch of {size} bytes exceeds the maximum of {max} bytes"
                )
            }
            Error::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => write!(
                f,
                "offset {requested} is outside the log [{log_start}, {log_end}]"
            ),
            Error::ForeignDirectory { dir, file } => write!(
                f,
                "{} is not a log directory: it holds {file} and no file of a log; \
                 refusing to write a log there (use an empty or new directory)",
                dir.display()
            ),
            Error::NoLog { dir, reason } => {
                write!(f, "no log to open read-only in {}: {reason}", dir.display())
            }
            Error::Locked(path) => write!(f, "log directory {} is locked", path.display()),
            Error::ReadOnly => write!(f, "the log is open read-only"),
            Error::Closed => write!(f, "the log is closed"),
            Error::UnexpectedAppendOffset { expected, actual } => write!(
                f,
                "replicated batch starts at offset {actual}, expected the log end {expected}"
            ),
            Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch,
            } => write!(
                f,
                "producer {} epoch {epoch} is fenced by epoch {current_epoch}",
                producer_id.0
            ),
            Error::OutOfOrderSequence {
                producer_id,
                epoch,
                first_sequence,
                expected_sequence,
            } => {
                write!(
                    f,
                    "producer {} epoch {epoch}: sequence {first_sequence} is out of order \
                     (expected {expected_sequence})",
                    producer_id.0
                )
            }
            Error::DuplicateSequence {
                producer_id,
                epoch,
                first_sequence,
            } => write!(
                f,
                "producer {} epoch {epoch}: sequence {first_sequence} was written before and is \
                 older than the retained window",
                producer_id.0
            ),
            Error::InvalidTxnState {
                producer_id,
                reason,
            } => write!(
                f,
                "invalid transaction state for producer {}: {reason}",
                producer_id.0
            ),
            Error::InvalidRecord { reason } => write!(f, "invalid record batch: {reason}"),
            Error::UnknownPartition { partition } => {
                write!(f, "unknown partition {partition} (create its topic first)")
            }
            Error::ConcurrentTransactions { transactional_id } => write!(
                f,
                "transactional id {transactional_id:?} is still completing its previous \
                 transaction; retry"
            ),
            Error::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            } => write!(
                f,
                "producer {} is not the current producer of transactional id \
                 {transactional_id:?}; call init_transactions",
                producer_id.0
            ),
            Error::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current,
            } => write!(
                f,
                "marker for producer {} from coordinator epoch {coordinator_epoch} is fenced by \
                 coordinator epoch {current}",
                producer_id.0
            ),
            Error::Timeout => {
                write!(f, "request timed out: the request or its response was lost")
            }
            Error::UnknownProducerId {
                producer_id,
                first_sequence: Some(first_sequence),
            } => write!(
                f,
                "producer {} is unknown and its first sequence is {first_sequence}, not 0",
                producer_id.0
            ),
            Error::UnknownProducerId {
                producer_id,
                first_sequence: None,
            } => write!(
                f,
                "producer id {} was never issued by this log: no epoch to bump",
                producer_id.0
            ),
            Error::NotLeader {
                leader,
                leader_epoch,
            } => match leader {
                Some(l) => write!(
                    f,
                    "not the leader: replica {l} leads in leader epoch {leader_epoch}"
                ),
                None => write!(
                    f,
                    "not the leader: no leader in leader epoch {leader_epoch}"
                ),
            },
            Error::NotEnoughReplicas { isr, min_isr } => write!(
                f,
                "not enough in-sync replicas: {isr} < min.insync.replicas {min_isr}; nothing \
                 was appended"
            ),
            Error::NotEnoughReplicasAfterAppend {
                maximal_isr,
                min_isr,
            } => write!(
                f,
                "appended, but the ISR shrank to {maximal_isr} < min.insync.replicas {min_isr}"
            ),
            Error::Replication(e) => write!(f, "replication: {e}"),
            Error::Remote { kind, message } => write!(f, "remote error ({kind}): {message}"),
        }
    }
}

impl From<crate::replication::ReplicationError> for Error {
    fn from(e: crate::replication::ReplicationError) -> Self {
        match e {
            crate::replication::ReplicationError::NotEnoughReplicas { isr, min_isr } => {
                Error::NotEnoughReplicas { isr, min_isr }
            }
            e => Error::Replication(e),
        }
    }
}

impl From<DecodeError> for Error {
    fn from(reason: DecodeError) -> Self {
        Error::InvalidBatch(reason)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How oncelog reports a failure it survives (a fallback taken, best-effort work that failed):
/// one warning (a `tracing` event) the first time `reported` is set, nothing after. Returns whether this
/// call printed. The flag decides the scope: a `static` reports once per process, a field
/// once per log (`log::BestEffort`).
pub(crate) fn report_once(reported: &AtomicBool, message: impl FnOnce() -> String) -> bool {
    if reported.swap(true, Ordering::Relaxed) {
        return false;
    }
    tracing::warn!("{}", message());
    true
}
