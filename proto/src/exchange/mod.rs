//! The REQ/ACK/REP/ACK exchange of spec §3, as two sans-IO state machines.
//!
//! [`Initiator`] is the server side (amcheck, planner, dumper in the real Amanda): it sends a
//! REQ, waits for the ACK, retransmits, waits for the REP (passing PREPs on) and ACKs it.
//! [`Responder`] is the client side (amandad): it ACKs at once, waits for the service's
//! output, sends PREPs and the REP, retransmits the REP until the server ACKs.
//!
//! Both are driven the same way, after quinn-proto:
//! - feed inputs with `handle_*(now, ..)`;
//! - then drain [`Initiator::poll_transmit`] / [`Responder::poll_transmit`] and send what they
//!   return, drain `poll_event` and act on it;
//! - arm one timer at `poll_timeout()` and call `handle_timeout(now)` when it fires (calling it
//!   early is harmless).
//!
//! What this module must not do: read a clock, touch a socket, or know how packets are
//! encoded. Matching an incoming datagram to its exchange (handle, sequence, peer address)
//! and encoding it for UDP or TCP are the shell's job. See `LIFECYCLE.md` beside this file
//! for the states, transitions and timeouts.

mod initiator;
mod responder;

pub use initiator::{Initiator, InitiatorConfig, InitiatorError, InitiatorEvent};
pub use responder::{Responder, ResponderConfig, ResponderEvent};

use crate::pkt::PacketType;

/// A packet a state machine wants sent: its type and its body (without any SECURITY line or
/// encoding; the shell adds those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The packet type.
    pub ty: PacketType,
    /// The body text, e.g. `OPTIONS features=...;\n`; empty for an ACK.
    pub body: Vec<u8>,
}

impl Packet {
    /// A packet of type `ty` with `body`.
    pub fn new(ty: PacketType, body: impl Into<Vec<u8>>) -> Packet {
        Packet {
            ty,
            body: body.into(),
        }
    }

    /// An ACK (empty body).
    pub fn ack() -> Packet {
        Packet::new(PacketType::Ack, Vec::new())
    }
}

#[cfg(test)]
mod tests;
