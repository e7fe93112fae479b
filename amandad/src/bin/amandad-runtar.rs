//! `amandad-runtar`: the setuid-root helper that runs GNU tar as root for amandad's
//! services, after checking the invocation against a fixed allow-list.
//!
//! Usage (by amandad only): `amandad-runtar <tar-path> <tar arguments>...`. Install it
//! owned by root, group of the Amanda user, mode 4750. The rules, and why each exists, are
//! in `amandad::services::runtar`; this file only wires them to the process: real uid,
//! /etc/amanda-security.conf, privileges, `exec`.
//!
//! Exit status: tar's own when tar runs (this process becomes tar); 2 with one line
//! `amandad-runtar: error [<reason>]` on stderr when the helper refuses.
//!
//! What this program must not do: run anything but the checked tar, keep any environment
//! variable, or create or write a file itself.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use amandad::services::runtar::{self, Policy, Refusal};
use nix::unistd::{Gid, Uid};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Err(refusal) = run(&args);
    let _ = std::io::stderr().write_all(&runtar::refusal_line(&refusal));
    std::process::exit(runtar::EXIT_REFUSED);
}

fn run(args: &[OsString]) -> Result<Infallible, Refusal> {
    let ruid = nix::unistd::getuid().as_raw();
    runtar::check_caller(ruid, runtar::amanda_uid())?;
    if !nix::unistd::geteuid().is_root() {
        return Err(Refusal::SecurityFile(
            "amandad-runtar is not setuid root".to_owned(),
        ));
    }
    let request = runtar::parse_args(args)?;
    let policy = load_policy()?;
    let prepared = runtar::prepare(request, &policy, ruid)?;

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
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| Refusal::Operand(String::from_utf8_lossy(b).into_owned()))
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
