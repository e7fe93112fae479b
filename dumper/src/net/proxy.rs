//! dumper's outbound TCP connections through an HTTP CONNECT proxy (issue 14): when
//! amanda-rs's `[proxy]` settings or `https_proxy` apply to a client (see
//! [`conf::proxy`]), the bsdtcp or ssl connection is made to the proxy instead (from the
//! same port pool, with the same keepalive), the proxy is asked for a tunnel to the
//! client's address and port with `proto::proxy`'s CONNECT, and the usual protocol runs
//! inside it (TLS first for ssl). A proxy that refuses (403, 407, other statuses), answers
//! garbage or stays silent for `proxy.answer_timeout_secs` ends the attempt with an error
//! naming the proxy, its status line or how long it was waited for.
//!
//! The client sees the proxy's address and source port, not ours: amandad's bsdtcp check
//! of a reserved source port (`port N not secure`) and its `.amandahosts` check by the
//! peer's name then apply to the proxy. Only auth ssl, which authenticates by
//! certificate, works through a proxy; [`not_secure_hint`] says so in bsdtcp's refusal.
//!
//! What this module must not do: speak HTTP itself (that is `proto::proxy`) or decide
//! which host goes through which proxy (that is `conf::proxy`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portpool_alloc::{Lease, Pool};
use proto::proxy::{self as http, Handshake, ProxyError};

use super::{ConnectFailure, HopEvent, ResolveError, Tuning, WaitSink};

/// A connection through a proxy that failed: what, through which proxy, and why.
#[derive(Clone, Debug)]
pub struct Via {
    /// What was being connected (`ssl connection`).
    pub what: String,
    /// The proxy (`host:port`, never its credentials).
    pub proxy: String,
    /// Where the proxy was set (`proxy.url`, `https_proxy`, ...).
    pub origin: String,
    /// What went wrong.
    pub error: ProxyFailure,
}

/// Why the tunnel through the proxy could not be had. `Display` names the proxy.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProxyFailure {
    /// The proxy's name does not resolve.
    #[error("{0}")]
    Resolve(ResolveError),
    /// The TCP connection to the proxy failed.
    #[error("cannot reach the proxy: {0}")]
    Reach(Box<ConnectFailure>),
    /// The proxy answered, and not with a tunnel.
    #[error("{0}")]
    Answer(ProxyError),
    /// The proxy did not finish its answer in time.
    #[error(
        "HTTP proxy {proxy} did not answer the CONNECT within {} s ({received} bytes of an answer received; proxy.answer_timeout_secs)",
        .waited.as_secs()
    )]
    Silent {
        /// The proxy.
        proxy: String,
        /// How long it was waited for.
        waited: Duration,
        /// Bytes of its answer received.
        received: usize,
    },
    /// Writing the request or reading the answer failed.
    #[error("talking to HTTP proxy {proxy}: {source}")]
    Io {
        /// The proxy.
        proxy: String,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The tunnel brought bytes from the client before we spoke (amandad never speaks
    /// first, in bsdtcp or in TLS).
    #[error(
        "HTTP proxy {proxy} opened the tunnel and passed {bytes} bytes before the Amanda request was sent; neither amandad nor a TLS server speaks first"
    )]
    EarlyBytes {
        /// The proxy.
        proxy: String,
        /// How many.
        bytes: usize,
    },
    /// The target cannot be written in a request line (not expected: it is an address).
    #[error("{0}")]
    Request(http::RequestError),
}

impl ProxyFailure {
    /// What the hop did, in [`HopEvent`]'s words.
    pub fn event(&self) -> HopEvent {
        match self {
            ProxyFailure::Answer(e) if e.status().is_some() => HopEvent::Refused,
            ProxyFailure::Answer(ProxyError::Closed { .. }) => HopEvent::Closed,
            ProxyFailure::Reach(c) => c.event(),
            ProxyFailure::Silent { .. } => HopEvent::Timeout,
            ProxyFailure::Io { source, .. } => HopEvent::of_io(source),
            _ => HopEvent::Other,
        }
    }
}

/// Connects to `dest` (configured as `host`) the way amanda-rs's proxy settings say:
/// through the proxy when one applies to it, else as [`super::connect`] does.
pub fn connect(
    pool: &Pool,
    dest: SocketAddr,
    host: &str,
    what: &str,
    tuning: &Tuning,
    sink: WaitSink<'_>,
) -> Result<Lease<TcpStream>, ConnectFailure> {
    let Some((url, origin)) = tuning.proxy.route(host, Some(dest.ip())) else {
        return super::connect(pool, dest, what, tuning, sink);
    };
    let fail = |port: u16, error: ProxyFailure| ConnectFailure::Proxy {
        dest,
        port,
        via: Box::new(Via {
            what: what.to_owned(),
            proxy: url.to_string(),
            origin: origin.to_string(),
            error,
        }),
    };
    let proxy_addr =
        super::resolve(&url.host, url.port).map_err(|e| fail(0, ProxyFailure::Resolve(e)))?;
    let mut lease = super::connect(pool, proxy_addr, what, tuning, sink)
        .map_err(|e| fail(0, ProxyFailure::Reach(Box::new(e))))?;
    let port = lease.socket().local_addr().map_or(0, |a| a.port());
    log::debug!("{what} to {dest}: through HTTP proxy {url} ({origin}) from port {port}");
    tunnel(
        lease.socket_mut(),
        &url.to_string(),
        dest.ip(),
        dest.port(),
        url.credentials.as_ref(),
        tuning.proxy.answer_timeout,
    )
    .map_err(|e| fail(port, e))?;
    Ok(lease)
}

/// Asks the proxy on `sock` for a tunnel to `ip:port` and reads its answer until
/// `timeout` has passed. The socket's read timeout is left unset.
pub fn tunnel(
    sock: &mut TcpStream,
    proxy: &str,
    ip: IpAddr,
    port: u16,
    credentials: Option<&http::Credentials>,
    timeout: Duration,
) -> Result<(), ProxyFailure> {
    let target = ip.to_string();
    let request =
        http::connect_request(&target, port, credentials).map_err(ProxyFailure::Request)?;
    let io = |source| ProxyFailure::Io {
        proxy: proxy.to_owned(),
        source: Arc::new(source),
    };
    let started = Instant::now();
    let deadline = started + timeout;
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    sock.write_all(&request).map_err(io)?;
    let mut hs = Handshake::new(proxy, http::authority(&target, port), credentials.is_some());
    let mut buf = [0u8; 1024];
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(ProxyFailure::Silent {
                proxy: proxy.to_owned(),
                waited: now - started,
                received: hs.received(),
            });
        }
        sock.set_read_timeout(Some(deadline - now)).map_err(io)?;
        match sock.read(&mut buf) {
            Ok(0) => break Err(ProxyFailure::Answer(hs.handle_eof())),
            Ok(n) => match hs.handle_bytes(&buf[..n]) {
                Ok(None) => {}
                Ok(Some(est)) if est.rest.is_empty() => break Ok(()),
                Ok(Some(est)) => {
                    break Err(ProxyFailure::EarlyBytes {
                        proxy: proxy.to_owned(),
                        bytes: est.rest.len(),
                    });
                }
                Err(e) => break Err(ProxyFailure::Answer(e)),
            },
            Err(e) if super::only_waited(&e) => {}
            Err(e) => break Err(io(e)),
        }
    };
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
    outcome
}

/// The hint bsdtcp's refusal gets when its connection went through a proxy: amandad saw
/// the proxy's source port, which is never a reserved one.
pub fn not_secure_hint(proxy: &str) -> String {
    format!(
        " (the connection went through HTTP proxy {proxy}, so the client saw the proxy's address and source port, not a reserved port of this server: auth bsdtcp cannot work through a proxy; use auth \"ssl\", which authenticates by certificate, or exempt this client with proxy.no_proxy)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn proxy_answers(answer: &'static [u8]) -> Result<(), ProxyFailure> {
        let (mut c, mut s) = pair();
        let t = thread::spawn(move || {
            let mut req = [0u8; 512];
            let n = s.read(&mut req).unwrap();
            s.write_all(answer).unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let r = tunnel(
            &mut c,
            "127.0.0.1:3128",
            "::1".parse().unwrap(),
            10080,
            None,
            Duration::from_secs(5),
        );
        let req = t.join().unwrap();
        assert!(req.starts_with("CONNECT [::1]:10080 HTTP/1.1\r\n"), "{req}");
        r
    }

    #[test]
    fn a_200_gives_the_tunnel_and_a_403_names_the_proxy_and_its_status_line() {
        proxy_answers(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
        let e = proxy_answers(b"HTTP/1.0 403 Access violation\r\n\r\n").unwrap_err();
        assert_eq!(e.event(), HopEvent::Refused);
        assert!(
            e.to_string()
                .starts_with("HTTP proxy 127.0.0.1:3128 refused the tunnel to [::1]:10080: \"HTTP/1.0 403 Access violation\""),
            "{e}"
        );
        let e = proxy_answers(b"HTTP/1.1 200 ok\r\n\r\nhello").unwrap_err();
        assert!(e.to_string().contains("passed 5 bytes before"), "{e}");
    }

    // issue 14: a silent proxy ends the attempt, naming the proxy and the wait.
    #[test]
    fn a_silent_proxy_ends_the_attempt_with_how_long_it_was_waited_for() {
        let (mut c, _s) = pair();
        let started = Instant::now();
        let e = tunnel(
            &mut c,
            "127.0.0.1:3128",
            "127.0.0.1".parse().unwrap(),
            10080,
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(e.event(), HopEvent::Timeout);
        assert_eq!(
            e.to_string(),
            "HTTP proxy 127.0.0.1:3128 did not answer the CONNECT within 1 s (0 bytes of an answer received; proxy.answer_timeout_secs)"
        );
    }

    // issue 14: a hostile proxy that never ends its header is read only to the bound, and
    // credentials go in Proxy-Authorization.
    #[test]
    fn an_endless_answer_stops_at_the_bound_and_credentials_are_sent() {
        let (mut c, mut s) = pair();
        let t = thread::spawn(move || {
            let mut req = [0u8; 512];
            let n = s.read(&mut req).unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 ok\r\n");
            for _ in 0..4096 {
                if s.write_all(b"X-Junk: 0123456789abcdef\r\n").is_err() {
                    break;
                }
            }
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let creds = http::Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        let e = tunnel(
            &mut c,
            "p:1",
            "127.0.0.1".parse().unwrap(),
            1,
            Some(&creds),
            Duration::from_secs(5),
        )
        .unwrap_err();
        drop(c);
        let req = t.join().unwrap();
        assert!(
            req.contains("\r\nProxy-Authorization: Basic dTpw\r\n"),
            "{req}"
        );
        assert!(
            matches!(
                e,
                ProxyFailure::Answer(ProxyError::TooLarge {
                    limit: http::MAX_ANSWER_HEADER,
                    ..
                })
            ),
            "{e}"
        );
    }

    #[test]
    fn a_proxy_that_closes_says_so() {
        let (mut c, s) = pair();
        drop(s);
        let e = tunnel(
            &mut c,
            "p:1",
            "127.0.0.1".parse().unwrap(),
            1,
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ProxyFailure::Answer(ProxyError::Closed { .. }) | ProxyFailure::Io { .. }
            ),
            "{e}"
        );
    }
}
