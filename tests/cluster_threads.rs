//! The thread-per-replica driver (`oncelog::cluster::ThreadCluster`) end to end: acks=all
//! replication to identical logs, failover that keeps deduplicating retries, acks=all refused
//! below min ISR, and a leader killed under an idempotent producer losing and duplicating
//! nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::cluster::{ClusterClient, ClusterOptions, ThreadCluster};
use oncelog::producer::{Delivery, ProduceTarget, Producer};
use oncelog::replica::Acks;
use oncelog::replication::{
    BecomeLeader, Controller, FetchRequest, InProcessController, LeaderConfig, LeaderEpochCache,
    LeaderState, LogRecovery, ReplicaId,
};
use oncelog::{
    AppendInfo, BatchBuilder, Error, LogConfig, Offset, ProducerEpoch, ProducerId, RecordBatch,
    Result,
};
use parking_lot::Mutex;

fn r(id: u32) -> ReplicaId {
    ReplicaId(id)
}

fn options(min_isr: usize) -> ClusterOptions {
    ClusterOptions {
        log: LogConfig {
            segment_bytes: 64 << 10,
            prefault_bytes: 0,
            ..LogConfig::for_tests()
        },
        leader: LeaderConfig {
            min_insync_replicas: min_isr,
            replica_lag_time_max_ms: 10_000,
        },
        fetch_wait_ms: 50,
        tick_ms: 5,
        request_timeout_ms: 5_000,
        check_invariants: true,
        ..ClusterOptions::default()
    }
}

/// Records whose values name `(batch, i)`: "b{batch}:{i}".
fn records(batch: u64, count: u32) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in 0..count {
        let v = format!("b{batch}:{i}");
        b.push(1_000 + batch as i64, Some(b"k"), Some(v.as_bytes()));
    }
    b
}

fn plain_batch(tag: u64) -> RecordBatch {
    records(tag, 1).build().unwrap()
}

/// Polls `f` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}

fn describe(c: &ThreadCluster) -> String {
    let mut s = format!("controller: {:?}\n", c.leader_and_isr());
    for id in c.replicas() {
        s += &format!("{id:?}: {:?}\n", c.status(id));
    }
    s
}

/// Waits until every running replica's HW equals the leader's log end, and returns it.
fn wait_all_caught_up(c: &ThreadCluster) -> Offset {
    let mut end = Offset(0);
    let ok = wait_until(Duration::from_secs(10), || {
        let Some(leader) = c.leader() else {
            return false;
        };
        let Some(ls) = c.status(leader) else {
            return false;
        };
        end = ls.log_end;
        c.replicas()
            .into_iter()
            .filter(|id| c.is_running(*id))
            .all(|id| {
                c.status(id)
                    .is_some_and(|s| s.log_end == end && s.high_watermark == end)
            })
    });
    assert!(ok, "replicas did not catch up:\n{}", describe(c));
    end
}

/// The raw bytes of replica `id`'s log below `limit`.
fn log_bytes(c: &ThreadCluster, id: ReplicaId, limit: Offset) -> Vec<u8> {
    c.with_replica(id, move |rep| {
        let log = rep.log();
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while next < limit {
            let fetch = log.read_bounded(next, 1 << 20, limit).unwrap();
            assert!(!fetch.is_empty(), "empty read at {next:?} below {limit:?}");
            for b in fetch.batches() {
                next = Offset(b.unwrap().last_offset() + 1);
            }
            out.extend_from_slice(fetch.bytes());
        }
        out
    })
    .unwrap()
}

/// Every committed (offset, value) on replica `id`, verifying checksums.
fn committed_records(c: &ThreadCluster, id: ReplicaId) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = Offset(0);
    loop {
        let fetch = c.read_committed_from(id, next, 1 << 20).unwrap();
        if fetch.is_empty() {
            return out;
        }
        for b in fetch.batches() {
            let b = b.unwrap();
            for rec in b.records() {
                let rec = rec.unwrap();
                let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
                out.push((b.base_offset() + rec.offset_delta as u64, value));
            }
            next = Offset(b.last_offset() + 1);
        }
    }
}

/// Checks that `records` hold each value exactly once at contiguous offsets from 0.
fn assert_exactly_once(records: &[(u64, String)]) -> BTreeMap<String, u64> {
    let mut by_value = BTreeMap::new();
    for (i, (offset, value)) in records.iter().enumerate() {
        assert_eq!(*offset, i as u64, "offsets not contiguous");
        if let Some(first) = by_value.insert(value.clone(), *offset) {
            panic!("{value} at offsets {first} and {offset}");
        }
    }
    by_value
}

#[test]
fn acks_all_idempotent_producer_replicates_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 3, options(2)).unwrap();
    let mut p = Producer::new(c.producer_handle()).unwrap();
    const N: u64 = 200;
    let mut next = 0;
    for i in 0..N {
        match p.send(records(i, 1 + (i % 4) as u32)).unwrap() {
            Delivery::Written(info) => {
                assert!(!info.duplicate);
                assert_eq!(info.base_offset, Offset(next));
                next = info.last_offset.0 + 1;
            }
            d => panic!("{d:?}"),
        }
    }
    let end = wait_all_caught_up(&c);
    assert_eq!(end, Offset(next));
    assert_eq!(c.high_watermark(), Some(end));
    let leader_bytes = log_bytes(&c, r(1), end);
    assert!(!leader_bytes.is_empty());
    for id in [r(2), r(3)] {
        assert!(
            log_bytes(&c, id, end) == leader_bytes,
            "{id:?} differs from the leader below the HW"
        );
    }
    let recs = committed_records(&c, r(1));
    assert_exactly_once(&recs);
    assert_eq!(recs.len() as u64, next);
    for id in c.replicas() {
        assert_eq!(c.status(id).unwrap().last_error, None);
    }
    c.shutdown().unwrap();
}

/// A target that can lose every response (the batch is written, the answer never arrives).
#[derive(Debug)]
struct LoseResponses {
    inner: ClusterClient,
    lose: AtomicBool,
    lost: Mutex<Vec<AppendInfo>>,
}

impl ProduceTarget for LoseResponses {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let answer = self.inner.produce(batch);
        match answer {
            Ok(info) if self.lose.load(Ordering::SeqCst) => {
                self.lost.lock().push(info);
                Err(Error::Timeout)
            }
            other => other,
        }
    }
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        self.inner.init_producer_id()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.inner.bump_producer_epoch(id)
    }
}

#[test]
fn failover_keeps_dedup_of_five_in_flight_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 3, options(2)).unwrap();
    let target = LoseResponses {
        inner: c.producer_handle().with_acks(Acks::All),
        lose: AtomicBool::new(true),
        lost: Mutex::new(Vec::new()),
    };
    let mut p = Producer::with_sink(&target, Vec::<(u64, Delivery)>::new()).unwrap();
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(p.enqueue(records(i, 3)).unwrap());
    }
    // Written and committed (acks=all answered), but the producer never heard.
    assert_eq!(p.in_flight(), 5);
    let lost = target.lost.lock().clone();
    assert_eq!(lost.len(), 5);
    let last = lost[4].last_offset;
    for id in c.replicas() {
        let s = c.status(id).unwrap();
        assert!(s.log_end > last, "{id:?} lacks the batches: {s:?}");
    }

    let old = c.leader().unwrap();
    assert_eq!(old, r(1));
    let rec = c.kill_replica(old).unwrap();
    let new = rec.leader.expect("a new leader from the ISR");
    assert_ne!(new, old);
    assert!(!rec.isr.contains(&old));

    // The producer retries the same five batches against the new leader.
    target.lose.store(false, Ordering::SeqCst);
    assert!(p.sink().is_empty(), "nothing delivered before the retries");
    p.flush().unwrap();
    let done = std::mem::take(p.sink_mut());
    assert_eq!(done.len(), 5);
    for ((ticket, delivery), (want_ticket, original)) in
        done.iter().zip(tickets.iter().zip(lost.iter()))
    {
        assert_eq!(ticket, want_ticket);
        match delivery {
            Delivery::Written(info) => {
                assert!(info.duplicate, "retry appended again: {info:?}");
                assert_eq!(info.base_offset, original.base_offset);
                assert_eq!(info.last_offset, original.last_offset);
            }
            d => panic!("{d:?}"),
        }
    }
    let recs = committed_records(&c, new);
    assert_exactly_once(&recs);
    assert_eq!(recs.len(), 15);
    assert_eq!(recs[14].1, "b4:2");

    // The old leader comes back (same boot: intact), catches up and rejoins the ISR.
    c.restart_replica(old).unwrap();
    let end = wait_all_caught_up(&c);
    assert_eq!(log_bytes(&c, old, end), log_bytes(&c, new, end));
    assert!(wait_until(Duration::from_secs(10), || c
        .leader_and_isr()
        .isr
        .contains(&old)));
    c.shutdown().unwrap();
}

#[test]
fn acks_all_below_min_isr_is_not_enough_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 3, options(2)).unwrap();
    let all = c.producer_handle().with_acks(Acks::All);
    all.produce(&plain_batch(0)).unwrap();
    assert_eq!(c.leader(), Some(r(1)));
    c.kill_replica(r(2)).unwrap();
    let rec = c.kill_replica(r(3)).unwrap();
    assert_eq!(rec.leader, Some(r(1)));
    assert_eq!(rec.isr, vec![r(1)]);

    match all.produce(&plain_batch(1)) {
        Err(Error::NotEnoughReplicas { isr: 1, min_isr: 2 }) => {}
        other => panic!("{other:?}"),
    }
    // The idempotent producer gets the same answer (not retriable for it).
    let mut p = Producer::new(all.clone()).unwrap();
    assert!(matches!(
        p.send(records(2, 1)),
        Err(Error::NotEnoughReplicas { .. })
    ));
    // acks=1 is still accepted, but the HW is frozen below min ISR.
    let hw = c.high_watermark().unwrap();
    let one = c.producer_handle().with_acks(Acks::Leader);
    let info = one.produce(&plain_batch(3)).unwrap();
    assert!(info.last_offset >= hw);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.high_watermark(), Some(hw));

    // A follower comes back, catches up and rejoins: acks=all works again.
    c.restart_replica(r(2)).unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        all.produce(&plain_batch(4)).is_ok()
    });
    assert!(ok, "acks=all never recovered:\n{}", describe(&c));
    assert!(c.high_watermark().unwrap() > info.last_offset);
    c.shutdown().unwrap();
}

#[test]
fn leader_killed_mid_stream_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 3, options(2)).unwrap();
    const BATCHES: u64 = 400;
    const PER_BATCH: u32 = 4;
    let acked = Arc::new(AtomicUsize::new(0));
    let client = c.producer_handle().with_acks(Acks::All);
    let producer = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let mut p = Producer::new(client).unwrap();
            let mut out = Vec::new();
            for i in 0..BATCHES {
                let d = p.send(records(i, PER_BATCH)).unwrap();
                out.push((i, d));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            out
        })
    };
    assert!(wait_until(Duration::from_secs(20), || acked
        .load(Ordering::SeqCst)
        >= 100));
    let old = c.leader().unwrap();
    let rec = c.kill_replica(old).unwrap();
    let new = rec.leader.expect("a new leader from the ISR");
    let deliveries = producer.join().unwrap();
    assert_eq!(deliveries.len() as u64, BATCHES);

    let end = wait_all_caught_up(&c);
    let survivors: Vec<ReplicaId> = c.replicas().into_iter().filter(|&id| id != old).collect();
    let bytes = log_bytes(&c, new, end);
    for &id in &survivors {
        assert!(log_bytes(&c, id, end) == bytes, "{id:?} differs");
    }
    for &id in &survivors {
        let recs = committed_records(&c, id);
        let by_value = assert_exactly_once(&recs);
        assert_eq!(recs.len() as u64, BATCHES * u64::from(PER_BATCH));
        // Every acknowledged batch is where its answer said.
        for (i, d) in &deliveries {
            let Delivery::Written(info) = d else {
                panic!("batch {i}: {d:?}");
            };
            for j in 0..PER_BATCH {
                let at = by_value[&format!("b{i}:{j}")];
                assert_eq!(at, info.base_offset.0 + u64::from(j), "b{i}:{j}");
            }
        }
    }

    // The killed leader comes back, truncates whatever the others lack, and agrees.
    c.restart_replica(old).unwrap();
    let end = wait_all_caught_up(&c);
    assert!(log_bytes(&c, old, end) == log_bytes(&c, new, end));
    c.shutdown().unwrap();
}

#[test]
fn move_leader_under_a_streaming_producer() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 3, options(2)).unwrap();
    const BATCHES: u64 = 300;
    let acked = Arc::new(AtomicUsize::new(0));
    let client = c.producer_handle().with_acks(Acks::All);
    let producer = {
        let (acked, client) = (Arc::clone(&acked), client.clone());
        std::thread::spawn(move || {
            let mut p = Producer::new(client).unwrap();
            let mut out = Vec::new();
            for i in 0..BATCHES {
                out.push(p.send(records(i, 2)).unwrap());
                acked.fetch_add(1, Ordering::SeqCst);
            }
            out
        })
    };
    // Leadership moves twice mid-stream: waiting acks=all requests are failed with Timeout
    // (outcome unknown) by the old leader and re-sent (idempotent) by the client to the new one.
    for (at, to) in [(100, r(3)), (200, r(2))] {
        assert!(wait_until(Duration::from_secs(20), || acked
            .load(Ordering::SeqCst)
            >= at));
        let rec = c.move_leader(to).unwrap();
        assert_eq!(rec.leader, Some(to));
        assert_eq!(rec.isr, vec![r(1), r(2), r(3)]);
    }
    // A replica outside the ISR cannot be moved to.
    c.kill_replica(r(1)).unwrap();
    assert!(c.move_leader(r(1)).is_err());
    let deliveries = producer.join().unwrap();
    assert_eq!(deliveries.len() as u64, BATCHES);
    let end = wait_all_caught_up(&c);
    let fetch = c.read_committed(Offset(0), 1 << 20).unwrap();
    assert!(!fetch.is_empty());
    let recs = committed_records(&c, r(2));
    let by_value = assert_exactly_once(&recs);
    assert_eq!(recs.len() as u64, BATCHES * 2);
    assert_eq!(end, Offset(BATCHES * 2));
    for (i, d) in deliveries.iter().enumerate() {
        let Delivery::Written(info) = d else {
            panic!("{d:?}")
        };
        assert_eq!(by_value[&format!("b{i}:0")], info.base_offset.0);
    }
    assert_eq!(log_bytes(&c, r(3), end), log_bytes(&c, r(2), end));
    eprintln!("client re-sends across the moves: {}", client.retries());
    c.shutdown().unwrap();
}

/// Holds replica `id`'s thread for `d` (it handles nothing meanwhile); returns once it is held.
fn stall(c: &Arc<ThreadCluster>, id: ReplicaId, d: Duration) -> std::thread::JoinHandle<()> {
    let c = Arc::clone(c);
    let (held, is_held) = crossbeam_channel::bounded(1);
    let h = std::thread::spawn(move || {
        c.with_replica(id, move |_| {
            held.send(()).unwrap();
            std::thread::sleep(d);
        })
        .unwrap()
    });
    is_held.recv().unwrap();
    h
}

#[test]
fn unknown_outcomes_are_timeouts_and_plain_batches_are_not_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Arc::new(ThreadCluster::start(tmp.path(), 3, options(2)).unwrap());
    let client = c.producer_handle().with_acks(Acks::All);
    client.produce(&plain_batch(0)).unwrap();

    // Followers stalled: an acks=all request waits on r1; leadership moves to r2 meanwhile.
    let hold = Duration::from_millis(1_000);
    let stalls = [stall(&c, r(2), hold), stall(&c, r(3), hold)];
    let waiting = client.send(plain_batch(1)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        waiting.try_wait().is_none(),
        "answered without the followers"
    );
    c.move_leader(r(2)).unwrap();
    // The batch is in r1's log but not committed: not a refusal, an unknown outcome.
    assert!(matches!(waiting.wait(), Err(Error::Timeout)));
    for s in stalls {
        s.join().unwrap();
    }

    // The same situation through ProduceTarget: a plain batch is not re-sent ...
    let retries = client.retries();
    let stalls = [stall(&c, r(1), hold), stall(&c, r(3), hold)];
    let mover = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.move_leader(r(3)).unwrap();
        })
    };
    assert!(matches!(
        client.produce(&plain_batch(2)),
        Err(Error::Timeout)
    ));
    assert_eq!(client.retries(), retries);
    mover.join().unwrap();
    for s in stalls {
        s.join().unwrap();
    }

    // ... an idempotent one is, and is written once.
    let mut p = Producer::new(client.clone()).unwrap();
    p.send(records(10, 1)).unwrap();
    let stalls = [stall(&c, r(1), hold), stall(&c, r(2), hold)];
    let mover = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.move_leader(r(1)).unwrap();
        })
    };
    let Delivery::Written(info) = p.send(records(11, 1)).unwrap() else {
        panic!("not written")
    };
    assert!(
        client.retries() > retries,
        "the idempotent batch was not re-sent"
    );
    mover.join().unwrap();
    for s in stalls {
        s.join().unwrap();
    }
    wait_all_caught_up(&c);
    let recs = committed_records(&c, r(1));
    let by_value = assert_exactly_once(&recs);
    assert_eq!(by_value["b11:0"], info.base_offset.0);
    let c = Arc::into_inner(c).unwrap();
    c.shutdown().unwrap();
}

#[test]
fn demo_cluster_survives_a_leader_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-cluster");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .arg("demo-cluster")
        .arg(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("killed"), "{text}");
    assert!(
        text.contains("answered as duplicates with their original offsets"),
        "{text}"
    );
    assert!(text.contains("each exactly once"), "{text}");
    assert!(
        text.contains("3 of 3 replicas hold identical bytes"),
        "{text}"
    );
    assert!(text.contains("demo-cluster: OK"), "{text}");
    // A second run clears the directory it left.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .arg("demo-cluster")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(again.status.success());
}

#[test]
fn start_refuses_a_used_directory_and_clients_outliving_it_fail_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ThreadCluster::start(tmp.path(), 1, options(1)).unwrap();
    let client = c.producer_handle();
    client.produce(&plain_batch(0)).unwrap();
    c.shutdown().unwrap();
    // A client that outlives its cluster fails at once.
    let t = Instant::now();
    assert!(matches!(
        client.produce(&plain_batch(1)),
        Err(Error::Closed)
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        ThreadCluster::start(tmp.path(), 1, options(1)),
        Err(Error::InvalidConfig(_))
    ));
}

/// A follower that died keeps its last progress on the leader; if it still looked eligible,
/// every expansion proposal would name it and the controller would refuse them whole
/// (`IneligibleReplica`), so a live, caught-up follower could never rejoin. The leader forgets
/// the fetch times of members the controller removes on its own.
#[test]
fn dead_follower_does_not_veto_isr_expansion() {
    let ids = [r(1), r(2), r(3)];
    let mut ctl = InProcessController::new(&ids);
    let rec = ctl.leader_and_isr();
    let mut leader = LeaderState::new(
        BecomeLeader {
            leader: r(1),
            replicas: ids.to_vec(),
            isr: rec.isr.clone(),
            leader_epoch: rec.leader_epoch,
            partition_epoch: rec.partition_epoch,
            log_start: Offset(0),
            log_end: Offset(0),
            high_watermark: Offset(0),
            epoch_cache: LeaderEpochCache::new(),
        },
        LeaderConfig {
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 10_000,
        },
        0,
    )
    .unwrap();
    let fetch = |replica, incarnation| FetchRequest {
        replica,
        incarnation,
        fetch_offset: Offset(0),
        last_fetched_epoch: None,
        current_leader_epoch: 0,
        max_bytes: 1 << 20,
    };
    leader.on_fetch_request(&fetch(r(2), 0), 1).unwrap();
    leader.on_fetch_request(&fetch(r(3), 0), 1).unwrap();
    // Both followers die; the controller takes them out of the ISR.
    ctl.replica_failed(r(3));
    let rec = ctl.replica_failed(r(2));
    leader
        .on_isr_committed(rec.partition_epoch, &rec.isr)
        .unwrap();
    // r2 comes back intact and fetches at the leader's log end: it should rejoin.
    ctl.replica_restarted(r(2), 1, LogRecovery::Intact);
    leader.on_fetch_request(&fetch(r(2), 1), 100).unwrap();
    for now in 101..110 {
        if let Some(p) = leader.maybe_expand_isr(now) {
            match ctl.alter_isr(&p) {
                Ok(rec) => {
                    leader
                        .on_isr_committed(rec.partition_epoch, &rec.isr)
                        .unwrap();
                }
                Err(_) => leader.on_isr_rejected(),
            }
        }
    }
    assert_eq!(
        leader.isr(),
        &[r(1), r(2)],
        "r2 never rejoined: every proposal also named the dead r3"
    );
}
