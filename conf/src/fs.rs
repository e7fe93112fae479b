//! Where configuration files come from: the real file system, or memory.
//!
//! The parsers never open files themselves; they ask a [`FileSystem`]. [`RealFs`] is the
//! only code in this crate (besides [`crate::amandahosts::load`] and
//! [`crate::security::load`], which check ownership and modes) that touches the disk.
//! [`MemFs`] serves tests and fuzzing; [`ChrootFs`] reads absolute paths below a directory
//! (tests use it to load Debian's example configs, whose `includefile`s are absolute).
//!
//! What this module must not do: parse.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// A source of file contents.
pub trait FileSystem {
    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl FileSystem for RealFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Files held in memory, by exact path.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    files: HashMap<PathBuf, Vec<u8>>,
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files.insert(path.into(), content.into());
        self
    }
    /// Builder form of [`MemFs::insert`].
    pub fn with(mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> Self {
        self.insert(path, content);
        self
    }
}

impl FileSystem for MemFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
}

/// The real file system seen from `root`: `/etc/amanda/x` reads `<root>/etc/amanda/x`.
/// Relative paths are read relative to `root` too.
#[derive(Clone, Debug)]
pub struct ChrootFs {
    root: PathBuf,
}

impl ChrootFs {
    /// A view of the tree below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ChrootFs { root: root.into() }
    }
}

impl FileSystem for ChrootFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        if rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "\"..\" is not allowed below a ChrootFs root",
            ));
        }
        std::fs::read(self.root.join(rel))
    }
}

/// The text of an I/O error without Rust's " (os error N)" suffix, like strerror().
pub(crate) fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
