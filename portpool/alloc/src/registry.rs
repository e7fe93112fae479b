//! Host-wide leases: processes on one host never hand out the same port.
//!
//! A lease of `udp` port 850 holds an exclusive `flock` on `<run_dir>/udp-850.lock`. The
//! kernel drops a flock when its process dies, so the leases of a dead process reclaim
//! themselves; the pid written into the file is only for messages. The file is unlinked
//! on release while still locked, and a claimer checks that the file it locked is still
//! the one at the path (same device and inode), so an unlink racing with a claim can
//! never leave two processes holding "the same" lock on two different inodes.
//!
//! What this module must NOT do: bind sockets, or decide which port to try (the pool
//! does). Default run dir: `/run/amanda-rs/ports`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use proto::ports::Transport;

/// The default directory of the lock files.
pub const DEFAULT_RUN_DIR: &str = "/run/amanda-rs/ports";

/// A directory of per-port lock files shared by every amanda-rs process on the host.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// Why a claim did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another live process holds the port (its pid when it wrote one).
    #[error("held by {}", match .pid { Some(p) => format!("pid {p}"), None => "another process".to_owned() })]
    Held { pid: Option<u32> },
    #[error("lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A claimed port. Dropping it unlinks the file and releases the lock.
#[derive(Debug)]
pub struct HostLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl HostLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        // Unlink first, while still holding the lock: a claimer that opened the old inode
        // will notice the mismatch and retry on a fresh file.
        let _ = fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}

impl Registry {
    /// Use (and create, mode 1777 like /tmp, so root and `backup` can share it) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            // Shared by processes of different users; the sticky bit keeps one user
            // from deleting another's lock file.
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777));
        }
        Ok(Registry { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock file of a port.
    pub fn path_of(&self, proto: Transport, port: u16) -> PathBuf {
        self.dir.join(format!("{proto}-{port}.lock"))
    }

    /// Claim `port` for this process without blocking.
    pub fn try_claim(&self, proto: Transport, port: u16) -> Result<HostLock, ClaimError> {
        let path = self.path_of(proto, port);
        let io_err = |source| ClaimError::Io {
            path: path.clone(),
            source,
        };
        let open = |p: &Path| {
            // The directory is shared (mode 1777); a lock file left by another user is
            // opened read-only: a read-only fd can be flocked.
            open_for_lock(p, 0o644).or_else(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                        .open(p)
                } else {
                    Err(e)
                }
            })
        };
        match lock_by_name(&path, open) {
            Ok(mut lock) => {
                // Best effort: a read-only fd cannot record the pid.
                let _ = write_pid(&mut lock);
                Ok(HostLock {
                    lock: Some(lock),
                    path,
                })
            }
            Err(LockError::Held(mut file)) => Err(ClaimError::Held {
                pid: read_pid(&mut file),
            }),
            // Unlinked under us on every attempt: only releases racing with us do that.
            Err(LockError::Raced) => Err(ClaimError::Held { pid: None }),
            Err(LockError::Io(e)) => Err(io_err(e)),
        }
    }
}

/// Why [`lock_by_name`] did not take its lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file holds it; the file is handed back (to read a pid from, say).
    #[error("held by another open file")]
    Held(File),
    #[error("{0}")]
    Io(io::Error),
    /// The name was removed or replaced between the open and the lock, every time.
    #[error("removed or replaced each time it was locked")]
    Raced,
}

/// Opens `path` to be locked: read-write, created with `mode` if missing, never truncated
/// (the lock comes first), never through a symlink, not inherited by children.
pub fn open_for_lock(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// An exclusive, non-blocking `flock` on the file named `path`, opened by `open`, that is
/// still the file of that name once locked: a remover may unlink the name between our open
/// and our lock, leaving the lock on an orphaned inode, so the name is checked (same device
/// and inode) and the open retried a bounded number of times. Shared by this registry and
/// dumper's holding and index files.
pub fn lock_by_name(
    path: &Path,
    open: impl Fn(&Path) -> io::Result<File>,
) -> Result<Flock<File>, LockError> {
    for _ in 0..16 {
        let file = open(path).map_err(LockError::Io)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => return Err(LockError::Held(file)),
            Err((_, errno)) => return Err(LockError::Io(errno.into())),
        };
        let ours = lock.metadata().map_err(LockError::Io)?;
        match fs::symlink_metadata(path) {
            Ok(named) if named.dev() == ours.dev() && named.ino() == ours.ino() => return Ok(lock),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LockError::Io(e)),
        }
    }
    Err(LockError::Raced)
}

fn write_pid(file: &mut File) -> io::Result<()> {
    // Only ever rewrite a plain file of our own with one name (no hard link planted in the
    // shared directory to make us truncate something else).
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_port_is_held_until_the_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().join("ports")).unwrap();
        let lock = reg.try_claim(Transport::Udp, 850).unwrap();
        assert!(lock.path().ends_with("udp-850.lock"));
        match reg.try_claim(Transport::Udp, 850) {
            Err(ClaimError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        // Another protocol is another port.
        let _tcp = reg.try_claim(Transport::Tcp, 850).unwrap();
        drop(lock);
        assert!(
            !reg.path_of(Transport::Udp, 850).exists(),
            "released locks are unlinked"
        );
        reg.try_claim(Transport::Udp, 850).unwrap();
    }

    #[test]
    fn a_stale_lock_file_of_a_dead_process_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path()).unwrap();
        // A file left behind with a pid, but no lock on it: its process is gone.
        fs::write(reg.path_of(Transport::Tcp, 851), "999999\n").unwrap();
        let lock = reg.try_claim(Transport::Tcp, 851).unwrap();
        let text = fs::read_to_string(lock.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
