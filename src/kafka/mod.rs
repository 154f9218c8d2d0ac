//! `oncelog serve`: the Kafka wire protocol over a [`Broker`](crate::broker::Broker), so Kafka clients (librdkafka,
//! kafka-python, kcat, ...) produce to and fetch from oncelog partition logs unchanged.
//!
//! Behind the cargo feature `kafka` (in the default `server` feature); the codec is the
//! `kafka-protocol` crate. One thread per connection handles its requests one at a time, as a
//! Kafka broker does (it reads the next request of a connection only once the previous one is
//! answered), so responses leave in request order however many requests a client pipelines.
//! What is supported, version by version, and how Kafka batches map to ours:
//! `docs/kafka-wire.md`.
//!
//! A listener may serve TLS (optionally mutual, `net::tls`), SASL/PLAIN ([`sasl`]) and an ACL
//! ([`acl`]), under a connection cap, a frame deadline and an idle timeout; [`security`] loads
//! and checks those settings (`docs/kafka-wire.md`, "Security and limits").

pub mod acl;
pub mod batch;
pub mod compression;
mod conn;
mod delete_topics;
pub mod errors;
mod fetch;
mod frame;
mod group_api;
pub mod groups;
mod limits;
mod metadata;
mod produce;
mod refuse;
pub mod sasl;
pub mod security;
mod server;
mod sessions_file;
mod topics;
mod txn_admin;
mod txn_api;
pub mod versions;

pub use security::{LineError, ServeError, ServeSasl, ServeTls};
pub use server::{ServeConfig, Server};
