//! The checks Amanda makes after the TLS handshake, in its order, with its texts (spec
//! §13.4, §13.5), each followed by what to fix:
//!
//! - initiator (dumper): the peer (amandad) sent a certificate (`server have no
//!   certificate`: Amanda calls its TLS peer the server); with `ssl-check-certificate-host`, its CN resolves to the address we
//!   connected to (`Common name of certicate (CN) doesn't resolv to IP (addr:port): ...`,
//!   Amanda's spelling); the fingerprint file of the host we connected to, if there is one
//!   (`No fingerprint match`);
//! - acceptor (amandad): a client certificate (`remote doesn't sent a certificate`); a CN
//!   (`Certificate have no common name`); with `ssl-check-certificate-host`, the CN resolves
//!   to the peer; the fingerprint file `remote/<CN>/fingerprint`, if there is one. The CN is
//!   then the peer's name for `.amandahosts`.
//!
//! A CN is also refused when it cannot name a directory under `remote/` (`/`, `..`, control
//! characters): Amanda would read another file.
//!
//! What this module must not do: resolve names itself (the caller passes Amanda's
//! `check_name_give_sockaddr`, so tests run without DNS) or touch sockets. It reads the
//! fingerprint file, which is small; amandad calls this off its event loop.

use std::net::SocketAddr;
use std::path::PathBuf;

use conf::SslSettings;

use crate::config;
use crate::fingerprint::{self, FingerprintFile};
use crate::x509::Cert;

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// We connected (dumper; Amanda's amcheck, planner, dumper).
    Initiator,
    /// We accepted (amandad).
    Acceptor,
}

/// What the checks learnt about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's CN (the acceptor always has one; the initiator only looks when
    /// `ssl-check-certificate-host` is on, but reports it when there is one).
    pub cn: Option<String>,
    /// The certificate's subject, for logs.
    pub subject: String,
    /// The fingerprint file that matched, if one was checked.
    pub fingerprint_file: Option<PathBuf>,
}

/// A failed check. `Display` starts with Amanda's text and goes on with what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    #[error("server have no certificate")]
    NoServerCertificate,
    #[error("remote doesn't sent a certificate")]
    NoClientCertificate,
    #[error(
        "Certificate have no common name: {subject} (the CN must be the host's name, as amssl makes it)"
    )]
    NoCommonName { subject: String },
    #[error(
        "Common name of certicate ({cn:?}) cannot name a host: it has {what} (the CN names the directory remote/<CN>/ under ssl-dir)"
    )]
    BadCommonName { cn: String, what: &'static str },
    #[error(
        "Common name of certicate ({cn}) doesn't resolv to IP ({peer}): {reason} (ssl-check-certificate-host: the certificate's name must resolve to the peer's address; make it, give the host a certificate for the name it has, or set ssl-check-certificate-host no)"
    )]
    CnDoesNotResolve {
        cn: String,
        peer: SocketAddr,
        reason: String,
    },
    #[error(
        "Failed open of {path}: {error} (the fingerprint file; make it readable by the Amanda user or remove it)"
    )]
    FingerprintOpen { path: PathBuf, error: String },
    #[error(
        "No fingerprint match: the certificate of {subject} ({line}) is in no line of {path}; put that line there if the certificate is right (amssl writes it when it signs the certificate), or remove the file"
    )]
    NoFingerprintMatch {
        subject: String,
        line: String,
        path: PathBuf,
    },
}

/// What to check: who we are, our settings, and for the initiator the name of the host we
/// connected to (its fingerprint directory).
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    pub side: Side,
    pub settings: &'a SslSettings,
    /// The initiator's canonical name of the host (Amanda's `remote/<host>/fingerprint`).
    pub host: Option<&'a str>,
    /// The peer's address as the connection sees it.
    pub peer: SocketAddr,
}

/// Amanda's `check_name_give_sockaddr(name, peer)`: `Err` with Amanda's reason.
pub type NameCheck<'a> = &'a dyn Fn(&str, SocketAddr) -> Result<(), String>;

/// Runs the checks on the peer's certificate (`None`: it sent none).
pub fn check_peer(
    c: &Check<'_>,
    cert_der: Option<&[u8]>,
    names: NameCheck<'_>,
) -> Result<PeerIdentity, CheckFailure> {
    let Some(der) = cert_der else {
        return Err(match c.side {
            Side::Initiator => CheckFailure::NoServerCertificate,
            Side::Acceptor => CheckFailure::NoClientCertificate,
        });
    };
    // The handshake parsed and verified it already; a failure here is the same refusal.
    let cert = Cert::parse(der).map_err(|_| CheckFailure::NoCommonName {
        subject: "(unparsable certificate)".into(),
    })?;
    let subject = cert.subject();
    let cn = cert.common_name();
    let want_cn = c.side == Side::Acceptor || c.settings.check_certificate_host;
    if want_cn {
        let Some(name) = &cn else {
            return Err(CheckFailure::NoCommonName { subject });
        };
        if let Some(what) = unusable_name(name) {
            return Err(CheckFailure::BadCommonName {
                cn: name.clone(),
                what,
            });
        }
        if c.settings.check_certificate_host
            && let Err(reason) = names(name, c.peer)
        {
            return Err(CheckFailure::CnDoesNotResolve {
                cn: name.clone(),
                peer: c.peer,
                reason,
            });
        }
    }
    let fp_name = match c.side {
        Side::Initiator => c.host,
        Side::Acceptor => cn.as_deref(),
    };
    let path = match fp_name {
        Some(n) => config::fingerprint_file(c.settings, n),
        None if !c.settings.fingerprint_file.is_empty() => {
            Some(PathBuf::from(&c.settings.fingerprint_file))
        }
        None => None,
    };
    if let Some(path) = &path {
        let text = std::fs::read(path).map_err(|e| CheckFailure::FingerprintOpen {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let file = FingerprintFile::parse(&String::from_utf8_lossy(&text));
        if file.matching(der).is_none() {
            return Err(CheckFailure::NoFingerprintMatch {
                subject,
                line: fingerprint::sha1_line(der),
                path: path.clone(),
            });
        }
    }
    Ok(PeerIdentity {
        cn,
        subject,
        fingerprint_file: path,
    })
}

/// Why a CN cannot be a host name and a directory under `remote/`, if it cannot.
fn unusable_name(cn: &str) -> Option<&'static str> {
    if cn.is_empty() {
        Some("no characters")
    } else if cn.contains('/') {
        Some("a '/'")
    } else if cn == "." || cn == ".." {
        Some("only dots")
    } else if cn.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        Some("blanks or control characters")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem;

    fn der(rel: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR"));
        pem::certificates(&std::fs::read(path).unwrap()).unwrap()[0].to_vec()
    }

    fn ok_names(_: &str, _: SocketAddr) -> Result<(), String> {
        Ok(())
    }

    /// The checks of the side that accepted a connection from 127.0.0.1.
    fn acceptor(settings: &SslSettings) -> Check<'_> {
        Check {
            side: Side::Acceptor,
            settings,
            host: None,
            peer: "127.0.0.1:50000".parse().unwrap(),
        }
    }

    /// The checks of the side that connected to `host`.
    fn initiator<'a>(settings: &'a SslSettings, host: &'a str) -> Check<'a> {
        Check {
            side: Side::Initiator,
            host: Some(host),
            ..acceptor(settings)
        }
    }

    /// An ssl-dir with `remote/<name>/fingerprint` holding the fingerprint line of the
    /// testdata certificate `rel` (`main/client`: `testdata/main/client/fingerprint`).
    fn dir_with(name: &str, rel: &str) -> (tempfile::TempDir, SslSettings) {
        let path = format!("{}/testdata/{rel}/fingerprint", env!("CARGO_MANIFEST_DIR"));
        let line = std::fs::read_to_string(path).unwrap();
        let line = line.trim();
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("remote").join(name);
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("fingerprint"), format!("{line}\n")).unwrap();
        let s = SslSettings {
            dir: d.path().display().to_string(),
            ..SslSettings::default()
        };
        (d, s)
    }

    #[test]
    fn acceptor_takes_the_cn_as_name_and_checks_its_fingerprint_file() {
        let client = der("main/client/crt.pem");
        let (_d, s) = dir_with("127.0.0.1", "main/client");
        let c = acceptor(&s);
        let id = check_peer(&c, Some(&client), &ok_names).unwrap();
        assert_eq!(id.cn.as_deref(), Some("127.0.0.1"));
        assert!(id.fingerprint_file.is_some());
        // Another certificate with the same CN (another CA's) does not match the file.
        let other = der("other/client/crt.pem");
        let e = check_peer(&c, Some(&other), &ok_names).unwrap_err();
        assert!(matches!(e, CheckFailure::NoFingerprintMatch { .. }));
        assert!(
            e.to_string()
                .starts_with("No fingerprint match: the certificate of "),
            "{e}"
        );
        assert!(
            e.to_string().contains("remote/127.0.0.1/fingerprint"),
            "{e}"
        );
    }

    #[test]
    fn initiator_names_the_fingerprint_file_after_the_host_it_connected_to() {
        let client = der("main/client/crt.pem");
        let (_d, s) = dir_with("client.example", "other/client");
        let c = initiator(&s, "client.example");
        assert!(matches!(
            check_peer(&c, Some(&client), &ok_names),
            Err(CheckFailure::NoFingerprintMatch { .. })
        ));
        // No file for that host: no fingerprint check.
        let c = Check {
            host: Some("elsewhere"),
            ..c
        };
        assert_eq!(
            check_peer(&c, Some(&client), &ok_names)
                .unwrap()
                .fingerprint_file,
            None
        );
    }

    #[test]
    fn a_peer_without_a_certificate_is_refused_naming_its_side() {
        let s = SslSettings::default();
        for (c, failure) in [
            (acceptor(&s), CheckFailure::NoClientCertificate),
            (
                initiator(&s, "elsewhere"),
                CheckFailure::NoServerCertificate,
            ),
        ] {
            assert_eq!(check_peer(&c, None, &ok_names), Err(failure));
        }
    }

    #[test]
    fn a_cn_that_does_not_resolve_to_the_peer_is_amandas_text_unless_the_check_is_off() {
        let client = der("main/client/crt.pem");
        let s = SslSettings {
            dir: "/nonexistent".into(),
            ..SslSettings::default()
        };
        let to: SocketAddr = "127.0.0.2:10062".parse().unwrap();
        let names = |n: &str, p: SocketAddr| Err(format!("{n} doesn't resolve to {p}"));
        let c = Check {
            peer: to,
            ..initiator(&s, "127.0.0.2")
        };
        let e = check_peer(&c, Some(&client), &names)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Common name of certicate (127.0.0.1) doesn't resolv to IP (127.0.0.2:10062): 127.0.0.1 doesn't resolve to 127.0.0.2:10062"), "{e}");
        let off = SslSettings {
            check_certificate_host: false,
            ..s.clone()
        };
        let c = Check {
            settings: &off,
            ..c
        };
        assert!(check_peer(&c, Some(&client), &names).is_ok());
    }

    #[test]
    fn an_unreadable_fingerprint_file_is_named() {
        let client = der("main/client/crt.pem");
        let s = SslSettings {
            fingerprint_file: "/nonexistent/fp".into(),
            ..SslSettings::default()
        };
        let c = acceptor(&s);
        let e = check_peer(&c, Some(&client), &ok_names).unwrap_err();
        assert!(matches!(e, CheckFailure::FingerprintOpen { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("Failed open of /nonexistent/fp: "),
            "{e}"
        );
    }

    #[test]
    fn names_that_would_leave_remote_are_refused() {
        for bad in ["../../etc", "a/b", "..", "", "a b", "x\n"] {
            assert!(unusable_name(bad).is_some(), "{bad:?}");
        }
        for good in ["127.0.0.1", "client.example.com", "localhost", "host-1_a"] {
            assert_eq!(unusable_name(good), None);
        }
    }
}
