//! Record changes pushed by the controller (in memory, over loopback TCP): the
//! `WatchPartition` long poll — parked until the record is newer than the replica's, answered
//! at once when it already is, `SessionExpired` for a life the controller does not hold alive,
//! released when the controller stops — and `oncelog node`s (in-process `Node`s) heartbeating
//! only every 3 s that learn a leader change within milliseconds through it, while nodes that
//! do not watch wait for their next heartbeat.

#[path = "common/procs.rs"]
mod procs;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::io::fs::RealStorage;
use oncelog::net::{
    ClusterFile, ControllerClient, ControllerConfig, ControllerServer, RemoteError, TransportConfig,
};
use oncelog::node::{Node, NodeOptions};
use oncelog::replication::{LeaderAndIsr, LogRecovery, ReplicaId};
use oncelog::SystemClock;
use procs::{free_port, wait_for};

fn controller(dir: &Path, session_ms: u64) -> (ControllerServer, ClusterFile) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cluster = ClusterFile::parse(&format!(
        "controller {addr}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
         replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n",
        free_port(),
        free_port(),
        free_port()
    ))
    .unwrap();
    let mut config = ControllerConfig::new(dir.join("controller"));
    config.session_timeout_ms = session_ms;
    let server = ControllerServer::start(
        listener,
        cluster.clone(),
        config,
        Arc::new(SystemClock),
        Arc::new(RealStorage::new()),
    )
    .unwrap();
    (server, cluster)
}

fn client(cluster: &ClusterFile) -> ControllerClient {
    ControllerClient::for_cluster(cluster, TransportConfig::default(), Duration::from_secs(10))
}

fn expired(r: Result<LeaderAndIsr, oncelog::net::NetError>) -> bool {
    matches!(
        r.as_ref().map_err(|e| e.remote().map(|r| &r.error)),
        Err(Some(RemoteError::SessionExpired { .. }))
    )
}

#[test]
fn a_watch_is_parked_until_the_record_moves_past_what_the_replica_knows() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, cluster) = controller(tmp.path(), 60_000);
    let mut c = client(&cluster);
    let wait = Duration::from_secs(5);
    // Not registered: no life to watch for.
    assert!(expired(c.watch_partition(ReplicaId(2), 7, None, wait)));
    for r in 1..=3 {
        c.register(ReplicaId(r), 7, LogRecovery::Intact).unwrap();
    }
    let now = c.metadata().unwrap().state;
    // Knowing nothing, or an older record: answered at once.
    let t = Instant::now();
    assert_eq!(c.watch_partition(ReplicaId(2), 7, None, wait).unwrap(), now);
    let older = LeaderAndIsr {
        partition_epoch: now.partition_epoch - 1,
        ..now.clone()
    };
    assert_eq!(
        c.watch_partition(ReplicaId(2), 7, Some(&older), wait)
            .unwrap(),
        now
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Another life of the replica: refused at once.
    assert!(expired(c.watch_partition(
        ReplicaId(2),
        8,
        Some(&now),
        wait
    )));
    // Up to date: parked for the whole wait, then answered with the record as it is.
    let t = Instant::now();
    let short = Duration::from_millis(300);
    assert_eq!(
        c.watch_partition(ReplicaId(2), 7, Some(&now), short)
            .unwrap(),
        now
    );
    assert!(t.elapsed() >= short, "answered after {:?}", t.elapsed());
    // Parked, then an election: answered with the new record at once.
    let watcher = {
        let (cluster, now) = (cluster.clone(), now.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = client(&cluster).watch_partition(ReplicaId(2), 7, Some(&now), wait);
            (r, t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let elected = c.elect_leader(Some(ReplicaId(3)), false).unwrap().state;
    let (answer, took) = watcher.join().unwrap();
    assert_eq!(answer.unwrap(), elected);
    assert!(
        took < Duration::from_secs(3),
        "the change took {took:?} to reach the watch"
    );
    // A controller that stops answers its parked watches instead of waiting them out.
    let watcher = {
        let cluster = cluster.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let _ = client(&cluster).watch_partition(ReplicaId(2), 7, Some(&elected), wait);
            t.elapsed()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    server.shutdown();
    let took = watcher.join().unwrap();
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?}");
}

/// Three nodes heartbeating every 3 s; the operator moves the leadership. Watching nodes know
/// the new leader within a second (in practice a few milliseconds); nodes that do not watch
/// learn it at their next heartbeat (both printed: run with `--nocapture`).
#[test]
fn nodes_learn_a_leader_change_before_their_next_heartbeat() {
    const TICK_MS: u64 = 3_000;
    for watch in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let (_server, cluster) = controller(tmp.path(), 60_000);
        let nodes: Vec<Node> = (1..=3)
            .map(|id| {
                let dir = tmp.path().join(format!("d{id}"));
                let mut o = NodeOptions::new(cluster.clone(), ReplicaId(id), dir);
                o.tick_ms = TICK_MS;
                o.lag_ms = 4 * TICK_MS;
                o.watch_controller = watch;
                Node::start(o).unwrap()
            })
            .collect();
        let mut c = client(&cluster);
        let knows = |n: &Node, s: &LeaderAndIsr| n.known_record().as_ref() == Some(s);
        let mut before = c.metadata().unwrap().state;
        wait_for("a full ISR that every node knows", 60, || {
            let m = c.metadata().unwrap();
            before = m.state.clone();
            before.isr.len() == 3
                && m.replicas
                    .iter()
                    .all(|r| r.incarnation.is_some() && !r.needs_catch_up)
                && nodes.iter().all(|n| knows(n, &before))
        });
        let to = (1..=3)
            .map(ReplicaId)
            .find(|r| Some(*r) != before.leader)
            .unwrap();
        let t = Instant::now();
        let after = c.elect_leader(Some(to), false).unwrap().state;
        let mut took = None;
        while t.elapsed() < Duration::from_millis(2 * TICK_MS + 1_000) {
            if nodes.iter().all(|n| knows(n, &after)) {
                took = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        println!("watch {watch}: every node knew the new leader after {took:?} (heartbeat every {TICK_MS} ms)");
        if watch {
            let took = took.expect("the nodes never learned the new leader");
            assert!(
                took < Duration::from_millis(TICK_MS / 3),
                "the change took {took:?} to reach every node"
            );
        } else {
            // Without the watch a heartbeat answer carries it, within one heartbeat period.
            let took = took.expect("heartbeats never carried the new leader");
            assert!(
                took < Duration::from_millis(TICK_MS + 1_000),
                "learned after {took:?} without a watch"
            );
        }
        for n in nodes {
            n.shutdown().unwrap();
        }
    }
}
