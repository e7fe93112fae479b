//! UDP datagrams of auth `bsd` and `bsdudp` (spec §2.3, §2.5, §2.6, §2.7).
//!
//! One packet is one datagram: a header line
//! `Amanda <version> <TYPE> HANDLE <handle> SEQ <seq>\n`, then the body. A REQ body starts
//! with `SECURITY USER <user>\n`; on the wire that line is part of the body, so [`Datagram`]
//! keeps it there and offers typed access ([`Datagram::security_user`],
//! [`Datagram::body_without_security`]) and a constructor that inserts it
//! ([`Datagram::request`]).
//!
//! [`Datagram::parse`] accepts exactly what Amanda 3.5.1's `str2pkthdr` accepts and reads the
//! same values from it (facts checked against `common-src/security-util.c` of 3.5.1):
//!
//! - only the first [`MAX_DGRAM`] bytes count (the receive buffer size), and an embedded NUL
//!   ends the packet (the C code works on a NUL-terminated copy);
//! - the first six fields are separated by runs of spaces only (`strtok(" ")`); leading spaces
//!   are skipped, a tab or a newline is an ordinary byte inside a field (so `Amanda\t3.5`
//!   is not `Amanda`, and a handle may contain a tab);
//! - `Amanda`; a version token containing a `.` (otherwise ignored); a type name
//!   (case-sensitive; an unknown name is [`ParseError::UnknownType`], whereas an Amanda built
//!   with assertions would abort); `HANDLE`; the handle (never empty: `strtok` skips empty
//!   fields); `SEQ`;
//! - the sequence number is the text after `SEQ `, newlines skipped first, up to the next
//!   `\n` or the end, converted like glibc `atoi` (see [`atoi`]): `SEQ 5\r` is 5 and
//!   `SEQ x` is 0; if nothing but newlines follows `SEQ ` (or `SEQ` ends the datagram) the
//!   sequence is [`ParseError::Missing`];
//! - the body is everything after the `\n` that ends the sequence number, verbatim (empty if
//!   there is no such `\n`).
//!
//! The encoder writes the canonical form (single spaces, `%d` sequence, no NUL) and refuses,
//! with an [`EncodeError`], what the real receiver could not read back: a header line longer
//! than [`MAX_HEADER_LINE`] (Amanda formats it into a 256-byte buffer), a datagram longer than
//! [`MAX_DGRAM`], fields containing separators, and NUL bytes. So for every `d` that parses,
//! `parse(encode(d)) == d`, and a canonical datagram re-encodes byte-identically.
//!
//! What this module must not do: match datagrams to exchanges (handle + sequence + peer
//! address, spec §2.5; the shell's job), check security (see [`crate::security`]), or touch
//! a socket.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use crate::pkt::PacketType;
use crate::security;

/// Largest datagram Amanda sends or reads: `65535 - 24 - 8` bytes, header included
/// (`common-src/dgram.h`). Receive into a buffer of exactly this size.
pub const MAX_DGRAM: usize = 65503;

/// Longest header line, `\n` included: Amanda formats it into a 256-byte buffer
/// (`pkthdr2str`) and aborts if it was truncated.
pub const MAX_HEADER_LINE: usize = 255;

/// The version token amanda-rs sends (receivers only check that it contains a `.`).
pub const VERSION: &str = "3.5";

/// The server's handle string for its `n`-th request, counted from 0 per process:
/// `000-00000000`, `000-00000001`, ... (`bsd_connect`).
pub fn server_handle(n: u32) -> String {
    format!("000-{n:08x}")
}

/// The sequence number a server picks for a new request: `(int)tv_sec ^ (int)tv_usec` of the
/// time of day when the request was created (`bsd_connect`). Pass the time in; this crate
/// reads no clock.
pub fn sequence_from_time(unix_secs: i64, micros: u32) -> i32 {
    // Truncating to `int` before the xor is what the C code does.
    (unix_secs as i32) ^ (micros as i32)
}

/// A UDP packet. Parsed datagrams borrow from the receive buffer.
///
/// The fields are public; their rules are checked by [`Datagram::encode`], which is where a
/// bad value would do harm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The version token, e.g. `3.5`: non-empty, contains a `.`, no space or NUL.
    pub version: &'a [u8],
    /// The packet type.
    pub ptype: PacketType,
    /// The exchange's handle, e.g. `000-00000000`: non-empty, no space or NUL.
    pub handle: &'a [u8],
    /// The exchange's sequence number.
    pub seq: i32,
    /// Everything after the header line, including a REQ's `SECURITY` line. No NUL.
    pub body: Cow<'a, [u8]>,
}

/// Which header field a [`ParseError::Missing`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The leading `Amanda`.
    Magic,
    /// The version token.
    Version,
    /// The packet type name.
    Type,
    /// The `HANDLE` keyword.
    HandleKeyword,
    /// The handle value.
    Handle,
    /// The `SEQ` keyword.
    SeqKeyword,
    /// The sequence number.
    Seq,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Magic => "`Amanda`",
            Field::Version => "version",
            Field::Type => "packet type",
            Field::HandleKeyword => "`HANDLE`",
            Field::Handle => "handle",
            Field::SeqKeyword => "`SEQ`",
            Field::Seq => "sequence number",
        })
    }
}

/// Why a datagram is not an Amanda packet. The real Amanda drops such datagrams silently;
/// a shell should log the error (with the peer's address) and drop it too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The header line stops before `field`.
    #[error("not an Amanda packet: header ends at byte {offset} before the {field}")]
    Missing {
        /// The field that is missing.
        field: Field,
        /// Where the datagram (up to its first NUL) ended.
        offset: usize,
    },
    /// A keyword field holds something else.
    #[error("not an Amanda packet: expected `{expected}` at byte {offset}, found {found:?}")]
    Unexpected {
        /// The keyword that was expected (`Amanda`, `HANDLE` or `SEQ`).
        expected: &'static str,
        /// Where the field starts.
        offset: usize,
        /// What was there (lossy, shortened).
        found: String,
    },
    /// The version token has no `.`.
    #[error("not an Amanda packet: version {found:?} at byte {offset} has no `.`")]
    Version {
        /// Where the token starts.
        offset: usize,
        /// The token (lossy, shortened).
        found: String,
    },
    /// The type name is none of REQ, REP, PREP, ACK, NAK.
    #[error("unknown packet type {found:?} at byte {offset}")]
    UnknownType {
        /// Where the name starts.
        offset: usize,
        /// The name (lossy, shortened).
        found: String,
    },
}

/// Why a packet cannot be sent as a datagram.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The version token is empty, lacks a `.`, or contains a space or NUL.
    #[error("version {version:?} must contain a `.` and no space or NUL")]
    Version {
        /// The token (lossy).
        version: String,
    },
    /// The handle is empty or contains a space or NUL.
    #[error("handle {handle:?} must be non-empty without space or NUL")]
    Handle {
        /// The handle (lossy).
        handle: String,
    },
    /// The body contains a NUL, which would end the packet early on the receiver.
    #[error("body contains a NUL byte at offset {offset}")]
    NulInBody {
        /// Offset of the first NUL in the body.
        offset: usize,
    },
    /// The header line is longer than Amanda's 256-byte buffer allows.
    #[error("header line is {len} bytes, more than the {MAX_HEADER_LINE} Amanda can format")]
    HeaderTooLong {
        /// The header line's length, `\n` included.
        len: usize,
    },
    /// The datagram is longer than [`MAX_DGRAM`]; Amanda would truncate it.
    #[error("datagram is {len} bytes, more than the {MAX_DGRAM}-byte limit")]
    TooLong {
        /// The datagram's length.
        len: usize,
    },
    /// The user name for the SECURITY line is unusable.
    #[error(transparent)]
    SecurityUser(#[from] security::UserError),
}

impl security::SecurityLine for Datagram<'_> {
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

impl<'a> Datagram<'a> {
    /// A packet with version [`VERSION`] and `body` as given (no SECURITY line is added;
    /// use [`Datagram::request`] for a REQ).
    pub fn new(
        ptype: PacketType,
        handle: &'a [u8],
        seq: i32,
        body: impl Into<Cow<'a, [u8]>>,
    ) -> Datagram<'a> {
        Datagram {
            version: VERSION.as_bytes(),
            ptype,
            handle,
            seq,
            body: body.into(),
        }
    }

    /// A REQ whose body is `SECURITY USER <user>\n` followed by `body`, as Amanda's
    /// `udpbsd_sendpkt` builds it. `user` is the login name of the requesting process
    /// (`backup` on Debian).
    pub fn request(
        handle: &'a [u8],
        seq: i32,
        user: &[u8],
        body: &[u8],
    ) -> Result<Datagram<'a>, EncodeError> {
        let mut full =
            Vec::with_capacity(security::SECURITY_USER_PREFIX.len() + user.len() + 1 + body.len());
        security::write_security_user_line(user, &mut full)?;
        full.extend_from_slice(body);
        Ok(Datagram::new(PacketType::Req, handle, seq, full))
    }

    /// Parses one received datagram (spec §2.6; see the module docs for the exact rules).
    /// Only the first [`MAX_DGRAM`] bytes are looked at, and an embedded NUL ends the packet.
    pub fn parse(datagram: &'a [u8]) -> Result<Datagram<'a>, ParseError> {
        let (text, _) = datagram.split_at(datagram.len().min(MAX_DGRAM));
        let text = match memchr::memchr(0, text) {
            Some(nul) => text.split_at(nul).0,
            None => text,
        };
        let mut tokens = Strtok::new(text);
        let mut field = |field: Field| {
            tokens.next(b" ").ok_or(ParseError::Missing {
                field,
                offset: text.len(),
            })
        };

        let (magic, offset) = field(Field::Magic)?;
        expect_keyword(magic, offset, "Amanda")?;

        let (version, offset) = field(Field::Version)?;
        if memchr::memchr(b'.', version).is_none() {
            return Err(ParseError::Version {
                offset,
                found: excerpt(version),
            });
        }

        let (name, offset) = field(Field::Type)?;
        let ptype = PacketType::from_name(name).ok_or_else(|| ParseError::UnknownType {
            offset,
            found: excerpt(name),
        })?;

        let (keyword, offset) = field(Field::HandleKeyword)?;
        expect_keyword(keyword, offset, "HANDLE")?;
        let (handle, _) = field(Field::Handle)?;
        let (keyword, offset) = field(Field::SeqKeyword)?;
        expect_keyword(keyword, offset, "SEQ")?;

        let (seq_text, _) = tokens.next(b"\n").ok_or(ParseError::Missing {
            field: Field::Seq,
            offset: text.len(),
        })?;
        let seq = atoi(seq_text);
        let body = tokens.rest();

        Ok(Datagram {
            version,
            ptype,
            handle,
            seq,
            body: Cow::Borrowed(body),
        })
    }

    /// Length of the header line, `\n` included.
    pub fn header_len(&self) -> usize {
        // "Amanda " + version + " " + type + " HANDLE " + handle + " SEQ " + seq + "\n"
        7 + self.version.len()
            + 1
            + self.ptype.name().len()
            + 8
            + self.handle.len()
            + 5
            + decimal_len(self.seq)
            + 1
    }

    /// Length of the encoded datagram.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.body.len()
    }

    /// Appends the datagram to `out` and returns its length. On error `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        if self.version.is_empty()
            || memchr::memchr(b'.', self.version).is_none()
            || memchr::memchr2(b' ', 0, self.version).is_some()
        {
            return Err(EncodeError::Version {
                version: String::from_utf8_lossy(self.version).into_owned(),
            });
        }
        if self.handle.is_empty() || memchr::memchr2(b' ', 0, self.handle).is_some() {
            return Err(EncodeError::Handle {
                handle: String::from_utf8_lossy(self.handle).into_owned(),
            });
        }
        if let Some(offset) = memchr::memchr(0, &self.body) {
            return Err(EncodeError::NulInBody { offset });
        }
        let header_len = self.header_len();
        if header_len > MAX_HEADER_LINE {
            return Err(EncodeError::HeaderTooLong { len: header_len });
        }
        let len = header_len + self.body.len();
        if len > MAX_DGRAM {
            return Err(EncodeError::TooLong { len });
        }
        out.reserve(len);
        out.extend_from_slice(b"Amanda ");
        out.extend_from_slice(self.version);
        out.push(b' ');
        out.extend_from_slice(self.ptype.name().as_bytes());
        out.extend_from_slice(b" HANDLE ");
        out.extend_from_slice(self.handle);
        out.extend_from_slice(b" SEQ ");
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "{}", self.seq);
        out.extend_from_slice(&self.body);
        Ok(len)
    }

    /// The encoded datagram in a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// glibc `atoi`: `(int) strtol(text, NULL, 10)`. Leading C white space is skipped, then an
/// optional sign and decimal digits are read; anything after them (a `\r`, trailing junk) is
/// ignored, and no digits give 0.
///
/// Overflow, defined as on 64-bit glibc: the number saturates at the `i64` bounds (what
/// `strtol` returns), then keeps its low 32 bits as a two's-complement `i32` (the cast to
/// `int`). So `2147483648` reads as `-2147483648`, `4294967297` as `1`,
/// `99999999999999999999` as `-1` and `-99999999999999999999` as `0`.
pub fn atoi(text: &[u8]) -> i32 {
    let mut rest = text;
    while let [b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r', tail @ ..] = rest {
        rest = tail;
    }
    let negative = match rest {
        [b'-', tail @ ..] => {
            rest = tail;
            true
        }
        [b'+', tail @ ..] => {
            rest = tail;
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        let d = i64::from(b - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(d)
        } else {
            value.saturating_mul(10).saturating_add(d)
        };
    }
    value as i32
}

fn expect_keyword(found: &[u8], offset: usize, expected: &'static str) -> Result<(), ParseError> {
    if found == expected.as_bytes() {
        Ok(())
    } else {
        Err(ParseError::Unexpected {
            expected,
            offset,
            found: excerpt(found),
        })
    }
}

/// A short, lossy rendering of a wire token for an error message.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let (head, tail) = bytes.split_at(bytes.len().min(MAX));
    let mut s = String::from_utf8_lossy(head).into_owned();
    if !tail.is_empty() {
        s.push_str("...");
    }
    s
}

fn decimal_len(n: i32) -> usize {
    let mut len = usize::from(n < 0);
    let mut m = n.unsigned_abs();
    loop {
        len += 1;
        m /= 10;
        if m == 0 {
            return len;
        }
    }
}

/// glibc `strtok` over a NUL-free byte string, remembering where each token starts.
struct Strtok<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Strtok<'a> {
    fn new(text: &'a [u8]) -> Strtok<'a> {
        Strtok { text, pos: 0 }
    }

    /// `strtok(NULL, delims)`: skips delimiters, returns the token up to the next delimiter
    /// (which is consumed) or the end, with the token's offset. `None` at the end.
    fn next(&mut self, delims: &[u8]) -> Option<(&'a [u8], usize)> {
        let (_, rest) = self.text.split_at(self.pos.min(self.text.len()));
        let Some(skip) = rest.iter().position(|b| !delims.contains(b)) else {
            self.pos = self.text.len();
            return None;
        };
        let start = self.pos + skip;
        let (_, from_start) = self.text.split_at(start);
        match from_start.iter().position(|b| delims.contains(b)) {
            Some(len) => {
                self.pos = start + len + 1;
                Some((from_start.split_at(len).0, start))
            }
            None => {
                self.pos = self.text.len();
                Some((from_start, start))
            }
        }
    }

    /// `strtok(NULL, "")`: everything left (empty when nothing is).
    fn rest(&mut self) -> &'a [u8] {
        let (_, rest) = self.text.split_at(self.pos.min(self.text.len()));
        self.pos = self.text.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::SecurityLine;
    use proptest::prelude::*;

    const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    fn parse(text: &[u8]) -> Result<Datagram<'_>, ParseError> {
        Datagram::parse(text)
    }

    #[test]
    fn tv1_noop_request_encodes_exactly() {
        let body = format!("SERVICE noop\nOPTIONS features={F};\n");
        let d =
            Datagram::request(b"000-00000000", 1_699_877_696, b"backup", body.as_bytes()).unwrap();
        let wire = d.to_vec().unwrap();
        let expected = format!(
            "Amanda 3.5 REQ HANDLE 000-00000000 SEQ 1699877696\nSECURITY USER backup\n{body}"
        );
        assert_eq!(wire, expected.as_bytes());
        let back = parse(&wire).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.security_user(), Some(&b"backup"[..]));
        assert_eq!(back.body_without_security(), body.as_bytes());
    }

    #[test]
    fn tv1_ack_has_empty_body() {
        let d = parse(b"Amanda 3.5 ACK HANDLE 000-00000000 SEQ 1699877696\n").unwrap();
        assert_eq!(d.ptype, PacketType::Ack);
        assert_eq!(d.handle, b"000-00000000");
        assert_eq!(d.seq, 1_699_877_696);
        assert!(d.body.is_empty());
        assert_eq!(d.security_line(), None);
    }

    #[test]
    fn sequence_matches_spec_example() {
        assert_eq!(sequence_from_time(1_700_000_000, 123_456), 1_699_877_696);
        assert_eq!(server_handle(0), "000-00000000");
        assert_eq!(server_handle(0x1a), "000-0000001a");
    }

    #[test]
    fn runs_of_spaces_and_leading_spaces_are_tolerated() {
        let d = parse(b"  Amanda   2.6  NAK HANDLE  h1   SEQ   -42\r\nERROR x\n").unwrap();
        assert_eq!(d.version, b"2.6");
        assert_eq!(d.ptype, PacketType::Nak);
        assert_eq!(d.handle, b"h1");
        assert_eq!(d.seq, -42);
        assert_eq!(&*d.body, b"ERROR x\n");
    }

    #[test]
    fn tab_is_not_a_separator() {
        assert!(matches!(
            parse(b"Amanda\t3.5 ACK HANDLE h SEQ 1\n"),
            Err(ParseError::Unexpected {
                expected: "Amanda",
                offset: 0,
                ..
            })
        ));
        // Inside the handle a tab is just a byte.
        let d = parse(b"Amanda 3.5 ACK HANDLE a\tb SEQ 1\n").unwrap();
        assert_eq!(d.handle, b"a\tb");
    }

    #[test]
    fn missing_newline_gives_empty_body() {
        let d = parse(b"Amanda 3.5 ACK HANDLE h SEQ 7").unwrap();
        assert_eq!(d.seq, 7);
        assert!(d.body.is_empty());
    }

    #[test]
    fn seq_skips_leading_newlines_like_strtok() {
        let d = parse(b"Amanda 3.5 REP HANDLE h SEQ \n\n9\nbody").unwrap();
        assert_eq!(d.seq, 9);
        assert_eq!(&*d.body, b"body");
    }

    #[test]
    fn seq_needs_some_text() {
        for text in [
            &b"Amanda 3.5 ACK HANDLE h SEQ"[..],
            b"Amanda 3.5 ACK HANDLE h SEQ \n\n",
        ] {
            assert_eq!(
                parse(text),
                Err(ParseError::Missing {
                    field: Field::Seq,
                    offset: text.len()
                })
            );
        }
        // A space is text: atoi(" ") is 0.
        assert_eq!(parse(b"Amanda 3.5 ACK HANDLE h SEQ  \n").unwrap().seq, 0);
    }

    #[test]
    fn empty_handle_is_impossible_strtok_skips_it() {
        // `HANDLE  SEQ 5`: the handle is `SEQ`, then `5` is not `SEQ`.
        assert!(matches!(
            parse(b"Amanda 3.5 ACK HANDLE  SEQ 5\n"),
            Err(ParseError::Unexpected {
                expected: "SEQ",
                ..
            })
        ));
    }

    #[test]
    fn embedded_nul_ends_the_packet() {
        let d = parse(b"Amanda 3.5 REP HANDLE h SEQ 1\nabc\0def").unwrap();
        assert_eq!(&*d.body, b"abc");
        assert!(matches!(
            parse(b"Amanda 3.5 REP HANDLE h\0 SEQ 1\n"),
            Err(ParseError::Missing {
                field: Field::SeqKeyword,
                offset: 23
            })
        ));
    }

    #[test]
    fn only_max_dgram_bytes_are_read() {
        let mut wire = b"Amanda 3.5 REP HANDLE h SEQ 1\n".to_vec();
        wire.resize(MAX_DGRAM + 10, b'x');
        let d = parse(&wire).unwrap();
        assert_eq!(d.encoded_len(), MAX_DGRAM);
    }

    #[test]
    fn unknown_type_is_a_typed_error() {
        assert_eq!(
            parse(b"Amanda 3.5 req HANDLE h SEQ 1\n"),
            Err(ParseError::UnknownType {
                offset: 11,
                found: "req".into()
            })
        );
    }

    #[test]
    fn version_needs_a_dot() {
        assert!(matches!(
            parse(b"Amanda 35 ACK HANDLE h SEQ 1\n"),
            Err(ParseError::Version { .. })
        ));
        assert!(parse(b"Amanda x.y ACK HANDLE h SEQ 1\n").is_ok());
    }

    #[test]
    fn errors_say_what_and_where() {
        for (bytes, text) in [
            (
                &b"Amanda 3.5 ACK HANDEL h SEQ 1\n"[..],
                "not an Amanda packet: expected `HANDLE` at byte 15, found \"HANDEL\"",
            ),
            (
                b"Amanda 3.5",
                "not an Amanda packet: header ends at byte 10 before the packet type",
            ),
        ] {
            assert_eq!(parse(bytes).unwrap_err().to_string(), text);
        }
    }

    #[test]
    fn atoi_matches_glibc() {
        // Each value checked against glibc atoi on this machine.
        let cases: &[(&[u8], i32)] = &[
            (b"123\r", 123),
            (b"  -7x", -7),
            (b" +5", 5),
            (b"\t\x0b12", 12),
            (b"4294967297", 1),
            (b"2147483648", -2_147_483_648),
            (b"99999999999999999999", -1),
            (b"-99999999999999999999", 0),
            (b"", 0),
            (b"abc", 0),
            (b"0x10", 0),
            (b"- 5", 0),
        ];
        for &(text, want) in cases {
            assert_eq!(atoi(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn encoder_refuses_what_amanda_cannot_read() {
        // "Amanda 3.5 ACK HANDLE " + handle + " SEQ 1\n" is 29 bytes plus the handle.
        let fits = vec![b'h'; MAX_HEADER_LINE - 29];
        assert_eq!(
            Datagram::new(PacketType::Ack, &fits, 1, &b""[..])
                .to_vec()
                .map(|w| w.len()),
            Ok(MAX_HEADER_LINE)
        );
        let long_handle = vec![b'h'; MAX_HEADER_LINE - 28];
        assert!(matches!(
            Datagram::new(PacketType::Ack, &long_handle, 1, &b""[..]).to_vec(),
            Err(EncodeError::HeaderTooLong { len: 256 })
        ));
        let big = vec![b'x'; MAX_DGRAM];
        assert!(matches!(
            Datagram::new(PacketType::Rep, b"h", 1, &big[..]).to_vec(),
            Err(EncodeError::TooLong { .. })
        ));
        assert!(matches!(
            Datagram::new(PacketType::Rep, b"a b", 1, &b""[..]).to_vec(),
            Err(EncodeError::Handle { .. })
        ));
        assert!(matches!(
            Datagram::new(PacketType::Rep, b"", 1, &b""[..]).to_vec(),
            Err(EncodeError::Handle { .. })
        ));
        assert!(matches!(
            Datagram::new(PacketType::Rep, b"h", 1, &b"a\0b"[..]).to_vec(),
            Err(EncodeError::NulInBody { offset: 1 })
        ));
        let mut d = Datagram::new(PacketType::Rep, b"h", 1, &b""[..]);
        d.version = b"35";
        assert!(matches!(d.to_vec(), Err(EncodeError::Version { .. })));
        assert!(Datagram::request(b"h", 1, b"a\nb", b"").is_err());
    }

    #[test]
    fn largest_datagram_is_accepted() {
        let header = b"Amanda 3.5 REP HANDLE h SEQ 1\n".len();
        let body = vec![b'x'; MAX_DGRAM - header];
        let d = Datagram::new(PacketType::Rep, b"h", 1, &body[..]);
        let wire = d.to_vec().unwrap();
        assert_eq!(wire.len(), MAX_DGRAM);
        assert_eq!(parse(&wire).unwrap(), d);
    }

    #[test]
    fn encode_on_error_leaves_buffer_alone() {
        let mut out = b"keep".to_vec();
        assert!(
            Datagram::new(PacketType::Ack, b"", 1, &b""[..])
                .encode(&mut out)
                .is_err()
        );
        assert_eq!(out, b"keep");
    }

    #[test]
    fn decimal_len_counts_sign_and_digits() {
        for n in [0, 9, 10, -1, -10, i32::MAX, i32::MIN, 1_699_877_696] {
            assert_eq!(decimal_len(n), n.to_string().len(), "{n}");
        }
    }

    fn token() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no space/NUL", |b| *b != b' ' && *b != 0),
            1..20,
        )
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            ptype in proptest::sample::select(PacketType::ALL.to_vec()),
            version_head in token(),
            handle in token(),
            seq in any::<i32>(),
            body in proptest::collection::vec(1u8..=255, 0..300),
        ) {
            let mut version = version_head;
            version.push(b'.');
            let d = Datagram { version: &version, ptype, handle: &handle, seq, body: Cow::Borrowed(&body) };
            let wire = d.to_vec().unwrap();
            prop_assert_eq!(wire.len(), d.encoded_len());
            prop_assert_eq!(Datagram::parse(&wire).unwrap(), d);
        }

        #[test]
        fn parse_never_panics_and_reencodes_to_a_fixed_point(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = Datagram::parse(&data)
                && let Ok(wire) = d.to_vec()
            {
                prop_assert_eq!(Datagram::parse(&wire).unwrap(), d);
            }
        }

        #[test]
        fn parse_never_panics_on_header_like_input(
            prefix in proptest::sample::select(vec![
                &b"Amanda 3.5 REQ HANDLE "[..], b"Amanda 3.5 ACK HANDLE h SEQ", b"Amanda 3.5 ",
            ]),
            tail in proptest::collection::vec(proptest::sample::select(vec![b' ', b'\n', b'\t', b'0', b'9', b'-', 0, b'S']), 0..40),
        ) {
            let mut data = prefix.to_vec();
            data.extend_from_slice(&tail);
            if let Ok(d) = Datagram::parse(&data)
                && let Ok(wire) = d.to_vec()
            {
                prop_assert_eq!(Datagram::parse(&wire).unwrap(), d);
            }
        }
    }
}
