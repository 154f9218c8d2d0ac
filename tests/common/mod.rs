//! Helpers shared by the integration tests: batches with recognisable contents, and a reader
//! that returns every record of a log.
#![allow(dead_code)]

use std::path::Path;

use oncelog::{BatchBuilder, Error, Isolation, Log, LogConfig, Offset, RecordBatch};

/// A batch of `records` records whose values name `(tag, i)`.
pub fn batch(tag: u64, records: u32, value_len: usize) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        let mut v = format!("{tag}:{i}:").into_bytes();
        v.resize(value_len.max(v.len()), b'x');
        b.push(
            1_000 + tag as i64,
            Some(format!("k{tag}").as_bytes()),
            Some(&v),
        );
    }
    b.build().unwrap()
}

/// Every (offset, value) in the log from its start, verifying checksums.
pub fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let fetch = log.read(next, 1 << 20).unwrap();
        assert!(
            !fetch.is_empty(),
            "empty read at {next:?} below end {end:?}"
        );
        for b in fetch.batches() {
            let b = b.unwrap();
            for r in b.records() {
                let r = r.unwrap();
                let o = b.base_offset() + r.offset_delta as u64;
                if o >= next.0 {
                    out.push((o, r.value.unwrap_or_default().to_vec()));
                }
            }
            next = Offset(b.last_offset() + 1);
        }
    }
    out
}
/// `(offset, value)` of every record a read_committed reader sees from `from` up to the LSO.
pub fn read_committed(log: &Log, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = Offset(from);
    loop {
        let f = log
            .read_with(next, 1 << 12, Isolation::ReadCommitted)
            .unwrap();
        let Some(end) = f.fetch.end_offset() else {
            return out;
        };
        for r in f.committed_records() {
            let r = r.unwrap();
            let v = String::from_utf8(r.record.value.unwrap().to_vec()).unwrap();
            if r.offset >= from {
                out.push((r.offset, v));
            }
        }
        next = Offset(end);
    }
}

/// No index entries at all: loading a trusted segment walks every batch of it.
pub fn sparse() -> LogConfig {
    LogConfig {
        index_interval_bytes: 1 << 20,
        ..LogConfig::for_tests()
    }
}

/// A cleanly closed log with at least `segments` segments; returns every (offset, value).
pub fn closed_log(dir: &Path, cfg: &LogConfig, segments: usize) -> Vec<(u64, Vec<u8>)> {
    let log = Log::open(dir, cfg.clone()).unwrap();
    let mut tag = 0;
    while log.segments().len() < segments {
        log.append(&batch(tag, 1 + (tag % 3) as u32, 24)).unwrap();
        tag += 1;
    }
    log.append(&batch(tag, 2, 24)).unwrap();
    let all = read_all(&log);
    log.close().unwrap();
    all
}

/// Asserts that `r` is `Error::Corrupt` naming `path` and byte `position`.
pub fn assert_corrupt<T: std::fmt::Debug>(
    r: oncelog::Result<T>,
    path: &Path,
    position: u64,
    what: &str,
) {
    match r {
        Err(Error::Corrupt {
            path: p,
            position: pos,
            reason,
        }) => {
            assert_eq!(p, path, "{what}: wrong file ({reason})");
            assert_eq!(pos, position, "{what}: wrong position ({reason})");
        }
        other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
    }
}

// Processes and the TCP client: the tests that start `oncelog node` need the `net` feature.
#[cfg(feature = "net")]
pub mod procs;
#[cfg(feature = "net")]
#[allow(unused_imports)]
pub use procs::{free_port, free_ports};

// Certificates for the secured service (rcgen; the `tls` feature's types).
#[cfg(feature = "tls")]
pub mod pki;

pub mod sim;
