//! Who may send what, when security is on (`docs/security.md`, "Authorization").
//!
//! A server running TLS knows its peer by the names of the certificate the peer presented
//! (verified against the cluster CA): a [`Peer`]. Before a request reaches the handler, the
//! [`Authorizer`] decides:
//!
//! | request | who may send it |
//! |---|---|
//! | `Fetch` | replica N, for `replica = N` only (a follower fetches as itself) |
//! | `Register`, `Heartbeat`, `WatchPartition` | replica N, for `replica = N` only |
//! | `AlterIsr` | replica N, for `leader = N` only |
//! | `ReplicaFailed` | replica N for itself (controlled shutdown), or an `admin` principal |
//! | `Produce`, `InitProducerId` | a principal granted `produce` |
//! | `Read` | a principal granted `read` |
//! | `ElectLeader` | a principal granted `admin` |
//! | `Metadata` | any member, or a principal granted anything |
//!
//! A refused request is answered `RemoteError::Unauthorized` (the connection stays open), never
//! handled. A peer without a certificate is refused everything. Answers sent as requests go to
//! the handler, which refuses them.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeMap;
use std::fmt;

use super::cluster_file::ClusterFile;
use super::security::{Member, Operation};
use super::wire::Message;
use crate::replication::ReplicaId;

/// The other end of a connection, as its verified certificate names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The DNS subject alternative names of its certificate; empty when it presented none.
    pub names: Vec<String>,
    /// The cluster member those names make it, if any.
    pub member: Option<Member>,
}

impl Peer {
    /// A peer that presented no certificate.
    pub fn anonymous() -> Peer {
        Peer::default()
    }

    /// The peer whose certificate carries `names`; it is a member if one of them is the name
    /// ([`Member::name`]) of the controller or of one of `replicas`.
    pub fn from_names(names: Vec<String>, replicas: &[ReplicaId]) -> Peer {
        let member = names
            .iter()
            .filter_map(|n| Member::from_name(n))
            .find(|m| match m {
                Member::Controller => true,
                Member::Replica(r) => replicas.contains(r),
            });
        Peer { names, member }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.member, self.names.first()) {
            (Some(m), _) => write!(f, "member {m}"),
            (None, Some(n)) => write!(f, "client '{n}'"),
            (None, None) => f.write_str("a peer without a client certificate"),
        }
    }
}

/// The decisions of the table in the module documentation, for one cluster's ACL.
#[derive(Debug, Clone)]
pub struct Authorizer {
    acl: BTreeMap<String, Vec<Operation>>,
    replicas: Vec<ReplicaId>,
}

impl Authorizer {
    /// An authorizer applying `cluster`'s ACL.
    pub fn new(cluster: &ClusterFile) -> Authorizer {
        Authorizer {
            acl: cluster.tls.acl.clone(),
            replicas: cluster.replica_ids(),
        }
    }

    /// The peer a verified certificate with `names` makes (see [`Peer::from_names`]).
    pub fn peer(&self, names: Vec<String>) -> Peer {
        Peer::from_names(names, &self.replicas)
    }

    fn granted(&self, peer: &Peer, op: Operation) -> bool {
        peer.names
            .iter()
            .any(|n| self.acl.get(n).is_some_and(|ops| ops.contains(&op)))
    }

    fn granted_anything(&self, peer: &Peer) -> bool {
        peer.names
            .iter()
            .any(|n| self.acl.get(n).is_some_and(|ops| !ops.is_empty()))
    }

    /// `Ok` when `peer` may send `request`, else why not.
    pub fn check(&self, peer: &Peer, request: &Message) -> Result<(), String> {
        let kind = request.name();
        let as_replica = |r: ReplicaId| {
            if peer.member == Some(Member::Replica(r)) {
                Ok(())
            } else {
                Err(format!(
                    "{kind} for replica {r} may come only from replica {r} (a certificate \
                     named {}); this is {peer}",
                    Member::Replica(r).name()
                ))
            }
        };
        let needs = |op: Operation| {
            if self.granted(peer, op) {
                Ok(())
            } else {
                Err(format!(
                    "{kind} needs the '{op}' operation, which the cluster file's ACL does not \
                     grant to {peer}"
                ))
            }
        };
        match request {
            Message::Fetch(req) => as_replica(req.replica),
            Message::Register { replica, .. }
            | Message::Heartbeat { replica, .. }
            | Message::WatchPartition { replica, .. } => as_replica(*replica),
            Message::AlterIsr(req) => as_replica(req.leader),
            Message::ReplicaFailed { replica } => {
                as_replica(*replica).or_else(|e| needs(Operation::Admin).map_err(|_| e))
            }
            Message::Produce { .. } | Message::InitProducerId { .. } => needs(Operation::Produce),
            Message::Read { .. } => needs(Operation::Read),
            Message::ElectLeader { .. } => needs(Operation::Admin),
            Message::Metadata => {
                if peer.member.is_some() || self.granted_anything(peer) {
                    Ok(())
                } else {
                    Err(format!(
                        "Metadata needs a member certificate or a principal the ACL grants \
                         something; this is {peer}"
                    ))
                }
            }
            // Answers are not requests: the handler refuses them.
            Message::FetchResponse(_)
            | Message::Error(_)
            | Message::ProduceResponse(_)
            | Message::ProducerIdAssigned { .. }
            | Message::ReadResponse { .. }
            | Message::MetadataResponse(_)
            | Message::LeaderAndIsr(_)
            | Message::Elected { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{AlterIsrRequest, FetchRequest, LogRecovery};
    use crate::types::Offset;

    fn cluster() -> ClusterFile {
        ClusterFile::parse(
            "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nreplica 2 127.0.0.1:3\n\
             tls_ca ca.pem\nallow alice produce,read\nallow ops admin\nallow nobody-much read\n",
        )
        .unwrap()
    }

    fn peer(names: &[&str]) -> Peer {
        Authorizer::new(&cluster()).peer(names.iter().map(|s| s.to_string()).collect())
    }

    fn fetch(r: u32) -> Message {
        Message::Fetch(FetchRequest {
            replica: ReplicaId(r),
            incarnation: 1,
            fetch_offset: Offset(0),
            last_fetched_epoch: None,
            current_leader_epoch: 0,
            max_bytes: 1,
        })
    }

    #[test]
    fn members_are_named_by_their_certificates() {
        assert_eq!(
            peer(&["replica-2"]).member,
            Some(Member::Replica(ReplicaId(2)))
        );
        assert_eq!(peer(&["replica-3"]).member, None, "not in the cluster");
        assert_eq!(peer(&["x", "controller"]).member, Some(Member::Controller));
        assert_eq!(peer(&["alice"]).to_string(), "client 'alice'");
        assert!(Peer::anonymous().to_string().contains("without"));
    }

    #[test]
    fn the_table_holds() {
        let a = Authorizer::new(&cluster());
        let anon = Peer::anonymous();
        let r1 = peer(&["replica-1"]);
        let r2 = peer(&["replica-2"]);
        let alice = peer(&["alice"]);
        let ops = peer(&["ops"]);
        let stranger = peer(&["mallory"]);
        let controller = peer(&["controller"]);
        let register = |r| Message::Register {
            replica: ReplicaId(r),
            incarnation: u64::MAX,
            recovery: LogRecovery::Intact,
        };
        let alter = |leader| {
            Message::AlterIsr(AlterIsrRequest {
                leader: ReplicaId(leader),
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![],
            })
        };
        let produce = Message::Produce {
            acks: -1,
            timeout_ms: 1,
            batch: vec![],
        };
        let read = Message::Read {
            offset: Offset(0),
            max_bytes: 1,
        };
        let elect = Message::ElectLeader {
            preferred: None,
            allow_unclean: true,
        };
        let failed = |r| Message::ReplicaFailed {
            replica: ReplicaId(r),
        };
        let init = Message::InitProducerId { producer_id: None };
        let cases: Vec<(&Peer, Message, bool)> = vec![
            (&r1, fetch(1), true),
            (&r1, fetch(2), false),
            (&alice, fetch(1), false),
            (&anon, fetch(1), false),
            (&r2, register(2), true),
            (&r1, register(2), false),
            (&ops, register(2), false),
            (&r1, alter(1), true),
            (&r2, alter(1), false),
            (&r2, failed(2), true),
            (&r1, failed(2), false),
            (&ops, failed(2), true),
            (&alice, failed(2), false),
            (&alice, produce.clone(), true),
            (&alice, read.clone(), true),
            (&alice, init.clone(), true),
            (&alice, elect.clone(), false),
            (&ops, elect.clone(), true),
            (&ops, produce.clone(), false),
            (&r1, produce.clone(), false),
            (&anon, produce, false),
            (&anon, read.clone(), false),
            (&anon, init.clone(), false),
            (&anon, elect, false),
            (&stranger, read, false),
            (&stranger, init, false),
            (&stranger, Message::Metadata, false),
            (&anon, Message::Metadata, false),
            (&r1, Message::Metadata, true),
            (&alice, Message::Metadata, true),
            (&controller, Message::Metadata, true),
        ];
        for (p, m, ok) in cases {
            let got = a.check(p, &m);
            assert_eq!(got.is_ok(), ok, "{p} {}: {got:?}", m.name());
        }
        let why = a.check(&r1, &register(2)).unwrap_err();
        assert!(
            why.contains("replica-2") && why.contains("member replica-1"),
            "{why}"
        );
    }
}
