//! The `dumper` binary: argument handling and exit codes; the work is in the library.
//!
//! Exit codes: `run` returns amdump's bits (0 ok, 1 error, 2 strange, 4 failed, 8 missing,
//! 16 a dump could not be written to a volume); `flush` 0 or 16;
//! `check` 0 or 1 like amcheck; `restore` 0 or 1; usage errors 2 (clap's).
//!
//! Diagnostics go to standard error at the level `AMANDA_RS_LOG` sets (a level such as
//! `debug`, or an env_logger filter such as `warn,dumper::net=debug`; default `warn`), the
//! same variable amandad and portpool read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "dumper",
    version,
    about = "amanda-rs server: back up Amanda clients to holding disks and vtapes, amdump-style",
    long_about = "amanda-rs server: back up Amanda clients (the real amandad or ours) to holding \
disks and chg-disk vtapes, amdump-style, with a SQLite catalog and Amanda's own, a port pool, \
restore, flush and check.\n\n\
CONFIG is the path of an amanda.conf (its disklist is its `diskfile`, relative to it) or a \
configuration name under /etc/amanda. Started as root, dumper keeps only CAP_NET_BIND_SERVICE \
and runs as the configured dumpuser."
)]
struct Cli {
    /// amanda-rs settings file (default /etc/amanda-rs/amanda-rs.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    settings: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProgressArg {
    Auto,
    Tty,
    Plain,
    Quiet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ListenAuth {
    Bsdtcp,
    Ssl,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Back up every DLE of CONFIG (for cron): estimates, levels, dumps, report.
    Run {
        /// amanda.conf path or configuration name.
        config: String,
        /// Progress display on standard error.
        #[arg(long, value_enum, default_value = "auto")]
        progress: ProgressArg,
        /// Stay root instead of switching to dumpuser (tests only).
        #[arg(long)]
        no_drop_privileges: bool,
        /// Seconds before a failed request is retried.
        #[arg(long, default_value_t = 10)]
        retry_delay: u64,
    },
    /// Write the dumps still on the holding disk to volumes (amflush's job).
    Flush {
        /// amanda.conf path or configuration name.
        config: String,
        /// Stay root instead of switching to dumpuser (tests only).
        #[arg(long)]
        no_drop_privileges: bool,
        /// Print each volume and dump as it is written, on standard error.
        #[arg(long)]
        verbose: bool,
    },
    /// Check the server and every client, like amcheck.
    Check {
        /// amanda.conf path or configuration name.
        config: String,
        /// Only the server-side checks.
        #[arg(long)]
        server_only: bool,
        /// Also probe every hop the night uses (control port, data connections) from the
        /// configured source-port ranges, and say per hop: open, refused or dropped.
        #[arg(long)]
        ports: bool,
        /// The server's address as clients see it (for the rules --ports quotes).
        #[arg(long, value_name = "ADDR")]
        server_address: Option<std::net::IpAddr>,
        /// Seconds each --ports probe waits for an answer.
        #[arg(long, default_value_t = 3)]
        probe_timeout: u64,
        /// Stay root instead of switching to dumpuser.
        #[arg(long)]
        no_drop_privileges: bool,
    },
    /// The server-side listener clients connect to (ambackup's `ambackupd`, `noop`):
    /// under inetd (--inetd), systemd (LISTEN_FDS) or standalone (--listen/--port).
    Listen {
        /// inetd: fd 0 is the accepted connection (`nowait`) or the listening socket
        /// (`wait`).
        #[arg(long, conflicts_with_all = ["listen", "port"])]
        inetd: bool,
        /// Listen on ADDR:PORT (repeatable).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Vec<std::net::SocketAddr>,
        /// Listen on 0.0.0.0:N (default 10080 when neither --inetd nor LISTEN_FDS).
        #[arg(long, value_name = "N")]
        port: Option<u16>,
        /// Where configurations are (the request's `config=` is a name under it).
        #[arg(long, value_name = "DIR", default_value = "/etc/amanda")]
        config_dir: PathBuf,
        /// Connections at once; beyond, the oldest without a request is closed.
        #[arg(long, default_value_t = 64)]
        max_connections: usize,
        /// Seconds a connection may take to send its request.
        #[arg(long, default_value_t = 30)]
        req_timeout: u64,
        /// Where the log goes: a file, `syslog` or `stderr` (default: the settings'
        /// `[log] file`, else stderr, or syslog when stderr is a socket, under inetd).
        #[arg(long, value_name = "FILE|syslog|stderr")]
        log: Option<String>,
        /// Stay root instead of switching to the settings' `user`.
        #[arg(long)]
        no_drop_privileges: bool,
        /// The auth clients use: bsdtcp or ssl (TLS with the `ssl-*` settings of
        /// /etc/amanda/amanda-client.conf, as amandad reads them).
        #[arg(long, value_enum, default_value = "bsdtcp")]
        auth: ListenAuth,
        /// auth ssl: the certificate tree (amssl's), instead of amanda-client.conf's
        /// `ssl-dir`.
        #[arg(long, value_name = "DIR")]
        ssl_dir: Option<String>,
    },
    /// Extract a dump (by default the latest full plus the incrementals on top) into DIR.
    Restore {
        /// amanda.conf path or configuration name.
        config: String,
        /// The client host, as in the disklist.
        #[arg(long)]
        host: String,
        /// The disk (DLE name), as in the disklist.
        #[arg(long)]
        disk: String,
        /// Restore the chain up to this level only.
        #[arg(long, conflicts_with = "date")]
        level: Option<i32>,
        /// Restore the state as of this day (YYYY-MM-DD).
        #[arg(long)]
        date: Option<String>,
        /// Target directory (created if needed).
        #[arg(long)]
        into: PathBuf,
        /// GNU tar to extract with.
        #[arg(long, default_value = "/bin/tar")]
        tar: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Listen { .. } = cli.command {
        // Under inetd fds 0-2 are the socket: the listener picks its own log.
        let code = match listen(cli) {
            Ok(()) => 0,
            Err(e) => {
                log::error!("dumper listen: {e:#}");
                if !daemon::logging::fd_is_socket(2) {
                    eprintln!("dumper listen: {e:#}");
                }
                1
            }
        };
        return ExitCode::from(code);
    }
    // One convention for every amanda-rs binary (issue 11): AMANDA_RS_LOG, a level or a
    // filter; the settings file's `[log]` is amandad's log file, not this terminal.
    env_logger::Builder::new()
        .parse_filters(
            std::env::var("AMANDA_RS_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .as_deref()
                .unwrap_or("warn"),
        )
        .format_timestamp_millis()
        .init();
    let code = match real_main(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dumper: {e:#}");
            1
        }
    };
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// amanda-rs settings. `AMANDA_RS_LOG` is left out: here it is the filter of the lines on
/// standard error (see `main`), which may be more than the one level `[log] level` takes.
fn settings(path: Option<&PathBuf>) -> anyhow::Result<conf::Settings> {
    let env = std::env::vars()
        .filter(|(k, _)| k != "AMANDA_RS_LOG")
        .collect();
    let s = conf::Settings::load_from(path.map(PathBuf::as_path), Some(env))?;
    // A bad proxy setting or variable stops the dumper here, named, rather than letting its
    // connections go direct (conf leaves this check to the programs that use the proxy).
    s.proxy.policy()?;
    Ok(s)
}

/// `dumper listen`: its logger (a file or syslog under inetd), then the listener.
fn listen(cli: Cli) -> anyhow::Result<()> {
    let Cmd::Listen {
        inetd,
        listen,
        port,
        config_dir,
        max_connections,
        req_timeout,
        log,
        no_drop_privileges,
        auth,
        ssl_dir,
    } = cli.command
    else {
        anyhow::bail!("not the listen command");
    };
    let settings = settings(cli.settings.as_ref())?;
    let target = match log.as_deref() {
        Some("syslog") => daemon::logging::LogTarget::Syslog,
        Some("stderr") => daemon::logging::LogTarget::Stderr,
        Some(path) => daemon::logging::LogTarget::File(PathBuf::from(path)),
        None => match settings.log.file.clone() {
            Some(f) => daemon::logging::LogTarget::File(f),
            None if daemon::logging::fd_is_socket(2) => daemon::logging::LogTarget::Syslog,
            None => daemon::logging::LogTarget::Stderr,
        },
    };
    let filter = std::env::var("AMANDA_RS_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| settings.log.level.clone());
    if let Some(note) = daemon::logging::init(Some(&target), &filter, settings.log.max_bytes) {
        log::warn!("{note}");
    }
    let ssl = match auth {
        ListenAuth::Bsdtcp => None,
        ListenAuth::Ssl => {
            let client = conf::ClientConfig::load(None)
                .map_err(|e| anyhow::anyhow!("amanda-client.conf: {e}"))?;
            let s = client.value.ssl;
            Some(match ssl_dir {
                Some(d) => s.with_dir(&d, Some("--ssl-dir".into())),
                None => s,
            })
        }
    };
    let sockets = if inetd {
        dumper::listen::Sockets::Inetd
    } else if !listen.is_empty() || port.is_some() {
        let mut addrs = listen;
        if let Some(p) = port {
            addrs.push(std::net::SocketAddr::from(([0, 0, 0, 0], p)));
        }
        dumper::listen::Sockets::Listen(addrs)
    } else if dumper::listen::systemd_fds().is_some() {
        dumper::listen::Sockets::Systemd
    } else {
        dumper::listen::Sockets::Listen(vec![std::net::SocketAddr::from((
            [0, 0, 0, 0],
            dumper::listen::DEFAULT_PORT,
        ))])
    };
    dumper::listen::listen(dumper::listen::ListenOptions {
        sockets,
        settings,
        config_dir,
        max_connections: max_connections.max(1),
        req_timeout: std::time::Duration::from_secs(req_timeout.max(1)),
        drop_privileges: !no_drop_privileges,
        ssl,
    })
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Run {
            config,
            progress,
            no_drop_privileges,
            retry_delay,
        } => {
            let mut o = dumper::run::RunOptions::new(&config, settings(cli.settings.as_ref())?);
            o.progress = match progress {
                ProgressArg::Auto => dumper::progress::Mode::detect(),
                ProgressArg::Tty => dumper::progress::Mode::Tty,
                ProgressArg::Plain => dumper::progress::Mode::Plain,
                ProgressArg::Quiet => dumper::progress::Mode::Quiet,
            };
            o.drop_privileges = !no_drop_privileges;
            o.retry_delay = std::time::Duration::from_secs(retry_delay);
            let r = dumper::run::run(o)?;
            print!("{}", r.report);
            Ok(r.exit_status)
        }
        Cmd::Flush {
            config,
            no_drop_privileges,
            verbose,
        } => {
            let r = dumper::taper::flush::flush(&dumper::taper::flush::FlushOptions {
                config,
                settings: settings(cli.settings.as_ref())?,
                drop_privileges: !no_drop_privileges,
                verbose,
            })?;
            print!("{}", r.report);
            Ok(r.exit_status)
        }
        Cmd::Check {
            config,
            server_only,
            no_drop_privileges,
            ports,
            server_address,
            probe_timeout,
        } => {
            let r = dumper::check::check(&dumper::check::CheckOptions {
                config,
                settings: settings(cli.settings.as_ref())?,
                drop_privileges: !no_drop_privileges,
                server_only,
                ports,
                server_address,
                probe_timeout: std::time::Duration::from_secs(probe_timeout.max(1)),
            });
            print!("{}", r.text);
            Ok(r.exit_status)
        }
        Cmd::Listen { .. } => anyhow::bail!("listen is handled in main"),
        Cmd::Restore {
            config,
            host,
            disk,
            level,
            date,
            into,
            tar,
        } => {
            let restored = dumper::restore::restore(&dumper::restore::RestoreOptions {
                config,
                host,
                disk,
                level,
                date,
                into: into.clone(),
                tar,
            })?;
            for r in &restored {
                println!(
                    "restored {} level {} of {} ({} members) from {}",
                    String::from_utf8_lossy(&r.record.disk),
                    r.record.level,
                    r.record.timestamp,
                    r.members,
                    r.source
                );
            }
            println!("into {}", into.display());
            Ok(0)
        }
    }
}
