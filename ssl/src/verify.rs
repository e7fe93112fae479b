//! rustls certificate verifiers with Amanda's rule: the peer's certificate is signed
//! directly by a CA of the CA file (OpenSSL's verify depth 1), as both of Amanda's ends
//! require (spec §13.2). The same verifier serves both directions; the host name in the
//! certificate and the fingerprint file are checked after the handshake ([`crate::check`]),
//! where Amanda checks them.
//!
//! What this module must not do: look at names or files.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::x509::{self, Cert, CertError};

/// Verifies a peer's certificate against the Amanda CA (both roles).
#[derive(Debug)]
pub struct AmandaCa {
    cas: Vec<Cert>,
    /// For messages: the CA file.
    ca_file: String,
}

impl AmandaCa {
    /// Trusts `cas` (every certificate of the CA file `ca_file`).
    pub fn new(cas: Vec<Cert>, ca_file: String) -> AmandaCa {
        AmandaCa { cas, ca_file }
    }

    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let result = Cert::parse(end_entity).and_then(|c| {
            x509::verify_chain(&c, &self.cas, now)?;
            // The key must be one we can verify the handshake signature with.
            c.public_key().map(|_| ())
        });
        result.map_err(|e| self.refused(e))
    }

    /// The handshake error for a certificate `cause` refused, naming the CA file.
    fn refused(&self, cause: CertError) -> rustls::Error {
        invalid(VerifyFailure {
            cause,
            ca_file: self.ca_file.clone(),
        })
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let key = Cert::parse(cert)
            .and_then(|c| c.public_key())
            .map_err(|e| self.refused(e))?;
        key.verify(dss.scheme, message, dss.signature())
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

/// A certificate the CA check refused, naming the CA file.
#[derive(Debug, thiserror::Error)]
#[error("{cause} (CA file {ca_file})")]
pub struct VerifyFailure {
    pub cause: CertError,
    pub ca_file: String,
}

fn invalid(e: VerifyFailure) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The handshake-signature methods, the same in both verifier traits: any scheme the
/// certificate's key supports, TLS 1.2 and 1.3 alike.
macro_rules! handshake_signatures {
    () => {
        handshake_signatures!(@each verify_tls12_signature verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            x509::ALL_SCHEMES.to_vec()
        }
    };
    (@each $($method:ident)*) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                self.signature(message, cert, dss)
            }
        )*
    };
}

impl ServerCertVerifier for AmandaCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ClientCertVerifier for AmandaCa {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // OpenSSL's amandad sends no CA names either; clients send the one certificate
        // they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ClientCertVerified::assertion())
    }

    handshake_signatures!();
}
