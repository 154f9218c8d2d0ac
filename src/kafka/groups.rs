//! The group coordinator of `oncelog serve`: Kafka's classic consumer-group protocol (join,
//! sync, heartbeat, leave) as a state machine per group, in memory. Committed offsets are not
//! kept here but in the broker's `OffsetStore` (durable); membership is soft state that
//! clients rebuild by rejoining, as after a Kafka coordinator failover.
//!
//! A rebalance: the first JoinGroup after a change moves the group to `Preparing`; every
//! JoinGroup then waits until all current members have rejoined or the rebalance timeout
//! passes (members that did not rejoin are dropped), then the generation is bumped, a leader and
//! a protocol are chosen and every waiting JoinGroup is answered (only the leader gets the
//! member list). The leader's SyncGroup carries everyone's assignment; the others' SyncGroup
//! wait for it. Members learn of a rebalance from Heartbeat's REBALANCE_IN_PROGRESS. A member
//! silent for its session timeout is dropped, which starts a rebalance.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::{Condvar, Mutex};

#[derive(Debug)]
struct Member {
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// Rejoined during the rebalance under way.
    joined: bool,
    assignment: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    Preparing {
        deadline: Instant,
    },
    /// Joined; waiting for the leader's SyncGroup.
    Completing,
    Stable,
}

#[derive(Debug)]
struct Group {
    generation: i32,
    phase: Phase,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
}

impl Group {
    fn new() -> Group {
        Group {
            generation: 0,
            phase: Phase::Empty,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
        }
    }

    /// Starts a rebalance (if none is under way): every member must rejoin.
    fn prepare(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Preparing { .. }) {
            return;
        }
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        for m in self.members.values_mut() {
            m.joined = false;
        }
        self.phase = Phase::Preparing {
            deadline: now + timeout,
        };
    }

    /// Drops members silent past their session timeout (not those blocked in a JoinGroup:
    /// they are refreshed while they wait).
    fn expire(&mut self, now: Instant) {
        let before = self.members.len();
        self.members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) <= m.session_timeout);
        if self.members.len() != before {
            self.phase = match self.phase {
                Phase::Preparing { .. } => self.phase,
                _ => Phase::Stable,
            };
            self.prepare(now);
        }
    }

    /// Ends the join phase when every member rejoined or the deadline passed.
    fn maybe_complete(&mut self, now: Instant) {
        let Phase::Preparing { deadline } = self.phase else {
            return;
        };
        if !(self.members.values().all(|m| m.joined) || now >= deadline) {
            return;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        // The leader's first protocol that every member supports.
        let leader_protocols = self
            .members
            .get(&self.leader)
            .map(|m| {
                m.protocols
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        self.protocol = leader_protocols
            .into_iter()
            .find(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == p))
            })
            .unwrap_or_default();
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
        }
        self.phase = Phase::Completing;
    }
}

/// What JoinGroup answers.
#[derive(Debug, Default)]
pub struct Joined {
    /// Kafka error code (0: none).
    pub error: i16,
    /// The group generation the member joined.
    pub generation: i32,
    /// The group's protocol type (e.g. `consumer`).
    pub protocol_type: String,
    /// The protocol chosen for the generation.
    pub protocol: String,
    /// The member id of the generation's leader.
    pub leader: String,
    /// This member's id (assigned on its first join).
    pub member_id: String,
    /// (member id, its metadata for the chosen protocol): the leader's answer only.
    pub members: Vec<(String, Bytes)>,
}

/// What a JoinGroup asks.
#[derive(Debug)]
pub struct JoinRequest {
    /// The group to join.
    pub group: String,
    /// The member's id; empty on a first join.
    pub member_id: String,
    /// The protocol type (e.g. `consumer`); every member must agree.
    pub protocol_type: String,
    /// The protocols the member supports, with its metadata for each, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// A member not heard from within this is removed.
    pub session_timeout: Duration,
    /// How long the coordinator waits for every member to rejoin during a rebalance.
    pub rebalance_timeout: Duration,
}

/// Every group of the server.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    changed: Condvar,
    next_member: Mutex<u64>,
}

/// How often a waiting request looks at the clock (session expiry, deadlines, shutdown).
const POLL: Duration = Duration::from_millis(100);

const UNKNOWN_MEMBER: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const REBALANCING: i16 = 27;

impl Groups {
    /// Periodic work: session expiry and join deadlines of every group.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            g.expire(now);
            g.maybe_complete(now);
        }
        self.changed.notify_all();
    }

    /// JoinGroup: waits until the group's join phase completes (or `stop` returns true) and
    /// answers this member's part.
    pub fn join(&self, req: JoinRequest, stop: &dyn Fn() -> bool) -> Joined {
        let mut groups = self.groups.lock();
        let now = Instant::now();
        let member_id = if req.member_id.is_empty() {
            let mut n = self.next_member.lock();
            *n += 1;
            format!("{}-member-{n}", req.group)
        } else {
            req.member_id.clone()
        };
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        g.expire(now);
        if !req.member_id.is_empty() && !g.members.contains_key(&member_id) {
            return Joined {
                error: UNKNOWN_MEMBER,
                ..Joined::default()
            };
        }
        if g.members.is_empty() {
            g.protocol_type = req.protocol_type.clone();
        } else if g.protocol_type != req.protocol_type {
            return Joined {
                error: ResponseError::InconsistentGroupProtocol.code(),
                ..Joined::default()
            };
        }
        g.prepare(now);
        g.members.insert(
            member_id.clone(),
            Member {
                protocols: req.protocols,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                last_seen: now,
                joined: true,
                assignment: Bytes::new(),
            },
        );
        if matches!(g.phase, Phase::Empty) {
            g.phase = Phase::Preparing {
                deadline: now + req.rebalance_timeout,
            };
        }
        let generation = g.generation;
        self.changed.notify_all();
        loop {
            let now = Instant::now();
            let Some(g) = groups.get_mut(&req.group) else {
                return Joined::default();
            };
            if let Some(me) = g.members.get_mut(&member_id) {
                me.last_seen = now;
            }
            g.expire(now);
            g.maybe_complete(now);
            if !g.members.contains_key(&member_id) {
                return Joined {
                    error: UNKNOWN_MEMBER,
                    ..Joined::default()
                };
            }
            if g.generation != generation && !matches!(g.phase, Phase::Preparing { .. }) {
                let members = if g.leader == member_id {
                    g.members
                        .iter()
                        .map(|(id, m)| {
                            let meta = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == g.protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            (id.clone(), meta)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                self.changed.notify_all();
                return Joined {
                    error: 0,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    leader: g.leader.clone(),
                    member_id,
                    members,
                };
            }
            if stop() {
                return Joined {
                    error: ResponseError::CoordinatorNotAvailable.code(),
                    ..Joined::default()
                };
            }
            self.changed.notify_all();
            self.changed.wait_for(&mut groups, POLL);
        }
    }

    /// SyncGroup: the member's assignment for `generation` (error code, protocol, bytes).
    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        stop: &dyn Fn() -> bool,
    ) -> (i16, String, String, Bytes) {
        let mut groups = self.groups.lock();
        let fail = |code| (code, String::new(), String::new(), Bytes::new());
        {
            let Some(g) = groups.get_mut(group) else {
                return fail(UNKNOWN_MEMBER);
            };
            if !g.members.contains_key(member_id) {
                return fail(UNKNOWN_MEMBER);
            }
            if g.generation != generation {
                return fail(ILLEGAL_GENERATION);
            }
            if g.leader == member_id && g.phase == Phase::Completing {
                for (id, a) in assignments {
                    if let Some(m) = g.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                g.phase = Phase::Stable;
                self.changed.notify_all();
            }
        }
        loop {
            let now = Instant::now();
            let Some(g) = groups.get_mut(group) else {
                return fail(UNKNOWN_MEMBER);
            };
            if let Some(me) = g.members.get_mut(member_id) {
                me.last_seen = now;
            }
            g.expire(now);
            let Some(me) = g.members.get(member_id) else {
                return fail(UNKNOWN_MEMBER);
            };
            if g.generation != generation || matches!(g.phase, Phase::Preparing { .. }) {
                return fail(REBALANCING);
            }
            if g.phase == Phase::Stable {
                return (
                    0,
                    g.protocol_type.clone(),
                    g.protocol.clone(),
                    me.assignment.clone(),
                );
            }
            if stop() {
                return fail(ResponseError::CoordinatorNotAvailable.code());
            }
            self.changed.wait_for(&mut groups, POLL);
        }
    }

    /// Heartbeat: keeps the member alive; answers a Kafka error code (0, or e.g.
    /// REBALANCE_IN_PROGRESS to make it rejoin).
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return UNKNOWN_MEMBER;
        };
        g.expire(now);
        let phase = g.phase;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return UNKNOWN_MEMBER;
        };
        m.last_seen = now;
        match phase {
            Phase::Preparing { .. } => REBALANCING,
            _ if current != generation => ILLEGAL_GENERATION,
            _ => 0,
        }
    }

    /// Removes members; the others rebalance. The error code per member.
    pub fn leave(&self, group: &str, member_ids: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![UNKNOWN_MEMBER; member_ids.len()];
        };
        let codes = member_ids
            .iter()
            .map(|id| {
                if g.members.remove(id).is_some() {
                    0
                } else {
                    UNKNOWN_MEMBER
                }
            })
            .collect();
        if !matches!(g.phase, Phase::Preparing { .. }) {
            g.phase = Phase::Stable;
        }
        g.prepare(now);
        self.changed.notify_all();
        codes
    }

    /// Whether an offset commit by (`generation`, `member_id`) is allowed: 0, or the code.
    /// Generation -1 is a commit from outside the group protocol (a consumer that assigns
    /// partitions itself) and is always allowed.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        if generation < 0 {
            return 0;
        }
        let groups = self.groups.lock();
        let Some(g) = groups.get(group) else {
            return UNKNOWN_MEMBER;
        };
        if !g.members.contains_key(member_id) {
            return UNKNOWN_MEMBER;
        }
        if g.generation != generation {
            return ILLEGAL_GENERATION;
        }
        // As in Kafka: a member may still commit what it consumed while the group prepares a
        // rebalance (it commits before giving its partitions up), not between the join and
        // the new assignment.
        if g.phase == Phase::Completing {
            return REBALANCING;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(member: &str) -> JoinRequest {
        JoinRequest {
            group: "g".into(),
            member_id: member.into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn two_members_join_sync_and_a_leave_rebalances_the_other() {
        let groups = Arc::new(Groups::default());
        let never = || false;
        let a = groups.join(req(""), &never);
        assert_eq!((a.error, a.generation), (0, 1));
        assert_eq!(a.leader, a.member_id);
        assert_eq!(a.members.len(), 1);
        let a_id = a.member_id.clone();
        let (code, _, proto, bytes) = groups.sync(
            "g",
            1,
            &a_id,
            vec![(a_id.clone(), Bytes::from_static(b"all"))],
            &never,
        );
        assert_eq!(
            (code, proto.as_str(), &bytes[..]),
            (0, "range", &b"all"[..])
        );
        assert_eq!(groups.heartbeat("g", 1, &a_id), 0);

        // A second member joins: it waits until the first rejoins (told by its heartbeat).
        let g2 = Arc::clone(&groups);
        let b = std::thread::spawn(move || g2.join(req(""), &|| false));
        while groups.heartbeat("g", 1, &a_id) != REBALANCING {
            std::thread::yield_now();
        }
        let a2 = groups.join(req(&a_id), &never);
        let b = b.join().unwrap();
        assert_eq!(
            (a2.error, b.error, a2.generation, b.generation),
            (0, 0, 2, 2)
        );
        assert_eq!(a2.leader, a_id, "the leader stays the leader");
        assert_eq!((a2.members.len(), b.members.len()), (2, 0));
        let b_id = b.member_id.clone();
        let g2 = Arc::clone(&groups);
        let b_sync = {
            let b_id = b_id.clone();
            std::thread::spawn(move || g2.sync("g", 2, &b_id, vec![], &|| false))
        };
        let plan = vec![
            (a_id.clone(), Bytes::from_static(b"p0")),
            (b_id.clone(), Bytes::from_static(b"p1")),
        ];
        assert_eq!(
            groups.sync("g", 2, &a_id, plan, &never).3,
            Bytes::from_static(b"p0")
        );
        assert_eq!(b_sync.join().unwrap().3, Bytes::from_static(b"p1"));
        assert_eq!(groups.check_commit("g", 2, &b_id), 0);
        assert_eq!(groups.check_commit("g", 1, &b_id), ILLEGAL_GENERATION);
        assert_eq!(groups.check_commit("g", 2, "nobody"), UNKNOWN_MEMBER);

        // b leaves: a is told to rebalance and rejoins alone at generation 3.
        assert_eq!(groups.leave("g", std::slice::from_ref(&b_id)), vec![0]);
        assert_eq!(groups.heartbeat("g", 2, &a_id), REBALANCING);
        let a3 = groups.join(req(&a_id), &never);
        assert_eq!((a3.error, a3.generation, a3.members.len()), (0, 3, 1));
        assert_eq!(groups.heartbeat("g", 3, &b_id), UNKNOWN_MEMBER);
    }

    #[test]
    fn a_silent_member_is_dropped_after_its_session_timeout() {
        let groups = Groups::default();
        let mut r = req("");
        r.session_timeout = Duration::from_millis(1);
        let a = groups.join(r, &|| false);
        std::thread::sleep(Duration::from_millis(20));
        groups.tick();
        assert_eq!(
            groups.heartbeat("g", a.generation, &a.member_id),
            UNKNOWN_MEMBER
        );
    }
}
