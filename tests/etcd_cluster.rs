//! The controller on etcd under a running cluster: three `oncelog node` processes, two
//! controllers and three etcd members, with an acks=all idempotent producer, through SIGKILLs
//! of every kind and a full restart. The harness is `tests/common/etcd.rs`.
#![cfg(feature = "etcd")]

#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use oncelog::net::{ControllerClient, ControllerStore};
use oncelog::node::PartitionClient;
use oncelog::producer::{Delivery, Producer};
use oncelog::replica::Acks;
use oncelog::replication::ReplicaId;

use etcd::*;
use procs::{assert_exactly_once, wait_for, Proc};

/// Three `oncelog node` processes, two controllers and a three-member etcd. Mid-stream the
/// leader node, the acting controller and one etcd member are SIGKILLed together; the killed
/// node restarts and catches up; a follower is paused past its lease and resumed. An acks=all
/// idempotent producer gets every batch acknowledged, the log holds each exactly once in order
/// at its acknowledged offset, and every replica holds the same committed records.
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
    let mut producer = producer(&partition);
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
            let (mut leader, mut acting) = (0, None);
            wait_for("the leader and the acting controller", 30, || {
                leader = partition.leader().map_or(0, |l| l.0);
                acting = watcher.acting_candidate().ok().flatten();
                leader != 0 && acting.is_some()
            });
            let acting = acting.unwrap();
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
        let mut producer = producer(&partition);
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

/// The highest epoch `id`'s log says it led (`leads epoch N`) or followed (`follows leader L
/// in epoch N`), if any.
fn logged_epoch(etcd: &Etcd, id: u32, what: &str) -> Option<i32> {
    let log = std::fs::read_to_string(etcd.dir().join(format!("node{id}.log"))).ok()?;
    log.lines()
        .filter_map(|l| l.split(what).nth(1))
        .filter_map(|e| {
            let digits: String = e.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
}

fn led_epoch(etcd: &Etcd, id: u32) -> Option<i32> {
    logged_epoch(etcd, id, "leads epoch ")
}

/// Polls `ok` every 2 ms (finer than `wait_for`: this times what it waits for).
fn wait_closely(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long a leader change takes to reach the nodes. Three nodes heartbeat every 500 ms; the
/// leader is paused (SIGSTOP, so it cannot register again) and its session lease revoked in
/// etcd; the time until another node says it leads the next epoch, and until the third says it
/// follows it, is printed (run with `--nocapture`). A session ended in etcd reaches the acting
/// controller through its etcd watch, and the new record reaches the nodes through their
/// `WatchPartition` long poll, so both take far less than one heartbeat period.
#[test]
fn a_leader_change_reaches_the_nodes_before_their_next_heartbeat() {
    const TICK_MS: u64 = 500;
    let etcd = Etcd::start(1);
    let (path, cluster) = cluster_file(etcd.dir(), 1);
    let _controller = controller(&etcd, &path, cluster.controller, 10_000, "controller");
    let nodes: HashMap<u32, Proc> = (1..=3)
        .map(|i| (i, node_ticking(&etcd, &path, i, TICK_MS)))
        .collect();
    let mut ctl = client(&cluster);
    let store = etcd.store();
    let (mut to_leader, mut to_follower) = (Vec::new(), Vec::new());
    for round in 0..5 {
        // Steady: a full ISR, and its leader says it leads the record's epoch.
        let mut before = state(&mut ctl);
        wait_for("a full ISR and a leader that knows it leads", 60, || {
            before = state(&mut ctl);
            before.isr.len() == 3
                && before
                    .leader
                    .is_some_and(|l| led_epoch(&etcd, l.0) == Some(before.leader_epoch))
        });
        let old = before.leader.unwrap();
        signal(&nodes[&old.0], "STOP");
        let t0 = Instant::now();
        store.end_session(old).unwrap();
        let mut new = 0;
        wait_closely("another node to lead", || {
            new = (1..=3)
                .filter(|&i| i != old.0)
                .find(|&i| led_epoch(&etcd, i).is_some_and(|e| e > before.leader_epoch))
                .unwrap_or(0);
            new != 0
        });
        to_leader.push(t0.elapsed());
        let epoch = led_epoch(&etcd, new).unwrap();
        let third = (1..=3).find(|&i| i != old.0 && i != new).unwrap();
        let follows = format!("follows leader {new} in epoch ");
        wait_closely("the third node to follow", || {
            logged_epoch(&etcd, third, &follows).is_some_and(|e| e >= epoch)
        });
        to_follower.push(t0.elapsed());
        println!(
            "round {round}: leader {old} lease revoked -> node {new} leads after {:.1} ms, \
             node {third} follows it after {:.1} ms (heartbeat every {TICK_MS} ms)",
            to_leader[round].as_secs_f64() * 1e3,
            to_follower[round].as_secs_f64() * 1e3
        );
        signal(&nodes[&old.0], "CONT");
    }
    // The node side: the third node learns the new record when the controller publishes it
    // (its parked `WatchPartition` answers), not at its own next heartbeat.
    let mut lag: Vec<Duration> = to_follower
        .iter()
        .zip(&to_leader)
        .map(|(f, l)| f.saturating_sub(*l))
        .collect();
    lag.sort();
    for (what, took) in [
        ("new leader", &mut to_leader),
        ("other follower", &mut to_follower),
    ] {
        took.sort();
        println!(
            "lease revoked -> {what} knows: median {:.1} ms, max {:.1} ms",
            took[2].as_secs_f64() * 1e3,
            took[4].as_secs_f64() * 1e3
        );
    }
    println!(
        "new leader leads -> other follower knows: median {:.1} ms",
        lag[2].as_secs_f64() * 1e3
    );
    assert!(
        lag[2] < Duration::from_millis(TICK_MS / 5),
        "the other follower learned the change {:?} (median) after the new leader: its watch \
         did not answer when the controller published",
        lag[2]
    );
    // The whole push, in every round: the lease revoked in etcd reaches the acting controller
    // through its etcd watch, and the new record reaches the new leader through its
    // `WatchPartition` long poll. A node learning at its heartbeat instead would take anywhere
    // up to a period (a node's watch thread used to sleep a whole tick while it registered, so
    // a node that had just started or just been resumed missed the change; one CI run saw
    // 483-487 ms in every round). Half a period bounds every round; the median is far below.
    let slowest = *to_leader.iter().max().unwrap();
    assert!(
        slowest < Duration::from_millis(TICK_MS / 2),
        "a new leader learned the change only after {slowest:?}: not pushed (heartbeat every \
         {TICK_MS} ms)"
    );
    assert!(
        to_leader[2] < Duration::from_millis(TICK_MS / 5),
        "the new leader learned the change after {:?} (median)",
        to_leader[2]
    );
}
