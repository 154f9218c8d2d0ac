//! Replicated produce through the thread-per-replica driver (`ThreadCluster`): acks=all with
//! three in-process replicas against a single replica (the same driver with one replica, where
//! the HW moves at the append), and acks=1 with three; 1,000-byte records in batches of 64 (and
//! 16), with 1 or 5 requests in flight (5 = the idempotent producer's window).
//!
//! Criterion's time per iteration is the time per batch (for 1 in flight: the latency). Every
//! request's own latency (send -> answer) is recorded too, and `p50`/`p99` and the throughput
//! of each case are printed after it and again as a table at the end (warm-up included).
//!
//! `cargo bench --bench replication` (about 1.5 minutes); `-- --test` runs each case once.
//! The replicas' directories are in a temporary directory under `$ONCELOG_BENCH_DIR` (default:
//! the system's temporary directory).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oncelog::cluster::{ClusterOptions, ThreadCluster};
use oncelog::replica::Acks;
use oncelog::replication::LeaderConfig;
use oncelog::{BatchBuilder, LogConfig, RecordBatch, SyncMode};

const RECORD_BYTES: usize = 1_000;

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

fn batch(records: usize) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(records * (RECORD_BYTES + 16) + 128);
    for r in 0..records {
        let v = noise(RECORD_BYTES, r as u64);
        b.push(1_700_000_000_000 + r as i64, None, Some(&v));
    }
    b.build().unwrap()
}

fn options(replicas: u32) -> ClusterOptions {
    ClusterOptions {
        log: LogConfig {
            segment_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            sync: SyncMode::Os,
            segment_ms: None,
            retention_ms: None,
            // Keeps the disk bounded over a long run; followers stay far above the log start.
            retention_bytes: Some(256 << 20),
            ..LogConfig::default()
        },
        leader: LeaderConfig {
            min_insync_replicas: replicas.min(2) as usize,
            replica_lag_time_max_ms: 30_000,
        },
        fetch_wait_ms: 500,
        tick_ms: 10,
        request_timeout_ms: 30_000,
        // ONCELOG_BENCH_HW_WAKES=0: followers learn the HW only with data (or after the wait).
        wake_followers_on_hw: std::env::var("ONCELOG_BENCH_HW_WAKES").map_or(true, |v| v != "0"),
        ..ClusterOptions::default()
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    replicas: u32,
    acks: Acks,
    records: usize,
    in_flight: usize,
}

impl Case {
    fn name(&self) -> String {
        let acks = match self.acks {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        };
        format!(
            "{}r_acks{acks}_1k_x{}_inflight{}",
            self.replicas, self.records, self.in_flight
        )
    }
}

/// Per-request latencies and totals of one case.
#[derive(Debug, Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    bytes: u64,
    elapsed: Duration,
}

impl Stats {
    fn percentile(sorted: &[u64], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(sorted[i.min(sorted.len() - 1)])
    }

    fn summary(&self) -> (Duration, Duration, f64, usize) {
        let mut sorted = self.latencies_ns.clone();
        sorted.sort_unstable();
        let mb_s = self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6;
        (
            Self::percentile(&sorted, 0.50),
            Self::percentile(&sorted, 0.99),
            mb_s,
            sorted.len(),
        )
    }
}

fn run_case(c: &mut Criterion, case: Case, report: &mut Vec<(String, Stats)>) {
    // ONCELOG_BENCH_DIR=/dev/shm takes the disk out of the comparison: three in-process
    // replicas write three times the bytes to one disk, which real replicas would not share.
    let dir = match std::env::var_os("ONCELOG_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let cluster = ThreadCluster::start(dir.path(), case.replicas, options(case.replicas)).unwrap();
    let client = cluster.producer_handle().with_acks(case.acks);
    let batch = batch(case.records);
    // Until every follower fetched once the leader holds the HW: settle with one acks=all.
    client
        .clone()
        .with_acks(Acks::All)
        .send(batch.clone())
        .unwrap()
        .wait()
        .unwrap();
    let stats = RefCell::new(Stats::default());
    let mut group = c.benchmark_group("replication");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function(case.name(), |b| {
        b.iter_custom(|iters| {
            let mut s = stats.borrow_mut();
            let mut window = VecDeque::with_capacity(case.in_flight);
            let start = Instant::now();
            for _ in 0..iters {
                if window.len() == case.in_flight {
                    let (sent, pending): (Instant, oncelog::cluster::PendingProduce) =
                        window.pop_front().unwrap();
                    pending.wait().unwrap();
                    s.latencies_ns.push(sent.elapsed().as_nanos() as u64);
                }
                let sent = Instant::now();
                window.push_back((sent, client.send(batch.clone()).unwrap()));
            }
            for (sent, pending) in window {
                pending.wait().unwrap();
                s.latencies_ns.push(sent.elapsed().as_nanos() as u64);
            }
            let elapsed = start.elapsed();
            s.bytes += iters * batch.len() as u64;
            s.elapsed += elapsed;
            elapsed
        })
    });
    group.finish();
    cluster.shutdown().unwrap();
    let stats = stats.into_inner();
    let (p50, p99, mb_s, n) = stats.summary();
    println!(
        "{}: {n} requests, p50 {p50:.1?}, p99 {p99:.1?}, {mb_s:.0} MB/s",
        case.name()
    );
    report.push((case.name(), stats));
}

fn replication(c: &mut Criterion) {
    let cases = [
        (1, Acks::All, 64, 1),
        (3, Acks::All, 64, 1),
        (3, Acks::Leader, 64, 1),
        (1, Acks::All, 64, 5),
        (3, Acks::All, 64, 5),
        (3, Acks::Leader, 64, 5),
        (1, Acks::All, 16, 5),
        (3, Acks::All, 16, 5),
    ];
    let mut report = Vec::new();
    for (replicas, acks, records, in_flight) in cases {
        let case = Case {
            replicas,
            acks,
            records,
            in_flight,
        };
        run_case(c, case, &mut report);
    }
    println!("\ncase                              requests      p50       p99     MB/s");
    for (name, stats) in &report {
        let (p50, p99, mb_s, n) = stats.summary();
        println!(
            "{name:<32} {n:>9} {:>9} {:>9} {mb_s:>8.0}",
            format!("{p50:.1?}"),
            format!("{p99:.1?}")
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = replication
}
criterion_main!(benches);
