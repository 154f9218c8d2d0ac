//! The static cluster file: where the controller and each replica listen, and the partition's
//! `min_insync_replicas`.
//!
//! ```text
//! # oncelog cluster
//! controller 127.0.0.1:7070
//! replica 1 127.0.0.1:7071 /path/to/data1
//! replica 2 127.0.0.1:7072
//! replica 3 127.0.0.1:7073
//! min_insync_replicas 2
//! ```
//!
//! `controller` may name several addresses: the controllers on etcd, one process per address,
//! any of which serves (clients try the next one when one cannot be reached). `etcd URL...`
//! (optional) names the client URLs of the etcd cluster holding the controller's state
//! (`oncelog controller` then uses etcd without `--etcd`).
//! The security lines (`tls_ca`, `tls_cert`, `allow`) are described in `net::security` and
//! `docs/security.md`.
//!
//! One directive per line; blank lines and lines starting with `#` are ignored. `replica ID ADDR
//! [DIR]`: the rest of the line after the address is the replica's data directory (it may hold
//! spaces; relative to the cluster file's directory when loaded with [`ClusterFile::load`];
//! `oncelog node --dir` overrides it). Addresses are `IP:PORT` (no name lookup).
//!
//! Invariants of a parsed [`ClusterFile`]: exactly one controller; at least one replica; replica
//! ids and all addresses (controller's included) unique; replicas sorted by id;
//! `1 <= min_insync_replicas <= replicas` (default 1). Parsing never panics: every problem is a
//! [`ClusterFileError`] with its line number.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::security::ClusterTls;
use crate::replication::ReplicaId;

/// The most [`ClusterFile::load`] reads: a cluster file is a few lines; 1 MiB is thousands of
/// replicas.
pub const MAX_CLUSTER_FILE_BYTES: u64 = 1 << 20;

/// A parsed cluster file. See the module invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    /// The first controller address.
    pub controller: SocketAddr,
    /// The other controller addresses, in file order (controllers on etcd only).
    pub standby_controllers: Vec<SocketAddr>,
    /// The etcd client URLs of the `etcd` line (empty without one).
    pub etcd: Vec<String>,
    /// Sorted by id.
    pub replicas: Vec<ReplicaEntry>,
    /// `min.insync.replicas` for the partition (1..=replicas).
    pub min_insync_replicas: u32,
    /// The CA, member certificates and ACL (`net::security`); security is on iff `tls.ca` is
    /// set.
    pub tls: ClusterTls,
}

/// One `replica` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    /// The replica id.
    pub id: ReplicaId,
    /// The address its node listens on.
    pub addr: SocketAddr,
    /// Its data directory, if the file names one.
    pub dir: Option<PathBuf>,
}

/// Why a cluster file was refused.
#[derive(Debug)]
pub struct ClusterFileError {
    /// The file, when it was loaded from one.
    pub path: Option<PathBuf>,
    /// 1-based line number; 0 for the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub kind: ClusterFileErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
/// What is wrong with a cluster file.
pub enum ClusterFileErrorKind {
    /// The file could not be read.
    Io(io::Error),
    /// A line starts with a word that is no directive.
    UnknownDirective(String),
    /// A directive lacks a value.
    MissingValue {
        /// The directive.
        directive: &'static str,
        /// The value it lacks.
        what: &'static str,
    },
    /// A directive has more values than it takes.
    ExtraValue {
        /// The directive.
        directive: &'static str,
        /// The first extra value.
        value: String,
    },
    /// An address that is not `ip:port`.
    BadAddress(String),
    /// A replica id that is not a number in range.
    BadReplicaId(String),
    /// A value that is not a number in range.
    BadNumber {
        /// The directive.
        directive: &'static str,
        /// The value.
        value: String,
    },
    /// A directive that may appear once appeared again (first seen on `first_line`).
    Repeated {
        /// The directive.
        directive: &'static str,
        /// The line it first appeared on.
        first_line: usize,
    },
    /// Two `replica` lines with this id.
    DuplicateReplica(ReplicaId),
    /// Two members with this address.
    DuplicateAddress(SocketAddr),
    /// No `controller` line.
    MissingController,
    /// No `replica` line.
    NoReplicas,
    /// `min.insync.replicas` is 0 or above the number of replicas.
    MinIsrOutOfRange {
        /// The value given.
        min_insync_replicas: u32,
        /// The number of replicas.
        replicas: usize,
    },
    /// The file holds more than `limit` bytes (or never ends, like `/dev/zero`); nothing past
    /// the limit was read.
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text.
    NotText,
    /// An `etcd` endpoint that is not an `http://` or `https://` URL.
    BadEtcdEndpoint(String),
    /// A security line (`tls_ca`, `tls_cert`, `allow`) is wrong; the text says how.
    Security(String),
}

impl fmt::Display for ClusterFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .path
            .as_ref()
            .map_or_else(|| "cluster file".to_string(), |p| p.display().to_string());
        if self.line > 0 {
            write!(f, "{file}:{}: ", self.line)?;
        } else {
            write!(f, "{file}: ")?;
        }
        match &self.kind {
            ClusterFileErrorKind::Io(e) => write!(f, "cannot read: {e}"),
            ClusterFileErrorKind::TooLarge { limit } => write!(
                f,
                "larger than {limit} bytes: not a cluster file (stopped reading at the limit)"
            ),
            ClusterFileErrorKind::NotText => write!(f, "not UTF-8 text: not a cluster file"),
            ClusterFileErrorKind::BadEtcdEndpoint(u) => write!(
                f,
                "'{u}' is not an etcd client URL (http://HOST:PORT or https://HOST:PORT)"
            ),
            ClusterFileErrorKind::Security(m) => f.write_str(m),
            ClusterFileErrorKind::UnknownDirective(d) => write!(
                f,
                "unknown directive '{d}' (expected controller, replica, min_insync_replicas, \
                 etcd, tls_ca, tls_cert or allow)"
            ),
            ClusterFileErrorKind::MissingValue { directive, what } => {
                write!(f, "'{directive}' needs {what}")
            }
            ClusterFileErrorKind::ExtraValue { directive, value } => {
                write!(f, "unexpected '{value}' after '{directive}'")
            }
            ClusterFileErrorKind::BadAddress(a) => {
                write!(f, "'{a}' is not an IP:PORT address")
            }
            ClusterFileErrorKind::BadReplicaId(v) => {
                write!(f, "'{v}' is not a replica id (0..=4294967295)")
            }
            ClusterFileErrorKind::BadNumber { directive, value } => {
                write!(f, "'{directive}': '{value}' is not a number")
            }
            ClusterFileErrorKind::Repeated {
                directive,
                first_line,
            } => write!(f, "'{directive}' repeated (first on line {first_line})"),
            ClusterFileErrorKind::DuplicateReplica(r) => write!(f, "replica {r} listed twice"),
            ClusterFileErrorKind::DuplicateAddress(a) => write!(f, "address {a} used twice"),
            ClusterFileErrorKind::MissingController => write!(f, "no 'controller' line"),
            ClusterFileErrorKind::NoReplicas => write!(f, "no 'replica' line"),
            ClusterFileErrorKind::MinIsrOutOfRange {
                min_insync_replicas,
                replicas,
            } => write!(
                f,
                "min_insync_replicas {min_insync_replicas} must be between 1 and the number of \
                 replicas ({replicas})"
            ),
        }
    }
}

impl std::error::Error for ClusterFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ClusterFileErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The first whitespace-separated token of `s` and the rest (leading whitespace removed).
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (tok, rest) = s.split_at(end);
    Some((tok, rest.trim_start()))
}

/// An `IP:PORT` token (the value of `directive`) and the rest of the line.
fn addr<'a>(
    value: Option<(&'a str, &'a str)>,
    directive: &'static str,
) -> Result<(SocketAddr, &'a str), ClusterFileErrorKind> {
    let (a, rest) = value.ok_or(ClusterFileErrorKind::MissingValue {
        directive,
        what: "an IP:PORT address",
    })?;
    let addr = a
        .parse::<SocketAddr>()
        .map_err(|_| ClusterFileErrorKind::BadAddress(a.to_string()))?;
    Ok((addr, rest))
}

impl ClusterFile {
    /// Parses the text of a cluster file (data directories are kept as written).
    pub fn parse(text: &str) -> Result<ClusterFile, ClusterFileError> {
        let err = |line: usize, kind| ClusterFileError {
            path: None,
            line,
            kind,
        };
        let mut controller: Option<(SocketAddr, usize)> = None;
        let mut standby_controllers: Vec<SocketAddr> = Vec::new();
        let mut etcd: Option<(Vec<String>, usize)> = None;
        let mut min_isr: Option<(u32, usize)> = None;
        let mut replicas: Vec<ReplicaEntry> = Vec::new();
        // The line of each entry of `replicas`, in file order.
        let mut replica_lines: Vec<usize> = Vec::new();
        let mut tls = ClusterTls::default();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((directive, rest)) = token(line) else {
                continue;
            };
            match directive {
                "controller" => {
                    if let Some((_, first_line)) = controller {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::Repeated {
                                directive: "controller",
                                first_line,
                            },
                        ));
                    }
                    let (a, mut rest) = addr(token(rest), "controller").map_err(|k| err(n, k))?;
                    while !rest.is_empty() {
                        let (more, tail) =
                            addr(token(rest), "controller").map_err(|k| err(n, k))?;
                        if more == a || standby_controllers.contains(&more) {
                            return Err(err(n, ClusterFileErrorKind::DuplicateAddress(more)));
                        }
                        standby_controllers.push(more);
                        rest = tail;
                    }
                    controller = Some((a, n));
                }
                "etcd" => {
                    if let Some((_, first_line)) = etcd {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::Repeated {
                                directive: "etcd",
                                first_line,
                            },
                        ));
                    }
                    let urls: Vec<String> = rest.split_whitespace().map(String::from).collect();
                    if urls.is_empty() {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::MissingValue {
                                directive: "etcd",
                                what: "one or more client URLs",
                            },
                        ));
                    }
                    if let Some(bad) = urls
                        .iter()
                        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                    {
                        return Err(err(n, ClusterFileErrorKind::BadEtcdEndpoint(bad.clone())));
                    }
                    etcd = Some((urls, n));
                }
                "replica" => {
                    let (id, rest) = token(rest).ok_or_else(|| {
                        err(
                            n,
                            ClusterFileErrorKind::MissingValue {
                                directive: "replica",
                                what: "an id and an IP:PORT address",
                            },
                        )
                    })?;
                    let id = id
                        .parse::<u32>()
                        .map(ReplicaId)
                        .map_err(|_| err(n, ClusterFileErrorKind::BadReplicaId(id.to_string())))?;
                    let (a, rest) = addr(token(rest), "replica").map_err(|k| err(n, k))?;
                    if replicas.iter().any(|r| r.id == id) {
                        return Err(err(n, ClusterFileErrorKind::DuplicateReplica(id)));
                    }
                    replicas.push(ReplicaEntry {
                        id,
                        addr: a,
                        dir: (!rest.is_empty()).then(|| PathBuf::from(rest)),
                    });
                    replica_lines.push(n);
                }
                "min_insync_replicas" => {
                    if let Some((_, first_line)) = min_isr {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::Repeated {
                                directive: "min_insync_replicas",
                                first_line,
                            },
                        ));
                    }
                    let (v, rest) = token(rest).ok_or_else(|| {
                        err(
                            n,
                            ClusterFileErrorKind::MissingValue {
                                directive: "min_insync_replicas",
                                what: "a number",
                            },
                        )
                    })?;
                    let v = v.parse::<u32>().map_err(|_| {
                        err(
                            n,
                            ClusterFileErrorKind::BadNumber {
                                directive: "min_insync_replicas",
                                value: v.to_string(),
                            },
                        )
                    })?;
                    if !rest.is_empty() {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::ExtraValue {
                                directive: "min_insync_replicas",
                                value: rest.to_string(),
                            },
                        ));
                    }
                    min_isr = Some((v, n));
                }
                other => match tls.parse_directive(other, rest) {
                    Some(parsed) => parsed.map_err(|k| err(n, k))?,
                    None => {
                        return Err(err(
                            n,
                            ClusterFileErrorKind::UnknownDirective(other.to_string()),
                        ))
                    }
                },
            }
        }
        let Some((controller, _)) = controller else {
            return Err(err(0, ClusterFileErrorKind::MissingController));
        };
        if replicas.is_empty() {
            return Err(err(0, ClusterFileErrorKind::NoReplicas));
        }
        let (min_insync_replicas, min_line) = min_isr.unwrap_or((1, 0));
        if min_insync_replicas == 0 || min_insync_replicas as usize > replicas.len() {
            return Err(err(
                min_line,
                ClusterFileErrorKind::MinIsrOutOfRange {
                    min_insync_replicas,
                    replicas: replicas.len(),
                },
            ));
        }
        let mut addrs = vec![controller];
        addrs.extend(&standby_controllers);
        for (r, line) in replicas.iter().zip(&replica_lines) {
            if addrs.contains(&r.addr) {
                return Err(err(*line, ClusterFileErrorKind::DuplicateAddress(r.addr)));
            }
            addrs.push(r.addr);
        }
        replicas.sort_by_key(|r| r.id);
        let ids: Vec<ReplicaId> = replicas.iter().map(|r| r.id).collect();
        tls.validate(&ids).map_err(|k| err(0, k))?;
        Ok(ClusterFile {
            controller,
            standby_controllers,
            etcd: etcd.map(|(urls, _)| urls).unwrap_or_default(),
            replicas,
            min_insync_replicas,
            tls,
        })
    }

    /// Reads and parses `path`; relative data directories are taken relative to the file's
    /// directory. At most [`MAX_CLUSTER_FILE_BYTES`] are read: a larger file (or an endless
    /// one such as `/dev/zero`) is `TooLarge`, found after reading just past the limit.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let whole = |kind| ClusterFileError {
            path: Some(path.to_path_buf()),
            line: 0,
            kind,
        };
        let bytes = crate::io::read_bounded(path, MAX_CLUSTER_FILE_BYTES).map_err(|e| {
            whole(match e {
                crate::io::BoundedReadError::TooLarge { limit } => {
                    ClusterFileErrorKind::TooLarge { limit }
                }
                crate::io::BoundedReadError::Io(e) => ClusterFileErrorKind::Io(e),
            })
        })?;
        let text = String::from_utf8(bytes).map_err(|_| whole(ClusterFileErrorKind::NotText))?;
        let mut file = ClusterFile::parse(&text).map_err(|mut e| {
            e.path = Some(path.to_path_buf());
            e
        })?;
        let base = crate::io::parent_dir(path);
        file.tls.resolve(base);
        for r in &mut file.replicas {
            if let Some(d) = &r.dir {
                if d.is_relative() {
                    r.dir = Some(base.join(d));
                }
            }
        }
        Ok(file)
    }

    /// The `replica` line with `id`, if any.
    pub fn replica(&self, id: ReplicaId) -> Option<&ReplicaEntry> {
        self.replicas.iter().find(|r| r.id == id)
    }

    /// The replica ids, sorted.
    pub fn replica_ids(&self) -> Vec<ReplicaId> {
        self.replicas.iter().map(|r| r.id).collect()
    }

    /// Every controller address, the first one first.
    pub fn controllers(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.controller];
        all.extend(&self.standby_controllers);
        all
    }

    /// The file's text (parses back to `self`).
    pub fn to_text(&self) -> String {
        let all: Vec<String> = self.controllers().iter().map(ToString::to_string).collect();
        let mut s = format!("# oncelog cluster\ncontroller {}\n", all.join(" "));
        if !self.etcd.is_empty() {
            s.push_str(&format!("etcd {}\n", self.etcd.join(" ")));
        }
        for r in &self.replicas {
            s.push_str(&format!("replica {} {}", r.id, r.addr));
            if let Some(d) = &r.dir {
                s.push_str(&format!(" {}", d.display()));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "min_insync_replicas {}\n",
            self.min_insync_replicas
        ));
        s.push_str(&self.tls.to_text());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# oncelog cluster
controller 127.0.0.1:7070

replica 2 127.0.0.1:7072
replica 1 127.0.0.1:7071   /path/to/data 1
   # indented comment
replica 3 127.0.0.1:7073
min_insync_replicas 2
";

    #[test]
    fn parses_the_example() {
        let c = ClusterFile::parse(EXAMPLE).unwrap();
        assert_eq!(c.controller, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(
            c.replica_ids(),
            vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)]
        );
        assert_eq!(
            c.replica(ReplicaId(1)).unwrap().dir,
            Some(PathBuf::from("/path/to/data 1"))
        );
        assert_eq!(c.replica(ReplicaId(2)).unwrap().dir, None);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(ClusterFile::parse(&c.to_text()).unwrap(), c);
    }

    fn error(text: &str) -> ClusterFileError {
        ClusterFile::parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nbroker 3",
                3,
                "unknown directive",
            ),
            ("controller\nreplica 1 127.0.0.1:2", 1, "needs"),
            (
                "controller localhost:1\nreplica 1 127.0.0.1:2",
                1,
                "not an IP:PORT",
            ),
            (
                "controller 127.0.0.1:1 x\nreplica 1 127.0.0.1:2",
                1,
                "'x' is not an IP:PORT",
            ),
            (
                "controller 127.0.0.1:1 127.0.0.1:1\nreplica 1 127.0.0.1:2",
                1,
                "used twice",
            ),
            (
                "controller 127.0.0.1:1 127.0.0.1:3\nreplica 1 127.0.0.1:3",
                2,
                "used twice",
            ),
            (
                "controller 127.0.0.1:1\netcd\nreplica 1 127.0.0.1:2",
                2,
                "needs one or more client URLs",
            ),
            (
                "controller 127.0.0.1:1\netcd 127.0.0.1:2379\nreplica 1 127.0.0.1:2",
                2,
                "not an etcd client URL",
            ),
            (
                "etcd http://a:1\ncontroller 127.0.0.1:1\netcd http://b:1\nreplica 1 127.0.0.1:2",
                3,
                "repeated (first on line 1)",
            ),
            (
                "controller 127.0.0.1:1\nreplica -1 127.0.0.1:2",
                2,
                "not a replica id",
            ),
            ("controller 127.0.0.1:1\nreplica 1", 2, "needs"),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nreplica 1 127.0.0.1:3",
                3,
                "twice",
            ),
            (
                "controller 127.0.0.1:1\ncontroller 127.0.0.1:9\nreplica 1 127.0.0.1:2",
                2,
                "repeated (first on line 1)",
            ),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nreplica 2 127.0.0.1:2",
                3,
                "address 127.0.0.1:2 used twice",
            ),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:1",
                2,
                "used twice",
            ),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nmin_insync_replicas two",
                3,
                "not a number",
            ),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nmin_insync_replicas 2",
                3,
                "between 1 and",
            ),
            (
                "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\nmin_insync_replicas 0",
                3,
                "between 1 and",
            ),
            ("replica 1 127.0.0.1:2", 0, "no 'controller'"),
            ("controller 127.0.0.1:1\n", 0, "no 'replica'"),
        ];
        for (text, line, needle) in cases {
            let e = error(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn several_controllers_and_etcd_endpoints_round_trip() {
        let c = ClusterFile::parse(
            "controller 127.0.0.1:1 127.0.0.1:5  127.0.0.1:6\n\
             etcd http://127.0.0.1:2379 http://127.0.0.1:2380\nreplica 1 127.0.0.1:2\n",
        )
        .unwrap();
        assert_eq!(
            c.controllers(),
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:5".parse().unwrap(),
                "127.0.0.1:6".parse().unwrap()
            ]
        );
        assert_eq!(
            c.etcd,
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:2380"]
        );
        assert_eq!(ClusterFile::parse(&c.to_text()).unwrap(), c);
    }

    #[test]
    fn load_resolves_relative_dirs_and_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        std::fs::write(
            &path,
            "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2 data1\nreplica 2 127.0.0.1:3 /abs\n",
        )
        .unwrap();
        let c = ClusterFile::load(&path).unwrap();
        assert_eq!(c.replicas[0].dir, Some(dir.path().join("data1")));
        assert_eq!(c.replicas[1].dir, Some(PathBuf::from("/abs")));
        assert_eq!(c.min_insync_replicas, 1);
        // Security lines: paths relative to the file too, and the text parses back.
        std::fs::write(
            &path,
            "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\ntls_ca certs/ca.pem\n\
             tls_cert 1 r1.pem /keys/r1.key\nallow alice read,produce\n",
        )
        .unwrap();
        let c = ClusterFile::load(&path).unwrap();
        assert!(c.tls.enabled());
        assert_eq!(c.tls.ca, Some(dir.path().join("certs/ca.pem")));
        let r1 = &c.tls.certs[&crate::net::Member::Replica(ReplicaId(1))];
        assert_eq!(r1.cert, dir.path().join("r1.pem"));
        assert_eq!(r1.key, PathBuf::from("/keys/r1.key"));
        assert_eq!(ClusterFile::parse(&c.to_text()).unwrap(), c);
        assert!(!ClusterFile::parse(EXAMPLE).unwrap().tls.enabled());
        std::fs::write(&path, "controller 127.0.0.1:1\nreplica x").unwrap();
        let e = ClusterFile::load(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: ", path.display())),
            "{e}"
        );
        let e = ClusterFile::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e.kind, ClusterFileErrorKind::Io(_)));
    }

    #[test]
    fn load_reads_at_most_the_limit_and_refuses_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        let mut text = "controller 127.0.0.1:1\nreplica 1 127.0.0.1:2\n".to_string();
        text.push_str(&"#".repeat(MAX_CLUSTER_FILE_BYTES as usize));
        std::fs::write(&path, &text).unwrap();
        let e = ClusterFile::load(&path).unwrap_err();
        assert!(
            matches!(e.kind, ClusterFileErrorKind::TooLarge { limit } if limit == MAX_CLUSTER_FILE_BYTES),
            "{e}"
        );
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        // An endless file is refused after the limit, not read until memory runs out.
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let e = ClusterFile::load(zero).unwrap_err();
            assert!(
                matches!(e.kind, ClusterFileErrorKind::TooLarge { .. }),
                "{e}"
            );
        }
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let e = ClusterFile::load(&path).unwrap_err();
        assert!(matches!(e.kind, ClusterFileErrorKind::NotText), "{e}");
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let alphabet = b"controlerpica_minsyn 0123456789.:#\n\t[]/x";
        for _ in 0..2000 {
            let mut s = Vec::new();
            for _ in 0..(x % 80) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = ClusterFile::parse(&String::from_utf8_lossy(&s));
        }
    }
}
