//! From the command line, amanda-rs's settings and amanda-client.conf to what the loop and
//! the services need.
//!
//! Errors in amanda-client.conf or the settings do not stop the daemon: like amandad, it
//! starts and answers every request with a NAK naming the first error (spec §3.2 rule 2),
//! so the server's amcheck shows the admin what to fix.

use std::cell::RefCell;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use conf::amandahosts::{self, AmandaHosts, FileProblem};
use conf::{ClientConfig, Settings};
use log::warn;

use crate::intake::HostsCheck;
use crate::resolve::{CacheConfig, PoolConfig};
use crate::server::{Keepalive, Limits};
use crate::services::context::{ContextInner, ServiceContext};
use crate::tar::TarPaths;

/// Settings and amanda-client.conf, with the first problem found in either.
pub struct Loaded {
    pub settings: Settings,
    pub client: ClientConfig,
    /// The first error and whether there were more (answered to every request).
    pub error: Option<(String, bool)>,
    /// Warnings to log once the logger runs.
    pub warnings: Vec<String>,
}

/// Loads the settings (`--settings` or the default file) and amanda-client.conf
/// (`--client-conf`, or /etc/amanda/amanda-client.conf).
pub fn load(settings_path: Option<&Path>, client_conf: Option<&Path>) -> Loaded {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let settings = Settings::load(settings_path).unwrap_or_else(|e| {
        errors.push(e.to_string());
        Settings::default()
    });
    let loaded = match client_conf {
        Some(path) => {
            let text = std::fs::read(path).unwrap_or_else(|e| {
                errors.push(format!("{}: {e}", path.display()));
                Vec::new()
            });
            let name = path.display().to_string();
            ClientConfig::parse_with(&conf::fs::RealFs, &name, &text, path.parent())
        }
        None => ClientConfig::load(None),
    };
    let client = match loaded {
        Ok(l) => {
            warnings.extend(l.warnings.iter().map(ToString::to_string));
            l.value
        }
        Err(e) => {
            warnings.extend(e.warnings.iter().map(ToString::to_string));
            errors.extend(e.errors.iter().map(ToString::to_string));
            ClientConfig::parse_str("defaults", "")
                .map(|l| l.value)
                .unwrap_or_else(|_| unreachable_defaults())
        }
    };
    let error = errors
        .first()
        .map(|first| (first.clone(), errors.len() > 1));
    Loaded {
        settings,
        client,
        error,
        warnings,
    }
}

fn unreachable_defaults() -> ClientConfig {
    // An empty amanda-client.conf always parses; this only guards the impossible.
    panic!("the built-in amanda-client.conf defaults do not parse")
}

/// The keepalive of the settings, or none when disabled.
pub fn keepalive(settings: &Settings) -> Option<Keepalive> {
    settings.heartbeat.enabled.then(|| Keepalive {
        idle: settings.heartbeat.idle(),
        interval: settings.heartbeat.interval(),
        retries: settings.heartbeat.probes,
    })
}

/// The client's data-stream port range.
pub fn data_ports(client: &ClientConfig) -> proto::PortRange {
    client.unreserved_tcp_port
}

/// The facts the services need.
pub fn service_context(
    loaded: &Loaded,
    auth: &str,
    features_hex: String,
    user: &str,
) -> ServiceContext {
    let settings = &loaded.settings;
    let runtar_path = settings
        .amandad
        .runtar_path
        .clone()
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("amandad-runtar")))
        })
        .filter(|p| p.exists());
    let tmp_dir = std::env::temp_dir().join(format!("amandad-rs-{user}"));
    let _ = std::fs::create_dir_all(&tmp_dir);
    ServiceContext::new(ContextInner {
        auth: auth.to_string(),
        peer_name: String::new(),
        features_hex,
        tar: TarPaths {
            gnutar_path: settings.gnutar_path.clone(),
            runtar_path,
            gnutar_list_dir: PathBuf::from(&loaded.client.gnutar_list_dir),
            amandates: PathBuf::from(&loaded.client.amandates),
            tmp_dir,
        },
        config_name: Some(loaded.client.conf.clone()).filter(|c| !c.is_empty()),
        filter_programs: settings.amandad.filter_programs(),
    })
}

/// `.amandahosts`, re-read when the file changes (a long-running daemon must see the admin's
/// edits; a per-request re-read is what the real amandad does by being short-lived).
pub struct HostsFile {
    path: PathBuf,
    uid: u32,
    login: String,
    cache: RefCell<Option<(Stamp, Result<AmandaHosts, FileProblem>)>>,
}

type Stamp = (u64, u64, i64, SystemTime);

impl HostsFile {
    /// The file of `login` (uid `uid`): the settings' override or `~login/.amandahosts`.
    pub fn new(settings: &Settings, login: &str, uid: u32) -> HostsFile {
        let path = settings.amandahosts_path.clone().unwrap_or_else(|| {
            crate::privs::home_of(login)
                .unwrap_or_else(|| PathBuf::from("/var/backups"))
                .join(".amandahosts")
        });
        HostsFile {
            path,
            uid,
            login: login.to_string(),
            cache: RefCell::new(None),
        }
    }

    fn stamp(&self) -> Option<Stamp> {
        let md = std::fs::metadata(&self.path).ok()?;
        Some((md.dev(), md.ino(), md.size() as i64, md.modified().ok()?))
    }

    fn with_current<T>(&self, f: impl FnOnce(&Result<AmandaHosts, FileProblem>) -> T) -> T {
        let stamp = self.stamp();
        let mut cache = self.cache.borrow_mut();
        let fresh = matches!((&*cache, stamp), (Some((s, _)), Some(now)) if *s == now);
        if !fresh {
            let loaded = amandahosts::load(&self.path, self.uid, &self.login);
            if let Err(e) = &loaded {
                warn!("{e}");
            }
            let key = stamp.unwrap_or((0, 0, -1, SystemTime::UNIX_EPOCH));
            *cache = Some((key, loaded));
        }
        match &*cache {
            Some((_, hosts)) => f(hosts),
            None => f(&Err(FileProblem::CannotOpen {
                path: self.path.display().to_string(),
                reason: "not loaded".into(),
            })),
        }
    }
}

impl HostsCheck for HostsFile {
    fn check(&self, host: &str, addr: IpAddr, user: &str, service: &str) -> Result<(), String> {
        self.with_current(|hosts| match hosts {
            Ok(h) => h
                .check(host, amandahosts::is_amanda_loopback(&addr), user, service)
                .map_err(|r| r.to_string()),
            Err(problem) => Err(problem.refusal(host, user, service).to_string()),
        })
    }
}

/// The idle exit of the settings.
pub fn idle_exit(settings: &Settings) -> Duration {
    Duration::from_secs(settings.amandad.idle_exit_secs)
}

/// Descriptors kept out of the connection cap: the daemon's own (log, poll, waker, sockets,
/// pipes of the pools) and about ten dumps at once (each: tar's two pipes, a side pipe, up
/// to three listeners and three connections, /dev/null).
pub const FD_RESERVE: u64 = 128;

/// The loop's bounds from the settings, with the connection cap lowered to what
/// RLIMIT_NOFILE leaves after [`FD_RESERVE`] (the soft limit is raised toward the hard one
/// first). Returns a warning when the cap had to be lowered.
pub fn limits(settings: &Settings) -> (Limits, Option<String>) {
    let a = &settings.amandad;
    let wanted = a.max_connections as u64;
    let (cap, warning) = connection_cap(wanted, fd_room(wanted + FD_RESERVE));
    let limits = Limits {
        max_connections: usize::try_from(cap).unwrap_or(usize::MAX),
        unauth_timeout: Duration::from_secs(a.unauth_timeout_secs),
        partial_input: a.partial_input_bytes,
        max_output: a.max_output_bytes,
        stalled_output: Duration::from_secs(a.stalled_output_secs),
        max_requests_per_conn: a.max_requests_per_connection,
        refusal_summary: Duration::from_secs(a.refusal_summary_secs),
        name_cache: CacheConfig {
            entries: a.name_cache_entries,
            ttl: Duration::from_secs(a.name_cache_secs),
            negative_ttl: Duration::from_secs(a.name_negative_cache_secs),
        },
        resolver: PoolConfig {
            threads: a.resolver_threads,
            queue: a.resolver_queue,
        },
    };
    (limits, warning)
}

/// The cap on connections that leaves [`FD_RESERVE`] of `soft` descriptors (`None`:
/// unlimited), and a warning when that is less than `wanted`.
fn connection_cap(wanted: u64, soft: Option<u64>) -> (u64, Option<String>) {
    match soft {
        Some(soft) if soft < wanted + FD_RESERVE => {
            let cap = soft.saturating_sub(FD_RESERVE).max(1);
            (
                cap,
                Some(format!(
                    "amandad.max_connections {wanted} lowered to {cap}: RLIMIT_NOFILE is {soft} and {FD_RESERVE} descriptors are kept for dumps (raise the limit, e.g. LimitNOFILE= in the systemd unit)"
                )),
            )
        }
        _ => (wanted, None),
    }
}

/// The receive buffer asked for on UDP sockets: at least a second of a flood of small
/// datagrams (each costs the kernel about 1 KiB), so that a server's REQ among them is not
/// dropped while the loop is busy.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Sets [`UDP_RECEIVE_BUFFER`] on `sock`: past `net.core.rmem_max` when root, else as far as
/// the limit allows.
pub fn widen_receive_buffer(sock: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(sock);
    if s.recv_buffer_size().is_ok_and(|n| n >= UDP_RECEIVE_BUFFER) {
        return;
    }
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    if setsockopt(sock, RcvBufForce, &UDP_RECEIVE_BUFFER).is_err() {
        let _ = s.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    }
}

/// Raises the soft RLIMIT_NOFILE toward `want` (never past the hard limit) and returns the
/// soft limit in force; `None` when it cannot be read or is unlimited.
fn fd_room(want: u64) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft == libc::RLIM_INFINITY {
        return None;
    }
    if soft < want {
        let target = want.min(hard);
        if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            return Some(target);
        }
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: with `--nofile 256` 400 idle connections starved a fresh noop. The cap
    /// keeps amandad under RLIMIT_NOFILE with room for dumps.
    #[test]
    fn the_connection_cap_stays_under_the_descriptor_limit() {
        assert_eq!(connection_cap(256, Some(1024)), (256, None));
        assert_eq!(connection_cap(256, None), (256, None));
        let (cap, warning) = connection_cap(256, Some(256));
        assert_eq!(cap, 128);
        assert!(warning.unwrap().contains("RLIMIT_NOFILE is 256"));
        assert_eq!(connection_cap(256, Some(100)).0, 1);
    }

    #[test]
    fn every_bound_comes_from_the_settings() {
        let mut s = Settings::default();
        s.amandad.unauth_timeout_secs = 7;
        s.amandad.partial_input_bytes = 5 << 20;
        s.amandad.resolver_queue = 9;
        s.amandad.name_negative_cache_secs = 11;
        let (l, _) = limits(&s);
        assert_eq!(l.unauth_timeout, Duration::from_secs(7));
        assert_eq!(l.partial_input, 5 << 20);
        assert_eq!(l.resolver.queue, 9);
        assert_eq!(l.name_cache.negative_ttl, Duration::from_secs(11));
        assert_eq!(l.max_requests_per_conn, 64);
    }
}
