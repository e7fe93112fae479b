//! A daemon a test starts outside any namespace (a proxy, `dumper listen`): owned by a guard
//! that kills and reaps it when dropped and, when the test panics, prints the daemon's log
//! first. Starting one waits until it listens, so a test never talks to a port too early.
//! It does not manage process groups or namespaces (see `process` and `netns`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_listening_tcp;

/// A child process killed and reaped when dropped; while the test panics, what its `log`
/// closure returns (the daemon's log files, read at that moment) is printed, unless empty.
pub struct Spawned {
    child: Child,
    log: Box<dyn Fn() -> String>,
}

impl Spawned {
    /// Takes charge of `child`.
    pub fn new(child: Child, log: impl Fn() -> String + 'static) -> Spawned {
        Spawned {
            child,
            log: Box::new(log),
        }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = (self.log)();
            if !log.is_empty() {
                eprintln!("{log}");
            }
        }
    }
}

/// Starts `cmd` (`what` in a failure) with stdin, stdout and stderr on /dev/null, and waits
/// up to `limit` until `addr` accepts TCP connections; if it does not, the child is killed
/// and `log` printed with the panic.
pub fn spawn_listening(
    cmd: &mut Command,
    what: &str,
    addr: SocketAddr,
    limit: Duration,
    log: impl Fn() -> String + 'static,
) -> Spawned {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let spawned = Spawned::new(child, log);
    wait_listening_tcp(addr, limit);
    spawned
}
