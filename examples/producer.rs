//! The idempotent `Producer` handle over a `Log`: it numbers batches, keeps up to five in
//! flight, and retries them with the same producer id, epoch and sequence, so a retry of a batch
//! that was in fact written is recognised as a duplicate. Deliveries reach a sink (here a
//! closure) once each, in order.
//!
//! The example then plays a client that never got its last answers: after a crash (the log is
//! dropped without its clean-shutdown steps) it re-sends the last five batches byte for byte,
//! and each is answered as a duplicate with its original offsets. Exits non-zero if any check
//! fails. `cargo run --release --example producer [DIR]` (CI runs it).

use oncelog::producer::{Delivery, Producer};
use oncelog::{BatchBuilder, Log, LogConfig, Offset, RecordBatch, SyncMode};

const BATCHES: u64 = 10_000;

fn records(i: u64) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for j in 0..4 {
        b.push(
            i as i64,
            None,
            Some(format!("batch {i} record {j}").as_bytes()),
        );
    }
    b
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("oncelog-producer-{}", std::process::id())),
        Into::into,
    );
    let config = LogConfig {
        segment_bytes: 4 << 20,
        sync: SyncMode::Os,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config.clone())?;

    // Every delivery, in ticket order: the offsets the log gave each batch.
    let mut offsets: Vec<(u64, u64)> = Vec::new();
    let sink = |ticket: u64, d: Delivery| {
        if let Delivery::Written(info) = d {
            assert_eq!(ticket, offsets.len() as u64, "deliveries in ticket order");
            offsets.push((info.base_offset.0, info.last_offset.0));
        }
    };
    let mut producer = Producer::with_sink(&log, sink)?;
    for i in 0..BATCHES {
        producer.enqueue(records(i))?; // pipelined: at most five unacknowledged
    }
    producer.flush()?; // every batch acknowledged and delivered
    let (id, epoch) = (producer.id(), producer.epoch());
    drop(producer);
    println!("{BATCHES} batches delivered as producer {id:?} epoch {epoch}");
    if offsets.len() as u64 != BATCHES
        || offsets.last() != Some(&(4 * BATCHES - 4, 4 * BATCHES - 1))
    {
        return Err(format!("wrong deliveries: {} of {BATCHES}", offsets.len()).into());
    }

    // A crash: no clean shutdown. Everything `flush` wrote is in the page cache (SyncMode::Os).
    log.flush()?;
    log.simulate_crash();
    let log = Log::open(&dir, config)?;
    println!("reopened: {:?}", log.recovery_report());

    // The client resends its last five batches, byte for byte (same id, epoch, sequences).
    let end = log.log_end_offset();
    for i in BATCHES - 5..BATCHES {
        let retry: RecordBatch = records(i).producer(id, epoch, (4 * i) as i32).build()?;
        let info = log.append(&retry)?;
        let original = offsets[i as usize];
        if !info.duplicate || (info.base_offset.0, info.last_offset.0) != original {
            return Err(
                format!("retry of batch {i} not answered as its original {original:?}").into(),
            );
        }
    }
    if log.log_end_offset() != end {
        return Err("a retry was written twice".into());
    }
    // Read everything back: every record once, in order.
    let mut next = Offset(0);
    let mut seen = 0u64;
    while next < end {
        for batch in log.read(next, 1 << 20)?.batches() {
            let batch = batch?;
            for r in batch.records() {
                let r = r.map_err(oncelog::Error::InvalidBatch)?;
                let want = format!("batch {} record {}", seen / 4, seen % 4);
                if r.value != Some(want.as_bytes()) {
                    return Err(format!("record {seen} is wrong").into());
                }
                seen += 1;
            }
            next = Offset(batch.last_offset() + 1);
        }
    }
    println!("5 retries answered as duplicates; {seen} records read back once, in order");
    log.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
