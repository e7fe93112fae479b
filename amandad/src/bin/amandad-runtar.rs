//! `amandad-runtar`: the setuid-root helper that runs GNU tar as root for amandad's
//! services, after checking the invocation against a fixed allow-list.
//!
//! Usage (by amandad only): `amandad-runtar <tar-path> <tar arguments>...`. Install it
//! owned by root, group of the Amanda user, mode 4750. The rules, and why each exists, are
//! in `amandad::tar::runtar`; this file only wires them to the process: real uid,
//! /etc/amanda-security.conf, privileges, `exec`.
//!
//! Exit status: tar's own when tar runs (this process becomes tar); 2 with one line
//! `amandad-runtar: error [<reason>]` on stderr when the helper refuses.
//!
//! What this program must not do: run anything but the checked tar, keep any environment
//! variable, create or write a file itself, or touch a file the caller named with root's
//! identity.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use amandad::tar::runtar::{self, Policy, Refusal};
use nix::unistd::{Gid, Uid};

fn main() {
    ensure_std_fds();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Err(refusal) = run(&args);
    let _ = std::io::stderr().write_all(&runtar::refusal_line(&refusal));
    std::process::exit(runtar::EXIT_REFUSED);
}

fn run(args: &[OsString]) -> Result<Infallible, Refusal> {
    let ruid = nix::unistd::getuid().as_raw();
    let rgid = nix::unistd::getgid().as_raw();
    runtar::check_caller(ruid, runtar::amanda_uid())?;
    if !nix::unistd::geteuid().is_root() {
        return Err(Refusal::SecurityFile(
            "amandad-runtar is not setuid root".to_owned(),
        ));
    }
    runtar::check_environment(std::env::vars_os().map(|(k, _)| k))?;
    let request = runtar::parse_args(args)?;
    let policy = load_policy()?;
    // Every path the caller named is resolved and opened as the caller, never as root.
    let prepared = runtar::as_caller(ruid, rgid, || runtar::prepare(request, &policy, ruid))??;

    // Become root entirely, so tar does not run with a mixed identity.
    let root_err = |what: &str, e: nix::Error| Refusal::SecurityFile(format!("{what}: {e}"));
    nix::unistd::setgroups(&[]).map_err(|e| root_err("setgroups", e))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| root_err("setresgid", e))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| root_err("setresuid", e))?;

    for fd in &prepared.keep_open {
        // The checked files reach tar as /dev/fd/N: they must survive exec.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| root_err("fcntl", e))?;
    }
    // Arguments come from argv, which holds no NUL: this cannot fail.
    let cstr = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| Refusal::SecurityFile(format!("NUL in {:?}", String::from_utf8_lossy(b))))
    };
    let path = cstr(prepared.tar.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for a in &prepared.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let env: [CString; 0] = [];
    let e = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    Err(Refusal::Tar(format!(
        "can not execute {}: {e}",
        prepared.tar.display()
    )))
}

/// Opens /dev/null on any of fds 0, 1, 2 the caller closed, so that no file the helper or tar
/// opens can become tar's standard output (the archive) or error by accident.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table; a free slot gives EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // The lowest free descriptor is `fd` (the lower ones are open by now). No
            // O_CLOEXEC: tar must inherit it.
            // SAFETY: a constant NUL-terminated path; the descriptor is deliberately kept.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The `amandad-runtar:*` lines of /etc/amanda-security.conf; the built-in defaults when the
/// file does not exist; a refusal when it exists but is not safe (not root's, writable by
/// others) or unreadable.
fn load_policy() -> Result<Policy, Refusal> {
    let path = Path::new(conf::security::PATH);
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Policy::from_security_conf(&conf::SecurityConf::default()));
    }
    let loaded =
        conf::security::load(path).map_err(|e| Refusal::SecurityFile(e.messages().join("; ")))?;
    Ok(Policy::from_security_conf(&loaded.value))
}
