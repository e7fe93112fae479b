//! The UDP control transport of auth bsd and bsdudp (spec §2.3, §2.5): datagrams from a
//! reserved port leased for the exchange, to the client's amanda port.
//!
//! Each exchange gets a fresh handle (`000-%08x` of a per-process counter) and sequence
//! (`tv_sec ^ tv_usec` of its creation), as `bsd_connect` does. A datagram belongs to the
//! exchange only if it comes from the client's address **and port**, with the same handle
//! and sequence; anything else is dropped (and logged). What this module must not do: hold
//! the port longer than the caller's lease.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use portpool_alloc::Lease;
use proto::exchange::Packet;
use proto::pkt::PacketType;
use proto::udp::{Datagram, MAX_DGRAM, sequence_from_time, server_handle};

use super::Hop;
use super::exchange::{Transport, TransportError};

static NEXT_HANDLE: AtomicU32 = AtomicU32::new(0);

/// A UDP socket on a leased reserved port, talking to one client.
pub struct UdpControl {
    lease: Lease<UdpSocket>,
    peer: SocketAddr,
    user: Vec<u8>,
    handle: String,
    seq: i32,
    buf: Vec<u8>,
}

impl UdpControl {
    /// Wraps a leased UDP socket for exchanges with `peer`, sending `SECURITY USER <user>`.
    pub fn new(lease: Lease<socket2::Socket>, peer: SocketAddr, user: &str) -> UdpControl {
        let mut c = UdpControl {
            lease: lease.map(UdpSocket::from),
            peer,
            user: user.as_bytes().to_vec(),
            handle: String::new(),
            seq: 0,
            buf: vec![0; MAX_DGRAM],
        };
        c.new_exchange();
        c
    }

    /// Starts a new exchange: a new handle and sequence.
    pub fn new_exchange(&mut self) {
        let n = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        self.handle = server_handle(n);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.seq = sequence_from_time(now.as_secs() as i64, now.subsec_micros());
    }

    /// The local (leased) port.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The client.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl Transport for UdpControl {
    fn send(&mut self, p: &Packet) -> io::Result<()> {
        let d = match p.ty {
            PacketType::Req => {
                Datagram::request(self.handle.as_bytes(), self.seq, &self.user, &p.body)
            }
            ty => Ok(Datagram::new(
                ty,
                self.handle.as_bytes(),
                self.seq,
                &p.body[..],
            )),
        }
        .map_err(|e| io::Error::other(e.to_string()))?;
        let bytes = d.to_vec().map_err(|e| io::Error::other(e.to_string()))?;
        self.lease.socket().send_to(&bytes, self.peer)?;
        Ok(())
    }

    fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, TransportError> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            let sock = self.lease.socket();
            let wait = (until - now).max(std::time::Duration::from_millis(1));
            let _ = sock.set_read_timeout(Some(wait));
            match sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    if from != self.peer {
                        log::debug!(
                            "udp port {}: datagram from unknown source {from}",
                            self.port()
                        );
                        continue;
                    }
                    let Some(data) = self.buf.get(..n) else {
                        continue;
                    };
                    match Datagram::parse(data) {
                        Ok(d) if d.handle == self.handle.as_bytes() && d.seq == self.seq => {
                            return Ok(Some((d.ptype, d.body.into_owned())));
                        }
                        Ok(d) => log::debug!(
                            "udp port {}: packet for another exchange ({} {})",
                            self.port(),
                            String::from_utf8_lossy(d.handle),
                            d.seq
                        ),
                        Err(e) => log::debug!("udp port {}: from {from}: {e}", self.port()),
                    }
                }
                Err(e) if super::only_waited(&e) => {}
                // ICMP errors (port unreachable) surface here on Linux: the REQ is retried.
                Err(e) => {
                    log::debug!("udp port {}: {e}", self.port());
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    fn hop(&self) -> Option<Hop> {
        Some(Hop {
            transport: proto::ports::Transport::Udp,
            local: super::local_address_towards(self.peer),
            source_port: Some(self.port()),
            peer: self.peer,
        })
    }

    fn send_errors_are_fatal(&self) -> bool {
        false
    }
}
