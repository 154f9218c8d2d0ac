//! The TCP driver's network half (feature `net`): the wire format, a blocking request/response
//! transport, the static cluster file, and the controller process.
//!
//! - [`wire`]: frames and [`Message`], every request and response of the protocol
//!   (`docs/format.md`, "Wire protocol").
//! - [`remote_error`]: error replies on the wire ([`ErrorReply`], defined with the replica), typed
//!   so a client keeps the local retry rules.
//! - [`transport`]: a client [`Connection`] with connect/read timeouts that reconnects after a
//!   failure, and the limits of both ends ([`TransportConfig`]).
//! - [`server`]: a thread-per-connection server around a [`Handler`], with a connection cap,
//!   idle and whole-frame deadlines and memory bounded by what peers send.
//! - [`cluster_file`]: the static cluster description (controller, replicas, min ISR), with
//!   its security lines ([`security`]: CA, member certificates, ACL).
//! - [`tls`], [`stream`]: TLS on every connection (feature `tls`), and the stream type that
//!   carries plain or TLS bytes; [`authorize`]: who may send which request
//!   (`docs/security.md`).
//! - [`controller_client`], [`replica_client`]: typed clients of the controller and of a node.
//! - [`producer_ids`]: cluster-wide producer ids, persisted by the controller.
//! - [`controller_server`]: `InProcessController` behind TCP, with replica sessions and
//!   producer-id allocation.
//!
//! `docs/replication.md` ("TCP driver") describes how a node uses them.

pub mod authorize;
#[cfg(feature = "tls")]
mod cert_name;
pub mod cluster_file;
mod codec;
pub mod controller_client;
pub mod controller_record;
pub mod controller_server;
pub mod controller_store;
pub(crate) mod frame_io;
pub mod producer_ids;
pub mod remote_error;
pub mod replica_client;
pub mod security;
pub mod server;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod wire;

pub use authorize::{Authorizer, Peer};
pub use cluster_file::{ClusterFile, ClusterFileError, ReplicaEntry};
pub use controller_client::ControllerClient;
pub use controller_server::{ControllerConfig, ControllerServer, ControllerService};
pub use controller_store::{ControllerStore, RecordVersion, StoreError, StoreWake};
pub use remote_error::{ErrorReply, RemoteError};
pub use replica_client::{ReadResult, ReplicaClient};
pub use security::{CertPaths, ClusterTls, Member, Operation};
pub use server::ServerSecurity;
pub use tls::{Security, SecurityError};
pub use transport::{Connection, Handler, NetError, NetErrorKind, Server, TransportConfig};
pub use wire::{ClusterMetadata, Frame, Message, ReplicaStatus};
