//! `oncelog stat DIR`: segments, offsets, checkpoints and the recovery plan, read from the files
//! without opening the log (no lock is taken; a live log's files may change meanwhile).
//!
//! The plan is the one `Log::open` would execute and `oncelog verify` prints: the library's
//! `recovery::inspect_at` computes it, so the three never disagree about what a directory holds.
//! `stat` reads what open reads (`Depth::Shallow`): nothing of a cleanly closed log's sealed
//! segments, so it stays cheap on a large stopped log; `verify` reads every byte.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::file_name::{file_name, FileKind};
use oncelog::log::recovery::{self, survey::Found};
use oncelog::{Offset, RecoveryMode};

use super::{human_bytes, one_dir, parse_args, CliResult, Listing};

pub fn main(args: &[String]) -> CliResult {
    let (_, positional) = parse_args(args, &[])?;
    let dir = one_dir("stat", &positional)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    stat(&dir, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn found<T: std::fmt::Debug>(f: &Found<T>) -> String {
    match f {
        Found::Missing => "absent".to_string(),
        Found::Damaged(why) => format!("DAMAGED ({why})"),
        Found::Valid(v) => format!("{v:?}"),
    }
}

pub fn stat(dir: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let storage = oncelog::io::fs::RealStorage;
    // What open itself reads: a cleanly closed log's sealed segments are not read at all.
    let inspection = recovery::inspect_at(
        &storage,
        dir,
        RecoveryMode::FailOnCorruption,
        recovery::Depth::Shallow,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let listing = Listing::read(dir)?;
    let facts = &inspection.facts;
    writeln!(out, "log directory {}", dir.display())?;
    writeln!(out, "segments: {}", facts.bases.len())?;
    writeln!(
        out,
        "  {:<26} {:>20} {:>12} {:>9} {:>20}",
        "file", "base offset", "bytes", "batches", "next offset"
    )?;
    let mut total = 0u64;
    for (&base, &len) in facts.bases.iter().zip(&facts.log_lens) {
        total += len;
        // Batches are counted only for the segments open scans; the others are loaded from
        // their index (or deferred) and their next offset is the plan's.
        let walk = inspection.walks.iter().find(|w| w.base == base);
        let step = inspection.plan.segments.iter().find(|s| s.base == base);
        writeln!(
            out,
            "  {:<26} {:>20} {:>12} {:>9} {:>20}",
            file_name(Offset(base), FileKind::Log),
            base,
            len,
            walk.map_or("-".to_string(), |w| w.batches.len().to_string()),
            step.map_or("?".to_string(), |s| s.next_offset.to_string())
        )?;
    }
    let plan = &inspection.plan;
    let start = facts
        .log_start
        .valid()
        .copied()
        .or(facts.bases.first().copied())
        .unwrap_or(0);
    writeln!(
        out,
        "log start offset: {start} (log-start-offset: {})",
        found(&facts.log_start)
    )?;
    match plan.log_end() {
        Some(end) => writeln!(out, "log end offset: {end}")?,
        None => writeln!(out, "log end offset: ? (no segments)")?,
    }
    match &facts.recovery_point {
        Found::Valid(v) => writeln!(out, "recovery point: {v} (every batch below it is durable)")?,
        Found::Missing => writeln!(out, "recovery point: none (no recovery-point file)")?,
        Found::Damaged(why) => writeln!(out, "recovery point: none valid ({why})")?,
    }
    match &facts.marker {
        Found::Valid(v) => writeln!(
            out,
            "clean-shutdown marker: present {v:?} (log end, active base, active length, \
             segments, chain checksum){}",
            if plan.clean {
                ": matches the files"
            } else {
                ": does NOT match the files"
            }
        )?,
        Found::Missing => writeln!(
            out,
            "clean-shutdown marker: absent (the log is open, or did not shut down cleanly)"
        )?,
        Found::Damaged(why) => writeln!(out, "clean-shutdown marker: damaged ({why})")?,
    }
    writeln!(out, "producer-ids: {}", found(&facts.producer_ids))?;
    writeln!(out, "{plan}")?;
    let other_bytes: u64 = listing.others().map(|f| f.size).sum();
    writeln!(
        out,
        "total: {} in segments, {} in other files",
        human_bytes(total),
        human_bytes(other_bytes)
    )?;
    Ok(())
}
