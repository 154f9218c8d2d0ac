//! The controller on etcd, with real processes on loopback: etcd members started here in
//! temporary directories on free ports, `oncelog controller --etcd` processes, and replica
//! sessions driven through the controller protocol (`ControllerClient`).
//!
//! Needs the `etcd` binary (Debian: `apt-get install -y etcd-server etcd-client
//! protobuf-compiler`; `.ci/run` installs it). A missing binary fails the test with that hint.
#![cfg(feature = "etcd")]

#[path = "common/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oncelog::clock::ManualClock;
use oncelog::etcd::{EtcdConfig, EtcdStore};
use oncelog::net::{
    ClusterFile, ControllerClient, ControllerConfig, ControllerService, ControllerStore,
    ErrorReply, Message, RemoteError, TransportConfig,
};
use procs::{assert_exactly_once, free_port, spawn_logged, wait_for, Proc};

use oncelog::node::PartitionClient;
use oncelog::producer::{Delivery, Producer};
use oncelog::replica::Acks;
use oncelog::replication::{
    AlterIsrRequest, Controller, InProcessController, IsrMember, LeaderAndIsr, LogRecovery,
    ReplicaId, ReplicationError,
};

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");
const INSTALL: &str = "apt-get install -y etcd-server etcd-client protobuf-compiler";

fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found on PATH: install it with `{INSTALL}`"))
}

/// An etcd cluster of one or three members on loopback, with short heartbeat and election
/// timeouts so failovers are quick.
struct Etcd {
    tmp: tempfile::TempDir,
    members: Vec<Option<Proc>>,
    /// Each member's command line (a restart reuses it: its data directory says the rest).
    args: Vec<Vec<String>>,
    urls: Vec<String>,
}

impl Etcd {
    fn start(n: usize) -> Etcd {
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
        wait_for("etcd to answer", 20, || store.load().is_ok());
        e
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn urls(&self) -> String {
        self.urls.join(",")
    }

    /// A client of the partition's keys (default prefix).
    fn store(&self) -> EtcdStore {
        let mut c = EtcdConfig::new(self.urls.clone());
        c.request_timeout = Duration::from_secs(1);
        EtcdStore::connect(c).unwrap()
    }

    /// Starts a killed member again on its data directory.
    fn restart(&mut self, member: usize) {
        let args: Vec<&str> = self.args[member].iter().map(String::as_str).collect();
        let log = self.dir().join(format!("etcd{member}-again.log"));
        self.members[member] = Some(spawn_logged(&find_program("etcd"), &args, &log));
    }

    fn kill9(&mut self, member: usize) {
        if let Some(mut p) = self.members[member].take() {
            p.kill9();
        }
    }
}

/// A three-replica cluster file naming `controllers` controller addresses.
fn cluster_file(dir: &Path, controllers: usize) -> (PathBuf, ClusterFile) {
    let addrs: Vec<String> = (0..controllers)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let text = format!(
        "controller {}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
         replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n",
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
fn controller(
    etcd: &Etcd,
    cluster: &Path,
    listen: SocketAddr,
    session_ms: u64,
    name: &str,
) -> Proc {
    let log = etcd.dir().join(format!("{name}.log"));
    let p = spawn_logged(
        Path::new(BIN),
        &[
            "controller",
            "--cluster",
            cluster.to_str().unwrap(),
            "--etcd",
            &etcd.urls(),
            "--listen",
            &listen.to_string(),
            "--session-timeout-ms",
            &session_ms.to_string(),
            "--election-ttl-ms",
            "1000",
        ],
        &log,
    );
    wait_for("the controller to listen", 20, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on"))
    });
    p
}

fn client(cluster: &ClusterFile) -> ControllerClient {
    ControllerClient::for_cluster(cluster, TransportConfig::default(), Duration::from_secs(2))
}

/// Retries `f` (through every controller the client knows) until it succeeds.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, oncelog::net::NetError>) -> T {
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

fn state(c: &mut ControllerClient) -> LeaderAndIsr {
    retry("metadata", || c.metadata()).state
}

/// Keeps the sessions of `replicas` (id, incarnation) alive with a heartbeat every 100 ms,
/// re-registering after an expiry, until dropped.
struct Heartbeats {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    fn start(cluster: &ClusterFile, replicas: &[(u32, u64)]) -> Heartbeats {
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

fn register_all(c: &mut ControllerClient, incarnation: u64) {
    for r in 1..=3 {
        retry("register", || {
            c.register(ReplicaId(r), incarnation, LogRecovery::Intact)
        });
    }
}

#[test]
fn compare_and_set_refuses_stale_versions_and_stale_proposals() {
    let etcd = Etcd::start(1);
    let (a, b) = (etcd.store(), etcd.store());
    let ids = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
    let c0 = InProcessController::new(&ids);

    // The raw compare-and-set on the key's mod_revision.
    assert!(a.load().unwrap().is_none());
    assert!(a.compare_and_set(None, &c0).unwrap());
    assert!(!b.compare_and_set(None, &c0).unwrap(), "created twice");
    let (seen_a, va) = a.load().unwrap().unwrap();
    let (seen_b, vb) = b.load().unwrap().unwrap();
    assert_eq!((seen_a.clone(), va), (seen_b, vb));
    let mut next = seen_a.clone();
    next.elect_preferred(ReplicaId(2), false).unwrap();
    assert!(a.compare_and_set(Some(va), &next).unwrap());
    let mut other = seen_a;
    other.elect_preferred(ReplicaId(3), false).unwrap();
    assert!(
        !b.compare_and_set(Some(vb), &other).unwrap(),
        "a write based on an older version was applied"
    );
    let (now, _) = b.load().unwrap().unwrap();
    assert_eq!(now, next);

    // Two controller services on one record: the rules see each other's changes, and a
    // proposal based on an old partition epoch is refused whichever process receives it.
    let (_tmp_path, cluster) = cluster_file(etcd.dir(), 1);
    let clock = Arc::new(ManualClock::new(0));
    let config = ControllerConfig::new(etcd.dir().join("unused"));
    let s1 = ControllerService::with_store(
        cluster.clone(),
        &config,
        clock.clone(),
        Arc::new(a) as Arc<dyn ControllerStore>,
    );
    let s2 = ControllerService::with_store(
        cluster,
        &config,
        clock,
        Arc::new(b) as Arc<dyn ControllerStore>,
    );
    let record = |m: Message| match m {
        Message::LeaderAndIsr(s) => s,
        other => panic!("{other:?}"),
    };
    for r in 1..=3 {
        record(s1.handle(Message::Register {
            replica: ReplicaId(r),
            incarnation: 10 + u64::from(r),
            recovery: LogRecovery::Intact,
        }));
    }
    let before = match s2.handle(Message::Metadata) {
        Message::MetadataResponse(m) => m.state,
        other => panic!("{other:?}"),
    };
    // Registering the leader's new life re-elected (r1 now): s2 sees what s1 wrote.
    assert_eq!(before.leader, Some(ReplicaId(1)));
    assert!(before.leader_epoch > next.leader_and_isr().leader_epoch);
    let shrink = |s: &LeaderAndIsr, keep: &[u32]| AlterIsrRequest {
        leader: s.leader.unwrap(),
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        new_isr: keep
            .iter()
            .map(|&r| IsrMember {
                replica: ReplicaId(r),
                incarnation: None,
            })
            .collect(),
    };
    let after = record(s1.handle(Message::AlterIsr(shrink(&before, &[1, 2]))));
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
    match s2.handle(Message::AlterIsr(shrink(&before, &[1, 3]))) {
        Message::Error(ErrorReply {
            error: RemoteError::Replication(ReplicationError::StalePartitionEpoch { .. }),
            ..
        }) => {}
        other => panic!("a stale proposal was not refused: {other:?}"),
    }
    assert_eq!(s2.state(), after);

    // A damaged record is refused as unavailable, never decoded into something else.
    let etcdctl = find_program("etcdctl");
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.urls(),
            "put",
            "/oncelog/partition",
            "garbage",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    match s1.handle(Message::Metadata) {
        Message::Error(ErrorReply {
            error: RemoteError::Unavailable,
            message,
        }) => assert!(message.contains("damaged record"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_record_survives_a_controller_restart() {
    let etcd = Etcd::start(1);
    let (path, cluster) = cluster_file(etcd.dir(), 1);
    let mut p = controller(&etcd, &path, cluster.controller, 30_000, "controller1");
    let mut c = client(&cluster);
    register_all(&mut c, 7);
    let start = state(&mut c);
    for to in [2, 3, 1, 2] {
        retry("move the leader", || {
            c.elect_leader(Some(ReplicaId(to)), false)
        });
    }
    let before = state(&mut c);
    assert_eq!(before.leader, Some(ReplicaId(2)));
    assert_eq!(before.leader_epoch, start.leader_epoch + 4);

    p.kill9();
    // With no controller running, cluster-status reads the record from etcd.
    let out = Command::new(BIN)
        .args([
            "cluster-status",
            "--cluster",
            path.to_str().unwrap(),
            "--etcd",
            &etcd.urls(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!(
            "leader 2 leader_epoch {} partition_epoch {} isr 1,2,3",
            before.leader_epoch, before.partition_epoch
        )),
        "{text}"
    );
    assert!(text.contains("3 as incarnation 7"), "{text}");
    let _p = controller(&etcd, &path, cluster.controller, 30_000, "controller2");
    let after = state(&mut c);
    assert_eq!(after, before, "the restarted controller forgot the record");
    // The replicas' sessions (leases in etcd) survived too: heartbeats are still accepted.
    retry("heartbeat", || {
        c.heartbeat(ReplicaId(3), 7, oncelog::Offset(0))
    });
    let e = retry("elect", || c.elect_leader(Some(ReplicaId(3)), false));
    assert_eq!(e.state.leader_epoch, before.leader_epoch + 1);
    assert_eq!(e.state.partition_epoch, before.partition_epoch + 1);
}

#[test]
fn an_expired_lease_takes_the_replica_out_of_the_isr() {
    let etcd = Etcd::start(1);
    let (path, cluster) = cluster_file(etcd.dir(), 1);
    let _p = controller(&etcd, &path, cluster.controller, 1_000, "controller");
    let mut c = client(&cluster);
    register_all(&mut c, 5);
    let hb = Heartbeats::start(&cluster, &[(1, 5), (2, 5)]);
    wait_for("replica 3 out of the ISR", 15, || {
        c.metadata().is_ok_and(|m| {
            m.state.isr == vec![ReplicaId(1), ReplicaId(2)]
                && m.replicas
                    .iter()
                    .any(|r| r.replica == ReplicaId(3) && !r.alive)
        })
    });
    let s = state(&mut c);
    assert_eq!(s.leader, Some(ReplicaId(1)));
    match c.heartbeat(ReplicaId(3), 5, oncelog::Offset(0)) {
        Err(e) => assert!(
            matches!(
                e.remote().map(|r| &r.error),
                Some(RemoteError::SessionExpired { .. })
            ),
            "{e}"
        ),
        Ok(s) => panic!("an expired session was kept: {s:?}"),
    }
    // The leader's lease expiring moves leadership to a live ISR member.
    drop(hb);
    let _hb = Heartbeats::start(&cluster, &[(2, 5)]);
    wait_for("replica 2 to lead", 15, || {
        c.metadata().is_ok_and(|m| {
            m.state.leader == Some(ReplicaId(2)) && m.state.isr == vec![ReplicaId(2)]
        })
    });
    assert!(state(&mut c).leader_epoch > s.leader_epoch);
}

#[test]
fn killing_the_acting_controller_hands_over_and_elections_go_on() {
    let etcd = Etcd::start(1);
    let (path, cluster) = cluster_file(etcd.dir(), 2);
    let addrs = cluster.controllers();
    let mut procs = [
        Some(controller(&etcd, &path, addrs[0], 2_000, "controller-a")),
        Some(controller(&etcd, &path, addrs[1], 2_000, "controller-b")),
    ];
    let watcher = etcd.store();
    let mut acting = None;
    wait_for("an acting controller", 15, || {
        acting = watcher.acting_candidate().ok().flatten();
        acting.is_some()
    });
    let acting = acting.unwrap();
    let victim = addrs.iter().position(|a| a.to_string() == acting).unwrap();
    let survivor = addrs[1 - victim].to_string();

    let mut c = client(&cluster);
    register_all(&mut c, 9);
    let hb = Heartbeats::start(&cluster, &[(1, 9), (2, 9), (3, 9)]);
    let before = state(&mut c);
    procs[victim].take().unwrap().kill9();
    wait_for("the other controller to act", 15, || {
        watcher.acting_candidate().ok().flatten() == Some(survivor.clone())
    });
    // Sessions outlived the controller that started them; nobody left the ISR.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&mut c).isr.len(), 3);
    // An operator's election through the survivor.
    let e = retry("elect", || c.elect_leader(Some(ReplicaId(3)), false));
    assert_eq!(e.state.leader, Some(ReplicaId(3)));
    assert_eq!(e.state.leader_epoch, before.leader_epoch + 1);
    // And an election after a failure: the leader's session ends, the new acting controller
    // expires it and elects a live ISR member.
    drop(hb);
    let _hb = Heartbeats::start(&cluster, &[(1, 9), (2, 9)]);
    wait_for("a new leader after replica 3's lease ended", 15, || {
        c.metadata().is_ok_and(|m| {
            m.state.leader == Some(ReplicaId(1)) && !m.state.isr.contains(&ReplicaId(3))
        })
    });
    assert_eq!(state(&mut c).leader_epoch, e.state.leader_epoch + 1);
}

#[test]
fn losing_one_etcd_member_of_three_changes_nothing() {
    let mut etcd = Etcd::start(3);
    let (path, cluster) = cluster_file(etcd.dir(), 1);
    let _p = controller(&etcd, &path, cluster.controller, 5_000, "controller");
    let mut c = client(&cluster);
    register_all(&mut c, 3);
    let _hb = Heartbeats::start(&cluster, &[(1, 3), (2, 3), (3, 3)]);
    let before = state(&mut c);
    // The first endpoint is the one clients usually talk to.
    etcd.kill9(0);
    let e = retry("elect with one etcd member down", || {
        c.elect_leader(Some(ReplicaId(2)), false)
    });
    assert_eq!(e.state.leader_epoch, before.leader_epoch + 1);
    let e = retry("elect again", || c.elect_leader(Some(ReplicaId(3)), false));
    assert_eq!(e.state.leader_epoch, before.leader_epoch + 2);
    let id1 = retry("producer id", || c.init_producer_id()).0;
    let id2 = retry("producer id", || c.init_producer_id()).0;
    assert!(id2.0 > id1.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        state(&mut c).isr.len(),
        3,
        "a session was lost with the member"
    );
}

/// Sends `sig` (`STOP`, `CONT`) to a process.
fn signal(p: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

fn node(etcd: &Etcd, cluster: &Path, id: u32) -> Proc {
    spawn_logged(
        Path::new(BIN),
        &[
            "node",
            "--cluster",
            cluster.to_str().unwrap(),
            "--id",
            &id.to_string(),
            "--tick-ms",
            "20",
            "--lag-ms",
            "1000",
        ],
        &etcd.dir().join(format!("node{id}.log")),
    )
}

/// Three `oncelog node` processes, two controllers and a three-member etcd. Mid-stream the
/// leader node, the acting controller and one etcd member are SIGKILLed together;
/// the killed node restarts and catches up; a follower is paused past its lease and resumed. An acks=all idempotent producer gets every batch
/// acknowledged, the log holds each exactly once in order at its acknowledged offset, and every
/// replica holds the same committed records.
#[test]
fn nodes_lose_and_double_nothing_when_the_leader_and_the_acting_controller_die() {
    let mut etcd = Etcd::start(3);
    let (path, cluster) = cluster_file(etcd.dir(), 2);
    let addrs = cluster.controllers();
    let mut controllers: HashMap<String, Proc> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = format!("controller{i}");
            (a.to_string(), controller(&etcd, &path, *a, 1_000, &name))
        })
        .collect();
    let mut nodes: HashMap<u32, Proc> = (1..=3).map(|i| (i, node(&etcd, &path, i))).collect();
    let mut ctl = client(&cluster);
    wait_for("a leader and a full ISR", 30, || {
        ctl.metadata()
            .is_ok_and(|m| m.state.leader.is_some() && m.state.isr.len() == 3)
    });
    let watcher = etcd.store();
    let partition = PartitionClient::new(cluster.clone(), Acks::All);
    let mut producer = Producer::with_sink(&partition, Vec::<(u64, Delivery)>::new()).unwrap();
    let mut expected: Vec<String> = Vec::new();
    let mut tickets: HashMap<u64, usize> = HashMap::new();
    let mut killed = None;
    let mut send = |producer: &mut Producer<_, _>, i: usize| {
        let mut b = oncelog::BatchBuilder::new();
        let v = format!("b{i}");
        b.push(0, None, Some(v.as_bytes()));
        expected.push(v);
        tickets.insert(producer.enqueue(b).unwrap(), i);
    };
    for i in 0..200usize {
        send(&mut producer, i);
        if i == 80 {
            let leader = partition.leader().unwrap().0;
            let acting = watcher.acting_candidate().unwrap().unwrap();
            nodes.remove(&leader); // SIGKILL
            controllers.remove(&acting); // SIGKILL
            etcd.kill9(0);
            killed = Some(leader);
        }
    }
    producer.flush().unwrap();
    let killed = killed.unwrap();
    // (A call to the killed controller fails; the client moves on to the other one.)
    wait_for("a new leader", 30, || {
        partition.leader().is_ok_and(|l| l.0 != killed)
    });
    nodes.insert(killed, node(&etcd, &path, killed));
    wait_for("the restarted node back in the ISR", 30, || {
        ctl.metadata()
            .is_ok_and(|m| m.state.isr.contains(&ReplicaId(killed)))
    });
    // A follower paused (SIGSTOP) past its session lease leaves the ISR while the stream
    // goes on; resumed, it registers again and rejoins.
    let mut leader = 0;
    wait_for("the leader", 30, || {
        partition.leader().is_ok_and(|l| {
            leader = l.0;
            true
        })
    });
    let paused = (1..=3).find(|&i| i != leader).unwrap();
    signal(&nodes[&paused], "STOP");
    wait_for("the paused node out of the ISR", 30, || {
        ctl.metadata()
            .is_ok_and(|m| !m.state.isr.contains(&ReplicaId(paused)))
    });
    for i in 200..225usize {
        send(&mut producer, i);
    }
    producer.flush().unwrap();
    signal(&nodes[&paused], "CONT");
    wait_for("the resumed node back in the ISR", 30, || {
        ctl.metadata()
            .is_ok_and(|m| m.state.isr.contains(&ReplicaId(paused)))
    });
    for i in 225..250usize {
        send(&mut producer, i);
    }
    producer.flush().unwrap();
    let acked = std::mem::take(producer.sink_mut());
    assert_eq!(acked.len(), 250, "every batch acknowledged");

    assert_exactly_once(
        &partition,
        &acked,
        &tickets,
        &expected,
        |i| format!("b{i}"),
        &[1, 2, 3],
    );
}

/// Every process of the cluster (three etcd members, two controllers, three nodes) is SIGKILLed
/// and started again: the record comes back from etcd (epochs go on, never back), the nodes'
/// logs keep every committed record, and a new producer (a new id from etcd's counter) appends
/// after them exactly once.
#[test]
fn restarting_every_process_keeps_the_records_and_the_epochs() {
    let mut etcd = Etcd::start(3);
    let (path, cluster) = cluster_file(etcd.dir(), 2);
    let start = |etcd: &Etcd| -> (Vec<Proc>, Vec<Proc>) {
        let controllers = cluster
            .controllers()
            .iter()
            .enumerate()
            .map(|(i, a)| controller(etcd, &path, *a, 1_000, &format!("controller{i}")))
            .collect();
        let nodes = (1..=3).map(|i| node(etcd, &path, i)).collect();
        (controllers, nodes)
    };
    let full_isr = |ctl: &mut ControllerClient| {
        wait_for("a leader and a full ISR", 30, || {
            ctl.metadata()
                .is_ok_and(|m| m.state.leader.is_some() && m.state.isr.len() == 3)
        });
    };
    let produce = |range: std::ops::Range<usize>| {
        let partition = PartitionClient::new(cluster.clone(), Acks::All);
        let mut producer = Producer::with_sink(&partition, Vec::<(u64, Delivery)>::new()).unwrap();
        let id = producer.id();
        for i in range {
            let mut b = oncelog::BatchBuilder::new();
            b.push(0, None, Some(format!("b{i}").as_bytes()));
            producer.enqueue(b).unwrap();
        }
        producer.flush().unwrap();
        assert!(producer
            .sink_mut()
            .iter()
            .all(|(_, d)| matches!(d, Delivery::Written(_))));
        id
    };
    let (controllers, nodes) = start(&etcd);
    let mut ctl = client(&cluster);
    full_isr(&mut ctl);
    let first_id = produce(0..40);
    let lives = |ctl: &mut ControllerClient| -> Vec<Option<u64>> {
        let m = retry("metadata", || ctl.metadata());
        m.replicas.iter().map(|r| r.incarnation).collect()
    };
    let before = state(&mut ctl);
    let old_lives = lives(&mut ctl);

    drop(nodes);
    drop(controllers);
    for m in 0..3 {
        etcd.kill9(m);
    }
    for m in 0..3 {
        etcd.restart(m);
    }
    let store = etcd.store();
    wait_for("etcd back", 30, || store.load().is_ok());
    let (_controllers, _nodes) = start(&etcd);
    wait_for("every node registered in its new life", 30, || {
        let now = lives(&mut ctl);
        now.iter().zip(&old_lives).all(|(n, o)| n != o)
    });
    full_isr(&mut ctl);
    // The record came back from etcd: the leader's new life was a re-election on top of it.
    let after = state(&mut ctl);
    assert!(
        after.leader_epoch > before.leader_epoch,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.partition_epoch > before.partition_epoch,
        "{before:?} -> {after:?}"
    );
    let second_id = produce(40..80);
    assert_ne!(first_id, second_id, "a producer id handed out twice");

    let partition = PartitionClient::new(cluster.clone(), Acks::All);
    let expected: Vec<String> = (0..80).map(|i| format!("b{i}")).collect();
    let tickets = HashMap::new();
    assert_exactly_once(
        &partition,
        &[],
        &tickets,
        &expected,
        |i| format!("b{i}"),
        &[1, 2, 3],
    );
}
