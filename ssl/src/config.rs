//! rustls configurations from the ssl settings: our certificate and key, the Amanda CA,
//! the cipher list, TLS 1.3 and 1.2 (what Amanda's OpenSSL negotiates: TLS 1.3,
//! TLS_AES_256_GCM_SHA384, x25519; spec §13.2).
//!
//! The files default to amssl's layout under `ssl-dir` (`me/crt.pem`, `me/private/key.pem`,
//! `CA/crt.pem`); every error names the file, the keyword that chose it and where that was
//! set, so `dumper check` and amandad's log say what to fix.
//!
//! `ssl-cipher-list` is OpenSSL syntax. As in Amanda (which passes it to
//! `SSL_CTX_set_cipher_list`), it does not touch the TLS 1.3 suites; TLS 1.2 suite names in
//! it (OpenSSL's or IANA's) restrict the TLS 1.2 suites; aliases and options (`DEFAULT`,
//! `HIGH`, `!aNULL`, `@SECLEVEL=1`, ...) are accepted and mean nothing here: rustls's
//! suites are all strong, and 1024-bit RSA keys need no security level to be lowered.
//!
//! What this module must not do: open connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conf::SslSettings;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme, SupportedCipherSuite};

use crate::pem::{self, PemError};
use crate::sign::{self, KeyError};
use crate::verify::AmandaCa;
use crate::x509::{Cert, CertError};

/// Which of the three files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Cert,
    Key,
    Ca,
}

impl FileKind {
    /// The keyword that sets it.
    pub fn keyword(self) -> &'static str {
        match self {
            FileKind::Cert => "ssl-cert-file",
            FileKind::Key => "ssl-key-file",
            FileKind::Ca => "ssl-ca-cert-file",
        }
    }

    fn default_rel(self) -> &'static str {
        match self {
            FileKind::Cert => "me/crt.pem",
            FileKind::Key => "me/private/key.pem",
            FileKind::Ca => "CA/crt.pem",
        }
    }
}

/// A file of the settings and how it was chosen, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslFile {
    pub kind: FileKind,
    pub path: PathBuf,
    /// `ssl-cert-file, amanda.conf:12:3` or `the default under ssl-dir /etc/amanda/ssl`.
    pub why: String,
}

impl std::fmt::Display for SslFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.why)
    }
}

/// The file of `kind` the settings name (an empty setting means amssl's place under
/// `ssl-dir`).
pub fn file(s: &SslSettings, kind: FileKind) -> SslFile {
    let set = match kind {
        FileKind::Cert => &s.cert_file,
        FileKind::Key => &s.key_file,
        FileKind::Ca => &s.ca_cert_file,
    };
    if set.is_empty() {
        let origin = s
            .origin("ssl_dir")
            .map_or(String::new(), |o| format!(", {o}"));
        SslFile {
            kind,
            path: Path::new(&s.dir).join(kind.default_rel()),
            why: format!(
                "{} unset: the default under ssl-dir {}{origin}",
                kind.keyword(),
                s.dir
            ),
        }
    } else {
        let canonical = kind.keyword().replace('-', "_");
        let origin = s
            .origin(&canonical)
            .map_or(String::new(), |o| format!(", {o}"));
        SslFile {
            kind,
            path: PathBuf::from(set),
            why: format!("{}{origin}", kind.keyword()),
        }
    }
}

/// The fingerprint file for peer `name`: `ssl-fingerprint-file` when set, else
/// `<ssl-dir>/remote/<name>/fingerprint`; `None` when that default does not exist (no file,
/// no check: Amanda's rule).
pub fn fingerprint_file(s: &SslSettings, name: &str) -> Option<PathBuf> {
    if !s.fingerprint_file.is_empty() {
        return Some(PathBuf::from(&s.fingerprint_file));
    }
    let p = Path::new(&s.dir)
        .join("remote")
        .join(name)
        .join("fingerprint");
    p.exists().then_some(p)
}

/// Why the ssl settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {file}: {error}")]
    Read { file: Box<SslFile>, error: String },
    #[error("{file}: {cause}")]
    Pem { file: Box<SslFile>, cause: PemError },
    #[error("{file}: {cause}")]
    Cert {
        file: Box<SslFile>,
        cause: CertError,
    },
    #[error("{file}: {cause}")]
    Key { file: Box<SslFile>, cause: KeyError },
    #[error(
        "Private key does not match the certificate public key: {key} is not the key of {cert}"
    )]
    KeyMismatch {
        key: Box<SslFile>,
        cert: Box<SslFile>,
    },
    #[error(
        "ssl-cipher-list \"{list}\"{origin}: it names no TLS 1.2 suite amanda-rs has (it has {have})"
    )]
    CipherList {
        list: String,
        origin: String,
        have: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Our identity and the CAs we trust, loaded and checked.
#[derive(Debug, Clone)]
pub struct Identity {
    pub certified: Arc<CertifiedKey>,
    /// Our certificate, parsed.
    pub cert: Cert,
    pub cas: Vec<Cert>,
    pub ca_file: SslFile,
}

fn read(f: &SslFile) -> Result<Vec<u8>, SetupError> {
    std::fs::read(&f.path).map_err(|e| SetupError::Read {
        file: Box::new(f.clone()),
        error: e.to_string(),
    })
}

/// Loads and checks the certificate, key and CA file the settings name.
pub fn identity(s: &SslSettings) -> Result<Identity, SetupError> {
    let cert_file = file(s, FileKind::Cert);
    let key_file = file(s, FileKind::Key);
    let ca_file = file(s, FileKind::Ca);
    let pem_err = |file: &SslFile| {
        let file = Box::new(file.clone());
        move |cause| SetupError::Pem { file, cause }
    };
    let cert_err = |file: &SslFile| {
        let file = Box::new(file.clone());
        move |cause| SetupError::Cert { file, cause }
    };
    let chain = pem::certificates(&read(&cert_file)?).map_err(pem_err(&cert_file))?;
    let cert = Cert::parse(&chain[0]).map_err(cert_err(&cert_file))?;
    let public = cert.public_key().map_err(cert_err(&cert_file))?;
    let key_der = pem::private_key(&read(&key_file)?).map_err(pem_err(&key_file))?;
    let key = sign::load(&key_der).map_err(|cause| SetupError::Key {
        file: Box::new(key_file.clone()),
        cause,
    })?;
    // Amanda's SSL_CTX_check_private_key: the key must be the certificate's.
    let matches = key
        .choose_scheme(public.schemes())
        .and_then(|signer| {
            let probe = b"amanda-rs: does this key belong to this certificate?";
            let sig = signer.sign(probe).ok()?;
            public.verify(signer.scheme(), probe, &sig).ok()
        })
        .is_some();
    if !matches {
        return Err(SetupError::KeyMismatch {
            key: Box::new(key_file),
            cert: Box::new(cert_file),
        });
    }
    let ca_ders = pem::certificates(&read(&ca_file)?).map_err(pem_err(&ca_file))?;
    let cas = ca_ders
        .iter()
        .map(|d| Cert::parse(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err(&ca_file))?;
    // We send our certificate and the CA that signed it, as OpenSSL does.
    let mut sent: Vec<CertificateDer<'static>> = vec![chain[0].clone()];
    sent.extend(
        cas.iter()
            .filter(|ca| cert.verify_signed_by(ca).is_ok() && ca.der() != cert.der())
            .map(|ca| CertificateDer::from(ca.der().to_vec())),
    );
    Ok(Identity {
        certified: Arc::new(CertifiedKey::new(sent, key)),
        cert,
        cas,
        ca_file,
    })
}

/// The TLS 1.2 suites `ssl-cipher-list` allows (`None`: all of them).
pub fn tls12_suites(list: &str) -> Option<Vec<&'static str>> {
    let mut named = Vec::new();
    for token in list.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if token.starts_with(['!', '-', '+', '@']) {
            continue;
        }
        if let Some((iana, _)) = TLS12_NAMES.iter().find(|(iana, openssl)| {
            token.eq_ignore_ascii_case(iana) || token.eq_ignore_ascii_case(openssl)
        }) {
            named.push(*iana);
        }
    }
    (!named.is_empty()).then_some(named)
}

/// rustls's TLS 1.2 suites by IANA and OpenSSL name.
const TLS12_NAMES: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// The ring provider with the suites `ssl-cipher-list` allows.
fn provider(s: &SslSettings) -> Result<Arc<CryptoProvider>, SetupError> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(names) = tls12_suites(&s.cipher_list) {
        let keep = |cs: &SupportedCipherSuite| match cs {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => {
                cs.suite().as_str().is_some_and(|n| names.contains(&n))
            }
        };
        let have: Vec<&str> = p
            .cipher_suites
            .iter()
            .filter_map(|c| c.suite().as_str())
            .collect();
        p.cipher_suites.retain(keep);
        if !p
            .cipher_suites
            .iter()
            .any(|c| matches!(c, SupportedCipherSuite::Tls12(_)))
        {
            return Err(SetupError::CipherList {
                list: s.cipher_list.clone(),
                origin: s
                    .origin("ssl_cipher_list")
                    .map_or(String::new(), |o| format!(" ({o})")),
                have: have.join(", "),
            });
        }
    }
    Ok(Arc::new(p))
}

/// A builder of `S` (`ClientConfig` or `ServerConfig`) that wants the peer's verifier.
type WantsVerifier<S> = rustls::ConfigBuilder<S, rustls::WantsVerifier>;

/// What both sides' configurations start from: our identity, the Amanda CA verifier of the
/// peer's certificate, and `builder` (`ClientConfig::builder_with_provider` or the server's)
/// given the settings' provider, with TLS 1.3 and 1.2.
fn start<S: rustls::ConfigSide>(
    s: &SslSettings,
    builder: impl FnOnce(Arc<CryptoProvider>) -> rustls::ConfigBuilder<S, rustls::WantsVersions>,
) -> Result<(Identity, Arc<AmandaCa>, WantsVerifier<S>), SetupError> {
    let id = identity(s)?;
    let verifier = Arc::new(AmandaCa::new(id.cas.clone(), id.ca_file.to_string()));
    let builder = builder(provider(s)?)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    Ok((id, verifier, builder))
}

/// The initiator's configuration (dumper, and later amservice-like client roles).
pub fn client_config(s: &SslSettings) -> Result<(Arc<ClientConfig>, Identity), SetupError> {
    let (id, verifier, builder) = start(s, ClientConfig::builder_with_provider)?;
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Fixed(id.certified.clone())));
    // Amanda's OpenSSL sends no server name; every connection is a full handshake.
    cfg.enable_sni = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(cfg), id))
}

/// The acceptor's configuration (amandad): a client certificate is required.
pub fn server_config(s: &SslSettings) -> Result<(Arc<ServerConfig>, Identity), SetupError> {
    let (id, verifier, builder) = start(s, ServerConfig::builder_with_provider)?;
    let mut cfg = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(id.certified.clone())));
    // Tickets would never be used: every Amanda connection is a full handshake.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((Arc::new(cfg), id))
}

/// Always the one certificate we have.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings pointing at one side of a test tree (`main/server`, ...), with its CA.
    pub(crate) fn settings(tree: &str, side: &str) -> SslSettings {
        let base = format!("{}/testdata/{tree}", env!("CARGO_MANIFEST_DIR"));
        SslSettings {
            cert_file: format!("{base}/{side}/crt.pem"),
            key_file: format!("{base}/{side}/key.pem"),
            ca_cert_file: format!("{base}/ca.pem"),
            ..SslSettings::default()
        }
    }

    #[test]
    fn amssl_trees_load_and_the_sent_chain_holds_the_ca() {
        let id = identity(&settings("main", "client")).unwrap();
        assert_eq!(id.certified.cert.len(), 2);
        assert_eq!(id.cas.len(), 1);
        assert!(client_config(&settings("main", "client")).is_ok());
        assert!(server_config(&settings("main", "server")).is_ok());
    }

    #[test]
    fn errors_name_the_file_the_keyword_and_its_line() {
        let mut s = SslSettings {
            dir: "/nonexistent/ssl".into(),
            origins: vec![("ssl_dir", "amanda.conf:4:1".into())],
            ..SslSettings::default()
        };
        let e = identity(&s).unwrap_err().to_string();
        assert!(e.starts_with("cannot read /nonexistent/ssl/me/crt.pem (ssl-cert-file unset: the default under ssl-dir /nonexistent/ssl, amanda.conf:4:1)"), "{e}");
        let base = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
        s.cert_file = format!("{base}/main/client/crt.pem");
        s.key_file = format!("{base}/main/server/key.pem");
        s.origins.push(("ssl_key_file", "amanda.conf:9:5".into()));
        let e = identity(&s).unwrap_err();
        assert!(matches!(e, SetupError::KeyMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("(ssl-key-file, amanda.conf:9:5)"),
            "{e}"
        );
        s.key_file = format!("{base}/main/client/crt.pem");
        let e = identity(&s).unwrap_err().to_string();
        assert!(e.contains("no private key in it"), "{e}");
    }

    #[test]
    fn cipher_list_restricts_only_named_tls12_suites() {
        assert_eq!(tls12_suites("DEFAULT:@SECLEVEL=1"), None);
        assert_eq!(tls12_suites(""), None);
        assert_eq!(
            tls12_suites("HIGH:!aNULL:ECDHE-RSA-AES256-GCM-SHA384"),
            Some(vec!["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"])
        );
        let mut s = settings("main", "client");
        s.cipher_list = "ECDHE-RSA-AES256-GCM-SHA384".into();
        assert!(client_config(&s).is_ok());
        assert_eq!(fingerprint_file(&s, "no-such-host"), None);
        s.fingerprint_file = "/x/fp".into();
        assert_eq!(fingerprint_file(&s, "h"), Some(PathBuf::from("/x/fp")));
    }
}
