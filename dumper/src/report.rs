//! The report of a run, after amreport, and its exit status, after amdump.
//!
//! Sections: a header (config, date, holding disks), `FAILURE DUMP SUMMARY` and
//! `STRANGE DUMP SUMMARY` (one line per DLE), `WAITS` (which dumps waited, how long, and
//! why: ports, workers, maxdumps, netusage), `NOTES` (every warning), `STATISTICS`
//! (totals), `DUMP SUMMARY` (one line per DLE: level, original and output size, time, rate,
//! wait), and the MESG details of failed and strange dumps.
//!
//! Exit status, as amdump(8) documents it, ORed: 0 success, 1 error (the run itself had a
//! problem), 2 a DLE gave a strange message, 4 a DLE failed, 8 the status of a DLE is
//! unknown (never finished), 16 a dump could not be written to a volume (the taper; it
//! stays on the holding disk).
//!
//! What this module must not do: compute results (it renders them).

use std::fmt::Write as _;
use std::time::Duration;

/// The exit status bits.
pub mod exit {
    /// The run itself had an error.
    pub const ERROR: i32 = 1;
    /// A DLE gave a strange message.
    pub const STRANGE: i32 = 2;
    /// A DLE failed.
    pub const FAILED: i32 = 4;
    /// A DLE's status is unknown.
    pub const MISSING: i32 = 8;
    /// A dump could not be written to a volume (amdump's tape bit).
    pub const TAPE: i32 = 16;
}

/// A DLE's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dumped.
    Done,
    /// Dumped, with notes.
    Strange,
    /// Not dumped.
    Failed,
    /// Deliberately not dumped tonight (skip-full, skip-incr).
    Skipped,
    /// Never finished (the run was interrupted).
    Missing,
}

/// A wait, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitLine {
    /// `workers`, `maxdumps`, `netusage`, or a port pool such as `udp 850-859`.
    pub what: String,
    /// Why.
    pub reason: String,
    /// How long.
    pub waited: Duration,
}

/// One DLE's line.
#[derive(Clone, Debug)]
pub struct DleLine {
    /// Host.
    pub host: String,
    /// Disk (lossy).
    pub disk: String,
    /// Level dumped (or planned).
    pub level: Option<i32>,
    /// Result.
    pub verdict: Verdict,
    /// Sizes and times of the dump (the `DUMP SUMMARY` columns).
    pub measured: Measured,
    /// How it got there: waits, attempts, retries and resent requests.
    pub history: History,
    /// Failure text.
    pub error: Option<String>,
    /// MESG log lines (for failed and strange dumps).
    pub log: Vec<String>,
    /// The holding file.
    pub holding: Option<String>,
}

/// The sizes and times of one dump, as the report shows and sums them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// `sendbackup: size` in KiB.
    pub orig_kb: Option<i64>,
    /// DATA bytes written.
    pub out_bytes: u64,
    /// Dump duration.
    pub duration: Duration,
    /// Time DATA flowed.
    pub data_time: Duration,
}

impl Measured {
    /// What `r` measured; its bytes count only when the dump is `ok` (a failed dump's
    /// partial bytes were thrown away).
    pub fn of(r: &crate::dump::DumpReport, ok: bool) -> Self {
        Measured {
            orig_kb: r.orig_kb,
            out_bytes: if ok { r.bytes } else { 0 },
            duration: r.duration,
            data_time: r.data_time,
        }
    }

    /// KiB/s of the DATA stream over the dump time.
    pub fn rate_kibps(&self) -> f64 {
        let t = self.duration.as_secs_f64();
        if t <= 0.0 {
            0.0
        } else {
            self.out_bytes as f64 / 1024.0 / t
        }
    }
}

/// What it took to dump one DLE, beyond the dump itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// Waits before it started.
    pub waits: Vec<WaitLine>,
    /// Attempts.
    pub attempts: u32,
    /// Errors of attempts that were retried.
    pub retried: Vec<String>,
    /// sendbackup REQs sent again (lost or late packets the retransmissions covered).
    pub resent: u32,
}

impl History {
    /// One attempt, no wait, nothing resent.
    pub fn once() -> Self {
        History {
            waits: Vec::new(),
            attempts: 1,
            retried: Vec::new(),
            resent: 0,
        }
    }

    fn total_wait(&self) -> Duration {
        self.waits.iter().map(|w| w.waited).sum()
    }
}

/// Everything the report shows.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// `org`.
    pub org: String,
    /// Config name.
    pub config: String,
    /// Run timestamp.
    pub timestamp: String,
    /// Server host name.
    pub hostname: String,
    /// Wall time of the run.
    pub wall: Duration,
    /// Time spent on estimates (until the last came back).
    pub estimate_time: Duration,
    /// Holding disks used, with bytes written to each.
    pub holding: Vec<(String, u64)>,
    /// The DLEs, in disklist order.
    pub dles: Vec<DleLine>,
    /// Warnings and notes of the run (config warnings, catalog problems...).
    pub notes: Vec<String>,
    /// Run-level errors (they set exit bit 1).
    pub errors: Vec<String>,
    /// What the taper did (`None`: no changer configured, holding disk only).
    pub taper: Option<crate::taper::night::TapeReport>,
}

impl Summary {
    /// The report of a run of `plan`'s configuration at `timestamp` on this host (its name
    /// from the kernel), with nothing in it yet.
    pub fn heading(plan: &crate::plan::Plan, timestamp: &str) -> Summary {
        Summary {
            org: plan.config.org.clone(),
            config: plan.config_name.clone(),
            timestamp: timestamp.to_owned(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Summary::default()
        }
    }

    /// amdump's exit status (see the module docs).
    pub fn exit_status(&self) -> i32 {
        let mut s = 0;
        if !self.errors.is_empty() {
            s |= exit::ERROR;
        }
        for d in &self.dles {
            s |= match d.verdict {
                Verdict::Done | Verdict::Skipped => 0,
                Verdict::Strange => exit::STRANGE,
                Verdict::Failed => exit::FAILED,
                Verdict::Missing => exit::MISSING,
            };
        }
        if self.taper.as_ref().is_some_and(|t| t.failed) {
            s |= exit::TAPE;
        }
        s
    }
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn level(l: Option<i32>) -> String {
    l.map_or_else(|| "-".to_owned(), |l| l.to_string())
}

/// The text of the report.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Hostname: {}", s.hostname);
    let _ = writeln!(o, "Org     : {}", s.org);
    let _ = writeln!(o, "Config  : {}", s.config);
    let _ = writeln!(o, "Date    : {}", s.timestamp);
    let _ = writeln!(o);
    if s.holding.is_empty() {
        let _ = writeln!(o, "No dump was written to a holding disk.");
    } else {
        for (dir, bytes) in &s.holding {
            let _ = writeln!(
                o,
                "These dumps were written to holding disk {dir}: {}",
                size(*bytes)
            );
        }
    }
    let failed: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| matches!(d.verdict, Verdict::Failed | Verdict::Missing))
        .collect();
    let strange: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| d.verdict == Verdict::Strange)
        .collect();
    if !failed.is_empty() || !s.errors.is_empty() {
        let _ = writeln!(o, "\nFAILURE DUMP SUMMARY:");
        for e in &s.errors {
            let _ = writeln!(o, "  dumper: ERROR {e}");
        }
        for d in &failed {
            let what = if d.verdict == Verdict::Missing {
                "RESULT MISSING".to_owned()
            } else {
                format!("FAILED {}", d.error.as_deref().unwrap_or("[unknown error]"))
            };
            let _ = writeln!(o, "  {} {} lev {}  {what}", d.host, d.disk, level(d.level));
            for r in &d.history.retried {
                let _ = writeln!(
                    o,
                    "  {} {} lev {}  was retried after: {r}",
                    d.host,
                    d.disk,
                    level(d.level)
                );
            }
        }
    }
    if !strange.is_empty() {
        let _ = writeln!(o, "\nSTRANGE DUMP SUMMARY:");
        for d in &strange {
            let _ = writeln!(o, "  {} {} lev {}  STRANGE", d.host, d.disk, level(d.level));
        }
    }
    let waited: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| !d.history.waits.is_empty())
        .collect();
    if !waited.is_empty() {
        let _ = writeln!(o, "\nWAITS (dumps that waited before they could run):");
        for d in &waited {
            for w in &d.history.waits {
                let _ = writeln!(
                    o,
                    "  {} {} lev {}  waited {} for {}: {}",
                    d.host,
                    d.disk,
                    level(d.level),
                    mmss(w.waited),
                    w.what,
                    w.reason
                );
            }
        }
    }
    let resent: Vec<&DleLine> = s.dles.iter().filter(|d| d.history.resent > 0).collect();
    if !resent.is_empty() {
        let _ = writeln!(
            o,
            "\nRETRANSMISSIONS (requests sent again because packets were lost or late):"
        );
        for d in &resent {
            let _ = writeln!(
                o,
                "  {} {} lev {}  sendbackup REQ sent {} more time(s)",
                d.host,
                d.disk,
                level(d.level),
                d.history.resent
            );
        }
    }
    let skipped: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| d.verdict == Verdict::Skipped)
        .collect();
    if !s.notes.is_empty() || !skipped.is_empty() {
        let _ = writeln!(o, "\nNOTES:");
        for n in &s.notes {
            let _ = writeln!(o, "  {n}");
        }
        for d in &skipped {
            let _ = writeln!(
                o,
                "  {} {}: skipped tonight: {}",
                d.host,
                d.disk,
                d.error.as_deref().unwrap_or("")
            );
        }
    }

    let dumped: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| matches!(d.verdict, Verdict::Done | Verdict::Strange))
        .collect();
    let total: u64 = dumped.iter().map(|d| d.measured.out_bytes).sum();
    let orig: i64 = dumped.iter().filter_map(|d| d.measured.orig_kb).sum();
    let full = dumped.iter().filter(|d| d.level == Some(0)).count();
    let dump_time: Duration = dumped.iter().map(|d| d.measured.duration).sum();
    let _ = writeln!(o, "\nSTATISTICS:");
    let _ = writeln!(o, "  Run time (hrs:min:sec)      {}", hms(s.wall));
    let _ = writeln!(o, "  Estimate time               {}", hms(s.estimate_time));
    let _ = writeln!(
        o,
        "  DLEs dumped                 {} ({} full, {} incremental)",
        dumped.len(),
        full,
        dumped.len() - full
    );
    let _ = writeln!(o, "  DLEs failed                 {}", failed.len());
    let _ = writeln!(o, "  Output size                 {}", size(total));
    let _ = writeln!(
        o,
        "  Original size               {}",
        size(u64::try_from(orig.max(0)).unwrap_or(0).saturating_mul(1024))
    );
    let rate = if s.wall.as_secs_f64() > 0.0 {
        total as f64 / 1024.0 / 1024.0 / s.wall.as_secs_f64()
    } else {
        0.0
    };
    let _ = writeln!(o, "  Avg dump rate (wall)        {rate:.1} MiB/s");
    let _ = writeln!(o, "  Sum of dump times           {}", hms(dump_time));

    let _ = writeln!(o, "\nDUMP SUMMARY:");
    // The host and disk columns are as wide as their longest name, within limits.
    let widest = |name: fn(&DleLine) -> &str| s.dles.iter().map(|d| name(d).len()).max();
    let hw = widest(|d| &d.host).unwrap_or(8).max(8);
    let dw = widest(|d| &d.disk).unwrap_or(4).clamp(4, 48);
    let _ = writeln!(
        o,
        "  {:<hw$} {:<dw$} {:>2} {:>11} {:>11} {:>6} {:>8} {:>10} {:>8}  STATUS",
        "HOSTNAME", "DISK", "L", "ORIG-KB", "OUT-KB", "COMP%", "TIME", "KB/s", "WAIT"
    );
    for d in &s.dles {
        let m = &d.measured;
        let out_kb = m.out_bytes.div_ceil(1024);
        let comp = match m.orig_kb {
            Some(k) if k > 0 && m.out_bytes > 0 => {
                format!("{:.1}", out_kb as f64 * 100.0 / k as f64)
            }
            _ => "--".to_owned(),
        };
        let (orig, out, time, rate) = match d.verdict {
            Verdict::Done | Verdict::Strange => (
                m.orig_kb.map_or_else(|| "--".into(), |k| k.to_string()),
                out_kb.to_string(),
                mmss(m.duration),
                format!("{:.1}", m.rate_kibps()),
            ),
            _ => ("".into(), "".into(), "".into(), "".into()),
        };
        let wait = d.history.total_wait();
        let status = match d.verdict {
            Verdict::Done => "OK",
            Verdict::Strange => "STRANGE",
            Verdict::Failed => "FAILED",
            Verdict::Skipped => "SKIPPED",
            Verdict::Missing => "MISSING",
        };
        let _ = writeln!(
            o,
            "  {:<hw$} {:<dw$} {:>2} {:>11} {:>11} {:>6} {:>8} {:>10} {:>8}  {status}",
            d.host,
            d.disk,
            level(d.level),
            orig,
            out,
            if matches!(d.verdict, Verdict::Done | Verdict::Strange) {
                comp
            } else {
                String::new()
            },
            time,
            rate,
            if wait.is_zero() {
                "-".to_owned()
            } else {
                mmss(wait)
            },
        );
    }
    let details: Vec<&DleLine> = s
        .dles
        .iter()
        .filter(|d| matches!(d.verdict, Verdict::Failed | Verdict::Strange) && !d.log.is_empty())
        .collect();
    if !details.is_empty() {
        let _ = writeln!(
            o,
            "\nDUMP DETAILS (MESG stream of failed and strange dumps):"
        );
        for d in details {
            let _ = writeln!(
                o,
                "/-- {} {} lev {} {}",
                d.host,
                d.disk,
                level(d.level),
                if d.verdict == Verdict::Strange {
                    "STRANGE"
                } else {
                    "FAILED"
                }
            );
            for l in d.log.iter().take(200) {
                let _ = writeln!(o, "{l}");
            }
            let _ = writeln!(o, "\\--------");
        }
    }
    if let Some(t) = &s.taper {
        o.push('\n');
        o.push_str(&render_taper(t));
    }
    let _ = writeln!(o, "\n(exit status {})", s.exit_status());
    o
}

/// The `TAPER` section: volumes written and overwritten, dumps left on the holding disk.
pub fn render_taper(t: &crate::taper::night::TapeReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "TAPER: {} dump(s) written to {} volume(s) ({}), {} left on the holding disk{}",
        t.taped,
        t.volumes.len(),
        size(t.bytes),
        t.kept,
        if t.volumes.is_empty() {
            String::new()
        } else {
            format!("; volumes: {}", t.volumes.join(", "))
        }
    );
    for l in &t.lines {
        let _ = writeln!(o, "  {l}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(verdict: Verdict) -> DleLine {
        DleLine {
            host: "localhost".into(),
            disk: "/data".into(),
            level: Some(0),
            verdict,
            measured: Measured {
                orig_kb: Some(100),
                out_bytes: 102_400,
                duration: Duration::from_secs(2),
                data_time: Duration::from_secs(1),
            },
            history: History::once(),
            error: (verdict == Verdict::Failed).then(|| "[data timeout]".into()),
            log: vec![],
            holding: None,
        }
    }

    #[test]
    fn exit_status_follows_amdump_bits() {
        let mut s = Summary {
            dles: vec![line(Verdict::Done)],
            ..Summary::default()
        };
        assert_eq!(s.exit_status(), 0);
        s.dles.push(line(Verdict::Strange));
        assert_eq!(s.exit_status(), 2);
        s.dles.push(line(Verdict::Failed));
        assert_eq!(s.exit_status(), 6);
        s.dles.push(line(Verdict::Missing));
        s.errors.push("catalog".into());
        assert_eq!(s.exit_status(), 15);
        s.taper = Some(crate::taper::night::TapeReport {
            failed: true,
            ..Default::default()
        });
        assert_eq!(s.exit_status(), 31);
    }

    /// The report of a night of `dles` and nothing else.
    fn render_dles(dles: Vec<DleLine>) -> String {
        render(&Summary {
            dles,
            ..Summary::default()
        })
    }

    #[test]
    fn report_lists_retransmissions() {
        let mut d = line(Verdict::Done);
        d.history.resent = 2;
        let text = render_dles(vec![d]);
        assert!(text.contains("RETRANSMISSIONS"), "{text}");
        assert!(
            text.contains("sendbackup REQ sent 2 more time(s)"),
            "{text}"
        );
    }

    #[test]
    fn report_lists_failures_waits_and_the_summary_table() {
        let mut waited = line(Verdict::Done);
        waited.history.waits.push(WaitLine {
            what: "udp 850-859".into(),
            reason: "no ports: 9 usable in udp 850-859; 9 leased, 11 waiting".into(),
            waited: Duration::from_millis(1200),
        });
        let r = render_dles(vec![waited, line(Verdict::Failed)]);
        assert!(r.contains("FAILURE DUMP SUMMARY:"), "{r}");
        assert!(
            r.contains("localhost /data lev 0  FAILED [data timeout]"),
            "{r}"
        );
        assert!(
            r.contains("waited 1.2s for udp 850-859: no ports: 9 usable"),
            "{r}"
        );
        assert!(r.contains("DUMP SUMMARY:"), "{r}");
        assert!(r.contains("(exit status 4)"), "{r}");
    }
}
