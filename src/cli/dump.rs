//! `oncelog dump [--records] DIR`: every batch of every segment, like `kafka-dump-log`.
//!
//! Reads the files with `std::fs` (never opens the `Log`, so it works on a locked or damaged
//! directory). A segment is walked from byte 0 until its bytes end or a batch is invalid; the
//! first invalid batch is reported with its position and reason, and the rest of the file is
//! classified as zeros (preallocated tail) or garbage. Then the next segment is dumped.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::file_name::FileKind;

use super::{classify_tail, one_dir, parse_args, preview, walk, CliResult, Listing, Step, Tail};

pub fn main(args: &[String]) -> CliResult {
    let (flags, positional) = parse_args(args, &["--records"])?;
    let dir = one_dir("dump", &positional)?;
    let records = flags.contains(&"--records");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    dump(&dir, records, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the dump of `dir` to `out`.
pub fn dump(dir: &Path, records: bool, out: &mut impl Write) -> std::io::Result<()> {
    let listing = Listing::read(dir)?;
    writeln!(out, "Dumping {}", dir.display())?;
    let segments = listing.segments();
    if segments.is_empty() {
        writeln!(out, "no segment files (*.log)")?;
    }
    for seg in segments {
        let base = seg.kind.map_or(0, |(o, _)| o);
        writeln!(out)?;
        writeln!(
            out,
            "Segment {} (base offset {base}, {} bytes)",
            seg.name, seg.size
        )?;
        let bytes = match super::read_file(&seg.path) {
            Ok(b) => b,
            Err(e) => {
                writeln!(out, "  cannot read: {e}")?;
                continue;
            }
        };
        let mut expected = base;
        let mut end = 0usize;
        let mut batches = 0u64;
        for step in walk(&bytes) {
            match step {
                Step::Batch { pos, view } => {
                    let h = view.header();
                    let records_check = view.verify_records();
                    let status = match &records_check {
                        Ok(()) => "valid".to_string(),
                        Err(e) => format!("INVALID records: {e}"),
                    };
                    let gap = if h.base_offset == expected {
                        String::new()
                    } else {
                        format!(" (OFFSET GAP: expected base {expected})")
                    };
                    writeln!(
                        out,
                        "offset={}..{} pos={pos} size={} epoch={} append_ts={} max_ts={} \
                         records={} producer_id={} producer_epoch={} base_seq={} crc={:08x} \
                         {status}{gap}",
                        h.base_offset,
                        h.last_offset(),
                        h.batch_length,
                        h.leader_epoch,
                        h.append_timestamp,
                        h.max_timestamp,
                        h.record_count,
                        h.producer_id.0,
                        h.producer_epoch,
                        h.base_sequence,
                        h.crc,
                    )?;
                    if records {
                        for rec in view.records() {
                            match rec {
                                Ok(r) => writeln!(
                                    out,
                                    "  | offset={} ts={} key_len={} value_len={} headers={} \
                                     key={} value={}",
                                    h.base_offset + r.offset_delta.max(0) as u64,
                                    r.timestamp,
                                    r.key.map_or(-1, |k| k.len() as i64),
                                    r.value.map_or(-1, |v| v.len() as i64),
                                    r.headers().count(),
                                    preview(r.key, 24),
                                    preview(r.value, 40),
                                )?,
                                Err(e) => writeln!(out, "  | invalid record: {e}")?,
                            }
                        }
                    }
                    expected = h.next_offset();
                    end = pos + view.len();
                    batches += 1;
                }
                Step::Invalid { pos, reason } => match classify_tail(&bytes, pos) {
                    tail @ Tail::Zeros { .. } => {
                        writeln!(out, "end of batches at pos={pos}: {tail}")?;
                    }
                    tail => writeln!(
                        out,
                        "INVALID batch at pos={pos} (after offset {}): {reason}; {tail}",
                        expected.saturating_sub(1),
                    )?,
                },
            }
        }
        writeln!(
            out,
            "  {batches} batches, offsets {base}..{}, {end} of {} bytes in valid batches",
            expected.saturating_sub(1).max(base),
            bytes.len()
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Other files:")?;
    for f in listing.others() {
        let what = match f.kind {
            Some((_, FileKind::Index)) => "offset index",
            Some((_, FileKind::TimeIndex)) => "time index",
            Some((_, FileKind::Snapshot)) => "producer snapshot",
            Some((_, FileKind::TxnIndex)) => "transaction index",
            Some((_, FileKind::Log)) => "segment",
            None => super::fixed_file_kind(&f.name).unwrap_or("unknown"),
        };
        writeln!(out, "  {:<36} {:>12} bytes  {what}", f.name, f.size)?;
    }
    Ok(())
}
