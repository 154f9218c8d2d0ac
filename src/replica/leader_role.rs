//! The leader half of a [`Replica`]: becoming leader, produce with acks, serving follower
//! fetches, ISR proposals, and completing acks=all requests as the high-water mark moves.

use super::{Acks, Completion, Produced, Replica, Role};
use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::log::{AppendInfo, Log};
use crate::producer::Marker;
use crate::replication::{
    AcksAllStatus, AlterIsrRequest, BecomeLeader, FetchDecision, FetchRequest, FetchResponse,
    FetchedBatch, LeaderAndIsr, LeaderState, ReplicationError,
};
use crate::types::Offset;

/// An acks=all request appended and waiting for the high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingAck {
    /// The caller's token for the request, returned in its [`Completion`](super::Completion).
    pub token: u64,
    /// Where the batch was appended.
    pub info: AppendInfo,
    /// When a `Replica::tick` at or after this time (ms, the clock the driver passes to `tick`) finds
    /// the high watermark still below the batch, the request fails with `Error::Timeout`.
    pub deadline_ms: u64,
}

/// State of the leader role. Invariant: every `pending` entry's last offset is at or above
/// the high-water mark (the others were completed).
#[derive(Debug)]
pub(super) struct LeaderRole {
    pub(super) state: LeaderState,
    pub(super) pending: Vec<PendingAck>,
    /// The ISR proposal in flight and when it was last sent: resent until the controller
    /// answers, since a lost request or answer would otherwise block every later ISR change.
    pub(super) proposal: Option<(AlterIsrRequest, u64)>,
}

/// How long an ISR proposal may go unanswered before it is sent again.
pub const ISR_PROPOSAL_RETRY_MS: u64 = 200;

impl Replica {
    /// Leads per `rec`: a new leader epoch, or an ISR change within the current one.
    pub(super) fn lead(&mut self, rec: &LeaderAndIsr, now_ms: u64) -> Result<()> {
        if let Role::Leader(l) = &mut self.role {
            if l.state.leader_epoch() == rec.leader_epoch {
                match l.state.on_isr_committed(rec.partition_epoch, &rec.isr) {
                    Ok(_) | Err(ReplicationError::StalePartitionEpoch { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.complete_acks();
                return Ok(());
            }
        }
        let hw = self.high_watermark();
        let cache = self.epoch_cache().clone();
        self.fail_pending();
        let state = LeaderState::new(
            BecomeLeader {
                leader: self.cfg.id,
                replicas: self.cfg.replicas.clone(),
                isr: rec.isr.clone(),
                leader_epoch: rec.leader_epoch,
                partition_epoch: rec.partition_epoch,
                log_start: self.log.log_start_offset(),
                log_end: self.log.log_end_offset(),
                high_watermark: hw,
                epoch_cache: cache,
            },
            self.cfg.leader,
            now_ms,
        )?
        .with_gauges(self.gauges.clone());
        // Write-ahead: the new epoch is durable in the cache before any batch carries it.
        self.persist_cache(state.epoch_cache().clone())?;
        self.log.set_leader_epoch(rec.leader_epoch);
        self.role = Role::Leader(Box::new(LeaderRole {
            state,
            pending: Vec::new(),
            proposal: None,
        }));
        Ok(())
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            leader: self.leader().map(|r| r.0),
            leader_epoch: self.leader_epoch(),
        }
    }

    /// A client batch. acks=all is refused up front with `NotEnoughReplicas` while the ISR is
    /// below `min.insync.replicas` (nothing is appended); otherwise it is appended and either
    /// already committed (`Done`) or `Waiting` for the high-water mark until `deadline_ms`,
    /// answered later through [`Replica::take_completions`] under `token`. A retry of a batch
    /// already in the log gets its original offsets and waits for them the same way.
    pub fn produce(
        &mut self,
        batch: &RecordBatch,
        acks: Acks,
        token: u64,
        deadline_ms: u64,
    ) -> Result<Produced> {
        self.produce_with(acks, token, deadline_ms, |log| log.append(batch))
    }

    /// A COMMIT or ABORT marker (the transaction coordinator's write, `Log::append_marker`),
    /// acknowledged like a client batch: with acks=all once the high-water mark passes it, so
    /// a marker acknowledged to the coordinator is on every ISR member.
    pub fn produce_marker(
        &mut self,
        marker: &Marker,
        acks: Acks,
        token: u64,
        deadline_ms: u64,
    ) -> Result<Produced> {
        self.produce_with(acks, token, deadline_ms, |log| log.append_marker(marker))
    }

    fn produce_with(
        &mut self,
        acks: Acks,
        token: u64,
        deadline_ms: u64,
        append: impl FnOnce(&Log) -> Result<AppendInfo>,
    ) -> Result<Produced> {
        let not_leader = self.not_leader();
        let Role::Leader(l) = &mut self.role else {
            return Err(not_leader);
        };
        if acks == Acks::All {
            l.state.check_enough_replicas()?;
        }
        let info = append(&self.log)?;
        l.state.on_append(self.log.log_end_offset());
        if acks != Acks::All {
            self.complete_acks();
            return Ok(Produced::Done(info));
        }
        let answer = match l.state.acks_all_check(info.last_offset) {
            AcksAllStatus::Complete => Produced::Done(info),
            AcksAllStatus::NotEnoughReplicasAfterAppend {
                maximal_isr,
                min_isr,
            } => {
                return Err(Error::NotEnoughReplicasAfterAppend {
                    maximal_isr,
                    min_isr,
                })
            }
            AcksAllStatus::Waiting => {
                l.pending.push(PendingAck {
                    token,
                    info,
                    deadline_ms,
                });
                Produced::Waiting(info)
            }
        };
        self.complete_acks();
        Ok(answer)
    }

    /// Completes every waiting acks=all request the high-water mark has passed.
    pub(super) fn complete_acks(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let hw = l.state.high_watermark();
        let mut i = 0;
        while i < l.pending.len() {
            let p = l.pending[i];
            if p.info.last_offset < hw {
                l.pending.swap_remove(i);
                let result = match l.state.acks_all_check(p.info.last_offset) {
                    AcksAllStatus::NotEnoughReplicasAfterAppend {
                        maximal_isr,
                        min_isr,
                    } => Err(Error::NotEnoughReplicasAfterAppend {
                        maximal_isr,
                        min_isr,
                    }),
                    _ => Ok(p.info),
                };
                self.completions.push(Completion {
                    token: p.token,
                    result,
                });
            } else {
                i += 1;
            }
        }
    }

    /// Serves a follower's fetch: fencing, divergence, the follower's progress (which may move
    /// the high-water mark and complete acks=all requests), and the batches from its log end.
    pub fn handle_fetch(&mut self, req: &FetchRequest, now_ms: u64) -> Result<FetchResponse> {
        let not_leader = self.not_leader();
        let Role::Leader(l) = &mut self.role else {
            return Err(not_leader);
        };
        let outcome = l.state.on_fetch_request(req, now_ms);
        let batches = match outcome {
            Ok(FetchDecision::Read { from, log_end, .. }) => {
                read_batches(&self.log, from, log_end, req.max_bytes as usize)?
            }
            _ => Vec::new(),
        };
        let resp = l.state.fetch_response(outcome, batches)?;
        self.complete_acks();
        Ok(resp)
    }

    /// Leader part of [`Replica::tick`]: timeouts and ISR proposals.
    pub(super) fn leader_tick(&mut self, now_ms: u64) -> Option<AlterIsrRequest> {
        let Role::Leader(l) = &mut self.role else {
            return None;
        };
        let mut i = 0;
        while i < l.pending.len() {
            if l.pending[i].deadline_ms <= now_ms {
                let p = l.pending.swap_remove(i);
                self.completions.push(Completion {
                    token: p.token,
                    result: Err(Error::Timeout),
                });
            } else {
                i += 1;
            }
        }
        if l.state.pending().is_none() {
            l.proposal = None;
        }
        if let Some((req, sent)) = &mut l.proposal {
            if now_ms >= *sent + ISR_PROPOSAL_RETRY_MS {
                *sent = now_ms;
                return Some(req.clone());
            }
            return None;
        }
        let req = l
            .state
            .maybe_shrink_isr(now_ms)
            .or_else(|| l.state.maybe_expand_isr(now_ms))?;
        l.proposal = Some((req.clone(), now_ms));
        Some(req)
    }

    /// The controller's answer to an ISR proposal from [`Replica::tick`].
    pub fn on_alter_isr_result(
        &mut self,
        result: std::result::Result<LeaderAndIsr, ReplicationError>,
        now_ms: u64,
    ) -> Result<()> {
        match result {
            Ok(rec) => self.on_leader_and_isr(&rec, now_ms),
            Err(_) => {
                if let Role::Leader(l) = &mut self.role {
                    l.state.on_isr_rejected();
                    l.proposal = None;
                }
                Ok(())
            }
        }
    }
}

/// Whole batches of `log` from `from` up to `log_end`, at most `max_bytes` (but at least one
/// batch), copied for shipping.
fn read_batches(
    log: &crate::log::Log,
    from: Offset,
    log_end: Offset,
    max_bytes: usize,
) -> Result<Vec<FetchedBatch>> {
    let mut out = Vec::new();
    let mut next = from;
    let mut bytes = 0usize;
    while next < log_end && (out.is_empty() || bytes < max_bytes) {
        let fetch = log.read_bounded(next, max_bytes.saturating_sub(bytes).max(1), log_end)?;
        let before = next;
        // The follower verifies each batch's checksum before appending it.
        for view in fetch.batches_unverified() {
            let view = view?;
            if view.last_offset() < next.0 {
                continue;
            }
            if !out.is_empty() && bytes + view.len() > max_bytes {
                return Ok(out);
            }
            bytes += view.len();
            next = Offset(view.last_offset() + 1);
            out.push(FetchedBatch {
                base_offset: Offset(view.base_offset()),
                last_offset: Offset(view.last_offset()),
                leader_epoch: view.header().leader_epoch,
                bytes: view.as_bytes().to_vec(),
            });
        }
        if next == before {
            // Nothing readable at `next` below the log end: a damaged batch header.
            return Err(super::state_files::no_progress(log, next));
        }
    }
    Ok(out)
}
