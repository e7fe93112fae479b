//! The event loop: one thread, one `mio::Poll`, every socket, pipe and timer of the daemon.
//!
//! Sources: UDP control sockets (fd 0 under inetd, or our own), TCP listeners (standalone
//! bsdtcp), TCP connections (bsdtcp control connections, bsd/bsdudp data connections), the
//! listening sockets of bsd/bsdudp data streams, the pipes of running dumps, and a waker for
//! the worker pool. Every readable source is drained to `WouldBlock` (edge-triggered); after
//! each batch the exchanges' transmits are sent and the next timeout is computed from them.
//!
//! Protocol decisions are not made here: a new packet goes through [`crate::intake::judge`],
//! an exchange is a [`proto::exchange::Responder`], a service's work comes from
//! [`crate::services::start`]. What this module does is move bytes and keep the books: which
//! packet belongs to which exchange (UDP: socket, peer, handle and sequence; TCP: connection
//! and handle), which stream goes where, when to stop reading a pipe (the connection's
//! output buffer is the backpressure), and when the process may exit.
//!
//! What this module must not do: block (file-system work goes to the pool, the only blocking
//! calls are the name lookups of `resolve`, cached, and reaping a tar that already closed its
//! pipes), or write to fds 0-2.

mod conn;
pub mod datapath;
mod dump;
mod pool;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use proto::exchange::{Packet, Responder, ResponderConfig, ResponderEvent};
use proto::pkt::PacketType;
use proto::security::{self, Peer};
use proto::udp::Datagram;

pub use conn::{Conn, Role};
pub use dump::DataPorts;
use dump::Dump;
use pool::{JobOutput, Pool};

use crate::args::Auth;
use crate::intake::{self, HostsCheck, Policy, Verdict};
use crate::resolve::Resolver;
use crate::services::{self, ServiceContext, ServiceKind, Start};

const WAKER: Token = Token(0);

/// TCP keepalive of every connection (settings `[heartbeat]`): well under the idle timeouts
/// of firewalls (often an hour, sometimes minutes), so quiet estimates and dumps survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(10),
            retries: 6,
        }
    }
}

/// How the process was started, which decides when it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// inetd/xinetd `dgram udp wait`: fd 0 is the UDP socket; exit after `idle_exit`.
    InetdUdp,
    /// inetd/xinetd `stream tcp nowait`, systemd `Accept=yes`: fd 0 is one connection; exit
    /// when it is closed and nothing is left to do.
    InetdTcp,
    /// Our own listeners (or systemd `Accept=no`): serve forever.
    Standalone,
}

/// Everything the loop is configured with.
pub struct ServerConfig {
    pub mode: Mode,
    /// The auth of UDP sockets (bsd or bsdudp).
    pub udp_auth: Auth,
    pub enabled: Vec<ServiceKind>,
    pub global_error: Option<String>,
    pub conf_error: Option<(String, bool)>,
    /// Exit after this long without work (inetd UDP mode); `None` never (`-no-exit`).
    pub idle_exit: Option<Duration>,
    pub responder: ResponderConfig,
    pub keepalive: Option<Keepalive>,
    pub workers: usize,
    pub dns_check: bool,
    pub data_ports: DataPorts,
    /// The services' view for requests on UDP sockets (auth `udp_auth`).
    pub services_udp: ServiceContext,
    /// The services' view for requests on bsdtcp connections.
    pub services_tcp: ServiceContext,
    pub hosts: Box<dyn HostsCheck>,
}

/// The sockets the loop starts with.
#[derive(Default)]
pub struct Sockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub listeners: Vec<std::net::TcpListener>,
    /// An accepted bsdtcp connection (inetd nowait, systemd Accept=yes).
    pub conn: Option<std::net::TcpStream>,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Udp(usize),
    Listener(usize),
    Conn(u64),
    DataListener(u64, usize),
    DataPipe(u64),
    MsgPipe(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Exchange(u64),
    Dump(u64),
}

/// How to reach the peer of an exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Route {
    Udp {
        sock: usize,
        peer: SocketAddr,
        handle: Vec<u8>,
        seq: i32,
    },
    Tcp {
        conn: u64,
        handle: u32,
    },
}

enum Work {
    /// Waiting for the service's reply (a job on the pool).
    Running,
    /// REP sent; nothing to do after the ACK.
    Replied,
    /// sendbackup: REP sent, the dump starts after the ACK.
    Backup(u64),
}

struct Exchange {
    route: Route,
    responder: Responder,
    service: ServiceKind,
    args: Vec<u8>,
    partial_ok: bool,
    work: Work,
    scheduled: Option<Instant>,
}

/// The daemon's event loop and all its state.
pub struct Server {
    poll: Poll,
    pool: Pool,
    cfg: ServerConfig,
    sources: HashMap<Token, Source>,
    next_token: usize,
    next_id: u64,
    udp: Vec<UdpSocket>,
    listeners: Vec<TcpListener>,
    conns: HashMap<u64, (Token, Conn)>,
    exchanges: HashMap<u64, Exchange>,
    udp_index: HashMap<Route, u64>,
    tcp_index: HashMap<(u64, u32), u64>,
    dumps: HashMap<u64, Dump>,
    /// Armed timers. Entries are removed when an exchange re-arms or ends, so the set holds
    /// at most one entry per live exchange or dump.
    timers: BTreeSet<(Instant, Timer)>,
    resolver: Resolver,
    last_busy: Instant,
    inetd_conn: Option<u64>,
    recv_buf: Vec<u8>,
    read_buf: Vec<u8>,
}

impl Server {
    /// Sets the loop up with its first sockets.
    pub fn new(cfg: ServerConfig, sockets: Sockets) -> io::Result<Server> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let pool = Pool::new(cfg.workers, waker)?;
        let mut server = Server {
            poll,
            pool,
            resolver: Resolver::new(cfg.dns_check),
            cfg,
            sources: HashMap::new(),
            next_token: 1,
            next_id: 1,
            udp: Vec::new(),
            listeners: Vec::new(),
            conns: HashMap::new(),
            exchanges: HashMap::new(),
            udp_index: HashMap::new(),
            tcp_index: HashMap::new(),
            dumps: HashMap::new(),
            timers: BTreeSet::new(),
            last_busy: Instant::now(),
            inetd_conn: None,
            recv_buf: vec![0; 65536],
            read_buf: Vec::new(),
        };
        for s in sockets.udp {
            s.set_nonblocking(true)?;
            let mut sock = UdpSocket::from_std(s);
            let token = server.token(Source::Udp(server.udp.len()));
            server
                .poll
                .registry()
                .register(&mut sock, token, Interest::READABLE)?;
            server.udp.push(sock);
        }
        for l in sockets.listeners {
            l.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(l);
            let token = server.token(Source::Listener(server.listeners.len()));
            server
                .poll
                .registry()
                .register(&mut listener, token, Interest::READABLE)?;
            server.listeners.push(listener);
        }
        if let Some(c) = sockets.conn {
            c.set_nonblocking(true)?;
            let peer = c.peer_addr()?;
            let id = server.add_conn(TcpStream::from_std(c), peer, Role::Control)?;
            server.inetd_conn = Some(id);
            server.check_control_peer(id);
        }
        Ok(server)
    }

    /// Runs until the mode says to exit (never in standalone mode).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    self.drain_jobs();
                    continue;
                }
                let Some(source) = self.sources.get(&token).copied() else {
                    continue;
                };
                match source {
                    Source::Udp(i) => self.read_udp(i),
                    Source::Listener(i) => self.accept_control(i),
                    Source::Conn(id) => {
                        self.conn_ready(id, event.is_readable(), event.is_writable())
                    }
                    Source::DataListener(dump, slot) => self.accept_data(dump, slot),
                    Source::DataPipe(dump) => self.pipe_ready(dump, true),
                    Source::MsgPipe(dump) => self.pipe_ready(dump, false),
                }
            }
            // Results may also arrive without a wake-up having been seen yet.
            self.drain_jobs();
            self.fire_timers();
            if self.busy() {
                self.last_busy = Instant::now();
            } else if self.should_exit() {
                info!("nothing left to do; exiting");
                return Ok(());
            }
        }
    }

    fn busy(&self) -> bool {
        !self.exchanges.is_empty() || !self.dumps.is_empty()
    }

    fn should_exit(&self) -> bool {
        match self.cfg.mode {
            Mode::Standalone => false,
            Mode::InetdUdp => self
                .cfg
                .idle_exit
                .is_some_and(|idle| self.last_busy.elapsed() >= idle),
            Mode::InetdTcp => match self.inetd_conn {
                None => true,
                Some(id) => !self.conns.contains_key(&id),
            },
        }
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self.timers.first().map(|(t, _)| *t);
        if self.cfg.mode == Mode::InetdUdp
            && !self.busy()
            && let Some(idle) = self.cfg.idle_exit
        {
            let t = self.last_busy + idle;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn token(&mut self, source: Source) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.sources.insert(token, source);
        token
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ------------------------------------------------------------------ UDP control

    fn read_udp(&mut self, sock: usize) {
        loop {
            let (n, peer) = match self.udp[sock].recv_from(&mut self.recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("udp recv: {e}");
                    return;
                }
            };
            let datagram = self.recv_buf[..n].to_vec();
            self.udp_datagram(sock, peer, &datagram);
        }
    }

    fn udp_datagram(&mut self, sock: usize, peer: SocketAddr, bytes: &[u8]) {
        let now = Instant::now();
        let dgram = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                // amandad drops what it cannot parse, silently for the peer.
                debug!("dropped datagram from {peer}: {e}");
                return;
            }
        };
        let route = Route::Udp {
            sock,
            peer,
            handle: dgram.handle.to_vec(),
            seq: dgram.seq,
        };
        if let Some(&id) = self.udp_index.get(&route) {
            if let Some(ex) = self.exchanges.get_mut(&id) {
                ex.responder
                    .handle_packet(now, dgram.ptype, dgram.body_without_security());
                self.sync_exchange(id);
            }
            return;
        }
        let name = self.resolver.lookup(now, peer);
        if let Err(reason) = &name.check {
            // On UDP a failed name check is a silent drop (the server sees a timeout).
            warn!("dropped {} from {peer}: {reason}", dgram.ptype);
            return;
        }
        let body = dgram.body.to_vec();
        self.new_packet(route, &name.name, peer, dgram.ptype, &body);
    }

    fn send_udp(&mut self, route: &Route, ty: PacketType, body: &[u8]) {
        let Route::Udp {
            sock,
            peer,
            handle,
            seq,
        } = route
        else {
            return;
        };
        let dgram = Datagram::new(ty, handle, *seq, body);
        let bytes = match dgram.to_vec() {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot send {ty} to {peer}: {e}");
                return;
            }
        };
        if let Err(e) = self.udp[*sock].send_to(&bytes, *peer) {
            // A full socket buffer loses the datagram; the protocol's retransmissions cover it.
            // EPERM is this host's own netfilter refusing it, which retransmission will not fix.
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (this host's firewall dropped it: check its output rules and conntrack helpers, e.g. with `portpool rules`)"
            } else {
                ""
            };
            warn!("udp send {ty} to {peer}: {e}{hint}");
        }
    }

    // ------------------------------------------------------------------ new requests

    fn new_packet(
        &mut self,
        route: Route,
        peer_name: &str,
        peer: SocketAddr,
        ty: PacketType,
        body: &[u8],
    ) {
        let policy = Policy {
            global_error: self.cfg.global_error.as_deref(),
            conf_error: self
                .cfg
                .conf_error
                .as_ref()
                .map(|(t, more)| (t.as_str(), *more)),
            enabled: &self.cfg.enabled,
            hosts: self.cfg.hosts.as_ref(),
        };
        let sec_peer = Peer {
            name: peer_name,
            port: peer.port(),
        };
        let verdict = intake::judge(
            &policy,
            sec_peer,
            crate::resolve::unmap(peer.ip()),
            ty,
            body,
        );
        match verdict {
            Verdict::Ignore(ty) => debug!("ignored {ty} from {peer} (no such exchange)"),
            Verdict::Nak(nak) => {
                info!(
                    "refused request from {peer}: {}",
                    String::from_utf8_lossy(&nak).trim_end()
                );
                self.send_packet(&route, PacketType::Nak, &nak);
                if let Route::Tcp { conn, handle } = route {
                    self.with_conn(conn, |c| c.push_eof(handle));
                }
            }
            Verdict::Accept {
                service,
                user,
                args,
            } => {
                let args = args.to_vec();
                let running = self.exchanges.values().any(|ex| {
                    ex.service == service && ex.args == args && ex.responder.awaiting_reply()
                });
                if running {
                    // amandad's rule 8: the same request is already being served.
                    info!(
                        "{} from {peer} is already running; ACK only",
                        service.name()
                    );
                    self.send_packet(&route, PacketType::Ack, b"");
                    return;
                }
                info!("{} for {user}@{peer_name} ({peer})", service.name());
                self.start_exchange(route, service, args);
            }
        }
    }

    fn start_exchange(&mut self, route: Route, service: ServiceKind, args: Vec<u8>) {
        let now = Instant::now();
        let id = self.new_id();
        let partial_ok = service == ServiceKind::Sendsize && dump::server_wants_partial(&args);
        let responder = Responder::new(now, self.cfg.responder.clone());
        match &route {
            Route::Udp { .. } => {
                self.udp_index.insert(route.clone(), id);
            }
            Route::Tcp { conn, handle } => {
                self.tcp_index.insert((*conn, *handle), id);
            }
        }
        self.exchanges.insert(
            id,
            Exchange {
                route,
                responder,
                service,
                args,
                partial_ok,
                work: Work::Running,
                scheduled: None,
            },
        );
        // The ACK goes out before any work starts.
        self.sync_exchange(id);
        let Some(ex) = self.exchanges.get(&id) else {
            return;
        };
        // A DLE naming another auth than the one it arrived by is refused, as amandad does.
        let context = match ex.route {
            Route::Udp { .. } => &self.cfg.services_udp,
            Route::Tcp { .. } => &self.cfg.services_tcp,
        };
        match services::start(context, service, &ex.args) {
            Start::Reply(body) => self.reply(id, body),
            Start::Job(job) => self.pool.submit(id, job),
            Start::Backup(plan) => self.start_backup(id, plan),
        }
    }

    fn reply(&mut self, id: u64, body: Vec<u8>) {
        if let Some(ex) = self.exchanges.get_mut(&id) {
            ex.responder.reply(Instant::now(), body);
            if matches!(ex.work, Work::Running) {
                ex.work = Work::Replied;
            }
            self.sync_exchange(id);
        }
    }

    fn drain_jobs(&mut self) {
        while let Ok(out) = self.pool.results.try_recv() {
            match out {
                JobOutput::Partial(id, bytes) => {
                    if let Some(ex) = self.exchanges.get_mut(&id)
                        && ex.partial_ok
                        && ex.responder.offer_partial(Instant::now(), &bytes)
                    {
                        self.sync_exchange(id);
                    }
                }
                JobOutput::Done(id, body) => self.reply(id, body),
            }
        }
    }

    /// Sends what the exchange's responder queued, acts on its events, re-arms its timer.
    fn sync_exchange(&mut self, id: u64) {
        let Some(ex) = self.exchanges.get_mut(&id) else {
            return;
        };
        let route = ex.route.clone();
        let mut out = Vec::new();
        while let Some(p) = ex.responder.poll_transmit() {
            out.push(p);
        }
        let mut events = Vec::new();
        while let Some(e) = ex.responder.poll_event() {
            events.push(e);
        }
        let deadline = ex.responder.poll_timeout();
        if deadline != ex.scheduled {
            if let Some(old) = ex.scheduled {
                self.timers.remove(&(old, Timer::Exchange(id)));
            }
            ex.scheduled = deadline;
            if let Some(t) = deadline {
                self.timers.insert((t, Timer::Exchange(id)));
            }
        }
        for Packet { ty, body } in out {
            self.send_packet(&route, ty, &body);
        }
        for event in events {
            match event {
                ResponderEvent::DuplicateRequest => debug!("exchange {id}: duplicate REQ"),
                ResponderEvent::Acked => self.finish_exchange(id, true),
                ResponderEvent::GaveUp => {
                    warn!("exchange {id}: the server never ACKed the REP; giving up");
                    self.finish_exchange(id, false);
                }
                ResponderEvent::TimedOut => {
                    warn!("exchange {id}: the service did not reply in time");
                    self.finish_exchange(id, false);
                }
            }
        }
    }

    fn finish_exchange(&mut self, id: u64, acked: bool) {
        let Some(ex) = self.exchanges.remove(&id) else {
            return;
        };
        if let Some(t) = ex.scheduled {
            self.timers.remove(&(t, Timer::Exchange(id)));
        }
        match &ex.route {
            Route::Udp { .. } => {
                self.udp_index.remove(&ex.route);
            }
            Route::Tcp { conn, handle } => {
                self.tcp_index.remove(&(*conn, *handle));
                // The client closes the control handle first, then the server answers in kind.
                let handle = *handle;
                self.with_conn(*conn, |c| c.push_eof(handle));
            }
        }
        if let Work::Backup(dump_id) = ex.work {
            if acked {
                self.backup_acked(dump_id);
            } else {
                self.backup_unacked(dump_id);
            }
        }
    }

    fn send_packet(&mut self, route: &Route, ty: PacketType, body: &[u8]) {
        match route {
            Route::Udp { .. } => self.send_udp(route, ty, body),
            Route::Tcp { conn, handle } => {
                let handle = *handle;
                self.with_conn(*conn, |c| {
                    let mut frame = Vec::new();
                    match proto::tcp::Packet::new(ty, body).encode_frame(handle, &mut frame) {
                        Ok(_) => c.push(&frame),
                        Err(e) => warn!("cannot send {ty} on handle {handle}: {e}"),
                    }
                });
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((t, timer)) = self.timers.first().copied() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, timer));
            match timer {
                Timer::Exchange(id) => {
                    if let Some(ex) = self.exchanges.get_mut(&id)
                        && ex.scheduled == Some(t)
                    {
                        ex.scheduled = None;
                        ex.responder.handle_timeout(now);
                        self.sync_exchange(id);
                    }
                }
                Timer::Dump(id) => self.dump_timeout(id, now),
            }
        }
    }

    // ------------------------------------------------------------------ TCP

    fn add_conn(&mut self, mut sock: TcpStream, peer: SocketAddr, role: Role) -> io::Result<u64> {
        if let Some(k) = self.cfg.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval)
                .with_retries(k.retries);
            if let Err(e) = socket2::SockRef::from(&sock).set_tcp_keepalive(&ka) {
                warn!("keepalive on {peer}: {e}");
            }
        }
        let _ = sock.set_nodelay(true);
        let id = self.new_id();
        let token = self.token(Source::Conn(id));
        self.poll
            .registry()
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        self.conns.insert(id, (token, Conn::new(sock, peer, role)));
        Ok(id)
    }

    fn accept_control(&mut self, i: usize) {
        loop {
            let (sock, peer) = match self.listeners[i].accept() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("accept: {e}");
                    return;
                }
            };
            match self.add_conn(sock, peer, Role::Control) {
                Ok(id) => self.check_control_peer(id),
                Err(e) => warn!("registering connection from {peer}: {e}"),
            }
        }
    }

    /// The bsdtcp name check happens before anything is read; a failure is answered with
    /// amandad's refusal frame on handle 1 and the connection is closed.
    fn check_control_peer(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get(&id) else {
            return;
        };
        let peer = c.peer;
        let name = self.resolver.lookup(Instant::now(), peer);
        if let Err(reason) = name.check {
            warn!("refused bsdtcp connection from {peer}: {reason}");
            self.with_conn(id, |c| {
                let mut frame = Vec::new();
                if security::preread_refusal_frame(
                    reason.as_bytes(),
                    security::RefusalStyle::Amanda351,
                    &mut frame,
                )
                .is_ok()
                {
                    c.push(&frame);
                }
                c.close_when_flushed = true;
                c.read_closed = true;
            });
        }
    }

    /// Runs `f` on a connection and flushes it.
    fn with_conn(&mut self, id: u64, f: impl FnOnce(&mut Conn)) {
        if let Some((_, c)) = self.conns.get_mut(&id) {
            f(c);
        }
        self.flush_conn(id);
    }

    fn flush_conn(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get_mut(&id) else {
            return;
        };
        match c.flush() {
            Ok(_) => {}
            Err(e) => {
                debug!("write to {}: {e}", c.peer);
                self.close_conn(id);
                return;
            }
        }
        self.maybe_close_conn(id);
    }

    fn maybe_close_conn(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get(&id) else {
            return;
        };
        let done = c.read_closed && c.pending() == 0 && (c.write_closed || c.role == Role::Control);
        let unused = c.read_closed && c.pending() == 0 && !self.conn_in_use(id);
        if done && unused {
            self.close_conn(id);
        }
    }

    fn conn_in_use(&self, id: u64) -> bool {
        self.tcp_index.keys().any(|(c, _)| *c == id) || self.dumps.values().any(|d| d.uses_conn(id))
    }

    fn close_conn(&mut self, id: u64) {
        if let Some((token, mut c)) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.sources.remove(&token);
            debug!("closed connection {id} to {}", c.peer);
        }
        // Exchanges on a dead connection cannot be answered any more.
        let dead: Vec<u64> = self
            .tcp_index
            .iter()
            .filter(|((c, _), _)| *c == id)
            .map(|(_, ex)| *ex)
            .collect();
        for ex in dead {
            self.finish_exchange(ex, false);
        }
        let dumps: Vec<u64> = self
            .dumps
            .iter()
            .filter(|(_, d)| d.uses_conn(id) && !d.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for d in dumps {
            self.abort_dump(d, "the server closed a data connection");
        }
    }

    fn conn_ready(&mut self, id: u64, readable: bool, writable: bool) {
        if writable {
            self.flush_conn(id);
            // Room in the buffer may let a dump read more.
            let dumps: Vec<u64> = self
                .dumps
                .iter()
                .filter(|(_, d)| d.uses_conn(id))
                .map(|(k, _)| *k)
                .collect();
            for d in dumps {
                self.pump_dump(d);
            }
        }
        if readable {
            self.read_conn(id);
        }
    }

    fn read_conn(&mut self, id: u64) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let (role, peer, failed) = {
            let Some((_, c)) = self.conns.get_mut(&id) else {
                self.read_buf = buf;
                return;
            };
            let failed = c.read_available(&mut buf).err();
            (c.role, c.peer, failed)
        };
        if let Some(e) = failed {
            debug!("read from {peer}: {e}");
        }
        match role {
            Role::Control | Role::DataMux => self.read_frames(id, &buf),
            // The server sends nothing on a raw data stream; EOF is what matters.
            Role::DataRaw => {}
        }
        self.read_buf = buf;
        let closed = self.conns.get(&id).is_none_or(|(_, c)| c.read_closed);
        if closed {
            self.peer_closed(id);
        }
    }

    fn read_frames(&mut self, id: u64, bytes: &[u8]) {
        let mut input = bytes;
        loop {
            let frame = {
                let Some((_, c)) = self.conns.get_mut(&id) else {
                    return;
                };
                match c.reader.next(&mut input) {
                    Ok(Some(f)) => f.into_owned(),
                    Ok(None) => return,
                    Err(e) => {
                        warn!("from {}: {e}; closing the connection", c.peer);
                        c.read_closed = true;
                        return;
                    }
                }
            };
            self.frame(id, frame.handle, &frame.payload);
        }
    }

    fn frame(&mut self, conn: u64, handle: u32, payload: &[u8]) {
        let now = Instant::now();
        if payload.is_empty() {
            // End of a stream: a control handle closed by the server, or one of our streams.
            let dumps: Vec<u64> = self
                .dumps
                .iter()
                .filter(|(_, d)| d.uses_conn(conn))
                .map(|(k, _)| *k)
                .collect();
            for d in dumps {
                if let Some(dump) = self.dumps.get_mut(&d) {
                    dump.peer_closed_stream(conn, handle);
                }
                self.maybe_reap_dump(d);
            }
            return;
        }
        let packet = match proto::tcp::Packet::parse(payload) {
            Ok(p) => p,
            Err(e) => {
                debug!("bad packet on handle {handle}: {e}");
                return;
            }
        };
        if let Some(&ex) = self.tcp_index.get(&(conn, handle)) {
            if let Some(e) = self.exchanges.get_mut(&ex) {
                e.responder
                    .handle_packet(now, packet.ptype, packet.body_without_security());
                self.sync_exchange(ex);
            }
            return;
        }
        let Some((_, c)) = self.conns.get(&conn) else {
            return;
        };
        if c.role != Role::Control {
            return;
        }
        let peer = c.peer;
        let name = self.resolver.lookup(now, peer).name;
        let body = packet.body.to_vec();
        self.new_packet(
            Route::Tcp { conn, handle },
            &name,
            peer,
            packet.ptype,
            &body,
        );
    }

    fn peer_closed(&mut self, id: u64) {
        debug!("connection {id}: peer closed");
        let dumps: Vec<u64> = self
            .dumps
            .iter()
            .filter(|(_, d)| d.uses_conn(id))
            .map(|(k, _)| *k)
            .collect();
        for d in dumps {
            if let Some(dump) = self.dumps.get_mut(&d) {
                dump.peer_closed_conn(id);
            }
            self.maybe_reap_dump(d);
        }
        self.maybe_close_conn(id);
    }
}
