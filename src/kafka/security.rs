//! What `oncelog serve` secures a listener with (`docs/kafka-wire.md`, "Security and limits"):
//! the TLS material, the SASL/PLAIN users and the ACL named by [`ServeConfig`], loaded and
//! checked once at start-up, and the typed errors of a bad setting or file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::acl::Acl;
use super::sasl::Users;
use super::ServeConfig;
use crate::net::{CertPaths, Security, SecurityError};

/// TLS on the listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeTls {
    /// The certificate chain and private key (PEM) the server presents.
    pub identity: CertPaths,
    /// With it, every client must present a certificate signed by a CA in this file (mutual
    /// TLS); its first DNS subject alternative name (else its common name) is the client's
    /// principal.
    pub client_ca: Option<PathBuf>,
}

/// SASL/PLAIN authentication (`--sasl-users`, `--sasl-allow-plaintext`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSasl {
    /// The users file (`user:sha256:HEX` or `user:plain:PASSWORD` lines, [`Users`]).
    pub users: PathBuf,
    /// Allows SASL/PLAIN without TLS, which sends passwords in the clear: loopback tests only.
    pub allow_plaintext: bool,
}

/// A line of a users or ACL file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Why `oncelog serve` cannot start with its settings.
#[derive(Debug)]
pub enum ServeError {
    /// A limit set to 0 (`--max-connections`, `--frame-deadline-ms`, `--idle-timeout-ms`,
    /// `--partitions`), naming it.
    Zero(&'static str),
    /// SASL/PLAIN without TLS and without `allow_plaintext`.
    SaslNeedsTls,
    /// The TLS material does not load.
    Tls(SecurityError),
    /// A users or ACL file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A line of a users or ACL file does not parse.
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and why.
        error: LineError,
    },
    /// The listener cannot be bound.
    Bind(crate::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Zero(what) => write!(f, "{what} must be at least 1"),
            ServeError::SaslNeedsTls => f.write_str(
                "SASL/PLAIN sends passwords in the clear without TLS: give --tls-cert and \
                 --tls-key, or --sasl-allow-plaintext (loopback tests only)",
            ),
            ServeError::Tls(e) => write!(f, "TLS: {e}"),
            ServeError::Read { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            ServeError::Parse { path, error } => write!(f, "{}: {error}", path.display()),
            ServeError::Bind(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The most read from a users or ACL file.
const MAX_LIST_BYTES: u64 = 1 << 20;

/// Reads a users or ACL file and parses it with `parse`.
pub(super) fn load_list<T>(
    path: &Path,
    parse: impl Fn(&str) -> Result<T, LineError>,
) -> Result<T, ServeError> {
    let bytes = crate::io::read_bounded(path, MAX_LIST_BYTES).map_err(|e| ServeError::Read {
        path: path.to_path_buf(),
        error: match e {
            crate::io::BoundedReadError::TooLarge { limit } => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ),
            crate::io::BoundedReadError::Io(e) => e,
        },
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ServeError::Parse {
        path: path.to_path_buf(),
        error: LineError {
            line: 1,
            reason: "not UTF-8 text".into(),
        },
    })?;
    parse(&text).map_err(|error| ServeError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// The lines of a list file that say something: numbered from 1, trimmed, without blank lines
/// and `#` comments.
pub(super) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// The security of a listener, loaded.
#[derive(Debug)]
pub(super) struct Loaded {
    pub tls: Option<Security>,
    pub users: Option<Users>,
    pub acl: Option<Acl>,
}

impl ServeConfig {
    /// Checks the settings that need no file: no limit is 0, and SASL runs over TLS unless
    /// allowed in plaintext.
    pub fn validate(&self) -> Result<(), ServeError> {
        for (value, what) in [
            (self.max_connections as u128, "--max-connections"),
            (self.frame_deadline.as_millis(), "--frame-deadline-ms"),
            (self.idle_timeout.as_millis(), "--idle-timeout-ms"),
            (u128::from(self.default_partitions), "--partitions"),
        ] {
            if value == 0 {
                return Err(ServeError::Zero(what));
            }
        }
        if let Some(sasl) = &self.sasl {
            if self.tls.is_none() && !sasl.allow_plaintext {
                return Err(ServeError::SaslNeedsTls);
            }
        }
        Ok(())
    }

    /// Validates and loads the TLS material, users and ACL.
    pub(super) fn load_security(&self) -> Result<Loaded, ServeError> {
        self.validate()?;
        let tls = self
            .tls
            .as_ref()
            .map(|t| Security::for_listener(&t.identity, t.client_ca.as_deref()))
            .transpose()
            .map_err(ServeError::Tls)?;
        let users = self
            .sasl
            .as_ref()
            .map(|s| load_list(&s.users, Users::parse))
            .transpose()?;
        let acl = self
            .acl
            .as_deref()
            .map(|p| load_list(p, Acl::parse))
            .transpose()?;
        Ok(Loaded { tls, users, acl })
    }
}
