//! One transactional id's state at the coordinator: its producer identity, where its current
//! transaction stands, and the partitions it touched (docs/transactions.md, "Coordinator").
//!
//! # Invariants (checked by [`TxnMetadata::validate`]; every decoded record and every state
//! the coordinator applies holds them)
//!
//! - **M1 identity.** `producer_id >= 0`; `0 <= producer_epoch <= i16::MAX`, and below
//!   `i16::MAX` in every state but `Prepare*` (a transaction runs at an epoch its markers can
//!   bump). `transactional_id` is 1..=[`MAX_TRANSACTIONAL_ID_LEN`] bytes.
//! - **M2 history.** `(last_producer_id, last_producer_epoch)` is `(-1, -1)` (no bump yet), or
//!   the identity just before the last bump: the same id with `producer_epoch ==
//!   last_producer_epoch + 1`, or, after epoch exhaustion, another id at epoch 0 with
//!   `last_producer_epoch == i16::MAX - 1`.
//! - **M3 partitions.** `Ongoing` and `Prepare*` have at least one partition; `Empty` and
//!   `Complete*` have none (the markers are written, nothing is left to reach).
//! - **M4 prepare.** `Prepare*` never switched ids: `last_producer_id == producer_id` and
//!   `producer_epoch == last_producer_epoch + 1` (the markers' epoch).
//! - **M5 timeout.** `1 <= timeout_ms <=` [`MAX_TXN_TIMEOUT_MS`].

use std::collections::BTreeSet;

use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::producer::MarkerKind;
use crate::types::{ProducerEpoch, ProducerId};

/// The longest transactional id, in bytes (Kafka encodes it as an i16-length string).
pub const MAX_TRANSACTIONAL_ID_LEN: usize = i16::MAX as usize;

/// The longest transaction timeout (Kafka's `transaction.timeout.ms` is an i32).
pub const MAX_TXN_TIMEOUT_MS: i64 = i32::MAX as i64;

/// Where a transactional id's current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// A producer is initialised; no transaction has started since.
    Empty,
    /// A transaction is open: it added partitions and has not ended.
    Ongoing,
    /// COMMIT decided and durable; the markers are being written.
    PrepareCommit,
    /// ABORT decided and durable; the markers are being written.
    PrepareAbort,
    /// Committed: every partition holds its COMMIT marker.
    CompleteCommit,
    /// Aborted: every partition holds its ABORT marker.
    CompleteAbort,
}

impl TxnState {
    /// Every state, in code order.
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    /// The byte that stands for the state in a record (docs/format.md).
    pub fn code(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    /// The state for a record's state byte, `None` for an unknown byte.
    pub fn from_code(code: u8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The marker kind of a `Prepare*` or `Complete*` state.
    pub fn marker_kind(self) -> Option<MarkerKind> {
        match self {
            TxnState::PrepareCommit | TxnState::CompleteCommit => Some(MarkerKind::Commit),
            TxnState::PrepareAbort | TxnState::CompleteAbort => Some(MarkerKind::Abort),
            TxnState::Empty | TxnState::Ongoing => None,
        }
    }

    /// Whether this is `PrepareCommit` or `PrepareAbort` (markers still being written).
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Whether this is `CompleteCommit` or `CompleteAbort`.
    pub fn is_complete(self) -> bool {
        matches!(self, TxnState::CompleteCommit | TxnState::CompleteAbort)
    }

    /// The `Prepare*` state that ends a transaction with `kind`.
    pub fn prepare(kind: MarkerKind) -> TxnState {
        match kind {
            MarkerKind::Commit => TxnState::PrepareCommit,
            MarkerKind::Abort => TxnState::PrepareAbort,
        }
    }

    /// The `Complete*` state that follows a `Prepare*` of `kind`.
    pub fn complete(kind: MarkerKind) -> TxnState {
        match kind {
            MarkerKind::Commit => TxnState::CompleteCommit,
            MarkerKind::Abort => TxnState::CompleteAbort,
        }
    }
}

/// One transactional id's state (Kafka's `TransactionMetadata`). Written whole to the state
/// log at every change; the latest record of an id is its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The transactional id (the record's key).
    pub transactional_id: String,
    /// The producer id the transactional id runs under (a new one after epoch exhaustion).
    pub producer_id: ProducerId,
    /// The newest epoch issued: the epoch of the current or next transaction; in `Prepare*`
    /// the markers' epoch (the one the producer gets back when the end completes).
    pub producer_epoch: ProducerEpoch,
    /// The producer id before the last bump (-1: none); differs from `producer_id` only after
    /// epoch exhaustion.
    pub last_producer_id: ProducerId,
    /// The epoch before the last bump (-1: none): the epoch of the transaction that the last
    /// end completed, so a retried end is answered again instead of being fenced.
    pub last_producer_epoch: ProducerEpoch,
    /// Where the current transaction stands.
    pub state: TxnState,
    /// The partitions of the current transaction, which its markers must reach.
    pub partitions: BTreeSet<TopicPartition>,
    /// After this long open, the coordinator aborts the transaction.
    pub timeout_ms: i64,
    /// When the current transaction added its first partition (-1: none yet).
    pub txn_start_ms: i64,
    /// The coordinator's clock at the latest change (ms).
    pub last_update_ms: i64,
}

impl TxnMetadata {
    /// The identity a producer needs to run the next transaction: `(producer_id,
    /// producer_epoch)`.
    pub fn identity(&self) -> (ProducerId, ProducerEpoch) {
        (self.producer_id, self.producer_epoch)
    }

    /// The transaction's deadline: its start plus its timeout (`None` unless `Ongoing`).
    pub fn deadline_ms(&self) -> Option<i64> {
        (self.state == TxnState::Ongoing).then(|| self.txn_start_ms.saturating_add(self.timeout_ms))
    }

    /// Checks invariants M1-M5 (module doc). Decoders call it on every record they accept.
    pub fn validate(&self) -> Result<(), &'static str> {
        check_transactional_id(&self.transactional_id)?;
        if !self.producer_id.is_some() {
            return Err("M1: negative producer id");
        }
        if self.producer_epoch < 0 {
            return Err("M1: negative producer epoch");
        }
        if self.producer_epoch == ProducerEpoch::MAX && !self.state.is_prepare() {
            return Err("M1: epoch i16::MAX outside Prepare*: no marker could end its transaction");
        }
        let history = (self.last_producer_id, self.last_producer_epoch);
        let same_id = history == (self.producer_id, self.producer_epoch.wrapping_sub(1))
            && self.producer_epoch > 0;
        let new_id = self.last_producer_id.is_some()
            && self.last_producer_id != self.producer_id
            && self.producer_epoch == 0
            && self.last_producer_epoch == ProducerEpoch::MAX - 1;
        if history != (ProducerId::NONE, -1) && !same_id && !new_id {
            return Err("M2: the last identity is not the one before the last bump");
        }
        let needs_partitions = matches!(
            self.state,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        );
        if needs_partitions == self.partitions.is_empty() {
            return Err("M3: Ongoing and Prepare* need partitions, Empty and Complete* have none");
        }
        if self.state.is_prepare() && !same_id {
            return Err("M4: a Prepare* state's epoch is not its transaction's epoch + 1");
        }
        if !(1..=MAX_TXN_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err("M5: timeout out of range");
        }
        Ok(())
    }
}

fn check_transactional_id(tid: &str) -> Result<(), &'static str> {
    if tid.is_empty() || tid.len() > MAX_TRANSACTIONAL_ID_LEN {
        return Err("M1: transactional id length out of range");
    }
    Ok(())
}

/// A request's transactional id, checked: `InvalidConfig` names the rule it breaks.
pub fn validate_transactional_id(tid: &str) -> Result<()> {
    check_transactional_id(tid).map_err(|_| {
        Error::InvalidConfig(format!(
            "transactional id must be 1 to {MAX_TRANSACTIONAL_ID_LEN} bytes, got {}",
            tid.len()
        ))
    })
}

/// A request's transaction timeout, checked: `InvalidConfig` unless `1..=MAX_TXN_TIMEOUT_MS`.
pub fn validate_timeout(timeout_ms: i64) -> Result<()> {
    if (1..=MAX_TXN_TIMEOUT_MS).contains(&timeout_ms) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "transaction timeout must be 1 to {MAX_TXN_TIMEOUT_MS} ms, got {timeout_ms}"
        )))
    }
}
