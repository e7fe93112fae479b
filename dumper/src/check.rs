//! `dumper check CONFIG`: amcheck's job.
//!
//! Server side: the configuration and disklist load; the server filter programs can be run;
//! every holding disk exists (or can be made), is writable by us and has space; the index directory and the catalog can be
//! written; the changer and the volume the next night would write (or why none can be);
//! this process can bind reserved ports; and `portpool check` of the port settings
//! (capacity of the ranges against `inparallel`/`maxdumps`, ports lost to /etc/services,
//! /etc/amanda-security.conf, ...). Client side, per host (and auth/port): a `noop` and a
//! `selfcheck` with all its DLEs; the client's own `OK`/`ERROR` lines are shown.
//!
//! Exit status, like amcheck's: 0 when no error was found, 1 otherwise (warnings do not
//! count). What this module must not do: write anything but a probe file it removes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::ffi::OsStrExt;

use proto::dataphase::{FilterChain, Stage};
use proto::exchange::InitiatorConfig;
use proto::selfcheck::read_reply;

use crate::catalog::Catalog;
use crate::driver::HoldingDisk;
use crate::estimate::noop_features;
use crate::features::server_features;
use crate::holding;
use crate::net::control::{Control, Link};
use crate::net::exchange::RequestFailure;
use crate::net::{self, PoolNeeds, Ports, Tuning, WaitEvent};
use crate::plan::{self, Plan};
use crate::privs;
use crate::request::{self, ReqContext, RequestError};
use proto::Auth;

/// The result of a check.
pub struct CheckResult {
    /// What to print.
    pub text: String,
    /// 0 or 1.
    pub exit_status: i32,
    /// Errors found.
    pub errors: usize,
}

/// Options.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// `CONFIG`.
    pub config: String,
    /// amanda-rs settings.
    pub settings: conf::Settings,
    /// Drop to dumpuser when root.
    pub drop_privileges: bool,
    /// Skip the client checks.
    pub server_only: bool,
    /// Also probe every hop of the night from the real source-port ranges (`--ports`).
    pub ports: bool,
    /// The server's address as the clients see it (for the rules the port check quotes);
    /// by default the address this host routes to each client from.
    pub server_address: Option<std::net::IpAddr>,
    /// How long each port probe waits for an answer.
    pub probe_timeout: Duration,
}

struct Out {
    text: String,
    errors: usize,
    warnings: usize,
}

impl Out {
    fn ok(&mut self, s: &str) {
        let _ = writeln!(self.text, "  OK      {s}");
    }
    fn warn(&mut self, s: &str) {
        self.warnings += 1;
        let _ = writeln!(self.text, "  WARNING {s}");
    }
    fn err(&mut self, s: &str) {
        self.errors += 1;
        let _ = writeln!(self.text, "  ERROR   {s}");
    }
}

/// A directory the night must write to, and cannot.
#[derive(Debug, thiserror::Error)]
enum DirError {
    #[error("cannot create {}: {source}", .dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not writable: {source}", .dir.display())]
    NotWritable {
        dir: PathBuf,
        source: std::io::Error,
    },
}

fn writable_dir(dir: &Path) -> Result<(), DirError> {
    std::fs::create_dir_all(dir).map_err(|source| DirError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(format!(".dumper-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|source| DirError::NotWritable {
        dir: dir.to_path_buf(),
        source,
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Why a selfcheck got no reply.
#[derive(Debug, thiserror::Error)]
enum SelfcheckError {
    /// The request cannot be made for this client.
    #[error("request failed: {0}")]
    Request(RequestError),
    /// The exchange failed.
    #[error("{0}")]
    Exchange(RequestFailure),
}

/// Runs the checks.
pub fn check(o: &CheckOptions) -> CheckResult {
    let mut out = Out {
        text: String::new(),
        errors: 0,
        warnings: 0,
    };
    let _ = writeln!(out.text, "dumper check {}", o.config);
    let plan = match plan::load(&o.config) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out.text, "\nServer:");
            out.err(&e.to_string());
            return finish(out);
        }
    };
    let needs = PoolNeeds {
        udp: plan.dles.iter().any(|d| d.auth.is_udp()),
        tcp: plan.dles.iter().any(|d| d.auth == Auth::Bsdtcp),
        ssl: plan.dles.iter().any(|d| d.auth == Auth::Ssl),
    };
    let ports = match Ports::new(&plan.config, &o.settings, needs) {
        Ok(p) => Some(p),
        Err(e) => {
            out.err(&format!("port pools: {e}"));
            None
        }
    };
    if o.drop_privileges
        && privs::is_root()
        && let Err(e) = privs::drop_to(&plan.config.dumpuser)
    {
        out.err(&e.to_string());
    }
    server_checks(&plan, o, &mut out);
    if !o.server_only
        && let Some(ports) = ports
    {
        client_checks(&plan, ports, &o.settings, &mut out);
    }
    if o.ports {
        ports_checks(&plan, o, &mut out);
    }
    finish(out)
}

/// Where portpool finds the configuration and the host files.
fn site_sources(plan: &Plan, o: &CheckOptions) -> portpool::conf_adapter::Sources {
    let mut sources = portpool::conf_adapter::Sources {
        config: o.config.clone(),
        config_dir: PathBuf::from(conf::loader::CONFIG_DIR),
        client_conf: PathBuf::from("/etc/amanda/amanda-client.conf"),
        security_file: PathBuf::from("/etc/amanda-security.conf"),
        services: PathBuf::from(portpool_alloc::services::DEFAULT_PATH),
    };
    if plan::locate(&o.config).name.is_none() {
        sources.config = plan.conf_path.display().to_string();
    }
    sources
}

/// `--ports`: every hop of every client, from the real source ports (see `crate::check_ports`).
fn ports_checks(plan: &Plan, o: &CheckOptions, out: &mut Out) {
    let _ = writeln!(
        out.text,
        "\nPorts (every hop the night uses, probed from the configured source ports):"
    );
    let mut site = match portpool::conf_adapter::load_site(&site_sources(plan, o)) {
        Ok(s) => s,
        Err(e) => {
            out.err(&format!("port check: {e}"));
            return;
        }
    };
    portpool::conf_adapter::resolve_addresses(&mut site);
    let services_text =
        std::fs::read_to_string(portpool_alloc::services::DEFAULT_PATH).unwrap_or_default();
    let services = portpool_alloc::services::Services::parse_lenient(
        portpool_alloc::services::DEFAULT_PATH,
        &services_text,
    )
    .0;
    let clients = site.clients.clone();
    for client in &clients {
        // issue 14: the server opens nothing towards a dial-in client.
        if plan
            .dles
            .iter()
            .any(|d| d.dialin && d.host.eq_ignore_ascii_case(&client.name))
        {
            dialin_probe(&client.name, o, out);
            continue;
        }
        let Some(addr) = client
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| client.addresses.first())
            .copied()
        else {
            out.err(&format!("{}: no address to probe", client.name));
            continue;
        };
        // The rules name the server by the address the client sees.
        site.server_addresses = match o.server_address {
            Some(a) => vec![a],
            None => crate::net::local_address_towards(std::net::SocketAddr::new(addr, 10080))
                .into_iter()
                .collect(),
        };
        let flows = match portpool::rules::flows(&site, &client.name) {
            Ok(f) => f,
            Err(e) => {
                out.err(&format!("{}: {e}", client.name));
                continue;
            }
        };
        let target = crate::check_ports::Target {
            name: &client.name,
            addr,
            user: &plan.config.dumpuser,
            config: &o.config,
        };
        let results = crate::check_ports::probe_client(&target, &flows, &services, o.probe_timeout);
        out.errors += crate::check_ports::render(&target, &results, &mut out.text);
    }
}

/// `--ports` for a dial-in client (issue 14): the path is the client's, towards the
/// listener, so it is probed the way a night uses it: the listener process holding the
/// client's connection is asked for a session, and the client must open one through its
/// firewall (and proxy, if any) within [`DIALIN_PROBE`]. The session is closed unused. A
/// client that cannot open it (its proxy refuses the CONNECT) says why over its held
/// connection, and that is the line.
fn dialin_probe(host: &str, o: &CheckOptions, out: &mut Out) {
    use crate::net::rendezvous::{Rendezvous, RendezvousError, obtain};
    let r = Rendezvous::new(&o.settings.run_dir);
    let started = std::time::Instant::now();
    match obtain(&r, host, DIALIN_PROBE) {
        Ok(s) => {
            let from = s
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            out.ok(&format!(
                "{host}: dial-in path: the client holds its connection and opened a session from {from} in {} ms (dialin yes; the server opens nothing towards it)",
                started.elapsed().as_millis()
            ));
        }
        // issue 14: the client reported why (its proxy's refusal): the same dial is its
        // redial, so it would not come back after its held connection drops.
        Err(e @ RendezvousError::SessionFailed { .. }) => out.err(&format!(
            "dial-in path: {e}; the client holds its connection, but could not reconnect either once it drops"
        )),
        Err(e) => out.err(&format!(
            "dial-in path: {e}; on the client, its amandad --dial-out log says why (a refusal by the listener or a proxy is logged there); `portpool rules {} --side {host}` gives the rules it needs",
            o.config
        )),
    }
}

/// How long `--ports` waits for a dial-in client's holder and session.
const DIALIN_PROBE: std::time::Duration = std::time::Duration::from_secs(10);

fn finish(out: Out) -> CheckResult {
    let mut text = out.text;
    let _ = writeln!(
        text,
        "\n{} error(s), {} warning(s)",
        out.errors, out.warnings
    );
    CheckResult {
        text,
        exit_status: i32::from(out.errors > 0),
        errors: out.errors,
    }
}

/// The server filter programs (`server_custom_compress`, `server_encrypt`) exist and can be
/// run by us: a missing one would fail every dump of its DLEs (issue 12).
fn filter_checks(plan: &Plan, out: &mut Out) {
    let mut programs: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
    for d in plan.dles.iter().filter(|d| d.unsupported.is_none()) {
        let Ok(chain) = FilterChain::of(&d.dle.compress, &d.dle.encrypt) else {
            continue;
        };
        for stage in &chain.server {
            let p = match stage {
                Stage::CustomCompress(p) | Stage::Encrypt { program: p, .. } => p.to_vec(),
                Stage::Gzip(_) => continue,
            };
            match programs.iter_mut().find(|(q, _)| *q == p) {
                Some((_, dles)) => dles.push(d.label()),
                None => programs.push((p, vec![d.label()])),
            }
        }
    }
    for (p, dles) in programs {
        let path = Path::new(std::ffi::OsStr::from_bytes(&p));
        let what = format!(
            "server filter {} ({} DLE(s): {})",
            path.display(),
            dles.len(),
            dles.join(", ")
        );
        match nix::unistd::access(path, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if path.is_file() => out.ok(&format!("{what} is executable")),
            Ok(()) => out.err(&format!("{what} is not a file")),
            Err(e) => out.err(&format!("{what} cannot be run: {}", e.desc())),
        }
    }
}

fn server_checks(plan: &Plan, o: &CheckOptions, out: &mut Out) {
    let _ = writeln!(out.text, "\nServer ({}):", plan.conf_path.display());
    out.ok(&format!(
        "{} DLE(s) on {} host(s), inparallel {}",
        plan.dles.len(),
        plan.hosts.len(),
        plan.config.inparallel
    ));
    for w in &plan.warnings {
        out.warn(w);
    }
    for d in &plan.dles {
        if let Some(u) = &d.unsupported {
            out.err(&format!("{} ({}): {u}", d.label(), d.location));
        }
    }
    filter_checks(plan, out);
    for h in &plan.holding {
        match writable_dir(&h.dir) {
            Ok(()) => {
                let free = HoldingDisk::from_use_kib(h.use_kib).room(
                    Some(holding::free_bytes(&h.dir).unwrap_or(0)),
                    0,
                    0,
                );
                let msg = format!(
                    "holding disk {} ({}): {} MiB available",
                    h.name,
                    h.dir.display(),
                    free / 1024 / 1024
                );
                if free < 1024 * 1024 {
                    out.warn(&msg);
                } else {
                    out.ok(&msg);
                }
            }
            Err(e) => out.err(&format!("holding disk {}: {e}", h.name)),
        }
    }
    let indexdir = plan.config.path(&plan.config.indexdir);
    match writable_dir(&indexdir) {
        Ok(()) => out.ok(&format!("index directory {}", indexdir.display())),
        Err(e) => out.err(&format!("indexdir: {e}")),
    }
    let cat = Catalog::path_for(&plan.config.path(&plan.config.infofile));
    match Catalog::open(&cat) {
        Ok(c) => {
            out.ok(&format!("catalog {}", cat.display()));
            // The changer and its volumes (issue 15).
            match crate::taper::night::check(plan, &o.settings, &c) {
                Ok(Some(next)) => out.ok(&format!("taper: {next}")),
                Ok(None) => out.ok("no tpchanger or tapedev: dumps stay on the holding disk"),
                Err(e) => out.err(&format!("taper: {e}")),
            }
        }
        Err(e) => out.err(&e.to_string()),
    }
    let reserved = plan.dles.iter().any(|d| d.unsupported.is_none());
    if reserved {
        if privs::can_bind_reserved() {
            out.ok("this process can bind reserved ports (root or CAP_NET_BIND_SERVICE)");
        } else {
            out.err("this process cannot bind ports below 1024, which clients require: run dumper as root (it switches to dumpuser) or `setcap cap_net_bind_service=ep` its binary");
        }
    }
    // portpool check of the port settings.
    let sources = site_sources(plan, o);
    match portpool::conf_adapter::load_site(&sources) {
        Ok(site) => {
            let findings = portpool::check::check(&site);
            if findings.is_empty() {
                out.ok("portpool check: port settings are consistent");
            }
            for f in findings {
                let line = format!(
                    "portpool check [{}] {}: {} (fix: {})",
                    f.code, f.origin, f.message, f.fix
                );
                match f.severity {
                    portpool::check::Severity::Error => out.err(&line),
                    portpool::check::Severity::Warning => out.warn(&line),
                }
            }
        }
        Err(e) => out.err(&format!("portpool check: {e}")),
    }
}

fn client_checks(plan: &Plan, ports: Ports, settings: &conf::Settings, out: &mut Out) {
    let cfg = &plan.config;
    let icfg = InitiatorConfig {
        connect_tries: cfg.connect_tries.max(1),
        req_tries: cfg.req_tries.max(1),
        rep_wait: cfg.ctimeout,
        ..InitiatorConfig::default()
    };
    let link = Link {
        ours: server_features(),
        config_name: plan.config_name.clone(),
        user: cfg.dumpuser.clone(),
        ports,
        tuning: Tuning::from_settings(settings),
        initiator: icfg.clone(),
        dialin: net::control::Dialin::of(
            plan.dles.iter().map(|d| (d.host.as_str(), d.dialin)),
            settings,
        ),
    };
    // Groups (host, auth, port), in disklist order.
    let mut groups: Vec<(String, Auth, u16, Vec<usize>)> = Vec::new();
    for d in plan.dles.iter().filter(|d| d.unsupported.is_none()) {
        match groups
            .iter_mut()
            .find(|g| g.0.eq_ignore_ascii_case(&d.host) && g.1 == d.auth && g.2 == d.client_port)
        {
            Some(g) => g.3.push(d.id),
            None => groups.push((d.host.clone(), d.auth, d.client_port, vec![d.id])),
        }
    }
    let _ = writeln!(out.text, "\nClients:");
    for (host, auth, port, ids) in groups {
        let _ = writeln!(out.text, " {host} (auth {auth}, port {port}):");
        let maxdumps = plan
            .hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&host))
            .map_or(1, |h| h.maxdumps);
        if net::control::dials_in(&link, &host) {
            out.ok(&format!(
                "reached over the connection it dials in (dialin yes; waiting up to {} s for it)",
                settings.dumper.dialin_wait_secs
            ));
        }
        let dest = match net::resolve_for(&link, &host, port) {
            Ok(d) => d,
            Err(e) => {
                out.err(&e.to_string());
                continue;
            }
        };
        // issue 14: say which way the client is reached.
        if let Some((url, origin)) = link
            .tuning
            .proxy
            .route(&host, Some(dest.ip()))
            .filter(|_| !net::control::dials_in(&link, &host))
        {
            if auth.is_udp() {
                out.ok(&format!(
                    "reached directly: auth {auth}'s control is UDP, which an HTTP proxy ({url}, from {origin}) cannot carry"
                ));
            } else {
                out.ok(&format!("through HTTP proxy {url} (from {origin})"));
            }
        }
        let mut waits = |_: WaitEvent| {};
        let ssl = ids.first().and_then(|&i| plan.dles[i].ssl.clone());
        if let Some(s) = &ssl {
            // Our own files first: a broken one is named before any connection is tried.
            match ssl::client_config(s) {
                Ok((_, id)) => out.ok(&format!(
                    "ssl: {} signed by {}",
                    id.cert.subject(),
                    id.ca_file
                )),
                Err(e) => {
                    out.err(&format!("{host}: ssl: {e}"));
                    continue;
                }
            }
        }
        let mut conn = Control::for_dle(auth, &host, ssl.as_ref());
        let noop = conn.noop(&link, dest, icfg.clone(), &mut waits).outcome;
        let selfcheck = match &noop {
            Ok(body) if conn.is_open() => {
                conn.next_request();
                Some(
                    match selfcheck_req(plan, &link.ours, body, &host, maxdumps, &ids) {
                        Ok(req) => conn
                            .exchange(&link, dest, icfg.clone(), req, &mut waits)
                            .outcome
                            .map_err(SelfcheckError::Exchange),
                        Err(e) => Err(SelfcheckError::Request(e)),
                    },
                )
            }
            _ => None,
        };
        conn.finish();
        match &noop {
            Ok(_) => out.ok("noop"),
            Err(e) => out.err(&format!("{host}: noop {e} (auth {auth}, port {port})")),
        }
        match selfcheck {
            Some(Ok(body)) => {
                let reply = read_reply(&body);
                let mut problems = 0;
                for r in &reply.results {
                    let msg = String::from_utf8_lossy(&r.message);
                    // amcheck counts everything above `info` as a problem.
                    if r.severity.is_problem() {
                        problems += 1;
                        out.err(&format!("{host}: {msg}"));
                    } else {
                        out.ok(&format!("{host}: {msg}"));
                    }
                }
                if problems == 0 {
                    out.ok(&format!("{host}: selfcheck of {} DLE(s)", ids.len()));
                }
            }
            Some(Err(e)) => out.err(&format!("{host}: selfcheck {e}")),
            None => {}
        }
    }
}

fn selfcheck_req(
    plan: &Plan,
    ours: &proto::features::Features,
    noop_body: &[u8],
    host: &str,
    maxdumps: u32,
    ids: &[usize],
) -> Result<Vec<u8>, RequestError> {
    let client =
        noop_features(noop_body).unwrap_or_else(proto::features::Features::default_2_4_2p2);
    let rctx = ReqContext {
        ours,
        client: &client,
        maxdumps,
        hostname: host,
        config: &plan.config_name,
        timestamp: None,
    };
    let dles: Vec<&proto::dle::Dle> = ids.iter().map(|&i| &plan.dles[i].dle).collect();
    request::selfcheck(&rctx, &dles)
}
