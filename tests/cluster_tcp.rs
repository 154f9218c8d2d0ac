//! Three `oncelog node` processes and an `oncelog controller` on loopback; an idempotent
//! acks=all producer streams batches; the leader is killed with SIGKILL mid-stream, a new
//! leader is elected, the producer retries; the killed node restarts, catches up and leadership
//! is moved back to it with `oncelog move-leader`. Nothing acknowledged is lost, nothing is
//! duplicated, and every replica ends with the same committed records.

#[path = "common/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oncelog::net::ClusterFile;
use oncelog::node::PartitionClient;
use oncelog::producer::{Delivery, ProduceTarget, Producer};
use oncelog::replica::Acks;
use oncelog::replication::ReplicaId;
use oncelog::BatchBuilder;
use procs::{assert_exactly_once, committed, free_port, spawn_logged, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");

fn spawn(dir: &Path, args: &[&str], log: &str) -> Proc {
    spawn_logged(Path::new(BIN), args, &dir.join(log))
}

fn node(dir: &Path, cluster: &str, id: u32) -> Proc {
    node_with_lag(dir, cluster, id, 1000)
}

/// A node whose leader removes an ISR follower not caught up within `lag_ms`.
fn node_with_lag(dir: &Path, cluster: &str, id: u32, lag_ms: u64) -> Proc {
    spawn(
        dir,
        &[
            "node",
            "--insecure",
            "--cluster",
            cluster,
            "--id",
            &id.to_string(),
            "--tick-ms",
            "20",
            "--lag-ms",
            &lag_ms.to_string(),
        ],
        &format!("node{id}.log"),
    )
}

fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    procs::wait_for(what, 30, ok)
}

/// A controller (session timeout 500 ms) and three nodes on loopback, min ISR 2.
struct Cluster {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    cluster_arg: String,
    cluster: ClusterFile,
    _controller: Proc,
    nodes: HashMap<u32, Proc>,
    ctl: oncelog::net::ControllerClient,
}

impl Cluster {
    /// Starts it and waits for a leader and a full ISR.
    fn start() -> Cluster {
        Self::start_with(500, 1000)
    }

    /// `start` with the controller's session timeout (how long a silent node stays registered,
    /// and in the ISR) set to `session_ms`, and the leaders' replica lag time (how long an ISR
    /// follower may stay behind before the leader proposes to remove it) set to `lag_ms`.
    fn start_with(session_ms: u64, lag_ms: u64) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let text = format!(
            "controller 127.0.0.1:{}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
             replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n",
            ports[0], ports[1], ports[2], ports[3]
        );
        let cluster_path = dir.join("cluster.txt");
        std::fs::write(&cluster_path, &text).unwrap();
        let cluster_arg = cluster_path.to_str().unwrap().to_string();
        let controller = spawn(
            &dir,
            &[
                "controller",
                "--insecure",
                "--cluster",
                &cluster_arg,
                "--session-timeout-ms",
                &session_ms.to_string(),
            ],
            "controller.log",
        );
        std::thread::sleep(Duration::from_millis(200));
        let nodes: HashMap<u32, Proc> = (1..=3)
            .map(|i| (i, node_with_lag(&dir, &cluster_arg, i, lag_ms)))
            .collect();
        let cluster = ClusterFile::load(&cluster_path).unwrap();
        let mut ctl = oncelog::net::ControllerClient::new(
            cluster.controller,
            oncelog::net::TransportConfig::default(),
            Duration::from_secs(2),
        );
        wait_for("a leader and a full ISR", || {
            ctl.metadata()
                .is_ok_and(|m| m.state.leader.is_some() && m.state.isr.len() == 3)
        });
        Cluster {
            _tmp: tmp,
            dir,
            cluster_arg,
            cluster,
            _controller: controller,
            nodes,
            ctl,
        }
    }

    fn isr_len(&mut self) -> usize {
        self.ctl.metadata().map_or(0, |m| m.state.isr.len())
    }
}

#[test]
fn leader_sigkill_loses_and_duplicates_nothing() {
    let mut c = Cluster::start();
    let (dir, cluster_arg) = (c.dir.clone(), c.cluster_arg.clone());
    let (dir, cluster_arg) = (dir.as_path(), cluster_arg.as_str());
    let mut nodes = std::mem::take(&mut c.nodes);
    let client = PartitionClient::new(c.cluster.clone(), Acks::All);
    let ctl = &mut c.ctl;

    // Every delivery is kept (by the sink) to check its offsets at the end.
    let mut producer = Producer::with_sink(&client, Vec::<(u64, Delivery)>::new()).unwrap();
    let mut expected: Vec<String> = Vec::new();
    let mut tickets: HashMap<u64, usize> = HashMap::new();
    let mut killed = None;
    for i in 0..300usize {
        let mut b = BatchBuilder::new();
        for j in 0..2 {
            let v = format!("b{i}r{j}");
            b.push(0, None, Some(v.as_bytes()));
            expected.push(v);
        }
        let t = producer.enqueue(b).unwrap();
        tickets.insert(t, i);
        if i == 100 {
            let leader = client.leader().unwrap();
            nodes.remove(&leader.0); // SIGKILL
            killed = Some(leader.0);
        }
    }
    producer.flush().unwrap();
    let killed = killed.unwrap();
    wait_for("a new leader", || {
        client.leader().is_ok_and(|l| l.0 != killed)
    });

    // The killed node comes back, catches up and gets the leadership back.
    nodes.insert(killed, node(dir, cluster_arg, killed));
    wait_for("the restarted node back in the ISR", || {
        ctl.metadata()
            .is_ok_and(|m| m.state.isr.contains(&ReplicaId(killed)))
    });
    let status = Command::new(BIN)
        .args([
            "move-leader",
            "--cluster",
            cluster_arg,
            "--to",
            &killed.to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "move-leader failed");
    wait_for("the moved leader", || {
        client.leader().is_ok_and(|l| l.0 == killed)
    });
    for i in 300..350usize {
        let mut b = BatchBuilder::new();
        let v = format!("b{i}r0");
        b.push(0, None, Some(v.as_bytes()));
        expected.push(v);
        let t = producer.enqueue(b).unwrap();
        tickets.insert(t, i);
    }
    producer.flush().unwrap();
    let acked = std::mem::take(producer.sink_mut());
    assert_eq!(acked.len(), 350, "every batch acknowledged");
    assert_eq!(producer.acknowledged(), 350);

    assert_exactly_once(
        &client,
        &acked,
        &tickets,
        &expected,
        |i| format!("b{i}r0"),
        &[1, 2, 3],
    );
    // The kill and the move back each made a new leader; no epoch had two.
    let logs: Vec<_> = (1..=3)
        .map(|i| (i, dir.join(format!("node{i}.log"))))
        .collect();
    let epochs = procs::assert_one_leader_per_epoch(&logs);
    assert!(epochs >= 3, "only {epochs} leader epochs logged");
}

/// Sends `sig` (`STOP`, `CONT`) to a node process.
fn signal(p: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// A plain (non-idempotent) acks=all batch is in flight when its leader is SIGKILLed: it was
/// appended by the leader and fetched by one follower, but not committed (the third replica is
/// stopped, so the high-water mark cannot pass it). That follower becomes leader with the
/// batch. The client must return an error its caller can act on (`Timeout`: outcome unknown)
/// and never re-send the batch: read back, the partition holds it at most once.
#[test]
fn plain_batch_in_flight_at_leader_sigkill_is_not_resent() {
    // The stopped replica must stay in the ISR while the request waits, whatever the scheduler
    // does to this thread: a session of 3 s (not 500 ms) however late its last heartbeat was,
    // a full ISR right before it is stopped, and a replica lag time of 60 s, so the leader does
    // not shrink the ISR to itself and the survivor and commit the batch before the kill. (With
    // a lag time of 1 s a loaded machine, CI included, delayed this thread past it: the batch
    // was committed and the scenario did not happen.)
    let mut c = Cluster::start_with(3_000, 60_000);
    let client = std::sync::Arc::new(PartitionClient::new(c.cluster.clone(), Acks::All));
    let mut warm = BatchBuilder::new();
    warm.push(0, None, Some(b"warm"));
    client.produce(&warm.build().unwrap()).unwrap();

    let leader = client.leader().unwrap().0;
    let mut followers = (1..=3).filter(|&i| i != leader);
    let (stopped, survivor) = (followers.next().unwrap(), followers.next().unwrap());
    let ctl = &mut c.ctl;
    wait_for("a full ISR", || {
        ctl.metadata().is_ok_and(|m| m.state.isr.len() == 3)
    });
    signal(&c.nodes[&stopped], "STOP");
    let sender = {
        let client = std::sync::Arc::clone(&client);
        std::thread::spawn(move || {
            let mut b = BatchBuilder::new();
            b.push(0, None, Some(b"once"));
            client.produce(&b.build().unwrap())
        })
    };
    // The survivor fetches the batch within a few milliseconds; the stopped replica is still
    // in the ISR (its session expires after 3 s), so the request waits at the leader.
    std::thread::sleep(Duration::from_millis(300));
    if sender.is_finished() {
        panic!(
            "the acks=all request must still wait, but it answered {:?}",
            sender.join().unwrap()
        );
    }
    c.nodes.remove(&leader); // SIGKILL

    // The survivor is elected; the stopped replica resumes and rejoins the ISR, which commits
    // the survivor's log (and would commit a copy re-sent meanwhile).
    wait_for("the survivor elected", || {
        client.leader().is_ok_and(|l| l.0 == survivor)
    });
    signal(&c.nodes[&stopped], "CONT");
    wait_for("two replicas in the ISR", || c.isr_len() >= 2);
    let result = sender.join().unwrap();
    let mut tail = BatchBuilder::new();
    tail.push(0, None, Some(b"tail"));
    client.produce(&tail.build().unwrap()).unwrap();

    let values: Vec<String> = committed(&client, None)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let copies = values.iter().filter(|v| *v == "once").count();
    assert!(
        copies <= 1,
        "a plain batch written {copies} times (client answered {result:?}): {values:?}"
    );
    assert!(
        matches!(result, Err(oncelog::Error::Timeout)),
        "the caller must learn the outcome is unknown, got {result:?}"
    );
    assert_eq!(values.first().map(String::as_str), Some("warm"));
    assert_eq!(values.last().map(String::as_str), Some("tail"));
}
