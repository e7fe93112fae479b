//! Small helpers the services share: C error texts, access checks as the real client words
//! them, and paths from wire bytes.
//!
//! What this module must not do: hold policy (which check, which message); it only
//! answers questions about the system.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// glibc's `strerror` text for an errno value ("No such file or directory").
pub fn strerror_errno(errno: i32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; the XSI/GNU strerror_r that libc binds
    // (`__xpg_strerror_r` on glibc) writes a NUL-terminated string into it.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    let end = memchr::memchr(0, &buf).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The C text for an I/O error (without Rust's " (os error N)" suffix).
pub fn strerror(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => strerror_errno(n),
        None => e.to_string(),
    }
}

/// The symbolic errno name ("ENOENT"), as Amanda's JSON messages carry it.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// `access(2)`-style check with the effective ids (Amanda's `EUIDACCESS`).
pub fn euid_access(path: &Path, mode: libc::c_int) -> Result<(), i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated path; eaccess only reads it.
    let rc = unsafe { libc::eaccess(c.as_ptr(), mode) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// A path from bytes received on the wire (any bytes but NUL are valid in Unix paths).
pub fn path_from_bytes(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Lossy UTF-8 for messages.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The real and effective uid, for the `(ruid:N euid:N)` texts.
pub fn uids() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::geteuid().as_raw(),
    )
}

/// For tests that need something of the machine (root, a root-owned GNU tar): under CI
/// (`CI=true`) its absence fails the test, elsewhere the test is skipped, loudly.
#[cfg(test)]
pub(crate) fn skip_unless_ci(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}, and CI=true: a skipped test would pass silently");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// A scratch directory under /tmp that the Amanda user can read (mode 0755), for trees a
/// test has the real client or our services run over.
#[cfg(test)]
pub(crate) fn readable_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// What the real Debian client's `service` (selfcheck, sendsize...) answers to the request
/// `req`, run as `runuser -u backup -- /usr/lib/amanda/<service> amandad bsdtcp`; `None`
/// (a skip, or a failure under CI) without root or the real amanda-client.
#[cfg(test)]
pub(crate) fn real_client_service(service: &str, req: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    let program = format!("/usr/lib/amanda/{service}");
    if !nix::unistd::geteuid().is_root() || !Path::new(&program).exists() {
        skip_unless_ci("needs root and the real amanda-client");
        return None;
    }
    let mut child = std::process::Command::new("runuser")
        .args(["-u", "backup", "--", &program, "amandad", "bsdtcp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(req.as_bytes()).ok()?;
    Some(child.wait_with_output().ok()?.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_glibcs() {
        assert_eq!(strerror_errno(libc::ENOENT), "No such file or directory");
        assert_eq!(
            strerror(&io::Error::from_raw_os_error(libc::EACCES)),
            "Permission denied"
        );
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
    }

    #[test]
    fn access_checks_report_errno() {
        assert_eq!(
            euid_access(Path::new("/nonexistent/x"), libc::F_OK),
            Err(libc::ENOENT)
        );
        assert!(euid_access(Path::new("/"), libc::F_OK).is_ok());
        assert_eq!(
            euid_access(Path::new("a\0b"), libc::F_OK),
            Err(libc::EINVAL)
        );
    }
}
