//! Reads against the physical baseline and the peers, on the same records in the same run.
//!
//! The logs (oncelog, commitlog, nano-wal) are written once per workload before any clock
//! starts, with the same 1,000,000 records (incompressible values from a fixed seed, timestamps
//! 1 ms apart), closed, and reopened; everything is in the page cache, so these are CPU numbers.
//!
//! * `seq_read_<workload>`: read the whole log once per iteration. `memcpy_map_read` copies the
//!   oncelog segment files batch by batch out of a mapping into a buffer (the physical limit of a
//!   copying reader); `pread_per_batch` is one pread(2) per batch into a buffer; oncelog reads
//!   1 MiB fetches and iterates their batches, each verified by its CRC as it is yielded
//!   (zero-copy), and `..._records` also decodes every record; `commitlog_read` reads 1 MiB at a
//!   time (pread into a buffer, CRC-32C per message); `nano_wal_read_batch` reads each batch's
//!   records with one coalesced preadv (nano-wal stores no checksum).
//! * `random_read_<workload>`: 1,000 lookups per iteration at offsets (and timestamps) from a
//!   fixed seed. `memcpy_batch_from_map` copies the batch at a random position out of the mapping
//!   (no lookup: the physical part of a read); `oncelog_read_by_offset` is `Log::read` of one
//!   batch plus its CRC check; `oncelog_offset_for_timestamp` is the time-index lookup alone;
//!   `commitlog_read_by_offset` reads one batch's worth of bytes at the offset. nano-wal has no
//!   offset or time lookup (a reader must keep the file positions itself): not measured.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use nano_wal::{read_batch, ReadDescriptor, Wal, WalOptions, WriteEntry};
use oncelog::io::fs::RealStorage;
use oncelog::io::{AppendMap, OpenMode, Storage};
use oncelog::{BatchView, Log, Offset, SyncMode};

/// The three logs holding the same records, and where oncelog put its batches.
struct Logs {
    _dir: tempfile::TempDir,
    oncelog: Log,
    /// Every oncelog segment file, mapped (whole published length).
    maps: Vec<Arc<AppendMap>>,
    /// (segment index, start, end) of every batch.
    batch_pos: Vec<(usize, usize, usize)>,
    segment_paths: Vec<PathBuf>,
    commitlog: CommitLog,
    nano: Vec<Vec<ReadDescriptor>>,
    /// The record values in write order, cycled: record `k` holds `values[k % values.len()]`.
    values: Vec<Vec<u8>>,
    records: u64,
    bytes: u64,
}

fn build(w: &Workload) -> Logs {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::new(w);
    let n = w.batches_per_iter();
    let onc_dir = dir.path().join("oncelog");
    {
        let log = Log::open(&onc_dir, bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
        for i in 0..n {
            let first = (i % pool.batches.len()) * w.per_batch;
            let ts = TS0 + (i * w.per_batch) as i64;
            log.append(&build_batch(w, &pool.values, first, ts, None))
                .unwrap();
        }
        log.close().unwrap();
    }
    let oncelog = Log::open(&onc_dir, bench_config(SEGMENT_BYTES, SyncMode::Os)).unwrap();
    let mut maps = Vec::new();
    let mut batch_pos = Vec::new();
    let mut segment_paths = Vec::new();
    let mut bytes = 0u64;
    for (s, seg) in oncelog.segments().iter().enumerate() {
        let len = seg.map().published();
        let f = RealStorage.open(seg.path(), OpenMode::Existing).unwrap();
        let map = AppendMap::new(f.map(len).unwrap(), len);
        let mut rest = map.published_bytes();
        let mut pos = 0;
        while !rest.is_empty() {
            let (view, tail) = BatchView::parse(rest).unwrap();
            batch_pos.push((s, pos, pos + view.len()));
            pos += view.len();
            rest = tail;
        }
        bytes += len as u64;
        maps.push(map);
        segment_paths.push(seg.path().to_path_buf());
    }
    assert_eq!(batch_pos.len(), n);

    let cl_dir = dir.path().join("commitlog");
    {
        let mut opts = LogOptions::new(&cl_dir);
        opts.segment_max_bytes(SEGMENT_BYTES as usize)
            .index_max_items(SEGMENT_BYTES as usize / (w.record_bytes + 20) + 1)
            .message_max_bytes(1 << 20);
        let mut log = CommitLog::new(opts).unwrap();
        for i in 0..n {
            let first = (i % pool.batches.len()) * w.per_batch;
            let mut m = MessageBuf::default();
            for r in 0..w.per_batch {
                m.push(&pool.values[(first + r) % pool.values.len()])
                    .unwrap();
            }
            log.append(&mut m).unwrap();
        }
        log.flush().unwrap();
    }
    let mut opts = LogOptions::new(&cl_dir);
    opts.segment_max_bytes(SEGMENT_BYTES as usize)
        .index_max_items(SEGMENT_BYTES as usize / (w.record_bytes + 20) + 1)
        .message_max_bytes(1 << 20);
    let commitlog = CommitLog::new(opts).unwrap();
    assert_eq!(commitlog.next_offset(), (n * w.per_batch) as u64);

    let nano_dir = dir.path().join("nano-wal");
    let wal = Wal::new(
        &nano_dir,
        "bench",
        WalOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            segment_duration: Duration::from_secs(24 * 3600),
        },
    )
    .unwrap();
    let seg = wal.ensure_segment(TS0).unwrap();
    let mut nano = Vec::with_capacity(n);
    for i in 0..n {
        let first = (i % pool.batches.len()) * w.per_batch;
        let entries: Vec<WriteEntry<'_>> = (0..w.per_batch)
            .map(|r| WriteEntry {
                header: None,
                content: &pool.values[(first + r) % pool.values.len()],
            })
            .collect();
        let refs = wal.append_batch(&entries, TS0, false).unwrap();
        nano.push(
            refs.iter()
                .map(|r| ReadDescriptor {
                    read_fd: Arc::clone(seg.read_fd()),
                    file_offset: r.file_offset,
                    byte_size: r.byte_size,
                })
                .collect(),
        );
    }
    Logs {
        _dir: dir,
        oncelog,
        maps,
        batch_pos,
        segment_paths,
        commitlog,
        nano,
        values: pool.values,
        records: (n * w.per_batch) as u64,
        bytes,
    }
}

fn open_segments(paths: &[PathBuf]) -> Vec<File> {
    paths
        .iter()
        .map(|p| File::open(Path::new(p)).unwrap())
        .collect()
}

const FETCH: usize = 1 << 20;

fn seq_read(c: &mut Criterion, w: Workload, logs: &Logs) {
    let mut group = c.benchmark_group(format!("seq_read_{}", w.name));
    group.throughput(Throughput::Bytes(logs.bytes));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let max_batch = logs.batch_pos.iter().map(|&(_, s, e)| e - s).max().unwrap();
    group.bench_function("memcpy_map_read", |b| {
        let mut buf = vec![0u8; max_batch];
        b.iter(|| {
            for &(s, start, end) in &logs.batch_pos {
                let src = logs.maps[s].bytes(start, end).unwrap();
                buf[..src.len()].copy_from_slice(src);
            }
            std::hint::black_box(&buf);
        })
    });
    let files = open_segments(&logs.segment_paths);
    group.bench_function("pread_per_batch", |b| {
        let mut buf = vec![0u8; max_batch];
        b.iter(|| {
            for &(s, start, end) in &logs.batch_pos {
                files[s]
                    .read_exact_at(&mut buf[..end - start], start as u64)
                    .unwrap();
            }
            std::hint::black_box(&buf);
        })
    });
    group.bench_function("oncelog_read_verify", |b| {
        b.iter(|| {
            let mut offset = 0u64;
            let mut seen = 0u64;
            while offset < logs.records {
                let fetch = logs.oncelog.read(Offset(offset), FETCH).unwrap();
                for batch in fetch.batches() {
                    let batch = batch.unwrap();
                    seen += batch.len() as u64;
                    offset = batch.last_offset() + 1;
                }
            }
            assert_eq!(seen, logs.bytes);
        })
    });
    group.bench_function("oncelog_read_verify_records", |b| {
        b.iter(|| {
            let mut offset = 0u64;
            let mut values = 0usize;
            while offset < logs.records {
                let fetch = logs.oncelog.read(Offset(offset), FETCH).unwrap();
                for batch in fetch.batches() {
                    let batch = batch.unwrap();
                    for r in batch.records() {
                        values += r.unwrap().value.map_or(0, <[u8]>::len);
                    }
                    offset = batch.last_offset() + 1;
                }
            }
            assert_eq!(values as u64, logs.records * w.record_bytes as u64);
        })
    });
    group.bench_function("commitlog_read", |b| {
        b.iter(|| {
            let mut offset = 0u64;
            while offset < logs.records {
                let set = logs
                    .commitlog
                    .read(offset, ReadLimit::max_bytes(FETCH))
                    .unwrap();
                offset = set.iter().last().unwrap().offset() + 1;
            }
        })
    });
    group.bench_function("nano_wal_read_batch", |b| {
        b.iter(|| {
            let mut values = 0usize;
            for batch in &logs.nano {
                for r in read_batch(batch).unwrap() {
                    values += r.content.len();
                }
            }
            assert_eq!(values as u64, logs.records * w.record_bytes as u64);
        })
    });
    group.finish();
}

/// The value record `k + 1` must hold, given that record `k` held `values[*next]`: the
/// expected values in write order without a division per record.
#[inline]
fn advance(next: &mut usize, len: usize) {
    *next += 1;
    if *next == len {
        *next = 0;
    }
}

/// A zig-zag varint at `*p`, unchecked beyond slice indexing: the minimal parse of the read(2)
/// baseline (it trusts the bytes, so it panics on bad ones instead of reporting them).
#[inline]
fn minimal_varint(b: &[u8], p: &mut usize) -> i64 {
    let mut z = 0u64;
    let mut shift = 0;
    loop {
        let x = b[*p];
        *p += 1;
        z |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return ((z >> 1) as i64) ^ -((z & 1) as i64);
        }
        shift += 7;
    }
}

/// Contiguous runs of whole batches of at most `FETCH` bytes (one more if a batch is larger),
/// per segment: what the read(2) baselines read, in order, one `read` each.
fn read_chunks(logs: &Logs) -> Vec<Vec<usize>> {
    let mut chunks = vec![Vec::new(); logs.segment_paths.len()];
    let mut cur: Option<(usize, usize, usize)> = None; // (segment, start, end)
    for &(s, start, end) in &logs.batch_pos {
        match cur {
            Some((cs, cstart, cend)) if cs == s && end - cstart <= FETCH => {
                debug_assert_eq!(cend, start);
                cur = Some((cs, cstart, end));
            }
            _ => {
                if let Some((cs, cstart, cend)) = cur {
                    chunks[cs].push(cend - cstart);
                }
                cur = Some((s, start, end));
            }
        }
    }
    if let Some((cs, cstart, cend)) = cur {
        chunks[cs].push(cend - cstart);
    }
    chunks
}

/// `read_records_<workload>`: the user's read path, every record read back and its value
/// compared with what was written (docs/benchmarks.md, "Reading records back").
///
/// * `oncelog_fetch_records`: `Log::read` of 1 MiB fetches, `Fetch::batches` (each batch
///   checksum-verified), `BatchView::records`, each record's offset and value compared.
/// * `commitlog_read_compare`: `CommitLog::read` of 1 MiB (pread into a buffer, CRC-32C per
///   message), each message's offset and payload compared.
/// * `nano_wal_read_compare`: `read_batch` per batch (one coalesced preadv, no checksum), each
///   record's content compared.
/// * `read2_bytes`: read(2) of the oncelog segment files into a 1 MiB buffer, in batch-aligned
///   chunks of at most 1 MiB, nothing else: the copy a reading client cannot avoid.
/// * `read2_parse_compare`: the same reads plus a minimal trusting parse (batch lengths, record
///   varints, no checksum, no bounds reporting) and the value comparison.
fn read_records(c: &mut Criterion, w: Workload, logs: &Logs) {
    let mut group = c.benchmark_group(format!("read_records_{}", w.name));
    group.throughput(Throughput::Elements(logs.records));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let values = &logs.values;
    let n = values.len();
    group.bench_function("oncelog_fetch_records", |b| {
        b.iter(|| {
            let mut offset = 0u64;
            let mut next = 0usize;
            while offset < logs.records {
                let fetch = logs.oncelog.read(Offset(offset), FETCH).unwrap();
                for batch in fetch.batches() {
                    let batch = batch.unwrap();
                    for r in batch.records() {
                        let r = r.unwrap();
                        assert_eq!(batch.base_offset() + r.offset_delta as u64, offset);
                        assert!(r.value == Some(values[next].as_slice()));
                        advance(&mut next, n);
                        offset += 1;
                    }
                }
            }
            assert_eq!(offset, logs.records);
        })
    });
    group.bench_function("commitlog_read_compare", |b| {
        b.iter(|| {
            let mut offset = 0u64;
            let mut next = 0usize;
            while offset < logs.records {
                let set = logs
                    .commitlog
                    .read(offset, ReadLimit::max_bytes(FETCH))
                    .unwrap();
                for m in set.iter() {
                    assert_eq!(m.offset(), offset);
                    assert!(m.payload() == values[next].as_slice());
                    advance(&mut next, n);
                    offset += 1;
                }
            }
            assert_eq!(offset, logs.records);
        })
    });
    group.bench_function("nano_wal_read_compare", |b| {
        b.iter(|| {
            let mut next = 0usize;
            let mut seen = 0u64;
            for batch in &logs.nano {
                for r in read_batch(batch).unwrap() {
                    assert!(r.content.as_ref() == values[next].as_slice());
                    advance(&mut next, n);
                    seen += 1;
                }
            }
            assert_eq!(seen, logs.records);
        })
    });
    let chunks = read_chunks(logs);
    let max_chunk = chunks.iter().flatten().copied().max().unwrap();
    group.bench_function("read2_bytes", |b| {
        let mut buf = vec![0u8; max_chunk];
        b.iter(|| {
            let mut read = 0u64;
            for (path, lens) in logs.segment_paths.iter().zip(&chunks) {
                let mut f = File::open(path).unwrap();
                for &len in lens {
                    f.read_exact(&mut buf[..len]).unwrap();
                    read += len as u64;
                }
            }
            std::hint::black_box(&buf);
            assert_eq!(read, logs.bytes);
        })
    });
    group.bench_function("read2_parse_compare", |b| {
        let mut buf = vec![0u8; max_chunk];
        b.iter(|| {
            let mut next = 0usize;
            let mut seen = 0u64;
            for (path, lens) in logs.segment_paths.iter().zip(&chunks) {
                let mut f = File::open(path).unwrap();
                for &len in lens {
                    let buf = &mut buf[..len];
                    f.read_exact(buf).unwrap();
                    let mut pos = 0;
                    while pos < len {
                        let blen = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().unwrap());
                        let count = i32::from_le_bytes(buf[pos + 65..pos + 69].try_into().unwrap());
                        let mut p = pos + 69;
                        for _ in 0..count {
                            let rlen = minimal_varint(buf, &mut p) as usize;
                            let end = p + rlen;
                            p += 1; // attributes
                            minimal_varint(buf, &mut p); // timestamp delta
                            minimal_varint(buf, &mut p); // offset delta
                            minimal_varint(buf, &mut p); // key length (-1 here)
                            let vlen = minimal_varint(buf, &mut p) as usize;
                            assert!(buf[p..p + vlen] == *values[next].as_slice());
                            advance(&mut next, n);
                            seen += 1;
                            p = end;
                        }
                        pos += blen as usize;
                    }
                }
            }
            assert_eq!(seen, logs.records);
        })
    });
    group.finish();
}

const LOOKUPS: usize = 1000;

fn random_read(c: &mut Criterion, w: Workload, logs: &Logs) {
    let mut group = c.benchmark_group(format!("random_read_{}", w.name));
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let rnd = noise(LOOKUPS * 8, 42);
    let offsets: Vec<u64> = rnd
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) % logs.records)
        .collect();
    let batch_bytes = logs.batch_pos[0].2 - logs.batch_pos[0].1;
    group.bench_function("memcpy_batch_from_map", |b| {
        let mut buf = vec![0u8; FETCH];
        b.iter(|| {
            for &o in &offsets {
                let (s, start, end) = logs.batch_pos[(o / w.per_batch as u64) as usize];
                let src = logs.maps[s].bytes(start, end).unwrap();
                buf[..src.len()].copy_from_slice(src);
            }
            std::hint::black_box(&buf);
        })
    });
    group.bench_function("oncelog_read_by_offset", |b| {
        b.iter(|| {
            for &o in &offsets {
                let fetch = logs.oncelog.read(Offset(o), batch_bytes).unwrap();
                let batch = fetch.batches().next().unwrap().unwrap();
                assert!(batch.base_offset() <= o && o <= batch.last_offset());
            }
        })
    });
    group.bench_function("oncelog_offset_for_timestamp", |b| {
        b.iter(|| {
            for &o in &offsets {
                let found = logs.oncelog.offset_for_timestamp(TS0 + o as i64).unwrap();
                assert_eq!(found, Some(Offset(o)));
            }
        })
    });
    group.bench_function("commitlog_read_by_offset", |b| {
        b.iter(|| {
            for &o in &offsets {
                let set = logs
                    .commitlog
                    .read(o, ReadLimit::max_bytes(batch_bytes))
                    .unwrap();
                assert_eq!(set.iter().next().unwrap().offset(), o);
            }
        })
    });
    group.finish();
}

/// Whether a criterion filter on the command line can select a group of `w`: building a
/// workload's logs takes longer than measuring one group, so `-- read_records_100b` skips the
/// 1 KB logs.
fn selected(w: &Workload) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| f.contains(w.name) || !(f.contains("1k_x64") || f.contains("100b_x16")))
}

fn reads(c: &mut Criterion) {
    for w in [Workload::kb_x64(), Workload::b100_x16()] {
        if !selected(&w) {
            continue;
        }
        let logs = build(&w);
        read_records(c, w, &logs);
        seq_read(c, w, &logs);
        random_read(c, w, &logs);
    }
}

criterion_group!(benches, reads);
criterion_main!(benches);
