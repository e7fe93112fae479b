//! One dump, start to end, on a worker thread (spec §6.7): the sendbackup request, the
//! client's CONNECT reply, the data connections, and the holding and index files.
//!
//! ```text
//! resolve ─► lease control port ─► REQ/ACK/REP/ACK ─► parse CONNECT ─► (UDP port released)
//!     ─► connect streams (bsd: DATA, MESG, INDEX from unreserved ports; bsdudp: one
//!        connection to the DATA port; bsdtcp: the control connection carries them)
//!     ─► session (mio): MESG lines, INDEX bytes, DATA after `sendbackup: info end`
//!     ─► verdict (proto::mesg::DumpTracker) ─► commit or remove the holding/index files
//! ```
//!
//! What this module must not do: schedule (the driver does), or touch the catalog (the
//! run shell does, from the [`DumpReport`]).

pub mod liveness;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use proto::crc::CrcValue;
use proto::dle::{Compress, Encrypt};
use proto::exchange::InitiatorConfig;
use proto::features::{Feature, Features};
use proto::header::DumpHeader;
use proto::mesg::{DumpStatus, DumpTracker, InfoFields};
use proto::pkt::PacketType;
use proto::sendbackup::{Reply, ReplyError, StreamIds, parse_reply};

use crate::holding::HoldingWriter;
use crate::index::IndexWriter;
use crate::net::exchange::{self, Outcome};
use crate::net::tcp::FramedConn;
use crate::net::udp::UdpControl;
use crate::net::{self, Ports, Tuning, WaitEvent};
use crate::plan::DleSpec;
use crate::request::{self, ReqContext};
use proto::Auth;

pub use session::{Limits, Source};

/// The dumper's wait for the sendbackup REP (`STARTUP_TIMEOUT`, 60 s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What every dump of a run shares.
pub struct DumpContext {
    /// Our features.
    pub ours: Features,
    /// The configuration name (`config=`).
    pub config_name: String,
    /// `SECURITY USER`: the configured `dumpuser`.
    pub user: String,
    /// The port pools.
    pub ports: Ports,
    /// Keepalive etc.
    pub tuning: Tuning,
    /// `connect-tries`, `req-tries`.
    pub initiator: InitiatorConfig,
    /// `dtimeout`.
    pub dtimeout: Duration,
    /// Bytes an INDEX stream may bring (amanda-rs setting `dumper.max_index_mib`).
    pub max_index_bytes: u64,
    /// Writer buffers per dump (the memory bound is `buffers * buffer_size` + one read
    /// buffer).
    pub buffers: usize,
    /// Bytes per writer buffer.
    pub buffer_size: usize,
}

/// One dump to do.
#[derive(Clone, Debug)]
pub struct DumpJob {
    /// The DLE.
    pub spec: Arc<DleSpec>,
    /// The level.
    pub level: i32,
    /// The legacy `dumpdate` (last dump below this level, UTC `Y:M:D:h:m:s`).
    pub dumpdate: String,
    /// The run timestamp.
    pub timestamp: String,
    /// Where the holding file goes (final name).
    pub holding_path: PathBuf,
    /// Where the index goes (final name), if the DLE has `index yes`.
    pub index_path: Option<PathBuf>,
    /// The client's features (from its noop reply).
    pub client_features: Features,
    /// The host's `maxdumps`.
    pub maxdumps: u32,
}

/// How a dump ended.
#[derive(Clone, Debug)]
pub struct DumpReport {
    /// DONE, STRANGE, FAILED (or RETRY when the client asked for it).
    pub status: DumpStatus,
    /// A failure the driver may retry (TRY-AGAIN: NAK, no REP, a connection that failed).
    pub retryable: bool,
    /// The error text, Amanda-style (`[request failed: timeout waiting for ACK]`).
    pub error: Option<String>,
    /// DATA bytes received (the holding file minus its header).
    pub bytes: u64,
    /// `sendbackup: size` (KiB).
    pub orig_kb: Option<i64>,
    /// CRC-32C of the DATA bytes.
    pub crc: CrcValue,
    /// The client's `client-CRC`.
    pub client_crc: Option<CrcValue>,
    /// The client's `native-CRC`.
    pub native_crc: Option<CrcValue>,
    /// The holding file, when the dump succeeded.
    pub holding: Option<PathBuf>,
    /// The index file, when one was written.
    pub index: Option<PathBuf>,
    /// The header fields from MESG.
    pub info: InfoFields,
    /// MESG lines and notes (for STRANGE/FAILED details in the report).
    pub log: Vec<String>,
    /// From the REQ to the end.
    pub duration: Duration,
    /// From the first DATA byte to the end.
    pub data_time: Duration,
    /// Problems that did not fail the dump (index errors, ...).
    pub warnings: Vec<String>,
    /// How many times the sendbackup REQ was sent again.
    pub resent: u32,
}

impl DumpReport {
    /// A dump that failed before any data, with `error`.
    pub fn failed(error: String, retryable: bool, started: Instant) -> DumpReport {
        DumpReport {
            status: DumpStatus::Failed,
            retryable,
            error: Some(error),
            bytes: 0,
            orig_kb: None,
            crc: CrcValue::default(),
            client_crc: None,
            native_crc: None,
            holding: None,
            index: None,
            info: InfoFields::default(),
            log: Vec::new(),
            duration: started.elapsed(),
            data_time: Duration::ZERO,
            warnings: Vec::new(),
            resent: 0,
        }
    }
}

/// Progress counters a worker publishes (read by the progress display).
#[derive(Debug, Default)]
pub struct Progress {
    /// DATA bytes received so far in the current dump.
    pub bytes: AtomicU64,
}

/// Performs one dump. `waits` receives port waits as they happen.
pub fn run(
    ctx: &DumpContext,
    job: &DumpJob,
    progress: &Progress,
    waits: &mut dyn FnMut(WaitEvent),
) -> DumpReport {
    let mut resent = 0;
    let mut report = run_counting(ctx, job, progress, waits, &mut resent);
    report.resent = resent;
    report
}

fn run_counting(
    ctx: &DumpContext,
    job: &DumpJob,
    progress: &Progress,
    waits: &mut dyn FnMut(WaitEvent),
    resent: &mut u32,
) -> DumpReport {
    let started = Instant::now();
    let spec = &job.spec;
    let dest = match net::resolve(&spec.host, spec.client_port) {
        Ok(d) => d,
        Err(e) => return DumpReport::failed(format!("[{e}]"), true, started),
    };
    let rctx = ReqContext {
        ours: &ctx.ours,
        client: &job.client_features,
        maxdumps: job.maxdumps,
        hostname: &spec.host,
        config: &ctx.config_name,
        timestamp: Some(&job.timestamp),
    };
    let (req, header_dle) = match request::sendbackup(&rctx, &spec.dle, job.level, &job.dumpdate) {
        Ok(r) => r,
        Err(e) => return DumpReport::failed(format!("[{e}]"), false, started),
    };
    let icfg = InitiatorConfig {
        rep_wait: STARTUP_TIMEOUT,
        ..ctx.initiator.clone()
    };

    // The request, on the auth's control transport.
    let (rep, control): (Result<Vec<u8>, Outcome>, Control) = match spec.auth {
        Auth::Bsdtcp | Auth::Ssl => {
            let pool = match spec.auth {
                Auth::Ssl => ctx.ports.tcp_data.as_deref(),
                _ => ctx.ports.tcp_reserved.as_deref(),
            };
            let Some(pool) = pool else {
                return DumpReport::failed(
                    format!("[no port pool for {}]", spec.auth),
                    false,
                    started,
                );
            };
            let mut conn: Option<FramedConn> = None;
            let ex = exchange::run(icfg, req, &mut conn, || match spec.ssl.as_deref() {
                Some(s) => net::tls::connect(
                    &ctx.ports,
                    dest,
                    &spec.host,
                    s,
                    &ctx.user,
                    &ctx.tuning,
                    waits,
                ),
                None => net::connect(pool, dest, "bsdtcp connection", &ctx.tuning, waits)
                    .map(|l| FramedConn::new(l, dest, &ctx.user))
                    .map_err(|e| e.to_string()),
            });
            *resent += ex.resent;
            let rep = match ex.outcome {
                Outcome::Rep(b) => Ok(b),
                other => Err(other),
            };
            (
                rep,
                conn.map_or(Control::None, |c| Control::Tcp(Box::new(c))),
            )
        }
        Auth::Bsd | Auth::Bsdudp => {
            let Some(pool) = ctx.ports.udp.as_deref() else {
                return DumpReport::failed("[no reserved-udp-port pool]".into(), false, started);
            };
            let mut udp: Option<UdpControl> = None;
            let ex = exchange::run(icfg, req, &mut udp, || {
                let name = net::pool_name(pool);
                net::lease(pool, None, waits)
                    .map(|l| UdpControl::new(l, dest, &ctx.user))
                    .map_err(|e| format!("{dest}: {name} pool: {e}"))
            });
            *resent += ex.resent;
            // The UDP port goes back to the pool now: the data flows over TCP.
            drop(udp);
            let rep = match ex.outcome {
                Outcome::Rep(b) => Ok(b),
                other => Err(other),
            };
            (rep, Control::None)
        }
    };
    let rep = match rep {
        Ok(b) => b,
        Err(Outcome::Nak(body)) => {
            let e = match parse_reply(PacketType::Nak, &body, &job.client_features) {
                Err(ReplyError::TryAgain(t)) => (t, true),
                Err(ReplyError::Failed(t)) => (t, false),
                Ok(_) => ("request NAK".to_owned(), false),
            };
            return DumpReport::failed(e.0, e.1, started);
        }
        Err(other) => {
            let why = other.failure().unwrap_or_default();
            return DumpReport::failed(
                format!("[{why}] ({} {}:{})", spec.auth, spec.host, spec.client_port),
                true,
                started,
            );
        }
    };
    // The client adds a STATE stream only when **we** advertise bit 117 too.
    let mut reply_features = job.client_features.clone();
    if !ctx.ours.has(Feature::SENDBACKUP_STREAM_STATE) {
        reply_features.remove(Feature::SENDBACKUP_STREAM_STATE);
    }
    let (ids, features) = match parse_reply(PacketType::Rep, &rep, &reply_features) {
        Ok(Reply::Connect { ids, features }) => (ids, features),
        Ok(Reply::Retry { message, .. }) => {
            return DumpReport::failed(
                format!("[client asked to retry: {message}]"),
                true,
                started,
            );
        }
        Err(ReplyError::TryAgain(t)) => return DumpReport::failed(t, true, started),
        Err(ReplyError::Failed(t)) => return DumpReport::failed(t, false, started),
    };
    let _ = features;

    // The files.
    let writer = match HoldingWriter::create(job.holding_path.clone(), ctx.buffers, ctx.buffer_size)
    {
        Ok(w) => w,
        Err(e) => return DumpReport::failed(e.to_string(), false, started),
    };
    let mut warnings = Vec::new();
    let index = match (&job.index_path, ids.index) {
        (Some(p), i) if i != -1 => match IndexWriter::create(p.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warnings.push(e.to_string());
                None
            }
        },
        _ => None,
    };

    // The streams.
    let sources = match connect_streams(ctx, spec.auth, dest, ids, control, waits) {
        Ok(s) => s,
        Err(e) => {
            writer.abort();
            return DumpReport::failed(format!("[{e}]"), true, started);
        }
    };
    let header_base = |info: &InfoFields| {
        DumpHeader::for_dump(
            job.timestamp.as_bytes(),
            spec.host.as_bytes(),
            &spec.dle,
            job.level,
            info,
            header_dle.as_deref(),
        )
    };
    let mut tracker = DumpTracker::new();
    tracker.set_client_filters(client_filters(&spec.dle));
    let limits = Limits {
        dtimeout: ctx.dtimeout,
        max_index_bytes: ctx.max_index_bytes,
    };
    let result = session::Session::new(
        sources,
        writer,
        index,
        tracker,
        limits,
        progress,
        &header_base,
    )
    .run();
    let mut report = result.into_report(started);
    report.warnings.extend(warnings);
    report
}

/// Whether the client filters the backup program's output before DATA (then the `size`
/// line and native-CRC describe other bytes than DATA).
fn client_filters(dle: &proto::dle::Dle) -> bool {
    matches!(
        dle.compress,
        Compress::Fast | Compress::Best | Compress::Custom(_)
    ) || matches!(dle.encrypt, Encrypt::Custom { .. })
}

/// What the control exchange left open.
enum Control {
    None,
    Tcp(Box<FramedConn>),
}

/// Opens the data connections of a sendbackup in the order DATA, MESG, INDEX, STATE.
fn connect_streams(
    ctx: &DumpContext,
    auth: Auth,
    dest: SocketAddr,
    ids: StreamIds,
    control: Control,
    waits: &mut dyn FnMut(WaitEvent),
) -> Result<Vec<Source>, String> {
    let map_of = |with_data_handle: Option<u32>| {
        let mut m = Vec::new();
        for (stream, id) in ids.to_connect() {
            let handle = match (stream, with_data_handle) {
                (proto::sendbackup::Stream::Data, Some(h)) => h,
                _ => u32::try_from(id).map_err(|_| format!("bad stream id {id} for {stream}"))?,
            };
            m.push((handle, stream));
        }
        Ok::<_, String>(m)
    };
    match auth {
        Auth::Bsdtcp | Auth::Ssl => {
            let Control::Tcp(mut conn) = control else {
                return Err(format!("{auth} connection is gone"));
            };
            let control_handle = conn.handle();
            let peer_closed = conn.peer_closed(control_handle);
            let tls = conn.take_tls();
            let (lease, rest, _) = (*conn).into_parts();
            Source::framed(
                lease,
                dest,
                rest,
                map_of(None)?,
                Some((control_handle, peer_closed)),
            )
            .map(|s| vec![s.with_tls(tls)])
        }
        Auth::Bsdudp => {
            let pool = ctx
                .ports
                .tcp_data
                .as_deref()
                .ok_or("no unreserved-tcp-port pool")?;
            let port =
                u16::try_from(ids.data).map_err(|_| format!("bad DATA port {}", ids.data))?;
            let to = SocketAddr::new(dest.ip(), port);
            let lease = net::connect(pool, to, "bsdudp data connection", &ctx.tuning, waits)
                .map_err(|e| format!("could not connect DATA stream: {e}"))?;
            Source::framed(lease, to, Vec::new(), map_of(Some(u32::from(port)))?, None)
                .map(|s| vec![s])
        }
        Auth::Bsd => {
            let pool = ctx
                .ports
                .tcp_data
                .as_deref()
                .ok_or("no unreserved-tcp-port pool")?;
            let mut out = Vec::new();
            for (stream, id) in ids.to_connect() {
                let port = u16::try_from(id).map_err(|_| format!("bad {stream} port {id}"))?;
                let to = SocketAddr::new(dest.ip(), port);
                let what = format!("{stream} stream");
                let lease = net::connect(pool, to, &what, &ctx.tuning, waits)
                    .map_err(|e| format!("could not connect {stream} stream: {e}"))?;
                out.push(Source::raw(lease, to, stream)?);
            }
            Ok(out)
        }
    }
}
