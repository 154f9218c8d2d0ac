//! T15: retry storms through the `Producer` handle. A lossy target between producers and the
//! log drops requests, loses responses after the append happened, and delivers some requests
//! twice; several producers pipeline up to 5 batches each. Whatever the losses, every value is
//! in the log exactly once, in send order per producer, with no gap (INV-3, INV-4, INV-10).

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use oncelog::error::Result;
use oncelog::producer::{Delivery, ProduceTarget, Producer, MAX_IN_FLIGHT};
use oncelog::{
    AppendInfo, BatchBuilder, Error, Log, LogConfig, ProducerEpoch, ProducerId, RecordBatch,
};

/// Splitmix64: a deterministic, dependency-free PRNG for the fault schedule.
struct Rng(Cell<u64>);
impl Rng {
    fn next(&self) -> u64 {
        let mut z = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn chance(&self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Lossy<'a> {
    log: &'a Log,
    rng: Rng,
    dropped: Cell<u64>,
    lost: Cell<u64>,
    doubled: Cell<u64>,
}

impl ProduceTarget for Lossy<'_> {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        if self.rng.chance(20) {
            self.dropped.set(self.dropped.get() + 1);
            return Err(Error::Timeout); // request lost: nothing appended
        }
        if self.rng.chance(10) {
            self.doubled.set(self.doubled.get() + 1);
            let _ = self.log.append(batch); // delivered twice
        }
        let answer = self.log.append(batch);
        if answer.is_ok() && self.rng.chance(25) {
            self.lost.set(self.lost.get() + 1);
            return Err(Error::Timeout); // appended, but the response is lost
        }
        answer
    }
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        self.log.init_producer()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.log.reinit_producer(id)
    }
}

fn records(producer: usize, n: u64, count: u64) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in 0..count {
        b.push(0, None, Some(format!("p{producer}-b{n}-r{i}").as_bytes()));
    }
    b
}

#[test]
fn retry_storm_writes_every_value_exactly_once_in_order() {
    for seed in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
        let target = Lossy {
            log: &log,
            rng: Rng(Cell::new(seed)),
            dropped: Cell::new(0),
            lost: Cell::new(0),
            doubled: Cell::new(0),
        };
        let mut producers: Vec<Producer<&Lossy, Vec<(u64, Delivery)>>> = (0..3)
            .map(|_| Producer::with_sink(&target, Vec::new()).unwrap())
            .collect();
        let mut sent: Vec<Vec<String>> = vec![Vec::new(); 3];
        for n in 0..60u64 {
            for (p, producer) in producers.iter_mut().enumerate() {
                let count = 1 + (n + p as u64) % 3;
                producer.enqueue(records(p, n, count)).unwrap();
                for i in 0..count {
                    sent[p].push(format!("p{p}-b{n}-r{i}"));
                }
            }
            if n % 7 == 6 {
                for producer in producers.iter_mut() {
                    producer.flush().unwrap();
                }
            }
        }
        for producer in producers.iter_mut() {
            producer.flush().unwrap();
            assert_eq!(producer.in_flight(), 0);
            let done = producer.sink();
            assert!(
                done.iter().all(|(_, d)| matches!(d, Delivery::Written(_))),
                "seed {seed}"
            );
            let tickets: Vec<u64> = done.iter().map(|(t, _)| *t).collect();
            assert_eq!(
                tickets,
                (0..60).collect::<Vec<u64>>(),
                "seed {seed}: every batch delivered once, in order"
            );
            assert_eq!(producer.acknowledged(), 60);
        }
        assert!(target.lost.get() > 0 && target.dropped.get() > 0 && target.doubled.get() > 0);

        let mut got: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (_, v) in common::read_all(&log) {
            let v = String::from_utf8(v).unwrap();
            let p: usize = v[1..v.find('-').unwrap()].parse().unwrap();
            got.entry(p).or_default().push(v);
        }
        for (p, values) in sent.iter().enumerate() {
            assert_eq!(
                got.get(&p),
                Some(values),
                "seed {seed}: producer {p} has a duplicate, gap or reordering"
            );
        }
    }
}

/// A log on a manual clock (at 1,000 ms) that forgets a producer idle for 10 s.
fn log_forgetting_producers_after_10_s(
) -> (tempfile::TempDir, std::sync::Arc<oncelog::ManualClock>, Log) {
    let clock = std::sync::Arc::new(oncelog::ManualClock::new(1_000));
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        producer_id_expiration_ms: 10_000,
        ..LogConfig::for_tests()
    }
    .with_clock(clock.clone());
    let log = Log::open(dir.path(), cfg).unwrap();
    (dir, clock, log)
}

#[test]
fn producer_survives_expiry_by_bumping_its_epoch() {
    let (_dir, clock, log) = log_forgetting_producers_after_10_s();
    let mut p = Producer::new(&log).unwrap();
    p.send(records(0, 0, 2)).unwrap();
    clock.advance(20_000);
    // The log forgot the producer; its next batch (sequence 2) is UnknownProducerId, and the
    // producer re-initialises with a higher epoch and sequence 0.
    let d = p.send(records(0, 1, 1)).unwrap();
    assert!(matches!(d, Delivery::Written(_)));
    assert_eq!(p.epoch(), 1);
    let values: Vec<_> = common::read_all(&log).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.len(), 3, "no duplicate, nothing lost");
}

#[test]
fn fenced_producer_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let mut old = Producer::new(&log).unwrap();
    old.send(records(0, 0, 1)).unwrap();
    let (id, epoch) = log.reinit_producer(old.id()).unwrap();
    assert_eq!((id, epoch), (old.id(), 1));
    let err = old.send(records(0, 1, 1)).unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
}

/// The handle keeps no acknowledged batch: after every `enqueue`, whatever was enqueued and is
/// not in flight (at most `MAX_IN_FLIGHT`) has been handed to the sink, once and in ticket
/// order, over 100,000 enqueues and no flush, with a lossy target keeping batches in flight
/// (so `enqueue` has to drive retries itself). The handle's memory is bounded however long
/// the caller waits to flush, and each batch is handed over once (no list copied again per
/// batch). Counts items, not time.
#[test]
fn a_handle_never_flushed_retains_at_most_max_in_flight_batches() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let target = Lossy {
        log: &log,
        rng: Rng(Cell::new(7)),
        dropped: Cell::new(0),
        lost: Cell::new(0),
        doubled: Cell::new(0),
    };
    let delivered = Cell::new(0u64);
    let sink = |ticket: u64, d: Delivery| {
        assert_eq!(ticket, delivered.get(), "delivered once, in ticket order");
        assert!(matches!(d, Delivery::Written(_)), "{d:?}");
        delivered.set(delivered.get() + 1);
    };
    let mut p = Producer::with_sink(&target, sink).unwrap();
    let mut most_retained = 0;
    for n in 0..N {
        let ticket = p.enqueue(records(0, n, 1)).unwrap();
        assert_eq!(ticket, n);
        let retained = n + 1 - delivered.get();
        assert_eq!(retained, p.in_flight() as u64, "held only while in flight");
        assert!(
            retained <= MAX_IN_FLIGHT as u64,
            "{retained} held after {n}"
        );
        assert_eq!(p.acknowledged(), delivered.get());
        most_retained = most_retained.max(retained);
    }
    assert!(most_retained > 1, "the target kept batches in flight");
    assert!(target.lost.get() > 0 && target.dropped.get() > 0);
    p.flush().unwrap();
    assert_eq!((delivered.get(), p.in_flight()), (N, 0));
    drop(p);
    let values: Vec<Vec<u8>> = common::read_all(&log).into_iter().map(|(_, v)| v).collect();
    let want: Vec<Vec<u8>> = (0..N).map(|n| format!("p0-b{n}-r0").into_bytes()).collect();
    assert!(values == want, "every value once, in order");
}

/// A batch acknowledged by its first attempt is delivered at once, so an epoch bump caused by
/// a later batch (here the log forgetting the producer between two enqueues) re-sends only
/// the batches still in flight: the acknowledged ones are not written a second time under the
/// new epoch. Earlier batches completed by `send` reach the sink too.
#[test]
fn an_epoch_bump_never_resends_acknowledged_batches() {
    let (_dir, clock, log) = log_forgetting_producers_after_10_s();
    let mut p = Producer::with_sink(&log, Vec::new()).unwrap();
    for n in 0..3 {
        p.enqueue(records(0, n, 2)).unwrap();
    }
    assert_eq!((p.acknowledged(), p.in_flight()), (3, 0));
    clock.advance(20_000);
    // Sequence 6 of a forgotten producer: UnknownProducerId, epoch bump, re-sent from 0.
    p.enqueue(records(0, 3, 2)).unwrap();
    let d = p.send(records(0, 4, 1)).unwrap();
    assert!(matches!(d, Delivery::Written(_)));
    assert!(p.epoch() >= 1, "bumped");
    let tickets: Vec<u64> = p.sink().iter().map(|(t, _)| *t).collect();
    assert_eq!(tickets, vec![0, 1, 2, 3, 4]);
    let values: Vec<String> = common::read_all(&log)
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    let want: Vec<String> = (0..5u64)
        .flat_map(|n| (0..if n == 4 { 1 } else { 2 }).map(move |i| format!("p0-b{n}-r{i}")))
        .collect();
    assert_eq!(values, want, "no batch written twice, none lost");
}

/// A target whose next answers are lost after the batch is appended, moving the clock past the
/// log's producer expiry each time (the log forgets the producer while the answer is lost).
struct ForgetsAfterAppend<'a> {
    log: &'a Log,
    clock: &'a oncelog::ManualClock,
    lose: Cell<u32>,
}

impl ProduceTarget for ForgetsAfterAppend<'_> {
    fn produce(&self, batch: &RecordBatch) -> Result<AppendInfo> {
        let answer = self.log.append(batch);
        if answer.is_ok() && self.lose.get() > 0 {
            self.lose.set(self.lose.get() - 1);
            self.clock.advance(20_000);
            return Err(Error::Timeout); // appended, the answer lost, the producer forgotten
        }
        answer
    }
    fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch)> {
        self.log.init_producer()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> Result<(ProducerId, ProducerEpoch)> {
        self.log.reinit_producer(id)
    }
}

/// `UnknownProducerId` proves nothing about a batch whose earlier answer was lost: the log
/// wrote it, then forgot the producer, and the retry is refused. Re-sequenced under a new epoch
/// it would be written a second time, so the handle returns the error and re-sends nothing;
/// the log holds the batch once. A handle whose in-flight batches were never possibly written
/// still bumps and goes on (`producer_survives_expiry_by_bumping_its_epoch`).
#[test]
fn unknown_producer_id_after_a_lost_answer_is_returned_not_resent() {
    let (_dir, clock, log) = log_forgetting_producers_after_10_s();
    let target = ForgetsAfterAppend {
        log: &log,
        clock: &clock,
        lose: Cell::new(0),
    };
    let mut p = Producer::new(&target).unwrap();
    p.send(records(0, 0, 2)).unwrap();
    target.lose.set(1);
    let err = p.send(records(0, 1, 1)).unwrap_err();
    assert!(matches!(err, Error::UnknownProducerId { .. }), "{err}");
    assert_eq!(p.epoch(), 0, "not bumped");
    let values: Vec<String> = common::read_all(&log)
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    assert_eq!(values, ["p0-b0-r0", "p0-b0-r1", "p0-b1-r0"], "written once");
}
