//! amanda-rs's own settings (not Amanda's): TCP heartbeat, logging, run directory, ...
//!
//! Layered with the `config` crate: built-in defaults < a TOML file (default
//! [`DEFAULT_PATH`], optional; a path given explicitly must exist) < environment variables
//! `AMANDA_RS_<KEY>`, where nested keys use `__` (`AMANDA_RS_HEARTBEAT__IDLE_SECS=30`,
//! `AMANDA_RS_RUN_DIR=/run/x`). Values from the environment are parsed as numbers or
//! booleans when they look like one. `AMANDA_RS_LOG=FILTER` is short for
//! `AMANDA_RS_LOG__LEVEL=FILTER`: the one log-level convention of amandad, dumper and
//! portpool (a level, or env_logger's `target=level` directives; see [`is_log_filter`]).
//!
//! To add a setting: add a field with a doc comment and a default in `Default for
//! Settings` (and a check in [`Settings::validate`] if it has limits). Nothing else.
//!
//! What `config` does here: read and merge the layers, convert types, report which key
//! failed to convert. What it does not: reject unknown keys (a typo in the TOML file is
//! silently ignored), give line numbers, validate ranges (we do, in
//! [`Settings::validate`]), or watch the file.
//!
//! What this module must not do: hold Amanda's configuration (see [`crate::Config`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the settings file is looked for when no path is given.
pub const DEFAULT_PATH: &str = "/etc/amanda-rs/amanda-rs.toml";

/// TCP keepalive ("heartbeat") on long-lived control and data connections, so that a
/// firewall's idle timeout (often one hour) never silently drops a slow dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Heartbeat {
    /// Send keepalive probes at all (default true).
    pub enabled: bool,
    /// Idle time before the first probe, seconds (TCP_KEEPIDLE; default 10: under the
    /// shortest idle timeouts firewalls and NAT devices use, not just the common hour).
    pub idle_secs: u64,
    /// Time between probes, seconds (TCP_KEEPINTVL; default 10).
    pub interval_secs: u64,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT; default 6).
    pub probes: u32,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            enabled: true,
            idle_secs: 10,
            interval_secs: 10,
            probes: 6,
        }
    }
}

impl Heartbeat {
    /// Idle time as a Duration.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
    /// Probe interval as a Duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    /// Log file; none = standard error (default none).
    pub file: Option<PathBuf>,
    /// Level: error, warn, info, debug or trace, or env_logger directives such as
    /// `warn,amandad::server=debug` (default "info"; see [`is_log_filter`]).
    pub level: String,
    /// When the log file passes this many bytes it is renamed to `<file>.1` (replacing an
    /// older one) and a new file is started; 0 = never (default 64 MiB). Logrotate does the
    /// dated rotation; this is the bound when nobody runs it.
    pub max_bytes: u64,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            file: None,
            level: "info".into(),
            max_bytes: 64 << 20,
        }
    }
}

/// The client daemon's own knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Amandad {
    /// Threads for blocking service work (selfcheck checks, sendsize estimates; default 2).
    pub workers: usize,
    /// Under inetd's `dgram udp wait`, exit after this many idle seconds (default 30). Staying
    /// a little lets back-to-back requests (noop, then selfcheck) reach the same process
    /// instead of a datagram xinetd might drop while it restarts the service.
    pub idle_exit_secs: u64,
    /// The privileged tar helper (default: `amandad-runtar` beside the amandad binary).
    pub runtar_path: Option<PathBuf>,
    /// Most bsdtcp control connections open at once (default 256; lowered to what
    /// RLIMIT_NOFILE leaves after a reserve for dumps). Beyond it the oldest connection that
    /// has not yet made an accepted request is closed to admit the new one.
    pub max_connections: usize,
    /// A connection that has made no accepted request within this many seconds is closed
    /// (default 30; the Amanda server sends its REQ right after connecting).
    pub unauth_timeout_secs: u64,
    /// One budget for all partial input: frames being assembled and datagrams waiting for a
    /// name lookup, bytes (default 16 MiB). Past it the largest holder is closed or dropped.
    pub partial_input_bytes: usize,
    /// A connection whose unwritten output passes this many bytes is not read until the
    /// peer catches up (default 1 MiB).
    pub max_output_bytes: usize,
    /// Such a connection is closed when it takes none of its output for this many seconds,
    /// unless it carries a running dump (default 120).
    pub stalled_output_secs: u64,
    /// Requests running at once on one bsdtcp connection (default 64; the Amanda server
    /// runs a few). Further ones get a NAK.
    pub max_requests_per_connection: usize,
    /// Threads that resolve peer names, off the event loop (default 2).
    pub resolver_threads: usize,
    /// Addresses waiting for a lookup, at most (default 256); datagrams from further new
    /// addresses are dropped (the server retransmits), connections closed.
    pub resolver_queue: usize,
    /// Peer names kept (least recently used dropped first; default 4096).
    pub name_cache_entries: usize,
    /// How long a looked-up name is reused, seconds (default 60).
    pub name_cache_secs: u64,
    /// How long a failed lookup or check is reused, seconds (default 60).
    pub name_negative_cache_secs: u64,
    /// Refused requests and connections are logged at debug one by one and as one summary
    /// line per this many seconds (default 60).
    pub refusal_summary_secs: u64,
    /// Addresses, separated by spaces or commas, that may connect to the bsd/bsdudp data
    /// ports besides the server whose request opened them (default none): for a server whose
    /// control datagrams reach amandad through a relay or NAT its connections do not pass.
    pub extra_data_peers: String,
    /// Threads that compress `compress client fast|best` (gzip), shared by every dump of
    /// the daemon (default 0: as many as cores, at most 2).
    pub compress_threads: usize,
    /// The only programs a DLE's `client_custom_compress` / `client_encrypt` may name,
    /// separated by spaces or commas (default none: any absolute path, as Amanda; the
    /// server chooses them, and amandad runs them as the Amanda user).
    pub filter_programs: String,
    /// `amandad --dial-out`: the one connection this client keeps to the server's
    /// `dumper listen` (issue 14).
    pub dial_out: DialOut,
}

/// `amandad --dial-out` (issue 14): the client opens every connection of a night itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DialOut {
    /// The server's listener, `host` or `host:port` (port default 10080; required for
    /// `--dial-out`).
    pub server: String,
    /// The server's name as `.amandahosts` lists it (default: the host part of `server`);
    /// the connections amandad opened are checked against it instead of a reverse lookup.
    pub server_name: String,
    /// The configuration name the server backs this host up in (required).
    pub config: String,
    /// This host's name as the server's disklist has it (default: the system host name).
    pub hostname: String,
    /// The auth of the connections: bsdtcp (default) or ssl (TLS with amanda-client.conf's
    /// `ssl-*` settings; this host is the TLS client of its held connection and the TLS
    /// server of the sessions, as amandad is).
    pub auth: String,
    /// The first wait before dialing again after a failure, seconds (default 1); each
    /// further failure doubles it, up to `backoff_max_secs`, with random jitter.
    pub backoff_min_secs: u64,
    /// The longest wait between dials, seconds (default 60).
    pub backoff_max_secs: u64,
    /// A session's heartbeat, seconds (default 10; 0: off): while this side of a session
    /// sent nothing for this long it sends a frame the server drops, because TCP keepalive
    /// stops at an HTTP proxy and proxies close quiet tunnels (issue 14).
    pub session_heartbeat_secs: u64,
}

impl Default for DialOut {
    fn default() -> Self {
        DialOut {
            server: String::new(),
            server_name: String::new(),
            config: String::new(),
            hostname: String::new(),
            auth: "bsdtcp".into(),
            backoff_min_secs: 1,
            backoff_max_secs: 60,
            session_heartbeat_secs: 10,
        }
    }
}

impl DialOut {
    /// `server` as host and port (10080 when none is given).
    pub fn server_host_port(&self) -> Result<(String, u16), String> {
        let s = self.server.trim();
        if s.is_empty() {
            return Err("amandad.dial_out.server is not set (host or host:port of the server's `dumper listen`)".into());
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("amandad.dial_out.server {s:?}: bad port {p:?}"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (s, 10080),
        };
        Ok((host.to_string(), port))
    }

    /// Whether [`DialOut::auth`] is ssl (`Some(true)`), bsdtcp (`Some(false)`) or neither.
    pub fn ssl(&self) -> Option<bool> {
        match self.auth.trim().to_ascii_lowercase().as_str() {
            "ssl" => Some(true),
            "bsdtcp" => Some(false),
            _ => None,
        }
    }

    /// [`DialOut::server_name`], or the host part of `server`.
    pub fn server_name(&self) -> String {
        if !self.server_name.is_empty() {
            return self.server_name.clone();
        }
        self.server_host_port().map(|(h, _)| h).unwrap_or_default()
    }
}

impl Amandad {
    /// [`Amandad::filter_programs`] as paths.
    pub fn filter_programs(&self) -> Vec<std::path::PathBuf> {
        self.filter_programs
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(std::path::PathBuf::from)
            .collect()
    }

    /// [`Amandad::extra_data_peers`] as addresses, or the first word that is not one.
    pub fn extra_data_peers(&self) -> Result<Vec<std::net::IpAddr>, String> {
        self.extra_data_peers
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().map_err(|_| w.to_string()))
            .collect()
    }
}

impl Default for Amandad {
    fn default() -> Self {
        Amandad {
            workers: 2,
            idle_exit_secs: 30,
            runtar_path: None,
            max_connections: 256,
            unauth_timeout_secs: 30,
            partial_input_bytes: 16 << 20,
            max_output_bytes: 1 << 20,
            stalled_output_secs: 120,
            max_requests_per_connection: 64,
            resolver_threads: 2,
            resolver_queue: 256,
            name_cache_entries: 4096,
            name_cache_secs: 60,
            name_negative_cache_secs: 60,
            refusal_summary_secs: 60,
            extra_data_peers: String::new(),
            compress_threads: 0,
            filter_programs: String::new(),
            dial_out: DialOut::default(),
        }
    }
}

/// The dumper's taper.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Taper {
    /// Write volumes at most this fast, KiB/s (default 0: as fast as the device goes). A
    /// stand-in for a slow tape drive in tests and on shared disks.
    pub rate_limit_kibps: u64,
}

/// The server's (`dumper`'s) own knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dumper {
    /// The most one dump's INDEX stream may bring, in MiB before compression (default
    /// 1024, about ten million file names); a client that sends more fails its dump, so
    /// that it cannot fill the index directory (issue 10).
    pub max_index_mib: u64,
    /// How long the TLS handshake of an auth ssl connection may take, seconds (default 20,
    /// the bsdtcp connect timeout); a client that accepts the connection and then says
    /// nothing, or too little, fails this try of `connect-tries` when it passes.
    pub ssl_handshake_secs: u64,
    /// How long `dumper run` and `dumper check` wait for a `dialin yes` host's client to
    /// hold a connection to the listener, seconds (default 300; issue 14).
    pub dialin_wait_secs: u64,
    /// The listener's PING interval on a dial-in client's held connection, seconds
    /// (default 30): under the idle timeouts of NAT devices, and how fast a dead holder is
    /// noticed (3 unanswered PINGs).
    pub dialin_heartbeat_secs: u64,
    /// A dial-in session's heartbeat, seconds (default 10; 0: off): while the server's side
    /// of a session sent nothing for this long it sends a frame the client drops, because
    /// TCP keepalive stops at an HTTP proxy and proxies close quiet tunnels (issue 14).
    pub dialin_session_heartbeat_secs: u64,
    /// The heartbeat of connections `dumper` opens to a client through an HTTP proxy,
    /// seconds (default 10; 0: off): asked for on the noop that opens the connection and
    /// sent only when the client's amandad grants it (ours does, the real one ignores the
    /// ask), because proxies close quiet tunnels (issue 14).
    pub proxy_heartbeat_secs: u64,
}

impl Default for Dumper {
    fn default() -> Self {
        Dumper {
            max_index_mib: 1024,
            ssl_handshake_secs: 20,
            dialin_wait_secs: 300,
            dialin_heartbeat_secs: 30,
            dialin_session_heartbeat_secs: 10,
            proxy_heartbeat_secs: 10,
        }
    }
}

impl Dumper {
    /// [`Dumper::max_index_mib`] in bytes.
    pub fn max_index_bytes(&self) -> u64 {
        self.max_index_mib.saturating_mul(1024 * 1024)
    }

    /// [`Dumper::dialin_session_heartbeat_secs`] as a Duration (`None`: off).
    pub fn dialin_session_heartbeat(&self) -> Option<Duration> {
        (self.dialin_session_heartbeat_secs > 0)
            .then(|| Duration::from_secs(self.dialin_session_heartbeat_secs))
    }

    /// [`Dumper::proxy_heartbeat_secs`] as a Duration (`None`: off).
    pub fn proxy_heartbeat(&self) -> Option<Duration> {
        (self.proxy_heartbeat_secs > 0).then(|| Duration::from_secs(self.proxy_heartbeat_secs))
    }

    /// [`Dumper::dialin_wait_secs`] as a Duration.
    pub fn dialin_wait(&self) -> Duration {
        Duration::from_secs(self.dialin_wait_secs)
    }

    /// [`Dumper::ssl_handshake_secs`] as a Duration.
    pub fn ssl_handshake(&self) -> Duration {
        Duration::from_secs(self.ssl_handshake_secs)
    }
}

/// amanda-rs's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The Amanda user: daemons started as root switch to it (default "backup", Debian's).
    pub user: String,
    /// The client daemon.
    pub amandad: Amandad,
    /// TCP keepalive.
    pub heartbeat: Heartbeat,
    /// Logging.
    pub log: Log,
    /// The dumper's taper.
    pub taper: Taper,
    /// Run directory: portpool's host-wide lease registry lives here (default
    /// "/run/amanda-rs").
    pub run_dir: PathBuf,
    /// How long a port stays out of the pool after its connection closed, seconds, so
    /// TIME_WAIT never makes a bind fail (default 60).
    pub time_wait_hold_secs: u64,
    /// Check that peers' names resolve forward and back like Amanda does (default true).
    pub dns_check: bool,
    /// `.amandahosts` to use instead of `~<client login>/.amandahosts` (default none).
    pub amandahosts_path: Option<PathBuf>,
    /// GNU tar (default "/bin/tar", Debian's `GNUTAR`).
    pub gnutar_path: PathBuf,
    /// Amanda's libexec directory (default "/usr/lib/amanda").
    pub libexec_dir: PathBuf,
    /// The server.
    pub dumper: Dumper,
    /// The HTTP proxy of outbound connections (see [`crate::proxy`]).
    pub proxy: crate::proxy::ProxySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            user: "backup".into(),
            amandad: Amandad::default(),
            heartbeat: Heartbeat::default(),
            log: Log::default(),
            taper: Taper::default(),
            run_dir: PathBuf::from("/run/amanda-rs"),
            time_wait_hold_secs: 60,
            dns_check: true,
            amandahosts_path: None,
            gnutar_path: PathBuf::from("/bin/tar"),
            libexec_dir: PathBuf::from("/usr/lib/amanda"),
            dumper: Dumper::default(),
            proxy: crate::proxy::ProxySettings::default(),
        }
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Reading, parsing or converting failed (the `config` crate's message names the key
    /// or the file).
    #[error("amanda-rs settings: {0}")]
    Config(#[from] config::ConfigError),
    /// The proxy URL or its exceptions (names the setting or the environment variable).
    #[error("amanda-rs settings: {0}")]
    Proxy(#[from] crate::proxy::ProxyConfigError),
    /// A value is out of range.
    #[error("amanda-rs settings: {key} {problem}")]
    Invalid {
        /// The key (`heartbeat.probes`).
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// Loads defaults < `path` (or [`DEFAULT_PATH`] if it exists) < the process
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(path, None)
    }

    /// Like [`Settings::load`], with the environment given as a map instead of read from
    /// the process (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Settings, SettingsError> {
        let file = match path {
            Some(p) => config::File::from(p)
                .format(config::FileFormat::Toml)
                .required(true),
            None => config::File::from(Path::new(DEFAULT_PATH))
                .format(config::FileFormat::Toml)
                .required(false),
        };
        // `AMANDA_RS_LOG=debug` reads like env_logger's RUST_LOG; as a flat key it would
        // collide with the `[log]` table, so it is taken as `log.level`.
        let mut env = env.unwrap_or_else(|| std::env::vars().collect());
        if let Some(level) = env.remove("AMANDA_RS_LOG") {
            env.entry("AMANDA_RS_LOG__LEVEL".into()).or_insert(level);
        }
        let proxy_env = crate::proxy::ProxyEnv::capture(&env);
        let env = Some(env);
        let mut s: Settings = config::Config::builder()
            .add_source(config::Config::try_from(&Settings::default())?)
            .add_source(file)
            .add_source(
                config::Environment::with_prefix("AMANDA_RS")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        s.proxy.env = proxy_env;
        s.validate()?;
        Ok(s)
    }

    /// Range checks `config` cannot do.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key, problem: &str| {
            Err(SettingsError::Invalid {
                key,
                problem: problem.into(),
            })
        };
        // Whole-number settings with bounds, checked in this order.
        let within = |key, value: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                bad(key, &format!("must be between {lo} and {hi}"))
            }
        };
        let h = &self.heartbeat;
        if h.enabled {
            within("heartbeat.idle_secs", h.idle_secs, 1, 7200)?;
            within("heartbeat.interval_secs", h.interval_secs, 1, 600)?;
            within("heartbeat.probes", h.probes.into(), 1, 127)?;
        }
        if !is_log_filter(&self.log.level) {
            return bad(
                "log.level",
                "must be error, warn, info, debug or trace, or directives like `warn,amandad::server=debug`",
            );
        }
        let a = &self.amandad;
        within("amandad.workers", a.workers as u64, 1, 64)?;
        within(
            "amandad.max_connections",
            a.max_connections as u64,
            1,
            1_000_000,
        )?;
        within(
            "amandad.unauth_timeout_secs",
            a.unauth_timeout_secs,
            1,
            3600,
        )?;
        // A bsdtcp control frame may be 4 MiB; a smaller budget could never take one whole.
        if a.partial_input_bytes < (4 << 20) + 8 {
            return bad(
                "amandad.partial_input_bytes",
                "must be at least 4194312 (one whole 4 MiB frame)",
            );
        }
        if a.max_output_bytes < 64 << 10 {
            return bad("amandad.max_output_bytes", "must be at least 65536");
        }
        for (key, value, lo, hi) in [
            (
                "amandad.stalled_output_secs",
                a.stalled_output_secs,
                1,
                86_400,
            ),
            (
                "amandad.max_requests_per_connection",
                a.max_requests_per_connection as u64,
                1,
                100_000,
            ),
            ("amandad.resolver_threads", a.resolver_threads as u64, 1, 64),
            (
                "amandad.compress_threads",
                a.compress_threads as u64,
                0,
                256,
            ),
            (
                "amandad.resolver_queue",
                a.resolver_queue as u64,
                1,
                1_000_000,
            ),
            (
                "amandad.name_cache_entries",
                a.name_cache_entries as u64,
                16,
                10_000_000,
            ),
        ] {
            within(key, value, lo, hi)?;
        }
        if a.name_cache_secs > 86_400 || a.name_negative_cache_secs > 86_400 {
            return bad(
                "amandad.name_cache_secs",
                "and name_negative_cache_secs must be at most 86400",
            );
        }
        within(
            "amandad.refusal_summary_secs",
            a.refusal_summary_secs,
            1,
            86_400,
        )?;
        if let Err(bad_word) = self.amandad.extra_data_peers() {
            return Err(SettingsError::Invalid {
                key: "amandad.extra_data_peers",
                problem: format!("{bad_word:?} is not an IP address"),
            });
        }
        if self.log.max_bytes != 0 && self.log.max_bytes < 64 << 10 {
            return bad("log.max_bytes", "must be 0 (no limit) or at least 65536");
        }
        if self.user.is_empty() {
            return bad("user", "must not be empty");
        }
        if self.time_wait_hold_secs > 3600 {
            return bad("time_wait_hold_secs", "must be at most 3600");
        }
        if self.dumper.max_index_mib == 0 {
            return bad("dumper.max_index_mib", "must be at least 1");
        }
        if !(1..=3600).contains(&self.dumper.ssl_handshake_secs) {
            return bad("dumper.ssl_handshake_secs", "must be 1 to 3600");
        }
        within(
            "dumper.dialin_wait_secs",
            self.dumper.dialin_wait_secs,
            1,
            86_400,
        )?;
        within(
            "dumper.dialin_heartbeat_secs",
            self.dumper.dialin_heartbeat_secs,
            1,
            3600,
        )?;
        within(
            "dumper.dialin_session_heartbeat_secs",
            self.dumper.dialin_session_heartbeat_secs,
            0,
            3600,
        )?;
        within(
            "dumper.proxy_heartbeat_secs",
            self.dumper.proxy_heartbeat_secs,
            0,
            3600,
        )?;
        let d = &self.amandad.dial_out;
        within(
            "amandad.dial_out.session_heartbeat_secs",
            d.session_heartbeat_secs,
            0,
            3600,
        )?;
        within(
            "amandad.dial_out.backoff_min_secs",
            d.backoff_min_secs,
            1,
            3600,
        )?;
        within(
            "amandad.dial_out.backoff_max_secs",
            d.backoff_max_secs,
            d.backoff_min_secs,
            86_400,
        )?;
        if d.ssl().is_none() {
            return bad("amandad.dial_out.auth", "must be bsdtcp or ssl");
        }
        within(
            "proxy.answer_timeout_secs",
            self.proxy.answer_timeout_secs,
            1,
            3600,
        )?;
        // The proxy (setting and environment) is checked by the programs that connect
        // through it (dumper), not here: a stray `https_proxy` in amandad's environment must
        // not stop a daemon that makes no outbound connection.
        Ok(())
    }

    /// The TIME_WAIT hold as a Duration.
    pub fn time_wait_hold(&self) -> Duration {
        Duration::from_secs(self.time_wait_hold_secs)
    }
}

/// True if `spec` is a log filter amanda-rs reads (`AMANDA_RS_LOG`, `[log] level`): a level
/// (`off`, `error`, `warn`, `info`, `debug`, `trace`), or comma-separated env_logger
/// directives, each a level or `target=level` (`warn,amandad::server=debug`). Stricter than
/// env_logger, which takes any other word as a target: a misspelt level is an error here,
/// not a filter that silences everything.
pub fn is_log_filter(spec: &str) -> bool {
    let is_level = |w: &str| {
        ["off", "error", "warn", "info", "debug", "trace"]
            .iter()
            .any(|l| w.eq_ignore_ascii_case(l))
    };
    let is_target = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
    };
    !spec.trim().is_empty()
        && spec
            .split(',')
            .map(str::trim)
            .all(|d| match d.split_once('=') {
                Some((target, level)) => is_target(target.trim()) && is_level(level.trim()),
                None => is_level(d),
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `text` as the settings file, with no environment.
    fn from_file(text: &str) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("amanda-rs.toml");
        std::fs::write(&p, text).unwrap();
        Settings::load_from(Some(&p), env(&[]))
    }

    #[test]
    fn defaults_without_file_or_env() {
        let s = from_file("").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.heartbeat.idle(), Duration::from_secs(10));
        assert!(s.heartbeat.idle_secs * u64::from(s.heartbeat.probes) < 3600);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("amanda-rs.toml");
        std::fs::write(
            &p,
            "run_dir = \"/tmp/rd\"\n[heartbeat]\nidle_secs = 30\nprobes = 3\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&p),
            env(&[
                ("AMANDA_RS_HEARTBEAT__PROBES", "9"),
                ("AMANDA_RS_DNS_CHECK", "false"),
                ("AMANDA_RS_GNUTAR_PATH", "/usr/bin/tar"),
            ]),
        )
        .unwrap();
        assert_eq!(s.run_dir, PathBuf::from("/tmp/rd"));
        assert_eq!(s.heartbeat.idle_secs, 30);
        assert_eq!(s.heartbeat.probes, 9);
        assert_eq!(s.log.level, "debug");
        assert!(!s.dns_check);
        assert_eq!(s.gnutar_path, PathBuf::from("/usr/bin/tar"));
        let s = Settings::load_from(
            None,
            env(&[
                ("AMANDA_RS_AMANDAD__MAX_CONNECTIONS", "1000"),
                ("AMANDA_RS_LOG__MAX_BYTES", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.amandad.max_connections, 1000);
        assert_eq!(s.log.max_bytes, 0);
        let s = Settings::load_from(
            None,
            env(&[("AMANDA_RS_AMANDAD__EXTRA_DATA_PEERS", "198.18.0.1, ::1")]),
        )
        .unwrap();
        assert_eq!(
            s.amandad.extra_data_peers(),
            Ok(vec!["198.18.0.1".parse().unwrap(), "::1".parse().unwrap()])
        );
    }

    // issue 10: the INDEX stream had no limit.
    #[test]
    fn the_index_limit_is_a_setting_with_a_bounded_default() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.dumper.max_index_bytes(), 1 << 30);
        let s =
            Settings::load_from(None, env(&[("AMANDA_RS_DUMPER__MAX_INDEX_MIB", "32")])).unwrap();
        assert_eq!(s.dumper.max_index_bytes(), 32 << 20);
        let e = Settings::load_from(None, env(&[("AMANDA_RS_DUMPER__MAX_INDEX_MIB", "0")]))
            .unwrap_err();
        assert!(e.to_string().contains("dumper.max_index_mib"), "{e}");
    }

    // issue 13: a client that accepted the connection and said nothing held an ssl try for
    // a fixed 20 s.
    #[test]
    fn the_ssl_handshake_timeout_is_a_setting_with_amandas_connect_timeout_as_default() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.dumper.ssl_handshake(), Duration::from_secs(20));
        let s = Settings::load_from(None, env(&[("AMANDA_RS_DUMPER__SSL_HANDSHAKE_SECS", "3")]))
            .unwrap();
        assert_eq!(s.dumper.ssl_handshake(), Duration::from_secs(3));
        let e = Settings::load_from(None, env(&[("AMANDA_RS_DUMPER__SSL_HANDSHAKE_SECS", "0")]))
            .unwrap_err();
        assert!(e.to_string().contains("dumper.ssl_handshake_secs"), "{e}");
    }

    // issue 14: the proxy comes from [proxy] url or the conventional environment; a bad
    // one is an error naming the setting or variable (loading alone does not check it).
    #[test]
    fn the_proxy_setting_and_environment_are_read_and_checked_at_load() {
        let s = Settings::load_from(None, env(&[("https_proxy", "http://p:3128")])).unwrap();
        let p = s.proxy.policy().unwrap();
        assert_eq!(p.route("c", None).unwrap().0.to_string(), "p:3128");
        let s = Settings::load_from(
            None,
            env(&[
                ("https_proxy", "http://p:3128"),
                ("AMANDA_RS_PROXY__URL", "direct"),
            ]),
        )
        .unwrap();
        assert_eq!(s.proxy.policy().unwrap().proxy, None);
        let s = from_file("[proxy]\nurl = \"http://p\"\n").unwrap();
        assert_eq!(
            s.proxy.policy().unwrap_err().to_string(),
            "proxy.url \"http://p\" has no port (write http://host:port)"
        );
        let s = Settings::load_from(None, env(&[("no_proxy", "a,b c,!d")])).unwrap();
        let e = s.proxy.policy().unwrap_err();
        assert!(e.to_string().contains("no_proxy: \"!d\""), "{e}");
        let e = from_file("[proxy]\nanswer_timeout_secs = 0\n").unwrap_err();
        assert!(e.to_string().contains("proxy.answer_timeout_secs"), "{e}");
    }

    // issue 14: the dial-out settings of amandad and the dial-in wait of dumper.
    #[test]
    fn dial_out_settings_default_and_check() {
        let s =
            from_file("[amandad.dial_out]\nserver = \"srv:10081\"\nconfig = \"Daily\"\n").unwrap();
        let d = &s.amandad.dial_out;
        assert_eq!(d.server_host_port().unwrap(), ("srv".to_string(), 10081));
        assert_eq!(d.server_name(), "srv");
        assert_eq!((d.backoff_min_secs, d.backoff_max_secs), (1, 60));
        assert_eq!(s.dumper.dialin_wait(), Duration::from_secs(300));
        let s = Settings::load_from(
            None,
            env(&[("AMANDA_RS_AMANDAD__DIAL_OUT__SERVER", "198.18.0.1")]),
        )
        .unwrap();
        assert_eq!(
            s.amandad.dial_out.server_host_port().unwrap(),
            ("198.18.0.1".to_string(), 10080)
        );
        let e = DialOut::default().server_host_port().unwrap_err();
        assert!(e.contains("amandad.dial_out.server is not set"), "{e}");
        let e = from_file("[amandad.dial_out]\nbackoff_min_secs = 10\nbackoff_max_secs = 5\n")
            .unwrap_err();
        assert!(e.to_string().contains("backoff_max_secs"), "{e}");
        let e = from_file("[amandad.dial_out]\nauth = \"ssh\"\n").unwrap_err();
        assert!(e.to_string().contains("amandad.dial_out.auth"), "{e}");
        assert_eq!(s.amandad.dial_out.ssl(), Some(false));
        let s = from_file("[amandad.dial_out]\nauth = \"SSL\"\n").unwrap();
        assert_eq!(s.amandad.dial_out.ssl(), Some(true));
    }

    // issue 14: the dial-in sessions' heartbeat is on by default at both ends, 0 turns it
    // off, and an interval beyond an hour is refused.
    #[test]
    fn dialin_session_heartbeats_default_to_10s_and_0_is_off() {
        let s = from_file("").unwrap();
        assert_eq!(s.amandad.dial_out.session_heartbeat_secs, 10);
        assert_eq!(
            s.dumper.dialin_session_heartbeat(),
            Some(Duration::from_secs(10))
        );
        let s = from_file("[dumper]\ndialin_session_heartbeat_secs = 0\n").unwrap();
        assert_eq!(s.dumper.dialin_session_heartbeat(), None);
        // The same for connections through a proxy.
        assert_eq!(s.dumper.proxy_heartbeat(), Some(Duration::from_secs(10)));
        let s = from_file("[dumper]\nproxy_heartbeat_secs = 0\n").unwrap();
        assert_eq!(s.dumper.proxy_heartbeat(), None);
        let e = from_file("[dumper]\nproxy_heartbeat_secs = 3601\n").unwrap_err();
        assert!(e.to_string().contains("dumper.proxy_heartbeat_secs"), "{e}");
        let e = from_file("[amandad.dial_out]\nsession_heartbeat_secs = 3601\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("amandad.dial_out.session_heartbeat_secs"),
            "{e}"
        );
    }

    #[test]
    fn amanda_rs_log_is_the_log_level() {
        let s = Settings::load_from(None, env(&[("AMANDA_RS_LOG", "warn")])).unwrap();
        assert_eq!(s.log.level, "warn");
        let s = Settings::load_from(
            None,
            env(&[("AMANDA_RS_LOG", "warn"), ("AMANDA_RS_LOG__LEVEL", "debug")]),
        )
        .unwrap();
        assert_eq!(s.log.level, "debug", "the explicit key wins");
    }

    // issue 11: one log-level convention; AMANDA_RS_LOG takes env_logger directives too.
    #[test]
    fn amanda_rs_log_takes_a_level_or_target_directives_and_refuses_a_misspelt_level() {
        for ok in [
            "debug",
            "WARN",
            "warn,amandad::server=debug",
            "dumper=trace, off",
        ] {
            assert!(is_log_filter(ok), "{ok}");
            let s = Settings::load_from(None, env(&[("AMANDA_RS_LOG", ok)])).unwrap();
            assert_eq!(s.log.level, ok);
        }
        for bad in ["", "degub", "warn,", "amandad=loud", "=debug", "a b=info"] {
            assert!(!is_log_filter(bad), "{bad:?}");
        }
        let e = Settings::load_from(None, env(&[("AMANDA_RS_LOG", "verbose")])).unwrap_err();
        assert!(e.to_string().contains("log.level"), "{e}");
    }

    #[test]
    fn bad_values_and_missing_explicit_file_are_errors() {
        let e = from_file("[heartbeat]\nprobes = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "amanda-rs settings: heartbeat.probes must be between 1 and 127"
        );
        let e = from_file("[amandad]\npartial_input_bytes = 1000\n").unwrap_err();
        assert!(e.to_string().contains("amandad.partial_input_bytes"), "{e}");
        assert!(from_file("[amandad]\nresolver_threads = 0\n").is_err());
        let e = from_file("[amandad]\nextra_data_peers = \"198.18.0.1, server\"\n").unwrap_err();
        assert!(
            e.to_string().contains("\"server\" is not an IP address"),
            "{e}"
        );
        assert!(from_file("[log]\nmax_bytes = 10\n").is_err());
        assert!(from_file("[heartbeat]\nprobes = \"many\"\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(Settings::load_from(Some(&dir.path().join("missing.toml")), env(&[])).is_err());
    }
}
