//! `recover_segment`: damage past the synced prefix never makes recovery lose synced data,
//! accept damaged bytes, or panic.
//!
//! The first input byte picks the mode. Even: build a segment image in memory, damage it past
//! a chosen synced prefix and run [`scan_segment`] on it. Odd: write a log with the library on
//! [`SimStorage`], crash it with power loss, damage the durable image past the durable recovery
//! point only, and reopen it with [`Log::open`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::reader::ByteReader;
use crate::clock::ManualClock;
use crate::config::{LogConfig, SyncMode};
use crate::format::batch::{BatchBuilder, BatchHeader, BatchView, RecordBatch, Stamp};
use crate::format::file_name::{parse_file_name, FileKind};
use crate::io::sim::{CrashMode, SimStorage};
use crate::log::checkpoints::{newest_slot, RECOVERY_POINT_FILE};
use crate::log::Log;
use crate::producer::{ProducerConfig, ProducerStateManager};
use crate::segment::scan::scan_segment;
use crate::types::{Offset, ProducerId};

pub fn recover_segment(data: &[u8]) {
    let mut r = ByteReader::new(data);
    if r.u8() & 1 == 0 {
        scan_damaged_image(&mut r);
    } else {
        reopen_damaged_log(&mut r);
    }
}

/// Per-producer sequence numbers of a generated workload (producers 1..=3; 0 = none).
#[derive(Debug, Default)]
pub(super) struct Producers {
    next_seq: [i32; 4],
}

/// A generated client batch: its records' values (unique per input) and the batch.
pub(super) fn gen_batch(
    r: &mut ByteReader<'_>,
    producers: &mut Producers,
    tag: u64,
    big: bool,
) -> (Vec<Vec<u8>>, RecordBatch) {
    let slot = r.below(4) as usize;
    let records = if big { r.range(1, 2) } else { r.range(1, 4) } as i32;
    let value_len = if big {
        r.range(400, 900) as usize
    } else {
        r.below(48) as usize
    };
    let mut b = BatchBuilder::new();
    let mut values = Vec::new();
    for i in 0..records {
        let mut v = format!("v{tag}.{i}:").into_bytes();
        v.resize(value_len.max(v.len()), b'a' + (tag % 26) as u8);
        let key = (i % 2 == 0).then(|| format!("k{slot}").into_bytes());
        b.push(1_000 + tag as i64, key.as_deref(), Some(&v));
        values.push(v);
    }
    if slot > 0 {
        let seq = producers.next_seq[slot];
        b.set_producer(ProducerId(slot as i64), 0, seq);
        producers.next_seq[slot] = seq + records;
    }
    (values, b.build().expect("generated batch builds"))
}

fn scan_damaged_image(r: &mut ByteReader<'_>) {
    let base = r.below(1 << 20);
    let interval = r.range(1, 600) as u32;
    let n = r.range(1, 8);
    let mut producers = Producers::default();
    let mut original = Vec::new();
    // Original batch boundaries (byte position, offset of the batch starting there).
    let mut boundaries: Vec<(usize, u64)> = vec![(0, base)];
    let mut next = base;
    for tag in 0..n {
        let (_, batch) = gen_batch(r, &mut producers, tag, false);
        let stamp = Stamp {
            base_offset: next,
            leader_epoch: i32::from(r.u8()),
            append_timestamp: 5_000 + tag as i64,
        };
        original.extend_from_slice(batch.stamped(stamp).as_bytes());
        next += u64::from(batch.record_count());
        boundaries.push((original.len(), next));
    }
    let synced = if r.bool() {
        boundaries[r.below(boundaries.len() as u64) as usize].0
    } else {
        r.below(original.len() as u64 + 1) as usize
    };
    // What an undamaged active segment looks like: batches, then preallocated zeros.
    let mut reference = original.clone();
    reference.resize(original.len() + r.below(300) as usize, 0);
    let mut image = reference.clone();
    damage(r, &mut image, synced);
    let d = image
        .iter()
        .zip(&reference)
        .position(|(a, b)| a != b)
        .unwrap_or(image.len().min(reference.len()));
    assert!(d >= synced, "the harness damaged synced bytes");

    let mut accepted = Vec::new();
    let out = scan_segment(&image, base, interval, |pos, view| {
        accepted.push((pos, view.len()));
    });
    // Every accepted batch is an original batch, unchanged, at its original position.
    let mut expect_pos = 0;
    for &(pos, len) in &accepted {
        assert_eq!(pos, expect_pos, "accepted batches are contiguous from 0");
        assert!(
            boundaries.iter().any(|b| b.0 == pos) && boundaries.iter().any(|b| b.0 == pos + len),
            "accepted a batch at [{pos}, {}) that is not an original batch",
            pos + len
        );
        assert_eq!(
            image.get(pos..pos + len),
            original.get(pos..pos + len),
            "accepted damaged bytes at {pos}"
        );
        expect_pos = pos + len;
    }
    assert_eq!(out.valid_len, expect_pos);
    assert_eq!(out.batch_count, accepted.len() as u64);
    let (_, next_offset) = *boundaries
        .iter()
        .find(|b| b.0 == out.valid_len)
        .expect("valid_len is an original batch boundary");
    assert_eq!(out.next_offset, next_offset);
    // Nothing before the first damaged byte is lost.
    let floor = boundaries
        .iter()
        .filter(|b| b.0 <= d)
        .map(|b| b.0)
        .max()
        .unwrap_or(0);
    assert!(
        out.valid_len >= floor,
        "scan kept {} bytes but the first {d} bytes (batch boundary {floor}) were intact",
        out.valid_len
    );
    assert_eq!(out.stop.is_none(), out.valid_len == image.len());
    if let Some((pos, _)) = &out.stop {
        assert_eq!(*pos, out.valid_len);
    }
    for pair in out.entries.offsets.windows(2) {
        assert!(pair[0].relative_offset < pair[1].relative_offset);
        assert!(pair[0].position < pair[1].position);
    }
    for e in &out.entries.offsets {
        assert!(
            boundaries.iter().any(|b| b.0 == e.position as usize),
            "index entry inside a batch"
        );
        assert!((e.position as usize) < out.valid_len);
    }
}

/// A splitmix64 stream for garbage the fuzzer cannot steer into a forged checksum.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// One damage step on bytes at or past `from`: what it does, where, and how much.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// At most three bit flips per image (CRC-32 detects every error of weight <= 3 at these
    /// lengths, so the harness cannot forge a valid batch).
    Flip {
        pos: usize,
        bit: u8,
    },
    Zero {
        pos: usize,
        len: usize,
    },
    Truncate {
        len: usize,
    },
    Garbage {
        pos: usize,
        len: usize,
        seed: u64,
    },
    Append {
        len: usize,
        seed: u64,
    },
}

fn next_damage(r: &mut ByteReader<'_>, from: usize, len: usize, flips: &mut u32) -> Damage {
    let span = (len - from.min(len)) as u64;
    let pos = from + r.below(span.max(1)) as usize;
    match r.below(5) {
        0 if *flips < 3 && span > 0 => {
            *flips += 1;
            Damage::Flip {
                pos,
                bit: r.u8() % 8,
            }
        }
        1 => Damage::Zero {
            pos,
            len: r.range(1, 200) as usize,
        },
        2 => Damage::Truncate { len: pos },
        3 => Damage::Garbage {
            pos,
            len: r.range(1, 200) as usize,
            seed: r.u64(),
        },
        _ => Damage::Append {
            len: r.range(1, 300) as usize,
            seed: r.u64(),
        },
    }
}

fn damage(r: &mut ByteReader<'_>, image: &mut Vec<u8>, from: usize) {
    let mut flips = 0;
    for _ in 0..r.range(1, 4) {
        match next_damage(r, from, image.len(), &mut flips) {
            Damage::Flip { pos, bit } => {
                if let Some(b) = image.get_mut(pos) {
                    *b ^= 1 << bit;
                }
            }
            Damage::Zero { pos, len } => {
                let end = (pos + len).min(image.len());
                if pos < end {
                    image[pos..end].fill(0);
                }
            }
            Damage::Truncate { len } => image.truncate(len.max(from)),
            Damage::Garbage { pos, len, seed } => {
                let end = (pos + len).min(image.len());
                if pos < end {
                    image[pos..end].copy_from_slice(&garbage(seed, end - pos));
                }
            }
            Damage::Append { len, seed } => image.extend_from_slice(&garbage(seed, len)),
        }
    }
}

pub(super) const DIR: &str = "/fuzz/log";

/// A log configuration on `sim` with a manual clock: tiny segments, index entry per batch.
pub(super) fn sim_config(sim: &SimStorage, clock: &Arc<ManualClock>, sync: SyncMode) -> LogConfig {
    LogConfig {
        sync,
        producer_id_expiration_ms: 1 << 50,
        ..LogConfig::for_tests()
    }
    .with_storage(Arc::new(sim.clone()))
    .with_clock(Arc::clone(clock) as Arc<dyn crate::clock::Clock>)
}

/// Every `(offset, value)` of the log from its start, checksum-verified.
pub(super) fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    read_from_start(log).1
}

/// Every `(offset, value)` of the log from its start, and that start.
pub(super) fn read_from_start(log: &Log) -> (u64, Vec<(u64, Vec<u8>)>) {
    walk_from_start(log, |b, next, out| {
        for rec in b.records() {
            let rec = rec.expect("a fetched record decodes");
            let o = b.base_offset() + rec.offset_delta as u64;
            if o >= next {
                out.push((o, rec.value.unwrap_or_default().to_vec()));
            }
        }
    })
}

/// Every batch header of the log from its start.
pub(super) fn read_headers(log: &Log) -> Vec<BatchHeader> {
    walk_from_start(log, |b, _, out| out.push(*b.header())).1
}

/// Visits every checksum-verified batch from the log start to the log end with the offset the
/// walk is at, collecting what `visit` pushes; returns the start it walked from. The background
/// thread's retention pass may move the log start meanwhile: a read below the new start
/// restarts the walk from it, so the result is contiguous from the returned start.
fn walk_from_start<T>(
    log: &Log,
    mut visit: impl FnMut(&BatchView<'_>, u64, &mut Vec<T>),
) -> (u64, Vec<T>) {
    'restart: loop {
        let start = log.log_start_offset();
        let mut out = Vec::new();
        let mut next = start;
        let end = log.log_end_offset();
        while next < end {
            let fetch = match log.read(next, 1 << 20) {
                Ok(f) => f,
                Err(crate::Error::OffsetOutOfRange { log_start, .. }) if log_start > next => {
                    continue 'restart;
                }
                Err(e) => panic!("read below the log end at {next:?}: {e:?}"),
            };
            assert!(
                !fetch.is_empty(),
                "empty read at {next:?} below end {end:?}"
            );
            for b in fetch.batches() {
                let b = b.expect("a fetched batch verifies");
                visit(&b, next.0, &mut out);
                next = Offset(b.last_offset() + 1);
            }
        }
        return (start.0, out);
    }
}

/// INV-9 without retention: the producer table equals a replay of the log through a fresh
/// manager's `record`.
pub(super) fn assert_producers_replay(log: &Log) {
    let cfg = log.config();
    let mut fresh = ProducerStateManager::new(ProducerConfig {
        expiration_ms: cfg.producer_id_expiration_ms,
        max_producers: cfg.max_producers,
    });
    let batches = walk_from_start(log, |b, _, out| {
        let marker = crate::producer::Marker::of(b).expect("a logged control batch is a marker");
        out.push((*b.header(), marker));
    })
    .1;
    if log.log_start_offset().0 != 0 {
        // The background retention pass deleted the oldest segments meanwhile: the state rightly
        // keeps batches a replay of what is left cannot see, so only its invariants are checked.
        log.producer_state().check_invariants();
        return;
    }
    for (h, marker) in batches {
        crate::log::apply_batch(&mut fresh, &h, marker.as_ref());
    }
    let state = log.producer_state();
    state.check_invariants();
    let got: Vec<_> = state.entries().map(|(p, e)| (p, e.clone())).collect();
    let want: Vec<_> = fresh.entries().map(|(p, e)| (p, e.clone())).collect();
    assert_eq!(got, want, "producer state differs from a replay of the log");
    assert_eq!(state.map_end_offset(), log.log_end_offset().0);
}

/// The recovery point a reopen will read (newest valid slot of the durable file; 0 if none).
pub(super) fn durable_recovery_point(sim: &SimStorage, dir: &Path) -> u64 {
    sim.read_durable(&dir.join(RECOVERY_POINT_FILE))
        .and_then(|bytes| newest_slot(&bytes).ok())
        .map_or(0, |(_, rp)| rp)
}

/// Durable segment files: base offset -> path.
fn durable_segments(sim: &SimStorage, dir: &Path) -> BTreeMap<u64, PathBuf> {
    sim.durable_file_names(dir)
        .into_iter()
        .filter_map(|name| match parse_file_name(&name) {
            Some((o, FileKind::Log)) => Some((o.0, dir.join(name))),
            _ => None,
        })
        .collect()
}

/// Byte position of the first batch at or past `offset` in segment bytes (their length if none).
fn position_of(bytes: &[u8], offset: u64) -> usize {
    let mut pos = 0;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        match BatchHeader::decode(rest) {
            Ok(h) if h.base_offset < offset => pos += h.batch_length as usize,
            _ => return pos,
        }
    }
    pos
}

fn reopen_damaged_log(r: &mut ByteReader<'_>) {
    let seed = r.u64();
    let sim = SimStorage::new(seed);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let sync = if r.bool() {
        SyncMode::EveryAppend
    } else {
        SyncMode::Os
    };
    // 0: every synced byte is vouched for; otherwise the recovery point on disk may lag it.
    // Drawn from the seed, so inputs written before the lag existed read the same bytes.
    let lag_ms = [0, 50, 500][(seed % 3) as usize];
    let cfg = LogConfig {
        recovery_point_lag_ms: lag_ms,
        ..sim_config(&sim, &clock, sync)
    };
    let dir = Path::new(DIR);
    let log = Log::open(dir, cfg.clone()).expect("open an empty log");
    let mut producers = Producers::default();
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut synced = 0u64;
    for tag in 0..r.range(1, 12) {
        let big = r.below(4) == 0;
        let (values, batch) = gen_batch(r, &mut producers, tag, big);
        let info = log.append(&batch).expect("append on a healthy log");
        assert_eq!(info.base_offset.0, written.len() as u64);
        assert!(!info.duplicate);
        written.extend(values);
        if sync == SyncMode::EveryAppend {
            synced = written.len() as u64;
        }
        if r.below(3) == 0 {
            log.flush().expect("flush on a healthy log");
            synced = written.len() as u64;
        }
        clock.advance(r.below(1000) as i64);
    }
    log.simulate_crash();
    sim.crash_with_seed(CrashMode::PowerLoss, r.u64());

    // Damage only what lies past the durable recovery point.
    let rp = durable_recovery_point(&sim, dir);
    if lag_ms == 0 {
        assert!(
            rp >= synced,
            "recovery point {rp} below the flushed end {synced}"
        );
    }
    assert!(
        rp <= written.len() as u64,
        "recovery point {rp} past the data"
    );
    let segments = durable_segments(&sim, dir);
    let bases: Vec<u64> = segments.keys().copied().collect();
    for (i, (base, path)) in segments.into_iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if !r.bool() {
            continue;
        }
        // Only segments that hold offsets at or past the recovery point: the bytes after the
        // last batch of a segment whose successor starts at or below it belong to no offset,
        // and recovery rightly treats anything but zeros there as corruption (row R4).
        if next_base.is_some_and(|nb| nb <= rp) {
            continue;
        }
        let bytes = sim.read_durable(&path).unwrap_or_default();
        let from = if base >= rp {
            0
        } else {
            position_of(&bytes, rp)
        };
        let mut image = bytes.clone();
        damage(r, &mut image, from);
        if image.len() != bytes.len() {
            sim.truncate_file(&path, image.len() as u64)
                .expect("resize a durable file");
        }
        let _ = sim.corrupt(&path, 0, &image);
    }

    let log = match Log::open(dir, cfg.clone()) {
        Ok(log) => log,
        Err(e) => panic!("open after damage past the recovery point {rp} failed: {e}"),
    };
    log.check_invariants();
    let end = log.log_end_offset().0;
    assert!(
        end >= rp,
        "recovered end {end} below the recovery point {rp}"
    );
    assert!(
        end <= written.len() as u64,
        "recovered end {end} past what was written"
    );
    assert_eq!(log.log_start_offset().0, 0);
    let got = read_all(&log);
    assert_eq!(got.len() as u64, end, "offsets are contiguous from 0");
    for (o, v) in &got {
        assert_eq!(Some(v), written.get(*o as usize), "value at offset {o}");
    }
    assert_producers_replay(&log);
    // The recovered log takes appends at its end and keeps them across a clean close.
    let (_, batch) = gen_batch(r, &mut Producers::default(), 999, false);
    let batch = if batch.header().is_idempotent() {
        // A fresh producer id, so the sequence check cannot refuse it.
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(b"after"));
        b.build().expect("builds")
    } else {
        batch
    };
    let info = log.append(&batch).expect("append after recovery");
    assert_eq!(info.base_offset.0, end);
    log.close().expect("clean close after recovery");
    let log = Log::open(dir, cfg).expect("reopen after a clean close");
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(
        log.log_end_offset().0,
        end + u64::from(batch.record_count())
    );
    log.check_invariants();
    assert_producers_replay(&log);
    log.close().expect("close");
}
