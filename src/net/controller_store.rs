//! Where the controller keeps its partition record, replica sessions and producer-id counter
//! when they must outlive one process and be shared by several controller processes (the
//! controller on etcd, `crate::etcd`). Without a store, [`super::ControllerService`] keeps all
//! of it in its own memory (one process).
//!
//! The store never decides anything: the rules stay in [`InProcessController`]. The service
//! loads the record, applies one request to it in memory and writes it back with
//! [`ControllerStore::compare_and_set`]; a lost race is retried on the newer record.
//!
//! Every method blocks the calling thread (an implementation owns whatever runtime it needs).

use std::collections::BTreeMap;
use std::fmt;

use crate::replication::{InProcessController, Incarnation, ReplicaId};
use crate::types::ProducerId;

/// A version of the stored record (etcd's `mod_revision` of its key): it changes on every
/// write, so a write conditioned on it is a compare-and-set.
pub type RecordVersion = i64;

/// A store call that failed or could not reach the store (it may or may not have applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What was attempted ("load the partition record", "grant a session lease"...).
    pub op: &'static str,
    pub message: String,
}

impl StoreError {
    pub fn new(op: &'static str, message: impl fmt::Display) -> Self {
        StoreError {
            op,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "controller store: {}: {}", self.op, self.message)
    }
}

impl std::error::Error for StoreError {}

/// The shared state of the controller processes of one partition. See the module doc.
pub trait ControllerStore: Send + Sync + fmt::Debug {
    /// The stored record and its version, or `None` before the first write.
    fn load(&self) -> Result<Option<(InProcessController, RecordVersion)>, StoreError>;

    /// Writes `next` only if the stored version is still `expected` (`None`: no record yet).
    /// `Ok(false)`: another writer got there first; nothing was written.
    fn compare_and_set(
        &self,
        expected: Option<RecordVersion>,
        next: &InProcessController,
    ) -> Result<bool, StoreError>;

    /// Starts the session of `replica`'s life `incarnation` (replacing any earlier one). It
    /// ends by itself `ttl_ms` (rounded up to what the store supports) after the last
    /// [`keep_session`](Self::keep_session).
    fn start_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    /// Extends the session of `replica` as `incarnation`; `Ok(false)` if it has none (expired,
    /// ended, or started by another life).
    fn keep_session(
        &self,
        replica: ReplicaId,
        incarnation: Incarnation,
    ) -> Result<bool, StoreError>;

    /// Ends the session of `replica` now (a controlled shutdown).
    fn end_session(&self, replica: ReplicaId) -> Result<(), StoreError>;

    /// Every live session: replica → incarnation.
    fn sessions(&self) -> Result<BTreeMap<ReplicaId, Incarnation>, StoreError>;

    /// A producer id no controller process handed out before.
    fn allocate_producer_id(&self) -> Result<ProducerId, StoreError>;

    /// Whether this process is the acting controller now: only the acting one turns missing
    /// sessions into `replica_failed` (every process may serve requests, since each change is
    /// a compare-and-set).
    fn is_acting(&self) -> bool;
}
