//! The real file system: std::fs plus `fallocate(2)`, `fdatasync(2)` and memmap2.
#![allow(
    unsafe_code,
    reason = "fallocate(2) and mmap(2) are foreign calls; each block says why"
)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use memmap2::{Advice, MmapOptions, MmapRaw};

use super::mmap::{MapBacking, MappedRegion};
use super::{Allocation, DirLock, OpenMode, Storage, StorageFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl RealStorage {
    /// The real file system of this machine.
    pub fn new() -> Self {
        RealStorage
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code, reason = "held for its lock")] File);
impl DirLock for RealLock {}

/// The name of the lock file inside a log directory.
pub const LOCK_FILE: &str = "LOCK";

impl Storage for RealStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    /// Linux's per-boot random UUID, folded to 64 bits.
    fn boot_id(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        let hi = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
        let lo = u64::from_str_radix(hex.get(16..32)?, 16).ok()?;
        Some(hi ^ lo.rotate_left(32))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        o.read(true).write(mode != OpenMode::Read);
        match mode {
            OpenMode::CreateNew => o.create_new(true),
            OpenMode::CreateTruncate => o.create(true).truncate(true),
            OpenMode::Existing | OpenMode::Read => &mut o,
        };
        Ok(Box::new(RealFile {
            file: o.open(path)?,
            path: path.to_path_buf(),
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path = dir.join(LOCK_FILE);
        // A holder may unlink the lock file before it lets go (a failed open removes the one it
        // created). Whoever opened the file before that unlink then locks an inode no later
        // open reaches, beside a holder of the new file: the lock counts only while the name
        // still leads to the locked inode, else the name is opened again.
        // A lock held by a child process between its fork and its exec lets go within
        // milliseconds: every child any thread of this process spawns meanwhile inherits the
        // descriptor (close-on-exec closes it only at the exec), so a log closed and reopened
        // while another thread spawns a process could find its own lock still held. A held
        // lock is tried again for a short while before it is reported.
        let mut held_waits = 0;
        let mut attempt = 0;
        while attempt < LOCK_ATTEMPTS {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            match f.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) if held_waits < LOCK_HELD_WAITS => {
                    drop(f);
                    held_waits += 1;
                    std::thread::sleep(LOCK_HELD_WAIT);
                    continue;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "directory is locked",
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            if still_named(&f, &path)? {
                return Ok(Box::new(RealLock(f)));
            }
            attempt += 1;
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the directory's lock file keeps being removed or replaced",
        ))
    }
}

/// How often `lock_dir` opens the lock file again when the file it locked lost its name.
const LOCK_ATTEMPTS: usize = 8;
/// How long `lock_dir` waits for a held lock before it reports it: 25 waits of 2 ms.
const LOCK_HELD_WAITS: usize = 25;
const LOCK_HELD_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether `path` still names the open file `f` (same device and inode).
fn still_named(f: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = f.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok((named.dev(), named.ino()) == (held.dev(), held.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct RealFile {
    file: File,
    path: PathBuf,
}

static ZERO_FILL_REPORTED: AtomicBool = AtomicBool::new(false);

impl RealFile {
    /// The fallback when fallocate is refused: write real zeros (never a sparse hole) and sync.
    fn zero_fill(&self, from: u64, len: u64) -> io::Result<()> {
        let chunk = vec![0u8; 1 << 20];
        let mut pos = from;
        while pos < len {
            let n = (len - pos).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], pos)?;
            pos += n as u64;
        }
        self.file.sync_data()
    }
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, pos)
    }

    fn allocate(&self, len: u64) -> io::Result<Allocation> {
        if len == 0 {
            // fallocate(2) rejects a zero length with EINVAL; there is nothing to reserve.
            return Ok(Allocation::Fallocated);
        }
        let Ok(flen) = libc::off_t::try_from(len) else {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by `self.file`
        // and stays open for the duration of the call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, flen) };
        if rc == 0 {
            return Ok(Allocation::Fallocated);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                crate::error::report_once(&ZERO_FILL_REPORTED, || {
                    format!(
                        "the file system of {} refuses fallocate ({err}); \
                         reserving segment space by writing zeros instead",
                        self.path.display()
                    )
                });
                let current = self.len()?;
                if current < len {
                    self.zero_fill(current, len)?;
                }
                Ok(Allocation::ZeroFilled)
            }
            _ => Err(err),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn map(&self, len: usize) -> io::Result<MappedRegion> {
        if !self.mappable(len)? {
            return Ok(MappedRegion::empty());
        }
        let raw = MmapOptions::new().len(len).map_raw(&self.file)?;
        let ptr = raw.as_mut_ptr();
        // SAFETY: `raw` is a shared read-write mapping of `len` bytes that stays mapped until the
        // backing (which owns `raw`) drops; the file is at least `len` bytes (checked above) and
        // only ever shrinks to a length at or above every published end (docs/safety.md).
        Ok(unsafe { MappedRegion::new(ptr, len, Box::new(RealMap(raw))) })
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedRegion> {
        if !self.mappable(len)? {
            return Ok(MappedRegion::empty());
        }
        let raw = MmapOptions::new().len(len).map_raw_read_only(&self.file)?;
        let ptr = raw.as_ptr();
        // SAFETY: `raw` is a shared PROT_READ mapping of `len` bytes that stays mapped until the
        // backing (which owns `raw`) drops; the file is at least `len` bytes (checked above).
        // The region is read-only: it hands out no writer and its backing never writes, so the
        // pointer is only ever read. Its bytes below the published end are never rewritten by
        // a cooperating writer, in this process or another, and no cooperating writer shrinks
        // the file below them (docs/safety.md, "Read-only maps").
        Ok(unsafe { MappedRegion::new_read_only(ptr, len, Box::new(RealMap(raw))) })
    }
}

impl RealFile {
    /// Whether `len` bytes of the file can be mapped: `false` for none (an empty region needs
    /// no map), an error past the file's end.
    fn mappable(&self, len: usize) -> io::Result<bool> {
        if len == 0 {
            return Ok(false);
        }
        if self.len()? < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping past end of file",
            ));
        }
        Ok(true)
    }
}

#[derive(Debug)]
struct RealMap(MmapRaw);

impl MapBacking for RealMap {
    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        self.0.flush_range(offset, len)
    }

    fn populate(&self, offset: usize, len: usize) {
        // Best effort: older kernels answer EINVAL and the first write faults the page instead.
        let _ = self.0.advise_range(Advice::PopulateWrite, offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock file a failed open removes: whoever opened it before the removal must not
    /// count its lock, and the next `lock_dir` locks a new file under the name.
    #[test]
    fn a_lock_on_a_removed_or_replaced_lock_file_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let first = RealStorage.lock_dir(dir.path()).unwrap();
        let early = File::open(&path).unwrap();
        assert!(still_named(&early, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        drop(first);
        // The late opener locks the unlinked inode: nobody else can, so it proves nothing.
        early.try_lock().unwrap();
        assert!(!still_named(&early, &path).unwrap());
        let second = RealStorage.lock_dir(dir.path()).unwrap();
        assert!(
            !still_named(&early, &path).unwrap(),
            "a new file has the name"
        );
        assert_eq!(
            RealStorage.lock_dir(dir.path()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(second);
    }

    /// A lock let go of within a few milliseconds (a forked child's inherited descriptor,
    /// closed at its exec) is taken; one held on is still reported as held.
    #[test]
    fn a_lock_released_soon_is_taken_and_one_held_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let held = RealStorage.lock_dir(dir.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            drop(held);
        });
        let taken = RealStorage.lock_dir(dir.path()).unwrap();
        releaser.join().unwrap();
        let start = std::time::Instant::now();
        assert_eq!(
            RealStorage.lock_dir(dir.path()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        drop(taken);
    }
}
