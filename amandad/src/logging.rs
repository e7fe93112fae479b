//! Where amandad's log records go: a file (appended, one line per record) or syslog.
//!
//! Under a superserver file descriptors 0-2 are the network socket, so nothing may ever be
//! written to stdout or stderr there: a stray line on a bsdtcp connection corrupts the
//! framing the server reads. [`init`] therefore refuses `stderr` when it is a socket and falls
//! back to syslog when the log file cannot be opened.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::args::LogTarget;

/// The default log file (the Amanda user can write /var/log/amanda/amandad on Debian).
pub const DEFAULT_LOG_FILE: &str = "/var/log/amanda/amandad/amandad-rs.log";

/// Installs the logger. `level` comes from the settings (or `AMANDA_RS_LOG`). Returns a
/// note for the caller to log once the logger runs (e.g. why it fell back to syslog).
pub fn init(target: Option<&LogTarget>, level: LevelFilter) -> Option<String> {
    let mut note = None;
    let sink = match target {
        Some(LogTarget::Syslog) => Sink::Syslog,
        Some(LogTarget::Stderr) if fd_is_socket(2) => {
            note =
                Some("--log stderr refused: stderr is a socket (superserver); using syslog".into());
            Sink::Syslog
        }
        Some(LogTarget::Stderr) => Sink::Stderr,
        Some(LogTarget::File(path)) => open_or_syslog(path, &mut note),
        None => open_or_syslog(Path::new(DEFAULT_LOG_FILE), &mut note),
    };
    if matches!(sink, Sink::Syslog) {
        let ident = CString::new("amandad-rs").unwrap_or_default();
        // openlog keeps the pointer: leak the ident for the life of the process.
        let ident = Box::leak(Box::new(ident));
        // SAFETY: ident is a valid NUL-terminated string that lives forever.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    let logger = Logger {
        sink: Mutex::new(sink),
        pid: std::process::id(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    note
}

fn open_or_syslog(path: &Path, note: &mut Option<String>) -> Sink {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(path) {
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

/// True if `fd` is a socket.
pub fn fd_is_socket(fd: i32) -> bool {
    // SAFETY: fstat writes into a zeroed stat we own; a bad fd only yields an error.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

enum Sink {
    File(File),
    Syslog,
    Stderr,
}

struct Logger {
    sink: Mutex<Sink>,
    pid: u32,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::File(f) => {
                // One write per record so concurrent amandad processes (one per inetd
                // connection) do not interleave within a line.
                let line = format!(
                    "{} amandad[{}] {:5} {}\n",
                    timestamp(),
                    self.pid,
                    record.level(),
                    record.args()
                );
                let _ = f.write_all(line.as_bytes());
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
            let _ = f.flush();
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss.mmm` in UTC.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_724), (2024, 1, 2));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
