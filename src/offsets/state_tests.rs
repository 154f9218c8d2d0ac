//! Tests of `OffsetsState`: every state of one key and one producer against every request, hostile
//! batches, and a model proptest (plain commits, transactional offsets of several producers,
//! markers, rewrites copying an earlier snapshot, and replays from the compaction cut).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::format::batch::{BatchBuilder, RecordBatch, Stamp};
use crate::offsets::record::{encode_key, encode_value};

fn tp(p: u32) -> TopicPartition {
    TopicPartition::new("t", p).unwrap()
}

fn key_of(group: &str, p: u32) -> OffsetKey {
    OffsetKey::new(group, tp(p)).unwrap()
}

/// The metadata string every helper commits with offset `o`: 0 to 4 bytes, so a key's
/// rewrite size changes as its offset does (the `live_bytes` accounting).
fn meta_for(o: u64) -> OffsetMetadata {
    OffsetMetadata::new("m".repeat((o % 5) as usize)).unwrap()
}

/// A commit of `o` with its metadata.
fn value_of(o: u64, ts: i64) -> OffsetValue {
    OffsetValue {
        metadata: meta_for(o),
        ..OffsetValue::commit(o, ts)
    }
}

const P: ProducerId = ProducerId(1);
const Q: ProducerId = ProducerId(2);

/// Builds the batches of an offsets log at consecutive offsets and feeds them to a state.
struct Feed {
    next: u64,
    batches: Vec<RecordBatch>,
    state: OffsetsState,
}

impl Feed {
    fn new(start: u64) -> Feed {
        Feed {
            next: start,
            batches: Vec::new(),
            state: OffsetsState::new(start),
        }
    }

    fn push(&mut self, b: BatchBuilder) -> Result<u64, ApplyError> {
        let at = self.next;
        let batch = b.build().unwrap().stamped(Stamp {
            base_offset: at,
            leader_epoch: 0,
            append_timestamp: 0,
        });
        self.next = batch.header().next_offset();
        let r = self.state.apply_batch(&batch.view());
        self.state.check_invariants();
        self.batches.push(batch);
        r.map(|()| at)
    }

    fn records(mut b: BatchBuilder, recs: &[(OffsetKey, OffsetValue)]) -> BatchBuilder {
        for (k, v) in recs {
            b.push(0, Some(&encode_key(k)), Some(&encode_value(v)));
        }
        b
    }

    fn plain(&mut self, recs: &[(OffsetKey, u64)]) -> u64 {
        let recs: Vec<_> = recs
            .iter()
            .map(|(k, o)| (k.clone(), value_of(*o, 7)))
            .collect();
        self.push(Self::records(BatchBuilder::new(), &recs))
            .unwrap()
    }

    fn txn(&mut self, pid: ProducerId, recs: &[(OffsetKey, u64)]) -> u64 {
        let recs: Vec<_> = recs
            .iter()
            .map(|(k, o)| (k.clone(), value_of(*o, 8)))
            .collect();
        let b = BatchBuilder::new().producer(pid, 0, 0).transactional();
        self.push(Self::records(b, &recs)).unwrap()
    }

    fn rewrite(&mut self, as_of: u64, recs: &[(OffsetKey, u64)]) -> u64 {
        let recs: Vec<_> = recs
            .iter()
            .map(|(k, o)| {
                let v = OffsetValue {
                    as_of: Some(as_of),
                    ..value_of(*o, 9)
                };
                (k.clone(), v)
            })
            .collect();
        self.push(Self::records(BatchBuilder::new(), &recs))
            .unwrap()
    }

    fn marker(&mut self, pid: ProducerId, kind: MarkerKind) -> u64 {
        let m = Marker {
            producer_id: pid,
            producer_epoch: 1,
            coordinator_epoch: 0,
            kind,
        };
        let batch = m.to_batch(0).unwrap();
        let at = self.next;
        let batch = batch.stamped(Stamp {
            base_offset: at,
            leader_epoch: 0,
            append_timestamp: 0,
        });
        self.next += 1;
        self.state.apply_batch(&batch.view()).unwrap();
        self.state.check_invariants();
        self.batches.push(batch);
        at
    }
}

// ---- Every state of one key and one producer x every request ----

/// The state of key `g/t-0` and producer P before the request.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    Committed,
    Pending,
    CommittedAndPending,
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Plain,
    TxnP,
    TxnQ,
    CommitP,
    AbortP,
    CommitQ,
    /// A rewrite to offset 99 as of an offset below the key's `set_at`.
    RewriteStale,
    /// A rewrite to offset 99 as of an offset above the key's `set_at` (or of an absent key).
    RewriteFresh,
}

/// Committed offset of the key and P's pending offset for it, afterwards.
type After = (Option<u64>, Option<u64>);

fn setup(before: Before) -> Feed {
    let mut f = Feed::new(10);
    f.plain(&[(key_of("other", 0), 1)]);
    if matches!(before, Before::Committed | Before::CommittedAndPending) {
        f.plain(&[(key_of("g", 0), 5)]);
    }
    if matches!(before, Before::Pending | Before::CommittedAndPending) {
        f.txn(P, &[(key_of("g", 0), 6)]);
    }
    f
}

fn run(f: &mut Feed, r: Request) {
    let k = key_of("g", 0);
    match r {
        Request::Plain => {
            f.plain(&[(k, 7)]);
        }
        Request::TxnP => {
            f.txn(P, &[(k, 8)]);
        }
        Request::TxnQ => {
            f.txn(Q, &[(k, 9)]);
        }
        Request::CommitP => {
            f.marker(P, MarkerKind::Commit);
        }
        Request::AbortP => {
            f.marker(P, MarkerKind::Abort);
        }
        Request::CommitQ => {
            f.marker(Q, MarkerKind::Commit);
        }
        Request::RewriteStale => {
            let set_at = f.state.get(&k).map_or(0, |c| c.set_at);
            f.rewrite(set_at, &[(k, 99)]);
        }
        Request::RewriteFresh => {
            let as_of = f.next;
            f.rewrite(as_of, &[(k, 99)]);
        }
    }
}

fn after(f: &Feed) -> After {
    let k = key_of("g", 0);
    let pending = f
        .state
        .pending
        .get(&P)
        .and_then(|t| t.offsets.get(&k))
        .map(|v| v.offset);
    (f.state.committed("g", k.partition()), pending)
}

#[test]
fn every_state_and_request() {
    use Before::*;
    use Request::*;
    #[rustfmt::skip]
    let table: &[(Before, Request, After)] = &[
        (Nothing, Plain, (Some(7), None)),
        (Nothing, TxnP, (None, Some(8))),
        (Nothing, TxnQ, (None, None)),
        (Nothing, CommitP, (None, None)),
        (Nothing, AbortP, (None, None)),
        (Nothing, CommitQ, (None, None)),
        (Nothing, RewriteStale, (Some(99), None)),
        (Nothing, RewriteFresh, (Some(99), None)),
        (Committed, Plain, (Some(7), None)),
        (Committed, TxnP, (Some(5), Some(8))),
        (Committed, TxnQ, (Some(5), None)),
        (Committed, CommitP, (Some(5), None)),
        (Committed, AbortP, (Some(5), None)),
        (Committed, CommitQ, (Some(5), None)),
        (Committed, RewriteStale, (Some(5), None)),
        (Committed, RewriteFresh, (Some(99), None)),
        (Pending, Plain, (Some(7), Some(6))),
        (Pending, TxnP, (None, Some(8))),
        (Pending, TxnQ, (None, Some(6))),
        (Pending, CommitP, (Some(6), None)),
        (Pending, AbortP, (None, None)),
        (Pending, CommitQ, (None, Some(6))),
        (Pending, RewriteStale, (Some(99), Some(6))),
        (Pending, RewriteFresh, (Some(99), Some(6))),
        (CommittedAndPending, Plain, (Some(7), Some(6))),
        (CommittedAndPending, TxnP, (Some(5), Some(8))),
        (CommittedAndPending, TxnQ, (Some(5), Some(6))),
        (CommittedAndPending, CommitP, (Some(6), None)),
        (CommittedAndPending, AbortP, (Some(5), None)),
        (CommittedAndPending, CommitQ, (Some(5), Some(6))),
        (CommittedAndPending, RewriteStale, (Some(5), Some(6))),
        (CommittedAndPending, RewriteFresh, (Some(99), Some(6))),
    ];
    for &(before, request, want) in table {
        let mut f = setup(before);
        let untouched = f.state.committed("other", &tp(0));
        run(&mut f, request);
        assert_eq!(after(&f), want, "{before:?} x {request:?}");
        assert_eq!(f.state.committed("other", &tp(0)), untouched);
        assert_eq!(f.state.applied_to(), f.next, "{before:?} x {request:?}");
    }
}

#[test]
fn a_commit_marker_wins_over_a_plain_commit_between_the_batch_and_the_marker() {
    let mut f = Feed::new(0);
    let k = key_of("g", 0);
    f.txn(P, &[(k.clone(), 10)]);
    f.plain(&[(k.clone(), 20)]);
    assert_eq!(f.state.committed("g", &tp(0)), Some(20));
    let m = f.marker(P, MarkerKind::Commit);
    assert_eq!(f.state.committed("g", &tp(0)), Some(10));
    assert_eq!(f.state.get(&k).unwrap().set_at, m);
}

#[test]
fn later_records_win_within_a_batch_and_across_a_transaction() {
    let mut f = Feed::new(0);
    let (a, b) = (key_of("g", 0), key_of("g", 1));
    f.plain(&[(a.clone(), 1), (b.clone(), 2), (a.clone(), 3)]);
    assert_eq!(
        f.state.committed_for_group("g"),
        BTreeMap::from([(tp(0), 3), (tp(1), 2)])
    );
    let first = f.txn(P, &[(a.clone(), 4), (a.clone(), 5)]);
    f.txn(P, &[(b.clone(), 6), (a.clone(), 7)]);
    assert_eq!(f.state.first_pending_offset(), Some(first));
    assert_eq!(f.state.pending_producers(), vec![P]);
    f.marker(P, MarkerKind::Commit);
    assert_eq!(
        f.state.committed_for_group("g"),
        BTreeMap::from([(tp(0), 7), (tp(1), 6)])
    );
    assert_eq!(f.state.first_pending_offset(), None);
    assert!(f.state.committed_for_group("nobody").is_empty());
}

#[test]
fn groups_are_independent() {
    let mut f = Feed::new(0);
    f.plain(&[(key_of("a", 0), 1)]);
    f.txn(P, &[(key_of("b", 0), 2)]);
    f.plain(&[(key_of("b", 0), 3)]);
    f.marker(P, MarkerKind::Abort);
    assert_eq!(f.state.committed("a", &tp(0)), Some(1));
    assert_eq!(f.state.committed("b", &tp(0)), Some(3));
}

#[test]
fn bytes_since_rewrite_count_from_the_last_rewrite() {
    let mut f = Feed::new(0);
    f.plain(&[(key_of("g", 0), 1)]);
    f.marker(P, MarkerKind::Abort);
    let total: u64 = f.batches.iter().map(|b| b.len() as u64).sum();
    assert_eq!(f.state.bytes_since_rewrite(), total);
    f.rewrite(f.next, &[(key_of("g", 0), 1)]);
    assert_eq!(f.state.bytes_since_rewrite(), 0);
    f.plain(&[(key_of("g", 1), 2)]);
    assert_eq!(
        f.state.bytes_since_rewrite(),
        f.batches.last().unwrap().len() as u64
    );
}

// ---- Hostile batches: refused whole, nothing applied ----

/// A batch holding a valid record and then `(key, value)`, applied after a plain commit and a
/// pending transaction: returns the error, and asserts that nothing changed.
fn hostile(key: Option<&[u8]>, value: Option<&[u8]>, txn: bool) -> Result<(), ApplyError> {
    let mut f = Feed::new(0);
    f.plain(&[(key_of("g", 0), 1)]);
    f.txn(Q, &[(key_of("g", 1), 1)]);
    let snapshot = |f: &Feed| {
        (
            f.state.groups.clone(),
            f.state.pending.clone(),
            f.state.applied_to(),
        )
    };
    let before = snapshot(&f);
    let mut b = BatchBuilder::new();
    if txn {
        b = b.producer(P, 0, 0).transactional();
    }
    let good = encode_value(&OffsetValue::commit(50, 0));
    b.push(0, Some(&encode_key(&key_of("g", 0))), Some(&good));
    b.push(0, key, value);
    let r = f.push(b);
    assert_eq!(snapshot(&f), before);
    r.map(|_| ())
}

/// What a hostile record is, its key, its value, and whether its batch is transactional.
type Hostile<'a> = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>, bool);

#[test]
fn a_bad_record_refuses_the_whole_batch() {
    let k = encode_key(&key_of("g", 2));
    let v = encode_value(&OffsetValue::commit(1, 0));
    let rw = encode_value(&OffsetValue {
        as_of: Some(0),
        ..value_of(1, 0)
    });
    let cases: [Hostile; 5] = [
        ("no key", None, Some(&v), false),
        (
            "no value (a deletion) in a transaction",
            Some(&k),
            None,
            true,
        ),
        ("garbage key", Some(b"zz"), Some(&v), false),
        ("garbage value", Some(&k), Some(b"zz"), true),
        ("rewrite in a transaction", Some(&k), Some(&rw), true),
    ];
    for (what, key, value, txn) in cases {
        let e = hostile(key, value, txn).expect_err(what);
        assert_eq!(e.offset, 3, "{what}: the second record of the batch at 2");
    }
}

/// Why the compaction cut is `min(s, first pending at s)` and not the rewrite's own offset:
/// a transaction pending at the snapshot `s` commits before the rewrite lands.
#[test]
fn a_cut_past_the_snapshot_or_a_pending_transaction_would_lose_a_commit() {
    let mut f = Feed::new(0);
    let k = key_of("g", 0);
    f.plain(&[(k.clone(), 5)]);
    let first_pending = f.txn(P, &[(k.clone(), 7)]);
    let s = f.next;
    f.marker(P, MarkerKind::Commit);
    let r = f.rewrite(s, &[(k.clone(), 5)]);
    assert_eq!(
        f.state.committed("g", &tp(0)),
        Some(7),
        "the rewrite did not revert it"
    );
    let replay = |from: u64| {
        let mut st = OffsetsState::new(from);
        for b in f.batches.iter().filter(|b| b.header().base_offset >= from) {
            st.apply_batch(&b.view()).unwrap();
        }
        st.committed("g", &tp(0))
    };
    assert_eq!(replay(first_pending.min(s)), Some(7));
    assert_eq!(replay(s), Some(5), "a cut at s loses the pending offsets");
    assert_eq!(replay(r), Some(5), "a cut at the rewrite loses the commit");
}

#[test]
fn a_batch_below_the_applied_offset_is_refused() {
    let mut f = Feed::new(0);
    f.plain(&[(key_of("g", 0), 1)]);
    let again = f.batches[0].clone();
    assert!(f.state.apply_batch(&again.view()).is_err());
    assert_eq!(f.state.applied_to(), 1);
}

// ---- The model ----

const KEYS: u32 = 6;

fn model_key(i: u32) -> OffsetKey {
    key_of(if i.is_multiple_of(2) { "even" } else { "odd" }, i / 2)
}

#[derive(Debug, Clone)]
enum Op {
    Plain(Vec<(u32, u64)>),
    Txn(usize, Vec<(u32, u64)>),
    Marker(usize, bool),
    /// A rewrite of the committed offsets as of `lag` batches ago (but not before the previous
    /// rewrite), split into `parts` batches.
    Rewrite {
        lag: usize,
        parts: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let recs = proptest::collection::vec((0..KEYS, 0..1000u64), 1..4);
    prop_oneof![
        3 => recs.clone().prop_map(Op::Plain),
        3 => (0..3usize, recs).prop_map(|(p, r)| Op::Txn(p, r)),
        2 => (0..3usize, any::<bool>()).prop_map(|(p, c)| Op::Marker(p, c)),
        1 => (0..4usize, 1..3usize).prop_map(|(lag, parts)| Op::Rewrite { lag, parts }),
    ]
}

/// What the model knew at a batch boundary.
#[derive(Debug, Clone)]
struct Snapshot {
    at: u64,
    committed: BTreeMap<u32, u64>,
    first_pending: Option<u64>,
}

/// A rewrite done during the run: where the store would have moved the log start.
#[derive(Debug)]
struct Cut {
    new_start: u64,
}

fn pid(i: usize) -> ProducerId {
    ProducerId(100 + i as i64)
}

fn check_against_model(
    f: &Feed,
    committed: &BTreeMap<u32, u64>,
    pending: &[BTreeMap<u32, u64>; 3],
) -> Result<(), TestCaseError> {
    for group in ["even", "odd"] {
        let want: BTreeMap<TopicPartition, u64> = committed
            .iter()
            .map(|(&i, &o)| (model_key(i), o))
            .filter(|(k, _)| k.group() == group)
            .map(|(k, o)| (k.partition().clone(), o))
            .collect();
        prop_assert_eq!(f.state.committed_for_group(group), want);
    }
    for (group, tp, c) in f.state.live() {
        prop_assert_eq!(&c.metadata, &meta_for(c.offset), "{}/{}", group, tp);
    }
    let want: Vec<ProducerId> = (0..3)
        .filter(|&i| !pending[i].is_empty())
        .map(pid)
        .collect();
    prop_assert_eq!(f.state.pending_producers(), want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Committed offsets equal the model's after every batch: a committed transaction's
    /// offsets visible, an aborted one's never, an open one's not yet; a rewrite of any earlier
    /// snapshot changes nothing. Then, for every rewrite, a replay from where compaction would
    /// move the log start gives exactly the full state (committed, `set_at`, pending).
    #[test]
    fn offsets_match_the_model_and_survive_every_compaction_cut(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut f = Feed::new(0);
        let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
        let mut pending: [BTreeMap<u32, u64>; 3] = Default::default();
        let mut history = vec![Snapshot { at: 0, committed: BTreeMap::new(), first_pending: None }];
        let mut cuts = Vec::new();
        let mut rewritten_to = 0;
        for op in ops {
            match op {
                Op::Plain(recs) => {
                    let r: Vec<_> = recs.iter().map(|&(k, o)| (model_key(k), o)).collect();
                    f.plain(&r);
                    committed.extend(recs);
                }
                Op::Txn(p, recs) => {
                    let r: Vec<_> = recs.iter().map(|&(k, o)| (model_key(k), o)).collect();
                    f.txn(pid(p), &r);
                    pending[p].extend(recs);
                }
                Op::Marker(p, commit) => {
                    let kind = if commit { MarkerKind::Commit } else { MarkerKind::Abort };
                    f.marker(pid(p), kind);
                    let offsets = std::mem::take(&mut pending[p]);
                    if commit {
                        committed.extend(offsets);
                    }
                }
                Op::Rewrite { lag, parts } => {
                    // The snapshot is taken after the previous rewrite was applied (the
                    // store compacts under its lock, after catching up): batches of others
                    // may land between the snapshot and the rewrite, rewrites never do.
                    let snap = history[history.len().saturating_sub(1 + lag)..]
                        .iter()
                        .find(|h| h.at >= rewritten_to)
                        .unwrap()
                        .clone();
                    if snap.committed.is_empty() {
                        continue;
                    }
                    let recs: Vec<_> =
                        snap.committed.iter().map(|(&k, &o)| (model_key(k), o)).collect();
                    let per = recs.len().div_ceil(parts);
                    for chunk in recs.chunks(per) {
                        f.rewrite(snap.at, chunk);
                    }
                    rewritten_to = f.next;
                    // The store's rule: the snapshot's offset (the rewrite itself when nothing
                    // landed in between), or the first offset pending at the snapshot.
                    let new_start = snap.first_pending.map_or(snap.at, |p| p.min(snap.at));
                    cuts.push(Cut { new_start });
                }
            }
            check_against_model(&f, &committed, &pending)?;
            history.push(Snapshot {
                at: f.next,
                committed: committed.clone(),
                first_pending: f.state.first_pending_offset(),
            });
        }
        for cut in cuts {
            let mut replay = OffsetsState::new(cut.new_start);
            for b in f.batches.iter().filter(|b| b.header().base_offset >= cut.new_start) {
                replay.apply_batch(&b.view()).unwrap();
            }
            replay.check_invariants();
            prop_assert_eq!(&replay.groups, &f.state.groups, "cut at {}", cut.new_start);
            prop_assert_eq!(&replay.pending, &f.state.pending, "cut at {}", cut.new_start);
            prop_assert_eq!(replay.applied_to(), f.state.applied_to());
        }
    }
}

/// A record without a value in a plain batch deletes the key's committed offset (its topic was
/// deleted) and nothing else; the key can be committed again afterwards, and a replay of the
/// batches rebuilds the same state.
#[test]
fn a_deletion_record_forgets_only_its_key() {
    let mut f = Feed::new(0);
    f.plain(&[
        (key_of("g", 0), 5),
        (key_of("g", 1), 6),
        (key_of("h", 0), 7),
    ]);
    let live_before = f.state.live_bytes;
    let mut b = BatchBuilder::new();
    b.push(0, Some(&encode_key(&key_of("g", 0))), None);
    b.push(0, Some(&encode_key(&key_of("h", 0))), None);
    f.push(b).unwrap();
    assert_eq!(f.state.committed("g", &tp(0)), None);
    assert_eq!(f.state.committed("h", &tp(0)), None);
    assert_eq!(f.state.committed("g", &tp(1)), Some(6));
    assert!(f.state.live_bytes < live_before);
    assert!(
        !f.state.groups.contains_key("h"),
        "an emptied group is dropped"
    );
    f.plain(&[(key_of("g", 0), 9)]);
    assert_eq!(f.state.committed("g", &tp(0)), Some(9));
    let mut replay = OffsetsState::new(0);
    for b in &f.batches {
        replay.apply_batch(&b.view()).unwrap();
    }
    assert_eq!(replay.groups, f.state.groups);
    assert_eq!(replay.live_bytes, f.state.live_bytes);
}
