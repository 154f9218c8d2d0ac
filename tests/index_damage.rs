//! T05 / row R3: damaged index files are derived data — open rebuilds them, never fails and never
//! answers a lookup differently.
//!
//! A cleanly closed multi-segment log (an index entry per batch) is probed: every offset read
//! and a range of `offset_for_timestamp` lookups. Then `.index` or `.timeindex` of a sealed
//! segment and of the active segment is deleted, truncated, zero-padded with 4096 bytes
//! (KAFKA-10207), bit-flipped, replaced with another segment's index, or replaced with the
//! checksum-valid index of a different log's segment with the same base offset (a stale index).
//! Reopening must succeed, rebuild at least one index and give identical answers; after a
//! clean close the rewritten index files are used again (nothing rebuilt). A sealed segment's
//! index is loaded on first use after a clean close, so its rebuild is counted by
//! `Log::index_loads`, the active segment's (loaded at open) by `indexes_rebuilt`.

mod common;
#[path = "common/fault.rs"]
mod fault;

use std::fs;
use std::path::{Path, PathBuf};

use common::{batch, read_all};
use fault::{copy_dir, index_path, segment_bases, timeindex_path};
use oncelog::{Log, LogConfig, Offset};

fn cfg() -> LogConfig {
    LogConfig::for_tests()
}

/// What reads answer: for every offset the batch a read starts with, every record, and the
/// first offset at or after each timestamp.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    end: u64,
    reads: Vec<(u64, u64, u64)>,
    records: Vec<(u64, Vec<u8>)>,
    times: Vec<(i64, Option<u64>)>,
}

fn answers(log: &Log) -> Answers {
    let end = log.log_end_offset().0;
    let reads = (0..end)
        .map(|o| {
            let f = log.read(Offset(o), 1).unwrap();
            let v = f.batches().next().unwrap().unwrap();
            (o, v.base_offset(), v.last_offset())
        })
        .collect();
    let times = (990..1_200)
        .map(|ts| (ts, log.offset_for_timestamp(ts).unwrap().map(|o| o.0)))
        .collect();
    Answers {
        end,
        reads,
        records: read_all(log),
        times,
    }
}

/// A cleanly closed log of several segments; timestamps rise by batch, records per batch vary.
fn build(dir: &Path, records_per_batch: impl Fn(u64) -> u32, batches: u64) -> Answers {
    let log = Log::open(dir, cfg()).unwrap();
    for tag in 0..batches {
        log.append(&batch(tag, records_per_batch(tag), 24)).unwrap();
    }
    let a = answers(&log);
    log.close().unwrap();
    a
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Delete,
    Truncate,
    ZeroPad,
    BitFlip,
    OtherSegments,
}

fn damage(path: &Path, other: &Path, d: Damage) {
    match d {
        Damage::Delete => fs::remove_file(path).unwrap(),
        Damage::Truncate => {
            let len = fs::metadata(path).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        Damage::ZeroPad => {
            let mut bytes = fs::read(path).unwrap();
            bytes.extend_from_slice(&[0; 4096]);
            fs::write(path, bytes).unwrap();
        }
        Damage::BitFlip => fault::flip_bit(path, fs::metadata(path).unwrap().len() as usize / 2, 2),
        Damage::OtherSegments => {
            fs::copy(other, path).unwrap();
        }
    }
}

/// Compares answers, naming the first differing lookup.
fn assert_same(got: &Answers, want: &Answers, what: &str) {
    assert_eq!(got.end, want.end, "{what}: log end");
    for (g, w) in got.reads.iter().zip(&want.reads) {
        assert_eq!(
            g, w,
            "{what}: read at offset {} (offset, batch base, batch last)",
            w.0
        );
    }
    assert!(got.records == want.records, "{what}: records differ");
    for (g, w) in got.times.iter().zip(&want.times) {
        assert_eq!(g, w, "{what}: offset_for_timestamp({})", w.0);
    }
}

fn reopen_and_compare(dir: &Path, before: &Answers, what: &str) {
    let log = Log::open(dir, cfg()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let r = log.recovery_report().clone();
    assert!(r.corruption.is_none(), "{what}: {r:?}");
    assert_eq!(r.truncated_at, None, "{what}: {r:?}");
    assert_same(&answers(&log), before, what);
    let loads = log.index_loads();
    assert!(
        r.indexes_rebuilt + loads.rebuilt >= 1,
        "{what}: {r:?} {loads:?}"
    );
    assert_eq!(loads.failed, 0, "{what}: {loads:?}");
    log.check_invariants();
    log.close().unwrap();
    let log = Log::open(dir, cfg()).unwrap();
    let r = log.recovery_report().clone();
    assert!(r.clean_shutdown, "{what}: {r:?}");
    assert_same(
        &answers(&log),
        before,
        &format!("{what}, after the rewrite"),
    );
    let loads = log.index_loads();
    assert_eq!(
        r.indexes_rebuilt + loads.rebuilt,
        0,
        "{what}: index files were not rewritten: {r:?} {loads:?}"
    );
    log.close().unwrap();
}

#[test]
fn every_kind_of_index_damage_is_rebuilt() {
    let pristine = tempfile::tempdir().unwrap();
    let before = build(pristine.path(), |t| 1 + (t % 3) as u32, 150);
    let bases = segment_bases(pristine.path());
    assert!(bases.len() >= 4, "{bases:?}");
    let sealed = bases[1];
    let active = *bases.last().unwrap();
    type PathFn = fn(&Path, u64) -> PathBuf;
    let kinds: [(&str, PathFn); 2] = [("index", index_path), ("timeindex", timeindex_path)];
    for (kind, path_of) in kinds {
        for d in [
            Damage::Delete,
            Damage::Truncate,
            Damage::ZeroPad,
            Damage::BitFlip,
            Damage::OtherSegments,
        ] {
            for (role, base, other) in [("sealed", sealed, bases[2]), ("active", active, bases[0])]
            {
                let what = format!("{d:?} of the {role} segment's .{kind}");
                let dir = tempfile::tempdir().unwrap();
                copy_dir(pristine.path(), dir.path());
                damage(&path_of(dir.path(), base), &path_of(dir.path(), other), d);
                reopen_and_compare(dir.path(), &before, &what);
            }
        }
    }
}

/// Both index files of several segments damaged at once, after an unclean shutdown.
#[test]
fn damage_to_many_indexes_after_a_crash_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), |t| 1 + (t % 2) as u32, 120);
    let log = Log::open(dir.path(), cfg()).unwrap();
    log.append(&batch(5_000, 1, 10)).unwrap();
    log.flush().unwrap();
    let before = answers(&log);
    log.simulate_crash();
    let bases = segment_bases(dir.path());
    for &b in &bases[..bases.len() - 1] {
        if b % 2 == 0 {
            fs::remove_file(index_path(dir.path(), b)).unwrap();
        } else {
            let p = timeindex_path(dir.path(), b);
            let mut bytes = fs::read(&p).unwrap();
            bytes.extend_from_slice(&[0; 4096]);
            fs::write(&p, bytes).unwrap();
        }
    }
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(log.recovery_report().indexes_rebuilt >= bases.len() - 1);
    assert_eq!(answers(&log), before);
    log.close().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, 0);
    assert_eq!(answers(&log), before);
    assert_eq!(log.index_loads().loaded, bases.len() - 1);
    assert_eq!(log.index_loads().rebuilt, 0);
}

// A stale index: checksum-valid, same base offset, but describing a different segment file
// (here: segment 0 of another log whose batches have other sizes and record counts). Loading
// it must not make open fail or lookups go wrong; it has to be detected and rebuilt (R3).
fn stale_index_is_rebuilt(kind: &str, path_of: fn(&Path, u64) -> PathBuf) {
    let pristine = tempfile::tempdir().unwrap();
    let before = build(pristine.path(), |t| 1 + (t % 3) as u32, 150);
    let foreign = tempfile::tempdir().unwrap();
    build(foreign.path(), |_| 5, 6);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), dir.path());
    fs::copy(path_of(foreign.path(), 0), path_of(dir.path(), 0)).unwrap();
    reopen_and_compare(
        dir.path(),
        &before,
        &format!("segment 0's .{kind} from another log"),
    );
}

#[test]
fn stale_offset_index_of_another_segment_with_the_same_base_is_rebuilt() {
    stale_index_is_rebuilt("index", index_path);
}

#[test]
fn stale_time_index_of_another_segment_with_the_same_base_is_rebuilt() {
    stale_index_is_rebuilt("timeindex", timeindex_path);
}
