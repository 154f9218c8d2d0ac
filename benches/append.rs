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
//! * `built_append_1k_x64` and `built_append_100b_x16`: the user path. The same workloads, but
//!   every contender builds each batch inside the clock from the record values, the way a caller
//!   does: oncelog with `BatchBuilder` then `Log::append`, write(2) of the bytes of a batch built
//!   the same way, commitlog with a `MessageBuf` per batch, nano-wal with a `WriteEntry` list per
//!   batch. `oncelog_prebuilt_append` appends prebuilt batches in the same run: the building cost.
//! * `every_append_64k` and `every_append_100b_x16`: durable appends of 64 KB batches and of
//!   100 B x 16 batches (256 per iteration, prebuilt: a build costs microseconds, a flush
//!   milliseconds) from 1, 4 (64 KB only) and 16 threads against one write + fdatasync per batch
//!   (and pwrite + fdatasync from 16 threads; no unsynced baseline, whose writeback would slow
//!   the flushes measured after it), and the durable peers from 1 and 16 threads:
//!   nano-wal's `append_batch(.., durable = true)` (writev + fdatasync under its file mutex) and
//!   okaywal (an entry of one chunk per record, `commit` waits for its group fsync). From 1 and
//!   16 threads oncelog also runs with the recovery point fdatasynced after every lane
//!   (`oncelog_every_append_rp_synced`, `recovery_point_lag_ms = 0`: two flushes per durable
//!   point) beside the default (one).
//!
//! Each sample appends into a new log (a new file for the baselines) that grows over the
//! sample's iterations, so segment rolls and first-touch page faults are part of every number.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use commitlog::message::MessageBuf;
use commitlog::{CommitLog, LogOptions};
use common::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use nano_wal::{Wal, WalOptions, WriteEntry};
use okaywal::{Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};
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
    let mut sets: Vec<MessageBuf> = pool.values.chunks(w.per_batch).map(message_set).collect();
    group.bench_function("commitlog_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut log = commitlog(dir.path(), &w);
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
    let entries: Vec<Vec<WriteEntry<'_>>> =
        pool.values.chunks(w.per_batch).map(write_entries).collect();
    group.bench_function("nano_wal_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let wal = nano_wal(dir.path());
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

/// A commitlog in `dir` with oncelog's segment size; the index sized so it never grows
/// mid-segment.
fn commitlog(dir: &std::path::Path, w: &Workload) -> CommitLog {
    let mut opts = LogOptions::new(dir);
    opts.segment_max_bytes(SEGMENT_BYTES as usize)
        .index_max_items(SEGMENT_BYTES as usize / (w.record_bytes + 20) + 1)
        .message_max_bytes(1 << 20);
    CommitLog::new(opts).unwrap()
}

/// commitlog's message set of `values` (CRC-32C computed at each push).
fn message_set(values: &[Vec<u8>]) -> MessageBuf {
    let mut set = MessageBuf::default();
    for v in values {
        set.push(v).unwrap();
    }
    set
}

/// nano-wal's entries for `values`, without headers.
fn write_entries(values: &[Vec<u8>]) -> Vec<WriteEntry<'_>> {
    values
        .iter()
        .map(|v| WriteEntry {
            header: None,
            content: v,
        })
        .collect()
}

/// A nano-wal in `dir` holding everything in one segment file (its segments rotate by time).
fn nano_wal(dir: &std::path::Path) -> Wal {
    let opts = WalOptions {
        retention: Duration::from_secs(7 * 24 * 3600),
        segment_duration: Duration::from_secs(24 * 3600),
    };
    Wal::new(dir, "bench", opts).unwrap()
}

/// The user path: every batch built inside the clock from the pool's record values, then
/// appended, for oncelog and for every peer and baseline, in one group.
fn built_append_group(c: &mut Criterion, w: Workload) {
    let pool = Pool::new(&w);
    let values = &pool.values;
    let n = w.batches_per_iter();
    let first = |i: usize| (i % pool.batches.len()) * w.per_batch;
    let mut group = c.benchmark_group(format!("built_append_{}", w.name));
    group.throughput(Throughput::Elements(w.records as u64));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));

    group.bench_function("write_built_per_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter_custom(|iters| {
            let mut f = std::fs::File::create(dir.path().join("w")).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..n {
                    let batch = build_batch(&w, values, first(i), TS0, None);
                    f.write_all(batch.as_bytes()).unwrap();
                }
            }
            start.elapsed()
        });
    });
    for (label, prebuilt) in [
        ("oncelog_built_append", false),
        ("oncelog_prebuilt_append", true),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(dir.path(), bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..n {
                        if prebuilt {
                            log.append(&pool.batches[i % pool.batches.len()]).unwrap();
                        } else {
                            let batch = build_batch(&w, values, first(i), TS0, None);
                            log.append(&batch).unwrap();
                        }
                    }
                }
                let elapsed = start.elapsed();
                log.simulate_crash();
                elapsed
            });
        });
    }
    group.bench_function("commitlog_built_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut log = commitlog(dir.path(), &w);
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..n {
                    let mut set = message_set(&values[first(i)..first(i) + w.per_batch]);
                    log.append(&mut set).unwrap();
                }
            }
            start.elapsed()
        });
    });
    group.bench_function("nano_wal_built_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let wal = nano_wal(dir.path());
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..n {
                    let entries = write_entries(&values[first(i)..first(i) + w.per_batch]);
                    wal.append_batch(&entries, TS0, false).unwrap();
                }
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn built_append_1k_x64(c: &mut Criterion) {
    built_append_group(c, Workload::kb_x64());
}

fn built_append_100b_x16(c: &mut Criterion) {
    built_append_group(c, Workload::b100_x16());
}

/// okaywal's log manager for the benches: nothing to recover, checkpoints dropped (the bench
/// measures the log, not a store behind it).
#[derive(Debug)]
struct NoStore;

impl LogManager for NoStore {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `per_thread(t)` on `threads` scoped threads, `iters` times; returns the time taken.
fn timed_threads(iters: u64, threads: usize, per_thread: impl Fn(usize) + Sync) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        std::thread::scope(|s| {
            for t in 0..threads {
                let per_thread = &per_thread;
                s.spawn(move || per_thread(t));
            }
        });
    }
    start.elapsed()
}

/// Durable appends of `w`'s prebuilt batches: oncelog (`EveryAppend`) from each of `threads`,
/// the durable peers from 1 and 16 threads, and the write + fdatasync baselines.
fn every_append_group(c: &mut Criterion, w: Workload, threads: &[usize]) {
    let pool = Pool::new(&w);
    let iteration = pool.iteration(&w);
    let bytes = total_len(&iteration) as u64;
    let mut group = c.benchmark_group(format!("every_append_{}", w.name));
    group.throughput(Throughput::Bytes(bytes));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    // Only durable baselines here: the unsynced ones (memcpy, write without a sync) leave
    // gigabytes of dirty pages whose writeback then shares the device with the next variants'
    // flushes (it made the first durable variants up to 8 x slower; docs/benchmarks.md).
    write_fdatasync_per_batch(&mut group, &iteration);
    write_fdatasync_per_batch_threads(&mut group, &iteration, 16);
    let batches = &pool.batches;
    let n = w.batches_per_iter();
    // `oncelog_every_append`: the default, one flush per durable point (the recovery point's
    // fdatasync lags by up to 50 ms). `oncelog_every_append_rp_synced`: `recovery_point_lag_ms
    // = 0`, the recovery point fdatasynced after every lane (two flushes per durable point).
    let variants = [
        ("oncelog_every_append", 50, threads),
        ("oncelog_every_append_rp_synced", 0, &[1usize, 16][..]),
    ];
    for (name, lag_ms, thread_counts) in variants {
        for &threads in thread_counts {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let config = LogConfig {
                        recovery_point_lag_ms: lag_ms,
                        ..bench_config(SEGMENT_BYTES, SyncMode::EveryAppend)
                    };
                    let log = Log::open(dir.path(), config).unwrap();
                    let elapsed = timed_threads(iters, threads, |t| {
                        for i in (t..n).step_by(threads) {
                            log.append(&batches[i % batches.len()]).unwrap();
                        }
                    });
                    log.simulate_crash();
                    elapsed
                });
            });
        }
    }
    // The peers write the same record values; `records(i)` are batch i's.
    let values = &pool.values;
    let records = |i: usize| {
        let first = (i % batches.len()) * w.per_batch;
        &values[first..first + w.per_batch]
    };
    for threads in [1usize, 16] {
        group.bench_with_input(
            BenchmarkId::new("nano_wal_durable", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let wal = nano_wal(dir.path());
                    timed_threads(iters, threads, |t| {
                        for i in (t..n).step_by(threads) {
                            wal.append_batch(&write_entries(records(i)), TS0, true)
                                .unwrap();
                        }
                    })
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("okaywal_commit", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let wal = WriteAheadLog::recover(dir.path(), NoStore).unwrap();
                    let elapsed = timed_threads(iters, threads, |t| {
                        for i in (t..n).step_by(threads) {
                            let mut entry = wal.begin_entry().unwrap();
                            for v in records(i) {
                                entry.write_chunk(v).unwrap();
                            }
                            entry.commit().unwrap();
                        }
                    });
                    wal.shutdown().unwrap();
                    elapsed
                });
            },
        );
    }
    group.finish();
}

fn every_append_64k(c: &mut Criterion) {
    let w = Workload {
        name: "64k",
        per_batch: 64,
        record_bytes: 1000,
        records: scaled(256 * 64, 16 * 64),
    };
    every_append_group(c, w, &[1, 4, 16]);
}

fn every_append_100b_x16(c: &mut Criterion) {
    let w = Workload {
        name: "100b_x16",
        per_batch: 16,
        record_bytes: 100,
        records: scaled(256 * 16, 16 * 16),
    };
    every_append_group(c, w, &[1, 16]);
}

criterion_group!(
    benches,
    append_1k_x64,
    append_100b_x16,
    built_append_1k_x64,
    built_append_100b_x16,
    every_append_64k,
    every_append_100b_x16
);
criterion_main!(benches);
