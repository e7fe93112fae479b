//! `~backup/.amandahosts`: who may run which service on this client (spec §4.1 step 5).
//!
//! Facts (common-src/security-util.c: check_user, check_user_amandahosts; Amanda 3.5.1
//! built `--with-amandahosts`):
//! * the file is `<home of CLIENT_LOGIN>/.amandahosts` (Debian: `/var/backups/.amandahosts`,
//!   a symlink to `/etc/amandahosts`); it must be owned by that user and have no group or
//!   other permission bits (`mode & 077 == 0`), checked on the opened file (after symlinks);
//! * each line is `host [user [service...]]`; host and user are separated by blanks
//!   (space, tab), services by blanks or commas; empty lines are skipped; there is no
//!   comment syntax (a `#` line simply never matches); a NUL ends the line;
//! * the host matches the peer's name case-insensitively and exactly; an entry `localhost`
//!   or `localhost.localdomain` also matches when the peer address prints as exactly
//!   `127.0.0.1` or `::1`;
//! * the user matches the remote user case-insensitively; no user column means the
//!   client's own login;
//! * no service column allows `noop selfcheck sendsize sendbackup` only; otherwise the
//!   requested service must be listed (case-sensitively), `amdump` standing for those four.
//!
//! [`AmandaHosts::check`] is the pure matching; [`check_metadata`] the pure owner/mode rule;
//! [`load`] the only function here that touches the disk.
//!
//! What this module must not do: resolve names (the caller passes the peer's name as
//! amandad's forward-confirmed reverse lookup found it).

use std::net::IpAddr;
use std::path::Path;

/// The services a line without a service column allows, and that `amdump` stands for.
pub const AMDUMP_SERVICES: [&str; 4] = ["noop", "selfcheck", "sendsize", "sendbackup"];

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsEntry {
    /// The host column.
    pub host: String,
    /// The user column, if present.
    pub user: Option<String>,
    /// The services, if a service column is present.
    pub services: Vec<String>,
    /// 1-based line number.
    pub line: u32,
}

/// A parsed `.amandahosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmandaHosts {
    /// The path as shown in refusals (e.g. `/var/backups/.amandahosts`).
    pub path: String,
    /// The client's own login (`CLIENT_LOGIN`, Debian `backup`): the default user column.
    pub client_login: String,
    /// The lines that have a host column.
    pub entries: Vec<HostsEntry>,
}

/// Why a request is refused; its `Display` is Amanda's exact text (the NAK text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No line allows it (amdump services).
    #[error(
        "user {ruser} from {host} is not allowed to execute the service {service}: Please add the line \"{host} {ruser} amdump\" to {path} on the client"
    )]
    NotAllowed {
        /// Remote user.
        ruser: String,
        /// Peer name.
        host: String,
        /// Requested service.
        service: String,
        /// The file.
        path: String,
    },
    /// No line allows it (amindexd, amidxtaped).
    #[error(
        "user {ruser} from {host} is not allowed to execute the service {service}: Please add the line \"{host} {ruser} amindexd amidxtaped\" to {path} on the server"
    )]
    NotAllowedRecovery {
        /// Remote user.
        ruser: String,
        /// Peer name.
        host: String,
        /// Requested service.
        service: String,
        /// The file.
        path: String,
    },
    /// Not a service Amanda knows.
    #[error(
        "user {ruser} from {host} is not allowed to execute the service {service}: {path}: invalid service {service}"
    )]
    InvalidService {
        /// Remote user.
        ruser: String,
        /// Peer name.
        host: String,
        /// Requested service.
        service: String,
        /// The file.
        path: String,
    },
    /// The file itself is unusable.
    #[error("user {ruser} from {host} is not allowed to execute the service {service}: {problem}")]
    File {
        /// Remote user.
        ruser: String,
        /// Peer name.
        host: String,
        /// Requested service.
        service: String,
        /// What is wrong with the file.
        problem: FileProblem,
    },
}

/// What is wrong with the file (Amanda's texts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// It could not be opened.
    #[error("cannot open {path}: {reason}")]
    CannotOpen {
        /// The file.
        path: String,
        /// strerror text.
        reason: String,
    },
    /// Wrong owner.
    #[error("{path}: owned by id {owner}, should be {expected}")]
    Owner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
        /// The client user's uid.
        expected: u32,
    },
    /// Group or other bits set.
    #[error(
        "{path}: incorrect permissions; file must be accessible only by its owner (chmod 600 {path})"
    )]
    Mode {
        /// The file.
        path: String,
    },
}

impl FileProblem {
    /// The refusal a request gets when the file is unusable.
    pub fn refusal(&self, host: &str, ruser: &str, service: &str) -> Refusal {
        Refusal::File {
            ruser: ruser.into(),
            host: host.into(),
            service: service.into(),
            problem: self.clone(),
        }
    }
}

/// Whether an address prints (inet_ntop) as exactly `127.0.0.1` or `::1`: the only
/// addresses for which a `localhost` entry matches whatever the peer's name.
pub fn is_amanda_loopback(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets() == [127, 0, 0, 1],
        IpAddr::V6(a) => a.segments() == [0, 0, 0, 0, 0, 0, 0, 1],
    }
}

/// The owner/mode rule: owned by the client user, `mode & 0o077 == 0`.
pub fn check_metadata(
    path: &str,
    owner: u32,
    mode: u32,
    client_uid: u32,
) -> Result<(), FileProblem> {
    if owner != client_uid {
        return Err(FileProblem::Owner {
            path: path.into(),
            owner,
            expected: client_uid,
        });
    }
    if mode & 0o077 != 0 {
        return Err(FileProblem::Mode { path: path.into() });
    }
    Ok(())
}

/// Opens `path`, checks owner and mode on the opened file (like Amanda's fstat, so after
/// symlinks), and parses it.
pub fn load(path: &Path, client_uid: u32, client_login: &str) -> Result<AmandaHosts, FileProblem> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let display = path.to_string_lossy().into_owned();
    let cannot = |e: std::io::Error| FileProblem::CannotOpen {
        path: display.clone(),
        reason: crate::fs::strerror(&e),
    };
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let md = f.metadata().map_err(cannot)?;
    check_metadata(&display, md.uid(), md.mode(), client_uid)?;
    let mut text = Vec::new();
    f.read_to_end(&mut text).map_err(cannot)?;
    Ok(AmandaHosts::parse(&display, &text, client_login))
}

fn split<'a>(s: &'a str, seps: &'a [char]) -> impl Iterator<Item = &'a str> + 'a {
    s.split(move |c| seps.contains(&c))
        .filter(|t| !t.is_empty())
}

impl AmandaHosts {
    /// Parses the file's text. `path` is used in refusal texts; `client_login` is the user a
    /// line without user column stands for. Never fails: lines that cannot match are kept
    /// as written or skipped, like Amanda does.
    pub fn parse(path: &str, text: &[u8], client_login: &str) -> AmandaHosts {
        let mut entries = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.split(|b| *b == 0).next().unwrap_or(&[]);
            let line = String::from_utf8_lossy(line);
            // strtok(" \t") for host and user, then strtok(" \t,") for the services.
            let mut rest = line.as_ref();
            let mut take = |seps: &[char]| -> Option<String> {
                let start = rest.find(|c: char| !seps.contains(&c))?;
                let r = &rest[start..];
                let end = r.find(|c: char| seps.contains(&c)).unwrap_or(r.len());
                let tok = r[..end].to_string();
                rest = &r[end..];
                Some(tok)
            };
            let Some(host) = take(&[' ', '\t']) else {
                continue;
            };
            let user = take(&[' ', '\t']);
            let services = split(rest, &[' ', '\t', ',']).map(str::to_string).collect();
            entries.push(HostsEntry {
                host,
                user,
                services,
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            });
        }
        AmandaHosts {
            path: path.to_string(),
            client_login: client_login.to_string(),
            entries,
        }
    }

    /// Whether `remote_user` from `peer_name` may run `service`. `peer_is_loopback_addr`
    /// must be [`is_amanda_loopback`] of the peer's address.
    pub fn check(
        &self,
        peer_name: &str,
        peer_is_loopback_addr: bool,
        remote_user: &str,
        service: &str,
    ) -> Result<(), Refusal> {
        if self
            .matching_line(peer_name, peer_is_loopback_addr, remote_user, service)
            .is_some()
        {
            return Ok(());
        }
        let (ruser, host, service_s, path) = (
            remote_user.to_string(),
            peer_name.to_string(),
            service.to_string(),
            self.path.clone(),
        );
        Err(match service {
            "amindexd" | "amidxtaped" => Refusal::NotAllowedRecovery {
                ruser,
                host,
                service: service_s,
                path,
            },
            "amdump" | "noop" | "selfcheck" | "sendsize" | "sendbackup" => Refusal::NotAllowed {
                ruser,
                host,
                service: service_s,
                path,
            },
            _ => Refusal::InvalidService {
                ruser,
                host,
                service: service_s,
                path,
            },
        })
    }

    /// The first line that allows the request, if any.
    pub fn matching_line(
        &self,
        peer_name: &str,
        peer_is_loopback_addr: bool,
        remote_user: &str,
        service: &str,
    ) -> Option<&HostsEntry> {
        let amdump_service = AMDUMP_SERVICES.contains(&service);
        self.entries.iter().find(|e| {
            let host_ok = e.host.eq_ignore_ascii_case(peer_name)
                || (peer_is_loopback_addr
                    && (e.host.eq_ignore_ascii_case("localhost")
                        || e.host.eq_ignore_ascii_case("localhost.localdomain")));
            let user = e.user.as_deref().unwrap_or(&self.client_login);
            if !host_ok || !user.eq_ignore_ascii_case(remote_user) {
                return false;
            }
            if e.services.is_empty() {
                return amdump_service;
            }
            e.services
                .iter()
                .any(|s| s == service || (s == "amdump" && amdump_service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/var/backups/.amandahosts";

    fn hosts(text: &str) -> AmandaHosts {
        AmandaHosts::parse(PATH, text.as_bytes(), "backup")
    }

    #[test]
    fn debian_default_line_allows_only_the_amdump_services() {
        let h = hosts("localhost backup\n");
        for s in AMDUMP_SERVICES {
            assert_eq!(h.check("localhost", false, "backup", s), Ok(()));
        }
        assert!(h.check("localhost", false, "backup", "amindexd").is_err());
    }

    #[test]
    fn refusal_text_matches_real_amandad() {
        // harness gotcha 10, spec TV-12
        for (text, host, loopback, user, service, want) in [
            (
                "localhost backup\n",
                "localhost",
                false,
                "backup",
                "amindexd",
                "user backup from localhost is not allowed to execute the service amindexd: Please add the line \"localhost backup amindexd amidxtaped\" to /var/backups/.amandahosts on the server",
            ),
            (
                "",
                "localhost",
                true,
                "backup",
                "noop",
                "user backup from localhost is not allowed to execute the service noop: Please add the line \"localhost backup amdump\" to /var/backups/.amandahosts on the client",
            ),
            (
                "",
                "h",
                false,
                "u",
                "bogus",
                "user u from h is not allowed to execute the service bogus: /var/backups/.amandahosts: invalid service bogus",
            ),
        ] {
            let refused = hosts(text)
                .check(host, loopback, user, service)
                .unwrap_err()
                .to_string();
            assert_eq!(refused, want);
        }
    }

    #[test]
    fn host_is_exact_and_case_insensitive_and_localhost_needs_the_loopback_address() {
        let h = hosts("Server.Example.COM backup amdump\nlocalhost.localdomain backup\n");
        assert!(
            h.check("server.example.com", false, "BACKUP", "sendbackup")
                .is_ok()
        );
        assert!(
            h.check("server.example", false, "backup", "sendbackup")
                .is_err()
        );
        assert!(h.check("myhost", true, "backup", "noop").is_ok());
        assert!(h.check("myhost", false, "backup", "noop").is_err());
        assert!(is_amanda_loopback(&"127.0.0.1".parse().unwrap()));
        assert!(is_amanda_loopback(&"::1".parse().unwrap()));
        assert!(!is_amanda_loopback(&"127.0.1.1".parse().unwrap()));
        assert!(!is_amanda_loopback(&"::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn user_defaults_to_client_login_and_services_split_on_commas() {
        let h = hosts("h\n\nh2 root amindexd,amidxtaped\tsendsize\n#h3 backup\n");
        assert!(h.check("h", false, "backup", "selfcheck").is_ok());
        assert!(h.check("h", false, "root", "selfcheck").is_err());
        assert!(h.check("h2", false, "root", "amidxtaped").is_ok());
        assert!(h.check("h2", false, "root", "sendsize").is_ok());
        assert!(h.check("h2", false, "root", "noop").is_err());
        assert!(h.check("#h3", false, "backup", "noop").is_ok());
        assert_eq!(h.entries.len(), 3);
    }

    #[test]
    fn owner_and_mode_rules() {
        assert_eq!(check_metadata(PATH, 34, 0o100600, 34), Ok(()));
        assert_eq!(
            check_metadata(PATH, 0, 0o100600, 34)
                .unwrap_err()
                .to_string(),
            "/var/backups/.amandahosts: owned by id 0, should be 34"
        );
        assert_eq!(
            check_metadata(PATH, 34, 0o100640, 34)
                .unwrap_err()
                .to_string(),
            "/var/backups/.amandahosts: incorrect permissions; file must be accessible only by its owner (chmod 600 /var/backups/.amandahosts)"
        );
    }

    #[test]
    fn load_checks_the_opened_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".amandahosts");
        std::fs::write(&p, "localhost backup amdump\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let uid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&p).unwrap().uid()
        };
        assert!(matches!(
            load(&p, uid, "backup"),
            Err(FileProblem::Mode { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let h = load(&p, uid, "backup").unwrap();
        assert!(h.check("localhost", true, "backup", "noop").is_ok());
        assert!(matches!(
            load(&dir.path().join("missing"), uid, "backup"),
            Err(FileProblem::CannotOpen { .. })
        ));
    }
}
