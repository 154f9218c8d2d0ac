//! Deleting a topic from a broker's data directory, crash-safe.
//!
//! One durable step decides the deletion; the others only finish it, and finishing is
//! idempotent, so a crash anywhere leaves either the whole topic or none of it after the next
//! open, and never touches another topic:
//!
//! 1. The intent file `DELETE-<topic>` is created in the data directory and the directory is
//!    synced. From here on the topic is deleted: an open that finds the file finishes step 2
//!    before it opens any partition and steps 3 and 4 once the offsets log is open, and no
//!    partition of that topic can be created while the file exists.
//! 2. Each partition of the topic is closed, its files are removed, then its directory; the
//!    data directory is synced.
//! 3. Every group's committed offset of the topic is deleted from the consumer-offsets log
//!    (`OffsetStore::delete_topic_offsets`, by the broker), so a topic created again under the
//!    name starts with no committed offsets, as in Kafka.
//! 4. The intent file is removed and the data directory synced. Only then may a partition of
//!    the same name be created again (a new, empty topic).
//!
//! A crash before step 1 is durable leaves the topic whole. Partition logs are flat
//! directories (no subdirectories), so step 2 is a list, removes and one rmdir each.

use std::io;
use std::path::{Path, PathBuf};

use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::io::{OpenMode, Storage};

/// The name prefix of an intent file (`DELETE-<topic>`) in a broker's data directory.
pub const INTENT_PREFIX: &str = "DELETE-";

/// The intent file of `topic` under `dir`.
pub(super) fn intent_path(dir: &Path, topic: &str) -> PathBuf {
    dir.join(format!("{INTENT_PREFIX}{topic}"))
}

/// Step 1: makes the deletion of `topic` durable (the commit point).
pub(super) fn write_intent(storage: &dyn Storage, dir: &Path, topic: &str) -> Result<()> {
    let path = intent_path(dir, topic);
    storage
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &path, e))?;
    if let Err(e) = storage.sync_dir(dir) {
        // Not decided: the topic stays. Best effort, so that this process and the next open
        // agree (a power loss may still keep the file; then the next open deletes the topic).
        let _ = storage.remove(&path);
        return Err(Error::io("sync_dir", dir, e));
    }
    Ok(())
}

/// Step 2 for `topic`, whose logs are already closed: removes every partition directory of
/// the topic under `dir`. Idempotent (a partition already gone is skipped), so it also
/// finishes a deletion a crash interrupted.
pub(super) fn remove_partitions(storage: &dyn Storage, dir: &Path, topic: &str) -> Result<()> {
    let names = storage
        .list_dirs(dir)
        .map_err(|e| Error::io("list_dirs", dir, e))?;
    for name in names {
        if TopicPartition::parse_dir_name(&name).is_some_and(|tp| tp.topic() == topic) {
            remove_flat_dir(storage, &dir.join(&name))?;
        }
    }
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("sync_dir", dir, e))
}

/// Step 4: removes the intent file of `topic` (already gone: nothing to do).
pub(super) fn remove_intent(storage: &dyn Storage, dir: &Path, topic: &str) -> Result<()> {
    let intent = intent_path(dir, topic);
    match storage.remove(&intent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &intent, e)),
    }
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("sync_dir", dir, e))
}

/// The topics whose deletion an intent file in `dir` records, ascending.
pub(super) fn pending(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>> {
    let mut topics: Vec<String> = storage
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .into_iter()
        .filter_map(|name| name.strip_prefix(INTENT_PREFIX).map(str::to_owned))
        .collect();
    topics.sort();
    Ok(topics)
}

/// Step 2 of every deletion an intent file in `dir` records (at open, before any partition
/// log opens); returns those topics. Their intent files stay until the broker has done steps
/// 3 and 4.
pub(super) fn finish_pending(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>> {
    let topics = pending(storage, dir)?;
    for topic in &topics {
        tracing::info!("broker: finishing the deletion of topic {topic:?} an earlier run began");
        remove_partitions(storage, dir, topic)?;
    }
    Ok(topics)
}

/// Removes the files of `dir`, then `dir` itself; nothing to do if it is gone.
fn remove_flat_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let files = match storage.list(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for name in files {
        let path = dir.join(name);
        match storage.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    match storage.remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove_dir", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::broker::{Broker, BrokerConfig, TopicPartition};
    use crate::clock::ManualClock;
    use crate::config::{LogConfig, SyncMode};
    use crate::format::batch::BatchBuilder;
    use crate::io::sim::{CrashMode, FaultKind, SimStorage};
    use crate::io::Storage;
    use crate::types::Offset;

    const DIR: &str = "/sim/broker";

    fn config(sim: &SimStorage) -> BrokerConfig {
        let log = LogConfig {
            sync: SyncMode::EveryAppend,
            background_thread: false,
            ..LogConfig::for_tests()
        }
        .with_storage(Arc::new(sim.clone()))
        .with_clock(Arc::new(ManualClock::new(1_000_000)));
        BrokerConfig {
            log,
            internal_segment_bytes: 16 << 10,
            ..BrokerConfig::default()
        }
    }

    /// The values stored in every partition of `topic`, by partition.
    fn contents(broker: &Broker, topic: &str) -> Vec<Vec<Vec<u8>>> {
        broker
            .partitions()
            .of_topic(topic)
            .iter()
            .map(|tp| {
                let log = broker.partition(tp).unwrap();
                let fetch = log.read(log.log_start_offset(), 1 << 20).unwrap();
                fetch
                    .batches()
                    .flat_map(|b| {
                        let b = b.unwrap();
                        b.records()
                            .map(|r| r.unwrap().value.unwrap_or_default().to_vec())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect()
    }

    /// Topic `a` (3 partitions) and `b` (2), one record `<topic>-<partition>` in each, and
    /// group `g`'s committed offset 1 for each.
    fn fill(broker: &Broker) {
        for (topic, n) in [("a", 3), ("b", 2)] {
            let tps = broker.create_topic(topic, n).unwrap();
            for tp in &tps {
                let mut batch = BatchBuilder::new();
                batch.push(1, None, Some(tp.to_string().as_bytes()));
                broker
                    .partition(tp)
                    .unwrap()
                    .append(&batch.build().unwrap())
                    .unwrap();
            }
            let offsets: Vec<_> = tps.into_iter().map(|tp| (tp, Offset(1))).collect();
            broker.offsets().commit_offsets("g", &offsets).unwrap();
        }
    }

    /// Group `g`'s committed offsets of `topic`'s first `n` partitions.
    fn committed(broker: &Broker, topic: &str, n: u32) -> Vec<Option<Offset>> {
        (0..n)
            .map(|p| {
                let tp = TopicPartition::new(topic, p).unwrap();
                broker.offsets().fetch_committed("g", &tp).unwrap()
            })
            .collect()
    }

    fn expected(topic: &str, n: u32) -> Vec<Vec<Vec<u8>>> {
        (0..n)
            .map(|p| {
                vec![TopicPartition::new(topic, p)
                    .unwrap()
                    .to_string()
                    .into_bytes()]
            })
            .collect()
    }

    /// A deletion cut by a crash at every mutating storage operation, by a process crash or
    /// a power loss: after the reopen topic `a` is either whole (all 3 partitions, their
    /// records) or gone (no partition, no intent file), and topic `b` is untouched. Every
    /// cut after the intent is durable reopens with `a` gone.
    #[test]
    fn a_crash_at_any_step_leaves_the_topic_whole_or_gone_and_others_untouched() {
        let dry = SimStorage::new(1);
        let broker = Broker::open(DIR, config(&dry)).unwrap();
        fill(&broker);
        let before = dry.op_count();
        assert_eq!(broker.delete_topic("a").unwrap().len(), 3);
        let total = dry.op_count() - before;
        assert!(total >= 8, "the deletion is several operations ({total})");
        broker.close().unwrap();

        let (mut whole, mut gone) = (0, 0);
        for k in 0..=total {
            for (mode, seed) in [(CrashMode::Process, k), (CrashMode::PowerLoss, k ^ 0x5eed)] {
                let ctx = format!("cut at op {k} of {total}, {mode:?}");
                let sim = SimStorage::new(seed);
                let broker = Broker::open(DIR, config(&sim)).unwrap();
                fill(&broker);
                sim.fail_after(k, FaultKind::Eio, true);
                let outcome = broker.delete_topic("a");
                assert_eq!(outcome.is_ok(), k == total, "{ctx}: {outcome:?}");
                broker.simulate_crash();
                sim.crash_with_seed(mode, seed);

                let broker = Broker::open(DIR, config(&sim))
                    .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
                assert_eq!(contents(&broker, "b"), expected("b", 2), "{ctx}");
                assert_eq!(committed(&broker, "b", 2), [Some(Offset(1)); 2], "{ctx}");
                let a = contents(&broker, "a");
                if a.is_empty() {
                    gone += 1;
                    // Its committed offsets went with it.
                    assert_eq!(committed(&broker, "a", 3), [None; 3], "{ctx}");
                    // The deletion was decided: nothing of it is left on disk.
                    let dirs = sim.list_dirs(Path::new(DIR)).unwrap();
                    assert!(!dirs.iter().any(|d| d.starts_with("a-")), "{ctx}: {dirs:?}");
                } else {
                    whole += 1;
                    assert_eq!(a, expected("a", 3), "{ctx}: a half-deleted topic");
                    assert_eq!(committed(&broker, "a", 3), [Some(Offset(1)); 3], "{ctx}");
                    // Op 0 creates the intent file, op 1 syncs the directory.
                    assert!(k <= 1, "{ctx}: the intent was durable, yet a came back");
                }
                let files = sim.list(Path::new(DIR)).unwrap();
                assert!(
                    !files.iter().any(|f| f.starts_with(super::INTENT_PREFIX)),
                    "{ctx}: {files:?}"
                );
                // The name is free again: a new, empty topic, without the old offsets.
                broker.create_topic("a", 1).unwrap();
                if a.is_empty() {
                    assert_eq!(committed(&broker, "a", 1), [None], "{ctx}");
                }
                broker.close().unwrap();
            }
        }
        assert!(
            whole >= 1 && gone >= 2 * total as usize - 1,
            "{whole} whole, {gone} gone"
        );
    }

    #[test]
    fn no_partition_of_a_topic_is_created_while_its_deletion_is_unfinished() {
        let sim = SimStorage::new(7);
        let broker = Broker::open(DIR, config(&sim)).unwrap();
        fill(&broker);
        // The intent is durable, then the removal fails (a disk error): the topic is gone now
        // and must stay gone, so recreating it waits for the reopen that finishes the deletion.
        // Ops 0 and 1 write the intent durably; every later one fails.
        sim.fail_after(2, FaultKind::Eio, true);
        broker.delete_topic("a").unwrap_err();
        assert!(broker.partitions().of_topic("a").is_empty());
        let refused = broker.create_topic("a", 1).unwrap_err().to_string();
        assert!(refused.contains("unfinished deletion"), "{refused}");
        assert_eq!(contents(&broker, "b"), expected("b", 2));
        sim.clear_fault();
        broker.close().unwrap();
        let broker = Broker::open(DIR, config(&sim)).unwrap();
        assert!(broker.partitions().of_topic("a").is_empty());
        broker.create_topic("a", 2).unwrap();
        assert_eq!(contents(&broker, "a"), vec![Vec::<Vec<u8>>::new(); 2]);
        broker.close().unwrap();
    }
}
