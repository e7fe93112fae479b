//! Our dumper on a configuration in a scratch directory (owned by the Amanda user, because
//! the dumper switches to it): `dumper run`, `check`, `restore`, and what it left on the
//! holding disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{
    AMANDA_USER, Program, Scratch, amquote, chown_amanda, run_with_timeout, workspace_bin,
};

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

impl<'a> Dt<'a> {
    /// A dumptype with no extra lines.
    pub fn new(name: &'a str, auth: &'a str, port: u16, program: Program) -> Dt<'a> {
        Dt {
            name,
            auth,
            port,
            program,
            extra: "",
        }
    }
}

/// The disklist of [`DumperConf::new`] for `dles`, all on `host` with dumptype `dt`.
pub fn disklist<'a, P: AsRef<Path>>(
    host: &'a str,
    dles: &'a [P],
    dt: &'a str,
) -> Vec<(&'a str, &'a Path, &'a str)> {
    dles.iter().map(|d| (host, d.as_ref(), dt)).collect()
}

impl DumperConf {
    /// A configuration whose DLEs `disks` are all on the fake amandad listening at
    /// 127.0.0.1:`port` (dumptype `fake`: bsdtcp, GNUTAR, `maxdumps` at once).
    pub fn for_fake(tag: &str, globals: &str, port: u16, maxdumps: u32, disks: &[&str]) -> Self {
        let extra = format!("    maxdumps {maxdumps}");
        let fake = Dt {
            name: "fake",
            auth: "bsdtcp",
            port,
            program: Program::Gnutar,
            extra: &extra,
        };
        Self::new(tag, globals, &[fake], &disklist("127.0.0.1", disks, "fake"))
    }

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
{holding_and_amgtar}{globals}
"#,
            user = AMANDA_USER,
            holding_and_amgtar = super::holding_and_amgtar(&w, "4096 mbytes"),
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
