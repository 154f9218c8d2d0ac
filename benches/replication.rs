//! Replicated produce through the thread-per-replica driver (`ThreadCluster`): acks=all with
//! three in-process replicas against a single replica (the same driver with one replica, where
//! the HW moves at the append), and acks=1 with three; 1,000-byte records in batches of 64 (and
//! 16), with 1 or 5 requests in flight (5 = the idempotent producer's window).
//!
//! Criterion's time per iteration is the time per batch (for 1 in flight: the latency). Every
//! request's own latency (send -> answer) is recorded too, and `p50`/`p99` and the throughput
//! of each case are printed after it and again as a table at the end (warm-up included), with
//! the process's CPU time per batch (all threads: client, replicas, their logs' helpers).
//!
//! Last, outside criterion, the headline ratio (acks=all, 3 replicas / 1 replica) is measured
//! *interleaved*: both clusters up, driven in alternating 0.5 s slices, 10 rounds each for 1 and
//! 5 in flight, so a busy machine slows both alike.
//!
//! `cargo bench --bench replication` (about 2 minutes); `-- --test` runs each case once.
//! The replicas' directories are in a temporary directory under `$ONCELOG_BENCH_DIR` (default:
//! the system's temporary directory).

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oncelog::cluster::{ClusterOptions, ThreadCluster};
use oncelog::replica::Acks;
use oncelog::replication::LeaderConfig;
use oncelog::{BatchBuilder, LogConfig, RecordBatch, SyncMode};

const RECORD_BYTES: usize = 1_000;

fn batch(records: usize) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(records * (RECORD_BYTES + 16) + 128);
    for r in 0..records {
        let v = common::noise(RECORD_BYTES, r as u64);
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

/// CPU time (user + system) of this process so far, from /proc/self/stat (10 ms ticks; zero
/// where there is no /proc).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

/// Per-request latencies and totals of one case.
#[derive(Debug, Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    bytes: u64,
    batches: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Stats {
    fn percentile(sorted: &[u64], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(sorted[i.min(sorted.len() - 1)])
    }

    /// p50, p99, MB/s, requests, CPU time per batch (all threads of the process).
    fn summary(&self) -> (Duration, Duration, f64, usize, Duration) {
        let mut sorted = self.latencies_ns.clone();
        sorted.sort_unstable();
        let mb_s = self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6;
        let cpu_per_batch = self.cpu / u32::try_from(self.batches.max(1)).unwrap_or(u32::MAX);
        (
            Self::percentile(&sorted, 0.50),
            Self::percentile(&sorted, 0.99),
            mb_s,
            sorted.len(),
            cpu_per_batch,
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
            let cpu = process_cpu();
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
            s.batches += iters;
            s.elapsed += elapsed;
            s.cpu += process_cpu().saturating_sub(cpu);
            elapsed
        })
    });
    group.finish();
    cluster.shutdown().unwrap();
    let stats = stats.into_inner();
    let (p50, p99, mb_s, n, cpu) = stats.summary();
    println!(
        "{}: {n} requests, p50 {p50:.1?}, p99 {p99:.1?}, {mb_s:.0} MB/s, CPU {cpu:.1?} per batch",
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
    println!("\ncase                              requests      p50       p99     MB/s  CPU/batch");
    for (name, stats) in &report {
        let (p50, p99, mb_s, n, cpu) = stats.summary();
        println!(
            "{name:<32} {n:>9} {:>9} {:>9} {mb_s:>8.0} {:>10}",
            format!("{p50:.1?}"),
            format!("{p99:.1?}"),
            format!("{cpu:.1?}")
        );
    }
}

/// Sends batches to `client` for `slice` with `in_flight` outstanding; returns (batches, time).
fn drive(
    client: &oncelog::cluster::ClusterClient,
    batch: &RecordBatch,
    in_flight: usize,
    slice: Duration,
) -> (u64, Duration) {
    let mut window = VecDeque::with_capacity(in_flight);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < slice {
        if window.len() == in_flight {
            let pending: oncelog::cluster::PendingProduce = window.pop_front().unwrap();
            pending.wait().unwrap();
        }
        window.push_back(client.send(batch.clone()).unwrap());
        n += 1;
    }
    for pending in window {
        pending.wait().unwrap();
    }
    (n, start.elapsed())
}

/// The headline ratio measured robustly on a shared machine: a 1-replica and a 3-replica
/// cluster are both up and driven in alternating slices (so both see the same background load),
/// acks=all, 1 KB x 64; prints each round's ratio and the median.
fn interleaved_ratio(in_flight: usize, rounds: usize, slice: Duration) {
    let base = std::env::var_os("ONCELOG_BENCH_DIR");
    let tmp = |_| match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let (d1, d3) = (tmp(1), tmp(3));
    let one = ThreadCluster::start(d1.path(), 1, options(1)).unwrap();
    let three = ThreadCluster::start(d3.path(), 3, options(3)).unwrap();
    let batch = batch(64);
    let (c1, c3) = (one.producer_handle(), three.producer_handle());
    c3.send(batch.clone()).unwrap().wait().unwrap();
    let mut ratios = Vec::new();
    let (mut b1, mut t1, mut b3, mut t3) = (0, Duration::ZERO, 0, Duration::ZERO);
    for round in 0..rounds {
        // Alternate which goes first so neither always follows the other's page-cache churn.
        let (r1, r3) = if round % 2 == 0 {
            let r1 = drive(&c1, &batch, in_flight, slice);
            (r1, drive(&c3, &batch, in_flight, slice))
        } else {
            let r3 = drive(&c3, &batch, in_flight, slice);
            (drive(&c1, &batch, in_flight, slice), r3)
        };
        let rate = |(n, t): (u64, Duration)| n as f64 / t.as_secs_f64().max(1e-9);
        ratios.push(rate(r3) / rate(r1));
        (b1, t1, b3, t3) = (b1 + r1.0, t1 + r1.1, b3 + r3.0, t3 + r3.1);
    }
    one.shutdown().unwrap();
    three.shutdown().unwrap();
    let mb_s = |n: u64, t: Duration| n as f64 * batch.len() as f64 / t.as_secs_f64() / 1e6;
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "interleaved acks=all 1k_x64 inflight{in_flight}: 1 replica {:.0} MB/s, 3 replicas {:.0} \
         MB/s; ratio per round [{}], median {:.2}",
        mb_s(b1, t1),
        mb_s(b3, t3),
        shown.join(" "),
        sorted[sorted.len() / 2]
    );
}

fn interleaved(_c: &mut Criterion) {
    // Honour a name filter (`cargo bench --bench replication -- 3r_`) like criterion's cases.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "interleaved".contains(f.as_str())) {
        return;
    }
    let test_mode = std::env::args().any(|a| a == "--test");
    let (rounds, slice) = if test_mode {
        (1, Duration::from_millis(20))
    } else {
        (10, Duration::from_millis(500))
    };
    for in_flight in [1, 5] {
        interleaved_ratio(in_flight, rounds, slice);
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
    targets = replication, interleaved
}
criterion_main!(benches);
