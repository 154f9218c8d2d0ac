//! The secured cluster of `docs/operations.md` ("Operations: running a secured cluster step by
//! step"), run as that document runs it: certificates (made at run time here,
//! `tests/common/pki.rs`), a cluster file with an `etcd` line, two controller addresses and the
//! `tls_ca`, `tls_cert` and `allow` lines, `oncelog controller` twice and three `oncelog node`
//! processes serving TLS (mutual TLS between members: registration, heartbeats and follower
//! fetches present member certificates), then the console clients with `alice`'s certificate,
//! a SIGKILL of the leader node under an acks=all idempotent producer presenting `alice`'s
//! certificate (nothing lost, nothing doubled), `move-leader` refused to `alice` and done by
//! `ops`, and a clean SIGTERM of every node after which `oncelog verify` passes each log.
//! A client without a certificate, and `mallory` (signed by the cluster CA, granted nothing),
//! are refused with the typed `unauthorized` error at once, not after the client's retries.
//!
//! etcd itself is reached over plain HTTP on loopback: `EtcdConfig` has no TLS settings
//! (`docs/security.md`, "etcd").
#![cfg(all(feature = "etcd", feature = "tls"))]

#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use oncelog::net::CertPaths;
use oncelog::node::PartitionClient;
use oncelog::producer::{ProduceTarget, Producer};
use oncelog::replica::Acks;
use oncelog::{BatchBuilder, Error, Offset};

use etcd::*;
use pki::Pki;
use procs::{assert_exactly_once, start_with_input, wait_for, Proc};

/// `result` is the typed refusal `Error::Remote { kind }`, answered before the client's retry
/// window (10 s) ran out.
fn refused<T: std::fmt::Debug>(what: &str, kind: &str, call: impl FnOnce() -> oncelog::Result<T>) {
    let start = Instant::now();
    let result = call();
    assert!(
        matches!(&result, Err(Error::Remote { kind: k, .. }) if *k == kind),
        "{what}: {result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{what}: refused only after {:?}",
        start.elapsed()
    );
}

/// `oncelog ARGS [--cert C --key K]` with `input` on stdin.
fn oncelog(args: &[&str], cert: Option<&CertPaths>, input: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    start_with_input(&mut cmd, input.as_bytes())
        .wait_with_output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_secured_cluster_on_etcd_loses_and_doubles_nothing_and_refuses_strangers() {
    // 1. Certificates; 2. the cluster file (etcd line, two controllers, TLS and ACL lines).
    let etcd = Etcd::start(1);
    let pki = Pki::new(etcd.dir());
    let extra = format!("etcd {}\n{}", etcd.urls(), pki::security_lines());
    let (path, cluster) = cluster_file_with(etcd.dir(), 2, &extra);
    assert!(cluster.tls.enabled());
    let file = path.to_str().unwrap();

    // 3. The controllers and the nodes, every one serving TLS.
    let _controllers: Vec<Proc> = cluster
        .controllers()
        .iter()
        .enumerate()
        .map(|(i, a)| controller(&etcd, &path, *a, 1_000, &format!("controller{i}")))
        .collect();
    let mut nodes: HashMap<u32, Proc> = (1..=3).map(|i| (i, node(&etcd, &path, i))).collect();
    let alice = pki.client(&cluster, Some(&pki.alice));
    let mut ctl = client(&cluster).with_security(Some(alice.clone()));
    // Formed: every node registered over mutual TLS, caught up and in the ISR (a fresh record
    // names all three in the ISR before anyone registered).
    let formed = |ctl: &mut oncelog::net::ControllerClient| {
        ctl.metadata().is_ok_and(|m| {
            m.state.leader.is_some()
                && m.state.isr.len() == 3
                && m.replicas
                    .iter()
                    .all(|r| r.incarnation.is_some() && !r.needs_catch_up)
        })
    };
    wait_for("every node registered, in the ISR", 60, || formed(&mut ctl));
    // (A node prints its address once it started; it may register before that.)
    for id in 1..=3 {
        let log = etcd.dir().join(format!("node{id}.log"));
        wait_for("the node to say it listens", 30, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        });
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("(TLS)"), "{log}");
    }

    // 4. Check it and write with alice's certificate; strangers are refused.
    let mut status = String::new();
    wait_for("cluster-status to show the ISR", 30, || {
        let o = oncelog(&["cluster-status", "--cluster", file], Some(&pki.alice), "");
        assert!(o.status.success(), "{}", stderr(&o));
        status = String::from_utf8_lossy(&o.stdout).into_owned();
        status.contains("isr 1,2,3")
    });
    assert!(status.contains("acting controller"), "{status}");
    let lines: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let input = lines.join("\n") + "\n";
    let produce = ["produce", "--cluster", file, "--acks", "all"];
    let o = oncelog(&produce, Some(&pki.alice), &input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("last offset 19"), "{}", stderr(&o));
    for cert in [None, Some(&pki.mallory)] {
        let o = oncelog(&produce, cert, &input);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    }
    let mut one = BatchBuilder::new();
    one.push(0, None, Some(b"stranger"));
    let one = one.build().unwrap();
    // (who, certificate, the refusal): a certificate from another CA fails the handshake.
    let strangers = [
        ("no certificate", None, "unauthorized"),
        ("mallory", Some(&pki.mallory), "unauthorized"),
        ("a rogue CA's replica-3", Some(&pki.rogue_replica_3), "tls"),
    ];
    for (who, cert, kind) in strangers {
        let stranger = PartitionClient::new(cluster.clone(), Acks::All)
            .with_security(Some(pki.client(&cluster, cert)));
        refused(&format!("{who}: producer id"), kind, || {
            stranger.init_producer_id()
        });
        refused(&format!("{who}: produce"), kind, || stranger.produce(&one));
        refused(&format!("{who}: read"), kind, || {
            stranger.read(Offset(0), 1 << 20)
        });
        let mut stranger_ctl = client(&cluster).with_security(Some(pki.client(&cluster, cert)));
        let e = stranger_ctl.metadata().expect_err(who);
        let said = if kind == "tls" { "TLS" } else { kind };
        assert!(e.to_string().contains(said), "{who}: {e}");
    }

    // 5. alice's idempotent acks=all producer, the leader node SIGKILLed mid-stream.
    let partition = PartitionClient::new(cluster.clone(), Acks::All).with_security(Some(alice));
    let mut producer = producer(&partition);
    let mut expected: Vec<String> = lines.clone();
    let mut tickets: HashMap<u64, usize> = HashMap::new();
    let mut send = |producer: &mut Producer<_, _>, i: usize| {
        let mut b = BatchBuilder::new();
        let v = format!("b{i}");
        b.push(0, None, Some(v.as_bytes()));
        expected.push(v);
        tickets.insert(producer.enqueue(b).unwrap(), i);
    };
    let mut killed = 0;
    for i in 0..150usize {
        send(&mut producer, i);
        if i == 60 {
            wait_for("the leader", 30, || {
                partition.leader().is_ok_and(|l| {
                    killed = l.0;
                    true
                })
            });
            nodes.remove(&killed); // SIGKILL
        }
    }
    producer.flush().unwrap();
    wait_for("a new leader", 60, || {
        partition.leader().is_ok_and(|l| l.0 != killed)
    });
    // Back over TLS in a new life, it catches up and rejoins the ISR.
    nodes.insert(killed, node(&etcd, &path, killed));
    wait_for("the restarted node back in the ISR", 60, || {
        formed(&mut ctl)
    });
    for i in 150..200usize {
        send(&mut producer, i);
    }
    producer.flush().unwrap();
    let acked = std::mem::take(producer.sink_mut());
    assert_eq!(acked.len(), 200, "every batch acknowledged");
    assert_exactly_once(
        &partition,
        &acked,
        &tickets,
        &expected,
        |i| format!("b{i}"),
        &[1, 2, 3],
    );
    let o = oncelog(
        &["consume", "--cluster", file, "--from-beginning"],
        Some(&pki.alice),
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let consumed: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        consumed, expected,
        "the console consumer reads each record once"
    );

    // move-leader is an admin operation: refused to alice, done for ops.
    let leader = partition.leader().unwrap().0;
    let to = (1..=3).find(|&i| i != leader).unwrap().to_string();
    let moving = ["move-leader", "--cluster", file, "--to", &to];
    let o = oncelog(&moving, Some(&pki.alice), "");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = oncelog(&moving, Some(&pki.ops), "");
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("the leadership moved", 30, || {
        partition.leader().is_ok_and(|l| l.0.to_string() == to)
    });

    // SIGTERM closes every node cleanly; each log verifies.
    for (id, mut node) in nodes {
        let status = node.signal_and_wait("TERM", Duration::from_secs(30));
        assert!(status.success(), "node {id}: {status:?}");
        let dir = etcd.dir().join(format!("d{id}"));
        let o = oncelog(&["verify", dir.to_str().unwrap()], None, "");
        assert!(o.status.success(), "verify d{id}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("result: OK"), "{out}");
    }
    assert!(Path::new(&path).exists());
}
