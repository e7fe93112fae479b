//! The client side of an exchange (spec §3.2, amandad's per-request states).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Packet;
use crate::pkt::PacketType;

/// Timeouts and retry counts of the client side. The defaults are Amanda 3.5's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderConfig {
    /// How long to wait for the server's ACK of a REP before sending it again (10 s).
    pub ack_timeout: Duration,
    /// How many ACK timeouts end the exchange (amanda-client.conf `rep-tries`, 5): without
    /// duplicate REQs the REP is sent this many times in all.
    pub rep_tries: u32,
    /// How long the service may take to produce its reply (6 h); then the exchange ends with
    /// `NAK ERROR timeout on reply pipe`.
    pub rep_timeout: Duration,
    /// Minimum spacing of partial replies. amandad's integer-second test `last < now - 1`
    /// spaces them about 2 s apart.
    pub prep_interval: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            ack_timeout: Duration::from_secs(10),
            rep_tries: 5,
            rep_timeout: Duration::from_secs(6 * 60 * 60),
            prep_interval: Duration::from_secs(2),
        }
    }
}

/// What the exchange tells its owner (amandad).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponderEvent {
    /// The server ACKed the REP: open the data streams (sendbackup) and finish. Terminal.
    Acked,
    /// The REP was sent `rep_tries` times without an ACK. For sendbackup this means the
    /// streams must not be opened. Terminal.
    GaveUp,
    /// The service did not reply within `rep_timeout`; a NAK is queued. Terminal.
    TimedOut,
    /// The server sent the REQ again while the service runs (its ACK was lost, or it
    /// restarted the exchange after a REP timeout). The ACK or REP is queued again.
    DuplicateRequest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// ACK sent; the service is running (`s_repwait`).
    RepWait,
    /// REP sent, waiting for the server's ACK (`s_ackwait`).
    AckWait,
    Done,
}

/// The client side of one exchange, created when a REQ passed the security checks and its
/// service started. See the module docs of [`crate::exchange`] for how to drive it.
#[derive(Debug)]
pub struct Responder {
    config: ResponderConfig,
    state: State,
    deadline: Option<Instant>,
    last_prep: Option<Instant>,
    rep: Option<Vec<u8>>,
    rep_sends: u32,
    ack_timeouts: u32,
    transmits: VecDeque<Packet>,
    events: VecDeque<ResponderEvent>,
}

impl Responder {
    /// Starts the exchange: the ACK is queued at once.
    pub fn new(now: Instant, config: ResponderConfig) -> Responder {
        let mut transmits = VecDeque::new();
        transmits.push_back(Packet::ack());
        Responder {
            deadline: Some(now + config.rep_timeout),
            config,
            state: State::RepWait,
            last_prep: None,
            rep: None,
            rep_sends: 0,
            ack_timeouts: 0,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// A packet for this exchange arrived from the server.
    pub fn handle_packet(&mut self, now: Instant, ty: PacketType, _body: &[u8]) {
        match (self.state, ty) {
            (State::RepWait, PacketType::Req) => {
                self.transmits.push_back(Packet::ack());
                self.events.push_back(ResponderEvent::DuplicateRequest);
            }
            (State::AckWait, PacketType::Req) => {
                self.events.push_back(ResponderEvent::DuplicateRequest);
                self.send_rep(now);
            }
            (State::AckWait, PacketType::Ack) => {
                self.state = State::Done;
                self.deadline = None;
                self.events.push_back(ResponderEvent::Acked);
            }
            (State::RepWait, _) => self.nak_unexpected(ty),
            // amandad would also stop its ACK timer here and could wait forever; we keep it
            // running so a confused peer cannot pin the exchange.
            (State::AckWait, _) => self.nak_unexpected(ty),
            (State::Done, _) => {}
        }
    }

    /// Offers the service's output so far (cumulative) as a partial reply. Returns true if a
    /// PREP was queued: only while waiting for the service, and at most one per
    /// `prep_interval`. The caller decides whether partial replies apply at all (sendsize,
    /// and the server's features have `partial_estimate`).
    pub fn offer_partial(&mut self, now: Instant, cumulative: &[u8]) -> bool {
        if self.state != State::RepWait || cumulative.is_empty() {
            return false;
        }
        if let Some(last) = self.last_prep
            && now.saturating_duration_since(last) < self.config.prep_interval
        {
            return false;
        }
        self.last_prep = Some(now);
        self.transmits
            .push_back(Packet::new(PacketType::Prep, cumulative.to_vec()));
        true
    }

    /// The service finished; `body` is the whole REP body. It is sent now and again every
    /// `ack_timeout` until the server ACKs, `rep_tries` sends in all.
    pub fn reply(&mut self, now: Instant, body: Vec<u8>) {
        if self.state != State::RepWait {
            return;
        }
        self.rep = Some(body);
        self.send_rep(now);
    }

    /// Call when the instant returned by [`Responder::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        match self.state {
            State::RepWait => {
                self.transmits.push_back(Packet::new(
                    PacketType::Nak,
                    b"ERROR timeout on reply pipe\n".to_vec(),
                ));
                self.finish(ResponderEvent::TimedOut);
            }
            State::AckWait => {
                // Only timeouts count against rep_tries; a REP resent for a duplicate REQ
                // does not (amandad's `repretry`).
                self.ack_timeouts += 1;
                if self.ack_timeouts < self.config.rep_tries {
                    self.send_rep(now);
                } else {
                    self.finish(ResponderEvent::GaveUp);
                }
            }
            State::Done => {}
        }
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmits.pop_front()
    }

    /// When to call [`Responder::handle_timeout`], if a timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ResponderEvent> {
        self.events.pop_front()
    }

    /// True once the exchange has ended (ACKed, given up or timed out).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True while the service's reply is still awaited.
    pub fn awaiting_reply(&self) -> bool {
        self.state == State::RepWait
    }

    /// How many times the REP was sent so far.
    pub fn rep_sends(&self) -> u32 {
        self.rep_sends
    }

    fn send_rep(&mut self, now: Instant) {
        let Some(rep) = &self.rep else { return };
        self.rep_sends += 1;
        self.transmits
            .push_back(Packet::new(PacketType::Rep, rep.clone()));
        self.state = State::AckWait;
        self.deadline = Some(now + self.config.ack_timeout);
    }

    fn nak_unexpected(&mut self, ty: PacketType) {
        let text = format!("ERROR unexpected packet type {}\n", ty.name());
        self.transmits
            .push_back(Packet::new(PacketType::Nak, text.into_bytes()));
    }

    fn finish(&mut self, event: ResponderEvent) {
        self.state = State::Done;
        self.deadline = None;
        self.events.push_back(event);
    }
}
