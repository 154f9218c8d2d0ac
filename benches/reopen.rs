//! Reopen time. A clean reopen should not depend on the log's size (no scan: the active
//! segment's index and tail are loaded and the producer snapshot at the log end is read; sealed
//! segments are only mapped, their indexes wait for their first lookup); an unclean reopen
//! should cost in proportion to the unsynced tail, not the log.
//!
//! Logs of 1 GiB and 8 GiB (256 MiB segments) written by 100,000 idempotent producers in
//! batches of 10 records of 1,000 bytes, built once per size before any clock starts and
//! deleted after the size's benches. Before the log rolls to its last segment every producer
//! appends five more small batches, so both sizes end with the same producer state (five
//! batches in every producer's window, a 3.6 MB snapshot): open reads that snapshot, and
//! without this the 8 GiB log's producers had five batches each against the 1 GiB log's one, a
//! 3.7 MB snapshot against 1.0 MB, which made the clean open look size-dependent (+20 ms).
//! Each log ends one batch into a fresh segment, so the unsynced tail of the unclean benches is
//! the only data in the segment recovery scans.
//!
//! * `clean/<size>`: open after a clean close (timed), close (not timed).
//! * `unclean/<size>/tail<T>`: open, flush, append T bytes (the unsynced tail), crash (the
//!   page cache survives, as after kill -9), then the timed open: scan of the tail's segment and
//!   producer replay from the snapshot at its base. Untimed afterwards: truncate back to the
//!   built log and close, so every iteration sees the same log.

mod common;

use std::time::{Duration, Instant};

use common::scaled;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use oncelog::{BatchBuilder, Log, LogConfig, Offset, ProducerId, SyncMode};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: scaled(256 << 20, 4 << 20),
        max_batch_bytes: 1 << 20,
        sync: SyncMode::Os,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

fn producers() -> usize {
    scaled(100_000, 500)
}

/// Round-robin appends of 10 x 1,000-byte records per batch over every producer until at least
/// `bytes` are written and, if `to_roll`, until the batch just appended opened a new segment.
fn fill(log: &Log, bytes: u64, seqs: &mut [i32], next: &mut usize, to_roll: bool) -> u64 {
    let value = common::noise(1000, 7);
    let mut written = 0u64;
    let mut segments = log.segments().len();
    loop {
        let p = *next % seqs.len();
        *next += 1;
        let mut b = BatchBuilder::with_capacity(10_200).producer(ProducerId(p as i64), 0, seqs[p]);
        for r in 0..10 {
            b.push(common::TS0 + r, None, Some(&value));
        }
        seqs[p] += 10;
        let batch = b.build().unwrap();
        written += batch.len() as u64;
        log.append(&batch).unwrap();
        let now = log.segments().len();
        let rolled = now > segments;
        segments = now;
        if written >= bytes && (!to_roll || rolled) {
            return written;
        }
    }
}

/// Five rounds of one small batch per producer: every producer's 5-batch window is full, so
/// the producer state (and the snapshot open reads) is the same whatever the log's size.
fn fill_windows(log: &Log, seqs: &mut [i32]) -> u64 {
    let value = common::noise(100, 11);
    let mut written = 0;
    for _ in 0..5 {
        for (p, seq) in seqs.iter_mut().enumerate() {
            let mut b = BatchBuilder::with_capacity(200).producer(ProducerId(p as i64), 0, *seq);
            b.push(common::TS0, None, Some(&value));
            *seq += 1;
            let batch = b.build().unwrap();
            written += batch.len() as u64;
            log.append(&batch).unwrap();
        }
    }
    written
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{}GiB", bytes >> 30)
    } else {
        format!("{}MiB", bytes >> 20)
    }
}

fn reopen(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(200));
    let sizes: [u64; 2] = scaled([1 << 30, 8 << 30], [8 << 20, 32 << 20]);
    let tails: [u64; 2] = scaled([16 << 20, 128 << 20], [1 << 20, 2 << 20]);
    for size in sizes {
        let dir = tempfile::tempdir().unwrap();
        let mut seqs = vec![0i32; producers()];
        let mut next = 0usize;
        let built = Instant::now();
        let end = {
            let log = Log::open(dir.path(), config()).unwrap();
            let mut written = fill(&log, size, &mut seqs, &mut next, false);
            written += fill_windows(&log, &mut seqs);
            written += fill(&log, 0, &mut seqs, &mut next, true);
            assert!(next >= seqs.len(), "every producer has a batch in the log");
            let end = log.log_end_offset();
            println!(
                "reopen: built {} ({} segments, {} producers, {} records) in {:.1?}",
                human(written),
                log.segments().len(),
                seqs.len(),
                end.0,
                built.elapsed()
            );
            log.close().unwrap();
            end
        };
        group.bench_with_input(BenchmarkId::new("clean", human(size)), &size, |b, _| {
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
        });
        for tail in tails {
            let mut reported = false;
            let id = BenchmarkId::new("unclean", format!("{}/tail{}", human(size), human(tail)));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let log = Log::open(dir.path(), config()).unwrap();
                        log.flush().unwrap();
                        let mut tail_seqs = seqs.clone();
                        let mut tail_next = next;
                        fill(&log, tail, &mut tail_seqs, &mut tail_next, false);
                        log.simulate_crash();
                        let t = Instant::now();
                        let log = Log::open(dir.path(), config()).unwrap();
                        total += t.elapsed();
                        let report = log.recovery_report();
                        assert!(!report.clean_shutdown);
                        if !reported {
                            reported = true;
                            println!(
                                "reopen: unclean {} tail {}: {} segments, scanned {} segments, \
                                 {} bytes",
                                human(size),
                                human(tail),
                                report.segments,
                                report.segments_scanned,
                                report.bytes_scanned
                            );
                        }
                        // Back to the built log, outside the clock.
                        log.truncate_to(Offset(end.0)).unwrap();
                        assert_eq!(log.log_end_offset(), end);
                        log.close().unwrap();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, reopen);
criterion_main!(benches);
