//! The subject common name (CN) of a DER certificate, for a listener whose clients are named
//! by their certificate (`oncelog serve --tls-client-ca`) when it carries no DNS subject
//! alternative name. `rustls-webpki` reads only the alternative names, so this walks the few
//! DER elements in front of the subject; anything that does not parse is `None`, never a
//! panic. Only a certificate the handshake already verified is read.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

/// One DER element: (tag, contents, what follows it).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The first common name of the subject of the DER certificate `cert`, if it has one as a
/// UTF8String, PrintableString or IA5String.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = tlv(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (tag, set, next) = tlv(subject)?;
        subject = next;
        if tag != SET {
            return None;
        }
        let (SEQUENCE, attr, _) = tlv(set)? else {
            return None;
        };
        let (OID, oid, value) = tlv(attr)? else {
            return None;
        };
        if oid == COMMON_NAME {
            let (kind, text, _) = tlv(value)?;
            return match kind {
                0x0c | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_common_name_is_found_and_garbage_is_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "the issuer");
        let ca = ca_params.self_signed(&key).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "org");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "carol");
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = p.signed_by(&leaf_key, &ca, &key).unwrap();
        assert_eq!(subject_common_name(leaf.der()), Some("carol".into()));
        assert_eq!(subject_common_name(ca.der()), Some("the issuer".into()));
        let mut no_cn = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        no_cn.distinguished_name = rcgen::DistinguishedName::new();
        let no_cn = no_cn.self_signed(&leaf_key).unwrap();
        assert_eq!(subject_common_name(no_cn.der()), None);
        let der = leaf.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject_common_name(&der[..cut]);
        }
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
