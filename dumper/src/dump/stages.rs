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
//! half-written stays. A program's stderr lines do not fail it: they make the dump STRANGE,
//! as `? data compress: <line>` / `? data encrypt: <line>` in its report, as in Amanda.
//!
//! What this module must not do: know the protocol (the receiver's CRC of DATA is checked
//! by the caller), or leave a program or a thread behind (an aborted pipeline kills its
//! programs' process groups and joins its threads).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, bounded};
use filters::gzip::{GzipError, GzipPool, GzipWriter, Level};
use filters::program::{FilterCommand, FilterError, RunningFilter};
use filters::stderr::{StderrLine, StderrLines};
use proto::crc::{Crc32c, CrcValue};
use proto::dataphase::{GzipLevel, Stage};

use crate::holding::{Chunk, HoldingError, HoldingWriter};

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
    /// The holding file behind the filters.
    #[error("{0}")]
    Holding(HoldingError),
    /// The pipeline thread is gone.
    #[error("[the server filter thread stopped]")]
    Gone,
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
}

/// The report's name of a stage (Amanda's filter names).
fn stage_name(stage: &Stage) -> &'static str {
    if stage.compresses() {
        "data compress"
    } else {
        "data encrypt"
    }
}

/// One stage's input side, as the pipeline thread writes to it.
trait StageSink: Send {
    /// Writes all of `data` to the stage.
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure>;
    /// Ends the input; waits for the stage and those after it.
    fn finish(self: Box<Self>) -> Result<Stored, StageFailure>;
}

/// The last stage: the holding file.
struct HoldingSink {
    writer: HoldingWriter,
    current: Option<Chunk>,
    crc: Crc32c,
}

impl StageSink for HoldingSink {
    fn put(&mut self, mut data: &[u8]) -> Result<(), StageFailure> {
        self.crc.update(data);
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
        Ok(Stored {
            crc: self.crc.value(),
            writer: self.writer,
            messages: Vec::new(),
        })
    }
}

/// Where a stage behind gzip leaves its failure (gzip's writer speaks `io`).
type FailSlot = Arc<Mutex<Option<StageFailure>>>;

/// `io::Write` over the next stage, for gzip's writer.
struct NextWriter {
    next: Box<dyn StageSink>,
    failed: FailSlot,
}

impl Write for NextWriter {
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
struct GzipSink {
    w: GzipWriter<NextWriter>,
    failed: FailSlot,
}

/// The failure of a stage behind gzip if there was one, else gzip's own.
fn gzip_failure(failed: &FailSlot, e: io::Error) -> StageFailure {
    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
    slot.take()
        .unwrap_or_else(|| StageFailure::Gzip(e.to_string()))
}

impl StageSink for GzipSink {
    fn put(&mut self, data: &[u8]) -> Result<(), StageFailure> {
        self.w
            .write_all(data)
            .map_err(|e| gzip_failure(&self.failed, e))
    }

    fn finish(self: Box<Self>) -> Result<Stored, StageFailure> {
        let GzipSink { w, failed } = *self;
        match w.finish() {
            Ok(inner) => inner.next.finish(),
            Err(e) => Err(gzip_failure(&failed, e)),
        }
    }
}

/// An external program: we write its stdin; a thread copies its stdout into the next
/// stage; another keeps its stderr lines.
struct ProgramSink {
    stage: &'static str,
    filter: RunningFilter,
    stdin: Option<File>,
    drain: Option<JoinHandle<Result<Box<dyn StageSink>, StageFailure>>>,
    errs: Option<JoinHandle<Vec<StderrLine>>>,
}

impl ProgramSink {
    fn start(
        stage: &'static str,
        cmd: FilterCommand,
        next: Box<dyn StageSink>,
    ) -> Result<ProgramSink, StageFailure> {
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
    fn end(&mut self) -> (Result<Box<dyn StageSink>, StageFailure>, Vec<String>) {
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

impl StageSink for ProgramSink {
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

    fn finish(mut self: Box<Self>) -> Result<Stored, StageFailure> {
        let (r, lines) = self.end();
        let mut stored = r?.finish()?;
        let mut messages: Vec<String> = lines
            .into_iter()
            .map(|l| format!("? {}: {l}", self.stage))
            .collect();
        messages.append(&mut stored.messages);
        stored.messages = messages;
        Ok(stored)
    }
}

impl Drop for ProgramSink {
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
fn drain_into(
    stdout: Option<File>,
    mut next: Box<dyn StageSink>,
    pid: u32,
) -> Result<Box<dyn StageSink>, StageFailure> {
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
    let mut lines = Vec::new();
    let Some(mut f) = stderr else {
        return lines;
    };
    let mut split = StderrLines::default();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => split.push(&buf[..n], &mut lines),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    split.finish(&mut lines);
    lines
}

/// Builds the stages in front of `writer`, last first.
fn build(
    stages: &[Stage],
    gzip: &GzipPool,
    writer: HoldingWriter,
    pids: &mut Vec<u32>,
) -> Result<Box<dyn StageSink>, StageFailure> {
    let mut sink: Box<dyn StageSink> = Box::new(HoldingSink {
        writer,
        current: None,
        crc: Crc32c::new(),
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
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(p))
}

/// The server filters of one dump, on their thread (see the module header).
pub struct Pipeline {
    tx: Option<Sender<Chunk>>,
    free_rx: Receiver<Chunk>,
    thread: Option<JoinHandle<Result<Stored, StageFailure>>>,
    allocated: usize,
    max_buffers: usize,
    buffer_size: usize,
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
        let (free_tx, free_rx) = bounded::<Chunk>(buffers);
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
            free_rx,
            thread: Some(thread),
            allocated: 0,
            max_buffers: buffers,
            buffer_size: buffer_size.max(4096),
            stall,
            first,
            pids,
            aborted,
        })
    }

    /// An empty buffer (blocks, up to the stall bound, while all are in flight).
    pub fn chunk(&mut self) -> Result<Chunk, StageFailure> {
        if let Ok(mut c) = self.free_rx.try_recv() {
            c.filled = 0;
            return Ok(c);
        }
        if self.allocated < self.max_buffers {
            self.allocated += 1;
            return Ok(Chunk {
                buf: vec![0; self.buffer_size],
                filled: 0,
            });
        }
        match self.free_rx.recv_timeout(self.stall) {
            Ok(mut c) => {
                c.filled = 0;
                Ok(c)
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(self.stalled()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.join_error()),
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
        while self.free_rx.try_recv().is_ok() {}
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
