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
    AMANDA_USER, Inetd, RealServer, ServerOptions, ensure_amandahosts_line, free_port, run_ok,
    run_with_timeout,
};

/// The host name ambackupd sees for a bsdtcp client on 127.0.0.1 (reverse DNS).
pub const PEER_HOST: &str = "localhost";

/// A real ambackupd on 127.0.0.1 with its configuration; stopped and removed on drop.
pub struct RealAmbackupd {
    pub server: RealServer,
    pub port: u16,
    _inetd: Inetd,
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
        let port = free_port();
        let server = RealServer::new(PEER_HOST, dles, &ServerOptions::new("bsdtcp", port));
        let client_conf = format!(
            "conf \"{name}\"\namdump_server \"localhost\"\nindex_server \"localhost\"\ntape_server \"localhost\"\nauth \"bsdtcp\"\nclient_port \"{port}\"\n",
            name = server.name
        );
        let path = server.work.join("config/amanda-client.conf");
        fs::write(&path, client_conf).expect("write amanda-client.conf");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        precreate_index_dirs(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Some(holding_watcher(&server, stop.clone()));
        let line = format!(
            "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{u}.{u}\t/usr/lib/amanda/amandad\tamandad -auth=bsdtcp noop ambackupd",
            u = AMANDA_USER
        );
        let inetd = Inetd::start(&line, port);
        RealAmbackupd {
            server,
            port,
            _inetd: inetd,
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
