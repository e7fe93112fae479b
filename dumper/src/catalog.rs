//! The catalog: what was dumped, in an embedded SQLite database, so that choosing levels and
//! finding restores never depends on parsing log files.
//!
//! One row per dump attempt in `dumps` (host, disk, level, run timestamp, date, sizes, CRCs,
//! holding file, status, error, waits), one row per run in `runs`. A dump is inserted as
//! `running` when it starts and updated when it ends, so a dumper that died leaves rows that
//! the next run marks `lost` (and, if the dump's holding file was complete after all, the
//! run shell adopts it: [`Catalog::adopt`]). Holding file names are stored as their bytes
//! (older rows as text), so that any name restores. The file lives beside the configuration's `infofile`
//! (`<infofile>.dumper.sqlite`) and uses WAL journaling; only the driver thread writes it.
//!
//! What goes into a row is decided here too: from a dump's report ([`DumpRecord::finish`]),
//! for a DLE that failed without a dump ([`DumpRecord::not_dumped`]), for a dump a signal
//! stopped ([`DumpRecord::stopped`]), and for a holding file a killed run left
//! ([`DumpRecord::adopted`]).
//!
//! The level-chain rule used by restore ([`chain`]) is a pure function over the rows, so it
//! is tested without a database. What this module must not do: look at holding files (the
//! caller checks that they exist and verifies them) or decide levels.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::crc::CrcValue;
use proto::mesg::DumpStatus;

use crate::dump::DumpReport;
use crate::failure::DumpFailure;
use crate::holding::Verified;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

/// The schema version in `PRAGMA user_version`. 2: `holding_file` holds the name's bytes
/// (a BLOB; version 1 wrote text, which is still read), so a dumper of version 1 refuses the
/// catalog instead of failing on such a row.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    timestamp   TEXT NOT NULL,
    config      TEXT NOT NULL,
    started     INTEGER NOT NULL,
    finished    INTEGER,
    exit_status INTEGER
);
CREATE TABLE IF NOT EXISTS dumps (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    host         TEXT NOT NULL,
    disk         BLOB NOT NULL,
    level        INTEGER NOT NULL,
    timestamp    TEXT NOT NULL,
    date         TEXT NOT NULL,
    started      INTEGER NOT NULL,
    duration_ms  INTEGER,
    status       TEXT NOT NULL,
    bytes        INTEGER,
    orig_kb      INTEGER,
    crc          TEXT,
    client_crc   TEXT,
    native_crc   TEXT,
    holding_file TEXT,
    comp_suffix  TEXT,
    program      TEXT,
    error        TEXT,
    waited_ms    INTEGER,
    wait_reason  TEXT
);
CREATE INDEX IF NOT EXISTS dumps_by_dle ON dumps(host, disk, level, timestamp);
";

/// The state of a dump row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Started, not finished.
    Running,
    /// Success.
    Done,
    /// Success with notes.
    Strange,
    /// Failure.
    Failed,
    /// The dumper died while it was running.
    Lost,
}

impl Status {
    /// The text stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Strange => "strange",
            Status::Failed => "failed",
            Status::Lost => "lost",
        }
    }

    /// Reads the stored text (unknown text is [`Status::Lost`]).
    pub fn parse(s: &str) -> Status {
        match s {
            "running" => Status::Running,
            "done" => Status::Done,
            "strange" => Status::Strange,
            "failed" => Status::Failed,
            _ => Status::Lost,
        }
    }

    /// Done or strange: the holding file is complete.
    pub const fn is_success(self) -> bool {
        matches!(self, Status::Done | Status::Strange)
    }
}

/// One dump, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpRecord {
    /// Row id (0 before insertion).
    pub id: i64,
    /// The client host.
    pub host: String,
    /// The disk name.
    pub disk: Vec<u8>,
    /// The level.
    pub level: i32,
    /// The run timestamp `YYYYMMDDhhmmss`.
    pub timestamp: String,
    /// `YYYY-MM-DD` of the run timestamp.
    pub date: String,
    /// When the dump started, seconds since the epoch.
    pub started: i64,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// Its state.
    pub status: Status,
    /// DATA bytes written after the header.
    pub bytes: Option<i64>,
    /// The client's `sendbackup: size` (KiB before compression).
    pub orig_kb: Option<i64>,
    /// CRC-32C of the DATA bytes as received.
    pub crc: Option<CrcValue>,
    /// The client's `client-CRC`.
    pub client_crc: Option<CrcValue>,
    /// The client's `native-CRC`.
    pub native_crc: Option<CrcValue>,
    /// The holding file (final name; set only on success).
    pub holding_file: Option<PathBuf>,
    /// `COMPRESS_SUFFIX` (client compression), e.g. `.gz`.
    pub comp_suffix: Option<String>,
    /// The `BACKUP` program (`/bin/tar`, `APPLICATION`).
    pub program: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it waited for ports or a slot before it started.
    pub waited_ms: Option<i64>,
    /// Why it waited.
    pub wait_reason: Option<String>,
}

impl DumpRecord {
    /// A `running` record for a dump that starts now.
    pub fn started(host: &str, disk: &[u8], level: i32, timestamp: &str, started: i64) -> Self {
        DumpRecord {
            id: 0,
            host: host.to_owned(),
            disk: disk.to_vec(),
            level,
            timestamp: timestamp.to_owned(),
            date: crate::clock::date_of_timestamp(timestamp).unwrap_or_default(),
            started,
            duration_ms: None,
            status: Status::Running,
            bytes: None,
            orig_kb: None,
            crc: None,
            client_crc: None,
            native_crc: None,
            holding_file: None,
            comp_suffix: None,
            program: None,
            error: None,
            waited_ms: None,
            wait_reason: None,
        }
    }

    /// The row of a dump that ended: its status, sizes, CRCs, holding file, program and
    /// failure from `report`; how long it waited before it started, and the first reason.
    pub fn finish(&mut self, report: &DumpReport, waited: Duration, wait_reason: Option<&str>) {
        self.duration_ms = Some(millis(report.duration));
        self.status = match report.status {
            DumpStatus::Done => Status::Done,
            DumpStatus::Strange => Status::Strange,
            DumpStatus::Failed | DumpStatus::Retry => Status::Failed,
        };
        self.bytes = i64::try_from(report.bytes).ok();
        self.orig_kb = report.orig_kb;
        self.crc = Some(report.crc);
        self.client_crc = report.client_crc;
        self.native_crc = report.native_crc;
        self.holding_file = report.holding.clone();
        self.comp_suffix = lossy(report.info.compress_suffix.as_deref());
        self.program = lossy(report.info.backup.as_deref());
        self.error = report.failure.as_ref().map(DumpFailure::report_text);
        self.waited_ms = Some(millis(waited));
        self.wait_reason = wait_reason.map(str::to_owned);
    }

    /// The row of a DLE that failed without a dump attempt (its estimate, an unsupported
    /// setting): `failed`, with the reason.
    pub fn not_dumped(
        host: &str,
        disk: &[u8],
        level: i32,
        timestamp: &str,
        now: i64,
        reason: &str,
    ) -> DumpRecord {
        let mut rec = DumpRecord::started(host, disk, level, timestamp, now);
        rec.status = Status::Failed;
        rec.error = Some(reason.to_owned());
        rec.duration_ms = Some(0);
        rec
    }

    /// A running dump that will not finish ([`DumpFailure::Interrupted`]): `failed`, with
    /// the failure's text.
    pub fn stopped(&mut self, failure: &DumpFailure) {
        self.status = Status::Failed;
        self.error = Some(failure.report_text());
    }

    /// The row of the complete holding file `file` of run `timestamp` that no row names (a
    /// run died between its rename and its row): `done`, with the facts of its verified
    /// header.
    pub fn adopted(timestamp: &str, file: &Path, v: &Verified, now: i64) -> DumpRecord {
        let h = &v.header;
        let mut rec = DumpRecord::started(
            &String::from_utf8_lossy(&h.host),
            &h.disk,
            h.level,
            timestamp,
            now,
        );
        rec.status = Status::Done;
        rec.bytes = i64::try_from(v.bytes).ok();
        rec.orig_kb = h.orig_size;
        rec.crc = h.server_crc;
        rec.client_crc = h.client_crc;
        rec.native_crc = h.native_crc;
        rec.holding_file = Some(file.to_path_buf());
        rec.comp_suffix = lossy(h.filters.comp_suffix.as_deref());
        rec.program = lossy(Some(&h.program[..]));
        rec
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lossy(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The catalog could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite said no; `path` is the database file.
    #[error("catalog {path}: {source}")]
    Sql {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer dumper.
    #[error("catalog {path}: schema version {found} is newer than this dumper's {SCHEMA_VERSION}")]
    NewerSchema {
        /// The database file.
        path: String,
        /// The version found.
        found: i64,
    },
    /// Its directory cannot be created.
    #[error("catalog {path}: cannot create its directory: {source}")]
    Dir {
        /// The database file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The catalog database.
pub struct Catalog {
    conn: Connection,
    path: String,
}

fn crc_text(c: &Option<CrcValue>) -> Option<String> {
    c.map(|c| c.to_string())
}

fn crc_parse(s: Option<String>) -> Option<CrcValue> {
    s.and_then(|s| CrcValue::parse(s.as_bytes()).ok())
}

/// A path as stored: its exact bytes.
fn path_blob(p: &Option<PathBuf>) -> Option<&[u8]> {
    p.as_deref().map(|p| p.as_os_str().as_bytes())
}

/// A stored path: bytes, or the text older versions wrote.
pub(crate) fn path_read(v: ValueRef<'_>) -> Option<PathBuf> {
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(PathBuf::from(OsStr::from_bytes(b))),
        _ => None,
    }
}

pub(crate) const COLUMNS: &str =
    "id, host, disk, level, timestamp, date, started, duration_ms, status, bytes,
    orig_kb, crc, client_crc, native_crc, holding_file, comp_suffix, program, error, waited_ms,
    wait_reason";

/// The columns a dump's outcome sets, in the order of [`outcome`].
const OUTCOME_COLUMNS: &str = "duration_ms, status, bytes, orig_kb, crc, client_crc, native_crc, holding_file, comp_suffix, program, error, waited_ms, wait_reason";

const OUTCOME_LEN: usize = 13;

/// The values of [`OUTCOME_COLUMNS`] for `r`.
fn outcome(r: &DumpRecord) -> [Value; OUTCOME_LEN] {
    [
        r.duration_ms.into(),
        r.status.as_str().to_owned().into(),
        r.bytes.into(),
        r.orig_kb.into(),
        crc_text(&r.crc).into(),
        crc_text(&r.client_crc).into(),
        crc_text(&r.native_crc).into(),
        path_blob(&r.holding_file).map(<[u8]>::to_vec).into(),
        r.comp_suffix.clone().into(),
        r.program.clone().into(),
        r.error.clone().into(),
        r.waited_ms.into(),
        r.wait_reason.clone().into(),
    ]
}

impl Catalog {
    /// The catalog file of a configuration whose `infofile` resolves to `infofile`.
    pub fn path_for(infofile: &Path) -> PathBuf {
        let mut s = infofile.as_os_str().to_owned();
        s.push(".dumper.sqlite");
        PathBuf::from(s)
    }

    /// Opens (creating it and its directory if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::Dir {
                path: display.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| CatalogError::Sql {
            path: display.clone(),
            source,
        })?;
        Self::init(conn, display)
    }

    /// A catalog in memory (tests).
    pub fn open_in_memory() -> Result<Catalog, CatalogError> {
        let conn = Connection::open_in_memory().map_err(|source| CatalogError::Sql {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Catalog, CatalogError> {
        let sql = |source| CatalogError::Sql {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        // WAL: readers (restore) never block the run; the result is ignored for :memory:.
        let _ = conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::NewerSchema {
                path,
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(sql)?;
        Ok(Catalog { conn, path })
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// The database file (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The connection, for the taper's own tables (`taper::store`).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records the start of a run; returns its id. Rows still `running` were left by a
    /// dumper that died (runs of one configuration never overlap: `dumper run` holds its
    /// lock) and become `lost`.
    pub fn begin_run(
        &mut self,
        timestamp: &str,
        config: &str,
        started: i64,
    ) -> Result<i64, CatalogError> {
        self.conn
            .execute(
                "UPDATE dumps SET status = 'lost', error = COALESCE(error, 'the dumper stopped during this dump') WHERE status = 'running'",
                [],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "INSERT INTO runs (timestamp, config, started) VALUES (?1, ?2, ?3)",
                params![timestamp, config, started],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of a run.
    pub fn finish_run(
        &mut self,
        run: i64,
        finished: i64,
        exit_status: i32,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE runs SET finished = ?1, exit_status = ?2 WHERE id = ?3",
                params![finished, exit_status, run],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Inserts a dump row (usually `running`); returns its id.
    pub fn insert_dump(&mut self, run: i64, r: &DumpRecord) -> Result<i64, CatalogError> {
        let identity: [Value; 7] = [
            run.into(),
            r.host.clone().into(),
            r.disk.clone().into(),
            r.level.into(),
            r.timestamp.clone().into(),
            r.date.clone().into(),
            r.started.into(),
        ];
        self.conn
            .execute(
                &format!(
                    "INSERT INTO dumps (run_id, host, disk, level, timestamp, date, started, {OUTCOME_COLUMNS})
                     VALUES ({})",
                    (1..=identity.len() + OUTCOME_LEN)
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                params_from_iter(identity.into_iter().chain(outcome(r))),
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Rewrites a dump row with the outcome in `r` (by `r.id`).
    pub fn update_dump(&mut self, r: &DumpRecord) -> Result<(), CatalogError> {
        let sets: Vec<String> = OUTCOME_COLUMNS
            .split(", ")
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect();
        self.conn
            .execute(
                &format!(
                    "UPDATE dumps SET {}, level = ?{} WHERE id = ?{}",
                    sets.join(", "),
                    OUTCOME_LEN + 1,
                    OUTCOME_LEN + 2
                ),
                params_from_iter(outcome(r).into_iter().chain([r.level.into(), r.id.into()])),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every dump of `host`/`disk`, oldest first (any status).
    pub fn history(&self, host: &str, disk: &[u8]) -> Result<Vec<DumpRecord>, CatalogError> {
        self.select_all(
            &format!(
                "SELECT {COLUMNS} FROM dumps WHERE host = ?1 COLLATE NOCASE AND disk = ?2
                 ORDER BY timestamp, id"
            ),
            params![host, disk],
            row_to_record,
        )
    }

    /// The most recent successful dump of `host`/`disk` at `level`.
    pub fn last_success(
        &self,
        host: &str,
        disk: &[u8],
        level: i32,
    ) -> Result<Option<DumpRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM dumps
                     WHERE host = ?1 COLLATE NOCASE AND disk = ?2 AND level = ?3
                       AND status IN ('done', 'strange')
                     ORDER BY timestamp DESC, id DESC LIMIT 1"
                ),
                params![host, disk, level],
                row_to_record,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The timestamps of this catalog's runs: the holding directories it made.
    pub fn run_timestamps(&self) -> Result<HashSet<String>, CatalogError> {
        self.select_all("SELECT DISTINCT timestamp FROM runs", [], |r| r.get(0))
    }

    /// Every holding file a row names.
    pub fn holding_files(&self) -> Result<HashSet<PathBuf>, CatalogError> {
        let files: Vec<Option<PathBuf>> = self.select_all(
            "SELECT holding_file FROM dumps WHERE holding_file IS NOT NULL",
            [],
            |r| Ok(path_read(r.get_ref(0)?)),
        )?;
        Ok(files.into_iter().flatten().collect())
    }

    /// Every row of `sql` with `params`, each read by `row`.
    fn select_all<T, C: FromIterator<T>>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<C, CatalogError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(params, row).map_err(|e| self.err(e))?;
        rows.collect::<Result<C, _>>().map_err(|e| self.err(e))
    }

    /// Records a complete holding file that a dumper renamed into place but died before
    /// recording: the newest unfinished row (`lost`, `running` or `failed`, no holding file)
    /// of that dump becomes `done` with the file's facts in `r`, or, without one, `r` is
    /// inserted into the run of that timestamp. Returns the row id.
    pub fn adopt(&mut self, r: &DumpRecord) -> Result<i64, CatalogError> {
        let row: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM dumps WHERE timestamp = ?1 AND host = ?2 COLLATE NOCASE AND disk = ?3
                   AND level = ?4 AND status IN ('lost', 'running', 'failed') AND holding_file IS NULL
                 ORDER BY id DESC LIMIT 1",
                params![r.timestamp, r.host, r.disk, r.level],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let mut rec = r.clone();
        match row {
            Some(id) => {
                rec.id = id;
                rec.error = None;
                self.update_dump(&rec)?;
                Ok(id)
            }
            None => {
                let run: i64 = self
                    .conn
                    .query_row(
                        "SELECT id FROM runs WHERE timestamp = ?1 ORDER BY id DESC LIMIT 1",
                        params![r.timestamp],
                        |row| row.get(0),
                    )
                    .map_err(|e| self.err(e))?;
                self.insert_dump(run, &rec)
            }
        }
    }

    /// Every host/disk pair with a successful dump (for `restore` messages).
    pub fn dles(&self) -> Result<Vec<(String, Vec<u8>)>, CatalogError> {
        self.select_all(
            "SELECT DISTINCT host, disk FROM dumps WHERE status IN ('done','strange') ORDER BY host, disk",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

pub(crate) fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<DumpRecord> {
    Ok(DumpRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        disk: r.get(2)?,
        level: r.get(3)?,
        timestamp: r.get(4)?,
        date: r.get(5)?,
        started: r.get(6)?,
        duration_ms: r.get(7)?,
        status: Status::parse(&r.get::<_, String>(8)?),
        bytes: r.get(9)?,
        orig_kb: r.get(10)?,
        crc: crc_parse(r.get(11)?),
        client_crc: crc_parse(r.get(12)?),
        native_crc: crc_parse(r.get(13)?),
        holding_file: path_read(r.get_ref(14)?),
        comp_suffix: r.get(15)?,
        program: r.get(16)?,
        error: r.get(17)?,
        waited_ms: r.get(18)?,
        wait_reason: r.get(19)?,
    })
}

/// Which dumps a restore wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainSelector {
    /// Stop the chain at this level (`--level N`): the full plus the incrementals up to N.
    pub max_level: Option<i32>,
    /// Only dumps of runs on or before this date (`YYYYMMDD`): the state as of that day.
    pub until_date: Option<String>,
}

/// The level chain of one DLE for a restore, oldest first: the most recent full (level 0)
/// allowed by `sel`, then repeatedly the most recent dump of the next level made after the
/// previous element, while one exists (and up to `max_level`). Only successful dumps whose
/// holding file `exists` are considered. `history` must be oldest first.
pub fn chain(
    history: &[DumpRecord],
    sel: &ChainSelector,
    exists: impl Fn(&Path) -> bool,
) -> Vec<DumpRecord> {
    let usable: Vec<&DumpRecord> = history
        .iter()
        .filter(|r| r.status.is_success())
        .filter(|r| r.holding_file.as_deref().is_some_and(&exists))
        .filter(|r| match &sel.until_date {
            Some(d) => r.timestamp.get(..8).is_some_and(|t| t <= d.as_str()),
            None => true,
        })
        .collect();
    let key = |r: &DumpRecord| (r.timestamp.clone(), r.id);
    let Some(full) = usable
        .iter()
        .filter(|r| r.level == 0)
        .max_by_key(|r| key(r))
        .copied()
    else {
        return Vec::new();
    };
    let mut out = vec![full.clone()];
    let mut level = 0;
    loop {
        let next_level = level + 1;
        if sel.max_level.is_some_and(|m| next_level > m) {
            break;
        }
        let prev = match out.last() {
            Some(p) => key(p),
            None => break,
        };
        let next = usable
            .iter()
            .filter(|r| r.level == next_level && key(r) > prev)
            .max_by_key(|r| key(r))
            .copied();
        match next {
            Some(n) => {
                out.push(n.clone());
                level = next_level;
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_columns_and_values_agree() {
        assert_eq!(OUTCOME_COLUMNS.split(", ").count(), OUTCOME_LEN);
    }

    fn rec(id: i64, level: i32, ts: &str, status: Status) -> DumpRecord {
        let mut r = DumpRecord::started("h", b"/d", level, ts, 0);
        r.id = id;
        r.status = status;
        r.holding_file = Some(PathBuf::from(format!("/hold/{id}")));
        r
    }

    /// Nights 1 to 3 of 2026: a full, an incremental, a full (ids 1 to 3).
    fn full_incremental_full() -> Vec<DumpRecord> {
        vec![
            rec(1, 0, "20260101000000", Status::Done),
            rec(2, 1, "20260102000000", Status::Done),
            rec(3, 0, "20260103000000", Status::Done),
        ]
    }

    fn ids(records: &[DumpRecord]) -> Vec<i64> {
        records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn chain_is_latest_full_then_latest_incrementals_after_it() {
        let mut h = full_incremental_full();
        h.extend([
            rec(4, 1, "20260104000000", Status::Done),
            rec(5, 1, "20260105000000", Status::Strange),
            rec(6, 1, "20260106000000", Status::Failed),
        ]);
        assert_eq!(ids(&chain(&h, &ChainSelector::default(), |_| true)), [3, 5]);
    }

    #[test]
    fn chain_as_of_a_date_ignores_later_runs() {
        let h = full_incremental_full();
        let sel = ChainSelector {
            until_date: Some("20260102".into()),
            ..ChainSelector::default()
        };
        assert_eq!(ids(&chain(&h, &sel, |_| true)), [1, 2]);
        let sel = ChainSelector {
            max_level: Some(0),
            ..sel
        };
        assert_eq!(chain(&h, &sel, |_| true).len(), 1);
    }

    #[test]
    fn chain_skips_dumps_whose_holding_file_is_gone() {
        let h = vec![
            rec(1, 0, "20260101000000", Status::Done),
            rec(2, 0, "20260103000000", Status::Done),
        ];
        let c = chain(&h, &ChainSelector::default(), |p| p != Path::new("/hold/2"));
        assert_eq!(ids(&c), [1]);
    }

    // issue 10: names were stored lossily (`display()`), so a non-UTF-8 name did not restore.
    #[test]
    fn holding_names_are_stored_exactly_and_adoption_finishes_a_lost_row() {
        let mut c = Catalog::open_in_memory().unwrap();
        let run = c.begin_run("20260101000000", "daily", 1).unwrap();
        let mut r = rec(0, 0, "20260101000000", Status::Running);
        r.holding_file = None;
        r.id = c.insert_dump(run, &r).unwrap();
        c.begin_run("20260102000000", "daily", 2).unwrap();
        assert_eq!(c.history("h", b"/d").unwrap()[0].status, Status::Lost);
        let name = PathBuf::from(OsStr::from_bytes(b"/hold/20260101000000/h._d\xff~2.0"));
        let mut found = DumpRecord::started("h", b"/d", 0, "20260101000000", 0);
        found.status = Status::Done;
        found.holding_file = Some(name.clone());
        assert_eq!(
            c.adopt(&found).unwrap(),
            r.id,
            "the lost row is the one adopted"
        );
        let h = c.history("h", b"/d").unwrap();
        assert_eq!((h.len(), h[0].status), (1, Status::Done));
        assert_eq!(h[0].holding_file.as_deref(), Some(name.as_path()));
        assert!(c.holding_files().unwrap().contains(&name));
        assert_eq!(
            c.run_timestamps().unwrap(),
            HashSet::from(["20260101000000".to_owned(), "20260102000000".to_owned()])
        );
        // A file with no row of its own gets one, in the run of its timestamp.
        let mut other = found.clone();
        other.disk = b"/e".to_vec();
        other.holding_file = Some(PathBuf::from("/hold/20260101000000/h._e.0"));
        c.adopt(&other).unwrap();
        assert_eq!(c.history("h", b"/e").unwrap().len(), 1);
    }

    #[test]
    fn rows_round_trip_and_dead_runs_become_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let mut c = Catalog::open(&path).unwrap();
            let run = c.begin_run("20260101000000", "daily", 1).unwrap();
            let mut r = rec(0, 0, "20260101000000", Status::Running);
            r.id = c.insert_dump(run, &r).unwrap();
            r.status = Status::Done;
            r.bytes = Some(10240);
            r.crc = Some(CrcValue {
                crc: 0x1234_5678,
                size: 10240,
            });
            c.update_dump(&r).unwrap();
            let got = c.last_success("H", b"/d", 0).unwrap().unwrap();
            assert_eq!(got, r);
            let mut dead = rec(0, 1, "20260102000000", Status::Running);
            dead.id = c.insert_dump(run, &dead).unwrap();
            c.finish_run(run, 2, 0).unwrap();
        }
        let mut c = Catalog::open(&path).unwrap();
        // Opening (restore, check) leaves a running row alone; the next run marks it lost.
        assert_eq!(c.history("h", b"/d").unwrap()[1].status, Status::Running);
        c.begin_run("20260103000000", "daily", 3).unwrap();
        let h = c.history("h", b"/d").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].status, Status::Lost);
        assert_eq!(c.dles().unwrap(), vec![("h".to_owned(), b"/d".to_vec())]);
    }
}
