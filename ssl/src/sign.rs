//! Our own private key, as a rustls signing key.
//!
//! Keys ring accepts (RSA of 2048 bits or more, ECDSA, Ed25519) use ring's constant-time
//! code through rustls's ring provider. amssl's 1024-bit RSA keys, which ring refuses, sign
//! with the pure-Rust `rsa` crate (blinded; RSASSA-PSS for TLS 1.3, PKCS#1 v1.5 for TLS
//! 1.2). RSA keys under 1024 bits are refused.
//!
//! What this module must not do: read files.

use std::sync::Arc;

use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::{Sha256, Sha384, Sha512};

use crate::x509::MIN_RSA_BITS;

/// Why a private key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key of {0} bits: fewer than {MIN_RSA_BITS} bits are refused")]
    RsaTooSmall(usize),
    #[error("not a usable private key: {0}")]
    Unusable(String),
}

/// Loads `key` for signing: ring where it can, else (small RSA) the `rsa` crate.
pub fn load(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, KeyError> {
    let ring_err = match rustls::crypto::ring::sign::any_supported_type(key) {
        Ok(k) => return Ok(k),
        Err(e) => e.to_string(),
    };
    let rsa = match key {
        PrivateKeyDer::Pkcs8(k) => RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der()).ok(),
        PrivateKeyDer::Pkcs1(k) => RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der()).ok(),
        _ => None,
    };
    let Some(rsa) = rsa else {
        return Err(KeyError::Unusable(ring_err));
    };
    let bits = rsa.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall(bits));
    }
    Ok(Arc::new(SmallRsaKey {
        key: Secret(rsa),
        bits,
    }))
}

/// A private key, which `Debug` does not show.
#[derive(Clone)]
struct Secret(RsaPrivateKey);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

/// An RSA key ring refuses for its size.
#[derive(Debug)]
struct SmallRsaKey {
    key: Secret,
    bits: usize,
}

impl SmallRsaKey {
    /// Schemes in our order of preference that fit the modulus (PSS with SHA-512 needs
    /// 2 * 64 + 2 bytes, more than a 1024-bit key has).
    fn schemes(&self) -> impl Iterator<Item = SignatureScheme> + '_ {
        let bytes = self.bits.div_ceil(8);
        [
            (SignatureScheme::RSA_PSS_SHA256, 32),
            (SignatureScheme::RSA_PSS_SHA384, 48),
            (SignatureScheme::RSA_PSS_SHA512, 64),
            (SignatureScheme::RSA_PKCS1_SHA256, 0),
            (SignatureScheme::RSA_PKCS1_SHA384, 0),
            (SignatureScheme::RSA_PKCS1_SHA512, 0),
        ]
        .into_iter()
        .filter(move |(_, h)| *h == 0 || 2 * h + 2 <= bytes)
        .map(|(s, _)| s)
    }
}

impl SigningKey for SmallRsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.schemes().find(|s| offered.contains(s))?;
        Some(Box::new(SmallRsaSigner {
            key: self.key.clone(),
            scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct SmallRsaSigner {
    key: Secret,
    scheme: SignatureScheme,
}

/// Signs `message` with `key` (blinded, fresh randomness from the OS).
fn sign_with<S: SignatureEncoding>(
    key: impl RandomizedSigner<S>,
    message: &[u8],
) -> Result<Vec<u8>, rsa::signature::Error> {
    key.try_sign_with_rng(&mut OsRng, message)
        .map(|s| s.to_vec())
}

impl Signer for SmallRsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        use rsa::pkcs1v15::SigningKey as Pkcs1;
        use rsa::pss::BlindedSigningKey as Pss;
        let k = self.key.0.clone();
        let sig = match self.scheme {
            SignatureScheme::RSA_PSS_SHA256 => sign_with(Pss::<Sha256>::new(k), message),
            SignatureScheme::RSA_PSS_SHA384 => sign_with(Pss::<Sha384>::new(k), message),
            SignatureScheme::RSA_PSS_SHA512 => sign_with(Pss::<Sha512>::new(k), message),
            SignatureScheme::RSA_PKCS1_SHA256 => sign_with(Pkcs1::<Sha256>::new(k), message),
            SignatureScheme::RSA_PKCS1_SHA384 => sign_with(Pkcs1::<Sha384>::new(k), message),
            SignatureScheme::RSA_PKCS1_SHA512 => sign_with(Pkcs1::<Sha512>::new(k), message),
            other => return Err(rustls::Error::General(format!("{other:?} not supported"))),
        };
        sig.map_err(|e| rustls::Error::General(format!("RSA signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem;
    use crate::x509::Cert;

    #[test]
    fn an_amssl_1024_bit_key_signs_what_its_certificate_verifies() {
        let key = pem::private_key(include_bytes!("../testdata/main/server/key.pem")).unwrap();
        let cert = Cert::parse(
            &pem::certificates(include_bytes!("../testdata/main/server/crt.pem")).unwrap()[0],
        )
        .unwrap();
        let k = load(&key).unwrap();
        let public = cert.public_key().unwrap();
        let offered = [
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ];
        let signer = k.choose_scheme(&offered).unwrap();
        // SHA-512 PSS does not fit 1024 bits; SHA-384 does.
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA384);
        let sig = signer.sign(b"hello").unwrap();
        public.verify(signer.scheme(), b"hello", &sig).unwrap();
        assert!(public.verify(signer.scheme(), b"hellO", &sig).is_err());
        let signer = k
            .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
            .unwrap();
        let sig = signer.sign(b"m").unwrap();
        public
            .verify(SignatureScheme::RSA_PKCS1_SHA256, b"m", &sig)
            .unwrap();
        assert!(k.choose_scheme(&[SignatureScheme::ED25519]).is_none());
    }
}
