//! The tar machinery the services use: how GNU tar is run for a DLE and what its files hold.
//!
//! - [`gnutar`]: the two dumptype forms (`GNUTAR`, amgtar), the amgtar properties, the tar
//!   command lines, and the choice between the privileged helper and plain tar;
//! - [`runtar`]: the rules of the setuid-root helper `amandad-runtar` (its binary is
//!   `src/bin/amandad-runtar.rs`; why and how: `src/services/README.md`);
//! - [`listed`], [`amandates`]: the incremental state (`--listed-incremental` files, the
//!   amandates file), named and written like the real client's;
//! - [`exinclude`]: the exclude and include lists tar reads;
//! - [`regex`]: POSIX regexes through the C library, as Amanda compiles them;
//! - [`estimate`]: the size of a level-0 archive computed from a walk of the tree, without
//!   running tar.
//!
//! What this module must not do: speak the Amanda protocol or decide what a request means
//! (that is `crate::services`, which calls in here), or start any process but tar.

pub mod amandates;
pub mod estimate;
pub mod exinclude;
pub mod gnutar;
pub mod listed;
pub mod regex;
pub mod runtar;

use std::path::{Path, PathBuf};

/// Where the tar machinery finds its programs and keeps its state on this host, resolved once
/// at start-up (amanda-client.conf and amanda-rs's settings; Debian's paths by default).
#[derive(Clone, Debug)]
pub struct TarPaths {
    /// GNU tar.
    pub gnutar_path: PathBuf,
    /// The privileged helper that runs tar as root (`amandad-runtar`), when installed; tar runs
    /// as the Amanda user otherwise.
    pub runtar_path: Option<PathBuf>,
    /// Where the `--listed-incremental` state files live (amanda-client.conf
    /// `gnutar_list_dir`; Debian: /var/lib/amanda/gnutar-lists).
    pub gnutar_list_dir: PathBuf,
    /// The amandates file (amanda-client.conf `amandates`; Debian: /var/lib/amanda/amandates).
    pub amandates: PathBuf,
    /// A private directory for temporary files (exclude/include lists).
    pub tmp_dir: PathBuf,
}

impl TarPaths {
    /// Debian's paths, with the installed helper.
    pub fn debian() -> TarPaths {
        TarPaths {
            gnutar_path: PathBuf::from(runtar::DEFAULT_GNUTAR),
            runtar_path: Some(PathBuf::from(runtar::INSTALLED_PATH)),
            gnutar_list_dir: PathBuf::from(conf::defaults::GNUTAR_LIST_DIR),
            amandates: PathBuf::from(conf::defaults::AMANDATES),
            tmp_dir: PathBuf::from("/tmp/amanda"),
        }
    }

    /// Debian's tar, run without the helper, with its state and temporary files below `root`
    /// (`gnutar-lists`, `amandates`, `tmp`): for tests and fuzz targets, which must not touch
    /// /var/lib/amanda.
    pub fn below(root: &Path) -> TarPaths {
        TarPaths {
            runtar_path: None,
            gnutar_list_dir: root.join("gnutar-lists"),
            amandates: root.join("amandates"),
            tmp_dir: root.join("tmp"),
            ..TarPaths::debian()
        }
    }

    /// `gnutar_list_dir`, or `None` when it is not configured (empty), in which case the
    /// legacy GNUTAR program falls back to amandates and `--incremental --newer`.
    pub fn list_dir(&self) -> Option<&Path> {
        (!self.gnutar_list_dir.as_os_str().is_empty()).then_some(self.gnutar_list_dir.as_path())
    }
}

/// Helpers the tests of the tar machinery and of the services share.
#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// The member names GNU tar lists for `archive` (`tar -tf -`), one a line. The archive
    /// is written from a thread, so tar's output cannot block it.
    pub(crate) fn tar_list(archive: &[u8]) -> String {
        let mut child = Command::new("tar")
            .args(["-tf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let archive = archive.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&archive);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
