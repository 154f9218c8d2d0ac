//! `Log::open_read_only`: a log inspected on read-only media or beside its writer. The open
//! creates, writes, truncates, renames and deletes nothing (checked by comparing the directory's
//! listing, sizes, mtimes and bytes before and after: chmod alone proves nothing when the tests
//! run as root), serves every record of a closed log, serves only the valid prefix of a crashed
//! writer's torn tail, refuses every write with `Error::ReadOnly`, refuses directories that hold
//! no log with a typed error, and reads a consistent prefix while another writer appends,
//! rolls and deletes segments.

mod common;
#[path = "common/fault.rs"]
mod fault;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use common::{batch, read_all, read_committed};
use fault::{batches_in, flip_bit, seg_path, segment_bases};
use oncelog::{Error, Log, LogConfig, Offset, RecoveryMode};

fn cfg() -> LogConfig {
    LogConfig::for_tests()
}

/// Everything a read-only open must leave as it found: the directory's own mtime, and each
/// entry's name, kind, size, mtime and bytes.
#[derive(Debug, PartialEq, Eq)]
struct DirState {
    dir_mtime: SystemTime,
    entries: BTreeMap<String, (bool, u64, SystemTime, Vec<u8>)>,
}

fn dir_state(dir: &Path) -> DirState {
    let entries = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let bytes = if m.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().into_string().unwrap(),
                (m.is_file(), m.len(), m.modified().unwrap(), bytes),
            )
        })
        .collect();
    DirState {
        dir_mtime: fs::metadata(dir).unwrap().modified().unwrap(),
        entries,
    }
}

/// Makes every file 0444 and the directory 0555 (a read-only medium, as far as chmod can make
/// one); `writable` undoes it so the temporary directory can be removed.
fn make_read_only(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
}

fn writable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Every write a `Log` offers answers `Error::ReadOnly`.
fn assert_refuses_writes(log: &Log) {
    let ro = |what: &str, r: Result<(), Error>| {
        assert!(matches!(r, Err(Error::ReadOnly)), "{what}: {r:?}");
    };
    ro("append", log.append(&batch(999, 1, 8)).map(|_| ()));
    ro(
        "append_replicated",
        log.append_replicated(&batch(999, 1, 8)).map(|_| ()),
    );
    ro("roll", log.roll().map(|_| ()));
    ro("flush", log.flush());
    ro("truncate_to", log.truncate_to(Offset(0)).map(|_| ()));
    ro("apply_retention", log.apply_retention().map(|_| ()));
    ro(
        "advance_log_start",
        log.advance_log_start(log.log_end_offset()).map(|_| ()),
    );
    ro("init_producer", log.init_producer().map(|_| ()));
    ro("take_producer_snapshot", log.take_producer_snapshot());
}

/// A log written and closed, then opened read-only on 0444 files in a 0555 directory: every
/// record is served (reads, read_committed, timestamp lookups that load deferred indexes),
/// every write is refused, and the directory is byte for byte and mtime for mtime unchanged.
#[test]
fn a_closed_log_on_read_only_files_serves_every_record_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let expected = common::closed_log(&dir, &cfg(), 4);
    let segments = segment_bases(&dir).len();
    assert!(segments >= 4, "{segments} segments");
    make_read_only(&dir);
    let before = dir_state(&dir);

    let log = Log::open_read_only(&dir, cfg()).unwrap();
    assert!(log.is_read_only());
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.segments().len(), segments);
    assert_eq!(read_all(&log), expected);
    assert_eq!(read_committed(&log, 0).len(), expected.len());
    // A timestamp lookup loads the deferred index of a sealed segment (and writes nothing).
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(Offset(0)));
    assert!(log.index_loads().loaded >= 1);
    assert_refuses_writes(&log);
    // Two read-only opens at once: no lock is taken.
    let second = Log::open_read_only(&dir, cfg()).unwrap();
    assert_eq!(read_all(&second), expected);
    drop(second);
    log.close().unwrap();

    assert_eq!(
        dir_state(&dir),
        before,
        "the read-only open changed the directory"
    );
    writable(&dir);
    // The log is intact for a writer afterwards.
    let log = Log::open(&dir, cfg()).unwrap();
    assert_eq!(read_all(&log), expected);
    log.close().unwrap();
}

/// A writer crashed (simulate_crash) with a torn last batch: the read-only open serves the
/// valid prefix, reports the cut a writable open would make, and leaves the torn bytes on
/// disk; the writable open afterwards cuts at the same place and serves the same records.
#[test]
fn a_crashed_writers_torn_tail_is_not_served_and_stays_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, cfg()).unwrap();
    for tag in 0..40 {
        log.append(&batch(tag, 2, 24)).unwrap();
    }
    log.flush().unwrap();
    for tag in 40..43 {
        log.append(&batch(tag, 2, 24)).unwrap();
    }
    let all = read_all(&log);
    log.simulate_crash();

    // Tear the last batch of the active segment: its second half becomes garbage.
    let active = *segment_bases(&dir).last().unwrap();
    let path = seg_path(&dir, active);
    let mut bytes = fs::read(&path).unwrap();
    let last = *batches_in(&bytes).last().unwrap();
    for b in &mut bytes[last.pos + last.len / 2..last.end()] {
        *b ^= 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    let kept: Vec<_> = all
        .iter()
        .filter(|(o, _)| *o < last.base_offset)
        .cloned()
        .collect();
    assert!(kept.len() < all.len() && !kept.is_empty());

    make_read_only(&dir);
    let before = dir_state(&dir);
    let log = Log::open_read_only(&dir, cfg()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().truncated_at, Some(last.base_offset));
    assert_eq!(log.log_end_offset(), Offset(last.base_offset));
    assert_eq!(read_all(&log), kept);
    assert!(matches!(
        log.read(Offset(last.base_offset + 1), 1 << 20),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_refuses_writes(&log);
    drop(log);
    assert_eq!(
        dir_state(&dir),
        before,
        "the read-only open changed the directory"
    );

    writable(&dir);
    let log = Log::open(&dir, cfg()).unwrap();
    assert_eq!(log.recovery_report().truncated_at, Some(last.base_offset));
    assert_eq!(read_all(&log), kept);
    log.close().unwrap();
}

/// Damage in synced data: `FailOnCorruption` refuses with the file and position (as verify
/// reports it), `ReadOnlyOnCorruption` serves the prefix before the damage and describes it;
/// neither changes a byte.
#[test]
fn damage_is_refused_or_reported_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, cfg()).unwrap();
    for tag in 0..6 {
        log.append(&batch(tag, 2, 24)).unwrap();
    }
    log.flush().unwrap();
    log.simulate_crash();
    let active = *segment_bases(&dir).last().unwrap();
    let path = seg_path(&dir, active);
    let batches = batches_in(&fs::read(&path).unwrap());
    let damaged = batches[batches.len() / 2];
    flip_bit(&path, damaged.pos + damaged.len - 1, 3);
    let before = dir_state(&dir);

    let refused = Log::open_read_only(&dir, cfg());
    common::assert_corrupt(refused, &path, damaged.pos as u64, "FailOnCorruption");
    let log = Log::open_read_only(
        &dir,
        LogConfig {
            recovery: RecoveryMode::ReadOnlyOnCorruption,
            ..cfg()
        },
    )
    .unwrap();
    let why = log.recovery_report().corruption.clone().unwrap();
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert_eq!(log.log_end_offset(), Offset(damaged.base_offset));
    assert_eq!(read_all(&log).len() as u64, damaged.base_offset - active);
    assert_refuses_writes(&log);
    drop(log);
    assert_eq!(dir_state(&dir), before);
}

/// A directory that does not exist, an empty one, one of foreign files, and one holding a
/// log's checkpoint but no segment: each is a typed error, and nothing is created.
#[test]
fn directories_without_a_log_are_refused_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    match Log::open_read_only(&missing, cfg()) {
        Err(Error::NoLog { dir, .. }) => assert_eq!(dir, missing),
        other => panic!("missing directory: {other:?}"),
    }
    assert!(
        !missing.exists(),
        "the read-only open created the directory"
    );

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let before = dir_state(&empty);
    assert!(matches!(
        Log::open_read_only(&empty, cfg()),
        Err(Error::NoLog { .. })
    ));
    assert_eq!(dir_state(&empty), before);

    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), b"not a log").unwrap();
    let before = dir_state(&foreign);
    match Log::open_read_only(&foreign, cfg()) {
        Err(Error::ForeignDirectory { file, .. }) => assert_eq!(file, "notes.txt"),
        other => panic!("foreign directory: {other:?}"),
    }
    assert_eq!(dir_state(&foreign), before);

    // A log's checkpoint beside no segment (a writable open would create the first one).
    let bare = tmp.path().join("bare");
    fs::create_dir(&bare).unwrap();
    fs::write(bare.join("log-start-offset"), b"").unwrap();
    let before = dir_state(&bare);
    assert!(matches!(
        Log::open_read_only(&bare, cfg()),
        Err(Error::NoLog { .. })
    ));
    assert_eq!(dir_state(&bare), before);
}

/// A writer appends, rolls, and deletes old segments by retention while read-only opens come
/// and go: each open succeeds and serves a contiguous run of offsets whose records are the
/// writer's, ending at or after the previous view's end.
#[test]
fn read_only_opens_beside_a_live_writer_serve_a_consistent_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let writer_cfg = LogConfig {
        retention_bytes: Some(8 << 10),
        ..cfg()
    };
    let log = Log::open(&dir, writer_cfg).unwrap();
    log.append(&batch(0, 2, 24)).unwrap();
    log.flush().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            let mut tag = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.append(&batch(tag, 2, 24)).unwrap();
                if tag % 7 == 0 {
                    log.flush().unwrap();
                }
                if tag % 50 == 0 {
                    log.apply_retention().unwrap();
                }
                tag += 1;
            }
            tag
        })
    };
    let mut opened = 0;
    let mut last_end = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Enough opens, and the writer's retention has deleted segments under some of them.
    while (opened < 30 || log.log_start_offset().0 == 0) && std::time::Instant::now() < deadline {
        match Log::open_read_only(&dir, cfg()) {
            Ok(ro) => {
                opened += 1;
                let records = read_all(&ro);
                assert_eq!(
                    records.len() as u64,
                    ro.log_end_offset().0 - ro.log_start_offset().0
                );
                for pair in records.windows(2) {
                    assert_eq!(pair[0].0 + 1, pair[1].0, "offsets not contiguous");
                }
                for (offset, value) in &records {
                    // Every batch holds 2 records and tag t starts at offset 2t.
                    let (tag, i) = (offset / 2, offset % 2);
                    assert!(
                        value.starts_with(format!("{tag}:{i}:").as_bytes()),
                        "offset {offset}: {}",
                        String::from_utf8_lossy(value)
                    );
                }
                // The writer only appends: each view ends at or after the one before.
                assert!(ro.log_end_offset().0 >= last_end);
                last_end = ro.log_end_offset().0;
            }
            Err(e) => panic!("read-only open beside a live writer: {e:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(opened >= 1, "no read-only open succeeded");
    assert!(written > 1);
    assert!(log.log_start_offset().0 > 0, "retention deleted nothing");
    log.close().unwrap();
}
