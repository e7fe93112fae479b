//! sendbackup: the plan (REP and streams) and the running dump.
//!
//! Interface with the event loop (the loop owns all I/O):
//! 1. [`start`] parses the request; on success the loop gets a [`BackupPlan`]: it opens the
//!    streams the plan names (DATA, MESG, and INDEX when `plan.index`), rewrites the CONNECT
//!    labels in `plan.rep` to stream ids, and sends the REP.
//! 2. When the server ACKs, the loop calls [`BackupRun::spawn`] with `plan.spec`, writes
//!    [`BackupRun::mesg_header`] to MESG (nothing goes to DATA before it), then relays:
//!    - bytes from `Spawned::data` to DATA, through the client filters, keeping the CRCs
//!      (`proto::dataphase::Sender`) when [`BackupRun::crc_wanted`];
//!    - bytes from `Spawned::messages` to [`BackupRun::on_messages`], which appends MESG and
//!      INDEX bytes to a [`StreamOutput`] the loop then writes out;
//! 3. after EOF on both pipes the loop reaps the child and calls [`BackupRun::finish`] with
//!    the CRCs, writes
//!    the final MESG/INDEX bytes, and closes every stream.
//!
//! If [`BackupRun::spawn`] fails, [`BackupRun::spawn_failure_mesg`] is the whole MESG stream
//! to send (header, `sendbackup: error [...]`, end) before closing the streams.
//! Dropping a [`BackupRun`] (an aborted dump) removes its temporary files and the
//! `.new` state file without touching the incremental chain.
//!
//! What the MESG stream carries (spec §6.7.5), per form:
//! * GNUTAR: `sendbackup: start [host:disk level N]`, `info BACKUP=<tar>`,
//!   `info RECOVER_CMD=<tar> -xpGf - ...`, `info end`; tar's messages as `| `/`? ` lines;
//!   then `native-CRC`/`client-CRC` (server feature 102), `size <KiB>`, `end`; on failure
//!   `sendbackup: error [dump (<pid>) <tar> returned <n>]` and nothing after it.
//! * amgtar: `info BACKUP=APPLICATION`, `info APPLICATION=amgtar`,
//!   `info RECOVER_CMD=<application dir>/amgtar restore [./file-to-restore]+`, `info end`;
//!   amgtar's own messages, tar's messages, `sendbackup: error [...]` when tar fails,
//!   `size <KiB>`, the CRC lines, `end`.
//!
//! The DATA pipe is made 1 MiB large (`F_SETPIPE_SZ`) so tar rarely waits for the loop.
//!
//! What this module must not do: touch the network, block (spawn only forks tar; reading
//! and waiting are the loop's), or send a `STATE` stream (we do not advertise feature 117).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};

use proto::crc::CrcValue;
use proto::dataphase::{FilterChain, Stage};
use proto::dle::{Compress, Dle};
use proto::features::{Feature, Features};
use proto::mesg::MesgLine;
use proto::quote::quote_string;

use crate::services::context::APPLICATION_DIR;
use crate::services::messages::{BackupMessages, Classifier, Table};
use crate::services::request::{auth_mismatch, filter_refusal, head, unsupported_request};
use crate::services::util::lossy;
use crate::services::{ServiceContext, Start};
use crate::tar::amandates;
use crate::tar::exinclude::{self, ExInclude, ListPlace};
use crate::tar::gnutar::{self, Form, Launch, Mode, PropProblem, TarSetup};
use crate::tar::listed::Snapshot;

pub use crate::services::messages::StreamOutput;

/// What [`start`] hands the loop for a valid request.
#[derive(Debug)]
pub struct BackupPlan {
    /// The REP body, with the service's stream labels (150 DATA, 151 MESG, 152 INDEX or -1).
    pub rep: Vec<u8>,
    /// Whether the dump has an INDEX stream.
    pub index: bool,
    /// What [`BackupRun::spawn`] needs.
    pub spec: BackupSpec,
}

/// The resolved request: everything needed to start the dump after the ACK.
#[derive(Debug)]
pub struct BackupSpec {
    ctx: ServiceContext,
    form: Form,
    disk: Vec<u8>,
    dle: Dle,
    level: i32,
    hostname: Vec<u8>,
    server: Features,
    chain: FilterChain,
}

impl BackupSpec {
    /// The client filters, in the order they run (compression, then encryption).
    pub fn client_stages(&self) -> &[Stage] {
        &self.chain.client
    }

    /// The DLE name (for logs).
    pub fn disk(&self) -> &[u8] {
        &self.disk
    }

    /// The level (for logs).
    pub fn level(&self) -> i32 {
        self.level
    }
}

/// A started dump: the run and what the loop reads and reaps.
#[derive(Debug)]
pub struct Spawned {
    /// The state machine for the MESG/INDEX bytes and the CRC.
    pub run: BackupRun,
    /// tar (or the helper that became tar).
    pub child: Child,
    /// The archive (tar's stdout), for DATA. Close-on-exec, blocking (the loop sets
    /// `O_NONBLOCK`).
    pub data: OwnedFd,
    /// tar's stderr, for [`BackupRun::on_messages`].
    pub messages: OwnedFd,
}

/// The dump could not start; [`BackupRun::spawn_failure_mesg`] says what to tell the server.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct SpawnError {
    reason: String,
    mesg: Vec<u8>,
}

/// A running dump.
#[derive(Debug)]
pub struct BackupRun {
    form: Form,
    header: Vec<u8>,
    messages: BackupMessages,
    crc_wanted: bool,
    pid: u32,
    tar: PathBuf,
    snapshot: Option<Snapshot>,
    // Kept until the end: tar reads them while it runs.
    _lists: ExInclude,
    record: bool,
    disk: Vec<u8>,
    level: i32,
    dump_time: i64,
    amandates: PathBuf,
    use_amandates_for_gnutar: bool,
    exit_good: Vec<bool>,
}

/// Size of the DATA pipe we ask the kernel for.
pub const DATA_PIPE_SIZE: i32 = 1 << 20;

fn error_line(text: &str) -> Vec<u8> {
    format!("ERROR {text}\n").into_bytes()
}

/// Parses a sendbackup request (the REQ body after the SERVICE line). Never panics; request
/// errors become the real sendbackup's texts in a [`Start::Reply`].
pub fn start(ctx: &ServiceContext, args: &[u8]) -> Start {
    match plan(ctx, args) {
        Ok(plan) => Start::Backup(Box::new(plan)),
        Err(reply) => Start::Reply(reply),
    }
}

fn format_error(detail: &str) -> Vec<u8> {
    error_line(&format!("FORMAT ERROR IN REQUEST PACKET '{detail}'"))
}

fn plan(ctx: &ServiceContext, args: &[u8]) -> Result<BackupPlan, Vec<u8>> {
    let h =
        head(ctx, args).ok_or_else(|| error_line("[Missing OPTIONS line in sendbackup input]"))?;
    let mut out = h.diagnostics.clone();
    let fail = |out: &mut Vec<u8>, line: Vec<u8>| {
        out.extend_from_slice(&line);
        std::mem::take(out)
    };
    let (dle, level) = if let Some(xml) = &h.input.xml {
        let dle = proto::dle::xml::parse_single_dle(xml)
            .map_err(|e| fail(&mut out, format_error(&e.amanda_message())))?;
        (dle, None)
    } else {
        let mut lines = h.input.legacy_lines.iter();
        let Some(first) = lines.next() else {
            return Err(fail(
                &mut out,
                error_line("[Missing DLE line in sendbackup input]"),
            ));
        };
        let parsed = proto::dle::legacy::LegacyLine::parse_sendbackup(first, &h.server)
            .map_err(|e| fail(&mut out, e.error_line()))?;
        if lines.next().is_some() {
            return Err(fail(&mut out, format_error("multiple requests")));
        }
        let level = parsed.dle.levels.first().map(|l| l.level);
        (parsed.dle, level)
    };
    if dle.disk.is_none() || dle.program.is_empty() {
        return Err(fail(&mut out, format_error("no valid sendbackup request")));
    }
    let level = match (dle.levels.as_slice(), level) {
        ([], _) => return Err(fail(&mut out, format_error("no valid sendbackup request"))),
        ([l], _) => l.level,
        (_, Some(l)) => l,
        _ => return Err(fail(&mut out, format_error("Too many level"))),
    };
    if let Some((ours, theirs)) = auth_mismatch(ctx, &dle) {
        return Err(fail(
            &mut out,
            error_line(&format!(
                "[client configured for auth={ours} while server requested '{}']",
                lossy(theirs)
            )),
        ));
    }
    if let Some(why) = unsupported_request(&dle) {
        return Err(fail(&mut out, error_line(&format!("[{why}]"))));
    }
    let chain = FilterChain::of(&dle.compress, &dle.encrypt)
        .map_err(|e| fail(&mut out, error_line(&format!("[{e}]"))))?;
    if let Some(why) = filter_refusal(ctx, &chain) {
        return Err(fail(&mut out, error_line(&format!("[{why}]"))));
    }
    if !(0..amandates::DUMP_LEVELS).contains(&level) {
        return Err(fail(&mut out, format_error("bad level")));
    }
    // Only what needs no file system here (this runs on the event loop); the rest of the
    // DLE is resolved when the dump starts.
    let form = gnutar::form_of(&dle).map_err(|e| fail(&mut out, error_line(&format!("[{e}]"))))?;
    let index = dle.index;
    // No STATE pair, even when the server has feature 117: we do not advertise it.
    out.extend_from_slice(&proto::sendbackup::connect_line(index, false));
    let ours = crate::services::features::advertised();
    out.extend_from_slice(&proto::options::sendbackup_reply_options(
        &ours,
        &h.server,
        &h.hostname,
    ));
    if !h.diagnostics.is_empty() {
        // The REP starts with `ERROR [...]` (the real client prints its OPTIONS complaints
        // first): the dumper fails the dump on it, so no stream is opened.
        return Err(out);
    }
    Ok(BackupPlan {
        rep: out,
        index,
        spec: BackupSpec {
            ctx: ctx.clone(),
            form,
            disk: dle.disk.as_ref().map(|d| d.to_vec()).unwrap_or_default(),
            dle,
            level,
            hostname: h.hostname,
            server: h.server,
            chain,
        },
    })
}

fn mesg(line: &MesgLine) -> Vec<u8> {
    line.encode()
}

fn info(key: &str, value: &[u8]) -> Vec<u8> {
    mesg(&MesgLine::Info {
        key: key.into(),
        value: value.into(),
    })
}

/// What the restore pipes the archive through before the restore program, in front of
/// RECOVER_CMD (no space after the pipe, like sendbackup.c): only for client gzip.
const GUNZIP_PREFIX: &str = "/bin/gzip -dc |";

/// The MESG lines before `info end` (spec §11.3): RECOVER_CMD with the gunzip step for
/// client fast/best; COMPRESS_SUFFIX=.gz for client fast/best (the legacy program), for
/// every compress mode but none (amgtar, as 3.5.1's application API does). The dumper
/// takes the programs and decrypt options from its own DLE, so, like 3.5.1, no
/// CLIENT_CUSTOM_COMPRESS / CLIENT_ENCRYPT / CLIENT_DECRYPT_OPTION lines.
fn header_lines(spec: &BackupSpec) -> Vec<u8> {
    let mut h = Vec::new();
    let gzip = matches!(spec.dle.compress, Compress::Fast | Compress::Best);
    let gunzip = if gzip { GUNZIP_PREFIX } else { "" };
    match spec.form {
        Form::Gnutar => {
            h.extend(mesg(&MesgLine::start(
                &spec.hostname,
                &quote_string(&spec.disk),
                spec.level,
            )));
            // The legacy program always runs the configured tar.
            let tar = spec.ctx.tar.gnutar_path.as_os_str().as_encoded_bytes();
            h.extend(info("BACKUP", tar));
            let mut recover = gunzip.as_bytes().to_vec();
            recover.extend_from_slice(tar);
            recover.extend_from_slice(b" -xpGf - ...");
            h.extend(info("RECOVER_CMD", &recover));
            if gzip {
                h.extend(info("COMPRESS_SUFFIX", b".gz"));
            }
        }
        Form::Amgtar => {
            h.extend(info("BACKUP", b"APPLICATION"));
            h.extend(info("APPLICATION", b"amgtar"));
            h.extend(info(
                "RECOVER_CMD",
                format!("{gunzip}{APPLICATION_DIR}/amgtar restore [./file-to-restore]+").as_bytes(),
            ));
            if let Some(suffix) = FilterChain::client_compress_suffix(&spec.dle.compress) {
                h.extend(info("COMPRESS_SUFFIX", suffix.as_bytes()));
            }
        }
    }
    h.extend(mesg(&MesgLine::InfoEnd));
    h
}

fn error_mesg(text: &str) -> Vec<u8> {
    mesg(&MesgLine::error(text.as_bytes()))
}

/// The CRC lines: native-CRC of the application's output, client-CRC of DATA (the same
/// bytes without client filters).
fn crc_lines((native, client): (CrcValue, CrcValue)) -> Vec<u8> {
    let mut out = mesg(&MesgLine::NativeCrc(Some(native)));
    out.extend(mesg(&MesgLine::ClientCrc(Some(client))));
    out
}

/// The CRCs of nothing.
fn empty_crcs() -> (CrcValue, CrcValue) {
    let v = proto::crc::Crc32c::new().value();
    (v, v)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A pipe for tar's stdout, made large.
fn data_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // Best effort: a smaller pipe only costs context switches.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(DATA_PIPE_SIZE));
    Ok((r, w))
}

impl BackupRun {
    /// Prepares the state files and lists and starts tar (through the helper when it is
    /// installed). Does not block beyond the fork and the state-file copy.
    pub fn spawn(spec: BackupSpec) -> Result<Spawned, SpawnError> {
        let ctx = &spec.ctx;
        let header = header_lines(&spec);
        let crc_wanted = spec.server.has(Feature::SENDBACKUP_CRC);
        let form = spec.form;
        // What goes to MESG right after the header (amgtar's own complaints).
        let mut early = Vec::new();
        let failure = |early: &[u8], reason: String| {
            let mut m = header.clone();
            m.extend_from_slice(early);
            m.extend(error_mesg(&reason));
            if form == Form::Amgtar {
                if crc_wanted {
                    m.extend(crc_lines(empty_crcs()));
                }
                m.extend(mesg(&MesgLine::End));
            }
            SpawnError { reason, mesg: m }
        };
        let setup = TarSetup::new(ctx, &spec.dle, &spec.hostname)
            .map_err(|e| failure(&early, e.to_string()))?;
        let setup = &setup;
        let mut abort = None;
        for p in &setup.props.problems {
            match p {
                PropProblem::BadValue { text, .. } => early.extend(error_mesg(text)),
                PropProblem::Getopt(text) => early.extend(error_mesg(text)),
                PropProblem::CommandOption(text) => {
                    early.extend(format!("? {text}\n").into_bytes());
                    abort.get_or_insert_with(|| text.clone());
                }
                PropProblem::NotAllowed(text) => {
                    abort.get_or_insert_with(|| text.clone());
                }
            }
        }
        if let Some(reason) = abort {
            return Err(failure(&early, reason));
        }
        if form == Form::Amgtar && setup.list_base.is_none() {
            return Err(failure(&early, "GNUTAR-LISTDIR not defined".into()));
        }
        let dump_time = now();
        // State file, or the amandates date for the legacy form without a list directory.
        let (snapshot, newer) = match &setup.list_base {
            Some(base) => {
                let s = Snapshot::prepare(base, &setup.disk, spec.level).map_err(|e| {
                    let text = match form {
                        Form::Amgtar => e.to_string(),
                        Form::Gnutar => format!("error [{e}]"),
                    };
                    failure(&early, text)
                })?;
                (Some(s), None)
            }
            None => {
                let a = amandates::load(&ctx.tar.amandates).map_err(|e| {
                    failure(
                        &early,
                        format!(
                            "error [opening {}: {}]",
                            ctx.tar.amandates.display(),
                            crate::services::util::strerror(&e)
                        ),
                    )
                })?;
                (
                    None,
                    Some(proto::civil::tar_newer_date(
                        a.dump_since(&setup.disk, spec.level),
                    )),
                )
            }
        };
        let place = ListPlace {
            tmp_dir: &ctx.tar.tmp_dir,
            prog: match form {
                Form::Amgtar => "amgtar",
                Form::Gnutar => "sendbackup",
            },
            disk: &setup.disk,
            dir: &setup.directory,
        };
        let lists = exinclude::build(&setup.exclude, &setup.include, &place);
        if form == Form::Amgtar {
            // amgtar prints its list messages; the legacy program drops them.
            for m in &lists.messages {
                early.extend(
                    format!("{} {}\n", if m.info { '|' } else { '?' }, m.text).into_bytes(),
                );
            }
        }
        let index = spec.dle.index;
        let args = setup.args(
            Mode::Backup,
            snapshot.as_ref().map(Snapshot::path),
            newer.as_deref(),
            &lists,
            index,
        );
        let classifier = match form {
            Form::Gnutar => Ok(Classifier::gnutar()),
            Form::Amgtar => Classifier::new(Table::Amgtar, &setup.props.rules),
        }
        .map_err(|e| failure(&early, e.to_string()))?;
        let launch = gnutar::launch(ctx);
        let (data_r, data_w) =
            data_pipe().map_err(|e| failure(&early, format!("can't create pipe: {e}")))?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| failure(&early, format!("can't create pipe: {e}")))?;
        let mut cmd = gnutar::command(&launch, &setup.tar, &args);
        cmd.stdout(std::process::Stdio::from(data_w))
            .stderr(std::process::Stdio::from(err_w));
        let child = cmd.spawn().map_err(|e| {
            let what = match &launch {
                Launch::Helper(h) => h.display().to_string(),
                Launch::Direct => setup.tar.display().to_string(),
            };
            failure(
                &early,
                format!(
                    "can't execute {what}: {}",
                    crate::services::util::strerror(&e)
                ),
            )
        })?;
        // The write ends went to the child with `cmd`; dropping `cmd` closes ours.
        drop(cmd);
        let mut header = header;
        header.extend_from_slice(&early);
        let run = BackupRun {
            form,
            header,
            messages: BackupMessages::new(classifier, index),
            crc_wanted,
            pid: child.id(),
            tar: setup.tar.clone(),
            snapshot,
            _lists: lists,
            record: spec.dle.record,
            disk: setup.disk.clone(),
            level: spec.level,
            dump_time,
            amandates: ctx.tar.amandates.clone(),
            use_amandates_for_gnutar: setup.list_base.is_none(),
            exit_good: setup.props.exit_good.clone(),
        };
        Ok(Spawned {
            run,
            child,
            data: data_r,
            messages: err_r,
        })
    }

    /// The MESG bytes for a dump that could not start.
    pub fn spawn_failure_mesg(e: &SpawnError) -> Vec<u8> {
        e.mesg.clone()
    }

    /// Everything MESG carries before DATA may flow, ending with `sendbackup: info end`.
    pub fn mesg_header(&self) -> &[u8] {
        &self.header
    }

    /// Whether the server wants CRC lines (feature 102); if not, the CRCs need not be
    /// taken.
    pub fn crc_wanted(&self) -> bool {
        self.crc_wanted
    }

    /// Bytes tar wrote to stderr; appends the resulting MESG and INDEX bytes to `out`.
    pub fn on_messages(&mut self, chunk: &[u8], out: &mut StreamOutput) {
        self.messages.push(chunk, out);
    }

    /// tar exited with `status` and both pipes are at EOF: the closing MESG lines (with
    /// `crcs`, native and client, when [`BackupRun::crc_wanted`]), and the state files
    /// updated as the real client does. `filter_error` is a client filter's failure (it
    /// fails the dump, and its line comes first: tar was stopped because of it). Call once.
    pub fn finish(
        &mut self,
        status: ExitStatus,
        crcs: (CrcValue, CrcValue),
        filter_error: Option<&str>,
        out: &mut StreamOutput,
    ) {
        use std::os::unix::process::ExitStatusExt;
        self.messages.finish(out);
        if let Some(e) = filter_error {
            out.mesg.extend(error_mesg(e));
            self.snapshot.take();
            if self.form == Form::Amgtar {
                let size = self
                    .messages
                    .size_kib()
                    .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
                out.mesg.extend(mesg(&MesgLine::Size(size)));
                if self.crc_wanted {
                    out.mesg.extend(crc_lines(crcs));
                }
                out.mesg.extend(mesg(&MesgLine::End));
            }
            return;
        }
        let tar = self.tar.display().to_string();
        let failed = match (status.code(), status.signal()) {
            (Some(c), _) => !self
                .exit_good
                .get(usize::try_from(c).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or(false),
            (None, _) => true,
        } || self.messages.errors() > 0;
        let size = self.messages.size_kib();
        match self.form {
            Form::Gnutar => {
                if failed {
                    // check_status, then error(): the dump ends here.
                    let text = match (status.code(), status.signal()) {
                        (_, Some(sig)) => format!("dump ({}) {tar} got signal {sig}", self.pid),
                        (Some(c), _) => format!("dump ({}) {tar} returned {c}", self.pid),
                        _ => format!("dump ({}) {tar} failed", self.pid),
                    };
                    out.mesg.extend(error_mesg(&text));
                    self.snapshot.take();
                    return;
                }
                let Some(size) = size else {
                    out.mesg.extend(error_mesg("no backup size line"));
                    self.snapshot.take();
                    return;
                };
                if self.crc_wanted {
                    out.mesg.extend(crc_lines(crcs));
                }
                if self.record {
                    if let Some(warning) = self.snapshot.take().and_then(|s| s.commit(true)) {
                        out.mesg
                            .extend(format!("sendbackup: {warning}\n").into_bytes());
                    }
                    if let Err(e) =
                        amandates::update(&self.amandates, &self.disk, self.level, self.dump_time)
                        && self.use_amandates_for_gnutar
                    {
                        out.mesg.extend(error_mesg(&format!(
                            "error [opening {} for writing: {}]",
                            self.amandates.display(),
                            crate::services::util::strerror(&e)
                        )));
                        return;
                    }
                } else {
                    self.snapshot.take();
                }
                out.mesg.extend(mesg(&MesgLine::Size(
                    i64::try_from(size).unwrap_or(i64::MAX),
                )));
                out.mesg.extend(mesg(&MesgLine::End));
            }
            Form::Amgtar => {
                if failed && self.messages.errors() == 0 {
                    let text = match (status.code(), status.signal()) {
                        (_, Some(sig)) => {
                            format!("{tar} terminated with signal {sig}: see the amandad log")
                        }
                        (Some(c), _) => {
                            format!("{tar} exited with status {c}: see the amandad log")
                        }
                        _ => format!("{tar} got bad exit: see the amandad log"),
                    };
                    out.mesg.extend(error_mesg(&text));
                }
                match self.snapshot.take() {
                    Some(s) if !failed => {
                        if let Some(w) = s.commit(self.record) {
                            out.mesg.extend(format!("? {w}\n").into_bytes());
                        }
                    }
                    _ => {}
                }
                let size = size.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
                out.mesg.extend(mesg(&MesgLine::Size(size)));
                if !failed {
                    // sendbackup.c records every successful application dump.
                    let _ =
                        amandates::update(&self.amandates, &self.disk, self.level, self.dump_time);
                }
                if self.crc_wanted {
                    out.mesg.extend(crc_lines(crcs));
                }
                out.mesg.extend(mesg(&MesgLine::End));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
