//! Helpers of the taper tests (issue 15): a configuration with chg-disk vtapes that our
//! dumper and the real Amanda 3.5.1 tools both read, run as the Amanda user, and what the
//! tools say about it.

#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::util::{self, AMANDA_USER, Noise, Scratch, amquote, run_with_timeout, workspace_bin};

/// The settings of a vtape configuration.
#[derive(Clone, Debug)]
pub struct VtOpts {
    pub tapecycle: u32,
    pub runtapes: u32,
    /// chg-disk `num-slot` (created with auto-create-slot).
    pub slots: u32,
    /// tapetype `length` in KiB.
    pub length_kb: u64,
    /// tapetype `part_size` in KiB (0: none).
    pub part_size_kb: u64,
    /// holding disk `use` in KiB.
    pub holding_use_kb: u64,
    /// One dumptype `vt` with this auth and client port.
    pub auth: String,
    pub port: u16,
    /// Extra dumptypes (`define dumptype ... { vt ... }`).
    pub dumptypes: String,
    /// Extra global lines.
    pub extra: String,
    /// (host, disk, dumptype).
    pub dles: Vec<(String, PathBuf, String)>,
    /// One `tapedev "file:<work>/vtapes/single"` instead of the chg-disk changer.
    pub single: bool,
}

impl VtOpts {
    pub fn new(auth: &str, port: u16, dles: &[&Path]) -> VtOpts {
        VtOpts {
            tapecycle: 3,
            runtapes: 1,
            slots: 3,
            length_kb: 100 * 1024,
            part_size_kb: 0,
            holding_use_kb: 500 * 1024,
            auth: auth.into(),
            port,
            dumptypes: String::new(),
            extra: String::new(),
            dles: dles
                .iter()
                .map(|d| ("localhost".to_owned(), d.to_path_buf(), "vt".to_owned()))
                .collect(),
            single: false,
        }
    }
}

/// A configuration `<name>` in a scratch directory whose config directory is named after
/// it (so that `dumper run <path>` and the real tools agree on the name), linked as
/// /etc/amanda/<name> when asked; the link is removed on drop.
pub struct VtapeConf {
    pub work: Scratch,
    pub name: String,
    pub dir: PathBuf,
    pub conf: PathBuf,
    linked: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl VtapeConf {
    pub fn new(tag: &str, o: &VtOpts, link: bool) -> VtapeConf {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{tag}-{}-{n}", std::process::id());
        let work = Scratch::new(&name);
        let dir = work.join(&name);
        for d in [
            "holding",
            "vtapes",
            "state/log",
            "state/index",
            "state/curinfo",
        ] {
            fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        fs::create_dir_all(&dir).expect("mkdir");
        let c = VtapeConf {
            conf: dir.join("amanda.conf"),
            dir,
            name,
            work,
            linked: link,
        };
        c.write(o);
        if link {
            let l = Path::new("/etc/amanda").join(&c.name);
            let _ = fs::remove_file(&l);
            symlink(&c.dir, &l).expect("link /etc/amanda/<cfg>");
        }
        c
    }

    /// (Re)writes amanda.conf and the disklist.
    pub fn write(&self, o: &VtOpts) {
        let w = self.work.path().display().to_string();
        let name = &self.name;
        let part = if o.part_size_kb > 0 {
            format!("    part_size {} kbytes\n", o.part_size_kb)
        } else {
            String::new()
        };
        let changer = if o.single {
            format!("tapedev \"file:{w}/vtapes/single\"\n")
        } else {
            format!(
                "define changer vtl {{\n    tpchanger \"chg-disk:{w}/vtapes\"\n    property \"num-slot\" \"{}\"\n    property \"auto-create-slot\" \"yes\"\n}}\ntpchanger \"vtl\"\n",
                o.slots
            )
        };
        let conf = format!(
            r#"org "{name}"
mailto ""
dumpuser "{AMANDA_USER}"
inparallel 4
dumporder "sssssssssss"
netusage 1000000 Kbps
dumpcycle 7 days
runspercycle 7
tapecycle {tapecycle} tapes
etimeout 120
dtimeout 600
ctimeout 30
runtapes {runtapes}
autoflush no
flush-threshold-dumped 0
flush-threshold-scheduled 0
taperflush 0
{changer}tapetype "VT"
labelstr "^{name}-[0-9][0-9]*$"
autolabel "{name}-%%" empty
tapelist "{w}/state/tapelist"
infofile "{w}/state/curinfo"
logdir "{w}/state/log"
indexdir "{w}/state/index"
define tapetype VT {{
    length {length} kbytes
{part}}}
{holding_and_amgtar}define dumptype vt {{
    auth "{auth}"
    client_port "{port}"
    program "APPLICATION"
    application "app_amgtar"
    compress none
    estimate client
    index yes
    record yes
    priority high
    maxdumps 4
}}
{dumptypes}
{extra}
"#,
            tapecycle = o.tapecycle,
            runtapes = o.runtapes,
            length = o.length_kb,
            holding_and_amgtar =
                super::holding_and_amgtar(&w, &format!("{} kbytes", o.holding_use_kb)),
            auth = o.auth,
            port = o.port,
            dumptypes = o.dumptypes,
            extra = o.extra,
        );
        fs::write(&self.conf, conf).expect("amanda.conf");
        let list: String = o
            .dles
            .iter()
            .map(|(h, d, dt)| format!("{h} {} {dt}\n", amquote(&d.display().to_string())))
            .collect();
        fs::write(self.dir.join("disklist"), list).expect("disklist");
        util::chown_amanda(self.work.path());
    }

    /// `dumper SUB <amanda.conf> ARGS...` with `env`: (exit status, output).
    pub fn dumper(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
        let mut cmd = Command::new(workspace_bin("dumper"));
        cmd.arg(sub).arg(&self.conf).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, Duration::from_secs(600))
    }

    /// `dumper run`: (exit code, output).
    pub fn run(&self, env: &[(&str, &str)]) -> (i32, String) {
        let (s, out) = self.dumper("run", &["--progress", "plain", "--retry-delay", "1"], env);
        (s.code().unwrap_or(-1), out)
    }

    /// A real Amanda tool as the Amanda user, in /tmp.
    pub fn amanda(&self, tool: &str, args: &[&str]) -> (ExitStatus, String) {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", AMANDA_USER, "--", tool])
            .args(args)
            .current_dir("/tmp");
        run_with_timeout(&mut cmd, Duration::from_secs(300))
    }

    /// `amfetchdump -a -p` of one level of `disk` (any date): the dump's bytes.
    pub fn fetch(&self, disk: &Path, level: u32) -> Vec<u8> {
        let out = util::real_amanda::amfetchdump(&self.name, "localhost", disk, Some(level))
            .stdin(Stdio::null())
            .output()
            .expect("amfetchdump");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "amfetchdump level {level} of {}: {}\n{}",
            disk.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Slot number -> label of every labelled vtape.
    pub fn volumes(&self) -> BTreeMap<u32, String> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(self.work.join("vtapes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("slot").and_then(|n| n.parse().ok()) else {
                continue;
            };
            for f in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let f = f.file_name().to_string_lossy().into_owned();
                if let Some(l) = f.strip_prefix("00000.") {
                    out.insert(n, l.to_owned());
                }
            }
        }
        out
    }

    /// The complete holding files (no `.tmp`).
    pub fn holding_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for run in fs::read_dir(self.work.join("holding"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in fs::read_dir(run.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_none_or(|e| e != "tmp") {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    /// `dumper restore` of the chain of `disk` into `into`: its output.
    pub fn restore(&self, disk: &Path, into: &Path) -> String {
        let (s, out) = self.dumper(
            "restore",
            &[
                "--host",
                "localhost",
                "--disk",
                &disk.display().to_string(),
                "--into",
                &into.display().to_string(),
            ],
            &[],
        );
        assert!(s.success(), "dumper restore of {}: {out}", disk.display());
        out
    }
}

impl Drop for VtapeConf {
    fn drop(&mut self) {
        if self.linked {
            let _ = fs::remove_file(Path::new("/etc/amanda").join(&self.name));
        }
        for d in ["server", "client"] {
            let _ = fs::remove_dir_all(Path::new("/var/log/amanda").join(d).join(&self.name));
        }
    }
}

/// A tree of `n` files of `size` pseudo-random (incompressible) bytes.
pub fn random_tree(root: &Path, n: usize, size: usize, seed: u64) {
    fs::create_dir_all(root).expect("mkdir");
    let mut noise = Noise::new(
        seed.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1,
    );
    for i in 0..n {
        let mut data = vec![0u8; size];
        noise.fill(&mut data);
        fs::write(root.join(format!("f{i}.bin")), data).expect("write");
    }
}
