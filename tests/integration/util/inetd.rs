//! A private openbsd-inetd in the foreground, killed with everything it started on drop;
//! the real Debian amandad under it.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use super::netpair::{netns_cmd, wait_listening_in};
use super::{AMANDA_USER, Scratch, spawn_logged, wait_bound_udp, wait_listening_tcp};

/// The superserver binary of Debian's openbsd-inetd.
pub const INETD: &str = "/usr/sbin/inetd";

/// An openbsd-inetd running in the foreground with a private configuration; killed, with
/// everything it started, on drop.
pub struct Inetd {
    child: Child,
    pub dir: Scratch,
}

impl Inetd {
    /// Starts inetd with one service line, e.g.
    /// `127.0.0.1:10123 dgram udp wait backup.backup /path/amandad amandad -auth=bsd amdump`,
    /// and waits until it listens on `port` (udp or tcp as the line says).
    pub fn start(line: &str, port: u16) -> Inetd {
        Inetd::start_with_binds(line, port, &[])
    }

    /// [`Inetd::start`] in a private mount namespace where each `(file, over)` of `binds`
    /// is bind-mounted over `over` (e.g. a private /etc/amanda or /etc/amandahosts for the
    /// daemons it starts; nothing outside changes).
    pub fn start_with_binds(line: &str, port: u16, binds: &[(&Path, &Path)]) -> Inetd {
        Inetd::start_in(None, line, port, binds)
    }

    /// [`Inetd::start_with_binds`] inside network namespace `netns` when given (started
    /// through `ip netns exec`, so it and its daemons see that namespace's /etc/hosts); the
    /// line's address is then one of that namespace's, and it is waited for there.
    pub fn start_in(netns: Option<&str>, line: &str, port: u16, binds: &[(&Path, &Path)]) -> Inetd {
        let dir = Scratch::new("inetd");
        let conf = dir.join("inetd.conf");
        fs::write(&conf, format!("{line}\n")).expect("write inetd.conf");
        let mut cmd = if binds.is_empty() {
            let mut c = in_ns(netns, INETD);
            c.arg("-i").args(["-R", "100000"]).arg(&conf);
            c
        } else {
            let mut script = String::new();
            for (file, over) in binds {
                script.push_str(&format!(
                    "mount --bind '{}' '{}' || exit 111\n",
                    file.display(),
                    over.display()
                ));
            }
            script.push_str(&format!("exec {INETD} -i -R 100000 '{}'\n", conf.display()));
            let mut c = in_ns(netns, "unshare");
            c.args(["--mount", "--", "sh", "-c", &script]);
            c
        };
        let child = spawn_logged(&mut cmd, &dir.join("inetd.log"));
        let inetd = Inetd { child, dir };
        if line.split_whitespace().nth(1) == Some("dgram") {
            wait_bound_udp(port, Duration::from_secs(10));
        } else {
            let bind = line
                .split_whitespace()
                .next()
                .and_then(|a| a.rsplit_once(':'));
            let ip = bind
                .and_then(|(ip, _)| ip.parse().ok())
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            let addr = SocketAddr::new(ip, port);
            match netns {
                Some(ns) => wait_listening_in(ns, addr, Duration::from_secs(10)),
                None => wait_listening_tcp(addr, Duration::from_secs(10)),
            }
        }
        inetd
    }
}

/// `program`, inside `netns` when given.
fn in_ns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => netns_cmd(ns, program),
        None => Command::new(program),
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        // inetd and its children share the process group we gave it.
        let pgid = self.child.id() as i32;
        // SAFETY: kill has no memory preconditions; a stale group id only yields ESRCH.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Starts the real Debian amandad for `auth` under a private inetd on 127.0.0.1:`port`.
pub fn start_real_amandad(auth: &str, port: u16) -> Inetd {
    let line = match auth {
        "bsdtcp" => format!(
            "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t/usr/lib/amanda/amandad\tamandad -auth=bsdtcp amdump"
        ),
        _ => format!(
            "127.0.0.1:{port}\tdgram\tudp\twait\t{AMANDA_USER}.{AMANDA_USER}\t/usr/lib/amanda/amandad\tamandad -auth={auth} amdump"
        ),
    };
    Inetd::start(&line, port)
}
