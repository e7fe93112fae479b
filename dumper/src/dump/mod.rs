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
//! A dump that fails says why as a [`DumpFailure`] in its [`DumpReport`]: the hop, the
//! client's words, the timeout, the holding disk.
//!
//! What this module must not do: schedule (the driver does), or touch the catalog (the
//! run shell does, from the [`DumpReport`]).

pub(crate) mod session;
pub mod stages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use filters::gzip::GzipPool;
use proto::crc::CrcValue;
use proto::dataphase::FilterChain;
use proto::exchange::InitiatorConfig;
use proto::features::{Feature, Features};
use proto::header::DumpHeader;
use proto::mesg::{DumpStatus, DumpTracker, InfoFields};
use proto::pkt::PacketType;
use proto::sendbackup::{Reply, StreamIds, parse_reply};

use crate::failure::{DumpFailure, Internal, StreamSetup};
use crate::holding::HoldingWriter;
use crate::index::IndexWriter;
use crate::net::control::{Control, Link};
use crate::net::exchange::RequestFailure;
use crate::net::tcp::FramedConn;
use crate::net::{self, WaitEvent};
use crate::plan::DleSpec;
use crate::request::{self, ReqContext};
use proto::{Auth, Stream};

pub use session::{Limits, ServerFilters, Session, SessionResult, Source};

/// The dumper's wait for the sendbackup REP (`STARTUP_TIMEOUT`, 60 s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What every dump of a run shares.
pub struct DumpContext {
    /// Who we are to the clients, the port pools, the retries.
    pub link: Link,
    /// `dtimeout`.
    pub dtimeout: Duration,
    /// Bytes an INDEX stream may bring (amanda-rs setting `dumper.max_index_mib`).
    pub max_index_bytes: u64,
    /// Writer buffers per dump (the memory bound is `buffers * buffer_size` + one read
    /// buffer).
    pub buffers: usize,
    /// Bytes per writer buffer.
    pub buffer_size: usize,
    /// The gzip pool of `compress server fast|best` (shared by every dump of the run).
    pub gzip: Arc<GzipPool>,
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
    /// DONE, STRANGE, FAILED (or RETRY when the client asked for it on MESG).
    pub status: DumpStatus,
    /// Why it failed: `Some` exactly when the status is FAILED or RETRY.
    pub failure: Option<DumpFailure>,
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
    /// A dump that failed before any data.
    pub fn failed(failure: DumpFailure, started: Instant) -> DumpReport {
        DumpReport {
            status: DumpStatus::Failed,
            failure: Some(failure),
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

    /// DONE or STRANGE.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Whether the driver may try again.
    pub fn retryable(&self) -> bool {
        self.failure.as_ref().is_some_and(DumpFailure::retryable)
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
    match dump(ctx, job, progress, waits, resent, started) {
        Ok(report) => report,
        Err(failure) => DumpReport::failed(failure, started),
    }
}

/// One dump; `Err` when it failed before the data phase.
fn dump(
    ctx: &DumpContext,
    job: &DumpJob,
    progress: &Progress,
    waits: &mut dyn FnMut(WaitEvent),
    resent: &mut u32,
    started: Instant,
) -> Result<DumpReport, DumpFailure> {
    let spec = &job.spec;
    let link = &ctx.link;
    let dest =
        net::resolve_for(link, &spec.host, spec.client_port).map_err(DumpFailure::Resolve)?;
    let rctx = ReqContext {
        ours: &link.ours,
        client: &job.client_features,
        maxdumps: job.maxdumps,
        hostname: &spec.host,
        config: &link.config_name,
        timestamp: Some(&job.timestamp),
    };
    let (req, header_dle) = request::sendbackup(&rctx, &spec.dle, job.level, &job.dumpdate)
        .map_err(DumpFailure::Request)?;
    // Which stages run where (the plan refused the combinations Amanda refuses).
    let chain = FilterChain::of(&spec.dle.compress, &spec.dle.encrypt)
        .map_err(|e| DumpFailure::Request(request::RequestError(e.to_string())))?;
    let icfg = InitiatorConfig {
        rep_wait: STARTUP_TIMEOUT,
        ..link.initiator.clone()
    };

    // The request, on the auth's control transport. The UDP port goes back to its pool
    // when the exchange is over: the data flows over TCP.
    let mut control = Control::for_dle(spec.auth, &spec.host, spec.ssl.as_ref());
    // issue 14: through a proxy, a noop first asks for the heartbeat that keeps the
    // tunnel open while the dump is quiet.
    let noop = control
        .proxy_heartbeat(link, dest)
        .map(|_| control.noop(link, dest, icfg.clone(), waits));
    let ex = match noop {
        Some(n) if n.outcome.is_err() => n,
        Some(n) => {
            *resent += n.resent;
            control.next_request();
            control.exchange(link, dest, icfg, req, waits)
        }
        None => control.exchange(link, dest, icfg, req, waits),
    };
    *resent += ex.resent;
    let rep = ex.outcome.map_err(|failure| match failure {
        RequestFailure::NoPool(pool) => DumpFailure::Internal(Internal::NoPool(pool)),
        RequestFailure::Nak(body) => {
            match parse_reply(PacketType::Nak, &body, &job.client_features) {
                Err(e) => DumpFailure::from_reply(e),
                Ok(_) => DumpFailure::Nak { text: None },
            }
        }
        failure => DumpFailure::Control {
            auth: spec.auth,
            host: spec.host.clone(),
            port: spec.client_port,
            failure: Box::new(failure),
        },
    })?;
    let control = control.into_tcp();
    // The client adds a STATE stream only when **we** advertise bit 117 too.
    let mut reply_features = job.client_features.clone();
    if !link.ours.has(Feature::SENDBACKUP_STREAM_STATE) {
        reply_features.remove(Feature::SENDBACKUP_STREAM_STATE);
    }
    let ids = match parse_reply(PacketType::Rep, &rep, &reply_features) {
        Ok(Reply::Connect { ids, .. }) => ids,
        Ok(Reply::Retry {
            delay,
            level,
            message,
        }) => {
            return Err(DumpFailure::Retry {
                delay,
                level,
                message: String::from_utf8_lossy(&message).into_owned(),
            });
        }
        Err(e) => return Err(DumpFailure::from_reply(e)),
    };

    // The files.
    let writer = HoldingWriter::create(job.holding_path.clone(), ctx.buffers, ctx.buffer_size)
        .map_err(|e| DumpFailure::Holding(Arc::new(e)))?;
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

    // The streams (a failure drops, and so removes, the holding file).
    let sources =
        connect_streams(ctx, spec.auth, dest, ids, control, waits).map_err(DumpFailure::Streams)?;
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
    tracker.set_client_filters(chain.client_filters());
    let limits = Limits {
        dtimeout: ctx.dtimeout,
        max_index_bytes: ctx.max_index_bytes,
        mesg_two_way: false,
    };
    let filters = ServerFilters {
        stages: chain.server,
        gzip: ctx.gzip.clone(),
        buffers: ctx.buffers,
        buffer_size: ctx.buffer_size,
        stall: ctx.dtimeout,
    };
    let result = session::Session::new(
        sources,
        writer,
        filters,
        index,
        tracker,
        limits,
        progress,
        &header_base,
    )
    .run();
    let mut report = result.into_report(started);
    report.warnings.extend(warnings);
    Ok(report)
}

/// Opens the data connections of a sendbackup in the order DATA, MESG, INDEX, STATE.
/// `control` is the bsdtcp connection, which carries them all.
fn connect_streams(
    ctx: &DumpContext,
    auth: Auth,
    dest: SocketAddr,
    ids: StreamIds,
    control: Option<FramedConn>,
    waits: &mut dyn FnMut(WaitEvent),
) -> Result<Vec<Source>, StreamSetup> {
    let map_of = |with_data_handle: Option<u32>| {
        let mut m = Vec::new();
        for (stream, id) in ids.to_connect() {
            let handle = match (stream, with_data_handle) {
                (Stream::Data, Some(h)) => h,
                _ => u32::try_from(id).map_err(|_| StreamSetup::BadId { stream, id })?,
            };
            m.push((handle, stream));
        }
        Ok::<_, StreamSetup>(m)
    };
    let port_of = |stream, id: i32| {
        u16::try_from(id)
            .map(|port| SocketAddr::new(dest.ip(), port))
            .map_err(|_| StreamSetup::BadPort { stream, id })
    };
    let link = &ctx.link;
    match auth {
        Auth::Bsdtcp | Auth::Ssl => {
            let mut conn = control.ok_or(StreamSetup::ControlGone)?;
            let control_handle = conn.handle();
            let peer_closed = conn.peer_closed(control_handle);
            let tls = conn.take_tls();
            // A dial-in client's connection comes from where it is, not from `dest`.
            let peer = conn.peer();
            let heartbeat = conn.heartbeat();
            let (lease, rest, _) = conn.into_parts();
            Source::framed(
                lease,
                peer,
                rest,
                map_of(None)?,
                Some((control_handle, peer_closed)),
            )
            .map(|s| vec![s.with_tls(tls).with_heartbeat(heartbeat)])
        }
        Auth::Bsdudp => {
            let pool = link.ports.tcp_data.as_deref().ok_or(StreamSetup::NoPool)?;
            let to = port_of(Stream::Data, ids.data)?;
            let lease = net::connect(pool, to, "bsdudp data connection", &link.tuning, waits)
                .map_err(|error| StreamSetup::Connect {
                    stream: Stream::Data,
                    error: Box::new(error),
                })?;
            Source::framed(
                lease,
                to,
                Vec::new(),
                map_of(Some(u32::from(to.port())))?,
                None,
            )
            .map(|s| vec![s])
        }
        Auth::Bsd => {
            let pool = link.ports.tcp_data.as_deref().ok_or(StreamSetup::NoPool)?;
            let mut out = Vec::new();
            for (stream, id) in ids.to_connect() {
                let to = port_of(stream, id)?;
                let what = format!("{stream} stream");
                let lease =
                    net::connect(pool, to, &what, &link.tuning, waits).map_err(|error| {
                        StreamSetup::Connect {
                            stream,
                            error: Box::new(error),
                        }
                    })?;
                out.push(Source::raw(lease, to, stream)?);
            }
            Ok(out)
        }
    }
}
