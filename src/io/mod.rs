//! The only module that touches the file system, and the only one allowed `unsafe`.
//!
//! Everything the engine does to files goes through the narrow [`Storage`] and
//! [`StorageFile`] traits, so tests can swap the real file system ([`fs::RealStorage`]) for a
//! simulated one ([`sim::SimStorage`]) that loses unsynced writes the way power loss does.
//! Segment data is accessed only through a [`mmap::MappedRegion`] obtained from
//! [`StorageFile::map`]; `docs/safety.md` argues why that is sound.

// Test machinery, not API: hidden from the embedder's documentation.
#[doc(hidden)]
pub mod alloc_count;
mod bounded;
pub mod fs;
pub mod mmap;
pub mod signals;
// Test machinery, not API: hidden from the embedder's documentation.
#[doc(hidden)]
pub mod sim;

use std::fmt;
use std::io;
use std::path::Path;

pub use bounded::{read_bounded, BoundedReadError};
pub use mmap::{AppendMap, MapBacking, MappedRegion};

/// How a file was reserved by [`StorageFile::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Real `fallocate(2)`: blocks reserved, writes through a mapping cannot hit ENOSPC.
    Fallocated,
    /// The file system refused `fallocate` (EOPNOTSUPP); zeros were written and synced instead.
    ZeroFilled,
}

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create a new file; fail if it exists.
    CreateNew,
    /// Create or truncate to empty.
    CreateTruncate,
    /// Open an existing file read-write.
    Existing,
    /// Open an existing file for reading only (`O_RDONLY`): works on read-only media and on
    /// files without write permission. Every write through the handle fails.
    Read,
}

/// A directory tree of files. Paths are absolute or relative to the process's working directory.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents (`mkdir -p`); not durable until `sync_dir` of each parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly inside `dir`, unsorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Names of the directories directly inside `dir`, unsorted (a broker's partitions).
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens the file at `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Whether something exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Removes the file at `path` (durable once the directory is synced).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes the empty directory `dir` (rmdir(2); durable once its parent is synced).
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from` (rename(2)).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creates, renames and removes in `dir` durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `dir`; `ErrorKind::WouldBlock` if someone else holds it.
    /// The lock is released when the guard drops. The holder may remove the lock file before
    /// it lets go (an open whose plan fails removes the one it created, docs/recovery.md): an
    /// implementation must not grant a lock on a file that no longer has the lock file's name.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
    /// An identifier of the current boot of the machine (or simulated machine), `None` if it
    /// cannot be known. A replica compares it with the one recorded by its previous life: the
    /// same boot means a process crash, after which the page cache (and every write the log
    /// made, synced or not) survived.
    fn boot_id(&self) -> Option<u64> {
        None
    }
}

/// An exclusive directory lock; dropping it releases the lock.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// One open file.
#[allow(
    clippy::len_without_is_empty,
    reason = "an I/O length, not a collection"
)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `pos` (UnexpectedEof if the file is shorter).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `pos`, extending the file if needed.
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Reserves `[0, len)` with real blocks (never a sparse hole).
    fn allocate(&self, len: u64) -> io::Result<Allocation>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync(2): data and the metadata needed to read it (size) are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Maps `[0, len)` read-write and shared. The file must be at least `len` bytes long.
    fn map(&self, len: usize) -> io::Result<MappedRegion>;
    /// Maps `[0, len)` read-only and shared (`PROT_READ`; works on a file opened with
    /// [`OpenMode::Read`]). The region has no writer ([`AppendMap::writer`] answers `None`) and
    /// is never written back. The file must be at least `len` bytes long.
    fn map_read_only(&self, len: usize) -> io::Result<MappedRegion>;

    /// Reads the whole file. A file that shrinks between the length and the read (another
    /// process's live log trims a sealed segment's preallocation, as `verify` on a running log
    /// sees) is read again at its new length, a few times, instead of failing with a short read.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            let len = usize::try_from(self.len()?)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
            let mut buf = vec![0u8; len];
            match self.read_at(0, &mut buf) {
                Ok(()) => return Ok(buf),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file shrank during each of {ATTEMPTS} reads"),
        ))
    }
}

/// Writes `bytes` to `path` atomically and durably: write `path.tmp`, fsync it, rename over
/// `path`, fsync the directory. A crash leaves either the old or the new file, never a mix; a
/// failure leaves the old file and removes the temporary ([`AtomicReplace`]).
pub fn write_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let w = AtomicReplace::create(storage, path)?;
    w.file().write_at(0, bytes)?;
    w.commit()
}

/// An atomic replace of `path` in progress: the new contents go to the temporary
/// `<path>.tmp` ([`AtomicReplace::file`]); [`AtomicReplace::commit`] fdatasyncs it, renames it
/// over `path` and fsyncs the directory. Dropped without a successful commit (any step failed:
/// a full disk, EIO) it closes and removes the temporary, so a failure leaves no `.tmp` file
/// behind, only the old `path`. The removal is best effort (its own error is dropped: the
/// caller reports the first one); a temporary a crash or a failed removal leaves is deleted by
/// the next open of the log (recovery row R12 deletes every `*.tmp` in the log directory).
///
/// Invariant: at most one `AtomicReplace` per `path` at a time (the caller serialises writers
/// of a file); the temporary is always `<path>.tmp`.
pub struct AtomicReplace<'a> {
    storage: &'a dyn Storage,
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    /// The open temporary; `None` once committed (or renamed).
    file: Option<Box<dyn StorageFile>>,
}

impl<'a> AtomicReplace<'a> {
    /// Creates (or truncates) `<path>.tmp`.
    pub fn create(storage: &'a dyn Storage, path: &Path) -> io::Result<AtomicReplace<'a>> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        match storage.open(&tmp, OpenMode::CreateTruncate) {
            Ok(f) => Ok(AtomicReplace {
                storage,
                path: path.to_path_buf(),
                tmp,
                file: Some(f),
            }),
            Err(e) => {
                // A file system may create the entry and still fail the call.
                let _ = storage.remove(&tmp);
                Err(e)
            }
        }
    }

    /// The temporary file to write the new contents into.
    pub fn file(&self) -> &dyn StorageFile {
        match &self.file {
            Some(f) => f.as_ref(),
            None => unreachable!("an AtomicReplace is consumed by commit"),
        }
    }

    /// The temporary's path (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// fdatasync the temporary, rename it over the target, fsync the directory. On an error
    /// before the rename the temporary is removed (by drop); after it, the new file is in
    /// place and only its directory entry may not be durable yet.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        self.file = None; // closed before its name moves
        self.storage.rename(&self.tmp, &self.path)?;
        self.tmp = std::path::PathBuf::new(); // renamed: nothing to remove
        self.storage.sync_dir(parent_dir(&self.path))
    }
}

impl Drop for AtomicReplace<'_> {
    fn drop(&mut self) {
        if self.tmp.as_os_str().is_empty() {
            return;
        }
        self.file = None;
        let _ = self.storage.remove(&self.tmp);
    }
}

impl fmt::Debug for AtomicReplace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicReplace")
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

/// Creates `path` durably (the file and its directory entry), for files written later.
pub fn create_durable(storage: &dyn Storage, path: &Path) -> io::Result<Box<dyn StorageFile>> {
    let f = storage.open(path, OpenMode::CreateNew)?;
    f.sync_data()?;
    storage.sync_dir(parent_dir(path))?;
    Ok(f)
}

/// The directory holding `path` (`.` for a bare file name, whose parent is the empty path).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
