//! `oncelog verify`'s judgement of a log directory, over any [`Storage`]: the plan `Log::open`
//! would execute ([`inspect`], every byte read), then the checks of what open uses without
//! reading it in full at open: records, index files, producer snapshots and transaction indexes.
//! The CLI prints it, and `tests/crash_sim.rs` runs it at every crash state: verify must never
//! call broken a state that open recovers cleanly.
//!
//! Problems are *errors* (data is damaged or missing, or open would refuse: `oncelog verify`
//! exits 1) or *warnings* (a state a crash legitimately leaves behind, which the next open
//! repairs). An open that would fail, or damage the deep scan finds in data open trusts, is an
//! error; what open repairs (a torn tail past the recovery point, an unsealed segment, a missing
//! index, leftovers) is a warning. Index files, snapshots and `.txnindex` files open would use
//! that disagree with the batches are errors; ones open replaces or ignores are warnings.

use std::path::{Path, PathBuf};

use super::inspect::{inspect, Inspection, SegmentWalk};
use super::plan::{Fate, Rule, Verdict};
use super::survey::Found;
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::format::file_name::{file_name, parse_file_name, FileKind};
use crate::format::index::{decode_offset_index, decode_time_index};
use crate::format::txn_index::{fmt_open_txns, OpenTxns};
use crate::io::{OpenMode, Storage};
use crate::log::TxnFile;
use crate::types::Offset;

/// What verify found besides the plan.
#[derive(Debug, Default)]
pub struct Findings {
    /// Problems that make the directory fail verification (damage, inconsistent files).
    pub errors: Vec<String>,
    /// Things worth knowing that do not fail it (e.g. an index a clean open would rebuild).
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

/// A verification: the inspection (the plan and the walk of every segment) and its findings.
#[derive(Debug)]
pub struct Verification {
    /// The plan open would execute and the walk of every segment.
    pub inspection: Inspection,
    /// What verify found besides the plan.
    pub findings: Findings,
}

impl Verification {
    /// No error (warnings allowed).
    pub fn ok(&self) -> bool {
        self.findings.errors.is_empty()
    }
}

/// Verifies `dir` as `Log::open` in `mode` would see it. Takes no lock and changes nothing; a
/// file that vanishes meanwhile (a live log) is not an error, and every error names its file.
pub fn verify(storage: &dyn Storage, dir: &Path, mode: RecoveryMode) -> Result<Verification> {
    let inspection = inspect(storage, dir, mode)?;
    let files = Files::list(storage, dir)?;
    let ctx = Ctx {
        storage,
        dir: dir.to_path_buf(),
        files,
        inspection,
    };
    let mut findings = Findings::default();
    let facts = &ctx.inspection.facts;
    let holds_log = !facts.bases.is_empty()
        || facts.recovery_point != Found::Missing
        || facts.log_start != Found::Missing
        || facts.marker != Found::Missing;
    if !holds_log {
        findings.error(format!(
            "{} holds no oncelog log (no segment file and no checkpoint)",
            dir.display()
        ));
    }
    check_plan(&ctx, &mut findings);
    for check in CHECKS {
        check(&ctx, &mut findings)?;
    }
    Ok(Verification {
        inspection: ctx.inspection,
        findings,
    })
}

/// One file of the directory listing the checks read.
#[derive(Debug)]
struct FileRef {
    name: String,
    path: PathBuf,
}

/// The per-offset files of the directory (`.index`, `.snapshot`, ...) with their base offset
/// and kind, listed after the inspection.
#[derive(Debug)]
struct Files {
    files: Vec<(u64, FileKind, FileRef)>,
}

impl Files {
    fn list(storage: &dyn Storage, dir: &Path) -> Result<Files> {
        let names = storage
            .list(dir)
            .map_err(|e| Error::io("list log directory", dir, e))?;
        let files = names
            .into_iter()
            .filter_map(|name| {
                let (o, kind) = parse_file_name(&name)?;
                let path = dir.join(&name);
                Some((o.0, kind, FileRef { name, path }))
            })
            .collect();
        Ok(Files { files })
    }

    /// The file of `kind` for base offset `base`, if listed.
    fn find(&self, base: u64, kind: FileKind) -> Option<&FileRef> {
        self.files
            .iter()
            .find(|(o, k, _)| *o == base && *k == kind)
            .map(|(_, _, f)| f)
    }

    /// Every file of `kind`, with its offset.
    fn of_kind(&self, kind: FileKind) -> Vec<(u64, &FileRef)> {
        self.files
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(o, _, f)| (*o, f))
            .collect()
    }
}

/// Everything the checks see.
struct Ctx<'a> {
    storage: &'a dyn Storage,
    dir: PathBuf,
    files: Files,
    inspection: Inspection,
}

impl Ctx<'_> {
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

type Check = fn(&Ctx, &mut Findings) -> Result<()>;

/// The checks run after the plan, in order: records, offset and time indexes, producer
/// snapshots, transaction indexes.
const CHECKS: &[Check] = &[
    check_records,
    check_indexes,
    check_snapshots,
    check_txn_indexes,
];

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
    // The marker must tell the truth about the log end it vouches for (after a refusal the
    // plan's end is the prefix before the damage, which the verdict already reports).
    if let (Some(v), true, Verdict::Open) = (plan_marker(ctx), plan.clean, &plan.verdict) {
        if Some(v) != plan.log_end() {
            findings.error(format!(
                "{}: says the log ends at {v} but its segments end at {}",
                crate::log::checkpoints::CLEAN_SHUTDOWN_FILE,
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
fn check_records(ctx: &Ctx, findings: &mut Findings) -> Result<()> {
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
fn check_indexes(ctx: &Ctx, findings: &mut Findings) -> Result<()> {
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
        let index = ctx.files.find(seg.base, FileKind::Index);
        let time = ctx.files.find(seg.base, FileKind::TimeIndex);
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
            let Some(bytes) = read_if_present(ctx.storage, &file.path)? else {
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
            let Some(bytes) = read_if_present(ctx.storage, &file.path)? else {
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

/// Producer snapshots must agree with the log: the snapshot open would load (the newest inside
/// the log open recovers) is compared with a replay of every batch open keeps up to its offset. A snapshot may know
/// more (batches of segments retention deleted, producers whose batches are all gone), so the
/// replayed window of each producer must be a suffix of the snapshot's window, with the same
/// epoch. A damaged or stale snapshot is only a warning: open ignores it and falls back.
fn check_snapshots(ctx: &Ctx, findings: &mut Findings) -> Result<()> {
    use crate::format::batch::BatchView;
    use crate::format::control::Marker;
    use crate::format::snapshot;
    use crate::producer::{ProducerConfig, ProducerStateManager};

    // What open keeps decides which snapshot it loads: the plan's recovered end (a snapshot
    // above it describes a cut tail), and the segments the plan does not delete (those after
    // a torn end, those below the log start).
    let kept = |base| !matches!(ctx.rule_of(base), Some((_, Fate::Delete)));
    let end = ctx.inspection.plan.log_end().unwrap_or(0);
    let first_base = ctx
        .segments()
        .iter()
        .map(|s| s.base)
        .find(|&b| kept(b))
        .unwrap_or(end);
    let log_start = ctx.inspection.plan.log_start.unwrap_or(first_base);
    let mut snapshots = ctx.files.of_kind(FileKind::Snapshot);
    snapshots.sort_by_key(|(o, _)| *o);
    let mut newest: Option<(u64, Vec<_>)> = None;
    for (offset, f) in &snapshots {
        // A live log rotates snapshots away under us: a vanished one is simply not there.
        let Some(bytes) = read_if_present(ctx.storage, &f.path)? else {
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
                "{}: ahead of the recovered log end {end} (a lost or cut tail); open ignores it",
                f.name
            )),
            Ok((_, entries))
                if crate::log::snapshot_usable_as_base(*offset, log_start, first_base, end) =>
            {
                newest = Some((*offset, entries))
            }
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
    for seg in ctx.segments().iter().filter(|s| kept(s.base)) {
        let Some(file) = ctx.files.find(seg.base, FileKind::Log) else {
            continue;
        };
        let Some(bytes) = read_if_present(ctx.storage, &file.path)? else {
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
                crate::log::apply_batch(&mut replay, &h, marker.as_ref());
            }
        }
    }
    let snap: std::collections::BTreeMap<_, _> = entries.into_iter().collect();
    let name = file_name(Offset(offset), FileKind::Snapshot);
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
/// snapshot rotation). A file that shrinks between its length and its read (a live log trims
/// a segment to its data when it seals it) is read again, at most three times. Any other
/// failure names the file, and so does a file larger than any oncelog writes (segment
/// positions are u32), which is not read.
fn read_if_present(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let read = storage.open(path, OpenMode::Read).and_then(|f| {
            let len = f.len()?;
            if len > u64::from(u32::MAX) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{len} bytes, larger than any file oncelog writes"),
                ));
            }
            f.read_all()
        });
        match read {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && attempt < 3 => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
}

/// Every segment's `.txnindex` against its batches. Each segment's transactions are rebuilt by
/// the library's own rebuild (`crate::log::rebuild_segment_txns`, what open runs when a file
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
fn check_txn_indexes(ctx: &Ctx, findings: &mut Findings) -> Result<()> {
    use crate::format::txn_index::SegmentTxnFile;

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
        let Some(log) = ctx.files.find(seg.base, FileKind::Log) else {
            continue;
        };
        let Some(bytes) = read_if_present(ctx.storage, &log.path)? else {
            continue;
        };
        let valid = bytes.get(..seg.valid_len as usize).unwrap_or(&[]);
        let rebuilds = "open rebuilds it from the batches";
        let file = match TxnFile::read(ctx.storage, &ctx.dir, seg.base) {
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
        let rebuild =
            |seed, known| crate::log::rebuild_segment_txns(&log.path, seg.base, valid, seed, known);
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
        let as_file = |t: crate::segment::SegmentTxns| SegmentTxnFile {
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
