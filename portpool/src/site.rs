//! The port-relevant facts of a site, as plain data.
//!
//! `portpool check`, `portpool rules` and `portpool --simulate CONFIG` all work on a
//! [`Site`]: the server's ranges and parallelism, the DLEs with their auth, the clients
//! with their addresses, what amanda-client.conf and /etc/amanda-security.conf say, and
//! the services database. Tests build a `Site` directly; the CLI builds it from the parsed
//! configuration through [`crate::conf_adapter`]. This module must NOT read files or
//! resolve names.

use std::fmt;
use std::net::IpAddr;

use portpool_alloc::services::Services;
use proto::Auth;
use proto::ports::{PortRange, Transport};

/// Amanda's port default for the client service (`amanda` 10080/udp and /tcp).
pub const AMANDA_PORT: u16 = 10080;

/// Where a setting comes from, for messages: `amanda.conf:12:1`, or a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    Default,
    File {
        path: String,
        line: u32,
        column: u32,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line, column } => write!(f, "{path}:{line}:{column}"),
        }
    }
}

/// A range setting and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    pub fn default_value(value: T) -> Self {
        Setting {
            value,
            origin: Origin::Default,
        }
    }

    pub fn at(value: T, path: &str, line: u32, column: u32) -> Self {
        Setting {
            value,
            origin: Origin::File {
                path: path.to_owned(),
                line,
                column,
            },
        }
    }
}

/// The three port ranges of amanda.conf / amanda-client.conf (spec §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    pub reserved_udp: Setting<PortRange>,
    pub reserved_tcp: Setting<PortRange>,
    pub unreserved_tcp: Setting<PortRange>,
}

impl Ranges {
    /// The ranges a host uses when its configuration does not set them: those of Debian's
    /// Amanda 3.5.1 build (840,860 / 512,1023 / 50000,50100; see `conf::defaults`), which
    /// the real amandad and ours both apply. Amanda's own source defaults (512,1023 /
    /// 512,1023 / 1024,65535) are not what a Debian client listens on.
    pub fn built_in() -> Self {
        let r = Setting::default_value;
        Ranges {
            reserved_udp: r(conf::defaults::RESERVED_UDP_PORT),
            reserved_tcp: r(conf::defaults::RESERVED_TCP_PORT),
            unreserved_tcp: r(conf::defaults::UNRESERVED_TCP_PORT),
        }
    }

    /// The reserved range the control socket of `auth` uses.
    pub fn control(&self, auth: Auth) -> &Setting<PortRange> {
        match auth.transport() {
            Transport::Udp => &self.reserved_udp,
            Transport::Tcp => &self.reserved_tcp,
        }
    }
}

/// One DLE as far as ports are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteDle {
    pub host: String,
    pub disk: String,
    pub auth: Auth,
    /// The dumptype's `maxdumps` (concurrent dumps of this host).
    pub maxdumps: u32,
    /// The dumptype's `client_port`, if numeric or resolved.
    pub client_port: Option<u16>,
    /// Whether `client_port` was set at all (Amanda 3.5.1 needs it or an
    /// `amanda/udp` services entry for bsd/bsdudp).
    pub client_port_set: bool,
    pub origin: Origin,
    /// Estimated size in bytes, when known (the simulator uses it).
    pub size: Option<u64>,
    /// The dumptype's `dialin` (issue 14): the client connects to the server, never the
    /// other way.
    pub dialin: bool,
}

impl SiteDle {
    /// `disk` of `host` backed up with `auth`, as a default dumptype has it: `maxdumps 1`, no
    /// `client_port`, size unknown, from no particular file.
    pub fn new(host: impl Into<String>, disk: impl Into<String>, auth: Auth) -> SiteDle {
        SiteDle {
            host: host.into(),
            disk: disk.into(),
            auth,
            maxdumps: 1,
            client_port: None,
            client_port_set: false,
            origin: Origin::Default,
            size: None,
            dialin: false,
        }
    }

    /// The same DLE with `client_port` set to `port`.
    pub fn with_client_port(self, port: u16) -> SiteDle {
        SiteDle {
            client_port: Some(port),
            client_port_set: true,
            ..self
        }
    }
}

/// What /etc/amanda-security.conf says about ports (the real Amanda's ambind enforces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityFile {
    pub path: String,
    pub udp_port_range: Option<Setting<PortRange>>,
    pub tcp_port_range: Option<Setting<PortRange>>,
}

impl SecurityFile {
    pub fn range(&self, proto: Transport) -> Option<&Setting<PortRange>> {
        match proto {
            Transport::Udp => self.udp_port_range.as_ref(),
            Transport::Tcp => self.tcp_port_range.as_ref(),
        }
    }
}

/// Whether the server process may bind ports below 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    pub uid: u32,
    pub cap_net_bind_service: bool,
    /// `net.ipv4.ip_unprivileged_port_start` (1024 unless changed).
    pub unprivileged_port_start: u16,
}

impl Privilege {
    /// True when binding `port` needs no privilege, or the process has it.
    pub fn can_bind(&self, port: u16) -> bool {
        self.uid == 0 || self.cap_net_bind_service || port >= self.unprivileged_port_start
    }
}

/// A client host and the addresses firewall rules should name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

impl Client {
    /// `name` at `addresses`.
    pub fn new(name: impl Into<String>, addresses: impl IntoIterator<Item = IpAddr>) -> Client {
        Client {
            name: name.into(),
            addresses: addresses.into_iter().collect(),
        }
    }
}

/// Everything `check`, `rules` and `--simulate CONFIG` need.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The configuration's name (the directory under /etc/amanda).
    pub config: String,
    /// Where amanda.conf is, for messages.
    pub conf_path: String,
    pub inparallel: Setting<u32>,
    /// The server's ranges (amanda.conf).
    pub server: Ranges,
    /// The ranges of amanda-client.conf on this host, when it exists.
    pub client_conf: Option<(String, Ranges)>,
    pub security: Option<SecurityFile>,
    pub services: Option<Services>,
    pub dles: Vec<SiteDle>,
    pub clients: Vec<Client>,
    /// The server's own addresses (for the clients' rules).
    pub server_name: String,
    pub server_addresses: Vec<IpAddr>,
    /// The privilege the server runs with, when known.
    pub privilege: Option<Privilege>,
    /// `netusage`, bytes per second, when set.
    pub netusage: Option<f64>,
    /// The (host, disk) of DLEs backed up by an application (amgtar): their selfcheck
    /// answers are about five times longer than GNUTAR's.
    pub application_dles: std::collections::BTreeSet<(String, String)>,
}

impl Site {
    /// A site with Amanda's defaults and nothing else; tests and adapters fill it in.
    pub fn new(config: &str) -> Self {
        Site {
            config: config.to_owned(),
            conf_path: format!("/etc/amanda/{config}/amanda.conf"),
            inparallel: Setting::default_value(10),
            server: Ranges::built_in(),
            client_conf: None,
            security: None,
            services: None,
            dles: Vec::new(),
            clients: Vec::new(),
            server_name: "localhost".to_owned(),
            server_addresses: Vec::new(),
            privilege: None,
            netusage: None,
            application_dles: Default::default(),
        }
    }

    /// The auths of the connections the server opens, sorted: a `dialin` DLE's client
    /// connects to the server's listener and takes no server port (issue 14).
    pub fn auths(&self) -> Vec<Auth> {
        let mut auths: Vec<Auth> = self
            .dles
            .iter()
            .filter(|d| !d.dialin)
            .map(|d| d.auth)
            .collect();
        auths.sort();
        auths.dedup();
        auths
    }

    /// The host names of the DLEs, in first-seen order.
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = Vec::new();
        for d in &self.dles {
            if !hosts.contains(&d.host.as_str()) {
                hosts.push(&d.host);
            }
        }
        hosts
    }

    /// The most dumps that can run at once: `inparallel`, and per host `maxdumps` (and
    /// no more than that host's DLEs).
    pub fn peak_dumps(&self) -> u32 {
        let per_hosts: u32 = self
            .hosts()
            .iter()
            .map(|h| {
                let dles: Vec<&SiteDle> = self.dles.iter().filter(|d| d.host == *h).collect();
                let maxdumps = dles.iter().map(|d| d.maxdumps).max().unwrap_or(1).max(1);
                maxdumps.min(dles.len() as u32)
            })
            .sum();
        self.inparallel.value.min(per_hosts)
    }

    /// The port `/etc/services` or the dumptype gives the client service.
    pub fn client_port(&self, dle: &SiteDle) -> u16 {
        dle.client_port.unwrap_or(AMANDA_PORT)
    }
}
