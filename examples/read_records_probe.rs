//! Reads every record of a 100 B × 16 (or `PER_BATCH RECORD_BYTES`) log back and compares
//! values, the path of `benches/read.rs`'s `read_records_*` group, in **interleaved rounds**:
//! oncelog (`Log::read` → `batches()` → `records()`), commitlog (`read`, payloads) and read(2)
//! of the oncelog segment bytes alternate round by round, so load from other processes hits all
//! three alike. Prints each contender's median round and the median of the per-round ratios.
//! Also the profiling harness for the record decoder:
//!
//! ```text
//! cargo build --release --example read_records_probe
//! target/release/examples/read_records_probe [ROUNDS] [PER_BATCH RECORD_BYTES] [RECORDS]
//! valgrind --tool=callgrind --toggle-collect='*oncelog_round*' \
//!     target/release/examples/read_records_probe 1 16 100 200000
//! ```
//!
//! Values are xorshift noise, 64 MiB of distinct ones cycled (as in the benches), so the
//! comparisons read their expected side from memory, not from the cache.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use oncelog::{BatchBuilder, Log, LogConfig, Offset, SyncMode};

const FETCH: usize = 1 << 20;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[inline]
fn advance(next: &mut usize, len: usize) {
    *next += 1;
    if *next == len {
        *next = 0;
    }
}

#[inline(never)]
fn oncelog_round(log: &Log, records: u64, values: &[Vec<u8>]) {
    let mut offset = 0u64;
    let mut next = 0usize;
    while offset < records {
        let fetch = log.read(Offset(offset), FETCH).unwrap();
        for batch in fetch.batches() {
            let batch = batch.unwrap();
            for r in batch.records() {
                let r = r.unwrap();
                assert_eq!(batch.base_offset() + r.offset_delta as u64, offset);
                assert!(r.value == Some(values[next].as_slice()));
                advance(&mut next, values.len());
                offset += 1;
            }
        }
    }
    assert_eq!(offset, records);
}

#[inline(never)]
fn commitlog_round(log: &CommitLog, records: u64, values: &[Vec<u8>]) {
    let mut offset = 0u64;
    let mut next = 0usize;
    while offset < records {
        let set = log.read(offset, ReadLimit::max_bytes(FETCH)).unwrap();
        for m in set.iter() {
            assert_eq!(m.offset(), offset);
            assert!(m.payload() == values[next].as_slice());
            advance(&mut next, values.len());
            offset += 1;
        }
    }
    assert_eq!(offset, records);
}

/// read(2) of the segment files in batch-aligned chunks of at most `FETCH` bytes.
#[inline(never)]
fn read2_round(files: &[(std::path::PathBuf, Vec<usize>)], buf: &mut [u8]) {
    for (path, chunks) in files {
        let mut f = File::open(path).unwrap();
        for &len in chunks {
            f.read_exact(&mut buf[..len]).unwrap();
        }
    }
    std::hint::black_box(buf);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let rounds = args.first().copied().unwrap_or(15);
    let per_batch = args.get(1).copied().unwrap_or(16);
    let record_bytes = args.get(2).copied().unwrap_or(100);
    let records = args.get(3).copied().unwrap_or(1_000_000) / per_batch * per_batch;
    let pool = ((64usize << 20) / record_bytes / per_batch * per_batch).clamp(per_batch, records);
    let values: Vec<Vec<u8>> = (0..pool).map(|r| noise(record_bytes, r as u64)).collect();

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 256 << 20,
        max_batch_bytes: 1 << 20,
        sync: SyncMode::Os,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("oncelog"), cfg.clone()).unwrap();
    let mut opts = LogOptions::new(dir.path().join("commitlog"));
    opts.segment_max_bytes(256 << 20)
        .index_max_items((256 << 20) / (record_bytes + 20) + 1)
        .message_max_bytes(1 << 20);
    let mut cl = CommitLog::new(opts).unwrap();
    for b in 0..records / per_batch {
        let mut batch = BatchBuilder::with_capacity(per_batch * (record_bytes + 16) + 128);
        let mut m = MessageBuf::default();
        for r in 0..per_batch {
            let v = &values[(b * per_batch + r) % pool];
            batch.push(
                1_700_000_000_000 + (b * per_batch + r) as i64,
                None,
                Some(v),
            );
            m.push(v).unwrap();
        }
        log.append(&batch.build().unwrap()).unwrap();
        cl.append(&mut m).unwrap();
    }
    cl.flush().unwrap();
    // Closed and reopened, as the bench's log is: reads go through the mapping open makes.
    log.close().unwrap();
    let log = Log::open(dir.path().join("oncelog"), cfg).unwrap();
    // Batch-aligned read chunks per segment, from the segments' own batch walk.
    let mut files = Vec::new();
    for seg in log.segments().iter() {
        let mut lens = Vec::new();
        let mut offset = seg.base_offset();
        while offset < seg.next_offset() {
            let fetch = log.read(Offset(offset), FETCH).unwrap();
            lens.push(fetch.bytes().len());
            offset = fetch.batches().last().unwrap().unwrap().last_offset() + 1;
        }
        files.push((seg.path().to_path_buf(), lens));
    }
    let mut buf = vec![0u8; 2 * FETCH];
    let records = records as u64;

    let (mut onc, mut cml, mut rd) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_cml, mut r_rd) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t = Instant::now();
        oncelog_round(&log, records, &values);
        let o = t.elapsed().as_secs_f64();
        let t = Instant::now();
        commitlog_round(&cl, records, &values);
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        read2_round(&files, &mut buf);
        let r = t.elapsed().as_secs_f64();
        if round == 0 {
            continue; // warm-up
        }
        onc.push(o);
        cml.push(c);
        rd.push(r);
        r_cml.push(c / o);
        r_rd.push(r / o);
    }
    let ms = |v: &mut Vec<f64>| median(v) * 1e3;
    let rate = |t_ms: f64| records as f64 / t_ms / 1e3;
    let (o, c, r) = (ms(&mut onc), ms(&mut cml), ms(&mut rd));
    println!(
        "{records} records of {record_bytes} B x {per_batch}, {rounds} interleaved rounds, medians:"
    );
    println!("  oncelog   {o:8.1} ms  {:6.2} M rec/s", rate(o));
    println!("  commitlog {c:8.1} ms  {:6.2} M rec/s", rate(c));
    println!("  read(2)   {r:8.1} ms  {:6.2} M rec/s", rate(r));
    println!(
        "  oncelog vs commitlog {:.2} x, vs read(2) {:.2} x (median of per-round ratios)",
        median(&mut r_cml),
        median(&mut r_rd)
    );
}
