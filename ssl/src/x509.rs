//! Certificates as Amanda's ssl auth uses them: the peer's certificate must be signed
//! directly by a certificate of the CA file (OpenSSL's verify depth 1), be within its
//! validity period, and name a host in its subject's CN.
//!
//! amssl makes X.509 **version 1** certificates (no extensions) with 1024-bit RSA keys,
//! signed sha256WithRSAEncryption, and gives every certificate serial 1. webpki accepts
//! neither v1 certificates nor RSA keys under 2048 bits, so the chain check and the
//! signature checks are here: DER parsing by `x509-cert` (RustCrypto), RSA verification by
//! the `rsa` crate (public-key operations only, so its timing does not matter), ECDSA and
//! Ed25519 by `ring`. RSA keys under 1024 bits are refused.
//!
//! What this module must not do: I/O, or decide anything about names (see [`crate::check`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use der::{Decode, Reader, SliceReader};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use rustls::SignatureScheme;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::der;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// The smallest RSA modulus accepted: what amssl makes. Anything smaller is breakable.
pub const MIN_RSA_BITS: usize = 1024;

mod oid {
    use x509_cert::der::asn1::ObjectIdentifier as Oid;
    pub const CN: Oid = Oid::new_unwrap("2.5.4.3");
    pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const SHA1_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    pub const SHA256_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
}

/// Why a certificate or a signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
    #[error(
        "the certificate's key ({0}) is not one amanda-rs can use (RSA of 1024 bits or more, ECDSA P-256/P-384, Ed25519)"
    )]
    UnsupportedKey(String),
    #[error("RSA key of {0} bits: fewer than {MIN_RSA_BITS} bits are refused")]
    RsaTooSmall(usize),
    #[error("signature algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("bad signature")]
    BadSignature,
    #[error("{subject} is issued by {issuer}, which is not a CA of the CA file")]
    UnknownIssuer { subject: String, issuer: String },
    #[error(
        "{subject} names {issuer} as its issuer, but its signature does not verify with that CA's key (a different CA with the same name?)"
    )]
    NotSignedByCa { subject: String, issuer: String },
    #[error("{subject} is not valid before {not_before} (the clock says {now})")]
    NotYetValid {
        subject: String,
        not_before: String,
        now: String,
    },
    #[error("{subject} expired on {not_after} (the clock says {now})")]
    Expired {
        subject: String,
        not_after: String,
        now: String,
    },
    #[error("{subject} is not allowed to sign certificates (basicConstraints/keyUsage)")]
    NotACa { subject: String },
}

/// A parsed certificate.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    cert: Certificate,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

impl Cert {
    /// Parses DER.
    pub fn parse(der: &[u8]) -> Result<Cert, CertError> {
        let cert = Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
        Ok(Cert {
            der: der.to_vec(),
            cert,
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject, as OpenSSL's one-line form reads (`C=XX, ..., CN=host`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The issuer.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    /// The first CN of the subject (what OpenSSL's `X509_NAME_get_index_by_NID` finds),
    /// `None` if there is none or it is not text.
    pub fn common_name(&self) -> Option<String> {
        for rdn in self.cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == oid::CN {
                    return String::from_utf8(atv.value.value().to_vec()).ok();
                }
            }
        }
        None
    }

    fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.cert.tbs_certificate.subject_public_key_info
    }

    /// The public key, checked for a kind and size we accept.
    pub fn public_key(&self) -> Result<PublicKey, CertError> {
        PublicKey::from_spki(self.spki())
    }

    /// `not_before <= now <= not_after`.
    pub fn check_time(&self, now: SystemTime) -> Result<(), CertError> {
        let v = &self.cert.tbs_certificate.validity;
        let nb = v.not_before.to_system_time();
        let na = v.not_after.to_system_time();
        let show = |t: SystemTime| fmt_time(t);
        if now < nb {
            return Err(CertError::NotYetValid {
                subject: self.subject(),
                not_before: show(nb),
                now: show(now),
            });
        }
        if now > na {
            return Err(CertError::Expired {
                subject: self.subject(),
                not_after: show(na),
                now: show(now),
            });
        }
        Ok(())
    }

    /// False when a v3 certificate says it may not sign certificates (basicConstraints
    /// `CA:FALSE`, or a keyUsage without keyCertSign). A v1 certificate (amssl's CA) has no
    /// extensions and may, as OpenSSL treats a self-signed v1 root.
    pub fn may_sign_certificates(&self) -> bool {
        let Some(exts) = &self.cert.tbs_certificate.extensions else {
            return true;
        };
        for e in exts {
            if e.extn_id == oid::BASIC_CONSTRAINTS {
                match x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()) {
                    Ok(bc) if bc.ca => {}
                    _ => return false,
                }
            }
            if e.extn_id == oid::KEY_USAGE {
                match x509_cert::ext::pkix::KeyUsage::from_der(e.extn_value.as_bytes()) {
                    Ok(ku) if ku.key_cert_sign() => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Whether `issuer`'s subject is this certificate's issuer name.
    fn named_issuer_is(&self, issuer: &Cert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    /// Checks that `issuer` signed this certificate.
    pub fn verify_signed_by(&self, issuer: &Cert) -> Result<(), CertError> {
        let tbs = tbs_bytes(&self.der)?;
        // RFC 5280 4.1.1.2: the algorithm outside must be the one inside the signed part
        // (OpenSSL: "certificate signature algorithm mismatch").
        if self.cert.signature_algorithm != self.cert.tbs_certificate.signature {
            return Err(CertError::BadSignature);
        }
        let alg = &self.cert.signature_algorithm.oid;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or(CertError::BadSignature)?;
        let key = issuer.public_key()?;
        let scheme = match *alg {
            a if a == oid::SHA1_RSA => SignatureScheme::RSA_PKCS1_SHA1,
            a if a == oid::SHA256_RSA => SignatureScheme::RSA_PKCS1_SHA256,
            a if a == oid::SHA384_RSA => SignatureScheme::RSA_PKCS1_SHA384,
            a if a == oid::SHA512_RSA => SignatureScheme::RSA_PKCS1_SHA512,
            a if a == oid::ECDSA_SHA256 => match key {
                PublicKey::P384(_) => return Err(CertError::UnsupportedAlgorithm(a.to_string())),
                _ => SignatureScheme::ECDSA_NISTP256_SHA256,
            },
            a if a == oid::ECDSA_SHA384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            a if a == oid::ED25519 => SignatureScheme::ED25519,
            a => return Err(CertError::UnsupportedAlgorithm(a.to_string())),
        };
        key.verify(scheme, tbs, sig)
    }
}

/// Checks that `peer` is signed directly by one of `cas` (depth 1) and that both are
/// within their validity at `now`. Returns the CA that signed it.
pub fn verify_chain<'a>(
    peer: &Cert,
    cas: &'a [Cert],
    now: SystemTime,
) -> Result<&'a Cert, CertError> {
    let named: Vec<&Cert> = cas.iter().filter(|ca| peer.named_issuer_is(ca)).collect();
    if named.is_empty() {
        return Err(CertError::UnknownIssuer {
            subject: peer.subject(),
            issuer: peer.issuer(),
        });
    }
    let mut last = None;
    for ca in named {
        match peer.verify_signed_by(ca) {
            Ok(()) => {
                if !ca.may_sign_certificates() {
                    return Err(CertError::NotACa {
                        subject: ca.subject(),
                    });
                }
                ca.check_time(now)?;
                peer.check_time(now)?;
                return Ok(ca);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(CertError::BadSignature) | None => CertError::NotSignedByCa {
            subject: peer.subject(),
            issuer: peer.issuer(),
        },
        Some(e) => e,
    })
}

/// The raw bytes of the `tbsCertificate` (what the issuer signed), as they are in `der`.
fn tbs_bytes(der: &[u8]) -> Result<&[u8], CertError> {
    let bad = |e: der::Error| CertError::Malformed(e.to_string());
    let mut r = SliceReader::new(der).map_err(bad)?;
    let header = der::Header::decode(&mut r).map_err(bad)?;
    header.tag.assert_eq(der::Tag::Sequence).map_err(bad)?;
    r.tlv_bytes().map_err(bad)
}

/// A public key we can verify with.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, CertError> {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| CertError::UnsupportedKey("unaligned key bits".into()))?;
        let alg = spki.algorithm.oid;
        if alg == oid::RSA {
            let key = RsaPublicKey::from_pkcs1_der(bits)
                .map_err(|e| CertError::UnsupportedKey(format!("RSA: {e}")))?;
            let size = key.n().bits();
            if size < MIN_RSA_BITS {
                return Err(CertError::RsaTooSmall(size));
            }
            return Ok(PublicKey::Rsa(key));
        }
        if alg == oid::EC {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
            return match curve {
                Some(c) if c == oid::P256 => Ok(PublicKey::P256(bits.to_vec())),
                Some(c) if c == oid::P384 => Ok(PublicKey::P384(bits.to_vec())),
                other => Err(CertError::UnsupportedKey(format!(
                    "EC curve {}",
                    other.map_or_else(|| "?".to_string(), |o| o.to_string())
                ))),
            };
        }
        if alg == oid::ED25519 {
            return Ok(PublicKey::Ed25519(bits.to_vec()));
        }
        Err(CertError::UnsupportedKey(alg.to_string()))
    }

    /// The TLS signature schemes this key can verify (for `supported_verify_schemes`).
    pub fn schemes(&self) -> &'static [SignatureScheme] {
        match self {
            PublicKey::Rsa(_) => RSA_SCHEMES,
            PublicKey::P256(_) => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            PublicKey::P384(_) => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            PublicKey::Ed25519(_) => &[SignatureScheme::ED25519],
        }
    }

    /// Verifies `sig` over `msg` with `scheme`.
    pub fn verify(&self, scheme: SignatureScheme, msg: &[u8], sig: &[u8]) -> Result<(), CertError> {
        use SignatureScheme as S;
        let unsupported = || CertError::UnsupportedAlgorithm(format!("{scheme:?} for this key"));
        match self {
            PublicKey::Rsa(key) => {
                let ok = match scheme {
                    S::RSA_PKCS1_SHA1 => {
                        key.verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(msg), sig)
                    }
                    S::RSA_PKCS1_SHA256 => {
                        key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig)
                    }
                    S::RSA_PKCS1_SHA384 => {
                        key.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg), sig)
                    }
                    S::RSA_PKCS1_SHA512 => {
                        key.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg), sig)
                    }
                    S::RSA_PSS_SHA256 => pss_verify::<Sha256>(key, msg, sig),
                    S::RSA_PSS_SHA384 => pss_verify::<Sha384>(key, msg, sig),
                    S::RSA_PSS_SHA512 => pss_verify::<Sha512>(key, msg, sig),
                    _ => return Err(unsupported()),
                };
                ok.map_err(|_| CertError::BadSignature)
            }
            PublicKey::P256(bits) | PublicKey::P384(bits) | PublicKey::Ed25519(bits) => {
                let alg: &dyn ring::signature::VerificationAlgorithm = match (self, scheme) {
                    (PublicKey::P256(_), S::ECDSA_NISTP256_SHA256) => {
                        &ring::signature::ECDSA_P256_SHA256_ASN1
                    }
                    (PublicKey::P384(_), S::ECDSA_NISTP384_SHA384) => {
                        &ring::signature::ECDSA_P384_SHA384_ASN1
                    }
                    (PublicKey::Ed25519(_), S::ED25519) => &ring::signature::ED25519,
                    _ => return Err(unsupported()),
                };
                ring::signature::UnparsedPublicKey::new(alg, bits)
                    .verify(msg, sig)
                    .map_err(|_| CertError::BadSignature)
            }
        }
    }
}

/// The RSA schemes we verify, PSS first (TLS 1.3 allows only those).
const RSA_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA1,
];

/// Every scheme any accepted key can verify.
pub const ALL_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA1,
];

fn pss_verify<D>(key: &RsaPublicKey, msg: &[u8], sig: &[u8]) -> rsa::Result<()>
where
    D: 'static + Digest + sha2::digest::DynDigest + Send + Sync,
{
    // TLS uses a salt as long as the hash (RFC 8446 4.2.3).
    key.verify(rsa::Pss::new::<D>(), &D::digest(msg), sig)
}

/// `2026-12-03 15:12:39 UTC`.
pub fn fmt_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match der::DateTime::from_unix_duration(Duration::from_secs(secs)) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}

/// The DER of a certificate, re-encoded (for tests that build certificates).
#[cfg(test)]
pub(crate) fn reencode(c: &Cert) -> Vec<u8> {
    use der::Encode;
    c.cert.to_der().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem;

    pub(crate) fn load(rel: &str) -> Cert {
        let path = format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read(&path).unwrap();
        Cert::parse(&pem::certificates(&text).unwrap()[0]).unwrap()
    }

    fn now() -> SystemTime {
        // Inside the validity of the test certificates (made on 2026-12-03, for 10 years).
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_830_000_000)
    }

    #[test]
    fn amssl_certificates_are_v1_1024_bit_and_chain_to_their_ca() {
        let ca = load("main/ca.pem");
        let client = load("main/client/crt.pem");
        let server = load("main/server/crt.pem");
        assert_eq!(client.common_name().as_deref(), Some("127.0.0.1"));
        assert_eq!(server.common_name().as_deref(), Some("localhost"));
        assert!(matches!(client.public_key(), Ok(PublicKey::Rsa(_))));
        assert!(ca.may_sign_certificates());
        for c in [&client, &server] {
            let found = verify_chain(c, std::slice::from_ref(&ca), now()).unwrap();
            assert_eq!(found.subject(), ca.subject());
        }
        assert_eq!(reencode(&client), client.der());
    }

    #[test]
    fn another_ca_is_refused_by_name_and_a_same_name_ca_by_signature() {
        let ca = load("main/ca.pem");
        let other = load("other/client/crt.pem");
        let same = load("same/client/crt.pem");
        let e = verify_chain(&other, std::slice::from_ref(&ca), now()).unwrap_err();
        assert!(matches!(e, CertError::UnknownIssuer { .. }), "{e}");
        assert!(e.to_string().contains("CN=amanda-other-ca"), "{e}");
        let e = verify_chain(&same, std::slice::from_ref(&ca), now()).unwrap_err();
        assert!(matches!(e, CertError::NotSignedByCa { .. }), "{e}");
        // With both CAs in the file, the right one is found.
        let cas = [load("same/ca.pem"), ca];
        assert!(verify_chain(&same, &cas, now()).is_ok());
    }

    #[test]
    fn validity_is_checked_on_both_certificates() {
        let ca = load("main/ca.pem");
        let client = load("main/client/crt.pem");
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(2_200_000_000);
        let cas = std::slice::from_ref(&ca);
        assert!(matches!(
            verify_chain(&client, cas, before),
            Err(CertError::NotYetValid { .. })
        ));
        let e = verify_chain(&client, cas, after).unwrap_err();
        assert!(matches!(e, CertError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("2036-"), "{e}");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            Cert::parse(b"\x30\x03\x02\x01"),
            Err(CertError::Malformed(_))
        ));
        assert!(matches!(tbs_bytes(b""), Err(CertError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(c) = Cert::parse(&bytes) {
                let _ = c.common_name();
                let _ = c.public_key();
                let _ = c.verify_signed_by(&c);
            }
        }

        #[test]
        fn a_flipped_bit_breaks_the_chain(pos in 0usize..600) {
            let ca = load("main/ca.pem");
            let client = load("main/client/crt.pem");
            let mut der = client.der().to_vec();
            let pos = pos % der.len();
            der[pos] ^= 0x01;
            if let Ok(c) = Cert::parse(&der) {
                // Either the certificate is still the same (a bit in a part nobody reads
                // would still change the signed bytes) or the chain fails.
                proptest::prop_assert!(verify_chain(&c, std::slice::from_ref(&ca), now()).is_err());
            }
        }
    }
}
