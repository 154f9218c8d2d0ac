//! T16: model-based property test of the producer dedup state machine (INV-3/4/10/11), T16b:
//! `Duplicate`/`DuplicateSequence` only for ranges that were appended (below), T16c: issued
//! producer epochs strictly increase per id (below), and T19:
//! a producer-id explosion stays under the cap with deterministic eviction.
//!
//! The reference model below is written independently of `src/producer/state.rs` and kept as
//! plain as possible: per producer it stores the epoch and *every* batch appended in that epoch,
//! with absolute (unwrapped) sequence numbers; the retained window is simply the last 5 of them,
//! and expiry/eviction are linear scans. Random operation sequences over a few producers (in-order
//! appends, retries inside and behind the window, gaps, overlaps, epoch bumps with and without
//! seq 0, lower epochs, epoch i16::MAX, sequences wrapping after i32::MAX, unknown producers with
//! seq != 0, time jumping past expiry, a cap smaller than the number of producers) must get the
//! same decision from `check` as from the model, including the original offsets of duplicates.
//! After every operation the engine's table must equal the model's, and at the end:
//! - replaying the recorded batches through a fresh manager (the replication / recovery path)
//!   gives an equal table (`==`), whatever extra `expire` calls the live table saw;
//! - a snapshot (encode, decode, `from_entries`) gives an equal table.

use std::collections::BTreeMap;

use oncelog::format::snapshot;
use oncelog::producer::{
    BatchMetadata, CheckResult, ProducerConfig, ProducerStateManager, BATCHES_RETAINED,
};
use oncelog::{Error, ProducerEpoch, ProducerId, Sequence};
use proptest::prelude::*;

const RING: i64 = 1 << 31;
const HALF: i64 = 1 << 30;
const EXPIRATION_MS: i64 = 1_000;
const PRODUCERS: usize = 8;
const CFG: ProducerConfig = ProducerConfig {
    expiration_ms: EXPIRATION_MS as u64,
    max_producers: 4,
};

/// A decision, comparable (`Error` is not `PartialEq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Append,
    Duplicate(BatchMetadata),
    Fenced { current: ProducerEpoch },
    OutOfOrder { expected: Sequence },
    DuplicateSequence,
    Unknown,
}

fn engine_decision(r: Result<CheckResult, Error>) -> Decision {
    match r {
        Ok(CheckResult::Append) => Decision::Append,
        Ok(CheckResult::Duplicate(b)) => Decision::Duplicate(b),
        Err(Error::ProducerFenced { current_epoch, .. }) => Decision::Fenced {
            current: current_epoch,
        },
        Err(Error::OutOfOrderSequence {
            expected_sequence, ..
        }) => Decision::OutOfOrder {
            expected: expected_sequence,
        },
        Err(Error::DuplicateSequence { .. }) => Decision::DuplicateSequence,
        Err(Error::UnknownProducerId { .. }) => Decision::Unknown,
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn wrap(abs: i64) -> Sequence {
    Sequence::try_from(abs.rem_euclid(RING)).unwrap()
}

#[derive(Clone, Debug)]
struct ModelBatch {
    /// Absolute (never wrapped) first sequence within the epoch.
    abs_first: i64,
    count: i64,
    meta: BatchMetadata,
}

#[derive(Clone, Debug)]
struct ModelProducer {
    epoch: ProducerEpoch,
    /// Every batch of the current epoch, oldest first.
    batches: Vec<ModelBatch>,
    last_append: i64,
}

impl ModelProducer {
    fn window(&self) -> &[ModelBatch] {
        &self.batches[self.batches.len().saturating_sub(BATCHES_RETAINED)..]
    }

    fn next_abs(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.abs_first + b.count)
    }

    /// Does the retained window prove `[f, l]` was appended before it? The range is placed at
    /// its one absolute position within half a ring behind the next sequence (further back it
    /// reads as a batch ahead on the next lap); it must end before the oldest retained batch
    /// and start no earlier than that batch's lap: the window cannot tell how many laps came
    /// before, only that the epoch started at 0.
    fn behind_window(&self, f: Sequence, l: Sequence) -> bool {
        let next = self.next_abs();
        let d = (next - i64::from(f)).rem_euclid(RING);
        if d > HALF {
            return false;
        }
        let f_abs = next - d;
        let l_abs = f_abs + (i64::from(l) - i64::from(f)).rem_euclid(RING);
        let oldest = self.window()[0].abs_first;
        l_abs < oldest && f_abs >= oldest.div_euclid(RING) * RING
    }
}

#[derive(Clone, Debug, Default)]
struct Model {
    producers: BTreeMap<i64, ModelProducer>,
}

impl Model {
    fn live(&self, pid: i64, now: i64) -> Option<&ModelProducer> {
        self.producers
            .get(&pid)
            .filter(|p| now - p.last_append < EXPIRATION_MS)
    }

    fn decide(
        &self,
        pid: i64,
        epoch: ProducerEpoch,
        f: Sequence,
        l: Sequence,
        now: i64,
    ) -> Decision {
        let Some(p) = self.live(pid, now) else {
            return if f == 0 {
                Decision::Append
            } else {
                Decision::Unknown
            };
        };
        if epoch == p.epoch {
            let dup = p
                .window()
                .iter()
                .rev()
                .find(|b| b.meta.first_seq == f && b.meta.last_seq == l);
            if let Some(b) = dup {
                return Decision::Duplicate(b.meta);
            }
        }
        if epoch < p.epoch {
            return Decision::Fenced { current: p.epoch };
        }
        if epoch > p.epoch {
            return if f == 0 {
                Decision::Append
            } else {
                Decision::OutOfOrder { expected: 0 }
            };
        }
        let expected = wrap(p.next_abs());
        if f == expected {
            Decision::Append
        } else if p.behind_window(f, l) {
            Decision::DuplicateSequence
        } else {
            Decision::OutOfOrder { expected }
        }
    }

    fn expire(&mut self, now: i64) {
        self.producers
            .retain(|_, p| now - p.last_append < EXPIRATION_MS);
    }

    fn record(&mut self, pid: i64, epoch: ProducerEpoch, meta: BatchMetadata, count: i64) {
        self.expire(meta.append_time_ms);
        let is_new = !self.producers.contains_key(&pid);
        let p = self.producers.entry(pid).or_insert(ModelProducer {
            epoch,
            batches: Vec::new(),
            last_append: meta.append_time_ms,
        });
        if p.epoch != epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        let abs_first = if p.batches.is_empty() {
            i64::from(meta.first_seq)
        } else {
            p.next_abs()
        };
        assert_eq!(
            wrap(abs_first),
            meta.first_seq,
            "model: non-contiguous record"
        );
        p.batches.push(ModelBatch {
            abs_first,
            count,
            meta,
        });
        p.last_append = meta.append_time_ms;
        while is_new && self.producers.len() > CFG.max_producers {
            let victim = self
                .producers
                .iter()
                .filter(|(q, _)| **q != pid)
                .map(|(q, p)| (p.last_append, *q))
                .min()
                .unwrap();
            self.producers.remove(&victim.1);
        }
    }

    fn assert_matches(&self, engine: &ProducerStateManager) {
        let ours: Vec<_> = self
            .producers
            .iter()
            .map(|(pid, p)| {
                let window: Vec<BatchMetadata> = p.window().iter().map(|b| b.meta).collect();
                (ProducerId(*pid), p.epoch, window, p.last_append)
            })
            .collect();
        let theirs: Vec<_> = engine
            .entries()
            .map(|(pid, e)| {
                assert_eq!(e.txn_first_offset, None);
                (
                    pid,
                    e.epoch,
                    e.batches().copied().collect(),
                    e.last_append_ms,
                )
            })
            .collect();
        assert_eq!(ours, theirs);
    }
}

#[derive(Clone, Debug)]
enum Send {
    InOrder { count: i64 },
    Retry { back: usize },
    RetryBehindWindow { back: usize },
    Gap { skip: i64, count: i64 },
    Overlap { back: i64, count: i64 },
    SameFirstOtherLast { back: usize, extra: i64 },
    Bump { by: i16, seq0: bool, count: i64 },
    BumpToMax { count: i64 },
    Lower { by: i16, count: i64 },
    Arbitrary { first: Sequence, count: i64 },
}

#[derive(Clone, Debug)]
enum Op {
    Send {
        pid: usize,
        send: Send,
    },
    /// Replication path: a batch of the next epoch starting just before the wrap.
    PlaceNearWrap {
        pid: usize,
        back: i32,
        count: i64,
    },
    Tick {
        ms: i64,
    },
    Expire,
}

fn send_strategy() -> impl Strategy<Value = Send> {
    let count = 1..5i64;
    prop_oneof![
        6 => count.clone().prop_map(|count| Send::InOrder { count }),
        3 => (0..BATCHES_RETAINED).prop_map(|back| Send::Retry { back }),
        3 => (BATCHES_RETAINED..12).prop_map(|back| Send::RetryBehindWindow { back }),
        1 => (1..4i64, count.clone()).prop_map(|(skip, count)| Send::Gap { skip, count }),
        1 => (1..6i64, count.clone()).prop_map(|(back, count)| Send::Overlap { back, count }),
        1 => (0..BATCHES_RETAINED, 1..3i64)
            .prop_map(|(back, extra)| Send::SameFirstOtherLast { back, extra }),
        1 => (1..3i16, any::<bool>(), count.clone())
            .prop_map(|(by, seq0, count)| Send::Bump { by, seq0, count }),
        1 => count.clone().prop_map(|count| Send::BumpToMax { count }),
        1 => (1..3i16, count.clone()).prop_map(|(by, count)| Send::Lower { by, count }),
        1 => (prop_oneof![0..=i32::MAX, 0..3i32], count)
            .prop_map(|(first, count)| Send::Arbitrary { first, count }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Mostly a few busy producers (so windows fill up), sometimes any of them (cap eviction).
    let pid = || prop_oneof![4 => 0..3usize, 1 => 0..PRODUCERS];
    prop_oneof![
        24 => (pid(), send_strategy()).prop_map(|(pid, send)| Op::Send { pid, send }),
        1 => (pid(), 0..8i32, 1..5i64)
            .prop_map(|(pid, back, count)| Op::PlaceNearWrap { pid, back, count }),
        2 => (0..20i64).prop_map(|ms| Op::Tick { ms }),
        1 => ((EXPIRATION_MS - 3)..(EXPIRATION_MS + 3)).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Expire),
    ]
}

/// Everything the harness tracks besides the two tables.
struct Harness {
    engine: ProducerStateManager,
    model: Model,
    /// The log: every recorded batch in order (what a follower or a recovery replays).
    log: Vec<(ProducerId, ProducerEpoch, BatchMetadata)>,
    log_end: u64,
    now: i64,
}

impl Harness {
    fn record(&mut self, pid: i64, epoch: ProducerEpoch, first: Sequence, count: i64) {
        let meta = BatchMetadata {
            first_seq: first,
            last_seq: wrap(i64::from(first) + count - 1),
            first_offset: self.log_end,
            last_offset: self.log_end + count as u64 - 1,
            append_time_ms: self.now,
        };
        self.log_end += count as u64;
        self.engine.record(ProducerId(pid), epoch, meta);
        self.engine.set_map_end_offset(self.log_end);
        self.model.record(pid, epoch, meta, count);
        self.log.push((ProducerId(pid), epoch, meta));
    }

    /// The (epoch, first, last) a client would send for `send`, from the model's view.
    fn request(&self, pid: i64, send: &Send) -> (ProducerEpoch, Sequence, Sequence) {
        let p = self.model.producers.get(&pid);
        let epoch = p.map_or(0, |p| p.epoch);
        let next = p.map_or(0, ModelProducer::next_abs);
        let range = |first: i64, count: i64| (wrap(first), wrap(first + count - 1));
        let nth_back = |back: usize| {
            p.and_then(|p| p.batches.len().checked_sub(back + 1).map(|i| &p.batches[i]))
        };
        let (epoch, (f, l)) = match *send {
            Send::InOrder { count } => (epoch, range(next, count)),
            Send::Retry { back } | Send::RetryBehindWindow { back } => match nth_back(back) {
                Some(b) => (epoch, (b.meta.first_seq, b.meta.last_seq)),
                None => (epoch, range(next, 1)),
            },
            Send::Gap { skip, count } => (epoch, range(next + skip, count)),
            Send::Overlap { back, count } => (epoch, range(next - back, count)),
            Send::SameFirstOtherLast { back, extra } => match nth_back(back) {
                Some(b) => (epoch, range(b.abs_first, b.count + extra)),
                None => (epoch, range(next, 2)),
            },
            Send::Bump { by, seq0, count } => {
                let first = if seq0 { 0 } else { 1 + count };
                (epoch.saturating_add(by), range(first, count))
            }
            Send::BumpToMax { count } => (i16::MAX, range(0, count)),
            Send::Lower { by, count } => ((epoch - by).max(0), range(next, count)),
            Send::Arbitrary { first, count } => (epoch, range(i64::from(first), count)),
        };
        (epoch, f, l)
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Send { pid, send } => {
                let pid = *pid as i64;
                let (epoch, f, l) = self.request(pid, send);
                let expected = self.model.decide(pid, epoch, f, l, self.now);
                let actual =
                    engine_decision(self.engine.check(ProducerId(pid), epoch, f, l, self.now));
                assert_eq!(
                    actual, expected,
                    "pid {pid} epoch {epoch} seqs [{f}, {l}] at {}",
                    self.now
                );
                if actual == Decision::Append {
                    let count = (i64::from(l) - i64::from(f)).rem_euclid(RING) + 1;
                    self.record(pid, epoch, f, count);
                }
                self.now += 1;
            }
            Op::PlaceNearWrap { pid, back, count } => {
                let pid = *pid as i64;
                let epoch = match self.model.producers.get(&pid) {
                    None => 0,
                    Some(p) if p.epoch == i16::MAX => return,
                    Some(p) => p.epoch + 1,
                };
                self.record(pid, epoch, i32::MAX - back, *count);
                self.now += 1;
            }
            Op::Tick { ms } => self.now += ms,
            Op::Expire => {
                self.engine.expire(self.now);
                self.model.expire(self.now);
            }
        }
        self.engine.check_invariants();
        self.model.assert_matches(&self.engine);
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness {
        engine: ProducerStateManager::new(CFG),
        model: Model::default(),
        log: Vec::new(),
        log_end: 0,
        now: 1_000_000,
    };
    for op in ops {
        h.step(op);
    }

    // Replication / recovery: the recorded batches alone rebuild the same table. Explicit
    // `expire` calls the live table saw do not matter once both have expired at the same time.
    let mut replica = ProducerStateManager::new(CFG);
    for (pid, epoch, meta) in &h.log {
        replica.record(*pid, *epoch, *meta);
    }
    replica.set_map_end_offset(h.log_end);
    let mut live = h.engine.clone();
    live.expire(h.now);
    replica.expire(h.now);
    assert_eq!(
        replica, live,
        "replay of the log differs from the live table"
    );

    // Snapshot round trip.
    let bytes = snapshot::encode(h.engine.map_end_offset(), &h.engine);
    let (offset, entries) = snapshot::decode(&bytes).unwrap();
    assert_eq!(offset, h.log_end);
    let loaded = ProducerStateManager::from_entries(CFG, entries, offset);
    assert_eq!(loaded, h.engine, "snapshot round trip differs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn check_agrees_with_the_model(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        run(&ops);
    }
}

/// A long in-order run that crosses the wrap through the client path only.
#[test]
fn in_order_appends_wrap_after_i32_max() {
    let mut ops = vec![Op::PlaceNearWrap {
        pid: 0,
        back: 2,
        count: 1,
    }];
    for _ in 0..10 {
        ops.push(Op::Send {
            pid: 0,
            send: Send::InOrder { count: 2 },
        });
    }
    ops.push(Op::Send {
        pid: 0,
        send: Send::RetryBehindWindow { back: 7 },
    });
    run(&ops);
}

/// T19: 10^6 short-lived producers (one batch each) with a cap of 10,000.
#[test]
fn producer_id_explosion_stays_under_the_cap_deterministically() {
    let cfg = ProducerConfig {
        expiration_ms: 86_400_000,
        max_producers: 10_000,
    };
    let mut a = ProducerStateManager::new(cfg);
    let mut b = ProducerStateManager::new(cfg);
    let mut now: i64 = 1_780_000_000_000;
    let mut rng: u64 = 42;
    for i in 0..1_000_000u64 {
        // Ids arrive in a scrambled order, several per millisecond.
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pid = ProducerId(i64::try_from(rng >> 24).unwrap());
        assert_eq!(a.check(pid, 0, 0, 9, now).unwrap(), CheckResult::Append);
        let meta = BatchMetadata {
            first_seq: 0,
            last_seq: 9,
            first_offset: i * 10,
            last_offset: i * 10 + 9,
            append_time_ms: now,
        };
        a.record(pid, 0, meta);
        b.record(pid, 0, meta);
        assert!(a.len() <= cfg.max_producers);
        if i % 3 == 0 {
            now += 1;
        }
    }
    a.check_invariants();
    assert_eq!(a.len(), cfg.max_producers);
    assert_eq!(a, b, "eviction is not deterministic");
    // The survivors are exactly the most recently active 10,000.
    let oldest_kept = a.entries().map(|(_, e)| e.last_append_ms).min().unwrap();
    assert!(now - oldest_kept <= 10_000 / 3 + 1);
    let bytes = snapshot::encode(a.map_end_offset(), &a);
    assert!(bytes.len() <= snapshot::HEADER_SIZE + 64 * cfg.max_producers);
}

// T16b: `Duplicate` and `DuplicateSequence` only for ranges that were appended.
//
// One producer whose epoch appended every absolute sequence in `[0, appended)`, of which the last
// 0-5 batches are retained (placed anywhere on the ring: laps 0-2, around the wrap, at 0; fewer
// than 5 when retention, truncation or the follower path left only part of the epoch in the
// log). Requests are absolute ranges a client could send: within half a ring of the next
// sequence (behind it: a stale retry; ahead: a pipelined batch, possibly on the next lap). The
// engine sees only ring values. It may answer `Duplicate` only with the retained batch of
// exactly that range, `DuplicateSequence` only for a range inside `[0, appended)`, `Append` only
// for the next expected range; everything else must be `OutOfOrderSequence` with the next
// expected sequence. And it must answer `DuplicateSequence` for a range the window proves
// written (before the oldest retained batch, in its lap, within half a ring).

const MAX_RECORDS: i64 = 1 << 20;

#[derive(Clone, Debug)]
struct Window {
    /// Absolute first sequence of the oldest retained batch (0 without batches).
    oldest: i64,
    /// Record counts of the retained batches, oldest first.
    counts: Vec<i64>,
}

impl Window {
    fn appended(&self) -> i64 {
        self.oldest + self.counts.iter().sum::<i64>()
    }

    /// `(absolute first, count, metadata)` of each retained batch.
    fn batches(&self) -> Vec<(i64, i64, BatchMetadata)> {
        let mut abs = self.oldest;
        let mut offset = 1_000;
        self.counts
            .iter()
            .map(|&count| {
                let meta = BatchMetadata {
                    first_seq: wrap(abs),
                    last_seq: wrap(abs + count - 1),
                    first_offset: offset,
                    last_offset: offset + count as u64 - 1,
                    append_time_ms: 5,
                };
                let b = (abs, count, meta);
                abs += count;
                offset += count as u64 + 3;
                b
            })
            .collect()
    }
}

fn window_strategy() -> impl Strategy<Value = Window> {
    let count = prop_oneof![3 => 1..4i64, 2 => 1..1_000i64, 1 => 1..MAX_RECORDS];
    let oldest = prop_oneof![
        0..16i64,
        (RING - 64)..(RING + 64),
        (2 * RING - 64)..(2 * RING + 64),
        (HALF - 64)..(HALF + 64),
        0..3 * RING,
    ];
    (
        oldest,
        proptest::collection::vec(count, 0..=BATCHES_RETAINED),
    )
        .prop_map(|(oldest, counts)| Window {
            oldest: if counts.is_empty() { 0 } else { oldest },
            counts,
        })
}

/// A request `(absolute first, count)`: near an interesting point, or anywhere in the half
/// rings around the next sequence. Clamped to `[appended - 2^30, appended + 2^30 - count]`.
fn request_strategy() -> impl Strategy<Value = (u8, i64, i64, u64)> {
    (
        0..8u8,
        -40..40i64,
        prop_oneof![3 => 1..6i64, 1 => 1..MAX_RECORDS],
        any::<u64>(),
    )
}

fn place(w: &Window, (anchor, delta, count, any): (u8, i64, i64, u64)) -> (i64, i64) {
    let appended = w.appended();
    let batches = w.batches();
    let lap_start = w.oldest.div_euclid(RING) * RING;
    let first = match anchor {
        0 => appended + delta,
        1 => w.oldest + delta,
        2 => delta,
        3 => lap_start + delta,
        4 => appended - HALF + delta.abs(),
        5 => appended + HALF - count - delta.abs(),
        6 => match batches.get(delta.unsigned_abs() as usize % 6) {
            Some(&(abs, n, _)) => return (abs, n),
            None => appended,
        },
        _ => appended - HALF + (any % (2 * HALF as u64)) as i64,
    };
    let first = first.clamp(appended - HALF, appended + HALF - count);
    (first, count)
}

fn check_window(w: &Window, requests: &[(u8, i64, i64, u64)]) {
    let batches = w.batches();
    let metas: Vec<BatchMetadata> = batches.iter().map(|b| b.2).collect();
    let entry = oncelog::producer::ProducerEntry::new(0, &metas, 5, None).unwrap();
    let pid = ProducerId(3);
    let engine = ProducerStateManager::from_entries(CFG, [(pid, entry)], 1 << 40);
    let appended = w.appended();
    let lap_start = w.oldest.div_euclid(RING) * RING;
    for &req in requests {
        let (first, count) = place(w, req);
        let (f, l) = (wrap(first), wrap(first + count - 1));
        let what = format!("request [{first}, {}] = ring [{f}, {l}]", first + count - 1);
        let exact = batches
            .iter()
            .find(|(abs, n, _)| *abs == first && *n == count);
        match engine_decision(engine.check(pid, 0, f, l, 10)) {
            Decision::Append => assert_eq!(first, appended, "{what}: appended out of order"),
            Decision::Duplicate(meta) => assert_eq!(
                exact.map(|b| b.2),
                Some(meta),
                "{what}: answered as a retained batch it is not"
            ),
            Decision::DuplicateSequence => assert!(
                first >= 0 && first + count <= appended,
                "{what}: DuplicateSequence, but only [0, {appended}) was appended"
            ),
            Decision::OutOfOrder { expected } => {
                assert_eq!(expected, wrap(appended), "{what}");
                assert_ne!(first, appended, "{what}: the next batch was refused");
                assert!(
                    exact.is_none(),
                    "{what}: a retry of a retained batch was refused"
                );
                let proven = first >= lap_start
                    && first + count <= w.oldest
                    && appended - first <= HALF
                    && !batches.is_empty();
                assert!(!proven, "{what}: the window proves it written");
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn duplicate_answers_only_for_appended_ranges(
        w in window_strategy(),
        requests in proptest::collection::vec(request_strategy(), 1..40),
    ) {
        check_window(&w, &requests);
    }
}

// T16c: issued producer epochs (`IssuedEpochs`, the table behind `Log::reinit_producer` and the
// `producer-epochs` checkpoint) against a model that remembers every epoch ever handed out.
//
// Random sequences of: `init_producer` (a new id, epoch 0 handed out), a re-initialisation of a
// known id (through `next_epoch` with the epoch the producer table shows, then `with_issued`),
// the producer table seeing a higher epoch (a replicated batch, possibly near `i16::MAX`), the
// producer table forgetting an id (expiry, eviction, truncation: `seen` drops back to `None`),
// and a restart (the checkpoint values decoded again, possibly by a build that keeps fewer ids).
// With a bound of 3 listed ids, entries are dropped constantly. Every epoch handed out must be
// strictly above every epoch handed out for that id before and above what the table shows;
// exhaustion only when one of those is `i16::MAX` or the floor passed it; the decoded table
// equals the written one.

#[derive(Clone, Debug)]
enum EpochOp {
    Init,
    Reinit { id: usize },
    See { id: usize, epoch: i16 },
    Forget { id: usize },
    Restart { kept: usize },
}

fn epoch_op_strategy() -> impl Strategy<Value = EpochOp> {
    let id = 0..12usize;
    prop_oneof![
        2 => Just(EpochOp::Init),
        8 => id.clone().prop_map(|id| EpochOp::Reinit { id }),
        1 => (id.clone(), prop_oneof![0..5i16, (i16::MAX - 3)..=i16::MAX])
            .prop_map(|(id, epoch)| EpochOp::See { id, epoch }),
        1 => id.prop_map(|id| EpochOp::Forget { id }),
        1 => (2..5usize).prop_map(|kept| EpochOp::Restart { kept }),
    ]
}

fn run_epochs(ops: &[EpochOp]) {
    use oncelog::producer::IssuedEpochs;
    let mut table = IssuedEpochs::new(3);
    let mut kept = 3;
    // Per id handed out: the highest epoch handed out, and the producer table's epoch.
    let mut ids: Vec<(ProducerId, ProducerEpoch, Option<ProducerEpoch>)> = Vec::new();
    for op in ops {
        match *op {
            EpochOp::Init => ids.push((ProducerId(ids.len() as i64 * 7), 0, None)),
            EpochOp::Reinit { id } => {
                let Some((pid, returned, seen)) = ids.get(id).copied() else {
                    continue;
                };
                match table.next_epoch(pid, seen) {
                    Some(epoch) => {
                        assert!(epoch > returned, "{pid:?}: epoch {epoch} after {returned}");
                        assert!(
                            seen.is_none_or(|s| epoch > s),
                            "{pid:?}: {epoch} <= {seen:?}"
                        );
                        table = table.with_issued(pid, epoch);
                        assert_eq!(table.issued(pid), Some(epoch));
                        ids[id].1 = epoch;
                    }
                    None => assert!(
                        returned == i16::MAX
                            || seen == Some(i16::MAX)
                            || table.unlisted_next() > i32::from(i16::MAX)
                            || table.issued(pid) == Some(i16::MAX),
                        "{pid:?} exhausted early: returned {returned}, seen {seen:?}, {table:?}"
                    ),
                }
            }
            EpochOp::See { id, epoch } => {
                if let Some(entry) = ids.get_mut(id) {
                    // An epoch another leader handed out: above it only while the table shows it
                    // (docs/producer-idempotence.md, "Rules").
                    entry.2 = Some(entry.2.map_or(epoch, |s| s.max(epoch)));
                }
            }
            EpochOp::Forget { id } => {
                if let Some(entry) = ids.get_mut(id) {
                    entry.2 = None;
                }
            }
            EpochOp::Restart { kept: k } => {
                let values = table.to_values();
                let reread = IssuedEpochs::from_values(&values, kept).unwrap();
                assert_eq!(reread, table, "checkpoint round trip");
                // A build keeping fewer ids shrinks the table; every guarantee must hold.
                kept = k.min(kept).max(2);
                table = IssuedEpochs::from_values(&values, kept).unwrap();
            }
        }
        table.validate().unwrap();
        assert!(table.entries().len() <= kept);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn issued_epochs_strictly_increase_per_id(
        ops in proptest::collection::vec(epoch_op_strategy(), 1..200),
    ) {
        run_epochs(&ops);
    }
}
