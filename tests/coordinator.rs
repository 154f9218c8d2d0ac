//! The transaction coordinator through its public API, with real `Log`s as partitions (on the
//! simulated, crashable disk) behind a small `MarkerSink`, and a manual clock.
//!
//! Visibility (commit on every partition, abort on none), fencing of an older instance, crash
//! recovery between the decision and its markers, timeouts, epoch exhaustion, idempotent
//! retries, the state log's rewrite (and a crash at every storage step of one), and a crash at
//! every storage step of a commit: never half a transaction.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oncelog::coordinator::{MarkerSink, TxnCoordinator, TxnMetadata, TxnRecord, TxnState};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::{
    BatchBuilder, Error, Log, LogConfig, ManualClock, Marker, MarkerKind, Offset, ProducerEpoch,
    ProducerId, SyncMode, TopicPartition,
};
use parking_lot::Mutex;

const COORD_DIR: &str = "/sim/coordinator";
const TID: &str = "orders-app";
const TIMEOUT: Duration = Duration::from_secs(10);

fn tp(topic: &str, p: u32) -> TopicPartition {
    TopicPartition::new(topic, p).unwrap()
}

/// Partition logs by name, writing markers; `fail_after` markers succeed before every later
/// one fails (`None`: all succeed).
struct Partitions {
    logs: Mutex<BTreeMap<TopicPartition, Log>>,
    fail_after: Mutex<Option<usize>>,
    written: Mutex<Vec<(TopicPartition, Marker)>>,
}

impl MarkerSink for Partitions {
    fn write_marker(&self, partition: &TopicPartition, marker: &Marker) -> oncelog::Result<()> {
        if let Some(left) = self.fail_after.lock().as_mut() {
            if *left == 0 {
                return Err(Error::Timeout);
            }
            *left -= 1;
        }
        let logs = self.logs.lock();
        logs.get(partition).unwrap().append_marker(marker)?;
        self.written.lock().push((partition.clone(), *marker));
        Ok(())
    }
}

/// A simulated disk with a coordinator and partitions `a-0`, `b-0`, all on one manual clock.
struct World {
    sim: SimStorage,
    clock: Arc<ManualClock>,
    parts: Partitions,
    names: Vec<TopicPartition>,
}

impl World {
    fn new(seed: u64) -> World {
        let w = World {
            sim: SimStorage::new(seed),
            clock: Arc::new(ManualClock::new(1_000_000)),
            parts: Partitions {
                logs: Mutex::new(BTreeMap::new()),
                fail_after: Mutex::new(None),
                written: Mutex::new(Vec::new()),
            },
            names: vec![tp("a", 0), tp("b", 0)],
        };
        w.open_partitions();
        w
    }

    fn config(&self) -> LogConfig {
        let mut c = LogConfig::for_tests()
            .with_storage(Arc::new(self.sim.clone()))
            .with_clock(self.clock.clone());
        c.sync = SyncMode::EveryAppend;
        c.background_thread = false;
        c
    }

    fn open_partitions(&self) {
        let mut logs = self.parts.logs.lock();
        for name in &self.names {
            let dir = PathBuf::from("/sim/partitions").join(name.dir_name());
            logs.insert(name.clone(), Log::open(dir, self.config()).unwrap());
        }
    }

    fn coordinator(&self) -> TxnCoordinator {
        TxnCoordinator::open(COORD_DIR.as_ref(), self.config(), &self.parts).unwrap()
    }

    fn log(&self, name: &TopicPartition) -> Log {
        self.parts.logs.lock().get(name).unwrap().clone()
    }

    /// A transactional batch of `values` on `name`.
    fn produce(
        &self,
        name: &TopicPartition,
        (pid, epoch): (ProducerId, ProducerEpoch),
        seq: i32,
        values: &[&str],
    ) -> oncelog::Result<()> {
        let mut b = BatchBuilder::new()
            .producer(pid, epoch, seq)
            .transactional();
        for v in values {
            b.push(0, None, Some(v.as_bytes()));
        }
        self.log(name).append(&b.build().unwrap()).map(|_| ())
    }

    /// The values a read_committed reader of `name` sees from offset 0.
    fn committed(&self, name: &TopicPartition) -> Vec<String> {
        let log = self.log(name);
        common::read_committed(&log, 0)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Every log crashes (process death), then the disk loses what `mode` takes.
    fn crash_all(&self, coord: TxnCoordinator, mode: CrashMode, seed: u64) {
        coord.simulate_crash();
        for (_, log) in std::mem::take(&mut *self.parts.logs.lock()) {
            log.simulate_crash();
        }
        self.sim.crash_with_seed(mode, seed);
        self.open_partitions();
    }

    fn markers_written(&self) -> usize {
        self.parts.written.lock().len()
    }
}

fn state(c: &TxnCoordinator) -> TxnState {
    c.describe(TID).unwrap().state
}

#[test]
fn a_commit_is_visible_on_every_partition_and_an_abort_on_none() {
    let w = World::new(1);
    let c = w.coordinator();
    let (a, b) = (&w.names[0], &w.names[1]);
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    assert_eq!(id.1, 0);
    c.add_partitions(TID, id.0, id.1, &w.names).unwrap();
    assert_eq!(state(&c), TxnState::Ongoing);
    w.produce(a, id, 0, &["a1", "a2"]).unwrap();
    w.produce(b, id, 0, &["b1"]).unwrap();
    assert!(w.committed(a).is_empty() && w.committed(b).is_empty());

    let next = c.end_transaction(TID, id.0, id.1, true, &w.parts).unwrap();
    assert_eq!(
        next,
        (id.0, 1),
        "the next transaction runs at the bumped epoch"
    );
    assert_eq!(w.committed(a), ["a1", "a2"]);
    assert_eq!(w.committed(b), ["b1"]);
    for (_, m) in w.parts.written.lock().iter() {
        assert_eq!((m.producer_epoch, m.kind), (1, MarkerKind::Commit));
        assert_eq!(m.coordinator_epoch, c.coordinator_epoch());
    }
    assert_eq!(state(&c), TxnState::CompleteCommit);

    // The next transaction, at epoch 1 from sequence 0, aborted: nothing of it is visible.
    c.add_partitions(TID, next.0, next.1, &w.names).unwrap();
    w.produce(a, next, 0, &["x"]).unwrap();
    w.produce(b, next, 0, &["y"]).unwrap();
    assert_eq!(
        c.end_transaction(TID, next.0, next.1, false, &w.parts)
            .unwrap(),
        (id.0, 2)
    );
    assert_eq!(w.committed(a), ["a1", "a2"]);
    assert_eq!(w.committed(b), ["b1"]);
    for name in &w.names {
        let log = w.log(name);
        assert_eq!(
            log.last_stable_offset(),
            log.log_end_offset(),
            "nothing is open"
        );
    }
    assert_eq!(state(&c), TxnState::CompleteAbort);
}

#[test]
fn init_fences_the_previous_instance_and_aborts_its_transaction() {
    let w = World::new(2);
    let c = w.coordinator();
    let a = &w.names[0];
    let old = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, old.0, old.1, &w.names).unwrap();
    w.produce(a, old, 0, &["zombie"]).unwrap();
    w.produce(&w.names[1], old, 0, &["zombie"]).unwrap();

    let new = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    assert_eq!(new, (old.0, 2), "above the abort's epoch 1");
    assert_eq!(
        w.markers_written(),
        2,
        "the open transaction was aborted everywhere"
    );
    for name in &w.names {
        assert!(w.committed(name).is_empty());
        let log = w.log(name);
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
    }

    // The old instance: its appends, its requests and its end are all fenced.
    let fenced = |r: oncelog::Result<()>| matches!(r, Err(Error::ProducerFenced { .. }));
    assert!(fenced(w.produce(a, old, 1, &["late"])));
    assert!(fenced(c.add_partitions(TID, old.0, old.1, &w.names)));
    let end = c.end_transaction(TID, old.0, old.1, true, &w.parts);
    assert!(matches!(end, Err(Error::ProducerFenced { .. })), "{end:?}");

    // KIP-890 part 1: a partition asks before the first transactional batch of a producer.
    let verify = |id: (ProducerId, ProducerEpoch)| c.verify_txn_partition(id.0, id.1, a);
    assert!(matches!(verify(old), Err(Error::ProducerFenced { .. })));
    assert!(
        matches!(verify(new), Err(Error::InvalidTxnState { .. })),
        "not added yet"
    );

    // The new instance works.
    c.add_partitions(TID, new.0, new.1, &w.names[..1]).unwrap();
    verify(new).unwrap();
    w.produce(a, new, 0, &["fresh"]).unwrap();
    c.end_transaction(TID, new.0, new.1, true, &w.parts)
        .unwrap();
    assert_eq!(w.committed(a), ["fresh"]);
}

/// The coordinator dies after its decision is durable and before every marker is written;
/// the reopened coordinator writes the rest with its own, higher, coordinator epoch.
fn crash_between_decision_and_markers(commit: bool) {
    let w = World::new(3);
    let c = w.coordinator();
    let first_epoch = c.coordinator_epoch();
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, id.0, id.1, &w.names).unwrap();
    for name in &w.names {
        w.produce(name, id, 0, &[name.topic()]).unwrap();
    }
    *w.parts.fail_after.lock() = Some(1);
    let err = c
        .end_transaction(TID, id.0, id.1, commit, &w.parts)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "the sink's error: {err}");
    let prepared = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    assert_eq!(state(&c), prepared);
    assert_eq!(c.pending(), [TID]);
    // Meanwhile requests for the id are told to retry.
    let add = c.add_partitions(TID, id.0, id.1, &w.names);
    assert!(
        matches!(add, Err(Error::ConcurrentTransactions { .. })),
        "{add:?}"
    );
    let again = c.end_transaction(TID, id.0, id.1, commit, &w.parts);
    assert!(
        matches!(again, Err(Error::ConcurrentTransactions { .. })),
        "{again:?}"
    );
    // `a-0` has its marker, `b-0` does not: `b-0`'s transaction is still open.
    assert_eq!(w.markers_written(), 1);
    let b = w.log(&w.names[1]);
    assert!(b.last_stable_offset() < b.log_end_offset());

    c.simulate_crash();
    *w.parts.fail_after.lock() = None;
    let c = w.coordinator();
    assert_eq!(c.coordinator_epoch(), first_epoch + 1);
    let done = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    assert_eq!(state(&c), done);
    assert!(c.pending().is_empty());
    let written = w.parts.written.lock().clone();
    let last = written.last().unwrap();
    assert_eq!(last.0, w.names[1]);
    assert_eq!(last.1.coordinator_epoch, first_epoch + 1);
    for name in &w.names {
        let expected: Vec<&str> = if commit { vec![name.topic()] } else { vec![] };
        assert_eq!(w.committed(name), expected);
    }
    // The producer's retry after the restart gets the answer it missed.
    let retry = c
        .end_transaction(TID, id.0, id.1, commit, &w.parts)
        .unwrap();
    assert_eq!(retry, (id.0, 1));
    // The opposite decision is refused.
    let flip = c.end_transaction(TID, id.0, id.1, !commit, &w.parts);
    assert!(
        matches!(flip, Err(Error::InvalidTxnState { .. })),
        "{flip:?}"
    );
}

#[test]
fn a_crash_after_prepare_commit_commits_at_reopen() {
    crash_between_decision_and_markers(true);
}

#[test]
fn a_crash_after_prepare_abort_aborts_at_reopen() {
    crash_between_decision_and_markers(false);
}

#[test]
fn failed_markers_are_retried_by_tick() {
    let w = World::new(4);
    let c = w.coordinator();
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, id.0, id.1, &w.names).unwrap();
    *w.parts.fail_after.lock() = Some(0);
    assert!(c.end_transaction(TID, id.0, id.1, true, &w.parts).is_err());
    assert!(matches!(c.tick(&w.parts), Err(Error::Timeout)));
    assert_eq!(c.pending(), [TID]);
    *w.parts.fail_after.lock() = None;
    assert_eq!(c.tick(&w.parts).unwrap(), Vec::<String>::new());
    assert!(c.pending().is_empty());
    assert_eq!(state(&c), TxnState::CompleteCommit);
    assert_eq!(w.markers_written(), 2);
}

#[test]
fn tick_aborts_a_transaction_past_its_timeout() {
    let w = World::new(5);
    let c = w.coordinator();
    let a = &w.names[0];
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, id.0, id.1, &w.names[..1]).unwrap();
    w.produce(a, id, 0, &["abandoned"]).unwrap();
    w.clock.advance(TIMEOUT.as_millis() as i64 - 1);
    assert!(c.tick(&w.parts).unwrap().is_empty());
    assert_eq!(state(&c), TxnState::Ongoing);
    w.clock.advance(1);
    assert_eq!(c.tick(&w.parts).unwrap(), [TID]);
    assert_eq!(state(&c), TxnState::CompleteAbort);
    assert!(w.committed(a).is_empty());
    let log = w.log(a);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    // The producer at the old epoch: fenced on the partition and at the coordinator; its
    // commit is refused; its abort is the outcome it already has.
    assert!(matches!(
        w.produce(a, id, 1, &["late"]),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(matches!(
        c.add_partitions(TID, id.0, id.1, &w.names[..1]),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(matches!(
        c.end_transaction(TID, id.0, id.1, true, &w.parts),
        Err(Error::InvalidTxnState { .. })
    ));
    assert_eq!(
        c.end_transaction(TID, id.0, id.1, false, &w.parts).unwrap(),
        (id.0, 1)
    );
}

#[test]
fn a_retried_end_is_answered_without_writing_anything() {
    let w = World::new(6);
    let c = w.coordinator();
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, id.0, id.1, &w.names).unwrap();
    let answer = c.end_transaction(TID, id.0, id.1, true, &w.parts).unwrap();
    let markers = w.markers_written();
    let records = c.state_log_stats().records;
    for _ in 0..3 {
        assert_eq!(
            c.end_transaction(TID, id.0, id.1, true, &w.parts).unwrap(),
            answer
        );
    }
    assert_eq!(w.markers_written(), markers);
    assert_eq!(c.state_log_stats().records, records);
    // Adding a partition already in the transaction writes nothing either.
    c.add_partitions(TID, answer.0, answer.1, &w.names[..1])
        .unwrap();
    let records = c.state_log_stats().records;
    c.add_partitions(TID, answer.0, answer.1, &w.names[..1])
        .unwrap();
    assert_eq!(c.state_log_stats().records, records);
}

/// Writes `records` into a state log at `COORD_DIR` as the coordinator would.
fn write_state_log(w: &World, records: &[TxnRecord]) {
    let log = Log::open(COORD_DIR, w.config()).unwrap();
    let mut b = BatchBuilder::new();
    for rec in records {
        let (k, v) = oncelog::coordinator::record::encode(rec);
        b.push(0, Some(&k), v.as_deref());
    }
    log.append(&b.build().unwrap()).unwrap();
    log.close().unwrap();
}

#[test]
fn exhausted_epochs_continue_under_a_fresh_producer_id() {
    let w = World::new(7);
    let a = &w.names[0];
    let old = (ProducerId(7), i16::MAX - 1);
    write_state_log(
        &w,
        &[
            TxnRecord::CoordinatorEpoch(4),
            TxnRecord::Txn(TxnMetadata {
                transactional_id: TID.into(),
                producer_id: old.0,
                producer_epoch: old.1,
                last_producer_id: old.0,
                last_producer_epoch: old.1 - 1,
                state: TxnState::Empty,
                partitions: Default::default(),
                timeout_ms: 10_000,
                txn_start_ms: -1,
                last_update_ms: 0,
            }),
        ],
    );
    let c = w.coordinator();
    assert_eq!(c.coordinator_epoch(), 5);
    c.add_partitions(TID, old.0, old.1, &w.names[..1]).unwrap();
    w.produce(a, old, 0, &["last"]).unwrap();
    let new = c
        .end_transaction(TID, old.0, old.1, true, &w.parts)
        .unwrap();
    assert_ne!(new.0, old.0);
    assert_eq!(new.1, 0);
    assert_eq!(w.parts.written.lock()[0].1.producer_epoch, i16::MAX);
    assert_eq!(w.committed(a), ["last"]);
    let m = c.describe(TID).unwrap();
    assert_eq!((m.last_producer_id, m.last_producer_epoch), old);
    // The old id is fenced for good, on the partition and at the coordinator.
    assert!(matches!(
        w.produce(a, old, 1, &["zombie"]),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(matches!(
        c.add_partitions(TID, old.0, old.1, &w.names[..1]),
        Err(Error::ProducerFenced { .. })
    ));
    // The fresh id runs transactions from epoch 0.
    c.add_partitions(TID, new.0, new.1, &w.names[..1]).unwrap();
    w.produce(a, new, 0, &["next"]).unwrap();
    assert_eq!(
        c.end_transaction(TID, new.0, new.1, true, &w.parts)
            .unwrap(),
        (new.0, 1)
    );
    assert_eq!(w.committed(a), ["last", "next"]);
    // Ids come from the state log's allocator, the same one `allocate_producer_id` uses.
    assert!(c.allocate_producer_id().unwrap() > new.0);
}

#[test]
fn a_corrupt_state_record_is_a_typed_error() {
    let w = World::new(8);
    let log = Log::open(COORD_DIR, w.config()).unwrap();
    let mut b = BatchBuilder::new();
    b.push(0, Some(&[0, 0, 9]), Some(&[0, 0]));
    log.append(&b.build().unwrap()).unwrap();
    log.close().unwrap();
    let err = TxnCoordinator::open(COORD_DIR.as_ref(), w.config(), &w.parts).unwrap_err();
    assert!(
        matches!(&err, Error::CorruptFile { reason, .. } if reason.contains("offset 0")),
        "{err}"
    );
}

#[test]
fn the_state_log_is_rewritten_when_it_grows() {
    let w = World::new(9);
    let c = w.coordinator();
    let mut last = (ProducerId(0), 0);
    // Every init is one record; the rule allows 4 x live keys + 1000.
    for _ in 0..1_100 {
        last = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    }
    let stats = c.state_log_stats();
    assert_eq!(stats.live_keys, 2);
    assert!(stats.records < 200, "{stats:?}");
    assert!(stats.log_start > Offset(900), "{stats:?}");
    let before = c.describe(TID).unwrap();
    assert_eq!(before.producer_epoch, last.1);
    c.close().unwrap();
    let c = w.coordinator();
    assert_eq!(c.describe(TID).unwrap(), before);
    assert_eq!(
        c.init_transactions(TID, TIMEOUT, &w.parts).unwrap(),
        (last.0, last.1 + 1)
    );
}

#[test]
fn a_failed_rewrite_does_not_stop_requests() {
    let w = World::new(11);
    let c = w.coordinator();
    // 1 epoch record + 2 for `big` + 1009 inits = 1012 records over 3 live keys: the rule's
    // bound exactly, so no rewrite yet.
    let topic = "t".repeat(40);
    let many: Vec<TopicPartition> = (0..10).map(|p| tp(&topic, p)).collect();
    let big = c.init_transactions("big", TIMEOUT, &w.parts).unwrap();
    c.add_partitions("big", big.0, big.1, &many).unwrap();
    for _ in 0..1_009 {
        c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    }
    assert_eq!(c.state_log_stats().records, 1_012);
    c.close().unwrap();
    // Reopened with batches too small for `big`'s record: every rewrite fails from now on.
    let mut small = w.config();
    small.max_batch_bytes = 200;
    let c = TxnCoordinator::open(COORD_DIR.as_ref(), small.clone(), &w.parts).unwrap();
    let before = c.describe("big").unwrap();
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    let stats = c.state_log_stats();
    assert_eq!(stats.rewrite_failures, 1, "{stats:?}");
    assert_eq!(stats.log_start, Offset(0));
    assert!(matches!(c.compact(), Err(Error::BatchTooLarge { .. })));
    c.close().unwrap();
    let c = TxnCoordinator::open(COORD_DIR.as_ref(), small, &w.parts).unwrap();
    assert_eq!(c.describe("big").unwrap(), before);
    assert_eq!(c.describe(TID).unwrap().identity(), id);
}

/// A state with several ids in several states, for the crash sweeps.
fn populate(w: &World, c: &TxnCoordinator) {
    for (tid, end) in [("empty", None), ("open", None), ("done", Some(true))] {
        let id = c.init_transactions(tid, TIMEOUT, &w.parts).unwrap();
        if tid == "empty" {
            continue;
        }
        c.add_partitions(tid, id.0, id.1, &w.names).unwrap();
        if let Some(commit) = end {
            c.end_transaction(tid, id.0, id.1, commit, &w.parts)
                .unwrap();
        }
    }
}

fn describe_all(c: &TxnCoordinator) -> Vec<Option<TxnMetadata>> {
    ["empty", "open", "done"].map(|t| c.describe(t)).to_vec()
}

#[test]
fn a_crash_at_any_step_of_a_rewrite_replays_to_the_same_state() {
    let mut between = 0;
    let mut k = 0;
    loop {
        let w = World::new(100 + k);
        let c = w.coordinator();
        populate(&w, &c);
        let before = describe_all(&c);
        let end_before = c.state_log_stats().log_end;
        w.sim.fail_after(k, FaultKind::Eio, true);
        let result = c.compact();
        w.crash_all(c, CrashMode::PowerLoss, k);
        let c = w.coordinator();
        assert_eq!(describe_all(&c), before, "fault after {k} operations");
        let stats = c.state_log_stats();
        if stats.log_start == Offset(0) && stats.log_end > end_before.plus(1) {
            between += 1; // the copies are in, the log start did not move
        }
        if result.is_ok() {
            assert!(stats.log_start >= end_before);
            break;
        }
        k += 1;
        assert!(k < 200, "the rewrite never succeeded");
    }
    assert!(
        between > 0,
        "no crash fell between the copies and the new log start"
    );
}

/// Runs a commit with the disk failing from its `k`-th storage operation on, then loses
/// power (unsynced bytes survive, vanish or tear by `seed`); returns the commit's result and
/// the reopened world.
fn commit_then_power_loss(k: u64, seed: u64) -> (oncelog::Result<()>, World, TxnCoordinator) {
    let w = World::new(300 + seed);
    let c = w.coordinator();
    let id = c.init_transactions(TID, TIMEOUT, &w.parts).unwrap();
    c.add_partitions(TID, id.0, id.1, &w.names).unwrap();
    for name in &w.names {
        w.produce(name, id, 0, &["v"]).unwrap();
    }
    w.sim.fail_after(k, FaultKind::Eio, true);
    let result = c.end_transaction(TID, id.0, id.1, true, &w.parts);
    w.crash_all(c, CrashMode::PowerLoss, seed);
    let c = w.coordinator();
    (result.map(|_| ()), w, c)
}

#[test]
fn a_crash_at_any_step_of_a_commit_never_leaves_half_a_transaction() {
    let mut outcomes = BTreeMap::new();
    let mut k = 0;
    loop {
        let mut succeeded = false;
        for seed in 0..6 {
            let (result, w, c) = commit_then_power_loss(k, seed);
            let seen: Vec<usize> = w.names.iter().map(|n| w.committed(n).len()).collect();
            let s = state(&c);
            let case = format!("fault after {k}, seed {seed}: {result:?}");
            match s {
                TxnState::CompleteCommit => assert_eq!(seen, [1, 1], "{case}"),
                TxnState::Ongoing => {
                    assert!(result.is_err(), "an acknowledged commit was lost: {case}");
                    assert_eq!(seen, [0, 0], "{case}");
                    // The timeout ends it: aborted everywhere.
                    w.clock.advance(TIMEOUT.as_millis() as i64);
                    assert_eq!(c.tick(&w.parts).unwrap(), [TID]);
                    assert!(w.names.iter().all(|n| w.committed(n).is_empty()));
                }
                other => panic!("unexpected state {other:?}: {case}"),
            }
            *outcomes.entry(format!("{s:?}")).or_insert(0) += 1;
            succeeded |= result.is_ok();
        }
        if succeeded {
            break;
        }
        k += 1;
        assert!(k < 200, "the commit never succeeded");
    }
    assert_eq!(outcomes.len(), 2, "both outcomes reached: {outcomes:?}");
}

#[test]
fn concurrent_requests_from_many_threads() {
    let w = World::new(10);
    let c = w.coordinator();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (c, w) = (&c, &w);
            s.spawn(move || {
                let tid = format!("app-{t}");
                let mut id = c.init_transactions(&tid, TIMEOUT, &w.parts).unwrap();
                for _ in 0..20 {
                    c.add_partitions(&tid, id.0, id.1, &w.names).unwrap();
                    id = c.end_transaction(&tid, id.0, id.1, true, &w.parts).unwrap();
                }
                assert_eq!(id.1, 20);
            });
        }
    });
    assert_eq!(w.markers_written(), 4 * 20 * 2);
}

/// Transactional ids idle between transactions past the expiration (the state log's
/// `producer_id_expiration_ms`, Kafka's `transactional.id.expiration.ms`) are forgotten by
/// `tick`, durably (a replay after a crash forgets them too); an id with a transaction open is
/// kept however long it waits; an InitProducerId for a forgotten id starts afresh under a new
/// producer id, and the old identity is unknown.
#[test]
fn tick_forgets_ids_idle_past_the_expiration_but_never_an_open_transaction() {
    const EXPIRATION_MS: i64 = 30_000;
    let w = World::new(6);
    let open = |w: &World| {
        let mut cfg = w.config();
        cfg.producer_id_expiration_ms = EXPIRATION_MS as u64;
        TxnCoordinator::open(COORD_DIR.as_ref(), cfg, &w.parts).unwrap()
    };
    let c = open(&w);
    let a = c.init_transactions("idle", TIMEOUT, &w.parts).unwrap();
    c.add_partitions("idle", a.0, a.1, &w.names[..1]).unwrap();
    w.produce(&w.names[0], a, 0, &["kept"]).unwrap();
    c.end_transaction("idle", a.0, a.1, true, &w.parts).unwrap();
    let b = c
        .init_transactions("busy", Duration::from_secs(600), &w.parts)
        .unwrap();
    c.add_partitions("busy", b.0, b.1, &w.names[1..]).unwrap();
    w.clock.advance(EXPIRATION_MS - 1);
    c.tick(&w.parts).unwrap();
    assert!(c.describe("idle").is_some(), "not idle long enough");
    w.clock.advance(1);
    c.tick(&w.parts).unwrap();
    assert!(c.describe("idle").is_none(), "forgotten");
    assert_eq!(c.describe("busy").unwrap().state, TxnState::Ongoing);
    assert!(c
        .add_partitions("idle", a.0, a.1 + 1, &w.names[..1])
        .is_err());
    w.crash_all(c, CrashMode::PowerLoss, 6);
    let c = open(&w);
    assert!(c.describe("idle").is_none(), "forgotten after a replay");
    assert_eq!(c.describe("busy").unwrap().state, TxnState::Ongoing);
    let again = c.init_transactions("idle", TIMEOUT, &w.parts).unwrap();
    assert_ne!(again.0, a.0, "a new producer id");
    assert_eq!(again.1, 0);
    assert_eq!(
        w.committed(&w.names[0]),
        ["kept"],
        "its committed data stays"
    );
    // A rewrite of the state log keeps what is live and nothing forgotten.
    c.compact().unwrap();
    assert_eq!(c.describe("idle").unwrap().producer_id, again.0);
}
