//! One replica of a partition: its own [`Log`] (its own segment files) driven by the pure
//! replication state machines of [`crate::replication`].
//!
//! A [`Replica`] is the I/O half of replication: it carries out the decisions of
//! [`LeaderState`] and [`FollowerState`] on the log, persists the leader-epoch cache and the
//! high-water mark, and keeps the acks=all produce requests waiting for the high-water mark.
//! It does no networking and reads no clock: a driver (the deterministic simulation, the
//! thread-per-replica driver, the TCP node) moves messages and passes the time in.
//!
//! Invariants (checked by [`Replica::check_invariants`]):
//! - `log_start <= high_watermark <= log_end` of the log;
//! - the persisted leader-epoch cache covers every batch in the log: an entry is written
//!   *before* the first batch of its epoch is appended (write-ahead), and a truncation removes
//!   batches *before* their entries, so a crash at any point leaves a cache that names the epoch
//!   of every batch the log still holds (at worst it keeps an entry starting at the log end);
//! - a leader accepts client batches only after its new leader epoch is in the persisted cache;
//! - the known controller record (`known`) only moves forward: a record with an older leader
//!   epoch, or the same leader epoch and an older partition epoch, is ignored;
//! - an acks=all request completes only once the high-water mark is past its last offset, and
//!   every pending one is failed (`Timeout`: appended, outcome unknown) when this replica stops
//!   leading; `NotLeader` is answered only to a request refused before appending.

pub mod error_reply;
mod follower_role;
mod leader_role;
mod node;
mod protocol;
mod state_files;

use std::path::{Path, PathBuf};

use crate::config::{LogConfig, SyncMode};
use crate::error::{Error, Result};
use crate::log::{AppendInfo, Fetch, Log};
use crate::observe::{log_label, ReplicationGauges};
use crate::replication::{
    FollowerState, Incarnation, LeaderAndIsr, LeaderConfig, LeaderEpochCache, LeaderState,
    LogRecovery, ReplicaId,
};
use crate::types::{LeaderEpoch, Offset};

pub use error_reply::{ErrorReply, RemoteError};
pub use leader_role::PendingAck;
pub use node::{NodeTiming, ReplicaNode};
pub use protocol::{Msg, NodeEvent, Output};

/// The leader-epoch cache file in a replica's log directory (`format::epoch_checkpoint`).
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// The high-water-mark checkpoint (OLCP kind `HighWatermark`).
pub const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
/// The boot id of the replica's previous life (OLCP kind `BootId`).
pub const BOOT_ID_FILE: &str = "replica-boot-id";

/// Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// `acks=0`: the producer does not wait for anything (the driver answers at once).
    None,
    /// `acks=1`: answered after the leader's append.
    Leader,
    /// `acks=all` (`-1`): answered when every member of the ISR holds the batch (the
    /// high-water mark passed it), refused up front below `min.insync.replicas`.
    All,
}

impl Acks {
    /// Kafka's wire value: 0, 1 or -1.
    pub fn to_wire(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// The `Acks` for Kafka's wire value (0, 1 or -1); `None` for any other.
    pub fn from_wire(v: i8) -> Option<Acks> {
        match v {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's id.
    pub id: ReplicaId,
    /// Every replica of the partition, this one included.
    pub replicas: Vec<ReplicaId>,
    /// The leader's settings (`min.insync.replicas`, ISR lag limits).
    pub leader: LeaderConfig,
    /// The settings of the replica's log.
    pub log: LogConfig,
    /// Most bytes a follower asks for per fetch (at least one batch is always sent).
    pub fetch_max_bytes: u32,
    /// How often `tick` rewrites the high-water-mark checkpoint (Kafka: 5 s).
    pub hw_checkpoint_interval_ms: u64,
    /// After an unclean shutdown, read every batch of the log and check its CRC before
    /// serving (recovery itself trusts synced segments). A damaged log is quarantined and the
    /// replica starts empty (`EmptyOrDamaged`). Costs a read of the whole log.
    pub verify_after_unclean_open: bool,
}

impl ReplicaConfig {
    /// Settings with the defaults: 1 MiB fetches, a 5 s high-watermark checkpoint, no verify after an unclean open.
    pub fn new(id: ReplicaId, replicas: &[ReplicaId], log: LogConfig) -> ReplicaConfig {
        ReplicaConfig {
            id,
            replicas: replicas.to_vec(),
            leader: LeaderConfig::default(),
            log,
            fetch_max_bytes: 1 << 20,
            hw_checkpoint_interval_ms: 5_000,
            verify_after_unclean_open: false,
        }
    }
}

/// What this replica does for the partition now.
#[derive(Debug)]
enum Role {
    Leader(Box<leader_role::LeaderRole>),
    Follower {
        leader: ReplicaId,
        state: FollowerState,
    },
    /// No leader known, or this replica was told it is not a replica of the current record.
    Offline,
}

/// How a produce request ended or where it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// Answer now (acks=0/1, or acks=all already committed).
    Done(AppendInfo),
    /// acks=all: appended, waiting for the high-water mark; the answer comes from
    /// [`Replica::take_completions`] under the request's token.
    Waiting(AppendInfo),
}

/// The answer to a waiting acks=all request.
#[derive(Debug)]
pub struct Completion {
    /// The token given with the produce request.
    pub token: u64,
    /// Where the batch landed once the high watermark passed it, or why the request failed.
    pub result: Result<AppendInfo>,
}

/// One replica of one partition. Not shared: the driver owns it (wrap it in a mutex to share).
#[derive(Debug)]
pub struct Replica {
    cfg: ReplicaConfig,
    dir: PathBuf,
    incarnation: Incarnation,
    log: Log,
    role: Role,
    /// The epoch cache while offline, and the last one persisted.
    persisted_cache: LeaderEpochCache,
    /// The high-water mark while offline; the last one checkpointed is `hw_persisted`.
    offline_hw: Offset,
    hw_persisted: Offset,
    last_hw_checkpoint_ms: u64,
    /// The newest controller record applied.
    known: Option<LeaderAndIsr>,
    recovery: LogRecovery,
    /// Why the log found at open was moved aside, if it was.
    quarantined: Option<String>,
    completions: Vec<Completion>,
    /// The HW, ISR and follower-lag gauges, labelled with the log directory's name; handed to
    /// each leader or follower state this replica runs.
    gauges: ReplicationGauges,
}

impl Replica {
    /// Opens (recovering) the replica's log in `dir` as life `incarnation`. The replica starts
    /// offline; the driver registers it with the controller (reporting [`Replica::log_recovery`])
    /// and applies the answer with [`Replica::on_leader_and_isr`].
    pub fn open(
        dir: impl AsRef<Path>,
        cfg: ReplicaConfig,
        incarnation: Incarnation,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !cfg.replicas.contains(&cfg.id) {
            return Err(Error::InvalidConfig(format!(
                "replica {} is not in its replica list {:?}",
                cfg.id, cfg.replicas
            )));
        }
        let storage = std::sync::Arc::clone(&cfg.log.storage);
        let mut previous_boot = state_files::read_boot_id(storage.as_ref(), &dir);
        let mut quarantined = None;
        let opened = Log::open(&dir, cfg.log.clone()).and_then(|log| {
            if cfg.verify_after_unclean_open && !log.recovery_report().clean_shutdown {
                if let Err(e) = state_files::verify_batches(&log) {
                    log.simulate_crash();
                    return Err(e);
                }
            }
            Ok(log)
        });
        let log = match opened {
            Ok(log) => log,
            Err(
                e @ (Error::Corrupt { .. }
                | Error::CorruptFile { .. }
                | Error::RecoveryPointLost { .. }),
            ) => {
                // Damaged synced data: keep the files for the operator, start empty, and tell
                // the controller (EmptyOrDamaged) so this replica neither leads nor counts as
                // in sync until it has fetched everything again from the leader.
                let to = state_files::quarantine(storage.as_ref(), &dir, incarnation)?;
                quarantined = Some(format!("{e}; files moved to {}", to.display()));
                previous_boot = None;
                Log::open(&dir, cfg.log.clone())?
            }
            Err(e) => return Err(e),
        };
        let report = log.recovery_report();
        let current_boot = storage.boot_id();
        let recovery = match previous_boot {
            // No previous life in this directory: a new or wiped disk.
            None => LogRecovery::EmptyOrDamaged,
            Some(_) if report.clean_shutdown || cfg.log.sync == SyncMode::EveryAppend => {
                LogRecovery::Intact
            }
            // A process crash on the same boot: the page cache kept every write.
            Some(prev) if current_boot == Some(prev) => LogRecovery::Intact,
            Some(_) => LogRecovery::MayHaveLostTail,
        };
        let cache = state_files::load_epoch_cache(&log)?;
        let hw = state_files::read_hw(storage.as_ref(), &dir)?
            .unwrap_or(Offset::ZERO)
            .clamp(log.log_start_offset(), log.log_end_offset());
        state_files::write_boot_id(storage.as_ref(), &dir, current_boot)?;
        Ok(Replica {
            cfg,
            incarnation,
            log,
            role: Role::Offline,
            persisted_cache: cache,
            offline_hw: hw,
            hw_persisted: hw,
            last_hw_checkpoint_ms: 0,
            known: None,
            recovery,
            quarantined,
            completions: Vec::new(),
            gauges: ReplicationGauges::register(&log_label(&dir)),
            dir,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.cfg.id
    }

    /// This life's incarnation: a new value at every open, so the controller can tell stale reports.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The configuration the replica was opened with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.cfg
    }

    /// The replica's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The replica's own log. Writing to it directly bypasses replication: don't.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// What opening the log found, for the controller (`Controller::replica_restarted`):
    /// `Intact` after a clean shutdown, under `SyncMode::EveryAppend`, or after a process crash
    /// on the same boot; `MayHaveLostTail` after an unclean shutdown across a reboot (power
    /// loss); `EmptyOrDamaged` for a directory without a previous life.
    pub fn log_recovery(&self) -> LogRecovery {
        self.recovery
    }

    /// Set when open found damaged synced data: the reason and where the files went.
    pub fn quarantined(&self) -> Option<&str> {
        self.quarantined.as_deref()
    }

    /// Whether this replica leads the partition now.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader this replica follows (itself when leading).
    pub fn leader(&self) -> Option<ReplicaId> {
        match &self.role {
            Role::Leader(_) => Some(self.cfg.id),
            Role::Follower { leader, .. } => Some(*leader),
            Role::Offline => None,
        }
    }

    /// The leader epoch of the newest controller record applied (`-1` before any).
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.known.as_ref().map_or(-1, |k| k.leader_epoch)
    }

    /// The newest controller record applied.
    pub fn known_record(&self) -> Option<&LeaderAndIsr> {
        self.known.as_ref()
    }

    /// Readers see only offsets below this.
    pub fn high_watermark(&self) -> Offset {
        match &self.role {
            Role::Leader(l) => l.state.high_watermark(),
            Role::Follower { state, .. } => state.high_watermark(),
            Role::Offline => self.offline_hw,
        }
    }

    /// The end offset of the replica's log (may be above the high watermark).
    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }

    /// The committed ISR as this replica knows it (the leader's view when leading).
    pub fn isr(&self) -> Vec<ReplicaId> {
        match &self.role {
            Role::Leader(l) => l.state.isr().to_vec(),
            _ => self
                .known
                .as_ref()
                .map(|k| k.isr.clone())
                .unwrap_or_default(),
        }
    }

    /// The leader's pure state, when leading (for tests and diagnostics).
    pub fn leader_state(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(l) => Some(&l.state),
            _ => None,
        }
    }

    /// The epoch cache in force (the role's, or the persisted one while offline).
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        match &self.role {
            Role::Leader(l) => l.state.epoch_cache(),
            Role::Follower { state, .. } => state.epoch_cache(),
            Role::Offline => &self.persisted_cache,
        }
    }

    /// Committed batches from `offset`: whole batches below the high-water mark (replication's
    /// "committed", whatever the transactions; see [`Replica::read_isolated`]).
    pub fn read_committed(&self, offset: Offset, max_bytes: usize) -> Result<Fetch> {
        self.log
            .read_bounded(offset, max_bytes, self.high_watermark())
    }

    /// A consumer's fetch at an isolation level: below the high-water mark, or with
    /// `ReadCommitted` below the last stable offset at it, with the aborted transactions to
    /// drop. On a follower and on a new leader the LSO comes from the same log and HW, so
    /// every replica computes the same one below the HW.
    pub fn read_isolated(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: crate::log::Isolation,
    ) -> Result<crate::log::IsolatedFetch> {
        self.log
            .read_isolated(offset, max_bytes, self.high_watermark(), isolation)
    }

    /// Applies the controller's record: become leader (new leader epoch naming this replica),
    /// follower (another leader), take an ISR change (same epoch), or go offline (no leader).
    /// Stale records are ignored.
    pub fn on_leader_and_isr(&mut self, rec: &LeaderAndIsr, now_ms: u64) -> Result<()> {
        if let Some(k) = &self.known {
            let stale = rec.leader_epoch < k.leader_epoch
                || (rec.leader_epoch == k.leader_epoch && rec.partition_epoch <= k.partition_epoch);
            if stale {
                return Ok(());
            }
        }
        let me = self.cfg.id;
        let result = match rec.leader {
            Some(l) if l == me => self.lead(rec, now_ms),
            Some(l) => {
                self.follow(l, rec.leader_epoch);
                Ok(())
            }
            None => {
                self.step_down();
                Ok(())
            }
        };
        if result.is_ok() {
            self.known = Some(rec.clone());
        }
        result
    }

    /// Stops leading or following (pending acks=all requests fail with `Timeout`).
    fn step_down(&mut self) {
        self.offline_hw = self.high_watermark();
        self.persisted_cache = self.epoch_cache().clone();
        self.fail_pending();
        self.role = Role::Offline;
    }

    fn follow(&mut self, leader: ReplicaId, leader_epoch: LeaderEpoch) {
        if let Role::Follower { leader: l, state } = &mut self.role {
            if *l == leader {
                state.on_new_leader_epoch(leader_epoch);
                return;
            }
        }
        let hw = self.high_watermark();
        let cache = self.epoch_cache().clone();
        self.fail_pending();
        let state = FollowerState::new(
            self.cfg.id,
            self.incarnation,
            leader_epoch,
            self.log.log_start_offset(),
            self.log.log_end_offset(),
            hw,
            cache,
        )
        .with_gauges(self.gauges.clone());
        self.role = Role::Follower { leader, state };
    }

    /// Answers every waiting acks=all request with `Timeout`: its batch was appended here and
    /// may survive in a later leader's log, so its outcome is unknown. (`NotLeader` is kept
    /// for requests refused before appending: a client re-sends those bytes even when the batch
    /// is not idempotent, see `producer::retry`.)
    fn fail_pending(&mut self) {
        if let Role::Leader(l) = &mut self.role {
            for p in l.pending.drain(..) {
                self.completions.push(Completion {
                    token: p.token,
                    result: Err(Error::Timeout),
                });
            }
        }
    }

    /// The answers of acks=all requests that completed, failed or timed out since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Periodic work at `now_ms`: expire acks=all requests past their deadline, propose ISR
    /// shrinks and expansions (the driver sends the proposal to the controller and reports the
    /// answer with [`Replica::on_alter_isr_result`]), and checkpoint the high-water mark.
    pub fn tick(&mut self, now_ms: u64) -> Result<Option<crate::replication::AlterIsrRequest>> {
        let proposal = self.leader_tick(now_ms);
        if now_ms.saturating_sub(self.last_hw_checkpoint_ms) >= self.cfg.hw_checkpoint_interval_ms {
            self.checkpoint_high_watermark()?;
            self.last_hw_checkpoint_ms = now_ms;
        }
        Ok(proposal)
    }

    /// Writes the high-water mark checkpoint if it moved since the last one.
    pub fn checkpoint_high_watermark(&mut self) -> Result<()> {
        let hw = self.high_watermark();
        let end = self.log.log_end_offset();
        assert!(hw <= end, "HW {hw:?} checkpointed past the log end {end:?}");
        if hw != self.hw_persisted {
            state_files::write_hw(self.cfg.log.storage.as_ref(), &self.dir, hw)?;
            self.hw_persisted = hw;
        }
        Ok(())
    }

    /// Persists `cache` as the epoch checkpoint if it differs from the last one written.
    fn persist_cache(&mut self, cache: LeaderEpochCache) -> Result<()> {
        if cache != self.persisted_cache {
            state_files::write_epoch_cache(self.cfg.log.storage.as_ref(), &self.dir, &cache)?;
            self.persisted_cache = cache;
        }
        Ok(())
    }

    /// Clean shutdown: checkpoint the high-water mark and close the log.
    pub fn close(mut self) -> Result<()> {
        self.checkpoint_high_watermark()?;
        self.fail_pending();
        self.log.clone().close()
    }

    /// Drops the replica as a crash would: no checkpoint, no clean-shutdown marker, the
    /// directory lock released (see [`Log::simulate_crash`]).
    // Test machinery, not API: hidden from the embedder's documentation.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.log.clone().simulate_crash();
    }

    /// Panics if a module invariant does not hold.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        let hw = self.high_watermark();
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        assert!(
            start <= hw && hw <= end,
            "HW {hw:?} outside [{start:?}, {end:?}]"
        );
        let cache = self.epoch_cache();
        cache.check_invariants();
        if let Some(latest) = cache.latest() {
            assert!(
                latest.start_offset <= end,
                "epoch entry {latest:?} past log end {end:?}"
            );
        }
        match &self.role {
            Role::Leader(l) => {
                l.state.check_invariants();
                assert_eq!(
                    l.state.log_end(),
                    end,
                    "leader state and log disagree on the end"
                );
                assert_eq!(
                    &self.persisted_cache,
                    l.state.epoch_cache(),
                    "the leader's epoch is not persisted"
                );
                for p in &l.pending {
                    assert!(p.info.last_offset < end, "pending ack past the log end");
                }
            }
            Role::Follower { state, .. } => {
                state.check_invariants();
                assert_eq!(
                    state.log_end(),
                    end,
                    "follower state and log disagree on the end"
                );
            }
            Role::Offline => {}
        }
    }
}
