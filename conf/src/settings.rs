//! amanda-rs's own settings (not Amanda's): TCP heartbeat, logging, run directory, ...
//!
//! Layered with the `config` crate: built-in defaults < a TOML file (default
//! [`DEFAULT_PATH`], optional; a path given explicitly must exist) < environment variables
//! `AMANDA_RS_<KEY>`, where nested keys use `__` (`AMANDA_RS_HEARTBEAT__IDLE_SECS=30`,
//! `AMANDA_RS_RUN_DIR=/run/x`). Values from the environment are parsed as numbers or
//! booleans when they look like one. `AMANDA_RS_LOG=LEVEL` is short for
//! `AMANDA_RS_LOG__LEVEL=LEVEL`.
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
    /// Level: error, warn, info, debug or trace (default "info").
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            file: None,
            level: "info".into(),
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
}

impl Default for Amandad {
    fn default() -> Self {
        Amandad {
            workers: 2,
            idle_exit_secs: 30,
            runtar_path: None,
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
}

impl Default for Dumper {
    fn default() -> Self {
        Dumper {
            max_index_mib: 1024,
        }
    }
}

impl Dumper {
    /// [`Dumper::max_index_mib`] in bytes.
    pub fn max_index_bytes(&self) -> u64 {
        self.max_index_mib.saturating_mul(1024 * 1024)
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
        let env = Some(env);
        let s: Settings = config::Config::builder()
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
        let h = &self.heartbeat;
        if h.enabled && !(1..=7200).contains(&h.idle_secs) {
            return bad("heartbeat.idle_secs", "must be between 1 and 7200");
        }
        if h.enabled && !(1..=600).contains(&h.interval_secs) {
            return bad("heartbeat.interval_secs", "must be between 1 and 600");
        }
        if h.enabled && !(1..=127).contains(&h.probes) {
            return bad("heartbeat.probes", "must be between 1 and 127");
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return bad("log.level", "must be error, warn, info, debug or trace");
        }
        if !(1..=64).contains(&self.amandad.workers) {
            return bad("amandad.workers", "must be between 1 and 64");
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
        Ok(())
    }

    /// The TIME_WAIT hold as a Duration.
    pub fn time_wait_hold(&self) -> Duration {
        Duration::from_secs(self.time_wait_hold_secs)
    }
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

    #[test]
    fn defaults_without_file_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "").unwrap();
        let s = Settings::load_from(Some(&p), env(&[])).unwrap();
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

    #[test]
    fn bad_values_and_missing_explicit_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("amanda-rs.toml");
        std::fs::write(&p, "[heartbeat]\nprobes = 0\n").unwrap();
        let e = Settings::load_from(Some(&p), env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "amanda-rs settings: heartbeat.probes must be between 1 and 127"
        );
        std::fs::write(&p, "[heartbeat]\nprobes = \"many\"\n").unwrap();
        assert!(Settings::load_from(Some(&p), env(&[])).is_err());
        assert!(Settings::load_from(Some(&dir.path().join("missing.toml")), env(&[])).is_err());
    }
}
