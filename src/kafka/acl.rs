//! Who may do what on `oncelog serve` (`--acl FILE`). Without an ACL every connection that
//! got through TLS and SASL may do everything; with one, a principal may do only what a line
//! grants it:
//!
//! ```text
//! # principal  operations
//! allow alice produce,read
//! allow ops   admin
//! allow app   read,group,txn
//! ```
//!
//! The principal is the SASL user when SASL is on, else the first DNS subject alternative name
//! of the client's certificate under mutual TLS (its common name when it has none), else
//! `ANONYMOUS`. The operations
//! ([`KafkaOp`]) and the requests they cover:
//!
//! | operation | requests | refused with |
//! |---|---|---|
//! | `produce` | Produce; InitProducerId without a transactional id | TOPIC_AUTHORIZATION_FAILED (Produce), CLUSTER_AUTHORIZATION_FAILED |
//! | `read` | Fetch, ListOffsets | TOPIC_AUTHORIZATION_FAILED |
//! | `admin` | CreateTopics, DeleteTopics | TOPIC_AUTHORIZATION_FAILED |
//! | `group` | FindCoordinator (group), JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch | GROUP_AUTHORIZATION_FAILED |
//! | `txn` | InitProducerId with a transactional id, FindCoordinator (transaction), AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions | TRANSACTIONAL_ID_AUTHORIZATION_FAILED (ListTransactions: CLUSTER_AUTHORIZATION_FAILED) |
//!
//! ApiVersions and Metadata are answered to everyone; Metadata creates a missing topic only
//! for a principal granted `produce` or `admin`. A refused request is answered with the error
//! (the connection stays open), never handled.

use std::collections::BTreeMap;
use std::fmt;

use super::security::{lines, LineError};

/// The principal of a connection that is neither SASL-authenticated nor presents a client
/// certificate.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// What an ACL line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KafkaOp {
    /// Produce (and an idempotent producer's id).
    Produce,
    /// Fetch and list offsets.
    Read,
    /// Create and delete topics.
    Admin,
    /// Consumer groups: join, sync, heartbeat, leave, commit and fetch offsets.
    Group,
    /// Transactions.
    Txn,
}

impl KafkaOp {
    /// Every operation.
    pub const ALL: [KafkaOp; 5] = [
        KafkaOp::Produce,
        KafkaOp::Read,
        KafkaOp::Admin,
        KafkaOp::Group,
        KafkaOp::Txn,
    ];

    /// The name in an ACL line.
    pub fn name(self) -> &'static str {
        match self {
            KafkaOp::Produce => "produce",
            KafkaOp::Read => "read",
            KafkaOp::Admin => "admin",
            KafkaOp::Group => "group",
            KafkaOp::Txn => "txn",
        }
    }
}

impl fmt::Display for KafkaOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The grants of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    grants: BTreeMap<String, Vec<KafkaOp>>,
}

impl Acl {
    /// Parses an ACL file (see the module documentation); the first bad line is the error.
    pub fn parse(text: &str) -> Result<Acl, LineError> {
        let mut acl = Acl::default();
        for (line, l) in lines(text) {
            let bad = |reason: String| LineError { line, reason };
            let words: Vec<&str> = l.split_whitespace().collect();
            let [verb, principal, ops] = words[..] else {
                return Err(bad(
                    "expected 'allow PRINCIPAL OP[,OP...]' (produce, read, admin, group, txn)"
                        .into(),
                ));
            };
            if verb != "allow" {
                return Err(bad(format!("unknown directive '{verb}' (only 'allow')")));
            }
            let mut granted = Vec::new();
            for op in ops.split(',') {
                let op = KafkaOp::ALL
                    .into_iter()
                    .find(|o| o.name() == op)
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown operation '{op}' (produce, read, admin, group, txn)"
                        ))
                    })?;
                if !granted.contains(&op) {
                    granted.push(op);
                }
            }
            granted.sort();
            if acl.grants.insert(principal.to_string(), granted).is_some() {
                return Err(bad(format!("'{principal}' given twice")));
            }
        }
        Ok(acl)
    }

    /// Whether `principal` was granted `op`.
    pub fn allows(&self, principal: &str, op: KafkaOp) -> bool {
        self.grants
            .get(principal)
            .is_some_and(|ops| ops.contains(&op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_files_parse_and_bad_lines_name_their_number() {
        let acl =
            Acl::parse("# grants\nallow alice produce,read,produce\n\nallow ops admin\n").unwrap();
        assert!(acl.allows("alice", KafkaOp::Produce));
        assert!(acl.allows("alice", KafkaOp::Read));
        assert!(!acl.allows("alice", KafkaOp::Admin));
        assert!(acl.allows("ops", KafkaOp::Admin));
        assert!(!acl.allows("bob", KafkaOp::Read));
        assert!(!acl.allows(ANONYMOUS, KafkaOp::Read));
        for (bad, line, needle) in [
            ("allow alice\n", 1, "expected 'allow"),
            ("allow a read extra\n", 1, "expected 'allow"),
            ("deny alice read\n", 1, "unknown directive 'deny'"),
            (
                "allow a read\nallow b write\n",
                2,
                "unknown operation 'write'",
            ),
            ("allow a read,\n", 1, "unknown operation ''"),
            ("# x\nallow a read\nallow a txn\n", 3, "twice"),
        ] {
            let e = Acl::parse(bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
            assert!(e.reason.contains(needle), "{bad:?}: {e}");
        }
    }
}
