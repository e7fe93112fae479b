//! Scratch directories under /tmp/amanda-rs-tests (kept with `AMANDA_RS_KEEP=1`), and
//! handing files to the Amanda user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{AMANDA_USER, run_ok};

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

/// A scratch directory under /tmp/amanda-rs-tests, readable by the Amanda user, removed on
/// drop unless `AMANDA_RS_KEEP=1`.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new empty scratch directory whose name contains `tag`.
    pub fn new(tag: &str) -> Scratch {
        let base = Path::new("/tmp/amanda-rs-tests");
        fs::create_dir_all(base).expect("create /tmp/amanda-rs-tests");
        let _ = fs::set_permissions(base, fs::Permissions::from_mode(0o755));
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("AMANDA_RS_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Changes the owner of `path` (recursively) to the Amanda user.
pub fn chown_amanda(path: &Path) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{AMANDA_USER}:{AMANDA_USER}"))
            .arg(path),
    );
}
