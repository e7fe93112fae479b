//! A private Debian tinyproxy on a free 127.0.0.1 port (issue 14): its own configuration,
//! log and pid file in a scratch directory, in the foreground, killed when dropped; never
//! the system service. Used by the proxy tests of dumper and of our `ambackup`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::child::{Spawned, spawn_listening};
use super::{AMANDA_USER, Scratch, chown_amanda, free_port};

/// Debian's tinyproxy.
pub const TINYPROXY: &str = "/usr/bin/tinyproxy";

/// tinyproxy on 127.0.0.1 with a private configuration, in the foreground, until dropped.
pub struct Tinyproxy {
    // Dropped first: killed (its log printed on a panic) before the directory goes.
    _child: Spawned,
    dir: Scratch,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Tinyproxy {
    /// Allows CONNECT only to `connect_port` (tinyproxy's `ConnectPort`).
    pub fn start(connect_port: u16) -> Tinyproxy {
        let dir = Scratch::new("tinyproxy");
        let port = free_port();
        let conf = dir.join("tinyproxy.conf");
        fs::write(
            &conf,
            format!(
                "User {AMANDA_USER}\nGroup {AMANDA_USER}\nPort {port}\nListen 127.0.0.1\nTimeout 600\n\
                 LogFile \"{log}\"\nLogLevel Info\nPidFile \"{pid}\"\nMaxClients 20\n\
                 Allow 127.0.0.1\nDisableViaHeader Yes\nConnectPort {connect_port}\n",
                log = dir.join("tinyproxy.log").display(),
                pid = dir.join("tinyproxy.pid").display(),
            ),
        )
        .expect("tinyproxy.conf");
        chown_amanda(dir.path());
        let log = dir.join("tinyproxy.log");
        let child = spawn_listening(
            Command::new(TINYPROXY).arg("-d").arg("-c").arg(&conf),
            "tinyproxy",
            format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_secs(10),
            move || format!("--- tinyproxy's log ---\n{}", read_log(&log)),
        );
        Tinyproxy {
            _child: child,
            dir,
            port,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log (the CONNECTs, at `LogLevel Info`).
    pub fn log(&self) -> String {
        read_log(&self.dir.join("tinyproxy.log"))
    }
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}
