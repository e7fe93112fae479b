//! Debian's squid as a private CONNECT proxy for the outbound tests (issue 14): its
//! configuration (one listening address, CONNECT from some clients to one address and port
//! only, `read_timeout 20 seconds`, no cache, logs in a scratch directory), and an instance
//! on 127.0.0.1 outside any namespace, killed when dropped. The namespace tests spawn the
//! same configuration inside their middle namespace.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::child::{Spawned, spawn_listening};
use super::{AMANDA_USER, Scratch, chown_amanda, free_port};

/// Debian's squid.
pub const SQUID: &str = "/usr/sbin/squid";

/// squid's `read_timeout` in [`conf`]: a tunnel whose server side sends nothing for this
/// long is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// squid.conf for a proxy on `listen` (`ip:port`) that allows CONNECT from `clients` (a
/// source acl, e.g. `198.18.1.0/24`) to `dst`:`port` only, with its pid file and logs in
/// `dir`.
pub fn conf(dir: &Path, listen: &str, clients: &str, dst: &str, port: u16) -> String {
    let d = dir.display();
    let timeout = READ_TIMEOUT.as_secs();
    format!(
        "http_port {listen}\n\
         acl clients src {clients}\nacl server dst {dst}\n\
         acl listener port {port}\nacl CONNECT method CONNECT\n\
         http_access allow CONNECT clients server listener\nhttp_access deny all\n\
         read_timeout {timeout} seconds\n\
         cache deny all\ncache_mem 8 MB\n\
         access_log stdio:{d}/access.log squid\ncache_log {d}/cache.log\n\
         pid_filename {d}/proxy.pid\ncoredump_dir {d}\n\
         cache_effective_user {AMANDA_USER}\ncache_effective_group {AMANDA_USER}\n\
         shutdown_lifetime 1 seconds\nlogfile_rotate 0\n"
    )
}

/// The failed night of a dump that stayed quiet through [`READ_TIMEOUT`] without a
/// heartbeat: `ok` false, and the report names the tunnel closed under the dump.
pub fn assert_cut_by_read_timeout(ok: bool, report: &str) {
    assert!(
        !ok,
        "without the heartbeat squid's read_timeout closes the quiet tunnel:\n{report}"
    );
    assert!(
        report.contains("FAILED") && report.contains("connection closed by the client"),
        "the dump fails because the tunnel was closed:\n{report}"
    );
}

/// A private squid on a free 127.0.0.1 port allowing CONNECT to 127.0.0.1:`connect_port`
/// only, in the foreground, until dropped.
pub struct LocalSquid {
    // Dropped first: killed (its logs printed on a panic) before the directory goes.
    _child: Spawned,
    dir: Scratch,
    pub port: u16,
}

impl LocalSquid {
    pub fn start(tag: &str, connect_port: u16) -> LocalSquid {
        let dir = Scratch::new(tag);
        let port = free_port();
        let path = dir.join("squid.conf");
        let text = conf(
            dir.path(),
            &format!("127.0.0.1:{port}"),
            "127.0.0.1",
            "127.0.0.1",
            connect_port,
        );
        fs::write(&path, text).expect("squid.conf");
        chown_amanda(dir.path());
        let logs_dir = dir.path().to_path_buf();
        // Its own service name: squid names its shared memory after it, and another
        // test's squid may be running.
        let child = spawn_listening(
            Command::new(SQUID)
                .arg("-N")
                .arg("-n")
                .arg(format!("amrs{port}"))
                .arg("-f")
                .arg(&path),
            "squid",
            format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_secs(20),
            move || logs(&logs_dir),
        );
        LocalSquid {
            _child: child,
            dir,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_log(&self) -> String {
        read_log(self.dir.path(), "access.log")
    }

    /// Both logs, for a failure's message.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

/// squid's access and cache logs in `dir`, for a failure's message.
fn logs(dir: &Path) -> String {
    format!(
        "--- squid access.log ---\n{}\n--- squid cache.log ---\n{}",
        read_log(dir, "access.log"),
        read_log(dir, "cache.log")
    )
}

/// One of squid's logs in `dir` (empty until squid writes it).
fn read_log(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}
