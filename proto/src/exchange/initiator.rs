//! The server side of an exchange (spec §3.1): connect, REQ, ACK wait, REP wait, ACK.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::Packet;
use crate::pkt::PacketType;

/// Timeouts and retry counts of the server side. The defaults are Amanda 3.5's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// How many times to try to open the transport (amanda.conf `connect-tries`, 3).
    pub connect_tries: u32,
    /// Pause between connection attempts (`CONNECT_WAIT`, 5 s).
    pub connect_wait: Duration,
    /// How many times the REQ is sent before giving up on an ACK (`req-tries`, 3).
    pub req_tries: u32,
    /// How long to wait for the ACK after each REQ (`ACK_WAIT`, 10 s).
    pub ack_wait: Duration,
    /// How long to wait for the REP once ACKed. Per caller: `ctimeout` for noop and
    /// selfcheck, `etimeout` x estimates for sendsize, 60 s for sendbackup.
    pub rep_wait: Duration,
    /// How many times a REP timeout restarts the whole REQ cycle (`RESET_TRIES`, 2).
    pub reset_tries: u32,
    /// No restart once the exchange is this old (3600 s).
    pub drop_dead: Duration,
}

impl Default for InitiatorConfig {
    fn default() -> Self {
        InitiatorConfig {
            connect_tries: 3,
            connect_wait: Duration::from_secs(5),
            req_tries: 3,
            ack_wait: Duration::from_secs(10),
            rep_wait: Duration::from_secs(30),
            reset_tries: 2,
            drop_dead: Duration::from_secs(3600),
        }
    }
}

impl InitiatorConfig {
    /// The defaults with the caller's REP wait.
    pub fn with_rep_wait(rep_wait: Duration) -> Self {
        InitiatorConfig {
            rep_wait,
            ..InitiatorConfig::default()
        }
    }
}

/// Why an exchange failed locally. The texts are the real server's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitiatorError {
    /// Every connection attempt failed; `reason` is the last failure as the shell gave it.
    #[error("{reason}")]
    Connect {
        /// The shell's description of the last failure (names peer:port, port pool, auth).
        reason: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The REQ was sent `req_tries` times and never ACKed.
    #[error("timeout waiting for ACK")]
    AckTimeout,
    /// The REP never came, after every restart.
    #[error("timeout waiting for REP")]
    RepTimeout,
}

/// What the exchange tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitiatorEvent {
    /// Open the transport now (bind the UDP socket, connect the TCP connection), then call
    /// [`Initiator::handle_connected`] or [`Initiator::handle_connect_failed`].
    Connect,
    /// The REQ was sent again; `send` counts every send of this exchange, the first is 1.
    /// Only for reports: the packet itself comes from `poll_transmit`.
    Retransmit {
        /// Which send this is (2 for the first retransmission).
        send: u32,
    },
    /// The client ACKed the REQ.
    Acked,
    /// A partial reply (cumulative: each PREP repeats the earlier lines).
    Prep(Vec<u8>),
    /// The final reply. The ACK for it is already queued in `poll_transmit`. Terminal.
    Rep(Vec<u8>),
    /// The client refused; the body is normally `ERROR <text>\n`. Terminal.
    Nak(Vec<u8>),
    /// The exchange failed locally. Terminal.
    Failed(InitiatorError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the shell to report on a connection attempt.
    Connecting,
    /// A connection attempt failed; the next one starts at the deadline.
    ConnectWait,
    AckWait,
    RepWait,
    Done,
}

/// The server side of one exchange. See the module docs of [`crate::exchange`] for how to
/// drive it, and `LIFECYCLE.md` for its states.
#[derive(Debug)]
pub struct Initiator {
    config: InitiatorConfig,
    req: Vec<u8>,
    state: State,
    created: Instant,
    /// When the REQ was last sent (`curtime` in protocol.c).
    last_req: Instant,
    /// The wait that the current timer was armed with: stray packets re-arm it in full.
    current_wait: Duration,
    deadline: Option<Instant>,
    connect_tries_left: u32,
    req_tries_left: u32,
    resets_left: u32,
    sends: u32,
    transmits: VecDeque<Packet>,
    events: VecDeque<InitiatorEvent>,
}

impl Initiator {
    /// Starts an exchange whose REQ body is `req` (from the `SERVICE` line on; the shell adds
    /// the SECURITY line). The first event is [`InitiatorEvent::Connect`].
    pub fn new(now: Instant, config: InitiatorConfig, req: Vec<u8>) -> Initiator {
        let mut events = VecDeque::new();
        events.push_back(InitiatorEvent::Connect);
        Initiator {
            connect_tries_left: config.connect_tries.max(1),
            req_tries_left: config.req_tries.max(1),
            resets_left: config.reset_tries,
            config,
            req,
            state: State::Connecting,
            created: now,
            last_req: now,
            current_wait: Duration::ZERO,
            deadline: None,
            sends: 0,
            transmits: VecDeque::new(),
            events,
        }
    }

    /// The transport is open: the REQ goes out.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state == State::Connecting {
            self.send_req(now);
        }
    }

    /// The connection attempt failed with `reason`. Another attempt follows after
    /// `connect_wait` unless `connect_tries` are used up.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: impl Into<String>) {
        if self.state != State::Connecting {
            return;
        }
        self.connect_tries_left -= 1;
        if self.connect_tries_left == 0 {
            let attempts = self.config.connect_tries.max(1);
            self.fail(InitiatorError::Connect {
                reason: reason.into(),
                attempts,
            });
        } else {
            self.state = State::ConnectWait;
            self.deadline = Some(now + self.config.connect_wait);
        }
    }

    /// A packet arrived for this exchange.
    pub fn handle_packet(&mut self, now: Instant, ty: PacketType, body: &[u8]) {
        match (self.state, ty) {
            (State::AckWait | State::RepWait, PacketType::Nak) => {
                self.finish(InitiatorEvent::Nak(body.to_vec()));
            }
            (State::AckWait, PacketType::Ack) => {
                self.state = State::RepWait;
                self.arm(now, self.config.rep_wait);
                self.events.push_back(InitiatorEvent::Acked);
            }
            // A client may skip the ACK and reply at once.
            (State::AckWait | State::RepWait, PacketType::Rep) => {
                self.transmits.push_back(Packet::ack());
                self.finish(InitiatorEvent::Rep(body.to_vec()));
            }
            (State::AckWait | State::RepWait, PacketType::Prep) => {
                self.state = State::RepWait;
                // The REP is due `rep_wait` after the REQ was last sent, whatever the PREPs say
                // (protocol.c: timeout = repwait - (now - curtime) + 1, at least 1 s).
                let elapsed = now.saturating_duration_since(self.last_req);
                let wait = (self.config.rep_wait + Duration::from_secs(1))
                    .saturating_sub(elapsed)
                    .max(Duration::from_secs(1));
                self.arm(now, wait);
                self.events.push_back(InitiatorEvent::Prep(body.to_vec()));
            }
            // Anything else is ignored, and the timer starts over in full, as in protocol.c.
            (State::AckWait | State::RepWait, _) => self.arm(now, self.current_wait),
            _ => {}
        }
    }

    /// Call when the instant returned by [`Initiator::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        match self.state {
            State::ConnectWait => {
                self.state = State::Connecting;
                self.deadline = None;
                self.events.push_back(InitiatorEvent::Connect);
            }
            State::AckWait => {
                self.req_tries_left -= 1;
                if self.req_tries_left == 0 {
                    self.fail(InitiatorError::AckTimeout);
                } else {
                    self.send_req(now);
                }
            }
            State::RepWait => {
                let dead = now.saturating_duration_since(self.created) > self.config.drop_dead;
                if self.resets_left == 0 || dead {
                    self.fail(InitiatorError::RepTimeout);
                } else {
                    self.resets_left -= 1;
                    self.req_tries_left = self.config.req_tries.max(1);
                    self.send_req(now);
                }
            }
            State::Connecting | State::Done => {}
        }
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmits.pop_front()
    }

    /// When to call [`Initiator::handle_timeout`], if a timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<InitiatorEvent> {
        self.events.pop_front()
    }

    /// True once a terminal event was produced (it may still be waiting in `poll_event`, and
    /// an ACK may still be waiting in `poll_transmit`).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many times the REQ was sent so far.
    pub fn sends(&self) -> u32 {
        self.sends
    }

    /// The REQ body this exchange sends.
    pub fn request(&self) -> &[u8] {
        &self.req
    }

    fn send_req(&mut self, now: Instant) {
        self.sends += 1;
        if self.sends > 1 {
            self.events
                .push_back(InitiatorEvent::Retransmit { send: self.sends });
        }
        self.transmits
            .push_back(Packet::new(PacketType::Req, self.req.clone()));
        self.last_req = now;
        self.state = State::AckWait;
        self.arm(now, self.config.ack_wait);
    }

    fn arm(&mut self, now: Instant, wait: Duration) {
        self.current_wait = wait;
        self.deadline = Some(now + wait);
    }

    fn fail(&mut self, error: InitiatorError) {
        self.finish(InitiatorEvent::Failed(error));
    }

    fn finish(&mut self, event: InitiatorEvent) {
        self.state = State::Done;
        self.deadline = None;
        self.events.push_back(event);
    }
}

impl fmt::Display for InitiatorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitiatorEvent::Connect => f.write_str("connect"),
            InitiatorEvent::Retransmit { send } => write!(f, "REQ sent again (send {send})"),
            InitiatorEvent::Acked => f.write_str("ACK received"),
            InitiatorEvent::Prep(b) => write!(f, "PREP ({} bytes)", b.len()),
            InitiatorEvent::Rep(b) => write!(f, "REP ({} bytes)", b.len()),
            InitiatorEvent::Nak(b) => write!(f, "NAK: {}", String::from_utf8_lossy(b).trim_end()),
            InitiatorEvent::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}
