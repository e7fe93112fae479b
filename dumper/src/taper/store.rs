//! Where the taper's copies are, in the dumper's SQLite catalog (beside the `dumps` table
//! of [`crate::catalog`], in tables of its own): one row per part on a volume
//! (`tape_parts`), one per complete copy (`tape_copies`). A volume that is overwritten
//! takes its parts with it, and every copy that had a part there.
//!
//! What this module must not do: choose volumes or write files.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, params};

use super::planner::DumpCopy;
use crate::catalog::{COLUMNS, DumpRecord, path_read, row_to_record};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tape_parts (
    dump_id  INTEGER NOT NULL,
    part     INTEGER NOT NULL,
    label    TEXT NOT NULL,
    filenum  INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    PRIMARY KEY (dump_id, part)
);
CREATE INDEX IF NOT EXISTS tape_parts_by_label ON tape_parts(label);
CREATE TABLE IF NOT EXISTS tape_copies (
    dump_id  INTEGER PRIMARY KEY,
    parts    INTEGER NOT NULL,
    written  TEXT NOT NULL,
    bytes    INTEGER NOT NULL
);
";

/// One part of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRow {
    /// 1-based.
    pub part: u32,
    /// The volume.
    pub label: String,
    /// File number on it.
    pub filenum: u32,
    /// Payload bytes.
    pub bytes: u64,
}

/// Creates the tables if needed.
pub fn ensure(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// Records a complete copy and its parts.
pub fn record_copy(
    conn: &Connection,
    dump_id: i64,
    parts: &[PartRow],
    written: &str,
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "DELETE FROM tape_parts WHERE dump_id = ?1",
        params![dump_id],
    )?;
    for p in parts {
        tx.execute(
            "INSERT INTO tape_parts (dump_id, part, label, filenum, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![dump_id, p.part, p.label, p.filenum, p.bytes as i64],
        )?;
    }
    let bytes: u64 = parts.iter().map(|p| p.bytes).sum();
    tx.execute(
        "INSERT OR REPLACE INTO tape_copies (dump_id, parts, written, bytes) VALUES (?1, ?2, ?3, ?4)",
        params![dump_id, parts.len() as i64, written, bytes as i64],
    )?;
    tx.commit()
}

/// A volume is being overwritten: forgets every copy with a part on it. Returns those
/// dumps as `host:disk level L of <timestamp>`, for the report.
pub fn overwrite(conn: &Connection, label: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT d.host, d.disk, d.level, d.timestamp FROM tape_parts p JOIN dumps d ON d.id = p.dump_id
         WHERE p.label = ?1 ORDER BY d.timestamp, d.host, d.disk",
    )?;
    let lost = stmt
        .query_map(params![label], |r| {
            Ok(format!(
                "{}:{} level {} of {}",
                r.get::<_, String>(0)?,
                String::from_utf8_lossy(&r.get::<_, Vec<u8>>(1)?),
                r.get::<_, i32>(2)?,
                r.get::<_, String>(3)?
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "DELETE FROM tape_copies WHERE dump_id IN (SELECT dump_id FROM tape_parts WHERE label = ?1)",
        params![label],
    )?;
    tx.execute(
        "DELETE FROM tape_parts WHERE dump_id IN (SELECT dump_id FROM tape_parts WHERE label = ?1)",
        params![label],
    )?;
    tx.commit()?;
    Ok(lost)
}

/// The dumps that have a complete copy on volumes.
pub fn taped_ids(conn: &Connection) -> rusqlite::Result<HashSet<i64>> {
    let mut stmt = conn.prepare("SELECT dump_id FROM tape_copies")?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// The parts of a dump's copy, in order (empty: no copy on volumes).
pub fn parts(conn: &Connection, dump_id: i64) -> rusqlite::Result<Vec<PartRow>> {
    let mut stmt = conn.prepare(
        "SELECT p.part, p.label, p.filenum, p.bytes FROM tape_parts p JOIN tape_copies c ON c.dump_id = p.dump_id
         WHERE p.dump_id = ?1 ORDER BY p.part",
    )?;
    stmt.query_map(params![dump_id], |r| {
        Ok(PartRow {
            part: r.get(0)?,
            label: r.get(1)?,
            filenum: r.get(2)?,
            bytes: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?
    .collect()
}

/// Every successful dump with where its copies are, for the retention rule.
pub fn copies(conn: &Connection) -> rusqlite::Result<Vec<DumpCopy>> {
    let mut stmt = conn.prepare(
        "SELECT d.id, d.host, d.disk, d.level, d.timestamp, d.holding_file,
                (SELECT group_concat(DISTINCT p.label) FROM tape_parts p JOIN tape_copies c ON c.dump_id = p.dump_id WHERE p.dump_id = d.id)
         FROM dumps d WHERE d.status IN ('done', 'strange')",
    )?;
    stmt.query_map([], |r| {
        let holding = path_read(r.get_ref(5)?);
        let labels: Option<String> = r.get(6)?;
        Ok(DumpCopy {
            dle: format!(
                "{}:{}",
                r.get::<_, String>(1)?,
                String::from_utf8_lossy(&r.get::<_, Vec<u8>>(2)?)
            ),
            level: r.get(3)?,
            datestamp: r.get(4)?,
            labels: labels
                .map(|l| l.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            on_holding: holding.is_some_and(|h| h.exists()),
        })
    })?
    .collect()
}

/// Successful dumps whose holding file exists and that have no copy on volumes, oldest
/// first (what `dumper flush` and `autoflush` write).
pub fn untaped(conn: &Connection) -> rusqlite::Result<Vec<DumpRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM dumps
         WHERE status IN ('done', 'strange') AND holding_file IS NOT NULL
           AND id NOT IN (SELECT dump_id FROM tape_copies)
         ORDER BY timestamp, id"
    ))?;
    let all: Vec<DumpRecord> = stmt
        .query_map([], row_to_record)?
        .collect::<Result<_, _>>()?;
    Ok(all
        .into_iter()
        .filter(|d| d.holding_file.as_deref().is_some_and(Path::exists))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, Status};

    #[test]
    fn copies_are_recorded_found_and_forgotten_with_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let run = cat.begin_run("20260101000000", "c", 0).unwrap();
        let hold = dir.path().join("h._d.0");
        std::fs::write(&hold, b"x").unwrap();
        let mut r = DumpRecord::started("h", b"/d", 0, "20260101000000", 0);
        r.status = Status::Done;
        r.holding_file = Some(hold.clone());
        let id = cat.insert_dump(run, &r).unwrap();
        let conn = cat.connection();
        ensure(conn).unwrap();
        assert_eq!(untaped(conn).unwrap().len(), 1);
        let parts = vec![
            PartRow {
                part: 1,
                label: "vt-01".into(),
                filenum: 1,
                bytes: 10,
            },
            PartRow {
                part: 2,
                label: "vt-02".into(),
                filenum: 1,
                bytes: 5,
            },
        ];
        record_copy(conn, id, &parts, "20260101000000").unwrap();
        assert!(untaped(conn).unwrap().is_empty());
        assert_eq!(self::parts(conn, id).unwrap(), parts);
        let c = copies(conn).unwrap();
        assert_eq!(c[0].labels.len(), 2);
        assert!(c[0].on_holding);
        let lost = overwrite(conn, "vt-02").unwrap();
        assert_eq!(lost, ["h:/d level 0 of 20260101000000"]);
        assert!(taped_ids(conn).unwrap().is_empty());
        assert!(self::parts(conn, id).unwrap().is_empty());
        assert_eq!(
            untaped(conn).unwrap().len(),
            1,
            "back to a holding-only dump"
        );
    }
}
