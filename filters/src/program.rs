//! External filter programs: `client_custom_compress`, `server_custom_compress`,
//! `client_encrypt`, `server_encrypt`, and their restore counterparts, started exactly as
//! Amanda 3.5.1 starts them (spec §11.1): a compress or encrypt program with **no
//! argument**, a custom compressor's restore with `-d`, a decryption with the configured
//! decrypt option as **one** argument. Never through a shell: the configured path is what
//! `execve` runs, so it must be absolute (Amanda's documentation asks for a full path too;
//! a bare name would make the result depend on `PATH`).
//!
//! How a child starts ([`FilterCommand::spawn`]):
//! * stdin and stdout are pipes whose other ends the caller gets as [`OwnedFd`]s
//!   (blocking, close-on-exec; set `O_NONBLOCK` and register them in a mio loop), or
//!   descriptors the caller gives ([`FilterIo::Fd`]: the previous filter's stdout, a
//!   file), or /dev/null. Data pipes are asked to be 1 MiB (`F_SETPIPE_SZ`, best effort).
//! * stderr is always a pipe, for [`crate::stderr::StderrLines`].
//! * Every other descriptor of the daemon is closed at `exec`: the child marks all its
//!   descriptors from 3 up close-on-exec before `exec` (`close_range(CLOSE_RANGE_CLOEXEC)`),
//!   so not even a descriptor the daemon inherited without close-on-exec (systemd's
//!   `LISTEN_FDS`, an inetd socket) reaches a compressor.
//! * The environment is built, not inherited ([`filter_environment`]): `PATH` (a fixed
//!   system path), `HOME`, `USER` and `LOGNAME` of the user the program runs as, and `TZ` if
//!   the daemon has one; no locale variables (Amanda removes `LANG` and `LC_*` too, so
//!   messages are in plain English), nothing else. Amanda passes its own environment; ours
//!   would carry whatever inetd, systemd or a shell gave the daemon (`LD_PRELOAD`,
//!   `AMANDA_RS_*` settings, proxies, agent sockets), which a compressor has no use for and
//!   which makes a dump behave differently depending on how the daemon was started. What
//!   the Amanda user's programs do need is there: `HOME` (gpg's `~/.gnupg`, OpenSSL's
//!   `~/.rnd`, programs' `~/.config`), the user's names, and a `PATH` for the tools a
//!   script calls (amcrypt-ossl and amgpgcrypt set their own and find their files with
//!   `~backup`).
//! * Its own process group, so that aborting a dump kills a script's children too
//!   (amcrypt-ossl is `sh` running `perl | openssl`).
//!
//! A child is reaped: by [`RunningFilter::try_wait`]/[`RunningFilter::wait`] (the
//! [`RunningFilter::exit_fd`] pidfd becomes readable when it exits, for the event loop), or,
//! when a [`RunningFilter`] is dropped first (an aborted dump), by killing its process
//! group and reaping it on a short-lived thread. Exit status is a [`FilterError`] naming
//! the program: exit code N, killed by signal S, could not be started (errno).
//!
//! [`FilterCommand::run`] is the blocking convenience for simple callers (the dumper's
//! restore, tests): it feeds and drains the program on two scoped threads.
//!
//! What this module must not do: run a shell or split a command line, pass the daemon's
//! environment or descriptors, leave a zombie, hold more than a bounded amount of a
//! program's stderr, or block in the methods meant for an event loop (`spawn` forks;
//! `try_wait` does not wait).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use crate::stderr::{StderrLine, StderrLines};

/// The `PATH` filter programs get.
pub const FILTER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Size asked for the data pipes.
pub const PIPE_SIZE: i32 = 1 << 20;

/// Where a child's stdin or stdout goes.
#[derive(Debug)]
pub enum FilterIo {
    /// A new pipe; the caller gets the other end from [`RunningFilter::take_stdin`] /
    /// [`RunningFilter::take_stdout`].
    Pipe,
    /// This descriptor (moved into the child, made blocking; ours is closed after spawn).
    Fd(OwnedFd),
    /// /dev/null.
    Null,
}

/// How a filter program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitOutcome {
    fn from_status(s: ExitStatus) -> ExitOutcome {
        match (s.code(), s.signal()) {
            (Some(c), _) => ExitOutcome::Code(c),
            (None, Some(sig)) => ExitOutcome::Signal {
                signal: sig,
                core_dumped: s.core_dumped(),
            },
            // Neither: stopped/continued, which wait() does not report; treat as failure.
            (None, None) => ExitOutcome::Code(-1),
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitOutcome::Code(0)
    }

    /// `Ok` for exit code 0, else the error naming `program` (and `pid`, for Amanda-style
    /// messages such as `encrypt (29878) ... returned 1`).
    pub fn into_result(self, program: &Path, pid: u32) -> Result<(), FilterError> {
        match self {
            ExitOutcome::Code(0) => Ok(()),
            ExitOutcome::Code(code) => Err(FilterError::Exit {
                program: program.to_path_buf(),
                pid,
                code,
            }),
            ExitOutcome::Signal {
                signal,
                core_dumped,
            } => Err(FilterError::Signal {
                program: program.to_path_buf(),
                pid,
                signal,
                name: signal_name(signal),
                core_dumped,
            }),
        }
    }
}

impl std::fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitOutcome::Code(c) => write!(f, "exit code {c}"),
            ExitOutcome::Signal { signal, .. } => {
                write!(f, "killed by signal {signal} ({})", signal_name(*signal))
            }
        }
    }
}

/// `SIGKILL` for 9, etc.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// What went wrong with a filter program.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The configured program is not an absolute path.
    #[error("{}: not an absolute path (filter programs are named by their full path)", program.display())]
    NotAbsolute {
        /// The configured program.
        program: PathBuf,
    },
    /// `exec` (or the set-up before it) failed: ENOENT, EACCES, ENOEXEC...
    #[error("cannot start {}: {source}", program.display())]
    Start {
        /// The program.
        program: PathBuf,
        /// The error (`raw_os_error()` is the errno).
        #[source]
        source: io::Error,
    },
    /// It exited with a non-zero code.
    #[error("{} (pid {pid}) failed with exit code {code}", program.display())]
    Exit {
        /// The program.
        program: PathBuf,
        /// Its pid.
        pid: u32,
        /// The exit code.
        code: i32,
    },
    /// A signal killed it.
    #[error("{} (pid {pid}) was killed by signal {signal} ({name}){}", program.display(), if *core_dumped { ", core dumped" } else { "" })]
    Signal {
        /// The program.
        program: PathBuf,
        /// Its pid.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// Its name (`SIGKILL`).
        name: String,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// It exited with code 0 without reading all of its input: the output would be
    /// missing data.
    #[error("{} (pid {pid}) exited with code 0 without reading all its input ({written} bytes taken)", program.display())]
    InputNotRead {
        /// The program.
        program: PathBuf,
        /// Its pid.
        pid: u32,
        /// Bytes written to it before its stdin closed.
        written: u64,
    },
    /// Reading from or writing to it failed for another reason.
    #[error("{} (pid {pid}): {what}: {source}", program.display())]
    Io {
        /// The program.
        program: PathBuf,
        /// Its pid.
        pid: u32,
        /// What we were doing.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl FilterError {
    /// The program the error is about.
    pub fn program(&self) -> &Path {
        match self {
            FilterError::NotAbsolute { program }
            | FilterError::Start { program, .. }
            | FilterError::Exit { program, .. }
            | FilterError::Signal { program, .. }
            | FilterError::InputNotRead { program, .. }
            | FilterError::Io { program, .. } => program,
        }
    }
}

/// A filter program to start (see the module header for how).
#[derive(Debug)]
pub struct FilterCommand {
    program: PathBuf,
    args: Vec<OsString>,
    extra_env: Vec<(OsString, OsString)>,
    user: Option<(u32, u32)>,
    stdin: FilterIo,
    stdout: FilterIo,
}

impl FilterCommand {
    fn with_args(program: impl Into<PathBuf>, args: Vec<OsString>) -> FilterCommand {
        FilterCommand {
            program: program.into(),
            args,
            extra_env: Vec::new(),
            user: None,
            stdin: FilterIo::Pipe,
            stdout: FilterIo::Pipe,
        }
    }

    /// A custom compressor (`client_custom_compress`, `server_custom_compress`): no
    /// argument.
    pub fn compress(program: impl Into<PathBuf>) -> FilterCommand {
        FilterCommand::with_args(program, Vec::new())
    }

    /// A custom compressor undoing its work on restore: `-d`.
    pub fn uncompress(program: impl Into<PathBuf>) -> FilterCommand {
        FilterCommand::with_args(program, vec!["-d".into()])
    }

    /// An encryption program (`client_encrypt`, `server_encrypt`): no argument.
    pub fn encrypt(program: impl Into<PathBuf>) -> FilterCommand {
        FilterCommand::with_args(program, Vec::new())
    }

    /// An encryption program decrypting on restore: `option` (`client_decrypt_option` /
    /// `server_decrypt_option`, Amanda's default `-d`) as one argument, never split; an
    /// empty option gives no argument.
    pub fn decrypt(program: impl Into<PathBuf>, option: impl AsRef<OsStr>) -> FilterCommand {
        let o = option.as_ref();
        let args = if o.is_empty() {
            Vec::new()
        } else {
            vec![o.to_os_string()]
        };
        FilterCommand::with_args(program, args)
    }

    /// Where its stdin comes from (default: a pipe).
    pub fn stdin(mut self, io: FilterIo) -> FilterCommand {
        self.stdin = io;
        self
    }

    /// Where its stdout goes (default: a pipe).
    pub fn stdout(mut self, io: FilterIo) -> FilterCommand {
        self.stdout = io;
        self
    }

    /// One more environment variable on top of [`filter_environment`].
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> FilterCommand {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Runs it as `uid`/`gid` (needs root; supplementary groups are dropped). Default: the
    /// daemon's own user, which is the Amanda user once the daemons have dropped root.
    pub fn user(mut self, uid: u32, gid: u32) -> FilterCommand {
        self.user = Some((uid, gid));
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Its arguments (after the program name).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Starts it. Blocks only for the fork and `exec` (the error of a failed `exec`, such as
    /// ENOENT, is returned here).
    pub fn spawn(self) -> Result<RunningFilter, FilterError> {
        if !self.program.is_absolute() {
            return Err(FilterError::NotAbsolute {
                program: self.program,
            });
        }
        let start_err = |program: &Path, source| FilterError::Start {
            program: program.to_path_buf(),
            source,
        };
        let uid = self
            .user
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u);
        let mut cmd = Command::new(&self.program);
        // argv[0] is the program path, as Amanda's execve gives it.
        cmd.args(&self.args)
            .env_clear()
            .envs(filter_environment(uid).iter().map(|(k, v)| (k, v)))
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(stdio(self.stdin))
            .stdout(stdio(self.stdout))
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some((u, g)) = self.user {
            cmd.uid(u).gid(g);
        }
        let fallback_max_fd = max_fd();
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls (close_range, fcntl); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                mark_cloexec_from(3, fallback_max_fd);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| start_err(&self.program, e))?;
        drop(cmd);
        let stdin: Option<OwnedFd> = child.stdin.take().map(OwnedFd::from);
        let stdout: Option<OwnedFd> = child.stdout.take().map(OwnedFd::from);
        let stderr: Option<OwnedFd> = child.stderr.take().map(OwnedFd::from);
        for fd in stdin.iter().chain(stdout.iter()) {
            // Best effort: a smaller pipe only costs context switches.
            // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int.
            let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        }
        let pid = child.id();
        Ok(RunningFilter {
            program: self.program,
            pid,
            pidfd: pidfd_open(pid),
            child: Some(child),
            stdin,
            stdout,
            stderr,
            outcome: None,
        })
    }

    /// [`run`](Self::run) over bytes in memory: the program's output and its report.
    pub fn run_on(self, input: &[u8]) -> Result<(Vec<u8>, FilterReport), RunFailure> {
        let mut out = Vec::new();
        let mut inp = input;
        let report = self.run(&mut inp, &mut out)?;
        Ok((out, report))
    }

    /// Starts it and runs it to the end, blocking: `input` is written to its stdin (on a
    /// scoped thread), its stdout is copied to `output`, its stderr collected with the
    /// default bounds. `Ok` only when it exited 0 having read all its input.
    pub fn run(
        self,
        input: &mut (dyn Read + Send),
        output: &mut dyn Write,
    ) -> Result<FilterReport, RunFailure> {
        let program = self.program.clone();
        let mut f = self
            .stdin(FilterIo::Pipe)
            .stdout(FilterIo::Pipe)
            .spawn()
            .map_err(RunFailure::bare)?;
        let pid = f.pid();
        let stdin = f.take_stdin().map(File::from);
        let stdout = f.take_stdout().map(File::from);
        let stderr = f.take_stderr().map(File::from);
        let (fed, drained, lines) = std::thread::scope(|s| {
            let feeder = s.spawn(move || -> (u64, io::Result<()>) {
                let Some(mut w) = stdin else {
                    return (0, Ok(()));
                };
                copy_counted(input, &mut w)
            });
            let errs = s.spawn(move || stderr.map(read_stderr_lines).unwrap_or_default());
            let drained = match stdout {
                Some(mut r) => copy_counted(&mut r, output),
                None => (0, Ok(())),
            };
            let fed = feeder.join().unwrap_or((0, Ok(())));
            let lines = errs.join().unwrap_or_default();
            (fed, drained, lines)
        });
        let (stderr, stderr_dropped) = lines;
        let fail = |error| RunFailure {
            error,
            stderr: stderr.clone(),
            stderr_dropped,
        };
        let outcome = f.wait().map_err(&fail)?;
        outcome.into_result(&program, pid).map_err(&fail)?;
        if let Err(e) = drained.1 {
            return Err(fail(FilterError::Io {
                program,
                pid,
                what: "copying its output",
                source: e,
            }));
        }
        match fed.1 {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(fail(FilterError::InputNotRead {
                    program,
                    pid,
                    written: fed.0,
                }));
            }
            Err(e) => {
                return Err(fail(FilterError::Io {
                    program,
                    pid,
                    what: "writing its input",
                    source: e,
                }));
            }
        }
        Ok(FilterReport {
            outcome,
            pid,
            stderr,
            stderr_dropped,
            bytes_in: fed.0,
            bytes_out: drained.0,
        })
    }
}

/// Copies until EOF, counting what was written; stops at the first error.
/// Reads a program's stderr to its end (or to a read error) as bounded lines
/// ([`StderrLines::default`]): the lines, and how many more there were.
pub fn read_stderr_lines(mut r: impl Read) -> (Vec<StderrLine>, u64) {
    let mut lines = StderrLines::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.push(&buf[..n], &mut out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish(&mut out);
    (out, lines.dropped())
}

fn copy_counted(
    r: &mut (impl Read + ?Sized),
    w: &mut (impl Write + ?Sized),
) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let got = match r.read(&mut buf) {
            Ok(0) => return (n, Ok(())),
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (n, Err(e)),
        };
        if let Err(e) = w.write_all(&buf[..got]) {
            return (n, Err(e));
        }
        n += got as u64;
    }
}

/// A given descriptor is made blocking first: programs expect blocking stdio, and the
/// caller gave it away (a pipe end it had registered in its loop, say).
fn stdio(io: FilterIo) -> Stdio {
    match io {
        FilterIo::Pipe => Stdio::piped(),
        FilterIo::Fd(fd) => {
            if let Err(e) = set_nonblocking(fd.as_fd(), false) {
                log::warn!("cannot make a filter's descriptor blocking: {e}");
            }
            Stdio::from(fd)
        }
        FilterIo::Null => Stdio::null(),
    }
}

/// The highest descriptor number to mark when `close_range` is missing (kernels before
/// 5.11): the soft `RLIMIT_NOFILE`, capped.
fn max_fd() -> i32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0;
    if ok && rl.rlim_cur != libc::RLIM_INFINITY {
        i32::try_from(rl.rlim_cur).unwrap_or(65536).min(65536)
    } else {
        65536
    }
}

/// Marks every descriptor from `first` up close-on-exec. Async-signal-safe (runs between
/// fork and exec).
fn mark_cloexec_from(first: i32, fallback_max: i32) {
    // SAFETY: raw system calls on descriptor numbers; no memory is touched.
    unsafe {
        let r = libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
        if r == 0 {
            return;
        }
        for fd in first..fallback_max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (close-on-exec)
    // or -1. The child is not reaped yet, so the pid cannot name another process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

type EnvList = Arc<Vec<(OsString, OsString)>>;

static ENVIRONMENTS: Mutex<Option<HashMap<u32, EnvList>>> = Mutex::new(None);

/// The environment of a filter program running as `uid` (see the module header): `PATH`,
/// `HOME`, `USER`, `LOGNAME`, and `TZ` when the daemon has it. Looked up once per uid.
pub fn filter_environment(uid: u32) -> EnvList {
    let mut cache = ENVIRONMENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = cache.get_or_insert_with(HashMap::new).get(&uid) {
        return e.clone();
    }
    let mut env: Vec<(OsString, OsString)> = vec![("PATH".into(), FILTER_PATH.into())];
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        env.push(("HOME".into(), u.dir.into_os_string()));
        env.push(("USER".into(), u.name.clone().into()));
        env.push(("LOGNAME".into(), u.name.into()));
    }
    if let Some(tz) = std::env::var_os("TZ") {
        env.push(("TZ".into(), tz));
    }
    let env = Arc::new(env);
    cache
        .get_or_insert_with(HashMap::new)
        .insert(uid, env.clone());
    env
}

/// A started filter program.
#[derive(Debug)]
pub struct RunningFilter {
    program: PathBuf,
    pid: u32,
    pidfd: Option<OwnedFd>,
    child: Option<Child>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    outcome: Option<ExitOutcome>,
}

impl RunningFilter {
    /// Its pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The write end of its stdin (with [`FilterIo::Pipe`]): close it (drop) at the end
    /// of the input. Blocking and close-on-exec; the caller sets `O_NONBLOCK` for a loop
    /// ([`set_nonblocking`]). A write that fails with EPIPE means the program closed its
    /// input: if it then exits 0, that is [`FilterError::InputNotRead`].
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }

    /// The read end of its stdout (with [`FilterIo::Pipe`]).
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// The read end of its stderr, for [`StderrLines`].
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// A pidfd that becomes readable when the program exits (register it in the loop,
    /// then call [`try_wait`](Self::try_wait)). `None` on kernels without `pidfd_open`
    /// (before 5.3): poll `try_wait` on a timer then.
    pub fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Reaps it if it has exited; never blocks.
    pub fn try_wait(&mut self) -> Result<Option<ExitOutcome>, FilterError> {
        if let Some(o) = self.outcome {
            return Ok(Some(o));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(s)) => {
                let o = ExitOutcome::from_status(s);
                self.outcome = Some(o);
                Ok(Some(o))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(FilterError::Io {
                program: self.program.clone(),
                pid: self.pid,
                what: "waiting for it",
                source: e,
            }),
        }
    }

    /// Waits for it to exit and reaps it (blocking: not for an event loop).
    pub fn wait(&mut self) -> Result<ExitOutcome, FilterError> {
        if let Some(o) = self.outcome {
            return Ok(o);
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(ExitOutcome::Code(-1));
        };
        // Our ends of its pipes must not keep it waiting for us.
        self.stdin = None;
        match child.wait() {
            Ok(s) => {
                let o = ExitOutcome::from_status(s);
                self.outcome = Some(o);
                Ok(o)
            }
            Err(e) => Err(FilterError::Io {
                program: self.program.clone(),
                pid: self.pid,
                what: "waiting for it",
                source: e,
            }),
        }
    }

    /// How it ended, once reaped.
    pub fn outcome(&self) -> Option<ExitOutcome> {
        self.outcome
    }

    /// `Ok` if it was reaped with exit code 0; the error naming it otherwise (and
    /// [`FilterError::Exit`] with code -1 if it has not been reaped).
    pub fn check(&self) -> Result<(), FilterError> {
        self.outcome
            .unwrap_or(ExitOutcome::Code(-1))
            .into_result(&self.program, self.pid)
    }

    /// Sends SIGKILL to its process group (the program and anything it started), unless
    /// it has been reaped.
    pub fn kill(&mut self) {
        if self.outcome.is_none()
            && let Ok(pgid) = libc::pid_t::try_from(self.pid)
        {
            // SAFETY: kill with a negative pid signals the process group we created; the
            // group leader is not reaped, so the id is still ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for RunningFilter {
    /// An unreaped program is an aborted one: kill its group and reap it, on a thread if
    /// it does not die at once.
    fn drop(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        self.kill();
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            let reaper = std::thread::Builder::new()
                .name("filter-reaper".into())
                .spawn(move || {
                    let _ = child.wait();
                });
            if let Err(e) = reaper {
                log::warn!(
                    "cannot start a thread to reap {}: {e}",
                    self.program.display()
                );
            }
        }
    }
}

/// Sets or clears `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller borrows.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if new != flags && unsafe { libc::fcntl(raw, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A program that ran to the end successfully ([`FilterCommand::run`]).
#[derive(Debug, Clone)]
pub struct FilterReport {
    /// Always `Code(0)`.
    pub outcome: ExitOutcome,
    /// Its pid.
    pub pid: u32,
    /// What it wrote to stderr (bounded).
    pub stderr: Vec<StderrLine>,
    /// stderr lines past the bound.
    pub stderr_dropped: u64,
    /// Bytes written to its stdin.
    pub bytes_in: u64,
    /// Bytes read from its stdout.
    pub bytes_out: u64,
}

/// A [`FilterCommand::run`] that failed: the error, and what the program said on stderr.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: FilterError,
    /// Its stderr lines (bounded).
    pub stderr: Vec<StderrLine>,
    /// stderr lines past the bound.
    pub stderr_dropped: u64,
}

impl RunFailure {
    fn bare(error: FilterError) -> RunFailure {
        RunFailure {
            error,
            stderr: Vec::new(),
            stderr_dropped: 0,
        }
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(last) = self.stderr.last() {
            write!(f, " (its last stderr line: {})", last.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for RunFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A script in a fresh directory (the directory lives as long as the returned guard).
    fn script(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = testkit::script(dir.path(), "prog", body);
        (dir, p)
    }

    fn run(cmd: FilterCommand, input: &[u8]) -> Result<(Vec<u8>, FilterReport), RunFailure> {
        cmd.run_on(input)
    }

    #[test]
    fn compress_and_encrypt_programs_get_no_argument_and_restores_get_theirs() {
        assert!(FilterCommand::compress("/usr/bin/zstd").args().is_empty());
        assert!(
            FilterCommand::encrypt("/usr/sbin/amcrypt-ossl")
                .args()
                .is_empty()
        );
        assert_eq!(FilterCommand::uncompress("/usr/bin/zstd").args(), ["-d"]);
        assert_eq!(
            FilterCommand::decrypt("/usr/sbin/amcrypt-ossl", "-d").args(),
            ["-d"]
        );
        assert!(FilterCommand::decrypt("/x", "").args().is_empty());
        // The option is one argument, never split or interpreted by a shell.
        let (out, _) = run(
            FilterCommand::decrypt("/usr/bin/printf", "[%s] $HOME x;y"),
            b"",
        )
        .unwrap();
        assert_eq!(out, b"[] $HOME x;y");
    }

    #[test]
    fn data_passes_through_and_counts() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (out, r) = run(FilterCommand::compress("/bin/cat"), &data).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            (r.bytes_in, r.bytes_out),
            (data.len() as u64, data.len() as u64)
        );
        assert!(r.stderr.is_empty());
    }

    #[test]
    fn a_missing_program_is_a_start_error_with_enoent() {
        let e = FilterCommand::compress("/nonexistent/zstd")
            .spawn()
            .unwrap_err();
        match &e {
            FilterError::Start { program, source } => {
                assert_eq!(program, Path::new("/nonexistent/zstd"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("cannot start /nonexistent/zstd: No such file")
        );
        let (_d, p) = script("exit 0");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = FilterCommand::compress(&p).spawn().unwrap_err();
        assert!(
            matches!(&e, FilterError::Start { source, .. } if source.raw_os_error() == Some(libc::EACCES)),
            "{e:?}"
        );
    }

    #[test]
    fn a_relative_program_is_refused() {
        let e = FilterCommand::compress("zstd").spawn().unwrap_err();
        assert!(matches!(e, FilterError::NotAbsolute { .. }), "{e:?}");
    }

    #[test]
    fn exit_1_is_an_exit_error_with_its_stderr() {
        let (_d, p) = script("cat >/dev/null; echo 'zstd: no space left' >&2; exit 1");
        let f = run(FilterCommand::compress(&p), b"abc").unwrap_err();
        assert!(
            matches!(&f.error, FilterError::Exit { code: 1, program, .. } if program == &p),
            "{:?}",
            f.error
        );
        assert_eq!(f.stderr[0].text, "zstd: no space left");
        assert!(f.to_string().contains("failed with exit code 1"), "{f}");
    }

    #[test]
    fn a_killed_program_is_a_signal_error() {
        let (_d, p) = script("kill -9 $$");
        let f = run(FilterCommand::encrypt(&p), b"").unwrap_err();
        match &f.error {
            FilterError::Signal { signal, name, .. } => {
                assert_eq!((*signal, name.as_str()), (9, "SIGKILL"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            f.to_string().contains("killed by signal 9 (SIGKILL)"),
            "{f}"
        );
    }

    #[test]
    fn a_program_that_exits_0_without_reading_its_input_fails() {
        let (_d, p) = script("exit 0");
        let f = run(FilterCommand::compress(&p), &vec![7u8; 8 << 20]).unwrap_err();
        assert!(
            matches!(f.error, FilterError::InputNotRead { .. }),
            "{:?}",
            f.error
        );
    }

    #[test]
    fn endless_stderr_is_bounded_in_lines_and_line_length() {
        // One 20 MB line, then 200000 short ones.
        let (_d, p) =
            script("head -c 20000000 /dev/zero | tr '\\0' e >&2; echo >&2; seq 1 200000 >&2; cat");
        let (out, r) = run(FilterCommand::compress(&p), b"payload").unwrap();
        assert_eq!(out, b"payload");
        assert_eq!(r.stderr.len(), crate::stderr::MAX_LINES);
        assert!(r.stderr[0].truncated);
        assert_eq!(r.stderr[0].text.len(), crate::stderr::MAX_LINE_BYTES);
        assert_eq!(r.stderr[1].text, "1");
        assert_eq!(
            r.stderr_dropped,
            200_000 + 1 - crate::stderr::MAX_LINES as u64
        );
    }

    #[test]
    fn children_inherit_no_descriptor_beyond_stdio() {
        // A descriptor without close-on-exec, as an inherited socket would be.
        let f = File::open("/dev/null").unwrap();
        // SAFETY: dup of a descriptor we own; the copy is closed below.
        let leaky = unsafe { libc::dup(f.as_raw_fd()) };
        assert!(leaky > 2);
        let (out, _) = run(FilterCommand::decrypt("/bin/ls", "/proc/self/fd"), b"").unwrap();
        // SAFETY: closing the descriptor we made.
        unsafe { libc::close(leaky) };
        let fds: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        // 0-2, and the directory ls itself opened.
        assert!(fds.len() <= 4, "the child had {fds:?}");
        assert!(
            !fds.contains(&leaky.to_string()),
            "fd {leaky} leaked: {fds:?}"
        );
    }

    #[test]
    fn the_environment_is_built_not_inherited() {
        let (out, _) = run(FilterCommand::compress("/usr/bin/env"), b"").unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut keys: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        keys.sort_unstable();
        keys.retain(|k| *k != "TZ");
        assert_eq!(keys, ["HOME", "LOGNAME", "PATH", "USER"], "{text}");
        assert!(text.contains(&format!("PATH={FILTER_PATH}\n")));
        let (out, _) = run(
            FilterCommand::compress("/usr/bin/env").env("GNUPGHOME", "/x"),
            b"",
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("GNUPGHOME=/x\n"));
    }

    #[test]
    fn a_program_runs_as_the_user_it_is_given_with_that_users_home() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "needs root under CI"
            );
            eprintln!("*** SKIPPED: needs root ***");
            return;
        }
        let backup = nix::unistd::User::from_name("backup")
            .unwrap()
            .expect("user backup");
        let cmd =
            FilterCommand::compress("/usr/bin/env").user(backup.uid.as_raw(), backup.gid.as_raw());
        let (out, _) = run(cmd, b"").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!("HOME={}\n", backup.dir.display())),
            "{text}"
        );
        assert!(text.contains("USER=backup\n"), "{text}");
        let (out, _) = run(
            FilterCommand::decrypt("/usr/bin/id", "-u")
                .user(backup.uid.as_raw(), backup.gid.as_raw()),
            b"",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().trim(),
            backup.uid.to_string()
        );
    }

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; its state is Z.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    fn gone(pid: u32) -> bool {
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn dropping_a_running_filter_kills_its_process_group_and_reaps_it() {
        // The script starts a grandchild and waits; both must go.
        let (_d, p) = script("sleep 60 & echo $!; wait");
        let mut f = FilterCommand::compress(&p).spawn().unwrap();
        let pid = f.pid();
        let mut out = File::from(f.take_stdout().unwrap());
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let grandchild: u32 = String::from_utf8(line).unwrap().parse().unwrap();
        assert!(alive(pid) && alive(grandchild));
        drop(f);
        assert!(gone(pid), "the program was not reaped");
        for _ in 0..200 {
            if !alive(grandchild) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(grandchild), "its child survived");
    }

    #[test]
    fn the_exit_fd_becomes_readable_when_the_program_exits() {
        let mut f = FilterCommand::decrypt("/bin/sleep", "0.2").spawn().unwrap();
        assert_eq!(f.try_wait().unwrap(), None);
        let fd = f.exit_fd().expect("pidfd (Linux 5.3+)").as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(n, 1);
        assert_eq!(f.try_wait().unwrap(), Some(ExitOutcome::Code(0)));
        assert!(f.check().is_ok());
        assert!(gone(f.pid()));
    }

    /// The way an event loop uses it: non-blocking pipes, poll, partial writes, the pidfd.
    #[test]
    fn a_poll_loop_drives_a_filter_without_blocking() {
        let mut f = FilterCommand::compress("/bin/cat").spawn().unwrap();
        let stdin = f.take_stdin().unwrap();
        let stdout = f.take_stdout().unwrap();
        let stderr = f.take_stderr().unwrap();
        for fd in [&stdin, &stdout, &stderr] {
            set_nonblocking(fd.as_fd(), true).unwrap();
        }
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut stdin = Some(File::from(stdin));
        let mut stdout = Some(File::from(stdout));
        let mut stderr = Some(File::from(stderr));
        let (mut sent, mut got) = (0usize, Vec::new());
        let mut buf = vec![0u8; 65536];
        while stdout.is_some() || stderr.is_some() {
            let mut fds = Vec::new();
            if let Some(w) = &stdin {
                fds.push(libc::pollfd {
                    fd: w.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
            for r in [&stdout, &stderr].into_iter().flatten() {
                fds.push(libc::pollfd {
                    fd: r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: the pollfd array is valid for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5000) };
            assert!(n > 0, "the loop stalled");
            if let Some(w) = stdin.as_mut() {
                match w.write(&data[sent..]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                if sent == data.len() {
                    stdin = None;
                }
            }
            if let Some(r) = stdout.as_mut() {
                match r.read(&mut buf) {
                    Ok(0) => stdout = None,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(r) = stderr.as_mut() {
                match r.read(&mut buf) {
                    Ok(0) => stderr = None,
                    Ok(_) => panic!("cat wrote to stderr"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(got, data);
        assert_eq!(f.wait().unwrap(), ExitOutcome::Code(0));
    }
}
