//! The etcd harness of the controller-on-etcd tests: etcd members started in a temporary
//! directory on free loopback ports (short heartbeat and election timeouts), `oncelog
//! controller --etcd` and `oncelog node` processes, and replica sessions driven through the
//! controller protocol.
//!
//! Needs the `etcd` binary (Debian: `apt-get install -y etcd-server etcd-client
//! protobuf-compiler`; `.ci/run` installs it). A missing binary fails the test with that hint.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oncelog::etcd::{EtcdConfig, EtcdStore};
use oncelog::net::{ClusterFile, ControllerClient, ControllerStore, RemoteError, TransportConfig};
use oncelog::node::PartitionClient;
use oncelog::producer::{Delivery, Producer};
use oncelog::replication::{LeaderAndIsr, LogRecovery, ReplicaId};

use crate::procs::{free_port, spawn_logged, wait_for, Proc};

pub const BIN: &str = env!("CARGO_BIN_EXE_oncelog");
pub const INSTALL: &str = "apt-get install -y etcd-server etcd-client protobuf-compiler";

pub fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found on PATH: install it with `{INSTALL}`"))
}

/// An etcd cluster of one or three members on loopback, with short heartbeat and election
/// timeouts so failovers are quick.
pub struct Etcd {
    tmp: tempfile::TempDir,
    members: Vec<Option<Proc>>,
    /// Each member's command line (a restart reuses it: its data directory says the rest).
    args: Vec<Vec<String>>,
    urls: Vec<String>,
}

impl Etcd {
    pub fn start(n: usize) -> Etcd {
        let etcd = find_program("etcd");
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        let mut all_args = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let data = tmp.path().join(format!("m{i}"));
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let args = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "oncelog-test",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ];
            let log = tmp.path().join(format!("etcd{i}.log"));
            members.push(Some(spawn_logged(&etcd, &args, &log)));
            all_args.push(args.iter().map(|a| a.to_string()).collect());
        }
        let urls = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let e = Etcd {
            tmp,
            members,
            args: all_args,
            urls,
        };
        let store = e.store();
        // Answering once is not enough: right after start the members may still change
        // leader ("etcdserver: leader changed"). Ten answers in a row, 50 ms apart.
        let mut streak = 0;
        wait_for("etcd to answer steadily", 20, || {
            streak = if store.load().is_ok() { streak + 1 } else { 0 };
            streak >= 10
        });
        e
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn urls(&self) -> String {
        self.urls.join(",")
    }

    /// A client of the partition's keys (default prefix).
    pub fn store(&self) -> EtcdStore {
        let mut c = EtcdConfig::new(self.urls.clone());
        c.request_timeout = Duration::from_secs(1);
        EtcdStore::connect(c).unwrap()
    }

    /// Starts a killed member again on its data directory.
    pub fn restart(&mut self, member: usize) {
        let args: Vec<&str> = self.args[member].iter().map(String::as_str).collect();
        let log = self.dir().join(format!("etcd{member}-again.log"));
        self.members[member] = Some(spawn_logged(&find_program("etcd"), &args, &log));
    }

    pub fn kill9(&mut self, member: usize) {
        if let Some(mut p) = self.members[member].take() {
            p.kill9();
        }
    }
}

/// A three-replica cluster file naming `controllers` controller addresses.
pub fn cluster_file(dir: &Path, controllers: usize) -> (PathBuf, ClusterFile) {
    cluster_file_with(dir, controllers, "")
}

/// [`cluster_file`] with the `extra` lines too (e.g. the security lines of
/// `tests/common/pki.rs`).
pub fn cluster_file_with(dir: &Path, controllers: usize, extra: &str) -> (PathBuf, ClusterFile) {
    let addrs: Vec<String> = (0..controllers)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let text = format!(
        "controller {}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
         replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n{extra}",
        addrs.join(" "),
        free_port(),
        free_port(),
        free_port()
    );
    let path = dir.join("cluster.txt");
    std::fs::write(&path, text).unwrap();
    let c = ClusterFile::load(&path).unwrap();
    (path, c)
}

/// `oncelog controller --etcd` listening on `listen`.
pub fn controller(
    etcd: &Etcd,
    cluster: &Path,
    listen: SocketAddr,
    session_ms: u64,
    name: &str,
) -> Proc {
    let log = etcd.dir().join(format!("{name}.log"));
    let (urls, listen, session_ms) = (etcd.urls(), listen.to_string(), session_ms.to_string());
    let mut args = vec!["controller", "--cluster", cluster.to_str().unwrap()];
    args.extend(insecure(cluster));
    args.extend([
        "--etcd",
        &urls,
        "--listen",
        &listen,
        "--session-timeout-ms",
        &session_ms,
        "--election-ttl-ms",
        "1000",
    ]);
    let p = spawn_logged(Path::new(BIN), &args, &log);
    wait_for("the controller to listen", 20, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on"))
    });
    p
}

pub fn client(cluster: &ClusterFile) -> ControllerClient {
    ControllerClient::for_cluster(cluster, TransportConfig::default(), Duration::from_secs(2))
}

/// Retries `f` (through every controller the client knows) until it succeeds.
pub fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, oncelog::net::NetError>) -> T {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < until, "{what}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

pub fn state(c: &mut ControllerClient) -> LeaderAndIsr {
    retry("metadata", || c.metadata()).state
}

/// Keeps the sessions of `replicas` (id, incarnation) alive with a heartbeat every 100 ms,
/// re-registering after an expiry, until dropped.
pub struct Heartbeats {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    pub fn start(cluster: &ClusterFile, replicas: &[(u32, u64)]) -> Heartbeats {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, cluster, replicas) = (Arc::clone(&stop), cluster.clone(), replicas.to_vec());
        let thread = std::thread::spawn(move || {
            let mut c = client(&cluster);
            while !s.load(Ordering::Acquire) {
                for &(r, inc) in &replicas {
                    if let Err(e) = c.heartbeat(ReplicaId(r), inc, oncelog::Offset(0)) {
                        if matches!(
                            e.remote().map(|r| &r.error),
                            Some(RemoteError::SessionExpired { .. })
                        ) {
                            let _ = c.register(ReplicaId(r), inc, LogRecovery::Intact);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Heartbeats {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn register_all(c: &mut ControllerClient, incarnation: u64) {
    for r in 1..=3 {
        retry("register", || {
            c.register(ReplicaId(r), incarnation, LogRecovery::Intact)
        });
    }
}

/// Sends `sig` (`STOP`, `CONT`) to a process.
pub fn signal(p: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// `oncelog node --id ID`: plain TCP (`--insecure`) unless the cluster file turns TLS on.
pub fn node(etcd: &Etcd, cluster: &Path, id: u32) -> Proc {
    node_ticking(etcd, cluster, id, 20)
}

/// `oncelog node` heartbeating (and ticking) every `tick_ms`; plain TCP (`--insecure`) unless
/// the cluster file turns TLS on.
pub fn node_ticking(etcd: &Etcd, cluster: &Path, id: u32, tick_ms: u64) -> Proc {
    let lag_ms = (tick_ms * 4).max(1_000).to_string();
    let (id_text, tick_text) = (id.to_string(), tick_ms.to_string());
    let mut args = vec!["node", "--cluster", cluster.to_str().unwrap()];
    args.extend(insecure(cluster));
    args.extend([
        "--id",
        &id_text,
        "--tick-ms",
        &tick_text,
        "--lag-ms",
        &lag_ms,
    ]);
    // A restarted node appends to the same log file.
    spawn_logged(
        Path::new(BIN),
        &args,
        &etcd.dir().join(format!("node{id}.log")),
    )
}

/// `--insecure` for a cluster file without `tls_ca` (the processes refuse plain TCP without
/// it, and refuse it when the file turns TLS on).
fn insecure(cluster: &Path) -> Option<&'static str> {
    let file = ClusterFile::load(cluster).unwrap();
    (!file.tls.enabled()).then_some("--insecure")
}

/// An idempotent producer over `partition` whose deliveries go to a `Vec`; its id request is
/// retried like any client retries an `Unavailable` answer (etcd may be changing leader).
pub fn producer(partition: &PartitionClient) -> Producer<&PartitionClient, Vec<(u64, Delivery)>> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match Producer::with_sink(partition, Vec::new()) {
            Ok(p) => return p,
            Err(e) => {
                assert!(Instant::now() < until, "no producer id: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
