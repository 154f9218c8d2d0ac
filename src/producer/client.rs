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
//! | `UnknownProducerId`        | the log forgot this producer (expiry), or no longer knows what followed its window | bump the epoch, re-sequence from 0, unless a batch in flight may be written: then returned to the caller |
//! | `ProducerFenced`           | a newer incarnation exists                | fatal                           |
//! | anything else              | not retriable                             | fatal for the batch             |
//!
//! Re-sequencing is safe only because the log never answers `OutOfOrderSequence` for a batch
//! among the producer's newest 5 it holds (it answers `Duplicate`), and the oldest
//! unacknowledged batch, if written, is one of those: a batch re-sent under a new epoch was
//! provably not written. This is the case Kafka gets wrong (KAFKA-5793 family). Acknowledging
//! on `DuplicateSequence` is safe because the log answers it only for a range it proves was
//! appended (`ProducerEntry::behind_window`).
//!
//! `UnknownProducerId` proves nothing about the batches in flight: the log lost the producer's
//! state, so a batch an earlier attempt may have written (its answer was lost: `Timeout`) would
//! be written a second time if re-sent under a new epoch. The handle re-sequences only when no
//! batch in flight may be written; otherwise it returns the error and re-sends nothing (the
//! caller decides, for example by reading the log back: the outcome of those batches is
//! unknown, and only the caller can choose at-least-once for them).
//!
//! **Deliveries.** Batches are delivered strictly in ticket order: a batch is delivered when
//! it and every batch before it are acknowledged, at once, by the `enqueue`, `flush` or `send`
//! call that acknowledged it. Each delivery is handed once to the producer's [`DeliverySink`]
//! (chosen at [`Producer::with_sink`]; [`Producer::new`] counts and discards) and the handle
//! keeps nothing of it but a count, so the work per batch is constant and the handle's memory
//! is bounded by [`MAX_IN_FLIGHT`] batches however long the caller waits to flush. A caller
//! that wants every delivery keeps them itself (`Vec<(u64, Delivery)>` is a sink; its memory is
//! the caller's choice).

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::format::DecodeError;
use crate::log::{AppendInfo, Log};
use crate::types::{increment_sequence, ProducerEpoch, ProducerId, Sequence};

/// At most this many unacknowledged batches per producer (Kafka's `max.in.flight` limit for
/// idempotence, and the size of the log's dedup window).
pub const MAX_IN_FLIGHT: usize = 5;

/// Where a producer sends batches: a log here; a replicated partition or a network client
/// (which can lose requests and responses) elsewhere.
pub trait ProduceTarget {
    /// Appends one batch and answers where it landed; a duplicate of a batch already written
    /// answers with the original offsets (`AppendInfo::duplicate`). An error may leave the
    /// outcome unknown ([`Error::Timeout`]): the batch may be written.
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo>;
    /// Allocates a new producer id, with epoch 0.
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)>;
    /// Bumps the epoch of `id` (fencing older instances), answering the id and the new epoch.
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

/// Receives every acknowledged batch of a [`Producer`], once, in ticket order, as it is
/// acknowledged.
pub trait DeliverySink {
    /// Called once per acknowledged batch, in ticket order (`ticket` as returned by `send`).
    fn delivered(&mut self, ticket: u64, delivery: Delivery);
}

/// Keeps no delivery ([`Producer::acknowledged`] still counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discard;

impl DeliverySink for Discard {
    fn delivered(&mut self, _ticket: u64, _delivery: Delivery) {}
}

/// Keeps every delivery: it grows until the caller takes them (`std::mem::take(p.sink_mut())`).
impl DeliverySink for Vec<(u64, Delivery)> {
    fn delivered(&mut self, ticket: u64, delivery: Delivery) {
        self.push((ticket, delivery));
    }
}

impl<F: FnMut(u64, Delivery)> DeliverySink for F {
    fn delivered(&mut self, ticket: u64, delivery: Delivery) {
        self(ticket, delivery)
    }
}

#[derive(Debug)]
struct InFlight {
    ticket: u64,
    /// Built with this producer's id, epoch and sequence; rebuilt in place by an epoch bump.
    batch: RecordBatch,
    attempts: u32,
    /// An attempt's outcome was unknown (`Timeout`): the batch may be in the log.
    maybe_written: bool,
    /// Acknowledged by an attempt while an earlier batch was not: delivered when it reaches the
    /// front. Cleared by an epoch bump, which re-sends every batch still in flight.
    acked: Option<Delivery>,
}

/// An idempotent producer over a [`ProduceTarget`], reporting deliveries to `S`.
#[derive(Debug)]
pub struct Producer<T: ProduceTarget, S: DeliverySink = Discard> {
    target: T,
    id: ProducerId,
    epoch: ProducerEpoch,
    next_seq: Sequence,
    next_ticket: u64,
    /// Invariant: at most MAX_IN_FLIGHT, in ticket and sequence order, contiguous sequences,
    /// tickets `acknowledged..next_ticket`; the front is never acknowledged (it is delivered at
    /// once).
    in_flight: VecDeque<InFlight>,
    /// Batches delivered to the sink: every ticket below this one.
    acknowledged: u64,
    /// The newest delivery (what `send` returns).
    last: Option<(u64, Delivery)>,
    sink: S,
    /// Attempts per batch before `flush` gives up with the last error.
    pub max_attempts: u32,
}

impl<T: ProduceTarget> Producer<T> {
    /// Allocates a producer id (epoch 0); deliveries are counted, not kept.
    pub fn new(target: T) -> Result<Self> {
        Producer::with_sink(target, Discard)
    }
}

impl<T: ProduceTarget, S: DeliverySink> Producer<T, S> {
    /// Allocates a producer id (epoch 0); every delivery goes to `sink`.
    pub fn with_sink(target: T, sink: S) -> Result<Self> {
        let (id, epoch) = target.init_producer_id()?;
        Ok(Producer {
            target,
            id,
            epoch,
            next_seq: 0,
            next_ticket: 0,
            in_flight: VecDeque::with_capacity(MAX_IN_FLIGHT),
            acknowledged: 0,
            last: None,
            sink,
            max_attempts: 100,
        })
    }

    /// The producer id every batch carries.
    pub fn id(&self) -> ProducerId {
        self.id
    }

    /// The producer's current epoch (bumped after a fence or an unknown-producer answer).
    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    /// Where batches are sent.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Where deliveries go.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Where deliveries go, mutably (to drain what it collected).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Batches sent and not yet delivered (at most [`MAX_IN_FLIGHT`]): everything the handle
    /// holds.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Batches delivered so far: every ticket below this number.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Sends `records` and waits until it (and every batch before it) is acknowledged. Earlier
    /// batches this call acknowledges go to the sink too.
    pub fn send(&mut self, records: BatchBuilder) -> Result<Delivery> {
        let ticket = self.enqueue(records)?;
        self.flush()?;
        match self.last {
            Some((t, d)) if t == ticket => Ok(d),
            _ => Err(Error::Closed),
        }
    }

    /// Assigns the next sequence to `records`, builds the batch and sends it once; returns a
    /// ticket. If `MAX_IN_FLIGHT` batches are unacknowledged, they are flushed first. The batch
    /// is delivered (to the sink) by this call if every batch before it is, else by a later one.
    pub fn enqueue(&mut self, mut records: BatchBuilder) -> Result<u64> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.flush()?;
        }
        let count = records.record_count();
        if count == 0 {
            return Err(Error::InvalidBatch(DecodeError::BadField {
                field: "record_count",
                value: 0,
            }));
        }
        let first_seq = self.next_seq;
        records.set_producer(self.id, self.epoch, first_seq);
        let batch = records.build().map_err(Error::InvalidBatch)?;
        self.next_seq = increment_sequence(first_seq, count);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight.push_back(InFlight {
            ticket,
            batch,
            attempts: 0,
            maybe_written: false,
            acked: None,
        });
        // First attempt now (pipelining); failures are retried in order by flush.
        let last = self.in_flight.len() - 1;
        if let Some(outcome) = self.attempt(last)? {
            if let Some(f) = self.in_flight.back_mut() {
                f.acked = Some(outcome);
            }
        }
        self.deliver_acknowledged();
        Ok(ticket)
    }

    /// Drives retries until every in-flight batch is acknowledged and delivered to the sink.
    pub fn flush(&mut self) -> Result<()> {
        loop {
            self.deliver_acknowledged();
            let Some(front) = self.in_flight.front() else {
                return Ok(());
            };
            let ticket = front.ticket;
            match self.attempt(0)? {
                Some(d) => {
                    if let Some(f) = self.in_flight.front_mut() {
                        debug_assert_eq!(f.ticket, ticket);
                        f.acked = Some(d);
                    }
                }
                None => {
                    let attempts = self.in_flight.front().map_or(0, |f| f.attempts);
                    if attempts >= self.max_attempts {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// Delivers the acknowledged batches at the front, in ticket order: the only place a batch
    /// leaves the handle.
    fn deliver_acknowledged(&mut self) {
        while let Some(d) = self.in_flight.front().and_then(|f| f.acked) {
            let Some(f) = self.in_flight.pop_front() else {
                break;
            };
            assert_eq!(
                f.ticket, self.acknowledged,
                "deliveries in ticket order, none skipped"
            );
            self.acknowledged += 1;
            self.last = Some((f.ticket, d));
            self.sink.delivered(f.ticket, d);
        }
        assert!(
            self.in_flight.len() <= MAX_IN_FLIGHT
                && self.acknowledged + self.in_flight.len() as u64 == self.next_ticket,
            "in flight: {} of tickets {}..{}",
            self.in_flight.len(),
            self.acknowledged,
            self.next_ticket
        );
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
            Err(Error::Timeout) => {
                f.maybe_written = true;
                Ok(None)
            }
            Err(Error::OutOfOrderSequence { .. }) if i == 0 => {
                // The oldest unacknowledged batch does not follow the log's last sequence: an
                // earlier batch was lost (never written). Nothing from here on is in the log.
                self.bump_and_resequence()?;
                Ok(None)
            }
            Err(Error::OutOfOrderSequence { .. }) => Ok(None),
            // Behind the front, the front's answer decides (a pipelined batch of a producer
            // whose first batch is not in yet is unknown to the log too).
            Err(Error::UnknownProducerId { .. }) if i > 0 => Ok(None),
            Err(e @ Error::UnknownProducerId { .. }) => {
                // Re-sent under a new epoch, a batch already in the log would be written twice:
                // the front if an answer of it was lost, and any batch acknowledged behind it.
                // The log appends in sequence order, so if neither, nothing in flight is in it.
                let written = self.in_flight.iter().any(|f| f.acked.is_some());
                if written || self.in_flight.front().is_some_and(|f| f.maybe_written) {
                    return Err(e);
                }
                self.bump_and_resequence()?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// New epoch, and every undelivered batch renumbered from sequence 0 and re-sent (an
    /// acknowledgement of one behind the front is dropped with the old numbering).
    fn bump_and_resequence(&mut self) -> Result<()> {
        let (id, epoch) = self.target.bump_producer_epoch(self.id)?;
        self.id = id;
        self.epoch = epoch;
        let mut seq: Sequence = 0;
        for f in self.in_flight.iter_mut() {
            f.batch
                .set_producer(id, epoch, seq)
                .map_err(Error::InvalidBatch)?;
            f.acked = None;
            seq = increment_sequence(seq, f.batch.header().record_count);
        }
        self.next_seq = seq;
        Ok(())
    }
}
