//! T10 (fsync/msync failure, fsyncgate) and T11 (disk full) on the simulated storage.
//!
//! `SimStorage::fail_after(k, kind, sticky)` makes the k-th mutating storage operation from now
//! fail (EIO, ENOSPC or a short write) with no effect; a failed sync leaves the bytes dirty and
//! not durable, as Linux does after it reports an fsync error. The tests sweep `k` over every
//! operation of an `EveryAppend` workload and check: the failing append (or a later one) returns
//! an error; after any failed sync the log is poisoned and every later append answers
//! `PreviousIo` (a retried sync could report success for pages the kernel dropped); the recovery
//! point never covers a batch whose sync failed; no append that returned Ok is lost after a power
//! loss (INV-1 under the fsync-ack policy) and the recovered log is the model's prefix (INV-5);
//! reopening clears the poison. Disk-full cases: ENOSPC while creating or preallocating the next
//! segment fails the append with `is_disk_full()`, acknowledges nothing unstored, does not poison
//! the log, and appends resume after `clear_fault`; ENOSPC or a short write while writing a
//! producer snapshot never fails an append and never leaves a partial snapshot that is trusted;
//! a short write into a checkpoint (recovery point, log start, producer-id block) fails the call
//! and leaves the previous checkpoint readable after a crash. Finally, a file system without
//! `fallocate` (zero-filled preallocation) behaves the same.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::sim::{
    contents, crash, dir, fill_until_roll_is_next, make_batch, read_batches,
    rebuild_producer_state, settle, sim_config, Failures,
};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::{Error, Log, LogConfig, ManualClock, Offset, RecordBatch, SyncMode};

fn fixture(seed: u64, f: impl FnOnce(&mut LogConfig)) -> (SimStorage, Arc<ManualClock>, LogConfig) {
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(50_000));
    let mut cfg = sim_config(&sim, &clock);
    f(&mut cfg);
    (sim, clock, cfg)
}

fn values_of(batch: &RecordBatch) -> Vec<Vec<u8>> {
    batch
        .view()
        .records()
        .map(|r| r.unwrap().value.unwrap_or_default().to_vec())
        .collect()
}

const WORKLOAD: u64 = 45;

/// The batch appended at step `i` of the EIO workload (some idempotent).
fn workload_batch(i: u64, pid: oncelog::ProducerId, seq: &mut i32) -> RecordBatch {
    let records = 1 + (i % 3) as u32;
    let len = 40 + (i * 37 % 260) as usize;
    if i.is_multiple_of(2) {
        let b = make_batch(i, records, len, Some((pid, 0, *seq)));
        *seq += records as i32;
        b
    } else {
        make_batch(i, records, len, None)
    }
}

/// Runs the EveryAppend workload with one EIO (or a sticky one) after `k` operations; returns
/// the number of operations the clean run issues when `k` is `None`.
fn eio_case(k: Option<u64>, sticky: bool, mode: CrashMode) -> (u64, bool, bool) {
    let (sim, clock, cfg) = fixture(k.unwrap_or(0), |c| c.sync = SyncMode::EveryAppend);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let (pid, _) = log.init_producer().unwrap();
    let ops0 = sim.op_count();
    if let Some(k) = k {
        sim.fail_after(k, FaultKind::Eio, sticky);
    }
    let what = format!("k {k:?} sticky {sticky} {mode:?}");
    let mut seq = 0;
    // Offsets of appends that returned Ok (acknowledged, so durable) and everything written.
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut written: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut first_error: Option<String> = None;
    let mut unacked_written = false;
    for i in 0..WORKLOAD {
        clock.advance(3);
        let was_poisoned = log.is_poisoned();
        let batch = workload_batch(i, pid, &mut seq);
        let before = log.log_end_offset().0;
        match log.append(&batch) {
            Ok(info) => {
                assert!(
                    !was_poisoned,
                    "{what}: append {i} succeeded on a poisoned log"
                );
                assert!(!info.duplicate);
                for (j, v) in values_of(&batch).into_iter().enumerate() {
                    acked.insert(info.base_offset.0 + j as u64, v.clone());
                    written.insert(info.base_offset.0 + j as u64, v);
                }
                assert!(
                    log.recovery_point() > info.last_offset,
                    "{what}: EveryAppend returned before the batch was durable"
                );
            }
            Err(e) => {
                assert!(k.is_some(), "{what}: append failed without a fault: {e}");
                if was_poisoned {
                    assert!(
                        matches!(e, Error::PreviousIo),
                        "{what}: poisoned log answered {e} instead of PreviousIo"
                    );
                }
                first_error.get_or_insert_with(|| e.to_string());
                let after = log.log_end_offset().0;
                if after > before {
                    unacked_written = true;
                    // Copied, but its sync failed: present in memory, not acknowledged.
                    for (j, v) in values_of(&batch).into_iter().enumerate() {
                        written.insert(before + j as u64, v);
                    }
                    assert!(
                        log.recovery_point().0 <= before,
                        "{what}: recovery point {:?} covers a batch at {before} whose sync failed",
                        log.recovery_point()
                    );
                    assert!(
                        log.is_poisoned(),
                        "{what}: a failed sync did not poison the log"
                    );
                }
                // A failed roll or snapshot rolls back the append and does not poison.
                if !log.is_poisoned() {
                    // Undo the sequence advance: the batch was not stored.
                    if i.is_multiple_of(2) && after == before {
                        seq -= batch.record_count() as i32;
                    }
                }
            }
        }
        settle(&log);
    }
    let ops = sim.op_count() - ops0;
    let poisoned = log.is_poisoned();
    if log.is_poisoned() {
        // Every later write is refused; a flush cannot "succeed" over lost pages either.
        let b = make_batch(9_999, 1, 10, None);
        assert!(matches!(log.append(&b), Err(Error::PreviousIo)), "{what}");
    }
    let end_written = log.log_end_offset().0;
    crash(log, &sim, mode, k.unwrap_or(0) ^ 0x5EED);
    let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(
        !log.is_poisoned(),
        "{what}: reopen did not clear the poison"
    );
    let got = contents(&log);
    let end = log.log_end_offset().0;
    assert!(
        end <= end_written,
        "{what}: recovered end past the written end"
    );
    for (o, v) in &acked {
        assert_eq!(
            got.get(o),
            Some(v),
            "{what}: acknowledged record {o} lost ({first_error:?})"
        );
    }
    for (o, v) in &got {
        assert_eq!(
            written.get(o),
            Some(v),
            "{what}: record {o} differs from what was written"
        );
    }
    if mode == CrashMode::Process {
        assert_eq!(end, end_written, "{what}: a process crash lost data");
    }
    let batches = read_batches(&log).unwrap();
    assert_eq!(
        log.producer_state(),
        rebuild_producer_state(&log, &batches),
        "{what}: INV-9"
    );
    log.append(&make_batch(7_777, 2, 10, None))
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    log.check_invariants();
    log.close().unwrap();
    (ops, poisoned, unacked_written)
}

/// T10: one EIO (then success, fsyncgate style) and a sticky EIO at every operation of an
/// EveryAppend workload.
#[test]
fn eio_at_every_operation_with_every_append() {
    let (total, _, _) = eio_case(None, false, CrashMode::PowerLoss);
    let mut failures = Failures::default();
    let (mut poisoned, mut unacked) = (0, 0);
    for k in 0..=total {
        for (sticky, mode) in [
            (false, CrashMode::PowerLoss),
            (true, CrashMode::PowerLoss),
            (false, CrashMode::Process),
        ] {
            failures.check(|| {
                let (_, p, u) = eio_case(Some(k), sticky, mode);
                poisoned += u64::from(p);
                unacked += u64::from(u);
            });
        }
    }
    println!(
        "eio_at_every_operation_with_every_append: {} ops, {} crash states, {poisoned} poisoned, \
         {unacked} with a written but unacknowledged batch",
        total, failures.checked
    );
    assert!(
        poisoned > 0 && unacked > 0,
        "the sweep never hit a failed sync"
    );
    failures.finish("eio_at_every_operation_with_every_append");
}

/// T11: ENOSPC while creating (k = 0) or preallocating (k = 1) the next segment inline. No
/// background thread, so no spare segment is prepared ahead and the roll's first operations are
/// `Segment::create`'s (a failed spare is tests/spare_segment.rs's
/// `failed_preparation_falls_back_to_inline_creation`).
#[test]
fn enospc_at_roll_fails_the_append_without_poisoning() {
    for sync in [SyncMode::Os, SyncMode::EveryAppend] {
        for k in 0..2u64 {
            for sticky in [false, true] {
                let what = format!("{sync:?} k {k} sticky {sticky}");
                let (sim, _clock, cfg) = fixture(k, |c| {
                    c.sync = sync;
                    c.background_thread = false;
                });
                let log = Log::open(dir(), cfg.clone()).unwrap();
                let mut tag = 0;
                let mut acked = BTreeMap::new();
                let roller = fill_until_roll_is_next(&log, &mut tag);
                for (o, v) in contents(&log) {
                    acked.insert(o, v);
                }
                let end = log.log_end_offset();
                let segments = log.segments().len();
                sim.fail_after(k, FaultKind::Enospc, sticky);
                let err = log.append(&roller).unwrap_err();
                assert!(err.is_disk_full(), "{what}: {err} is not disk-full");
                assert_eq!(
                    log.log_end_offset(),
                    end,
                    "{what}: a failed roll moved the end"
                );
                assert_eq!(log.segments().len(), segments, "{what}");
                assert!(!log.is_poisoned(), "{what}: a failed roll poisoned the log");
                if sticky {
                    let again = log.append(&roller).unwrap_err();
                    assert!(again.is_disk_full(), "{what}: {again}");
                }
                sim.clear_fault();
                let info = log
                    .append(&roller)
                    .unwrap_or_else(|e| panic!("{what}: append after space freed: {e}"));
                assert_eq!(info.base_offset, end, "{what}");
                assert_eq!(log.segments().len(), segments + 1, "{what}: no roll");
                for (j, v) in values_of(&roller).into_iter().enumerate() {
                    acked.insert(end.0 + j as u64, v);
                }
                for _ in 0..5 {
                    let b = make_batch(tag, 1, 100, None);
                    tag += 1;
                    let info = log.append(&b).unwrap();
                    for (j, v) in values_of(&b).into_iter().enumerate() {
                        acked.insert(info.base_offset.0 + j as u64, v);
                    }
                }
                log.flush().unwrap();
                settle(&log);
                crash(log, &sim, CrashMode::PowerLoss, k + 17);
                let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                assert_eq!(
                    contents(&log),
                    acked,
                    "{what}: flushed data after the failed roll"
                );
                log.check_invariants();
            }
        }
    }
}

/// T11: ENOSPC or a short write at each operation of a producer-snapshot write never fails an
/// append, and no partial snapshot is trusted after a crash. Both ways a snapshot is written:
/// inline by the appender (no background thread) and by the background thread (the default).
#[test]
fn snapshot_write_failures_do_not_break_appends() {
    let mut failures = Failures::default();
    for kind in [FaultKind::Enospc, FaultKind::ShortWrite, FaultKind::Eio] {
        for k in 0..7u64 {
            for mode in [CrashMode::Process, CrashMode::PowerLoss] {
                for background in [false, true] {
                    failures.check(|| snapshot_fault_case(kind, k, mode, background));
                }
            }
        }
    }
    println!(
        "snapshot_write_failures_do_not_break_appends: {} cases",
        failures.checked
    );
    failures.finish("snapshot_write_failures_do_not_break_appends");
}

/// A log whose only storage operations on the append path are producer snapshots (see
/// `snapshot_fault_case`), its producer and its appender: batch `i` of that producer, 2 records
/// at sequence `2 * i`.
fn snapshot_workload(
    seed: u64,
    background: bool,
) -> (
    SimStorage,
    LogConfig,
    Log,
    oncelog::ProducerId,
    impl FnMut(&Log, u64) -> oncelog::Result<oncelog::AppendInfo>,
) {
    let (sim, clock, cfg) = fixture(seed, |c| {
        c.segment_bytes = 8 << 20;
        c.index_max_entries = 1 << 16;
        c.snapshot_interval_bytes = 2048;
        c.background_thread = background;
    });
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let (pid, _) = log.init_producer().unwrap();
    let mut seq = 0;
    let append = move |log: &Log, i: u64| {
        clock.advance(1);
        let b = make_batch(i, 2, 200, Some((pid, 0, seq)));
        seq += 2;
        log.append(&b)
    };
    (sim, cfg, log, pid, append)
}

fn snapshot_fault_case(kind: FaultKind, k: u64, mode: CrashMode, background: bool) {
    let what = format!("{kind:?} at snapshot op {k}, {mode:?}, background {background}");
    // Big segments: no rolls, so the only storage operations of an Os-mode append are the
    // snapshots taken every `snapshot_interval_bytes` (the background thread has nothing else
    // to do: no retention, no interval syncs, and the spare segment is prepared right after
    // open, before the first snapshot). 8 MiB, not 1 MiB: on a loaded machine the background
    // thread can lag so far behind the waiting loop below that 1 MiB rolled, and the fault then
    // hit the seal (which poisons) instead of a snapshot.
    let (sim, cfg, log, pid, mut append) = snapshot_workload(k, background);
    // Reach a state with snapshots, then arm the fault just before the next snapshot.
    let mut i = 0;
    while common::sim::snapshot_files(&sim, &dir()).len() < 2 {
        append(&log, i).unwrap();
        i += 1;
    }
    sim.fail_after(k, kind, false);
    let ops_before = sim.op_count();
    if background {
        // Appends until the background thread starts writing a queued snapshot, then waits
        // until that write (failed or not) is done.
        while sim.op_count() == ops_before {
            let r = append(&log, i);
            assert!(r.is_ok(), "{what}: append failed: {r:?}");
            i += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        common::sim::settle(&log);
    } else {
        // Appends until the snapshot (and any fault) has happened.
        while sim.op_count() - ops_before < 8 {
            let r = append(&log, i);
            assert!(r.is_ok(), "{what}: append failed: {r:?}");
            i += 1;
        }
    }
    assert!(
        !log.is_poisoned(),
        "{what}: a failed snapshot poisoned the log: {:?}",
        log.poison_reason()
    );
    sim.clear_fault();
    for _ in 0..3 {
        append(&log, i).unwrap();
        i += 1;
    }
    let end = log.log_end_offset();
    log.flush().unwrap();
    crash(log, &sim, mode, k);
    let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_eq!(log.log_end_offset(), end, "{what}");
    let batches = read_batches(&log).unwrap();
    assert_eq!(
        log.producer_state(),
        rebuild_producer_state(&log, &batches),
        "{what}: a partial snapshot was trusted (INV-9)"
    );
    assert!(
        !sim.file_names(&dir())
            .iter()
            .any(|n| n.ends_with(".tmp") && n != oncelog::log::SPARE_FILE),
        "{what}: temp file left after open"
    );
    // The dedup window still works.
    let b = make_batch(i - 1, 2, 200, Some((pid, 0, 2 * (i as i32 - 1))));
    assert!(
        log.append(&b).unwrap().duplicate,
        "{what}: retry of the last batch"
    );
}

/// The disk fills up while the background thread writes producer snapshots (creating a file
/// still works, its data does not: what a real file system out of blocks does). Every failed
/// snapshot removes its temporary, so no `*.snapshot.tmp` is left (before: one zero-byte
/// temporary per failed snapshot); appends keep working; the failures are counted and reported
/// once; once space is freed snapshots are written again, and a crash recovers everything.
#[test]
fn disk_full_during_snapshots_leaves_no_temp_file() {
    for background in [true, false] {
        let what = format!("background {background}");
        let (sim, cfg, log, _, mut append_result) = snapshot_workload(5, background);
        let mut append = |log: &Log, i: u64| {
            append_result(log, i).unwrap_or_else(|e| panic!("{what}: append {i}: {e}"))
        };
        let mut i = 0;
        while common::sim::snapshot_files(&sim, &dir()).len() < 2 {
            append(&log, i);
            i += 1;
        }
        settle(&log);
        let before = log.best_effort_failures();
        assert_eq!(before.snapshot, 0, "{what}");

        sim.set_disk_full(true);
        for _ in 0..60 {
            append(&log, i);
            i += 1;
            settle(&log);
        }
        let failures = log.best_effort_failures();
        let temps: Vec<String> = sim
            .file_names(&dir())
            .into_iter()
            .filter(|n| n.ends_with(".tmp") && n != oncelog::log::SPARE_FILE)
            .collect();
        assert!(
            temps.is_empty(),
            "{what}: failed snapshots left {temps:?} ({failures:?})"
        );
        assert!(failures.snapshot >= 5, "{what}: {failures:?}");
        assert!(failures.snapshot_reported, "{what}: never reported");
        assert!(!log.is_poisoned(), "{what}");

        sim.set_disk_full(false);
        let newest = |sim: &SimStorage| common::sim::snapshot_files(sim, &dir()).pop();
        let stale = newest(&sim);
        for _ in 0..10 {
            append(&log, i);
            i += 1;
            settle(&log);
        }
        assert_ne!(newest(&sim), stale, "{what}: snapshots resume");
        assert_eq!(
            log.best_effort_failures().snapshot,
            failures.snapshot,
            "{what}"
        );
        let end = log.log_end_offset();
        let state = log.producer_state();
        log.flush().unwrap();
        crash(log, &sim, CrashMode::PowerLoss, 9);
        let log = Log::open(dir(), cfg).unwrap();
        assert_eq!(log.log_end_offset(), end, "{what}");
        assert_eq!(log.producer_state(), state, "{what}");
    }
}

/// Open deletes the temporary of every atomic replace a log directory can hold (recovery row
/// R12), whatever left it: a crash inside the replace, or a failed removal after a failure.
#[test]
fn open_removes_every_kind_of_leftover_temporary() {
    use oncelog::io::{OpenMode, Storage};
    let (sim, _clock, cfg) = fixture(3, |_| {});
    let log = Log::open(dir(), cfg.clone()).unwrap();
    for i in 0..40 {
        log.append(&make_batch(i, 2, 200, None)).unwrap();
    }
    settle(&log);
    crash(log, &sim, CrashMode::Process, 1);
    let temps = [
        "00000000000000000000.log.tmp".to_string(),
        "00000000000000000012.snapshot.tmp".to_string(),
        oncelog::log::SPARE_FILE.to_string(),
        format!("{}.tmp", oncelog::log::checkpoints::RECOVERY_POINT_FILE),
        format!("{}.tmp", oncelog::log::checkpoints::LOG_START_FILE),
        format!("{}.tmp", oncelog::log::checkpoints::CLEAN_SHUTDOWN_FILE),
        format!("{}.tmp", oncelog::log::PRODUCER_IDS_FILE),
        format!("{}.tmp", oncelog::replica::EPOCH_CHECKPOINT_FILE),
        format!("{}.tmp", oncelog::replica::HW_CHECKPOINT_FILE),
        format!("{}.tmp", oncelog::replica::BOOT_ID_FILE),
    ];
    for name in &temps {
        let f = sim
            .open(&dir().join(name), OpenMode::CreateTruncate)
            .unwrap();
        f.write_at(0, b"half").unwrap();
    }
    let log = Log::open(dir(), cfg).unwrap();
    let left: Vec<String> = sim
        .file_names(&dir())
        .into_iter()
        .filter(|n| n.ends_with(".tmp") && n != oncelog::log::SPARE_FILE)
        .collect();
    assert!(left.is_empty(), "left after open: {left:?}");
    assert_eq!(log.log_end_offset().0, 80);
}

/// A short write into the recovery-point slot fails the flush (and poisons); after a crash the
/// other slot still holds the previous recovery point.
#[test]
fn short_write_into_recovery_point_keeps_the_old_one() {
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        for seed in 0..8 {
            let what = format!("{mode:?} seed {seed}");
            let (sim, _clock, cfg) = fixture(seed, |_| {});
            let log = Log::open(dir(), cfg.clone()).unwrap();
            for i in 0..5 {
                log.append(&make_batch(i, 2, 50, None)).unwrap();
            }
            log.flush().unwrap();
            let synced = log.recovery_point();
            for i in 5..8 {
                log.append(&make_batch(i, 2, 50, None)).unwrap();
            }
            // flush: msync of the segment (op 0), then the slot write (op 1), then its fsync.
            // First let the background thread finish the spare segment requested at open.
            settle(&log);
            sim.fail_after(1, FaultKind::ShortWrite, false);
            let err = log.flush().unwrap_err();
            assert!(log.is_poisoned(), "{what}: {err}");
            assert_eq!(
                log.recovery_point(),
                synced,
                "{what}: recovery point advanced"
            );
            assert!(matches!(
                log.append(&make_batch(99, 1, 5, None)),
                Err(Error::PreviousIo)
            ));
            crash(log, &sim, mode, seed);
            let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert_eq!(
                log.recovery_report().checkpoint_recovery_point,
                synced.0,
                "{what}: the previous recovery point was not readable"
            );
            assert!(log.log_end_offset() >= synced);
        }
    }
}

/// A short write into the log-start checkpoint fails `advance_log_start` and the previous log
/// start survives a crash; the same for the producer-id block checkpoint.
#[test]
fn short_write_into_atomic_checkpoints_keeps_the_old_one() {
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        // Log start: write_atomic = create tmp (op 0), write (op 1), fsync, rename, fsync dir.
        let (sim, _clock, cfg) = fixture(1, |_| {});
        let log = Log::open(dir(), cfg.clone()).unwrap();
        for i in 0..10 {
            log.append(&make_batch(i, 1, 50, None)).unwrap();
        }
        log.advance_log_start(Offset(3)).unwrap();
        log.flush().unwrap();
        // The spare segment requested at open is prepared by the background thread: wait, so
        // the fault hits the checkpoint write and not the spare.
        settle(&log);
        sim.fail_after(1, FaultKind::ShortWrite, false);
        assert!(log.advance_log_start(Offset(6)).is_err(), "{mode:?}");
        crash(log, &sim, mode, 3);
        let log = Log::open(dir(), cfg).unwrap();
        assert_eq!(log.log_start_offset(), Offset(3), "{mode:?}: log start");
        assert!(log.recovery_report().corruption.is_none(), "{mode:?}");
        drop(log);

        // Producer ids: the second block is reserved after 1024 ids.
        let (sim, _clock, cfg) = fixture(2, |_| {});
        let log = Log::open(dir(), cfg.clone()).unwrap();
        let mut max = -1;
        for _ in 0..1024 {
            max = log.init_producer().unwrap().0 .0;
        }
        settle(&log);
        sim.fail_after(1, FaultKind::ShortWrite, false);
        assert!(
            log.init_producer().is_err(),
            "{mode:?}: id block write should fail"
        );
        crash(log, &sim, mode, 4);
        let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{mode:?}: reopen: {e}"));
        let (next, _) = log.init_producer().unwrap();
        assert!(
            next.0 > max,
            "{mode:?}: id {} reused (max handed out {max})",
            next.0
        );
    }
}

/// A file system without fallocate: segments are zero-filled and synced instead; the log rolls,
/// recovers flushed data after power loss and everything after a process crash.
#[test]
fn fallocate_unsupported_behaves_the_same() {
    for sync in [SyncMode::Os, SyncMode::EveryAppend] {
        for mode in [CrashMode::Process, CrashMode::PowerLoss] {
            let what = format!("{sync:?} {mode:?}");
            let (sim, clock, cfg) = fixture(5, |c| c.sync = sync);
            sim.set_fallocate_unsupported(true);
            let log = Log::open(dir(), cfg.clone()).unwrap();
            let (pid, _) = log.init_producer().unwrap();
            let mut seq = 0;
            for i in 0..60 {
                clock.advance(2);
                let b = make_batch(i, 2, 120, Some((pid, 0, seq)));
                seq += 2;
                log.append(&b).unwrap();
            }
            assert!(log.segments().len() > 3, "{what}: no rolls");
            log.flush().unwrap();
            let flushed = contents(&log);
            for i in 60..70 {
                let b = make_batch(i, 2, 120, Some((pid, 0, seq)));
                seq += 2;
                log.append(&b).unwrap();
            }
            let all = contents(&log);
            settle(&log);
            crash(log, &sim, mode, 9);
            let log = Log::open(dir(), cfg.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = contents(&log);
            let expect = if mode == CrashMode::Process || sync == SyncMode::EveryAppend {
                &all
            } else {
                &flushed
            };
            for (o, v) in expect {
                assert_eq!(got.get(o), Some(v), "{what}: record {o}");
            }
            for (o, v) in &got {
                assert_eq!(
                    all.get(o),
                    Some(v),
                    "{what}: record {o} is not what was written"
                );
            }
            let batches = read_batches(&log).unwrap();
            assert_eq!(
                log.producer_state(),
                rebuild_producer_state(&log, &batches),
                "{what}"
            );
            log.append(&make_batch(1_000, 1, 10, None)).unwrap();
            log.close().unwrap();
            let log = Log::open(dir(), cfg).unwrap();
            assert!(log.recovery_report().clean_shutdown, "{what}");
        }
    }
}

/// Finding 11 (`log_model`, timing-dependent; docs/fuzzing.md). A truncation passed its
/// writability check, then waited for the sync lanes' checkpoint writer, whose fdatasync of the
/// recovery-point slot failed: the slot it wrote (a newer sequence, the higher recovery point)
/// stayed in the page cache. The truncation then went on: its lowering store equalled the last
/// value stored successfully and was skipped, and it cut the data under the failed slot's
/// value. After the crash the newest slot stood past the truncated log's end and the open
/// failed ("recovery point ... is beyond the recovered log end", or R6 once new batches were
/// appended). The interleaving is forced: the simulated storage holds the writer's fdatasync
/// (`pause_after`) until the truncation is waiting for it (`threads_waiting_for_sync_idle`).
#[test]
fn regression_log_model_truncation_waiting_for_a_failing_checkpoint_write() {
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        for seed in 0..6 {
            let what = format!("{mode:?} seed {seed}");
            // No background thread: the storage operations below are the test's own. No
            // recovery-point lag: the flush below fdatasyncs its checkpoint write at once.
            let (sim, _clock, cfg) = fixture(seed, |c| {
                c.background_thread = false;
                c.recovery_point_lag_ms = 0;
            });
            let log = Log::open(dir(), cfg.clone()).unwrap();
            for i in 0..5 {
                log.append(&make_batch(i, 2, 50, None)).unwrap();
            }
            log.flush().unwrap();
            let cut = log.log_end_offset();
            for i in 5..8 {
                log.append(&make_batch(i, 2, 50, None)).unwrap();
            }
            let end = log.log_end_offset();
            // The flush: msync of the segment (op 0), the slot write (op 1), its fdatasync (op
            // 2), which is held and then fails.
            sim.pause_after(2);
            sim.fail_after(2, FaultKind::Eio, false);
            let flusher = {
                let log = log.clone();
                std::thread::spawn(move || log.flush())
            };
            sim.wait_until_paused();
            let truncator = {
                let log = log.clone();
                std::thread::spawn(move || log.truncate_to(cut))
            };
            while log.threads_waiting_for_sync_idle() == 0 {
                std::thread::yield_now();
            }
            sim.resume();
            assert!(flusher.join().unwrap().is_err(), "{what}: the flush failed");
            let truncated = truncator.join().unwrap();
            assert!(log.is_poisoned(), "{what}");
            assert!(
                matches!(truncated, Err(Error::PreviousIo)),
                "{what}: a truncation must not go on once the sync it waited for failed: \
                 {truncated:?}"
            );
            crash(log, &sim, mode, seed);
            let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let rp = log.recovery_report().checkpoint_recovery_point;
            assert!(
                rp <= log.log_end_offset().0,
                "{what}: recovery point {rp} past the log end {:?}",
                log.log_end_offset()
            );
            assert!(log.log_end_offset() >= cut, "{what}");
            if mode == CrashMode::Process {
                assert_eq!(log.log_end_offset(), end, "{what}: nothing was cut");
            }
            read_batches(&log).unwrap_or_else(|e| panic!("{what}: {e}"));
            log.check_invariants();
        }
    }
}

/// The checkpoint file itself (finding 11's root): after a store whose fdatasync failed, the
/// newest slot may hold the failed value, so the next store must be written even if it equals
/// the last value stored successfully, and it must replace the failed slot.
#[test]
fn a_store_after_a_failed_recovery_point_write_is_written() {
    use oncelog::io::Storage;
    use oncelog::log::checkpoints::RecoveryPointFile;
    let sim = SimStorage::new(1);
    sim.create_dir_all(&dir()).unwrap();
    let mut rp = RecoveryPointFile::open(&sim, &dir(), true).unwrap();
    rp.store(10).unwrap();
    // The slot write (op 0) lands in the page cache; its fdatasync (op 1) fails.
    sim.fail_after(1, FaultKind::Eio, false);
    assert!(rp.store(16).is_err());
    rp.store(10).unwrap();
    drop(rp);
    sim.crash(CrashMode::Process);
    let rp = RecoveryPointFile::open(&sim, &dir(), true).unwrap();
    assert_eq!(rp.value(), 10, "the failed slot outlived the later store");
}

/// Waits (generously: a loaded machine) until `f` holds; panics with `what` otherwise.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A background retention run that fails (a full disk refuses the producer snapshot and the
/// log-start checkpoint written before any segment is deleted) changes nothing: the segments
/// stay, the log start does not move, the log is not poisoned; the failure is counted and
/// reported once instead of being dropped silently, and retention resumes when space is freed.
#[test]
fn a_failed_background_retention_is_counted_changes_nothing_and_retries() {
    let (sim, clock, cfg) = fixture(7, |c| {
        c.segment_bytes = 64 << 10;
        c.background_thread = true;
        c.retention_ms = Some(1_000);
    });
    let log = Log::open(dir(), cfg).unwrap();
    let (pid, _) = log.init_producer().unwrap();
    let mut i = 0u64;
    while log.segments().len() < 5 {
        log.append(&make_batch(i, 2, 500, Some((pid, 0, 2 * i as i32))))
            .unwrap();
        i += 1;
    }
    settle(&log);
    let segments = log.segments().len();
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(log.best_effort_failures().retention, 0);

    sim.set_disk_full(true);
    clock.advance(10_000); // every sealed segment is now past retention
    wait_until("two failed retention runs", || {
        log.best_effort_failures().retention >= 2
    });
    let failures = log.best_effort_failures();
    assert!(failures.retention_reported, "{failures:?}");
    assert_eq!(
        log.segments().len(),
        segments,
        "a failed run deleted segments"
    );
    assert_eq!(
        log.log_start_offset(),
        Offset(0),
        "a failed run moved the log start"
    );
    assert!(!log.is_poisoned());

    sim.set_disk_full(false);
    wait_until("retention after space is freed", || {
        log.segments().len() == 1
    });
    let active = log.segments()[0].base_offset();
    assert_eq!(log.log_start_offset(), Offset(active));
    // Every record from the new start is still readable.
    let read = read_batches(&log).unwrap();
    assert_eq!(read.first().map(|b| b.header.base_offset), Some(active));
    assert_eq!(read.last().map(|b| b.header.last_offset() + 1), Some(i * 2));
    log.close().unwrap();
}

/// The recovery point's lagging fdatasync (docs/recovery.md, "The lagging recovery point")
/// failing is a failed sync like any other: the append that ran it returns the error, the log is
/// poisoned, and after a power loss every earlier durable append is still there, with no
/// corruption reported.
#[test]
fn a_failed_lagging_recovery_point_fdatasync_poisons_the_log() {
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        for seed in 0..4 {
            let what = format!("{mode:?} seed {seed}");
            let (sim, clock, cfg) = fixture(seed, |c| {
                c.background_thread = false;
                c.sync = SyncMode::EveryAppend;
                c.recovery_point_lag_ms = 50;
            });
            let log = Log::open(dir(), cfg.clone()).unwrap();
            let mut acked = 0;
            for i in 0..6 {
                clock.advance(10);
                log.append(&make_batch(i, 2, 50, None)).unwrap();
                acked += 2;
            }
            // Past the lag: the next append's checkpoint write is followed by its fdatasync.
            // Its ops: msync of the segment (0), the slot write (1), the fdatasync (2).
            clock.advance(60);
            sim.fail_after(2, FaultKind::Eio, false);
            let err = log.append(&make_batch(99, 1, 5, None)).unwrap_err();
            assert!(log.is_poisoned(), "{what}: {err}");
            assert!(matches!(
                log.append(&make_batch(100, 1, 5, None)),
                Err(Error::PreviousIo)
            ));
            crash(log, &sim, mode, seed);
            let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert!(log.recovery_report().corruption.is_none(), "{what}");
            assert!(
                log.log_end_offset().0 >= acked,
                "{what}: durable appends lost"
            );
            let got: usize = read_batches(&log)
                .unwrap()
                .iter()
                .map(|b| b.records.len())
                .sum();
            assert!(got as u64 >= acked, "{what}: {got} records");
        }
    }
}

/// Finding 15 (`log_model`): a retention pass whose unlink failed after its log-start
/// checkpoint (the commit point) dropped the segment from the list but left its file, and a
/// later clean close wrote a clean-shutdown marker that did not describe the directory (one
/// segment file more), so the next open was not clean. An I/O error at every storage operation
/// of `advance_log_start` in turn: whatever failed, a later close that returns Ok is recognised
/// clean, the log start never goes back, and every record at or past it reads back.
#[test]
fn a_clean_close_after_a_failed_retention_is_recognised() {
    let mut landed = 0;
    let mut poisons = 0;
    for at in 0..64 {
        if landed > 0 {
            break; // the pass finished without meeting the fault: every operation was covered
        }
        let (sim, _clock, cfg) = fixture(at, |c| {
            c.background_thread = false;
            c.segment_bytes = 4096;
        });
        let log = Log::open(dir(), cfg.clone()).unwrap();
        let mut values = Vec::new();
        for i in 0..12 {
            let b = make_batch(i, 2, 700, None);
            values.extend(values_of(&b));
            log.append(&b).unwrap();
        }
        assert!(log.segments().len() >= 3);
        let target = log.segments()[2].base_offset();
        sim.fail_after(at, FaultKind::Eio, false);
        let result = log.advance_log_start(Offset(target));
        sim.clear_fault();
        landed += usize::from(result.is_ok());
        let start = log.log_start_offset();
        let poisoned = log.poison_reason().is_some();
        let what = format!("fault at op {at}: {result:?}, start {start:?}, poisoned {poisoned}");
        if poisoned {
            // Only a checkpoint replace that failed after its rename (at the directory fsync)
            // poisons: its outcome is uncertain, so the log takes no more writes and the next
            // open decides.
            assert!(result.is_err(), "{what}");
            assert!(log.append(&make_batch(99, 1, 10, None)).is_err(), "{what}");
            log.simulate_crash();
        } else {
            log.close().unwrap_or_else(|e| panic!("{what}: close: {e}"));
        }
        let log = Log::open(dir(), cfg).unwrap();
        assert!(
            poisoned || log.recovery_report().clean_shutdown,
            "{what}: {:?}",
            log.recovery_report()
        );
        // A failed pass that did not poison changed nothing a reopen sees: the log start is
        // the one the live log served. A poisoned one took effect or not (never a third start).
        let reopened = log.log_start_offset();
        assert!(
            reopened == start || (poisoned && reopened == Offset(target)),
            "{what}: reopened at {reopened:?}"
        );
        poisons += usize::from(poisoned);
        let read: Vec<Vec<u8>> = common::read_all(&log).into_iter().map(|(_, v)| v).collect();
        assert_eq!(read, values[reopened.0 as usize..].to_vec(), "{what}");
    }
    assert!(landed > 0, "no fault position let the pass finish");
    assert_eq!(
        poisons, 1,
        "only the fault at the checkpoint's directory fsync poisons"
    );
}
