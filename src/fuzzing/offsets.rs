//! Consumer-offsets target: hostile bytes never panic the offset-record decoders or the
//! offsets materialiser; whatever decodes re-encodes to the same bytes (a version 0 value
//! re-encodes as version 1, which decodes to the same value); a batch the
//! materialiser refuses changes nothing, and its invariants hold after every batch.

use crate::broker::TopicPartition;
use crate::format::batch::{BatchBuilder, BatchView, Stamp};
use crate::offsets::record::{decode_key, decode_value, encode_key, encode_value};
use crate::offsets::OffsetsState;
use crate::types::ProducerId;

/// Everything a state answers, for before/after comparisons.
type Answers = (
    Vec<(String, TopicPartition, u64, i64, String, u64)>,
    Vec<ProducerId>,
    u64,
);

fn answers(state: &OffsetsState) -> Answers {
    let live = state
        .live()
        .map(|(g, tp, c)| {
            (
                g.to_string(),
                tp.clone(),
                c.offset,
                c.commit_timestamp,
                c.metadata.as_str().to_string(),
                c.set_at,
            )
        })
        .collect();
    (live, state.pending_producers(), state.applied_to())
}

/// Applies `view`; a refused batch must leave the state as it was.
fn apply(state: &mut OffsetsState, view: &BatchView<'_>) {
    let before = answers(state);
    if state.apply_batch(view).is_err() {
        assert_eq!(answers(state), before, "a refused batch changed the state");
    }
    state.check_invariants();
}

/// `decode_offsets`. The first byte chooses: even, the rest is `key_len u8 | key | value`
/// (bit 1: the record goes into a transactional batch); odd, the rest is a run of stored
/// batches of an offsets log. The whole input is also decoded as a key and as a value.
pub fn decode_offsets(data: &[u8]) {
    for bytes in [data, data.get(1..).unwrap_or(&[])] {
        if let Ok(k) = decode_key(bytes) {
            assert_eq!(
                encode_key(&k),
                bytes,
                "offsets key does not round-trip: {k:?}"
            );
        }
        if let Ok(v) = decode_value(bytes) {
            let again = encode_value(&v);
            if bytes.first() == Some(&0) {
                assert!(v.metadata.is_empty(), "a version 0 value with metadata");
                assert_eq!(
                    decode_value(&again).as_ref(),
                    Ok(&v),
                    "a version 0 value does not survive re-encoding: {v:?}"
                );
            } else {
                assert_eq!(again, bytes, "offsets value does not round-trip: {v:?}");
            }
        }
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut state = OffsetsState::new(0);
    if mode % 2 == 1 {
        let mut rest = rest;
        while let Ok((view, tail)) = BatchView::parse(rest) {
            if view.base_offset() >= state.applied_to() {
                apply(&mut state, &view);
            }
            rest = tail;
        }
        return;
    }
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(n).min(rest.len()));
    let decoded = (decode_key(key), decode_value(value));
    let mut b = BatchBuilder::new();
    if mode & 2 != 0 {
        b = b.producer(ProducerId(1), 0, 0).transactional();
    }
    b.push(0, Some(key), Some(value));
    let Ok(batch) = b.build() else {
        return;
    };
    let batch = batch.stamped(Stamp {
        base_offset: 0,
        leader_epoch: 0,
        append_timestamp: 0,
    });
    let before = answers(&state);
    let result = state.apply_batch(&batch.view());
    state.check_invariants();
    let txn_rewrite = decoded.1.as_ref().is_ok_and(|v| v.as_of.is_some()) && mode & 2 != 0;
    match (&decoded, result) {
        ((Ok(_), Ok(_)), Ok(())) => assert!(!txn_rewrite),
        ((Ok(_), Ok(_)), Err(e)) => {
            assert!(txn_rewrite, "a valid record was refused: {e}");
            assert_eq!(answers(&state), before);
        }
        (_, Ok(())) => panic!("a record that does not decode was applied"),
        (_, Err(_)) => assert_eq!(answers(&state), before),
    }
}
