//! Holding-disk files: where a dump goes, and the writer thread that puts it there.
//!
//! A dump of `host:disk` at level L in run T is written as
//! `<holding dir>/<T>/<host>.<sanitised disk>.<L>` (Amanda's driver names them the same way;
//! sanitising turns `/`, `:` and `\` into `_`). Sanitising is not injective (`/x/a/b`,
//! `/x/a_b` and `/x/a:b` all become `_x_a_b`; Amanda's disklist parser refuses such DLEs), so
//! [`unique_names`] gives every DLE of a night its own stem, the later ones of a colliding
//! set a `~2`, `~3`... suffix, and [`pick_free`] skips names already on the disk. Amanda's
//! tools do not care: `amrestore`, `amfetchdump` and `amflush` read the header of every file
//! in a holding directory, never its name; the catalog records the actual name.
//!
//! While the dump runs the file is `<that>.tmp`: it starts with the 32 KiB Amanda dump-file
//! header, then the DATA bytes. The writer takes an `flock` on the `.tmp` before it
//! truncates it, so it never cuts a file another writer holds. Only a dump that succeeded is
//! flushed (`fsync`), renamed to its final name (never over an existing file), and its
//! directory synced; a failed dump's `.tmp` is removed. So a file without `.tmp` is always
//! complete, and its final header carries the SERVER-CRC (CRC and byte count of the payload)
//! by which [`verify`] checks it. Every directory created on the way is synced into its
//! parent. A `.tmp` that nobody holds was left by a killed run, and [`sweep_stale`] removes
//! it at the start of the next one; a finished file that a killed run renamed but never
//! recorded is adopted or removed by the run shell, after [`verify`].
//! Files are not split into `chunksize` pieces (Amanda's chunker does that for old file
//! systems; a single file is what `amrestore` reads best).
//!
//! Regular files cannot be polled, so the bytes go to a writer thread over a **bounded**
//! channel of large buffers: the bound (`buffers` x `buffer_size`) is the memory a dump may
//! hold, and a full channel blocks the network side, which stops reading its socket (TCP
//! backpressure). Buffers come back over a second channel and are reused.
//!
//! What this module must not do: know the protocol or the header's contents (the caller
//! builds the header), or decide which holding disk a dump uses (the driver does, from
//! [`free_bytes`] and the estimates: `driver::holding`).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use nix::fcntl::{Flock, FlockArg};
use portpool_alloc::registry::{LockError, lock_by_name, open_for_lock};
use proto::crc::{Crc32c, CrcValue};
use proto::header::{DumpHeader, FileKind, HEADER_SIZE};
use proto::quote::sanitise_filename;

/// `<host>.<sanitised disk>`: Amanda's stem of a DLE's holding file name.
pub fn stem(host: &str, disk: &[u8]) -> Vec<u8> {
    let mut n = sanitise_filename(host.as_bytes());
    n.push(b'.');
    n.extend_from_slice(&sanitise_filename(disk));
    n
}

/// `<host>.<sanitised disk>.<level>`.
pub fn file_name(host: &str, disk: &[u8], level: i32) -> Vec<u8> {
    with_level(&stem(host, disk), level)
}

fn with_level(stem: &[u8], level: i32) -> Vec<u8> {
    let mut n = stem.to_vec();
    n.extend_from_slice(format!(".{level}").as_bytes());
    n
}

fn suffixed(name: &[u8], n: u32) -> Vec<u8> {
    let mut v = name.to_vec();
    v.extend_from_slice(format!("~{n}").as_bytes());
    v
}

/// Makes `names` (in disklist order) unique: the first of equal names keeps it, the later
/// ones get `~2`, `~3`, ...: the first suffix that is neither taken nor any DLE's own name.
/// Injective, and stable from night to night while the disklist does not change.
pub fn unique_names(names: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let own: HashSet<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let mut used: HashSet<Vec<u8>> = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut pick = name.clone();
        let mut n = 1;
        while used.contains(&pick) || (n > 1 && own.contains(pick.as_slice())) {
            n += 1;
            pick = suffixed(name, n);
        }
        used.insert(pick.clone());
        out.push(pick);
    }
    out
}

/// The final path of a dump's holding file with Amanda's name (see [`pick_free`] for the
/// name a dump actually gets).
pub fn dump_path(
    holding_dir: &Path,
    timestamp: &str,
    host: &str,
    disk: &[u8],
    level: i32,
) -> PathBuf {
    holding_dir
        .join(timestamp)
        .join(OsStr::from_bytes(&file_name(host, disk, level)))
}

/// The final path for a dump whose unique stem is `stem`: `<dir>/<stem>.<level>`, or, if
/// that name is `claimed` by another dump of this run or already on the disk (as a
/// finished file or a `.tmp`), `<dir>/<stem>~N.<level>` with the first free N.
pub fn pick_free(dir: &Path, stem: &[u8], level: i32, claimed: &HashSet<PathBuf>) -> PathBuf {
    let taken = |p: &PathBuf| {
        claimed.contains(p)
            || fs::symlink_metadata(p).is_ok()
            || fs::symlink_metadata(tmp_path(p)).is_ok()
    };
    let mut path = dir.join(OsStr::from_bytes(&with_level(stem, level)));
    let mut n = 1;
    while taken(&path) {
        n += 1;
        path = dir.join(OsStr::from_bytes(&with_level(&suffixed(stem, n), level)));
    }
    path
}

/// `fsync` of a directory, so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("fsync of directory {}: {e}", dir.display()),
        )
    })
}

/// Syncs the directory of `path` after a rename into it; on failure, the text of the
/// warning (`what`: `holding disk`, `index`).
pub fn sync_parent(path: &Path, what: &str) -> Option<String> {
    let dir = path.parent()?;
    sync_dir(dir)
        .err()
        .map(|e| format!("{what}: {e}: {} may not survive a crash", path.display()))
}

/// Creates `dir` and its missing parents, syncing each new directory into its parent (and
/// the parent of the first missing one), so that a crash cannot lose the directory of a
/// file that was synced.
pub fn create_dir_synced(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while fs::symlink_metadata(p).is_err() {
        missing.push(p);
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another dump of this run made it at the same moment; it syncs it too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("mkdir {}: {e}", d.display()),
                ));
            }
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`, and nothing changed).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // The file system cannot do it: a hard link cannot replace either.
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens `path` for writing, creating it, with an exclusive `flock` taken **before** the
/// file is truncated: a file another writer holds is refused (`WouldBlock`), never cut.
/// A name swept away between the open and the lock is opened again
/// ([`portpool_alloc::registry::lock_by_name`]).
pub fn open_locked(path: &Path, mode: u32) -> io::Result<Flock<File>> {
    match lock_by_name(path, |p| open_for_lock(p, mode)) {
        Ok(file) => {
            file.set_len(0)?;
            Ok(file)
        }
        Err(LockError::Held(_)) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is being written by another dumper ({})",
                path.display(),
                nix::errno::Errno::EWOULDBLOCK
            ),
        )),
        Err(LockError::Io(e)) => Err(e),
        Err(LockError::Raced) => Err(io::Error::other(format!(
            "{}: removed by someone else each time it was created",
            path.display()
        ))),
    }
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
    for dir in subdirs(holding_dir) {
        removed.extend(sweep_tmp_in(&dir));
        // Only succeeds when nothing is left in it.
        let _ = fs::remove_dir(&dir);
    }
    removed
}

/// The subdirectories of `dir` (not following symlinks).
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes the `*.tmp` files directly in `dir` that no writer holds an `flock` on.
pub fn sweep_tmp_in(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(files) = fs::read_dir(dir) else {
        return removed;
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
    removed
}

/// The finished (not `.tmp`) regular files of the run directory `<holding dir>/<timestamp>`.
pub fn finished_files(run_dir: &Path) -> Vec<PathBuf> {
    let Ok(files) = fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = files
        .flatten()
        .filter(|f| f.file_type().is_ok_and(|t| t.is_file()))
        .map(|f| f.path())
        .filter(|p| p.extension().is_none_or(|e| e != "tmp"))
        .collect();
    out.sort();
    out
}

/// A holding file that passed [`verify`].
#[derive(Clone, Debug)]
pub struct Verified {
    /// Its header.
    pub header: DumpHeader,
    /// Payload bytes (the file minus its header).
    pub bytes: u64,
}

/// Why a holding file is not a complete dump as this module writes them.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// It cannot be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is shorter than a header.
    #[error("shorter than a dump-file header")]
    Short,
    /// Its header does not parse.
    #[error("header: {0}")]
    Header(proto::header::HeaderError),
    /// Its header is bad (`len`: the file's size).
    #[error("{len} bytes: {error}")]
    BadHeader {
        /// The file's length.
        len: u64,
        /// What is wrong with its header.
        error: Box<VerifyError>,
    },
    /// It is not a whole dump (a split part, a label...).
    #[error("not a whole dump ({0:?})")]
    NotWhole(FileKind),
    /// Its header has no SERVER-CRC: the dump never finished.
    #[error("its header has no SERVER-CRC (it was never finished)")]
    Unfinished,
    /// The payload is not as long as the SERVER-CRC says.
    #[error("{bytes} payload bytes, its header's SERVER-CRC says {}", .expected.size)]
    Size {
        /// The payload's length.
        bytes: u64,
        /// The header's SERVER-CRC.
        expected: CrcValue,
    },
    /// The payload's CRC is not the SERVER-CRC.
    #[error("payload CRC {actual}, its header's SERVER-CRC says {expected}")]
    Crc {
        /// The payload's.
        actual: CrcValue,
        /// The header's.
        expected: CrcValue,
    },
}

/// The dump-file header at the start of `path`.
pub fn read_header(path: &Path) -> Result<DumpHeader, VerifyError> {
    let mut f = File::open(path)?;
    header_of(&mut f)
}

/// Reads the header from `f`, leaving it positioned after it.
fn header_of(f: &mut File) -> Result<DumpHeader, VerifyError> {
    let mut head = vec![0u8; HEADER_SIZE];
    f.read_exact(&mut head).map_err(|_| VerifyError::Short)?;
    DumpHeader::parse(&head).map_err(VerifyError::Header)
}

/// Checks that `path` is a complete holding file as this module writes them: an Amanda
/// dump-file header with a SERVER-CRC, a payload of exactly that many bytes, with that CRC.
/// The error says what is wrong.
pub fn verify(path: &Path) -> Result<Verified, VerifyError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let header = header_of(&mut f).map_err(|e| VerifyError::BadHeader {
        len,
        error: Box::new(e),
    })?;
    if header.kind != FileKind::File {
        return Err(VerifyError::NotWhole(header.kind));
    }
    let Some(expected) = header.server_crc else {
        return Err(VerifyError::Unfinished);
    };
    let bytes = len - HEADER_SIZE as u64;
    if i64::try_from(bytes).ok() != Some(expected.size) {
        return Err(VerifyError::Size { bytes, expected });
    }
    let mut crc = Crc32c::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => crc.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if crc.value() != expected {
        return Err(VerifyError::Crc {
            actual: crc.value(),
            expected,
        });
    }
    Ok(Verified { header, bytes })
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

/// The buffers of one producer-consumer pair: at most `max` of `size` bytes exist; the
/// consumer gives them back over [`ChunkPool::returner`] and the producer reuses them.
#[derive(Debug)]
pub struct ChunkPool {
    free_tx: Sender<Chunk>,
    free_rx: Receiver<Chunk>,
    allocated: usize,
    max: usize,
    size: usize,
}

impl ChunkPool {
    /// A pool of at most `max` (at least 1) buffers of `size` bytes.
    pub fn new(max: usize, size: usize) -> ChunkPool {
        let max = max.max(1);
        let (free_tx, free_rx) = bounded::<Chunk>(max);
        ChunkPool {
            free_tx,
            free_rx,
            allocated: 0,
            max,
            size,
        }
    }

    /// Where the consumer gives buffers back.
    pub fn returner(&self) -> Sender<Chunk> {
        self.free_tx.clone()
    }

    /// An empty buffer: a returned one, or a new one while fewer than `max` exist; `None`
    /// when all are in flight (then [`ChunkPool::wait`]).
    pub fn try_take(&mut self) -> Option<Chunk> {
        if let Ok(mut c) = self.free_rx.try_recv() {
            c.filled = 0;
            return Some(c);
        }
        if self.allocated < self.max {
            self.allocated += 1;
            return Some(Chunk {
                buf: vec![0; self.size],
                filled: 0,
            });
        }
        None
    }

    /// Waits up to `timeout` for a buffer to come back (`None`: timed out).
    pub fn wait(&self, timeout: Duration) -> Option<Chunk> {
        let mut c = self.free_rx.recv_timeout(timeout).ok()?;
        c.filled = 0;
        Some(c)
    }

    /// Takes an unused buffer back.
    pub fn recycle(&self, c: Chunk) {
        let _ = self.free_tx.try_send(c);
    }

    /// Drops the buffers given back (so that a consumer blocked giving one back goes on).
    pub fn drain(&self) {
        while self.free_rx.try_recv().is_ok() {}
    }

    /// How many buffers exist.
    pub fn allocated(&self) -> usize {
        self.allocated
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

/// What the writer thread gives back: the bytes written and the file, still locked.
type WriterResult = Result<(u64, Flock<File>), HoldingError>;

/// A committed holding file.
#[derive(Debug)]
pub struct Committed {
    /// Bytes written, header included.
    pub written: u64,
    /// Why the directory could not be synced after the rename, if it could not.
    pub dir_sync: Option<String>,
}

/// Writes one holding file through a writer thread. Create it with
/// [`HoldingWriter::create`], get buffers with [`HoldingWriter::chunk`], hand them over
/// with [`HoldingWriter::submit`], and end with [`HoldingWriter::commit`] or
/// [`HoldingWriter::abort`] (dropping it aborts).
pub struct HoldingWriter {
    tx: Option<Sender<Msg>>,
    pool: ChunkPool,
    thread: Option<JoinHandle<WriterResult>>,
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
            create_dir_synced(dir).map_err(create_err)?;
        }
        // The lock marks the file as being written for `sweep_stale` in other runs; it goes
        // with the descriptor when the writer thread closes it (or the process dies).
        let file = open_locked(&tmp, 0o600).map_err(create_err)?;
        let buffers = buffers.max(2);
        // One message can sit in the channel while the writer writes another and the
        // network side fills a third: `buffers - 2` queued keeps the total at `buffers`.
        let (tx, rx) = bounded::<Msg>(buffers.saturating_sub(2).max(1));
        let pool = ChunkPool::new(buffers, buffer_size.max(4096));
        let back = pool.returner();
        let path = tmp.display().to_string();
        let thread = std::thread::Builder::new()
            .name("holding-writer".into())
            .spawn(move || writer_loop(file, rx, back, path))
            .map_err(create_err)?;
        Ok(HoldingWriter {
            tx: Some(tx),
            pool,
            thread: Some(thread),
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
        if let Some(c) = self.pool.try_take() {
            return Ok(c);
        }
        // The writer gives every buffer back unless it stopped.
        loop {
            if let Some(c) = self.pool.wait(Duration::from_secs(1)) {
                return Ok(c);
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(self.join_error());
            }
        }
    }

    /// Hands a filled buffer to the writer (blocks while the channel is full). An empty
    /// buffer is just recycled.
    pub fn submit(&mut self, chunk: Chunk) -> Result<(), HoldingError> {
        if chunk.filled == 0 {
            self.pool.recycle(chunk);
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

    /// Waits for every byte to be written, `fsync`s, renames to the final name (never over
    /// an existing file) and syncs the directory.
    pub fn commit(self) -> Result<Committed, HoldingError> {
        self.commit_with_header(None, None)
    }

    /// Like [`HoldingWriter::commit`], first overwriting the start of the file with
    /// `header` (same length as the header written first: the final header with sizes and
    /// CRCs filled in), and refusing (removing the file) if `expected_len` is given and the
    /// file has another length.
    pub fn commit_with_header(
        mut self,
        header: Option<Vec<u8>>,
        expected_len: Option<u64>,
    ) -> Result<Committed, HoldingError> {
        if let Some(h) = header {
            let sent = self.tx.as_ref().map(|tx| tx.send(Msg::Rewrite(h)).is_ok());
            if sent != Some(true) {
                return Err(self.join_error());
            }
        }
        self.tx = None;
        // The file comes back still locked, so that no sweeper takes it before the rename.
        let (written, _lock) = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => return Err(self.gone()),
        };
        let finish = |source| HoldingError::Finish {
            path: self.tmp.display().to_string(),
            source,
        };
        if let Some(want) = expected_len.filter(|w| *w != written) {
            return Err(finish(io::Error::other(format!(
                "{written} bytes written, {want} expected (header and DATA)"
            ))));
        }
        rename_noreplace(&self.tmp, &self.final_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                finish(io::Error::new(
                    e.kind(),
                    format!(
                        "{} exists already; it is not replaced",
                        self.final_path.display()
                    ),
                ))
            } else {
                finish(e)
            }
        })?;
        self.done = true;
        // The file is complete and in place; a failed directory sync only means the rename
        // might not survive a crash, which the caller reports.
        let dir_sync = sync_parent(&self.final_path, "holding disk");
        Ok(Committed { written, dir_sync })
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
        self.pool.drain();
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
) -> WriterResult {
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
    Ok((written, file))
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

    // issue 10: `/x/a/b`, `/x/a_b` and `/x/a:b` of one host mapped to one holding file.
    #[test]
    fn names_are_unique_for_dles_that_sanitise_alike() {
        let stems: Vec<Vec<u8>> = [
            ("h", b"/x/a/b".as_slice()),
            ("h", b"/x/a_b"),
            ("h", b"/x/a:b"),
            ("h", b"/x/a_b~2"),
            ("a.b", b"c"),
            ("a", b"b.c"),
            ("h", b"/y"),
        ]
        .iter()
        .map(|(h, d)| stem(h, d))
        .collect();
        let unique = unique_names(&stems);
        let text: Vec<String> = unique
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(
            text,
            [
                "h._x_a_b",
                "h._x_a_b~3",
                "h._x_a_b~4",
                "h._x_a_b~2",
                "a.b.c",
                "a.b.c~2",
                "h._y"
            ],
            "the first keeps Amanda's name; a DLE whose own name looks suffixed keeps it"
        );
        let set: HashSet<&Vec<u8>> = unique.iter().collect();
        assert_eq!(set.len(), unique.len());
    }

    #[test]
    fn pick_free_skips_claimed_names_and_names_on_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut claimed = HashSet::new();
        let a = pick_free(dir.path(), b"h._d", 0, &claimed);
        assert_eq!(a, dir.path().join("h._d.0"));
        claimed.insert(a.clone());
        let b = pick_free(dir.path(), b"h._d", 0, &claimed);
        assert_eq!(b, dir.path().join("h._d~2.0"));
        fs::write(tmp_path(&b), b"").unwrap();
        fs::write(dir.path().join("h._d~3.0"), b"").unwrap();
        assert_eq!(
            pick_free(dir.path(), b"h._d", 0, &claimed),
            dir.path().join("h._d~4.0")
        );
    }

    /// A writer (two 4 KiB buffers) of the holding file `name` in a new temporary directory.
    fn new_writer(name: &str) -> (tempfile::TempDir, PathBuf, HoldingWriter) {
        let dir = tempfile::tempdir().unwrap();
        let fin = dir.path().join(name);
        let w = HoldingWriter::create(fin.clone(), 2, 4096).unwrap();
        (dir, fin, w)
    }

    // issue 10: `create` truncated the `.tmp` before it took the lock.
    #[test]
    fn create_never_truncates_a_file_another_writer_holds() {
        let (_dir, fin, mut first) = new_writer("run/h._d.0");
        first.write_all(&[7u8; 100_000]).unwrap();
        // Until the writer thread has the bytes (the file is preallocated beyond them).
        let mut len = 0;
        for _ in 0..200 {
            len = fs::metadata(tmp_path(&fin)).unwrap().len();
            if len >= 100_000 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(len >= 100_000, "{len}");
        let err = HoldingWriter::create(fin.clone(), 2, 4096).err().unwrap();
        assert!(
            err.to_string().contains("being written by another dumper"),
            "{err}"
        );
        assert_eq!(
            fs::metadata(tmp_path(&fin)).unwrap().len(),
            len,
            "not truncated"
        );
        assert_eq!(first.commit().unwrap().written, 100_000);
    }

    // issue 10: a second rename replaced the first dump's finished file.
    #[test]
    fn commit_never_replaces_a_finished_file() {
        let dir = tempfile::tempdir().unwrap();
        let fin = dir.path().join("h._d.0");
        fs::write(&fin, b"an earlier dump").unwrap();
        let mut w = HoldingWriter::create(fin.clone(), 2, 4096).unwrap();
        w.write_all(b"a later dump").unwrap();
        let err = w.commit().unwrap_err().to_string();
        assert!(err.contains("exists already"), "{err}");
        assert_eq!(fs::read(&fin).unwrap(), b"an earlier dump");
        assert!(!tmp_path(&fin).exists(), "the refused dump is removed");
    }

    #[test]
    fn commit_refuses_a_file_of_the_wrong_length() {
        let (_dir, fin, mut w) = new_writer("h._d.0");
        w.write_all(&[1u8; 5000]).unwrap();
        let err = w
            .commit_with_header(None, Some(6000))
            .unwrap_err()
            .to_string();
        assert!(err.contains("5000 bytes written, 6000 expected"), "{err}");
        assert!(!fin.exists() && !tmp_path(&fin).exists());
    }

    #[test]
    fn created_directories_exist_and_rename_lands_in_them() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_synced(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_synced(&deep).unwrap();
        let e = sync_dir(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("fsync of directory"), "{e}");
    }

    #[test]
    fn verify_accepts_only_complete_files() {
        let dir = tempfile::tempdir().unwrap();
        let payload = vec![42u8; 70_000];
        let mut crc = Crc32c::new();
        crc.update(&payload);
        let dle = proto::dle::Dle {
            program: "GNUTAR".into(),
            disk: Some("/d".into()),
            ..proto::dle::Dle::default()
        };
        let info = proto::mesg::InfoFields {
            backup: Some("/bin/tar".into()),
            ..Default::default()
        };
        let mut h = DumpHeader::for_dump(b"20260101000000", b"h", &dle, 0, &info, None);
        let first = h.build().unwrap();
        h.server_crc = Some(crc.value());
        let good = dir.path().join("good");
        fs::write(&good, [h.build().unwrap(), payload.clone()].concat()).unwrap();
        let v = verify(&good).unwrap();
        assert_eq!((v.bytes, v.header.level), (70_000, 0));
        let cases = [
            (
                "short",
                [h.build().unwrap(), payload[..1000].to_vec()].concat(),
                "1000 payload bytes",
            ),
            (
                "unfinished",
                [first, payload.clone()].concat(),
                "no SERVER-CRC",
            ),
            (
                "tiny",
                b"AMANDA: FILE".to_vec(),
                "shorter than a dump-file header",
            ),
        ];
        for (name, bytes, why) in cases {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            let e = verify(&p).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        let mut bad = [h.build().unwrap(), payload].concat();
        *bad.last_mut().unwrap() ^= 1;
        let p = dir.path().join("flipped");
        fs::write(&p, bad).unwrap();
        assert!(matches!(verify(&p).unwrap_err(), VerifyError::Crc { .. }));
        assert!(verify(&p).unwrap_err().to_string().contains("payload CRC"));
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
        assert_eq!(w.commit().unwrap().written, data.len() as u64);
        assert_eq!(fs::read(&fin).unwrap(), data);
        assert!(!tmp_path(&fin).exists());
    }

    #[test]
    fn abort_and_drop_leave_nothing_behind() {
        let (_dir, fin, mut w) = new_writer("host._d.1");
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
        assert!(w.pool.allocated() <= 4);
        assert_eq!(w.commit().unwrap().written, 1000 * 8192);
    }
}
