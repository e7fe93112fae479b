//! sendsize (spec §6.6): size estimates per (DLE, level), as the real client computes them.
//!
//! The reply is `OPTIONS features=...;` (server feature 39) and one `<qdisk> <level> SIZE
//! <KiB>` line per requested level (`-1`: use a server estimate, `-2`: cannot estimate), or
//! `<qdisk> <level> ERROR <quoted message>` lines. Every line is published at once through
//! the job's partial-output callback (the loop sends PREPs when the server asked for them).
//!
//! An estimate is what tar itself would report for `--file /dev/null`: `Total bytes
//! written`, rounded up to KiB. Levels >= 1 run tar against a copy of the previous level's
//! listed-incremental state (client-src/sendsize.c getsize_gnutar; amgtar.c
//! amgtar_estimate). A level 0 is computed without tar when the tree and options are ones
//! [`crate::tar::estimate`] models exactly (proven equal to tar in its tests); anything
//! else runs tar. DLEs are estimated in parallel up to the request's `maxdumps`, never two
//! of the same spindle at once (like the real client).
//!
//! Deviations: a `CALCSIZE` estimate is computed like `CLIENT` (we do not advertise the
//! calcsize features; tar's number is the exact one). Like the real client, DLEs are
//! started last first (it prepends each to its list).
//!
//! What this module must not do: block the event loop (the work is a [`crate::services::Job`]),
//! or report a number tar would not.

use std::collections::BTreeMap;
use std::process::ExitStatus;

use proto::dle::{Dle, Estimate};
use proto::features::{Feature, Features};
use proto::sendsize::{EstimateLine, EstimateResult};

use crate::services::messages::{Classifier, LineSplitter, Table, size_kib_from_line};
use crate::services::request::{head, unsupported_request};
use crate::services::util::lossy;
use crate::services::{Partial, ServiceContext, Start};
use crate::tar::amandates;
use crate::tar::estimate::{self, WalkOptions};
use crate::tar::exinclude::{self, ListPlace};
use crate::tar::gnutar::{self, Form, Launch, Mode, PropProblem, TarSetup};
use crate::tar::listed::Snapshot;
use crate::tar::regex::Regex;

/// One DLE to estimate, with the levels asked for (and whether the server may estimate
/// each itself).
#[derive(Debug, Clone)]
struct DiskEstimate {
    dle: Dle,
    levels: BTreeMap<i32, bool>,
}

/// Parses a sendsize request; request errors are answered at once, estimates run as a job.
pub fn start(ctx: &ServiceContext, args: &[u8]) -> Start {
    let h = match head(ctx, args) {
        Some(h) => h,
        None => return Start::Reply(b"ERROR [Missing OPTIONS line in sendsize input]\n".to_vec()),
    };
    let ours = crate::services::features::advertised();
    let mut out = h.diagnostics.clone();
    out.extend_from_slice(&proto::options::sendsize_reply_options(
        &ours,
        &h.server,
        h.options.effective_maxdumps(),
        &h.hostname,
    ));
    if h.input.extra_options_lines > 0 {
        out.extend_from_slice(b"ERROR [Multiple OPTIONS line in sendsize input]\n");
        return Start::Reply(out);
    }
    let dles: Vec<Dle> = if let Some(xml) = &h.input.xml {
        match proto::dle::xml::parse_dles(xml) {
            Ok(d) => d,
            Err(e) => {
                out.extend_from_slice(
                    format!(
                        "ERROR FORMAT ERROR IN REQUEST PACKET '{}'\n",
                        e.amanda_message()
                    )
                    .as_bytes(),
                );
                return Start::Reply(out);
            }
        }
    } else {
        let mut v = Vec::new();
        for line in &h.input.legacy_lines {
            match proto::dle::legacy::LegacyLine::parse_sendsize(line, &h.server) {
                Ok(l) => v.push(l.dle),
                Err(e) => {
                    out.extend_from_slice(&e.error_line());
                    return Start::Reply(out);
                }
            }
        }
        v
    };
    // dle_add_diskest: levels clamped, requests for the same disk merged.
    let mut list: Vec<DiskEstimate> = Vec::new();
    for dle in dles {
        if dle.levels.is_empty() {
            out.extend_from_slice(b"ERROR Missing level in request\n");
            continue;
        }
        let levels = dle
            .levels
            .iter()
            .map(|l| (l.level.clamp(0, amandates::DUMP_LEVELS - 1), l.server));
        match list.iter_mut().find(|e| e.dle.disk == dle.disk) {
            Some(e) => e.levels.extend(levels),
            None => {
                let levels = levels.collect();
                list.push(DiskEstimate { dle, levels });
            }
        }
    }
    let job = Job {
        ctx: ctx.clone(),
        server: h.server,
        hostname: h.hostname,
        maxdumps: h
            .options
            .effective_maxdumps()
            .clamp(1, proto::options::MAX_MAXDUMPS) as usize,
        list,
    };
    Start::Job(Box::new(move |partial: Partial<'_>| job.run(out, partial)))
}

struct Job {
    ctx: ServiceContext,
    server: Features,
    hostname: Vec<u8>,
    maxdumps: usize,
    list: Vec<DiskEstimate>,
}

enum Event {
    Line(Vec<u8>),
    Done(usize),
}

impl Job {
    fn run(self, mut body: Vec<u8>, partial: Partial<'_>) -> Vec<u8> {
        partial(&body);
        let (tx, rx) = crossbeam_channel::unbounded::<Event>();
        let job = &self;
        std::thread::scope(|scope| {
            let mut running: Vec<(usize, i32)> = Vec::new();
            let mut next = vec![true; job.list.len()];
            loop {
                // Start what the limits allow: maxdumps at once, one per spindle.
                while running.len() < job.maxdumps {
                    let pick = (0..job.list.len()).rev().find(|&i| {
                        let sp = job.list[i].dle.spindle;
                        next[i] && (sp == -1 || !running.iter().any(|&(_, s)| s == sp))
                    });
                    let Some(i) = pick else { break };
                    next[i] = false;
                    running.push((i, job.list[i].dle.spindle));
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let mut emit = |line: Vec<u8>| {
                            let _ = tx.send(Event::Line(line));
                        };
                        job.estimate(&job.list[i], &mut emit);
                        let _ = tx.send(Event::Done(i));
                    });
                }
                if running.is_empty() {
                    break;
                }
                match rx.recv() {
                    Ok(Event::Line(line)) => {
                        body.extend_from_slice(&line);
                        partial(&body);
                    }
                    Ok(Event::Done(i)) => running.retain(|&(j, _)| j != i),
                    Err(_) => break,
                }
            }
        });
        body
    }

    fn line(&self, disk: &[u8], level: i32, result: EstimateResult) -> Vec<u8> {
        EstimateLine {
            disk: disk.into(),
            level,
            result,
        }
        .encode()
    }

    fn quoted_errors(&self) -> bool {
        self.server.has(Feature::REP_SENDSIZE_QUOTED_ERROR)
    }

    /// One DLE (calc_estimates / application_api_calc_estimate).
    fn estimate(&self, est: &DiskEstimate, emit: &mut dyn FnMut(Vec<u8>)) {
        let dle = &est.dle;
        let disk = dle.disk.as_ref().map(|d| d.to_vec()).unwrap_or_default();
        let err = |msg: String| EstimateResult::Error(msg.into_bytes().into());
        if let Some(why) = unsupported_request(dle) {
            for &level in est.levels.keys() {
                emit(self.line(&disk, level, err(why.clone())));
            }
            return;
        }
        let setup = match TarSetup::new(&self.ctx, dle, &self.hostname) {
            Ok(s) => s,
            Err(e) => {
                if self.quoted_errors() {
                    for &level in est.levels.keys() {
                        emit(self.line(&disk, level, err(e.to_string())));
                    }
                }
                return;
            }
        };
        // The estimate method: SERVER answers -1 where allowed; CLIENT and CALCSIZE run tar.
        let estimates: Vec<Estimate> = if dle.estimates.is_empty() {
            vec![Estimate::Client]
        } else {
            dle.estimates.clone()
        };
        let server_first = estimates.iter().position(|e| *e == Estimate::Server);
        let client_first = estimates.iter().position(|e| *e != Estimate::Server);
        let server_method = match (server_first, client_first) {
            (Some(s), Some(c)) => s < c,
            (Some(_), None) => true,
            _ => false,
        };
        let mut todo = Vec::new();
        for (&level, &server) in &est.levels {
            if server_method && (server || client_first.is_none()) {
                emit(self.line(&disk, level, EstimateResult::USE_SERVER_ESTIMATE));
            } else if client_first.is_some() {
                todo.push(level);
            }
        }
        if client_first.is_none() && !server_method {
            emit(self.line(&disk, 0, EstimateResult::CANNOT_ESTIMATE));
            return;
        }
        if todo.is_empty() {
            return;
        }
        match setup.form {
            Form::Gnutar => self.gnutar(&setup, &todo, emit),
            Form::Amgtar => self.amgtar(&setup, &todo, emit),
        }
    }

    /// The legacy program: one tar run per level (getsize_gnutar).
    fn gnutar(&self, setup: &TarSetup, levels: &[i32], emit: &mut dyn FnMut(Vec<u8>)) {
        let qdisk = &setup.disk;
        for &level in levels {
            if level > 9 {
                emit(self.line(qdisk, level, EstimateResult::CANNOT_ESTIMATE));
                continue;
            }
            let mut extra = Vec::new();
            let (size, errmsg) = self.size_of(setup, level, "sendsize", &mut extra);
            for e in extra {
                emit(self.line(qdisk, 0, EstimateResult::Error(e.into_bytes().into())));
            }
            emit(self.line(qdisk, level, EstimateResult::Size(size)));
            if let Some(m) = errmsg
                && self.quoted_errors()
            {
                emit(self.line(qdisk, level, EstimateResult::Error(m.into_bytes().into())));
            }
        }
    }

    /// amgtar's estimate: all levels in one application run; its `ERROR` lines are
    /// reported at the first level, as sendsize does.
    fn amgtar(&self, setup: &TarSetup, levels: &[i32], emit: &mut dyn FnMut(Vec<u8>)) {
        let qdisk = &setup.disk;
        let first = levels.first().copied().unwrap_or(0);
        let app_err = |t: &str| format!("Application 'amgtar': {t}");
        let mut fatal = None;
        for p in &setup.props.problems {
            match p {
                PropProblem::BadValue { text, .. } => {
                    emit(self.line(qdisk, first, EstimateResult::Error(text.as_bytes().into())))
                }
                PropProblem::Getopt(text) => {
                    for &l in levels {
                        emit(self.line(
                            qdisk,
                            l,
                            EstimateResult::Error(app_err(text).into_bytes().into()),
                        ));
                    }
                }
                PropProblem::CommandOption(text) => {
                    fatal.get_or_insert_with(|| app_err(&format!("ERROR {text}")));
                }
                PropProblem::NotAllowed(text) => {
                    fatal.get_or_insert_with(|| text.clone());
                }
            }
        }
        if fatal.is_none() && setup.list_base.is_none() {
            fatal = Some("GNUTAR-LISTDIR not defined".into());
        }
        if let Some(f) = fatal {
            emit(self.line(qdisk, first, EstimateResult::Error(f.into_bytes().into())));
            return;
        }
        for &level in levels {
            let mut extra = Vec::new();
            let (size, errmsg) = self.size_of(setup, level, "amgtar", &mut extra);
            for e in extra {
                emit(self.line(qdisk, first, EstimateResult::Error(e.into_bytes().into())));
            }
            if let Some(m) = errmsg {
                emit(self.line(qdisk, first, EstimateResult::Error(m.into_bytes().into())));
            }
            // amgtar prints "<level> <KiB> 1"; sendsize turns sizes <= 0 into -1.
            emit(self.line(
                qdisk,
                level,
                EstimateResult::Size(if size <= 0 { -1 } else { size }),
            ));
        }
    }

    /// The size of one level in KiB (-1 when unknown) and the error text of the run.
    /// `extra` collects the `ERROR` lines tar's side printed.
    fn size_of(
        &self,
        setup: &TarSetup,
        level: i32,
        prog: &str,
        extra: &mut Vec<String>,
    ) -> (i64, Option<String>) {
        let ctx = &self.ctx;
        let place = ListPlace {
            tmp_dir: &ctx.tar.tmp_dir,
            prog,
            disk: &setup.disk,
            dir: &setup.directory,
        };
        let lists = exinclude::build(&setup.exclude, &setup.include, &place);
        if setup.form == Form::Amgtar {
            extra.extend(
                lists
                    .messages
                    .iter()
                    .filter(|m| !m.info)
                    .map(|m| m.text.clone()),
            );
        }
        let (snapshot, newer) = match &setup.list_base {
            Some(base) => match Snapshot::prepare(base, &setup.disk, level) {
                Ok(s) => (Some(s), None),
                Err(e) => {
                    let text = match setup.form {
                        Form::Gnutar => format!("gnutar: {e}"),
                        Form::Amgtar => e.to_string(),
                    };
                    return (-1, Some(text));
                }
            },
            None => {
                let since = amandates::load(&ctx.tar.amandates)
                    .map(|a| a.dump_since(&setup.disk, level))
                    .unwrap_or(0);
                (None, Some(proto::civil::tar_newer_date(since)))
            }
        };
        if level == 0
            && snapshot.is_some()
            && let Some(opts) = native_options(setup, &lists)
            && let Ok(bytes) = estimate::level0_bytes(&setup.directory, opts)
        {
            return (
                i64::try_from(estimate::kib(bytes)).unwrap_or(i64::MAX),
                None,
            );
        }
        let args = setup.args(
            Mode::Estimate,
            snapshot.as_ref().map(Snapshot::path),
            newer.as_deref(),
            &lists,
            false,
        );
        let launch = gnutar::launch(ctx);
        let shown = match (&launch, setup.form) {
            (Launch::Helper(h), Form::Gnutar) => h.display().to_string(),
            _ => setup.tar.display().to_string(),
        };
        let mut cmd = gnutar::command(&launch, &setup.tar, &args);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return (
                    -1,
                    Some(format!(
                        "can't execute {shown}: {}",
                        crate::services::util::strerror(&e)
                    )),
                );
            }
        };
        let size_rule = match setup.form {
            Form::Gnutar => Regex::new("Total bytes written: [0-9][0-9]*")
                .ok()
                .map(SizeRule::Plain),
            Form::Amgtar => Classifier::new(Table::Amgtar, &setup.props.rules)
                .ok()
                .map(SizeRule::Table),
        };
        let mut size: Option<u64> = None;
        if let Some(stderr) = child.stderr.take() {
            let mut lines = LineSplitter::default();
            let mut handle = |line: &[u8]| {
                if line.is_empty() || size.is_some() {
                    return;
                }
                if let Some(e) = error_line_text(line) {
                    extra.push(e);
                } else if size_rule.as_ref().is_some_and(|r| r.is_size(line)) {
                    size = size_kib_from_line(line);
                }
            };
            let mut f = std::fs::File::from(std::os::fd::OwnedFd::from(stderr));
            let mut buf = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => lines.push(&buf[..n], &mut handle),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            lines.finish(&mut handle);
        }
        let status = child.wait();
        drop(snapshot);
        let mut errmsg = String::new();
        if size.is_none() {
            errmsg.push_str(&format!("no size line match in {shown} output"));
        }
        match status {
            Ok(s) => errmsg.push_str(&exit_text(&shown, s, |c| match setup.form {
                Form::Gnutar => c == 0,
                Form::Amgtar => setup.exit_is_good(c),
            })),
            Err(e) => errmsg.push_str(&format!("{shown} got bad exit: {e}")),
        }
        let size = size.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
        (size, (!errmsg.is_empty()).then_some(errmsg))
    }
}

enum SizeRule {
    Plain(Regex),
    Table(Classifier),
}

impl SizeRule {
    fn is_size(&self, line: &[u8]) -> bool {
        match self {
            SizeRule::Plain(r) => r.is_match(line),
            SizeRule::Table(c) => c.classify(line) == crate::services::messages::LineKind::Size,
        }
    }
}

/// `ERROR [x]`, `ERROR x`, `runtar: error [x]` and our helper's refusal lines, whose text
/// sendsize reports as a DLE error.
fn error_line_text(line: &[u8]) -> Option<String> {
    let strip = |rest: &[u8]| {
        let inner = rest
            .strip_prefix(b"[")
            .map_or(rest, |r| r.strip_suffix(b"]").unwrap_or(r));
        lossy(inner)
    };
    if let Some(r) = line.strip_prefix(b"ERROR ") {
        return Some(strip(r));
    }
    if let Some(r) = line.strip_prefix(b"runtar: error ") {
        return Some(strip(r));
    }
    if let Some(r) = line.strip_prefix(b"amandad-runtar: error ") {
        return Some(format!("amandad-runtar: {}", strip(r)));
    }
    None
}

/// The real client's texts for a bad exit (empty for a good one).
fn exit_text(shown: &str, status: ExitStatus, good: impl Fn(i32) -> bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("{shown} terminated with signal {sig}: see the amandad log"),
        (Some(c), _) if good(c) => String::new(),
        (Some(c), _) => format!("{shown} exited with status {c}: see the amandad log"),
        _ => format!("{shown} got bad exit: see the amandad log"),
    }
}

/// The walk options when the native level-0 estimate applies to this setup, `None` when tar
/// must run (see `estimate`'s list of what is not modelled).
fn native_options(setup: &TarSetup, lists: &exinclude::ExInclude) -> Option<WalkOptions> {
    if lists.exclude.is_some() || lists.include.is_some() || setup.has_lists() {
        return None;
    }
    let version = gnutar::version_line(&setup.tar)?;
    if !estimate::NATIVE_TAR_VERSIONS.contains(&gnutar::version_number(&version))
        || !version.contains("GNU tar")
    {
        return None;
    }
    match setup.form {
        Form::Gnutar => Some(WalkOptions {
            sparse: true,
            one_file_system: true,
            blocking_factor: 20,
        }),
        Form::Amgtar => {
            let p = &setup.props;
            if p.acls || p.selinux || p.xattrs || !p.command_options.is_empty() {
                return None;
            }
            Some(WalkOptions {
                sparse: p.sparse,
                one_file_system: p.one_file_system,
                blocking_factor: setup.blocking_factor()?,
            })
        }
    }
}

#[cfg(test)]
mod tests;
