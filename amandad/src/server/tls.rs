//! auth ssl in the loop (spec §13.4, acceptor): a TLS layer under the bsdtcp framing of a
//! control connection, and Amanda's checks of the peer in Amanda's order:
//!
//! 1. `ssl-check-host`: the peer address's reverse name must resolve back to it (the same
//!    lookup as bsdtcp's, on the resolver threads); a failure closes the connection;
//! 2. the TLS handshake, with the client certificate required and signed by the Amanda CA
//!    (`ssl::verify`); rustls refuses anything else with an alert;
//! 3. the certificate's CN, its resolution to the peer (`ssl-check-certificate-host`) and
//!    the fingerprint file `remote/<CN>/fingerprint` (`ssl::check`), on a thread of their
//!    own because they resolve names and read a file;
//! 4. then the connection is read like a bsdtcp one, with the CN as the peer's name for
//!    `.amandahosts` and no reserved-port rule.
//!
//! A session this host dialed (`--dial-out` with `auth = "ssl"`, issue 14) is the same,
//! except that step 1 is skipped (we dialed the server's name) and in step 3 a CN that is
//! the configured server name needs no resolution ([`dialed_name_check`]).
//!
//! Amanda logs these refusals and sends nothing; so do we, but we close the connection at
//! once instead of leaving it open until an idle exit (spec §13.5 S-2), so the server sees
//! the refusal now. The log line names the check and the file to fix.
//!
//! The connection's bytes go through [`ssl::TlsLayer`] inside [`super::Conn`]; a dump on an
//! ssl connection copies DATA through user space (no splice: the bytes are encrypted).
//!
//! What this module must not do: block the loop (names and files are the check thread's)
//! or parse frames.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use log::{debug, info, warn};

use conf::SslSettings;
use ssl::{Check, CheckFailure, PeerIdentity, Side, TlsLayer};

use super::refusals::Reason;
use super::{Conn, Server};
use crate::resolve;

/// Certificate checks waiting for the check thread; past it a connection is closed (its
/// server retries).
const CHECK_QUEUE: usize = 256;

/// The acceptor's TLS setup, made once at start.
pub struct Acceptor {
    /// The rustls configuration, or why there is none (every connection is then closed
    /// with that reason in the log, the way Amanda's amandad cannot load its files).
    pub config: Result<Arc<ssl::rustls::ServerConfig>, String>,
    pub settings: Arc<SslSettings>,
}

impl Acceptor {
    /// From amanda-client.conf's ssl settings.
    pub fn new(settings: SslSettings) -> Acceptor {
        let config = ssl::server_config(&settings)
            .map(|(c, id)| {
                info!(
                    "ssl: our certificate {} ({}), CA file {}",
                    id.cert.subject(),
                    ssl::config::file(&settings, ssl::config::FileKind::Cert),
                    id.ca_file
                );
                c
            })
            .map_err(|e| e.to_string());
        Acceptor {
            config,
            settings: Arc::new(settings),
        }
    }
}

/// The TLS state of a connection.
pub struct TlsConn {
    pub layer: TlsLayer,
    /// The checks after the handshake were started.
    pub check_started: bool,
    /// ... and passed: plaintext may be read.
    pub checked: bool,
}

/// A connection's id, the peer's certificate and address, and for a connection this host
/// dialed (issue 14) the server's configured name.
type Job = (u64, Vec<u8>, SocketAddr, Option<String>);
type Outcome = (u64, Result<PeerIdentity, CheckFailure>);

/// The thread that runs the certificate checks.
pub struct CertChecks {
    jobs: Sender<Job>,
    results: Receiver<Outcome>,
}

impl CertChecks {
    /// Starts the thread; each result wakes the loop through `wake`.
    pub fn new(
        settings: Arc<SslSettings>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<CertChecks> {
        let (jobs, job_rx) = bounded::<Job>(CHECK_QUEUE);
        let (out, results) = unbounded();
        std::thread::Builder::new()
            .name("amandad-ssl-checks".into())
            .spawn(move || {
                while let Ok((id, der, peer, dialed)) = job_rx.recv() {
                    let check = Check {
                        side: Side::Acceptor,
                        settings: &settings,
                        host: None,
                        peer,
                    };
                    let r = match &dialed {
                        None => ssl::check_peer(&check, Some(&der), &ssl::names::forward_confirm),
                        Some(server) => {
                            let names = |cn: &str, peer| dialed_name_check(server, cn, peer);
                            ssl::check_peer(&check, Some(&der), &names)
                        }
                    };
                    if out.send((id, r)).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(CertChecks { jobs, results })
    }
}

/// `ssl-check-certificate-host` for a connection this host dialed to the server (issue 14:
/// the dial-out's held connection and its sessions): a CN that is the server's configured
/// name (`amandad.dial_out.server_name`, else the host of `server`) is the server, whatever
/// address the connection has (a proxy's, when it goes through one); any other CN must
/// resolve to the peer as usual.
pub fn dialed_name_check(server: &str, cn: &str, peer: SocketAddr) -> Result<(), String> {
    if !server.is_empty() && cn.eq_ignore_ascii_case(server) {
        return Ok(());
    }
    ssl::names::forward_confirm(cn, peer)
}

impl Server {
    /// The TLS layer for a new control connection (auth ssl), or why there is none.
    pub(super) fn tls_for_new_conn(&self) -> Option<Result<TlsConn, String>> {
        let acceptor = self.cfg.tls.as_ref()?;
        Some(
            acceptor
                .config
                .clone()
                .and_then(|c| TlsLayer::server(c).map_err(|e| e.to_string()))
                .map(|layer| TlsConn {
                    layer,
                    check_started: false,
                    checked: false,
                }),
        )
    }

    /// Whether `ssl-check-host` asks for the reverse-DNS check of an ssl connection's peer.
    pub(super) fn tls_wants_name_check(&self) -> bool {
        self.cfg.tls.as_ref().is_none_or(|a| a.settings.check_host)
    }

    /// After reading an ssl connection: send what the handshake produced, and start the
    /// certificate checks once it is finished.
    pub(super) fn tls_progress(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c.peer;
        let dialed = c.dialed.then(|| self.cfg.dialed_server_name.clone());
        let Some(t) = c.tls.as_mut() else { return };
        let due = !t.layer.is_handshaking() && !t.check_started;
        let der = if due {
            t.check_started = true;
            debug!("ssl connection {id} from {peer}: {}", t.layer.describe());
            t.layer.peer_certificate().map(<[u8]>::to_vec)
        } else {
            None
        };
        let wants_write = t.layer.wants_write();
        if due {
            c.name_pending = true;
        }
        if wants_write {
            self.flush_conn(id);
        }
        if !due {
            return;
        }
        let ip = resolve::unmap(peer.ip());
        let Some(der) = der else {
            let e = CheckFailure::NoClientCertificate;
            self.refuse_tls(peer, &e.to_string());
            self.close_conn(id);
            return;
        };
        let Some(checks) = self.tls_checks.as_ref() else {
            return;
        };
        match checks.jobs.try_send((id, der, peer, dialed)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.refuse(Some(ip), Reason::ResolverBusy, || {
                    format!("closed ssl connection from {peer}: too many certificate checks queued")
                });
                self.close_conn(id);
            }
        }
        self.refresh_interest(id);
    }

    /// Results of the certificate checks: the connection goes on with the CN as its peer's
    /// name, or is closed with the reason in the log.
    pub(super) fn drain_tls_checks(&mut self) {
        let Some(checks) = self.tls_checks.as_ref() else {
            return;
        };
        let done: Vec<Outcome> = checks.results.try_iter().collect();
        for (id, result) in done {
            let Some((_, c)) = self.conns.get_mut(&id) else {
                continue;
            };
            let peer = c.peer;
            match result {
                Ok(identity) => {
                    debug!(
                        "ssl connection {id} from {peer}: {}{}",
                        identity.subject,
                        identity
                            .fingerprint_file
                            .as_ref()
                            .map(|p| format!(", fingerprint matches {}", p.display()))
                            .unwrap_or_default()
                    );
                    c.peer_name = identity.cn;
                    c.name_pending = false;
                    if let Some(t) = c.tls.as_mut() {
                        t.checked = true;
                    }
                    if self.refresh_interest(id) {
                        self.read_conn(id);
                    }
                }
                Err(e) => {
                    self.refuse_tls(peer, &e.to_string());
                    self.close_conn(id);
                }
            }
        }
    }

    /// An ssl connection whose peer failed the `ssl-check-host` name check, or that has
    /// no TLS setup: closed without a word to the peer, as Amanda does.
    pub(super) fn tls_refuse(&mut self, id: u64, why: &str) {
        let Some(peer) = self.conns.get(&id).map(|(_, c)| c.peer) else {
            return;
        };
        self.refuse_tls(peer, why);
        self.close_conn(id);
    }

    /// Counts an ssl refusal. Under inetd's `nowait` (one process per connection, which
    /// logs its start anyway) it is also logged at once, so the admin sees which check
    /// failed and which file to fix; standalone, refusals are summarised like the others
    /// (a flood of handshakes must not grow the log).
    pub(super) fn refuse_tls(&mut self, peer: SocketAddr, why: &str) {
        let line = format!("refused ssl connection from {peer}: {why}");
        if self.cfg.mode == super::Mode::InetdTcp {
            warn!("{line}");
        }
        self.refuse(Some(resolve::unmap(peer.ip())), Reason::Tls, || line);
    }
}

impl Conn {
    /// auth ssl: the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 14: a connection this host dialed is the server's when the certificate names
    // the configured server, whatever address (a proxy's) it has; another CN must resolve
    // to the peer as usual.
    #[test]
    fn a_dialed_connection_takes_the_configured_server_name_as_the_certificates_name() {
        let proxy: SocketAddr = "198.18.1.254:3128".parse().unwrap();
        assert_eq!(
            dialed_name_check("backup.example", "BACKUP.example", proxy),
            Ok(())
        );
        let e = dialed_name_check("backup.example", "other.invalid", proxy).unwrap_err();
        assert!(e.contains("other.invalid"), "{e}");
        // No configured name: only the usual resolution.
        assert!(dialed_name_check("", "", proxy).is_err());
    }
}
