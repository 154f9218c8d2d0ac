//! Transactions in the log: transactional batches, COMMIT/ABORT markers, the last stable
//! offset, the aborted-transaction index and read_committed, through the public API.
//!
//! The model test drives three producers through random transactions (commits, aborts, empty
//! markers, non-transactional batches), segment rolls, clean restarts, crashes (process kill
//! and power loss), truncations, and deleted or damaged `.txnindex` files, and after every
//! step checks the log against a model: the last stable offset, and the records a
//! read_committed reader sees from random start offsets (no aborted record, no record of an
//! undecided transaction, every committed record once and in order).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::read_committed;
use common::sim::{crash, dir, sim_config, Rng};
use oncelog::format::file_name::{parse_file_name, FileKind};
use oncelog::io::sim::{CrashMode, SimStorage};
use oncelog::io::{OpenMode, Storage};
use oncelog::{
    BatchBuilder, Error, Isolation, Log, LogConfig, ManualClock, Marker, MarkerKind, Offset,
    ProducerEpoch, ProducerId, SyncMode,
};

fn fixture(seed: u64) -> (SimStorage, LogConfig) {
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut cfg = sim_config(&sim, &clock);
    cfg.sync = SyncMode::EveryAppend;
    (sim, cfg)
}

/// A fresh log on `seed`'s storage with two producers, `(id, epoch)` each.
fn two_producers(seed: u64) -> (SimStorage, LogConfig, Log, [(ProducerId, ProducerEpoch); 2]) {
    let (sim, cfg) = fixture(seed);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let pq = [log.init_producer().unwrap(), log.init_producer().unwrap()];
    (sim, cfg, log, pq)
}

fn batch(
    pid: ProducerId,
    epoch: ProducerEpoch,
    seq: i32,
    txn: bool,
    values: &[String],
) -> oncelog::RecordBatch {
    let mut b = BatchBuilder::new().producer(pid, epoch, seq);
    if txn {
        b = b.transactional();
    }
    for v in values {
        b.push(0, None, Some(v.as_bytes()));
    }
    b.build().unwrap()
}

fn marker(pid: ProducerId, epoch: ProducerEpoch, kind: MarkerKind) -> Marker {
    Marker {
        producer_id: pid,
        producer_epoch: epoch,
        coordinator_epoch: 0,
        kind,
    }
}

#[test]
fn commit_becomes_visible_and_abort_never_does() {
    let (_sim, _cfg, log, [(p, e), (q, qe)]) = two_producers(1);
    log.append(&batch(p, e, 0, true, &["p0".into(), "p1".into()]))
        .unwrap();
    log.append(&batch(q, qe, 0, false, &["q0".into()])).unwrap();
    // P's transaction is open from offset 0: nothing is stable, read_committed sees nothing.
    assert_eq!(log.last_stable_offset(), Offset(0));
    assert!(read_committed(&log, 0).is_empty());
    let uncommitted = log.read_with(Offset(0), 1 << 20, Isolation::ReadUncommitted);
    assert_eq!(uncommitted.unwrap().fetch.end_offset(), Some(3));

    let info = log
        .append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    assert_eq!(info.base_offset, Offset(3));
    assert_eq!(log.last_stable_offset(), Offset(4));
    assert_eq!(
        read_committed(&log, 0),
        vec![(0, "p0".into()), (1, "p1".into()), (2, "q0".into())]
    );

    // The next transaction at the bumped epoch from sequence 0, aborted.
    log.append(&batch(p, e + 1, 0, true, &["x".into()]))
        .unwrap();
    log.append(&batch(q, qe, 1, false, &["q1".into()])).unwrap();
    log.append_marker(&marker(p, e + 2, MarkerKind::Abort))
        .unwrap();
    let f = log
        .read_with(Offset(0), 1 << 20, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(f.aborted.len(), 1);
    assert_eq!(
        (
            f.aborted[0].producer_id,
            f.aborted[0].first_offset,
            f.aborted[0].last_offset
        ),
        (p, 4, 6)
    );
    let values: Vec<String> = read_committed(&log, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["p0", "p1", "q0", "q1"]);
}

#[test]
fn refused_transactional_writes_change_nothing() {
    let (_sim, cfg) = fixture(2);
    let log = Log::open(dir(), cfg).unwrap();
    let (p, e) = log.init_producer().unwrap();
    log.append(&batch(p, e, 0, true, &["a".into()])).unwrap();
    let end = log.log_end_offset();

    // A client may not write a control batch.
    let control = marker(p, e + 1, MarkerKind::Commit).to_batch(0).unwrap();
    assert!(matches!(
        log.append(&control),
        Err(Error::InvalidRecord { .. })
    ));
    // A non-transactional batch while the transaction is open.
    assert!(matches!(
        log.append(&batch(p, e, 1, false, &["b".into()])),
        Err(Error::InvalidTxnState { .. })
    ));
    // A marker ending the transaction without an epoch bump.
    assert!(matches!(
        log.append_marker(&marker(p, e, MarkerKind::Commit)),
        Err(Error::InvalidTxnState { .. })
    ));
    assert_eq!(log.log_end_offset(), end, "nothing was written");

    // Fenced markers: a lower producer epoch, a lower coordinator epoch.
    let mut m = marker(p, e + 3, MarkerKind::Abort);
    m.coordinator_epoch = 5;
    log.append_marker(&m).unwrap();
    let end = log.log_end_offset();
    assert!(matches!(
        log.append_marker(&marker(p, e + 2, MarkerKind::Abort)),
        Err(Error::ProducerFenced { .. })
    ));
    m.coordinator_epoch = 4;
    assert!(matches!(
        log.append_marker(&m),
        Err(Error::CoordinatorFenced {
            coordinator_epoch: 4,
            current: 5,
            ..
        })
    ));
    assert_eq!(log.log_end_offset(), end, "nothing was written");

    // A marker without an open transaction is written and completes nothing.
    m.coordinator_epoch = 5;
    log.append_marker(&m).unwrap();
    let f = log
        .read_with(Offset(0), 1 << 20, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(
        f.aborted.len(),
        1,
        "only the transaction the first ABORT ended"
    );
}

/// The anomaly the per-transaction epoch bump closes, at the log level: a batch of an aborted
/// transaction retried after the abort carries the old epoch and is fenced, so it can never
/// open (join) the next transaction.
#[test]
fn a_late_retry_of_an_aborted_transaction_is_fenced() {
    let (_sim, cfg) = fixture(3);
    let log = Log::open(dir(), cfg).unwrap();
    let (p, e) = log.init_producer().unwrap();
    log.append(&batch(p, e, 0, true, &["t1-a".into()])).unwrap();
    let late = batch(p, e, 1, true, &["t1-b".into()]); // sent, "lost", retried later
    log.append_marker(&marker(p, e + 1, MarkerKind::Abort))
        .unwrap();
    assert!(matches!(
        log.append(&late),
        Err(Error::ProducerFenced { .. })
    ));
    log.append(&batch(p, e + 1, 0, true, &["t2".into()]))
        .unwrap();
    log.append_marker(&marker(p, e + 2, MarkerKind::Commit))
        .unwrap();
    let values: Vec<String> = read_committed(&log, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["t2"]);
}

/// A transaction spanning segments, aborted; the index survives a clean restart (loaded from
/// `.txnindex`), a crash (the active segment's rebuilt) and deleted files (rebuilt), and a
/// reader starting in the first segment still learns of the abort in a later one.
#[test]
fn the_aborted_index_spans_segments_and_survives_restarts() {
    let (sim, cfg, log, [(p, e), (q, qe)]) = two_producers(4);
    log.append(&batch(p, e, 0, true, &["p-first".into()]))
        .unwrap();
    for i in 0..6 {
        log.append(&batch(q, qe, i, false, &[format!("q{i}")]))
            .unwrap();
        log.roll().unwrap();
    }
    log.append(&batch(p, e, 1, true, &["p-last".into()]))
        .unwrap();
    log.append_marker(&marker(p, e + 1, MarkerKind::Abort))
        .unwrap();
    log.roll().unwrap();
    let expect: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    let seen =
        |log: &Log| -> Vec<String> { read_committed(log, 0).into_iter().map(|(_, v)| v).collect() };
    assert_eq!(seen(&log), expect);
    let aborted = log.aborted_txns(0, log.log_end_offset().0);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].first_offset, 0);

    log.close().unwrap();
    let log = Log::open(dir(), cfg.clone()).unwrap();
    assert!(log.recovery_report().txn_indexes.loaded >= 7);
    assert_eq!(log.recovery_report().txn_indexes.rebuilt, 0);
    assert_eq!(seen(&log), expect);

    crash(log, &sim, CrashMode::PowerLoss, 4);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    assert_eq!(seen(&log), expect);
    log.close().unwrap();

    // Every .txnindex gone: all rebuilt from the batches, the same answer.
    for name in sim.file_names(&dir()) {
        if matches!(parse_file_name(&name), Some((_, FileKind::TxnIndex))) {
            sim.remove(&dir().join(&name)).unwrap();
        }
    }
    let log = Log::open(dir(), cfg).unwrap();
    assert!(log.recovery_report().txn_indexes.rebuilt >= 7);
    assert_eq!(seen(&log), expect);
    assert_eq!(log.aborted_txns(0, log.log_end_offset().0), aborted);
}

/// Truncation past a marker reopens its transaction (the producer table and the LSO follow
/// the log), and the aborted entry of a cut ABORT is gone.
#[test]
fn truncation_reopens_a_transaction_whose_marker_was_cut() {
    let (_sim, cfg) = fixture(5);
    let log = Log::open(dir(), cfg).unwrap();
    let (p, e) = log.init_producer().unwrap();
    log.append(&batch(p, e, 0, true, &["a".into()])).unwrap();
    let m = log
        .append_marker(&marker(p, e + 1, MarkerKind::Abort))
        .unwrap();
    assert_eq!(log.last_stable_offset(), Offset(2));
    assert_eq!(log.aborted_txns(0, 2).len(), 1);
    log.truncate_to(m.base_offset).unwrap();
    assert_eq!(log.last_stable_offset(), Offset(0), "open again");
    assert!(log.aborted_txns(0, 2).is_empty());
    // It can be ended again.
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    assert_eq!(read_committed(&log, 0), vec![(0, "a".into())]);
}

// ---- The model test ----

#[derive(Debug, Clone)]
enum Event {
    Data {
        pid: usize,
        epoch: ProducerEpoch,
        seq: i32,
        txn: bool,
        values: Vec<String>,
    },
    Marker {
        pid: usize,
        epoch: ProducerEpoch,
        commit: bool,
    },
}

/// The model: every event at its offset.
#[derive(Debug, Default)]
struct Model {
    events: BTreeMap<u64, (Event, u64)>, // offset -> (event, record count)
}

#[derive(Debug, Clone, Copy, Default)]
struct PState {
    epoch: ProducerEpoch,
    next_seq: i32,
    open: Option<u64>,
}

impl Model {
    fn end(&self) -> u64 {
        self.events
            .iter()
            .next_back()
            .map_or(0, |(o, (_, n))| o + n)
    }

    fn truncate(&mut self, at: u64) {
        self.events.split_off(&at);
    }

    fn producers(&self, n: usize, base_epoch: &[ProducerEpoch]) -> Vec<PState> {
        let mut ps: Vec<PState> = base_epoch
            .iter()
            .map(|&e| PState {
                epoch: e,
                ..PState::default()
            })
            .take(n)
            .collect();
        for (&o, (ev, count)) in &self.events {
            match ev {
                Event::Data {
                    pid,
                    epoch,
                    seq,
                    txn,
                    ..
                } => {
                    let s = &mut ps[*pid];
                    s.epoch = *epoch;
                    s.next_seq = seq + *count as i32;
                    if *txn && s.open.is_none() {
                        s.open = Some(o);
                    }
                }
                Event::Marker { pid, epoch, .. } => {
                    let s = &mut ps[*pid];
                    if *epoch != s.epoch {
                        s.next_seq = 0;
                    }
                    s.epoch = *epoch;
                    s.open = None;
                }
            }
        }
        ps
    }

    /// LSO and the records read_committed must show from `from`.
    fn committed_from(&self, from: u64) -> (u64, Vec<(u64, String)>) {
        // Decide each transaction: pid -> list of (first offset, data offsets, outcome).
        let mut open: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        let mut decided: BTreeMap<u64, bool> = BTreeMap::new(); // data offset -> committed
        for (&o, (ev, _)) in &self.events {
            match ev {
                Event::Data { pid, txn: true, .. } => open.entry(*pid).or_default().push(o),
                Event::Marker { pid, commit, .. } => {
                    for d in open.remove(pid).unwrap_or_default() {
                        decided.insert(d, *commit);
                    }
                }
                _ => {}
            }
        }
        let lso = open
            .values()
            .filter_map(|v| v.first().copied())
            .min()
            .unwrap_or(self.end());
        let mut out = Vec::new();
        for (&o, (ev, _)) in self.events.range(..lso) {
            if let Event::Data { txn, values, .. } = ev {
                let visible = !txn || decided.get(&o) == Some(&true);
                if visible {
                    for (i, v) in values.iter().enumerate() {
                        let off = o + i as u64;
                        if off >= from {
                            out.push((off, v.clone()));
                        }
                    }
                }
            }
        }
        (lso, out)
    }
}

fn txn_files(sim: &SimStorage) -> Vec<String> {
    sim.file_names(&dir())
        .into_iter()
        .filter(|n| matches!(parse_file_name(n), Some((_, FileKind::TxnIndex))))
        .collect()
}

fn run_model(seed: u64, steps: usize) -> (usize, usize, usize) {
    let (sim, cfg) = fixture(seed);
    let mut rng = Rng::new(seed);
    let mut log = Log::open(dir(), cfg.clone()).unwrap();
    let pids: Vec<(ProducerId, ProducerEpoch)> =
        (0..3).map(|_| log.init_producer().unwrap()).collect();
    let base_epochs: Vec<ProducerEpoch> = pids.iter().map(|p| p.1).collect();
    let mut model = Model::default();
    let (mut commits, mut aborts, mut restarts) = (0, 0, 0);
    let mut tag = 0u64;
    for step in 0..steps {
        let ps = model.producers(3, &base_epochs);
        let i = rng.below(3) as usize;
        let (pid, _) = pids[i];
        let s = ps[i];
        let roll = rng.below(100);
        let ctx = || format!("seed {seed} step {step}");
        if std::env::var_os("TXN_TRACE").is_some() {
            eprintln!(
                "step {step}: roll {roll} producer {i} {s:?} end {}",
                model.end()
            );
        }
        match roll {
            0..=49 => {
                let txn = s.open.is_some() || rng.chance(2, 3);
                let n = 1 + rng.below(3) as usize;
                let values: Vec<String> = (0..n)
                    .map(|_| {
                        tag += 1;
                        format!("v{tag}-{}", "x".repeat(rng.below(120) as usize))
                    })
                    .collect();
                let info = log
                    .append(&batch(pid, s.epoch, s.next_seq, txn, &values))
                    .unwrap_or_else(|e| panic!("{}: append: {e}", ctx()));
                let ev = Event::Data {
                    pid: i,
                    epoch: s.epoch,
                    seq: s.next_seq,
                    txn,
                    values,
                };
                model.events.insert(info.base_offset.0, (ev, n as u64));
            }
            50..=69 => {
                let commit = rng.chance(1, 2);
                let kind = if commit {
                    MarkerKind::Commit
                } else {
                    MarkerKind::Abort
                };
                // Ending an open transaction bumps the epoch; an empty marker may not.
                let epoch = if s.open.is_some() || rng.chance(1, 2) {
                    s.epoch + 1
                } else {
                    s.epoch
                };
                if s.open.is_some() {
                    if commit {
                        commits += 1
                    } else {
                        aborts += 1
                    }
                }
                let info = log
                    .append_marker(&marker(pid, epoch, kind))
                    .unwrap_or_else(|e| panic!("{}: marker: {e}", ctx()));
                let ev = Event::Marker {
                    pid: i,
                    epoch,
                    commit,
                };
                model.events.insert(info.base_offset.0, (ev, 1));
            }
            70..=79 => {
                log.roll().unwrap();
            }
            80..=84 => {
                log.close().unwrap();
                log = Log::open(dir(), cfg.clone()).unwrap();
                restarts += 1;
            }
            85..=89 => {
                let mode = if rng.chance(1, 2) {
                    CrashMode::Process
                } else {
                    CrashMode::PowerLoss
                };
                crash(log, &sim, mode, seed ^ step as u64);
                log = Log::open(dir(), cfg.clone())
                    .unwrap_or_else(|e| panic!("{}: reopen: {e}", ctx()));
                // Every append was durable (EveryAppend): nothing acknowledged is lost.
                assert_eq!(log.log_end_offset().0, model.end(), "{}", ctx());
                restarts += 1;
            }
            90..=94 => {
                let start = log.log_start_offset().0;
                let end = model.end();
                if end > start {
                    let at = start + rng.below(end - start);
                    let new_end = log.truncate_to(Offset(at)).unwrap().0;
                    model.truncate(new_end);
                    assert_eq!(new_end, model.end(), "{}", ctx());
                }
            }
            _ => {
                // Damage or delete a .txnindex, then restart.
                log.close().unwrap();
                let files = txn_files(&sim);
                if !files.is_empty() {
                    let name = &files[rng.below(files.len() as u64) as usize];
                    let path = dir().join(name);
                    if rng.chance(1, 2) {
                        sim.remove(&path).unwrap();
                    } else {
                        let f = sim.open(&path, OpenMode::Existing).unwrap();
                        let len = f.len().unwrap();
                        if len > 0 {
                            let at = rng.below(len);
                            f.write_at(at, &[0x5a]).unwrap();
                            f.sync_data().unwrap();
                        }
                    }
                }
                log = Log::open(dir(), cfg.clone()).unwrap();
                restarts += 1;
            }
        }
        // The checks.
        log.check_invariants();
        let (lso, _) = model.committed_from(0);
        assert_eq!(log.last_stable_offset().0, lso, "{}: LSO", ctx());
        let end = model.end();
        for from in [0, rng.below(end + 1), rng.below(end + 1)] {
            let (_, expect) = model.committed_from(from);
            assert_eq!(
                read_committed(&log, from),
                expect,
                "{}: read_committed from {from}",
                ctx()
            );
        }
    }
    log.close().unwrap();
    (commits, aborts, restarts)
}

#[test]
fn read_committed_matches_the_model_through_crashes_truncations_and_damage() {
    let (mut commits, mut aborts, mut restarts) = (0, 0, 0);
    for seed in common::sim::seeds(0..100) {
        let (c, a, r) = run_model(seed, 200);
        commits += c;
        aborts += a;
        restarts += r;
    }
    eprintln!("transactions model: {commits} committed, {aborts} aborted, {restarts} restarts");
    assert!(common::sim::seed_from_env().is_some() || (commits > 1000 && aborts > 1000));
}

// ---- Crash at every storage operation ----

/// A transactional workload (data batches, markers, rolls) on a frozen-at-`freeze_at` disk:
/// the first `freeze_at` mutating storage operations after setup succeed, every later one fails
/// without effect. Returns the log, the model of acknowledged events, the event whose call
/// failed (its outcome is unknown), and the operations the workload performed.
fn frozen_workload(
    seed: u64,
    freeze_at: Option<u64>,
) -> (SimStorage, LogConfig, Log, Model, Option<(Event, u64)>, u64) {
    let (sim, cfg) = fixture(seed);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let pids: Vec<(ProducerId, ProducerEpoch)> =
        (0..3).map(|_| log.init_producer().unwrap()).collect();
    let base_epochs: Vec<ProducerEpoch> = pids.iter().map(|p| p.1).collect();
    let start_ops = sim.op_count();
    if let Some(k) = freeze_at {
        sim.fail_after(k, oncelog::io::sim::FaultKind::Eio, true);
    }
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut pending = None;
    for step in 0..60u64 {
        let ps = model.producers(3, &base_epochs);
        let i = rng.below(3) as usize;
        let (pid, _) = pids[i];
        let s = ps[i];
        let (result, ev, n) = match rng.below(10) {
            0..=5 => {
                let txn = s.open.is_some() || rng.chance(3, 4);
                let n = 1 + rng.below(3) as usize;
                let values: Vec<String> = (0..n)
                    .map(|j| format!("s{step}r{j}-{}", "y".repeat(rng.below(300) as usize)))
                    .collect();
                let r = log.append(&batch(pid, s.epoch, s.next_seq, txn, &values));
                let ev = Event::Data {
                    pid: i,
                    epoch: s.epoch,
                    seq: s.next_seq,
                    txn,
                    values,
                };
                (r, ev, n as u64)
            }
            6..=8 => {
                let commit = rng.chance(1, 2);
                let kind = if commit {
                    MarkerKind::Commit
                } else {
                    MarkerKind::Abort
                };
                let epoch = s.epoch + 1;
                let r = log.append_marker(&marker(pid, epoch, kind));
                (
                    r,
                    Event::Marker {
                        pid: i,
                        epoch,
                        commit,
                    },
                    1,
                )
            }
            _ => {
                if log.roll().is_err() {
                    break;
                }
                continue;
            }
        };
        match result {
            Ok(info) => {
                model.events.insert(info.base_offset.0, (ev, n));
            }
            Err(_) => {
                pending = Some((ev, n));
                break;
            }
        }
    }
    let ops = sim.op_count() - start_ops;
    (sim, cfg, log, model, pending, ops)
}

/// Every storage-operation boundary of transactional workloads, crashed by power loss or a
/// process kill: the log reopens; every acknowledged event survives (`EveryAppend`); the call
/// that failed is either wholly in the log or not at all; and the last stable offset and
/// read_committed from several offsets match the model of what the log holds (no aborted or
/// undecided record ever visible, every committed transaction whole).
#[test]
fn crash_at_every_operation_boundary_keeps_read_committed_exact() {
    let mut states = 0u64;
    let mut landed = 0u64;
    for seed in common::sim::seeds(0..12) {
        let (_, _, dry, _, _, total) = frozen_workload(seed, None);
        dry.simulate_crash();
        for k in 0..=total {
            let (sim, cfg, log, mut model, pending, _) = frozen_workload(seed, Some(k));
            let mode = if k % 3 == 2 {
                CrashMode::Process
            } else {
                CrashMode::PowerLoss
            };
            crash(log, &sim, mode, seed ^ (k << 16));
            let ctx = format!("seed {seed} freeze-at-op {k} {mode:?}");
            let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
            let end = log.log_end_offset().0;
            if end != model.end() {
                let (ev, n) = pending
                    .clone()
                    .unwrap_or_else(|| panic!("{ctx}: end {end}, model {}", model.end()));
                assert_eq!(end, model.end() + n, "{ctx}: a partial write survived");
                model.events.insert(model.end(), (ev, n));
                landed += 1;
            }
            let (lso, _) = model.committed_from(0);
            assert_eq!(log.last_stable_offset().0, lso, "{ctx}: LSO");
            for from in [0, end / 3, end / 2, end.saturating_sub(2)] {
                assert_eq!(
                    read_committed(&log, from),
                    model.committed_from(from).1,
                    "{ctx}: read_committed from {from}"
                );
            }
            log.close().unwrap();
            states += 1;
        }
    }
    eprintln!(
        "transactions crash sweep: {states} crash states, {landed} failed calls found in the log"
    );
    assert!(common::sim::seed_from_env().is_some() || states > 300);
}

/// Retention with an open transaction: the log start passes the transaction's first offset,
/// the LSO stays at the log start until the transaction ends, its surviving records become
/// visible at COMMIT; a coordinator epoch whose marker retention deleted still fences, across a
/// restart; and the first segment's open-at-base carries the transaction that began below it.
#[test]
fn retention_with_an_open_transaction() {
    let (_sim, cfg, log, [(p, e), (q, qe)]) = two_producers(6);
    log.append(&batch(p, e, 0, true, &["p-gone".into()]))
        .unwrap(); // 0
    log.append(&batch(q, qe, 0, true, &["q-aborted".into()]))
        .unwrap(); // 1
    let mut m = marker(q, qe + 1, MarkerKind::Abort);
    m.coordinator_epoch = 7;
    log.append_marker(&m).unwrap(); // 2
    log.roll().unwrap();
    log.append(&batch(q, qe + 1, 0, false, &["q-plain".into()]))
        .unwrap(); // 3
    log.roll().unwrap();
    log.append(&batch(p, e, 1, true, &["p-kept".into()]))
        .unwrap(); // 4
    log.advance_log_start(Offset(3)).unwrap();
    assert_eq!(log.log_start_offset(), Offset(3));
    assert_eq!(
        log.last_stable_offset(),
        Offset(3),
        "p's transaction is open from 0"
    );
    assert!(read_committed(&log, 3).is_empty());
    log.close().unwrap();

    let log = Log::open(dir(), cfg.clone()).unwrap();
    assert_eq!(log.last_stable_offset(), Offset(3));
    m.coordinator_epoch = 6;
    assert!(
        matches!(
            log.append_marker(&m),
            Err(Error::CoordinatorFenced { current: 7, .. })
        ),
        "the coordinator epoch of a marker below the log still fences"
    );
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    assert_eq!(
        read_committed(&log, 3),
        vec![(3, "q-plain".into()), (4, "p-kept".into())]
    );
    log.close().unwrap();
}

/// A `.txnindex` that decodes and is bound to its segment but says the wrong thing (here: the
/// open transaction missing at the segment's end) disagrees with the producer table rebuilt
/// from the same batches: open does not trust it (no panic, no wrong LSO), rebuilds every
/// segment's index from the batches and says so.
#[test]
fn a_well_formed_but_wrong_txn_index_is_not_trusted() {
    let (sim, cfg, log, [(p, e), (q, qe)]) = two_producers(7);
    log.append(&batch(p, e, 0, true, &["open".into()])).unwrap(); // 0
    log.roll().unwrap();
    log.append(&batch(q, qe, 0, false, &["plain".into()]))
        .unwrap(); // 1
    log.close().unwrap();
    let path = dir().join("00000000000000000000.txnindex");
    let f = sim.open(&path, OpenMode::Existing).unwrap();
    let mut file = oncelog::format::txn_index::decode(&f.read_all().unwrap()).unwrap();
    assert_eq!(file.open_at_end, vec![(0, p)]);
    file.open_at_end.clear();
    let bytes = oncelog::format::txn_index::encode(&file);
    f.set_len(0).unwrap();
    f.write_at(0, &bytes).unwrap();
    f.sync_data().unwrap();
    drop(f);

    let log = Log::open(dir(), cfg).unwrap();
    assert!(log.recovery_report().txn_indexes.distrusted);
    assert_eq!(
        log.last_stable_offset(),
        Offset(0),
        "p's transaction is still open"
    );
    log.check_invariants();
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    assert_eq!(
        read_committed(&log, 0),
        vec![(0, "open".into()), (1, "plain".into())]
    );
}

/// The snapshot files in the log directory at or below `offset`, removed (lost, as power loss
/// can lose them): afterwards only the first segment's transaction file can say where a
/// transaction that began below the first segment began.
fn lose_snapshots_up_to(sim: &SimStorage, offset: u64) {
    for name in sim.file_names(&dir()) {
        if let Some((o, FileKind::Snapshot)) = parse_file_name(&name) {
            if o.0 <= offset {
                sim.remove(&dir().join(&name)).unwrap();
            }
        }
    }
}

/// Regression (fuzz finding 12, `log_model`): a transaction began at offset 0, the log start
/// then moved past its first batch (deleting that segment) and the transaction went on above
/// it. Truncation and then a crash each rebuild the producer table from the batches above the
/// first segment; with the snapshots that knew the transaction's start rotated away, the rebuild
/// took the transaction to begin at its first batch inside the log, and the last stable offset
/// rose above the log start. The first segment's transaction file says the transaction was open
/// at its base, and only a marker ends a transaction, so the rebuild keeps it beginning below.
#[test]
fn a_transaction_begun_below_the_first_segment_holds_the_lso_at_the_log_start() {
    let (sim, cfg, log, [(p, e), (q, f)]) = two_producers(12);
    let v = |s: &str| vec![s.to_string()];
    log.append(&batch(p, e, 0, true, &v("t0"))).unwrap(); // 0: p's transaction begins
    log.append(&batch(q, f, 0, false, &v("q0"))).unwrap(); // 1
    let base = log.roll().unwrap().0; // 2
    log.append(&batch(q, f, 1, false, &v("q1"))).unwrap(); // 2
    log.advance_log_start(Offset(base)).unwrap();
    log.append(&batch(p, e, 1, true, &v("t1"))).unwrap(); // 3: it goes on above the log
    log.roll().unwrap(); // seals segment 2 with its transaction file
    log.append(&batch(q, f, 2, false, &v("q2"))).unwrap(); // 4
    let cut = log.log_end_offset().0; // 5
    assert_eq!(log.last_stable_offset(), Offset(base));
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    log.append(&batch(q, f, 3, false, &v("q3"))).unwrap();
    log.take_producer_snapshot().unwrap();
    assert_eq!(log.last_stable_offset(), log.log_end_offset());

    lose_snapshots_up_to(&sim, cut);
    log.truncate_to(Offset(cut)).unwrap();
    assert_eq!(
        log.last_stable_offset(),
        Offset(base),
        "after truncation the transaction that began at 0 is open again: the LSO is the log start"
    );

    crash(log, &sim, CrashMode::Process, 1);
    lose_snapshots_up_to(&sim, cut);
    let log = Log::open(dir(), cfg).unwrap();
    assert_eq!(log.log_start_offset(), Offset(base));
    assert_eq!(
        log.last_stable_offset(),
        Offset(base),
        "after a crash, from the first segment's transaction file"
    );
    // The decision comes again; the transaction ends and everything is stable.
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

/// Producer p's transaction begins at 0, q appends at 1, the log rolls at 2 (returned), q
/// appends at 2, and the log start moves to 2: the active segment is the only one left, and
/// p's transaction, still open, began below it.
#[allow(clippy::type_complexity)]
fn begun_below_the_active_first_segment(
    seed: u64,
) -> (
    SimStorage,
    LogConfig,
    Log,
    [(ProducerId, ProducerEpoch); 2],
    u64,
) {
    let (sim, cfg, log, [(p, e), (q, f)]) = two_producers(seed);
    let v = |s: &str| vec![s.to_string()];
    log.append(&batch(p, e, 0, true, &v("t0"))).unwrap(); // 0: p's transaction begins
    log.append(&batch(q, f, 0, false, &v("q0"))).unwrap(); // 1
    let base = log.roll().unwrap().0; // 2: the active segment from here on
    log.append(&batch(q, f, 1, false, &v("q1"))).unwrap(); // 2
    log.advance_log_start(Offset(base)).unwrap();
    assert_eq!(log.segments().len(), 1, "only the active segment is left");
    (sim, cfg, log, [(p, e), (q, f)], base)
}

/// Regression (fuzz finding 13, `log_model`): finding 12 from the *active* segment. A
/// transaction began below the segment that retention left as the only one (the active one,
/// whose whole transaction file waits for its seal or a clean close); after a crash that lost
/// the snapshots, nothing durable said it was open at that base, the rebuild met it first at
/// its batch above the log start, and the last stable offset rose there. Retention now writes
/// the new first segment a witness of what is open at its base before it deletes anything;
/// each variant crashes (process or power loss) with every snapshot lost, and one truncates the
/// active segment first (its copy loses the file).
#[test]
fn a_transaction_begun_below_the_active_first_segment_holds_the_lso_after_a_crash() {
    for (seed, mode, truncate) in [
        (13, CrashMode::Process, false),
        (14, CrashMode::PowerLoss, false),
        (15, CrashMode::Process, true),
        (16, CrashMode::PowerLoss, true),
    ] {
        let (sim, cfg, log, [(p, e), (q, f)], base) = begun_below_the_active_first_segment(seed);
        let v = |s: &str| vec![s.to_string()];
        log.append(&batch(p, e, 1, true, &v("t1"))).unwrap(); // 3: it goes on above the log
        log.append(&batch(q, f, 2, false, &v("q2"))).unwrap(); // 4
        log.append(&batch(q, f, 3, false, &v("q3"))).unwrap(); // 5
        assert_eq!(log.last_stable_offset(), Offset(base));
        if truncate {
            log.truncate_to(Offset(5)).unwrap();
            assert_eq!(log.last_stable_offset(), Offset(base), "after truncation");
        }
        let end = log.log_end_offset();
        // Twice: the open after the first crash must keep the witness for the second (it
        // removes the active segment's files when it reopens it for appends).
        let mut log = log;
        for round in 0..2 {
            lose_snapshots_up_to(&sim, u64::MAX);
            crash(log, &sim, mode, seed + round);
            lose_snapshots_up_to(&sim, u64::MAX);
            log = Log::open(dir(), cfg.clone()).unwrap();
            let what = format!("seed {seed}, {mode:?}, truncated {truncate}, crash {round}");
            assert_eq!(log.log_start_offset(), Offset(base), "{what}");
            assert_eq!(log.log_end_offset(), end, "{what}: every append was synced");
            assert_eq!(
                log.last_stable_offset(),
                Offset(base),
                "{what}: p's transaction is open and began below the log start"
            );
        }
        log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
            .unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
    }
}

/// The second path of finding 13: the transaction that began below the first segment is
/// committed above it, a crash reopens the log (the producer table now says nothing is open,
/// and the first segment, active and without a file, used to be seeded from it: its record of
/// what was open at its base came back empty), and a truncation then cuts the COMMIT, so the
/// transaction is open again. The rebuild after the truncation must still know it began below
/// the log: open seeds the first segment from the log-start checkpoint's witness.
#[test]
fn a_commit_cut_after_a_crash_reopens_the_transaction_below_the_log_start() {
    for (seed, mode) in [(17, CrashMode::Process), (18, CrashMode::PowerLoss)] {
        let (sim, cfg, log, [(p, e), (q, f)], base) = begun_below_the_active_first_segment(seed);
        let v = |s: &str| vec![s.to_string()];
        log.append(&batch(p, e, 1, true, &v("t1"))).unwrap(); // 3
        let commit = log.log_end_offset(); // 4
        log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
            .unwrap();
        log.append(&batch(q, f, 2, false, &v("q2"))).unwrap(); // 5
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        let what = format!("seed {seed}, {mode:?}");

        lose_snapshots_up_to(&sim, u64::MAX);
        crash(log, &sim, mode, seed);
        lose_snapshots_up_to(&sim, u64::MAX);
        let log = Log::open(dir(), cfg.clone()).unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset(), "{what}");
        lose_snapshots_up_to(&sim, u64::MAX);
        log.truncate_to(commit).unwrap();
        assert_eq!(
            log.last_stable_offset(),
            Offset(base),
            "{what}: the COMMIT is cut, p's transaction (begun at 0) is open again"
        );
        lose_snapshots_up_to(&sim, u64::MAX);
        crash(log, &sim, mode, seed + 1);
        lose_snapshots_up_to(&sim, u64::MAX);
        let log = Log::open(dir(), cfg).unwrap();
        assert_eq!(
            log.last_stable_offset(),
            Offset(base),
            "{what}: after a crash"
        );
    }
}
