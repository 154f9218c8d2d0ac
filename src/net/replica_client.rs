//! A typed client of one replica (node): follower fetches, client produce, committed reads and
//! producer-epoch bumps. Same rules as [`Connection`]: an error reply is
//! `NetErrorKind::Remote`, an answer of the wrong kind `UnexpectedResponse`, and a failed call is
//! never re-sent here.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::net::SocketAddr;
use std::time::Duration;

use super::security::Member;
use super::tls::Security;
use super::transport::{unexpected, Connection, NetError, TransportConfig};
use super::wire::Message;
use crate::log::AppendInfo;
use crate::replication::{FetchRequest, FetchResponse, ReplicaId};
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// Committed data from [`ReplicaClient::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The leader's high watermark.
    pub high_watermark: Offset,
    /// The leader log's end offset.
    pub log_end: Offset,
    /// Whole batches, every one below `high_watermark`.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
/// A client of one replica's node (produce, read, producer ids, fetch).
pub struct ReplicaClient {
    conn: Connection,
    /// Per call, connecting included (a produce adds its own `timeout_ms`).
    pub timeout: Duration,
}

impl ReplicaClient {
    /// A client of the node at `addr`; `timeout` bounds each call, connecting included.
    pub fn new(addr: SocketAddr, config: TransportConfig, timeout: Duration) -> Self {
        ReplicaClient {
            conn: Connection::new(addr, config),
            timeout,
        }
    }

    /// Speaks TLS with `security` (when given) to a server that must be replica `replica`.
    pub fn with_security(mut self, security: Option<Security>, replica: ReplicaId) -> Self {
        if let Some(s) = security {
            self.conn.set_tls(s, Member::Replica(replica));
        }
        self
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.conn.addr()
    }

    /// The raw call, for requests without a typed method.
    pub fn call(&mut self, request: &Message, timeout: Duration) -> Result<Message, NetError> {
        self.conn.call(request, timeout)
    }

    /// A follower's fetch.
    pub fn fetch(&mut self, req: &FetchRequest) -> Result<FetchResponse, NetError> {
        let request = Message::Fetch(req.clone());
        match self.conn.call(&request, self.timeout)? {
            Message::FetchResponse(r) => Ok(r),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    /// One whole encoded batch with `acks` (0, 1 or -1); the call waits up to `timeout_ms`
    /// beyond the client timeout for an acks=all answer.
    pub fn produce(
        &mut self,
        batch: &[u8],
        acks: i8,
        timeout_ms: u32,
    ) -> Result<AppendInfo, NetError> {
        let request = Message::Produce {
            acks,
            timeout_ms,
            batch: batch.to_vec(),
        };
        let wait = self.timeout + Duration::from_millis(u64::from(timeout_ms));
        match self.conn.call(&request, wait)? {
            Message::ProduceResponse(info) => Ok(info),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    /// Committed batches from `offset`.
    pub fn read(&mut self, offset: Offset, max_bytes: u32) -> Result<ReadResult, NetError> {
        let request = Message::Read { offset, max_bytes };
        match self.conn.call(&request, self.timeout)? {
            Message::ReadResponse {
                high_watermark,
                log_end,
                bytes,
            } => Ok(ReadResult {
                high_watermark,
                log_end,
                bytes,
            }),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }

    /// The next epoch of a known producer id (at the partition leader).
    pub fn bump_producer_epoch(
        &mut self,
        producer_id: ProducerId,
    ) -> Result<(ProducerId, ProducerEpoch), NetError> {
        let request = Message::InitProducerId {
            producer_id: Some(producer_id),
        };
        match self.conn.call(&request, self.timeout)? {
            Message::ProducerIdAssigned { producer_id, epoch } => Ok((producer_id, epoch)),
            other => Err(unexpected(self.addr(), &request, &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::format::batch::{BatchBuilder, BatchView};
    use crate::log::Log;
    use crate::net::remote_error::{ErrorReply, RemoteError};
    use crate::net::transport::{NetErrorKind, Server};
    use crate::net::wire::ACKS_LEADER;
    use crate::{Error, LogConfig, RecordBatch};

    /// A single-replica "node": produce appends to a log, read returns everything (the whole
    /// log is committed here), a producer-epoch bump goes to the log. Errors become replies.
    fn log_handler(log: Arc<Log>) -> impl Fn(Message) -> Message + Send + Sync + 'static {
        move |m| {
            let result = match m {
                Message::Produce { batch, .. } => RecordBatch::from_bytes(batch)
                    .map_err(Error::InvalidBatch)
                    .and_then(|b| log.append(&b))
                    .map(Message::ProduceResponse),
                Message::Read { offset, max_bytes } => {
                    log.read(offset, max_bytes as usize)
                        .map(|f| Message::ReadResponse {
                            high_watermark: log.log_end_offset(),
                            log_end: log.log_end_offset(),
                            bytes: f.bytes().to_vec(),
                        })
                }
                Message::InitProducerId {
                    producer_id: Some(id),
                } => log
                    .reinit_producer(id)
                    .map(|(producer_id, epoch)| Message::ProducerIdAssigned { producer_id, epoch }),
                other => Ok(Message::Error(ErrorReply::new(
                    RemoteError::InvalidRequest,
                    other.name(),
                ))),
            };
            result.unwrap_or_else(|e| Message::Error(ErrorReply::from_error(&e)))
        }
    }

    fn batch(pid: Option<(i64, i16, i32)>, n: u32) -> RecordBatch {
        let mut b = BatchBuilder::new();
        if let Some((id, epoch, seq)) = pid {
            b.set_producer(ProducerId(id), epoch, seq);
        }
        for i in 0..n {
            b.push(1_000, None, Some(format!("v{i}").as_bytes()));
        }
        b.build().unwrap()
    }

    #[test]
    fn produce_read_duplicates_and_typed_errors_over_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::for_tests()).unwrap());
        let (pid, epoch) = log.init_producer().unwrap();
        let server = Server::bind(
            "127.0.0.1:0",
            Arc::new(log_handler(Arc::clone(&log))),
            TransportConfig::default(),
        )
        .unwrap();
        let mut c = ReplicaClient::new(
            server.local_addr(),
            TransportConfig::default(),
            Duration::from_secs(5),
        );
        let b0 = batch(Some((pid.0, epoch, 0)), 3);
        let first = c.produce(b0.as_bytes(), ACKS_LEADER, 0).unwrap();
        assert_eq!(
            (first.base_offset, first.last_offset),
            (Offset(0), Offset(2))
        );
        assert!(!first.duplicate);
        // A retry of the same bytes is a duplicate with the original offsets.
        let again = c.produce(b0.as_bytes(), ACKS_LEADER, 0).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, first.base_offset);
        // A sequence gap comes back as the same typed error the log raised.
        let gap = batch(Some((pid.0, epoch, 10)), 1);
        let e = c.produce(gap.as_bytes(), ACKS_LEADER, 0).unwrap_err();
        assert!(matches!(
            Error::from(e),
            Error::OutOfOrderSequence {
                expected_sequence: 3,
                ..
            }
        ));
        // Garbage is an invalid batch, and the connection keeps working.
        let e = c.produce(b"not a batch", ACKS_LEADER, 0).unwrap_err();
        assert!(matches!(
            e.kind,
            NetErrorKind::Remote(ErrorReply {
                error: RemoteError::InvalidBatch,
                ..
            })
        ));
        let r = c.read(Offset(0), 1 << 20).unwrap();
        assert_eq!(r.log_end, Offset(3));
        let (view, rest) = BatchView::parse(&r.bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(view.base_offset(), 0);
        let e = c.read(Offset(99), 10).unwrap_err();
        assert!(matches!(Error::from(e), Error::OffsetOutOfRange { .. }));
        assert_eq!(c.bump_producer_epoch(pid).unwrap(), (pid, epoch + 1));
        // A request this node does not answer.
        let e = c
            .fetch(&FetchRequest {
                replica: crate::replication::ReplicaId(2),
                incarnation: 0,
                fetch_offset: Offset(0),
                last_fetched_epoch: None,
                current_leader_epoch: 0,
                max_bytes: 1,
            })
            .unwrap_err();
        assert!(e.remote().is_some());
    }
}
