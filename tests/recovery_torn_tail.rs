//! T04: torn, zero-filled and garbage tails of the active segment, on the real file system.
//!
//! A log is built (several sealed segments, then a flushed prefix in the active segment, then two
//! unsynced batches) and crashed with `simulate_crash`. For every byte offset inside the last two
//! batches the active segment file is (a) zeroed from there to its end, (b) overwritten with
//! seeded garbage from there to its end, (c) truncated there; each damaged copy of the directory
//! is reopened and must recover exactly the batches that are still intact byte for byte (rows
//! R5/R8: the unsynced tail is cut at the first invalid batch, never reported as corruption),
//! report the cut (`truncated_at`, `bytes_truncated`), read back every record with a valid
//! checksum and the generator's contents, and keep appending at the recovered end across a clean
//! close and reopen. Also: a fully zero-filled or empty active segment (crash right after the
//! segment was created) opens as empty; the checksum field is never special-cased (a legitimate
//! batch whose CRC is 0 is accepted, a valid batch whose CRC field was zeroed is rejected).

mod common;
#[path = "common/fault.rs"]
mod fault;

use std::fs;
use std::path::Path;

use common::{batch, read_all};
use fault::{batches_in, copy_dir, intact_end, seg_path, segment_bases, BatchAt, Rng};
use oncelog::format::batch::{compute_crc, CRC_OFFSET};
use oncelog::{BatchBuilder, Log, LogConfig, Offset, RecordBatch, Stamp};

fn cfg() -> LogConfig {
    LogConfig::for_tests()
}

/// The values `common::batch(tag, records, value_len)` writes.
fn values_of(tag: u64, records: u32, value_len: usize) -> Vec<Vec<u8>> {
    (0..records)
        .map(|i| {
            let mut v = format!("{tag}:{i}:").into_bytes();
            v.resize(value_len.max(v.len()), b'x');
            v
        })
        .collect()
}

/// Appends `batch(tag, records, 20)` and records its values in `expected`.
fn append(log: &Log, expected: &mut Vec<(u64, Vec<u8>)>, tag: u64, records: u32) {
    let info = log.append(&batch(tag, records, 20)).unwrap();
    assert_eq!(
        info.base_offset.0,
        expected.len() as u64,
        "offsets contiguous"
    );
    for v in values_of(tag, records, 20) {
        expected.push((expected.len() as u64, v));
    }
}

/// A crashed log directory: sealed segments, a synced prefix in the active segment and two
/// unsynced batches at its end.
struct Crashed {
    dir: tempfile::TempDir,
    expected: Vec<(u64, Vec<u8>)>,
    active_base: u64,
    synced_end: u64,
    full_end: u64,
    /// The active segment file as the crash left it.
    original: Vec<u8>,
    /// The last two batches of the active segment (the unsynced ones).
    tail: [BatchAt; 2],
}

fn build_crashed() -> Crashed {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let log = Log::open(dir.path(), cfg()).unwrap();
    // Fill until a roll has just happened with at least two sealed segments behind it, so the
    // active segment has room for the rest.
    let mut tag = 0;
    loop {
        let before = log.segments().len();
        append(&log, &mut expected, tag, 1 + (tag % 3) as u32);
        tag += 1;
        if log.segments().len() > before && log.segments().len() >= 3 {
            break;
        }
    }
    log.close().unwrap();

    let log = Log::open(dir.path(), cfg()).unwrap();
    let segments = log.segments().len();
    for _ in 0..3 {
        append(&log, &mut expected, tag, 2);
        tag += 1;
    }
    log.flush().unwrap();
    let synced_end = log.log_end_offset().0;
    assert_eq!(log.recovery_point().0, synced_end);
    append(&log, &mut expected, tag, 1);
    append(&log, &mut expected, tag + 1, 3);
    assert_eq!(
        log.segments().len(),
        segments,
        "the tail must stay in one segment"
    );
    let full_end = log.log_end_offset().0;
    let active_base = log.segments().last().unwrap().base_offset();
    log.simulate_crash();

    let original = fs::read(seg_path(dir.path(), active_base)).unwrap();
    let batches = batches_in(&original);
    let n = batches.len();
    assert!(
        n >= 5,
        "active segment holds the prefix and the tail: {batches:?}"
    );
    let tail = [batches[n - 2], batches[n - 1]];
    assert_eq!(tail[0].base_offset, synced_end);
    assert_eq!(tail[1].next_offset, full_end);
    Crashed {
        dir,
        expected,
        active_base,
        synced_end,
        full_end,
        original,
        tail,
    }
}

/// Reopens a damaged copy and checks everything T04 asks for. `damaged` is the active segment
/// file as written to disk.
fn check_recovery(c: &Crashed, dir: &Path, damaged: &[u8], case: &str) {
    let expect_end = intact_end(&c.original, damaged, c.active_base);
    assert!(
        expect_end >= c.synced_end,
        "{case}: damage must be in the tail"
    );
    let log = Log::open(dir, cfg()).unwrap_or_else(|e| panic!("{case}: open failed: {e}"));
    let r = log.recovery_report().clone();
    assert_eq!(log.log_end_offset().0, expect_end, "{case}: {r:?}");
    assert!(r.corruption.is_none(), "{case}: {r:?}");
    assert!(!log.is_read_only(), "{case}");
    if expect_end < c.full_end {
        // What was cut: the bytes from the first damaged batch to the last non-zero byte. (A
        // file truncated exactly at a batch boundary leaves no trace of the lost batches.)
        let cut_pos = batches_in(&c.original)
            .iter()
            .find(|b| b.base_offset == expect_end)
            .unwrap()
            .pos;
        let dropped = damaged
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| (i + 1).saturating_sub(cut_pos));
        assert_eq!(r.bytes_truncated, dropped as u64, "{case}: {r:?}");
        if dropped > 0 {
            assert_eq!(r.truncated_at, Some(expect_end), "{case}: {r:?}");
        } else {
            assert!(
                r.truncated_at.is_none_or(|t| t == expect_end),
                "{case}: {r:?}"
            );
        }
    }
    log.check_invariants();
    let want: Vec<(u64, Vec<u8>)> = c
        .expected
        .iter()
        .filter(|(o, _)| *o < expect_end)
        .cloned()
        .collect();
    assert_eq!(read_all(&log), want, "{case}");

    // Appends continue at the recovered end and survive a clean close.
    let info = log.append(&batch(7_777, 2, 20)).unwrap();
    assert_eq!(info.base_offset.0, expect_end, "{case}");
    log.close().unwrap();
    let log = Log::open(dir, cfg()).unwrap();
    assert!(log.recovery_report().clean_shutdown, "{case}");
    assert_eq!(log.log_end_offset().0, expect_end + 2, "{case}");
    let mut want = want;
    for v in values_of(7_777, 2, 20) {
        want.push((want.len() as u64, v));
    }
    assert_eq!(read_all(&log), want, "{case}");
    log.check_invariants();
    log.close().unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Zero,
    Garbage,
    Truncate,
}

fn every_offset_of_the_tail(damage: Damage) {
    let c = build_crashed();
    let from = c.tail[0].pos;
    let to = c.tail[1].end();
    let mut rng = Rng::new(0x5eed_0000 + damage as u64);
    for p in from..to {
        let case = format!("{damage:?} from byte {p} (tail batches {:?})", c.tail);
        let copy = tempfile::tempdir().unwrap();
        copy_dir(c.dir.path(), copy.path());
        let mut damaged = c.original.clone();
        match damage {
            Damage::Zero => damaged[p..].fill(0),
            Damage::Garbage => rng.fill(&mut damaged[p..]),
            Damage::Truncate => damaged.truncate(p),
        }
        fs::write(seg_path(copy.path(), c.active_base), &damaged).unwrap();
        check_recovery(&c, copy.path(), &damaged, &case);
    }
}

#[test]
fn zeroed_tail_at_every_offset_recovers_the_intact_prefix() {
    every_offset_of_the_tail(Damage::Zero);
}

#[test]
fn garbage_tail_at_every_offset_recovers_the_intact_prefix() {
    every_offset_of_the_tail(Damage::Garbage);
}

#[test]
fn truncated_tail_at_every_offset_recovers_the_intact_prefix() {
    every_offset_of_the_tail(Damage::Truncate);
}

/// The undamaged crash state itself: nothing is lost.
#[test]
fn intact_crash_keeps_everything() {
    let c = build_crashed();
    check_recovery(&c, c.dir.path(), &c.original, "intact");
}

/// A crash whose active segment simply ends in its preallocated zeros lost nothing: the report
/// must not claim a torn tail was cut off (`truncated_at` is documented as "the torn tail that
/// was cut off (row R8)"), or every ordinary crash looks like data loss to an operator.
#[test]
fn intact_crash_reports_no_truncation() {
    let c = build_crashed();
    let log = Log::open(c.dir.path(), cfg()).unwrap();
    let r = log.recovery_report();
    assert_eq!(log.log_end_offset().0, c.full_end);
    assert!(!r.clean_shutdown);
    assert_eq!(r.bytes_truncated, 0, "{r:?}");
    assert_eq!(
        r.truncated_at, None,
        "nothing was cut, yet the report names a truncation point: {r:?}"
    );
}

/// A valid batch whose CRC field was zeroed is rejected like any checksum mismatch: in the
/// unsynced tail that is a torn write and recovery cuts there.
#[test]
fn zeroed_crc_field_in_the_tail_is_rejected() {
    let c = build_crashed();
    for (i, b) in c.tail.iter().enumerate() {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(c.dir.path(), copy.path());
        let mut damaged = c.original.clone();
        damaged[b.pos + CRC_OFFSET..b.pos + CRC_OFFSET + 4].fill(0);
        fs::write(seg_path(copy.path(), c.active_base), &damaged).unwrap();
        let log = Log::open(copy.path(), cfg()).unwrap();
        assert_eq!(log.log_end_offset().0, b.base_offset, "tail batch {i}");
        assert_eq!(log.recovery_report().truncated_at, Some(b.base_offset));
        log.close().unwrap();
    }
}

/// Builds a valid batch, stamped with `stamp`, whose stored CRC is exactly 0. CRC-32 is affine
/// over GF(2) in the message bits, so 4 free bytes inside a record value can be solved for.
fn batch_with_zero_crc(stamp: Stamp) -> RecordBatch {
    const MARK: &[u8] = b"crc-zero:";
    let mut b = BatchBuilder::new();
    let mut value = MARK.to_vec();
    value.extend_from_slice(&[0; 4]);
    b.push(5_000, Some(b"key"), Some(&value));
    let mut bytes = b.build().unwrap().stamped(stamp).as_bytes().to_vec();
    let at = bytes.windows(MARK.len()).position(|w| w == MARK).unwrap() + MARK.len();
    let crc_with = |bytes: &mut Vec<u8>, x: u32| {
        bytes[at..at + 4].copy_from_slice(&x.to_le_bytes());
        compute_crc(bytes).unwrap()
    };
    let c0 = crc_with(&mut bytes, 0);
    // basis[bit] = (vector with highest set bit `bit`, combination of free bits giving it)
    let mut basis: [Option<(u32, u32)>; 32] = [None; 32];
    for i in 0..32 {
        let (mut v, mut m) = (crc_with(&mut bytes, 1 << i) ^ c0, 1u32 << i);
        for bit in (0..32).rev() {
            if v >> bit & 1 == 0 {
                continue;
            }
            match basis[bit] {
                Some((bv, bm)) => {
                    v ^= bv;
                    m ^= bm;
                }
                None => {
                    basis[bit] = Some((v, m));
                    break;
                }
            }
        }
    }
    let (mut t, mut x) = (c0, 0u32);
    for bit in (0..32).rev() {
        if t >> bit & 1 == 1 {
            let (bv, bm) = basis[bit].expect("32 contiguous bits span CRC-32");
            t ^= bv;
            x ^= bm;
        }
    }
    assert_eq!(crc_with(&mut bytes, x), 0, "forged checksum");
    bytes[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
    let batch = RecordBatch::from_bytes(bytes).expect("a batch with CRC 0 is valid");
    assert_eq!(batch.header().crc, 0);
    batch
}

/// RP #4113: a legitimate batch whose checksum happens to be 0 must not be mistaken for
/// preallocated zeros, in the unsynced tail, in synced data and after a clean close.
#[test]
fn batch_whose_crc_is_zero_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let log = Log::open(dir.path(), cfg()).unwrap();
    for tag in 0..3 {
        append(&log, &mut expected, tag, 2);
    }
    log.flush().unwrap();
    let at = log.log_end_offset().0;
    let forged = batch_with_zero_crc(Stamp {
        base_offset: at,
        leader_epoch: 0,
        append_timestamp: 1_700_000_000_000,
    });
    let info = log.append_replicated(&forged).unwrap();
    assert_eq!(info.base_offset.0, at);
    let end = at + 1;
    log.simulate_crash();

    // The forged batch is the last, unsynced one: the scan must keep it.
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.log_end_offset().0, end, "{:?}", log.recovery_report());
    let f = log.read(Offset(at), 1 << 16).unwrap();
    let v = f.batches().next().unwrap().unwrap();
    assert_eq!(v.header().crc, 0);
    assert_eq!(v.as_bytes(), forged.as_bytes());
    // Now behind synced data and another batch.
    append(&log, &mut vec![(0, vec![]); end as usize], 50, 1);
    log.flush().unwrap();
    log.simulate_crash();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.log_end_offset().0, end + 1);
    assert!(log.recovery_report().corruption.is_none());
    log.close().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.log_end_offset().0, end + 1);
    let got = read_all(&log);
    assert_eq!(got.len() as u64, end + 1);
    assert_eq!(&got[..expected.len()], &expected[..]);
}

/// A crash right after a segment file was created: the new active segment is all zeros (or,
/// before fallocate, empty). It opens as an empty segment at its base and takes appends.
#[test]
fn zero_filled_or_empty_active_segment_opens_as_empty() {
    // A brand-new log crashed before its first append.
    let dir = tempfile::tempdir().unwrap();
    Log::open(dir.path(), cfg()).unwrap().simulate_crash();
    assert_eq!(fs::read(seg_path(dir.path(), 0)).unwrap(), vec![0u8; 4096]);
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.log_end_offset(), Offset(0));
    assert!(log.recovery_report().corruption.is_none());
    assert_eq!(log.append(&batch(1, 1, 10)).unwrap().base_offset, Offset(0));
    log.close().unwrap();

    // A rolled-to segment created (zeros, or zero length) after a synced, sealed log.
    for len in [4096usize, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        let log = Log::open(dir.path(), cfg()).unwrap();
        for tag in 0..60 {
            append(&log, &mut expected, tag, 2);
        }
        let end = log.log_end_offset().0;
        log.close().unwrap();
        fs::write(seg_path(dir.path(), end), vec![0u8; len]).unwrap();
        let log = Log::open(dir.path(), cfg())
            .unwrap_or_else(|e| panic!("new segment of {len} zero bytes: {e}"));
        let r = log.recovery_report().clone();
        assert!(!r.clean_shutdown, "{r:?}");
        assert!(r.corruption.is_none(), "{r:?}");
        assert_eq!(log.log_end_offset().0, end, "{r:?}");
        assert_eq!(read_all(&log), expected);
        append(&log, &mut expected, 99, 3);
        log.check_invariants();
        log.close().unwrap();
        let log = Log::open(dir.path(), cfg()).unwrap();
        assert_eq!(read_all(&log), expected);
        assert_eq!(*segment_bases(dir.path()).last().unwrap(), end);
        log.close().unwrap();
    }
}
