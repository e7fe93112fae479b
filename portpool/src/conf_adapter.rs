//! From the `conf` crate's parsed configuration to portpool's plain [`Site`], plus the
//! few facts only the running system knows (privilege, addresses).
//!
//! This is the only module that knows `conf`'s types and the only one (with
//! [`portpool_alloc::pool::load_services`]) that reads configuration files or resolves names;
//! `check`, `rules` and `sim` work on the plain model so tests can build it directly.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use conf::loader::ConfigLocation;
use conf::{ClientConfig, Config, Disklist, SecurityConf};

use crate::sim::SimParams;
use crate::sim::rng::Rng;
use crate::site::{
    AMANDA_PORT, Client, Origin, Privilege, Ranges, SecurityFile, Setting, Site, SiteDle,
};
use portpool_alloc::services::Services;
use proto::ports::PortRange;

/// Where to read a site from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// A configuration name (under `config_dir`) or a path to its directory/amanda.conf.
    pub config: String,
    pub config_dir: PathBuf,
    pub client_conf: PathBuf,
    pub security_file: PathBuf,
    pub services: PathBuf,
}

/// Why a site could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("{0}")]
    Conf(String),
    #[error(transparent)]
    Services(#[from] portpool_alloc::pool::PoolError),
}

fn origin(loc: Option<&conf::Location>) -> Origin {
    match loc {
        Some(l) if l.line > 0 => Origin::File {
            path: l.file.to_string(),
            line: l.line,
            column: l.column,
        },
        _ => Origin::Default,
    }
}

fn setting(r: PortRange, loc: Option<&conf::Location>) -> Option<Setting<PortRange>> {
    Some(Setting {
        value: r,
        origin: origin(loc),
    })
}

fn ranges(
    udp: PortRange,
    tcp: PortRange,
    unres: PortRange,
    origin_of: impl Fn(&str) -> Option<conf::Location>,
) -> Option<Ranges> {
    Some(Ranges {
        reserved_udp: setting(udp, origin_of("reserved_udp_port").as_ref())?,
        reserved_tcp: setting(tcp, origin_of("reserved_tcp_port").as_ref())?,
        unreserved_tcp: setting(unres, origin_of("unreserved_tcp_port").as_ref())?,
    })
}

fn client_port(text: &str, services: &Services) -> Option<u16> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    t.parse::<u16>()
        .ok()
        .or_else(|| services.port_of(t, proto::ports::Transport::Tcp))
}

/// Read amanda.conf, its disklist, amanda-client.conf, the security file and the
/// services database into a [`Site`].
pub fn load_site(src: &Sources) -> Result<Site, SiteError> {
    let location = ConfigLocation::resolve_in(&src.config_dir, &src.config);
    let config: Config = Config::load(&location)
        .map_err(|e| SiteError::Conf(e.to_string()))?
        .value;
    let disklist: Disklist = Disklist::load(&config)
        .map_err(|e| SiteError::Conf(e.to_string()))?
        .value;
    let services = portpool_alloc::pool::load_services(&src.services)?;
    let security = if src.security_file.exists() {
        Some(
            conf::security::load(&src.security_file)
                .map_err(|e| SiteError::Conf(e.to_string()))?
                .value,
        )
    } else {
        None
    };
    let client = if src.client_conf.exists() {
        let text = std::fs::read_to_string(&src.client_conf)
            .map_err(|e| SiteError::Conf(format!("{}: {e}", src.client_conf.display())))?;
        Some(
            ClientConfig::parse_str(&src.client_conf.display().to_string(), &text)
                .map_err(|e| SiteError::Conf(e.to_string()))?
                .value,
        )
    } else {
        None
    };
    Ok(site_from(
        &config,
        &disklist,
        client.as_ref().map(|c| (src.client_conf.as_path(), c)),
        security.as_ref().map(|s| (src.security_file.as_path(), s)),
        services,
        &location.file,
    ))
}

/// The pure part of [`load_site`]: conf's values to the plain model.
pub fn site_from(
    config: &Config,
    disklist: &Disklist,
    client: Option<(&Path, &ClientConfig)>,
    security: Option<(&Path, &SecurityConf)>,
    services: Services,
    conf_path: &Path,
) -> Site {
    let name = config
        .location
        .as_ref()
        .and_then(|l| l.name.clone())
        .unwrap_or_else(|| conf_path.display().to_string());
    let mut site = Site::new(&name);
    site.conf_path = conf_path.display().to_string();
    site.inparallel = Setting {
        value: config.inparallel,
        origin: origin(config.origin("inparallel")),
    };
    if let Some(r) = ranges(
        config.reserved_udp_port,
        config.reserved_tcp_port,
        config.unreserved_tcp_port,
        |k| config.origin(k).cloned(),
    ) {
        site.server = r;
    }
    if let Some((path, c)) = client
        && let Some(r) = ranges(
            c.reserved_udp_port,
            c.reserved_tcp_port,
            c.unreserved_tcp_port,
            |k| c.origin(k).cloned(),
        )
    {
        site.client_conf = Some((path.display().to_string(), r));
    }
    if let Some((path, s)) = security {
        let entry = |e: &Option<conf::security::Entry<PortRange>>| {
            e.as_ref().and_then(|e| setting(e.value, Some(&e.location)))
        };
        site.security = Some(SecurityFile {
            path: path.display().to_string(),
            udp_port_range: entry(&s.udp_port_range),
            tcp_port_range: entry(&s.tcp_port_range),
        });
    }
    for e in &disklist.entries {
        let Some(a) = e.dumptype.auth.known() else {
            continue;
        };
        let port_text = e.dumptype.client_port.clone();
        if e.dumptype.program == conf::model::Program::Application {
            site.application_dles
                .insert((e.host.clone(), e.disk_lossy().into_owned()));
        }
        site.dles.push(SiteDle {
            host: e.host.clone(),
            disk: e.disk_lossy().into_owned(),
            auth: a,
            maxdumps: e.dumptype.maxdumps.max(1),
            client_port: client_port(&port_text, &services),
            client_port_set: !port_text.trim().is_empty(),
            origin: origin(Some(&e.location)),
            size: None,
            dialin: e.dumptype.dialin,
        });
    }
    site.clients = site
        .hosts()
        .iter()
        .map(|h| Client {
            name: (*h).to_owned(),
            addresses: h.parse::<IpAddr>().map(|a| vec![a]).unwrap_or_default(),
        })
        .collect();
    site.netusage = (config.netusage_kibps > 0).then(|| f64::from(config.netusage_kibps) * 1024.0);
    site.services = Some(services);
    site
}

/// Fill a simulation from a site: hosts, DLEs (sizes drawn around `mean`), auth,
/// inparallel, maxdumps and ranges.
pub fn sim_from_site(p: &mut SimParams, site: &Site, mean: f64, spread: f64) {
    let hosts: Vec<String> = site.hosts().iter().map(|h| (*h).to_owned()).collect();
    let mut rng = Rng::new(p.seed);
    let configs = p.configs.max(1);
    p.dles = site
        .dles
        .iter()
        .enumerate()
        .map(|(i, d)| crate::sim::SimDle {
            host: hosts.iter().position(|h| *h == d.host).unwrap_or(0),
            config: i % configs,
            size: d
                .size
                .unwrap_or_else(|| rng.lognormal(mean, spread).max(1e6) as u64),
            auth: d.auth,
        })
        .collect();
    p.hosts = hosts;
    p.inparallel = site.inparallel.value.max(1);
    p.maxdumps = site
        .dles
        .iter()
        .map(|d| d.maxdumps)
        .max()
        .unwrap_or(1)
        .max(1);
    p.udp_range = site.server.reserved_udp.value;
    p.tcp_range = site.server.reserved_tcp.value;
    p.data_range = site.server.unreserved_tcp.value;
    if let Some(n) = site.netusage {
        p.bandwidth = p.bandwidth.min(n);
    }
    if let Some(s) = &site.services {
        p.services = s.clone();
    }
}

/// The privilege of this process (for `check`).
pub fn current_privilege() -> Privilege {
    let uid = nix::unistd::geteuid().as_raw();
    // CapEff bit 10 is CAP_NET_BIND_SERVICE.
    let cap = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 10) != 0);
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    Privilege {
        uid,
        cap_net_bind_service: cap,
        unprivileged_port_start: start,
    }
}

fn resolve(name: &str) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = (name, AMANDA_PORT)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Resolve the clients' and the server's addresses (for `rules`), keeping those already
/// set. The server is this host: its name's non-loopback addresses.
pub fn resolve_addresses(site: &mut Site) {
    for c in &mut site.clients {
        if c.addresses.is_empty() {
            c.addresses = resolve(&c.name);
        }
    }
    if site.server_addresses.is_empty()
        && let Ok(host) = nix::unistd::gethostname()
    {
        let name = host.to_string_lossy().into_owned();
        let all = resolve(&name);
        let outside: Vec<IpAddr> = all.iter().copied().filter(|a| !a.is_loopback()).collect();
        site.server_addresses = if outside.is_empty() { all } else { outside };
        site.server_name = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Severity, check};
    use proto::Auth;

    const AMANDA_CONF: &str = "\
inparallel 20
reserved-udp-port 850,859
define dumptype bsd-dt {
    auth \"bsd\"
    maxdumps 1
}
define dumptype tcp-dt {
    auth \"bsdtcp\"
    client_port \"10080\"
}
";

    const DISKLIST: &str = "198.18.0.2 /home bsd-dt\n198.18.0.2 /var bsd-dt\nclient3 /srv tcp-dt\n";

    fn site() -> Site {
        let config = Config::parse_str("/etc/amanda/daily/amanda.conf", AMANDA_CONF)
            .unwrap()
            .value;
        let disklist = Disklist::parse(&config, "/etc/amanda/daily/disklist", DISKLIST.as_bytes())
            .unwrap()
            .value;
        let services =
            Services::parse("/etc/services", "domain-s 853/udp\namanda 10080/udp\n").unwrap();
        site_from(
            &config,
            &disklist,
            None,
            None,
            services,
            Path::new("/etc/amanda/daily/amanda.conf"),
        )
    }

    #[test]
    fn conf_values_and_their_locations_reach_the_plain_model() {
        let site = site();
        assert_eq!(site.inparallel.value, 20);
        assert_eq!(
            site.server.reserved_udp.value,
            PortRange::new(850, 859).unwrap()
        );
        assert!(
            site.server
                .reserved_udp
                .origin
                .to_string()
                .ends_with("amanda.conf:2:1"),
            "{}",
            site.server.reserved_udp.origin
        );
        assert_eq!(site.dles.len(), 3);
        assert_eq!(site.dles[0].auth, Auth::Bsd);
        assert_eq!(
            (site.dles[2].auth, site.dles[2].client_port),
            (Auth::Bsdtcp, Some(10080))
        );
        assert_eq!(site.clients.len(), 2);
        assert_eq!(
            site.clients[0].addresses,
            vec!["198.18.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(
            site.clients[1].addresses.is_empty(),
            "names are resolved later, by the CLI"
        );
    }

    #[test]
    fn the_seed_config_fails_the_capacity_check_once_it_has_more_dles_than_ports() {
        // Two bsd DLEs wake two dumpers: nine ports are plenty.
        let findings = check(&site());
        assert!(
            !findings.iter().any(|f| f.code == "capacity"),
            "{findings:#?}"
        );
        // Thirty wake all twenty dumpers, each keeping its port.
        let mut many = site();
        let first = many.dles[0].clone();
        many.dles.extend((0..30).map(|i| SiteDle {
            disk: format!("/d{i}"),
            ..first.clone()
        }));
        let findings = check(&many);
        let cap = findings.iter().find(|f| f.code == "capacity").unwrap();
        assert_eq!(cap.severity, Severity::Error);
        assert!(
            cap.message.contains("9 usable ports but needs 21"),
            "{}",
            cap.message
        );
    }

    #[test]
    fn a_site_feeds_the_simulator() {
        let mut p = SimParams::seed_case();
        sim_from_site(&mut p, &site(), 1e9, 0.0);
        assert_eq!((p.dles.len(), p.hosts.len(), p.inparallel), (3, 2, 20));
        assert_eq!(p.dles[2].auth, Auth::Bsdtcp);
    }
}
