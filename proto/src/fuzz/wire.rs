//! Fuzz entry points for the wire codecs: UDP datagrams, TCP frames, TCP control packets,
//! the security checks and CRC texts.
//!
//! Each entry point takes arbitrary bytes, must never panic, and asserts the codec's
//! invariants (an assertion failure is a finding). They run under cargo-fuzz
//! (`fuzz/fuzz_targets/<name>.rs`) and, over the committed corpora, in `cargo test`.

use crate::crc::{Crc32c, CrcValue};
use crate::frame::{self, DecodeError, Decoder, Event, FrameReader};
use crate::pkt::PacketType;
use crate::proxy::{self, Handshake};
use crate::security::{self, Checked, Peer, PortRule, SecurityLine};
use crate::tcp;
use crate::udp::{self, Datagram};

/// Fuzz targets of this module: (name under fuzz/corpus/, entry point).
pub const TARGETS: &[super::Target] = &[
    ("udp_datagram", udp_datagram),
    ("frame_stream", frame_stream),
    ("tcp_packet", tcp_packet),
    ("security_intake", security_intake),
    ("crc_text", crc_text),
    ("http_connect_answer", http_connect_answer),
    ("dialin_lines", dialin_lines),
];

/// A datagram parses or not; a parsed one re-encodes (when its header fits) to bytes that
/// parse back to the same packet, and the accessors agree with each other.
pub fn udp_datagram(data: &[u8]) {
    let Ok(d) = Datagram::parse(data) else {
        return;
    };
    assert!(memchr::memchr(0, &d.body).is_none());
    assert!(!d.handle.is_empty());
    let without = d.body_without_security();
    match d.security_line() {
        Some(line) => assert_eq!(line.len() + 1 + without.len(), d.body.len()),
        None => assert_eq!(without, &d.body[..]),
    }
    let _ = d.security_user();
    match d.to_vec() {
        Ok(wire) => {
            assert_eq!(wire.len(), d.encoded_len());
            assert!(wire.len() <= udp::MAX_DGRAM);
            let again = Datagram::parse(&wire).expect("re-encoded datagram must parse");
            assert_eq!(again, d);
            // Encoding is a fixed point: what we wrote re-encodes to itself.
            assert_eq!(again.to_vec().as_deref(), Ok(&wire[..]));
            // A datagram that already is in canonical form comes back byte-identical.
            let seen = data.get(..data.len().min(udp::MAX_DGRAM)).unwrap_or(data);
            let seen = seen.split(|&b| b == 0).next().unwrap_or(seen);
            if seen.starts_with(&wire[..d.header_len()]) {
                assert_eq!(seen, &wire[..]);
            }
        }
        Err(udp::EncodeError::HeaderTooLong { .. } | udp::EncodeError::TooLong { .. }) => {}
        Err(e) => panic!("parsed datagram {d:?} does not encode: {e}"),
    }
}

/// Chunk sizes from the control prefix, cycled (1..=256 bytes each).
fn chunks<'a>(control: &'a [u8], mut stream: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if stream.is_empty() {
            return None;
        }
        let size = control
            .get(i % control.len().max(1))
            .map_or(stream.len(), |&b| usize::from(b) + 1);
        i += 1;
        let (chunk, rest) = stream.split_at(size.min(stream.len()));
        stream = rest;
        Some(chunk)
    })
}

/// Whether two decode errors are the same failure (the stray text depends on chunking).
fn same_failure(a: &DecodeError, b: &DecodeError) -> bool {
    match (a, b) {
        (
            DecodeError::TooLong { len, handle, text },
            DecodeError::TooLong {
                len: l2,
                handle: h2,
                text: t2,
            },
        ) => {
            len == l2
                && handle == h2
                && text.is_some() == t2.is_some()
                && match (text, t2) {
                    // Both start with the 8 header bytes.
                    (Some(x), Some(y)) => x.get(..8) == y.get(..8),
                    _ => true,
                }
        }
        _ => a == b,
    }
}

/// Hands each piece to `step` until `step` says the piece is used up (`Ok(false)`); stops at
/// the first error.
fn feed<'a, E>(
    pieces: impl Iterator<Item = &'a [u8]>,
    mut step: impl FnMut(&mut &'a [u8]) -> Result<bool, E>,
) -> Result<(), E> {
    for piece in pieces {
        let mut input = piece;
        while step(&mut input)? {}
    }
    Ok(())
}

/// The frame decoders under adversarial chunking: the first 8 bytes choose the read sizes,
/// the rest is the byte stream. The streaming decoder, re-encoding what it yields, must give
/// back exactly the bytes it consumed; the whole-frame reader must yield the same frames; and
/// the outcome must not depend on how the stream was cut.
pub fn frame_stream(data: &[u8]) {
    let (control, stream) = data.split_at(data.len().min(8));

    // Reference: the whole stream in one input.
    let mut reference = Vec::new();
    let mut dec = Decoder::new();
    let mut input = stream;
    let reference_result = loop {
        match dec.next(&mut input) {
            Ok(Some(Event::Eof { handle })) => reference.push((handle, Vec::new())),
            Ok(Some(Event::Start(_))) => {}
            Ok(Some(Event::Data { handle, chunk, end })) => {
                assert!(!chunk.is_empty());
                if end {
                    reference.push((handle, chunk.to_vec()));
                } else {
                    // Only a payload cut by the end of the stream comes in pieces here.
                    assert!(input.is_empty());
                }
            }
            Ok(None) => break dec.finish(),
            Err(e) => break Err(e),
        }
    };

    // Streaming, chunked: re-encode the events.
    let mut dec = Decoder::new();
    let mut reencoded = Vec::new();
    let mut consumed = 0usize;
    let streamed_result = feed(chunks(control, stream), |input| {
        let before = input.len();
        let ev = dec.next(input);
        consumed += before - input.len();
        match ev? {
            Some(Event::Start(h)) => {
                assert!(h.len > 0 && h.len <= frame::MAX_FRAME_LEN);
                reencoded.extend_from_slice(&h.to_bytes());
            }
            Some(Event::Data { chunk, .. }) => reencoded.extend_from_slice(chunk),
            Some(Event::Eof { handle }) => reencoded.extend_from_slice(&frame::eof_frame(handle)),
            None => return Ok(false),
        }
        Ok(true)
    })
    .and_then(|()| dec.finish());
    match &streamed_result {
        // Everything consumed, except a partial header still buffered in the decoder.
        Ok(()) => assert_eq!(reencoded, stream),
        Err(DecodeError::TooLong { .. }) => {}
        Err(_) => assert!(stream.starts_with(&reencoded) && consumed == stream.len()),
    }

    // Whole frames, chunked.
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let reader_result = feed(chunks(control, stream), |input| {
        let Some(f) = reader.next(input)? else {
            return Ok(false);
        };
        frames.push((f.handle, f.payload.into_owned()));
        Ok(true)
    })
    .and_then(|()| reader.finish());

    assert_eq!(frames, reference);
    match (&reference_result, &streamed_result, &reader_result) {
        (Ok(()), Ok(()), Ok(())) => {}
        (Err(a), Err(b), Err(c)) => assert!(
            same_failure(a, b) && same_failure(a, c),
            "{a:?} {b:?} {c:?}"
        ),
        other => panic!("outcome depends on chunking: {other:?}"),
    }
}

/// A frame payload parses as a control packet or not; a parsed one re-encodes to a payload
/// (and a frame) that decodes back to the same packet.
pub fn tcp_packet(data: &[u8]) {
    let Ok(p) = tcp::Packet::parse(data) else {
        assert!(data.is_empty() || PacketType::from_code(data[0]).is_none());
        return;
    };
    let _ = p.security_user();
    let _ = p.body_without_security();
    let payload = p.to_vec().expect("parsed packet must encode");
    assert_eq!(
        tcp::Packet::parse(&payload).expect("re-encoded packet must parse"),
        p
    );
    // Canonical payloads (body, one NUL, nothing after) re-encode byte-identically.
    if let [_, body @ .., 0] = data
        && memchr::memchr(0, body).is_none()
    {
        assert_eq!(payload, data);
    }
    let mut wire = Vec::new();
    p.encode_frame(7, &mut wire)
        .expect("parsed packet must frame");
    let mut reader = FrameReader::new();
    let mut input = &wire[..];
    let f = reader
        .next(&mut input)
        .expect("frame decodes")
        .expect("frame complete");
    assert_eq!(f.handle, 7);
    assert_eq!(
        tcp::Packet::parse(&f.payload).expect("framed packet parses"),
        p
    );
}

/// The REQ intake: byte 0 picks the packet type and the port rule, bytes 1-2 the peer port,
/// the rest is the body. Accepted requests must satisfy what the checks promise; every
/// refusal must give a well-formed NAK.
pub fn security_intake(data: &[u8]) {
    let (head, body) = data.split_at(data.len().min(3));
    let [sel, p0, p1] = <[u8; 3]>::try_from(head).unwrap_or([0, 0, 0]);
    let ptype = PacketType::ALL[usize::from(sel % 5)];
    let rule = if sel & 0x80 == 0 {
        PortRule::Reserved
    } else {
        PortRule::Any
    };
    let peer = Peer {
        name: "fuzz.example.com",
        port: u16::from_be_bytes([p0, p1]),
    };
    let check_nak = |e: &security::RequestError| {
        let nak = e.nak_body();
        assert!(nak.starts_with(b"ERROR ") && nak.ends_with(b"\n"));
        assert_eq!(nak.len(), e.message().len() + 7);
    };
    match security::check_received(ptype, peer, rule, body) {
        Ok(Checked::Request(r)) => {
            assert_eq!(ptype, PacketType::Req);
            assert!(rule == PortRule::Any || peer.port < security::IPPORT_RESERVED);
            assert!(!r.remote_user.is_empty() && !r.remote_user.contains(&b'\n'));
            assert!(!r.service.is_empty() && !r.service.contains(&b'\n'));
            assert!(r.body.starts_with(b"SERVICE "));
            match security::parse_service_request(r.body) {
                Ok(s) => {
                    assert!(!s.service.is_empty() && !s.arguments.is_empty());
                    assert!(!s.service.contains(&b' ') && !s.service.contains(&b'\n'));
                }
                Err(e) => check_nak(&e),
            }
        }
        Ok(Checked::Other { ptype: t, body: b }) => {
            assert_eq!(t, ptype);
            assert!(body.ends_with(b));
        }
        Err(e) => {
            assert_eq!(ptype, PacketType::Req);
            check_nak(&e);
        }
    }
    let mut out = Vec::new();
    let style = if sel & 0x40 == 0 {
        security::RefusalStyle::Amanda351
    } else {
        security::RefusalStyle::Intact
    };
    security::preread_refusal_frame(body, style, &mut out).expect("short text frames");
    let mut input = &out[..];
    let f = FrameReader::new()
        .next(&mut input)
        .expect("decodes")
        .expect("complete");
    assert_eq!(f.handle, security::PREREAD_NAK_HANDLE);
}

/// CRC texts parse like `sscanf("%x:%lld")` or not; a parsed value prints and parses back;
/// the streaming CRC does not depend on how the data is cut.
pub fn crc_text(data: &[u8]) {
    if let Ok(v) = CrcValue::parse(data) {
        assert_eq!(CrcValue::parse(v.to_string().as_bytes()), Ok(v));
    }
    let mut whole = Crc32c::new();
    whole.update(data);
    let mut parts = Crc32c::new();
    let (a, b) = data.split_at(data.len() / 3);
    parts.update(a);
    parts.update(&[]);
    parts.update(b);
    assert_eq!(whole, parts);
    assert_eq!(whole.crc(), crc32c::crc32c(data));
}

/// An HTTP proxy's answer to CONNECT (issue 14), fed in chunks whose sizes come from the
/// first byte: never more than the header bound is held, a verdict does not depend on the
/// chunking, and a tunnel's bytes are exactly what followed the header.
pub fn http_connect_answer(data: &[u8]) {
    let Some((&step, answer)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let whole = Handshake::new("p:1", "c:2", false).handle_bytes(answer);
    let mut h = Handshake::new("p:1", "c:2", false);
    let mut chunked = Ok(None);
    let mut at = 0;
    while at < answer.len() {
        let end = (at + step).min(answer.len());
        chunked = h.handle_bytes(&answer[at..end]);
        assert!(h.received() <= proxy::MAX_ANSWER_HEADER);
        match &mut chunked {
            Ok(None) => at = end,
            Ok(Some(e)) => {
                e.rest.extend_from_slice(&answer[end..]);
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(whole, chunked);
    if let Ok(Some(e)) = &whole {
        assert!((200..300).contains(&e.status));
        assert!(answer.ends_with(&e.rest));
    }
    if let Err(e) = &whole {
        let _ = e.to_string();
    }
    // The URL parser too: no panic on any text.
    if let Ok(text) = std::str::from_utf8(answer)
        && let Ok(u) = proxy::ProxyUrl::parse(text)
    {
        assert!(proxy::is_host(&u.host) && u.port != 0);
        let req = proxy::connect_request(&u.host, u.port, u.credentials.as_ref()).unwrap();
        assert_eq!(
            req.iter().filter(|&&b| b == b'\n').count(),
            if u.credentials.is_some() { 4 } else { 3 }
        );
    }
}

/// The dial-in protocol's inputs (issue 14): a HOLD line, a session preamble, the HOLD
/// request's arguments and the listener's reply. Parsed ones re-encode to themselves; a
/// host name that passes the check can name a file in one directory and nothing else.
pub fn dialin_lines(data: &[u8]) {
    use crate::dialin::{self, HoldRequest, Line};
    if let Ok(l) = Line::parse(data) {
        assert_eq!(Line::parse(&l.encode()), Ok(l));
    }
    if let Ok(t) = dialin::parse_session_preamble(data) {
        let frame = dialin::session_preamble(t);
        assert_eq!(
            dialin::parse_session_preamble(&frame[crate::frame::HEADER_LEN..]),
            Ok(t)
        );
    }
    if let Ok(r) = HoldRequest::parse(data) {
        assert!(dialin::is_safe_host_name(&r.hostname));
        assert!(!r.hostname.contains('/') && !r.hostname.starts_with('.'));
        assert!(!r.config.contains('/'));
    }
    let _ = dialin::parse_hold_reply(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by replaying the fuzz corpus in a debug build: the harness computed
    /// `data.len() - 2` for the one-byte payload `00` (a REQ with no NUL-terminated body).
    #[test]
    fn tcp_packet_target_accepts_a_lone_type_byte() {
        tcp_packet(&[0]);
        tcp_packet(&[3, 0]);
    }

    #[test]
    fn every_target_accepts_empty_and_tiny_inputs() {
        for (name, entry) in TARGETS {
            for data in [&b""[..], b"\0", b"\xff", b"Amanda", b"\0\0\0\0\0\0\0\0\0"] {
                let run = std::panic::catch_unwind(|| entry(data));
                assert!(run.is_ok(), "{name} panicked on {data:?}");
            }
        }
    }
}
