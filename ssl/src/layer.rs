//! TLS over any connected byte stream (a TCP socket, a connection the client opened, a
//! tunnel through an HTTP CONNECT proxy): [`TlsLayer`] is rustls's sans-IO connection with
//! Amanda's conventions, driven by the caller's loop; [`TlsStream`] is the same for blocking
//! code (the dumper's control exchange), and hands its layer over to a non-blocking loop
//! with [`TlsStream::into_parts`].
//!
//! Amanda's conventions (spec §13.1): the bytes inside are bsdtcp's frames; nobody sends
//! close_notify, the side that is done closes the socket, so a TCP EOF without close_notify
//! is a normal end of the stream ([`TlsLayer::read`] returns 0), not an error.
//!
//! **Records must not hold bytes of two frames** ([`TlsLayer::write_frames`]). Amanda reads
//! one frame per readable event of the socket, with `SSL_read`s of the frame's size; what a
//! record holds beyond that frame stays in OpenSSL's buffer, the socket is not readable
//! again, and the frame after it (often the last ones: the streams' ends) is read only
//! when more bytes arrive, which may be never: the real dumper then fails the dump with
//! `data timeout` (measured with Amanda 3.5.1's dumper against a sender that packed frames
//! into full records). Amanda's own sender writes each frame in three records (length,
//! handle, payload); one record per frame (or several, for a frame above 16 KiB) is enough.
//!
//! Bounds: after the handshake rustls holds at most one incoming record before we read its
//! plaintext out; during it, up to one 64 KiB handshake message, which
//! [`TlsLayer::handshake_held`] reports for the caller's budget. Reads use a small buffer
//! given back after each use until the caller vouches for the peer
//! ([`TlsLayer::set_bulk_reads`]), so a connection of an unknown peer holds no large buffer.
//! [`TlsLayer::write`] takes plaintext only while less than [`SEND_BUFFER`] bytes wait to be
//! written, so a peer that does not read costs a bounded buffer here too.
//!
//! What this module must not do: own the socket (the caller's loop owns it and its
//! readiness) or look at frames.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Plaintext and records waiting to be written that make [`TlsLayer::write`] take no more.
pub const SEND_BUFFER: usize = 256 << 10;

/// Ciphertext read from the socket per system call once the peer is trusted
/// ([`TlsLayer::set_bulk_reads`]). rustls reads at most 4 KiB at a time; reading a large
/// block ourselves and handing it over from memory made a 2 GiB dump over ssl 35% faster
/// (benches/compare-ssl.sh). The buffer is read empty before the socket is read again, so
/// it is the bound.
const READ_BLOCK: usize = 256 << 10;

/// The same before that (the handshake, and an acceptor's connection whose request was not
/// accepted yet): small, and given back after each use, so connections of peers nobody
/// vouched for hold no large buffers (issue 13: 256 such connections held 256 KiB each).
const SMALL_READ_BLOCK: usize = 16 << 10;

/// The most ciphertext rustls holds for an unfinished handshake: a 64 KiB handshake
/// message (its bound) and a record.
pub const MAX_HANDSHAKE_HELD: usize = (64 << 10) + (18 << 10);

/// A TLS error from rustls, as an `io::Error` of kind `InvalidData` (the peer's fault) whose
/// text is rustls's.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The text of a TLS failure for the admin: for a certificate our verifier refused,
/// `certificate verify failed: <why, naming the CA file>` (OpenSSL's words, then ours);
/// else rustls's text or the I/O error.
pub fn describe_error(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            format!("certificate verify failed: {}", o.0)
        }
        rustls::Error::InvalidCertificate(c) => format!("certificate verify failed: {c:?}"),
        // The first bytes are not a TLS record at all (issue 13: a bsdtcp server or
        // client, HTTP, a port scanner): say so rather than rustls's parser detail.
        rustls::Error::InvalidMessage(
            m @ (rustls::InvalidMessage::InvalidContentType
            | rustls::InvalidMessage::UnknownProtocolVersion),
        ) => format!(
            "not TLS: the peer's bytes are no TLS record ({m:?}); does it use auth ssl on this port?"
        ),
        rustls::Error::AlertReceived(a) => {
            format!(
                "the peer refused the TLS handshake (alert {a:?}: its CA file does not hold the CA of our certificate, or our certificate does not fit its checks)"
            )
        }
        other => other.to_string(),
    }
}

/// One TLS connection without its socket.
pub struct TlsLayer {
    conn: Connection,
    /// The socket reached EOF.
    eof: bool,
    /// [`TlsLayer::write_frames`]: bytes of the current frame not yet taken.
    frame_left: usize,
    /// Ciphertext read from the socket and not yet given to rustls: `inbuf[in_pos..in_len]`.
    inbuf: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    /// Read in [`READ_BLOCK`]s (the peer is trusted).
    bulk: bool,
    /// Ciphertext rustls took while the handshake was not finished.
    handshake_in: usize,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("eof", &self.eof)
            .finish()
    }
}

impl TlsLayer {
    /// The TLS client end (we connected). `host` is only for rustls's bookkeeping: Amanda
    /// checks names after the handshake, and no SNI is sent.
    pub fn client(cfg: Arc<ClientConfig>, host: &str) -> io::Result<TlsLayer> {
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("amanda.invalid").expect("a valid name"));
        let c = ClientConnection::new(cfg, name).map_err(tls_error)?;
        Ok(TlsLayer::new(c.into()))
    }

    /// The TLS server end (we accepted).
    pub fn server(cfg: Arc<ServerConfig>) -> io::Result<TlsLayer> {
        let c = ServerConnection::new(cfg).map_err(tls_error)?;
        Ok(TlsLayer::new(c.into()))
    }

    fn new(mut conn: Connection) -> TlsLayer {
        conn.set_buffer_limit(Some(SEND_BUFFER));
        TlsLayer {
            conn,
            eof: false,
            frame_left: 0,
            inbuf: Vec::new(),
            in_pos: 0,
            in_len: 0,
            bulk: false,
            handshake_in: 0,
        }
    }

    /// Reads the socket in large blocks from now on (or small ones again): for a peer that
    /// passed every check (the dumper after its checks of the client; amandad once a
    /// request of the connection was accepted). Until then reads are small and their
    /// buffer is given back after each use.
    pub fn set_bulk_reads(&mut self, on: bool) {
        self.bulk = on;
    }

    /// An upper bound of the ciphertext rustls holds for the unfinished handshake (what
    /// it took so far, at most [`MAX_HANDSHAKE_HELD`]); 0 once the handshake is done. For
    /// the caller's budget of partial input.
    pub fn handshake_held(&self) -> usize {
        if self.conn.is_handshaking() {
            self.handshake_in.min(MAX_HANDSHAKE_HELD)
        } else {
            0
        }
    }

    /// The handshake is not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The peer's certificate (its first), once the handshake is done.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }

    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{:?} {:?}",
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite().map(|s| s.suite())
        )
    }

    /// Plaintext from the peer into `buf`: `Ok(0)` at the end of the stream (close_notify,
    /// or a TCP EOF: Amanda's way to end), `WouldBlock` when `sock` has nothing more. Reads
    /// from `sock` only as needed. After it, [`TlsLayer::flush`]: the handshake and alerts
    /// produce records to send.
    pub fn read(&mut self, sock: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EOF without close_notify: how every Amanda connection ends.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof && self.in_pos == self.in_len {
                return Ok(0);
            }
            if self.feed(sock)? == 0 {
                self.eof = true;
            }
            if let Err(e) = self.conn.process_new_packets() {
                return Err(tls_error(e));
            }
        }
    }

    /// Gives rustls ciphertext: from what we read before, else from one large read of
    /// `sock`. Returns what rustls took (0: EOF).
    fn feed(&mut self, sock: &mut dyn Read) -> io::Result<usize> {
        if self.in_pos == self.in_len {
            if self.eof {
                return Ok(0);
            }
            let block = if self.bulk && !self.conn.is_handshaking() {
                READ_BLOCK
            } else {
                SMALL_READ_BLOCK
            };
            if self.inbuf.len() != block {
                self.inbuf = vec![0; block];
            }
            self.in_pos = 0;
            self.in_len = loop {
                match sock.read(&mut self.inbuf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.in_len = 0;
                        return Err(e);
                    }
                }
            };
            if self.in_len == 0 {
                return Ok(0);
            }
        }
        let mut rest = &self.inbuf[self.in_pos..self.in_len];
        let handshaking = self.conn.is_handshaking();
        let n = self.conn.read_tls(&mut rest)?;
        self.in_pos += n;
        if handshaking {
            self.handshake_in = self.handshake_in.saturating_add(n);
        }
        if self.in_pos == self.in_len && (handshaking || !self.bulk) {
            // A peer not trusted yet holds no buffer between reads.
            self.inbuf = Vec::new();
            self.in_pos = 0;
            self.in_len = 0;
        }
        Ok(n)
    }

    /// Reads records from `sock` and processes them (the handshake) without taking
    /// plaintext. `Ok(false)` at EOF.
    pub fn read_tls(&mut self, sock: &mut dyn Read) -> io::Result<bool> {
        if self.eof && self.in_pos == self.in_len {
            return Ok(false);
        }
        if self.feed(sock)? == 0 {
            self.eof = true;
        }
        self.conn.process_new_packets().map_err(tls_error)?;
        Ok(!self.eof)
    }

    /// Queues plaintext; returns how much was taken (less when [`SEND_BUFFER`] is full, 0
    /// during the handshake's first flight is fine: it is sent after the handshake).
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// Queues the start of a stream of whole frames (`[u32 len][u32 handle][payload]`, as
    /// [`TlsLayer::write`]), never letting one record hold bytes of two frames (see the
    /// module docs). `data` continues where the last call stopped. Returns how much was
    /// taken. A frame header must not be cut between two calls' `data`.
    pub fn write_frames(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        while taken < data.len() {
            if self.frame_left == 0 {
                let Some(h) = data.get(taken..taken + 4) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a frame header cut short",
                    ));
                };
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                self.frame_left = 8 + len;
            }
            let end = (taken + self.frame_left).min(data.len());
            let n = self.conn.writer().write(&data[taken..end])?;
            if n == 0 {
                break;
            }
            taken += n;
            self.frame_left -= n;
        }
        Ok(taken)
    }

    /// Writes queued records to `sock`. `Ok(true)`: nothing is left.
    pub fn flush(&mut self, sock: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a close_notify (sent by the next flush). Amanda never sends one; sending it
    /// is harmless (OpenSSL's reader sees an ordinary end) and says the end was meant.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

/// A [`TlsLayer`] with a blocking stream: `Read`/`Write` of plaintext. Reads honour the
/// stream's own read timeout (WouldBlock/TimedOut come back as such).
pub struct TlsStream<S: Read + Write> {
    layer: TlsLayer,
    sock: S,
}

impl<S: Read + Write> TlsStream<S> {
    /// Wraps `sock` (connected, blocking).
    pub fn new(layer: TlsLayer, sock: S) -> TlsStream<S> {
        TlsStream { layer, sock }
    }

    /// Drives the handshake to its end, or fails (the peer's alert or EOF, or `until`
    /// passed: `TimedOut`). The stream's read timeout bounds each wait.
    pub fn handshake(&mut self, until: Instant) -> io::Result<()> {
        loop {
            self.flush_all()?;
            if !self.layer.is_handshaking() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            match self.layer.read_tls(&mut self.sock) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                Err(e) if only_waited(&e) => {}
                Err(e) => {
                    // Send the alert we owe the peer, then report.
                    let _ = self.flush_all();
                    return Err(e);
                }
            }
        }
    }

    fn flush_all(&mut self) -> io::Result<()> {
        // A blocking socket takes everything (or fails).
        while !self.layer.flush(&mut self.sock)? {}
        Ok(())
    }

    /// The layer (for the peer's certificate).
    pub fn layer(&self) -> &TlsLayer {
        &self.layer
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// The stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The stream and the layer, for a non-blocking loop to go on with (plaintext rustls
    /// already decrypted stays in the layer).
    pub fn into_parts(self) -> (S, TlsLayer) {
        (self.sock, self.layer)
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.layer.read(&mut self.sock, buf);
        // Key updates and alerts are answered at once.
        if self.layer.wants_write() {
            self.flush_all()?;
        }
        r
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut n = self.layer.write(data)?;
        if n == 0 && !data.is_empty() {
            self.flush_all()?;
            n = self.layer.write(data)?;
        }
        self.flush_all()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_all()?;
        self.sock.flush()
    }
}

/// Whether a read on a socket with a timeout only ran out of time (or was interrupted),
/// rather than failed: the loops that poll a blocking socket go round again.
pub fn only_waited(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::settings;
    use crate::config::{client_config, server_config};
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn amssl_certificates_shake_hands_both_ways_and_carry_frames() {
        let (mut t, mut server) = handshaken("main", "main");
        assert!(
            t.layer().describe().contains("TLSv1_3"),
            "{}",
            t.layer().describe()
        );
        let cert = server.layer().peer_certificate().unwrap().to_vec();
        let server = std::thread::spawn(move || {
            let mut got = vec![0u8; 5];
            server.read_exact(&mut got).unwrap();
            server.write_all(b"world").unwrap();
            // Amanda's end: close the socket without close_notify.
            drop(server);
            got
        });
        t.write_all(b"hello").unwrap();
        let mut got = vec![0u8; 5];
        t.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        // A TCP EOF without close_notify is an ordinary end.
        assert_eq!(t.read(&mut got).unwrap(), 0);
        assert_eq!(server.join().unwrap(), b"hello");
        let ours = crate::pem::certificates(include_bytes!("../testdata/main/client/crt.pem"));
        assert_eq!(cert, ours.unwrap()[0].to_vec());
    }

    /// A client and a server of the test trees, connected, before their handshake; and
    /// the handshake's deadline.
    fn ends(
        client_tree: &str,
        server_tree: &str,
    ) -> (TlsStream<TcpStream>, TlsStream<TcpStream>, Instant) {
        let (c, s) = testkit::tcp_pair();
        let (ccfg, _) = client_config(&settings(client_tree, "client")).unwrap();
        let (scfg, _) = server_config(&settings(server_tree, "server")).unwrap();
        let client = TlsStream::new(TlsLayer::client(ccfg, "127.0.0.1").unwrap(), c);
        let server = TlsStream::new(TlsLayer::server(scfg).unwrap(), s);
        (client, server, Instant::now() + Duration::from_secs(10))
    }

    /// A client and a server of the test trees after their handshake.
    fn handshaken(
        client_tree: &str,
        server_tree: &str,
    ) -> (TlsStream<TcpStream>, TlsStream<TcpStream>) {
        let (mut client, mut server, until) = ends(client_tree, server_tree);
        let server = std::thread::spawn(move || {
            server.handshake(until).unwrap();
            server
        });
        client.handshake(until).unwrap();
        (client, server.join().unwrap())
    }

    /// The sizes of the TLS records in `wire` (5-byte headers).
    fn record_sizes(mut wire: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while wire.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
            out.push(len);
            wire = &wire[(5 + len).min(wire.len())..];
        }
        out
    }

    // issue 13: the real dumper stalled ("data timeout") when a record held the end of one
    // frame and the start of the next.
    #[test]
    fn no_record_holds_bytes_of_two_frames() {
        let (_client, server) = handshaken("main", "main");
        let (_, mut layer) = server.into_parts();
        let frame = |handle: u32, len: usize| {
            let mut f = (len as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&handle.to_be_bytes());
            f.extend(std::iter::repeat_n(7u8, len));
            f
        };
        let mut frames = frame(499_998, 100);
        frames.extend(frame(499_999, 40_000));
        frames.extend(frame(499_999, 0));
        frames.extend(frame(499_998, 0));
        // Fed in two pieces, the second starting inside the big frame.
        let cut = 108 + 1000;
        let mut taken = layer.write_frames(&frames[..cut]).unwrap();
        taken += layer.write_frames(&frames[cut..]).unwrap();
        assert_eq!(taken, frames.len());
        let mut wire = Vec::new();
        while layer.flush(&mut wire).unwrap() && layer.wants_write() {}
        // Each plaintext record is its payload plus the content type byte and a 16-byte tag.
        let plain: Vec<usize> = record_sizes(&wire).iter().map(|n| n - 17).collect();
        assert_eq!(plain, vec![108, 1000, 16384, 16384, 6240, 8, 8]);
    }

    #[test]
    fn a_certificate_of_another_ca_is_refused_by_both_ends() {
        for (client_tree, server_tree) in [("other", "main"), ("main", "other"), ("same", "main")] {
            let (mut t, mut server, until) = ends(client_tree, server_tree);
            let server = std::thread::spawn(move || {
                let r = server.handshake(until);
                // TLS 1.3: the client finishes first; the refusal shows when it reads.
                let mut b = [0u8; 1];
                let r2 = r.and_then(|()| server.read(&mut b).map(|_| ()));
                r2.err().map(|e| e.to_string())
            });
            let client = t.handshake(until).and_then(|()| {
                t.write_all(b"x")?;
                let mut b = [0u8; 1];
                t.read(&mut b).map(|_| ())
            });
            let server = server.join().unwrap();
            let refused = client.is_err() || server.is_some();
            assert!(refused, "{client_tree} vs {server_tree}: nobody refused");
            let texts = format!("{client:?} {server:?}");
            assert!(
                texts.contains("CA file") || texts.contains("alert"),
                "{client_tree} vs {server_tree}: {texts}"
            );
        }
    }

    // issue 13: a bsdtcp frame, HTTP or random bytes where a ClientHello belongs got
    // rustls's parser detail ("corrupt message of type InvalidContentType").
    #[test]
    fn bytes_that_are_no_tls_record_are_called_not_tls() {
        let (scfg, _) = server_config(&settings("main", "server")).unwrap();
        let bsdtcp = b"\0\0\0\x10\0\0\0\x01\0SECURITY USER x";
        for first in [
            &bsdtcp[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x16\x09\x09\0\x05hello",
        ] {
            let mut layer = TlsLayer::server(scfg.clone()).unwrap();
            let e = layer.read_tls(&mut &first[..]).unwrap_err();
            let text = describe_error(&e);
            assert!(
                text.starts_with("not TLS: ") && text.contains("auth ssl"),
                "{first:?}: {text}"
            );
        }
    }
}
