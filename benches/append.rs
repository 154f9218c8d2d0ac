//! Append throughput against the physical baselines, measured in the same run on the same
//! bytes, so the ratios survive a noisy machine (docs/benchmarks.md).
//!
//! Groups: `append_1k_x64` (1,000-byte records in batches of 64), `append_100b_x16` (100-byte
//! records in batches of 16) and `every_append_64k` (durable appends of 64 KB batches from 1, 4
//! and 16 threads against one `write`+`fdatasync` per batch).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oncelog::io::fs::RealStorage;
use oncelog::io::{AppendMap, OpenMode, Storage};
use oncelog::{BatchBuilder, Log, LogConfig, ProducerId, RecordBatch, SyncMode};

/// Incompressible bytes from a fixed seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `distinct` different batches of `per_batch` records of `record_bytes` each.
fn batches(
    distinct: usize,
    per_batch: usize,
    record_bytes: usize,
    idempotent: bool,
) -> Vec<RecordBatch> {
    (0..distinct)
        .map(|b| {
            let mut builder = BatchBuilder::with_capacity(per_batch * (record_bytes + 16) + 128);
            if idempotent {
                builder.set_producer(ProducerId(1), 0, (b * per_batch) as i32);
            }
            for r in 0..per_batch {
                let v = noise(record_bytes, (b * per_batch + r) as u64);
                builder.push(1_700_000_000_000 + r as i64, None, Some(&v));
            }
            builder.build().unwrap()
        })
        .collect()
}

fn bench_config(segment_bytes: u64, sync: SyncMode) -> LogConfig {
    LogConfig {
        segment_bytes,
        max_batch_bytes: 1 << 20,
        sync,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

const SEGMENT_BYTES: u64 = 256 << 20;

fn append_group(c: &mut Criterion, name: &str, per_batch: usize, record_bytes: usize) {
    let plain = batches(64, per_batch, record_bytes, false);
    let idem_template = batches(64, per_batch, record_bytes, true);
    let bytes: u64 = plain.iter().map(|b| b.len() as u64).sum();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    let storage = RealStorage;
    // Baseline 1: memcpy into a mapping whose pages are already resident.
    group.bench_function("memcpy_resident_map", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            // Every page is allocated, mapped and faulted in (written once) before the clock
            // starts: this is the copy alone, the physical limit of an mmap append.
            let path = dir.path().join("resident");
            let f = storage.open(&path, OpenMode::CreateTruncate).unwrap();
            let len = (bytes * iters) as usize;
            f.allocate(len as u64).unwrap();
            let map = AppendMap::new(f.map(len).unwrap(), 0);
            map.populate(0, len);
            let mut w = map.writer().unwrap();
            w.reserve(len).unwrap().fill(1);
            let map = AppendMap::new(f.map(len).unwrap(), 0);
            map.populate(0, len);
            let mut w = map.writer().unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                for batch in &plain {
                    w.reserve(batch.len())
                        .unwrap()
                        .copy_from_slice(batch.as_bytes());
                    w.advance(batch.len());
                }
                w.publish();
            }
            start.elapsed()
        });
    });
    // Baseline 2: memcpy into a freshly fallocated mapping (page faults included).
    group.bench_function("memcpy_fresh_map", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let path = dir.path().join("fresh");
            let f = storage.open(&path, OpenMode::CreateTruncate).unwrap();
            f.allocate(bytes * iters).unwrap();
            let map = AppendMap::new(f.map((bytes * iters) as usize).unwrap(), 0);
            let mut w = map.writer().unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                for batch in &plain {
                    w.reserve(batch.len())
                        .unwrap()
                        .copy_from_slice(batch.as_bytes());
                    w.advance(batch.len());
                }
                w.publish();
            }
            start.elapsed()
        });
    });
    // Baseline 3: one write(2) per batch.
    group.bench_function("write_per_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.path().join("w"))
                .unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                for batch in &plain {
                    f.write_all(batch.as_bytes()).unwrap();
                }
            }
            start.elapsed()
        });
    });
    for (label, idempotent) in [
        ("oncelog_append_os", false),
        ("oncelog_append_os_idempotent", true),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(dir.path(), bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
                // Idempotent batches need fresh sequences each round: rebuild them per round
                // outside the timed region.
                let rounds: Vec<Vec<RecordBatch>> = if idempotent {
                    let (pid, epoch) = log.init_producer().unwrap();
                    let mut seq = 0i32;
                    (0..iters)
                        .map(|_| {
                            idem_template
                                .iter()
                                .map(|t| {
                                    let mut bld = BatchBuilder::with_capacity(t.len() + 64);
                                    bld.set_producer(pid, epoch, seq);
                                    for r in t.view().records() {
                                        let r = r.unwrap();
                                        bld.push(r.timestamp, r.key, r.value);
                                    }
                                    seq += bld.record_count();
                                    bld.build().unwrap()
                                })
                                .collect()
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let start = Instant::now();
                let schedule: Vec<&Vec<RecordBatch>> = if idempotent {
                    rounds.iter().collect()
                } else {
                    std::iter::repeat_n(&plain, iters as usize).collect()
                };
                for round in schedule {
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
    group.finish();
}

fn append_1k_x64(c: &mut Criterion) {
    append_group(c, "append_1k_x64", 64, 1000);
}

fn append_100b_x16(c: &mut Criterion) {
    append_group(c, "append_100b_x16", 16, 100);
}

fn every_append_64k(c: &mut Criterion) {
    let plain = batches(16, 64, 1000, false);
    let bytes: u64 = plain.iter().map(|b| b.len() as u64).sum();
    let mut group = c.benchmark_group("every_append_64k");
    group.throughput(Throughput::Bytes(bytes));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("write_fdatasync_per_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.path().join("w"))
                .unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                for batch in &plain {
                    f.write_all(batch.as_bytes()).unwrap();
                    f.sync_data().unwrap();
                }
            }
            start.elapsed()
        });
    });
    let plain = Arc::new(plain);
    for threads in [1usize, 4, 16] {
        group.bench_with_input(
            BenchmarkId::new("oncelog_every_append", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let log = Log::open(
                        dir.path(),
                        bench_config(SEGMENT_BYTES, SyncMode::EveryAppend),
                    )
                    .unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|s| {
                            for t in 0..threads {
                                let log = &log;
                                let plain = Arc::clone(&plain);
                                s.spawn(move || {
                                    for batch in plain.iter().skip(t).step_by(threads) {
                                        log.append(batch).unwrap();
                                    }
                                });
                            }
                        });
                    }
                    let elapsed = start.elapsed();
                    log.simulate_crash();
                    elapsed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, append_1k_x64, append_100b_x16, every_append_64k);
criterion_main!(benches);
