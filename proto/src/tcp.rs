//! Control packets inside TCP frames (auth bsdtcp; spec §2.4, §2.5, §4.5), and the frame
//! handle conventions.
//!
//! A packet is one frame payload: the type code (0 REQ, 1 REP, 2 PREP, 3 ACK, 4 NAK), the
//! body, and a terminating NUL. A REQ body starts with `SECURITY USER <user>\n`. There is no
//! text header and no sequence number: the frame handle names the exchange. An ACK is the
//! payload `03 00`.
//!
//! [`Packet::parse`] reads what Amanda's `parse_pkt` reads: the body is everything after the
//! type byte up to the first NUL (so the trailing NUL is optional, as in 3.5.1's refusal
//! frame, spec §3.4). Unlike Amanda, which takes any type byte on trust, an unknown code is
//! a [`ParseError::UnknownType`].
//!
//! What this module must not do: read frames off a byte stream (that is [`crate::frame`]),
//! check security (that is [`crate::security`]), or touch a socket.

use std::borrow::Cow;

use crate::frame::{self, MAX_FRAME_LEN};
use crate::pkt::PacketType;
use crate::security;

/// The first control handle a server uses on a connection; amandad also writes its
/// pre-read refusal frame on it.
pub const FIRST_CONTROL_HANDLE: u32 = 1;

/// Handles below this are control handles (closing one drops a connection reference in
/// Amanda's `tcpma_stream_close`); data streams use handles at or above it.
pub const CONTROL_HANDLE_LIMIT: u32 = 10000;

/// Client data-stream handles count down from here: `500000 - n` for n = 1, 2, ...
pub const STREAM_HANDLE_BASE: u32 = 500_000;

/// Whether `handle` is a control handle (one exchange's packets) rather than a data stream.
pub const fn is_control_handle(handle: u32) -> bool {
    handle < CONTROL_HANDLE_LIMIT
}

/// The server's control handles: 1, 2, 3, ... per process, one per request (bsdtcp's
/// `newhandle`). After 9999 it starts again at 1 so that handles stay control handles
/// (Amanda itself would go on to 10000 and treat it as a stream); a handle is only reused
/// after 9998 newer requests, long after its exchange ended.
#[derive(Clone, Debug)]
pub struct ControlHandles {
    next: u32,
}

impl Default for ControlHandles {
    fn default() -> ControlHandles {
        ControlHandles::new()
    }
}

impl ControlHandles {
    /// Starts at [`FIRST_CONTROL_HANDLE`].
    pub const fn new() -> ControlHandles {
        ControlHandles {
            next: FIRST_CONTROL_HANDLE,
        }
    }
}

impl Iterator for ControlHandles {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let handle = self.next;
        self.next = if handle + 1 >= CONTROL_HANDLE_LIMIT {
            FIRST_CONTROL_HANDLE
        } else {
            handle + 1
        };
        Some(handle)
    }
}

/// The client's data-stream handles, counted per amandad process (`tcpma_stream_server`,
/// `tcp1_stream_server`): `499999, 499998, ...`. For bsdudp the first stream of the process
/// instead gets the TCP port it listens on ([`StreamHandles::bsdudp`]), and the
/// countdown starts with the second stream. Ends (returns `None`) before reaching
/// [`CONTROL_HANDLE_LIMIT`].
#[derive(Clone, Debug)]
pub struct StreamHandles {
    first: Option<u32>,
    n: u32,
}

impl Default for StreamHandles {
    fn default() -> StreamHandles {
        StreamHandles::new()
    }
}

impl StreamHandles {
    /// bsdtcp: 499999, 499998, ...
    pub const fn new() -> StreamHandles {
        StreamHandles { first: None, n: 1 }
    }

    /// bsdudp: `port` (the DATA stream's listening port, which is also its frame handle),
    /// then 499999, 499998, ...
    pub const fn bsdudp(port: u16) -> StreamHandles {
        StreamHandles {
            first: Some(port as u32),
            n: 1,
        }
    }
}

impl Iterator for StreamHandles {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let handle = STREAM_HANDLE_BASE.checked_sub(self.n)?;
        if handle < CONTROL_HANDLE_LIMIT {
            return None;
        }
        self.n += 1;
        Some(handle)
    }
}

/// A control packet carried in a frame. Parsed packets borrow from the frame payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub ptype: PacketType,
    /// The body, including a REQ's SECURITY line; no NUL.
    pub body: Cow<'a, [u8]>,
}

/// Why a frame payload is not a control packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The payload is empty (an empty frame is end of stream, not a packet).
    #[error("empty frame payload is not a packet")]
    Empty,
    /// The type code is not 0..=4.
    #[error("unknown packet type code {code}")]
    UnknownType {
        /// The first payload byte.
        code: u8,
    },
}

/// Why a packet cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The body contains a NUL, which would end it early on the receiver.
    #[error("body contains a NUL byte at offset {offset}")]
    NulInBody {
        /// Offset of the first NUL in the body.
        offset: usize,
    },
    /// The payload would exceed [`MAX_FRAME_LEN`].
    #[error(transparent)]
    TooLong(#[from] frame::FrameTooLong),
    /// The user name for the SECURITY line is unusable.
    #[error(transparent)]
    SecurityUser(#[from] security::UserError),
}

/// The ACK payload: type 3, empty body, NUL.
pub const ACK_PAYLOAD: [u8; 2] = [3, 0];

impl security::SecurityLine for Packet<'_> {
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

impl<'a> Packet<'a> {
    /// A packet with `body` as given (no SECURITY line is added; see [`Packet::request`]).
    pub fn new(ptype: PacketType, body: impl Into<Cow<'a, [u8]>>) -> Packet<'a> {
        Packet {
            ptype,
            body: body.into(),
        }
    }

    /// An ACK.
    pub fn ack() -> Packet<'static> {
        Packet::new(PacketType::Ack, &[][..])
    }

    /// A REQ whose body is `SECURITY USER <user>\n` followed by `body`, as Amanda's
    /// `stream_sendpkt` with `bsd_prefix_packet` builds it.
    pub fn request(user: &[u8], body: &[u8]) -> Result<Packet<'a>, EncodeError> {
        let mut full =
            Vec::with_capacity(security::SECURITY_USER_PREFIX.len() + user.len() + 1 + body.len());
        security::write_security_user_line(user, &mut full)?;
        full.extend_from_slice(body);
        Ok(Packet::new(PacketType::Req, full))
    }

    /// Parses a (non-empty) frame payload: type code, then the body up to the first NUL or
    /// the end.
    pub fn parse(payload: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        let (&code, rest) = payload.split_first().ok_or(ParseError::Empty)?;
        let ptype = PacketType::from_code(code).ok_or(ParseError::UnknownType { code })?;
        let body = match memchr::memchr(0, rest) {
            Some(nul) => rest.split_at(nul).0,
            None => rest,
        };
        Ok(Packet {
            ptype,
            body: Cow::Borrowed(body),
        })
    }

    /// Length of the payload: type byte, body, NUL.
    pub fn encoded_len(&self) -> usize {
        self.body.len() + 2
    }

    fn check(&self) -> Result<usize, EncodeError> {
        if let Some(offset) = memchr::memchr(0, &self.body) {
            return Err(EncodeError::NulInBody { offset });
        }
        let len = self.encoded_len();
        if len > MAX_FRAME_LEN as usize {
            return Err(frame::FrameTooLong { len }.into());
        }
        Ok(len)
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        out.push(self.ptype.code());
        out.extend_from_slice(&self.body);
        out.push(0);
    }

    /// Appends the payload (type byte, body, NUL) to `out` and returns its length. On error
    /// `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let len = self.check()?;
        out.reserve(len);
        self.write_payload(out);
        Ok(len)
    }

    /// Appends the whole frame (header on `handle`, then the payload) to `out` and returns
    /// its length. On error `out` is unchanged.
    pub fn encode_frame(&self, handle: u32, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let len = self.check()?;
        let header = frame::encode_header(handle, len)?;
        out.reserve(frame::HEADER_LEN + len);
        out.extend_from_slice(&header);
        self.write_payload(out);
        Ok(frame::HEADER_LEN + len)
    }

    /// The payload in a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// A packet that owns its body.
    pub fn into_owned(self) -> Packet<'static> {
        Packet {
            ptype: self.ptype,
            body: Cow::Owned(self.body.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::SecurityLine;
    use proptest::prelude::*;

    const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    #[test]
    fn tv2_noop_request_frame_is_byte_exact() {
        let body = format!("SERVICE noop\nOPTIONS features={F};\n");
        let req = Packet::request(b"backup", body.as_bytes()).unwrap();
        let mut out = Vec::new();
        assert_eq!(req.encode_frame(1, &mut out).unwrap(), 8 + 93);
        let mut want = vec![0, 0, 0, 0x5d, 0, 0, 0, 1, 0];
        want.extend_from_slice(b"SECURITY USER backup\n");
        want.extend_from_slice(body.as_bytes());
        want.push(0);
        assert_eq!(out, want);
        let back = Packet::parse(&out[8..]).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.security_user(), Some(&b"backup"[..]));
        assert_eq!(back.body_without_security(), body.as_bytes());
    }

    #[test]
    fn tv2_rep_and_ack_are_byte_exact() {
        let body = format!("OPTIONS features={F};\n");
        let mut out = Vec::new();
        Packet::new(PacketType::Rep, body.as_bytes())
            .encode_frame(1, &mut out)
            .unwrap();
        assert_eq!(&out[..9], &[0, 0, 0, 0x3b, 0, 0, 0, 1, 1]);
        assert_eq!(Packet::ack().to_vec().unwrap(), ACK_PAYLOAD);
        let mut out = Vec::new();
        Packet::ack().encode_frame(1, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0, 1, 3, 0]);
    }

    #[test]
    fn tv11_nak_frame_is_byte_exact() {
        let text = "ERROR frobnicate: invalid service, add 'frobnicate' as argument to amandad\n";
        let mut out = Vec::new();
        Packet::new(PacketType::Nak, text.as_bytes())
            .encode_frame(1, &mut out)
            .unwrap();
        assert_eq!(&out[..9], &[0, 0, 0, 0x4d, 0, 0, 0, 1, 4]);
        assert_eq!(&out[9..out.len() - 1], text.as_bytes());
        assert_eq!(out.last(), Some(&0));
    }

    #[test]
    fn body_ends_at_first_nul_and_nul_is_optional() {
        let p = Packet::parse(b"\x01abc\0junk").unwrap();
        assert_eq!(&*p.body, b"abc");
        let p = Packet::parse(b"\x04ocalhost doesn't resolve").unwrap();
        assert_eq!(p.ptype, PacketType::Nak);
        assert_eq!(&*p.body, b"ocalhost doesn't resolve");
        assert_eq!(&*Packet::parse(b"\x03").unwrap().body, b"");
    }

    #[test]
    fn unknown_type_code_is_a_typed_error() {
        assert_eq!(
            Packet::parse(b"\x05x\0"),
            Err(ParseError::UnknownType { code: 5 })
        );
        assert_eq!(Packet::parse(b""), Err(ParseError::Empty));
    }

    #[test]
    fn encoder_refuses_nul_and_oversize() {
        assert_eq!(
            Packet::new(PacketType::Rep, &b"a\0"[..]).to_vec(),
            Err(EncodeError::NulInBody { offset: 1 })
        );
        let big = vec![b'x'; MAX_FRAME_LEN as usize - 1];
        let mut out = Vec::new();
        assert!(matches!(
            Packet::new(PacketType::Rep, &big[..]).encode_frame(1, &mut out),
            Err(EncodeError::TooLong(_))
        ));
        assert!(out.is_empty());
        let fits = vec![b'x'; MAX_FRAME_LEN as usize - 2];
        assert!(
            Packet::new(PacketType::Rep, &fits[..])
                .encode_frame(1, &mut out)
                .is_ok()
        );
    }

    #[test]
    fn handle_conventions() {
        assert!(is_control_handle(1) && is_control_handle(9999));
        assert!(!is_control_handle(10000) && !is_control_handle(499_999));
        let mut c = ControlHandles::new();
        assert_eq!(c.by_ref().take(3).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(c.nth(9995), Some(9999));
        assert_eq!(c.next(), Some(1));
        assert_eq!(
            StreamHandles::new().take(4).collect::<Vec<_>>(),
            [499_999, 499_998, 499_997, 499_996]
        );
        assert_eq!(
            StreamHandles::bsdudp(50092).take(4).collect::<Vec<_>>(),
            [50092, 499_999, 499_998, 499_997]
        );
        let all = StreamHandles::new().count();
        assert_eq!(all, (STREAM_HANDLE_BASE - CONTROL_HANDLE_LIMIT) as usize);
        assert_eq!(StreamHandles::new().last(), Some(CONTROL_HANDLE_LIMIT));
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            ptype in proptest::sample::select(PacketType::ALL.to_vec()),
            body in proptest::collection::vec(1u8..=255, 0..400),
        ) {
            let p = Packet::new(ptype, &body[..]);
            let wire = p.to_vec().unwrap();
            prop_assert_eq!(wire.len(), p.encoded_len());
            prop_assert_eq!(Packet::parse(&wire).unwrap(), p);
        }

        #[test]
        fn parse_never_panics_and_reencodes_to_a_fixed_point(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(p) = Packet::parse(&data) {
                let wire = p.to_vec().unwrap();
                prop_assert_eq!(Packet::parse(&wire).unwrap(), p);
            }
        }
    }
}
