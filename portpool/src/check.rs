//! `portpool check`: lint the port settings of a [`Site`].
//!
//! Each finding says what is wrong, where it was set, what the real Amanda 3.5 and
//! amanda-rs do about it, and what to change. Exit code: 0 no finding, 1 warnings only,
//! 2 errors. This module must NOT read files; it judges the plain model.

use std::fmt::Write as _;

use crate::site::{Ranges, Setting, Site};
use proto::Auth;
use proto::ports::{PortRange, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable name for the rule (`capacity`, `services`, `security-file`...).
    pub code: &'static str,
    /// `file:line:column` or `default`.
    pub origin: String,
    pub message: String,
    /// What to change.
    pub fix: String,
}

fn finding(
    severity: Severity,
    code: &'static str,
    origin: String,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        severity,
        code,
        origin,
        message,
        fix,
    }
}

fn keyword(proto: Transport) -> &'static str {
    match proto {
        Transport::Udp => "reserved-udp-port",
        Transport::Tcp => "reserved-tcp-port",
    }
}

fn security_key(proto: Transport) -> &'static str {
    match proto {
        Transport::Udp => "udp_port_range",
        Transport::Tcp => "tcp_port_range",
    }
}

/// Ports of `range` Amanda skips, as `853 (domain-s)`.
fn lost_ports(site: &Site, range: PortRange, proto: Transport) -> Vec<(u16, String)> {
    site.services
        .as_ref()
        .map(|s| s.foreign_in(range, proto))
        .unwrap_or_default()
}

/// The smallest range starting at `lo` with `need` usable ports, within `limit`.
fn widened(site: &Site, lo: u16, need: u32, proto: Transport, limit: u16) -> Option<PortRange> {
    let mut hi = lo;
    loop {
        let range = PortRange::new(lo, hi).ok()?;
        if range.len() - lost_ports(site, range, proto).len() as u32 >= need {
            return Some(range);
        }
        if hi >= limit {
            return None;
        }
        hi += 1;
    }
}

/// All findings, errors first.
pub fn check(site: &Site) -> Vec<Finding> {
    let mut out = Vec::new();
    let auths = site.auths();
    let protos: Vec<Transport> = {
        let mut p: Vec<Transport> = auths.iter().map(|a| a.transport()).collect();
        p.dedup();
        p.sort();
        p.dedup();
        p
    };
    validity(&site.server, "amanda.conf", &mut out);
    if let Some((path, ranges)) = &site.client_conf {
        validity(ranges, path, &mut out);
    }
    let inparallel = site.inparallel.value;
    let peak = site.peak_dumps();
    let hosts = site.hosts().len();
    let maxdumps = site.dles.iter().map(|d| d.maxdumps).max().unwrap_or(1);
    for &proto in &protos {
        let setting = match proto {
            Transport::Udp => &site.server.reserved_udp,
            Transport::Tcp => &site.server.reserved_tcp,
        };
        let range = setting.value;
        let lost = lost_ports(site, range, proto);
        let usable = range.len() - lost.len() as u32;
        if !lost.is_empty() {
            let mut list: Vec<String> = lost
                .iter()
                .take(6)
                .map(|(p, n)| format!("{p} is {n}"))
                .collect();
            if lost.len() > 6 {
                list.push(format!("and {} more", lost.len() - 6));
            }
            let file = site
                .services
                .as_ref()
                .map(|s| s.path.as_str())
                .unwrap_or("/etc/services");
            out.push(finding(
                Severity::Warning,
                "services",
                setting.origin.to_string(),
                format!(
                    "{} {}: {} in {file}; Amanda (and amanda-rs) never bind those, so the range has {usable} usable ports, not {}",
                    keyword(proto),
                    range.amanda_notation(),
                    list.join(", "),
                    range.len()
                ),
                format!("count {usable} ports when sizing inparallel and firewall holes, or move the range off those ports"),
            ));
        }
        // Demand: real Amanda dumpers keep their UDP port for life; the planner or amcheck
        // holds one more. bsdtcp holds one per running dump (and one per host while
        // estimating).
        let (need, why) = match proto {
            Transport::Udp => {
                // A dumper binds its port at its first request: a night with fewer bsd/bsdudp
                // DLEs than dumpers never wakes the rest.
                let udp_dles = site.dles.iter().filter(|d| d.auth.is_udp()).count() as u32;
                if site.dles.is_empty() || udp_dles >= inparallel {
                    (
                        inparallel + 1,
                        format!(
                            "inparallel {inparallel}: every dumper of the real Amanda keeps one port, plus one for the planner or amcheck"
                        ),
                    )
                } else {
                    (
                        udp_dles + 1,
                        format!(
                            "{udp_dles} DLEs with auth bsd/bsdudp (inparallel {inparallel}): each dumper that runs one keeps its port, plus one for the planner or amcheck"
                        ),
                    )
                }
            }
            Transport::Tcp => (
                peak,
                format!(
                    "inparallel {inparallel} with maxdumps {maxdumps} on {hosts} hosts: up to {peak} dumps at once, one reserved TCP connection each"
                ),
            ),
        };
        if usable < need {
            let limit = if range.lo() < 1024 { 1023 } else { u16::MAX };
            let wider = widened(site, range.lo(), need, proto, limit)
                .map(|r| format!("{} {}", keyword(proto), r.amanda_notation()))
                .unwrap_or_else(|| format!("a {} with {need} usable ports", keyword(proto)));
            let fewer = match proto {
                Transport::Udp => format!("inparallel {}", usable.saturating_sub(1).max(1)),
                Transport::Tcp => format!("inparallel {usable}"),
            };
            let consequence = match proto {
                Transport::Udp => {
                    "the real Amanda 3.5 blocks the surplus dumpers 30 minutes per try (15 s x 120) and then fails their DLEs; Amanda 2.4 sent them from ports outside the range, which the firewall drops; amanda-rs waits for a free port (backpressure) and is slower"
                }
                Transport::Tcp => {
                    "the real Amanda 3.5 fails the surplus connections at once (then connect-tries, retry_dump); amanda-rs waits for a free port and is slower"
                }
            };
            out.push(finding(
                Severity::Error,
                "capacity",
                setting.origin.to_string(),
                format!(
                    "{} {} has {usable} usable ports but needs {need} ({why}): {consequence}",
                    keyword(proto),
                    range.amanda_notation()
                ),
                format!("set {wider}, or {fewer}"),
            ));
        } else if proto == Transport::Tcp
            && (usable as usize) < hosts
            && auths.contains(&Auth::Bsdtcp)
        {
            out.push(finding(
                Severity::Warning,
                "capacity",
                setting.origin.to_string(),
                format!(
                    "reserved-tcp-port {} has {usable} usable ports for {hosts} bsdtcp hosts: the planner opens one connection per host while estimating; the real Amanda fails the estimates of the hosts it cannot connect to",
                    range.amanda_notation()
                ),
                format!(
                    "widen reserved-tcp-port to {} ports",
                    hosts
                ),
            ));
        }
        security_file(site, proto, setting, &mut out);
        privilege(site, proto, setting, &mut out);
    }
    client_conf(site, &protos, &mut out);
    data_range(site, &auths, peak, &mut out);
    client_port(site, &mut out);
    selfcheck_datagram(site, &mut out);
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn validity(ranges: &Ranges, file: &str, out: &mut Vec<Finding>) {
    for (name, s, lo, hi) in [
        ("reserved-udp-port", &ranges.reserved_udp, 1u16, 1023u16),
        ("reserved-tcp-port", &ranges.reserved_tcp, 1, 1023),
        ("unreserved-tcp-port", &ranges.unreserved_tcp, 1024, 65535),
    ] {
        let r = s.value;
        if r.lo() < lo || r.hi() > hi {
            out.push(finding(
                Severity::Error,
                "range",
                s.origin.to_string(),
                format!(
                    "{name} {} in {file} must lie within {lo}..{hi}: clients refuse requests from ports >= 1024 ('port not secure'), and Amanda refuses the setting",
                    r.amanda_notation()
                ),
                format!("choose {name} inside {lo},{hi}"),
            ));
        }
    }
}

fn security_file(
    site: &Site,
    proto: Transport,
    setting: &Setting<PortRange>,
    out: &mut Vec<Finding>,
) {
    let Some(sec) = &site.security else { return };
    let range = setting.value;
    match sec.range(proto) {
        Some(allowed) => {
            if !allowed.value.covers(range) {
                let outside: Vec<u16> = range
                    .ports()
                    .filter(|p| !allowed.value.contains(*p))
                    .collect();
                let shown = match (outside.first(), outside.last()) {
                    (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
                    (Some(a), _) => a.to_string(),
                    _ => String::new(),
                };
                let inside = range
                    .intersect(allowed.value)
                    .map(|r| format!("{} {}", keyword(proto), r.amanda_notation()))
                    .unwrap_or_else(|| {
                        format!(
                            "a {} inside {}",
                            keyword(proto),
                            allowed.value.amanda_notation()
                        )
                    });
                out.push(finding(
                    Severity::Error,
                    "security-file",
                    setting.origin.to_string(),
                    format!(
                        "{} {} reaches outside {}={} ({}): the real Amanda's ambind refuses ports {shown}, and since the scan starts at a random port the requests fail intermittently with \"Can't bind a socket to connect to <host>\" (the reason is only in the debug log)",
                        keyword(proto),
                        range.amanda_notation(),
                        security_key(proto),
                        allowed.value.amanda_notation(),
                        allowed.origin
                    ),
                    format!(
                        "set {inside}, or {}={},{} in {}",
                        security_key(proto),
                        allowed.value.lo().min(range.lo()),
                        allowed.value.hi().max(range.hi()),
                        sec.path
                    ),
                ));
            }
        }
        None => {
            let (severity, what) = match proto {
                Transport::Udp => (
                    Severity::Warning,
                    "the real Amanda's ambind falls back to the build's UDPPORTRANGE (Debian: 840,860)",
                ),
                Transport::Tcp => (
                    Severity::Error,
                    "the real Amanda's ambind falls back to the build's LOW_TCPPORTRANGE, which Debian leaves unset: every privileged TCP bind is refused (\"No defined tcp_port_range\")",
                ),
            };
            out.push(finding(
                severity,
                "security-file",
                setting.origin.to_string(),
                format!("{} has no {}: {what}", sec.path, security_key(proto)),
                format!(
                    "add {}={} to {}",
                    security_key(proto),
                    setting.value.amanda_notation(),
                    sec.path
                ),
            ));
        }
    }
}

fn privilege(site: &Site, proto: Transport, setting: &Setting<PortRange>, out: &mut Vec<Finding>) {
    let Some(privilege) = site.privilege else {
        return;
    };
    let range = setting.value;
    if !privilege.can_bind(range.lo()) {
        out.push(finding(
            Severity::Error,
            "privilege",
            setting.origin.to_string(),
            format!(
                "amanda-rs runs as uid {} without CAP_NET_BIND_SERVICE and cannot bind {} {} (ports below net.ipv4.ip_unprivileged_port_start={}); clients insist on a source port below 1024",
                privilege.uid,
                keyword(proto),
                range.amanda_notation(),
                privilege.unprivileged_port_start
            ),
            "run the server as root, or give it the capability (setcap cap_net_bind_service=+ep on the binary, or AmbientCapabilities=CAP_NET_BIND_SERVICE in its unit)".to_owned(),
        ));
    }
}

fn client_conf(site: &Site, protos: &[Transport], out: &mut Vec<Finding>) {
    let Some((path, client)) = &site.client_conf else {
        return;
    };
    let pairs = [
        (
            "reserved-udp-port",
            &site.server.reserved_udp,
            &client.reserved_udp,
            protos.contains(&Transport::Udp),
        ),
        (
            "reserved-tcp-port",
            &site.server.reserved_tcp,
            &client.reserved_tcp,
            protos.contains(&Transport::Tcp),
        ),
        (
            "unreserved-tcp-port",
            &site.server.unreserved_tcp,
            &client.unreserved_tcp,
            true,
        ),
    ];
    for (name, server, client, relevant) in pairs {
        if relevant && server.value != client.value {
            out.push(finding(
                Severity::Warning,
                "client-conf",
                client.origin.to_string(),
                format!(
                    "{name} is {} in {path} but {} in amanda.conf ({}): amcheck/amrecover on this host use one, the server the other, so a firewall hole sized for one misses the other",
                    client.value.amanda_notation(),
                    server.value.amanda_notation(),
                    server.origin
                ),
                format!("use the same {name} in both files, or open both in the firewall (portpool rules)"),
            ));
        }
    }
}

fn data_range(site: &Site, auths: &[Auth], peak: u32, out: &mut Vec<Finding>) {
    let per_dump = auths
        .iter()
        .map(|a| a.data_connections())
        .max()
        .unwrap_or(0);
    if per_dump == 0 {
        return;
    }
    let s = &site.server.unreserved_tcp;
    let need = peak * per_dump;
    let usable = s.value.len() - lost_ports(site, s.value, Transport::Tcp).len() as u32;
    if usable < need {
        out.push(finding(
            Severity::Warning,
            "data-range",
            s.origin.to_string(),
            format!(
                "unreserved-tcp-port {} has {usable} usable ports; {peak} dumps at once with {per_dump} data connection(s) each need {need}: dumps wait for data ports",
                s.value.amanda_notation()
            ),
            format!("widen unreserved-tcp-port to at least {need} ports"),
        ));
    }
}

fn client_port(site: &Site, out: &mut Vec<Finding>) {
    let Some(services) = &site.services else {
        return;
    };
    if services.port_of("amanda", Transport::Udp).is_some() {
        return;
    }
    if let Some(d) = site
        .dles
        .iter()
        .find(|d| d.auth != Auth::Bsdtcp && !d.client_port_set)
    {
        out.push(finding(
            Severity::Warning,
            "client-port",
            d.origin.to_string(),
            format!(
                "{}:{} uses auth {} without client_port, and {} has no amanda/udp entry: Amanda 3.5.1 then sends its requests to an uninitialised (random) port and amcheck says \"timeout waiting for ACK\"",
                d.host, d.disk, d.auth, services.path
            ),
            format!("add `amanda 10080/udp` to {}, or client_port \"10080\" to the dumptype", services.path),
        ));
    }
}

/// The most a reply may carry over bsd/bsdudp: one datagram (65,503 bytes) less the
/// longest header line.
pub const UDP_REPLY_LIMIT: usize = 65_503 - 255;

/// About how long a client's selfcheck reply is (amandad's `MESSAGE JSON` form, as measured
/// for ours and the real one): the host-wide messages, then per DLE about 2.7 KB plus 11
/// bytes per character of its name for an application (amgtar) DLE, 0.5 KB plus 4 per
/// character for GNUTAR.
pub fn selfcheck_reply_estimate<'a>(dles: impl IntoIterator<Item = (&'a str, bool)>) -> usize {
    dles.into_iter()
        .map(|(disk, application)| {
            if application {
                2_720 + 11 * disk.len()
            } else {
                500 + 4 * disk.len()
            }
        })
        .sum::<usize>()
        + 4_800
}

/// Hosts on bsd/bsdudp whose selfcheck reply likely passes one datagram: amcheck then sees
/// only part of it (the real amandad cuts it silently; ours says how many DLEs were left
/// out), so the check is incomplete every night.
fn selfcheck_datagram(site: &Site, out: &mut Vec<Finding>) {
    for host in site.hosts() {
        let dles: Vec<&crate::site::SiteDle> = site
            .dles
            .iter()
            .filter(|d| d.host == host && d.auth != Auth::Bsdtcp)
            .collect();
        let Some(first) = dles.first() else { continue };
        let estimate = selfcheck_reply_estimate(dles.iter().map(|d| {
            let app = site
                .application_dles
                .contains(&(d.host.clone(), d.disk.clone()));
            (d.disk.as_str(), app)
        }));
        if estimate <= UDP_REPLY_LIMIT {
            continue;
        }
        out.push(finding(
            Severity::Warning,
            "selfcheck-datagram",
            first.origin.to_string(),
            format!(
                "{host} has {} DLEs on auth {}: amcheck's selfcheck reply is about {} KB, more than one UDP datagram holds (65503 bytes); the real amandad cuts it and amcheck reports DLEs nobody checked as fine, amanda-rs's amandad sends what fits and an error naming how many DLEs were left out",
                dles.len(),
                first.auth,
                estimate / 1000
            ),
            format!("use auth bsdtcp for {host} (no size limit), or split its DLEs over fewer per host"),
        ));
    }
}

/// 0 no finding, 1 warnings only, 2 errors.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        None => 0,
        Some(Severity::Warning) => 1,
        Some(Severity::Error) => 2,
    }
}

/// The text `portpool check` prints.
pub fn render(site: &Site, findings: &[Finding]) -> String {
    let mut out = String::new();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let _ = writeln!(
        out,
        "portpool check {} ({}): {errors} error(s), {warnings} warning(s)",
        site.config, site.conf_path
    );
    for f in findings {
        let label = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
        };
        let _ = writeln!(out, "{label} [{}] {}: {}", f.code, f.origin, f.message);
        let _ = writeln!(out, "  fix: {}", f.fix);
    }
    if findings.is_empty() {
        let _ = writeln!(out, "port settings are consistent");
    }
    out
}

#[cfg(test)]
mod tests;
