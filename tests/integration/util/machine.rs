//! Machine-wide Amanda files the tests need (tests that edit them hold
//! [`super::MACHINE_LOCK`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::{AMANDA_USER, run_ok};

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
