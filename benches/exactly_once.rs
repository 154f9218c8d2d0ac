//! Read-process-write: transactions against idempotence only, in the same run on the same bytes
//! (docs/benchmarks.md, "Exactly-once read-process-write").
//!
//! A broker (`SyncMode::Os` data partitions; its consumer-offsets and coordinator logs sync
//! every append, as they always do) holds an input partition of 1,600 batches of 16 records of
//! 100 bytes. One iteration consumes 160 input batches read_committed through a `Consumer`
//! (one batch per poll), writes each batch's records, transformed, as one output batch, and
//! every `n` batches (n = 1, 10, 100) ends a unit of work:
//!
//! * `rpw_txn/n`: a `TransactionalProducer` transaction of n output batches plus the input
//!   offsets (`send_offsets`), committed; the commit makes the output durable, writes the
//!   coordinator's decision and the markers of both partitions.
//! * `rpw_idempotent/n`: the same output through one idempotent producer (plain appends) and a
//!   plain offset commit (`Consumer::commit`) every n batches, plus `Log::flush` of the output
//!   so both variants make the same data durable at the same points: what transactions add is
//!   the coordinator and the markers.
//!
//! Throughput is in input records per second. When the input is consumed the consumer seeks
//! back to 0; the output keeps growing.

mod common;

use std::time::Duration;

use common::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use oncelog::broker::{Broker, BrokerConfig, Consumer, TopicPartition, TransactionalProducer};
use oncelog::{BatchBuilder, LogConfig, Offset, SyncMode};

const RECORDS_PER_BATCH: usize = 16;
const RECORD_BYTES: usize = 100;

fn input_batches() -> u64 {
    scaled(1_600, 40)
}

fn batches_per_iteration() -> u64 {
    scaled(160, 20)
}

struct Setup {
    _dir: tempfile::TempDir,
    broker: Broker,
    input: TopicPartition,
    output: TopicPartition,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        log: LogConfig {
            sync: SyncMode::Os,
            retention_ms: None,
            ..LogConfig::default()
        }
        .with_segment_bytes(64 << 20),
        internal_segment_bytes: 16 << 20,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(dir.path(), config).unwrap();
    let input = broker.create_topic("input", 1).unwrap().remove(0);
    let output = broker.create_topic("output", 1).unwrap().remove(0);
    let log = broker.partition(&input).unwrap();
    let (pid, epoch) = broker.init_producer().unwrap();
    let values: Vec<Vec<u8>> = (0..64).map(|i| noise(RECORD_BYTES, i)).collect();
    for b in 0..input_batches() {
        let mut builder =
            BatchBuilder::new().producer(pid, epoch, (b as usize * RECORDS_PER_BATCH) as i32);
        for r in 0..RECORDS_PER_BATCH {
            builder.push(TS0, None, Some(&values[(b as usize + r) % values.len()]));
        }
        log.append(&builder.build().unwrap()).unwrap();
    }
    Setup {
        _dir: dir,
        broker,
        input,
        output,
    }
}

fn transformed(records: &[oncelog::broker::ConsumedRecord]) -> BatchBuilder {
    let mut b = BatchBuilder::with_capacity(records.len() * (RECORD_BYTES + 16) + 128);
    for r in records {
        let mut v = r.value.clone().unwrap_or_default();
        v.reverse();
        b.push(r.timestamp, None, Some(&v));
    }
    b
}

fn rewind_if_done<B: std::ops::Deref<Target = Broker>>(
    c: &mut Consumer<B>,
    input: &TopicPartition,
) {
    if c.positions()
        .iter()
        .all(|(_, o)| o.0 >= input_batches() * RECORDS_PER_BATCH as u64)
    {
        c.seek(input, Offset(0)).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let batch_bytes = RECORDS_PER_BATCH * (RECORD_BYTES + 8) + 61;
    let mut g = c.benchmark_group("read_process_write_100b_x16");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(scaled(10, 10));
    g.measurement_time(Duration::from_secs(scaled(8, 1)));
    g.throughput(Throughput::Elements(
        batches_per_iteration() * RECORDS_PER_BATCH as u64,
    ));
    for n in [1u64, 10, 100] {
        let s = setup();
        let mut consumer = Consumer::new(&s.broker, "rpw", std::slice::from_ref(&s.input)).unwrap();
        let mut producer = TransactionalProducer::new(&s.broker, "rpw-txn", None).unwrap();
        g.bench_function(BenchmarkId::new("rpw_txn", n), |b| {
            b.iter(|| {
                let mut in_txn = 0;
                for _ in 0..batches_per_iteration() {
                    rewind_if_done(&mut consumer, &s.input);
                    let records = consumer.poll(batch_bytes).unwrap();
                    if in_txn == 0 {
                        producer.begin().unwrap();
                    }
                    producer.send(&s.output, transformed(&records)).unwrap();
                    in_txn += 1;
                    if in_txn == n {
                        producer.send_offsets("rpw", &consumer.positions()).unwrap();
                        producer.commit().unwrap();
                        in_txn = 0;
                    }
                }
                if in_txn > 0 {
                    producer.send_offsets("rpw", &consumer.positions()).unwrap();
                    producer.commit().unwrap();
                }
            })
        });
        drop((consumer, producer));
        s.broker.close().unwrap();

        let s = setup();
        let mut consumer = Consumer::new(&s.broker, "rpw", std::slice::from_ref(&s.input)).unwrap();
        let out = s.broker.partition(&s.output).unwrap();
        let (pid, epoch) = s.broker.init_producer().unwrap();
        let mut seq = 0i32;
        g.bench_function(BenchmarkId::new("rpw_idempotent", n), |b| {
            b.iter(|| {
                let mut pending = 0;
                for _ in 0..batches_per_iteration() {
                    rewind_if_done(&mut consumer, &s.input);
                    let records = consumer.poll(batch_bytes).unwrap();
                    let batch = transformed(&records)
                        .producer(pid, epoch, seq)
                        .build()
                        .unwrap();
                    seq = seq.wrapping_add(records.len() as i32) & i32::MAX;
                    out.append(&batch).unwrap();
                    pending += 1;
                    if pending == n {
                        out.flush().unwrap();
                        consumer.commit().unwrap();
                        pending = 0;
                    }
                }
                if pending > 0 {
                    out.flush().unwrap();
                    consumer.commit().unwrap();
                }
            })
        });
        drop((consumer, out));
        s.broker.close().unwrap();
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
