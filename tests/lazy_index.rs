//! Row R1 with deferred indexes (docs/recovery.md, "Deferred index loading"): a clean open
//! reads no index file and no byte of a sealed segment; the first lookup in a sealed segment
//! loads its index, verifies it (checksum, binding to the file, tail walk) and rebuilds it from
//! the segment if it fails, exactly as an eager open would. Damage found then is
//! `Error::Corrupt` with the file and position, every time, and nothing is truncated or repaired.

mod common;
#[path = "common/fault.rs"]
mod fault;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{assert_corrupt, closed_log, read_all, sparse};
use fault::{
    batches_in, flip_bit, index_path, seg_path, segment_bases, snapshot_dir, timeindex_path,
};
use oncelog::io::fs::RealStorage;
use oncelog::io::{DirLock, OpenMode, Storage, StorageFile};
use oncelog::{Log, LogConfig, Offset};

/// The real file system, counting `open` calls per file name.
#[derive(Debug, Default)]
struct CountingStorage {
    inner: RealStorage,
    opens: Mutex<BTreeMap<String, usize>>,
}

impl CountingStorage {
    fn opens_of(&self, path: &Path) -> usize {
        let name = path.file_name().unwrap().to_str().unwrap();
        self.opens.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Opens of `.index`/`.timeindex` files of the segments at `bases`.
    fn index_opens(&self, dir: &Path, bases: &[u64]) -> usize {
        bases
            .iter()
            .map(|&b| self.opens_of(&index_path(dir, b)) + self.opens_of(&timeindex_path(dir, b)))
            .sum()
    }

    fn reset(&self) {
        self.opens.lock().unwrap().clear();
    }
}

impl Storage for CountingStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dirs(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            *self
                .opens
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default() += 1;
        }
        self.inner.open(path, mode)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(dir)
    }
}

fn cfg() -> LogConfig {
    LogConfig::for_tests()
}

#[test]
fn clean_reopen_reads_no_index_file_of_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let all = closed_log(dir.path(), &cfg(), 6);
    let bases = segment_bases(dir.path());
    let (sealed, active) = bases.split_at(bases.len() - 1);
    let storage = Arc::new(CountingStorage::default());
    let log = Log::open(dir.path(), cfg().with_storage(storage.clone())).unwrap();
    let r = log.recovery_report().clone();
    assert!(r.clean_shutdown, "{r:?}");
    assert_eq!(r.segments_scanned, 0, "{r:?}");
    assert_eq!(r.bytes_scanned, 0, "{r:?}");
    assert_eq!(r.indexes_rebuilt, 0, "{r:?}");
    assert_eq!(r.indexes_deferred, sealed.len(), "{r:?}");
    assert_eq!(
        storage.index_opens(dir.path(), sealed),
        0,
        "sealed index files read at open"
    );
    assert_eq!(
        storage.index_opens(dir.path(), active),
        2,
        "the active segment's index is loaded at open as before"
    );
    let segs = log.segments();
    assert!(segs[..sealed.len()].iter().all(|s| !s.index_loaded()));
    assert!(segs[sealed.len()].index_loaded());
    assert_eq!(log.index_loads(), Default::default());
    // Without loading anything, the log knows its shape.
    for (s, next) in segs.iter().zip(bases.iter().skip(1)) {
        assert_eq!(s.next_offset(), *next);
        assert_eq!(
            s.size(),
            fs::metadata(seg_path(dir.path(), s.base_offset()))
                .unwrap()
                .len()
        );
    }
    assert_eq!(log.log_end_offset().0, all.len() as u64);

    // The first read in segment 2 loads exactly its index, once.
    let target = &segs[2];
    let f = log.read(Offset(target.base_offset()), 1).unwrap();
    assert_eq!(
        f.batches().next().unwrap().unwrap().base_offset(),
        target.base_offset()
    );
    assert!(target.index_loaded());
    assert_eq!(
        storage.opens_of(&index_path(dir.path(), target.base_offset())),
        1
    );
    assert_eq!(
        storage.opens_of(&timeindex_path(dir.path(), target.base_offset())),
        1
    );
    let others: Vec<u64> = sealed
        .iter()
        .copied()
        .filter(|&b| b != target.base_offset())
        .collect();
    assert_eq!(storage.index_opens(dir.path(), &others), 0);
    log.read(Offset(target.base_offset() + 1), 1).unwrap();
    assert_eq!(storage.index_opens(dir.path(), sealed), 2, "loaded once");
    let loads = log.index_loads();
    assert_eq!(
        (loads.loaded, loads.rebuilt, loads.failed),
        (1, 0, 0),
        "{loads:?}"
    );

    // Every lookup answers as before; then every sealed index is loaded, none rebuilt.
    assert_eq!(read_all(&log), all);
    assert!(log.segments().iter().all(|s| s.index_loaded()));
    let loads = log.index_loads();
    assert_eq!(
        (loads.loaded, loads.rebuilt),
        (sealed.len(), 0),
        "{loads:?}"
    );
    log.check_invariants();
    log.close().unwrap();

    // A deferred segment that was never loaded is left as it was by close.
    storage.reset();
    let log = Log::open(dir.path(), cfg().with_storage(storage.clone())).unwrap();
    log.close().unwrap();
    assert_eq!(storage.index_opens(dir.path(), sealed), 0);
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(read_all(&log), all);
    assert_eq!(log.index_loads().rebuilt, 0);
}

/// Offset and timestamp lookups, retention by time, truncation and producer replay all go
/// through the first load.
#[test]
fn every_kind_of_lookup_loads_a_deferred_index() {
    let dir = tempfile::tempdir().unwrap();
    let all = closed_log(dir.path(), &cfg(), 5);
    let end = all.len() as u64;

    // offset_for_timestamp: every record of batch `tag` has timestamp 1000 + tag, and its value
    // starts with "tag:".
    let tag_of = |v: &[u8]| -> i64 {
        let s = std::str::from_utf8(v).unwrap();
        s.split(':').next().unwrap().parse().unwrap()
    };
    let log = Log::open(dir.path(), cfg()).unwrap();
    for ts in 995..1_200 {
        let want = all
            .iter()
            .find(|(_, v)| 1_000 + tag_of(v) >= ts)
            .map(|(o, _)| Offset(*o));
        assert_eq!(log.offset_for_timestamp(ts).unwrap(), want, "ts {ts}");
    }
    assert!(log.index_loads().loaded >= 1);
    assert_eq!(log.index_loads().rebuilt, 0);
    log.close().unwrap();

    // Truncation into a deferred segment.
    let log = Log::open(dir.path(), cfg()).unwrap();
    let segs = log.segments();
    let mid = segs[1].base_offset() + 1;
    assert!(!segs[1].index_loaded());
    log.truncate_to(Offset(mid)).unwrap();
    assert!(log.log_end_offset().0 <= mid);
    let kept: Vec<_> = all
        .iter()
        .filter(|(o, _)| *o < log.log_end_offset().0)
        .cloned()
        .collect();
    assert_eq!(read_all(&log), kept);
    log.check_invariants();
    log.close().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(read_all(&log), kept);
    log.close().unwrap();

    // Retention by time reads the oldest segments' newest append time.
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), &cfg(), 5);
    let clock = Arc::new(oncelog::ManualClock::new(i64::MAX / 4));
    let aged = LogConfig {
        retention_ms: Some(1),
        ..cfg()
    }
    .with_clock(clock);
    let log = Log::open(dir.path(), aged).unwrap();
    let before = log.segments().len();
    let out = log.apply_retention().unwrap();
    assert_eq!(
        out.segments_deleted,
        before - 1,
        "every sealed segment is past retention"
    );
    assert!(log.index_loads().loaded >= 1);
    assert!(log.log_start_offset().0 < end);
    log.check_invariants();
}

/// Missing and damaged index files of a sealed segment are found by the first use, rebuilt from
/// the segment, written back, and answer exactly as before (tests/index_damage.rs runs every
/// kind of index damage, stale and foreign files included, through the same path).
#[test]
fn damaged_index_found_on_first_use_is_rebuilt_and_rewritten() {
    let pristine = tempfile::tempdir().unwrap();
    let all = closed_log(pristine.path(), &cfg(), 5);
    let bases = segment_bases(pristine.path());
    let victim = bases[2];
    type Damage = (&'static str, fn(&Path, u64));
    let damages: [Damage; 3] = [
        ("missing .index", |d, b| {
            fs::remove_file(index_path(d, b)).unwrap()
        }),
        ("bit flip in .timeindex", |d, b| {
            let p = timeindex_path(d, b);
            let len = fs::metadata(&p).unwrap().len() as usize;
            flip_bit(&p, len / 2, 4);
        }),
        ("both missing", |d, b| {
            fs::remove_file(index_path(d, b)).unwrap();
            fs::remove_file(timeindex_path(d, b)).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        fault::copy_dir(pristine.path(), dir.path());
        damage(dir.path(), victim);
        let log = Log::open(dir.path(), cfg()).unwrap();
        let r = log.recovery_report().clone();
        assert!(r.clean_shutdown && r.indexes_rebuilt == 0, "{what}: {r:?}");
        assert_eq!(log.index_loads().rebuilt, 0, "{what}");
        assert_eq!(read_all(&log), all, "{what}");
        let loads = log.index_loads();
        assert_eq!((loads.rebuilt, loads.failed), (1, 0), "{what}: {loads:?}");
        assert!(loads.bytes_scanned > 0, "{what}");
        assert!(index_path(dir.path(), victim).exists(), "{what}: rewritten");
        log.close().unwrap();
        // The rewritten files are used by the next first use.
        let log = Log::open(dir.path(), cfg()).unwrap();
        assert_eq!(read_all(&log), all, "{what}, after the rewrite");
        assert_eq!(log.index_loads().rebuilt, 0, "{what}: not rewritten");
    }
}

/// Damage in a sealed segment's bytes after a clean close: open succeeds (it reads nothing of
/// the segment), the first lookup in it reports `Error::Corrupt` with the file and the damaged
/// batch's position, and so does every later one; nothing is truncated, repaired or served, the
/// other segments stay readable, and the damaged segment's files are left exactly as they were.
#[test]
fn damaged_segment_found_on_first_use_is_corruption() {
    // (config, which batch is damaged): with the sparse index the load walks the whole segment;
    // with the dense one it walks after the last entry and checks the binding's last batch CRC.
    for (name, config, pick_last) in [("sparse", sparse(), false), ("dense", cfg(), true)] {
        let dir = tempfile::tempdir().unwrap();
        let all = closed_log(dir.path(), &config, 4);
        let base = segment_bases(dir.path())[1];
        let path = seg_path(dir.path(), base);
        let batches = batches_in(&fs::read(&path).unwrap());
        let b = if pick_last {
            *batches.last().unwrap()
        } else {
            batches[batches.len() / 2]
        };
        flip_bit(&path, b.pos + b.len / 2, 3);
        let damaged = fs::read(&path).unwrap();
        let index = fs::read(index_path(dir.path(), base)).unwrap();

        for attempt in 0..2 {
            let what = format!("{name}, open {attempt}");
            let log = Log::open(dir.path(), config.clone()).unwrap();
            assert!(log.recovery_report().clean_shutdown, "{what}");
            assert_eq!(log.recovery_report().corruption, None, "{what}");
            let seg = Arc::clone(&log.segments()[1]);
            assert_eq!(seg.base_offset(), base);
            for _ in 0..2 {
                assert_corrupt(log.read(Offset(base), 1), &path, b.pos as u64, &what);
            }
            assert_corrupt(seg.index().map(|_| ()), &path, b.pos as u64, &what);
            assert_corrupt(seg.tail(), &path, b.pos as u64, &what);
            assert!(!seg.index_loaded());
            assert_eq!(log.index_loads().failed, 1, "{what}");
            // The segments around it are intact.
            for (o, _) in all.iter().filter(|(o, _)| *o < base).step_by(5) {
                assert!(log.read(Offset(*o), 1).is_ok(), "{what}: offset {o}");
            }
            let after = log.segments()[2].base_offset();
            assert!(log.read(Offset(after), 1).is_ok(), "{what}");
            assert_eq!(
                log.log_end_offset().0,
                all.len() as u64,
                "{what}: nothing truncated"
            );
            if attempt == 1 {
                // Truncating into it is refused the same way (and poisons the log, so this
                // close is not clean).
                assert_corrupt(
                    log.truncate_to(Offset(base + 1)),
                    &path,
                    b.pos as u64,
                    &what,
                );
                assert!(log.is_poisoned());
            }
            drop(log);
            assert_eq!(fs::read(&path).unwrap(), damaged, "{what}: segment changed");
            assert_eq!(
                fs::read(index_path(dir.path(), base)).unwrap(),
                index,
                "{what}"
            );
        }
        // After that unclean close the segment is below the recovery point: the eager load of
        // an unclean open reports the same damage at open.
        let r = Log::open(dir.path(), config.clone()).map(|_| ());
        assert_corrupt(r, &path, b.pos as u64, &format!("{name}, unclean open"));
        assert_eq!(fs::read(&path).unwrap(), damaged, "{name}: segment changed");
    }
}

/// A sealed segment file deleted from the middle of a cleanly closed log: synced offsets are
/// missing. The clean-shutdown marker records the chain (segment count and a checksum of the
/// bases), so the open that would have deferred every sealed segment sees the change, opens
/// unclean, and reports the gap as an eager open does: `Corrupt` at position 0 of the segment
/// after it, with nothing on disk changed. (Until the marker carried the chain, this was found
/// only by the first use of the segment before the gap, and `read` inside the intact first
/// segment failed naming the next file.)
#[test]
fn missing_segment_is_found_at_open() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), &cfg(), 5);
    let bases = segment_bases(dir.path());
    for p in [seg_path, index_path, timeindex_path] {
        fs::remove_file(p(dir.path(), bases[2])).unwrap();
    }
    let before = snapshot_dir(dir.path());
    let next: PathBuf = seg_path(dir.path(), bases[3]);
    assert_corrupt(
        Log::open(dir.path(), cfg()).map(|_| ()),
        &next,
        0,
        "gap after segment 1",
    );
    assert_eq!(
        snapshot_dir(dir.path()),
        before,
        "a failed open changed files"
    );
}

/// Many threads racing for the first load of the same segments all get correct answers, and
/// each index is loaded once.
#[test]
fn concurrent_first_uses_load_once() {
    let dir = tempfile::tempdir().unwrap();
    let all = closed_log(dir.path(), &cfg(), 6);
    let log = Log::open(dir.path(), cfg()).unwrap();
    let sealed = log.segments().len() - 1;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(read_all(&log), all));
        }
    });
    let loads = log.index_loads();
    assert_eq!(
        (loads.loaded, loads.rebuilt, loads.failed),
        (sealed, 0, 0),
        "{loads:?}"
    );
}

/// A read-only open (ReadOnlyOnCorruption, after damage elsewhere) defers too, and its first
/// uses rebuild in memory only: no file changes.
#[test]
fn read_only_first_use_rebuilds_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let all = closed_log(dir.path(), &cfg(), 4);
    let bases = segment_bases(dir.path());
    fs::remove_file(index_path(dir.path(), bases[1])).unwrap();
    // A damaged log-start checkpoint makes the open read-only.
    fs::write(dir.path().join("log-start-offset"), b"garbage").unwrap();
    let before = fault::snapshot_dir(dir.path());
    let log = Log::open(
        dir.path(),
        LogConfig {
            recovery: oncelog::RecoveryMode::ReadOnlyOnCorruption,
            ..cfg()
        },
    )
    .unwrap();
    assert!(log.is_read_only());
    assert_eq!(read_all(&log), all);
    assert_eq!(log.index_loads().rebuilt, 1);
    log.close().unwrap();
    assert_eq!(
        fault::snapshot_dir(dir.path()),
        before,
        "read-only open changed files"
    );
}
