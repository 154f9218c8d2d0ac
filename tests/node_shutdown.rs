//! `oncelog node` and `oncelog controller` as processes: SIGTERM and SIGINT close them cleanly
//! (a node's log gets its clean-shutdown marker, so the next open scans nothing), and a node
//! whose controller cannot be reached says so and backs off instead of retrying every tick.

mod common;
use common::procs::{self, Proc};

use common::free_port;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use oncelog::net::ClusterFile;
use oncelog::node::PartitionClient;
use oncelog::producer::ProduceTarget;
use oncelog::replica::Acks;
use oncelog::BatchBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");

/// Starts `oncelog ARGS` and waits for a stdout line containing `ready`.
fn start(args: &[&str], stderr: &Path, ready: &str) -> Proc {
    procs::start_until_ready(Path::new(BIN), args, stderr, ready)
}

fn oncelog(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A one-replica cluster file in `dir` (min ISR 1); returns its path.
fn cluster_file(dir: &Path, controller_port: u16) -> String {
    let path = dir.join("cluster");
    std::fs::write(
        &path,
        format!(
            "controller 127.0.0.1:{controller_port}\nreplica 1 127.0.0.1:{} d1\n",
            free_port()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn sigterm_closes_a_node_cleanly_and_sigint_stops_the_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = cluster_file(dir, free_port());
    let mut controller = start(
        &["controller", "--insecure", "--cluster", &cluster],
        &dir.join("controller.err"),
        "listening on",
    );
    let mut node = start(
        &[
            "node",
            "--insecure",
            "--cluster",
            &cluster,
            "--id",
            "1",
            "--tick-ms",
            "20",
            "--segment-bytes",
            "1048576",
        ],
        &dir.join("node.err"),
        "listening on",
    );
    // Write through it (acks=all), so the log has data to close.
    let client = PartitionClient::new(ClusterFile::load(Path::new(&cluster)).unwrap(), Acks::All);
    let mut sent = 0;
    let until = Instant::now() + Duration::from_secs(20);
    while sent < 5 {
        assert!(Instant::now() < until, "the node never accepted a write");
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(format!("v{sent}").as_bytes()));
        if client.produce(&b.build().unwrap()).is_ok() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // --segment-bytes sized the active segment (preallocated: its file is that long).
    let active: Vec<u64> = std::fs::read_dir(dir.join("d1"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(
        active,
        [1 << 20],
        "segment files of a 1 MiB --segment-bytes node"
    );

    let status = node.signal_and_wait("TERM", Duration::from_secs(10));
    let err = std::fs::read_to_string(dir.join("node.err")).unwrap();
    assert!(status.success(), "node exit {status:?}: {err}");
    assert!(err.contains("SIGTERM received, closing the log"), "{err}");
    // The next open finds the clean-shutdown marker and the whole log: nothing to scan.
    let stat = oncelog(&["stat", dir.join("d1").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.status.success(), "{stat:?}");
    assert!(text.contains("clean-shutdown marker: present"), "{text}");
    assert!(text.contains("log end offset: 5\n"), "{text}");
    assert!(text.contains("clean shutdown (R1)"), "{text}");

    let status = controller.signal_and_wait("INT", Duration::from_secs(10));
    let err = std::fs::read_to_string(dir.join("controller.err")).unwrap();
    assert!(status.success(), "controller exit {status:?}: {err}");
    assert!(err.contains("SIGINT received, stopping"), "{err}");
    // Its directory lock was released: a new controller starts on the same state.
    let mut again = start(
        &["controller", "--insecure", "--cluster", &cluster],
        &dir.join("controller2.err"),
        "listening on",
    );
    assert!(again
        .signal_and_wait("TERM", Duration::from_secs(10))
        .success());
}

#[test]
fn a_node_without_its_controller_says_so_with_backoff_and_still_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Port 1 (tcpmux): privileged, nothing listens there, connections are refused at once.
    let cluster = cluster_file(dir, 1);
    let mut node = start(
        &[
            "node",
            "--insecure",
            "--cluster",
            &cluster,
            "--id",
            "1",
            "--tick-ms",
            "10",
        ],
        &dir.join("node.err"),
        "listening on",
    );
    std::thread::sleep(Duration::from_millis(2_000));
    let status = node.signal_and_wait("TERM", Duration::from_secs(5));
    let err = std::fs::read_to_string(dir.join("node.err")).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    let attempts: Vec<u64> = err
        .lines()
        .filter(|l| l.contains("cannot reach the controller at 127.0.0.1:1"))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" (")?;
            rest.split_once(" failed attempts")?.0.parse().ok()
        })
        .collect();
    assert!(
        !attempts.is_empty(),
        "no report of the unreachable controller: {err}"
    );
    // Retrying every 10 ms tick would be ~200 attempts in 2 s (reported up to "128 failed
    // attempts"); doubling the wait up to 1 s makes it ~8.
    let most = attempts.iter().max().copied().unwrap_or(0);
    assert!(most <= 16, "{most} attempts in 2 s: no backoff\n{err}");
    assert!(attempts.len() <= 6, "too many reports\n{err}");
    let stat = oncelog(&["stat", dir.join("d1").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(text.contains("clean-shutdown marker: present"), "{text}");
}
