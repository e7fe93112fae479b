//! The data phase of one dump, the shell around `proto`'s [`Receiver`]: a small mio loop
//! over one framed connection (bsdtcp, bsdudp) or up to four raw ones (bsd), which hands
//! every byte to the receiver and does what it says: MESG and INDEX bytes go to it as read,
//! DATA is stored (read straight into the holding-file writer's buffers on a raw connection)
//! once the receiver says so, and its events say when to write the header and when the dump
//! is over.
//!
//! The rules of the data phase (nothing on DATA before `sendbackup: info end`, the
//! early-DATA and INDEX bounds, `dtimeout` with MESG counting only for a bounded time, which
//! streams are open, the CRC and size of the DATA received) are the receiver's, written
//! once in `proto::dataphase` (its LIFECYCLE.md). What is left here is the shell's:
//! - A raw DATA connection is not read before the receiver enables DATA, so TCP holds the
//!   client back; framed DATA is handed to the receiver, which keeps what came early.
//! - The 32 KiB dump-file header is written on [`ReceiverEvent::HeaderReady`]; the final
//!   header (with the sizes and CRCs) replaces it when the dump is committed. If it cannot
//!   be built the dump fails (a file with the first header could not be verified later).
//! - On a framed connection each client stream ends with a zero-length frame, which we
//!   answer with ours; the control handle of the request is answered the same way.
//! - After the last stream we give the client a moment to close first, so that our side does
//!   not sit in TIME_WAIT (the port would be held back from that client); the real bsdtcp
//!   amandad waits for us instead, and then portpool's TIME_WAIT hold applies.
//!
//! Memory is bounded: one read buffer, the writer's buffers, and the receiver's bounds
//! (early DATA, the MESG line limit, the tracker's log). What this module must not do:
//! decide anything about the streams itself (the receiver does), parse MESG lines, or
//! decide retries.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::net::held::Held;
use filters::gzip::GzipPool;
use mio::{Events, Interest, Poll, Token};
use proto::Stream;
use proto::crc::CrcValue;
use proto::dataphase::{
    DataDisposition, ReceiveError, Received, Receiver, ReceiverConfig, ReceiverEvent, Stage,
};
use proto::frame::{DecodeError, Decoder, Event, eof_frame};
use proto::header::{DumpHeader, HEADER_SIZE};
use proto::mesg::{DumpOutcome, DumpStatus, DumpTracker, InfoFields};

use super::stages::{Pipeline, Stored};
use super::{DumpReport, Progress};
use crate::failure::{DumpFailure, Internal, LinkOp, StreamSetup};
use crate::holding::{Chunk, HoldingError, HoldingWriter};
use crate::index::IndexWriter;

/// How long we wait for the client to close a connection after the last stream ended. The
/// real amandad (bsdtcp) waits for the server to close first, so this is short: a client
/// that closes at once saves us the TIME_WAIT, one that does not costs us nothing.
const CLOSE_WAIT: Duration = Duration::from_millis(20);

/// Reads of one source before the loop looks at its timeout and the other sources.
const READS_PER_TURN: usize = 16;

/// Size of the read buffer of framed and MESG/INDEX reads.
const READ_BUF: usize = 1024 * 1024;

/// What one dump may consume besides its buffers.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `dtimeout`.
    pub dtimeout: Duration,
    /// Bytes the INDEX stream may bring (amanda-rs setting `dumper.max_index_mib`).
    pub max_index_bytes: u64,
    /// A client-initiated backup (ambackup, issue 14): MESG carries our answers too, and
    /// the client keeps it open until our `MESG END`
    /// ([`proto::dataphase::ReceiverConfig::mesg_two_way`]).
    pub mesg_two_way: bool,
}

enum Kind {
    /// One stream; it ends with the connection (`tcp_eof`).
    Raw(Stream),
    Framed {
        decoder: Decoder,
        /// Frame handle -> stream.
        handles: Vec<(u32, Stream)>,
        /// The request's control handle, until the client closed it.
        control: Option<u32>,
        initial: Vec<u8>,
        out: Vec<u8>,
    },
}

/// One data connection.
pub struct Source {
    conn: Held<mio::net::TcpStream>,
    peer: SocketAddr,
    kind: Kind,
    tcp_eof: bool,
    /// auth ssl: everything passes this TLS layer.
    tls: Option<ssl::TlsLayer>,
    /// A dial-in session (issue 14): a heartbeat frame goes out when nothing was sent for
    /// this long, so that a proxy between us sees traffic from our side too.
    heartbeat: Option<Duration>,
    /// When bytes last went out (or the source was made).
    last_sent: Instant,
}

fn to_mio(lease: Held<TcpStream>) -> Result<Held<mio::net::TcpStream>, StreamSetup> {
    lease.try_map(|s| {
        s.set_nonblocking(true)
            .map_err(|e| StreamSetup::Nonblocking(Arc::new(e)))?;
        Ok(mio::net::TcpStream::from_std(s))
    })
}

impl Source {
    /// A raw (bsd) connection carrying one stream.
    pub fn raw(
        lease: impl Into<Held<TcpStream>>,
        peer: SocketAddr,
        stream: Stream,
    ) -> Result<Source, StreamSetup> {
        Ok(Source {
            conn: to_mio(lease.into())?,
            peer,
            kind: Kind::Raw(stream),
            tcp_eof: false,
            tls: None,
            heartbeat: None,
            last_sent: Instant::now(),
        })
    }

    /// A framed connection: `handles` maps frame handles to streams; `initial` is what was
    /// already read from it; `control` is the request's handle and whether the client
    /// closed it already (then our zero-length frame goes out at once).
    pub fn framed(
        lease: impl Into<Held<TcpStream>>,
        peer: SocketAddr,
        initial: Vec<u8>,
        handles: Vec<(u32, Stream)>,
        control: Option<(u32, bool)>,
    ) -> Result<Source, StreamSetup> {
        let mut out = Vec::new();
        let control = match control {
            Some((h, true)) => {
                out.extend_from_slice(&eof_frame(h));
                None
            }
            Some((h, false)) => Some(h),
            None => None,
        };
        Ok(Source {
            conn: to_mio(lease.into())?,
            peer,
            kind: Kind::Framed {
                decoder: Decoder::new(),
                handles,
                control,
                initial,
                out,
            },
            tcp_eof: false,
            tls: None,
            heartbeat: None,
            last_sent: Instant::now(),
        })
    }

    /// A framed connection the client opened to us (ambackup, issue 14): `handles` maps
    /// the stream handles of our CONNECT line to streams; `initial` is what was already
    /// read from it. The control handle's closes were exchanged before.
    pub fn accepted(
        sock: TcpStream,
        peer: SocketAddr,
        initial: Vec<u8>,
        handles: Vec<(u32, Stream)>,
    ) -> Result<Source, StreamSetup> {
        sock.set_nonblocking(true)
            .map_err(|e| StreamSetup::Nonblocking(Arc::new(e)))?;
        Ok(Source {
            conn: Held::Accepted(mio::net::TcpStream::from_std(sock)),
            peer,
            kind: Kind::Framed {
                decoder: Decoder::new(),
                handles,
                control: None,
                initial,
                out: Vec::new(),
            },
            tcp_eof: false,
            tls: None,
            heartbeat: None,
            last_sent: Instant::now(),
        })
    }

    /// Sends `frames` (already encoded) and waits until they are written, at most
    /// `timeout`: ambackupd's last MESG lines after the data phase.
    pub fn send_frames(&mut self, frames: &[u8], timeout: Duration) -> io::Result<()> {
        if let Kind::Framed { out, .. } = &mut self.kind {
            out.extend_from_slice(frames);
        }
        let until = Instant::now() + timeout;
        loop {
            self.flush_out()?;
            let pending = match &self.kind {
                Kind::Framed { out, .. } => !out.is_empty(),
                Kind::Raw(_) => false,
            } || self.tls.as_ref().is_some_and(ssl::TlsLayer::wants_write);
            if !pending {
                return self.conn.socket_mut().flush();
            }
            let now = Instant::now();
            if now >= until {
                return Err(io::ErrorKind::TimedOut.into());
            }
            wait_writable(self.conn.socket_mut(), until - now);
        }
    }

    /// Waits up to `timeout` for the peer to close stream `handle` (its zero-length frame)
    /// or the connection; what it sends meanwhile is dropped. Then ends the connection
    /// cleanly on our side (auth ssl: a close_notify; the real amservice spins on a TLS
    /// connection that just vanishes). `true` when the peer closed in time.
    pub fn await_close(&mut self, handle: u32, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut scratch = [0u8; 4096];
        let closed = loop {
            match self.read_plain(&mut scratch) {
                Ok(0) => {
                    self.tcp_eof = true;
                    break true;
                }
                Ok(n) => {
                    if let Kind::Framed { decoder, .. } = &mut self.kind {
                        let mut input = &scratch[..n];
                        let mut seen = false;
                        while let Ok(Some(ev)) = decoder.next(&mut input) {
                            seen |= ev == Event::Eof { handle };
                        }
                        if seen {
                            break true;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= until {
                        break false;
                    }
                    wait_readable(self.conn.socket_mut(), until - now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        if let Some(t) = &mut self.tls {
            t.close();
            let _ = t.flush(self.conn.socket_mut());
        }
        closed
    }

    /// The same connection inside TLS (auth ssl; the handshake is done).
    pub fn with_tls(mut self, tls: Option<ssl::TlsLayer>) -> Source {
        self.tls = tls;
        self
    }

    /// Sends [`proto::dialin::session_heartbeat`] on a framed connection whenever nothing
    /// was sent for `every` (`None`: never).
    pub fn with_heartbeat(mut self, every: Option<Duration>) -> Source {
        self.heartbeat = every;
        self
    }

    /// When the next heartbeat is due, if this source sends them.
    fn heartbeat_due(&self) -> Option<Instant> {
        match self.kind {
            Kind::Framed { .. } => self.heartbeat.map(|every| self.last_sent + every),
            Kind::Raw(_) => None,
        }
    }

    /// Queues a heartbeat when one is due and nothing else is waiting to go out.
    fn beat(&mut self, now: Instant) {
        if self.heartbeat_due().is_some_and(|due| now >= due)
            && let Kind::Framed { out, .. } = &mut self.kind
            && out.is_empty()
        {
            out.extend_from_slice(&proto::dialin::session_heartbeat());
            // Written or not, the next one is an interval away (a peer that takes nothing
            // must not make the queue grow).
            self.last_sent = now;
        }
    }

    /// One read of plaintext: from TLS when there is a layer, else from the socket.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let sock = self.conn.socket_mut();
        match &mut self.tls {
            Some(t) => {
                let r = t.read(sock, buf);
                // The peer's key updates and our alerts go out at once.
                if t.wants_write() {
                    let _ = t.flush(sock);
                }
                r
            }
            None => sock.read(buf),
        }
    }

    /// The streams this connection carries.
    fn streams(&self) -> Vec<Stream> {
        match &self.kind {
            Kind::Raw(stream) => vec![*stream],
            Kind::Framed { handles, .. } => handles.iter().map(|(_, k)| *k).collect(),
        }
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if let (Some(t), Kind::Framed { out, .. }) = (&mut self.tls, &mut self.kind) {
            let sock = self.conn.socket_mut();
            loop {
                if !out.is_empty() {
                    let n = t.write_frames(out)?;
                    out.drain(..n);
                    self.last_sent = Instant::now();
                }
                if !t.flush(sock)? || out.is_empty() {
                    return Ok(());
                }
            }
        }
        if let Kind::Framed { out, .. } = &mut self.kind {
            while !out.is_empty() {
                match self.conn.socket_mut().write(out) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        out.drain(..n);
                        self.last_sent = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Blocks until `sock` is writable or `timeout` passed.
fn wait_writable(sock: &mio::net::TcpStream, timeout: Duration) {
    wait_for(sock, libc::POLLOUT, timeout);
}

/// Blocks until `sock` is readable or `timeout` passed.
fn wait_readable(sock: &mio::net::TcpStream, timeout: Duration) {
    wait_for(sock, libc::POLLIN, timeout);
}

fn wait_for(sock: &mio::net::TcpStream, events: libc::c_short, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call; the descriptor is owned by
    // `sock`, which outlives it.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// ambackupd's answers on MESG (issue 14): `start backup: <disk>` once the header is ready.
struct MesgAnswer {
    /// The MESG stream's handle.
    handle: u32,
    /// The line sent at [`ReceiverEvent::HeaderReady`], until it is sent.
    start_line: Option<Vec<u8>>,
}

/// The receiver and everything that stores what it lets through.
struct Sink<'a> {
    rx: Receiver,
    /// ambackupd: what to answer on MESG.
    answer: Option<MesgAnswer>,
    /// Frames for the (one) framed connection, written by the loop.
    outgoing: Vec<u8>,
    /// Where DATA goes: the holding file, from the header on through the server filters.
    store: Option<Store>,
    filters: ServerFilters,
    index: Option<IndexWriter>,
    current: Option<Chunk>,
    /// The header written first, to which the final one adds sizes and CRCs.
    header_fields: Option<DumpHeader>,
    /// The shell's own failure (holding disk, sockets, frames); the receiver keeps its own.
    error: Option<DumpFailure>,
    /// The connection whose loss cut streams, and whether it ended inside a frame.
    lost: Option<(SocketAddr, Option<DecodeError>)>,
    progress: &'a Progress,
    header_base: &'a dyn Fn(&InfoFields) -> DumpHeader,
}

impl Sink<'_> {
    fn fail(&mut self, e: DumpFailure) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Whether reading stops: the receiver is done (complete or stopped), or we failed.
    fn stopped(&self) -> bool {
        self.error.is_some() || self.rx.is_over()
    }

    fn holding_failed(&mut self, e: HoldingError) {
        self.fail(DumpFailure::Holding(Arc::new(e)));
    }

    /// Does what the receiver asks.
    fn drain_events(&mut self) {
        while let Some(ev) = self.rx.poll_event() {
            match ev {
                ReceiverEvent::HeaderReady => {
                    self.write_header();
                    if let Some(a) = &mut self.answer
                        && let Some(line) = a.start_line.take()
                        && proto::frame::encode_frame(a.handle, &line, &mut self.outgoing).is_err()
                    {
                        log::warn!("the `start backup:` line does not fit in a frame");
                    }
                }
                ReceiverEvent::EarlyData(bytes) => self.store(&bytes),
                ReceiverEvent::Stop | ReceiverEvent::Complete => {}
            }
        }
    }

    /// Bytes of `stream` read from a connection (raw DATA is read by `read_raw_data`).
    fn on_bytes(&mut self, stream: Stream, bytes: &[u8]) {
        let now = Instant::now();
        match stream {
            Stream::Mesg => self.rx.on_mesg(now, bytes),
            Stream::Data => {
                if self.rx.on_data(now, bytes) == DataDisposition::Store {
                    self.store(bytes);
                }
            }
            Stream::Index => {
                if self.rx.on_index(bytes.len())
                    && let Some(ix) = &mut self.index
                {
                    ix.write(bytes);
                }
            }
            Stream::State => {}
        }
        self.drain_events();
    }

    fn on_stream_end(&mut self, stream: Stream) {
        self.rx.on_stream_end(stream);
        self.drain_events();
    }

    /// `sendbackup: info end` was seen: write the header.
    fn write_header(&mut self) {
        let fields = (self.header_base)(self.rx.tracker().info());
        let header = match fields.build() {
            Ok(h) => h,
            Err(error) => {
                self.fail(DumpFailure::Internal(Internal::Header {
                    final_header: false,
                    error,
                }));
                return;
            }
        };
        self.header_fields = Some(fields);
        let Some(Store::Direct(mut w)) = self.store.take() else {
            return;
        };
        if let Err(e) = w.write_all(&header) {
            self.holding_failed(e);
            return;
        }
        if self.filters.stages.is_empty() {
            self.store = Some(Store::Direct(w));
            return;
        }
        // The header is the holding file's own; the filters start with the payload.
        let f = &self.filters;
        match Pipeline::start(
            &f.stages,
            f.gzip.clone(),
            w,
            f.buffers,
            f.buffer_size,
            f.stall,
        ) {
            Ok(p) => self.store = Some(Store::Filtered(p)),
            Err(e) => self.fail(DumpFailure::ServerFilter(Arc::new(e))),
        }
    }

    fn mark_data(&mut self, n: usize) {
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// DATA bytes the receiver consumed (framed, or early): copy into writer buffers.
    fn store(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() || self.error.is_some() {
            return;
        }
        self.mark_data(bytes.len());
        while !bytes.is_empty() {
            let Some(mut chunk) = self.take_chunk() else {
                return;
            };
            let n = chunk.push(bytes);
            bytes = &bytes[n..];
            self.put_chunk(chunk);
        }
    }

    fn take_chunk(&mut self) -> Option<Chunk> {
        if let Some(c) = self.current.take() {
            return Some(c);
        }
        let r = match self.store.as_mut()? {
            Store::Direct(w) => w.chunk().map_err(|e| DumpFailure::Holding(Arc::new(e))),
            Store::Filtered(p) => p
                .chunk()
                .map_err(|e| DumpFailure::ServerFilter(Arc::new(e))),
        };
        match r {
            Ok(c) => Some(c),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Keeps a partly filled chunk, submits a full one.
    fn put_chunk(&mut self, chunk: Chunk) {
        if !chunk.is_full() {
            self.current = Some(chunk);
            return;
        }
        self.submit(chunk);
    }

    fn submit(&mut self, chunk: Chunk) {
        let r = match self.store.as_mut() {
            Some(Store::Direct(w)) => w
                .submit(chunk)
                .map_err(|e| DumpFailure::Holding(Arc::new(e))),
            Some(Store::Filtered(p)) => p
                .submit(chunk)
                .map_err(|e| DumpFailure::ServerFilter(Arc::new(e))),
            None => Ok(()),
        };
        if let Err(e) = r {
            self.fail(e);
        }
    }

    fn flush_current(&mut self) {
        if let Some(c) = self.current.take() {
            self.submit(c);
        }
    }
}

/// Where a dump's DATA is stored.
enum Store {
    /// Straight into the holding file (no server filter; raw DATA is read into its
    /// buffers).
    Direct(HoldingWriter),
    /// Through the server filters, which end in the holding file.
    Filtered(Pipeline),
}

/// The server's filter stages of a dump and what they may use.
#[derive(Clone)]
pub struct ServerFilters {
    /// The stages, in order (empty: none).
    pub stages: Vec<Stage>,
    /// The daemon's gzip pool.
    pub gzip: Arc<GzipPool>,
    /// Buffers in flight to the filters.
    pub buffers: usize,
    /// Bytes per buffer.
    pub buffer_size: usize,
    /// How long the first stage may take no input (`dtimeout`).
    pub stall: Duration,
}

/// The data phase of one dump.
pub struct Session<'a> {
    sources: Vec<Source>,
    sink: Sink<'a>,
    rbuf: Vec<u8>,
}

/// What the data phase produced.
pub struct SessionResult {
    /// The connections, still open (dropping closes them).
    sources: Vec<Source>,
    store: Option<Store>,
    header_fields: Option<DumpHeader>,
    index: Option<IndexWriter>,
    received: Received,
    error: Option<DumpFailure>,
    lost: Option<(SocketAddr, Option<DecodeError>)>,
}

impl<'a> Session<'a> {
    /// A session over `sources`, writing to `writer` and `index`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sources: Vec<Source>,
        writer: HoldingWriter,
        filters: ServerFilters,
        index: Option<IndexWriter>,
        tracker: DumpTracker,
        limits: Limits,
        progress: &'a Progress,
        header_base: &'a dyn Fn(&InfoFields) -> DumpHeader,
    ) -> Session<'a> {
        let streams: Vec<Stream> = sources.iter().flat_map(Source::streams).collect();
        progress.bytes.store(0, Ordering::Relaxed);
        let cfg = ReceiverConfig {
            index_max: limits.max_index_bytes,
            dtimeout: limits.dtimeout,
            mesg_two_way: limits.mesg_two_way,
            ..ReceiverConfig::default()
        };
        Session {
            sources,
            sink: Sink {
                rx: Receiver::new(Instant::now(), cfg, &streams, tracker),
                answer: None,
                outgoing: Vec::new(),
                store: Some(Store::Direct(writer)),
                filters,
                index,
                current: None,
                header_fields: None,
                error: None,
                lost: None,
                progress,
                header_base,
            },
            rbuf: vec![0; READ_BUF],
        }
    }

    /// ambackupd (issue 14): answer `start_line` on MESG stream `handle` (of the framed
    /// connection) when the client's header is complete.
    pub fn answering_mesg(mut self, handle: u32, start_line: Vec<u8>) -> Self {
        self.sink.answer = Some(MesgAnswer {
            handle,
            start_line: Some(start_line),
        });
        self
    }

    /// Runs until every stream ended, the dump failed, or `dtimeout`.
    pub fn run(mut self) -> SessionResult {
        if let Err(e) = self.run_loop() {
            self.sink.fail(e);
        }
        self.sink.flush_current();
        self.linger();
        let s = self.sink;
        SessionResult {
            sources: self.sources,
            store: s.store,
            header_fields: s.header_fields,
            index: s.index,
            received: s.rx.finish(),
            error: s.error,
            lost: s.lost,
        }
    }

    fn run_loop(&mut self) -> Result<(), DumpFailure> {
        let poll_failed = |what| {
            move |e| {
                DumpFailure::Internal(Internal::Poll {
                    what,
                    source: Arc::new(e),
                })
            }
        };
        let mut poll = Poll::new().map_err(poll_failed("poll"))?;
        for (i, s) in self.sources.iter_mut().enumerate() {
            poll.registry()
                .register(
                    s.conn.socket_mut(),
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(poll_failed("poll register"))?;
        }
        // Bytes read together with the REP.
        for i in 0..self.sources.len() {
            let initial = match &mut self.sources[i].kind {
                Kind::Framed { initial, .. } => std::mem::take(initial),
                Kind::Raw(_) => Vec::new(),
            };
            if !initial.is_empty() {
                self.decode(i, &initial)?;
            }
        }
        let mut events = Events::with_capacity(16);
        let mut data_was_enabled = self.sink.rx.data_enabled();
        // Everything is serviced once at the start (edge-triggered readiness may have fired
        // before registration).
        let mut ready: Vec<bool> = vec![true; self.sources.len()];
        loop {
            for (i, r) in ready.iter_mut().enumerate() {
                if *r {
                    *r = self.service(i)?;
                }
                if !self.sink.outgoing.is_empty()
                    && let Kind::Framed { out, .. } = &mut self.sources[i].kind
                {
                    out.append(&mut self.sink.outgoing);
                }
                self.sources[i].beat(Instant::now());
                if let Err(e) = self.sources[i].flush_out() {
                    return Err(DumpFailure::Link {
                        peer: self.sources[i].peer,
                        op: LinkOp::Write,
                        source: Arc::new(e),
                    });
                }
            }
            // Raw DATA becomes readable for us only now: read what TCP held back.
            if !data_was_enabled && self.sink.rx.data_enabled() {
                data_was_enabled = true;
                for (i, s) in self.sources.iter().enumerate() {
                    if matches!(s.kind, Kind::Raw(Stream::Data)) {
                        ready[i] = true;
                    }
                }
                continue;
            }
            let now = Instant::now();
            self.sink.rx.handle_timeout(now);
            self.sink.drain_events();
            if self.sink.stopped() {
                return Ok(());
            }
            // A source left readable gets its next turn after a poll that does not wait.
            let wait = if ready.iter().any(|r| *r) {
                Duration::ZERO
            } else {
                self.sink
                    .rx
                    .poll_timeout()
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
                    .min(Duration::from_secs(60))
                    .min(
                        self.sources
                            .iter()
                            .filter_map(Source::heartbeat_due)
                            .min()
                            .map_or(Duration::MAX, |t| t.saturating_duration_since(now)),
                    )
            };
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(poll_failed("poll")(e)),
            }
            for ev in events.iter() {
                if let Some(r) = ready.get_mut(ev.token().0) {
                    *r = true;
                }
            }
        }
    }

    /// Reads a source until it would block (or, for raw DATA, until data is enabled), or
    /// for at most [`READS_PER_TURN`] reads: `Ok(true)` then, it is still readable. A peer
    /// that sends without pause must not keep the loop from its timeout and other sources.
    fn service(&mut self, i: usize) -> Result<bool, DumpFailure> {
        for _ in 0..READS_PER_TURN {
            if self.sink.stopped() {
                return Ok(false);
            }
            let src = &mut self.sources[i];
            if src.tcp_eof {
                return Ok(false);
            }
            match src.kind {
                Kind::Raw(Stream::Data) => {
                    if !self.sink.rx.data_enabled() || !self.read_raw_data(i)? {
                        return Ok(false);
                    }
                }
                Kind::Raw(stream) => {
                    let mut buf = std::mem::take(&mut self.rbuf);
                    let r = read_some(&mut self.sources[i], &mut buf);
                    let out = match r {
                        Ok(Some(0)) => {
                            self.raw_eof(i, stream);
                            Ok(false)
                        }
                        Ok(Some(n)) => {
                            self.sink.on_bytes(stream, &buf[..n]);
                            Ok(true)
                        }
                        Ok(None) => Ok(false),
                        Err(e) => Err(e),
                    };
                    self.rbuf = buf;
                    if !out? {
                        return Ok(false);
                    }
                }
                Kind::Framed { .. } => {
                    let mut buf = std::mem::take(&mut self.rbuf);
                    let r = read_some(&mut self.sources[i], &mut buf);
                    let out = match r {
                        Ok(Some(0)) => {
                            self.framed_eof(i);
                            Ok(false)
                        }
                        Ok(Some(n)) => self.decode(i, &buf[..n]).map(|()| true),
                        Ok(None) => Ok(false),
                        Err(e) => Err(e),
                    };
                    self.rbuf = buf;
                    if !out? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// One read of raw DATA straight into a writer buffer. `Ok(false)`: would block or EOF.
    fn read_raw_data(&mut self, i: usize) -> Result<bool, DumpFailure> {
        let Some(mut chunk) = self.sink.take_chunk() else {
            return Ok(false);
        };
        let src = &mut self.sources[i];
        let start = chunk.filled;
        let peer = src.peer;
        let r = read_again_on_eintr(peer, LinkOp::ReadData, || {
            src.conn.socket_mut().read(chunk.spare())
        });
        match r {
            Ok(Some(0)) => {
                self.sink.put_chunk(chunk);
                self.raw_eof(i, Stream::Data);
                Ok(false)
            }
            Ok(Some(n)) => {
                let now = Instant::now();
                let read = &chunk.buf[start..start + n];
                if self.sink.rx.on_data(now, read) == DataDisposition::Store {
                    chunk.filled += n;
                    self.sink.mark_data(n);
                }
                self.sink.put_chunk(chunk);
                self.sink.drain_events();
                Ok(true)
            }
            Ok(None) => {
                self.sink.put_chunk(chunk);
                Ok(false)
            }
            Err(e) => {
                self.sink.put_chunk(chunk);
                Err(e)
            }
        }
    }

    fn raw_eof(&mut self, i: usize, stream: Stream) {
        let src = &mut self.sources[i];
        src.tcp_eof = true;
        // The client closed first: no TIME_WAIT on our side.
        src.conn.set_no_time_wait();
        self.sink.on_stream_end(stream);
    }

    fn framed_eof(&mut self, i: usize) {
        let src = &mut self.sources[i];
        src.tcp_eof = true;
        src.conn.set_no_time_wait();
        let peer = src.peer;
        let Kind::Framed {
            decoder, handles, ..
        } = &src.kind
        else {
            return;
        };
        let truncated = decoder.finish().err();
        let open = self.sink.rx.open_streams();
        let cut: Vec<Stream> = handles
            .iter()
            .map(|(_, k)| *k)
            .filter(|k| open.contains(k))
            .collect();
        if !cut.is_empty() {
            let detail = truncated.as_ref().map(ToString::to_string);
            self.sink.lost.get_or_insert((peer, truncated));
            self.sink.rx.on_connection_lost(&cut, detail);
            self.sink.drain_events();
        }
    }

    /// Decodes frames from `bytes` read on framed source `i`.
    fn decode(&mut self, i: usize, mut bytes: &[u8]) -> Result<(), DumpFailure> {
        loop {
            let src = &mut self.sources[i];
            let Kind::Framed {
                decoder,
                handles,
                control,
                out,
                ..
            } = &mut src.kind
            else {
                return Ok(());
            };
            let ev = match decoder.next(&mut bytes) {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(DumpFailure::Frame {
                        peer: src.peer,
                        error,
                    });
                }
            };
            let open = self.sink.rx.open_streams();
            let stream_of = |handle: u32| {
                handles
                    .iter()
                    .find(|(h, k)| *h == handle && open.contains(k))
                    .map(|(_, k)| *k)
            };
            match ev {
                Event::Start(_) => {}
                // The client's heartbeat on a dial-in session: not data, nothing to answer.
                Event::Data { handle, .. }
                    if src.heartbeat.is_some() && proto::dialin::is_session_heartbeat(handle) => {}
                Event::Data { handle, chunk, .. } => match stream_of(handle) {
                    Some(k) => self.sink.on_bytes(k, chunk),
                    None => log::debug!(
                        "{}: {} bytes on handle {handle} went unclaimed",
                        src.peer,
                        chunk.len()
                    ),
                },
                Event::Eof { handle } => {
                    if *control == Some(handle) {
                        *control = None;
                        out.extend_from_slice(&eof_frame(handle));
                        continue;
                    }
                    if let Some(k) = stream_of(handle) {
                        // The server answers each stream's close with its own.
                        out.extend_from_slice(&eof_frame(handle));
                        self.sink.on_stream_end(k);
                    }
                }
            }
        }
    }

    /// After the last stream: give the client a moment to close first.
    fn linger(&mut self) {
        let until = Instant::now() + CLOSE_WAIT;
        let mut scratch = [0u8; 4096];
        let incomplete = !self.sink.rx.open_streams().is_empty();
        for s in &mut self.sources {
            let _ = s.flush_out();
            if s.tcp_eof {
                continue;
            }
            if incomplete {
                // A dump that stopped early: do not wait for a client that may be stuck.
                continue;
            }
            // Blocking reads with a timeout: the socket is still registered with a poll
            // that is gone, which is harmless.
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                match s.read_plain(&mut scratch) {
                    Ok(0) => {
                        s.tcp_eof = true;
                        s.conn.set_no_time_wait();
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2).min(until - now));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = s.conn.socket_mut().flush();
        }
    }
}

/// One read. `Ok(None)`: would block.
fn read_some(src: &mut Source, buf: &mut [u8]) -> Result<Option<usize>, DumpFailure> {
    let peer = src.peer;
    read_again_on_eintr(peer, LinkOp::Read, || src.read_plain(buf))
}

/// `read`, again when a signal interrupted it; its failure is `op`'s on the link to `peer`.
/// `Ok(None)`: would block.
fn read_again_on_eintr(
    peer: SocketAddr,
    op: LinkOp,
    mut read: impl FnMut() -> io::Result<usize>,
) -> Result<Option<usize>, DumpFailure> {
    loop {
        match read() {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(DumpFailure::Link {
                    peer,
                    op,
                    source: Arc::new(e),
                });
            }
        }
    }
}

/// The final header: the first one, `h`, with the sizes and CRCs. One that cannot be built
/// fails the dump (issue 10: the first header used to stay in place without a word, and a
/// file without its SERVER-CRC cannot be verified later).
fn final_header(
    mut h: DumpHeader,
    outcome: &DumpOutcome,
    received: CrcValue,
) -> Result<Vec<u8>, Internal> {
    h.orig_size = outcome.orig_kb.filter(|&k| k > 0);
    h.native_crc = outcome.native_crc.filter(|c| c.crc != 0);
    h.client_crc = Some(outcome.client_crc).filter(|c| c.crc != 0);
    h.server_crc = Some(received);
    h.build().map_err(|error| Internal::Header {
        final_header: true,
        error,
    })
}

/// The receiver's failure as the report names it: a lost connection with its peer (and the
/// frame it cut), the INDEX cap with the setting that raises it.
fn failure_of(e: ReceiveError, lost: Option<(SocketAddr, Option<DecodeError>)>) -> DumpFailure {
    match (e, lost) {
        (ReceiveError::ConnectionClosed { streams, .. }, Some((peer, truncated))) => {
            DumpFailure::ClosedEarly {
                peer,
                open: streams,
                truncated,
            }
        }
        (ReceiveError::IndexCap { limit }, _) => DumpFailure::IndexCap { limit },
        (e, _) => DumpFailure::DataPhase(e),
    }
}

/// Ends the store of a dump whose DATA was all received: the holding writer with every
/// byte handed over, the server-CRC of the stored bytes, the filters' messages.
fn finish_store(store: Store, received: CrcValue) -> Result<Stored, DumpFailure> {
    match store {
        Store::Direct(writer) => Ok(Stored {
            writer,
            crc: received,
            messages: Vec::new(),
            check: None,
        }),
        Store::Filtered(p) => {
            let stored = p
                .finish()
                .map_err(|e| DumpFailure::ServerFilter(Arc::new(e)))?;
            match &stored.check {
                Some(c) if !c.gives_back(received) => {
                    Err(DumpFailure::ServerFilter(Arc::new(c.garbage(received))))
                }
                _ => Ok(stored),
            }
        }
    }
}

impl SessionResult {
    /// The connections, to say more on them before they close (ambackupd's last MESG
    /// lines); the caller drops them when done.
    pub fn take_sources(&mut self) -> Vec<Source> {
        std::mem::take(&mut self.sources)
    }

    /// The verdict, with the files committed (success) or removed (failure).
    pub fn into_report(self, started: Instant) -> DumpReport {
        let Received {
            outcome,
            error: receive_error,
            received,
            data_time,
            ..
        } = self.received;
        let mut status = outcome.status;
        let mut failure = match (&outcome.retry, &outcome.error) {
            (Some((delay, level, message)), _) if status == DumpStatus::Retry => {
                Some(DumpFailure::MesgRetry {
                    delay: *delay,
                    level: *level,
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
            (_, Some(e)) if status == DumpStatus::Failed => Some(DumpFailure::Client(e.clone())),
            _ => None,
        };
        let lost = self.lost;
        let ours = self
            .error
            .or_else(|| receive_error.map(|e| failure_of(e, lost)));
        if let Some(ours) = ours {
            status = DumpStatus::Failed;
            failure = Some(match outcome.error.clone() {
                Some(client) if client.to_string() != ours.report_text() => DumpFailure::Both {
                    ours: Box::new(ours),
                    client,
                },
                _ => ours,
            });
        }
        let mut warnings = Vec::new();
        let mut holding = None;
        let mut index = None;
        let mut log: Vec<String> = outcome
            .log
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let mut info = outcome.info.clone();
        // The stored bytes: DATA itself, or what the server filters made of it.
        let mut stored = received;
        let ok = |s: DumpStatus| matches!(s, DumpStatus::Done | DumpStatus::Strange);
        let writer = match self.store {
            Some(store) if ok(status) => match finish_store(store, received) {
                Ok(s) => {
                    stored = s.crc;
                    if !s.messages.is_empty() && status == DumpStatus::Done {
                        // Amanda: a server filter's stderr makes the dump STRANGE.
                        status = DumpStatus::Strange;
                    }
                    log.extend(s.messages);
                    Some(s.writer)
                }
                Err(e) => {
                    status = DumpStatus::Failed;
                    failure = Some(e);
                    None
                }
            },
            // A failed dump: dropping the store removes the file (and stops the filters).
            _ => None,
        };
        let final_header = match (status, self.header_fields) {
            (DumpStatus::Done | DumpStatus::Strange, Some(h)) => {
                // What the file says, also for the catalog (the client's COMPRESS_SUFFIX
                // is not what the server filters made).
                info.compress_suffix = h.filters.comp_suffix.clone();
                match final_header(h, &outcome, stored) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        status = DumpStatus::Failed;
                        failure = Some(DumpFailure::Internal(e));
                        None
                    }
                }
            }
            (DumpStatus::Done | DumpStatus::Strange, None) => {
                status = DumpStatus::Failed;
                failure = Some(DumpFailure::Internal(Internal::NoHeaderWritten));
                None
            }
            _ => None,
        };
        match (final_header, writer) {
            (Some(header), Some(w)) => {
                let expected = HEADER_SIZE as u64 + stored.size.max(0) as u64;
                let path = w.final_path().to_path_buf();
                match w.commit_with_header(Some(header), Some(expected)) {
                    Ok(c) => {
                        holding = Some(path);
                        warnings.extend(c.dir_sync);
                    }
                    Err(e) => {
                        status = DumpStatus::Failed;
                        failure = Some(DumpFailure::Holding(Arc::new(e)));
                    }
                }
                if holding.is_some()
                    && let Some(ix) = self.index
                {
                    match ix.commit() {
                        Ok((p, dir_sync)) => {
                            index = Some(p);
                            warnings.extend(dir_sync);
                        }
                        Err(e) => warnings.push(e.to_string()),
                    }
                }
            }
            (header, w) => {
                if header.is_some() {
                    status = DumpStatus::Failed;
                    failure = Some(DumpFailure::Internal(Internal::NoHoldingFile));
                }
                if let Some(w) = w {
                    w.abort();
                }
                drop(self.index);
            }
        }
        DumpReport {
            status,
            failure,
            bytes: stored.size.max(0) as u64,
            orig_kb: outcome.orig_kb,
            crc: stored,
            client_crc: outcome.client_crc.into(),
            native_crc: outcome.native_crc,
            holding,
            index,
            info,
            log,
            duration: started.elapsed(),
            data_time,
            warnings,
            // Counted by the caller, which ran the exchange.
            resent: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 10: a final header that failed to build left the first one, silently.
    #[test]
    fn a_final_header_that_does_not_fit_fails_the_dump() {
        let dle = proto::dle::Dle {
            program: "GNUTAR".into(),
            disk: Some("/d".into()),
            ..proto::dle::Dle::default()
        };
        // A client's RECOVER_CMD (a MESG line of up to 64 KiB) fills the header.
        let info = |pad: usize| InfoFields {
            backup: Some("/bin/tar".into()),
            recover_cmd: Some(format!("/bin/tar -x{}", "x".repeat(pad)).into()),
            ..InfoFields::default()
        };
        let header =
            |pad: usize| DumpHeader::for_dump(b"20260101000000", b"h", &dle, 0, &info(pad), None);
        // The largest header that still builds without the sizes and CRCs.
        let pad = (0..HEADER_SIZE)
            .rev()
            .find(|&p| header(p).build().is_ok())
            .unwrap();
        let crc = CrcValue {
            crc: 0x1234_5678,
            size: 1 << 40,
        };
        let outcome = DumpOutcome {
            status: DumpStatus::Done,
            error: None,
            orig_kb: Some(1 << 30),
            kb: 1 << 30,
            native_crc: Some(crc),
            client_crc: crc,
            info: info(pad),
            retry: None,
            log: Vec::new(),
        };
        let e = final_header(header(pad), &outcome, crc).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("[cannot build the final dump-file header: header is"),
            "{e}"
        );
        assert!(final_header(header(0), &outcome, crc).is_ok());
    }
}
