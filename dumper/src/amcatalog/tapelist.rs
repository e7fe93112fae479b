//! The tapelist (spec §12.4, server-src/tapefile.c): one line per labelled volume, newest
//! first: `<datestamp> <label> reuse|no-reuse [BARCODE:x] [META:x] [BLOCKSIZE:kib]
//! [POOL:x] [STORAGE:x] [CONFIG:x] [#comment]`. The datestamp is the run that last wrote
//! the volume, and is how Amanda's catalog finds the trace log of that run.
//!
//! What this module must not do: choose volumes (see `taper::planner`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapeEntry {
    /// The run that last wrote it (`YYYYMMDDhhmmss`; `0` for labelled, never written).
    pub datestamp: String,
    /// Its label.
    pub label: String,
    /// `reuse` (true) or `no-reuse`.
    pub reuse: bool,
    /// `BARCODE:`.
    pub barcode: Option<String>,
    /// `META:`.
    pub meta: Option<String>,
    /// `BLOCKSIZE:` in KiB.
    pub blocksize_kib: Option<u32>,
    /// `POOL:`.
    pub pool: Option<String>,
    /// `STORAGE:`.
    pub storage: Option<String>,
    /// `CONFIG:`.
    pub config: Option<String>,
    /// `#comment`.
    pub comment: Option<String>,
}

impl TapeEntry {
    /// A volume of `config` written by run `datestamp`, as amanda-rs writes it (the pool and
    /// storage are named after the configuration, as 3.5.1 does without `define storage`).
    pub fn ours(datestamp: &str, label: &str, config: &str) -> TapeEntry {
        TapeEntry {
            datestamp: datestamp.to_owned(),
            label: label.to_owned(),
            reuse: true,
            barcode: None,
            meta: None,
            blocksize_kib: Some(32),
            pool: Some(config.to_owned()),
            storage: Some(config.to_owned()),
            config: Some(config.to_owned()),
            comment: None,
        }
    }
}

/// A line that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TapelistError {
    /// A malformed line.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The tapelist.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{file}: {source}")]
    Io {
        /// The tapelist.
        file: String,
        /// Why.
        source: io::Error,
    },
}

/// The volumes, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tapelist {
    /// One entry per label.
    pub entries: Vec<TapeEntry>,
}

impl Tapelist {
    /// Parses tapelist text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Tapelist, TapelistError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |reason: &str| TapelistError::Syntax {
                file: file.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (body, comment) = match line.split_once('#') {
                Some((b, c)) => (b, Some(c.to_owned())),
                None => (line, None),
            };
            let mut w = body.split_whitespace();
            let datestamp = w.next().ok_or_else(|| err("no datestamp"))?;
            if !datestamp.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("the datestamp is not a number"));
            }
            let label = w.next().ok_or_else(|| err("no label"))?;
            let reuse = match w.next() {
                Some("reuse") | None => true,
                Some("no-reuse") => false,
                Some(_) => return Err(err("expected reuse or no-reuse after the label")),
            };
            let mut e = TapeEntry {
                datestamp: datestamp.to_owned(),
                label: label.trim_matches('"').to_owned(),
                reuse,
                barcode: None,
                meta: None,
                blocksize_kib: None,
                pool: None,
                storage: None,
                config: None,
                comment,
            };
            for word in w {
                let Some((k, v)) = word.split_once(':') else {
                    return Err(err("expected KEY:value"));
                };
                let v = v.trim_matches('"').to_owned();
                match k {
                    "BARCODE" => e.barcode = Some(v),
                    "META" => e.meta = Some(v),
                    "BLOCKSIZE" => {
                        e.blocksize_kib = Some(v.parse().map_err(|_| err("bad BLOCKSIZE"))?)
                    }
                    "POOL" => e.pool = Some(v),
                    "STORAGE" => e.storage = Some(v),
                    "CONFIG" => e.config = Some(v),
                    _ => {}
                }
            }
            entries.push(e);
        }
        Ok(Tapelist { entries })
    }

    /// The text, newest first.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for e in &self.entries {
            let _ = write!(
                o,
                "{} {} {}",
                e.datestamp,
                e.label,
                if e.reuse { "reuse" } else { "no-reuse" }
            );
            let kv = [
                ("BARCODE", e.barcode.clone()),
                ("META", e.meta.clone()),
                ("BLOCKSIZE", e.blocksize_kib.map(|b| b.to_string())),
                ("POOL", e.pool.clone()),
                ("STORAGE", e.storage.clone()),
                ("CONFIG", e.config.clone()),
            ];
            for (k, v) in kv {
                if let Some(v) = v {
                    let _ = write!(o, " {k}:{v}");
                }
            }
            if let Some(c) = &e.comment {
                let _ = write!(o, " #{c}");
            }
            o.push('\n');
        }
        o
    }

    /// Reads the tapelist at `path` (a missing file is an empty list).
    pub fn load(path: &Path) -> Result<Tapelist, TapelistError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Tapelist::parse(&t, &path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tapelist::default()),
            Err(source) => Err(TapelistError::Io {
                file: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<(), TapelistError> {
        super::write_atomic(path, self.render().as_bytes()).map_err(|source| TapelistError::Io {
            file: path.display().to_string(),
            source,
        })
    }

    /// The entry of `label`.
    pub fn get(&self, label: &str) -> Option<&TapeEntry> {
        self.entries.iter().find(|e| e.label == label)
    }

    /// Replaces the entry of `e.label` (or adds it), keeping the list newest first.
    pub fn upsert(&mut self, e: TapeEntry) {
        self.entries.retain(|x| x.label != e.label);
        self.entries.push(e);
        // Stable: volumes written by the same run keep their order (the newest first).
        self.entries.sort_by(|a, b| {
            b.datestamp
                .len()
                .cmp(&a.datestamp.len())
                .then(b.datestamp.cmp(&a.datestamp))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "20261203084201 vtapes-example-02 reuse BLOCKSIZE:32 POOL:vtapes-example STORAGE:vtapes-example CONFIG:vtapes-example\n20261203084155 vtapes-example-01 reuse BLOCKSIZE:32 POOL:vtapes-example STORAGE:vtapes-example CONFIG:vtapes-example\n";

    #[test]
    fn the_real_tapelist_round_trips() {
        let t = Tapelist::parse(FIXTURE, "tapelist").unwrap();
        assert_eq!(t.entries.len(), 2);
        assert_eq!(
            t.entries[1],
            TapeEntry::ours("20261203084155", "vtapes-example-01", "vtapes-example")
        );
        assert_eq!(t.render(), FIXTURE);
    }

    #[test]
    fn upsert_keeps_newest_first_and_one_line_per_label() {
        let mut t = Tapelist::parse(FIXTURE, "tapelist").unwrap();
        t.upsert(TapeEntry::ours(
            "20261204000000",
            "vtapes-example-01",
            "vtapes-example",
        ));
        let labels: Vec<&str> = t.entries.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["vtapes-example-01", "vtapes-example-02"]);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = Tapelist::parse("20260101 a reuse\nnope x\n", "tl").unwrap_err();
        assert_eq!(e.to_string(), "tl:2: the datestamp is not a number");
        let e = Tapelist::parse("20260101 a maybe\n", "tl").unwrap_err();
        assert!(e.to_string().contains("tl:1: expected reuse"), "{e}");
    }
}
