//! The network shells: ports leased from `portpool`, the UDP and framed-TCP control
//! transports, and the blocking driver of one REQ/ACK/REP/ACK exchange
//! ([`exchange::run`]) around `proto`'s sans-IO [`proto::exchange::Initiator`].
//!
//! Ports are a scheduled resource (the `Ports` struct): one [`portpool::Pool`] per
//! (protocol, range), shared by every worker of the run:
//!
//! | pool | range | used for | held |
//! |---|---|---|---|
//! | reserved UDP | `reserved-udp-port` | bsd/bsdudp control datagrams | one exchange |
//! | reserved TCP | `reserved-tcp-port` | the bsdtcp connection (control and streams) | the whole dump; source ports still in TIME_WAIT towards the client are avoided |
//! | data TCP | `unreserved-tcp-port` | bsd/bsdudp data connections | the whole dump |
//!
//! When a pool is empty the caller waits its turn (FIFO) instead of failing; the wait and
//! portpool's reason (`no ports: 9 usable in udp 850-859; 9 leased, 11 waiting`) are
//! reported through a [`WaitSink`]. What this module must not do: parse protocol bodies
//! (that is `proto`) or know about dumps.

pub mod exchange;
pub mod tcp;
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

/// TCP keepalive and buffer settings for every connection the dumper makes.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Keepalive (`None`: off).
    pub keepalive: Option<(Duration, Duration, u32)>,
}

impl Tuning {
    /// From amanda-rs's `heartbeat` settings.
    pub fn from_settings(s: &Settings) -> Tuning {
        let h = &s.heartbeat;
        Tuning {
            keepalive: h.enabled.then(|| (h.idle(), h.interval(), h.probes)),
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
#[derive(Debug, thiserror::Error)]
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
        source: Box<LeaseError>,
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
        /// The source port.
        port: u16,
        /// The pool.
        pool: String,
        /// Why.
        source: std::io::Error,
    },
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
    for _ in 0..64 {
        let lease = lease(pool, Some(dest), sink).map_err(|source| ConnectFailure::Lease {
            what: what.to_owned(),
            dest,
            pool: name.clone(),
            source: Box::new(source),
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
            Err(ConnectError::Connect { source, .. }) => {
                return Err(ConnectFailure::Connect {
                    what: what.to_owned(),
                    dest,
                    port,
                    pool: name,
                    source,
                });
            }
            Err(other) => {
                return Err(ConnectFailure::Connect {
                    what: what.to_owned(),
                    dest,
                    port,
                    pool: name,
                    source: std::io::Error::other(other.to_string()),
                });
            }
        }
    }
    Err(ConnectFailure::Connect {
        what: what.to_owned(),
        dest,
        port: 0,
        pool: name,
        source: std::io::Error::other("every source port tried is still in TIME_WAIT"),
    })
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

/// Resolves a client host name to an IPv4 address (Amanda 3.5.1 on Debian is built
/// `--without-ipv6`), preferring what the name resolves to first.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))
}
