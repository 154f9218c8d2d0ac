//! One replica thread of a [`super::ThreadCluster`]: a channel transport over the
//! [`ReplicaNode`] that `oncelog node` and the simulation run too.
//!
//! The thread waits on its inbox (messages for the node, with a reply channel for requests;
//! inspections; stop) and on the channel its own fetches are answered on, until the node's next
//! wake-up. Outputs go out at once: a fetch to the leader's inbox, an answer to the channel the
//! request came with, an ISR proposal to the in-process controller (synchronously; the answer
//! is stepped back in). Heartbeats are dropped: the in-process controller learns of stops and
//! restarts from the cluster's calls, not from sessions.
//!
//! Invariant: a request answered by the node goes to the channel it came with; a channel
//! dropped when the replica stops is a lost response (the client sees `Timeout`).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};

use super::threads::{Event, ReplicaStatus, Shared, StopMode};
use crate::error::Result;
use crate::replica::{Msg, NodeTiming, Output, Replica, ReplicaNode};
use crate::replication::Controller;

/// Most inbox messages handled before the periodic work runs again.
const DRAIN: usize = 64;

pub(super) struct Node {
    node: ReplicaNode<Sender<Msg>>,
    shared: Arc<Shared>,
    inbox: Receiver<Event>,
    /// Answers to this follower's fetches.
    fetch_tx: Sender<Msg>,
    fetch_rx: Receiver<Msg>,
    out: Vec<Output<Sender<Msg>>>,
}

/// The node timing of a thread cluster's replicas.
pub(super) fn timing(opts: &super::ClusterOptions) -> NodeTiming {
    NodeTiming {
        tick_ms: opts.tick_ms,
        // Dropped by this driver (see the module documentation): rarely.
        heartbeat_ms: 60_000,
        fetch_wait_ms: opts.fetch_wait_ms,
        fetch_timeout_ms: opts.fetch_wait_ms * 2 + 1_000,
        fetch_backoff_ms: 5,
        idle_fetch_ms: opts.tick_ms,
        wake_followers_on_hw: opts.wake_followers_on_hw,
    }
}

impl Node {
    pub(super) fn new(replica: Replica, shared: Arc<Shared>, inbox: Receiver<Event>) -> Node {
        let (fetch_tx, fetch_rx) = crossbeam_channel::unbounded();
        Node {
            node: ReplicaNode::new(replica, timing(&shared.opts), None),
            shared,
            inbox,
            fetch_tx,
            fetch_rx,
            out: Vec::new(),
        }
    }

    /// The thread: events until told to stop (or until every sender of the inbox is gone).
    pub(super) fn run(mut self) -> Result<()> {
        loop {
            let now = self.shared.now_ms();
            let wake = self.node.next_wakeup().saturating_sub(now);
            let stop = select! {
                recv(self.inbox) -> ev => match ev {
                    Ok(ev) => self.handle_and_drain(ev),
                    Err(_) => Some(StopMode::Close),
                },
                recv(self.fetch_rx) -> msg => {
                    if let Ok(msg) = msg {
                        self.step(None, msg);
                    }
                    None
                },
                default(Duration::from_millis(wake)) => None,
            };
            if let Some(mode) = stop {
                return self.stop(mode);
            }
            let now = self.shared.now_ms();
            let mut out = std::mem::take(&mut self.out);
            self.node.tick(now, &mut out);
            self.out = out;
            self.dispatch();
            if self.shared.opts.check_invariants {
                self.node.replica().check_invariants();
            }
        }
    }

    /// Handles `first` and whatever else is already queued (up to [`DRAIN`]); returns the stop
    /// request if one came.
    fn handle_and_drain(&mut self, first: Event) -> Option<StopMode> {
        let mut ev = first;
        for _ in 0..DRAIN {
            if let Event::Stop(mode) = ev {
                return Some(mode);
            }
            self.handle(ev);
            match self.inbox.try_recv() {
                Ok(next) => ev = next,
                Err(_) => return None,
            }
        }
        if let Event::Stop(mode) = ev {
            return Some(mode);
        }
        self.handle(ev);
        None
    }

    fn stop(self, mode: StopMode) -> Result<()> {
        // Waiting clients and parked fetches see their reply channels close: a lost response.
        let replica = self.node.into_replica();
        match mode {
            StopMode::Close => replica.close(),
            StopMode::Crash => {
                replica.simulate_crash();
                Ok(())
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Deliver { msg, reply_to } => self.step(reply_to, msg),
            Event::Inspect(f) => f(self.node.replica()),
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            // Handled by the caller.
            Event::Stop(_) => {}
        }
    }

    fn step(&mut self, from: Option<Sender<Msg>>, msg: Msg) {
        let now = self.shared.now_ms();
        let mut out = std::mem::take(&mut self.out);
        self.node.step(from, msg, now, &mut out);
        self.out = out;
        self.dispatch();
    }

    /// Sends the node's outputs; a controller answer is stepped back in (and its outputs sent).
    fn dispatch(&mut self) {
        while !self.out.is_empty() {
            let now = self.shared.now_ms();
            let mut later = Vec::new();
            for o in self.out.drain(..) {
                match o {
                    Output::ToReplica(leader, msg) => {
                        let id = match &msg {
                            Msg::Fetch { id, .. } => Some(*id),
                            _ => None,
                        };
                        let sent = self.shared.inbox(leader).is_some_and(|inbox| {
                            inbox
                                .send(Event::Deliver {
                                    msg,
                                    reply_to: Some(self.fetch_tx.clone()),
                                })
                                .is_ok()
                        });
                        if let (false, Some(id)) = (sent, id) {
                            self.node.fetch_undeliverable(id, now);
                        }
                    }
                    Output::ToController(Msg::AlterIsr(proposal)) => {
                        let me = self.node.replica().id();
                        let mut control = self.shared.control.lock();
                        let result = control.ctl.alter_isr(&proposal);
                        if let Ok(rec) = &result {
                            self.shared.publish(&control.ctl, rec, Some(me));
                        }
                        drop(control);
                        later.push(Msg::AlterIsrResult(result));
                    }
                    Output::ToController(_) => {}
                    Output::Reply(to, msg) => {
                        let _ = to.send(msg);
                    }
                    // The node keeps its last failure for `status`.
                    Output::Event(_) => {}
                }
            }
            let mut out = std::mem::take(&mut self.out);
            for msg in later {
                self.node.step(None, msg, now, &mut out);
            }
            self.out = out;
        }
    }

    fn status(&self) -> ReplicaStatus {
        let r = self.node.replica();
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
            last_error: self.node.last_error().map(str::to_owned),
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("replica", &self.node.replica().id())
            .field("waiting", &self.node.waiting())
            .finish()
    }
}
