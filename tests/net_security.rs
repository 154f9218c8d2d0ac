//! Security of the TCP service, black-box on loopback (`docs/security.md`): a cluster whose
//! file has `tls_ca`, `tls_cert` and `allow` lines, with certificates made at run time
//! (`tests/common/pki.rs`, `rcgen`: a
//! cluster CA, the controller, three replicas, clients `alice` (produce, read), `ops` (admin)
//! and `mallory` (signed by the CA, granted nothing), and a rogue CA's `replica-3`).
//!
//! Every probe of issue 15 is refused with a typed `Unauthorized` answer when security is on:
//! produce, read, producer-id allocation, an unclean election, `ReplicaFailed`, `Register` as
//! replica 3 with incarnation 2^64-1, and a fetch as a follower with that follower's real
//! incarnation, each from a peer without a certificate, from `mallory`, from `alice` where she
//! lacks the right, and from another member; after them the ISR is whole and acks=all writes
//! go through. A member with an unknown CA's certificate cannot connect at all. An authorized
//! client round-trips produce and read over TLS, and the TLS cluster replicates (acks=all) to
//! every replica. The binary refuses plain TCP without `--insecure`, and its client commands
//! present `--cert`.

mod common;

use common::pki::{self, Pki};
use common::{free_port, free_ports};

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::io::fs::RealStorage;
use oncelog::net::{
    CertPaths, ClusterFile, Connection, ControllerClient, ControllerConfig, ControllerServer,
    Member, Message, NetError, NetErrorKind, RemoteError, ReplicaClient, Security, TransportConfig,
};
use oncelog::node::{Node, NodeOptions, PartitionClient};
use oncelog::producer::ProduceTarget;
use oncelog::replica::Acks;
use oncelog::replication::{FetchRequest, LogRecovery, ReplicaId};
use oncelog::{BatchBuilder, BatchView, LogConfig, Offset, SystemClock};

const T: Duration = Duration::from_secs(5);
/// The longest a test waits for a condition (a loaded 2-core CI machine is slow to form a
/// TLS cluster).
const WAIT: Duration = Duration::from_secs(60);

/// A secured cluster file for a controller on `controller_port` and three replicas.
fn cluster_text(controller_port: u16) -> String {
    let mut s = format!("# secured test cluster\ncontroller 127.0.0.1:{controller_port}\n");
    // Three distinct ports that are not the controller's.
    let mut ports = free_ports(4).into_iter().filter(|p| *p != controller_port);
    for id in 1..=3 {
        s.push_str(&format!(
            "replica {id} 127.0.0.1:{} d{id}\n",
            ports.next().unwrap()
        ));
    }
    s.push_str("min_insync_replicas 2\n");
    s.push_str(&pki::security_lines());
    s
}

/// A controller and three nodes in this process, every one serving TLS.
struct SecureCluster {
    cluster: ClusterFile,
    controller: ControllerServer,
    nodes: Vec<Node>,
}

impl SecureCluster {
    fn start(dir: &Path) -> SecureCluster {
        SecureCluster::start_with(dir, "")
    }

    /// A cluster whose file has the `extra` lines too.
    fn start_with(dir: &Path, extra: &str) -> SecureCluster {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let path = dir.join("cluster.txt");
        let text = cluster_text(listener.local_addr().unwrap().port()) + extra;
        std::fs::write(&path, text).unwrap();
        let cluster = ClusterFile::load(&path).unwrap();
        let mut config = ControllerConfig::new(dir.join("controller"));
        config.security = Some(Security::for_member(&cluster, Member::Controller, None).unwrap());
        let controller = ControllerServer::start(
            listener,
            cluster.clone(),
            config,
            Arc::new(SystemClock),
            Arc::new(RealStorage::new()),
        )
        .unwrap();
        let nodes = (1..=3)
            .map(|id| {
                let r = ReplicaId(id);
                let entry = cluster.replica(r).unwrap();
                let mut o = NodeOptions::new(cluster.clone(), r, entry.dir.clone().unwrap());
                // Small segments: the default preallocates 1 GiB per replica.
                o.log = LogConfig::default().with_segment_bytes(1 << 20);
                o.tick_ms = 10;
                o.security =
                    Some(Security::for_member(&cluster, Member::Replica(r), None).unwrap());
                Node::start(o).unwrap()
            })
            .collect();
        let c = SecureCluster {
            cluster,
            controller,
            nodes,
        };
        c.wait_for_full_isr();
        c
    }

    /// Waits until every replica registered (over TLS) and the ISR holds all three.
    fn wait_for_full_isr(&self) {
        let until = Instant::now() + WAIT;
        loop {
            let ctl = self.controller.service().controller();
            let registered = (1..=3).all(|i| {
                ctl.incarnation(ReplicaId(i))
                    .is_some_and(|inc| inc > 1 << 40)
            });
            let s = self.controller.service().state();
            if registered && s.leader.is_some() && s.isr.len() == 3 {
                return;
            }
            assert!(Instant::now() < until, "cluster did not form: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self, id: u32) -> std::net::SocketAddr {
        self.cluster.replica(ReplicaId(id)).unwrap().addr
    }

    fn controller_client(&self, security: Option<Security>) -> ControllerClient {
        ControllerClient::new(self.cluster.controller, TransportConfig::default(), T)
            .with_security(security)
    }

    fn replica_client(&self, id: u32, security: Option<Security>) -> ReplicaClient {
        ReplicaClient::new(self.addr(id), TransportConfig::default(), T)
            .with_security(security, ReplicaId(id))
    }

    fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().unwrap();
        }
        self.controller.shutdown();
    }
}

fn batch(value: &str) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(0, None, Some(value.as_bytes()));
    b.build().unwrap().as_bytes().to_vec()
}

/// Waits up to `WAIT` for `cond`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `result` is the typed `Unauthorized` answer.
fn unauthorized<T: std::fmt::Debug>(result: Result<T, NetError>, what: &str) {
    let e = result.expect_err(what);
    assert_eq!(
        e.remote().map(|r| &r.error),
        Some(&RemoteError::Unauthorized),
        "{what}: {e}"
    );
}

#[test]
fn every_probe_is_refused_with_a_typed_error_and_the_cluster_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let c = SecureCluster::start(tmp.path());
    let before = c.controller.service().state();
    let leader = before.leader.unwrap().0;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let follower_incarnation = c
        .controller
        .service()
        .controller()
        .incarnation(ReplicaId(follower))
        .unwrap();
    let fetch = Message::Fetch(FetchRequest {
        replica: ReplicaId(follower),
        incarnation: follower_incarnation,
        fetch_offset: Offset(0),
        last_fetched_epoch: None,
        current_leader_epoch: before.leader_epoch,
        max_bytes: 1 << 20,
    });
    let member =
        |id: u32| Security::for_member(&c.cluster, Member::Replica(ReplicaId(id)), None).unwrap();
    // The third replica: neither the leader (it may report itself failed) nor the follower.
    let other_member = (1..=3).find(|&i| i != leader && i != follower).unwrap();
    // (who, may produce and read, is replica `other_member`)
    let probes: Vec<(&str, Security, bool)> = vec![
        ("no certificate", pki.client(&c.cluster, None), false),
        ("mallory", pki.client(&c.cluster, Some(&pki.mallory)), false),
        ("alice", pki.client(&c.cluster, Some(&pki.alice)), true),
        ("ops", pki.client(&c.cluster, Some(&pki.ops)), false),
        ("another member", member(other_member), false),
    ];
    for (who, security, may_write) in &probes {
        let who = *who;
        // Replica 3, unless that is who is probing (it may register as itself).
        let victim = if who == "another member" && other_member == 3 {
            follower
        } else {
            3
        };
        let mut ctl = c.controller_client(Some(security.clone()));
        let mut node = c.replica_client(leader, Some(security.clone()));
        if !may_write {
            unauthorized(node.produce(&batch("probe"), -1, 1_000), who);
            unauthorized(node.read(Offset(0), 1 << 20), who);
            unauthorized(ctl.init_producer_id(), who);
        }
        if who != "ops" {
            unauthorized(ctl.elect_leader(None, true), who);
            unauthorized(ctl.replica_failed(ReplicaId(leader)), who);
        }
        unauthorized(
            ctl.register(ReplicaId(victim), u64::MAX, LogRecovery::EmptyOrDamaged),
            &format!("{who}: register as {victim}"),
        );
        unauthorized(
            ctl.heartbeat(ReplicaId(victim), u64::MAX, Offset(0)),
            &format!("{who}: heartbeat as {victim}"),
        );
        unauthorized(node.call(&fetch, T), &format!("{who}: fetch as {follower}"));
    }
    // The refusals kept their connections: the same client is answered again, and alice's
    // rights work on it.
    let alice = pki.client(&c.cluster, Some(&pki.alice));
    let mut node = c.replica_client(leader, Some(alice.clone()));
    unauthorized(node.call(&fetch, T), "alice: fetch");
    node.produce(&batch("alice"), -1, 5_000)
        .expect("alice may produce, acks=all");
    assert!(c.nodes.iter().map(Node::refused_requests).sum::<u64>() >= 10);
    assert!(c.controller.refused_requests() >= 20);
    // Nothing changed: same leader and epochs, the whole ISR, the follower's incarnation.
    let after = c.controller.service().state();
    assert_eq!(after.leader, before.leader);
    assert_eq!(after.leader_epoch, before.leader_epoch);
    assert_eq!(after.isr.len(), 3, "{after:?}");
    let ctl = c.controller.service().controller();
    assert_eq!(
        ctl.incarnation(ReplicaId(follower)),
        Some(follower_incarnation)
    );
    for id in 1..=3 {
        assert_ne!(ctl.incarnation(ReplicaId(id)), Some(u64::MAX));
    }
    // The admin may ask for an election (answered by the controller's rules, not refused).
    let mut ops = c.controller_client(Some(pki.client(&c.cluster, Some(&pki.ops))));
    let r = ops.elect_leader(Some(ReplicaId(leader)), false);
    let refused = r
        .as_ref()
        .err()
        .and_then(NetError::remote)
        .map(|r| &r.error);
    assert_ne!(refused, Some(&RemoteError::Unauthorized), "{r:?}");
    c.shutdown();
}

#[test]
fn a_member_with_an_unknown_ca_certificate_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let c = SecureCluster::start(tmp.path());
    let before = c.controller.service().state();
    let leader = before.leader.unwrap().0;
    // Trusting the real CA (to reach the real controller) but presenting the rogue CA's
    // replica-3 certificate.
    let rogue = Security::load(&pki.ca.ca_path(), Some(&pki.rogue_replica_3)).unwrap();
    let mut ctl = c.controller_client(Some(rogue.clone()));
    let e = ctl
        .register(ReplicaId(3), u64::MAX, LogRecovery::Intact)
        .unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    let mut leader_client = c.replica_client(leader, Some(rogue));
    let e = leader_client.read(Offset(0), 1 << 20).unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    // The server counts after sending its alert, so the count may trail our error a little.
    eventually("the controller counts the failed handshake", || {
        c.controller.failed_handshakes() >= 1
    });
    eventually("the leader counts the failed handshake", || {
        c.nodes.iter().map(Node::failed_handshakes).sum::<u64>() >= 1
    });
    // A member trusting only the rogue CA refuses the real controller's certificate.
    let fooled = Security::load(&pki.rogue_ca.ca_path(), Some(&pki.rogue_replica_3)).unwrap();
    let e = c.controller_client(Some(fooled)).metadata().unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    // A plain TCP peer gets no answer at all.
    let mut plain = Connection::new(c.cluster.controller, TransportConfig::default());
    assert!(plain.call(&Message::Metadata, T).is_err());
    // A client checks the server's name: the leader's certificate (replica-N) is not taken
    // for another replica's.
    let real_3 = Security::for_member(&c.cluster, Member::Replica(ReplicaId(3)), None).unwrap();
    let other = (1..=3).find(|&i| i != leader).unwrap();
    let mut wrong = ReplicaClient::new(c.addr(leader), TransportConfig::default(), T)
        .with_security(Some(real_3), ReplicaId(other));
    let e = wrong.read(Offset(0), 1).unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    // Nothing changed.
    let after = c.controller.service().state();
    assert_eq!(after.leader_epoch, before.leader_epoch);
    assert_eq!(after.isr.len(), 3, "{after:?}");
    assert_ne!(
        c.controller
            .service()
            .controller()
            .incarnation(ReplicaId(3)),
        Some(u64::MAX)
    );
    c.shutdown();
}

/// With `tls_crl`, a member whose certificate the CA revoked cannot join: presenting it, a
/// `replica-3` cannot register or fetch (the handshake fails, a typed `Tls` error), while the
/// unrevoked certificates of every member (signed by the same CA) form the cluster and connect.
/// And a server presenting a revoked certificate is refused by a client that has the list,
/// accepted by one without it.
#[test]
fn a_member_with_a_revoked_certificate_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let revoked_3 = pki
        .ca
        .issue_as("replica-3", Some(0x7e57_0003), "replica-3-revoked");
    let revoked_ctl = pki
        .ca
        .issue_as("controller", Some(0x7e57_0001), "controller-revoked");
    pki.ca.revoke(&[0x7e57_0003, 0x7e57_0001]);
    // Every unrevoked member registers over TLS checked against the list.
    let c = SecureCluster::start_with(tmp.path(), "tls_crl certs/crl.pem\n");
    assert_eq!(
        c.cluster.tls.crl.as_deref(),
        Some(tmp.path().join("certs/crl.pem").as_path())
    );
    let before = c.controller.service().state();
    let leader = before.leader.unwrap().0;
    let failed_before = c.controller.failed_handshakes();

    let revoked = Security::load(&pki.ca.ca_path(), Some(&revoked_3)).unwrap();
    let e = c
        .controller_client(Some(revoked.clone()))
        .register(ReplicaId(3), u64::MAX, LogRecovery::Intact)
        .unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    let e = c
        .replica_client(leader, Some(revoked))
        .read(Offset(0), 1 << 20)
        .unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    eventually("the controller counts the refused handshake", || {
        c.controller.failed_handshakes() > failed_before
    });
    // The unrevoked replica-3 certificate connects (and the ISR is whole).
    let genuine = Security::for_member(&c.cluster, Member::Replica(ReplicaId(3)), None).unwrap();
    c.controller_client(Some(genuine)).metadata().unwrap();
    let after = c.controller.service().state();
    assert_eq!(after.isr.len(), 3, "{after:?}");
    assert_ne!(
        c.controller
            .service()
            .controller()
            .incarnation(ReplicaId(3)),
        Some(u64::MAX)
    );

    // A controller serving the revoked certificate.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ControllerConfig::new(tmp.path().join("controller-revoked"));
    config.security = Some(Security::load(&pki.ca.ca_path(), Some(&revoked_ctl)).unwrap());
    let impostor = ControllerServer::start(
        listener,
        c.cluster.clone(),
        config,
        Arc::new(SystemClock),
        Arc::new(RealStorage::new()),
    )
    .unwrap();
    let client = |security| {
        ControllerClient::new(addr, TransportConfig::default(), T).with_security(Some(security))
    };
    let e = client(pki.client(&c.cluster, Some(&pki.alice)))
        .metadata()
        .unwrap_err();
    assert!(matches!(e.kind, NetErrorKind::Tls(_)), "{e}");
    let without_list = Security::load(&pki.ca.ca_path(), Some(&pki.alice)).unwrap();
    client(without_list).metadata().unwrap();
    impostor.shutdown();
    c.shutdown();
}

/// A `tls_crl` file that holds no revocation list is refused when the material loads, naming
/// the file.
#[test]
fn a_crl_file_without_a_list_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let not_a_crl = tmp.path().join("not-a-crl.pem");
    std::fs::copy(pki.ca.ca_path(), &not_a_crl).unwrap();
    let e =
        Security::load_with_crl(&pki.ca.ca_path(), Some(&not_a_crl), Some(&pki.alice)).unwrap_err();
    assert_eq!(e.path.as_deref(), Some(not_a_crl.as_path()), "{e}");
    assert!(e.message.contains("no X509 CRL"), "{e}");
    let e = Security::load_with_crl(
        &pki.ca.ca_path(),
        Some(&tmp.path().join("missing.pem")),
        None,
    )
    .unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
}

/// The offsets and bytes of the committed batches of replica `id`, read until `count`.
fn read_all(client: &PartitionClient, id: u32, count: u64) -> Vec<u8> {
    let until = Instant::now() + WAIT;
    let mut next = Offset(0);
    let mut bytes = Vec::new();
    while next.0 < count {
        let r = client.read_at(ReplicaId(id), next, 1 << 20).unwrap();
        let mut rest = &r.bytes[..];
        while !rest.is_empty() {
            let (view, tail) = BatchView::parse(rest).unwrap();
            assert_eq!(view.base_offset(), next.0);
            next = Offset(view.last_offset() + 1);
            rest = tail;
        }
        bytes.extend_from_slice(&r.bytes);
        if next.0 < count {
            assert!(Instant::now() < until, "replica {id} stuck at {next:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    bytes
}

#[test]
fn an_authorized_client_round_trips_and_the_tls_cluster_replicates_acks_all() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let c = SecureCluster::start(tmp.path());
    let alice = pki.client(&c.cluster, Some(&pki.alice));
    let client = PartitionClient::new(c.cluster.clone(), Acks::All).with_security(Some(alice));
    let (pid, _) = client
        .init_producer_id()
        .expect("alice may get a producer id");
    assert!(pid.0 >= 0);
    let n = 30u64;
    for i in 0..n {
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(format!("record {i}").as_bytes()));
        let info = client.produce(&b.build().unwrap()).unwrap();
        assert_eq!(info.base_offset.0, i);
    }
    // And one batch of 600 KiB: many TLS records each way, written and read under deadlines.
    let big = vec![b'x'; 600 << 10];
    let mut b = BatchBuilder::new();
    b.push(0, None, Some(&big));
    let info = client.produce(&b.build().unwrap()).unwrap();
    assert_eq!(info.base_offset.0, n);
    let n = n + 1;
    let leader = client.leader().unwrap();
    let from_leader = client.read(Offset(0), 1 << 20).unwrap();
    assert!(from_leader.high_watermark.0 >= n);
    // Every replica holds the same committed batches, fetched over mutual TLS.
    let reference = read_all(&client, leader.0, n);
    for id in 1..=3 {
        assert_eq!(read_all(&client, id, n), reference, "replica {id}");
    }
    assert!(String::from_utf8_lossy(&reference).contains("record 29"));
    assert!(reference.len() > 600 << 10);
    assert_eq!(c.controller.refused_requests(), 0);
    c.shutdown();
}

fn oncelog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .args(args)
        .output()
        .unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_serves_tls_from_the_cluster_file_and_plain_tcp_only_with_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let path = tmp.path().join("cluster.txt");
    let port = free_port();
    std::fs::write(&path, cluster_text(port)).unwrap();
    let other = free_ports(2).into_iter().find(|p| *p != port).unwrap();
    let cluster = path.to_str().unwrap();
    let plain_path = tmp.path().join("plain.txt");
    std::fs::write(
        &plain_path,
        format!("controller 127.0.0.1:{port}\nreplica 1 127.0.0.1:{other}\n"),
    )
    .unwrap();
    let plain = plain_path.to_str().unwrap();
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Plain TCP is never silent: no tls_ca and no --insecure is refused.
    let o = oncelog(&["controller", "--cluster", plain]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--insecure"), "{}", err(&o));
    let o = oncelog(&["node", "--cluster", plain, "--id", "1", "--dir", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--insecure"), "{}", err(&o));
    let o = oncelog(&["controller", "--insecure", "--cluster", cluster]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("tls_ca"), "{}", err(&o));

    let mut child = Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .args(["controller", "--cluster", cluster])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _controller = Killed(child);
    assert!(
        line.contains("listening on") && line.contains("(TLS)"),
        "{line}"
    );

    let cert = |c: &CertPaths| {
        [
            "--cert".to_string(),
            c.cert.to_str().unwrap().to_string(),
            "--key".to_string(),
            c.key.to_str().unwrap().to_string(),
        ]
    };
    let with = |base: &[&str], c: &CertPaths| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(cert(c));
        oncelog(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let status = ["cluster-status", "--cluster", cluster];
    let o = oncelog(&status);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
    let o = with(&status, &pki.mallory);
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
    let o = with(&status, &pki.alice);
    assert!(o.status.success(), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("replica"));
    let moving = ["move-leader", "--cluster", cluster, "--to", "2"];
    let o = with(&moving, &pki.alice);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
    let o = with(&moving, &pki.ops);
    assert!(!err(&o).contains("unauthorized"), "{}", err(&o));
    let o = with(&moving, &pki.rogue_replica_3);
    assert!(err(&o).contains("TLS"), "{}", err(&o));
}

/// A TLS server (the controller's certificate, an echo handler) with `config`'s deadlines.
fn trickle_server(dir: &Path, config: TransportConfig) -> (Pki, oncelog::net::Server) {
    use oncelog::net::{Server, ServerSecurity};
    let pki = Pki::new(dir);
    let path = dir.join("cluster.txt");
    std::fs::write(&path, cluster_text(free_port())).unwrap();
    let cluster = ClusterFile::load(&path).unwrap();
    let tls = Security::for_member(&cluster, Member::Controller, None).unwrap();
    let server = Server::start_secure(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Arc::new(|m: Message| m),
        config,
        Some(ServerSecurity::new(tls, &cluster, false)),
    )
    .unwrap();
    (pki, server)
}

/// Sends `bytes` one every 50 ms until the server closes the connection; how long that took
/// (`None`: still open after all of them).
fn trickle(tcp: &mut std::net::TcpStream, bytes: &[u8]) -> Option<Duration> {
    use std::io::{Read, Write};
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    for b in bytes {
        if tcp.write_all(&[*b]).is_err() {
            return Some(start.elapsed());
        }
        let mut buf = [0u8; 256];
        match tcp.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // The end of the stream, an alert, or a reset.
            _ => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn a_handshake_trickled_byte_by_byte_is_dropped_at_the_frame_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let config = TransportConfig {
        frame_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (_pki, server) = trickle_server(tmp.path(), config);
    let mut tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
    // A TLS record header announcing 512 bytes of handshake, then 55 of them: 3 s of bytes.
    let mut bytes = vec![0x16u8, 0x03, 0x01, 0x02, 0x00];
    bytes.resize(60, 0x16);
    let took = trickle(&mut tcp, &bytes).expect("still open after 3 s");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    eventually("the failed handshake is counted", || {
        server.failed_handshakes() >= 1
    });
    server.shutdown();
}

/// A rustls client of the test CA presenting `who`, for driving TLS by hand.
fn raw_tls_client(ca: &Path, who: &CertPaths) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)] // the ring provider, as the crate uses (docs/security.md)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(&who.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&who.key).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

#[test]
fn a_tls_record_trickled_after_the_handshake_is_dropped_at_the_idle_deadline() {
    use std::io::Write;

    let tmp = tempfile::tempdir().unwrap();
    let config = TransportConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        frame_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (pki, server) = trickle_server(tmp.path(), config);
    let mut tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("controller").unwrap();
    let mut conn =
        rustls::ClientConnection::new(raw_tls_client(&pki.ca.ca_path(), &pki.alice), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    // One request, encrypted, its record sent one byte every 50 ms (all but the last byte): no
    // plaintext byte comes out of a record before all of it has arrived.
    let frame = oncelog::net::wire::encode_frame(1, &Message::Metadata, 1 << 20).unwrap();
    conn.writer().write_all(&frame).unwrap();
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).unwrap();
    }
    let took = trickle(&mut tcp, &records[..records.len() - 1])
        .unwrap_or_else(|| panic!("still open after {} bytes", records.len() - 1));
    assert!(took < Duration::from_millis(1500), "{took:?}");
    server.shutdown();
}
