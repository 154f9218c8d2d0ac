//! librdkafka producing to `oncelog serve` over loopback: 1 KB messages, acks=all, idempotent
//! (confluent-kafka 2.16.1, `benches/kafka/produce.py`), messages per second and p99 delivery
//! latency, beside the same server with `--test-ack-without-storing` (every Produce decoded,
//! checked and answered, nothing stored: the protocol's own cost). The target of the Kafka
//! wire issue: storing costs at most 30 % of the unstored rate.
//!
//! Each run starts a fresh `oncelog serve` (default settings, a new data directory, port 0),
//! runs the script twice and stops the server: first as fast as the client goes (messages/s,
//! the server's CPU per message, and a latency that is mostly time queued in the client), then
//! paced at 10,000 messages/s for 2 s (the delivery latency below saturation). The two modes alternate, run after run, so a change in
//! the machine's load hits both; the medians are printed with the load average.
//!
//! `cargo bench --bench kafka_produce` (5 runs x 200,000 messages per mode, under a minute;
//! `ONCELOG_KAFKA_BENCH_RUNS` and `ONCELOG_KAFKA_BENCH_MESSAGES` override);
//! `-- --test` (CI) runs each mode once with 2,000 messages and checks that every message
//! was delivered. Needs `python3` with confluent-kafka (`.ci/run` installs it).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_oncelog");
const PIP: &str = "pip install confluent-kafka==2.16.1";
/// Messages per second of the paced run, for latency below saturation.
const PACED_RATE: u64 = 10_000;

/// One run's figures, as the script prints them.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// p50 and p99 of the run offered at `PACED_RATE` (below saturation).
    paced_p50_ms: f64,
    paced_p99_ms: f64,
    /// The server's CPU time (user + system, all threads) per message, in microseconds:
    /// what the server itself spends, which the machine's load disturbs far less than rates.
    server_cpu_us: f64,
}

/// A running `oncelog serve`, killed if the bench panics.
struct Serve {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(unstored: bool) -> Serve {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if unstored {
            cmd.arg("--test-ack-without-storing");
        }
        let mut child = cmd.spawn().expect("oncelog serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Serve {
            child,
            port,
            _dir: dir,
        }
    }

    /// CPU seconds (user + system) the server has used so far, from /proc/PID/stat.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat of oncelog serve");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').expect("a stat line").1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks_per_second()
    }

    /// SIGTERM and a clean exit within 30 s (closing flushes every log).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "oncelog serve exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("oncelog serve did not stop within 30 s of SIGTERM");
    }
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kafka/produce.py")
}

fn require_client() {
    let ok = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python module confluent_kafka is not installed; this bench needs it: `{PIP}` \
         (.ci/run installs it)"
    );
}

/// Runs the script against `serve`: its JSON line's fields by name.
fn produce(serve: &Serve, topic: &str, messages: u64, rate: u64) -> impl Fn(&str) -> f64 {
    let out = Command::new("python3")
        .arg(script())
        .arg(format!("127.0.0.1:{}", serve.port))
        .arg(topic)
        .arg(messages.to_string())
        .arg("1000")
        .arg(rate.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "produce.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    move |name: &str| -> f64 {
        let key = format!("\"{name}\": ");
        text.split(&key)
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    }
}

/// One server: a saturating run (rate, latency, server CPU), then a paced one (latency).
fn one_run(unstored: bool, messages: u64, paced: u64) -> Run {
    let serve = Serve::start(unstored);
    // Creates the topic (4 partitions, their segments preallocated) outside the CPU count.
    let _created = produce(&serve, "bench", 1, 0);
    let cpu_at_start = serve.cpu_seconds();
    let full = produce(&serve, "bench", messages, 0);
    let cpu = serve.cpu_seconds() - cpu_at_start;
    let slow = produce(&serve, "paced", paced, PACED_RATE);
    serve.stop();
    assert_eq!(full("messages") as u64, messages, "every message delivered");
    assert_eq!(
        slow("messages") as u64,
        paced,
        "every paced message delivered"
    );
    Run {
        per_second: full("per_second"),
        p50_ms: full("p50_ms"),
        p99_ms: full("p99_ms"),
        paced_p50_ms: slow("p50_ms"),
        paced_p99_ms: slow("p99_ms"),
        server_cpu_us: cpu * 1e6 / messages as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    require_client();
    let runs = common::scaled(env_or("ONCELOG_KAFKA_BENCH_RUNS", 5), 1).max(1);
    let messages = common::scaled(env_or("ONCELOG_KAFKA_BENCH_MESSAGES", 200_000), 2_000);
    let paced = common::scaled(PACED_RATE * 2, PACED_RATE / 10);
    println!(
        "kafka_produce: {runs} run(s) per mode, {messages} messages of 1000 bytes, acks=all, \
         idempotent, then {paced} at {PACED_RATE}/s; load average before: {}",
        load_average()
    );
    let mut stored = Vec::new();
    let mut unstored = Vec::new();
    for run in 0..runs {
        for (mode, into) in [(false, &mut stored), (true, &mut unstored)] {
            let r = one_run(mode, messages, paced);
            println!(
                "  run {run} {:<9} {:>9.0} msg/s  p50 {:>7.2} ms  p99 {:>7.2} ms  server CPU \
                 {:>5.2} us/msg | paced p50 {:>6.2} ms  p99 {:>6.2} ms",
                if mode { "unstored" } else { "stored" },
                r.per_second,
                r.p50_ms,
                r.p99_ms,
                r.server_cpu_us,
                r.paced_p50_ms,
                r.paced_p99_ms
            );
            into.push(r);
        }
    }
    let summary = |name: &str, v: &[Run]| {
        let rate = median(v.iter().map(|r| r.per_second).collect());
        let p50 = median(v.iter().map(|r| r.p50_ms).collect());
        let p99 = median(v.iter().map(|r| r.p99_ms).collect());
        let cpu = median(v.iter().map(|r| r.server_cpu_us).collect());
        let paced50 = median(v.iter().map(|r| r.paced_p50_ms).collect());
        let paced99 = median(v.iter().map(|r| r.paced_p99_ms).collect());
        println!(
            "  median {name:<9} {rate:>9.0} msg/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  server \
             CPU {cpu:>5.2} us/msg | paced p50 {paced50:>6.2} ms  p99 {paced99:>6.2} ms"
        );
        (rate, cpu)
    };
    let (s, s_cpu) = summary("stored", &stored);
    let (u, u_cpu) = summary("unstored", &unstored);
    println!(
        "kafka_produce: storing costs {:.1} % of the unstored rate (target <= 30 %); the \
         server's CPU per message is {:.2}x the unstored one (storing's share {:.1} %); load \
         average after: {}",
        (1.0 - s / u) * 100.0,
        s_cpu / u_cpu,
        (1.0 - u_cpu / s_cpu) * 100.0,
        load_average()
    );
}
