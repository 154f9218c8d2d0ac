//! Processes on loopback for the cluster tests: a child killed with SIGKILL when dropped, free
//! ports, polling with a deadline, and the committed records of a cluster's replicas.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oncelog::node::PartitionClient;
use oncelog::producer::Delivery;
use oncelog::replication::ReplicaId;
use oncelog::{BatchView, Offset};

/// A child process, SIGKILLed (no clean-up of any kind) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1) and waits for the exit, at most `limit`.
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "no exit within {limit:?} of SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `program ARGS` with stderr into the file `stderr` and stdout piped, waits for its
/// first stdout line and checks it contains `ready`, then keeps draining stdout (so the process
/// never blocks on a full pipe).
pub fn start_until_ready(program: &Path, args: &[&str], stderr: &Path, ready: &str) -> Proc {
    use std::io::{BufRead, BufReader};
    let err = std::fs::File::create(stderr).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains(ready),
        "{args:?}: {line:?}; stderr: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    std::thread::spawn(move || for _ in out.lines() {});
    Proc(child)
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback port free a moment ago (another process may take it before it is bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct loopback ports, free a moment ago (all bound at once while choosing, so no two
/// are the same).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts `program args` with stdout and stderr appended to the file `log` (a restarted
/// process keeps its earlier lives' lines).
pub fn spawn_logged(program: &Path, args: &[&str], log: &Path) -> Proc {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    Proc(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display())),
    )
}

/// Starts `cmd` with stdin, stdout and stderr piped, writes `input` to its stdin and closes it.
/// A child that exits without reading (a refused command line) breaks the pipe: not an error.
pub fn start_with_input(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Err(e) = stdin.write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(stdin);
    child
}

/// Polls `ok` every 50 ms; fails the test after `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every committed record value at replica `id` (or the leader), in offset order.
pub fn committed(client: &PartitionClient, id: Option<ReplicaId>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = Offset(0);
    loop {
        let r = match id {
            Some(id) => client.read_at(id, next, 1 << 20),
            None => client.read(next, 1 << 20),
        }
        .unwrap();
        let mut rest = &r.bytes[..];
        if rest.is_empty() {
            return out;
        }
        while !rest.is_empty() {
            let (view, tail) = BatchView::parse(rest).unwrap();
            for rec in view.records() {
                let rec = rec.unwrap();
                let v = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
                out.push((view.base_offset() + rec.offset_delta as u64, v));
            }
            next = Offset(view.last_offset() + 1);
            rest = tail;
        }
        if next >= r.high_watermark {
            return out;
        }
    }
}

/// What an idempotent producer's run must leave: the leader's committed log holds exactly
/// `expected` in order, each acknowledged batch (ticket → batch number in `tickets`) starts at
/// its acknowledged offset with the value `first_value(batch)`, and every replica in
/// `replicas` ends with the same committed records.
pub fn assert_exactly_once(
    client: &PartitionClient,
    acked: &[(u64, Delivery)],
    tickets: &HashMap<u64, usize>,
    expected: &[String],
    first_value: impl Fn(usize) -> String,
    replicas: &[u32],
) {
    let log = committed(client, None);
    let values: Vec<&str> = log.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, expected, "exactly once, in order");
    let at: HashMap<u64, &str> = log.iter().map(|(o, v)| (*o, v.as_str())).collect();
    for (t, d) in acked {
        if let Delivery::Written(info) = d {
            let want = first_value(tickets[t]);
            assert_eq!(at.get(&info.base_offset.0), Some(&want.as_str()));
        }
    }
    for &id in replicas {
        wait_for("a replica to catch up", 30, || {
            committed(client, Some(ReplicaId(id))).len() == log.len()
        });
        assert_eq!(committed(client, Some(ReplicaId(id))), log, "replica {id}");
    }
}

/// No two nodes led the same leader epoch: every `leads epoch N` line a node logged (the
/// nodes' logs in `logs`, named by node) names an epoch no other node logged.
pub fn assert_one_leader_per_epoch(logs: &[(u32, std::path::PathBuf)]) -> usize {
    let mut leaders: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    for (node, path) in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split("leads epoch ").nth(1) else {
                continue;
            };
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let epoch: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("bad line {line:?}"));
            if let Some(other) = leaders.insert(epoch, *node) {
                assert_eq!(
                    other, *node,
                    "nodes {other} and {node} both led leader epoch {epoch}"
                );
            }
        }
    }
    leaders.len()
}
