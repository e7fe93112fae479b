//! Holding-disk files: where a dump goes, and the writer thread that puts it there.
//!
//! A dump of `host:disk` at level L in run T is written as
//! `<holding dir>/<T>/<host>.<sanitised disk>.<L>` (Amanda's driver names them the same way;
//! sanitising turns `/`, `:` and `\` into `_`). While the dump runs the file is
//! `<that>.tmp`: it starts with the 32 KiB Amanda dump-file header, then the DATA bytes. Only
//! a dump that succeeded is flushed (`fsync`), renamed to its final name, and its directory
//! synced; a failed dump's `.tmp` is removed. So a file without `.tmp` is always complete.
//! The writer holds an `flock` on its `.tmp` while it writes; a `.tmp` that nobody holds was
//! left by a killed run, and [`sweep_stale`] removes it at the start of the next one.
//! Files are not split into `chunksize` pieces (Amanda's chunker does that for old file
//! systems; a single file is what `amrestore` reads best).
//!
//! Regular files cannot be polled, so the bytes go to a writer thread over a **bounded**
//! channel of large buffers: the bound (`buffers` x `buffer_size`) is the memory a dump may
//! hold, and a full channel blocks the network side, which stops reading its socket (TCP
//! backpressure). Buffers come back over a second channel and are reused.
//!
//! What this module must not do: know the protocol or the header's contents (the caller
//! builds the header), or decide which holding disk to use beyond free space.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use nix::fcntl::{Flock, FlockArg};

use crate::plan::Holding;

/// Amanda's `sanitise_filename`: `/`, `:` and `\` become `_`.
pub fn sanitise(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&b| {
            if matches!(b, b'/' | b':' | b'\\') {
                b'_'
            } else {
                b
            }
        })
        .collect()
}

/// `<host>.<sanitised disk>.<level>`.
pub fn file_name(host: &str, disk: &[u8], level: i32) -> Vec<u8> {
    let mut n = sanitise(host.as_bytes());
    n.push(b'.');
    n.extend_from_slice(&sanitise(disk));
    n.extend_from_slice(format!(".{level}").as_bytes());
    n
}

/// The final path of a dump's holding file.
pub fn dump_path(
    holding_dir: &Path,
    timestamp: &str,
    host: &str,
    disk: &[u8],
    level: i32,
) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    holding_dir
        .join(timestamp)
        .join(std::ffi::OsStr::from_bytes(&file_name(host, disk, level)))
}

/// The in-progress name of a holding file.
pub fn tmp_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Removes the `.tmp` files under `<holding dir>/<run>/` that no writer holds (a run that was
/// killed left them), and run directories that end up empty. Returns what it removed.
pub fn sweep_stale(holding_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(runs) = fs::read_dir(holding_dir) else {
        return removed;
    };
    for run in runs.flatten() {
        let dir = run.path();
        if !run.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "tmp") {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let free = Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok();
            if free && fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
        // Only succeeds when nothing is left in it.
        let _ = fs::remove_dir(&dir);
    }
    removed
}

/// Free bytes for unprivileged users on the file system of `dir` (its closest existing
/// ancestor).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let mut p = dir;
    loop {
        if p.exists() {
            let st = nix::sys::statvfs::statvfs(p).ok()?;
            return Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64));
        }
        p = p.parent()?;
    }
}

/// How many bytes a holding disk may still take: `use` > 0 caps what this run writes
/// (`used_by_run` so far), `use` <= 0 keeps that much free.
pub fn allowance(h: &Holding, used_by_run: u64) -> u64 {
    let free = free_bytes(&h.dir).unwrap_or(0);
    if h.use_kib > 0 {
        let cap = (h.use_kib as u64).saturating_mul(1024);
        free.min(cap.saturating_sub(used_by_run))
    } else {
        free.saturating_sub(h.use_kib.unsigned_abs().saturating_mul(1024))
    }
}

/// Picks the holding disk with the largest allowance that fits `needed` bytes, or the
/// largest one when none is known to fit (an estimate is only an estimate). `used` is
/// what this run wrote to each so far. `None` only when there are no holding disks.
pub fn choose(disks: &[Holding], used: &[u64], needed: u64) -> Option<usize> {
    let allowances: Vec<u64> = disks
        .iter()
        .enumerate()
        .map(|(i, h)| allowance(h, used.get(i).copied().unwrap_or(0)))
        .collect();
    let best = allowances
        .iter()
        .enumerate()
        .max_by_key(|(_, a)| **a)
        .map(|(i, _)| i)?;
    let _ = needed;
    Some(best)
}

/// A buffer travelling between the network side and the writer thread. Its `Vec` always
/// has its full length (zeroed once when allocated); `filled` says how much is data.
#[derive(Debug)]
pub struct Chunk {
    /// The storage, `len() == capacity`.
    pub buf: Vec<u8>,
    /// Bytes of data at the start of `buf`.
    pub filled: usize,
}

impl Chunk {
    /// Free space at the end.
    pub fn spare(&mut self) -> &mut [u8] {
        let f = self.filled.min(self.buf.len());
        &mut self.buf[f..]
    }

    /// Appends as much of `data` as fits; returns how much did.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(data.len());
        spare[..n].copy_from_slice(&data[..n]);
        self.filled += n;
        n
    }

    /// Whether no more data fits.
    pub fn is_full(&self) -> bool {
        self.filled >= self.buf.len()
    }
}

enum Msg {
    Data(Chunk),
    /// Overwrite the start of the file (the final header, once sizes and CRCs are known).
    Rewrite(Vec<u8>),
}

/// Why writing a holding file failed; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HoldingError {
    /// Creating the run directory or the file failed.
    #[error("holding disk: cannot create {path}: {source}")]
    Create {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A write failed (a full disk, typically).
    #[error("holding disk: writing {path}: {source}")]
    Write {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Flushing or renaming the finished file failed.
    #[error("holding disk: finishing {path}: {source}")]
    Finish {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The writer thread is gone (it failed earlier; see its error).
    #[error("holding disk: the writer of {path} stopped")]
    WriterGone {
        /// The path.
        path: String,
    },
}

/// Writes one holding file through a writer thread. Create it with
/// [`HoldingWriter::create`], get buffers with [`HoldingWriter::chunk`], hand them over
/// with [`HoldingWriter::submit`], and end with [`HoldingWriter::commit`] or
/// [`HoldingWriter::abort`] (dropping it aborts).
pub struct HoldingWriter {
    tx: Option<Sender<Msg>>,
    free_rx: Receiver<Chunk>,
    free_tx: Sender<Chunk>,
    thread: Option<JoinHandle<Result<u64, HoldingError>>>,
    allocated: usize,
    max_buffers: usize,
    buffer_size: usize,
    tmp: PathBuf,
    final_path: PathBuf,
    done: bool,
}

impl HoldingWriter {
    /// Creates `<final_path>.tmp` (and its directory) and starts the writer thread, with at
    /// most `buffers` buffers of `buffer_size` bytes in flight.
    pub fn create(
        final_path: PathBuf,
        buffers: usize,
        buffer_size: usize,
    ) -> Result<HoldingWriter, HoldingError> {
        let tmp = tmp_path(&final_path);
        let create_err = |source| HoldingError::Create {
            path: tmp.display().to_string(),
            source,
        };
        if let Some(dir) = final_path.parent() {
            fs::create_dir_all(dir).map_err(create_err)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(create_err)?;
        // Marks the file as being written for `sweep_stale` in other runs; the lock goes with
        // the descriptor when the writer thread closes it (or the process dies).
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| create_err(e.into()))?;
        let buffers = buffers.max(2);
        // One message can sit in the channel while the writer writes another and the
        // network side fills a third: `buffers - 2` queued keeps the total at `buffers`.
        let (tx, rx) = bounded::<Msg>(buffers.saturating_sub(2).max(1));
        let (free_tx, free_rx) = bounded::<Chunk>(buffers);
        let back = free_tx.clone();
        let path = tmp.display().to_string();
        let thread = std::thread::Builder::new()
            .name("holding-writer".into())
            .spawn(move || writer_loop(file, rx, back, path))
            .map_err(create_err)?;
        Ok(HoldingWriter {
            tx: Some(tx),
            free_rx,
            free_tx,
            thread: Some(thread),
            allocated: 0,
            max_buffers: buffers,
            buffer_size: buffer_size.max(4096),
            tmp,
            final_path,
            done: false,
        })
    }

    /// The file being written.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The name it gets on commit.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// An empty buffer: a returned one, a new one while fewer than `buffers` exist, or
    /// (blocking) the next one the writer gives back.
    pub fn chunk(&mut self) -> Result<Chunk, HoldingError> {
        if let Ok(mut c) = self.free_rx.try_recv() {
            c.filled = 0;
            return Ok(c);
        }
        if self.allocated < self.max_buffers {
            self.allocated += 1;
            return Ok(Chunk {
                buf: vec![0; self.buffer_size],
                filled: 0,
            });
        }
        match self.free_rx.recv() {
            Ok(mut c) => {
                c.filled = 0;
                Ok(c)
            }
            Err(_) => Err(self.gone()),
        }
    }

    /// Hands a filled buffer to the writer (blocks while the channel is full). An empty
    /// buffer is just recycled.
    pub fn submit(&mut self, chunk: Chunk) -> Result<(), HoldingError> {
        if chunk.filled == 0 {
            let _ = self.free_tx.try_send(chunk);
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(self.gone());
        };
        if tx.send(Msg::Data(chunk)).is_err() {
            return Err(self.join_error());
        }
        Ok(())
    }

    /// Writes `data` (copying it into buffers). For small things such as the header.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), HoldingError> {
        while !data.is_empty() {
            let mut c = self.chunk()?;
            let n = c.push(data);
            data = &data[n..];
            self.submit(c)?;
        }
        Ok(())
    }

    fn gone(&self) -> HoldingError {
        HoldingError::WriterGone {
            path: self.tmp.display().to_string(),
        }
    }

    /// The writer thread's own error, after it stopped.
    fn join_error(&mut self) -> HoldingError {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => self.gone(),
        }
    }

    /// Waits for every byte to be written, `fsync`s, renames to the final name and syncs the
    /// directory. Returns the bytes written (header included).
    pub fn commit(self) -> Result<u64, HoldingError> {
        self.commit_with_header(None)
    }

    /// Like [`HoldingWriter::commit`], first overwriting the start of the file with
    /// `header` (same length as the header written first: the final header with sizes and
    /// CRCs filled in).
    pub fn commit_with_header(mut self, header: Option<Vec<u8>>) -> Result<u64, HoldingError> {
        if let Some(h) = header {
            let sent = self.tx.as_ref().map(|tx| tx.send(Msg::Rewrite(h)).is_ok());
            if sent != Some(true) {
                return Err(self.join_error());
            }
        }
        self.tx = None;
        let written = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => return Err(self.gone()),
        };
        let finish = |source| HoldingError::Finish {
            path: self.tmp.display().to_string(),
            source,
        };
        fs::rename(&self.tmp, &self.final_path).map_err(finish)?;
        if let Some(dir) = self.final_path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.done = true;
        Ok(written)
    }

    /// Stops the writer and removes the `.tmp` file.
    pub fn abort(mut self) {
        self.abort_in_place();
    }

    fn abort_in_place(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.tx = None;
        // Unblock a writer waiting to give a buffer back, then wait for it.
        while self.free_rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for HoldingWriter {
    fn drop(&mut self) {
        self.abort_in_place();
    }
}

/// The file is grown ahead of the data in steps of this many bytes with `fallocate`: one
/// allocation per step instead of one per page halves the cost of writing to tmpfs, and
/// gives disk file systems contiguous extents. The excess is cut off at the end.
const PREALLOCATE_STEP: u64 = 128 * 1024 * 1024;

fn writer_loop(
    mut file: Flock<File>,
    rx: Receiver<Msg>,
    back: Sender<Chunk>,
    path: String,
) -> Result<u64, HoldingError> {
    let mut written: u64 = 0;
    let mut allocated: u64 = 0;
    let mut preallocate = true;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Data(chunk) => {
                let data = &chunk.buf[..chunk.filled.min(chunk.buf.len())];
                let end = written + data.len() as u64;
                if preallocate && end > allocated {
                    let len = PREALLOCATE_STEP.max(end - allocated);
                    match (i64::try_from(allocated), i64::try_from(len)) {
                        (Ok(off), Ok(len)) => {
                            let r = nix::fcntl::fallocate(
                                &*file,
                                nix::fcntl::FallocateFlags::empty(),
                                off,
                                len,
                            );
                            match r {
                                Ok(()) => allocated += len as u64,
                                // Not supported, or no room for a whole step: plain writes
                                // from here on (a full disk then fails the write itself).
                                Err(_) => preallocate = false,
                            }
                        }
                        _ => preallocate = false,
                    }
                }
                if let Err(source) = file.write_all(data) {
                    return Err(HoldingError::Write { path, source });
                }
                written = end;
                // The other side may be gone or have enough buffers; either way drop it.
                let _ = back.try_send(chunk);
            }
            Msg::Rewrite(h) => {
                use std::os::unix::fs::FileExt;
                if let Err(source) = file.write_all_at(&h, 0) {
                    return Err(HoldingError::Write { path, source });
                }
            }
        }
    }
    // The sender hung up: either commit (flush now) or abort (the file is removed anyway).
    if allocated > written {
        file.set_len(written)
            .map_err(|source| HoldingError::Finish {
                path: path.clone(),
                source,
            })?;
    }
    file.sync_all()
        .map_err(|source| HoldingError::Finish { path, source })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_tmp_files_nobody_writes() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("20260101000000");
        fs::create_dir_all(&run).unwrap();
        let stale = run.join("h._a.0.tmp");
        fs::write(&stale, b"partial").unwrap();
        let done = run.join("h._b.0");
        fs::write(&done, b"complete").unwrap();
        let live = HoldingWriter::create(run.join("h._c.0"), 2, 4096).unwrap();
        let removed = sweep_stale(dir.path());
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(done.exists(), "finished dumps stay");
        assert!(live.tmp_path().exists(), "a file being written stays");
        live.abort();
        let empty = dir.path().join("20250101000000");
        fs::create_dir_all(&empty).unwrap();
        fs::write(empty.join("x.1.tmp"), b"").unwrap();
        sweep_stale(dir.path());
        assert!(!empty.exists(), "a run directory left empty goes");
    }

    #[test]
    fn names_follow_amandas_driver() {
        assert_eq!(
            file_name("localhost", b"/tmp/a:b\\c", 1),
            b"localhost._tmp_a_b_c.1".to_vec()
        );
        assert_eq!(
            dump_path(Path::new("/h"), "20260101000000", "c", b"/x y", 0),
            PathBuf::from("/h/20260101000000/c._x y.0")
        );
    }

    #[test]
    fn commit_renames_only_a_complete_file() {
        let dir = tempfile::tempdir().unwrap();
        let fin = dir.path().join("run/host._d.0");
        let mut w = HoldingWriter::create(fin.clone(), 3, 4096).unwrap();
        assert!(w.tmp_path().exists());
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        w.write_all(&data).unwrap();
        assert!(!fin.exists());
        assert_eq!(w.commit().unwrap(), data.len() as u64);
        assert_eq!(fs::read(&fin).unwrap(), data);
        assert!(!tmp_path(&fin).exists());
    }

    #[test]
    fn abort_and_drop_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let fin = dir.path().join("host._d.1");
        let mut w = HoldingWriter::create(fin.clone(), 2, 4096).unwrap();
        w.write_all(b"partial").unwrap();
        w.abort();
        assert!(!fin.exists() && !tmp_path(&fin).exists());
        let w = HoldingWriter::create(fin.clone(), 2, 4096).unwrap();
        drop(w);
        assert!(!fin.exists() && !tmp_path(&fin).exists());
    }

    #[test]
    fn writer_never_holds_more_than_its_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = HoldingWriter::create(dir.path().join("f"), 4, 8192).unwrap();
        for _ in 0..1000 {
            let mut c = w.chunk().unwrap();
            let n = c.buf.len();
            c.filled = n;
            w.submit(c).unwrap();
        }
        assert!(w.allocated <= 4);
        assert_eq!(w.commit().unwrap(), 1000 * 8192);
    }
}
