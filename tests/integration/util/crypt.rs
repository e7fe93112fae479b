//! Set-up for Amanda's encryption programs, for the tests that run them (issue 12):
//! `~backup/.am_passphrase` for `/usr/sbin/amcrypt-ossl`, and for `/usr/sbin/amgpgcrypt` a
//! GnuPG key for the recipient `backup` in `~backup/.gnupg`, protected by that passphrase.
//!
//! Both programs find their files through the Amanda user's home (`~backup`, not `$HOME`),
//! so these are machine-wide: they are created when missing (owned by `backup`, mode 600 /
//! 700), never overwritten (an existing passphrase is used as it is), and left in place for
//! the next test, like the real-Amanda harness leaves them. A file lock serialises the
//! set-up between test processes; [`GpgLock`] serialises amgpgcrypt runs, since each starts
//! a gpg-agent on the same home and a second one refuses to start while the first lives.

#![allow(dead_code)] // each test module uses a different subset

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The test passphrase written when `~backup/.am_passphrase` is missing.
pub const TEST_PASSPHRASE: &str = "amanda-rs test passphrase, not a secret";

/// An exclusive `flock` on a file under /run/lock (released on drop).
pub struct FileLock(File);

impl FileLock {
    /// Waits for the lock named `name`.
    pub fn take(name: &str) -> FileLock {
        let dir = Path::new("/run/lock");
        let dir = if dir.is_dir() { dir } else { Path::new("/tmp") };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(format!("amanda-rs-{name}.lock")))
            .expect("open the lock file");
        // SAFETY: flock on a descriptor we own; blocking is what we want here.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        FileLock(f)
    }
}

/// The Amanda user's uid, gid and home.
pub fn backup_user() -> (u32, u32, PathBuf) {
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && f[0] == "backup" {
            let uid = f[2].parse().expect("uid");
            let gid = f[3].parse().expect("gid");
            return (uid, gid, PathBuf::from(f[5]));
        }
    }
    panic!("no user backup in /etc/passwd (scripts/setup installs Amanda)");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Makes sure `~backup/.am_passphrase` exists (mode 600, owner backup); returns its path.
/// Needs root.
pub fn am_passphrase() -> PathBuf {
    let _l = FileLock::take("crypt-setup");
    let (uid, gid, home) = backup_user();
    let p = home.join(".am_passphrase");
    if !p.exists() {
        let tmp = home.join(".am_passphrase.amanda-rs-tmp");
        fs::write(&tmp, format!("{TEST_PASSPHRASE}\n")).expect("write the passphrase");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod");
        chown(&tmp, uid, gid);
        fs::rename(&tmp, &p).expect("rename the passphrase into place");
    }
    p
}

fn gpg_as_backup(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "backup", "--", "env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("GNUPGHOME={}", home.join(".gnupg").display()))
        .args(args)
        .output()
        .expect("run gpg as backup")
}

/// Makes sure `~backup/.gnupg` holds a secret key for `backup` protected by the
/// passphrase, and that gpg takes the passphrase from a descriptor (`pinentry-mode
/// loopback`, which amgpgcrypt's `--passphrase-fd 3` needs with GnuPG 2.2). Needs root.
pub fn amgpgcrypt_keys() {
    let pass = am_passphrase();
    let _l = FileLock::take("crypt-setup");
    let (uid, gid, home) = backup_user();
    let g = home.join(".gnupg");
    if !g.exists() {
        fs::create_dir(&g).expect("mkdir ~backup/.gnupg");
        fs::set_permissions(&g, fs::Permissions::from_mode(0o700)).expect("chmod");
        chown(&g, uid, gid);
    }
    let conf = g.join("gpg.conf");
    let text = fs::read_to_string(&conf).unwrap_or_default();
    if !text.lines().any(|l| l.trim() == "pinentry-mode loopback") {
        fs::write(&conf, format!("{text}pinentry-mode loopback\n")).expect("gpg.conf");
        chown(&conf, uid, gid);
    }
    let has_key = gpg_as_backup(&home, &["gpg", "--batch", "--list-secret-keys", "backup"])
        .status
        .success();
    if !has_key {
        let pass = pass.display().to_string();
        let out = gpg_as_backup(
            &home,
            &[
                "gpg",
                "--batch",
                "--passphrase-file",
                &pass,
                "--quick-gen-key",
                "backup <backup@localhost>",
                "default",
                "default",
                "never",
            ],
        );
        assert!(
            out.status.success(),
            "gpg --quick-gen-key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop_gpg_agent(&home);
}

/// Stops the gpg-agent of `~backup/.gnupg`, if any, and waits until its socket is gone
/// (amgpgcrypt's `gpg-agent --daemon -- gpg ...` does nothing while another agent lives).
pub fn stop_gpg_agent(home: &Path) {
    let _ = gpg_as_backup(home, &["gpgconf", "--kill", "gpg-agent"]);
    let sockets = [
        home.join(".gnupg/S.gpg-agent"),
        PathBuf::from(format!("/run/user/{}/gnupg/S.gpg-agent", backup_user().0)),
    ];
    let start = Instant::now();
    while sockets.iter().any(|s| s.exists()) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Held while a test runs amgpgcrypt.
pub struct GpgLock(FileLock);

impl GpgLock {
    /// Waits for the other amgpgcrypt users, then stops any leftover agent.
    pub fn take() -> GpgLock {
        let l = FileLock::take("amgpgcrypt");
        stop_gpg_agent(&backup_user().2);
        GpgLock(l)
    }
}
