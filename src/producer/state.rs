//! The producer-state machine: dedup window, epoch fencing and producer lifetime.
//!
//! Pure: no I/O and no clock. Time arrives as arguments and is always the *log's append clock*
//! (the `append_timestamp` stamped on each batch), never a client timestamp, so replaying the same
//! log on any replica or in any recovery makes identical decisions. `docs/producer-idempotence.md`
//! explains the rules and where they depart from Kafka.
//!
//! # Invariants
//!
//! Checked in full by [`ProducerStateManager::check_invariants`] (O(n), for tests); each mutator
//! debug-asserts the part it touched.
//!
//! - **I1 ids.** Every producer id in the table is `>= 0`.
//! - **I2 window.** An entry retains at most [`BATCHES_RETAINED`] batches, oldest first, all of its
//!   current epoch; every batch has `0 <= first_seq`, `0 <= last_seq`,
//!   `first_offset <= last_offset <= i64::MAX`, and offsets strictly increase from one batch to the
//!   next (`older.last_offset < newer.first_offset`): they are in log order.
//! - **I3 epoch.** `epoch >= 0`; `txn_first_offset`, when set, is `<= i64::MAX`.
//! - **I4 age index.** `idle_by_age` holds exactly `(last_append_ms, pid)` for every producer
//!   without an open transaction. Expiry and cap eviction only ever remove producers through it,
//!   so a producer with an open transaction is never expired or evicted.
//! - **I5 cap.** `len() <= max_producers + (producers with an open transaction)`.
//! - **I7 open transactions.** `open_by_offset` holds exactly `(txn_first_offset, pid)` for every
//!   producer with an open transaction (`txn.rs`).
//! - **I6 determinism.** The table is a function of the sequence of `record` / `expire` calls
//!   (no hash-order iteration, no wall clock): two managers fed the same calls are `==`, and
//!   interleaving extra `expire(t)` calls with non-decreasing `t` changes nothing a later `record`
//!   or `check` observes (both apply expiry themselves).
#![deny(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::Error;
use crate::types::{increment_sequence, seq_distance, ProducerEpoch, ProducerId, Sequence};

/// How many of a producer's most recent batches are retained for dedup (Kafka's
/// `NUM_BATCHES_TO_RETAIN`; clients keep at most 5 requests in flight).
pub const BATCHES_RETAINED: usize = 5;

/// A range counts as "behind" the window only within this distance behind the next expected
/// sequence; further back on the ring it is read as ahead (see [`ProducerEntry::behind_window`]).
const HALF_RING: i64 = 1 << 30;

/// Limits on the producer table. Validated by the log's configuration, asserted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerConfig {
    /// A producer with no open transaction and no batch for this long (log clock) is forgotten
    /// (Kafka's `producer.id.expiration.ms`, default one day).
    pub expiration_ms: u64,
    /// The most producers kept; recording a new one beyond it evicts the least recently active
    /// idle producer. Must be at least 1.
    pub max_producers: usize,
}

/// One appended batch of a producer: its sequence range, offset range and log append time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BatchMetadata {
    /// Sequence of the batch's first record.
    pub first_seq: Sequence,
    /// Sequence of the batch's last record.
    pub last_seq: Sequence,
    /// Offset of the batch's first record.
    pub first_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The log's clock when the batch was appended (the batch's `append_timestamp`).
    pub append_time_ms: i64,
}

impl BatchMetadata {
    fn check(&self) -> Result<(), &'static str> {
        if self.first_seq < 0 || self.last_seq < 0 {
            return Err("negative sequence");
        }
        if self.first_offset > self.last_offset {
            return Err("first offset above last offset");
        }
        if self.last_offset > i64::MAX as u64 {
            return Err("offset above i64::MAX");
        }
        Ok(())
    }
}

/// `ProducerEntry::coordinator_epoch` of a producer that no marker has named.
pub const NO_COORDINATOR_EPOCH: i32 = -1;

/// What the table knows about one producer id.
#[derive(Clone)]
pub struct ProducerEntry {
    /// The producer's current epoch: batches with an older one are fenced.
    pub epoch: ProducerEpoch,
    /// Invariant: `batches[..len]` are the retained batches, oldest first (I2). Slots at `len..`
    /// are ignored by `==` and `Debug`.
    batches: [BatchMetadata; BATCHES_RETAINED],
    len: u8,
    /// Log clock of the producer's latest recorded batch; expiry and eviction age run from here.
    pub last_append_ms: i64,
    /// First offset of the producer's open transaction (`txn.rs`), persisted in snapshots. A
    /// producer with an open transaction never expires nor is evicted.
    pub txn_first_offset: Option<u64>,
    /// The coordinator epoch of the producer's latest marker ([`NO_COORDINATOR_EPOCH`]: none),
    /// persisted in snapshots (version 2).
    pub coordinator_epoch: i32,
    /// The offset of the producer's latest marker, persisted in snapshots (version 2). A
    /// marker that bumps the epoch clears the retained batches; this keeps the entry's place in
    /// the log, so a rebuild after truncation or power loss can tell an entry whose latest
    /// marker was cut (rebuilt from the log) from one whose history retention deleted (kept).
    pub marker_offset: Option<u64>,
    /// The window may end before batches the log no longer holds, persisted in snapshots
    /// (version 3). Set only by a rebuild whose window for this producer came from history
    /// older than the first segment (a snapshot from before it) with nothing after it to
    /// chain into: the producer may have written batches between that history and the log
    /// that no source still holds. A retry of such a batch would look like the next in-order
    /// batch, so a same-epoch batch that is not a retained duplicate (or certainly behind the
    /// window) is refused `UnknownProducerId` instead of appended: it may be a write the log
    /// already holds. Cleared by any batch recorded for the producer (a new epoch starting at
    /// sequence 0, or a replicated batch) and by a marker that bumps the epoch.
    pub tail_unverified: bool,
}

impl ProducerEntry {
    /// An entry from its parts (used when loading a snapshot). `None` if the parts break an
    /// invariant (more than 5 batches, batches out of log order, negative epoch or sequence).
    pub fn new(
        epoch: ProducerEpoch,
        batches: &[BatchMetadata],
        last_append_ms: i64,
        txn_first_offset: Option<u64>,
    ) -> Option<ProducerEntry> {
        if batches.len() > BATCHES_RETAINED {
            return None;
        }
        let mut entry = ProducerEntry::empty(epoch, last_append_ms);
        entry.txn_first_offset = txn_first_offset;
        for b in batches {
            entry.push_batch(*b);
        }
        entry.validate().ok().map(|()| entry)
    }

    fn empty(epoch: ProducerEpoch, last_append_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: [BatchMetadata::default(); BATCHES_RETAINED],
            len: 0,
            last_append_ms,
            txn_first_offset: None,
            coordinator_epoch: NO_COORDINATOR_EPOCH,
            marker_offset: None,
            tail_unverified: false,
        }
    }

    fn retained(&self) -> &[BatchMetadata] {
        self.batches.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The retained batches, oldest first (at most [`BATCHES_RETAINED`]).
    pub fn batches(&self) -> impl DoubleEndedIterator<Item = &BatchMetadata> + ExactSizeIterator {
        self.retained().iter()
    }

    /// The last sequence of the newest retained batch.
    pub fn last_seq(&self) -> Option<Sequence> {
        self.retained().last().map(|b| b.last_seq)
    }

    /// The first sequence the next in-order batch must carry (0 when nothing is retained).
    pub fn next_seq(&self) -> Sequence {
        self.last_seq().map_or(0, |s| increment_sequence(s, 1))
    }

    /// Appends a batch, dropping the oldest when the window is full.
    fn push_batch(&mut self, meta: BatchMetadata) {
        if usize::from(self.len) == BATCHES_RETAINED {
            self.batches.copy_within(1.., 0);
            if let Some(last) = self.batches.last_mut() {
                *last = meta;
            }
        } else if let Some(slot) = self.batches.get_mut(usize::from(self.len)) {
            *slot = meta;
            self.len += 1;
        }
    }

    fn clear_batches(&mut self) {
        self.batches = [BatchMetadata::default(); BATCHES_RETAINED];
        self.len = 0;
    }

    /// True when the range `[first_seq, last_seq]` (ring values) was certainly appended in this
    /// epoch and lies entirely before the oldest retained batch: the only ranges answered
    /// `DuplicateSequence`. Ring arithmetic throughout, with the next expected sequence `E`,
    /// the oldest retained first sequence `O` and `span = (E - O) mod 2^31` (the sequences the
    /// window covers):
    ///
    /// - the range is read as lying `d_first = (E - first) mod 2^31` .. `d_last = (E - last)
    ///   mod 2^31` behind `E`, and only if `d_first <= 2^30`: a range further back is just as
    ///   well a batch *ahead* of `E` on the next lap (a pipelined batch that overtook the
    ///   expected one), which was not appended;
    /// - it ends before the window and does not straddle `E`: `span < d_last <= d_first`;
    /// - it was certainly appended: an epoch's sequences start at 0 and are contiguous, so
    ///   at least the `O` sequences of the oldest batch's lap before it were written, whatever
    ///   the window's size or how many laps the epoch made: `d_first <= span + O`.
    ///
    /// A range written on an earlier lap, or before a window that is not known to start the
    /// lap, is answered `OutOfOrderSequence` instead (safe: the retained window is what a correct
    /// client can still be waiting for).
    pub fn behind_window(&self, first_seq: Sequence, last_seq: Sequence) -> bool {
        let Some(oldest) = self.retained().first() else {
            return false;
        };
        let expected = self.next_seq();
        let span = seq_distance(oldest.first_seq, expected);
        let d_first = seq_distance(first_seq, expected);
        let d_last = seq_distance(last_seq, expected);
        span < d_last
            && d_last <= d_first
            && d_first <= HALF_RING
            && d_first <= span + i64::from(oldest.first_seq)
    }

    /// Invariants I2 and I3 for this entry.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.epoch < 0 {
            return Err("negative producer epoch");
        }
        if self.txn_first_offset.is_some_and(|o| o > i64::MAX as u64) {
            return Err("transaction first offset above i64::MAX");
        }
        if usize::from(self.len) > BATCHES_RETAINED {
            return Err("more than 5 retained batches");
        }
        let mut prev: Option<&BatchMetadata> = None;
        for b in self.retained() {
            b.check()?;
            if prev.is_some_and(|p| p.last_offset >= b.first_offset) {
                return Err("retained batches out of log order");
            }
            prev = Some(b);
        }
        Ok(())
    }
}

impl PartialEq for ProducerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.retained() == other.retained()
            && self.last_append_ms == other.last_append_ms
            && self.txn_first_offset == other.txn_first_offset
            && self.coordinator_epoch == other.coordinator_epoch
            && self.marker_offset == other.marker_offset
            && self.tail_unverified == other.tail_unverified
    }
}

impl Eq for ProducerEntry {}

impl fmt::Debug for ProducerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerEntry")
            .field("epoch", &self.epoch)
            .field("batches", &self.retained())
            .field("last_append_ms", &self.last_append_ms)
            .field("txn_first_offset", &self.txn_first_offset)
            .field("coordinator_epoch", &self.coordinator_epoch)
            .field("marker_offset", &self.marker_offset)
            .field("tail_unverified", &self.tail_unverified)
            .finish()
    }
}

/// The decision for a client batch that passed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Write the batch, then [`ProducerStateManager::record`] it.
    Append,
    /// A retry of a retained batch: write nothing and answer with the original offsets and time.
    Duplicate(BatchMetadata),
}

/// The producer table of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStateManager {
    cfg: ProducerConfig,
    /// Invariant: I1, and every entry satisfies [`ProducerEntry::validate`].
    producers: BTreeMap<ProducerId, ProducerEntry>,
    /// Invariant I4: `{(e.last_append_ms, pid) | e.txn_first_offset.is_none()}`. Ordered by age,
    /// so expiry and eviction take the smallest elements: O(log n) per producer removed.
    idle_by_age: BTreeSet<(i64, ProducerId)>,
    /// Invariant I7: `{(e.txn_first_offset, pid) | e.txn_first_offset.is_some()}`: the open
    /// transactions by first offset, for the last stable offset (`txn.rs`).
    open_by_offset: BTreeSet<(u64, ProducerId)>,
    /// Next offset after the last batch applied to the table; maintained by the caller.
    map_end_offset: u64,
}

impl ProducerStateManager {
    /// An empty table with these limits.
    ///
    /// # Panics
    ///
    /// If `cfg.max_producers` is 0 (a programmer error: [`LogConfig::validate`](crate::LogConfig::validate) refuses it).
    pub fn new(cfg: ProducerConfig) -> Self {
        assert!(cfg.max_producers >= 1, "max_producers must be at least 1");
        ProducerStateManager {
            cfg,
            producers: BTreeMap::new(),
            idle_by_age: BTreeSet::new(),
            open_by_offset: BTreeSet::new(),
            map_end_offset: 0,
        }
    }

    /// Rebuilds a table from entries (e.g. a decoded snapshot). Applies the cap (a smaller
    /// `max_producers` than when the snapshot was taken evicts deterministically) but not expiry:
    /// call [`expire`](Self::expire) with the log clock afterwards if wanted.
    ///
    /// Panics if an id is negative or repeated or an entry breaks an invariant: the snapshot
    /// decoder guarantees neither happens, so it is a programmer error.
    pub fn from_entries(
        cfg: ProducerConfig,
        entries: impl IntoIterator<Item = (ProducerId, ProducerEntry)>,
        map_end_offset: u64,
    ) -> Self {
        let mut state = ProducerStateManager::new(cfg);
        state.map_end_offset = map_end_offset;
        for (pid, entry) in entries {
            assert!(pid.is_some(), "negative producer id {}", pid.0);
            if let Err(why) = entry.validate() {
                panic!("producer {}: {why}", pid.0);
            }
            match entry.txn_first_offset {
                None => state.idle_by_age.insert((entry.last_append_ms, pid)),
                Some(first) => state.open_by_offset.insert((first, pid)),
            };
            let previous = state.producers.insert(pid, entry);
            assert!(previous.is_none(), "producer {} appears twice", pid.0);
        }
        state.enforce_cap(None);
        state
    }

    /// The limits the table was made with.
    pub fn config(&self) -> ProducerConfig {
        self.cfg
    }

    fn is_expired(&self, entry: &ProducerEntry, now_ms: i64) -> bool {
        entry.txn_first_offset.is_none() && self.idle_expired(entry.last_append_ms, now_ms)
    }

    fn idle_expired(&self, last_append_ms: i64, now_ms: i64) -> bool {
        i128::from(now_ms) - i128::from(last_append_ms) >= i128::from(self.cfg.expiration_ms)
    }

    /// Client-path validation, run BEFORE anything is written; does not mutate. `now_ms` is the
    /// log clock value that will be stamped as the batch's append time (and passed to `record`).
    ///
    /// Rules, in order (see `docs/producer-idempotence.md`):
    /// 1. known producer, same epoch, exact `(first_seq, last_seq)` of a retained batch →
    ///    `Duplicate(original)`;
    /// 2. lower epoch → `ProducerFenced`;
    /// 3. higher epoch → `first_seq` must be 0, else `OutOfOrderSequence` (expected 0);
    /// 4. same epoch, `first_seq == last_seq + 1` (wrapping after `i32::MAX`) → `Append`, unless
    ///    the window's tail is unverified ([`ProducerEntry::tail_unverified`]): then
    ///    `UnknownProducerId` (after rule 5), since the batch may be a retry of one the log
    ///    holds but no longer remembers;
    /// 5. same epoch and the range certainly appended before the oldest retained batch (ring
    ///    arithmetic, [`ProducerEntry::behind_window`]) → `DuplicateSequence` (written long ago;
    ///    nothing to append);
    /// 6. otherwise → `OutOfOrderSequence` (expected `last_seq + 1`);
    /// 7. unknown or expired producer: `first_seq == 0` → `Append`, else `UnknownProducerId`.
    pub fn check(
        &self,
        pid: ProducerId,
        epoch: ProducerEpoch,
        first_seq: Sequence,
        last_seq: Sequence,
        now_ms: i64,
    ) -> Result<CheckResult, Error> {
        // The batch codec rejects these; reaching here with them is a caller bug.
        debug_assert!(pid.is_some(), "check of a non-idempotent batch");
        debug_assert!(epoch >= 0, "negative producer epoch");
        debug_assert!(first_seq >= 0 && last_seq >= 0, "negative sequence");

        let live = self
            .producers
            .get(&pid)
            .filter(|e| !self.is_expired(e, now_ms));
        let Some(entry) = live else {
            // Rule 7.
            return if first_seq == 0 {
                Ok(CheckResult::Append)
            } else {
                Err(Error::UnknownProducerId {
                    producer_id: pid,
                    first_sequence: Some(first_seq),
                })
            };
        };
        // Rule 1.
        if epoch == entry.epoch {
            let original = entry
                .batches()
                .rev()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq);
            if let Some(b) = original {
                return Ok(CheckResult::Duplicate(*b));
            }
        }
        // Rule 2.
        if epoch < entry.epoch {
            return Err(Error::ProducerFenced {
                producer_id: pid,
                epoch,
                current_epoch: entry.epoch,
            });
        }
        let out_of_order = |expected| Error::OutOfOrderSequence {
            producer_id: pid,
            epoch,
            first_sequence: first_seq,
            expected_sequence: expected,
        };
        // Rule 3.
        if epoch > entry.epoch {
            return if first_seq == 0 {
                Ok(CheckResult::Append)
            } else {
                Err(out_of_order(0))
            };
        }
        // Rule 4.
        let expected = entry.next_seq();
        if first_seq == expected && !entry.tail_unverified {
            return Ok(CheckResult::Append);
        }
        // Rule 5 (ring arithmetic, any window size: `ProducerEntry::behind_window`).
        if entry.behind_window(first_seq, last_seq) {
            return Err(Error::DuplicateSequence {
                producer_id: pid,
                epoch,
                first_sequence: first_seq,
            });
        }
        // Rule 4, an unverified tail: what follows the window is unknown.
        if entry.tail_unverified {
            return Err(Error::UnknownProducerId {
                producer_id: pid,
                first_sequence: Some(first_seq),
            });
        }
        // Rule 6.
        Err(out_of_order(expected))
    }

    /// Records a batch that is in the log: after a successful client append, or when replaying
    /// or replicating (no checks). Applies expiry at `meta.append_time_ms` first; then a different
    /// epoch clears the retained batches, the batch is pushed (keeping the newest 5),
    /// `last_append_ms = meta.append_time_ms`, and a new producer beyond the cap evicts the least
    /// recently active idle producer.
    ///
    /// Batches must arrive in log order (strictly increasing offsets per producer).
    pub fn record(&mut self, pid: ProducerId, epoch: ProducerEpoch, meta: BatchMetadata) {
        debug_assert!(pid.is_some(), "record of a non-idempotent batch");
        debug_assert!(epoch >= 0, "negative producer epoch");
        debug_assert_eq!(meta.check(), Ok(()), "bad batch metadata {meta:?}");

        self.expire(meta.append_time_ms);
        if let Some(entry) = self.producers.get_mut(&pid) {
            // The age key moves only when the millisecond does: at high rates most appends of
            // a producer share one, and skip both B-tree operations.
            let moved = entry.last_append_ms != meta.append_time_ms;
            if moved && entry.txn_first_offset.is_none() {
                let removed = self.idle_by_age.remove(&(entry.last_append_ms, pid));
                debug_assert!(removed, "I4: producer {} missing from the age index", pid.0);
                self.idle_by_age.insert((meta.append_time_ms, pid));
            }
            if entry.epoch != epoch {
                entry.epoch = epoch;
                entry.clear_batches();
            }
            // A batch after the window: the window's tail is the log's again.
            entry.tail_unverified = false;
            entry.push_batch(meta);
            entry.last_append_ms = meta.append_time_ms;
            debug_assert_eq!(entry.validate(), Ok(()), "producer {}", pid.0);
        } else {
            let mut entry = ProducerEntry::empty(epoch, meta.append_time_ms);
            entry.push_batch(meta);
            debug_assert_eq!(entry.validate(), Ok(()), "producer {}", pid.0);
            self.producers.insert(pid, entry);
            self.idle_by_age.insert((meta.append_time_ms, pid));
            self.enforce_cap(Some(pid));
        }
        debug_assert_eq!(
            self.producers.len(),
            self.idle_by_age.len() + self.open_txns()
        );
    }

    fn open_txns(&self) -> usize {
        self.producers.len() - self.idle_by_age.len()
    }

    /// Opens `pid`'s transaction at `first_offset` unless one is open (I4, I7 kept). The
    /// producer must be in the table (its batch was just recorded).
    pub(super) fn open_txn(&mut self, pid: ProducerId, first_offset: u64) {
        let Some(entry) = self.producers.get_mut(&pid) else {
            debug_assert!(false, "open_txn for unknown producer {}", pid.0);
            return;
        };
        if entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            let removed = self.idle_by_age.remove(&(entry.last_append_ms, pid));
            debug_assert!(removed, "I4: producer {} missing from the age index", pid.0);
            self.open_by_offset.insert((first_offset, pid));
        }
    }

    /// Closes `pid`'s open transaction, if any (I4, I7 kept).
    pub(super) fn close_txn(&mut self, pid: ProducerId) {
        if let Some(entry) = self.producers.get_mut(&pid) {
            if let Some(first) = entry.txn_first_offset.take() {
                self.open_by_offset.remove(&(first, pid));
                self.idle_by_age.insert((entry.last_append_ms, pid));
            }
        }
    }

    /// A marker's epochs: a new producer epoch clears the retained batches (the next batch must
    /// start at sequence 0); an unknown producer is added. The caller closed its transaction.
    pub(super) fn set_marker_epochs(
        &mut self,
        pid: ProducerId,
        epoch: ProducerEpoch,
        coordinator_epoch: i32,
        offset: u64,
        append_time_ms: i64,
    ) {
        self.expire(append_time_ms);
        match self.producers.get_mut(&pid) {
            Some(entry) => {
                debug_assert!(entry.txn_first_offset.is_none());
                if entry.last_append_ms != append_time_ms {
                    self.idle_by_age.remove(&(entry.last_append_ms, pid));
                    self.idle_by_age.insert((append_time_ms, pid));
                    entry.last_append_ms = append_time_ms;
                }
                if entry.epoch != epoch {
                    entry.epoch = epoch;
                    entry.clear_batches();
                    entry.tail_unverified = false;
                }
                entry.coordinator_epoch = coordinator_epoch;
                entry.marker_offset = Some(offset);
                // Its transaction closed: it counts against the cap again (I5). It is the one
                // producer not to evict now: its new epoch fences the transaction's zombies.
                self.enforce_cap(Some(pid));
            }
            None => {
                let mut entry = ProducerEntry::empty(epoch, append_time_ms);
                entry.coordinator_epoch = coordinator_epoch;
                entry.marker_offset = Some(offset);
                self.producers.insert(pid, entry);
                self.idle_by_age.insert((append_time_ms, pid));
                self.enforce_cap(Some(pid));
            }
        }
    }

    /// The open transactions by first offset (I7).
    pub(super) fn open_by_offset(&self) -> &BTreeSet<(u64, ProducerId)> {
        &self.open_by_offset
    }

    /// Evicts the least recently active idle producers (smallest `(last_append_ms, pid)`), never
    /// `protect`, until the table fits the cap or no idle producer is left.
    fn enforce_cap(&mut self, protect: Option<ProducerId>) {
        while self.producers.len() > self.cfg.max_producers {
            let victim = self
                .idle_by_age
                .iter()
                .find(|(_, p)| Some(*p) != protect)
                .copied();
            let Some(key) = victim else { break };
            self.idle_by_age.remove(&key);
            self.producers.remove(&key.1);
        }
    }

    /// Drops producers idle for `>= expiration_ms` at `now_ms` (log clock) that have no open
    /// transaction. O(log n) per producer dropped.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some(&(last_append_ms, pid)) = self.idle_by_age.first() {
            if !self.idle_expired(last_append_ms, now_ms) {
                break;
            }
            self.idle_by_age.pop_first();
            self.producers.remove(&pid);
        }
    }

    /// The entry of `pid`, even if it would count as expired at the current time.
    pub fn get(&self, pid: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&pid)
    }

    /// Producers in the table.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether the table holds no producer.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// All entries, ordered by producer id.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (ProducerId, &ProducerEntry)> {
        self.producers.iter().map(|(pid, e)| (*pid, e))
    }

    /// The offset up to which the log has been applied (next offset after the last recorded
    /// batch); set by the caller.
    pub fn map_end_offset(&self) -> u64 {
        self.map_end_offset
    }

    /// Sets the offset after the last batch applied to the table (the caller maintains it).
    pub fn set_map_end_offset(&mut self, offset: u64) {
        self.map_end_offset = offset;
    }

    /// The highest producer id currently in the table. Expired and evicted ids are forgotten,
    /// so an id allocator must keep its own high-water mark; this is a sanity floor for it.
    pub fn max_producer_id(&self) -> Option<ProducerId> {
        self.producers.last_key_value().map(|(pid, _)| *pid)
    }

    /// Asserts every invariant of the module doc (I1-I5). O(n); for tests.
    pub fn check_invariants(&self) {
        let mut open_txns = 0;
        for (pid, entry) in &self.producers {
            assert!(pid.is_some(), "I1: negative producer id {}", pid.0);
            if let Err(why) = entry.validate() {
                panic!("I2/I3: producer {}: {why}", pid.0);
            }
            match entry.txn_first_offset {
                None => assert!(
                    self.idle_by_age.contains(&(entry.last_append_ms, *pid)),
                    "I4: producer {} missing from the age index",
                    pid.0
                ),
                Some(first) => {
                    open_txns += 1;
                    assert!(
                        self.open_by_offset.contains(&(first, *pid)),
                        "I7: producer {}'s open transaction missing from the offset index",
                        pid.0
                    );
                }
            }
        }
        assert_eq!(
            self.open_by_offset.len(),
            open_txns,
            "I7: the open-transaction index holds stale keys"
        );
        assert_eq!(
            self.idle_by_age.len() + open_txns,
            self.producers.len(),
            "I4: age index holds stale keys"
        );
        assert!(
            self.producers.len() <= self.cfg.max_producers + open_txns,
            "I5: {} producers exceed the cap {} (+{open_txns} open transactions)",
            self.producers.len(),
            self.cfg.max_producers
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: ProducerConfig = ProducerConfig {
        expiration_ms: 1_000,
        max_producers: 100,
    };
    const P: ProducerId = ProducerId(7);

    fn meta(first_seq: i32, last_seq: i32, first_offset: u64, t: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + seq_distance(first_seq, last_seq) as u64,
            append_time_ms: t,
        }
    }

    /// A producer at epoch 0 with `n` batches of 10 records from seq 0 / offset 0.
    fn with_batches(n: i32) -> ProducerStateManager {
        let mut s = ProducerStateManager::new(CFG);
        for i in 0..n {
            s.record(P, 0, meta(i * 10, i * 10 + 9, (i * 10) as u64, 100));
        }
        s.check_invariants();
        s
    }

    fn err(r: Result<CheckResult, Error>) -> Error {
        r.expect_err("expected an error")
    }

    #[test]
    fn duplicates_of_each_retained_batch_return_the_original() {
        let s = with_batches(7);
        let e = s.get(P).unwrap();
        assert_eq!(e.batches().len(), 5);
        assert_eq!(e.batches().next().unwrap().first_seq, 20);
        for i in 2..7 {
            let r = s.check(P, 0, i * 10, i * 10 + 9, 200).unwrap();
            assert_eq!(
                r,
                CheckResult::Duplicate(meta(i * 10, i * 10 + 9, (i * 10) as u64, 100))
            );
        }
    }

    #[test]
    fn ordered_rules() {
        let s = with_batches(7);
        assert_eq!(s.check(P, 0, 70, 75, 200).unwrap(), CheckResult::Append);
        assert!(matches!(
            err(s.check(P, 0, 10, 19, 200)),
            Error::DuplicateSequence { .. }
        ));
        assert!(matches!(
            err(s.check(P, 0, 0, 5, 200)),
            Error::DuplicateSequence { .. }
        ));
        // Partial overlap with the window, a gap, same first with a different last.
        for (f, l) in [(15, 25), (71, 80), (60, 65), (65, 69)] {
            assert!(matches!(
                err(s.check(P, 0, f, l, 200)),
                Error::OutOfOrderSequence {
                    expected_sequence: 70,
                    ..
                }
            ));
        }
        assert!(matches!(
            err(s.check(P, 1, 5, 9, 200)),
            Error::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            }
        ));
        assert_eq!(s.check(P, 1, 0, 9, 200).unwrap(), CheckResult::Append);
        let mut bumped = s.clone();
        bumped.record(P, 2, meta(0, 0, 100, 300));
        assert!(matches!(
            err(bumped.check(P, 0, 70, 75, 300)),
            Error::ProducerFenced {
                current_epoch: 2,
                ..
            }
        ));
        // A retry of the pre-bump batch is fenced too, not a duplicate.
        assert!(matches!(
            err(bumped.check(P, 0, 60, 69, 300)),
            Error::ProducerFenced { .. }
        ));
    }

    #[test]
    fn behind_an_unfilled_window_is_out_of_order() {
        let s = with_batches(3);
        assert!(matches!(
            err(s.check(P, 0, i32::MAX - 9, i32::MAX, 200)),
            Error::OutOfOrderSequence {
                expected_sequence: 30,
                ..
            }
        ));
    }

    /// The oldest retained batch at `i32::MAX` (the follower path, or a long-lived producer):
    /// the batch after the expected 0 is ahead on the next lap, not "below the window" as plain
    /// integers read it. Answering `DuplicateSequence` made the `Producer` handle acknowledge a
    /// pipelined batch that was never written.
    #[test]
    fn a_batch_ahead_on_the_next_lap_is_not_behind_the_window() {
        let mut s = ProducerStateManager::new(CFG);
        s.record(P, 0, meta(i32::MAX, i32::MAX, 0, 1));
        assert_eq!(s.get(P).unwrap().next_seq(), 0);
        assert!(matches!(
            err(s.check(P, 0, 1, 1, 2)),
            Error::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            }
        ));
        assert_eq!(s.check(P, 0, 0, 0, 2).unwrap(), CheckResult::Append);
        // Sequences of this lap just before the window were written (the epoch started at 0).
        assert!(matches!(
            err(s.check(P, 0, i32::MAX - 10, i32::MAX - 1, 2)),
            Error::DuplicateSequence { .. }
        ));
    }

    /// A full window of a young epoch (sequences 20..69): the half ring behind the window was
    /// never written, so a range there (e.g. just before the wrap) is out of order.
    #[test]
    fn a_full_window_vouches_only_for_what_its_epoch_wrote() {
        let s = with_batches(7);
        assert!(matches!(
            err(s.check(P, 0, i32::MAX - 5, i32::MAX, 200)),
            Error::OutOfOrderSequence {
                expected_sequence: 70,
                ..
            }
        ));
        assert!(matches!(
            err(s.check(P, 0, 0, 19, 200)),
            Error::DuplicateSequence { .. }
        ));
    }

    #[test]
    fn unknown_and_expired_producers_must_start_at_zero() {
        let s = with_batches(2);
        let q = ProducerId(8);
        assert_eq!(s.check(q, 3, 0, 4, 0).unwrap(), CheckResult::Append);
        assert!(matches!(
            err(s.check(q, 0, 1, 4, 0)),
            Error::UnknownProducerId { .. }
        ));
        // Expired at 100 + 1000: known until then, unknown from then on.
        assert!(matches!(
            err(s.check(P, 0, 5, 9, 1_099)),
            Error::OutOfOrderSequence { .. }
        ));
        assert!(matches!(
            err(s.check(P, 0, 20, 29, 1_100)),
            Error::UnknownProducerId { .. }
        ));
        assert_eq!(s.check(P, 0, 0, 9, 1_100).unwrap(), CheckResult::Append);
        let mut e = s.clone();
        e.expire(1_099);
        assert_eq!(e.len(), 1);
        e.expire(1_100);
        assert!(e.is_empty());
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStateManager::new(CFG);
        s.record(P, 0, meta(i32::MAX - 9, i32::MAX - 5, 0, 1));
        s.record(P, 0, meta(i32::MAX - 4, 2, 5, 1));
        assert_eq!(s.get(P).unwrap().next_seq(), 3);
        assert_eq!(s.check(P, 0, 3, 3, 2).unwrap(), CheckResult::Append);
        assert_eq!(
            s.check(P, 0, i32::MAX - 4, 2, 2).unwrap(),
            CheckResult::Duplicate(meta(i32::MAX - 4, 2, 5, 1))
        );
        for i in 0..3 {
            s.record(P, 0, meta(3 + i, 3 + i, 20 + i as u64, 1));
        }
        // Oldest retained first seq is i32::MAX - 9; the range just behind it wraps nowhere.
        assert!(matches!(
            err(s.check(P, 0, i32::MAX - 20, i32::MAX - 10, 2)),
            Error::DuplicateSequence { .. }
        ));
        // Just ahead of the expected sequence is a gap, not "behind the window".
        assert!(matches!(
            err(s.check(P, 0, 10, 12, 2)),
            Error::OutOfOrderSequence { .. }
        ));
    }

    #[test]
    fn cap_evicts_the_least_recently_active() {
        let cfg = ProducerConfig {
            expiration_ms: 1_000_000,
            max_producers: 3,
        };
        let mut s = ProducerStateManager::new(cfg);
        for (i, t) in [(1, 10), (2, 5), (3, 10), (4, 20)] {
            s.record(ProducerId(i), 0, meta(0, 0, i as u64, t));
            s.check_invariants();
        }
        let ids: Vec<i64> = s.entries().map(|(p, _)| p.0).collect();
        assert_eq!(ids, vec![1, 3, 4]);
        s.record(ProducerId(5), 0, meta(0, 0, 5, 20));
        let ids: Vec<i64> = s.entries().map(|(p, _)| p.0).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        assert_eq!(s.max_producer_id(), Some(ProducerId(5)));
    }

    #[test]
    fn epoch_change_clears_the_window() {
        let mut s = with_batches(4);
        s.record(P, 1, meta(0, 4, 100, 150));
        let e = s.get(P).unwrap();
        assert_eq!(e.epoch, 1);
        assert_eq!(e.batches().len(), 1);
        assert_eq!(e.last_append_ms, 150);
        assert_eq!(e.last_seq(), Some(4));
    }

    /// An unverified tail (a window rebuilt from history older than the log): what is in the
    /// window and what is certainly behind it are still answered, anything else of the epoch
    /// is refused `UnknownProducerId` (it may be a retry of a batch the log holds but no longer
    /// remembers); a new epoch from 0 and a recorded batch clear the mark.
    #[test]
    fn an_unverified_tail_refuses_what_may_follow_it() {
        let batches: Vec<BatchMetadata> = (0..5)
            .map(|i| meta(i * 10, i * 10 + 9, (i * 10) as u64, 100))
            .collect();
        let mut e = ProducerEntry::new(0, &batches, 100, None).unwrap();
        e.tail_unverified = true;
        let mut s = ProducerStateManager::from_entries(CFG, [(P, e)], 50);
        s.check_invariants();
        assert_eq!(
            s.check(P, 0, 40, 49, 200).unwrap(),
            CheckResult::Duplicate(*batches.last().unwrap())
        );
        for (first, last) in [(50, 59), (60, 69), (45, 54)] {
            assert!(matches!(
                err(s.check(P, 0, first, last, 200)),
                Error::UnknownProducerId { first_sequence: Some(f), .. } if f == first
            ));
        }
        // A range certainly written before the window is still a duplicate sequence.
        let mut e = ProducerEntry::new(0, batches.get(2..).unwrap(), 100, None).unwrap();
        e.tail_unverified = true;
        let mut t = ProducerStateManager::from_entries(CFG, [(P, e)], 50);
        assert!(matches!(
            err(t.check(P, 0, 0, 9, 200)),
            Error::DuplicateSequence { .. }
        ));
        assert!(matches!(
            err(t.check(P, 0, 50, 59, 200)),
            Error::UnknownProducerId { .. }
        ));
        assert_eq!(t.check(P, 1, 0, 9, 200).unwrap(), CheckResult::Append);
        assert!(matches!(
            err(t.check(P, 1, 5, 9, 200)),
            Error::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            }
        ));
        t.record(P, 1, meta(0, 9, 50, 200));
        assert!(!t.get(P).unwrap().tail_unverified);
        assert_eq!(t.check(P, 1, 10, 19, 200).unwrap(), CheckResult::Append);
        // A replicated batch of the same epoch (unchecked) proves what follows the window.
        s.record(P, 0, meta(50, 59, 50, 200));
        assert!(!s.get(P).unwrap().tail_unverified);
        assert_eq!(s.check(P, 0, 60, 69, 200).unwrap(), CheckResult::Append);
    }

    #[test]
    fn open_transactions_never_expire_or_get_evicted() {
        let cfg = ProducerConfig {
            expiration_ms: 10,
            max_producers: 1,
        };
        let txn = ProducerEntry::new(0, &[meta(0, 0, 0, 0)], 0, Some(0)).unwrap();
        let mut s = ProducerStateManager::from_entries(cfg, [(ProducerId(1), txn)], 1);
        s.record(ProducerId(2), 0, meta(0, 0, 1, 100));
        s.record(ProducerId(3), 0, meta(0, 0, 2, 100));
        s.check_invariants();
        let ids: Vec<i64> = s.entries().map(|(p, _)| p.0).collect();
        assert_eq!(ids, vec![1, 3]);
        s.expire(1_000);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn entry_new_rejects_broken_parts() {
        let b = meta(0, 9, 0, 0);
        assert!(ProducerEntry::new(0, &[b; 6], 0, None).is_none());
        assert!(ProducerEntry::new(0, &[b, b], 0, None).is_none());
        assert!(ProducerEntry::new(-1, &[b], 0, None).is_none());
        assert!(ProducerEntry::new(0, &[b], 0, None).is_some());
    }
}
