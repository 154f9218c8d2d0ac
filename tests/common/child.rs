//! Real-process crash tests (sled's pattern): the test binary re-executes itself as a child that
//! appends and reports `flushed <log end>` lines; the parent kills it with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs this test binary's test `test_name` as a child with `env_key=dir`, kills it with
/// SIGKILL after `delay_ms` (the crash point, not a wait), and returns the largest
/// `flushed N` it reported, if any.
pub fn run_child_and_kill(
    test_name: &str,
    env_key: &str,
    dir: &Path,
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
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.strip_prefix("flushed ")
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
    });
    std::thread::sleep(Duration::from_millis(delay_ms));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die by the signal");
    reader.join().unwrap()
}
