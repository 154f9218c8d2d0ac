//! The replica node: everything a replica process does around its [`Replica`], with no
//! network, no threads and no clock. Messages and ticks go in ([`ReplicaNode::step`],
//! [`ReplicaNode::tick`], each with the time), messages and events come out ([`Output`]).
//! The deterministic simulation, the thread cluster and `oncelog node` over TCP are transports
//! over this one type, so the simulation tests the node that ships.
//!
//! What it does:
//! - heartbeats to the controller every `heartbeat_ms` (a registration while `registering`),
//!   and applies the controller's records addressed to its incarnation;
//! - as a follower, keeps one fetch in flight to its leader (tagged; a reply with another tag
//!   is stale), gives it up after `fetch_timeout_ms`, backs off `fetch_backoff_ms` after a
//!   refusal, and fetches again at once after data (`idle_fetch_ms` after an empty answer when
//!   the leader does not long-poll);
//! - as a leader, answers a follower's fetch at once when there is something to say, and
//!   otherwise *parks* it (long poll) until its log end moves, the high-water mark moves
//!   (`wake_followers_on_hw`), it stops leading or `fetch_wait_ms` passes; a newer fetch of the
//!   same follower supersedes a parked one, which is answered with a refusal;
//! - takes client batches (acks 0/1/all), answers acks=all ones when the replica completes
//!   them, and sends the replica's ISR proposals to the controller.
//!
//! Invariants:
//! - every request that reaches [`ReplicaNode::step`] with a reply address is answered exactly
//!   once, or is still waiting (`waiting`, `parked`) when the node is dropped;
//! - at most one fetch of this follower is in flight, and at most one fetch per follower is
//!   parked;
//! - a parked fetch was handled once by `Replica::handle_fetch` (the follower's progress
//!   counted), and is answered by handling it again.

use std::collections::HashMap;

use super::protocol::{Msg, NodeEvent, Output};
use super::{Produced, Replica};
use crate::error::Error;
use crate::replica::ErrorReply;
use crate::replication::{FetchRequest, LogRecovery};
use crate::types::Offset;

/// The timing of a [`ReplicaNode`] (milliseconds of the driver's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTiming {
    /// How often the replica's own tick runs (acks=all deadlines, ISR changes, HW checkpoint).
    pub tick_ms: u64,
    /// How often a heartbeat goes to the controller.
    pub heartbeat_ms: u64,
    /// Longest a leader parks a follower's fetch at its log end (Kafka's
    /// `replica.fetch.wait.max.ms`); 0 answers at once.
    pub fetch_wait_ms: u64,
    /// A fetch with no answer after this long is given up and sent again.
    pub fetch_timeout_ms: u64,
    /// Pause before fetching again after a refused fetch or answer.
    pub fetch_backoff_ms: u64,
    /// Pause before fetching again after an empty answer (only matters when the leader does
    /// not long-poll).
    pub idle_fetch_ms: u64,
    /// Answer a parked fetch as soon as the leader's high-water mark moves (followers learn it
    /// at once, for one more round trip per move).
    pub wake_followers_on_hw: bool,
}

impl Default for NodeTiming {
    fn default() -> Self {
        NodeTiming {
            tick_ms: 10,
            heartbeat_ms: 50,
            fetch_wait_ms: 500,
            fetch_timeout_ms: 3_000,
            fetch_backoff_ms: 5,
            idle_fetch_ms: 5,
            wake_followers_on_hw: true,
        }
    }
}

/// A follower fetch the leader holds until there is something to answer.
#[derive(Debug)]
struct Parked<A> {
    from: A,
    id: u64,
    req: FetchRequest,
    deadline: u64,
    /// The high-water mark when it was parked.
    hw: Offset,
}

/// One replica process, minus its transport. `A` is the transport's return address.
#[derive(Debug)]
pub struct ReplicaNode<A> {
    replica: Replica,
    timing: NodeTiming,
    /// Set until the controller answers this life: what the log recovered.
    registering: Option<LogRecovery>,
    next_heartbeat: u64,
    next_replica_tick: u64,
    /// The fetch in flight: its tag and when it is given up.
    in_flight: Option<(u64, u64)>,
    next_fetch_id: u64,
    fetch_not_before: u64,
    parked: Vec<Parked<A>>,
    /// acks=all requests waiting in the replica, by replica token: (client, client token).
    waiting: HashMap<u64, (A, u64)>,
    next_token: u64,
    last_error: Option<String>,
}

impl<A: Clone> ReplicaNode<A> {
    /// A node around `replica`, which registers with the controller (`registering`: what its
    /// log recovered) or, with `None`, is already known to it.
    pub fn new(replica: Replica, timing: NodeTiming, registering: Option<LogRecovery>) -> Self {
        ReplicaNode {
            replica,
            timing,
            registering,
            next_heartbeat: 0,
            next_replica_tick: 0,
            in_flight: None,
            next_fetch_id: 0,
            fetch_not_before: 0,
            parked: Vec::new(),
            waiting: HashMap::new(),
            next_token: 0,
            last_error: None,
        }
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, to close it (or crash it in a test). Waiting requests get no answer.
    pub fn into_replica(self) -> Replica {
        self.replica
    }

    /// Whether the node still registers (the controller has not answered this life yet).
    pub fn is_registering(&self) -> bool {
        self.registering.is_some()
    }

    /// What the node registers with while it registers (see [`ReplicaNode::is_registering`]).
    pub fn registration(&self) -> Option<LogRecovery> {
        self.registering
    }

    /// The last failure the node met, if any (see [`NodeEvent::Failed`]).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// acks=all requests waiting for the high-water mark.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The earliest time at which [`ReplicaNode::tick`] has work to do.
    pub fn next_wakeup(&self) -> u64 {
        let mut at = self.next_heartbeat.min(self.next_replica_tick);
        for p in &self.parked {
            at = at.min(p.deadline);
        }
        match self.in_flight {
            Some((_, expiry)) => at = at.min(expiry),
            None if self.replica.fetch_request().is_some() => at = at.min(self.fetch_not_before),
            None => {}
        }
        at
    }

    /// Periodic work at `now`: heartbeat, the replica's tick, long-poll deadlines, the next
    /// fetch. Call it at [`ReplicaNode::next_wakeup`] (earlier is harmless).
    pub fn tick(&mut self, now: u64, out: &mut Vec<Output<A>>) {
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat_ms;
            out.push(Output::ToController(Msg::Heartbeat {
                incarnation: self.replica.incarnation(),
                registering: self.registering,
                log_end: self.replica.log_end_offset(),
            }));
        }
        if now >= self.next_replica_tick {
            self.next_replica_tick = now + self.timing.tick_ms;
            match self.replica.tick(now) {
                Ok(Some(proposal)) => out.push(Output::ToController(Msg::AlterIsr(proposal))),
                Ok(None) => {}
                Err(e) => self.failed(out, "tick", &e),
            }
        }
        self.after(now, out);
    }

    /// A message arrives at `now`; `from` is where to answer a request (a fetch or a produce;
    /// a request without one is dropped).
    pub fn step(&mut self, from: Option<A>, msg: Msg, now: u64, out: &mut Vec<Output<A>>) {
        match msg {
            Msg::Record { rec, incarnation } => {
                if incarnation != Some(self.replica.incarnation()) {
                    return;
                }
                self.registering = None;
                let before = (self.replica.leader(), self.replica.leader_epoch());
                let was_leader = self.replica.is_leader();
                if let Err(e) = self.replica.on_leader_and_isr(&rec, now) {
                    self.failed(out, "controller record", &e);
                }
                if (self.replica.leader(), self.replica.leader_epoch()) != before {
                    // A new leader or epoch: the fetch in flight is moot; fetch at once.
                    self.in_flight = None;
                    self.fetch_not_before = 0;
                }
                if self.replica.is_leader() && !was_leader {
                    out.push(Output::Event(NodeEvent::Leads(self.replica.leader_epoch())));
                }
            }
            Msg::SessionExpired => {
                // This life's log is whole: it registers again as intact.
                self.registering = Some(LogRecovery::Intact);
                self.next_heartbeat = now;
            }
            Msg::AlterIsrResult(result) => {
                if let Err(e) = self.replica.on_alter_isr_result(result, now) {
                    self.failed(out, "ISR change", &e);
                }
            }
            Msg::Fetch { id, req } => {
                if let Some(from) = from {
                    self.on_fetch(from, id, req, now, out);
                }
            }
            Msg::FetchResponse { id, result } => self.on_fetch_response(id, result, now, out),
            Msg::Produce {
                token,
                batch,
                acks,
                timeout_ms,
            } => {
                if let Some(from) = from {
                    self.on_produce(from, token, &batch, acks, now + timeout_ms, out);
                }
            }
            // Not addressed to a replica.
            Msg::ProduceResult { .. } | Msg::Heartbeat { .. } | Msg::AlterIsr(_) => {}
        }
        self.after(now, out);
    }

    fn failed(&mut self, out: &mut Vec<Output<A>>, what: &str, e: &Error) {
        let text = format!("{what}: {e}");
        self.last_error = Some(text.clone());
        out.push(Output::Event(NodeEvent::Failed(text)));
    }

    fn on_produce(
        &mut self,
        from: A,
        token: u64,
        batch: &crate::format::batch::RecordBatch,
        acks: super::Acks,
        deadline: u64,
        out: &mut Vec<Output<A>>,
    ) {
        self.next_token += 1;
        let mine = self.next_token;
        let produced = match crate::producer::Marker::of(&batch.view()) {
            Ok(Some(m)) => self.replica.produce_marker(&m, acks, mine, deadline),
            _ => self.replica.produce(batch, acks, mine, deadline),
        };
        let result = match produced {
            Ok(Produced::Waiting(_)) => {
                self.waiting.insert(mine, (from, token));
                return;
            }
            Ok(Produced::Done(info)) => Ok(info),
            Err(e) => Err(ErrorReply::from_error(&e)),
        };
        out.push(Output::Reply(from, Msg::ProduceResult { token, result }));
    }

    /// A follower's fetch at this (leader) replica: answered now, or parked at the log end.
    fn on_fetch(
        &mut self,
        from: A,
        id: u64,
        req: FetchRequest,
        now: u64,
        out: &mut Vec<Output<A>>,
    ) {
        let result = self.replica.handle_fetch(&req, now);
        let at_end = matches!(&result, Ok(resp)
            if resp.batches.is_empty() && resp.diverging.is_none() && !resp.out_of_range);
        if at_end && self.timing.fetch_wait_ms > 0 {
            // A newer fetch of the same follower: it gave up on the parked one.
            if let Some(i) = self
                .parked
                .iter()
                .position(|p| p.req.replica == req.replica)
            {
                let old = self.parked.swap_remove(i);
                let refusal = ErrorReply::from_error(&Error::Timeout);
                out.push(Output::Reply(
                    old.from,
                    Msg::FetchResponse {
                        id: old.id,
                        result: Err(refusal),
                    },
                ));
            }
            self.parked.push(Parked {
                from,
                id,
                req,
                deadline: now + self.timing.fetch_wait_ms,
                hw: self.replica.high_watermark(),
            });
            return;
        }
        let result = result.map_err(|e| ErrorReply::from_error(&e));
        out.push(Output::Reply(from, Msg::FetchResponse { id, result }));
    }

    fn on_fetch_response(
        &mut self,
        id: u64,
        result: Result<crate::replication::FetchResponse, ErrorReply>,
        now: u64,
        out: &mut Vec<Output<A>>,
    ) {
        if self.in_flight.map(|(tag, _)| tag) != Some(id) {
            return; // stale: given up on, duplicated, or from before a leader change
        }
        self.in_flight = None;
        let resp = match result {
            Ok(resp) => resp,
            Err(_) => {
                // Not (yet) the leader of our epoch, fenced, superseded: wait for news.
                self.fetch_not_before = now + self.timing.fetch_backoff_ms;
                return;
            }
        };
        let idle = resp.batches.is_empty();
        let end_before = self.replica.log_end_offset();
        match self.replica.handle_fetch_response(resp) {
            Ok(()) => {
                self.fetch_not_before = if idle && self.timing.fetch_wait_ms == 0 {
                    now + self.timing.idle_fetch_ms
                } else {
                    now
                };
            }
            // An answer that no longer fits the log (a leader change raced it): fetch again.
            Err(Error::Replication(_) | Error::UnexpectedAppendOffset { .. }) => {
                self.fetch_not_before = now + self.timing.fetch_backoff_ms;
            }
            Err(e) => {
                self.failed(out, "fetch response", &e);
                self.fetch_not_before = now + self.timing.fetch_backoff_ms;
            }
        }
        let end_after = self.replica.log_end_offset();
        if end_after < end_before {
            out.push(Output::Event(NodeEvent::Truncated {
                from: end_before,
                to: end_after,
            }));
        }
    }

    /// After every event: acks=all answers, long-poll answers, the next fetch.
    fn after(&mut self, now: u64, out: &mut Vec<Output<A>>) {
        // Producers first: they wait on the critical path, a parked follower only for news.
        self.answer_completions(out);
        self.serve_parked(now, out);
        self.answer_completions(out);
        self.maybe_fetch(now, out);
    }

    fn answer_completions(&mut self, out: &mut Vec<Output<A>>) {
        for c in self.replica.take_completions() {
            if let Some((client, token)) = self.waiting.remove(&c.token) {
                let result = c.result.map_err(|e| ErrorReply::from_error(&e));
                out.push(Output::Reply(client, Msg::ProduceResult { token, result }));
            }
        }
    }

    fn serve_parked(&mut self, now: u64, out: &mut Vec<Output<A>>) {
        if self.parked.is_empty() {
            return;
        }
        let leading = self.replica.is_leader();
        let end = self.replica.log_end_offset();
        let hw = self.replica.high_watermark();
        let mut i = 0;
        while i < self.parked.len() {
            let p = &self.parked[i];
            let due = !leading
                || end > p.req.fetch_offset
                || (self.timing.wake_followers_on_hw && hw != p.hw)
                || now >= p.deadline;
            if !due {
                i += 1;
                continue;
            }
            let p = self.parked.swap_remove(i);
            let result = self
                .replica
                .handle_fetch(&p.req, now)
                .map_err(|e| ErrorReply::from_error(&e));
            out.push(Output::Reply(
                p.from,
                Msg::FetchResponse { id: p.id, result },
            ));
        }
    }

    /// Sends the next fetch if following and none is in flight.
    fn maybe_fetch(&mut self, now: u64, out: &mut Vec<Output<A>>) {
        if let Some((_, expiry)) = self.in_flight {
            if now < expiry {
                return;
            }
            self.in_flight = None; // lost, or the leader stopped with it parked
        }
        if now < self.fetch_not_before {
            return;
        }
        let Some((leader, req)) = self.replica.fetch_request() else {
            return;
        };
        let id = self.next_fetch_id;
        self.next_fetch_id += 1;
        self.in_flight = Some((id, now + self.timing.fetch_timeout_ms));
        out.push(Output::ToReplica(leader, Msg::Fetch { id, req }));
    }

    /// A fetch sent with [`Output::ToReplica`] could not be delivered (no connection): fetch
    /// again after the backoff.
    pub fn fetch_undeliverable(&mut self, id: u64, now: u64) {
        if self.in_flight.map(|(tag, _)| tag) == Some(id) {
            self.in_flight = None;
            self.fetch_not_before = now + self.timing.fetch_backoff_ms;
        }
    }
}
