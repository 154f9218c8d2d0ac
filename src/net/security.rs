//! The security part of the cluster file: the cluster CA, each member's certificate and key,
//! and the ACL that grants client principals operations (`docs/security.md`).
//!
//! ```text
//! tls_ca certs/ca.pem
//! tls_crl certs/crl.pem
//! tls_cert controller certs/controller.pem certs/controller.key
//! tls_cert 1 certs/replica-1.pem certs/replica-1.key
//! allow alice produce,read
//! allow ops admin
//! ```
//!
//! - `tls_ca PATH`: the CA that signs every member's and client's certificate. Its presence
//!   turns security on: every connection is TLS, every peer presents a certificate, and every
//!   request is authorized (`net::authorize`).
//! - `tls_crl PATH` (optional): certificate revocation lists (PEM, `X509 CRL`) signed by the
//!   CA. Every end checks the peer's certificate against them: a member or client whose
//!   certificate is revoked fails the handshake, whichever side it is on. With a CRL
//!   configured, a certificate whose issuer has no CRL in the file is refused too (its status
//!   is unknown).
//! - `tls_cert MEMBER CERT KEY`: the certificate chain and private key (PEM) a member serves
//!   and connects with; `MEMBER` is `controller` or a replica id. A member's certificate names
//!   it as a DNS subject alternative name: `controller` or `replica-N` ([`Member::name`]).
//! - `allow PRINCIPAL OP[,OP...]`: the client whose certificate names `PRINCIPAL` (a DNS
//!   subject alternative name) may do `produce`, `read` and/or `admin` ([`Operation`]).
//!
//! Paths hold no spaces and are relative to the cluster file's directory when loaded with
//! `ClusterFile::load`.
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
use std::path::{Path, PathBuf};

use super::cluster_file::ClusterFileErrorKind;
use crate::replication::ReplicaId;

/// A member of the cluster: the controller or a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// The controller.
    Controller,
    /// The replica with this id.
    Replica(ReplicaId),
}

impl Member {
    /// The name a member's certificate carries (DNS subject alternative name) and the server
    /// name a peer checks when it connects to it: `controller` or `replica-N`.
    pub fn name(&self) -> String {
        match self {
            Member::Controller => "controller".to_string(),
            Member::Replica(r) => format!("replica-{}", r.0),
        }
    }

    /// The member a certificate name stands for (`controller`, `replica-N`), if any.
    pub fn from_name(name: &str) -> Option<Member> {
        if name == "controller" {
            return Some(Member::Controller);
        }
        let id = name.strip_prefix("replica-")?;
        // Canonical digits only: `replica-01` is not replica 1.
        if id.starts_with('0') && id != "0" {
            return None;
        }
        id.parse::<u32>()
            .ok()
            .map(|n| Member::Replica(ReplicaId(n)))
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a client principal may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Produce, and get or bump a producer id (an idempotent producer needs both).
    Produce,
    /// Read committed records.
    Read,
    /// Elect or move the leader (`move-leader`).
    Admin,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 3] = [Operation::Produce, Operation::Read, Operation::Admin];

    /// The operation's name in the cluster file's ACL (`produce`, `read`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Read => "read",
            Operation::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.name() == s)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The security lines of a cluster file. Security is on iff `ca` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTls {
    /// `tls_ca`: the cluster CA (PEM).
    pub ca: Option<PathBuf>,
    /// `tls_crl`: revocation lists (PEM) every end checks peer certificates against.
    pub crl: Option<PathBuf>,
    /// `tls_cert`: each member's certificate chain and key (PEM).
    pub certs: BTreeMap<Member, CertPaths>,
    /// `allow`: the operations of each client principal.
    pub acl: BTreeMap<String, Vec<Operation>>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The PEM certificate chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

impl ClusterTls {
    /// True when the cluster file turns security on (`tls_ca`).
    pub fn enabled(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether `principal` was granted `op`.
    pub fn allows(&self, principal: &str, op: Operation) -> bool {
        self.acl.get(principal).is_some_and(|ops| ops.contains(&op))
    }

    /// Parses one security directive (`tls_ca`, `tls_cert`, `allow`); `None` when `directive`
    /// is not one of them.
    pub(crate) fn parse_directive(
        &mut self,
        directive: &str,
        rest: &str,
    ) -> Option<Result<(), ClusterFileErrorKind>> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        Some(match directive {
            "tls_ca" => self.parse_ca(&words),
            "tls_crl" => self.parse_crl(&words),
            "tls_cert" => self.parse_cert(&words),
            "allow" => self.parse_allow(&words),
            _ => return None,
        })
    }

    fn parse_ca(&mut self, words: &[&str]) -> Result<(), ClusterFileErrorKind> {
        let [path] = exactly("tls_ca", "a PEM file", words)?;
        if self.ca.is_some() {
            return Err(ClusterFileErrorKind::Security(
                "'tls_ca' given twice".into(),
            ));
        }
        self.ca = Some(PathBuf::from(path));
        Ok(())
    }

    fn parse_crl(&mut self, words: &[&str]) -> Result<(), ClusterFileErrorKind> {
        let [path] = exactly("tls_crl", "a PEM file of revocation lists", words)?;
        if self.crl.is_some() {
            return Err(ClusterFileErrorKind::Security(
                "'tls_crl' given twice".into(),
            ));
        }
        self.crl = Some(PathBuf::from(path));
        Ok(())
    }

    fn parse_cert(&mut self, words: &[&str]) -> Result<(), ClusterFileErrorKind> {
        let [member, cert, key] = exactly(
            "tls_cert",
            "a member (controller or a replica id), a certificate and a key file",
            words,
        )?;
        let member = if member == "controller" {
            Member::Controller
        } else {
            member
                .parse::<u32>()
                .map(|n| Member::Replica(ReplicaId(n)))
                .map_err(|_| ClusterFileErrorKind::BadReplicaId(member.to_string()))?
        };
        let paths = CertPaths {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        };
        if self.certs.insert(member, paths).is_some() {
            return Err(ClusterFileErrorKind::Security(format!(
                "'tls_cert' for {member} given twice"
            )));
        }
        Ok(())
    }

    fn parse_allow(&mut self, words: &[&str]) -> Result<(), ClusterFileErrorKind> {
        let [principal, ops] = exactly(
            "allow",
            "a principal and operations (produce,read,admin)",
            words,
        )?;
        if Member::from_name(principal).is_some() {
            return Err(ClusterFileErrorKind::Security(format!(
                "'allow {principal}': a member name cannot be a client principal"
            )));
        }
        let mut granted = Vec::new();
        for op in ops.split(',') {
            let op = Operation::parse(op).ok_or_else(|| {
                ClusterFileErrorKind::Security(format!(
                    "'allow {principal}': unknown operation '{op}' (expected produce, read or \
                     admin)"
                ))
            })?;
            if !granted.contains(&op) {
                granted.push(op);
            }
        }
        granted.sort();
        if self.acl.insert(principal.to_string(), granted).is_some() {
            return Err(ClusterFileErrorKind::Security(format!(
                "'allow {principal}' given twice"
            )));
        }
        Ok(())
    }

    /// The checks that need the whole file: members exist, and nothing but `tls_ca` turns
    /// security on.
    pub(crate) fn validate(&self, replicas: &[ReplicaId]) -> Result<(), ClusterFileErrorKind> {
        if self.ca.is_none()
            && !(self.certs.is_empty() && self.acl.is_empty() && self.crl.is_none())
        {
            return Err(ClusterFileErrorKind::Security(
                "'tls_cert', 'tls_crl' and 'allow' need a 'tls_ca' line (the CA that signs \
                 the certificates)"
                    .into(),
            ));
        }
        for m in self.certs.keys() {
            if let Member::Replica(r) = m {
                if !replicas.contains(r) {
                    return Err(ClusterFileErrorKind::Security(format!(
                        "'tls_cert' for replica {r}, which is not in the cluster"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes relative paths relative to `base` (the cluster file's directory).
    pub(crate) fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(ca) = &mut self.ca {
            fix(ca);
        }
        if let Some(crl) = &mut self.crl {
            fix(crl);
        }
        for c in self.certs.values_mut() {
            fix(&mut c.cert);
            fix(&mut c.key);
        }
    }

    /// The lines of a cluster file (parse back to `self`).
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(ca) = &self.ca {
            s.push_str(&format!("tls_ca {}\n", ca.display()));
        }
        if let Some(crl) = &self.crl {
            s.push_str(&format!("tls_crl {}\n", crl.display()));
        }
        for (m, c) in &self.certs {
            let who = match m {
                Member::Controller => "controller".to_string(),
                Member::Replica(r) => r.to_string(),
            };
            s.push_str(&format!(
                "tls_cert {who} {} {}\n",
                c.cert.display(),
                c.key.display()
            ));
        }
        for (p, ops) in &self.acl {
            let ops: Vec<&str> = ops.iter().map(|o| o.name()).collect();
            s.push_str(&format!("allow {p} {}\n", ops.join(",")));
        }
        s
    }
}

/// The `N` words of a directive's value, or the error naming what it needs.
fn exactly<'a, const N: usize>(
    directive: &'static str,
    what: &'static str,
    words: &[&'a str],
) -> Result<[&'a str; N], ClusterFileErrorKind> {
    match <[&str; N]>::try_from(words) {
        Ok(w) => Ok(w),
        Err(_) if words.len() < N => Err(ClusterFileErrorKind::MissingValue { directive, what }),
        Err(_) => Err(ClusterFileErrorKind::ExtraValue {
            directive,
            value: words.get(N..).unwrap_or_default().join(" "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_round_trip_and_are_canonical() {
        for m in [
            Member::Controller,
            Member::Replica(ReplicaId(0)),
            Member::Replica(ReplicaId(3)),
            Member::Replica(ReplicaId(u32::MAX)),
        ] {
            assert_eq!(Member::from_name(&m.name()), Some(m));
        }
        for not in [
            "replica-01",
            "replica-",
            "replica--1",
            "replica-x",
            "Replica-1",
            "alice",
            "replica-4294967296",
        ] {
            assert_eq!(Member::from_name(not), None, "{not}");
        }
    }

    #[test]
    fn directives_parse_and_refuse_with_reasons() {
        let mut t = ClusterTls::default();
        assert!(t.parse_directive("replica", "1").is_none());
        t.parse_directive("tls_ca", "ca.pem").unwrap().unwrap();
        t.parse_directive("tls_crl", "crl.pem").unwrap().unwrap();
        assert_eq!(t.crl, Some(PathBuf::from("crl.pem")));
        t.parse_directive("tls_cert", "controller c.pem c.key")
            .unwrap()
            .unwrap();
        t.parse_directive("tls_cert", "2 r2.pem r2.key")
            .unwrap()
            .unwrap();
        t.parse_directive("allow", "alice produce,read,produce")
            .unwrap()
            .unwrap();
        assert_eq!(
            t.acl["alice"],
            vec![Operation::Produce, Operation::Read],
            "deduplicated and sorted"
        );
        assert!(t.allows("alice", Operation::Read));
        assert!(!t.allows("alice", Operation::Admin));
        assert!(!t.allows("bob", Operation::Read));
        for (d, rest, needle) in [
            ("tls_ca", "other.pem", "twice"),
            ("tls_ca", "", "needs a PEM file"),
            ("tls_ca", "a b", "unexpected 'b'"),
            ("tls_crl", "other.pem", "twice"),
            ("tls_crl", "", "needs a PEM file"),
            ("tls_cert", "2 a b", "twice"),
            ("tls_cert", "x a b", "not a replica id"),
            ("tls_cert", "1 a", "needs"),
            ("allow", "alice read", "twice"),
            ("allow", "bob write", "unknown operation 'write'"),
            ("allow", "replica-1 read", "member name"),
            ("allow", "bob", "needs"),
        ] {
            let e = t.parse_directive(d, rest).unwrap().unwrap_err();
            let e = crate::net::ClusterFileError {
                path: None,
                line: 1,
                kind: e,
            }
            .to_string();
            assert!(e.contains(needle), "{d} {rest}: {e}");
        }
        t.validate(&[ReplicaId(1), ReplicaId(2)]).unwrap();
        let e = t.validate(&[ReplicaId(1)]).unwrap_err();
        assert!(matches!(e, ClusterFileErrorKind::Security(m) if m.contains("replica 2")));
        let mut no_ca = t.clone();
        no_ca.ca = None;
        assert!(no_ca.validate(&[ReplicaId(1), ReplicaId(2)]).is_err());
        let crl_only = ClusterTls {
            crl: Some(PathBuf::from("crl.pem")),
            ..ClusterTls::default()
        };
        let e = crl_only.validate(&[]).unwrap_err();
        assert!(matches!(e, ClusterFileErrorKind::Security(m) if m.contains("tls_crl")));
    }
}
