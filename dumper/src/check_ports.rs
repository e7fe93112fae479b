//! `dumper check --ports`: a preflight of every hop the night will use, from the real source
//! port ranges, that says per hop whether it is open, refused or silently dropped, and which
//! rules to change.
//!
//! The hops are those `portpool rules` opens ([`portpool::rules::flows`]), so the check and
//! the generated firewall rules agree by construction:
//! - the control port (UDP or TCP 10080): a `noop` exchange from each usable source port of
//!   the reserved range (TCP: a sample of it), answered means open in both directions;
//! - the data connections of bsd/bsdudp: a TCP connection attempt from the server's
//!   unreserved range to the client's data ports. Between dumps nothing listens there, so a
//!   reset from the client's kernel means the path is open; silence means a firewall drops
//!   it.
//!
//! TCP probes close with a reset (SO_LINGER 0), so they leave no TIME_WAIT behind that could
//! delay the night's connections from the same ports.
//!
//! What this module must not do: start a backup, or leave anything bound or connected.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use portpool::rules::Flow;
use portpool_alloc::services::Services;
use proto::frame;
use proto::pkt::PacketType;
use proto::ports::{PortRange, Transport};
use proto::udp::Datagram;

/// What a probe of one hop from one source port found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The path is open (an answer, or a reset from the client's kernel).
    Open(String),
    /// The client answered with a refusal: an ICMP error, or a reset where a daemon should
    /// listen.
    Refused(String),
    /// No answer at all within the time limit: dropped on the way.
    Dropped,
    /// The source port could not be used here (busy, or not bindable).
    Skipped(String),
}

/// The result for one hop.
#[derive(Clone, Debug)]
pub struct HopResult {
    /// `server 198.18.0.1:840-860/udp -> client 198.18.1.2:10080/udp`.
    pub hop: String,
    /// What the hop carries.
    pub what: String,
    /// (source port, verdict) per probe.
    pub probes: Vec<(u16, Verdict)>,
    /// The rules `portpool rules` writes for this hop, per side.
    pub server_rule: Vec<String>,
    pub client_rule: Vec<String>,
}

impl HopResult {
    /// True when every probe that ran found the path open.
    pub fn ok(&self) -> bool {
        self.probes
            .iter()
            .all(|(_, v)| matches!(v, Verdict::Open(_) | Verdict::Skipped(_)))
            && self
                .probes
                .iter()
                .any(|(_, v)| matches!(v, Verdict::Open(_)))
    }
}

/// What one client's probes need.
pub struct Target<'a> {
    /// The client's name in the disklist and its address.
    pub name: &'a str,
    pub addr: IpAddr,
    /// `dumpuser`, for the SECURITY USER line of the noop probes.
    pub user: &'a str,
    /// The configuration's name, for the hints.
    pub config: &'a str,
}

/// Probes every flow of one client. `services` excludes source ports as Amanda does;
/// `timeout` bounds each probe.
pub fn probe_client(
    target: &Target<'_>,
    flows: &[Flow],
    services: &Services,
    timeout: Duration,
) -> Vec<HopResult> {
    let server = crate::net::local_address_towards(SocketAddr::new(target.addr, 10080))
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    flows
        .iter()
        .map(|f| {
            let control = f.dport.lo() == f.dport.hi();
            let sample = if f.proto == Transport::Udp {
                32
            } else if control {
                5
            } else {
                3
            };
            let sports = sample_ports(f.sport, f.proto, services, sample);
            let dports = sample_ports(f.dport, f.proto, &Services::empty(), sports.len().max(1));
            let probes = std::thread::scope(|scope| {
                let handles: Vec<_> = sports
                    .iter()
                    .zip(dports.iter().cycle())
                    .map(|(&sport, &dport)| {
                        let dest = SocketAddr::new(target.addr, dport);
                        scope.spawn(move || {
                            let v = match (f.proto, control) {
                                (Transport::Udp, _) => probe_udp(sport, dest, target.user, timeout),
                                (Transport::Tcp, true) => {
                                    probe_tcp_control(sport, dest, target.user, timeout)
                                }
                                (Transport::Tcp, false) => probe_tcp_reach(sport, dest, timeout),
                            };
                            (sport, v)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().ok())
                    .collect::<Vec<_>>()
            });
            HopResult {
                hop: format!(
                    "server {server}:{}/{} -> client {}:{}/{}",
                    f.sport, f.proto, target.addr, f.dport, f.proto
                ),
                what: f.what.clone(),
                probes,
                server_rule: f.server_rule.clone(),
                client_rule: f.client_rule.clone(),
            }
        })
        .collect()
}

/// Up to `n` ports of `range`, spread evenly, minus those /etc/services gives to others.
fn sample_ports(range: PortRange, proto: Transport, services: &Services, n: usize) -> Vec<u16> {
    let usable: Vec<u16> = (range.lo()..=range.hi())
        .filter(|p| services.foreign_owner(*p, proto).is_none())
        .collect();
    if usable.len() <= n {
        return usable;
    }
    let n = n.max(1);
    let mut out: Vec<u16> = (0..n)
        .map(|i| usable[i * (usable.len() - 1) / (n - 1).max(1)])
        .collect();
    out.dedup();
    out
}

fn bind_error(port: u16, e: &io::Error) -> Verdict {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Verdict::Skipped(format!(
            "binding port {port} needs root or CAP_NET_BIND_SERVICE"
        )),
        _ => Verdict::Skipped(format!("port {port} is busy here ({e})")),
    }
}

fn icmp_verdict(e: &io::Error) -> Option<Verdict> {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Some(Verdict::Refused(
            "ICMP port unreachable: nothing listens there (is amandad running for this auth?)"
                .into(),
        )),
        Some(libc::EHOSTUNREACH)
        | Some(libc::ENETUNREACH)
        | Some(libc::EACCES)
        | Some(libc::EPERM) => Some(Verdict::Refused(format!(
            "rejected on the way ({e}): a firewall answers with an ICMP error"
        ))),
        _ => None,
    }
}

/// A noop exchange over UDP from `sport`.
fn probe_udp(sport: u16, dest: SocketAddr, user: &str, timeout: Duration) -> Verdict {
    let local = if dest.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], sport))
    } else {
        SocketAddr::from(([0u16; 8], sport))
    };
    let sock = match UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => return bind_error(sport, &e),
    };
    // Connected, so that ICMP errors come back as errors on recv.
    if let Err(e) = sock.connect(dest) {
        return Verdict::Refused(format!("cannot route to {dest}: {e}"));
    }
    let handle = format!("000-{:08x}", 0xC0DE_0000u32 | u32::from(sport));
    let body = crate::request::noop(&crate::features::server_features());
    let Ok(req) =
        Datagram::request(handle.as_bytes(), 1, user.as_bytes(), &body).and_then(|d| d.to_vec())
    else {
        return Verdict::Skipped("cannot encode the probe".into());
    };
    let deadline = Instant::now() + timeout;
    let mut sent = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Verdict::Dropped;
        }
        // The REQ goes twice (halfway), as a lost datagram is not a closed path.
        if sent < 2 && (sent == 0 || now + timeout / 2 >= deadline) {
            let _ = sock.send(&req);
            sent += 1;
        }
        let wait = (deadline - now)
            .min(timeout / 2)
            .max(Duration::from_millis(10));
        let _ = sock.set_read_timeout(Some(wait));
        match sock.recv(&mut buf) {
            Ok(n) => {
                let Ok(d) = Datagram::parse(&buf[..n]) else {
                    continue;
                };
                match d.ptype {
                    PacketType::Ack => {}
                    PacketType::Rep => {
                        let ack = Datagram::new(PacketType::Ack, d.handle, d.seq, &b""[..]);
                        if let Ok(bytes) = ack.to_vec() {
                            let _ = sock.send(&bytes);
                        }
                        return Verdict::Open("amandad answered".into());
                    }
                    PacketType::Nak => {
                        let text = String::from_utf8_lossy(&d.body).trim().to_string();
                        return Verdict::Open(format!("reached amandad, which refused: {text}"));
                    }
                    _ => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                if let Some(v) = icmp_verdict(&e) {
                    return v;
                }
            }
        }
    }
}

fn tcp_from(sport: u16, dest: SocketAddr) -> Result<socket2::Socket, Verdict> {
    let domain = socket2::Domain::for_address(dest);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)
        .map_err(|e| Verdict::Skipped(e.to_string()))?;
    let _ = s.set_reuse_address(true);
    // A reset instead of FIN: no TIME_WAIT left on this port for the night's connections.
    let _ = s.set_linger(Some(Duration::ZERO));
    let local = if dest.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], sport))
    } else {
        SocketAddr::from(([0u16; 8], sport))
    };
    s.bind(&local.into()).map_err(|e| bind_error(sport, &e))?;
    Ok(s)
}

fn tcp_connect_verdict(e: &io::Error) -> Verdict {
    if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock {
        return Verdict::Dropped;
    }
    icmp_verdict(e).unwrap_or_else(|| Verdict::Refused(e.to_string()))
}

/// Connects from `sport` and runs a noop exchange (bsdtcp control).
fn probe_tcp_control(sport: u16, dest: SocketAddr, user: &str, timeout: Duration) -> Verdict {
    let s = match tcp_from(sport, dest) {
        Ok(s) => s,
        Err(v) => return v,
    };
    if let Err(e) = s.connect_timeout(&dest.into(), timeout) {
        return match tcp_connect_verdict(&e) {
            Verdict::Refused(_) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                Verdict::Refused(
                    "reset: nothing listens on the control port (is amandad running for bsdtcp?), or a firewall rejects with a reset".into(),
                )
            }
            v => v,
        };
    }
    let mut t: TcpStream = s.into();
    let body = crate::request::noop(&crate::features::server_features());
    let mut frame_bytes = Vec::new();
    let encoded = proto::tcp::Packet::request(user.as_bytes(), &body)
        .and_then(|p| p.encode_frame(1, &mut frame_bytes));
    if encoded.is_err() {
        return Verdict::Skipped("cannot encode the probe".into());
    }
    let _ = t.set_read_timeout(Some(timeout));
    if let Err(e) = t.write_all(&frame_bytes) {
        return Verdict::Refused(format!("connected, then {e}"));
    }
    let mut reader = frame::FrameReader::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let n = match t.read(&mut buf) {
            Ok(0) => return Verdict::Refused("connected, then closed by the client".into()),
            Ok(n) => n,
            Err(_) => return Verdict::Refused("connected, but amandad did not answer".into()),
        };
        let mut input = &buf[..n];
        while let Ok(Some(f)) = reader.next(&mut input) {
            if let Ok(p) = proto::tcp::Packet::parse(&f.payload) {
                match p.ptype {
                    PacketType::Rep => {
                        let _ = t.write_all(&[0, 0, 0, 2, 0, 0, 0, 1, 3, 0]);
                        return Verdict::Open("amandad answered".into());
                    }
                    PacketType::Nak => {
                        let text = String::from_utf8_lossy(&p.body).trim().to_string();
                        return Verdict::Open(format!("reached amandad, which refused: {text}"));
                    }
                    _ => {}
                }
            }
        }
    }
    Verdict::Refused("connected, but amandad did not answer in time".into())
}

/// A connection attempt to a data port: a reset or an accept both mean the path is open.
fn probe_tcp_reach(sport: u16, dest: SocketAddr, timeout: Duration) -> Verdict {
    let s = match tcp_from(sport, dest) {
        Ok(s) => s,
        Err(v) => return v,
    };
    match s.connect_timeout(&dest.into(), timeout) {
        Ok(()) => Verdict::Open("connected".into()),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Verdict::Open(
            "the client answered with a reset (amandad listens there only during a dump)".into(),
        ),
        Err(e) => tcp_connect_verdict(&e),
    }
}

/// Renders the results of one client; returns the number of hops that failed.
pub fn render(target: &Target<'_>, results: &[HopResult], out: &mut String) -> usize {
    let mut failed = 0;
    let _ = writeln!(out, " {} ({}):", target.name, target.addr);
    for r in results {
        let ran: Vec<&(u16, Verdict)> = r
            .probes
            .iter()
            .filter(|(_, v)| !matches!(v, Verdict::Skipped(_)))
            .collect();
        if r.ok() {
            let note = ran
                .iter()
                .find_map(|(_, v)| match v {
                    Verdict::Open(n) => Some(n.as_str()),
                    _ => None,
                })
                .unwrap_or("");
            let _ = writeln!(
                out,
                "  OK      {}: open from {} source port(s): {note} ({})",
                r.hop,
                ran.len(),
                r.what
            );
            continue;
        }
        failed += 1;
        let dropped: Vec<u16> = ran
            .iter()
            .filter(|(_, v)| *v == Verdict::Dropped)
            .map(|(p, _)| *p)
            .collect();
        let refused: Vec<(u16, &str)> = ran
            .iter()
            .filter_map(|(p, v)| match v {
                Verdict::Refused(t) => Some((*p, t.as_str())),
                _ => None,
            })
            .collect();
        if !dropped.is_empty() {
            let _ = writeln!(
                out,
                "  ERROR   {}: no answer (dropped) from source port(s) {} ({})",
                r.hop,
                port_list(&dropped),
                r.what
            );
        }
        for (p, why) in &refused {
            let _ = writeln!(
                out,
                "  ERROR   {}: refused from source port {p}: {why} ({})",
                r.hop, r.what
            );
        }
        if ran.is_empty() {
            let why = r
                .probes
                .iter()
                .find_map(|(_, v)| match v {
                    Verdict::Skipped(t) => Some(t.as_str()),
                    _ => None,
                })
                .unwrap_or("no usable source port");
            let _ = writeln!(out, "  ERROR   {}: not probed: {why} ({})", r.hop, r.what);
        }
        if !dropped.is_empty() || !refused.is_empty() {
            let _ = writeln!(
                out,
                "          a firewall on the client, on the server or between them blocks this hop; the rules it needs:"
            );
            for line in &r.client_rule {
                let _ = writeln!(
                    out,
                    "            client: {line}    (portpool rules {} --side {})",
                    target.config, target.name
                );
            }
            for line in &r.server_rule {
                let _ = writeln!(
                    out,
                    "            server: {line}    (portpool rules {} --side server)",
                    target.config
                );
            }
        }
    }
    failed
}

/// `850-852, 854`.
fn port_list(ports: &[u16]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_collapse_runs() {
        assert_eq!(port_list(&[852, 850, 851, 854, 900]), "850-852, 854, 900");
    }

    #[test]
    fn samples_spread_over_the_range_and_skip_foreign_services() {
        let services = Services::parse("s", "domain-s 853/udp\n").unwrap();
        let r = PortRange::new(850, 859).unwrap();
        let all = sample_ports(r, Transport::Udp, &services, 32);
        assert_eq!(all, vec![850, 851, 852, 854, 855, 856, 857, 858, 859]);
        let few = sample_ports(
            PortRange::new(512, 1023).unwrap(),
            Transport::Tcp,
            &Services::empty(),
            5,
        );
        assert_eq!(few.first(), Some(&512));
        assert_eq!(few.last(), Some(&1023));
        assert_eq!(few.len(), 5);
    }

    #[test]
    fn a_silent_udp_port_is_dropped_and_a_closed_one_refused() {
        // Nothing listens on this loopback port: the kernel answers with ICMP unreachable.
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = closed.local_addr().unwrap();
        drop(closed);
        let v = probe_udp(0, dest, "backup", Duration::from_millis(400));
        assert!(
            matches!(v, Verdict::Refused(ref t) if t.contains("ICMP port unreachable")),
            "{v:?}"
        );
        // A socket that reads and never answers: silence.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let v = probe_udp(
            0,
            silent.local_addr().unwrap(),
            "backup",
            Duration::from_millis(300),
        );
        assert_eq!(v, Verdict::Dropped);
    }

    #[test]
    fn a_reset_on_a_data_port_means_the_path_is_open() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = l.local_addr().unwrap();
        drop(l);
        let v = probe_tcp_reach(0, dest, Duration::from_millis(500));
        assert!(
            matches!(v, Verdict::Open(ref t) if t.contains("reset")),
            "{v:?}"
        );
    }
}
