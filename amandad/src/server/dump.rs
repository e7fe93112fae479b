//! The sendbackup relay: the data streams of one dump, from the REP to the last byte.
//!
//! Streams by auth (spec §4.2-§4.4):
//! - bsd: one listening TCP socket per stream (DATA, MESG, INDEX), each accepting one raw
//!   connection from the server;
//! - bsdudp: one listening socket; its one connection carries every stream as frames, DATA
//!   on the port number as handle, MESG and INDEX on 499999, 499998;
//! - bsdtcp: frames on the control connection itself, handles 499999, 499998, 499997.
//!
//! The listening sockets exist before the REP is sent (the REP names their ports) and take
//! their ports from the client's `unreserved-tcp-port` range, so a firewall in front of the
//! client can stay narrow. They accept only connections from the address the REQ came from
//! (others are closed and counted as refusals).
//!
//! The rules of the data phase (when the dump starts, the accept deadline, nothing on DATA
//! before `sendbackup: info end`, how each stream ends, what the server closing a stream
//! means, the CRC accounting) are `proto::dataphase::Sender`'s; this shell feeds it what the
//! sockets and pipes say and does what its events ask. What stays here: the sockets, the
//! pipes, the processes, and moving bytes: the archive from the data pipe straight into the
//! DATA stream's output buffer (one read, no intermediate copy; the CRC is taken on that same
//! buffer), tar's messages through [`BackupRun::on_messages`]. A connection's unwritten
//! output is the backpressure: the data pipe is not read while it is above the high-water
//! mark.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Child;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Interest;
use mio::net::TcpListener;
use mio::unix::SourceFd;

use super::chain::ClientChain;
use super::conn::{HIGH_WATER, MAX_DATA_FRAME, Role};
use super::datapath::ZeroCopy;
use super::refusals::Reason;
use super::{Route, Server, Source, Timer, Work};
use crate::services::backup::{BackupPlan, BackupRun, StreamOutput};
use proto::dataphase::{Sender, SenderConfig, SenderEvent};
use proto::{Auth, Stream};

/// Largest single read from the data pipe.
const DATA_READ: usize = 256 << 10;

/// The streams of a dump amandad opens, in [`Stream::index`] order (never STATE).
const STREAMS: [Stream; 3] = [Stream::Data, Stream::Mesg, Stream::Index];

/// Where one stream's bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    /// The stream does not exist (no index).
    Absent,
    /// Not connected yet (bsd/bsdudp before the server connects).
    Pending,
    /// A raw connection of its own (bsd).
    Raw(u64),
    /// Frames with `handle` on a connection (bsdudp data connection, bsdtcp control).
    Framed(u64, u32),
}

struct Pipe {
    fd: OwnedFd,
    token: mio::Token,
    /// An edge said readable and we have not seen WouldBlock since.
    readable: bool,
    eof: bool,
}

/// One sendbackup, from its REP to its last byte.
pub struct Dump {
    auth: Auth,
    plan: Option<Box<BackupPlan>>,
    /// The data phase's rules and CRCs.
    sender: Sender,
    /// The sender's deadline as armed in the loop's timers.
    armed: Option<Instant>,
    /// Where each stream goes, indexed by [`Stream::index`].
    sinks: [Sink; 3],
    /// Stream ids as announced in the REP (ports or handles).
    ids: [i64; 3],
    listeners: Vec<(usize, TcpListener, mio::Token)>,
    run: Option<BackupRun>,
    child: Option<Child>,
    data: Option<Pipe>,
    msgs: Option<Pipe>,
    /// The client filters (compression, encryption), when the DLE has any, and the tokens
    /// of their descriptors.
    chain: Option<ClientChain>,
    chain_tokens: Vec<mio::Token>,
    /// Why the client filters failed (the dump fails with it; tar is stopped).
    filter_error: Option<String>,
    tar_stopped: bool,
    /// Where archive bytes are read to on their way into the filters.
    scratch: Vec<u8>,
    started: Instant,
    bytes: u64,
    /// The zero-copy DATA path: `tee` into this side pipe tells how many bytes the archive
    /// pipe holds, the CRC is taken from the side copy, and the archive bytes are spliced
    /// into the socket. `None` until first used; `splice_ok` false after the kernel refused.
    side: Option<ZeroCopy>,
    splice_ok: bool,
    /// For logs: `dump <id> (<auth>)`.
    label: String,
    /// The requesting server's address: the only one the data listeners accept.
    server_ip: Option<IpAddr>,
}

impl Dump {
    /// True if connection `id` carries one of this dump's streams.
    pub fn uses_conn(&self, id: u64) -> bool {
        self.sinks.iter().any(|s| match s {
            Sink::Raw(c) | Sink::Framed(c, _) => *c == id,
            _ => false,
        })
    }

    /// Our side of every stream is closed or closing (the dump is complete or aborted).
    pub fn is_finished(&self) -> bool {
        self.sender.is_over()
    }

    fn sink(&self, stream: Stream) -> Sink {
        self.sinks[stream.index()]
    }

    /// The archive pipe's descriptor and where DATA goes (connection, frame handle), when
    /// the pipe may have bytes and DATA has a connection.
    fn data_source(&self) -> Option<(RawFd, u64, Option<u32>)> {
        let pipe = self.data.as_ref().filter(|p| p.readable && !p.eof)?;
        let (conn, handle) = match self.sink(Stream::Data) {
            Sink::Raw(c) => (c, None),
            Sink::Framed(c, h) => (c, Some(h)),
            Sink::Absent | Sink::Pending => return None,
        };
        Some((pipe.fd.as_raw_fd(), conn, handle))
    }

    /// The server sent end-of-stream for `handle` on `conn`.
    pub fn peer_closed_stream(&mut self, conn: u64, handle: u32) {
        for s in STREAMS {
            if self.sink(s) == Sink::Framed(conn, handle) {
                self.sender.on_peer_closed(s);
            }
        }
    }

    /// The server closed connection `conn` (every stream on it).
    pub fn peer_closed_conn(&mut self, conn: u64) {
        for s in STREAMS {
            if matches!(self.sink(s), Sink::Raw(c) | Sink::Framed(c, _) if c == conn) {
                self.sender.on_peer_closed(s);
            }
        }
    }
}

/// True if the REQ's OPTIONS line carries server features with `partial_estimate` (bit 52).
pub fn server_wants_partial(args: &[u8]) -> bool {
    server_feature(args, proto::features::Feature::PARTIAL_ESTIMATE)
}

fn server_feature(args: &[u8], feature: proto::features::Feature) -> bool {
    let line = args.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(value) = line.strip_prefix(b"OPTIONS ") else {
        return false;
    };
    proto::options::Options::parse(value)
        .options
        .features
        .is_some_and(|f| f.has(feature))
}

impl Server {
    /// A sendbackup REQ was accepted and planned: open the streams and send the REP.
    pub(super) fn start_backup(&mut self, ex_id: u64, plan: Box<BackupPlan>) {
        let Some(ex) = self.exchanges.get(&ex_id) else {
            return;
        };
        let route = ex.route.clone();
        let auth = match route {
            Route::Tcp { .. } => self.cfg.tcp_auth,
            Route::Udp { .. } => self.cfg.udp_auth,
        };
        let index = plan.index;
        let wanted = [true, true, index];
        let mut sinks = [Sink::Absent; 3];
        let mut ids = [-1i64; 3];
        let mut listeners = Vec::new();
        let dump_id = self.new_id();
        match (&route, auth) {
            (Route::Tcp { conn, .. }, _) => {
                let Some((_, c)) = self.conns.get_mut(conn) else {
                    return;
                };
                for (i, _) in wanted.iter().enumerate().filter(|(_, w)| **w) {
                    let h = c.stream_handles.next().unwrap_or(0);
                    sinks[i] = Sink::Framed(*conn, h);
                    ids[i] = i64::from(h);
                }
            }
            (Route::Udp { peer, .. }, auth) => {
                let count = if auth == Auth::Bsd {
                    wanted.iter().filter(|w| **w).count()
                } else {
                    1
                };
                for slot in 0..count {
                    match self.open_data_listener(peer.ip()) {
                        Ok((listener, port)) => listeners.push((slot, listener, port)),
                        Err(e) => {
                            let msg = format!(
                                "ERROR [amandad: cannot listen for the data streams in {}: {e}]\n",
                                self.cfg.data_ports
                            );
                            warn!("{}", msg.trim_end());
                            self.reply(ex_id, msg.into_bytes());
                            return;
                        }
                    }
                }
                if auth == Auth::Bsd {
                    let mut it = listeners.iter();
                    for i in 0..3 {
                        if wanted[i]
                            && let Some((_, _, port)) = it.next()
                        {
                            sinks[i] = Sink::Pending;
                            ids[i] = i64::from(*port);
                        }
                    }
                } else if let Some((_, _, port)) = listeners.first() {
                    let mut handles = proto::tcp::StreamHandles::default();
                    for i in 0..3 {
                        if wanted[i] {
                            sinks[i] = Sink::Pending;
                            ids[i] = if i == Stream::Data.index() {
                                i64::from(*port)
                            } else {
                                i64::from(handles.next().unwrap_or(0))
                            };
                        }
                    }
                }
            }
        }
        let mut registered = Vec::new();
        for (slot, listener, _) in listeners {
            let mut l = listener;
            let token = self.token(Source::DataListener(dump_id, slot));
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut l, token, Interest::READABLE)
            {
                warn!("registering a data listener: {e}");
            }
            registered.push((slot, l, token));
        }
        let rep = rewrite_connect(&plan.rep, &ids);
        let label = format!("dump {dump_id} ({})", auth.name());
        let server_ip = match &route {
            Route::Udp { peer, .. } => Some(crate::resolve::unmap(peer.ip())),
            Route::Tcp { .. } => None,
        };
        debug!(
            "{label}: streams DATA {} MESG {} INDEX {}",
            ids[0], ids[1], ids[2]
        );
        let streams: Vec<(Stream, bool)> = STREAMS
            .iter()
            .zip(sinks)
            .filter(|(_, k)| *k != Sink::Absent)
            .map(|(s, k)| (*s, matches!(k, Sink::Raw(_) | Sink::Framed(..))))
            .collect();
        self.dumps.insert(
            dump_id,
            Dump {
                auth,
                plan: Some(plan),
                sender: Sender::new(SenderConfig::default(), &streams),
                armed: None,
                sinks,
                ids,
                listeners: registered,
                run: None,
                child: None,
                data: None,
                msgs: None,
                chain: None,
                chain_tokens: Vec::new(),
                filter_error: None,
                tar_stopped: false,
                scratch: Vec::new(),
                started: Instant::now(),
                bytes: 0,
                side: None,
                // TLS encrypts in user space: the archive bytes cannot be spliced.
                splice_ok: auth != Auth::Ssl,
                label,
                server_ip,
            },
        );
        if let Some(ex) = self.exchanges.get_mut(&ex_id) {
            ex.work = Work::Backup(dump_id);
        }
        self.reply(ex_id, rep);
    }

    fn open_data_listener(&self, server_ip: IpAddr) -> io::Result<(TcpListener, u16)> {
        let (low, high) = (self.cfg.data_ports.lo(), self.cfg.data_ports.hi());
        let wildcard = match server_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let count = u32::from(high.saturating_sub(low)) + 1;
        // Start somewhere in the range, like Amanda's bind_portrange, so that concurrent
        // amandad processes rarely collide.
        let start = (std::process::id() ^ self.next_id as u32) % count;
        let mut last_err = io::Error::new(io::ErrorKind::AddrInUse, "every port is busy");
        for i in 0..count {
            let port = low as u32 + (start + i) % count;
            let port = port as u16;
            if crate::etc_services::reserved_elsewhere(port) {
                continue;
            }
            let addr = SocketAddr::new(wildcard, port);
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            sock.set_reuse_address(true)?;
            if let Err(e) = sock.bind(&addr.into()) {
                last_err = e;
                continue;
            }
            sock.listen(4)?;
            sock.set_nonblocking(true)?;
            let std: std::net::TcpListener = sock.into();
            return Ok((TcpListener::from_std(std), port));
        }
        Err(last_err)
    }

    /// The server ACKed the sendbackup REP.
    pub(super) fn backup_acked(&mut self, id: u64) {
        if let Some(d) = self.dumps.get_mut(&id) {
            d.sender.on_acked(Instant::now());
        }
        self.drive_dump(id);
    }

    /// The sendbackup REP's exchange ended without an ACK.
    pub(super) fn backup_unacked(&mut self, id: u64) {
        if let Some(d) = self.dumps.get_mut(&id) {
            d.sender.on_unacked();
        }
        self.drive_dump(id);
    }

    /// Does what the dump's sender asks, and keeps its timer armed.
    fn drive_dump(&mut self, id: u64) {
        loop {
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let Some(event) = d.sender.poll_event() else {
                break;
            };
            match event {
                SenderEvent::Start => self.spawn_dump(id),
                SenderEvent::Close => self.close_streams(id),
                SenderEvent::Abort(e) => self.dump_aborted(id, &e.to_string()),
            }
        }
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let want = d.sender.poll_timeout();
        if want != d.armed {
            let old = std::mem::replace(&mut d.armed, want);
            if let Some(t) = old {
                self.timers.remove(&(t, Timer::Dump(id)));
            }
            if let Some(t) = want {
                self.timers.insert((t, Timer::Dump(id)));
            }
        }
    }

    pub(super) fn accept_data(&mut self, id: u64, slot: usize) {
        loop {
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let Some(pos) = d.listeners.iter().position(|(s, _, _)| *s == slot) else {
                return;
            };
            let (sock, peer) = match d.listeners[pos].1.accept() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("accepting a data connection: {e}");
                    return;
                }
            };
            let from = crate::resolve::unmap(peer.ip());
            let allowed = |ip: IpAddr| ip == from || self.cfg.extra_data_peers.contains(&from);
            if d.server_ip.is_some_and(|ip| !allowed(ip)) {
                // Not the server that asked for this dump: close it and keep listening.
                let (label, server) = (d.label.clone(), d.server_ip);
                drop(sock);
                self.refuse(Some(from), Reason::WrongDataPeer, || {
                    format!(
                        "{label}: closed a data connection from {peer}: the dump was requested by {}",
                        server.map_or_else(String::new, |s| s.to_string())
                    )
                });
                continue;
            }
            // From the server itself, so it has the REP: its ACK was lost or is late.
            if !d.sender.acked() {
                debug!(
                    "{}: data connection from {peer} before the ACK of the REP (lost or late)",
                    d.label
                );
            }
            let (_, mut listener, token) = d.listeners.remove(pos);
            let _ = self.poll.registry().deregister(&mut listener);
            self.sources.remove(&token);
            let role = if d.auth == Auth::Bsd {
                Role::DataRaw
            } else {
                Role::DataMux
            };
            let conn = match self.add_conn(sock, peer, role) {
                Ok(c) => c,
                Err(e) => {
                    warn!("registering a data connection: {e}");
                    return;
                }
            };
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let now = Instant::now();
            if d.auth == Auth::Bsd {
                // The n-th listener carries the n-th existing stream.
                let mut existing = STREAMS.iter().filter(|s| d.sink(**s) != Sink::Absent);
                if let Some(s) = existing.nth(slot) {
                    d.sinks[s.index()] = Sink::Raw(conn);
                    d.sender.on_connected(now, *s);
                }
            } else {
                for s in STREAMS {
                    if d.sink(s) == Sink::Pending {
                        d.sinks[s.index()] = Sink::Framed(conn, d.ids[s.index()] as u32);
                        d.sender.on_connected(now, s);
                    }
                }
            }
            debug!("{}: server connected from {peer}", d.label);
            // Counts as the ACK if that was lost; starts the dump when every stream is here.
            self.drive_dump(id);
        }
    }

    pub(super) fn dump_timeout(&mut self, id: u64, now: Instant) {
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        d.armed = None;
        d.sender.handle_timeout(now);
        self.drive_dump(id);
    }

    fn spawn_dump(&mut self, id: u64) {
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let Some(plan) = d.plan.take() else { return };
        let stages = plan.spec.client_stages().to_vec();
        let spawned = match BackupRun::spawn(plan.spec) {
            Ok(s) => s,
            Err(e) => {
                warn!("{}: cannot start the backup: {e}", d.label);
                let text = BackupRun::spawn_failure_mesg(&e);
                self.write_stream(id, Stream::Mesg, &text);
                if let Some(d) = self.dumps.get_mut(&id) {
                    d.sender.on_application_done();
                }
                return;
            }
        };
        let header = spawned.run.mesg_header().to_vec();
        let data_token = self.token(Source::DataPipe(id));
        let msg_token = self.token(Source::MsgPipe(id));
        for (fd, token) in [(&spawned.data, data_token), (&spawned.messages, msg_token)] {
            let raw = fd.as_raw_fd();
            set_nonblocking(raw);
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)
            {
                warn!("registering a dump pipe: {e}");
            }
        }
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        d.run = Some(spawned.run);
        d.child = Some(spawned.child);
        d.data = Some(Pipe {
            fd: spawned.data,
            token: data_token,
            readable: true,
            eof: false,
        });
        d.msgs = Some(Pipe {
            fd: spawned.messages,
            token: msg_token,
            readable: true,
            eof: false,
        });
        debug!("{}: started", d.label);
        if !stages.is_empty() {
            self.start_chain(id, &stages);
        }
        // The header completes `sendbackup: info end` before any DATA byte can be written.
        self.write_stream(id, Stream::Mesg, &header);
        if let Some(d) = self.dumps.get_mut(&id) {
            d.sender.header_sent();
        }
        self.pump_dump(id);
    }

    /// Starts the client filters of dump `id` and watches their descriptors; a failure to
    /// start one fails the dump (tar is stopped, the error goes to MESG at the end).
    fn start_chain(&mut self, id: u64, stages: &[proto::dataphase::Stage]) {
        let waker = self.waker.clone();
        let wake: filters::Waker = std::sync::Arc::new(move || {
            let _ = waker.wake();
        });
        let started = ClientChain::start(stages, self.gzip_pool(), Some(wake));
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let names: Vec<String> = stages.iter().map(ToString::to_string).collect();
        match started {
            Ok(chain) => {
                debug!("{}: client filters: {}", d.label, names.join(" | "));
                let fds = chain.fds();
                d.chain = Some(chain);
                d.scratch = vec![0; DATA_READ];
                let mut tokens = Vec::new();
                for (fd, writable) in fds {
                    let token = self.token(Source::Filter(id));
                    let interest = if writable {
                        Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut SourceFd(&fd), token, interest)
                    {
                        warn!("registering a filter's descriptor: {e}");
                    }
                    tokens.push(token);
                }
                if let Some(d) = self.dumps.get_mut(&id) {
                    d.chain_tokens = tokens;
                }
            }
            Err(e) => {
                warn!("{}: cannot start the client filters: {e}", d.label);
                d.filter_error = Some(e);
            }
        }
    }

    /// Dumps whose client filters may have output ready (the gzip pool woke the loop).
    pub(super) fn pump_filtered_dumps(&mut self) {
        let ids: Vec<u64> = self
            .dumps
            .iter()
            .filter(|(_, d)| d.chain.is_some())
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.pump_dump(id);
        }
    }

    pub(super) fn pipe_ready(&mut self, id: u64, data: bool) {
        if let Some(d) = self.dumps.get_mut(&id) {
            let pipe = if data { &mut d.data } else { &mut d.msgs };
            if let Some(p) = pipe {
                p.readable = true;
            }
        }
        self.pump_dump(id);
    }

    /// Moves as much as the pipes have and the connections take; finishes the dump when both
    /// pipes reached EOF.
    pub(super) fn pump_dump(&mut self, id: u64) {
        self.pump_messages(id);
        self.pump_data(id);
        self.maybe_finish(id);
        self.drive_dump(id);
    }

    /// Moves archive bytes to the DATA stream without copying them through user space where
    /// the kernel allows (pipe to socket with splice); falls back to [`Self::pump_data_buffered`].
    fn pump_data(&mut self, id: u64) {
        loop {
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            if !d.sender.data_allowed() {
                return;
            }
            if d.chain.is_some() || d.filter_error.is_some() {
                return self.pump_filtered(id);
            }
            if !d.splice_ok {
                return self.pump_data_buffered(id);
            }
            let Some((fd, conn, handle)) = d.data_source() else {
                return;
            };
            let Some((_, c)) = self.conns.get(&conn) else {
                return;
            };
            if c.splicing() || c.pending() >= HIGH_WATER {
                // The connection's writable event resumes us.
                return;
            }
            if d.side.is_none() {
                match ZeroCopy::new(DATA_READ) {
                    Ok(side) => d.side = Some(side),
                    Err(e) => {
                        debug!("{}: no side pipe ({e}); copying instead", d.label);
                        d.splice_ok = false;
                        continue;
                    }
                }
            }
            let crc_wanted = d.run.as_ref().is_some_and(BackupRun::crc_wanted);
            let (Some(side), sender) = (d.side.as_mut(), &mut d.sender) else {
                return;
            };
            // The one pass that needs the bytes is the CRC; without one they stay unread.
            let taken = if crc_wanted {
                side.take(fd, Some(&mut |b: &[u8]| sender.on_unfiltered(b)))
            } else {
                side.take(fd, None)
            };
            let n = match taken {
                Ok(0) => {
                    if let Some(p) = d.data.as_mut() {
                        p.eof = true;
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(p) = d.data.as_mut() {
                        p.readable = false;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    debug!("{}: tee refused; copying instead", d.label);
                    d.splice_ok = false;
                    continue;
                }
                Err(e) => {
                    warn!("{}: reading the archive: {e}", d.label);
                    return self.abort_dump(id, "internal error on the DATA path");
                }
            };
            d.bytes += n as u64;
            if let Some((_, c)) = self.conns.get_mut(&conn) {
                if let Some(h) = handle
                    && let Ok(header) = proto::frame::encode_header(h, n)
                {
                    c.push(&header);
                }
                c.push_splice(fd, n);
            }
            self.flush_conn(conn);
        }
    }

    /// Moves archive bytes through the client filters to DATA: native-CRC on what tar
    /// wrote, client-CRC on what DATA carries. A filter failure stops tar; its output is
    /// then drained and dropped so that tar's end can be seen.
    fn pump_filtered(&mut self, id: u64) {
        loop {
            let mut progress = false;
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let crc = d.run.as_ref().is_some_and(BackupRun::crc_wanted);
            if d.filter_error.is_none()
                && let Some(f) = d.chain.as_ref().and_then(ClientChain::failure)
            {
                d.filter_error = Some(f.to_owned());
            }
            if d.filter_error.is_some() && !d.tar_stopped {
                d.tar_stopped = true;
                warn!(
                    "{}: client filter failed: {}; stopping tar",
                    d.label,
                    d.filter_error.as_deref().unwrap_or_default()
                );
                if let Some(c) = d.child.as_mut() {
                    let _ = c.kill();
                }
            }
            // The archive into the first filter.
            let failed = d.filter_error.is_some();
            let room = d.chain.as_ref().is_some_and(ClientChain::has_room);
            if let Some(pipe) = d.data.as_mut()
                && pipe.readable
                && !pipe.eof
                && (room || failed)
            {
                if d.scratch.is_empty() {
                    d.scratch = vec![0; DATA_READ];
                }
                match super::chain::read_fd(pipe.fd.as_raw_fd(), &mut d.scratch) {
                    Ok(Some(0)) => {
                        pipe.eof = true;
                        if let Some(ch) = d.chain.as_mut() {
                            ch.input_end();
                        }
                        progress = true;
                    }
                    Ok(Some(n)) => {
                        d.bytes += n as u64;
                        if !failed && let Some(ch) = d.chain.as_mut() {
                            if crc {
                                d.sender.on_native(&d.scratch[..n]);
                            }
                            ch.push_input(&d.scratch[..n]);
                        }
                        progress = true;
                    }
                    Ok(None) => pipe.readable = false,
                    Err(e) => {
                        warn!("{}: reading the archive: {e}", d.label);
                        return self.abort_dump(id, "internal error on the DATA path");
                    }
                }
            }
            let (conn, handle) = match d.sink(Stream::Data) {
                Sink::Raw(c) => (Some(c), None),
                Sink::Framed(c, h) => (Some(c), Some(h)),
                _ => (None, None),
            };
            let Some(chain) = d.chain.as_mut() else {
                if !progress {
                    return;
                }
                continue;
            };
            progress |= chain.pump().progress;
            // Their output onto DATA, while the connection takes it.
            let lines = chain.take_lines();
            if let Some(conn) = conn
                && let Some((_, c)) = self.conns.get_mut(&conn)
            {
                while c.pending() < HIGH_WATER {
                    let n = chain.take_output(MAX_DATA_FRAME, |bytes| {
                        if crc {
                            d.sender.on_sent(bytes);
                        }
                        match handle {
                            Some(h) => c.push_frames(h, bytes),
                            None => c.push(bytes),
                        }
                    });
                    if n == 0 {
                        break;
                    }
                    progress = true;
                }
                self.flush_conn(conn);
            }
            if !lines.is_empty() {
                let text = super::chain::mesg_of_lines(lines);
                self.write_stream(id, Stream::Mesg, &text);
            }
            if !progress {
                return;
            }
        }
    }

    fn pump_data_buffered(&mut self, id: u64) {
        loop {
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let Some((fd, conn, handle)) = d.data_source() else {
                return;
            };
            let crc_wanted = d.run.as_ref().is_some_and(BackupRun::crc_wanted);
            let sender = &mut d.sender;
            let Some((_, c)) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.pending() >= HIGH_WATER {
                return;
            }
            let result = c.read_into(fd, handle, DATA_READ, |bytes| {
                if crc_wanted {
                    sender.on_unfiltered(bytes);
                }
            });
            match result {
                Ok(0) => {
                    if let Some(p) = self.dumps.get_mut(&id).and_then(|d| d.data.as_mut()) {
                        p.eof = true;
                    }
                    return;
                }
                Ok(n) => {
                    if let Some(d) = self.dumps.get_mut(&id) {
                        d.bytes += n as u64;
                    }
                    self.flush_conn(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(p) = self.dumps.get_mut(&id).and_then(|d| d.data.as_mut()) {
                        p.readable = false;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("reading the archive: {e}");
                    if let Some(p) = self.dumps.get_mut(&id).and_then(|d| d.data.as_mut()) {
                        p.eof = true;
                    }
                    return;
                }
            }
        }
    }

    fn pump_messages(&mut self, id: u64) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let Some(d) = self.dumps.get_mut(&id) else {
                return;
            };
            let Some(pipe) = d.msgs.as_mut() else { return };
            if !pipe.readable || pipe.eof {
                return;
            }
            // SAFETY: read writes at most chunk.len() bytes into chunk, which we own.
            let n =
                unsafe { libc::read(pipe.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => pipe.readable = false,
                    io::ErrorKind::Interrupted => continue,
                    _ => pipe.eof = true,
                }
                if !pipe.eof {
                    return;
                }
                continue;
            }
            if n == 0 {
                pipe.eof = true;
                return;
            }
            let mut out = StreamOutput::default();
            if let Some(run) = d.run.as_mut() {
                run.on_messages(&chunk[..n as usize], &mut out);
            }
            self.write_output(id, out);
        }
    }

    fn write_output(&mut self, id: u64, out: StreamOutput) {
        if !out.mesg.is_empty() {
            self.write_stream(id, Stream::Mesg, &out.mesg);
        }
        if !out.index.is_empty() {
            self.write_stream(id, Stream::Index, &out.index);
        }
    }

    fn write_stream(&mut self, id: u64, stream: Stream, bytes: &[u8]) {
        let Some(d) = self.dumps.get(&id) else { return };
        if !d.sender.writable(stream) {
            return;
        }
        match d.sink(stream) {
            Sink::Raw(c) => self.with_conn(c, |c| c.push(bytes)),
            Sink::Framed(c, h) => self.with_conn(c, |c| c.push_frames(h, bytes)),
            Sink::Absent | Sink::Pending => {}
        }
    }

    fn maybe_finish(&mut self, id: u64) {
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let done = d.data.as_ref().is_some_and(|p| p.eof) && d.msgs.as_ref().is_some_and(|p| p.eof);
        // The filters' last bytes are on DATA and every program exited, or they failed.
        let filters_done =
            d.filter_error.is_some() || d.chain.as_ref().is_none_or(ClientChain::is_done);
        if !done || !filters_done || d.sender.is_over() {
            return;
        }
        // tar closed both pipes: it is exiting, so this wait is short.
        let status = match d.child.take().map(|mut c| c.wait()) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!("{}: waiting for tar: {e}", d.label);
                std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
            }
            None => return,
        };
        let mut out = StreamOutput::default();
        let crcs = (d.sender.native_crc(), d.sender.client_crc());
        if let Some(run) = d.run.as_mut() {
            run.finish(status, crcs, d.filter_error.as_deref(), &mut out);
        }
        if let Some(e) = &d.filter_error {
            warn!("{}: failed: {e}", d.label);
        }
        // Every program was reaped (or is killed and reaped now, after a failure).
        d.chain = None;
        let tokens = std::mem::take(&mut d.chain_tokens);
        for t in tokens {
            self.sources.remove(&t);
        }
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let secs = d.started.elapsed().as_secs_f64();
        info!(
            "{}: tar {status}; {} bytes in {secs:.2}s ({:.1} MiB/s)",
            d.label,
            d.bytes,
            d.bytes as f64 / secs.max(1e-6) / (1 << 20) as f64
        );
        for token in [
            d.data.as_ref().map(|p| p.token),
            d.msgs.as_ref().map(|p| p.token),
        ]
        .into_iter()
        .flatten()
        {
            self.sources.remove(&token);
        }
        if let Some(d) = self.dumps.get_mut(&id) {
            // Dropping the fds closes them, which also removes them from the poll set.
            d.data = None;
            d.msgs = None;
        }
        self.write_output(id, out);
        if let Some(d) = self.dumps.get_mut(&id) {
            d.sender.on_application_done();
        }
    }

    /// Ends every stream of the dump (end-of-stream frames, or shutdown of raw connections).
    fn close_streams(&mut self, id: u64) {
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        let sinks = d.sinks;
        let mux = d.auth == Auth::Bsdudp;
        let mut conns = Vec::new();
        for s in sinks {
            match s {
                Sink::Raw(c) => {
                    if let Some((_, conn)) = self.conns.get_mut(&c) {
                        conn.close_when_flushed = true;
                    }
                    conns.push(c);
                }
                Sink::Framed(c, h) => {
                    if let Some((_, conn)) = self.conns.get_mut(&c) {
                        conn.push_eof(h);
                        if mux {
                            conn.close_when_flushed = true;
                        }
                    }
                    conns.push(c);
                }
                _ => {}
            }
        }
        for c in conns {
            self.flush_conn(c);
        }
        self.maybe_reap_dump(id);
    }

    /// Stops a dump for a reason of the shell's (a connection lost, a pipe error).
    pub(super) fn abort_dump(&mut self, id: u64, why: &str) {
        if let Some(d) = self.dumps.get_mut(&id) {
            d.sender.fail(why);
        }
        self.drive_dump(id);
    }

    /// The sender aborted the dump: kills tar, drops listeners, closes streams.
    fn dump_aborted(&mut self, id: u64, why: &str) {
        let Some(d) = self.dumps.get_mut(&id) else {
            return;
        };
        warn!("{}: aborted: {why}", d.label);
        // A splice in progress refers to the archive pipe closed below, and its frame can no
        // longer be completed: that connection has to go.
        let broken: Vec<u64> = d
            .sinks
            .iter()
            .filter_map(|s| match s {
                Sink::Raw(c) | Sink::Framed(c, _) => Some(*c),
                _ => None,
            })
            .filter(|c| self.conns.get(c).is_some_and(|(_, conn)| conn.splicing()))
            .collect();
        if let Some(mut child) = d.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Dropping the filters kills their process groups and reaps them.
        d.chain = None;
        let mut tokens = std::mem::take(&mut d.chain_tokens);
        for p in [d.data.take(), d.msgs.take()].into_iter().flatten() {
            tokens.push(p.token);
        }
        for (_, mut l, token) in d.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
            tokens.push(token);
        }
        for t in tokens {
            self.sources.remove(&t);
        }
        for c in broken {
            self.close_conn(c);
        }
        self.close_streams(id);
        // A dump whose streams are gone entirely can go now.
        if let Some(d) = self.dumps.get(&id)
            && !d
                .sinks
                .iter()
                .any(|s| matches!(s, Sink::Raw(_) | Sink::Framed(..)))
        {
            self.forget_dump(id);
        }
    }

    fn forget_dump(&mut self, id: u64) {
        if let Some(d) = self.dumps.remove(&id)
            && let Some(t) = d.armed
        {
            self.timers.remove(&(t, Timer::Dump(id)));
        }
    }

    /// Does what the sender asks after the server closed streams, and forgets a finished
    /// dump once its connections have nothing left to write.
    pub(super) fn maybe_reap_dump(&mut self, id: u64) {
        self.drive_dump(id);
        let Some(d) = self.dumps.get(&id) else { return };
        if !d.sender.is_over() {
            return;
        }
        let flushed = d.sinks.iter().all(|s| match s {
            Sink::Raw(c) | Sink::Framed(c, _) => {
                self.conns.get(c).is_none_or(|(_, c)| c.pending() == 0)
            }
            _ => true,
        });
        if flushed {
            debug!("{}: done", d.label);
            self.forget_dump(id);
        }
    }
}

/// Rewrites the service's CONNECT line (labels 150..153) to the stream ids (spec §6.7.2).
fn rewrite_connect(rep: &[u8], ids: &[i64; 3]) -> Vec<u8> {
    proto::sendbackup::rewrite_connect(rep, |stream| {
        ids.get(stream.index())
            .and_then(|id| u32::try_from(*id).ok())
    })
    .body
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on an fd we own; failure leaves it blocking, which only costs latency.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}
