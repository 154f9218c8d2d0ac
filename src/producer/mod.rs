//! Idempotent producers: the pure state machine that deduplicates retries and fences old
//! epochs. The snapshot codec lives in `format::snapshot`; the log wires both to files.

pub mod client;
pub mod epochs;
pub mod retry;
pub mod state;
pub mod txn;

pub use client::{Delivery, DeliverySink, Discard, ProduceTarget, Producer, MAX_IN_FLIGHT};
pub use epochs::{IssuedEpochs, ISSUED_EPOCHS_KEPT};
pub use retry::AttemptOutcome;
pub use txn::{AbortedTxn, CompletedTxn, Marker, MarkerKind, StableOffset};

pub use state::{
    BatchMetadata, CheckResult, ProducerConfig, ProducerEntry, ProducerStateManager,
    BATCHES_RETAINED, NO_COORDINATOR_EPOCH,
};
