//! The coordinator's pure state machine: every transactional id's [`TxnMetadata`] and the
//! coordinator epoch, changed only by [`TxnStates::apply`] (so the state is a replay of the
//! state log), and `decide_*` methods that turn a request into the record(s) to write, or a
//! typed error, without changing anything. No I/O, no clock: `now_ms` is an argument.
//!
//! # Transitions (docs/transactions.md, "Coordinator", has the full table)
//!
//! | From | Request | To |
//! |---|---|---|
//! | unknown | init | Empty at a fresh id, epoch 0 |
//! | Empty, Complete* | init | Empty, epoch + 1 (a fresh id at epoch 0 when that would be i16::MAX) |
//! | Ongoing | init | PrepareAbort first (then, once complete, init again) |
//! | Empty, Complete* | add partitions | Ongoing (start = now) |
//! | Ongoing | add partitions | Ongoing, partitions united |
//! | Ongoing | end | Prepare{Commit,Abort} at epoch + 1 |
//! | Ongoing past its deadline | timeout | PrepareAbort at epoch + 1 |
//! | Prepare* | markers written | Complete* (a fresh id at epoch 0 when the markers' epoch is i16::MAX) |
//! | Complete* | retried end of the same kind | unchanged, the same answer |
//!
//! Identity checks, in order, for add and end: an unknown id or a producer id that is neither
//! the current nor the previous one is `InvalidProducerIdMapping`; an epoch above the newest
//! issued is `InvalidProducerIdMapping`; an epoch below the current producer's is
//! `ProducerFenced` (unless it is a retried end); a request at the in-flight producer's epoch
//! while `Prepare*` is `ConcurrentTransactions`.

use std::collections::{BTreeMap, BTreeSet};

use super::metadata::{validate_timeout, validate_transactional_id, TxnMetadata, TxnState};
use super::record::TxnRecord;
use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::producer::{Marker, MarkerKind};
use crate::types::{ProducerEpoch, ProducerId};

/// What `decide_init` asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDecision {
    /// Write this record; the new instance's identity is `identity`.
    Ready {
        /// The record to write.
        record: TxnRecord,
        /// The producer id and epoch to answer once the record is written.
        identity: (ProducerId, ProducerEpoch),
    },
    /// The previous instance's transaction is open: write this PrepareAbort, finish it
    /// (markers, then the `decide_complete` record), then decide the init again.
    AbortOngoing(TxnRecord),
}

/// What `decide_end` asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    /// Write this Prepare* record, write its markers, then the `decide_complete` record; the
    /// answer is the completed state's identity.
    Prepare(TxnRecord),
    /// A retry of an end already completed: nothing to write, answer with `identity`.
    Done {
        /// The producer id and epoch to answer.
        identity: (ProducerId, ProducerEpoch),
    },
}

/// The markers a `Prepare*` transaction still has to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMarkers {
    /// The transactional id whose transaction they end.
    pub transactional_id: String,
    /// The COMMIT or ABORT marker to write.
    pub marker: Marker,
    /// The partitions still to receive it.
    pub partitions: Vec<TopicPartition>,
}

/// Every transactional id's state and the coordinator epoch.
///
/// Invariants (`check_invariants`): every entry holds M1-M5 (`metadata.rs`) and is stored
/// under its own transactional id; `coordinator_epoch >= -1` (-1: no coordinator started yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnStates {
    entries: BTreeMap<String, TxnMetadata>,
    coordinator_epoch: i32,
}

impl Default for TxnStates {
    fn default() -> Self {
        TxnStates::new()
    }
}

impl TxnStates {
    /// An empty table with coordinator epoch -1 (no coordinator started).
    pub fn new() -> TxnStates {
        TxnStates {
            entries: BTreeMap::new(),
            coordinator_epoch: -1,
        }
    }

    /// The epoch of the newest coordinator instance (-1: none started).
    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// The state of `tid`, `None` if unknown.
    pub fn get(&self, tid: &str) -> Option<&TxnMetadata> {
        self.entries.get(tid)
    }

    /// Transactional ids held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transactional id is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every transactional id's state, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &TxnMetadata> {
        self.entries.values()
    }

    /// The one mutation: the state after `rec`. A coordinator epoch never goes back (a
    /// rewritten copy of an older epoch record changes nothing).
    ///
    /// # Panics
    ///
    /// If a transaction record breaks M1-M5: decoded records are validated by the decoder and
    /// decided ones are valid by construction, so this is a bug.
    pub fn apply(&mut self, rec: &TxnRecord) {
        match rec {
            TxnRecord::CoordinatorEpoch(e) => {
                self.coordinator_epoch = self.coordinator_epoch.max(*e);
            }
            TxnRecord::Txn(m) => {
                if let Err(why) = m.validate() {
                    panic!(
                        "applying an invalid record for {:?}: {why}",
                        m.transactional_id
                    );
                }
                self.entries.insert(m.transactional_id.clone(), m.clone());
            }
            TxnRecord::Expired(tid) => {
                self.entries.remove(tid);
            }
        }
    }

    /// Every live record (the latest of each key): what a rewrite of the state log appends.
    pub fn live_records(&self) -> Vec<TxnRecord> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        if self.coordinator_epoch >= 0 {
            out.push(TxnRecord::CoordinatorEpoch(self.coordinator_epoch));
        }
        out.extend(self.entries.values().cloned().map(TxnRecord::Txn));
        out
    }

    /// The number of live keys (what a rewrite writes).
    pub fn live_keys(&self) -> usize {
        self.entries.len() + usize::from(self.coordinator_epoch >= 0)
    }

    /// The record that starts the next coordinator instance.
    pub fn decide_coordinator_epoch(&self) -> Result<TxnRecord> {
        let next = self.coordinator_epoch.checked_add(1).ok_or_else(|| {
            Error::InvalidConfig("the coordinator epoch is exhausted (i32::MAX)".into())
        })?;
        Ok(TxnRecord::CoordinatorEpoch(next))
    }

    /// InitProducerId for a transactional id (module doc). `fresh_pid` is called only when a
    /// new producer id is needed (a new transactional id, or exhausted epochs).
    pub fn decide_init(
        &self,
        tid: &str,
        timeout_ms: i64,
        now_ms: i64,
        fresh_pid: impl FnOnce() -> Result<ProducerId>,
    ) -> Result<InitDecision> {
        validate_transactional_id(tid)?;
        validate_timeout(timeout_ms)?;
        let Some(m) = self.entries.get(tid) else {
            let pid = fresh_pid()?;
            let record = TxnRecord::Txn(TxnMetadata {
                transactional_id: tid.to_string(),
                producer_id: pid,
                producer_epoch: 0,
                last_producer_id: ProducerId::NONE,
                last_producer_epoch: -1,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                timeout_ms,
                txn_start_ms: -1,
                last_update_ms: now_ms,
            });
            return Ok(InitDecision::Ready {
                record,
                identity: (pid, 0),
            });
        };
        match m.state {
            TxnState::Ongoing => Ok(InitDecision::AbortOngoing(prepare(
                m,
                MarkerKind::Abort,
                now_ms,
            ))),
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(concurrent(tid)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = bumped(m, fresh_pid)?;
                next.state = TxnState::Empty;
                next.timeout_ms = timeout_ms;
                next.txn_start_ms = -1;
                next.last_update_ms = now_ms;
                let identity = next.identity();
                Ok(InitDecision::Ready {
                    record: TxnRecord::Txn(next),
                    identity,
                })
            }
        }
    }

    /// AddPartitionsToTxn: `None` when nothing changes (every partition already in the
    /// transaction, or none given outside one).
    pub fn decide_add_partitions(
        &self,
        tid: &str,
        pid: ProducerId,
        epoch: ProducerEpoch,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<Option<TxnRecord>> {
        let m = self.current(tid, pid, epoch)?;
        let mut next = m.clone();
        match m.state {
            TxnState::Ongoing => {
                if partitions.iter().all(|tp| m.partitions.contains(tp)) {
                    return Ok(None);
                }
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if partitions.is_empty() {
                    return Ok(None);
                }
                next.state = TxnState::Ongoing;
                next.txn_start_ms = now_ms;
            }
            // current() answers these already; kept total without a panic.
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(concurrent(tid)),
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(TxnRecord::Txn(next)))
    }

    /// EndTxn (module doc).
    pub fn decide_end(
        &self,
        tid: &str,
        pid: ProducerId,
        epoch: ProducerEpoch,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndDecision> {
        let kind = if commit {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        };
        if let Some(m) = self.entries.get(tid) {
            if m.state.is_complete() && (pid, epoch) == (m.last_producer_id, m.last_producer_epoch)
            {
                return if m.state.marker_kind() == Some(kind) {
                    Ok(EndDecision::Done {
                        identity: m.identity(),
                    })
                } else {
                    Err(invalid_state(
                        pid,
                        format!("transaction already ended with {:?}", m.state),
                    ))
                };
            }
        }
        let m = self.current(tid, pid, epoch)?;
        match m.state {
            TxnState::Ongoing => Ok(EndDecision::Prepare(prepare(m, kind, now_ms))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => Err(
                invalid_state(pid, format!("no transaction is ongoing ({:?})", m.state)),
            ),
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(concurrent(tid)),
        }
    }

    /// The record that completes `tid`'s `Prepare*` once every marker is written.
    /// `fresh_pid` is called when the markers' epoch is i16::MAX (the producer's next
    /// transaction needs a new id).
    pub fn decide_complete(
        &self,
        tid: &str,
        now_ms: i64,
        fresh_pid: impl FnOnce() -> Result<ProducerId>,
    ) -> Result<TxnRecord> {
        let m = self
            .entries
            .get(tid)
            .filter(|m| m.state.is_prepare())
            .ok_or_else(|| Error::InvalidTxnState {
                producer_id: self
                    .entries
                    .get(tid)
                    .map_or(ProducerId::NONE, |m| m.producer_id),
                reason: format!("transactional id {tid:?} has no transaction to complete"),
            })?;
        let mut next = m.clone();
        if m.producer_epoch == ProducerEpoch::MAX {
            next.producer_id = fresh_pid()?;
            next.producer_epoch = 0;
        }
        next.state = TxnState::complete(m.state.marker_kind().unwrap_or(MarkerKind::Abort));
        next.partitions.clear();
        next.last_update_ms = now_ms;
        Ok(TxnRecord::Txn(next))
    }

    /// The expiry records of every transactional id between transactions (`Empty` or
    /// `Complete*`: no transaction open, no marker owed) whose last change is at least
    /// `expiration_ms` before `now_ms` (Kafka's `transactional.id.expiration.ms`), by id. An
    /// id with a transaction open or ending never expires: its markers are still owed.
    pub fn decide_expirations(&self, now_ms: i64, expiration_ms: i64) -> Vec<TxnRecord> {
        self.entries
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now_ms.saturating_sub(m.last_update_ms) >= expiration_ms
            })
            .map(|m| TxnRecord::Expired(m.transactional_id.clone()))
            .collect()
    }

    /// The PrepareAbort records of every `Ongoing` transaction whose deadline (start +
    /// timeout) is at or before `now_ms`, by transactional id.
    pub fn decide_timeouts(&self, now_ms: i64) -> Vec<TxnRecord> {
        self.entries
            .values()
            .filter(|m| m.deadline_ms().is_some_and(|d| d <= now_ms))
            .map(|m| prepare(m, MarkerKind::Abort, now_ms))
            .collect()
    }

    /// The markers of every `Prepare*` transaction, by transactional id: what a restarted
    /// coordinator (or a retry after a failed marker write) must finish.
    pub fn pending_markers(&self) -> Vec<PendingMarkers> {
        self.entries
            .keys()
            .filter_map(|tid| self.pending_markers_of(tid))
            .collect()
    }

    /// The markers `tid` still has to write (`None` unless it is `Prepare*`), carrying this
    /// coordinator's epoch.
    pub fn pending_markers_of(&self, tid: &str) -> Option<PendingMarkers> {
        let m = self.entries.get(tid)?;
        let kind = m.state.marker_kind().filter(|_| m.state.is_prepare())?;
        Some(PendingMarkers {
            transactional_id: tid.to_string(),
            marker: Marker {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                coordinator_epoch: self.coordinator_epoch,
                kind,
            },
            partitions: m.partitions.iter().cloned().collect(),
        })
    }

    /// KIP-890 part 1's verification, for a partition about to accept the first transactional
    /// batch of `(pid, epoch)`: `Ok` only if that producer's transaction is `Ongoing` at
    /// `epoch` and holds `tp`. A stale epoch is `ProducerFenced`; anything else (no such
    /// producer, no open transaction, a partition never added) is `InvalidTxnState`, so a batch
    /// the coordinator could never end (a zombie's, or one sent before AddPartitions) is
    /// refused instead of holding the partition's last stable offset back forever.
    pub fn verify_txn_partition(
        &self,
        pid: ProducerId,
        epoch: ProducerEpoch,
        tp: &TopicPartition,
    ) -> Result<()> {
        let m = self.entries.values().find(|m| m.producer_id == pid);
        if let Some(m) = m.filter(|m| epoch < m.producer_epoch) {
            return Err(Error::ProducerFenced {
                producer_id: pid,
                epoch,
                current_epoch: m.producer_epoch,
            });
        }
        match m {
            Some(m)
                if m.state == TxnState::Ongoing
                    && m.producer_epoch == epoch
                    && m.partitions.contains(tp) =>
            {
                Ok(())
            }
            _ => Err(invalid_state(
                pid,
                format!("partition {tp} is not in an ongoing transaction of epoch {epoch}"),
            )),
        }
    }

    /// Asserts the invariants of the type doc. O(n); for tests and after a replay.
    pub fn check_invariants(&self) {
        assert!(self.coordinator_epoch >= -1, "negative coordinator epoch");
        for (tid, m) in &self.entries {
            assert_eq!(tid, &m.transactional_id, "entry stored under another id");
            if let Err(why) = m.validate() {
                panic!("transactional id {tid:?}: {why}");
            }
        }
    }

    /// The metadata of `tid` if `(pid, epoch)` is its current producer and it may take a
    /// request: the identity checks of the module doc.
    fn current(&self, tid: &str, pid: ProducerId, epoch: ProducerEpoch) -> Result<&TxnMetadata> {
        let unmapped = || Error::InvalidProducerIdMapping {
            transactional_id: tid.to_string(),
            producer_id: pid,
        };
        let m = self.entries.get(tid).ok_or_else(unmapped)?;
        if pid != m.producer_id {
            // The id before an exhaustion switch is fenced for good.
            return if pid == m.last_producer_id {
                Err(Error::ProducerFenced {
                    producer_id: pid,
                    epoch,
                    current_epoch: ProducerEpoch::MAX,
                })
            } else {
                Err(unmapped())
            };
        }
        if epoch > m.producer_epoch {
            return Err(unmapped());
        }
        // While Prepare*, the producer that ended the transaction still runs at its epoch.
        let current_epoch = if m.state.is_prepare() {
            m.last_producer_epoch
        } else {
            m.producer_epoch
        };
        if epoch < current_epoch {
            return Err(Error::ProducerFenced {
                producer_id: pid,
                epoch,
                current_epoch,
            });
        }
        if m.state.is_prepare() {
            return Err(concurrent(tid));
        }
        Ok(m)
    }
}

/// `m`'s transaction ends with `kind`: the Prepare* state at the markers' epoch.
fn prepare(m: &TxnMetadata, kind: MarkerKind, now_ms: i64) -> TxnRecord {
    debug_assert_eq!(m.state, TxnState::Ongoing);
    let mut next = m.clone();
    next.state = TxnState::prepare(kind);
    next.last_producer_id = m.producer_id;
    next.last_producer_epoch = m.producer_epoch;
    // M1: an Ongoing epoch is below i16::MAX, so + 1 fits.
    next.producer_epoch = m.producer_epoch.saturating_add(1);
    next.last_update_ms = now_ms;
    TxnRecord::Txn(next)
}

/// `m` with the next identity: epoch + 1, or a fresh id at epoch 0 when that would be
/// i16::MAX (no transaction could end at it).
fn bumped(m: &TxnMetadata, fresh_pid: impl FnOnce() -> Result<ProducerId>) -> Result<TxnMetadata> {
    let mut next = m.clone();
    next.last_producer_id = m.producer_id;
    next.last_producer_epoch = m.producer_epoch;
    match m
        .producer_epoch
        .checked_add(1)
        .filter(|e| *e < ProducerEpoch::MAX)
    {
        Some(e) => next.producer_epoch = e,
        None => {
            next.producer_id = fresh_pid()?;
            next.producer_epoch = 0;
        }
    }
    Ok(next)
}

fn concurrent(tid: &str) -> Error {
    Error::ConcurrentTransactions {
        transactional_id: tid.to_string(),
    }
}

fn invalid_state(pid: ProducerId, reason: String) -> Error {
    Error::InvalidTxnState {
        producer_id: pid,
        reason,
    }
}
