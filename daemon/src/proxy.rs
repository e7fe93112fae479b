//! The blocking shell around `proto::proxy`'s CONNECT handshake (issue 14), shared by every
//! outbound TCP connection of amanda-rs that may go through an HTTP proxy: dumper's
//! connections to clients and `amandad --dial-out`'s HOLD and SESSION connections to the
//! server's listener. [`tunnel`] writes the CONNECT on a socket already connected to the
//! proxy and reads the answer until it is a tunnel, a refusal, garbage or too late.
//!
//! What this module must not do: speak HTTP itself (that is `proto::proxy`), decide which
//! peer goes through which proxy (that is `conf::proxy`), or open the socket to the proxy
//! (each caller does that with its own ports, keepalive and timeouts).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::proxy::{self as http, Handshake, ProxyError};
use ssl::layer::only_waited;

/// Why the proxy gave no tunnel. `Display` names the proxy.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TunnelError {
    /// The proxy answered, and not with a tunnel (403, 407, another status, garbage).
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
    /// The tunnel brought bytes from the far end before we spoke (no amanda-rs peer
    /// behind a tunnel speaks first: not amandad, not a TLS server, not `dumper listen`).
    #[error(
        "HTTP proxy {proxy} opened the tunnel and passed {bytes} bytes before the Amanda request was sent; neither amandad nor a TLS server speaks first"
    )]
    EarlyBytes {
        /// The proxy.
        proxy: String,
        /// How many.
        bytes: usize,
    },
    /// The target cannot be written in a request line.
    #[error("{0}")]
    Request(http::RequestError),
}

/// Asks the proxy on `sock` (named `proxy` in errors, never with credentials) for a
/// tunnel to `target:port` (an address, or a name the proxy resolves) and reads its answer
/// until `timeout` has passed. The socket's timeouts are left unset.
pub fn tunnel(
    sock: &mut TcpStream,
    proxy: &str,
    target: &str,
    port: u16,
    credentials: Option<&http::Credentials>,
    timeout: Duration,
) -> Result<(), TunnelError> {
    let request = http::connect_request(target, port, credentials).map_err(TunnelError::Request)?;
    let io = |source| TunnelError::Io {
        proxy: proxy.to_owned(),
        source: Arc::new(source),
    };
    let started = Instant::now();
    let deadline = started + timeout;
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    sock.write_all(&request).map_err(io)?;
    let mut hs = Handshake::new(proxy, http::authority(target, port), credentials.is_some());
    let mut buf = [0u8; 1024];
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(TunnelError::Silent {
                proxy: proxy.to_owned(),
                waited: now - started,
                received: hs.received(),
            });
        }
        sock.set_read_timeout(Some(deadline - now)).map_err(io)?;
        match sock.read(&mut buf) {
            Ok(0) => break Err(TunnelError::Answer(hs.handle_eof())),
            Ok(n) => match hs.handle_bytes(&buf[..n]) {
                Ok(None) => {}
                Ok(Some(est)) if est.rest.is_empty() => break Ok(()),
                Ok(Some(est)) => {
                    break Err(TunnelError::EarlyBytes {
                        proxy: proxy.to_owned(),
                        bytes: est.rest.len(),
                    });
                }
                Err(e) => break Err(TunnelError::Answer(e)),
            },
            Err(e) if only_waited(&e) => {}
            Err(e) => break Err(io(e)),
        }
    };
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn proxy_answers(answer: &'static [u8]) -> Result<(), TunnelError> {
        let (mut c, mut s) = testkit::tcp_pair();
        let t = thread::spawn(move || {
            let mut req = [0u8; 512];
            let n = s.read(&mut req).unwrap();
            s.write_all(answer).unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let r = tunnel(
            &mut c,
            "127.0.0.1:3128",
            "::1",
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
        assert!(
            matches!(&e, TunnelError::Answer(a) if a.status() == Some(403)),
            "{e}"
        );
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
        let (mut c, _s) = testkit::tcp_pair();
        let started = Instant::now();
        let e = tunnel(
            &mut c,
            "127.0.0.1:3128",
            "127.0.0.1",
            10080,
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "HTTP proxy 127.0.0.1:3128 did not answer the CONNECT within 1 s (0 bytes of an answer received; proxy.answer_timeout_secs)"
        );
    }

    // issue 14: a hostile proxy that never ends its header is read only to the bound, and
    // credentials go in Proxy-Authorization.
    #[test]
    fn an_endless_answer_stops_at_the_bound_and_credentials_are_sent() {
        let (mut c, mut s) = testkit::tcp_pair();
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
            "127.0.0.1",
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
                TunnelError::Answer(ProxyError::TooLarge {
                    limit: http::MAX_ANSWER_HEADER,
                    ..
                })
            ),
            "{e}"
        );
    }

    #[test]
    fn a_proxy_that_closes_says_so() {
        let (mut c, s) = testkit::tcp_pair();
        drop(s);
        let e = tunnel(&mut c, "p:1", "127.0.0.1", 1, None, Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(
                e,
                TunnelError::Answer(ProxyError::Closed { .. }) | TunnelError::Io { .. }
            ),
            "{e}"
        );
    }
}
