//! The TCP driver's network half (being built): the wire format.
//!
//! - [`wire`]: frames and [`Message`], every request and response of the protocol
//!   (`docs/format.md`, "Wire protocol").
//! - [`remote_error`]: error replies, typed so a client keeps the local retry rules.

mod codec;
pub mod remote_error;
pub mod wire;

pub use remote_error::{ErrorReply, RemoteError};
pub use wire::{ClusterMetadata, Frame, Message, ReplicaStatus};
