//! T01: a real process killed with SIGKILL at random points while appending.
//!
//! The test binary re-executes itself (sled's crash-test pattern): with `ONCELOG_CRASH_CHILD`
//! set, the test function becomes the child, which opens the log, appends batches whose contents
//! are a pure function of their offsets, calls `flush()` every few batches and prints the flushed
//! log end to stdout. The parent kills it with SIGKILL after a random short delay, reopens the
//! log and checks: the log end is at least the last flushed end the child reported, offsets are
//! contiguous from 0, every record passes its checksum and holds exactly what the generator says
//! for its offset; then the parent appends, closes (cleanly or by a simulated crash) and lets the
//! next child continue. Segments are 64 KiB so rolls (and background seals) happen during the
//! run. A process kill keeps the page cache, so this finds ordering and recovery bugs, not
//! missing syncs (T02's job).

#[path = "common/child.rs"]
mod child;
use child::KillClock;
mod common;
#[path = "common/fault.rs"]
mod fault;

use std::io::Write;
use std::path::Path;

use fault::Rng;
use oncelog::{BatchBuilder, Log, LogConfig, Offset, RecordBatch};

const CHILD_ENV: &str = "ONCELOG_CRASH_CHILD";
const TEST_NAME: &str = "kill_9_while_appending_keeps_every_flushed_record";
const FLUSH_EVERY: u64 = 8;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 4096,
        ..LogConfig::for_tests()
    }
}

fn value_of(offset: u64) -> Vec<u8> {
    let mut v = format!("rec-{offset}-").into_bytes();
    v.resize(12 + (offset % 97) as usize, b'a' + (offset % 26) as u8);
    v
}

/// The batch the generator appends at `base`: its size and contents depend only on `base`.
fn batch_at(base: u64) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for o in base..base + 1 + base % 5 {
        b.push(o as i64, Some(&o.to_le_bytes()), Some(&value_of(o)));
    }
    b.build().unwrap()
}

fn append_next(log: &Log) -> u64 {
    let base = log.log_end_offset().0;
    let info = log.append(&batch_at(base)).unwrap();
    assert_eq!(info.base_offset.0, base);
    info.last_offset.0 + 1
}

fn child(dir: &Path) -> ! {
    let log = Log::open(dir, cfg()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    loop {
        let end = append_next(&log);
        n += 1;
        if n.is_multiple_of(FLUSH_EVERY) {
            log.flush().unwrap();
            writeln!(out, "flushed {end}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// Checks every record of the log against the generator; returns the log end.
fn verify(log: &Log, at_least: u64, round: usize) -> u64 {
    log.check_invariants();
    let end = log.log_end_offset().0;
    assert!(
        end >= at_least,
        "round {round}: log end {end} below the flushed end {at_least} ({:?})",
        log.recovery_report()
    );
    let mut next = 0u64;
    while next < end {
        let f = log.read(Offset(next), 1 << 20).unwrap();
        assert!(!f.is_empty(), "round {round}: empty read at {next}");
        for b in f.batches() {
            let b = b.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(
                b.base_offset(),
                next,
                "round {round}: offsets not contiguous"
            );
            b.verify_records().unwrap();
            for r in b.records() {
                let r = r.unwrap();
                let o = b.base_offset() + r.offset_delta as u64;
                assert_eq!(
                    r.key,
                    Some(&o.to_le_bytes()[..]),
                    "round {round}: key at {o}"
                );
                assert_eq!(
                    r.value,
                    Some(&value_of(o)[..]),
                    "round {round}: value at {o}"
                );
                assert_eq!(r.timestamp, o as i64);
            }
            next = b.last_offset() + 1;
        }
    }
    assert_eq!(next, end);
    end
}

#[test]
fn kill_9_while_appending_keeps_every_flushed_record() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(0xC0FFEE);
    let mut flushed = 0u64;
    let mut segments_seen = 0;
    for round in 0..20 {
        // The fault: SIGKILL at a random instant.
        let reported = child::run_child_and_kill(
            TEST_NAME,
            CHILD_ENV,
            dir.path(),
            KillClock::FromSpawn,
            30 + rng.below(300),
        );
        if let Some(f) = reported {
            assert!(f >= flushed, "flushed ends only grow");
            flushed = f;
        }

        let log = Log::open(dir.path(), cfg())
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        assert!(log.recovery_report().corruption.is_none());
        let end = verify(&log, flushed, round);
        segments_seen = segments_seen.max(log.segments().len());
        // Appends continue where the child left off.
        let end2 = append_next(&log);
        assert!(end2 > end);
        flushed = end2;
        if round % 2 == 0 {
            log.close().unwrap();
        } else {
            log.flush().unwrap();
            log.simulate_crash();
        }
    }
    let log = Log::open(dir.path(), cfg()).unwrap();
    verify(&log, flushed, 20);
    assert!(segments_seen > 1, "the run should roll segments");
}
