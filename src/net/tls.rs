//! TLS for every connection (feature `tls`, `rustls` with the `ring` provider): what one
//! process trusts and presents ([`Security`]), and the handshakes of both ends under a deadline
//! (`docs/security.md`).
//!
//! Invariants:
//! - both ends trust only the cluster CA (`tls_ca`); a server asks every client for a
//!   certificate and verifies the one it gets against that CA, but lets a client without one
//!   finish the handshake, so its requests are refused with a typed `Unauthorized` answer
//!   (`net::authorize`) instead of a dropped connection;
//! - with `tls_crl`, both ends check the peer's certificate against the revocation lists: a
//!   revoked certificate fails the handshake whichever side presents it;
//! - a client checks that the server's certificate names the member it meant to reach
//!   (`controller`, `replica-N`: [`Member::name`]), not merely that the CA signed it;
//! - a handshake is bounded by a deadline (every socket read and write is given the time
//!   left), so a peer trickling handshake bytes cannot hold a connection thread;
//! - a listener that is not a member (`oncelog serve`, [`Security::for_listener`]) trusts no
//!   cluster CA: it presents its certificate and, given a client CA, requires a client
//!   certificate signed by it (the handshake fails without one); it cannot connect;
//! - the server sends no TLS 1.3 session tickets: nothing arrives on an idle client connection,
//!   so a byte found there still means the server closed it (`frame_io::unusable`).
//!
//! Without the `tls` feature the type exists but cannot be loaded: [`Security::load`] says the
//! binary was built without TLS.
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
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cluster_file::ClusterFile;
use super::security::{CertPaths, Member};
use super::stream::NetStream;

/// The most read from a PEM file (a certificate chain or key is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// What one process trusts (the cluster CA) and presents (its certificate, if any). Cheap to
/// clone.
#[derive(Clone)]
pub struct Security {
    /// `None` for a listener's material ([`Security::for_listener`]), which connects nowhere.
    #[cfg(feature = "tls")]
    client: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Only with a certificate to serve with.
    #[cfg(feature = "tls")]
    server: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The certificate file presented, for messages.
    identity: Option<PathBuf>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Why TLS material could not be loaded.
#[derive(Debug)]
pub struct SecurityError {
    /// The file at fault, if one is.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

impl SecurityError {
    fn new(path: Option<&Path>, message: impl Into<String>) -> Self {
        SecurityError {
            path: path.map(Path::to_path_buf),
            message: message.into(),
        }
    }
}

impl fmt::Display for SecurityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SecurityError {}

impl Security {
    /// The material of `member` of `cluster`: its `tls_cert` line, or `identity` when given
    /// (a command-line override). Errors when the cluster file has no `tls_ca` or no
    /// certificate for the member.
    pub fn for_member(
        cluster: &ClusterFile,
        member: Member,
        identity: Option<&CertPaths>,
    ) -> Result<Security, SecurityError> {
        let ca = cluster.tls.ca.as_deref().ok_or_else(|| {
            SecurityError::new(None, "the cluster file has no 'tls_ca': security is off")
        })?;
        let identity = identity
            .or_else(|| cluster.tls.certs.get(&member))
            .ok_or_else(|| {
                SecurityError::new(
                    None,
                    format!(
                        "no certificate for {member}: add 'tls_cert {} CERT KEY' to the cluster \
                     file or pass --cert and --key",
                        match member {
                            Member::Controller => "controller".to_string(),
                            Member::Replica(r) => r.to_string(),
                        }
                    ),
                )
            })?;
        Security::load_with_crl(ca, cluster.tls.crl.as_deref(), Some(identity))
    }

    /// The material of a client of `cluster` presenting `identity` (if any); `None` when the
    /// cluster file turns security off.
    pub fn for_client(
        cluster: &ClusterFile,
        identity: Option<&CertPaths>,
    ) -> Result<Option<Security>, SecurityError> {
        match &cluster.tls.ca {
            None => Ok(None),
            Some(ca) => Security::load_with_crl(ca, cluster.tls.crl.as_deref(), identity).map(Some),
        }
    }

    /// Trusts the CA certificates in `ca` (PEM) and presents the chain and key of `identity`
    /// (PEM), if given.
    pub fn load(ca: &Path, identity: Option<&CertPaths>) -> Result<Security, SecurityError> {
        imp::load(ca, None, identity)
    }

    /// [`Security::load`], also checking every peer certificate against the revocation lists
    /// in `crl` (PEM `X509 CRL` blocks, the cluster file's `tls_crl`): a revoked certificate
    /// fails the handshake on either side, and so does one whose issuer has no list in the file.
    pub fn load_with_crl(
        ca: &Path,
        crl: Option<&Path>,
        identity: Option<&CertPaths>,
    ) -> Result<Security, SecurityError> {
        imp::load(ca, crl, identity)
    }

    /// The material of a listener that is not a cluster member (`oncelog serve`): it presents
    /// `identity` (PEM chain and key) to every client. With `client_ca`, every client must
    /// present a certificate signed by a CA in that file (mutual TLS; a client without one
    /// fails the handshake); without it, no client certificate is asked for. Such material
    /// serves only: it cannot connect.
    pub fn for_listener(
        identity: &CertPaths,
        client_ca: Option<&Path>,
    ) -> Result<Security, SecurityError> {
        imp::for_listener(identity, client_ca)
    }

    /// Whether this material can serve (it has a certificate).
    pub fn can_serve(&self) -> bool {
        self.identity.is_some()
    }
}

/// Reads a PEM file, at most [`MAX_PEM_BYTES`].
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn read_pem(path: &Path) -> Result<Vec<u8>, SecurityError> {
    crate::io::read_bounded(path, MAX_PEM_BYTES).map_err(|e| {
        SecurityError::new(
            Some(path),
            match e {
                crate::io::BoundedReadError::TooLarge { limit } => {
                    format!("larger than {limit} bytes: not a PEM file")
                }
                crate::io::BoundedReadError::Io(e) => format!("cannot read: {e}"),
            },
        )
    })
}

#[cfg(not(feature = "tls"))]
mod imp {
    use super::*;

    pub(super) fn load(
        _: &Path,
        _: Option<&Path>,
        _: Option<&CertPaths>,
    ) -> Result<Security, SecurityError> {
        Err(SecurityError::new(
            None,
            "this oncelog was built without TLS (cargo feature `tls`)",
        ))
    }

    pub(super) fn for_listener(_: &CertPaths, _: Option<&Path>) -> Result<Security, SecurityError> {
        load(Path::new(""), None, None)
    }

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "built without TLS")
    }

    impl Security {
        pub(crate) fn connect(&self, _: TcpStream, _: Member, _: Instant) -> io::Result<NetStream> {
            Err(unsupported())
        }

        pub(crate) fn accept(
            &self,
            _: TcpStream,
            _: Instant,
        ) -> io::Result<(NetStream, Vec<String>)> {
            Err(unsupported())
        }

        pub(crate) fn accept_named(
            &self,
            _: TcpStream,
            _: Instant,
        ) -> io::Result<(NetStream, Option<String>)> {
            Err(unsupported())
        }
    }
}

#[cfg(feature = "tls")]
mod imp {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    /// The `ring` provider: its C and assembly build with the system C compiler alone
    /// (aws-lc-rs needs cmake). rustls 0.23.48 deprecates it for lacking post-quantum key
    /// exchange (X25519MLKEM768), which only aws-lc-rs offers; `docs/security.md` says so.
    #[allow(deprecated)]
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
        let pem = read_pem(path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SecurityError::new(Some(path), format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(SecurityError::new(Some(path), "no CERTIFICATE in the file"));
        }
        Ok(certs)
    }

    fn key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
        let pem = read_pem(path)?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| SecurityError::new(Some(path), format!("no private key: {e}")))
    }

    fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, SecurityError> {
        let pem = read_pem(path)?;
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SecurityError::new(Some(path), format!("bad PEM: {e}")))?;
        if crls.is_empty() {
            return Err(SecurityError::new(Some(path), "no X509 CRL in the file"));
        }
        Ok(crls)
    }

    pub(super) fn load(
        ca: &Path,
        crl: Option<&Path>,
        identity: Option<&CertPaths>,
    ) -> Result<Security, SecurityError> {
        let mut roots = RootCertStore::empty();
        for c in certs(ca)? {
            roots
                .add(c)
                .map_err(|e| SecurityError::new(Some(ca), format!("not a CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let crls = crl.map(crls).transpose()?.unwrap_or_default();
        // A list that does not parse as a CRL is refused here, not at the first handshake.
        let crl_err = |e: &dyn fmt::Display| SecurityError::new(crl.or(Some(ca)), e.to_string());
        let rustls_err = |p: &Path, e: rustls::Error| SecurityError::new(Some(p), e.to_string());
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
                .with_crls(crls.clone())
                .build()
                .map_err(|e| crl_err(&e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| rustls_err(ca, e))?
            .with_webpki_verifier(server_verifier);
        let Some(id) = identity else {
            return Ok(Security {
                client: Some(Arc::new(client.with_no_client_auth())),
                server: None,
                identity: None,
            });
        };
        let chain = certs(&id.cert)?;
        let key = key(&id.key)?;
        let client = client
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| rustls_err(&id.key, e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .with_crls(crls)
            .allow_unauthenticated()
            .build()
            .map_err(|e| crl_err(&e))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| rustls_err(ca, e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| rustls_err(&id.key, e))?;
        server.send_tls13_tickets = 0;
        Ok(Security {
            client: Some(Arc::new(client)),
            server: Some(Arc::new(server)),
            identity: Some(id.cert.clone()),
        })
    }

    pub(super) fn for_listener(
        id: &CertPaths,
        client_ca: Option<&Path>,
    ) -> Result<Security, SecurityError> {
        let chain = certs(&id.cert)?;
        let key = key(&id.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::new(Some(&id.cert), e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca)? {
                    roots.add(c).map_err(|e| {
                        SecurityError::new(Some(ca), format!("not a CA certificate: {e}"))
                    })?;
                }
                // No `allow_unauthenticated`: a client without a certificate fails the
                // handshake.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| SecurityError::new(Some(ca), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| SecurityError::new(Some(&id.key), e.to_string()))?;
        server.send_tls13_tickets = 0;
        Ok(Security {
            client: None,
            server: Some(Arc::new(server)),
            identity: Some(id.cert.clone()),
        })
    }

    /// The time left before `deadline`, or `TimedOut`.
    fn left(deadline: Instant) -> io::Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }

    /// Runs the handshake of `conn` over `tcp` before `deadline`. A TLS failure (bad
    /// certificate, alert) is `InvalidData` carrying the rustls error; the alert for it is sent
    /// to the peer when possible.
    fn handshake<S: rustls::SideData>(
        conn: &mut rustls::ConnectionCommon<S>,
        tcp: &mut TcpStream,
        deadline: Instant,
    ) -> io::Result<()> {
        let timeout = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
            _ => e,
        };
        while conn.is_handshaking() || conn.wants_write() {
            if conn.wants_write() {
                tcp.set_write_timeout(Some(left(deadline)?))?;
                conn.write_tls(tcp).map_err(timeout)?;
                continue;
            }
            tcp.set_read_timeout(Some(left(deadline)?))?;
            if conn.read_tls(tcp).map_err(timeout)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (the alert is queued), as far as the deadline allows.
                while conn.wants_write() {
                    let Ok(t) = left(deadline) else { break };
                    if tcp.set_write_timeout(Some(t)).is_err() || conn.write_tls(tcp).is_err() {
                        break;
                    }
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }

    impl Security {
        /// The client end of a TLS connection to `server` over `tcp`, handshaken before
        /// `deadline`.
        pub(crate) fn connect(
            &self,
            mut tcp: TcpStream,
            server: Member,
            deadline: Instant,
        ) -> io::Result<NetStream> {
            let name = ServerName::try_from(server.name())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let client = self.client.as_ref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "listener material cannot connect",
                )
            })?;
            let mut conn = ClientConnection::new(Arc::clone(client), name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            handshake(&mut conn, &mut tcp, deadline)?;
            Ok(NetStream::TlsClient(Box::new(rustls::StreamOwned::new(
                conn, tcp,
            ))))
        }

        /// The server end of a TLS connection over `tcp`, handshaken before `deadline`.
        fn handshaken(
            &self,
            mut tcp: TcpStream,
            deadline: Instant,
        ) -> io::Result<(ServerConnection, TcpStream)> {
            let config = self.server.as_ref().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no certificate to serve with")
            })?;
            let mut conn = ServerConnection::new(Arc::clone(config))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            handshake(&mut conn, &mut tcp, deadline)?;
            Ok((conn, tcp))
        }

        /// The server end of a TLS connection over `tcp`, handshaken before `deadline`, and
        /// the DNS names of the client's verified certificate (empty: it presented none).
        pub(crate) fn accept(
            &self,
            tcp: TcpStream,
            deadline: Instant,
        ) -> io::Result<(NetStream, Vec<String>)> {
            let (conn, tcp) = self.handshaken(tcp, deadline)?;
            let names = dns_names(&conn);
            Ok((
                NetStream::TlsServer(Box::new(rustls::StreamOwned::new(conn, tcp))),
                names,
            ))
        }

        /// [`Security::accept`] for a listener that names a client by one name (`oncelog
        /// serve`): the first DNS name of its verified certificate, else the certificate's
        /// subject common name; `None` when it presented none.
        pub(crate) fn accept_named(
            &self,
            tcp: TcpStream,
            deadline: Instant,
        ) -> io::Result<(NetStream, Option<String>)> {
            let (conn, tcp) = self.handshaken(tcp, deadline)?;
            let name = dns_names(&conn).into_iter().next().or_else(|| {
                conn.peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::net::cert_name::subject_common_name(leaf))
            });
            Ok((
                NetStream::TlsServer(Box::new(rustls::StreamOwned::new(conn, tcp))),
                name,
            ))
        }
    }

    /// The DNS names of the peer's verified certificate (empty: it presented none).
    fn dns_names(conn: &ServerConnection) -> Vec<String> {
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
            .map(|leaf| leaf.valid_dns_names().map(str::to_string).collect())
            .unwrap_or_default()
    }
}
