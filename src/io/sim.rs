//! A simulated, crashable file system for tests: [`SimStorage`].
//!
//! The model follows SQLite's crash VFS and redb's `CrashBackend`: every file (an inode, named
//! by an id) has *volatile* bytes, what a running process sees (the page cache), and *durable*
//! bytes, what survives power loss; each has its own length. Directory entries likewise live in
//! a volatile namespace (path -> id) and a durable one.
//!
//! * `write_at`, `set_len`, `allocate` change volatile bytes; `sync_data` copies that file's
//!   volatile bytes and length to durable.
//! * `open(CreateNew | CreateTruncate)`, `rename`, `remove` change the volatile namespace;
//!   `sync_dir(dir)` copies the volatile entries directly inside `dir` to the durable namespace.
//! * `map(len)` gives a private heap buffer initialised from the volatile bytes. Flushing a range
//!   (msync) copies it to the volatile and the durable bytes; dropping the map (munmap) copies the
//!   whole buffer to the volatile bytes only. The buffer is *not* coherent with `read_at` /
//!   `write_at` while it lives: `read_at` sees the volatile bytes as of the last flush, and a
//!   `write_at` into the mapped range is overwritten when the map drops. The engine touches
//!   segment data only through the map, so this never matters to it.
//! * [`SimStorage::crash`] builds the disk a dead machine leaves ([`CrashMode`]): after a process
//!   kill the page cache survives; after power loss each dirty 4 KiB page independently keeps its
//!   durable version, takes its volatile version, or tears at 512-byte sectors, the length is
//!   either the durable or the volatile one, and each unsynced directory entry change
//!   independently survives or not. File handles, maps and locks from before a crash are dead:
//!   handles answer `ESTALE`.
//! * [`SimStorage::fail_after`] injects deterministic I/O errors into mutating operations, and
//!   [`SimStorage::pause_after`] holds one back (on the thread that calls it) until the test
//!   resumes it, so a test can force an interleaving of the engine's threads.
//!
//! Everything random comes from one PRNG seeded by [`SimStorage::new`] (or reseeded by
//! [`SimStorage::crash_with_seed`]), and every iteration is in sorted order, so a seed and the
//! sequence of calls reproduce a run exactly.
//!
//! Directories are only recorded (so `list`, `open` and `sync_dir` can refuse missing ones); they
//! are always durable. `lock_dir` creates an empty `LOCK` file in the volatile namespace, like
//! [`super::fs::RealStorage`], so `list` shows it.
#![allow(
    unsafe_code,
    reason = "a simulated mapping is a raw heap buffer shared with MappedRegion; each block says why"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::fs::LOCK_FILE;
use super::mmap::{MapBacking, MappedRegion};
use super::{Allocation, DirLock, OpenMode, Storage, StorageFile};

/// Page size for power-loss decisions: each dirty page survives, is lost or tears as a unit.
pub const PAGE_SIZE: usize = 4096;
/// Sector size: the unit a torn page is made of; a sector never tears.
pub const SECTOR_SIZE: usize = 512;
/// The largest file the simulation holds in memory; longer lengths fail with `EFBIG`.
pub const MAX_FILE_LEN: u64 = 1 << 32;

/// What kind of machine death [`SimStorage::crash`] simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// `kill -9`: the page cache survives, nothing is lost.
    Process,
    /// Power loss: unsynced pages and directory entries survive, vanish or tear, per the PRNG.
    PowerLoss,
}

/// The error an armed fault produces (see [`SimStorage::fail_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`: the operation has no effect. A failed `sync_data` or map flush leaves the bytes
    /// volatile (dirty) and not durable.
    Eio,
    /// `ENOSPC`: the operation has no effect.
    Enospc,
    /// `write_at` writes the first half of its data (rounded down) to the volatile bytes and
    /// fails with `ErrorKind::WriteZero`. Any other operation fails with `EIO` and no effect.
    ShortWrite,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    /// Mutating operations that still succeed before the fault fires.
    remaining: u64,
    kind: FaultKind,
    /// Keep failing every mutating operation once fired.
    sticky: bool,
}

/// splitmix64: tiny, fast and good enough to pick crash outcomes.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[derive(Debug, Default)]
struct FileData {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// Open handles and live maps of this epoch; the file is kept while any exist.
    refs: usize,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<u64, FileData>,
    next_id: u64,
    volatile_ns: BTreeMap<PathBuf, u64>,
    durable_ns: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Locked directory -> token of the guard holding it.
    locks: BTreeMap<PathBuf, u64>,
    next_lock_token: u64,
    /// Bumped by every crash; handles, maps and locks of an older epoch are dead.
    epoch: u64,
    /// Bumped by every power-loss crash (a reboot); a process crash keeps it.
    boots: u64,
    live_maps: usize,
    rng: Rng,
    fault: Option<Fault>,
    /// Armed by [`SimStorage::pause_after`].
    pause: Option<Pause>,
    fallocate_unsupported: bool,
    /// [`SimStorage::set_disk_full`].
    disk_full: bool,
    op_count: u64,
    sync_points: u64,
}

/// A mutating operation to hold back: `remaining` more pass first; the next one waits (on
/// `Shared::paused`) until `released`.
#[derive(Debug, Clone, Copy)]
struct Pause {
    remaining: u64,
    holding: bool,
    released: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when an operation is held by a [`Pause`] and when the test releases it.
    paused: Condvar,
}

impl Shared {
    /// Called by every mutating operation before it counts itself: holds it while an armed
    /// [`Pause`] says so. Waiting releases the state lock, so other threads keep running (their
    /// own mutating operations wait here too until the held one is released).
    fn gate(&self, s: &mut MutexGuard<'_, State>) {
        loop {
            let Some(p) = s.pause.as_mut() else { return };
            if p.released {
                if p.holding {
                    s.pause = None;
                }
                return;
            }
            if !p.holding {
                if p.remaining > 0 {
                    p.remaining -= 1;
                    return;
                }
                p.holding = true;
                self.paused.notify_all();
            }
            self.paused.wait(s);
        }
    }
}

/// A simulated file system that can crash. Cheap to clone; clones share the same disk.
#[derive(Clone)]
pub struct SimStorage {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting must not deadlock if it happens while the state is locked.
        let Some(s) = self.shared.state.try_lock() else {
            return f.write_str("SimStorage { <locked> }");
        };
        f.debug_struct("SimStorage")
            .field("files", &s.files.len())
            .field("entries", &s.volatile_ns.len())
            .field("epoch", &s.epoch)
            .field("live_maps", &s.live_maps)
            .field("op_count", &s.op_count)
            .field("sync_points", &s.sync_points)
            .field("fault", &s.fault)
            .finish()
    }
}

fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} {} not found", path.display()),
    )
}

fn stale() -> io::Error {
    os_err(libc::ESTALE)
}

/// A file length or end offset as `usize`, refusing anything past [`MAX_FILE_LEN`].
fn file_offset(pos: u64, extra: usize) -> io::Result<usize> {
    let end = pos
        .checked_add(extra as u64)
        .filter(|&e| e <= MAX_FILE_LEN)
        .ok_or_else(|| os_err(libc::EFBIG))?;
    usize::try_from(end).map_err(|_| os_err(libc::EFBIG))
}

/// `dir` with the empty path (the parent of a bare file name) spelled `.`.
fn norm_dir(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    }
}

/// The directory holding `path`, normalised like [`norm_dir`].
fn parent_dir(path: &Path) -> PathBuf {
    norm_dir(path.parent().unwrap_or(Path::new("")))
}

/// Copies `src` over `dst[offset..]`, clamped to `dst`'s current length (never grows it).
fn copy_clamped(dst: &mut [u8], offset: usize, src: &[u8]) {
    if offset < dst.len() {
        let n = src.len().min(dst.len() - offset);
        dst[offset..offset + n].copy_from_slice(&src[..n]);
    }
}

impl State {
    /// Counts a mutating operation and returns the fault it must fail with, if one fires.
    fn begin_op(&mut self) -> Option<FaultKind> {
        self.op_count += 1;
        let fault = self.fault.as_mut()?;
        if fault.remaining > 0 {
            fault.remaining -= 1;
            return None;
        }
        let kind = fault.kind;
        if !fault.sticky {
            self.fault = None;
        }
        Some(kind)
    }

    /// `begin_op` for operations other than `write_at`: any fault fails them with no effect.
    fn begin_plain_op(&mut self) -> io::Result<()> {
        match self.begin_op() {
            None => Ok(()),
            Some(FaultKind::Enospc) => Err(os_err(libc::ENOSPC)),
            Some(FaultKind::Eio | FaultKind::ShortWrite) => Err(os_err(libc::EIO)),
        }
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        let dir = norm_dir(dir);
        dir == Path::new(".") || dir == Path::new("/") || self.dirs.contains(&dir)
    }

    fn require_parent(&self, path: &Path) -> io::Result<()> {
        let dir = parent_dir(path);
        if self.dir_exists(&dir) {
            Ok(())
        } else {
            Err(not_found("directory", &dir))
        }
    }

    /// The file of a live handle or map, or `ESTALE` if a crash has killed it.
    fn file_mut(&mut self, epoch: u64, id: u64) -> io::Result<&mut FileData> {
        if epoch != self.epoch {
            return Err(stale());
        }
        self.files.get_mut(&id).ok_or_else(stale)
    }

    fn new_file(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, FileData::default());
        id
    }

    /// Forgets files no directory entry, handle or map refers to.
    fn collect_garbage(&mut self) {
        let named: BTreeSet<u64> = self
            .volatile_ns
            .values()
            .chain(self.durable_ns.values())
            .copied()
            .collect();
        self.files.retain(|id, f| f.refs > 0 || named.contains(id));
    }

    fn release_ref(&mut self, epoch: u64, id: u64) {
        if epoch != self.epoch {
            return;
        }
        if let Some(f) = self.files.get_mut(&id) {
            f.refs = f.refs.saturating_sub(1);
        }
        self.collect_garbage();
    }

    /// The ids `path` names in the volatile and the durable namespace (deduplicated).
    fn ids_of(&self, path: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .volatile_ns
            .get(path)
            .into_iter()
            .chain(self.durable_ns.get(path))
            .copied()
            .collect();
        ids.dedup();
        ids
    }

    fn crash(&mut self, mode: CrashMode) {
        assert_eq!(
            self.live_maps, 0,
            "SimStorage::crash with live maps: drop every MappedRegion first"
        );
        match mode {
            CrashMode::Process => {
                self.durable_ns = self.volatile_ns.clone();
                for f in self.files.values_mut() {
                    f.durable = f.volatile.clone();
                }
            }
            CrashMode::PowerLoss => {
                self.boots += 1;
                let paths: BTreeSet<PathBuf> = self
                    .volatile_ns
                    .keys()
                    .chain(self.durable_ns.keys())
                    .cloned()
                    .collect();
                for path in paths {
                    let vol = self.volatile_ns.get(&path).copied();
                    if vol != self.durable_ns.get(&path).copied() && self.rng.coin() {
                        match vol {
                            Some(id) => self.durable_ns.insert(path, id),
                            None => self.durable_ns.remove(&path),
                        };
                    }
                }
                let named: BTreeSet<u64> = self.durable_ns.values().copied().collect();
                for (id, f) in &mut self.files {
                    if named.contains(id) {
                        power_loss_file(&mut self.rng, f);
                    }
                }
            }
        }
        self.volatile_ns = self.durable_ns.clone();
        for f in self.files.values_mut() {
            f.volatile = f.durable.clone();
            f.refs = 0;
        }
        self.collect_garbage();
        self.epoch += 1;
        self.locks.clear();
        self.fault = None;
        self.pause = None;
    }
}

/// Replaces `f`'s durable bytes with what power loss leaves of it; see [`CrashMode::PowerLoss`].
fn power_loss_file(rng: &mut Rng, f: &mut FileData) {
    let dlen = f.durable.len();
    let vlen = f.volatile.len();
    let max = dlen.max(vlen);
    // What the page cache would write back: volatile bytes, and past a volatile shrink the old
    // durable bytes (a lost truncate leaves them in place).
    let mut vol = f.volatile.clone();
    if vlen < dlen {
        vol.extend_from_slice(&f.durable[vlen..]);
    }
    let mut out = std::mem::take(&mut f.durable);
    out.resize(max, 0);
    for start in (0..max).step_by(PAGE_SIZE) {
        let end = (start + PAGE_SIZE).min(max);
        if out[start..end] == vol[start..end] {
            continue;
        }
        match rng.below(3) {
            0 => {}
            1 => out[start..end].copy_from_slice(&vol[start..end]),
            _ => {
                for s in (start..end).step_by(SECTOR_SIZE) {
                    let e = (s + SECTOR_SIZE).min(end);
                    if rng.coin() {
                        out[s..e].copy_from_slice(&vol[s..e]);
                    }
                }
            }
        }
    }
    let len = if dlen == vlen || rng.coin() {
        dlen
    } else {
        vlen
    };
    out.truncate(len);
    f.durable = out;
}

impl SimStorage {
    /// An empty disk whose crash outcomes are drawn from a PRNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimStorage {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    files: BTreeMap::new(),
                    next_id: 1,
                    volatile_ns: BTreeMap::new(),
                    durable_ns: BTreeMap::new(),
                    dirs: BTreeSet::new(),
                    locks: BTreeMap::new(),
                    next_lock_token: 1,
                    epoch: 0,
                    boots: 0,
                    live_maps: 0,
                    rng: Rng(seed),
                    fault: None,
                    pause: None,
                    fallocate_unsupported: false,
                    disk_full: false,
                    op_count: 0,
                    sync_points: 0,
                }),
                paused: Condvar::new(),
            }),
        }
    }

    /// The machine dies and reboots: the disk becomes what `mode` leaves of it (see the module
    /// docs), volatile state equals durable state, files no durable entry names disappear,
    /// every directory lock is released, the armed fault and pause are cleared, and all file
    /// handles from before the crash answer `ESTALE`. The PRNG state carries on from earlier
    /// crashes.
    ///
    /// # Panics
    ///
    /// If a map is still alive: drop every `MappedRegion` (the engine's log) first.
    pub fn crash(&self, mode: CrashMode) {
        self.shared.state.lock().crash(mode);
    }

    /// [`SimStorage::crash`] with the PRNG reseeded to `seed` first, so a test can sweep seeds
    /// over one workload.
    pub fn crash_with_seed(&self, mode: CrashMode, seed: u64) {
        let mut s = self.shared.state.lock();
        s.rng = Rng(seed);
        s.crash(mode);
    }

    /// Arms a fault: the next `ops` mutating operations succeed and the one after fails with
    /// `kind`. Unless `sticky`, the fault then disarms; if `sticky`, every later mutating
    /// operation fails the same way until [`SimStorage::clear_fault`] or a crash. Mutating
    /// operations are `write_at`, `set_len`, `allocate`, `sync_data`, a map flush, `rename`,
    /// `remove`, `sync_dir` and `open` with a create mode. Replaces any fault already armed.
    pub fn fail_after(&self, ops: u64, kind: FaultKind, sticky: bool) {
        self.shared.state.lock().fault = Some(Fault {
            remaining: ops,
            kind,
            sticky,
        });
    }

    /// Arms a pause: the next `ops` mutating operations run and the one after blocks the thread
    /// that calls it until [`SimStorage::resume`] (counted like [`SimStorage::fail_after`]; a
    /// fault armed for the same operation fires after the pause). Until then every other
    /// mutating operation waits too. For tests that must force an interleaving of the engine's
    /// threads: wait with [`SimStorage::wait_until_paused`], act, then resume.
    pub fn pause_after(&self, ops: u64) {
        self.shared.state.lock().pause = Some(Pause {
            remaining: ops,
            holding: false,
            released: false,
        });
    }

    /// Blocks until an operation is held by the pause [`SimStorage::pause_after`] armed.
    ///
    /// # Panics
    ///
    /// If no pause is armed.
    pub fn wait_until_paused(&self) {
        let mut s = self.shared.state.lock();
        loop {
            let p = s.pause.expect("wait_until_paused without pause_after");
            if p.holding {
                return;
            }
            self.shared.paused.wait(&mut s);
        }
    }

    /// Lets the held operation (and everything waiting behind it) go on, or disarms a pause that
    /// has not held anything yet.
    pub fn resume(&self) {
        let mut s = self.shared.state.lock();
        match s.pause.as_mut() {
            Some(p) if p.holding => p.released = true,
            _ => s.pause = None,
        }
        self.shared.paused.notify_all();
    }

    /// Disarms any armed fault.
    pub fn clear_fault(&self) {
        self.shared.state.lock().fault = None;
    }

    /// Fills (or frees) the disk: while full, every operation that needs new data blocks fails
    /// with ENOSPC and no effect (`write_at` past the end of the file, `allocate` growing it);
    /// operations that need none still work, as on a real file system out of data blocks:
    /// creating an empty file, writing inside a file's existing length (a preallocated segment,
    /// its mapping), rename, remove (which frees space), syncs. Independent of `fail_after`.
    pub fn set_disk_full(&self, full: bool) {
        self.shared.state.lock().disk_full = full;
    }

    /// Makes `allocate` behave like a file system without `fallocate`: it writes zeros, syncs
    /// the file (as [`super::fs::RealStorage`] does) and answers [`Allocation::ZeroFilled`].
    pub fn set_fallocate_unsupported(&self, unsupported: bool) {
        self.shared.state.lock().fallocate_unsupported = unsupported;
    }

    /// Mutating operations attempted so far (failed ones included, calls on stale handles not),
    /// so crash tests can enumerate "fail at operation k" with [`SimStorage::fail_after`].
    pub fn op_count(&self) -> u64 {
        self.shared.state.lock().op_count
    }

    /// Successful `sync_data`, map flush and `sync_dir` calls so far.
    pub fn sync_points(&self) -> u64 {
        self.shared.state.lock().sync_points
    }

    /// Maps currently alive.
    pub fn live_maps(&self) -> usize {
        self.shared.state.lock().live_maps
    }

    /// The durable bytes of the file `path` names durably (what a crash could keep).
    pub fn read_durable(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.shared.state.lock();
        let id = s.durable_ns.get(path)?;
        s.files.get(id).map(|f| f.durable.clone())
    }

    /// The volatile bytes (what a running process reads) of the file `path` names.
    pub fn read_volatile(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.shared.state.lock();
        let id = s.volatile_ns.get(path)?;
        s.files.get(id).map(|f| f.volatile.clone())
    }

    /// Overwrites `bytes` at `pos` in both the volatile and the durable bytes of the file(s)
    /// `path` names: a latent corruption on disk. Never extends a copy: bytes past a copy's
    /// length are dropped for that copy. `InvalidInput` if the range lies past both lengths.
    pub fn corrupt(&self, path: &Path, pos: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        let ids = s.ids_of(path);
        if ids.is_empty() {
            return Err(not_found("file", path));
        }
        let pos = usize::try_from(pos).unwrap_or(usize::MAX);
        let mut touched = false;
        for id in ids {
            if let Some(f) = s.files.get_mut(&id) {
                touched |= pos < f.volatile.len() || pos < f.durable.len();
                copy_clamped(&mut f.volatile, pos, bytes);
                copy_clamped(&mut f.durable, pos, bytes);
            }
        }
        if touched || bytes.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "corruption past the end of the file",
            ))
        }
    }

    /// Sets both the volatile and the durable length of the file(s) `path` names to `len`
    /// (zero-extending): a file damaged or truncated behind the engine's back.
    pub fn truncate_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let len = file_offset(len, 0)?;
        let mut s = self.shared.state.lock();
        let ids = s.ids_of(path);
        if ids.is_empty() {
            return Err(not_found("file", path));
        }
        for id in ids {
            if let Some(f) = s.files.get_mut(&id) {
                f.volatile.resize(len, 0);
                f.durable.resize(len, 0);
            }
        }
        Ok(())
    }

    /// Removes `path` from both namespaces at once (a file deleted behind the engine's back).
    pub fn remove_file_now(&self, path: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        let v = s.volatile_ns.remove(path);
        let d = s.durable_ns.remove(path);
        s.collect_garbage();
        if v.is_none() && d.is_none() {
            return Err(not_found("file", path));
        }
        Ok(())
    }

    /// Sorted names of the files directly inside `dir` in the volatile namespace.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        names_in(&self.shared.state.lock().volatile_ns, dir)
    }

    /// Sorted names of the files directly inside `dir` in the durable namespace.
    pub fn durable_file_names(&self, dir: &Path) -> Vec<String> {
        names_in(&self.shared.state.lock().durable_ns, dir)
    }
}

fn names_in(ns: &BTreeMap<PathBuf, u64>, dir: &Path) -> Vec<String> {
    let dir = norm_dir(dir);
    ns.keys()
        .filter(|p| parent_dir(p) == dir)
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect()
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        for d in dir.ancestors() {
            if !d.as_os_str().is_empty() {
                if s.volatile_ns.contains_key(d) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", d.display()),
                    ));
                }
                s.dirs.insert(d.to_path_buf());
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.shared.state.lock();
        if !s.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        Ok(names_in(&s.volatile_ns, dir))
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.shared.state.lock();
        if !s.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        let dir = norm_dir(dir);
        Ok(s.dirs
            .iter()
            .filter(|p| parent_dir(p) == dir)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.shared.state.lock();
        if !matches!(mode, OpenMode::Existing | OpenMode::Read) {
            self.shared.gate(&mut s);
            s.begin_plain_op()?;
        }
        s.require_parent(path)?;
        if s.dirs.contains(path) {
            return Err(os_err(libc::EISDIR));
        }
        let existing = s.volatile_ns.get(path).copied();
        let id = match (mode, existing) {
            (OpenMode::Existing | OpenMode::Read, None) => return Err(not_found("file", path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (OpenMode::CreateTruncate, Some(id)) => {
                if let Some(f) = s.files.get_mut(&id) {
                    f.volatile.clear();
                }
                id
            }
            (OpenMode::Existing | OpenMode::Read, Some(id)) => id,
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                let id = s.new_file();
                s.volatile_ns.insert(path.to_path_buf(), id);
                id
            }
        };
        let f = s.files.get_mut(&id).ok_or_else(stale)?;
        f.refs += 1;
        Ok(Box::new(SimFile {
            shared: Arc::clone(&self.shared),
            id,
            epoch: s.epoch,
            path: path.to_path_buf(),
            read_only: mode == OpenMode::Read,
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.shared.state.lock();
        s.volatile_ns.contains_key(path) || s.dir_exists(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        if s.volatile_ns.remove(path).is_none() {
            return Err(not_found("file", path));
        }
        s.collect_garbage();
        Ok(())
    }

    /// Directories are durable at once in the simulation (see `create_dir_all`), and so is
    /// their removal: a directory that still names a file or a subdirectory is refused
    /// (ENOTEMPTY); the durable names of files removed from it but not yet synced go with it.
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let dir = norm_dir(dir);
        if !s.dirs.contains(&dir) {
            return Err(not_found("directory", &dir));
        }
        let has_file = s.volatile_ns.keys().any(|p| parent_dir(p) == dir);
        if has_file || s.dirs.iter().any(|d| parent_dir(d) == dir) {
            return Err(os_err(libc::ENOTEMPTY));
        }
        s.dirs.remove(&dir);
        s.durable_ns.retain(|p, _| parent_dir(p) != dir);
        s.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let Some(&id) = s.volatile_ns.get(from) else {
            return Err(not_found("file", from));
        };
        s.require_parent(to)?;
        if s.dirs.contains(to) {
            return Err(os_err(libc::EISDIR));
        }
        s.volatile_ns.remove(from);
        s.volatile_ns.insert(to.to_path_buf(), id);
        s.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        if !s.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        let dir = norm_dir(dir);
        let state = &mut *s;
        state.durable_ns.retain(|p, _| parent_dir(p) != dir);
        for (p, &id) in &state.volatile_ns {
            if parent_dir(p) == dir {
                state.durable_ns.insert(p.clone(), id);
            }
        }
        state.collect_garbage();
        state.sync_points += 1;
        Ok(())
    }

    fn boot_id(&self) -> Option<u64> {
        Some(self.shared.state.lock().boots)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.shared.state.lock();
        if !s.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        let dir = norm_dir(dir);
        if s.locks.contains_key(&dir) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "directory is locked",
            ));
        }
        let lock_path = dir.join(LOCK_FILE);
        if !s.volatile_ns.contains_key(&lock_path) {
            let id = s.new_file();
            s.volatile_ns.insert(lock_path, id);
        }
        let token = s.next_lock_token;
        s.next_lock_token += 1;
        s.locks.insert(dir.clone(), token);
        Ok(Box::new(SimLock {
            shared: Arc::clone(&self.shared),
            dir,
            token,
        }))
    }
}

/// A held directory lock; a crash releases it, and dropping a guard from before a crash leaves
/// any newer lock alone.
struct SimLock {
    shared: Arc<Shared>,
    dir: PathBuf,
    token: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("dir", &self.dir)
            .field("token", &self.token)
            .finish()
    }
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock();
        if s.locks.get(&self.dir) == Some(&self.token) {
            s.locks.remove(&self.dir);
        }
    }
}

/// An open file: a handle on an inode, valid until the next crash.
struct SimFile {
    shared: Arc<Shared>,
    id: u64,
    epoch: u64,
    path: PathBuf,
    /// Opened with `OpenMode::Read`: every write, resize and read-write map fails with
    /// `EBADF`/`EACCES`, as on an `O_RDONLY` descriptor.
    read_only: bool,
}

impl SimFile {
    /// `EBADF` for a write through a handle opened for reading only.
    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(os_err(libc::EBADF));
        }
        Ok(())
    }

    /// A copy of `[0, len)` of the volatile bytes in a heap buffer owned by the returned
    /// backing (see [`SimMap`]), and the buffer's pointer.
    fn map_buffer(&self, len: usize, read_only: bool) -> io::Result<(*mut [u8], SimMap)> {
        let mut s = self.shared.state.lock();
        let epoch = s.epoch;
        let f = s.file_mut(self.epoch, self.id)?;
        let Some(init) = f.volatile.get(..len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping past end of file",
            ));
        };
        let raw = Box::into_raw(init.to_vec().into_boxed_slice());
        f.refs += 1;
        s.live_maps += 1;
        let backing = SimMap {
            shared: Arc::clone(&self.shared),
            id: self.id,
            epoch,
            buf: raw,
            read_only,
        };
        Ok((raw, backing))
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.shared.state.lock().release_ref(self.epoch, self.id);
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut s = self.shared.state.lock();
        Ok(s.file_mut(self.epoch, self.id)?.volatile.len() as u64)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        let f = s.file_mut(self.epoch, self.id)?;
        let range = usize::try_from(pos)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?));
        match range.and_then(|r| f.volatile.get(r)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            )),
        }
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.writable()?;
        let mut s = self.shared.state.lock();
        s.file_mut(self.epoch, self.id)?;
        self.shared.gate(&mut s);
        let (data, result) = match s.begin_op() {
            None => (data, Ok(())),
            Some(FaultKind::Eio) => return Err(os_err(libc::EIO)),
            Some(FaultKind::Enospc) => return Err(os_err(libc::ENOSPC)),
            Some(FaultKind::ShortWrite) => (
                &data[..data.len() / 2],
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "simulated short write",
                )),
            ),
        };
        let end = file_offset(pos, data.len())?;
        let start = end - data.len();
        let full = s.disk_full;
        let f = s.file_mut(self.epoch, self.id)?;
        if full && f.volatile.len() < end {
            return Err(os_err(libc::ENOSPC));
        }
        if f.volatile.len() < end {
            f.volatile.resize(end, 0);
        }
        f.volatile[start..end].copy_from_slice(data);
        result
    }

    fn allocate(&self, len: u64) -> io::Result<Allocation> {
        self.writable()?;
        let mut s = self.shared.state.lock();
        s.file_mut(self.epoch, self.id)?;
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let len = file_offset(len, 0)?;
        let unsupported = s.fallocate_unsupported;
        let full = s.disk_full;
        let f = s.file_mut(self.epoch, self.id)?;
        let grow = f.volatile.len() < len;
        if full && grow {
            return Err(os_err(libc::ENOSPC));
        }
        if grow {
            f.volatile.resize(len, 0);
        }
        if !unsupported {
            return Ok(Allocation::Fallocated);
        }
        // RealStorage writes zeros and fdatasyncs when fallocate is refused.
        if grow {
            f.durable.clone_from(&f.volatile);
        }
        Ok(Allocation::ZeroFilled)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        let mut s = self.shared.state.lock();
        s.file_mut(self.epoch, self.id)?;
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let len = file_offset(len, 0)?;
        s.file_mut(self.epoch, self.id)?.volatile.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        s.file_mut(self.epoch, self.id)?;
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let f = s.file_mut(self.epoch, self.id)?;
        f.durable.clone_from(&f.volatile);
        s.sync_points += 1;
        Ok(())
    }

    fn map(&self, len: usize) -> io::Result<MappedRegion> {
        if self.read_only {
            // mmap(PROT_WRITE, MAP_SHARED) of an O_RDONLY descriptor.
            return Err(os_err(libc::EACCES));
        }
        if len == 0 {
            return Ok(MappedRegion::empty());
        }
        let (raw, backing) = self.map_buffer(len, false)?;
        // SAFETY: `raw` comes from Box::into_raw of a `len`-byte slice, so it is valid for reads
        // and writes of `len` bytes until `SimMap::drop` frees it, which happens only when the
        // region drops its backing; SimMap itself reads the buffer only in `flush` (ranges the
        // caller guarantees no one is writing) and in `drop` (when the region is gone).
        Ok(unsafe { MappedRegion::new(raw.cast::<u8>(), len, Box::new(backing)) })
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedRegion> {
        if len == 0 {
            return Ok(MappedRegion::empty());
        }
        let (raw, backing) = self.map_buffer(len, true)?;
        // SAFETY: `raw` comes from Box::into_raw of a `len`-byte slice, valid for reads of `len`
        // bytes until `SimMap::drop` frees it (only when the region drops its backing). Nothing
        // writes it: the region is read-only (no writer, no flush), and a read-only SimMap
        // neither flushes nor copies the buffer back at drop.
        Ok(unsafe { MappedRegion::new_read_only(raw.cast::<u8>(), len, Box::new(backing)) })
    }
}

/// The memory behind a simulated mapping: a heap buffer owned through a raw pointer, because
/// the `MappedRegion` writes into it while this backing is alive.
struct SimMap {
    shared: Arc<Shared>,
    id: u64,
    epoch: u64,
    /// From `Box::into_raw`; freed exactly once, in `Drop`.
    buf: *mut [u8],
    /// A read-only map (`map_read_only`): never flushed, and not copied back at munmap.
    read_only: bool,
}

// SAFETY: the buffer is plain heap memory; SimMap only reads it in `flush` (published, hence
// immutable, ranges per the AppendMap protocol) and frees it in `drop`, so sharing or moving
// the backing across threads adds no data race. The rest of SimMap is Send + Sync.
unsafe impl Send for SimMap {}
// SAFETY: as above: `&SimMap` only allows `flush`, which reads ranges nobody writes.
unsafe impl Sync for SimMap {}

impl fmt::Debug for SimMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMap")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("len", &self.buf.len())
            .finish()
    }
}

impl MapBacking for SimMap {
    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        if self.read_only {
            // PROT_READ pages are never dirty: msync has nothing to write back.
            return Ok(());
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.buf.len())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "flush past the end of the map",
            ));
        }
        let mut s = self.shared.state.lock();
        s.file_mut(self.epoch, self.id)?;
        self.shared.gate(&mut s);
        s.begin_plain_op()?;
        let start = self.buf.cast::<u8>().wrapping_add(offset);
        // SAFETY: [offset, offset + len) lies inside the live buffer (checked above; the buffer
        // is freed only in drop), and the caller (AppendMap::flush) only flushes published
        // bytes, which no one writes while the map lives, so a shared slice does not alias a
        // mutable one.
        let src = unsafe { std::slice::from_raw_parts(start, len) };
        let f = s.file_mut(self.epoch, self.id)?;
        copy_clamped(&mut f.volatile, offset, src);
        // msync writes back the pages (and, like fdatasync, the size they need), but never
        // past the file's current end.
        let end = (offset + len).min(f.volatile.len());
        if offset < end {
            if f.durable.len() < end {
                f.durable.resize(end, 0);
            }
            f.durable[offset..end].copy_from_slice(&f.volatile[offset..end]);
        }
        s.sync_points += 1;
        Ok(())
    }
}

impl Drop for SimMap {
    fn drop(&mut self) {
        // SAFETY: `buf` came from Box::into_raw in `SimFile::map_buffer` and is freed only here; the
        // region that wrote through it has dropped its pointer (it drops the backing last).
        let buf = unsafe { Box::from_raw(self.buf) };
        let mut s = self.shared.state.lock();
        if self.epoch != s.epoch {
            return;
        }
        s.live_maps -= 1;
        if let (false, Ok(f)) = (self.read_only, s.file_mut(self.epoch, self.id)) {
            // munmap: dirty pages stay in the page cache, not durable.
            copy_clamped(&mut f.volatile, 0, &buf);
        }
        s.release_ref(self.epoch, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{create_durable, write_atomic, AppendMap};

    const SEEDS: u64 = 200;

    fn dir() -> PathBuf {
        PathBuf::from("/log")
    }

    fn path(name: &str) -> PathBuf {
        dir().join(name)
    }

    fn fresh(seed: u64) -> SimStorage {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(&dir()).unwrap();
        sim
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from(i % 251).unwrap().wrapping_add(salt))
            .collect()
    }

    fn raw_os(e: &io::Error) -> Option<i32> {
        e.raw_os_error()
    }

    /// A durable, empty file `name` with `data` written at 0 and synced.
    fn synced_file(sim: &SimStorage, name: &str, data: &[u8]) -> Box<dyn StorageFile> {
        let f = create_durable(sim, &path(name)).unwrap();
        f.write_at(0, data).unwrap();
        f.sync_data().unwrap();
        f
    }

    /// Writes `data` through a fresh map of `f` at `at`, publishing and flushing up to `flush`.
    fn map_write(f: &dyn StorageFile, cap: usize, at: usize, data: &[u8], flush: Option<usize>) {
        let map = AppendMap::new(f.map(cap).unwrap(), at);
        let mut w = map.writer().unwrap();
        w.reserve(data.len()).unwrap().copy_from_slice(data);
        w.advance(data.len());
        w.publish();
        if let Some(end) = flush {
            map.flush(0, end).unwrap();
        }
    }

    #[test]
    fn unsynced_write_survives_process_crash_and_may_be_lost_on_power_loss() {
        let data = pattern(4096, 1);
        let workload = |seed: u64| {
            let sim = fresh(seed);
            let f = synced_file(&sim, "a", &[]);
            f.write_at(0, &data).unwrap();
            drop(f);
            sim
        };

        let sim = workload(0);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"");
        sim.crash(CrashMode::Process);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), data);

        let mut lost_seed = None;
        let mut kept = false;
        for seed in 0..SEEDS {
            let sim = workload(seed);
            sim.crash(CrashMode::PowerLoss);
            let after = sim.read_durable(&path("a")).expect("synced entry survives");
            if after.is_empty() {
                lost_seed.get_or_insert(seed);
            }
            kept |= after == data;
            assert!(
                after.is_empty() || after.len() == data.len(),
                "length is old or new"
            );
        }
        let lost_seed = lost_seed.expect("some seed drops the unsynced page");
        assert!(kept, "some seed keeps the unsynced page");

        // The outcome is a function of the seed.
        let sim = workload(lost_seed);
        sim.crash(CrashMode::PowerLoss);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"");
        let f = sim.open(&path("a"), OpenMode::Existing).unwrap();
        assert_eq!(f.len().unwrap(), 0);
    }

    #[test]
    fn synced_data_always_survives_power_loss() {
        let synced = pattern(10_000, 7);
        for seed in 0..SEEDS {
            let sim = fresh(seed);
            let f = synced_file(&sim, "a", &synced);
            f.write_at(10_000, &pattern(9_000, 3)).unwrap();
            drop(f);
            // An unsynced second file and an unsynced removal of nothing durable.
            sim.open(&path("b"), OpenMode::CreateNew).unwrap();
            sim.crash(CrashMode::PowerLoss);
            let f = sim.open(&path("a"), OpenMode::Existing).unwrap();
            let after = f.read_all().unwrap();
            assert!(
                after.len() == 10_000 || after.len() == 19_000,
                "seed {seed}"
            );
            assert_eq!(after[..10_000], synced[..], "seed {seed}");
            assert_eq!(sim.read_volatile(&path("a")).unwrap(), after);
        }
    }

    #[test]
    fn crash_outcome_is_deterministic_per_seed() {
        let image = |seed: u64| {
            let sim = fresh(seed);
            let f = synced_file(&sim, "a", &pattern(20_000, 0));
            f.write_at(3_000, &pattern(30_000, 9)).unwrap();
            sim.open(&path("b"), OpenMode::CreateNew).unwrap();
            drop(f);
            sim.crash(CrashMode::PowerLoss);
            (sim.read_durable(&path("a")), sim.file_names(&dir()))
        };
        for seed in 0..20 {
            assert_eq!(image(seed), image(seed));
        }
        assert!((0..20).any(|seed| image(seed) != image(0)));
    }

    #[test]
    fn torn_pages_mix_only_whole_sectors() {
        let pages = 4;
        let mut torn_seen = false;
        for seed in 0..SEEDS {
            let sim = fresh(seed);
            let f = synced_file(&sim, "a", &vec![0xAA; pages * PAGE_SIZE]);
            f.write_at(0, &vec![0xBB; pages * PAGE_SIZE]).unwrap();
            drop(f);
            sim.crash(CrashMode::PowerLoss);
            let after = sim.read_durable(&path("a")).unwrap();
            assert_eq!(after.len(), pages * PAGE_SIZE);
            for page in after.chunks(PAGE_SIZE) {
                for sector in page.chunks(SECTOR_SIZE) {
                    assert!(
                        sector.iter().all(|&b| b == sector[0]),
                        "seed {seed}: a sector mixes bytes"
                    );
                    assert!(sector[0] == 0xAA || sector[0] == 0xBB);
                }
                torn_seen |= page.contains(&0xAA) && page.contains(&0xBB);
            }
        }
        assert!(torn_seen, "some seed tears a page");
    }

    #[test]
    fn lost_truncate_may_restore_old_bytes_and_sync_makes_it_stick() {
        let old = pattern(3 * PAGE_SIZE, 5);
        let mut lens = BTreeSet::new();
        for seed in 0..SEEDS {
            let sim = fresh(seed);
            let f = synced_file(&sim, "a", &old);
            f.set_len(100).unwrap();
            drop(f);
            sim.crash(CrashMode::PowerLoss);
            let after = sim.read_durable(&path("a")).unwrap();
            assert_eq!(after[..], old[..after.len()], "seed {seed}: only old bytes");
            lens.insert(after.len());
        }
        assert_eq!(lens, BTreeSet::from([100, 3 * PAGE_SIZE]));

        let sim = fresh(0);
        let f = synced_file(&sim, "a", &old);
        f.set_len(100).unwrap();
        f.sync_data().unwrap();
        drop(f);
        sim.crash(CrashMode::PowerLoss);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), old[..100]);
    }

    #[test]
    fn map_flush_is_durable_and_unflushed_map_writes_survive_only_process_crash() {
        let cap = 2 * PAGE_SIZE;
        let flushed = pattern(100, 1);
        let unflushed = pattern(200, 2);
        let workload = |seed: u64| {
            let sim = fresh(seed);
            let f = synced_file(&sim, "seg", &[]);
            assert_eq!(f.allocate(cap as u64).unwrap(), Allocation::Fallocated);
            f.sync_data().unwrap();
            map_write(&*f, cap, 0, &flushed, Some(100));
            assert_eq!(sim.live_maps(), 0);
            assert_eq!(sim.read_durable(&path("seg")).unwrap()[..100], flushed[..]);
            // Unflushed: visible to the running process after munmap, not durable.
            map_write(&*f, cap, PAGE_SIZE, &unflushed, None);
            let end = PAGE_SIZE + unflushed.len();
            assert_eq!(
                sim.read_volatile(&path("seg")).unwrap()[PAGE_SIZE..end],
                unflushed[..]
            );
            assert!(sim.read_durable(&path("seg")).unwrap()[PAGE_SIZE..end]
                .iter()
                .all(|&b| b == 0));
            sim
        };
        let end = PAGE_SIZE + unflushed.len();

        let sim = workload(0);
        sim.crash(CrashMode::Process);
        let after = sim.read_durable(&path("seg")).unwrap();
        assert_eq!(after[..100], flushed[..]);
        assert_eq!(after[PAGE_SIZE..end], unflushed[..]);

        let (mut kept, mut lost) = (false, false);
        for seed in 0..SEEDS {
            let sim = workload(seed);
            sim.crash(CrashMode::PowerLoss);
            let after = sim.read_durable(&path("seg")).unwrap();
            assert_eq!(after.len(), cap);
            assert_eq!(after[..100], flushed[..], "seed {seed}: flushed bytes lost");
            kept |= after[PAGE_SIZE..end] == unflushed[..];
            lost |= after[PAGE_SIZE..end].iter().all(|&b| b == 0);
        }
        assert!(kept && lost, "kept {kept} lost {lost}");
    }

    #[test]
    fn map_flush_and_unmap_never_grow_a_trimmed_file() {
        let sim = fresh(0);
        let f = synced_file(&sim, "seg", &[]);
        f.allocate(8192).unwrap();
        let map = AppendMap::new(f.map(8192).unwrap(), 0);
        let mut w = map.writer().unwrap();
        w.reserve(8192).unwrap().fill(0x11);
        w.advance(8192);
        w.publish();
        f.set_len(5000).unwrap();
        map.flush(0, 8192).unwrap();
        assert_eq!(sim.read_durable(&path("seg")).unwrap(), vec![0x11; 5000]);
        f.set_len(3000).unwrap();
        map.flush(4000, 4100).unwrap();
        assert_eq!(sim.read_durable(&path("seg")).unwrap().len(), 5000);
        drop(w);
        drop(map);
        assert_eq!(sim.read_volatile(&path("seg")).unwrap(), vec![0x11; 3000]);
        assert_eq!(sim.live_maps(), 0);
        assert!(f.map(3001).is_err(), "mapping past the end");
        assert!(f.map(0).unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "live maps")]
    fn crash_with_a_live_map_is_refused() {
        let sim = fresh(0);
        let f = synced_file(&sim, "seg", &[0; 64]);
        let _region = f.map(64).unwrap();
        sim.crash(CrashMode::Process);
    }

    #[test]
    fn unsynced_create_and_rename_may_vanish_until_sync_dir() {
        let (mut present, mut absent) = (false, false);
        let (mut renamed, mut not_renamed) = (false, false);
        for seed in 0..SEEDS {
            let sim = fresh(seed);
            synced_file(&sim, "old", b"o");
            let f = sim.open(&path("new"), OpenMode::CreateNew).unwrap();
            f.write_at(0, b"x").unwrap();
            f.sync_data().unwrap();
            drop(f);
            sim.rename(&path("old"), &path("moved")).unwrap();
            sim.crash(CrashMode::PowerLoss);
            let names = sim.file_names(&dir());
            if names.contains(&"new".to_owned()) {
                present = true;
                assert_eq!(sim.read_durable(&path("new")).unwrap(), b"x");
            } else {
                absent = true;
            }
            if names.contains(&"moved".to_owned()) {
                renamed = true;
                assert_eq!(sim.read_durable(&path("moved")).unwrap(), b"o");
            } else {
                not_renamed = true;
            }
            assert_eq!(sim.list(&dir()).unwrap().len(), names.len());
        }
        assert!(present && absent && renamed && not_renamed);

        for seed in 0..SEEDS {
            let sim = fresh(seed);
            let f = sim.open(&path("new"), OpenMode::CreateNew).unwrap();
            f.write_at(0, b"x").unwrap();
            f.sync_data().unwrap();
            drop(f);
            synced_file(&sim, "old", b"o");
            synced_file(&sim, "gone", b"g");
            sim.rename(&path("old"), &path("moved")).unwrap();
            sim.remove(&path("gone")).unwrap();
            sim.sync_dir(&dir()).unwrap();
            sim.crash(CrashMode::PowerLoss);
            assert_eq!(sim.file_names(&dir()), ["moved", "new"], "seed {seed}");
            assert_eq!(sim.read_durable(&path("moved")).unwrap(), b"o");
        }
    }

    #[test]
    fn write_atomic_crash_at_every_operation_leaves_old_or_new() {
        let target = path("meta");
        let old = pattern(6_000, 1);
        let new = pattern(9_000, 2);
        let prepare = |seed: u64| {
            let sim = fresh(seed);
            write_atomic(&sim, &target, &old).unwrap();
            sim
        };
        let ops = {
            let sim = prepare(0);
            let before = sim.op_count();
            write_atomic(&sim, &target, &new).unwrap();
            sim.op_count() - before
        };
        assert_eq!(ops, 5, "open-create, write, sync, rename, sync_dir");
        for k in 0..=ops {
            for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::ShortWrite] {
                let mut seen = BTreeSet::new();
                for seed in 0..40 {
                    for mode in [CrashMode::Process, CrashMode::PowerLoss] {
                        let sim = prepare(seed);
                        sim.fail_after(k, kind, false);
                        let res = write_atomic(&sim, &target, &new);
                        assert_eq!(res.is_ok(), k == ops, "k {k}");
                        sim.crash(mode);
                        let f = sim.open(&target, OpenMode::Existing).unwrap();
                        let after = f.read_all().unwrap();
                        assert!(after == old || after == new, "k {k} seed {seed}: a mix");
                        if res.is_ok() {
                            assert_eq!(after, new, "k {k}: acknowledged write lost");
                        }
                        seen.insert(after == new);
                    }
                }
                // Once the rename happened, both outcomes are reachable.
                if k == ops - 1 {
                    assert_eq!(seen.len(), 2, "k {k}");
                }
            }
        }
    }

    /// A failure at any step before the rename removes the temporary (`AtomicReplace`), with
    /// any fault kind and also on a full disk (creating the file works, writing it does not).
    #[test]
    fn write_atomic_failure_leaves_no_temporary() {
        let target = path("meta");
        let old = pattern(6_000, 1);
        let new = pattern(9_000, 2);
        let temps = |sim: &SimStorage| -> Vec<String> {
            sim.file_names(&dir())
                .into_iter()
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        };
        for k in 0..4 {
            for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::ShortWrite] {
                let sim = fresh(k);
                write_atomic(&sim, &target, &old).unwrap();
                sim.fail_after(k, kind, false);
                assert!(write_atomic(&sim, &target, &new).is_err(), "k {k} {kind:?}");
                assert_eq!(temps(&sim), Vec::<String>::new(), "k {k} {kind:?}");
                let f = sim.open(&target, OpenMode::Existing).unwrap();
                assert_eq!(f.read_all().unwrap(), old, "k {k} {kind:?}");
            }
        }
        let sim = fresh(0);
        write_atomic(&sim, &target, &old).unwrap();
        sim.set_disk_full(true);
        let e = write_atomic(&sim, &target, &new).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(temps(&sim), Vec::<String>::new(), "disk full");
    }

    #[test]
    fn dir_lock_is_exclusive_and_released_by_drop_and_crash() {
        let sim = fresh(0);
        let guard = sim.lock_dir(&dir()).unwrap();
        let err = sim.lock_dir(&dir()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(sim.file_names(&dir()).contains(&LOCK_FILE.to_owned()));
        let other = fresh(0);
        other.lock_dir(&dir()).unwrap();
        drop(guard);
        let guard = sim.lock_dir(&dir()).unwrap();

        sim.crash(CrashMode::PowerLoss);
        let after = sim.lock_dir(&dir()).unwrap();
        drop(guard); // from before the crash: must not release the new holder
        assert_eq!(
            sim.lock_dir(&dir()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(after);
        sim.lock_dir(&dir()).unwrap();
        assert_eq!(
            sim.lock_dir(Path::new("/nope")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn fail_after_eio_fails_one_operation_without_effect() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"");
        let ops = sim.op_count();
        sim.fail_after(1, FaultKind::Eio, false);
        f.write_at(0, b"one").unwrap();
        let err = f.write_at(3, b"two").unwrap_err();
        assert_eq!(raw_os(&err), Some(libc::EIO));
        f.write_at(3, b"333").unwrap();
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"one333");
        assert_eq!(sim.op_count(), ops + 3);

        // fsyncgate: a failed sync leaves the bytes dirty, not durable.
        let syncs = sim.sync_points();
        sim.fail_after(0, FaultKind::Eio, false);
        assert_eq!(raw_os(&f.sync_data().unwrap_err()), Some(libc::EIO));
        assert_eq!(sim.sync_points(), syncs);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"");
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"one333");
        f.sync_data().unwrap();
        assert_eq!(sim.sync_points(), syncs + 1);
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"one333");

        // A failed map flush is not durable either.
        f.allocate(4096).unwrap();
        let map = AppendMap::new(f.map(4096).unwrap(), 6);
        let mut w = map.writer().unwrap();
        w.reserve(2).unwrap().copy_from_slice(b"mm");
        w.advance(2);
        w.publish();
        sim.fail_after(0, FaultKind::Eio, false);
        assert_eq!(raw_os(&map.flush(0, 8).unwrap_err()), Some(libc::EIO));
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"one333");
        map.flush(0, 8).unwrap();
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"one333mm");

        // Namespace operations fail with no effect.
        sim.fail_after(0, FaultKind::Eio, false);
        assert!(sim.rename(&path("a"), &path("b")).is_err());
        sim.fail_after(0, FaultKind::Eio, false);
        assert!(sim.remove(&path("a")).is_err());
        sim.fail_after(0, FaultKind::Eio, false);
        assert!(sim.open(&path("c"), OpenMode::CreateNew).is_err());
        sim.fail_after(0, FaultKind::Eio, false);
        assert!(sim.sync_dir(&dir()).is_err());
        assert_eq!(sim.file_names(&dir()), ["a"]);
    }

    #[test]
    fn fail_after_sticky_enospc_fails_until_cleared() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"abc");
        sim.fail_after(0, FaultKind::Enospc, true);
        let results = [
            f.write_at(0, b"x").unwrap_err(),
            f.set_len(0).unwrap_err(),
            f.allocate(1 << 20).unwrap_err(),
            f.sync_data().unwrap_err(),
            sim.open(&path("b"), OpenMode::CreateTruncate).unwrap_err(),
            sim.sync_dir(&dir()).unwrap_err(),
        ];
        for e in &results {
            assert_eq!(raw_os(e), Some(libc::ENOSPC));
        }
        // Reads and non-mutating calls still work.
        let mut buf = [0u8; 3];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        assert_eq!(f.len().unwrap(), 3);
        assert!(sim.open(&path("a"), OpenMode::Existing).is_ok());
        sim.clear_fault();
        f.write_at(3, b"d").unwrap();
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"abcd");
    }

    #[test]
    fn fail_after_short_write_writes_half_then_fails() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"");
        sim.fail_after(0, FaultKind::ShortWrite, false);
        let err = f.write_at(2, b"0123456789").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"\x00\x0001234");
        sim.fail_after(0, FaultKind::ShortWrite, false);
        assert_eq!(raw_os(&f.sync_data().unwrap_err()), Some(libc::EIO));
        f.write_at(0, b"ok").unwrap();
    }

    #[test]
    fn allocate_fallocated_or_zero_filled() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"hi");
        assert_eq!(f.allocate(8192).unwrap(), Allocation::Fallocated);
        assert_eq!(f.len().unwrap(), 8192);
        assert_eq!(
            sim.read_durable(&path("a")).unwrap(),
            b"hi",
            "size not yet synced"
        );
        assert_eq!(f.allocate(100).unwrap(), Allocation::Fallocated);
        assert_eq!(f.len().unwrap(), 8192, "allocate never shrinks");

        let g = synced_file(&sim, "b", b"hi");
        sim.set_fallocate_unsupported(true);
        assert_eq!(g.allocate(8192).unwrap(), Allocation::ZeroFilled);
        let mut expect = b"hi".to_vec();
        expect.resize(8192, 0);
        assert_eq!(
            sim.read_durable(&path("b")).unwrap(),
            expect,
            "zeros synced"
        );
        assert_eq!(sim.read_volatile(&path("b")).unwrap(), expect);
        sim.set_fallocate_unsupported(false);
        assert_eq!(g.allocate(9000).unwrap(), Allocation::Fallocated);
    }

    #[test]
    fn handles_from_before_a_crash_are_stale() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"abc");
        sim.crash(CrashMode::Process);
        assert_eq!(raw_os(&f.len().unwrap_err()), Some(libc::ESTALE));
        assert_eq!(
            raw_os(&f.write_at(0, b"x").unwrap_err()),
            Some(libc::ESTALE)
        );
        assert!(f.map(1).is_err());
        drop(f);
        let g = sim.open(&path("a"), OpenMode::Existing).unwrap();
        assert_eq!(g.read_all().unwrap(), b"abc");
    }

    #[test]
    fn namespace_basics_mirror_the_real_file_system() {
        let sim = fresh(0);
        assert_eq!(
            sim.open(Path::new("/missing/a"), OpenMode::CreateNew)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.list(Path::new("/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.open(&path("a"), OpenMode::Existing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let f = sim.open(&path("a"), OpenMode::CreateNew).unwrap();
        f.write_at(0, b"hello").unwrap();
        assert_eq!(
            sim.open(&path("a"), OpenMode::CreateNew)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(sim.exists(&path("a")) && sim.exists(&dir()));
        sim.create_dir_all(&dir().join("sub")).unwrap();
        sim.open(&dir().join("sub/x"), OpenMode::CreateNew).unwrap();
        assert_eq!(sim.list(&dir()).unwrap(), ["a"], "direct children only");

        // CreateTruncate truncates the same inode; an unlinked file lives while open.
        let t = sim.open(&path("a"), OpenMode::CreateTruncate).unwrap();
        assert_eq!(f.len().unwrap(), 0);
        t.write_at(0, b"new").unwrap();
        sim.remove(&path("a")).unwrap();
        assert!(!sim.exists(&path("a")));
        let mut buf = [0u8; 3];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"new");
        assert_eq!(
            f.read_at(1, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            sim.remove(&path("a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn test_helpers_corrupt_truncate_and_remove_behind_the_engines_back() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", b"abcdef");
        f.write_at(6, b"gh").unwrap();
        sim.corrupt(&path("a"), 1, b"XYZ").unwrap();
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"aXYZef");
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"aXYZefgh");
        sim.corrupt(&path("a"), 7, b"QQ").unwrap();
        assert_eq!(
            sim.read_durable(&path("a")).unwrap(),
            b"aXYZef",
            "never extends"
        );
        assert_eq!(sim.read_volatile(&path("a")).unwrap(), b"aXYZefgQ");
        assert!(sim.corrupt(&path("a"), 8, b"Q").is_err());
        sim.truncate_file(&path("a"), 2).unwrap();
        assert_eq!(sim.read_durable(&path("a")).unwrap(), b"aX");
        assert_eq!(f.read_all().unwrap(), b"aX");
        sim.remove_file_now(&path("a")).unwrap();
        assert!(sim.read_durable(&path("a")).is_none());
        assert!(sim.durable_file_names(&dir()).is_empty());
        drop(f);
        assert!(sim.corrupt(&path("a"), 0, b"x").is_err());
        sim.crash(CrashMode::PowerLoss);
        assert!(sim.file_names(&dir()).is_empty());
    }

    #[test]
    fn unreferenced_files_are_forgotten() {
        let sim = fresh(0);
        let f = synced_file(&sim, "a", &[1; 1000]);
        drop(f);
        sim.remove(&path("a")).unwrap();
        assert_eq!(
            sim.shared.state.lock().files.len(),
            1,
            "durable entry keeps it"
        );
        sim.sync_dir(&dir()).unwrap();
        assert!(sim.shared.state.lock().files.is_empty());
    }

    #[test]
    fn sim_storage_is_send_sync_debug_and_usable_as_dyn_storage() {
        fn assert_traits<T: Send + Sync + fmt::Debug + Clone>() {}
        assert_traits::<SimStorage>();
        let sim = fresh(0);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        create_durable(&*storage, &path("a")).unwrap();
        assert_eq!(sim.durable_file_names(&dir()), ["a"]);
        assert!(format!("{sim:?}").contains("SimStorage"));
    }
}
