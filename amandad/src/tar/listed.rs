//! GNU tar `--listed-incremental` state files, named and chained exactly like the real
//! client's, so a client can switch between the real amandad and ours without losing its
//! incremental chain.
//!
//! For DLE `disk` on host `host` (the `hostname=` option) at level N, the real client
//! (sendbackup-gnutar.c, sendsize.c getsize_gnutar, amgtar.c amgtar_get_incrname):
//! 1. names the chain `<gnutar_list_dir>/<host><sanitised disk>` where the disk name has
//!    every `/`, `:` and `\` replaced by `_` (common-src/file.c sanitise_filename), e.g.
//!    `localhost_tmp_data_plain`;
//! 2. removes `<chain>_N.new`, then copies the highest existing `<chain>_M` with M < N (or
//!    nothing: /dev/null for a level 0, or when none exists) to `<chain>_N.new`, mode 0600;
//! 3. runs tar with `--listed-incremental <chain>_N.new`;
//! 4. after a successful backup renames `<chain>_N.new` to `<chain>_N` when the DLE records
//!    (`record YES`), and deletes it otherwise; after an estimate, always deletes it.
//!
//! [`Snapshot`] is that `.new` file as a guard: dropped without [`Snapshot::commit`], it is
//! deleted.
//!
//! One difference, because step 1 is not injective: `/x/a/b`, `/x/a_b` and `/x/a:b` all name
//! the chain `<host>_x_a_b`, so two such DLEs would share (and clobber) one incremental state,
//! and their concurrent dumps would delete each other's `.new` file. [`claim`] records which
//! disk owns a chain name (`<chain>.disk`); the first disk to use the name keeps it (so a
//! chain the real client made carries on), any other gets `<chain>~<hash of its name>`.
//!
//! What this module must not do: follow a symlink when creating the `.new` file, or leave a
//! `.new` file behind on any path but a crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use proto::quote::sanitise_filename;

use crate::services::util::strerror;

/// `<list_dir>/<host><sanitised disk>`, the stem of every state file of a DLE.
pub fn chain_base(list_dir: &Path, host: &[u8], disk: &[u8]) -> PathBuf {
    let mut name = host.to_vec();
    name.extend_from_slice(&sanitise_filename(disk));
    list_dir.join(std::ffi::OsStr::from_bytes(&name))
}

/// The chain `disk` really uses: `base` (Amanda's name, [`chain_base`]) when `disk` owns it or
/// nobody does yet, else `<base>~<16 hex digits>` from a hash of the disk name. Ownership is
/// the file `<chain>.disk` holding the disk name, created atomically (written aside, then
/// linked), so concurrent estimates and dumps of colliding DLEs agree on who owns what.
pub fn claim(base: &Path, disk: &[u8]) -> Result<PathBuf, ListError> {
    if owned_by(base, disk)? {
        return Ok(base.to_path_buf());
    }
    let own = with_suffix(base, &format!("~{:016x}", fnv1a(disk)));
    if owned_by(&own, disk)? {
        return Ok(own);
    }
    Err(ListError::Create {
        path: with_suffix(&own, ".disk").display().to_string(),
        reason: "owned by another disk name (hash collision)".into(),
    })
}

/// Whether `disk` owns the chain `base`, claiming it if nobody does.
fn owned_by(base: &Path, disk: &[u8]) -> Result<bool, ListError> {
    let owner = with_suffix(base, ".disk");
    let err = |path: &Path, e: io::Error| ListError::Create {
        path: path.display().to_string(),
        reason: strerror(&e),
    };
    loop {
        match std::fs::read(&owner) {
            Ok(name) => return Ok(name == disk),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&owner, e)),
        }
        // One aside name per attempt, not per process: amandad's workers claim chains on
        // several threads at once, and a shared name let one thread link another's owner
        // file and both take the chain (issue 10).
        static ATTEMPT: AtomicU64 = AtomicU64::new(0);
        let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
        let aside = with_suffix(base, &format!(".disk.{}.{n}", std::process::id()));
        let _ = std::fs::remove_file(&aside);
        {
            use std::io::Write;
            let mut f = create_private(&aside).map_err(|e| err(&aside, e))?;
            f.write_all(disk).map_err(|e| err(&aside, e))?;
        }
        let linked = std::fs::hard_link(&aside, &owner);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => return Ok(true),
            // Someone else claimed it meanwhile: read whose it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(&owner, e)),
        }
    }
}

/// FNV-1a, 64 bits: a stable name for a disk's own chain (not a security boundary: the
/// owner file is compared with the full name).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<base>_<level>`.
pub fn level_file(base: &Path, level: i32) -> PathBuf {
    with_suffix(base, &format!("_{level}"))
}

/// `<base>_<level>.new`.
pub fn new_file(base: &Path, level: i32) -> PathBuf {
    with_suffix(base, &format!("_{level}.new"))
}

/// A state-file operation that failed, with the real client's wording.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Creating the `.new` file.
    #[error("error opening {path}: {reason}")]
    Create { path: String, reason: String },
    /// Reading the previous level's file.
    #[error("reading from {path}: {reason}")]
    Read { path: String, reason: String },
    /// Writing the `.new` file.
    #[error("writing to {path}: {reason}")]
    Write { path: String, reason: String },
}

/// The `.new` state file of one tar run. Deleted on drop unless committed.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    from: Option<PathBuf>,
    done: bool,
}

impl Snapshot {
    /// Steps 1-2 above for `level`: the previous level's file (if any) of the chain `disk`
    /// owns ([`claim`]) copied to `<base>_<level>.new`.
    pub fn prepare(base: &Path, disk: &[u8], level: i32) -> Result<Snapshot, ListError> {
        // When the owner file cannot be written, neither can the `.new` file: fall back to
        // Amanda's name so that the error below is the real client's.
        let base = &claim(base, disk).unwrap_or_else(|_| base.to_path_buf());
        let path = new_file(base, level);
        let _ = std::fs::remove_file(&path);
        let mut from = None;
        let mut input: Option<File> = None;
        for lower in (0..level.max(0)).rev() {
            let candidate = level_file(base, lower);
            if let Ok(f) = File::open(&candidate) {
                input = Some(f);
                from = Some(candidate);
                break;
            }
        }
        let mut out = create_private(&path).map_err(|e| ListError::Create {
            path: path.display().to_string(),
            reason: strerror(&e),
        })?;
        // From here on the guard deletes the file on every error path.
        let snap = Snapshot {
            path,
            from,
            done: false,
        };
        if let Some(mut input) = input {
            copy(&mut input, &mut out).map_err(|(read, e)| {
                let reason = strerror(&e);
                if read {
                    ListError::Read {
                        path: snap
                            .from
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        reason,
                    }
                } else {
                    ListError::Write {
                        path: snap.path.display().to_string(),
                        reason,
                    }
                }
            })?;
        }
        Ok(snap)
    }

    /// The `.new` file tar updates.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lower level's file it was copied from (`None`: started empty).
    pub fn copied_from(&self) -> Option<&Path> {
        self.from.as_deref()
    }

    /// Step 4 after a successful backup: keep it as `<base>_<level>` when `record`, delete
    /// it otherwise. Returns the real client's warning text if the rename or delete failed.
    pub fn commit(mut self, record: bool) -> Option<String> {
        self.done = true;
        let stem = self.path.as_os_str().as_bytes();
        let target = PathBuf::from(std::ffi::OsStr::from_bytes(
            stem.strip_suffix(b".new").unwrap_or(stem),
        ));
        if record {
            std::fs::rename(&self.path, &target).err().map(|e| {
                format!(
                    "warning [renaming {} to {}: {}]",
                    self.path.display(),
                    target.display(),
                    strerror(&e)
                )
            })
        } else {
            std::fs::remove_file(&self.path)
                .err()
                .map(|e| format!("warning [unlink {}: {}]", self.path.display(), strerror(&e)))
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Copies `input` to `out`; the flag says whether the failure was on the read side.
fn copy(input: &mut File, out: &mut File) -> Result<(), (bool, io::Error)> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((true, e)),
        };
        out.write_all(&buf[..n]).map_err(|e| (false, e))?;
    }
    out.sync_data().map_err(|e| (false, e))
}

/// A new file only its owner can read, never through a symlink and never over an existing
/// file.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// How many incremental state files `dir` holds: every file but the `<chain>.disk` records
/// of which disk owns a chain name (for tests that check nothing is left behind).
#[cfg(test)]
pub(crate) fn state_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list dir")
        .filter(|e| {
            !e.as_ref()
                .expect("dirent")
                .file_name()
                .to_string_lossy()
                .ends_with(".disk")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_real_client() {
        let base = chain_base(
            Path::new("/var/lib/amanda/gnutar-lists"),
            b"localhost",
            b"/tmp/amanda-harness/data/plain",
        );
        assert_eq!(
            base,
            Path::new("/var/lib/amanda/gnutar-lists/localhost_tmp_amanda-harness_data_plain")
        );
        assert_eq!(
            level_file(&base, 0),
            Path::new("/var/lib/amanda/gnutar-lists/localhost_tmp_amanda-harness_data_plain_0")
        );
        assert_eq!(
            new_file(&base, 3),
            Path::new("/var/lib/amanda/gnutar-lists/localhost_tmp_amanda-harness_data_plain_3.new")
        );
        // the real file from the harness run keeps its UTF-8 and spaces
        let base = chain_base(
            Path::new("/l"),
            b"localhost",
            "/tmp/amanda-harness/data/dle with space é".as_bytes(),
        );
        assert_eq!(
            level_file(&base, 0),
            Path::new("/l/localhost_tmp_amanda-harness_data_dle with space é_0")
        );
    }

    #[test]
    fn level_n_copies_the_highest_existing_lower_level() {
        let dir = tempfile::tempdir().unwrap();
        let base = chain_base(dir.path(), b"h", b"/d");
        std::fs::write(level_file(&base, 0), b"zero").unwrap();
        std::fs::write(level_file(&base, 2), b"two").unwrap();
        let s = Snapshot::prepare(&base, b"/d", 3).unwrap();
        assert_eq!(std::fs::read(s.path()).unwrap(), b"two");
        assert_eq!(s.copied_from(), Some(level_file(&base, 2).as_path()));
        drop(s);
        assert!(
            !new_file(&base, 3).exists(),
            "dropped without commit: deleted"
        );

        let s = Snapshot::prepare(&base, b"/d", 2).unwrap();
        assert_eq!(std::fs::read(s.path()).unwrap(), b"zero");
        assert!(s.commit(true).is_none());
        assert_eq!(std::fs::read(level_file(&base, 2)).unwrap(), b"zero");

        let s = Snapshot::prepare(&base, b"/d", 0).unwrap();
        assert_eq!(std::fs::read(s.path()).unwrap(), b"");
        assert!(s.copied_from().is_none());
        assert!(s.commit(false).is_none());
        assert!(!new_file(&base, 0).exists());
        assert_eq!(
            std::fs::read(level_file(&base, 0)).unwrap(),
            b"zero",
            "no-record leaves the chain alone"
        );
    }

    #[test]
    fn a_stale_new_file_or_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let base = chain_base(dir.path(), b"h", b"/d");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, new_file(&base, 0)).unwrap();
        let s = Snapshot::prepare(&base, b"/d", 0).unwrap();
        assert!(
            !std::fs::symlink_metadata(s.path())
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    /// Issue 10: `/x/a/b`, `/x/a_b` and `/x/a:b` share Amanda's chain name; each must keep
    /// its own incremental state, the first one under Amanda's name.
    // issue 10: claims made at once on several threads of one process (amandad's workers)
    // shared the aside file, and two disks could both take Amanda's name.
    #[test]
    fn claims_racing_on_threads_of_one_process_give_each_disk_its_own_chain() {
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let disks: [&[u8]; 3] = [b"/x/a/b", b"/x/a_b", b"/x/a:b"];
            let base = chain_base(dir.path(), b"h", disks[0]);
            let start = std::sync::Barrier::new(disks.len());
            let chains: Vec<PathBuf> = std::thread::scope(|s| {
                let threads: Vec<_> = disks
                    .iter()
                    .map(|d| {
                        let (base, start) = (&base, &start);
                        s.spawn(move || {
                            start.wait();
                            claim(base, d).unwrap()
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let distinct: std::collections::HashSet<_> = chains.iter().collect();
            assert_eq!(distinct.len(), disks.len(), "{chains:?}");
            for (d, c) in disks.iter().zip(&chains) {
                assert_eq!(std::fs::read(with_suffix(c, ".disk")).unwrap(), *d);
            }
        }
    }

    #[test]
    fn disks_whose_names_sanitise_alike_get_their_own_chains() {
        let dir = tempfile::tempdir().unwrap();
        let disks: [&[u8]; 3] = [b"/x/a/b", b"/x/a_b", b"/x/a:b"];
        let base = chain_base(dir.path(), b"h", disks[0]);
        for d in disks {
            assert_eq!(
                chain_base(dir.path(), b"h", d),
                base,
                "Amanda's name collides"
            );
        }
        // A chain the real client left (no owner yet) goes to the first disk that asks.
        std::fs::write(level_file(&base, 0), b"real client's").unwrap();
        let bases: Vec<PathBuf> = disks.iter().map(|d| claim(&base, d).unwrap()).collect();
        assert_eq!(bases[0], base);
        assert_ne!(bases[1], bases[0]);
        assert_ne!(bases[2], bases[0]);
        assert_ne!(bases[2], bases[1]);
        for (d, b) in disks.iter().zip(&bases) {
            assert_eq!(&claim(&base, d).unwrap(), b, "stable");
            assert!(b.parent() == Some(dir.path()), "inside the list directory");
        }
        // Concurrent level 0s of all three, then level 1s: separate files throughout.
        let snaps: Vec<Snapshot> = disks
            .iter()
            .map(|d| Snapshot::prepare(&base, d, 0).unwrap())
            .collect();
        for (i, s) in snaps.into_iter().enumerate() {
            std::fs::write(s.path(), format!("state {i}")).unwrap();
            assert!(s.commit(true).is_none());
        }
        for (i, d) in disks.iter().enumerate() {
            let s = Snapshot::prepare(&base, d, 1).unwrap();
            assert_eq!(
                std::fs::read_to_string(s.path()).unwrap(),
                format!("state {i}")
            );
        }
    }

    #[test]
    fn missing_list_dir_is_the_real_error_text() {
        let e = Snapshot::prepare(Path::new("/nonexistent/dir/h_d"), b"/d", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error opening /nonexistent/dir/h_d_0.new: No such file or directory"
        );
    }
}
