//! The TCP servers' limits, black-box on loopback: a frame trickled byte by byte is dropped at
//! the whole-frame deadline, an idle connection at the idle timeout, a connection over the cap
//! at once, and a peer claiming a large frame costs memory for what it sent, not for what it
//! claimed (counted by a global allocator). After each abuse the server still answers.
//! Deadlines are configured short so the tests take seconds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::io::alloc_count::CountingAllocator;
use oncelog::net::wire::{self, Message, LENGTH_SIZE};
use oncelog::net::{Connection, ErrorReply, RemoteError, Server, TransportConfig};
use oncelog::replication::{LeaderAndIsr, ReplicaId};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator::new();

const T: Duration = Duration::from_secs(5);

fn metadata_server(config: TransportConfig) -> Server {
    let handler = Arc::new(|m: Message| match m {
        Message::Metadata => Message::LeaderAndIsr(LeaderAndIsr {
            leader: Some(ReplicaId(1)),
            leader_epoch: 1,
            partition_epoch: 1,
            isr: vec![ReplicaId(1)],
        }),
        other => Message::Error(ErrorReply::new(RemoteError::InvalidRequest, other.name())),
    });
    Server::bind("127.0.0.1:0", handler, config).unwrap()
}

fn short(frame_ms: u64, idle_ms: u64) -> TransportConfig {
    TransportConfig {
        frame_timeout: Duration::from_millis(frame_ms),
        idle_timeout: Some(Duration::from_millis(idle_ms)),
        ..TransportConfig::default()
    }
}

fn assert_serves(addr: SocketAddr) {
    let mut c = Connection::new(addr, TransportConfig::default());
    let answer = c
        .call(&Message::Metadata, T)
        .expect("the server still answers");
    assert!(matches!(answer, Message::LeaderAndIsr(_)), "{answer:?}");
}

/// How long until the server closes `s` (a read returns end of file or an error); panics
/// after `limit`.
fn closed_within(s: &TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut r = s.try_clone().unwrap();
    r.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("still open after {limit:?}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("still open after {limit:?}")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_trickled_frame_is_dropped_at_the_whole_frame_deadline() {
    let server = metadata_server(short(400, 10_000));
    let addr = server.local_addr();
    let frame = wire::encode_frame(7, &Message::Metadata, 1 << 20).unwrap();
    let s = TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    // One byte every 100 ms: each read succeeds well inside any per-read timeout, but the
    // frame (~20 bytes) would take ~2 s to arrive.
    let trickle = std::thread::spawn(move || {
        for b in frame {
            if w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let took = closed_within(&s, Duration::from_secs(3));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1_500),
        "dropped after {took:?}, deadline 400 ms"
    );
    trickle.join().unwrap();
    assert_serves(addr);
}

#[test]
fn an_idle_connection_is_closed_and_a_client_reconnects_transparently() {
    let server = metadata_server(short(1_000, 300));
    let addr = server.local_addr();
    let s = TcpStream::connect(addr).unwrap();
    let took = closed_within(&s, Duration::from_secs(3));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1_500),
        "idle connection closed after {took:?}, timeout 300 ms"
    );
    // A client whose pooled connection the server closed for idleness does not lose its next
    // call to the dead socket: it sees the close and reconnects before sending.
    let mut c = Connection::new(addr, TransportConfig::default());
    c.call(&Message::Metadata, T).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(c.is_connected());
    c.call(&Message::Metadata, T)
        .expect("the call after the idle close is answered");
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_the_server_keeps_serving() {
    let cfg = TransportConfig {
        max_connections: 4,
        ..short(1_000, 10_000)
    };
    let server = metadata_server(cfg);
    let addr = server.local_addr();
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until("4 open connections", || server.open_connections() == 4);
    let extra = TcpStream::connect(addr).unwrap();
    let took = closed_within(&extra, Duration::from_secs(2));
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert_eq!(server.refused_connections(), 1);
    assert_eq!(server.open_connections(), 4);
    // The held connections are still served.
    let mut first = held.remove(0);
    let frame = wire::encode_frame(1, &Message::Metadata, 1 << 20).unwrap();
    first.write_all(&frame).unwrap();
    let mut prefix = [0u8; LENGTH_SIZE];
    first.read_exact(&mut prefix).unwrap();
    // Closing one frees a slot for a new client.
    drop(first);
    wait_until("a freed slot", || server.open_connections() == 3);
    assert_serves(addr);
}

#[test]
fn a_request_over_the_limit_is_refused_with_a_typed_error_without_buffering_it() {
    let cfg = TransportConfig {
        max_request_bytes: 16 << 10,
        ..short(2_000, 10_000)
    };
    let server = metadata_server(cfg);
    let addr = server.local_addr();
    // A client allowed larger frames sends 200 KiB: the server reads it through, answers
    // InvalidRequest naming its limit, and the connection stays in step.
    let mut c = Connection::new(addr, TransportConfig::default());
    let big = Message::Produce {
        acks: 1,
        timeout_ms: 0,
        batch: vec![0; 200 << 10],
    };
    let e = c.call(&big, T).unwrap_err();
    let reply = e
        .remote()
        .unwrap_or_else(|| panic!("not an error reply: {e}"));
    assert_eq!(reply.error, RemoteError::InvalidRequest);
    assert!(reply.message.contains("limit of 16384 bytes"), "{reply}");
    assert!(c.is_connected());
    assert!(c.call(&Message::Metadata, T).is_ok());
    // A claim over the limit whose body never comes is closed at the frame deadline.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    s.write_all(&[wire::VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let took = closed_within(&s, Duration::from_secs(5));
    assert!(took < Duration::from_millis(3_500), "{took:?}");
    assert_serves(addr);
}

#[test]
fn claimed_frame_lengths_cost_memory_only_for_the_bytes_sent() {
    // The server accepts frames up to 64 MiB; 200 peers each claim 64 MiB and send 1 KiB.
    const PEERS: usize = 200;
    let cfg = TransportConfig {
        max_request_bytes: 64 << 20,
        ..short(5_000, 10_000)
    };
    let server = metadata_server(cfg);
    let addr = server.local_addr();
    let before = ALLOC.live();
    ALLOC.reset_peak();
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
        s.write_all(&[wire::VERSION; 1024]).unwrap();
        peers.push(s);
    }
    wait_until("every peer served", || server.open_connections() == PEERS);
    std::thread::sleep(Duration::from_millis(300));
    let grew = ALLOC.peak().saturating_sub(before);
    // Each connection buffers its first 64 KiB chunk at most (13 MiB for 200), plus thread
    // bookkeeping; allocating each claim would be 12.5 GiB.
    assert!(
        grew < 48 << 20,
        "{grew} bytes allocated for {PEERS} claims of 64 MiB"
    );
    assert_serves(addr);
    for s in &peers {
        let _ = s.shutdown(Shutdown::Both);
    }
    drop(peers);
    wait_until("the peers' connections closed", || {
        server.open_connections() == 0
    });
}

#[test]
fn a_read_claiming_gigabytes_is_answered_with_what_fits_in_a_frame() {
    use oncelog::io::fs::RealStorage;
    use oncelog::net::{ClusterFile, ControllerConfig, ControllerServer, ReplicaClient};
    use oncelog::node::{Node, NodeOptions, PartitionClient};
    use oncelog::producer::ProduceTarget;
    use oncelog::replica::Acks;
    use oncelog::{BatchBuilder, LogConfig, Offset, SystemClock};

    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = ClusterFile::parse(&format!(
        "controller {}\nreplica 1 127.0.0.1:{node_port}\n",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let controller = ControllerServer::start(
        listener,
        cluster.clone(),
        ControllerConfig::new(tmp.path().join("controller")),
        Arc::new(SystemClock),
        Arc::new(RealStorage::new()),
    )
    .unwrap();
    let mut o = NodeOptions::new(cluster.clone(), ReplicaId(1), tmp.path().join("d1"));
    o.log = LogConfig::default();
    o.tick_ms = 10;
    // Answers of at most 64 KiB.
    o.transport.max_frame_bytes = 64 << 10;
    let node = Node::start(o).unwrap();
    let client = PartitionClient::new(cluster.clone(), Acks::Leader);
    let value = vec![b'v'; 1000];
    let mut written = 0;
    let until = Instant::now() + T;
    while written < 200 {
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(&value));
        match client.produce(&b.build().unwrap()) {
            Ok(_) => written += 1,
            Err(e) => {
                assert!(Instant::now() < until, "no leader: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // 200 KiB committed; a read asking for 4 GiB gets one frame's worth, and the rest after it.
    let mut reader = ReplicaClient::new(
        cluster.replica(ReplicaId(1)).unwrap().addr,
        TransportConfig::default(),
        T,
    );
    let mut next = Offset(0);
    let mut reads = 0;
    while next.0 < 200 {
        let r = reader.read(next, u32::MAX).expect("answered, not refused");
        assert!(!r.bytes.is_empty());
        assert!(r.bytes.len() <= 64 << 10, "{} bytes", r.bytes.len());
        let mut rest = &r.bytes[..];
        while !rest.is_empty() {
            let (view, tail) = oncelog::BatchView::parse(rest).unwrap();
            assert_eq!(view.base_offset(), next.0);
            next = Offset(view.last_offset() + 1);
            rest = tail;
        }
        reads += 1;
    }
    assert!(reads >= 4, "{reads} reads for 200 KiB in 64 KiB answers");
    node.shutdown().unwrap();
    controller.shutdown();
}
