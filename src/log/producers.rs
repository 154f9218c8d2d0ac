//! The log's side of idempotent producers: the state lives in the appender (checked before a
//! write, recorded after it), is snapshotted to `<offset>.snapshot` files, and is rebuilt on
//! open and after truncation from the newest usable snapshot plus a replay of the log after it.
//!
//! Invariant (INV-9, asserted by the crash tests): the producer state after any recovery equals
//! the state rebuilt by replaying the log from its start, plus state retained for producers
//! whose batches retention deleted (which only snapshots carry).
//!
//! Snapshots are taken at segment roll, every `snapshot_interval_bytes`, after retention or a
//! log-start move deletes segments (so producers whose batches are gone survive, RP PR 29623),
//! and at clean close; the two newest are kept. The roll and interval snapshots are encoded on
//! the append path and written by the background thread; a fence (a generation under a mutex)
//! keeps a queued one from landing after a truncation cut off the history it describes. A
//! snapshot is used only if its offset lies in `[log_start_offset, log_end_offset]` and it
//! decodes; otherwise the next older one (or a replay from the log start) is used.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{Appender, Log};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::format::batch::BatchView;
use crate::format::checkpoint::CheckpointKind;
use crate::format::file_name::{file_name, parse_file_name, FileKind};
use crate::format::snapshot;
use crate::format::txn_index::OpenTxns;
use crate::io::{write_atomic, OpenMode, Storage};
use crate::producer::{
    BatchMetadata, CompletedTxn, IssuedEpochs, Marker, ProducerConfig, ProducerEntry,
    ProducerStateManager, ISSUED_EPOCHS_KEPT,
};
use crate::segment::Segment;
use crate::types::{Offset, ProducerEpoch, ProducerId};

use super::checkpoints;

/// Name of the producer-id reservation file in a log directory (docs/format.md).
pub const PRODUCER_IDS_FILE: &str = "producer-ids";
/// The newest epoch issued per producer id (`IssuedEpochs`), durable before the epoch is
/// returned.
pub const PRODUCER_EPOCHS_FILE: &str = "producer-epochs";
/// Producer ids are allocated in persisted blocks of this size, so an id is never handed out
/// twice, even after a crash (the unused rest of a block is skipped).
pub const PRODUCER_ID_BLOCK: i64 = 1024;
/// How many snapshots are kept.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Producer-id allocation state (in the appender).
#[derive(Debug, Default)]
pub(super) struct ProducerIds {
    pub next: i64,
    /// Ids below this are reserved by the `producer-ids` checkpoint.
    pub reserved_to: i64,
}

pub(super) fn producer_config(cfg: &LogConfig) -> ProducerConfig {
    ProducerConfig {
        expiration_ms: cfg.producer_id_expiration_ms,
        max_producers: cfg.max_producers,
    }
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(super) fn snapshot_offsets(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>> {
    Ok(offsets_of(&list_dir(storage, dir)?, FileKind::Snapshot))
}

fn list_dir(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>> {
    storage
        .list(dir)
        .map_err(|e| Error::io("list log directory", dir, e))
}

/// The offsets in `names` of files of `kind`, ascending.
fn offsets_of(names: &[String], kind: FileKind) -> Vec<u64> {
    let mut offsets: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_file_name(n))
        .filter(|(_, k)| *k == kind)
        .map(|(o, _)| o.0)
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Whether a snapshot at `offset` can be the base of a rebuild of a log whose log start is
/// `log_start`, whose first segment starts at `first_base` and whose recovered end is
/// `log_end` (open, truncation and `verify` all ask this one function): INV-9, only inside
/// `[max(log start, first segment base), log end]`. Outside it a snapshot describes a history
/// this log does not hold (one cut off above the end, or one retention deleted below).
pub(crate) fn snapshot_usable_as_base(
    offset: u64,
    log_start: u64,
    first_base: u64,
    log_end: u64,
) -> bool {
    (log_start.max(first_base)..=log_end).contains(&offset)
}

/// What recovery found among the snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotLoad {
    /// Offset of the snapshot used, if any.
    pub used: Option<u64>,
    /// Snapshots skipped: outside `[log_start, log_end]`, damaged or of an unknown version.
    pub ignored: usize,
    /// Batches replayed after the snapshot.
    pub batches_replayed: u64,
}

fn read_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    offset: u64,
) -> Option<Vec<(ProducerId, ProducerEntry)>> {
    let path = dir.join(file_name(Offset(offset), FileKind::Snapshot));
    storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.read_all())
        .ok()
        .and_then(|bytes| snapshot::decode(&bytes).ok())
        .filter(|(o, _)| *o == offset)
        .map(|(_, entries)| entries)
}

/// The newest batch's last offset of an entry (`None` for an entry without batches).
fn newest_offset(entry: &ProducerEntry) -> Option<u64> {
    entry.batches().next_back().map(|b| b.last_offset)
}

/// What a rebuild of the producer table knows besides the segments and the snapshots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Known<'a> {
    /// The log start (bounds which snapshot may be a base).
    pub log_start: u64,
    /// The transactions open at the first segment's base that began below it (the first
    /// segment's transaction file, or its in-memory copy).
    pub open_at_first_base: &'a [(u64, ProducerId)],
    /// The table before a truncation (its producers below the log are still ours).
    pub retained: Option<&'a ProducerStateManager>,
}

/// Rebuilds the producer state as of `log_end`, from the newest usable snapshot in
/// `[log_start, log_end]` plus a replay of the segments after it (or of every segment
/// when none is usable). Producers the replay cannot see, because all their batches lie below
/// the first segment (retention deleted them), are taken from `retained` and from snapshots
/// above `log_end` (a history that power loss or truncation cut off, whose older part is still
/// ours). Returns the state and the offsets of those stale snapshots: the caller writes a
/// snapshot of the new state first and only then removes them (they must never be loaded once
/// the log grows past their offset again with different data, but until the new snapshot is
/// durable they are the only record of the retained producers).
pub(super) fn rebuild_state(
    storage: &dyn Storage,
    dir: &Path,
    cfg: ProducerConfig,
    segments: &[std::sync::Arc<Segment>],
    known: Known<'_>,
    report: &mut SnapshotLoad,
) -> Result<(ProducerStateManager, Vec<u64>)> {
    let Known {
        log_start,
        open_at_first_base,
        retained,
    } = known;
    let log_end = segments.last().map_or(0, |s| s.next_offset());
    let first_base = segments.first().map_or(log_end, |s| s.base_offset());
    let mut below = BelowLog::new(first_base, open_at_first_base);
    if let Some(old) = retained {
        // The table before a truncation saw everything up to the old log end, which is at or
        // above the first segment's base.
        for (p, e) in old.entries() {
            below.harvest(p, e, Source::SawTheBase);
        }
    }
    let mut state = None;
    let mut stale = Vec::new();
    for offset in snapshot_offsets(storage, dir)?.into_iter().rev() {
        if offset > log_end {
            report.ignored += 1;
            if let Some(entries) = read_snapshot(storage, dir, offset) {
                for (p, e) in &entries {
                    below.harvest(*p, e, Source::SawTheBase);
                }
            }
            stale.push(offset);
            continue;
        }
        // INV-9: a snapshot is a base only inside [log start, log end].
        let usable = snapshot_usable_as_base(offset, log_start, first_base, log_end);
        if !usable || state.is_some() {
            if !usable {
                // Older than the log: unusable as a base, but its windows are common history.
                report.ignored += 1;
                if let Some(entries) = read_snapshot(storage, dir, offset) {
                    let source = if offset >= first_base {
                        Source::SawTheBase
                    } else {
                        Source::OlderThanTheBase
                    };
                    for (p, e) in &entries {
                        below.harvest(*p, e, source);
                    }
                }
            }
            continue;
        }
        match read_snapshot(storage, dir, offset) {
            Some(entries) => {
                report.used = Some(offset);
                state = Some(ProducerStateManager::from_entries(cfg, entries, offset));
            }
            None => report.ignored += 1,
        }
    }
    let mut state = state.unwrap_or_else(|| {
        let mut s = ProducerStateManager::new(cfg);
        s.set_map_end_offset(first_base);
        s
    });
    report.batches_replayed = replay(&mut state, segments, log_end)?;
    Ok((below.merge_into(state), stale))
}

/// Removes the snapshots at `offsets` (stale: above the log end) and syncs the directory.
pub(super) fn remove_snapshots(storage: &dyn Storage, dir: &Path, offsets: &[u64]) -> Result<()> {
    for o in offsets {
        let p = dir.join(file_name(Offset(*o), FileKind::Snapshot));
        if storage.exists(&p) {
            storage
                .remove(&p)
                .map_err(|e| Error::io("remove stale snapshot", &p, e))?;
        }
    }
    if !offsets.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// What is known about producers' batches below the first segment (deleted by retention): the
/// replay cannot see them, but they are common history of every copy of the state that ever
/// held them, so they refill the front of the rebuilt dedup windows (INV-9's "state retained
/// beyond the log").
struct BelowLog {
    first_base: u64,
    /// Per producer: epoch, last append time, and its batches below `first_base` by offset.
    producers: std::collections::BTreeMap<ProducerId, Harvested>,
    /// The transactions open at the first segment's base that began below it, as that
    /// segment's transaction file says (`txns::first_open_at_base`): a second durable
    /// witness beside the snapshots, which rotate away.
    open_at_base: OpenTxns,
}

/// How much of a producer's history below the first segment a harvested copy of its state saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A copy as of an offset at or above the first segment's base (the table before a
    /// truncation, a snapshot cut off above the log end, or one between the base and the log
    /// start): it saw every batch the producer wrote below the base, so when its window holds
    /// a batch below the base, its newest one there is the producer's last one there.
    SawTheBase,
    /// A snapshot older than the first segment's base: the producer may have written batches
    /// after it and below the base that it never saw.
    OlderThanTheBase,
}

/// What `BelowLog` keeps of one producer.
struct Harvested {
    epoch: ProducerEpoch,
    last_ms: i64,
    batches: std::collections::BTreeMap<u64, BatchMetadata>,
    /// The newest coordinator epoch and marker offset seen (markers below the log).
    coordinator_epoch: i32,
    marker_offset: Option<u64>,
    /// The first offset of a transaction open in the harvested state that began below the
    /// log: nothing in the log can show it, and it is still open unless the log holds a
    /// marker of the producer (then the replayed entry says so).
    txn_first_offset: Option<u64>,
    /// The newest batch below the base (its last offset) that a `Source::SawTheBase` copy
    /// held: the producer wrote nothing after it below the base.
    confirmed_tail: Option<u64>,
}

impl BelowLog {
    fn new(first_base: u64, open_at_base: &[(u64, ProducerId)]) -> Self {
        BelowLog {
            first_base,
            producers: Default::default(),
            open_at_base: open_at_base
                .iter()
                .filter(|(first, _)| *first < first_base)
                .copied()
                .collect(),
        }
    }

    fn harvest(&mut self, pid: ProducerId, e: &ProducerEntry, source: Source) {
        let kept: Vec<BatchMetadata> = e
            .batches()
            .filter(|b| b.last_offset < self.first_base)
            .copied()
            .collect();
        // An entry is below the log only if nothing of it is in the log: not a batch, not its
        // latest marker (a marker's epoch bump clears the batches, not its place in the log).
        if kept.is_empty()
            && (newest_offset(e).is_some() || e.marker_offset.is_some_and(|m| m >= self.first_base))
        {
            return;
        }
        let last_ms = kept.last().map_or(e.last_append_ms, |b| b.append_time_ms);
        let fresh = || Harvested {
            epoch: e.epoch,
            last_ms,
            batches: Default::default(),
            coordinator_epoch: crate::producer::NO_COORDINATOR_EPOCH,
            marker_offset: None,
            txn_first_offset: None,
            confirmed_tail: None,
        };
        let slot = self.producers.entry(pid).or_insert_with(fresh);
        if e.epoch > slot.epoch {
            *slot = fresh();
        }
        // A marker below the log is history too: the coordinator epoch it carried still
        // fences an older coordinator.
        let marker_below = e.marker_offset.filter(|&m| m < self.first_base);
        if marker_below.is_some() {
            slot.coordinator_epoch = slot.coordinator_epoch.max(e.coordinator_epoch);
            slot.marker_offset = slot.marker_offset.max(marker_below);
        }
        if e.epoch == slot.epoch {
            if let Some(first) = e.txn_first_offset.filter(|&f| f < self.first_base) {
                slot.txn_first_offset = Some(slot.txn_first_offset.map_or(first, |t| t.min(first)));
            }
            slot.last_ms = slot.last_ms.max(last_ms);
            // A copy that saw the base and holds a batch below it holds every later one below
            // it too (a window is the newest batches in log order).
            if source == Source::SawTheBase && !e.tail_unverified {
                let newest = kept.last().map(|b| b.last_offset);
                slot.confirmed_tail = slot.confirmed_tail.max(newest);
            }
            slot.batches
                .extend(kept.into_iter().map(|b| (b.first_offset, b)));
        }
    }

    fn merge_into(mut self, state: ProducerStateManager) -> ProducerStateManager {
        if self.producers.is_empty() && self.open_at_base.is_empty() {
            return state;
        }
        let cfg = state.config();
        let map_end = state.map_end_offset();
        let mut merged: std::collections::BTreeMap<ProducerId, ProducerEntry> =
            state.entries().map(|(p, e)| (p, e.clone())).collect();
        for (pid, h) in std::mem::take(&mut self.producers) {
            let (epoch, last_ms) = (h.epoch, h.last_ms);
            let older: Vec<BatchMetadata> = h.batches.into_values().collect();
            // A harvested window with nothing in the log to chain into ends where its sources
            // saw it end: unverified unless a source that saw the base confirms its tail.
            let unverified =
                |older: &[BatchMetadata]| older.last().map(|b| b.last_offset) != h.confirmed_tail;
            let entry = match merged.get(&pid) {
                None => ProducerEntry::new(epoch, tail5(&older), last_ms, h.txn_first_offset).map(
                    |mut e| {
                        e.coordinator_epoch = h.coordinator_epoch;
                        e.marker_offset = h.marker_offset;
                        e.tail_unverified = unverified(&older);
                        e
                    },
                ),
                Some(current) if current.epoch == epoch => {
                    let first = current
                        .batches()
                        .next()
                        .map_or(u64::MAX, |b| b.first_offset);
                    let older: Vec<BatchMetadata> = older
                        .into_iter()
                        .filter(|b| b.last_offset < first)
                        .collect();
                    let next = current.batches().next();
                    let mut all = chained_prefix(&older, next);
                    all.extend(current.batches().copied());
                    let tail_unverified = match next {
                        Some(_) => current.tail_unverified,
                        None => current.tail_unverified || unverified(&all),
                    };
                    // A transaction the replay found open began where the harvested state says,
                    // if that is below the log (the replay sees only its part in the log).
                    let txn = current
                        .txn_first_offset
                        .map(|f| h.txn_first_offset.map_or(f, |t| t.min(f)));
                    ProducerEntry::new(epoch, tail5(&all), current.last_append_ms, txn).map(
                        |mut e| {
                            e.coordinator_epoch =
                                current.coordinator_epoch.max(h.coordinator_epoch);
                            e.marker_offset = current.marker_offset.max(h.marker_offset);
                            e.tail_unverified = tail_unverified;
                            e
                        },
                    )
                }
                Some(_) => None,
            };
            if let Some(entry) = entry {
                merged.insert(pid, entry);
            }
        }
        for (pid, entry) in merged.iter_mut() {
            if let Some(first) = self.began_below(*pid, entry) {
                entry.txn_first_offset = Some(first);
            }
        }
        ProducerStateManager::from_entries(cfg, merged, map_end)
    }

    /// Where `entry`'s open transaction began, when it began below the first segment but the
    /// replay saw only its part inside the log: the first segment's file says the producer had
    /// a transaction open at the base, and no marker of the producer since the base closed it
    /// (a marker is the only thing that ends a transaction; `ProducerStateManager::record`
    /// keeps it open across an epoch change), so the transaction the replay found open is that
    /// one. Without this, the last stable offset would rise above the log start to the first
    /// offset of its part in the log.
    fn began_below(&self, pid: ProducerId, entry: &ProducerEntry) -> Option<u64> {
        let open = entry.txn_first_offset?;
        let closed_since_base = entry.marker_offset.is_some_and(|m| m >= self.first_base);
        if open < self.first_base || closed_since_base {
            return None;
        }
        self.open_at_base
            .iter()
            .find(|(_, p)| *p == pid)
            .map(|(first, _)| *first)
    }
}

/// The newest batches of `older` that chain into `next` by sequence (each batch's last
/// sequence followed by the next one's first), oldest first. A harvested window comes from a
/// snapshot that may be older than the first segment: batches the producer wrote between that
/// snapshot and the first segment are in neither, and a window with such a hole would claim
/// that nothing was written in it (a retry of a batch from the hole would then be refused as
/// out of order instead of being recognised as a duplicate sequence). With no `next` (the
/// replay saw nothing of the producer's epoch) every harvested batch is kept.
fn chained_prefix(older: &[BatchMetadata], next: Option<&BatchMetadata>) -> Vec<BatchMetadata> {
    let Some(next) = next else {
        return older.to_vec();
    };
    let mut want = next.first_seq;
    let mut start = older.len();
    for (i, b) in older.iter().enumerate().rev() {
        if crate::types::increment_sequence(b.last_seq, 1) != want {
            break;
        }
        want = b.first_seq;
        start = i;
    }
    older.get(start..).unwrap_or_default().to_vec()
}

fn tail5(batches: &[BatchMetadata]) -> &[BatchMetadata] {
    batches
        .get(
            batches
                .len()
                .saturating_sub(crate::producer::BATCHES_RETAINED)..,
        )
        .unwrap_or(&[])
}

/// Replays every batch in `[state.map_end_offset(), to)` into `state` (the replication path:
/// no checks). Batches are checksum-verified on the way.
pub(super) fn replay(
    state: &mut ProducerStateManager,
    segments: &[std::sync::Arc<Segment>],
    to: u64,
) -> Result<u64> {
    let from = state.map_end_offset();
    let mut count = 0;
    for seg in segments
        .iter()
        .filter(|s| s.next_offset() > from && s.base_offset() < to)
    {
        let bytes = seg.map().published_bytes();
        let mut pos = seg.index()?.position_for(seg.relative(from)) as usize;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            let (view, _) = BatchView::parse(rest).map_err(|reason| Error::Corrupt {
                path: seg.path().to_path_buf(),
                position: pos as u64,
                reason,
            })?;
            let h = *view.header();
            pos += view.len();
            if h.base_offset >= to {
                break;
            }
            if h.last_offset() < from {
                continue;
            }
            let marker = marker_at(seg, pos - view.len(), &view)?;
            apply_batch(state, &h, marker.as_ref());
            count += 1;
        }
    }
    state.set_map_end_offset(state.map_end_offset().max(to));
    Ok(count)
}

/// Records one batch that is in the log: the one place a batch changes producer state, on the
/// append path, when replicating, when replaying at open or after truncation, and when the
/// transaction pass rebuilds a segment's aborted transactions. `marker` is the batch's marker
/// if it is a control batch (`Marker::of`). Returns the transaction a marker completed.
///
/// Public for tools that replay a stopped log directory (`oncelog verify` compares producer
/// snapshots with a replay): replaying through this function, not a copy of it, keeps their
/// producer state the log's.
pub fn apply_batch(
    state: &mut ProducerStateManager,
    h: &crate::format::batch::BatchHeader,
    marker: Option<&Marker>,
) -> Option<CompletedTxn> {
    let completed = match marker {
        Some(m) => state.record_marker(m, h.base_offset, h.append_timestamp),
        None if h.is_idempotent() => {
            let meta = BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: h.last_sequence(),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                append_time_ms: h.append_timestamp,
            };
            state.record(h.producer_id, h.producer_epoch, meta);
            if h.is_transactional() {
                state.record_txn_data(h.producer_id, h.base_offset);
            }
            None
        }
        None => None,
    };
    state.set_map_end_offset(h.next_offset());
    completed
}

/// The marker of a batch read from `seg` at byte `pos` (`None` for a data batch); a control
/// batch that is not a marker is corruption there (the log writes no other control batch).
pub(super) fn marker_at(seg: &Segment, pos: usize, view: &BatchView<'_>) -> Result<Option<Marker>> {
    Marker::of(view).map_err(|reason| Error::Corrupt {
        path: seg.path().to_path_buf(),
        position: pos as u64,
        reason,
    })
}

/// Writes a snapshot of `state` at its map end offset (atomically) and keeps the newest two.
pub(super) fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    state: &ProducerStateManager,
) -> Result<()> {
    let offset = state.map_end_offset();
    store_snapshot(storage, dir, offset, &snapshot::encode(offset, state))
}

/// A snapshot encoded on the append path (under the appender lock) and written by the
/// background thread, unless a fence made it obsolete first.
#[derive(Debug)]
pub(super) struct QueuedSnapshot {
    /// The snapshot fence's generation when it was encoded.
    pub generation: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Writes an encoded snapshot at `offset` (atomically) and keeps the newest two at or below it,
/// and the newest at or below the first segment's base.
fn store_snapshot(storage: &dyn Storage, dir: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    let _span = tracing::debug_span!("producer_snapshot", offset, bytes = bytes.len()).entered();
    let path = dir.join(file_name(Offset(offset), FileKind::Snapshot));
    write_atomic(storage, &path, bytes)
        .map_err(|e| Error::io("write producer snapshot", &path, e))?;
    // Keep the newest SNAPSHOTS_KEPT at or below this one; snapshots above it (stale, after
    // truncation or power loss) are the caller's to remove once this one is durable. Keep too
    // the newest at or below the first segment's base (normally the roll's snapshot at that
    // base): it is the producers' state where the log begins, which a truncation back to the
    // log start needs, and no other file knows the batches deleted below (finding 16).
    let names = list_dir(storage, dir)?;
    let offsets: Vec<u64> = offsets_of(&names, FileKind::Snapshot)
        .into_iter()
        .filter(|&o| o <= offset)
        .collect();
    let first_base = offsets_of(&names, FileKind::Log).first().copied();
    let at_first_base = first_base.and_then(|b| offsets.iter().rev().find(|&&o| o <= b).copied());
    for old in offsets
        .iter()
        .take(offsets.len().saturating_sub(SNAPSHOTS_KEPT))
        .filter(|&&o| Some(o) != at_first_base)
    {
        let p = dir.join(file_name(Offset(*old), FileKind::Snapshot));
        storage
            .remove(&p)
            .map_err(|e| Error::io("remove old snapshot", &p, e))?;
    }
    tracing::debug!("producer snapshot written");
    Ok(())
}

/// Reads the producer-id checkpoint (0 if missing).
pub(super) fn load_producer_ids(
    storage: &dyn Storage,
    dir: &Path,
    state: &ProducerStateManager,
) -> Result<ProducerIds> {
    let path = dir.join(PRODUCER_IDS_FILE);
    let reserved = checkpoints::read_values(storage, &path, CheckpointKind::ProducerIds)?
        .and_then(|v| v.first().copied())
        .unwrap_or(0) as i64;
    let seen = state.max_producer_id().map_or(0, |p| p.0 + 1);
    // Everything below the reserved mark may have been handed out before a crash: skip it.
    let next = reserved.max(seen);
    Ok(ProducerIds {
        next,
        reserved_to: next,
    })
}

/// Reads the issued-epochs checkpoint (an empty table if missing). A damaged file is an error:
/// without it, an epoch handed out before could be handed out again.
pub(super) fn load_issued_epochs(storage: &dyn Storage, dir: &Path) -> Result<IssuedEpochs> {
    let path = dir.join(PRODUCER_EPOCHS_FILE);
    match checkpoints::read_values(storage, &path, CheckpointKind::ProducerEpochs)? {
        None => Ok(IssuedEpochs::new(ISSUED_EPOCHS_KEPT)),
        Some(values) => IssuedEpochs::from_values(&values, ISSUED_EPOCHS_KEPT)
            .map_err(|reason| Error::CorruptFile { path, reason }),
    }
}

/// Who allocated the producer id whose epoch is bumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdIssuer {
    /// This log (`Log::init_producer`): an id it never handed out is refused, and an exhausted
    /// epoch is answered with a fresh id.
    ThisLog,
    /// A cluster controller: the log cannot tell which ids exist, and cannot allocate one.
    Elsewhere,
}

impl Log {
    /// Allocates a fresh producer id (never reused, even across crashes) with epoch 0.
    pub fn init_producer(&self) -> Result<(ProducerId, ProducerEpoch)> {
        self.check_writable()?;
        let mut a = self.inner.appender.lock();
        Ok((self.allocate_producer_id(&mut a)?, 0))
    }

    /// The next producer id; a new block is reserved durably before its first id is returned.
    fn allocate_producer_id(&self, a: &mut Appender) -> Result<ProducerId> {
        if a.ids.next >= a.ids.reserved_to {
            let reserved = a.ids.next + PRODUCER_ID_BLOCK;
            let path = self.inner.dir.join(PRODUCER_IDS_FILE);
            let storage = self.inner.config.storage.as_ref();
            checkpoints::write_values(
                storage,
                &path,
                CheckpointKind::ProducerIds,
                &[reserved as u64],
            )?;
            a.ids.reserved_to = reserved;
        }
        let pid = ProducerId(a.ids.next);
        a.ids.next += 1;
        Ok(pid)
    }

    /// Re-initialises a producer id this log handed out: returns an epoch strictly above every
    /// epoch returned for it before (by `init_producer` and earlier calls, across clean close,
    /// crash and power loss) and above the epoch its batches carry. The epoch is durable in the
    /// `producer-epochs` checkpoint before it is returned, and from then on a batch of an older
    /// incarnation is `ProducerFenced`, even before the new one has appended.
    ///
    /// - An id this log never handed out (or a negative one): `UnknownProducerId` (with
    ///   `first_sequence: None`). Ids of a block a crash skipped count as handed out.
    /// - Epochs exhausted (the next would exceed `i16::MAX`): a fresh producer id with epoch 0,
    ///   as Kafka does; the old id stays fenced at its last epoch.
    /// - The checkpoint cannot be written: the error, and nothing is returned or changed.
    pub fn reinit_producer(&self, pid: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.reinit(pid, IdIssuer::ThisLog)
    }

    /// [`Log::reinit_producer`] for an id a cluster controller allocated (the partition leader
    /// answering an epoch bump): any non-negative id is accepted, and exhausted epochs are
    /// `ProducerFenced` (the client must ask the controller for a new id).
    pub fn reinit_external_producer(&self, pid: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.reinit(pid, IdIssuer::Elsewhere)
    }

    fn reinit(&self, pid: ProducerId, issuer: IdIssuer) -> Result<(ProducerId, ProducerEpoch)> {
        self.check_writable()?;
        let mut a = self.inner.appender.lock();
        let seen = a.producers.get(pid).map(|e| e.epoch);
        let handed_out = match issuer {
            IdIssuer::ThisLog => {
                pid.0 < a.ids.next || seen.is_some() || a.epochs.issued(pid).is_some()
            }
            IdIssuer::Elsewhere => true,
        };
        if !pid.is_some() || !handed_out {
            return Err(Error::UnknownProducerId {
                producer_id: pid,
                first_sequence: None,
            });
        }
        let Some(epoch) = a.epochs.next_epoch(pid, seen) else {
            return match issuer {
                IdIssuer::ThisLog => Ok((self.allocate_producer_id(&mut a)?, 0)),
                IdIssuer::Elsewhere => Err(Error::ProducerFenced {
                    producer_id: pid,
                    epoch: ProducerEpoch::MAX,
                    current_epoch: ProducerEpoch::MAX,
                }),
            };
        };
        let issued = a.epochs.with_issued(pid, epoch);
        let path = self.inner.dir.join(PRODUCER_EPOCHS_FILE);
        checkpoints::write_values(
            self.inner.config.storage.as_ref(),
            &path,
            CheckpointKind::ProducerEpochs,
            &issued.to_values(),
        )?;
        a.epochs = issued;
        Ok((pid, epoch))
    }

    /// A copy of the producer table (for tests, `oncelog verify` and diagnostics).
    pub fn producer_state(&self) -> ProducerStateManager {
        self.inner.appender.lock().producers.clone()
    }

    /// What open did with the producer snapshots.
    pub fn snapshot_load(&self) -> SnapshotLoad {
        self.inner.snapshot_load
    }

    /// Writes a producer snapshot at the log end now.
    pub fn take_producer_snapshot(&self) -> Result<()> {
        self.check_writable()?;
        let mut a = self.inner.appender.lock();
        self.snapshot_locked(&mut a)
    }

    /// Writes a snapshot at the log end now, on this thread. Caller holds the appender lock.
    pub(super) fn snapshot_locked(&self, a: &mut Appender) -> Result<()> {
        let _fence = self.fence_snapshots();
        self.snapshot_fenced(a)
    }

    /// `snapshot_locked` for a caller that already holds the snapshot fence.
    fn snapshot_fenced(&self, a: &mut Appender) -> Result<()> {
        let leo = self.inner.log_end.load(Ordering::Acquire);
        debug_assert_eq!(a.producers.map_end_offset(), leo);
        a.bytes_since_snapshot = 0;
        write_snapshot(
            self.inner.config.storage.as_ref(),
            &self.inner.dir,
            &a.producers,
        )
    }

    /// The snapshots of the append path (at roll and every `snapshot_interval_bytes`): encoded
    /// here, under the appender lock, and written (tmp, fdatasync, rename, dir fsync) by the
    /// background thread, so the appender never waits for a device flush. Without a background
    /// thread it is written inline. A failure costs only replay time at the next open; it is
    /// counted and reported once (`Log::best_effort_failures`).
    pub(super) fn snapshot_in_background(&self, a: &mut Appender) {
        let running = self
            .inner
            .background
            .lock()
            .as_ref()
            .is_some_and(|b| b.is_running());
        if !running {
            if let Err(e) = self.snapshot_locked(a) {
                self.snapshot_failed(&e);
            }
            return;
        }
        let offset = a.producers.map_end_offset();
        debug_assert_eq!(offset, self.inner.log_end.load(Ordering::Acquire));
        a.bytes_since_snapshot = 0;
        // Encoded before the background mutex is taken (1M producers take ~0.6 s). The
        // generation is read without the fence's lock: the background thread holds that across
        // a snapshot write's fdatasyncs, and every raise happens under the appender lock we hold.
        let queued = QueuedSnapshot {
            generation: self.inner.snapshot_generation.load(Ordering::Acquire),
            offset,
            bytes: snapshot::encode(offset, &a.producers),
        };
        match self.inner.background.lock().as_ref() {
            Some(bg) if bg.is_running() => bg.send(super::flush::Job::Snapshot(queued)),
            // Stopped meanwhile (close): close writes its own snapshot at the log end.
            _ => {}
        }
    }

    /// Waits for a background snapshot write in flight and makes every queued one obsolete;
    /// while the guard lives none is written. Truncation holds it from before it touches a
    /// segment until the stale snapshots above the new end are gone, so a snapshot of the
    /// history it cut off can never land afterwards. Lock order: appender, then this.
    pub(super) fn fence_snapshots(&self) -> parking_lot::MutexGuard<'_, u64> {
        // Raised only under the appender lock (`snapshot_generation` relies on it).
        debug_assert!(self.inner.appender.is_locked());
        let mut generation = self.inner.snapshot_fence.lock();
        *generation += 1;
        self.inner
            .snapshot_generation
            .store(*generation, Ordering::Release);
        generation
    }

    /// The background thread's side of [`Log::snapshot_in_background`]: writes the snapshot
    /// unless a fence was raised since it was encoded.
    pub(super) fn write_queued_snapshot(&self, queued: QueuedSnapshot) {
        let generation = self.inner.snapshot_fence.lock();
        if *generation != queued.generation || self.inner.poisoned.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = store_snapshot(
            self.inner.config.storage.as_ref(),
            &self.inner.dir,
            queued.offset,
            &queued.bytes,
        ) {
            self.snapshot_failed(&e);
        }
    }

    /// A producer snapshot of the append path failed: counted and reported once
    /// (`log::best_effort`). Its temporary is gone (`io::AtomicReplace`); the next open
    /// replays from an older snapshot.
    fn snapshot_failed(&self, e: &Error) {
        self.inner.spares.snapshot_failures.failed(
            "writing a producer snapshot",
            e,
            "appends continue; the next open replays more batches",
        );
    }

    /// Rebuilds the producer state as of the log end after a truncation, keeping producers
    /// whose batches all lie below the log (they cannot be affected by the truncation). The
    /// caller holds the snapshot fence (taken before the truncation began).
    pub(super) fn rebuild_producers(&self, a: &mut Appender) -> Result<()> {
        let storage = self.inner.config.storage.as_ref();
        let mut report = SnapshotLoad::default();
        let cfg = producer_config(&self.inner.config);
        let segments = self.segments();
        let open_at_first_base = segments
            .first()
            .map(|s| s.txns().open_at_base.clone())
            .unwrap_or_default();
        let (state, stale) = rebuild_state(
            storage,
            &self.inner.dir,
            cfg,
            &segments,
            Known {
                log_start: self.inner.log_start.load(Ordering::Acquire),
                open_at_first_base: &open_at_first_base,
                retained: Some(&a.producers),
            },
            &mut report,
        )?;
        a.producers = state;
        // A snapshot at the new end keeps the retained producers across a restart; only then
        // may the stale snapshots above the end go.
        self.snapshot_fenced(a)?;
        remove_snapshots(storage, &self.inner.dir, &stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::BatchBuilder;

    fn batch(n: u8) -> crate::format::batch::RecordBatch {
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(&[n; 100]));
        b.build().unwrap()
    }

    fn meta(first_seq: i32, last_seq: i32, first_offset: u64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + (last_seq - first_seq) as u64,
            append_time_ms: 0,
        }
    }

    /// A harvested window joins the replayed one only where the sequences chain: the batches
    /// before a hole (written between an old snapshot and the first segment, known to neither)
    /// are dropped, and the chain crosses the sequence wrap.
    #[test]
    fn only_harvested_batches_that_chain_into_the_replay_are_kept() {
        let older = [meta(10, 12, 40), meta(13, 17, 52), meta(18, 18, 70)];
        let next = meta(19, 20, 90);
        assert_eq!(chained_prefix(&older, Some(&next)), older.to_vec());
        // Sequences 19-20 (offset 77) are in neither: nothing harvested may join.
        let after_hole = meta(21, 24, 88);
        assert_eq!(chained_prefix(&older, Some(&after_hole)), vec![]);
        // A hole further back drops only what lies before it.
        let holed = [meta(1, 2, 5), meta(13, 17, 52), meta(18, 18, 70)];
        assert_eq!(chained_prefix(&holed, Some(&next)), holed[1..].to_vec());
        let wrap = [meta(i32::MAX - 1, i32::MAX, 8)];
        assert_eq!(chained_prefix(&wrap, Some(&meta(0, 3, 10))), wrap.to_vec());
        assert_eq!(chained_prefix(&older, None), older.to_vec());
    }

    fn queued(log: &Log, generation: u64) -> QueuedSnapshot {
        let a = log.inner.appender.lock();
        let offset = a.producers.map_end_offset();
        QueuedSnapshot {
            generation,
            offset,
            bytes: snapshot::encode(offset, &a.producers),
        }
    }

    fn snapshots(log: &Log) -> Vec<u64> {
        snapshot_offsets(log.inner.config.storage.as_ref(), log.dir()).unwrap()
    }

    /// A snapshot queued for the background thread is written only if no fence (truncation,
    /// retention, an explicit snapshot) was raised after it was encoded: a snapshot at offset
    /// 3 queued before a truncation to 1 must never land, or it would be loaded as a base once
    /// the log grows past 3 again with other batches.
    #[test]
    fn a_fence_makes_queued_snapshots_obsolete() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            background_thread: false,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).unwrap();
        for n in 0..3 {
            log.append(&batch(n)).unwrap();
        }
        let generation = *log.inner.snapshot_fence.lock();
        let stale = queued(&log, generation);
        assert_eq!(stale.offset, 3);
        log.truncate_to(Offset(1)).unwrap();
        let after_truncation = snapshots(&log);
        assert!(after_truncation.iter().all(|&o| o <= 1));
        log.write_queued_snapshot(stale);
        assert_eq!(
            snapshots(&log),
            after_truncation,
            "an obsolete snapshot landed"
        );

        // Unfenced, the same path writes.
        log.append(&batch(9)).unwrap();
        let generation = *log.inner.snapshot_fence.lock();
        log.write_queued_snapshot(queued(&log, generation));
        assert_eq!(snapshots(&log).last(), Some(&2));
        log.close().unwrap();
    }
}
