//! One REQ/ACK/REP/ACK exchange (spec §3.1), driven to its end on a blocking transport.
//!
//! [`run`] is the small shell around [`Initiator`]: it feeds it `Instant::now()`, opens the
//! transport when asked (retrying as `connect-tries` says), sends what it queues, waits for
//! packets until its timer, and returns the REP or a typed [`RequestFailure`]. The transport
//! is left open (the caller may send another request on a bsdtcp connection, or read the
//! streams of a sendbackup from it).
//!
//! What this module must not do: encode packets (the transports do) or interpret bodies.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::exchange::{Initiator, InitiatorConfig, InitiatorError, InitiatorEvent, Packet};
use proto::pkt::PacketType;

use super::{ConnectFailure, Hop, HopEvent};

/// A way to send and receive the packets of one exchange.
pub trait Transport {
    /// Sends one packet (REQ or ACK) of the exchange.
    fn send(&mut self, p: &Packet) -> io::Result<()>;

    /// Waits until `until` at most for the next packet of the exchange. `Ok(None)` when the
    /// time is up; an error when the transport is broken (a closed TCP connection).
    fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, TransportError>;

    /// Whether a failed send means the transport is gone (TCP) rather than a lost packet
    /// (UDP).
    fn send_errors_are_fatal(&self) -> bool;

    /// The hop, for errors (`None`: not known).
    fn hop(&self) -> Option<Hop> {
        None
    }
}

/// A control transport that broke; `Display` names the client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TransportError {
    /// The client's bytes are not Amanda frames (`None`: a frame the decoder took but the
    /// reader could not).
    #[error("{peer}: {}", .error.as_ref().map_or_else(|| "invalid frame".to_owned(), ToString::to_string))]
    Frame {
        /// The client.
        peer: SocketAddr,
        /// The decoder's verdict.
        error: Option<proto::frame::DecodeError>,
    },
    /// The client closed the connection.
    #[error("{peer}: connection closed by the client")]
    Closed {
        /// The client.
        peer: SocketAddr,
    },
    /// A read or write failed.
    #[error("{peer}: {source}")]
    Io {
        /// The client.
        peer: SocketAddr,
        /// Why.
        source: Arc<io::Error>,
    },
    /// A packet could not be sent.
    #[error("{0}")]
    Send(Arc<io::Error>),
}

impl TransportError {
    /// What happened on the hop.
    pub fn event(&self) -> HopEvent {
        match self {
            TransportError::Frame { .. } => HopEvent::Other,
            TransportError::Closed { .. } => HopEvent::Closed,
            TransportError::Io { source, .. } | TransportError::Send(source) => {
                HopEvent::of_io(source)
            }
        }
    }
}

/// Why the control transport could not be opened.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OpenError {
    /// The bsdtcp connection (its port, or the connect).
    #[error(transparent)]
    Connect(#[from] ConnectFailure),
    /// No reserved UDP port could be leased.
    #[error("{dest}: {pool} pool: {source}")]
    Lease {
        /// The client.
        dest: SocketAddr,
        /// The pool, e.g. `udp 850-859`.
        pool: String,
        /// portpool's error.
        source: Arc<portpool_alloc::LeaseError>,
    },
    /// The initiator's own account, when no attempt left a failure of ours (not expected).
    #[error("{0}")]
    Initiator(String),
    /// A `dialin yes` host: no connection came through the rendezvous (issue 14).
    #[error("{0}")]
    Dialin(Arc<super::rendezvous::RendezvousError>),
    /// auth ssl: our files, the TLS handshake or a check of the client's certificate.
    #[error("{error}")]
    Ssl {
        /// The client.
        dest: SocketAddr,
        /// What failed.
        error: super::tls::SslFailure,
    },
}

/// What a request waited for when time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// The ACK of the REQ: nothing came back.
    Ack,
    /// The REP, after the client ACKed.
    Rep,
}

/// Why a request got no REP; `Display` is the dumper's text (`request failed: ...`,
/// `NAK: ...`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum RequestFailure {
    /// The client refused; the body is normally `ERROR <text>\n`.
    #[error("NAK: {}", nak_text(.0))]
    Nak(Vec<u8>),
    /// The control transport could not be opened, after `attempts` tries.
    #[error("request failed: {error}")]
    Open {
        /// The last try's failure.
        error: OpenError,
        /// How many tries.
        attempts: u32,
    },
    /// Time ran out waiting for the ACK (after `sends` REQs) or the REP.
    #[error("{}", unanswered_text(*.awaited, .hop.as_ref(), *.sends))]
    Unanswered {
        /// The ACK or the REP.
        awaited: Awaited,
        /// How long each wait was (`ack-wait` per REQ, or the REP timeout).
        wait: Duration,
        /// The hop that stayed silent, if a transport was open.
        hop: Option<Hop>,
        /// How many times the REQ was sent.
        sends: u32,
    },
    /// The transport broke during the exchange.
    #[error("request failed: {0}")]
    Broken(TransportError),
    /// The run has no port pool for this control transport.
    #[error("request failed: no {0} pool")]
    NoPool(&'static str),
}

fn nak_text(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let t = t.trim_end();
    t.strip_prefix("ERROR ").unwrap_or(t).to_owned()
}

fn unanswered_text(awaited: Awaited, hop: Option<&Hop>, sends: u32) -> String {
    match (awaited, hop) {
        (Awaited::Ack, None) => format!("request failed: {}", InitiatorError::AckTimeout),
        (Awaited::Rep, None) => format!("request failed: {}", InitiatorError::RepTimeout),
        (Awaited::Ack, Some(hop)) => format!(
            "request failed: {}: no answer on {hop} to {sends} REQs (dropped on the way? `dumper check --ports` tests every hop)",
            InitiatorError::AckTimeout
        ),
        (Awaited::Rep, Some(hop)) => format!(
            "request failed: {} on {hop} (the client ACKed the REQ, so the hop is open; its service did not reply in time)",
            InitiatorError::RepTimeout
        ),
    }
}

impl RequestFailure {
    /// What happened on the control hop (`None` for a NAK: the hop worked).
    pub fn event(&self) -> Option<HopEvent> {
        match self {
            RequestFailure::Nak(_) => None,
            RequestFailure::Open { error, .. } => Some(match error {
                OpenError::Connect(c) => c.event(),
                OpenError::Lease { .. } => HopEvent::NoPort,
                OpenError::Initiator(_) | OpenError::Ssl { .. } | OpenError::Dialin(_) => {
                    HopEvent::Other
                }
            }),
            RequestFailure::Unanswered {
                awaited: Awaited::Ack,
                ..
            } => Some(HopEvent::NoAnswer),
            RequestFailure::Unanswered { .. } => Some(HopEvent::Timeout),
            RequestFailure::Broken(e) => Some(e.event()),
            RequestFailure::NoPool(_) => Some(HopEvent::NoPort),
        }
    }

    /// The hop, when the failure knows it.
    pub fn hop(&self) -> Option<Hop> {
        match self {
            RequestFailure::Unanswered { hop, .. } => *hop,
            _ => None,
        }
    }
}

/// An exchange's result and how many times its REQ had to be sent again (lost or late
/// packets that the protocol's retransmissions covered; the report shows them).
#[derive(Debug)]
pub struct Exchanged {
    /// The REP body (its ACK was sent), or why there is none.
    pub outcome: Result<Vec<u8>, RequestFailure>,
    /// REQs sent again.
    pub resent: u32,
}

/// Runs one exchange whose REQ body is `req`. `transport` is used if already open (a second
/// request on a bsdtcp connection); otherwise `connect` opens it when the initiator asks.
pub fn run<T: Transport>(
    config: InitiatorConfig,
    req: Vec<u8>,
    transport: &mut Option<T>,
    connect: impl FnMut() -> Result<T, OpenError>,
) -> Exchanged {
    let mut resent = 0;
    let outcome = drive(config, req, transport, connect, &mut resent);
    Exchanged { outcome, resent }
}

fn drive<T: Transport>(
    config: InitiatorConfig,
    req: Vec<u8>,
    transport: &mut Option<T>,
    mut connect: impl FnMut() -> Result<T, OpenError>,
    resent: &mut u32,
) -> Result<Vec<u8>, RequestFailure> {
    let (ack_wait, rep_wait) = (config.ack_wait, config.rep_wait);
    let mut ini = Initiator::new(Instant::now(), config, req);
    // The initiator keeps the connect failure as text; the typed one is kept here.
    let mut last_open: Option<OpenError> = None;
    loop {
        while let Some(ev) = ini.poll_event() {
            match ev {
                InitiatorEvent::Connect => {
                    if transport.is_some() {
                        ini.handle_connected(Instant::now());
                    } else {
                        match connect() {
                            Ok(t) => {
                                *transport = Some(t);
                                ini.handle_connected(Instant::now());
                            }
                            Err(e) => {
                                log::debug!("connect failed: {e}");
                                ini.handle_connect_failed(Instant::now(), e.to_string());
                                last_open = Some(e);
                            }
                        }
                    }
                }
                InitiatorEvent::Retransmit { send } => {
                    *resent += 1;
                    log::debug!("REQ sent again (send {send})");
                }
                InitiatorEvent::Acked | InitiatorEvent::Prep(_) => {}
                InitiatorEvent::Rep(body) => {
                    if let Some(t) = transport.as_mut() {
                        while let Some(p) = ini.poll_transmit() {
                            if let Err(e) = t.send(&p) {
                                log::debug!("sending the ACK: {e}");
                            }
                        }
                    }
                    return Ok(body);
                }
                InitiatorEvent::Nak(body) => return Err(RequestFailure::Nak(body)),
                InitiatorEvent::Failed(InitiatorError::Connect { reason, attempts }) => {
                    let error = last_open.take().unwrap_or(OpenError::Initiator(reason));
                    return Err(RequestFailure::Open { error, attempts });
                }
                InitiatorEvent::Failed(e) => {
                    let (awaited, wait) = match e {
                        InitiatorError::AckTimeout => (Awaited::Ack, ack_wait),
                        _ => (Awaited::Rep, rep_wait),
                    };
                    return Err(RequestFailure::Unanswered {
                        awaited,
                        wait,
                        hop: transport.as_ref().and_then(Transport::hop),
                        sends: ini.sends(),
                    });
                }
            }
        }
        if let Some(t) = transport.as_mut() {
            while let Some(p) = ini.poll_transmit() {
                if let Err(e) = t.send(&p) {
                    if t.send_errors_are_fatal() {
                        return Err(RequestFailure::Broken(TransportError::Send(Arc::new(e))));
                    }
                    log::debug!("send failed (the REQ will be sent again): {e}");
                }
            }
        }
        let until = ini
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        match transport.as_mut() {
            Some(t) => match t.recv(until) {
                Ok(Some((ty, body))) => ini.handle_packet(Instant::now(), ty, &body),
                Ok(None) => ini.handle_timeout(Instant::now()),
                Err(e) => return Err(RequestFailure::Broken(e)),
            },
            None => {
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
                ini.handle_timeout(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    /// A scripted peer: answers each REQ with the queued replies.
    struct Script {
        replies: VecDeque<Vec<(PacketType, Vec<u8>)>>,
        pending: VecDeque<(PacketType, Vec<u8>)>,
        sent: Vec<PacketType>,
    }

    impl Transport for Script {
        fn send(&mut self, p: &Packet) -> io::Result<()> {
            self.sent.push(p.ty);
            if p.ty == PacketType::Req
                && let Some(r) = self.replies.pop_front()
            {
                self.pending.extend(r);
            }
            Ok(())
        }
        fn recv(
            &mut self,
            until: Instant,
        ) -> Result<Option<(PacketType, Vec<u8>)>, TransportError> {
            match self.pending.pop_front() {
                Some(p) => Ok(Some(p)),
                None => {
                    let now = Instant::now();
                    if until > now {
                        std::thread::sleep((until - now).min(Duration::from_millis(5)));
                    }
                    Ok(None)
                }
            }
        }
        fn send_errors_are_fatal(&self) -> bool {
            false
        }
    }

    /// A noop to a peer that answers the REQ with `replies`.
    fn noop_to(replies: Vec<(PacketType, Vec<u8>)>) -> (Exchanged, Script) {
        let mut t = Some(Script {
            replies: VecDeque::from([replies]),
            pending: VecDeque::new(),
            sent: vec![],
        });
        let out = run(
            InitiatorConfig::default(),
            b"SERVICE noop\n".to_vec(),
            &mut t,
            || unreachable!(),
        );
        (out, t.unwrap())
    }

    #[test]
    fn rep_is_acked_and_returned() {
        let (out, t) = noop_to(vec![
            (PacketType::Ack, vec![]),
            (PacketType::Rep, b"OPTIONS features=00;\n".to_vec()),
        ]);
        assert!(matches!(out.outcome, Ok(ref b) if b.starts_with(b"OPTIONS")));
        assert_eq!(out.resent, 0);
        assert_eq!(t.sent, vec![PacketType::Req, PacketType::Ack]);
    }

    #[test]
    fn connect_failures_are_retried_then_reported_with_the_reason() {
        let mut t: Option<Script> = None;
        let mut tries = 0;
        let cfg = InitiatorConfig {
            connect_tries: 2,
            connect_wait: Duration::from_millis(10),
            ..InitiatorConfig::default()
        };
        let out = run(cfg, b"SERVICE noop\n".to_vec(), &mut t, || {
            tries += 1;
            Err(OpenError::Connect(ConnectFailure::Connect {
                what: "bsdtcp connection".into(),
                dest: SocketAddr::from(([127, 0, 0, 1], 9)),
                port: 600 + tries,
                pool: "tcp 512-1023".into(),
                timeout: Duration::from_secs(20),
                source: Arc::new(io::ErrorKind::ConnectionRefused.into()),
            }))
        });
        assert_eq!(tries, 2);
        let e = out.outcome.unwrap_err();
        assert!(
            matches!(
                e,
                RequestFailure::Open {
                    attempts: 2,
                    error: OpenError::Connect(ConnectFailure::Connect { port: 602, .. })
                }
            ),
            "the last try's failure: {e:?}"
        );
        assert_eq!(e.event(), Some(HopEvent::Refused));
        let msg = e.to_string();
        assert_eq!(
            msg,
            "request failed: bsdtcp connection to 127.0.0.1:9 from port 602 (tcp 512-1023 pool): connection refused"
        );
    }

    #[test]
    fn an_unanswered_req_names_the_hop_that_stayed_silent() {
        struct Silent;
        impl Transport for Silent {
            fn send(&mut self, _: &Packet) -> io::Result<()> {
                Ok(())
            }
            fn recv(
                &mut self,
                until: Instant,
            ) -> Result<Option<(PacketType, Vec<u8>)>, TransportError> {
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
                Ok(None)
            }
            fn send_errors_are_fatal(&self) -> bool {
                false
            }
            fn hop(&self) -> Option<Hop> {
                Some(Hop {
                    transport: proto::ports::Transport::Udp,
                    local: Some([198, 18, 0, 1].into()),
                    source_port: Some(850),
                    peer: SocketAddr::from(([198, 18, 1, 2], 10080)),
                })
            }
        }
        let cfg = InitiatorConfig {
            ack_wait: Duration::from_millis(10),
            ..InitiatorConfig::default()
        };
        let out = run(
            cfg,
            b"SERVICE noop\n".to_vec(),
            &mut Some(Silent),
            || unreachable!(),
        );
        assert_eq!(out.resent, 2, "three sends in all");
        let e = out.outcome.unwrap_err();
        assert_eq!(e.event(), Some(HopEvent::NoAnswer));
        assert_eq!(e.hop().map(|h| h.source_port), Some(Some(850)));
        assert_eq!(
            e.to_string(),
            "request failed: timeout waiting for ACK: no answer on server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp to 3 REQs (dropped on the way? `dumper check --ports` tests every hop)"
        );
    }

    #[test]
    fn nak_text_becomes_the_dumpers_message() {
        let (out, _) = noop_to(vec![(
            PacketType::Nak,
            b"ERROR host x: port 40000 not secure\n".to_vec(),
        )]);
        assert_eq!(
            out.outcome.unwrap_err().to_string(),
            "NAK: host x: port 40000 not secure"
        );
    }
}
