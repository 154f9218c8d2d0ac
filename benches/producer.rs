//! Producer costs: the dedup check per batch; writing / loading a snapshot of 1,000,000
//! producers with 5 retained batches each (encode + atomic file write + fsync, and read +
//! decode + rebuild); and the `Producer` handle against plain appends of the same batches
//! (`producer_handle_*`). Under `--test` the snapshot has 10,000 producers and the handle
//! groups 8,192 records.

mod common;

use std::time::{Duration, Instant};

use common::{bench_config, Workload, SEGMENT_BYTES, TS0};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use oncelog::format::snapshot;
use oncelog::io::fs::RealStorage;
use oncelog::io::{write_atomic, OpenMode, Storage};
use oncelog::producer::{BatchMetadata, Producer, ProducerConfig, ProducerStateManager};
use oncelog::types::increment_sequence;
use oncelog::{BatchBuilder, Log, ProducerId, SyncMode};

fn state(producers: i64) -> ProducerStateManager {
    let cfg = ProducerConfig {
        expiration_ms: u64::MAX / 4,
        max_producers: producers as usize + 1,
    };
    let mut s = ProducerStateManager::new(cfg);
    let mut offset = 0u64;
    for round in 0..5i64 {
        for p in 0..producers {
            let first_seq = (round * 64) as i32;
            let meta = BatchMetadata {
                first_seq,
                last_seq: first_seq + 63,
                first_offset: offset,
                last_offset: offset + 63,
                append_time_ms: 1_700_000_000_000 + offset as i64 / 1000,
            };
            s.record(ProducerId(p), 0, meta);
            offset += 64;
        }
    }
    s.set_map_end_offset(offset);
    s
}

fn dedup_check(c: &mut Criterion) {
    let s = state(100_000);
    let mut group = c.benchmark_group("producer_check");
    group.throughput(Throughput::Elements(1));
    group.bench_function("next_batch_100k_producers", |b| {
        let mut p = 0i64;
        b.iter(|| {
            p = (p + 7919) % 100_000;
            s.check(ProducerId(p), 0, 320, 383, 1_800_000_000_000)
                .unwrap()
        });
    });
    group.bench_function("retry_of_oldest_retained_100k_producers", |b| {
        let mut p = 0i64;
        b.iter(|| {
            p = (p + 7919) % 100_000;
            s.check(ProducerId(p), 0, 0, 63, 1_800_000_000_000).unwrap()
        });
    });
    // The whole per-batch work of an idempotent append with one producer (the append bench's
    // case): check the next batch, then record it (window push, age index). Compare with the
    // time per batch of `append_100b_x16` (~1 µs) for the idempotence cost.
    group.bench_function("check_and_record_next_batch_1_producer", |b| {
        let mut s = state(1);
        let mut seq = 320i32;
        let mut offset = s.map_end_offset();
        b.iter(|| {
            let now = 1_800_000_000_000 + i64::from(seq / 64_000);
            if let Err(e) = s.check(ProducerId(0), 0, seq, seq + 15, now) {
                panic!("{e:?} at {seq}");
            }
            let meta = BatchMetadata {
                first_seq: seq,
                last_seq: seq + 15,
                first_offset: offset,
                last_offset: offset + 15,
                append_time_ms: now,
            };
            s.record(ProducerId(0), 0, meta);
            seq = seq.checked_add(16).unwrap_or(0);
            offset += 16;
            s.set_map_end_offset(offset);
        });
    });
    group.finish();
}

fn snapshot_1m(c: &mut Criterion) {
    let producers: i64 = common::scaled(1_000_000, 10_000);
    let s = state(producers);
    let bytes = snapshot::encode(s.map_end_offset(), &s);
    println!(
        "snapshot of {producers} producers x 5 batches: {} bytes = {:.2} bytes/producer",
        bytes.len(),
        bytes.len() as f64 / producers as f64
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.snapshot");
    let mut group = c.benchmark_group("snapshot_1m_producers");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("encode", |b| {
        b.iter(|| snapshot::encode(s.map_end_offset(), &s))
    });
    group.bench_function("write_encode_and_atomic_fsync", |b| {
        b.iter(|| {
            let bytes = snapshot::encode(s.map_end_offset(), &s);
            write_atomic(&RealStorage, &path, &bytes).unwrap();
        })
    });
    write_atomic(&RealStorage, &path, &bytes).unwrap();
    let cfg = s.config();
    group.bench_function("load_read_decode_rebuild", |b| {
        b.iter_batched(
            || (),
            |()| {
                let f = RealStorage.open(&path, OpenMode::Existing).unwrap();
                let raw = f.read_all().unwrap();
                let (offset, entries) = snapshot::decode(&raw).unwrap();
                ProducerStateManager::from_entries(cfg, entries, offset)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The handle's workload as a caller writes it: every batch is built with `BatchBuilder` inside
/// the clock and sent through the idempotent `Producer` handle, which is flushed at the end of
/// the iteration only, every 5 batches or every 1,000 batches; against `Log::append` of the same
/// batches built with `BatchBuilder::producer` (the same records and sequences, one producer
/// from `init_producer`). Each sample appends into a new log (`SyncMode::Os`, 256 MiB
/// segments), as in `benches/append.rs`. The ratio of medians is the handle's cost.
fn handle_group(c: &mut Criterion, w: Workload) {
    let values: Vec<Vec<u8>> = (0..w.pool_batches() * w.per_batch)
        .map(|r| w.value(r))
        .collect();
    let batches = w.batches_per_iter();
    let records = |i: usize| {
        let mut b = BatchBuilder::with_capacity(w.per_batch * (w.record_bytes + 16) + 128);
        for r in 0..w.per_batch {
            let v = &values[(i * w.per_batch + r) % values.len()];
            b.push(TS0 + r as i64, None, Some(v));
        }
        b
    };
    let per_batch = w.per_batch as i32;
    let mut group = c.benchmark_group(format!("producer_handle_{}", w.name));
    group.throughput(Throughput::Elements(w.records as u64));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("log_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
            let (pid, epoch) = log.init_producer().unwrap();
            let mut seq = 0;
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..batches {
                    let batch = records(i).producer(pid, epoch, seq).build().unwrap();
                    log.append(&batch).unwrap();
                    seq = increment_sequence(seq, per_batch);
                }
            }
            let elapsed = start.elapsed();
            log.simulate_crash();
            elapsed
        });
    });
    for (label, every) in [
        ("handle_flush_at_end", usize::MAX),
        ("handle_flush_every_5", 5),
        ("handle_flush_every_1000", 1000),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(dir.path(), bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
                let mut producer = Producer::new(&log).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..batches {
                        producer.enqueue(records(i)).unwrap();
                        if (i + 1) % every == 0 {
                            producer.flush().unwrap();
                        }
                    }
                    producer.flush().unwrap();
                }
                let elapsed = start.elapsed();
                drop(producer);
                log.simulate_crash();
                elapsed
            });
        });
    }
    group.finish();
}

fn producer_handle_100b_x16(c: &mut Criterion) {
    handle_group(c, Workload::b100_x16());
}

fn producer_handle_1k_x64(c: &mut Criterion) {
    handle_group(c, Workload::kb_x64());
}

criterion_group!(
    benches,
    dedup_check,
    snapshot_1m,
    producer_handle_100b_x16,
    producer_handle_1k_x64
);
criterion_main!(benches);
