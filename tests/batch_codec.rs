//! The record-batch codec under property tests: `BatchBuilder` -> `RecordBatch` ->
//! `BatchView::parse` -> records round-trips keys and values (absent or present), headers and
//! timestamps; stamping with a `Stamp` keeps the records and the batch stays valid;
//! `RecordBatch::from_bytes` accepts valid batches and rejects every single-bit flip (the CRC
//! covers the base offset and the leader epoch, so a re-stamped offset or epoch is rejected);
//! and hostile bytes — random, or random records behind a valid header and a correct checksum —
//! never panic `BatchHeader::decode`, `BatchView::parse`, record iteration or `verify_records`.

use oncelog::format::batch::{
    compute_crc, BASE_OFFSET_OFFSET, CRC_OFFSET, HEADER_SIZE, LAST_OFFSET_DELTA_OFFSET,
    LEADER_EPOCH_OFFSET, LENGTH_OFFSET, RECORD_COUNT_OFFSET,
};
use oncelog::{BatchBuilder, BatchHeader, BatchView, RecordBatch, Stamp};
use proptest::prelude::*;

type Header = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct Rec {
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        -1i64..10_000_000_000_000,
        proptest::option::of(bytes(24)),
        proptest::option::of(bytes(80)),
        proptest::collection::vec((bytes(8), proptest::option::of(bytes(8))), 0..3),
    )
        .prop_map(|(ts, key, value, headers)| Rec {
            ts,
            key,
            value,
            headers,
        })
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (0u64..(1 << 62), any::<i32>(), any::<i64>()).prop_map(|(base_offset, leader_epoch, ts)| {
        Stamp {
            base_offset,
            leader_epoch,
            append_timestamp: ts,
        }
    })
}

fn build(recs: &[Rec]) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for r in recs {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        b.push_with_headers(r.ts, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    b.build().unwrap()
}

fn assert_records(view: &BatchView<'_>, recs: &[Rec]) {
    view.verify_records().unwrap();
    let got: Vec<_> = view.records().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), recs.len());
    for (i, (g, w)) in got.iter().zip(recs).enumerate() {
        assert_eq!(g.offset_delta, i as i32);
        assert_eq!(g.timestamp, w.ts);
        assert_eq!(g.key, w.key.as_deref());
        assert_eq!(g.value, w.value.as_deref());
        let hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = g
            .headers()
            .map(|h| h.unwrap())
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(hs, w.headers);
    }
    let h = view.header();
    assert_eq!(h.record_count as usize, recs.len());
    assert_eq!(h.last_offset_delta as usize, recs.len() - 1);
    assert_eq!(h.base_timestamp, recs[0].ts);
    assert_eq!(h.max_timestamp, recs.iter().map(|r| r.ts).max().unwrap());
    assert_eq!(view.last_offset(), h.base_offset + recs.len() as u64 - 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn build_parse_round_trip(recs in proptest::collection::vec(rec(), 1..8)) {
        let batch = build(&recs);
        let (view, rest) = BatchView::parse(batch.as_bytes()).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(view.len(), batch.len());
        assert_records(&view, &recs);
        assert_records(&batch.view(), &recs);
        let again = RecordBatch::from_bytes(batch.as_bytes().to_vec()).unwrap();
        prop_assert_eq!(&again, &batch);
        // Two batches back to back parse one after the other.
        let mut two = batch.as_bytes().to_vec();
        two.extend_from_slice(batch.as_bytes());
        let (_, rest) = BatchView::parse(&two).unwrap();
        prop_assert_eq!(rest, batch.as_bytes());
    }

    #[test]
    fn stamping_keeps_records_and_validity(
        recs in proptest::collection::vec(rec(), 1..6),
        s in stamp(),
    ) {
        let stamped = build(&recs).stamped(s);
        let h = stamped.header();
        prop_assert_eq!(h.base_offset, s.base_offset);
        prop_assert_eq!(h.leader_epoch, s.leader_epoch);
        prop_assert_eq!(h.append_timestamp, s.append_timestamp);
        let (view, _) = BatchView::parse(stamped.as_bytes()).unwrap();
        prop_assert_eq!(view.header(), h);
        assert_records(&view, &recs);
        let from = RecordBatch::from_bytes(stamped.as_bytes().to_vec()).unwrap();
        prop_assert_eq!(from.header(), h);
        // write_stamped into a buffer gives the same bytes.
        let mut buf = vec![0u8; stamped.len()];
        build(&recs).write_stamped(&mut buf, s);
        prop_assert_eq!(&buf[..], stamped.as_bytes());
    }

    #[test]
    fn every_single_bit_flip_is_rejected(
        recs in proptest::collection::vec(rec(), 1..4),
        s in stamp(),
    ) {
        let good = build(&recs).stamped(s).as_bytes().to_vec();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                prop_assert!(
                    RecordBatch::from_bytes(bad.clone()).is_err(),
                    "flip of bit {} of byte {} accepted", bit, i
                );
                prop_assert!(BatchView::parse(&bad).is_err(), "flip {}:{} parsed", i, bit);
            }
        }
    }

    #[test]
    fn hostile_bytes_never_panic(buf in bytes(400)) {
        let _ = BatchHeader::decode(&buf);
        if let Ok((view, _)) = BatchView::parse(&buf) {
            for r in view.records().flatten() {
                for h in r.headers() { let _ = h; }
            }
            let _ = view.verify_records();
        }
        let _ = RecordBatch::from_bytes(buf);
    }

    /// Random record bytes behind a valid header with a correct checksum: the record decoder
    /// itself sees hostile input.
    #[test]
    fn hostile_records_behind_a_valid_checksum_never_panic(
        body in bytes(300),
        count in 1i32..20,
        s in stamp(),
    ) {
        let template = build(&[Rec { ts: 5, key: None, value: Some(vec![1]), headers: vec![] }]);
        let mut buf = template.stamped(s).as_bytes()[..HEADER_SIZE].to_vec();
        buf.extend_from_slice(&body);
        let len = buf.len() as u32;
        buf[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
        buf[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&(count - 1).to_le_bytes());
        buf[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
        let crc = compute_crc(&buf).unwrap();
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        let (view, rest) = BatchView::parse(&buf).unwrap();
        prop_assert!(rest.is_empty());
        let mut n = 0;
        for r in view.records() {
            n += 1;
            prop_assert!(n <= count as usize + 1, "iteration must end");
            if let Ok(r) = r {
                for h in r.headers() { let _ = h; }
            }
        }
        let ok = view.verify_records().is_ok();
        prop_assert_eq!(ok, RecordBatch::from_bytes(buf).is_ok());
    }
}

/// The checksum covers the base offset and the leader epoch: a batch moved to another offset or
/// re-stamped by another leader without a new checksum is rejected (Kafka's CRC-32C does not
/// cover them).
#[test]
fn changed_base_offset_or_leader_epoch_is_rejected() {
    let recs = [Rec {
        ts: 1,
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: vec![],
    }];
    let good = build(&recs)
        .stamped(Stamp {
            base_offset: 1_000,
            leader_epoch: 7,
            append_timestamp: 99,
        })
        .as_bytes()
        .to_vec();
    RecordBatch::from_bytes(good.clone()).unwrap();
    let mut moved = good.clone();
    moved[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&1_001u64.to_le_bytes());
    assert!(RecordBatch::from_bytes(moved.clone()).is_err());
    assert!(BatchView::parse(&moved).is_err());
    let mut epoch = good;
    epoch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&8i32.to_le_bytes());
    assert!(RecordBatch::from_bytes(epoch).is_err());
}

/// An empty builder is not a batch; a batch whose trailing bytes exceed the records is rejected.
#[test]
fn empty_batch_and_trailing_bytes_are_rejected() {
    assert!(BatchBuilder::new().build().is_err());
    let b = build(&[Rec {
        ts: 1,
        key: None,
        value: None,
        headers: vec![],
    }]);
    let mut longer = b.as_bytes().to_vec();
    longer.push(0);
    assert!(RecordBatch::from_bytes(longer.clone()).is_err());
    // Even with the length and checksum fixed up, the extra byte is not a record.
    let len = longer.len() as u32;
    longer[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
    let crc = compute_crc(&longer).unwrap();
    longer[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let (view, _) = BatchView::parse(&longer).unwrap();
    assert!(view.verify_records().is_err());
    assert!(RecordBatch::from_bytes(longer).is_err());
}

/// `RecordBatch::set_producer` (the `Producer` handle's re-numbering after an epoch bump) gives
/// exactly the batch the builder would have built with those producer fields, checksums
/// included, even from a stamped batch; a field the header refuses is an error and leaves the
/// batch unchanged.
#[test]
fn set_producer_equals_building_with_the_producer() {
    let builder = || {
        let mut b = BatchBuilder::new();
        b.push(5, Some(b"k"), Some(b"v1"))
            .push(7, None, Some(b"v2"));
        b
    };
    let (id, epoch, seq) = (oncelog::ProducerId(42), 3, 1_000);
    let want = builder().producer(id, epoch, seq).build().unwrap();
    let mut got = builder()
        .producer(oncelog::ProducerId(1), 0, 0)
        .build()
        .unwrap()
        .stamped(Stamp {
            base_offset: 77,
            leader_epoch: 2,
            append_timestamp: 9,
        });
    got.set_producer(id, epoch, seq).unwrap();
    assert_eq!(got.as_bytes(), want.as_bytes());
    assert_eq!(got.header(), want.header());
    assert_eq!(
        RecordBatch::from_bytes(got.as_bytes().to_vec()).unwrap(),
        want
    );
    // The cached tail checksum follows: stamping the re-numbered batch stays valid.
    let stamp = Stamp {
        base_offset: 10,
        leader_epoch: 1,
        append_timestamp: 3,
    };
    assert_eq!(got.stamped(stamp), want.stamped(stamp));
    RecordBatch::from_bytes(got.stamped(stamp).as_bytes().to_vec()).unwrap();
    assert!(got.set_producer(id, epoch, -5).is_err());
    assert_eq!(got, want);
}
