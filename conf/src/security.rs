//! `/etc/amanda-security.conf`: what the setuid-root helpers (ambind, runtar) allow.
//!
//! Facts (common-src/security-file.c, Amanda 3.5.1; spec §5.2): one `key=value` per line;
//! lines that are empty or start with `#` are skipped; the key (everything before the first
//! `=`, not trimmed) is compared in lower case. `tcp_port_range=lo,hi` and
//! `udp_port_range=lo,hi` bound the ports ambind binds (the first line wins; a value
//! without a comma is a fatal "BOGUS line"); `<program>:<name>=<path>` lines list the paths
//! a helper may run (`runtar:gnutar_path=/bin/tar`; several lines may name the same key);
//! `restore_by_amanda_user=yes|no`. The file must belong to root and no directory on its
//! path may be group- or world-writable. Debian ships `tcp_port_range=512,1024` and
//! `udp_port_range=840,860`.
//!
//! What this module must not do: bind anything. portpool's `check` compares these ranges
//! with amanda.conf's and amanda-client.conf's ([`crate::ports`]).

use std::path::Path;

use crate::diag::{ErrorKind, Errors, Loaded, Sink, WarningKind};
use crate::source::Location;
use proto::ports::PortRange;

/// Debian's path of the file (`--with-security-file` default).
pub const PATH: &str = "/etc/amanda-security.conf";

/// Debian's `GNUTAR`, the gnutar path allowed when the file names none
/// (security_file_check_path accepts the configured path).
pub const DEFAULT_GNUTAR: &str = "/bin/tar";

/// A value and the line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// Where.
    pub location: Location,
}

/// A parsed amanda-security.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConf {
    /// `tcp_port_range`: the ports ambind may bind for TCP (first line wins).
    pub tcp_port_range: Option<Entry<PortRange>>,
    /// `udp_port_range`: the ports ambind may bind for UDP.
    pub udp_port_range: Option<Entry<PortRange>>,
    /// `restore_by_amanda_user`.
    pub restore_by_amanda_user: Option<Entry<bool>>,
    /// `<program>:<name>=<path>` lines, key lower-cased, in order.
    pub program_paths: Vec<Entry<(String, String)>>,
}

impl SecurityConf {
    /// Parses the file's text (`path` is used in messages).
    pub fn parse(path: &str, text: &[u8]) -> Result<Loaded<SecurityConf>, Errors> {
        let mut sink = Sink::default();
        let mut conf = SecurityConf::default();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let loc = |col: usize| Location {
                file: std::sync::Arc::from(path),
                line: line_no,
                column: u32::try_from(col + 1).unwrap_or(u32::MAX),
            };
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let line = String::from_utf8_lossy(line);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            let Some(eq) = line.find('=') else {
                sink.warn(
                    loc(0),
                    WarningKind::Other(format!("line without \"=\" ignored: {line:?}")),
                );
                continue;
            };
            let key = line[..eq].to_ascii_lowercase();
            let value = &line[eq + 1..];
            match key.as_str() {
                "tcp_port_range" | "udp_port_range" => {
                    let slot = if key == "tcp_port_range" {
                        &mut conf.tcp_port_range
                    } else {
                        &mut conf.udp_port_range
                    };
                    match parse_range(value) {
                        Some(r) => {
                            if slot.is_none() {
                                *slot = Some(Entry {
                                    value: r,
                                    location: loc(0),
                                });
                            } else {
                                sink.warn(
                                    loc(0),
                                    WarningKind::Other(format!(
                                        "{key} given again; ambind uses the first one"
                                    )),
                                );
                            }
                        }
                        None => sink.error(
                            loc(eq + 1),
                            ErrorKind::Expected {
                                expected: "a port range \"lo,hi\"".into(),
                                found: format!("{value:?}"),
                            },
                        ),
                    }
                }
                "restore_by_amanda_user" => match value {
                    "yes" | "YES" => {
                        conf.restore_by_amanda_user = Some(Entry {
                            value: true,
                            location: loc(0),
                        })
                    }
                    "no" | "NO" => {
                        conf.restore_by_amanda_user = Some(Entry {
                            value: false,
                            location: loc(0),
                        })
                    }
                    _ => sink.error(
                        loc(eq + 1),
                        ErrorKind::Expected {
                            expected: "yes or no".into(),
                            found: format!("{value:?}"),
                        },
                    ),
                },
                k if k.contains(':') => conf.program_paths.push(Entry {
                    value: (k.to_string(), value.to_string()),
                    location: loc(0),
                }),
                _ => sink.warn(
                    loc(0),
                    WarningKind::UnknownKeyword {
                        keyword: line[..eq].to_string(),
                        context: "amanda-security.conf",
                    },
                ),
            }
        }
        sink.finish(conf)
    }

    /// Whether a helper may run `path` for `prefix` (`"runtar:gnutar_path"`), like
    /// security_file_check_path: a listed path, or Debian's built-in one when the key is
    /// not listed at all.
    pub fn allows_path(&self, prefix: &str, path: &str) -> bool {
        let prefix = prefix.to_ascii_lowercase();
        let mut listed = false;
        for e in &self.program_paths {
            if e.value.0 == prefix {
                listed = true;
                if e.value.1 == path {
                    return true;
                }
            }
        }
        !listed
            && matches!(prefix.as_str(), "amgtar:gnutar_path" | "runtar:gnutar_path")
            && path == DEFAULT_GNUTAR
    }
}

fn parse_range(v: &str) -> Option<PortRange> {
    let (a, b) = v.split_once(',')?;
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    PortRange::new(a, b).ok()
}

/// The ownership rule for the file and each directory above it: owned by root (checked
/// for the file only), not writable by group or others.
pub fn check_metadata(path: &str, owner: u32, mode: u32, is_file: bool) -> Result<(), String> {
    if is_file && owner != 0 {
        return Err(format!("{path} must be owned by root"));
    }
    if mode & 0o002 != 0 {
        return Err(format!("{path} must not be writable by others"));
    }
    if mode & 0o020 != 0 {
        return Err(format!("{path} must not be writable by its group"));
    }
    Ok(())
}

/// Reads and parses the file at `path`, after checking it and its directories like ambind.
pub fn load(path: &Path) -> Result<Loaded<SecurityConf>, Errors> {
    use std::os::unix::fs::MetadataExt;
    let display = path.to_string_lossy().into_owned();
    let fail = |msg: String| Errors {
        errors: vec![crate::diag::Error {
            location: Location::file_only(&display),
            kind: ErrorKind::Other(msg),
        }],
        warnings: Vec::new(),
    };
    let real = std::fs::canonicalize(path).map_err(|e| {
        fail(format!(
            "cannot resolve {display}: {}",
            crate::fs::strerror(&e)
        ))
    })?;
    let mut p = Some(real.as_path());
    let mut first = true;
    while let Some(cur) = p {
        let md = std::fs::metadata(cur).map_err(|e| {
            fail(format!(
                "cannot stat {}: {}",
                cur.display(),
                crate::fs::strerror(&e)
            ))
        })?;
        check_metadata(&cur.to_string_lossy(), md.uid(), md.mode(), first).map_err(fail)?;
        first = false;
        p = cur.parent();
    }
    let text = std::fs::read(&real).map_err(|e| {
        fail(format!(
            "cannot read {display}: {}",
            crate::fs::strerror(&e)
        ))
    })?;
    SecurityConf::parse(&display, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# comment\nruntar:gnutar_path=/bin/tar\nruntar:gnutar_path=/usr/bin/tar\namgtar:gnutar_path=/bin/tar\n#amstar:star_path=/usr/bin/star\n\ntcp_port_range=512,1024\nudp_port_range=840,860\n";

    #[test]
    fn debian_file_parses() {
        let c = SecurityConf::parse(PATH, DEBIAN.as_bytes()).unwrap().value;
        assert_eq!(
            c.tcp_port_range.as_ref().unwrap().value,
            PortRange::new(512, 1024).unwrap()
        );
        assert_eq!(
            c.udp_port_range.as_ref().unwrap().value,
            PortRange::new(840, 860).unwrap()
        );
        assert_eq!(
            c.udp_port_range.as_ref().unwrap().location.to_string(),
            "/etc/amanda-security.conf:8:1"
        );
        assert!(c.allows_path("runtar:gnutar_path", "/usr/bin/tar"));
        assert!(!c.allows_path("runtar:gnutar_path", "/opt/tar"));
        assert!(!c.allows_path("ambsdtar:bsdtar_path", "/x"));
        let empty = SecurityConf::default();
        assert!(empty.allows_path("runtar:gnutar_path", "/bin/tar"));
    }

    #[test]
    fn bogus_ranges_name_the_line() {
        let e = SecurityConf::parse(PATH, b"udp_port_range=840\n").unwrap_err();
        assert_eq!(
            e.messages(),
            ["/etc/amanda-security.conf:1:16: expected a port range \"lo,hi\", found \"840\""]
        );
        let w = SecurityConf::parse(
            PATH,
            b"nonsense=1\nUDP_PORT_RANGE=1,2\nudp_port_range=3,4\n",
        )
        .unwrap();
        assert_eq!(
            w.value.udp_port_range.unwrap().value,
            PortRange::new(1, 2).unwrap()
        );
        assert_eq!(w.warnings.len(), 2);
    }

    #[test]
    fn ownership_rule() {
        assert!(check_metadata("/etc/amanda-security.conf", 0, 0o100644, true).is_ok());
        assert!(check_metadata("/etc/amanda-security.conf", 34, 0o100644, true).is_err());
        assert!(check_metadata("/etc", 0, 0o40775, false).is_err());
        assert!(check_metadata("/tmp", 0, 0o41777, false).is_err());
    }
}
