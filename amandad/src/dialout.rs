//! `amandad --dial-out` (issue 14): the I/O shell around [`proto::dialin::HoldClient`].
//!
//! One thread keeps the HOLD connection to the server's `dumper listen` (blocking socket
//! with read timeouts taken from the machine's deadline: it sleeps when there is nothing to
//! do, never spins). On `OPEN <token>` a short-lived thread opens the session connection,
//! writes its preamble and hands the socket to the event loop ([`Dialed`]), which serves it
//! like a connection the server made.
//!
//! auth ssl (`amandad.dial_out.auth = "ssl"`): the held connection is inside TLS with this
//! host as its client; a session's preamble goes in clear, then the loop is its TLS server
//! as for a connection it accepted (the server's dumper is the TLS client).
//!
//! Both kinds of connection go through an HTTP CONNECT proxy when amanda-rs's `[proxy]`
//! settings or `https_proxy`/`no_proxy` apply to the server (the same policy dumper
//! follows); a refusal, garbage or silence from the proxy is a failed dial, logged with
//! the proxy's words and retried with the usual backoff. A session that cannot be opened
//! is also reported on the HOLD connection (`FAILED <token> <why>`), so the server's
//! worker names the refusal instead of waiting out the token.
//!
//! What this module must not do: decide anything about the protocol (that is `HoldClient`),
//! or serve requests itself (the loop does, with all its bounds).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use conf::proxy::ProxyPolicy;
use log::{debug, info, warn};
use proto::dialin::{self, HoldAction, HoldClient, HoldConfig, HoldRequest, Token};
use proto::frame::FrameReader;

use crate::server::{Dialed, Keepalive};

/// Amanda's bsdtcp connect timeout, for both kinds of connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Session connections being opened at once; an OPEN beyond it is dropped (the dumper's
/// wait for it runs out and it asks again).
const MAX_OPENING: usize = 16;

/// What the dial-out thread needs.
#[derive(Clone, Debug)]
pub struct DialOut {
    /// The listener.
    pub host: String,
    pub port: u16,
    /// `SECURITY USER`.
    pub user: String,
    /// What the HOLD asks for.
    pub request: HoldRequest,
    pub hold: HoldConfig,
    pub keepalive: Option<Keepalive>,
    /// Whether the listener is reached through an HTTP proxy (`[proxy]`, `https_proxy`).
    pub proxy: Arc<ProxyPolicy>,
    /// auth ssl (`amandad.dial_out.auth`): amanda-client.conf's `ssl-*` settings; the held
    /// connection is then inside TLS, this host its client.
    pub ssl: Option<Arc<conf::SslSettings>>,
    /// The server's name (`amandad.dial_out.server_name`): the CN its certificate has.
    pub server_name: String,
}

impl DialOut {
    /// From the settings' `[amandad.dial_out]`; the error names the missing setting.
    pub fn from_settings(
        settings: &conf::Settings,
        user: &str,
        features_hex: String,
        keepalive: Option<Keepalive>,
    ) -> Result<DialOut, String> {
        let d = &settings.amandad.dial_out;
        let (host, port) = d.server_host_port()?;
        if d.config.is_empty() {
            return Err(
                "amandad.dial_out.config is not set (the server's configuration name)".into(),
            );
        }
        let hostname = if d.hostname.is_empty() {
            nix::unistd::gethostname()
                .map_err(|e| format!("this host's name: {e}"))?
                .to_string_lossy()
                .into_owned()
        } else {
            d.hostname.clone()
        };
        if !dialin::is_safe_host_name(&hostname) {
            return Err(format!(
                "amandad.dial_out.hostname {hostname:?} is not a host name"
            ));
        }
        Ok(DialOut {
            host,
            port,
            user: user.to_string(),
            request: HoldRequest {
                features: features_hex,
                hostname,
                config: d.config.clone(),
            },
            hold: HoldConfig {
                backoff_min: Duration::from_secs(d.backoff_min_secs),
                backoff_max: Duration::from_secs(d.backoff_max_secs),
                ..HoldConfig::default()
            },
            keepalive,
            proxy: Arc::new(settings.proxy.policy().map_err(|e| e.to_string())?),
            ssl: None,
            server_name: d.server_name(),
        })
    }

    /// auth ssl with amanda-client.conf's `ssl-*` settings (`client`) when
    /// `amandad.dial_out.auth` says ssl; the error is our own certificate's problem.
    pub fn with_ssl(
        mut self,
        settings: &conf::Settings,
        client: &conf::SslSettings,
    ) -> Result<DialOut, String> {
        if settings.amandad.dial_out.ssl() == Some(true) {
            // Loaded now, so a missing key or certificate stops the start, not each dial.
            ssl::client_config(client).map_err(|e| format!("auth ssl: {e}"))?;
            self.ssl = Some(Arc::new(client.clone()));
        }
        Ok(self)
    }
}

/// The held connection: plain (bsdtcp) or inside TLS (ssl).
trait HoldStream: Read + Write + Send {
    fn socket(&self) -> &TcpStream;
}

impl HoldStream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl HoldStream for ssl::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// auth ssl on the held connection (issue 14): we are the TLS client, and check the
/// server's certificate as Amanda's initiator does (its fingerprint file under
/// `remote/<server>/`; with `ssl-check-certificate-host`, its CN is the configured server
/// name or resolves to the peer, see [`crate::server::tls::dialed_name_check`]).
fn hold_tls(
    cfg: &DialOut,
    settings: &conf::SslSettings,
    sock: TcpStream,
) -> Result<ssl::TlsStream<TcpStream>, String> {
    let (client, _) = ssl::client_config(settings).map_err(|e| format!("auth ssl: {e}"))?;
    let layer = ssl::TlsLayer::client(client, &cfg.host).map_err(|e| e.to_string())?;
    let peer = sock.peer_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut stream = ssl::TlsStream::new(layer, sock);
    stream
        .handshake(Instant::now() + CONNECT_TIMEOUT)
        .map_err(|e| format!("SSL_connect failed: {}", ssl::layer::describe_error(&e)))?;
    let canonical = ssl::names::canonical_name(&cfg.host);
    let check = ssl::Check {
        side: ssl::Side::Initiator,
        settings,
        host: Some(&canonical),
        peer,
    };
    let names = |cn: &str, peer| crate::server::tls::dialed_name_check(&cfg.server_name, cn, peer);
    let id = ssl::check_peer(&check, stream.layer().peer_certificate(), &names)
        .map_err(|e| e.to_string())?;
    debug!(
        "dial-out: ssl to {peer}: {}; server {}",
        stream.layer().describe(),
        id.subject
    );
    Ok(stream)
}

/// The held connection: [`connect`], then TLS for auth ssl.
fn connect_hold(cfg: &DialOut) -> Result<Box<dyn HoldStream>, String> {
    let sock = connect(cfg)?;
    Ok(match &cfg.ssl {
        None => Box::new(sock),
        Some(settings) => Box::new(hold_tls(cfg, settings, sock)?),
    })
}

/// Starts the dial-out thread; it runs for the life of the process.
pub fn spawn(cfg: DialOut, dialed: Dialed) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dial-out".into())
        .spawn(move || run(cfg, dialed))
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // The jitter only spreads redials; time and pid are spread enough.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    }
    u64::from_ne_bytes(b)
}

/// Opens a TCP connection to `host:port`, with the keepalive and `TCP_NODELAY` set.
fn connect_to(host: &str, port: u16, keepalive: Option<Keepalive>) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                let sock = socket2::SockRef::from(&s);
                if let Some(k) = keepalive {
                    let ka = socket2::TcpKeepalive::new()
                        .with_time(k.idle)
                        .with_interval(k.interval)
                        .with_retries(k.retries);
                    let _ = sock.set_tcp_keepalive(&ka);
                }
                let _ = sock.set_tcp_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to the listener, through the HTTP proxy when the settings' `[proxy]` (or
/// `https_proxy`, less `no_proxy`) name one for the server. The error says which hop
/// failed and how (the proxy's status line, its silence).
fn connect(cfg: &DialOut) -> Result<TcpStream, String> {
    let ip = cfg.host.parse::<IpAddr>().ok();
    let Some((url, origin)) = cfg.proxy.route(&cfg.host, ip) else {
        return connect_to(&cfg.host, cfg.port, cfg.keepalive).map_err(|e| format!("connect: {e}"));
    };
    let mut s = connect_to(&url.host, url.port, cfg.keepalive)
        .map_err(|e| format!("cannot reach HTTP proxy {url} (from {origin}): {e}"))?;
    // The proxy resolves the server's name: a host behind a proxy often has no DNS of
    // its own for the outside.
    crate::proxy::tunnel(
        &mut s,
        &url.to_string(),
        &cfg.host,
        cfg.port,
        url.credentials.as_ref(),
        cfg.proxy.answer_timeout,
    )
    .map_err(|e| format!("through HTTP proxy {url} (from {origin}): {e}"))?;
    debug!(
        "dial-out: tunnel to {}:{} through HTTP proxy {url} ({origin})",
        cfg.host, cfg.port
    );
    Ok(s)
}

fn run(cfg: DialOut, dialed: Dialed) {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let mut hc = HoldClient::new(
        cfg.hold.clone(),
        &cfg.user,
        &cfg.request,
        seed(),
        Instant::now(),
    );
    let opening = Arc::new(AtomicUsize::new(0));
    let mut conn: Option<Box<dyn HoldStream>> = None;
    // The FAILED lines of session threads: this thread writes them, as it is the HOLD's
    // only writer (a TLS stream has one).
    let (failed_tx, failed_rx) = mpsc::sync_channel::<Vec<u8>>(MAX_OPENING);
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        while let Some(action) = hc.poll_action(Instant::now()) {
            match action {
                HoldAction::Connect => match connect_hold(&cfg) {
                    Ok(s) => {
                        debug!("dial-out: connected to {server}");
                        // A server that stops reading must not stop the heartbeat forever.
                        let _ = s.socket().set_write_timeout(Some(CONNECT_TIMEOUT));
                        conn = Some(s);
                        reader = FrameReader::new();
                        hc.handle_connected(Instant::now());
                    }
                    Err(e) => hc.handle_connect_failed(Instant::now(), e),
                },
                HoldAction::Send(bytes) => {
                    if let Some(s) = conn.as_mut()
                        && let Err(e) = s.write_all(&bytes)
                    {
                        hc.handle_closed(Instant::now(), format!("write: {e}"));
                    }
                }
                HoldAction::Holding { heartbeat } => info!(
                    "dial-out: holding a connection to {server} for {} (heartbeat {} s)",
                    cfg.request.hostname,
                    heartbeat.as_secs()
                ),
                HoldAction::OpenSession(token) => {
                    open_session(&cfg, token, &dialed, &opening, &failed_tx)
                }
                HoldAction::Down { reason, retry_in } => {
                    conn = None;
                    warn!(
                        "dial-out: connection to {server}: {reason}; dialing again in {:.1} s",
                        retry_in.as_secs_f64()
                    );
                }
            }
        }
        // Best effort: a HOLD that broke meanwhile has its own error.
        while let Ok(line) = failed_rx.try_recv() {
            if let Some(s) = conn.as_mut()
                && let Err(e) = s.write_all(&line)
            {
                hc.handle_closed(Instant::now(), format!("write: {e}"));
            }
        }
        let now = Instant::now();
        // At least once a second, for the session threads' FAILED lines.
        let wait = hc
            .poll_timeout()
            .map_or(FAILED_LATENCY, |t| t.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), FAILED_LATENCY);
        let Some(s) = conn.as_mut() else {
            std::thread::sleep(wait);
            hc.handle_timeout(Instant::now());
            continue;
        };
        let _ = s.socket().set_read_timeout(Some(wait));
        match s.read(&mut buf) {
            Ok(0) => hc.handle_closed(Instant::now(), "the server closed the connection"),
            Ok(n) => {
                let mut input = &buf[..n];
                loop {
                    match reader.next(&mut input) {
                        Ok(Some(f)) => hc.handle_frame(Instant::now(), f.handle, &f.payload),
                        Ok(None) => break,
                        Err(e) => {
                            hc.handle_closed(Instant::now(), format!("bad frame: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) if ssl::layer::only_waited(&e) => {}
            Err(e) => hc.handle_closed(Instant::now(), format!("read: {e}")),
        }
        hc.handle_timeout(Instant::now());
    }
}

/// How long a session thread's FAILED line may wait for the hold thread to write it.
const FAILED_LATENCY: Duration = Duration::from_secs(1);

/// Opens one session on its own thread (a connect may take [`CONNECT_TIMEOUT`], during
/// which the HOLD must still answer PINGs); a failure is also told to the server.
fn open_session(
    cfg: &DialOut,
    token: Token,
    dialed: &Dialed,
    opening: &Arc<AtomicUsize>,
    failed: &mpsc::SyncSender<Vec<u8>>,
) {
    if opening.fetch_add(1, Ordering::SeqCst) >= MAX_OPENING {
        opening.fetch_sub(1, Ordering::SeqCst);
        warn!("dial-out: {MAX_OPENING} sessions are being opened already; OPEN {token} dropped");
        return;
    }
    let cfg = cfg.clone();
    let dialed = dialed.clone();
    let counter = opening.clone();
    let failed = failed.clone();
    let spawned = std::thread::Builder::new()
        .name("dial-session".into())
        .spawn(move || {
            let result = connect(&cfg).and_then(|mut s| {
                s.write_all(&dialin::session_preamble(token))
                    .map_err(|e| format!("write: {e}"))?;
                Ok(s)
            });
            counter.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(s) => {
                    debug!("dial-out: session {token} open");
                    if dialed.hand_over(s).is_err() {
                        warn!("dial-out: too many sessions waiting for the loop; {token} dropped");
                    }
                }
                Err(e) => {
                    warn!(
                        "dial-out: session {token} to {}:{}: {e}",
                        cfg.host, cfg.port
                    );
                    // Full only if MAX_OPENING lines wait already; the server's token then
                    // expires on its own.
                    let _ = failed.try_send(dialin::Line::Failed(token, e).frame());
                }
            }
        });
    if let Err(e) = spawned {
        opening.fetch_sub(1, Ordering::SeqCst);
        warn!("dial-out: no thread for session {token}: {e}");
    }
}
