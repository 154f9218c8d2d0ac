//! The replica's own small files beside its log: the leader-epoch cache, the high-water mark
//! and the boot id of its previous life. Each is replaced atomically (write, fsync, rename,
//! fsync directory); formats in docs/format.md.

use std::path::Path;

use super::{BOOT_ID_FILE, EPOCH_CHECKPOINT_FILE, HW_CHECKPOINT_FILE};
use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointKind;
use crate::io::{write_atomic, OpenMode, Storage};
use crate::log::checkpoints::{read_values, write_values};
use crate::log::Log;
use crate::replication::LeaderEpochCache;
use crate::types::Offset;

/// The boot id recorded by the previous life; `None` when there was none (or it is unreadable,
/// which is treated the same: nothing can be assumed about that directory).
pub(super) fn read_boot_id(storage: &dyn Storage, dir: &Path) -> Option<u64> {
    read_values(storage, &dir.join(BOOT_ID_FILE), CheckpointKind::BootId)
        .ok()
        .flatten()
        .and_then(|v| v.first().copied())
}

/// Records this life's boot id. An unknown one is stored as `u64::MAX`; since an unknown
/// current boot never compares equal, it always counts as a reboot.
pub(super) fn write_boot_id(storage: &dyn Storage, dir: &Path, boot: Option<u64>) -> Result<()> {
    let value = boot.unwrap_or(u64::MAX);
    write_values(
        storage,
        &dir.join(BOOT_ID_FILE),
        CheckpointKind::BootId,
        &[value],
    )
}

pub(super) fn read_hw(storage: &dyn Storage, dir: &Path) -> Result<Option<Offset>> {
    match read_values(
        storage,
        &dir.join(HW_CHECKPOINT_FILE),
        CheckpointKind::HighWatermark,
    ) {
        Ok(v) => Ok(v.and_then(|v| v.first().copied()).map(Offset)),
        // The HW is a lower bound only: a damaged checkpoint costs a later HW, never data.
        Err(Error::CorruptFile { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn write_hw(storage: &dyn Storage, dir: &Path, hw: Offset) -> Result<()> {
    write_values(
        storage,
        &dir.join(HW_CHECKPOINT_FILE),
        CheckpointKind::HighWatermark,
        &[hw.0],
    )
}

pub(super) fn write_epoch_cache(
    storage: &dyn Storage,
    dir: &Path,
    cache: &LeaderEpochCache,
) -> Result<()> {
    let path = dir.join(EPOCH_CHECKPOINT_FILE);
    write_atomic(storage, &path, &cache.to_checkpoint())
        .map_err(|e| Error::io("write leader-epoch checkpoint", &path, e))
}

/// The epoch cache for `log`: the checkpoint, without entries past the log end; rebuilt from
/// the batches themselves (and rewritten) when the checkpoint is missing or damaged.
pub(super) fn load_epoch_cache(log: &Log) -> Result<LeaderEpochCache> {
    let storage = log.config().storage.as_ref();
    let path = log.dir().join(EPOCH_CHECKPOINT_FILE);
    let end = log.log_end_offset();
    let loaded = if storage.exists(&path) {
        storage
            .open(&path, OpenMode::Existing)
            .and_then(|f| f.read_all())
            .ok()
            .and_then(|bytes| LeaderEpochCache::from_checkpoint(&bytes).ok())
    } else {
        None
    };
    let mut cache = match loaded {
        Some(c) => c,
        None if end == log.log_start_offset() => LeaderEpochCache::new(),
        None => {
            let c = rebuild_epoch_cache(log)?;
            write_epoch_cache(storage, log.dir(), &c)?;
            c
        }
    };
    if let Some(next) = end.0.checked_add(1) {
        cache.truncate_from_end(Offset(next));
    }
    Ok(cache)
}

/// Calls `f` with every batch of the log, checksum verified, oldest first.
fn for_each_batch(
    log: &Log,
    mut f: impl FnMut(&crate::format::batch::BatchView<'_>) -> Result<()>,
) -> Result<()> {
    let end = log.log_end_offset();
    let mut next = log.log_start_offset();
    while next < end {
        let fetch = log.read(next, 8 << 20)?;
        let before = next;
        for view in fetch.batches() {
            let view = view?;
            f(&view)?;
            next = next.max(Offset(view.last_offset() + 1));
        }
        if next == before {
            // Nothing found for `next` below the log end, or a batch that does not reach it:
            // a damaged header.
            return Err(no_progress(log, next));
        }
    }
    Ok(())
}

/// Scans every batch of the log for its leader epoch.
pub(super) fn rebuild_epoch_cache(log: &Log) -> Result<LeaderEpochCache> {
    let mut cache = LeaderEpochCache::new();
    for_each_batch(log, |view| {
        let epoch = view.header().leader_epoch;
        if epoch >= 0 {
            cache.assign(epoch, Offset(view.base_offset()))?;
        }
        Ok(())
    })?;
    Ok(cache)
}

/// Reads every batch and checks its checksum (and its records' framing).
pub(super) fn verify_batches(log: &Log) -> Result<()> {
    for_each_batch(log, |view| {
        view.verify_records().map_err(|reason| Error::Corrupt {
            path: log.dir().to_path_buf(),
            position: view.base_offset(),
            reason,
        })
    })
}

/// Moves every file of `dir` into a new subdirectory `quarantine-<incarnation>` (renames, then
/// one directory fsync) and returns it. Nothing is deleted: an operator can still recover from
/// the damaged log if no other replica has the data.
pub(super) fn quarantine(
    storage: &dyn Storage,
    dir: &Path,
    incarnation: u64,
) -> Result<std::path::PathBuf> {
    let to = dir.join(format!("quarantine-{incarnation}"));
    storage
        .create_dir_all(&to)
        .map_err(|e| Error::io("create quarantine directory", &to, e))?;
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list log directory", dir, e))?;
    for name in names.iter().filter(|n| *n != crate::io::fs::LOCK_FILE) {
        let (from, dest) = (dir.join(name), to.join(name));
        storage
            .rename(&from, &dest)
            .map_err(|e| Error::io("move damaged file aside", &from, e))?;
    }
    storage
        .sync_dir(&to)
        .and_then(|()| storage.sync_dir(dir))
        .map_err(|e| Error::io("fsync log directory", dir, e))?;
    Ok(to)
}

/// A walk over the log's batches found nothing readable at `at` below the log end (a damaged
/// batch header): the error both batch walks (verification, the leader's fetch reads) give.
pub(super) fn no_progress(log: &Log, at: Offset) -> Error {
    Error::Corrupt {
        path: log.dir().to_path_buf(),
        position: at.0,
        reason: crate::format::DecodeError::BadField {
            field: "batch offsets (no progress)",
            value: at.0 as i64,
        },
    }
}
