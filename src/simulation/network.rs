//! The simulated network: a seeded queue that drops, delays, duplicates and reorders messages
//! and can cut a replica off from everyone for a while.

use std::collections::BTreeMap;

use super::{Faults, SimRng};
use crate::replica::Msg;
use crate::replication::ReplicaId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Replica(ReplicaId),
    Controller,
    Client(usize),
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: Endpoint,
    pub to: Endpoint,
    pub msg: Msg,
}

#[derive(Debug)]
pub struct Network {
    faults: Faults,
    /// (delivery time, sequence) -> message; the sequence breaks ties deterministically.
    queue: BTreeMap<(u64, u64), Envelope>,
    seq: u64,
    /// Replica cut off from everyone until the given time.
    isolated: Vec<(ReplicaId, u64)>,
    healed: bool,
    pub dropped: u64,
    pub duplicated: u64,
}

impl Network {
    pub fn new(faults: Faults) -> Network {
        Network {
            faults,
            queue: BTreeMap::new(),
            seq: 0,
            isolated: Vec::new(),
            healed: false,
            dropped: 0,
            duplicated: 0,
        }
    }

    fn cut(&self, e: Endpoint, now: u64) -> bool {
        matches!(e, Endpoint::Replica(r) if self.isolated.iter().any(|(i, until)| *i == r && *until > now))
    }

    pub fn send(&mut self, rng: &mut SimRng, now: u64, from: Endpoint, to: Endpoint, msg: Msg) {
        if self.cut(from, now) || self.cut(to, now) {
            self.dropped += 1;
            return;
        }
        if !self.healed && rng.chance(self.faults.drop_per_mille) {
            self.dropped += 1;
            return;
        }
        let copies = if !self.healed && rng.chance(self.faults.duplicate_per_mille) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + rng.range(1, self.faults.max_delay_ms.max(1));
            self.seq += 1;
            self.queue.insert(
                (at, self.seq),
                Envelope {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// The next message due strictly before `limit`.
    pub fn pop_due(&mut self, limit: u64) -> Option<(u64, Envelope)> {
        let (&(at, seq), _) = self.queue.iter().next()?;
        if at >= limit {
            return None;
        }
        self.queue.remove(&(at, seq)).map(|e| (at, e))
    }

    pub fn isolate(&mut self, replica: ReplicaId, until: u64) {
        self.isolated.push((replica, until));
    }

    /// No more drops, duplicates or partitions (delays stay).
    pub fn heal(&mut self) {
        self.healed = true;
        self.isolated.clear();
    }
}
