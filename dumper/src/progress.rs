//! What a run shows while it runs, on standard error.
//!
//! On a terminal: one line per worker (DLE, bytes so far, rate), redrawn a few times per
//! second, with event lines (started, done, failed, waiting for a port) scrolling above.
//! Not on a terminal (cron): only the event lines, one per event, with a time stamp, so a
//! log stays readable. What this module must not do: decide anything.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dump::{DumpReport, Progress};

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn worker lines (a terminal).
    Tty,
    /// Event lines only.
    Plain,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// `Tty` when standard error is a terminal, else `Plain`.
    pub fn detect() -> Mode {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

struct Slot {
    label: String,
    started: Instant,
}

/// The display.
pub struct View {
    mode: Mode,
    workers: Vec<Arc<Progress>>,
    slots: Vec<Option<Slot>>,
    drawn: usize,
    t0: Instant,
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

impl View {
    /// A view over the workers' counters.
    pub fn new(mode: Mode, workers: Vec<Arc<Progress>>) -> View {
        let n = workers.len();
        View {
            mode,
            workers,
            slots: (0..n).map(|_| None).collect(),
            drawn: 0,
            t0: Instant::now(),
        }
    }

    fn clear(&mut self, err: &mut impl Write) {
        if self.mode == Mode::Tty && self.drawn > 0 {
            // Up and clear each line we drew.
            for _ in 0..self.drawn {
                let _ = write!(err, "\x1b[1A\x1b[2K");
            }
            self.drawn = 0;
        }
    }

    fn draw(&mut self, err: &mut impl Write) {
        if self.mode != Mode::Tty {
            return;
        }
        let mut n = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let bytes = self
                .workers
                .get(i)
                .map_or(0, |p| p.bytes.load(Ordering::Relaxed));
            let secs = s.started.elapsed().as_secs_f64().max(0.001);
            let _ = writeln!(
                err,
                "  worker {i:>2}: {:<50} {:>11} {:>9.1} MiB/s",
                s.label.chars().take(50).collect::<String>(),
                human(bytes),
                bytes as f64 / 1024.0 / 1024.0 / secs
            );
            n += 1;
        }
        self.drawn = n;
        let _ = err.flush();
    }

    /// An event line.
    pub fn event(&mut self, line: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
        let t = self.t0.elapsed().as_secs();
        let _ = writeln!(
            err,
            "[{:02}:{:02}:{:02}] {line}",
            t / 3600,
            (t / 60) % 60,
            t % 60
        );
        self.draw(&mut err);
    }

    /// A dump started on `worker`.
    pub fn started(&mut self, worker: usize, label: String) {
        if let Some(s) = self.slots.get_mut(worker) {
            *s = Some(Slot {
                label,
                started: Instant::now(),
            });
        }
    }

    /// The dump on `worker` ended.
    pub fn ended(&mut self, worker: usize) {
        if let Some(s) = self.slots.get_mut(worker) {
            *s = None;
        }
    }

    /// An estimate group is asked.
    pub fn estimating(&mut self, host: &str, dles: usize, auth: proto::Auth, port: u16) {
        self.event(&format!(
            "estimate {host} ({dles} DLE(s), auth {auth}, port {port})"
        ));
    }

    /// A dump of `label` starts on `worker` (`attempt` 1 is the first; `why` is the level's
    /// reason).
    pub fn dump_started(
        &mut self,
        worker: usize,
        label: &str,
        level: i32,
        attempt: u32,
        why: &str,
    ) {
        let retry = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        self.event(&format!(
            "dumping {label} level {level} on worker {worker}{retry}: {why}"
        ));
        self.started(worker, format!("{label} lvl {level}"));
    }

    /// The dump on `worker` ended as `report` says.
    pub fn dump_ended(&mut self, worker: usize, label: &str, report: &DumpReport) {
        self.ended(worker);
        match &report.failure {
            None => {
                let secs = report.duration.as_secs_f64();
                let rate = if secs > 0.0 {
                    report.bytes as f64 / 1024.0 / 1024.0 / secs
                } else {
                    0.0
                };
                self.event(&format!(
                    "{} {label}: {} bytes in {secs:.1}s ({rate:.1} MiB/s)",
                    report.status, report.bytes
                ));
            }
            Some(f) => self.failed(label, &f.report_text()),
        }
    }

    /// `label` failed for good without (another) dump attempt.
    pub fn failed(&mut self, label: &str, reason: &str) {
        self.event(&format!("FAILED {label}: {reason}"));
    }

    /// A dump of `label` waits for a port of `pool`.
    pub fn port_wait(&mut self, label: &str, pool: &str, reason: &str) {
        self.event(&format!("{label} waits for a {pool} port: {reason}"));
    }

    /// It got its port after `waited`.
    pub fn port_granted(&mut self, label: &str, pool: &str, waited: Duration) {
        self.event(&format!(
            "{label} got its {pool} port after {:.1}s",
            waited.as_secs_f64()
        ));
    }

    /// Redraws the worker lines (terminal only).
    pub fn tick(&mut self) {
        if self.mode != Mode::Tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
        self.draw(&mut err);
    }

    /// Removes the worker lines before the report is printed.
    pub fn finish(&mut self) {
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
        let _ = err.flush();
    }
}
