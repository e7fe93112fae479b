//! `portpool rules`: the firewall openings a [`Site`] needs, for the server and for each
//! client, as nftables (default) or iptables-restore input.
//!
//! What flows (spec §4, §5.5): bsd/bsdudp control = UDP from the server's
//! `reserved-udp-port` to the client's 10080; bsd
//! data = one TCP connection per stream from the server's `unreserved-tcp-port` to the
//! client's `unreserved-tcp-port`, bsdudp one such connection; bsdtcp = one TCP connection
//! from the server's `reserved-tcp-port` to the client's 10080. Restores go the other way:
//! amrecover on a client talks to the server's 10080 from the client's reserved ports
//! (bsd data: to the server's unreserved ports). Each generated table only accepts these
//! flows (plus established/related) and drops other traffic to 10080.
//!
//! The kernel's `amanda` conntrack helper, which reads the REP's CONNECT line and admits the
//! announced data ports as RELATED, is attached only for hosts whose DLEs all use bsd: it
//! copies at most five digits of each port, so bsdudp's six-digit stream handles (`MESG
//! 499999`) become an expectation for port 49999, and the next bsdudp REP from another
//! server port collides with it and is dropped (sendto fails with EPERM). The explicit data
//! rules make the helper unnecessary; for bsd it also covers clients whose data ports are
//! not pinned by `unreserved-tcp-port`.
//!
//! This module must NOT resolve names or read files: addresses come in the [`Site`].

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::site::{Ranges, Site};
use proto::Auth;
use proto::ports::{PortRange, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nft,
    Iptables,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    All,
    Server,
    Clients,
    Client(String),
}

/// How the rules treat what they do not mention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Drop every incoming packet the rules do not accept (loopback, ICMP and established
    /// traffic excepted), so the table is the host's whole input firewall. Off by default:
    /// the table then only guards the Amanda ports and leaves the rest to the admin's own.
    pub default_drop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    dir: Dir,
    peers: Vec<IpAddr>,
    proto: Transport,
    sport: Option<PortRange>,
    dport: Option<PortRange>,
    comment: String,
}

/// Rules for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRules {
    role: &'static str,
    name: String,
    rules: Vec<Rule>,
    /// Attach the amanda helper to UDP packets to these peers' port (Out: requests we
    /// send; In: requests we receive).
    helpers: Vec<(Dir, Vec<IpAddr>, u16)>,
    /// Comment lines for the header (why something is absent).
    notes: Vec<String>,
    /// Ports of this host that only the rules may reach.
    guarded: Vec<(Transport, u16)>,
}

impl HostRules {
    fn new(role: &'static str, name: &str) -> Self {
        HostRules {
            role,
            name: name.to_owned(),
            rules: Vec::new(),
            helpers: Vec::new(),
            notes: Vec::new(),
            guarded: Vec::new(),
        }
    }
}

fn single(port: u16) -> PortRange {
    PortRange::new(port.max(1), port.max(1)).expect("non-zero port")
}

fn client_ranges(site: &Site) -> Ranges {
    site.client_conf
        .as_ref()
        .map(|(_, r)| r.clone())
        .unwrap_or_else(Ranges::built_in)
}

fn plan(site: &Site) -> Result<Vec<HostRules>, String> {
    if site.server_addresses.is_empty() {
        return Err(format!(
            "the server's address is unknown ({}): give it with --server-address",
            site.server_name
        ));
    }
    let unresolved: Vec<&str> = site
        .clients
        .iter()
        .filter(|c| c.addresses.is_empty())
        .map(|c| c.name.as_str())
        .collect();
    if !unresolved.is_empty() {
        return Err(format!(
            "no address for client(s) {}: add them to /etc/hosts or DNS (rules need addresses)",
            unresolved.join(", ")
        ));
    }
    let s = &site.server;
    let c = client_ranges(site);
    let server_addrs = site.server_addresses.clone();
    let mut server = HostRules::new("server", &site.server_name);
    let mut clients = Vec::new();
    for client in &site.clients {
        let dles: Vec<_> = site.dles.iter().filter(|d| d.host == client.name).collect();
        let mut auths: Vec<Auth> = dles.iter().map(|d| d.auth).collect();
        auths.sort();
        auths.dedup();
        let mut ports: Vec<u16> = dles.iter().map(|d| site.client_port(d)).collect();
        ports.sort_unstable();
        ports.dedup();
        let addrs = client.addresses.clone();
        let mut host = HostRules::new("client", &client.name);
        // See the module docs: the helper mangles bsdudp's stream handles.
        let helper_ok = auths.contains(&Auth::Bsd) && !auths.contains(&Auth::Bsdudp);
        if auths.contains(&Auth::Bsdudp) {
            let note = format!(
                "no amanda conntrack helper for {}: it turns bsdudp's handle MESG 499999 into port 49999 and then drops the next REP; the data rules below do its job",
                client.name
            );
            host.notes.push(note.clone());
            server.notes.push(note);
        }
        let mut both = |dir_server: Dir,
                        proto: Transport,
                        sport: Option<PortRange>,
                        dport: PortRange,
                        comment: String| {
            let dir_client = if dir_server == Dir::Out {
                Dir::In
            } else {
                Dir::Out
            };
            server.rules.push(Rule {
                dir: dir_server,
                peers: addrs.clone(),
                proto,
                sport,
                dport: Some(dport),
                comment: format!("{comment} ({})", client.name),
            });
            host.rules.push(Rule {
                dir: dir_client,
                peers: server_addrs.clone(),
                proto,
                sport,
                dport: Some(dport),
                comment,
            });
        };
        // issue 14: a `dialin yes` host opens every connection itself, to the server's
        // `dumper listen`; nothing may (or needs to) reach it from outside.
        let dialin = dles.iter().any(|d| d.dialin);
        if dialin {
            both(
                Dir::In,
                Transport::Tcp,
                None,
                single(crate::site::AMANDA_PORT),
                "dial-in: amandad --dial-out to the server's dumper listen (held connection and sessions)"
                    .to_owned(),
            );
            host.notes.push(format!(
                "{} is dial-in: no inbound rule; with --default-drop it accepts only the replies of connections it opened",
                client.name
            ));
            server.notes.push(format!(
                "{} is dial-in: the server never connects to it; behind NAT it arrives from the router's address, so give that address with --side/--server-address or widen the rule",
                client.name
            ));
        }
        for &port in ports.iter().filter(|_| !dialin) {
            for &auth in &auths {
                match auth {
                    Auth::Bsd | Auth::Bsdudp => {
                        both(
                            Dir::Out,
                            Transport::Udp,
                            Some(s.reserved_udp.value),
                            single(port),
                            format!("{auth} control: server reserved-udp-port to amandad"),
                        );
                        let what = if auth == Auth::Bsd {
                            "bsd data streams (one per stream)"
                        } else {
                            "bsdudp data connection"
                        };
                        both(
                            Dir::Out,
                            Transport::Tcp,
                            Some(s.unreserved_tcp.value),
                            c.unreserved_tcp.value,
                            format!(
                                "{what}: server unreserved-tcp-port to the client's unreserved-tcp-port"
                            ),
                        );
                    }
                    Auth::Bsdtcp => {
                        both(
                            Dir::Out,
                            Transport::Tcp,
                            Some(s.reserved_tcp.value),
                            single(port),
                            "bsdtcp control and data: server reserved-tcp-port to amandad"
                                .to_owned(),
                        );
                    }
                    Auth::Ssl => {
                        both(
                            Dir::Out,
                            Transport::Tcp,
                            Some(s.unreserved_tcp.value),
                            single(port),
                            "ssl control and data (TLS): server unreserved-tcp-port to amandad"
                                .to_owned(),
                        );
                    }
                }
            }
            if helper_ok {
                server.helpers.push((Dir::Out, addrs.clone(), port));
                host.helpers.push((Dir::In, server_addrs.clone(), port));
            }
            if auths.iter().any(|a| a.is_udp()) {
                host.guarded.push((Transport::Udp, port));
            }
            if auths.iter().any(|a| a.is_stream()) {
                host.guarded.push((Transport::Tcp, port));
            }
        }
        // Restore path: amrecover on the client talks to the server's amandad.
        for &auth in &auths {
            match auth {
                Auth::Bsdtcp | Auth::Ssl => {
                    // Like the dumper's, amrecover's source port is reserved but for ssl.
                    let source = if auth.reserved_source_port() {
                        c.reserved_tcp.value
                    } else {
                        c.unreserved_tcp.value
                    };
                    both(
                        Dir::In,
                        Transport::Tcp,
                        Some(source),
                        single(crate::site::AMANDA_PORT),
                        format!("restore: amrecover ({auth}) to the server's amindexd/amidxtaped"),
                    );
                }
                Auth::Bsd | Auth::Bsdudp => {
                    both(
                        Dir::In,
                        Transport::Udp,
                        Some(c.reserved_udp.value),
                        single(crate::site::AMANDA_PORT),
                        format!("restore: amrecover ({auth}) to the server's amandad"),
                    );
                    both(
                        Dir::In,
                        Transport::Tcp,
                        Some(c.unreserved_tcp.value),
                        s.unreserved_tcp.value,
                        format!("restore: {auth} data streams to the server's unreserved-tcp-port"),
                    );
                }
            }
        }
        if helper_ok {
            server
                .helpers
                .push((Dir::In, addrs.clone(), crate::site::AMANDA_PORT));
        }
        dedup(&mut host.rules);
        clients.push(host);
    }
    let any_udp = site.dles.iter().any(|d| d.auth.is_udp());
    let any_tcp = site.dles.iter().any(|d| d.auth.is_stream());
    if any_udp {
        server
            .guarded
            .push((Transport::Udp, crate::site::AMANDA_PORT));
    }
    if any_tcp {
        server
            .guarded
            .push((Transport::Tcp, crate::site::AMANDA_PORT));
    }
    dedup(&mut server.rules);
    let mut all = vec![server];
    all.extend(clients);
    for h in &mut all {
        h.helpers.dedup();
        h.guarded.sort();
        h.guarded.dedup();
    }
    Ok(all)
}

fn dedup(rules: &mut Vec<Rule>) {
    let mut seen: Vec<Rule> = Vec::new();
    rules.retain(|r| {
        let dup = seen.iter().any(|s| {
            s.dir == r.dir
                && s.peers == r.peers
                && s.proto == r.proto
                && s.sport == r.sport
                && s.dport == r.dport
        });
        if !dup {
            seen.push(r.clone());
        }
        !dup
    });
}

/// The rules text for the chosen side(s).
pub fn render(site: &Site, format: Format, side: &Side) -> Result<String, String> {
    render_with(site, format, side, &Options::default())
}

/// [`render`] with [`Options`].
pub fn render_with(
    site: &Site,
    format: Format,
    side: &Side,
    opts: &Options,
) -> Result<String, String> {
    let hosts = plan(site)?;
    let chosen: Vec<&HostRules> = hosts
        .iter()
        .filter(|h| match side {
            Side::All => true,
            Side::Server => h.role == "server",
            Side::Clients => h.role == "client",
            Side::Client(name) => h.role == "client" && h.name == *name,
        })
        .collect();
    if chosen.is_empty() {
        return Err(match side {
            Side::Client(name) => {
                format!("{name} is not a client of configuration {}", site.config)
            }
            _ => format!("configuration {} has no client", site.config),
        });
    }
    let mut out = String::new();
    for (i, h) in chosen.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match format {
            Format::Nft => nft(site, h, opts, &mut out),
            Format::Iptables => iptables(site, h, opts, &mut out),
        }
    }
    Ok(out)
}

/// One host's rules only (for tests that feed each file to `nft -c -f`).
pub fn render_host(site: &Site, format: Format, host: &str) -> Result<String, String> {
    let hosts = plan(site)?;
    let h = hosts
        .iter()
        .find(|h| h.name == host)
        .ok_or_else(|| format!("no host {host}"))?;
    let mut out = String::new();
    match format {
        Format::Nft => nft(site, h, &Options::default(), &mut out),
        Format::Iptables => iptables(site, h, &Options::default(), &mut out),
    }
    Ok(out)
}

fn table_name(h: &HostRules) -> String {
    let clean: String = h
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("amanda_rs_{}_{}", h.role, clean)
}

fn nft_range(r: PortRange) -> String {
    r.to_string()
}

/// One rule as nft rule lines (one per address family that has peers).
fn nft_rule_lines(r: &Rule) -> Vec<String> {
    let mut lines = Vec::new();
    for fam in [Family::V4, Family::V6] {
        let Some(p) = nft_peers(fam, &r.peers) else {
            continue;
        };
        let addr = if r.dir == Dir::In { "saddr" } else { "daddr" };
        let mut line = format!("{} {addr} {p}", fam.nft());
        if let Some(s) = r.sport {
            let _ = write!(line, " {} sport {}", r.proto, nft_range(s));
        }
        if let Some(d) = r.dport {
            let _ = write!(line, " {} dport {}", r.proto, nft_range(d));
        }
        let _ = write!(line, " accept comment \"{}\"", quote(&r.comment));
        lines.push(line);
    }
    lines
}

/// A connection the server opens to a client during a night: the hops `dumper check
/// --ports` exercises, as `portpool rules` opens them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// `udp` or `tcp`.
    pub proto: Transport,
    /// The server's source ports.
    pub sport: PortRange,
    /// The client's destination ports.
    pub dport: PortRange,
    /// What it carries (`bsd control: server reserved-udp-port to amandad`).
    pub what: String,
    /// The server's rule for it (nft), as `portpool rules --side server` writes it.
    pub server_rule: Vec<String>,
    /// The client's rule for it (nft), as `portpool rules --side <client>` writes it.
    pub client_rule: Vec<String>,
}

/// The flows the server opens to `client` (control and data; not the restore paths, which
/// the client opens), in the order of the generated rules.
pub fn flows(site: &Site, client: &str) -> Result<Vec<Flow>, String> {
    let hosts = plan(site)?;
    let c = hosts
        .iter()
        .find(|h| h.role == "client" && h.name == client)
        .ok_or_else(|| format!("{client} is not a client of configuration {}", site.config))?;
    let server = hosts.iter().find(|h| h.role == "server");
    let mut out = Vec::new();
    for r in c.rules.iter().filter(|r| r.dir == Dir::In) {
        let (Some(sport), Some(dport)) = (r.sport, r.dport) else {
            continue;
        };
        let server_rule = server
            .and_then(|s| {
                s.rules.iter().find(|x| {
                    x.dir == Dir::Out
                        && x.proto == r.proto
                        && x.sport == r.sport
                        && x.dport == r.dport
                })
            })
            .map(nft_rule_lines)
            .unwrap_or_default();
        out.push(Flow {
            proto: r.proto,
            sport,
            dport,
            what: r.comment.clone(),
            server_rule,
            client_rule: nft_rule_lines(r),
        });
    }
    Ok(out)
}

fn nft_peers(family: Family, peers: &[IpAddr]) -> Option<String> {
    let list: Vec<String> = peers
        .iter()
        .filter(|a| family.matches(a))
        .map(|a| a.to_string())
        .collect();
    match list.len() {
        0 => None,
        1 => Some(list[0].clone()),
        _ => Some(format!("{{ {} }}", list.join(", "))),
    }
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn matches(self, a: &IpAddr) -> bool {
        matches!(
            (self, a),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }

    fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

fn quote(comment: &str) -> String {
    comment.replace('"', "'")
}

/// The comment lines that open a rule file: whose rules they are, and how to load them.
fn banner(site: &Site, h: &HostRules, kind: &str, load: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "# amanda-rs: {kind} rules for the Amanda {} {} (configuration {}), from `portpool rules`.",
        h.role, h.name, site.config
    );
    let _ = writeln!(out, "# {load}");
}

fn nft(site: &Site, h: &HostRules, opts: &Options, out: &mut String) {
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    banner(
        site,
        h,
        "firewall",
        "Load with `nft -f FILE`. The table accepts Amanda's flows and drops other traffic to its\n\
         # 10080 ports; if another table of yours drops by default, copy these rules into it.",
        out,
    );
    for note in &h.notes {
        let _ = writeln!(out, "# {note}");
    }
    let table = table_name(h);
    let _ = writeln!(out, "table inet {table} {{");
    if !h.helpers.is_empty() {
        let _ = writeln!(
            out,
            "    ct helper amanda {{\n        type \"amanda\" protocol udp\n        l3proto inet\n    }}"
        );
    }
    let hook = |dir: Dir| match dir {
        Dir::Out => "output",
        Dir::In => "prerouting",
    };
    for dir in [Dir::Out, Dir::In] {
        let helpers: Vec<&(Dir, Vec<IpAddr>, u16)> =
            h.helpers.iter().filter(|(d, _, _)| *d == dir).collect();
        if helpers.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n    chain helper_{} {{", hook(dir));
        let _ = writeln!(
            out,
            "        type filter hook {} priority filter; policy accept;",
            hook(dir)
        );
        for (_, peers, port) in helpers {
            for fam in [Family::V4, Family::V6] {
                if let Some(p) = nft_peers(fam, peers) {
                    let (addr_dir, port_dir) = match dir {
                        Dir::Out => ("daddr", "dport"),
                        Dir::In => ("saddr", "dport"),
                    };
                    let _ = writeln!(
                        out,
                        "        {} {addr_dir} {p} udp {port_dir} {port} ct helper set \"amanda\"",
                        fam.nft()
                    );
                }
            }
        }
        let _ = writeln!(out, "    }}");
    }
    for (dir, name, hook) in [(Dir::In, "input", "input"), (Dir::Out, "output", "output")] {
        let _ = writeln!(out, "\n    chain {name} {{");
        let policy = if dir == Dir::In && opts.default_drop {
            "drop"
        } else {
            "accept"
        };
        let _ = writeln!(
            out,
            "        type filter hook {hook} priority filter; policy {policy};"
        );
        let _ = writeln!(out, "        ct state established,related accept");
        if dir == Dir::In && opts.default_drop {
            let _ = writeln!(out, "        iif \"lo\" accept");
            let _ = writeln!(out, "        meta l4proto {{ icmp, ipv6-icmp }} accept");
        }
        for r in h.rules.iter().filter(|r| r.dir == dir) {
            for line in nft_rule_lines(r) {
                let _ = writeln!(out, "        {line}");
            }
        }
        if dir == Dir::In {
            for (proto, port) in &h.guarded {
                let _ = writeln!(
                    out,
                    "        {proto} dport {port} drop comment \"only the Amanda peers above may use {proto} {port}\""
                );
            }
        }
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "}}");
}

fn ipt_range(r: PortRange) -> String {
    if r.lo() == r.hi() {
        r.lo().to_string()
    } else {
        format!("{}:{}", r.lo(), r.hi())
    }
}

fn iptables(site: &Site, h: &HostRules, opts: &Options, out: &mut String) {
    let chain = |dir: Dir| match dir {
        Dir::In => "AMANDA-RS-IN",
        Dir::Out => "AMANDA-RS-OUT",
    };
    banner(
        site,
        h,
        "iptables",
        "Load with `iptables-restore --noflush < FILE` (IPv4; IPv6 peers are listed as comments).",
        out,
    );
    let v6: Vec<String> = h
        .rules
        .iter()
        .flat_map(|r| r.peers.iter())
        .filter(|a| a.is_ipv6())
        .map(|a| a.to_string())
        .collect();
    if !v6.is_empty() {
        let _ = writeln!(
            out,
            "# IPv6 peers need the same rules in ip6tables: {}",
            v6.join(" ")
        );
    }
    for note in &h.notes {
        let _ = writeln!(out, "# {note}");
    }
    if !h.helpers.is_empty() {
        let _ = writeln!(out, "*raw");
        for (dir, peers, port) in &h.helpers {
            for peer in peers.iter().filter(|a| a.is_ipv4()) {
                let (chain, flag) = match dir {
                    Dir::Out => ("OUTPUT", "-d"),
                    Dir::In => ("PREROUTING", "-s"),
                };
                let _ = writeln!(
                    out,
                    "-A {chain} {flag} {peer}/32 -p udp -m udp --dport {port} -j CT --helper amanda"
                );
            }
        }
        let _ = writeln!(out, "COMMIT");
    }
    let _ = writeln!(out, "*filter");
    if opts.default_drop {
        let _ = writeln!(out, ":INPUT DROP [0:0]");
    }
    for dir in [Dir::In, Dir::Out] {
        let _ = writeln!(out, ":{} - [0:0]", chain(dir));
    }
    if opts.default_drop {
        let _ = writeln!(out, "-A INPUT -i lo -j ACCEPT");
        let _ = writeln!(out, "-A INPUT -p icmp -j ACCEPT");
    }
    let _ = writeln!(out, "-A INPUT -j {}", chain(Dir::In));
    let _ = writeln!(out, "-A OUTPUT -j {}", chain(Dir::Out));
    for dir in [Dir::In, Dir::Out] {
        let _ = writeln!(
            out,
            "-A {} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            chain(dir)
        );
        for r in h.rules.iter().filter(|r| r.dir == dir) {
            for peer in r.peers.iter().filter(|a| a.is_ipv4()) {
                let flag = if dir == Dir::In { "-s" } else { "-d" };
                let mut line = format!(
                    "-A {} {flag} {peer}/32 -p {} -m {}",
                    chain(dir),
                    r.proto,
                    r.proto
                );
                if let Some(s) = r.sport {
                    let _ = write!(line, " --sport {}", ipt_range(s));
                }
                if let Some(d) = r.dport {
                    let _ = write!(line, " --dport {}", ipt_range(d));
                }
                let _ = writeln!(
                    out,
                    "{line} -m comment --comment \"{}\" -j ACCEPT",
                    quote(&r.comment)
                );
            }
        }
        if dir == Dir::In {
            for (proto, port) in &h.guarded {
                let _ = writeln!(
                    out,
                    "-A {} -p {proto} -m {proto} --dport {port} -j DROP",
                    chain(dir)
                );
            }
        }
    }
    let _ = writeln!(out, "COMMIT");
}

#[cfg(test)]
mod tests;
