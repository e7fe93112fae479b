//! Issue 10: our amandad under hostile peers.
//!
//! The acceptance test runs everything at once against one standalone amandad (UDP and TCP
//! on one port, RLIMIT_NOFILE 1024 like a default service): 5,000 idle TCP connections
//! (reopened as amandad closes them), 200 connections each holding most of a 4 MiB frame
//! (reopened too), a peer on a reserved port that sends REQs and never reads, and noop REQs
//! from 10,000 loopback addresses without reverse DNS. Meanwhile a well-behaved server's
//! noop (bsd and bsdtcp) and a 100 MiB sendbackup must complete, amandad's peak RSS must
//! stay at or below 64 MiB, its descriptors under its cap, and its log must grow by summary
//! lines only. The other tests here each pin one finding of the issue.
//!
//! Everything stays on 127.0.0.0/8; source addresses other than 127.0.0.1 have no entry in
//! /etc/hosts, so they have no reverse name.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::amandad_interop::{bsd_stream_ports, read_bsd_streams};
use crate::require_root;
use crate::util::{self, Scratch};

const FEATURES: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

/// The refusal summary interval the tests configure.
const SUMMARY_SECS: u64 = 5;

fn setup() -> std::sync::MutexGuard<'static, ()> {
    let guard = util::MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    util::ensure_amandahosts_line("localhost backup amdump");
    guard
}

/// Our amandad started as root, standalone on UDP and TCP, with a settings file and an
/// RLIMIT_NOFILE of its own.
struct Daemon {
    child: Child,
    dir: Scratch,
    port: u16,
}

impl Daemon {
    fn start(tag: &str, settings: &str, nofile: u64) -> Daemon {
        Daemon::start_with(tag, settings, nofile, None)
    }

    /// With `resolv_conf`, amandad runs in a mount namespace of its own where that file is
    /// /etc/resolv.conf.
    fn start_with(
        tag: &str,
        settings: &str,
        nofile: u64,
        resolv_conf: Option<&std::path::Path>,
    ) -> Daemon {
        let dir = Scratch::new(tag);
        util::chown_amanda(dir.path());
        let conf = dir.join("amanda-rs.toml");
        fs::write(&conf, settings).expect("settings");
        let port = util::free_port();
        let log = dir.join("amandad.log");
        let mut cmd = Command::new(util::workspace_bin("amandad"));
        cmd.args(["-auth=bsd", "amdump", "--log"])
            .arg(&log)
            .arg("--settings")
            .arg(&conf)
            .arg("--listen")
            .arg(format!("udp:127.0.0.1:{port}"))
            .arg("--listen")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .env_remove("AMANDA_RS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Prepared before the fork: nothing is allocated between fork and exec.
        let resolv = resolv_conf
            .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path"));
        // SAFETY: setrlimit, unshare and mount are async-signal-safe system calls on
        // strings made before the fork; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(resolv) = &resolv {
                    let fail = || Err(std::io::Error::last_os_error());
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return fail();
                    }
                    if libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                    if libc::mount(
                        resolv.as_ptr(),
                        c"/etc/resolv.conf".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start amandad");
        util::wait_listening_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        Daemon { child, dir, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("amandad.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- our amandad's log, last lines ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A `key:   N kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's descriptor limit to `n` (the hostile peers need thousands).
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = n.min(lim.rlim_max);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn v4(a: u8, b: u8, c: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, a, b, c)
}

/// A TCP socket bound to `src` (port 0, or the first free reserved port when `reserved`),
/// connecting to 127.0.0.1:`port` without waiting.
fn tcp_from(src: Ipv4Addr, port: u16, reserved: bool) -> Option<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.set_nonblocking(true).ok()?;
    // Closing with RST leaves no TIME_WAIT behind on our side.
    s.set_linger(Some(Duration::ZERO)).ok()?;
    if reserved {
        let mut bound = false;
        for p in (600..1000).rev() {
            if s.bind(&SocketAddrV4::new(src, p).into()).is_ok() {
                bound = true;
                break;
            }
        }
        if !bound {
            return None;
        }
    } else {
        s.bind(&SocketAddrV4::new(src, 0).into()).ok()?;
    }
    match s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()) {
        Ok(()) => Some(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Some(s),
        Err(_) => None,
    }
}

/// True when the peer closed or reset `s` (a pending connect is still open).
fn is_closed(s: &Socket) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Hostile peers share a stop flag and report counters.
struct Hostile {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    idle_open: Arc<AtomicUsize>,
    /// Idle connections opened in all (first ones and reopened ones).
    idle_opened: Arc<AtomicU64>,
    frames_sent: Arc<AtomicU64>,
    frames_cut: Arc<AtomicU64>,
    datagrams: Arc<AtomicU64>,
    reader_closed_after: Arc<AtomicU64>,
}

impl Hostile {
    fn new() -> Hostile {
        Hostile {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            idle_open: Arc::new(AtomicUsize::new(0)),
            idle_opened: Arc::new(AtomicU64::new(0)),
            frames_sent: Arc::new(AtomicU64::new(0)),
            frames_cut: Arc::new(AtomicU64::new(0)),
            datagrams: Arc::new(AtomicU64::new(0)),
            reader_closed_after: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `n` idle connections from 127.0.0.2-21, reopened every 2 s when amandad closed them.
    fn idle_connections(&mut self, port: u16, n: usize) {
        let (stop, open, opened) = (
            self.stop.clone(),
            self.idle_open.clone(),
            self.idle_opened.clone(),
        );
        self.threads.push(std::thread::spawn(move || {
            let connect = |i: usize| {
                let s = tcp_from(v4(0, 0, 2 + (i % 20) as u8), port, false);
                if s.is_some() {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                s
            };
            let mut socks: Vec<Option<Socket>> = (0..n).map(connect).collect();
            while !stop.load(Ordering::Relaxed) {
                let mut alive = 0;
                for (i, s) in socks.iter_mut().enumerate() {
                    if s.as_ref().is_some_and(|s| !is_closed(s)) {
                        alive += 1;
                        continue;
                    }
                    *s = connect(i);
                }
                open.store(alive, Ordering::Relaxed);
                for _ in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }

    /// `n` connections from 127.0.0.1 (any local user; its name is known), each sending the
    /// header of a 4 MiB frame and all but 64 KiB of its payload, then holding; one closed
    /// by amandad is reopened after a while (at most 20 a second).
    fn partial_frames(&mut self, port: u16, n: usize) {
        let (stop, sent, cut) = (
            self.stop.clone(),
            self.frames_sent.clone(),
            self.frames_cut.clone(),
        );
        self.threads.push(std::thread::spawn(move || {
            let len: u32 = 4 << 20;
            let mut head = Vec::new();
            head.extend_from_slice(&len.to_be_bytes());
            head.extend_from_slice(&1u32.to_be_bytes());
            let body = vec![b'A'; (len as usize) - (64 << 10)];
            let mut held: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                let mut opened = 0;
                for slot in held.iter_mut() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(s) = slot {
                        let sock = socket2::SockRef::from(&*s);
                        if !is_closed_ref(&sock) {
                            continue;
                        }
                        cut.fetch_add(1, Ordering::Relaxed);
                        *slot = None;
                    }
                    if opened >= 20 {
                        continue;
                    }
                    opened += 1;
                    let Some(s) = tcp_from(v4(0, 0, 1), port, false) else {
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    let mut t: TcpStream = s.into();
                    if t.write_all(&head).and_then(|()| t.write_all(&body)).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    *slot = Some(t);
                }
                let spent = round.elapsed();
                if spent < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_secs(1) - spent);
                }
            }
        }));
    }

    /// A peer on a reserved port of 127.0.0.1 (so its REQs are accepted) that sends noop
    /// REQs as fast as amandad reads them and never reads a byte.
    fn never_reads(&mut self, port: u16) {
        let (stop, closed_after) = (self.stop.clone(), self.reader_closed_after.clone());
        self.threads.push(std::thread::spawn(move || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let _ = s.set_recv_buffer_size(4096);
            let mut bound = false;
            for p in (600..1000).rev() {
                if s.bind(&SocketAddrV4::new(v4(0, 0, 1), p).into()).is_ok() {
                    bound = true;
                    break;
                }
            }
            assert!(bound, "no reserved port for the peer that never reads");
            s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
                .expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            let mut t: TcpStream = s.into();
            let start = Instant::now();
            let mut handle = 1u32;
            let mut pending: Vec<u8> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if pending.is_empty() {
                    for _ in 0..64 {
                        let payload = format!(
                            "\0SECURITY USER backup\nSERVICE noop\nOPTIONS features={FEATURES};\n\0"
                        );
                        pending.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                        pending.extend_from_slice(&handle.to_be_bytes());
                        pending.extend_from_slice(payload.as_bytes());
                        handle += 1;
                    }
                }
                match t.write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => {
                        closed_after.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    /// noop REQs from 127.100.0.0-127.100.39.249 (10,000 addresses), round after round,
    /// about `rate` a second, each from a fresh unreserved port.
    fn datagram_flood(&mut self, port: u16, rate: u64) {
        let (stop, count) = (self.stop.clone(), self.datagrams.clone());
        self.threads.push(std::thread::spawn(move || {
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = n % 10_000;
                let src = v4(100, (i / 250) as u8, (i % 250) as u8);
                if let Ok(s) = UdpSocket::bind((src, 0)) {
                    let req = format!(
                        "Amanda 3.5 REQ HANDLE 000-{n:08x} SEQ 1\nSECURITY USER backup\nSERVICE noop\nOPTIONS features={FEATURES};\n"
                    );
                    if s.send_to(req.as_bytes(), ("127.0.0.1", port)).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                let due = start + Duration::from_micros(n * 1_000_000 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_closed_ref(s: &socket2::SockRef<'_>) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let _ = s.set_nonblocking(true);
    let r = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    r
}

/// A UDP socket on a reserved port of 127.0.0.1.
fn reserved_udp() -> UdpSocket {
    for port in (600..1000).rev() {
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
            return s;
        }
    }
    panic!("no free reserved UDP port");
}

/// A well-behaved server's noop over bsd: REQ, resent every 10 s like Amanda's, until the
/// REP; then the ACK. Returns how long it took.
fn noop_udp(port: u16, limit: Duration) -> Result<Duration, String> {
    let sock = reserved_udp();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "Amanda 3.5 REQ HANDLE 000-0000beef SEQ 7\nSECURITY USER backup\nSERVICE noop\nOPTIONS features={FEATURES};\n"
    );
    let start = Instant::now();
    let mut sent = None::<Instant>;
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < limit {
        if sent.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            sock.send_to(req.as_bytes(), ("127.0.0.1", port))
                .map_err(|e| e.to_string())?;
            sent = Some(Instant::now());
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(" REP HANDLE 000-0000beef") {
            let header = text.lines().next().unwrap_or("").replace(" REP ", " ACK ");
            let _ = sock.send_to(format!("{header}\n").as_bytes(), ("127.0.0.1", port));
            return Ok(start.elapsed());
        }
        if text.contains(" NAK ") {
            return Err(format!("NAK: {text}"));
        }
    }
    Err(format!("no REP within {limit:?}"))
}

/// A well-behaved server's noop over bsdtcp from a reserved port. Returns how long it took.
fn noop_tcp(port: u16, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let s = tcp_from(v4(0, 0, 1), port, true).ok_or("no reserved TCP port")?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let payload = format!("\0SECURITY USER backup\nSERVICE noop\nOPTIONS features={FEATURES};\n\0");
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(payload.as_bytes());
    t.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    loop {
        let mut h = [0u8; 8];
        t.read_exact(&mut h)
            .map_err(|e| format!("read: {e} after {:?}", start.elapsed()))?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let mut p = vec![0u8; len];
        t.read_exact(&mut p).map_err(|e| format!("read: {e}"))?;
        match p.first() {
            // REP: acknowledge it.
            Some(1) => {
                let mut ack = 2u32.to_be_bytes().to_vec();
                ack.extend_from_slice(&1u32.to_be_bytes());
                ack.extend_from_slice(&[3, 0]);
                let _ = t.write_all(&ack);
                return Ok(start.elapsed());
            }
            Some(0) | Some(4) => {
                return Err(format!("refused: {}", String::from_utf8_lossy(&p)));
            }
            _ => {}
        }
    }
}

/// A 100 MiB tree that tar cannot shrink (no runs of zeros for --sparse).
fn hundred_mib(dir: &std::path::Path) -> u64 {
    fs::create_dir_all(dir).expect("mkdir");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for f in 0..4 {
        let mut file = fs::File::create(dir.join(format!("part{f}"))).expect("create");
        for _ in 0..25 {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            file.write_all(&block).expect("write");
        }
    }
    100 << 20
}

/// Runs `amanda-load sendbackup` (amgtar level 0 over bsdtcp, data counted and dropped).
fn sendbackup(port: u16, dir: &std::path::Path) -> (Duration, String) {
    let start = Instant::now();
    let mut cmd = Command::new(util::workspace_bin("amanda-load"));
    cmd.args([
        "sendbackup",
        "--auth",
        "bsdtcp",
        "--port",
        &port.to_string(),
        "--dir",
    ])
    .arg(dir);
    let (status, out) = util::run_with_timeout(&mut cmd, Duration::from_secs(300));
    assert!(status.success(), "amanda-load sendbackup failed: {out}");
    (start.elapsed(), out)
}

/// Issue 10's acceptance: amandad under hostile load, with this host's name service.
#[test]
fn a_well_behaved_server_gets_through_while_amandad_holds_its_bounds_under_hostile_load() {
    require_root!();
    hostile_load(false);
}

/// The same with a name server that never answers: every reverse lookup of a hostile
/// address takes the resolver's whole timeout. The old loop blocked on each; now they wait
/// on the normal lane and the server's lookups (reserved ports, /etc/hosts) go first.
#[test]
fn a_well_behaved_server_gets_through_hostile_load_while_the_name_server_never_answers() {
    require_root!();
    hostile_load(true);
}

fn hostile_load(black_hole_dns: bool) {
    let _guard = setup();
    raise_nofile(20_000);
    let data = Scratch::new("hostile-data");
    let tree = data.join("tree");
    let size = hundred_mib(&tree);
    // tar runs as the Amanda user unless the setuid helper is installed; either way it
    // must be able to read (and, with --atime-preserve=system, own) the files.
    util::chown_amanda(&tree);
    let nofile = 1024;
    let settings =
        format!("[amandad]\nrefusal_summary_secs = {SUMMARY_SECS}\nstalled_output_secs = 10\n");
    // A name server on loopback that takes every query and never answers.
    let black_hole = black_hole_dns.then(|| {
        let sock = UdpSocket::bind("127.0.9.53:53").expect("bind the silent name server");
        let conf = data.join("resolv.conf");
        fs::write(
            &conf,
            "nameserver 127.0.9.53\noptions timeout:2 attempts:1\n",
        )
        .expect("resolv.conf");
        (sock, conf)
    });
    let d = Daemon::start_with(
        if black_hole_dns {
            "hostile-dns"
        } else {
            "hostile"
        },
        &settings,
        nofile,
        black_hole.as_ref().map(|(_, conf)| conf.as_path()),
    );
    let pid = d.pid();
    // The defaults: 256 connections (under 1024 - 128 kept for dumps), 16 MiB of partial
    // input.
    let cap = 256usize;
    let fd_reserve = 128usize;

    let peak_fds = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, on) = (peak_fds.clone(), sampling.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(fd_count(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut hostile = Hostile::new();
    let started = Instant::now();
    // The peer that never reads comes first: its accepted REQs put 127.0.0.1's name in the
    // cache, which is what lets the frame holders from there be read at all.
    hostile.never_reads(d.port);
    std::thread::sleep(Duration::from_secs(1));
    hostile.idle_connections(d.port, 5000);
    hostile.partial_frames(d.port, 200);
    hostile.datagram_flood(d.port, 3000);
    // Let every peer reach full strength: 5,000 connections opened (most of them closed
    // again by amandad and reopened), every 4 MiB frame sent once.
    let warm = Instant::now();
    while (hostile.idle_opened.load(Ordering::Relaxed) < 10_000
        || hostile.frames_sent.load(Ordering::Relaxed) + hostile.frames_cut.load(Ordering::Relaxed)
            < 200)
        && warm.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log_before = d.log().len();
    let load_from = Instant::now();

    let tcp = noop_tcp(d.port, Duration::from_secs(30));
    let udp = noop_udp(d.port, Duration::from_secs(30));
    let (backup_took, backup_out) = sendbackup(d.port, &tree);
    // The peer that never reads is closed after 10 s without taking output.
    let wait = Instant::now();
    while hostile.reader_closed_after.load(Ordering::Relaxed) == 0
        && wait.elapsed() < Duration::from_secs(40)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Another summary interval under load, then everything stops.
    std::thread::sleep(Duration::from_secs(SUMMARY_SECS + 1));
    let load_secs = load_from.elapsed().as_secs();
    let rss_peak = status_kib(pid, "VmHWM:");
    let rss_now = status_kib(pid, "VmRSS:");
    let log_after = d.log();
    let stats = format!(
        "idle connections open {} (opened {}), 4 MiB frames sent {} and cut {}, datagrams {}, never-reader closed after {} ms; peak RSS {rss_peak} KiB, RSS {rss_now} KiB, peak fds {}",
        hostile.idle_open.load(Ordering::Relaxed),
        hostile.idle_opened.load(Ordering::Relaxed),
        hostile.frames_sent.load(Ordering::Relaxed),
        hostile.frames_cut.load(Ordering::Relaxed),
        hostile.datagrams.load(Ordering::Relaxed),
        hostile.reader_closed_after.load(Ordering::Relaxed),
        peak_fds.load(Ordering::Relaxed),
    );
    hostile.stop();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    eprintln!(
        "hostile load ({}) for {:?}: {stats}\nnoop bsdtcp {tcp:?}, noop bsd {udp:?}, sendbackup {backup_took:?}: {}",
        if black_hole_dns {
            "a name server that never answers"
        } else {
            "this host's name service"
        },
        started.elapsed(),
        backup_out.trim()
    );

    // The well-behaved server got through.
    let tcp = tcp.unwrap_or_else(|e| panic!("bsdtcp noop under load: {e}\n{stats}"));
    let udp = udp.unwrap_or_else(|e| panic!("bsd noop under load: {e}\n{stats}"));
    assert!(tcp < Duration::from_secs(5), "bsdtcp noop took {tcp:?}");
    assert!(udp < Duration::from_secs(15), "bsd noop took {udp:?}");
    let bytes: u64 = backup_out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes="))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(
        bytes >= size && backup_out.contains("mesg_end=true"),
        "sendbackup under load: {backup_out}"
    );
    // The hostile peers really were there and were handled.
    assert!(
        hostile.idle_opened.load(Ordering::Relaxed) >= 10_000,
        "5,000 idle connections, and as many again after amandad closed them: {stats}"
    );
    assert!(
        hostile.datagrams.load(Ordering::Relaxed) >= 10_000,
        "{stats}"
    );
    if !black_hole_dns {
        // (Without names, their frames wait unread in the kernel, not in amandad.)
        assert!(
            hostile.frames_cut.load(Ordering::Relaxed) >= 150,
            "the budget closes holders of partial frames: {stats}"
        );
    }
    assert!(
        hostile.reader_closed_after.load(Ordering::Relaxed) > 0,
        "the peer that never reads is closed: {stats}"
    );
    // Memory and descriptors.
    assert!(rss_peak <= 64 * 1024, "peak RSS {rss_peak} KiB: {stats}");
    let peak = peak_fds.load(Ordering::Relaxed);
    assert!(
        peak <= cap + fd_reserve && (peak as u64) < nofile,
        "peak descriptors {peak} (cap {cap} + {fd_reserve}): {stats}"
    );
    // The log grew by summary lines only.
    let added = &log_after[log_before.min(log_after.len())..];
    let mut summaries = 0;
    let mut other = Vec::new();
    for line in added.lines() {
        if line.contains(" requests/connections from ") && line.contains(" peers in the last ") {
            summaries += 1;
        } else if line.contains("further refusals are summarised")
            || (line.contains(" dump ") && line.contains(" bytes in "))
        {
            // The first refusal (once), the dump's own result line.
        } else {
            other.push(line);
        }
    }
    assert!(
        other.is_empty(),
        "lines other than summaries under load:\n{}",
        other.join("\n")
    );
    assert!(
        summaries >= 1 && summaries as u64 <= load_secs / SUMMARY_SECS + 2,
        "{summaries} summaries in {load_secs} s:\n{added}"
    );
    assert!(
        added.len() <= (summaries + 2) * 1024,
        "the log grew by {} bytes:\n{added}",
        added.len()
    );
}

/// Issue 10: a bsd data listener accepted the first connection from any address, and a
/// connection before the ACK counted as the ACK. Now another address is closed (and its
/// connection counts for nothing) while the server's own connections get the dump.
#[test]
fn data_listeners_accept_only_the_requesting_servers_address() {
    require_root!();
    let _guard = setup();
    let d = Daemon::start("data-peer", "[amandad]\n", 1024);
    let data = Scratch::new("data-peer-dle");
    let dle = data.join("dle");
    fs::create_dir_all(&dle).expect("mkdir");
    fs::write(dle.join("f.txt"), "only for the server\n".repeat(500)).expect("write");
    let body = format!(
        "SERVICE sendbackup\nOPTIONS features={FEATURES};maxdumps=1;hostname=localhost;config=peer;\n\
         <dle>\n  <program>GNUTAR</program>\n  <disk>{}</disk>\n  <level>0</level>\n  <auth>bsd</auth>\n  <record>NO</record>\n</dle>\n",
        dle.display()
    );
    let dgram = format!("Amanda 3.5 REQ HANDLE 000-0000da7a SEQ 1\nSECURITY USER backup\n{body}");
    let sock = reserved_udp();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    sock.send_to(dgram.as_bytes(), ("127.0.0.1", d.port))
        .expect("send REQ");
    let mut buf = vec![0u8; 65536];
    let rep = loop {
        let n = sock.recv(&mut buf).expect("a REP within 20 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(" REP ") {
            break text;
        }
    };
    // No ACK yet: an intruder from another loopback address connects first, to every port.
    let ports = bsd_stream_ports(&rep);
    for (_, port) in &ports {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.bind(&SocketAddrV4::new(v4(0, 0, 2), 0).into())
            .expect("bind 127.0.0.2");
        s.connect(&SocketAddr::from(([127, 0, 0, 1], *port)).into())
            .expect("connect");
        let mut t: TcpStream = s.into();
        t.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        let r = t.read_to_end(&mut got);
        assert!(
            got.is_empty() && r.as_ref().map_or(true, |_| true),
            "the intruder got {} bytes from port {port}: {:?}\n{}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(300)]),
            d.log()
        );
        if let Err(e) = r {
            assert_ne!(
                e.kind(),
                std::io::ErrorKind::WouldBlock,
                "the intruder's connection to {port} was held open, not closed"
            );
        }
    }
    // The server itself connects (its ACK "lost"): the whole dump.
    let (mesg, archive) = read_bsd_streams(&ports);
    assert!(
        mesg.contains("sendbackup: end") && archive.len() >= 10_000,
        "the server's own connections get the dump: MESG {mesg:?}, {} DATA bytes\n{}",
        archive.len(),
        d.log()
    );
    let header = rep.lines().next().unwrap_or("").replace(" REP ", " ACK ");
    let _ = sock.send_to(format!("{header}\n").as_bytes(), ("127.0.0.1", d.port));
    assert!(
        d.log()
            .contains("refused from 127.0.0.2 (data connections from another address"),
        "{}",
        d.log()
    );
}

/// Issue 10: amandad kept the Amanda user's supplementary groups (`disk`, `tape` on Debian),
/// so the loop that parses network input could read raw disks. Only the primary group is
/// left.
#[test]
fn amandad_keeps_no_supplementary_group_after_dropping_root() {
    require_root!();
    let d = Daemon::start("groups", "[amandad]\n", 1024);
    let status = fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    let field = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let gid = field("Gid:");
    let groups = field("Groups:");
    assert_eq!(gid.first().map(String::as_str), Some("34"), "{status}");
    assert_eq!(groups, vec!["34".to_string()], "{status}");
}

/// Issue 10: a connection that never makes a request stayed open forever. It is closed
/// after `unauth_timeout_secs`, and the refusal goes into the summary, not a line each.
#[test]
fn a_connection_without_a_request_is_closed_after_the_timeout() {
    require_root!();
    let _guard = setup();
    let d = Daemon::start(
        "unauth",
        "[amandad]\nunauth_timeout_secs = 2\nrefusal_summary_secs = 60\n",
        1024,
    );
    let start = Instant::now();
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).expect("connect"))
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut b = [0u8; 16];
        let r = c.read(&mut b);
        assert!(
            matches!(r, Ok(0)) || r.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "still open after {:?}",
            start.elapsed()
        );
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    // One line for the first refusal; the other 19 wait for the summary.
    let log = d.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("no accepted request within 2 s"))
            .count(),
        1,
        "{log}"
    );
}

/// Issue 10: the log had no bound, and logrotate could not rotate it under inetd. A renamed
/// file is followed (SIGHUP or the periodic check), and past `[log] max_bytes` the file
/// becomes `.1`.
#[test]
fn the_log_file_is_reopened_after_logrotate_and_bounded_by_max_bytes() {
    require_root!();
    let _guard = setup();
    let d = Daemon::start(
        "logrotate",
        "[log]\nlevel = \"debug\"\nmax_bytes = 65536\n",
        1024,
    );
    let log = d.log_path();
    let rotated = d.dir.join("amandad.log.1");
    noop_udp(d.port, Duration::from_secs(10)).expect("noop");
    fs::rename(&log, d.dir.join("amandad.log.old")).expect("rename");
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(100));
    noop_udp(d.port, Duration::from_secs(10)).expect("noop");
    let fresh = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        fresh.contains("noop for backup@localhost"),
        "a new log after SIGHUP: {fresh:?}"
    );
    // logrotate's `create` without a signal: the next look at the path (once a second).
    fs::rename(&log, d.dir.join("amandad.log.old2")).expect("rename");
    std::thread::sleep(Duration::from_millis(1100));
    noop_udp(d.port, Duration::from_secs(10)).expect("noop");
    assert!(log.exists(), "a new log without a signal");
    // Past max_bytes (a noop logs one debug line of about 90 bytes): .1, and a new file,
    // never more.
    for _ in 0..1500 {
        noop_udp(d.port, Duration::from_secs(10)).expect("noop");
    }
    let size = |p: &std::path::Path| fs::metadata(p).map_or(0, |m| m.len());
    assert!(rotated.exists(), "no {}", rotated.display());
    assert!(
        size(&log) <= 65536 && size(&rotated) <= 65536 + 4096,
        "{} {}",
        size(&log),
        size(&rotated)
    );
    assert!(!d.dir.join("amandad.log.2").exists());
}
