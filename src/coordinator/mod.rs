//! The transaction coordinator: decides transactions across partitions and writes their
//! markers. Its state is itself an oncelog log (the transaction-state log).
//!
//! - `metadata.rs`: one transactional id's state ([`TxnMetadata`], [`TxnState`]) and its
//!   invariants;
//! - `record.rs`: the state log's record codec ([`TxnRecord`]);
//! - `state.rs`: the pure state machine ([`TxnStates`]): `apply` a record, `decide_*` a request;
//! - `state_log.rs`: the state log (replay, durable appends, the rewrite that keeps it short);
//! - this file: the driver, [`TxnCoordinator`], which runs each request as decide → write
//!   durably → apply → act (markers) and recovers at open.
//!
//! docs/transactions.md, "Coordinator", has the states, the transition table, the durability
//! order of each request and what recovery does.

pub mod markers;
pub mod metadata;
pub mod record;
pub mod state;
mod state_log;

#[cfg(test)]
mod state_model_tests;
#[cfg(test)]
mod state_tests;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::broker::TopicPartition;
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{report_once, Error, Result};
use crate::types::{Offset, ProducerEpoch, ProducerId};

pub use markers::MarkerSink;
pub use metadata::{TxnMetadata, TxnState, MAX_TRANSACTIONAL_ID_LEN, MAX_TXN_TIMEOUT_MS};
pub use record::TxnRecord;
pub use state::{EndDecision, InitDecision, PendingMarkers, TxnStates};
pub use state_log::{needs_rewrite, REWRITE_MIN_RECORDS, REWRITE_RATIO};

/// The size of the transaction-state log, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLogStats {
    /// Records from the log start (what the rewrite rule counts).
    pub records: u64,
    /// Live keys: transactional ids plus the coordinator epoch.
    pub live_keys: u64,
    /// The state log's first offset.
    pub log_start: Offset,
    /// The state log's end offset.
    pub log_end: Offset,
    /// Rewrites that were due and failed (requests went on without them).
    pub rewrite_failures: u64,
}

/// Kafka's transaction coordinator for one broker, over a transaction-state log in its own
/// directory. Every method takes `&self`; a mutex inside serialises requests (markers are
/// written while it is held).
#[derive(Debug)]
pub struct TxnCoordinator {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state_log: state_log::StateLog,
    states: TxnStates,
    clock: Arc<dyn Clock>,
    /// How long an id between transactions is kept after its last change: the state log's
    /// `producer_id_expiration_ms` (7 days by default, Kafka's
    /// `transactional.id.expiration.ms`).
    expiration_ms: i64,
    /// Rewrites that failed when due (best effort, see `rewrite_if_due`).
    rewrite_failures: u64,
    rewrite_failure_reported: AtomicBool,
}

impl TxnCoordinator {
    /// Opens the state log at `dir` (forcing `SyncMode::EveryAppend` and no retention),
    /// replays it, writes the next coordinator epoch (so partitions fence the markers of any
    /// older instance), then finishes every `Prepare*` transaction: its markers through
    /// `markers`, then its `Complete*` record. A transaction whose markers cannot be written
    /// now stays `Prepare*` ([`TxnCoordinator::pending`]); `tick` and requests for it retry.
    pub fn open(dir: &Path, config: LogConfig, markers: &dyn MarkerSink) -> Result<TxnCoordinator> {
        let clock = Arc::clone(&config.clock);
        let expiration_ms = i64::try_from(config.producer_id_expiration_ms).unwrap_or(i64::MAX);
        let (state_log, states) = state_log::StateLog::open(dir, config)?;
        let mut inner = Inner {
            state_log,
            states,
            clock,
            expiration_ms,
            rewrite_failures: 0,
            rewrite_failure_reported: AtomicBool::new(false),
        };
        inner.rewrite_if_due();
        let epoch = inner.states.decide_coordinator_epoch()?;
        inner.persist(epoch)?;
        // Failures leave the transaction Prepare* for `tick` (see the doc above).
        let _ = inner.finish_pending(markers);
        Ok(TxnCoordinator {
            inner: Mutex::new(inner),
        })
    }

    /// InitProducerId for `tid`: a new producer id at epoch 0 for a new transactional id;
    /// otherwise an epoch above every one returned for it before, which fences every older
    /// instance. An open transaction of the previous instance is aborted first (markers
    /// written); a `Prepare*` one is finished first. Exhausted epochs give a fresh producer id.
    pub fn init_transactions(
        &self,
        tid: &str,
        timeout: Duration,
        markers: &dyn MarkerSink,
    ) -> Result<(ProducerId, ProducerEpoch)> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut inner = self.inner.lock();
        inner.rewrite_if_due();
        // At most: finish a Prepare*, abort an Ongoing and finish it, then bump.
        for _ in 0..3 {
            inner.finish_if_prepared(tid, markers)?;
            let now = inner.now();
            let Inner {
                states, state_log, ..
            } = &*inner;
            match states.decide_init(tid, timeout_ms, now, || state_log.allocate_producer_id())? {
                InitDecision::Ready { record, identity } => {
                    inner.persist(record)?;
                    return Ok(identity);
                }
                InitDecision::AbortOngoing(record) => inner.persist(record)?,
            }
        }
        Err(concurrent(tid))
    }

    /// AddPartitionsToTxn: the partitions join `tid`'s transaction (starting one if none is
    /// open). The record is durable before `Ok`, so every partition the producer then writes
    /// to is known to the coordinator and an abort (also after a crash) reaches it.
    pub fn add_partitions(
        &self,
        tid: &str,
        pid: ProducerId,
        epoch: ProducerEpoch,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.rewrite_if_due();
        let now = inner.now();
        if let Some(rec) = inner
            .states
            .decide_add_partitions(tid, pid, epoch, partitions, now)?
        {
            inner.persist(rec)?;
        }
        Ok(())
    }

    /// EndTxn: commits or aborts `tid`'s transaction. Writes the `Prepare*` record (durable),
    /// a marker to every partition of the transaction (`Marker { producer_id, producer_epoch:
    /// epoch + 1, coordinator_epoch, kind }`), then the `Complete*` record, and returns the
    /// producer's identity for its next transaction (epoch + 1, or a fresh id at epoch 0 when
    /// epochs are exhausted). A retried end that already completed gets the same answer.
    ///
    /// If a marker write fails, its error is returned and the transaction stays `Prepare*`:
    /// its outcome is decided, later requests and `tick` write the markers again, and until
    /// then requests for `tid` get `ConcurrentTransactions`.
    pub fn end_transaction(
        &self,
        tid: &str,
        pid: ProducerId,
        epoch: ProducerEpoch,
        commit: bool,
        markers: &dyn MarkerSink,
    ) -> Result<(ProducerId, ProducerEpoch)> {
        let mut inner = self.inner.lock();
        inner.rewrite_if_due();
        inner.finish_if_prepared(tid, markers)?;
        let now = inner.now();
        match inner.states.decide_end(tid, pid, epoch, commit, now)? {
            EndDecision::Done { identity } => Ok(identity),
            EndDecision::Prepare(record) => {
                inner.persist(record)?;
                inner.write_markers(tid, markers)?;
                inner.complete(tid)
            }
        }
    }

    /// Aborts every transaction open past its timeout (by the log config's clock: epoch
    /// bumped, so its producer's further requests at the old epoch are fenced), retries the
    /// markers of every `Prepare*` transaction, and forgets every id idle between transactions
    /// past the expiration (`TxnStates::decide_expirations`; an InitProducerId for it then
    /// starts afresh with a new producer id). Returns the transactional ids it aborted.
    ///
    /// It tries everything; if a marker or a record could not be written it returns the first
    /// error (the aborts it decided stand: [`TxnCoordinator::pending`] lists those whose
    /// markers are missing, and the next `tick` retries them).
    pub fn tick(&self, markers: &dyn MarkerSink) -> Result<Vec<String>> {
        let mut inner = self.inner.lock();
        inner.rewrite_if_due();
        let mut first_error = inner.finish_pending(markers).err();
        let now = inner.now();
        let mut aborted = Vec::new();
        for record in inner.states.decide_timeouts(now) {
            let tid = match &record {
                TxnRecord::Txn(m) => m.transactional_id.clone(),
                TxnRecord::CoordinatorEpoch(_) | TxnRecord::Expired(_) => continue,
            };
            inner.persist(record)?;
            aborted.push(tid.clone());
            if let Err(e) = inner
                .write_markers(&tid, markers)
                .and_then(|()| inner.complete(&tid))
            {
                first_error.get_or_insert(e);
            }
        }
        // Ids idle past the expiration between transactions are forgotten (one record each).
        let expiration = inner.expiration_ms;
        for record in inner.states.decide_expirations(now, expiration) {
            if let Err(e) = inner.persist(record) {
                first_error.get_or_insert(e);
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(aborted),
        }
    }

    /// Whether a partition may accept the first transactional batch of `(pid, epoch)`:
    /// `TxnStates::verify_txn_partition` (KIP-890 part 1). A broker that asks before opening
    /// a transaction on a partition never holds one the coordinator cannot end.
    pub fn verify_txn_partition(
        &self,
        pid: ProducerId,
        epoch: ProducerEpoch,
        partition: &TopicPartition,
    ) -> Result<()> {
        self.inner
            .lock()
            .states
            .verify_txn_partition(pid, epoch, partition)
    }

    /// A fresh producer id from the state log's durable allocator (`Log::init_producer`), so
    /// one allocator serves transactional and plain idempotent producers of a broker.
    pub fn allocate_producer_id(&self) -> Result<ProducerId> {
        self.inner.lock().state_log.allocate_producer_id()
    }

    /// `tid`'s current state.
    pub fn describe(&self, tid: &str) -> Option<TxnMetadata> {
        self.inner.lock().states.get(tid).cloned()
    }

    /// Every transactional id's current state, in id order (ListTransactions).
    pub fn list(&self) -> Vec<TxnMetadata> {
        self.inner.lock().states.iter().cloned().collect()
    }

    /// The transactional ids whose outcome is decided but whose markers are not all written.
    pub fn pending(&self) -> Vec<String> {
        let inner = self.inner.lock();
        inner
            .states
            .pending_markers()
            .into_iter()
            .map(|p| p.transactional_id)
            .collect()
    }

    /// This instance's epoch, carried by every marker it writes.
    pub fn coordinator_epoch(&self) -> i32 {
        self.inner.lock().states.coordinator_epoch()
    }

    /// The state log's size.
    pub fn state_log_stats(&self) -> StateLogStats {
        let inner = self.inner.lock();
        let log = inner.state_log.log();
        StateLogStats {
            records: inner.state_log.records(),
            live_keys: inner.states.live_keys() as u64,
            log_start: log.log_start_offset(),
            log_end: log.log_end_offset(),
            rewrite_failures: inner.rewrite_failures,
        }
    }

    /// Rewrites the live records now and moves the state log's start past the older ones
    /// (requests do it on their own when the rewrite rule says so).
    pub fn compact(&self) -> Result<()> {
        self.inner.lock().maybe_rewrite(true).map(|_| ())
    }

    /// Closes the state log cleanly.
    pub fn close(self) -> Result<()> {
        self.inner.into_inner().state_log.into_log().close()
    }

    /// Drops the coordinator the way a crash would (`Log::simulate_crash`).
    // Test machinery, not API: hidden from the embedder's documentation.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.inner
            .into_inner()
            .state_log
            .into_log()
            .simulate_crash();
    }
}

impl Inner {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Appends `rec` durably, then applies it.
    fn persist(&mut self, rec: TxnRecord) -> Result<()> {
        let now = self.now();
        self.state_log.append(std::slice::from_ref(&rec), now)?;
        self.states.apply(&rec);
        Ok(())
    }

    /// The rewrite rule (`state_log.rs`), or a rewrite now with `force`.
    fn maybe_rewrite(&mut self, force: bool) -> Result<bool> {
        let now = self.now();
        self.state_log.maybe_rewrite(&self.states, now, force)
    }

    /// The rewrite rule before a request decides anything, best effort: a failed rewrite
    /// changes no state (its copies equal the records they copy), so the request goes on; it
    /// is counted and reported once on stderr. An I/O failure poisons the state log, and the
    /// request's own record then fails with it.
    fn rewrite_if_due(&mut self) {
        if let Err(e) = self.maybe_rewrite(false) {
            self.rewrite_failures += 1;
            report_once(&self.rewrite_failure_reported, || {
                format!(
                    "transaction-state log rewrite failed (the log grows until one succeeds): {e}"
                )
            });
        }
    }

    /// Writes every marker of `tid`'s `Prepare*` transaction (nothing if it is not one).
    fn write_markers(&self, tid: &str, markers: &dyn MarkerSink) -> Result<()> {
        let Some(p) = self.states.pending_markers_of(tid) else {
            return Ok(());
        };
        for tp in &p.partitions {
            markers.write_marker(tp, &p.marker)?;
        }
        Ok(())
    }

    /// Writes `tid`'s `Complete*` record (its markers are written); returns its identity.
    fn complete(&mut self, tid: &str) -> Result<(ProducerId, ProducerEpoch)> {
        let now = self.now();
        let Inner {
            states, state_log, ..
        } = &*self;
        let record = states.decide_complete(tid, now, || state_log.allocate_producer_id())?;
        self.persist(record)?;
        self.states
            .get(tid)
            .map(TxnMetadata::identity)
            .ok_or_else(|| concurrent(tid))
    }

    /// Before a request for `tid`: finishes its `Prepare*` transaction if it has one. Failed
    /// markers are `ConcurrentTransactions` (retriable: the outcome is decided, the markers
    /// are retried); a failed record write is its own error.
    fn finish_if_prepared(&mut self, tid: &str, markers: &dyn MarkerSink) -> Result<()> {
        if self.states.pending_markers_of(tid).is_none() {
            return Ok(());
        }
        self.write_markers(tid, markers)
            .map_err(|_| concurrent(tid))?;
        self.complete(tid).map(|_| ())
    }

    /// Finishes every `Prepare*` transaction it can; returns the first error.
    fn finish_pending(&mut self, markers: &dyn MarkerSink) -> Result<()> {
        let mut first_error = None;
        for p in self.states.pending_markers() {
            let tid = &p.transactional_id;
            if let Err(e) = self
                .write_markers(tid, markers)
                .and_then(|()| self.complete(tid))
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn concurrent(tid: &str) -> Error {
    Error::ConcurrentTransactions {
        transactional_id: tid.to_string(),
    }
}
