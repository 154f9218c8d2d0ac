//! One simulated replica process: its disk (a `SimStorage` of its own), its `Replica` while
//! running, and its fetch loop, heartbeats and ISR proposals.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::network::{Endpoint, Msg, ProduceError};
use super::SimOptions;
use crate::clock::ManualClock;
use crate::config::LogConfig;
use crate::error::Error;
use crate::io::sim::{CrashMode, SimStorage};
use crate::replica::{Acks, Produced, Replica, ReplicaConfig};
use crate::replication::{LeaderConfig, LogRecovery, ReplicaId};

const FETCH_TIMEOUT_MS: u64 = 100;
const FETCH_IDLE_MS: u64 = 20;
const HEARTBEAT_MS: u64 = 50;
const PRODUCE_TIMEOUT_MS: u64 = 1_000;

/// Messages to send and trace lines, from one delivery.
pub type Received = (Vec<(Endpoint, Msg)>, Vec<String>);

#[derive(Debug)]
pub struct Node {
    pub id: ReplicaId,
    ids: Vec<ReplicaId>,
    storage: SimStorage,
    clock: Arc<ManualClock>,
    opts: SimOptions,
    replica: Option<Replica>,
    /// Lives so far; the next start uses this as its incarnation.
    lives: u64,
    pub down_until: Option<u64>,
    pub paused_until: Option<u64>,
    pub partitioned_until: Option<u64>,
    registering: Option<LogRecovery>,
    /// The node may be missing data it had (power loss, wiped or corrupted disk) until it is
    /// back in the ISR.
    lost_data: bool,
    fetch_sent_at: Option<u64>,
    next_fetch_at: u64,
    last_heartbeat: u64,
    /// Replica token -> (client, client token) of waiting acks=all requests.
    waiting: HashMap<u64, (usize, u64)>,
    next_token: u64,
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
            replica: None,
            lives: 0,
            down_until: None,
            paused_until: None,
            partitioned_until: None,
            registering: None,
            lost_data: false,
            fetch_sent_at: None,
            next_fetch_at: 0,
            last_heartbeat: 0,
            waiting: HashMap::new(),
            next_token: 0,
        }
    }

    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    pub fn is_down(&self) -> bool {
        self.replica.is_none()
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
        match &self.replica {
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
    pub fn start(&mut self, now: u64) -> Result<LogRecovery, String> {
        let incarnation = self.lives;
        self.lives += 1;
        let replica = Replica::open(dir(), self.config(), incarnation)
            .map_err(|e| format!("r{} failed to open its log: {e}", self.id.0))?;
        let recovery = replica.log_recovery();
        // The controller knows the first life; later ones register.
        self.registering = (incarnation > 0).then_some(recovery);
        self.replica = Some(replica);
        self.down_until = None;
        self.fetch_sent_at = None;
        self.next_fetch_at = now;
        self.last_heartbeat = 0;
        Ok(recovery)
    }

    fn stop(&mut self, mode: CrashMode, seed: u64, until: u64) {
        if let Some(r) = self.replica.take() {
            r.simulate_crash();
        }
        self.storage.crash_with_seed(mode, seed);
        self.down_until = Some(until);
        self.waiting.clear();
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
        let mut out = Vec::new();
        if self.paused(now) {
            return Ok(out);
        }
        let id = self.id;
        let Some(r) = self.replica.as_mut() else {
            return Ok(out);
        };
        // Back in a full-size ISR: it has everything again.
        if self.lost_data
            && self.registering.is_none()
            && r.known_record()
                .is_some_and(|k| k.isr.contains(&id) && k.isr.len() > 1)
        {
            self.lost_data = false;
        }
        if now >= self.last_heartbeat + HEARTBEAT_MS {
            self.last_heartbeat = now;
            out.push((
                Endpoint::Controller,
                Msg::Heartbeat {
                    incarnation: r.incarnation(),
                    registering: self.registering,
                },
            ));
        }
        match r.tick(now) {
            Ok(Some(proposal)) => out.push((Endpoint::Controller, Msg::AlterIsr(proposal))),
            Ok(None) => {}
            Err(e) => return Err(format!("r{} tick: {e}", id.0)),
        }
        let stale_fetch = self
            .fetch_sent_at
            .is_some_and(|t| now >= t + FETCH_TIMEOUT_MS);
        if (self.fetch_sent_at.is_none() || stale_fetch) && now >= self.next_fetch_at {
            if let Some((leader, req)) = r.fetch_request() {
                self.fetch_sent_at = Some(now);
                out.push((Endpoint::Replica(leader), Msg::Fetch(req)));
            }
        }
        self.completions(&mut out);
        Ok(out)
    }

    fn completions(&mut self, out: &mut Vec<(Endpoint, Msg)>) {
        let Some(r) = self.replica.as_mut() else {
            return;
        };
        for c in r.take_completions() {
            if let Some((client, token)) = self.waiting.remove(&c.token) {
                out.push((
                    Endpoint::Client(client),
                    Msg::ProduceResult {
                        token,
                        result: c.result.map_err(|e| produce_error(&e)),
                    },
                ));
            }
        }
    }

    /// A message arrives. Returns messages to send and trace lines.
    pub fn receive(&mut self, from: Endpoint, msg: Msg, now: u64) -> Result<Received, String> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        // A paused process reads nothing: the message waits in its socket buffer... here it is
        // lost, which a pause that outlives TCP timeouts amounts to.
        if self.paused(now) {
            return Ok((out, events));
        }
        let id = self.id;
        let Some(r) = self.replica.as_mut() else {
            return Ok((out, events));
        };
        match msg {
            Msg::Record { rec, incarnation } => {
                if incarnation != Some(r.incarnation()) {
                    return Ok((out, events));
                }
                self.registering = None;
                let was_leader = r.is_leader();
                r.on_leader_and_isr(&rec, now)
                    .map_err(|e| format!("r{} applying {rec:?}: {e}", id.0))?;
                if r.is_leader() && !was_leader {
                    events.push(format!("leads epoch {}", rec.leader_epoch));
                }
            }
            Msg::AlterIsrResult(result) => {
                r.on_alter_isr_result(result, now)
                    .map_err(|e| format!("r{} alter ISR result: {e}", id.0))?;
            }
            Msg::Fetch(req) => {
                // Fenced, unknown-epoch and stale-incarnation fetches get no answer; the
                // follower retries after its fetch timeout (and learns the new epoch from the
                // controller meanwhile).
                if let Ok(resp) = r.handle_fetch(&req, now) {
                    out.push((from, Msg::FetchResponse(resp)));
                }
            }
            Msg::FetchResponse(resp) => {
                let idle = resp.batches.is_empty();
                let end_before = r.log_end_offset();
                let diverging = resp.diverging;
                match r.handle_fetch_response(resp) {
                    Ok(()) => {}
                    // A late or duplicated response that no longer fits: fetch again.
                    Err(Error::Replication(_) | Error::UnexpectedAppendOffset { .. }) => {}
                    Err(e) => return Err(format!("r{} fetch response: {e}", id.0)),
                }
                let end_after = r.log_end_offset();
                if end_after < end_before {
                    events.push(format!(
                        "truncated {} -> {} (diverging {diverging:?})",
                        end_before.0, end_after.0
                    ));
                }
                self.fetch_sent_at = None;
                self.next_fetch_at = if idle { now + FETCH_IDLE_MS } else { now };
            }
            Msg::Produce { token, batch } => {
                let Endpoint::Client(client) = from else {
                    return Ok((out, events));
                };
                self.next_token += 1;
                let mine = self.next_token;
                let produced = match crate::producer::Marker::of(&batch.view()) {
                    Ok(Some(m)) => r.produce_marker(&m, Acks::All, mine, now + PRODUCE_TIMEOUT_MS),
                    _ => r.produce(&batch, Acks::All, mine, now + PRODUCE_TIMEOUT_MS),
                };
                match produced {
                    Ok(Produced::Done(info)) => out.push((
                        from,
                        Msg::ProduceResult {
                            token,
                            result: Ok(info),
                        },
                    )),
                    Ok(Produced::Waiting(_)) => {
                        self.waiting.insert(mine, (client, token));
                    }
                    Err(e) => out.push((
                        from,
                        Msg::ProduceResult {
                            token,
                            result: Err(produce_error(&e)),
                        },
                    )),
                }
            }
            Msg::ProduceResult { .. } | Msg::Heartbeat { .. } | Msg::AlterIsr(_) => {}
        }
        self.completions(&mut out);
        Ok((out, events))
    }
}

fn produce_error(e: &Error) -> ProduceError {
    match e {
        Error::NotLeader { .. }
        | Error::NotEnoughReplicas { .. }
        | Error::NotEnoughReplicasAfterAppend { .. }
        | Error::Timeout
        | Error::Replication(_) => ProduceError::Retriable(e.to_string()),
        // Before the first batch of a producer arrives (reordered), a later one finds it
        // unknown: the same as a gap. (Producers here never expire, so it cannot mean that the
        // log forgot it.)
        Error::OutOfOrderSequence { .. } | Error::UnknownProducerId { .. } => {
            ProduceError::OutOfOrder
        }
        Error::DuplicateSequence { .. } => ProduceError::WrittenEarlier,
        other => ProduceError::Fatal(other.to_string()),
    }
}
