//! Producer-state costs: the dedup check per batch, and writing / loading a snapshot of
//! 1,000,000 producers with 5 retained batches each (encode + atomic file write + fsync, and
//! read + decode + rebuild). Under `--test` the snapshot has 10,000 producers.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use oncelog::format::snapshot;
use oncelog::io::fs::RealStorage;
use oncelog::io::{write_atomic, OpenMode, Storage};
use oncelog::producer::{BatchMetadata, ProducerConfig, ProducerStateManager};
use oncelog::ProducerId;

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

criterion_group!(benches, dedup_check, snapshot_1m);
criterion_main!(benches);
