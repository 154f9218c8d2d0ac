//! Append and read across many segments on the real file system: offsets, contents, reads by
//! offset and timestamp, rolls on every trigger, and a clean reopen that needs no scan.

mod common;

use std::sync::Arc;

use common::{batch, read_all};
use oncelog::{Log, LogConfig, ManualClock, Offset};

#[test]
fn append_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let mut expected = Vec::new();
    for tag in 0..200u64 {
        let info = log.append(&batch(tag, 1 + (tag % 4) as u32, 40)).unwrap();
        assert_eq!(info.base_offset.0, expected.len() as u64);
        for i in 0..=(tag % 4) {
            expected.push((expected.len() as u64, format!("{tag}:{i}:")));
        }
        assert_eq!(info.last_offset.0 + 1, expected.len() as u64);
    }
    log.check_invariants();
    assert!(log.segments().len() > 5, "4 KiB segments must roll");
    let got = read_all(&log);
    assert_eq!(got.len(), expected.len());
    for ((o, v), (eo, ev)) in got.iter().zip(&expected) {
        assert_eq!(o, eo);
        assert!(v.starts_with(ev.as_bytes()), "offset {o}");
    }
    // A read from the middle of a batch returns that batch whole.
    let f = log.read(Offset(5), 1).unwrap();
    let first = f.batches().next().unwrap().unwrap();
    assert!(first.base_offset() <= 5 && first.last_offset() >= 5);
    assert_eq!(
        f.batches().count(),
        1,
        "max_bytes=1 still returns one whole batch"
    );
    // Out of range.
    assert!(log.read(Offset(expected.len() as u64 + 1), 100).is_err());
    assert!(log
        .read(Offset(expected.len() as u64), 100)
        .unwrap()
        .is_empty());
    log.close().unwrap();
}

#[test]
fn a_fetch_knows_where_the_next_read_continues() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    for tag in 0..120u64 {
        log.append(&batch(tag, 1 + (tag % 3) as u32, 40)).unwrap();
    }
    let end = log.log_end_offset().0;
    // From every offset, with fetch sizes from one batch to whole segments and bounds below the
    // log end: `end_offset` is the offset after the last batch the fetch holds.
    for from in 0..end {
        for (max_bytes, limit) in [(1, end), (300, end), (1 << 20, end), (1 << 20, from + 3)] {
            let f = log
                .read_bounded(Offset(from), max_bytes, Offset(limit))
                .unwrap();
            let walked = f.batches().map(|b| b.unwrap().last_offset() + 1).last();
            assert_eq!(f.end_offset(), walked, "from {from} max {max_bytes}");
            assert!(walked.is_some_and(|e| e > from));
        }
    }
    assert_eq!(log.read(Offset(end), 100).unwrap().end_offset(), None);
}

#[test]
fn clean_reopen_needs_no_scan() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    for tag in 0..300u64 {
        log.append(&batch(tag, 2, 30)).unwrap();
    }
    let before = read_all(&log);
    let end = log.log_end_offset();
    log.close().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let r = log.recovery_report();
    assert!(r.clean_shutdown, "{r:?}");
    assert_eq!(r.segments_scanned, 0, "{r:?}");
    assert_eq!(r.bytes_scanned, 0, "{r:?}");
    // Sealed segments' indexes are loaded on first use, not by open.
    assert_eq!(r.indexes_deferred, log.segments().len() - 1, "{r:?}");
    assert!(r.indexes_deferred > 1, "{r:?}");
    assert_eq!(log.index_loads().loaded, 0);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), before);
    assert_eq!(log.index_loads().loaded, r.indexes_deferred);
    assert_eq!(log.index_loads().rebuilt, 0);
    log.append(&batch(999, 1, 10)).unwrap();
    log.check_invariants();
    log.simulate_crash();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert_eq!(log.log_end_offset(), Offset(end.0 + 1));
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    for tag in 0..100u64 {
        log.append(&batch(tag * 10, 2, 30)).unwrap(); // timestamps 1000 + tag*10
    }
    for tag in 0..100u64 {
        let ts = 1_000 + (tag * 10) as i64;
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            Some(Offset(tag * 2)),
            "ts {ts}"
        );
        assert_eq!(
            log.offset_for_timestamp(ts - 5).unwrap(),
            Some(Offset(tag * 2))
        );
    }
    assert_eq!(log.offset_for_timestamp(1_000_000).unwrap(), None);
}

#[test]
fn rolls_on_time_and_full_index() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = LogConfig {
        segment_ms: Some(1_000),
        segment_bytes: 1 << 20,
        max_batch_bytes: 4096,
        ..LogConfig::for_tests()
    }
    .with_clock(clock.clone());
    let log = Log::open(dir.path(), cfg).unwrap();
    log.append(&batch(1, 1, 10)).unwrap();
    log.append(&batch(2, 1, 10)).unwrap();
    assert_eq!(log.segments().len(), 1);
    clock.advance(1_000);
    log.append(&batch(3, 1, 10)).unwrap();
    assert_eq!(log.segments().len(), 2, "segment_ms roll");
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        index_max_entries: 4,
        max_batch_bytes: 4096,
        ..LogConfig::for_tests()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    for tag in 0..12 {
        log.append(&batch(tag, 1, 10)).unwrap();
    }
    // Every batch but the first of a segment is indexed: 5 batches fill 4 entries.
    assert_eq!(log.segments().len(), 3, "index-full roll");
    log.check_invariants();
}

/// `Log::roll`: cuts a segment at the log end now; reads cross the boundary; an empty active
/// segment is not rolled; a closed or poisoned log refuses (read-only: `recovery_corruption`).
#[test]
fn roll_cuts_a_segment_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.roll().unwrap(), Offset(0), "empty log: nothing to roll");
    assert_eq!(log.segments().len(), 1);
    for tag in 0..3 {
        log.append(&batch(tag, 2, 20)).unwrap();
    }
    let end = log.log_end_offset();
    assert_eq!(log.roll().unwrap(), end);
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset()).collect();
    assert_eq!(bases, vec![0, end.0]);
    assert_eq!(log.roll().unwrap(), end, "an empty active segment is kept");
    assert_eq!(log.segments().len(), 2);
    for tag in 3..5 {
        log.append(&batch(tag, 2, 20)).unwrap();
    }
    log.check_invariants();
    let got = read_all(&log);
    assert_eq!(got.len(), 10);
    for (i, (o, v)) in got.iter().enumerate() {
        assert_eq!(*o, i as u64);
        assert!(v.starts_with(format!("{}:{}:", i / 2, i % 2).as_bytes()));
    }
    // A read stops at the end of its segment (as a Kafka fetch does); the next one, from the
    // boundary, is served by the new segment.
    let bases_read = |from: u64| -> Vec<u64> {
        let f = log.read(Offset(from), 1 << 20).unwrap();
        f.batches().map(|b| b.unwrap().base_offset()).collect()
    };
    assert_eq!(bases_read(end.0 - 1), vec![4]);
    assert_eq!(bases_read(end.0), vec![6, 8]);

    let other = log.clone();
    log.close().unwrap();
    assert!(matches!(other.roll(), Err(oncelog::Error::Closed)));
}

/// A roll survives a crash (the sealed segment and the new active one are both recovered,
/// every record in place), also across a power loss after a flush.
#[test]
fn roll_then_crash_and_reopen() {
    use common::sim::{crash, dir, make_batch, settle, sim_config};
    use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
        let sim = SimStorage::new(7);
        let clock = Arc::new(ManualClock::new(50_000));
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            ..sim_config(&sim, &clock)
        };
        let log = Log::open(dir(), cfg.clone()).unwrap();
        for tag in 0..4 {
            log.append(&make_batch(tag, 2, 30, None)).unwrap();
        }
        let boundary = log.roll().unwrap();
        assert_eq!(boundary, Offset(8));
        for tag in 4..6 {
            log.append(&make_batch(tag, 2, 30, None)).unwrap();
        }
        log.flush().unwrap();
        settle(&log);
        let before = read_all(&log);
        crash(log, &sim, mode, 3);
        let log = Log::open(dir(), cfg.clone()).unwrap();
        let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset()).collect();
        assert_eq!(bases, vec![0, 8], "{mode:?}");
        assert_eq!(read_all(&log), before, "{mode:?}");
        log.check_invariants();
        // A poisoned log refuses to roll: the msync of the next flush fails.
        log.append(&make_batch(9, 1, 30, None)).unwrap();
        sim.fail_after(0, FaultKind::Eio, false);
        assert!(log.flush().is_err());
        assert!(log.is_poisoned());
        assert!(matches!(log.roll(), Err(oncelog::Error::PreviousIo)));
        assert_eq!(log.segments().len(), 2);
        log.simulate_crash();
    }
}

#[test]
fn bad_config_and_second_open_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = LogConfig {
        segment_bytes: 10,
        ..LogConfig::for_tests()
    };
    assert!(matches!(
        Log::open(dir.path(), bad),
        Err(oncelog::Error::InvalidConfig(_))
    ));
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogConfig::for_tests()),
        Err(oncelog::Error::Locked(_))
    ));
    drop(log);
    Log::open(dir.path(), LogConfig::for_tests()).unwrap();
}

/// `SyncMode::Interval`: the background thread syncs when the interval passes or enough bytes
/// are unsynced, whichever comes first, without any call from the appender. The wait is bounded
/// (5 s) and polls the recovery point, which only a sync moves.
#[test]
fn interval_sync_advances_the_recovery_point_in_the_background() {
    use oncelog::SyncMode;
    use std::time::{Duration, Instant};
    for sync in [
        SyncMode::Interval {
            ms: 20,
            bytes: 1 << 30,
        },
        SyncMode::Interval {
            ms: 3_600_000,
            bytes: 1,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            sync,
            segment_bytes: 1 << 20,
            ..LogConfig::for_tests()
        };
        let log = Log::open(dir.path(), cfg).unwrap();
        for tag in 0..20 {
            log.append(&batch(tag, 2, 30)).unwrap();
        }
        let end = log.log_end_offset();
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.recovery_point() < end && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            log.recovery_point(),
            end,
            "{sync:?}: the background sync never ran"
        );
        log.close().unwrap();
    }
}
