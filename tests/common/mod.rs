//! Helpers shared by the integration tests: batches with recognisable contents, and a reader
//! that returns every record of a log.
#![allow(dead_code)]

use oncelog::{BatchBuilder, Log, Offset, RecordBatch};

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
pub mod sim;
