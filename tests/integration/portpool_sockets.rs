//! portpool with real sockets: EADDRINUSE from another process is skipped, EACCES is
//! reported, two processes never lease the same port (and a dead one's leases come back),
//! TIME_WAIT across a veth pair between two network namespaces, the `portpool` binary's
//! simulation, and its firewall rules fed to `nft -c` and `iptables-restore --test`.
//!
//! Helper processes are this test binary run again with `PORTPOOL_CHILD` set: the test
//! `child_role` then plays the part named there (and does nothing in a normal run).

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portpool::rules::{self, Format};
use portpool::site::{Client, Setting, Site, SiteDle};
use portpool_alloc::{LeaseError, Pool, PoolConfig};
use proto::Auth;
use proto::ports::{PortRange, Transport};

use crate::util::{self, Scratch, is_root, run_with_timeout};
use crate::{require_root, require_tool};

const CHILD_ENV: &str = "PORTPOOL_CHILD";

/// Three UDP ports, unlikely to be used by anyone else on this host.
fn private_range() -> PortRange {
    let base = 40_000 + (std::process::id() % 8_000) as u16 * 3;
    PortRange::new(base, base + 2).unwrap()
}

fn pool_config(proto: Transport, range: PortRange, run_dir: Option<&Path>) -> PoolConfig {
    let mut cfg = PoolConfig::new(proto, range);
    cfg.skip_services = false;
    cfg.run_dir = run_dir.map(Path::to_path_buf);
    cfg
}

/// This test binary, playing `role`.
fn child(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    as_child(&mut cmd, role);
    cmd
}

/// The arguments and environment that make this test binary play `role`.
fn as_child(cmd: &mut Command, role: &str) {
    cmd.args([
        "--exact",
        "portpool_sockets::child_role",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, role);
}

/// Kills the helper process on drop, even when the test fails.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Helper {
    fn spawn(mut cmd: Command) -> Helper {
        Helper(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn helper"),
        )
    }

    /// What follows `prefix` on the helper's first line containing it (libtest prints its
    /// own text on the same line, before it).
    fn line(&mut self, prefix: &str) -> String {
        let out = self.0.stdout.as_mut().expect("stdout");
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("read helper");
            assert!(n > 0, "helper ended before saying {prefix:?}");
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_owned();
            }
        }
    }
}

/// The helper processes' side of the tests.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = role.split(':').collect();
    match parts.as_slice() {
        ["hold-udp", port] => {
            let _sock = UdpSocket::bind(("0.0.0.0", port.parse::<u16>().unwrap())).unwrap();
            println!("ready");
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        }
        ["lease", dir, lo, hi] => {
            let range = PortRange::new(lo.parse().unwrap(), hi.parse().unwrap()).unwrap();
            let pool = Pool::new(pool_config(Transport::Udp, range, Some(Path::new(dir)))).unwrap();
            let lease = pool.lease(Instant::now() + Duration::from_secs(5)).unwrap();
            println!("leased-port={}", lease.port());
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        }
        ["eacces"] => {
            // SAFETY: plain syscalls dropping root for good; failure is checked.
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
            eacces_is_reported();
            println!("eacces-ok");
        }
        ["tw-listener", a, b] => {
            let listeners: Vec<TcpListener> = [a, b]
                .iter()
                .map(|ip| {
                    TcpListener::bind((ip.parse::<std::net::IpAddr>().unwrap(), 10080)).unwrap()
                })
                .collect();
            for l in listeners {
                std::thread::spawn(move || {
                    for conn in l.incoming().flatten() {
                        std::thread::spawn(move || {
                            let mut conn = conn;
                            // Passive side: read to the client's FIN, then close.
                            let _ = std::io::copy(&mut conn, &mut std::io::sink());
                        });
                    }
                });
            }
            println!("ready");
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        }
        ["tw-pool", x, y] => {
            let dest = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 10080);
            time_wait_in_namespace(dest(x), dest(y))
        }
        other => panic!("unknown child role {other:?}"),
    }
}

fn eacces_is_reported() {
    let pool = Pool::new(pool_config(
        Transport::Udp,
        PortRange::new(850, 851).unwrap(),
        None,
    ))
    .unwrap();
    let err = pool.try_lease().unwrap_err();
    assert!(
        matches!(err, LeaseError::PermissionDenied { port: 850, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "binding port 850 needs root or CAP_NET_BIND_SERVICE (udp pool 850-851)"
    );
    assert_eq!(pool.metrics().in_use, 0);
}

#[test]
fn real_binds_skip_a_port_another_process_holds() {
    let range = private_range();
    let mut holder = Helper::spawn(child(&format!("hold-udp:{}", range.lo())));
    holder.line("ready");
    let pool = Pool::new(pool_config(Transport::Udp, range, None)).unwrap();
    let lease = pool.try_lease().unwrap();
    assert_eq!(
        lease.port(),
        range.lo() + 1,
        "the port the other process holds is skipped"
    );
    let local = lease.socket().local_addr().unwrap().as_socket().unwrap();
    assert_eq!(
        local.port(),
        range.lo() + 1,
        "the lease owns a socket bound to its port"
    );
    let m = pool.metrics();
    assert_eq!((m.bind_busy, m.busy_now, m.in_use), (1, 1, 1));
    pool.check_invariants();
}

#[test]
fn binding_a_reserved_port_without_privilege_is_a_clear_error() {
    if is_root() {
        let (status, out) = run_with_timeout(&mut child("eacces"), Duration::from_secs(60));
        assert!(status.success() && out.contains("eacces-ok"), "{out}");
    } else {
        eacces_is_reported();
    }
}

#[test]
fn two_processes_never_lease_the_same_port_and_a_dead_ones_leases_come_back() {
    let dir = Scratch::new("portpool-registry");
    let range = private_range();
    let pool = Pool::new(pool_config(Transport::Udp, range, Some(dir.path()))).unwrap();
    let mine = pool.try_lease().unwrap();
    assert_eq!(mine.port(), range.lo());
    let mut other = Helper::spawn(child(&format!(
        "lease:{}:{}:{}",
        dir.path().display(),
        range.lo(),
        range.hi()
    )));
    let theirs: u16 = other.line("leased-port=").parse().unwrap();
    assert_ne!(
        theirs,
        mine.port(),
        "the other process skipped the port this one holds"
    );
    let lock = dir.join(format!("udp-{theirs}.lock"));
    assert!(lock.exists());
    // The other process dies without releasing: its lock file stays, its flock does not.
    drop(other);
    assert!(lock.exists(), "a killed process leaves its lock file");
    let a = pool.try_lease().unwrap();
    let b = pool.try_lease().unwrap();
    let mut got = [a.port(), b.port()];
    got.sort_unstable();
    assert!(
        got.contains(&theirs),
        "the dead process's port is leased again: {got:?}"
    );
    pool.check_invariants();
}

/// Network namespaces A (198.18.0.1) and B (198.18.0.2 and .3) joined by a veth pair;
/// removed on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn create() -> Netns {
        let id = std::process::id();
        let ns = Netns {
            a: format!("pp{id}a"),
            b: format!("pp{id}b"),
        };
        let (va, vb) = (format!("ppv{id}a"), format!("ppv{id}b"));
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &ns.a]);
        ip(&["netns", "add", &ns.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &ns.a]);
        ip(&["link", "set", &vb, "netns", &ns.b]);
        ip(&["-n", &ns.a, "addr", "add", "198.18.0.1/24", "dev", &va]);
        ip(&["-n", &ns.b, "addr", "add", "198.18.0.2/24", "dev", &vb]);
        ip(&["-n", &ns.b, "addr", "add", "198.18.0.3/24", "dev", &vb]);
        for (n, v) in [(&ns.a, &va), (&ns.b, &vb)] {
            ip(&["-n", n, "link", "set", v, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        // With TCP timestamps (Linux's default) the kernel recycles a TIME_WAIT 4-tuple
        // for a connect from an explicitly bound port; without them (peers or firewalls
        // that strip the option) it refuses with EADDRNOTAVAIL. The pool must be right
        // in the strict case, so the test makes it.
        ip(&[
            "netns",
            "exec",
            &ns.a,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_timestamps=0",
        ]);
        ns
    }

    fn exec(&self, ns: &str, role: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(std::env::current_exe().unwrap());
        as_child(&mut cmd, role);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Close actively: send our FIN first, wait for the peer's, so this side keeps TIME_WAIT.
fn active_close(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).unwrap();
    let _ = std::io::copy(&mut (&*stream), &mut std::io::sink());
}

/// Runs inside namespace A.
fn time_wait_in_namespace(x: SocketAddr, y: SocketAddr) {
    use socket2::{Domain, SockAddr, Socket, Type};
    let fresh = |port: u16| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SockAddr::from(SocketAddr::from(([0, 0, 0, 0], port))))
            .unwrap();
        s
    };
    // The kernel's rule, outside the pool: after an active close towards X, port 850 can
    // be bound again (SO_REUSEADDR) but cannot reach X; it can reach Y.
    let first = fresh(850);
    first.connect(&SockAddr::from(x)).unwrap();
    let first: TcpStream = first.into();
    active_close(&first);
    drop(first);
    let again = fresh(850).connect(&SockAddr::from(x)).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{again}");
    let to_y: TcpStream = {
        let s = fresh(850);
        s.connect(&SockAddr::from(y))
            .expect("the same port reaches another destination");
        s.into()
    };
    active_close(&to_y);
    drop(to_y);

    // The pool: it does not know about 850's TIME_WAIT towards X, learns it from
    // EADDRNOTAVAIL, and moves on to 851.
    let mut cfg = pool_config(Transport::Tcp, PortRange::new(850, 851).unwrap(), None);
    cfg.time_wait = Duration::from_secs(60);
    let pool = Pool::new(cfg).unwrap();
    let deadline = || Instant::now() + Duration::from_secs(5);
    let lease = pool.connect(x, Duration::from_secs(5), deadline()).unwrap();
    assert_eq!(lease.port(), 851);
    active_close(lease.socket());
    drop(lease); // active close: 851 is held from X for 60 s
    let err = pool.lease_for(x, Instant::now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 in TIME_WAIT towards 198.18.0.2:10080"),
        "the pool never hands out a port in TIME_WAIT towards X: {err}"
    );
    // Y is served at once, by either port.
    let lease = pool.connect(y, Duration::from_secs(5), deadline()).unwrap();
    assert!(PortRange::new(850, 851).unwrap().contains(lease.port()));
    active_close(lease.socket());
    drop(lease);
    pool.check_invariants();
    println!("tw-ok");
}

#[test]
fn time_wait_holds_a_source_port_from_that_client_only_across_a_veth_pair() {
    require_root!();
    require_tool!("/usr/sbin/ip");
    let ns = Netns::create();
    let mut listener = Helper::spawn(ns.exec(&ns.b, "tw-listener:198.18.0.2:198.18.0.3"));
    listener.line("ready");
    let (status, out) = run_with_timeout(
        &mut ns.exec(&ns.a, "tw-pool:198.18.0.2:198.18.0.3"),
        Duration::from_secs(120),
    );
    assert!(status.success() && out.contains("tw-ok"), "{out}");
    drop(listener);
}

/// The `portpool` binary, built in this test's profile and target directory (only it:
/// the other crates' binaries may be mid-work).
fn portpool_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "portpool", "--bin", "portpool"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    assert!(
        cmd.status().unwrap().success(),
        "cargo build -p portpool failed"
    );
    dir.join("portpool")
}

fn rules_site() -> Site {
    let mut site = Site::new("daily");
    site.server_name = "backup".into();
    site.server_addresses = vec!["198.18.0.1".parse().unwrap()];
    site.server.reserved_udp = Setting::default_value(PortRange::new(850, 859).unwrap());
    let dle = |host: &str, auth| SiteDle::new(host, "/srv", auth).with_client_port(10080);
    site.dles = vec![
        dle("alpha", Auth::Bsd),
        dle("beta", Auth::Bsdudp),
        dle("gamma", Auth::Bsdtcp),
    ];
    site.clients = vec![
        Client::new(
            "alpha",
            ["198.18.0.2", "2001:db8::2"].map(|a| a.parse().unwrap()),
        ),
        Client::new("beta", ["198.18.0.3".parse().unwrap()]),
        Client::new("gamma", ["198.18.0.4".parse().unwrap()]),
    ];
    site
}

#[test]
fn rules_are_accepted_by_nft_check() {
    require_root!();
    require_tool!("/usr/sbin/nft");
    let dir = Scratch::new("portpool-rules");
    let site = rules_site();
    for host in ["backup", "alpha", "beta", "gamma"] {
        let text = rules::render_host(&site, Format::Nft, host).unwrap();
        let path = dir.join(format!("{host}.nft"));
        std::fs::write(&path, &text).unwrap();
        util::run_ok(Command::new("nft").arg("-c").arg("-f").arg(&path));
    }
}

#[test]
fn rules_are_accepted_by_iptables_restore_test() {
    require_root!();
    require_tool!("/usr/sbin/iptables-restore");
    let site = rules_site();
    for host in ["backup", "alpha", "beta", "gamma"] {
        let text = rules::render_host(&site, Format::Iptables, host).unwrap();
        let out = util::pipe_through(
            Command::new("iptables-restore")
                .arg("--test")
                .stderr(Stdio::piped()),
            text.as_bytes(),
        );
        assert!(
            out.status.success(),
            "iptables-restore --test {host}:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn simulate_reproduces_the_seed_case_and_the_same_seed_prints_the_same_night() {
    let bin = portpool_bin();
    let run = |args: &[&str]| {
        let out = util::run_ok(Command::new(&bin).args(args));
        String::from_utf8(out.stdout).unwrap()
    };
    // Debian's /etc/services as far as 850-859 goes: 853 is DNS over TLS.
    let dir = Scratch::new("portpool-simulate");
    let services = dir.join("services");
    std::fs::write(&services, "domain-s\t853/tcp\ndomain-s\t853/udp\n").unwrap();
    let services = services.to_str().unwrap();
    let args = [
        "--simulate",
        "--range",
        "850-859",
        "--inparallel",
        "20",
        "--services",
        services,
    ];
    let text = run(&args);
    assert_eq!(text, run(&args), "same seed, same output");
    // One spelling (issue 11): `--simulate`; the old `simulate` subcommand is gone.
    let sub = Command::new(&bin)
        .args(["simulate", "--range", "850-859"])
        .output()
        .expect("run portpool");
    assert_eq!(
        sub.status.code(),
        Some(2),
        "`portpool simulate` is not a command"
    );
    assert!(
        text.contains("udp 850-859: 9 usable (853 is domain-s in"),
        "{text}"
    );
    let row = |policy: &str| -> Vec<String> {
        text.lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(policy)
                    && words.next().is_some_and(|w| w.parse::<u32>().is_ok())
            })
            .unwrap_or_else(|| panic!("no {policy} row in\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let old = row("amanda-2.4");
    let (done, failed): (u32, u32) = (old[1].parse().unwrap(), old[2].parse().unwrap());
    let share = f64::from(failed) / f64::from(done + failed);
    assert!(
        (0.4..=0.7).contains(&share),
        "about half fail under amanda-2.4:\n{text}"
    );
    let new = row("portpool");
    assert_eq!(new[2], "0", "nothing fails under portpool:\n{text}");
    assert!(text.contains("time cost of backpressure"));
    assert!(text.contains("smallest range"));
}
