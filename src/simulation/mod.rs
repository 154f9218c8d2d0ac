//! Deterministic simulation of one replicated partition: every replica, the controller, the
//! network and the producers in one thread, driven by one seed.
//!
//! Each replica has its own [`SimStorage`](crate::io::sim::SimStorage) (so one can lose power alone), all share one
//! [`ManualClock`], logs run without their background thread, and the network is a seeded
//! queue that drops, delays, duplicates and reorders messages and can isolate a replica. Faults
//! (process crashes, power loss, pauses — a "zombie" leader —, partitions, a wiped disk,
//! corruption of synced data) are drawn from the seed. After the faulty phase the simulation
//! heals everything and runs until every producer's batches are acknowledged and the replicas
//! agree, then checks the invariants of `docs/replication.md` ([`checker`]). A failure carries
//! its seed; `run(&SimOptions { seed, .. })` replays it exactly.

pub mod checker;
mod client;
pub mod exactly_once;
mod network;
mod node;

use std::sync::Arc;

use crate::clock::ManualClock;
use crate::config::SyncMode;
use crate::replication::{Controller, InProcessController, ReplicaId};

use crate::replica::Msg;
use checker::Checker;
use client::SimClient;
use network::{Endpoint, Network};
use node::Node;

/// The splitmix64 generator every random choice of a run comes from.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0xA076_1D64_78BD_642F)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)`; 0 when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Which faults a run may inject (probabilities per mille, per message or per 10 ms tick).
#[derive(Debug, Clone)]
pub struct Faults {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub max_delay_ms: u64,
    pub process_crash_per_mille: u64,
    pub power_loss_per_mille: u64,
    pub pause_per_mille: u64,
    pub partition_per_mille: u64,
    pub wipe_per_mille: u64,
    pub corrupt_per_mille: u64,
}

impl Faults {
    /// Every kind of fault, at rates that make a few of each per run.
    pub fn all() -> Faults {
        Faults {
            drop_per_mille: 20,
            duplicate_per_mille: 20,
            max_delay_ms: 30,
            process_crash_per_mille: 3,
            power_loss_per_mille: 2,
            pause_per_mille: 2,
            partition_per_mille: 2,
            wipe_per_mille: 1,
            corrupt_per_mille: 1,
        }
    }

    pub fn none() -> Faults {
        Faults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            max_delay_ms: 5,
            process_crash_per_mille: 0,
            power_loss_per_mille: 0,
            pause_per_mille: 0,
            partition_per_mille: 0,
            wipe_per_mille: 0,
            corrupt_per_mille: 0,
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub replicas: u32,
    pub min_insync_replicas: usize,
    pub producers: usize,
    pub batches_per_producer: u32,
    /// Length of the faulty phase (simulated ms).
    pub fault_ms: u64,
    /// Longest the healed phase may take before the run counts as stuck.
    pub heal_ms: u64,
    pub sync: SyncMode,
    pub faults: Faults,
    /// `replica.lag.time.max.ms` and the controller's session timeout.
    pub lag_ms: u64,
    pub session_ms: u64,
    /// How many of the producers are transactional, and their transactions' length in batches.
    pub transactional_producers: usize,
    pub batches_per_txn: u32,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            replicas: 3,
            min_insync_replicas: 2,
            producers: 2,
            batches_per_producer: 30,
            fault_ms: 6_000,
            heal_ms: 60_000,
            sync: SyncMode::Os,
            faults: Faults::all(),
            lag_ms: 400,
            session_ms: 300,
            transactional_producers: 0,
            batches_per_txn: 3,
        }
    }
}

/// What a run did (for the report of a sweep).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub process_crashes: u64,
    pub power_losses: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub wipes: u64,
    pub corruptions: u64,
    pub leader_elections: u64,
    pub truncations: u64,
    pub acked_batches: u64,
    pub retries: u64,
    pub duplicates_answered: u64,
    pub txns_committed: u64,
    pub txns_aborted: u64,
    pub read_committed_checked: u64,
    pub end_ms: u64,
}

impl SimStats {
    pub fn add(&mut self, o: &SimStats) {
        self.messages += o.messages;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.process_crashes += o.process_crashes;
        self.power_losses += o.power_losses;
        self.pauses += o.pauses;
        self.partitions += o.partitions;
        self.wipes += o.wipes;
        self.corruptions += o.corruptions;
        self.leader_elections += o.leader_elections;
        self.truncations += o.truncations;
        self.acked_batches += o.acked_batches;
        self.retries += o.retries;
        self.duplicates_answered += o.duplicates_answered;
        self.txns_committed += o.txns_committed;
        self.txns_aborted += o.txns_aborted;
        self.read_committed_checked += o.read_committed_checked;
        self.end_ms = self.end_ms.max(o.end_ms);
    }
}

/// A failed run: the seed replays it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub at_ms: u64,
    pub message: String,
    /// The last events before the failure.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at {} ms: {}",
            self.seed, self.at_ms, self.message
        )?;
        writeln!(
            f,
            "replay: ONCELOG_SIM_SEED={} (SimOptions::new(seed))",
            self.seed
        )?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

const TICK_MS: u64 = 10;
const TRACE_LINES: usize = 120;

/// The whole simulated world.
struct World {
    opts: SimOptions,
    rng: SimRng,
    now: u64,
    clock: Arc<ManualClock>,
    nodes: Vec<Node>,
    controller: InProcessController,
    /// Last heartbeat time per replica (controller's view of sessions).
    heartbeats: Vec<u64>,
    net: Network,
    clients: Vec<SimClient>,
    checker: Checker,
    stats: SimStats,
    trace: std::collections::VecDeque<String>,
    healing: bool,
    /// The partition epoch last traced.
    last_pe: i32,
}

/// Runs one simulation.
pub fn run(opts: &SimOptions) -> Result<SimStats, SimFailure> {
    let mut w = World::new(opts.clone());
    let result = w.run_all();
    match result {
        Ok(()) => Ok(w.stats),
        Err(message) => Err(SimFailure {
            seed: opts.seed,
            at_ms: w.now,
            message,
            trace: w.trace.iter().cloned().collect(),
        }),
    }
}

impl World {
    fn new(opts: SimOptions) -> World {
        let mut rng = SimRng::new(opts.seed);
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let ids: Vec<ReplicaId> = (1..=opts.replicas).map(ReplicaId).collect();
        let nodes = ids
            .iter()
            .map(|id| Node::new(*id, &ids, rng.next_u64(), &opts, &clock))
            .collect();
        let clients = (0..opts.producers)
            .map(|i| {
                let (pid, batches) = (1000 + i as i64, opts.batches_per_producer);
                if i < opts.transactional_producers {
                    SimClient::transactional(i, pid, batches, opts.batches_per_txn)
                } else {
                    SimClient::new(i, pid, batches)
                }
            })
            .collect();
        let net = Network::new(opts.faults.clone());
        World {
            heartbeats: vec![0; opts.replicas as usize],
            controller: InProcessController::new(&ids),
            checker: Checker::default(),
            opts,
            rng,
            now: 0,
            clock,
            nodes,
            net,
            clients,
            stats: SimStats::default(),
            trace: std::collections::VecDeque::new(),
            healing: false,
            last_pe: -1,
        }
    }

    fn log(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>6} {line}", self.now));
    }

    fn run_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.nodes[i].start()?;
        }
        self.broadcast_record();
        let deadline = self.opts.fault_ms + self.opts.heal_ms;
        let mut next_tick = 0;
        loop {
            // Deliver every message due before the next tick, in order.
            while let Some((at, env)) = self.net.pop_due(next_tick) {
                self.now = self.now.max(at);
                self.clock.set(1_700_000_000_000 + self.now as i64);
                self.deliver(env)?;
                self.check_step()?;
            }
            self.now = next_tick;
            self.clock.set(1_700_000_000_000 + self.now as i64);
            if !self.healing && self.now >= self.opts.fault_ms {
                self.heal()?;
            }
            self.tick()?;
            self.check_step()?;
            if self.healing && self.done() {
                break;
            }
            if self.now >= deadline {
                return Err(format!(
                    "stuck: not every batch acknowledged or replicas disagree after healing \
                     ({} ms); controller {:?}; nodes {}",
                    self.opts.heal_ms,
                    self.controller.leader_and_isr(),
                    self.describe_nodes()
                ));
            }
            next_tick += TICK_MS;
        }
        self.stats.end_ms = self.now;
        self.stats.dropped = self.net.dropped;
        self.stats.duplicated = self.net.duplicated;
        self.final_check()
    }

    fn describe_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.describe())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Everything acknowledged, and every replica at the leader's end with the HW there too.
    fn done(&self) -> bool {
        if !self.clients.iter().all(SimClient::finished) {
            return false;
        }
        let Some(leader) = self.controller.leader_and_isr().leader else {
            return false;
        };
        let Some(l) = self.nodes[(leader.0 - 1) as usize].replica() else {
            return false;
        };
        let end = l.log_end_offset();
        l.high_watermark() == end
            && self.nodes.iter().all(|n| {
                n.replica()
                    .is_some_and(|r| r.log_end_offset() == end && r.high_watermark() == end)
            })
    }

    fn heal(&mut self) -> Result<(), String> {
        self.healing = true;
        self.log("heal: no more faults".into());
        self.net.heal();
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = None;
            if self.nodes[i].is_down() {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    fn broadcast_record(&mut self) {
        let rec = self.controller.leader_and_isr();
        for n in 0..self.nodes.len() {
            let id = self.nodes[n].id;
            let msg = Msg::Record {
                rec: rec.clone(),
                incarnation: self.controller.incarnation(id),
            };
            self.net.send(
                &mut self.rng,
                self.now,
                Endpoint::Controller,
                Endpoint::Replica(id),
                msg,
            );
        }
    }

    fn tick(&mut self) -> Result<(), String> {
        self.controller_tick();
        if !self.healing {
            self.inject_faults()?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].down_until.is_some_and(|t| t <= self.now) {
                self.restart(i)?;
            }
            if self.nodes[i].paused_until.is_some_and(|t| t <= self.now) {
                self.nodes[i].paused_until = None;
                self.log(format!("r{} resumes", self.nodes[i].id.0));
            }
            let out = self.nodes[i].tick(self.now)?;
            for (to, msg) in out {
                let from = Endpoint::Replica(self.nodes[i].id);
                self.stats.messages += 1;
                self.net.send(&mut self.rng, self.now, from, to, msg);
            }
        }
        let leader = self.controller.leader_and_isr().leader;
        for c in 0..self.clients.len() {
            let out = self.clients[c].tick(self.now, leader, &mut self.checker);
            self.stats.retries += self.clients[c].take_retries();
            for (to, msg) in out {
                self.stats.messages += 1;
                self.net
                    .send(&mut self.rng, self.now, Endpoint::Client(c), to, msg);
            }
        }
        // A consumer reads what the current leader says is committed.
        if let Some(l) = leader {
            if let Some(r) = self.nodes[(l.0 - 1) as usize].replica() {
                self.checker.observe_committed(r)?;
                self.checker.observe_read_committed(r)?;
            }
        }
        Ok(())
    }

    fn controller_tick(&mut self) {
        let mut changed = false;
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            if self.controller.is_alive(id)
                && self.now.saturating_sub(self.heartbeats[i]) > self.opts.session_ms
            {
                self.controller.replica_failed(id);
                self.log(format!("controller: session of r{} expired", id.0));
                changed = true;
            }
        }
        if changed || self.now.is_multiple_of(100) {
            self.after_controller_change();
        }
    }

    fn after_controller_change(&mut self) {
        self.controller.check_invariants();
        let rec = self.controller.leader_and_isr();
        if self.checker.note_record(&rec) {
            self.stats.leader_elections += 1;
            self.log(format!("controller: {rec:?}"));
        } else if self.last_pe != rec.partition_epoch {
            // ISR changes too: a failure's trace shows how the ISR got where it is.
            self.log(format!("controller: {rec:?}"));
        }
        self.last_pe = rec.partition_epoch;
        self.broadcast_record();
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        let f = self.opts.faults.clone();
        let n = self.nodes.len();
        let impaired = self
            .nodes
            .iter()
            .filter(|n| n.is_impaired(self.now))
            .count();
        let lost_data = self.nodes.iter().filter(|n| n.may_have_lost_data()).count();
        let i = self.rng.below(n as u64) as usize;
        if self.nodes[i].is_impaired(self.now) || impaired + 1 >= n {
            return Ok(());
        }
        // Faults that may cost a replica its unsynced data hit one replica at a time, and only
        // while the others are whole: the guarantees in docs/replication.md stop there.
        // (With a smaller ISR, power loss of its last member is the "last replica standing"
        // case: the partition correctly stays offline; `tests/replication_sim.rs` has it as a
        // scenario of its own.)
        let full_isr = self.controller.leader_and_isr().isr.len() == n;
        let data_fault_ok = lost_data == 0 && impaired == 0 && full_isr;
        let id = self.nodes[i].id.0;
        if self.rng.chance(f.process_crash_per_mille) {
            self.stats.process_crashes += 1;
            self.log(format!("r{id} process crash"));
            let until = self.now + self.rng.range(20, 800);
            self.nodes[i].crash(false, until);
        } else if data_fault_ok && self.rng.chance(f.power_loss_per_mille) {
            self.stats.power_losses += 1;
            self.log(format!("r{id} power loss"));
            let until = self.now + self.rng.range(20, 800);
            let seed = self.rng.next_u64();
            self.nodes[i].power_loss(seed, until);
        } else if data_fault_ok && self.rng.chance(f.wipe_per_mille) {
            self.stats.wipes += 1;
            self.log(format!("r{id} crashes and comes back with an empty disk"));
            let until = self.now + self.rng.range(20, 800);
            self.nodes[i].wipe(self.rng.next_u64(), until);
        } else if data_fault_ok && self.rng.chance(f.corrupt_per_mille) {
            let until = self.now + self.rng.range(20, 800);
            let pick = self.rng.next_u64();
            if self.nodes[i].corrupt_synced(pick, until) {
                self.stats.corruptions += 1;
                self.log(format!("r{id} crashes; a synced segment byte is flipped"));
            }
        } else if self.rng.chance(f.pause_per_mille) {
            self.stats.pauses += 1;
            let until = self.now + self.rng.range(100, 2_000);
            self.log(format!("r{id} paused until {until}"));
            self.nodes[i].paused_until = Some(until);
        } else if self.rng.chance(f.partition_per_mille) {
            self.stats.partitions += 1;
            let until = self.now + self.rng.range(100, 2_000);
            self.log(format!("r{id} partitioned away until {until}"));
            self.net.isolate(self.nodes[i].id, until);
            self.nodes[i].partitioned_until = Some(until);
        }
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let recovery = self.nodes[i].start()?;
        let id = self.nodes[i].id;
        let note = self.nodes[i]
            .replica()
            .and_then(|r| r.quarantined().map(str::to_owned))
            .unwrap_or_default();
        self.log(format!("r{} restarts: {recovery:?} {note}", id.0));
        Ok(())
    }

    fn deliver(&mut self, env: network::Envelope) -> Result<(), String> {
        match env.to {
            Endpoint::Controller => self.controller_receive(env.from, env.msg),
            Endpoint::Client(c) => {
                let outcome = self.clients[c].receive(env.msg, &mut self.checker)?;
                self.stats.acked_batches += outcome.acked;
                self.stats.duplicates_answered += outcome.duplicates;
                self.stats.txns_committed += outcome.committed;
                self.stats.txns_aborted += outcome.aborted;
                Ok(())
            }
            Endpoint::Replica(id) => {
                let i = (id.0 - 1) as usize;
                let now = self.now;
                let (out, events) = self.nodes[i].receive(env.from, env.msg, now)?;
                for e in events {
                    if e.starts_with("truncate") {
                        self.stats.truncations += 1;
                    }
                    self.log(format!("r{}: {e}", id.0));
                }
                for (to, msg) in out {
                    self.stats.messages += 1;
                    self.net
                        .send(&mut self.rng, now, Endpoint::Replica(id), to, msg);
                }
                Ok(())
            }
        }
    }

    fn controller_receive(&mut self, from: Endpoint, msg: Msg) -> Result<(), String> {
        let Endpoint::Replica(id) = from else {
            return Ok(());
        };
        let i = (id.0 - 1) as usize;
        match msg {
            Msg::Heartbeat {
                incarnation,
                registering,
                ..
            } => {
                let known = self.controller.incarnation(id).unwrap_or(0);
                if incarnation < known {
                    return Ok(());
                }
                if let Some(recovery) = registering.filter(|_| incarnation > known) {
                    self.controller.replica_restarted(id, incarnation, recovery);
                    self.log(format!("controller: r{} registered ({recovery:?})", id.0));
                    self.after_controller_change();
                } else if !self.controller.is_alive(id) {
                    // It was declared failed (pause, partition) but never restarted.
                    self.controller.replica_restarted(
                        id,
                        incarnation,
                        crate::replication::LogRecovery::Intact,
                    );
                    self.log(format!("controller: r{} is back", id.0));
                    self.after_controller_change();
                }
                self.heartbeats[i] = self.now;
                let msg = Msg::Record {
                    rec: self.controller.leader_and_isr(),
                    incarnation: self.controller.incarnation(id),
                };
                self.net
                    .send(&mut self.rng, self.now, Endpoint::Controller, from, msg);
            }
            Msg::AlterIsr(req) => {
                let result = self.controller.alter_isr(&req);
                if result.is_ok() {
                    self.after_controller_change();
                }
                self.net.send(
                    &mut self.rng,
                    self.now,
                    Endpoint::Controller,
                    from,
                    Msg::AlterIsrResult(result),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Invariants after every event.
    fn check_step(&mut self) -> Result<(), String> {
        for n in &self.nodes {
            if let Some(r) = n.replica() {
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    r.check_invariants();
                }));
                if let Err(p) = caught {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    return Err(format!("r{} invariant: {msg}", n.id.0));
                }
                self.checker.observe_leader_hw(r)?;
            }
        }
        Ok(())
    }

    fn final_check(&mut self) -> Result<(), String> {
        let rec = self.controller.leader_and_isr();
        let leader = rec.leader.ok_or("no leader at the end")?;
        let replicas: Vec<&crate::replica::Replica> =
            self.nodes.iter().filter_map(Node::replica).collect();
        let leader = replicas
            .iter()
            .find(|r| r.id() == leader)
            .ok_or("leader not running")?;
        self.stats.read_committed_checked = self.checker.rc_records_checked;
        self.checker.final_check(leader, &replicas, &self.clients)
    }
}
