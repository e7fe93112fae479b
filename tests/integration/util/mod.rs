//! Shared helpers of the integration tests: privileges, scratch directories, free ports,
//! the tricky test tree and its comparison, a private openbsd-inetd, and a driver for the real
//! Amanda 3.5.1 server tools (amcheck, amdump, amfetchdump) run as the Amanda user.
//!
//! Everything here stays on 127.0.0.0/8 (or inside network namespaces a test made itself) and
//! cleans up after itself in `Drop`, also when a test fails.

#![allow(dead_code)] // each test module uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Amanda user of Debian's packages.
pub const AMANDA_USER: &str = "backup";

/// Serialises tests that edit machine-wide Amanda files (/etc/amandahosts, /etc/amanda/...).
pub static MACHINE_LOCK: Mutex<()> = Mutex::new(());

/// True when the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when the environment says it is CI (`CI=true`): there a test that cannot run its
/// real peer must fail, since a skip would pass silently (issue 10).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns early from a test that needs root, saying so loudly; fails it under CI.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::util::is_root() {
            if $crate::util::under_ci() {
                panic!(
                    "{} needs root, and CI=true: a skip would pass",
                    module_path!()
                );
            }
            eprintln!(
                "\n*** SKIPPED {}: needs root (run the tests as root, as .ci/run does) ***\n",
                module_path!()
            );
            return;
        }
    };
}

/// Returns early from a test whose external tool is missing, saying so loudly; fails it
/// under CI.
#[macro_export]
macro_rules! require_tool {
    ($path:expr) => {
        if !std::path::Path::new($path).exists() {
            if $crate::util::under_ci() {
                panic!(
                    "{} needs {}, and CI=true: a skip would pass",
                    module_path!(),
                    $path
                );
            }
            eprintln!(
                "\n*** SKIPPED {}: {} is not installed (run scripts/setup) ***\n",
                module_path!(),
                $path
            );
            return;
        }
    };
}

/// The path of a file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A binary of the workspace (amandad, amandad-runtar, dumper, portpool), built for the
/// integration tests in the same profile and target directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    // tests run from target/<profile>/deps/integration-*; the binaries sit in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    BUILD.call_once(|| {
        // A test package cannot depend on another package's binaries, so build them here
        // (a no-op when they are up to date).
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    dir.join(name)
}

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

/// A scratch directory under /tmp/amanda-rs-tests, readable by the Amanda user, removed on
/// drop unless `AMANDA_RS_KEEP=1`.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new empty scratch directory whose name contains `tag`.
    pub fn new(tag: &str) -> Scratch {
        let base = Path::new("/tmp/amanda-rs-tests");
        fs::create_dir_all(base).expect("create /tmp/amanda-rs-tests");
        let _ = fs::set_permissions(base, fs::Permissions::from_mode(0o755));
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("AMANDA_RS_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A port that is free on 127.0.0.1 for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Changes the owner of `path` (recursively) to the Amanda user.
pub fn chown_amanda(path: &Path) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{AMANDA_USER}:{AMANDA_USER}"))
            .arg(path),
    );
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, killing it after `limit`. Returns its status and combined output.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let mut text =
                String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
            text.push_str(&String::from_utf8_lossy(
                &err_thread.join().unwrap_or_default(),
            ));
            panic!("{cmd:?} did not finish within {limit:?} ({status}); output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(
        &err_thread.join().unwrap_or_default(),
    ));
    (status, text)
}

/// Waits until `addr` accepts TCP connections (or answers nothing but is bound, for UDP).
pub fn wait_listening_tcp(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on tcp {addr} after {limit:?}");
}

/// Waits until something is bound to UDP `port` on 127.0.0.1.
pub fn wait_bound_udp(port: u16, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing is bound to udp 127.0.0.1:{port} after {limit:?}");
}

// ---------------------------------------------------------------------------------------
// The tricky tree and its comparison

/// Builds the test tree: names with spaces, a tab, quotes, a backslash and UTF-8, a symlink,
/// empty file and directory, a 0700 directory, a 0600 file owned by root, a binary file, a
/// file with an old mtime. Deterministic.
pub fn make_tricky_tree(root: &Path) {
    fs::create_dir_all(root.join("sub dir/deeper")).expect("mkdir");
    fs::create_dir_all(root.join("empty dir")).expect("mkdir");
    let write = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).expect("write");
    write("plain.txt", b"hello world\n");
    write("file with spaces.txt", b"spaces in name\n");
    write(
        "h\u{e9}llo w\u{f6}rld \u{2713}.txt",
        "unicode é ü 日本\n".as_bytes(),
    );
    write("sub dir/nested file.txt", b"nested\n");
    write("sub dir/deeper/x", b"deeper\n");
    write("empty-file", b"");
    write("tab\tin name.txt", b"tab\n");
    write("quote\"s and 'apos'.txt", b"quote\n");
    write("back\\slash.txt", b"backslash\n");
    let numbers: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    write("numbers.txt", numbers.as_bytes());
    let mut x: u64 = 42;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write("random.bin", &random);
    symlink("plain.txt", root.join("link-to-plain")).expect("symlink");
    fs::set_permissions(root.join("plain.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(root.join("sub dir"), fs::Permissions::from_mode(0o700)).expect("chmod");
    set_mtime(&root.join("plain.txt"), 1_704_164_645); // 2024-01-02 03:04:05 UTC
}

/// Sets a file's mtime (and atime) to `secs` since the epoch.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// One entry of a tree manifest.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Option<PathBuf>,
    content: Option<Vec<u8>>,
}

/// Every entry under `root` (relative path → entry), directories' mtimes included.
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dirent").path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).expect("lstat");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if kind == 'f' { md.size() } else { 0 },
                    mtime: md.mtime(),
                    link: (kind == 'l').then(|| fs::read_link(&p).expect("readlink")),
                    content: (kind == 'f').then(|| fs::read(&p).expect("read")),
                },
            );
            if kind == 'd' {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Asserts that two trees are identical: names, types, modes, owners, sizes, mtimes (seconds),
/// symlink targets and contents. Directory mtimes are compared too unless `dir_mtimes` is false
/// (extracting into a directory changes its mtime, so callers that restore on top of an
/// existing tree pass false).
pub fn assert_same_tree(original: &Path, restored: &Path, dir_mtimes: bool) {
    let a = manifest(original);
    let b = manifest(restored);
    let mut problems = Vec::new();
    for (path, ea) in &a {
        match b.get(path) {
            None => problems.push(format!("missing in restore: {path:?}")),
            Some(eb) => {
                let same = if ea.kind == 'd' && !dir_mtimes {
                    Entry {
                        mtime: 0,
                        ..clone_entry(ea)
                    } == Entry {
                        mtime: 0,
                        ..clone_entry(eb)
                    }
                } else {
                    ea == eb
                };
                if !same {
                    problems.push(format!(
                        "differs: {path:?}: original {} restored {}",
                        describe(ea),
                        describe(eb)
                    ));
                }
            }
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            problems.push(format!("extra in restore: {path:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        original.display(),
        restored.display(),
        problems.join("\n  ")
    );
}

fn clone_entry(e: &Entry) -> Entry {
    Entry {
        kind: e.kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        mtime: e.mtime,
        link: e.link.clone(),
        content: e.content.clone(),
    }
}

fn describe(e: &Entry) -> String {
    format!(
        "{} mode {:o} uid {} gid {} size {} mtime {} link {:?} content {}",
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.size,
        e.mtime,
        e.link,
        e.content.as_ref().map_or(0, Vec::len)
    )
}

// ---------------------------------------------------------------------------------------
// Machine-wide Amanda files

/// Makes sure /etc/amandahosts (the Amanda user's .amandahosts on Debian) has `line`.
pub fn ensure_amandahosts_line(line: &str) {
    let path = Path::new("/etc/amandahosts");
    let text = fs::read_to_string(path).unwrap_or_default();
    if !text.lines().any(|l| l.trim() == line) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open /etc/amandahosts");
        writeln!(f, "{line}").expect("append /etc/amandahosts");
    }
    run_ok(
        Command::new("chown").args([&format!("{AMANDA_USER}:{AMANDA_USER}"), "/etc/amandahosts"]),
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod amandahosts");
    let home = Path::new("/var/backups/.amandahosts");
    if fs::symlink_metadata(home).is_err() {
        symlink(path, home).expect("link ~backup/.amandahosts");
    }
}

// ---------------------------------------------------------------------------------------
// A private openbsd-inetd

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
        let dir = Scratch::new("inetd");
        let conf = dir.join("inetd.conf");
        fs::write(&conf, format!("{line}\n")).expect("write inetd.conf");
        let log = fs::File::create(dir.join("inetd.log")).expect("inetd.log");
        let child = Command::new(INETD)
            .arg("-i")
            .args(["-R", "100000"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start inetd");
        let inetd = Inetd { child, dir };
        if line.split_whitespace().nth(1) == Some("dgram") {
            wait_bound_udp(port, Duration::from_secs(10));
        } else {
            wait_listening_tcp(
                SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(10),
            );
        }
        inetd
    }
}

use std::os::unix::process::CommandExt;

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

// ---------------------------------------------------------------------------------------
// The real Amanda server tools

/// What a real-Amanda server run backs up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `program "GNUTAR"` (the legacy sendbackup path).
    Gnutar,
    /// `program "APPLICATION"` with the `amgtar` application.
    Amgtar,
}

/// A real Amanda 3.5.1 server configuration in a scratch directory, linked as
/// /etc/amanda/<name>; removed on drop.
pub struct RealServer {
    pub name: String,
    pub work: Scratch,
    pub client_host: String,
    pub dles: Vec<PathBuf>,
    /// Run the tools that talk to the client inside this network namespace.
    pub netns: Option<String>,
}

/// Settings of a [`RealServer`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub auth: String,
    pub client_port: u16,
    pub program: Program,
    pub inparallel: u32,
    pub maxdumps: u32,
    pub extra_conf: String,
    pub extra_dumptype: String,
}

impl ServerOptions {
    /// Defaults for `auth` and `client_port`: amgtar, inparallel 4, maxdumps 1.
    pub fn new(auth: &str, client_port: u16) -> ServerOptions {
        ServerOptions {
            auth: auth.to_string(),
            client_port,
            program: Program::Amgtar,
            inparallel: 4,
            maxdumps: 1,
            extra_conf: String::new(),
            extra_dumptype: String::new(),
        }
    }
}

/// Splits a log line into words, unquoting `"..."` words (backslash escapes a character).
pub fn split_quoted(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

/// Quotes a string for amanda.conf and disklist.
pub fn amquote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

static CONFIG_SEQ: AtomicU32 = AtomicU32::new(0);

impl RealServer {
    /// Writes a fresh configuration backing up `dles` on `client_host`.
    pub fn new(client_host: &str, dles: &[PathBuf], opts: &ServerOptions) -> RealServer {
        let n = CONFIG_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("rs-{}-{}-{n}", opts.auth, std::process::id());
        let work = Scratch::new(&name);
        for d in [
            "config",
            "vtapes",
            "holding",
            "state/curinfo",
            "state/index",
            "state/log",
        ] {
            fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        let w = work.path().display().to_string();
        let program = match opts.program {
            Program::Gnutar => "    program \"GNUTAR\"\n".to_string(),
            Program::Amgtar => {
                "    program \"APPLICATION\"\n    application \"app_amgtar\"\n".to_string()
            }
        };
        let conf = format!(
            r#"org "{name}"
mailto ""
dumpuser "{AMANDA_USER}"
inparallel {inparallel}
dumporder "sssssssssss"
netusage 1000000 Kbps
dumpcycle 1 week
runspercycle 7
tapecycle 20 tapes
bumpsize 20 Mb
bumpdays 1
bumpmult 4
etimeout 120
dtimeout 600
ctimeout 30
runtapes 1
autoflush no
flush-threshold-dumped 0
flush-threshold-scheduled 0
taperflush 0
define changer vtl {{
    tpchanger "chg-disk:{w}/vtapes"
    property "num-slot" "20"
    property "auto-create-slot" "yes"
}}
tpchanger "vtl"
tapetype "HARDDISK"
labelstr "^{name}-[0-9][0-9]*$"
autolabel "{name}-%%" empty volume_error
tapelist "{w}/state/tapelist"
infofile "{w}/state/curinfo"
logdir "{w}/state/log"
indexdir "{w}/state/index"
define tapetype HARDDISK {{
    length 2048 mbytes
}}
define holdingdisk hd1 {{
    directory "{w}/holding"
    use 500 mbytes
    chunksize 1 mbyte
}}
holdingdisk "hd1"
define application-tool app_amgtar {{
    plugin "amgtar"
    property "ATIME-PRESERVE" "no"
}}
define dumptype rs {{
    auth "{auth}"
    client_port "{port}"
{program}    compress none
    estimate client
    index yes
    record yes
    priority high
    maxdumps {maxdumps}
{extra_dumptype}
}}
{extra_conf}
"#,
            inparallel = opts.inparallel,
            auth = opts.auth,
            port = opts.client_port,
            maxdumps = opts.maxdumps,
            extra_dumptype = opts.extra_dumptype,
            extra_conf = opts.extra_conf,
        );
        fs::write(work.join("config/amanda.conf"), conf).expect("amanda.conf");
        let disklist: String = dles
            .iter()
            .map(|d| format!("{client_host} {} rs\n", amquote(&d.display().to_string())))
            .collect();
        fs::write(work.join("config/disklist"), disklist).expect("disklist");
        chown_amanda(work.path());
        let link = Path::new("/etc/amanda").join(&name);
        let _ = fs::remove_file(&link);
        symlink(work.join("config"), &link).expect("link /etc/amanda/<cfg>");
        RealServer {
            name,
            work,
            client_host: client_host.to_string(),
            dles: dles.to_vec(),
            netns: None,
        }
    }

    fn as_amanda(&self, tool: &str, args: &[&str], limit: Duration) -> (ExitStatus, String) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "runuser"]);
                c
            }
            None => Command::new("runuser"),
        };
        cmd.args(["-u", AMANDA_USER, "--", tool])
            .args(args)
            .current_dir("/tmp");
        run_with_timeout(&mut cmd, limit)
    }

    /// Runs amcheck (server and client checks). Returns (success, output).
    pub fn amcheck(&self) -> (bool, String) {
        let (status, out) = self.as_amanda("amcheck", &[&self.name], Duration::from_secs(180));
        (status.success(), out)
    }

    /// Runs amdump. Returns (exit status, output, the run's log file text).
    pub fn amdump(&self) -> (ExitStatus, String, String) {
        let (status, out) = self.as_amanda("amdump", &[&self.name], Duration::from_secs(900));
        (status, out, self.latest_log())
    }

    /// Makes the next amdump take a level 1 of `disk`.
    pub fn force_level_1(&self, disk: &Path) {
        let disk = disk.display().to_string();
        let (status, out) = self.as_amanda(
            "amadmin",
            &[&self.name, "force-level-1", &self.client_host, &disk],
            Duration::from_secs(60),
        );
        assert!(status.success(), "amadmin force-level-1 failed: {out}");
    }

    /// The levels amdump dumped per disk in its last run (from the log's `SUCCESS dumper`
    /// lines; disk names with spaces are quoted there).
    pub fn dumped_levels(log: &str) -> Vec<(String, u32)> {
        log.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("SUCCESS dumper ")?;
                let words = split_quoted(rest);
                let disk = words.get(1)?.clone();
                let level = words.get(3)?.parse().ok()?;
                Some((disk, level))
            })
            .collect()
    }

    /// The newest log.* file of the configuration.
    pub fn latest_log(&self) -> String {
        let mut logs: Vec<_> = fs::read_dir(self.work.join("state/log"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("log.") && !n.ends_with(".attempt"))
        });
        logs.sort();
        logs.last()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Fetches every dump of `disk` (all levels, oldest first) as tar streams.
    pub fn fetch_all_levels(&self, disk: &Path) -> Vec<Vec<u8>> {
        let disk = format!("={}", disk.display());
        let host = format!("={}", self.client_host);
        let mut tars = Vec::new();
        for level in 0..10 {
            let lvl = level.to_string();
            // amfetchdump -p pipes exactly one dump: select it by host, disk, any date, level.
            let mut cmd = Command::new("runuser");
            cmd.args([
                "-u",
                AMANDA_USER,
                "--",
                "amfetchdump",
                "-a",
                "-p",
                &self.name,
                &host,
                &disk,
            ])
            .args(["19700101-29991231", &lvl])
            .current_dir("/tmp");
            // Level 0 must be there; a refusal of it is retried (amdump's last helpers may
            // still hold the changer for a moment). A missing higher level ends the chain.
            let tries = if level == 0 { 5 } else { 1 };
            let mut got = None;
            for attempt in 1..=tries {
                let out = cmd.output().expect("amfetchdump");
                if out.status.success() && !out.stdout.is_empty() {
                    got = Some(out.stdout);
                    break;
                }
                if level == 0 {
                    eprintln!(
                        "amfetchdump {disk} level 0, attempt {attempt}: {}\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
            match got {
                Some(tar) => tars.push(tar),
                None => break,
            }
        }
        tars
    }

    /// Restores `disk` into `into`: the level 0 dump, then each incremental on top with
    /// GNU tar's incremental extraction (which also deletes what was deleted).
    pub fn restore(&self, disk: &Path, into: &Path) {
        let tars = self.fetch_all_levels(disk);
        assert!(
            !tars.is_empty(),
            "amfetchdump found no dump of {}",
            disk.display()
        );
        fs::create_dir_all(into).expect("mkdir restore");
        for tar in tars {
            extract_tar(&tar, into);
        }
    }
}

/// Extracts a GNU tar stream into `into` as root, keeping permissions, owners and
/// incremental deletions.
pub fn extract_tar(tar: &[u8], into: &Path) {
    let mut child = Command::new("tar")
        .args([
            "--extract",
            "--preserve-permissions",
            "--same-owner",
            "--listed-incremental=/dev/null",
            "--file",
            "-",
            "-C",
        ])
        .arg(into)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tar");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = tar.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("tar wait");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "tar -x into {} failed: {}",
        into.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(Path::new("/etc/amanda").join(&self.name));
        for d in ["server", "client"] {
            let _ = fs::remove_dir_all(Path::new("/var/log/amanda").join(d).join(&self.name));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Our amandad

/// How our amandad is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    Inetd,
    Standalone,
}

/// Our amandad, running until dropped.
pub struct OurAmandad {
    _inetd: Option<Inetd>,
    child: Option<Child>,
    pub dir: Scratch,
    pub port: u16,
    /// The helper copy it uses (removed after amandad is stopped).
    pub runtar: RuntarInstall,
}

impl OurAmandad {
    /// Our amandad's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("amandad.log")).unwrap_or_default()
    }
}

impl Drop for OurAmandad {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- our amandad's log (port {}) ---\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// A copy of the privileged tar helper installed the way a package would (root:backup 4750)
/// in a scratch directory of its own; removed on drop (also with `AMANDA_RS_KEEP`: a setuid
/// root file must not outlive its test). The built `target/*/amandad-runtar` is never made
/// setuid (issue 10).
#[must_use = "the helper is removed when this is dropped"]
pub struct RuntarInstall {
    path: PathBuf,
    settings: PathBuf,
    _dir: Scratch,
}

impl RuntarInstall {
    /// The installed helper.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An amanda-rs settings file (for amandad's `--settings`) that points `runtar_path` at
    /// this copy.
    pub fn settings(&self) -> &Path {
        &self.settings
    }
}

impl Drop for RuntarInstall {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Installs a copy of the helper; see [`RuntarInstall`]. The scratch directory (and every
/// directory above it) is traversable by the Amanda user, and its file system must honour
/// setuid bits.
pub fn install_runtar() -> RuntarInstall {
    let built = workspace_bin("amandad-runtar");
    // Earlier versions of this function made the build output itself setuid root.
    if fs::metadata(&built).is_ok_and(|m| m.mode() & 0o6000 != 0) {
        fs::set_permissions(&built, fs::Permissions::from_mode(0o755)).expect("chmod built helper");
    }
    let dir = Scratch::new("runtar");
    let st = mount_flags(dir.path());
    assert!(
        st & libc::ST_NOSUID == 0,
        "{} is on a nosuid file system: the helper copy would not be setuid",
        dir.path().display()
    );
    let path = dir.join("amandad-runtar");
    fs::copy(&built, &path).expect("copy amandad-runtar");
    run_ok(
        Command::new("chown")
            .arg(format!("root:{AMANDA_USER}"))
            .arg(&path),
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4750)).expect("chmod runtar");
    let settings = dir.join("amanda-rs.toml");
    fs::write(
        &settings,
        format!("[amandad]\nruntar_path = \"{}\"\n", path.display()),
    )
    .expect("write settings");
    fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).expect("chmod settings");
    RuntarInstall {
        path,
        settings,
        _dir: dir,
    }
}

/// `statvfs(2)`'s mount flags of the file system holding `path`.
fn mount_flags(path: &Path) -> libc::c_ulong {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid C string and `st` is plain data statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    st.f_flag
}

/// Starts our amandad for `auth` on a free 127.0.0.1 port, under inetd or standalone.
pub fn start_ours(auth: &str, launch: Launch) -> OurAmandad {
    let runtar = install_runtar();
    let dir = Scratch::new("ours");
    chown_amanda(dir.path());
    let port = free_port();
    let bin = workspace_bin("amandad");
    let log = dir.join("amandad.log");
    let common = format!(
        "-auth={auth} amdump --log {} --settings {}",
        log.display(),
        runtar.settings().display()
    );
    match launch {
        Launch::Inetd => {
            let line = if auth == "bsdtcp" {
                format!(
                    "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{AMANDA_USER}.{AMANDA_USER}\t{}\tamandad {common}",
                    bin.display()
                )
            } else {
                format!(
                    "127.0.0.1:{port}\tdgram\tudp\twait\t{AMANDA_USER}.{AMANDA_USER}\t{}\tamandad {common}",
                    bin.display()
                )
            };
            OurAmandad {
                _inetd: Some(Inetd::start(&line, port)),
                child: None,
                dir,
                port,
                runtar,
            }
        }
        Launch::Standalone => {
            let proto = if auth == "bsdtcp" { "tcp" } else { "udp" };
            // Started as root, as a service manager would; it drops to the Amanda user.
            let child = Command::new(&bin)
                .args(common.split(' '))
                .arg("--listen")
                .arg(format!("{proto}:127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start amandad");
            if proto == "tcp" {
                wait_listening_tcp(
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                );
            } else {
                wait_bound_udp(port, Duration::from_secs(10));
            }
            OurAmandad {
                _inetd: None,
                child: Some(child),
                dir,
                port,
                runtar,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Our dumper

/// A dumper configuration in a scratch directory (owned by the Amanda user, because the
/// dumper switches to it).
pub struct DumperConf {
    pub work: Scratch,
    pub conf: PathBuf,
    /// Run `dumper run`/`check` inside this network namespace.
    pub netns: Option<String>,
    /// Extra environment for the dumper (amanda-rs settings such as `AMANDA_RS_HEARTBEAT__ENABLED`).
    pub env: Vec<(String, String)>,
}

/// One dumptype: (name, auth, client port, program, extra lines).
pub struct Dt<'a> {
    pub name: &'a str,
    pub auth: &'a str,
    pub port: u16,
    pub program: Program,
    pub extra: &'a str,
}

impl DumperConf {
    pub fn new(
        tag: &str,
        globals: &str,
        dumptypes: &[Dt<'_>],
        disklist: &[(&str, &Path, &str)],
    ) -> Self {
        let work = Scratch::new(tag);
        for d in ["config", "holding", "state"] {
            fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        let w = work.path().display().to_string();
        let mut conf = format!(
            r#"org "{tag}"
dumpuser "{user}"
{inparallel}
netusage 10000000 Kbps
dumpcycle 7 days
etimeout 300
dtimeout 300
ctimeout 30
infofile "{w}/state/curinfo"
logdir "{w}/state/log"
indexdir "{w}/state/index"
define holdingdisk hd1 {{
    directory "{w}/holding"
    use 4096 mbytes
}}
holdingdisk "hd1"
define application-tool app_amgtar {{
    plugin "amgtar"
    property "ATIME-PRESERVE" "no"
}}
{globals}
"#,
            user = AMANDA_USER,
            inparallel = if globals.contains("inparallel") {
                ""
            } else {
                "inparallel 4"
            },
        );
        for dt in dumptypes {
            let program = match dt.program {
                Program::Gnutar => "    program \"GNUTAR\"\n".to_owned(),
                Program::Amgtar => {
                    "    program \"APPLICATION\"\n    application \"app_amgtar\"\n".to_owned()
                }
            };
            conf.push_str(&format!(
                "define dumptype {} {{\n    auth \"{}\"\n    client_port \"{}\"\n{program}    compress none\n    estimate client\n    index yes\n    record yes\n{}\n}}\n",
                dt.name, dt.auth, dt.port, dt.extra
            ));
        }
        fs::write(work.join("config/amanda.conf"), conf).expect("amanda.conf");
        let list: String = disklist
            .iter()
            .map(|(host, path, dt)| {
                format!("{host} {} {dt}\n", amquote(&path.display().to_string()))
            })
            .collect();
        fs::write(work.join("config/disklist"), list).expect("disklist");
        chown_amanda(work.path());
        let conf = work.join("config/amanda.conf");
        DumperConf {
            work,
            conf,
            netns: None,
            env: Vec::new(),
        }
    }

    /// The dumper, inside the namespace if one is set.
    fn dumper(&self) -> Command {
        let bin = workspace_bin("dumper");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `dumper run`: (exit status, report and progress text).
    pub fn run(&self) -> (ExitStatus, String) {
        let mut cmd = self.dumper();
        cmd.arg("run")
            .arg(&self.conf)
            .args(["--progress", "plain", "--retry-delay", "1"]);
        run_with_timeout(&mut cmd, Duration::from_secs(900))
    }

    /// `dumper run` started in the background, its output piped.
    pub fn spawn_run(&self) -> std::process::Child {
        let mut cmd = self.dumper();
        cmd.arg("run")
            .arg(&self.conf)
            .args(["--progress", "plain"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }

    /// `dumper check CONFIG ARGS...`: (exit status, output).
    pub fn check(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut cmd = self.dumper();
        cmd.arg("check").arg(&self.conf).args(args);
        run_with_timeout(&mut cmd, Duration::from_secs(300))
    }

    /// `dumper restore` of the latest chain of `disk` into `into`.
    pub fn restore(&self, host: &str, disk: &Path, into: &Path) -> String {
        let mut cmd = Command::new(workspace_bin("dumper"));
        cmd.arg("restore")
            .arg(&self.conf)
            .args(["--host", host, "--disk"])
            .arg(disk)
            .arg("--into")
            .arg(into);
        let (status, out) = run_with_timeout(&mut cmd, Duration::from_secs(300));
        assert!(
            status.success(),
            "dumper restore of {} failed:\n{out}",
            disk.display()
        );
        out
    }

    /// Every finished holding file (no `.tmp`), and every `.tmp` left.
    pub fn holding_files(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut done = Vec::new();
        let mut tmp = Vec::new();
        let Ok(runs) = fs::read_dir(self.work.join("holding")) else {
            return (done, tmp);
        };
        for run in runs.flatten() {
            for f in fs::read_dir(run.path()).into_iter().flatten().flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "tmp") {
                    tmp.push(p);
                } else {
                    done.push(p);
                }
            }
        }
        done.sort();
        (done, tmp)
    }
}
