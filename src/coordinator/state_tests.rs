//! Table tests of the pure state machine: every state × every request, plus the corners
//! (epoch exhaustion, deadlines, a new id, recovery's pending markers).

use std::cell::Cell;

use super::metadata::{TxnMetadata, TxnState};
use super::record::TxnRecord;
use super::state::{EndDecision, InitDecision, TxnStates};
use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::producer::MarkerKind;
use crate::types::{ProducerEpoch, ProducerId};

const TID: &str = "t";
const P: ProducerId = ProducerId(100);
const TIMEOUT: i64 = 10_000;
const START: i64 = 1_000;

fn tp(topic: &str) -> TopicPartition {
    TopicPartition::new(topic, 0).unwrap()
}

/// A `TxnStates` driven through decisions, applying each record, with an id allocator.
struct Harness {
    states: TxnStates,
    next_pid: Cell<i64>,
}

impl Harness {
    fn new() -> Harness {
        let mut states = TxnStates::new();
        states.apply(&TxnRecord::CoordinatorEpoch(3));
        Harness {
            states,
            next_pid: Cell::new(P.0),
        }
    }

    fn fresh(&self) -> Result<ProducerId> {
        let p = self.next_pid.get();
        self.next_pid.set(p + 1);
        Ok(ProducerId(p))
    }

    fn apply(&mut self, rec: TxnRecord) {
        self.states.apply(&rec);
        self.states.check_invariants();
    }

    fn init(&mut self, now: i64) -> (ProducerId, ProducerEpoch) {
        loop {
            if self.states.get(TID).is_some_and(|m| m.state.is_prepare()) {
                self.complete(now);
            }
            let d = self
                .states
                .decide_init(TID, TIMEOUT, now, || self.fresh())
                .unwrap();
            match d {
                InitDecision::Ready { record, identity } => {
                    self.apply(record);
                    return identity;
                }
                InitDecision::AbortOngoing(record) => self.apply(record),
            }
        }
    }

    fn add(&mut self, epoch: ProducerEpoch, topic: &str, now: i64) {
        let rec = self
            .states
            .decide_add_partitions(TID, self.meta().producer_id, epoch, &[tp(topic)], now)
            .unwrap();
        self.apply(rec.unwrap());
    }

    fn end(&mut self, epoch: ProducerEpoch, commit: bool) {
        let pid = self.meta().producer_id;
        match self
            .states
            .decide_end(TID, pid, epoch, commit, START)
            .unwrap()
        {
            EndDecision::Prepare(rec) => self.apply(rec),
            EndDecision::Done { .. } => panic!("expected a Prepare"),
        }
    }

    fn complete(&mut self, now: i64) {
        let rec = self
            .states
            .decide_complete(TID, now, || self.fresh())
            .unwrap();
        self.apply(rec);
    }

    fn meta(&self) -> &TxnMetadata {
        self.states.get(TID).unwrap()
    }

    /// `TID` in `state`, with producer `P`: two inits (epoch 1, last epoch 0), and for the
    /// later states a transaction at epoch 1 over partition `a-0` started at `START`.
    fn in_state(state: TxnState) -> Harness {
        let mut h = Harness::new();
        h.init(0);
        h.init(0);
        if state == TxnState::Empty {
            return h;
        }
        h.add(1, "a", START);
        match state {
            TxnState::Ongoing => {}
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                h.end(1, state == TxnState::PrepareCommit);
            }
            TxnState::CompleteCommit | TxnState::CompleteAbort => {
                h.end(1, state == TxnState::CompleteCommit);
                h.complete(START);
            }
            TxnState::Empty => unreachable!(),
        }
        assert_eq!(h.meta().state, state);
        h
    }
}

/// The requests of the table. Epochs are relative to the fixture: the transaction of the
/// fixture ran at epoch 1; `Current` is the epoch the producer holds now (1 before the end
/// completes, 2 after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Init,
    Add,
    AddKnownPartition,
    EndCommit,
    EndAbort,
    Timeout,
    TimeoutEarly,
    RetryEndCommit,
    RetryEndAbort,
    StaleAdd,
    StaleEnd,
    WrongPidAdd,
    WrongPidEnd,
    EpochAboveIssued,
}

const REQS: [Req; 14] = [
    Req::Init,
    Req::Add,
    Req::AddKnownPartition,
    Req::EndCommit,
    Req::EndAbort,
    Req::Timeout,
    Req::TimeoutEarly,
    Req::RetryEndCommit,
    Req::RetryEndAbort,
    Req::StaleAdd,
    Req::StaleEnd,
    Req::WrongPidAdd,
    Req::WrongPidEnd,
    Req::EpochAboveIssued,
];

fn short(e: &Error) -> &'static str {
    match e {
        Error::ConcurrentTransactions { .. } => "Concurrent",
        Error::ProducerFenced { .. } => "Fenced",
        Error::InvalidProducerIdMapping { .. } => "Unmapped",
        Error::InvalidTxnState { .. } => "InvalidState",
        _ => "other error",
    }
}

fn show(rec: &TxnRecord) -> String {
    let TxnRecord::Txn(m) = rec else {
        return format!("{rec:?}");
    };
    let parts: Vec<String> = m.partitions.iter().map(|p| p.to_string()).collect();
    format!(
        "{:?} {}/{} last {}/{} [{}]",
        m.state,
        m.producer_id.0,
        m.producer_epoch,
        m.last_producer_id.0,
        m.last_producer_epoch,
        parts.join(",")
    )
}

/// Runs `req` against `h` without applying anything, as a short description.
fn outcome(h: &Harness, req: Req) -> String {
    let s = &h.states;
    let m = h.meta();
    let current = if m.state.is_complete() { 2 } else { 1 };
    let end = |pid: ProducerId, epoch, commit| match s.decide_end(TID, pid, epoch, commit, 5) {
        Ok(EndDecision::Prepare(rec)) => show(&rec),
        Ok(EndDecision::Done { identity }) => format!("Done {}/{}", identity.0 .0, identity.1),
        Err(e) => short(&e).to_string(),
    };
    let add = |pid: ProducerId, epoch, topic: &str| match s.decide_add_partitions(
        TID,
        pid,
        epoch,
        &[tp(topic)],
        5,
    ) {
        Ok(Some(rec)) => show(&rec),
        Ok(None) => "unchanged".to_string(),
        Err(e) => short(&e).to_string(),
    };
    match req {
        Req::Init => match s.decide_init(TID, TIMEOUT, 5, || h.fresh()) {
            Ok(InitDecision::Ready { record, .. }) => format!("Ready {}", show(&record)),
            Ok(InitDecision::AbortOngoing(record)) => format!("AbortFirst {}", show(&record)),
            Err(e) => short(&e).to_string(),
        },
        Req::Add => add(P, current, "b"),
        Req::AddKnownPartition => add(P, current, "a"),
        Req::EndCommit => end(P, current, true),
        Req::EndAbort => end(P, current, false),
        Req::Timeout | Req::TimeoutEarly => {
            let now = START + TIMEOUT - i64::from(req == Req::TimeoutEarly);
            let recs: Vec<String> = s.decide_timeouts(now).iter().map(show).collect();
            format!("timeouts [{}]", recs.join("; "))
        }
        Req::RetryEndCommit => end(m.last_producer_id, m.last_producer_epoch, true),
        Req::RetryEndAbort => end(m.last_producer_id, m.last_producer_epoch, false),
        Req::StaleAdd => add(P, 0, "b"),
        Req::StaleEnd => end(P, 0, true),
        Req::WrongPidAdd => add(ProducerId(999), current, "b"),
        Req::WrongPidEnd => end(ProducerId(999), current, true),
        Req::EpochAboveIssued => add(P, 5, "b"),
    }
}

use Req::*;
use TxnState::*;

/// Every state × every request. The fixture's `P` is 100; a fresh id would be 100 again (the
/// harness's allocator is untouched by these fixtures), which no row needs.
const TABLE: &[(TxnState, Req, &str)] = &[
    // Empty at 100/1 (last 100/0).
    (Empty, Init, "Ready Empty 100/2 last 100/1 []"),
    (Empty, Add, "Ongoing 100/1 last 100/0 [b-0]"),
    (Empty, AddKnownPartition, "Ongoing 100/1 last 100/0 [a-0]"),
    (Empty, EndCommit, "InvalidState"),
    (Empty, EndAbort, "InvalidState"),
    (Empty, Timeout, "timeouts []"),
    (Empty, TimeoutEarly, "timeouts []"),
    (Empty, RetryEndCommit, "Fenced"),
    (Empty, RetryEndAbort, "Fenced"),
    (Empty, StaleAdd, "Fenced"),
    (Empty, StaleEnd, "Fenced"),
    (Empty, WrongPidAdd, "Unmapped"),
    (Empty, WrongPidEnd, "Unmapped"),
    (Empty, EpochAboveIssued, "Unmapped"),
    // Ongoing at 100/1 over a-0.
    (
        Ongoing,
        Init,
        "AbortFirst PrepareAbort 100/2 last 100/1 [a-0]",
    ),
    (Ongoing, Add, "Ongoing 100/1 last 100/0 [a-0,b-0]"),
    (Ongoing, AddKnownPartition, "unchanged"),
    (Ongoing, EndCommit, "PrepareCommit 100/2 last 100/1 [a-0]"),
    (Ongoing, EndAbort, "PrepareAbort 100/2 last 100/1 [a-0]"),
    (
        Ongoing,
        Timeout,
        "timeouts [PrepareAbort 100/2 last 100/1 [a-0]]",
    ),
    (Ongoing, TimeoutEarly, "timeouts []"),
    (Ongoing, RetryEndCommit, "Fenced"),
    (Ongoing, RetryEndAbort, "Fenced"),
    (Ongoing, StaleAdd, "Fenced"),
    (Ongoing, StaleEnd, "Fenced"),
    (Ongoing, WrongPidAdd, "Unmapped"),
    (Ongoing, WrongPidEnd, "Unmapped"),
    (Ongoing, EpochAboveIssued, "Unmapped"),
    // PrepareCommit at 100/2 (the markers' epoch), its producer still at 1.
    (PrepareCommit, Init, "Concurrent"),
    (PrepareCommit, Add, "Concurrent"),
    (PrepareCommit, AddKnownPartition, "Concurrent"),
    (PrepareCommit, EndCommit, "Concurrent"),
    (PrepareCommit, EndAbort, "Concurrent"),
    (PrepareCommit, Timeout, "timeouts []"),
    (PrepareCommit, TimeoutEarly, "timeouts []"),
    (PrepareCommit, RetryEndCommit, "Concurrent"),
    (PrepareCommit, RetryEndAbort, "Concurrent"),
    (PrepareCommit, StaleAdd, "Fenced"),
    (PrepareCommit, StaleEnd, "Fenced"),
    (PrepareCommit, WrongPidAdd, "Unmapped"),
    (PrepareCommit, WrongPidEnd, "Unmapped"),
    (PrepareCommit, EpochAboveIssued, "Unmapped"),
    // PrepareAbort: the same as PrepareCommit.
    (PrepareAbort, Init, "Concurrent"),
    (PrepareAbort, Add, "Concurrent"),
    (PrepareAbort, AddKnownPartition, "Concurrent"),
    (PrepareAbort, EndCommit, "Concurrent"),
    (PrepareAbort, EndAbort, "Concurrent"),
    (PrepareAbort, Timeout, "timeouts []"),
    (PrepareAbort, TimeoutEarly, "timeouts []"),
    (PrepareAbort, RetryEndCommit, "Concurrent"),
    (PrepareAbort, RetryEndAbort, "Concurrent"),
    (PrepareAbort, StaleAdd, "Fenced"),
    (PrepareAbort, StaleEnd, "Fenced"),
    (PrepareAbort, WrongPidAdd, "Unmapped"),
    (PrepareAbort, WrongPidEnd, "Unmapped"),
    (PrepareAbort, EpochAboveIssued, "Unmapped"),
    // CompleteCommit at 100/2 (last 100/1): the producer runs its next transaction at 2.
    (CompleteCommit, Init, "Ready Empty 100/3 last 100/2 []"),
    (CompleteCommit, Add, "Ongoing 100/2 last 100/1 [b-0]"),
    (
        CompleteCommit,
        AddKnownPartition,
        "Ongoing 100/2 last 100/1 [a-0]",
    ),
    (CompleteCommit, EndCommit, "InvalidState"),
    (CompleteCommit, EndAbort, "InvalidState"),
    (CompleteCommit, Timeout, "timeouts []"),
    (CompleteCommit, TimeoutEarly, "timeouts []"),
    (CompleteCommit, RetryEndCommit, "Done 100/2"),
    (CompleteCommit, RetryEndAbort, "InvalidState"),
    (CompleteCommit, StaleAdd, "Fenced"),
    (CompleteCommit, StaleEnd, "Fenced"),
    (CompleteCommit, WrongPidAdd, "Unmapped"),
    (CompleteCommit, WrongPidEnd, "Unmapped"),
    (CompleteCommit, EpochAboveIssued, "Unmapped"),
    // CompleteAbort: the mirror image.
    (CompleteAbort, Init, "Ready Empty 100/3 last 100/2 []"),
    (CompleteAbort, Add, "Ongoing 100/2 last 100/1 [b-0]"),
    (
        CompleteAbort,
        AddKnownPartition,
        "Ongoing 100/2 last 100/1 [a-0]",
    ),
    (CompleteAbort, EndCommit, "InvalidState"),
    (CompleteAbort, EndAbort, "InvalidState"),
    (CompleteAbort, Timeout, "timeouts []"),
    (CompleteAbort, TimeoutEarly, "timeouts []"),
    (CompleteAbort, RetryEndCommit, "InvalidState"),
    (CompleteAbort, RetryEndAbort, "Done 100/2"),
    (CompleteAbort, StaleAdd, "Fenced"),
    (CompleteAbort, StaleEnd, "Fenced"),
    (CompleteAbort, WrongPidAdd, "Unmapped"),
    (CompleteAbort, WrongPidEnd, "Unmapped"),
    (CompleteAbort, EpochAboveIssued, "Unmapped"),
];

#[test]
fn every_state_and_request() {
    for state in TxnState::ALL {
        for req in REQS {
            let rows: Vec<_> = TABLE
                .iter()
                .filter(|(s, r, _)| *s == state && *r == req)
                .collect();
            assert_eq!(rows.len(), 1, "{state:?} × {req:?} must have one row");
            let h = Harness::in_state(state);
            let before = h.states.clone();
            assert_eq!(outcome(&h, req), rows[0].2, "{state:?} × {req:?}");
            assert_eq!(h.states, before, "decide_* must not mutate");
        }
    }
}

#[test]
fn a_new_transactional_id_gets_a_fresh_id_at_epoch_zero() {
    let mut h = Harness::new();
    h.next_pid.set(42);
    assert_eq!(h.init(7), (ProducerId(42), 0));
    let m = h.meta();
    assert_eq!(
        (m.state, m.timeout_ms, m.last_update_ms),
        (Empty, TIMEOUT, 7)
    );
    assert_eq!(
        (m.last_producer_id, m.last_producer_epoch),
        (ProducerId::NONE, -1)
    );
    // Unknown ids are unmapped for every other request.
    let s = &h.states;
    let err = s
        .decide_end("other", ProducerId(42), 0, true, 0)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidProducerIdMapping { .. }),
        "{err}"
    );
    let err = s
        .decide_add_partitions("other", ProducerId(42), 0, &[tp("a")], 0)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidProducerIdMapping { .. }),
        "{err}"
    );
}

#[test]
fn init_on_an_ongoing_transaction_aborts_it_then_bumps_again() {
    let mut h = Harness::in_state(Ongoing);
    assert_eq!(h.init(9), (P, 3));
    let m = h.meta();
    assert_eq!((m.state, m.last_producer_epoch), (Empty, 2));
    // The old instance: fenced for every request, its end included.
    let err = h.states.decide_end(TID, P, 1, true, 9).unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
    let err = h.states.decide_end(TID, P, 1, false, 9).unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let h = Harness::new();
    let s = &h.states;
    for (tid, timeout) in [
        ("", TIMEOUT),
        (TID, 0),
        (TID, -5),
        (TID, i64::from(i32::MAX) + 1),
    ] {
        let err = s.decide_init(tid, timeout, 0, || h.fresh()).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
    let long = "x".repeat(super::MAX_TRANSACTIONAL_ID_LEN + 1);
    let err = s.decide_init(&long, TIMEOUT, 0, || h.fresh()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = s.decide_complete(TID, 0, || h.fresh()).unwrap_err();
    assert!(matches!(err, Error::InvalidTxnState { .. }), "{err}");
    // A failing allocator is the request's error, and nothing was decided.
    let err = s
        .decide_init(TID, TIMEOUT, 0, || Err(Error::PreviousIo))
        .unwrap_err();
    assert!(matches!(err, Error::PreviousIo), "{err}");
}

/// The metadata of `TID` at `epoch` in `state` (`Ongoing` ones over `a-0`), for corners the
/// fixtures would need 32,000 bumps to reach.
fn at_epoch(state: TxnState, epoch: ProducerEpoch) -> Harness {
    let mut h = Harness::new();
    h.next_pid.set(500);
    h.apply(TxnRecord::Txn(TxnMetadata {
        transactional_id: TID.into(),
        producer_id: P,
        producer_epoch: epoch,
        last_producer_id: P,
        last_producer_epoch: epoch - 1,
        state,
        partitions: if state == Ongoing {
            [tp("a")].into()
        } else {
            Default::default()
        },
        timeout_ms: TIMEOUT,
        txn_start_ms: START,
        last_update_ms: START,
    }));
    h
}

#[test]
fn init_past_the_last_usable_epoch_gets_a_fresh_id() {
    let mut h = at_epoch(Empty, i16::MAX - 2);
    assert_eq!(h.init(0), (P, i16::MAX - 1));
    // i16::MAX would leave no epoch for the markers: a fresh id.
    assert_eq!(h.init(0), (ProducerId(500), 0));
    let m = h.meta();
    assert_eq!(
        (m.last_producer_id, m.last_producer_epoch),
        (P, i16::MAX - 1)
    );
    // The old id is fenced for good.
    let err = h
        .states
        .decide_add_partitions(TID, P, i16::MAX - 1, &[tp("a")], 0)
        .unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
}

#[test]
fn an_end_at_the_last_usable_epoch_completes_with_a_fresh_id() {
    let mut h = at_epoch(Ongoing, i16::MAX - 1);
    h.end(i16::MAX - 1, true);
    let pending = h.states.pending_markers_of(TID).unwrap();
    assert_eq!(
        pending.marker.producer_epoch,
        i16::MAX,
        "the markers bump to i16::MAX"
    );
    assert_eq!(pending.marker.producer_id, P);
    h.complete(0);
    let m = h.meta().clone();
    assert_eq!(
        (m.state, m.producer_id, m.producer_epoch),
        (CompleteCommit, ProducerId(500), 0)
    );
    // The retried end is answered with the fresh id.
    let d = h.states.decide_end(TID, P, i16::MAX - 1, true, 0).unwrap();
    assert_eq!(
        d,
        EndDecision::Done {
            identity: (ProducerId(500), 0)
        }
    );
    // An init after it bumps the fresh id.
    assert_eq!(h.init(0), (ProducerId(500), 1));
}

#[test]
fn an_abort_by_init_at_the_last_usable_epoch_switches_ids_then_bumps() {
    let mut h = at_epoch(Ongoing, i16::MAX - 1);
    assert_eq!(h.init(0), (ProducerId(500), 1));
}

#[test]
fn pending_markers_carry_the_coordinator_epoch_and_every_partition() {
    let mut h = Harness::in_state(Ongoing);
    h.add(1, "b", START);
    h.end(1, false);
    let p = h.states.pending_markers();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].partitions, vec![tp("a"), tp("b")]);
    assert_eq!(p[0].marker.producer_id, P);
    assert_eq!(p[0].marker.producer_epoch, 2);
    assert_eq!(p[0].marker.coordinator_epoch, 3);
    assert_eq!(p[0].marker.kind, MarkerKind::Abort);
    h.complete(0);
    assert!(h.states.pending_markers().is_empty());
    assert!(h.meta().partitions.is_empty());
}

#[test]
fn the_coordinator_epoch_only_moves_forward() {
    let mut s = TxnStates::new();
    assert_eq!(s.coordinator_epoch(), -1);
    assert_eq!(
        s.decide_coordinator_epoch().unwrap(),
        TxnRecord::CoordinatorEpoch(0)
    );
    s.apply(&TxnRecord::CoordinatorEpoch(4));
    s.apply(&TxnRecord::CoordinatorEpoch(2));
    assert_eq!(s.coordinator_epoch(), 4);
    s.apply(&TxnRecord::CoordinatorEpoch(i32::MAX));
    assert!(matches!(
        s.decide_coordinator_epoch(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn live_records_replay_to_the_same_state() {
    let mut h = Harness::in_state(PrepareCommit);
    h.states.apply(&TxnRecord::Txn(TxnMetadata {
        transactional_id: "u".into(),
        ..h.meta().clone()
    }));
    let mut again = TxnStates::new();
    for rec in h.states.live_records() {
        again.apply(&rec);
    }
    assert_eq!(again, h.states);
    assert_eq!(h.states.live_keys(), 3);
}

#[test]
#[should_panic(expected = "M3")]
fn applying_an_invalid_record_is_a_bug() {
    let mut h = Harness::in_state(Empty);
    let mut m = h.meta().clone();
    m.state = Ongoing;
    h.states.apply(&TxnRecord::Txn(m));
}

#[test]
fn only_a_partition_of_the_ongoing_transaction_verifies() {
    let verdict =
        |h: &Harness, epoch, topic| match h.states.verify_txn_partition(P, epoch, &tp(topic)) {
            Ok(()) => "ok",
            Err(e) => short(&e),
        };
    let h = Harness::in_state(Ongoing);
    assert_eq!(verdict(&h, 1, "a"), "ok");
    assert_eq!(verdict(&h, 1, "b"), "InvalidState", "never added");
    assert_eq!(verdict(&h, 0, "a"), "Fenced");
    assert_eq!(verdict(&h, 2, "a"), "InvalidState");
    let err = h.states.verify_txn_partition(ProducerId(999), 0, &tp("a"));
    assert!(matches!(err, Err(Error::InvalidTxnState { .. })));
    for state in [Empty, PrepareCommit, CompleteAbort] {
        let h = Harness::in_state(state);
        let current = h.meta().producer_epoch;
        assert_eq!(verdict(&h, current, "a"), "InvalidState", "{state:?}");
        assert_eq!(verdict(&h, 0, "a"), "Fenced", "{state:?}");
    }
}
