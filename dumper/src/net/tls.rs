//! auth ssl's connection, initiator side (spec §13.1, §13.4): a TCP connection from the
//! `unreserved-tcp-port` pool (no reserved port: amandad does not check it), TLS at once,
//! then Amanda's checks of the client's certificate in Amanda's order; the result is a
//! [`FramedConn`] whose frames go through TLS. A failure here is a connect failure, which
//! the exchange retries `connect-tries` times like Amanda.
//!
//! Error texts begin with Amanda's (`SSL_connect failed: ...`, `Common name of certicate
//! (...) doesn't resolv to IP (...)`, `No fingerprint match`) and go on with which check
//! failed and which file to fix.
//!
//! What this module must not do: parse frames (that is [`super::tcp`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use conf::SslSettings;
use ssl::{Check, Side, TlsLayer, TlsStream};

use super::exchange::OpenError;
use super::tcp::FramedConn;
use super::{Ports, Tuning, WaitSink};

/// Why an ssl connection could not be opened (besides the TCP connect itself, which is an
/// [`OpenError::Connect`] like bsdtcp's). `Display` starts with Amanda's text.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SslFailure {
    /// Our own certificate, key or CA file (names the file, the keyword and its line).
    #[error("{0}")]
    Setup(ssl::SetupError),
    /// The TLS handshake (the client refused us, or we refused its certificate chain).
    #[error("SSL_connect failed: {0}")]
    Handshake(String),
    /// A check after the handshake (CN, its resolution, the fingerprint file).
    #[error("{0}")]
    Check(ssl::CheckFailure),
    /// issue 14: the certificate on a dial-in session names another host.
    #[error(
        "the dial-in session for {host} presented a certificate for {cn}: its CN must be {host} (the disklist's name of the host; amssl makes the certificate with it)"
    )]
    WrongHost { cn: String, host: String },
}

/// Opens an ssl connection to `dest` (disklist host `host`) for requests as `user`.
pub fn connect(
    ports: &Ports,
    dest: SocketAddr,
    host: &str,
    settings: &SslSettings,
    user: &str,
    tuning: &Tuning,
    waits: WaitSink<'_>,
) -> Result<FramedConn, OpenError> {
    let fail = |error| OpenError::Ssl { dest, error };
    let (cfg, _) = ssl::client_config(settings).map_err(|e| fail(SslFailure::Setup(e)))?;
    let pool = ports
        .tcp_data
        .as_deref()
        .ok_or_else(|| OpenError::Initiator("no unreserved-tcp-port pool".into()))?;
    // Through an HTTP proxy when one applies (issue 14): TLS runs inside the tunnel.
    let mut lease = super::proxy::connect(pool, dest, host, "ssl connection", tuning, waits)?;
    let layer =
        handshake(lease.socket_mut(), cfg, host, settings, tuning, dest, None).map_err(fail)?;
    Ok(FramedConn::new(lease, dest, user).with_tls(layer))
}

/// auth ssl over a dial-in session (issue 14): the connection `host`'s client opened to our
/// listener, which the rendezvous handed over. We are the TLS client as over a connection we
/// opened, with the same checks, except that the certificate's CN must be `host` itself
/// instead of resolving to the peer's address (that is the client's NAT or proxy).
pub fn over_dialin(
    sock: &mut TcpStream,
    host: &str,
    settings: &SslSettings,
    tuning: &Tuning,
) -> Result<TlsLayer, SslFailure> {
    let (cfg, _) = ssl::client_config(settings).map_err(SslFailure::Setup)?;
    let peer = sock
        .peer_addr()
        .map_err(|e| SslFailure::Handshake(e.to_string()))?;
    let layer = handshake(sock, cfg, host, settings, tuning, peer, Some(host))?;
    let _ = sock.set_read_timeout(None);
    Ok(layer)
}

/// The TLS handshake as the client on `sock`, then Amanda's checks of the peer's
/// certificate. With `dialin_host`, the CN must be that name (case aside) and is not
/// resolved.
fn handshake(
    sock: &mut TcpStream,
    cfg: std::sync::Arc<ssl::rustls::ClientConfig>,
    host: &str,
    settings: &SslSettings,
    tuning: &Tuning,
    dest: SocketAddr,
    dialin_host: Option<&str>,
) -> Result<TlsLayer, SslFailure> {
    let layer = TlsLayer::client(cfg, host).map_err(|e| SslFailure::Handshake(e.to_string()))?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
    let mut stream = TlsStream::new(layer, &mut *sock);
    // A client that accepts and then says nothing (or too little) must not hold this try
    // longer than the setting (issue 13).
    let limit = tuning.ssl_handshake;
    stream.handshake(Instant::now() + limit).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::TimedOut {
            format!(
                "TLS handshake timed out: the client did not finish it within {} s (amanda-rs setting dumper.ssl_handshake_secs)",
                limit.as_secs()
            )
        } else {
            ssl::layer::describe_error(&e)
        };
        SslFailure::Handshake(why)
    })?;
    let (_, mut layer) = stream.into_parts();
    // The fingerprint directory is named after the canonical name of the host, as Amanda's.
    let canonical = ssl::names::canonical_name(host);
    // A dial-in client's address is its NAT's: its certificate's name is checked instead.
    let dialin_settings;
    let settings = match dialin_host {
        Some(_) => {
            dialin_settings = SslSettings {
                check_certificate_host: false,
                ..settings.clone()
            };
            &dialin_settings
        }
        None => settings,
    };
    let check = Check {
        side: Side::Initiator,
        settings,
        host: Some(&canonical),
        peer: dest,
    };
    let id = ssl::check_peer(
        &check,
        layer.peer_certificate(),
        &ssl::names::forward_confirm,
    )
    .map_err(SslFailure::Check)?;
    if let Some(want) = dialin_host {
        check_dialin_cn(id.cn.as_deref(), want)?;
    }
    log::debug!(
        "ssl to {dest} ({host}): {}; peer {}{}",
        layer.describe(),
        id.subject,
        id.fingerprint_file
            .map(|p| format!(", fingerprint matches {}", p.display()))
            .unwrap_or_default()
    );
    // The client passed every check: its dump streams are read in large blocks.
    layer.set_bulk_reads(true);
    Ok(layer)
}

/// issue 14: a dial-in session's TLS peer must be the host whose session we asked for.
fn check_dialin_cn(cn: Option<&str>, host: &str) -> Result<(), SslFailure> {
    match cn {
        Some(cn) if cn.eq_ignore_ascii_case(host) => Ok(()),
        other => Err(SslFailure::WrongHost {
            cn: other.unwrap_or("(none)").to_string(),
            host: host.to_string(),
        }),
    }
}

/// Writes all of `bytes` (whole frames) through `layer` to the blocking socket.
pub fn write_all(layer: &mut TlsLayer, sock: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = layer.write_frames(bytes)?;
        bytes = &bytes[n..];
        while !layer.flush(sock)? {}
    }
    while !layer.flush(sock)? {}
    sock.flush()
}

/// Plaintext from the blocking socket (its read timeout applies: WouldBlock/TimedOut).
pub fn read(layer: &mut TlsLayer, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let r = layer.read(sock as &mut dyn Read, buf);
    if layer.wants_write() {
        let _ = layer.flush(sock);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 14: a dial-in session's TLS peer must be the host the worker asked for.
    #[test]
    fn a_dialin_session_must_present_the_certificate_of_its_host() {
        assert!(check_dialin_cn(Some("NatClient"), "natclient").is_ok());
        let e = check_dialin_cn(Some("otherclient"), "natclient").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the dial-in session for natclient presented a certificate for otherclient"
            ),
            "{e}"
        );
        assert!(check_dialin_cn(None, "natclient").is_err());
    }

    /// The ssl crate's test certificates of `side` (main tree: client CN 127.0.0.1, server
    /// CN localhost, one CA).
    fn settings(side: &str) -> SslSettings {
        let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../ssl/testdata/main");
        SslSettings {
            cert_file: format!("{base}/{side}/crt.pem"),
            key_file: format!("{base}/{side}/key.pem"),
            ca_cert_file: format!("{base}/ca.pem"),
            ..SslSettings::default()
        }
    }

    /// A dial-in session as the worker gets it: a connected socket whose other end is a TLS
    /// server with the client's certificate (amandad's role). The worker's result.
    fn session_for(host: &str) -> Result<(), SslFailure> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = l.accept().unwrap();
            let (cfg, _) = ssl::server_config(&settings("client")).unwrap();
            let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
            let mut s = TlsStream::new(TlsLayer::server(cfg).unwrap(), sock);
            // The worker may refuse it after the handshake: either is fine here.
            let _ = s.handshake(Instant::now() + Duration::from_secs(10));
        });
        let mut sock = TcpStream::connect(addr).unwrap();
        let tuning = Tuning::from_settings(&conf::Settings::default());
        let r = over_dialin(&mut sock, host, &settings("server"), &tuning).map(|_| ());
        drop(sock);
        server.join().unwrap();
        r
    }

    // issue 14: over a real handshake, the worker takes a session whose certificate names
    // the host it asked for (not resolved: it is a NAT's address) and refuses another's.
    #[test]
    fn the_worker_refuses_a_dialin_session_whose_certificate_names_another_host() {
        session_for("127.0.0.1").unwrap();
        match session_for("natclient") {
            Err(SslFailure::WrongHost { cn, host }) => {
                assert_eq!((cn.as_str(), host.as_str()), ("127.0.0.1", "natclient"));
            }
            other => panic!("{other:?}"),
        }
    }
}
