//! The controller on etcd, with real processes on loopback: etcd members started here,
//! `oncelog controller --etcd` processes, and replica sessions driven through the controller
//! protocol (`ControllerClient`): compare-and-set, restarts, lease expiry, acting-controller
//! handover, a lost etcd member. The harness is `tests/common/etcd.rs`.
#![cfg(feature = "etcd")]

#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/procs.rs"]
mod procs;

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::clock::ManualClock;
use oncelog::net::{
    ControllerConfig, ControllerServer, ControllerService, ControllerStore, ErrorReply, Message,
    RemoteError,
};
use oncelog::replication::{
    AlterIsrRequest, Controller, InProcessController, IsrMember, LeaderAndIsr, LogRecovery,
    ReplicaId, ReplicationError,
};
use oncelog::SystemClock;

use etcd::*;
use procs::wait_for;

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

/// The controller's etcd watch, not its poll: two in-process controllers on one etcd whose
/// periodic check runs every 10 minutes. A replica's session lease revoked in etcd takes it out
/// of the ISR at the acting controller within a second, and the other controller process knows
/// the new record as soon, without a request reaching it; both are pushed by the watch of
/// `PREFIX/sessions/` and `PREFIX/partition`.
#[test]
fn a_revoked_lease_shrinks_the_isr_through_the_watch_not_the_poll() {
    let etcd = Etcd::start(1);
    let (_path, cluster) = cluster_file(etcd.dir(), 2);
    let mut config = ControllerConfig::new(etcd.dir().join("unused"));
    config.session_timeout_ms = 30_000;
    config.expiry_check_interval = Duration::from_secs(600);
    let serve = |addr| {
        let store = Arc::new(etcd.store());
        let service = ControllerService::with_store(
            cluster.clone(),
            &config,
            Arc::new(SystemClock),
            Arc::clone(&store) as Arc<dyn ControllerStore>,
        );
        let server =
            ControllerServer::serve(TcpListener::bind(addr).unwrap(), service, &config).unwrap();
        (store, server)
    };
    let addrs = cluster.controllers();
    let (acting, a) = serve(addrs[0]);
    acting.campaign("a", 1);
    wait_for("controller a to act", 15, || acting.is_acting());
    let (_other, b) = serve(addrs[1]);
    let mut c = client(&cluster);
    register_all(&mut c, 4);
    let before = state(&mut c);
    assert_eq!(before.isr.len(), 3);
    // The acting controller has seen every session once their keys' events arrived.
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    etcd.store().end_session(ReplicaId(3)).unwrap();
    wait_for(
        "replica 3 out of the ISR at the acting controller",
        10,
        || a.service().state().isr == vec![ReplicaId(1), ReplicaId(2)],
    );
    let took = t.elapsed();
    let shrunk = a.service().state();
    wait_for("the other controller to know the new record", 10, || {
        b.service().state() == shrunk
    });
    let known = t.elapsed();
    println!(
        "lease revoked -> ISR shrunk after {took:?}, known by the other controller after {known:?}"
    );
    assert!(
        took < Duration::from_secs(3) && known < Duration::from_secs(3),
        "{took:?} / {known:?}: the poll (every 600 s) cannot explain this, only the watch can"
    );
    assert!(shrunk.partition_epoch > before.partition_epoch);
}

/// The watch starts again after its stream breaks: the only etcd member is SIGKILLed and
/// restarted under an in-process acting controller whose periodic check runs every 10 minutes;
/// afterwards a revoked lease still shrinks the ISR within seconds (a new round read the store
/// and watches again from that read's revision).
#[test]
fn the_watch_resumes_after_etcd_restarts() {
    let mut etcd = Etcd::start(1);
    let (_path, cluster) = cluster_file(etcd.dir(), 1);
    let mut config = ControllerConfig::new(etcd.dir().join("unused"));
    config.session_timeout_ms = 30_000;
    config.expiry_check_interval = Duration::from_secs(600);
    let store = Arc::new(etcd.store());
    let service = ControllerService::with_store(
        cluster.clone(),
        &config,
        Arc::new(SystemClock),
        Arc::clone(&store) as Arc<dyn ControllerStore>,
    );
    let listener = TcpListener::bind(cluster.controller).unwrap();
    let server = ControllerServer::serve(listener, service, &config).unwrap();
    store.campaign("a", 1);
    wait_for("the controller to act", 15, || store.is_acting());
    let mut c = client(&cluster);
    register_all(&mut c, 4);

    etcd.kill9(0);
    etcd.restart(0);
    let probe = etcd.store();
    wait_for("etcd back", 30, || probe.load().is_ok());
    wait_for("the controller to act again", 30, || store.is_acting());
    // The same lives registering again write their session keys: the events make the acting
    // controller see every session (it forgot them while not acting).
    register_all(&mut c, 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&mut c).isr.len(), 3);

    let t = Instant::now();
    probe.end_session(ReplicaId(3)).unwrap();
    wait_for("replica 3 out of the ISR", 10, || {
        !server.service().state().isr.contains(&ReplicaId(3))
    });
    let took = t.elapsed();
    println!("after an etcd restart: lease revoked -> ISR shrunk after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}: not the watch");
}
