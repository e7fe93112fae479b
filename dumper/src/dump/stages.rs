//! The server's filter stages of one dump (spec §11.1, issue 12): DATA → [gzip | custom
//! compressor] → [encryption program] → holding file, in that order, as the chain of
//! `proto::dataphase::FilterChain::server` says.
//!
//! The session hands DATA over in the holding writer's kind of buffers ([`Pipeline::chunk`],
//! [`Pipeline::submit`]) to one pipeline thread, over a bounded channel: a full channel is
//! backpressure (the session stops reading its socket, TCP holds the client back), and a
//! stage that takes nothing for `dtimeout` fails the dump instead of hanging it. The thread
//! writes through the stages: gzip in-process on the daemon's [`GzipPool`] (what `gzip -dc`
//! reads), external programs started as Amanda starts them (no argument, never a shell, see
//! `filters::program`), each with a thread that copies its stdout into the next stage and
//! one that keeps its stderr lines (bounded). The last stage writes the holding file and
//! takes the server-CRC of exactly the bytes stored.
//!
//! A program that cannot start, exits non-zero or is killed fails the dump with its name and
//! exit status ([`StageFailure`]); the caller then aborts the holding file, so nothing
//! half-written stays. When a stage is an external program, what is stored also goes
//! through the undo chain a restore runs (decrypt with its option, `<prog> -d`, gunzip) at
//! the same time, and the caller compares what comes back with the DATA received
//! ([`Check`]): a program that writes garbage, or that cannot undo its own output, fails
//! the dump instead of leaving a file that will not restore. Our gzip alone is not checked. A program's stderr lines do not fail it: they make the dump STRANGE,
//! as `? data compress: <line>` / `? data encrypt: <line>` in its report, as in Amanda.
//!
//! What this module must not do: know the protocol (the receiver's CRC of DATA is checked
//! by the caller), or leave a program or a thread behind (an aborted pipeline kills its
//! programs' process groups and joins its threads).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, bounded};
use filters::gunzip::Gunzip;
use filters::gzip::{GzipError, GzipPool, GzipWriter, Level};
use filters::program::{FilterCommand, FilterError, RunningFilter};
use filters::stderr::StderrLine;
use proto::crc::{Crc32c, CrcValue};
use proto::dataphase::{GzipLevel, Stage};

use crate::holding::{Chunk, ChunkPool, HoldingError, HoldingWriter};

/// Why the server's filters failed a dump. `Display` is the report's text.
#[derive(Debug, thiserror::Error)]
pub enum StageFailure {
    /// A program could not start, exited non-zero, was killed, or did not read its input.
    #[error("[{stage} {error}{}]", stderr_tail(.stderr))]
    Program {
        /// `data compress`, `data encrypt`.
        stage: &'static str,
        /// What happened (names the program, its pid and exit status).
        error: FilterError,
        /// Its last stderr lines.
        stderr: Vec<String>,
    },
    /// The in-process gzip failed.
    #[error("[data compress (gzip): {0}]")]
    Gzip(String),
    /// A stage took no input for `dtimeout`.
    #[error("[{stage} {program} took no input for {}s (dtimeout)]", .waited.as_secs())]
    Stalled {
        /// The first stage.
        stage: &'static str,
        /// Its program (`gzip` in-process).
        program: String,
        /// How long.
        waited: Duration,
    },
    /// Undoing the stages, as a restore will, failed: what was stored would not restore.
    #[error("[the server filters' output would not restore: {}]", unbracket(.0))]
    Unrestorable(Box<StageFailure>),
    /// Undoing the stages gave back other bytes than the DATA received.
    #[error(
        "[the server filters' output would not restore: `{undo}` gives back {got}, the DATA received was {want}]"
    )]
    Garbage {
        /// The undo pipeline.
        undo: String,
        /// What undoing gave (without NUL padding).
        got: CrcValue,
        /// The DATA.
        want: CrcValue,
    },
    /// The holding file behind the filters.
    #[error("{0}")]
    Holding(HoldingError),
    /// The pipeline thread is gone.
    #[error("[the server filter thread stopped]")]
    Gone,
}

impl StageFailure {
    fn unrestorable(e: StageFailure) -> StageFailure {
        match e {
            e @ (StageFailure::Unrestorable(_) | StageFailure::Holding(_)) => e,
            e => StageFailure::Unrestorable(Box::new(e)),
        }
    }
}

fn unbracket(e: &StageFailure) -> String {
    let t = e.to_string();
    t.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .map(str::to_owned)
        .unwrap_or(t)
}

fn stderr_tail(lines: &[String]) -> String {
    match lines.last() {
        Some(l) => format!("; its stderr: {l}"),
        None => String::new(),
    }
}

/// What the stages stored.
pub struct Stored {
    /// The holding file, every byte handed to its writer.
    pub writer: HoldingWriter,
    /// The server-CRC: CRC-32C and size of the bytes stored after the header.
    pub crc: CrcValue,
    /// The programs' stderr lines, as the report shows them (`? data encrypt: ...`).
    pub messages: Vec<String>,
    /// With an external program among the stages: what undoing them gave back, for the
    /// caller to compare with the DATA received.
    pub check: Option<Check>,
}

/// The report's name of a stage (Amanda's filter names).
fn stage_name(stage: &Stage) -> &'static str {
    if stage.compresses() {
        "data compress"
    } else {
        "data encrypt"
    }
}

/// What a chain of stages ends in: the holding file ([`Stored`]), or the check of what
/// was stored ([`Check`]).
trait Tail: Send + 'static {
    /// A program's stderr lines, as the report shows them.
    fn add_messages(&mut self, lines: Vec<String>);
}

impl Tail for Stored {
    fn add_messages(&mut self, mut lines: Vec<String>) {
        lines.append(&mut self.messages);
        self.messages = lines;
    }
}

/// One stage's input side, as the pipeline thread writes to it.
trait StageSink<T>: Send {
    /// Writes all of `data` to the stage.
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure>;
    /// Ends the input; waits for the stage and those after it.
    fn finish(self: Box<Self>) -> Result<T, StageFailure>;
}

/// The last stage: the holding file.
struct HoldingSink {
    writer: HoldingWriter,
    current: Option<Chunk>,
    crc: Crc32c,
    /// The undo chain the stored bytes also go through (see [`Check`]).
    check: Option<Box<dyn StageSink<Check>>>,
}

impl StageSink<Stored> for HoldingSink {
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure> {
        self.crc.update(data);
        if let Some(c) = &mut self.check {
            c.put(data).map_err(StageFailure::unrestorable)?;
        }
        let mut data = data;
        while !data.is_empty() {
            let mut c = match self.current.take() {
                Some(c) => c,
                None => self.writer.chunk().map_err(StageFailure::Holding)?,
            };
            let n = c.push(data);
            data = &data[n..];
            if c.is_full() {
                self.writer.submit(c).map_err(StageFailure::Holding)?;
            } else {
                self.current = Some(c);
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Stored, StageFailure> {
        if let Some(c) = self.current.take() {
            self.writer.submit(c).map_err(StageFailure::Holding)?;
        }
        let check = match self.check.take() {
            Some(c) => Some(c.finish().map_err(StageFailure::unrestorable)?),
            None => None,
        };
        Ok(Stored {
            crc: self.crc.value(),
            writer: self.writer,
            messages: Vec::new(),
            check,
        })
    }
}

/// What undoing the server stages on the stored bytes gave back: the CRC of everything up
/// to its last non-NUL byte, and the NUL bytes after it (an encryption program may pad
/// with NULs, as amcrypt-ossl does; tar and gzip ignore them on restore).
#[derive(Clone, Debug, Default)]
pub struct Check {
    prefix: Crc32c,
    nuls: u64,
    /// The undo pipeline, for the report (`/usr/bin/zstd -d`).
    undo: String,
}

impl Tail for Check {
    // The undo programs' messages (amcrypt-ossl warns on every run) say nothing new.
    fn add_messages(&mut self, _: Vec<String>) {}
}

impl Check {
    /// Whether the undone bytes are `received` (the DATA), possibly followed by NULs.
    pub fn gives_back(&self, received: CrcValue) -> bool {
        let have = self.prefix.bytes();
        let Ok(want) = u64::try_from(received.size) else {
            return false;
        };
        if want < have || want - have > self.nuls {
            return false;
        }
        let mut c = self.prefix;
        feed_nuls(&mut c, want - have);
        c.value() == received
    }

    /// The undone bytes without their NUL padding.
    pub fn value(&self) -> CrcValue {
        self.prefix.value()
    }

    /// The failure when the undone bytes are not `received`.
    pub fn garbage(&self, received: CrcValue) -> StageFailure {
        StageFailure::Garbage {
            undo: self.undo.clone(),
            got: self.value(),
            want: received,
        }
    }
}

fn feed_nuls(c: &mut Crc32c, mut n: u64) {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        c.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The end of the check chain.
struct CheckSink(Check);

impl StageSink<Check> for CheckSink {
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure> {
        match data.iter().rposition(|&b| b != 0) {
            None => self.0.nuls += data.len() as u64,
            Some(last) => {
                feed_nuls(&mut self.0.prefix, self.0.nuls);
                self.0.prefix.update(&data[..=last]);
                self.0.nuls = (data.len() - last - 1) as u64;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Check, StageFailure> {
        Ok(self.0)
    }
}

/// gunzip, in-process (the check of a gzip stage).
struct GunzipSink<T> {
    decoder: Gunzip,
    out: Vec<u8>,
    next: Box<dyn StageSink<T>>,
}

impl<T: Tail> StageSink<T> for GunzipSink<T> {
    fn put(&mut self, mut data: &[u8]) -> Result<(), StageFailure> {
        while !data.is_empty() {
            let p = self
                .decoder
                .decode(data, &mut self.out)
                .map_err(|e| StageFailure::Gzip(e.to_string()))?;
            data = &data[p.consumed..];
            if p.produced > 0 {
                self.next.put(&self.out[..p.produced])?;
            } else if p.consumed == 0 {
                break;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<T, StageFailure> {
        // Whatever the decoder still holds.
        loop {
            let p = self
                .decoder
                .decode(&[], &mut self.out)
                .map_err(|e| StageFailure::Gzip(e.to_string()))?;
            if p.produced == 0 {
                break;
            }
            self.next.put(&self.out[..p.produced])?;
        }
        self.decoder
            .finish()
            .map_err(|e| StageFailure::Gzip(e.to_string()))?;
        self.next.finish()
    }
}

/// Where a stage behind gzip leaves its failure (gzip's writer speaks `io`).
type FailSlot = Arc<Mutex<Option<StageFailure>>>;

/// `io::Write` over the next stage, for gzip's writer.
struct NextWriter<T> {
    next: Box<dyn StageSink<T>>,
    failed: FailSlot,
}

impl<T> Write for NextWriter<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.next.put(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let mut slot = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
                Err(io::Error::other("a later stage failed"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// gzip, in-process.
struct GzipSink<T> {
    w: GzipWriter<NextWriter<T>>,
    failed: FailSlot,
}

/// The failure of a stage behind gzip if there was one, else gzip's own.
fn gzip_failure(failed: &FailSlot, e: io::Error) -> StageFailure {
    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
    slot.take()
        .unwrap_or_else(|| StageFailure::Gzip(e.to_string()))
}

impl<T: Tail> StageSink<T> for GzipSink<T> {
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure> {
        self.w
            .write_all(data)
            .map_err(|e| gzip_failure(&self.failed, e))
    }

    fn finish(self: Box<Self>) -> Result<T, StageFailure> {
        let GzipSink { w, failed } = *self;
        match w.finish() {
            Ok(inner) => inner.next.finish(),
            Err(e) => Err(gzip_failure(&failed, e)),
        }
    }
}

/// What a program's output thread gives back: the next stage, or its failure.
type Drained<T> = Result<Box<dyn StageSink<T>>, StageFailure>;

/// An external program: we write its stdin; a thread copies its stdout into the next
/// stage; another keeps its stderr lines.
struct ProgramSink<T> {
    stage: &'static str,
    filter: RunningFilter,
    stdin: Option<File>,
    drain: Option<JoinHandle<Drained<T>>>,
    errs: Option<JoinHandle<Vec<StderrLine>>>,
}

impl<T: Tail> ProgramSink<T> {
    fn start(
        stage: &'static str,
        cmd: FilterCommand,
        next: Box<dyn StageSink<T>>,
    ) -> Result<ProgramSink<T>, StageFailure> {
        let program_failure = |error| StageFailure::Program {
            stage,
            error,
            stderr: Vec::new(),
        };
        let mut filter = cmd.spawn().map_err(program_failure)?;
        let stdin = filter.take_stdin().map(File::from);
        let stdout = filter.take_stdout().map(File::from);
        let stderr = filter.take_stderr().map(File::from);
        let pid = filter.pid();
        let drain = std::thread::Builder::new()
            .name("server-filter-out".into())
            .spawn(move || drain_into(stdout, next, pid))
            .map_err(|e| {
                program_failure(FilterError::Io {
                    program: filter.program().to_path_buf(),
                    pid,
                    what: "starting its output thread",
                    source: e,
                })
            })?;
        let errs = std::thread::Builder::new()
            .name("server-filter-err".into())
            .spawn(move || read_stderr(stderr))
            .ok();
        Ok(ProgramSink {
            stage,
            filter,
            stdin,
            drain: Some(drain),
            errs,
        })
    }

    /// Reaps the program (its input closed) and joins its threads: the next stage and
    /// the program's failure, if any (a later stage's failure wins: it made this one stop).
    fn end(&mut self) -> (Drained<T>, Vec<String>) {
        self.stdin = None;
        let drained = match self.drain.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(StageFailure::Gone),
        };
        let waited = self.filter.wait();
        let lines: Vec<String> = match self.errs.take().map(JoinHandle::join) {
            Some(Ok(l)) => l.into_iter().map(|l| l.text).collect(),
            _ => Vec::new(),
        };
        let status = waited.and_then(|o| o.into_result(self.filter.program(), self.filter.pid()));
        let r = match (drained, status) {
            (Err(later), _) => Err(later),
            (Ok(_), Err(error)) => Err(StageFailure::Program {
                stage: self.stage,
                error,
                stderr: lines.clone(),
            }),
            (Ok(next), Ok(())) => Ok(next),
        };
        (r, lines)
    }
}

impl<T: Tail> StageSink<T> for ProgramSink<T> {
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure> {
        let Some(stdin) = &mut self.stdin else {
            return Err(StageFailure::Gone);
        };
        match stdin.write_all(data) {
            Ok(()) => Ok(()),
            Err(e) => {
                // It died or closed its input: its exit status (or the next stage's
                // failure) says why; exiting 0 without reading everything is a failure too.
                let (r, lines) = self.end();
                Err(match r {
                    Err(f) => f,
                    Ok(_) => StageFailure::Program {
                        stage: self.stage,
                        error: if e.kind() == io::ErrorKind::BrokenPipe {
                            FilterError::InputNotRead {
                                program: self.filter.program().to_path_buf(),
                                pid: self.filter.pid(),
                                written: 0,
                            }
                        } else {
                            FilterError::Io {
                                program: self.filter.program().to_path_buf(),
                                pid: self.filter.pid(),
                                what: "writing its input",
                                source: e,
                            }
                        },
                        stderr: lines,
                    },
                })
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<T, StageFailure> {
        let (r, lines) = self.end();
        let mut tail = r?.finish()?;
        tail.add_messages(
            lines
                .into_iter()
                .map(|l| format!("? {}: {l}", self.stage))
                .collect(),
        );
        Ok(tail)
    }
}

impl<T> Drop for ProgramSink<T> {
    fn drop(&mut self) {
        if self.filter.outcome().is_none() {
            // Aborted: kill the group so that the drain thread sees EOF, then join.
            self.filter.kill();
            self.stdin = None;
            if let Some(d) = self.drain.take() {
                let _ = d.join();
            }
            if let Some(e) = self.errs.take() {
                let _ = e.join();
            }
        }
    }
}

/// Copies a program's stdout into `next`. If `next` fails, the program's group is killed
/// so that it cannot block on a full pipe while we block on its stdin.
fn drain_into<T>(stdout: Option<File>, mut next: Box<dyn StageSink<T>>, pid: u32) -> Drained<T> {
    let Some(mut out) = stdout else {
        return Ok(next);
    };
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => return Ok(next),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(next),
        };
        if let Err(f) = next.put(&buf[..n]) {
            if let Ok(pgid) = libc::pid_t::try_from(pid) {
                // SAFETY: the group we created; its leader is not reaped yet (the owner
                // reaps it only after joining this thread), so the id is still ours.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            return Err(f);
        }
    }
}

fn read_stderr(stderr: Option<File>) -> Vec<StderrLine> {
    stderr
        .map(|f| filters::read_stderr_lines(f).0)
        .unwrap_or_default()
}

/// Builds the stages in front of `writer`, last first, and (when a stage is an external
/// program) the check chain behind it.
fn build(
    stages: &[Stage],
    gzip: &GzipPool,
    writer: HoldingWriter,
    pids: &mut Vec<u32>,
) -> Result<Box<dyn StageSink<Stored>>, StageFailure> {
    // Our gzip is trusted; a program's output is checked by undoing it as a restore will.
    let external = stages.iter().any(|s| !matches!(s, Stage::Gzip(_)));
    let check = if external {
        let undo = stages
            .iter()
            .rev()
            .map(|s| String::from_utf8_lossy(&s.undo_command()).into_owned())
            .collect::<Vec<_>>()
            .join(" | ");
        let mut sink: Box<dyn StageSink<Check>> = Box::new(CheckSink(Check {
            undo,
            ..Check::default()
        }));
        // The stored bytes meet the last stage's undo first.
        for stage in stages {
            sink = match stage {
                Stage::Gzip(_) => Box::new(GunzipSink {
                    decoder: Gunzip::new(),
                    out: vec![0; 256 * 1024],
                    next: sink,
                }),
                Stage::CustomCompress(p) => {
                    // A program that cannot start fails as itself, whichever chain.
                    let s = ProgramSink::start(
                        "data compress",
                        FilterCommand::uncompress(path_of(p)),
                        sink,
                    )?;
                    pids.push(s.filter.pid());
                    Box::new(s)
                }
                Stage::Encrypt {
                    program,
                    decrypt_option,
                } => {
                    let s = ProgramSink::start(
                        "data encrypt",
                        FilterCommand::decrypt(
                            path_of(program),
                            std::ffi::OsStr::from_bytes(decrypt_option),
                        ),
                        sink,
                    )?;
                    pids.push(s.filter.pid());
                    Box::new(s)
                }
            };
        }
        Some(sink)
    } else {
        None
    };
    let mut sink: Box<dyn StageSink<Stored>> = Box::new(HoldingSink {
        writer,
        current: None,
        crc: Crc32c::new(),
        check,
    });
    for stage in stages.iter().rev() {
        let name = stage_name(stage);
        sink = match stage {
            Stage::Gzip(level) => {
                let level = match level {
                    GzipLevel::Fast => Level::Fast,
                    GzipLevel::Best => Level::Best,
                };
                let failed = FailSlot::default();
                let next = NextWriter {
                    next: sink,
                    failed: failed.clone(),
                };
                let w = GzipWriter::new(gzip, level, next)
                    .map_err(|e: GzipError| StageFailure::Gzip(e.to_string()))?;
                Box::new(GzipSink { w, failed })
            }
            Stage::CustomCompress(p) => {
                let s = ProgramSink::start(name, FilterCommand::compress(path_of(p)), sink)?;
                pids.push(s.filter.pid());
                Box::new(s)
            }
            Stage::Encrypt { program, .. } => {
                let s = ProgramSink::start(name, FilterCommand::encrypt(path_of(program)), sink)?;
                pids.push(s.filter.pid());
                Box::new(s)
            }
        };
    }
    Ok(sink)
}

fn path_of(p: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(p))
}

/// The server filters of one dump, on their thread (see the module header).
pub struct Pipeline {
    tx: Option<Sender<Chunk>>,
    pool: ChunkPool,
    thread: Option<JoinHandle<Result<Stored, StageFailure>>>,
    stall: Duration,
    first: (&'static str, String),
    /// The programs' process groups, to unblock an aborted thread.
    pids: Vec<u32>,
    aborted: Arc<AtomicBool>,
}

impl Pipeline {
    /// Starts `stages` (server stages, in order) in front of `writer` (which has its
    /// header written), with at most `buffers` buffers of `buffer_size` bytes in flight;
    /// a first stage that takes nothing for `stall` fails the dump. Programs start here,
    /// so a missing one fails at once.
    pub fn start(
        stages: &[Stage],
        gzip: Arc<GzipPool>,
        writer: HoldingWriter,
        buffers: usize,
        buffer_size: usize,
        stall: Duration,
    ) -> Result<Pipeline, StageFailure> {
        let first = stages
            .first()
            .map(|s| (stage_name(s), s.to_string()))
            .unwrap_or(("data", String::new()));
        let mut pids = Vec::new();
        let mut sink = build(stages, &gzip, writer, &mut pids)?;
        let buffers = buffers.max(2);
        let (tx, rx) = bounded::<Chunk>(buffers.saturating_sub(2).max(1));
        let pool = ChunkPool::new(buffers, buffer_size.max(4096));
        let free_tx = pool.returner();
        let aborted = Arc::new(AtomicBool::new(false));
        let abort_seen = aborted.clone();
        let thread = std::thread::Builder::new()
            .name("server-filters".into())
            .spawn(move || {
                while let Ok(c) = rx.recv() {
                    let r = sink.put(&c.buf[..c.filled.min(c.buf.len())]);
                    let _ = free_tx.try_send(c);
                    r?;
                }
                if abort_seen.load(Ordering::Acquire) {
                    // Dropping the stages kills their programs and removes the file.
                    return Err(StageFailure::Gone);
                }
                sink.finish()
            })
            .map_err(|_| StageFailure::Gone)?;
        Ok(Pipeline {
            tx: Some(tx),
            pool,
            thread: Some(thread),
            stall,
            first,
            pids,
            aborted,
        })
    }

    /// An empty buffer (blocks, up to the stall bound, while all are in flight).
    pub fn chunk(&mut self) -> Result<Chunk, StageFailure> {
        if let Some(c) = self.pool.try_take() {
            return Ok(c);
        }
        match self.pool.wait(self.stall) {
            Some(c) => Ok(c),
            None if self.thread.as_ref().is_none_or(|t| t.is_finished()) => Err(self.join_error()),
            None => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> StageFailure {
        StageFailure::Stalled {
            stage: self.first.0,
            program: self.first.1.clone(),
            waited: self.stall,
        }
    }

    /// Hands a filled buffer to the stages.
    pub fn submit(&mut self, chunk: Chunk) -> Result<(), StageFailure> {
        if chunk.filled == 0 {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(StageFailure::Gone);
        };
        match tx.send_timeout(chunk, self.stall) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(self.stalled()),
            Err(SendTimeoutError::Disconnected(_)) => Err(self.join_error()),
        }
    }

    /// The thread's own error, after it stopped.
    fn join_error(&mut self) -> StageFailure {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => StageFailure::Gone,
        }
    }

    /// Ends the input and waits for every stage: the holding file with all bytes handed to
    /// its writer, and the server-CRC.
    pub fn finish(mut self) -> Result<Stored, StageFailure> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(StageFailure::Gone),
        }
    }
}

impl Drop for Pipeline {
    /// Aborted: closing the channel ends the thread (its programs are killed when their
    /// stages drop, and the holding writer removes its file).
    fn drop(&mut self) {
        self.aborted.store(true, Ordering::Release);
        self.tx = None;
        self.pool.drain();
        if let Some(t) = self.thread.take() {
            if !t.is_finished() {
                // It may be blocked writing to a program that reads nothing: kill the
                // programs. An aborted thread reaps none of them (their stages' drop
                // does, after killing them too), so the ids are still ours.
                for pid in &self.pids {
                    if let Ok(pgid) = libc::pid_t::try_from(*pid) {
                        // SAFETY: a process group this pipeline created.
                        unsafe {
                            libc::kill(-pgid, libc::SIGKILL);
                        }
                    }
                }
            }
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::num::NonZeroUsize;
    use std::path::Path;

    fn pool() -> Arc<GzipPool> {
        Arc::new(GzipPool::new(NonZeroUsize::new(2).unwrap()))
    }

    fn data() -> Vec<u8> {
        (0..3_000_000u32)
            .flat_map(|i| format!("line {} {}\n", i % 977, i / 3).into_bytes())
            .take(3 << 20)
            .collect()
    }

    fn script(dir: &Path, name: &str, body: &str) -> Vec<u8> {
        testkit::script(dir, name, body)
            .as_os_str()
            .as_bytes()
            .to_vec()
    }

    /// Runs `stages` over `input`: the stored payload and the check's verdict, or the
    /// failure; the holding file is committed only on success.
    fn run(stages: &[Stage], input: &[u8]) -> (Result<Vec<u8>, StageFailure>, bool) {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        let mut w = HoldingWriter::create(path.clone(), 4, 64 * 1024).unwrap();
        w.write_all(b"HEADER").unwrap();
        let received = {
            let mut c = Crc32c::new();
            c.update(input);
            c.value()
        };
        let r = (|| {
            let mut p = Pipeline::start(stages, pool(), w, 4, 64 * 1024, Duration::from_secs(10))?;
            let mut rest = input;
            while !rest.is_empty() {
                let mut c = p.chunk()?;
                let n = c.push(rest);
                rest = &rest[n..];
                p.submit(c)?;
            }
            let stored = p.finish()?;
            if let Some(c) = &stored.check
                && !c.gives_back(received)
            {
                return Err(c.garbage(received));
            }
            Ok(stored)
        })();
        let out = match r {
            Ok(stored) => {
                stored.writer.commit().unwrap();
                let mut v = Vec::new();
                File::open(&path).unwrap().read_to_end(&mut v).unwrap();
                assert_eq!(&v[..6], b"HEADER");
                assert_eq!(stored.crc.size as usize, v.len() - 6);
                Ok(v[6..].to_vec())
            }
            Err(e) => Err(e),
        };
        let left = std::fs::read_dir(t.path()).unwrap().count() > 0;
        (out, left)
    }

    // issue 12: `compress server fast` is gzip that `gzip -dc` reads.
    #[test]
    fn server_gzip_output_is_what_gzip_dc_reads() {
        let input = data();
        let (out, _) = run(&[Stage::Gzip(GzipLevel::Fast)], &input);
        let out = out.unwrap();
        assert!(out.len() < input.len() / 3);
        let mut gz = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = gz.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&out).unwrap());
        let got = gz.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(got.status.success());
        assert!(got.stdout == input);
    }

    /// A reversible "encryption": `tr` both ways, with -d meaning decrypt.
    const ROT13: &str = "if [ \"$1\" = -d ]; then exec tr 'n-za-mN-ZA-M' 'a-zA-Z'; else exec tr 'a-zA-Z' 'n-za-mN-ZA-M'; fi";

    // issue 12: an external program's output is checked by undoing it.
    #[test]
    fn a_custom_compressor_and_encryption_are_checked_and_stored() {
        let t = tempfile::tempdir().unwrap();
        let enc = script(t.path(), "rot", ROT13);
        let input = data();
        let stages = [
            Stage::Gzip(GzipLevel::Best),
            Stage::Encrypt {
                program: enc.clone().into(),
                decrypt_option: "-d".into(),
            },
        ];
        let (out, _) = run(&stages, &input);
        assert!(!out.unwrap().is_empty());
        if Path::new("/usr/bin/zstd").exists() {
            let (out, _) = run(&[Stage::CustomCompress("/usr/bin/zstd".into())], &input);
            assert!(out.unwrap().len() < input.len() / 3);
        }
    }

    // issue 12: each way a program can fail names it and its status, and leaves no file.
    #[test]
    fn bad_programs_fail_with_their_name_and_status_and_leave_no_file() {
        let t = tempfile::tempdir().unwrap();
        let input = data();
        let killed = script(t.path(), "killed", "head -c 1000 >/dev/null; kill -KILL $$");
        let garbage = script(
            t.path(),
            "garbage",
            "if [ \"$1\" = -d ]; then cat; else cat >/dev/null; echo garbage; fi",
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"/nonexistent/zstd".to_vec(),
                "cannot start /nonexistent/zstd",
            ),
            (b"/bin/false".to_vec(), "/bin/false (pid"),
            (killed.clone(), "killed by signal 9 (SIGKILL)"),
            (garbage.clone(), "garbage -d` gives back"),
        ];
        for (program, want) in cases {
            let (out, left) = run(&[Stage::CustomCompress(program.clone().into())], &input);
            let e = out.unwrap_err().to_string();
            assert!(
                e.contains(want),
                "{}: {e}",
                String::from_utf8_lossy(&program)
            );
            assert!(
                !left,
                "{}: a file was left",
                String::from_utf8_lossy(&program)
            );
        }
        // Exit 1 names the code.
        let (out, _) = run(&[Stage::CustomCompress("/bin/false".into())], &input);
        let e = out.unwrap_err().to_string();
        assert!(
            e.contains("exit code 1") || e.contains("without reading"),
            "{e}"
        );
    }
}
