//! One REQ/ACK/REP/ACK exchange (spec §3.1), driven to its end on a blocking transport.
//!
//! [`run`] is the small shell around [`Initiator`]: it feeds it `Instant::now()`, opens the
//! transport when asked (retrying as `connect-tries` says), sends what it queues, waits for
//! packets until its timer, and returns the terminal event. The transport is left open (the
//! caller may send another request on a bsdtcp connection, or read the streams of a
//! sendbackup from it).
//!
//! What this module must not do: encode packets (the transports do) or interpret bodies.

use std::io;
use std::time::Instant;

use proto::exchange::{Initiator, InitiatorConfig, InitiatorError, InitiatorEvent, Packet};
use proto::pkt::PacketType;

/// A way to send and receive the packets of one exchange.
pub trait Transport {
    /// Sends one packet (REQ or ACK) of the exchange.
    fn send(&mut self, p: &Packet) -> io::Result<()>;

    /// Waits until `until` at most for the next packet of the exchange. `Ok(None)` when the
    /// time is up; an error when the transport is broken (a closed TCP connection).
    fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, String>;

    /// Whether a failed send means the transport is gone (TCP) rather than a lost packet
    /// (UDP).
    fn send_errors_are_fatal(&self) -> bool;

    /// The hop, for errors: `server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp`.
    fn hop(&self) -> String {
        String::new()
    }
}

/// How an exchange ended.
#[derive(Debug)]
pub enum Outcome {
    /// The client replied; the ACK was sent.
    Rep(Vec<u8>),
    /// The client refused (body normally `ERROR <text>\n`).
    Nak(Vec<u8>),
    /// No transport, no ACK or no REP (the real server's texts, with the connect reason).
    Failed(InitiatorError),
    /// No ACK or no REP on an open transport: the real server's text plus the hop that
    /// stayed silent, so the admin knows where to look.
    Unanswered {
        /// `timeout waiting for ACK` or `timeout waiting for REP`.
        error: InitiatorError,
        /// The hop (see [`Transport::hop`]).
        hop: String,
        /// How many times the REQ was sent.
        sends: u32,
    },
    /// The transport broke during the exchange.
    Broken(String),
}

impl Outcome {
    /// Amanda's wording for a failed request: `request failed: <why>`; `None` for a REP.
    pub fn failure(&self) -> Option<String> {
        match self {
            Outcome::Rep(_) => None,
            Outcome::Nak(b) => {
                let t = String::from_utf8_lossy(b);
                let t = t.trim_end();
                Some(format!("NAK: {}", t.strip_prefix("ERROR ").unwrap_or(t)))
            }
            Outcome::Failed(e) => Some(format!("request failed: {e}")),
            Outcome::Unanswered {
                error: e @ InitiatorError::AckTimeout,
                hop,
                sends,
            } => Some(format!(
                "request failed: {e}: no answer on {hop} to {sends} REQs (dropped on the way? `dumper check --ports` tests every hop)"
            )),
            Outcome::Unanswered { error, hop, .. } => Some(format!(
                "request failed: {error} on {hop} (the client ACKed the REQ, so the hop is open; its service did not reply in time)"
            )),
            Outcome::Broken(e) => Some(format!("request failed: {e}")),
        }
    }
}

/// An exchange's outcome and how many times its REQ had to be sent again (lost or late
/// packets that the protocol's retransmissions covered; the report shows them).
#[derive(Debug)]
pub struct Exchanged {
    pub outcome: Outcome,
    pub resent: u32,
}

/// Runs one exchange whose REQ body is `req`. `transport` is used if already open (a second
/// request on a bsdtcp connection); otherwise `connect` opens it when the initiator asks.
pub fn run<T: Transport>(
    config: InitiatorConfig,
    req: Vec<u8>,
    transport: &mut Option<T>,
    connect: impl FnMut() -> Result<T, String>,
) -> Exchanged {
    let mut resent = 0;
    let outcome = drive(config, req, transport, connect, &mut resent);
    Exchanged { outcome, resent }
}

fn drive<T: Transport>(
    config: InitiatorConfig,
    req: Vec<u8>,
    transport: &mut Option<T>,
    mut connect: impl FnMut() -> Result<T, String>,
    resent: &mut u32,
) -> Outcome {
    let mut ini = Initiator::new(Instant::now(), config, req);
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
                            Err(reason) => {
                                log::debug!("connect failed: {reason}");
                                ini.handle_connect_failed(Instant::now(), reason);
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
                    return Outcome::Rep(body);
                }
                InitiatorEvent::Nak(body) => return Outcome::Nak(body),
                InitiatorEvent::Failed(
                    e @ (InitiatorError::AckTimeout | InitiatorError::RepTimeout),
                ) => {
                    return match transport.as_ref() {
                        Some(t) if !t.hop().is_empty() => Outcome::Unanswered {
                            error: e,
                            hop: t.hop(),
                            sends: ini.sends(),
                        },
                        _ => Outcome::Failed(e),
                    };
                }
                InitiatorEvent::Failed(e) => return Outcome::Failed(e),
            }
        }
        if let Some(t) = transport.as_mut() {
            while let Some(p) = ini.poll_transmit() {
                if let Err(e) = t.send(&p) {
                    if t.send_errors_are_fatal() {
                        return Outcome::Broken(e.to_string());
                    }
                    log::debug!("send failed (the REQ will be sent again): {e}");
                }
            }
        }
        let until = ini
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(1));
        match transport.as_mut() {
            Some(t) => match t.recv(until) {
                Ok(Some((ty, body))) => ini.handle_packet(Instant::now(), ty, &body),
                Ok(None) => ini.handle_timeout(Instant::now()),
                Err(e) => return Outcome::Broken(e),
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
        fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, String> {
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

    #[test]
    fn rep_is_acked_and_returned() {
        let mut t = Some(Script {
            replies: VecDeque::from([vec![
                (PacketType::Ack, vec![]),
                (PacketType::Rep, b"OPTIONS features=00;\n".to_vec()),
            ]]),
            pending: VecDeque::new(),
            sent: vec![],
        });
        let out = run(
            InitiatorConfig::default(),
            b"SERVICE noop\n".to_vec(),
            &mut t,
            || unreachable!(),
        );
        assert!(matches!(out.outcome, Outcome::Rep(ref b) if b.starts_with(b"OPTIONS")));
        assert_eq!(out.resent, 0);
        assert_eq!(t.unwrap().sent, vec![PacketType::Req, PacketType::Ack]);
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
            Err("connect to 127.0.0.1:9 from port 600 (tcp 512-1023 pool): refused".to_owned())
        });
        assert_eq!(tries, 2);
        let msg = out.outcome.failure().unwrap();
        assert!(msg.contains("127.0.0.1:9") && msg.contains("pool"), "{msg}");
    }

    #[test]
    fn an_unanswered_req_names_the_hop_that_stayed_silent() {
        struct Silent;
        impl Transport for Silent {
            fn send(&mut self, _: &Packet) -> io::Result<()> {
                Ok(())
            }
            fn recv(&mut self, until: Instant) -> Result<Option<(PacketType, Vec<u8>)>, String> {
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
                Ok(None)
            }
            fn send_errors_are_fatal(&self) -> bool {
                false
            }
            fn hop(&self) -> String {
                "server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp".into()
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
        assert_eq!(
            out.outcome.failure().unwrap(),
            "request failed: timeout waiting for ACK: no answer on server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp to 3 REQs (dropped on the way? `dumper check --ports` tests every hop)"
        );
    }

    #[test]
    fn nak_text_becomes_the_dumpers_message() {
        let mut t = Some(Script {
            replies: VecDeque::from([vec![(
                PacketType::Nak,
                b"ERROR host x: port 40000 not secure\n".to_vec(),
            )]]),
            pending: VecDeque::new(),
            sent: vec![],
        });
        let out = run(
            InitiatorConfig::default(),
            b"SERVICE noop\n".to_vec(),
            &mut t,
            || unreachable!(),
        );
        assert_eq!(
            out.outcome.failure().unwrap(),
            "NAK: host x: port 40000 not secure"
        );
    }
}
