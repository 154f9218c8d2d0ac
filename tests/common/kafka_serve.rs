//! `oncelog serve` as a child process for the Kafka-client tests: started on an ephemeral
//! loopback port over a fresh data directory (1 MiB segments), Python scripts from tests/kafka/
//! run against it with a deadline, and a client that is not installed fails the test with the
//! command that installs it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::procs;

pub const BIN: &str = env!("CARGO_BIN_EXE_oncelog");
pub const PIP: &str =
    "pip install confluent-kafka==2.16.1 kafka-python==3.0.12 lz4 aiokafka==0.14.0";

/// A running `oncelog serve`, killed if the test ends without stopping it.
pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub stderr: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `oncelog serve` on 127.0.0.1:0 over a fresh directory, with `extra` flags, and
    /// reads the port from its first stdout line.
    pub fn start(extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let stderr = dir.path().join("serve.stderr");
        let log = std::fs::File::create(&stderr).unwrap();
        let (child, line) = spawn(&data, "127.0.0.1:0", log, extra);
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no port in {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        Serve {
            child,
            port,
            stderr,
            _dir: Some(dir),
            data,
        }
    }

    /// SIGKILLs the server and starts it again on the same port over the same directory
    /// (clients keep their bootstrap address), with `extra` flags.
    #[allow(dead_code)]
    pub fn kill9_and_restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listen = format!("127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let (child, line) = spawn(&self.data, &listen, log, extra);
        assert!(
            line.contains(&listen),
            "the restarted server is not on {listen}: {line:?}; stderr: {}",
            self.stderr()
        );
        self.child = child;
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then the exit status within 10 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "serve did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `oncelog serve --data DATA --listen LISTEN` (1 MiB segments) with `extra` flags, its
/// stderr to `log`; returns the child and its first stdout line (where it listens).
fn spawn(data: &Path, listen: &str, log: std::fs::File, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", listen, "--segment-bytes", "1048576"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// Fails the test, saying how to install it, when `program --version`-like `probe` fails.
pub fn require(probe: &[&str], what: &str, install: &str) {
    let ok = Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{what} is not installed; this test needs it: `{install}` (.ci/run installs it)"
    );
}

pub fn require_kcat() {
    require(&["kcat", "-V"], "kcat", "apt-get install -y kcat");
}

pub fn require_python(module: &str) {
    require(
        &["python3", "-c", &format!("import {module}")],
        &format!("the Python module {module}"),
        PIP,
    );
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka")
        .join(name)
}

/// Runs a command with a deadline (180 s: the scripts wait for their own conditions, this only
/// ends a hung one); panics with its output (and the server's log) on failure.
pub fn run(cmd: &mut Command, input: Option<&str>, serve: &Serve) -> Output {
    let mut child = procs::start_with_input(cmd, input.unwrap_or("").as_bytes());
    let until = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}\nserver: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serve.stderr()
    );
    out
}
