//! The data phase of one dump: a small mio loop over one framed connection (bsdtcp, bsdudp)
//! or up to four raw ones (bsd), feeding the MESG lines to `proto`'s dump tracker, the INDEX
//! bytes to the index file and the DATA bytes (with their CRC-32C, computed in the same pass)
//! to the holding-file writer.
//!
//! Rules (spec §4.5, §6.7.4-§6.7.7):
//! - DATA is consumed only after `sendbackup: info end`; framed DATA that arrives earlier is
//!   buffered, up to [`MAX_EARLY_DATA`] bytes (more fails the dump); a raw DATA connection is
//!   simply not read until then, so TCP holds it back.
//! - The 32 KiB dump-file header is written when `info end` is seen; the final header (with
//!   the sizes and CRCs) replaces it when the dump is committed.
//! - On a framed connection each client stream ends with a zero-length frame, which we
//!   answer with ours; the control handle of the request is answered the same way.
//! - The dump ends when every stream ended; `dtimeout` without DATA progress fails it
//!   (`data timeout`), MESG lines counting only for a bounded time ([`super::liveness`]); a
//!   connection that closes while streams are open fails it.
//! - The INDEX stream may bring at most [`Limits::max_index_bytes`]; more fails the dump.
//! - The final header is the first one plus sizes and CRCs; if it cannot be built the dump
//!   fails (a file with the first header could not be verified later).
//! - After the last stream we give the client a moment to close first, so that our side does
//!   not sit in TIME_WAIT (the port would be held back from that client); the real bsdtcp
//!   amandad waits for us instead, and then portpool's TIME_WAIT hold applies.
//!
//! Memory is bounded: one read buffer, the writer's buffers, the early-DATA bound, the
//! MESG line limit and the tracker's bounded log. What this module must not do: parse MESG
//! lines itself (proto's `DumpTracker` does) or decide retries.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;

use mio::{Events, Interest, Poll, Token};
use portpool_alloc::Lease;
use proto::Stream;
use proto::crc::{Crc32c, CrcValue};
use proto::frame::{Decoder, Event, eof_frame};
use proto::header::{DumpHeader, HEADER_SIZE};
use proto::mesg::{
    DataSummary, DumpOutcome, DumpStatus, DumpTracker, InfoFields, LineSplitter, SplitLine,
};

use super::liveness::Liveness;
use super::{DumpReport, Progress};
use crate::failure::{DumpFailure, Internal, LinkOp, StreamSetup};
use crate::holding::{Chunk, HoldingError, HoldingWriter};
use crate::index::IndexWriter;

/// Framed DATA accepted before `sendbackup: info end` (a correct client sends none).
pub const MAX_EARLY_DATA: usize = 16 * 1024 * 1024;

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
}

enum Kind {
    Raw {
        stream: Stream,
        ended: bool,
    },
    Framed {
        decoder: Decoder,
        /// (handle, stream, ended)
        handles: Vec<(u32, Stream, bool)>,
        /// The request's control handle, until the client closed it.
        control: Option<u32>,
        initial: Vec<u8>,
        out: Vec<u8>,
    },
}

/// One data connection.
pub struct Source {
    conn: Lease<mio::net::TcpStream>,
    peer: SocketAddr,
    kind: Kind,
    tcp_eof: bool,
    /// auth ssl: everything passes this TLS layer.
    tls: Option<ssl::TlsLayer>,
}

fn to_mio(lease: Lease<TcpStream>) -> Result<Lease<mio::net::TcpStream>, StreamSetup> {
    lease.try_map(|s| {
        s.set_nonblocking(true)
            .map_err(|e| StreamSetup::Nonblocking(Arc::new(e)))?;
        Ok(mio::net::TcpStream::from_std(s))
    })
}

impl Source {
    /// A raw (bsd) connection carrying one stream.
    pub fn raw(
        lease: Lease<TcpStream>,
        peer: SocketAddr,
        stream: Stream,
    ) -> Result<Source, StreamSetup> {
        Ok(Source {
            conn: to_mio(lease)?,
            peer,
            kind: Kind::Raw {
                stream,
                ended: false,
            },
            tcp_eof: false,
            tls: None,
        })
    }

    /// A framed connection: `handles` maps frame handles to streams; `initial` is what was
    /// already read from it; `control` is the request's handle and whether the client
    /// closed it already (then our zero-length frame goes out at once).
    pub fn framed(
        lease: Lease<TcpStream>,
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
            conn: to_mio(lease)?,
            peer,
            kind: Kind::Framed {
                decoder: Decoder::new(),
                handles: handles.into_iter().map(|(h, k)| (h, k, false)).collect(),
                control,
                initial,
                out,
            },
            tcp_eof: false,
            tls: None,
        })
    }

    /// The same connection inside TLS (auth ssl; the handshake is done).
    pub fn with_tls(mut self, tls: Option<ssl::TlsLayer>) -> Source {
        self.tls = tls;
        self
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

    fn open_streams(&self) -> Vec<Stream> {
        match &self.kind {
            Kind::Raw { stream, ended } => {
                if *ended {
                    vec![]
                } else {
                    vec![*stream]
                }
            }
            Kind::Framed { handles, .. } => handles
                .iter()
                .filter(|(_, _, e)| !e)
                .map(|(_, k, _)| *k)
                .collect(),
        }
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if let (Some(t), Kind::Framed { out, .. }) = (&mut self.tls, &mut self.kind) {
            let sock = self.conn.socket_mut();
            loop {
                if !out.is_empty() {
                    let n = t.write_frames(out)?;
                    out.drain(..n);
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

/// Everything that consumes the streams.
struct Sink<'a> {
    writer: Option<HoldingWriter>,
    index: Option<IndexWriter>,
    tracker: DumpTracker,
    splitter: LineSplitter,
    crc: Crc32c,
    early: Vec<u8>,
    current: Option<Chunk>,
    header: Option<Vec<u8>>,
    /// The header written first, to which the final one adds sizes and CRCs.
    header_fields: Option<DumpHeader>,
    error: Option<DumpFailure>,
    open: Vec<Stream>,
    mesg_ended: bool,
    stop: bool,
    liveness: Liveness,
    index_bytes: u64,
    max_index_bytes: u64,
    first_data: Option<Instant>,
    last_data: Option<Instant>,
    progress: &'a Progress,
    header_base: &'a dyn Fn(&InfoFields) -> DumpHeader,
}

impl Sink<'_> {
    fn fail(&mut self, e: DumpFailure) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.stop = true;
    }

    fn holding_failed(&mut self, e: HoldingError) {
        self.fail(DumpFailure::Holding(Arc::new(e)));
    }

    fn data_enabled(&self) -> bool {
        self.header.is_some()
    }

    fn on_bytes(&mut self, kind: Stream, bytes: &[u8]) {
        match kind {
            Stream::Mesg => {
                self.splitter.push(bytes);
                let now = Instant::now();
                while let Some(l) = self.splitter.next_line() {
                    self.liveness.on_mesg_line(now);
                    match l {
                        SplitLine::Line(line) => {
                            self.tracker.on_line(&line);
                        }
                        SplitLine::TooLong { len } => self.tracker.on_too_long(len),
                    }
                }
                if self.tracker.retry_requested() {
                    self.stop = true;
                }
                if self.header.is_none() && self.tracker.header_complete() {
                    self.start_data();
                }
            }
            Stream::Data => {
                if !bytes.is_empty() {
                    self.liveness.on_data(Instant::now());
                }
                if self.header.is_some() {
                    self.push_data(bytes);
                } else if self.early.len() + bytes.len() > MAX_EARLY_DATA {
                    self.fail(DumpFailure::EarlyData {
                        limit: MAX_EARLY_DATA,
                    });
                } else {
                    self.early.extend_from_slice(bytes);
                }
            }
            Stream::Index => {
                self.index_bytes = self.index_bytes.saturating_add(bytes.len() as u64);
                if self.index_bytes > self.max_index_bytes {
                    self.fail(DumpFailure::IndexCap {
                        limit: self.max_index_bytes,
                    });
                    return;
                }
                if let Some(ix) = &mut self.index {
                    ix.write(bytes);
                }
            }
            Stream::State => {}
        }
    }

    /// `sendbackup: info end` was seen: write the header, then the early DATA.
    fn start_data(&mut self) {
        let fields = (self.header_base)(self.tracker.info());
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
        if let Some(w) = &mut self.writer
            && let Err(e) = w.write_all(&header)
        {
            self.holding_failed(e);
            return;
        }
        self.header = Some(header);
        let early = std::mem::take(&mut self.early);
        if !early.is_empty() {
            self.push_data(&early);
        }
    }

    fn mark_data(&mut self, n: usize) {
        let now = Instant::now();
        self.first_data.get_or_insert(now);
        self.last_data = Some(now);
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// DATA bytes from a framed connection: checksum and copy into writer buffers.
    fn push_data(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() || self.stop {
            return;
        }
        self.crc.update(bytes);
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
        let w = self.writer.as_mut()?;
        match w.chunk() {
            Ok(c) => Some(c),
            Err(e) => {
                self.holding_failed(e);
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
        if let Some(w) = &mut self.writer
            && let Err(e) = w.submit(chunk)
        {
            self.holding_failed(e);
        }
    }

    fn flush_current(&mut self) {
        if let Some(c) = self.current.take()
            && let Some(w) = &mut self.writer
            && let Err(e) = w.submit(c)
        {
            self.holding_failed(e);
        }
    }

    fn on_eof(&mut self, kind: Stream) {
        if let Some(i) = self.open.iter().position(|k| *k == kind) {
            self.open.remove(i);
        }
        if kind == Stream::Mesg && !self.mesg_ended {
            self.mesg_ended = true;
            let rest = self.splitter.finish();
            let partial = match &rest {
                Some(Ok(p)) => Some(p.as_slice()),
                _ => None,
            };
            self.tracker.on_mesg_eof(partial);
            if self.header.is_none() {
                // The real dumper stops here: "got no header information".
                self.stop = true;
            }
        }
    }
}

/// The data phase of one dump.
pub struct Session<'a> {
    sources: Vec<Source>,
    sink: Sink<'a>,
    rbuf: Vec<u8>,
}

/// What the data phase produced.
pub struct SessionResult {
    writer: Option<HoldingWriter>,
    header_fields: Option<DumpHeader>,
    index: Option<IndexWriter>,
    tracker: DumpTracker,
    crc: Crc32c,
    error: Option<DumpFailure>,
    first_data: Option<Instant>,
    last_data: Option<Instant>,
}

impl<'a> Session<'a> {
    /// A session over `sources`, writing to `writer` and `index`.
    pub fn new(
        sources: Vec<Source>,
        writer: HoldingWriter,
        index: Option<IndexWriter>,
        tracker: DumpTracker,
        limits: Limits,
        progress: &'a Progress,
        header_base: &'a dyn Fn(&InfoFields) -> DumpHeader,
    ) -> Session<'a> {
        let open = sources.iter().flat_map(Source::open_streams).collect();
        progress.bytes.store(0, Ordering::Relaxed);
        Session {
            sources,
            sink: Sink {
                writer: Some(writer),
                index,
                tracker,
                splitter: LineSplitter::default(),
                crc: Crc32c::new(),
                early: Vec::new(),
                current: None,
                header: None,
                header_fields: None,
                error: None,
                open,
                mesg_ended: false,
                stop: false,
                liveness: Liveness::new(Instant::now(), limits.dtimeout),
                index_bytes: 0,
                max_index_bytes: limits.max_index_bytes,
                first_data: None,
                last_data: None,
                progress,
                header_base,
            },
            rbuf: vec![0; READ_BUF],
        }
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
            writer: s.writer,
            header_fields: s.header_fields,
            index: s.index,
            tracker: s.tracker,
            crc: s.crc,
            error: s.error,
            first_data: s.first_data,
            last_data: s.last_data,
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
                Kind::Raw { .. } => Vec::new(),
            };
            if !initial.is_empty() {
                self.decode(i, &initial)?;
            }
        }
        let mut events = Events::with_capacity(16);
        let mut data_was_enabled = self.sink.data_enabled();
        // Everything is serviced once at the start (edge-triggered readiness may have fired
        // before registration).
        let mut ready: Vec<bool> = vec![true; self.sources.len()];
        loop {
            for (i, r) in ready.iter_mut().enumerate() {
                if *r {
                    *r = self.service(i)?;
                }
                if let Err(e) = self.sources[i].flush_out() {
                    return Err(DumpFailure::Link {
                        peer: self.sources[i].peer,
                        op: LinkOp::Write,
                        source: Arc::new(e),
                    });
                }
            }
            // Raw DATA becomes readable for us only now: read what TCP held back.
            if !data_was_enabled && self.sink.data_enabled() {
                data_was_enabled = true;
                for (i, s) in self.sources.iter().enumerate() {
                    if matches!(
                        s.kind,
                        Kind::Raw {
                            stream: Stream::Data,
                            ..
                        }
                    ) {
                        ready[i] = true;
                    }
                }
                continue;
            }
            if self.sink.stop || self.sink.open.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(e) = self.sink.liveness.expired(now) {
                return Err(DumpFailure::DataTimeout(e));
            }
            // A source left readable gets its next turn after a poll that does not wait.
            let wait = if ready.iter().any(|r| *r) {
                Duration::ZERO
            } else {
                self.sink
                    .liveness
                    .deadline()
                    .saturating_duration_since(now)
                    .min(Duration::from_secs(60))
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
            if self.sink.stop {
                return Ok(false);
            }
            let src = &mut self.sources[i];
            if src.tcp_eof {
                return Ok(false);
            }
            match src.kind {
                Kind::Raw {
                    stream: Stream::Data,
                    ended,
                } => {
                    if ended || !self.sink.data_enabled() {
                        return Ok(false);
                    }
                    if !self.read_raw_data(i)? {
                        return Ok(false);
                    }
                }
                Kind::Raw { stream, ended } => {
                    if ended {
                        return Ok(false);
                    }
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
        let r = loop {
            match src.conn.socket_mut().read(chunk.spare()) {
                Ok(n) => break Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    break Err(DumpFailure::Link {
                        peer: src.peer,
                        op: LinkOp::ReadData,
                        source: Arc::new(e),
                    });
                }
            }
        };
        match r {
            Ok(Some(0)) => {
                self.sink.put_chunk(chunk);
                self.raw_eof(i, Stream::Data);
                Ok(false)
            }
            Ok(Some(n)) => {
                chunk.filled += n;
                self.sink.crc.update(&chunk.buf[start..start + n]);
                self.sink.liveness.on_data(Instant::now());
                self.sink.mark_data(n);
                self.sink.put_chunk(chunk);
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
        if let Kind::Raw { ended, .. } = &mut src.kind {
            *ended = true;
        }
        self.sink.on_eof(stream);
    }

    fn framed_eof(&mut self, i: usize) {
        let src = &mut self.sources[i];
        src.tcp_eof = true;
        src.conn.set_no_time_wait();
        let peer = src.peer;
        let mut cut: Vec<Stream> = Vec::new();
        let mut truncated = None;
        if let Kind::Framed {
            decoder, handles, ..
        } = &mut src.kind
        {
            if let Err(e) = decoder.finish() {
                truncated = Some(e);
            }
            for (_, k, ended) in handles.iter_mut() {
                if !*ended {
                    *ended = true;
                    cut.push(*k);
                }
            }
        }
        if !cut.is_empty() {
            // MESG processing first, so the tracker sees its end; then our error wins.
            for k in &cut {
                self.sink.on_eof(*k);
            }
            self.sink.fail(DumpFailure::ClosedEarly {
                peer,
                open: cut,
                truncated,
            });
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
            match ev {
                Event::Start(_) => {}
                Event::Data { handle, chunk, .. } => {
                    let kind = handles
                        .iter()
                        .find(|(h, _, ended)| *h == handle && !ended)
                        .map(|(_, k, _)| *k);
                    match kind {
                        Some(k) => self.sink.on_bytes(k, chunk),
                        None => log::debug!(
                            "{}: {} bytes on handle {handle} went unclaimed",
                            src.peer,
                            chunk.len()
                        ),
                    }
                }
                Event::Eof { handle } => {
                    if *control == Some(handle) {
                        *control = None;
                        out.extend_from_slice(&eof_frame(handle));
                        continue;
                    }
                    let mut ended_kind = None;
                    for (h, k, ended) in handles.iter_mut() {
                        if *h == handle && !*ended {
                            *ended = true;
                            ended_kind = Some(*k);
                        }
                    }
                    if let Some(k) = ended_kind {
                        // The server answers each stream's close with its own.
                        out.extend_from_slice(&eof_frame(handle));
                        self.sink.on_eof(k);
                    }
                }
            }
        }
    }

    /// After the last stream: give the client a moment to close first.
    fn linger(&mut self) {
        let until = Instant::now() + CLOSE_WAIT;
        let mut scratch = [0u8; 4096];
        for s in &mut self.sources {
            let _ = s.flush_out();
            if s.tcp_eof {
                continue;
            }
            if self.sink.error.is_some() && !self.sink.open.is_empty() {
                // A failed dump: do not wait for a client that may be stuck.
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
    loop {
        match src.read_plain(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(DumpFailure::Link {
                    peer: src.peer,
                    op: LinkOp::Read,
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

impl SessionResult {
    /// The verdict, with the files committed (success) or removed (failure).
    pub fn into_report(self, started: Instant) -> DumpReport {
        let received = self.crc.value();
        let outcome = self.tracker.finish(DataSummary { received });
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
        if let Some(ours) = self.error {
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
        let final_header = match (status, self.header_fields) {
            (DumpStatus::Done | DumpStatus::Strange, Some(h)) => {
                match final_header(h, &outcome, received) {
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
        if let Some(header) = final_header {
            let expected = HEADER_SIZE as u64 + received.size.max(0) as u64;
            match self.writer {
                Some(w) => {
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
                }
                None => {
                    status = DumpStatus::Failed;
                    failure = Some(DumpFailure::Internal(Internal::NoHoldingFile));
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
        } else {
            if let Some(w) = self.writer {
                w.abort();
            }
            drop(self.index);
        }
        let data_time = match (self.first_data, self.last_data) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        DumpReport {
            status,
            failure,
            bytes: received.size.max(0) as u64,
            orig_kb: outcome.orig_kb,
            crc: received,
            client_crc: outcome.client_crc.into(),
            native_crc: outcome.native_crc,
            holding,
            index,
            info: outcome.info,
            log: outcome
                .log
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect(),
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
