//! Append throughput against the physical baselines and the peers, measured in the same run on
//! the same bytes, so the ratios survive a noisy machine (docs/benchmarks.md).
//!
//! Groups:
//! * `append_1k_x64` and `append_100b_x16`: one iteration appends 1,000,000 records (1,000-byte
//!   records in batches of 64, 100-byte records in batches of 16), cycling through 64 MiB of
//!   distinct prebuilt batches. Beside oncelog (`SyncMode::Os`, plain and idempotent): memcpy into
//!   a resident mapping, memcpy into a fresh fallocated mapping, one write(2) per batch, and the
//!   peers `commitlog` (one message set per batch) and `nano-wal` (one `append_batch` per batch).
//!   Every variant gets prebuilt batches: encoding and checksumming happen outside the clock for
//!   all of them (nano-wal has no checksum).
//! * `every_append_64k`: durable appends of 64 KB batches (256 per iteration) from 1, 4 and 16
//!   threads against one write + fdatasync per batch (and the same from 16 threads); and, from 1
//!   and 16 threads, with the recovery point fdatasynced after every lane
//!   (`recovery_point_lag_ms = 0`, two flushes per durable point) beside the default (one).
//!
//! Each sample appends into a new log (a new file for the baselines) that grows over the
//! sample's iterations, so segment rolls and first-touch page faults are part of every number.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use commitlog::message::MessageBuf;
use commitlog::{CommitLog, LogOptions};
use common::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use nano_wal::{Wal, WalOptions, WriteEntry};
use oncelog::{Log, LogConfig, RecordBatch, SyncMode};

fn append_group(c: &mut Criterion, w: Workload) {
    let pool = Pool::new(&w);
    let iteration = pool.iteration(&w);
    let bytes = total_len(&iteration) as u64;
    let mut group = c.benchmark_group(format!("append_{}", w.name));
    group.throughput(Throughput::Bytes(bytes));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));

    memcpy_resident_map(&mut group, &iteration);
    memcpy_fresh_map(&mut group, &iteration);
    write_per_batch(&mut group, &iteration);

    // oncelog, SyncMode::Os, plain batches; with the default prefault thread, and without it
    // (what prefaulting buys).
    for (label, prefault) in [
        ("oncelog_append_os", None),
        ("oncelog_append_os_no_prefault", Some(0)),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let mut config = bench_config(SEGMENT_BYTES, SyncMode::Os);
                if let Some(bytes) = prefault {
                    config.prefault_bytes = bytes;
                }
                let log = Log::open(dir.path(), config).unwrap();
                let n = w.batches_per_iter();
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..n {
                        log.append(&pool.batches[i % pool.batches.len()]).unwrap();
                    }
                }
                let elapsed = start.elapsed();
                log.simulate_crash();
                elapsed
            });
        });
    }
    // oncelog, SyncMode::Os, one idempotent producer: the same records, numbered; every
    // append is checked against the producer's state and recorded. The batches carry fresh
    // sequences each round, so they are rebuilt before the clock starts. `_plain_unique` builds
    // the same rounds without a producer: the idempotence cost is the ratio of these two (the
    // rounds are a gigabyte of freshly built batches, not the cycled 64 MiB pool, which on its
    // own made the idempotent variant look up to 30 % slower than `oncelog_append_os`).
    for (label, idempotent) in [
        ("oncelog_append_os_idempotent", true),
        ("oncelog_append_os_plain_unique", false),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(dir.path(), bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
                let (pid, epoch) = log.init_producer().unwrap();
                let n = w.batches_per_iter();
                let mut rounds: Vec<Vec<RecordBatch>> = Vec::new();
                let mut seq = 0i32;
                for _ in 0..iters {
                    let round = (0..n)
                        .map(|i| {
                            let first = (i % pool.batches.len()) * w.per_batch;
                            let producer = idempotent.then_some((pid, epoch, seq));
                            let b = build_batch(&w, &pool.values, first, TS0, producer);
                            seq += w.per_batch as i32;
                            b
                        })
                        .collect();
                    rounds.push(round);
                }
                let start = Instant::now();
                for round in &rounds {
                    for batch in round {
                        log.append(batch).unwrap();
                    }
                }
                let elapsed = start.elapsed();
                log.simulate_crash();
                elapsed
            });
        });
    }
    // Peer: commitlog. One MessageBuf (message set) per batch with the same record values; the
    // crate checksums (CRC-32C) at push time, which is outside the clock, like oncelog's build.
    // Segments of the same size; the index sized so it never grows mid-segment.
    let mut sets: Vec<MessageBuf> = (0..pool.batches.len())
        .map(|b| {
            let mut m = MessageBuf::default();
            for r in 0..w.per_batch {
                m.push(&pool.values[b * w.per_batch + r]).unwrap();
            }
            m
        })
        .collect();
    group.bench_function("commitlog_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut opts = LogOptions::new(dir.path());
            opts.segment_max_bytes(SEGMENT_BYTES as usize)
                .index_max_items(SEGMENT_BYTES as usize / (w.record_bytes + 20) + 1)
                .message_max_bytes(1 << 20);
            let mut log = CommitLog::new(opts).unwrap();
            let n = w.batches_per_iter();
            let len = sets.len();
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..n {
                    log.append(&mut sets[i % len]).unwrap();
                }
            }
            start.elapsed()
        });
    });
    // Peer: nano-wal. One vectored write (append_batch) per batch of the same values; no
    // checksum; a single segment file (its segments rotate by time, not size).
    let entries: Vec<Vec<WriteEntry<'_>>> = (0..pool.batches.len())
        .map(|b| {
            (0..w.per_batch)
                .map(|r| WriteEntry {
                    header: None,
                    content: &pool.values[b * w.per_batch + r],
                })
                .collect()
        })
        .collect();
    group.bench_function("nano_wal_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let opts = WalOptions {
                retention: Duration::from_secs(7 * 24 * 3600),
                segment_duration: Duration::from_secs(24 * 3600),
            };
            let wal = Wal::new(dir.path(), "bench", opts).unwrap();
            let n = w.batches_per_iter();
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..n {
                    wal.append_batch(&entries[i % entries.len()], TS0, false)
                        .unwrap();
                }
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn append_1k_x64(c: &mut Criterion) {
    append_group(c, Workload::kb_x64());
}

fn append_100b_x16(c: &mut Criterion) {
    append_group(c, Workload::b100_x16());
}

fn every_append_64k(c: &mut Criterion) {
    let w = Workload {
        name: "64k",
        per_batch: 64,
        record_bytes: 1000,
        records: scaled(256 * 64, 16 * 64),
    };
    let pool = Pool::new(&w);
    let iteration = pool.iteration(&w);
    let bytes = total_len(&iteration) as u64;
    let mut group = c.benchmark_group("every_append_64k");
    group.throughput(Throughput::Bytes(bytes));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    memcpy_resident_map(&mut group, &iteration);
    memcpy_fresh_map(&mut group, &iteration);
    write_per_batch(&mut group, &iteration);
    write_fdatasync_per_batch(&mut group, &iteration);
    write_fdatasync_per_batch_threads(&mut group, &iteration, 16);
    let batches = Arc::new(pool.batches.clone());
    let n = w.batches_per_iter();
    // `oncelog_every_append`: the default, one flush per durable point (the recovery point's
    // fdatasync lags by up to 50 ms). `oncelog_every_append_rp_synced`: `recovery_point_lag_ms
    // = 0`, the recovery point fdatasynced after every lane (two flushes per durable point).
    let variants = [
        ("oncelog_every_append", 50, &[1usize, 4, 16][..]),
        ("oncelog_every_append_rp_synced", 0, &[1usize, 16][..]),
    ];
    for (name, lag_ms, thread_counts) in variants {
        for &threads in thread_counts {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let cfg = LogConfig {
                        recovery_point_lag_ms: lag_ms,
                        ..bench_config(SEGMENT_BYTES, SyncMode::EveryAppend)
                    };
                    let log = Log::open(dir.path(), cfg).unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|s| {
                            for t in 0..threads {
                                let log = &log;
                                let batches = Arc::clone(&batches);
                                s.spawn(move || {
                                    for i in (t..n).step_by(threads) {
                                        log.append(&batches[i % batches.len()]).unwrap();
                                    }
                                });
                            }
                        });
                    }
                    let elapsed = start.elapsed();
                    log.simulate_crash();
                    elapsed
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append_1k_x64, append_100b_x16, every_append_64k);
criterion_main!(benches);
