//! One replica thread of a [`super::ThreadCluster`]: the event loop around a [`Replica`].
//!
//! Invariants:
//! - at most one fetch of this follower is in flight (`outstanding`); a reply with another id
//!   is stale and ignored;
//! - every produce request waiting for acks=all is in `waiting` under the token given to
//!   `Replica::produce`, and is answered exactly once (or its reply channel is dropped when the
//!   replica crashes or closes: the client sees a lost response);
//! - a parked fetch has been handled once by `Replica::handle_fetch` (so the follower's
//!   progress counted for the high-water mark) and is answered by handling it again when the
//!   log end or high-water mark moved, the replica stopped leading, or its deadline passed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::threads::{FetchReply, Msg, ReplicaStatus, Shared, StopMode};
use crate::error::Result;
use crate::log::AppendInfo;
use crate::replica::{Produced, Replica};
use crate::replication::{Controller, FetchRequest, LeaderAndIsr};
use crate::types::Offset;

/// Pause before the next fetch after an error (no leader yet, fenced, refused response).
const FETCH_BACKOFF: Duration = Duration::from_millis(5);
/// Most inbox messages handled before the periodic work runs again.
const DRAIN: usize = 64;

/// A follower fetch held by the leader until there is something to answer.
#[derive(Debug)]
struct Parked {
    req: FetchRequest,
    id: u64,
    reply_to: Sender<FetchReply>,
    deadline: Instant,
    /// The high-water mark when it was parked: a move is worth telling the follower.
    hw: Offset,
}

pub(super) struct Node {
    replica: Replica,
    shared: Arc<Shared>,
    inbox: Receiver<Msg>,
    /// Replies to this follower's fetches.
    fetch_tx: Sender<FetchReply>,
    fetch_rx: Receiver<FetchReply>,
    /// acks=all requests waiting in the replica, by token.
    waiting: HashMap<u64, Sender<Result<AppendInfo>>>,
    next_token: u64,
    parked: Vec<Parked>,
    /// The in-flight fetch: its id and when it expires.
    outstanding: Option<(u64, Instant)>,
    next_fetch_id: u64,
    fetch_not_before: Option<Instant>,
    next_tick: Instant,
    last_error: Option<String>,
}

impl Node {
    pub(super) fn new(replica: Replica, shared: Arc<Shared>, inbox: Receiver<Msg>) -> Node {
        let (fetch_tx, fetch_rx) = crossbeam_channel::unbounded();
        Node {
            replica,
            shared,
            inbox,
            fetch_tx,
            fetch_rx,
            waiting: HashMap::new(),
            next_token: 0,
            parked: Vec::new(),
            outstanding: None,
            next_fetch_id: 0,
            fetch_not_before: None,
            next_tick: Instant::now(),
            last_error: None,
        }
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.shared.opts.tick_ms)
    }

    fn fetch_wait(&self) -> Duration {
        Duration::from_millis(self.shared.opts.fetch_wait_ms)
    }

    /// The thread: events until told to stop (or until every sender of the inbox is gone).
    pub(super) fn run(mut self) -> Result<()> {
        loop {
            let timeout = self.next_wakeup().saturating_duration_since(Instant::now());
            let stop = select! {
                recv(self.inbox) -> msg => match msg {
                    Ok(msg) => self.handle_and_drain(msg),
                    Err(_) => Some(StopMode::Close),
                },
                recv(self.fetch_rx) -> reply => {
                    if let Ok(reply) = reply {
                        self.on_fetch_reply(reply);
                    }
                    None
                },
                default(timeout) => None,
            };
            if let Some(mode) = stop {
                return self.stop(mode);
            }
            self.after_event();
        }
    }

    /// Handles `first` and whatever else is already queued (up to [`DRAIN`]); returns the stop
    /// request if one came.
    fn handle_and_drain(&mut self, first: Msg) -> Option<StopMode> {
        let mut msg = first;
        for _ in 0..DRAIN {
            if let Msg::Stop(mode) = msg {
                return Some(mode);
            }
            self.handle(msg);
            match self.inbox.try_recv() {
                Ok(next) => msg = next,
                Err(_) => return None,
            }
        }
        if let Msg::Stop(mode) = msg {
            return Some(mode);
        }
        self.handle(msg);
        None
    }

    fn stop(self, mode: StopMode) -> Result<()> {
        // Waiting clients and parked fetches see their reply channels close: a lost response.
        match mode {
            StopMode::Close => self.replica.close(),
            StopMode::Crash => {
                self.replica.simulate_crash();
                Ok(())
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let mut at = self.next_tick;
        for p in &self.parked {
            at = at.min(p.deadline);
        }
        if let Some((_, expiry)) = self.outstanding {
            at = at.min(expiry);
        } else if self.replica.fetch_request().is_some() {
            at = at.min(self.fetch_not_before.unwrap_or(at));
        }
        at
    }

    fn note_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.last_error = Some(format!("{what}: {e}"));
    }

    fn handle(&mut self, msg: Msg) {
        let now_ms = self.shared.now_ms();
        match msg {
            Msg::LeaderAndIsr(rec) => self.on_leader_and_isr(&rec, now_ms),
            Msg::Produce {
                batch,
                acks,
                deadline_ms,
                reply,
            } => {
                let token = self.next_token;
                self.next_token += 1;
                match self.replica.produce(&batch, acks, token, deadline_ms) {
                    Ok(Produced::Done(info)) => {
                        let _ = reply.send(Ok(info));
                    }
                    Ok(Produced::Waiting(_)) => {
                        self.waiting.insert(token, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::Fetch { req, id, reply_to } => self.on_fetch(req, id, reply_to, now_ms),
            Msg::Inspect(f) => f(&self.replica),
            Msg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            // Handled by the caller.
            Msg::Stop(_) => {}
        }
    }

    fn status(&self) -> ReplicaStatus {
        let r = &self.replica;
        ReplicaStatus {
            id: r.id(),
            incarnation: r.incarnation(),
            leader: r.leader(),
            is_leader: r.is_leader(),
            leader_epoch: r.leader_epoch(),
            high_watermark: r.high_watermark(),
            log_start: r.log().log_start_offset(),
            log_end: r.log_end_offset(),
            isr: r.isr(),
            last_error: self.last_error.clone(),
        }
    }

    fn on_leader_and_isr(&mut self, rec: &LeaderAndIsr, now_ms: u64) {
        let before = (self.replica.leader(), self.replica.leader_epoch());
        if let Err(e) = self.replica.on_leader_and_isr(rec, now_ms) {
            self.note_error("controller record", &e);
        }
        if (self.replica.leader(), self.replica.leader_epoch()) != before {
            // A new leader or epoch: the fetch in flight (if any) is moot; fetch at once.
            self.outstanding = None;
            self.fetch_not_before = None;
        }
    }

    /// A follower's fetch arriving at this (leader) replica: answer now, or park it at the log
    /// end.
    fn on_fetch(&mut self, req: FetchRequest, id: u64, reply_to: Sender<FetchReply>, now: u64) {
        let result = self.replica.handle_fetch(&req, now);
        let at_end = matches!(&result, Ok(resp)
            if resp.batches.is_empty() && resp.diverging.is_none() && !resp.out_of_range);
        if at_end && self.shared.opts.fetch_wait_ms > 0 {
            // Drop an older parked fetch of the same follower (it gave up on it).
            self.parked.retain(|p| p.req.replica != req.replica);
            self.parked.push(Parked {
                req,
                id,
                reply_to,
                deadline: Instant::now() + self.fetch_wait(),
                hw: self.replica.high_watermark(),
            });
            return;
        }
        let _ = reply_to.send(FetchReply { id, result });
    }

    /// Answers the parked fetches that have something to learn (or waited long enough).
    fn serve_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let now = Instant::now();
        let now_ms = self.shared.now_ms();
        let leading = self.replica.is_leader();
        let end = self.replica.log_end_offset();
        let hw = self.replica.high_watermark();
        let hw_wakes = self.shared.opts.wake_followers_on_hw;
        let mut i = 0;
        while i < self.parked.len() {
            let p = &self.parked[i];
            let due = !leading
                || end > p.req.fetch_offset
                || (hw_wakes && hw != p.hw)
                || now >= p.deadline;
            if !due {
                i += 1;
                continue;
            }
            let p = self.parked.swap_remove(i);
            let result = self.replica.handle_fetch(&p.req, now_ms);
            let _ = p.reply_to.send(FetchReply { id: p.id, result });
        }
    }

    fn on_fetch_reply(&mut self, reply: FetchReply) {
        if self.outstanding.map(|(id, _)| id) != Some(reply.id) {
            return; // stale: a fetch given up on, or from before a leader change
        }
        self.outstanding = None;
        match reply.result {
            Ok(resp) => {
                if let Err(e) = self.replica.handle_fetch_response(resp) {
                    self.note_error("fetch response", &e);
                    self.fetch_not_before = Some(Instant::now() + FETCH_BACKOFF);
                }
            }
            Err(e) => {
                // Not (yet) the leader in our epoch, fenced, ...: wait for the controller.
                self.note_error("fetch", &e);
                self.fetch_not_before = Some(Instant::now() + FETCH_BACKOFF);
            }
        }
    }

    /// Sends the next fetch if following and none is in flight.
    fn maybe_fetch(&mut self) {
        let now = Instant::now();
        if let Some((_, expiry)) = self.outstanding {
            if now < expiry {
                return;
            }
            self.outstanding = None; // lost (the leader stopped with our fetch parked)
        }
        if self.fetch_not_before.is_some_and(|t| now < t) {
            return;
        }
        self.fetch_not_before = None;
        let Some((leader, req)) = self.replica.fetch_request() else {
            return;
        };
        let sent = self.shared.inbox(leader).is_some_and(|inbox| {
            inbox
                .send(Msg::Fetch {
                    req,
                    id: self.next_fetch_id,
                    reply_to: self.fetch_tx.clone(),
                })
                .is_ok()
        });
        if sent {
            let expiry = now + self.fetch_wait() * 2 + Duration::from_secs(1);
            self.outstanding = Some((self.next_fetch_id, expiry));
            self.next_fetch_id += 1;
        } else {
            self.fetch_not_before = Some(now + FETCH_BACKOFF);
        }
    }

    fn tick(&mut self) {
        let now_ms = self.shared.now_ms();
        match self.replica.tick(now_ms) {
            Ok(None) => {}
            Ok(Some(proposal)) => {
                let me = self.replica.id();
                let result = {
                    let mut control = self.shared.control.lock();
                    let result = control.ctl.alter_isr(&proposal);
                    if let Ok(rec) = &result {
                        self.shared.publish(rec, Some(me));
                    }
                    result
                };
                if let Err(e) = &result {
                    self.note_error("ISR proposal refused", e);
                }
                if let Err(e) = self.replica.on_alter_isr_result(result, now_ms) {
                    self.note_error("ISR change", &e);
                }
            }
            Err(e) => self.note_error("tick", &e),
        }
    }

    /// Answers the acks=all requests the replica completed, failed or timed out (a request
    /// failed because this replica stopped leading is already `Timeout`, an unknown outcome:
    /// see `Replica::take_completions`).
    fn answer_completions(&mut self) {
        for c in self.replica.take_completions() {
            if let Some(reply) = self.waiting.remove(&c.token) {
                let _ = reply.send(c.result);
            }
        }
    }

    /// The periodic work after every event: tick when due, long-poll answers, acks=all
    /// answers, the next fetch.
    fn after_event(&mut self) {
        let now = Instant::now();
        if now >= self.next_tick {
            self.tick();
            self.next_tick = now + self.tick_interval();
        }
        // Producers first: they wait on the critical path, a parked follower only for news.
        self.answer_completions();
        self.serve_parked();
        self.answer_completions();
        self.maybe_fetch();
        if self.shared.opts.check_invariants {
            self.replica.check_invariants();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("replica", &self.replica.id())
            .field("waiting", &self.waiting.len())
            .field("parked", &self.parked.len())
            .field("outstanding", &self.outstanding)
            .finish()
    }
}
