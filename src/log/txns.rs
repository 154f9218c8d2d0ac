//! Transactions in the log: the per-segment aborted-transaction index (kept with each segment,
//! written to `.txnindex` at seal and clean close, rebuilt from the batches at open when a file
//! is missing, damaged or bound to other bytes), the last stable offset, and `read_committed`
//! fetches (docs/transactions.md).
//!
//! The rules themselves (what opens and completes a transaction, the LSO, an aborted entry's
//! fields) are the producer table's (`producer::txn`); every batch reaches them through
//! `producers::apply_batch`, here too when a segment's index is rebuilt.
//!
//! Invariants:
//! - a segment's `open_at_base` equals its predecessor's `open_at_end` (checked at open: a file
//!   that disagrees with its predecessor is rebuilt);
//! - the transactions open at the log end, as the open pass derives them from the segments,
//!   equal the producer table's open transactions (asserted at open, paired with the producer
//!   state's own rebuild);
//! - `TxnView::first_open` is the producer table's earliest open transaction (written under
//!   the appender lock after every transactional batch, truncation and open).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::producers::apply_batch;
use super::read::Fetch;
use super::{Appender, Log};
use crate::error::{Error, Result};
use crate::format::batch::{BatchView, Record, RecordIter};
use crate::format::control::MarkerKind;
use crate::format::file_name::FileKind;
use crate::format::txn_index::{self, OpenTxns, SegmentTxnFile};
use crate::io::{OpenMode, Storage};
use crate::producer::{
    AbortedTxn, CompletedTxn, Marker, ProducerConfig, ProducerEntry, ProducerStateManager,
    StableOffset,
};
use crate::segment::{segment_path, Segment, SegmentTxns};
use crate::types::{Offset, ProducerId};

/// What `read_committed` readers may see: the earliest open transaction and the completed
/// transactions whose marker is not yet below the high-water mark.
#[derive(Debug, Default)]
pub(super) struct TxnView {
    first_open: Option<u64>,
    stable: StableOffset,
    /// The highest HW the completed transactions were pruned at.
    hw_seen: u64,
}

impl TxnView {
    /// The view of a producer table just rebuilt at open (no completed transaction is
    /// remembered: after a restart every marker in the log counts as below the HW, as Kafka's
    /// snapshots do not carry them either; a replica's HW is at most its log end).
    pub(super) fn new(producers: &ProducerStateManager) -> TxnView {
        let mut view = TxnView::default();
        view.follow(producers);
        view
    }

    /// Copies the producer table's earliest open transaction (the one writer of `first_open`).
    fn follow(&mut self, producers: &ProducerStateManager) {
        self.first_open = producers.first_open_txn().map(|(o, _)| o);
    }
}

/// Which records a fetch returns (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every batch below the high-water mark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only batches below the last stable offset, with the aborted transactions that overlap
    /// them, so a reader can drop aborted records ([`IsolatedFetch::committed_records`]).
    ReadCommitted,
}

/// A fetch at an isolation level.
#[derive(Debug, Clone, Default)]
pub struct IsolatedFetch {
    /// The batches returned.
    pub fetch: Fetch,
    /// The high watermark the read was bounded by, capped at the log end.
    pub high_watermark: Offset,
    /// The last stable offset at that high watermark: the first offset of the oldest open
    /// transaction, or the high watermark when none is open.
    pub last_stable_offset: Offset,
    /// `ReadCommitted`: the aborted transactions with a record in the returned batches,
    /// ascending by marker offset. Empty for `ReadUncommitted`.
    pub aborted: Vec<AbortedTxn>,
}

/// The transactions open in `producers`, ascending by first offset.
pub(super) fn open_txns(producers: &ProducerStateManager) -> OpenTxns {
    producers.open_txns_by_offset().iter().copied().collect()
}

/// The producer table the open pass replays a segment into: no expiry, no cap.
const REPLAY_CONFIG: ProducerConfig = ProducerConfig {
    expiration_ms: u64::MAX,
    max_producers: usize::MAX / 2,
};

impl Log {
    /// After a transactional batch or a marker is in the active segment: an aborted
    /// transaction's index entry, and the view readers compute the LSO from.
    pub(super) fn on_txn_batch(&self, a: &mut Appender, completed: Option<CompletedTxn>) {
        let mut view = self.inner.txn_view.lock();
        if let Some(c) = completed {
            if c.aborted {
                let entry = a.producers.aborted_entry(&c);
                let mut t = a.active.txns();
                debug_assert!(t
                    .aborted
                    .last()
                    .is_none_or(|p| p.last_offset < entry.last_offset));
                t.aborted.push(entry);
            }
            // Every marker is at or past HW 0; the HW prunes it once it passes the marker.
            view.stable.on_completed(c, 0);
        }
        view.follow(&a.producers);
    }

    /// After the producer table was rebuilt (truncation): the view follows it, and completed
    /// transactions past the new end are forgotten (their markers are gone).
    pub(super) fn reset_txn_view(&self, a: &Appender, end: u64) {
        let mut view = self.inner.txn_view.lock();
        view.stable.truncate(end);
        view.hw_seen = view.hw_seen.min(end);
        view.follow(&a.producers);
    }

    /// The last stable offset for a high-water mark `hw`: `min(first unstable offset, hw)`,
    /// never below the log start (docs/transactions.md). For a log without replication use
    /// [`Log::last_stable_offset`].
    pub fn last_stable_offset_at(&self, hw: Offset) -> Offset {
        let start = self.log_start_offset().0;
        let hw = hw.0.min(self.log_end_offset().0).max(start);
        let mut view = self.inner.txn_view.lock();
        if hw > view.hw_seen {
            view.stable.on_high_watermark(hw);
            view.hw_seen = hw;
        }
        let lso = view
            .stable
            .last_stable_offset_given(view.first_open, start, hw);
        self.inner.metrics.last_stable_offset.set(lso as f64);
        Offset(lso)
    }

    /// The last stable offset of a log without replication, whose high-water mark is its log
    /// end (docs/transactions.md says why the end and not the durable point).
    pub fn last_stable_offset(&self) -> Offset {
        self.last_stable_offset_at(self.log_end_offset())
    }

    /// [`Log::read_isolated`] on a log without replication (HW = the log end).
    pub fn read_with(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<IsolatedFetch> {
        self.read_isolated(offset, max_bytes, self.log_end_offset(), isolation)
    }

    /// Reads whole batches from `offset`, below `hw` (`ReadUncommitted`) or below the last
    /// stable offset at `hw` (`ReadCommitted`, with the aborted transactions that overlap the
    /// returned batches).
    pub fn read_isolated(
        &self,
        offset: Offset,
        max_bytes: usize,
        hw: Offset,
        isolation: Isolation,
    ) -> Result<IsolatedFetch> {
        let lso = self.last_stable_offset_at(hw);
        let hw = Offset(hw.0.min(self.log_end_offset().0));
        let bound = match isolation {
            Isolation::ReadUncommitted => hw,
            Isolation::ReadCommitted => lso,
        };
        let fetch = self.read_bounded(offset, max_bytes, bound)?;
        let aborted = match (isolation, fetch.end_offset()) {
            (Isolation::ReadCommitted, Some(to)) => self.aborted_txns(offset.0, to),
            _ => Vec::new(),
        };
        Ok(IsolatedFetch {
            fetch,
            high_watermark: hw,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// The aborted transactions with a record in `[from, to)`: every entry whose marker is at
    /// or after `from` and whose first offset is below `to`, from the segment holding `from`
    /// on, until an entry's last stable offset reaches `to`.
    pub fn aborted_txns(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        let segments = self.segments();
        let i = segments
            .partition_point(|s| s.base_offset() <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        for seg in segments.iter().skip(i) {
            if seg.next_offset() <= from && !seg.is_empty() {
                continue;
            }
            if seg.collect_aborted(from, to, &mut out) {
                break;
            }
        }
        out
    }
}

/// Reads every segment's `.txnindex` that decodes (before open removes the active segment's).
pub(super) fn read_files(
    storage: &dyn Storage,
    dir: &Path,
    bases: &[u64],
) -> HashMap<u64, SegmentTxnFile> {
    let mut out = HashMap::new();
    for &base in bases {
        if let TxnFile::Decoded(f) = TxnFile::read(storage, dir, base) {
            out.insert(base, f);
        }
    }
    out
}

/// A segment's `.txnindex` as found on disk (open, `oncelog dump` and `oncelog verify` read it
/// through [`TxnFile::read`]).
#[derive(Debug)]
pub enum TxnFile {
    /// The segment has no `.txnindex` file.
    Missing,
    /// Present but not a valid file for this segment (read error, decode error, other base).
    Damaged(String),
    /// Decoded and bound to this segment.
    Decoded(SegmentTxnFile),
}

impl TxnFile {
    /// Reads and decodes the `.txnindex` of the segment at `base` in `dir` (never panics on its
    /// bytes). A file that vanishes meanwhile is missing.
    pub fn read(storage: &dyn Storage, dir: &Path, base: u64) -> TxnFile {
        let path = segment_path(dir, base, FileKind::TxnIndex);
        let bytes = match storage
            .open(&path, OpenMode::Read)
            .and_then(|f| f.read_all())
        {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return TxnFile::Missing,
            Err(e) => return TxnFile::Damaged(format!("cannot read: {e}")),
        };
        match txn_index::decode(&bytes) {
            Err(e) => TxnFile::Damaged(format!("does not decode: {e}")),
            Ok(d) if d.base_offset != base => TxnFile::Damaged(format!(
                "holds base offset {}, not its name's",
                d.base_offset
            )),
            Ok(d) => TxnFile::Decoded(d),
        }
    }
}

/// What the open pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnIndexLoad {
    /// Segments whose `.txnindex` was used as written.
    pub loaded: usize,
    /// Segments whose index was rebuilt from their batches.
    pub rebuilt: usize,
    /// Transactions that began below the log on which the index and the producer table
    /// disagreed (after power loss): the table's answer was taken.
    pub reconciled: usize,
    /// A `.txnindex` that decoded and was bound to its segment disagreed with the batches:
    /// every segment's index was rebuilt from its batches instead.
    pub distrusted: bool,
}

/// The open pass: gives every segment its transactions, from its file when the file is bound
/// to the segment as it is (same length and end offset) and continues its predecessor,
/// otherwise rebuilt from the segment's batches with its predecessor's open transactions at
/// the base. The first segment, without a usable file, starts from the producer table's
/// transactions that began below it; a transaction that was open at its base and ended inside
/// it is then unknown, and an ABORT for a producer not seen before in the segment gets a
/// conservative entry (docs/transactions.md, "Rebuilding the index"). Rebuilt files of sealed
/// segments are written back unless `write_back` is false. The active segment ends open.
///
/// `witness`: the log-start checkpoint's transactions open at the first segment's base (when
/// it was written for that base): a first segment without a usable file starts from it and
/// the producer table's transactions that began below it, still conservatively (`known` false).
pub(super) fn resolve(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[Arc<Segment>],
    files: HashMap<u64, SegmentTxnFile>,
    producers: &ProducerStateManager,
    witness: Option<&OpenTxns>,
    write_back: bool,
) -> Result<TxnIndexLoad> {
    let state = open_txns(producers);
    let first_base = segments.first().map_or(0, |s| s.base_offset());
    let inside = |v: &OpenTxns| -> OpenTxns {
        v.iter()
            .filter(|(o, _)| *o >= first_base)
            .copied()
            .collect()
    };
    let (mut load, mut at_end) = walk(storage, dir, segments, files, &state, witness, write_back)?;
    if inside(&at_end) != inside(&state) {
        // A file that decoded and was bound to its segment disagrees with the batches (written
        // by something else, or damaged and resealed): rebuild every segment from its batches.
        let (again, end) = walk(
            storage,
            dir,
            segments,
            HashMap::new(),
            &state,
            witness,
            write_back,
        )?;
        load = TxnIndexLoad {
            distrusted: true,
            ..again
        };
        at_end = end;
    }
    // Paired with the producer table's rebuild: both derivations of the batches agree on every
    // transaction that began inside the log.
    assert_eq!(
        inside(&at_end),
        inside(&state),
        "the transaction index and the producer state disagree on the open transactions"
    );
    // A transaction that began below the log is known only from what survived of the history
    // retention deleted (the first segment's file, producer snapshots); power loss can leave
    // the two disagreeing. The producer table decides (it fences and it sets the LSO), and the
    // segments follow it, so the next open meets the same answer (docs/transactions.md).
    if at_end != state {
        for seg in segments {
            let mut t = seg.txns();
            follow_below(&mut t.open_at_base, &at_end, &state, first_base);
            if let Some(end) = t.open_at_end.as_mut() {
                follow_below(end, &at_end, &state, first_base);
            }
        }
        load.reconciled = at_end
            .iter()
            .filter(|x| !state.contains(x))
            .chain(state.iter().filter(|x| !at_end.contains(x)))
            .count();
    }
    Ok(load)
}

/// The transactions open at the first segment's base that began below it: from the
/// log-start checkpoint's witness when it was written for this base (`witness`, see
/// [`checkpoint_witness`]), else from the first
/// segment's transaction file when it is bound to the segment (as `walk` accepts it; a log
/// whose checkpoint predates the witness); empty otherwise. The producer table's rebuild
/// takes them as a witness beside the snapshots (`producers::rebuild_state`).
pub(super) fn first_open_at_base(
    segments: &[Arc<Segment>],
    files: &HashMap<u64, SegmentTxnFile>,
    witness: Option<&OpenTxns>,
) -> OpenTxns {
    let Some(first) = segments.first() else {
        return Vec::new();
    };
    if let Some(open) = witness {
        return open.clone();
    }
    files
        .get(&first.base_offset())
        .filter(|f| bound_to(f, first))
        .map(|f| f.open_at_base.clone())
        .unwrap_or_default()
}

/// The log-start checkpoint's transactions open at the first segment's base (`log::log_start`,
/// written before any segment below it is deleted), when it was written for that base.
pub(super) fn checkpoint_witness(
    segments: &[Arc<Segment>],
    checkpoint: Option<&super::log_start::FirstOpen>,
) -> Option<OpenTxns> {
    let first = segments.first()?.base_offset();
    checkpoint
        .filter(|(base, _)| *base == first)
        .map(|(_, open)| open.clone())
}

/// Whether a decoded transaction file describes `seg`'s bytes as they are now.
fn bound_to(f: &SegmentTxnFile, seg: &Segment) -> bool {
    f.log_length == seg.map().published() as u64 && f.next_offset == seg.next_offset()
}

/// One pass of [`resolve`] over the segments: returns what it did and the transactions open
/// at the log end. The first segment's seed when its file is not usable: `witness` and the
/// transactions of `state` (the producer table's open ones) that began below it.
fn walk(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[Arc<Segment>],
    mut files: HashMap<u64, SegmentTxnFile>,
    state: &OpenTxns,
    witness: Option<&OpenTxns>,
    write_back: bool,
) -> Result<(TxnIndexLoad, OpenTxns)> {
    let mut load = TxnIndexLoad::default();
    let mut prev_end: Option<OpenTxns> = None;
    let last = segments.len().saturating_sub(1);
    let mut wrote = false;
    for (i, seg) in segments.iter().enumerate() {
        let file = files
            .remove(&seg.base_offset())
            .filter(|f| bound_to(f, seg) && prev_end.as_ref().is_none_or(|p| *p == f.open_at_base));
        let rebuilt = file.is_none();
        let mut txns = match file {
            Some(f) => {
                load.loaded += 1;
                SegmentTxns {
                    open_at_base: f.open_at_base,
                    aborted: f.aborted,
                    open_at_end: Some(f.open_at_end),
                }
            }
            None => {
                load.rebuilt += 1;
                let (seed, known) = match prev_end.take() {
                    Some(p) => (p, true),
                    None => {
                        // The first segment: the log-start witness and the producer table's
                        // transactions that began below it (both witnesses of what was open at
                        // its base), but never trusted as complete: a missing transaction would
                        // give an aborted entry a last stable offset above the truth, which
                        // ends `aborted_txns`' scan early and shows an aborted record.
                        let mut seed: OpenTxns = state
                            .iter()
                            .filter(|(o, _)| *o < seg.base_offset())
                            .chain(witness.into_iter().flatten())
                            .copied()
                            .collect();
                        // One transaction per producer, from the lowest first offset named.
                        seed.sort_unstable();
                        let mut named = HashSet::new();
                        seed.retain(|(_, p)| named.insert(*p));
                        (seed, false)
                    }
                };
                rebuild_segment(seg, seed, known)?
            }
        };
        prev_end = txns.open_at_end.clone();
        if i == last {
            txns.open_at_end = None;
        }
        *seg.txns() = txns;
        if rebuilt && i != last && write_back {
            seg.write_txn_file(storage)?;
            wrote = true;
        }
    }
    if wrote {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok((load, prev_end.unwrap_or_default()))
}

/// Replaces, in `v`, the transactions that began below `first_base` as `walk` had them by those
/// `state` has.
fn follow_below(v: &mut OpenTxns, walk: &OpenTxns, state: &OpenTxns, first_base: u64) {
    v.retain(|x| !(x.0 < first_base && walk.contains(x) && !state.contains(x)));
    for x in state.iter().filter(|x| x.0 < first_base) {
        if !v.contains(x) {
            v.push(*x);
        }
    }
    v.sort_unstable();
}

/// A segment's transactions from its batches, with `seed` open at its base. `known`: the seed
/// is every transaction open at the base (otherwise some may be missing, see [`resolve`]).
pub(super) fn rebuild_segment(seg: &Segment, seed: OpenTxns, known: bool) -> Result<SegmentTxns> {
    rebuild_segment_txns(
        seg.path(),
        seg.base_offset(),
        seg.map().published_bytes(),
        seed,
        known,
    )
}

/// The transactions of a segment as the log rebuilds them at open when its `.txnindex` is
/// missing, damaged or stale (the open pass's own code, exposed for tools that read a stopped
/// log directory, such as `oncelog verify` and `oncelog dump`): `bytes` are the segment's
/// whole batches from byte 0 (`path` and `base` only name it in errors and bound the
/// entries), `seed` the transactions open at its base, ascending by first offset (its
/// predecessor's `open_at_end`). `known`: `seed` is every transaction open at the base; when
/// it is not (the first segment, seeded from elsewhere), the aborted entries are conservative:
/// their last stable offset is at most the base, and an ABORT of a producer not seen in the
/// segment gets an entry from the base (docs/transactions.md). The result's `open_at_end` is
/// always `Some`. A batch that does not parse, or a control batch that is not a marker, is
/// `Error::Corrupt` at its byte position; nothing panics.
pub fn rebuild_segment_txns(
    path: &Path,
    base: u64,
    bytes: &[u8],
    seed: OpenTxns,
    known: bool,
) -> Result<SegmentTxns> {
    let corrupt = |position: usize, reason| Error::Corrupt {
        path: path.to_path_buf(),
        position: position as u64,
        reason,
    };
    let mut entries = Vec::with_capacity(seed.len());
    for &(first, pid) in &seed {
        let e = ProducerEntry::new(0, &[], 0, Some(first)).ok_or_else(|| {
            corrupt(
                0,
                crate::format::DecodeError::BadField {
                    field: "open transaction first offset",
                    value: first as i64,
                },
            )
        })?;
        entries.push((pid, e));
    }
    let mut psm = ProducerStateManager::from_entries(REPLAY_CONFIG, entries, base);
    let mut seen: HashSet<ProducerId> = seed.iter().map(|&(_, p)| p).collect();
    let mut aborted = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        let (view, _) = BatchView::parse(rest).map_err(|reason| corrupt(pos, reason))?;
        let h = *view.header();
        let marker = Marker::of(&view).map_err(|reason| corrupt(pos, reason))?;
        pos += view.len();
        if let Some(m) = &marker {
            if !known && m.kind == MarkerKind::Abort && !seen.contains(&m.producer_id) {
                // Open at the base or empty: either way no record of it lies in the segment
                // before the marker, and nothing below the base can be read.
                aborted.push(AbortedTxn {
                    producer_id: m.producer_id,
                    first_offset: base,
                    last_offset: h.base_offset,
                    last_stable_offset: base,
                });
            }
        }
        if h.is_idempotent() {
            seen.insert(h.producer_id);
        }
        if let Some(c) = apply_batch(&mut psm, &h, marker.as_ref()).filter(|c| c.aborted) {
            let mut e = psm.aborted_entry(&c);
            if !known {
                // Transactions open before the base may be missing from the table: an LSO
                // at the base never stops a reader's scan early.
                e.last_stable_offset = e.last_stable_offset.min(base);
            }
            aborted.push(e);
        }
    }
    Ok(SegmentTxns {
        open_at_base: seed,
        aborted,
        open_at_end: Some(open_txns(&psm)),
    })
}

/// A committed record: its offset and the record, borrowed from the fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedRecord<'a> {
    /// The record's offset in the log.
    pub offset: u64,
    /// The record (key, value, headers, timestamp), borrowed from the fetch's bytes.
    pub record: Record<'a>,
}

impl IsolatedFetch {
    /// The records a `read_committed` reader must see, in offset order: control batches are
    /// skipped, and so is every batch of an aborted transaction (a producer's transactional
    /// batches from an aborted transaction's first offset until its ABORT marker). Batches are
    /// checksum-verified as they are read. On a `ReadUncommitted` fetch it yields every data
    /// record (no aborted list to apply).
    pub fn committed_records(&self) -> impl Iterator<Item = Result<CommittedRecord<'_>>> + '_ {
        let mut pending = self.aborted.clone();
        pending.sort_by_key(|a| a.first_offset);
        let mut pending = pending.into_iter().peekable();
        // The producers whose aborted transaction has begun and whose ABORT is not yet read:
        // a few at most, a vector beats hashing once per batch.
        let mut aborting: Vec<ProducerId> = Vec::new();
        let mut batches = self.fetch.batches();
        let mut current: Option<(u64, RecordIter<'_>)> = None;
        std::iter::from_fn(move || loop {
            if let Some((base, records)) = current.as_mut() {
                let base = *base;
                match records.next() {
                    Some(Ok(record)) => {
                        return Some(Ok(CommittedRecord {
                            offset: base + record.offset_delta as u64,
                            record,
                        }))
                    }
                    Some(Err(reason)) => {
                        current = None;
                        return Some(Err(Error::Corrupt {
                            path: Default::default(),
                            position: base,
                            reason,
                        }));
                    }
                    None => current = None,
                }
            }
            let view = match batches.next()? {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            let h = view.header();
            while let Some(a) = pending.next_if(|a| a.first_offset <= h.last_offset()) {
                if !aborting.contains(&a.producer_id) {
                    aborting.push(a.producer_id);
                }
            }
            if h.is_control() {
                if let Ok(Some(m)) = Marker::of(&view) {
                    if m.kind == MarkerKind::Abort {
                        aborting.retain(|&p| p != m.producer_id);
                    }
                }
                continue;
            }
            if h.is_transactional() && aborting.contains(&h.producer_id) {
                continue;
            }
            current = Some((view.base_offset(), view.records()));
        })
    }
}
