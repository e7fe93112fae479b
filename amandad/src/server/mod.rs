//! The event loop: one thread, one `mio::Poll`, every socket, pipe and timer of the daemon.
//!
//! Sources: UDP control sockets (fd 0 under inetd, or our own), TCP listeners (standalone
//! bsdtcp), TCP connections (bsdtcp control connections, bsd/bsdudp data connections), the
//! listening sockets of bsd/bsdudp data streams, the pipes of running dumps, and a waker for
//! the worker pool. Every readable source is drained to `WouldBlock` (edge-triggered); after
//! each batch the exchanges' transmits are sent and the next timeout is computed from them.
//!
//! Every resource a peer can make the loop hold is bounded ([`Limits`]): control connections
//! (a cap, oldest unauthenticated evicted first, and a deadline for making an accepted
//! request; see [`limits`]), partial input (one budget for frames being assembled and
//! datagrams waiting for a name, the largest holder dropped first), output (a peer that does
//! not read its replies stops being read, and is closed when it takes nothing for a while),
//! requests per connection, name lookups (a bounded queue, [`crate::resolve::Names`]), and
//! the log (refusals are summarised, [`refusals`]).
//!
//! Protocol decisions are not made here: a new packet goes through [`crate::intake::judge`],
//! an exchange is a [`proto::exchange::Responder`], a service's work comes from
//! [`crate::services::start`]. What this module does is move bytes and keep the books: which
//! packet belongs to which exchange (UDP: socket, peer, handle and sequence; TCP: connection
//! and handle), which stream goes where, when to stop reading a pipe (the connection's
//! output buffer is the backpressure), and when the process may exit.
//!
//! The session heartbeat (issue 14): on the connections `--dial-out` opened, and on those
//! whose noop asked for it ([`proto::heartbeat`]: our dumper behind an HTTP proxy), a
//! `PING 0` frame goes out while the connection sent nothing for the interval, and the
//! server's are dropped. Other connections never see one.
//!
//! What this module must not do: block (file-system work goes to the pool, name lookups to
//! the resolver threads; the only blocking call is reaping a tar that already closed its
//! pipes), write to fds 0-2, or log a line per refused request above debug.

pub(crate) mod chain;
mod conn;
pub mod datapath;
mod dump;
pub use daemon::limits;
pub mod refusals;
pub mod tls;
mod workers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use proto::exchange::{Packet, Responder, ResponderConfig, ResponderEvent};
use proto::pkt::PacketType;
use proto::security::{self, Peer, SecurityLine};
use proto::udp::Datagram;

pub use conn::{Conn, Role};
use dump::Dump;
use workers::{JobOutput, Workers};

use crate::intake::{self, HostsCheck, Policy, Verdict};
use crate::resolve::{self, CacheConfig, Lane, Lookup, Names, PeerName, PoolConfig};
use crate::services::{self, Service, ServiceContext, Start};
use limits::{Admission, Admit, Holder, InputBudget};
use proto::Auth;
use refusals::{Reason, RefusalLog};

const WAKER: Token = Token(0);

/// Bytes read from a connection per step: the loop looks at its bounds between steps, so
/// one step is the most a peer can get past them.
const READ_CHUNK: usize = 16 << 10;

/// Datagrams read per socket before the other events get their turn.
const UDP_BATCH: usize = 256;

/// Connections accepted per listener and round, after the other events of the round: a
/// flood of connections must not evict a server's connection before its REQ is read
/// (well under the connection cap), nor fill the kernel's backlog (which drops SYNs).
const ACCEPT_BATCH: usize = 64;

/// Unwritten output at which an unauthenticated connection stops being read: its NAKs are
/// a few hundred bytes, so anything beyond this is a peer that sends and never reads.
const UNAUTH_MAX_OUTPUT: usize = 16 << 10;

/// How long to wait before accepting again when descriptors ran out.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// The bounds of the loop (settings `[amandad]`; see README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Control connections at once (already lowered to fit RLIMIT_NOFILE).
    pub max_connections: usize,
    /// Deadline for a control connection to make an accepted request.
    pub unauth_timeout: Duration,
    /// Bytes of partial input (frames being assembled, datagrams waiting for a name).
    pub partial_input: usize,
    /// Unwritten output at which an authenticated connection stops being read.
    pub max_output: usize,
    /// A connection not read for its output is closed after this long without progress.
    pub stalled_output: Duration,
    /// Exchanges at once on one connection.
    pub max_requests_per_conn: usize,
    /// Refusals are summarised once per this interval.
    pub refusal_summary: Duration,
    pub name_cache: CacheConfig,
    pub resolver: PoolConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            unauth_timeout: Duration::from_secs(30),
            partial_input: 16 << 20,
            max_output: 1 << 20,
            stalled_output: Duration::from_secs(120),
            max_requests_per_conn: 64,
            refusal_summary: Duration::from_secs(60),
            name_cache: CacheConfig::default(),
            resolver: PoolConfig::default(),
        }
    }
}

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

/// What waits for the name of one address.
#[derive(Default)]
struct Waiters {
    /// The first datagram from it (later ones are dropped: the server retransmits).
    datagram: Option<(usize, SocketAddr, Vec<u8>)>,
    /// Control connections not read until the name is known.
    conns: Vec<u64>,
}

/// Everything the loop is configured with.
pub struct ServerConfig {
    pub mode: Mode,
    /// The auth of UDP sockets (bsd or bsdudp).
    pub udp_auth: Auth,
    pub enabled: Vec<Service>,
    pub global_error: Option<String>,
    pub conf_error: Option<(String, bool)>,
    /// Exit after this long without work (inetd UDP mode); `None` never (`-no-exit`).
    pub idle_exit: Option<Duration>,
    pub responder: ResponderConfig,
    pub keepalive: Option<Keepalive>,
    pub workers: usize,
    pub dns_check: bool,
    /// The client's port range for data-stream listeners (amanda-client.conf
    /// `unreserved-tcp-port`; Debian's build: 50000-50100).
    pub data_ports: proto::PortRange,
    /// The services' view for requests on UDP sockets (auth `udp_auth`).
    pub services_udp: ServiceContext,
    /// The services' view for requests on bsdtcp (or ssl) connections.
    pub services_tcp: ServiceContext,
    /// The auth of TCP connections: bsdtcp, or ssl with [`ServerConfig::tls`].
    pub tcp_auth: Auth,
    /// auth ssl: the TLS setup of every TCP control connection.
    pub tls: Option<tls::Acceptor>,
    pub hosts: Box<dyn HostsCheck>,
    pub limits: Limits,
    /// Addresses besides the requesting server's that may connect to bsd/bsdudp data ports
    /// (settings `extra_data_peers`: a relay or NAT on the control path only).
    pub extra_data_peers: Vec<IpAddr>,
    /// Threads compressing client gzip for all dumps together (settings
    /// `compress_threads`).
    pub compress_threads: std::num::NonZeroUsize,
    /// `--dial-out` (issue 14): the server's name as `.amandahosts` lists it, for the
    /// connections this host opened to it ([`Server::dialed`]).
    pub dialed_server_name: String,
    /// `--dial-out` (issue 14): a session sends [`proto::dialin::session_heartbeat`] when
    /// it sent nothing for this long (`amandad.dial_out.session_heartbeat_secs`; `None`:
    /// off), for proxies that close quiet tunnels.
    pub session_heartbeat: Option<Duration>,
}

/// How many connections opened by `--dial-out` may wait to be taken by the loop.
const DIALED_QUEUE: usize = 64;

/// Hands connections this host opened to the server (`--dial-out`, issue 14) to the loop,
/// which serves them as accepted bsdtcp connections from that server.
#[derive(Clone)]
pub struct Dialed {
    tx: crossbeam_channel::Sender<std::net::TcpStream>,
    waker: Arc<Waker>,
}

impl Dialed {
    /// Gives `stream` to the loop; it comes back when the queue is full.
    pub fn hand_over(
        &self,
        stream: std::net::TcpStream,
    ) -> Result<(), crossbeam_channel::TrySendError<std::net::TcpStream>> {
        self.tx.try_send(stream)?;
        let _ = self.waker.wake();
        Ok(())
    }
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
    /// A descriptor of a dump's client filter (stdin, stdout, stderr, pidfd).
    Filter(u64),
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
    service: Service,
    args: Vec<u8>,
    partial_ok: bool,
    work: Work,
    scheduled: Option<Instant>,
}

/// The daemon's event loop and all its state.
pub struct Server {
    poll: Poll,
    workers: Workers,
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
    names: Names,
    waiting: HashMap<IpAddr, Waiters>,
    admission: Admission,
    budget: InputBudget,
    refusals: RefusalLog,
    /// Listeners with connections left in their backlog (accepting resumes after the other
    /// events), and when to retry after running out of descriptors.
    accept_more: Vec<bool>,
    accept_retry: Option<Instant>,
    /// UDP sockets with datagrams left to read.
    udp_more: Vec<bool>,
    /// Connections not read because their peer does not take its output, and those of them
    /// whose peer took some since.
    paused: HashSet<u64>,
    to_resume: BTreeSet<u64>,
    last_busy: Instant,
    inetd_conn: Option<u64>,
    recv_buf: Vec<u8>,
    read_buf: Vec<u8>,
    /// auth ssl: the certificate-check thread.
    tls_checks: Option<tls::CertChecks>,
    /// Wakes the loop from other threads (workers, resolver, gzip pool).
    waker: Arc<Waker>,
    /// The gzip pool of every dump with client gzip, made at the first one.
    gzip: Option<filters::GzipPool>,
    /// Connections `--dial-out` opened, waiting to be served.
    dialed_rx: crossbeam_channel::Receiver<std::net::TcpStream>,
    dialed_tx: crossbeam_channel::Sender<std::net::TcpStream>,
    /// The connections whose server speaks the session heartbeat (issue 14): those
    /// `--dial-out` opened, and those whose noop asked for it (a dumper behind an HTTP
    /// proxy, [`proto::heartbeat`]); with the interval we send at (`None`: we only drop
    /// the server's). Pruned as they close.
    beating: std::collections::BTreeMap<u64, Option<Duration>>,
}

impl Server {
    /// Sets the loop up with its first sockets.
    pub fn new(cfg: ServerConfig, sockets: Sockets) -> io::Result<Server> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let workers = Workers::new(cfg.workers, waker.clone())?;
        let limits = cfg.limits;
        // The certificate checks and the resolver run on threads that wake the loop.
        let wake = |waker: &Arc<Waker>| {
            let waker = waker.clone();
            Arc::new(move || {
                let _ = waker.wake();
            })
        };
        let tls_checks = match &cfg.tls {
            Some(a) => Some(tls::CertChecks::new(a.settings.clone(), wake(&waker))?),
            None => None,
        };
        let names = Names::new(
            limits.name_cache,
            limits.resolver,
            resolve::system_lookup(cfg.dns_check),
            wake(&waker),
        )?;
        let (dialed_tx, dialed_rx) = crossbeam_channel::bounded(DIALED_QUEUE);
        let mut server = Server {
            dialed_tx,
            dialed_rx,
            beating: std::collections::BTreeMap::new(),
            poll,
            workers,
            names,
            waiting: HashMap::new(),
            admission: Admission::new(limits.max_connections, limits.unauth_timeout),
            budget: InputBudget::new(limits.partial_input),
            // Under inetd's `nowait` every connection is a process of its own: announcing
            // each one's first refusal would be a line per hostile connection.
            refusals: RefusalLog::new(limits.refusal_summary, cfg.mode != Mode::InetdTcp),
            accept_more: Vec::new(),
            accept_retry: None,
            udp_more: Vec::new(),
            paused: HashSet::new(),
            to_resume: BTreeSet::new(),
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
            tls_checks,
            waker,
            gzip: None,
        };
        for s in sockets.udp {
            s.set_nonblocking(true)?;
            let mut sock = UdpSocket::from_std(s);
            server.register(&mut sock, Source::Udp(server.udp.len()), Interest::READABLE)?;
            server.udp.push(sock);
            server.udp_more.push(false);
        }
        for l in sockets.listeners {
            l.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(l);
            let source = Source::Listener(server.listeners.len());
            server.register(&mut listener, source, Interest::READABLE)?;
            server.listeners.push(listener);
            server.accept_more.push(false);
        }
        if let Some(c) = sockets.conn {
            c.set_nonblocking(true)?;
            let peer = c.peer_addr()?;
            let id = server.add_conn(TcpStream::from_std(c), peer, Role::Control)?;
            server.inetd_conn = Some(id);
            server.admission.admit(Instant::now(), id);
            server.check_control_peer(id);
        }
        Ok(server)
    }

    /// Where `--dial-out` hands the connections it opened.
    pub fn dialed(&self) -> Dialed {
        Dialed {
            tx: self.dialed_tx.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Serves the connections `--dial-out` opened as accepted bsdtcp connections, except
    /// that their source port is not checked (this host chose it) and their peer is the
    /// configured server name, not what a reverse lookup of a NAT's address says.
    fn drain_dialed(&mut self) {
        while let Ok(stream) = self.dialed_rx.try_recv() {
            let peer = match stream
                .set_nonblocking(true)
                .and_then(|()| stream.peer_addr())
            {
                Ok(p) => p,
                Err(e) => {
                    debug!("dialed connection: {e}");
                    continue;
                }
            };
            let id = match self.add_conn(TcpStream::from_std(stream), peer, Role::Control) {
                Ok(id) => id,
                Err(e) => {
                    debug!("registering dialed connection to {peer}: {e}");
                    continue;
                }
            };
            if let Some((_, c)) = self.conns.get_mut(&id) {
                c.dialed = true;
                self.beating.insert(id, self.cfg.session_heartbeat);
            }
            match self.admission.admit(Instant::now(), id) {
                Admit::Accept => {}
                Admit::Evict(old) => self.close_for(old, Reason::OverCap),
                Admit::Refuse => {
                    self.close_conn(id);
                    continue;
                }
            }
            self.check_control_peer(id);
        }
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
                    self.drain_dialed();
                    self.drain_jobs();
                    self.drain_names();
                    self.drain_tls_checks();
                    // Or the gzip pool has output.
                    self.pump_filtered_dumps();
                    continue;
                }
                let Some(source) = self.sources.get(&token).copied() else {
                    continue;
                };
                match source {
                    Source::Udp(i) => self.read_udp(i),
                    // Accepted after the other events, one batch a round.
                    Source::Listener(i) => self.accept_more[i] = true,
                    Source::Conn(id) => {
                        self.conn_ready(id, event.is_readable(), event.is_writable())
                    }
                    Source::DataListener(dump, slot) => self.accept_data(dump, slot),
                    Source::DataPipe(dump) => self.pipe_ready(dump, true),
                    Source::MsgPipe(dump) => self.pipe_ready(dump, false),
                    Source::Filter(dump) => self.pump_dump(dump),
                }
            }
            // Results may also arrive without a wake-up having been seen yet.
            self.drain_jobs();
            self.drain_names();
            self.drain_tls_checks();
            self.resume_reads();
            self.resume_udp();
            self.resume_accepting();
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
        !self.exchanges.is_empty() || !self.dumps.is_empty() || !self.waiting.is_empty()
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
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if self.cfg.mode == Mode::InetdUdp
            && !self.busy()
            && let Some(idle) = self.cfg.idle_exit
        {
            at(Some(self.last_busy + idle));
        }
        at(self.admission.deadline());
        at(self.refusals.deadline());
        at(self.stall_deadline());
        at(self.heartbeat_deadline());
        if !self.to_resume.is_empty() || self.udp_more.iter().any(|m| *m) {
            at(Some(now));
        }
        if self.accept_more.iter().any(|m| *m) {
            at(Some(self.accept_retry.unwrap_or(now)));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn token(&mut self, source: Source) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.sources.insert(token, source);
        token
    }

    /// Registers `io` with the poll under a new token for `source`; returns the token.
    fn register(
        &mut self,
        io: &mut impl mio::event::Source,
        source: Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let token = self.token(source);
        self.poll.registry().register(io, token, interest)?;
        Ok(token)
    }

    /// The daemon's gzip pool (`compress_threads` threads, shared by every dump).
    fn gzip_pool(&mut self) -> &filters::GzipPool {
        let threads = self.cfg.compress_threads;
        self.gzip
            .get_or_insert_with(|| filters::GzipPool::new(threads))
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ------------------------------------------------------------------ UDP control

    /// Reads up to [`UDP_BATCH`] datagrams; the rest wait for the next round, after the
    /// events already seen (a flood must not starve connections and timers).
    fn read_udp(&mut self, sock: usize) {
        self.udp_more[sock] = true;
        let mut n = 0;
        while n < UDP_BATCH {
            let (len, peer) = match self.udp[sock].recv_from(&mut self.recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_more[sock] = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("udp recv: {e}");
                    return;
                }
            };
            n += 1;
            let datagram = self.recv_buf[..len].to_vec();
            self.udp_datagram(sock, peer, &datagram);
        }
    }

    /// Continues reading the UDP sockets where a batch stopped.
    fn resume_udp(&mut self) {
        for i in 0..self.udp.len() {
            if self.udp_more[i] {
                self.read_udp(i);
            }
        }
    }

    fn udp_datagram(&mut self, sock: usize, peer: SocketAddr, bytes: &[u8]) {
        self.udp_packet(sock, peer, bytes, None);
    }

    /// A datagram, with its sender's name when the caller already has it.
    fn udp_packet(&mut self, sock: usize, peer: SocketAddr, bytes: &[u8], known: Option<PeerName>) {
        let now = Instant::now();
        let dgram = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                // amandad drops what it cannot parse, silently for the peer.
                let ip = resolve::unmap(peer.ip());
                self.refuse(Some(ip), Reason::Malformed, || {
                    format!("dropped datagram from {peer}: {e}")
                });
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
        let ip = resolve::unmap(peer.ip());
        let lookup = match known {
            Some(name) => Lookup::Known(name),
            None => self.names.lookup(now, peer, Lane::of(peer)),
        };
        let name = match lookup {
            Lookup::Known(name) => name,
            Lookup::Pending => {
                // Held (one per address, within the budget) until the name is known; the
                // server retransmits anything dropped here.
                let w = self.waiting.entry(ip).or_default();
                if w.datagram.is_none() && self.budget.fits(bytes.len()) {
                    w.datagram = Some((sock, peer, bytes.to_vec()));
                    self.budget.set(Holder::Datagram(ip), bytes.len());
                } else {
                    debug!(
                        "dropped {} from {peer}: its name is still being looked up",
                        dgram.ptype
                    );
                }
                return;
            }
            Lookup::Busy => {
                self.refuse(Some(ip), Reason::ResolverBusy, || {
                    format!(
                        "dropped {} from {peer}: too many name lookups queued",
                        dgram.ptype
                    )
                });
                return;
            }
        };
        if let Err(reason) = &name.check {
            // On UDP a failed name check is a silent drop (the server sees a timeout).
            self.refuse(Some(ip), Reason::NameCheck, || {
                format!("dropped {} from {peer}: {reason}", dgram.ptype)
            });
            return;
        }
        let body = dgram.body.to_vec();
        self.new_packet(route, &name.name, peer, dgram.ptype, &body);
    }

    /// Counts a refusal: a debug line each, an info line for the first after a quiet
    /// interval, then a summary per interval (see [`refusals`]).
    fn refuse(&mut self, peer: Option<IpAddr>, reason: Reason, detail: impl FnOnce() -> String) {
        let detail = detail();
        debug!("{detail}");
        if let Some(line) = self.refusals.record(Instant::now(), peer, reason, &detail) {
            info!("{line}");
        }
    }

    /// Answers from the resolver threads: what waited for them goes on.
    fn drain_names(&mut self) {
        for (ip, name) in self.names.take_results(Instant::now()) {
            let Some(w) = self.waiting.remove(&ip) else {
                continue;
            };
            if let Some((sock, peer, bytes)) = w.datagram {
                self.budget.set(Holder::Datagram(ip), 0);
                self.udp_packet(sock, peer, &bytes, Some(name.clone()));
            }
            for id in w.conns {
                self.control_peer_named(id, name.clone());
            }
        }
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
        let ip = resolve::unmap(peer.ip());
        let peer = *peer;
        let bytes = match dgram.to_vec() {
            Ok(b) => b,
            Err(e) => {
                // E.g. a handle too long to echo: the peer's doing, so rate-limited.
                self.refuse(Some(ip), Reason::SendFailed, || {
                    format!("cannot send {ty} to {peer}: {e}")
                });
                return;
            }
        };
        if let Err(e) = self.udp[*sock].send_to(&bytes, peer) {
            // A full socket buffer loses the datagram; the protocol's retransmissions cover it.
            // EPERM is this host's own netfilter refusing it, which retransmission will not fix.
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (this host's firewall dropped it: check its output rules and conntrack helpers, e.g. with `portpool rules`)"
            } else {
                ""
            };
            self.refuse(Some(ip), Reason::SendFailed, || {
                format!("udp send {ty} to {peer}: {e}{hint}")
            });
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
            // ssl's initiator connects from an unreserved port (spec §13.1).
            port_rule: match route {
                Route::Tcp { conn, .. }
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|(_, c)| c.is_tls() || c.dialed) =>
                {
                    security::PortRule::Any
                }
                _ => security::PortRule::Reserved,
            },
        };
        let sec_peer = Peer {
            name: peer_name,
            port: peer.port(),
        };
        let ip = resolve::unmap(peer.ip());
        let verdict = intake::judge(&policy, sec_peer, ip, ty, body);
        match verdict {
            Verdict::Ignore(ty) => debug!("ignored {ty} from {peer} (no such exchange)"),
            Verdict::Nak(nak) => {
                self.refuse(Some(ip), Reason::Nak, || {
                    format!(
                        "refused request from {peer}: {}",
                        String::from_utf8_lossy(&nak).trim_end()
                    )
                });
                self.nak(&route, &nak);
            }
            Verdict::Accept {
                service,
                user,
                args,
            } => {
                let args = args.to_vec();
                self.names.trust(ip);
                if let Route::Tcp { conn, .. } = route {
                    self.admission.authenticated(conn);
                    // auth ssl: a server we serve now may read in large blocks.
                    if let Some(t) = self.conns.get_mut(&conn).and_then(|(_, c)| c.tls.as_mut()) {
                        t.layer.set_bulk_reads(true);
                    }
                    let max = self.cfg.limits.max_requests_per_conn;
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|(_, c)| c.exchanges >= max)
                    {
                        self.refuse(Some(ip), Reason::TooManyRequests, || {
                            format!("refused {} from {peer}: {max} requests already running on its connection", service.name())
                        });
                        let text = format!(
                            "ERROR amandad: {max} requests are already running on this connection\n"
                        );
                        self.nak(&route, text.as_bytes());
                        return;
                    }
                }
                let running = self.exchanges.values().any(|ex| {
                    ex.service == service && ex.args == args && ex.responder.awaiting_reply()
                });
                if running {
                    // amandad's rule 8: the same request is already being served.
                    debug!(
                        "{} from {peer} is already running; ACK only",
                        service.name()
                    );
                    self.send_packet(&route, PacketType::Ack, b"");
                    return;
                }
                // One line per request is too many for info under load (issue 10).
                debug!("{} for {user}@{peer_name} ({peer})", service.name());
                self.start_exchange(route, service, args);
            }
        }
    }

    /// Sends a NAK; on bsdtcp the handle ends with it.
    fn nak(&mut self, route: &Route, body: &[u8]) {
        self.send_packet(route, PacketType::Nak, body);
        if let Route::Tcp { conn, handle } = *route {
            self.with_conn(conn, |c| c.push_eof(handle));
        }
    }

    fn start_exchange(&mut self, route: Route, service: Service, args: Vec<u8>) {
        let now = Instant::now();
        let id = self.new_id();
        let partial_ok = service == Service::Sendsize && dump::server_wants_partial(&args);
        let beat = self.heartbeat_asked(&route, service, &args);
        let responder = Responder::new(now, self.cfg.responder.clone());
        match &route {
            Route::Udp { .. } => {
                self.udp_index.insert(route.clone(), id);
            }
            Route::Tcp { conn, handle } => {
                self.tcp_index.insert((*conn, *handle), id);
                if let Some((_, c)) = self.conns.get_mut(conn) {
                    c.exchanges += 1;
                }
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
            Start::Reply(body) => {
                let body = match beat {
                    Some(every) => proto::heartbeat::grant(body, every),
                    None => body,
                };
                self.reply(id, body)
            }
            Start::Job(job) => self.workers.submit(id, job),
            Start::Backup(plan) => self.start_backup(id, plan),
        }
    }

    /// A noop on a TCP connection that asks for the session heartbeat (our dumper behind an
    /// HTTP proxy, issue 14): the connection sends and drops it from now on, at the interval
    /// asked for. A dialed connection keeps the one its settings give.
    fn heartbeat_asked(
        &mut self,
        route: &Route,
        service: Service,
        args: &[u8],
    ) -> Option<Duration> {
        let Route::Tcp { conn, .. } = *route else {
            return None;
        };
        if service != Service::Noop || self.conns.get(&conn).is_none_or(|(_, c)| c.dialed) {
            return None;
        }
        let every = proto::heartbeat::asked(args)?;
        debug!(
            "connection {conn}: session heartbeat every {} s (asked by the server's noop)",
            every.as_secs()
        );
        self.beating.insert(conn, Some(every));
        Some(every)
    }

    fn reply(&mut self, id: u64, body: Vec<u8>) {
        let body = self.fit_reply(id, body);
        if let Some(ex) = self.exchanges.get_mut(&id) {
            ex.responder.reply(Instant::now(), body);
            if matches!(ex.work, Work::Running) {
                ex.work = Work::Replied;
            }
            self.sync_exchange(id);
        }
    }

    /// A REP that cannot fit in one datagram would never be sent (and the server would
    /// time out): it becomes an error the server shows. Services that can shorten their
    /// reply (selfcheck) do so themselves first.
    fn fit_reply(&self, id: u64, body: Vec<u8>) -> Vec<u8> {
        let Some(ex) = self.exchanges.get(&id) else {
            return body;
        };
        let Route::Udp { handle, seq, .. } = &ex.route else {
            return body;
        };
        let len = Datagram::new(PacketType::Rep, handle, *seq, &body[..]).encoded_len();
        if len <= proto::udp::MAX_DGRAM {
            return body;
        }
        let text = format!(
            "the {} reply is {len} bytes, more than fits in one UDP datagram ({} bytes) of auth {}; auth bsdtcp has no such limit",
            ex.service.name(),
            proto::udp::MAX_DGRAM,
            self.cfg.udp_auth.name()
        );
        warn!("exchange {id}: {text}");
        format!("ERROR [amandad: {text}]\n").into_bytes()
    }

    fn drain_jobs(&mut self) {
        while let Ok(out) = self.workers.results.try_recv() {
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
                    // A lost dump is worth a line of its own; other replies nobody wanted
                    // (a peer that sends REQs and never ACKs) only at debug.
                    if self
                        .exchanges
                        .get(&id)
                        .is_some_and(|ex| ex.service == Service::Sendbackup)
                    {
                        warn!("exchange {id}: the server never ACKed the REP; giving up");
                    } else {
                        debug!("exchange {id}: the server never ACKed the REP; giving up");
                    }
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
                self.with_conn(*conn, |c| {
                    c.exchanges = c.exchanges.saturating_sub(1);
                    c.push_eof(handle);
                });
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
        for id in self.admission.expired(now) {
            let timeout = self.cfg.limits.unauth_timeout.as_secs();
            let peer = self.conns.get(&id).map(|(_, c)| c.peer);
            self.refuse(
                peer.map(|p| resolve::unmap(p.ip())),
                Reason::Unauthenticated,
                || {
                    format!(
                        "closed connection {id} from {}: no accepted request within {timeout} s",
                        peer.map_or_else(|| "?".into(), |p| p.to_string())
                    )
                },
            );
            self.close_conn(id);
        }
        self.close_stalled(now);
        self.send_heartbeats(now);
        if let Some(line) = self.refusals.poll(now) {
            warn!("{line}");
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
                debug!("keepalive on {peer}: {e}");
            }
        }
        let _ = sock.set_nodelay(true);
        let id = self.new_id();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = self.register(&mut sock, Source::Conn(id), interest)?;
        let mut conn = Conn::new(sock, peer, role);
        let tls = match role {
            Role::Control => self.tls_for_new_conn(),
            _ => None,
        };
        let mut tls_error = None;
        match tls {
            Some(Ok(t)) => conn.tls = Some(t),
            Some(Err(e)) => tls_error = Some(e),
            None => {}
        }
        self.conns.insert(id, (token, conn));
        if let Some(e) = tls_error {
            self.tls_refuse(id, &format!("no TLS setup: {e}"));
        }
        Ok(id)
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections; the rest wait for the next round.
    fn accept_control(&mut self, i: usize) {
        self.accept_more[i] = true;
        let mut n = 0;
        while n < ACCEPT_BATCH {
            let (sock, peer) = match self.listeners[i].accept() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more[i] = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors (the cap is below RLIMIT_NOFILE, but dumps and
                    // other processes count too): make room, or try again a little later.
                    if let Some(v) = self.admission.oldest_unauthenticated() {
                        self.close_for(v, Reason::NoDescriptors);
                        continue;
                    }
                    self.refuse(None, Reason::NoDescriptors, || format!("accept: {e}"));
                    self.accept_retry = Some(Instant::now() + EMFILE_PAUSE);
                    return;
                }
                Err(e) => {
                    self.refuse(None, Reason::NoDescriptors, || format!("accept: {e}"));
                    self.accept_retry = Some(Instant::now() + EMFILE_PAUSE);
                    return;
                }
            };
            n += 1;
            self.admit_control(sock, peer);
        }
    }

    /// Accepts a batch on every listener with connections waiting.
    fn resume_accepting(&mut self) {
        if self.accept_retry.is_some_and(|t| t > Instant::now()) {
            return;
        }
        self.accept_retry = None;
        for i in 0..self.listeners.len() {
            if self.accept_more[i] {
                self.accept_control(i);
            }
        }
    }

    fn admit_control(&mut self, sock: TcpStream, peer: SocketAddr) {
        let id = match self.add_conn(sock, peer, Role::Control) {
            Ok(id) => id,
            Err(e) => {
                debug!("registering connection from {peer}: {e}");
                return;
            }
        };
        match self.admission.admit(Instant::now(), id) {
            Admit::Accept => {}
            Admit::Evict(old) => self.close_for(old, Reason::OverCap),
            Admit::Refuse => {
                let cap = self.admission.cap();
                self.refuse(Some(resolve::unmap(peer.ip())), Reason::OverCap, || {
                    format!(
                        "closed connection from {peer}: {cap} connections of servers already open"
                    )
                });
                self.close_conn(id);
                return;
            }
        }
        self.check_control_peer(id);
    }

    /// Closes connection `id` for `reason`, counted as a refusal.
    fn close_for(&mut self, id: u64, reason: Reason) {
        let Some(peer) = self.conns.get(&id).map(|(_, c)| c.peer) else {
            return;
        };
        let cap = self.admission.cap();
        self.refuse(Some(resolve::unmap(peer.ip())), reason, || match reason {
            Reason::OverCap => format!(
                "closed connection {id} from {peer}: the oldest without an accepted request, to stay within {cap} connections"
            ),
            _ => format!("closed connection {id} from {peer} to free a descriptor"),
        });
        self.close_conn(id);
    }

    /// The bsdtcp name check happens before anything is read; a failure is answered with
    /// amandad's refusal frame on handle 1 and the connection is closed. The lookup runs
    /// off the loop; the connection is not read until it is answered.
    fn check_control_peer(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get(&id) else {
            return;
        };
        let peer = c.peer;
        if c.is_tls() && !self.tls_wants_name_check() {
            self.read_conn(id);
            return;
        }
        if c.dialed {
            // We dialed the server ourselves: its name is the configured one.
            let name = self.cfg.dialed_server_name.clone();
            self.control_peer_named(
                id,
                PeerName {
                    name,
                    check: Ok(()),
                },
            );
            return;
        }
        match self.names.lookup(Instant::now(), peer, Lane::of(peer)) {
            Lookup::Known(name) => self.control_peer_named(id, name),
            Lookup::Pending => {
                self.admission.busy(id);
                self.waiting
                    .entry(resolve::unmap(peer.ip()))
                    .or_default()
                    .conns
                    .push(id);
                if let Some((_, c)) = self.conns.get_mut(&id) {
                    c.name_pending = true;
                }
                self.refresh_interest(id);
            }
            Lookup::Busy => {
                self.refuse(
                    Some(resolve::unmap(peer.ip())),
                    Reason::ResolverBusy,
                    || format!("closed connection from {peer}: too many name lookups queued"),
                );
                self.close_conn(id);
            }
        }
    }

    /// The name of a control connection's peer is known: refuse it or start reading.
    fn control_peer_named(&mut self, id: u64, name: PeerName) {
        let Some((_, c)) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c.peer;
        c.name_pending = false;
        if c.is_tls() {
            // auth ssl: the name check passed or failed; the peer's name is its
            // certificate's CN, known after the handshake.
            match name.check {
                Err(reason) => self.tls_refuse(id, &format!("ssl-check-host: {reason}")),
                Ok(()) => {
                    if self.refresh_interest(id) {
                        self.read_conn(id);
                    }
                }
            }
            return;
        }
        c.peer_name = Some(name.name);
        if let Err(reason) = name.check {
            self.refuse(Some(resolve::unmap(peer.ip())), Reason::NameCheck, || {
                format!("refused bsdtcp connection from {peer}: {reason}")
            });
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
            return;
        }
        if self.refresh_interest(id) {
            self.read_conn(id);
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
        if c.paused {
            // The peer took some output; whether reading resumes is decided after this
            // round of events (no edge will come for bytes already waiting).
            self.to_resume.insert(id);
        }
        self.maybe_close_conn(id);
    }

    /// Resumes reading the paused connections whose peers caught up.
    fn resume_reads(&mut self) {
        for id in std::mem::take(&mut self.to_resume) {
            let was_reading = self.conns.get(&id).is_some_and(|(_, c)| c.reading());
            if self.refresh_interest(id) && !was_reading {
                self.read_conn(id);
            }
        }
    }

    /// The most unwritten output connection `id` may have before it stops being read.
    fn output_bound(&self, id: u64) -> usize {
        if self.admission.is_unauthenticated(id) {
            UNAUTH_MAX_OUTPUT
        } else {
            self.cfg.limits.max_output
        }
    }

    /// Pauses reading a connection whose peer does not take its output and resumes it when
    /// the output fell to half the bound; registers the interest that follows. Returns true
    /// when the connection is (now) read.
    fn refresh_interest(&mut self, id: u64) -> bool {
        let bound = self.output_bound(id);
        let Some((token, c)) = self.conns.get_mut(&id) else {
            return false;
        };
        let pending = c.pending();
        if !c.paused && pending > bound {
            c.paused = true;
            self.paused.insert(id);
            debug!(
                "connection {id} to {}: {pending} bytes unread by the peer; not reading it",
                c.peer
            );
        } else if c.paused && pending <= bound / 2 {
            c.paused = false;
            self.paused.remove(&id);
        }
        let reading = c.reading();
        if reading != c.interest_readable {
            let interest = if reading {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::WRITABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut c.sock, *token, interest)
            {
                Ok(()) => c.interest_readable = reading,
                Err(e) => debug!("reregistering connection {id}: {e}"),
            }
        }
        reading
    }

    /// When the next session heartbeat is due.
    fn heartbeat_deadline(&self) -> Option<Instant> {
        self.beating
            .iter()
            .filter_map(|(id, every)| Some(self.conns.get(id)?.1.last_sent + (*every)?))
            .min()
    }

    /// The earliest `at` of the connections `ids` names that are still open.
    fn earliest<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a u64>,
        at: impl Fn(&Conn) -> Instant,
    ) -> Option<Instant> {
        ids.into_iter()
            .filter_map(|id| self.conns.get(id))
            .map(|(_, c)| at(c))
            .min()
    }

    /// Queues a heartbeat on each dial-in session that sent nothing for the interval and
    /// has nothing queued (one that does not take its output gets no more); forgets closed
    /// ones.
    fn send_heartbeats(&mut self, now: Instant) {
        self.beating.retain(|id, _| self.conns.contains_key(id));
        let due: Vec<u64> = self
            .beating
            .iter()
            .filter(|&(id, every)| {
                every.is_some_and(|every| {
                    self.conns.get(id).is_some_and(|(_, c)| {
                        c.last_sent + every <= now && !c.write_closed && !c.close_when_flushed
                    })
                })
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some((_, c)) = self.conns.get_mut(&id) {
                if c.pending() == 0 {
                    c.push(&proto::dialin::session_heartbeat());
                }
                // Written or not, the next one is an interval away.
                c.last_sent = now;
            }
            self.flush_conn(id);
        }
    }

    /// When the next paused connection may be closed for taking no output.
    fn stall_deadline(&self) -> Option<Instant> {
        let stall = self.cfg.limits.stalled_output;
        self.earliest(&self.paused, |c| c.last_progress + stall)
    }

    /// Closes paused connections whose peer took nothing for `stalled_output`, unless they
    /// carry a running dump (a server may pause a dump's stream for a long time, e.g. for a
    /// tape change; keepalive finds a dead one).
    fn close_stalled(&mut self, now: Instant) {
        let stall = self.cfg.limits.stalled_output;
        let due: Vec<u64> = self
            .paused
            .iter()
            .copied()
            .filter(|id| {
                self.conns
                    .get(id)
                    .is_some_and(|(_, c)| c.last_progress + stall <= now)
            })
            .collect();
        for id in due {
            if self
                .dumps
                .values()
                .any(|d| d.uses_conn(id) && !d.is_finished())
            {
                if let Some((_, c)) = self.conns.get_mut(&id) {
                    c.last_progress = now;
                }
                continue;
            }
            let Some(peer) = self.conns.get(&id).map(|(_, c)| c.peer) else {
                self.paused.remove(&id);
                continue;
            };
            self.refuse(Some(resolve::unmap(peer.ip())), Reason::Stalled, || {
                format!(
                    "closed connection {id} from {peer}: it took none of its replies for {} s",
                    stall.as_secs()
                )
            });
            self.close_conn(id);
        }
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

    /// The dumps with a stream on connection `conn`.
    fn dumps_on(&self, conn: u64) -> Vec<u64> {
        self.dumps
            .iter()
            .filter(|(_, d)| d.uses_conn(conn))
            .map(|(k, _)| *k)
            .collect()
    }

    fn conn_in_use(&self, id: u64) -> bool {
        self.conns.get(&id).is_some_and(|(_, c)| c.exchanges > 0)
            || self.dumps.values().any(|d| d.uses_conn(id))
    }

    fn close_conn(&mut self, id: u64) {
        if let Some((token, mut c)) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.sources.remove(&token);
            debug!("closed connection {id} to {}", c.peer);
        }
        self.admission.closed(id);
        self.budget.set(Holder::Conn(id), 0);
        self.paused.remove(&id);
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
            for d in self.dumps_on(id) {
                self.pump_dump(d);
            }
        }
        if readable {
            self.read_conn(id);
        }
    }

    /// Reads what the peer sent, a chunk at a time, until it has nothing more or one of the
    /// bounds says to stop (output not taken, name not known, budget).
    fn read_conn(&mut self, id: u64) {
        loop {
            let mut buf = std::mem::take(&mut self.read_buf);
            let (role, peer, result) = {
                let Some((_, c)) = self.conns.get_mut(&id) else {
                    self.read_buf = buf;
                    return;
                };
                if !c.reading() {
                    self.read_buf = buf;
                    break;
                }
                let r = c.read_chunk(&mut buf, READ_CHUNK);
                (c.role, c.peer, r)
            };
            match result {
                Ok(0) => {
                    self.read_buf = buf;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_buf = buf;
                    // auth ssl: a handshake read no plaintext but may hold ciphertext.
                    self.account_partial(id);
                    self.tls_progress(id);
                    return;
                }
                Err(e) => {
                    // A TLS failure (the handshake, a bad record) is a refusal worth a line;
                    // a reset after the work is done is how Amanda's servers hang up.
                    let tls_failure = self.conns.get(&id).is_some_and(|(_, c)| {
                        c.tls.as_ref().is_some_and(|t| {
                            t.layer.is_handshaking() || e.kind() == io::ErrorKind::InvalidData
                        })
                    });
                    if tls_failure {
                        self.refuse_tls(peer, &ssl::layer::describe_error(&e));
                        // The alert rustls owes the peer.
                        self.flush_conn(id);
                    } else {
                        debug!("read from {peer}: {e}");
                    }
                    self.read_buf = buf;
                    break;
                }
            }
            self.admission.busy(id);
            match role {
                Role::Control | Role::DataMux => self.read_frames(id, &buf),
                // The server sends nothing on a raw data stream; EOF is what matters.
                Role::DataRaw => {}
            }
            self.read_buf = buf;
            self.account_partial(id);
            if !self.refresh_interest(id) {
                break;
            }
        }
        self.tls_progress(id);
        let closed = self.conns.get(&id).is_some_and(|(_, c)| c.read_closed);
        if closed {
            self.peer_closed(id);
        }
    }

    /// Counts connection `id`'s partial frame against the budget; past it, gives up the
    /// largest holders (this connection included) until it fits.
    fn account_partial(&mut self, id: u64) {
        let Some((_, c)) = self.conns.get(&id) else {
            return;
        };
        // auth ssl: what rustls holds of an unfinished handshake is partial input too.
        let tls = c.tls.as_ref().map_or(0, |t| t.layer.handshake_held());
        self.budget.set(Holder::Conn(id), c.reader.buffered() + tls);
        while self.budget.over() {
            let Some(victim) = self.budget.victim() else {
                break;
            };
            let limit = self.budget.limit();
            match victim {
                Holder::Conn(v) => {
                    let peer = self.conns.get(&v).map(|(_, c)| c.peer);
                    let held = self.conns.get(&v).map_or(0, |(_, c)| {
                        c.reader.buffered() + c.tls.as_ref().map_or(0, |t| t.layer.handshake_held())
                    });
                    self.refuse(peer.map(|p| resolve::unmap(p.ip())), Reason::Budget, || {
                        format!(
                            "closed connection {v} from {}: it holds {held} bytes of an unfinished frame or TLS handshake, the most while all partial input passed {limit} bytes",
                            peer.map_or_else(|| "?".into(), |p| p.to_string())
                        )
                    });
                    self.close_conn(v);
                    self.budget.set(victim, 0);
                }
                Holder::Datagram(ip) => {
                    if let Some(w) = self.waiting.get_mut(&ip) {
                        w.datagram = None;
                    }
                    self.budget.set(victim, 0);
                    self.refuse(Some(ip), Reason::Budget, || {
                        format!("dropped a datagram from {ip} waiting for its name: all partial input passed {limit} bytes")
                    });
                }
            }
        }
    }

    fn read_frames(&mut self, id: u64, bytes: &[u8]) {
        let mut input = bytes;
        loop {
            let frame = {
                let Some((_, c)) = self.conns.get_mut(&id) else {
                    return;
                };
                if c.read_closed {
                    return;
                }
                match c.reader.next(&mut input) {
                    Ok(Some(f)) => f.into_owned(),
                    Ok(None) => return,
                    Err(e) => {
                        c.read_closed = true;
                        let peer = c.peer;
                        self.refuse(Some(resolve::unmap(peer.ip())), Reason::BadFraming, || {
                            format!("from {peer}: {e}; closing the connection")
                        });
                        return;
                    }
                }
            };
            self.frame(id, frame.handle, &frame.payload);
        }
    }

    fn frame(&mut self, conn: u64, handle: u32, payload: &[u8]) {
        let now = Instant::now();
        if !payload.is_empty()
            && proto::dialin::is_session_heartbeat(handle)
            && self.beating.contains_key(&conn)
        {
            // The server's session heartbeat: nothing to answer.
            return;
        }
        if payload.is_empty() {
            // End of a stream: a control handle closed by the server, or one of our streams.
            self.tell_dumps_on(conn, |dump| dump.peer_closed_stream(conn, handle));
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
        // Control connections are read only once the name is known (and passed).
        let Some(name) = c.peer_name.clone() else {
            return;
        };
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
        self.tell_dumps_on(id, |dump| dump.peer_closed_conn(id));
        self.maybe_close_conn(id);
    }

    /// Tells every dump with a stream on connection `conn` what happened to it (`event`),
    /// then reaps those that are done.
    fn tell_dumps_on(&mut self, conn: u64, mut event: impl FnMut(&mut Dump)) {
        for d in self.dumps_on(conn) {
            if let Some(dump) = self.dumps.get_mut(&d) {
                event(dump);
            }
            self.maybe_reap_dump(d);
        }
    }
}
