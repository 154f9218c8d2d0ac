//! Model-based test of the pure state machine: random request sequences from several producer
//! instances of two transactional ids, run the way the driver runs them (decide, apply, finish
//! `Prepare*` when markers can be written), checking after every step:
//!
//! - every new identity handed out for an id (by init, or as the answer of an end) is strictly
//!   above every one handed out before for that id, and a retried end's answer is one of them;
//! - an instance superseded by a later init never succeeds again;
//! - a transaction's outcome never changes once decided (a commit never becomes an abort);
//! - the invariants hold, and replaying every applied record through the codec rebuilds the
//!   same state.

use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::record::{self, TxnRecord};
use super::state::{EndDecision, InitDecision, TxnStates};
use crate::broker::TopicPartition;
use crate::error::Result;
use crate::producer::MarkerKind;
use crate::types::{ProducerEpoch, ProducerId};

const TIDS: [&str; 2] = ["x", "y"];
const TIMEOUT: i64 = 5_000;

#[derive(Debug, Clone)]
enum Op {
    Init {
        tid: usize,
        markers_ok: bool,
    },
    Add {
        inst: usize,
        partition: u32,
    },
    End {
        inst: usize,
        commit: bool,
        markers_ok: bool,
    },
    /// A retry of the instance's previous end, at the epoch that end ran at.
    RetryEnd {
        inst: usize,
        commit: bool,
    },
    Tick {
        advance_ms: i64,
        markers_ok: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, any::<bool>()).prop_map(|(tid, markers_ok)| Op::Init { tid, markers_ok }),
        (0..8usize, 0..3u32).prop_map(|(inst, partition)| Op::Add { inst, partition }),
        (0..8usize, any::<bool>(), any::<bool>()).prop_map(|(inst, commit, markers_ok)| Op::End {
            inst,
            commit,
            markers_ok
        }),
        (0..8usize, any::<bool>()).prop_map(|(inst, commit)| Op::RetryEnd { inst, commit }),
        (0..4_000i64, any::<bool>()).prop_map(|(advance_ms, markers_ok)| Op::Tick {
            advance_ms,
            markers_ok
        }),
    ]
}

/// One producer instance (a client that called init).
#[derive(Debug, Clone)]
struct Instance {
    tid: usize,
    identity: (ProducerId, ProducerEpoch),
    /// The identity its last successful end ran at.
    ended_at: Option<(ProducerId, ProducerEpoch)>,
    superseded: bool,
}

struct Model {
    states: TxnStates,
    applied: Vec<TxnRecord>,
    next_pid: Cell<i64>,
    now: i64,
    instances: Vec<Instance>,
    /// Every identity handed out per id, in order.
    handed_out: [Vec<(ProducerId, ProducerEpoch)>; 2],
    /// The decided outcome of each transaction: (id, its producer id, its epoch).
    outcomes: BTreeMap<(String, ProducerId, ProducerEpoch), MarkerKind>,
}

impl Model {
    fn new() -> Model {
        let mut m = Model {
            states: TxnStates::new(),
            applied: Vec::new(),
            next_pid: Cell::new(1),
            now: 1_000,
            instances: Vec::new(),
            handed_out: [Vec::new(), Vec::new()],
            outcomes: BTreeMap::new(),
        };
        m.apply(TxnRecord::CoordinatorEpoch(0));
        m
    }

    fn fresh(&self) -> Result<ProducerId> {
        let p = self.next_pid.get();
        self.next_pid.set(p + 1);
        Ok(ProducerId(p))
    }

    fn apply(&mut self, rec: TxnRecord) {
        if let TxnRecord::Txn(m) = &rec {
            if let Some(kind) = m.state.marker_kind() {
                let key = (
                    m.transactional_id.clone(),
                    m.last_producer_id,
                    m.last_producer_epoch,
                );
                let before = *self.outcomes.entry(key).or_insert(kind);
                assert_eq!(before, kind, "a decided outcome changed: {m:?}");
            }
        }
        self.states.apply(&rec);
        self.states.check_invariants();
        self.applied.push(rec);
    }

    fn hand_out(&mut self, tid: usize, identity: (ProducerId, ProducerEpoch)) {
        let list = &mut self.handed_out[tid];
        if let Some(last) = list.last() {
            assert!(identity > *last, "{identity:?} not above {last:?}");
        }
        list.push(identity);
    }

    /// The driver's "finish the Prepare* first", when markers can be written.
    fn finish(&mut self, tid: &str, markers_ok: bool) {
        if markers_ok && self.states.pending_markers_of(tid).is_some() {
            let rec = self
                .states
                .decide_complete(tid, self.now, || self.fresh())
                .unwrap();
            self.apply(rec);
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Init { tid, markers_ok } => self.init(tid, markers_ok),
            Op::Add { inst, partition } => {
                let Some(i) = self.instances.get(inst).cloned() else {
                    return;
                };
                let tp = TopicPartition::new("p", partition).unwrap();
                let (pid, epoch) = i.identity;
                let r = self
                    .states
                    .decide_add_partitions(TIDS[i.tid], pid, epoch, &[tp], self.now);
                assert!(
                    !i.superseded || r.is_err(),
                    "superseded instance added: {i:?}"
                );
                if let Ok(Some(rec)) = r {
                    self.apply(rec);
                }
            }
            Op::End {
                inst,
                commit,
                markers_ok,
            } => {
                let Some(i) = self.instances.get(inst).cloned() else {
                    return;
                };
                self.end(inst, i.identity, commit, markers_ok);
            }
            Op::RetryEnd { inst, commit } => {
                let Some(at) = self.instances.get(inst).and_then(|i| i.ended_at) else {
                    return;
                };
                self.end(inst, at, commit, true);
            }
            Op::Tick {
                advance_ms,
                markers_ok,
            } => {
                self.now += advance_ms;
                for rec in self.states.decide_timeouts(self.now) {
                    let TxnRecord::Txn(m) = &rec else {
                        unreachable!()
                    };
                    let tid = m.transactional_id.clone();
                    self.apply(rec);
                    self.finish(&tid, markers_ok);
                }
            }
        }
    }

    fn init(&mut self, tid: usize, markers_ok: bool) {
        let name = TIDS[tid];
        // The driver: finish a Prepare*, abort an Ongoing and finish it, then bump.
        for _ in 0..3 {
            self.finish(name, markers_ok);
            let d = self
                .states
                .decide_init(name, TIMEOUT, self.now, || self.fresh());
            match d {
                Ok(InitDecision::Ready { record, identity }) => {
                    self.apply(record);
                    self.hand_out(tid, identity);
                    for i in self.instances.iter_mut().filter(|i| i.tid == tid) {
                        i.superseded = true;
                    }
                    self.instances.push(Instance {
                        tid,
                        identity,
                        ended_at: None,
                        superseded: false,
                    });
                    return;
                }
                Ok(InitDecision::AbortOngoing(record)) => self.apply(record),
                Err(_) => {
                    assert!(!markers_ok, "init failed although markers could be written");
                    return;
                }
            }
        }
        panic!("init did not converge");
    }

    fn end(
        &mut self,
        inst: usize,
        (pid, epoch): (ProducerId, ProducerEpoch),
        commit: bool,
        markers_ok: bool,
    ) {
        let i = self.instances[inst].clone();
        let name = TIDS[i.tid];
        self.finish(name, markers_ok);
        let answer = match self.states.decide_end(name, pid, epoch, commit, self.now) {
            Err(_) => return,
            Ok(EndDecision::Done { identity }) => {
                // The answer of an end completed earlier; new only if that end was the
                // coordinator's own (a timeout), whose answer nobody received yet.
                if !self.handed_out[i.tid].contains(&identity) {
                    self.hand_out(i.tid, identity);
                }
                identity
            }
            Ok(EndDecision::Prepare(rec)) => {
                self.apply(rec);
                if !markers_ok {
                    // The driver returns the marker error; the outcome is decided.
                    assert!(
                        !i.superseded,
                        "superseded instance ended a transaction: {i:?}"
                    );
                    return;
                }
                self.finish(name, true);
                let identity = self.states.get(name).unwrap().identity();
                self.hand_out(i.tid, identity);
                identity
            }
        };
        assert!(
            !i.superseded,
            "superseded instance ended a transaction: {i:?}"
        );
        let kind = if commit {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        };
        assert_eq!(
            self.outcomes.get(&(name.to_string(), pid, epoch)),
            Some(&kind)
        );
        let me = &mut self.instances[inst];
        me.identity = answer;
        me.ended_at = Some((pid, epoch));
    }

    /// Every applied record through the codec into a fresh state: the same state.
    fn check_replay(&self) {
        let mut again = TxnStates::new();
        for rec in &self.applied {
            let (k, v) = record::encode(rec);
            again.apply(&record::decode(Some(&k), v.as_deref()).unwrap());
        }
        assert_eq!(again, self.states);
        let mut live = TxnStates::new();
        for rec in self.states.live_records() {
            live.apply(&rec);
        }
        assert_eq!(live, self.states);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_keep_the_guarantees(ops in proptest::collection::vec(op(), 1..80)) {
        let mut m = Model::new();
        for op in &ops {
            m.step(op);
        }
        m.check_replay();
    }
}

/// The model's properties are not vacuous: a plain sequence reaches commits, aborts by
/// timeout, fencing and retries.
#[test]
fn the_model_reaches_every_outcome() {
    let mut m = Model::new();
    let ops = [
        Op::Init {
            tid: 0,
            markers_ok: true,
        },
        Op::Add {
            inst: 0,
            partition: 0,
        },
        Op::End {
            inst: 0,
            commit: true,
            markers_ok: true,
        },
        Op::RetryEnd {
            inst: 0,
            commit: true,
        },
        Op::Add {
            inst: 0,
            partition: 1,
        },
        Op::Tick {
            advance_ms: TIMEOUT,
            markers_ok: true,
        },
        Op::Init {
            tid: 0,
            markers_ok: true,
        },
        Op::Add {
            inst: 0,
            partition: 1,
        },
    ];
    for op in &ops {
        m.step(op);
    }
    let kinds: Vec<MarkerKind> = m.outcomes.values().copied().collect();
    assert_eq!(kinds, [MarkerKind::Commit, MarkerKind::Abort]);
    assert!(m.instances[0].superseded);
    assert_eq!(
        m.handed_out[0].len(),
        3,
        "init, the commit's answer, the second init"
    );
    m.check_replay();
}
