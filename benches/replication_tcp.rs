//! Replicated produce over loopback TCP, the way an operator runs it: an `oncelog controller`
//! and three `oncelog node` processes (min ISR 2), driven through `PartitionClient`, one batch
//! of 16 records of 1,000 bytes per request.
//!
//! Cases: acks=all and acks=1 with 1 request in flight (criterion's time per iteration is then
//! the latency of one batch), and with 5 in flight (5 client threads, each with its own
//! connection; time per iteration = time per batch, so throughput). Every request's own latency
//! is recorded too; p50/p99 and the batches per second of each case are printed after it and
//! as a table at the end, with the ratio acks=all / acks=1 at 5 in flight.
//!
//! `cargo bench --bench replication_tcp` (about a minute); `-- --test` runs each case once.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oncelog::net::{ClusterFile, ControllerClient, TransportConfig};
use oncelog::node::PartitionClient;
use oncelog::producer::ProduceTarget;
use oncelog::replica::Acks;
use oncelog::{BatchBuilder, RecordBatch};

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");
const RECORDS: usize = 16;
const RECORD_BYTES: usize = 1_000;
const IN_FLIGHT: usize = 5;

/// The processes of one cluster; killed when dropped.
struct Cluster {
    _tmp: tempfile::TempDir,
    file: ClusterFile,
    procs: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("its address").port()
}

fn spawn(dir: &Path, args: &[&str], log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).expect("create a process log");
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start oncelog")
}

impl Cluster {
    fn start() -> Cluster {
        let base =
            std::env::var_os("ONCELOG_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let tmp = tempfile::tempdir_in(base).expect("bench directory");
        let dir = tmp.path().to_path_buf();
        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let text = format!(
            "controller 127.0.0.1:{}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
             replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n",
            ports[0], ports[1], ports[2], ports[3]
        );
        let path = dir.join("cluster.txt");
        std::fs::write(&path, text).expect("write the cluster file");
        let cluster = path.to_str().expect("utf-8 path").to_string();
        let mut procs = vec![spawn(
            &dir,
            &["controller", "--insecure", "--cluster", &cluster],
            "controller.log",
        )];
        for id in 1..=3u32 {
            let id = id.to_string();
            procs.push(spawn(
                &dir,
                &[
                    "node",
                    "--insecure",
                    "--cluster",
                    &cluster,
                    "--id",
                    &id,
                    "--tick-ms",
                    "20",
                    "--segment-bytes",
                    "67108864",
                ],
                &format!("node{id}.log"),
            ));
        }
        let file = ClusterFile::load(&path).expect("load the cluster file");
        let mut ctl = ControllerClient::new(
            file.controller,
            TransportConfig::default(),
            Duration::from_secs(2),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = ctl
                .metadata()
                .is_ok_and(|m| m.state.leader.is_some() && m.state.isr.len() == 3);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no leader with a full ISR within 60 s (logs in {})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Cluster {
            _tmp: tmp,
            file,
            procs,
        }
    }

    fn client(&self, acks: Acks) -> PartitionClient {
        PartitionClient::new(self.file.clone(), acks)
    }
}

fn batch(seed: u64) -> RecordBatch {
    let value = common::noise(RECORD_BYTES, seed);
    let mut b = BatchBuilder::with_capacity(RECORDS * (RECORD_BYTES + 16) + 128);
    for r in 0..RECORDS {
        b.push(1_700_000_000_000 + r as i64, None, Some(&value));
    }
    b.build().expect("a valid batch")
}

/// What one case measured, for the table at the end.
struct Row {
    name: String,
    p50: Duration,
    p99: Duration,
    batches_per_s: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn row(name: &str, mut lat: Vec<Duration>, batches: u64, spent: Duration) -> Row {
    lat.sort();
    let r = Row {
        name: name.to_string(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        batches_per_s: batches as f64 / spent.as_secs_f64().max(1e-9),
    };
    println!(
        "{:<28} p50 {:>9.3?} p99 {:>9.3?} {:>9.0} batches/s",
        r.name, r.p50, r.p99, r.batches_per_s
    );
    r
}

/// `n` batches through `clients` (one thread each, one request in flight per thread); the
/// latency of every request, and the wall time of the whole.
fn drive(clients: &[PartitionClient], n: u64, seed: u64) -> (Vec<Duration>, Duration) {
    let per = n.div_ceil(clients.len() as u64);
    let started = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let b = batch(seed + i as u64);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per as usize);
                    for _ in 0..per {
                        let t = Instant::now();
                        c.produce(&b).expect("a replicated produce");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect()
    });
    (lat, started.elapsed())
}

fn bench(c: &mut Criterion) {
    let cluster = Cluster::start();
    let rows = RefCell::new(Vec::new());
    let mut g = c.benchmark_group("replication_tcp");
    g.throughput(Throughput::Bytes((RECORDS * RECORD_BYTES) as u64));
    g.measurement_time(Duration::from_secs(common::scaled(8, 1)));
    g.warm_up_time(Duration::from_secs(common::scaled(2, 1)));
    g.sample_size(common::scaled(30, 10));
    for (acks, name) in [(Acks::All, "acks_all"), (Acks::Leader, "acks_1")] {
        for in_flight in [1, IN_FLIGHT] {
            let clients: Vec<PartitionClient> =
                (0..in_flight).map(|_| cluster.client(acks)).collect();
            let id = format!("{name}_{in_flight}_in_flight");
            let all = RefCell::new((Vec::new(), 0u64, Duration::ZERO));
            g.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let (lat, spent) = drive(&clients, iters, iters);
                    let mut a = all.borrow_mut();
                    a.1 += lat.len() as u64;
                    a.2 += spent;
                    a.0.extend(lat);
                    spent
                });
            });
            let (lat, batches, spent) = all.into_inner();
            rows.borrow_mut().push(row(&id, lat, batches, spent));
        }
    }
    g.finish();
    let rows = rows.into_inner();
    println!("\nreplicated produce over loopback TCP, 3 node processes, 16 x 1000 B batches:");
    for r in &rows {
        println!(
            "  {:<28} p50 {:>9.3?}  p99 {:>9.3?}  {:>9.0} batches/s",
            r.name, r.p50, r.p99, r.batches_per_s
        );
    }
    let rate = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .map_or(0.0, |r| r.batches_per_s)
    };
    let (all5, one5) = (rate("acks_all_5_in_flight"), rate("acks_1_5_in_flight"));
    if one5 > 0.0 {
        println!(
            "  acks=all / acks=1 throughput at {IN_FLIGHT} in flight: {:.2}",
            all5 / one5
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
