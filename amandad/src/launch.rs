//! How amandad was started, and the sockets that come with it.
//!
//! - `--listen` (or Amanda's `-udp=`/`-tcp=`): standalone; amandad binds them itself and
//!   serves forever, many TCP connections at once.
//! - systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`, `Accept=no`): the listening
//!   sockets are fds 3..; standalone.
//! - a superserver: fd 0 is the socket. A datagram socket is inetd's `dgram udp wait`
//!   (amandad reads every request from it and exits when idle); a connected stream is
//!   `stream tcp nowait` or systemd `Accept=yes` (one bsdtcp connection); a listening stream
//!   socket is served like a standalone listener.
//!
//! Under a superserver fds 0, 1 and 2 are all the socket: [`take_stdio_socket`] moves the
//! socket to a new descriptor and points 0-2 at /dev/null, so that nothing printed by
//! accident (a panic message, a library's warning) can corrupt the protocol.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::args::Listen;
use crate::logging::fd_is_socket;
use crate::server::{Mode, Sockets};

/// Why amandad cannot find its sockets.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "standard input is not a socket: start amandad from inetd, xinetd or systemd, or give --listen udp:ADDR:PORT / tcp:ADDR:PORT"
    )]
    NoSocket,
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("inspecting the socket on fd {fd}: {source}")]
    Inspect { fd: RawFd, source: io::Error },
}

/// The sockets and the mode they imply.
pub struct Launch {
    pub mode: Mode,
    pub sockets: Sockets,
}

/// Finds or binds the sockets.
pub fn sockets(listen: &[Listen]) -> Result<Launch, LaunchError> {
    if !listen.is_empty() {
        return bind_all(listen).map(|sockets| Launch {
            mode: Mode::Standalone,
            sockets,
        });
    }
    if let Some(fds) = systemd_fds() {
        let mut sockets = Sockets::default();
        for fd in fds {
            classify(fd, &mut sockets)?;
        }
        let mode = if sockets.conn.is_some() {
            Mode::InetdTcp
        } else {
            Mode::Standalone
        };
        return Ok(Launch { mode, sockets });
    }
    if !fd_is_socket(0) {
        return Err(LaunchError::NoSocket);
    }
    let fd = take_stdio_socket().map_err(|source| LaunchError::Inspect { fd: 0, source })?;
    let mut sockets = Sockets::default();
    classify(fd, &mut sockets)?;
    let mode = if !sockets.udp.is_empty() {
        Mode::InetdUdp
    } else if sockets.conn.is_some() {
        Mode::InetdTcp
    } else {
        Mode::Standalone
    };
    Ok(Launch { mode, sockets })
}

fn bind_all(listen: &[Listen]) -> Result<Sockets, LaunchError> {
    let mut sockets = Sockets::default();
    let failed = |what, addr| move |source| LaunchError::Bind { what, addr, source };
    for l in listen {
        match *l {
            Listen::Udp(addr) => {
                let sock = new_socket(addr, Type::DGRAM, Protocol::UDP)
                    .and_then(|s| s.bind(&addr.into()).map(|()| s))
                    .map_err(failed("udp", addr))?;
                sockets.udp.push(sock.into());
            }
            Listen::Tcp(addr) => {
                let sock = new_socket(addr, Type::STREAM, Protocol::TCP)
                    .and_then(|s| {
                        s.set_reuse_address(true)?;
                        s.bind(&addr.into())?;
                        // The kernel caps it at net.core.somaxconn; a deep queue rides out
                        // a burst of connections while the loop sheds them.
                        s.listen(4096)?;
                        Ok(s)
                    })
                    .map_err(failed("tcp", addr))?;
                sockets.listeners.push(sock.into());
            }
        }
    }
    Ok(sockets)
}

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // One socket per address: [::] does not also take 0.0.0.0.
        s.set_only_v6(true)?;
    }
    s.set_cloexec(true)?;
    Ok(s)
}

/// The fds systemd passed (`LISTEN_PID` must be ours).
fn systemd_fds() -> Option<Vec<RawFd>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    // SAFETY: removing variables before any other thread exists (called from main early).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
    }
    Some((3..3 + n.max(0)).collect())
}

/// Sorts one inherited socket into `sockets` by its type and state.
fn classify(fd: RawFd, sockets: &mut Sockets) -> Result<(), LaunchError> {
    // SAFETY: fd is a socket descriptor this process owns from now on (inherited from the
    // superserver or systemd and not used elsewhere).
    let sock = unsafe { Socket::from_raw_fd(fd) };
    let inspect = |source| LaunchError::Inspect { fd, source };
    let _ = sock.set_cloexec(true);
    match sock.r#type().map_err(inspect)? {
        Type::DGRAM => sockets.udp.push(sock.into()),
        Type::STREAM if sock.is_listener().map_err(inspect)? => sockets.listeners.push(sock.into()),
        Type::STREAM => sockets.conn = Some(sock.into()),
        other => {
            return Err(inspect(io::Error::other(format!(
                "unsupported socket type {other:?}"
            ))));
        }
    }
    Ok(())
}

/// Moves the superserver's socket off fd 0 and points fds 0-2 at /dev/null. Returns the
/// socket's new descriptor.
pub fn take_stdio_socket() -> io::Result<RawFd> {
    // SAFETY: plain descriptor calls on fds this process owns; errors are checked.
    unsafe {
        let sock = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..=2 {
            if libc::dup2(null, fd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if null > 2 {
            libc::close(null);
        }
        Ok(sock)
    }
}
