//! A broker: named partition logs in one data directory, with the transaction coordinator and
//! the consumer-offsets log that make exactly-once work across them (docs/transactions.md,
//! "Exactly-once, end to end").
//!
//! ```text
//! <dir>/
//!   <topic>-<partition>/        a partition log per topic-partition
//!   __consumer_offsets-0/       the consumer-offsets log (a partition: it takes markers)
//!   __transaction_state-0/      the coordinator's state log (owned by the coordinator)
//!   DELETE-<topic>              a topic deletion begun and not finished (`topic_delete`)
//! ```
//!
//! Every producer id a broker hands out comes from one durable allocator (the coordinator's
//! state log), so a transactional producer and a plain idempotent one never share an id.

pub mod consumer;
pub mod partitions;
mod topic_delete;
pub mod topic_partition;
pub mod transactional;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LogConfig, SyncMode};
use crate::coordinator::TxnCoordinator;
use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::log::{AppendInfo, Log};
use crate::offsets::{OffsetStore, OFFSETS_TOPIC};
use crate::types::{ProducerEpoch, ProducerId};

pub use consumer::{ConsumedRecord, Consumer};
pub use partitions::Partitions;
pub use topic_partition::{TopicPartition, MAX_TOPIC_LEN};
pub use transactional::{TransactionalProducer, TxnError};

/// The coordinator's state-log directory under a broker's data directory.
pub const TXN_STATE_DIR: &str = "__transaction_state-0";

/// Settings of a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The settings of every data partition (and, with the sync mode raised to `EveryAppend`,
    /// of the consumer-offsets log; see `internal_log`).
    pub log: LogConfig,
    /// Segment size of the internal logs (coordinator state, consumer offsets): their records
    /// are small and a preallocated 1 GiB segment would waste the disk.
    pub internal_segment_bytes: u64,
    /// The transaction timeout a producer gets when it does not ask for one.
    pub default_txn_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            log: LogConfig::default(),
            internal_segment_bytes: 16 << 20,
            default_txn_timeout: Duration::from_secs(60),
        }
    }
}

impl BrokerConfig {
    /// The configuration of an internal log: the data partitions' storage and clock, its own
    /// segment size, every append durable before it returns (a commit of offsets or a
    /// coordinator decision is acted on only once it cannot be lost), no time retention.
    pub fn internal_log(&self) -> LogConfig {
        let mut c = self
            .log
            .clone()
            .with_segment_bytes(self.internal_segment_bytes);
        c.sync = SyncMode::EveryAppend;
        c.retention_ms = None;
        c.retention_bytes = None;
        c.segment_ms = None;
        c
    }
}

/// Partition logs, the consumer-offsets store and the transaction coordinator over one data
/// directory.
#[derive(Debug)]
pub struct Broker {
    dir: PathBuf,
    config: BrokerConfig,
    partitions: Partitions,
    offsets: OffsetStore,
    coordinator: TxnCoordinator,
}

impl Broker {
    /// Opens (or creates) the broker in `dir`: every partition log, the offsets log, then the
    /// coordinator, which finishes any transaction a crash left between its decision and its
    /// markers before `open` returns.
    pub fn open(dir: impl AsRef<Path>, config: BrokerConfig) -> Result<Broker> {
        let dir = dir.as_ref().to_path_buf();
        let partitions =
            Partitions::open(&dir, config.log.clone(), &[TXN_STATE_DIR, &offsets_dir()])?;
        let offsets_log = Log::open(dir.join(offsets_dir()), config.internal_log())?;
        let offsets_log = partitions.insert(offsets_partition(), offsets_log)?;
        let offsets = OffsetStore::new(offsets_log)?;
        // Deletions a crash interrupted: their partitions are gone (`Partitions::open`); now
        // their committed offsets, then their intent files (`topic_delete`, steps 3 and 4).
        for topic in topic_delete::pending(&*config.log.storage, &dir)? {
            finish_deletion(&offsets, &*config.log.storage, &dir, &topic)?;
        }
        let coordinator =
            TxnCoordinator::open(&dir.join(TXN_STATE_DIR), config.internal_log(), &partitions)?;
        Ok(Broker {
            dir,
            config,
            partitions,
            offsets,
            coordinator,
        })
    }

    /// The broker's data directory (one subdirectory per partition log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the broker was opened with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Creates the partitions `0..partitions` of `topic` that do not exist yet.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<Vec<TopicPartition>> {
        if topic == OFFSETS_TOPIC || topic.starts_with("__") {
            return Err(Error::InvalidConfig(format!(
                "topic names starting with \"__\" are reserved for the broker ({topic:?})"
            )));
        }
        (0..partitions)
            .map(|p| {
                let tp = TopicPartition::new(topic, p)?;
                self.partitions.get_or_create(&tp)?;
                Ok(tp)
            })
            .collect()
    }

    /// Deletes every partition of `topic`, durably (see `Partitions::delete_topic`); returns
    /// the partitions deleted, none if the topic does not exist. Refused for the broker's own
    /// topics (`__` names) and while a transaction that is not complete holds a partition of
    /// the topic (its markers must reach that partition first).
    pub fn delete_topic(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        if topic.starts_with("__") {
            return Err(Error::InvalidConfig(format!(
                "topic names starting with \"__\" belong to the broker and cannot be deleted \
                 ({topic:?})"
            )));
        }
        let open =
            self.coordinator.list().into_iter().find(|t| {
                !t.state.is_complete() && t.partitions.iter().any(|tp| tp.topic() == topic)
            });
        if let Some(t) = open {
            return Err(Error::InvalidConfig(format!(
                "topic {topic:?} is in the open transaction of {:?}: end or abort it first",
                t.transactional_id
            )));
        }
        let doomed = self.partitions.delete_topic(topic)?;
        if !doomed.is_empty() {
            finish_deletion(&self.offsets, &*self.config.log.storage, &self.dir, topic)?;
        }
        Ok(doomed)
    }

    /// The log of a partition (`UnknownPartition` if its topic was not created).
    pub fn partition(&self, tp: &TopicPartition) -> Result<Arc<Log>> {
        self.partitions.get(tp)
    }

    /// Appends `batch` to `tp`, the way a client's batch should reach a broker's partition: a
    /// transactional batch is accepted only when the coordinator holds `tp` in its producer's
    /// ongoing transaction at that epoch (`TxnCoordinator::verify_txn_partition`), so no batch
    /// (a zombie's late one, or one sent before its partition was added) can open a
    /// transaction on a partition that the coordinator would never end, holding the partition's
    /// last stable offset forever. Appending to `partition(tp)` directly skips that check.
    pub fn produce(&self, tp: &TopicPartition, batch: &RecordBatch) -> Result<AppendInfo> {
        let log = self.partitions.get(tp)?;
        let h = batch.header();
        if h.is_transactional() {
            self.coordinator
                .verify_txn_partition(h.producer_id, h.producer_epoch, tp)?;
        }
        log.append(batch)
    }

    /// Every partition log, including the offsets log.
    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// The committed consumer-group offsets (kept in the offsets log).
    pub fn offsets(&self) -> &OffsetStore {
        &self.offsets
    }

    /// The transaction coordinator (transactional ids, their producers and open transactions).
    pub fn coordinator(&self) -> &TxnCoordinator {
        &self.coordinator
    }

    /// A producer id for a plain idempotent producer of this broker's partitions, from the
    /// broker's one allocator (epoch 0). Do not call `Log::init_producer` on a broker's
    /// partitions: that allocator is per log, and its ids could collide with these.
    pub fn init_producer(&self) -> Result<(ProducerId, ProducerEpoch)> {
        Ok((self.coordinator.allocate_producer_id()?, 0))
    }

    /// Aborts transactions past their timeout (on the log clock) and retries unfinished
    /// markers; returns the transactional ids it aborted. Call it periodically.
    pub fn tick(&self) -> Result<Vec<String>> {
        self.coordinator.tick(&self.partitions)
    }

    /// Closes the coordinator and every log cleanly; the first error is returned, every log is
    /// closed regardless. A partition handle (`Arc<Log>`) still held elsewhere answers `Closed`
    /// from then on.
    pub fn close(self) -> Result<()> {
        let Broker {
            partitions,
            offsets,
            coordinator,
            ..
        } = self;
        let mut result = coordinator.close();
        drop(offsets);
        for (_, log) in partitions.take_all() {
            let closed = log.close_shared();
            if result.is_ok() {
                result = closed;
            }
        }
        result
    }

    /// Drops the broker without any clean-shutdown step, as a process crash would (tests and
    /// simulations).
    // Test machinery, not API: hidden from the embedder's documentation.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        let Broker {
            partitions,
            offsets,
            coordinator,
            ..
        } = self;
        coordinator.simulate_crash();
        drop(offsets);
        for (_, log) in partitions.take_all() {
            log.simulate_crash_shared();
        }
    }
}

/// The consumer-offsets partition.
pub fn offsets_partition() -> TopicPartition {
    TopicPartition::internal(OFFSETS_TOPIC, 0)
}

fn offsets_dir() -> String {
    offsets_partition().dir_name()
}

/// Steps 3 and 4 of deleting `topic` (`topic_delete`): every group's committed offset of it,
/// then its intent file. Idempotent, so an open redoes it after a crash.
fn finish_deletion(
    offsets: &OffsetStore,
    storage: &dyn crate::io::Storage,
    dir: &Path,
    topic: &str,
) -> Result<()> {
    let deleted = offsets.delete_topic_offsets(topic)?;
    if deleted > 0 {
        tracing::info!("broker: deleted {deleted} committed offset(s) of topic {topic:?}");
    }
    topic_delete::remove_intent(storage, dir, topic)
}
