//! `oncelog stat DIR`: segments, offsets, recovery point and clean-shutdown state, read from the
//! files without opening the log.
//!
//! Only the last segment is walked (the log end offset lives there), unless a valid
//! clean-shutdown marker describes it; earlier segments end where the next one begins.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::checkpoint::CheckpointKind;

use super::{
    classify_tail, human_bytes, one_dir, parse_args, read_checkpoint, read_recovery_point, walk,
    Checkpoint, CliResult, Listing, RecoveryPoint, Step, Tail,
};

pub fn main(args: &[String]) -> CliResult {
    let (_, positional) = parse_args(args, &[])?;
    let dir = one_dir("stat", &positional)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    stat(&dir, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// The last bytes of a sealed segment are its last record; a run of zeros this long at the end
/// of a file means preallocated space (the guess `stat` makes without walking the file).
const ZERO_TAIL_GUESS: u64 = 4096;

pub fn stat(dir: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let listing = Listing::read(dir)?;
    let segments = listing.segments();
    let marker = read_checkpoint(
        &dir.join(super::CLEAN_SHUTDOWN_FILE),
        CheckpointKind::CleanShutdown,
    )?;
    let log_start = read_checkpoint(&dir.join(super::LOG_START_FILE), CheckpointKind::LogStart)?;
    let rp = read_recovery_point(dir)?;

    writeln!(out, "log directory {}", dir.display())?;
    writeln!(out, "segments: {}", segments.len())?;
    writeln!(
        out,
        "  {:<26} {:>20} {:>12} {:>9}  state",
        "file", "base offset", "bytes", "batches"
    )?;
    let mut log_end: Option<u64> = None;
    let mut total = 0u64;
    let count = segments.len();
    for (i, seg) in segments.iter().enumerate() {
        let base = seg.kind.map_or(0, |(o, _)| o);
        total += seg.size;
        let is_last = i + 1 == count;
        let (batches, state) = if is_last {
            let marker_end = match &marker {
                Checkpoint::Valid(v) => match v.as_slice() {
                    [leo, b, len] if *b == base && *len == seg.size => Some(*leo),
                    _ => None,
                },
                _ => None,
            };
            if let Some(leo) = marker_end {
                log_end = Some(leo);
                (
                    "?".to_string(),
                    "active (trimmed at clean close)".to_string(),
                )
            } else {
                // Walk the active segment: that is where the log end is.
                let bytes = std::fs::read(&seg.path)?;
                let mut n = 0u64;
                let mut next = base;
                let mut end = 0usize;
                for step in walk(&bytes) {
                    match step {
                        Step::Batch { pos, view } if view.base_offset() == next => {
                            n += 1;
                            next = view.header().next_offset();
                            end = pos + view.len();
                        }
                        _ => break,
                    }
                }
                log_end = Some(next);
                let state = match classify_tail(&bytes, end) {
                    Tail::None => "active (trimmed)".to_string(),
                    Tail::Zeros { len } => {
                        format!("active ({} preallocated)", human_bytes(len as u64))
                    }
                    Tail::Garbage { len, .. } => {
                        format!("active ({len} bytes of torn tail/garbage after the valid batches)")
                    }
                };
                (n.to_string(), state)
            }
        } else {
            let state = if zero_tail(&seg.path, seg.size)? {
                "unsealed? (ends in zeros: seal pending or interrupted)"
            } else {
                "sealed"
            };
            ("?".to_string(), state.to_string())
        };
        writeln!(
            out,
            "  {:<26} {:>20} {:>12} {:>9}  {state}",
            seg.name, base, seg.size, batches
        )?;
    }
    let first_base = segments.first().and_then(|s| s.kind.map(|(o, _)| o));
    let start = match (&log_start, first_base) {
        (Checkpoint::Valid(v), Some(b)) => v
            .first()
            .copied()
            .unwrap_or(b)
            .clamp(b, log_end.unwrap_or(b)),
        (_, b) => b.unwrap_or(0),
    };
    let start_src = match &log_start {
        Checkpoint::Valid(_) => "from log-start-offset".to_string(),
        Checkpoint::Missing => "first segment's base".to_string(),
        Checkpoint::Invalid(e) => format!("log-start-offset is damaged: {e}"),
    };
    writeln!(out, "log start offset: {start} ({start_src})")?;
    match log_end {
        Some(end) => writeln!(out, "log end offset: {end}")?,
        None => writeln!(out, "log end offset: ? (no segments)")?,
    }
    match &rp {
        RecoveryPoint::Valid {
            offset,
            sequence,
            slot,
        } => writeln!(
            out,
            "recovery point: {offset} (slot {slot}, sequence {sequence}){}",
            match log_end {
                Some(end) if end > *offset => format!(": {} offsets not yet synced", end - offset),
                Some(end) if end < *offset =>
                    " BEYOND THE LOG END: synced data is missing (run oncelog verify)".to_string(),
                _ => String::new(),
            }
        )?,
        RecoveryPoint::Missing => writeln!(out, "recovery point: none (no recovery-point file)")?,
        RecoveryPoint::Invalid(why) => {
            writeln!(out, "recovery point: none valid ({})", why.join("; "))?
        }
    }
    match &marker {
        Checkpoint::Valid(v) => writeln!(
            out,
            "clean-shutdown marker: present {v:?} (log end, active base, active length)"
        )?,
        Checkpoint::Missing => writeln!(
            out,
            "clean-shutdown marker: absent (the log is open, or did not shut down cleanly)"
        )?,
        Checkpoint::Invalid(e) => writeln!(out, "clean-shutdown marker: damaged ({e})")?,
    }
    let index_bytes: u64 = listing.others().map(|f| f.size).sum();
    writeln!(
        out,
        "total: {} in segments, {} in other files",
        human_bytes(total),
        human_bytes(index_bytes)
    )?;
    Ok(())
}

/// Whether the last `ZERO_TAIL_GUESS` bytes of a file are all zero.
fn zero_tail(path: &Path, size: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if size < ZERO_TAIL_GUESS {
        return Ok(false);
    }
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(size - ZERO_TAIL_GUESS))?;
    let mut buf = vec![0u8; ZERO_TAIL_GUESS as usize];
    f.read_exact(&mut buf)?;
    Ok(buf.iter().all(|&b| b == 0))
}
