//! The follower half of a [`Replica`]: what to fetch, and carrying out the decision for a
//! fetch response (append the leader's batches verbatim, or truncate to the divergence point).

use super::{Replica, Role};
use crate::error::{Error, Result};
use crate::format::batch::RecordBatch;
use crate::replication::{FetchRequest, FetchResponse, FollowerDecision, FollowerState, ReplicaId};

impl Replica {
    /// The next fetch and the leader to send it to, when following.
    pub fn fetch_request(&self) -> Option<(ReplicaId, FetchRequest)> {
        match &self.role {
            Role::Follower { leader, state } => {
                Some((*leader, state.fetch_request(self.cfg.fetch_max_bytes)))
            }
            _ => None,
        }
    }

    /// Applies the leader's answer to [`Replica::fetch_request`]. A response for another leader
    /// epoch, or arriving when not following, changes nothing (`Ok`). Batches are appended
    /// verbatim (same offsets, epochs, bytes), which also rebuilds the producer state, so this
    /// replica deduplicates retries of batches the old leader accepted if it becomes leader.
    pub fn handle_fetch_response(&mut self, resp: FetchResponse) -> Result<()> {
        let Role::Follower { state, .. } = &mut self.role else {
            return Ok(());
        };
        if resp.leader_epoch != state.leader_epoch() {
            return Ok(());
        }
        let decision = state.on_fetch_response(resp)?;
        let result = self.carry_out(decision);
        if result.is_err() {
            self.resync_follower();
        }
        result
    }

    fn carry_out(&mut self, decision: FollowerDecision) -> Result<()> {
        match decision {
            FollowerDecision::Append { batches, .. } => {
                // Write-ahead: the epochs of the new batches are durable before the batches.
                self.persist_cache(self.epoch_cache().clone())?;
                for b in batches {
                    // Checksum verified here, once; the leader sent it unverified.
                    let batch = RecordBatch::from_replicated_bytes(b.bytes)?;
                    let h = batch.header();
                    if h.base_offset != b.base_offset.0
                        || h.last_offset() != b.last_offset.0
                        || h.leader_epoch != b.leader_epoch
                    {
                        return Err(Error::UnexpectedAppendOffset {
                            expected: b.base_offset,
                            actual: crate::types::Offset(h.base_offset),
                        });
                    }
                    self.log.append_replicated(&batch)?;
                }
                Ok(())
            }
            FollowerDecision::Truncate { to, .. } | FollowerDecision::TruncateUnclean { to } => {
                // Batches go before their epoch entries (the cache must always cover the log).
                self.log.truncate_to(to)?;
                self.persist_cache(self.epoch_cache().clone())
            }
            FollowerDecision::TruncateFullyAndStartAt { start_at } => {
                Err(Error::OffsetOutOfRange {
                    requested: self.log.log_end_offset(),
                    log_start: start_at,
                    log_end: start_at,
                })
            }
            FollowerDecision::Retry => Ok(()),
        }
    }

    /// After a failed decision: rebuild the follower state from what the log really holds.
    fn resync_follower(&mut self) {
        let Role::Follower { leader, state } = &self.role else {
            return;
        };
        let (leader, epoch, hw) = (*leader, state.leader_epoch(), state.high_watermark());
        let state = FollowerState::new(
            self.cfg.id,
            self.incarnation,
            epoch,
            self.log.log_start_offset(),
            self.log.log_end_offset(),
            hw,
            self.persisted_cache.clone(),
        )
        .with_gauges(self.gauges.clone());
        self.role = Role::Follower { leader, state };
    }
}
