//! The peer fingerprint file (`ssl-fingerprint-file`, default `<ssl-dir>/remote/<name>/fingerprint`):
//! lines `SHA1 Fingerprint=AA:BB:...` or `MD5 Fingerprint=...`, as `openssl x509 -fingerprint`
//! prints them and amssl writes them. The check passes when any line names the peer
//! certificate's digest of its kind (spec §13.3).
//!
//! Amanda compares the line exactly (upper-case `SHA1`/`MD5`, upper-case hex). We also take
//! what OpenSSL 3 prints for `-sha1`/`-md5`/`-sha256` (`sha1 Fingerprint=...`, lower-case
//! labels) and hex in either case, and `SHA256` lines: the digest must still match byte for
//! byte, so this admits no other certificate. A trailing `\r` (a file edited on Windows) is
//! ignored.
//!
//! What this module must not do: read files (the caller hands over the text) or decide what
//! a missing file means (no file = no check, the caller's rule).

use md5::Md5;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// A digest kind a fingerprint line can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Md5,
    Sha1,
    Sha256,
}

impl Kind {
    fn from_label(label: &str) -> Option<Kind> {
        match label.to_ascii_uppercase().as_str() {
            "MD5" => Some(Kind::Md5),
            "SHA1" => Some(Kind::Sha1),
            "SHA256" => Some(Kind::Sha256),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Md5 => "MD5",
            Kind::Sha1 => "SHA1",
            Kind::Sha256 => "SHA256",
        }
    }

    fn len(self) -> usize {
        match self {
            Kind::Md5 => 16,
            Kind::Sha1 => 20,
            Kind::Sha256 => 32,
        }
    }

    fn digest(self, der: &[u8]) -> Vec<u8> {
        match self {
            Kind::Md5 => Md5::digest(der).to_vec(),
            Kind::Sha1 => Sha1::digest(der).to_vec(),
            Kind::Sha256 => Sha256::digest(der).to_vec(),
        }
    }
}

/// One usable line of a fingerprint file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub kind: Kind,
    pub digest: Vec<u8>,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// A parsed fingerprint file: its usable lines, and the numbers of the lines that are not of
/// the `<KIND> Fingerprint=XX:XX:...` form (ignored, as Amanda ignores them, but worth a word
/// in `dumper check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FingerprintFile {
    pub fingerprints: Vec<Fingerprint>,
    pub ignored_lines: Vec<usize>,
}

impl FingerprintFile {
    /// Parses the text of a fingerprint file. Never fails: unusable lines are listed.
    pub fn parse(text: &str) -> FingerprintFile {
        let mut out = FingerprintFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Some((kind, digest)) => out.fingerprints.push(Fingerprint {
                    kind,
                    digest,
                    line: i + 1,
                }),
                None => out.ignored_lines.push(i + 1),
            }
        }
        out
    }

    /// The line that matches the certificate `der`, if any.
    pub fn matching(&self, der: &[u8]) -> Option<&Fingerprint> {
        self.fingerprints
            .iter()
            .find(|f| f.kind.digest(der) == f.digest)
    }
}

/// `<KIND> Fingerprint=XX:XX:...` with the right number of bytes for KIND.
fn parse_line(line: &str) -> Option<(Kind, Vec<u8>)> {
    let (label, hex) = line.split_once(" Fingerprint=")?;
    let kind = Kind::from_label(label)?;
    let mut digest = Vec::with_capacity(kind.len());
    for pair in hex.split(':') {
        if pair.len() != 2 {
            return None;
        }
        digest.push(u8::from_str_radix(pair, 16).ok()?);
    }
    (digest.len() == kind.len()).then_some((kind, digest))
}

/// The line Amanda's amssl writes for `der`: `SHA1 Fingerprint=AA:BB:...`.
pub fn sha1_line(der: &[u8]) -> String {
    line(Kind::Sha1, der)
}

/// `<KIND> Fingerprint=...` of `der`, upper-case, as `openssl x509 -fingerprint` prints it.
pub fn line(kind: Kind, der: &[u8]) -> String {
    let hex: Vec<String> = kind
        .digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!("{} Fingerprint={}", kind.label(), hex.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem;

    fn client_der() -> Vec<u8> {
        let text = include_str!("../testdata/main/client/crt.pem");
        pem::certificates(text.as_bytes())
            .unwrap()
            .remove(0)
            .to_vec()
    }

    #[test]
    fn amssl_written_sha1_line_matches_its_certificate() {
        let der = client_der();
        let file = include_str!("../testdata/main/client/fingerprint");
        assert_eq!(file.trim_end(), sha1_line(&der));
        let f = FingerprintFile::parse(file);
        assert_eq!(f.matching(&der).map(|f| f.kind), Some(Kind::Sha1));
    }

    #[test]
    fn md5_and_openssl3_lower_case_forms_match() {
        let der = client_der();
        // `openssl x509 -fingerprint -md5` on OpenSSL 3 prints the label in lower case.
        let f = FingerprintFile::parse(
            "md5 Fingerprint=CD:7D:39:73:84:5F:82:22:3D:89:98:14:DD:9A:B8:FA\n",
        );
        assert_eq!(f.matching(&der).map(|f| f.kind), Some(Kind::Md5));
        let lower = sha1_line(&der)
            .to_ascii_lowercase()
            .replace("fingerprint", "Fingerprint");
        assert!(FingerprintFile::parse(&lower).matching(&der).is_some());
        let sha256 = line(Kind::Sha256, &der);
        assert!(
            FingerprintFile::parse(&format!("{sha256}\r\n"))
                .matching(&der)
                .is_some()
        );
    }

    #[test]
    fn another_certificates_line_does_not_match_and_junk_is_listed() {
        let der = client_der();
        let other = include_str!("../testdata/other/client/fingerprint");
        let text = format!(
            "# comment\n{other}SHA1 Fingerprint=5B:EA\nSHA1 Fingerprint={}\n",
            "ZZ:".repeat(19) + "ZZ"
        );
        let f = FingerprintFile::parse(&text);
        assert!(f.matching(&der).is_none());
        assert_eq!(f.fingerprints.len(), 1);
        assert_eq!(f.ignored_lines, vec![1, 3, 4]);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,300}") {
            let f = FingerprintFile::parse(&text);
            let _ = f.matching(b"x");
        }
    }
}
