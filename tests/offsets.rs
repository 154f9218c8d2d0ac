//! The consumer-offsets store on a real `Log`: plain commits, offsets inside transactions
//! (markers written with `Log::append_marker` and a bumped epoch, as the coordinator does),
//! replay after clean close, crash and power loss, and compaction by rewrite, with an open
//! transaction spanning it and a crash at every storage operation of it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::sim::{crash, dir, sim_config, Rng};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::offsets::{
    CompactionPolicy, MetadataTooLarge, OffsetAndMetadata, OffsetKey, OffsetStore, OffsetValue,
    MAX_METADATA_LEN, OFFSETS_TOPIC,
};
use oncelog::{
    BatchBuilder, Error, Log, LogConfig, ManualClock, Marker, MarkerKind, Offset, ProducerEpoch,
    ProducerId, SyncMode, TopicPartition,
};

fn tp(p: u32) -> TopicPartition {
    TopicPartition::new("orders", p).unwrap()
}

fn config() -> LogConfig {
    LogConfig::for_tests().with_clock(Arc::new(ManualClock::new(1_000_000)))
}

fn open(dir: &Path, cfg: &LogConfig) -> (Arc<Log>, OffsetStore) {
    let log = Arc::new(Log::open(dir, cfg.clone()).unwrap());
    let store = OffsetStore::new(Arc::clone(&log)).unwrap();
    (log, store)
}

/// The store is dropped first: it holds the log.
fn unwrap_log(log: Arc<Log>, store: OffsetStore) -> Log {
    drop(store);
    Arc::try_unwrap(log).expect("the store was the log's only other holder")
}

/// A transactional producer on the offsets log: its epoch and next sequence.
struct TxnProducer {
    pid: ProducerId,
    epoch: ProducerEpoch,
    seq: i32,
}

impl TxnProducer {
    fn new(log: &Log) -> TxnProducer {
        let (pid, epoch) = log.init_producer().unwrap();
        TxnProducer { pid, epoch, seq: 0 }
    }

    /// Appends `offsets` for `group` inside the producer's transaction; returns its offset.
    fn send(&mut self, store: &OffsetStore, group: &str, offsets: &[(TopicPartition, u64)]) -> u64 {
        let offsets: Vec<_> = offsets
            .iter()
            .map(|(t, o)| (t.clone(), Offset(*o)))
            .collect();
        let b = store
            .txn_offsets_batch(group, &offsets, self.pid, self.epoch, self.seq)
            .unwrap();
        self.seq += b.record_count() as i32;
        store.log().append(&b).unwrap().base_offset.0
    }

    /// The coordinator's decision: a marker with the next epoch; the next transaction uses it.
    fn end(&mut self, log: &Log, kind: MarkerKind) {
        self.epoch += 1;
        self.seq = 0;
        let m = Marker {
            producer_id: self.pid,
            producer_epoch: self.epoch,
            coordinator_epoch: 0,
            kind,
        };
        log.append_marker(&m).unwrap();
    }
}

fn commit(store: &OffsetStore, group: &str, offsets: &[(TopicPartition, u64)]) {
    let offsets: Vec<_> = offsets
        .iter()
        .map(|(t, o)| (t.clone(), Offset(*o)))
        .collect();
    store.commit_offsets(group, &offsets).unwrap();
}

fn fetch(store: &OffsetStore, group: &str, t: &TopicPartition) -> Option<u64> {
    store.fetch_committed(group, t).unwrap().map(|o| o.0)
}

/// Everything the store answers: every committed offset by group, and the pending producers.
type View = (
    BTreeMap<String, BTreeMap<TopicPartition, u64>>,
    Vec<ProducerId>,
);

fn view(store: &OffsetStore) -> View {
    let state = store.state().unwrap();
    state.check_invariants();
    let mut groups: BTreeMap<String, BTreeMap<TopicPartition, u64>> = BTreeMap::new();
    for (g, t, c) in state.live() {
        groups
            .entry(g.to_string())
            .or_default()
            .insert(t.clone(), c.offset);
    }
    for (g, m) in &groups {
        let answered: BTreeMap<TopicPartition, u64> = store
            .committed_offsets(g)
            .unwrap()
            .into_iter()
            .map(|(t, o)| (t, o.0))
            .collect();
        assert_eq!(&answered, m, "committed_offsets({g}) and the state agree");
    }
    (groups, state.pending_producers())
}

#[test]
fn a_plain_commit_is_visible_at_once_and_survives_close_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let (log, store) = open(dir.path(), &cfg);
    assert_eq!(OFFSETS_TOPIC, "__consumer_offsets");
    assert_eq!(fetch(&store, "g", &tp(0)), None);
    commit(&store, "g", &[(tp(0), 10), (tp(1), 20)]);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(10));
    commit(&store, "g", &[(tp(0), 11)]);
    let want = BTreeMap::from([(tp(0), Offset(11)), (tp(1), Offset(20))]);
    assert_eq!(store.committed_offsets("g").unwrap(), want);
    unwrap_log(log, store).close().unwrap();

    let (log, store) = open(dir.path(), &cfg);
    assert_eq!(store.committed_offsets("g").unwrap(), want);
    commit(&store, "g", &[(tp(1), 21)]);
    unwrap_log(log, store).simulate_crash();

    let (_log, store) = open(dir.path(), &cfg);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(11));
    assert_eq!(fetch(&store, "g", &tp(1)), Some(21));
}

/// With `SyncMode::EveryAppend` a commit that returned is durable: it survives power loss.
#[test]
fn an_acknowledged_commit_survives_power_loss_with_every_append() {
    for seed in 0..20 {
        let sim = SimStorage::new(seed);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut cfg = sim_config(&sim, &clock);
        cfg.sync = SyncMode::EveryAppend;
        let (log, store) = open(&dir(), &cfg);
        for i in 0..20 {
            commit(&store, "g", &[(tp(i % 3), u64::from(i))]);
        }
        let before = view(&store);
        crash(unwrap_log(log, store), &sim, CrashMode::PowerLoss, seed);
        let (_log, store) = open(&dir(), &cfg);
        assert_eq!(view(&store), before, "seed {seed}");
    }
}

#[test]
fn transactional_offsets_are_invisible_until_commit_and_never_after_abort() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let (log, store) = open(dir.path(), &cfg);
    let mut p = TxnProducer::new(&log);
    commit(&store, "g", &[(tp(0), 5)]);

    p.send(&store, "g", &[(tp(0), 7), (tp(1), 8)]);
    p.send(&store, "g", &[(tp(1), 9)]);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(5), "not before the marker");
    assert_eq!(fetch(&store, "g", &tp(1)), None);
    assert_eq!(store.pending_producers().unwrap(), vec![p.pid]);
    p.end(&log, MarkerKind::Commit);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(7));
    assert_eq!(
        fetch(&store, "g", &tp(1)),
        Some(9),
        "latest pending record wins"
    );
    assert!(store.pending_producers().unwrap().is_empty());

    p.send(&store, "g", &[(tp(0), 100)]);
    p.end(&log, MarkerKind::Abort);
    assert_eq!(
        fetch(&store, "g", &tp(0)),
        Some(7),
        "aborted: never visible"
    );

    let before = view(&store);
    unwrap_log(log, store).close().unwrap();
    let (log, store) = open(dir.path(), &cfg);
    assert_eq!(view(&store), before, "the same after replay");
    unwrap_log(log, store).simulate_crash();
    let (_log, store) = open(dir.path(), &cfg);
    assert_eq!(view(&store), before, "the same after a crash");
    assert_eq!(fetch(&store, "g", &tp(0)), Some(7));
}

#[test]
fn a_committed_transaction_wins_over_a_plain_commit_before_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open(dir.path(), &config());
    let mut p = TxnProducer::new(&log);
    commit(&store, "g", &[(tp(0), 1)]);
    p.send(&store, "g", &[(tp(0), 2)]);
    commit(&store, "g", &[(tp(0), 3)]);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(3));
    p.end(&log, MarkerKind::Commit);
    assert_eq!(
        fetch(&store, "g", &tp(0)),
        Some(2),
        "the decision comes later in the log"
    );
    commit(&store, "g", &[(tp(0), 4)]);
    assert_eq!(fetch(&store, "g", &tp(0)), Some(4));
}

#[test]
fn groups_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open(dir.path(), &config());
    let mut p = TxnProducer::new(&log);
    commit(&store, "a", &[(tp(0), 1)]);
    p.send(&store, "b", &[(tp(0), 2)]);
    commit(&store, "b", &[(tp(1), 3)]);
    p.end(&log, MarkerKind::Commit);
    assert_eq!(fetch(&store, "a", &tp(0)), Some(1));
    assert_eq!(fetch(&store, "a", &tp(1)), None);
    assert_eq!(
        store.committed_offsets("b").unwrap(),
        BTreeMap::from([(tp(0), Offset(2)), (tp(1), Offset(3))])
    );
    assert!(store.committed_offsets("c").unwrap().is_empty());
}

#[test]
fn transactional_offsets_follow_the_logs_transaction_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open(dir.path(), &config());
    let mut p = TxnProducer::new(&log);
    let offsets = [(tp(0), Offset(1))];
    p.send(&store, "g", &[(tp(0), 1)]);
    // A sequence gap is refused by the log, like any idempotent batch.
    let gap = store
        .txn_offsets_batch("g", &offsets, p.pid, p.epoch, p.seq + 5)
        .unwrap();
    assert!(matches!(
        log.append(&gap),
        Err(Error::OutOfOrderSequence { .. })
    ));
    let old_epoch = p.epoch;
    p.end(&log, MarkerKind::Abort);
    // A late batch of the finished transaction is fenced and never becomes pending.
    let late = store
        .txn_offsets_batch("g", &offsets, p.pid, old_epoch, 1)
        .unwrap();
    assert!(matches!(
        log.append(&late),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(store.pending_producers().unwrap().is_empty());
    assert_eq!(fetch(&store, "g", &tp(0)), None);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open(dir.path(), &config());
    let one = [(tp(0), Offset(1))];
    for group in [String::new(), "x".repeat(256)] {
        assert!(matches!(
            store.commit_offsets(&group, &one),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            store.fetch_committed(&group, &tp(0)),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            store.txn_offsets_batch(&group, &one, ProducerId(0), 0, 0),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        store.txn_offsets_batch("g", &[], ProducerId(0), 0, 0),
        Err(Error::InvalidConfig(_))
    ));
    store.commit_offsets("g", &[]).unwrap();
    assert_eq!(
        log.log_end_offset(),
        Offset(0),
        "an empty commit writes nothing"
    );
    // Too many offsets for one batch: refused whole, nothing written.
    let many: Vec<_> = (0..200).map(|p| (tp(p), Offset(1))).collect();
    assert!(matches!(
        store.commit_offsets("g", &many),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), Offset(0));
    drop(store);

    let retained = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(1000),
        ..config()
    };
    let log = Arc::new(Log::open(retained.path(), cfg).unwrap());
    assert!(matches!(
        OffsetStore::new(log),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn a_batch_that_is_not_an_offsets_batch_is_reported_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let (log, store) = open(dir.path(), &cfg);
    commit(&store, "g", &[(tp(0), 1)]);
    log.append(&common::batch(1, 1, 10)).unwrap();
    assert!(matches!(
        store.fetch_committed("g", &tp(0)),
        Err(Error::CorruptFile { .. })
    ));
    unwrap_log(log, store).close().unwrap();
    let log = Arc::new(Log::open(dir.path(), cfg).unwrap());
    match OffsetStore::new(log) {
        Err(Error::CorruptFile { reason, .. }) => assert!(reason.contains("offset 1"), "{reason}"),
        other => panic!("expected CorruptFile, got {other:?}"),
    }
}

// ---- Compaction ----

/// `n` rounds of commits to 4 groups x 4 partitions.
fn churn(store: &OffsetStore, rng: &mut Rng, n: u64) {
    for _ in 0..n {
        let group = format!("group-{}", rng.below(4));
        let offsets: Vec<_> = (0..1 + rng.below(4))
            .map(|_| (tp(rng.below(4) as u32), rng.below(1_000_000)))
            .collect();
        commit(store, &group, &offsets);
    }
}

#[test]
fn compaction_keeps_every_committed_offset_and_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    let policy = CompactionPolicy {
        min_dirty_bytes: 8 << 10,
    };
    let store = OffsetStore::with_policy(Arc::clone(&log), policy).unwrap();
    let mut rng = Rng::new(1);
    churn(&store, &mut rng, 1000);
    let before = view(&store);
    assert!(
        log.log_start_offset() > Offset(0),
        "the store compacted by itself"
    );
    // Bounded: the live set is small, so the log stays a few segments long.
    assert!(
        log.segments().len() <= 8,
        "{} segments",
        log.segments().len()
    );
    let outcome = store.compact().unwrap();
    assert_eq!(outcome.log_start, outcome.as_of, "nothing pinned the start");
    assert_eq!(outcome.records, 16);
    assert_eq!(view(&store), before);

    unwrap_log(log, store).close().unwrap();
    let (log, store) = open(dir.path(), &cfg);
    assert_eq!(view(&store), before, "replay of the compacted log");
    assert_eq!(log.log_start_offset(), outcome.log_start);
}

#[test]
fn an_open_transaction_spanning_a_rewrite_keeps_its_offsets() {
    for kind in [MarkerKind::Commit, MarkerKind::Abort] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let (log, store) = open(dir.path(), &cfg);
        let mut rng = Rng::new(2);
        let mut p = TxnProducer::new(&log);
        churn(&store, &mut rng, 50);
        let first = p.send(&store, "txn-group", &[(tp(0), 111)]);
        churn(&store, &mut rng, 50);
        p.send(&store, "group-0", &[(tp(0), 222)]);
        churn(&store, &mut rng, 50);

        let outcome = store.compact().unwrap();
        assert!(outcome.as_of.0 > first);
        assert_eq!(
            outcome.log_start,
            Offset(first),
            "pinned by the open transaction"
        );
        assert!(outcome.segments_deleted > 0);
        assert_eq!(fetch(&store, "txn-group", &tp(0)), None);

        // The transaction survives a restart across the rewrite, then is decided.
        let before = view(&store);
        unwrap_log(log, store).simulate_crash();
        let (log, store) = open(dir.path(), &cfg);
        assert_eq!(view(&store), before);
        assert_eq!(store.pending_producers().unwrap(), vec![p.pid]);
        let plain = fetch(&store, "group-0", &tp(0));
        p.end(&log, kind);
        let (txn, g0) = match kind {
            MarkerKind::Commit => (Some(111), Some(222)),
            MarkerKind::Abort => (None, plain),
        };
        assert_eq!(fetch(&store, "txn-group", &tp(0)), txn, "{kind:?}");
        assert_eq!(fetch(&store, "group-0", &tp(0)), g0, "{kind:?}");

        // Decided, it no longer pins the start.
        let after = view(&store);
        let outcome = store.compact().unwrap();
        assert_eq!(outcome.log_start, outcome.as_of);
        unwrap_log(log, store).close().unwrap();
        let (_log, store) = open(dir.path(), &cfg);
        assert_eq!(view(&store), after, "{kind:?}");
    }
}

/// A workload with an open transaction, flushed, then a compaction on a disk frozen after
/// `freeze_at` storage operations. Returns the store's view before the compaction and the
/// operations the compaction performed.
fn frozen_compaction(
    seed: u64,
    sync: SyncMode,
    freeze_at: Option<u64>,
) -> (
    SimStorage,
    LogConfig,
    Arc<Log>,
    OffsetStore,
    View,
    TxnProducer,
    u64,
) {
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut cfg = sim_config(&sim, &clock);
    cfg.sync = sync;
    let log = Arc::new(Log::open(dir(), cfg.clone()).unwrap());
    let policy = CompactionPolicy {
        min_dirty_bytes: u64::MAX,
    };
    let store = OffsetStore::with_policy(Arc::clone(&log), policy).unwrap();
    let mut rng = Rng::new(seed);
    let mut p = TxnProducer::new(&log);
    let mut q = TxnProducer::new(&log);
    churn(&store, &mut rng, 30);
    q.send(&store, "group-1", &[(tp(1), 7)]);
    churn(&store, &mut rng, 30);
    p.send(&store, "group-2", &[(tp(2), 9)]);
    q.end(&log, MarkerKind::Commit);
    churn(&store, &mut rng, 30);
    log.flush().unwrap();
    let before = view(&store);
    let start_ops = sim.op_count();
    if let Some(k) = freeze_at {
        sim.fail_after(k, FaultKind::Eio, true);
    }
    let _ = store.compact();
    let ops = sim.op_count() - start_ops;
    (sim, cfg, log, store, before, p, ops)
}

/// A crash at every storage operation of a compaction (power loss or process kill) reopens to
/// the state before it, under both sync modes: the rewrite is made durable before any segment
/// it replaces is deleted (with `Os`, only the compaction's own flush makes it so), and the
/// transaction open across it keeps its offsets.
#[test]
fn a_crash_at_every_step_of_a_compaction_replays_to_the_same_state() {
    let mut states = 0;
    let modes = [SyncMode::EveryAppend, SyncMode::Os];
    for (seed, sync) in common::sim::seeds(0..60)
        .into_iter()
        .zip(modes.iter().cycle())
    {
        let sync = *sync;
        let (_, _, log, store, _, _, total) = frozen_compaction(seed, sync, None);
        assert!(total > 5, "seed {seed}: the compaction did storage work");
        unwrap_log(log, store).simulate_crash();
        for k in 0..=total {
            let (sim, cfg, log, store, before, mut p, _) = frozen_compaction(seed, sync, Some(k));
            let mode = if k % 3 == 2 {
                CrashMode::Process
            } else {
                CrashMode::PowerLoss
            };
            crash(unwrap_log(log, store), &sim, mode, seed ^ (k << 16));
            let ctx = format!("seed {seed} {sync:?} freeze at op {k} of {total}, {mode:?}");
            let log = Arc::new(
                Log::open(dir(), cfg.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}")),
            );
            let store = OffsetStore::new(Arc::clone(&log)).unwrap();
            assert_eq!(view(&store), before, "{ctx}");
            p.end(&log, MarkerKind::Commit);
            assert_eq!(fetch(&store, "group-2", &tp(2)), Some(9), "{ctx}");
            states += 1;
        }
    }
    eprintln!("compaction crash sweep: {states} crash states");
}

/// Transactions appended and decided by another thread while the store commits and compacts:
/// a marker may land between the snapshot a rewrite copies and the rewrite itself. After its
/// COMMIT the producer always reads back exactly its offsets (a rewrite never reverts them),
/// an aborted transaction's never; at the end the store agrees with a fresh replay of the
/// log, before and after a restart.
#[test]
fn compactions_racing_transactions_never_revert_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    let policy = CompactionPolicy {
        min_dirty_bytes: 1 << 10,
    };
    let store = Arc::new(OffsetStore::with_policy(Arc::clone(&log), policy).unwrap());
    let txns = {
        let (log, store) = (Arc::clone(&log), Arc::clone(&store));
        std::thread::spawn(move || {
            let mut p = TxnProducer::new(&log);
            let mut committed = None;
            for i in 0..400u64 {
                p.send(&store, "txn", &[(tp(0), i), (tp(1), i)]);
                let kind = if i % 3 == 0 {
                    MarkerKind::Abort
                } else {
                    MarkerKind::Commit
                };
                p.end(&log, kind);
                if kind == MarkerKind::Commit {
                    committed = Some(i);
                }
                for t in [tp(0), tp(1)] {
                    assert_eq!(
                        fetch(&store, "txn", &t),
                        committed,
                        "after txn {i} ({kind:?})"
                    );
                }
            }
            committed
        })
    };
    // Commit and compact for as long as the transactions run (and at least 200 times).
    let (mut compactions, mut j) = (0, 0u64);
    let mut plain = BTreeMap::new();
    while j < 200 || !txns.is_finished() {
        let t = tp((j % 4) as u32);
        commit(&store, "plain", &[(t.clone(), j)]);
        plain.insert(t, Offset(j));
        if j % 4 == 0 {
            store.compact().unwrap();
            compactions += 1;
        }
        j += 1;
    }
    let last = txns.join().unwrap();
    assert_eq!(last, Some(398));
    assert_eq!(fetch(&store, "txn", &tp(0)), last);
    assert_eq!(store.committed_offsets("plain").unwrap(), plain);
    assert!(compactions >= 50 && log.log_start_offset() > Offset(0));
    let replayed = OffsetStore::new(Arc::clone(&log)).unwrap();
    let now = view(&store);
    assert_eq!(view(&replayed), now);
    drop(replayed);
    let store = Arc::try_unwrap(store).unwrap();
    unwrap_log(log, store).close().unwrap();
    let (_log, store) = open(dir.path(), &cfg);
    assert_eq!(view(&store), now);
}

fn with_meta(o: u64, m: &str) -> OffsetAndMetadata {
    OffsetAndMetadata::with_metadata(Offset(o), m).unwrap()
}

/// Kafka's metadata strings: kept with plain and transactional commits, answered by the
/// fetches, surviving a clean close, a crash and a compaction (the rewrite copies them); a
/// version 0 value an older build wrote replays with an empty string; a string above 4096
/// bytes is a typed error before anything is written.
#[test]
fn metadata_survives_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // Room for a record with a 4 KiB string.
    let cfg = LogConfig {
        max_batch_bytes: 1 << 16,
        segment_bytes: 1 << 16,
        ..config()
    };
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    // Version 0, as builds before the metadata string wrote it: no metadata length.
    let key = oncelog::offsets::record::encode_key(&OffsetKey::new("old", tp(3)).unwrap());
    let mut v0 = oncelog::offsets::record::encode_value(&OffsetValue::commit(33, 1));
    v0[..2].copy_from_slice(&0u16.to_le_bytes());
    v0.truncate(v0.len() - 2);
    let mut b = BatchBuilder::new();
    b.push(1, Some(&key), Some(&v0));
    log.append(&b.build().unwrap()).unwrap();
    let store = OffsetStore::new(Arc::clone(&log)).unwrap();

    let big = "é".repeat(2048);
    store
        .commit_offsets_with_metadata(
            "g",
            &[
                (tp(0), with_meta(10, "plain")),
                (tp(1), with_meta(20, &big)),
            ],
        )
        .unwrap();
    let mut p = TxnProducer::new(&log);
    let b = store
        .txn_offsets_batch_with_metadata(
            "g",
            &[(tp(2), with_meta(30, "in a txn"))],
            p.pid,
            p.epoch,
            0,
        )
        .unwrap();
    log.append(&b).unwrap();
    assert_eq!(
        store.fetch_committed_with_metadata("g", &tp(2)).unwrap(),
        None
    );
    p.end(&log, MarkerKind::Commit);
    // A later commit without metadata clears it, as in Kafka.
    commit(&store, "g", &[(tp(0), 11)]);

    let want = BTreeMap::from([
        (tp(0), OffsetAndMetadata::new(Offset(11))),
        (tp(1), with_meta(20, &big)),
        (tp(2), with_meta(30, "in a txn")),
    ]);
    let old = BTreeMap::from([(tp(3), OffsetAndMetadata::new(Offset(33)))]);
    let check = |store: &OffsetStore, when: &str| {
        assert_eq!(
            store.committed_offsets_with_metadata("g").unwrap(),
            want,
            "{when}"
        );
        assert_eq!(
            store.committed_offsets_with_metadata("old").unwrap(),
            old,
            "{when}"
        );
        assert_eq!(
            store.fetch_committed_with_metadata("g", &tp(1)).unwrap(),
            Some(with_meta(20, &big)),
            "{when}"
        );
        let state = store.state().unwrap();
        state.check_invariants();
    };
    check(&store, "at once");

    // Over the limit: a typed error, and nothing changes.
    let too_big = OffsetAndMetadata::with_metadata(Offset(1), "m".repeat(MAX_METADATA_LEN + 1));
    assert_eq!(
        too_big,
        Err(MetadataTooLarge {
            len: MAX_METADATA_LEN + 1,
            max: MAX_METADATA_LEN
        })
    );
    check(&store, "after the refused commit");

    unwrap_log(log, store).close().unwrap();
    let (log, store) = open(dir.path(), &cfg);
    check(&store, "after close");
    let outcome = store.compact().unwrap();
    assert_eq!(outcome.records, 4, "every live offset rewritten");
    assert!(
        log.log_start_offset() > Offset(0),
        "the old records are gone"
    );
    check(&store, "after compaction");
    unwrap_log(log, store).simulate_crash();
    let (log, store) = open(dir.path(), &cfg);
    check(&store, "after a crash, replaying the compacted log");
    assert_eq!(log.log_start_offset(), outcome.log_start);
}
