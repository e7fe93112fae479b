//! Two hosts made of network namespaces joined by one veth pair, for the tests that run a
//! real Amanda peer on one side and ours on the other across a real link (issue 14):
//!
//! ```text
//!   server ns (amb-s…)                               client ns (amb-c…)
//!   10.254.14.1/24 "amb-server" ------veth------- 10.254.14.2/24 "amb-client"
//! ```
//!
//! The addresses are private and exist only inside these namespaces (each pair is a world
//! of its own, so parallel tests may use the same ones). Names: bsdtcp and ssl need the
//! peer's forward-confirmed reverse name, so each namespace gets its own /etc/hosts (the
//! machine's plus the two hosts) in /etc/netns/<ns>/hosts, which `ip netns exec` binds
//! over /etc/hosts for what it starts; the machine's /etc/hosts is never edited.
//!
//! [`NetPair::firewall`] loads nftables rules that prove the client needs nothing inbound:
//! the server accepts only TCP to its listener's port, the client only the answers to
//! what it opened.
//!
//! What this must not do: touch addresses outside the namespaces, or leave a namespace, a
//! process inside one, or its /etc/netns directory behind: `Drop` kills every process still
//! in the namespaces, deletes them and their /etc/netns entries, also when a test fails.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::netns::{ip, nft_counter, nft_in, unique_tag};

/// The server's address, inside the pair only.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 14, 1);
/// The client's address, inside the pair only.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 14, 2);
/// The server's name in both namespaces' /etc/hosts.
pub const SERVER_NAME: &str = "amb-server";
/// The client's name in both namespaces' /etc/hosts (what a server finds by reverse DNS).
pub const CLIENT_NAME: &str = "amb-client";

/// The two namespaces; deleted on drop.
pub struct NetPair {
    pub server: String,
    pub client: String,
    /// The listener port [`NetPair::firewall`] opened on the server (0: no firewall).
    port: u16,
}

impl NetPair {
    /// Builds the pair (the caller checked for root); panics with what failed.
    pub fn create() -> NetPair {
        let tag = unique_tag();
        let pair = NetPair {
            server: format!("amb-s{tag}"),
            client: format!("amb-c{tag}"),
            port: 0,
        };
        pair.build(&tag)
            .unwrap_or_else(|e| panic!("building the namespace pair: {e}"));
        pair
    }

    fn build(&self, tag: &str) -> Result<(), String> {
        let hosts = format!(
            "{}\n{SERVER_ADDR} {SERVER_NAME}\n{CLIENT_ADDR} {CLIENT_NAME}\n",
            fs::read_to_string("/etc/hosts")
                .unwrap_or_default()
                .trim_end()
        );
        for ns in [&self.server, &self.client] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            write_etc_hosts(ns, &hosts)?;
        }
        // Made inside the namespaces directly; the names are unique all the same.
        let (s, c) = (format!("abs{tag}"), format!("abc{tag}"));
        ip(&[
            "link",
            "add",
            &s,
            "netns",
            &self.server,
            "type",
            "veth",
            "peer",
            "name",
            &c,
            "netns",
            &self.client,
        ])?;
        for (ns, addr, dev) in [
            (&self.server, SERVER_ADDR, &s),
            (&self.client, CLIENT_ADDR, &c),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// `program` run inside namespace `ns` (with that namespace's /etc/hosts).
    pub fn cmd(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_cmd(ns, program)
    }

    /// The server accepts only TCP to `port` (and its own loopback); the client accepts
    /// only what answers a connection it opened. Counted: [`NetPair::accepted_to_listener`].
    pub fn firewall(&mut self, port: u16) {
        let server = format!(
            "table inet fw {{\n  counter to_listener {{ }}\n  chain input {{\n    type filter hook input priority 0; policy drop;\n    iif lo accept\n    tcp dport {port} counter name to_listener accept\n  }}\n}}\n"
        );
        let client = "table inet fw {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    iif lo accept\n    ct state established,related accept\n  }\n}\n";
        nft_in(&self.server, &server).expect("the server's rules");
        nft_in(&self.client, client).expect("the client's rules");
        self.port = port;
    }

    /// Packets the server's firewall let through to the listener (0 before any came).
    pub fn accepted_to_listener(&self) -> u64 {
        nft_counter(&self.server, "to_listener")
    }

    /// Asserts that traffic reached the server's listener through the firewall (the client
    /// used the link, not loopback).
    pub fn assert_used(&self) {
        let n = self.accepted_to_listener();
        assert!(
            n > 0,
            "no packet reached port {} of {SERVER_ADDR} from the client namespace",
            self.port
        );
        eprintln!(
            "{n} packets from {} to {SERVER_ADDR}:{} through the firewall",
            self.client, self.port
        );
    }
}

/// `program` run inside namespace `ns` through `ip netns exec` (which binds the files of
/// /etc/netns/<ns> over /etc).
pub fn netns_cmd(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// /etc/netns/<ns>/hosts; retried because another pair's drop may remove an empty
/// /etc/netns in between.
fn write_etc_hosts(ns: &str, text: &str) -> Result<(), String> {
    let dir = etc_dir(ns);
    let mut last = String::new();
    for _ in 0..5 {
        match fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join("hosts"), text)) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{}: {e}", dir.display()),
        }
    }
    Err(last)
}

/// Runs `f` on a thread that has entered network namespace `ns` (setns moves only the
/// calling thread), e.g. to connect to an address that exists only there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns on an open namespace file; CLONE_NEWNET moves only this thread,
        // which ends with `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Waits until `addr` accepts TCP connections inside namespace `ns`.
pub fn wait_listening_in(ns: &str, addr: SocketAddr, limit: Duration) {
    in_netns(ns, move || super::wait_listening_tcp(addr, limit));
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            // Processes still inside (an inetd's children) would keep the namespace alive.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = ip(&["netns", "del", ns]);
            let _ = fs::remove_dir_all(etc_dir(ns));
        }
        // Only when no other pair uses it.
        let _ = fs::remove_dir("/etc/netns");
    }
}
