//! A simulated idempotent producer with acks=all: up to five batches in flight, each retried
//! with the same producer id, epoch and sequence until acknowledged, in sequence order.

use std::collections::VecDeque;

use super::checker::Checker;
use super::network::{Endpoint, Msg, ProduceError};
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::producer::MAX_IN_FLIGHT;
use crate::replication::ReplicaId;
use crate::types::{ProducerId, Sequence};

const RETRY_MS: u64 = 150;
const RECORDS_PER_BATCH: u32 = 3;

#[derive(Debug)]
struct InFlight {
    seq: Sequence,
    batch: RecordBatch,
    last_sent: Option<u64>,
    acked: bool,
}

/// What a response did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: u64,
    pub duplicates: u64,
}

#[derive(Debug)]
pub struct SimClient {
    idx: usize,
    pid: ProducerId,
    next_seq: Sequence,
    budget: u32,
    /// Invariant: sequence order; acknowledged batches leave from the front only.
    in_flight: VecDeque<InFlight>,
    retries: u64,
}

/// The value of record `seq` of producer `pid`: what the checker parses back.
pub fn record_value(pid: ProducerId, seq: Sequence) -> Vec<u8> {
    format!("p{}:s{}", pid.0, seq).into_bytes()
}

impl SimClient {
    pub fn new(idx: usize, pid: i64, batches: u32) -> SimClient {
        SimClient {
            idx,
            pid: ProducerId(pid),
            next_seq: 0,
            budget: batches,
            in_flight: VecDeque::new(),
            retries: 0,
        }
    }

    pub fn pid(&self) -> ProducerId {
        self.pid
    }

    /// Sequences sent so far (every one below is acknowledged once `finished`).
    pub fn sent_records(&self) -> Sequence {
        self.next_seq
    }

    pub fn finished(&self) -> bool {
        self.budget == 0 && self.in_flight.is_empty()
    }

    pub fn take_retries(&mut self) -> u64 {
        std::mem::take(&mut self.retries)
    }

    pub fn tick(&mut self, now: u64, leader: Option<ReplicaId>) -> Vec<(Endpoint, Msg)> {
        while self.budget > 0 && self.in_flight.len() < MAX_IN_FLIGHT {
            let mut b = BatchBuilder::new().producer(self.pid, 0, self.next_seq);
            for i in 0..RECORDS_PER_BATCH {
                let v = record_value(self.pid, self.next_seq + i as i32);
                b.push(now as i64, None, Some(&v));
            }
            let Ok(batch) = b.build() else {
                break;
            };
            self.in_flight.push_back(InFlight {
                seq: self.next_seq,
                batch,
                last_sent: None,
                acked: false,
            });
            self.next_seq += RECORDS_PER_BATCH as i32;
            self.budget -= 1;
        }
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
                        token: f.seq as u64,
                        batch: f.batch.clone(),
                    },
                ));
            }
        }
        let _ = self.idx;
        out
    }

    pub fn receive(&mut self, msg: Msg, checker: &mut Checker) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        let Msg::ProduceResult { token, result } = msg else {
            return Ok(outcome);
        };
        let seq = token as Sequence;
        match result {
            Ok(info) => {
                if info.duplicate {
                    outcome.duplicates += 1;
                }
                checker.acked(self.pid, seq, RECORDS_PER_BATCH, info)?;
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.seq == seq) {
                    if !f.acked {
                        f.acked = true;
                        outcome.acked += 1;
                    }
                }
            }
            Err(ProduceError::Retriable(_)) | Err(ProduceError::OutOfOrder) => {
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.seq == seq) {
                    // Retry soon, in order.
                    f.last_sent = f.last_sent.map(|t| t.saturating_sub(RETRY_MS / 2));
                }
            }
            Err(ProduceError::WrittenEarlier) => {
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.seq == seq) {
                    f.acked = true;
                    outcome.acked += 1;
                }
            }
            Err(ProduceError::Fatal(e)) => {
                return Err(format!(
                    "producer {} seq {seq}: fatal answer {e}",
                    self.pid.0
                ));
            }
        }
        while self.in_flight.front().is_some_and(|f| f.acked) {
            self.in_flight.pop_front();
        }
        Ok(outcome)
    }
}
