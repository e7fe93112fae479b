//! The connection to the server's amandad (bsdtcp, spec §4.4): opened from a reserved
//! source port as amservice does, framed, non-blocking, with one output buffer; and the
//! blocking driver of one REQ/ACK/REP/ACK exchange around `proto`'s [`Initiator`].
//! auth ssl may go through an HTTP CONNECT proxy ([`Via`], issue 14): TLS runs inside the
//! tunnel. bsdtcp cannot: the server would see the proxy's source port, never reserved.
//!
//! What this module must not do: read request or reply bodies (that is `wire`), or write
//! to the terminal.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use portpool_alloc::{Lease, Pool, PoolConfig};
use proto::exchange::{Initiator, InitiatorConfig, InitiatorEvent};
use proto::frame::{self, Frame, FrameReader};
use proto::pkt::PacketType;
use proto::ports::{PortRange, Transport};
use proto::tcp::{FIRST_CONTROL_HANDLE, Packet};

/// The largest DATA frame we send (the real client's, spec §14.4).
pub const MAX_DATA_FRAME: usize = 64 << 10;

/// How long a connect may take (Amanda's `CONNECT_TIMEOUT`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No reserved port or no connection.
    #[error("cannot connect to {dest} from a port of tcp {range}: {source}")]
    Connect {
        /// The server's address.
        dest: SocketAddr,
        /// The reserved range.
        range: PortRange,
        /// portpool's account.
        source: Box<portpool_alloc::ConnectError>,
    },
    /// The pool could not be set up (its registry directory, ...).
    #[error("tcp {range}: {source}")]
    Pool {
        /// The reserved range.
        range: PortRange,
        /// Why.
        source: Box<portpool_alloc::PoolError>,
    },
    /// The HTTP proxy gave no tunnel (its refusal, garbage, silence), or could not be
    /// reached; the text names the proxy.
    #[error("{0}")]
    Proxy(String),
    /// A read or write failed.
    #[error("{peer}: {source}")]
    Io {
        /// The server.
        peer: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The server's bytes are not Amanda frames.
    #[error("{peer}: {source}")]
    Frame {
        /// The server.
        peer: SocketAddr,
        /// The decoder's verdict.
        source: frame::DecodeError,
    },
    /// The server closed the connection.
    #[error("{peer}: connection closed by the server")]
    Closed {
        /// The server.
        peer: SocketAddr,
    },
    /// Nothing came from the server for too long.
    #[error("{peer}: nothing from the server for {}s", .waited.as_secs())]
    Silent {
        /// The server.
        peer: SocketAddr,
        /// How long.
        waited: Duration,
    },
    /// auth ssl: our files, the TLS handshake, or a check of the server's certificate
    /// (Amanda's texts first).
    #[error("{dest}: {why}")]
    Ssl {
        /// The server.
        dest: SocketAddr,
        /// What failed.
        why: String,
    },
    /// The exchange failed (NAK, timeout, a broken packet).
    #[error("{0}")]
    Exchange(String),
}

/// One framed connection to the server.
pub struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    // The port's lease (released, with its TIME_WAIT hold, when the connection ends).
    _lease: Option<Lease<TcpStream>>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    /// The most ever queued and unwritten (what the bounds are tested on).
    peak: usize,
    reader: FrameReader,
    frames: VecDeque<Frame<'static>>,
    closed: bool,
    buf: Vec<u8>,
    /// auth ssl: every byte goes through TLS.
    tls: Option<ssl::TlsLayer>,
}

/// Connects to `dest` from a port of `range` (root binds it; the host-wide registry under
/// `run_dir` keeps two programs off the same port).
pub fn connect_reserved(
    dest: SocketAddr,
    range: PortRange,
    run_dir: Option<std::path::PathBuf>,
) -> Result<Conn, ConnError> {
    let lease = lease_connection(dest, range, run_dir)?;
    Conn::over(lease)
}

/// A TCP connection to `dest` from a port of `range`, leased from portpool.
fn lease_connection(
    dest: SocketAddr,
    range: PortRange,
    run_dir: Option<std::path::PathBuf>,
) -> Result<Lease<TcpStream>, ConnError> {
    let mut cfg = PoolConfig::new(Transport::Tcp, range);
    cfg.run_dir = run_dir;
    let pool = Pool::new(cfg).map_err(|source| ConnError::Pool {
        range,
        source: Box::new(source),
    })?;
    pool.connect(dest, CONNECT_TIMEOUT, Instant::now() + CONNECT_TIMEOUT)
        .map_err(|source| ConnError::Connect {
            dest,
            range,
            source: Box::new(source),
        })
}

/// How long the TLS handshake may take.
pub const SSL_HANDSHAKE: Duration = Duration::from_secs(30);

/// An HTTP CONNECT proxy on the way to the server (issue 14).
pub struct Via<'a> {
    /// The proxy.
    pub url: &'a proto::proxy::ProxyUrl,
    /// Where it was set (`proxy.url`, `https_proxy`).
    pub origin: conf::proxy::Origin,
    /// How long its answer may take (`proxy.answer_timeout_secs`).
    pub answer_timeout: Duration,
}

/// auth ssl (spec §13): connects to `dest` from a port of `range` (the unreserved range, as
/// amservice), or through the proxy `via` (issue 14: any source port, the server sees the
/// proxy's; the CONNECT asks for `dest`), runs the TLS handshake as the client with
/// `settings` (the client's ssl-dir), then Amanda's checks of the server's certificate for
/// `host` (the `amdump_server` name).
pub fn connect_ssl(
    dest: SocketAddr,
    via: Option<&Via<'_>>,
    range: PortRange,
    run_dir: Option<std::path::PathBuf>,
    settings: &conf::SslSettings,
    host: &str,
) -> Result<Conn, ConnError> {
    let (cfg, _) = ssl::client_config(settings).map_err(|e| ConnError::Ssl {
        dest,
        why: e.to_string(),
    })?;
    let (mut sock, lease) = match via {
        Some(via) => (tunnel(dest, via)?, None),
        None => {
            let lease = lease_connection(dest, range, run_dir)?;
            let sock = lease
                .socket()
                .try_clone()
                .map_err(|source| ConnError::Io { peer: dest, source })?;
            (sock, Some(lease))
        }
    };
    let layer = tls_over(&mut sock, cfg, dest, settings, host)?;
    let _ = sock.set_read_timeout(None);
    let _ = socket2::SockRef::from(&sock).set_keepalive(true);
    let mut conn = Conn::new(sock, lease)?;
    conn.tls = Some(layer);
    Ok(conn)
}

/// A TCP connection to the proxy of `via` and a tunnel through it to `dest`.
fn tunnel(dest: SocketAddr, via: &Via<'_>) -> Result<TcpStream, ConnError> {
    let proxy = format!("{} (from {})", via.url, via.origin);
    let mut sock = (via.url.host.as_str(), via.url.port)
        .to_socket_addrs()
        .and_then(|mut a| a.next().ok_or_else(|| io::Error::other("no address")))
        .and_then(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT))
        .map_err(|e| ConnError::Proxy(format!("cannot reach HTTP proxy {proxy}: {e}")))?;
    crate::proxy::tunnel(
        &mut sock,
        &via.url.to_string(),
        &dest.ip().to_string(),
        dest.port(),
        via.url.credentials.as_ref(),
        via.answer_timeout,
    )
    .map_err(|e| ConnError::Proxy(format!("through HTTP proxy {proxy}: {e}")))?;
    Ok(sock)
}

/// The TLS handshake as the client on `sock` (connected to `dest`, or a tunnel to it) and
/// Amanda's checks of the server's certificate for `host`.
fn tls_over(
    sock: &mut TcpStream,
    cfg: std::sync::Arc<ssl::rustls::ClientConfig>,
    dest: SocketAddr,
    settings: &conf::SslSettings,
    host: &str,
) -> Result<ssl::TlsLayer, ConnError> {
    let fail = |why: String| ConnError::Ssl { dest, why };
    let layer =
        ssl::TlsLayer::client(cfg, host).map_err(|e| fail(format!("SSL_connect failed: {e}")))?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
    let mut stream = ssl::TlsStream::new(layer, &mut *sock);
    stream
        .handshake(Instant::now() + SSL_HANDSHAKE)
        .map_err(|e| {
            fail(format!(
                "SSL_connect failed: {}",
                ssl::layer::describe_error(&e)
            ))
        })?;
    let (_, mut layer) = stream.into_parts();
    let canonical = ssl::names::canonical_name(host);
    let check = ssl::Check {
        side: ssl::Side::Initiator,
        settings,
        host: Some(&canonical),
        peer: dest,
    };
    ssl::check_peer(
        &check,
        layer.peer_certificate(),
        &ssl::names::forward_confirm,
    )
    .map_err(|e| fail(e.to_string()))?;
    layer.set_bulk_reads(true);
    Ok(layer)
}

impl Conn {
    /// A connection over the leased socket (keepalive on: a quiet dump must survive
    /// firewalls' idle timeouts).
    fn over(lease: Lease<TcpStream>) -> Result<Conn, ConnError> {
        let peer = lease.dest().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let sock = lease
            .socket()
            .try_clone()
            .map_err(|source| ConnError::Io { peer, source })?;
        let _ = socket2::SockRef::from(&sock).set_keepalive(true);
        Conn::new(sock, Some(lease))
    }

    /// A connection over `sock` (already connected).
    pub fn new(sock: TcpStream, lease: Option<Lease<TcpStream>>) -> Result<Conn, ConnError> {
        let peer = sock.peer_addr().map_err(|source| ConnError::Io {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        sock.set_nonblocking(true)
            .map_err(|source| ConnError::Io { peer, source })?;
        let _ = sock.set_nodelay(true);
        Ok(Conn {
            sock,
            peer,
            _lease: lease,
            out: Vec::new(),
            sent: 0,
            peak: 0,
            reader: FrameReader::new(),
            frames: VecDeque::new(),
            closed: false,
            buf: vec![0; 64 << 10],
            tls: None,
        })
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// The most bytes ever queued and not yet written.
    pub fn peak_pending(&self) -> usize {
        self.peak
    }

    /// Queues `payload` on `handle`, in frames of at most [`MAX_DATA_FRAME`] bytes.
    pub fn queue(&mut self, handle: u32, payload: &[u8]) {
        for chunk in payload.chunks(MAX_DATA_FRAME) {
            // A chunk is far below the frame limit.
            let _ = frame::encode_frame(handle, chunk, &mut self.out);
        }
        self.peak = self.peak.max(self.pending());
    }

    /// Queues the end of `handle` (a zero-length frame).
    pub fn queue_eof(&mut self, handle: u32) {
        let _ = frame::encode_frame(handle, &[], &mut self.out);
    }

    fn queue_packet(&mut self, p: &Packet<'_>) -> Result<(), ConnError> {
        p.encode_frame(FIRST_CONTROL_HANDLE, &mut self.out)
            .map(|_| ())
            .map_err(|e| ConnError::Exchange(e.to_string()))
    }

    /// Whether bytes wait to go out (queued frames, or TLS records).
    fn wants_write(&self) -> bool {
        self.pending() > 0 || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes what it can without blocking.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let peer = self.peer;
        let io = |source| ConnError::Io { peer, source };
        if let Some(tls) = &mut self.tls {
            loop {
                // Whole frames go in; a record never holds bytes of two frames.
                let mut moved = 0;
                while self.sent < self.out.len() {
                    let n = tls.write_frames(&self.out[self.sent..]).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    self.sent += n;
                    moved += n;
                }
                let done = tls.flush(&mut self.sock).map_err(io)?;
                if !done || moved == 0 {
                    break;
                }
            }
        } else {
            while self.sent < self.out.len() {
                match self.sock.write(&self.out[self.sent..]) {
                    Ok(0) => return Err(ConnError::Closed { peer: self.peer }),
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(io(source)),
                }
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > (1 << 20) {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Reads what is there without blocking; whole frames go to [`Conn::next_frame`].
    pub fn read(&mut self) -> Result<(), ConnError> {
        while !self.closed {
            let got = match &mut self.tls {
                Some(tls) => {
                    let r = tls.read(&mut self.sock, &mut self.buf);
                    // Alerts and key updates the read produced.
                    if tls.wants_write() {
                        let _ = tls.flush(&mut self.sock);
                    }
                    r
                }
                None => self.sock.read(&mut self.buf),
            };
            match got {
                Ok(0) => {
                    self.closed = true;
                    self.reader.finish().map_err(|source| ConnError::Frame {
                        peer: self.peer,
                        source,
                    })?;
                }
                Ok(n) => {
                    let mut input = &self.buf[..n];
                    while let Some(f) =
                        self.reader
                            .next(&mut input)
                            .map_err(|source| ConnError::Frame {
                                peer: self.peer,
                                source,
                            })?
                    {
                        self.frames.push_back(f.into_owned());
                    }
                    // Read no further than a few frames ahead: the caller drains them.
                    if self.frames.len() > 64 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ConnError::Io {
                        peer: self.peer,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The next whole frame read.
    pub fn next_frame(&mut self) -> Option<Frame<'static>> {
        self.frames.pop_front()
    }

    /// Frames read and not yet taken.
    pub fn queued_frames(&self) -> usize {
        self.frames.len()
    }

    /// Whether the server closed the connection (and every frame was taken).
    pub fn is_closed(&self) -> bool {
        self.closed && self.frames.is_empty()
    }

    /// Waits until the socket (or one of `others`, for reading) is ready, or `until`.
    /// Returns which of `others` are readable (or hung up).
    pub fn wait(
        &mut self,
        others: &[BorrowedFd<'_>],
        until: Option<Instant>,
    ) -> Result<Vec<bool>, ConnError> {
        let others: Vec<(BorrowedFd<'_>, bool)> = others.iter().map(|fd| (*fd, false)).collect();
        self.wait_for(&others, until)
    }

    /// [`Conn::wait`] where each of `others` says whether it is waited on for writing.
    pub fn wait_for(
        &mut self,
        others: &[(BorrowedFd<'_>, bool)],
        until: Option<Instant>,
    ) -> Result<Vec<bool>, ConnError> {
        let mut sock_flags = PollFlags::empty();
        if !self.closed && self.frames.len() <= 64 {
            sock_flags |= PollFlags::POLLIN;
        }
        if self.wants_write() {
            sock_flags |= PollFlags::POLLOUT;
        }
        let mut fds = Vec::with_capacity(1 + others.len());
        fds.push(PollFd::new(self.sock.as_fd(), sock_flags));
        for (fd, writable) in others {
            let flags = if *writable {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            fds.push(PollFd::new(*fd, flags));
        }
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(ConnError::Io {
                    peer: self.peer,
                    source: e.into(),
                });
            }
        }
        let ready = |f: &PollFd<'_>| {
            f.revents().is_some_and(|r| {
                r.intersects(
                    PollFlags::POLLIN
                        | PollFlags::POLLOUT
                        | PollFlags::POLLHUP
                        | PollFlags::POLLERR,
                )
            })
        };
        let others_ready = fds[1..].iter().map(ready).collect();
        self.flush()?;
        self.read()?;
        Ok(others_ready)
    }

    /// Runs one exchange on control handle 1: sends the REQ (`body` from the `SERVICE`
    /// line, after `SECURITY USER <user>`), returns the REP body. Frames on other handles
    /// before the REP are dropped; those after it stay queued for [`Conn::next_frame`]. The
    /// ACK of the REP and the end of handle 1 are queued and flushed as far as possible.
    pub fn exchange(
        &mut self,
        user: &str,
        body: Vec<u8>,
        rep_wait: Duration,
    ) -> Result<Vec<u8>, ConnError> {
        let mut ex = Initiator::new(
            Instant::now(),
            InitiatorConfig::with_rep_wait(rep_wait),
            body,
        );
        loop {
            while let Some(ev) = ex.poll_event() {
                match ev {
                    InitiatorEvent::Connect => ex.handle_connected(Instant::now()),
                    InitiatorEvent::Rep(body) => {
                        while let Some(p) = ex.poll_transmit() {
                            self.queue_packet(&Packet::new(p.ty, p.body))?;
                        }
                        self.queue_eof(FIRST_CONTROL_HANDLE);
                        self.flush()?;
                        // Frames after the REP (a server's first stream bytes) stay queued.
                        return Ok(body);
                    }
                    InitiatorEvent::Nak(body) => {
                        return Err(ConnError::Exchange(
                            String::from_utf8_lossy(&body).trim_end().to_string(),
                        ));
                    }
                    InitiatorEvent::Failed(e) => {
                        return Err(ConnError::Exchange(format!("{}: {e}", self.peer)));
                    }
                    InitiatorEvent::Acked
                    | InitiatorEvent::Retransmit { .. }
                    | InitiatorEvent::Prep(_) => {}
                }
            }
            while let Some(p) = ex.poll_transmit() {
                let packet = match p.ty {
                    PacketType::Req => Packet::request(user.as_bytes(), &p.body)
                        .map_err(|e| ConnError::Exchange(e.to_string()))?,
                    ty => Packet::new(ty, p.body),
                };
                self.queue_packet(&packet)?;
            }
            self.flush()?;
            let mut fed = false;
            while let Some(f) = self.next_frame() {
                // No stream exists before the REP: anything on another handle is dropped,
                // so a server cannot make us hold it.
                if f.handle != FIRST_CONTROL_HANDLE || f.is_eof() {
                    continue;
                }
                match Packet::parse(&f.payload) {
                    Ok(p) => ex.handle_packet(Instant::now(), p.ptype, &p.body),
                    Err(e) => return Err(ConnError::Exchange(format!("{}: {e}", self.peer))),
                }
                fed = true;
                break;
            }
            if fed {
                // Its events and transmits are handled at the top.
                continue;
            }
            if self.is_closed() {
                return Err(ConnError::Closed { peer: self.peer });
            }
            self.wait(&[], ex.poll_timeout())?;
            ex.handle_timeout(Instant::now());
        }
    }

    /// Waits (up to `limit`) for the server to end handle 1 after an exchange, as amservice
    /// does before it closes.
    pub fn finish_exchange(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            if self.flush().is_err() {
                return;
            }
            while let Some(f) = self.next_frame() {
                if f.handle == FIRST_CONTROL_HANDLE && f.is_eof() {
                    return;
                }
            }
            if self.is_closed() || Instant::now() >= until {
                return;
            }
            if self.wait(&[], Some(until)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The exchange driver against hostile servers on loopback (issue 14).

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;

    /// A server on loopback that runs `serve` on the one connection it accepts.
    fn with_server(
        serve: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (Conn, thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            serve(s);
        });
        let sock = TcpStream::connect(addr).expect("connect");
        (Conn::new(sock, None).expect("conn"), t)
    }

    fn frame(handle: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(handle, payload, &mut out).expect("frame");
        out
    }

    fn packet(ty: PacketType, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Packet::new(ty, body)
            .encode_frame(FIRST_CONTROL_HANDLE, &mut out)
            .expect("packet");
        out
    }

    /// Reads the REQ frame (header and payload) off `s`.
    fn read_req(s: &mut TcpStream) -> Vec<u8> {
        let mut head = [0u8; 8];
        s.read_exact(&mut head).expect("header");
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut body = vec![0; len];
        s.read_exact(&mut body).expect("body");
        body
    }

    /// One exchange as user backup.
    fn ask(conn: &mut Conn, body: &[u8]) -> Result<Vec<u8>, ConnError> {
        conn.exchange("backup", body.to_vec(), Duration::from_secs(30))
    }

    /// Reads until the client closes.
    fn drain(mut s: TcpStream) {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }

    #[test]
    fn text_instead_of_frames_is_named_not_a_hang() {
        let (mut conn, t) = with_server(|mut s| {
            let _ = read_req(&mut s);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let e = ask(&mut conn, b"SERVICE noop\n").expect_err("junk");
        assert!(matches!(e, ConnError::Frame { .. }), "{e}");
        assert!(e.to_string().contains("HTTP/1.1 400"), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn a_nak_is_the_servers_text() {
        let (mut conn, t) = with_server(|mut s| {
            let req = read_req(&mut s);
            assert!(req[1..].starts_with(b"SECURITY USER backup\nSERVICE ambackupd\n"));
            let _ = s.write_all(&packet(PacketType::Ack, b""));
            let _ = s.write_all(&packet(
                PacketType::Nak,
                b"ERROR user backup from localhost is not allowed to execute the service ambackupd\n",
            ));
            drain(s);
        });
        let e = ask(&mut conn, b"SERVICE ambackupd\nLISTDLE\n").expect_err("nak");
        assert_eq!(
            e.to_string(),
            "ERROR user backup from localhost is not allowed to execute the service ambackupd"
        );
        drop(conn);
        t.join().unwrap();
    }

    #[test]
    fn stream_frames_before_the_rep_are_dropped_not_held() {
        let (mut conn, t) = with_server(|mut s| {
            let _ = read_req(&mut s);
            let junk = frame(499_999, &vec![7u8; 1 << 20]);
            for _ in 0..64 {
                if s.write_all(&junk).is_err() {
                    return;
                }
            }
            let _ = s.write_all(&packet(PacketType::Rep, b"OPTIONS features=ff;\n"));
            let _ = s.write_all(&frame(499_998, b"start backup: /a\n"));
            drain(s);
        });
        let rep = ask(&mut conn, b"SERVICE noop\n").expect("rep");
        assert_eq!(rep, b"OPTIONS features=ff;\n");
        let until = Instant::now() + Duration::from_secs(5);
        while conn.queued_frames() == 0 && Instant::now() < until {
            conn.wait(&[], Some(until)).expect("wait");
        }
        let f = conn.next_frame().expect("the MESG frame after the REP");
        assert_eq!(
            (f.handle, &f.payload[..]),
            (499_998, &b"start backup: /a\n"[..])
        );
        drop(conn);
        t.join().unwrap();
    }
}
