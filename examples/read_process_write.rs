//! Exactly-once read-process-write, killed and restarted many times.
//!
//! ```text
//! cargo run --release --example read_process_write [-- --records N --kills K --seed S --dir D]
//! ```
//!
//! The driver writes N input records to `input-0`, then runs the processor (this same binary,
//! `processor` mode) as a child process and SIGKILLs it at random moments, K times, then lets a
//! last processor finish. The processor consumes `input-0` read_committed as consumer group
//! `uppercase`, writes each record's value upper-cased to `output-0` and commits the input
//! offsets *in the same transaction* as its output, a few records per transaction.
//!
//! At the end the driver checks, reading `output-0` read_committed, that the output holds every
//! input record's result exactly once and in input order, that the group's committed offset is
//! the end of the input, and it counts what a read_uncommitted reader sees from aborted
//! attempts (which read_committed must hide). It exits non-zero on any anomaly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod common;

use common::{broker_config, flag, kill_loop, say_at_work, seed_of, Res, Rng};
use oncelog::broker::{Broker, Consumer, TopicPartition, TransactionalProducer, TxnError};
use oncelog::BatchBuilder;

const GROUP: &str = "uppercase";
const TXN_ID: &str = "uppercase-processor";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("processor") {
        match args.get(1) {
            Some(dir) => processor(Path::new(dir), seed_of(&args)),
            None => Err("processor needs a directory".into()),
        }
    } else {
        driver(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("read_process_write: {e}");
            ExitCode::FAILURE
        }
    }
}

fn input() -> TopicPartition {
    TopicPartition::new("input", 0).expect("valid name")
}

fn output() -> TopicPartition {
    TopicPartition::new("output", 0).expect("valid name")
}

fn value_of(i: u64) -> String {
    format!("record {i:06} of the input")
}

fn driver(args: &[String]) -> Res<()> {
    let records: u64 = flag(args, "--records").map_or(Ok(2_000), |s| s.parse())?;
    let kills: u32 = flag(args, "--kills").map_or(Ok(40), |s| s.parse())?;
    let seed = seed_of(args);
    let dir =
        PathBuf::from(flag(args, "--dir").unwrap_or_else(|| "oncelog-read-process-write".into()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "seed {seed}, {records} records, {kills} kills, in {}",
        dir.display()
    );

    {
        let broker = Broker::open(&dir, broker_config())?;
        broker.create_topic("input", 1)?;
        broker.create_topic("output", 1)?;
        let log = broker.partition(&input())?;
        let (pid, epoch) = broker.init_producer()?;
        let mut seq = 0;
        for chunk in (0..records).collect::<Vec<_>>().chunks(16) {
            let mut b = BatchBuilder::new().producer(pid, epoch, seq);
            for &i in chunk {
                b.push(0, None, Some(value_of(i).as_bytes()));
            }
            seq += chunk.len() as i32;
            log.append(&b.build()?)?;
        }
        broker.close()?;
    }

    kill_loop("processor", &dir, seed, kills)?;
    check(&dir, records)
}

/// Runs until the input is consumed; transactions of 1..=8 records.
fn processor(dir: &Path, seed: u64) -> Res<()> {
    let mut rng = Rng(seed);
    let broker = Broker::open(dir, broker_config())?;
    let input_end = broker.partition(&input())?.log_end_offset();
    let out = output();
    // Registering fences the killed instance and aborts its open transaction.
    let mut producer = TransactionalProducer::new(&broker, TXN_ID, None)?;
    let mut consumer = Consumer::new(&broker, GROUP, &[input()])?;
    say_at_work()?;
    loop {
        if consumer.positions().iter().all(|(_, o)| *o >= input_end) {
            break;
        }
        let batch_bytes = 64 * (1 + rng.below(8) as usize);
        let records = consumer.poll(batch_bytes)?;
        if records.is_empty() {
            continue;
        }
        producer.begin()?;
        let mut b = BatchBuilder::new();
        for r in &records {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_uppercase();
            b.push(0, None, Some(v.as_bytes()));
        }
        let sent = producer
            .send(&out, b)
            .and_then(|_| producer.send_offsets(GROUP, &consumer.positions()))
            .and_then(|_| producer.commit());
        match sent {
            Ok(_) => {}
            Err(TxnError::Abortable(e)) | Err(TxnError::Retriable(e)) => {
                eprintln!("aborting a transaction: {e}");
                producer.abort()?;
                // Start over from what the group committed.
                consumer = Consumer::new(&broker, GROUP, &[input()])?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    broker.close()?;
    Ok(())
}

fn check(dir: &Path, records: u64) -> Res<()> {
    let broker = Broker::open(dir, broker_config())?;
    let mut committed = Vec::new();
    let mut reader = Consumer::new(&broker, "checker", &[output()])?;
    loop {
        let got = reader.poll(1 << 20)?;
        if got.is_empty() {
            break;
        }
        committed.extend(got.into_iter().map(|r| r.value.unwrap_or_default()));
    }
    let mut all = 0u64;
    let mut raw = Consumer::new(&broker, "checker-raw", &[output()])?.read_uncommitted();
    loop {
        let got = raw.poll(1 << 20)?;
        if got.is_empty() {
            break;
        }
        all += got.len() as u64;
    }
    let offsets = broker.offsets().fetch_committed(GROUP, &input())?;
    let input_end = broker.partition(&input())?.log_end_offset();
    broker.close()?;

    let mut anomalies = Vec::new();
    if committed.len() as u64 != records {
        anomalies.push(format!(
            "output holds {} committed records, expected {records}",
            committed.len()
        ));
    }
    for (i, v) in committed.iter().enumerate() {
        let want = value_of(i as u64).to_uppercase();
        if v.as_slice() != want.as_bytes() {
            anomalies.push(format!(
                "output record {i} is {:?}, expected {want:?} (a lost, doubled or reordered result)",
                String::from_utf8_lossy(v)
            ));
            break;
        }
    }
    if offsets != Some(input_end) {
        anomalies.push(format!(
            "group {GROUP} committed {offsets:?}, expected the input end {}",
            input_end.0
        ));
    }
    println!(
        "output: {} committed records (each input exactly once, in order: {}); a read_uncommitted \
         reader sees {all} records, {} of them from aborted attempts",
        committed.len(),
        anomalies.is_empty(),
        all.saturating_sub(committed.len() as u64)
    );
    if anomalies.is_empty() {
        println!("exactly once: OK");
        Ok(())
    } else {
        Err(anomalies.join("; ").into())
    }
}
