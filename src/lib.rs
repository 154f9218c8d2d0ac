//! oncelog: the partition log of a Kafka-like system, as an embeddable library.
//!
//! An application opens a directory and gets an append-only, segmented log in memory-mapped
//! files with checksummed record batches, sparse offset and time indexes, size/time retention,
//! and crash recovery that keeps exactly the valid prefix — and never turns damage in synced
//! data into silent truncation.
//!
//! Start with `docs/README.md` for the reading order; `docs/architecture.md` has the components
//! and every fsync in write order, `docs/format.md` every byte.
#![warn(missing_docs)]

pub mod broker;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod format;
// Test machinery, not API: hidden from the embedder's documentation.
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod node;
pub mod observe;
pub mod offsets;
pub mod producer;
pub mod replica;
pub mod replication;
pub mod segment;
// Test machinery, not API: hidden from the embedder's documentation.
#[doc(hidden)]
pub mod simulation;
pub mod types;

pub use broker::TopicPartition;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{LogConfig, RecoveryMode, SyncMode};
pub use error::{Error, Result};
pub use format::batch::{BatchBuilder, BatchHeader, BatchView, Record, RecordBatch, Stamp};
pub use log::{
    AppendInfo, CommittedRecord, Fetch, IsolatedFetch, Isolation, Log, RecoveryReport, TxnIndexLoad,
};
pub use producer::{AbortedTxn, Marker, MarkerKind};
pub use types::{LeaderEpoch, Offset, Position, ProducerEpoch, ProducerId, Sequence};

/// The README's code blocks, compiled and run as doc tests, so its library example cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
