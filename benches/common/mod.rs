//! Shared by the benches: workloads (incompressible bytes from a fixed seed), the physical
//! baselines every group measures beside oncelog in the same run on the same bytes, and the
//! test-mode switch that shrinks every workload for `cargo bench -- --test`.
#![allow(dead_code, reason = "each bench uses a different part of this module")]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use oncelog::io::fs::RealStorage;
use oncelog::io::{AppendMap, OpenMode, Storage};
use oncelog::{BatchBuilder, LogConfig, ProducerEpoch, ProducerId, RecordBatch, SyncMode};

/// `cargo bench -- --test` runs every bench once: shrink the workloads so CI stays quick.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// `full` normally, `small` under `--test`.
pub fn scaled<T>(full: T, small: T) -> T {
    if test_mode() {
        small
    } else {
        full
    }
}

/// Incompressible bytes from a fixed seed (xorshift64).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Record timestamps: one millisecond apart, starting here.
pub const TS0: i64 = 1_700_000_000_000;

/// A workload of the issue: `records` records of `record_bytes` in batches of `per_batch`.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub per_batch: usize,
    pub record_bytes: usize,
    /// Records per criterion iteration (1,000,000; fewer in test mode).
    pub records: usize,
}

impl Workload {
    pub fn kb_x64() -> Workload {
        Workload {
            name: "1k_x64",
            per_batch: 64,
            record_bytes: 1000,
            records: scaled(1_000_000, 8_192),
        }
    }

    pub fn b100_x16() -> Workload {
        Workload {
            name: "100b_x16",
            per_batch: 16,
            record_bytes: 100,
            records: scaled(1_000_000, 8_192),
        }
    }

    pub fn batches_per_iter(&self) -> usize {
        self.records / self.per_batch
    }

    /// Distinct batches kept in memory: enough that the source of a copy comes from memory, not
    /// from the cache (64 MiB), but never more than one iteration.
    pub fn pool_batches(&self) -> usize {
        let batch = self.per_batch * self.record_bytes;
        ((64usize << 20) / batch).clamp(1, self.batches_per_iter())
    }

    /// The value of record `r` of the pool.
    pub fn value(&self, r: usize) -> Vec<u8> {
        noise(self.record_bytes, r as u64)
    }
}

/// One batch of `w` with the values of pool records `first..first + per_batch`, timestamps from
/// `ts`, optionally idempotent.
pub fn build_batch(
    w: &Workload,
    values: &[Vec<u8>],
    first: usize,
    ts: i64,
    producer: Option<(ProducerId, ProducerEpoch, i32)>,
) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(w.per_batch * (w.record_bytes + 16) + 128);
    if let Some((id, epoch, seq)) = producer {
        b.set_producer(id, epoch, seq);
    }
    for r in 0..w.per_batch {
        let v = &values[(first + r) % values.len()];
        b.push(ts + r as i64, None, Some(v));
    }
    b.build().unwrap()
}

/// The pool: its record values and its plain (non-idempotent) batches.
pub struct Pool {
    pub values: Vec<Vec<u8>>,
    pub batches: Vec<RecordBatch>,
}

impl Pool {
    pub fn new(w: &Workload) -> Pool {
        let n = w.pool_batches();
        let values: Vec<Vec<u8>> = (0..n * w.per_batch).map(|r| w.value(r)).collect();
        let batches = (0..n)
            .map(|b| build_batch(w, &values, b * w.per_batch, TS0, None))
            .collect();
        Pool { values, batches }
    }

    /// The bytes of one iteration's batches, cycling through the pool.
    pub fn iteration<'a>(&'a self, w: &Workload) -> Vec<&'a [u8]> {
        (0..w.batches_per_iter())
            .map(|i| self.batches[i % self.batches.len()].as_bytes())
            .collect()
    }
}

pub fn bench_config(segment_bytes: u64, sync: SyncMode) -> LogConfig {
    LogConfig {
        segment_bytes,
        max_batch_bytes: 1 << 20,
        sync,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

pub const SEGMENT_BYTES: u64 = 256 << 20;

pub fn total_len(batches: &[&[u8]]) -> usize {
    batches.iter().map(|b| b.len()).sum()
}

/// Copies `iters` rounds of `batches` into `map` from position 0, as an append would.
fn copy_rounds(map: &std::sync::Arc<AppendMap>, batches: &[&[u8]], iters: u64) -> Duration {
    let mut w = map.writer().unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        for b in batches {
            w.reserve(b.len()).unwrap().copy_from_slice(b);
            w.advance(b.len());
        }
        w.publish();
    }
    start.elapsed()
}

/// Baseline: memcpy of the batches into a mapping whose pages are already resident (allocated,
/// mapped and written once before the clock starts): the copy alone, the limit of an mmap
/// append.
pub fn memcpy_resident_map(g: &mut BenchmarkGroup<'_, WallTime>, batches: &[&[u8]]) {
    let bytes = total_len(batches) as u64;
    g.bench_function("memcpy_resident_map", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let path = dir.path().join("resident");
            let f = RealStorage.open(&path, OpenMode::CreateTruncate).unwrap();
            let len = (bytes * iters) as usize;
            f.allocate(len as u64).unwrap();
            let map = AppendMap::new(f.map(len).unwrap(), 0);
            map.populate(0, len);
            map.writer().unwrap().reserve(len).unwrap().fill(1);
            copy_rounds(&map, batches, iters)
        });
    });
}

/// Baseline: memcpy into a freshly fallocated mapping: every page faulted on first touch.
pub fn memcpy_fresh_map(g: &mut BenchmarkGroup<'_, WallTime>, batches: &[&[u8]]) {
    let bytes = total_len(batches) as u64;
    g.bench_function("memcpy_fresh_map", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let path = dir.path().join("fresh");
            let f = RealStorage.open(&path, OpenMode::CreateTruncate).unwrap();
            f.allocate(bytes * iters).unwrap();
            let map = AppendMap::new(f.map((bytes * iters) as usize).unwrap(), 0);
            copy_rounds(&map, batches, iters)
        });
    });
}

fn new_file(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap()
}

/// Baseline: one write(2) per batch into a growing file (page cache, no sync).
pub fn write_per_batch(g: &mut BenchmarkGroup<'_, WallTime>, batches: &[&[u8]]) {
    g.bench_function("write_per_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let mut f = new_file(dir.path(), "w");
            let start = Instant::now();
            for _ in 0..iters {
                for batch in batches {
                    f.write_all(batch).unwrap();
                }
            }
            start.elapsed()
        });
    });
}

/// Baseline for durable groups: one write(2) + fdatasync(2) per batch, one thread.
pub fn write_fdatasync_per_batch(g: &mut BenchmarkGroup<'_, WallTime>, batches: &[&[u8]]) {
    g.bench_function("write_fdatasync_per_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let mut f = new_file(dir.path(), "w");
            let start = Instant::now();
            for _ in 0..iters {
                for batch in batches {
                    f.write_all(batch).unwrap();
                    f.sync_data().unwrap();
                }
            }
            start.elapsed()
        });
    });
}

/// Extra durable baseline: `threads` threads each doing pwrite(2) + fdatasync(2) per batch into
/// disjoint ranges of one file (what the device and the journal give concurrent syncs).
pub fn write_fdatasync_per_batch_threads(
    g: &mut BenchmarkGroup<'_, WallTime>,
    batches: &[&[u8]],
    threads: usize,
) {
    let bytes = total_len(batches) as u64;
    g.bench_function(
        format!("write_fdatasync_per_batch_{threads}_threads"),
        |b| {
            let dir = tempfile::tempdir().unwrap();
            b.iter_custom(|iters| {
                let f = new_file(dir.path(), "w");
                let start = Instant::now();
                for i in 0..iters {
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let f = &f;
                            s.spawn(move || {
                                let mut pos = i * bytes;
                                for (j, batch) in batches.iter().enumerate() {
                                    if j % threads == t {
                                        f.write_all_at(batch, pos).unwrap();
                                        f.sync_data().unwrap();
                                    }
                                    pos += batch.len() as u64;
                                }
                            });
                        }
                    });
                }
                start.elapsed()
            });
        },
    );
}
