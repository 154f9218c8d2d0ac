//! What the exactly-once examples share: flags, a seeded generator, the broker settings, the
//! kill loop that runs a child process (this binary in another mode) and SIGKILLs it, and the
//! child's "at work" signal.
#![allow(dead_code, reason = "each example uses a different part")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oncelog::broker::BrokerConfig;
use oncelog::LogConfig;

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The value after `name` on the command line.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--seed`, or one from the clock.
pub fn seed_of(args: &[String]) -> u64 {
    flag(args, "--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// splitmix64: enough randomness for kill times and transaction sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// 1 MiB segments: the default 1 GiB would be preallocated per partition.
pub fn broker_config() -> BrokerConfig {
    BrokerConfig {
        log: LogConfig::default().with_segment_bytes(1 << 20),
        internal_segment_bytes: 1 << 20,
        ..BrokerConfig::default()
    }
}

/// The child tells the driver it is at work (past its broker's open), so a kill lands inside
/// the work, not in the start-up.
pub fn say_at_work() -> Res<()> {
    println!("at work");
    std::io::stdout().flush()?;
    Ok(())
}

/// Runs this binary as `<mode> <dir> --seed ..` `kills` times, SIGKILLing each child at a
/// random moment (up to 30 ms) after it says it is at work; then once more to the end, which
/// must succeed. Returns how many children were killed before they finished.
pub fn kill_loop(mode: &str, dir: &Path, seed: u64, kills: u32) -> Res<u32> {
    let exe = std::env::current_exe()?;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut killed = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .arg(mode)
            .arg(dir)
            .arg("--seed")
            .arg((seed ^ u64::from(round + 1)).to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        if child.try_wait()?.is_none() {
            child.kill()?; // SIGKILL
            killed += 1;
        }
        child.wait()?;
    }
    let status = Command::new(&exe)
        .arg(mode)
        .arg(dir)
        .arg("--seed")
        .arg(seed.to_string())
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("the last {mode} failed: {status}").into());
    }
    println!(
        "{killed} of {kills} {mode}s killed mid-run, then one ran to the end ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(killed)
}
