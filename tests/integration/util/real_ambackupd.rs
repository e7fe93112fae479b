//! The real Amanda 3.5.1 `ambackupd` (a service of the real amandad, run on the *server*
//! under a private inetd with `noop ambackupd`), set up for a client-initiated backup the
//! way /work/shared/harness/real-amanda/ambackup-run.sh does (issue 14): the server
//! configuration with APPLICATION/amgtar DLEs of host `localhost` (the name ambackupd gets
//! for a bsdtcp peer on 127.0.0.1), the client's amanda-client.conf beside it, the
//! `.amandahosts` line, and the two directories 3.5.1's ambackupd needs but never creates
//! (harness README A2, A3).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{
    AMANDA_USER, Inetd, RealServer, Scratch, ServerOptions, chown_amanda, ensure_amandahosts_line,
    free_port, run_ok, run_with_timeout,
};

/// The host name ambackupd sees for a bsdtcp client on 127.0.0.1 (reverse DNS).
pub const PEER_HOST: &str = "localhost";

/// The host name ambackupd sees for an ssl client: its certificate's CN (the test trees'
/// client CN).
pub const SSL_PEER_HOST: &str = "127.0.0.1";

/// The cipher list the real Amanda needs for amssl's 1024-bit keys (harness README S2).
const SECLEVEL1: &str = "ssl-cipher-list \"DEFAULT:@SECLEVEL=1\"";

/// A real ambackupd on 127.0.0.1 with its configuration; stopped and removed on drop.
pub struct RealAmbackupd {
    pub server: RealServer,
    pub port: u16,
    _inetd: Inetd,
    /// auth ssl: the server-side amandad's private /etc/amanda and .amandahosts.
    _ssl_dir: Option<Scratch>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl RealAmbackupd {
    /// Starts the real amandad with `noop ambackupd` on a free port, with a server
    /// configuration for `dles` of [`PEER_HOST`] and the client's amanda-client.conf
    /// (`amdump_server "localhost"`, auth bsdtcp, `client_port` that port). The caller
    /// holds the machine lock (/etc/amandahosts is edited).
    pub fn start(dles: &[PathBuf]) -> RealAmbackupd {
        ensure_amandahosts_line(&format!("{PEER_HOST} {AMANDA_USER} ambackupd"));
        let (server, port) = configure(dles, "bsdtcp", PEER_HOST, "", "");
        let line = inetd_line("bsdtcp", port);
        let inetd = Inetd::start(&line, port);
        RealAmbackupd::running(server, port, inetd, None)
    }

    /// [`RealAmbackupd::start`] with auth ssl: the server-side amandad uses the certificate
    /// tree `server_tree` (its own /etc/amanda/amanda-client.conf and `.amandahosts`, in a
    /// private mount namespace), the client's amanda-client.conf `client_tree`; the DLEs
    /// belong to [`SSL_PEER_HOST`].
    /// `dumptype` lines go into the DLEs' dumptype (e.g. `compress client fast`).
    pub fn start_ssl(
        dles: &[PathBuf],
        server_tree: &Path,
        client_tree: &Path,
        dumptype: &str,
    ) -> RealAmbackupd {
        let client_extra = format!("ssl-dir \"{}\"\n{SECLEVEL1}\n", client_tree.display());
        let (server, port) = configure(dles, "ssl", SSL_PEER_HOST, &client_extra, dumptype);
        let dir = Scratch::new("ab-real-ssl");
        let etc = dir.join("etc");
        fs::create_dir_all(&etc).expect("mkdir");
        fs::write(
            etc.join("amanda-client.conf"),
            format!("ssl-dir \"{}\"\n{SECLEVEL1}\n", server_tree.display()),
        )
        .expect("amanda-client.conf");
        // ambackupd loads the server configuration by name from /etc/amanda.
        std::os::unix::fs::symlink(server.work.join("config"), etc.join(&server.name))
            .expect("link the configuration");
        let hosts = dir.join("amandahosts");
        fs::write(
            &hosts,
            // noop is one of the amdump services.
            format!("{SSL_PEER_HOST} {AMANDA_USER} amdump ambackupd\n"),
        )
        .expect("amandahosts");
        chown_amanda(dir.path());
        fs::set_permissions(&hosts, fs::Permissions::from_mode(0o600)).expect("chmod");
        let inetd = Inetd::start_with_binds(
            &inetd_line("ssl", port),
            port,
            &[
                (&etc, Path::new("/etc/amanda")),
                (&hosts, Path::new("/etc/amandahosts")),
            ],
        );
        RealAmbackupd::running(server, port, inetd, Some(dir))
    }

    fn running(
        server: RealServer,
        port: u16,
        inetd: Inetd,
        ssl_dir: Option<Scratch>,
    ) -> RealAmbackupd {
        precreate_index_dirs(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Some(holding_watcher(&server, stop.clone()));
        RealAmbackupd {
            server,
            port,
            _inetd: inetd,
            _ssl_dir: ssl_dir,
            stop,
            watcher,
        }
    }

    /// The `log.<timestamp>.0` trace logs ambackupd wrote, one per BACKUP, concatenated.
    pub fn trace_logs(&self) -> String {
        let mut logs: Vec<PathBuf> = fs::read_dir(self.server.work.join("state/log"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        logs.iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("log."))
            })
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Moves the holding-disk dumps to a vtape with the real amflush.
    pub fn amflush(&self) -> String {
        let (status, out) = run_with_timeout(
            Command::new("runuser")
                .args(["-u", AMANDA_USER, "--", "amflush", "-b", "-f"])
                .arg(&self.server.name)
                .current_dir("/tmp"),
            Duration::from_secs(300),
        );
        assert!(status.success(), "amflush failed: {out}");
        out
    }
}

/// The server configuration for `dles` of `host` (`dumptype` lines added to their
/// dumptype), and the client's amanda-client.conf beside it (`amdump_server "localhost"`,
/// `auth`, `client_port`, then `client_extra`).
fn configure(
    dles: &[PathBuf],
    auth: &str,
    host: &str,
    client_extra: &str,
    dumptype: &str,
) -> (RealServer, u16) {
    let port = free_port();
    let mut opts = ServerOptions::new(auth, port);
    opts.extra_dumptype = dumptype.to_string();
    let server = RealServer::new(host, dles, &opts);
    let client_conf = format!(
        "conf \"{name}\"\namdump_server \"localhost\"\nindex_server \"localhost\"\ntape_server \"localhost\"\nauth \"{auth}\"\nclient_port \"{port}\"\n{client_extra}",
        name = server.name
    );
    let path = server.work.join("config/amanda-client.conf");
    fs::write(&path, client_conf).expect("write amanda-client.conf");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    (server, port)
}

/// The real amandad with `noop ambackupd` (ambackup asks noop first) on 127.0.0.1:`port`.
fn inetd_line(auth: &str, port: u16) -> String {
    format!(
        "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{u}.{u}\t/usr/lib/amanda/amandad\tamandad -auth={auth} noop ambackupd",
        u = AMANDA_USER
    )
}

impl Drop for RealAmbackupd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// A2: `<indexdir>/<host>/<disk>/`, named by Amanda's own function (its file-name
/// sanitising is not ours to guess).
fn precreate_index_dirs(server: &RealServer) {
    let script = r#"my ($cfg, $host, @disks) = @ARGV;
config_init($CONFIG_INIT_EXPLICIT_NAME, $cfg);
make_path(dirname(Amanda::Logfile::getheaderfname($host, $_, "20000101000000", 0))) for @disks;"#;
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", AMANDA_USER, "--", "perl"])
        .arg("-I/usr/lib/x86_64-linux-gnu/amanda/perl")
        .args([
            "-MAmanda::Config=:init",
            "-MAmanda::Logfile",
            "-MFile::Basename",
            "-MFile::Path=make_path",
            "-e",
            script,
        ])
        .arg(&server.name)
        .arg(&server.client_host)
        .args(&server.dles)
        .current_dir("/tmp");
    run_ok(&mut cmd);
}

/// A3: `<holding>/<timestamp>/` as soon as ambackupd opens `log.<timestamp>.0` (about
/// 0.1 s before it opens the holding file).
fn holding_watcher(server: &RealServer, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let logdir = server.work.join("state/log");
    let hold = server.work.join("holding");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(rd) = fs::read_dir(&logdir) {
                for e in rd.filter_map(Result::ok) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let parts: Vec<&str> = name.split('.').collect();
                    if parts.len() == 3
                        && parts[0] == "log"
                        && parts[1].bytes().all(|b| b.is_ascii_digit())
                    {
                        make_holding_dir(&hold.join(parts[1]));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn make_holding_dir(dir: &Path) {
    if dir.is_dir() {
        return;
    }
    if fs::create_dir(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let _ = Command::new("chown")
            .arg(format!("{AMANDA_USER}:{AMANDA_USER}"))
            .arg(dir)
            .status();
    }
}
