//! A consumer loop over a `Log` that another thread appends to: read from the consumer's
//! position, process every record, advance, and wait a little when caught up. The position is
//! a plain offset the consumer owns (store it with its results to make processing exactly-once;
//! the `Broker`'s read_committed `Consumer` and transactional offsets do that across logs, see
//! the `read_process_write` example).
//!
//! Exits non-zero unless every record is consumed exactly once, in order.
//! `cargo run --release --example consumer_loop [DIR]` (CI runs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::{BatchBuilder, Log, LogConfig, Offset, SyncMode};

const BATCHES: u64 = 20_000;
const PER_BATCH: u64 = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("oncelog-consumer-{}", std::process::id())),
        Into::into,
    );
    let config = LogConfig {
        sync: SyncMode::Os,
        // Small segments: the consumer crosses many rolls.
        ..LogConfig::default().with_segment_bytes(1 << 20)
    };
    let log = Arc::new(Log::open(&dir, config)?);

    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || -> oncelog::Result<()> {
            for i in 0..BATCHES {
                let mut b = BatchBuilder::new();
                for j in 0..PER_BATCH {
                    b.push(0, None, Some(&(i * PER_BATCH + j).to_le_bytes()));
                }
                log.append(&b.build().map_err(oncelog::Error::InvalidBatch)?)?;
            }
            Ok(())
        })
    };

    // The loop: read → process → advance.
    let total = BATCHES * PER_BATCH;
    let mut position = Offset(0);
    let mut consumed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed < total {
        let fetch = log.read(position, 256 << 10)?; // whole batches from `position`
        if fetch.is_empty() {
            if Instant::now() > deadline {
                return Err(format!("stuck at offset {position} after {consumed} records").into());
            }
            std::thread::sleep(Duration::from_millis(1)); // caught up: wait for more
            continue;
        }
        for batch in fetch.batches() {
            let batch = batch?; // checksum verified
            for r in batch.records() {
                let r = r.map_err(oncelog::Error::InvalidBatch)?;
                let offset = batch.base_offset() + r.offset_delta as u64;
                // Skip records below the position (a fetch returns whole batches).
                if offset < position.0 {
                    continue;
                }
                let value = r.value.ok_or("a record without a value")?;
                if value != consumed.to_le_bytes() || offset != consumed {
                    return Err(format!("offset {offset}: expected record {consumed}").into());
                }
                consumed += 1;
            }
            position = Offset(batch.last_offset() + 1);
        }
    }
    writer.join().map_err(|_| "the writer panicked")??;
    if log.log_end_offset() != position {
        return Err("the consumer stopped before the log end".into());
    }
    println!(
        "consumed {consumed} records exactly once, in order, across {} segments",
        log.segments().len()
    );
    Arc::try_unwrap(log)
        .map_err(|_| "log still shared")?
        .close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
