//! Drivers that run the replicas of one partition (feature `cluster`: no extra crate, no
//! socket; what an embedder enables for a replicated partition in one process).
//!
//! - [`threads`]: every replica in this process, one thread each, crossbeam channels between
//!   them and the in-process controller behind a mutex (for embedding and benchmarks).
//!
//! The deterministic simulation and the TCP node are the other transports of the same
//! [`crate::replica::ReplicaNode`]; `docs/replication.md` describes all three.

pub mod threads;
mod threads_node;

pub use threads::{ClusterClient, ClusterOptions, PendingProduce, ReplicaStatus, ThreadCluster};
