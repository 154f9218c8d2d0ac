//! A simulated idempotent producer with acks=all: up to five batches in flight, each retried
//! with the same producer id, epoch and sequence until acknowledged, in sequence order.
//!
//! A transactional client groups its batches into transactions of a few batches each: once
//! every batch of a transaction is acknowledged it decides COMMIT or ABORT (about one in four
//! aborts, by a fixed rule), tells the checker, and sends the marker, acting as its own
//! transaction coordinator, until the marker is acknowledged; the marker bumps the epoch and
//! the next transaction starts at sequence 0. Record values carry a per-client counter (not
//! the batch sequence, which restarts with each epoch) and the transaction's number.

use std::collections::VecDeque;

use super::checker::Checker;
use super::network::Endpoint;
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::producer::{Marker, MarkerKind, MAX_IN_FLIGHT};
use crate::replica::{Acks, Msg};
use crate::replica::{ErrorReply, RemoteError};
use crate::replication::ReplicaId;
use crate::types::{ProducerEpoch, ProducerId, Sequence};

const RETRY_MS: u64 = 150;
/// How long the leader may hold an acks=all request.
const PRODUCE_TIMEOUT_MS: u64 = 1_000;
const RECORDS_PER_BATCH: u32 = 3;
/// Tokens of marker requests (data requests use the record counter, far below).
const MARKER_TOKEN: u64 = 1 << 40;

/// Why a produce request failed, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// Try again (not leader, not enough replicas, timeout, storage trouble on this replica).
    Retriable(String),
    /// An earlier batch of this producer is missing here: retry in order.
    OutOfOrder,
    /// Written before and older than the retained window.
    WrittenEarlier,
    /// Anything a correct run never produces.
    Fatal(String),
}

impl ProduceError {
    fn of(e: ErrorReply) -> ProduceError {
        match e.error {
            RemoteError::NotLeader { .. }
            | RemoteError::NotEnoughReplicas { .. }
            | RemoteError::NotEnoughReplicasAfterAppend { .. }
            | RemoteError::Timeout
            | RemoteError::Replication(_) => ProduceError::Retriable(e.message),
            // Before the first batch of a producer arrives (reordered), a later one finds it
            // unknown: the same as a gap. (Producers here never expire, so it cannot mean that
            // the log forgot it.)
            RemoteError::OutOfOrderSequence { .. } | RemoteError::UnknownProducerId { .. } => {
                ProduceError::OutOfOrder
            }
            RemoteError::DuplicateSequence { .. } => ProduceError::WrittenEarlier,
            _ => ProduceError::Fatal(e.message),
        }
    }
}

#[derive(Debug)]
struct InFlight {
    /// The first record's counter (the request token and the checker's key).
    first: Sequence,
    batch: RecordBatch,
    last_sent: Option<u64>,
    acked: bool,
}

/// What a response did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: u64,
    pub duplicates: u64,
    pub committed: u64,
    pub aborted: u64,
}

/// A transactional client's state.
#[derive(Debug)]
struct Txn {
    batches_per_txn: u32,
    /// Batches created in the open transaction.
    in_txn: u32,
    number: u64,
    epoch: ProducerEpoch,
    /// The decided marker, sent until acknowledged.
    marker: Option<(RecordBatch, bool, Option<u64>)>,
}

#[derive(Debug)]
pub struct SimClient {
    idx: usize,
    pid: ProducerId,
    /// The next batch's sequence (restarts at 0 with each epoch).
    next_seq: Sequence,
    /// The next record's counter (never restarts).
    next_record: Sequence,
    budget: u32,
    /// Invariant: sequence order; acknowledged batches leave from the front only.
    in_flight: VecDeque<InFlight>,
    retries: u64,
    txn: Option<Txn>,
}

/// The value of record `n` of producer `pid`: what the checker parses back.
pub fn record_value(pid: ProducerId, n: Sequence) -> Vec<u8> {
    format!("p{}:s{}", pid.0, n).into_bytes()
}

/// The value of record `n` of producer `pid` in its transaction `txn`.
pub fn txn_record_value(pid: ProducerId, n: Sequence, txn: u64) -> Vec<u8> {
    format!("p{}:s{}:x{txn}", pid.0, n).into_bytes()
}

impl SimClient {
    pub fn new(idx: usize, pid: i64, batches: u32) -> SimClient {
        SimClient {
            idx,
            pid: ProducerId(pid),
            next_seq: 0,
            next_record: 0,
            budget: batches,
            in_flight: VecDeque::new(),
            retries: 0,
            txn: None,
        }
    }

    /// A transactional client: transactions of `batches_per_txn` batches.
    pub fn transactional(idx: usize, pid: i64, batches: u32, batches_per_txn: u32) -> SimClient {
        let mut c = SimClient::new(idx, pid, batches);
        c.txn = Some(Txn {
            batches_per_txn: batches_per_txn.max(1),
            in_txn: 0,
            number: 0,
            epoch: 0,
            marker: None,
        });
        c
    }

    pub fn pid(&self) -> ProducerId {
        self.pid
    }

    /// Records sent so far (every one below is acknowledged once `finished`).
    pub fn sent_records(&self) -> Sequence {
        self.next_record
    }

    pub fn finished(&self) -> bool {
        self.budget == 0
            && self.in_flight.is_empty()
            && self
                .txn
                .as_ref()
                .is_none_or(|t| t.marker.is_none() && t.in_txn == 0)
    }

    pub fn take_retries(&mut self) -> u64 {
        std::mem::take(&mut self.retries)
    }

    /// Whether a new batch may be created now (a transaction waits for its marker).
    fn may_create(&self) -> bool {
        self.budget > 0
            && self.in_flight.len() < MAX_IN_FLIGHT
            && self
                .txn
                .as_ref()
                .is_none_or(|t| t.marker.is_none() && t.in_txn < t.batches_per_txn)
    }

    pub fn tick(
        &mut self,
        now: u64,
        leader: Option<ReplicaId>,
        checker: &mut Checker,
    ) -> Vec<(Endpoint, Msg)> {
        while self.may_create() {
            let epoch = self.txn.as_ref().map_or(0, |t| t.epoch);
            let mut b = BatchBuilder::new().producer(self.pid, epoch, self.next_seq);
            if self.txn.is_some() {
                b = b.transactional();
            }
            for i in 0..RECORDS_PER_BATCH {
                let n = self.next_record + i as i32;
                let v = match &self.txn {
                    Some(t) => txn_record_value(self.pid, n, t.number),
                    None => record_value(self.pid, n),
                };
                b.push(now as i64, None, Some(&v));
            }
            let Ok(batch) = b.build() else {
                break;
            };
            self.in_flight.push_back(InFlight {
                first: self.next_record,
                batch,
                last_sent: None,
                acked: false,
            });
            if let Some(t) = &mut self.txn {
                t.in_txn += 1;
                checker.txn_records(self.pid, t.number, self.next_record, RECORDS_PER_BATCH);
            }
            self.next_seq += RECORDS_PER_BATCH as i32;
            self.next_record += RECORDS_PER_BATCH as i32;
            self.budget -= 1;
        }
        self.maybe_decide(now, checker);
        let mut out = Vec::new();
        let Some(leader) = leader else {
            return out;
        };
        for f in self.in_flight.iter_mut().filter(|f| !f.acked) {
            if f.last_sent.is_none_or(|t| now >= t + RETRY_MS) {
                if f.last_sent.is_some() {
                    self.retries += 1;
                }
                f.last_sent = Some(now);
                out.push((
                    Endpoint::Replica(leader),
                    Msg::Produce {
                        token: f.first as u64,
                        batch: f.batch.clone(),
                        acks: Acks::All,
                        timeout_ms: PRODUCE_TIMEOUT_MS,
                    },
                ));
            }
        }
        if let Some(t) = &mut self.txn {
            if let Some((batch, _, last_sent)) = &mut t.marker {
                if last_sent.is_none_or(|s| now >= s + RETRY_MS) {
                    if last_sent.is_some() {
                        self.retries += 1;
                    }
                    *last_sent = Some(now);
                    out.push((
                        Endpoint::Replica(leader),
                        Msg::Produce {
                            token: MARKER_TOKEN + t.number,
                            batch: batch.clone(),
                            acks: Acks::All,
                            timeout_ms: PRODUCE_TIMEOUT_MS,
                        },
                    ));
                }
            }
        }
        let _ = self.idx;
        out
    }

    /// Every batch of the open transaction is acknowledged (and it is full, or the budget is
    /// spent): decide it, tell the checker before the marker can exist anywhere, build it.
    fn maybe_decide(&mut self, now: u64, checker: &mut Checker) {
        let pid = self.pid;
        let (budget, idle) = (self.budget, self.in_flight.is_empty());
        let Some(t) = &mut self.txn else {
            return;
        };
        let full = t.in_txn == t.batches_per_txn || (budget == 0 && t.in_txn > 0);
        if t.marker.is_some() || !idle || !full {
            return;
        }
        let commit = !(t.number * 7 + pid.0 as u64).is_multiple_of(4);
        checker.txn_decided(pid, t.number, commit);
        let m = Marker {
            producer_id: pid,
            producer_epoch: t.epoch + 1,
            coordinator_epoch: 0,
            kind: if commit {
                MarkerKind::Commit
            } else {
                MarkerKind::Abort
            },
        };
        if let Ok(batch) = m.to_batch(now as i64) {
            t.marker = Some((batch, commit, None));
        }
    }

    pub fn receive(&mut self, msg: Msg, checker: &mut Checker) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        let Msg::ProduceResult { token, result } = msg else {
            return Ok(outcome);
        };
        let result = result.map_err(ProduceError::of);
        if token >= MARKER_TOKEN {
            return self.receive_marker(token - MARKER_TOKEN, result, outcome);
        }
        let first = token as Sequence;
        match result {
            Ok(info) => {
                if info.duplicate {
                    outcome.duplicates += 1;
                }
                checker.acked(self.pid, first, RECORDS_PER_BATCH, info)?;
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.first == first) {
                    if !f.acked {
                        f.acked = true;
                        outcome.acked += 1;
                    }
                }
            }
            Err(ProduceError::Retriable(_)) | Err(ProduceError::OutOfOrder) => {
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.first == first) {
                    // Retry soon, in order.
                    f.last_sent = f.last_sent.map(|t| t.saturating_sub(RETRY_MS / 2));
                }
            }
            Err(ProduceError::WrittenEarlier) => {
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.first == first) {
                    f.acked = true;
                    outcome.acked += 1;
                }
            }
            Err(ProduceError::Fatal(e)) => {
                // A late copy of a batch acknowledged earlier may be fenced now: its
                // transaction ended and the marker bumped the epoch (what the bump is for).
                let acked_earlier = !self.in_flight.iter().any(|f| f.first == first && !f.acked);
                if !(acked_earlier && self.txn.is_some()) {
                    return Err(format!(
                        "producer {} record {first}: fatal answer {e}",
                        self.pid.0
                    ));
                }
            }
        }
        while self.in_flight.front().is_some_and(|f| f.acked) {
            self.in_flight.pop_front();
        }
        Ok(outcome)
    }

    fn receive_marker(
        &mut self,
        number: u64,
        result: Result<crate::log::AppendInfo, ProduceError>,
        mut outcome: Outcome,
    ) -> Result<Outcome, String> {
        let pid = self.pid.0;
        let Some(t) = &mut self.txn else {
            return Ok(outcome);
        };
        if t.number != number || t.marker.is_none() {
            return Ok(outcome); // an answer to a retry of a marker already acknowledged
        }
        match result {
            Ok(_) => {
                let commit = t.marker.as_ref().is_some_and(|m| m.1);
                if commit {
                    outcome.committed += 1;
                } else {
                    outcome.aborted += 1;
                }
                t.marker = None;
                t.number += 1;
                t.epoch += 1;
                t.in_txn = 0;
                self.next_seq = 0;
            }
            Err(ProduceError::Retriable(_)) | Err(ProduceError::OutOfOrder) => {
                if let Some((_, _, s)) = &mut t.marker {
                    *s = s.map(|x| x.saturating_sub(RETRY_MS / 2));
                }
            }
            Err(e) => {
                return Err(format!(
                    "producer {pid} transaction {number}: marker answered {e:?}"
                ));
            }
        }
        Ok(outcome)
    }
}
