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
