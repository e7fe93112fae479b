//! amanda-rs's dial-in protocol (issue 14, service `amdialin`; both ends are ours): how a
//! client that may only open connections outwards is still backed up on the server's
//! schedule.
//!
//! The client keeps one **HOLD** connection to the server's listener: a bsdtcp REQ on handle
//! 1 (`SERVICE amdialin`, `OPTIONS features=..;hostname=..;config=..;`, `HOLD`), answered
//! `OK HOLD heartbeat=<secs>`; then one line per frame on handle [`LINE_HANDLE`]: `PING <n>`
//! from the listener, answered `PONG <n>`, and `OPEN <token>`, on which the client opens a
//! **SESSION** connection whose first frame (handle [`SESSION_HANDLE`]) is
//! `AMDIALIN SESSION <token>\n`. After that frame the session is an ordinary bsdtcp
//! connection on which the server sends its requests, plus a heartbeat
//! ([`session_heartbeat`]) each end sends on [`LINE_HANDLE`] while the session is quiet.
//! Over auth ssl the same frames run inside TLS: the HOLD's from its first byte (the client
//! is the TLS client), a session's after its preamble, which stays in clear (the server's
//! dumper is then the TLS client).
//!
//! Here: the codecs of those messages, the file-name checks of host names and tokens (they
//! name Unix sockets on the server), and [`HoldClient`], the client's state machine (dial,
//! request, hold, redial with doubling backoff and jitter). See `dialin/LIFECYCLE.md`.
//!
//! What this module must not do: touch a socket or a clock, or draw random numbers (the
//! jitter comes from a seed the shell gives).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::frame;
use crate::pkt::PacketType;
use crate::tcp::Packet;

/// The service name in the REQ.
pub const SERVICE: &str = "amdialin";

/// The frame handle of the HOLD connection's lines (both directions).
pub const LINE_HANDLE: u32 = 500_000;

/// The frame handle of a SESSION connection's first frame.
pub const SESSION_HANDLE: u32 = 0;

/// The client closes and redials after this many heartbeat intervals without a line.
pub const SILENT_INTERVALS: u32 = 3;

/// A session token: 128 random bits, single-use, chosen by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub [u8; 16]);

impl Token {
    /// Parses 32 lowercase hex digits.
    pub fn parse(s: &[u8]) -> Option<Token> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hex = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = hex(pair[0])? << 4 | hex(pair[1])?;
        }
        Some(Token(out))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// Longest host name accepted (it becomes a file name on the server).
pub const MAX_HOST_LEN: usize = 253;

/// Whether `name` may name a host's rendezvous socket: a DNS-like name, no `/`, not `.` or
/// `..`, no control bytes, at most [`MAX_HOST_LEN`] bytes.
pub fn is_safe_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOST_LEN
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// One line on [`LINE_HANDLE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Listener → client: are you there?
    Ping(u64),
    /// Client → listener: yes.
    Pong(u64),
    /// Listener → client: open a session with this token.
    Open(Token),
    /// Client → listener (issue 14): the session of this token could not be opened, and
    /// why (the proxy's refusal, a connect error); the listener tells the waiting worker,
    /// which would otherwise only see no session come. The text is [`failure_text`]'s.
    Failed(Token, String),
}

/// The longest line (PING, PONG, OPEN, the session preamble) either end accepts.
pub const MAX_LINE: usize = 128;

/// The longest `FAILED` line either end accepts (its text is cut to fit).
pub const MAX_FAILED_LINE: usize = 640;

/// The longest text of a `FAILED` line, in bytes.
const MAX_FAILED_TEXT: usize = MAX_FAILED_LINE - 64;

/// `text` as a `FAILED` line carries it, and as the server prints it: one line of
/// printable characters (control characters become `?`), at most [`MAX_FAILED_TEXT`]
/// bytes (cut at a character, with `...`). The client's words are shown on the server.
pub fn failure_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(&text[..text.len().min(MAX_FAILED_LINE * 4)]);
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() <= MAX_FAILED_TEXT {
        return clean;
    }
    let mut end = MAX_FAILED_TEXT - 3;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &clean[..end])
}

/// Why bytes are not what the dial-in protocol expects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialinError {
    /// A line that is not PING/PONG/OPEN with a valid argument.
    #[error("not a dial-in line: {0:?}")]
    BadLine(String),
    /// The HOLD request lacks something or has a bad value.
    #[error("bad amdialin request: {0}")]
    BadRequest(String),
    /// The first frame of a session connection is not `AMDIALIN SESSION <token>`.
    #[error("not a dial-in session preamble: {0:?}")]
    BadPreamble(String),
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_LINE)]).into_owned()
}

impl Line {
    /// The line with its newline.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Line::Ping(n) => format!("PING {n}\n"),
            Line::Pong(n) => format!("PONG {n}\n"),
            Line::Open(t) => format!("OPEN {t}\n"),
            Line::Failed(t, text) => format!("FAILED {t} {}\n", failure_text(text.as_bytes())),
        }
        .into_bytes()
    }

    /// The line framed on [`LINE_HANDLE`].
    pub fn frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // A line is far below the frame limit.
        let _ = frame::encode_frame(LINE_HANDLE, &self.encode(), &mut out);
        out
    }

    /// Parses one frame's payload (one line, the newline optional).
    pub fn parse(payload: &[u8]) -> Result<Line, DialinError> {
        let bad = || DialinError::BadLine(lossy(payload));
        let line = one_line(payload).ok_or_else(bad)?;
        let (word, arg) = line
            .iter()
            .position(|&b| b == b' ')
            .map(|i| (&line[..i], &line[i + 1..]))
            .ok_or_else(bad)?;
        let number = || {
            std::str::from_utf8(arg)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
        };
        match word {
            b"PING" => number().map(Line::Ping).ok_or_else(bad),
            b"PONG" => number().map(Line::Pong).ok_or_else(bad),
            b"OPEN" => Token::parse(arg).map(Line::Open).ok_or_else(bad),
            b"FAILED" => {
                let (token, text) =
                    arg.split_at(arg.iter().position(|&b| b == b' ').ok_or_else(bad)?);
                let token = Token::parse(token).ok_or_else(bad)?;
                Ok(Line::Failed(token, failure_text(text)))
            }
            _ => Err(bad()),
        }
    }
}

/// A frame's payload as one line without its (optional) newline; `None` above
/// [`MAX_LINE`] ([`MAX_FAILED_LINE`] for a `FAILED` line).
fn one_line(payload: &[u8]) -> Option<&[u8]> {
    let max = if payload.starts_with(b"FAILED ") {
        MAX_FAILED_LINE
    } else {
        MAX_LINE
    };
    (payload.len() <= max).then(|| payload.strip_suffix(b"\n").unwrap_or(payload))
}

/// The heartbeat of a SESSION connection (issue 14): while a session carries nothing for a
/// while, each end sends `PING 0` on [`LINE_HANDLE`], a handle no Amanda stream or control
/// exchange uses, so that a proxy that closes quiet tunnels (TCP keepalive stops at the
/// proxy) sees traffic both ways. The other end drops it ([`is_session_heartbeat`]) without
/// answering and without counting it as data.
pub fn session_heartbeat() -> Vec<u8> {
    Line::Ping(0).frame()
}

/// Whether a frame on a SESSION connection is a heartbeat to drop: anything on
/// [`LINE_HANDLE`] (a session has no other use for it).
pub fn is_session_heartbeat(handle: u32) -> bool {
    handle == LINE_HANDLE
}

/// The first frame of a session connection.
pub fn session_preamble(token: Token) -> Vec<u8> {
    let mut out = Vec::new();
    let body = format!("AMDIALIN SESSION {token}\n");
    let _ = frame::encode_frame(SESSION_HANDLE, body.as_bytes(), &mut out);
    out
}

/// The token of a session preamble frame's payload (the frame was on [`SESSION_HANDLE`]).
pub fn parse_session_preamble(payload: &[u8]) -> Result<Token, DialinError> {
    let bad = || DialinError::BadPreamble(lossy(payload));
    let line = one_line(payload).ok_or_else(bad)?;
    let token = line.strip_prefix(b"AMDIALIN SESSION ").ok_or_else(bad)?;
    Token::parse(token).ok_or_else(bad)
}

/// What a HOLD request says (after its `SERVICE amdialin` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    /// The client's features (hex), as it sent them.
    pub features: String,
    /// The client's name as the server's disklist has it (checked with
    /// [`is_safe_host_name`]).
    pub hostname: String,
    /// The configuration.
    pub config: String,
}

impl HoldRequest {
    /// The REQ body after the SECURITY line: `SERVICE`, `OPTIONS`, `HOLD`.
    pub fn body(&self) -> Vec<u8> {
        format!(
            "SERVICE {SERVICE}\nOPTIONS features={};hostname={};config={};\nHOLD\n",
            self.features, self.hostname, self.config
        )
        .into_bytes()
    }

    /// Parses the arguments of a request for [`SERVICE`] (the lines after `SERVICE`).
    pub fn parse(args: &[u8]) -> Result<HoldRequest, DialinError> {
        let text =
            std::str::from_utf8(args).map_err(|_| DialinError::BadRequest("not UTF-8".into()))?;
        let mut options = None;
        let mut hold = false;
        for line in text.lines() {
            if let Some(o) = line.strip_prefix("OPTIONS ") {
                options = Some(o);
            } else if line == "HOLD" {
                hold = true;
            } else if !line.is_empty() {
                return Err(DialinError::BadRequest(format!("unexpected line {line:?}")));
            }
        }
        if !hold {
            return Err(DialinError::BadRequest("no HOLD line".into()));
        }
        let options = options.ok_or_else(|| DialinError::BadRequest("no OPTIONS line".into()))?;
        let get = |key: &str| {
            options
                .split(';')
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let hostname =
            get("hostname").ok_or_else(|| DialinError::BadRequest("no hostname= option".into()))?;
        if !is_safe_host_name(&hostname) {
            return Err(DialinError::BadRequest(format!(
                "hostname {:?} is not a host name",
                lossy(hostname.as_bytes())
            )));
        }
        let config =
            get("config").ok_or_else(|| DialinError::BadRequest("no config= option".into()))?;
        if config.is_empty() || config.contains('/') || config.starts_with('.') {
            return Err(DialinError::BadRequest(format!(
                "config {config:?} is not a configuration name"
            )));
        }
        Ok(HoldRequest {
            features: get("features").unwrap_or_default(),
            hostname,
            config,
        })
    }
}

/// The listener's REP to an accepted HOLD.
pub fn hold_ok(heartbeat: Duration) -> Vec<u8> {
    format!("OK HOLD heartbeat={}\n", heartbeat.as_secs().max(1)).into_bytes()
}

/// The heartbeat of a REP body, or the refusal it carries (`ERROR` lines joined).
pub fn parse_hold_reply(body: &[u8]) -> Result<Duration, String> {
    let text = String::from_utf8_lossy(body);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("OK HOLD heartbeat=")
            && let Ok(secs) = rest.trim().parse::<u64>()
            && (1..=3600).contains(&secs)
        {
            return Ok(Duration::from_secs(secs));
        }
    }
    let errors: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ERROR "))
        .collect();
    if errors.is_empty() {
        Err(format!("unexpected reply {:?}", lossy(body)))
    } else {
        Err(errors.join("; "))
    }
}

/// The client's knobs (settings `[amandad.dial_out]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldConfig {
    /// The first wait after a failure.
    pub backoff_min: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
    /// How long the listener may take to answer the HOLD request.
    pub reply_timeout: Duration,
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(30),
        }
    }
}

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldAction {
    /// Open a connection to the listener, then call [`HoldClient::handle_connected`] or
    /// [`HoldClient::handle_connect_failed`].
    Connect,
    /// Write these bytes (whole frames) on the HOLD connection.
    Send(Vec<u8>),
    /// Open a session connection with this token (its first frame is
    /// [`session_preamble`]) and serve it.
    OpenSession(Token),
    /// The connection is up and accepted by the listener (for the log).
    Holding { heartbeat: Duration },
    /// Close the HOLD connection (if any); the next dial is at `retry_in` from now.
    Down { reason: String, retry_in: Duration },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not connected; dial at `until`.
    Waiting { until: Instant },
    /// [`HoldAction::Connect`] was returned.
    Connecting,
    /// The REQ went out; the REP is due by `deadline`.
    Requested { deadline: Instant },
    /// Holding; closed when nothing comes by `deadline`.
    Holding {
        heartbeat: Duration,
        deadline: Instant,
    },
}

/// The client side of a HOLD connection, sans-IO (see the module docs).
///
/// Call [`HoldClient::poll_action`] until it returns `None` after every event, and wake at
/// [`HoldClient::poll_timeout`] to call [`HoldClient::handle_timeout`].
#[derive(Debug)]
pub struct HoldClient {
    cfg: HoldConfig,
    request: Vec<u8>,
    state: State,
    backoff: Duration,
    rng: u64,
    actions: VecDeque<HoldAction>,
    failures: u64,
}

impl HoldClient {
    /// A client that will dial at once. `user` is the SECURITY USER, `req` what it asks
    /// for; `seed` drives the jitter (give a random one).
    pub fn new(cfg: HoldConfig, user: &str, req: &HoldRequest, seed: u64, now: Instant) -> Self {
        let packet = Packet::request(user.as_bytes(), &req.body());
        let mut request = Vec::new();
        if let Ok(p) = packet {
            let _ = p.encode_frame(1, &mut request);
        }
        HoldClient {
            backoff: cfg.backoff_min,
            cfg,
            request,
            state: State::Waiting { until: now },
            rng: seed,
            actions: VecDeque::new(),
            failures: 0,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self, now: Instant) -> Option<HoldAction> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        match self.state {
            State::Waiting { until } if now >= until => {
                self.state = State::Connecting;
                Some(HoldAction::Connect)
            }
            _ => None,
        }
    }

    /// When [`HoldClient::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Connecting => None,
            State::Requested { deadline } | State::Holding { deadline, .. } => Some(deadline),
        }
    }

    /// Whether the listener accepted the HOLD and the connection is up.
    pub fn is_holding(&self) -> bool {
        matches!(self.state, State::Holding { .. })
    }

    /// Failed dials and broken connections so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The connection is open: the REQ goes out.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        self.actions
            .push_back(HoldAction::Send(self.request.clone()));
        self.state = State::Requested {
            deadline: now + self.cfg.reply_timeout,
        };
    }

    /// The dial failed.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: impl Into<String>) {
        if self.state == State::Connecting {
            self.down(now, reason.into());
        }
    }

    /// The listener closed the connection, or it broke.
    pub fn handle_closed(&mut self, now: Instant, reason: impl Into<String>) {
        if matches!(
            self.state,
            State::Requested { .. } | State::Holding { .. } | State::Connecting
        ) {
            self.down(now, reason.into());
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Requested { deadline } if now >= deadline => {
                let secs = self.cfg.reply_timeout.as_secs();
                self.down(
                    now,
                    format!("no answer to the HOLD request within {secs} s"),
                );
            }
            State::Holding {
                heartbeat,
                deadline,
            } if now >= deadline => {
                let secs = (heartbeat * SILENT_INTERVALS).as_secs();
                self.down(now, format!("no PING from the server for {secs} s"));
            }
            _ => {}
        }
    }

    /// A whole frame arrived on the HOLD connection.
    pub fn handle_frame(&mut self, now: Instant, handle: u32, payload: &[u8]) {
        match self.state {
            State::Requested { .. } if handle == 1 && !payload.is_empty() => {
                let Ok(p) = Packet::parse(payload) else {
                    return self.down(now, "a frame that is not a packet".into());
                };
                match p.ptype {
                    PacketType::Ack => {}
                    PacketType::Rep => match parse_hold_reply(&p.body) {
                        Ok(heartbeat) => {
                            let mut out = Vec::new();
                            let _ = Packet::ack().encode_frame(1, &mut out);
                            let _ = frame::encode_frame(1, &[], &mut out);
                            self.actions.push_back(HoldAction::Send(out));
                            self.actions.push_back(HoldAction::Holding { heartbeat });
                            self.state = State::Holding {
                                heartbeat,
                                deadline: now + heartbeat * SILENT_INTERVALS,
                            };
                        }
                        Err(e) => self.down(now, format!("the server refused: {e}")),
                    },
                    PacketType::Nak => {
                        let text = String::from_utf8_lossy(&p.body).trim().to_string();
                        self.down(now, format!("the server refused: {text}"));
                    }
                    other => self.down(now, format!("unexpected {other} packet")),
                }
            }
            State::Holding { heartbeat, .. } if handle == LINE_HANDLE => {
                match Line::parse(payload) {
                    Ok(Line::Ping(n)) => {
                        // A working connection: the next failure starts the backoff over.
                        self.backoff = self.cfg.backoff_min;
                        self.actions
                            .push_back(HoldAction::Send(Line::Pong(n).frame()));
                    }
                    Ok(Line::Open(t)) => self.actions.push_back(HoldAction::OpenSession(t)),
                    // Lines only the client sends.
                    Ok(Line::Pong(_) | Line::Failed(..)) => {}
                    Err(e) => return self.down(now, e.to_string()),
                }
                self.state = State::Holding {
                    heartbeat,
                    deadline: now + heartbeat * SILENT_INTERVALS,
                };
            }
            // The close of handle 1, ACKs, frames on other handles: nothing to do.
            _ => {}
        }
    }

    fn down(&mut self, now: Instant, reason: String) {
        self.failures += 1;
        let retry_in = self.jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        self.actions.retain(|a| !matches!(a, HoldAction::Send(_)));
        self.actions
            .push_back(HoldAction::Down { reason, retry_in });
        self.state = State::Waiting {
            until: now + retry_in,
        };
    }

    /// Between half and all of `d` ("equal jitter"), so that clients cut off together do
    /// not all redial in the same second.
    fn jittered(&mut self, d: Duration) -> Duration {
        // splitmix64 over the shell's seed.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let half = d / 2;
        let nanos = half.as_nanos() as u64;
        half + Duration::from_nanos(if nanos == 0 { 0 } else { z % (nanos + 1) })
    }
}

#[cfg(test)]
mod tests;
