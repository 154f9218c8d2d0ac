//! The TCP driver's network half (being built): the wire format, the transport and the
//! cluster file.
//!
//! - [`wire`]: frames and [`Message`], every request and response of the protocol
//!   (`docs/format.md`, "Wire protocol").
//! - [`remote_error`]: error replies, typed so a client keeps the local retry rules.
//! - [`transport`]: a thread-per-connection server around a [`Handler`], and a client
//!   [`Connection`] with connect/read timeouts that reconnects after a failure.
//! - [`cluster_file`]: the static cluster description (controller, replicas, min ISR).

mod codec;
pub mod cluster_file;
pub mod remote_error;
pub mod transport;
pub mod wire;

pub use cluster_file::{ClusterFile, ClusterFileError, ReplicaEntry};
pub use remote_error::{ErrorReply, RemoteError};
pub use transport::{Connection, Handler, NetError, NetErrorKind, Server, TransportConfig};
pub use wire::{ClusterMetadata, Frame, Message, ReplicaStatus};
