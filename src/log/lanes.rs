//! Sync lanes: the bookkeeping of group commit with several syncs in flight (no I/O here).
//!
//! An appender that needs durability up to an offset asks [`Lanes::next`] what to do, under the
//! log's `sync` mutex:
//!
//! * [`Step::Durable`]: the recovery point already covers the target;
//! * [`Step::Claim`]: nothing claimed covers the target, so the caller claims everything
//!   published after the last claim ([`Lanes::claim`]: a *lane*), msyncs it *outside* the mutex,
//!   concurrently with other lanes, and reports [`Lanes::complete`] or [`Lanes::fail`];
//! * [`Step::Wait`]: a claimed lane covers the target, or a checkpoint write is running: wait on
//!   the condition variable;
//! * [`Step::Write`]: completed lanes cover the target but the recovery point does not, and no
//!   one is writing the checkpoint: the caller now holds the writer role, writes and fdatasyncs
//!   the recovery-point checkpoint with the given value (outside the mutex), then reports
//!   [`Lanes::written`] or [`Lanes::write_failed`] and publishes the new recovery point;
//! * [`Step::Poisoned`]: a sync failed (fsyncgate: never retried), so nothing not already covered
//!   can be reported durable.
//!
//! Offsets below:
//!
//! ```text
//!   recovery_point  <=  done_to  <=  claimed_to
//!   durable (checkpointed)  msynced (contiguous done prefix)  claimed by some lane
//! ```
//!
//! Invariants ([`Lanes::check_invariants`], asserted after every change: it costs O(lanes
//! queued), at most one per syncing thread, under the mutex the caller holds anyway, so it stays
//! on in release builds, where the crash and fault tests run):
//! * `recovery_point <= done_to <= claimed_to`;
//! * every byte below `done_to` is msynced: lanes are claimed in offset order, each from the end
//!   of the previous claim, and `done_to` moves only over a *contiguous prefix* of completed
//!   lanes, or over what a seal made durable as a whole ([`Lanes::sealed`]);
//! * queued lanes are in claim order with strictly increasing ends, all above `done_to`, and the
//!   last one ends at `claimed_to`;
//! * `recovery_point` rises only by [`Lanes::written`] (a checkpoint write of a value `<=
//!   done_to` that succeeded) or [`Lanes::sealed`], and never falls except by
//!   [`Lanes::truncated`], which requires no lane in flight and no writer ([`Lanes::idle`]);
//! * at most one writer at a time, and [`Step::Write`] is handed out only when `done_to >
//!   recovery_point`;
//! * once poisoned, [`Lanes::next`] answers only `Durable` (for targets the recovery point
//!   already covered) or `Poisoned`.
//!
//! Each lane also carries an opaque *cursor* `C` (for the log: the segment and byte position the
//! claim ended at), so the next claim starts where the last one ended and the log knows the byte
//! position of the recovery point (`Log::unsynced_bytes`).

use std::collections::VecDeque;

/// A claimed lane, named for [`Lanes::complete`] / [`Lanes::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a claimed lane must be completed or failed"]
pub(super) struct LaneId(u64);

/// What a thread that needs durability up to some offset does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step<C> {
    /// The recovery point covers the target.
    Durable,
    /// A sync failed: the target is not durable and never will be in this incarnation.
    Poisoned,
    /// Claim everything published after [`Lanes::claimed`] and msync it.
    Claim,
    /// Wait for a lane in flight or for the checkpoint writer.
    Wait,
    /// The caller is now the checkpoint writer: write `to` durably, then [`Lanes::written`].
    Write { to: u64, cursor: C },
}

#[derive(Debug, Clone, Copy)]
struct Lane<C> {
    id: u64,
    /// Exclusive end offset of the claim.
    end: u64,
    cursor: C,
    /// The msync succeeded.
    done: bool,
    /// The msync failed: the lane stays queued, never done, so the prefix never passes it.
    failed: bool,
}

/// Claims, completions and the contiguous done prefix; see the module documentation.
#[derive(Debug)]
pub(super) struct Lanes<C> {
    recovery_point: u64,
    durable_cursor: C,
    done_to: u64,
    done_cursor: C,
    claimed_to: u64,
    claimed_cursor: C,
    /// Claimed lanes not yet folded into `done_to`, oldest first.
    queue: VecDeque<Lane<C>>,
    /// Lanes claimed and neither completed nor failed (some may already have left `queue`
    /// because a seal covered them).
    in_flight: usize,
    /// The most lanes ever in flight at once (a statistic for tests and benchmarks).
    max_in_flight: usize,
    next_id: u64,
    writing: bool,
    poisoned: bool,
}

impl<C: Copy + std::fmt::Debug> Lanes<C> {
    /// Nothing in flight; everything below `recovery_point` durable, at byte position `cursor`.
    pub(super) fn new(recovery_point: u64, cursor: C) -> Lanes<C> {
        Lanes {
            recovery_point,
            durable_cursor: cursor,
            done_to: recovery_point,
            done_cursor: cursor,
            claimed_to: recovery_point,
            claimed_cursor: cursor,
            queue: VecDeque::new(),
            in_flight: 0,
            max_in_flight: 0,
            next_id: 0,
            writing: false,
            poisoned: false,
        }
    }

    /// Every offset below this is durable and recorded in the checkpoint.
    pub(super) fn recovery_point(&self) -> u64 {
        self.recovery_point
    }

    /// The byte position of the recovery point (as last reported with it).
    pub(super) fn durable_cursor(&self) -> C {
        self.durable_cursor
    }

    /// Where the next claim starts: the end offset and byte position of the last claim.
    pub(super) fn claimed(&self) -> (u64, C) {
        (self.claimed_to, self.claimed_cursor)
    }

    /// No lane in flight and no checkpoint writer: the recovery point can only change under
    /// the caller's lock (truncation, close).
    pub(super) fn idle(&self) -> bool {
        self.in_flight == 0 && !self.writing
    }

    /// The most lanes that were ever in flight at once.
    pub(super) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// A checkpoint write is in progress.
    pub(super) fn writing(&self) -> bool {
        self.writing
    }

    /// What a thread that needs every offset below `target` durable does next. `poisoned`: the
    /// log was poisoned by something outside the lanes (a failed seal, say). A `Write` answer
    /// hands the caller the writer role.
    pub(super) fn next(&mut self, target: u64, poisoned: bool) -> Step<C> {
        if self.recovery_point >= target {
            return Step::Durable;
        }
        if self.poisoned || poisoned {
            return Step::Poisoned;
        }
        if !self.writing && self.done_to >= target {
            // done_to >= target > recovery_point.
            self.writing = true;
            return Step::Write {
                to: self.done_to,
                cursor: self.done_cursor,
            };
        }
        if self.claimed_to >= target {
            return Step::Wait;
        }
        Step::Claim
    }

    /// Records a claim of everything from [`Lanes::claimed`] up to offset `end` (the caller saw
    /// every offset below `end` published), ending at byte position `cursor`.
    pub(super) fn claim(&mut self, end: u64, cursor: C) -> LaneId {
        assert!(
            end > self.claimed_to,
            "a claim must extend the claimed range ({end} <= {})",
            self.claimed_to
        );
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Lane {
            id,
            end,
            cursor,
            done: false,
            failed: false,
        });
        self.claimed_to = end;
        self.claimed_cursor = cursor;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        self.check_invariants();
        LaneId(id)
    }

    /// The lane's msync succeeded.
    pub(super) fn complete(&mut self, lane: LaneId) {
        self.finish(lane);
        if let Some(l) = self.queue.iter_mut().find(|l| l.id == lane.0) {
            l.done = true;
        }
        self.fold();
        self.check_invariants();
    }

    /// The lane's msync failed: the log is poisoned for good, and the contiguous done prefix
    /// never passes the lane.
    pub(super) fn fail(&mut self, lane: LaneId) {
        self.finish(lane);
        if let Some(l) = self.queue.iter_mut().find(|l| l.id == lane.0) {
            l.failed = true;
        }
        self.poisoned = true;
        self.check_invariants();
    }

    fn finish(&mut self, lane: LaneId) {
        assert!(lane.0 < self.next_id, "unknown lane {lane:?}");
        self.in_flight = self
            .in_flight
            .checked_sub(1)
            .expect("a lane finished twice");
    }

    /// The writer's checkpoint write of `to` (from [`Step::Write`]) is durable: the recovery
    /// point moves to it (never down: a seal may have moved it further meanwhile).
    pub(super) fn written(&mut self, to: u64, cursor: C) {
        assert!(self.writing, "written() without the writer role");
        self.writing = false;
        if to > self.recovery_point {
            assert!(to <= self.done_to, "checkpoint of bytes not msynced");
            self.recovery_point = to;
            self.durable_cursor = cursor;
        }
        self.fold();
        self.check_invariants();
    }

    /// The writer's checkpoint write failed: the log is poisoned for good.
    pub(super) fn write_failed(&mut self) {
        assert!(self.writing, "write_failed() without the writer role");
        self.writing = false;
        self.poisoned = true;
    }

    /// A failed checkpoint write outside the writer role (seal, truncation) poisons too.
    pub(super) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// A seal made everything below `to` durable and the caller recorded `to` in the
    /// checkpoint (with no writer active). Lanes below `to` still in flight no longer hold the
    /// recovery point back; the next claim starts at `to` unless claims are already past it.
    pub(super) fn sealed(&mut self, to: u64, cursor: C) {
        assert!(!self.writing, "a seal raced the checkpoint writer");
        if to > self.recovery_point {
            self.recovery_point = to;
            self.durable_cursor = cursor;
        }
        if to > self.done_to {
            self.done_to = to;
            self.done_cursor = cursor;
        }
        if to > self.claimed_to {
            self.claimed_to = to;
            self.claimed_cursor = cursor;
        }
        self.fold();
        self.check_invariants();
    }

    /// A truncation lowered the recovery point to `recovery_point` (recorded in the checkpoint)
    /// and replaced the files above it; claims restart there from byte position `cursor`.
    /// Completed lanes above it are forgotten (their owners claim again if they still need to).
    pub(super) fn truncated(&mut self, recovery_point: u64, cursor: C) {
        assert!(self.idle(), "truncation with a lane or a writer in flight");
        assert!(recovery_point <= self.recovery_point);
        assert!(
            self.queue.iter().all(|l| l.failed),
            "idle lanes are all folded or failed"
        );
        self.queue.clear();
        self.recovery_point = recovery_point;
        self.durable_cursor = cursor;
        self.done_to = recovery_point;
        self.done_cursor = cursor;
        self.claimed_to = recovery_point;
        self.claimed_cursor = cursor;
        self.check_invariants();
    }

    /// Folds completed lanes at the front of the queue into `done_to`, and drops lanes the
    /// recovery point already covers (a seal made their bytes durable; their owners still
    /// report completion, counted in `in_flight`).
    fn fold(&mut self) {
        while let Some(front) = self.queue.front().copied() {
            if front.done {
                if front.end > self.done_to {
                    self.done_to = front.end;
                    self.done_cursor = front.cursor;
                }
            } else if front.end > self.recovery_point {
                break;
            }
            self.queue.pop_front();
        }
    }

    /// The invariants of the module documentation.
    pub(super) fn check_invariants(&self) {
        assert!(self.recovery_point <= self.done_to, "{self:?}");
        assert!(self.done_to <= self.claimed_to, "{self:?}");
        let mut prev = self.done_to;
        for l in &self.queue {
            assert!(
                l.end > prev,
                "lanes out of order or below done_to: {self:?}"
            );
            prev = l.end;
        }
        if let Some(last) = self.queue.back() {
            assert_eq!(last.end, self.claimed_to, "{self:?}");
        }
        assert!(
            self.queue.front().is_none_or(|l| !l.done),
            "a completed lane at the front was not folded: {self:?}"
        );
        assert!(self.queue.iter().all(|l| !(l.done && l.failed)), "{self:?}");
        let undone = self.queue.iter().filter(|l| !l.done && !l.failed).count();
        assert!(self.in_flight >= undone, "{self:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lanes with `n` claims ending at 10, 20, ... (cursor = end).
    fn claimed(n: u64) -> (Lanes<u64>, Vec<LaneId>) {
        let mut lanes = Lanes::new(0, 0);
        let ids = (1..=n)
            .map(|i| {
                assert_eq!(lanes.next(i * 10, false), Step::Claim);
                lanes.claim(i * 10, i * 10)
            })
            .collect();
        (lanes, ids)
    }

    /// Runs the writer role if one is handed out for `target`; returns what was written.
    fn write_if_asked(lanes: &mut Lanes<u64>, target: u64) -> Option<u64> {
        match lanes.next(target, false) {
            Step::Write { to, cursor } => {
                assert_eq!(to, cursor);
                lanes.written(to, cursor);
                Some(to)
            }
            _ => None,
        }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for i in 0..=p.len() {
                let mut q = p.clone();
                q.insert(i, n - 1);
                out.push(q);
            }
        }
        out
    }

    /// Every completion order of up to 6 lanes: after each completion, `done_to` is exactly the
    /// end of the contiguous completed prefix; a checkpoint write moves the recovery point to it
    /// and no further; every owner whose lane is in the prefix can then return.
    #[test]
    fn every_completion_order_advances_to_the_contiguous_done_prefix() {
        for n in 1..=6u64 {
            for order in permutations(n as usize) {
                let (mut lanes, ids) = claimed(n);
                let mut done = vec![false; n as usize];
                for &i in &order {
                    lanes.complete(ids[i]);
                    done[i] = true;
                    let prefix = done.iter().take_while(|&&d| d).count() as u64 * 10;
                    assert_eq!(lanes.done_to, prefix, "order {order:?}");
                    // The owner of lane i (target = its end) writes if its lane is covered.
                    let target = (i as u64 + 1) * 10;
                    let wrote = write_if_asked(&mut lanes, target);
                    if prefix >= target {
                        assert_eq!(wrote, Some(prefix), "order {order:?}");
                    } else {
                        assert_eq!(wrote, None, "order {order:?}");
                        assert_eq!(lanes.next(target, false), Step::Wait);
                    }
                    // Whoever could write did: the recovery point is the done prefix.
                    assert_eq!(lanes.recovery_point(), prefix, "order {order:?}");
                    for j in 1..=n {
                        let want = if j * 10 <= prefix {
                            Step::Durable
                        } else {
                            Step::Wait
                        };
                        assert_eq!(lanes.next(j * 10, false), want, "order {order:?}");
                    }
                }
                assert_eq!(lanes.recovery_point(), n * 10, "order {order:?}");
                assert!(lanes.idle());
                lanes.check_invariants();
            }
        }
    }

    #[test]
    fn a_failed_lane_poisons_every_waiter() {
        let (mut lanes, ids) = claimed(3);
        lanes.complete(ids[0]);
        lanes.fail(ids[1]);
        lanes.complete(ids[2]);
        // The done prefix stops at the failed lane: its bytes are not msynced.
        assert_eq!(lanes.done_to, 10);
        // The first lane is msynced but was never checkpointed: not durable either.
        for t in [5, 10, 20, 30, 31] {
            assert_eq!(lanes.next(t, false), Step::Poisoned);
        }
        assert!(lanes.idle());
        assert_eq!(lanes.recovery_point(), 0);
    }

    #[test]
    fn a_failed_checkpoint_write_poisons_and_keeps_the_recovery_point() {
        let (mut lanes, ids) = claimed(2);
        lanes.complete(ids[0]);
        assert_eq!(lanes.next(10, false), Step::Write { to: 10, cursor: 10 });
        lanes.complete(ids[1]);
        assert_eq!(lanes.next(20, false), Step::Wait, "one writer at a time");
        lanes.write_failed();
        assert_eq!(lanes.recovery_point(), 0);
        assert_eq!(lanes.next(10, false), Step::Poisoned);
        assert_eq!(lanes.next(20, false), Step::Poisoned);
    }

    #[test]
    fn outside_poison_stops_new_work_but_not_covered_targets() {
        let (mut lanes, ids) = claimed(1);
        lanes.complete(ids[0]);
        assert_eq!(lanes.next(10, true), Step::Poisoned);
        let _ = write_if_asked(&mut lanes, 10);
        assert_eq!(lanes.next(10, true), Step::Durable);
        assert_eq!(lanes.next(11, true), Step::Poisoned);
    }

    #[test]
    fn a_seal_covers_lanes_in_flight_below_it_and_is_never_lowered() {
        let (mut lanes, ids) = claimed(3);
        // A seal makes everything below 25 durable while all three lanes are in flight.
        lanes.sealed(25, 25);
        assert_eq!(lanes.recovery_point(), 25);
        assert_eq!(lanes.next(20, false), Step::Durable);
        assert_eq!(lanes.next(30, false), Step::Wait);
        // The third lane completes first: 25..30 is its, below 25 the seal's.
        lanes.complete(ids[2]);
        assert_eq!(write_if_asked(&mut lanes, 30), Some(30));
        assert_eq!(lanes.recovery_point(), 30);
        // The older lanes complete below the recovery point: nothing moves back.
        lanes.complete(ids[0]);
        lanes.complete(ids[1]);
        assert_eq!(lanes.recovery_point(), 30);
        assert!(lanes.idle());
        // A seal above every claim moves the next claim's start.
        lanes.sealed(50, 50);
        assert_eq!(lanes.claimed(), (50, 50));
        assert_eq!(lanes.next(60, false), Step::Claim);
    }

    #[test]
    fn truncation_restarts_claims_at_the_lowered_recovery_point() {
        let (mut lanes, ids) = claimed(2);
        lanes.complete(ids[0]);
        lanes.complete(ids[1]);
        assert_eq!(write_if_asked(&mut lanes, 10), Some(20));
        lanes.truncated(15, 99);
        assert_eq!(lanes.recovery_point(), 15);
        assert_eq!(lanes.claimed(), (15, 99));
        assert_eq!(lanes.durable_cursor(), 99);
        assert_eq!(lanes.next(16, false), Step::Claim);
    }

    #[test]
    #[should_panic(expected = "truncation with a lane or a writer in flight")]
    fn truncation_requires_no_lane_in_flight() {
        let (mut lanes, _ids) = claimed(1);
        lanes.truncated(0, 0);
    }

    /// One thread's view of `sync_to` in the model below.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Actor {
        /// Needs `target`; holds no role.
        Asking {
            target: u64,
        },
        /// Msyncing its lane (outside the lock).
        Syncing {
            target: u64,
            lane: u64,
        },
        /// Writing the checkpoint (outside the lock).
        Writing {
            target: u64,
            to: u64,
        },
        Returned {
            target: u64,
            ok: bool,
        },
    }

    /// The model's disk and log: which offsets are msynced, what the checkpoint holds.
    #[derive(Debug, Default)]
    struct Model {
        log_end: u64,
        msynced: Vec<bool>,
        checkpoint: u64,
        /// Lane id -> claimed offsets.
        claims: std::collections::HashMap<u64, (u64, u64)>,
    }

    impl Model {
        fn all_msynced_below(&self, to: u64) -> bool {
            self.msynced[..to as usize].iter().all(|&m| m)
        }

        fn mark_msynced(&mut self, from: u64, to: u64) {
            for o in from..to {
                self.msynced[o as usize] = true;
            }
        }
    }

    /// One step of one thread running the `sync_to` protocol; `fail` makes its msync or
    /// checkpoint write fail.
    fn step(lanes: &mut Lanes<u64>, m: &mut Model, actor: Actor, fail: bool) -> Actor {
        match actor {
            Actor::Asking { target } => match lanes.next(target, false) {
                Step::Durable => Actor::Returned { target, ok: true },
                Step::Poisoned => Actor::Returned { target, ok: false },
                Step::Wait => Actor::Asking { target },
                Step::Claim => {
                    let (from, _) = lanes.claimed();
                    let id = lanes.claim(m.log_end, m.log_end);
                    m.claims.insert(id.0, (from, m.log_end));
                    Actor::Syncing { target, lane: id.0 }
                }
                Step::Write { to, cursor } => {
                    assert_eq!(to, cursor);
                    Actor::Writing { target, to }
                }
            },
            Actor::Syncing { target, lane } if fail => {
                lanes.fail(LaneId(lane));
                Actor::Returned { target, ok: false }
            }
            Actor::Syncing { target, lane } => {
                let (from, to) = m.claims[&lane];
                m.mark_msynced(from, to);
                lanes.complete(LaneId(lane));
                Actor::Asking { target }
            }
            Actor::Writing { target, .. } if fail => {
                lanes.write_failed();
                Actor::Returned { target, ok: false }
            }
            Actor::Writing { target, to } => {
                assert!(m.all_msynced_below(to), "checkpoint of bytes not msynced");
                m.checkpoint = m.checkpoint.max(to);
                lanes.written(to, to);
                Actor::Asking { target }
            }
            done @ Actor::Returned { .. } => done,
        }
    }

    proptest! {
        /// Random interleavings of threads running the `sync_to` protocol against the pure
        /// state, with appends, seals and failures: nobody returns Ok for a target above what
        /// was msynced and checkpointed, the recovery point never exceeds the contiguous msynced
        /// prefix nor falls, and without failures everybody returns Ok.
        #[test]
        fn interleavings_never_report_undurable_offsets(
            ops in proptest::collection::vec((0u8..6, 0usize..4, 0u8..20), 1..120),
        ) {
            let mut lanes = Lanes::new(0u64, 0u64);
            let mut m = Model::default();
            let mut actors: Vec<Actor> = Vec::new();
            let mut failures = false;
            let mut last_rp = 0;
            for (kind, who, arg) in ops {
                match kind {
                    // Append a batch and start a thread that needs it durable.
                    0 => {
                        m.log_end += 1 + u64::from(arg % 3);
                        m.msynced.resize(m.log_end as usize, false);
                        actors.push(Actor::Asking { target: m.log_end });
                    }
                    // A seal up to some published offset (everything before it durable, as
                    // note_sealed requires, and no writer active).
                    1 if !lanes.writing() && m.log_end > 0 => {
                        let rp = lanes.recovery_point();
                        let to = (rp + 1 + u64::from(arg)).min(m.log_end);
                        m.mark_msynced(rp, to);
                        m.checkpoint = m.checkpoint.max(to);
                        lanes.sealed(to, to);
                    }
                    _ if !actors.is_empty() => {
                        let i = who % actors.len();
                        let fail = kind == 5 && arg == 0;
                        failures |= fail
                            && matches!(actors[i], Actor::Syncing { .. } | Actor::Writing { .. });
                        actors[i] = step(&mut lanes, &mut m, actors[i], fail);
                    }
                    _ => {}
                }
                lanes.check_invariants();
                let rp = lanes.recovery_point();
                prop_assert!(rp >= last_rp, "recovery point fell");
                last_rp = rp;
                prop_assert!(rp <= m.checkpoint, "published before checkpointed");
                prop_assert!(m.all_msynced_below(lanes.done_to), "done prefix not msynced");
                for a in &actors {
                    if let Actor::Returned { target, ok: true } = a {
                        prop_assert!(*target <= rp);
                    }
                }
            }
            // Let every thread run to the end, round robin, failure-free.
            for _ in 0..1000 {
                for a in &mut actors {
                    *a = step(&mut lanes, &mut m, *a, false);
                }
            }
            prop_assert!(lanes.idle());
            for a in &actors {
                match a {
                    Actor::Returned { target, ok } => {
                        prop_assert!(*ok || failures, "an error without a failure");
                        if *ok {
                            prop_assert!(*target <= lanes.recovery_point());
                        }
                    }
                    other => prop_assert!(false, "thread stuck: {:?}", other),
                }
            }
        }
    }
}
