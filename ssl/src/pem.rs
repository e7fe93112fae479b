//! PEM files as amssl and OpenSSL write them: certificates (`BEGIN CERTIFICATE`, possibly
//! several in one file, e.g. a CA file) and private keys (PKCS#8 `BEGIN PRIVATE KEY`, which
//! OpenSSL 3's `genrsa` writes; PKCS#1 `BEGIN RSA PRIVATE KEY`; SEC1 `BEGIN EC PRIVATE KEY`).
//!
//! What this module must not do: read files (callers pass the bytes and name the file in
//! their errors) or accept an encrypted key silently.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("no certificate in it (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error(
        "no private key in it (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
    )]
    NoKey,
    #[error(
        "the private key is encrypted; amanda-rs needs it unencrypted, as amssl makes it (openssl pkey -in FILE -out FILE)"
    )]
    Encrypted,
    #[error("not PEM: {0}")]
    Bad(String),
}

/// Every certificate in `text`, in order.
pub fn certificates(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| PemError::Bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key in `text`.
pub fn private_key(text: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    if memmem(text, b"ENCRYPTED PRIVATE KEY") || memmem(text, b"Proc-Type: 4,ENCRYPTED") {
        return Err(PemError::Encrypted);
    }
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => Err(PemError::NoKey),
        Err(e) => Err(PemError::Bad(e.to_string())),
    }
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amssl_files_load_and_junk_is_named() {
        let crt = include_bytes!("../testdata/main/client/crt.pem");
        assert_eq!(certificates(crt).unwrap().len(), 1);
        let key = include_bytes!("../testdata/main/client/key.pem");
        assert!(matches!(private_key(key), Ok(PrivateKeyDer::Pkcs8(_))));
        assert_eq!(certificates(b"hello"), Err(PemError::NoCertificate));
        assert_eq!(private_key(crt).unwrap_err(), PemError::NoKey);
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(private_key(enc).unwrap_err(), PemError::Encrypted);
    }
}
