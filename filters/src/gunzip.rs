//! Streaming gunzip for restores: undoes `compress ... fast|best` (ours, which is many
//! members, or the real Amanda's `gzip`, which is one) the way `gzip -dc` does.
//!
//! [`Gunzip`] is push-based and sans-IO: the caller hands it compressed bytes and an output
//! buffer, it says how much it consumed and produced. Every member's header is checked
//! (RFC 1952: magic, method 8, reserved flags clear, the optional FHCRC), every member's
//! CRC-32 and ISIZE are checked against what was inflated, members follow each other, and
//! NUL bytes after the last member are ignored (amcrypt-ossl's decryption pads its output
//! with NULs to a multiple of 96 bytes; `gzip -dc` ignores them too). Anything else after a
//! member is an error with its offset, after all the data before it was delivered: `gzip`
//! only warns ("trailing garbage ignored"), but a damaged member header looks exactly like
//! garbage, and a restore must not end early without saying so.
//!
//! What this module must not do: allocate in proportion to its input (header names and
//! extra fields are skipped, not kept; output goes only into the caller's buffer, so a
//! decompression bomb costs time, never memory), or panic on any input (the `filters_gunzip`
//! fuzz target).

use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};

/// Why a gzip stream cannot be read. Offsets count compressed bytes from the start of
/// the stream; members count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GunzipError {
    /// The first bytes are not a gzip magic number.
    #[error("not gzip data: bytes {offset}.. are {found:02x?}, a gzip member starts with 1f 8b")]
    NotGzip {
        /// Where.
        offset: u64,
        /// The bytes found (up to 2).
        found: Vec<u8>,
    },
    /// A member header names a compression method other than deflate (8).
    #[error(
        "gzip member {member} at offset {offset}: compression method {method}, not deflate (8)"
    )]
    Method {
        /// Which member.
        member: u64,
        /// Where.
        offset: u64,
        /// The method byte.
        method: u8,
    },
    /// Reserved header flag bits are set (gzip refuses such members).
    #[error("gzip member {member} at offset {offset}: reserved header flags {flags:#04x} are set")]
    Flags {
        /// Which member.
        member: u64,
        /// Where.
        offset: u64,
        /// The flag byte.
        flags: u8,
    },
    /// The header's own CRC (FHCRC) does not match.
    #[error("gzip member {member}: header CRC {stored:04x} does not match {computed:04x}")]
    HeaderCrc {
        /// Which member.
        member: u64,
        /// The stored CRC-16.
        stored: u16,
        /// The computed one.
        computed: u16,
    },
    /// The deflate data is corrupt.
    #[error("gzip member {member}: corrupt deflate data near offset {offset}: {message}")]
    Deflate {
        /// Which member.
        member: u64,
        /// About where (the bytes consumed before the error).
        offset: u64,
        /// The inflater's message.
        message: String,
    },
    /// A member's CRC-32 does not match its data.
    #[error(
        "gzip member {member}: CRC-32 {stored:08x} in the trailer at offset {offset}, {computed:08x} computed"
    )]
    Crc {
        /// Which member.
        member: u64,
        /// Where the trailer starts.
        offset: u64,
        /// The stored CRC.
        stored: u32,
        /// The computed CRC.
        computed: u32,
    },
    /// A member's length (mod 2^32) does not match its data.
    #[error(
        "gzip member {member}: length {stored} in the trailer at offset {offset}, {computed} inflated (mod 2^32)"
    )]
    Length {
        /// Which member.
        member: u64,
        /// Where the trailer starts.
        offset: u64,
        /// The stored ISIZE.
        stored: u32,
        /// What was inflated, mod 2^32.
        computed: u32,
    },
    /// Bytes after a complete member that are neither a new member nor NUL padding.
    #[error(
        "trailing garbage after gzip member {members} at offset {offset} (all data before it was delivered)"
    )]
    TrailingGarbage {
        /// Complete members before it.
        members: u64,
        /// Where.
        offset: u64,
    },
    /// The input ended inside a member.
    #[error("gzip data truncated in member {member} ({place}) at offset {offset}")]
    Truncated {
        /// Which member.
        member: u64,
        /// Header, data or trailer.
        place: &'static str,
        /// Where the input ended.
        offset: u64,
    },
    /// No input at all.
    #[error("no gzip data (empty input)")]
    Empty,
}

impl From<GunzipError> for io::Error {
    fn from(e: GunzipError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 10 fixed header bytes (`got` of them so far).
    Fixed,
    /// The 2-byte XLEN.
    ExtraLen,
    /// Skipping `skip` bytes of the extra field.
    Extra,
    /// Skipping the zero-terminated name.
    Name,
    /// Skipping the zero-terminated comment.
    Comment,
    /// The 2-byte header CRC.
    HeaderCrc,
    /// Inflating.
    Body,
    /// The 8-byte trailer.
    Trailer,
    /// After a complete member: a new member, NUL padding, or the end.
    Between,
    /// In NUL padding after the last member.
    Zeros,
}

/// A streaming, multi-member gzip decoder (see the module header).
pub struct Gunzip {
    state: State,
    inflate: Decompress,
    /// CRC-32 of the member's data.
    crc: flate2::Crc,
    /// CRC-32 of the member's header bytes (for FHCRC).
    header_crc: flate2::Crc,
    buf: [u8; 10],
    got: usize,
    flags: u8,
    skip: usize,
    /// Complete members.
    members: u64,
    /// Offset of the member being read.
    member_start: u64,
    bytes_in: u64,
    bytes_out: u64,
    error: Option<GunzipError>,
}

impl std::fmt::Debug for Gunzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gunzip")
            .field("state", &self.state)
            .field("members", &self.members)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .finish()
    }
}

impl Default for Gunzip {
    fn default() -> Self {
        Gunzip::new()
    }
}

/// How far one [`Gunzip::decode`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (the caller drops them).
    pub consumed: usize,
    /// Output bytes written at the start of the output buffer.
    pub produced: usize,
}

impl Gunzip {
    /// A decoder at the start of a stream.
    pub fn new() -> Gunzip {
        Gunzip {
            state: State::Fixed,
            inflate: Decompress::new(false),
            crc: flate2::Crc::new(),
            header_crc: flate2::Crc::new(),
            buf: [0; 10],
            got: 0,
            flags: 0,
            skip: 0,
            members: 0,
            member_start: 0,
            bytes_in: 0,
            bytes_out: 0,
            error: None,
        }
    }

    /// Complete members so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Compressed bytes consumed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes produced so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Records `e` (every later call returns it). Output made in this call is returned
    /// first, so that all data before the error reaches the caller.
    fn stop(&mut self, e: GunzipError, i: usize, o: usize) -> Result<Progress, GunzipError> {
        self.bytes_in += i as u64;
        self.bytes_out += o as u64;
        self.error = Some(e.clone());
        if o > 0 {
            return Ok(Progress {
                consumed: i,
                produced: o,
            });
        }
        Err(e)
    }

    fn member(&self) -> u64 {
        self.members + 1
    }

    /// Decodes from `input` into `output` as far as both allow. Returns what was consumed
    /// and produced; call again with the rest of the input (and/or a fresh output buffer).
    /// A call that consumes nothing and produces nothing needs more input (or, with an
    /// empty `output`, room). After an error every call returns it again; the output of
    /// earlier calls is valid data.
    pub fn decode(&mut self, input: &[u8], output: &mut [u8]) -> Result<Progress, GunzipError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut i = 0usize;
        let mut o = 0usize;
        loop {
            match self.state {
                State::Fixed => {
                    while self.got < 10 && i < input.len() {
                        let b = input[i];
                        let at = self.bytes_in + i as u64;
                        if self.got < 2 && b != [0x1f, 0x8b][self.got] {
                            let found = self.buf[..self.got].iter().copied().chain([b]).collect();
                            let e = if self.members == 0 {
                                GunzipError::NotGzip {
                                    offset: self.member_start,
                                    found,
                                }
                            } else {
                                GunzipError::TrailingGarbage {
                                    members: self.members,
                                    offset: at - self.got as u64,
                                }
                            };
                            return self.stop(e, i, o);
                        }
                        self.buf[self.got] = b;
                        self.got += 1;
                        i += 1;
                    }
                    if self.got < 10 {
                        break;
                    }
                    let (method, flags) = (self.buf[2], self.buf[3]);
                    if method != 8 {
                        let e = GunzipError::Method {
                            member: self.member(),
                            offset: self.member_start,
                            method,
                        };
                        return self.stop(e, i, o);
                    }
                    if flags & RESERVED != 0 {
                        let e = GunzipError::Flags {
                            member: self.member(),
                            offset: self.member_start,
                            flags,
                        };
                        return self.stop(e, i, o);
                    }
                    self.flags = flags;
                    self.header_crc.reset();
                    self.header_crc.update(&self.buf);
                    self.got = 0;
                    self.state = self.after(State::Fixed);
                }
                State::ExtraLen => {
                    let from = i;
                    let full = self.fill(input, &mut i, 2);
                    self.header_crc.update(&input[from..i]);
                    if !full {
                        break;
                    }
                    self.skip = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
                    self.got = 0;
                    self.state = State::Extra;
                }
                State::Extra => {
                    let n = self.skip.min(input.len() - i);
                    self.header_crc.update(&input[i..i + n]);
                    i += n;
                    self.skip -= n;
                    if self.skip > 0 {
                        break;
                    }
                    self.state = self.after(State::Extra);
                }
                State::Name | State::Comment => {
                    let rest = &input[i..];
                    match rest.iter().position(|b| *b == 0) {
                        Some(z) => {
                            self.header_crc.update(&rest[..=z]);
                            i += z + 1;
                            self.state = self.after(self.state);
                        }
                        None => {
                            self.header_crc.update(rest);
                            i = input.len();
                            break;
                        }
                    }
                }
                State::HeaderCrc => {
                    if !self.fill(input, &mut i, 2) {
                        break;
                    }
                    let stored = u16::from_le_bytes([self.buf[0], self.buf[1]]);
                    let computed = (self.header_crc.sum() & 0xffff) as u16;
                    if stored != computed {
                        let e = GunzipError::HeaderCrc {
                            member: self.member(),
                            stored,
                            computed,
                        };
                        return self.stop(e, i, o);
                    }
                    self.got = 0;
                    self.state = State::Body;
                }
                State::Body => {
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let r = self.inflate.decompress(
                        &input[i..],
                        &mut output[o..],
                        FlushDecompress::None,
                    );
                    let used = (self.inflate.total_in() - in0) as usize;
                    let made = (self.inflate.total_out() - out0) as usize;
                    self.crc.update(&output[o..o + made]);
                    i += used;
                    o += made;
                    match r {
                        Ok(Status::StreamEnd) => {
                            self.got = 0;
                            self.state = State::Trailer;
                        }
                        Ok(Status::Ok | Status::BufError) => {
                            if used == 0 && made == 0 {
                                break;
                            }
                        }
                        Err(e) => {
                            let e = GunzipError::Deflate {
                                member: self.member(),
                                offset: self.bytes_in + i as u64,
                                message: inflate_message(&e),
                            };
                            return self.stop(e, i, o);
                        }
                    }
                }
                State::Trailer => {
                    if !self.fill(input, &mut i, 8) {
                        break;
                    }
                    let at = self.bytes_in + i as u64 - 8;
                    let b = &self.buf;
                    let stored_crc = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let stored_len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    let computed_crc = self.crc.sum();
                    let computed_len = self.crc.amount();
                    if stored_crc != computed_crc {
                        let e = GunzipError::Crc {
                            member: self.member(),
                            offset: at,
                            stored: stored_crc,
                            computed: computed_crc,
                        };
                        return self.stop(e, i, o);
                    }
                    if stored_len != computed_len {
                        let e = GunzipError::Length {
                            member: self.member(),
                            offset: at,
                            stored: stored_len,
                            computed: computed_len,
                        };
                        return self.stop(e, i, o);
                    }
                    self.members += 1;
                    self.inflate.reset(false);
                    self.crc.reset();
                    self.got = 0;
                    self.state = State::Between;
                }
                State::Between => {
                    let Some(&b) = input.get(i) else { break };
                    if b == 0 {
                        self.state = State::Zeros;
                    } else {
                        // Checked byte by byte in `Fixed` (garbage is reported there).
                        self.member_start = self.bytes_in + i as u64;
                        self.state = State::Fixed;
                    }
                }
                State::Zeros => {
                    let rest = &input[i..];
                    match rest.iter().position(|b| *b != 0) {
                        Some(nz) => {
                            i += nz;
                            let e = GunzipError::TrailingGarbage {
                                members: self.members,
                                offset: self.bytes_in + i as u64,
                            };
                            return self.stop(e, i, o);
                        }
                        None => {
                            i = input.len();
                            break;
                        }
                    }
                }
            }
        }
        self.bytes_in += i as u64;
        self.bytes_out += o as u64;
        Ok(Progress {
            consumed: i,
            produced: o,
        })
    }

    /// Copies bytes from `input[*i..]` into `buf` until it holds `n`; says whether it does.
    fn fill(&mut self, input: &[u8], i: &mut usize, n: usize) -> bool {
        let take = (n - self.got).min(input.len() - *i);
        self.buf[self.got..self.got + take].copy_from_slice(&input[*i..*i + take]);
        self.got += take;
        *i += take;
        self.got == n
    }

    /// The header part that follows `done`, given the member's flags.
    fn after(&self, done: State) -> State {
        let order = [
            (State::ExtraLen, FEXTRA),
            (State::Name, FNAME),
            (State::Comment, FCOMMENT),
            (State::HeaderCrc, FHCRC),
        ];
        let start = match done {
            State::Fixed => 0,
            State::Extra => 1,
            State::Name => 2,
            State::Comment => 3,
            _ => 4,
        };
        order[start..]
            .iter()
            .find(|(_, f)| self.flags & f != 0)
            .map_or(State::Body, |(s, _)| *s)
    }

    /// Whether the input may end here: after at least one complete member (and any NUL
    /// padding). Call it at the end of the input.
    pub fn finish(&self) -> Result<(), GunzipError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let place = match self.state {
            State::Between | State::Zeros => return Ok(()),
            State::Fixed if self.members == 0 && self.bytes_in == 0 => {
                return Err(GunzipError::Empty);
            }
            State::Fixed
            | State::ExtraLen
            | State::Extra
            | State::Name
            | State::Comment
            | State::HeaderCrc => "header",
            State::Body => "data",
            State::Trailer => "trailer",
        };
        Err(GunzipError::Truncated {
            member: self.member(),
            place,
            offset: self.bytes_in,
        })
    }

    /// Whether the decoder has stopped on an error.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// The inflater's complaint, in words for an admin. zlib-rs reports some corrupt data
/// found on its fast path as "repeated call with bad state" although it is the first call
/// after the damage (we never call again after an error).
fn inflate_message(e: &flate2::DecompressError) -> String {
    let m = e.message().unwrap_or("corrupt deflate data");
    if m.contains("repeated call with bad state") {
        "corrupt deflate data".to_owned()
    } else {
        m.to_owned()
    }
}

/// A blocking reader over [`Gunzip`]: reads gzip data from `inner`, yields the
/// uncompressed bytes, and fails with [`io::ErrorKind::InvalidData`] (wrapping a
/// [`GunzipError`]) on bad or truncated data.
pub struct GunzipReader<R: Read> {
    inner: R,
    decoder: Gunzip,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> GunzipReader<R> {
    /// A reader of `inner`.
    pub fn new(inner: R) -> GunzipReader<R> {
        GunzipReader {
            inner,
            decoder: Gunzip::new(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The decoder (members and byte counts).
    pub fn decoder(&self) -> &Gunzip {
        &self.decoder
    }

    /// The inner reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for GunzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = loop {
                    match self.inner.read(&mut self.buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                self.eof = self.end == 0;
            }
            let p = self.decoder.decode(&self.buf[self.start..self.end], out)?;
            self.start += p.consumed;
            if p.produced > 0 {
                return Ok(p.produced);
            }
            if self.eof && self.start == self.end {
                self.decoder.finish()?;
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(data: &[u8]) -> (Vec<u8>, Result<(), GunzipError>) {
        crate::fuzz::decode_all(data, data.len(), 333)
    }

    /// A member with every optional header field: FEXTRA, FNAME, FCOMMENT, FHCRC.
    fn full_header_member(data: &[u8]) -> Vec<u8> {
        let plain = gz(data);
        let mut h = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        h.extend_from_slice(&[4, 0, b'A', b'B', 0, 0]);
        h.extend_from_slice(b"file.tar\0a comment\0");
        let mut c = flate2::Crc::new();
        c.update(&h);
        h.extend_from_slice(&((c.sum() & 0xffff) as u16).to_le_bytes());
        h.extend_from_slice(&plain[10..]);
        h
    }

    #[test]
    fn concatenated_members_and_optional_header_fields_decode_like_gzip() {
        let mut s = gz(b"first member\n");
        s.extend(full_header_member(b"second member\n"));
        s.extend(gz(b""));
        s.extend(gz(b"third\n"));
        let (out, r) = decode(&s);
        assert_eq!(r, Ok(()));
        assert_eq!(out, b"first member\nsecond member\nthird\n");
    }

    #[test]
    fn nul_padding_after_the_last_member_is_ignored() {
        // amcrypt-ossl -d leaves the NULs it padded with (spec §11.4).
        let mut s = gz(b"data");
        s.extend([0u8; 70]);
        let (out, r) = decode(&s);
        assert_eq!((out.as_slice(), r), (&b"data"[..], Ok(())));
    }

    #[test]
    fn garbage_after_a_member_is_an_error_with_its_offset_after_the_data() {
        let first = gz(b"kept");
        let mut s = first.clone();
        s.extend(b"PK\x03\x04");
        let (out, r) = decode(&s);
        assert_eq!(out, b"kept");
        assert_eq!(
            r,
            Err(GunzipError::TrailingGarbage {
                members: 1,
                offset: first.len() as u64
            })
        );
        // NULs then garbage: the same.
        let mut s = first.clone();
        s.extend([0, 0, 7]);
        let (_, r) = decode(&s);
        assert_eq!(
            r,
            Err(GunzipError::TrailingGarbage {
                members: 1,
                offset: first.len() as u64 + 2
            })
        );
    }

    #[test]
    fn bad_input_gets_the_error_that_names_it() {
        assert!(matches!(decode(b"").1, Err(GunzipError::Empty)));
        assert!(matches!(
            decode(b"PK\x03\x04").1,
            Err(GunzipError::NotGzip { offset: 0, .. })
        ));
        let good = gz(b"some data that is long enough to matter");
        let mut m = good.clone();
        m[2] = 7;
        assert!(matches!(
            decode(&m).1,
            Err(GunzipError::Method { method: 7, .. })
        ));
        let mut f = good.clone();
        f[3] = 0x20;
        assert!(matches!(decode(&f).1, Err(GunzipError::Flags { .. })));
        let mut c = good.clone();
        let n = c.len();
        c[n - 8] ^= 1;
        assert!(matches!(
            decode(&c).1,
            Err(GunzipError::Crc { member: 1, .. })
        ));
        let mut l = good.clone();
        l[n - 1] ^= 1;
        assert!(matches!(decode(&l).1, Err(GunzipError::Length { .. })));
        let mut hc = full_header_member(b"x");
        hc[27] ^= 1;
        assert!(matches!(decode(&hc).1, Err(GunzipError::HeaderCrc { .. })));
        let mut d = good.clone();
        d[10] = 0xff; // block type 3 (reserved)
        assert!(matches!(decode(&d).1, Err(GunzipError::Deflate { .. })));
        for (cut, place) in [(5, "header"), (14, "data"), (n - 3, "trailer")] {
            assert_eq!(
                decode(&good[..cut]).1,
                Err(GunzipError::Truncated {
                    member: 1,
                    place,
                    offset: cut as u64
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn output_is_bounded_by_the_callers_buffer() {
        // 64 MiB of zeros compress to ~64 KiB: each call yields at most the buffer.
        let bomb = gz(&vec![0u8; 64 << 20]);
        let mut d = Gunzip::new();
        let mut buf = [0u8; 4096];
        let p = d.decode(&bomb, &mut buf).unwrap();
        assert_eq!(p.produced, 4096);
        assert!(p.consumed < bomb.len());
    }

    #[test]
    fn an_error_sticks() {
        let mut d = Gunzip::new();
        let mut buf = [0u8; 16];
        assert!(d.decode(b"xx", &mut buf).is_err());
        assert!(d.decode(&gz(b"ok"), &mut buf).is_err());
        assert!(d.failed() && d.finish().is_err());
    }
}
