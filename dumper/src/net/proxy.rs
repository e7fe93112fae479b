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
//! TCP keepalive stops at the proxy: the heartbeat that keeps a quiet tunnel open is asked
//! for on the connection's noop ([`super::control::Control::noop`], [`proto::heartbeat`]).
//!
//! What this module must not do: speak HTTP itself (that is `proto::proxy`), run the
//! CONNECT handshake (that is `daemon::proxy`, shared with `amandad --dial-out`) or decide
//! which host goes through which proxy (that is `conf::proxy`).

use std::net::{SocketAddr, TcpStream};

use daemon::proxy::TunnelError;
use portpool_alloc::{Lease, Pool};
use proto::proxy::ProxyError;

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
    /// The proxy was reached and gave no tunnel (refused, garbage, silent, early bytes).
    #[error("{0}")]
    Tunnel(#[from] TunnelError),
}

impl ProxyFailure {
    /// What the hop did, in [`HopEvent`]'s words.
    pub fn event(&self) -> HopEvent {
        match self {
            ProxyFailure::Tunnel(TunnelError::Answer(e)) if e.status().is_some() => {
                HopEvent::Refused
            }
            ProxyFailure::Tunnel(TunnelError::Answer(ProxyError::Closed { .. })) => {
                HopEvent::Closed
            }
            ProxyFailure::Reach(c) => c.event(),
            ProxyFailure::Tunnel(TunnelError::Silent { .. }) => HopEvent::Timeout,
            ProxyFailure::Tunnel(TunnelError::Io { source, .. }) => HopEvent::of_io(source),
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
    daemon::proxy::tunnel(
        lease.socket_mut(),
        &url.to_string(),
        &dest.ip().to_string(),
        dest.port(),
        url.credentials.as_ref(),
        tuning.proxy.answer_timeout,
    )
    .map_err(|e| fail(port, e.into()))?;
    Ok(lease)
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
    use std::time::Duration;

    // issue 14: the hop's event follows the proxy's answer (the handshake itself is
    // tested with daemon::proxy).
    #[test]
    fn a_refusal_is_refused_and_silence_is_a_timeout() {
        let refused = ProxyFailure::Tunnel(TunnelError::Answer(ProxyError::Forbidden {
            proxy: "p:1".into(),
            target: "h:1".into(),
            status_line: "HTTP/1.0 403 no".into(),
        }));
        assert_eq!(refused.event(), HopEvent::Refused);
        let silent = ProxyFailure::Tunnel(TunnelError::Silent {
            proxy: "p:1".into(),
            waited: Duration::from_secs(1),
            received: 0,
        });
        assert_eq!(silent.event(), HopEvent::Timeout);
    }
}
