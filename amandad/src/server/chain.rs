//! The client filters of one dump as the loop runs them (`compress client fast|best|custom`,
//! `encrypt client`; spec §11.1): the application's output goes in, what DATA carries comes
//! out, through the stages `proto::dataphase::FilterChain` lists, in its order (compression,
//! then encryption).
//!
//! - gzip (fast/best) runs in-process on the daemon's shared pool (`filters::GzipStream`);
//!   its waker is the loop's, so a finished member wakes the loop.
//! - custom compressors and encryption programs are external (`filters::FilterCommand`:
//!   started without arguments, never through a shell, in their own process group); the loop
//!   writes their stdin and reads their stdout and stderr without blocking, and learns of
//!   their exit from their pidfd.
//!
//! Every buffer between two stages is bounded ([`STAGE_BUFFER`]): a stage is not fed while
//! the next one's input is full, and the application's pipe is not read while the first
//! stage's is ([`ClientChain::has_room`]). A program's stderr becomes bounded lines
//! (`filters::StderrLines`), handed to the shell for MESG.
//!
//! A stage fails when its program cannot start, exits non-zero, is killed by a signal, or
//! exits 0 without reading all its input, or when gzip fails: [`ClientChain::failure`] then
//! names the program and how it ended, and the dump must fail.
//!
//! What this module must not do: block (reads and writes are non-blocking; waiting for a
//! program is `try_wait`), know the protocol (MESG wording and CRCs are the caller's), or
//! hold more than the bounds above.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use filters::{
    FilterCommand, FilterError, GzipOutput, GzipPool, GzipStream, Level, RunningFilter, StderrLine,
    StderrLines, Waker,
};
use proto::dataphase::{GzipLevel, Stage};

/// Input held for one stage at most (it may pass this by one chunk).
pub const STAGE_BUFFER: usize = 2 << 20;

/// Largest single read from a program's stdout.
const READ_STEP: usize = 256 << 10;

/// Bytes waiting for the next stage (or DATA).
#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    pos: usize,
}

impl Buf {
    fn len(&self) -> usize {
        self.data.len() - self.pos
    }

    fn room(&self) -> bool {
        self.len() < STAGE_BUFFER
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        } else if self.pos >= STAGE_BUFFER {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
}

/// An external program and our ends of its pipes.
struct Program {
    filter: RunningFilter,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    lines: StderrLines,
    /// Bytes written to its stdin.
    written: u64,
    /// It closed its stdin before we were done.
    input_lost: bool,
}

enum Engine {
    Gzip {
        stream: GzipStream,
        finish_sent: bool,
    },
    Program(Box<Program>),
}

struct StageRun {
    /// For messages: the stage as the dumptype names it (`gzip --fast`, the program).
    name: String,
    /// The dumptype keyword that chose it, for error messages.
    role: &'static str,
    engine: Engine,
    /// Its input.
    input: Buf,
    /// Its output ended (gzip finished, or the program's stdout reached EOF).
    out_eof: bool,
    /// The program was reaped (always true for gzip once finished).
    reaped: bool,
}

/// What one [`ClientChain::pump`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Something moved (call again until it says no).
    pub progress: bool,
}

/// The client filters of one dump (see the module header).
pub struct ClientChain {
    stages: Vec<StageRun>,
    /// The last stage's output, for DATA.
    out: Buf,
    /// The application's output ended.
    input_end: bool,
    failure: Option<String>,
    /// stderr lines waiting for MESG: (stage name, line).
    lines: Vec<(String, StderrLine)>,
    /// The read buffer for programs' stdout and stderr.
    scratch: Vec<u8>,
}

/// The MESG lines of the filters' stderr lines. A filter's stderr is news for the report,
/// not a failure of the dump (the exit status says that): `? <filter>: <line>` makes it
/// STRANGE. 3.5.1 fails the dump on any such line, which makes every amcrypt-ossl dump fail
/// on OpenSSL 3 (spec §11.3); issue 12.
pub fn mesg_of_lines(lines: Vec<(String, StderrLine)>) -> Vec<u8> {
    let mut text = Vec::new();
    for (name, line) in lines {
        text.extend_from_slice(
            format!(
                "? {name}: {}{}\n",
                line.text.replace('\n', " "),
                if line.truncated { " [...]" } else { "" }
            )
            .as_bytes(),
        );
    }
    text
}

fn gzip_level(l: GzipLevel) -> Level {
    match l {
        GzipLevel::Fast => Level::Fast,
        GzipLevel::Best => Level::Best,
    }
}

impl ClientChain {
    /// Starts the stages (programs are spawned now). `pool` is the daemon's gzip pool,
    /// `waker` wakes the loop when gzip output is ready. On error nothing is left running.
    pub fn start(
        stages: &[Stage],
        pool: &GzipPool,
        waker: Option<Waker>,
    ) -> Result<ClientChain, String> {
        let mut run = Vec::new();
        for stage in stages {
            let name = stage.to_string();
            let role = role(stage);
            let engine = match stage {
                Stage::Gzip(level) => Engine::Gzip {
                    stream: pool
                        .stream(gzip_level(*level), waker.clone())
                        .map_err(|e| format!("{name}: {e}"))?,
                    finish_sent: false,
                },
                Stage::CustomCompress(p) => Engine::Program(Box::new(
                    spawn(FilterCommand::compress(path_of(p.as_bytes())))
                        .map_err(|e| format!("{role}: {e}"))?,
                )),
                Stage::Encrypt { program, .. } => Engine::Program(Box::new(
                    spawn(FilterCommand::encrypt(path_of(program.as_bytes())))
                        .map_err(|e| format!("{role}: {e}"))?,
                )),
            };
            run.push(StageRun {
                name,
                role,
                engine,
                input: Buf::default(),
                out_eof: false,
                reaped: false,
            });
        }
        Ok(ClientChain {
            stages: run,
            out: Buf::default(),
            input_end: false,
            failure: None,
            lines: Vec::new(),
            scratch: vec![0; READ_STEP],
        })
    }

    /// The descriptors to watch: (fd, wants writable). Stdin for writable, stdout, stderr
    /// and the pidfd for readable.
    pub fn fds(&self) -> Vec<(RawFd, bool)> {
        let mut fds = Vec::new();
        for s in &self.stages {
            if let Engine::Program(p) = &s.engine {
                if let Some(fd) = &p.stdin {
                    fds.push((fd.as_raw_fd(), true));
                }
                for fd in [&p.stdout, &p.stderr].into_iter().flatten() {
                    fds.push((fd.as_raw_fd(), false));
                }
                if let Some(fd) = p.filter.exit_fd() {
                    fds.push((fd.as_raw_fd(), false));
                }
            }
        }
        fds
    }

    /// Whether the first stage takes more input now.
    pub fn has_room(&self) -> bool {
        self.failure.is_none() && self.stages.first().is_none_or(|s| s.input.room())
    }

    /// The application's output, in order.
    pub fn push_input(&mut self, mut bytes: &[u8]) {
        let Some(first) = self.stages.first_mut() else {
            self.out.push(bytes);
            return;
        };
        // Straight into gzip's member buffer when nothing waits before it: one copy less.
        if first.input.len() == 0
            && let Engine::Gzip { stream, .. } = &mut first.engine
        {
            match stream.push(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) => {
                    let why = format!("{}: {e}", first.name);
                    self.fail(why);
                    return;
                }
            }
        }
        first.input.push(bytes);
    }

    /// The application's output ended.
    pub fn input_end(&mut self) {
        self.input_end = true;
    }

    /// The first failure, naming the program and how it ended.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Every stage ended cleanly, every program was reaped with exit code 0, and DATA took
    /// the last output.
    pub fn is_done(&self) -> bool {
        self.failure.is_none()
            && self.input_end
            && self.stages.iter().all(|s| s.out_eof && s.reaped)
            && self.out.len() == 0
    }

    /// The stderr lines read so far: (stage name, line).
    pub fn take_lines(&mut self) -> Vec<(String, StderrLine)> {
        std::mem::take(&mut self.lines)
    }

    /// Hands up to `max` bytes of output to `sink` (what DATA carries); returns how many.
    pub fn take_output(&mut self, max: usize, sink: impl FnOnce(&[u8])) -> usize {
        let n = self.out.len().min(max);
        if n > 0 {
            sink(&self.out.bytes()[..n]);
            self.out.consume(n);
        }
        n
    }

    /// Moves bytes through every stage as far as the buffers and the programs allow.
    pub fn pump(&mut self) -> Pumped {
        let mut progress = false;
        if self.failure.is_some() {
            return Pumped { progress };
        }
        for i in 0..self.stages.len() {
            let upstream_done = if i == 0 {
                self.input_end
            } else {
                self.stages[i - 1].out_eof
            };
            let (before, after) = self.stages.split_at_mut(i + 1);
            let stage = &mut before[i];
            let next = match after.first_mut() {
                Some(n) => &mut n.input,
                None => &mut self.out,
            };
            match stage_step(
                stage,
                upstream_done,
                next,
                &mut self.scratch,
                &mut self.lines,
            ) {
                Ok(p) => progress |= p,
                Err(e) => {
                    let why = format!("{}: {e}", stage.role);
                    self.fail(why);
                    return Pumped { progress: true };
                }
            }
        }
        Pumped { progress }
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
        // Dropping the programs kills their process groups and reaps them.
        for s in &mut self.stages {
            if let Engine::Program(p) = &mut s.engine {
                p.stdin = None;
                p.filter.kill();
            }
        }
    }
}

/// The dumptype keyword behind a stage: errors name it, so the admin knows what to fix.
fn role(stage: &Stage) -> &'static str {
    match stage {
        Stage::Gzip(_) => "compress client",
        Stage::CustomCompress(_) => "client_custom_compress",
        Stage::Encrypt { .. } => "client_encrypt",
    }
}

fn path_of(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

fn spawn(cmd: FilterCommand) -> Result<Program, String> {
    let mut filter = cmd.spawn().map_err(|e| e.to_string())?;
    let stdin = filter.take_stdin();
    let stdout = filter.take_stdout();
    let stderr = filter.take_stderr();
    for fd in [&stdin, &stdout, &stderr].into_iter().flatten() {
        filters::set_nonblocking(fd.as_fd(), true).map_err(|e| {
            format!(
                "{}: cannot make its pipes non-blocking: {e}",
                filter.program().display()
            )
        })?;
    }
    Ok(Program {
        filter,
        stdin,
        stdout,
        stderr,
        lines: StderrLines::default(),
        written: 0,
        input_lost: false,
    })
}

/// A `read(2)` or `write(2)` on a non-blocking descriptor: the byte count, `Ok(None)` when
/// it would block; EINTR is retried.
fn nonblocking(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// `read(2)` into `buf`; `Ok(None)` when it would block.
pub(super) fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: read writes at most buf.len() bytes into buf, which we own.
    nonblocking(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write(2)` of `buf`; `Ok(None)` when it would block.
fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: write reads at most buf.len() bytes from buf.
    nonblocking(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// One stage's share of a pump: feed it, close its input at the end, take its output while
/// `next` has room, read its stderr, reap it. `Ok(true)` when something moved.
fn stage_step(
    stage: &mut StageRun,
    upstream_done: bool,
    next: &mut Buf,
    scratch: &mut [u8],
    lines: &mut Vec<(String, StderrLine)>,
) -> Result<bool, String> {
    let mut progress = false;
    let name = &stage.name;
    match &mut stage.engine {
        Engine::Gzip {
            stream,
            finish_sent,
        } => {
            while stage.input.len() > 0 {
                let n = stream
                    .push(stage.input.bytes())
                    .map_err(|e| format!("{name}: {e}"))?;
                if n == 0 {
                    break;
                }
                stage.input.consume(n);
                progress = true;
            }
            if upstream_done && stage.input.len() == 0 && !*finish_sent {
                stream.finish().map_err(|e| format!("{name}: {e}"))?;
                *finish_sent = true;
                progress = true;
            }
            while next.room() && !stage.out_eof {
                match stream.poll_output().map_err(|e| format!("{name}: {e}"))? {
                    GzipOutput::Chunk(c) => {
                        next.push(&c);
                        stream.recycle(c);
                        progress = true;
                    }
                    GzipOutput::Pending => break,
                    GzipOutput::Finished => {
                        stage.out_eof = true;
                        stage.reaped = true;
                        progress = true;
                    }
                }
            }
        }
        Engine::Program(p) => {
            // Feed its stdin.
            while stage.input.len() > 0 {
                let Some(fd) = p.stdin.as_ref().map(AsRawFd::as_raw_fd) else {
                    // It closed its input: what is left can go nowhere.
                    let n = stage.input.len();
                    stage.input.consume(n);
                    break;
                };
                match write_fd(fd, stage.input.bytes()) {
                    Ok(Some(n)) => {
                        p.written += n as u64;
                        stage.input.consume(n);
                        progress = true;
                    }
                    Ok(None) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                        p.stdin = None;
                        p.input_lost = true;
                        progress = true;
                    }
                    Err(e) => {
                        return Err(format!(
                            "{} (pid {}): writing its input: {e}",
                            p.filter.program().display(),
                            p.filter.pid()
                        ));
                    }
                }
            }
            if upstream_done && stage.input.len() == 0 && p.stdin.is_some() {
                // End of its input.
                p.stdin = None;
                progress = true;
            }
            // Take its output.
            while next.room() {
                let Some(fd) = p.stdout.as_ref().map(AsRawFd::as_raw_fd) else {
                    break;
                };
                match read_fd(fd, scratch) {
                    Ok(Some(0)) => {
                        p.stdout = None;
                        stage.out_eof = true;
                        progress = true;
                    }
                    Ok(Some(n)) => {
                        next.push(&scratch[..n]);
                        progress = true;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(format!(
                            "{} (pid {}): reading its output: {e}",
                            p.filter.program().display(),
                            p.filter.pid()
                        ));
                    }
                }
            }
            // Its stderr, bounded.
            while let Some(fd) = p.stderr.as_ref().map(AsRawFd::as_raw_fd) {
                let mut got = Vec::new();
                match read_fd(fd, &mut scratch[..64 << 10]) {
                    Ok(Some(0)) | Err(_) => {
                        p.stderr = None;
                        p.lines.finish(&mut got);
                        if p.lines.dropped() > 0 {
                            got.push(StderrLine {
                                text: format!("({} more lines not shown)", p.lines.dropped()),
                                truncated: false,
                            });
                        }
                        progress = true;
                    }
                    Ok(Some(n)) => {
                        p.lines.push(&scratch[..n], &mut got);
                        progress = true;
                    }
                    Ok(None) => break,
                }
                lines.extend(got.into_iter().map(|l| (name.clone(), l)));
            }
            // Its exit, once its output ended.
            if !stage.reaped && p.stdout.is_none() {
                let outcome = p.filter.try_wait().map_err(|e| e.to_string())?;
                if let Some(o) = outcome {
                    stage.reaped = true;
                    progress = true;
                    let pid = p.filter.pid();
                    o.into_result(p.filter.program(), pid)
                        .map_err(|e| e.to_string())?;
                    // Its stdin still open means input it never saw: it exited before its
                    // input ended, whether or not a write has hit EPIPE yet (issue 12).
                    if p.input_lost || p.stdin.is_some() {
                        return Err(FilterError::InputNotRead {
                            program: p.filter.program().to_path_buf(),
                            pid,
                            written: p.written,
                        }
                        .to_string());
                    }
                }
            }
        }
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    fn run(stages: &[Stage], input: &[u8]) -> (Result<Vec<u8>, String>, Vec<String>) {
        let pool = GzipPool::new(NonZeroUsize::new(2).unwrap());
        let mut chain = match ClientChain::start(stages, &pool, None) {
            Ok(c) => c,
            Err(e) => return (Err(e), Vec::new()),
        };
        let mut out = Vec::new();
        let mut fed = 0;
        let mut lines = Vec::new();
        let t0 = std::time::Instant::now();
        loop {
            while fed < input.len() && chain.has_room() {
                let n = (input.len() - fed).min(100_000);
                chain.push_input(&input[fed..fed + n]);
                fed += n;
            }
            if fed == input.len() {
                chain.input_end();
            }
            let p = chain.pump();
            chain.take_output(usize::MAX, |b| out.extend_from_slice(b));
            lines.extend(chain.take_lines().into_iter().map(|(_, l)| l.text));
            if let Some(f) = chain.failure() {
                return (Err(f.to_owned()), lines);
            }
            if chain.is_done() {
                return (Ok(out), lines);
            }
            if !p.progress {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert!(t0.elapsed().as_secs() < 60, "the chain hangs");
        }
    }

    fn sample() -> Vec<u8> {
        (0..3_000_000u32)
            .flat_map(|i| format!("{i} ").into_bytes())
            .take(3 << 20)
            .collect()
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) -> Stage {
        let p = testkit::script(dir, name, body);
        Stage::CustomCompress(p.display().to_string().into())
    }

    #[test]
    fn gzip_then_a_program_round_trips_and_gzip_dc_reads_it() {
        let input = sample();
        let stages = [
            Stage::Gzip(GzipLevel::Fast),
            Stage::Encrypt {
                program: "/bin/cat".into(),
                decrypt_option: "-d".into(),
            },
        ];
        let (out, _) = run(&stages, &input);
        let out = out.unwrap();
        assert!(out.len() < input.len() / 2);
        let back = filters::GunzipReader::new(&out[..]);
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut { back }, &mut v).unwrap();
        assert_eq!(v, input);
    }

    #[test]
    fn a_failing_program_names_itself_and_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let input = sample();
        let s = script(
            dir.path(),
            "exit1",
            "cat >/dev/null; echo broken >&2; exit 1",
        );
        let (out, lines) = run(&[s], &input);
        let e = out.unwrap_err();
        assert!(e.contains("exit1") && e.contains("exit code 1"), "{e}");
        assert_eq!(lines, ["broken"]);

        let s = script(dir.path(), "killed", "kill -9 $$");
        let e = run(&[s], &input).0.unwrap_err();
        assert!(e.contains("killed") && e.contains("signal 9"), "{e}");

        let s = script(dir.path(), "lazy", "exit 0");
        let e = run(&[s], &input).0.unwrap_err();
        assert!(e.contains("without reading all its input"), "{e}");

        let e = run(&[Stage::CustomCompress("/nonexistent/zstd".into())], &input)
            .0
            .unwrap_err();
        assert!(e.contains("/nonexistent/zstd"), "{e}");
    }

    #[test]
    fn a_program_that_does_not_read_stops_the_input_at_the_stage_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "stuck", "sleep 30");
        let pool = GzipPool::new(NonZeroUsize::new(1).unwrap());
        let mut chain =
            ClientChain::start(&[Stage::Gzip(GzipLevel::Fast), s], &pool, None).unwrap();
        // Incompressible, so that gzip's output is as large as its input.
        let chunk = testkit::Noise::new(testkit::Noise::SEED).low_bytes(256 << 10);
        let mut fed = 0usize;
        let t0 = std::time::Instant::now();
        while t0.elapsed().as_secs() < 5 {
            if chain.has_room() {
                chain.push_input(&chunk);
                fed += chunk.len();
            } else if !chain.pump().progress {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        // The pipe (1 MiB), gzip's members in flight, and two stage buffers: nothing more.
        let held: usize = chain.stages.iter().map(|s| s.input.len()).sum();
        assert!(held <= 2 * STAGE_BUFFER + chunk.len() + (1 << 20), "{held}");
        assert!(
            fed < 64 << 20,
            "input kept flowing into a stuck program: {fed}"
        );
    }

    #[test]
    fn endless_stderr_costs_a_bounded_number_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let noisy = "head -c 3000000 /dev/urandom | od -An >&2; cat";
        let s = script(dir.path(), "noisy", noisy);
        let (out, lines) = run(&[s], b"abc");
        assert_eq!(out.unwrap(), b"abc");
        assert!(
            lines.len() <= filters::stderr::MAX_LINES + 1,
            "{}",
            lines.len()
        );
        assert!(lines.last().unwrap().contains("more lines not shown"));
    }
}
