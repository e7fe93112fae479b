//! The sendbackup reply (spec §6.7.2): the service's `CONNECT` line, amandad's rewrite of
//! its stream labels into stream ids, and the dumper's reading of the REP.
//!
//! The service prints `[KENCRYPT\n]CONNECT DATA 150 MESG 151 INDEX 152[ STATE 153]\n`
//! followed by its `OPTIONS` line; 150..153 are local labels (`DATA_FD_OFFSET` + n).
//! amandad replaces each label by the id of a stream it opens (a TCP port for bsd, 4999xx
//! for bsdtcp) — [`rewrite_connect`] — and the dumper parses the result with
//! [`parse_reply`], whose error texts are the dumper's.
//!
//! What this module must not do: open streams (the caller's `alloc` does), or accept a reply
//! the real dumper refuses.

use std::fmt;

use crate::features::{Feature, Features};
use crate::pkt::PacketType;
use crate::quote::{ByteString, Strtok, atoi, parse_c_i32};

/// The first stream label (`DATA_FD_OFFSET`).
pub const DATA_FD_OFFSET: i32 = 150;

/// Number of stream labels (`DATA_FD_COUNT`).
pub const DATA_FD_COUNT: i32 = 4;

/// The streams of a sendbackup, in the order the dumper connects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The backup data.
    Data,
    /// Status lines (see `mesg`).
    Mesg,
    /// The file index.
    Index,
    /// Application state (only with `fe_sendbackup_stream_state` on both sides).
    State,
}

impl Stream {
    /// All streams, in connect order.
    pub const ALL: [Stream; 4] = [Stream::Data, Stream::Mesg, Stream::Index, Stream::State];

    /// The name in the `CONNECT` line.
    pub const fn name(self) -> &'static str {
        match self {
            Stream::Data => "DATA",
            Stream::Mesg => "MESG",
            Stream::Index => "INDEX",
            Stream::State => "STATE",
        }
    }

    /// The position in [`Stream::ALL`] (CONNECT order): an index for per-stream arrays.
    pub const fn index(self) -> usize {
        match self {
            Stream::Data => 0,
            Stream::Mesg => 1,
            Stream::Index => 2,
            Stream::State => 3,
        }
    }

    /// The service's local label: 150 + position.
    pub const fn label(self) -> i32 {
        DATA_FD_OFFSET + self.index() as i32
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The service's `CONNECT` line: `CONNECT DATA 150 MESG 151 INDEX 152[ STATE 153]\n`, with
/// `INDEX -1` when no index is made and `STATE` when the **server** has
/// `fe_sendbackup_stream_state`.
pub fn connect_line(index: bool, state: bool) -> Vec<u8> {
    let index = if index { Stream::Index.label() } else { -1 };
    let mut line = format!(
        "CONNECT DATA {} MESG {} INDEX {index}",
        Stream::Data.label(),
        Stream::Mesg.label()
    );
    if state {
        line.push_str(&format!(" STATE {}", Stream::State.label()));
    }
    line.push('\n');
    line.into_bytes()
}

/// The whole service output before amandad's rewrite: `[KENCRYPT\n]` + [`connect_line`] +
/// `options_line` (see `options::sendbackup_reply_options`).
pub fn service_reply(
    kencrypt: bool,
    index: bool,
    server: &Features,
    options_line: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    if kencrypt {
        out.extend_from_slice(b"KENCRYPT\n");
    }
    out.extend_from_slice(&connect_line(
        index,
        server.has(Feature::SENDBACKUP_STREAM_STATE),
    ));
    out.extend_from_slice(options_line);
    out
}

/// The result of [`rewrite_connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenReply {
    /// The REP body to send.
    pub body: Vec<u8>,
    /// The service asked for Kerberos encryption (its `KENCRYPT` line is not sent).
    pub kencrypt: bool,
    /// The streams that `alloc` opened: (stream, id), in CONNECT order.
    pub streams: Vec<(Stream, u32)>,
}

/// amandad's `s_processrep`: if the reply (after an optional `KENCRYPT\n`, which is removed)
/// starts with a `CONNECT` line followed by more text, each `<name> <label>` pair becomes
/// `<name> <id>`; `id` comes from `alloc(stream)` for labels 150..153 not seen before, and is
/// `-1` for `-1`, out-of-range or repeated labels or when `alloc` returns `None`. Otherwise
/// the reply is sent unchanged (KENCRYPT line included). A pair without a label leaves the
/// partial rewrite followed by the unchanged reply, as 3.5.1 does.
pub fn rewrite_connect(
    reply: &[u8],
    mut alloc: impl FnMut(Stream) -> Option<u32>,
) -> RewrittenReply {
    let (kencrypt, rest) = match reply.strip_prefix(b"KENCRYPT\n") {
        Some(rest) => (true, rest),
        None => (false, reply),
    };
    let unchanged = |body: Vec<u8>, streams| RewrittenReply {
        body,
        kencrypt,
        streams,
    };
    let mut t = Strtok::new(rest);
    if t.next_token(b" ") != Some(b"CONNECT".as_slice()) {
        return unchanged(reply.to_vec(), Vec::new());
    }
    let (Some(line), Some(next)) = (t.next_token(b"\n"), t.next_token(b"")) else {
        return unchanged(reply.to_vec(), Vec::new());
    };
    let mut body = b"CONNECT".to_vec();
    let mut used = [false; DATA_FD_COUNT as usize];
    let mut streams = Vec::new();
    let mut pairs = Strtok::new(line);
    while let Some(name) = pairs.next_token(b" ") {
        body.push(b' ');
        body.extend_from_slice(name);
        let Some(label) = pairs.next_token(b" \n") else {
            body.extend_from_slice(reply);
            return unchanged(body, streams);
        };
        let label = atoi(label);
        let id = label
            .checked_sub(DATA_FD_OFFSET)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < used.len())
            .and_then(|i| {
                let slot = used.get_mut(i)?;
                if *slot {
                    return None;
                }
                *slot = true;
                let stream = Stream::ALL.get(i).copied()?;
                let id = alloc(stream)?;
                streams.push((stream, id));
                Some(id)
            });
        match id {
            Some(id) => body.extend_from_slice(format!(" {id}").as_bytes()),
            None => body.extend_from_slice(b" -1"),
        }
    }
    body.push(b'\n');
    body.extend_from_slice(next);
    RewrittenReply {
        body,
        kencrypt,
        streams,
    }
}

/// The REP body amandad sends for a successful sendbackup:
/// `CONNECT DATA <id> MESG <id> INDEX <id|-1>[ STATE <id>]\n` + the `OPTIONS` line.
pub fn encode_reply(ids: &StreamIds, options_line: &[u8]) -> Vec<u8> {
    let mut line = format!(
        "CONNECT DATA {} MESG {} INDEX {}",
        ids.data, ids.mesg, ids.index
    );
    if let Some(state) = ids.state {
        line.push_str(&format!(" STATE {state}"));
    }
    line.push('\n');
    let mut out = line.into_bytes();
    out.extend_from_slice(options_line);
    out
}

/// The stream ids of a `CONNECT` line; `-1` means "no such stream".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIds {
    /// DATA stream id.
    pub data: i32,
    /// MESG stream id.
    pub mesg: i32,
    /// INDEX stream id (-1: no index).
    pub index: i32,
    /// STATE stream id, present iff the client has `fe_sendbackup_stream_state`.
    pub state: Option<i32>,
}

impl StreamIds {
    /// The ids to connect, in order, skipping `-1`.
    pub fn to_connect(&self) -> impl Iterator<Item = (Stream, i32)> {
        [
            (Stream::Data, self.data),
            (Stream::Mesg, self.mesg),
            (Stream::Index, self.index),
            (Stream::State, self.state.unwrap_or(-1)),
        ]
        .into_iter()
        .filter(|(_, id)| *id != -1)
    }
}

/// What the dumper makes of a sendbackup reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Connect these streams (DATA and MESG are present).
    Connect {
        /// The stream ids.
        ids: StreamIds,
        /// The client's features from `OPTIONS features=`, if sent.
        features: Option<Features>,
    },
    /// `RETRY [delay n] [level n] [message ...]`: ask the driver to retry later.
    Retry {
        /// `delay` in seconds, if given.
        delay: Option<i32>,
        /// `level`, if given.
        level: Option<i32>,
        /// The message (`"No message"` with its quotes when absent, as the dumper).
        message: ByteString,
    },
}

/// Why the dumper gives up on a reply; `Display` is the dumper's exact text, and
/// [`ReplyError::retryable`] its choice between TRY-AGAIN and FAILED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The client NAKed with `ERROR <text>`: its text (retryable).
    #[error("NAK: {0}")]
    Nak(String),
    /// A NAK without an `ERROR` text (final).
    #[error("request NAK")]
    BareNak,
    /// Neither REP nor NAK (retryable).
    #[error("received strange packet type {}: {body}", kind.name())]
    StrangePacket {
        /// The packet type.
        kind: PacketType,
        /// Its body (lossy).
        body: String,
    },
    /// The REP is the client's `ERROR <text>` (final); `[bogus error packet]` without text.
    #[error("{0}")]
    Client(String),
    /// The REP does not parse; what was wrong, if the dumper says (final).
    #[error("[parse of reply message failed: {}]", .0.as_deref().unwrap_or("(no additional information)"))]
    Parse(Option<String>),
    /// No DATA or MESG stream in the CONNECT line (retryable).
    #[error("[couldn't open MESG or INDEX streams]")]
    MissingStreams,
}

impl ReplyError {
    /// Whether the dumper tells the driver TRY-AGAIN (NAKs, strange packets, missing
    /// streams) rather than FAILED (`ERROR` replies, unparsable replies).
    pub fn retryable(&self) -> bool {
        match self {
            ReplyError::Nak(_) | ReplyError::StrangePacket { .. } | ReplyError::MissingStreams => {
                true
            }
            ReplyError::BareNak | ReplyError::Client(_) | ReplyError::Parse(_) => false,
        }
    }
}

fn parse_error(extra: Option<String>) -> ReplyError {
    ReplyError::Parse(extra)
}

/// Reads a reply to a sendbackup request like the dumper's `sendbackup_response`.
/// `client` is the client's feature set (it decides whether a `STATE` pair is expected).
pub fn parse_reply(kind: PacketType, body: &[u8], client: &Features) -> Result<Reply, ReplyError> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if kind == PacketType::Nak {
        let mut t = Strtok::new(body);
        if t.next_token(b" ") != Some(b"ERROR".as_slice()) {
            return Err(ReplyError::BareNak);
        }
        return match t.next_token(b"\n") {
            Some(text) => Err(ReplyError::Nak(lossy(text))),
            None => Err(ReplyError::BareNak),
        };
    }
    if kind != PacketType::Rep {
        return Err(ReplyError::StrangePacket {
            kind,
            body: lossy(body),
        });
    }
    let nstreams = if client.has(Feature::SENDBACKUP_STREAM_STATE) {
        4
    } else {
        3
    };
    let mut ports = [-1i32; 4];
    let mut features = None;
    let mut retry: Option<Reply> = None;
    let mut t = Strtok::new(body);
    while let Some(tok) = t.next_token(b" \n") {
        match tok {
            b"ERROR" => {
                let text = t
                    .next_token(b"\n")
                    .map_or_else(|| "[bogus error packet]".to_owned(), lossy);
                return Err(ReplyError::Client(text));
            }
            b"CONNECT" => {
                for (i, stream) in Stream::ALL.iter().enumerate().take(nstreams) {
                    let name = t.next_token(b" ");
                    if name != Some(stream.name().as_bytes()) {
                        return Err(parse_error(Some(format!(
                            "CONNECT token is \"{}\": expected \"{}\"",
                            name.map_or_else(|| "(null)".to_owned(), lossy),
                            stream.name()
                        ))));
                    }
                    let id = t.next_token(b" \n");
                    match id.and_then(parse_c_i32) {
                        Some(v) => ports[i] = v,
                        None => {
                            return Err(parse_error(Some(format!(
                                "CONNECT {} token is \"{}\": expected a port number",
                                stream.name(),
                                id.map_or_else(|| "(null)".to_owned(), lossy)
                            ))));
                        }
                    }
                }
            }
            b"RETRY" => {
                let mut message: ByteString = "\"No message\"".into();
                let (delay, level, tok) = t.retry_delay_level();
                if tok == Some(b"message".as_slice())
                    && let Some(m) = t.next_token(b"\n")
                {
                    message = m.into();
                }
                retry = Some(Reply::Retry {
                    delay,
                    level,
                    message,
                });
            }
            b"OPTIONS" => {
                let Some(line) = t.next_token(b"\n") else {
                    return Err(parse_error(Some("OPTIONS token is missing".into())));
                };
                // Only segments terminated by ';' are looked at.
                let mut segments: Vec<&[u8]> = line.split(|&b| b == b';').collect();
                segments.pop();
                for seg in segments {
                    if let Some(v) = seg.strip_prefix(b"features=") {
                        match Features::parse(v) {
                            Ok(f) => features = Some(f),
                            // the dumper's own message is overwritten by the generic one
                            Err(_) => return Err(parse_error(None)),
                        }
                    }
                }
            }
            other => {
                return Err(parse_error(Some(format!(
                    "next token is \"{}\": expected \"CONNECT\", \"ERROR\" or \"OPTIONS\"",
                    lossy(other)
                ))));
            }
        }
    }
    if let Some(r) = retry {
        return Ok(r);
    }
    let [data, mesg, index, state] = ports;
    if data == -1 || mesg == -1 {
        return Err(ReplyError::MissingStreams);
    }
    Ok(Reply::Connect {
        ids: StreamIds {
            data,
            mesg,
            index,
            state: (nstreams == 4).then_some(state),
        },
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    fn f() -> Features {
        Features::amanda_3_5_1()
    }

    #[test]
    fn service_line_and_amandad_rewrite_match_the_bsdtcp_trace() {
        let options = format!("OPTIONS features={F};\n");
        let service = service_reply(false, true, &f(), options.as_bytes());
        assert_eq!(
            service,
            format!("CONNECT DATA 150 MESG 151 INDEX 152 STATE 153\n{options}").into_bytes()
        );
        let mut next = 500_000;
        let rewritten = rewrite_connect(&service, |_| {
            next -= 1;
            Some(next)
        });
        assert_eq!(
            String::from_utf8(rewritten.body).unwrap(),
            format!("CONNECT DATA 499999 MESG 499998 INDEX 499997 STATE 499996\n{options}")
        );
        assert_eq!(rewritten.streams.len(), 4);
        assert!(!rewritten.kencrypt);
    }

    #[test]
    fn rewrite_edge_cases() {
        let r = rewrite_connect(
            b"KENCRYPT\nCONNECT DATA 150 MESG 151 INDEX -1\nOPTIONS ;\n",
            |s| Some(s.label() as u32 + 1000),
        );
        assert!(r.kencrypt);
        assert_eq!(r.body, b"CONNECT DATA 1150 MESG 1151 INDEX -1\nOPTIONS ;\n");
        // repeated and out-of-range labels get -1
        let r = rewrite_connect(b"CONNECT DATA 150 MESG 150 INDEX 999\nx", |_| Some(7));
        assert_eq!(r.body, b"CONNECT DATA 7 MESG -1 INDEX -1\nx");
        // nothing after the CONNECT line: sent unchanged
        assert_eq!(
            rewrite_connect(b"CONNECT DATA 150\n", |_| Some(7)).body,
            b"CONNECT DATA 150\n"
        );
        // not a CONNECT reply
        assert_eq!(
            rewrite_connect(b"ERROR [x]\n", |_| Some(7)).body,
            b"ERROR [x]\n"
        );
        // allocation failure
        assert_eq!(
            rewrite_connect(b"CONNECT DATA 150\nx", |_| None).body,
            b"CONNECT DATA -1\nx"
        );
    }

    #[test]
    fn dumper_reads_trace_replies() {
        let body = format!(
            "CONNECT DATA 50079 MESG 50080 INDEX 50081 STATE 50082\nOPTIONS features={F};\n"
        );
        let r = parse_reply(PacketType::Rep, body.as_bytes(), &f()).unwrap();
        assert_eq!(
            r,
            Reply::Connect {
                ids: StreamIds {
                    data: 50079,
                    mesg: 50080,
                    index: 50081,
                    state: Some(50082)
                },
                features: Some(f())
            }
        );
        // TV-8: a client without bit 117
        let r = parse_reply(PacketType::Rep, b"CONNECT DATA 41207 MESG 41208 INDEX 41209\nOPTIONS features=dfbfe67f1c0000001040000000000000000000;\n", &Features::minimal_gnutar_client()).unwrap();
        let Reply::Connect { ids, .. } = r else {
            panic!()
        };
        assert_eq!(
            ids.to_connect().collect::<Vec<_>>(),
            vec![
                (Stream::Data, 41207),
                (Stream::Mesg, 41208),
                (Stream::Index, 41209)
            ]
        );
        assert_eq!(
            encode_reply(&ids, b"OPTIONS ;\n"),
            b"CONNECT DATA 41207 MESG 41208 INDEX 41209\nOPTIONS ;\n"
        );
    }

    #[test]
    fn dumper_error_texts() {
        let old = Features::minimal_gnutar_client();
        let e = |body: &[u8], fs: &Features| parse_reply(PacketType::Rep, body, fs).unwrap_err();
        assert_eq!(
            e(b"CONNECT DATA 1 MESG 2 INDEX 3 STATE 4\nOPTIONS ;\n", &old).to_string(),
            "[parse of reply message failed: next token is \"STATE\": expected \"CONNECT\", \"ERROR\" or \"OPTIONS\"]"
        );
        assert_eq!(
            e(b"CONNECT MESG 1 DATA 2 INDEX 3\n", &old).to_string(),
            "[parse of reply message failed: CONNECT token is \"MESG\": expected \"DATA\"]"
        );
        assert_eq!(
            e(b"CONNECT DATA x MESG 2 INDEX 3\n", &old).to_string(),
            "[parse of reply message failed: CONNECT DATA token is \"x\": expected a port number]"
        );
        assert_eq!(
            e(b"CONNECT DATA 1 MESG 2 INDEX 3\n", &f()).to_string(),
            "[parse of reply message failed: CONNECT token is \"(null)\": expected \"STATE\"]"
        );
        assert_eq!(
            e(
                b"ERROR FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'\n",
                &old
            ),
            ReplyError::Client("FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'".into())
        );
        assert_eq!(
            e(b"OPTIONS features=zz;\n", &old).to_string(),
            "[parse of reply message failed: (no additional information)]"
        );
        assert_eq!(e(b"OPTIONS ;\n", &old), ReplyError::MissingStreams);
        assert_eq!(
            e(b"KENCRYPT\n", &old).to_string(),
            "[parse of reply message failed: next token is \"KENCRYPT\": expected \"CONNECT\", \"ERROR\" or \"OPTIONS\"]"
        );
        assert_eq!(
            parse_reply(
                PacketType::Nak,
                b"ERROR frobnicate: invalid service\n",
                &old
            )
            .unwrap_err(),
            ReplyError::Nak("frobnicate: invalid service".into())
        );
        assert_eq!(
            parse_reply(PacketType::Nak, b"nope", &old).unwrap_err(),
            ReplyError::BareNak
        );
        assert_eq!(
            parse_reply(PacketType::Prep, b"x", &old).unwrap_err(),
            ReplyError::StrangePacket {
                kind: PacketType::Prep,
                body: "x".into()
            }
        );
        // The texts the dumper prints, and its choice between TRY-AGAIN and FAILED.
        let texts = [
            (
                ReplyError::Nak("frobnicate: invalid service".into()),
                "NAK: frobnicate: invalid service",
                true,
            ),
            (ReplyError::BareNak, "request NAK", false),
            (
                parse_reply(PacketType::Prep, b"x", &old).unwrap_err(),
                "received strange packet type PREP: x",
                true,
            ),
            (
                ReplyError::Client("[bogus error packet]".into()),
                "[bogus error packet]",
                false,
            ),
            (
                ReplyError::MissingStreams,
                "[couldn't open MESG or INDEX streams]",
                true,
            ),
            (
                parse_error(None),
                "[parse of reply message failed: (no additional information)]",
                false,
            ),
        ];
        for (e, text, retryable) in texts {
            assert_eq!((e.to_string().as_str(), e.retryable()), (text, retryable));
        }
    }

    #[test]
    fn retry_reply() {
        let r = parse_reply(
            PacketType::Rep,
            b"RETRY delay 60 level 1 message try later\nOPTIONS ;\n",
            &f(),
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Retry {
                delay: Some(60),
                level: Some(1),
                message: "try later".into()
            }
        );
        let r = parse_reply(PacketType::Rep, b"RETRY\n", &f()).unwrap();
        assert_eq!(
            r,
            Reply::Retry {
                delay: None,
                level: None,
                message: "\"No message\"".into()
            }
        );
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(data in 0i32..1 << 20, mesg in 0i32..1 << 20, index in -1i32..1 << 20, state in proptest::option::of(0i32..1 << 20)) {
            let ids = StreamIds { data, mesg, index, state };
            let client = if state.is_some() { f() } else { Features::minimal_gnutar_client() };
            let body = encode_reply(&ids, format!("OPTIONS features={F};\n").as_bytes());
            prop_assert_eq!(parse_reply(PacketType::Rep, &body, &client).unwrap(), Reply::Connect { ids, features: Some(f()) });
        }

        #[test]
        fn parsers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(PacketType::Rep, &s, &f());
            let _ = parse_reply(PacketType::Nak, &s, &f());
            let _ = rewrite_connect(&s, |_| Some(1));
        }
    }
}
