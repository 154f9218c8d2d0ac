//! Scripted replication scenarios on `Replica`s over simulated disks, driven by hand (no
//! network): what a restart reports to the controller (T25-T28), the last replica standing
//! (T26, KIP-966), and a new leader answering retries of the old leader's batches with their
//! original offsets.

use std::path::Path;
use std::sync::Arc;

use oncelog::io::sim::{CrashMode, SimStorage};
use oncelog::replica::{Acks, Produced, Replica, ReplicaConfig};
use oncelog::replication::{Controller, InProcessController, LeaderConfig, LogRecovery, ReplicaId};
use oncelog::{BatchBuilder, Error, LogConfig, ManualClock, ProducerId, RecordBatch};

const DIR: &str = "/sim/replica";

fn ids() -> Vec<ReplicaId> {
    vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)]
}

fn config(
    id: u32,
    storage: &SimStorage,
    clock: &Arc<ManualClock>,
    min_isr: usize,
) -> ReplicaConfig {
    let log = LogConfig {
        background_thread: false,
        ..LogConfig::for_tests()
    }
    .with_storage(Arc::new(storage.clone()))
    .with_clock(Arc::clone(clock) as Arc<dyn oncelog::Clock>);
    let mut cfg = ReplicaConfig::new(ReplicaId(id), &ids(), log);
    cfg.leader = LeaderConfig {
        min_insync_replicas: min_isr,
        replica_lag_time_max_ms: 1_000,
    };
    cfg.verify_after_unclean_open = true;
    cfg
}

struct Cluster {
    disks: Vec<SimStorage>,
    replicas: Vec<Option<Replica>>,
    lives: Vec<u64>,
    controller: InProcessController,
    clock: Arc<ManualClock>,
    min_isr: usize,
    now: u64,
}

impl Cluster {
    fn new(min_isr: usize) -> Cluster {
        let clock = Arc::new(ManualClock::new(1_000));
        let disks: Vec<SimStorage> = (0..3).map(|i| SimStorage::new(i + 7)).collect();
        let replicas = (0..3)
            .map(|i| {
                Some(
                    Replica::open(DIR, config(i as u32 + 1, &disks[i], &clock, min_isr), 0)
                        .unwrap(),
                )
            })
            .collect();
        let mut c = Cluster {
            disks,
            replicas,
            lives: vec![1; 3],
            controller: InProcessController::new(&ids()),
            clock,
            min_isr,
            now: 0,
        };
        c.publish();
        c
    }

    fn r(&mut self, id: u32) -> &mut Replica {
        self.replicas[id as usize - 1]
            .as_mut()
            .expect("replica running")
    }

    /// The controller's record to every running replica.
    fn publish(&mut self) {
        let rec = self.controller.leader_and_isr();
        for r in self.replicas.iter_mut().flatten() {
            r.on_leader_and_isr(&rec, self.now).unwrap();
        }
    }

    /// One fetch by every running follower.
    fn replicate(&mut self) {
        self.now += 10;
        for i in 0..3 {
            let Some((leader, req)) = self.replicas[i].as_ref().and_then(|r| r.fetch_request())
            else {
                continue;
            };
            let li = leader.0 as usize - 1;
            let Some(l) = self.replicas[li].as_mut() else {
                continue;
            };
            let Ok(resp) = l.handle_fetch(&req, self.now) else {
                continue;
            };
            self.replicas[i]
                .as_mut()
                .unwrap()
                .handle_fetch_response(resp)
                .unwrap();
        }
    }

    fn crash(&mut self, id: u32, mode: CrashMode) {
        let i = id as usize - 1;
        self.replicas[i].take().unwrap().simulate_crash();
        self.disks[i].crash_with_seed(mode, 99);
        self.controller.replica_failed(ReplicaId(id));
        self.publish();
    }

    fn restart(&mut self, id: u32) -> LogRecovery {
        let i = id as usize - 1;
        let cfg = config(id, &self.disks[i], &self.clock, self.min_isr);
        let r = Replica::open(DIR, cfg, self.lives[i]).unwrap();
        let recovery = r.log_recovery();
        self.controller
            .replica_restarted(ReplicaId(id), self.lives[i], recovery);
        self.lives[i] += 1;
        self.replicas[i] = Some(r);
        self.publish();
        recovery
    }
}

fn batch(pid: i64, seq: i32) -> RecordBatch {
    let mut b = BatchBuilder::new().producer(ProducerId(pid), 0, seq);
    b.push(0, None, Some(format!("p{pid}:s{seq}").as_bytes()));
    b.build().unwrap()
}

#[test]
fn a_restart_reports_what_the_disk_may_have_lost() {
    let mut c = Cluster::new(2);
    for seq in 0..150 {
        c.r(1)
            .produce(&batch(7, seq), Acks::Leader, 0, u64::MAX)
            .unwrap();
    }
    c.replicate();
    c.replicate();
    // Same boot: every write survived.
    c.crash(2, CrashMode::Process);
    assert_eq!(c.restart(2), LogRecovery::Intact);
    // A reboot (power loss) under SyncMode::Os: the unsynced tail may be gone.
    c.crash(3, CrashMode::PowerLoss);
    assert_eq!(c.restart(3), LogRecovery::MayHaveLostTail);
    // A new, empty disk: no previous life.
    c.crash(2, CrashMode::Process);
    c.disks[1] = SimStorage::new(1234);
    assert_eq!(c.restart(2), LogRecovery::EmptyOrDamaged);
    assert!(c.controller.needs_catch_up(ReplicaId(2)));
    // A flipped byte in a synced segment: found by the verification, moved aside, empty.
    c.replicate();
    c.replicate();
    c.crash(2, CrashMode::Process);
    let disk = &c.disks[1];
    let mut logs: Vec<String> = disk
        .durable_file_names(Path::new(DIR))
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 2, "the test needs a sealed segment: {logs:?}");
    let path = Path::new(DIR).join(&logs[0]);
    let byte = disk.read_durable(&path).unwrap()[100];
    disk.corrupt(&path, 100, &[byte ^ 0x40]).unwrap();
    assert_eq!(c.restart(2), LogRecovery::EmptyOrDamaged);
    let r2 = c.r(2);
    assert!(
        r2.quarantined().is_some_and(|q| q.contains("quarantine-")),
        "{:?}",
        r2.quarantined()
    );
    assert_eq!(r2.log_end_offset().0, 0, "started empty");
    // It catches up from the leader.
    for _ in 0..10 {
        c.replicate();
    }
    assert_eq!(c.r(2).log_end_offset(), c.r(1).log_end_offset());
}

#[test]
fn last_replica_standing_keeps_the_partition_offline() {
    // T26 / KIP-966: the ISR shrinks to the leader, which acknowledges acks=all writes alone
    // (min.insync.replicas = 1), then loses power and its unsynced tail.
    let mut c = Cluster::new(1);
    c.crash(2, CrashMode::Process);
    c.crash(3, CrashMode::Process);
    assert_eq!(c.controller.leader_and_isr().isr, vec![ReplicaId(1)]);
    for seq in 0..5 {
        let out = c
            .r(1)
            .produce(&batch(9, seq), Acks::All, seq as u64, u64::MAX)
            .unwrap();
        assert!(
            matches!(out, Produced::Done(_)),
            "ISR = {{leader}} commits at once"
        );
    }
    c.restart(2);
    c.restart(3);
    c.crash(1, CrashMode::PowerLoss);
    // The followers are alive and intact but were not in the ISR: no clean leader.
    assert_eq!(c.controller.leader_and_isr().leader, None);
    assert_eq!(c.restart(1), LogRecovery::MayHaveLostTail);
    let rec = c.controller.leader_and_isr();
    assert_eq!(
        rec.leader, None,
        "a replica that may miss acked data is not elected: {rec:?}"
    );
    assert!(c.controller.elect_leader(false).is_err());
    for id in [1, 2, 3] {
        let e = c
            .r(id)
            .produce(&batch(9, 5), Acks::All, 0, u64::MAX)
            .unwrap_err();
        assert!(matches!(e, Error::NotLeader { .. }), "{e}");
    }
    // Only an explicit unclean election resumes it, and says so.
    let election = c.controller.elect_leader(true).unwrap();
    assert!(election.unclean);
}

#[test]
fn a_new_leader_answers_retries_with_the_original_offsets() {
    let mut c = Cluster::new(2);
    let batches: Vec<RecordBatch> = (0..5).map(|s| batch(42, s)).collect();
    let mut first = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        match c.r(1).produce(b, Acks::All, i as u64, u64::MAX).unwrap() {
            Produced::Waiting(info) | Produced::Done(info) => first.push(info),
        }
    }
    // Followers copy the five batches; the leader dies before answering anyone.
    c.replicate();
    c.replicate();
    c.crash(1, CrashMode::Process);
    let rec = c.controller.leader_and_isr();
    let new_leader = rec.leader.expect("a clean election");
    assert_ne!(new_leader, ReplicaId(1));
    for (i, b) in batches.iter().enumerate() {
        let info = match c
            .r(new_leader.0)
            .produce(b, Acks::Leader, 0, u64::MAX)
            .unwrap()
        {
            Produced::Done(info) | Produced::Waiting(info) => info,
        };
        assert!(info.duplicate, "batch {i} written twice");
        assert_eq!(
            (info.base_offset, info.last_offset),
            (first[i].base_offset, first[i].last_offset)
        );
    }
    assert_eq!(
        c.r(new_leader.0).log_end_offset(),
        first[4].last_offset.plus(1)
    );
}

/// `Replica::check_invariants` checks `log_start <= HW` (it could not fail before: it compared
/// the start with `max(HW, start)`). Moving the log start past a HW that lagging followers hold
/// back (retention or DeleteRecords beyond the committed data, which this crate leaves to the
/// embedder to avoid) is now caught.
#[test]
#[should_panic(expected = "HW")]
fn replica_invariants_catch_a_log_start_past_the_high_watermark() {
    let mut c = Cluster::new(2);
    c.r(1)
        .produce(&batch(1, 0), Acks::Leader, 0, u64::MAX)
        .unwrap();
    c.replicate();
    c.replicate();
    for seq in 1..4 {
        c.r(1)
            .produce(&batch(1, seq), Acks::Leader, 0, u64::MAX)
            .unwrap();
    }
    // Committed: offset 0 only (the followers have not fetched the rest yet).
    let hw = c.r(1).high_watermark();
    assert_eq!(hw.0, 1);
    c.r(1).check_invariants();
    c.r(1).log().advance_log_start(oncelog::Offset(3)).unwrap();
    c.r(1).check_invariants();
}

/// A leader that stops leading while an acks=all request waits answers it `Timeout` (the batch
/// is in its log and may survive in the next leader's), never `NotLeader`, which a client takes
/// as "not written" and re-sends even for a plain batch (`producer::retry`).
#[test]
fn a_waiting_request_failed_by_a_leader_change_is_an_unknown_outcome() {
    let mut c = Cluster::new(2);
    let mut plain = BatchBuilder::new();
    plain.push(0, None, Some(b"plain"));
    let plain = plain.build().unwrap();
    let waiting = c.r(1).produce(&plain, Acks::All, 7, u64::MAX).unwrap();
    assert!(matches!(waiting, Produced::Waiting(_)), "{waiting:?}");
    // One fetch by each follower: the batch is on every replica, not yet committed.
    c.replicate();
    c.controller.elect_preferred(ReplicaId(2), false).unwrap();
    c.publish();
    let done = c.r(1).take_completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 7);
    assert!(
        matches!(done[0].result, Err(Error::Timeout)),
        "{:?}",
        done[0].result
    );
}
