//! curinfo (spec §12.6, server-src/infofile.c): `<infofile>/<host>/<disk>/info`, the
//! history Amanda's planner and `amadmin info/due` read. Text, `//` at the end:
//!
//! ```text
//! version: 0
//! command: 0
//! full-rate: ...          (up to 3 recent KiB/s values)
//! full-comp: ...          (compressed/original ratios)
//! incr-rate: ...
//! incr-comp: ...
//! stats: <level> <orig KiB> <out KiB> <secs> <epoch> [<filenum> <label>]
//! last_level: <level> <runs at it>
//! history: <level> <orig KiB> <out KiB> <epoch> <secs>     (newest first, at most 100)
//! //
//! ```
//!
//! What this module must not do: plan levels from it (the dumper's planner reads SQLite).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use proto::quote::sanitise_filename;

/// One `stats:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Level.
    pub level: i32,
    /// Original KiB.
    pub orig_kb: i64,
    /// Output KiB.
    pub out_kb: i64,
    /// Seconds.
    pub secs: i64,
    /// When (epoch).
    pub date: i64,
    /// Where on a volume.
    pub location: Option<(u32, String)>,
}

/// One `history:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// Level.
    pub level: i32,
    /// Original KiB.
    pub orig_kb: i64,
    /// Output KiB.
    pub out_kb: i64,
    /// When (epoch).
    pub date: i64,
    /// Seconds.
    pub secs: i64,
}

/// The info of one DLE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `command:` (force flags).
    pub command: i64,
    /// `stats:` per level.
    pub stats: Vec<Stat>,
    /// `last_level:`.
    pub last_level: Option<(i32, i32)>,
    /// `history:`, newest first.
    pub history: Vec<History>,
    /// Lines we keep as they were (`full-rate:` ... with values).
    pub rates: Vec<String>,
}

fn nums(s: &str) -> Vec<i64> {
    s.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

impl Info {
    /// Parses an info file (unknown lines are dropped; this is a copy for Amanda's tools).
    pub fn parse(text: &str) -> Info {
        let mut i = Info::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "command" => i.command = v.trim().parse().unwrap_or(0),
                "full-rate" | "full-comp" | "incr-rate" | "incr-comp" if !v.trim().is_empty() => {
                    i.rates.push(line.to_owned());
                }
                "stats" => {
                    let w: Vec<&str> = v.split_whitespace().collect();
                    if let [level, orig_kb, out_kb, secs, date] =
                        nums(&w[..w.len().min(5)].join(" "))[..]
                    {
                        let location = match (w.get(5), w.get(6)) {
                            (Some(f), Some(l)) => f.parse().ok().map(|f| (f, (*l).to_owned())),
                            _ => None,
                        };
                        let level = level as i32;
                        i.stats.push(Stat {
                            level,
                            orig_kb,
                            out_kb,
                            secs,
                            date,
                            location,
                        });
                    }
                }
                "last_level" => {
                    if let [level, runs] = nums(v)[..] {
                        i.last_level = Some((level as i32, runs as i32));
                    }
                }
                "history" => {
                    if let [level, orig_kb, out_kb, date, secs] = nums(v)[..] {
                        let level = level as i32;
                        i.history.push(History {
                            level,
                            orig_kb,
                            out_kb,
                            date,
                            secs,
                        });
                    }
                }
                _ => {}
            }
        }
        i
    }

    /// The text.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "version: 0");
        let _ = writeln!(o, "command: {}", self.command);
        for k in ["full-rate", "full-comp", "incr-rate", "incr-comp"] {
            match self.rates.iter().find(|l| l.starts_with(&format!("{k}:"))) {
                Some(l) => {
                    let _ = writeln!(o, "{l}");
                }
                None => {
                    let _ = writeln!(o, "{k}:");
                }
            }
        }
        let mut stats = self.stats.clone();
        stats.sort_by_key(|s| s.level);
        for s in &stats {
            let _ = write!(
                o,
                "stats: {} {} {} {} {}",
                s.level, s.orig_kb, s.out_kb, s.secs, s.date
            );
            if let Some((f, l)) = &s.location {
                let _ = write!(o, " {f} {l}");
            }
            o.push('\n');
        }
        if let Some((l, n)) = self.last_level {
            let _ = writeln!(o, "last_level: {l} {n}");
        }
        for h in self.history.iter().take(100) {
            let _ = writeln!(
                o,
                "history: {} {} {} {} {}",
                h.level, h.orig_kb, h.out_kb, h.date, h.secs
            );
        }
        o.push_str("//\n");
        o
    }

    /// Records a successful dump: its `stats:` line replaces the one of its level, a
    /// `history:` line goes on top, `last_level` counts consecutive runs at one level.
    /// A dump already in the history (same level and date) only updates its location.
    pub fn record(&mut self, s: Stat) {
        let known = self
            .history
            .iter()
            .any(|h| h.level == s.level && h.date == s.date);
        if !known {
            self.history.insert(
                0,
                History {
                    level: s.level,
                    orig_kb: s.orig_kb,
                    out_kb: s.out_kb,
                    date: s.date,
                    secs: s.secs,
                },
            );
            self.last_level = Some(match self.last_level {
                Some((l, n)) if l == s.level => (l, n + 1),
                _ => (s.level, 1),
            });
        }
        self.stats.retain(|x| x.level != s.level);
        self.stats.push(s);
    }
}

/// `<infofile>/<host>/<sanitised disk>/info`.
pub fn info_path(infofile: &Path, host: &str, disk: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    infofile
        .join(std::ffi::OsStr::from_bytes(&sanitise_filename(
            host.as_bytes(),
        )))
        .join(std::ffi::OsStr::from_bytes(&sanitise_filename(disk)))
        .join("info")
}

/// Reads, updates and rewrites the info file of `host:disk`.
pub fn record(infofile: &Path, host: &str, disk: &[u8], s: Stat) -> io::Result<()> {
    let p = info_path(infofile, host, disk);
    let mut info = match std::fs::read_to_string(&p) {
        Ok(t) => Info::parse(&t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Info::default(),
        Err(e) => return Err(e),
    };
    info.record(s);
    super::write_atomic(&p, info.render().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/vtapes-example/state/curinfo/localhost/_tmp_amanda-harness_data-vtapes_vtapes-example/info"
    ));

    #[test]
    fn two_nights_give_the_real_amandas_file() {
        let mut i = Info::default();
        let stat = |level, date, label: &str| Stat {
            level,
            orig_kb: 10,
            out_kb: 10,
            secs: 0,
            date,
            location: Some((1, label.to_owned())),
        };
        i.record(stat(0, 1_796_287_315, "vtapes-example-01"));
        i.record(stat(1, 1_796_287_321, "vtapes-example-02"));
        assert_eq!(i.render(), REAL);
        assert_eq!(Info::parse(REAL), i);
    }

    #[test]
    fn a_taped_dump_updates_its_location_without_a_second_history_line() {
        let mut i = Info::default();
        let mut s = Stat {
            level: 0,
            orig_kb: 1,
            out_kb: 1,
            secs: 1,
            date: 5,
            location: None,
        };
        i.record(s.clone());
        s.location = Some((3, "v-01".into()));
        i.record(s);
        assert_eq!(i.history.len(), 1);
        assert_eq!(i.last_level, Some((0, 1)));
        assert!(i.render().contains("stats: 0 1 1 1 5 3 v-01\n"));
    }
}
