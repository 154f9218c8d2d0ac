//! `oncelog consume --cluster FILE [--from-beginning | --offset N] [--max-records N]
//! [--follow] [--print-offset] [--print-key] [--timeout-ms N] [--cert F --key F]`: a console
//! consumer (like `kafka-console-consumer`). It reads the committed records (below the
//! high-water mark) from the leader, through a [`PartitionClient`] that follows leader
//! changes, and prints each record's value on a line of its own (`null` for a null value),
//! preceded by its offset and key (`null` for none), tab-separated, when asked.
//!
//! It starts at the log start offset (`--from-beginning`, the default, like kcat) or at
//! `--offset N`. Without `--follow` it stops at the high-water mark it last saw; with
//! `--follow` it polls for new records until SIGINT or SIGTERM. Transaction markers are
//! skipped; records of aborted transactions are printed (the reads are not read-committed).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use oncelog::io::signals;
use oncelog::node::PartitionClient;
use oncelog::replica::Acks;
use oncelog::{BatchView, Error, Offset};

use super::cluster::{catch_termination, client_security, load_cluster, Options};
use super::{CliError, CliResult};

/// The most bytes asked of the leader per read (a node may answer less; a larger batch still
/// comes whole).
const READ_BYTES: u32 = 1 << 20;
/// How long `--follow` waits between reads that found nothing new.
const POLL: Duration = Duration::from_millis(100);

/// What to print of each record.
#[derive(Debug, Clone, Copy)]
struct Print {
    offset: bool,
    key: bool,
}

/// `oncelog consume`: see the module documentation.
pub fn main(args: &[String]) -> CliResult {
    let o = Options::parse("consume", args)?;
    let cluster = load_cluster(o.required("consume", "--cluster")?)?;
    let offset = o.number::<u64>("--offset")?;
    let from_beginning = o.switch("--from-beginning");
    if offset.is_some() && from_beginning {
        return Err(CliError::Usage(
            "--offset and --from-beginning exclude each other".into(),
        ));
    }
    let max = o.number::<u64>("--max-records")?;
    let follow = o.switch("--follow");
    if follow {
        catch_termination()?;
    }
    let print = Print {
        offset: o.switch("--print-offset"),
        key: o.switch("--print-key"),
    };
    let security = client_security(&cluster, &o)?;
    let mut client = PartitionClient::new(cluster, Acks::All).with_security(security);
    client.retry_for = super::produce::timeout(&o)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut next = Offset(offset.unwrap_or(0));
    let mut left = max.unwrap_or(u64::MAX);
    while left > 0 {
        if follow && signals::termination_requested().is_some() {
            break;
        }
        let r = match client.read(next, READ_BYTES) {
            Ok(r) => r,
            // The log start moved past 0 (retention): begin where the log begins.
            Err(Error::OffsetOutOfRange {
                requested,
                log_start,
                ..
            }) if offset.is_none() && requested < log_start => {
                next = log_start;
                continue;
            }
            Err(e) => return Err(CliError::Failed(format!("reading at offset {next}: {e}"))),
        };
        let before = next;
        let mut rest = r.bytes.as_slice();
        while !rest.is_empty() && left > 0 {
            let (view, tail) = BatchView::parse(rest).map_err(|e| {
                CliError::Failed(format!("the leader sent a bad batch at offset {next}: {e}"))
            })?;
            print_batch(&mut out, &view, next, &mut left, print)?;
            next = Offset(view.last_offset().saturating_add(1).max(next.0));
            rest = tail;
        }
        out.flush()?;
        if next == before {
            // Nothing new: the end of the committed records.
            if !follow {
                break;
            }
            std::thread::sleep(POLL);
        } else if next >= r.high_watermark && !follow {
            break;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the records of `view` at or after `from`, at most `left` of them (counted down).
/// Control batches (transaction markers) print nothing.
fn print_batch(
    out: &mut impl Write,
    view: &BatchView<'_>,
    from: Offset,
    left: &mut u64,
    print: Print,
) -> Result<(), CliError> {
    if view.header().is_control() {
        return Ok(());
    }
    for rec in view.records() {
        if *left == 0 {
            break;
        }
        let rec = rec.map_err(|e| {
            CliError::Failed(format!(
                "a bad record in the batch at offset {}: {e}",
                view.base_offset()
            ))
        })?;
        let offset = view
            .base_offset()
            .saturating_add(u64::try_from(rec.offset_delta).unwrap_or(0));
        if offset < from.0 {
            continue;
        }
        if print.offset {
            write!(out, "{offset}\t")?;
        }
        if print.key {
            out.write_all(rec.key.unwrap_or(b"null"))?;
            out.write_all(b"\t")?;
        }
        out.write_all(rec.value.unwrap_or(b"null"))?;
        out.write_all(b"\n")?;
        *left -= 1;
    }
    Ok(())
}
