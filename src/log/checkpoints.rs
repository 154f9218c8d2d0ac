//! The small files beside the segments: recovery point, log start offset and clean-shutdown
//! marker (formats in `format::checkpoint`, byte tables in docs/format.md).
//!
//! * `recovery-point`: two slots 4096 bytes apart, rewritten in place and fdatasync'ed alternately; the
//!   valid slot with the higher sequence wins, so a torn slot write leaves the other intact.
//!   It is rewritten after every sync, so it must cost one write and one fdatasync, no rename.
//! * `log-start-offset` and `clean-shutdown`: whole-file atomic replace (temp, fsync, rename,
//!   directory fsync).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::checkpoint::{self, CheckpointKind};
use crate::io::{write_atomic, OpenMode, Storage, StorageFile};

/// Name of the recovery-point checkpoint file in a log directory (docs/format.md).
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Name of the log-start-offset checkpoint file in a log directory (docs/format.md).
pub const LOG_START_FILE: &str = "log-start-offset";
/// Name of the clean-shutdown marker written by a clean close (docs/format.md).
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Slot stride: one page apart, so a torn or lost page write damages at most the slot being
/// written, whatever the device's atomic write unit.
pub const SLOT_BYTES: u64 = 4096;

/// The recovery-point file, open for in-place slot updates.
#[derive(Debug)]
pub struct RecoveryPointFile {
    path: PathBuf,
    /// `None` for a read-only log whose directory has no recovery-point file (it never stores).
    file: Option<Box<dyn StorageFile>>,
    /// Sequence of the newest slot written; the next write goes to slot `(sequence + 1) % 2`.
    sequence: u64,
    /// The value last written.
    value: u64,
    /// The newest slot in the file holds `value`. False after a failed write or fdatasync: the
    /// slot it targeted may hold the failed value with a sequence above every slot written
    /// since, and a process crash (or the page cache, after power loss) keeps it. The next
    /// store then always writes, to that same slot with that same sequence, replacing it.
    settled: bool,
    /// A valid slot was read at open.
    found: bool,
}

impl RecoveryPointFile {
    /// Reads the newest valid slot (recovery has already judged a missing or damaged one:
    /// docs/recovery.md). A missing file is created (durably) when `create`; otherwise (a
    /// read-only log) the handle stays detached and `store` fails.
    pub fn open(storage: &dyn Storage, dir: &Path, create: bool) -> Result<RecoveryPointFile> {
        let path = dir.join(RECOVERY_POINT_FILE);
        let io = |op| {
            let p = path.clone();
            move |e| Error::io(op, p, e)
        };
        let (file, best) = if storage.exists(&path) {
            // A read-only log (`create` false) never stores: it opens the file for reading.
            let mode = if create {
                OpenMode::Existing
            } else {
                OpenMode::Read
            };
            let file = storage
                .open(&path, mode)
                .map_err(io("open recovery point"))?;
            let bytes = file.read_all().map_err(io("read recovery point"))?;
            (Some(file), newest_slot(&bytes).ok())
        } else if !create {
            (None, None)
        } else {
            let file = storage
                .open(&path, OpenMode::CreateNew)
                .map_err(io("create recovery point"))?;
            file.sync_data().map_err(io("fsync recovery point"))?;
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
            (Some(file), None)
        };
        let found = best.is_some();
        let (sequence, value) = best.unwrap_or((0, 0));
        Ok(RecoveryPointFile {
            path,
            file,
            sequence,
            value,
            settled: true,
            found,
        })
    }

    /// The value of the newest valid slot (0 when open found none).
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Whether open found a valid slot.
    pub fn found(&self) -> bool {
        self.found
    }

    /// Writes a first slot if none was ever written, so "no valid slot" always means damage.
    pub fn ensure_written(&mut self) -> Result<()> {
        if self.sequence == 0 {
            self.store(self.value)?;
        }
        Ok(())
    }

    /// Durably records `offset` as the recovery point (one write and one fdatasync). Skipped
    /// when the file already holds it, which is known only while no store has failed since the
    /// last one that succeeded (finding 11: a truncation's lowering store was skipped because
    /// it equalled the last stored value, while the newest slot held a failed write's higher
    /// one, so a crash brought back a recovery point past the truncated log's end).
    pub fn store(&mut self, offset: u64) -> Result<()> {
        if self.settled && offset == self.value && self.sequence > 0 {
            return Ok(());
        }
        self.settled = false;
        let sequence = self.sequence + 1;
        let bytes = checkpoint::encode(CheckpointKind::RecoveryPoint, sequence, &[offset]);
        let slot = sequence % 2;
        let io = |op| {
            let p = self.path.clone();
            move |e| Error::io(op, p, e)
        };
        let file = self.file.as_ref().ok_or(Error::ReadOnly)?;
        file.write_at(slot * SLOT_BYTES, &bytes)
            .map_err(io("write recovery point"))?;
        file.sync_data().map_err(io("fsync recovery point"))?;
        self.sequence = sequence;
        self.value = offset;
        self.settled = true;
        Ok(())
    }
}

/// The valid slot with the larger sequence, as `(sequence, recovery point)`, or why no slot is
/// valid (each slot's decode error). The one reader of the slot layout: open's
/// `RecoveryPointFile` and recovery's survey (and so `oncelog verify`) both go through it.
pub fn newest_slot(bytes: &[u8]) -> std::result::Result<(u64, u64), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut why = Vec::new();
    let mut best: Option<(u64, u64)> = None;
    for (i, slot) in bytes.chunks(SLOT_BYTES as usize).take(2).enumerate() {
        match checkpoint::decode(slot, CheckpointKind::RecoveryPoint) {
            Ok((seq, v)) => match v.first() {
                Some(&v) => best = best.max(Some((seq, v))),
                None => why.push(format!("slot {i}: no value")),
            },
            Err(e) => why.push(format!("slot {i}: {e}")),
        }
    }
    best.ok_or_else(|| why.join("; "))
}

/// Reads a whole-file checkpoint; `Ok(None)` if missing, `Err` if present but damaged.
pub fn read_values(
    storage: &dyn Storage,
    path: &Path,
    kind: CheckpointKind,
) -> Result<Option<Vec<u64>>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let bytes = storage
        .open(path, OpenMode::Read)
        .and_then(|f| f.read_all())
        .map_err(|e| Error::io("read checkpoint", path, e))?;
    checkpoint::decode(&bytes, kind)
        .map(|(_, v)| Some(v))
        .map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Atomically replaces a whole-file checkpoint.
pub fn write_values(
    storage: &dyn Storage,
    path: &Path,
    kind: CheckpointKind,
    values: &[u64],
) -> Result<()> {
    write_atomic(storage, path, &checkpoint::encode(kind, 0, values))
        .map_err(|e| Error::io("write checkpoint", path, e))
}
