//! Golden tests of the wire codecs (`proto::{udp, frame, tcp, security, crc}`) against the
//! real Amanda 3.5.1 traces in `tests/fixtures/traces/` and the spec's test vectors.
//!
//! What they prove: every datagram the real Amanda exchanged parses and re-encodes
//! byte-identically; every Amanda-framed TCP stream (bsdtcp control connections, bsdudp data
//! connections) decodes into the same frames however it is cut into reads, and re-encodes
//! byte-identically; every control packet in those streams re-encodes identically; the packet
//! type sequences are the ones of spec §3; the NAKs carry the exact texts; and the CRC-32C of
//! the DATA bytes of every dump equals the `client-CRC` the real sendbackup reported.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proto::crc::{Crc32c, CrcValue};
use proto::frame::{self, DecodeError, Decoder, Event, FrameReader};
use proto::pkt::PacketType;
use proto::security::{self, Checked, Peer, PortRule, RefusalStyle, SecurityLine};
use proto::tcp;
use proto::udp::{self, Datagram};

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("traces")
}

/// One capture: its datagrams in order and its TCP connections.
struct Trace {
    name: String,
    datagrams: Vec<Udp>,
    conns: Vec<Conn>,
}

struct Udp {
    file: String,
    to_client: bool,
    bytes: Vec<u8>,
}

/// A TCP connection: `a` connected to `b`.
struct Conn {
    index: u32,
    a: String,
    b: String,
    a2b: Vec<u8>,
    b2a: Vec<u8>,
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("address with port")
}

impl Conn {
    fn touches_port(&self, port: u16) -> bool {
        port_of(&self.a) == port || port_of(&self.b) == port
    }
}

fn load(name: &str) -> Trace {
    let dir = traces_dir().join(name);
    let manifest = fs::read_to_string(dir.join("MANIFEST")).expect("MANIFEST");
    let mut datagrams = Vec::new();
    let mut conns: BTreeMap<u32, Conn> = BTreeMap::new();
    for line in manifest.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&file) = words.first() else { continue };
        let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
        if file.starts_with("udp-") {
            datagrams.push(Udp {
                file: file.to_owned(),
                to_client: words.get(1) == Some(&"to-client"),
                bytes,
            });
        } else if let Some(rest) = file.strip_prefix("tcp") {
            let (n, dir) = rest
                .trim_end_matches(".bin")
                .split_once('-')
                .expect("tcpN-dir");
            let index: u32 = n.parse().expect("stream number");
            let (from, to) = (words[2].to_owned(), words[4].to_owned());
            let conn = conns.entry(index).or_insert_with(|| Conn {
                index,
                a: String::new(),
                b: String::new(),
                a2b: Vec::new(),
                b2a: Vec::new(),
            });
            if dir == "a2b" {
                (conn.a, conn.b, conn.a2b) = (from, to, bytes);
            } else {
                conn.b2a = bytes;
            }
        }
    }
    Trace {
        name: name.to_owned(),
        datagrams,
        conns: conns.into_values().collect(),
    }
}

fn all_traces() -> Vec<Trace> {
    let mut names: Vec<String> = fs::read_dir(traces_dir())
        .expect("fixtures/traces")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("MANIFEST").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 11,
        "expected the 11 real-Amanda traces, found {names:?}"
    );
    names.iter().map(|n| load(n)).collect()
}

/// The `CONNECT DATA <id> MESG <id> ...` line of a sendbackup REP body, as (name, id) pairs.
fn connect_ids(body: &[u8]) -> Option<Vec<(String, u32)>> {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find_map(|l| l.strip_prefix("CONNECT "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    Some(
        words
            .chunks(2)
            .map(|pair| (pair[0].to_owned(), pair[1].parse().expect("stream id")))
            .collect(),
    )
}

fn id_of(ids: &[(String, u32)], name: &str) -> u32 {
    ids.iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| *id)
        .expect(name)
}

/// The streams of a trace that carry Amanda framing: bsdtcp control connections (to port
/// 10080) and bsdudp data connections (to the port a UDP REP announced as DATA).
fn framed_streams(trace: &Trace) -> Vec<(&Conn, &'static str, &[u8])> {
    let bsdudp_data_ports: Vec<u16> = if trace.name.starts_with("bsdudp") {
        trace
            .datagrams
            .iter()
            .filter_map(|d| {
                Datagram::parse(&d.bytes)
                    .ok()
                    .filter(|p| p.ptype == PacketType::Rep)
                    .and_then(|p| connect_ids(&p.body))
            })
            .map(|ids| u16::try_from(id_of(&ids, "DATA")).expect("a port"))
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for c in &trace.conns {
        let framed = (trace.name.starts_with("bsdtcp") && c.touches_port(10080))
            || bsdudp_data_ports.contains(&port_of(&c.b));
        if framed {
            out.push((c, "a2b", &c.a2b[..]));
            out.push((c, "b2a", &c.b2a[..]));
        }
    }
    out
}

/// Splits `bytes` into reads of the given sizes (cycled).
fn cut<'a>(bytes: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = bytes;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

fn whole_frames(bytes: &[u8], sizes: &[usize]) -> Vec<(u32, Vec<u8>)> {
    let mut reader = FrameReader::new();
    let mut out = Vec::new();
    for piece in cut(bytes, sizes) {
        let mut input = piece;
        while let Some(f) = reader.next(&mut input).expect("valid framing") {
            out.push((f.handle, f.payload.into_owned()));
        }
        assert!(input.is_empty());
    }
    reader.finish().expect("stream ends between frames");
    out
}

const CHUNKINGS: &[&[usize]] = &[
    &[usize::MAX],
    &[1],
    &[7],
    &[8],
    &[4096],
    &[32768 + 3],
    &[
        1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597,
    ],
];

#[test]
fn every_datagram_parses_and_reencodes_byte_identically() {
    let mut count = 0;
    for trace in all_traces() {
        for d in &trace.datagrams {
            let where_ = format!("{}/{}", trace.name, d.file);
            assert!(d.bytes.len() <= udp::MAX_DGRAM, "{where_}");
            let p = Datagram::parse(&d.bytes).unwrap_or_else(|e| panic!("{where_}: {e}"));
            assert_eq!(p.version, b"3.5", "{where_}");
            assert_eq!(
                p.to_vec().unwrap(),
                d.bytes,
                "{where_} re-encodes differently"
            );
            // Requests go to the client and carry the server's user; nothing else has a
            // SECURITY line.
            assert_eq!(
                p.ptype == PacketType::Req,
                d.to_client && p.security_line().is_some(),
                "{where_}"
            );
            if p.ptype == PacketType::Req {
                assert_eq!(p.security_user(), Some(&b"backup"[..]), "{where_}");
                assert!(
                    p.body_without_security().starts_with(b"SERVICE "),
                    "{where_}"
                );
            }
            count += 1;
        }
    }
    assert_eq!(count, 69, "datagram count of the fixtures changed");
}

#[test]
fn udp_packet_type_sequences_match_the_real_exchanges() {
    let expected: &[(&str, &str)] = &[
        ("bsd-amcheck", "REQ ACK REP ACK REQ ACK REP ACK"),
        (
            "bsd-amdump",
            "REQ ACK REP ACK REQ ACK PREP REP ACK REQ ACK REP ACK REQ ACK REP ACK",
        ),
        ("bsd-error-amandahosts-amcheck", "REQ NAK"),
        (
            "bsd-error-missing-dle-amcheck",
            "REQ ACK REP ACK REQ ACK REP ACK",
        ),
        ("bsdudp-amcheck", "REQ ACK REP ACK REQ ACK REP ACK"),
        (
            "bsdudp-amdump",
            "REQ ACK REP ACK REQ ACK PREP REP ACK REQ ACK REP ACK REQ ACK REP ACK",
        ),
        // The selfcheck REQ was lost and re-sent after 10 s (spec §3.3).
        ("xinetd-bsd-amcheck", "REQ ACK REP ACK REQ REQ ACK REP ACK"),
    ];
    for &(name, want) in expected {
        let trace = load(name);
        let got: Vec<&str> = trace
            .datagrams
            .iter()
            .map(|d| Datagram::parse(&d.bytes).unwrap().ptype.name())
            .collect();
        assert_eq!(got.join(" "), want, "{name}");
    }
}

#[test]
fn replies_echo_the_request_handle_and_sequence() {
    for trace in all_traces() {
        let mut current: Option<(Vec<u8>, i32)> = None;
        for d in &trace.datagrams {
            let p = Datagram::parse(&d.bytes).unwrap();
            if p.ptype == PacketType::Req {
                let handle = std::str::from_utf8(p.handle).unwrap();
                let n = handle.strip_prefix("000-").expect("server handle form");
                assert_eq!(
                    udp::server_handle(u32::from_str_radix(n, 16).unwrap()),
                    handle
                );
                current = Some((p.handle.to_vec(), p.seq));
            } else {
                let (h, s) = current.as_ref().expect("a REQ comes first");
                assert_eq!((p.handle, p.seq), (&h[..], *s), "{}/{}", trace.name, d.file);
            }
        }
    }
    // A retransmitted REQ is byte-identical to the original.
    let x = load("xinetd-bsd-amcheck");
    assert_eq!(x.datagrams[4].bytes, x.datagrams[5].bytes);
}

#[test]
fn udp_amandahosts_refusal_is_a_nak_with_the_exact_text() {
    let trace = load("bsd-error-amandahosts-amcheck");
    let nak = Datagram::parse(&trace.datagrams[1].bytes).unwrap();
    assert_eq!(nak.ptype, PacketType::Nak);
    assert_eq!(
        &*nak.body,
        &b"ERROR user backup from localhost is not allowed to execute the service noop: \
           Please add the line \"localhost backup amdump\" to /var/backups/.amandahosts on the client\n"[..]
    );
}

#[test]
fn framed_streams_decode_under_any_chunking_and_reencode_byte_identically() {
    let mut streams = 0;
    let mut frames_seen = 0;
    for trace in all_traces() {
        for (conn, dir, bytes) in framed_streams(&trace) {
            let where_ = format!("{} tcp{}-{dir}", trace.name, conn.index);
            let reference = whole_frames(bytes, CHUNKINGS[0]);
            for sizes in CHUNKINGS {
                assert_eq!(
                    whole_frames(bytes, sizes),
                    reference,
                    "{where_} cut as {sizes:?}"
                );
            }
            let mut again = Vec::new();
            for (handle, payload) in &reference {
                frame::encode_frame(*handle, payload, &mut again).unwrap();
            }
            assert_eq!(again, bytes, "{where_} re-encodes differently");

            // The streaming decoder, relaying the borrowed chunks, reproduces the stream.
            for sizes in CHUNKINGS {
                let mut dec = Decoder::new();
                let mut relay = Vec::with_capacity(bytes.len());
                for piece in cut(bytes, sizes) {
                    let mut input = piece;
                    while let Some(ev) = dec.next(&mut input).unwrap() {
                        match ev {
                            Event::Start(h) => relay.extend_from_slice(&h.to_bytes()),
                            Event::Data { chunk, .. } => relay.extend_from_slice(chunk),
                            Event::Eof { handle } => {
                                relay.extend_from_slice(&frame::eof_frame(handle))
                            }
                        }
                    }
                }
                dec.finish().unwrap();
                assert_eq!(relay, bytes, "{where_} streamed as {sizes:?}");
            }
            // amandad writes data in blocks of at most NETWORK_BLOCK_BYTES.
            assert!(
                reference
                    .iter()
                    .all(|(_, p)| p.len() <= frame::NETWORK_BLOCK_BYTES)
            );
            streams += 1;
            frames_seen += reference.len();
        }
    }
    // 6 bsdtcp control connections and 2 bsdudp data connections, both directions.
    assert_eq!(streams, 16);
    assert!(frames_seen > 100, "{frames_seen}");
}

/// The control packets of each framed stream, in order: (handle, type or None for EOF).
fn control_packets(bytes: &[u8]) -> Vec<(u32, Option<tcp::Packet<'static>>)> {
    whole_frames(bytes, &[usize::MAX])
        .into_iter()
        .filter(|(h, _)| tcp::is_control_handle(*h))
        .map(|(h, p)| {
            if p.is_empty() {
                (h, None)
            } else {
                let packet = tcp::Packet::parse(&p)
                    .expect("control payload")
                    .into_owned();
                assert_eq!(
                    packet.to_vec().unwrap(),
                    p,
                    "control payload re-encodes differently"
                );
                (h, Some(packet))
            }
        })
        .collect()
}

fn render(packets: &[(u32, Option<tcp::Packet<'_>>)]) -> String {
    packets
        .iter()
        .map(|(h, p)| format!("{}/{h}", p.as_ref().map_or("EOF", |p| p.ptype.name())))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_control_payload_parses_and_reencodes_identically_in_the_real_order() {
    let expected: &[(&str, u32, &str, &str)] = &[
        (
            "bsdtcp-amcheck",
            0,
            "REQ/1 ACK/1 EOF/1 REQ/2 ACK/2 EOF/2",
            "ACK/1 REP/1 EOF/1 ACK/2 REP/2 EOF/2",
        ),
        (
            "bsdtcp-amdump",
            0,
            "REQ/1 ACK/1 EOF/1 REQ/2 ACK/2 EOF/2",
            "ACK/1 REP/1 EOF/1 ACK/2 PREP/2 REP/2 EOF/2",
        ),
        ("bsdtcp-amdump", 2, "REQ/1 ACK/1 EOF/1", "ACK/1 REP/1 EOF/1"),
        ("bsdtcp-amdump", 4, "REQ/2 ACK/2 EOF/2", "ACK/2 REP/2 EOF/2"),
        (
            "bsdtcp-error-amandahosts-amcheck",
            0,
            "REQ/1 EOF/1",
            "NAK/1 EOF/1",
        ),
        (
            "bsdtcp-error-missing-dle-amcheck",
            0,
            "REQ/1 ACK/1 EOF/1 REQ/2 ACK/2 EOF/2",
            "ACK/1 REP/1 EOF/1 ACK/2 REP/2 EOF/2",
        ),
    ];
    for &(name, index, a2b, b2a) in expected {
        let trace = load(name);
        let conn = trace.conns.iter().find(|c| c.index == index).unwrap();
        assert_eq!(port_of(&conn.b), 10080);
        let server = control_packets(&conn.a2b);
        assert_eq!(render(&server), a2b, "{name} tcp{index} server side");
        assert_eq!(
            render(&control_packets(&conn.b2a)),
            b2a,
            "{name} tcp{index} client side"
        );
        for (_, p) in &server {
            if let Some(p) = p.as_ref().filter(|p| p.ptype == PacketType::Req) {
                assert_eq!(p.security_user(), Some(&b"backup"[..]));
                // The real server's REQs pass the client's wire checks (source port 516).
                let peer = Peer {
                    name: "localhost",
                    port: port_of(&conn.a),
                };
                assert!(matches!(
                    security::check_received(p.ptype, peer, PortRule::Reserved, &p.body),
                    Ok(Checked::Request(_))
                ));
            }
        }
    }
}

#[test]
fn every_real_request_passes_the_wire_checks_and_splits_into_service_and_arguments() {
    let mut requests = 0;
    for trace in all_traces() {
        for d in trace.datagrams.iter().filter(|d| d.to_client) {
            let p = Datagram::parse(&d.bytes).unwrap();
            if p.ptype != PacketType::Req {
                continue;
            }
            let peer = Peer {
                name: "localhost",
                port: 849,
            };
            let Ok(Checked::Request(r)) =
                security::check_received(p.ptype, peer, PortRule::Reserved, &p.body)
            else {
                panic!("{}/{} refused", trace.name, d.file)
            };
            assert_eq!(r.remote_user, b"backup");
            let s = security::parse_service_request(r.body).unwrap();
            assert_eq!(s.service, r.service);
            assert!(s.arguments.starts_with(b"OPTIONS features="));
            assert!(
                ["noop", "selfcheck", "sendsize", "sendbackup"]
                    .contains(&std::str::from_utf8(s.service).unwrap())
            );
            // From an unreserved port the same REQ is refused like the real amandad does.
            let unsafe_peer = Peer {
                name: "localhost",
                port: 40000,
            };
            let e = security::check_received(p.ptype, unsafe_peer, PortRule::Reserved, &p.body)
                .unwrap_err();
            assert_eq!(
                e.nak_body(),
                b"ERROR host localhost: port 40000 not secure\n"
            );
            requests += 1;
        }
    }
    assert_eq!(requests, 18);
}

#[test]
fn bsdtcp_amandahosts_refusal_is_a_nak_frame_with_the_exact_text() {
    let trace = load("bsdtcp-error-amandahosts-amcheck");
    let packets = control_packets(&trace.conns[0].b2a);
    let (handle, Some(nak)) = &packets[0] else {
        panic!("no NAK")
    };
    assert_eq!(*handle, 1);
    assert_eq!(nak.ptype, PacketType::Nak);
    assert_eq!(
        &*nak.body,
        &b"ERROR user backup from localhost is not allowed to execute the service noop: \
           Please add the line \"localhost backup amdump\" to /var/backups/.amandahosts on the client\n"[..]
    );
    let mut rebuilt = Vec::new();
    tcp::Packet::new(PacketType::Nak, nak.body.to_vec())
        .encode_frame(1, &mut rebuilt)
        .unwrap();
    rebuilt.extend_from_slice(&frame::eof_frame(1));
    assert_eq!(rebuilt, trace.conns[0].b2a);
}

#[test]
fn dump_header_connection_is_reported_as_stray_text_not_frames() {
    // bsdtcp-amdump tcp1 is the dumper sending the 32 KiB dump-file header to the taper:
    // plain text, not Amanda framing. The frame decoder says so, with the text.
    let trace = load("bsdtcp-amdump");
    let header = &trace.conns.iter().find(|c| c.index == 1).unwrap().a2b;
    match Decoder::new().next(&mut &header[..]) {
        Err(DecodeError::TooLong {
            text: Some(text), ..
        }) => {
            assert!(text.starts_with("AMANDA: "), "{text}");
            assert!(text.len() <= frame::MAX_STRAY_TEXT);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Spec test vectors

#[test]
fn tv1_noop_over_udp_is_byte_exact() {
    let seq = udp::sequence_from_time(1_700_000_000, 123_456);
    assert_eq!(seq, 1_699_877_696);
    let handle = udp::server_handle(0);
    let req_body = format!("SERVICE noop\nOPTIONS features={F};\n");
    let req = Datagram::request(handle.as_bytes(), seq, b"backup", req_body.as_bytes()).unwrap();
    let ack = Datagram::new(PacketType::Ack, handle.as_bytes(), seq, &b""[..]);
    let rep_body = format!("OPTIONS features={F};\n");
    let rep = Datagram::new(PacketType::Rep, handle.as_bytes(), seq, rep_body.as_bytes());
    let want = [
        format!(
            "Amanda 3.5 REQ HANDLE 000-00000000 SEQ 1699877696\nSECURITY USER backup\n{req_body}"
        ),
        "Amanda 3.5 ACK HANDLE 000-00000000 SEQ 1699877696\n".to_owned(),
        format!("Amanda 3.5 REP HANDLE 000-00000000 SEQ 1699877696\n{rep_body}"),
        "Amanda 3.5 ACK HANDLE 000-00000000 SEQ 1699877696\n".to_owned(),
    ];
    for (p, w) in [&req, &ack, &rep, &ack].into_iter().zip(&want) {
        assert_eq!(p.to_vec().unwrap(), w.as_bytes());
        assert_eq!(&Datagram::parse(w.as_bytes()).unwrap(), p);
    }
    // The real bsd noop REQ differs only in its sequence number.
    let real = &load("bsd-amcheck").datagrams[0].bytes;
    let real = Datagram::parse(real).unwrap();
    assert_eq!(real.body, req.body);
}

#[test]
fn tv2_noop_over_bsdtcp_is_byte_exact() {
    let req = tcp::Packet::request(
        b"backup",
        format!("SERVICE noop\nOPTIONS features={F};\n").as_bytes(),
    )
    .unwrap();
    let rep_body = format!("OPTIONS features={F};\n");
    let rep = tcp::Packet::new(PacketType::Rep, rep_body.as_bytes());
    let mut server = Vec::new();
    req.encode_frame(1, &mut server).unwrap();
    assert_eq!(&server[..9], &[0, 0, 0, 0x5d, 0, 0, 0, 1, 0]);
    assert_eq!(server.len(), 8 + 93);
    tcp::Packet::ack().encode_frame(1, &mut server).unwrap();
    server.extend_from_slice(&frame::eof_frame(1));
    let mut client = Vec::new();
    tcp::Packet::ack().encode_frame(1, &mut client).unwrap();
    assert_eq!(client, [0, 0, 0, 2, 0, 0, 0, 1, 3, 0]);
    rep.encode_frame(1, &mut client).unwrap();
    assert_eq!(&client[10..19], &[0, 0, 0, 0x3b, 0, 0, 0, 1, 1]);
    client.extend_from_slice(&frame::eof_frame(1));
    assert_eq!(&client[client.len() - 8..], &[0, 0, 0, 0, 0, 0, 0, 1]);

    // The real bsdtcp amcheck's noop exchange on handle 1 is exactly this.
    let trace = load("bsdtcp-amcheck");
    let conn = &trace.conns[0];
    assert!(conn.a2b.starts_with(&server[..server.len() - 18]));
    let real_rep = control_packets(&conn.b2a);
    assert_eq!(real_rep[1].1.as_ref().unwrap().ptype, PacketType::Rep);
}

#[test]
fn tv11_unknown_service_nak_is_byte_exact() {
    let text = b"ERROR frobnicate: invalid service, add 'frobnicate' as argument to amandad\n";
    let udp = Datagram::new(PacketType::Nak, b"000-00000004", 1_699_912_999, &text[..]);
    let mut want = b"Amanda 3.5 NAK HANDLE 000-00000004 SEQ 1699912999\n".to_vec();
    want.extend_from_slice(text);
    assert_eq!(udp.to_vec().unwrap(), want);
    let mut framed = Vec::new();
    tcp::Packet::new(PacketType::Nak, &text[..])
        .encode_frame(1, &mut framed)
        .unwrap();
    let mut want = vec![0, 0, 0, 0x4d, 0, 0, 0, 1, 4];
    want.extend_from_slice(text);
    want.push(0);
    assert_eq!(framed, want);
    // The request itself passes the wire checks; the service name is what gets refused.
    let body = format!("SECURITY USER backup\nSERVICE frobnicate\nOPTIONS features={F};\n");
    let peer = Peer {
        name: "server.example.com",
        port: 852,
    };
    let Ok(Checked::Request(r)) =
        security::check_received(PacketType::Req, peer, PortRule::Reserved, body.as_bytes())
    else {
        panic!()
    };
    assert_eq!(
        security::parse_service_request(r.body).unwrap().service,
        b"frobnicate"
    );
}

#[test]
fn tv12_amandahosts_nak_is_byte_exact() {
    let msg = "user backup from server.example.com is not allowed to execute the service noop: \
               Please add the line \"server.example.com backup amdump\" to /var/backups/.amandahosts on the client";
    let body = security::nak_body(msg.as_bytes());
    let d = Datagram::new(PacketType::Nak, b"000-00000000", 1_699_877_696, &body[..]);
    let want = format!("Amanda 3.5 NAK HANDLE 000-00000000 SEQ 1699877696\nERROR {msg}\n");
    assert_eq!(d.to_vec().unwrap(), want.as_bytes());
}

#[test]
fn tv13_unreserved_port_nak_is_byte_exact() {
    let peer = Peer {
        name: "server.example.com",
        port: 40123,
    };
    let body = format!("SECURITY USER backup\nSERVICE noop\nOPTIONS features={F};\n");
    let err = security::check_received(PacketType::Req, peer, PortRule::Reserved, body.as_bytes())
        .unwrap_err();
    let nak = err.nak_body();
    let d = Datagram::new(PacketType::Nak, b"000-00000000", 1_699_877_696, &nak[..]);
    assert_eq!(
        d.to_vec().unwrap(),
        b"Amanda 3.5 NAK HANDLE 000-00000000 SEQ 1699877696\nERROR host server.example.com: port 40123 not secure\n"
    );
}

#[test]
fn preread_refusal_frame_parses_as_a_nak_missing_its_first_character() {
    let mut wire = Vec::new();
    security::preread_refusal_frame(
        b"localhost doesn't resolve to 127.0.0.2",
        RefusalStyle::Amanda351,
        &mut wire,
    )
    .unwrap();
    let mut input = &wire[..];
    let f = FrameReader::new().next(&mut input).unwrap().unwrap();
    assert_eq!(f.handle, 1);
    let p = tcp::Packet::parse(&f.payload).unwrap();
    assert_eq!(p.ptype, PacketType::Nak);
    assert_eq!(&*p.body, b"ocalhost doesn't resolve to 127.0.0.2");
}

// ---------------------------------------------------------------------------------------
// CRC

/// The `sendbackup: <kind>-CRC <crc>:<size>` values of a MESG stream (a small local parse;
/// MESG parsing proper is `proto::mesg`).
fn mesg_crcs(mesg: &[u8]) -> BTreeMap<String, CrcValue> {
    String::from_utf8_lossy(mesg)
        .lines()
        .filter_map(|l| l.strip_prefix("sendbackup: "))
        .filter_map(|l| l.split_once("-CRC "))
        .map(|(kind, v)| {
            (
                kind.to_owned(),
                CrcValue::parse(v.as_bytes()).expect("CRC text"),
            )
        })
        .collect()
}

fn crc_of_frames(frames: &[(u32, Vec<u8>)], handle: u32) -> Crc32c {
    let mut crc = Crc32c::new();
    for (_, p) in frames.iter().filter(|(h, _)| *h == handle) {
        crc.update(p);
    }
    crc
}

fn frames_on(frames: &[(u32, Vec<u8>)], handle: u32) -> Vec<u8> {
    frames
        .iter()
        .filter(|(h, _)| *h == handle)
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// [`check_dump`] of a dump whose DATA and MESG are frames among `frames`, on the handles
/// the CONNECT line `ids` names.
fn check_framed_dump(where_: &str, frames: &[(u32, Vec<u8>)], ids: &[(String, u32)]) {
    let mesg = frames_on(frames, id_of(ids, "MESG"));
    check_dump(where_, crc_of_frames(frames, id_of(ids, "DATA")), &mesg);
}

fn check_dump(where_: &str, data: Crc32c, mesg: &[u8]) {
    let crcs = mesg_crcs(mesg);
    let client = crcs
        .get("client")
        .unwrap_or_else(|| panic!("{where_}: no client-CRC"));
    assert_eq!(
        &data.value(),
        client,
        "{where_}: DATA CRC differs from client-CRC"
    );
    // No client-side compression in these dumps: the native CRC is the same.
    assert_eq!(crcs.get("native"), Some(client), "{where_}");
    assert!(data.bytes() > 0);
}

#[test]
fn crc32c_of_every_dumps_data_matches_the_client_crc() {
    let mut dumps = 0;

    // bsd: DATA and MESG are separate raw TCP connections to the announced ports.
    let bsd = load("bsd-amdump");
    for d in &bsd.datagrams {
        let p = Datagram::parse(&d.bytes).unwrap();
        let Some(ids) = connect_ids(&p.body).filter(|_| p.ptype == PacketType::Rep) else {
            continue;
        };
        let conn_to = |name: &str| {
            let port = u16::try_from(id_of(&ids, name)).unwrap();
            bsd.conns
                .iter()
                .find(|c| port_of(&c.b) == port)
                .expect(name)
        };
        let mut crc = Crc32c::new();
        for piece in cut(&conn_to("DATA").b2a, &[4096]) {
            crc.update(piece);
        }
        check_dump(&format!("bsd-amdump {}", d.file), crc, &conn_to("MESG").b2a);
        dumps += 1;
    }

    // bsdudp: one data connection to the DATA port; DATA frames carry handle = that port.
    let bsdudp = load("bsdudp-amdump");
    for d in &bsdudp.datagrams {
        let p = Datagram::parse(&d.bytes).unwrap();
        let Some(ids) = connect_ids(&p.body).filter(|_| p.ptype == PacketType::Rep) else {
            continue;
        };
        let data_port = id_of(&ids, "DATA");
        let conn = bsdudp
            .conns
            .iter()
            .find(|c| u32::from(port_of(&c.b)) == data_port)
            .unwrap();
        let frames = whole_frames(&conn.b2a, &[usize::MAX]);
        check_framed_dump(&format!("bsdudp-amdump {}", d.file), &frames, &ids);
        dumps += 1;
    }

    // bsdtcp: everything on the control connection; the REP's CONNECT line names the handles.
    let bsdtcp = load("bsdtcp-amdump");
    for conn in bsdtcp.conns.iter().filter(|c| c.touches_port(10080)) {
        let frames = whole_frames(&conn.b2a, &[usize::MAX]);
        for (h, payload) in frames
            .iter()
            .filter(|(h, p)| tcp::is_control_handle(*h) && !p.is_empty())
        {
            let p = tcp::Packet::parse(payload).unwrap();
            let Some(ids) = connect_ids(&p.body).filter(|_| p.ptype == PacketType::Rep) else {
                continue;
            };
            assert!(!tcp::is_control_handle(id_of(&ids, "DATA")));
            let name = format!("bsdtcp-amdump tcp{} handle {h}", conn.index);
            check_framed_dump(&name, &frames, &ids);
            dumps += 1;
        }
    }

    // Two DLEs per amdump, three auths.
    assert_eq!(dumps, 6);
}

#[test]
fn crc_text_of_a_real_dump_round_trips() {
    let v = CrcValue::parse(b"328bdcbf:10240").unwrap();
    assert_eq!(
        v,
        CrcValue {
            crc: 0x328b_dcbf,
            size: 10240
        }
    );
    assert_eq!(v.to_string(), "328bdcbf:10240");
}
