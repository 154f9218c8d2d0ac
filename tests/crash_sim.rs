//! T02/T03 (INV-5, INV-9, INV-10, INV-1 under `EveryAppend`): crash consistency of the whole log
//! on the simulated storage, checked against a model over thousands of crash states.
//!
//! A seeded workload (three idempotent producers writing batches of random sizes, retries of
//! their last five batches, plain batches, two producers whose epochs are bumped with
//! `reinit_producer`, sometimes writing at the new epoch, occasional `flush()`, rolls of 4 KiB
//! segments, and in
//! some variants `apply_retention` / `advance_log_start` / `truncate_to`) runs against a fresh
//! `SimStorage` while a model records the expected value at every offset, the written end and
//! the *last synced end* (the log end at the last successful `flush()`, or after every Ok append
//! with `SyncMode::EveryAppend`). A crash is injected at an exact storage-operation boundary by
//! freezing the disk: `sim.fail_after(k, Eio, sticky)` lets the first `k` mutating operations
//! succeed and makes every later one fail without effect, which leaves the disk exactly as it was
//! after operation `k` (page-cache contents that were never synced stay dirty). Sweeping `k` over
//! every operation of a workload therefore crashes at every sync point (and every instant between
//! them); a second sweep crashes random workloads at random instants. After the freeze the log
//! is dropped without clean steps (`simulate_crash`) and the machine dies (`PowerLoss` with a
//! per-state PRNG seed, or `Process`).
//!
//! After every crash `recovery::verify` judges the directory (the plan `oncelog verify` and
//! `stat` print, and verify's checks of records, index files, snapshots and `.txnindex`), and
//! the log is reopened and must: reach the plan's verdict, cuts and end, with verify reporting
//! no error (what open repairs or ignores is a warning at most); open without a corruption error; have
//! `last synced end <= recovered end <= written end` (and `== written end` after a process
//! crash); hold a contiguous, checksum-valid prefix equal to the model from its log start, which
//! never regresses; pass `check_invariants`; have a producer table equal to a fresh replay of the
//! log (INV-9; with retention only a superset); answer a retry of each of a producer's last five
//! surviving batches as a duplicate with the original offsets (INV-10); accept the next batch of
//! every producer; hand out, for every bumped producer, an epoch strictly above every epoch
//! returned before the crash; and after more appends and a clean close, leave verify nothing
//! to report (no error, no warning), reopen with no scan and hand out higher epochs again (also for the writing producers, above their epoch 0).
//!
//! The background sealer runs seals on its own thread, so operation order is not perfectly
//! reproducible; a failing case prints its seed, variant and `k`, and `ONCELOG_SEED=<seed>`
//! replays that workload (with every `k`). Counts of crash states are printed (`--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::sim::{
    crash, dir, make_batch, read_batches, rebuild_producer_state, seed_from_env, seeds, settle,
    sim_config, Failures, Rng,
};
use oncelog::io::sim::{CrashMode, FaultKind, SimStorage};
use oncelog::{Log, LogConfig, ManualClock, Offset, ProducerId, RecordBatch, SyncMode};

const PRODUCERS: usize = 3;
/// Producers whose epochs the workload bumps.
const BUMPED: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    sync: SyncMode,
    retention: bool,
    truncation: bool,
    steps: usize,
    /// `LogConfig::recovery_point_lag_ms`: 0 vouches for every synced byte at once; `NEVER`
    /// leaves every lane's recovery point unsynced until a seal, truncation or close.
    rp_lag_ms: u64,
}

/// A recovery-point lag the manual clock never reaches.
const NEVER: u64 = u64::MAX;

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "os",
        sync: SyncMode::Os,
        retention: false,
        truncation: false,
        steps: 90,
        rp_lag_ms: 50,
    },
    Variant {
        name: "os+retention+truncation",
        sync: SyncMode::Os,
        retention: true,
        truncation: true,
        steps: 90,
        rp_lag_ms: NEVER,
    },
    Variant {
        name: "every-append+truncation",
        sync: SyncMode::EveryAppend,
        retention: false,
        truncation: true,
        steps: 60,
        rp_lag_ms: 0,
    },
    Variant {
        name: "every-append+lagging-recovery-point",
        sync: SyncMode::EveryAppend,
        retention: false,
        truncation: true,
        steps: 60,
        rp_lag_ms: NEVER,
    },
];

#[derive(Debug, Clone)]
struct SentBatch {
    first_seq: i32,
    last_seq: i32,
    base: u64,
    last: u64,
    bytes: RecordBatch,
}

#[derive(Debug, Clone)]
struct ProducerModel {
    pid: ProducerId,
    /// Batches in the log, oldest first (truncation removes the truncated ones).
    batches: Vec<SentBatch>,
}

impl ProducerModel {
    fn next_seq(&self) -> i32 {
        self.batches.last().map_or(0, |b| b.last_seq + 1)
    }
}

#[derive(Debug, Clone, Default)]
struct Model {
    /// Expected value per offset of everything written (may be unsynced).
    values: BTreeMap<u64, Vec<u8>>,
    /// Batch boundaries: base -> last offset.
    batches: BTreeMap<u64, u64>,
    end: u64,
    start: u64,
    synced_end: u64,
    producers: Vec<ProducerModel>,
    /// Producers whose epochs are bumped (`reinit_producer`), with the highest epoch returned
    /// for each: after any crash a reinit must return a higher one. They append only at sequence
    /// 0 of a new epoch (sometimes not at all), so they take no part in the dedup checks.
    bumped: Vec<(ProducerId, i16)>,
    /// A truncation that failed midway: the crash may leave the log before or after it.
    alt_truncated_end: Option<u64>,
    retention_ran: bool,
}

impl Model {
    fn truncate(&mut self, new_end: u64) {
        self.values.retain(|&o, _| o < new_end);
        self.batches.retain(|&b, _| b < new_end);
        self.end = new_end;
        self.synced_end = self.synced_end.min(new_end);
        self.start = self.start.min(new_end);
        for p in &mut self.producers {
            p.batches.retain(|b| b.base < new_end);
        }
    }

    /// The base of the batch containing `offset`.
    fn batch_containing(&self, offset: u64) -> Option<u64> {
        self.batches
            .range(..=offset)
            .next_back()
            .filter(|(_, &last)| last >= offset)
            .map(|(&b, _)| b)
    }
}

struct Run {
    sim: SimStorage,
    clock: Arc<ManualClock>,
    cfg: LogConfig,
    log: Log,
    model: Model,
    /// Mutating storage operations the workload issued after open.
    ops: u64,
    /// Sync points reached (successful syncs) after open.
    syncs: u64,
}

fn config(variant: Variant, sim: &SimStorage, clock: &Arc<ManualClock>) -> LogConfig {
    let mut cfg = sim_config(sim, clock);
    cfg.sync = variant.sync;
    cfg.recovery_point_lag_ms = variant.rp_lag_ms;
    if variant.retention {
        cfg.retention_bytes = Some(12 * 1024);
    }
    cfg
}

fn record_append(model: &mut Model, batch: &RecordBatch, base: u64, last: u64) {
    for (i, r) in batch.view().records().enumerate() {
        let v = r
            .ok()
            .and_then(|r| r.value.map(|v| v.to_vec()))
            .unwrap_or_default();
        model.values.insert(base + i as u64, v);
    }
    model.batches.insert(base, last);
    model.end = last + 1;
}

/// Runs the workload of `seed`; with `freeze_at = Some(k)` every storage operation after the
/// first `k` fails and the workload stops at its first error. Returns the still-open log.
fn run(seed: u64, variant: Variant, freeze_at: Option<u64>) -> Run {
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = config(variant, &sim, &clock);
    let log = Log::open(dir(), cfg.clone()).expect("open a fresh log");
    let mut model = Model::default();
    for _ in 0..PRODUCERS {
        let (pid, epoch) = log.init_producer().unwrap();
        assert_eq!(epoch, 0);
        model.producers.push(ProducerModel {
            pid,
            batches: Vec::new(),
        });
    }
    for _ in 0..BUMPED {
        let (pid, epoch) = log.init_producer().unwrap();
        model.bumped.push((pid, epoch));
    }
    let ops0 = sim.op_count();
    let syncs0 = sim.sync_points();
    if let Some(k) = freeze_at {
        sim.fail_after(k, FaultKind::Eio, true);
    }
    let mut rng = Rng::new(seed);
    let every_append = variant.sync == SyncMode::EveryAppend;
    let ctx = |what: &str| {
        format!(
            "seed {seed} variant {} freeze {freeze_at:?}: {what}",
            variant.name
        )
    };
    let trace = std::env::var("ONCELOG_TRACE").is_ok();
    for step in 0..variant.steps {
        if trace {
            println!(
                "step {step}: start {} end {} synced {} segments {:?} snapshots {:?}",
                log.log_start_offset().0,
                log.log_end_offset().0,
                model.synced_end,
                log.segments()
                    .iter()
                    .map(|s| s.base_offset())
                    .collect::<Vec<_>>(),
                common::sim::snapshot_files(&sim, &dir())
            );
            let st = log.producer_state();
            for pm in &model.producers {
                let seqs: Vec<_> = st
                    .get(pm.pid)
                    .map(|e| e.batches().map(|b| (b.first_seq, b.first_offset)).collect())
                    .unwrap_or_default();
                println!("    producer {}: (seq, offset) {seqs:?}", pm.pid.0);
            }
        }
        let tag = seed.wrapping_mul(1_000_003) ^ (step as u64);
        clock.advance(rng.below(40) as i64);
        let roll = rng.below(108);
        let ok = if roll >= 100 {
            // Bump a producer's epoch (its checkpoint write is a crash point too), and sometimes
            // write at the new epoch.
            let b = rng.below(BUMPED as u64) as usize;
            let (pid, returned) = model.bumped[b];
            match log.reinit_producer(pid) {
                Ok((same, epoch)) => {
                    assert_eq!(same, pid, "{}", ctx("epochs exhausted"));
                    assert!(epoch > returned, "{}", ctx("epoch handed out again"));
                    model.bumped[b].1 = epoch;
                    if rng.chance(1, 2) {
                        let batch = make_batch(tag, 1, 30, Some((pid, epoch, 0)));
                        let before = log.log_end_offset().0;
                        match log.append(&batch) {
                            Ok(info) => {
                                assert!(!info.duplicate, "{}", ctx("new epoch's batch duplicate"));
                                record_append(&mut model, &batch, before, info.last_offset.0);
                                if every_append {
                                    model.synced_end = model.end;
                                }
                                true
                            }
                            Err(e) => {
                                assert!(freeze_at.is_some(), "{}", ctx(&format!("append: {e}")));
                                let after = log.log_end_offset().0;
                                if after > before {
                                    record_append(&mut model, &batch, before, after - 1);
                                }
                                false
                            }
                        }
                    } else {
                        true
                    }
                }
                Err(e) => {
                    assert!(freeze_at.is_some(), "{}", ctx(&format!("reinit: {e}")));
                    false
                }
            }
        } else if roll < 55 {
            // An idempotent batch.
            let p = rng.below(PRODUCERS as u64) as usize;
            let records = rng.range(1, 5) as u32;
            let len = rng.range(8, 300) as usize;
            let pm = &model.producers[p];
            let batch = make_batch(tag, records, len, Some((pm.pid, 0, pm.next_seq())));
            let before = log.log_end_offset().0;
            match log.append(&batch) {
                Ok(info) => {
                    assert!(!info.duplicate, "{}", ctx("new batch reported duplicate"));
                    assert_eq!(info.base_offset.0, model.end, "{}", ctx("base offset"));
                    record_append(&mut model, &batch, info.base_offset.0, info.last_offset.0);
                    let pm = &mut model.producers[p];
                    pm.batches.push(SentBatch {
                        first_seq: pm.next_seq(),
                        last_seq: pm.next_seq() + records as i32 - 1,
                        base: info.base_offset.0,
                        last: info.last_offset.0,
                        bytes: batch,
                    });
                    if every_append {
                        model.synced_end = model.end;
                    }
                    true
                }
                Err(e) => {
                    assert!(
                        freeze_at.is_some(),
                        "{}",
                        ctx(&format!("append failed: {e}"))
                    );
                    let after = log.log_end_offset().0;
                    if after > before {
                        // Written (a sync after the copy failed): present, not acknowledged.
                        record_append(&mut model, &batch, before, after - 1);
                        let pm = &mut model.producers[p];
                        pm.batches.push(SentBatch {
                            first_seq: pm.next_seq(),
                            last_seq: pm.next_seq() + records as i32 - 1,
                            base: before,
                            last: after - 1,
                            bytes: batch,
                        });
                    }
                    false
                }
            }
        } else if roll < 75 {
            let records = rng.range(1, 4) as u32;
            let len = rng.range(8, 400) as usize;
            let batch = make_batch(tag, records, len, None);
            let before = log.log_end_offset().0;
            match log.append(&batch) {
                Ok(info) => {
                    assert_eq!(info.base_offset.0, model.end, "{}", ctx("base offset"));
                    record_append(&mut model, &batch, info.base_offset.0, info.last_offset.0);
                    if every_append {
                        model.synced_end = model.end;
                    }
                    true
                }
                Err(e) => {
                    assert!(
                        freeze_at.is_some(),
                        "{}",
                        ctx(&format!("append failed: {e}"))
                    );
                    let after = log.log_end_offset().0;
                    if after > before {
                        record_append(&mut model, &batch, before, after - 1);
                    }
                    false
                }
            }
        } else if roll < 83 {
            // Retry one of a producer's last five batches: a duplicate with the original offsets.
            let p = rng.below(PRODUCERS as u64) as usize;
            let pm = &model.producers[p];
            if pm.batches.is_empty() {
                continue;
            }
            let n = pm.batches.len().min(5);
            let b = pm.batches[pm.batches.len() - 1 - rng.below(n as u64) as usize].clone();
            let end = log.log_end_offset();
            match log.append(&b.bytes) {
                Ok(info) => {
                    assert!(info.duplicate, "{}", ctx("retry appended again"));
                    assert_eq!(
                        (info.base_offset.0, info.last_offset.0),
                        (b.base, b.last),
                        "{}",
                        ctx("retry offsets")
                    );
                    assert_eq!(log.log_end_offset(), end, "{}", ctx("retry moved the end"));
                    if every_append {
                        // The duplicate answer waits for the original to be durable.
                        model.synced_end = model.synced_end.max(b.last + 1);
                    }
                    true
                }
                Err(e) => {
                    assert!(
                        freeze_at.is_some(),
                        "{}",
                        ctx(&format!("retry failed: {e}"))
                    );
                    false
                }
            }
        } else if roll < 91 {
            match log.flush() {
                Ok(()) => {
                    model.synced_end = model.end;
                    true
                }
                Err(e) => {
                    assert!(
                        freeze_at.is_some(),
                        "{}",
                        ctx(&format!("flush failed: {e}"))
                    );
                    false
                }
            }
        } else if roll < 96 && variant.retention {
            let r = if rng.chance(1, 2) {
                log.apply_retention().map(|_| ())
            } else {
                let span = model.end - model.start;
                let to = model.start + rng.below(span / 2 + 1);
                log.advance_log_start(Offset(to)).map(|_| ())
            };
            match r {
                Ok(()) => {
                    model.retention_ran = true;
                    model.start = model.start.max(log.log_start_offset().0);
                    true
                }
                Err(e) => {
                    assert!(freeze_at.is_some(), "{}", ctx(&format!("retention: {e}")));
                    model.retention_ran = true;
                    false
                }
            }
        } else if roll >= 96 && variant.truncation && model.end > model.start + 4 {
            // Follower truncation to an offset in the second half of the log.
            let lo = model.start + (model.end - model.start) / 2;
            let to = rng.range(lo, model.end - 1);
            let expect = model.batch_containing(to).unwrap_or(to);
            if trace {
                println!("truncate_to({to}), expecting end {expect}");
            }
            match log.truncate_to(Offset(to)) {
                Ok(new_end) => {
                    assert_eq!(new_end.0, expect, "{}", ctx("truncation end"));
                    model.truncate(new_end.0);
                    true
                }
                Err(e) => {
                    assert!(freeze_at.is_some(), "{}", ctx(&format!("truncate: {e}")));
                    model.alt_truncated_end = Some(expect);
                    false
                }
            }
        } else {
            true
        };
        if !ok {
            break;
        }
        settle(&log);
        if variant.retention {
            // The background thread applies retention after each seal; do it here too so the
            // model sees it (one of the two calls does the work, the other finds nothing).
            match log.apply_retention() {
                Ok(_) => model.start = model.start.max(log.log_start_offset().0),
                Err(_) => {
                    model.retention_ran = true;
                    break;
                }
            }
            if log.log_start_offset().0 > 0 {
                model.retention_ran = true;
            }
        }
        if log.is_poisoned() {
            break;
        }
        if freeze_at.is_some() && sim.op_count() - ops0 > freeze_at.unwrap_or(0) + 40 {
            // Well past the freeze: nothing more can reach the disk.
            break;
        }
    }
    let ops = sim.op_count() - ops0;
    let syncs = sim.sync_points() - syncs0;
    Run {
        sim,
        clock,
        cfg,
        log,
        model,
        ops,
        syncs,
    }
}

/// Crashes `run` and checks the recovered log against the model.
fn crash_and_verify(run: Run, mode: CrashMode, crash_seed: u64, what: &str) {
    let Run {
        sim,
        clock,
        cfg,
        log,
        model,
        ..
    } = run;
    crash(log, &sim, mode, crash_seed);
    let ctx = |msg: String| format!("{what} crash {mode:?} crash-seed {crash_seed}: {msg}");
    // What verify and stat print: the plan open is about to execute, by the same planner over a
    // scan of every byte. Open and it must reach one verdict and make the same cuts, and
    // verify's checks beyond the plan (records, index files, producer snapshots, .txnindex)
    // must not call broken a state that open recovers: what open repairs or ignores is a
    // warning at most.
    let verification = oncelog::log::recovery::verify(&sim, &dir(), cfg.recovery)
        .unwrap_or_else(|e| panic!("{}", ctx(format!("verify: {e}"))));
    let inspection = &verification.inspection;
    let log = match Log::open(dir(), cfg.clone()) {
        Ok(log) => {
            let plan = &inspection.plan;
            assert!(
                verification.findings.errors.is_empty(),
                "{}",
                ctx(format!(
                    "open recovers, verify says broken: {:?}\n{plan}",
                    verification.findings.errors
                ))
            );
            assert_eq!(
                plan.verdict,
                oncelog::log::recovery::Verdict::Open,
                "{}",
                ctx(format!(
                    "open succeeded but inspect says otherwise:\n{plan}"
                ))
            );
            assert_eq!(
                log.recovery_report().cuts,
                plan.cuts,
                "{}",
                ctx(format!("open cut other bytes than the plan:\n{plan}"))
            );
            assert_eq!(
                Some(log.log_end_offset().0),
                plan.log_end(),
                "{}",
                ctx(format!("open ended elsewhere than the plan:\n{plan}"))
            );
            log
        }
        Err(e) => panic!(
            "{}",
            ctx(format!(
                "reopen failed: {e}\n  model: synced end {}, written end {}, start {}\n{}",
                model.synced_end,
                model.end,
                model.start,
                common::sim::describe_disk(&sim, &cfg)
            ))
        ),
    };
    assert!(!log.is_read_only(), "{}", ctx("opened read-only".into()));
    let end = log.log_end_offset().0;
    let start = log.log_start_offset().0;
    let (mut lo, mut hi) = (model.synced_end, model.end);
    if let Some(t) = model.alt_truncated_end {
        lo = lo.min(t);
        hi = hi.max(t);
    }
    assert!(
        lo <= end && end <= hi,
        "{}",
        ctx(format!(
            "recovered end {end} outside [synced {lo}, written {hi}] (report {:?})",
            log.recovery_report()
        ))
    );
    if mode == CrashMode::Process {
        // A truncation interrupted by the crash may have removed any suffix of what it was
        // removing (segments go newest first): the end lies between its target and the old end.
        let exact = end == model.end || model.alt_truncated_end.is_some_and(|t| t <= end);
        assert!(
            exact,
            "{}",
            ctx(format!(
                "process crash lost data: recovered end {end}, written {} (report {:?})",
                model.end,
                log.recovery_report()
            ))
        );
    }
    assert!(
        start >= model.start.min(end),
        "{}",
        ctx(format!("log start regressed: {start} < {}", model.start))
    );
    log.check_invariants();
    // Every epoch handed out before the crash is below the next one (durable before returned).
    let mut bumped = model.bumped.clone();
    for (pid, returned) in &mut bumped {
        let (same, epoch) = log
            .reinit_producer(*pid)
            .unwrap_or_else(|e| panic!("{}", ctx(format!("reinit of {}: {e}", pid.0))));
        assert!(
            same == *pid && epoch > *returned,
            "{}",
            ctx(format!(
                "reinit of {} after the crash: epoch {epoch}, but {returned} was handed out \
                 before",
                pid.0
            ))
        );
        *returned = epoch;
    }
    let batches = read_batches(&log).unwrap_or_else(|e| panic!("{}", ctx(e)));
    for b in &batches {
        for (o, v) in &b.records {
            if *o < start {
                continue;
            }
            let expected = model.values.get(o);
            if expected != Some(v) {
                // After a failed truncation the old batches may come back only if the truncation
                // did not reach the disk; a value that differs from the model is never allowed.
                panic!(
                    "{}",
                    ctx(format!(
                        "offset {o}: recovered {:?}, model {:?}",
                        String::from_utf8_lossy(&v[..v.len().min(24)]),
                        expected
                            .map(|e| String::from_utf8_lossy(&e[..e.len().min(24)]).into_owned())
                    ))
                );
            }
        }
    }

    // INV-9: producer state == replay of the log (a superset when retention deleted batches).
    let rebuilt = rebuild_producer_state(&log, &batches);
    let actual = log.producer_state();
    actual.check_invariants();
    if !model.retention_ran {
        assert_eq!(
            actual,
            rebuilt,
            "{}",
            ctx("producer state != rebuild from log".into())
        );
    } else {
        for (pid, e) in rebuilt.entries() {
            let a = actual
                .get(pid)
                .unwrap_or_else(|| panic!("{}", ctx(format!("producer {} missing", pid.0))));
            let ab: Vec<_> = a.batches().copied().collect();
            let rb: Vec<_> = e.batches().copied().collect();
            assert!(
                a.epoch == e.epoch && ab.ends_with(&rb) && a.last_append_ms == e.last_append_ms,
                "{}",
                ctx(format!("producer {}: state {a:?} vs rebuild {e:?}", pid.0))
            );
        }
        assert_eq!(actual.map_end_offset(), end);
    }

    // INV-10: retries of each producer's last five surviving batches are duplicates. A batch
    // whose segment retention deleted is known only if some snapshot still holds it in a
    // window; when truncation cut the newer part of that window away, the log can only say
    // "written long ago" (DuplicateSequence), which a client also treats as success. Nothing
    // is appended either way (checked below: the end does not move).
    let first_base = log.segments().first().map_or(0, |s| s.base_offset());
    for pm in &model.producers {
        let surviving: Vec<&SentBatch> = pm.batches.iter().filter(|b| b.last < end).collect();
        for b in surviving.iter().rev().take(5) {
            if b.last < first_base {
                if let Err(oncelog::Error::DuplicateSequence { .. }) = log.append(&b.bytes) {
                    continue;
                }
            }
            let diag = || {
                format!(
                    "\n  state {:?}\n  rebuild {:?}\n  snapshot load {:?}, end {end}, start {start}\n{}",
                    actual.get(pm.pid),
                    rebuilt.get(pm.pid),
                    log.snapshot_load(),
                    common::sim::describe_disk(&sim, &cfg)
                )
            };
            let info = log.append(&b.bytes).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    ctx(format!("retry of {} failed: {e}{}", b.base, diag()))
                )
            });
            assert!(
                info.duplicate && info.base_offset.0 == b.base && info.last_offset.0 == b.last,
                "{}",
                ctx(format!(
                    "retry of batch at {} (seq {}..={}): {info:?}{}",
                    b.base,
                    b.first_seq,
                    b.last_seq,
                    diag()
                ))
            );
        }
    }
    assert_eq!(
        log.log_end_offset().0,
        end,
        "{}",
        ctx("retries moved the end".into())
    );
    for pm in &model.producers {
        // The next batch continues the surviving sequence.
        let next = pm
            .batches
            .iter()
            .rfind(|b| b.last < end)
            .map_or(0, |b| b.last_seq + 1);
        let batch = make_batch(crash_seed ^ 0xABCD, 2, 20, Some((pm.pid, 0, next)));
        let info = log
            .append(&batch)
            .unwrap_or_else(|e| panic!("{}", ctx(format!("next batch of {}: {e}", pm.pid.0))));
        assert!(!info.duplicate);
    }
    for i in 0..3 {
        clock.advance(5);
        log.append(&make_batch(crash_seed ^ i, 3, 50, None))
            .unwrap_or_else(|e| panic!("{}", ctx(format!("append after recovery: {e}"))));
    }
    let before = read_batches(&log).unwrap_or_else(|e| panic!("{}", ctx(e)));
    let state_before = log.producer_state();
    let end_before = log.log_end_offset();
    log.close()
        .unwrap_or_else(|e| panic!("{}", ctx(format!("clean close: {e}"))));
    // After recovery and a clean close, nothing is left for an open to repair: no index file
    // is stale or empty (a power cut during a seal used to leave one that recovery kept), no
    // cut, no leftover.
    let verification = oncelog::log::recovery::verify(&sim, &dir(), cfg.recovery)
        .unwrap_or_else(|e| panic!("{}", ctx(format!("verify after close: {e}"))));
    let plan = &verification.inspection.plan;
    assert!(
        verification.findings.errors.is_empty() && verification.findings.warnings.is_empty(),
        "{}",
        ctx(format!(
            "verify after a clean close: {:?}",
            verification.findings
        ))
    );
    assert!(
        plan.clean
            && plan.cuts.is_empty()
            && plan.remove.is_empty()
            && plan
                .segments
                .iter()
                .all(|s| s.rule == oncelog::log::recovery::Rule::R1),
        "{}",
        ctx(format!("a clean close left something to repair:\n{plan}"))
    );
    let log = Log::open(dir(), cfg).unwrap_or_else(|e| panic!("{}", ctx(format!("reopen: {e}"))));
    let r = log.recovery_report();
    assert!(
        r.clean_shutdown && r.segments_scanned == 0,
        "{}",
        ctx(format!("clean reopen scanned: {r:?}"))
    );
    assert_eq!(log.log_end_offset(), end_before);
    let after = read_batches(&log).unwrap_or_else(|e| panic!("{}", ctx(e)));
    let flat = |v: &[common::sim::ReadBatch]| -> Vec<(u64, Vec<u8>)> {
        v.iter().flat_map(|b| b.records.clone()).collect()
    };
    // Background retention may move the log start meanwhile; it never moves back.
    let from = log.log_start_offset().0;
    let keep = |v: Vec<(u64, Vec<u8>)>| -> Vec<(u64, Vec<u8>)> {
        v.into_iter().filter(|(o, _)| *o >= from).collect()
    };
    assert!(
        before.first().is_none_or(|b| b.header.base_offset <= from),
        "{}",
        ctx("log start moved back".into())
    );
    assert_eq!(
        keep(flat(&after)),
        keep(flat(&before)),
        "{}",
        ctx("clean reopen changed data".into())
    );
    assert_eq!(
        log.producer_state(),
        state_before,
        "{}",
        ctx("clean reopen changed producer state".into())
    );
    // And across the clean close; the writing producers were handed epoch 0 only.
    let handed_out = bumped
        .iter()
        .copied()
        .chain(model.producers.iter().map(|p| (p.pid, 0)));
    for (pid, returned) in handed_out {
        let epoch = log.reinit_producer(pid).map(|(_, e)| e);
        assert!(
            epoch.as_ref().is_ok_and(|e| *e > returned),
            "{}",
            ctx(format!(
                "reinit of {} after a clean close: {epoch:?}, {returned} handed out before",
                pid.0
            ))
        );
    }
    log.simulate_crash();
}

/// Crash at every storage-operation boundary (hence at every sync point) of one workload per
/// variant, power loss at most of them and a process crash at every fourth.
#[test]
fn crash_at_every_operation_boundary() {
    let t = std::time::Instant::now();
    let mut states = 0u64;
    let mut sync_states = 0u64;
    let mut failures = Failures::default();
    for seed in seeds(1..5) {
        for variant in VARIANTS {
            let mut dry_ops = None;
            failures.check(|| {
                let dry = run(seed, variant, None);
                dry_ops = Some((dry.ops, dry.syncs));
                dry.log.simulate_crash();
            });
            let Some((total_ops, total_syncs)) = dry_ops else {
                continue;
            };
            let mut seen_syncs = std::collections::BTreeSet::new();
            for k in 0..=total_ops {
                let mode = if k % 4 == 3 {
                    CrashMode::Process
                } else {
                    CrashMode::PowerLoss
                };
                let what = format!("seed {seed} variant {} freeze-at-op {k}", variant.name);
                failures.check(|| {
                    let r = run(seed, variant, Some(k));
                    seen_syncs.insert(r.syncs);
                    crash_and_verify(r, mode, seed ^ (k << 20), &what)
                });
                states += 1;
            }
            sync_states += seen_syncs.len() as u64;
            println!(
                "variant {}: {} ops, {} sync points in the full run; {} distinct sync-point counts reached",
                variant.name,
                total_ops,
                total_syncs,
                seen_syncs.len()
            );
        }
    }
    println!(
        "crash_at_every_operation_boundary: {states} crash states ({sync_states} distinct sync points) in {:?}",
        t.elapsed()
    );
    failures.finish("crash_at_every_operation_boundary");
}

/// Random workloads crashed at random instants, by power loss or process crash.
#[test]
fn crash_at_random_instants() {
    let t = std::time::Instant::now();
    let mut states = 0u64;
    let mut failures = Failures::default();
    for seed in seeds(100..300) {
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        for variant in VARIANTS {
            let v = Variant {
                steps: variant.steps / 2,
                ..variant
            };
            // A short dry run bounds the instant.
            let mut dry_ops = None;
            failures.check(|| {
                let dry = run(seed, v, None);
                dry_ops = Some(dry.ops);
                dry.log.simulate_crash();
            });
            let Some(total) = dry_ops else { continue };
            for _ in 0..4 {
                let k = rng.below(total + 1);
                let mode = if rng.chance(1, 4) {
                    CrashMode::Process
                } else {
                    CrashMode::PowerLoss
                };
                let what = format!("seed {seed} variant {} (short) freeze-at-op {k}", v.name);
                let crash_seed = rng.next_u64();
                failures.check(|| {
                    let r = run(seed, v, Some(k));
                    crash_and_verify(r, mode, crash_seed, &what)
                });
                states += 1;
            }
        }
    }
    println!(
        "crash_at_random_instants: {states} crash states in {:?}",
        t.elapsed()
    );
    failures.finish("crash_at_random_instants");
}

/// Several power losses in a row without a clean close in between: the state after each is the
/// starting point of the next workload.
#[test]
fn repeated_power_loss_without_clean_close() {
    repeated_power_loss(SyncMode::Os, 50, "os");
}

/// The same with every append durable and the recovery point never fdatasynced by the lanes
/// (only by seals and open): every acknowledged record survives each power loss, and no open
/// finds the recovery-point file without a valid slot (docs/recovery.md, "The lagging recovery
/// point").
#[test]
fn repeated_power_loss_with_a_lagging_recovery_point() {
    repeated_power_loss(SyncMode::EveryAppend, NEVER, "every-append, lagging");
}

fn repeated_power_loss(sync: SyncMode, rp_lag_ms: u64, name: &str) {
    let mut states = 0;
    for seed in seeds(500..520) {
        let sim = SimStorage::new(seed);
        let clock = Arc::new(ManualClock::new(5_000_000));
        let mut cfg = sim_config(&sim, &clock);
        cfg.sync = sync;
        cfg.recovery_point_lag_ms = rp_lag_ms;
        let mut rng = Rng::new(seed);
        let mut synced: Vec<(u64, Vec<u8>)> = Vec::new();
        for round in 0..6u64 {
            let log = Log::open(dir(), cfg.clone())
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen: {e}"));
            let got: Vec<(u64, Vec<u8>)> = read_batches(&log)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"))
                .into_iter()
                .flat_map(|b| b.records)
                .collect();
            assert!(
                got.len() >= synced.len() && got[..synced.len()] == synced[..],
                "seed {seed} round {round}: synced records lost or changed"
            );
            let state = log.producer_state();
            let batches = read_batches(&log).unwrap();
            assert_eq!(
                state,
                rebuild_producer_state(&log, &batches),
                "seed {seed} round {round}: INV-9"
            );
            let (pid, _) = log.init_producer().unwrap();
            let mut seq = 0;
            for i in 0..rng.range(5, 40) {
                clock.advance(3);
                let n = rng.range(1, 4) as u32;
                let b = make_batch(
                    seed * 1000 + round * 100 + i,
                    n,
                    rng.range(10, 200) as usize,
                    Some((pid, 0, seq)),
                );
                seq += n as i32;
                log.append(&b).unwrap();
                if rng.chance(1, 8) {
                    log.flush().unwrap();
                }
            }
            if sync == SyncMode::EveryAppend || rng.chance(1, 2) {
                log.flush().unwrap();
                synced = read_batches(&log)
                    .unwrap()
                    .into_iter()
                    .flat_map(|b| b.records)
                    .collect();
            }
            crash(log, &sim, CrashMode::PowerLoss, rng.next_u64());
            states += 1;
        }
    }
    println!("repeated power loss ({name}): {states} crash states");
}

/// Replays one crash state printed by a failure: `ONCELOG_SEED`, `ONCELOG_VARIANT` (name, with
/// ` (short)` for the random-instant sweep), `ONCELOG_K`, `ONCELOG_MODE` (`Process` or
/// `PowerLoss`) and `ONCELOG_CRASH_SEED`; `ONCELOG_TRACE=1` prints every step. A no-op unless
/// `ONCELOG_K` is set.
#[test]
fn replay_one_crash_state() {
    let Ok(k) = std::env::var("ONCELOG_K") else {
        return;
    };
    let k: u64 = k.parse().unwrap();
    let seed = seed_from_env().expect("ONCELOG_SEED");
    let vname = std::env::var("ONCELOG_VARIANT").expect("ONCELOG_VARIANT");
    let short = vname.ends_with(" (short)");
    let base = vname.trim_end_matches(" (short)");
    let mut v = *VARIANTS.iter().find(|v| v.name == base).expect("variant");
    if short {
        v.steps /= 2;
    }
    let mode = match std::env::var("ONCELOG_MODE").as_deref() {
        Ok("Process") => CrashMode::Process,
        _ => CrashMode::PowerLoss,
    };
    let crash_seed: u64 = std::env::var("ONCELOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let r = run(seed, v, Some(k));
    println!(
        "after run: ops {} syncs {} model end {} synced {} start {}",
        r.ops, r.syncs, r.model.end, r.model.synced_end, r.model.start
    );
    crash_and_verify(r, mode, crash_seed, "replay");
}

/// Builds the disk a crash leaves when it hits after a roll but before the background sealer
/// trimmed the rolled segment: the segment keeps its preallocated zero padding and has no index
/// files. Returns the sim, config, written end and the rolled segment's valid length.
fn unsealed_rolled_segment(value_len: usize, flush: bool) -> (SimStorage, LogConfig, u64, u64) {
    let sim = SimStorage::new(value_len as u64);
    let clock = Arc::new(ManualClock::new(1_000));
    let cfg = sim_config(&sim, &clock);
    let log = Log::open(dir(), cfg.clone()).unwrap();
    let mut tag = 0;
    while log.segments().len() < 2 {
        log.append(&make_batch(tag, 1, value_len, None)).unwrap();
        tag += 1;
    }
    log.append(&make_batch(tag, 2, 30, None)).unwrap();
    if flush {
        log.flush().unwrap();
    }
    settle(&log);
    let seg0 = log.segments()[0].size();
    let end = log.log_end_offset().0;
    log.simulate_crash();
    sim.crash(CrashMode::Process);
    let path = |ext: &str| dir().join(format!("{:020}.{ext}", 0));
    sim.truncate_file(&path("log"), 4096).unwrap();
    let _ = sim.remove_file_now(&path("index"));
    let _ = sim.remove_file_now(&path("timeindex"));
    (sim, cfg, end, seg0)
}

/// Recovery row R7 for a segment *below* the recovery point: a rolled segment covered by a
/// `flush()` (or by any `EveryAppend` append in the next segment) whose seal had not finished
/// when the process died still has its zero padding. Open must accept it (and re-seal it), not
/// report corruption in synced data.
#[test]
fn synced_but_unsealed_segment_reopens() {
    let (sim, cfg, end, seg0) = unsealed_rolled_segment(200, true);
    let log = Log::open(dir(), cfg.clone()).unwrap_or_else(|e| {
        panic!(
            "rolled segment (valid {seg0} bytes, padded to 4096) below the recovery point: {e}\n{}",
            common::sim::describe_disk(&sim, &cfg)
        )
    });
    assert_eq!(log.log_end_offset().0, end);
    log.check_invariants();
    read_batches(&log).unwrap();
}

/// Recovery row R7 when the padding left after the last batch of a rolled segment is shorter
/// than a batch header: it is still zeros at the next segment's base, not a torn batch, so the
/// next segment must be kept. A `kill -9` loses nothing.
#[test]
fn short_zero_tail_of_rolled_segment_is_not_a_torn_tail() {
    let mut tried = 0;
    for value_len in 20..400 {
        let (_sim, cfg, end, seg0) = unsealed_rolled_segment(value_len, false);
        let pad = 4096 - seg0;
        if pad == 0 || pad >= 69 {
            continue;
        }
        tried += 1;
        let log = Log::open(dir(), cfg).unwrap();
        assert_eq!(
            log.log_end_offset().0,
            end,
            "value_len {value_len}: rolled segment with {pad} bytes of zero padding was taken for a \
             torn tail and the next segment was deleted after a process crash: {:?}",
            log.recovery_report()
        );
        if tried >= 3 {
            break;
        }
    }
    assert!(tried > 0, "no batch size left a short padding");
}
