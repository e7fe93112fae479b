//! A TCP connection of the loop: a non-blocking socket, what it still has to write, and what
//! the peer said (frames, for multiplexed connections).
//!
//! Output is one contiguous buffer written from `pos`; producers append whole frames or raw
//! bytes and the loop flushes. The buffer's length is the connection's backpressure: the
//! dump relay stops reading its pipes while [`Conn::pending`] is above [`HIGH_WATER`], and
//! the loop stops reading a peer whose output passed its bound (the peer does not read its
//! replies) until it catches up.
//!
//! auth ssl: the same buffer holds plaintext, which [`Conn::flush`] passes through the
//! connection's TLS layer; reads return plaintext only once the handshake and the
//! certificate checks are done (see `super::tls`). No splicing then.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::net::TcpStream;
use proto::frame::{self, FrameReader};

/// Stop feeding a connection above this many unwritten bytes.
pub const HIGH_WATER: usize = 4 << 20;

/// Largest payload of a data frame we write (the real amandad writes 32 KiB; servers accept
/// up to 4 MiB).
pub const MAX_DATA_FRAME: usize = 256 << 10;

/// What a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A bsdtcp control connection: frames, control packets and multiplexed streams.
    Control,
    /// A bsdudp data connection: frames of multiplexed streams.
    DataMux,
    /// A bsd data connection: the raw bytes of one stream.
    DataRaw,
}

/// One TCP connection.
pub struct Conn {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub role: Role,
    out: Vec<u8>,
    pos: usize,
    /// Close (shutdown for writing) once everything is written.
    pub close_when_flushed: bool,
    /// The write side has been shut down.
    pub write_closed: bool,
    /// The peer closed its side (EOF read) or the connection failed.
    pub read_closed: bool,
    pub reader: FrameReader,
    /// Counter for our stream handles on this connection (499999, 499998, ...).
    pub stream_handles: proto::tcp::StreamHandles,
    /// Payload bytes being spliced from a pipe straight into the socket, after `out` and
    /// before `held`.
    splice: Option<Splice>,
    /// Output queued while a splice is in progress: it goes after the spliced bytes.
    held: Vec<u8>,
    /// The peer's name once known (control connections: looked up before anything is read).
    pub peer_name: Option<String>,
    /// Reading waits for the peer's name.
    pub name_pending: bool,
    /// Reading waits for the peer to take its output.
    pub paused: bool,
    /// Last time output was written (or there was none to write).
    pub last_progress: Instant,
    /// Last time bytes went out (or the connection was made): the dial-in heartbeat.
    pub last_sent: Instant,
    /// Exchanges running on this connection.
    pub exchanges: usize,
    /// Whether the socket is registered for readable events (it follows [`Conn::reading`]).
    pub interest_readable: bool,
    /// auth ssl: the TLS layer and how far its checks are.
    pub tls: Option<super::tls::TlsConn>,
    /// `--dial-out`: this host opened the connection to the server (issue 14).
    pub dialed: bool,
}

/// A run of bytes that move from a pipe to the socket without passing through user space.
#[derive(Clone, Copy, Debug)]
struct Splice {
    fd: RawFd,
    left: usize,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr, role: Role) -> Conn {
        Conn {
            sock,
            peer,
            role,
            out: Vec::new(),
            pos: 0,
            close_when_flushed: false,
            write_closed: false,
            read_closed: false,
            reader: FrameReader::new(),
            stream_handles: proto::tcp::StreamHandles::default(),
            splice: None,
            held: Vec::new(),
            peer_name: None,
            name_pending: false,
            paused: false,
            last_progress: Instant::now(),
            last_sent: Instant::now(),
            exchanges: 0,
            interest_readable: true,
            tls: None,
            dialed: false,
        }
    }

    /// Whether the loop reads from this connection now.
    pub fn reading(&self) -> bool {
        !self.read_closed && !self.name_pending && !self.paused
    }

    /// The buffer new output goes to: behind a splice in progress, if any.
    fn sink(&mut self) -> &mut Vec<u8> {
        if self.splice.is_some() {
            &mut self.held
        } else {
            self.compact();
            &mut self.out
        }
    }

    /// Queues `len` bytes that are sitting in pipe `fd` (the caller knows they are there,
    /// e.g. from `tee`): they are spliced into the socket after what is queued now.
    pub fn push_splice(&mut self, fd: RawFd, len: usize) {
        debug_assert!(self.splice.is_none(), "one splice at a time");
        if len > 0 {
            self.splice = Some(Splice { fd, left: len });
        }
    }

    /// True while spliced bytes are still on their way.
    pub fn splicing(&self) -> bool {
        self.splice.is_some()
    }

    /// Bytes queued but not yet written (TLS records not yet written count as one).
    pub fn pending(&self) -> usize {
        let tls = self.tls.as_ref().is_some_and(|t| t.layer.wants_write());
        self.out.len() - self.pos
            + self.held.len()
            + self.splice.map_or(0, |s| s.left)
            + usize::from(tls)
    }

    /// True if more output may be queued without exceeding the high-water mark.
    pub fn has_room(&self) -> bool {
        self.pending() < HIGH_WATER
    }

    /// Queues raw bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.sink().extend_from_slice(bytes);
    }

    /// Queues `payload` as frames on `handle`, split at [`MAX_DATA_FRAME`]. An empty payload
    /// queues nothing (a zero-length frame would end the stream; use [`Conn::push_eof`]).
    pub fn push_frames(&mut self, handle: u32, payload: &[u8]) {
        let out = self.sink();
        for chunk in payload.chunks(MAX_DATA_FRAME) {
            // chunk.len() <= MAX_DATA_FRAME < the 4 MiB limit, so encoding cannot fail.
            let _ = frame::encode_frame(handle, chunk, out);
        }
    }

    /// Queues the end-of-stream frame of `handle`.
    pub fn push_eof(&mut self, handle: u32) {
        self.sink().extend_from_slice(&frame::eof_frame(handle));
    }

    /// Reads up to `max` bytes from `fd` straight into the output buffer, as one frame on
    /// `handle` when `handle` is `Some`, else raw. Returns the bytes read (0 at EOF) and
    /// hands them to `inspect` first (the CRC). No intermediate copy.
    pub fn read_into(
        &mut self,
        fd: RawFd,
        handle: Option<u32>,
        max: usize,
        inspect: impl FnOnce(&[u8]),
    ) -> io::Result<usize> {
        debug_assert!(
            self.splice.is_none(),
            "reading into the buffer behind a splice"
        );
        self.compact();
        let header = if handle.is_some() {
            frame::HEADER_LEN
        } else {
            0
        };
        let start = self.out.len();
        self.out.reserve(header + max);
        self.out.resize(start + header, 0);
        let spare = self.out.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: read writes at most `want` bytes into the spare capacity of `out`, which is
        // allocated (reserved above) and exclusively borrowed here.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            self.out.truncate(start);
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            self.out.truncate(start);
            return Ok(0);
        }
        // SAFETY: the kernel initialised exactly n bytes after the current length.
        unsafe { self.out.set_len(start + header + n) };
        if let Some(handle) = handle {
            // n <= MAX_DATA_FRAME-sized reads, below the 4 MiB limit.
            if let Ok(h) = frame::encode_header(handle, n) {
                self.out[start..start + header].copy_from_slice(&h);
            }
        }
        inspect(&self.out[start + header..]);
        Ok(n)
    }

    /// Forgets the last `n` queued bytes (output nobody reads any more).
    pub fn discard_tail(&mut self, n: usize) {
        let keep = self.out.len().saturating_sub(n).max(self.pos);
        self.out.truncate(keep);
    }

    /// Writes as much queued output as the socket takes. Returns `Ok(true)` when everything
    /// was written. Shuts the write side down once flushed if asked to.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.pending() == 0 {
            self.last_progress = Instant::now();
        }
        if self.tls.is_some() {
            return self.flush_tls();
        }
        loop {
            while self.pos < self.out.len() {
                match self.sock.write(&self.out[self.pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.pos += n;
                        self.last_progress = Instant::now();
                        self.last_sent = self.last_progress;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.clear();
            self.pos = 0;
            let Some(sp) = self.splice.as_mut() else {
                break;
            };
            // SAFETY: both descriptors are open (the pipe belongs to the dump, which ends the
            // splice before closing it); no user memory is involved.
            let n = unsafe {
                libc::splice(
                    sp.fd,
                    std::ptr::null_mut(),
                    self.sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    sp.left,
                    libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    // The pipe holds the bytes (they were counted by tee): the socket is full.
                    io::ErrorKind::WouldBlock => return Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive pipe ended inside a spliced frame",
                ));
            }
            sp.left -= n as usize;
            self.last_progress = Instant::now();
            self.last_sent = self.last_progress;
            if sp.left == 0 {
                self.splice = None;
                std::mem::swap(&mut self.out, &mut self.held);
            }
        }
        if self.close_when_flushed && !self.write_closed {
            self.write_closed = true;
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
        }
        Ok(true)
    }

    /// [`Conn::flush`] through TLS: plaintext into the layer (as much as it takes), its
    /// records to the socket.
    fn flush_tls(&mut self) -> io::Result<bool> {
        let Some(t) = self.tls.as_mut() else {
            return Ok(true);
        };
        loop {
            while self.pos < self.out.len() {
                // One frame per record at most: Amanda's reader needs it (ssl::layer).
                let n = t.layer.write_frames(&self.out[self.pos..])?;
                if n == 0 {
                    break;
                }
                self.pos += n;
                self.last_progress = Instant::now();
                self.last_sent = self.last_progress;
            }
            if self.pos == self.out.len() {
                self.out.clear();
                self.pos = 0;
            }
            if !t.layer.flush(&mut self.sock)? {
                return Ok(false);
            }
            self.last_progress = Instant::now();
            if self.pos == self.out.len() {
                break;
            }
        }
        if self.close_when_flushed && !self.write_closed {
            t.layer.close();
            if !t.layer.flush(&mut self.sock)? {
                return Ok(false);
            }
            self.write_closed = true;
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
        }
        Ok(true)
    }

    /// [`Conn::read_chunk`] through TLS: handshake records first (no plaintext), then
    /// nothing until the certificate checks passed, then plaintext.
    fn read_tls_chunk(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.clear();
        let Some(t) = self.tls.as_mut() else {
            return Ok(0);
        };
        let result = loop {
            if t.layer.is_handshaking() {
                match t.layer.read_tls(&mut self.sock) {
                    Ok(true) => continue,
                    Ok(false) => break Ok(0),
                    Err(e) => break Err(e),
                }
            }
            if !t.checked {
                break Err(io::ErrorKind::WouldBlock.into());
            }
            buf.resize(max, 0);
            let r = t.layer.read(&mut self.sock, buf);
            buf.truncate(*r.as_ref().unwrap_or(&0));
            break r;
        };
        match &result {
            Ok(0) => self.read_closed = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => self.read_closed = true,
            _ => {}
        }
        result
    }

    /// Reads at most `max` bytes the peer sent into `buf` (cleared first). `Ok(0)` at EOF
    /// (and `read_closed` is set); `WouldBlock` when nothing is waiting.
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.read_tls_chunk(buf, max);
        }
        buf.clear();
        buf.resize(max, 0);
        loop {
            match self.sock.read(buf) {
                Ok(n) => {
                    buf.truncate(n);
                    if n == 0 {
                        self.read_closed = true;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.clear();
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.read_closed = true;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The socket's fd.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn compact(&mut self) {
        // Drop written bytes once they are most of the buffer, so it does not grow forever.
        if self.pos > 0 && self.pos >= self.out.len() / 2 {
            self.out.drain(..self.pos);
            self.pos = 0;
        }
    }
}
