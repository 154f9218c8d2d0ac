//! The idempotent `Producer`: what a correct Kafka client does, so an embedding application
//! gets exactly-once appends without writing any of it.
//!
//! It assigns sequence numbers, keeps at most [`MAX_IN_FLIGHT`] batches unacknowledged, and
//! retries them in order with the *same* producer id, epoch and sequence, so a retry of a batch
//! that was in fact written is answered `duplicate` with its original offsets. Answers:
//!
//! | answer                     | meaning                                   | action                          |
//! |----------------------------|-------------------------------------------|---------------------------------|
//! | `Ok`, `Ok(duplicate)`      | written (now or before)                   | ack with the offsets            |
//! | `DuplicateSequence`        | written long ago, older than the window   | ack without offsets             |
//! | `Timeout`                  | request or response lost                  | retry the same bytes            |
//! | `OutOfOrderSequence`       | an earlier in-flight batch is not written | retry in order; if it is the oldest unacked batch, bump the epoch and re-sequence every unacked batch from 0 |
//! | `UnknownProducerId`        | the log forgot this producer (expiry)     | bump the epoch, re-sequence from 0 |
//! | `ProducerFenced`           | a newer incarnation exists                | fatal                           |
//! | anything else              | not retriable                             | fatal for the batch             |
//!
//! Re-sequencing is safe only because the log never answers `OutOfOrderSequence` for a batch
//! among the producer's newest 5 it holds (it answers `Duplicate`), and the oldest
//! unacknowledged batch, if written, is one of those: a batch re-sent under a new epoch was
//! provably not written. This is the case Kafka gets wrong (KAFKA-5793 family). Acknowledging
//! on `DuplicateSequence` is safe because the log answers it only for a range it proves was
//! appended (`ProducerEntry::behind_window`).

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::log::{AppendInfo, Log};
use crate::types::{increment_sequence, ProducerEpoch, ProducerId, Sequence};

/// At most this many unacknowledged batches per producer (Kafka's `max.in.flight` limit for
/// idempotence, and the size of the log's dedup window).
pub const MAX_IN_FLIGHT: usize = 5;

/// Where a producer sends batches: a log here; a replicated partition or a network client
/// (which can lose requests and responses) elsewhere.
pub trait ProduceTarget {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo>;
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)>;
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)>;
}

impl ProduceTarget for Log {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        self.append(batch)
    }
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        self.init_producer()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.reinit_producer(id)
    }
}

impl<T: ProduceTarget + ?Sized> ProduceTarget for &T {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        (**self).produce(batch)
    }
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        (**self).init_producer_id()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        (**self).bump_producer_epoch(id)
    }
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written at these offsets (by this send or by an earlier attempt).
    Written(AppendInfo),
    /// Written long ago (older than the dedup window); the offsets are no longer known.
    WrittenEarlier,
}

#[derive(Debug)]
struct InFlight {
    ticket: u64,
    records: BatchBuilder,
    batch: RecordBatch,
    attempts: u32,
}

/// An idempotent producer over a [`ProduceTarget`].
#[derive(Debug)]
pub struct Producer<T: ProduceTarget> {
    target: T,
    id: ProducerId,
    epoch: ProducerEpoch,
    next_seq: Sequence,
    next_ticket: u64,
    /// Invariant: at most MAX_IN_FLIGHT, in sequence order, contiguous sequences.
    in_flight: VecDeque<InFlight>,
    /// Batches whose pipelined first attempt was acknowledged, by ticket.
    acked: Vec<(u64, Delivery)>,
    /// Batches completed by a flush that `enqueue` had to run, not yet reported.
    completed: Vec<(u64, Delivery)>,
    /// Attempts per batch before `flush` gives up with the last error.
    pub max_attempts: u32,
}

impl<T: ProduceTarget> Producer<T> {
    /// Allocates a producer id (epoch 0).
    pub fn new(target: T) -> Result<Self> {
        let (id, epoch) = target.init_producer_id()?;
        Ok(Producer {
            target,
            id,
            epoch,
            next_seq: 0,
            next_ticket: 0,
            in_flight: VecDeque::new(),
            acked: Vec::new(),
            completed: Vec::new(),
            max_attempts: 100,
        })
    }

    pub fn id(&self) -> ProducerId {
        self.id
    }

    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    pub fn target(&self) -> &T {
        &self.target
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `records` and waits until it (and every batch before it) is acknowledged.
    pub fn send(&mut self, records: BatchBuilder) -> Result<Delivery> {
        let ticket = self.enqueue(records)?;
        let done = self.flush()?;
        done.into_iter()
            .find(|(t, _)| *t == ticket)
            .map(|(_, d)| d)
            .ok_or(Error::Closed)
    }

    /// Assigns the next sequence to `records` and sends it once; returns a ticket. If
    /// `MAX_IN_FLIGHT` batches are unacknowledged, they are flushed first. Completed batches
    /// are reported by the next [`Producer::flush`] (or returned by `send`).
    pub fn enqueue(&mut self, mut records: BatchBuilder) -> Result<u64> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let done = self.flush()?;
            self.completed.extend(done);
        }
        let count = records.record_count();
        if count == 0 {
            return Err(Error::InvalidBatch(crate::format::DecodeError::BadField {
                field: "record_count",
                value: 0,
            }));
        }
        let first_seq = self.next_seq;
        records.set_producer(self.id, self.epoch, first_seq);
        let batch = records.clone().build().map_err(Error::InvalidBatch)?;
        self.next_seq = increment_sequence(first_seq, count);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight.push_back(InFlight {
            ticket,
            records,
            batch,
            attempts: 0,
        });
        // First attempt now (pipelining); failures are retried in order by flush.
        let last = self.in_flight.len() - 1;
        if let Some(outcome) = self.attempt(last)? {
            self.acked.push((ticket, outcome));
        }
        Ok(ticket)
    }

    /// Drives retries until every in-flight batch is acknowledged; returns `(ticket, delivery)`
    /// for every batch completed since the last call.
    pub fn flush(&mut self) -> Result<Vec<(u64, Delivery)>> {
        let mut done = std::mem::take(&mut self.completed);
        // Batches acknowledged by their pipelined first attempt are settled here, in order.
        let mut early = std::mem::take(&mut self.acked);
        while let Some(front) = self.in_flight.front() {
            let ticket = front.ticket;
            if let Some(pos) = early.iter().position(|(t, _)| *t == ticket) {
                let (_, d) = early.remove(pos);
                self.in_flight.pop_front();
                done.push((ticket, d));
                continue;
            }
            match self.attempt(0)? {
                Some(d) => {
                    self.in_flight.pop_front();
                    done.push((ticket, d));
                }
                None => {
                    let attempts = self.in_flight.front().map_or(0, |f| f.attempts);
                    if attempts >= self.max_attempts {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
        Ok(done)
    }

    /// One attempt of in-flight batch `i`. `Ok(Some)` = acknowledged, `Ok(None)` = retry later.
    fn attempt(&mut self, i: usize) -> Result<Option<Delivery>> {
        let Some(f) = self.in_flight.get_mut(i) else {
            return Ok(None);
        };
        f.attempts += 1;
        match self.target.produce(&f.batch) {
            Ok(info) => Ok(Some(Delivery::Written(info))),
            Err(Error::DuplicateSequence { .. }) => Ok(Some(Delivery::WrittenEarlier)),
            Err(Error::Timeout) => Ok(None),
            Err(Error::OutOfOrderSequence { .. }) if i == 0 => {
                // The oldest unacknowledged batch does not follow the log's last sequence: an
                // earlier batch was lost (never written). Nothing from here on is in the log.
                self.bump_and_resequence()?;
                Ok(None)
            }
            Err(Error::OutOfOrderSequence { .. }) => Ok(None),
            Err(Error::UnknownProducerId { .. }) => {
                self.bump_and_resequence()?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// New epoch, and every unacknowledged batch renumbered from sequence 0.
    fn bump_and_resequence(&mut self) -> Result<()> {
        let (id, epoch) = self.target.bump_producer_epoch(self.id)?;
        self.id = id;
        self.epoch = epoch;
        let mut seq: Sequence = 0;
        for f in self.in_flight.iter_mut() {
            f.records.set_producer(id, epoch, seq);
            f.batch = f.records.clone().build().map_err(Error::InvalidBatch)?;
            seq = increment_sequence(seq, f.records.record_count());
        }
        self.next_seq = seq;
        self.acked.clear();
        Ok(())
    }
}
