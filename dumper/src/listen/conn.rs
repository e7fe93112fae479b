//! One connection to `dumper listen`, start to end: the peer's name (amandad's
//! forward-confirmed reverse lookup, its refusal frame when that fails), the first REQ
//! within the REQ timeout and its size bound, the intake's verdict (NAK texts of the real
//! amandad), then the service.
//!
//! The dispatch on the service is [`dispatch`]: one arm per service (`amdialin` is served
//! by `listen::dialin`, as are the dial-in sessions, recognised by their first frame).
//!
//! What this module must not do: accept connections or bound their number (the listener
//! does), or build reply bodies (see `ambackupd`).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::features::Features;
use proto::pkt::PacketType;
use proto::security::{Peer, PortRule, RefusalStyle, preread_refusal_frame};

use super::ambackupd::{self, Command, Refusal};
use super::backup::{self, BackupContext};
use super::control::{Control, Wire};
use super::intake::{self, Service, Verdict};
use crate::features::server_features;

/// The largest first frame a peer may send before it is authenticated (a REQ for these
/// services is a few hundred bytes).
pub const MAX_REQ_BYTES: usize = 64 * 1024;

/// How long a peer may take to ACK a reply, or to close the request's handle after it.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// What every connection of the listener shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Where configurations are (`/etc/amanda`).
    pub config_dir: PathBuf,
    /// The `.amandahosts` consulted.
    pub amandahosts: PathBuf,
    /// The user whose `.amandahosts` it is (owner check, default user column).
    pub login: String,
    /// Its uid.
    pub uid: u32,
    /// How long a new connection may take to send its REQ.
    pub req_timeout: Duration,
    /// amandad's forward-confirmed name check.
    pub dns_check: bool,
    /// INDEX bytes one dump may bring.
    pub max_index_bytes: u64,
    /// The dial-in service's rendezvous and heartbeat (issue 14).
    pub dialin: super::dialin::DialinShared,
    /// auth ssl: the TLS server setup; `None` for bsdtcp.
    pub tls: Option<Tls>,
    /// Keepalive of accepted connections (settings `heartbeat`).
    pub tuning: crate::net::Tuning,
}

/// auth ssl (spec §13): our certificate and the settings of the checks.
#[derive(Clone, Debug)]
pub struct Tls {
    /// rustls' server setup (client certificate required, signed by the Amanda CA).
    pub config: Arc<ssl::rustls::ServerConfig>,
    /// `ssl-*` settings.
    pub settings: Arc<conf::SslSettings>,
}

/// An ssl peer that passed the handshake and the certificate checks.
struct TlsPeer {
    stream: ssl::TlsStream<TcpStream>,
    /// The certificate's CN: the peer's name.
    cn: String,
    /// `ssl-check-certificate-host`: whether the CN resolves to the peer's address. Its
    /// failure refuses every service but `amdialin`, whose client's address is its NAT's
    /// or proxy's and whose CN is bound to the host it claims instead (issue 14).
    cn_resolves: Result<(), ssl::CheckFailure>,
}

/// Why an ssl connection is refused before its request (logged; Amanda sends nothing).
#[derive(Debug, thiserror::Error)]
enum TlsRefusal {
    /// `ssl-check-host`: the peer's address has no forward-confirmed name.
    #[error("ssl-check-host: {0}")]
    CheckHost(String),
    #[error("TLS setup: {0}")]
    Setup(io::Error),
    #[error("TLS: {0}")]
    Handshake(String),
    #[error("{0}")]
    Certificate(#[from] ssl::CheckFailure),
    #[error("the client certificate has no CN")]
    NoCn,
}

/// auth ssl, as amandad accepts it (spec §13.4): `ssl-check-host` (the name check), the
/// handshake within `wait`, then the certificate checks; the CN names the peer.
fn accept_tls(
    tls: &Tls,
    sock: TcpStream,
    peer: SocketAddr,
    named: &daemon::resolve::PeerName,
    wait: Duration,
) -> Result<TlsPeer, TlsRefusal> {
    if tls.settings.check_host
        && let Err(text) = &named.check
    {
        return Err(TlsRefusal::CheckHost(text.clone()));
    }
    let layer = ssl::TlsLayer::server(Arc::clone(&tls.config)).map_err(TlsRefusal::Setup)?;
    sock.set_read_timeout(Some(wait))
        .map_err(TlsRefusal::Setup)?;
    let mut stream = ssl::TlsStream::new(layer, sock);
    stream
        .handshake(std::time::Instant::now() + wait)
        .map_err(|e| TlsRefusal::Handshake(ssl::layer::describe_error(&e)))?;
    // The CN's resolution is judged once the service is known (above).
    let settings = conf::SslSettings {
        check_certificate_host: false,
        ..(*tls.settings).clone()
    };
    let check = ssl::Check {
        side: ssl::Side::Acceptor,
        settings: &settings,
        host: None,
        peer,
    };
    let id = ssl::check_peer(
        &check,
        stream.layer().peer_certificate(),
        &ssl::names::forward_confirm,
    )?;
    let cn = id.cn.ok_or(TlsRefusal::NoCn)?;
    let cn_resolves = if tls.settings.check_certificate_host {
        ssl::names::forward_confirm(&cn, peer).map_err(|reason| {
            ssl::CheckFailure::CnDoesNotResolve {
                cn: cn.clone(),
                peer,
                reason,
            }
        })
    } else {
        Ok(())
    };
    Ok(TlsPeer {
        stream,
        cn,
        cn_resolves,
    })
}

/// A connection that starts with a dial-in session's preamble (in clear, also on an ssl
/// listener): reads it and passes the socket to the worker waiting for its token.
fn hand_over_session(shared: &Shared, mut control: Control) {
    let peer = control.peer();
    if let Ok((h, p)) = control.read_frame(shared.req_timeout, MAX_REQ_BYTES, "preamble")
        && super::dialin::is_preamble(h, &p)
    {
        let (sock, _, _) = control.into_parts();
        super::dialin::session(&shared.dialin, sock, peer, &p);
    }
}

/// Serves one accepted connection. `authenticated` is called once the REQ passed the
/// checks (the listener stops counting the connection as one that may be evicted).
pub fn serve(shared: &Shared, sock: TcpStream, peer: SocketAddr, authenticated: &dyn Fn()) {
    // Keepalive: a BACKUP's connection may wait long for its client (see `backup`).
    shared.tuning.apply(socket2::SockRef::from(&sock));
    let ip = unmap(peer.ip());
    let named = daemon::resolve::system_lookup(shared.dns_check)(SocketAddr::new(ip, peer.port()));
    let mut cn_resolves = Ok(());
    let (mut control, name, rule) = match &shared.tls {
        None => {
            let mut control = Control::new(Wire::Plain(sock), peer);
            // issue 14: a dial-in session is admitted by its token, not by the name of the
            // NAT in front of its client.
            if named.check.is_err()
                && super::dialin::peek_preamble(control.socket(), super::dialin::PREAMBLE_PEEK)
            {
                return hand_over_session(shared, control);
            }
            if let Err(text) = &named.check {
                // amandad refuses such a peer before reading anything (spec §3.4).
                log::info!("{peer}: refused: {text}");
                let mut out = Vec::new();
                if preread_refusal_frame(text.as_bytes(), RefusalStyle::Amanda351, &mut out).is_ok()
                {
                    let _ = control.write_all(&out);
                }
                return;
            }
            (control, named.name.clone(), PortRule::Reserved)
        }
        Some(tls) => {
            // issue 14: a dial-in session's preamble comes in clear, before its TLS (whose
            // client is then the dumper worker the listener hands it to).
            if super::dialin::peek_preamble(&sock, super::dialin::PREAMBLE_PEEK) {
                return hand_over_session(shared, Control::new(Wire::Plain(sock), peer));
            }
            // Amanda sends nothing to a refused ssl peer; the log says why.
            match accept_tls(tls, sock, peer, &named, shared.req_timeout) {
                Ok(t) => {
                    cn_resolves = t.cn_resolves;
                    (
                        Control::new(Wire::Tls(Box::new(t.stream)), peer),
                        t.cn,
                        PortRule::Any,
                    )
                }
                Err(why) => {
                    log::info!("{peer}: ssl connection refused: {why}");
                    return;
                }
            }
        }
    };
    let named = daemon::resolve::PeerName {
        name,
        check: Ok(()),
    };
    let (handle, payload) = match control.read_frame(shared.req_timeout, MAX_REQ_BYTES, "REQ") {
        Ok(f) => f,
        Err(e) => {
            log::info!("{peer} ({}): closed: {e}", named.name);
            return;
        }
    };
    // issue 14: a dial-in session (for ssl, recognised before the handshake above).
    if shared.tls.is_none() && super::dialin::is_preamble(handle, &payload) {
        let (sock, _, _) = control.into_parts();
        return super::dialin::session(&shared.dialin, sock, peer, &payload);
    }
    let packet = match proto::tcp::Packet::parse(&payload) {
        Ok(p) => p,
        Err(e) => {
            log::info!("{peer}: closed: not a packet on handle {handle}: {e}");
            return;
        }
    };
    let hosts = |host: &str, addr: IpAddr, user: &str, service: &str| {
        let h = conf::amandahosts::load(&shared.amandahosts, shared.uid, &shared.login)
            .map_err(|p| p.refusal(host, user, service))?;
        intake::check_hosts(&h, host, addr, user, service)
    };
    let who = Peer {
        name: &named.name,
        port: peer.port(),
    };
    // A dial-in client has no reserved port (it runs as the Amanda user, often behind NAT).
    let dialin = super::dialin::is_dialin_request(&packet.body);
    let rule = if dialin { PortRule::Any } else { rule };
    if !dialin && let Err(why) = cn_resolves {
        log::info!("{peer}: ssl connection refused: {why}");
        return;
    }
    match intake::judge(who, ip, rule, &hosts, packet.ptype, &packet.body) {
        Verdict::Ignore(t) => log::info!("{peer}: closed: a {t} where a REQ was expected"),
        Verdict::Nak(body) => {
            log::info!(
                "{peer} ({}): NAK {}",
                named.name,
                String::from_utf8_lossy(&body).trim_end()
            );
            if control.send(handle, PacketType::Nak, &body).is_ok() {
                control.finish(handle, REPLY_WAIT);
            }
        }
        Verdict::Accept { service, args, .. } => {
            authenticated();
            if control.send(handle, PacketType::Ack, b"").is_err() {
                return;
            }
            log::info!("{peer} ({}): {}", named.name, service.name());
            dispatch(shared, service, &named.name, control, handle, args);
        }
    }
}

/// The services.
fn dispatch(
    shared: &Shared,
    service: Service,
    peer: &str,
    control: Control,
    handle: u32,
    args: &[u8],
) {
    match service {
        Service::Noop => reply(
            control,
            handle,
            &proto::options::noop_reply(&server_features()),
        ),
        Service::Ambackupd => ambackupd_service(shared, peer, control, handle, args),
        Service::Amdialin => {
            // auth ssl: the certificate's CN is the peer's name, and the only host it may
            // hold for.
            let cn = shared.tls.is_some().then_some(peer);
            super::dialin::hold(
                &shared.dialin,
                &shared.config_dir,
                control,
                handle,
                args,
                cn,
            )
        }
        // `intake::served` admits no other.
        other => log::warn!("{peer}: {other} is not served here"),
    }
}

/// Sends a REP, waits for its ACK and the close of the handle.
fn reply(mut control: Control, handle: u32, body: &[u8]) {
    if control.send(handle, PacketType::Rep, body).is_err() {
        return;
    }
    match control.read_packet(handle, REPLY_WAIT, MAX_REQ_BYTES, "ACK") {
        Ok((PacketType::Ack, _)) => control.finish(handle, REPLY_WAIT),
        Ok((t, _)) => log::info!("{}: a {t} instead of the ACK", control.peer()),
        Err(e) => log::info!("{}: no ACK: {e}", control.peer()),
    }
}

/// ambackupd: LISTDLE, CHECK, BACKUP (spec §14).
fn ambackupd_service(shared: &Shared, peer: &str, control: Control, handle: u32, args: &[u8]) {
    let refuse = |control: Control, r: &Refusal| {
        log::info!("{}: ambackupd: ERROR {r}", control.peer());
        reply(control, handle, &ambackupd::error_reply(r));
    };
    let request = match ambackupd::parse_request(args) {
        Ok(r) => r,
        Err(r) => return refuse(control, &r),
    };
    let Some(config) = request.config.as_deref() else {
        return refuse(control, &Refusal::NoConfig);
    };
    let plan = match crate::plan::load_in(&shared.config_dir, config) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{}: ambackupd: config {config}: {e}", control.peer());
            return refuse(control, &Refusal::ConfigErrors);
        }
    };
    let client: &Features = &request.features;
    let ours = server_features();
    let maxdumps = plan
        .hosts
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(peer))
        .map_or(1, |h| h.maxdumps);
    match &request.command {
        Command::ListDle => match ambackupd::application_dles(&plan, peer) {
            Ok(dles) => reply(control, handle, &ambackupd::listdle_reply(peer, &dles)),
            Err(r) => refuse(control, &r),
        },
        Command::Check => match ambackupd::application_dles(&plan, peer) {
            Ok(dles) => {
                let g = ambackupd::goptions(&ours, maxdumps, peer, config);
                reply(control, handle, &ambackupd::check_reply(&g, &dles, client));
            }
            Err(r) => refuse(control, &r),
        },
        Command::Backup(disk) => {
            let spec = match ambackupd::check_client(client)
                .and_then(|()| ambackupd::backup_dle(&plan, peer, disk))
            {
                Ok(s) => s,
                Err(r) => return refuse(control, &r),
            };
            let ctx = BackupContext {
                plan: &plan,
                peer,
                client,
                handle,
                max_index_bytes: shared.max_index_bytes,
            };
            // `backup` gives the connection back only when it refuses before the REP.
            let mut control = Some(control);
            if let Err(r) = backup::backup(&ctx, spec, &mut control)
                && let Some(c) = control
            {
                refuse(c, &r);
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address amandad prints.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
