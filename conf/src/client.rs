//! amanda-client.conf, resolved: [`ClientConfig`], what amandad and its services need.
//!
//! Facts (common-src/conffile.c: config_init with CONFIG_INIT_CLIENT; amandad-src):
//! amandad reads `/etc/amanda/amanda-client.conf` (a missing file is fine), then, once a
//! request names a configuration, `/etc/amanda/<conf>/amanda-client.conf` on top of it
//! (also optional). The client file accepts only `define application` and `define script`.
//!
//! What this module must not do: match .amandahosts (see [`crate::amandahosts`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::defaults as D;
use crate::diag::{Errors, Loaded, Sink};
use crate::fs::{FileSystem, MemFs, RealFs};
use crate::loader::{CONFIG_DIR, Document};
use crate::model::{Application, AuthSetting, Get, Named, Script};
use crate::resolve::{self, BlockKind, Params};
use crate::source::{Location, SourceMap};
use crate::value::{Properties, Value};
use proto::ports::PortRange;

/// A resolved amanda-client.conf.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `conf`: the server configuration name (default "DailySet1").
    pub conf: String,
    /// `index_server` (default "localhost").
    pub index_server: String,
    /// `tape_server` (default "localhost").
    pub tape_server: String,
    /// `amdump_server` (default "localhost").
    pub amdump_server: String,
    /// `tapedev` (default "").
    pub tapedev: String,
    /// `auth` (default bsdtcp).
    pub auth: AuthSetting,
    /// `ssh_keys`.
    pub ssh_keys: String,
    /// `amandad_path`.
    pub amandad_path: String,
    /// `client_username`.
    pub client_username: String,
    /// `client_port` ("" = the `amanda` service).
    pub client_port: String,
    /// `gnutar_list_dir` (default "/var/lib/amanda/gnutar-lists").
    pub gnutar_list_dir: String,
    /// `amandates` (default "/var/lib/amanda/amandates").
    pub amandates: String,
    /// `reserved-udp-port` (Debian default 840,860).
    pub reserved_udp_port: PortRange,
    /// `reserved-tcp-port` (default 512,1023).
    pub reserved_tcp_port: PortRange,
    /// `unreserved-tcp-port` (Debian default 50000,50100): the client's listening ports
    /// for bsd/bsdudp data streams.
    pub unreserved_tcp_port: PortRange,
    /// `ctimeout` (default 30 s).
    pub ctimeout: Duration,
    /// `connect-tries` (default 3).
    pub connect_tries: u32,
    /// `req-tries` (default 3).
    pub req_tries: u32,
    /// `rep-tries` (default 5).
    pub rep_tries: u32,
    /// `debug_days` (default 4).
    pub debug_days: u32,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `mailer`.
    pub mailer: String,
    /// `property` lines.
    pub properties: Properties,
    /// auth ssl: `ssl-dir` and the other `ssl-*` settings.
    pub ssl: crate::ssl::SslSettings,
    /// `define application`s.
    pub applications: Named<Application>,
    /// `define script`s.
    pub scripts: Named<Script>,
    /// Every parameter set explicitly, with its location.
    pub params: Params,
}

impl ClientConfig {
    /// Reads `/etc/amanda/amanda-client.conf` and, with `config`, the per-configuration
    /// `/etc/amanda/<config>/amanda-client.conf` over it; both optional, like amandad.
    pub fn load(config: Option<&str>) -> Result<Loaded<ClientConfig>, Errors> {
        Self::load_with(&RealFs, Path::new(CONFIG_DIR), config)
    }

    /// [`ClientConfig::load`] through `fs` with another `CONFIG_DIR`.
    pub fn load_with(
        fs: &dyn FileSystem,
        config_root: &Path,
        config: Option<&str>,
    ) -> Result<Loaded<ClientConfig>, Errors> {
        let mut sink = Sink::default();
        let global = config_root.join("amanda-client.conf");
        let doc = Document::load(
            fs,
            &global,
            Some(config_root),
            true,
            SourceMap::new(),
            &mut sink,
        );
        let mut raw = resolve::walk(&doc, true, &mut sink);
        if let Some(name) = config {
            let dir = config_root.join(name);
            let doc2 = Document::load(
                fs,
                &dir.join("amanda-client.conf"),
                Some(&dir),
                true,
                doc.sources.clone(),
                &mut sink,
            );
            let over = resolve::walk(&doc2, true, &mut sink);
            for (k, p) in over.globals.iter() {
                raw.globals.set(k, p.clone());
            }
            for kind in [BlockKind::Application, BlockKind::Script] {
                for d in over.defs.all(kind) {
                    let _ = raw.defs.insert(kind, d.clone());
                }
            }
        }
        sink.finish(Self::from_raw(&raw))
    }

    /// Parses amanda-client.conf text (no `includefile`).
    pub fn parse_str(name: &str, text: &str) -> Result<Loaded<ClientConfig>, Errors> {
        Self::parse_with(&MemFs::new(), name, text.as_bytes(), None)
    }

    /// Parses amanda-client.conf text; `includefile`s are read from `fs`.
    pub fn parse_with(
        fs: &dyn FileSystem,
        name: &str,
        text: &[u8],
        config_dir: Option<&Path>,
    ) -> Result<Loaded<ClientConfig>, Errors> {
        Document::parse_text(fs, name, text, config_dir, |doc, sink| {
            Self::from_raw(&resolve::walk(doc, true, sink))
        })
    }

    fn from_raw(raw: &resolve::Raw) -> ClientConfig {
        let g = Get(&raw.globals);
        let range = |k, d| match raw.globals.raw(k) {
            Some(Value::PortRange(r)) => *r,
            _ => d,
        };
        let mut applications = Named::default();
        for d in raw.defs.all(BlockKind::Application) {
            applications.push(&d.name, Arc::new(Application::build(d)));
        }
        let mut scripts = Named::default();
        for d in raw.defs.all(BlockKind::Script) {
            scripts.push(&d.name, Arc::new(Script::build(d)));
        }
        ClientConfig {
            conf: g.str("conf", D::CLIENT_CONF),
            index_server: g.str("index_server", D::INDEX_SERVER),
            tape_server: g.str("tape_server", D::TAPE_SERVER),
            amdump_server: g.str("amdump_server", D::AMDUMP_SERVER),
            tapedev: g.str("tapedev", D::TAPEDEV),
            auth: AuthSetting::parse(&g.str("auth", D::AUTH)),
            ssh_keys: g.str("ssh_keys", ""),
            amandad_path: g.str("amandad_path", ""),
            client_username: g.str("client_username", ""),
            client_port: g.str("client_port", D::CLIENT_PORT),
            gnutar_list_dir: g.str("gnutar_list_dir", D::GNUTAR_LIST_DIR),
            amandates: g.str("amandates", D::AMANDATES),
            reserved_udp_port: range("reserved_udp_port", D::RESERVED_UDP_PORT),
            reserved_tcp_port: range("reserved_tcp_port", D::RESERVED_TCP_PORT),
            unreserved_tcp_port: range("unreserved_tcp_port", D::UNRESERVED_TCP_PORT),
            ctimeout: g.secs("ctimeout", D::CTIMEOUT),
            connect_tries: g.u32("connect_tries", D::CONNECT_TRIES),
            req_tries: g.u32("req_tries", D::REQ_TRIES),
            rep_tries: g.u32("rep_tries", D::REP_TRIES),
            debug_days: g.u32("debug_days", D::DEBUG_DAYS),
            hostname: match raw.globals.raw("hostname") {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
            mailer: g.str("mailer", "/usr/bin/mail"),
            properties: g.props("property"),
            ssl: crate::ssl::SslSettings::from_params(&raw.globals),
            applications,
            scripts,
            params: raw.globals.clone(),
        }
    }

    /// Where `keyword` was set, if it was.
    pub fn origin(&self, keyword: &str) -> Option<&Location> {
        self.params.location(keyword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_debians() {
        let c = ClientConfig::parse_str("amanda-client.conf", "")
            .unwrap()
            .value;
        assert_eq!(c.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
        assert_eq!(c.conf, "DailySet1");
        assert_eq!(c.gnutar_list_dir, "/var/lib/amanda/gnutar-lists");
        assert_eq!(c.amandates, "/var/lib/amanda/amandates");
        assert_eq!(c.reserved_udp_port, PortRange::new(840, 860).unwrap());
        assert_eq!(c.unreserved_tcp_port, PortRange::new(50000, 50100).unwrap());
    }

    #[test]
    fn per_config_file_overrides_the_global_one() {
        let fs = MemFs::new()
            .with("/etc/amanda/amanda-client.conf", "conf \"a\"\nauth \"bsd\"\n")
            .with(
                "/etc/amanda/daily/amanda-client.conf",
                "auth \"bsdtcp\"\nreserved-tcp-port 600,700\ndefine application x {\n plugin \"amgtar\"\n}\n",
            );
        let c = ClientConfig::load_with(&fs, Path::new("/etc/amanda"), Some("daily"))
            .unwrap()
            .value;
        assert_eq!(c.conf, "a");
        assert_eq!(c.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
        assert_eq!(c.reserved_tcp_port, PortRange::new(600, 700).unwrap());
        assert_eq!(c.applications.get("X").unwrap().plugin, "amgtar");
        assert_eq!(
            c.origin("auth").unwrap().to_string(),
            "/etc/amanda/daily/amanda-client.conf:1:1"
        );
        let none = ClientConfig::load_with(&MemFs::new(), Path::new("/etc/amanda"), Some("x"));
        assert!(none.is_ok());
    }

    #[test]
    fn server_only_definitions_are_refused_in_the_client_file() {
        let e = ClientConfig::parse_str("c.conf", "define dumptype x {\n}\n").unwrap_err();
        assert_eq!(
            e.messages(),
            ["c.conf:1:8: expected application or script, found \"dumptype\""]
        );
    }
}
