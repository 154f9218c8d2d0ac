//! `oncelog demo-cluster [DIR]`: a three-replica partition (the in-process `ThreadCluster`)
//! surviving a leader kill.
//!
//! An idempotent producer streams acks=all batches; the leader is killed (as kill -9 would: no
//! checkpoint, no clean shutdown) in the middle of the stream; the controller elects a new leader
//! from the ISR; the producer's client retries what was in flight against it. Then the producer's
//! last five batches are sent again as a retry after a lost answer would be: each comes back as a
//! duplicate with its original offsets. The old leader restarts, truncates anything the others
//! lack, catches up and rejoins the ISR. Finally a consumer reads the partition: every batch
//! exactly once, in the producer's order, at the offsets its acknowledgement named, and the three
//! replicas hold the same bytes below the high-water mark.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncelog::cluster::{ClusterClient, ClusterOptions, ThreadCluster};
use oncelog::producer::{Delivery, ProduceTarget, Producer};
use oncelog::replica::Acks;
use oncelog::replication::{LeaderConfig, ReplicaId};
use oncelog::{
    AppendInfo, BatchBuilder, LogConfig, Offset, ProducerEpoch, ProducerId, RecordBatch, SyncMode,
};
use parking_lot::Mutex;

use super::{parse_args, CliError, CliResult};

const DEFAULT_DIR: &str = "./oncelog-demo-cluster";
const BATCHES: u64 = 3_000;
const RECORDS_PER_BATCH: u64 = 16;
const VALUE_BYTES: usize = 100;
/// The leader is killed once this many batches are acknowledged.
const KILL_AFTER: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(30);

fn options() -> ClusterOptions {
    ClusterOptions {
        log: LogConfig {
            segment_bytes: 8 << 20,
            prefault_bytes: 0,
            sync: SyncMode::Os,
            ..LogConfig::default()
        },
        leader: LeaderConfig {
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 10_000,
        },
        fetch_wait_ms: 100,
        tick_ms: 10,
        request_timeout_ms: 10_000,
        ..ClusterOptions::default()
    }
}

/// `BATCHES` x `RECORDS_PER_BATCH` records; record `j` of batch `i` has the value
/// `"{i:06}:{j:02} "` padded to `VALUE_BYTES`.
fn value(batch: u64, record: u64) -> Vec<u8> {
    let mut v = format!("{batch:06}:{record:02} ").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

fn records(batch: u64) -> BatchBuilder {
    let mut b = BatchBuilder::with_capacity(RECORDS_PER_BATCH as usize * (VALUE_BYTES + 32));
    for j in 0..RECORDS_PER_BATCH {
        let key = format!("user-{}", (batch * RECORDS_PER_BATCH + j) % 8);
        b.push(
            1_700_000_000_000 + batch as i64,
            Some(key.as_bytes()),
            Some(&value(batch, j)),
        );
    }
    b
}

/// The producer's target: the cluster client, keeping the last five batches sent with their
/// answers (to retry them later).
#[derive(Debug)]
struct Recording {
    client: ClusterClient,
    last: Mutex<VecDeque<(RecordBatch, AppendInfo)>>,
}

impl ProduceTarget for Recording {
    fn produce(&self, batch: &RecordBatch) -> oncelog::Result<AppendInfo> {
        let info = self.client.produce(batch)?;
        let mut last = self.last.lock();
        last.push_back((batch.clone(), info));
        if last.len() > 5 {
            last.pop_front();
        }
        Ok(info)
    }
    fn init_producer_id(&self) -> oncelog::Result<(ProducerId, ProducerEpoch)> {
        self.client.init_producer_id()
    }
    fn bump_producer_epoch(&self, id: ProducerId) -> oncelog::Result<(ProducerId, ProducerEpoch)> {
        self.client.bump_producer_epoch(id)
    }
}

/// Removes a previous demo directory: only `replica-N` directories may be in it.
fn clear_dir(dir: &Path) -> Result<(), CliError> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix("replica-")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !ours || !entry.file_type()?.is_dir() {
            return Err(CliError::Failed(format!(
                "{} holds {name}, which demo-cluster did not write; refusing to delete it \
                 (pass an empty or new directory)",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<(), CliError> {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(CliError::Failed(format!("timed out waiting for {what}")))
}

/// A committed batch as the consumer sees it: its base offset and its records' values.
type ConsumedBatch = (u64, Vec<Vec<u8>>);

/// Every committed batch on replica `id`.
fn read_committed(cluster: &ThreadCluster, id: ReplicaId) -> Result<Vec<ConsumedBatch>, CliError> {
    let mut out = Vec::new();
    let mut next = Offset(0);
    loop {
        let fetch = cluster.read_committed_from(id, next, 1 << 20)?;
        if fetch.is_empty() {
            return Ok(out);
        }
        for batch in fetch.batches() {
            let batch = batch?;
            let mut values = Vec::new();
            for rec in batch.records() {
                let rec = rec.map_err(oncelog::Error::InvalidBatch)?;
                values.push(rec.value.unwrap_or_default().to_vec());
            }
            out.push((batch.base_offset(), values));
            next = Offset(batch.last_offset() + 1);
        }
    }
}

/// The raw bytes of replica `id`'s log below `limit`.
fn log_bytes(cluster: &ThreadCluster, id: ReplicaId, limit: Offset) -> Result<Vec<u8>, CliError> {
    let bytes = cluster.with_replica(id, move |r| -> oncelog::Result<Vec<u8>> {
        let log = r.log();
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while next < limit {
            let fetch = log.read_bounded(next, 1 << 20, limit)?;
            if fetch.is_empty() {
                break;
            }
            for b in fetch.batches() {
                next = Offset(b?.last_offset() + 1);
            }
            out.extend_from_slice(fetch.bytes());
        }
        Ok(out)
    })??;
    Ok(bytes)
}

pub fn main(args: &[String]) -> CliResult {
    let (_, positional) = parse_args(args, &[])?;
    let dir = match positional.as_slice() {
        [] => PathBuf::from(DEFAULT_DIR),
        [d] => PathBuf::from(d),
        _ => return Err(CliError::Usage("demo-cluster takes at most one DIR".into())),
    };
    println!("== oncelog demo-cluster in {}", dir.display());
    clear_dir(&dir)?;
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();

    // 1. Three replicas, one thread each.
    let cluster = ThreadCluster::start(&dir, 3, options())?;
    let rec = cluster.leader_and_isr();
    let leader = rec
        .leader
        .ok_or_else(|| CliError::Failed("no leader".into()))?;
    println!(
        "[1] started 3 replicas (min.insync.replicas=2): leader {leader:?} in leader epoch {}, \
         ISR {:?}",
        rec.leader_epoch, rec.isr
    );

    // 2. An idempotent acks=all producer streams batches; the leader is killed mid-stream.
    let client = cluster.producer_handle().with_acks(Acks::All);
    let target = Arc::new(Recording {
        client: client.clone(),
        last: Mutex::new(VecDeque::new()),
    });
    let acked = Arc::new(AtomicU64::new(0));
    let producer = {
        let (target, acked) = (Arc::clone(&target), Arc::clone(&acked));
        std::thread::spawn(move || -> oncelog::Result<Vec<Delivery>> {
            let mut p = Producer::new(&*target)?;
            let mut out = Vec::new();
            for i in 0..BATCHES {
                out.push(p.send(records(i))?);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(out)
        })
    };
    let t = Instant::now();
    wait_for("the first acknowledgements", || {
        acked.load(Ordering::SeqCst) >= KILL_AFTER
    })?;
    let old = cluster
        .leader()
        .ok_or_else(|| CliError::Failed("no leader".into()))?;
    let at = acked.load(Ordering::SeqCst);
    let rec = cluster.kill_replica(old)?;
    let new = rec
        .leader
        .ok_or_else(|| CliError::Failed(format!("no leader elected after the kill: {rec:?}")))?;
    println!(
        "[2] {at} batches acknowledged, then leader {old:?} killed (no checkpoint, no clean \
         shutdown): {new:?} elected from the ISR in leader epoch {}, ISR {:?}",
        rec.leader_epoch, rec.isr
    );
    let deliveries = producer
        .join()
        .map_err(|_| CliError::Failed("the producer thread panicked".into()))??;
    let took = t.elapsed().as_secs_f64().max(1e-9);
    println!(
        "[3] the producer finished: {BATCHES} batches x {RECORDS_PER_BATCH} records acknowledged \
         in {took:.2} s ({:.0} batches/s); its client re-sent {} request(s) across the failover",
        BATCHES as f64 / took,
        client.retries()
    );

    // 4. The last five batches again, as retries after lost answers: duplicates.
    let last: Vec<(RecordBatch, AppendInfo)> = target.last.lock().iter().cloned().collect();
    let mut dups = 0;
    for (batch, original) in &last {
        let again = client.produce(batch)?;
        if again.duplicate
            && again.base_offset == original.base_offset
            && again.last_offset == original.last_offset
        {
            dups += 1;
        } else {
            failures.push(format!(
                "retry of the batch at {} answered {again:?}",
                original.base_offset
            ));
        }
    }
    println!(
        "[4] retried the producer's last {} batches on leader {new:?}: {dups} answered as \
         duplicates with their original offsets, nothing written twice",
        last.len()
    );

    // 5. The old leader comes back and catches up.
    cluster.restart_replica(old)?;
    wait_for("the old leader to rejoin the ISR", || {
        cluster.leader_and_isr().isr.contains(&old)
    })?;
    let hw = cluster
        .high_watermark()
        .ok_or_else(|| CliError::Failed("no leader".into()))?;
    wait_for("every replica to reach the high-water mark", || {
        cluster
            .replicas()
            .iter()
            .all(|&id| cluster.status(id).is_some_and(|s| s.high_watermark >= hw))
    })?;
    println!(
        "[5] {old:?} restarted (incarnation {}), caught up and rejoined the ISR: {:?}",
        cluster.status(old).map_or(0, |s| s.incarnation),
        cluster.leader_and_isr().isr
    );

    // 6. The consumer: every batch exactly once, in order, where its acknowledgement said.
    let batches = read_committed(&cluster, new)?;
    let mut expected = 0u64;
    let mut next_offset = 0u64;
    for (base, values) in &batches {
        if *base != next_offset {
            failures.push(format!("batch at {base}, expected offset {next_offset}"));
        }
        let want: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH).map(|j| value(expected, j)).collect();
        if *values != want {
            failures.push(format!(
                "batch at offset {base} is not batch {expected} of the producer"
            ));
            break;
        }
        match deliveries.get(expected as usize) {
            Some(Delivery::Written(info)) if info.base_offset.0 == *base => {}
            other => failures.push(format!(
                "batch {expected} is at offset {base}, acknowledged as {other:?}"
            )),
        }
        expected += 1;
        next_offset = base + values.len() as u64;
    }
    if expected != BATCHES {
        failures.push(format!(
            "read {expected} batches, {BATCHES} were acknowledged"
        ));
    }
    let limit = Offset(next_offset);
    let reference = log_bytes(&cluster, new, limit)?;
    let mut same = 0;
    for id in cluster.replicas() {
        if log_bytes(&cluster, id, limit)? == reference {
            same += 1;
        } else {
            failures.push(format!("replica {id:?} differs below the high-water mark"));
        }
    }
    println!(
        "[6] consumer read {expected} batches ({} records) below the high-water mark {}: each \
         exactly once, in order, at its acknowledged offsets; {same} of 3 replicas hold identical \
         bytes",
        next_offset, hw
    );
    cluster.shutdown()?;

    println!("took {:.2} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!("demo-cluster: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        println!("demo-cluster: FAILED");
        Ok(ExitCode::FAILURE)
    }
}
