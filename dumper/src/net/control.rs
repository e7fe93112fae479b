//! The control transport of one client, as the requests of a dump, an estimate group or a
//! check use it: opened on the first exchange from the pool its auth needs (a reserved UDP
//! port for bsd/bsdudp, one bsdtcp connection from a reserved TCP port, one ssl connection
//! from an unreserved TCP port with TLS and Amanda's certificate checks), kept for the
//! next request (bsdtcp: handles 1, 2, ...; UDP: a new handle and sequence), and closed as
//! the real server closes it.
//!
//! A `dialin yes` host (issue 14) is never connected to: its bsdtcp or ssl connection is one
//! the client opened to our listener, obtained through the rendezvous ([`Dialin`]), and then
//! used exactly like one we opened (for ssl we are its TLS client, and its certificate must
//! name the host).
//!
//! Through an HTTP proxy, the noop that opens a transport asks the client for the session
//! heartbeat ([`proto::heartbeat`], issue 14); the connection sends and drops heartbeats
//! only once the client granted it, so the real amandad never gets one.
//!
//! What this module must not do: build or read request bodies (see `request`, `proto`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::Auth;
use proto::exchange::InitiatorConfig;
use proto::features::Features;

use super::exchange::{self, Exchanged, OpenError, RequestFailure};
use super::tcp::FramedConn;
use super::udp::UdpControl;
use super::{Ports, Tuning, WaitEvent};

/// What every request of a run shares: who we are to the clients, from which ports, and
/// how a request is retried.
#[derive(Clone)]
pub struct Link {
    /// Our features.
    pub ours: Features,
    /// The configuration name (`config=`).
    pub config_name: String,
    /// `SECURITY USER`: the configured `dumpuser`.
    pub user: String,
    /// The port pools.
    pub ports: Ports,
    /// Keepalive etc.
    pub tuning: Tuning,
    /// `connect-tries`, `req-tries`.
    pub initiator: InitiatorConfig,
    /// The `dialin yes` hosts and how to reach them (none: every host is connected to).
    pub dialin: Option<Arc<Dialin>>,
}

/// How the dial-in hosts of a run are reached (issue 14).
#[derive(Debug)]
pub struct Dialin {
    /// The `dialin yes` hosts, lowercase.
    pub hosts: std::collections::HashSet<String>,
    /// `<run_dir>/dialin`.
    pub rendezvous: super::rendezvous::Rendezvous,
    /// How long to wait for the client's HOLD (`dumper.dialin_wait_secs`).
    pub wait: Duration,
    /// The sessions' heartbeat (`dumper.dialin_session_heartbeat_secs`; `None`: off).
    pub heartbeat: Option<Duration>,
}

impl Dialin {
    /// The dial-in hosts of `dles` (`(host, dialin)` pairs), or none when there are none.
    pub fn of<'a>(
        dles: impl IntoIterator<Item = (&'a str, bool)>,
        settings: &conf::Settings,
    ) -> Option<Arc<Dialin>> {
        let hosts: std::collections::HashSet<String> = dles
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(h, _)| h.to_ascii_lowercase())
            .collect();
        (!hosts.is_empty()).then(|| {
            Arc::new(Dialin {
                hosts,
                rendezvous: super::rendezvous::Rendezvous::new(&settings.run_dir),
                wait: settings.dumper.dialin_wait(),
                heartbeat: settings.dumper.dialin_session_heartbeat(),
            })
        })
    }

    /// Whether `host` dials in.
    pub fn serves(&self, host: &str) -> bool {
        self.hosts.contains(&host.to_ascii_lowercase())
    }

    /// A connection from `host`, through the rendezvous; for auth ssl (`ssl`: the
    /// dumptype's settings) we then are its TLS client and check that its certificate
    /// names `host`.
    pub fn open(
        &self,
        host: &str,
        user: &str,
        tuning: &Tuning,
        ssl: Option<&conf::SslSettings>,
    ) -> Result<FramedConn, OpenError> {
        let mut stream = super::rendezvous::obtain(&self.rendezvous, host, self.wait)
            .map_err(|e| OpenError::Dialin(Arc::new(e)))?;
        tuning.apply(socket2::SockRef::from(&stream));
        let peer = stream
            .peer_addr()
            .map_err(|e| OpenError::Initiator(format!("{host}: dial-in connection: {e}")))?;
        let layer = match ssl {
            Some(s) => Some(
                super::tls::over_dialin(&mut stream, host, s, tuning)
                    .map_err(|error| OpenError::Ssl { dest: peer, error })?,
            ),
            None => None,
        };
        let conn = FramedConn::new(super::held::Held::Accepted(stream), peer, user)
            .with_heartbeat(self.heartbeat);
        Ok(match layer {
            Some(l) => conn.with_tls(l),
            None => conn,
        })
    }
}

/// Whether `host` is a dial-in host of `link`.
pub fn dials_in(link: &Link, host: &str) -> bool {
    link.dialin.as_ref().is_some_and(|d| d.serves(host))
}

/// One exchange with a dial-in host (issue 14), over a session through the rendezvous.
fn dialin_exchange(
    link: &Link,
    host: &str,
    ssl: Option<&Arc<conf::SslSettings>>,
    cfg: InitiatorConfig,
    req: Vec<u8>,
    conn: &mut Option<FramedConn>,
) -> Exchanged {
    let Some(d) = link.dialin.as_ref() else {
        return Exchanged {
            outcome: Err(RequestFailure::NoPool("dialin")),
            resent: 0,
        };
    };
    // Waited for once: a client that did not come within dialin_wait_secs is not waited
    // for again by connect-tries.
    let mut gave_up: Option<OpenError> = None;
    exchange::run(cfg, req, conn, || {
        if let Some(e) = &gave_up {
            return Err(e.clone());
        }
        d.open(host, &link.user, &link.tuning, ssl.map(|s| &**s))
            .inspect_err(|e| {
                gave_up = Some(e.clone());
            })
    })
}

/// How long we wait for the client to close its control handle after an exchange.
const CLOSE_HANDLE_WAIT: Duration = Duration::from_secs(5);

/// The control transport towards one client (see the module docs).
pub enum Control {
    /// bsdtcp: one connection for every request (and, for a sendbackup, its streams), to
    /// `host` (the disklist name, which `no_proxy` may name; empty when unknown).
    Tcp {
        conn: Option<FramedConn>,
        host: String,
    },
    /// ssl: the same inside TLS, to `host` (the disklist name, which names the fingerprint
    /// file), with the dumptype's ssl settings.
    Ssl {
        conn: Option<FramedConn>,
        host: String,
        settings: Arc<conf::SslSettings>,
    },
    /// bsd, bsdudp: one reserved UDP port for every request.
    Udp(Option<UdpControl>),
}

impl Control {
    /// Not yet open, on the transport `auth` uses, to `host`.
    pub fn for_auth(auth: Auth, host: &str) -> Control {
        if auth.is_udp() {
            Control::Udp(None)
        } else {
            Control::Tcp {
                conn: None,
                host: host.to_string(),
            }
        }
    }

    /// The transport of a DLE: [`Control::for_auth`], inside TLS for auth ssl (`settings`
    /// are the dumptype's, `host` the disklist's name).
    pub fn for_dle(auth: Auth, host: &str, settings: Option<&Arc<conf::SslSettings>>) -> Control {
        match (auth, settings) {
            (Auth::Ssl, Some(s)) => Control::Ssl {
                conn: None,
                host: host.to_string(),
                settings: s.clone(),
            },
            _ => Control::for_auth(auth, host),
        }
    }

    /// Whether an exchange opened it.
    pub fn is_open(&self) -> bool {
        match self {
            Control::Tcp { conn: c, .. } | Control::Ssl { conn: c, .. } => c.is_some(),
            Control::Udp(c) => c.is_some(),
        }
    }

    /// Runs one exchange with `dest` (opening the transport the first time), with the
    /// REP wait and tries of `cfg`.
    pub fn exchange(
        &mut self,
        link: &Link,
        dest: SocketAddr,
        cfg: InitiatorConfig,
        req: Vec<u8>,
        waits: &mut dyn FnMut(WaitEvent),
    ) -> Exchanged {
        let no_pool = |name| Exchanged {
            outcome: Err(RequestFailure::NoPool(name)),
            resent: 0,
        };
        match self {
            Control::Ssl {
                conn,
                host,
                settings,
            } if dials_in(link, host) => {
                dialin_exchange(link, host, Some(settings), cfg, req, conn)
            }
            Control::Ssl {
                conn,
                host,
                settings,
            } => {
                if link.ports.tcp_data.is_none() {
                    return no_pool("unreserved-tcp-port");
                }
                exchange::run(cfg, req, conn, || {
                    super::tls::connect(
                        &link.ports,
                        dest,
                        host,
                        settings,
                        &link.user,
                        &link.tuning,
                        waits,
                    )
                })
            }
            Control::Tcp { conn, host } if dials_in(link, host) => {
                dialin_exchange(link, host, None, cfg, req, conn)
            }
            Control::Tcp { conn, host } => {
                let Some(pool) = link.ports.tcp_reserved.as_deref() else {
                    return no_pool("reserved-tcp-port");
                };
                let mut ex = exchange::run(cfg, req, conn, || {
                    let what = "bsdtcp connection";
                    super::proxy::connect(pool, dest, host, what, &link.tuning, waits)
                        .map(|l| FramedConn::new(l, dest, &link.user))
                        .map_err(OpenError::from)
                });
                // issue 14: through a proxy amandad sees the proxy's source port.
                if let Err(RequestFailure::Nak(body)) = &mut ex.outcome
                    && let Some((url, _)) = link.tuning.proxy.route(host, Some(dest.ip()))
                    && memchr::memmem::find(body, b" not secure").is_some()
                {
                    let end = body.trim_ascii_end().len();
                    let hint = super::proxy::not_secure_hint(&url.to_string());
                    body.splice(end..end, hint.into_bytes());
                }
                ex
            }
            Control::Udp(c) => {
                let Some(pool) = link.ports.udp.as_deref() else {
                    return no_pool("reserved-udp-port");
                };
                exchange::run(cfg, req, c, || {
                    super::lease(pool, None, waits)
                        .map(|l| UdpControl::new(l, dest, &link.user))
                        .map_err(|e| OpenError::Lease {
                            dest,
                            pool: super::pool_name(pool),
                            source: Arc::new(e),
                        })
                })
            }
        }
    }

    /// The `noop` that opens a transport (estimates, checks, and a sendbackup through a
    /// proxy). Through an HTTP proxy it asks for the session heartbeat
    /// ([`proto::heartbeat`], issue 14) and turns it on when the client's amandad grants it
    /// (ours does; the real one answers as always and never gets a heartbeat).
    pub fn noop(
        &mut self,
        link: &Link,
        dest: SocketAddr,
        cfg: InitiatorConfig,
        waits: &mut dyn FnMut(WaitEvent),
    ) -> Exchanged {
        let ask = self.proxy_heartbeat(link, dest);
        let req = match ask {
            Some(every) => proto::heartbeat::noop_request_asking(&link.ours, every),
            None => crate::request::noop(&link.ours),
        };
        let ex = self.exchange(link, dest, cfg, req, waits);
        let (Some(asked), Ok(body)) = (ask, &ex.outcome) else {
            return ex;
        };
        match proto::heartbeat::granted(body) {
            Some(every) => {
                if let Control::Tcp { conn: Some(c), .. } | Control::Ssl { conn: Some(c), .. } =
                    self
                {
                    log::debug!(
                        "{dest}: session heartbeat every {} s through the proxy (asked {} s)",
                        every.as_secs(),
                        asked.as_secs()
                    );
                    c.set_heartbeat(Some(every));
                }
            }
            // The real amandad: it never gets a heartbeat.
            None => log::debug!(
                "{dest}: no session heartbeat through the proxy (asked {} s; the client's noop did not grant it)",
                asked.as_secs()
            ),
        }
        ex
    }

    /// The heartbeat [`Control::noop`] asks for: on a TCP transport we open through an
    /// HTTP proxy, when `dumper.proxy_heartbeat_secs` is not 0 (a dial-in host's sessions
    /// have their own).
    pub fn proxy_heartbeat(&self, link: &Link, dest: SocketAddr) -> Option<std::time::Duration> {
        let every = link.tuning.proxy_heartbeat?;
        let host = match self {
            Control::Ssl { host, .. } => host,
            Control::Tcp { host, .. } if !dials_in(link, host) => host,
            _ => return None,
        };
        link.tuning
            .proxy
            .route(host, Some(dest.ip()))
            .map(|_| every)
    }

    /// Prepares the next request on the same transport: on bsdtcp the client's close of
    /// the last handle is awaited and answered, and the next handle taken; on UDP a new
    /// handle and sequence.
    pub fn next_request(&mut self) {
        match self {
            Control::Tcp { conn: Some(c), .. } | Control::Ssl { conn: Some(c), .. } => {
                let _ = c.close_handle(Instant::now() + CLOSE_HANDLE_WAIT);
                c.next_exchange();
            }
            Control::Udp(Some(c)) => c.new_exchange(),
            _ => {}
        }
    }

    /// After the last request: closes the bsdtcp handle as the real server does.
    pub fn finish(&mut self) {
        if let Control::Tcp { conn: Some(c), .. } | Control::Ssl { conn: Some(c), .. } = self {
            let _ = c.close_handle(Instant::now() + CLOSE_HANDLE_WAIT);
        }
    }

    /// The bsdtcp connection, for the streams of a sendbackup; a UDP port goes back to
    /// its pool here.
    pub fn into_tcp(self) -> Option<FramedConn> {
        match self {
            Control::Tcp { conn: c, .. } | Control::Ssl { conn: c, .. } => c,
            Control::Udp(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(proxy_url: &str, heartbeat_secs: u64) -> Link {
        let mut s = conf::Settings::default();
        s.proxy.url = proxy_url.into();
        s.proxy.no_proxy = "direct.example".into();
        s.dumper.proxy_heartbeat_secs = heartbeat_secs;
        Link {
            ours: crate::features::server_features(),
            config_name: "c".into(),
            user: "backup".into(),
            ports: super::super::Ports::default(),
            tuning: Tuning::from_settings(&s),
            initiator: InitiatorConfig::default(),
            dialin: None,
        }
    }

    // issue 14: the noop asks for the heartbeat only on a TCP transport that goes through a
    // proxy, and only while the setting is on; a real amandad reached directly never sees
    // the option.
    #[test]
    fn the_heartbeat_is_asked_for_only_through_a_proxy_and_only_when_on() {
        let dest: SocketAddr = "192.0.2.7:10080".parse().unwrap();
        let ssl = Arc::new(conf::SslSettings::default());
        let ten = Some(Duration::from_secs(10));
        let via = link("http://192.0.2.1:3128", 10);
        let c = Control::for_dle(Auth::Ssl, "client.example", Some(&ssl));
        assert_eq!(c.proxy_heartbeat(&via, dest), ten);
        let c = Control::for_dle(Auth::Bsdtcp, "client.example", None);
        assert_eq!(c.proxy_heartbeat(&via, dest), ten);
        // Exempt from the proxy, or UDP, or the setting at 0: no ask.
        let c = Control::for_dle(Auth::Ssl, "direct.example", Some(&ssl));
        assert_eq!(c.proxy_heartbeat(&via, dest), None);
        let c = Control::for_dle(Auth::Bsdudp, "client.example", None);
        assert_eq!(c.proxy_heartbeat(&via, dest), None);
        let off = link("http://192.0.2.1:3128", 0);
        let c = Control::for_dle(Auth::Ssl, "client.example", Some(&ssl));
        assert_eq!(c.proxy_heartbeat(&off, dest), None);
        let direct = link("direct", 10);
        assert_eq!(c.proxy_heartbeat(&direct, dest), None);
    }
}
