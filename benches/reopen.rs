//! Reopen time: a clean reopen must not depend on the log's size (no scan: indexes and tails
//! are loaded, the producer snapshot at the log end is read), and an unclean reopen must cost
//! in proportion to the unsynced tail, not the log. Logs of 1 GiB and 4 GiB, 10,000 producers.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use oncelog::{BatchBuilder, Log, LogConfig, ProducerId, SyncMode};

const SEGMENT: u64 = 256 << 20;
const PRODUCERS: i64 = 10_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT,
        max_batch_bytes: 1 << 20,
        sync: SyncMode::Os,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

/// Appends about `bytes` of 64 KB idempotent batches spread over PRODUCERS producers.
fn fill(log: &Log, bytes: u64, seqs: &mut [i32]) {
    let value = vec![7u8; 1000];
    let mut written = 0u64;
    let mut n = 0usize;
    while written < bytes {
        let p = n % PRODUCERS as usize;
        let mut b = BatchBuilder::with_capacity(70_000).producer(ProducerId(p as i64), 0, seqs[p]);
        for _ in 0..64 {
            b.push(1_700_000_000_000, None, Some(&value));
        }
        seqs[p] += 64;
        let batch = b.build().unwrap();
        written += batch.len() as u64;
        log.append(&batch).unwrap();
        n += 1;
    }
}

fn reopen(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    for gib in [1u64, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut seqs = vec![0i32; PRODUCERS as usize];
        {
            let log = Log::open(dir.path(), config()).unwrap();
            fill(&log, gib << 30, &mut seqs);
            log.close().unwrap();
        }
        group.bench_with_input(
            BenchmarkId::new("clean", format!("{gib}GiB")),
            &gib,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let log = Log::open(dir.path(), config()).unwrap();
                        total += t.elapsed();
                        assert!(log.recovery_report().clean_shutdown);
                        log.close().unwrap();
                    }
                    total
                })
            },
        );
        // Unclean: a 16 MiB unsynced tail after the last flush, then a crash (kill -9 model:
        // the page cache survives). Recovery scans the tail's segment and replays producers
        // from the last snapshot.
        group.bench_with_input(
            BenchmarkId::new("unclean_16MiB_tail", format!("{gib}GiB")),
            &gib,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let log = Log::open(dir.path(), config()).unwrap();
                        log.flush().unwrap();
                        fill(&log, 16 << 20, &mut seqs);
                        log.simulate_crash();
                        let t = Instant::now();
                        let log = Log::open(dir.path(), config()).unwrap();
                        total += t.elapsed();
                        assert!(!log.recovery_report().clean_shutdown);
                        log.close().unwrap();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, reopen);
criterion_main!(benches);
