//! The MESG stream of a sendbackup (spec §6.7.5, §6.7.7): its lines, a bounded line
//! splitter, and the dumper's decision on the outcome of a dump.
//!
//! [`MesgLine::parse`] classifies one line exactly like the dumper's `process_dumpline`
//! (`| ` output, `? ` strange, `sendbackup: ...` keywords, anything else "??" strange);
//! [`MesgLine::encode`] writes what the client's sendbackup writes. [`LineSplitter`] turns
//! stream chunks of any size into lines, with a cap on the line length so that a hostile
//! client cannot make us buffer without limit. [`DumpTracker`] is the sans-IO heart of the
//! dumper's `do_dump`: feed it the lines, tell it when MESG ends and what arrived on DATA,
//! and it says DONE, STRANGE, FAILED or RETRY with the real dumper's texts, plus the checks
//! the real dumper skips (a missing client-CRC, a `size` line that disagrees with the bytes).
//! Its memory does not grow with the stream: the log keeps only what a report shows
//! ([`MesgLog`]), `state` lines are capped.
//!
//! What this module must not do: read sockets, keep time (a `data timeout` is the caller's),
//! or compute CRCs of data (see `crc`).

use std::collections::VecDeque;
use std::fmt;

use crate::crc::CrcValue;
use crate::header::FilterPrograms;
use crate::quote::{ByteString, Strtok, parse_c_int};

/// The `sendbackup: info` keys the dumper stores into the dump-file header.
pub const INFO_KEYS: [&str; 10] = [
    "BACKUP",
    "APPLICATION",
    "RECOVER_CMD",
    "COMPRESS_SUFFIX",
    "SERVER_CUSTOM_COMPRESS",
    "CLIENT_CUSTOM_COMPRESS",
    "SERVER_ENCRYPT",
    "CLIENT_ENCRYPT",
    "SERVER_DECRYPT_OPTION",
    "CLIENT_DECRYPT_OPTION",
];

/// One MESG line, as the dumper classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MesgLine {
    /// `|<text>`: normal output of the backup program (logged).
    Output(ByteString),
    /// `?<text>`: something strange (the dump becomes at least STRANGE).
    Strange(ByteString),
    /// `sendbackup: start <rest>`, e.g. `[host:/disk level 0]` (logged, ignored).
    Start(ByteString),
    /// `sendbackup: info <KEY>=<value>`.
    Info {
        /// The key, e.g. `BACKUP`.
        key: ByteString,
        /// The value (never empty).
        value: ByteString,
    },
    /// `sendbackup: info end`: header information complete; DATA may flow.
    InfoEnd,
    /// `sendbackup: size <n>`: the original size in KiB (`atoll` of the text).
    Size(i64),
    /// `sendbackup: end`.
    End,
    /// `sendbackup: error <rest>`: the dump fails; see [`MesgLine::error_text`].
    Error(ByteString),
    /// `sendbackup: warning <rest>`: STRANGE.
    Warning(ByteString),
    /// `sendbackup: native-CRC <crc>:<size>` (`None`: unparsable, read as 0:0).
    NativeCrc(Option<CrcValue>),
    /// `sendbackup: client-CRC <crc>:<size>`.
    ClientCrc(Option<CrcValue>),
    /// `sendbackup: no-op <rest>`: ignored, not logged.
    NoOp(ByteString),
    /// `sendbackup: state <line>`: a line of the state file.
    State(ByteString),
    /// `sendbackup: retry [delay n] [level n] [message ...]`.
    Retry {
        /// `delay`.
        delay: Option<i32>,
        /// `level`.
        level: Option<i32>,
        /// `message` (the dumper uses `"No message"`, quotes included, when absent).
        message: Option<ByteString>,
    },
    /// `sendbackup: statedone`: sent by 3.5.2+ clients to servers with feature 151; a 3.5.1
    /// dumper does not know it and treats it like [`MesgLine::Unknown`] (STRANGE, `??`).
    StateDone,
    /// A `sendbackup:` line the dumper accepts and ignores (e.g. `info` without `=`, `size`
    /// without a number, `state` without text).
    Ignored(ByteString),
    /// Anything else, e.g. lines starting with `&` or `!` (the client's "unknown" tar
    /// output): logged with a `??` prefix, STRANGE.
    Unknown(ByteString),
}

impl MesgLine {
    /// Classifies one line (without its newline) like `process_dumpline`.
    pub fn parse(line: &[u8]) -> MesgLine {
        match line.first() {
            Some(b'|') => return MesgLine::Output(line[1..].into()),
            Some(b'?') => return MesgLine::Strange(line[1..].into()),
            Some(b's') => {}
            _ => return MesgLine::Unknown(line.into()),
        }
        let unknown = || MesgLine::Unknown(line.into());
        let ignored = || MesgLine::Ignored(line.into());
        let mut t = Strtok::new(line);
        if t.next_token(b" ") != Some(b"sendbackup:".as_slice()) {
            return unknown();
        }
        let Some(keyword) = t.next_token(b" ") else {
            return unknown();
        };
        let rest = t.next_token(b"");
        match keyword {
            b"start" => MesgLine::Start(rest.unwrap_or_default().into()),
            b"size" => rest.map_or_else(ignored, |r| MesgLine::Size(parse_c_int(r).unwrap_or(0))),
            b"no-op" => MesgLine::NoOp(rest.unwrap_or_default().into()),
            b"state" => rest.map_or_else(ignored, |r| MesgLine::State(r.into())),
            b"native-CRC" => MesgLine::NativeCrc(rest.and_then(|r| CrcValue::parse(r).ok())),
            b"client-CRC" => MesgLine::ClientCrc(rest.and_then(|r| CrcValue::parse(r).ok())),
            b"retry" => {
                let mut t = Strtok::new(rest.unwrap_or_default());
                let mut message = None;
                let (delay, level, tok) = t.retry_delay_level();
                if tok == Some(b"message".as_slice()) {
                    message = t.next_token(b"").map(ByteString::from);
                }
                MesgLine::Retry {
                    delay,
                    level,
                    message,
                }
            }
            b"end" => MesgLine::End,
            b"statedone" => MesgLine::StateDone,
            b"warning" => MesgLine::Warning(rest.unwrap_or_default().into()),
            b"error" => MesgLine::Error(rest.unwrap_or_default().into()),
            b"info" => match rest {
                None => ignored(),
                Some(b"end") => MesgLine::InfoEnd,
                Some(r) => {
                    let mut kv = Strtok::new(r);
                    match (kv.next_token(b"="), kv.next_token(b"")) {
                        (Some(key), Some(value)) => MesgLine::Info {
                            key: key.into(),
                            value: value.into(),
                        },
                        _ => ignored(),
                    }
                }
            },
            _ => unknown(),
        }
    }

    /// `sendbackup: start [<host>:<disk> level <n>]`.
    pub fn start(host: &[u8], disk: &[u8], level: i32) -> MesgLine {
        let mut rest = b"[".to_vec();
        rest.extend_from_slice(host);
        rest.push(b':');
        rest.extend_from_slice(disk);
        rest.extend_from_slice(format!(" level {level}]").as_bytes());
        MesgLine::Start(rest.into())
    }

    /// A line of the backup program's output as the client's sendbackup writes it:
    /// `| <text>` (normal) or `? <text>` (strange).
    pub fn program_output(text: &[u8], strange: bool) -> MesgLine {
        let t = [b" ".as_slice(), text].concat().into();
        if strange {
            MesgLine::Strange(t)
        } else {
            MesgLine::Output(t)
        }
    }

    /// `sendbackup: error [<message>]`.
    pub fn error(message: &[u8]) -> MesgLine {
        MesgLine::Error([b"[".as_slice(), message, b"]"].concat().into())
    }

    /// The dumper's error text for an `Error` line (`full_line` is the whole line, used in
    /// `bad remote error: <line>` when the text does not start with `[`).
    pub fn error_text(rest: &[u8], full_line: &[u8]) -> String {
        MesgLine::client_error(rest, full_line).to_string()
    }

    /// The failure an `Error` line makes: the text between `[` and `]`, or the whole line
    /// when the text does not start with `[`.
    pub fn client_error(rest: &[u8], full_line: &[u8]) -> DumpError {
        match rest.strip_prefix(b"[") {
            Some(inner) => {
                let end = memchr::memchr(b']', inner).unwrap_or(inner.len());
                DumpError::Client(String::from_utf8_lossy(&inner[..end]).into_owned())
            }
            None => DumpError::BadRemoteError(String::from_utf8_lossy(full_line).into_owned()),
        }
    }

    /// The line as the client writes it, with its newline. `Ignored`/`Unknown` lines are
    /// written back as they were.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let kw = |out: &mut Vec<u8>, k: &str, rest: &[u8]| {
            out.extend_from_slice(b"sendbackup: ");
            out.extend_from_slice(k.as_bytes());
            if !rest.is_empty() {
                out.push(b' ');
                out.extend_from_slice(rest);
            }
        };
        match self {
            MesgLine::Output(t) => {
                out.push(b'|');
                out.extend_from_slice(t);
            }
            MesgLine::Strange(t) => {
                out.push(b'?');
                out.extend_from_slice(t);
            }
            MesgLine::Start(r) => kw(&mut out, "start", r),
            MesgLine::Info { key, value } => {
                kw(&mut out, "info", key);
                out.push(b'=');
                out.extend_from_slice(value);
            }
            MesgLine::InfoEnd => kw(&mut out, "info", b"end"),
            MesgLine::Size(n) => kw(&mut out, "size", n.to_string().as_bytes()),
            MesgLine::End => kw(&mut out, "end", b""),
            MesgLine::StateDone => kw(&mut out, "statedone", b""),
            MesgLine::Error(r) => kw(&mut out, "error", r),
            MesgLine::Warning(r) => kw(&mut out, "warning", r),
            MesgLine::NativeCrc(c) => kw(
                &mut out,
                "native-CRC",
                c.unwrap_or_default().to_string().as_bytes(),
            ),
            MesgLine::ClientCrc(c) => kw(
                &mut out,
                "client-CRC",
                c.unwrap_or_default().to_string().as_bytes(),
            ),
            MesgLine::NoOp(r) => kw(&mut out, "no-op", r),
            MesgLine::State(r) => kw(&mut out, "state", r),
            MesgLine::Retry {
                delay,
                level,
                message,
            } => {
                let mut r = Vec::new();
                if let Some(d) = delay {
                    r.extend_from_slice(format!("delay {d}").as_bytes());
                }
                if let Some(l) = level {
                    if !r.is_empty() {
                        r.push(b' ');
                    }
                    r.extend_from_slice(format!("level {l}").as_bytes());
                }
                if let Some(m) = message {
                    if !r.is_empty() {
                        r.push(b' ');
                    }
                    r.extend_from_slice(b"message ");
                    r.extend_from_slice(m);
                }
                kw(&mut out, "retry", &r);
            }
            MesgLine::Ignored(l) | MesgLine::Unknown(l) => out.extend_from_slice(l),
        }
        out.push(b'\n');
        out
    }

    /// Whether the dumper counts this line as making the dump (at least) STRANGE.
    pub fn is_strange(&self) -> bool {
        matches!(
            self,
            MesgLine::Strange(_)
                | MesgLine::Warning(_)
                | MesgLine::Unknown(_)
                | MesgLine::StateDone
        )
    }
}

/// A line from [`LineSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitLine {
    /// A complete line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the limit was dropped; `len` is its length in bytes.
    TooLong {
        /// Its length, newline excluded.
        len: usize,
    },
}

/// Splits a byte stream that arrives in chunks of any size into `\n`-terminated lines.
///
/// Memory is bounded: at most `max_line` bytes of an unfinished line are kept; a longer line
/// is dropped and reported once as [`SplitLine::TooLong`] when its newline arrives.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max_line: usize,
    buf: Vec<u8>,
    /// Bytes of the current too-long line dropped so far (`Some` while dropping).
    dropping: Option<usize>,
    ready: VecDeque<SplitLine>,
}

impl LineSplitter {
    /// The default line limit: 64 KiB, far above any real MESG line.
    pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

    /// A splitter keeping at most `max_line` bytes of an unfinished line.
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            buf: Vec::new(),
            dropping: None,
            ready: VecDeque::new(),
        }
    }

    /// Adds the next chunk of the stream.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(n) => {
                    let (part, rest) = (&chunk[..n], &chunk[n + 1..]);
                    match self.dropping.take() {
                        Some(dropped) => self.ready.push_back(SplitLine::TooLong {
                            len: dropped.saturating_add(part.len()),
                        }),
                        None if self.buf.len() + part.len() > self.max_line => {
                            let len = self.buf.len() + part.len();
                            self.buf.clear();
                            self.ready.push_back(SplitLine::TooLong { len });
                        }
                        None => {
                            let mut line = std::mem::take(&mut self.buf);
                            line.extend_from_slice(part);
                            self.ready.push_back(SplitLine::Line(line));
                        }
                    }
                    chunk = rest;
                }
                None => {
                    match &mut self.dropping {
                        Some(dropped) => *dropped = dropped.saturating_add(chunk.len()),
                        None if self.buf.len() + chunk.len() > self.max_line => {
                            self.dropping = Some(self.buf.len() + chunk.len());
                            self.buf = Vec::new();
                        }
                        None => self.buf.extend_from_slice(chunk),
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<SplitLine> {
        self.ready.pop_front()
    }

    /// At end of stream: the unterminated rest, if any (the dumper logs it as an error and
    /// otherwise ignores it). `Err(len)` if it was too long to keep.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, usize>> {
        if let Some(dropped) = self.dropping.take() {
            return Some(Err(dropped));
        }
        (!self.buf.is_empty())
            .then(|| std::mem::take(&mut self.buf))
            .map(Ok)
    }

    /// Bytes currently buffered (for tests of the bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl Default for LineSplitter {
    fn default() -> LineSplitter {
        LineSplitter::new(LineSplitter::DEFAULT_MAX_LINE)
    }
}

/// The header fields a dump's MESG stream supplied (`parse_info_line`); the last value of a
/// repeated key wins, unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoFields {
    /// `BACKUP` (mandatory for the header).
    pub backup: Option<ByteString>,
    /// `APPLICATION`.
    pub application: Option<ByteString>,
    /// `RECOVER_CMD`.
    pub recover_cmd: Option<ByteString>,
    /// `COMPRESS_SUFFIX`.
    pub compress_suffix: Option<ByteString>,
    /// `SERVER_CUSTOM_COMPRESS`, `SERVER_ENCRYPT`, `SERVER_DECRYPT_OPTION`.
    pub server: FilterPrograms,
    /// `CLIENT_CUSTOM_COMPRESS`, `CLIENT_ENCRYPT`, `CLIENT_DECRYPT_OPTION`.
    pub client: FilterPrograms,
}

impl InfoFields {
    fn set(&mut self, key: &[u8], value: ByteString) {
        let slot = match key {
            b"BACKUP" => &mut self.backup,
            b"APPLICATION" => &mut self.application,
            b"RECOVER_CMD" => &mut self.recover_cmd,
            b"COMPRESS_SUFFIX" => &mut self.compress_suffix,
            b"SERVER_CUSTOM_COMPRESS" => &mut self.server.custom_compress,
            b"CLIENT_CUSTOM_COMPRESS" => &mut self.client.custom_compress,
            b"SERVER_ENCRYPT" => &mut self.server.encrypt,
            b"CLIENT_ENCRYPT" => &mut self.client.encrypt,
            b"SERVER_DECRYPT_OPTION" => &mut self.server.decrypt_option,
            b"CLIENT_DECRYPT_OPTION" => &mut self.client.decrypt_option,
            _ => return,
        };
        *slot = Some(value);
    }
}

/// The verdict on a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DumpStatus {
    /// Success.
    Done,
    /// Success with notes (strange lines, warnings).
    Strange,
    /// Failure.
    Failed,
    /// The client asked for a retry (`sendbackup: retry`).
    Retry,
}

impl fmt::Display for DumpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DumpStatus::Done => "DONE",
            DumpStatus::Strange => "STRANGE",
            DumpStatus::Failed => "FAILED",
            DumpStatus::Retry => "RETRY",
        })
    }
}

/// What arrived on the DATA stream, for [`DumpTracker::finish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataSummary {
    /// CRC-32C and byte count of exactly the DATA bytes received (no header).
    pub received: CrcValue,
}

/// What the dumper finds wrong with a dump from its MESG lines and the DATA received;
/// `Display` is the dumper's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// `sendbackup: error [<text>]`: the client's own text.
    #[error("{0}")]
    Client(String),
    /// `sendbackup: error <text>` without brackets: the whole line.
    #[error("bad remote error: {0}")]
    BadRemoteError(String),
    /// MESG ended without `sendbackup: size`.
    #[error("missing size line from sendbackup")]
    MissingSize,
    /// MESG ended without `sendbackup: end`.
    #[error("missing end line from sendbackup")]
    MissingEnd,
    /// The client's client-CRC is not the CRC of the DATA received.
    #[error("client CRC ({client}) do not match data-in CRC ({received})")]
    CrcMismatch {
        /// What the client said it sent.
        client: CrcValue,
        /// What arrived.
        received: CrcValue,
    },
    /// MESG ended before `sendbackup: info end`.
    #[error("got no header information")]
    NoHeader,
    /// No DATA byte arrived.
    #[error("got no data")]
    NoData,
    /// With no client filter, the native-CRC and the client-CRC describe the same bytes.
    #[error(
        "native-CRC ({native}) differs from client-CRC ({client}) although the client runs no compression or encryption"
    )]
    NativeCrcMismatch {
        /// The client's native-CRC.
        native: CrcValue,
        /// The client's client-CRC.
        client: CrcValue,
    },
    /// The `size` line does not describe the bytes it is about.
    #[error(
        "the size line says {size_kb} KiB, but {bytes} bytes ({} KiB) {}",
        ceil_kb(*bytes),
        described.as_str()
    )]
    SizeMismatch {
        /// The `size` line, KiB.
        size_kb: i64,
        /// The bytes it should describe.
        bytes: i64,
        /// Which bytes those are.
        described: Described,
    },
}

/// The bytes a `sendbackup: size` line is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Described {
    /// The DATA received (the client filters nothing).
    DataArrived,
    /// The native-CRC's byte count (the client compresses or encrypts).
    NativeCrc,
}

impl Described {
    fn as_str(self) -> &'static str {
        match self {
            Described::DataArrived => "of DATA arrived",
            Described::NativeCrc => "by its native-CRC",
        }
    }
}

/// The outcome of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOutcome {
    /// The verdict.
    pub status: DumpStatus,
    /// What the dumper found wrong (for FAILED; the first one set wins).
    pub error: Option<DumpError>,
    /// `sendbackup: size` (original KiB), if received.
    pub orig_kb: Option<i64>,
    /// KiB received on DATA, rounded up.
    pub kb: u64,
    /// The client's `native-CRC`, if any.
    pub native_crc: Option<CrcValue>,
    /// The client CRC as the dumper reports it: the client's, or the received one if the
    /// client sent none.
    pub client_crc: CrcValue,
    /// Header fields from `info` lines.
    pub info: InfoFields,
    /// For RETRY: (delay, level, message), as the dumper passes them on.
    pub retry: Option<(i32, i32, ByteString)>,
    /// The dumper's log of the dump, bounded ([`MesgLog`]): the logged MESG lines
    /// (`??`-prefixed when unknown) as far as they were kept, a `... N more lines` marker
    /// for those that were not, and the dumper's own notes.
    pub log: Vec<ByteString>,
}

/// The log of one dump's MESG stream, kept only as far as a report needs it: the first
/// [`MesgLog::HEAD_LINES`] lines, then (once those are taken) the last
/// [`MesgLog::TAIL_LINES`] strange lines, each cut to [`MesgLog::LINE_BYTES`]; every other
/// line is only counted. The dumper's own notes (a handful per dump) are always kept, last.
/// So a client that sends endless lines costs a counter, not memory (issue 10).
#[derive(Debug, Clone, Default)]
pub struct MesgLog {
    head: Vec<ByteString>,
    tail: VecDeque<ByteString>,
    notes: Vec<ByteString>,
    omitted: u64,
}

impl MesgLog {
    /// Lines kept from the start of the stream (amreport shows 100 per dump too).
    pub const HEAD_LINES: usize = 100;
    /// Strange lines kept from the end, after the head is full.
    pub const TAIL_LINES: usize = 20;
    /// Bytes kept of one line; the rest is replaced by a `[... N more bytes]` marker.
    pub const LINE_BYTES: usize = 1024;

    /// An empty log.
    pub fn new() -> MesgLog {
        MesgLog::default()
    }

    fn cut(line: &[u8]) -> ByteString {
        if line.len() <= Self::LINE_BYTES {
            return line.into();
        }
        let mut v = line[..Self::LINE_BYTES].to_vec();
        v.extend_from_slice(
            format!(" [... {} more bytes]", line.len() - Self::LINE_BYTES).as_bytes(),
        );
        v.into()
    }

    /// Logs a MESG line; `strange` lines are the ones kept from the end of a long stream.
    pub fn push(&mut self, line: &[u8], strange: bool) {
        if self.head.len() < Self::HEAD_LINES {
            self.head.push(Self::cut(line));
        } else if strange {
            if self.tail.len() == Self::TAIL_LINES {
                self.tail.pop_front();
                self.omitted += 1;
            }
            self.tail.push_back(Self::cut(line));
        } else {
            self.omitted += 1;
        }
    }

    /// A note of the dumper itself (always kept, after the lines).
    pub fn note(&mut self, line: &[u8]) {
        self.notes.push(Self::cut(line));
    }

    /// Lines that were counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// Bytes held (for tests of the bound).
    pub fn held_bytes(&self) -> usize {
        self.head
            .iter()
            .chain(&self.tail)
            .chain(&self.notes)
            .map(|l| l.len())
            .sum()
    }

    /// The log as the report shows it.
    pub fn into_lines(self) -> Vec<ByteString> {
        let mut out = self.head;
        if self.omitted > 0 {
            out.push(format!("... {} more lines", self.omitted).into());
        }
        out.extend(self.tail);
        out.extend(self.notes);
        out
    }
}

/// The dumper's bookkeeping of one dump (spec §6.7.7). Feed MESG lines with
/// [`DumpTracker::on_line`]; start reading DATA when [`DumpTracker::header_complete`]
/// becomes true (that is the `sendbackup: info end` line); call
/// [`DumpTracker::on_mesg_eof`] when MESG ends, and [`DumpTracker::finish`] when all
/// streams have ended.
#[derive(Debug, Clone, Default)]
pub struct DumpTracker {
    info: InfoFields,
    info_end: bool,
    size: Option<i64>,
    end: bool,
    result: u8,
    error: Option<DumpError>,
    native_crc: Option<CrcValue>,
    client_crc: Option<CrcValue>,
    retry: Option<(i32, i32, ByteString)>,
    log: MesgLog,
    state_lines: Vec<ByteString>,
    state_bytes: usize,
    state_dropped: u64,
    too_long: u64,
    client_filters: Option<bool>,
}

impl DumpTracker {
    /// Bytes of `sendbackup: state` lines kept; more are dropped and the dump is STRANGE.
    pub const MAX_STATE_BYTES: usize = 1024 * 1024;

    /// A fresh tracker.
    pub fn new() -> DumpTracker {
        DumpTracker::default()
    }

    /// Tells the tracker whether the client runs a filter (client compression or client
    /// encryption) between the backup program and DATA. Without one, the `size` line and
    /// the native-CRC describe exactly the DATA bytes, and [`DumpTracker::finish`] checks
    /// them against what arrived; unknown (never called), only the checks that need no such
    /// knowledge are made.
    pub fn set_client_filters(&mut self, filters: bool) {
        self.client_filters = Some(filters);
    }

    /// A MESG line longer than the splitter keeps (its length in bytes): logged as an
    /// unknown line, so the dump is STRANGE.
    pub fn on_too_long(&mut self, len: usize) {
        self.result = self.result.max(1);
        self.too_long += 1;
        self.log.push(
            format!("??[a MESG line of {len} bytes, longer than the dumper reads]").as_bytes(),
            true,
        );
    }

    fn fail(&mut self, error: DumpError) {
        self.result = 2;
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Processes one MESG line (without newline) and returns how it was read.
    pub fn on_line(&mut self, line: &[u8]) -> MesgLine {
        let parsed = MesgLine::parse(line);
        let mut logged = true;
        match &parsed {
            MesgLine::Strange(_) | MesgLine::Warning(_) => self.result = self.result.max(1),
            MesgLine::Unknown(_) | MesgLine::StateDone => {
                self.result = self.result.max(1);
                self.log.push(&[b"??".as_slice(), line].concat(), true);
                logged = false;
            }
            MesgLine::Size(n) => self.size = Some(*n),
            MesgLine::NoOp(_) => logged = false,
            MesgLine::State(s) => {
                if self.state_bytes + s.len() <= Self::MAX_STATE_BYTES {
                    self.state_bytes += s.len();
                    self.state_lines.push(s.clone());
                } else {
                    self.state_dropped += 1;
                }
                logged = false;
            }
            MesgLine::NativeCrc(c) => self.native_crc = *c,
            MesgLine::ClientCrc(c) => self.client_crc = *c,
            MesgLine::Retry {
                delay,
                level,
                message,
            } => {
                let message = message.clone().unwrap_or_else(|| "\"No message\"".into());
                self.retry = Some((delay.unwrap_or(-1), level.unwrap_or(-1), message));
            }
            MesgLine::End => self.end = true,
            MesgLine::Error(rest) => {
                self.end = true;
                let error = MesgLine::client_error(rest, line);
                self.fail(error);
            }
            MesgLine::InfoEnd => self.info_end = true,
            MesgLine::Info { key, value } => self.info.set(key, value.clone()),
            MesgLine::Output(_) | MesgLine::Start(_) | MesgLine::Ignored(_) => {}
        }
        if logged {
            let strange = parsed.is_strange() || matches!(parsed, MesgLine::Error(_));
            self.log.push(line, strange);
        }
        parsed
    }

    /// Whether `sendbackup: info end` was seen: the dumper starts reading DATA (and writes
    /// the dump-file header when the first DATA bytes arrive).
    pub fn header_complete(&self) -> bool {
        self.info_end
    }

    /// Whether the client's `sendbackup: end` (or `sendbackup: error`) line was seen: its
    /// last word on MESG.
    pub fn ended(&self) -> bool {
        self.end
    }

    /// Whether the client asked for a retry (the dumper stops the dump at once).
    pub fn retry_requested(&self) -> bool {
        self.retry.is_some()
    }

    /// The header fields received so far.
    pub fn info(&self) -> &InfoFields {
        &self.info
    }

    /// The `sendbackup: state` lines received, in order.
    pub fn state_lines(&self) -> &[ByteString] {
        &self.state_lines
    }

    /// MESG reached EOF (`process_dumpeof`). `partial` is the unterminated rest from the
    /// splitter, if any. Missing `size`/`end` lines fail the dump unless it already failed.
    pub fn on_mesg_eof(&mut self, partial: Option<&[u8]>) {
        if let Some(p) = partial.filter(|p| !p.is_empty()) {
            self.log.note(
                format!(
                    "? dumper: error [partial line in msgbuf: {} bytes]",
                    p.len()
                )
                .as_bytes(),
            );
            self.log.note(
                &[
                    b"? dumper: error [partial line in msgbuf: \"".as_slice(),
                    p,
                    b"\"]",
                ]
                .concat(),
            );
        }
        if self.size.is_none() && self.result < 2 {
            self.log
                .note(b"? dumper: strange [missing size line from sendbackup]");
            self.fail(DumpError::MissingSize);
        }
        if !self.end && self.result < 2 {
            self.log
                .note(b"? dumper: strange [missing end line from sendbackup]");
            self.fail(DumpError::MissingEnd);
        }
    }

    /// The verdict once every stream has ended: retry; client CRC vs DATA CRC; no header
    /// information; no data; the `size` line and the native-CRC vs the bytes; else DONE or
    /// STRANGE. `data` describes the DATA bytes received (zero if DATA was never read).
    ///
    /// Beyond the real dumper (issue 10): a missing or zero client-CRC is a STRANGE note
    /// (the real dumper skips the check silently); a `size` line that disagrees with the
    /// bytes it describes fails the dump, naming both numbers (with no client filter it
    /// describes the DATA bytes, otherwise the native-CRC's byte count); with no client
    /// filter a native-CRC that differs from the client-CRC fails it.
    pub fn finish(mut self, data: DataSummary) -> DumpOutcome {
        let received = data.received;
        let kb = u64::try_from(received.size.max(0))
            .unwrap_or(0)
            .div_ceil(1024);
        // A zero CRC is how clients say "none"; it is accepted only if it really matches.
        let sent_crc = self.client_crc.filter(|c| c.crc != 0 || *c == received);
        let client_crc = sent_crc.unwrap_or(received);
        if self.retry.is_some() {
            self.error = None;
            return self.outcome(DumpStatus::Retry, kb, client_crc);
        }
        if sent_crc.is_some() && client_crc != received {
            self.fail(DumpError::CrcMismatch {
                client: client_crc,
                received,
            });
        }
        if !self.info_end {
            self.fail(DumpError::NoHeader);
        }
        if kb == 0 {
            self.fail(DumpError::NoData);
        }
        let native = self.native_crc.filter(|n| n.crc != 0 || n.size != 0);
        if self.client_filters == Some(false)
            && let (Some(n), Some(c)) = (native, sent_crc)
            && n != c
        {
            self.fail(DumpError::NativeCrcMismatch {
                native: n,
                client: c,
            });
        }
        if let Some(size_kb) = self.size.filter(|k| *k >= 0) {
            let described = match (self.client_filters, native) {
                (Some(false), _) => Some((received.size, Described::DataArrived)),
                (_, Some(n)) => Some((n.size, Described::NativeCrc)),
                _ => None,
            };
            if let Some((bytes, described)) = described
                && !kb_describes(size_kb, bytes)
            {
                self.fail(DumpError::SizeMismatch {
                    size_kb,
                    bytes,
                    described,
                });
            }
        }
        if kb > 0 && sent_crc.is_none() {
            let why = match self.client_crc {
                None => "the client sent no client-CRC line".to_owned(),
                Some(c) => format!("the client's client-CRC is {c}, i.e. none"),
            };
            self.log.note(
                format!(
                    "? dumper: strange [{why}: the DATA bytes could not be checked against what it sent]"
                )
                .as_bytes(),
            );
            self.result = self.result.max(1);
        }
        if self.state_dropped > 0 {
            self.log.note(
                format!(
                    "? dumper: strange [{} state lines dropped: more than {} bytes of them]",
                    self.state_dropped,
                    Self::MAX_STATE_BYTES
                )
                .as_bytes(),
            );
            self.result = self.result.max(1);
        }
        let status = match self.result {
            0 => DumpStatus::Done,
            1 => DumpStatus::Strange,
            _ => DumpStatus::Failed,
        };
        self.outcome(status, kb, client_crc)
    }

    fn outcome(self, status: DumpStatus, kb: u64, client_crc: CrcValue) -> DumpOutcome {
        DumpOutcome {
            status,
            error: self.error,
            orig_kb: self.size,
            kb,
            native_crc: self.native_crc,
            client_crc,
            info: self.info,
            retry: self.retry,
            log: self.log.into_lines(),
        }
    }
}

/// Whether a `size` line of `kb` KiB describes `bytes` bytes: clients round either way.
pub fn kb_describes(kb: i64, bytes: i64) -> bool {
    kb == bytes.max(0) / 1024 || kb == ceil_kb(bytes)
}

fn ceil_kb(bytes: i64) -> i64 {
    bytes.max(0) / 1024 + i64::from(bytes.max(0) % 1024 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TV10: &str = "sendbackup: start [client.example.com:/home level 0]
sendbackup: info BACKUP=/bin/tar
sendbackup: info RECOVER_CMD=/bin/gzip -dc |/bin/tar -xpGf - ...
sendbackup: info COMPRESS_SUFFIX=.gz
sendbackup: info end
| Total bytes written: 20480 (20KiB, 9.6MiB/s)
sendbackup: native-CRC 0a1b2c3d:20480
sendbackup: client-CRC 4e5f6a7b:1187
sendbackup: size 20
sendbackup: end
";

    fn feed(t: &mut DumpTracker, s: &str) {
        for line in s.lines() {
            t.on_line(line.as_bytes());
        }
    }

    #[test]
    fn tv10_lines_parse_and_reencode() {
        let lines: Vec<MesgLine> = TV10
            .lines()
            .map(|l| MesgLine::parse(l.as_bytes()))
            .collect();
        assert_eq!(
            lines[0],
            MesgLine::start(b"client.example.com", b"/home", 0)
        );
        assert_eq!(
            lines[1],
            MesgLine::Info {
                key: "BACKUP".into(),
                value: "/bin/tar".into()
            }
        );
        assert_eq!(lines[4], MesgLine::InfoEnd);
        assert_eq!(
            lines[5],
            MesgLine::program_output(b"Total bytes written: 20480 (20KiB, 9.6MiB/s)", false)
        );
        assert_eq!(
            MesgLine::parse(b"sendbackup: statedone"),
            MesgLine::StateDone
        );
        assert!(MesgLine::StateDone.is_strange());
        assert_eq!(
            lines[5],
            MesgLine::Output(" Total bytes written: 20480 (20KiB, 9.6MiB/s)".into())
        );
        assert_eq!(
            lines[7],
            MesgLine::ClientCrc(Some(CrcValue {
                crc: 0x4e5f6a7b,
                size: 1187
            }))
        );
        assert_eq!(lines[8], MesgLine::Size(20));
        let back: Vec<u8> = lines.iter().flat_map(MesgLine::encode).collect();
        assert_eq!(back, TV10.as_bytes());
    }

    #[test]
    fn failures_carry_the_dumpers_texts() {
        let cases: &[(&str, DataSummary, DumpStatus, Option<&str>)] = &[
            (
                TV10,
                DataSummary {
                    received: CrcValue { crc: 1, size: 1187 },
                },
                DumpStatus::Failed,
                Some("client CRC (4e5f6a7b:1187) do not match data-in CRC (00000001:1187)"),
            ),
            (
                "sendbackup: start [x]\n",
                DataSummary::default(),
                DumpStatus::Failed,
                Some("missing size line from sendbackup"),
            ),
            (
                "sendbackup: info end\nsendbackup: size 1\n",
                DataSummary {
                    received: CrcValue { crc: 5, size: 10 },
                },
                DumpStatus::Failed,
                Some("missing end line from sendbackup"),
            ),
            (
                "sendbackup: size 1\nsendbackup: end\n",
                DataSummary {
                    received: CrcValue { crc: 5, size: 10 },
                },
                DumpStatus::Failed,
                Some("got no header information"),
            ),
            (
                "sendbackup: info end\nsendbackup: size 0\nsendbackup: end\n",
                DataSummary::default(),
                DumpStatus::Failed,
                Some("got no data"),
            ),
            (
                "sendbackup: info end\nsendbackup: error [tar: /x: Cannot open]\n",
                DataSummary::default(),
                DumpStatus::Failed,
                Some("tar: /x: Cannot open"),
            ),
            (
                "sendbackup: info end\nsendbackup: error oops\n",
                DataSummary::default(),
                DumpStatus::Failed,
                Some("bad remote error: sendbackup: error oops"),
            ),
            (
                "sendbackup: info end\n? tar: file changed\nsendbackup: size 1\nsendbackup: end\n",
                DataSummary {
                    received: CrcValue { crc: 5, size: 10 },
                },
                DumpStatus::Strange,
                None,
            ),
            (
                "sendbackup: info end\n& odd\nsendbackup: statedone\nsendbackup: size 1\nsendbackup: end\n",
                DataSummary {
                    received: CrcValue { crc: 5, size: 10 },
                },
                DumpStatus::Strange,
                None,
            ),
            (
                "sendbackup: retry delay 30 level 1 message later\n",
                DataSummary::default(),
                DumpStatus::Retry,
                None,
            ),
        ];
        for (mesg, data, status, error) in cases {
            let mut t = DumpTracker::new();
            feed(&mut t, mesg);
            t.on_mesg_eof(None);
            let o = t.finish(*data);
            let text = o.error.as_ref().map(ToString::to_string);
            assert_eq!((o.status, text.as_deref()), (*status, *error), "{mesg}");
        }
        // The CRC mismatch carries both values (issue 11).
        let mut t = DumpTracker::new();
        feed(&mut t, TV10);
        let received = CrcValue { crc: 1, size: 1187 };
        let o = t.finish(DataSummary { received });
        assert_eq!(
            o.error,
            Some(DumpError::CrcMismatch {
                client: CrcValue {
                    crc: 0x4e5f_6a7b,
                    size: 1187
                },
                received
            })
        );
    }

    #[test]
    fn unknown_lines_are_logged_with_double_question_mark() {
        let mut t = DumpTracker::new();
        t.on_line(b"sendbackup: statedone");
        t.on_line(b"sendbackup: no-op x");
        t.on_line(b"");
        t.on_mesg_eof(Some(b"tail"));
        let o = t.finish(DataSummary::default());
        assert_eq!(o.log[0], "??sendbackup: statedone");
        assert_eq!(o.log[1], "??");
        assert_eq!(
            o.log[2],
            "? dumper: error [partial line in msgbuf: 4 bytes]"
        );
    }

    fn tracker_after(mesg: &str, filters: Option<bool>) -> DumpTracker {
        let mut t = DumpTracker::new();
        if let Some(f) = filters {
            t.set_client_filters(f);
        }
        feed(&mut t, mesg);
        t.on_mesg_eof(None);
        t
    }

    const HEAD: &str = "sendbackup: info BACKUP=/bin/tar\nsendbackup: info end\n";

    // issue 10: a client that sends no client-CRC (or a zero one) was accepted silently.
    #[test]
    fn a_missing_or_zero_client_crc_makes_the_dump_strange_with_a_note() {
        let data = DataSummary {
            received: CrcValue { crc: 7, size: 2048 },
        };
        for (crc_line, why) in [
            ("", "the client sent no client-CRC line"),
            (
                "sendbackup: client-CRC 00000000:0\n",
                "the client's client-CRC is 00000000:0, i.e. none",
            ),
        ] {
            let mesg = format!("{HEAD}{crc_line}sendbackup: size 2\nsendbackup: end\n");
            let o = tracker_after(&mesg, Some(false)).finish(data);
            assert_eq!((o.status, o.error), (DumpStatus::Strange, None), "{mesg}");
            let note = o.log.last().unwrap().to_string();
            assert!(
                note.starts_with("? dumper: strange [") && note.contains(why),
                "{note}"
            );
        }
    }

    // issue 10: the `size` line was never compared with the bytes received.
    #[test]
    fn a_size_line_that_disagrees_with_the_data_fails_naming_both_numbers() {
        let data = DataSummary {
            received: CrcValue {
                crc: 7,
                size: 10240,
            },
        };
        let mesg = |size: i64| {
            format!(
                "{HEAD}sendbackup: client-CRC 00000007:10240\nsendbackup: size {size}\nsendbackup: end\n"
            )
        };
        let o = tracker_after(&mesg(10), Some(false)).finish(data);
        assert_eq!(o.status, DumpStatus::Done);
        let o = tracker_after(&mesg(110), Some(false)).finish(data);
        assert_eq!(o.status, DumpStatus::Failed);
        assert_eq!(
            o.error,
            Some(DumpError::SizeMismatch {
                size_kb: 110,
                bytes: 10240,
                described: Described::DataArrived
            })
        );
        assert_eq!(
            o.error.unwrap().to_string(),
            "the size line says 110 KiB, but 10240 bytes (10 KiB) of DATA arrived"
        );
        // Unknown filters and no native-CRC: nothing to compare the size with.
        assert_eq!(
            tracker_after(&mesg(110), None).finish(data).status,
            DumpStatus::Done
        );
        // A negative size is a client that did not know (amgtar without a total).
        assert_eq!(
            tracker_after(&mesg(-1), Some(false)).finish(data).status,
            DumpStatus::Done
        );
        // Either rounding is accepted.
        assert!(kb_describes(1, 1000) && kb_describes(0, 1000) && !kb_describes(2, 1000));
    }

    #[test]
    fn with_a_client_filter_the_size_line_is_checked_against_the_native_crc() {
        let data = DataSummary {
            received: CrcValue {
                crc: 0x4e5f6a7b,
                size: 1187,
            },
        };
        assert_eq!(
            tracker_after(TV10, Some(true)).finish(data).status,
            DumpStatus::Done
        );
        let lying = TV10.replace("size 20", "size 200");
        let o = tracker_after(&lying, Some(true)).finish(data);
        assert_eq!(
            o.error.map(|e| e.to_string()).as_deref(),
            Some("the size line says 200 KiB, but 20480 bytes (20 KiB) by its native-CRC")
        );
        // The same lines claiming no filter: native-CRC and client-CRC must then agree.
        let o = tracker_after(TV10, Some(false)).finish(data);
        assert!(
            o.error
                .as_ref()
                .unwrap()
                .to_string()
                .starts_with("native-CRC (0a1b2c3d:20480) differs from client-CRC"),
            "{:?}",
            o.error
        );
    }

    // issue 10: the tracker kept every MESG line for the whole dump.
    #[test]
    fn the_log_of_an_endless_mesg_stream_stays_bounded_and_says_how_much_is_missing() {
        let mut t = DumpTracker::new();
        feed(&mut t, HEAD);
        let long = format!("| {}", "x".repeat(60_000));
        for i in 0..200_000 {
            t.on_line(if i % 1000 == 0 {
                long.as_bytes()
            } else {
                b"| tar: chatter"
            });
        }
        t.on_line(b"? tar: the important one");
        for _ in 0..5 {
            t.on_too_long(1 << 20);
        }
        assert!(t.log.held_bytes() < 200 * 1024, "{}", t.log.held_bytes());
        t.on_mesg_eof(Some(long.as_bytes()));
        let o = t.finish(DataSummary::default());
        assert!(
            o.log.len() <= MesgLog::HEAD_LINES + MesgLog::TAIL_LINES + 8,
            "{}",
            o.log.len()
        );
        let text: Vec<String> = o.log.iter().map(ToString::to_string).collect();
        let marker = text.iter().find(|l| l.starts_with("... ")).unwrap();
        // 2 header lines, 200,000 chatter, 1 strange, 5 too long; the head and 6 strange kept.
        assert_eq!(
            marker,
            &format!("... {} more lines", 200_008 - MesgLog::HEAD_LINES - 6)
        );
        assert!(
            text.iter().any(|l| l == "? tar: the important one"),
            "strange lines at the end are kept"
        );
        assert!(
            text.iter()
                .any(|l| l.starts_with("??[a MESG line of 1048576 bytes"))
        );
        assert!(
            text.iter().all(|l| l.len() <= MesgLog::LINE_BYTES + 64),
            "lines are cut"
        );
        assert!(
            text.last().unwrap().contains("missing size line"),
            "the dumper's notes come last"
        );
    }

    #[test]
    fn state_lines_are_capped() {
        let mut t = DumpTracker::new();
        let line = format!("sendbackup: state {}", "s".repeat(1000));
        for _ in 0..2000 {
            t.on_line(line.as_bytes());
        }
        let kept: usize = t.state_lines().iter().map(|l| l.len()).sum();
        assert!(kept <= DumpTracker::MAX_STATE_BYTES);
        feed(
            &mut t,
            &format!("{HEAD}sendbackup: size 1\nsendbackup: end\n"),
        );
        t.on_mesg_eof(None);
        let o = t.finish(DataSummary {
            received: CrcValue { crc: 1, size: 1024 },
        });
        assert_eq!(o.status, DumpStatus::Strange);
        assert!(
            o.log
                .iter()
                .any(|l| l.to_string().contains("state lines dropped"))
        );
    }

    #[test]
    fn info_line_details() {
        assert_eq!(
            MesgLine::parse(b"sendbackup: info end "),
            MesgLine::Ignored("sendbackup: info end ".into())
        );
        assert_eq!(
            MesgLine::parse(b"sendbackup: info BACKUP="),
            MesgLine::Ignored("sendbackup: info BACKUP=".into())
        );
        assert_eq!(
            MesgLine::parse(b"sendbackup:  info  X=a=b"),
            MesgLine::Info {
                key: " X".into(),
                value: "a=b".into()
            },
            "strtok keeps the second space"
        );
        assert_eq!(
            MesgLine::parse(b"sendbackup:"),
            MesgLine::Unknown("sendbackup:".into())
        );
        assert_eq!(MesgLine::parse(b"sendbackup: size junk"), MesgLine::Size(0));
        assert_eq!(
            MesgLine::parse(b"sendbackup: native-CRC zz"),
            MesgLine::NativeCrc(None)
        );
    }

    #[test]
    fn splitter_handles_arbitrary_chunks_and_bounds_memory() {
        let mut s = LineSplitter::new(16);
        for b in b"ab\ncd" {
            s.push(&[*b]);
        }
        assert_eq!(s.next_line(), Some(SplitLine::Line(b"ab".to_vec())));
        assert_eq!(s.next_line(), None);
        s.push(&[b'x'; 40]);
        assert!(s.buffered() <= 16);
        s.push(b"yy\nok\n");
        assert_eq!(s.next_line(), Some(SplitLine::TooLong { len: 44 }));
        assert_eq!(s.next_line(), Some(SplitLine::Line(b"ok".to_vec())));
        s.push(b"rest");
        assert_eq!(s.finish(), Some(Ok(b"rest".to_vec())));
        assert_eq!(s.finish(), None);
    }

    proptest! {
        #[test]
        fn splitting_is_independent_of_chunking(data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300), cuts in proptest::collection::vec(0usize..300, 0..10)) {
            let mut whole = LineSplitter::new(32);
            whole.push(&data);
            let mut chunked = LineSplitter::new(32);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut prev = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                chunked.push(&data[prev..c]);
                prev = c;
            }
            loop {
                let (a, b) = (whole.next_line(), chunked.next_line());
                prop_assert_eq!(&a, &b);
                if a.is_none() { break; }
            }
            prop_assert_eq!(whole.finish(), chunked.finish());
        }

        #[test]
        fn known_lines_round_trip(kind in 0u8..6, text in "[ -~]{0,30}", n in -5i64..1 << 40) {
            let line = match kind {
                0 => MesgLine::Output(text.as_str().into()),
                1 => MesgLine::Strange(text.as_str().into()),
                2 => MesgLine::Size(n),
                3 => MesgLine::error(text.as_bytes()),
                4 => MesgLine::NativeCrc(Some(CrcValue { crc: n as u32, size: n.abs() })),
                _ => MesgLine::Info { key: "RECOVER_CMD".into(), value: format!("x{text}").as_str().into() },
            };
            let enc = line.encode();
            prop_assert_eq!(MesgLine::parse(&enc[..enc.len() - 1]), line);
        }

        #[test]
        fn tracker_never_panics(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20), bytes in any::<i64>(), crc in any::<u32>()) {
            let mut t = DumpTracker::new();
            for l in &lines { t.on_line(l); }
            t.on_mesg_eof(lines.first().map(|v| v.as_slice()));
            let _ = t.finish(DataSummary { received: CrcValue { crc, size: bytes } });
        }
    }
}
