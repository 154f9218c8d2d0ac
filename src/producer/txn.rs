//! Transactions in the producer state: the pure rules for transactional batches and COMMIT/ABORT
//! markers, the open-transaction index, completed transactions awaiting the high-water mark, the
//! last stable offset and aborted-transaction entries (docs/transactions.md).
//!
//! Pure like the rest of the producer state: no I/O, no clock. The log (markers, the aborted
//! index files, read_committed) is built on it; every rule here has a table test below.
//!
//! # Rules
//!
//! - **T-data.** A transactional batch opens its producer's transaction at its first offset if
//!   none is open, or continues it. A non-transactional batch from a producer with an open
//!   transaction is `InvalidTxnState`. (Epoch fencing and sequences are the dedup rules of
//!   `state.rs`, unchanged.)
//! - **T-marker.** A marker's producer epoch below the stored one is `ProducerFenced`; its
//!   coordinator epoch below the stored one is `CoordinatorFenced`. A marker that ends an open
//!   transaction must carry a **higher** producer epoch than the transaction's batches
//!   (`InvalidTxnState` otherwise): every transaction ends with an epoch bump (Kafka's KIP-890),
//!   so a late retry of any batch of a finished transaction carries a fenced epoch and can never
//!   join the next transaction. A marker for a producer with no open transaction is allowed: it is
//!   written and updates the epochs, but completes nothing (no aborted-index entry).
//! - **T-stable.** The first unstable offset is the smallest first offset of an open transaction,
//!   or of a completed one whose marker is not yet below the high-water mark; the last stable
//!   offset is `min(first unstable, HW)`, never below the log start. So `LSO <= HW` always, and a
//!   committed transaction becomes visible to read_committed only once its marker is below the HW.
//! - **T-aborted.** An aborted transaction's index entry records the producer, its first offset,
//!   the marker's offset, and the LSO at the marker: the first offset of the earliest transaction
//!   of *another* producer still open, else the marker's offset + 1.

use std::collections::{BTreeMap, BTreeSet};

use super::state::ProducerStateManager;
use crate::error::Error;
use crate::types::ProducerId;

pub use crate::format::control::{Marker, MarkerKind};

/// A transaction ended by a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompletedTxn {
    /// The producer whose transaction ended.
    pub producer_id: ProducerId,
    /// Offset of the transaction's first batch in this log.
    pub first_offset: u64,
    /// The marker's offset.
    pub last_offset: u64,
    /// Whether the marker was ABORT (else COMMIT).
    pub aborted: bool,
}

/// One entry of a segment's aborted-transaction index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose transaction was aborted.
    pub producer_id: ProducerId,
    /// Offset of the transaction's first batch in this log.
    pub first_offset: u64,
    /// The ABORT marker's offset.
    pub last_offset: u64,
    /// The last stable offset at the marker (rule T-aborted).
    pub last_stable_offset: u64,
}

impl ProducerStateManager {
    /// Rule T-data, run after [`ProducerStateManager::check`] accepted the batch and before it is
    /// written. Does not mutate.
    pub fn check_txn_data(&self, pid: ProducerId, transactional: bool) -> Result<(), Error> {
        let open = self.get(pid).and_then(|e| e.txn_first_offset);
        match (transactional, open) {
            (false, Some(first)) => Err(Error::InvalidTxnState {
                producer_id: pid,
                reason: format!(
                    "a non-transactional batch while the producer's transaction from offset \
                     {first} is open"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Records the transactional part of a batch that is in the log, after
    /// [`ProducerStateManager::record`]: opens the producer's transaction at `first_offset` if
    /// none is open.
    pub fn record_txn_data(&mut self, pid: ProducerId, first_offset: u64) {
        self.open_txn(pid, first_offset);
    }

    /// Rule T-marker, before the marker is written. Does not mutate.
    pub fn check_marker(&self, m: &Marker) -> Result<(), Error> {
        let Some(entry) = self.get(m.producer_id) else {
            return Ok(());
        };
        if m.producer_epoch < entry.epoch {
            return Err(Error::ProducerFenced {
                producer_id: m.producer_id,
                epoch: m.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if m.coordinator_epoch < entry.coordinator_epoch {
            return Err(Error::CoordinatorFenced {
                producer_id: m.producer_id,
                coordinator_epoch: m.coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        if let (Some(first), true) = (entry.txn_first_offset, m.producer_epoch == entry.epoch) {
            return Err(Error::InvalidTxnState {
                producer_id: m.producer_id,
                reason: format!(
                    "the marker ending the transaction from offset {first} carries its epoch \
                     {}: every transaction must end with an epoch bump",
                    entry.epoch
                ),
            });
        }
        Ok(())
    }

    /// Records a marker that is in the log at `offset` (after `check_marker` on the client path;
    /// unchecked when replaying or replicating): the producer takes the marker's epochs (a new
    /// producer epoch clears its retained batches, so its next transaction starts at sequence
    /// 0), and its open transaction, if any, completes.
    pub fn record_marker(
        &mut self,
        m: &Marker,
        offset: u64,
        append_time_ms: i64,
    ) -> Option<CompletedTxn> {
        let completed = self
            .get(m.producer_id)
            .and_then(|e| e.txn_first_offset)
            .map(|first| CompletedTxn {
                producer_id: m.producer_id,
                first_offset: first,
                last_offset: offset,
                aborted: m.kind == MarkerKind::Abort,
            });
        self.close_txn(m.producer_id);
        self.set_marker_epochs(
            m.producer_id,
            m.producer_epoch,
            m.coordinator_epoch,
            offset,
            append_time_ms,
        );
        completed
    }

    /// The first offset of the earliest open transaction, with its producer.
    pub fn first_open_txn(&self) -> Option<(u64, ProducerId)> {
        self.open_txns_by_offset().first().copied()
    }

    /// Rule T-aborted: the index entry for `c`, an aborted transaction just completed by
    /// [`ProducerStateManager::record_marker`].
    pub fn aborted_entry(&self, c: &CompletedTxn) -> AbortedTxn {
        let lso = self
            .open_txns_by_offset()
            .iter()
            .find(|(_, p)| *p != c.producer_id)
            .map_or(c.last_offset + 1, |(o, _)| *o);
        AbortedTxn {
            producer_id: c.producer_id,
            first_offset: c.first_offset,
            last_offset: c.last_offset,
            last_stable_offset: lso,
        }
    }

    /// The open transactions, by first offset (invariant I7 of `state.rs`).
    pub fn open_txns_by_offset(&self) -> &BTreeSet<(u64, ProducerId)> {
        self.open_by_offset()
    }
}

/// Completed transactions whose marker is not yet below the high-water mark (Kafka's
/// `unreplicatedTxns`), and the last stable offset they and the open transactions allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StableOffset {
    /// Marker offset -> the transaction it completed. Invariant: every key `>= hw` of the last
    /// `on_high_watermark`.
    unreplicated: BTreeMap<u64, CompletedTxn>,
}

impl StableOffset {
    /// A transaction was completed by a marker at `c.last_offset`, with the HW at `hw`.
    pub fn on_completed(&mut self, c: CompletedTxn, hw: u64) {
        if c.last_offset >= hw {
            self.unreplicated.insert(c.last_offset, c);
        }
    }

    /// The HW moved: completed transactions whose marker is now below it are decided for every
    /// reader.
    pub fn on_high_watermark(&mut self, hw: u64) {
        self.unreplicated = self.unreplicated.split_off(&hw);
    }

    /// Forgets completed transactions at or past `offset` (truncation: their markers are gone,
    /// and the producer state, rebuilt from the log, reopens them).
    pub fn truncate(&mut self, offset: u64) {
        self.unreplicated.split_off(&offset);
    }

    /// Rule T-stable: the first unstable offset (if any transaction is undecided for a reader).
    pub fn first_unstable(&self, producers: &ProducerStateManager, log_start: u64) -> Option<u64> {
        self.first_unstable_given(producers.first_open_txn().map(|(o, _)| o), log_start)
    }

    /// [`StableOffset::first_unstable`] given the first offset of the earliest open
    /// transaction (the log keeps a copy of it beside the producer table, so readers need not
    /// take the appender's lock).
    pub fn first_unstable_given(&self, first_open: Option<u64>, log_start: u64) -> Option<u64> {
        let completed = self.unreplicated.values().map(|c| c.first_offset).min();
        let first = match (first_open, completed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first.map(|f| f.max(log_start))
    }

    /// Rule T-stable: `min(first unstable, hw)`, never below the log start.
    pub fn last_stable_offset(
        &self,
        producers: &ProducerStateManager,
        log_start: u64,
        hw: u64,
    ) -> u64 {
        self.last_stable_offset_given(producers.first_open_txn().map(|(o, _)| o), log_start, hw)
    }

    /// [`StableOffset::last_stable_offset`] given the earliest open transaction's first offset.
    pub fn last_stable_offset_given(
        &self,
        first_open: Option<u64>,
        log_start: u64,
        hw: u64,
    ) -> u64 {
        stable_bound(
            self.first_unstable_given(first_open, log_start),
            log_start,
            hw,
        )
    }
}

/// Rule T-stable on its inputs: `min(first unstable offset, hw)`, where the first unstable
/// offset counts from the log start at the lowest (a transaction begun below the log start holds
/// the LSO at the log start, never below it). The one formula of the LSO: the log and `oncelog
/// dump` both compute it here.
pub fn stable_bound(first_unstable: Option<u64>, log_start: u64, hw: u64) -> u64 {
    let lso = first_unstable.map_or(hw, |f| f.max(log_start).min(hw));
    debug_assert!(lso <= hw, "LSO {lso} above the HW {hw}");
    lso
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::{BatchMetadata, CheckResult, ProducerConfig};
    use crate::types::ProducerEpoch;

    const CFG: ProducerConfig = ProducerConfig {
        expiration_ms: 1_000,
        max_producers: 100,
    };
    const P: ProducerId = ProducerId(1);
    const Q: ProducerId = ProducerId(2);

    fn meta(first_seq: i32, count: i32, first_offset: u64, t: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq: first_seq + count - 1,
            first_offset,
            last_offset: first_offset + count as u64 - 1,
            append_time_ms: t,
        }
    }

    /// Appends a data batch through every check, as the log's client path does.
    fn data(
        psm: &mut ProducerStateManager,
        pid: ProducerId,
        epoch: ProducerEpoch,
        m: BatchMetadata,
        transactional: bool,
    ) -> Result<CheckResult, Error> {
        let r = psm.check(pid, epoch, m.first_seq, m.last_seq, m.append_time_ms)?;
        psm.check_txn_data(pid, transactional)?;
        if r == CheckResult::Append {
            psm.record(pid, epoch, m);
            if transactional {
                psm.record_txn_data(pid, m.first_offset);
            }
        }
        psm.check_invariants();
        Ok(r)
    }

    fn marker(pid: ProducerId, epoch: ProducerEpoch, coord: i32, kind: MarkerKind) -> Marker {
        Marker {
            producer_id: pid,
            producer_epoch: epoch,
            coordinator_epoch: coord,
            kind,
        }
    }

    fn end(
        psm: &mut ProducerStateManager,
        m: Marker,
        offset: u64,
    ) -> Result<Option<CompletedTxn>, Error> {
        psm.check_marker(&m)?;
        let c = psm.record_marker(&m, offset, 0);
        psm.check_invariants();
        Ok(c)
    }

    #[test]
    fn a_transactional_batch_opens_and_a_marker_completes() {
        let mut psm = ProducerStateManager::new(CFG);
        data(&mut psm, P, 0, meta(0, 2, 10, 0), true).unwrap();
        data(&mut psm, P, 0, meta(2, 2, 14, 0), true).unwrap();
        assert_eq!(psm.first_open_txn(), Some((10, P)));
        let c = end(&mut psm, marker(P, 1, 0, MarkerKind::Commit), 20).unwrap();
        assert_eq!(
            c,
            Some(CompletedTxn {
                producer_id: P,
                first_offset: 10,
                last_offset: 20,
                aborted: false
            })
        );
        assert_eq!(psm.first_open_txn(), None);
        assert_eq!(
            psm.get(P).unwrap().epoch,
            1,
            "the marker's epoch is the next one"
        );
        assert_eq!(
            psm.get(P).unwrap().batches().count(),
            0,
            "next txn starts at seq 0"
        );
    }

    #[test]
    fn a_marker_without_an_open_transaction_completes_nothing_but_updates_epochs() {
        let mut psm = ProducerStateManager::new(CFG);
        assert_eq!(
            end(&mut psm, marker(P, 3, 5, MarkerKind::Abort), 7).unwrap(),
            None
        );
        let e = psm.get(P).unwrap();
        assert_eq!((e.epoch, e.coordinator_epoch), (3, 5));
        // Idempotent data at the old epoch is fenced now.
        assert!(matches!(
            data(&mut psm, P, 2, meta(0, 1, 8, 0), false),
            Err(Error::ProducerFenced { .. })
        ));
    }

    #[test]
    fn fenced_markers() {
        let mut psm = ProducerStateManager::new(CFG);
        data(&mut psm, P, 2, meta(0, 1, 0, 0), true).unwrap();
        end(&mut psm, marker(P, 3, 4, MarkerKind::Commit), 1).unwrap();
        // Lower producer epoch.
        assert!(matches!(
            end(&mut psm, marker(P, 2, 4, MarkerKind::Abort), 2),
            Err(Error::ProducerFenced { .. })
        ));
        // Lower coordinator epoch: a distinct error.
        assert!(matches!(
            end(&mut psm, marker(P, 3, 3, MarkerKind::Abort), 2),
            Err(Error::CoordinatorFenced {
                coordinator_epoch: 3,
                current: 4,
                ..
            })
        ));
        // A refused marker changed nothing.
        let e = psm.get(P).unwrap();
        assert_eq!(
            (e.epoch, e.coordinator_epoch, e.txn_first_offset),
            (3, 4, None)
        );
    }

    #[test]
    fn non_transactional_write_during_a_transaction_is_invalid() {
        let mut psm = ProducerStateManager::new(CFG);
        data(&mut psm, P, 0, meta(0, 1, 0, 0), true).unwrap();
        let before = psm.clone();
        assert!(matches!(
            data(&mut psm, P, 0, meta(1, 1, 1, 0), false),
            Err(Error::InvalidTxnState { .. })
        ));
        assert_eq!(psm, before, "a refused batch changes nothing");
        // Other producers are not affected.
        data(&mut psm, Q, 0, meta(0, 1, 1, 0), false).unwrap();
    }

    /// The anomaly an epoch bump per transaction prevents (Kafka before 4.0, found by Jepsen):
    /// a batch of an aborted transaction whose first send was lost is retried late, after the
    /// abort; without the bump it is the next sequence of the same epoch, so the log accepts it
    /// and it opens (joins) the next transaction, which may commit: an aborted record becomes
    /// visible. With the bump, the marker that ends a transaction must raise the epoch, and the
    /// late retry is fenced.
    #[test]
    fn a_late_retry_of_an_aborted_transaction_never_joins_the_next_one() {
        // Transaction 1 at epoch 0: seq 0 written, seq 1 sent but lost in the network.
        let mut psm = ProducerStateManager::new(CFG);
        data(&mut psm, P, 0, meta(0, 1, 0, 0), true).unwrap();
        let late = meta(1, 1, 2, 0);

        // Without the rule: an abort marker at the same epoch (what `check_marker` refuses).
        let mut without = psm.clone();
        assert!(matches!(
            without.check_marker(&marker(P, 0, 0, MarkerKind::Abort)),
            Err(Error::InvalidTxnState { .. })
        ));
        without.record_marker(&marker(P, 0, 0, MarkerKind::Abort), 1, 0);
        assert_eq!(
            data(&mut without, P, 0, late, true).unwrap(),
            CheckResult::Append,
            "without the bump the late batch of the aborted transaction is accepted ..."
        );
        assert_eq!(
            without.first_open_txn(),
            Some((2, P)),
            "... and opens the next transaction"
        );

        // With the rule: the abort marker bumps the epoch; the late retry is fenced.
        end(&mut psm, marker(P, 1, 0, MarkerKind::Abort), 1).unwrap();
        assert!(matches!(
            data(&mut psm, P, 0, late, true),
            Err(Error::ProducerFenced { .. })
        ));
        assert_eq!(psm.first_open_txn(), None);
        // The next transaction, at the bumped epoch from sequence 0, is accepted.
        data(&mut psm, P, 1, meta(0, 1, 2, 0), true).unwrap();
        assert_eq!(psm.first_open_txn(), Some((2, P)));
    }

    #[test]
    fn last_stable_offset_moves_with_the_high_watermark() {
        let mut psm = ProducerStateManager::new(CFG);
        let mut so = StableOffset::default();
        // No transaction: LSO = HW.
        assert_eq!(so.last_stable_offset(&psm, 0, 5), 5);
        data(&mut psm, P, 0, meta(0, 2, 5, 0), true).unwrap(); // 5..6
        data(&mut psm, Q, 0, meta(0, 1, 7, 0), false).unwrap(); // 7
        assert_eq!(so.last_stable_offset(&psm, 0, 8), 5, "open txn from 5");
        assert_eq!(
            so.last_stable_offset(&psm, 0, 3),
            3,
            "LSO never above the HW"
        );
        // Commit at 8 while the HW is 8: still unstable until the HW passes the marker.
        let c = end(&mut psm, marker(P, 1, 0, MarkerKind::Commit), 8)
            .unwrap()
            .unwrap();
        so.on_completed(c, 8);
        assert_eq!(so.last_stable_offset(&psm, 0, 8), 5);
        so.on_high_watermark(9);
        assert_eq!(
            so.last_stable_offset(&psm, 0, 9),
            9,
            "decided once the marker is below the HW"
        );
        // The log start bounds it below.
        data(&mut psm, Q, 0, meta(1, 1, 9, 0), false).unwrap();
        data(&mut psm, P, 1, meta(0, 1, 10, 0), true).unwrap();
        assert_eq!(so.last_stable_offset(&psm, 12, 20), 12);
    }

    #[test]
    fn aborted_entry_lso_is_the_earliest_open_transaction_of_another_producer() {
        let mut psm = ProducerStateManager::new(CFG);
        data(&mut psm, Q, 0, meta(0, 1, 3, 0), true).unwrap(); // Q opens at 3
        data(&mut psm, P, 0, meta(0, 1, 4, 0), true).unwrap(); // P opens at 4
        let c = end(&mut psm, marker(P, 1, 0, MarkerKind::Abort), 6)
            .unwrap()
            .unwrap();
        assert!(c.aborted);
        assert_eq!(
            psm.aborted_entry(&c),
            AbortedTxn {
                producer_id: P,
                first_offset: 4,
                last_offset: 6,
                last_stable_offset: 3
            }
        );
        let c = end(&mut psm, marker(Q, 1, 0, MarkerKind::Abort), 7)
            .unwrap()
            .unwrap();
        assert_eq!(
            psm.aborted_entry(&c).last_stable_offset,
            8,
            "none open: marker + 1"
        );
    }

    #[test]
    fn a_producer_with_an_open_transaction_never_expires_nor_is_evicted() {
        let cfg = ProducerConfig {
            expiration_ms: 10,
            max_producers: 1,
        };
        let mut psm = ProducerStateManager::new(cfg);
        data(&mut psm, P, 0, meta(0, 1, 0, 0), true).unwrap();
        psm.expire(1_000);
        assert!(psm.get(P).is_some(), "expiry skips an open transaction");
        data(&mut psm, Q, 0, meta(0, 1, 1, 1_000), false).unwrap();
        assert!(psm.get(P).is_some(), "the cap skips an open transaction");
        end(&mut psm, marker(P, 1, 0, MarkerKind::Commit), 2).unwrap();
        psm.expire(5_000);
        assert!(
            psm.get(P).is_none(),
            "expires once the transaction is decided"
        );
    }

    #[test]
    fn truncation_forgets_completed_transactions_past_the_cut() {
        let mut psm = ProducerStateManager::new(CFG);
        let mut so = StableOffset::default();
        data(&mut psm, P, 0, meta(0, 1, 0, 0), true).unwrap();
        let c = end(&mut psm, marker(P, 1, 0, MarkerKind::Commit), 1)
            .unwrap()
            .unwrap();
        so.on_completed(c, 0);
        assert_eq!(so.first_unstable(&psm, 0), Some(0));
        so.truncate(1);
        assert_eq!(so.first_unstable(&psm, 0), None);
    }
}
