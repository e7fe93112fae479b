//! The data phase in virtual time: a [`Sender`] and a [`Receiver`] joined by a simulated
//! transport that cuts every stream into random pieces, interleaves them (each stream on its
//! own connection for bsd, one connection for the multiplexed auths), delays them, or loses
//! a connection; the pair must agree on the bytes, the CRCs and the verdict, and each bound
//! must hold against a hostile peer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::crc::Crc32c;
use crate::mesg::{DumpStatus, DumpTracker};
use crate::sendbackup::Stream;

/// xorshift64*: a seeded source of choices, printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    /// bsd: one connection per stream, delivered independently.
    Raw,
    /// bsdudp/bsdtcp: one connection, streams in the order they were written.
    Mux,
}

/// A piece of the wire: bytes of a stream, or its end.
#[derive(Debug)]
enum Piece {
    Bytes(Stream, Vec<u8>),
    End(Stream),
}

/// The client's script: a MESG header, DATA, INDEX lines, the closing MESG lines.
struct Client {
    sender: Sender,
    data: Vec<u8>,
    mesg_head: Vec<u8>,
    index: Vec<u8>,
}

fn application_output(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

fn mesg_head() -> Vec<u8> {
    b"sendbackup: info BACKUP=APPLICATION\nsendbackup: info APPLICATION=amgtar\n\
sendbackup: info RECOVER_CMD=/usr/lib/amanda/application/amgtar restore [./file-to-restore]+\n\
sendbackup: info end\n"
        .to_vec()
}

fn mesg_tail(native: crate::crc::CrcValue, client: crate::crc::CrcValue) -> Vec<u8> {
    format!(
        "| Total bytes written: {} (x)\nsendbackup: size {}\nsendbackup: native-CRC {native}\n\
sendbackup: client-CRC {client}\nsendbackup: end\n",
        native.size,
        native.size / 1024
    )
    .into_bytes()
}

/// Runs a whole dump through `transport`, cutting pieces with `rng`; returns the
/// receiver's verdict and the sender's client-CRC.
fn run_pair(transport: Wire, seed: u64, data_len: usize) -> (Received, crate::crc::CrcValue) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let t0 = Instant::now();
    let mut now = t0;
    let streams = [Stream::Data, Stream::Mesg, Stream::Index];
    let connected_at_once = transport == Wire::Mux && rng.below(2) == 0;
    let mut client = Client {
        sender: Sender::new(
            SenderConfig::default(),
            &streams.map(|s| (s, connected_at_once)),
        ),
        data: application_output(data_len, seed),
        mesg_head: mesg_head(),
        index: (0..50)
            .flat_map(|i| format!("/file{i}\n").into_bytes())
            .collect(),
    };
    let mut tracker = DumpTracker::new();
    tracker.set_client_filters(false);
    let mut rx = Receiver::new(now, ReceiverConfig::default(), &streams, tracker);

    // The server connects its streams in random order, sometimes before its ACK arrives.
    let mut order = streams.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    if rng.below(2) == 0 {
        client.sender.on_acked(now);
    }
    for s in order {
        now += Duration::from_millis(rng.below(50));
        client.sender.on_connected(now, s);
    }
    client.sender.on_acked(now);

    // The client writes: header, then DATA interleaved with INDEX, then the tail.
    let mut wire: Vec<Piece> = Vec::new();
    let mut started = false;
    while let Some(e) = client.sender.poll_event() {
        assert_eq!(e, SenderEvent::Start, "seed {seed}");
        started = true;
    }
    assert!(started, "seed {seed}: every stream connected and acked");
    assert!(!client.sender.data_allowed(), "no DATA before the header");
    wire.push(Piece::Bytes(Stream::Mesg, client.mesg_head.clone()));
    client.sender.header_sent();
    let (mut d, mut ix) = (0usize, 0usize);
    while d < client.data.len() || ix < client.index.len() {
        if d < client.data.len() && (ix >= client.index.len() || rng.below(4) != 0) {
            assert!(client.sender.data_allowed());
            let n = (1 + rng.below(70_000) as usize).min(client.data.len() - d);
            let chunk = client.data[d..d + n].to_vec();
            client.sender.on_native(&chunk);
            client.sender.on_sent(&chunk);
            wire.push(Piece::Bytes(Stream::Data, chunk));
            d += n;
        } else {
            let n = (1 + rng.below(100) as usize).min(client.index.len() - ix);
            wire.push(Piece::Bytes(
                Stream::Index,
                client.index[ix..ix + n].to_vec(),
            ));
            ix += n;
        }
    }
    wire.push(Piece::Bytes(
        Stream::Mesg,
        mesg_tail(client.sender.native_crc(), client.sender.client_crc()),
    ));
    client.sender.on_application_done();
    assert_eq!(client.sender.poll_event(), Some(SenderEvent::Close));
    for s in streams {
        wire.push(Piece::End(s));
    }

    // The transport: Mux keeps the client's order (split into random pieces); Raw keeps
    // each stream's order but interleaves the streams at random.
    let mut queues: Vec<VecDeque<Piece>> = (0..3).map(|_| VecDeque::new()).collect();
    let mut split = Vec::new();
    for p in wire {
        match p {
            Piece::Bytes(s, b) => {
                let mut at = 0;
                while at < b.len() {
                    let n = (1 + rng.below(9000) as usize).min(b.len() - at);
                    split.push(Piece::Bytes(s, b[at..at + n].to_vec()));
                    at += n;
                }
            }
            end => split.push(end),
        }
    }
    let mut delivery: Vec<Piece> = Vec::new();
    match transport {
        Wire::Mux => delivery = split,
        Wire::Raw => {
            for p in split {
                let s = match &p {
                    Piece::Bytes(s, _) | Piece::End(s) => *s,
                };
                queues[s.index()].push_back(p);
            }
            // A raw DATA connection is not read before the header: take it only then.
            while queues.iter().any(|q| !q.is_empty()) {
                let ready: Vec<usize> = (0..3)
                    .filter(|&i| {
                        !queues[i].is_empty() && (i != Stream::Data.index() || rx.data_enabled())
                    })
                    .collect();
                let i = ready[rng.below(ready.len() as u64) as usize];
                let p = queues[i].pop_front().unwrap();
                deliver(&mut rx, &mut now, &mut rng, p);
            }
        }
    }
    for p in delivery {
        deliver(&mut rx, &mut now, &mut rng, p);
    }
    let mut events = Vec::new();
    while let Some(e) = rx.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&ReceiverEvent::HeaderReady), "seed {seed}");
    assert_eq!(events.last(), Some(&ReceiverEvent::Complete), "seed {seed}");
    (rx.finish(), client.sender.client_crc())
}

fn deliver(rx: &mut Receiver, now: &mut Instant, rng: &mut Rng, p: Piece) {
    *now += Duration::from_millis(rng.below(20));
    rx.handle_timeout(*now);
    match p {
        Piece::Bytes(Stream::Mesg, b) => rx.on_mesg(*now, &b),
        Piece::Bytes(Stream::Data, b) => {
            let d = rx.on_data(*now, &b);
            assert_ne!(d, DataDisposition::Dropped);
        }
        Piece::Bytes(Stream::Index, b) => assert!(rx.on_index(b.len())),
        Piece::Bytes(Stream::State, _) => {}
        Piece::End(s) => rx.on_stream_end(s),
    }
}

#[test]
fn every_cut_and_interleaving_of_a_dump_gives_the_same_bytes_crc_and_verdict() {
    for seed in 0..60 {
        for transport in [Wire::Raw, Wire::Mux] {
            let len = 10240 * (1 + (seed as usize * 7) % 40);
            let (got, sent) = run_pair(transport, seed, len);
            assert!(
                got.error.is_none(),
                "seed {seed} {transport:?}: {:?}",
                got.error
            );
            assert_eq!(
                got.outcome.status,
                DumpStatus::Done,
                "seed {seed} {transport:?}: {:?}",
                got.outcome
            );
            assert_eq!(got.received, sent, "seed {seed} {transport:?}");
            let mut crc = Crc32c::new();
            crc.update(&application_output(len, seed));
            assert_eq!(got.received, crc.value());
            assert!(got.complete);
        }
    }
}

fn receiver(now: Instant) -> Receiver {
    let mut tracker = DumpTracker::new();
    tracker.set_client_filters(false);
    Receiver::new(
        now,
        ReceiverConfig {
            early_data_max: 1000,
            index_max: 5000,
            dtimeout: Duration::from_secs(60),
            ..ReceiverConfig::default()
        },
        &[Stream::Data, Stream::Mesg, Stream::Index],
        tracker,
    )
}

#[test]
fn early_data_is_kept_up_to_its_bound_and_handed_back_after_the_header() {
    let t = Instant::now();
    let mut rx = receiver(t);
    assert_eq!(rx.on_data(t, &[7; 600]), DataDisposition::Kept);
    rx.on_mesg(t, &mesg_head());
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::HeaderReady));
    assert_eq!(
        rx.poll_event(),
        Some(ReceiverEvent::EarlyData(vec![7; 600]))
    );
    assert_eq!(rx.on_data(t, &[8; 10]), DataDisposition::Store);
    assert_eq!(rx.received().size, 610);

    let mut rx = receiver(t);
    assert_eq!(rx.on_data(t, &[7; 600]), DataDisposition::Kept);
    assert_eq!(rx.on_data(t, &[7; 401]), DataDisposition::Dropped);
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Stop));
    assert_eq!(
        rx.finish().error,
        Some(ReceiveError::EarlyData { bound: 1000 })
    );
}

#[test]
fn mesg_lines_alone_keep_a_dump_alive_for_at_most_twice_dtimeout() {
    let t = Instant::now();
    let mut rx = receiver(t);
    rx.on_mesg(t, &mesg_head());
    let mut now = t;
    // A line every 30 s, never any DATA.
    while !rx.is_over() {
        now += Duration::from_secs(30);
        rx.handle_timeout(now);
        rx.on_mesg(now, b"| still here\n");
    }
    assert!(now <= t + Duration::from_secs(150), "{:?}", now - t);
    let err = rx.finish().error.unwrap();
    assert!(
        matches!(
            err,
            ReceiveError::DataTimeout {
                mesg_cap: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("[data timeout: no DATA for 120s"),
        "{err}"
    );

    // Partial-line bytes never count.
    let mut rx = receiver(t);
    rx.on_mesg(t, &mesg_head());
    rx.on_mesg(t + Duration::from_secs(59), b"| no newline");
    assert_eq!(rx.poll_timeout(), Some(t + Duration::from_secs(60)));
    rx.handle_timeout(t + Duration::from_secs(60));
    assert_eq!(
        rx.finish().error.map(|e| e.to_string()).as_deref(),
        Some("[data timeout]")
    );
}

#[test]
fn the_index_cap_stops_the_dump() {
    let t = Instant::now();
    let mut rx = receiver(t);
    assert!(rx.on_index(4000));
    assert!(!rx.on_index(1001));
    assert!(rx.is_over());
    assert_eq!(
        rx.finish().error,
        Some(ReceiveError::IndexCap { limit: 5000 })
    );
}

#[test]
fn a_lost_connection_names_the_streams_it_cut_and_mesg_before_the_header_stops() {
    let t = Instant::now();
    let mut rx = receiver(t);
    rx.on_mesg(t, &mesg_head());
    rx.on_stream_end(Stream::Index);
    rx.on_connection_lost(
        &[Stream::Data, Stream::Mesg, Stream::Index],
        Some("reset".into()),
    );
    let got = rx.finish();
    assert_eq!(
        got.error.map(|e| e.to_string()).as_deref(),
        Some("[connection closed by the client with DATA, MESG still open (reset)]")
    );

    let mut rx = receiver(t);
    rx.on_mesg(t, b"sendbackup: info BACKUP=APPLICATION\n");
    rx.on_stream_end(Stream::Mesg);
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Stop));
    assert!(!rx.data_enabled());
    assert_ne!(rx.finish().outcome.status, DumpStatus::Done);
}

#[test]
fn the_sender_starts_only_when_acked_and_every_stream_is_connected() {
    let t = Instant::now();
    let streams = [(Stream::Data, false), (Stream::Mesg, false)];
    let mut s = Sender::new(SenderConfig::default(), &streams);
    s.on_connected(t, Stream::Mesg); // before the ACK: counts as it
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(30)));
    s.on_connected(t + Duration::from_secs(1), Stream::Data);
    assert_eq!(s.poll_event(), Some(SenderEvent::Start));
    assert!(!s.data_allowed());
    s.header_sent();
    assert!(s.data_allowed());
    s.on_peer_closed(Stream::Data);
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::Abort(SendError::PeerClosedData))
    );

    let mut s = Sender::new(SenderConfig::default(), &streams);
    s.on_acked(t);
    s.on_connected(t, Stream::Data);
    s.handle_timeout(t + Duration::from_secs(29));
    assert_eq!(s.poll_event(), None);
    s.handle_timeout(t + Duration::from_secs(30));
    let e = s.poll_event();
    assert_eq!(
        e,
        Some(SenderEvent::Abort(SendError::AcceptTimeout {
            pending: vec![Stream::Mesg],
            timeout: Duration::from_secs(30)
        }))
    );
    assert_eq!(
        SendError::AcceptTimeout {
            pending: vec![Stream::Mesg],
            timeout: Duration::from_secs(30)
        }
        .to_string(),
        "the server did not connect MESG within 30s"
    );

    let mut s = Sender::new(SenderConfig::default(), &streams);
    s.on_unacked();
    assert_eq!(s.poll_event(), Some(SenderEvent::Abort(SendError::NoAck)));
}

#[test]
fn with_client_filters_native_and_client_crcs_cover_their_own_bytes() {
    let mut s = Sender::new(SenderConfig::default(), &[(Stream::Data, true)]);
    s.on_native(b"application output");
    s.on_sent(b"compressed");
    assert_eq!(s.native_crc().size, 18);
    assert_eq!(s.client_crc().size, 10);
    assert_ne!(s.native_crc(), s.client_crc());
}

#[test]
fn without_client_filters_one_pass_gives_both_crcs_and_the_shell_can_fail_the_phase() {
    let mut s = Sender::new(SenderConfig::default(), &[(Stream::Data, true)]);
    s.on_unfiltered(b"tar output");
    assert_eq!(s.native_crc(), s.client_crc());
    assert_eq!(s.native_crc().size, 10);
    let t = Instant::now();
    s.on_acked(t);
    assert_eq!(s.poll_event(), Some(SenderEvent::Start));
    s.fail("the server closed a data connection");
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::Abort(SendError::Local(
            "the server closed a data connection".into()
        )))
    );
    assert!(s.is_over());
    s.fail("again");
    assert_eq!(s.poll_event(), None, "one abort only");
}

// issue 14: in a client-initiated backup (ambackup) the client keeps MESG open until the
// server's `MESG END`; the data phase ends with its `sendbackup: end` line instead.
#[test]
fn two_way_mesg_completes_on_the_end_line_once_the_other_streams_ended() {
    let t = Instant::now();
    let mut tracker = DumpTracker::new();
    tracker.set_client_filters(false);
    let cfg = ReceiverConfig {
        mesg_two_way: true,
        ..ReceiverConfig::default()
    };
    let streams = [Stream::Data, Stream::Mesg, Stream::Index, Stream::State];
    let mut rx = Receiver::new(t, cfg.clone(), &streams, tracker.clone());
    rx.on_mesg(t, &mesg_head());
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::HeaderReady));
    let data = b"tar bytes".repeat(100);
    assert_eq!(rx.on_data(t, &data), DataDisposition::Store);
    let mut crc = Crc32c::new();
    crc.update(&data);
    let c = crc.value();
    rx.on_stream_end(Stream::Data);
    rx.on_stream_end(Stream::Index);
    rx.on_mesg(
        t,
        format!(
            "sendbackup: size 1\nsendbackup: native-CRC {:08x}:{}\nsendbackup: client-CRC {:08x}:{}\n",
            c.crc, c.size, c.crc, c.size
        )
        .as_bytes(),
    );
    assert!(!rx.is_over(), "STATE is still open");
    rx.on_stream_end(Stream::State);
    assert!(!rx.is_over(), "the end line has not come");
    rx.on_mesg(t, b"sendbackup: end\n");
    assert!(rx.is_over());
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Complete));
    assert_eq!(rx.open_streams(), [Stream::Mesg]);
    let got = rx.finish();
    assert_eq!(got.error, None);
    assert!(got.complete);
    assert_eq!(got.outcome.status, DumpStatus::Done);

    // The end line before the last stream: complete when that stream ends.
    let mut rx = Receiver::new(
        t,
        cfg.clone(),
        &[Stream::Data, Stream::Mesg],
        tracker.clone(),
    );
    rx.on_mesg(t, &mesg_head());
    rx.on_mesg(t, b"sendbackup: end\n");
    assert!(!rx.is_over(), "DATA is still open");
    rx.on_stream_end(Stream::Data);
    assert!(rx.is_over());

    // One-way MESG (a server-initiated dump) still waits for MESG's own end.
    let one_way = ReceiverConfig::default();
    let mut rx = Receiver::new(t, one_way, &[Stream::Data, Stream::Mesg], tracker);
    rx.on_mesg(t, &mesg_head());
    rx.on_mesg(t, b"sendbackup: end\n");
    rx.on_stream_end(Stream::Data);
    assert!(!rx.is_over());
    rx.on_stream_end(Stream::Mesg);
    assert!(rx.is_over());
}
