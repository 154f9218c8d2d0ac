//! `oncelog verify DIR`: a full, read-only integrity check of a log directory.
//!
//! First every segment is walked (checksums, records, offset chain, what follows the last batch),
//! which yields the [`SegmentFacts`] the later checks use. Then each entry of [`CHECKS`] runs
//! against the facts; a new check (producer snapshots, say) is one more function in that list.
//!
//! Problems are *errors* (data is damaged or missing: exit status 1) or *warnings* (a state a
//! crash legitimately leaves behind, which the next open repairs: exit status 0).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use oncelog::format::checkpoint::CheckpointKind;
use oncelog::format::file_name::FileKind;
use oncelog::format::index::{decode_offset_index, decode_time_index};

use super::{
    classify_tail, one_dir, parse_args, read_checkpoint, read_recovery_point, walk, Checkpoint,
    CliResult, Listing, RecoveryPoint, Step, Tail,
};

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

/// Where one valid batch starts.
#[derive(Debug, Clone, Copy)]
pub struct BatchStart {
    pub pos: u64,
    pub base_offset: u64,
    /// The largest record timestamp of this batch and every earlier one in the segment.
    pub running_max_ts: i64,
}

/// What the walk of one segment found.
#[derive(Debug)]
pub struct SegmentFacts {
    pub base: u64,
    pub name: String,
    pub file_size: u64,
    pub batches: Vec<BatchStart>,
    pub records: u64,
    /// Bytes of valid batches from position 0.
    pub valid_len: u64,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    pub is_last: bool,
}

/// Everything the checks see.
#[derive(Debug)]
pub struct Ctx {
    pub dir: PathBuf,
    pub listing: Listing,
    pub recovery_point: RecoveryPoint,
    pub segments: Vec<SegmentFacts>,
}

type Check = fn(&Ctx, &mut Findings) -> std::io::Result<()>;

/// The checks run after the segment walk, in order.
const CHECKS: &[(&str, Check)] = &[
    ("offset and time indexes", check_indexes),
    ("checkpoints", check_checkpoints),
    ("other files", check_other_files),
    ("producer snapshots", check_snapshots),
    ("issued producer epochs", check_issued_epochs),
];

/// Verifies `dir`, writing a report to `out`.
pub fn verify(dir: &Path, out: &mut impl Write) -> std::io::Result<Outcome> {
    writeln!(out, "verify {}", dir.display())?;
    let listing = Listing::read(dir)?;
    let recovery_point = read_recovery_point(dir)?;
    let mut findings = Findings::default();
    let segments = walk_segments(&listing, recovery_point.offset(), &mut findings, out)?;
    let ctx = Ctx {
        dir: dir.to_path_buf(),
        listing,
        recovery_point,
        segments,
    };
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
    let mut s = Summary {
        segments: ctx.segments.len(),
        first_offset: ctx.segments.first().map(|f| f.base),
        end_offset: ctx.segments.last().map(|f| f.next_offset),
        ..Summary::default()
    };
    for f in &ctx.segments {
        s.batches += f.batches.len() as u64;
        s.records += f.records;
        s.bytes += f.valid_len;
        s.file_bytes += f.file_size;
    }
    s
}

/// Walks every segment: checksums, records, the offset chain within and across segments, and
/// what follows the last valid batch.
fn walk_segments(
    listing: &Listing,
    recovery_point: u64,
    findings: &mut Findings,
    out: &mut impl Write,
) -> std::io::Result<Vec<SegmentFacts>> {
    let files = listing.segments();
    let count = files.len();
    let mut facts: Vec<SegmentFacts> = Vec::with_capacity(count);
    for (i, file) in files.iter().enumerate() {
        let base = file.kind.map_or(0, |(o, _)| o);
        let is_last = i + 1 == count;
        let next_base = files.get(i + 1).and_then(|f| f.kind.map(|(o, _)| o));
        let name = file.name.clone();
        if let Some(prev) = facts.last() {
            if prev.next_offset != base {
                findings.error(format!(
                    "{name}: segment starts at offset {base} but the previous segment {} ends \
                     before offset {} ({})",
                    prev.name,
                    prev.next_offset,
                    if base > prev.next_offset {
                        "offsets missing"
                    } else {
                        "offsets overlap"
                    }
                ));
            }
        }
        let bytes = std::fs::read(&file.path)?;
        let mut f = SegmentFacts {
            base,
            name: name.clone(),
            file_size: bytes.len() as u64,
            batches: Vec::new(),
            records: 0,
            valid_len: 0,
            next_offset: base,
            is_last,
        };
        let mut running_max = i64::MIN;
        let mut stop = None;
        for step in walk(&bytes) {
            match step {
                Step::Batch { pos, view } => {
                    let h = view.header();
                    if h.base_offset != f.next_offset {
                        findings.error(format!(
                            "{name} at byte {pos}: batch starts at offset {} but offset {} was \
                             expected{}",
                            h.base_offset,
                            f.next_offset,
                            if f.batches.is_empty() {
                                " (the segment's base offset, from its file name)"
                            } else {
                                ""
                            }
                        ));
                    }
                    if let Err(e) = view.verify_records() {
                        findings.error(format!(
                            "{name} at byte {pos}: batch {}..{} has a valid checksum but bad \
                             records: {e}",
                            h.base_offset,
                            h.last_offset()
                        ));
                    }
                    running_max = running_max.max(h.max_timestamp);
                    f.batches.push(BatchStart {
                        pos: pos as u64,
                        base_offset: h.base_offset,
                        running_max_ts: running_max,
                    });
                    f.records += h.record_count as u64;
                    f.next_offset = h.next_offset();
                    f.valid_len = (pos + view.len()) as u64;
                }
                Step::Invalid { pos, reason } => stop = Some((pos, reason)),
            }
        }
        let tail = classify_tail(&bytes, f.valid_len as usize);
        let reason = stop.map_or_else(String::new, |(_, r)| r.to_string());
        let at = format!("{name} at byte {}", f.valid_len);
        let after = f.next_offset;
        let state = match (tail, is_last) {
            (Tail::None, false) => "sealed".to_string(),
            (Tail::None, true) => "active, trimmed (clean close)".to_string(),
            (Tail::Zeros { len }, true) => format!("active, {len} bytes preallocated"),
            (Tail::Zeros { len }, false) => {
                if next_base == Some(after) && !f.batches.is_empty() {
                    // Recovery row R7. The library handles it only for segments it scans; a
                    // segment below the recovery point is trusted, and its zeros are reported
                    // as corruption (a library bug, reported with the CLI).
                    let caveat = if recovery_point >= after {
                        "; but the recovery point covers it, and the current Log::open then \
                         fails with \"all-zero region\" instead of re-sealing it (library bug)"
                    } else {
                        ""
                    };
                    findings.warn(format!(
                        "{name}: not sealed: {len} zero bytes of preallocation follow the last \
                         batch (a crash before its seal finished); the next open should re-seal \
                         it (recovery row R7){caveat}"
                    ));
                } else {
                    findings.error(format!(
                        "{at}: sealed segment ends with {len} zero bytes after offset {} and the \
                         next segment does not continue there",
                        after.saturating_sub(1)
                    ));
                }
                "unsealed".to_string()
            }
            (Tail::Garbage { len, nonzero, .. }, true) => {
                if after < recovery_point {
                    findings.error(format!(
                        "{at}: corruption in synced data (below the recovery point \
                         {recovery_point}): {reason}; {len} bytes follow, {nonzero} non-zero"
                    ));
                } else {
                    findings.warn(format!(
                        "{at}: garbage tail past offset {} ({reason}; {nonzero} of the remaining \
                         {len} bytes are non-zero). An unclean shutdown can leave a torn batch \
                         here; it is past the recovery point {recovery_point}, so recovery will \
                         cut it",
                        after.saturating_sub(1)
                    ));
                }
                "active, torn tail".to_string()
            }
            (Tail::Garbage { len, nonzero, .. }, false) => {
                findings.error(format!(
                    "{at}: corruption in a sealed segment: {reason}; {len} bytes follow the last \
                     valid batch (offset {}), {nonzero} non-zero",
                    after.saturating_sub(1)
                ));
                "sealed, damaged".to_string()
            }
        };
        let offsets = if f.batches.is_empty() {
            "no batches".to_string()
        } else {
            format!("offsets {}..{}", f.base, f.next_offset - 1)
        };
        writeln!(
            out,
            "  {name}: {} batches, {} records, {offsets}, {} of {} bytes valid, {state}",
            f.batches.len(),
            f.records,
            f.valid_len,
            f.file_size
        )?;
        facts.push(f);
    }
    Ok(facts)
}

/// At most this many problems are listed per index file.
const MAX_INDEX_PROBLEMS: usize = 5;

/// Index files decode, and every entry points at a batch boundary with the right offset (and,
/// for the time index, the right timestamp).
fn check_indexes(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    for seg in &ctx.segments {
        let index = ctx.listing.find(seg.base, FileKind::Index);
        let time = ctx.listing.find(seg.base, FileKind::TimeIndex);
        if !seg.is_last && (index.is_none() || time.is_none()) {
            findings.warn(format!(
                "{}: sealed segment without {} file; the next open rebuilds it by scanning",
                seg.name,
                if index.is_none() {
                    ".index"
                } else {
                    ".timeindex"
                }
            ));
        }
        let mut problems: Vec<String> = Vec::new();
        if let Some(file) = index {
            let bytes = std::fs::read(&file.path)?;
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
            let bytes = std::fs::read(&file.path)?;
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
        for p in problems.into_iter().take(MAX_INDEX_PROBLEMS) {
            findings.error(p);
        }
        if extra > 0 {
            findings.error(format!("{}: {extra} more index problems", seg.name));
        }
    }
    Ok(())
}

/// The recovery point, the log start offset and the clean-shutdown marker agree with the
/// segments.
fn check_checkpoints(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    let end = ctx.segments.last().map(|s| s.next_offset);
    match &ctx.recovery_point {
        RecoveryPoint::Missing => {
            if !ctx.segments.is_empty() {
                findings.warn(format!(
                    "no {} file: nothing is known to be synced; the next open scans every segment",
                    super::RECOVERY_POINT_FILE
                ));
            }
        }
        RecoveryPoint::Invalid(why) => findings.warn(format!(
            "{}: no valid slot ({}); the next open treats the recovery point as 0 and scans \
             every segment",
            super::RECOVERY_POINT_FILE,
            why.join("; ")
        )),
        RecoveryPoint::Valid { offset, .. } => {
            if let Some(end) = end.filter(|&e| *offset > e) {
                findings.error(format!(
                    "recovery point {offset} is beyond the end of the valid batches ({end}): \
                     synced data is missing"
                ));
            }
        }
    }

    let log_start = read_checkpoint(
        &ctx.dir.join(super::LOG_START_FILE),
        CheckpointKind::LogStart,
    )?;
    match log_start {
        Checkpoint::Missing => {}
        Checkpoint::Invalid(why) => findings.warn(format!(
            "{}: damaged ({why}); the next open reports it and uses the first segment's base",
            super::LOG_START_FILE
        )),
        Checkpoint::Valid(v) => {
            let start = v.first().copied().unwrap_or(0);
            let count = ctx.segments.len();
            for (i, seg) in ctx.segments.iter().enumerate() {
                if seg.next_offset <= start && i + 1 < count {
                    findings.warn(format!(
                        "{}: entirely below the log start offset {start} (a crash during \
                         retention); the next open deletes it",
                        seg.name
                    ));
                }
            }
        }
    }

    let marker = read_checkpoint(
        &ctx.dir.join(super::CLEAN_SHUTDOWN_FILE),
        CheckpointKind::CleanShutdown,
    )?;
    match marker {
        Checkpoint::Missing => {}
        Checkpoint::Invalid(why) => findings.warn(format!(
            "{}: damaged ({why}); the next open ignores it and scans",
            super::CLEAN_SHUTDOWN_FILE
        )),
        Checkpoint::Valid(v) => match (v.as_slice(), ctx.segments.last()) {
            ([leo, base, len], Some(last)) if *base == last.base && *len == last.file_size => {
                if *leo != last.next_offset {
                    findings.error(format!(
                        "{}: says the log ends at {leo} but the last segment {} ends at {}",
                        super::CLEAN_SHUTDOWN_FILE,
                        last.name,
                        last.next_offset
                    ));
                }
            }
            _ => findings.warn(format!(
                "{}: {v:?} does not describe the last segment; the next open ignores it and \
                 scans",
                super::CLEAN_SHUTDOWN_FILE
            )),
        },
    }
    Ok(())
}

/// The issued-epochs checkpoint must decode: open refuses a damaged one (without it an epoch
/// handed out before could be handed out again).
fn check_issued_epochs(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    let name = oncelog::log::PRODUCER_EPOCHS_FILE;
    let decoded = match read_checkpoint(&ctx.dir.join(name), CheckpointKind::ProducerEpochs)? {
        Checkpoint::Missing => return Ok(()),
        Checkpoint::Invalid(why) => Err(why),
        Checkpoint::Valid(v) => {
            oncelog::producer::IssuedEpochs::from_values(&v, oncelog::producer::ISSUED_EPOCHS_KEPT)
                .map(|_| ())
        }
    };
    if let Err(why) = decoded {
        findings.error(format!(
            "{name}: damaged ({why}); the next open refuses the log"
        ));
    }
    Ok(())
}

/// Producer snapshots must agree with the log: the newest snapshot inside the log is compared
/// with a replay of every batch from the first segment up to its offset. A snapshot may know
/// more (batches of segments retention deleted, producers whose batches are all gone), so the
/// replayed window of each producer must be a suffix of the snapshot's window, with the same
/// epoch. A damaged or stale snapshot is only a warning: open ignores it and falls back.
fn check_snapshots(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    use oncelog::format::batch::BatchHeader;
    use oncelog::format::snapshot;
    use oncelog::producer::{BatchMetadata, ProducerConfig, ProducerStateManager};

    let end = ctx.segments.last().map_or(0, |s| s.next_offset);
    let first_base = ctx.segments.first().map_or(0, |s| s.base);
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
        match snapshot::decode(&std::fs::read(&f.path)?) {
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
    for seg in &ctx.segments {
        let Some(file) = ctx.listing.find(seg.base, FileKind::Log) else {
            continue;
        };
        let bytes = std::fs::read(&file.path)?;
        for b in seg.batches.iter().filter(|b| b.base_offset < offset) {
            let Some(h) = bytes
                .get(b.pos as usize..)
                .and_then(|r| BatchHeader::decode(r).ok())
            else {
                continue;
            };
            if h.is_idempotent() && h.last_offset() < offset {
                let meta = BatchMetadata {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    first_offset: h.base_offset,
                    last_offset: h.last_offset(),
                    append_time_ms: h.append_timestamp,
                };
                replay.record(h.producer_id, h.producer_epoch, meta);
            }
        }
    }
    let snap: std::collections::BTreeMap<_, _> = entries.into_iter().collect();
    let name = oncelog::format::file_name::file_name(oncelog::Offset(offset), FileKind::Snapshot);
    for (pid, e) in replay.entries() {
        match snap.get(&pid) {
            None => findings.warn(format!(
                "{name}: producer {} has batches in the log but is not in the snapshot                  (expired or evicted?)",
                pid.0
            )),
            Some(s) => {
                let ours: Vec<_> = e.batches().copied().collect();
                let theirs: Vec<_> = s.batches().copied().collect();
                if s.epoch != e.epoch || !theirs.ends_with(&ours) {
                    findings.error(format!(
                        "{name}: producer {} disagrees with the log: snapshot epoch {} {:?},                          log epoch {} {:?}",
                        pid.0, s.epoch, theirs, e.epoch, ours
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Leftovers recovery cleans up.
fn check_other_files(ctx: &Ctx, findings: &mut Findings) -> std::io::Result<()> {
    for f in &ctx.listing.files {
        match f.kind {
            Some((base, FileKind::Index | FileKind::TimeIndex))
                if ctx.listing.find(base, FileKind::Log).is_none() =>
            {
                findings.warn(format!(
                    "{}: index without a segment; the next open deletes it",
                    f.name
                ));
            }
            None if f.name == oncelog::log::SPARE_FILE => findings.warn(format!(
                "{}: the next segment's file prepared ahead (left by a crash); the next open \
                 deletes it",
                f.name
            )),
            None if f.name.ends_with(".tmp") => findings.warn(format!(
                "{}: leftover of an interrupted atomic write; the next open deletes it",
                f.name
            )),
            _ => {}
        }
    }
    Ok(())
}
