//! Real-process crash tests (sled's pattern): the test binary re-executes itself as a child that
//! appends and reports `flushed <log end>` lines; the parent kills it with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a child may take to send its first report before the test fails (a loaded CI
/// machine can take seconds to start a process; a child that never reports is a bug).
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the kill delay is measured from.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // each test binary that includes this file uses one of the clocks
pub enum KillClock {
    /// From the spawn: the kill may land while the child is still opening (recovering) the log.
    FromSpawn,
    /// From the child's first `flushed` report: the child has opened the log and written, so
    /// the crash point falls in its steady state whatever the machine's load.
    FromFirstReport,
}

/// Runs this test binary's test `test_name` as a child with `env_key=dir`, kills it with
/// SIGKILL `delay_ms` after `clock`'s start (the crash point, not a wait), and returns the
/// largest `flushed N` it reported, if any.
pub fn run_child_and_kill(
    test_name: &str,
    env_key: &str,
    dir: &Path,
    clock: KillClock,
    delay_ms: u64,
) -> Option<u64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(env_key, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Collect the child's reports while it runs, so its pipe never fills.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.strip_prefix("flushed ")
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .inspect(|&n| {
                let _ = tx.send(n);
            })
            .max()
    });
    if let KillClock::FromFirstReport = clock {
        if rx.recv_timeout(FIRST_REPORT_TIMEOUT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child of {test_name} sent no report within {FIRST_REPORT_TIMEOUT:?}");
        }
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die by the signal");
    reader.join().unwrap()
}
