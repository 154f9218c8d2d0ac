//! Certificates made at run time with `rcgen` for the tests of the secured TCP service
//! (`docs/security.md`): a cluster CA issuing the controller's and three replicas' member
//! certificates and the clients `alice` (produce, read), `ops` (admin) and `mallory` (signed by
//! the CA, granted nothing), and a rogue CA's `replica-3`. No key material is committed and
//! nothing expires. [`security_lines`] are the cluster-file lines that use them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use oncelog::net::{CertPaths, ClusterFile, Security};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams,
    CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    RevocationReason, RevokedCertParams, SerialNumber,
};

/// The security lines of a cluster file beside the `certs/` directory [`Pki::new`] writes:
/// the CA, every member's certificate (the controller's is shared by every controller
/// address) and the ACL (`alice`: produce and read; `ops`: admin).
pub fn security_lines() -> String {
    let mut s = String::from("tls_ca certs/ca.pem\n");
    s.push_str("tls_cert controller certs/controller.pem certs/controller.key\n");
    for id in 1..=3 {
        s.push_str(&format!(
            "tls_cert {id} certs/replica-{id}.pem certs/replica-{id}.key\n"
        ));
    }
    s.push_str("allow alice produce,read\nallow ops admin\n");
    s
}

/// A CA that writes the certificates it issues into a directory.
pub struct Ca {
    dir: PathBuf,
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate naming `name` (DNS subject alternative name), for both ends of TLS.
    pub fn issue(&self, name: &str) -> CertPaths {
        self.issue_as(name, None, name)
    }

    /// A certificate naming `name` with serial number `serial` (random when `None`), written
    /// to `<stem>.pem` and `<stem>.key`.
    pub fn issue_as(&self, name: &str, serial: Option<u64>, stem: &str) -> CertPaths {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.serial_number = serial.map(SerialNumber::from);
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let paths = CertPaths {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }
}

impl Ca {
    /// A client certificate naming `cn` only as its subject common name (no subject
    /// alternative name), written to `<cn>.pem` and `<cn>.key`.
    pub fn issue_common_name_only(&self, cn: &str) -> CertPaths {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let paths = CertPaths {
            cert: self.dir.join(format!("{cn}.pem")),
            key: self.dir.join(format!("{cn}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    /// Writes `crl.pem`: a revocation list signed by this CA naming the `revoked` serials.
    pub fn revoke(&self, revoked: &[u64]) -> PathBuf {
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2090, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap();
        let path = self.dir.join("crl.pem");
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }
}

/// The certificates of one test: the cluster's and a rogue CA's.
pub struct Pki {
    pub ca: Ca,
    pub alice: CertPaths,
    pub ops: CertPaths,
    pub mallory: CertPaths,
    pub rogue_ca: Ca,
    pub rogue_replica_3: CertPaths,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new(&dir.join("certs"), "oncelog test cluster CA");
        for name in ["controller", "replica-1", "replica-2", "replica-3"] {
            ca.issue(name);
        }
        let rogue_ca = Ca::new(&dir.join("rogue"), "someone else's CA");
        Pki {
            alice: ca.issue("alice"),
            ops: ca.issue("ops"),
            mallory: ca.issue("mallory"),
            rogue_replica_3: rogue_ca.issue("replica-3"),
            ca,
            rogue_ca,
        }
    }

    /// The client side of `cluster`'s TLS, presenting `who` (or no certificate).
    pub fn client(&self, cluster: &ClusterFile, who: Option<&CertPaths>) -> Security {
        Security::for_client(cluster, who)
            .unwrap()
            .expect("the cluster file turns security on")
    }
}
