//! The listener's `amdialin` service (issue 14; the protocol is `proto::dialin`): the HOLD
//! connection of a `dialin yes` client, and the SESSION connections it opens on request.
//!
//! HOLD: after the listener's checks (`.amandahosts` with the service `amdialin`, the
//! source port not required to be reserved: a client behind NAT or running as the Amanda
//! user has none), this module checks the configuration, that the host is in its disklist
//! and marked `dialin yes`, answers `OK HOLD heartbeat=<secs>`, binds the host's
//! rendezvous socket and then, until the client goes away or a newer HOLD for the host
//! replaces this one: sends `PING <n>` every heartbeat (3 unanswered: closed), and forwards
//! each worker's `OPEN <token>` (and the client's `FAILED <token> <why>` back to that
//! worker, so that a session refused by the client's proxy is named, not waited out). One
//! thread per HOLD (the listener's), asleep in `poll` between events.
//!
//! auth ssl: the HOLD runs inside TLS (the listener's server end, its certificate checks),
//! and the host it claims must be its certificate's CN ([`check_claim`]); a SESSION's
//! preamble comes in clear before its TLS, whose client is the worker.
//!
//! SESSION: a connection whose first frame is `AMDIALIN SESSION <token>` on handle 0 is
//! passed to the worker waiting for that token ([`crate::net::rendezvous::deliver`]); the
//! token, 128 random bits used once and bound to the HOLD's address, is what admits it.
//!
//! What this module must not do: accept connections or run the first checks (the listener
//! does, `listen::conn`), or speak to the client on the worker's behalf (after the
//! rendezvous the worker's requests go over the session exactly as over a connection it
//! opened).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proto::dialin::{self, HoldRequest, Line, SILENT_INTERVALS};
use proto::frame::{FrameReader, HEADER_LEN};
use proto::pkt::PacketType;

use super::control::Control;
use crate::net::rendezvous::{self, HostSocket, Rendezvous};

/// How long the client may take to ACK the HOLD's REP and close handle 1.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// Bytes a holder may have sent and we not yet decoded: its lines are a few bytes.
const MAX_PENDING: usize = 64 << 10;

/// Forwarded OPENs remembered for the client's `FAILED` (the oldest is forgotten first;
/// its worker then waits out the token's lifetime, as before issue 14's FAILED).
const MAX_FORWARDED: usize = 64;

/// How long a peer whose name check failed is watched for a session preamble before it
/// gets the refusal (a dial-in session needs no name: its token admits it).
pub const PREAMBLE_PEEK: Duration = Duration::from_secs(2);

/// What the service needs from the listener.
#[derive(Clone, Debug)]
pub struct DialinShared {
    /// `<run_dir>/dialin`.
    pub rendezvous: Rendezvous,
    /// The PING interval (`dumper.dialin_heartbeat_secs`).
    pub heartbeat: Duration,
}

impl DialinShared {
    /// From amanda-rs's settings.
    pub fn from_settings(s: &conf::Settings) -> DialinShared {
        DialinShared {
            rendezvous: Rendezvous::new(&s.run_dir),
            heartbeat: Duration::from_secs(s.dumper.dialin_heartbeat_secs),
        }
    }
}

/// Whether a REQ body asks for `amdialin` (its source port is then not required to be
/// reserved: the client dials out from wherever it is).
pub fn is_dialin_request(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n')
        .take(3)
        .any(|l| l == format!("SERVICE {}", dialin::SERVICE).as_bytes())
}

/// Whether `payload` on `handle` is a session preamble.
pub fn is_preamble(handle: u32, payload: &[u8]) -> bool {
    handle == dialin::SESSION_HANDLE && payload.starts_with(b"AMDIALIN SESSION ")
}

/// Looks, for up to `wait`, whether the connection starts with a session preamble (without
/// consuming anything). Answers as soon as the first bytes cannot start one (a TLS
/// ClientHello, a REQ on handle 1), so only a peer that sends too little waits it out.
pub fn peek_preamble(sock: &TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = sock.set_read_timeout(Some(deadline - now));
        match sock.peek(&mut buf) {
            Ok(0) => return false,
            Ok(n) => match preamble_prefix(&buf[..n]) {
                Some(verdict) => {
                    let _ = sock.set_read_timeout(None);
                    return verdict;
                }
                // Fewer bytes than a preamble's start: wait for more (peek returns at once
                // while the bytes are there, so sleep a little between looks).
                None => std::thread::sleep(Duration::from_millis(20)),
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Whether `bytes`, the start of a connection, is a session preamble's start: `None` while
/// they are too few to tell.
fn preamble_prefix(bytes: &[u8]) -> Option<bool> {
    const PREFIX: &[u8] = b"AMDIALIN SESSION ";
    let handle = dialin::SESSION_HANDLE.to_be_bytes();
    // The frame's length (4 bytes) says nothing; its handle and text do.
    let have = bytes.len().min(HEADER_LEN + PREFIX.len());
    for (i, &b) in bytes[..have].iter().enumerate().skip(4) {
        let want = if i < HEADER_LEN {
            handle[i - 4]
        } else {
            PREFIX[i - HEADER_LEN]
        };
        if b != want {
            return Some(false);
        }
    }
    (have == HEADER_LEN + PREFIX.len()).then_some(true)
}

/// A SESSION connection: hands it to the worker waiting for its token.
pub fn session(d: &DialinShared, sock: TcpStream, peer: SocketAddr, payload: &[u8]) {
    let token = match dialin::parse_session_preamble(payload) {
        Ok(t) => t,
        Err(e) => {
            log::info!("{peer}: closed: {e}");
            return;
        }
    };
    match rendezvous::deliver(&d.rendezvous, token, &sock) {
        Ok(()) => log::debug!("{peer}: dial-in session {token} passed to its worker"),
        // Unknown, used or expired: nobody is waiting for it.
        Err(e) => log::info!("{peer}: dial-in session {token} refused: {e}"),
    }
}

/// Why a HOLD is refused: its text is the REP's `ERROR` line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum HoldRefusal {
    /// auth ssl: the certificate names another host than `hostname=`.
    #[error(
        "the certificate of {cn} may not hold the dial-in connection of {claimed} (auth ssl: the certificate's CN must be the host name the client gives as hostname=)"
    )]
    NotItsCertificate { cn: String, claimed: String },
    /// The configuration does not load (the details go to the log only, as amandad's).
    #[error("configuration errors; aborting connection")]
    Config,
    /// The host is not in the disklist (ambackupd's text).
    #[error("No host '{0}'")]
    NoHost(String),
    /// None of the host's DLEs is `dialin yes`.
    #[error(
        "{host} is not marked dial-in in {disklist} / {conf} (dumptype parameter `dialin yes`)"
    )]
    NotDialin {
        host: String,
        disklist: String,
        conf: String,
    },
}

/// auth ssl (issue 14): a client may hold only for the host its certificate names (`cn`, the
/// CN the ssl checks accepted), so a valid certificate of one host cannot take over
/// another's nights. bsdtcp (`None`) has no such binding: its claim is checked against
/// `.amandahosts` of the peer's address only.
fn check_claim(cn: Option<&str>, claimed: &str) -> Result<(), HoldRefusal> {
    match cn {
        Some(cn) if !cn.eq_ignore_ascii_case(claimed) => Err(HoldRefusal::NotItsCertificate {
            cn: cn.to_string(),
            claimed: claimed.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The disklist checks of a HOLD, in order: the configuration, the host, its mark; the
/// host as the disklist spells it.
fn check_host(config_dir: &std::path::Path, req: &HoldRequest) -> Result<String, HoldRefusal> {
    let plan = crate::plan::load_in(config_dir, &req.config).map_err(|e| {
        log::warn!("amdialin: config {}: {e}", req.config);
        HoldRefusal::Config
    })?;
    let host = &req.hostname;
    let dles: Vec<_> = plan
        .dles
        .iter()
        .filter(|d| d.host.eq_ignore_ascii_case(host))
        .collect();
    if dles.is_empty() {
        return Err(HoldRefusal::NoHost(host.clone()));
    }
    if !dles.iter().any(|d| d.dialin) {
        return Err(HoldRefusal::NotDialin {
            host: host.clone(),
            disklist: plan.config.diskfile_path().display().to_string(),
            conf: plan.conf_path.display().to_string(),
        });
    }
    // The disklist's spelling names the rendezvous socket the workers look for.
    Ok(dles[0].host.clone())
}

/// The HOLD service: checks, then holds the connection (see the module docs).
pub fn hold(
    d: &DialinShared,
    config_dir: &std::path::Path,
    mut control: Control,
    handle: u32,
    args: &[u8],
    cn: Option<&str>,
) {
    let peer = control.peer();
    let refuse = |mut control: Control, text: &str| {
        log::info!("{peer}: amdialin: ERROR {text}");
        let body = format!("ERROR {text}\n");
        if control
            .send(handle, PacketType::Rep, body.as_bytes())
            .is_ok()
        {
            let _ = control.read_packet(handle, REPLY_WAIT, 1024, "ACK");
            control.finish(handle, REPLY_WAIT);
        }
    };
    let req = match HoldRequest::parse(args) {
        Ok(r) => r,
        Err(e) => return refuse(control, &e.to_string()),
    };
    if let Err(r) = check_claim(cn, &req.hostname) {
        return refuse(control, &r.to_string());
    }
    let host = match check_host(config_dir, &req) {
        Ok(h) => h,
        Err(r) => return refuse(control, &r.to_string()),
    };
    let holder = match HostSocket::bind(&d.rendezvous, &host) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("{peer}: amdialin: {e}");
            return refuse(
                control,
                "the dial-in rendezvous of the server failed (see its log)",
            );
        }
    };
    if control
        .send(handle, PacketType::Rep, &dialin::hold_ok(d.heartbeat))
        .is_err()
    {
        return;
    }
    match control.read_packet(handle, REPLY_WAIT, 1024, "ACK") {
        Ok((PacketType::Ack, _)) => {}
        other => {
            log::info!("{peer}: amdialin: no ACK of the HOLD: {other:?}");
            return;
        }
    }
    // The client closes handle 1 after its ACK; ours answers it.
    loop {
        match control.read_frame(REPLY_WAIT, 1024, "close") {
            Ok((h, p)) if h == handle && p.is_empty() => break,
            Ok(_) => {}
            Err(e) => {
                log::info!("{peer}: amdialin: {e}");
                return;
            }
        }
    }
    if control.close_handle(handle).is_err() {
        return;
    }
    log::info!(
        "{peer}: holding the dial-in connection of {host} (config {})",
        req.config
    );
    let (sock, tls, pending) = control.into_parts();
    let wire = HoldWire { sock, tls };
    let reason = hold_loop(d, &holder, wire, peer.ip(), &pending);
    log::info!("{peer}: the dial-in connection of {host} ended: {reason}");
}

/// PINGs, PONGs and OPENs until the connection ends; returns why it ended.
fn hold_loop(
    d: &DialinShared,
    holder: &HostSocket,
    mut wire: HoldWire,
    client: IpAddr,
    pending: &[u8],
) -> String {
    let _ = wire.sock.set_nonblocking(true);
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let mut input: Vec<u8> = pending.to_vec();
    let mut n: u64 = 0;
    let mut unanswered: u32 = 0;
    let mut next_ping = Instant::now() + d.heartbeat;
    // issue 14: the OPENs whose worker waits, so the client's FAILED reaches it.
    let mut forwarded: std::collections::VecDeque<rendezvous::Forwarded> = Default::default();
    // TLS may hold plaintext already (read with the HOLD's close): read before any poll.
    let mut drain = wire.tls.is_some();
    loop {
        // What the client sent.
        let mut rest = &input[..];
        loop {
            match reader.next(&mut rest) {
                Ok(Some(f)) if f.handle == dialin::LINE_HANDLE => match Line::parse(&f.payload) {
                    Ok(Line::Pong(_)) => unanswered = 0,
                    // Logged only for a token we forwarded: the client cannot fill the log.
                    Ok(Line::Failed(token, text)) => {
                        match forwarded
                            .iter()
                            .position(|f| f.token == token)
                            .and_then(|i| forwarded.remove(i))
                        {
                            Some(f) => {
                                log::info!(
                                    "dial-in session {token}: the client could not open it: {text}"
                                );
                                f.failed(&text);
                            }
                            None => log::debug!("FAILED for unknown session {token}"),
                        }
                    }
                    Ok(other) => return format!("unexpected {other:?} from the client"),
                    Err(e) => return e.to_string(),
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return format!("bad frame: {e}"),
            }
        }
        input.clear();
        if reader.buffered() > MAX_PENDING {
            return format!("more than {MAX_PENDING} bytes of an unfinished frame");
        }
        let now = Instant::now();
        if now >= next_ping {
            if holder.replaced() {
                return "a newer HOLD connection of the host replaced it".into();
            }
            if unanswered >= SILENT_INTERVALS {
                return format!("{unanswered} PINGs unanswered");
            }
            n += 1;
            unanswered += 1;
            if let Err(e) = wire.write_line(Line::Ping(n)) {
                return format!("write: {e}");
            }
            next_ping = now + d.heartbeat;
            continue;
        }
        let wait = next_ping - now;
        let (tcp_ready, unix_ready) = {
            let mut fds = [
                PollFd::new(wire.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(holder.as_fd(), PollFlags::POLLIN),
            ];
            let ms = if drain {
                0
            } else {
                u16::try_from(wait.as_millis().clamp(1, 60_000)).unwrap_or(60_000)
            };
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return format!("poll: {e}"),
            }
            let ready = |f: &PollFd<'_>| {
                f.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            (ready(&fds[0]), ready(&fds[1]))
        };
        if tcp_ready || std::mem::take(&mut drain) {
            // Until the socket has no more: TLS may hold plaintext the poll cannot see.
            loop {
                match wire.read(&mut buf) {
                    Ok(0) => return "closed by the client".into(),
                    Ok(k) => input.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return format!("read: {e}"),
                }
                if input.len() > MAX_PENDING {
                    break;
                }
            }
        }
        if unix_ready {
            while let Some(req) = holder.next_request() {
                let token = req.token;
                match wire.write_line(Line::Open(token)) {
                    Ok(()) => {
                        let now = Instant::now();
                        forwarded.retain(|f| !f.expired(now));
                        if forwarded.len() >= MAX_FORWARDED {
                            forwarded.pop_front();
                        }
                        forwarded.push_back(req.forwarded(client));
                    }
                    Err(e) => {
                        req.refuse("the dial-in connection broke");
                        return format!("write: {e}");
                    }
                }
            }
        }
    }
}

/// The held connection: its non-blocking socket, and its TLS layer for auth ssl.
struct HoldWire {
    sock: TcpStream,
    tls: Option<ssl::TlsLayer>,
}

impl HoldWire {
    /// Plaintext from the client; `WouldBlock` when there is no more now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.sock.read(buf),
            Some(t) => {
                let r = t.read(&mut self.sock, buf);
                if t.wants_write() {
                    let _ = t.flush(&mut self.sock);
                }
                r
            }
        }
    }

    fn write_line(&mut self, line: Line) -> io::Result<()> {
        let bytes = line.frame();
        let until = Instant::now() + REPLY_WAIT;
        // The socket is non-blocking (for the poll): a full send buffer is waited out here,
        // within the write deadline.
        let wait = |e: io::Error| {
            if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
                Ok(())
            } else if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        };
        let mut at = 0;
        while at < bytes.len() {
            let wrote = match &mut self.tls {
                None => self.sock.write(&bytes[at..]),
                Some(t) => t.write_frames(&bytes[at..]),
            };
            match wrote {
                Ok(0) if self.tls.is_none() => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => at += k,
                Err(e) => wait(e)?,
            }
            self.flush(&wait)?;
        }
        Ok(())
    }

    /// Writes what the TLS layer holds.
    fn flush(&mut self, wait: &dyn Fn(io::Error) -> io::Result<()>) -> io::Result<()> {
        let Some(t) = &mut self.tls else {
            return Ok(());
        };
        loop {
            match t.flush(&mut self.sock) {
                Ok(true) => return Ok(()),
                Ok(false) => wait(io::ErrorKind::WouldBlock.into())?,
                Err(e) => wait(e)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &std::path::Path) {
        let dir = root.join("Daily");
        std::fs::create_dir_all(dir.join("holding")).unwrap();
        let conf = format!(
            "org \"t\"\ndumpuser \"backup\"\ndefine holdingdisk hd1 {{\n    directory \"{}\"\n}}\nholdingdisk \"hd1\"\n\
             define dumptype lan {{\n    auth \"bsdtcp\"\n    program \"GNUTAR\"\n}}\n\
             define dumptype nat {{\n    lan\n    dialin yes\n}}\n",
            dir.join("holding").display()
        );
        std::fs::write(dir.join("amanda.conf"), conf).unwrap();
        std::fs::write(dir.join("disklist"), "natclient /a nat\nlanclient /a lan\n").unwrap();
    }

    fn req(host: &str, config: &str) -> HoldRequest {
        HoldRequest {
            features: String::new(),
            hostname: host.into(),
            config: config.into(),
        }
    }

    // issue 14: a HOLD is refused, with a text naming why, for a configuration that does not
    // load, a host not in the disklist, and a host not marked dial-in.
    #[test]
    fn hold_checks_the_config_the_disklist_and_the_dialin_mark_in_order() {
        let t = tempfile::tempdir().unwrap();
        config(t.path());
        assert_eq!(
            check_host(t.path(), &req("NATCLIENT", "Daily")),
            Ok("natclient".to_string())
        );
        let text = |host, config| {
            check_host(t.path(), &req(host, config))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            text("natclient", "Nope"),
            "configuration errors; aborting connection"
        );
        assert_eq!(text("stranger", "Daily"), "No host 'stranger'");
        let e = text("lanclient", "Daily");
        assert!(
            e.starts_with("lanclient is not marked dial-in in ") && e.contains("dialin yes"),
            "{e}"
        );
    }

    // issue 14: over auth ssl a certificate holds only for the host it names; bsdtcp has no
    // certificate to bind the claim to.
    #[test]
    fn an_ssl_hold_for_another_host_than_the_certificates_is_refused() {
        assert_eq!(check_claim(Some("natclient"), "NatClient"), Ok(()));
        let e = check_claim(Some("otherclient"), "natclient")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "the certificate of otherclient may not hold the dial-in connection of natclient"
            ),
            "{e}"
        );
        assert_eq!(check_claim(None, "natclient"), Ok(()));
    }

    // issue 14: the listener tells a session preamble from a TLS ClientHello or a REQ by the
    // first bytes, without waiting for more than it needs.
    #[test]
    fn a_preamble_is_told_from_tls_and_requests_by_its_first_bytes() {
        let token = dialin::Token([7; 16]);
        let pre = dialin::session_preamble(token);
        assert_eq!(preamble_prefix(&pre), Some(true));
        assert_eq!(preamble_prefix(&pre[..HEADER_LEN + 3]), None);
        assert_eq!(preamble_prefix(&pre[..3]), None);
        // A ClientHello: a handshake record whose bytes 4.. are no handle 0.
        assert_eq!(
            preamble_prefix(&[0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4]),
            Some(false)
        );
        let mut req = Vec::new();
        proto::frame::encode_frame(1, b"SECURITY USER backup\n", &mut req).unwrap();
        assert_eq!(preamble_prefix(&req), Some(false));
        let mut other = Vec::new();
        proto::frame::encode_frame(0, b"AMDIALIN HOLD x", &mut other).unwrap();
        assert_eq!(preamble_prefix(&other), Some(false));
    }

    #[test]
    fn only_an_amdialin_request_and_a_handle_0_preamble_are_recognised() {
        assert!(is_dialin_request(
            b"SECURITY USER backup\nSERVICE amdialin\nOPTIONS x;\n"
        ));
        assert!(!is_dialin_request(
            b"SECURITY USER backup\nSERVICE ambackupd\n"
        ));
        assert!(!is_dialin_request(
            b"SECURITY USER backup\nSERVICE amdialinx\n"
        ));
        assert!(is_preamble(0, b"AMDIALIN SESSION 00\n"));
        assert!(!is_preamble(1, b"AMDIALIN SESSION 00\n"));
        assert!(!is_preamble(0, b"SERVICE noop\n"));
    }

    // issue 14: the client's FAILED for a session it was asked for ends that worker's wait
    // with the client's words; FAILED lines for tokens nobody asked for (a hostile or
    // confused client) change nothing and keep the HOLD up.
    #[test]
    fn a_failed_session_reaches_its_worker_and_unknown_ones_are_dropped() {
        let t = tempfile::tempdir().unwrap();
        let d = DialinShared {
            rendezvous: Rendezvous::new(t.path()),
            heartbeat: Duration::from_secs(60),
        };
        let holder = HostSocket::bind(&d.rendezvous, "natclient").unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (sock, peer) = l.accept().unwrap();
        let r = d.rendezvous.clone();
        let hold = std::thread::spawn(move || {
            hold_loop(&d, &holder, HoldWire { sock, tls: None }, peer.ip(), &[])
        });
        for i in 0..1000 {
            let stray = Line::Failed(dialin::Token([i as u8; 16]), "x".repeat(600));
            client.write_all(&stray.frame()).unwrap();
        }
        let worker = std::thread::spawn(move || {
            rendezvous::obtain(&r, "natclient", Duration::from_secs(20))
        });
        // The OPEN, then our FAILED for it.
        let mut reader = FrameReader::new();
        let mut buf = [0u8; 256];
        let token = loop {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "the HOLD ended");
            let mut input = &buf[..n];
            if let Some(f) = reader.next(&mut input).unwrap() {
                match Line::parse(&f.payload).unwrap() {
                    Line::Open(t) => break t,
                    other => panic!("{other:?}"),
                }
            }
        };
        let why = "through HTTP proxy p:3128: \"HTTP/1.1 403 Forbidden\"";
        client
            .write_all(&Line::Failed(token, why.into()).frame())
            .unwrap();
        let e = worker.join().unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("natclient: the client could not open the dial-in session: {why}")
        );
        drop(client);
        assert_eq!(hold.join().unwrap(), "closed by the client");
    }
}
