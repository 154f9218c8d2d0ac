//! T09 and rows R4/R6/R7/R9: damage in data that was durable is corruption, never a truncation.
//!
//! Logs are built on the real file system, closed cleanly or flushed and crashed, and then a bit
//! is flipped (or a 512-byte sector zeroed) with std::fs. Damage in a sealed, synced segment or
//! in the synced part of the active segment must make `Log::open` fail with `Error::Corrupt`
//! naming the file and the byte position of the damaged batch — or, after a clean close, where
//! open reads nothing of a sealed segment (its index is deferred), make the first lookup in it
//! fail that way; with
//! `RecoveryMode::ReadOnlyOnCorruption` the log opens read-only, refuses writes, serves the data
//! before the damage and leaves every file byte-identical. Damage in the unsynced tail is a torn
//! write (truncated and reported). A recovery point beyond the recovered end (the last segment
//! file deleted) is corruption (R9). Zeros where the next segment begins in a synced segment
//! whose seal never finished (crash between roll+flush and the background seal) are not damage
//! (R7). With a dense index, open does not rescan trusted segments (R2), so the read path is
//! checked instead: the damaged batch is reported, never served, and nothing is truncated.

mod common;
#[path = "common/fault.rs"]
mod fault;

use std::fs;
use std::path::Path;

use common::{assert_corrupt, batch, closed_log, read_all, sparse};
use fault::{
    batches_in, flip_bit, index_path, seg_path, segment_bases, snapshot_dir, timeindex_path,
    BatchAt,
};
use oncelog::{Error, Log, LogConfig, Offset, RecoveryMode};

fn read_only(cfg: LogConfig) -> LogConfig {
    LogConfig {
        recovery: RecoveryMode::ReadOnlyOnCorruption,
        ..cfg
    }
}

/// `closed_log`, then the state a crash after the last flush leaves: no clean-shutdown marker,
/// the recovery point at the end. Open trusts (and loads) every sealed segment (row R2).
fn crashed_log(dir: &Path, cfg: &LogConfig, segments: usize) -> Vec<(u64, Vec<u8>)> {
    let all = closed_log(dir, cfg, segments);
    fs::remove_file(dir.join("clean-shutdown")).unwrap();
    all
}

fn batches_of(dir: &Path, base: u64) -> Vec<BatchAt> {
    batches_in(&fs::read(seg_path(dir, base)).unwrap())
}

fn assert_corrupt_at(result: oncelog::Result<Log>, path: &Path, position: usize, what: &str) {
    let result = result.map(|log| {
        format!(
            "open succeeded: end {:?}, report {:?}",
            log.log_end_offset(),
            log.recovery_report()
        )
    });
    assert_corrupt(result, path, position as u64, what);
}

/// A bit flip, and a zeroed sector, in the middle of a sealed segment of a cleanly closed log.
/// The clean open reads nothing of the segment and succeeds (in both recovery modes); the first
/// lookup in it reports the damage with file and position, changing nothing. An open that has
/// to load it (here: after a crash, the marker gone) fails with the same error.
#[test]
fn damage_in_a_sealed_segment_fails_open_with_file_and_position() {
    for zero_sector in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        closed_log(dir.path(), &sparse(), 4);
        let base = segment_bases(dir.path())[1];
        let path = seg_path(dir.path(), base);
        let batches = batches_of(dir.path(), base);
        let (victim, what) = if zero_sector {
            let mut bytes = fs::read(&path).unwrap();
            bytes[512..1024].fill(0);
            fs::write(&path, bytes).unwrap();
            let b = *batches.iter().find(|b| b.end() > 512).unwrap();
            (b, "zeroed sector 512..1024")
        } else {
            let b = batches[batches.len() / 2];
            flip_bit(&path, b.pos + b.len / 2, 3);
            (b, "bit flip")
        };
        let damaged = fs::read(&path).unwrap();
        for cfg in [sparse(), read_only(sparse())] {
            let log = Log::open(dir.path(), cfg).unwrap();
            assert!(!log.is_read_only(), "{what}: the clean open did not look");
            let first_use = log.read(Offset(victim.base_offset), 1).map(|_| ());
            assert_corrupt(first_use, &path, victim.pos as u64, what);
            log.close().unwrap();
            assert_eq!(fs::read(&path).unwrap(), damaged, "{what}: segment changed");
        }
        fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        let before = snapshot_dir(dir.path());
        assert_corrupt_at(Log::open(dir.path(), sparse()), &path, victim.pos, what);
        assert_eq!(
            snapshot_dir(dir.path()),
            before,
            "{what}: a failed open changes nothing"
        );
        // Still failing on the next attempt: nothing was silently repaired.
        assert_corrupt_at(Log::open(dir.path(), sparse()), &path, victim.pos, what);
    }
}

/// The same damage after an unclean shutdown: the sealed segment is below the recovery point.
#[test]
fn damage_in_a_sealed_segment_after_a_crash_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), &sparse(), 4);
    let log = Log::open(dir.path(), sparse()).unwrap();
    let segments = log.segments().len();
    log.append(&batch(500, 1, 10)).unwrap();
    log.flush().unwrap();
    assert_eq!(log.segments().len(), segments);
    log.simulate_crash();
    let base = segment_bases(dir.path())[2];
    let path = seg_path(dir.path(), base);
    let b = batches_of(dir.path(), base)[1];
    flip_bit(&path, b.pos + b.len - 1, 0);
    assert_corrupt_at(Log::open(dir.path(), sparse()), &path, b.pos, "after crash");
}

/// With a dense index, open trusts synced segments without rescanning them (row R2), so damage
/// in the middle of one may go unnoticed at open — but it must never be served as data, and
/// the synced region must never be truncated (T09, INV-13).
#[test]
fn damaged_batch_in_a_trusted_segment_is_never_served_nor_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::for_tests();
    let all = closed_log(dir.path(), &cfg, 4);
    let end = all.len() as u64;
    let base = segment_bases(dir.path())[1];
    let path = seg_path(dir.path(), base);
    let batches = batches_of(dir.path(), base);
    let b = batches[batches.len() / 2];
    flip_bit(&path, b.pos + b.len / 2, 6);
    match Log::open(dir.path(), cfg) {
        Err(e) => assert_corrupt_at(Err(e), &path, b.pos, "dense index"),
        Ok(log) => {
            assert_eq!(log.log_end_offset().0, end, "synced data was truncated");
            let r = log.recovery_report();
            assert_eq!(r.truncated_at, None, "{r:?}");
            assert_eq!(r.segments_deleted, 0, "{r:?}");
            for o in b.base_offset..b.next_offset {
                let f = log.read(Offset(o), 1 << 16).unwrap();
                let first = f
                    .batches()
                    .next()
                    .expect("a read returns the batch or an error");
                match first {
                    Err(Error::Corrupt {
                        path: p, position, ..
                    }) => {
                        assert_eq!(p, path);
                        assert_eq!(position, b.pos as u64);
                    }
                    Err(e) => panic!("offset {o}: unexpected error {e}"),
                    Ok(v) => panic!("offset {o}: damaged batch served: {:?}", v.header()),
                }
            }
            // The batches around it are intact.
            for o in [b.base_offset - 1, b.next_offset] {
                let f = log.read(Offset(o), 1).unwrap();
                assert!(f.batches().next().unwrap().is_ok(), "offset {o}");
            }
        }
    }
}

/// ReadOnlyOnCorruption: open read-only, refuse writes, serve the segments before the damage,
/// change no file. (These read-only tests start from a crash, so that open loads the damaged
/// segment; after a clean close it would be found on first use instead, as above.)
#[test]
fn read_only_mode_serves_data_before_the_damage_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all = crashed_log(dir.path(), &sparse(), 5);
    let bases = segment_bases(dir.path());
    let base = bases[2];
    let path = seg_path(dir.path(), base);
    let b = batches_of(dir.path(), base)[2];
    flip_bit(&path, b.pos + b.len / 2, 1);
    let before = snapshot_dir(dir.path());

    let log = Log::open(dir.path(), read_only(sparse())).unwrap();
    assert!(log.is_read_only());
    let r = log.recovery_report().clone();
    let msg = r.corruption.clone().expect("corruption reported");
    assert!(msg.contains(&format!("{base:020}.log")), "{msg}");
    assert!(matches!(log.append(&batch(1, 1, 1)), Err(Error::ReadOnly)));
    assert!(matches!(log.roll(), Err(Error::ReadOnly)));
    assert!(matches!(log.flush(), Ok(()) | Err(Error::ReadOnly)));
    assert!(matches!(log.truncate_to(Offset(1)), Err(Error::ReadOnly)));
    assert!(matches!(
        log.advance_log_start(Offset(1)),
        Err(Error::ReadOnly)
    ));
    // Everything in the segments before the damaged one reads back intact.
    let end = log.log_end_offset().0;
    assert!(
        end >= base,
        "segments before the damage are served (end {end}, base {base})"
    );
    assert!(
        end <= b.base_offset,
        "nothing at or after the damaged batch is served"
    );
    let got = read_all(&log);
    let want: Vec<_> = all.iter().filter(|(o, _)| *o < end).cloned().collect();
    assert_eq!(got, want);
    log.close().unwrap();
    assert_eq!(
        snapshot_dir(dir.path()),
        before,
        "read-only open changed files"
    );

    // The default mode still refuses to open.
    assert_corrupt_at(
        Log::open(dir.path(), sparse()),
        &path,
        b.pos,
        "after read-only",
    );
}

/// `RecoveryMode::ReadOnlyOnCorruption` is documented as "serving the valid prefix before the
/// damage": the intact batches of the damaged segment itself, before the damaged batch, are
/// part of that prefix.
#[test]
fn read_only_mode_serves_the_intact_batches_of_the_damaged_segment() {
    let dir = tempfile::tempdir().unwrap();
    let all = crashed_log(dir.path(), &sparse(), 4);
    let base = segment_bases(dir.path())[2];
    let b = batches_of(dir.path(), base)[2];
    flip_bit(&seg_path(dir.path(), base), b.pos + b.len / 2, 1);
    let log = Log::open(dir.path(), read_only(sparse())).unwrap();
    assert!(log.is_read_only());
    assert_eq!(
        log.log_end_offset().0,
        b.base_offset,
        "the valid prefix ends at the damaged batch, not at the damaged segment's base {base}"
    );
    let want: Vec<_> = all
        .iter()
        .filter(|(o, _)| *o < b.base_offset)
        .cloned()
        .collect();
    assert_eq!(read_all(&log), want);
}

/// Damage in the very first segment: there is still a (possibly empty) valid prefix, so
/// ReadOnlyOnCorruption must open read-only rather than fail.
#[test]
fn read_only_mode_opens_with_damage_in_the_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), &sparse(), 3);
    let base = segment_bases(dir.path())[0];
    let b = batches_of(dir.path(), base)[1];
    flip_bit(&seg_path(dir.path(), base), b.pos + b.len / 2, 1);
    match Log::open(dir.path(), read_only(sparse())) {
        Ok(log) => {
            assert!(log.is_read_only());
            assert!(log.recovery_report().corruption.is_some());
            assert!(matches!(log.append(&batch(1, 1, 1)), Err(Error::ReadOnly)));
        }
        Err(e) => panic!("ReadOnlyOnCorruption refused to open: {e:?}"),
    }
}

/// Builds a log whose active segment holds synced batches and one unsynced batch, then crashes.
/// Returns the active base, its batches and the synced end.
fn crashed_active(dir: &Path) -> (u64, Vec<BatchAt>, u64) {
    closed_log(dir, &sparse(), 2);
    let log = Log::open(dir, sparse()).unwrap();
    let segments = log.segments().len();
    for tag in 100..104 {
        log.append(&batch(tag, 2, 16)).unwrap();
    }
    log.flush().unwrap();
    let synced = log.log_end_offset().0;
    log.append(&batch(104, 2, 16)).unwrap();
    assert_eq!(log.segments().len(), segments, "no roll");
    let base = log.segments().last().unwrap().base_offset();
    log.simulate_crash();
    let batches = batches_of(dir, base);
    assert_eq!(batches.last().unwrap().base_offset, synced);
    (base, batches, synced)
}

/// Row R6: the scan of the active segment stops below the recovery point — corruption.
#[test]
fn damage_in_synced_data_of_the_active_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (base, batches, synced) = crashed_active(dir.path());
    let path = seg_path(dir.path(), base);
    let victim = *batches
        .iter()
        .rev()
        .find(|b| b.next_offset <= synced)
        .unwrap();
    flip_bit(&path, victim.pos + victim.len / 2, 5);
    let before = snapshot_dir(dir.path());
    assert_corrupt_at(
        Log::open(dir.path(), sparse()),
        &path,
        victim.pos,
        "active, synced",
    );
    assert_eq!(snapshot_dir(dir.path()), before, "nothing truncated");

    let log = Log::open(dir.path(), read_only(sparse())).unwrap();
    assert!(log.is_read_only());
    assert!(log.log_end_offset().0 <= victim.base_offset);
    drop(log);
    assert_eq!(
        snapshot_dir(dir.path()),
        before,
        "read-only open truncated nothing"
    );
}

/// Rows R5/R8: the same flip in the unsynced last batch is a torn write: cut and reported.
#[test]
fn damage_in_the_unsynced_tail_is_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let (base, batches, synced) = crashed_active(dir.path());
    let victim = *batches.last().unwrap();
    flip_bit(&seg_path(dir.path(), base), victim.pos + victim.len / 2, 5);
    let bytes = fs::read(seg_path(dir.path(), base)).unwrap();
    let last_nonzero = bytes.iter().rposition(|&b| b != 0).unwrap();
    let log = Log::open(dir.path(), sparse()).unwrap();
    let r = log.recovery_report().clone();
    assert!(r.corruption.is_none(), "{r:?}");
    assert!(!log.is_read_only());
    assert_eq!(log.log_end_offset().0, synced, "{r:?}");
    assert_eq!(r.truncated_at, Some(synced), "{r:?}");
    // Everything from the cut to the last non-zero byte (a batch may end in zero bytes).
    assert_eq!(
        r.bytes_truncated,
        (last_nonzero + 1 - victim.pos) as u64,
        "{r:?}"
    );
    assert_eq!(log.append(&batch(1, 1, 1)).unwrap().base_offset.0, synced);
}

/// Row R9: synced data is missing (the last segment file is gone) — corruption, not an empty
/// tail.
#[test]
fn recovery_point_beyond_the_log_end_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), &LogConfig::for_tests(), 3);
    let last = *segment_bases(dir.path()).last().unwrap();
    for p in [
        seg_path(dir.path(), last),
        index_path(dir.path(), last),
        timeindex_path(dir.path(), last),
    ] {
        fs::remove_file(p).unwrap();
    }
    let before = snapshot_dir(dir.path());
    match Log::open(dir.path(), LogConfig::for_tests()) {
        Err(Error::CorruptFile { path, reason }) => {
            assert!(path.ends_with("recovery-point"), "{path:?}: {reason}");
        }
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(log) => panic!(
            "synced data missing, yet open succeeded with end {:?}: {:?}",
            log.log_end_offset(),
            log.recovery_report()
        ),
    }
    assert_eq!(snapshot_dir(dir.path()), before);
    let log = Log::open(dir.path(), read_only(LogConfig::for_tests())).unwrap();
    assert!(log.is_read_only());
    assert!(log.recovery_report().corruption.is_some());
}

/// Row R9 when the log start is beyond the recovered end too: every segment file is gone, the
/// log start checkpoint (10) lies beyond the recovered end (nothing), and the recovery point (20)
/// lies beyond the log start, so records at and after the log start that were durable are
/// missing. Open used to accept this (restarting empty at the log start) while the checkpoint
/// still said 20; after one more append and a crash the next open failed on the new segment's
/// zeros (R6), the shape of finding 11's error. Now the first open reports it.
#[test]
fn recovery_point_beyond_the_log_start_and_the_log_end_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::for_tests();
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..10 {
        log.append(&batch(i, 2, 10)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.recovery_point().0, 20);
    log.advance_log_start(Offset(10)).unwrap();
    log.close().unwrap();
    for base in segment_bases(dir.path()) {
        for p in [
            seg_path(dir.path(), base),
            index_path(dir.path(), base),
            timeindex_path(dir.path(), base),
        ] {
            let _ = fs::remove_file(p);
        }
    }
    match Log::open(dir.path(), cfg) {
        Err(Error::CorruptFile { path, reason }) => {
            assert!(path.ends_with("recovery-point"), "{path:?}: {reason}");
        }
        Err(e) => panic!("expected R9, got {e}"),
        Ok(log) => panic!(
            "records at the log start are missing, yet open succeeded with end {:?}",
            log.log_end_offset()
        ),
    }
}

/// Row R7 below the recovery point: the log rolled, `flush()` synced the rolled segment (and
/// moved the recovery point past it), and the process died before the background sealer
/// trimmed it and wrote its index files. The segment file is then still preallocated: its
/// batches are followed by zeros up to `segment_bytes`, exactly where the next segment begins.
/// That is a complete segment, not damage; open must keep it and re-seal it. (The state is
/// produced with file edits because the sealer usually wins the race.)
#[test]
fn unsealed_synced_segment_after_a_crash_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::for_tests();
    let all = closed_log(dir.path(), &cfg, 4);
    let bases = segment_bases(dir.path());
    let victim = bases[bases.len() - 2];
    let path = seg_path(dir.path(), victim);
    let len = fs::metadata(&path).unwrap().len();
    assert!(len < cfg.segment_bytes);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cfg.segment_bytes)
        .unwrap();
    fs::remove_file(index_path(dir.path(), victim)).unwrap();
    fs::remove_file(timeindex_path(dir.path(), victim)).unwrap();
    // A crash leaves no clean-shutdown marker.
    fs::remove_file(dir.path().join("clean-shutdown")).unwrap();

    let log = Log::open(dir.path(), cfg.clone())
        .unwrap_or_else(|e| panic!("a synced segment whose seal did not finish: {e}"));
    assert_eq!(log.log_end_offset().0, all.len() as u64);
    assert_eq!(read_all(&log), all);
    log.close().unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len,
        "re-sealed (trimmed)"
    );
    assert!(index_path(dir.path(), victim).exists());
    let log = Log::open(dir.path(), cfg).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().indexes_rebuilt, 0);
}
