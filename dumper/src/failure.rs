//! Why a DLE was not dumped, as types: [`DumpFailure`] for a dump attempt, [`EstimateFailure`]
//! for its estimate. Each variant carries the facts (the hop, the peer and our source port,
//! the client's text, both CRCs, both sizes, the timeout), after rustls's errors;
//! [`DumpFailure::retryable`] is what the driver retries, and the `Display` text
//! ([`DumpFailure::report_text`]) is exactly what the report and the catalog print, in
//! Amanda's wording where Amanda has one (`[request failed: timeout waiting for ACK]`).
//!
//! What this module must not do: decide retries beyond saying which failures are
//! retryable (the driver counts them), or format anything but the failure itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use proto::Auth;
use proto::Stream;
use proto::dataphase::ReceiveError;
use proto::frame::DecodeError;
use proto::header::HeaderError;
use proto::mesg::DumpError;
use proto::sendbackup::ReplyError;

use crate::dump::stages::StageFailure;
use crate::holding::HoldingError;
use crate::net::exchange::{OpenError, RequestFailure, TransportError};
use crate::net::{ConnectFailure, HopEvent, ResolveError};
use crate::request::RequestError;

/// Why one dump attempt failed. `Display` is the report's text.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DumpFailure {
    /// The client's host name gives no address (retryable).
    #[error("[{0}]")]
    Resolve(ResolveError),
    /// The sendbackup request cannot be made for this client (final).
    #[error("[{0}]")]
    Request(RequestError),
    /// The control hop failed: no port, no connection, no ACK, no REP, or it broke
    /// (retryable).
    #[error("[{failure}] ({auth} {host}:{port})")]
    Control {
        /// The DLE's auth.
        auth: Auth,
        /// The client, as the disklist names it.
        host: String,
        /// Its amanda port.
        port: u16,
        /// What happened.
        failure: Box<RequestFailure>,
    },
    /// The client NAKed the request: `NAK: <its text>` (retryable), or a NAK without text
    /// (final).
    #[error("{}", match .text { Some(t) => format!("NAK: {t}"), None => "request NAK".to_owned() })]
    Nak {
        /// The client's `ERROR` text.
        text: Option<String>,
    },
    /// The REP refuses the dump (`ERROR ...`, final), does not parse (final), or lacks
    /// streams (retryable): see [`ReplyError::retryable`].
    #[error("{0}")]
    Reply(ReplyError),
    /// The REP is `RETRY`: the client wants the dump later (retryable).
    #[error("[client asked to retry: {message}]")]
    Retry {
        /// `delay`, seconds.
        delay: Option<i32>,
        /// `level`.
        level: Option<i32>,
        /// Its message.
        message: String,
    },
    /// A data connection could not be set up (retryable).
    #[error("[{0}]")]
    Streams(StreamSetup),
    /// The holding disk: creating, writing or finishing the file (final).
    #[error("{0}")]
    Holding(Arc<HoldingError>),
    /// A data connection failed during the dump (final).
    #[error("{}", link_text(*.peer, *.op, .source))]
    Link {
        /// The client's end.
        peer: SocketAddr,
        /// What we were doing.
        op: LinkOp,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The bytes on a framed data connection are not Amanda frames (final).
    #[error("[{peer}: {error}]")]
    Frame {
        /// The client's end.
        peer: SocketAddr,
        /// The decoder's verdict.
        error: DecodeError,
    },
    /// The client closed a connection while streams on it were open (final).
    #[error("{}", closed_text(*.peer, .open, .truncated.as_ref()))]
    ClosedEarly {
        /// The client's end.
        peer: SocketAddr,
        /// The streams still open.
        open: Vec<Stream>,
        /// It closed inside a frame.
        truncated: Option<DecodeError>,
    },
    /// The data phase's own rules stopped the dump (final): `dtimeout` without DATA
    /// progress, more DATA before `sendbackup: info end` than the bound (the receiver's
    /// texts, `proto::dataphase`).
    #[error("{0}")]
    DataPhase(ReceiveError),
    /// A server filter (compression, encryption) failed: it could not start, exited
    /// non-zero, was killed, or stalled (final; issue 12).
    #[error("{0}")]
    ServerFilter(Arc<StageFailure>),
    /// The INDEX stream crossed its cap (final).
    #[error(
        "[the INDEX stream brought more than {} MiB, the limit (amanda-rs setting dumper.max_index_mib)]",
        .limit / (1024 * 1024)
    )]
    IndexCap {
        /// The cap, bytes.
        limit: u64,
    },
    /// What the client said or sent does not hold: its own MESG error, a client-CRC or a
    /// size line that does not match the DATA, missing lines (final).
    #[error("{0}")]
    Client(DumpError),
    /// `sendbackup: retry` on MESG (retryable). The report has always printed
    /// `[unknown error]` for it; the MESG log shows the line.
    #[error("[unknown error]")]
    MesgRetry {
        /// `delay` (-1: none).
        delay: i32,
        /// `level` (-1: none).
        level: i32,
        /// Its message.
        message: String,
    },
    /// A failure of ours in the data phase, and what the client's lines said as well
    /// (final).
    #[error("{ours} {client}")]
    Both {
        /// Ours (a timeout, a broken connection...).
        ours: Box<DumpFailure>,
        /// The client's verdict.
        client: DumpError,
    },
    /// The run was stopped by a signal while the dump ran (final).
    #[error("[interrupted by {signal}]")]
    Interrupted {
        /// `SIGTERM`, `SIGINT`, `SIGHUP`.
        signal: &'static str,
    },
    /// Something on our side that should not happen (final).
    #[error("{0}")]
    Internal(Internal),
}

/// What a data connection was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOp {
    /// Reading a raw (bsd) DATA connection.
    ReadData,
    /// Reading another connection.
    Read,
    /// Writing (our end-of-stream frames).
    Write,
}

fn link_text(peer: SocketAddr, op: LinkOp, e: &io::Error) -> String {
    match op {
        LinkOp::ReadData => format!("{peer} (DATA): {e}"),
        LinkOp::Read => format!("[{peer}: {e}]"),
        LinkOp::Write => format!("{peer}: {e}"),
    }
}

fn closed_text(peer: SocketAddr, open: &[Stream], truncated: Option<&DecodeError>) -> String {
    let names: Vec<String> = open.iter().map(ToString::to_string).collect();
    let mut why = format!(
        "[{peer}: connection closed by the client with {} still open",
        names.join(", ")
    );
    if let Some(t) = truncated {
        why.push_str(&format!(" ({t})"));
    }
    why.push(']');
    why
}

/// Setting up the data connections of a dump failed (always retryable).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StreamSetup {
    /// The connection to the client's stream port failed.
    #[error("could not connect {stream} stream: {error}")]
    Connect {
        /// The stream.
        stream: Stream,
        /// Which peer, from which port, and why.
        error: Box<ConnectFailure>,
    },
    /// The REP names a port that is none.
    #[error("bad {stream} port {id}")]
    BadPort {
        /// The stream.
        stream: Stream,
        /// What the REP said.
        id: i32,
    },
    /// The REP names a stream id that is none.
    #[error("bad stream id {id} for {stream}")]
    BadId {
        /// The stream.
        stream: Stream,
        /// What the REP said.
        id: i32,
    },
    /// The run has no `unreserved-tcp-port` pool.
    #[error("no unreserved-tcp-port pool")]
    NoPool,
    /// The bsdtcp control connection did not survive the request.
    #[error("bsdtcp/ssl connection is gone")]
    ControlGone,
    /// A socket could not be made non-blocking.
    #[error("nonblocking socket: {0}")]
    Nonblocking(Arc<io::Error>),
}

/// Failures of our own making.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Internal {
    /// The run has no pool for the control transport (a pool is made for every auth used).
    #[error("[no {0} pool]")]
    NoPool(&'static str),
    /// The dump's thread panicked (its first line).
    #[error("[internal error in the dump: {0}]")]
    Panic(String),
    /// The worker thread is gone.
    #[error("[the dump worker is gone]")]
    WorkerGone,
    /// The data phase's poll failed (`poll`, `poll register`).
    #[error("{what}: {source}")]
    Poll {
        /// The call.
        what: &'static str,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The dump-file header cannot be built (the first one, or the final one with sizes and
    /// CRCs).
    #[error("[cannot build the {}dump-file header: {error}]", if *.final_header { "final " } else { "" })]
    Header {
        /// The final header.
        final_header: bool,
        /// Why.
        error: HeaderError,
    },
    /// A dump that succeeded wrote no header.
    #[error("[no dump-file header was written]")]
    NoHeaderWritten,
    /// A dump that succeeded has no holding file.
    #[error("[no holding file]")]
    NoHoldingFile,
}

/// Which hop of a dump broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopKind {
    /// The control hop (the request and its reply).
    Control,
    /// A data connection (its stream, when known).
    Data(Option<Stream>),
}

/// Where a failed dump broke on the network: the hop, the client's end, our source port,
/// and what happened there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedHop {
    /// Control or data.
    pub kind: HopKind,
    /// The auth, when the failure says.
    pub auth: Option<Auth>,
    /// The client's address and port, when known.
    pub peer: Option<SocketAddr>,
    /// Our source port, when known.
    pub source_port: Option<u16>,
    /// Refused, no answer, timeout, reset...
    pub event: HopEvent,
}

impl DumpFailure {
    /// Whether the driver tries the dump again (while `retry-dump` allows): failures before
    /// any data flowed (the request, the reply, the connections), and a client that asks
    /// for it. A failure after data flowed is final, as in Amanda.
    pub fn retryable(&self) -> bool {
        match self {
            DumpFailure::Resolve(_)
            | DumpFailure::Control { .. }
            | DumpFailure::Retry { .. }
            | DumpFailure::Streams(_)
            | DumpFailure::MesgRetry { .. } => true,
            DumpFailure::Nak { text } => text.is_some(),
            DumpFailure::Reply(e) => e.retryable(),
            DumpFailure::Request(_)
            | DumpFailure::Holding(_)
            | DumpFailure::Link { .. }
            | DumpFailure::Frame { .. }
            | DumpFailure::ClosedEarly { .. }
            | DumpFailure::DataPhase(_)
            | DumpFailure::ServerFilter(_)
            | DumpFailure::IndexCap { .. }
            | DumpFailure::Client(_)
            | DumpFailure::Both { .. }
            | DumpFailure::Interrupted { .. }
            | DumpFailure::Internal(_) => false,
        }
    }

    /// Whether the network broke under the dump (the connection failed or was closed
    /// early, on our side's account): final for a client we connect to, as in Amanda, but
    /// retried for a `dialin yes` client, whose link is expected to come and go (issue 14).
    pub fn broke_link(&self) -> bool {
        match self {
            DumpFailure::Link { .. } | DumpFailure::ClosedEarly { .. } => true,
            DumpFailure::Both { ours, .. } => ours.broke_link(),
            _ => false,
        }
    }

    /// The text the report's FAILURE DUMP SUMMARY and the catalog show.
    pub fn report_text(&self) -> String {
        self.to_string()
    }

    /// The reply to a sendbackup request that is no CONNECT, as a failure.
    pub fn from_reply(e: ReplyError) -> DumpFailure {
        match e {
            ReplyError::Nak(text) => DumpFailure::Nak { text: Some(text) },
            ReplyError::BareNak => DumpFailure::Nak { text: None },
            other => DumpFailure::Reply(other),
        }
    }

    /// The hop that broke, when the dump broke on the network.
    pub fn hop(&self) -> Option<FailedHop> {
        let data = |stream, peer, source_port, event| FailedHop {
            kind: HopKind::Data(stream),
            auth: None,
            peer,
            source_port,
            event,
        };
        match self {
            DumpFailure::Control { auth, failure, .. } => {
                let (peer, source_port) = request_ends(failure);
                Some(FailedHop {
                    kind: HopKind::Control,
                    auth: Some(*auth),
                    peer,
                    source_port,
                    event: failure.event()?,
                })
            }
            DumpFailure::Streams(StreamSetup::Connect { stream, error }) => {
                let (peer, port) = connect_ends(error);
                Some(data(Some(*stream), Some(peer), port, error.event()))
            }
            DumpFailure::Link { peer, op, source } => Some(data(
                (*op == LinkOp::ReadData).then_some(Stream::Data),
                Some(*peer),
                None,
                HopEvent::of_io(source),
            )),
            DumpFailure::Frame { peer, .. } => Some(data(None, Some(*peer), None, HopEvent::Other)),
            DumpFailure::ClosedEarly { peer, open, .. } => Some(data(
                open.first().copied(),
                Some(*peer),
                None,
                HopEvent::Closed,
            )),
            DumpFailure::DataPhase(ReceiveError::DataTimeout { .. }) => {
                Some(data(Some(Stream::Data), None, None, HopEvent::Timeout))
            }
            DumpFailure::DataPhase(ReceiveError::ConnectionClosed { streams, .. }) => {
                Some(data(streams.first().copied(), None, None, HopEvent::Closed))
            }
            DumpFailure::Both { ours, .. } => ours.hop(),
            _ => None,
        }
    }
}

fn connect_ends(e: &ConnectFailure) -> (SocketAddr, Option<u16>) {
    match e {
        ConnectFailure::Lease { dest, .. } => (*dest, None),
        ConnectFailure::Connect { dest, port, .. } | ConnectFailure::Proxy { dest, port, .. } => {
            (*dest, (*port != 0).then_some(*port))
        }
    }
}

fn request_ends(f: &RequestFailure) -> (Option<SocketAddr>, Option<u16>) {
    match f {
        RequestFailure::Open { error, .. } => match error {
            OpenError::Connect(c) => {
                let (peer, port) = connect_ends(c);
                (Some(peer), port)
            }
            OpenError::Lease { dest, .. } | OpenError::Ssl { dest, .. } => (Some(*dest), None),
            OpenError::Initiator(_) | OpenError::Dialin(_) => (None, None),
        },
        RequestFailure::Unanswered { hop, .. } => {
            (hop.map(|h| h.peer), hop.and_then(|h| h.source_port))
        }
        RequestFailure::Broken(e) => match e {
            TransportError::Frame { peer, .. }
            | TransportError::Closed { peer }
            | TransportError::Io { peer, .. } => (Some(*peer), None),
            TransportError::Send(_) => (None, None),
        },
        RequestFailure::Nak(_) | RequestFailure::NoPool(_) => (None, None),
    }
}

/// Why a DLE's estimate failed (the DLE then fails, without a dump). `Display` is the
/// report's text.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EstimateFailure {
    /// The client's host name gives no address.
    #[error("[{0}]")]
    Resolve(ResolveError),
    /// The noop that opens every estimate failed.
    #[error("[{host}: noop {failure} ({auth} port {port})]")]
    Noop {
        /// The client.
        host: String,
        /// The auth.
        auth: Auth,
        /// Its amanda port.
        port: u16,
        /// What happened.
        failure: RequestFailure,
    },
    /// The sendsize request cannot be made for this client.
    #[error("[{0}]")]
    Request(RequestError),
    /// The sendsize request failed.
    #[error("[{host}: sendsize {failure}]")]
    Sendsize {
        /// The client.
        host: String,
        /// What happened.
        failure: RequestFailure,
    },
    /// The sendsize reply does not parse.
    #[error("[{host}: bad sendsize reply: {error:?}]")]
    BadReply {
        /// The client.
        host: String,
        /// Why.
        error: proto::sendsize::BadMessage,
    },
    /// The client's estimate of this DLE is an error: its text.
    #[error("[{0}]")]
    Client(String),
    /// The client answered with a negative size other than -1.
    #[error("[the client cannot estimate level {level}]")]
    CannotEstimate {
        /// The level.
        level: i32,
    },
    /// No line for this DLE, and the client's host-wide errors.
    #[error("[{host}: {}]", .errors.join("; "))]
    Host {
        /// The client.
        host: String,
        /// Its `ERROR` lines.
        errors: Vec<String>,
    },
    /// No line for this DLE at this level.
    #[error("[{host}: no estimate for level {level} in the sendsize reply]")]
    Missing {
        /// The client.
        host: String,
        /// The level.
        level: i32,
    },
    /// The group's result did not mention this DLE.
    #[error("no estimate came back")]
    NotReturned,
    /// The estimate could not be started.
    #[error("[cannot start an estimate thread: {0}]")]
    Thread(Arc<io::Error>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Hop;
    use crate::net::exchange::Awaited;
    use proto::crc::CrcValue;
    use std::time::Duration;

    fn peer() -> SocketAddr {
        SocketAddr::from(([198, 18, 1, 2], 10080))
    }

    fn refused() -> ConnectFailure {
        ConnectFailure::Connect {
            what: "DATA stream".into(),
            dest: SocketAddr::from(([198, 18, 1, 2], 40000)),
            port: 50001,
            pool: "tcp 50000-50100".into(),
            timeout: Duration::from_secs(20),
            source: Arc::new(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    // issue 11: the texts are the report's, and retries are what the driver did before the
    // failure had a type.
    #[test]
    fn every_failure_keeps_its_report_text_and_its_retry_rule() {
        let silent = RequestFailure::Unanswered {
            awaited: Awaited::Ack,
            wait: Duration::from_secs(10),
            hop: Some(Hop {
                transport: proto::ports::Transport::Udp,
                local: Some([198, 18, 0, 1].into()),
                source_port: Some(850),
                peer: peer(),
            }),
            sends: 3,
        };
        let crc = |crc, size| CrcValue { crc, size };
        let cases: Vec<(DumpFailure, &str, bool)> = vec![
            (
                DumpFailure::Control {
                    auth: Auth::Bsd,
                    host: "c".into(),
                    port: 10080,
                    failure: Box::new(silent),
                },
                "[request failed: timeout waiting for ACK: no answer on server 198.18.0.1:850/udp -> client 198.18.1.2:10080/udp to 3 REQs (dropped on the way? `dumper check --ports` tests every hop)] (bsd c:10080)",
                true,
            ),
            (
                DumpFailure::Nak {
                    text: Some("host c: port 40000 not secure".into()),
                },
                "NAK: host c: port 40000 not secure",
                true,
            ),
            (DumpFailure::Nak { text: None }, "request NAK", false),
            (
                DumpFailure::from_reply(ReplyError::Client("no such dir".into())),
                "no such dir",
                false,
            ),
            (
                DumpFailure::from_reply(ReplyError::MissingStreams),
                "[couldn't open MESG or INDEX streams]",
                true,
            ),
            (
                DumpFailure::Streams(StreamSetup::Connect {
                    stream: Stream::Data,
                    error: Box::new(refused()),
                }),
                "[could not connect DATA stream: DATA stream to 198.18.1.2:40000 from port 50001 (tcp 50000-50100 pool): connection refused]",
                true,
            ),
            (
                DumpFailure::Client(DumpError::CrcMismatch {
                    client: crc(1, 10),
                    received: crc(2, 10),
                }),
                "client CRC (00000001:10) do not match data-in CRC (00000002:10)",
                false,
            ),
            (
                DumpFailure::Both {
                    ours: Box::new(DumpFailure::DataPhase(ReceiveError::DataTimeout {
                        quiet: Duration::from_secs(10),
                        mesg_cap: None,
                    })),
                    client: DumpError::MissingSize,
                },
                "[data timeout] missing size line from sendbackup",
                false,
            ),
            (
                DumpFailure::IndexCap {
                    limit: 1024 * 1024 * 1024,
                },
                "[the INDEX stream brought more than 1024 MiB, the limit (amanda-rs setting dumper.max_index_mib)]",
                false,
            ),
            (
                DumpFailure::ClosedEarly {
                    peer: peer(),
                    open: vec![Stream::Data, Stream::Mesg],
                    truncated: Some(DecodeError::TruncatedHeader { have: 3 }),
                },
                "[198.18.1.2:10080: connection closed by the client with DATA, MESG still open (connection closed inside a frame header: 3 of 8 bytes received)]",
                false,
            ),
            (
                DumpFailure::MesgRetry {
                    delay: 30,
                    level: 1,
                    message: "later".into(),
                },
                "[unknown error]",
                true,
            ),
            (
                DumpFailure::Interrupted { signal: "SIGTERM" },
                "[interrupted by SIGTERM]",
                false,
            ),
            (
                DumpFailure::Internal(Internal::Panic("boom".into())),
                "[internal error in the dump: boom]",
                false,
            ),
        ];
        for (f, text, retryable) in cases {
            assert_eq!(f.report_text(), text);
            assert_eq!(f.retryable(), retryable, "{text}");
        }
    }

    #[test]
    fn a_failed_hop_names_its_kind_peer_source_port_and_what_happened() {
        let f = DumpFailure::Streams(StreamSetup::Connect {
            stream: Stream::Mesg,
            error: Box::new(refused()),
        });
        assert_eq!(
            f.hop(),
            Some(FailedHop {
                kind: HopKind::Data(Some(Stream::Mesg)),
                auth: None,
                peer: Some(SocketAddr::from(([198, 18, 1, 2], 40000))),
                source_port: Some(50001),
                event: HopEvent::Refused,
            })
        );
        let f = DumpFailure::Control {
            auth: Auth::Bsdtcp,
            host: "c".into(),
            port: 10080,
            failure: Box::new(RequestFailure::Open {
                error: OpenError::Connect(refused()),
                attempts: 3,
            }),
        };
        let hop = f.hop().unwrap();
        assert_eq!(
            (hop.kind, hop.auth, hop.source_port, hop.event),
            (
                HopKind::Control,
                Some(Auth::Bsdtcp),
                Some(50001),
                HopEvent::Refused
            )
        );
        assert_eq!(DumpFailure::Nak { text: None }.hop(), None);
    }
}
