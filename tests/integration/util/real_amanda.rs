//! The real Amanda 3.5.1 server tools on a configuration in a scratch directory (linked as
//! /etc/amanda/<name>, removed on drop), run as the Amanda user: amcheck, amdump,
//! amfetchdump, and restores from what they fetch.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{AMANDA_USER, Scratch, chown_amanda, extract_tar, run_with_timeout};

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

/// `amfetchdump -a -p CONFIG =HOST =DISK` as the Amanda user in /tmp, with `19700101-29991231
/// LEVEL` (any date) when `level` is given: it pipes the one dump the selection names to
/// stdout. (`=`: the names are exact, not regular expressions.)
pub fn amfetchdump(config: &str, host: &str, disk: &Path, level: Option<u32>) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", AMANDA_USER, "--", "amfetchdump", "-a", "-p", config])
        .arg(format!("={host}"))
        .arg(format!("={}", disk.display()));
    if let Some(level) = level {
        cmd.args(["19700101-29991231", &level.to_string()]);
    }
    cmd.current_dir("/tmp");
    cmd
}

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

    /// [`amfetchdump`] of `disk` on this configuration's client.
    pub fn amfetchdump(&self, disk: &Path, level: Option<u32>) -> Command {
        amfetchdump(&self.name, &self.client_host, disk, level)
    }

    /// Fetches every dump of `disk` (all levels, oldest first) as tar streams.
    pub fn fetch_all_levels(&self, disk: &Path) -> Vec<Vec<u8>> {
        let mut tars = Vec::new();
        for level in 0..10 {
            let mut cmd = self.amfetchdump(disk, Some(level));
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
                        "amfetchdump {} level 0, attempt {attempt}: {}\n{}",
                        disk.display(),
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

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(Path::new("/etc/amanda").join(&self.name));
        for d in ["server", "client"] {
            let _ = fs::remove_dir_all(Path::new("/var/log/amanda").join(d).join(&self.name));
        }
    }
}
