//! The prepared spare segment: the next segment's file, created ahead by the background thread
//! so that a roll only renames and maps it (docs/architecture.md, "The prepared spare segment").
//!
//! * The background thread creates [`SPARE_FILE`], preallocates it to `segment_bytes` (the same
//!   fallocate or zero-fill fallback as `Segment::create`, via `create_preallocated`) and
//!   fdatasyncs it. Its name is never made durable: a spare a crash leaves behind ends in `.tmp`
//!   and recovery row R12 deletes it. At most one spare exists (the [`Slot`] state machine);
//!   preparation is requested at open and after every roll.
//! * A roll takes a ready spare and renames it to the new segment's name without fsyncing the
//!   directory; with no spare ready (still being prepared, no background thread, preparation
//!   failed) it creates the segment inline as before. A failed preparation or rename removes the
//!   spare (best effort), is counted and reported once, and never poisons the log.
//! * The renamed segment's name must be durable before the recovery point moves past its base:
//!   [`Spares::note_renamed`] records it, and `Log::make_names_durable` (called before every
//!   recovery-point store that can move it up: by the sync lanes' single checkpoint writer, or
//!   by `note_sealed` under the sync lock while no writer is active) fsyncs the directory if a
//!   recorded rename below the new value has not been covered by a directory fsync yet. The
//!   background seal of the previous segment fsyncs the directory after the rename (it writes
//!   index files), which covers it: `seal` tells us through [`Spares::dir_sync_began`] /
//!   [`Spares::dir_synced`].

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::best_effort::BestEffort;
use super::flush::Job;
use super::Log;
use crate::error::{Error, Result};
use crate::io::StorageFile;
use crate::segment::{create_preallocated, Segment};

/// The spare's name in the log directory. It ends in `.tmp`, so recovery (row R12) deletes a
/// leftover, and it has no 20-digit offset, so it can never be taken for (or collide with) a
/// segment, index, snapshot or an atomic write's temp file (`<name>.tmp` of a real file).
pub const SPARE_FILE: &str = "spare-segment.tmp";

/// Rolls so far, by how the new segment's file was made ([`Log::roll_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollStats {
    /// Rolls that renamed a spare prepared by the background thread.
    pub from_spare: u64,
    /// Rolls that created the segment inline (no spare ready, or adopting it failed).
    pub created_inline: u64,
    /// Spare preparations or renames that failed (the roll fell back to inline creation).
    pub spare_failures: u64,
}

/// Whether a spare exists. Transitions: `Empty -> Preparing` (a request, by the appender or
/// open), `Preparing -> Ready | Empty` (the background thread), `Ready -> Empty` (a roll takes
/// it, or close discards it).
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Preparing,
    Ready(Box<dyn StorageFile>),
}

#[derive(Debug, Default)]
pub(super) struct Spares {
    slot: Mutex<Slot>,
    names: Mutex<Names>,
    from_spare: AtomicU64,
    created_inline: AtomicU64,
    /// Failed preparations or renames of the spare.
    pub(super) failures: BestEffort,
    /// Failed producer snapshots of the append path. Kept here, beside the spare's failures,
    /// because both are best-effort work of the background thread (`log::best_effort`).
    pub(super) snapshot_failures: BestEffort,
    /// Failed retention runs of the background thread (each tick retries).
    pub(super) retention_failures: BestEffort,
}

/// Segment names made by a rename whose directory entry may not be durable yet.
#[derive(Debug, Default)]
struct Names {
    next_seq: u64,
    /// (sequence number, base offset) of each such rename.
    pending: Vec<(u64, u64)>,
}

impl Spares {
    /// Records that a segment at `base` got its name by a rename not yet covered by a directory
    /// fsync. Called after the rename, before the segment is published.
    fn note_renamed(&self, base: u64) {
        let mut n = self.names.lock();
        let seq = n.next_seq;
        n.next_seq += 1;
        n.pending.push((seq, base));
    }

    /// Call right before a directory fsync starts; pass the result to [`Spares::dir_synced`]
    /// once it succeeded: every rename recorded before this call is then durable.
    pub(super) fn dir_sync_began(&self) -> u64 {
        self.names.lock().next_seq
    }

    pub(super) fn dir_synced(&self, began: u64) {
        self.names.lock().pending.retain(|&(seq, _)| seq >= began);
    }

    /// Whether moving the recovery point to `value` needs a directory fsync first.
    fn needs_dir_sync(&self, value: u64) -> bool {
        self.names
            .lock()
            .pending
            .iter()
            .any(|&(_, base)| base < value)
    }

    fn failed(&self, e: &Error) {
        self.failures.failed(
            "preparing the next segment ahead",
            e,
            "creating segments at roll instead until a preparation succeeds",
        );
    }
}

impl Log {
    /// Rolls so far by how their segment was made (the prepared spare, or inline creation).
    pub fn roll_stats(&self) -> RollStats {
        let s = &self.inner.spares;
        RollStats {
            from_spare: s.from_spare.load(Ordering::Relaxed),
            created_inline: s.created_inline.load(Ordering::Relaxed),
            spare_failures: s.failures.failures(),
        }
    }

    fn spare_path(&self) -> std::path::PathBuf {
        self.inner.dir.join(SPARE_FILE)
    }

    /// Asks the background thread to prepare a spare unless one exists or is being prepared
    /// (or there is no background thread).
    pub(super) fn request_spare(&self) {
        let background = self.inner.background.lock();
        let Some(bg) = background.as_ref().filter(|b| b.is_running()) else {
            return;
        };
        {
            let mut slot = self.inner.spares.slot.lock();
            if !matches!(*slot, Slot::Empty) {
                return;
            }
            *slot = Slot::Preparing;
        }
        bg.send(Job::PrepareSpare);
    }

    /// The background thread's half: create, preallocate and fdatasync the spare, if one is
    /// requested and not made yet (a no-op otherwise: the background thread calls this before
    /// every seal and snapshot too, so a request never waits behind them).
    pub(super) fn prepare_spare(&self) {
        if !matches!(*self.inner.spares.slot.lock(), Slot::Preparing) {
            return;
        }
        let cfg = &self.inner.config;
        let path = self.spare_path();
        let made = create_preallocated(cfg.storage.as_ref(), &path, cfg.segment_bytes);
        let mut slot = self.inner.spares.slot.lock();
        match made {
            Ok(file) => *slot = Slot::Ready(file),
            Err(e) => {
                *slot = Slot::Empty;
                self.inner.spares.failed(&e);
            }
        }
    }

    /// The new active segment at `base`: the spare renamed, if one is ready and adopting it
    /// works, otherwise created inline (`Segment::create`).
    pub(super) fn new_segment(&self, base: u64) -> Result<Segment> {
        let cfg = &self.inner.config;
        let storage = cfg.storage.as_ref();
        let spares = &self.inner.spares;
        let ready = {
            let mut slot = spares.slot.lock();
            match std::mem::take(&mut *slot) {
                Slot::Ready(file) => Some(file),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some(file) = ready {
            let spare = self.spare_path();
            match Segment::adopt_spare(
                storage,
                &self.inner.dir,
                &spare,
                file,
                base,
                cfg.segment_bytes,
            ) {
                Ok(seg) => {
                    spares.note_renamed(base);
                    spares.from_spare.fetch_add(1, Ordering::Relaxed);
                    return Ok(seg);
                }
                Err(e) => spares.failed(&e),
            }
        }
        let seg = Segment::create(storage, &self.inner.dir, base, cfg.segment_bytes)?;
        spares.created_inline.fetch_add(1, Ordering::Relaxed);
        Ok(seg)
    }

    /// Makes the names of renamed segments below `value` durable (one directory fsync) before
    /// the recovery point moves to `value`. Caller holds the sync lock.
    pub(super) fn make_names_durable(&self, value: u64) -> Result<()> {
        let spares = &self.inner.spares;
        if !spares.needs_dir_sync(value) {
            return Ok(());
        }
        let began = spares.dir_sync_began();
        let dir = &self.inner.dir;
        self.inner
            .config
            .storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        spares.dir_synced(began);
        Ok(())
    }

    /// Removes the spare at a clean close (best effort: a leftover is deleted by the next open,
    /// row R12). The background thread has stopped, so nothing is preparing one.
    pub(super) fn discard_spare(&self) {
        let slot = std::mem::take(&mut *self.inner.spares.slot.lock());
        drop(slot); // closes the spare's handle before its name goes
        let path = self.spare_path();
        let storage = self.inner.config.storage.as_ref();
        if storage.exists(&path) {
            let _ = storage.remove(&path);
        }
    }
}
