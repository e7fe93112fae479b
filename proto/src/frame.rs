//! TCP frames: `u32be length, u32be handle, payload` (spec §2.4, §4.5).
//!
//! Everything on a bsdtcp connection, and everything on a bsdudp data connection, is a frame:
//! control packets ([`crate::tcp`]) and the DATA/MESG/INDEX/STATE streams alike; the handle
//! says which logical stream a frame belongs to. A zero-length frame ends that handle's
//! stream. Receivers refuse a length above [`MAX_FRAME_LEN`] and drop the connection.
//!
//! Two decoders, both fed with whatever the socket returned (one byte at a time works):
//!
//! - [`Decoder`] streams: it yields the header of each frame and then its payload as chunks
//!   borrowed from the caller's read buffer, so a shell can relay or checksum many GiB/s
//!   without copying payload into per-frame buffers and without holding a 4 MiB frame;
//! - [`FrameReader`] yields whole frames (borrowed when a frame lies entirely in the input,
//!   reassembled otherwise), which is what control packets want.
//!
//! What this module must not do: interpret payloads (see [`crate::tcp`]), track which
//! handles are open, or touch a socket.

use std::borrow::Cow;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The block size Amanda relays stream data in: amandad writes frames of at most this many
/// payload bytes (`NETWORK_BLOCK_BYTES`).
pub const NETWORK_BLOCK_BYTES: usize = 32768;

/// Largest payload a receiver accepts: `128 * NETWORK_BLOCK_BYTES` = 4 MiB
/// (`tcpm_recv_token`). A longer frame is a protocol error that ends the connection.
pub const MAX_FRAME_LEN: u32 = 128 * NETWORK_BLOCK_BYTES as u32;

/// How much stray text [`DecodeError::TooLong`] keeps, header bytes included (the real
/// receiver logs up to 100 bytes too).
pub const MAX_STRAY_TEXT: usize = 100;

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Payload length in bytes; 0 means end of stream for `handle`.
    pub len: u32,
    /// The logical stream (control exchange or data stream) the payload belongs to.
    pub handle: u32,
}

impl FrameHeader {
    /// The header of the zero-length frame that ends `handle`'s stream.
    pub const fn eof(handle: u32) -> FrameHeader {
        FrameHeader { len: 0, handle }
    }

    /// Whether this is an end-of-stream frame.
    pub const fn is_eof(&self) -> bool {
        self.len == 0
    }

    /// The 8 header bytes, big-endian.
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let h = self.handle.to_be_bytes();
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    }

    /// Reads 8 header bytes. Any value is representable; [`Decoder`] enforces the limit.
    pub const fn from_bytes(b: [u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            handle: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A payload longer than [`MAX_FRAME_LEN`] was to be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame payload of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
pub struct FrameTooLong {
    /// The payload length.
    pub len: usize,
}

/// The header for a frame carrying `len` payload bytes on `handle`.
pub fn encode_header(handle: u32, len: usize) -> Result<[u8; HEADER_LEN], FrameTooLong> {
    match u32::try_from(len) {
        Ok(l) if l <= MAX_FRAME_LEN => Ok(FrameHeader { len: l, handle }.to_bytes()),
        _ => Err(FrameTooLong { len }),
    }
}

/// Appends a whole frame (header and `payload`) to `out`. An empty payload makes an
/// end-of-stream frame. On error `out` is unchanged.
pub fn encode_frame(handle: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameTooLong> {
    let header = encode_header(handle, payload.len())?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The zero-length frame that ends `handle`'s stream (`tcpma_stream_close`).
pub const fn eof_frame(handle: u32) -> [u8; HEADER_LEN] {
    FrameHeader::eof(handle).to_bytes()
}

/// Why a byte stream is not (or no longer) valid Amanda framing. Either way the connection
/// cannot continue: close it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A header announced more than [`MAX_FRAME_LEN`] bytes. If all 8 header bytes were
    /// printable ASCII, the peer most likely wrote text instead of frames (an error message a
    /// service or inetd child printed to the socket); `text` then holds the header bytes and
    /// the printable bytes that followed them in the same input, up to [`MAX_STRAY_TEXT`].
    #[error("{}", too_long_message(.len, .handle, .text))]
    TooLong {
        /// The announced length.
        len: u32,
        /// The announced handle.
        handle: u32,
        /// The stray text, if the header was printable.
        text: Option<String>,
    },
    /// The stream ended inside a frame header (see [`Decoder::finish`]).
    #[error("connection closed inside a frame header: {have} of 8 bytes received")]
    TruncatedHeader {
        /// Header bytes received.
        have: usize,
    },
    /// The stream ended inside a frame's payload (see [`Decoder::finish`]).
    #[error(
        "connection closed inside a frame on handle {handle}: {received} of {len} payload bytes received"
    )]
    TruncatedPayload {
        /// The frame's handle.
        handle: u32,
        /// The frame's announced length.
        len: u32,
        /// Payload bytes received.
        received: u32,
    },
}

fn too_long_message(len: &u32, handle: &u32, text: &Option<String>) -> String {
    match text {
        Some(text) => format!("peer sent text, not Amanda frames: {text:?}"),
        None => format!(
            "invalid frame: length {len} on handle {handle} exceeds the {MAX_FRAME_LEN}-byte limit"
        ),
    }
}

/// What [`Decoder::next`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A frame with a non-empty payload begins; its `len` bytes follow as [`Event::Data`].
    Start(FrameHeader),
    /// Payload bytes of the current frame, borrowed from the input. Never empty.
    Data {
        /// The frame's handle.
        handle: u32,
        /// The bytes.
        chunk: &'a [u8],
        /// Whether this chunk completes the frame.
        end: bool,
    },
    /// A zero-length frame: end of stream for `handle`.
    Eof {
        /// The handle whose stream ended.
        handle: u32,
    },
}

#[derive(Clone, Debug)]
enum State {
    /// Collecting a header; `have` bytes of it are in `buf`.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Inside a payload of `len` bytes; `remaining` > 0 bytes to go.
    Payload {
        handle: u32,
        len: u32,
        remaining: u32,
    },
    /// A fatal error was returned; it is returned again.
    Failed(DecodeError),
}

/// The streaming frame decoder: a state machine over the bytes of one connection direction.
///
/// Call [`Decoder::next`] in a loop with the bytes just read until it returns `Ok(None)`
/// (input used up), then read again. Payload arrives as [`Event::Data`] chunks borrowed from
/// the input, so nothing is copied and nothing is buffered except up to 7 header bytes.
/// After an error the decoder keeps returning it: close the connection.
///
/// ```
/// use proto::frame::{Decoder, Event};
/// let wire = [0, 0, 0, 2, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// let mut dec = Decoder::new();
/// let mut input = &wire[..];
/// let mut events = Vec::new();
/// while let Some(event) = dec.next(&mut input).unwrap() {
///     events.push(event);
/// }
/// assert_eq!(events.len(), 3); // Start, Data (the ACK packet 03 00), Eof
/// assert!(matches!(events[2], Event::Eof { handle: 1 }));
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub const fn new() -> Decoder {
        Decoder {
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Decodes the next event from `input`, advancing `input` past the bytes it used.
    /// Returns `Ok(None)` when `input` is empty and more bytes are needed.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, DecodeError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Payload {
                handle, remaining, ..
            } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let handle = *handle;
                let n = input.len().min(*remaining as usize);
                let (chunk, rest) = input.split_at(n);
                *input = rest;
                // n <= remaining, so this cannot underflow; n fits u32 because remaining does.
                *remaining -= n as u32;
                let end = *remaining == 0;
                if end {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                }
                Ok(Some(Event::Data { handle, chunk, end }))
            }
            State::Header { buf, have } => {
                let want = HEADER_LEN - *have;
                let n = want.min(input.len());
                let (head, rest) = input.split_at(n);
                if let Some(dst) = buf.get_mut(*have..*have + n) {
                    dst.copy_from_slice(head);
                }
                *have += n;
                *input = rest;
                if *have < HEADER_LEN {
                    return Ok(None);
                }
                let raw = *buf;
                let header = FrameHeader::from_bytes(raw);
                if header.len > MAX_FRAME_LEN {
                    let err = DecodeError::TooLong {
                        len: header.len,
                        handle: header.handle,
                        text: stray_text(&raw, input),
                    };
                    self.state = State::Failed(err.clone());
                    return Err(err);
                }
                if header.is_eof() {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    Ok(Some(Event::Eof {
                        handle: header.handle,
                    }))
                } else {
                    self.state = State::Payload {
                        handle: header.handle,
                        len: header.len,
                        remaining: header.len,
                    };
                    Ok(Some(Event::Start(header)))
                }
            }
        }
    }

    /// Whether the decoder stands between frames (no partial header or payload pending).
    pub fn is_at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Call this when the peer closed the connection: `Ok` if the stream ended between
    /// frames, [`DecodeError::TruncatedHeader`] or [`DecodeError::TruncatedPayload`] if it
    /// ended inside one, or the earlier error.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match &self.state {
            State::Header { have: 0, .. } => Ok(()),
            State::Header { have, .. } => Err(DecodeError::TruncatedHeader { have: *have }),
            State::Payload {
                handle,
                len,
                remaining,
            } => Err(DecodeError::TruncatedPayload {
                handle: *handle,
                len: *len,
                received: len.saturating_sub(*remaining),
            }),
            State::Failed(e) => Err(e.clone()),
        }
    }
}

/// C `isprint` in the C locale.
fn is_print(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// The header and following printable bytes as text, if the header is all printable.
fn stray_text(header: &[u8; HEADER_LEN], input: &mut &[u8]) -> Option<String> {
    if !header.iter().all(|&b| is_print(b)) {
        return None;
    }
    let more = input
        .iter()
        .take(MAX_STRAY_TEXT - HEADER_LEN)
        .take_while(|&&b| is_print(b))
        .count();
    let (tail, rest) = input.split_at(more);
    *input = rest;
    let mut text = String::with_capacity(HEADER_LEN + more);
    // Printable ASCII is valid UTF-8 one byte per char.
    text.extend(header.iter().chain(tail).map(|&b| char::from(b)));
    Some(text)
}

/// A whole frame. An empty payload is an end-of-stream frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's handle.
    pub handle: u32,
    /// The payload: borrowed from the input when the frame lay entirely in it.
    pub payload: Cow<'a, [u8]>,
}

impl Frame<'_> {
    /// Whether this is an end-of-stream frame.
    pub fn is_eof(&self) -> bool {
        self.payload.is_empty()
    }

    /// A frame that owns its payload.
    pub fn into_owned(self) -> Frame<'static> {
        Frame {
            handle: self.handle,
            payload: Cow::Owned(self.payload.into_owned()),
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameTooLong> {
        encode_frame(self.handle, &self.payload, out)
    }
}

/// A decoder that yields whole frames, for control connections.
///
/// Use it like [`Decoder`]: call [`FrameReader::next`] with each read's bytes until it
/// returns `Ok(None)`. A frame split across reads is reassembled in an internal buffer (at
/// most [`MAX_FRAME_LEN`] bytes); a frame that lies entirely in one input is borrowed.
#[derive(Clone, Debug, Default)]
pub struct FrameReader {
    decoder: Decoder,
    partial: Vec<u8>,
}

impl FrameReader {
    /// A reader at the start of a connection.
    pub const fn new() -> FrameReader {
        FrameReader {
            decoder: Decoder::new(),
            partial: Vec::new(),
        }
    }

    /// The next whole frame in `input`, advancing `input`; `Ok(None)` when more bytes are
    /// needed.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Frame<'a>>, DecodeError> {
        loop {
            match self.decoder.next(input)? {
                None => return Ok(None),
                Some(Event::Eof { handle }) => {
                    return Ok(Some(Frame {
                        handle,
                        payload: Cow::Borrowed(&[]),
                    }));
                }
                Some(Event::Start(_)) => self.partial.clear(),
                Some(Event::Data { handle, chunk, end }) => {
                    if end && self.partial.is_empty() {
                        return Ok(Some(Frame {
                            handle,
                            payload: Cow::Borrowed(chunk),
                        }));
                    }
                    self.partial.extend_from_slice(chunk);
                    if end {
                        return Ok(Some(Frame {
                            handle,
                            payload: Cow::Owned(std::mem::take(&mut self.partial)),
                        }));
                    }
                }
            }
        }
    }

    /// See [`Decoder::is_at_frame_boundary`].
    pub fn is_at_frame_boundary(&self) -> bool {
        self.decoder.is_at_frame_boundary()
    }

    /// Memory held for a frame being reassembled (the buffer's capacity): what a shell
    /// counts against its budget for partial input.
    pub fn buffered(&self) -> usize {
        self.partial.capacity()
    }

    /// See [`Decoder::finish`].
    pub fn finish(&self) -> Result<(), DecodeError> {
        self.decoder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(wire: &[u8], chunk: usize) -> Result<Vec<Frame<'static>>, DecodeError> {
        let mut reader = FrameReader::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            let mut input = piece;
            while let Some(f) = reader.next(&mut input)? {
                out.push(f.into_owned());
            }
            assert!(input.is_empty());
        }
        reader.finish()?;
        Ok(out)
    }

    #[test]
    fn tv2_ack_and_eof_frames_are_byte_exact() {
        let mut out = Vec::new();
        encode_frame(1, &[3, 0], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0, 1, 3, 0]);
        assert_eq!(eof_frame(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            encode_header(499_999, 209).unwrap(),
            [0, 0, 0, 0xd1, 0, 0x07, 0xa1, 0x1f]
        );
    }

    #[test]
    fn one_byte_at_a_time_decodes() {
        let mut wire = Vec::new();
        encode_frame(1, b"\x00SERVICE noop\n\x00", &mut wire).unwrap();
        wire.extend_from_slice(&eof_frame(1));
        encode_frame(499_998, b"x", &mut wire).unwrap();
        let frames = frames_of(&wire, 1).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].handle, 1);
        assert_eq!(&*frames[0].payload, b"\x00SERVICE noop\n\x00");
        assert!(frames[1].is_eof());
        assert_eq!(&*frames[2].payload, b"x");
    }

    #[test]
    fn buffered_counts_a_partial_frame_and_drops_to_zero_when_it_completes() {
        let payload = vec![7u8; 100_000];
        let mut wire = Vec::new();
        encode_frame(1, &payload, &mut wire).unwrap();
        let mut reader = FrameReader::new();
        let (first, rest) = wire.split_at(60_000);
        let mut input = first;
        assert!(reader.next(&mut input).unwrap().is_none());
        assert!(reader.buffered() >= 60_000 - HEADER_LEN);
        let mut input = rest;
        let f = reader.next(&mut input).unwrap().unwrap();
        assert_eq!(f.payload.len(), 100_000);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn whole_frame_in_input_is_borrowed() {
        let mut wire = Vec::new();
        encode_frame(7, b"hello", &mut wire).unwrap();
        let mut reader = FrameReader::new();
        let mut input = &wire[..];
        let f = reader.next(&mut input).unwrap().unwrap();
        assert!(matches!(f.payload, Cow::Borrowed(b"hello")));
    }

    #[test]
    fn streaming_decoder_never_buffers_payload() {
        let payload = vec![0xab; NETWORK_BLOCK_BYTES];
        let mut wire = Vec::new();
        encode_frame(50092, &payload, &mut wire).unwrap();
        let mut dec = Decoder::new();
        let mut seen = 0;
        for piece in wire.chunks(1000) {
            let mut input = piece;
            while let Some(ev) = dec.next(&mut input).unwrap() {
                if let Event::Data { chunk, handle, .. } = ev {
                    assert_eq!(handle, 50092);
                    // Each chunk is a sub-slice of the piece we passed in.
                    assert!(piece.as_ptr_range().contains(&chunk.as_ptr()));
                    seen += chunk.len();
                }
            }
        }
        assert_eq!(seen, NETWORK_BLOCK_BYTES);
        assert!(dec.is_at_frame_boundary());
    }

    #[test]
    fn max_frame_len_is_accepted_one_more_is_not() {
        let mut dec = Decoder::new();
        let header = FrameHeader {
            len: MAX_FRAME_LEN,
            handle: 1,
        }
        .to_bytes();
        let mut input = &header[..];
        assert_eq!(
            dec.next(&mut input).unwrap(),
            Some(Event::Start(FrameHeader {
                len: MAX_FRAME_LEN,
                handle: 1
            }))
        );
        let mut dec = Decoder::new();
        let header = FrameHeader {
            len: MAX_FRAME_LEN + 1,
            handle: 1,
        }
        .to_bytes();
        let mut input = &header[..];
        let err = dec.next(&mut input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid frame: length 4194305 on handle 1 exceeds the 4194304-byte limit"
        );
        // The decoder stays failed.
        assert_eq!(dec.next(&mut &b"more"[..]).unwrap_err(), err);
        assert_eq!(dec.finish().unwrap_err(), err);
        assert_eq!(
            encode_header(1, MAX_FRAME_LEN as usize + 1),
            Err(FrameTooLong { len: 4_194_305 })
        );
    }

    #[test]
    fn stray_text_is_reported_as_text() {
        let wire = b"amandad: error [could not open conf]\nmore\x01";
        let mut dec = Decoder::new();
        let mut input = &wire[..];
        match dec.next(&mut input).unwrap_err() {
            DecodeError::TooLong { handle, text, .. } => {
                assert_eq!(handle, u32::from_be_bytes(*b"dad:"));
                assert_eq!(
                    text.as_deref(),
                    Some("amandad: error [could not open conf]")
                );
            }
            e => panic!("{e:?}"),
        }
        let e = Decoder::new().next(&mut &wire[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer sent text, not Amanda frames: \"amandad: error [could not open conf]\""
        );
    }

    #[test]
    fn stray_text_is_capped() {
        let wire = vec![b'x'; 500];
        match Decoder::new().next(&mut &wire[..]).unwrap_err() {
            DecodeError::TooLong { text: Some(t), .. } => assert_eq!(t.len(), MAX_STRAY_TEXT),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn binary_garbage_has_no_text() {
        let wire = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        assert!(matches!(
            Decoder::new().next(&mut &wire[..]),
            Err(DecodeError::TooLong {
                len: u32::MAX,
                handle: 1,
                text: None
            })
        ));
    }

    #[test]
    fn finish_reports_truncation() {
        let mut dec = Decoder::new();
        let mut input = &[0u8, 0, 0][..];
        assert_eq!(dec.next(&mut input), Ok(None));
        assert_eq!(dec.finish(), Err(DecodeError::TruncatedHeader { have: 3 }));
        let mut dec = Decoder::new();
        let mut input = &[0u8, 0, 0, 4, 0, 0, 0, 9, b'a'][..];
        while dec.next(&mut input).unwrap().is_some() {}
        assert_eq!(
            dec.finish(),
            Err(DecodeError::TruncatedPayload {
                handle: 9,
                len: 4,
                received: 1
            })
        );
        assert_eq!(
            dec.finish().unwrap_err().to_string(),
            "connection closed inside a frame on handle 9: 1 of 4 payload bytes received"
        );
    }

    fn frame_list() -> impl Strategy<Value = Vec<(u32, Vec<u8>)>> {
        proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn frames_survive_arbitrary_chunking(
            frames in frame_list(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut wire = Vec::new();
            for (h, p) in &frames {
                encode_frame(*h, p, &mut wire).unwrap();
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(wire.len());
            points.sort_unstable();
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            let mut start = 0;
            for p in points {
                let mut input = &wire[start..p];
                while let Some(f) = reader.next(&mut input).unwrap() {
                    got.push((f.handle, f.payload.into_owned()));
                }
                prop_assert!(input.is_empty());
                start = p;
            }
            prop_assert!(reader.finish().is_ok());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn streaming_events_reencode_to_the_input(
            frames in frame_list(),
            chunk in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for (h, p) in &frames {
                encode_frame(*h, p, &mut wire).unwrap();
            }
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut input = piece;
                while let Some(ev) = dec.next(&mut input).unwrap() {
                    match ev {
                        Event::Start(h) => out.extend_from_slice(&h.to_bytes()),
                        Event::Data { chunk, .. } => out.extend_from_slice(chunk),
                        Event::Eof { handle } => out.extend_from_slice(&eof_frame(handle)),
                    }
                }
            }
            prop_assert_eq!(out, wire);
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..16) {
            let mut dec = Decoder::new();
            for piece in data.chunks(chunk) {
                let mut input = piece;
                while let Ok(Some(_)) = dec.next(&mut input) {}
            }
            let _ = dec.finish();
        }
    }
}
