//! The bsdtcp control transport (spec §2.4, §4.4): packets in frames on one TCP connection
//! from a reserved port, one control handle per request (1, 2, ...).
//!
//! [`FramedConn`] reads into its own buffer and decodes whole frames from it, so that bytes
//! read past a REP (the first MESG frames of a sendbackup can arrive in the same segment)
//! stay in the buffer for the data phase ([`FramedConn::into_parts`]). After an exchange the
//! client closes its control handle with a zero-length frame; [`FramedConn::close_handle`]
//! waits for it and answers with ours, as the real server does.
//!
//! auth ssl runs the same frames inside TLS ([`FramedConn::with_tls`], made by
//! [`super::tls::connect`]); the TLS layer goes on to the data phase with
//! [`FramedConn::take_tls`].
//!
//! What this module must not do: interpret stream data.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::held::Held;
use proto::exchange::Packet;
use proto::frame::{self, FrameHeader, HEADER_LEN, MAX_FRAME_LEN};
use proto::pkt::PacketType;
use proto::tcp::{ControlHandles, Packet as TcpPacket};

use super::Hop;
use super::exchange::{Transport, TransportError};

/// A framed TCP connection to a client.
pub struct FramedConn {
    lease: Held<TcpStream>,
    peer: SocketAddr,
    user: Vec<u8>,
    handles: ControlHandles,
    handle: u32,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    closed_by_peer: HashSet<u32>,
    eof: bool,
    /// auth ssl: the frames go through this TLS layer.
    tls: Option<Box<ssl::TlsLayer>>,
    /// A dial-in session (issue 14): a heartbeat frame goes out when nothing was sent for
    /// this long (`dumper.dialin_session_heartbeat_secs`).
    heartbeat: Option<Duration>,
    /// When we last wrote to the client.
    last_sent: Instant,
}

impl FramedConn {
    /// Wraps a connected stream to `peer` (leased, or opened by a dial-in client); requests
    /// carry `SECURITY USER <user>`.
    pub fn new(lease: impl Into<Held<TcpStream>>, peer: SocketAddr, user: &str) -> FramedConn {
        let mut handles = ControlHandles::new();
        let handle = handles.next().unwrap_or(1);
        FramedConn {
            lease: lease.into(),
            peer,
            user: user.as_bytes().to_vec(),
            handles,
            handle,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            closed_by_peer: HashSet::new(),
            eof: false,
            tls: None,
            heartbeat: None,
            last_sent: Instant::now(),
        }
    }

    /// Sends [`proto::dialin::session_heartbeat`] whenever nothing was sent for `every`
    /// while waiting for the client (a dial-in session through a proxy, issue 14).
    pub fn with_heartbeat(mut self, every: Option<Duration>) -> FramedConn {
        self.heartbeat = every;
        self
    }

    /// Turns the heartbeat on (or off) once the connection is open: a client reached
    /// through a proxy granted it on the noop (issue 14).
    pub fn set_heartbeat(&mut self, every: Option<Duration>) {
        self.heartbeat = every;
    }

    /// The heartbeat interval, for the data phase that follows on this connection.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// The same over TLS (auth ssl): `layer` has finished its handshake on the lease's
    /// socket.
    pub fn with_tls(mut self, layer: ssl::TlsLayer) -> FramedConn {
        self.tls = Some(Box::new(layer));
        self
    }

    /// The TLS layer, for the data phase (before [`FramedConn::into_parts`]).
    pub fn take_tls(&mut self) -> Option<ssl::TlsLayer> {
        self.tls.take().map(|t| *t)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.last_sent = Instant::now();
        let sock = self.lease.socket_mut();
        match &mut self.tls {
            Some(t) => super::tls::write_all(t, sock, bytes),
            None => sock.write_all(bytes),
        }
    }

    /// The client.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The local (leased) port; none for a connection a dial-in client opened.
    pub fn port(&self) -> Option<u16> {
        self.lease.leased_port()
    }

    /// The control handle of the current exchange.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Moves to the next control handle, for another request on this connection.
    pub fn next_exchange(&mut self) {
        self.handle = self.handles.next().unwrap_or(1);
    }

    fn write_frame(&mut self, handle: u32, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        frame::encode_frame(handle, payload, &mut out).map_err(io::Error::other)?;
        self.write_all(&out)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads the next whole frame, until `until`. `Ok(None)`: time is up.
    fn next_frame(&mut self, until: Instant) -> Result<Option<(u32, Vec<u8>)>, TransportError> {
        loop {
            let have = self.end - self.start;
            if have >= HEADER_LEN {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
                let header = FrameHeader::from_bytes(h);
                if header.len > MAX_FRAME_LEN {
                    let mut d = frame::Decoder::new();
                    let mut input = &self.buf[self.start..self.end];
                    return Err(TransportError::Frame {
                        peer: self.peer,
                        error: d.next(&mut input).err(),
                    });
                }
                let total = HEADER_LEN + header.len as usize;
                if have >= total {
                    let payload = self.buf[self.start + HEADER_LEN..self.start + total].to_vec();
                    self.start += total;
                    return Ok(Some((header.handle, payload)));
                }
                if self.start + total > self.buf.len() {
                    self.compact();
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                }
            }
            if self.eof {
                return Err(TransportError::Closed { peer: self.peer });
            }
            if self.end == self.buf.len() || self.start == self.end {
                self.compact();
            }
            let mut now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            if let Some(every) = self.heartbeat
                && now >= self.last_sent + every
            {
                self.write_all(&proto::dialin::session_heartbeat())
                    .map_err(|e| self.io_error(e))?;
                now = Instant::now();
            }
            let beat = self
                .heartbeat
                .map_or(until, |every| until.min(self.last_sent + every));
            let wait = beat
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            let end = self.end;
            let sock = self.lease.socket_mut();
            let _ = sock.set_read_timeout(Some(wait));
            let got = match &mut self.tls {
                Some(t) => super::tls::read(t, sock, &mut self.buf[end..]),
                None => sock.read(&mut self.buf[end..]),
            };
            match got {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if super::only_waited(&e) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn io_error(&self, e: io::Error) -> TransportError {
        TransportError::Io {
            peer: self.peer,
            source: Arc::new(e),
        }
    }

    /// After an exchange: waits (until `until`) for the client's zero-length frame on the
    /// current handle, then sends ours. Frames on other handles meanwhile are dropped.
    pub fn close_handle(&mut self, until: Instant) -> Result<(), TransportError> {
        let h = self.handle;
        while !self.closed_by_peer.contains(&h) {
            match self.next_frame(until)? {
                Some((handle, p)) if p.is_empty() => {
                    self.closed_by_peer.insert(handle);
                }
                Some((handle, p)) => log::debug!(
                    "{}: {} bytes on handle {handle} went unclaimed",
                    self.peer,
                    p.len()
                ),
                None => break,
            }
        }
        self.write_frame(h, &[]).map_err(|e| self.io_error(e))
    }

    /// Whether the client closed handle `h` already.
    pub fn peer_closed(&self, h: u32) -> bool {
        self.closed_by_peer.contains(&h)
    }

    /// The connection and the bytes read but not decoded yet, for the data phase.
    pub fn into_parts(self) -> (Held<TcpStream>, Vec<u8>, HashSet<u32>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.lease, rest, self.closed_by_peer)
    }
}

impl Transport for FramedConn {
    fn send(&mut self, p: &Packet) -> io::Result<()> {
        let pkt = match p.ty {
            PacketType::Req => TcpPacket::request(&self.user, &p.body)
                .map_err(|e| io::Error::other(e.to_string()))?,
            ty => TcpPacket::new(ty, &p.body[..]),
        };
        let mut out = Vec::new();
        pkt.encode_frame(self.handle, &mut out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.write_all(&out)
    }

    fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, TransportError> {
        loop {
            let Some((handle, payload)) = self.next_frame(until)? else {
                return Ok(None);
            };
            if payload.is_empty() {
                self.closed_by_peer.insert(handle);
                continue;
            }
            if self.heartbeat.is_some() && proto::dialin::is_session_heartbeat(handle) {
                continue;
            }
            if handle != self.handle {
                log::debug!(
                    "{}: {} bytes on handle {handle} went unclaimed",
                    self.peer,
                    payload.len()
                );
                continue;
            }
            match TcpPacket::parse(&payload) {
                Ok(p) => return Ok(Some((p.ptype, p.body.into_owned()))),
                Err(e) => log::debug!("{}: bad packet on handle {handle}: {e}", self.peer),
            }
        }
    }

    fn hop(&self) -> Option<Hop> {
        let local = self.lease.socket().local_addr().ok();
        Some(Hop {
            transport: proto::ports::Transport::Tcp,
            local: local.map(|a| a.ip()),
            source_port: local.map(|a| a.port()),
            peer: self.peer,
        })
    }

    fn send_errors_are_fatal(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    // issue 14: a dial-in session waiting for the client sends its heartbeat while quiet,
    // and drops the client's, so that a reply after a long quiet spell still arrives.
    #[test]
    fn a_quiet_dialin_session_sends_heartbeats_and_drops_the_clients() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, peer) = l.accept().unwrap();
        let mut conn = FramedConn::new(Held::Accepted(server), peer, "backup")
            .with_heartbeat(Some(Duration::from_millis(100)));
        let mut out = proto::dialin::session_heartbeat();
        proto::tcp::Packet::new(PacketType::Ack, b"SECURITY USER backup\n".to_vec())
            .encode_frame(conn.handle(), &mut out)
            .unwrap();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(450));
            client.write_all(&out).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut got = vec![0u8; 4096];
            let n = client.read(&mut got).unwrap();
            got.truncate(n);
            got
        });
        let (ptype, _) = conn
            .recv(started + Duration::from_secs(5))
            .unwrap()
            .expect("the ACK after the client's heartbeat");
        assert_eq!(ptype, PacketType::Ack);
        let got = t.join().unwrap();
        let beat = proto::dialin::session_heartbeat();
        let beats = got.chunks(beat.len()).filter(|c| *c == beat).count();
        assert!(
            beats >= 3 && got.len() == beats * beat.len(),
            "{beats} heartbeats in {} bytes",
            got.len()
        );
    }
}
