//! The pool the daemons use: [`PoolCore`] behind a mutex, real binds, blocking leases.
//!
//! `lease(deadline)` queues a request and blocks, first come first served, until a port
//! is granted and bound, or the deadline passes. Binding happens outside the lock: the
//! core marks the granted port as "binding" so nobody else gets it meanwhile. A bind that
//! finds the port in use (EADDRINUSE, or another process's lock in the host registry)
//! marks it busy and the request keeps its place; EACCES ends the request with an error
//! saying which privilege is missing.
//!
//! A [`Lease`] owns the bound socket and the port: dropping it closes the socket first,
//! then releases the host lock, then gives the port back (a TCP lease with a destination
//! records the TIME_WAIT hold on the way). What this module must NOT do: choose ports
//! (the core does) or know what the sockets are used for (the dumper does).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};
use socket2::{SockAddr, Socket};

use crate::binder::{BindErrorKind, Binder, SocketBinder, classify};
use crate::core::{
    CoreConfig, Dest, Metrics, PoolCore, PoolEvent, Shortage, Ticket, Unusable, fmt_duration,
};
use crate::registry::{ClaimError, HostLock, Registry};
use crate::services::{self, Services};
use proto::ports::{PortRange, Transport};

/// How to build a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub proto: Transport,
    pub range: PortRange,
    /// Skip ports `/etc/services` gives to other services, as Amanda does (default on).
    pub skip_services: bool,
    /// The services database; `None` reads `services_path` when `skip_services` is on.
    pub services: Option<Services>,
    pub services_path: PathBuf,
    /// Only these ports may be used (e.g. `udp_port_range` of /etc/amanda-security.conf),
    /// with where that limit comes from.
    pub allowed: Option<(PortRange, String)>,
    /// Ports to leave alone, with why.
    pub excluded: Vec<(u16, String)>,
    /// TIME_WAIT hold of a TCP port towards the destination it actively closed (60 s).
    pub time_wait: Duration,
    /// How long a port found in use elsewhere is left alone (5 s).
    pub busy_retry: Duration,
    /// The host-wide lease registry; `None` disables it.
    pub run_dir: Option<PathBuf>,
}

impl PoolConfig {
    /// Defaults: skip `/etc/services` ports, TIME_WAIT 60 s, busy retry 5 s, registry in
    /// `/run/amanda-rs/ports`.
    pub fn new(proto: Transport, range: PortRange) -> Self {
        PoolConfig {
            proto,
            range,
            skip_services: true,
            services: None,
            services_path: PathBuf::from(services::DEFAULT_PATH),
            allowed: None,
            excluded: Vec::new(),
            time_wait: Duration::from_secs(60),
            busy_retry: Duration::from_secs(5),
            run_dir: Some(PathBuf::from(crate::registry::DEFAULT_RUN_DIR)),
        }
    }

    /// The core's configuration: which ports are unusable and why. Reads the services
    /// file when needed (a missing file means nothing is skipped, as for glibc).
    pub fn core_config(&self) -> Result<CoreConfig, PoolError> {
        let mut core = CoreConfig::new(self.proto, self.range);
        core.time_wait = self.time_wait;
        core.busy_retry = self.busy_retry;
        if self.skip_services {
            let loaded;
            let services = match &self.services {
                Some(s) => s,
                None => {
                    loaded = load_services(&self.services_path)?;
                    &loaded
                }
            };
            for (port, name) in services.foreign_in(self.range, self.proto) {
                core.unusable.push((
                    port,
                    Unusable::Service {
                        name,
                        file: services.path.clone(),
                    },
                ));
            }
        }
        if let Some((allowed, source)) = &self.allowed {
            for port in self.range.ports().filter(|p| !allowed.contains(*p)) {
                core.unusable.push((
                    port,
                    Unusable::OutsideAllowed {
                        allowed: *allowed,
                        source: source.clone(),
                    },
                ));
            }
        }
        for (port, why) in &self.excluded {
            core.unusable
                .push((*port, Unusable::Excluded { why: why.clone() }));
        }
        Ok(core)
    }
}

/// Read a services file leniently (as glibc does); a missing file is an empty database.
pub fn load_services(path: &std::path::Path) -> Result<Services, PoolError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let (services, errors) = Services::parse_lenient(&path.display().to_string(), &text);
            for e in errors.iter().take(3) {
                debug!("ignoring malformed line: {e}");
            }
            Ok(services)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut empty = Services::empty();
            empty.path = path.display().to_string();
            Ok(empty)
        }
        Err(source) => Err(PoolError::Services {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot read {path}: {source}")]
    Services { path: PathBuf, source: io::Error },
    #[error(
        "cannot use the host port registry {path}: {source} (set another run dir, or disable it)"
    )]
    Registry { path: PathBuf, source: io::Error },
}

/// A lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The deadline passed while waiting; says why there was no port.
    #[error("{shortage} (gave up after {})", fmt_duration(*.waited))]
    Timeout {
        waited: Duration,
        shortage: Shortage,
    },
    /// The range has no usable port at all: waiting would be forever.
    #[error("{shortage}: the range has no usable port; widen it")]
    NoUsablePorts { shortage: Shortage },
    #[error("binding port {port} needs root or CAP_NET_BIND_SERVICE ({proto} pool {range})")]
    PermissionDenied {
        proto: Transport,
        port: u16,
        range: PortRange,
    },
    #[error("binding {proto} port {port}: {source}")]
    Bind {
        proto: Transport,
        port: u16,
        source: io::Error,
    },
    #[error("host port registry, {proto} port {port}: {source}")]
    Registry {
        proto: Transport,
        port: u16,
        source: ClaimError,
    },
}

struct Sleeper {
    cv: Arc<Condvar>,
    wake: Instant,
}

struct State {
    core: PoolCore,
    /// Grants whose owner has not picked them up yet.
    ready: HashMap<Ticket, (u16, u64)>,
    /// Requests blocked in `lease`, oldest first.
    sleepers: BTreeMap<Ticket, Sleeper>,
}

struct Shared {
    proto: Transport,
    range: PortRange,
    state: Mutex<State>,
}

impl Shared {
    /// Route grants to their owners and events to the log, after any change.
    fn drive(state: &mut State) {
        while let Some(grant) = state.core.poll_grant() {
            state.ready.insert(grant.ticket, (grant.port, grant.serial));
            if let Some(s) = state.sleepers.get(&grant.ticket) {
                s.cv.notify_one();
            }
        }
        while let Some(event) = state.core.poll_event() {
            match event {
                PoolEvent::Exhausted(shortage) => info!("{shortage}: requests wait their turn"),
                PoolEvent::Recovered(episode) => warn!("{episode}"),
            }
        }
        // A timer nobody sleeps for (a hold or a busy port ends before every sleeper's
        // wake-up): wake the oldest sleeper so it re-arms for it.
        if let Some(at) = state.core.poll_timeout()
            && !state.sleepers.values().any(|s| s.wake <= at)
            && let Some(s) = state.sleepers.values().next()
        {
            s.cv.notify_one();
        }
    }

    fn release(&self, port: u16, active_close: bool) {
        let mut state = self.state.lock();
        if let Err(e) = state.core.release(port, active_close, Instant::now()) {
            // Only a bug can get here; losing a port is better than killing a dumper.
            warn!("{} pool {}: {e}", self.proto, self.range);
        }
        Self::drive(&mut state);
    }
}

/// A bounded, FIFO, host-wide port pool. Cheap to share: clone the `Arc` you keep it in.
pub struct Pool<B: Binder = SocketBinder> {
    shared: Arc<Shared>,
    binder: B,
    registry: Option<Registry>,
}

impl Pool<SocketBinder> {
    /// A pool binding real sockets on 0.0.0.0.
    pub fn new(config: PoolConfig) -> Result<Self, PoolError> {
        Pool::with_binder(config, SocketBinder::default())
    }
}

impl<B: Binder> Pool<B> {
    pub fn with_binder(config: PoolConfig, binder: B) -> Result<Self, PoolError> {
        let core = PoolCore::new(config.core_config()?);
        let registry = match &config.run_dir {
            None => None,
            Some(dir) => Some(Registry::new(dir).map_err(|source| PoolError::Registry {
                path: dir.clone(),
                source,
            })?),
        };
        let unusable = core.unusable().len();
        debug!(
            "{} pool {}: {} usable, {} skipped",
            config.proto,
            config.range,
            core.usable(),
            unusable
        );
        Ok(Pool {
            shared: Arc::new(Shared {
                proto: config.proto,
                range: config.range,
                state: Mutex::new(State {
                    core,
                    ready: HashMap::new(),
                    sleepers: BTreeMap::new(),
                }),
            }),
            binder,
            registry,
        })
    }

    pub fn proto(&self) -> Transport {
        self.shared.proto
    }

    pub fn range(&self) -> PortRange {
        self.shared.range
    }

    pub fn binder(&self) -> &B {
        &self.binder
    }

    /// A port, waiting until `deadline` at most (UDP sockets, listening sockets).
    pub fn lease(&self, deadline: Instant) -> Result<Lease<B::Socket>, LeaseError> {
        self.acquire(None, deadline)
    }

    /// A TCP source port to connect to `dest`: never one still in TIME_WAIT towards it.
    pub fn lease_for(&self, dest: Dest, deadline: Instant) -> Result<Lease<B::Socket>, LeaseError> {
        self.acquire(Some(dest), deadline)
    }

    /// A port if one is free now.
    pub fn try_lease(&self) -> Result<Lease<B::Socket>, LeaseError> {
        self.acquire(None, Instant::now())
    }

    pub fn metrics(&self) -> Metrics {
        self.shared.state.lock().core.metrics()
    }

    /// Why requests wait, while some do.
    pub fn shortage(&self) -> Option<Shortage> {
        let state = self.shared.state.lock();
        (state.core.waiting() > 0).then(|| state.core.shortage())
    }

    /// Panics if the pool's state is inconsistent (tests call this).
    pub fn check_invariants(&self) {
        let state = self.shared.state.lock();
        state.core.check_invariants();
        for (ticket, (port, _)) in &state.ready {
            assert_eq!(
                state.core.binding_port(*ticket),
                Some(*port),
                "ready grant {ticket:?} is not binding in the core"
            );
        }
    }

    fn acquire(
        &self,
        dest: Option<Dest>,
        deadline: Instant,
    ) -> Result<Lease<B::Socket>, LeaseError> {
        let started = Instant::now();
        let mut state = self.shared.state.lock();
        let ticket = match state.core.request(dest, started) {
            Ok(ticket) => ticket,
            Err(_) => {
                return Err(LeaseError::NoUsablePorts {
                    shortage: state.core.shortage(),
                });
            }
        };
        Shared::drive(&mut state);
        loop {
            if let Some((port, serial)) = state.ready.remove(&ticket) {
                state.sleepers.remove(&ticket);
                let outcome = MutexGuard::unlocked(&mut state, || self.bind(port));
                let now = Instant::now();
                match outcome {
                    Ok((socket, host_lock)) => {
                        let _ = state.core.bound(ticket, now);
                        Shared::drive(&mut state);
                        drop(state);
                        return Ok(Lease {
                            socket,
                            slot: Slot {
                                shared: Arc::clone(&self.shared),
                                host_lock,
                                port,
                                dest,
                                hold_on_release: dest.is_some(),
                                serial,
                                waited: now.saturating_duration_since(started),
                            },
                        });
                    }
                    Err(Failure::Busy(pid)) => {
                        debug!(
                            "{} port {port} is in use elsewhere; trying another",
                            self.proto()
                        );
                        let _ = state.core.bind_busy(ticket, pid, now);
                        Shared::drive(&mut state);
                        continue;
                    }
                    Err(Failure::Fatal(error)) => {
                        let _ = state.core.bind_failed(ticket, now);
                        Shared::drive(&mut state);
                        return Err(error);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let shortage = state.core.shortage();
                if state.core.cancel(ticket, now) {
                    state.sleepers.remove(&ticket);
                    Shared::drive(&mut state);
                    return Err(LeaseError::Timeout {
                        waited: now.saturating_duration_since(started),
                        shortage,
                    });
                }
                // Not waiting any more: the grant is in `ready`, take it.
                continue;
            }
            let wake = state
                .core
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            let cv = {
                let sleeper = state.sleepers.entry(ticket).or_insert_with(|| Sleeper {
                    cv: Arc::new(Condvar::new()),
                    wake,
                });
                sleeper.wake = wake;
                Arc::clone(&sleeper.cv)
            };
            cv.wait_until(&mut state, wake);
            state.core.tick(Instant::now());
            Shared::drive(&mut state);
        }
    }

    /// Claim the port host-wide, then bind it.
    fn bind(&self, port: u16) -> Result<(B::Socket, Option<HostLock>), Failure> {
        let proto = self.proto();
        let host_lock = match &self.registry {
            None => None,
            Some(registry) => match registry.try_claim(proto, port) {
                Ok(lock) => Some(lock),
                Err(ClaimError::Held { pid }) => return Err(Failure::Busy(pid)),
                Err(source) => {
                    return Err(Failure::Fatal(LeaseError::Registry {
                        proto,
                        port,
                        source,
                    }));
                }
            },
        };
        match self.binder.bind(proto, port) {
            Ok(socket) => Ok((socket, host_lock)),
            Err(source) => Err(match classify(&source) {
                BindErrorKind::InUse => Failure::Busy(None),
                BindErrorKind::Denied => Failure::Fatal(LeaseError::PermissionDenied {
                    proto,
                    port,
                    range: self.range(),
                }),
                BindErrorKind::Other => Failure::Fatal(LeaseError::Bind {
                    proto,
                    port,
                    source,
                }),
            }),
        }
    }
}

impl Pool<SocketBinder> {
    /// Connect to `dest` from a port of this TCP pool, like Amanda's `connect_portrange`
    /// but waiting for a port instead of failing: a port whose connect says
    /// EADDRNOTAVAIL (that 4-tuple still in TIME_WAIT, from before this pool knew) is held
    /// back from `dest` and the next one is tried.
    pub fn connect(
        &self,
        dest: Dest,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> Result<Lease<TcpStream>, ConnectError> {
        loop {
            let lease = self
                .lease_for(dest, deadline)
                .map_err(ConnectError::Lease)?;
            match lease.connect(connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(ConnectError::Connect { port, source, .. })
                    if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
                {
                    debug!("tcp port {port} → {dest}: still in TIME_WAIT; next port");
                }
                Err(other) => return Err(other),
            }
        }
    }
}

enum Failure {
    Busy(Option<u32>),
    Fatal(LeaseError),
}

/// A connection could not be made from a leased port.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Lease(LeaseError),
    #[error("connect from port {port} to {dest}: {source}")]
    Connect {
        port: u16,
        dest: Dest,
        source: io::Error,
    },
    #[error("lease of port {port} has no destination to connect to (use lease_for)")]
    NoDestination { port: u16 },
}

/// A leased port and the socket bound to it. Dropping it closes the socket and gives the
/// port back.
pub struct Lease<S> {
    // Field order is drop order: the socket closes before the port is given back.
    socket: S,
    slot: Slot,
}

struct Slot {
    shared: Arc<Shared>,
    host_lock: Option<HostLock>,
    port: u16,
    dest: Option<Dest>,
    hold_on_release: bool,
    serial: u64,
    waited: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The host lock goes before the port returns, so that a waiter of this process
        // that gets the port does not find our own lock on it.
        drop(self.host_lock.take());
        let active_close = self.hold_on_release && self.dest.is_some();
        self.shared.release(self.port, active_close);
    }
}

impl<S> Lease<S> {
    pub fn port(&self) -> u16 {
        self.slot.port
    }

    pub fn proto(&self) -> Transport {
        self.slot.shared.proto
    }

    /// The destination this TCP source port was leased for.
    pub fn dest(&self) -> Option<Dest> {
        self.slot.dest
    }

    /// The lease's number in the pool's grant order (FIFO: request order).
    pub fn serial(&self) -> u64 {
        self.slot.serial
    }

    /// How long the request waited for its port.
    pub fn waited(&self) -> Duration {
        self.slot.waited
    }

    pub fn socket(&self) -> &S {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Convert the socket (say, into a `TcpStream` or a mio socket); the port stays
    /// leased by the result.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Lease<T> {
        Lease {
            socket: f(self.socket),
            slot: self.slot,
        }
    }

    /// Like [`Lease::map`], for a conversion that can fail; on failure the port is
    /// given back.
    pub fn try_map<T, E>(self, f: impl FnOnce(S) -> Result<T, E>) -> Result<Lease<T>, E> {
        let slot = self.slot;
        f(self.socket).map(|socket| Lease { socket, slot })
    }

    /// The peer closed the TCP connection first (we will not be in TIME_WAIT), or no
    /// connection was made: release the port without holding it from the destination.
    pub fn set_no_time_wait(&mut self) {
        self.slot.hold_on_release = false;
    }
}

impl Lease<Socket> {
    /// Connect this TCP source port to the lease's destination (blocking, with a
    /// timeout). On failure the port is given back; held from the destination only when
    /// the kernel said the 4-tuple is still in use (EADDRNOTAVAIL).
    pub fn connect(mut self, timeout: Duration) -> Result<Lease<TcpStream>, ConnectError> {
        let port = self.port();
        let Some(dest) = self.dest() else {
            return Err(ConnectError::NoDestination { port });
        };
        match self.socket.connect_timeout(&SockAddr::from(dest), timeout) {
            Ok(()) => Ok(self.map(TcpStream::from)),
            Err(source) => {
                if source.raw_os_error() != Some(libc::EADDRNOTAVAIL) {
                    self.set_no_time_wait();
                }
                Err(ConnectError::Connect { port, dest, source })
            }
        }
    }
}

impl<S> std::fmt::Debug for Lease<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("proto", &self.proto())
            .field("port", &self.port())
            .field("dest", &self.dest())
            .field("waited", &self.waited())
            .finish()
    }
}

#[cfg(test)]
mod tests;
