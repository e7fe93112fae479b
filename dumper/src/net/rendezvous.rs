//! The dial-in rendezvous on the server host (issue 14): how a `dumper run` worker gets a
//! connection to a `dialin yes` client from the listener process that holds the client's
//! HOLD connection, when that listener may be an inetd child of its own.
//!
//! Unix sockets under `<run_dir>/dialin/` (mode 0700, the dumpuser's):
//! - `hosts/<host>.sock`, bound by the holder ([`HostSocket`]). A worker connects and
//!   writes `OPEN <token>\n`; the holder forwards it on the HOLD connection and answers
//!   `OK <client address>\n` (or `ERROR <text>\n`). When the client then reports on the
//!   HOLD that it could not open the session (`FAILED`, e.g. its proxy refused), the holder
//!   writes `FAILED <text>\n` on the same socket and the worker stops waiting (issue 14).
//! - `sessions/<token>.sock`, bound by the waiting worker ([`obtain`]). The listener
//!   process that receives `AMDIALIN SESSION <token>` connects to it and passes the TCP
//!   socket with SCM_RIGHTS ([`deliver`]), then closes its copy.
//!
//! A token is 128 random bits, used once: the worker removes its socket when it has a
//! connection or gives up, and takes only a connection from the address the holder named.
//! Host names and tokens are checked as file names before any path is built.
//!
//! What this module must not do: speak the Amanda protocol (the worker's requests go over
//! the connection exactly as over one it opened), or wait without a deadline.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use proto::dialin::{self, Token};

/// How long a token stays valid: the worker waits this long for the session after the
/// holder forwarded its OPEN.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How often a worker looks again for a holder that is not there yet.
const HOLDER_POLL: Duration = Duration::from_millis(500);

/// How long either side of a rendezvous socket may take for its one line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no connection to a dial-in client was had.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// Nobody held a connection for the host within the wait.
    #[error(
        "{host}: no dial-in connection from the client (is amandad --dial-out running there?) within {} s (dumper.dialin_wait_secs)",
        .waited.as_secs()
    )]
    NoHolder {
        /// The disklist's name.
        host: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The holder forwarded the OPEN but no session came within the token's lifetime.
    #[error(
        "{host}: the client did not open the session it was asked for within {} s",
        .waited.as_secs()
    )]
    NoSession {
        /// The disklist's name.
        host: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The client could not open the session (its words, as the holder passed them on:
    /// a proxy's refusal, a connect error).
    #[error("{host}: the client could not open the dial-in session: {text}")]
    SessionFailed {
        /// The disklist's name.
        host: String,
        /// The client's reason.
        text: String,
    },
    /// The holder refused (its text).
    #[error("{host}: the dial-in listener refused: {text}")]
    Refused {
        /// The disklist's name.
        host: String,
        /// The holder's answer.
        text: String,
    },
    /// A name that cannot be a file name.
    #[error("{0:?} cannot name a dial-in socket (a host name without '/' or leading '.')")]
    BadName(String),
    /// The rendezvous directory or a socket failed.
    #[error("dial-in rendezvous {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RendezvousError + '_ {
    move |source| RendezvousError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<run_dir>/dialin` and its two subdirectories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    dir: PathBuf,
}

impl Rendezvous {
    /// The rendezvous of amanda-rs's `run_dir` (made on first use).
    pub fn new(run_dir: &Path) -> Rendezvous {
        Rendezvous {
            dir: run_dir.join("dialin"),
        }
    }

    fn subdir(&self, name: &str) -> Result<PathBuf, RendezvousError> {
        let d = self.dir.join(name);
        for p in [&self.dir, &d] {
            match std::fs::DirBuilder::new().mode(0o700).create(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_at(p)(e)),
            }
            // Someone else's directory, or one others may write in, could hand us their
            // sockets: refuse it rather than use it.
            let m = std::fs::symlink_metadata(p).map_err(io_at(p))?;
            if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
                return Err(io_at(p)(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "not a directory of ours that only we may write (mode 0700 expected)",
                )));
            }
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            }
        }
        Ok(d)
    }

    fn host_path(&self, host: &str) -> Result<PathBuf, RendezvousError> {
        if !dialin::is_safe_host_name(host) {
            return Err(RendezvousError::BadName(host.to_string()));
        }
        // One socket per host, whatever the case the disklist and the client wrote it in.
        Ok(self
            .subdir("hosts")?
            .join(format!("{}.sock", host.to_ascii_lowercase())))
    }

    fn session_path(&self, token: Token) -> Result<PathBuf, RendezvousError> {
        Ok(self.subdir("sessions")?.join(format!("{token}.sock")))
    }
}

/// A fresh random token.
pub fn new_token() -> io::Result<Token> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(Token(b))
}

/// The holder's end: `hosts/<host>.sock`, bound while a HOLD connection for the host is up.
pub struct HostSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

/// A worker's request that the holder is to forward.
pub struct OpenRequest {
    /// The token to send as `OPEN <token>`.
    pub token: Token,
    stream: UnixStream,
}

impl OpenRequest {
    /// Tells the worker the OPEN went out and from which address the session must come;
    /// the worker still listens, for [`Forwarded::failed`].
    pub fn forwarded(mut self, client: IpAddr) -> Forwarded {
        let _ = self.stream.write_all(format!("OK {client}\n").as_bytes());
        Forwarded {
            token: self.token,
            stream: self.stream,
            at: Instant::now(),
        }
    }

    /// Tells the worker why not.
    pub fn refuse(mut self, text: &str) {
        let _ = self.stream.write_all(format!("ERROR {text}\n").as_bytes());
    }
}

/// An OPEN the holder forwarded, whose worker may still be told that the client could
/// not open the session.
pub struct Forwarded {
    /// The session's token.
    pub token: Token,
    stream: UnixStream,
    /// When it was forwarded (the worker waits [`TOKEN_LIFETIME`] at most).
    pub at: Instant,
}

impl Forwarded {
    /// Tells the worker the client's reason (already one sanitized line).
    pub fn failed(mut self, text: &str) {
        let text = dialin::failure_text(text.as_bytes());
        let _ = self.stream.write_all(format!("FAILED {text}\n").as_bytes());
    }

    /// Whether the worker can no longer be waiting for it.
    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) > TOKEN_LIFETIME
    }
}

impl HostSocket {
    /// Binds the host's socket, replacing an older holder's (a newer HOLD for the same host
    /// wins; the older notices with [`HostSocket::replaced`]).
    pub fn bind(r: &Rendezvous, host: &str) -> Result<HostSocket, RendezvousError> {
        let path = r.host_path(host)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io_at(&path))?;
        listener.set_nonblocking(true).map_err(io_at(&path))?;
        let m = std::fs::metadata(&path).map_err(io_at(&path))?;
        Ok(HostSocket {
            listener,
            ino: (m.dev(), m.ino()),
            path,
        })
    }

    /// Whether another holder has bound the host's socket since (then this one should
    /// close its HOLD connection).
    pub fn replaced(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != self.ino)
    }

    /// The next worker's request, if one is waiting (never blocks for long: a worker that
    /// connects and says nothing is dropped after [`LINE_TIMEOUT`]).
    pub fn next_request(&self) -> Option<OpenRequest> {
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(LINE_TIMEOUT));
            let _ = stream.set_write_timeout(Some(LINE_TIMEOUT));
            let line = read_line(&stream, dialin::MAX_LINE);
            let token = line
                .as_deref()
                .and_then(|l| l.strip_prefix("OPEN "))
                .and_then(|t| Token::parse(t.as_bytes()));
            match token {
                Some(token) => return Some(OpenRequest { token, stream }),
                None => log::debug!("dial-in rendezvous {}: bad request", self.path.display()),
            }
        }
    }
}

/// The listening socket, for a poll loop (readable: a worker is waiting).
impl std::os::fd::AsFd for HostSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for HostSocket {
    fn drop(&mut self) {
        // Only our own socket: a newer holder's stays.
        if !self.replaced() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One line of at most `max` bytes, without its newline.
fn read_line(mut s: &UnixStream, max: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() <= max {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    None
}

/// The listener's end: passes a session connection that announced `token` to the worker
/// waiting for it. Errors name the token's socket (no worker waits for it: unknown,
/// used or expired).
pub fn deliver(r: &Rendezvous, token: Token, stream: &TcpStream) -> Result<(), RendezvousError> {
    let path = r.session_path(token)?;
    let unix = UnixStream::connect(&path).map_err(io_at(&path))?;
    let _ = unix.set_write_timeout(Some(LINE_TIMEOUT));
    let fds = [stream.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"S")];
    sendmsg::<()>(unix.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| io_at(&path)(e.into()))?;
    Ok(())
}

/// Receives one TCP socket passed over `unix`.
fn receive_fd(unix: &UnixStream) -> io::Result<TcpStream> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        unix.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    let fd = got.ok_or_else(|| io::Error::other("no descriptor passed"))?;
    let stream = TcpStream::from(fd);
    // A descriptor that is not a connected TCP socket has no TCP peer.
    stream.peer_addr()?;
    Ok(stream)
}

/// Removes the session socket when the worker is done with it, however it ends.
struct SessionSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for SessionSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The worker's end: asks the holder of `host` for a session and waits for it, at most
/// `wait` for a holder to appear (`dumper.dialin_wait_secs`), then [`TOKEN_LIFETIME`] for
/// the session, asking again (with a new token) while the overall wait lasts.
pub fn obtain(r: &Rendezvous, host: &str, wait: Duration) -> Result<TcpStream, RendezvousError> {
    let started = Instant::now();
    let deadline = started + wait;
    let host_path = r.host_path(host)?;
    loop {
        let token = new_token().map_err(io_at(Path::new("/dev/urandom")))?;
        let path = r.session_path(token)?;
        let session = SessionSocket {
            listener: UnixListener::bind(&path).map_err(io_at(&path))?,
            path,
        };
        // Ask the holder (waiting for one to appear).
        let (client, holder) = loop {
            match ask_holder(&host_path, token) {
                Ok(HolderAnswer::Forwarded(client, holder)) => break (client, holder),
                Ok(HolderAnswer::Refused(text)) => {
                    return Err(RendezvousError::Refused {
                        host: host.to_string(),
                        text,
                    });
                }
                Err(_) if Instant::now() + HOLDER_POLL < deadline => {
                    std::thread::sleep(HOLDER_POLL)
                }
                Err(_) => {
                    return Err(RendezvousError::NoHolder {
                        host: host.to_string(),
                        waited: started.elapsed(),
                    });
                }
            }
        };
        let asked = Instant::now();
        match wait_session(&session, client, holder, asked + TOKEN_LIFETIME) {
            Waited::Session(s) => return Ok(s),
            Waited::Failed(text) => {
                return Err(RendezvousError::SessionFailed {
                    host: host.to_string(),
                    text,
                });
            }
            Waited::Nothing if Instant::now() < deadline => {
                log::warn!(
                    "{host}: the dial-in client did not open session {token} within {} s; asking again",
                    TOKEN_LIFETIME.as_secs()
                );
            }
            Waited::Nothing => {
                return Err(RendezvousError::NoSession {
                    host: host.to_string(),
                    waited: asked.elapsed(),
                });
            }
        }
    }
}

/// What the holder of a host said to an `OPEN`.
enum HolderAnswer {
    /// Forwarded to the client at this address; the socket carries a later `FAILED`.
    Forwarded(IpAddr, UnixStream),
    /// Refused, with its text.
    Refused(String),
}

/// The holder's answer to `OPEN token`; `Err` when there is no holder.
fn ask_holder(path: &Path, token: Token) -> io::Result<HolderAnswer> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(LINE_TIMEOUT))?;
    s.set_write_timeout(Some(LINE_TIMEOUT))?;
    s.write_all(format!("OPEN {token}\n").as_bytes())?;
    let line = read_line(&s, dialin::MAX_LINE)
        .ok_or_else(|| io::Error::other("no answer from the holder"))?;
    if let Some(addr) = line.strip_prefix("OK ") {
        return addr
            .parse()
            .map(|a| HolderAnswer::Forwarded(a, s))
            .map_err(|_| io::Error::other("bad answer from the holder"));
    }
    Ok(HolderAnswer::Refused(
        line.strip_prefix("ERROR ").unwrap_or(&line).to_string(),
    ))
}

/// What came while a worker waited for its session.
enum Waited {
    Session(TcpStream),
    /// The holder passed on the client's `FAILED` (its text).
    Failed(String),
    Nothing,
}

/// The first connection passed to `session` from `client` before `until`, unless the
/// holder says first (on `holder`, the socket the OPEN went out on) that the client could
/// not open it.
fn wait_session(
    session: &SessionSocket,
    client: IpAddr,
    holder: UnixStream,
    until: Instant,
) -> Waited {
    let _ = session.listener.set_nonblocking(true);
    // Listened to until it says something or closes (a holder that ends says nothing).
    let mut holder = Some(holder);
    loop {
        let now = Instant::now();
        if now >= until {
            return Waited::Nothing;
        }
        let ms = (until - now).as_millis().min(1000) as u16;
        let holder_said = {
            let mut fds = vec![nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&session.listener),
                nix::poll::PollFlags::POLLIN,
            )];
            if let Some(h) = &holder {
                fds.push(nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(h),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            fds.get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        if holder_said {
            let line = holder
                .take()
                .and_then(|h| read_line(&h, dialin::MAX_FAILED_LINE + 16));
            if let Some(text) = line.as_deref().and_then(|l| l.strip_prefix("FAILED ")) {
                return Waited::Failed(dialin::failure_text(text.as_bytes()));
            }
        }
        let Ok((unix, _)) = session.listener.accept() else {
            continue;
        };
        let _ = unix.set_nonblocking(false);
        let _ = unix.set_read_timeout(Some(LINE_TIMEOUT));
        match receive_fd(&unix) {
            Ok(s) => {
                let from = s.peer_addr().map(|a| unmap(a.ip()));
                if from.as_ref().is_ok_and(|ip| *ip == unmap(client)) {
                    let _ = s.set_nonblocking(false);
                    return Waited::Session(s);
                }
                log::warn!(
                    "dial-in session from {from:?} refused: its HOLD connection came from {client}"
                );
            }
            Err(e) => log::debug!("dial-in session: {e}"),
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn rendezvous() -> (tempfile::TempDir, Rendezvous) {
        let d = tempfile::tempdir().unwrap();
        let r = Rendezvous::new(d.path());
        (d, r)
    }

    /// What the hold thread's loop does: polls until a worker's request comes.
    fn first_request(holder: &HostSocket) -> OpenRequest {
        loop {
            if let Some(q) = holder.next_request() {
                return q;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // issue 14: a worker's OPEN reaches the holder, and the session the listener receives
    // reaches the worker as a working TCP socket.
    #[test]
    fn a_worker_gets_the_session_the_holder_was_asked_for() {
        let (_d, r) = rendezvous();
        let holder = HostSocket::bind(&r, "Client.Example").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let r2 = r.clone();
        let worker =
            std::thread::spawn(move || obtain(&r2, "client.example", Duration::from_secs(10)));
        // The holder: forward, then "the client" opens the session and the listener
        // delivers it.
        let req = first_request(&holder);
        let token = req.token;
        req.forwarded("127.0.0.1".parse().unwrap());
        let mut client_side = TcpStream::connect(addr).unwrap();
        let (server_side, _) = tcp.accept().unwrap();
        deliver(&r, token, &server_side).unwrap();
        drop(server_side);
        let mut got = worker.join().unwrap().unwrap();
        client_side.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        // Used once: the token's socket is gone.
        assert!(deliver(&r, token, &got).is_err());
    }

    // issue 14: the client's FAILED, passed on by the holder, ends the worker's wait at
    // once with the client's words (one sanitized line).
    #[test]
    fn a_session_the_client_could_not_open_is_named_not_waited_out() {
        let (_d, r) = rendezvous();
        let holder = HostSocket::bind(&r, "client.example").unwrap();
        let r2 = r.clone();
        let started = Instant::now();
        let worker =
            std::thread::spawn(move || obtain(&r2, "client.example", Duration::from_secs(30)));
        let req = first_request(&holder);
        let f = req.forwarded("127.0.0.1".parse().unwrap());
        f.failed("through HTTP proxy p:3128: \"HTTP/1.1 403 Forbidden\"\n\x1b[2J");
        let e = worker.join().unwrap().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            e.to_string(),
            "client.example: the client could not open the dial-in session: through HTTP proxy p:3128: \"HTTP/1.1 403 Forbidden\"??[2J"
        );
    }

    #[test]
    fn no_holder_is_named_with_the_hint_and_the_setting() {
        let (_d, r) = rendezvous();
        let e = obtain(&r, "nat-client", Duration::from_millis(600)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("nat-client: no dial-in connection from the client (is amandad --dial-out running there?)"),
            "{text}"
        );
        assert!(text.contains("dumper.dialin_wait_secs"), "{text}");
    }

    #[test]
    fn unsafe_names_never_become_paths_and_a_newer_holder_replaces_the_older() {
        let (_d, r) = rendezvous();
        for bad in ["../etc", "a/b", ".x", ""] {
            assert!(matches!(
                obtain(&r, bad, Duration::from_millis(1)),
                Err(RendezvousError::BadName(_))
            ));
        }
        let old = HostSocket::bind(&r, "h").unwrap();
        assert!(!old.replaced());
        let new = HostSocket::bind(&r, "h").unwrap();
        assert!(old.replaced());
        drop(old);
        assert!(
            !new.replaced(),
            "the older one's drop left the newer socket"
        );
    }

    #[test]
    fn a_session_from_another_address_than_the_hold_is_not_taken() {
        let (_d, r) = rendezvous();
        let holder = HostSocket::bind(&r, "h").unwrap();
        let r2 = r.clone();
        let worker = std::thread::spawn(move || {
            let token = new_token().unwrap();
            let path = r2.session_path(token).unwrap();
            let session = SessionSocket {
                listener: UnixListener::bind(&path).unwrap(),
                path,
            };
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let _c = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
            let (s, _) = tcp.accept().unwrap();
            deliver(&r2, token, &s).unwrap();
            let (quiet, _keep) = UnixStream::pair().unwrap();
            matches!(
                wait_session(
                    &session,
                    "192.0.2.1".parse().unwrap(),
                    quiet,
                    Instant::now() + Duration::from_millis(500),
                ),
                Waited::Nothing
            )
        });
        assert!(worker.join().unwrap());
        drop(holder);
    }
}
