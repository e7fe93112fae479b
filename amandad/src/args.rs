//! Command-line handling, in two stages (after ripgrep): [`RawArgs`] is what the words say,
//! [`Args`] is what amandad will do.
//!
//! amandad accepts the real amandad's ad-hoc forms, in any order, so that an inetd.conf,
//! xinetd or systemd line written for Amanda works unchanged:
//! `-auth=<bsd|bsdudp|bsdtcp|ssl>`, `-no-exit`, `-udp=<port>`, `-tcp=<port>`, `--version`, and
//! service words (`noop`, `selfcheck`, `sendsize`, `sendbackup`, or `amdump` for all four;
//! Amanda's other services are accepted and answered as disabled). Its own options use the
//! `--name[=value]` or `--name value` form:
//! `--listen udp:ADDR:PORT|tcp:ADDR:PORT` (repeatable, standalone mode), `--client-conf FILE`,
//! `--settings FILE`, `--log FILE|syslog`, `--user NAME`, `--idle-exit SECONDS`, `--help`,
//! and `--dial-out` (keep a connection to the server's `dumper listen`, issue 14).
//!
//! What this module must not do: open files or sockets. A word amandad does not know is not
//! fatal (the real amandad NAKs every request with it instead), so [`RawArgs::parse`] only
//! fails for malformed options of amanda-rs's own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use proto::Auth;

use crate::services::{IMPLEMENTED, Service, implemented};

/// A listening socket of standalone mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A UDP socket (auth bsd or bsdudp).
    Udp(SocketAddr),
    /// A TCP listener (auth bsdtcp).
    Tcp(SocketAddr),
}

pub use daemon::logging::LogTarget;

/// The words of the command line, sorted but not yet judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawArgs {
    pub auth: Option<String>,
    pub no_exit: bool,
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub version: bool,
    pub help: bool,
    pub services: Vec<String>,
    pub listen: Vec<Listen>,
    pub dial_out: bool,
    pub own: OwnOptions,
}

/// amanda-rs's own options that go through unjudged (`--client-conf`, `--settings`, `--log`,
/// `--user`, `--idle-exit`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnOptions {
    pub client_conf: Option<PathBuf>,
    pub settings: Option<PathBuf>,
    pub log: Option<LogTarget>,
    pub user: Option<String>,
    pub idle_exit: Option<Duration>,
}

/// A malformed option of amanda-rs's own (Amanda's forms never fail).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("{option} needs a value")]
    MissingValue { option: String },
    #[error("{option}: {value:?} is not {expected}")]
    BadValue {
        option: String,
        value: String,
        expected: &'static str,
    },
    #[error("unknown option {0:?} (see amandad --help)")]
    UnknownOption(String),
}

impl RawArgs {
    /// Sorts the words (without the program name).
    pub fn parse<I, S>(words: I) -> Result<RawArgs, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut raw = RawArgs::default();
        let mut words = words.into_iter().map(Into::into);
        while let Some(word) = words.next() {
            if let Some(auth) = word.strip_prefix("-auth=") {
                raw.auth = Some(auth.to_string());
            } else if word == "-no-exit" {
                raw.no_exit = true;
            } else if let Some(port) = word.strip_prefix("-udp=") {
                raw.udp_port = Some(parse_port("-udp", port)?);
            } else if let Some(port) = word.strip_prefix("-tcp=") {
                raw.tcp_port = Some(parse_port("-tcp", port)?);
            } else if word == "--version" {
                raw.version = true;
            } else if word == "--help" || word == "-h" {
                raw.help = true;
            } else if word == "--dial-out" {
                raw.dial_out = true;
            } else if let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (long.to_string(), None),
                };
                let option = format!("--{name}");
                let mut value = || {
                    inline
                        .clone()
                        .or_else(|| words.next())
                        .ok_or_else(|| ArgsError::MissingValue {
                            option: option.clone(),
                        })
                };
                match name.as_str() {
                    "listen" => raw.listen.push(parse_listen(&value()?)?),
                    "client-conf" => raw.own.client_conf = Some(PathBuf::from(value()?)),
                    "settings" => raw.own.settings = Some(PathBuf::from(value()?)),
                    "log" => {
                        let v = value()?;
                        raw.own.log = Some(match v.as_str() {
                            "syslog" => LogTarget::Syslog,
                            "stderr" => LogTarget::Stderr,
                            _ => LogTarget::File(PathBuf::from(v)),
                        });
                    }
                    "user" => raw.own.user = Some(value()?),
                    "idle-exit" => {
                        let v = value()?;
                        let secs = v.parse::<u64>().map_err(|_| ArgsError::BadValue {
                            option: option.clone(),
                            value: v.clone(),
                            expected: "a number of seconds",
                        })?;
                        raw.own.idle_exit = Some(Duration::from_secs(secs));
                    }
                    _ => return Err(ArgsError::UnknownOption(word)),
                }
            } else {
                // Anything else is a service word, known or not (judged in `resolve`).
                raw.services.push(word);
            }
        }
        Ok(raw)
    }
}

fn parse_port(option: &str, text: &str) -> Result<u16, ArgsError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ArgsError::BadValue {
            option: option.to_string(),
            value: text.to_string(),
            expected: "a port number 1-65535",
        })
}

fn parse_listen(text: &str) -> Result<Listen, ArgsError> {
    let bad = || ArgsError::BadValue {
        option: "--listen".to_string(),
        value: text.to_string(),
        expected: "udp:ADDR:PORT or tcp:ADDR:PORT",
    };
    let (proto, addr) = text.split_once(':').ok_or_else(bad)?;
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    match proto {
        "udp" => Ok(Listen::Udp(addr)),
        "tcp" => Ok(Listen::Tcp(addr)),
        _ => Err(bad()),
    }
}

/// What amandad will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The auth of `-auth=` (default bsdtcp, as the real amandad). A UDP socket on fd 0 with
    /// no `-auth=` is served as bsd.
    pub auth: Option<Auth>,
    /// Services enabled by the command line.
    pub enabled: Vec<Service>,
    /// A problem every request is answered with, as amandad's rule 1 (spec §3.2): an unknown
    /// service word or auth on the command line. The text is the NAK message.
    pub global_error: Option<String>,
    /// Never exit when idle (`-no-exit`, or standalone mode).
    pub no_exit: bool,
    /// Standalone listeners (from `--listen`, `-udp=`, `-tcp=`).
    pub listen: Vec<Listen>,
    /// `--dial-out`: hold a connection to the server (settings `[amandad.dial_out]`) and
    /// serve the sessions it asks for over connections this host opens.
    pub dial_out: bool,
    pub own: OwnOptions,
    pub version: bool,
    pub help: bool,
}

impl RawArgs {
    /// Judges the words: which services, which auth, which global error.
    pub fn resolve(self) -> Args {
        let mut global_error = None;
        let auth = match &self.auth {
            None => None,
            Some(name) => match Auth::from_name(name) {
                Some(a) => Some(a),
                None => {
                    global_error = Some(format!("amandad: unknown or unsupported auth '{name}'"));
                    None
                }
            },
        };
        let mut enabled = Vec::new();
        let mut enable = |k: Service| {
            if !enabled.contains(&k) {
                enabled.push(k);
            }
        };
        for word in &self.services {
            if word == "amdump" {
                IMPLEMENTED.into_iter().for_each(&mut enable);
            } else if let Some(k) = implemented(word.as_bytes()) {
                enable(k);
            } else if !Service::from_name(word.as_bytes()).is_some_and(Service::is_amandas)
                && global_error.is_none()
            {
                global_error = Some(format!("invalid '{word}' service as argument to amandad"));
            }
        }
        if self.services.is_empty() {
            // With no service words, amandad enables its defaults; ours are the four we have.
            enabled = IMPLEMENTED.to_vec();
        }
        let mut listen = self.listen;
        if let Some(p) = self.udp_port {
            listen.push(Listen::Udp(SocketAddr::from(([0, 0, 0, 0], p))));
        }
        if let Some(p) = self.tcp_port {
            listen.push(Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], p))));
        }
        Args {
            auth,
            enabled,
            global_error,
            no_exit: self.no_exit,
            listen,
            dial_out: self.dial_out,
            own: self.own,
            version: self.version,
            help: self.help,
        }
    }
}

/// The `--help` text.
pub const HELP: &str = "\
amandad (amanda-rs) - the Amanda client daemon

Under inetd/xinetd/systemd, use it like Amanda's amandad:
  amanda dgram  udp wait   backup /usr/sbin/amandad amandad -auth=bsd amdump
  amanda stream tcp nowait backup /usr/sbin/amandad amandad -auth=bsdtcp amdump
  amanda stream tcp nowait backup /usr/sbin/amandad amandad -auth=ssl amdump
Standalone:
  amandad -auth=bsd --listen udp:0.0.0.0:10080 --listen tcp:0.0.0.0:10080
Dial-in (the server cannot connect to this host; settings [amandad.dial_out]):
  amandad --dial-out amdump

Amanda's forms: -auth=bsd|bsdudp|bsdtcp|ssl  -no-exit  -udp=PORT  -tcp=PORT  --version
                services: noop selfcheck sendsize sendbackup, or amdump for all four
amanda-rs's options:
  --listen udp:ADDR:PORT | tcp:ADDR:PORT   listen here (repeatable; standalone mode)
  --client-conf FILE   amanda-client.conf (default /etc/amanda/amanda-client.conf)
  --settings FILE      amanda-rs settings (default /etc/amanda-rs/amanda-rs.toml)
  --log FILE|syslog|stderr   where the debug log goes (default
                       /var/log/amanda/amandad/amandad-rs.log; stderr is refused when it
                       is a socket, as under inetd)
  --user NAME          the user to run as when started as root (default backup)
  --idle-exit SECONDS  under inetd, exit after this long without work (default 30)
  --dial-out           keep a connection to the server's `dumper listen` and serve the
                       night over connections this host opens (no listening socket needed)
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Args {
        RawArgs::parse(words.iter().copied()).unwrap().resolve()
    }

    #[test]
    fn inetd_line_for_bsd_enables_the_amdump_services() {
        let a = args(&["-auth=bsd", "amdump"]);
        assert_eq!(a.auth, Some(Auth::Bsd));
        assert_eq!(a.enabled, IMPLEMENTED.to_vec());
        assert_eq!(a.global_error, None);
    }

    #[test]
    fn harness_line_with_amandas_other_services_is_accepted() {
        let a = args(&[
            "-auth=bsdtcp",
            "amdump",
            "amindexd",
            "amidxtaped",
            "senddiscover",
        ]);
        assert_eq!(a.auth, Some(Auth::Bsdtcp));
        assert_eq!(a.global_error, None);
    }

    #[test]
    fn unknown_service_word_becomes_the_real_global_nak_text() {
        let a = args(&["-auth=bsd", "frobnicate"]);
        assert_eq!(
            a.global_error.as_deref(),
            Some("invalid 'frobnicate' service as argument to amandad")
        );
    }

    // issue 14
    #[test]
    fn dial_out_is_a_flag() {
        let a = args(&["--dial-out", "amdump"]);
        assert!(a.dial_out);
        assert_eq!(a.enabled, IMPLEMENTED.to_vec());
        assert!(!args(&["amdump"]).dial_out);
    }

    #[test]
    fn a_single_service_word_disables_the_others() {
        let a = args(&["noop"]);
        assert_eq!(a.enabled, vec![Service::Noop]);
    }

    #[test]
    fn auth_names_are_case_insensitive() {
        assert_eq!(args(&["-auth=BSDUDP"]).auth, Some(Auth::Bsdudp));
    }

    #[test]
    fn standalone_listeners_in_both_forms() {
        let a = args(&[
            "--listen",
            "udp:127.0.0.1:10080",
            "--listen=tcp:[::1]:10080",
            "-udp=10081",
        ]);
        assert_eq!(
            a.listen,
            vec![
                Listen::Udp("127.0.0.1:10080".parse().unwrap()),
                Listen::Tcp("[::1]:10080".parse().unwrap()),
                Listen::Udp("0.0.0.0:10081".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn own_options_fail_clearly() {
        assert_eq!(
            RawArgs::parse(["--listen"]),
            Err(ArgsError::MissingValue {
                option: "--listen".into()
            })
        );
        assert!(matches!(
            RawArgs::parse(["--listen", "sctp:1.2.3.4:5"]),
            Err(ArgsError::BadValue { .. })
        ));
        assert!(matches!(
            RawArgs::parse(["-udp=0"]),
            Err(ArgsError::BadValue { .. })
        ));
        assert_eq!(
            RawArgs::parse(["--frob"]),
            Err(ArgsError::UnknownOption("--frob".into()))
        );
    }

    #[test]
    fn log_targets() {
        assert_eq!(args(&["--log", "syslog"]).own.log, Some(LogTarget::Syslog));
        assert_eq!(
            args(&["--log=/tmp/a.log"]).own.log,
            Some(LogTarget::File("/tmp/a.log".into()))
        );
    }
}
