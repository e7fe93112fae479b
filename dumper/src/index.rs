//! Index files: the INDEX stream of a dump, gzip-compressed, where Amanda keeps them:
//! `<indexdir>/<host>/<disk>/<timestamp>_<level>.gz` with host and disk sanitised
//! (`/ : \` become `_`, common-src/file.c: sanitise_filename; server-src/amindex.c:
//! getindexfname). The bytes are the client's, unchanged (spec §6.7.6), so Amanda's
//! `amindexd`/`amrecover` can read them.
//!
//! DLEs whose sanitised names collide (`/x/a/b`, `/x/a_b`, `/x/a:b`) would share one
//! directory, so the later ones get a `~2`, `~3`... suffix on the disk part
//! ([`crate::holding::unique_names`] over [`index_key`]); Amanda's `amrecover` only finds
//! the first one's, as it would only have that one (its disklist refuses the others).
//!
//! Like the holding file, the index is written as `<name>.tmp` (under an `flock`, taken before
//! the file is truncated) and renamed when the dump succeeded, never over an existing file;
//! directories created on the way and the one renamed into are synced. A failed dump leaves
//! no index; a killed one leaves a `.tmp` that [`sweep_stale`] removes. Index streams are
//! usually small (a line per file), so they are compressed on the dump's own thread through a
//! buffered writer; the dump shell caps how many bytes it accepts.
//!
//! What this module must not do: parse or sort the index.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use nix::fcntl::Flock;
use proto::quote::sanitise_filename;

use crate::holding::{
    create_dir_synced, open_locked, rename_noreplace, subdirs, sweep_tmp_in, sync_parent, tmp_path,
};

/// `<sanitised host>/<sanitised disk>`: where Amanda keeps a DLE's index files, relative to
/// `indexdir` (made unique over a night's DLEs by [`crate::holding::unique_names`]).
pub fn index_key(host: &str, disk: &[u8]) -> Vec<u8> {
    let mut k = sanitise_filename(host.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&sanitise_filename(disk));
    k
}

/// The index file of a dump whose DLE has the index key `key`.
pub fn index_path(indexdir: &Path, key: &[u8], timestamp: &str, level: i32) -> PathBuf {
    indexdir
        .join(std::ffi::OsStr::from_bytes(key))
        .join(format!("{timestamp}_{level}.gz"))
}

/// Removes the `.tmp` index files under `<indexdir>/<host>/<disk>/` that no writer holds (a
/// killed run left them). Returns what it removed.
pub fn sweep_stale(indexdir: &Path) -> Vec<PathBuf> {
    subdirs(indexdir)
        .iter()
        .flat_map(|host| subdirs(host))
        .flat_map(|disk| sweep_tmp_in(&disk))
        .collect()
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

/// The `.tmp` file, holding its `flock` while it is written.
struct Locked(Flock<File>);

impl Write for Locked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A gzip index file being written.
pub struct IndexWriter {
    enc: Option<GzEncoder<BufWriter<Locked>>>,
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
            create_dir_synced(dir).map_err(err)?;
        }
        let file = open_locked(&tmp, 0o644).map_err(err)?;
        Ok(IndexWriter {
            enc: Some(GzEncoder::new(
                BufWriter::with_capacity(64 * 1024, Locked(file)),
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

    /// Finishes the gzip stream and renames the file into place (never over an existing
    /// one). Returns its path and, if the directory could not be synced, why.
    pub fn commit(mut self) -> Result<(PathBuf, Option<String>), IndexError> {
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
            .and_then(|f| f.0.sync_all().map(|()| f));
        // Still locked until renamed, so that no sweeper takes it.
        let _lock = match finished {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                return Err(err(e, &self.tmp));
            }
        };
        if let Err(e) = rename_noreplace(&self.tmp, &self.final_path) {
            let _ = fs::remove_file(&self.tmp);
            return Err(err(e, &self.final_path));
        }
        let dir_sync = sync_parent(&self.final_path, "index");
        Ok((self.final_path.clone(), dir_sync))
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

    fn path(dir: &Path, host: &str, disk: &[u8], ts: &str, level: i32) -> PathBuf {
        index_path(dir, &index_key(host, disk), ts, level)
    }

    #[test]
    fn path_follows_getindexfname() {
        assert_eq!(
            path(
                Path::new("/idx"),
                "localhost",
                b"/tmp/x y",
                "20260101020304",
                1
            ),
            PathBuf::from("/idx/localhost/_tmp_x y/20260101020304_1.gz")
        );
    }

    // issue 10: `/x/a/b`, `/x/a_b` and `/x/a:b` shared one index directory.
    #[test]
    fn colliding_dles_get_their_own_index_directories() {
        let keys: Vec<Vec<u8>> = [b"/x/a/b".as_slice(), b"/x/a_b", b"/x/a:b"]
            .iter()
            .map(|d| index_key("h", d))
            .collect();
        let unique = crate::holding::unique_names(&keys);
        let paths: Vec<PathBuf> = unique
            .iter()
            .map(|k| index_path(Path::new("/idx"), k, "20260101000000", 0))
            .collect();
        assert_eq!(
            paths,
            [
                "/idx/h/_x_a_b/20260101000000_0.gz",
                "/idx/h/_x_a_b~2/20260101000000_0.gz",
                "/idx/h/_x_a_b~3/20260101000000_0.gz"
            ]
            .map(PathBuf::from)
        );
    }

    /// A fresh index root with a writer of host `h`, disk `/d`, level 0 in it: (the root,
    /// the index path, the writer).
    fn writer_in_tempdir() -> (tempfile::TempDir, PathBuf, IndexWriter) {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "h", b"/d", "20260101000000", 0);
        let w = IndexWriter::create(p.clone()).unwrap();
        (dir, p, w)
    }

    // issue 10: the index `.tmp` was truncated before anything checked who held it.
    #[test]
    fn an_index_being_written_is_neither_truncated_nor_swept() {
        let (dir, p, mut w) = writer_in_tempdir();
        w.write(&[b'/'; 100_000]);
        let before = fs::metadata(tmp_path(&p)).unwrap().len();
        assert!(
            IndexWriter::create(p.clone()).is_err(),
            "a second writer is refused"
        );
        assert!(sweep_stale(dir.path()).is_empty());
        assert_eq!(fs::metadata(tmp_path(&p)).unwrap().len(), before);
        drop(w);
        let stale = tmp_path(&path(dir.path(), "h", b"/e", "20260101000000", 0));
        fs::create_dir_all(stale.parent().unwrap()).unwrap();
        fs::write(&stale, b"x").unwrap();
        assert_eq!(sweep_stale(dir.path()), vec![stale]);
    }

    #[test]
    fn committed_index_gunzips_to_the_client_bytes() {
        let (_dir, p, mut w) = writer_in_tempdir();
        w.write(b"/\n/a\n");
        w.write(b"/b/\n");
        assert_eq!(w.commit().unwrap(), (p.clone(), None));
        let mut out = String::new();
        flate2::read::GzDecoder::new(File::open(&p).unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "/\n/a\n/b/\n");
    }

    #[test]
    fn dropped_index_leaves_no_file() {
        let (_dir, p, mut w) = writer_in_tempdir();
        w.write(b"/\n");
        drop(w);
        assert!(!p.exists() && !tmp_path(&p).exists());
    }
}
