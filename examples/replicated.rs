//! A replicated partition in one process: three replicas (a thread each, `ThreadCluster`), an
//! idempotent `Producer` with acks=all, and the leader killed in the middle of the stream (as
//! kill -9 would: no clean shutdown). The controller elects a new leader from the in-sync
//! replicas; the producer's retries are answered as duplicates where they were written. Every
//! acknowledged record is then read back exactly once, from the new leader, below the
//! high-water mark. The same replica runs across machines as `oncelog node` (docs/replication.md).
//!
//! Exits non-zero if a check fails. `cargo run --release --example replicated [DIR]` (CI runs it).

use std::time::Duration;

use oncelog::cluster::{ClusterOptions, ThreadCluster};
use oncelog::producer::Producer;
use oncelog::replica::Acks;
use oncelog::replication::LeaderConfig;
use oncelog::{BatchBuilder, LogConfig, Offset, SyncMode};

const BATCHES: u64 = 600;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("oncelog-replicated-{}", std::process::id())),
        Into::into,
    );
    let options = ClusterOptions {
        log: LogConfig {
            sync: SyncMode::Os,
            ..LogConfig::default().with_segment_bytes(1 << 20)
        },
        leader: LeaderConfig {
            min_insync_replicas: 2, // acks=all needs two copies
            replica_lag_time_max_ms: 10_000,
        },
        request_timeout_ms: 30_000,
        ..ClusterOptions::default()
    };
    let cluster = ThreadCluster::start(&dir, 3, options)?;
    let client = cluster
        .producer_handle()
        .with_acks(Acks::All)
        .with_timeout(Duration::from_secs(60));
    let mut producer = Producer::with_sink(client, Vec::new())?;
    let first_leader = cluster.leader().ok_or("no leader")?;
    for i in 0..BATCHES {
        if i == BATCHES / 2 {
            let after = cluster.kill_replica(first_leader)?; // a crash, not a clean stop
            println!("killed leader {first_leader}; controller says {after:?}");
        }
        let mut b = BatchBuilder::new();
        b.push(i as i64, None, Some(format!("record {i}").as_bytes()));
        producer.send(b)?; // returns when the in-sync replicas have it
    }
    let delivered = producer.acknowledged();
    let leader = cluster.leader().ok_or("no leader after the kill")?;
    if delivered != BATCHES || leader == first_leader {
        return Err(format!("{delivered} of {BATCHES} delivered; leader {leader}").into());
    }

    // Read back from the new leader, below the high-water mark: each record once, in order.
    let mut next = Offset(0);
    let mut seen = 0u64;
    while seen < BATCHES {
        let fetch = cluster.read_committed(next, 1 << 20)?;
        if fetch.is_empty() {
            return Err(format!("only {seen} of {BATCHES} records are committed").into());
        }
        for batch in fetch.batches() {
            let batch = batch?;
            for r in batch.records() {
                let r = r.map_err(oncelog::Error::InvalidBatch)?;
                if r.value != Some(format!("record {seen}").as_bytes()) {
                    return Err(format!("record {seen} is missing, doubled or out of order").into());
                }
                seen += 1;
            }
            next = Offset(batch.last_offset() + 1);
        }
    }
    println!(
        "{seen} acks=all records read back once, in order, from the new leader {leader} \
         ({} client retries)",
        producer.target().retries()
    );
    drop(producer);
    cluster.shutdown()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
