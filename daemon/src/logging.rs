//! Where amandad's log records go: a file (appended, one line per record) or syslog.
//!
//! Under a superserver file descriptors 0-2 are the network socket, so nothing may ever be
//! written to stdout or stderr there: a stray line on a bsdtcp connection corrupts the
//! framing the server reads. [`init`] therefore refuses `stderr` when it is a socket and falls
//! back to syslog when the log file cannot be opened.
//!
//! The file is bounded and rotatable without signals (inetd starts a process per request;
//! nobody can signal them all): at most once a second, and on SIGHUP, the sink checks that
//! the path still names the file it writes to and reopens it when logrotate renamed or
//! removed it; when the file passes `[log] max_bytes` the sink renames it to `<file>.1`
//! itself (under a lock, so concurrent amandad processes rotate once).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Append to this file.
    File(PathBuf),
    /// The system log (facility daemon).
    Syslog,
    /// Standard error; refused when it is a socket (under a superserver).
    Stderr,
}

/// The default log file (the Amanda user can write /var/log/amanda/amandad on Debian).
pub const DEFAULT_LOG_FILE: &str = "/var/log/amanda/amandad/amandad-rs.log";

/// Installs the logger. `filter` comes from `AMANDA_RS_LOG` or the settings' `[log] level`
/// (a level, or env_logger directives such as `warn,amandad::server=debug`; anything else
/// means `info`), `max_bytes` bounds the log file (0: no bound). Returns a note for the
/// caller to log once the logger runs (e.g. why it fell back to syslog).
pub fn init(target: Option<&LogTarget>, filter: &str, max_bytes: u64) -> Option<String> {
    let (filter, mut note) = parse_filter(filter);
    let sink = match target {
        Some(LogTarget::Syslog) => Sink::Syslog,
        Some(LogTarget::Stderr) if fd_is_socket(2) => {
            note =
                Some("--log stderr refused: stderr is a socket (superserver); using syslog".into());
            Sink::Syslog
        }
        Some(LogTarget::Stderr) => Sink::Stderr,
        Some(LogTarget::File(path)) => open_or_syslog(path, max_bytes, &mut note),
        None => open_or_syslog(Path::new(DEFAULT_LOG_FILE), max_bytes, &mut note),
    };
    if matches!(sink, Sink::File(_)) {
        install_sighup();
    }
    if matches!(sink, Sink::Syslog) {
        let ident = match program_name() {
            "amandad" => "amandad-rs",
            other => other,
        };
        let ident = CString::new(ident).unwrap_or_default();
        // openlog keeps the pointer: leak the ident for the life of the process.
        let ident = Box::leak(Box::new(ident));
        // SAFETY: ident is a valid NUL-terminated string that lives forever.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    let max_level = filter.filter();
    let logger = Logger {
        sink: Mutex::new(sink),
        pid: std::process::id(),
        filter,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max_level);
    }
    note
}

/// The filter of `spec` (see [`conf::settings::is_log_filter`]), or `info` and a note saying
/// why when it is not one.
fn parse_filter(spec: &str) -> (env_filter::Filter, Option<String>) {
    let mut builder = env_filter::Builder::new();
    if conf::settings::is_log_filter(spec) && builder.try_parse(spec).is_ok() {
        return (builder.build(), None);
    }
    let info = env_filter::Builder::new()
        .filter_level(LevelFilter::Info)
        .build();
    let note = format!("log filter {spec:?} not understood; logging at info");
    (info, Some(note))
}

fn open_or_syslog(path: &Path, max_bytes: u64, note: &mut Option<String>) -> Sink {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match FileSink::open(path, max_bytes, CHECK_INTERVAL) {
        Ok(f) => Sink::File(f),
        Err(e) => {
            *note = Some(format!(
                "cannot open log file {}: {e}; using syslog",
                path.display()
            ));
            Sink::Syslog
        }
    }
}

/// The program's name in log lines and as the syslog ident: `amandad`, or `dumper` when
/// `dumper listen` uses this logger (issue 14).
fn program_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n == "dumper")
            .unwrap_or_else(|| "amandad".to_owned())
    })
}

/// True if `fd` is a socket.
pub fn fd_is_socket(fd: i32) -> bool {
    // SAFETY: fstat writes into a zeroed stat we own; a bad fd only yields an error.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// How often the file sink looks at its path.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Set by SIGHUP: reopen the log file at the next record.
static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

/// SIGHUP reopens the log file (standalone daemons under logrotate's `postrotate`).
fn install_sighup() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_sighup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGHUP, &action) };
}

/// An append-only log file that follows its path (reopened after a rename or removal) and
/// rotates itself to `<path>.1` past `max_bytes`.
pub struct FileSink {
    path: PathBuf,
    file: File,
    /// Device and inode of `file`.
    id: (u64, u64),
    /// Bytes in the file as of the last look, plus what we wrote since.
    size: u64,
    max_bytes: u64,
    interval: Duration,
    last_check: Instant,
}

impl FileSink {
    /// Opens (creates) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, interval: Duration) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let md = file.metadata()?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
            id: (md.dev(), md.ino()),
            size: md.len(),
            max_bytes,
            interval,
            last_check: Instant::now(),
        })
    }

    /// Appends one line (one write, so concurrent processes do not interleave within it).
    pub fn write_line(&mut self, line: &[u8]) {
        let now = Instant::now();
        if REOPEN.swap(false, Ordering::Relaxed)
            || now.saturating_duration_since(self.last_check) >= self.interval
        {
            self.last_check = now;
            self.follow_path();
        }
        if self.max_bytes > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
        }
    }

    /// Reopens the file if the path names another file now (or none).
    pub fn follow_path(&mut self) {
        match std::fs::metadata(&self.path) {
            Ok(md) if (md.dev(), md.ino()) == self.id => self.size = md.len(),
            _ => self.reopen(),
        }
    }

    fn reopen(&mut self) {
        if let Ok(fresh) = FileSink::open(&self.path, self.max_bytes, self.interval) {
            self.file = fresh.file;
            self.id = fresh.id;
            self.size = fresh.size;
        }
    }

    /// Renames the file to `<path>.1` and starts a new one. The lock and the inode check
    /// make concurrent processes rotate once: the others find a new file at the path.
    fn rotate(&mut self) {
        let fd = self.file.as_raw_fd();
        // SAFETY: flock on a descriptor we own; it is released below or when the file closes.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return;
        }
        let still_ours =
            std::fs::metadata(&self.path).is_ok_and(|md| (md.dev(), md.ino()) == self.id);
        if still_ours {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, &old);
        }
        // SAFETY: as above.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        self.reopen();
    }
}

enum Sink {
    File(FileSink),
    Syslog,
    Stderr,
}

struct Logger {
    sink: Mutex<Sink>,
    pid: u32,
    filter: env_filter::Filter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::File(f) => {
                // One write per record so concurrent amandad processes (one per inetd
                // connection) do not interleave within a line.
                let line = format!(
                    "{} {}[{}] {:5} {}\n",
                    timestamp(),
                    program_name(),
                    self.pid,
                    record.level(),
                    record.args()
                );
                f.write_line(line.as_bytes());
            }
            Sink::Stderr => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{} {:5} {}",
                    timestamp(),
                    record.level(),
                    record.args()
                );
            }
            Sink::Syslog => {
                let prio = match record.level() {
                    Level::Error => libc::LOG_ERR,
                    Level::Warn => libc::LOG_WARNING,
                    Level::Info => libc::LOG_INFO,
                    Level::Debug | Level::Trace => libc::LOG_DEBUG,
                };
                let text =
                    CString::new(record.args().to_string().replace('\0', " ")).unwrap_or_default();
                // SAFETY: "%s" and text are valid NUL-terminated strings.
                unsafe { libc::syslog(prio, c"%s".as_ptr(), text.as_ptr()) };
            }
        }
    }

    fn flush(&self) {
        if let Sink::File(f) = &mut *self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = f.file.flush();
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss.mmm` in UTC.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    proto::civil::log_stamp(now.as_secs() as i64, now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: one log-level convention. `AMANDA_RS_LOG` (or `[log] level`) is a level or
    /// env_logger's `target=level` directives; anything else logs at info, with a note.
    #[test]
    fn log_filter_directives_pick_the_modules_that_log_at_debug() {
        let at = |filter: &env_filter::Filter, target: &str, level: Level| {
            filter.enabled(&Metadata::builder().target(target).level(level).build())
        };
        let (f, note) = parse_filter("warn,amandad::server=debug");
        assert_eq!(note, None);
        assert!(at(&f, "amandad::server::dump", Level::Debug));
        assert!(!at(&f, "amandad::server", Level::Trace));
        assert!(
            !at(&f, "amandad", Level::Info),
            "the binary's own lines stay at warn"
        );
        assert!(at(&f, "amandad::resolve", Level::Warn));
        let (f, note) = parse_filter("debug");
        assert_eq!((f.filter(), note), (LevelFilter::Debug, None));
        for bad in ["verbose", "amandad=loud", ""] {
            let (f, note) = parse_filter(bad);
            assert_eq!(f.filter(), LevelFilter::Info, "{bad:?}");
            assert!(
                note.is_some_and(|n| n.contains("not understood")),
                "{bad:?}"
            );
        }
    }

    /// A sink writing `name` in a fresh directory: (the directory, the path, the sink).
    fn sink_in_tempdir(
        name: &str,
        max_bytes: u64,
        interval: Duration,
    ) -> (tempfile::TempDir, PathBuf, FileSink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let sink = FileSink::open(&path, max_bytes, interval).unwrap();
        (dir, path, sink)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Issue 10: the log had no bound and could not be rotated under inetd. A renamed or
    /// removed file is noticed and a new one started at the path.
    #[test]
    fn the_sink_reopens_its_path_after_logrotate_renamed_or_removed_the_file() {
        let (dir, path, mut sink) = sink_in_tempdir("amandad-rs.log", 0, Duration::ZERO);
        sink.write_line(b"one\n");
        std::fs::rename(&path, dir.path().join("amandad-rs.log.1")).unwrap();
        sink.write_line(b"two\n");
        assert_eq!(lines(&path), ["two"]);
        assert_eq!(lines(&dir.path().join("amandad-rs.log.1")), ["one"]);
        std::fs::remove_file(&path).unwrap();
        sink.write_line(b"three\n");
        assert_eq!(lines(&path), ["three"]);
    }

    #[test]
    fn sighup_reopens_at_once_between_periodic_checks() {
        let (dir, path, mut sink) = sink_in_tempdir("a.log", 0, Duration::from_secs(3600));
        sink.write_line(b"before\n");
        std::fs::rename(&path, dir.path().join("a.log.old")).unwrap();
        sink.write_line(b"still the old file\n");
        assert!(!path.exists());
        REOPEN.store(true, Ordering::Relaxed);
        sink.write_line(b"after\n");
        assert_eq!(lines(&path), ["after"]);
    }

    #[test]
    fn past_max_bytes_the_file_becomes_dot_1_and_a_new_one_starts() {
        let (dir, path, mut sink) = sink_in_tempdir("b.log", 1000, Duration::from_secs(3600));
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..25 {
            sink.write_line(&line);
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 1000, "{}", size(&path));
        assert_eq!(size(&dir.path().join("b.log.1")), 1000);
        assert!(!dir.path().join("b.log.2").exists(), "one old file only");
        // Two writers (inetd children) share the file: each sees the other's rotation, and
        // the bound holds within what one of them writes between its looks at the path.
        let mut other = FileSink::open(&path, 1000, Duration::ZERO).unwrap();
        for _ in 0..100 {
            other.write_line(&line);
            sink.write_line(&line);
        }
        assert!(size(&path) <= 2000, "{}", size(&path));
        assert!(size(&dir.path().join("b.log.1")) <= 2000);
        assert!(!dir.path().join("b.log.2").exists());
    }
}
