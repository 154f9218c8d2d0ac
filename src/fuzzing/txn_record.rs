//! Transaction-state record target: hostile bytes never panic the decoder, whatever it accepts
//! holds the metadata invariants, applies to a `TxnStates` whose invariants hold, and
//! re-encodes to the same bytes (the codec is canonical).

use crate::coordinator::record::{decode, encode};
use crate::coordinator::{TxnRecord, TxnStates};

/// `decode_txn_record`. Input: `flags u8` (bit 0: null key, bit 1: null value) | `key_len
/// u16 LE` | key | value (the rest).
pub fn decode_txn_record(data: &[u8]) {
    let (key, value) = split_input(data);
    let Ok(rec) = decode(key, value) else {
        return;
    };
    if let TxnRecord::Txn(m) = &rec {
        assert_eq!(
            m.validate(),
            Ok(()),
            "an accepted record breaks an invariant"
        );
    }
    let (k, v) = encode(&rec);
    assert_eq!(Some(k.as_slice()), key, "key does not round-trip: {rec:?}");
    assert_eq!(v.as_deref(), value, "value does not round-trip: {rec:?}");
    let mut states = TxnStates::new();
    states.apply(&rec);
    states.check_invariants();
}

/// The key and value a `decode_txn_record` input stands for.
fn split_input(data: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let flags = data.first().copied().unwrap_or(0);
    let len = data
        .get(1..3)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, |b| usize::from(u16::from_le_bytes(b)));
    let rest = data.get(3..).unwrap_or_default();
    let (key, value) = rest.split_at(len.min(rest.len()));
    (
        (flags & 1 == 0).then_some(key),
        (flags & 2 == 0).then_some(value),
    )
}

/// A `decode_txn_record` input for a key and value (the inverse of the split).
pub fn join_input(key: &[u8], value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let mut out = vec![0];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}
