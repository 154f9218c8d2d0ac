//! SASL/PLAIN for `oncelog serve` (`--sasl-users`): the users file, the PLAIN token, and the
//! state of one connection's authentication.
//!
//! The users file has one user a line (blank lines and `#` comments are skipped):
//!
//! ```text
//! alice:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! bob:plain:a password with spaces and : colons
//! ```
//!
//! `sha256:` is followed by the hex SHA-256 of the password (`printf %s PASSWORD | sha256sum`;
//! the line above is alice with the password `password`);
//! `plain:` by the password itself (everything after it; a line's leading and trailing spaces
//! are dropped). A user name is not empty and holds
//! no `:`; a user appears once. A password is checked by comparing SHA-256 digests in constant
//! time, so neither a wrong password's length nor its first differing byte shows in the time
//! an answer takes.
//!
//! The exchange (Kafka's, KIP-43 and KIP-152): SaslHandshake names the mechanism (only `PLAIN`;
//! another is answered UNSUPPORTED_SASL_MECHANISM with the list); after a v0 handshake the
//! client sends its token as a bare frame and gets an empty frame back, after a v1 handshake
//! it sends a SaslAuthenticate request. Until then only ApiVersions, SaslHandshake and
//! SaslAuthenticate are answered; anything else closes the connection. A wrong user or
//! password is answered SASL_AUTHENTICATION_FAILED (v1) or not at all (v0), and the
//! connection is closed.

use std::collections::HashMap;
use std::fmt;

use super::security::{lines, LineError};

/// The only mechanism served.
pub const PLAIN: &str = "PLAIN";

/// The users and the SHA-256 of their passwords.
#[derive(Clone, Default)]
pub struct Users {
    digests: HashMap<String, [u8; 32]>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the digests.
        f.debug_struct("Users")
            .field("count", &self.digests.len())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `bytes`; `None` in a build without the `tls` feature (no hash function).
fn sha256(bytes: &[u8]) -> Option<[u8; 32]> {
    #[cfg(feature = "tls")]
    {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .ok()
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = bytes;
        None
    }
}

/// Equality of two digests in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Users {
    /// Parses a users file (see the module documentation); the first bad line is the error.
    pub fn parse(text: &str) -> Result<Users, LineError> {
        let mut users = Users::default();
        for (line, l) in lines(text) {
            let bad = |reason: String| LineError { line, reason };
            let (user, rest) = l
                .split_once(':')
                .ok_or_else(|| bad("expected USER:sha256:HEX or USER:plain:PASSWORD".into()))?;
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            let digest = if let Some(hex) = rest.strip_prefix("sha256:") {
                hex32(hex).ok_or_else(|| bad(format!("'{user}': sha256: needs 64 hex digits")))?
            } else if let Some(password) = rest.strip_prefix("plain:") {
                if password.is_empty() {
                    return Err(bad(format!("'{user}': empty password")));
                }
                sha256(password.as_bytes()).ok_or_else(|| {
                    bad("this oncelog was built without the `tls` feature (no SHA-256)".into())
                })?
            } else {
                return Err(bad(format!(
                    "'{user}': the password must start with 'sha256:' or 'plain:'"
                )));
            };
            if users.digests.insert(user.to_string(), digest).is_some() {
                return Err(bad(format!("user '{user}' given twice")));
            }
        }
        Ok(users)
    }

    /// Whether `user` exists with `password`. An unknown user costs the same hash and
    /// comparison as a known one.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        let Some(given) = sha256(password) else {
            return false;
        };
        let known = self.digests.get(user);
        let expected = known.copied().unwrap_or([0xa5; 32]);
        same(&given, &expected) && known.is_some()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// The user and password of a PLAIN token (RFC 4616: `[authzid] NUL authcid NUL passwd`); the
/// authorization id, if given, must be the user itself.
pub fn plain_token(token: &[u8]) -> Option<(&str, &[u8])> {
    let mut parts = token.splitn(3, |&b| b == 0);
    let (authz, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    let user = std::str::from_utf8(user).ok()?;
    if user.is_empty() || (!authz.is_empty() && authz != user.as_bytes()) {
        return None;
    }
    Some((user, password))
}

/// Where one connection is in the SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// No handshake yet (or a mechanism refused).
    Handshake,
    /// PLAIN chosen: a token comes next, as a bare frame (`raw`, after a v0 handshake) or in a
    /// SaslAuthenticate request.
    Token {
        /// After a v0 handshake.
        raw: bool,
    },
    /// Authenticated as this user.
    Done(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hashing needs the `tls` feature's SHA-256.
    #[cfg(feature = "tls")]
    #[test]
    fn users_files_parse_and_bad_lines_name_their_number() {
        let text = "# users\n\nalice:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n\
                    bob:plain:pa:ss word\n";
        let users = Users::parse(text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check("alice", b"password"));
        assert!(!users.check("alice", b"passwore"));
        assert!(users.check("bob", b"pa:ss word"));
        assert!(!users.check("bob", b"pa:ss"));
        assert!(!users.check("carol", b"password"));
        for (bad, line, needle) in [
            ("alice\n", 1, "expected USER"),
            ("ok:plain:x\n:plain:x\n", 2, "empty user"),
            ("a:sha256:abc\n", 1, "64 hex"),
            (&format!("a:sha256:{}\n", "g".repeat(64)), 1, "64 hex"),
            ("a:md5:x\n", 1, "'sha256:' or 'plain:'"),
            ("a:plain:\n", 1, "empty password"),
            ("# c\na:plain:x\na:plain:y\n", 3, "twice"),
        ] {
            let e = Users::parse(bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
            assert!(e.reason.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn plain_tokens_split_into_user_and_password() {
        assert_eq!(plain_token(b"\0alice\0pw"), Some(("alice", &b"pw"[..])));
        assert_eq!(
            plain_token(b"alice\0alice\0p\0w"),
            Some(("alice", &b"p\0w"[..]))
        );
        assert_eq!(plain_token(b"bob\0alice\0pw"), None, "acting as another");
        assert_eq!(plain_token(b"\0\0pw"), None);
        assert_eq!(plain_token(b"alice"), None);
        assert_eq!(plain_token(b""), None);
    }
}
