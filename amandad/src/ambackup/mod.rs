//! `ambackup`: a client-initiated backup (spec §14), wire-compatible with Amanda 3.5.1's
//! `ambackup`. This host opens the connection to the server's amandad (service
//! `ambackupd`), asks for its own DLEs (`list`), checks them with the local selfcheck on
//! the server's DLE XML (`check`), or sends their dumps over that same connection
//! (`backup [DLE...]`), with our own sendbackup machinery.
//!
//! Each request is its own connection, as with the real one: `noop` first (the server's
//! features), then `LISTDLE`, then `CHECK` or one `BACKUP` per DLE. The server name, auth
//! and port come from amanda-client.conf (`amdump_server`, `auth`, `client_port`, read for
//! `--config` as the real ambackup reads them); the connection comes from a reserved
//! port (`reserved-tcp-port`) like amservice's.
//!
//! Modules: [`wire`] (the bodies and replies, sans-IO), [`conn`] (the framed connection and
//! the exchange driver), [`dump`] (one DLE's data phase).
//!
//! What this module must not do: decide what a reply means (that is `wire`), or exit with
//! status 0 when a DLE was not backed up or a check found an error.

pub mod conn;
pub mod dump;
pub mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use conf::model::AuthSetting;
use conf::{ClientConfig, Settings};
use proto::Auth;
use proto::features::Features;

use crate::config::Loaded;
use crate::services::{self, ServiceContext, Start};
use conn::Conn;
use wire::{BackupRefused, Command, ListReply, Outcome};

/// The Amanda user (Debian's build): the `SECURITY USER` root sends, as amservice run by
/// the Amanda user would.
pub const AMANDA_USER: &str = "backup";

/// How long the server has for a noop, LISTDLE or CHECK reply.
const REP_WAIT: Duration = Duration::from_secs(60);

/// How long the server has for a BACKUP reply (it reads its curinfo and disklist).
const BACKUP_REP_WAIT: Duration = Duration::from_secs(300);

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    List,
    Check,
    Backup(Vec<String>),
}

/// The command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub config: Option<String>,
    pub verbose: u32,
    /// amanda-rs settings file (`--settings`), for the tar paths, the helper and `run_dir`.
    pub settings: Option<PathBuf>,
    pub action: Action,
}

/// The usage line.
pub const USAGE: &str = "USAGE: ambackup [--config <config>] [--verbose] [--settings <file>] list|check|backup [<diskname>...]";

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut config = None;
        let mut verbose = 0;
        let mut settings = None;
        let mut rest = Vec::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if let Some(v) = a.strip_prefix("--config=") {
                config = Some(v.to_string());
            } else if a == "--config" {
                config = Some(it.next().context("--config needs a value")?);
            } else if let Some(v) = a.strip_prefix("--settings=") {
                settings = Some(PathBuf::from(v));
            } else if a == "--settings" {
                settings = Some(PathBuf::from(
                    it.next().context("--settings needs a value")?,
                ));
            } else if a == "--verbose" || a == "-v" {
                verbose += 1;
            } else if a == "--" {
                rest.extend(it.by_ref());
            } else if a.starts_with('-') && rest.is_empty() {
                bail!("unknown option {a}\n{USAGE}");
            } else {
                rest.push(a);
            }
        }
        let mut rest = rest.into_iter();
        let action = match rest.next().as_deref() {
            Some("list") => Action::List,
            Some("check") => Action::Check,
            Some("backup") => Action::Backup(rest.by_ref().collect()),
            Some(other) => bail!("Unknown '{other}' command.\n{USAGE}"),
            None => bail!("{USAGE}"),
        };
        if rest.next().is_some() {
            bail!("list and check take no disk name\n{USAGE}");
        }
        Ok(Args {
            config,
            verbose,
            settings,
            action,
        })
    }
}

/// Everything a run needs, from the configuration.
pub struct Client {
    pub config: String,
    pub server: String,
    pub addrs: Vec<SocketAddr>,
    pub auth: Auth,
    pub user: String,
    pub ours: Features,
    pub reserved: proto::PortRange,
    /// auth ssl: the source ports (amservice's unreserved range) and the client's ssl-dir.
    pub unreserved: proto::PortRange,
    pub ssl: conf::SslSettings,
    pub run_dir: PathBuf,
    /// Whether the server is reached through an HTTP proxy (`[proxy]`, `https_proxy`,
    /// `no_proxy`; issue 14), as `amandad --dial-out` and dumper decide it.
    pub proxy: conf::proxy::ProxyPolicy,
    pub ctx: ServiceContext,
    pub verbose: u32,
}

/// Why ambackup does not even try auth bsdtcp through a proxy (issue 14): the server's
/// amandad requires a reserved source port and would see the proxy's.
fn bsdtcp_through_proxy(via: &conn::Via<'_>) -> String {
    format!(
        "auth bsdtcp cannot go through HTTP proxy {} (from {}): the server would see the proxy's address and source port, never a reserved port of this host, and refuse the connection (\"not secure\"); use auth \"ssl\" in amanda-client.conf, which authenticates by certificate, or reach the server directly (proxy.no_proxy / no_proxy)",
        via.url, via.origin
    )
}

fn server_port(client_port: &str) -> Result<u16> {
    if client_port.is_empty() || !client_port.bytes().all(|b| b.is_ascii_digit()) {
        let name = if client_port.is_empty() {
            "amanda"
        } else {
            client_port
        };
        let services =
            portpool_alloc::pool::load_services(std::path::Path::new("/etc/services")).ok();
        return Ok(services
            .and_then(|s| s.port_of(name, proto::ports::Transport::Tcp))
            .unwrap_or(10080));
    }
    client_port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("client_port {client_port:?} is not a port"))
}

fn login() -> String {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return AMANDA_USER.to_string();
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| AMANDA_USER.to_string(), |u| u.name)
}

impl Client {
    /// Reads amanda-client.conf (global, then `/etc/amanda/<config>/`) and the settings.
    pub fn from_args(args: &Args) -> Result<Client> {
        let settings = Settings::load(args.settings.as_deref()).context("amanda-rs settings")?;
        let config = match &args.config {
            Some(c) => c.clone(),
            None => {
                ClientConfig::load(None)
                    .map_err(|e| anyhow::anyhow!("amanda-client.conf: {e}"))?
                    .value
                    .conf
            }
        };
        let loaded = ClientConfig::load(Some(&config)).map_err(|e| {
            anyhow::anyhow!("Errors processing config file (amanda-client.conf for {config}): {e}")
        })?;
        for w in &loaded.warnings {
            eprintln!("ambackup: {w}");
        }
        let client = loaded.value;
        let auth = match &client.auth {
            AuthSetting::Known(a @ (Auth::Bsdtcp | Auth::Ssl)) => *a,
            AuthSetting::Known(a) => bail!(
                "auth {} is not supported by ambackup (use bsdtcp or ssl)",
                a.name()
            ),
            AuthSetting::Other(s) => {
                bail!("auth {s:?} is not supported by ambackup (use bsdtcp or ssl)")
            }
        };
        let port = server_port(&client.client_port)?;
        let server = client.amdump_server.clone();
        let addrs: Vec<SocketAddr> = (server.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("amdump_server {server:?}"))?
            .collect();
        if addrs.is_empty() {
            bail!("amdump_server {server:?} has no address");
        }
        let user = if client.client_username.is_empty() || !nix::unistd::getuid().is_root() {
            login()
        } else {
            client.client_username.clone()
        };
        let ours = services::features::advertised();
        let reserved = client.reserved_tcp_port;
        let unreserved = client.unreserved_tcp_port;
        let ssl = client.ssl.clone();
        let run_dir = settings.run_dir.join("ports");
        let proxy = settings
            .proxy
            .policy()
            .map_err(|e| anyhow::anyhow!("amanda-rs settings: {e}"))?;
        let loaded = Loaded {
            settings,
            client,
            error: None,
            warnings: Vec::new(),
        };
        let ctx = crate::config::service_context(&loaded, auth.name(), ours.to_hex(), &user);
        Ok(Client {
            config,
            server,
            addrs,
            auth,
            user,
            ours,
            reserved,
            unreserved,
            ssl,
            run_dir,
            proxy,
            ctx,
            verbose: args.verbose,
        })
    }

    fn connect(&self) -> Result<Conn> {
        let mut last = None;
        for addr in &self.addrs {
            let run_dir = Some(self.run_dir.clone());
            let via = self
                .proxy
                .route(&self.server, Some(addr.ip()))
                .map(|(url, origin)| conn::Via {
                    url,
                    origin,
                    answer_timeout: self.proxy.answer_timeout,
                });
            let c = match (self.auth, via) {
                (Auth::Ssl, via) => conn::connect_ssl(
                    *addr,
                    via.as_ref(),
                    self.unreserved,
                    run_dir,
                    &self.ssl,
                    &self.server,
                ),
                (_, Some(via)) => bail!(bsdtcp_through_proxy(&via)),
                _ => conn::connect_reserved(*addr, self.reserved, run_dir),
            };
            match c {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no address"), anyhow::Error::from))
            .with_context(|| format!("connecting to {} ({})", self.server, self.auth.name()))
    }

    /// One request on its own connection; the REP body.
    fn request(&self, body: Vec<u8>, wait: Duration) -> Result<(Conn, Vec<u8>)> {
        let mut conn = self.connect()?;
        let rep = conn.exchange(&self.user, body, wait)?;
        Ok((conn, rep))
    }

    /// `noop`: the server's features (`None` when it refused; the real ambackup goes on).
    pub fn noop(&self) -> Option<Features> {
        let body = wire::noop_body(&self.ours, &self.server, &self.config).ok()?;
        match self.request(body, REP_WAIT) {
            Ok((mut conn, rep)) => {
                conn.finish_exchange(Duration::from_secs(5));
                wire::noop_features(&rep)
            }
            Err(e) => {
                eprintln!("ambackup: noop: {e:#}");
                None
            }
        }
    }

    fn ambackupd(&self, cmd: Command<'_>, wait: Duration) -> Result<(Conn, Vec<u8>)> {
        let body = wire::ambackupd_body(&self.ours, &self.server, &self.config, cmd)?;
        self.request(body, wait)
    }

    /// `LISTDLE`; prints the DLEs when `print`, the server's errors always.
    pub fn list(&self, print: bool, out: &mut dyn FnMut(&str)) -> Result<Vec<String>, usize> {
        let (mut conn, rep) = match self.ambackupd(Command::ListDle, REP_WAIT) {
            Ok(r) => r,
            Err(e) => {
                out(&format!("ERROR {e:#}"));
                return Err(1);
            }
        };
        conn.finish_exchange(Duration::from_secs(5));
        match wire::parse_list(&rep) {
            ListReply::Dles(dles) => {
                if print {
                    for d in &dles {
                        out(&d.message);
                    }
                }
                Ok(dles.into_iter().map(|d| d.disk).collect())
            }
            ListReply::Errors(lines) => {
                for l in &lines {
                    out(l);
                }
                Err(lines.len().max(1))
            }
            ListReply::Malformed(e) => {
                out(&format!("ERROR: {e}"));
                Err(1)
            }
        }
    }

    /// `CHECK`, then the local selfcheck on the server's DLEs; the number of errors.
    pub fn check(&self, out: &mut dyn FnMut(&str)) -> usize {
        let (mut conn, rep) = match self.ambackupd(Command::Check, REP_WAIT) {
            Ok(r) => r,
            Err(e) => {
                out(&format!("ERROR {e:#}"));
                return 1;
            }
        };
        conn.finish_exchange(Duration::from_secs(5));
        drop(conn);
        let reply = wire::parse_check(&rep);
        for l in &reply.errors {
            out(l);
        }
        // Unlike 3.5.1 (spec §14.3, harness A5), the server's errors count.
        let mut errors = reply.errors.len();
        if let Some(input) = reply.selfcheck {
            let rep = match services::selfcheck::start(&self.ctx, &input) {
                Start::Job(job) => job(&mut |_| {}),
                Start::Reply(r) => r,
                Start::Backup(_) => Vec::new(),
            };
            let report = wire::selfcheck_report(&rep, self.verbose > 0);
            for l in &report.lines {
                out(l);
            }
            errors += report.errors;
        }
        errors
    }

    /// `BACKUP <disk>` and its dump; whether the server said `backup done`.
    pub fn backup(&self, disk: &str, out: &mut dyn FnMut(&str)) -> bool {
        let (mut conn, rep) =
            match self.ambackupd(Command::Backup(disk.as_bytes()), BACKUP_REP_WAIT) {
                Ok(r) => r,
                Err(e) => {
                    out(&format!("ERROR {e:#}"));
                    return false;
                }
            };
        let reply = match wire::parse_backup(&rep) {
            Ok(r) => r,
            Err(BackupRefused::Errors(lines)) => {
                conn.finish_exchange(Duration::from_secs(5));
                for l in &lines {
                    out(l);
                }
                return false;
            }
            Err(e @ BackupRefused::Malformed(_)) => {
                out(&e.to_string());
                return false;
            }
        };
        match dump::run(&mut conn, &reply, &self.ctx, out) {
            Ok(Outcome::Done) => true,
            Ok(Outcome::Failed(why)) => {
                if !why.starts_with("backup ") {
                    out(&format!("backup failed: {disk}: {why}"));
                }
                false
            }
            Err(e) => {
                out(&format!("backup failed: {disk}: {e}"));
                false
            }
        }
    }
}

/// Runs `args`, printing to stdout as the real ambackup does; the exit status.
pub fn main(args: &Args) -> Result<i32> {
    let client = Client::from_args(args)?;
    let mut out = |l: &str| println!("{l}");
    let _features = client.noop();
    match &args.action {
        Action::List => Ok(match client.list(true, &mut out) {
            Ok(_) => 0,
            Err(_) => 1,
        }),
        Action::Check => {
            // As the real one: LISTDLE first (its errors are shown; CHECK repeats and counts
            // them).
            let _ = client.list(false, &mut out);
            let errors = client.check(&mut out);
            if errors == 0 {
                out("check succeeded");
                Ok(0)
            } else {
                out(&format!("check failed with {errors} errors"));
                Ok(1)
            }
        }
        Action::Backup(disks) => {
            let listed = client.list(false, &mut out).unwrap_or_default();
            let disks = if disks.is_empty() {
                listed
            } else {
                disks.clone()
            };
            if disks.is_empty() {
                out("No Dle to backup.");
                return Ok(1);
            }
            let mut failed = 0;
            for d in &disks {
                out("");
                out(&format!("Doing backup of {d}"));
                if !client.backup(d, &mut out) {
                    failed += 1;
                }
            }
            Ok(i32::from(failed > 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_real_ambackups_command_lines_parse() {
        let a = parse(&["--config", "Daily", "list"]).unwrap();
        assert_eq!(
            (a.config.as_deref(), &a.action),
            (Some("Daily"), &Action::List)
        );
        let a = parse(&["--config=Daily", "--verbose", "check"]).unwrap();
        assert_eq!((a.verbose, &a.action), (1, &Action::Check));
        let a = parse(&["--config", "D", "backup", "/home", "/etc"]).unwrap();
        assert_eq!(
            a.action,
            Action::Backup(vec!["/home".into(), "/etc".into()])
        );
        let a = parse(&["backup", "--", "-odd"]).unwrap();
        assert_eq!(a.action, Action::Backup(vec!["-odd".into()]));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        for (args, says) in [
            (&["--config"][..], "--config needs a value"),
            (&["-o", "x=y", "list"], "unknown option -o"),
            (&["dump"], "Unknown 'dump' command."),
            (&[], "USAGE"),
            (&["list", "/home"], "take no disk name"),
        ] {
            let e = parse(args).expect_err("refused").to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn client_port_is_a_number_or_a_service_name() {
        assert_eq!(server_port("10063").unwrap(), 10063);
        assert!(server_port("0").is_err());
        assert!(server_port("99999").is_err());
        // The amanda service (10080 in /etc/services, and when it is not there).
        assert_eq!(server_port("").unwrap(), 10080);
    }
}
