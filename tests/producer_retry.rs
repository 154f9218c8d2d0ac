//! T15: retry storms through the `Producer` handle. A lossy target between producers and the
//! log drops requests, loses responses after the append happened, and delivers some requests
//! twice; several producers pipeline up to 5 batches each. Whatever the losses, every value is
//! in the log exactly once, in send order per producer, with no gap (INV-3, INV-4, INV-10).

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use oncelog::error::Result;
use oncelog::producer::{Delivery, ProduceTarget, Producer};
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
        let mut producers: Vec<Producer<&Lossy>> =
            (0..3).map(|_| Producer::new(&target).unwrap()).collect();
        let mut sent: Vec<Vec<String>> = vec![Vec::new(); 3];
        let mut delivered = 0;
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
                    delivered += producer.flush().unwrap().len();
                }
            }
        }
        for producer in producers.iter_mut() {
            let done = producer.flush().unwrap();
            assert!(
                done.iter().all(|(_, d)| matches!(d, Delivery::Written(_))),
                "seed {seed}"
            );
            delivered += done.len();
            assert_eq!(producer.in_flight(), 0);
        }
        assert_eq!(
            delivered,
            3 * 60,
            "seed {seed}: every batch acknowledged once"
        );
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

#[test]
fn producer_survives_expiry_by_bumping_its_epoch() {
    use std::sync::Arc;
    let clock = Arc::new(oncelog::ManualClock::new(1_000));
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        producer_id_expiration_ms: 10_000,
        ..LogConfig::for_tests()
    }
    .with_clock(clock.clone());
    let log = Log::open(dir.path(), cfg).unwrap();
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
