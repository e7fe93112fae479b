//! The network shells: ports leased from `portpool`, the UDP and framed-TCP control
//! transports, and the blocking driver of one REQ/ACK/REP/ACK exchange
//! ([`exchange::run`]) around `proto`'s sans-IO [`proto::exchange::Initiator`].
//!
//! Ports are a scheduled resource (the `Ports` struct): one [`portpool_alloc::Pool`] per
//! (protocol, range), shared by every worker of the run:
//!
//! | pool | range | used for | held |
//! |---|---|---|---|
//! | reserved UDP | `reserved-udp-port` | bsd/bsdudp control datagrams | one exchange |
//! | reserved TCP | `reserved-tcp-port` | the bsdtcp connection (control and streams) | the whole dump; source ports still in TIME_WAIT towards the client are avoided |
//! | data TCP | `unreserved-tcp-port` | bsd/bsdudp data connections, the ssl connection (control and streams) | the whole dump |
//!
//! When a pool is empty the caller waits its turn (FIFO) instead of failing; the wait and
//! portpool's reason (`no ports: 9 usable in udp 850-859; 9 leased, 11 waiting`) are
//! reported through a [`WaitSink`]. What this module must not do: parse protocol bodies
//! (that is `proto`) or know about dumps.

pub mod control;
pub mod exchange;
pub mod held;
pub mod proxy;
pub mod rendezvous;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conf::Settings;
use portpool_alloc::{ConnectError, Lease, LeaseError, Pool, PoolConfig, PoolError};
use proto::ports::{PortRange, Transport};
use socket2::{SockRef, Socket, TcpKeepalive};

/// How long a request waits for a port before giving up: in practice never (a run ends
/// long before), so that no dump fails for lack of a port.
pub const PORT_WAIT_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Amanda's bsdtcp connect timeout (`CONNECT_TIMEOUT`, 20 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A port wait, as workers report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    /// No port was free: the request queued. `reason` is portpool's shortage text.
    Waiting {
        /// The pool, e.g. `udp 850-859`.
        pool: String,
        /// Why (portpool's `Shortage`).
        reason: String,
    },
    /// The port came after `waited`.
    Granted {
        /// The pool.
        pool: String,
        /// How long the request waited.
        waited: Duration,
    },
}

/// Where waits are reported.
pub type WaitSink<'a> = &'a mut dyn FnMut(WaitEvent);

/// How the dumper makes its TCP connections: keepalive, and the HTTP proxy the bsdtcp and
/// ssl ones go through (issue 14).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Keepalive (`None`: off).
    pub keepalive: Option<(Duration, Duration, u32)>,
    /// How long an ssl connection's TLS handshake may take (setting
    /// `dumper.ssl_handshake_secs`).
    pub ssl_handshake: Duration,
    /// Which clients are reached through which proxy ([`proxy::connect`]).
    pub proxy: Arc<conf::proxy::ProxyPolicy>,
    /// The heartbeat asked for on connections through a proxy (setting
    /// `dumper.proxy_heartbeat_secs`; `None`: off; issue 14).
    pub proxy_heartbeat: Option<Duration>,
}

impl Tuning {
    /// From amanda-rs's `heartbeat` and `proxy` settings (and the proxy environment they
    /// were loaded with; loading already refused a bad one).
    pub fn from_settings(s: &Settings) -> Tuning {
        let h = &s.heartbeat;
        let proxy = s.proxy.policy().unwrap_or_else(|e| {
            log::error!("{e}; connecting directly");
            conf::proxy::ProxyPolicy::direct()
        });
        Tuning {
            keepalive: h.enabled.then(|| (h.idle(), h.interval(), h.probes)),
            ssl_handshake: s.dumper.ssl_handshake(),
            proxy: Arc::new(proxy),
            proxy_heartbeat: s.dumper.proxy_heartbeat(),
        }
    }

    /// Applies keepalive to a TCP socket (errors are ignored: keepalive is a safety net).
    pub fn apply(&self, s: SockRef<'_>) {
        if let Some((idle, interval, probes)) = self.keepalive {
            let ka = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(interval)
                .with_retries(probes);
            let _ = s.set_tcp_keepalive(&ka);
        }
        let _ = s.set_tcp_nodelay(true);
    }
}

/// The port pools of a run.
#[derive(Clone, Default)]
pub struct Ports {
    /// `reserved-udp-port`: bsd/bsdudp control.
    pub udp: Option<Arc<Pool>>,
    /// `reserved-tcp-port`: bsdtcp connections.
    pub tcp_reserved: Option<Arc<Pool>>,
    /// `unreserved-tcp-port`: bsd/bsdudp data connections.
    pub tcp_data: Option<Arc<Pool>>,
}

/// Which pools a run needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolNeeds {
    /// Some DLE uses bsd or bsdudp.
    pub udp: bool,
    /// Some DLE uses bsdtcp.
    pub tcp: bool,
    /// Some DLE uses ssl (its connection comes from `unreserved-tcp-port`).
    pub ssl: bool,
}

impl Ports {
    /// Builds the pools the run needs from amanda.conf's port settings and amanda-rs's
    /// `run_dir` (the host-wide lease registry is `<run_dir>/ports`) and TIME_WAIT hold.
    pub fn new(
        config: &conf::Config,
        settings: &Settings,
        needs: PoolNeeds,
    ) -> Result<Ports, PoolError> {
        let make = |proto: Transport, r: PortRange| -> Result<Arc<Pool>, PoolError> {
            let mut c = PoolConfig::new(proto, r);
            c.run_dir = Some(settings.run_dir.join("ports"));
            c.time_wait = settings.time_wait_hold();
            Ok(Arc::new(Pool::new(c)?))
        };
        let mut p = Ports::default();
        if needs.udp {
            p.udp = Some(make(Transport::Udp, config.reserved_udp_port)?);
        }
        if needs.udp || needs.ssl {
            p.tcp_data = Some(make(Transport::Tcp, config.unreserved_tcp_port)?);
        }
        if needs.tcp {
            p.tcp_reserved = Some(make(Transport::Tcp, config.reserved_tcp_port)?);
        }
        Ok(p)
    }
}

/// `udp 850-859`.
pub fn pool_name(pool: &Pool) -> String {
    format!("{} {}", pool.proto(), pool.range())
}

/// A port from `pool` (for `dest` when it is a TCP source port), waiting for it when
/// none is free and reporting the wait to `sink`.
pub fn lease(
    pool: &Pool,
    dest: Option<SocketAddr>,
    sink: WaitSink<'_>,
) -> Result<Lease<Socket>, LeaseError> {
    let started = Instant::now();
    let first = match dest {
        Some(d) => pool.lease_for(d, started),
        None => pool.lease(started),
    };
    match first {
        Ok(l) => Ok(l),
        Err(LeaseError::Timeout { shortage, .. }) => {
            let name = pool_name(pool);
            sink(WaitEvent::Waiting {
                pool: name.clone(),
                reason: shortage.to_string(),
            });
            let deadline = Instant::now() + PORT_WAIT_LIMIT;
            let l = match dest {
                Some(d) => pool.lease_for(d, deadline),
                None => pool.lease(deadline),
            }?;
            sink(WaitEvent::Granted {
                pool: name,
                waited: started.elapsed(),
            });
            Ok(l)
        }
        Err(e) => Err(e),
    }
}

/// Why a TCP connection could not be made; `Display` names the peer, the pool and the
/// source port.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// No port could be leased (permission, registry, ...).
    #[error("{what} to {dest}: {pool} pool: {source}")]
    Lease {
        /// What was being connected (`bsdtcp connection`, `DATA stream`).
        what: String,
        /// The peer.
        dest: SocketAddr,
        /// The pool, e.g. `tcp 512-1023`.
        pool: String,
        /// portpool's error (says which privilege is missing).
        source: Arc<LeaseError>,
    },
    /// The connect itself failed.
    #[error(
        "{what} to {dest} from port {port} ({pool} pool): {source}{}",
        silent_hint(source)
    )]
    Connect {
        /// What was being connected.
        what: String,
        /// The peer.
        dest: SocketAddr,
        /// The source port (0: none was left to try).
        port: u16,
        /// The pool.
        pool: String,
        /// How long the connect could take ([`CONNECT_TIMEOUT`]).
        timeout: Duration,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// Through an HTTP proxy (issue 14): the proxy could not be reached, refused the
    /// tunnel or stayed silent.
    #[error(
        "{} to {dest} through HTTP proxy {} (from {}): {}",
        .via.what, .via.proxy, .via.origin, .via.error
    )]
    Proxy {
        /// The client.
        dest: SocketAddr,
        /// Our source port towards the proxy (0: no connection was made).
        port: u16,
        /// What was connected through which proxy, and what went wrong.
        via: Box<proxy::Via>,
    },
}

impl ConnectFailure {
    /// What the peer (or the path to it) did.
    pub fn event(&self) -> HopEvent {
        match self {
            ConnectFailure::Lease { .. } => HopEvent::NoPort,
            ConnectFailure::Connect { source, .. } => HopEvent::of_io(source),
            ConnectFailure::Proxy { via, .. } => via.error.event(),
        }
    }
}

/// What happened on a hop, in the words an admin looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopEvent {
    /// The peer's kernel said no (RST, ICMP unreachable): nothing listens, or a firewall
    /// rejects.
    Refused,
    /// Nothing came back at all: dropped on the way.
    NoAnswer,
    /// A connect or a read took longer than its timeout.
    Timeout,
    /// The connection was reset while in use.
    Reset,
    /// The peer closed the connection too early.
    Closed,
    /// No source port could be had (privileges, the host-wide registry).
    NoPort,
    /// Anything else (see the error's text).
    Other,
}

impl HopEvent {
    /// The event an I/O error stands for.
    pub fn of_io(e: &std::io::Error) -> HopEvent {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable => HopEvent::Refused,
            K::TimedOut | K::WouldBlock => HopEvent::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => HopEvent::Reset,
            K::UnexpectedEof => HopEvent::Closed,
            _ => HopEvent::Other,
        }
    }
}

/// What a connect that timed out most likely means, for the admin.
fn silent_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::TimedOut {
        " (no answer: dropped on the way? `dumper check --ports` tests every hop)"
    } else {
        ""
    }
}

/// Connects to `dest` from a port of `pool` (waiting for one if needed), with keepalive on.
/// A source port whose 4-tuple is still in TIME_WAIT (EADDRNOTAVAIL) is held back from
/// `dest` and the next one is tried.
pub fn connect(
    pool: &Pool,
    dest: SocketAddr,
    what: &str,
    tuning: &Tuning,
    sink: WaitSink<'_>,
) -> Result<Lease<TcpStream>, ConnectFailure> {
    let name = pool_name(pool);
    let failed = |port, source| ConnectFailure::Connect {
        what: what.to_owned(),
        dest,
        port,
        pool: name.clone(),
        timeout: CONNECT_TIMEOUT,
        source: Arc::new(source),
    };
    for _ in 0..64 {
        let lease = lease(pool, Some(dest), sink).map_err(|source| ConnectFailure::Lease {
            what: what.to_owned(),
            dest,
            pool: name.clone(),
            source: Arc::new(source),
        })?;
        tuning.apply(SockRef::from(lease.socket()));
        let port = lease.port();
        match lease.connect(CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(ConnectError::Connect { source, .. })
                if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
            {
                log::debug!("{name} port {port} → {dest}: still in TIME_WAIT; next port");
            }
            Err(ConnectError::Connect { source, .. }) => return Err(failed(port, source)),
            Err(other) => {
                return Err(failed(port, std::io::Error::other(other.to_string())));
            }
        }
    }
    Err(failed(
        0,
        std::io::Error::other("every source port tried is still in TIME_WAIT"),
    ))
}

pub use ssl::layer::only_waited;

/// A control hop, as an unanswered request names it:
/// `server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// UDP (bsd, bsdudp) or TCP (bsdtcp).
    pub transport: proto::ports::Transport,
    /// Our address towards the client, if known.
    pub local: Option<std::net::IpAddr>,
    /// Our source port, if known.
    pub source_port: Option<u16>,
    /// The client's address and port.
    pub peer: SocketAddr,
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use proto::ports::Transport as T;
        let t = self.transport.as_str();
        match self.transport {
            T::Udp => {
                let ip = self.local.map_or_else(|| "?".to_owned(), |a| a.to_string());
                let port = self
                    .source_port
                    .map_or_else(|| "?".to_owned(), |p| p.to_string());
                write!(f, "server {ip}:{port}/{t} -> client {}/{t}", self.peer)
            }
            T::Tcp => match (self.local, self.source_port) {
                (Some(ip), Some(port)) => write!(
                    f,
                    "server {}/{t} -> client {}/{t}",
                    SocketAddr::new(ip, port),
                    self.peer
                ),
                _ => write!(f, "server ?/{t} -> client {}/{t}", self.peer),
            },
        }
    }
}

/// The address this host uses to reach `peer` (what the routing table picks), for messages
/// and for rules: connecting a UDP socket sends nothing.
pub fn local_address_towards(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// A client host name that gives no address.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver failed.
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The name.
        host: String,
        /// The resolver's error.
        source: Arc<std::io::Error>,
    },
    /// The name resolves, to nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
}

/// Resolves a client host name to an IPv4 address (Amanda 3.5.1 on Debian is built
/// `--without-ipv6`), preferring what the name resolves to first.
/// [`resolve`], except for a `dialin yes` host of `link`, which is never looked up (it
/// may have no name the server can resolve): its address is learnt from the connection it
/// opens, and this placeholder (0.0.0.0) is never connected to.
pub fn resolve_for(
    link: &control::Link,
    host: &str,
    port: u16,
) -> Result<SocketAddr, ResolveError> {
    if control::dials_in(link, host) {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    resolve(host, port)
}

pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ResolveError::Lookup {
            host: host.to_owned(),
            source: Arc::new(e),
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ResolveError::NoAddress {
            host: host.to_owned(),
        })
}
