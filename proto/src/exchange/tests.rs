//! Virtual-time tests of the exchange: an [`Initiator`] and a client that creates a
//! [`Responder`] per new REQ, joined by a link that can drop, duplicate or delay packets.
//! The loss and duplicate matrix of spec §3.3 is one test per row.

use std::time::{Duration, Instant};

use super::*;
use crate::pkt::PacketType;

const REQ: &[u8] = b"SERVICE noop\nOPTIONS features=ffff;\n";
const REP: &[u8] = b"OPTIONS features=ffff;\n";
const LATENCY: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToClient,
    ToServer,
}

/// What the link does with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    /// Delivered twice, the second copy `Duration` later.
    Duplicate(Duration),
}

/// A rule: the `nth` (0-based) packet of type `ty` in direction `dir` meets `fate`.
type Rule = (Dir, PacketType, usize, Fate);

/// How the client's service behaves.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Replies with `REP` after the given time.
    ReplyAfter(Duration),
    /// Sends cumulative partial output every second for n seconds, then replies.
    Partial(u32),
    /// Refuses the request at intake.
    Nak,
    /// Never replies.
    Hang,
}

struct Pair {
    now: Instant,
    start: Instant,
    server: Initiator,
    server_events: Vec<(Duration, InitiatorEvent)>,
    connect_failures: u32,
    client: Option<(Responder, Instant)>,
    client_events: Vec<(Duration, ResponderEvent)>,
    service: Behaviour,
    service_starts: u32,
    in_flight: Vec<(Instant, Dir, Packet)>,
    sent: Vec<(Duration, Dir, PacketType)>,
    rules: Vec<Rule>,
    seen: Vec<(Dir, PacketType)>,
}

impl Pair {
    fn new(config: InitiatorConfig, service: Behaviour) -> Pair {
        let start = Instant::now();
        Pair {
            now: start,
            start,
            server: Initiator::new(start, config, REQ.to_vec()),
            server_events: Vec::new(),
            connect_failures: 0,
            client: None,
            client_events: Vec::new(),
            service,
            service_starts: 0,
            in_flight: Vec::new(),
            sent: Vec::new(),
            rules: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn rule(mut self, dir: Dir, ty: PacketType, nth: usize, fate: Fate) -> Pair {
        self.rules.push((dir, ty, nth, fate));
        self
    }

    fn failing_connects(mut self, n: u32) -> Pair {
        self.connect_failures = n;
        self
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn send(&mut self, dir: Dir, packet: Packet) {
        let nth = self
            .seen
            .iter()
            .filter(|(d, t)| *d == dir && *t == packet.ty)
            .count();
        self.seen.push((dir, packet.ty));
        self.sent.push((self.elapsed(), dir, packet.ty));
        let fate = self
            .rules
            .iter()
            .find(|(d, t, n, _)| *d == dir && *t == packet.ty && *n == nth)
            .map(|r| r.3)
            .unwrap_or(Fate::Deliver);
        match fate {
            Fate::Deliver => self.in_flight.push((self.now + LATENCY, dir, packet)),
            Fate::Drop => {}
            Fate::Duplicate(later) => {
                self.in_flight
                    .push((self.now + LATENCY, dir, packet.clone()));
                self.in_flight
                    .push((self.now + LATENCY + later, dir, packet));
            }
        }
    }

    /// Moves packets and events until nothing is left to do, or 8 virtual hours.
    fn drive(&mut self) {
        let limit = self.start + Duration::from_secs(8 * 3600);
        loop {
            self.flush();
            let mut next: Option<Instant> = None;
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            };
            consider(self.server.poll_timeout());
            consider(self.in_flight.iter().map(|p| p.0).min());
            if let Some((r, started)) = &self.client {
                consider(r.poll_timeout());
                consider(self.service_due(r, *started));
            }
            let Some(next) = next else { break };
            assert!(
                next <= limit,
                "exchange did not settle within 8 virtual hours"
            );
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// When the service next produces output, if it is still running.
    fn service_due(&self, r: &Responder, started: Instant) -> Option<Instant> {
        if !r.awaiting_reply() {
            return None;
        }
        match self.service {
            Behaviour::ReplyAfter(d) => Some(started + d),
            Behaviour::Partial(n) => {
                let done = (self.now - started).as_secs() as u32;
                (done <= n).then(|| started + Duration::from_secs(u64::from(done) + 1))
            }
            Behaviour::Nak | Behaviour::Hang => None,
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Deliver what is due, in send order.
        let mut due = Vec::new();
        self.in_flight.retain(|(t, dir, p)| {
            if *t <= now {
                due.push((*dir, p.clone()));
                false
            } else {
                true
            }
        });
        for (dir, p) in due {
            match dir {
                Dir::ToServer => self.server.handle_packet(now, p.ty, &p.body),
                Dir::ToClient => self.client_receives(p),
            }
        }
        self.server.handle_timeout(now);
        let service = self.service.clone();
        if let Some((r, started)) = &mut self.client {
            r.handle_timeout(now);
            if r.awaiting_reply() {
                match service {
                    Behaviour::ReplyAfter(d) if now >= *started + d => r.reply(now, REP.to_vec()),
                    Behaviour::Partial(n) => {
                        let secs = (now - *started).as_secs() as u32;
                        if secs > n {
                            r.reply(now, REP.to_vec());
                        } else {
                            let lines = "line\n".repeat(secs as usize + 1);
                            r.offer_partial(now, lines.as_bytes());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn client_receives(&mut self, p: Packet) {
        let now = self.now;
        match &mut self.client {
            Some((r, _)) if !r.is_done() => r.handle_packet(now, p.ty, &p.body),
            // amandad treats a REQ with no running exchange as a brand new request.
            _ if p.ty == PacketType::Req => {
                if let Behaviour::Nak = self.service {
                    self.send(
                        Dir::ToServer,
                        Packet::new(PacketType::Nak, b"ERROR refused\n".to_vec()),
                    );
                    return;
                }
                self.service_starts += 1;
                self.client = Some((Responder::new(now, ResponderConfig::default()), now));
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        let now = self.now;
        loop {
            let mut progressed = false;
            while let Some(ev) = self.server.poll_event() {
                progressed = true;
                if ev == InitiatorEvent::Connect {
                    if self.connect_failures > 0 {
                        self.connect_failures -= 1;
                        self.server.handle_connect_failed(now, "connection refused");
                    } else {
                        self.server.handle_connected(now);
                    }
                }
                self.server_events.push((self.elapsed(), ev));
            }
            while let Some(p) = self.server.poll_transmit() {
                progressed = true;
                self.send(Dir::ToClient, p);
            }
            let mut client_out = Vec::new();
            if let Some((r, _)) = &mut self.client {
                while let Some(p) = r.poll_transmit() {
                    client_out.push(p);
                }
                while let Some(ev) = r.poll_event() {
                    self.client_events.push((now - self.start, ev));
                    progressed = true;
                }
            }
            for p in client_out {
                progressed = true;
                self.send(Dir::ToServer, p);
            }
            if !progressed {
                break;
            }
        }
    }

    fn terminal(&self) -> Vec<&InitiatorEvent> {
        self.server_events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| {
                matches!(
                    e,
                    InitiatorEvent::Rep(_) | InitiatorEvent::Nak(_) | InitiatorEvent::Failed(_)
                )
            })
            .collect()
    }

    fn count(&self, dir: Dir, ty: PacketType) -> usize {
        self.sent
            .iter()
            .filter(|(_, d, t)| *d == dir && *t == ty)
            .count()
    }

    fn client_event_times(&self, want: &ResponderEvent) -> Vec<Duration> {
        self.client_events
            .iter()
            .filter(|(_, e)| e == want)
            .map(|(t, _)| *t)
            .collect()
    }
}

fn quick() -> Behaviour {
    Behaviour::ReplyAfter(Duration::from_millis(20))
}

/// A pair whose server asks with the default settings and whose client answers at once.
fn quick_pair() -> Pair {
    Pair::new(InitiatorConfig::default(), quick())
}

/// Drives `p` to the end; the initiator must have its REP and nothing else.
fn drive_to_rep(p: &mut Pair) {
    p.drive();
    assert!(
        matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]),
        "{:?}",
        p.terminal()
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn clean_exchange_is_req_ack_rep_ack() {
    let mut p = quick_pair();
    p.drive();
    let kinds: Vec<_> = p.sent.iter().map(|(_, d, t)| (*d, *t)).collect();
    assert_eq!(
        kinds,
        vec![
            (Dir::ToClient, PacketType::Req),
            (Dir::ToServer, PacketType::Ack),
            (Dir::ToServer, PacketType::Rep),
            (Dir::ToClient, PacketType::Ack),
        ]
    );
    assert_eq!(p.terminal(), vec![&InitiatorEvent::Rep(REP.to_vec())]);
    assert_eq!(p.client_events.last().unwrap().1, ResponderEvent::Acked);
    assert!(p.elapsed() < secs(1));
}

#[test]
fn lost_req_is_resent_after_ten_seconds() {
    let mut p = quick_pair().rule(Dir::ToClient, PacketType::Req, 0, Fate::Drop);
    p.drive();
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 2);
    assert_eq!(p.sent[1].0, secs(10), "the REQ goes again 10 s later");
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
    assert!(
        p.server_events
            .iter()
            .any(|(_, e)| *e == InitiatorEvent::Retransmit { send: 2 })
    );
}

#[test]
fn req_lost_three_times_fails_with_ack_timeout_after_thirty_seconds() {
    let mut p = quick_pair();
    for n in 0..3 {
        p = p.rule(Dir::ToClient, PacketType::Req, n, Fate::Drop);
    }
    p.drive();
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 3);
    assert_eq!(
        p.terminal(),
        vec![&InitiatorEvent::Failed(InitiatorError::AckTimeout)]
    );
    assert_eq!(p.server_events.last().unwrap().0, secs(30));
    assert_eq!(
        InitiatorError::AckTimeout.to_string(),
        "timeout waiting for ACK"
    );
    assert_eq!(p.service_starts, 0);
}

#[test]
fn lost_client_ack_while_service_runs_is_answered_with_another_ack() {
    let mut p = Pair::new(InitiatorConfig::default(), Behaviour::ReplyAfter(secs(20))).rule(
        Dir::ToServer,
        PacketType::Ack,
        0,
        Fate::Drop,
    );
    p.drive();
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 2);
    assert_eq!(p.count(Dir::ToServer, PacketType::Ack), 2);
    assert_eq!(
        p.service_starts, 1,
        "a duplicate REQ does not start the service again"
    );
    assert_eq!(
        p.client_event_times(&ResponderEvent::DuplicateRequest),
        vec![secs(10) + LATENCY]
    );
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
}

#[test]
fn lost_client_ack_and_rep_are_recovered_by_the_dup_req_resending_the_rep() {
    let mut p = Pair::new(InitiatorConfig::default(), Behaviour::ReplyAfter(secs(1)))
        .rule(Dir::ToServer, PacketType::Ack, 0, Fate::Drop)
        .rule(Dir::ToServer, PacketType::Rep, 0, Fate::Drop);
    p.drive();
    // The server's REQ at 10 s meets the client in its ACK wait: it resends the REP at once,
    // before its own 10 s REP timer (which would fire at 11 s).
    assert_eq!(p.count(Dir::ToServer, PacketType::Rep), 2);
    let second_rep = p
        .sent
        .iter()
        .filter(|(_, d, t)| *d == Dir::ToServer && *t == PacketType::Rep)
        .nth(1)
        .unwrap()
        .0;
    assert_eq!(second_rep, secs(10) + LATENCY);
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
    assert_eq!(p.service_starts, 1);
}

#[test]
fn client_that_skips_the_ack_is_still_understood() {
    // Covered by a lost ACK with a fast service: the REP arrives in the server's ACK wait.
    let mut p = quick_pair().rule(Dir::ToServer, PacketType::Ack, 0, Fate::Drop);
    drive_to_rep(&mut p);
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 1);
}

#[test]
fn lost_rep_is_resent_by_the_client_every_ten_seconds() {
    let mut p = quick_pair()
        .rule(Dir::ToServer, PacketType::Rep, 0, Fate::Drop)
        .rule(Dir::ToServer, PacketType::Rep, 1, Fate::Drop);
    p.drive();
    assert_eq!(p.count(Dir::ToServer, PacketType::Rep), 3);
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
    assert_eq!(p.client_events.last().unwrap().1, ResponderEvent::Acked);
}

#[test]
fn lost_server_ack_makes_the_client_resend_five_times_then_give_up() {
    let mut p = quick_pair().rule(Dir::ToClient, PacketType::Ack, 0, Fate::Drop);
    // The server finished at the first REP and ignores the rest.
    drive_to_rep(&mut p);
    assert_eq!(p.count(Dir::ToServer, PacketType::Rep), 5);
    assert_eq!(p.count(Dir::ToClient, PacketType::Ack), 1);
    let gave_up = p.client_event_times(&ResponderEvent::GaveUp);
    assert_eq!(gave_up.len(), 1);
    assert!(
        gave_up[0] >= secs(50) && gave_up[0] < secs(51),
        "{gave_up:?}"
    );
}

#[test]
fn late_duplicate_req_after_the_service_finished_runs_the_service_again() {
    let mut p = quick_pair().rule(Dir::ToClient, PacketType::Req, 0, Fate::Duplicate(secs(60)));
    p.drive();
    assert_eq!(
        p.service_starts, 2,
        "amandad treats it as a brand new request"
    );
    assert_eq!(p.terminal().len(), 1);
}

#[test]
fn rep_timeout_restarts_the_req_twice_then_fails() {
    let config = InitiatorConfig::with_rep_wait(secs(30));
    let mut p = Pair::new(config, Behaviour::Hang);
    p.drive();
    // Three REQ cycles (first + RESET_TRIES), each ACKed, then "timeout waiting for REP".
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 3);
    assert_eq!(p.count(Dir::ToServer, PacketType::Ack), 3);
    assert_eq!(p.service_starts, 1);
    assert_eq!(
        p.terminal(),
        vec![&InitiatorEvent::Failed(InitiatorError::RepTimeout)]
    );
    let t = p.server_events.last().unwrap().0;
    assert!(t > secs(90) && t < secs(91), "{t:?}");
}

#[test]
fn rep_timeout_does_not_restart_after_the_drop_dead_time() {
    let config = InitiatorConfig {
        rep_wait: secs(2000),
        ..InitiatorConfig::default()
    };
    let mut p = Pair::new(config, Behaviour::Hang);
    p.drive();
    // 2000 s: restart (not yet an hour old); 4000 s: older than 3600 s, give up.
    assert_eq!(p.count(Dir::ToClient, PacketType::Req), 2);
    assert_eq!(
        p.terminal(),
        vec![&InitiatorEvent::Failed(InitiatorError::RepTimeout)]
    );
}

#[test]
fn service_that_never_replies_is_naked_after_six_hours() {
    let config = InitiatorConfig::with_rep_wait(secs(7 * 3600));
    let mut p = Pair::new(config, Behaviour::Hang);
    p.drive();
    let nak_at = p
        .sent
        .iter()
        .find(|(_, d, t)| *d == Dir::ToServer && *t == PacketType::Nak)
        .map(|s| s.0)
        .expect("a NAK");
    // Six hours from the REQ's arrival at the client.
    assert_eq!(nak_at, secs(6 * 3600) + LATENCY);
    assert_eq!(
        p.client_event_times(&ResponderEvent::TimedOut),
        vec![secs(6 * 3600) + LATENCY]
    );
    assert!(
        matches!(p.terminal()[..], [InitiatorEvent::Nak(b)] if b == b"ERROR timeout on reply pipe\n")
    );
}

#[test]
fn partial_replies_reach_the_server_about_two_seconds_apart_and_are_not_acked() {
    let mut p = Pair::new(InitiatorConfig::default(), Behaviour::Partial(6));
    p.drive();
    let preps: Vec<_> = p
        .server_events
        .iter()
        .filter_map(|(t, e)| match e {
            InitiatorEvent::Prep(b) => Some((*t, b.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(preps.len(), 4, "{preps:?}");
    for w in preps.windows(2) {
        assert!(w[1].0 - w[0].0 >= secs(2));
        assert!(w[1].1.len() > w[0].1.len(), "PREP bodies are cumulative");
    }
    assert_eq!(
        p.count(Dir::ToClient, PacketType::Ack),
        1,
        "only the REP is ACKed"
    );
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
}

#[test]
fn prep_does_not_extend_the_rep_deadline_past_rep_wait_after_the_req() {
    let config = InitiatorConfig::with_rep_wait(secs(3));
    let mut p = Pair::new(config, Behaviour::Partial(100));
    p.drive();
    let first_resend = p
        .sent
        .iter()
        .filter(|(_, d, t)| *d == Dir::ToClient && *t == PacketType::Req)
        .nth(1)
        .expect("REQ restarted")
        .0;
    // REQ at 0, deadline rep_wait + 1 s after it, PREPs or not.
    assert_eq!(first_resend, secs(4));
}

#[test]
fn nak_ends_the_exchange_with_the_body() {
    let mut p = Pair::new(InitiatorConfig::default(), Behaviour::Nak);
    p.drive();
    assert_eq!(
        p.terminal(),
        vec![&InitiatorEvent::Nak(b"ERROR refused\n".to_vec())]
    );
    assert_eq!(p.count(Dir::ToClient, PacketType::Ack), 0);
}

#[test]
fn every_packet_duplicated_still_completes_once() {
    let mut p = Pair::new(InitiatorConfig::default(), Behaviour::ReplyAfter(secs(1)));
    for (dir, ty) in [
        (Dir::ToClient, PacketType::Req),
        (Dir::ToServer, PacketType::Ack),
        (Dir::ToServer, PacketType::Rep),
        (Dir::ToClient, PacketType::Ack),
    ] {
        p = p.rule(dir, ty, 0, Fate::Duplicate(Duration::from_millis(5)));
    }
    p.drive();
    assert_eq!(p.service_starts, 1);
    assert_eq!(p.terminal().len(), 1);
    assert!(matches!(p.terminal()[..], [InitiatorEvent::Rep(_)]));
}

#[test]
fn connect_failures_retry_five_seconds_apart_then_fail_with_the_shells_reason() {
    let mut p = quick_pair().failing_connects(3);
    p.drive();
    let connects: Vec<_> = p
        .server_events
        .iter()
        .filter(|(_, e)| *e == InitiatorEvent::Connect)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(connects, vec![secs(0), secs(5), secs(10)]);
    assert_eq!(
        p.terminal(),
        vec![&InitiatorEvent::Failed(InitiatorError::Connect {
            reason: "connection refused".into(),
            attempts: 3
        })]
    );
}

#[test]
fn connect_that_succeeds_on_the_second_try_sends_the_req() {
    let mut p = quick_pair().failing_connects(1);
    drive_to_rep(&mut p);
    assert_eq!(p.sent[0].0, secs(5));
}

#[test]
fn unexpected_packet_to_a_running_service_is_naked_and_the_wait_goes_on() {
    let now = Instant::now();
    let mut r = Responder::new(now, ResponderConfig::default());
    assert_eq!(r.poll_transmit(), Some(Packet::ack()));
    r.handle_packet(now, PacketType::Ack, b"");
    assert_eq!(
        r.poll_transmit(),
        Some(Packet::new(
            PacketType::Nak,
            b"ERROR unexpected packet type ACK\n".to_vec()
        ))
    );
    assert!(r.awaiting_reply());
    r.reply(now, REP.to_vec());
    assert_eq!(r.poll_transmit().map(|p| p.ty), Some(PacketType::Rep));
    r.handle_packet(now, PacketType::Prep, b"");
    assert_eq!(r.poll_transmit().map(|p| p.ty), Some(PacketType::Nak));
    assert!(r.poll_timeout().is_some(), "the ACK timer keeps running");
}

#[test]
fn stray_packets_rearm_the_server_timer_in_full() {
    let t0 = Instant::now();
    let mut s = Initiator::new(t0, InitiatorConfig::default(), REQ.to_vec());
    s.handle_connected(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    s.handle_packet(t0 + secs(8), PacketType::Req, b"");
    assert_eq!(s.poll_timeout(), Some(t0 + secs(18)));
    s.handle_timeout(t0 + secs(10));
    assert_eq!(s.sends(), 1, "an early timeout call is harmless");
}

/// A small deterministic PRNG for the random-loss test (no clock, no dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_loss_and_duplication_always_settle_with_exactly_one_outcome() {
    for seed in 1..300u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut p = Pair::new(
            InitiatorConfig::with_rep_wait(secs(30)),
            Behaviour::ReplyAfter(Duration::from_millis(rng.next() % 15_000)),
        );
        for dir in [Dir::ToClient, Dir::ToServer] {
            for ty in PacketType::ALL {
                for n in 0..8 {
                    let fate = match rng.next() % 10 {
                        0..=2 => Fate::Drop,
                        3 => Fate::Duplicate(Duration::from_millis(rng.next() % 20_000)),
                        _ => Fate::Deliver,
                    };
                    p = p.rule(dir, ty, n, fate);
                }
            }
        }
        p.drive();
        let terminal = p.terminal();
        assert_eq!(terminal.len(), 1, "seed {seed}: {:?}", p.server_events);
        assert!(
            matches!(
                terminal[0],
                InitiatorEvent::Rep(_)
                    | InitiatorEvent::Failed(
                        InitiatorError::AckTimeout | InitiatorError::RepTimeout
                    )
            ),
            "seed {seed}: {terminal:?}"
        );
        assert!(p.server.is_done());
    }
}
