//! Helpers of the auth ssl tests (issue 13): certificate trees made by the real `amssl`
//! (tests/fixtures/ssl/amssl-trees.sh), the real amandad `-auth=ssl` under a private
//! openbsd-inetd that sees its own /etc/amanda (amanda-client.conf with `ssl-dir`) and
//! optionally its own `.amandahosts` (private mount namespace), our amandad `-auth=ssl`,
//! and a packet capture with tcpdump.
//!
//! Everything lives in scratch directories and is removed (processes killed by their
//! process group) on drop, also when a test fails.

#![allow(dead_code)] // each ssl test uses a different subset

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::util::{self, AMANDA_USER, Inetd, Scratch};

/// The `ssl-dir` line of a configuration for `tree`.
pub fn ssl_dir(tree: &Path) -> String {
    format!("ssl-dir \"{}\"", tree.display())
}

/// The cipher list the real Amanda needs for amssl's 1024-bit keys (harness README S2).
pub const SECLEVEL1: &str = "ssl-cipher-list \"DEFAULT:@SECLEVEL=1\"";

/// Which set of trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client CN 127.0.0.1, server CN localhost, CA amanda-rs-ca.
    Main,
    /// The same names under another CA (amanda-rs-other-ca).
    OtherCa,
    /// Server CN 127.0.0.2 (a name the server's address does not have).
    ServerCn2,
    /// The host names of a [`crate::util::netpair::NetPair`]: client CN amb-client, server
    /// CN amb-server.
    Netpair,
    /// Dial-in over NAT (issue 14): client CN natclient (its disklist name, which resolves
    /// nowhere), server CN 198.18.0.1 (the lab's server address).
    DialinNat,
    /// The same server with a client certificate for another host, impostor.
    DialinImpostor,
    /// Dial-in through a proxy: client CN dialclient (util::dialin::HOST).
    DialinProxy,
}

/// A server tree and a client tree made by amssl.
pub struct Trees {
    _dir: Scratch,
    pub server: PathBuf,
    pub client: PathBuf,
}

/// The trees of `kind`, made once while some test holds them (about 3 s each).
pub fn trees(kind: Kind) -> Arc<Trees> {
    static CACHE: Mutex<Option<HashMap<Kind, Weak<Trees>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(t) = map.get(&kind).and_then(Weak::upgrade) {
        return t;
    }
    let (client, server, ca) = match kind {
        Kind::Main => ("127.0.0.1", "localhost", "amanda-rs-ca"),
        Kind::OtherCa => ("127.0.0.1", "localhost", "amanda-rs-other-ca"),
        Kind::ServerCn2 => ("127.0.0.1", "127.0.0.2", "amanda-rs-ca"),
        Kind::Netpair => (
            util::netpair::CLIENT_NAME,
            util::netpair::SERVER_NAME,
            "amanda-rs-ca",
        ),
        Kind::DialinNat => ("natclient", "198.18.0.1", "amanda-rs-dialin-ca"),
        Kind::DialinImpostor => ("impostor", "198.18.0.1", "amanda-rs-dialin-ca"),
        Kind::DialinProxy => ("dialclient", "198.18.0.1", "amanda-rs-dialin-ca"),
    };
    let dir = Scratch::new(&format!("ssl-trees-{kind:?}"));
    // The enrolment's client dials the server by name (on the script's own 169.254.77.1):
    // the netpair's name, which the machine does not know, gets it in a private /etc/hosts.
    let hosts = dir.join("hosts");
    let mut text = fs::read_to_string("/etc/hosts").unwrap_or_default();
    if kind == Kind::Netpair {
        text = format!("{}\n169.254.77.1 {server}\n", text.trim_end());
    }
    fs::write(&hosts, text).expect("hosts");
    let out = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec bash \"$@\"")
        .arg(&hosts)
        .arg(util::fixture("ssl/amssl-trees.sh"))
        .arg(dir.path())
        .args([client, server, ca])
        .output()
        .expect("run amssl-trees.sh");
    assert!(
        out.status.success(),
        "amssl-trees.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Arc::new(Trees {
        server: dir.join("server"),
        client: dir.join("client"),
        _dir: dir,
    });
    map.insert(kind, Arc::downgrade(&t));
    t
}

/// A copy of `tree` under `into` (to break one thing in it), owned by the Amanda user.
pub fn copy_tree(tree: &Path, into: &Path) -> PathBuf {
    util::run_ok(Command::new("cp").arg("-a").arg(tree).arg(into));
    into.to_path_buf()
}

/// Writes `text` to `path` (creating its directory) for the Amanda user, mode 0600.
pub fn write_private(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).expect("mkdir");
    }
    fs::write(path, text).expect("write");
    util::run_ok(
        Command::new("chown")
            .arg(format!("{AMANDA_USER}:{AMANDA_USER}"))
            .arg(path),
    );
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
}

/// The `SHA1 Fingerprint=...` line of a certificate file, as amssl writes it.
pub fn fingerprint_line(cert: &Path) -> String {
    let out = util::run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-in"])
            .arg(cert),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A file with both CAs' certificates (a CA file may hold several).
pub fn both_cas(a: &Trees, b: &Trees, into: &Path) -> PathBuf {
    let mut text = fs::read_to_string(a.server.join("CA/crt.pem")).expect("CA a");
    text.push_str(&fs::read_to_string(b.server.join("CA/crt.pem")).expect("CA b"));
    write_private(into, &text);
    into.to_path_buf()
}

// ---------------------------------------------------------------------------------------
// The real amandad -auth=ssl

/// The real amandad under a private openbsd-inetd whose /etc/amanda holds only our
/// amanda-client.conf (and whose ~backup/.amandahosts is `amandahosts`, when given).
pub struct RealSslAmandad {
    _inetd: Inetd,
    pub dir: Scratch,
    pub port: u16,
}

impl RealSslAmandad {
    /// Starts it on `bind:port` with `client_conf` lines (ssl-dir etc.).
    pub fn start(bind: &str, client_conf: &str, amandahosts: Option<&str>) -> RealSslAmandad {
        let dir = Scratch::new("real-ssl-amandad");
        let port = util::free_port();
        let etc = dir.join("etc");
        fs::create_dir_all(&etc).expect("mkdir");
        fs::write(
            etc.join("amanda-client.conf"),
            format!("{client_conf}\n{SECLEVEL1}\n"),
        )
        .expect("amanda-client.conf");
        let line = format!(
            "{bind}:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t/usr/lib/amanda/amandad\tamandad -auth=ssl amdump"
        );
        let hosts = dir.join("amandahosts");
        if let Some(text) = amandahosts {
            write_private(&hosts, text);
        }
        util::chown_amanda(dir.path());
        let mut binds = vec![(etc.as_path(), Path::new("/etc/amanda"))];
        if amandahosts.is_some() {
            binds.push((hosts.as_path(), Path::new("/etc/amandahosts")));
        }
        let inetd = Inetd::start_with_binds(&line, port, &binds);
        RealSslAmandad {
            _inetd: inetd,
            dir,
            port,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Our amandad -auth=ssl

/// Our amandad `-auth=ssl` under inetd on 127.0.0.1, until dropped.
pub struct OursSsl {
    _inetd: Inetd,
    pub dir: Scratch,
    pub port: u16,
    _runtar: util::RuntarInstall,
}

impl OursSsl {
    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("amandad.log")).unwrap_or_default()
    }
}

impl Drop for OursSsl {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- our amandad's log (ssl, port {}) ---\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// Starts our amandad `-auth=ssl` reading `client_conf` and the top-level settings lines
/// `settings` (e.g. `amandahosts_path = "..."`).
pub fn start_ours_ssl(client_conf: &str, settings: &str) -> OursSsl {
    let runtar = util::install_runtar();
    let dir = Scratch::new("ours-ssl");
    let port = util::free_port();
    let conf = dir.join("amanda-client.conf");
    fs::write(&conf, format!("{client_conf}\n")).expect("amanda-client.conf");
    let base = fs::read_to_string(runtar.settings()).expect("settings");
    let toml = dir.join("amanda-rs.toml");
    // Top-level keys go before the [amandad] table the helper's settings open.
    fs::write(&toml, format!("{settings}\n{base}")).expect("settings");
    util::chown_amanda(dir.path());
    let log = dir.join("amandad.log");
    let line = format!(
        "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t{}\tamandad -auth=ssl amdump --log {} --settings {} --client-conf {}",
        util::workspace_bin("amandad").display(),
        log.display(),
        toml.display(),
        conf.display()
    );
    OursSsl {
        _inetd: Inetd::start(&line, port),
        dir,
        port,
        _runtar: runtar,
    }
}

// ---------------------------------------------------------------------------------------
// Packet capture

/// tcpdump on `iface` (filter `filter`) into a file, until [`Capture::stop`].
pub struct Capture {
    child: Child,
    pub file: PathBuf,
    _dir: Scratch,
}

impl Capture {
    /// Starts tcpdump and waits until it listens.
    pub fn start(iface: &str, filter: &str) -> Capture {
        let dir = Scratch::new("capture");
        let file = dir.join("night.pcap");
        let mut child = Command::new("tcpdump")
            .args(["-i", iface, "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start tcpdump");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tcpdump did not start listening");
        Capture {
            child,
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump and returns the capture's bytes.
    pub fn stop(mut self) -> Vec<u8> {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        fs::read(&self.file).expect("read the capture")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that `pcap` (a capture of a night) shows TLS and holds neither tar's header
/// magic nor any of `paths`.
pub fn assert_nothing_in_clear(pcap: &[u8], paths: &[&Path]) {
    let has = |needle: &[u8]| pcap.windows(needle.len()).any(|w| w == needle);
    assert!(
        pcap.len() > 20_000,
        "the capture is too small to be a night: {} bytes",
        pcap.len()
    );
    // TLS 1.3 application data records.
    assert!(
        has(&[0x17, 0x03, 0x03]),
        "no TLS application data in the capture"
    );
    assert!(!has(b"ustar"), "tar header magic in clear on the wire");
    assert!(
        !has(b"SECURITY USER"),
        "an Amanda request in clear on the wire"
    );
    for p in paths {
        let text = p.display().to_string();
        assert!(
            !has(text.as_bytes()),
            "the DLE path {text} in clear on the wire"
        );
    }
}
