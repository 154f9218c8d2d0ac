//! Sync lanes (`SyncMode::EveryAppend` with several syncs in flight) on the simulated storage.
//!
//! Many threads append with `EveryAppend`, so several lanes msync concurrently while one thread
//! at a time writes the recovery-point checkpoint; 4 KiB segments make rolls and background
//! seals (which move the recovery point themselves) interleave with the lanes.
//!
//! * `power_loss_at_random_points_keeps_every_acknowledged_append`: the disk freezes at a random
//!   storage operation (`fail_after(k, Eio, sticky)`: nothing becomes durable after operation
//!   `k`), the appenders run on until the log is poisoned, then the machine loses power. Every
//!   append that returned Ok must survive with its bytes, and the reopen must not report
//!   corruption (synced data is never damaged, so nothing is ever "corrupt" here).
//! * `eio_in_one_lane_poisons_and_acknowledges_nothing_undurable`: one EIO (not sticky: the
//!   operations after it succeed) at a random operation while lanes are in flight. The log is
//!   poisoned, every later append answers `PreviousIo`, no append returns Ok unless its batch is
//!   below the recovery point when it returns, and every acknowledged append survives a power
//!   loss.
//! * `truncation_with_lanes_in_flight`: a thread truncates the log's tail over and over while
//!   the appenders run; truncation waits until no lane is in flight, so nothing deadlocks, the
//!   recovery point never passes the log end, and a power loss keeps everything below it.
//!
//! A failing case prints its seed and `k`; `ONCELOG_SEED=<seed>` runs that seed alone.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use common::sim::{crash, dir, make_batch, read_batches, seed_from_env, seeds, sim_config, Rng};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::{Error, Log, LogConfig, ManualClock, SyncMode};

const THREADS: u64 = 8;
const BATCHES_PER_THREAD: u64 = 12;

fn config(sim: &SimStorage) -> LogConfig {
    let clock = Arc::new(ManualClock::new(50_000));
    let mut cfg = sim_config(sim, &clock);
    cfg.sync = SyncMode::EveryAppend;
    cfg
}

/// What one appender thread saw.
#[derive(Debug, Default)]
struct Seen {
    /// offset -> value of every record of an append that returned Ok.
    acked: BTreeMap<u64, Vec<u8>>,
    errors: Vec<String>,
    /// Violations found on the thread (reported by the main thread with the seed).
    violations: Vec<String>,
    /// Appends that failed with their own lane's msync error.
    msync_failures: usize,
}

/// Runs `THREADS` appenders until each has appended `BATCHES_PER_THREAD` batches or got an
/// error; returns what they saw. With `truncating`, a concurrent truncation may lower the
/// recovery point below an acknowledged batch (removing it), so that check is skipped.
fn run_appenders(log: &Log, seed: u64, truncating: bool) -> Vec<Seen> {
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (t << 32));
                let mut seen = Seen::default();
                barrier.wait();
                for i in 0..BATCHES_PER_THREAD {
                    let tag = t * 1_000 + i;
                    let records = 1 + rng.below(3) as u32;
                    let len = 20 + rng.below(300) as usize;
                    let batch = make_batch(tag, records, len, None);
                    let was_poisoned = log.is_poisoned();
                    match log.append(&batch) {
                        Ok(info) => {
                            if was_poisoned {
                                seen.violations
                                    .push(format!("append {tag} succeeded on a poisoned log"));
                            }
                            if !truncating && log.recovery_point() <= info.last_offset {
                                seen.violations.push(format!(
                                    "append {tag} returned Ok at {:?} with the recovery point at {:?}",
                                    info.last_offset,
                                    log.recovery_point()
                                ));
                            }
                            for (j, r) in batch.view().records().enumerate() {
                                let v = r.unwrap().value.unwrap_or_default().to_vec();
                                seen.acked.insert(info.base_offset.0 + j as u64, v);
                            }
                        }
                        Err(e) => {
                            if was_poisoned && !matches!(e, Error::PreviousIo) {
                                seen.violations.push(format!(
                                    "poisoned log answered {e} instead of PreviousIo"
                                ));
                            }
                            if e.to_string().contains("msync") {
                                seen.msync_failures += 1;
                            }
                            seen.errors.push(e.to_string());
                            break;
                        }
                    }
                    if rng.chance(1, 4) {
                        std::thread::yield_now();
                    }
                }
                seen
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Mutating storage operations of a fault-free run of the workload (it varies a little with
/// thread timing; the sweeps only need its order of magnitude).
fn clean_run_ops(seed: u64) -> u64 {
    let sim = SimStorage::new(seed);
    let log = Log::open(dir(), config(&sim)).unwrap();
    let ops0 = sim.op_count();
    let seen = run_appenders(&log, seed, false);
    for s in &seen {
        assert!(s.errors.is_empty() && s.violations.is_empty(), "{s:?}");
    }
    assert!(
        log.max_sync_lanes_in_flight() >= 1,
        "no lane was ever claimed"
    );
    let ops = sim.op_count() - ops0;
    log.close().unwrap();
    ops
}

/// The outcome of one case, checked after a power loss and a reopen.
struct Case {
    poisoned: bool,
    msync_failures: usize,
    lanes_in_flight: usize,
}

fn run_case(seed: u64, k: u64, sticky: bool) -> Case {
    let what = format!("seed {seed} k {k} sticky {sticky}");
    let sim = SimStorage::new(seed);
    let cfg = config(&sim);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    sim.fail_after(k, FaultKind::Eio, sticky);
    let seen = run_appenders(&log, seed, false);
    let poisoned = log.is_poisoned();
    let lanes_in_flight = log.max_sync_lanes_in_flight();
    let mut acked = BTreeMap::new();
    let mut msync_failures = 0;
    for s in &seen {
        assert!(s.violations.is_empty(), "{what}: {:?}", s.violations);
        // An error without poisoning is a failed roll (the batch was not stored); a failed
        // sync poisons, which the checks below rely on.
        if s.msync_failures > 0 {
            assert!(poisoned, "{what}: a failed msync did not poison the log");
        }
        msync_failures += s.msync_failures;
        acked.extend(s.acked.iter().map(|(o, v)| (*o, v.clone())));
    }
    if poisoned {
        let b = make_batch(99_999, 1, 10, None);
        assert!(
            matches!(log.append(&b), Err(Error::PreviousIo)),
            "{what}: a poisoned log accepted an append"
        );
        assert!(
            matches!(log.flush(), Err(Error::PreviousIo))
                || log.recovery_point() == log.log_end_offset(),
            "{what}: a poisoned log reported a flush as durable"
        );
    }
    let rp = log.recovery_point().0;
    for &o in acked.keys() {
        assert!(
            o < rp,
            "{what}: acknowledged offset {o} above the recovery point {rp}"
        );
    }
    sim.clear_fault();
    crash(log, &sim, CrashMode::PowerLoss, seed ^ k ^ 0x10AD);
    let log = Log::open(dir(), cfg.clone())
        .unwrap_or_else(|e| panic!("{what}: reopen after power loss: {e}"));
    assert!(
        log.recovery_report().corruption.is_none(),
        "{what}: reopen reported corruption: {:?}",
        log.recovery_report()
    );
    let got: BTreeMap<u64, Vec<u8>> = read_batches(&log)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_iter()
        .flat_map(|b| b.records)
        .collect();
    for (o, v) in &acked {
        assert_eq!(
            got.get(o),
            Some(v),
            "{what}: acknowledged record {o} lost or changed after power loss"
        );
    }
    log.check_invariants();
    log.append(&make_batch(77_777, 2, 10, None))
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    log.close().unwrap();
    Case {
        poisoned,
        msync_failures,
        lanes_in_flight,
    }
}

/// Totals of a sweep.
#[derive(Debug, Default)]
struct Sweep {
    cases: u64,
    poisoned: u64,
    /// Cases in which an appender got its own lane's msync error.
    msync_cases: u64,
    max_lanes: usize,
}

/// Four cases per seed, each with the fault at a random operation of the workload.
fn sweep(default_seeds: std::ops::Range<u64>, sticky: bool) -> Sweep {
    let mut out = Sweep::default();
    for seed in seeds(default_seeds) {
        let ops = clean_run_ops(seed);
        let mut rng = Rng::new(seed);
        for _ in 0..4 {
            let case = run_case(seed, rng.below(ops + 1), sticky);
            out.cases += 1;
            out.poisoned += u64::from(case.poisoned);
            out.msync_cases += u64::from(case.msync_failures > 0);
            out.max_lanes = out.max_lanes.max(case.lanes_in_flight);
        }
    }
    out
}

/// Freeze the disk at a random operation, run on, lose power: nothing acknowledged is lost and
/// the reopen never finds corruption.
#[test]
fn power_loss_at_random_points_keeps_every_acknowledged_append() {
    let Sweep {
        cases,
        poisoned,
        max_lanes,
        ..
    } = sweep(0..40, true);
    println!(
        "power_loss_at_random_points: {cases} cases, {poisoned} poisoned, at most {max_lanes} \
         lanes in flight at once"
    );
    assert!(
        poisoned > 0,
        "no case froze the disk before the appends ended"
    );
}

/// One EIO at a random operation while other lanes are in flight.
#[test]
fn eio_in_one_lane_poisons_and_acknowledges_nothing_undurable() {
    let Sweep {
        cases,
        poisoned,
        msync_cases,
        max_lanes,
    } = sweep(100..140, false);
    println!(
        "eio_in_one_lane: {cases} cases, {poisoned} poisoned, {msync_cases} with a failed lane \
         msync, at most {max_lanes} lanes in flight at once"
    );
    assert!(msync_cases > 0, "the sweep never failed a lane's msync");
    assert!(
        seed_from_env().is_some() || max_lanes >= 2,
        "lanes never overlapped: the test did not exercise concurrent lanes"
    );
}

/// Truncation while appenders keep lanes in flight: truncation waits until no lane is in flight
/// before it lowers the recovery point, so no lane claimed before it can raise the recovery
/// point over truncated bytes. Checked: nothing deadlocks, the recovery point never passes the
/// log end, and after a power loss the log reopens without corruption, keeps everything below
/// the last recovery point and holds only bytes the log held before the crash.
#[test]
fn truncation_with_lanes_in_flight() {
    for seed in seeds(200..215) {
        let what = format!("seed {seed}");
        let sim = SimStorage::new(seed);
        let cfg = config(&sim);
        let log = Log::open(dir(), cfg.clone()).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let truncator = {
            let (log, stop, done) = (log.clone(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let end = log.log_end_offset().0;
                    if end > 4 {
                        let to = end - 1 - rng.below(4);
                        let new_end = log.truncate_to(oncelog::Offset(to)).unwrap();
                        // The log ends before the batch holding `to` (or at `to`, a boundary).
                        assert!(
                            new_end.0 <= to,
                            "truncate_to({to}) left the end at {new_end:?}"
                        );
                        done.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                    assert!(log.recovery_point() <= log.log_end_offset());
                    std::thread::yield_now();
                }
            })
        };
        let seen = run_appenders(&log, seed, true);
        // On a loaded machine the appenders can finish before the truncator was ever scheduled:
        // let it truncate at least once (the log end is past 4 by now) before stopping it.
        while done.load(std::sync::atomic::Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        truncator.join().unwrap();
        let truncations = done.load(std::sync::atomic::Ordering::Acquire);
        for s in &seen {
            assert!(s.errors.is_empty(), "{what}: {:?}", s.errors);
            assert!(s.violations.is_empty(), "{what}: {:?}", s.violations);
        }
        assert!(truncations > 0, "{what}: the truncator never ran");
        log.check_invariants();
        let rp = log.recovery_point().0;
        assert!(rp <= log.log_end_offset().0);
        let before: BTreeMap<u64, Vec<u8>> = read_batches(&log)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .into_iter()
            .flat_map(|b| b.records)
            .collect();
        crash(log, &sim, CrashMode::PowerLoss, seed ^ 0x7A);
        let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let got: BTreeMap<u64, Vec<u8>> = read_batches(&log)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .into_iter()
            .flat_map(|b| b.records)
            .collect();
        assert!(
            log.log_end_offset().0 >= rp,
            "{what}: lost data below the recovery point {rp}"
        );
        for (o, v) in &got {
            assert_eq!(
                before.get(o),
                Some(v),
                "{what}: record {o} was not in the log"
            );
        }
        log.check_invariants();
        log.close().unwrap();
    }
}
