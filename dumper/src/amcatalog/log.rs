//! The trace log `<logdir>/log.<datestamp>.<n>` (spec §12.5, server-src/logfile.c): the
//! lines Amanda's catalog readers depend on. `find_log` lists a log file for every tapelist
//! datestamp (n = 0, 1, ... while they exist) when a `START taper` line names a label of
//! the tapelist; `search_logfile` then reads `START taper` (write datestamp and label),
//! `PART taper` (one part: label, file number, host, disk, dump datestamp, part/total,
//! level) and `DONE taper` (closes the dump with its CRCs). amreport also reads `DISK`,
//! `SUCCESS dumper` and `FAIL dumper`.
//!
//! The line builders are pure functions, tested against the lines of the real Amanda in
//! the fixture; [`TraceLog`] only appends them to the file.
//!
//! What this module must not do: decide what happened (the caller says).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use proto::crc::CrcValue;
use proto::quote::quote_string;

/// A trace log being written.
pub struct TraceLog {
    file: File,
    path: PathBuf,
    failed: bool,
}

impl TraceLog {
    /// Creates `<logdir>/log.<datestamp>.<n>` with the first free `n` (exclusively, so two
    /// programs never share one), and points the `log` symlink at it.
    pub fn create(logdir: &Path, datestamp: &str) -> io::Result<TraceLog> {
        std::fs::create_dir_all(logdir)?;
        for n in 0..1000 {
            let path = logdir.join(format!("log.{datestamp}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let link = logdir.join("log");
                    let tmp = logdir.join(format!(".log.{}", std::process::id()));
                    let _ = std::fs::remove_file(&tmp);
                    if std::os::unix::fs::symlink(path.file_name().unwrap_or_default(), &tmp)
                        .is_ok()
                    {
                        let _ = std::fs::rename(&tmp, &link);
                    }
                    return Ok(TraceLog {
                        file,
                        path,
                        failed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{}: 1000 log files for datestamp {datestamp}",
            logdir.display()
        )))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (the newline is added). A write error is logged once; the night
    /// goes on (the SQLite catalog is the dumper's own record).
    pub fn line(&mut self, text: &str) {
        if self.failed {
            return;
        }
        let mut b = Vec::with_capacity(text.len() + 1);
        b.extend_from_slice(text.as_bytes());
        b.push(b'\n');
        if let Err(e) = self.file.write_all(&b) {
            log::warn!("trace log {}: {e}", self.path.display());
            self.failed = true;
        }
    }

    /// Makes what was written durable (before a holding file that the log describes as
    /// taped is removed).
    pub fn sync(&mut self) {
        let _ = self.file.sync_data();
    }
}

fn disk_q(disk: &[u8]) -> String {
    String::from_utf8_lossy(&quote_string(disk)).into_owned()
}

fn crc(c: Option<CrcValue>) -> String {
    c.unwrap_or_default().to_string()
}

fn kps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1024.0 / secs
    } else {
        0.0
    }
}

/// `"ST:<storage>" "POOL:<pool>"`.
fn st_pool(storage: &str, pool: &str) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&proto::quote::quote_string_always(
            format!("ST:{storage}").as_bytes()
        )),
        String::from_utf8_lossy(&proto::quote::quote_string_always(
            format!("POOL:{pool}").as_bytes()
        ))
    )
}

/// A dump as the log lines name it.
#[derive(Clone, Copy, Debug)]
pub struct DumpId<'a> {
    /// Client host.
    pub host: &'a str,
    /// Disk name.
    pub disk: &'a [u8],
    /// The run that dumped it.
    pub datestamp: &'a str,
    /// Level.
    pub level: i32,
}

/// `DISK planner <host> <disk>`.
pub fn disk_planner(host: &str, disk: &[u8]) -> String {
    format!("DISK planner {host} {}", disk_q(disk))
}

/// `SUCCESS dumper <host> <disk> <datestamp> <level> <native-crc> <client-crc> [sec s kb k kps r orig-kb o]`.
pub fn success_dumper(
    d: DumpId<'_>,
    native: Option<CrcValue>,
    client: Option<CrcValue>,
    secs: f64,
    bytes: u64,
    orig_kb: i64,
) -> String {
    format!(
        "SUCCESS dumper {} {} {} {} {} {} [sec {secs:.3} kb {} kps {:.1} orig-kb {orig_kb}]",
        d.host,
        disk_q(d.disk),
        d.datestamp,
        d.level,
        crc(native),
        crc(client),
        bytes / 1024,
        kps(bytes, secs)
    )
}

/// `FAIL dumper <host> <disk> <datestamp> <level> [<error>]`.
pub fn fail_dumper(d: DumpId<'_>, error: &str) -> String {
    let e = error
        .trim_start_matches('[')
        .trim_end_matches(']')
        .replace('\n', " ");
    format!(
        "FAIL dumper {} {} {} {} [{e}]",
        d.host,
        disk_q(d.disk),
        d.datestamp,
        d.level
    )
}

/// `START taper datestamp <write datestamp> "ST:.." "POOL:.." label <label> tape <n>`.
pub fn start_taper(datestamp: &str, storage: &str, pool: &str, label: &str, tape: u32) -> String {
    format!(
        "START taper datestamp {datestamp} {} label {label} tape {tape}",
        st_pool(storage, pool)
    )
}

/// One part on a volume.
#[derive(Clone, Copy, Debug)]
pub struct PartLine<'a> {
    /// Storage name.
    pub storage: &'a str,
    /// Pool name.
    pub pool: &'a str,
    /// Volume label.
    pub label: &'a str,
    /// File number on the volume (1-based).
    pub filenum: u32,
    /// Part number (1-based).
    pub part: u32,
    /// Seconds writing it.
    pub secs: f64,
    /// Payload bytes.
    pub bytes: u64,
    /// Original KiB of the whole dump.
    pub orig_kb: i64,
}

/// `PART taper "ST:.." "POOL:.." <label> <filenum> <host> <disk> <datestamp> <part>/-1 <level> [sec .. bytes .. kps .. orig-kb ..]`.
pub fn part_taper(d: DumpId<'_>, p: PartLine<'_>) -> String {
    format!(
        "PART taper {} {} {} {} {} {} {}/-1 {} [sec {:.6} bytes {} kps {:.6} orig-kb {}]",
        st_pool(p.storage, p.pool),
        p.label,
        p.filenum,
        d.host,
        disk_q(d.disk),
        d.datestamp,
        p.part,
        d.level,
        p.secs,
        p.bytes,
        kps(p.bytes, p.secs),
        p.orig_kb
    )
}

/// The CRCs of a dump.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crcs {
    /// `native-crc`.
    pub native: Option<CrcValue>,
    /// `client-crc`.
    pub client: Option<CrcValue>,
    /// `server-crc`.
    pub server: Option<CrcValue>,
}

/// `DONE taper "ST:.." "POOL:.." <host> <disk> <datestamp> <parts> <level> <native> <client> <server> [sec .. bytes .. kps .. orig-kb ..]`.
#[allow(clippy::too_many_arguments)]
pub fn done_taper(
    storage: &str,
    pool: &str,
    d: DumpId<'_>,
    parts: u32,
    crcs: Crcs,
    secs: f64,
    bytes: u64,
    orig_kb: i64,
) -> String {
    format!(
        "DONE taper {} {} {} {} {parts} {} {} {} {} [sec {secs:.6} bytes {bytes} kps {:.6} orig-kb {orig_kb}]",
        st_pool(storage, pool),
        d.host,
        disk_q(d.disk),
        d.datestamp,
        d.level,
        crc(crcs.native),
        crc(crcs.client),
        crc(crcs.server),
        kps(bytes, secs)
    )
}

/// `INFO taper tape <label> kb <kib> fm <files> [OK]`.
pub fn tape_done(label: &str, kb: u64, files: u32) -> String {
    format!("INFO taper tape {label} kb {kb} fm {files} [OK]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_line(prefix: &str) -> String {
        const LOG: &str = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/vtapes-example/state/log/log.20261203084155.0"
        ));
        LOG.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }

    const DISK: &[u8] = b"/tmp/amanda-harness/data-vtapes/vtapes-example";

    fn id() -> DumpId<'static> {
        DumpId {
            host: "localhost",
            disk: DISK,
            datestamp: "20261203084155",
            level: 0,
        }
    }

    fn c() -> Option<CrcValue> {
        Some(CrcValue {
            crc: 0x80ba_a9e7,
            size: 10240,
        })
    }

    #[test]
    fn taper_lines_match_the_real_amanda() {
        let st = "vtapes-example";
        assert_eq!(
            start_taper("20261203084155", st, st, "vtapes-example-01", 1),
            fixture_line("START taper")
        );
        let p = PartLine {
            storage: st,
            pool: st,
            label: "vtapes-example-01",
            filenum: 1,
            part: 1,
            secs: 0.000342,
            bytes: 10240,
            orig_kb: 10,
        };
        assert_eq!(part_taper(id(), p), fixture_line("PART taper"));
        let crcs = Crcs {
            native: c(),
            client: c(),
            server: c(),
        };
        assert_eq!(
            done_taper(st, st, id(), 1, crcs, 0.1, 10240, 10),
            fixture_line("DONE taper")
        );
        assert_eq!(
            tape_done("vtapes-example-01", 10, 1),
            fixture_line("INFO taper tape ")
        );
        assert_eq!(
            disk_planner("localhost", DISK),
            fixture_line("DISK planner")
        );
    }

    #[test]
    fn dumper_lines_match_the_real_amanda() {
        assert_eq!(
            success_dumper(id(), c(), c(), 0.06317, 10240, 10),
            fixture_line("SUCCESS dumper")
        );
        let f = fail_dumper(
            DumpId {
                disk: b"/a b",
                ..id()
            },
            "[data timeout]",
        );
        assert_eq!(
            f,
            "FAIL dumper localhost \"/a b\" 20261203084155 0 [data timeout]"
        );
    }

    #[test]
    fn log_files_are_created_exclusively_with_the_next_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = TraceLog::create(dir.path(), "20260101000000").unwrap();
        a.line("START driver date 20260101000000");
        let b = TraceLog::create(dir.path(), "20260101000000").unwrap();
        assert!(a.path().ends_with("log.20260101000000.0"));
        assert!(b.path().ends_with("log.20260101000000.1"));
        assert_eq!(
            std::fs::read_link(dir.path().join("log")).unwrap(),
            Path::new("log.20260101000000.1")
        );
        assert_eq!(
            std::fs::read_to_string(a.path()).unwrap(),
            "START driver date 20260101000000\n"
        );
    }
}
