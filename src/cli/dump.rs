//! `oncelog dump [--records] DIR`: every batch of every segment, like `kafka-dump-log`.
//!
//! Reads the files with `std::fs` (never opens the `Log`, so it works on a locked or damaged
//! directory). A segment is walked from byte 0 until its bytes end or a batch is invalid; the
//! first invalid batch is reported with its position and reason, and the rest of the file is
//! classified as zeros (preallocated tail) or garbage. Then the next segment is dumped.
//!
//! Transactions: a transactional batch is marked `transactional`, a control batch shows its
//! marker (COMMIT or ABORT, producer, producer epoch, coordinator epoch). After each segment's
//! batches comes its `.txnindex` (aborted transactions, transactions open at its base and end).
//! At the end, the transactions open at the log end and the last stable offset, rebuilt from the
//! batches by the library's own rebuild (`oncelog::log::rebuild_segment_txns`), each segment
//! seeded with its predecessor's open transactions, the first with its `.txnindex`'s (without
//! it, transactions open before the first segment are unknown, and the dump says so).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use oncelog::format::control::{Marker, MarkerKind};
use oncelog::format::txn_index::{fmt_open_txns, OpenTxns};
use oncelog::log::{recovery, TxnFile};
use oncelog::producer::stable_bound;

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
    // The transactions open at the end of the previous segment, as rebuilt from the batches;
    // `None` once a segment could not be rebuilt.
    let mut open: Option<OpenTxns> = None;
    let mut first_known = true;
    let mut log_end = None;
    for (i, seg) in segments.iter().enumerate() {
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
                    let txn = match (h.is_control(), h.is_transactional()) {
                        (true, _) => match Marker::of(&view) {
                            Ok(Some(m)) => format!(
                                " control: {} producer_id={} producer_epoch={} \
                                 coordinator_epoch={}",
                                match m.kind {
                                    MarkerKind::Commit => "COMMIT",
                                    MarkerKind::Abort => "ABORT",
                                },
                                m.producer_id.0,
                                m.producer_epoch,
                                m.coordinator_epoch
                            ),
                            Ok(None) => " control".to_string(),
                            Err(e) => format!(" control: INVALID marker: {e}"),
                        },
                        (false, true) => " transactional".to_string(),
                        (false, false) => String::new(),
                    };
                    let gap = if h.base_offset == expected {
                        String::new()
                    } else {
                        format!(" (OFFSET GAP: expected base {expected})")
                    };
                    writeln!(
                        out,
                        "offset={}..{} pos={pos} size={} epoch={} append_ts={} max_ts={} \
                         records={} producer_id={} producer_epoch={} base_seq={} crc={:08x}{txn} \
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
        let file = TxnFile::read(&oncelog::io::fs::RealStorage, dir, base);
        dump_txn_file(&file, out)?;
        // Seed: the predecessor's end; for the first segment its file's open_at_base.
        let (seed, known) = match (i, open.take(), &file) {
            (0, _, TxnFile::Decoded(f)) => (f.open_at_base.clone(), true),
            (0, _, _) => {
                first_known = false;
                (Vec::new(), false)
            }
            (_, Some(prev), _) => (prev, true),
            (_, None, _) => continue,
        };
        let valid = bytes.get(..end).unwrap_or(&[]);
        match oncelog::log::rebuild_segment_txns(&seg.path, base, valid, seed, known) {
            Ok(t) => open = t.open_at_end,
            Err(e) => writeln!(
                out,
                "  transactions cannot be rebuilt from the batches: {e}"
            )?,
        }
        log_end = Some(expected);
    }
    if let (Some(open), Some(end)) = (&open, log_end) {
        writeln!(out)?;
        writeln!(
            out,
            "Open transactions at the log end (rebuilt from the batches): {}",
            fmt_open_txns(open)
        )?;
        // A stopped log's high-water mark is its log end, and every marker in it counts as
        // below it (docs/transactions.md): the log's own rule with HW = the log end, from the
        // log start the checkpoint records (retention may have moved it inside a segment).
        let log_start = recovery::survey::read_dir_facts(&oncelog::io::fs::RealStorage, dir)
            .ok()
            .and_then(|f| f.log_start.valid().copied())
            .unwrap_or(0);
        let first_open = open.iter().map(|&(o, _)| o).min();
        let lso = stable_bound(first_open, log_start, end);
        writeln!(
            out,
            "Last stable offset: {lso} (log start {log_start}, log end {end})"
        )?;
        if !first_known {
            writeln!(
                out,
                "  (the first segment has no usable .txnindex: transactions open before its \
                 base are not known here, so the LSO may be lower)"
            )?;
        }
    }
    writeln!(out)?;
    writeln!(out, "Other files:")?;
    for f in listing.others() {
        let what = oncelog::log::dir_files::describe_file(&f.name).unwrap_or("unknown");
        writeln!(out, "  {:<36} {:>12} bytes  {what}", f.name, f.size)?;
    }
    Ok(())
}

/// A segment's `.txnindex`, as stored.
fn dump_txn_file(file: &TxnFile, out: &mut impl Write) -> std::io::Result<()> {
    match file {
        TxnFile::Missing => writeln!(
            out,
            "  .txnindex: none (written at seal and clean close; open rebuilds it)"
        ),
        TxnFile::Damaged(why) => writeln!(out, "  .txnindex: {why} (open rebuilds it)"),
        TxnFile::Decoded(f) => {
            writeln!(
                out,
                "  .txnindex: {} aborted, bound to {} bytes and next offset {}",
                f.aborted.len(),
                f.log_length,
                f.next_offset
            )?;
            writeln!(out, "    open at base: {}", fmt_open_txns(&f.open_at_base))?;
            for a in &f.aborted {
                writeln!(
                    out,
                    "    aborted producer_id={} first_offset={} marker_offset={} \
                     last_stable_offset={}",
                    a.producer_id.0, a.first_offset, a.last_offset, a.last_stable_offset
                )?;
            }
            writeln!(out, "    open at end: {}", fmt_open_txns(&f.open_at_end))
        }
    }
}
