//! `oncelog demo [DIR]`: write a log, close and reopen it cleanly, crash a writer process with
//! SIGKILL, recover, and check that every acknowledged record came back intact.
//!
//! Every record's value starts with its own offset (20 digits), so reading the log back checks
//! not only checksums and the offset chain but that each record sits where it was written.
//! The crash is real: the demo re-executes itself (`oncelog __demo-child DIR`) as a writer that
//! prints the offset it has flushed after every `flush()`, and the parent kills it with SIGKILL
//! at an arbitrary point of its append loop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oncelog::{BatchBuilder, Log, LogConfig, Offset, RecordBatch, RecoveryReport, SyncMode};

use super::{human_bytes, parse_args, CliError, CliResult};

/// The hidden subcommand of the crashing writer.
pub const CHILD_COMMAND: &str = "__demo-child";

const DEFAULT_DIR: &str = "./oncelog-demo";
const SEGMENT_BYTES: u64 = 8 << 20;
const BATCHES: u64 = 20_000;
const RECORDS_PER_BATCH: u64 = 16;
const VALUE_BYTES: usize = 100;
const KEYS: u64 = 8;
/// The child flushes (and reports) after this many batches.
const CHILD_FLUSH_EVERY: u64 = 256;
/// The parent kills the child after this many flush reports.
const CHILD_REPORTS: usize = 10;
/// The child gives up on its own after this long (if the parent never kills it).
const CHILD_MAX_RUN: Duration = Duration::from_secs(120);

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        sync: SyncMode::Os,
        ..LogConfig::default()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The batch whose records will land at offsets `base..base + RECORDS_PER_BATCH`: key
/// `user-N`, value = the record's offset (20 digits), the key, and filler up to `VALUE_BYTES`.
fn make_batch(base: u64, ts: i64) -> Result<RecordBatch, CliError> {
    make_batch_from(
        base,
        ts,
        BatchBuilder::with_capacity(RECORDS_PER_BATCH as usize * (VALUE_BYTES + 32)),
    )
}

/// Like [`make_batch`], for an idempotent producer: `(id, epoch, first sequence)`.
fn make_idempotent_batch(
    base: u64,
    ts: i64,
    producer: (oncelog::ProducerId, oncelog::ProducerEpoch, i32),
) -> Result<RecordBatch, CliError> {
    let b = BatchBuilder::with_capacity(RECORDS_PER_BATCH as usize * (VALUE_BYTES + 32))
        .producer(producer.0, producer.1, producer.2);
    make_batch_from(base, ts, b)
}

fn make_batch_from(base: u64, ts: i64, mut b: BatchBuilder) -> Result<RecordBatch, CliError> {
    for i in 0..RECORDS_PER_BATCH {
        let offset = base + i;
        let key = format!("user-{}", offset.wrapping_mul(2_654_435_761) % KEYS);
        let mut value = format!("{offset:020} {key} ").into_bytes();
        let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while value.len() < VALUE_BYTES {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value.push(b'a' + (x % 26) as u8);
        }
        b.push(ts, Some(key.as_bytes()), Some(&value));
    }
    b.build()
        .map_err(|e| CliError::Failed(format!("building a batch: {e}")))
}

/// Appends one generated batch at the log end and checks it landed there.
fn append_one(log: &Log) -> Result<u64, CliError> {
    let leo = log.log_end_offset().0;
    let info = log.append(&make_batch(leo, now_ms())?)?;
    if info.base_offset != Offset(leo) {
        return Err(CliError::Failed(format!(
            "batch built for offset {leo} landed at {}",
            info.base_offset
        )));
    }
    Ok(info.last_offset.0 + 1)
}

fn describe(r: &RecoveryReport) -> String {
    let mut s = format!(
        "clean_shutdown={} checkpoint_recovery_point={} segments={} segments_scanned={} \
         bytes_scanned={} indexes_rebuilt={} indexes_deferred={} segments_deleted={}",
        r.clean_shutdown,
        r.checkpoint_recovery_point,
        r.segments,
        r.segments_scanned,
        r.bytes_scanned,
        r.indexes_rebuilt,
        r.indexes_deferred,
        r.segments_deleted
    );
    match r.truncated_at {
        Some(at) => s.push_str(&format!(
            " truncated_at={at} bytes_truncated={}",
            r.bytes_truncated
        )),
        None => s.push_str(" truncated_at=none"),
    }
    if let Some(c) = &r.corruption {
        s.push_str(&format!(" corruption={c:?}"));
    }
    s
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Removes a previous demo directory, refusing to touch one with files oncelog did not make.
fn clear_dir(dir: &Path) -> Result<(), CliError> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = oncelog::log::dir_files::describe_file(&name).is_some();
        if !ours || !entry.file_type()?.is_file() {
            return Err(CliError::Failed(format!(
                "{} holds {name}, which oncelog did not write; refusing to delete it \
                 (pass an empty or new directory)",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

/// Reads every record back: checksums (`Fetch::batches`), record encoding, contiguous offsets,
/// and each value naming its own offset. Returns the number of records checked.
fn read_back(log: &Log) -> Result<u64, String> {
    let mut next = log.log_start_offset().0;
    let end = log.log_end_offset().0;
    let mut records = 0u64;
    while next < end {
        let fetch = log.read(Offset(next), 1 << 20).map_err(|e| e.to_string())?;
        if fetch.is_empty() {
            return Err(format!(
                "empty read at offset {next} below the log end {end}"
            ));
        }
        for batch in fetch.batches() {
            let batch = batch.map_err(|e| e.to_string())?;
            if batch.base_offset() != next {
                return Err(format!(
                    "batch starts at {} where offset {next} was expected",
                    batch.base_offset()
                ));
            }
            batch
                .verify_records()
                .map_err(|e| format!("batch at offset {next}: {e}"))?;
            for rec in batch.records() {
                let rec = rec.map_err(|e| format!("batch at offset {next}: {e}"))?;
                let offset = batch.base_offset() + rec.offset_delta as u64;
                let value = rec.value.unwrap_or_default();
                let named = value.get(..20).and_then(|d| std::str::from_utf8(d).ok());
                if named.and_then(|d| d.parse::<u64>().ok()) != Some(offset) {
                    return Err(format!(
                        "record at offset {offset} holds the value written for offset {}",
                        named.unwrap_or("?")
                    ));
                }
                if value.len() != VALUE_BYTES {
                    return Err(format!(
                        "record at offset {offset}: value has {} bytes",
                        value.len()
                    ));
                }
                records += 1;
            }
            next = batch.last_offset() + 1;
        }
    }
    Ok(records)
}

pub fn main(args: &[String]) -> CliResult {
    let (_, positional) = parse_args(args, &[])?;
    let dir = match positional.as_slice() {
        [] => PathBuf::from(DEFAULT_DIR),
        [d] => PathBuf::from(d),
        _ => return Err(CliError::Usage("demo takes at most one DIR".into())),
    };
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();

    println!("== oncelog demo in {}", dir.display());
    clear_dir(&dir)?;

    // 1. Open with realistic settings.
    let t = Instant::now();
    let log = Log::open(&dir, config())?;
    println!(
        "[1] opened a new log in {} (segment_bytes={}, sync=Os: no fsync on the append path)",
        secs(t.elapsed()),
        human_bytes(SEGMENT_BYTES)
    );

    // 2. A realistic workload.
    // Every batch comes from one idempotent producer (id, epoch, sequence), as with Kafka's
    // enable.idempotence=true; the last five are kept to retry after a restart.
    let (pid, epoch) = log.init_producer()?;
    let mut sent: std::collections::VecDeque<(RecordBatch, u64)> = Default::default();
    let t = Instant::now();
    let mut bytes = 0u64;
    for n in 0..BATCHES {
        let leo = log.log_end_offset().0;
        let seq = (n * RECORDS_PER_BATCH) as i32;
        let batch = make_idempotent_batch(leo, now_ms(), (pid, epoch, seq))?;
        bytes += batch.len() as u64;
        let info = log.append(&batch)?;
        sent.push_back((batch, leo));
        if sent.len() > 5 {
            sent.pop_front();
        }
        if info.base_offset != Offset(leo) {
            return Err(CliError::Failed(format!(
                "batch built for offset {leo} landed at {}",
                info.base_offset
            )));
        }
    }
    let took = t.elapsed().as_secs_f64().max(1e-9);
    let written = log.log_end_offset().0;
    println!(
        "[2] appended {BATCHES} batches x {RECORDS_PER_BATCH} records ({VALUE_BYTES}-byte values, \
         {KEYS} keys): {written} records, {} in {took:.3} s = {:.0} batches/s, {:.0} records/s, \
         {:.1} MiB/s; {} segments",
        human_bytes(bytes),
        BATCHES as f64 / took,
        written as f64 / took,
        bytes as f64 / took / f64::from(1 << 20),
        log.segments().len()
    );

    // 3. Clean close and reopen: no scan.
    let t = Instant::now();
    log.close()?;
    let close_took = t.elapsed();
    let t = Instant::now();
    let log = Log::open(&dir, config())?;
    let reopen_took = t.elapsed();
    let report = log.recovery_report().clone();
    println!(
        "[3] closed cleanly in {}, reopened in {}",
        secs(close_took),
        secs(reopen_took)
    );
    println!("    recovery report: {}", describe(&report));
    if !report.clean_shutdown || report.segments_scanned != 0 {
        failures.push(format!(
            "reopen after a clean close should need no scan: {report:?}"
        ));
    }
    if log.log_end_offset().0 != written {
        failures.push(format!(
            "log end after clean reopen is {}, expected {written}",
            log.log_end_offset()
        ));
    }
    // Retry the producer's last five batches, as a client whose responses were lost would:
    // each must be answered with its original offsets, and nothing may be written twice.
    // (Kafka's snapshot keeps only the newest batch per producer, so after a restart it
    // rejects the 2nd-5th newest retries and the client may write them again.)
    let mut dups = 0;
    for (batch, base) in &sent {
        let info = log.append(batch)?;
        if info.duplicate && info.base_offset == Offset(*base) {
            dups += 1;
        } else {
            failures.push(format!(
                "retry of the batch at {base} after restart: {info:?}"
            ));
        }
    }
    println!(
        "    producer {} retried its last {} batches after the restart: {dups} answered as duplicates with their original offsets, log end still {}",
        pid.0,
        sent.len(),
        log.log_end_offset()
    );
    if log.log_end_offset().0 != written {
        failures.push("a retry after restart was written twice".into());
    }
    log.close()?;

    // 4. A writer process, killed with SIGKILL.
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg(CHILD_COMMAND)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Failed("child has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut flushed: Vec<u64> = Vec::new();
    while flushed.len() < CHILD_REPORTS {
        match lines.next() {
            Some(Ok(line)) => match line.strip_prefix("flushed ").map(str::parse::<u64>) {
                Some(Ok(o)) => flushed.push(o),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CliError::Failed(format!(
                        "unexpected child output: {line:?}"
                    )));
                }
            },
            _ => {
                let status = child.wait()?;
                return Err(CliError::Failed(format!(
                    "the writer process exited ({status}) before it was killed"
                )));
            }
        }
    }
    // Let it run on a little (0-19 ms) so the kill lands somewhere in the append loop.
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 20);
    std::thread::sleep(Duration::from_millis(u64::from(jitter)));
    child.kill()?; // SIGKILL on Unix
    let status = child.wait()?;
    let last_flushed = flushed.last().copied().unwrap_or(written);
    println!(
        "[4] writer process {pid} reported flushed log end offsets {}; killed it with SIGKILL \
         {jitter} ms after the last report ({status})",
        flushed
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 5. Recover and check.
    let t = Instant::now();
    let log = Log::open(&dir, config())?;
    let recover_took = t.elapsed();
    let report = log.recovery_report().clone();
    let recovered = log.log_end_offset().0;
    println!("[5] reopened after the crash in {}", secs(recover_took));
    println!("    recovery report: {}", describe(&report));
    match report.truncated_at {
        Some(at) if report.bytes_truncated > 0 => println!(
            "    the kill tore a batch: recovery cut {} bytes from offset {at} on",
            report.bytes_truncated
        ),
        // The library reports the end of the scan as `truncated_at` even when it stopped at the
        // preallocated zeros and dropped nothing.
        Some(at) => println!(
            "    no torn batch: the scan ended at offset {at} on preallocated zeros, nothing was cut"
        ),
        None => println!("    no torn batch: nothing was cut"),
    }
    if report.clean_shutdown {
        failures.push("the killed writer left a clean-shutdown marker".into());
    }
    if recovered >= last_flushed {
        println!(
            "    recovered log end offset {recovered} >= {last_flushed}, the last offset the \
             writer reported flushed: OK ({} records past it survived too)",
            recovered - last_flushed
        );
    } else {
        failures.push(format!(
            "recovered log end {recovered} < {last_flushed} flushed by the writer: acknowledged \
             data lost"
        ));
    }
    log.check_invariants();
    let t = Instant::now();
    let verified = match read_back(&log) {
        Ok(n) => {
            println!(
                "    read back {n} records in {}: checksums valid, offsets contiguous \
                 {}..{}, every value names its own offset",
                secs(t.elapsed()),
                log.log_start_offset(),
                recovered.saturating_sub(1)
            );
            n
        }
        Err(e) => {
            failures.push(format!("read back failed: {e}"));
            0
        }
    };
    if verified != recovered - log.log_start_offset().0 {
        failures.push(format!(
            "verified {verified} records of {recovered} recovered"
        ));
    }
    log.close()?;

    println!("[6] oncelog verify {}:", dir.display());
    let mut report_text = Vec::new();
    let outcome = super::verify::verify(&dir, &mut report_text)?;
    for line in String::from_utf8_lossy(&report_text).lines() {
        println!("    {line}");
    }
    if !outcome.ok() {
        failures.push("oncelog verify found errors".into());
    }
    if outcome.summary.records != verified {
        failures.push(format!(
            "oncelog verify counted {} records, the read-back {verified}",
            outcome.summary.records
        ));
    }

    println!(
        "summary: written {written} records + the writer process's >= {} acknowledged \
         (flushed) = >= {last_flushed} / recovered {recovered} / verified {verified} \
         in {}",
        last_flushed - written,
        secs(started.elapsed())
    );
    if failures.is_empty() {
        println!("demo: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        Err(CliError::Failed(format!(
            "demo: {} checks failed",
            failures.len()
        )))
    }
}

/// The writer the demo kills: appends forever, printing `flushed <offset>` after every flush.
pub fn child_main(args: &[String]) -> CliResult {
    let [dir] = args else {
        return Err(CliError::Usage(format!("{CHILD_COMMAND} DIR")));
    };
    let log = Log::open(dir, config())?;
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = 0u64;
    while started.elapsed() < CHILD_MAX_RUN {
        append_one(&log)?;
        n += 1;
        if n.is_multiple_of(CHILD_FLUSH_EVERY) {
            log.flush()?;
            // The parent gone (broken pipe) ends the writer.
            writeln!(out, "flushed {}", log.recovery_point())?;
            out.flush()?;
        }
    }
    log.close()?;
    Ok(ExitCode::SUCCESS)
}
