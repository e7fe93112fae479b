//! The client's side of a dump's data phase (amandad): when the streams are usable, when
//! the application may start, what may be written when, and the CRC and size accounting of
//! what it sends.
//!
//! Rules (spec §4.2-§4.5, §6.7.2-§6.7.5), each written once, here:
//! - bsd/bsdudp streams are listening sockets when the REP goes out; the server connects
//!   after it has the REP. The ACK of the REP, or (the ACK was lost) the server's first data
//!   connection, starts the accept deadline ([`SenderConfig::accept_timeout`], amandad's
//!   30 s). bsdtcp streams exist at once (handles on the control connection).
//! - The application starts ([`SenderEvent::Start`]) only when the REP was acknowledged and
//!   every stream is connected, so nothing it writes is lost.
//! - Nothing goes on DATA before the MESG header (through `sendbackup: info end`) is queued
//!   on MESG: [`Sender::data_allowed`].
//! - native-CRC covers the application's output, before client filters; client-CRC covers
//!   exactly the bytes put on DATA ([`Sender::on_native`], [`Sender::on_sent`]); without
//!   client filters the two are the same bytes.
//! - When the application and its filters are done and the closing MESG lines are queued
//!   ([`Sender::on_application_done`]), every stream ends ([`SenderEvent::Close`]:
//!   zero-length frames, or shutdown of raw connections).
//! - The server closing DATA before that aborts the dump ([`SendError::PeerClosedData`]);
//!   closing MESG or INDEX early only drops what would go there.
//!
//! What this module must not do: read a clock, a pipe or a socket, or build MESG lines
//! (the service knows its program's lines; it takes the CRCs from here).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::names;
use crate::crc::{Crc32c, CrcValue};
use crate::sendbackup::Stream;

/// The sender's timing.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// How long the server has to connect every stream after the ACK.
    pub accept_timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            accept_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a data phase was abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The REP was never acknowledged.
    #[error("the server did not ACK the sendbackup REP")]
    NoAck,
    /// The server did not connect every stream in time.
    #[error("the server did not connect {} within {}s", names(.pending), .timeout.as_secs())]
    AcceptTimeout {
        /// The streams still unconnected.
        pending: Vec<Stream>,
        /// The deadline.
        timeout: Duration,
    },
    /// The server closed DATA while the dump was running.
    #[error("the server closed the DATA stream early")]
    PeerClosedData,
    /// The client itself failed (a connection lost, a pipe error): the shell's reason.
    #[error("{0}")]
    Local(String),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// Start the application (and its filters); write the MESG header first.
    Start,
    /// End every stream (after flushing what is queued).
    Close,
    /// Stop the application, drop the listeners and the streams.
    Abort(SendError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Pending,
    Connected,
    /// The server closed it.
    ClosedByPeer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingAck,
    Connecting,
    Running,
    Closing,
    Aborted,
}

/// One dump's data phase, client side.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    links: Vec<(Stream, Link)>,
    phase: Phase,
    acked: bool,
    deadline: Option<Instant>,
    header_sent: bool,
    native: Crc32c,
    client: Crc32c,
    /// No client filter: one CRC pass serves as both (see [`Sender::on_unfiltered`]).
    unfiltered: bool,
    events: VecDeque<SenderEvent>,
}

impl Sender {
    /// A data phase over `streams`, each already connected (bsdtcp handles) or not yet (bsd
    /// and bsdudp listeners).
    pub fn new(cfg: SenderConfig, streams: &[(Stream, bool)]) -> Sender {
        Sender {
            cfg,
            links: streams
                .iter()
                .map(|&(s, c)| (s, if c { Link::Connected } else { Link::Pending }))
                .collect(),
            phase: Phase::AwaitingAck,
            acked: false,
            deadline: None,
            header_sent: false,
            native: Crc32c::new(),
            client: Crc32c::new(),
            unfiltered: false,
            events: VecDeque::new(),
        }
    }

    /// The next thing the shell must do.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// When [`Sender::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase == Phase::Connecting)
            .then_some(self.deadline)
            .flatten()
    }

    /// The accept deadline passed (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Connecting && self.deadline.is_some_and(|d| now >= d) {
            let pending = self.pending();
            self.abort(SendError::AcceptTimeout {
                pending,
                timeout: self.cfg.accept_timeout,
            });
        }
    }

    fn pending(&self) -> Vec<Stream> {
        self.links
            .iter()
            .filter(|(_, l)| *l == Link::Pending)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The server acknowledged the REP, or (its ACK was lost) connected a stream: the
    /// server has the REP. Idempotent.
    pub fn on_acked(&mut self, now: Instant) {
        if self.acked || self.phase == Phase::Aborted {
            return;
        }
        self.acked = true;
        self.phase = Phase::Connecting;
        self.deadline = Some(now + self.cfg.accept_timeout);
        self.maybe_start();
    }

    /// The REP's exchange ended without an ACK.
    pub fn on_unacked(&mut self) {
        if !self.acked {
            self.abort(SendError::NoAck);
        }
    }

    /// The server connected `stream` (counts as the ACK if that was lost).
    pub fn on_connected(&mut self, now: Instant, stream: Stream) {
        if let Some((_, l)) = self.links.iter_mut().find(|(s, _)| *s == stream)
            && *l == Link::Pending
        {
            *l = Link::Connected;
        }
        self.on_acked(now);
        self.maybe_start();
    }

    fn maybe_start(&mut self) {
        if self.phase == Phase::Connecting && self.acked && self.pending().is_empty() {
            self.phase = Phase::Running;
            self.deadline = None;
            self.events.push_back(SenderEvent::Start);
        }
    }

    /// Whether `stream` still takes bytes (connected, not closed by the server, not ended).
    pub fn writable(&self, stream: Stream) -> bool {
        matches!(self.phase, Phase::Running | Phase::Closing)
            && self
                .links
                .iter()
                .any(|(s, l)| *s == stream && *l == Link::Connected)
    }

    /// The MESG header (through `sendbackup: info end`) is queued on MESG.
    pub fn header_sent(&mut self) {
        self.header_sent = true;
    }

    /// Whether DATA may be written now.
    pub fn data_allowed(&self) -> bool {
        self.phase == Phase::Running && self.header_sent && self.writable(Stream::Data)
    }

    /// The application produced `bytes` (before any client filter).
    pub fn on_native(&mut self, bytes: &[u8]) {
        self.native.update(bytes);
    }

    /// `bytes` go onto DATA now (after the client filters).
    pub fn on_sent(&mut self, bytes: &[u8]) {
        self.client.update(bytes);
    }

    /// Without client filters: `bytes` are the application's output and go onto DATA as
    /// they are, so one CRC pass gives both native-CRC and client-CRC. Use it instead of
    /// [`Sender::on_native`] + [`Sender::on_sent`], never mixed with them.
    pub fn on_unfiltered(&mut self, bytes: &[u8]) {
        self.unfiltered = true;
        self.client.update(bytes);
    }

    /// native-CRC: the application's output.
    pub fn native_crc(&self) -> CrcValue {
        if self.unfiltered {
            self.client.value()
        } else {
            self.native.value()
        }
    }

    /// client-CRC: what went on DATA.
    pub fn client_crc(&self) -> CrcValue {
        self.client.value()
    }

    /// The application and its filters are done and the closing MESG lines are queued:
    /// end every stream.
    pub fn on_application_done(&mut self) {
        if self.phase == Phase::Running {
            self.phase = Phase::Closing;
            self.events.push_back(SenderEvent::Close);
        }
    }

    /// The server ended `stream` (its zero-length frame, or its connection closed).
    pub fn on_peer_closed(&mut self, stream: Stream) {
        if let Some((_, l)) = self.links.iter_mut().find(|(s, _)| *s == stream) {
            *l = Link::ClosedByPeer;
        }
        if stream == Stream::Data && matches!(self.phase, Phase::Connecting | Phase::Running) {
            self.abort(SendError::PeerClosedData);
        }
    }

    /// Whether the data phase ended (closed or aborted).
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Closing | Phase::Aborted)
    }

    /// Whether the server has the REP (its ACK, or a stream it connected).
    pub fn acked(&self) -> bool {
        self.acked
    }

    /// The shell failed on its own (see [`SendError::Local`]); ignored once over.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.abort(SendError::Local(why.into()));
    }

    fn abort(&mut self, e: SendError) {
        if matches!(self.phase, Phase::Aborted | Phase::Closing) {
            return;
        }
        self.phase = Phase::Aborted;
        self.events.push_back(SenderEvent::Abort(e));
    }
}
