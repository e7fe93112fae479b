//! Our amandad, under a private inetd or standalone, with the setuid tar helper installed
//! the way a package would.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    AMANDA_USER, Inetd, Scratch, chown_amanda, free_port, run_ok, wait_bound_udp,
    wait_listening_tcp, workspace_bin,
};

/// How our amandad is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    Inetd,
    Standalone,
}

/// Our amandad, running until dropped.
pub struct OurAmandad {
    _inetd: Option<Inetd>,
    child: Option<Child>,
    pub dir: Scratch,
    pub port: u16,
    /// The helper copy it uses (removed after amandad is stopped).
    pub runtar: RuntarInstall,
}

impl OurAmandad {
    /// Our amandad's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("amandad.log")).unwrap_or_default()
    }
}

impl Drop for OurAmandad {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- our amandad's log (port {}) ---\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// A copy of the privileged tar helper installed the way a package would (root:backup 4750)
/// in a scratch directory of its own; removed on drop (also with `AMANDA_RS_KEEP`: a setuid
/// root file must not outlive its test). The built `target/*/amandad-runtar` is never made
/// setuid (issue 10).
#[must_use = "the helper is removed when this is dropped"]
pub struct RuntarInstall {
    path: PathBuf,
    settings: PathBuf,
    _dir: Scratch,
}

impl RuntarInstall {
    /// The installed helper.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An amanda-rs settings file (for amandad's `--settings`) that points `runtar_path` at
    /// this copy.
    pub fn settings(&self) -> &Path {
        &self.settings
    }
}

impl Drop for RuntarInstall {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Installs a copy of the helper; see [`RuntarInstall`]. The scratch directory (and every
/// directory above it) is traversable by the Amanda user, and its file system must honour
/// setuid bits.
pub fn install_runtar() -> RuntarInstall {
    let built = workspace_bin("amandad-runtar");
    // Earlier versions of this function made the build output itself setuid root.
    if fs::metadata(&built).is_ok_and(|m| m.mode() & 0o6000 != 0) {
        fs::set_permissions(&built, fs::Permissions::from_mode(0o755)).expect("chmod built helper");
    }
    let dir = Scratch::new("runtar");
    let st = mount_flags(dir.path());
    assert!(
        st & libc::ST_NOSUID == 0,
        "{} is on a nosuid file system: the helper copy would not be setuid",
        dir.path().display()
    );
    let path = dir.join("amandad-runtar");
    fs::copy(&built, &path).expect("copy amandad-runtar");
    run_ok(
        Command::new("chown")
            .arg(format!("root:{AMANDA_USER}"))
            .arg(&path),
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4750)).expect("chmod runtar");
    let settings = dir.join("amanda-rs.toml");
    fs::write(
        &settings,
        format!("[amandad]\nruntar_path = \"{}\"\n", path.display()),
    )
    .expect("write settings");
    fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).expect("chmod settings");
    RuntarInstall {
        path,
        settings,
        _dir: dir,
    }
}

/// `statvfs(2)`'s mount flags of the file system holding `path`.
fn mount_flags(path: &Path) -> libc::c_ulong {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid C string and `st` is plain data statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    st.f_flag
}

/// Starts our amandad for `auth` on a free 127.0.0.1 port, under inetd or standalone.
pub fn start_ours(auth: &str, launch: Launch) -> OurAmandad {
    let runtar = install_runtar();
    let dir = Scratch::new("ours");
    chown_amanda(dir.path());
    let port = free_port();
    let bin = workspace_bin("amandad");
    let log = dir.join("amandad.log");
    let common = format!(
        "-auth={auth} amdump --log {} --settings {}",
        log.display(),
        runtar.settings().display()
    );
    match launch {
        Launch::Inetd => {
            let line = if auth == "bsdtcp" {
                format!(
                    "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t{}\tamandad {common}",
                    bin.display()
                )
            } else {
                format!(
                    "127.0.0.1:{port}\tdgram\tudp\twait\t{AMANDA_USER}.{AMANDA_USER}\t{}\tamandad {common}",
                    bin.display()
                )
            };
            OurAmandad {
                _inetd: Some(Inetd::start(&line, port)),
                child: None,
                dir,
                port,
                runtar,
            }
        }
        Launch::Standalone => {
            let proto = if auth == "bsdtcp" { "tcp" } else { "udp" };
            // Started as root, as a service manager would; it drops to the Amanda user.
            let child = Command::new(&bin)
                .args(common.split(' '))
                .arg("--listen")
                .arg(format!("{proto}:127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start amandad");
            if proto == "tcp" {
                wait_listening_tcp(
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                );
            } else {
                wait_bound_udp(port, Duration::from_secs(10));
            }
            OurAmandad {
                _inetd: None,
                child: Some(child),
                dir,
                port,
                runtar,
            }
        }
    }
}
