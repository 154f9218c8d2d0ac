//! `oncelog produce --cluster FILE [--acks 0|1|all] [--key-separator SEP] [--timeout-ms N]
//! [--cert F --key F]`: a console producer (like `kafka-console-producer`). Every line of stdin
//! becomes one record, sent by the idempotent [`Producer`] over a [`PartitionClient`], so a
//! batch retried after a lost answer or a leader change is written once.
//!
//! Lines are batched as they are available: a batch takes the lines already read into the
//! input buffer, up to [`MAX_BATCH_RECORDS`] records or [`MAX_BATCH_BYTES`] bytes, and is sent
//! without waiting for more (a typed line goes out at once, a piped file goes out in large
//! batches). The summary (records, batches, last offset) goes to stderr; any batch that fails
//! ends the command with exit status 1 and the error.

use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;
use std::time::Duration;

use oncelog::clock::Clock;
use oncelog::node::PartitionClient;
use oncelog::producer::{Delivery, DeliverySink, Producer};
use oncelog::replica::Acks;
use oncelog::{BatchBuilder, Offset, SystemClock};

use super::cluster::{client_security, load_cluster, Options};
use super::{CliError, CliResult};

/// The most records one batch takes.
pub const MAX_BATCH_RECORDS: usize = 1_000;
/// A batch takes no further line once its keys and values reach this many bytes.
pub const MAX_BATCH_BYTES: usize = 64 << 10;
/// The longest line read (without its terminator): the largest batch a log accepts by default
/// holds about this much. A longer line fails the command instead of growing memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Counts what was acknowledged, for the summary.
#[derive(Debug, Default)]
struct Summary {
    batches: u64,
    records: u64,
    last_offset: Option<Offset>,
}

impl DeliverySink for Summary {
    fn delivered(&mut self, _ticket: u64, delivery: Delivery) {
        self.batches += 1;
        if let Delivery::Written(info) = delivery {
            self.records += info.last_offset.0.saturating_sub(info.base_offset.0) + 1;
            self.last_offset = Some(info.last_offset);
        }
    }
}

impl Summary {
    fn line(&self) -> String {
        let last = self
            .last_offset
            .map_or_else(|| "none".to_string(), |o| o.0.to_string());
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{} in {} acknowledged, last offset {last}",
            plural(self.records, "record", "records"),
            plural(self.batches, "batch", "batches")
        )
    }
}

fn acks(o: &Options) -> Result<Acks, CliError> {
    match o.value("--acks") {
        None | Some("all") | Some("-1") => Ok(Acks::All),
        Some("1") => Ok(Acks::Leader),
        Some("0") => Ok(Acks::None),
        Some(other) => Err(CliError::Usage(format!(
            "--acks: '{other}' is not 0, 1 or all"
        ))),
    }
}

/// `--timeout-ms N` (default 10000), which must be positive.
pub(super) fn timeout(o: &Options) -> Result<Duration, CliError> {
    match o.number::<u64>("--timeout-ms")? {
        Some(0) => Err(CliError::Usage("--timeout-ms must be > 0".into())),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(Duration::from_secs(10)),
    }
}

/// One line of input without its terminator (`\n` or `\r\n`), `None` at the end of input.
fn read_line(input: &mut impl BufRead, number: u64) -> Result<Option<Vec<u8>>, CliError> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 2;
    input
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| CliError::Failed(format!("reading stdin: {e}")))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(CliError::Failed(format!(
            "line {number} is longer than {MAX_LINE_BYTES} bytes"
        )));
    }
    Ok(Some(line))
}

/// Whether a whole line is already in `input`'s buffer (reading it will not block).
fn line_buffered<R: Read>(input: &BufReader<R>) -> bool {
    input.buffer().contains(&b'\n')
}

/// `line` as (key, value): split at the first `sep`, or all value without a separator.
fn split<'a>(
    line: &'a [u8],
    sep: Option<&[u8]>,
    number: u64,
) -> Result<(Option<&'a [u8]>, &'a [u8]), CliError> {
    let Some(sep) = sep else {
        return Ok((None, line));
    };
    let at = line
        .windows(sep.len())
        .position(|w| w == sep)
        .ok_or_else(|| CliError::Failed(format!("line {number} has no key separator")))?;
    let key = line.get(..at).unwrap_or_default();
    let value = line.get(at + sep.len()..).unwrap_or_default();
    Ok((Some(key), value))
}

/// `oncelog produce`: see the module documentation.
pub fn main(args: &[String]) -> CliResult {
    let o = Options::parse("produce", args)?;
    let cluster = load_cluster(o.required("produce", "--cluster")?)?;
    let acks = acks(&o)?;
    let timeout = timeout(&o)?;
    let sep = match o.value("--key-separator") {
        Some("") => return Err(CliError::Usage("--key-separator must not be empty".into())),
        other => other.map(str::as_bytes),
    };
    let security = client_security(&cluster, &o)?;
    let mut client = PartitionClient::new(cluster, acks).with_security(security);
    client.retry_for = timeout;
    client.produce_timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut producer = Producer::with_sink(&client, Summary::default())
        .map_err(|e| CliError::Failed(format!("cannot get a producer id: {e}")))?;
    let mut stdin = BufReader::with_capacity(4 * MAX_BATCH_BYTES, std::io::stdin().lock());
    let outcome = send_lines(&mut producer, &mut stdin, sep);
    let summary = producer.sink().line();
    match outcome {
        Ok(()) => {
            eprintln!("oncelog produce: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(CliError::Failed(format!("{e} ({summary})"))),
    }
}

/// Sends every line of `input` in batches, then waits for every acknowledgement.
fn send_lines<S: DeliverySink, R: Read>(
    producer: &mut Producer<&PartitionClient, S>,
    input: &mut BufReader<R>,
    sep: Option<&[u8]>,
) -> Result<(), CliError> {
    let clock = SystemClock;
    let mut number = 0u64;
    let mut done = false;
    while !done {
        let mut batch = BatchBuilder::with_capacity(MAX_BATCH_BYTES);
        let (mut records, mut bytes) = (0usize, 0usize);
        while records < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
            if records > 0 && !line_buffered(input) {
                break;
            }
            number += 1;
            let Some(line) = read_line(input, number)? else {
                done = true;
                break;
            };
            let (key, value) = split(&line, sep, number)?;
            batch.push(clock.now_ms(), key, Some(value));
            records += 1;
            bytes += line.len();
        }
        if records > 0 {
            producer.enqueue(batch).map_err(|e| {
                CliError::Failed(format!("a batch of lines up to {number} failed: {e}"))
            })?;
        }
    }
    producer
        .flush()
        .map_err(|e| CliError::Failed(format!("waiting for the last batches: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_terminators_and_long_lines_fail() {
        let mut input = std::io::Cursor::new(b"a\r\nb\n\nlast".to_vec());
        let mut lines = Vec::new();
        while let Some(l) = read_line(&mut input, 1).unwrap() {
            lines.push(l);
        }
        assert_eq!(lines, [&b"a"[..], b"b", b"", b"last"]);

        let mut long = vec![b'x'; MAX_LINE_BYTES + 1];
        long.push(b'\n');
        let err = read_line(&mut std::io::Cursor::new(long), 7).unwrap_err();
        assert!(err.to_string().contains("line 7"), "{err}");
        let mut exact = vec![b'x'; MAX_LINE_BYTES];
        exact.extend_from_slice(b"\r\n");
        let line = read_line(&mut std::io::Cursor::new(exact), 1).unwrap();
        assert_eq!(line.map(|l| l.len()), Some(MAX_LINE_BYTES));
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(
            split(b"k::v::w", Some(b"::"), 1).unwrap(),
            (Some(&b"k"[..]), &b"v::w"[..])
        );
        assert_eq!(split(b"v", None, 1).unwrap(), (None, &b"v"[..]));
        assert_eq!(
            split(b":v", Some(b":"), 1).unwrap(),
            (Some(&b""[..]), &b"v"[..])
        );
        let err = split(b"novalue", Some(b"\t"), 3).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
