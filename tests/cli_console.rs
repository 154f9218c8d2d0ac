//! `oncelog produce` and `oncelog consume` against three `oncelog node` processes and an
//! `oncelog controller` on loopback (plain TCP, `--insecure`): lines piped into the producer
//! come back from the consumer exactly once and in order, slices by offset, keys, `--follow`
//! until SIGTERM, and the exit statuses of bad flags and of an unreachable cluster.

#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use oncelog::net::{ClusterFile, ControllerClient, TransportConfig};
use procs::{free_ports, spawn_logged, start_with_input, wait_for, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");

/// A controller and three nodes, min ISR 2, with a leader and a full ISR.
struct Cluster {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    _procs: Vec<Proc>,
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = free_ports(4);
        let file = dir.join("cluster.txt");
        std::fs::write(
            &file,
            format!(
                "controller 127.0.0.1:{}\nreplica 1 127.0.0.1:{} d1\nreplica 2 127.0.0.1:{} d2\n\
                 replica 3 127.0.0.1:{} d3\nmin_insync_replicas 2\n",
                p[0], p[1], p[2], p[3]
            ),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let mut procs = vec![spawn(
            dir,
            &["controller", "--insecure", "--cluster", f],
            "controller.log",
        )];
        for id in ["1", "2", "3"] {
            let args = [
                "node",
                "--insecure",
                "--cluster",
                f,
                "--id",
                id,
                "--tick-ms",
                "20",
            ];
            procs.push(spawn(dir, &args, &format!("node{id}.log")));
        }
        let cluster = ClusterFile::load(&file).unwrap();
        let mut ctl = ControllerClient::new(
            cluster.controller,
            TransportConfig::default(),
            Duration::from_secs(2),
        );
        wait_for("a leader and a full ISR", 30, || {
            ctl.metadata()
                .is_ok_and(|m| m.state.leader.is_some() && m.state.isr.len() == 3)
        });
        Cluster {
            _tmp: tmp,
            file,
            _procs: procs,
        }
    }

    fn arg(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

fn spawn(dir: &Path, args: &[&str], log: &str) -> Proc {
    spawn_logged(Path::new(BIN), args, &dir.join(log))
}

/// Runs `oncelog args` with `input` on stdin.
fn run(args: &[&str], input: &[u8]) -> Output {
    start_with_input(Command::new(BIN).args(args), input)
        .wait_with_output()
        .unwrap()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn lines_produced_come_back_once_in_order_and_by_offset() {
    let c = Cluster::start();
    let cluster = c.arg();
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("line {i:04}: größe \u{1F980} {}", "x".repeat(i % 50)))
        .collect();
    let input = lines.join("\n") + "\n";
    let out = run(
        &["produce", "--cluster", cluster, "--acks", "all"],
        input.as_bytes(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("1000 records in"), "{err}");
    assert!(err.contains("last offset 999"), "{err}");

    let all = stdout_lines(&run(
        &["consume", "--cluster", cluster, "--from-beginning"],
        b"",
    ));
    assert_eq!(all, lines, "every line once, in order");

    let slice = stdout_lines(&run(
        &[
            "consume",
            "--cluster",
            cluster,
            "--offset",
            "250",
            "--max-records",
            "10",
            "--print-offset",
        ],
        b"",
    ));
    let want: Vec<String> = (250..260).map(|i| format!("{i}\t{}", lines[i])).collect();
    assert_eq!(slice, want);
    // Past the end: nothing, and a clean exit.
    assert!(stdout_lines(&run(
        &["consume", "--cluster", cluster, "--offset", "1000"],
        b""
    ))
    .is_empty());

    // Keys, and a last line without a terminator.
    let out = run(
        &[
            "produce",
            "--cluster",
            cluster,
            "--acks",
            "1",
            "--key-separator",
            "::",
        ],
        b"k1::v1\r\nk2::v::2\n::v3",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // acks=1 answers after the leader's append: the records are read once the HW passes them.
    let mut keyed = Vec::new();
    wait_for("the acks=1 records to be committed", 20, || {
        keyed = stdout_lines(&run(
            &[
                "consume",
                "--cluster",
                cluster,
                "--offset",
                "999",
                "--print-key",
            ],
            b"",
        ));
        keyed.len() >= 4
    });
    assert_eq!(
        keyed,
        [
            format!("null\t{}", lines[999]),
            "k1\tv1".to_string(),
            "k2\tv::2".to_string(),
            "\tv3".to_string(),
        ]
    );
    // A line without the separator fails the command.
    let out = run(
        &["produce", "--cluster", cluster, "--key-separator", "::"],
        b"no separator\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1 has no key separator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --follow prints what arrives after it started, until SIGTERM.
    let tmp = tempfile::tempdir().unwrap();
    let followed = tmp.path().join("followed.txt");
    let mut follower = spawn_logged(
        Path::new(BIN),
        &[
            "consume",
            "--cluster",
            cluster,
            "--offset",
            "1003",
            "--follow",
        ],
        &followed,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = run(&["produce", "--cluster", cluster], b"late 1\nlate 2\n");
    assert_eq!(out.status.code(), Some(0));
    wait_for("the follower to print the new lines", 20, || {
        std::fs::read_to_string(&followed).is_ok_and(|s| s == "late 1\nlate 2\n")
    });
    let pid = follower.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = follower.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "--follow ends cleanly on SIGTERM");
}

#[test]
fn bad_flags_are_usage_errors_and_an_unreachable_cluster_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let p = free_ports(2);
    let file = tmp.path().join("cluster.txt");
    std::fs::write(
        &file,
        format!(
            "controller 127.0.0.1:{}\nreplica 1 127.0.0.1:{} d1\n",
            p[0], p[1]
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    for args in [
        &["produce", "--cluster", f, "--acks", "2"][..],
        &["produce", "--cluster", f, "--frobnicate"],
        &["produce"],
        &["produce", "--cluster", f, "--timeout-ms", "0"],
        &[
            "consume",
            "--cluster",
            f,
            "--offset",
            "1",
            "--from-beginning",
        ],
        &["consume", "--cluster", f, "--offset", "minus one"],
        &["consume", "--cluster", f, "extra"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("oncelog {}", args[0])),
            "{args:?}: {err}"
        );
    }
    // Nothing listens: a typed error and exit 1, not a hang.
    for args in [
        &["produce", "--cluster", f, "--timeout-ms", "300"][..],
        &["consume", "--cluster", f, "--timeout-ms", "300"],
    ] {
        let out = run(args, b"a line\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("oncelog: error:"), "{args:?}: {err}");
    }
}
