//! Fuzz entry points for the request and reply bodies: OPTIONS lines, REQ bodies, DLEs in
//! XML and legacy form, sendsize and sendbackup replies, selfcheck JSON, MESG lines and
//! the dump-file header, and Amanda's quoting.
//!
//! Each entry point takes arbitrary bytes, must never panic, and asserts the codec's
//! invariants (an assertion failure is a finding): what we encode from a parsed value parses
//! back to the same value, or, where the wire form is lossy, encoding is idempotent.

use crate::dle::Dle;
use crate::dle::legacy::{self, LegacyLine};
use crate::dle::xml::{self, XmlLayout};
use crate::features::Features;
use crate::header::DumpHeader;
use crate::mesg::{DataSummary, DumpTracker, LineSplitter, MesgLine, SplitLine};
use crate::options::Options;
use crate::pkt::PacketType;
use crate::quote;
use crate::request::{RequestBody, ServiceInput};
use crate::selfcheck;
use crate::sendbackup;
use crate::sendsize::SendsizeReply;

/// Fuzz targets of this module: (name under fuzz/corpus/, entry point).
pub const TARGETS: &[super::Target] = &[
    ("options", options),
    ("request", request),
    ("dle_xml", dle_xml),
    ("dle_legacy", dle_legacy),
    ("sendsize_reply", sendsize_reply),
    ("sendbackup_rep", sendbackup_rep),
    ("selfcheck_json", selfcheck_json),
    ("mesg", mesg),
    ("header", header),
    ("quote", quote),
];

/// An OPTIONS value parses; re-encoding the known keys parses back to the same values.
pub fn options(data: &[u8]) {
    let parsed = Options::parse(data);
    for d in &parsed.diagnostics {
        let line = d.error_line();
        assert!(line.starts_with(b"ERROR [") && line.ends_with(b"]\n"));
    }
    let known = Options {
        unknown: Vec::new(),
        ..parsed.options
    };
    let line = known.encode();
    let value = line
        .strip_prefix(b"OPTIONS ")
        .and_then(|l| l.strip_suffix(b"\n"));
    let Some(value) = value else {
        panic!("encode lost its frame")
    };
    let again = Options::parse(value);
    assert!(again.diagnostics.is_empty(), "{:?}", again.diagnostics);
    assert_eq!(
        Options {
            unknown: Vec::new(),
            ..again.options
        },
        known
    );
    let _ = crate::options::reply_features(data);
}

/// A REQ body splits like amandad; a split body re-encodes to an equal split.
pub fn request(data: &[u8]) {
    if let Ok(r) = RequestBody::parse(data) {
        let again = RequestBody::parse(&r.encode());
        assert_eq!(again.as_ref(), Ok(&r));
    }
    let _ = ServiceInput::split(data, &Features::amanda_3_5_1());
    let _ = ServiceInput::split(data, &Features::minimal_gnutar_client());
}

/// DLE XML parses or not; every parsed DLE encodes, in every layout, to XML that parses, and
/// encoding is idempotent.
pub fn dle_xml(data: &[u8]) {
    let f = Features::amanda_3_5_1();
    let _ = xml::parse_dles_text(data);
    let _ = xml::parse_single_dle(data);
    let Ok(dles) = xml::parse_dles(data) else {
        return;
    };
    for layout in [
        XmlLayout::Selfcheck,
        XmlLayout::Sendsize,
        XmlLayout::Sendbackup,
        XmlLayout::HeaderDle,
    ] {
        let once = xml::encode_dles(&dles, layout, &f);
        let back = match xml::parse_dles(&once) {
            Ok(back) => back,
            Err(e) => panic!(
                "{layout:?} encoding does not parse: {e}\n{}",
                String::from_utf8_lossy(&once)
            ),
        };
        let twice = xml::encode_dles(&back, layout, &f);
        assert_eq!(once, twice, "{layout:?} encoding is not idempotent");
    }
}

/// Legacy lines parse or not; a parsed sendbackup line re-encodes to one that parses to the
/// same disk, device and level.
pub fn dle_legacy(data: &[u8]) {
    let f = Features::amanda_3_5_1();
    let _ = LegacyLine::parse_selfcheck(data, &f);
    let _ = LegacyLine::parse_sendsize(data, &f);
    let mut d = Dle::default();
    for diag in legacy::parse_option_string(data, &mut d, &f) {
        let _ = diag.error_line();
    }
    let _ = legacy::option_string(&d, &f);
    if let Ok(l) = LegacyLine::parse_sendbackup(data, &f) {
        let line = legacy::sendbackup_line(&l.dle, l.dumpdate.as_deref().unwrap_or(b"0"), &f);
        let Some(line) = line.strip_suffix(b"\n") else {
            panic!("no newline")
        };
        // The device field is only recognised when it does not start with a digit.
        let device_ok = l
            .dle
            .device
            .as_ref()
            .is_none_or(|d| !d.first().is_some_and(u8::is_ascii_digit));
        let program_ok = l.dle.program != "APPLICATION"
            && !l.dle.program.is_empty()
            && !l
                .dle
                .program
                .iter()
                .any(|&b| quote::is_space(b) || b == b'#');
        if device_ok
            && program_ok
            && let Ok(back) = LegacyLine::parse_sendbackup(line, &f)
        {
            assert_eq!(back.dle.disk, l.dle.disk);
            assert_eq!(back.dle.levels, l.dle.levels);
        }
    }
}

/// A sendsize reply parses like planner's; every parsed line re-encodes to one that parses
/// to the same line.
pub fn sendsize_reply(data: &[u8]) {
    let Ok(reply) = SendsizeReply::parse(data) else {
        return;
    };
    let _ = reply.features();
    for line in &reply.lines {
        let enc = line.encode();
        if let crate::sendsize::ReplyLine::Estimate(_) = line {
            let back = SendsizeReply::parse(&enc).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.lines.as_slice(), std::slice::from_ref(line));
        }
    }
}

/// A sendbackup reply reads like the dumper's; a CONNECT result re-encodes identically.
pub fn sendbackup_rep(data: &[u8]) {
    let f = Features::amanda_3_5_1();
    let old = Features::minimal_gnutar_client();
    for kind in [PacketType::Rep, PacketType::Nak, PacketType::Prep] {
        for client in [&f, &old] {
            if let Ok(sendbackup::Reply::Connect { ids, .. }) =
                sendbackup::parse_reply(kind, data, client)
            {
                let body = sendbackup::encode_reply(&ids, b"OPTIONS ;\n");
                let back = sendbackup::parse_reply(PacketType::Rep, &body, client);
                assert_eq!(
                    back,
                    Ok(sendbackup::Reply::Connect {
                        ids,
                        features: None
                    })
                );
            }
        }
    }
    let mut next = 500_000u32;
    let r = sendbackup::rewrite_connect(data, |_| {
        next -= 1;
        Some(next)
    });
    assert!(r.streams.len() <= 4);
}

/// A selfcheck reply reads like amcheck's; an exactly parsed JSON body re-encodes to a body
/// that parses to the same messages.
pub fn selfcheck_json(data: &[u8]) {
    let _ = selfcheck::read_reply(data);
    let mut body = b"MESSAGE JSON\n".to_vec();
    body.extend_from_slice(data);
    let _ = selfcheck::read_reply(&body);
    for input in [data, body.as_slice()] {
        if let Ok(msgs) = selfcheck::parse_json_reply(input) {
            let enc = selfcheck::encode_json_reply(&msgs);
            let back = selfcheck::parse_json_reply(&enc);
            // hints are written unescaped (as 3.5.1 does), so they may not survive
            if msgs.iter().all(|m| m.hint.is_none()) {
                assert_eq!(back.as_ref(), Ok(&msgs));
            }
            for m in &msgs {
                let _ = m.legacy_line();
            }
        }
    }
}

/// MESG bytes split the same way in any chunking, with bounded memory; lines classify and
/// known lines re-encode to themselves; the tracker gives a verdict.
pub fn mesg(data: &[u8]) {
    let (&chunk, rest) = data.split_first().unwrap_or((&1, &[]));
    let chunk = usize::from(chunk.max(1));
    let mut whole = LineSplitter::new(256);
    whole.push(rest);
    let mut parts = LineSplitter::new(256);
    for c in rest.chunks(chunk) {
        parts.push(c);
        assert!(parts.buffered() <= 256);
    }
    let mut tracker = DumpTracker::new();
    loop {
        let (a, b) = (whole.next_line(), parts.next_line());
        assert_eq!(a, b);
        match a {
            None => break,
            Some(SplitLine::TooLong { .. }) => {}
            Some(SplitLine::Line(line)) => {
                let parsed = tracker.on_line(&line);
                let crc_none = matches!(
                    parsed,
                    MesgLine::NativeCrc(None) | MesgLine::ClientCrc(None)
                );
                if !crc_none {
                    let enc = parsed.encode();
                    assert_eq!(MesgLine::parse(&enc[..enc.len() - 1]), parsed);
                }
            }
        }
    }
    let tail = whole.finish();
    assert_eq!(tail, parts.finish());
    tracker.on_mesg_eof(tail.as_ref().and_then(|t| t.as_deref().ok()));
    let _ = tracker.finish(DataSummary::default());
}

/// A header parses or not; building what was parsed is idempotent.
pub fn header(data: &[u8]) {
    let Ok(h1) = DumpHeader::parse(data) else {
        return;
    };
    let _ = h1.to_string();
    let Ok(b1) = h1.build() else { return };
    let h2 = DumpHeader::parse(&b1).unwrap_or_else(|e| panic!("our header does not parse: {e}"));
    let b2 = h2
        .build()
        .unwrap_or_else(|e| panic!("a parsed header does not build: {e}"));
    assert_eq!(b1, b2);
}

/// Quoting: unquote inverts quote on NUL-free text; a quoted string is exactly one field.
pub fn quote(data: &[u8]) {
    let s = quote::until_nul(data);
    let q = quote::quote_string(s);
    assert_eq!(quote::unquote_string(&q), s);
    assert_eq!(quote::quoted_field_len(&q), q.len());
    let _ = quote::unquote_string(data);
    let _ = quote::split_quoted_strings(data);
    let (field, rest) = quote::split_quoted_field(data);
    assert_eq!(field.len() + rest.len(), data.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_trivial_inputs() {
        for (_, f) in TARGETS {
            f(b"");
            f(b"\n");
            f(b"\x00");
        }
    }
}
