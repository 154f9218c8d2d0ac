//! What recovery reads before it decides anything: the directory listing and every checkpoint,
//! decoded, and the bytes of segment files on request. Nothing here changes the directory: a
//! plan that fails must leave it exactly as it was, so every fallible read happens here, before
//! the first mutation (docs/recovery.md, "One plan").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointKind;
use crate::format::file_name::{parse_file_name, FileKind};
use crate::io::{AppendMap, OpenMode, Storage};
use crate::log::checkpoints::{self, CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::log::dir_files;
use crate::log::log_start::{FirstOpen, LogStartCheckpoint};
use crate::log::producers::{PRODUCER_EPOCHS_FILE, PRODUCER_IDS_FILE};
use crate::producer::{IssuedEpochs, ISSUED_EPOCHS_KEPT};
use crate::segment::{map_whole_file, segment_path};

/// A checkpoint file as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    /// The file does not exist.
    Missing,
    /// Present but not decodable: the reason.
    Damaged(String),
    /// Present and decoded.
    Valid(T),
}

impl<T> Found<T> {
    /// The value if it was present and valid.
    pub fn valid(&self) -> Option<&T> {
        match self {
            Found::Valid(v) => Some(v),
            _ => None,
        }
    }

    /// Why the file is damaged, if it is.
    pub fn damage(&self) -> Option<String> {
        match self {
            Found::Damaged(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Everything recovery decides from, except segment bytes.
#[derive(Debug, Clone)]
pub struct DirFacts {
    /// The log directory.
    pub dir: PathBuf,
    /// Base offsets of the `.log` files, ascending.
    pub bases: Vec<u64>,
    /// Length of each `.log` file, in the order of `bases`.
    pub log_lens: Vec<u64>,
    /// Whether any file shows the directory holds a log (`dir_files::marks_a_log`).
    pub holds_a_log: bool,
    /// Files oncelog never writes, sorted (kept as they are; a directory with such files and
    /// no file of a log is refused).
    pub foreign: Vec<String>,
    /// Leftovers of interrupted atomic writes and the prepared spare segment (row R12).
    pub temps: Vec<String>,
    /// `.index`/`.timeindex` files with no `.log` (row R12).
    pub orphan_indexes: Vec<String>,
    /// The recovery point: the newest valid slot's value.
    pub recovery_point: Found<u64>,
    /// The log-start-offset checkpoint's value.
    pub log_start: Found<u64>,
    /// The same checkpoint's witness: the first segment's base and the transactions open there
    /// that began below it (`log::log_start`), when the file is valid and carries one.
    pub first_open: Option<FirstOpen>,
    /// The clean-shutdown marker's values.
    pub marker: Found<Vec<u64>>,
    /// The producer-id reservation mark.
    pub producer_ids: Found<u64>,
    /// The issued-epochs table's values (decoded and checked).
    pub producer_epochs: Found<Vec<u64>>,
}

/// Reads the listing and every checkpoint of `dir`. A file that disappears between the listing
/// and its read (a live log's retention or snapshot rotation, seen by `oncelog verify`) is
/// treated as never listed.
pub fn read_dir_facts(storage: &dyn Storage, dir: &Path) -> Result<DirFacts> {
    // The recovery point first: on a live log (verify) it only grows, and every later read
    // (listing, segment bytes) sees at least the data it vouches for; read after the listing it
    // could vouch for a segment created since, and the plan would call that synced data missing.
    let recovery_point = read_recovery_point(storage, dir)?;
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list log directory", dir, e))?;
    let mut bases: Vec<u64> = Vec::new();
    let mut index_names: Vec<(u64, String)> = Vec::new();
    let mut temps = Vec::new();
    let mut holds_a_log = false;
    let mut foreign = Vec::new();
    for name in names {
        holds_a_log |= dir_files::marks_a_log(&name);
        if dir_files::describe_file(&name).is_none() {
            foreign.push(name.clone());
        }
        if name.ends_with(".tmp") {
            temps.push(name);
            continue;
        }
        match parse_file_name(&name) {
            Some((o, FileKind::Log)) => bases.push(o.0),
            Some((o, FileKind::Index | FileKind::TimeIndex | FileKind::TxnIndex)) => {
                index_names.push((o.0, name))
            }
            _ => {}
        }
    }
    bases.sort_unstable();
    let mut orphan_indexes: Vec<String> = index_names
        .into_iter()
        .filter(|(b, _)| bases.binary_search(b).is_err())
        .map(|(_, n)| n)
        .collect();
    orphan_indexes.sort();
    temps.sort();
    foreign.sort();
    let mut kept = Vec::with_capacity(bases.len());
    let mut log_lens = Vec::with_capacity(bases.len());
    for base in bases {
        let path = segment_path(dir, base, FileKind::Log);
        match storage.open(&path, OpenMode::Read).and_then(|f| f.len()) {
            Ok(len) => {
                kept.push(base);
                log_lens.push(len);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat segment", &path, e)),
        }
    }
    let (log_start, first_open) = read_log_start(storage, &dir.join(LOG_START_FILE))?;
    Ok(DirFacts {
        dir: dir.to_path_buf(),
        holds_a_log,
        foreign,
        bases: kept,
        log_lens,
        temps,
        orphan_indexes,
        recovery_point,
        log_start,
        first_open,
        marker: read_checkpoint(
            storage,
            &dir.join(CLEAN_SHUTDOWN_FILE),
            CheckpointKind::CleanShutdown,
        )?,
        producer_ids: read_single(
            storage,
            &dir.join(PRODUCER_IDS_FILE),
            CheckpointKind::ProducerIds,
        )?,
        producer_epochs: match read_checkpoint(
            storage,
            &dir.join(PRODUCER_EPOCHS_FILE),
            CheckpointKind::ProducerEpochs,
        )? {
            Found::Valid(v) => match IssuedEpochs::from_values(&v, ISSUED_EPOCHS_KEPT) {
                Ok(_) => Found::Valid(v),
                Err(why) => Found::Damaged(why),
            },
            other => other,
        },
    })
}

fn read_checkpoint(
    storage: &dyn Storage,
    path: &Path,
    kind: CheckpointKind,
) -> Result<Found<Vec<u64>>> {
    match checkpoints::read_values(storage, path, kind) {
        Ok(None) => Ok(Found::Missing),
        Ok(Some(v)) => Ok(Found::Valid(v)),
        Err(Error::CorruptFile { reason, .. }) => Ok(Found::Damaged(reason)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Found::Missing)
        }
        Err(e) => Err(e),
    }
}

/// The log-start checkpoint: its offset, and its witness of what is open at the first
/// segment's base (a layout `LogStartCheckpoint::from_values` refuses makes the file damaged).
fn read_log_start(storage: &dyn Storage, path: &Path) -> Result<(Found<u64>, Option<FirstOpen>)> {
    Ok(
        match read_checkpoint(storage, path, CheckpointKind::LogStart)? {
            Found::Valid(v) => match LogStartCheckpoint::from_values(&v) {
                Ok(c) => (Found::Valid(c.log_start), c.first_open),
                Err(why) => (Found::Damaged(why), None),
            },
            Found::Missing => (Found::Missing, None),
            Found::Damaged(r) => (Found::Damaged(r), None),
        },
    )
}

fn read_single(storage: &dyn Storage, path: &Path, kind: CheckpointKind) -> Result<Found<u64>> {
    Ok(match read_checkpoint(storage, path, kind)? {
        Found::Valid(v) => match v.as_slice() {
            [x] => Found::Valid(*x),
            other => Found::Damaged(format!("{} values where 1 was expected", other.len())),
        },
        Found::Missing => Found::Missing,
        Found::Damaged(r) => Found::Damaged(r),
    })
}

/// The newest valid slot of the recovery-point file. An existing file without a valid slot is
/// `Damaged` (open writes a first slot before the first segment can hold data).
pub fn read_recovery_point(storage: &dyn Storage, dir: &Path) -> Result<Found<u64>> {
    let path = dir.join(RECOVERY_POINT_FILE);
    if !storage.exists(&path) {
        return Ok(Found::Missing);
    }
    let bytes = match storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.read_all())
    {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(Error::io("read recovery point", &path, e)),
    };
    Ok(match checkpoints::newest_slot(&bytes) {
        Ok((_, v)) => Found::Valid(v),
        Err(why) => Found::Damaged(why),
    })
}

/// How segment bytes are obtained: mapped (open: no copy, nobody else writes the files while
/// the directory lock is held) or read into memory (`inspect` of a directory another process
/// may be writing: a mapping of a file that is trimmed meanwhile would fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteAccess {
    /// Memory-mapped (the directory lock is held).
    Map,
    /// Read into memory (another process may be writing the files).
    Read,
}

/// A segment file's bytes.
#[derive(Debug)]
pub enum SegmentBytes {
    /// A shared mapping of the file.
    Mapped(Arc<AppendMap>),
    /// A copy read into memory.
    Owned(Vec<u8>),
}

impl SegmentBytes {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            SegmentBytes::Mapped(m) => m.published_bytes(),
            SegmentBytes::Owned(v) => v,
        }
    }
}

/// Reads (or maps) the segment file at `base`.
pub fn segment_bytes(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    access: ByteAccess,
) -> Result<SegmentBytes> {
    let path = segment_path(dir, base, FileKind::Log);
    match access {
        ByteAccess::Read => storage
            .open(&path, OpenMode::Read)
            .and_then(|f| f.read_all())
            .map(SegmentBytes::Owned)
            .map_err(|e| Error::io("read segment", &path, e)),
        ByteAccess::Map => {
            let (_file, region, len) = map_whole_file(storage, &path)?;
            Ok(SegmentBytes::Mapped(AppendMap::new(region, len as usize)))
        }
    }
}

/// The chain check a clean-shutdown marker carries: a checksum over the base offsets of every
/// segment at close, so a segment file added or removed since is seen by a clean open without
/// reading any segment.
pub fn chain_checksum(bases: &[u64]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for b in bases {
        h.update(&b.to_le_bytes());
    }
    u64::from(h.finalize())
}
