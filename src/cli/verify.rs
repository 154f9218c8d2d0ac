//! `oncelog verify DIR`: a full, read-only integrity check of a log directory.
//!
//! The verdict is the library's: `oncelog::log::recovery::inspect` computes the recovery plan
//! `Log::open` would execute (the same planner, over a scan of every byte), and verify prints
//! it. An open that would fail, or damage the deep scan finds in data open trusts, is an error;
//! what open repairs (a torn tail past the recovery point, an unsealed segment, a missing
//! index, leftovers) is a warning. Then each entry of [`CHECKS`] runs against the walk of every
//! segment: records, indexes, producer snapshots and transaction indexes, which open does not
//! read in full.
//!
//! Problems are *errors* (data is damaged or missing, or open would refuse: exit status 1) or
//! *warnings* (a state a crash legitimately leaves behind, which the next open repairs: exit
//! status 0).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::file_name::{file_name, FileKind};
use oncelog::format::index::{decode_offset_index, decode_time_index};
use oncelog::format::txn_index::OpenTxns;
use oncelog::log::recovery::{self, Fate, Inspection, Rule, SegmentWalk, Verdict};
use oncelog::{Offset, RecoveryMode};

use super::{fmt_open_txns, one_dir, parse_args, CliResult, Listing, TxnFile};

pub fn main(args: &[String]) -> CliResult {
    let (_, positional) = parse_args(args, &[])?;
    let dir = one_dir("verify", &positional)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let outcome = verify(&dir, &mut out)?;
    Ok(if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The findings of a verification run.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Findings {
    fn error(&mut self, msg: String) {
        self.errors.push(msg);
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }
}

/// Totals over the valid batches of every segment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
    /// Bytes of the segment files.
    pub file_bytes: u64,
    pub first_offset: Option<u64>,
    /// One past the last valid offset.
    pub end_offset: Option<u64>,
}

#[derive(Debug)]
pub struct Outcome {
    pub findings: Findings,
    pub summary: Summary,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.findings.errors.is_empty()
    }
}

/// Everything the checks see.
#[derive(Debug)]
pub struct Ctx {
    pub listing: Listing,
    pub inspection: Inspection,
}

impl Ctx {
    fn segments(&self) -> &[SegmentWalk] {
        &self.inspection.walks
    }

    /// The rule the plan applies to the segment at `base`.
    fn rule_of(&self, base: u64) -> Option<(Rule, &Fate)> {
        self.inspection
            .plan
            .segments
            .iter()
            .find(|s| s.base == base)
            .map(|s| (s.rule, &s.fate))
    }
}

fn name_of(base: u64) -> String {
    file_name(Offset(base), FileKind::Log)
}

type Check = fn(&Ctx, &mut Findings) -> std::io::Result<()>;

/// The checks run after the plan, in order.
const CHECKS: &[(&str, Check)] = &[
    ("records", check_records),
    ("offset and time indexes", check_indexes),
    ("producer snapshots", check_snapshots),
    ("transaction indexes", check_txn_indexes),
];

/// Verifies `dir`, writing a report to `out`.
pub fn verify(dir: &Path, out: &mut impl Write) -> std::io::Result<Outcome> {
    writeln!(out, "verify {}", dir.display())?;
    let storage = oncelog::io::fs::RealStorage;
    let inspection = recovery::inspect(&storage, dir, RecoveryMode::FailOnCorruption)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let listing = Listing::read(dir)?;
    let mut findings = Findings::default();
    let facts = &inspection.facts;
    let holds_log = !facts.bases.is_empty()
        || facts.recovery_point != recovery::survey::Found::Missing
        || facts.log_start != recovery::survey::Found::Missing
        || facts.marker != recovery::survey::Found::Missing;
    if !holds_log {
        findings.error(format!(
            "{} holds no oncelog log (no segment file and no checkpoint)",
            dir.display()
        ));
    }
    for w in &inspection.walks {
        print_walk(w, out)?;
    }
    writeln!(out, "{}", inspection.plan)?;
    let ctx = Ctx {
        listing,
        inspection,
    };
    check_plan(&ctx, &mut findings);
    for (_name, check) in CHECKS {
        check(&ctx, &mut findings)?;
    }
    let summary = summarize(&ctx);
    for w in &findings.warnings {
        writeln!(out, "WARNING: {w}")?;
    }
    for e in &findings.errors {
        writeln!(out, "ERROR: {e}")?;
    }
    let range = match (summary.first_offset, summary.end_offset) {
        (Some(a), Some(b)) if b > a => format!("offsets {a}..{}", b - 1),
        (Some(a), _) => format!("no records (next offset {a})"),
        _ => "no segments".into(),
    };
    writeln!(
        out,
        "summary: {} segments, {} batches, {} records, {} bytes in batches ({} bytes of files), \
         {range}",
        summary.segments, summary.batches, summary.records, summary.bytes, summary.file_bytes
    )?;
    let outcome = Outcome { findings, summary };
    let (e, w) = (
        outcome.findings.errors.len(),
        outcome.findings.warnings.len(),
    );
    if outcome.ok() {
        writeln!(out, "result: OK ({w} warnings)")?;
    } else {
        writeln!(out, "result: FAILED ({e} errors, {w} warnings)")?;
    }
    Ok(outcome)
}

fn summarize(ctx: &Ctx) -> Summary {
    let segs = ctx.segments();
    let mut s = Summary {
        segments: segs.len(),
        first_offset: segs.first().map(|f| f.base),
        end_offset: segs.last().map(|f| f.next_offset),
        ..Summary::default()
    };
    for f in segs {
        s.batches += f.batches.len() as u64;
        s.records += f.records;
        s.bytes += f.valid_len;
        s.file_bytes += f.file_len;
    }
    s
}

fn print_walk(w: &SegmentWalk, out: &mut impl Write) -> std::io::Result<()> {
    let offsets = if w.batches.is_empty() {
        "no batches".to_string()
    } else {
        format!("offsets {}..{}", w.base, w.next_offset - 1)
    };
    let after = match &w.stop {
        None => String::new(),
        Some((pos, why)) if w.garbage == 0 => format!(", zeros from byte {pos} ({why})"),
        Some((pos, why)) => format!(
            ", stops at byte {pos} ({why}; {} non-zero bytes follow)",
            w.garbage
        ),
    };
    writeln!(
        out,
        "  {}: {} batches, {} records, {offsets}, {} of {} bytes valid{after}",
        name_of(w.base),
        w.batches.len(),
        w.records,
        w.valid_len,
        w.file_len
    )
}

/// The plan's verdict is verify's: an open that would refuse is an error; every repair open
/// would make (cuts past the recovery point, re-seals, deletions, leftovers) is a warning.
fn check_plan(ctx: &Ctx, findings: &mut Findings) {
    let plan = &ctx.inspection.plan;
    match &plan.verdict {
        Verdict::Open => {}
        // After a clean close open defers sealed segments and meets such damage on first use;
        // otherwise it refuses (or opens read-only).
        Verdict::Corrupt(why) => findings.error(why.clone()),
        Verdict::RecoveryPointLost(why) => findings.error(format!("Log::open refuses: {why}")),
    }
    for (name, rule) in &plan.remove {
        findings.warn(format!(
            "{name}: leftover; the next open deletes it ({rule})"
        ));
    }
    // Cuts are made only by an open that succeeds: after a refusal, what salvage would cut.
    match plan.cuts_made_in() {
        Some(m) if m == plan.mode => {
            for c in &plan.cuts {
                findings.warn(format!("the next open cuts {c}"));
            }
        }
        Some(m) => {
            for c in &plan.cuts {
                findings.warn(format!(
                    "the next open refuses and cuts nothing; RecoveryMode::{m:?} would cut {c}"
                ));
            }
        }
        None => {}
    }
    for s in &plan.segments {
        let name = name_of(s.base);
        match (&s.fate, s.rule) {
            (Fate::Delete, Rule::R10) => findings.warn(format!(
                "{name}: entirely below the log start offset (a crash during retention); the \
                 next open deletes it (R10)"
            )),
            (Fate::Reseal, Rule::R7) => findings.warn(format!(
                "{name}: not sealed (a crash before its seal finished); the next open re-seals \
                 it (R7)"
            )),
            (Fate::Reseal, Rule::R3) => findings.warn(format!(
                "{name}: index files missing, damaged or stale; the next open rebuilds them (R3)"
            )),
            _ => {}
        }
    }
    // The marker must tell the truth about the log end it vouches for.
    if let (Some(v), true) = (plan_marker(ctx), plan.clean) {
        if Some(v) != plan.log_end() {
            findings.error(format!(
                "{}: says the log ends at {v} but its segments end at {}",
                oncelog::log::checkpoints::CLEAN_SHUTDOWN_FILE,
                plan.log_end().unwrap_or(0)
            ));
        }
    }
}

fn plan_marker(ctx: &Ctx) -> Option<u64> {
    ctx.inspection
        .facts
        .marker
        .valid()
        .and_then(|v| v.first().copied())
}

/// Batches whose checksum is valid but whose records do not decode.
fn check_records(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    for w in ctx.segments() {
        for (pos, why) in &w.record_errors {
            findings.error(format!(
                "{} at byte {pos}: batch has a valid checksum but bad records: {why}",
                name_of(w.base)
            ));
        }
    }
    Ok(())
}

/// At most this many problems are listed per index file.
const MAX_INDEX_PROBLEMS: usize = 5;

/// Index files decode, and every entry points at a batch boundary with the right offset (and,
/// for the time index, the right timestamp).
fn check_indexes(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    let count = ctx.segments().len();
    for (i, seg) in ctx.segments().iter().enumerate() {
        let is_last = i + 1 == count;
        let name = name_of(seg.base);
        // Index files open replaces (rebuilt, re-sealed, the active segment's) or never reads
        // (segments it deletes) can only be warnings.
        let replaced = is_last
            || matches!(
                ctx.rule_of(seg.base),
                Some((_, Fate::Reseal | Fate::Delete | Fate::CutAt { .. }))
            );
        let index = ctx.listing.find(seg.base, FileKind::Index);
        let time = ctx.listing.find(seg.base, FileKind::TimeIndex);
        if !is_last && (index.is_none() || time.is_none()) {
            findings.warn(format!(
                "{name}: sealed segment without {} file; it is rebuilt by a scan",
                if index.is_none() {
                    ".index"
                } else {
                    ".timeindex"
                }
            ));
        }
        let mut problems: Vec<String> = Vec::new();
        if let Some(file) = index {
            let Some(bytes) = read_if_present(&file.path)? else {
                continue;
            };
            match decode_offset_index(&bytes, seg.base) {
                Err(e) => problems.push(format!("{}: does not decode: {e}", file.name)),
                Ok((_, entries)) => {
                    for (i, e) in entries.iter().enumerate() {
                        let want = seg.base + u64::from(e.relative_offset);
                        let at = seg
                            .batches
                            .binary_search_by_key(&u64::from(e.position), |b| b.pos);
                        let msg = match at.ok().and_then(|j| seg.batches.get(j)) {
                            None if u64::from(e.position) >= seg.valid_len => Some(format!(
                                "points past the last valid batch (byte {})",
                                seg.valid_len
                            )),
                            None => Some("is not a batch boundary".to_string()),
                            Some(b) if b.base_offset != want => Some(format!(
                                "the batch there starts at offset {}, not {want}",
                                b.base_offset
                            )),
                            Some(_) => None,
                        };
                        if let Some(msg) = msg {
                            problems.push(format!(
                                "{} entry {i} (relative offset {}, position {}): {msg}",
                                file.name, e.relative_offset, e.position
                            ));
                        }
                    }
                }
            }
        }
        if let Some(file) = time {
            let Some(bytes) = read_if_present(&file.path)? else {
                continue;
            };
            match decode_time_index(&bytes, seg.base) {
                Err(e) => problems.push(format!("{}: does not decode: {e}", file.name)),
                Ok((_, entries)) => {
                    for (i, e) in entries.iter().enumerate() {
                        let want = seg.base + u64::from(e.relative_offset);
                        let at = seg.batches.binary_search_by_key(&want, |b| b.base_offset);
                        let msg = match at.ok().and_then(|j| seg.batches.get(j)) {
                            None => Some(format!(
                                "offset {want} is not the first offset of a valid batch"
                            )),
                            Some(b) if b.running_max_ts != e.timestamp => Some(format!(
                                "the largest timestamp up to that batch is {}",
                                b.running_max_ts
                            )),
                            Some(_) => None,
                        };
                        if let Some(msg) = msg {
                            problems.push(format!(
                                "{} entry {i} (timestamp {}, relative offset {}): {msg}",
                                file.name, e.timestamp, e.relative_offset
                            ));
                        }
                    }
                }
            }
        }
        let extra = problems.len().saturating_sub(MAX_INDEX_PROBLEMS);
        let mut report = |msg: String| {
            if replaced {
                findings.warn(format!("{msg} (open replaces these index files)"));
            } else {
                findings.error(msg);
            }
        };
        for p in problems.into_iter().take(MAX_INDEX_PROBLEMS) {
            report(p);
        }
        if extra > 0 {
            report(format!("{name}: {extra} more index problems"));
        }
    }
    Ok(())
}

/// Producer snapshots must agree with the log: the newest snapshot inside the log is compared
/// with a replay of every batch from the first segment up to its offset. A snapshot may know
/// more (batches of segments retention deleted, producers whose batches are all gone), so the
/// replayed window of each producer must be a suffix of the snapshot's window, with the same
/// epoch. A damaged or stale snapshot is only a warning: open ignores it and falls back.
fn check_snapshots(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    use oncelog::format::batch::BatchView;
    use oncelog::format::control::Marker;
    use oncelog::format::snapshot;
    use oncelog::producer::{ProducerConfig, ProducerStateManager};

    let end = ctx.segments().last().map_or(0, |s| s.next_offset);
    let first_base = ctx.segments().first().map_or(0, |s| s.base);
    let mut snapshots: Vec<(u64, &crate::cli::DirFile)> = ctx
        .listing
        .files
        .iter()
        .filter_map(|f| match f.kind {
            Some((o, FileKind::Snapshot)) => Some((o, f)),
            _ => None,
        })
        .collect();
    snapshots.sort_by_key(|(o, _)| *o);
    let mut newest: Option<(u64, Vec<_>)> = None;
    for (offset, f) in &snapshots {
        // A live log rotates snapshots away under us: a vanished one is simply not there.
        let Some(bytes) = read_if_present(&f.path)? else {
            continue;
        };
        match snapshot::decode(&bytes) {
            Err(e) => findings.warn(format!(
                "{}: does not decode ({e}); open ignores it",
                f.name
            )),
            Ok((o, _)) if o != *offset => findings.warn(format!(
                "{}: holds offset {o}, not its name's; open ignores it",
                f.name
            )),
            Ok(_) if *offset > end => findings.warn(format!(
                "{}: ahead of the log end {end} (a lost tail); open ignores it",
                f.name
            )),
            Ok((_, entries)) if *offset >= first_base => newest = Some((*offset, entries)),
            Ok(_) => {}
        }
    }
    let Some((offset, entries)) = newest else {
        return Ok(());
    };
    // Replay the log up to the snapshot offset (no expiry: the CLI does not know the
    // configuration, so a producer the log expired is reported as a warning, not an error).
    let cfg = ProducerConfig {
        expiration_ms: u64::MAX / 4,
        max_producers: usize::MAX / 2,
    };
    let mut replay = ProducerStateManager::new(cfg);
    for seg in ctx.segments() {
        let Some(file) = ctx.listing.find(seg.base, FileKind::Log) else {
            continue;
        };
        let Some(bytes) = read_if_present(&file.path)? else {
            continue;
        };
        for b in seg.batches.iter().filter(|b| b.base_offset < offset) {
            let Some(view) = bytes
                .get(b.pos as usize..)
                .and_then(|r| BatchView::parse(r).ok().map(|(v, _)| v))
            else {
                continue;
            };
            let h = *view.header();
            if h.last_offset() < offset {
                // The log's own replay: markers bump epochs and complete transactions. A
                // control batch that is not a marker is reported by the transaction check.
                let Ok(marker) = Marker::of(&view) else {
                    continue;
                };
                oncelog::log::apply_batch(&mut replay, &h, marker.as_ref());
            }
        }
    }
    let snap: std::collections::BTreeMap<_, _> = entries.into_iter().collect();
    let name = oncelog::format::file_name::file_name(oncelog::Offset(offset), FileKind::Snapshot);
    for (pid, e) in replay.entries() {
        match snap.get(&pid) {
            None => findings.warn(format!(
                "{name}: producer {} has batches in the log but is not in the snapshot \
                 (expired or evicted?)",
                pid.0
            )),
            Some(s) => {
                let ours: Vec<_> = e.batches().copied().collect();
                let theirs: Vec<_> = s.batches().copied().collect();
                if s.epoch != e.epoch || !theirs.ends_with(&ours) {
                    findings.error(format!(
                        "{name}: producer {} disagrees with the log: snapshot epoch {} {:?}, \
                         log epoch {} {:?}",
                        pid.0, s.epoch, theirs, e.epoch, ours
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A file's bytes, or `None` if it vanished since the listing (a live log's retention or
/// snapshot rotation). Any other failure names the file.
fn read_if_present(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match super::read_file(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("read {}: {e}", path.display()),
        )),
    }
}

/// Every segment's `.txnindex` against its batches. Each segment's transactions are rebuilt by
/// the library's own rebuild (`oncelog::log::rebuild_segment_txns`, what open runs when a file
/// is missing, damaged or stale) seeded with the transactions open at the end of its
/// predecessor as open derives them (the predecessor's file where open uses it, else its
/// rebuild); the first segment is seeded with its own file's `open_at_base`.
///
/// The verdicts follow open's: a file open does not use (missing, damaged, bound to another
/// length or end offset, or whose `open_at_base` disagrees with its predecessor's end) is a
/// warning, as open rebuilds it from the batches; a missing file of the last segment is normal
/// after a crash (it is written at seal and clean close) and not reported. A file open *would*
/// use whose entries disagree with the batches is an error: open trusts it as written and
/// read_committed readers would get its aborted list (deleting the file makes open rebuild it).
/// Segments open deletes are skipped. When the first segment has no usable file, transactions
/// open before its base are unknown here (open seeds them from the producer snapshot): the
/// files of the segments after it are then checked against their own `open_at_base`.
fn check_txn_indexes(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    use oncelog::format::txn_index::SegmentTxnFile;

    let count = ctx.segments().len();
    // The predecessor's open transactions at its end, as open derives them, and whether they
    // are exact (known from the first segment's file on).
    let mut chain: Option<OpenTxns> = None;
    let mut exact = true;
    for (i, seg) in ctx.segments().iter().enumerate() {
        let is_last = i + 1 == count;
        if matches!(ctx.rule_of(seg.base), Some((_, Fate::Delete))) {
            chain = None;
            continue;
        }
        let name = file_name(Offset(seg.base), FileKind::TxnIndex);
        let Some(log) = ctx.listing.find(seg.base, FileKind::Log) else {
            continue;
        };
        let Some(bytes) = read_if_present(&log.path)? else {
            continue;
        };
        let valid = bytes.get(..seg.valid_len as usize).unwrap_or(&[]);
        let rebuilds = "open rebuilds it from the batches";
        let file = match TxnFile::read(&ctx.listing, seg.base) {
            TxnFile::Missing => {
                if !is_last {
                    findings.warn(format!("{name}: missing; {rebuilds}"));
                }
                None
            }
            TxnFile::Damaged(why) => {
                findings.warn(format!("{name}: {why}; {rebuilds}"));
                None
            }
            TxnFile::Decoded(f) => Some(f),
        };
        // Open's binding test: the file describes the segment as it is, after its predecessor.
        let bound = file.filter(|f| {
            if f.log_length != seg.valid_len || f.next_offset != seg.next_offset {
                findings.warn(format!(
                    "{name}: describes {} bytes ending at offset {}, the segment has {} bytes \
                     ending at {} (stale); {rebuilds}",
                    f.log_length, f.next_offset, seg.valid_len, seg.next_offset
                ));
                return false;
            }
            match &chain {
                Some(prev) if exact && *prev != f.open_at_base => {
                    findings.warn(format!(
                        "{name}: open at base: {}, but the predecessor ends with {} open; \
                         {rebuilds}",
                        fmt_open_txns(&f.open_at_base),
                        fmt_open_txns(prev)
                    ));
                    false
                }
                _ => true,
            }
        });
        let (seed, known) = match (&chain, &bound) {
            (Some(prev), _) if exact => (prev.clone(), true),
            (_, Some(f)) => (f.open_at_base.clone(), true),
            (Some(prev), None) => (prev.clone(), false),
            (None, None) => {
                exact = false;
                (Vec::new(), false)
            }
        };
        let rebuild = |seed, known| {
            oncelog::log::rebuild_segment_txns(&log.path, seg.base, valid, seed, known)
        };
        let rebuilt = match rebuild(seed.clone(), known) {
            Ok(t) => t,
            Err(e) => {
                findings.error(format!(
                    "{name}: the segment's transactions cannot be rebuilt from its batches: {e}"
                ));
                chain = None;
                exact = false;
                continue;
            }
        };
        let as_file = |t: oncelog::segment::SegmentTxns| SegmentTxnFile {
            base_offset: seg.base,
            log_length: seg.valid_len,
            next_offset: seg.next_offset,
            open_at_base: t.open_at_base,
            open_at_end: t.open_at_end.unwrap_or_default(),
            aborted: t.aborted,
        };
        let expected = as_file(rebuilt);
        chain = Some(match bound {
            Some(f) => {
                // The first segment's file may have been rebuilt by an open that did not know
                // every transaction open at its base (conservative entries): both agree.
                let agrees = f == expected
                    || (!exact || i == 0) && rebuild(seed, false).is_ok_and(|t| as_file(t) == f);
                if !agrees {
                    findings.error(format!(
                        "{name}: disagrees with the segment's batches: the file has aborted {:?}, \
                         open at end: {}; the batches give aborted {:?}, open at end: {}. Open \
                         uses the file as written (it is bound to the segment): delete it and \
                         the next open rebuilds it",
                        f.aborted,
                        fmt_open_txns(&f.open_at_end),
                        expected.aborted,
                        fmt_open_txns(&expected.open_at_end)
                    ));
                }
                f.open_at_end
            }
            None => expected.open_at_end,
        });
    }
    Ok(())
}
