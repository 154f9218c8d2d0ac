//! `oncelog verify DIR`: a full, read-only integrity check of a log directory.
//!
//! The verdict is the library's: `oncelog::log::recovery::verify` computes the recovery plan
//! `Log::open` would execute (the same planner, over a scan of every byte), judges it, and
//! checks records, indexes, producer snapshots and transaction indexes, which open does not
//! read in full; this command prints the walk of every segment, the plan and the findings.
//!
//! Problems are *errors* (data is damaged or missing, or open would refuse: exit status 1) or
//! *warnings* (a state a crash legitimately leaves behind, which the next open repairs: exit
//! status 0).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::file_name::{file_name, FileKind};
use oncelog::log::recovery::{self, Findings, SegmentWalk};
use oncelog::{Offset, RecoveryMode};

use super::{one_dir, parse_args, CliResult};

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

/// Verifies `dir`, writing a report to `out`.
pub fn verify(dir: &Path, out: &mut impl Write) -> std::io::Result<Outcome> {
    writeln!(out, "verify {}", dir.display())?;
    let storage = oncelog::io::fs::RealStorage;
    let verification = recovery::verify(&storage, dir, RecoveryMode::FailOnCorruption)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let inspection = &verification.inspection;
    for w in &inspection.walks {
        print_walk(w, out)?;
    }
    writeln!(out, "{}", inspection.plan)?;
    let summary = summarize(&inspection.walks);
    let findings = verification.findings;
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

fn summarize(segs: &[SegmentWalk]) -> Summary {
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
        file_name(Offset(w.base), FileKind::Log),
        w.batches.len(),
        w.records,
        w.valid_len,
        w.file_len
    )
}
