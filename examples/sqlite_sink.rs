//! An exactly-once sink into SQLite, killed and restarted many times.
//!
//! ```text
//! cargo run --release --example sqlite_sink [-- --transactions N --kills K --seed S --dir D]
//! ```
//!
//! The driver writes N transactions of records to the two partitions of topic `events` with a
//! `TransactionalProducer`, aborting every fourth one, so a read_committed reader must skip
//! records that are in the log. Then it runs the sink (this binary, `sink` mode) as a child and
//! SIGKILLs it at random moments, K times, and lets a last sink finish.
//!
//! The sink reads read_committed and writes each record into an SQLite table **and** its
//! partitions' next offsets into another table of the same database, in one SQLite transaction.
//! On restart it resumes from the offsets in SQLite, never from the log's committed offsets:
//! the database alone says what it holds. At the end the table must hold every committed record
//! exactly once and nothing of an aborted transaction. The process exits non-zero otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod common;

use common::{broker_config, flag, kill_loop, say_at_work, seed_of, Res, Rng};
use oncelog::broker::{Broker, Consumer, TopicPartition, TransactionalProducer};
use oncelog::{BatchBuilder, Offset};
use rusqlite::{params, Connection};

const GROUP: &str = "sqlite-sink";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("sink") {
        match args.get(1) {
            Some(dir) => sink(Path::new(dir), seed_of(&args)),
            None => Err("sink needs a directory".into()),
        }
    } else {
        driver(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sqlite_sink: {e}");
            ExitCode::FAILURE
        }
    }
}

fn partitions() -> Vec<TopicPartition> {
    (0..2)
        .map(|p| TopicPartition::new("events", p).expect("valid name"))
        .collect()
}

fn driver(args: &[String]) -> Res<()> {
    let transactions: u64 = flag(args, "--transactions").map_or(Ok(400), |s| s.parse())?;
    let kills: u32 = flag(args, "--kills").map_or(Ok(40), |s| s.parse())?;
    let seed = seed_of(args);
    let dir = PathBuf::from(flag(args, "--dir").unwrap_or_else(|| "oncelog-sqlite-sink".into()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "seed {seed}, {transactions} transactions, {kills} kills, in {}",
        dir.display()
    );

    let mut rng = Rng(seed);
    let mut expected = BTreeSet::new();
    let mut aborted = 0u64;
    {
        let broker = Broker::open(&dir, broker_config())?;
        let tps = broker.create_topic("events", 2)?;
        let mut producer = TransactionalProducer::new(&broker, "event-source", None)?;
        for t in 0..transactions {
            producer.begin()?;
            let mut values = Vec::new();
            for tp in &tps {
                let n = 1 + rng.below(4);
                let mut b = BatchBuilder::new();
                for i in 0..n {
                    let v = format!("txn {t} {tp} #{i}");
                    b.push(0, None, Some(v.as_bytes()));
                    values.push(v);
                }
                producer.send(tp, b)?;
            }
            if t % 4 == 3 {
                producer.abort()?;
                aborted += values.len() as u64;
            } else {
                producer.commit()?;
                expected.extend(values);
            }
        }
        drop(producer);
        broker.close()?;
    }

    kill_loop("sink", &dir, seed, kills)?;
    check(&dir, &expected, aborted)
}

fn open_db(dir: &Path) -> Res<Connection> {
    let db = Connection::open(dir.join("sink.sqlite"))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS events (topic TEXT, partition INTEGER, offset INTEGER, value TEXT);
         CREATE TABLE IF NOT EXISTS offsets (topic TEXT, partition INTEGER, next_offset INTEGER,
                                             PRIMARY KEY (topic, partition));",
    )?;
    Ok(db)
}

/// Copies committed records into SQLite until every partition's position reaches its end.
fn sink(dir: &Path, seed: u64) -> Res<()> {
    let mut rng = Rng(seed);
    let broker = Broker::open(dir, broker_config())?;
    let mut db = open_db(dir)?;
    let tps = partitions();
    let mut consumer = Consumer::new(&broker, GROUP, &tps)?;
    // Resume from the database's offsets: they are committed with the rows they cover.
    for tp in &tps {
        let stored: Option<i64> = db
            .query_row(
                "SELECT next_offset FROM offsets WHERE topic = ?1 AND partition = ?2",
                params![tp.topic(), tp.partition()],
                |r| r.get(0),
            )
            .ok();
        let start = match stored {
            Some(o) => Offset(u64::try_from(o)?),
            None => broker.partition(tp)?.log_start_offset(),
        };
        consumer.seek(tp, start)?;
    }
    let ends: Vec<(TopicPartition, Offset)> = tps
        .iter()
        .map(|tp| Ok((tp.clone(), broker.partition(tp)?.log_end_offset())))
        .collect::<Res<_>>()?;
    say_at_work()?;
    loop {
        let done = consumer
            .positions()
            .iter()
            .zip(&ends)
            .all(|((_, at), (_, end))| at >= end);
        if done {
            break;
        }
        let records = consumer.poll(128 * (1 + rng.below(4) as usize))?;
        let tx = db.transaction()?;
        for r in &records {
            tx.execute(
                "INSERT INTO events (topic, partition, offset, value) VALUES (?1, ?2, ?3, ?4)",
                params![
                    r.partition.topic(),
                    r.partition.partition(),
                    i64::try_from(r.offset)?,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                ],
            )?;
        }
        for (tp, next) in consumer.positions() {
            tx.execute(
                "INSERT INTO offsets (topic, partition, next_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                params![tp.topic(), tp.partition(), i64::try_from(next.0)?],
            )?;
        }
        tx.commit()?;
    }
    broker.close()?;
    Ok(())
}

fn check(dir: &Path, expected: &BTreeSet<String>, aborted: u64) -> Res<()> {
    let db = open_db(dir)?;
    let mut stmt = db.prepare("SELECT value FROM events")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    let distinct: BTreeSet<String> = rows.iter().cloned().collect();
    let doubled = rows.len() - distinct.len();
    let missing = expected.difference(&distinct).count();
    let extra = distinct.difference(expected).count();
    println!(
        "table: {} rows, {} expected (committed); {doubled} doubled, {missing} missing, {extra} \
         not committed ({aborted} aborted records are in the log)",
        rows.len(),
        expected.len()
    );
    if doubled == 0 && missing == 0 && extra == 0 {
        println!("exactly once: OK");
        Ok(())
    } else {
        Err("the table does not hold each committed record exactly once".into())
    }
}
