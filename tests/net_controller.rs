//! The controller process over real TCP on loopback: a `ControllerServer` started in-process on
//! an ephemeral port with a manual clock, driven through `ControllerClient` — register,
//! heartbeat, session expiry, AlterIsr compare-and-set, elections and leadership moves,
//! controlled shutdown, producer ids across a controller restart, concurrent clients — and the
//! `oncelog controller` / `move-leader` / `cluster-status` commands as a user runs them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use oncelog::io::fs::RealStorage;
use oncelog::net::{
    ClusterFile, ControllerClient, ControllerConfig, ControllerServer, NetError, RemoteError,
    TransportConfig,
};
use oncelog::replication::{
    AlterIsrRequest, IsrMember, LeaderAndIsr, LogRecovery, ReplicaId, ReplicationError,
};
use oncelog::{ManualClock, Offset};

const SESSION_MS: u64 = 1_000;

fn r(id: u32) -> ReplicaId {
    ReplicaId(id)
}

fn ids(v: &[u32]) -> Vec<ReplicaId> {
    v.iter().map(|&i| ReplicaId(i)).collect()
}

fn cluster(controller: SocketAddr) -> ClusterFile {
    ClusterFile::parse(&format!(
        "controller {controller}\nreplica 1 127.0.0.1:1\nreplica 2 127.0.0.1:2\n\
         replica 3 127.0.0.1:3\nmin_insync_replicas 2\n"
    ))
    .unwrap()
}

struct Harness {
    server: ControllerServer,
    clock: Arc<ManualClock>,
}

fn start(dir: &Path) -> Harness {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = ControllerConfig::new(dir);
    config.session_timeout_ms = SESSION_MS;
    config.expiry_check_interval = Duration::from_millis(5);
    // A restart on the same directory can find its lock briefly held: a process that a
    // concurrent test is spawning holds a copy of every descriptor between its fork and its
    // exec (close-on-exec closes them only at exec), the lock file's included.
    for attempt in 0.. {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        match ControllerServer::start(
            listener,
            cluster(addr),
            config.clone(),
            Arc::clone(&clock) as _,
            Arc::new(RealStorage::new()),
        ) {
            Ok(server) => return Harness { server, clock },
            Err(oncelog::Error::Locked(_)) if attempt < 200 => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

impl Harness {
    fn client(&self) -> ControllerClient {
        ControllerClient::new(
            self.server.local_addr().unwrap(),
            TransportConfig::default(),
            // Generous: a producer-id block is reserved with two fsyncs, slow on a busy disk.
            Duration::from_secs(30),
        )
    }
}

fn remote(e: &NetError) -> &RemoteError {
    &e.remote()
        .unwrap_or_else(|| panic!("not an error reply: {e}"))
        .error
}

fn proposal(s: &LeaderAndIsr, isr: &[(u32, Option<u64>)]) -> AlterIsrRequest {
    AlterIsrRequest {
        leader: s.leader.unwrap(),
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        new_isr: isr
            .iter()
            .map(|&(id, incarnation)| IsrMember {
                replica: r(id),
                incarnation,
            })
            .collect(),
    }
}

#[test]
fn register_heartbeat_expiry_and_reregistration() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    for id in 1..=3 {
        let s = c
            .register(r(id), 100 + u64::from(id), LogRecovery::Intact)
            .unwrap();
        assert!(s.leader.is_some());
    }
    let s = c.metadata().unwrap().state;
    assert_eq!(s.leader, Some(r(1)));
    assert_eq!(s.isr, ids(&[1, 2, 3]));
    let epoch = s.leader_epoch;

    // r2 and r3 keep their sessions, r1 goes silent past the session timeout.
    h.clock.advance(600);
    for id in [2, 3] {
        c.heartbeat(r(id), 100 + u64::from(id), Offset(40)).unwrap();
    }
    h.clock.advance(600);
    let s = c.heartbeat(r(2), 102, Offset(41)).unwrap();
    assert_eq!(
        s.leader,
        Some(r(2)),
        "the silent leader was failed and replaced"
    );
    assert_eq!(s.leader_epoch, epoch + 1);
    assert_eq!(s.isr, ids(&[2, 3]));
    let e = c.heartbeat(r(1), 101, Offset(40)).unwrap_err();
    assert_eq!(remote(&e), &RemoteError::SessionExpired { replica: r(1) });

    // r1 comes back as a new life that may have lost its tail: alive, but not in the ISR and
    // not electable until the leader vouches for it under its new incarnation.
    let s = c.register(r(1), 201, LogRecovery::MayHaveLostTail).unwrap();
    assert_eq!(s.isr, ids(&[2, 3]));
    c.heartbeat(r(1), 201, Offset(10)).unwrap();
    let e = c.heartbeat(r(1), 101, Offset(10)).unwrap_err();
    assert!(matches!(remote(&e), RemoteError::SessionExpired { .. }));
    let m = c.metadata().unwrap();
    let r1 = &m.replicas[0];
    assert!(r1.alive && r1.needs_catch_up);
    assert_eq!(r1.incarnation, Some(201));
    assert_eq!(r1.log_end, Some(Offset(10)));
    assert_eq!(m.replicas[1].log_end, Some(Offset(41)));
    assert_eq!(m.min_insync_replicas, 2);
    let e = c.elect_leader(Some(r(1)), false).unwrap_err();
    assert_eq!(
        remote(&e),
        &RemoteError::Replication(ReplicationError::IneligibleReplica(r(1)))
    );
    h.server.service().controller().check_invariants();
}

#[test]
fn the_ticker_expires_sessions_without_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    c.register(r(2), 7, LogRecovery::Intact).unwrap();
    h.clock.advance(SESSION_MS as i64 + 1);
    // Wait for the ticker (it checks every 5 ms of real time); no request runs expiry here.
    let service = h.server.service();
    for _ in 0..2000 {
        if service.state().isr.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Every session expired (r2 registered but never heartbeated); r2 was failed last of the
    // ISR, so it stays recorded there but the partition is offline.
    let s = service.state();
    assert_eq!(s.leader, None);
    assert_eq!(s.isr.len(), 1);
    // Registering again brings the recorded ISR member back as leader.
    let last = s.isr[0];
    let s = c.register(last, 8, LogRecovery::Intact).unwrap();
    assert_eq!(s.leader, Some(last));
}

#[test]
fn alter_isr_is_compare_and_set_and_move_leader_needs_a_clean_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    for id in 1..=3 {
        c.register(r(id), u64::from(id), LogRecovery::Intact)
            .unwrap();
    }
    let s = c.metadata().unwrap().state;
    let leader = s.leader.unwrap();
    assert_eq!(leader, r(1));

    // The leader shrinks the ISR; a second proposal from the same partition epoch is stale.
    let shrink = proposal(&s, &[(1, None), (2, None)]);
    let stale = proposal(&s, &[(1, None), (3, None)]);
    let s2 = c.alter_isr(&shrink).unwrap();
    assert_eq!(s2.isr, ids(&[1, 2]));
    assert_eq!(s2.partition_epoch, s.partition_epoch + 1);
    let e = c.alter_isr(&stale).unwrap_err();
    assert!(matches!(
        remote(&e),
        RemoteError::Replication(ReplicationError::StalePartitionEpoch { .. })
    ));
    // Not from the leader: refused.
    let mut forged = proposal(&s2, &[(1, None), (2, None), (3, Some(3))]);
    forged.leader = r(2);
    let e = c.alter_isr(&forged).unwrap_err();
    assert!(matches!(
        remote(&e),
        RemoteError::Replication(ReplicationError::NotLeader { .. })
    ));
    // An added member must be named under its current incarnation.
    let e = c
        .alter_isr(&proposal(&s2, &[(1, None), (2, None), (3, Some(99))]))
        .unwrap_err();
    assert!(matches!(
        remote(&e),
        RemoteError::Replication(ReplicationError::StaleIncarnation { .. })
    ));

    // r3 is out of the ISR: it cannot be made leader; r2 can.
    let e = c.elect_leader(Some(r(3)), false).unwrap_err();
    assert_eq!(
        remote(&e),
        &RemoteError::Replication(ReplicationError::IneligibleReplica(r(3)))
    );
    let moved = c.elect_leader(Some(r(2)), false).unwrap();
    assert!(!moved.unclean);
    assert_eq!(moved.state.leader, Some(r(2)));
    assert_eq!(moved.state.leader_epoch, s2.leader_epoch + 1);
    // Moving to the current leader changes nothing.
    assert_eq!(
        c.elect_leader(Some(r(2)), false).unwrap().state,
        moved.state
    );
    // The old leader's proposal is now fenced; the new leader re-adds r3.
    let e = c
        .alter_isr(&proposal(&s2, &[(1, None), (2, None)]))
        .unwrap_err();
    assert!(matches!(
        remote(&e),
        RemoteError::Replication(ReplicationError::NotLeader { .. })
    ));
    let s3 = c
        .alter_isr(&proposal(
            &moved.state,
            &[(1, None), (2, None), (3, Some(3))],
        ))
        .unwrap();
    assert_eq!(s3.isr, ids(&[1, 2, 3]));
    let to3 = c.elect_leader(Some(r(3)), false).unwrap();
    assert_eq!(to3.state.leader, Some(r(3)));
    h.server.service().controller().check_invariants();
}

#[test]
fn controlled_shutdown_and_unclean_election() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    for id in 1..=3 {
        c.register(r(id), u64::from(id), LogRecovery::Intact)
            .unwrap();
    }
    let s = c.replica_failed(r(1)).unwrap();
    assert_eq!(s.leader, Some(r(2)));
    assert_eq!(s.isr, ids(&[2, 3]));
    let e = c.heartbeat(r(1), 1, Offset(0)).unwrap_err();
    assert!(matches!(remote(&e), RemoteError::SessionExpired { .. }));
    let s = c.replica_failed(r(2)).unwrap();
    assert_eq!(s.leader, Some(r(3)));
    let s = c.replica_failed(r(3)).unwrap();
    assert_eq!(s.leader, None, "last replica standing: offline");
    assert_eq!(s.isr, ids(&[3]));
    // r1 comes back: not a clean candidate; only an explicit unclean election makes it lead.
    c.register(r(1), 11, LogRecovery::Intact).unwrap();
    assert_eq!(c.metadata().unwrap().state.leader, None);
    let e = c.elect_leader(None, false).unwrap_err();
    assert_eq!(
        remote(&e),
        &RemoteError::Replication(ReplicationError::NoEligibleLeader)
    );
    let e = c.elect_leader(Some(r(1)), true).unwrap();
    assert!(e.unclean);
    assert_eq!(e.state.leader, Some(r(1)));
    assert_eq!(e.state.isr, ids(&[1]));
    let e = c.replica_failed(r(9)).unwrap_err();
    assert_eq!(
        remote(&e),
        &RemoteError::Replication(ReplicationError::UnknownReplica(r(9)))
    );
}

#[test]
fn producer_ids_are_unique_across_controller_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = BTreeSet::new();
    for _life in 0..3 {
        let h = start(dir.path());
        let mut c = h.client();
        for _ in 0..10 {
            let (id, epoch) = c.init_producer_id().unwrap();
            assert_eq!(epoch, 0);
            assert!(seen.insert(id), "{id:?} handed out twice");
        }
        h.server.shutdown();
    }
    assert_eq!(seen.len(), 30);
}

#[test]
fn concurrent_clients_each_get_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    for id in 1..=3 {
        c.register(r(id), u64::from(id), LogRecovery::Intact)
            .unwrap();
    }
    let threads: Vec<_> = (1..=3u32)
        .map(|id| {
            let mut c = h.client();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..200u64 {
                    let s = c.heartbeat(r(id), u64::from(id), Offset(i)).unwrap();
                    assert_eq!(s.isr.len(), 3);
                    if i % 20 == 0 {
                        ids.push(c.init_producer_id().unwrap().0);
                    }
                }
                ids
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(all.insert(id));
        }
    }
    assert_eq!(all.len(), 30);
}

#[test]
fn a_stopped_controller_is_a_typed_error_naming_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = h.client();
    c.metadata().unwrap();
    let addr = h.server.local_addr().unwrap();
    h.server.shutdown();
    let e = c.metadata().unwrap_err();
    assert_eq!(e.addr, addr);
    assert!(e.outcome_unknown() || e.remote().is_none());
    assert!(e.to_string().starts_with(&addr.to_string()), "{e}");
}

// ---- the commands -------------------------------------------------------------------------

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn oncelog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .args(args)
        .output()
        .unwrap()
}

/// Starts `oncelog controller` on a free loopback port and waits for its "listening" line.
fn spawn_controller(dir: &Path, extra: &[&str]) -> (Controller, String) {
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = dir.join("cluster");
        std::fs::write(
            &cluster,
            format!(
                "# test cluster\ncontroller 127.0.0.1:{port}\nreplica 1 127.0.0.1:1 data1\n\
                 replica 2 127.0.0.1:2\nreplica 3 127.0.0.1:3\nmin_insync_replicas 2\n"
            ),
        )
        .unwrap();
        let cluster = cluster.to_str().unwrap().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_oncelog"))
            .args(["controller", "--insecure", "--cluster", &cluster])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.contains("listening on") {
            return (Controller(child), cluster);
        }
        // The port was taken between our probe and the controller's bind: try another.
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start oncelog controller");
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn controller_move_leader_and_cluster_status_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, cluster) = spawn_controller(dir.path(), &["--session-timeout-ms", "60000"]);

    let status = oncelog(&["cluster-status", "--cluster", &cluster]);
    assert!(status.status.success(), "{status:?}");
    let text = stdout(&status);
    assert!(
        text.contains("leader 1 leader_epoch 0 partition_epoch 0 isr 1,2,3 min_insync_replicas 2"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3 + 3, "{text}");

    let moved = oncelog(&["move-leader", "--cluster", &cluster, "--to", "3"]);
    assert!(moved.status.success(), "{moved:?}");
    assert_eq!(
        stdout(&moved).trim(),
        "leader 3 leader_epoch 1 partition_epoch 1 isr 1,2,3"
    );
    let text = stdout(&oncelog(&["cluster-status", "--cluster", &cluster]));
    assert!(text.contains("leader 3 leader_epoch 1"), "{text}");

    let refused = oncelog(&["move-leader", "--cluster", &cluster, "--to", "7"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown_replica"),
        "{refused:?}"
    );
    let usage = oncelog(&["move-leader", "--cluster", &cluster]);
    assert_eq!(usage.status.code(), Some(2));
    // The controller keeps its state beside the cluster file and locks it.
    assert!(dir.path().join("controller-data").is_dir());
}

#[test]
fn commands_report_an_absent_controller_and_a_bad_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 (tcpmux): privileged, never an ephemeral port a concurrent test could be given.
    let port = 1;
    let cluster = dir.path().join("cluster");
    std::fs::write(
        &cluster,
        format!("controller 127.0.0.1:{port}\nreplica 1 127.0.0.1:2\n"),
    )
    .unwrap();
    let cluster = cluster.to_str().unwrap();
    let o = oncelog(&["cluster-status", "--cluster", cluster]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    std::fs::write(
        dir.path().join("bad"),
        "controller 127.0.0.1:1\nreplicas 1\n",
    )
    .unwrap();
    let bad = dir.path().join("bad");
    let o = oncelog(&["controller", "--cluster", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(":2: unknown directive 'replicas'"), "{err}");
}

/// A client of several controller addresses whose first one is dead answers its first request
/// from the next one, within the same call (a fresh `oncelog produce` after the acting
/// controller on etcd was killed failed its producer-id request instead), and the live one
/// stays current for the calls after.
#[test]
fn a_dead_controller_address_is_skipped_within_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let live = h.server.local_addr().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cluster = ClusterFile::parse(&format!(
        "controller {dead} {live}\nreplica 1 127.0.0.1:1\nreplica 2 127.0.0.1:2\n\
         replica 3 127.0.0.1:3\nmin_insync_replicas 2\n"
    ))
    .unwrap();
    let mut c = ControllerClient::for_cluster(
        &cluster,
        TransportConfig::default(),
        Duration::from_secs(30),
    );
    let (first, _) = c.init_producer_id().expect("the live controller answers");
    assert_eq!(c.addr(), live, "the live controller stays current");
    let (second, _) = c.init_producer_id().unwrap();
    assert!(
        second.0 > first.0,
        "ids are unique: {first:?} then {second:?}"
    );
}
