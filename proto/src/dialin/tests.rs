//! The HOLD client with virtual time, and the dial-in codecs (issue 14).

use super::*;
use crate::frame::FrameReader;

fn req() -> HoldRequest {
    HoldRequest {
        features: "ffff".into(),
        hostname: "client.example".into(),
        config: "Daily".into(),
    }
}

fn client(now: Instant, seed: u64) -> HoldClient {
    HoldClient::new(HoldConfig::default(), "backup", &req(), seed, now)
}

fn drain(c: &mut HoldClient, now: Instant) -> Vec<HoldAction> {
    std::iter::from_fn(|| c.poll_action(now)).collect()
}

fn frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut r = FrameReader::new();
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(f) = r.next(&mut input).unwrap() {
        out.push((f.handle, f.payload.into_owned()));
    }
    out
}

fn rep(body: &[u8]) -> Vec<u8> {
    Packet::new(PacketType::Rep, body).to_vec().unwrap()
}

/// Dials, answers the HOLD with a heartbeat of `hb` seconds, and checks what was sent.
fn hold(c: &mut HoldClient, now: Instant, hb: u64) {
    assert_eq!(drain(c, now), [HoldAction::Connect]);
    c.handle_connected(now);
    let [HoldAction::Send(bytes)] = &drain(c, now)[..] else {
        panic!("no REQ")
    };
    let f = frames(bytes);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, 1);
    let p = Packet::parse(&f[0].1).unwrap();
    assert_eq!(p.ptype, PacketType::Req);
    assert_eq!(
        p.body.as_ref(),
        &b"SECURITY USER backup\nSERVICE amdialin\nOPTIONS features=ffff;hostname=client.example;config=Daily;\nHOLD\n"[..]
    );
    c.handle_frame(now, 1, &Packet::ack().to_vec().unwrap());
    c.handle_frame(now, 1, &rep(&hold_ok(Duration::from_secs(hb))));
    let acts = drain(c, now);
    assert_eq!(acts.len(), 2, "{acts:?}");
    let HoldAction::Send(bytes) = &acts[0] else {
        panic!("{acts:?}")
    };
    let f = frames(bytes);
    assert_eq!(f[0].0, 1);
    assert_eq!(Packet::parse(&f[0].1).unwrap().ptype, PacketType::Ack);
    assert_eq!(f[1], (1, vec![]), "handle 1 closed after the ACK");
    assert_eq!(
        acts[1],
        HoldAction::Holding {
            heartbeat: Duration::from_secs(hb)
        }
    );
    assert!(c.is_holding());
}

#[test]
fn hold_answers_pings_and_opens_sessions() {
    let t0 = Instant::now();
    let mut c = client(t0, 7);
    hold(&mut c, t0, 30);
    let t = t0 + Duration::from_secs(30);
    c.handle_frame(t, LINE_HANDLE, b"PING 1\n");
    assert_eq!(drain(&mut c, t), [HoldAction::Send(Line::Pong(1).frame())]);
    let token = Token([0xab; 16]);
    c.handle_frame(t, LINE_HANDLE, &Line::Open(token).encode());
    assert_eq!(drain(&mut c, t), [HoldAction::OpenSession(token)]);
    // Quiet for less than 3 intervals since the last line: still holding.
    c.handle_timeout(t + Duration::from_secs(89));
    assert!(c.is_holding());
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(90)));
}

// issue 14: a connection that goes silent (a NAT that forgot it) is closed and redialed,
// with a doubling backoff and jitter, and never a busy loop.
#[test]
fn silence_closes_and_redials_with_doubling_jittered_backoff_up_to_the_cap() {
    let t0 = Instant::now();
    let mut c = client(t0, 42);
    hold(&mut c, t0, 10);
    let mut now = t0 + Duration::from_secs(30);
    assert_eq!(c.poll_timeout(), Some(now));
    c.handle_timeout(now);
    let acts = drain(&mut c, now);
    let [HoldAction::Down { reason, retry_in }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(reason, "no PING from the server for 30 s");
    assert!(
        (Duration::from_millis(500)..=Duration::from_secs(1)).contains(retry_in),
        "{retry_in:?}"
    );
    // Every dial fails: the waits double (with jitter within [d/2, d]) up to 60 s.
    let mut waits = vec![*retry_in];
    for _ in 0..12 {
        let at = c.poll_timeout().unwrap();
        assert!(at > now, "a dial is never due at once after a failure");
        assert_eq!(
            c.poll_action(now),
            None,
            "nothing to do before the wait ends"
        );
        now = at;
        assert_eq!(drain(&mut c, now), [HoldAction::Connect]);
        c.handle_connect_failed(now, "connection refused");
        let acts = drain(&mut c, now);
        let [HoldAction::Down { retry_in, .. }] = &acts[..] else {
            panic!("{acts:?}")
        };
        waits.push(*retry_in);
    }
    let caps = [1u64, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60];
    for (w, cap) in waits.iter().zip(caps) {
        let cap = Duration::from_secs(cap);
        assert!(
            *w >= cap / 2 && *w <= cap,
            "{w:?} not within [{:?}, {cap:?}]",
            cap / 2
        );
    }
    assert_eq!(c.failures(), 13);
    // A PING on a new connection starts the backoff over.
    now = c.poll_timeout().unwrap();
    hold(&mut c, now, 10);
    c.handle_frame(now, LINE_HANDLE, b"PING 9\n");
    drain(&mut c, now);
    c.handle_closed(now, "reset");
    let acts = drain(&mut c, now);
    let [HoldAction::Down { retry_in, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert!(*retry_in <= Duration::from_secs(1), "{retry_in:?}");
}

#[test]
fn jitter_differs_between_seeds_so_clients_do_not_redial_together() {
    let t0 = Instant::now();
    let waits: Vec<Duration> = (1..=8)
        .map(|seed| {
            let mut c = HoldClient::new(
                HoldConfig {
                    backoff_min: Duration::from_secs(60),
                    ..HoldConfig::default()
                },
                "backup",
                &req(),
                seed,
                t0,
            );
            drain(&mut c, t0);
            c.handle_connect_failed(t0, "x");
            c.poll_timeout().unwrap() - t0
        })
        .collect();
    let mut distinct = waits.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 6, "{waits:?}");
}

#[test]
fn a_refusal_or_no_reply_is_a_failure_with_the_servers_text() {
    let t0 = Instant::now();
    let mut c = client(t0, 1);
    drain(&mut c, t0);
    c.handle_connected(t0);
    drain(&mut c, t0);
    c.handle_frame(
        t0,
        1,
        &rep(b"ERROR client.example is not marked dial-in in /etc/amanda/Daily/disklist\n"),
    );
    let acts = drain(&mut c, t0);
    assert!(
        matches!(&acts[..], [HoldAction::Down { reason, .. }] if reason == "the server refused: client.example is not marked dial-in in /etc/amanda/Daily/disklist"),
        "{acts:?}"
    );
    let t = c.poll_timeout().unwrap();
    drain(&mut c, t);
    c.handle_connected(t);
    drain(&mut c, t);
    let nak = Packet::new(PacketType::Nak, &b"ERROR amdialin: invalid service\n"[..])
        .to_vec()
        .unwrap();
    c.handle_frame(t, 1, &nak);
    assert!(
        matches!(&drain(&mut c, t)[..], [HoldAction::Down { reason, .. }] if reason.contains("invalid service"))
    );
    let t = c.poll_timeout().unwrap();
    drain(&mut c, t);
    c.handle_connected(t);
    drain(&mut c, t);
    c.handle_timeout(t + Duration::from_secs(30));
    assert!(
        matches!(&drain(&mut c, t)[..], [HoldAction::Down { reason, .. }] if reason == "no answer to the HOLD request within 30 s")
    );
}

#[test]
fn a_bad_line_from_the_server_drops_the_connection() {
    let t0 = Instant::now();
    let mut c = client(t0, 3);
    hold(&mut c, t0, 10);
    c.handle_frame(t0, LINE_HANDLE, b"OPEN ../../etc\n");
    assert!(matches!(&drain(&mut c, t0)[..], [HoldAction::Down { .. }]));
    assert!(!c.is_holding());
}

#[test]
fn lines_tokens_and_preambles_round_trip_and_bad_ones_are_refused() {
    let t = Token(*b"0123456789abcdef");
    for l in [Line::Ping(0), Line::Pong(u64::MAX), Line::Open(t)] {
        assert_eq!(Line::parse(&l.encode()), Ok(l));
    }
    assert_eq!(Token::parse(t.to_string().as_bytes()), Some(t));
    for bad in [
        &b"PING"[..],
        b"PING -1\n",
        b"PING 1 2\n",
        b"PONG \n",
        b"OPEN 0123\n",
        b"OPEN 0123456789ABCDEF0123456789ABCDEF\n",
        b"HELLO 1\n",
    ] {
        assert!(Line::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Line::parse(&[b'P'; 4096]).is_err());
    let pre = session_preamble(t);
    let f = frames(&pre);
    assert_eq!(f[0].0, SESSION_HANDLE);
    assert_eq!(parse_session_preamble(&f[0].1), Ok(t));
    assert!(parse_session_preamble(b"AMDIALIN SESSION ../x\n").is_err());
    assert!(parse_session_preamble(b"SERVICE noop\n").is_err());
}

#[test]
fn hold_requests_parse_and_unsafe_names_are_refused() {
    let r = req();
    let body = r.body();
    let args = &body[b"SERVICE amdialin\n".len()..];
    assert_eq!(HoldRequest::parse(args), Ok(r));
    for (bad, why) in [
        (
            &b"OPTIONS hostname=../x;config=D;\nHOLD\n"[..],
            "not a host name",
        ),
        (b"OPTIONS hostname=a/b;config=D;\nHOLD\n", "not a host name"),
        (
            b"OPTIONS hostname=a;config=../D;\nHOLD\n",
            "not a configuration",
        ),
        (b"OPTIONS hostname=a;config=D;\n", "no HOLD"),
        (b"OPTIONS config=D;\nHOLD\n", "no hostname"),
        (
            b"OPTIONS hostname=a;config=D;\nHOLD\nEXTRA\n",
            "unexpected line",
        ),
    ] {
        let e = HoldRequest::parse(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    assert!(is_safe_host_name("client-1.example.com"));
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "a b",
        "a\nb",
        &"x".repeat(300),
    ] {
        assert!(!is_safe_host_name(bad), "{bad:?}");
    }
    assert_eq!(
        parse_hold_reply(b"OK HOLD heartbeat=30\n"),
        Ok(Duration::from_secs(30))
    );
    assert_eq!(
        parse_hold_reply(b"ERROR a\nERROR b\n"),
        Err("a; b".to_string())
    );
}

// issue 14: the session heartbeat is one frame on the line handle, and nothing else is.
#[test]
fn the_session_heartbeat_is_a_ping_frame_on_the_line_handle() {
    let f = frames(&session_heartbeat());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, LINE_HANDLE);
    assert_eq!(Line::parse(&f[0].1), Ok(Line::Ping(0)));
    assert!(is_session_heartbeat(LINE_HANDLE));
    assert!(!is_session_heartbeat(1));
    assert!(!is_session_heartbeat(LINE_HANDLE - 1));
}

// issue 14: a session the client could not open is reported on the HOLD with its reason;
// the reason is the client's text, shown on the server: one bounded printable line.
#[test]
fn a_failed_line_round_trips_and_its_text_is_one_bounded_printable_line() {
    let t = Token([7; 16]);
    let l = Line::Failed(
        t,
        "through HTTP proxy p:3128: \"HTTP/1.1 403 Forbidden\"".into(),
    );
    assert_eq!(Line::parse(&l.encode()), Ok(l));
    let hostile = format!("\x1b[2J\r\nFAKE {}", "x".repeat(100_000));
    let l = Line::Failed(t, hostile);
    let bytes = l.encode();
    assert!(bytes.len() <= MAX_FAILED_LINE, "{}", bytes.len());
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    let Ok(Line::Failed(got, text)) = Line::parse(&bytes) else {
        panic!("{bytes:?}")
    };
    assert_eq!(got, t);
    assert!(
        text.starts_with("?[2J??FAKE xxx") && text.ends_with("..."),
        "{text}"
    );
    assert!(!text.chars().any(char::is_control));
    // Too long on the wire, or without a token: refused.
    let mut long = format!("FAILED {t} ").into_bytes();
    long.resize(MAX_FAILED_LINE + 1, b'x');
    assert!(Line::parse(&long).is_err());
    assert!(Line::parse(b"FAILED nottoken why").is_err());
    assert!(Line::parse(format!("FAILED {t}").as_bytes()).is_err());
    // Multibyte text is cut at a character.
    let l = Line::Failed(t, "é".repeat(1000));
    let Ok(Line::Failed(_, text)) = Line::parse(&l.encode()) else {
        panic!()
    };
    assert!(text.ends_with("é...") && text.len() < MAX_FAILED_LINE);
}
