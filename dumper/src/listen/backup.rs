//! One ambackupd BACKUP (spec §14.3-§14.5): the level from the catalog, the REP with the
//! CONNECT line, then the client's streams on the same connection into a holding file and
//! an index, exactly as `dumper run` receives a dump (the same [`Session`], holding writer,
//! index writer, catalog rows, and a report in `logdir`), with our answers on MESG: `start backup: <disk>` once
//! the client's header is complete, `backup done: <disk>` or `backup failed: <disk>:
//! <reason>`, then `MESG END`.
//!
//! No portpool lease: the client opened this connection to our listener, so no source port
//! of ours is in use (leases are for connections we open).
//!
//! Unlike 3.5.1's ambackupd, the holding directory `<holding>/<timestamp>/` and the index
//! directory `<indexdir>/<host>/<disk>/` are created (the writers make their directories).
//!
//! What this module must not do: parse the request or decide what the peer may back up
//! (see `ambackupd`), or choose levels itself (see `run::level_plan`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::dataphase::FilterChain;
use proto::dle::XmlLayout;
use proto::features::Features;
use proto::header::DumpHeader;
use proto::mesg::{DumpStatus, DumpTracker, InfoFields};
use proto::pkt::PacketType;
use proto::quote::quote_string;
use proto::sendbackup::Stream;

use super::ambackupd::{self, Refusal};
use super::control::Control;
use crate::catalog::{Catalog, DumpRecord};
use crate::clock;
use crate::dump::{DumpReport, Limits, Progress, ServerFilters, Session, Source};
use crate::features::server_features;
use crate::holding::{self, HoldingWriter};
use crate::index::{self, IndexWriter};
use crate::plan::{DleSpec, Plan};
use crate::report::{DleLine, History, Measured, Summary, Verdict};
use crate::run::{LevelPlan, level_plan};

/// How long the client may take to ACK the REP.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long our last MESG lines may take to leave.
const FINAL_WRITE: Duration = Duration::from_secs(30);

/// How long we wait for the client to close MESG after `MESG END`. The real ambackup keeps
/// each BACKUP's amservice until it has done all its DLEs (then each closes MESG and waits
/// for us to end the connection); ending it first makes that amservice spin (seen over
/// ssl). So the wait is long, and TCP keepalive (settings `heartbeat`) ends it for a
/// client that died.
const CLOSE_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What a BACKUP needs from the listener.
pub struct BackupContext<'a> {
    /// The configuration.
    pub plan: &'a Plan,
    /// The peer as named in the disklist.
    pub peer: &'a str,
    /// The client's features (its REQ's OPTIONS).
    pub client: &'a Features,
    /// The request's control handle.
    pub handle: u32,
    /// INDEX bytes one dump may bring.
    pub max_index_bytes: u64,
}

/// The level and dumpdate of `spec` now, or the refusal of a skipped DLE.
fn level_of(catalog: &Catalog, spec: &DleSpec, now: i64) -> Result<LevelPlan, Refusal> {
    let history = catalog
        .history(&spec.host, &spec.disk)
        .map_err(|e| Refusal::Server(format!("catalog: {e}")))?;
    let taped = crate::taper::night::taped_dumps(catalog);
    let lp = level_plan(spec, &history, &taped, now);
    match (&lp.level, &lp.skipped) {
        (Some(_), _) => Ok(lp),
        // The policy skips only for these two settings (`levels::choose`).
        (None, Some(why)) if why.starts_with("skip-full") => Err(Refusal::Skipping("SKIP-FULL")),
        (None, _) => Err(Refusal::Skipping("SKIP-INCR")),
    }
}

/// The MESG line that ends a BACKUP for the client (before `MESG END`).
pub fn verdict_line(disk: &[u8], report: &DumpReport) -> Vec<u8> {
    let q = quote_string(disk);
    let mut line = match (&report.failure, report.status) {
        (None, DumpStatus::Strange) => [b"backup strange: ".as_slice(), &q].concat(),
        (None, _) => [b"backup done: ".as_slice(), &q].concat(),
        (Some(f), _) => {
            let why = f.report_text();
            let why = why.replace('\n', " ");
            [b"backup failed: ".as_slice(), &q, b": ", why.as_bytes()].concat()
        }
    };
    line.push(b'\n');
    line
}

/// Runs a BACKUP of `spec` on `control` (REQ received and ACKed). Refusals before the REP
/// come back as `Err`, with `control` left in place for the caller's error REP; from the
/// REP on the connection is taken and the dump's outcome goes to the client on MESG.
pub fn backup(
    ctx: &BackupContext<'_>,
    spec: &DleSpec,
    control: &mut Option<Control>,
) -> Result<(), Refusal> {
    let plan = ctx.plan;
    let cfg = &plan.config;
    let catalog_path = Catalog::path_for(&cfg.path(&cfg.infofile));
    let mut catalog =
        Catalog::open(&catalog_path).map_err(|e| Refusal::Server(format!("catalog: {e}")))?;
    let now = clock::now_unix();
    let lp = level_of(&catalog, spec, now)?;
    let level = lp.level.unwrap_or(0);
    let timestamp = proto::civil::timestamp(clock::local(now));
    let chain = FilterChain::of(&spec.dle.compress, &spec.dle.encrypt)
        .map_err(|e| Refusal::Server(e.to_string()))?;
    // The holding disk with the most room (a client-initiated dump has no estimate).
    let hd = plan
        .holding
        .iter()
        .max_by_key(|h| holding::free_bytes(&h.dir).unwrap_or(0))
        .ok_or_else(|| Refusal::Server("no holding disk".into()))?;
    let holding_path = holding::pick_free(
        &hd.dir.join(&timestamp),
        &holding::stem(&spec.host, &spec.disk),
        level,
        &HashSet::new(),
    );
    let indexdir = cfg.path(&cfg.indexdir);
    let index_path = spec.dle.index.then(|| {
        index::index_path(
            &indexdir,
            &index::index_key(&spec.host, &spec.disk),
            &timestamp,
            level,
        )
    });
    let writer = HoldingWriter::create(holding_path, 4, 1024 * 1024)
        .map_err(|e| Refusal::Server(e.to_string()))?;
    let mut warnings = Vec::new();
    let index = match index_path.map(IndexWriter::create) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            warnings.push(e.to_string());
            None
        }
        None => None,
    };
    let maxdumps = plan
        .hosts
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(&spec.host))
        .map_or(1, |h| h.maxdumps);
    let ours = server_features();
    let goptions = ambackupd::goptions(&ours, maxdumps, ctx.peer, &plan.config_name);
    let streams = ambackupd::backup_streams(ctx.client, &ours);
    let rep = ambackupd::backup_reply(&streams, &goptions, spec, level, ctx.client);

    let run_id = catalog
        .begin_run(&timestamp, &plan.config_name, now)
        .map_err(|e| Refusal::Server(format!("catalog: {e}")))?;
    let mut rec = DumpRecord::started(&spec.host, &spec.disk, level, &timestamp, now);
    match catalog.insert_dump(run_id, &rec) {
        Ok(id) => rec.id = id,
        Err(e) => warnings.push(e.to_string()),
    }
    let Some(control) = control.take() else {
        return Err(Refusal::Server("the connection is gone".into()));
    };
    let started = Instant::now();
    let peer = control.peer();
    let (mut report, sources, mesg) = receive(
        ctx, spec, control, &rep, &streams, writer, index, &chain, &timestamp, level, started,
    );
    report.warnings.extend(warnings);
    rec.finish(&report, Duration::ZERO, None);
    if let Err(e) = catalog.update_dump(&rec) {
        log::warn!("{}: catalog: {e}", spec.label());
    }
    let summary = summary(plan, spec, &timestamp, level, &report, hd);
    let exit = summary.exit_status();
    write_report(plan, spec, &timestamp, &crate::report::render(&summary));
    if let Err(e) = catalog.finish_run(run_id, clock::now_unix(), exit) {
        log::warn!("{}: catalog: {e}", spec.label());
    }
    for w in &report.warnings {
        log::warn!("{}: {w}", spec.label());
    }
    match &report.failure {
        None => log::info!(
            "{} level {level}: {} ({} bytes) into {}",
            spec.label(),
            report.status,
            report.bytes,
            report
                .holding
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        ),
        Some(f) => log::warn!(
            "{} level {level}: failed: {}",
            spec.label(),
            f.report_text()
        ),
    }
    tell_client(peer, &spec.disk, &report, sources, mesg);
    Ok(())
}

/// The report of one BACKUP, as `dumper run` renders a night of one DLE.
fn summary(
    plan: &Plan,
    spec: &DleSpec,
    timestamp: &str,
    level: i32,
    r: &DumpReport,
    hd: &crate::plan::Holding,
) -> Summary {
    let verdict = match (&r.failure, r.status) {
        (Some(_), _) => Verdict::Failed,
        (None, DumpStatus::Strange) => Verdict::Strange,
        (None, _) => Verdict::Done,
    };
    let line = DleLine {
        host: spec.host.clone(),
        disk: String::from_utf8_lossy(&spec.disk).into_owned(),
        level: Some(level),
        verdict,
        measured: Measured::of(r, r.ok()),
        history: History::once(),
        error: r
            .failure
            .as_ref()
            .map(crate::failure::DumpFailure::report_text),
        log: if verdict == Verdict::Done {
            Vec::new()
        } else {
            r.log.clone()
        },
        holding: r.holding.as_ref().map(|h| h.display().to_string()),
    };
    Summary {
        wall: r.duration,
        holding: r
            .ok()
            .then(|| (hd.dir.display().to_string(), r.bytes))
            .into_iter()
            .collect(),
        dles: vec![line],
        notes: r
            .warnings
            .iter()
            .map(|w| format!("{}: {w}", spec.label()))
            .chain(std::iter::once(format!(
                "{}: client-initiated backup (ambackup)",
                spec.label()
            )))
            .collect(),
        ..Summary::heading(plan, timestamp)
    }
}

/// Keeps the report in `logdir` as `ambackupd.<timestamp>.<host>.<disk>.report` (best
/// effort, like `dumper run`'s).
fn write_report(plan: &Plan, spec: &DleSpec, timestamp: &str, text: &str) {
    let dir = plan.config.path(&plan.config.logdir);
    let stem = String::from_utf8_lossy(&holding::stem(&spec.host, &spec.disk)).into_owned();
    let p = dir.join(format!("ambackupd.{timestamp}.{stem}.report"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&p, text)) {
        log::warn!("{}: {e}", p.display());
    }
}

/// The REP, then the data phase with our `start backup:` on MESG; the dump's report, and
/// the connection and MESG handle for [`tell_client`] (none when it failed before).
#[allow(clippy::too_many_arguments)]
fn receive(
    ctx: &BackupContext<'_>,
    spec: &DleSpec,
    mut control: Control,
    rep: &[u8],
    streams: &[(u32, Stream)],
    writer: HoldingWriter,
    index: Option<IndexWriter>,
    chain: &FilterChain,
    timestamp: &str,
    level: i32,
    started: Instant,
) -> (DumpReport, Vec<Source>, u32) {
    let peer = control.peer();
    let failed = |e: crate::failure::DumpFailure, w: HoldingWriter| {
        w.abort();
        (DumpReport::failed(e, started), Vec::new(), 0)
    };
    let link = |op, e: std::io::Error| crate::failure::DumpFailure::Link {
        peer,
        op,
        source: Arc::new(e),
    };
    use crate::failure::LinkOp;
    if let Err(e) = control.send(ctx.handle, PacketType::Rep, rep) {
        return failed(link(LinkOp::Write, e), writer);
    }
    match control.read_packet(ctx.handle, ACK_WAIT, 64 * 1024, "ACK") {
        Ok((PacketType::Ack, _)) => {}
        Ok((t, _)) => {
            let e = std::io::Error::other(format!("a {t} instead of the REP's ACK"));
            return failed(link(LinkOp::Read, e), writer);
        }
        Err(e) => {
            let e = std::io::Error::other(e.to_string());
            return failed(link(LinkOp::Read, e), writer);
        }
    }
    // The request is over: we close its handle first, as 3.5.1 does here; the client's
    // close of it is dropped by the session (it names no stream).
    if let Err(e) = control.close_handle(ctx.handle) {
        return failed(link(LinkOp::Write, e), writer);
    }
    let (sock, tls, initial) = control.into_parts();
    let source = match Source::accepted(sock, peer, initial, streams.to_vec()) {
        Ok(s) => s.with_tls(tls),
        Err(e) => return failed(crate::failure::DumpFailure::Streams(e), writer),
    };
    let header_dle = spec.dle.to_xml(XmlLayout::HeaderDle, ctx.client);
    let header_base = |info: &InfoFields| {
        DumpHeader::for_dump(
            timestamp.as_bytes(),
            spec.host.as_bytes(),
            &spec.dle,
            level,
            info,
            Some(&header_dle),
        )
    };
    let mut tracker = DumpTracker::new();
    tracker.set_client_filters(chain.client_filters());
    let cfg = &ctx.plan.config;
    let limits = Limits {
        dtimeout: cfg.dtimeout,
        max_index_bytes: ctx.max_index_bytes,
        mesg_two_way: true,
    };
    let filters = ServerFilters {
        stages: chain.server.clone(),
        gzip: Arc::new(filters::gzip::GzipPool::new(std::num::NonZeroUsize::MIN)),
        buffers: 4,
        buffer_size: 1024 * 1024,
        stall: cfg.dtimeout,
    };
    let mesg = streams
        .iter()
        .find(|(_, s)| *s == Stream::Mesg)
        .map_or(0, |(h, _)| *h);
    let start_line = [
        b"start backup: ".as_slice(),
        &quote_string(&spec.disk),
        b"\n",
    ]
    .concat();
    let progress = Progress::default();
    let mut result = Session::new(
        vec![source],
        writer,
        filters,
        index,
        tracker,
        limits,
        &progress,
        &header_base,
    )
    .answering_mesg(mesg, start_line)
    .run();
    let sources = result.take_sources();
    let report = result.into_report(started);
    log::debug!(
        "{peer}: {}: data phase over: {}",
        spec.label(),
        report.status
    );
    (report, sources, mesg)
}

/// Tells the client the verdict, then `MESG END` and the close of MESG, and waits for its
/// close (see [`CLOSE_WAIT`]). Called once the dump is recorded: the client may look right
/// after `MESG END`.
fn tell_client(
    peer: SocketAddr,
    disk: &[u8],
    report: &DumpReport,
    mut sources: Vec<Source>,
    mesg: u32,
) {
    let mut out = Vec::new();
    for line in [verdict_line(disk, report), b"MESG END\n".to_vec()] {
        let _ = proto::frame::encode_frame(mesg, &line, &mut out);
    }
    out.extend_from_slice(&proto::frame::eof_frame(mesg));
    if let Some(s) = sources.first_mut() {
        match s.send_frames(&out, FINAL_WRITE) {
            Ok(()) => {
                let closed = s.await_close(mesg, CLOSE_WAIT);
                log::debug!("{peer}: MESG END sent; the client closed: {closed}");
            }
            Err(e) => log::info!("{peer}: the last MESG lines were not sent: {e}"),
        }
    }
}
