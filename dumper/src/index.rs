//! Index files: the INDEX stream of a dump, gzip-compressed, where Amanda keeps them:
//! `<indexdir>/<host>/<disk>/<timestamp>_<level>.gz` with host and disk sanitised
//! (`/ : \` become `_`, common-src/file.c: sanitise_filename; server-src/amindex.c:
//! getindexfname). The bytes are the client's, unchanged (spec §6.7.6), so Amanda's
//! `amindexd`/`amrecover` can read them.
//!
//! Like the holding file, the index is written as `<name>.tmp` and renamed when the dump
//! succeeded; a failed dump leaves no index. Index streams are small (a line per file), so
//! they are compressed on the dump's own thread through a buffered writer.
//!
//! What this module must not do: parse or sort the index.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::holding::{sanitise, tmp_path};

/// The index file of a dump.
pub fn index_path(
    indexdir: &Path,
    host: &str,
    disk: &[u8],
    timestamp: &str,
    level: i32,
) -> PathBuf {
    indexdir
        .join(std::ffi::OsStr::from_bytes(&sanitise(host.as_bytes())))
        .join(std::ffi::OsStr::from_bytes(&sanitise(disk)))
        .join(format!("{timestamp}_{level}.gz"))
}

/// Writing an index file failed.
#[derive(Debug, thiserror::Error)]
#[error("index {path}: {source}")]
pub struct IndexError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: io::Error,
}

/// A gzip index file being written.
pub struct IndexWriter {
    enc: Option<GzEncoder<BufWriter<File>>>,
    tmp: PathBuf,
    final_path: PathBuf,
    error: Option<io::Error>,
    bytes: u64,
}

impl IndexWriter {
    /// Creates `<final_path>.tmp` and its directories.
    pub fn create(final_path: PathBuf) -> Result<IndexWriter, IndexError> {
        let tmp = tmp_path(&final_path);
        let err = |source| IndexError {
            path: tmp.display().to_string(),
            source,
        };
        if let Some(dir) = final_path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(err)?;
        Ok(IndexWriter {
            enc: Some(GzEncoder::new(
                BufWriter::with_capacity(64 * 1024, file),
                Compression::fast(),
            )),
            tmp,
            final_path,
            error: None,
            bytes: 0,
        })
    }

    /// Appends index bytes. A write error is remembered and reported by
    /// [`IndexWriter::commit`] (Amanda only logs "Index corrupted"; we fail the index, not
    /// the dump).
    pub fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(e) = &mut self.enc
            && let Err(err) = e.write_all(data)
        {
            self.error = Some(err);
        }
        self.bytes += data.len() as u64;
    }

    /// Uncompressed bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Finishes the gzip stream and renames the file into place.
    pub fn commit(mut self) -> Result<PathBuf, IndexError> {
        let err = |source, p: &Path| IndexError {
            path: p.display().to_string(),
            source,
        };
        if let Some(e) = self.error.take() {
            let _ = fs::remove_file(&self.tmp);
            self.enc = None;
            return Err(err(e, &self.tmp));
        }
        let Some(enc) = self.enc.take() else {
            return Err(err(io::Error::other("already finished"), &self.tmp));
        };
        let finished = enc
            .finish()
            .and_then(|mut w| {
                w.flush()?;
                Ok(w)
            })
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all());
        if let Err(e) = finished {
            let _ = fs::remove_file(&self.tmp);
            return Err(err(e, &self.tmp));
        }
        fs::rename(&self.tmp, &self.final_path).map_err(|e| err(e, &self.final_path))?;
        Ok(self.final_path.clone())
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        if self.enc.is_some() {
            self.enc = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn path_follows_getindexfname() {
        assert_eq!(
            index_path(
                Path::new("/idx"),
                "localhost",
                b"/tmp/x y",
                "20260101020304",
                1
            ),
            PathBuf::from("/idx/localhost/_tmp_x y/20260101020304_1.gz")
        );
    }

    #[test]
    fn committed_index_gunzips_to_the_client_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = index_path(dir.path(), "h", b"/d", "20260101000000", 0);
        let mut w = IndexWriter::create(p.clone()).unwrap();
        w.write(b"/\n/a\n");
        w.write(b"/b/\n");
        assert_eq!(w.commit().unwrap(), p);
        let mut out = String::new();
        flate2::read::GzDecoder::new(File::open(&p).unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "/\n/a\n/b/\n");
    }

    #[test]
    fn dropped_index_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = index_path(dir.path(), "h", b"/d", "20260101000000", 0);
        let mut w = IndexWriter::create(p.clone()).unwrap();
        w.write(b"/\n");
        drop(w);
        assert!(!p.exists() && !tmp_path(&p).exists());
    }
}
