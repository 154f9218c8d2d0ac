//! The partition logs of a broker, by name, and the marker path into them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::broker::TopicPartition;
use crate::config::{LogConfig, SyncMode};
use crate::coordinator::MarkerSink;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::producer::Marker;

/// The open partition logs of a broker's data directory, one `<topic>-<partition>` directory
/// each. Invariant: a partition is in the map exactly when its log is open, and each log is
/// open once (its directory lock would refuse a second open anyway).
#[derive(Debug)]
pub struct Partitions {
    dir: PathBuf,
    config: LogConfig,
    logs: RwLock<BTreeMap<TopicPartition, Arc<Log>>>,
}

impl Partitions {
    /// Opens every partition directory under `dir` except the names in `skip` (directories
    /// owned by someone else, like the coordinator's state log). Other entries are left alone.
    pub fn open(dir: &Path, config: LogConfig, skip: &[&str]) -> Result<Partitions> {
        let storage = config.storage.clone();
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create_dir_all", dir, e))?;
        // Before any log opens: a deletion a crash interrupted is finished, never undone.
        super::topic_delete::finish_pending(&*storage, dir)?;
        let mut names = storage
            .list_dirs(dir)
            .map_err(|e| Error::io("list_dirs", dir, e))?;
        names.sort();
        let mut logs = BTreeMap::new();
        for name in names {
            if skip.contains(&name.as_str()) {
                continue;
            }
            let Some(tp) = TopicPartition::parse_dir_name(&name) else {
                continue;
            };
            let log = Log::open(dir.join(&name), config.clone())?;
            logs.insert(tp, Arc::new(log));
        }
        Ok(Partitions {
            dir: dir.to_path_buf(),
            config,
            logs: RwLock::new(logs),
        })
    }

    /// The log of `tp`, or `UnknownPartition`.
    pub fn get(&self, tp: &TopicPartition) -> Result<Arc<Log>> {
        self.logs
            .read()
            .get(tp)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition {
                partition: tp.to_string(),
            })
    }

    /// The log of `tp`, created (empty) if it does not exist yet.
    pub fn get_or_create(&self, tp: &TopicPartition) -> Result<Arc<Log>> {
        if let Ok(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(tp) {
            return Ok(log.clone());
        }
        let intent = super::topic_delete::intent_path(&self.dir, tp.topic());
        if self.config.storage.exists(&intent) {
            return Err(Error::InvalidConfig(format!(
                "topic {:?} has an unfinished deletion ({}): it finishes at the next open",
                tp.topic(),
                intent.display()
            )));
        }
        let log = Arc::new(Log::open(
            self.dir.join(tp.dir_name()),
            self.config.clone(),
        )?);
        logs.insert(tp.clone(), log.clone());
        Ok(log)
    }

    /// Adds an already opened log (the broker's offsets log, opened with its own settings).
    pub(super) fn insert(&self, tp: TopicPartition, log: Log) -> Result<Arc<Log>> {
        let log = Arc::new(log);
        let mut logs = self.logs.write();
        if logs.contains_key(&tp) {
            return Err(Error::InvalidConfig(format!(
                "partition {tp} is already open"
            )));
        }
        logs.insert(tp, log.clone());
        Ok(log)
    }

    /// Deletes every partition of `topic` (the partitions it deleted, ascending; none if the
    /// topic has none): closes their logs (a handle still held elsewhere answers `Closed`)
    /// and removes their directories, crash-safe (`topic_delete`). Once the first durable
    /// step is done the topic is gone even if a later step fails: the next open finishes it.
    pub fn delete_topic(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let storage = self.config.storage.clone();
        // Held throughout, so no partition of the topic is created or opened meanwhile.
        let mut logs = self.logs.write();
        let doomed: Vec<TopicPartition> = logs
            .keys()
            .filter(|tp| tp.topic() == topic)
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        super::topic_delete::write_intent(&*storage, &self.dir, topic)?;
        for tp in &doomed {
            if let Some(log) = logs.remove(tp) {
                // Its data is being deleted: a failed flush loses nothing anyone can ask for.
                if let Err(e) = log.close_shared() {
                    tracing::warn!("broker: closing {tp} to delete it: {e}");
                }
            }
        }
        super::topic_delete::remove_partitions(&*storage, &self.dir, topic)?;
        Ok(doomed)
    }

    /// Every partition, ascending by name.
    pub fn names(&self) -> Vec<TopicPartition> {
        self.logs.read().keys().cloned().collect()
    }

    /// Every topic with at least one partition, ascending, the broker's own (`__` names)
    /// included.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .logs
            .read()
            .keys()
            .map(|tp| tp.topic().to_string())
            .collect();
        // Keys are ordered by topic first, so equal names are adjacent.
        topics.dedup();
        topics
    }

    /// The partitions of `topic`, ascending.
    pub fn of_topic(&self, topic: &str) -> Vec<TopicPartition> {
        self.logs
            .read()
            .keys()
            .filter(|tp| tp.topic() == topic)
            .cloned()
            .collect()
    }

    /// Makes everything appended to `tp` durable (nothing to do under `EveryAppend`).
    pub fn make_durable(&self, tp: &TopicPartition) -> Result<()> {
        flush_unless_synced(&*self.get(tp)?)
    }

    /// Takes every log out, for a close or a crash. The map is empty afterwards.
    pub(super) fn take_all(&self) -> Vec<(TopicPartition, Arc<Log>)> {
        std::mem::take(&mut *self.logs.write())
            .into_iter()
            .collect()
    }
}

/// A marker is durable in its partition before `write_marker` returns, whatever the partition's
/// sync mode: the coordinator records a transaction complete only after every marker, and a
/// marker lost after that (an `Os`-mode log cut by power loss) would leave the transaction open
/// in that partition with no one left to end it.
impl MarkerSink for Partitions {
    fn write_marker(&self, partition: &TopicPartition, marker: &Marker) -> Result<()> {
        let log = self.get(partition)?;
        log.append_marker(marker)?;
        flush_unless_synced(&log)
    }
}

/// Makes everything appended to `log` durable; a log that syncs every append already is.
fn flush_unless_synced(log: &Log) -> Result<()> {
    if log.config().sync == SyncMode::EveryAppend {
        return Ok(());
    }
    log.flush()
}
