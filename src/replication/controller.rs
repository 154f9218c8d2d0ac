//! The authority for a partition's leader, leader epoch and ISR.
//!
//! Invariants of [`InProcessController`] (checked by `check_invariants`):
//! - the ISR is never empty, is sorted, and is a subset of the replicas;
//! - the leader, if any, is in the ISR, is alive, and does not need to catch up;
//! - every accepted change increments the partition epoch; every leader change increments the
//!   leader epoch; neither ever decreases;
//! - an ISR change is accepted only from the current leader in the current leader epoch, based
//!   on the current partition epoch (compare-and-set), naming each added member under its
//!   current incarnation (a proposal from before a restart cannot re-add it, KAFKA-14139);
//! - a clean election picks only an ISR member that is alive and has not lost data; only
//!   `elect_leader(true)` (unclean) may pick anything else, and it reports that it did.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::LeaderEpoch;

use super::messages::{AlterIsrRequest, LeaderAndIsr};
use super::{check_leader_epoch, Incarnation, PartitionEpoch, ReplicaId, ReplicationError};

/// What a restarting replica found in its log (decided by the driver from the recovery report,
/// the clean-shutdown marker, the SyncMode and whether the machine rebooted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRecovery {
    /// Nothing it had acknowledged can be missing: a clean shutdown, a process crash without a
    /// reboot (the page cache survived), or `SyncMode::EveryAppend`.
    Intact,
    /// An unclean shutdown that may have lost the unsynced tail (power loss or OS crash under
    /// `SyncMode::Os` / `Interval`).
    MayHaveLostTail,
    /// The log directory was empty, replaced, or damaged in synced data.
    EmptyOrDamaged,
}

/// The controller's interface, as the leader and the driver see it (one partition).
pub trait Controller {
    /// The current record.
    fn leader_and_isr(&self) -> LeaderAndIsr;
    /// Compare-and-set of the ISR; returns the new record.
    fn alter_isr(&mut self, req: &AlterIsrRequest) -> Result<LeaderAndIsr, ReplicationError>;
    /// A replica stopped (crash, shutdown, lost session).
    fn replica_failed(&mut self, replica: ReplicaId) -> LeaderAndIsr;
    /// A replica came back as `incarnation` with a log in state `recovery`.
    fn replica_restarted(
        &mut self,
        replica: ReplicaId,
        incarnation: Incarnation,
        recovery: LogRecovery,
    ) -> LeaderAndIsr;
    /// Elects a new leader (new leader epoch). Clean: only an alive ISR member that has not lost
    /// data. `allow_unclean`: otherwise any alive replica, with the ISR reset to it.
    fn elect_leader(&mut self, allow_unclean: bool) -> Result<Election, ReplicationError>;
}

/// The result of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The partition's record after the election (new leader epoch and partition epoch).
    pub state: LeaderAndIsr,
    /// The leader was not a clean candidate: committed data may be lost (report it).
    pub unclean: bool,
}

/// Everything an [`InProcessController`] holds, field by field (what a store outside the
/// process keeps; the TCP driver's `net::controller_record` gives its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSnapshot {
    /// The leader, `None` while the partition is offline.
    pub leader: Option<ReplicaId>,
    /// The current leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// The current partition epoch.
    pub partition_epoch: PartitionEpoch,
    /// One entry per replica, sorted by id.
    pub replicas: Vec<ReplicaSnapshot>,
}

/// One replica in a [`ControllerSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    /// The replica's id.
    pub replica: ReplicaId,
    /// The incarnation it registered with most recently.
    pub incarnation: Incarnation,
    /// Whether it is in the committed ISR.
    pub in_isr: bool,
    /// Whether the controller considers it alive.
    pub alive: bool,
    /// It reported an empty, damaged or tail-lost log and must catch up before joining the ISR.
    pub needs_catch_up: bool,
}

/// A pure, in-memory controller for one partition. See the module invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProcessController {
    /// Sorted; the order of preference for elections.
    replicas: Vec<ReplicaId>,
    /// Invariant: non-empty, subset of `replicas`.
    isr: BTreeSet<ReplicaId>,
    /// Invariant: `None` or an alive ISR member without `needs_catch_up`.
    leader: Option<ReplicaId>,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    alive: BTreeSet<ReplicaId>,
    incarnations: BTreeMap<ReplicaId, Incarnation>,
    /// Replicas that restarted having lost data: not electable, not re-addable except by a
    /// proposal naming their new incarnation (sent only once the leader saw them caught up).
    needs_catch_up: BTreeSet<ReplicaId>,
}

impl InProcessController {
    /// A partition whose replicas are all alive (incarnation 0) and in the ISR, led by the first.
    pub fn new(replicas: &[ReplicaId]) -> Self {
        let mut replicas = replicas.to_vec();
        replicas.sort();
        replicas.dedup();
        assert!(!replicas.is_empty(), "a partition needs a replica");
        InProcessController {
            isr: replicas.iter().copied().collect(),
            leader: replicas.first().copied(),
            leader_epoch: 0,
            partition_epoch: 0,
            alive: replicas.iter().copied().collect(),
            incarnations: replicas.iter().map(|r| (*r, 0)).collect(),
            needs_catch_up: BTreeSet::new(),
            replicas,
        }
    }

    /// Every field, for storing the controller outside this process
    /// (`net::controller_record`, feature `net`).
    pub fn snapshot(&self) -> ControllerSnapshot {
        ControllerSnapshot {
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaSnapshot {
                    replica: *r,
                    incarnation: self.incarnations.get(r).copied().unwrap_or(0),
                    in_isr: self.isr.contains(r),
                    alive: self.alive.contains(r),
                    needs_catch_up: self.needs_catch_up.contains(r),
                })
                .collect(),
        }
    }

    /// The controller a [`snapshot`](Self::snapshot) describes, or why it breaks a module
    /// invariant (a stored record is untrusted input: never a panic).
    pub fn from_snapshot(s: &ControllerSnapshot) -> Result<Self, &'static str> {
        let mut replicas: Vec<ReplicaId> = s.replicas.iter().map(|r| r.replica).collect();
        replicas.sort();
        replicas.dedup();
        if replicas.is_empty() {
            return Err("no replica");
        }
        if replicas.len() != s.replicas.len() {
            return Err("a replica is listed twice");
        }
        let pick = |f: fn(&ReplicaSnapshot) -> bool| -> BTreeSet<ReplicaId> {
            s.replicas
                .iter()
                .filter(|r| f(r))
                .map(|r| r.replica)
                .collect()
        };
        let c = InProcessController {
            isr: pick(|r| r.in_isr),
            alive: pick(|r| r.alive),
            needs_catch_up: pick(|r| r.needs_catch_up),
            incarnations: s
                .replicas
                .iter()
                .map(|r| (r.replica, r.incarnation))
                .collect(),
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            replicas,
        };
        if c.isr.is_empty() {
            return Err("the ISR is empty");
        }
        if c.leader_epoch < 0 || c.partition_epoch < 0 {
            return Err("a negative epoch");
        }
        if let Some(l) = c.leader {
            if !c.isr.contains(&l) || !c.alive.contains(&l) || c.needs_catch_up.contains(&l) {
                return Err("the leader is not an alive, caught-up ISR member");
            }
        }
        Ok(c)
    }

    /// The replicas, sorted.
    pub fn replicas(&self) -> &[ReplicaId] {
        &self.replicas
    }

    /// Whether `replica` must catch up to the leader's log end before it may join the ISR.
    pub fn needs_catch_up(&self, replica: ReplicaId) -> bool {
        self.needs_catch_up.contains(&replica)
    }

    /// Whether the controller considers `replica` alive.
    pub fn is_alive(&self, replica: ReplicaId) -> bool {
        self.alive.contains(&replica)
    }

    /// The incarnation `replica` registered with, `None` if it never did.
    pub fn incarnation(&self, replica: ReplicaId) -> Option<Incarnation> {
        self.incarnations.get(&replica).copied()
    }

    fn clean_candidates(&self) -> Vec<ReplicaId> {
        self.replicas
            .iter()
            .filter(|r| {
                self.isr.contains(r) && self.alive.contains(r) && !self.needs_catch_up.contains(r)
            })
            .copied()
            .collect()
    }

    /// Removes `replica` from the ISR unless it is the last member (the ISR then records who
    /// had the committed data). Returns whether it changed.
    fn remove_from_isr(&mut self, replica: ReplicaId) -> bool {
        if self.isr.len() > 1 && self.isr.remove(&replica) {
            self.partition_epoch += 1;
            return true;
        }
        false
    }

    fn lose_leader_and_reelect(&mut self, replica: ReplicaId) {
        if self.leader == Some(replica) {
            self.leader = None;
            self.partition_epoch += 1;
        }
        if self.leader.is_none() {
            // A clean election if one is possible; otherwise the partition stays offline.
            let _ = self.elect_leader(false);
        }
    }

    /// Moves leadership to `preferred` (Kafka's preferred-replica election, what an operator's
    /// "move the leader" asks for). Clean: `preferred` must be an alive ISR member that has not
    /// lost data; if it already leads, nothing changes (no new epochs). Unclean: only with
    /// `allow_unclean` **and** no clean candidate at all (so it never throws away an ISR that
    /// could lead), an alive `preferred` is elected as `elect_leader(true)` would elect anyone:
    /// ISR := {it}, `Election.unclean = true`.
    pub fn elect_preferred(
        &mut self,
        preferred: ReplicaId,
        allow_unclean: bool,
    ) -> Result<Election, ReplicationError> {
        if !self.replicas.contains(&preferred) {
            return Err(ReplicationError::UnknownReplica(preferred));
        }
        let clean = self.clean_candidates();
        if self.leader == Some(preferred) {
            return Ok(Election {
                state: self.leader_and_isr(),
                unclean: false,
            });
        }
        let unclean = if clean.contains(&preferred) {
            false
        } else if allow_unclean && clean.is_empty() && self.alive.contains(&preferred) {
            true
        } else {
            return Err(ReplicationError::IneligibleReplica(preferred));
        };
        if unclean {
            self.isr = BTreeSet::from([preferred]);
            self.needs_catch_up.remove(&preferred);
        }
        self.leader = Some(preferred);
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        tracing::info!(
            leader = preferred.0,
            leader_epoch = self.leader_epoch,
            unclean,
            "leadership moved to the preferred replica"
        );
        Ok(Election {
            state: self.leader_and_isr(),
            unclean,
        })
    }

    /// Panics if a module invariant does not hold.
    pub fn check_invariants(&self) {
        assert!(!self.isr.is_empty(), "{self:?}");
        assert!(
            self.isr.iter().all(|r| self.replicas.contains(r)),
            "{self:?}"
        );
        if let Some(l) = self.leader {
            assert!(self.isr.contains(&l), "leader outside ISR: {self:?}");
            assert!(self.alive.contains(&l), "dead leader: {self:?}");
            assert!(
                !self.needs_catch_up.contains(&l),
                "leader lost data: {self:?}"
            );
        }
        assert!(self.leader_epoch >= 0 && self.partition_epoch >= 0);
    }
}

impl Controller for InProcessController {
    fn leader_and_isr(&self) -> LeaderAndIsr {
        LeaderAndIsr {
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: self.isr.iter().copied().collect(),
        }
    }

    fn alter_isr(&mut self, req: &AlterIsrRequest) -> Result<LeaderAndIsr, ReplicationError> {
        if self.leader != Some(req.leader) {
            return Err(ReplicationError::NotLeader {
                replica: req.leader,
            });
        }
        check_leader_epoch(req.leader_epoch, self.leader_epoch)?;
        if req.partition_epoch != self.partition_epoch {
            return Err(ReplicationError::StalePartitionEpoch {
                proposed: req.partition_epoch,
                current: self.partition_epoch,
            });
        }
        let new: BTreeSet<ReplicaId> = req.new_isr.iter().map(|m| m.replica).collect();
        if new.len() != req.new_isr.len() {
            return Err(ReplicationError::InvalidIsr {
                reason: "a member is named twice",
            });
        }
        if !new.contains(&req.leader) {
            return Err(ReplicationError::InvalidIsr {
                reason: "the ISR does not contain the leader",
            });
        }
        for m in &req.new_isr {
            if !self.replicas.contains(&m.replica) {
                return Err(ReplicationError::UnknownReplica(m.replica));
            }
            let current = self.incarnations.get(&m.replica).copied().unwrap_or(0);
            let added = !self.isr.contains(&m.replica);
            match m.incarnation {
                Some(proposed) if proposed != current => {
                    return Err(ReplicationError::StaleIncarnation {
                        replica: m.replica,
                        proposed,
                        current,
                    })
                }
                // A new member must be vouched for under its current incarnation.
                None if added => return Err(ReplicationError::IneligibleReplica(m.replica)),
                _ => {}
            }
            if added && !self.alive.contains(&m.replica) {
                return Err(ReplicationError::IneligibleReplica(m.replica));
            }
        }
        // The leader saw each added member caught up in its current life: it has the data again.
        for r in new.difference(&self.isr) {
            self.needs_catch_up.remove(r);
        }
        self.isr = new;
        self.partition_epoch += 1;
        Ok(self.leader_and_isr())
    }

    fn replica_failed(&mut self, replica: ReplicaId) -> LeaderAndIsr {
        if self.alive.remove(&replica) {
            self.remove_from_isr(replica);
            self.lose_leader_and_reelect(replica);
        }
        self.leader_and_isr()
    }

    fn replica_restarted(
        &mut self,
        replica: ReplicaId,
        incarnation: Incarnation,
        mut recovery: LogRecovery,
    ) -> LeaderAndIsr {
        if !self.replicas.contains(&replica) {
            return self.leader_and_isr();
        }
        // The same life registering again (a retry whose answer was lost or that crossed the
        // first answer, or a return after its session expired): a log loses data only when its
        // life ends, so whatever it says, it is intact; and if it is alive, nothing changed.
        if self.incarnations.get(&replica) == Some(&incarnation) {
            if self.alive.contains(&replica) {
                return self.leader_and_isr();
            }
            recovery = LogRecovery::Intact;
        }
        // A restart without a failure report first: the old life ended now.
        if self.alive.contains(&replica) && self.leader == Some(replica) {
            self.leader = None;
            self.partition_epoch += 1;
        }
        self.alive.insert(replica);
        self.incarnations.insert(replica, incarnation);
        match recovery {
            LogRecovery::Intact => {}
            LogRecovery::MayHaveLostTail | LogRecovery::EmptyOrDamaged => {
                // It may miss committed records: out of the ISR (unless it is the last member,
                // "last replica standing", which then stays in but cannot lead).
                self.needs_catch_up.insert(replica);
                self.remove_from_isr(replica);
            }
        }
        if self.leader.is_none() {
            let _ = self.elect_leader(false);
        }
        self.leader_and_isr()
    }

    fn elect_leader(&mut self, allow_unclean: bool) -> Result<Election, ReplicationError> {
        let clean = self.clean_candidates();
        // Preference order: the replica list.
        let (leader, unclean) = if let Some(r) = clean.first() {
            (*r, false)
        } else if allow_unclean {
            // ISR members that lost their tail still hold more than out-of-sync replicas.
            let pick = self
                .replicas
                .iter()
                .filter(|r| self.alive.contains(r))
                .max_by_key(|r| (self.isr.contains(r), std::cmp::Reverse(**r)))
                .copied()
                .ok_or(ReplicationError::NoEligibleLeader)?;
            (pick, true)
        } else {
            return Err(ReplicationError::NoEligibleLeader);
        };
        if unclean {
            self.isr = BTreeSet::from([leader]);
            self.needs_catch_up.remove(&leader);
        }
        self.leader = Some(leader);
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        if unclean {
            tracing::warn!(
                leader = leader.0,
                leader_epoch = self.leader_epoch,
                isr = ?self.isr,
                "unclean leader election"
            );
        } else {
            tracing::info!(
                leader = leader.0,
                leader_epoch = self.leader_epoch,
                isr = ?self.isr,
                "leader elected"
            );
        }
        Ok(Election {
            state: self.leader_and_isr(),
            unclean,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::messages::IsrMember;

    fn ids(v: &[u32]) -> Vec<ReplicaId> {
        v.iter().map(|&i| ReplicaId(i)).collect()
    }

    fn proposal(c: &InProcessController, isr: &[(u32, Option<u64>)]) -> AlterIsrRequest {
        let s = c.leader_and_isr();
        AlterIsrRequest {
            leader: s.leader.unwrap(),
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            new_isr: isr
                .iter()
                .map(|&(r, incarnation)| IsrMember {
                    replica: ReplicaId(r),
                    incarnation,
                })
                .collect(),
        }
    }

    #[test]
    fn isr_changes_are_compare_and_set() {
        let mut c = InProcessController::new(&ids(&[1, 2, 3]));
        let shrink = proposal(&c, &[(1, None), (2, None)]);
        let stale = proposal(&c, &[(1, None), (3, None)]);
        assert_eq!(c.alter_isr(&shrink).unwrap().isr, ids(&[1, 2]));
        assert!(matches!(
            c.alter_isr(&stale),
            Err(ReplicationError::StalePartitionEpoch { .. })
        ));
        c.check_invariants();
    }

    #[test]
    fn empty_disk_cannot_rejoin_through_a_stale_proposal() {
        // KAFKA-14139: the leader built "add r3" from r3's old life; r3 then restarts empty.
        let mut c = InProcessController::new(&ids(&[1, 2, 3]));
        c.alter_isr(&proposal(&c, &[(1, None), (2, None)])).unwrap();
        let add_old_life = proposal(&c, &[(1, None), (2, None), (3, Some(0))]);
        c.replica_failed(ReplicaId(3));
        c.replica_restarted(ReplicaId(3), 1, LogRecovery::EmptyOrDamaged);
        let mut stale = add_old_life.clone();
        stale.partition_epoch = c.leader_and_isr().partition_epoch;
        assert!(matches!(
            c.alter_isr(&stale),
            Err(ReplicationError::StaleIncarnation { .. })
        ));
        assert!(c.needs_catch_up(ReplicaId(3)));
        let ok = proposal(&c, &[(1, None), (2, None), (3, Some(1))]);
        c.alter_isr(&ok).unwrap();
        assert!(!c.needs_catch_up(ReplicaId(3)));
        c.check_invariants();
    }

    #[test]
    fn the_same_life_registering_again_changes_nothing_and_loses_nothing() {
        // A node's registration retried, or queued twice, as it crossed the first answer: the
        // leader registering again "empty" (its birth check now sees epoch 1) must not take
        // the partition offline.
        let mut c = InProcessController::new(&ids(&[1, 2, 3]));
        let first = c.replica_restarted(ReplicaId(1), 42, LogRecovery::Intact);
        assert_eq!(first.leader, Some(ReplicaId(1)));
        let again = c.replica_restarted(ReplicaId(1), 42, LogRecovery::EmptyOrDamaged);
        assert_eq!(
            again, first,
            "an alive life re-registering changed the record"
        );
        assert!(!c.needs_catch_up(ReplicaId(1)));
        // Back after its session expired, in the same life: intact whatever it says.
        c.replica_failed(ReplicaId(2));
        c.replica_restarted(ReplicaId(2), 7, LogRecovery::Intact);
        c.replica_failed(ReplicaId(2));
        c.replica_restarted(ReplicaId(2), 7, LogRecovery::EmptyOrDamaged);
        assert!(!c.needs_catch_up(ReplicaId(2)));
        // A new life is believed.
        c.replica_restarted(ReplicaId(2), 8, LogRecovery::EmptyOrDamaged);
        assert!(c.needs_catch_up(ReplicaId(2)));
        c.check_invariants();
    }

    #[test]
    fn preferred_election_moves_leadership_only_to_a_clean_candidate() {
        let mut c = InProcessController::new(&ids(&[1, 2, 3]));
        let before = c.leader_and_isr();
        let e = c.elect_preferred(ReplicaId(2), false).unwrap();
        assert!(!e.unclean);
        assert_eq!(e.state.leader, Some(ReplicaId(2)));
        assert_eq!(e.state.leader_epoch, before.leader_epoch + 1);
        assert_eq!(e.state.partition_epoch, before.partition_epoch + 1);
        assert_eq!(e.state.isr, ids(&[1, 2, 3]));
        c.check_invariants();

        // Already the leader: nothing changes, no new epoch.
        let again = c.elect_preferred(ReplicaId(2), false).unwrap();
        assert_eq!(again.state, e.state);

        // Not a replica, dead, out of the ISR, or lost data: refused, nothing changes.
        assert_eq!(
            c.elect_preferred(ReplicaId(9), false),
            Err(ReplicationError::UnknownReplica(ReplicaId(9)))
        );
        c.replica_failed(ReplicaId(3));
        assert_eq!(
            c.elect_preferred(ReplicaId(3), true),
            Err(ReplicationError::IneligibleReplica(ReplicaId(3)))
        );
        c.replica_restarted(ReplicaId(3), 1, LogRecovery::EmptyOrDamaged);
        assert!(!c.leader_and_isr().isr.contains(&ReplicaId(3)));
        // A clean candidate exists (r1, r2): an unclean move to r3 is refused too.
        assert_eq!(
            c.elect_preferred(ReplicaId(3), true),
            Err(ReplicationError::IneligibleReplica(ReplicaId(3)))
        );
        c.replica_restarted(ReplicaId(1), 1, LogRecovery::MayHaveLostTail);
        assert_eq!(
            c.elect_preferred(ReplicaId(1), false),
            Err(ReplicationError::IneligibleReplica(ReplicaId(1)))
        );
        assert_eq!(c.leader_and_isr().leader, Some(ReplicaId(2)));
        c.check_invariants();
    }

    #[test]
    fn preferred_unclean_election_only_when_no_clean_candidate() {
        let mut c = InProcessController::new(&ids(&[1, 2]));
        c.alter_isr(&proposal(&c, &[(1, None)])).unwrap();
        c.replica_failed(ReplicaId(1));
        assert_eq!(c.leader_and_isr().leader, None);
        assert_eq!(
            c.elect_preferred(ReplicaId(2), false),
            Err(ReplicationError::IneligibleReplica(ReplicaId(2)))
        );
        let e = c.elect_preferred(ReplicaId(2), true).unwrap();
        assert!(e.unclean);
        assert_eq!(e.state.leader, Some(ReplicaId(2)));
        assert_eq!(e.state.isr, ids(&[2]));
        c.check_invariants();
    }

    #[test]
    fn last_replica_standing_stays_offline_unless_unclean() {
        let mut c = InProcessController::new(&ids(&[1, 2]));
        c.alter_isr(&proposal(&c, &[(1, None)])).unwrap();
        c.replica_failed(ReplicaId(1));
        assert_eq!(c.leader_and_isr().leader, None, "r2 is not in the ISR");
        c.replica_restarted(ReplicaId(1), 1, LogRecovery::MayHaveLostTail);
        let s = c.leader_and_isr();
        assert_eq!(s.leader, None);
        assert_eq!(s.isr, ids(&[1]));
        assert_eq!(
            c.elect_leader(false),
            Err(ReplicationError::NoEligibleLeader)
        );
        let e = c.elect_leader(true).unwrap();
        assert!(e.unclean);
        assert_eq!(e.state.leader, Some(ReplicaId(1)));
        c.check_invariants();
    }
}
