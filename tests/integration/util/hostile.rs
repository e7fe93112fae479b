//! Hostile peers for amandad's tests (issue 10), and our amandad started with the limits
//! and name service they need: a root daemon with its own RLIMIT_NOFILE and, when asked, a
//! resolv.conf of its own (in a mount namespace); idle connections, holders of partial
//! 4 MiB frames, a peer that never reads, a datagram flood from 10,000 loopback addresses;
//! a well-behaved server's noop and sendbackup; /proc readings of the daemon.
//!
//! Everything stays on 127.0.0.0/8, and every thread and process stops on drop.

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

use crate::util::workers::{Workers, hold_connections};
use crate::util::{self, Scratch};

/// The feature string the well-behaved server and the hostile peers send.
pub(crate) const FEATURES: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

/// Our amandad started as root, standalone on UDP and TCP, with a settings file and an
/// RLIMIT_NOFILE of its own.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) dir: Scratch,
    pub(crate) port: u16,
}

impl Daemon {
    pub(crate) fn start(tag: &str, settings: &str, nofile: u64) -> Daemon {
        Daemon::start_with(tag, settings, nofile, None)
    }

    /// With `resolv_conf`, amandad runs in a mount namespace of its own where that file is
    /// /etc/resolv.conf.
    pub(crate) fn start_with(
        tag: &str,
        settings: &str,
        nofile: u64,
        resolv_conf: Option<&std::path::Path>,
    ) -> Daemon {
        Daemon::spawn(tag, settings, nofile, resolv_conf, "bsd", &[])
    }

    /// With another `-auth=` (TCP only when not bsd/bsdudp) and extra arguments (e.g.
    /// `--client-conf` for ssl).
    pub(crate) fn start_auth(
        tag: &str,
        settings: &str,
        nofile: u64,
        auth: &str,
        extra: &[std::ffi::OsString],
    ) -> Daemon {
        Daemon::spawn(tag, settings, nofile, None, auth, extra)
    }

    fn spawn(
        tag: &str,
        settings: &str,
        nofile: u64,
        resolv_conf: Option<&std::path::Path>,
        auth: &str,
        extra: &[std::ffi::OsString],
    ) -> Daemon {
        let dir = Scratch::new(tag);
        util::chown_amanda(dir.path());
        let conf = dir.join("amanda-rs.toml");
        fs::write(&conf, settings).expect("settings");
        let port = util::free_port();
        let log = dir.join("amandad.log");
        let mut cmd = Command::new(util::workspace_bin("amandad"));
        cmd.arg(format!("-auth={auth}"))
            .args(["amdump", "--log"])
            .arg(&log)
            .arg("--settings")
            .arg(&conf)
            .args(extra);
        if matches!(auth, "bsd" | "bsdudp") {
            cmd.arg("--listen").arg(format!("udp:127.0.0.1:{port}"));
        }
        cmd.arg("--listen")
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("amandad.log")
    }

    pub(crate) fn log(&self) -> String {
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
pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Descriptors open in process `pid`.
pub(crate) fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's descriptor limit to `n` (the hostile peers need thousands; as
/// root the hard limit too).
pub(crate) fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a struct we own.
    let rc = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur >= n {
            return;
        }
        lim.rlim_cur = n;
        lim.rlim_max = lim.rlim_max.max(n);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim)
    };
    assert_eq!(
        rc,
        0,
        "raising RLIMIT_NOFILE to {n}: {}",
        std::io::Error::last_os_error()
    );
}

/// 127.`a`.`b`.`c`.
pub(crate) fn v4(a: u8, b: u8, c: u8) -> Ipv4Addr {
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

/// Hostile peers: threads that stop together, and their counters.
pub(crate) struct Hostile {
    workers: Workers,
    pub(crate) idle_open: Arc<AtomicUsize>,
    /// Idle connections opened in all (first ones and reopened ones).
    pub(crate) idle_opened: Arc<AtomicU64>,
    pub(crate) frames_sent: Arc<AtomicU64>,
    pub(crate) frames_cut: Arc<AtomicU64>,
    pub(crate) datagrams: Arc<AtomicU64>,
    pub(crate) reader_closed_after: Arc<AtomicU64>,
}

impl Hostile {
    pub(crate) fn new() -> Hostile {
        Hostile {
            workers: Workers::new(),
            idle_open: Arc::new(AtomicUsize::new(0)),
            idle_opened: Arc::new(AtomicU64::new(0)),
            frames_sent: Arc::new(AtomicU64::new(0)),
            frames_cut: Arc::new(AtomicU64::new(0)),
            datagrams: Arc::new(AtomicU64::new(0)),
            reader_closed_after: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `n` idle connections from 127.0.0.2-21, reopened every 2 s when amandad closed them.
    pub(crate) fn idle_connections(&mut self, port: u16, n: usize) {
        let (open, opened) = (self.idle_open.clone(), self.idle_opened.clone());
        self.workers.spawn(move |stop| {
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
        });
    }

    /// `n` connections from 127.0.0.1 (any local user; its name is known), each sending the
    /// header of a 4 MiB frame and all but 64 KiB of its payload, then holding; one closed
    /// by amandad is reopened after a while (at most 20 a second).
    pub(crate) fn partial_frames(&mut self, port: u16, n: usize) {
        let (sent, cut) = (self.frames_sent.clone(), self.frames_cut.clone());
        self.workers.spawn(move |stop| {
            let len: u32 = 4 << 20;
            let mut head = Vec::new();
            head.extend_from_slice(&len.to_be_bytes());
            head.extend_from_slice(&1u32.to_be_bytes());
            let body = vec![b'A'; (len as usize) - (64 << 10)];
            hold_connections(&stop, n, 20, &cut, || {
                let s = tcp_from(v4(0, 0, 1), port, false)?;
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut t: TcpStream = s.into();
                if t.write_all(&head).and_then(|()| t.write_all(&body)).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Some(t)
            });
        });
    }

    /// A peer on a reserved port of 127.0.0.1 (so its REQs are accepted) that sends noop
    /// REQs as fast as amandad reads them and never reads a byte.
    pub(crate) fn never_reads(&mut self, port: u16) {
        let closed_after = self.reader_closed_after.clone();
        self.workers.spawn(move |stop| {
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
        });
    }

    /// noop REQs from 127.100.0.0-127.100.39.249 (10,000 addresses), round after round,
    /// about `rate` a second, each from a fresh unreserved port.
    pub(crate) fn datagram_flood(&mut self, port: u16, rate: u64) {
        let count = self.datagrams.clone();
        self.workers.spawn(move |stop| {
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
        });
    }

    pub(crate) fn stop(&mut self) {
        self.workers.stop();
    }
}

/// A UDP socket on a reserved port of 127.0.0.1.
pub(crate) fn reserved_udp() -> UdpSocket {
    for port in (600..1000).rev() {
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
            return s;
        }
    }
    panic!("no free reserved UDP port");
}

/// A well-behaved server's noop over bsd: REQ, resent every 10 s like Amanda's, until the
/// REP; then the ACK. Returns how long it took.
pub(crate) fn noop_udp(port: u16, limit: Duration) -> Result<Duration, String> {
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
pub(crate) fn noop_tcp(port: u16, limit: Duration) -> Result<Duration, String> {
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
pub(crate) fn hundred_mib(dir: &std::path::Path) -> u64 {
    super::Noise::new(super::Noise::SEED)
        .write_files(dir, "part", 4, 25)
        .expect("write the tree")
}

/// Runs `amanda-load sendbackup` (amgtar level 0 over bsdtcp, data counted and dropped).
pub(crate) fn sendbackup(port: u16, dir: &std::path::Path) -> (Duration, String) {
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

/// Asserts that the log grew by refusal summaries (one per `summary` seconds of `load_secs`
/// at most, and at least one), the first refusal's line and dumps' result lines only;
/// returns the number of summaries.
pub(crate) fn assert_summaries_only(added: &str, load_secs: u64, summary: u64) -> usize {
    let mut summaries = 0;
    let mut other = Vec::new();
    for line in added.lines() {
        if line.contains(" requests/connections from ") && line.contains(" peers in the last ") {
            summaries += 1;
        } else if line.contains("further refusals are summarised")
            || (line.contains(" dump ") && line.contains(" bytes in "))
        {
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
        summaries >= 1 && summaries as u64 <= load_secs / summary + 2,
        "{summaries} summaries in {load_secs} s:\n{added}"
    );
    summaries
}

/// Peak descriptors of `pid`, sampled every 100 ms until stopped.
pub(crate) struct FdSampler {
    peak: Arc<AtomicUsize>,
    on: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdSampler {
    pub(crate) fn start(pid: u32) -> FdSampler {
        let peak = Arc::new(AtomicUsize::new(0));
        let on = Arc::new(AtomicBool::new(true));
        let thread = {
            let (peak, on) = (peak.clone(), on.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    peak.fetch_max(fd_count(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        FdSampler {
            peak,
            on,
            thread: Some(thread),
        }
    }

    /// The peak so far.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(mut self) -> usize {
        self.on.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}
