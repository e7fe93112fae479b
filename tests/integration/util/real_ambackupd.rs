//! The real Amanda 3.5.1 `ambackupd` (a service of the real amandad, run on the *server*
//! under a private inetd with `noop ambackupd`), set up for a client-initiated backup the
//! way /work/shared/harness/real-amanda/ambackup-run.sh does (issue 14): the server
//! configuration with APPLICATION/amgtar DLEs of host `localhost` (the name ambackupd gets
//! for a bsdtcp peer on 127.0.0.1), the client's amanda-client.conf beside it, the
//! `.amandahosts` line, and the two directories 3.5.1's ambackupd needs but never creates
//! (harness README A2, A3).
//!
//! The `_netpair` constructors run it on two hosts instead ([`NetPair`], issue 14): the
//! real amandad under inetd on 10.254.14.1:10080 in the server namespace, behind a firewall
//! that lets in only that port, with its own `.amandahosts`; the DLEs belong to the client
//! namespace's host name, and the client's amanda-client.conf names the server by its name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netpair::{CLIENT_NAME, NetPair, SERVER_ADDR, SERVER_NAME, netns_cmd};
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

/// A real ambackupd on 127.0.0.1 (or in a server namespace) with its configuration;
/// stopped and removed on drop.
pub struct RealAmbackupd {
    pub server: RealServer,
    pub port: u16,
    _inetd: Inetd,
    /// The server-side amandad's private /etc/amanda (ssl) and .amandahosts.
    _private: Option<Scratch>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    /// Last, so the namespaces go after the processes in them.
    net: Option<NetPair>,
}

impl RealAmbackupd {
    /// Starts the real amandad with `noop ambackupd` on a free port, with a server
    /// configuration for `dles` of [`PEER_HOST`] and the client's amanda-client.conf
    /// (`amdump_server "localhost"`, auth bsdtcp, `client_port` that port). The caller
    /// holds the machine lock (/etc/amandahosts is edited).
    pub fn start(dles: &[PathBuf]) -> RealAmbackupd {
        ensure_amandahosts_line(&format!("{PEER_HOST} {AMANDA_USER} ambackupd"));
        let (server, port) = configure(dles, "bsdtcp", PEER_HOST, "", "", None);
        let line = inetd_line("bsdtcp", port, None);
        let inetd = Inetd::start(&line, port);
        RealAmbackupd::running(server, port, inetd, None, None)
    }

    /// [`RealAmbackupd::start`] on two hosts (a [`NetPair`] with its firewall): the DLEs
    /// belong to [`CLIENT_NAME`] (the client's reverse name in the server namespace), the
    /// amandad sees a private `.amandahosts` allowing it, and the client asks
    /// [`SERVER_NAME`]. Run the client with [`RealAmbackupd::client_cmd`].
    pub fn start_netpair(dles: &[PathBuf]) -> RealAmbackupd {
        let net = netpair();
        let (server, port) = configure(dles, "bsdtcp", CLIENT_NAME, "", "", Some(&net));
        let dir = Scratch::new("ab-real-np");
        let hosts = private_amandahosts(&dir, CLIENT_NAME);
        let inetd = Inetd::start_in(
            Some(&net.server),
            &inetd_line("bsdtcp", port, Some(&net)),
            port,
            &[(&hosts, Path::new("/etc/amandahosts"))],
        );
        RealAmbackupd::running(server, port, inetd, Some(dir), Some(net))
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
        RealAmbackupd::start_ssl_in(dles, server_tree, client_tree, dumptype, None)
    }

    /// [`RealAmbackupd::start_ssl`] on two hosts (a [`NetPair`] with its firewall): the
    /// trees' CNs are the namespaces' host names (`ssl_util::Kind::Netpair`), the DLEs
    /// belong to [`CLIENT_NAME`].
    pub fn start_ssl_netpair(
        dles: &[PathBuf],
        server_tree: &Path,
        client_tree: &Path,
        dumptype: &str,
    ) -> RealAmbackupd {
        let net = netpair();
        RealAmbackupd::start_ssl_in(dles, server_tree, client_tree, dumptype, Some(net))
    }

    fn start_ssl_in(
        dles: &[PathBuf],
        server_tree: &Path,
        client_tree: &Path,
        dumptype: &str,
        net: Option<NetPair>,
    ) -> RealAmbackupd {
        let client_extra = format!("ssl-dir \"{}\"\n{SECLEVEL1}\n", client_tree.display());
        let host = if net.is_some() {
            CLIENT_NAME
        } else {
            SSL_PEER_HOST
        };
        let (server, port) = configure(dles, "ssl", host, &client_extra, dumptype, net.as_ref());
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
        let hosts = private_amandahosts(&dir, host);
        let inetd = Inetd::start_in(
            net.as_ref().map(|n| n.server.as_str()),
            &inetd_line("ssl", port, net.as_ref()),
            port,
            &[
                (&etc, Path::new("/etc/amanda")),
                (&hosts, Path::new("/etc/amandahosts")),
            ],
        );
        RealAmbackupd::running(server, port, inetd, Some(dir), net)
    }

    fn running(
        server: RealServer,
        port: u16,
        inetd: Inetd,
        private: Option<Scratch>,
        net: Option<NetPair>,
    ) -> RealAmbackupd {
        precreate_index_dirs(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Some(holding_watcher(&server, stop.clone()));
        RealAmbackupd {
            server,
            port,
            _inetd: inetd,
            _private: private,
            stop,
            watcher,
            net,
        }
    }

    /// `program` as the client runs it: in the client namespace when there is one.
    pub fn client_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.net {
            Some(n) => netns_cmd(&n.client, program),
            None => Command::new(program),
        }
    }

    /// The namespaces of a `_netpair` ambackupd.
    pub fn net(&self) -> Option<&NetPair> {
        self.net.as_ref()
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

/// Two namespaces whose firewall lets in only the amandad's port (10080).
fn netpair() -> NetPair {
    let mut net = NetPair::create();
    net.firewall(10080);
    net
}

/// `dir`/amandahosts allowing `host` the amdump services (noop is one) and ambackupd,
/// for the Amanda user, mode 0600.
fn private_amandahosts(dir: &Scratch, host: &str) -> PathBuf {
    let hosts = dir.join("amandahosts");
    fs::write(&hosts, format!("{host} {AMANDA_USER} amdump ambackupd\n")).expect("amandahosts");
    chown_amanda(dir.path());
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o600)).expect("chmod");
    hosts
}

/// The server configuration for `dles` of `host` (`dumptype` lines added to their
/// dumptype), and the client's amanda-client.conf beside it (`amdump_server` "localhost",
/// or the server's name in `net`; `auth`, `client_port`, then `client_extra`).
fn configure(
    dles: &[PathBuf],
    auth: &str,
    host: &str,
    client_extra: &str,
    dumptype: &str,
    net: Option<&NetPair>,
) -> (RealServer, u16) {
    // A namespace of our own has every port free.
    let (port, server_name) = match net {
        Some(_) => (10080, SERVER_NAME),
        None => (free_port(), "localhost"),
    };
    let mut opts = ServerOptions::new(auth, port);
    opts.extra_dumptype = dumptype.to_string();
    let server = RealServer::new(host, dles, &opts);
    let client_conf = format!(
        "conf \"{name}\"\namdump_server \"{server_name}\"\nindex_server \"{server_name}\"\ntape_server \"{server_name}\"\nauth \"{auth}\"\nclient_port \"{port}\"\n{client_extra}",
        name = server.name
    );
    let path = server.work.join("config/amanda-client.conf");
    fs::write(&path, client_conf).expect("write amanda-client.conf");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    (server, port)
}

/// The real amandad with `noop ambackupd` (ambackup asks noop first) on 127.0.0.1:`port`,
/// or on the server's address in `net`.
fn inetd_line(auth: &str, port: u16, net: Option<&NetPair>) -> String {
    let bind = match net {
        Some(_) => SERVER_ADDR.to_string(),
        None => "127.0.0.1".to_string(),
    };
    format!(
        "{bind}:{port}\tstream\ttcp\tnowait.1000\t{u}.{u}\t/usr/lib/amanda/amandad\tamandad -auth={auth} noop ambackupd",
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
