//! Binding a port: the one system call the pool shell makes for a lease, behind a trait.
//!
//! [`SocketBinder`] creates and binds a real socket (socket2), the way Amanda does it
//! (`SO_REUSEADDR` and `SO_KEEPALIVE` on TCP sockets, spec §5.4). [`ModelBinder`] binds
//! nothing and answers from a table, so tests can inject EADDRINUSE and EACCES at will and
//! benchmarks can measure the pool without the kernel. This module must not know about
//! the queue or the leases.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use proto::ports::Transport;

/// Creates a socket bound to `port`. Errors are plain `io::Error`s: the pool reads
/// EADDRINUSE as "busy elsewhere, try the next port", EACCES/EPERM as "needs privilege",
/// anything else as a hard error.
pub trait Binder: Send + Sync + 'static {
    /// What a lease owns: the bound socket.
    type Socket: Send + 'static;

    fn bind(&self, proto: Transport, port: u16) -> io::Result<Self::Socket>;
}

/// Real sockets, bound to one local address (default 0.0.0.0).
#[derive(Debug, Clone)]
pub struct SocketBinder {
    pub addr: IpAddr,
}

impl Default for SocketBinder {
    fn default() -> Self {
        SocketBinder {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

impl SocketBinder {
    pub fn new(addr: IpAddr) -> Self {
        SocketBinder { addr }
    }
}

impl Binder for SocketBinder {
    type Socket = Socket;

    fn bind(&self, proto: Transport, port: u16) -> io::Result<Socket> {
        let local = SocketAddr::new(self.addr, port);
        let socket = match proto {
            Transport::Udp => {
                Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?
            }
            Transport::Tcp => {
                let s = Socket::new(
                    Domain::for_address(local),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                // Amanda's make_socket: lets a source port be bound while an older
                // connection from it lingers; the 4-tuple check happens at connect.
                s.set_reuse_address(true)?;
                s.set_keepalive(true)?;
                s
            }
        };
        socket.set_cloexec(true)?;
        socket.bind(&SockAddr::from(local))?;
        Ok(socket)
    }
}

/// A socket that is not one: what [`ModelBinder`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelSocket {
    pub proto: Transport,
    pub port: u16,
}

/// A scripted binder: every port binds unless the table says otherwise.
#[derive(Debug, Default)]
pub struct ModelBinder {
    script: Mutex<HashMap<(Transport, u16), Outcome>>,
}

/// What [`ModelBinder`] answers for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// EADDRINUSE until cleared.
    InUse,
    /// EADDRINUSE for the next `n` attempts, then success.
    InUseFor(u32),
    /// EACCES.
    Denied,
}

impl ModelBinder {
    pub fn new() -> Self {
        ModelBinder::default()
    }

    /// Script the answer for a port.
    pub fn set(&self, proto: Transport, port: u16, outcome: Outcome) {
        self.script.lock().insert((proto, port), outcome);
    }

    /// Forget the script for a port (it binds again).
    pub fn clear(&self, proto: Transport, port: u16) {
        self.script.lock().remove(&(proto, port));
    }
}

impl Binder for ModelBinder {
    type Socket = ModelSocket;

    fn bind(&self, proto: Transport, port: u16) -> io::Result<ModelSocket> {
        let mut script = self.script.lock();
        match script.get_mut(&(proto, port)) {
            None => Ok(ModelSocket { proto, port }),
            Some(Outcome::InUse) => Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
            Some(Outcome::Denied) => Err(io::Error::from_raw_os_error(libc::EACCES)),
            Some(Outcome::InUseFor(n)) => {
                if *n == 0 {
                    script.remove(&(proto, port));
                    Ok(ModelSocket { proto, port })
                } else {
                    *n -= 1;
                    Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
                }
            }
        }
    }
}

/// How the pool reads a bind error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindErrorKind {
    InUse,
    Denied,
    Other,
}

pub(crate) fn classify(err: &io::Error) -> BindErrorKind {
    match err.raw_os_error() {
        Some(libc::EADDRINUSE) => BindErrorKind::InUse,
        Some(libc::EACCES) | Some(libc::EPERM) => BindErrorKind::Denied,
        _ if err.kind() == io::ErrorKind::AddrInUse => BindErrorKind::InUse,
        _ if err.kind() == io::ErrorKind::PermissionDenied => BindErrorKind::Denied,
        _ => BindErrorKind::Other,
    }
}
