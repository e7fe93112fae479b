//! The on-disk format of a vtape, as Amanda's vfs device writes it (spec §12.1–12.3,
//! device-src/vfs-device.c): a directory holding one file per Amanda file:
//!
//! * `00000.<label>`: the volume label, a 32 KiB block that starts
//!   `AMANDA: TAPESTART DATE <datestamp> TAPE <label>` LF FF LF, then NULs;
//! * `<5-digit file number>.<host>.<disk>.<level>` (with `/ : \` made `_` in the whole
//!   name): one part of a dump, its 32 KiB `SPLIT_FILE` header then the payload, with no
//!   padding of the last block and no end-of-tape file.
//!
//! What this module must not do: choose volumes, or decide what a label may be.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use proto::header::HEADER_SIZE;

use proto::quote::sanitise_filename;

/// The block of a volume label or a part header.
pub const BLOCK: usize = HEADER_SIZE;

/// The label block of `label`, written by run `datestamp`.
pub fn label_block(datestamp: &str, label: &str) -> Vec<u8> {
    let mut b = format!("AMANDA: TAPESTART DATE {datestamp} TAPE {label}\n\x0c\n").into_bytes();
    b.resize(BLOCK, 0);
    b
}

/// Why a volume's first file is no label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotALabel {
    /// Another Amanda header (its kind).
    #[error("its first file is an Amanda {0}, not a volume label")]
    OtherHeader(String),
    /// No Amanda header at all.
    #[error("its first file is not an Amanda header")]
    NotAmanda,
}

/// Reads a label block: `(datestamp, label)`, or why it is not one.
pub fn parse_label_block(block: &[u8]) -> Result<(String, String), NotALabel> {
    let end = block
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(block.len().min(256));
    let line = String::from_utf8_lossy(&block[..end]);
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["AMANDA:", "TAPESTART", "DATE", date, "TAPE", label, ..] => {
            Ok(((*date).to_owned(), (*label).to_owned()))
        }
        ["AMANDA:", kind, ..] => Err(NotALabel::OtherHeader((*kind).to_owned())),
        _ => Err(NotALabel::NotAmanda),
    }
}

/// `00000.<label>`.
pub fn label_file_name(label: &str) -> String {
    format!("00000.{label}")
}

/// `<NNNNN>.<host>.<disk>.<level>`, sanitised as a whole.
pub fn part_file_name(filenum: u32, host: &str, disk: &[u8], level: i32) -> Vec<u8> {
    let mut n = format!("{filenum:05}.").into_bytes();
    n.extend_from_slice(host.as_bytes());
    n.push(b'.');
    n.extend_from_slice(disk);
    n.extend_from_slice(format!(".{level}").as_bytes());
    sanitise_filename(&n)
}

/// What a slot directory holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Nothing: a new volume.
    Empty,
    /// An Amanda volume.
    Labeled {
        /// Its label.
        label: String,
        /// The run that labelled it.
        datestamp: String,
    },
    /// Something else (files but no label, or a label file that is not one).
    NotAmanda(String),
}

/// The files of a volume: `(file number, path)`, sorted.
pub fn files(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let b = name.as_bytes();
        if b.len() > 6 && b[5] == b'.' && b[..5].iter().all(u8::is_ascii_digit) {
            let n: u32 = std::str::from_utf8(&b[..5])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads what a slot directory holds.
pub fn read(dir: &Path) -> io::Result<Content> {
    let all: Vec<_> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
        .collect();
    if all.is_empty() {
        return Ok(Content::Empty);
    }
    let label_file = all
        .iter()
        .find(|e| e.file_name().as_bytes().starts_with(b"00000."));
    let Some(f) = label_file else {
        return Ok(Content::NotAmanda(format!(
            "{} holds {} file(s) but no Amanda volume label (00000.<label>)",
            dir.display(),
            all.len()
        )));
    };
    let mut block = vec![0u8; 512];
    let n = File::open(f.path())?.read(&mut block)?;
    block.truncate(n);
    Ok(match parse_label_block(&block) {
        Ok((datestamp, label)) => Content::Labeled { label, datestamp },
        Err(why) => Content::NotAmanda(format!("{}: {why}", f.path().display())),
    })
}

/// Bytes the files of a volume take (what counts against the tapetype's `length`).
pub fn used_bytes(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

/// A label that cannot be one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} cannot be a volume label (no blank, slash or control character, not empty, no leading dot)"
)]
pub struct BadLabel(pub String);

/// A label Amanda can read back and that names one file in the volume's directory: no
/// blank (the label line is split at blanks), no `/`, no control character, not empty.
pub fn check_label(label: &str) -> Result<(), BadLabel> {
    if label.is_empty()
        || label.starts_with('.')
        || label
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(BadLabel(label.to_owned()));
    }
    Ok(())
}

/// Empties a volume and writes its label (the old files go first, the label last, each
/// synced, so a crash leaves either the old volume or an empty one that is re-labelled).
pub fn write_label(dir: &Path, datestamp: &str, label: &str) -> io::Result<()> {
    check_label(label).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    fs::create_dir_all(dir)?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::remove_file(e.path())?;
        }
    }
    sync_dir(dir);
    let path = dir.join(OsStr::new(&label_file_name(label)));
    let tmp = dir.join(".label.tmp");
    fs::write(&tmp, label_block(datestamp, label))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir);
    Ok(())
}

/// fsync of a directory (best effort: some file systems refuse it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/vtapes-example")
            .join(rel)
    }

    #[test]
    fn the_label_block_is_the_real_one() {
        let real = fs::read(fixture("vtapes/slot1/00000.vtapes-example-01")).unwrap();
        assert_eq!(label_block("20261203084155", "vtapes-example-01"), real);
        assert_eq!(
            parse_label_block(&real).unwrap(),
            ("20261203084155".into(), "vtapes-example-01".into())
        );
        assert_eq!(
            read(&fixture("vtapes/slot2")).unwrap(),
            Content::Labeled {
                label: "vtapes-example-02".into(),
                datestamp: "20261203084201".into()
            }
        );
    }

    #[test]
    fn part_names_are_the_vfs_devices() {
        let n = part_file_name(
            1,
            "localhost",
            b"/tmp/amanda-harness/data-vtapes/vtapes-example",
            0,
        );
        assert!(fixture("vtapes/slot1").join(OsStr::from_bytes(&n)).exists());
    }

    #[test]
    fn foreign_contents_are_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), Content::Empty);
        fs::write(d.path().join("notes.txt"), b"x").unwrap();
        assert!(
            matches!(read(d.path()).unwrap(), Content::NotAmanda(w) if w.contains("no Amanda volume label"))
        );
        fs::write(d.path().join("00000.x"), b"AMANDA: FILE 2026 h /d lev 0").unwrap();
        assert!(
            matches!(read(d.path()).unwrap(), Content::NotAmanda(w) if w.contains("Amanda FILE"))
        );
        write_label(d.path(), "20260101000000", "vt-01").unwrap();
        assert_eq!(files(d.path()).unwrap().len(), 1);
        for bad in ["../x", "a b", "", ".hidden", "x\ny"] {
            assert!(
                write_label(d.path(), "20260101000000", bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            files(d.path()).unwrap().len(),
            1,
            "a refused label touches nothing"
        );
        assert_eq!(used_bytes(d.path()).unwrap(), BLOCK as u64);
    }
}
