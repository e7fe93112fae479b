//! Machine-wide Amanda files the tests need (tests that edit them hold
//! [`super::MACHINE_LOCK`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::MutexGuard;

use super::{AMANDA_USER, MACHINE_LOCK, run_ok};

/// Makes sure /etc/amandahosts (the Amanda user's .amandahosts on Debian) has `line`.
pub fn ensure_amandahosts_line(line: &str) {
    let path = Path::new("/etc/amandahosts");
    let text = fs::read_to_string(path).unwrap_or_default();
    if !text.lines().any(|l| l.trim() == line) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open /etc/amandahosts");
        writeln!(f, "{line}").expect("append /etc/amandahosts");
    }
    run_ok(
        Command::new("chown").args([&format!("{AMANDA_USER}:{AMANDA_USER}"), "/etc/amandahosts"]),
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod amandahosts");
    let home = Path::new("/var/backups/.amandahosts");
    if fs::symlink_metadata(home).is_err() {
        symlink(path, home).expect("link ~backup/.amandahosts");
    }
}

/// Holds [`MACHINE_LOCK`] with amdump allowed from localhost in /etc/amandahosts.
pub fn lock_amdump_machine() -> MutexGuard<'static, ()> {
    let guard = MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    ensure_amandahosts_line("localhost backup amdump");
    guard
}

/// The start of a test that runs Amanda on this machine: it needs root and the given tools
/// (returning from the test, or failing it under CI, like `require_root!`/`require_tool!`),
/// then holds the machine lock with amdump allowed ([`lock_amdump_machine`]).
#[macro_export]
macro_rules! amdump_machine {
    ($($tool:expr),* $(,)?) => {{
        $crate::require_root!();
        $($crate::require_tool!($tool);)*
        $crate::util::lock_amdump_machine()
    }};
}
