//! The record decoder (`BatchView::records`, `varint::get_varint`/`get_varlong`) against the
//! decoder it replaced (commit 560ffab), kept here verbatim as an oracle: on valid batches and on
//! corrupt record bytes both yield the same items, the same records and the same errors, and
//! neither panics.

use proptest::prelude::*;

use super::batch::{BatchBuilder, BatchView, RECORDS_OFFSET};
use super::DecodeError;

/// The decoder as it was before the inline varint fast paths: byte-at-a-time varints, a walk
/// of every record's headers through `HeaderIter`, bounds via `buf.get(..end)`.
mod old {
    use crate::format::DecodeError;

    const BAD: DecodeError = DecodeError::BadRecord {
        index: 0,
        reason: "malformed varint",
    };

    pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = *buf.get(*pos).ok_or(BAD)?;
            *pos += 1;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(BAD)
    }

    pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
        i32::try_from(get_varlong(buf, pos)?).map_err(|_| BAD)
    }

    fn take<'a>(
        buf: &'a [u8],
        pos: &mut usize,
        len: i32,
        index: u32,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        if len == -1 {
            return Ok(None);
        }
        let bad = DecodeError::BadRecord {
            index,
            reason: "field length",
        };
        let len = usize::try_from(len).map_err(|_| bad.clone())?;
        let end = pos.checked_add(len).ok_or(bad.clone())?;
        let bytes = buf.get(*pos..end).ok_or(bad)?;
        *pos = end;
        Ok(Some(bytes))
    }

    pub type Header = (Vec<u8>, Option<Vec<u8>>);

    /// What one item of the iterator carried: offset delta, timestamp, key, value, headers.
    pub type Owned = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<Header>);

    pub struct HeaderIter<'a> {
        pub buf: &'a [u8],
        pub pos: usize,
        pub left: u32,
    }

    impl<'a> Iterator for HeaderIter<'a> {
        type Item = Result<(&'a [u8], Option<&'a [u8]>), DecodeError>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            let mut one = || {
                let klen = get_varint(self.buf, &mut self.pos)?;
                let key =
                    take(self.buf, &mut self.pos, klen, 0)?.ok_or(DecodeError::BadRecord {
                        index: 0,
                        reason: "null header key",
                    })?;
                let vlen = get_varint(self.buf, &mut self.pos)?;
                let value = take(self.buf, &mut self.pos, vlen, 0)?;
                Ok((key, value))
            };
            let item = one();
            if item.is_err() {
                self.left = 0;
            }
            Some(item)
        }
    }

    pub struct RecordIter<'a> {
        pub buf: &'a [u8],
        pub pos: usize,
        pub index: u32,
        pub count: u32,
        pub base_timestamp: i64,
    }

    impl RecordIter<'_> {
        fn decode_one(&mut self) -> Result<Owned, DecodeError> {
            let index = self.index;
            let bad = |reason| DecodeError::BadRecord { index, reason };
            let mut pos = self.pos;
            let len = get_varint(self.buf, &mut pos).map_err(|_| bad("length varint"))?;
            let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
            let end = pos.checked_add(len).ok_or(bad("length"))?;
            let body = self.buf.get(..end).ok_or(bad("length past batch end"))?;
            let _attributes = *body.get(pos).ok_or(bad("attributes"))?;
            pos += 1;
            let ts_delta = get_varlong(body, &mut pos).map_err(|_| bad("timestamp delta"))?;
            let offset_delta = get_varint(body, &mut pos).map_err(|_| bad("offset delta"))?;
            let key_len = get_varint(body, &mut pos).map_err(|_| bad("key length"))?;
            let key = take(body, &mut pos, key_len, index)?;
            let value_len = get_varint(body, &mut pos).map_err(|_| bad("value length"))?;
            let value = take(body, &mut pos, value_len, index)?;
            let header_count = get_varint(body, &mut pos).map_err(|_| bad("header count"))?;
            let header_count = u32::try_from(header_count).map_err(|_| bad("header count"))?;
            let headers = body.get(pos..end).ok_or(bad("headers"))?;
            let mut walk = HeaderIter {
                buf: headers,
                pos: 0,
                left: header_count,
            };
            for h in walk.by_ref() {
                h.map_err(|_| bad("header"))?;
            }
            if walk.pos != headers.len() {
                return Err(bad("trailing bytes"));
            }
            self.pos = end;
            let headers = HeaderIter {
                buf: headers,
                pos: 0,
                left: header_count,
            }
            .map(|h| {
                let (k, v) = h.expect("walked above");
                (k.to_vec(), v.map(<[u8]>::to_vec))
            })
            .collect();
            Ok((
                offset_delta,
                self.base_timestamp.wrapping_add(ts_delta),
                key.map(<[u8]>::to_vec),
                value.map(<[u8]>::to_vec),
                headers,
            ))
        }
    }

    impl Iterator for RecordIter<'_> {
        type Item = Result<Owned, DecodeError>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.index >= self.count {
                if self.pos != self.buf.len() {
                    self.pos = self.buf.len();
                    return Some(Err(DecodeError::BadRecord {
                        index: self.index,
                        reason: "bytes after the last record",
                    }));
                }
                return None;
            }
            let item = self.decode_one();
            self.index += 1;
            if item.is_err() {
                self.index = self.count;
                self.pos = self.buf.len();
            }
            Some(item)
        }
    }
}

/// Every item the current decoder yields for `view`, owned.
fn new_items(view: &BatchView<'_>) -> Vec<Result<old::Owned, DecodeError>> {
    view.records()
        .map(|r| {
            r.map(|r| {
                let headers = r
                    .headers()
                    .map(|h| {
                        let (k, v) = h.expect("headers of a decoded record decode");
                        (k.to_vec(), v.map(<[u8]>::to_vec))
                    })
                    .collect();
                (
                    r.offset_delta,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    headers,
                )
            })
        })
        .collect()
}

/// Every item the old decoder yields for `view`.
fn old_items(view: &BatchView<'_>) -> Vec<Result<old::Owned, DecodeError>> {
    old::RecordIter {
        buf: view.as_bytes().get(RECORDS_OFFSET..).unwrap_or(&[]),
        pos: 0,
        index: 0,
        count: view.header().record_count as u32,
        base_timestamp: view.header().base_timestamp,
    }
    .collect()
}

type Field = Option<Vec<u8>>;
/// A record to build: timestamp, key, value, headers.
type Rec = (i64, Field, Field, Vec<(Vec<u8>, Field)>);

/// Field sizes cross the one-, two- and
/// three-byte varint boundaries (63/64, 8191/8192 after zig-zag).
fn record() -> impl Strategy<Value = Rec> {
    let bytes = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..130),
        1 => proptest::collection::vec(any::<u8>(), 8180..8200),
    ];
    let field = proptest::option::weighted(0.8, bytes);
    let small = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..70));
    let header = (proptest::collection::vec(any::<u8>(), 0..70), small);
    (
        prop_oneof![
            any::<i64>(),
            -100i64..100,
            1_700_000_000_000i64..1_700_000_010_000
        ],
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..70)),
        field,
        proptest::collection::vec(header, 0..3),
    )
}

/// The bytes of a batch built from `records`.
fn build(records: &[Rec]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for (ts, key, value, headers) in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        b.push_with_headers(*ts, key.as_deref(), value.as_deref(), &headers);
    }
    b.build().expect("valid records build").as_bytes().to_vec()
}

/// A change to a valid batch's record bytes (the header's length kept consistent, so the
/// records reach the record decoder; the checksum is not checked here).
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite the byte at this fraction of the records with this value.
    Set(u16, u8),
    /// Insert a byte.
    Insert(u16, u8),
    /// Remove a byte.
    Remove(u16),
    /// Declare another record count (`last_offset_delta` follows, so the header stays valid).
    Count(i32),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<u16>(), any::<u8>()).prop_map(|(at, b)| Damage::Set(at, b)),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => any::<u16>().prop_map(Damage::Remove),
        1 => (1i32..40).prop_map(Damage::Count),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    let records = bytes.len() - RECORDS_OFFSET;
    let at = |f: u16| RECORDS_OFFSET + (usize::from(f) * records.max(1)) / 65536;
    match *d {
        Damage::Set(f, b) if records > 0 => bytes[at(f)] = b,
        Damage::Insert(f, b) => bytes.insert(at(f), b),
        Damage::Remove(f) if records > 0 => {
            bytes.remove(at(f));
        }
        Damage::Count(n) => {
            bytes[super::batch::RECORD_COUNT_OFFSET..][..4].copy_from_slice(&n.to_le_bytes());
            bytes[super::batch::LAST_OFFSET_DELTA_OFFSET..][..4]
                .copy_from_slice(&(n - 1).to_le_bytes());
        }
        _ => {}
    }
    let len = u32::try_from(bytes.len()).expect("small batch");
    bytes[super::batch::LENGTH_OFFSET..][..4].copy_from_slice(&len.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Valid batches: the same records as the old decoder, and `verify_records` accepts them.
    #[test]
    fn valid_batches_decode_as_before(records in proptest::collection::vec(record(), 1..20)) {
        let bytes = build(&records);
        let (view, rest) = BatchView::parse(&bytes).expect("a built batch parses");
        prop_assert!(rest.is_empty());
        let new = new_items(&view);
        prop_assert_eq!(&new, &old_items(&view));
        prop_assert_eq!(new.len(), records.len());
        for (i, (item, (ts, key, value, headers))) in new.iter().zip(&records).enumerate() {
            let (delta, t, k, v, h) = item.as_ref().expect("valid record");
            prop_assert_eq!(*delta, i as i32);
            prop_assert_eq!((t, k, v, h), (ts, key, value, headers));
        }
        prop_assert_eq!(view.verify_records(), Ok(()));
    }

    /// Damaged record bytes: the same items as the old decoder (records up to the damage, then
    /// the same error), and nothing panics.
    #[test]
    fn damaged_records_decode_as_before(
        records in proptest::collection::vec(record(), 1..8),
        damage in proptest::collection::vec(damage(), 1..4),
    ) {
        let mut bytes = build(&records);
        for d in &damage {
            apply(&mut bytes, d);
        }
        let (view, _) = BatchView::parse_unverified(&bytes).expect("the header stays valid");
        prop_assert_eq!(new_items(&view), old_items(&view));
        let _ = view.verify_records();
    }

    /// Random bytes where the records should be, under a valid header claiming 1..40 records.
    #[test]
    fn random_record_bytes_decode_as_before(
        body in proptest::collection::vec(
            prop_oneof![any::<u8>(), 0u8..4, 0x80u8..=0xff, Just(0xc8u8), Just(1u8)], 0..400),
        count in 1i32..40,
    ) {
        let mut bytes = build(&[(0, None, None, Vec::new())]);
        bytes.truncate(RECORDS_OFFSET);
        bytes.extend_from_slice(&body);
        apply(&mut bytes, &Damage::Count(count));
        let (view, _) = BatchView::parse_unverified(&bytes).expect("the header stays valid");
        let new = new_items(&view);
        prop_assert!(new.len() <= count as usize + 1);
        prop_assert_eq!(new, old_items(&view));
        let _ = view.verify_records();
    }
}
