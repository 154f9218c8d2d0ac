//! Helpers for the tests that run the log on the simulated, crashable storage
//! (`oncelog::io::sim::SimStorage`): a seeded PRNG, a config on the sim with a manual clock,
//! batch builders with recognisable values, a checksum-verifying reader that reports errors
//! instead of panicking, and the INV-9 oracle (producer state rebuilt by replaying the log).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oncelog::io::sim::{CrashMode, SimStorage};
use oncelog::producer::{BatchMetadata, ProducerConfig, ProducerStateManager};
use oncelog::{
    BatchBuilder, Log, LogConfig, ManualClock, Offset, ProducerEpoch, ProducerId, RecordBatch,
    Sequence,
};

/// The log directory inside the simulated file system.
pub const DIR: &str = "/sim/log";

pub fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

/// splitmix64: the tests' own PRNG (independent of the sim's), so a seed replays a workload.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// `ONCELOG_SEED=<n>` replays one seed; otherwise `None` (run the default sweep).
pub fn seed_from_env() -> Option<u64> {
    std::env::var("ONCELOG_SEED").ok().and_then(|s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    })
}

/// The seeds a sweep runs: `ONCELOG_SEED` alone if set, otherwise `default`.
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match seed_from_env() {
        Some(s) => vec![s],
        None => default.collect(),
    }
}

/// `LogConfig::for_tests()` (4 KiB segments, snapshots every 8 KiB) on `sim` with `clock`.
pub fn sim_config(sim: &SimStorage, clock: &Arc<ManualClock>) -> LogConfig {
    LogConfig::for_tests()
        .with_storage(Arc::new(sim.clone()))
        .with_clock(clock.clone())
}

/// The value of record `i` of the batch tagged `tag`, padded to `len` bytes.
pub fn value(tag: u64, i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("v{tag}:{i}:").into_bytes();
    let fill = b'a' + (tag % 26) as u8;
    v.resize(len.max(v.len()), fill);
    v
}

/// A batch of `records` records with values `value(tag, i, len)`; idempotent when `producer`
/// is `Some((pid, epoch, base_seq))`.
pub fn make_batch(
    tag: u64,
    records: u32,
    len: usize,
    producer: Option<(ProducerId, ProducerEpoch, Sequence)>,
) -> RecordBatch {
    let mut b = BatchBuilder::new();
    if let Some((pid, epoch, seq)) = producer {
        b = b.producer(pid, epoch, seq);
    }
    for i in 0..records {
        b.push(1_000 + tag as i64, Some(b"k"), Some(&value(tag, i, len)));
    }
    b.build().unwrap()
}

/// One batch as read back from the log.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub header: oncelog::BatchHeader,
    /// (offset, value) of every record.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Every batch from the log start to the log end, checksum-verified; an error (read failure,
/// checksum failure, hole, empty read) is returned as a message instead of a panic so callers can
/// name their seed.
pub fn read_batches(log: &Log) -> Result<Vec<ReadBatch>, String> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    let mut first = true;
    while next < end {
        let fetch = log
            .read(next, 1 << 16)
            .map_err(|e| format!("read at {next:?}: {e}"))?;
        if fetch.is_empty() {
            return Err(format!("empty read at {next:?} below end {end:?}"));
        }
        for b in fetch.batches() {
            let b = b.map_err(|e| format!("batch near {next:?}: {e}"))?;
            let h = *b.header();
            // The first batch may start before the log start (log start inside a batch).
            if !(first && h.base_offset <= next.0) && h.base_offset != next.0 {
                return Err(format!(
                    "hole or overlap: batch at {} where {} was expected",
                    h.base_offset, next.0
                ));
            }
            first = false;
            let mut records = Vec::new();
            for r in b.records() {
                let r = r.map_err(|e| format!("record in batch {}: {e}", h.base_offset))?;
                records.push((
                    h.base_offset + r.offset_delta as u64,
                    r.value.unwrap_or_default().to_vec(),
                ));
            }
            if records.len() != h.record_count as usize {
                return Err(format!("batch {}: record count mismatch", h.base_offset));
            }
            next = Offset(h.last_offset() + 1);
            out.push(ReadBatch { header: h, records });
        }
    }
    if next != end {
        return Err(format!("read ended at {next:?}, log end is {end:?}"));
    }
    Ok(out)
}

/// The producer config the log derives from its `LogConfig`.
pub fn producer_config(cfg: &LogConfig) -> ProducerConfig {
    ProducerConfig {
        expiration_ms: cfg.producer_id_expiration_ms,
        max_producers: cfg.max_producers,
    }
}

/// INV-9 oracle: a fresh manager fed every idempotent batch from the log start through
/// `record` (the replication / replay origin), with the map end at the log end.
pub fn rebuild_producer_state(log: &Log, batches: &[ReadBatch]) -> ProducerStateManager {
    let mut state = ProducerStateManager::new(producer_config(log.config()));
    for b in batches {
        let h = &b.header;
        if h.producer_id.is_some() {
            state.record(
                h.producer_id,
                h.producer_epoch,
                BatchMetadata {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    first_offset: h.base_offset,
                    last_offset: h.last_offset(),
                    append_time_ms: h.append_timestamp,
                },
            );
        }
    }
    state.set_map_end_offset(log.log_end_offset().0);
    state
}

/// Crashes the log the way the tests define a crash: drop the log without any clean step, then
/// let the simulated machine die in `mode` with the PRNG reseeded to `seed`.
pub fn crash(log: Log, sim: &SimStorage, mode: CrashMode, seed: u64) {
    log.simulate_crash();
    sim.crash_with_seed(mode, seed);
}

/// Waits (bounded) until the background thread has sealed every segment but the active one and
/// written every queued producer snapshot, or the log is poisoned; makes storage-operation
/// order less dependent on thread timing.
pub fn settle(log: &Log) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let segs = log.segments();
        let pending = segs
            .iter()
            .take(segs.len().saturating_sub(1))
            .any(|s| !s.is_sealed());
        let pending = pending || !log.background_idle();
        if !pending || log.is_poisoned() || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::yield_now();
    }
}

/// Names of the snapshot files in `dir` (volatile namespace), oldest first.
pub fn snapshot_files(sim: &SimStorage, dir: &Path) -> Vec<String> {
    sim.file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".snapshot"))
        .collect()
}

/// The files of the log directory with their lengths, and what a read-only open reports: for
/// failure messages.
pub fn describe_disk(sim: &SimStorage, cfg: &LogConfig) -> String {
    let mut out = String::new();
    for name in sim.file_names(&dir()) {
        let bytes = sim.read_volatile(&dir().join(&name)).unwrap_or_default();
        let len = bytes.len();
        let last_nonzero = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        out.push_str(&format!(
            "  {name}: {len} bytes (non-zero up to {last_nonzero})\n"
        ));
    }
    let ro = LogConfig {
        recovery: oncelog::RecoveryMode::ReadOnlyOnCorruption,
        ..cfg.clone()
    };
    match Log::open(dir(), ro) {
        Ok(log) => {
            out.push_str(&format!(
                "  read-only open: end {:?}, {:?}\n",
                log.log_end_offset(),
                log.recovery_report()
            ));
            log.simulate_crash();
        }
        Err(e) => out.push_str(&format!("  read-only open failed too: {e}\n")),
    }
    out
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Collects failures of many crash states instead of stopping at the first, grouped by their
/// message with digits erased, so one run reports every distinct bug with an example each.
#[derive(Debug, Default)]
pub struct Failures {
    /// Group key -> (count, first full message).
    groups: std::collections::BTreeMap<String, (u64, String)>,
    pub checked: u64,
}

impl Failures {
    /// Runs `f`, recording its panic (if any) without printing it.
    pub fn check(&mut self, f: impl FnOnce()) {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(|q| q.get()) {
                    default(info);
                }
            }));
        });
        self.checked += 1;
        QUIET.with(|q| q.set(true));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        QUIET.with(|q| q.set(false));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            // Group by the part after the context prefix, digits erased.
            let tail = msg.split(": ").skip(1).collect::<Vec<_>>().join(": ");
            let line = tail.lines().next().unwrap_or("").to_string();
            let key: String = line
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            let e = self.groups.entry(key).or_insert((0, msg));
            e.0 += 1;
        }
    }

    /// Panics with a summary if any state failed.
    pub fn finish(self, name: &str) {
        if self.groups.is_empty() {
            return;
        }
        let failed: u64 = self.groups.values().map(|g| g.0).sum();
        let mut s = format!(
            "{name}: {failed} of {} crash states failed, {} distinct failures:\n",
            self.checked,
            self.groups.len()
        );
        for (key, (n, example)) in &self.groups {
            s.push_str(&format!("\n[{n}x] {key}\n  first: {example}\n"));
        }
        panic!("{s}");
    }
}

/// Appends 300-byte batches (tags from `tag` on) until the next one would roll a 4 KiB segment
/// (`LogConfig::for_tests`), and returns that batch, unappended.
pub fn fill_until_roll_is_next(log: &Log, tag: &mut u64) -> RecordBatch {
    loop {
        let b = make_batch(*tag, 2, 150, None);
        *tag += 1;
        let active = log.segments().last().unwrap().size();
        if active > 0 && active as usize + b.len() > 4096 {
            return b;
        }
        log.append(&b).unwrap();
    }
}

/// Every record of the log as offset -> value (checksum-verified, panics on a read error).
pub fn contents(log: &Log) -> std::collections::BTreeMap<u64, Vec<u8>> {
    read_batches(log)
        .unwrap()
        .into_iter()
        .flat_map(|b| b.records)
        .collect()
}
