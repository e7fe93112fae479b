//! A client-initiated backup lab (issue 14): our `dumper listen` on a free 127.0.0.1 port
//! (under a private openbsd-inetd, or standalone), a configuration whose disklist holds this
//! host's DLEs (amgtar), the real Debian `ambackup` run as the Amanda user against it.
//!
//! One directory serves both ends, as in the harness's ambackup-run.sh: the server's
//! amanda.conf and disklist and the client's amanda-client.conf (`amdump_server`,
//! `client_port`), linked as /etc/amanda/<cfg> because ambackup and ambackupd both find a
//! configuration by name. The link is removed on drop. The listener reads its own
//! `.amandahosts` (amanda-rs setting `amandahosts_path`), so no machine-wide file changes.
//!
//! [`AmbackupLab::in_netpair`] puts the two ends on two hosts instead ([`NetPair`]): the
//! listener under inetd in the server namespace on 10.254.14.1:10080 behind a firewall that
//! lets in only that port, the client in the client namespace reaching it by its name.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::child::{Spawned, spawn_listening};
use super::netpair::{CLIENT_NAME, NetPair, SERVER_ADDR, SERVER_NAME, netns_cmd};
use super::{
    AMANDA_USER, Dt, DumperConf, Inetd, Program, chown_amanda, free_port, run_with_timeout,
    workspace_bin,
};

/// The real client's command.
pub const AMBACKUP: &str = "/usr/sbin/ambackup";

/// Whose ambackup asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Debian's /usr/sbin/ambackup (with the real amservice).
    Real,
    /// amanda-rs's `ambackup`.
    Ours,
}

/// How the listener runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Under a private openbsd-inetd, `nowait`, as the Amanda user.
    Inetd,
    /// `--listen 127.0.0.1:PORT`, started as root (it drops to the Amanda user), with
    /// this many connections at most, each given `req_timeout` seconds for its REQ.
    Standalone {
        max_connections: usize,
        req_timeout: u64,
    },
    /// A listening socket handed over as systemd does (fd 3, `LISTEN_FDS=1`,
    /// `LISTEN_PID`), started as root.
    Systemd,
}

/// The lab.
pub struct AmbackupLab {
    pub conf: DumperConf,
    /// The configuration's name (also /etc/amanda/<cfg>).
    pub cfg: String,
    pub port: u16,
    /// The DLEs' host: the name the listener finds for the client.
    pub host: String,
    link: PathBuf,
    _inetd: Option<Inetd>,
    child: Option<Spawned>,
    /// Last, so the namespaces go after the processes in them.
    net: Option<NetPair>,
}

/// auth ssl: amssl's certificate trees of the two ends.
#[derive(Clone, Copy, Debug)]
pub struct SslTrees<'a> {
    pub server: &'a Path,
    pub client: &'a Path,
}

/// Asserts that for each of `dles` and each of `prefixes` the line `<prefix><dle>` is a
/// whole line of `out` (ambackup's output); `what` says which step, and `log` is shown with
/// a failure.
pub fn assert_dle_lines(out: &str, dles: &[PathBuf], prefixes: &[&str], what: &str, log: &str) {
    for d in dles {
        for prefix in prefixes {
            let want = format!("{prefix}{}", d.display());
            assert!(
                out.lines().any(|l| l == want),
                "no {want:?} ({what}) in:\n{out}\n{log}"
            );
        }
    }
}

impl AmbackupLab {
    /// A lab on loopback whose disklist has `host` with `dles` (dumptype `ambackup`:
    /// bsdtcp, amgtar; also defined: `ambackup-gnutar`, and `ambackup-failing` whose server
    /// filter fails), and whose `.amandahosts` is `amandahosts`.
    pub fn loopback(
        tag: &str,
        host: &str,
        dles: &[PathBuf],
        allow: &str,
        how: Listener,
        ssl: Option<SslTrees<'_>>,
    ) -> Self {
        AmbackupLab::build(tag, host, dles, allow, how, ssl, None)
    }

    /// The lab on two hosts (issue 14): `dles` of [`CLIENT_NAME`] (the client
    /// namespace's address, by reverse DNS in the server namespace, or its certificate's
    /// CN with ssl), the listener under inetd on [`SERVER_ADDR`]:10080 in the server
    /// namespace behind [`NetPair::firewall`], the client asking [`SERVER_NAME`]; auth ssl
    /// when `ssl` is given, else bsdtcp.
    pub fn in_netpair(tag: &str, dles: &[PathBuf], ssl: Option<SslTrees<'_>>) -> Self {
        let mut net = NetPair::create();
        net.firewall(10080);
        let allow = format!("{CLIENT_NAME} {AMANDA_USER} noop ambackupd\n");
        let how = Listener::Inetd;
        AmbackupLab::build(tag, CLIENT_NAME, dles, &allow, how, ssl, Some(net))
    }

    fn build(
        tag: &str,
        host: &str,
        dles: &[PathBuf],
        amandahosts: &str,
        how: Listener,
        ssl: Option<SslTrees<'_>>,
        net: Option<NetPair>,
    ) -> Self {
        // A namespace of our own has every port free.
        let port = if net.is_some() { 10080 } else { free_port() };
        let (server_name, bind) = match net {
            Some(_) => (SERVER_NAME, SERVER_ADDR.to_string()),
            None => ("localhost", "127.0.0.1".to_string()),
        };
        let dt = Dt::new("ambackup", "bsdtcp", port, Program::Amgtar);
        let gnutar = Dt::new("ambackup-gnutar", "bsdtcp", port, Program::Gnutar);
        // A dump that fails on the server, after the data came: its filter exits 1.
        let failing = Dt {
            extra: "    compress server custom\n    server_custom_compress \"/bin/false\"",
            ..Dt::new("ambackup-failing", "bsdtcp", port, Program::Amgtar)
        };
        let list: Vec<(&str, &Path, &str)> = dles
            .iter()
            .map(|d| (host, d.as_path(), "ambackup"))
            .collect();
        let conf = DumperConf::new(tag, "", &[dt, gnutar, failing], &list);
        let cfg = format!("{tag}-{}-{port}", std::process::id());
        let w = conf.work.path();
        let client_ssl = ssl.map_or_else(String::new, |t| {
            format!(
                "ssl-dir \"{}\"\nssl-cipher-list \"DEFAULT:@SECLEVEL=1\"\n",
                t.client.display()
            )
        });
        let auth = if ssl.is_some() { "ssl" } else { "bsdtcp" };
        fs::write(
            w.join("config/amanda-client.conf"),
            format!(
                "conf \"{cfg}\"\namdump_server \"{server_name}\"\nindex_server \"{server_name}\"\ntape_server \"{server_name}\"\nauth \"{auth}\"\nclient_port \"{port}\"\n{client_ssl}"
            ),
        )
        .expect("amanda-client.conf");
        let listen_ssl = ssl.map_or_else(String::new, |t| {
            format!(" --auth ssl --ssl-dir {}", t.server.display())
        });
        let hosts = w.join("amandahosts");
        fs::write(&hosts, amandahosts).expect("amandahosts");
        let log = w.join("listen.log");
        let settings = w.join("amanda-rs.toml");
        fs::write(
            &settings,
            format!(
                "amandahosts_path = \"{}\"\n[log]\nfile = \"{}\"\nlevel = \"debug\"\n",
                hosts.display(),
                log.display()
            ),
        )
        .expect("settings");
        chown_amanda(w);
        fs::set_permissions(&hosts, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).expect("chmod");
        let link = Path::new("/etc/amanda").join(&cfg);
        fs::create_dir_all("/etc/amanda").expect("/etc/amanda");
        let _ = fs::remove_file(&link);
        symlink(w.join("config"), &link).expect("link /etc/amanda/<cfg>");
        let bin = workspace_bin("dumper");
        let (inetd, child) = match how {
            Listener::Inetd => {
                let line = format!(
                    "{bind}:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t{}\tdumper --settings {} listen --inetd{listen_ssl}",
                    bin.display(),
                    settings.display()
                );
                let ns = net.as_ref().map(|n| n.server.as_str());
                (Some(Inetd::start_in(ns, &line, port, &[])), None)
            }
            Listener::Standalone {
                max_connections,
                req_timeout,
            } => {
                let child = spawn_listening(
                    Command::new(&bin)
                        .arg("--settings")
                        .arg(&settings)
                        .args(["listen", "--listen"])
                        .arg(format!("127.0.0.1:{port}"))
                        .arg("--max-connections")
                        .arg(max_connections.to_string())
                        .arg("--req-timeout")
                        .arg(req_timeout.to_string())
                        .args(listen_ssl.split_whitespace()),
                    "dumper listen",
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                    String::new,
                );
                (None, Some(child))
            }
            Listener::Systemd => (None, None),
        };
        let (inetd, child) = match how {
            Listener::Systemd => (None, Some(systemd_socket(&bin, &settings, port))),
            _ => (inetd, child),
        };
        AmbackupLab {
            conf,
            cfg,
            port,
            host: host.to_string(),
            link,
            _inetd: inetd,
            child,
            net,
        }
    }

    /// The namespaces of a lab made by [`AmbackupLab::in_netpair`].
    pub fn net(&self) -> Option<&NetPair> {
        self.net.as_ref()
    }

    /// The standalone listener's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Spawned::id)
    }

    /// `ambackup --config <cfg> ARGS...` as the Amanda user: (status, output).
    pub fn ambackup(&self, args: &[&str]) -> (ExitStatus, String) {
        self.client(Client::Real, args)
    }

    /// The same with `client`'s ambackup: the real one as the Amanda user, ours as root
    /// (it binds a reserved source port itself, where the real one has ambind).
    /// In the client namespace when the lab has one.
    pub fn client(&self, client: Client, args: &[&str]) -> (ExitStatus, String) {
        let program = match client {
            Client::Real => PathBuf::from("runuser"),
            Client::Ours => workspace_bin("ambackup"),
        };
        let mut cmd = match &self.net {
            Some(n) => netns_cmd(&n.client, &program),
            None => Command::new(&program),
        };
        if client == Client::Real {
            cmd.args(["-u", AMANDA_USER, "--", AMBACKUP]);
        }
        cmd.args(["--config", &self.cfg])
            .args(args)
            .current_dir("/tmp")
            .stdin(Stdio::null());
        run_with_timeout(&mut cmd, Duration::from_secs(300))
    }

    /// Replaces the disklist.
    pub fn write_disklist(&self, text: &str) {
        let p = self.conf.work.join("config/disklist");
        fs::write(&p, text).expect("disklist");
        chown_amanda(&p);
    }

    /// The pids of the real `amservice` processes of this lab's configuration still
    /// running (ambackup does not wait for them).
    pub fn amservices(&self) -> Vec<i32> {
        let want = format!("--config\0{}\0", self.cfg);
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.starts_with("/usr/sbin/amservice\0") && cmd.contains(&want)
            })
            .filter(|pid| {
                // A zombie is gone already.
                let st = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                !st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .collect()
    }

    /// Waits up to `limit` for this lab's amservice processes to exit: those left.
    pub fn amservices_after(&self, limit: Duration) -> Vec<i32> {
        let until = std::time::Instant::now() + limit;
        loop {
            let left = self.amservices();
            if left.is_empty() || std::time::Instant::now() >= until {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The listener's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.conf.work.join("listen.log")).unwrap_or_default()
    }
}

/// `dumper listen` with a listening socket on fd 3 and systemd's variables (the shell
/// sets `LISTEN_PID` to its own pid, which `exec` keeps).
fn systemd_socket(bin: &Path, settings: &Path, port: u16) -> Spawned {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let fd = l.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"",
    ])
    .arg(bin)
    .arg("--settings")
    .arg(settings)
    .arg("listen")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` is open in the parent until after
    // spawn.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it then.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start dumper listen (systemd socket)");
    drop(l);
    Spawned::new(child, String::new)
}

impl Drop for AmbackupLab {
    fn drop(&mut self) {
        // The real client's amservice processes of this lab, by their pids (ambackup does
        // not wait for them; the configuration name is unique to the lab).
        for pid in self.amservices() {
            // SAFETY: kill has no memory preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // The listener next, before its configuration goes.
        drop(self.child.take());
        let _ = fs::remove_file(&self.link);
        let _ = fs::remove_dir_all(Path::new("/var/log/amanda/client").join(&self.cfg));
    }
}
