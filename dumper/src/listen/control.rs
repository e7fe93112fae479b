//! One accepted bsdtcp connection before its data phase: whole frames read with a deadline
//! and a size bound, packets written on a handle. Blocking, one thread per connection (the
//! listener bounds the threads).
//!
//! What this module must not do: judge packets (see `intake`) or know services.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proto::frame::{self, DecodeError, Decoder, Event};
use proto::pkt::PacketType;
use proto::tcp::Packet;

/// Why a frame could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing (or not a whole frame) before the deadline.
    #[error("no {what} within {secs} s")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The wait.
        secs: u64,
    },
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A frame longer than this connection accepts now.
    #[error(
        "a frame of {len} bytes on handle {handle}, more than the {bound} this connection accepts before its request is done"
    )]
    TooLong {
        /// Its length.
        len: u32,
        /// Its handle.
        handle: u32,
        /// The bound.
        bound: usize,
    },
    /// Not Amanda frames.
    #[error("{0}")]
    Frame(#[from] DecodeError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The connection's bytes: plain (bsdtcp) or inside TLS (ssl, handshake done).
pub enum Wire {
    /// auth bsdtcp.
    Plain(TcpStream),
    /// auth ssl.
    Tls(Box<ssl::TlsStream<TcpStream>>),
}

impl Wire {
    fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => t.get_ref(),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(t) => t.flush(),
        }
    }
}

/// A control connection.
pub struct Control {
    sock: Wire,
    peer: SocketAddr,
    decoder: Decoder,
    /// Bytes read and not yet decoded.
    pending: Vec<u8>,
    /// The frame being assembled.
    partial: Vec<u8>,
}

impl Control {
    /// Wraps an accepted connection.
    pub fn new(sock: Wire, peer: SocketAddr) -> Control {
        Control {
            sock,
            peer,
            decoder: Decoder::new(),
            pending: Vec::new(),
            partial: Vec::new(),
        }
    }

    /// The socket (to peek at, issue 14).
    pub fn socket(&self) -> &TcpStream {
        self.sock.socket()
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The next whole frame, within `wait`, of at most `bound` payload bytes. `what` names
    /// the wait in a timeout.
    pub fn read_frame(
        &mut self,
        wait: Duration,
        bound: usize,
        what: &'static str,
    ) -> Result<(u32, Vec<u8>), ReadError> {
        let mut buf = [0u8; 16 * 1024];
        let deadline = Instant::now() + wait;
        let timeout = ReadError::Timeout {
            what,
            secs: wait.as_secs(),
        };
        loop {
            let mut input = &self.pending[..];
            let mut got = None;
            while got.is_none() {
                match self.decoder.next(&mut input)? {
                    None => break,
                    Some(Event::Start(h)) => {
                        if h.len as usize > bound {
                            return Err(ReadError::TooLong {
                                len: h.len,
                                handle: h.handle,
                                bound,
                            });
                        }
                        self.partial.clear();
                    }
                    Some(Event::Data { handle, chunk, end }) => {
                        self.partial.extend_from_slice(chunk);
                        if end {
                            got = Some((handle, std::mem::take(&mut self.partial)));
                        }
                    }
                    Some(Event::Eof { handle }) => got = Some((handle, Vec::new())),
                }
            }
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            if let Some(f) = got {
                return Ok(f);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout);
            }
            self.sock
                .socket()
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            match self.sock.read(&mut buf) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next packet on `handle` (frames on other handles are dropped; a close of
    /// `handle` is [`ReadError::Closed`]).
    pub fn read_packet(
        &mut self,
        handle: u32,
        wait: Duration,
        bound: usize,
        what: &'static str,
    ) -> Result<(PacketType, Vec<u8>), ReadError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (h, payload) = self.read_frame(left, bound, what)?;
            if h != handle {
                continue;
            }
            if payload.is_empty() {
                return Err(ReadError::Closed);
            }
            let p = Packet::parse(&payload).map_err(|e| {
                ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            })?;
            return Ok((p.ptype, p.body.into_owned()));
        }
    }

    /// Writes a packet on `handle`.
    pub fn send(&mut self, handle: u32, ptype: PacketType, body: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        Packet::new(ptype, body)
            .encode_frame(handle, &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.write_all(&out)
    }

    /// Writes the end-of-stream frame of `handle`.
    pub fn close_handle(&mut self, handle: u32) -> io::Result<()> {
        self.write_all(&frame::eof_frame(handle))
    }

    /// Writes raw bytes (a refusal frame), within a bounded time.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock
            .socket()
            .set_write_timeout(Some(Duration::from_secs(30)))?;
        self.sock.write_all(bytes)?;
        self.sock.flush()
    }

    /// After a NAK or a REP without streams: the peer's close of `handle` is awaited
    /// briefly and answered, as amandad does; then the connection is dropped.
    pub fn finish(mut self, handle: u32, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left, frame::NETWORK_BLOCK_BYTES, "close") {
                Ok((h, p)) if h == handle && p.is_empty() => {
                    let _ = self.close_handle(handle);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// The socket, its TLS layer (ssl) and what was read but not decoded (the start of the
    /// data phase).
    pub fn into_parts(self) -> (TcpStream, Option<ssl::TlsLayer>, Vec<u8>) {
        let _ = self.sock.socket().set_read_timeout(None);
        let _ = self.sock.socket().set_write_timeout(None);
        match self.sock {
            Wire::Plain(s) => (s, None, self.pending),
            Wire::Tls(t) => {
                let (s, layer) = t.into_parts();
                (s, Some(layer), self.pending)
            }
        }
    }

    /// Whether the decoder stopped between frames (so `into_parts` loses nothing).
    pub fn at_frame_boundary(&self) -> bool {
        self.decoder.is_at_frame_boundary()
    }
}
