//! The prepared spare segment (src/log/spare.rs, docs/architecture.md "The prepared spare
//! segment"): the background thread creates the next segment's file ahead, and a roll only
//! renames and maps it. On the simulated storage: rolls use the spare; a crash (power loss or
//! process) at every storage operation across a roll that uses a spare loses no synced batch
//! and reports no corruption; a failed preparation or rename falls back to inline creation
//! without poisoning; truncation with a spare present; close and crashes leave a directory
//! recovery handles (R12 deletes a leftover spare).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::sim::{
    contents, crash, dir, fill_until_roll_is_next, make_batch, settle, sim_config, Failures,
};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::log::SPARE_FILE;
use oncelog::{Log, LogConfig, ManualClock, Offset, RecordBatch, SyncMode};

fn fixture(seed: u64, sync: SyncMode) -> (SimStorage, LogConfig) {
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(10_000));
    let mut cfg = sim_config(&sim, &clock);
    cfg.sync = sync;
    (sim, cfg)
}

fn has_spare(sim: &SimStorage) -> bool {
    sim.file_names(&dir()).iter().any(|n| n == SPARE_FILE)
}

fn values_at(batch: &RecordBatch, base: u64) -> Vec<(u64, Vec<u8>)> {
    batch
        .view()
        .records()
        .enumerate()
        .map(|(i, r)| {
            let v = r.unwrap().value.map(|v| v.to_vec()).unwrap_or_default();
            (base + i as u64, v)
        })
        .collect()
}

#[test]
fn rolls_use_the_prepared_spare() {
    let (sim, cfg) = fixture(1, SyncMode::Os);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    settle(&log);
    assert!(has_spare(&sim), "open prepares a spare");
    let mut tag = 0;
    for roll in 1..=5u64 {
        let b = fill_until_roll_is_next(&log, &mut tag);
        log.append(&b).unwrap();
        let stats = log.roll_stats();
        assert_eq!(stats.from_spare, roll, "roll {roll}: {stats:?}");
        assert_eq!(stats.created_inline, 0, "roll {roll}: {stats:?}");
        settle(&log);
        assert!(has_spare(&sim), "roll {roll} prepares the next spare");
    }
    assert_eq!(log.roll_stats().spare_failures, 0);
    // The spare is never taken for a segment.
    assert!(log
        .segments()
        .iter()
        .all(|s| !s.path().ends_with(SPARE_FILE)));
    let written = contents(&log);
    log.close().unwrap();
    assert!(!has_spare(&sim), "close removes the spare");
    let log = Log::open(dir(), cfg).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(contents(&log), written);
}

/// Without a background thread there is no spare: every roll creates its segment inline.
#[test]
fn no_background_thread_creates_inline() {
    let (sim, mut cfg) = fixture(2, SyncMode::Os);
    cfg.background_thread = false;
    let log = Log::open(dir(), cfg).unwrap();
    let mut tag = 0;
    for _ in 0..3 {
        let b = fill_until_roll_is_next(&log, &mut tag);
        log.append(&b).unwrap();
    }
    let stats = log.roll_stats();
    assert_eq!(
        (stats.from_spare, stats.created_inline),
        (0, 3),
        "{stats:?}"
    );
    assert!(!has_spare(&sim));
}

/// A leftover spare (crash with a spare ready) is deleted by the next open (row R12).
#[test]
fn crash_leaves_a_spare_that_open_deletes() {
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        let (sim, cfg) = fixture(3, SyncMode::Os);
        let log = Log::open(dir(), cfg.clone()).unwrap();
        settle(&log);
        assert!(has_spare(&sim));
        log.append(&make_batch(1, 1, 10, None)).unwrap();
        log.flush().unwrap();
        crash(log, &sim, mode, 3);
        let quiet = LogConfig {
            background_thread: false,
            ..cfg.clone()
        };
        let log = Log::open(dir(), quiet).unwrap();
        assert!(!has_spare(&sim), "{mode:?}: R12 deletes the leftover spare");
        assert_eq!(log.log_end_offset(), Offset(1));
        assert!(log.recovery_report().corruption.is_none());
    }
}

/// What a spare-roll workload wrote and acknowledged.
struct Outcome {
    acked: BTreeMap<u64, Vec<u8>>,
    written: BTreeMap<u64, Vec<u8>>,
    ops: u64,
}

/// Opens a log, makes sure a spare is ready and a segment is nearly full, then (with the disk
/// frozen after `freeze_at` more operations) appends across a roll that renames the spare and
/// syncs (`flush` in Os mode, every append in EveryAppend mode), stopping at the first error.
/// Finally crashes in `mode` and checks the reopened log.
fn spare_roll_case(sync: SyncMode, freeze_at: Option<u64>, mode: CrashMode, seed: u64) -> u64 {
    let what = format!("{sync:?} freeze {freeze_at:?} {mode:?} seed {seed}");
    let (sim, cfg) = fixture(seed, sync);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let mut out = Outcome {
        acked: BTreeMap::new(),
        written: BTreeMap::new(),
        ops: 0,
    };
    let mut tag = 0;
    let roller = fill_until_roll_is_next(&log, &mut tag);
    log.flush().unwrap();
    settle(&log);
    assert!(has_spare(&sim), "{what}: no spare before the roll");
    out.acked = contents(&log);
    out.written = out.acked.clone();
    let ops0 = sim.op_count();
    if let Some(k) = freeze_at {
        sim.fail_after(k, FaultKind::Eio, true);
    }
    let rolls_before = log.roll_stats().from_spare;
    let mut batches = vec![roller];
    for i in 0..4 {
        batches.push(make_batch(100 + i, 2, 120, None));
    }
    let mut failed = false;
    for b in &batches {
        let before = log.log_end_offset().0;
        match log.append(b) {
            Ok(info) => {
                out.written.extend(values_at(b, info.base_offset.0));
                if sync == SyncMode::EveryAppend {
                    out.acked.extend(values_at(b, info.base_offset.0));
                }
            }
            Err(_) => {
                if log.log_end_offset().0 > before {
                    out.written.extend(values_at(b, before));
                }
                failed = true;
                break;
            }
        }
    }
    if !failed && sync == SyncMode::Os && log.flush().is_ok() {
        out.acked = out.written.clone();
    }
    if freeze_at.is_none() {
        assert_eq!(
            log.roll_stats().from_spare,
            rolls_before + 1,
            "{what}: the roll did not use the spare"
        );
    }
    settle(&log);
    out.ops = sim.op_count() - ops0;
    crash(log, &sim, mode, seed ^ freeze_at.unwrap_or(0));
    let log = Log::open(dir(), cfg).unwrap_or_else(|e| {
        panic!(
            "{what}: reopen: {e}\n{}",
            common::sim::describe_disk(&sim, &LogConfig::for_tests())
        )
    });
    assert!(
        log.recovery_report().corruption.is_none(),
        "{what}: corruption reported: {:?}",
        log.recovery_report()
    );
    let got = contents(&log);
    for (o, v) in &out.acked {
        assert_eq!(got.get(o), Some(v), "{what}: synced record {o} lost");
    }
    for (o, v) in &got {
        assert_eq!(
            out.written.get(o),
            Some(v),
            "{what}: record {o} never written"
        );
    }
    if mode == CrashMode::Process {
        assert_eq!(
            got.len(),
            out.written.len(),
            "{what}: a process crash lost data"
        );
    }
    log.check_invariants();
    log.append(&make_batch(9_999, 1, 10, None))
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    log.close().unwrap();
    out.ops
}

/// A crash at every storage operation across a roll that renames the spare (the rename, the
/// background seal of the previous segment and the next spare's preparation, the syncs and
/// their directory fsync) recovers every synced batch and reports no corruption.
#[test]
fn crash_at_every_operation_across_a_spare_roll() {
    let mut failures = Failures::default();
    for sync in [SyncMode::Os, SyncMode::EveryAppend] {
        let total = spare_roll_case(sync, None, CrashMode::PowerLoss, 0);
        // The background thread's timing varies the count a little: sweep past it.
        for k in 0..total + 4 {
            for mode in [CrashMode::PowerLoss, CrashMode::Process] {
                for seed in 0..4 {
                    failures.check(|| {
                        spare_roll_case(sync, Some(k), mode, seed);
                    });
                }
            }
        }
        // And without a freeze: power loss right after the syncs returned.
        for seed in 0..32 {
            failures.check(|| {
                spare_roll_case(sync, None, CrashMode::PowerLoss, seed);
            });
        }
    }
    println!(
        "crash_at_every_operation_across_a_spare_roll: {} crash states",
        failures.checked
    );
    failures.finish("crash_at_every_operation_across_a_spare_roll");
}

/// A failed spare preparation (each of its operations: create, fallocate, fdatasync) or a failed
/// rename at roll is counted, removes the spare, does not poison the log, and the roll falls
/// back to creating the segment inline; later rolls use spares again.
#[test]
fn failed_preparation_falls_back_to_inline_creation() {
    for kind in [FaultKind::Eio, FaultKind::Enospc] {
        // k = 0: the rename at roll; k = 1..=3: the preparation of the next spare.
        for k in 0..4u64 {
            let what = format!("{kind:?} at op {k}");
            let (sim, cfg) = fixture(k, SyncMode::Os);
            let log = Log::open(dir(), cfg.clone()).unwrap();
            let mut tag = 0;
            let roller = fill_until_roll_is_next(&log, &mut tag);
            settle(&log);
            assert!(has_spare(&sim), "{what}");
            sim.fail_after(k, kind, false);
            log.append(&roller)
                .unwrap_or_else(|e| panic!("{what}: rolling append: {e}"));
            settle(&log);
            sim.clear_fault();
            let stats = log.roll_stats();
            assert!(!log.is_poisoned(), "{what}: {:?}", log.poison_reason());
            assert_eq!(stats.spare_failures, 1, "{what}: {stats:?}");
            if k == 0 {
                assert_eq!((stats.from_spare, stats.created_inline), (0, 1), "{what}");
                // The inline roll asked for a new spare, which worked.
                assert!(
                    has_spare(&sim),
                    "{what}: no new spare after the inline roll"
                );
            } else {
                assert_eq!((stats.from_spare, stats.created_inline), (1, 0), "{what}");
                assert!(!has_spare(&sim), "{what}: the failed spare was not removed");
                // No spare: the next roll creates its segment inline and asks for a new one.
                let b = fill_until_roll_is_next(&log, &mut tag);
                log.append(&b).unwrap();
                assert_eq!(log.roll_stats().created_inline, 1, "{what}");
                settle(&log);
            }
            let from_spare = log.roll_stats().from_spare;
            let b = fill_until_roll_is_next(&log, &mut tag);
            log.append(&b).unwrap();
            assert_eq!(
                log.roll_stats().from_spare,
                from_spare + 1,
                "{what}: spares not used again"
            );
            log.flush().unwrap();
            let flushed = contents(&log);
            settle(&log);
            crash(log, &sim, CrashMode::PowerLoss, k);
            let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert_eq!(contents(&log), flushed, "{what}");
            log.check_invariants();
        }
    }
}

/// Truncation with a spare present: the spare is not a segment (the truncation neither deletes
/// nor keeps it as one), the next roll still uses it, and the log reopens cleanly and after a
/// crash.
#[test]
fn truncation_while_a_spare_exists() {
    for mode in [None, Some(CrashMode::PowerLoss), Some(CrashMode::Process)] {
        let what = format!("{mode:?}");
        let (sim, cfg) = fixture(7, SyncMode::Os);
        let log = Log::open(dir(), cfg.clone()).unwrap();
        let mut tag = 0;
        for _ in 0..3 {
            let b = fill_until_roll_is_next(&log, &mut tag);
            log.append(&b).unwrap();
        }
        log.flush().unwrap();
        settle(&log);
        assert!(has_spare(&sim), "{what}");
        let cut = log.segments()[1].base_offset() + 1;
        let new_end = log.truncate_to(Offset(cut)).unwrap();
        assert!(new_end.0 <= cut, "{what}");
        assert!(has_spare(&sim), "{what}: truncation removed the spare");
        assert!(log
            .segments()
            .iter()
            .all(|s| !s.path().ends_with(SPARE_FILE)));
        log.check_invariants();
        let from_spare = log.roll_stats().from_spare;
        let b = fill_until_roll_is_next(&log, &mut tag);
        log.append(&b).unwrap();
        assert_eq!(log.roll_stats().from_spare, from_spare + 1, "{what}");
        log.flush().unwrap();
        let expect = contents(&log);
        settle(&log);
        match mode {
            None => {
                log.close().unwrap();
                assert!(!has_spare(&sim), "{what}");
            }
            Some(mode) => crash(log, &sim, mode, 7),
        }
        let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        assert_eq!(
            log.recovery_report().clean_shutdown,
            mode.is_none(),
            "{what}"
        );
        assert_eq!(contents(&log), expect, "{what}");
        log.check_invariants();
    }
}
