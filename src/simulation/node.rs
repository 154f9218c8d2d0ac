//! One simulated replica process: its disk (a `SimStorage` of its own), its `Replica` while
//! running, and its fetch loop, heartbeats and ISR proposals.

use std::path::PathBuf;
use std::sync::Arc;

use super::network::Endpoint;
use super::SimOptions;
use crate::clock::ManualClock;
use crate::config::LogConfig;
use crate::io::sim::{CrashMode, SimStorage};
use crate::replica::{Msg, NodeEvent, NodeTiming, Output, Replica, ReplicaConfig, ReplicaNode};
use crate::replication::{LeaderConfig, LogRecovery, ReplicaId};

/// The timing of every simulated node: the node that ships, at the simulation's pace.
const TIMING: NodeTiming = NodeTiming {
    tick_ms: 10,
    heartbeat_ms: 50,
    // A parked fetch (at most 30 ms) and the two messages' delays (at most 30 ms each) fit in
    // the fetch timeout; a lost message then costs at most a quarter of the lag limit.
    fetch_wait_ms: 30,
    fetch_timeout_ms: 100,
    fetch_backoff_ms: 10,
    idle_fetch_ms: 20,
    wake_followers_on_hw: true,
};

/// Messages to send and trace lines, from one delivery.
pub type Received = (Vec<(Endpoint, Msg)>, Vec<String>);

#[derive(Debug)]
pub struct Node {
    pub id: ReplicaId,
    ids: Vec<ReplicaId>,
    storage: SimStorage,
    clock: Arc<ManualClock>,
    opts: SimOptions,
    node: Option<ReplicaNode<Endpoint>>,
    /// Lives so far; the next start uses this as its incarnation.
    lives: u64,
    pub down_until: Option<u64>,
    pub paused_until: Option<u64>,
    pub partitioned_until: Option<u64>,
    /// The node may be missing data it had (power loss, wiped or corrupted disk) until it is
    /// back in the ISR.
    lost_data: bool,
}

fn dir() -> PathBuf {
    PathBuf::from("/sim/replica")
}

impl Node {
    pub fn new(
        id: ReplicaId,
        ids: &[ReplicaId],
        seed: u64,
        opts: &SimOptions,
        clock: &Arc<ManualClock>,
    ) -> Node {
        Node {
            id,
            ids: ids.to_vec(),
            storage: SimStorage::new(seed),
            clock: Arc::clone(clock),
            opts: opts.clone(),
            node: None,
            lives: 0,
            down_until: None,
            paused_until: None,
            partitioned_until: None,
            lost_data: false,
        }
    }

    pub fn replica(&self) -> Option<&Replica> {
        self.node.as_ref().map(ReplicaNode::replica)
    }

    pub fn is_down(&self) -> bool {
        self.node.is_none()
    }

    pub fn is_impaired(&self, now: u64) -> bool {
        self.is_down()
            || self.paused_until.is_some_and(|t| t > now)
            || self.partitioned_until.is_some_and(|t| t > now)
    }

    pub fn may_have_lost_data(&self) -> bool {
        self.lost_data
    }

    pub fn describe(&self) -> String {
        match self.replica() {
            None => format!("r{} down", self.id.0),
            Some(r) => format!(
                "r{} {} epoch {} leo {} hw {} isr {:?}",
                self.id.0,
                if r.is_leader() { "leader" } else { "follower" },
                r.leader_epoch(),
                r.log_end_offset().0,
                r.high_watermark().0,
                r.isr()
            ),
        }
    }

    fn config(&self) -> ReplicaConfig {
        let log = LogConfig {
            segment_bytes: 4 << 10,
            max_batch_bytes: 2 << 10,
            sync: self.opts.sync,
            background_thread: false,
            ..LogConfig::for_tests()
        }
        .with_storage(Arc::new(self.storage.clone()))
        .with_clock(Arc::clone(&self.clock) as Arc<dyn crate::clock::Clock>);
        let mut cfg = ReplicaConfig::new(self.id, &self.ids, log);
        cfg.leader = LeaderConfig {
            min_insync_replicas: self.opts.min_insync_replicas,
            replica_lag_time_max_ms: self.opts.lag_ms,
        };
        cfg.fetch_max_bytes = 4 << 10;
        cfg.hw_checkpoint_interval_ms = 500;
        cfg.verify_after_unclean_open = true;
        cfg
    }

    /// Starts a life (the first, or a restart); returns what the log recovered.
    pub fn start(&mut self) -> Result<LogRecovery, String> {
        let incarnation = self.lives;
        self.lives += 1;
        let replica = Replica::open(dir(), self.config(), incarnation)
            .map_err(|e| format!("r{} failed to open its log: {e}", self.id.0))?;
        let recovery = replica.log_recovery();
        // The controller knows the first life; later ones register.
        let registering = (incarnation > 0).then_some(recovery);
        self.node = Some(ReplicaNode::new(replica, TIMING, registering));
        self.down_until = None;
        Ok(recovery)
    }

    fn stop(&mut self, mode: CrashMode, seed: u64, until: u64) {
        if let Some(n) = self.node.take() {
            n.into_replica().simulate_crash();
        }
        self.storage.crash_with_seed(mode, seed);
        self.down_until = Some(until);
    }

    pub fn crash(&mut self, _power: bool, until: u64) {
        self.stop(CrashMode::Process, 0, until);
    }

    pub fn power_loss(&mut self, seed: u64, until: u64) {
        self.stop(CrashMode::PowerLoss, seed, until);
        self.lost_data = true;
    }

    pub fn wipe(&mut self, seed: u64, until: u64) {
        self.stop(CrashMode::Process, 0, until);
        self.storage = SimStorage::new(seed);
        self.lost_data = true;
    }

    /// Crashes the node and flips one byte of a sealed (synced) segment, if it has one.
    pub fn corrupt_synced(&mut self, pick: u64, until: u64) -> bool {
        let mut logs: Vec<String> = self
            .storage
            .durable_file_names(&dir())
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .collect();
        logs.sort();
        if logs.len() < 2 {
            return false;
        }
        let name = &logs[(pick % (logs.len() as u64 - 1)) as usize];
        let path = dir().join(name);
        self.stop(CrashMode::Process, 0, until);
        let Some(bytes) = self.storage.read_durable(&path) else {
            return false;
        };
        if bytes.is_empty() {
            return false;
        }
        let pos = (pick >> 20) % bytes.len() as u64;
        let flipped = bytes[pos as usize] ^ 0x5A;
        let _ = self.storage.corrupt(&path, pos, &[flipped]);
        self.lost_data = true;
        true
    }

    fn paused(&self, now: u64) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// Periodic work: heartbeat, fetch, replica tick.
    pub fn tick(&mut self, now: u64) -> Result<Vec<(Endpoint, Msg)>, String> {
        if self.paused(now) {
            return Ok(Vec::new());
        }
        let id = self.id;
        let Some(n) = self.node.as_mut() else {
            return Ok(Vec::new());
        };
        // Back in a full-size ISR: it has everything again.
        if self.lost_data
            && !n.is_registering()
            && n.replica()
                .known_record()
                .is_some_and(|k| k.isr.contains(&id) && k.isr.len() > 1)
        {
            self.lost_data = false;
        }
        let mut out = Vec::new();
        n.tick(now, &mut out);
        let (sends, _traces) = route(id, out)?;
        Ok(sends)
    }

    /// A message arrives. Returns messages to send and trace lines.
    pub fn receive(&mut self, from: Endpoint, msg: Msg, now: u64) -> Result<Received, String> {
        // A paused process reads nothing: the message waits in its socket buffer... here it is
        // lost, which a pause that outlives TCP timeouts amounts to.
        if self.paused(now) {
            return Ok((Vec::new(), Vec::new()));
        }
        let Some(n) = self.node.as_mut() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut out = Vec::new();
        n.step(Some(from), msg, now, &mut out);
        route(self.id, out)
    }
}

/// Addresses a node's outputs on the simulated network; a failure the simulation never
/// expects (storage trouble, a refused controller record) ends the run.
fn route(id: ReplicaId, out: Vec<Output<Endpoint>>) -> Result<Received, String> {
    let mut sends = Vec::new();
    let mut events = Vec::new();
    for o in out {
        match o {
            Output::ToReplica(to, msg) => sends.push((Endpoint::Replica(to), msg)),
            Output::ToController(msg) => sends.push((Endpoint::Controller, msg)),
            Output::Reply(to, msg) => sends.push((to, msg)),
            Output::Event(NodeEvent::Leads(epoch)) => events.push(format!("leads epoch {epoch}")),
            Output::Event(NodeEvent::Truncated { from, to }) => {
                events.push(format!("truncated {} -> {}", from.0, to.0));
            }
            Output::Event(NodeEvent::Failed(e)) => return Err(format!("r{}: {e}", id.0)),
        }
    }
    Ok((sends, events))
}
