//! auth ssl's settings (spec §13.3): `ssl-dir` (global in amanda.conf and
//! amanda-client.conf), and `ssl-cert-file`, `ssl-key-file`, `ssl-ca-cert-file`,
//! `ssl-fingerprint-file`, `ssl-cipher-list`, `ssl-check-host`,
//! `ssl-check-certificate-host`, `ssl-check-fingerprint` (dumptype parameters in amanda.conf,
//! globals in amanda-client.conf). Empty strings count as unset; the files then default to
//! amssl's layout under `ssl-dir` (see the `ssl` crate).
//!
//! What this module must not do: read certificates or keys.

use crate::model::Get;
use crate::resolve::Params;

/// Amanda's default `ssl-dir` (`CONFIG_DIR/ssl`).
pub const DEFAULT_SSL_DIR: &str = "/etc/amanda/ssl";

/// The ssl settings of one side (a dumptype's, with the global `ssl-dir`, or the client's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslSettings {
    /// `ssl-dir` (default /etc/amanda/ssl).
    pub dir: String,
    /// `ssl-cert-file` ("": `<ssl-dir>/me/crt.pem`).
    pub cert_file: String,
    /// `ssl-key-file` ("": `<ssl-dir>/me/private/key.pem`).
    pub key_file: String,
    /// `ssl-ca-cert-file` ("": `<ssl-dir>/CA/crt.pem`).
    pub ca_cert_file: String,
    /// `ssl-fingerprint-file` ("": `<ssl-dir>/remote/<peer>/fingerprint` if it exists).
    pub fingerprint_file: String,
    /// `ssl-cipher-list` (OpenSSL syntax; only TLS 1.2 suite names restrict anything).
    pub cipher_list: String,
    /// `ssl-check-host` (default yes): the acceptor's reverse-DNS check of the peer.
    pub check_host: bool,
    /// `ssl-check-certificate-host` (default yes): the certificate's CN must resolve to the
    /// peer's address.
    pub check_certificate_host: bool,
    /// `ssl-check-fingerprint` (default yes; Amanda 3.5.1 reads it and never uses it).
    pub check_fingerprint: bool,
    /// Where each set keyword was set (`file:line:column`), for messages.
    pub origins: Vec<(&'static str, String)>,
}

/// The keywords, canonical spelling, in the order of the docs.
pub const KEYWORDS: [&str; 9] = [
    "ssl_dir",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_cert_file",
    "ssl_fingerprint_file",
    "ssl_cipher_list",
    "ssl_check_host",
    "ssl_check_certificate_host",
    "ssl_check_fingerprint",
];

impl Default for SslSettings {
    fn default() -> Self {
        SslSettings {
            dir: DEFAULT_SSL_DIR.to_string(),
            cert_file: String::new(),
            key_file: String::new(),
            ca_cert_file: String::new(),
            fingerprint_file: String::new(),
            cipher_list: String::new(),
            check_host: true,
            check_certificate_host: true,
            check_fingerprint: true,
            origins: Vec::new(),
        }
    }
}

impl SslSettings {
    /// From a block's parameters (`ssl_dir` is read too when the block has it: the client's
    /// globals).
    pub(crate) fn from_params(p: &Params) -> SslSettings {
        let g = Get(p);
        let mut origins = Vec::new();
        for k in KEYWORDS {
            if let Some(l) = p.location(k) {
                origins.push((k, l.to_string()));
            }
        }
        SslSettings {
            dir: g.str("ssl_dir", DEFAULT_SSL_DIR),
            cert_file: g.str("ssl_cert_file", ""),
            key_file: g.str("ssl_key_file", ""),
            ca_cert_file: g.str("ssl_ca_cert_file", ""),
            fingerprint_file: g.str("ssl_fingerprint_file", ""),
            cipher_list: g.str("ssl_cipher_list", ""),
            check_host: g.bool("ssl_check_host", true),
            check_certificate_host: g.bool("ssl_check_certificate_host", true),
            check_fingerprint: g.bool("ssl_check_fingerprint", true),
            origins,
        }
    }

    /// These settings with `ssl-dir` from the server's globals (amanda.conf has it only
    /// there), keeping its origin.
    pub fn with_dir(&self, dir: &str, origin: Option<String>) -> SslSettings {
        let mut s = self.clone();
        s.dir = dir.to_string();
        s.origins.retain(|(k, _)| *k != "ssl_dir");
        if let Some(o) = origin {
            s.origins.push(("ssl_dir", o));
        }
        s
    }

    /// Where `keyword` (canonical, e.g. `ssl_cert_file`) was set, if it was.
    pub fn origin(&self, keyword: &str) -> Option<&str> {
        self.origins
            .iter()
            .find(|(k, _)| *k == keyword)
            .map(|(_, o)| o.as_str())
    }
}

#[cfg(test)]
mod tests {
    use crate::fs::MemFs;
    use crate::{ClientConfig, Config};
    use std::path::Path;

    #[test]
    fn server_ssl_dir_is_global_and_the_rest_per_dumptype_with_their_lines() {
        let text = "define dumptype s {\n  auth \"ssl\"\n  ssl-cert-file \"/c/crt.pem\"\n  ssl_check_host no\n}\nssl-dir \"/srv/ssl\"\n";
        let c = Config::parse_str("amanda.conf", text).unwrap().value;
        let dt = c.dumptypes.get("s").unwrap();
        let s = c.ssl_for(dt);
        assert_eq!(s.dir, "/srv/ssl");
        assert_eq!(s.cert_file, "/c/crt.pem");
        assert!(!s.check_host && s.check_certificate_host);
        assert!(
            s.origin("ssl_cert_file").unwrap().ends_with(":3:3"),
            "{:?}",
            s.origins
        );
        assert!(
            s.origin("ssl_dir").unwrap().ends_with(":6:1"),
            "{:?}",
            s.origins
        );
        assert_eq!(dt.auth.known(), Some(proto::Auth::Ssl));
        let d = c.ssl_for(c.dumptypes.get("s").unwrap());
        assert_eq!(d.key_file, "");
    }

    #[test]
    fn client_conf_has_every_ssl_keyword_and_a_bad_value_names_its_line() {
        let fs = MemFs::new().with(
            "/etc/amanda/amanda-client.conf",
            "ssl-dir \"/x/ssl\"\nssl-ca-cert-file \"/x/ca.pem\"\nssl-check-certificate-host no\nssl-cipher-list \"DEFAULT:@SECLEVEL=1\"\n",
        );
        let c = ClientConfig::load_with(&fs, Path::new("/etc/amanda"), None)
            .unwrap()
            .value;
        assert_eq!(c.ssl.dir, "/x/ssl");
        assert_eq!(c.ssl.ca_cert_file, "/x/ca.pem");
        assert!(!c.ssl.check_certificate_host);
        assert_eq!(c.ssl.cipher_list, "DEFAULT:@SECLEVEL=1");
        let fs = MemFs::new().with(
            "/etc/amanda/amanda-client.conf",
            "ssl-dir \"/x\"\nssl-check-host maybe\n",
        );
        let e = ClientConfig::load_with(&fs, Path::new("/etc/amanda"), None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("amanda-client.conf:2"), "{text}");
        let c = ClientConfig::load_with(&MemFs::default(), Path::new("/etc/amanda"), None)
            .unwrap()
            .value;
        assert_eq!(c.ssl, super::SslSettings::default());
    }
}
