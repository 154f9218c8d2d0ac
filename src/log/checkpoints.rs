//! The small files beside the segments: recovery point, log start offset and clean-shutdown
//! marker (formats in `format::checkpoint`, byte tables in docs/format.md).
//!
//! * `recovery-point`: two slots 4096 bytes apart, rewritten in place; the valid slot with the
//!   higher sequence wins. Every write between two fdatasyncs goes to the same slot, and the
//!   next fdatasync moves writing to the other one, so whatever a power loss does to the slot
//!   being written, the other holds the value of the last fdatasync. It is rewritten after every
//!   sync lane, so it must cost at most one write, no rename; the fdatasync that makes it
//!   durable may lag (`store_lazily`, docs/recovery.md, "The lagging recovery point").
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
///
/// Invariant (the two-slot rule): the slot other than `next_slot` holds a valid value that an
/// fdatasync made durable (or none yet, before the first store), and every write goes to
/// `next_slot` until an fdatasync succeeds, which flips it. So a power loss can tear only
/// `next_slot`, and the other slot still names a recovery point that data reached the disk
/// before (every value is written after the sync it vouches for).
#[derive(Debug)]
pub struct RecoveryPointFile {
    path: PathBuf,
    /// `None` for a read-only log whose directory has no recovery-point file (it never stores).
    file: Option<Box<dyn StorageFile>>,
    /// Sequence of the newest slot written.
    sequence: u64,
    /// The slot every write goes to until the next successful fdatasync.
    next_slot: u64,
    /// The value last written.
    value: u64,
    /// The newest slot in the file holds `value`. False after a failed write or fdatasync: the
    /// slot it targeted may hold the failed value with a sequence above every slot written
    /// since, and a process crash (or the page cache, after power loss) keeps it. The next
    /// store then always writes, to that same slot with that same sequence, replacing it.
    settled: bool,
    /// A write since the last successful fdatasync (`store_lazily`).
    unsynced: bool,
    /// When (on the log's clock, ms) the file was last fdatasynced.
    synced_at_ms: i64,
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
            if create {
                // The newest slot may have been written lazily by a process that then crashed:
                // it must be durable before the first write goes to the other slot.
                file.sync_data().map_err(io("fsync recovery point"))?;
            }
            (Some(file), newest_slot_of(&bytes).ok())
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
        let newest = best.unwrap_or(NewestSlot {
            index: 1,
            sequence: 0,
            value: 0,
        });
        Ok(RecoveryPointFile {
            path,
            file,
            sequence: newest.sequence,
            next_slot: 1 - newest.index,
            value: newest.value,
            settled: true,
            unsynced: false,
            synced_at_ms: i64::MIN,
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
    /// when the file already holds it durably, which is known only while no store has failed
    /// since the last one that succeeded (finding 11: a truncation's lowering store was skipped
    /// because it equalled the last stored value, while the newest slot held a failed write's
    /// higher one, so a crash brought back a recovery point past the truncated log's end).
    pub fn store(&mut self, offset: u64) -> Result<()> {
        self.write_unless_held(offset)?;
        self.sync()
    }

    /// Records `offset` as the recovery point with one write, and fdatasyncs the file only if
    /// its last fdatasync is `max_lag_ms` or more old on `now_ms` (the log's clock). The data
    /// below `offset` is already durable; until the fdatasync, a power loss may bring back an
    /// older recovery point, never a torn or higher one (the two-slot rule above).
    pub fn store_lazily(&mut self, offset: u64, now_ms: i64, max_lag_ms: u64) -> Result<()> {
        self.write_unless_held(offset)?;
        self.sync_if_older(now_ms, max_lag_ms)
    }

    /// Writes `offset` unless the newest slot is known to hold it (no store failed since).
    fn write_unless_held(&mut self, offset: u64) -> Result<()> {
        if self.settled && offset == self.value && self.sequence > 0 {
            return Ok(());
        }
        self.write(offset)
    }

    /// Fdatasyncs a lazily written value if the last fdatasync is `max_lag_ms` or more old.
    pub fn sync_if_older(&mut self, now_ms: i64, max_lag_ms: u64) -> Result<()> {
        let due = self.synced_at_ms.saturating_add_unsigned(max_lag_ms) <= now_ms;
        if self.unsynced && due {
            self.sync()?;
            self.synced_at_ms = now_ms;
        }
        Ok(())
    }

    /// True when a written value still waits for its fdatasync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Makes every value written durable, then moves writing to the other slot.
    pub fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let file = self.file.as_ref().ok_or(Error::ReadOnly)?;
        if let Err(e) = file.sync_data() {
            // The slot may or may not be durable: the next store writes it again (same slot,
            // a higher sequence), even if its value is unchanged.
            self.settled = false;
            return Err(Error::io("fsync recovery point", self.path.clone(), e));
        }
        self.unsynced = false;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }

    /// One slot write of `offset` to `next_slot`, no fdatasync.
    fn write(&mut self, offset: u64) -> Result<()> {
        // After a failed write, the same slot with the same sequence again: it may hold it.
        let sequence = self.sequence + 1;
        self.settled = false;
        let bytes = checkpoint::encode(CheckpointKind::RecoveryPoint, sequence, &[offset]);
        let file = self.file.as_ref().ok_or(Error::ReadOnly)?;
        file.write_at(self.next_slot * SLOT_BYTES, &bytes)
            .map_err(|e| Error::io("write recovery point", self.path.clone(), e))?;
        self.sequence = sequence;
        self.value = offset;
        self.settled = true;
        self.unsynced = true;
        Ok(())
    }
}

/// The newest valid slot of a recovery-point file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NewestSlot {
    index: u64,
    sequence: u64,
    value: u64,
}

/// The valid slot with the larger sequence, as `(sequence, recovery point)`, or why no slot is
/// valid (each slot's decode error). The one reader of the slot layout: open's
/// `RecoveryPointFile`, recovery's survey (and so `oncelog verify`) and the fuzz harnesses all
/// go through it.
pub fn newest_slot(bytes: &[u8]) -> std::result::Result<(u64, u64), String> {
    newest_slot_of(bytes).map(|n| (n.sequence, n.value))
}

fn newest_slot_of(bytes: &[u8]) -> std::result::Result<NewestSlot, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut why = Vec::new();
    let mut best: Option<NewestSlot> = None;
    for (i, slot) in (0u64..).zip(bytes.chunks(SLOT_BYTES as usize).take(2)) {
        match checkpoint::decode(slot, CheckpointKind::RecoveryPoint) {
            Ok((sequence, v)) => match v.first() {
                Some(&value) if best.is_none_or(|b| sequence > b.sequence) => {
                    best = Some(NewestSlot {
                        index: i,
                        sequence,
                        value,
                    });
                }
                Some(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{CrashMode, SimStorage};

    /// The two-slot rule under power loss: however many lazy writes land between fdatasyncs,
    /// a power loss leaves a valid slot whose value lies between the last fdatasynced value and
    /// the last value written, even when every slot written since the last fdatasync is torn
    /// (the simulated disk tears at sector granularity, and a slot fits in one sector, so the
    /// test destroys those slots itself). Alternating slots on every write fails this.
    #[test]
    fn a_power_loss_between_lazy_writes_always_leaves_a_durable_slot() {
        let dir = Path::new("/rp");
        let path = dir.join(RECOVERY_POINT_FILE);
        for seed in 0..400u64 {
            let sim = SimStorage::new(seed);
            sim.create_dir_all(dir).unwrap();
            let mut file = RecoveryPointFile::open(&sim, dir, true).unwrap();
            file.ensure_written().unwrap();
            let image = |f: &RecoveryPointFile| f.file.as_ref().unwrap().read_all().unwrap();
            let mut synced_image = image(&file);
            let mut value = 0;
            let mut durable = 0;
            for step in 0..(seed % 23 + 1) {
                value += 1 + step % 5;
                if (seed + step) % 7 == 0 {
                    file.store(value).unwrap();
                    (durable, synced_image) = (value, image(&file));
                } else {
                    // Never due on its own: only `store` and `sync` make it durable.
                    file.store_lazily(value, 0, u64::MAX).unwrap();
                    if (seed * 3 + step) % 11 == 0 {
                        file.sync().unwrap();
                        (durable, synced_image) = (value, image(&file));
                    }
                }
            }
            let written = image(&file);
            drop(file);
            sim.crash_with_seed(CrashMode::PowerLoss, seed.wrapping_mul(0x9e37_79b9));
            let mut bytes = sim.read_durable(&path).unwrap();
            // A slot's bytes in an image (the file grows only as far as the slots written).
            let slot_of = |img: &[u8], slot: usize| -> Vec<u8> {
                let mut b: Vec<u8> = img
                    .iter()
                    .skip(slot * SLOT_BYTES as usize)
                    .take(SLOT_BYTES as usize)
                    .copied()
                    .collect();
                b.resize(SLOT_BYTES as usize, 0);
                b
            };
            for slot in 0..2 {
                if slot_of(&written, slot) != slot_of(&synced_image, slot) {
                    let from = slot * SLOT_BYTES as usize;
                    for b in bytes.iter_mut().skip(from).take(SLOT_BYTES as usize) {
                        *b = 0xa5;
                    }
                }
            }
            let (_, got) = newest_slot(&bytes)
                .unwrap_or_else(|e| panic!("seed {seed}: no valid slot after power loss: {e}"));
            assert!(
                (durable..=value).contains(&got),
                "seed {seed}: recovered {got}, durable {durable}, last written {value}"
            );
            // Reopen (it fdatasyncs what it read before writing the other slot), then a power
            // loss after one lazy write.
            let mut file = RecoveryPointFile::open(&sim, dir, true).unwrap();
            let reopened = file.value();
            assert!((durable..=value).contains(&reopened), "seed {seed}");
            file.store_lazily(reopened + 1, 0, u64::MAX).unwrap();
            sim.crash_with_seed(CrashMode::PowerLoss, seed);
            let bytes = sim.read_durable(&path).unwrap();
            let (_, again) = newest_slot(&bytes).unwrap();
            assert!(
                (reopened..=reopened + 1).contains(&again),
                "seed {seed}: {again}"
            );
        }
    }

    /// A lazy store is fdatasynced once the last fdatasync is `max_lag_ms` old, not before.
    #[test]
    fn a_lazy_store_is_synced_when_the_lag_is_reached() {
        let dir = Path::new("/rp");
        let sim = SimStorage::new(7);
        sim.create_dir_all(dir).unwrap();
        let mut file = RecoveryPointFile::open(&sim, dir, true).unwrap();
        file.ensure_written().unwrap();
        file.store_lazily(10, 1_000, 50).unwrap();
        assert!(
            !file.unsynced(),
            "the first lazy store after a long quiet syncs"
        );
        file.store_lazily(11, 1_020, 50).unwrap();
        assert!(file.unsynced(), "20 ms after the last fdatasync: not yet");
        file.sync_if_older(1_049, 50).unwrap();
        assert!(file.unsynced());
        file.sync_if_older(1_050, 50).unwrap();
        assert!(!file.unsynced());
        sim.crash_with_seed(CrashMode::PowerLoss, 1);
        let bytes = sim.read_durable(&dir.join(RECOVERY_POINT_FILE)).unwrap();
        assert_eq!(newest_slot(&bytes).unwrap().1, 11);
    }
}
