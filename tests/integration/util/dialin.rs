//! A dial-in lab on a [`Topology`] (issue 14): `dumper listen` in the server namespace on
//! 198.18.0.1:10080, our `amandad --dial-out` in the client namespace holding a connection
//! to it, and a configuration whose DLEs (`dialin yes`, bsdtcp) belong to one host. The
//! caller builds the network between them (a NAT, a proxy) and says, through
//! [`DialinOptions`], which address the listener sees and what extra settings each end
//! gets, and through [`DialinSsl`] whether the lab runs over auth ssl. Everything is torn down with the topology. outbound_nat and outbound_proxy build
//! their labs with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Dt, DumperConf, Program, RuntarInstall, Scratch, chown_amanda};
use crate::netns::{SERVER_IP, Topology};

/// The client's name in the disklist when [`DialinOptions::host`] is left to it: nothing
/// resolves it, nothing needs to.
pub const HOST: &str = "dialclient";

/// What differs between dial-in labs.
pub struct DialinOptions<'a> {
    /// The scratch directories' tag.
    pub tag: &'a str,
    /// The client's name in the disklist (and `amandad.dial_out.hostname`).
    pub host: &'a str,
    /// How many small DLEs.
    pub dles: usize,
    /// The address the listener sees the client's connections come from (its
    /// `.amandahosts` line for `amdialin`).
    pub seen_from: &'a str,
    /// `KEY=VALUE` settings for the listener (`AMANDA_RS_...`).
    pub listener_env: Vec<String>,
    /// `KEY=VALUE` settings for `amandad --dial-out`.
    pub amandad_env: Vec<String>,
    /// More dumptype lines (after `dialin yes`).
    pub dumptype_extra: &'a str,
    /// More amanda.conf lines.
    pub conf_extra: &'a str,
}

/// auth ssl for a lab (issue 14): amssl's trees of the two ends.
#[derive(Clone, Copy)]
pub struct DialinSsl<'a> {
    /// The server's tree (the listener's `--ssl-dir`, amanda.conf's `ssl-dir`).
    pub server: &'a Path,
    /// The client's tree (amanda-client.conf's `ssl-dir` of `amandad --dial-out`).
    pub client: &'a Path,
    /// The CN of the client's certificate: its name to the listener's `.amandahosts`.
    pub cn: &'a str,
}

impl<'a> DialinSsl<'a> {
    /// amssl's `trees`, whose client certificate's CN is `cn`.
    pub fn of(trees: &'a crate::ssl_util::Trees, cn: &'a str) -> DialinSsl<'a> {
        DialinSsl {
            server: &trees.server,
            client: &trees.client,
            cn,
        }
    }
}

/// The running lab.
pub struct DialinLab {
    pub t: Topology,
    /// The client's name in the disklist.
    pub host: String,
    pub conf: DumperConf,
    pub data: Scratch,
    pub dles: Vec<PathBuf>,
    _runtar: RuntarInstall,
    _machine: std::sync::MutexGuard<'static, ()>,
}

impl DialinLab {
    /// Starts the listener and the dialing client on `t` (auth bsdtcp).
    pub fn start(t: Topology, o: DialinOptions<'_>) -> DialinLab {
        DialinLab::start_with(t, o, None)
    }

    /// [`DialinLab::start`], over auth ssl when `ssl` is given.
    pub fn start_with(
        t: Topology,
        mut o: DialinOptions<'_>,
        ssl: Option<DialinSsl<'_>>,
    ) -> DialinLab {
        let machine = super::MACHINE_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // amandad checks the server by the name it dialed; the listener sees `seen_from`.
        super::ensure_amandahosts_line(&format!("{SERVER_IP} backup amdump"));
        super::ensure_amandahosts_line(&format!("{} backup amdialin", o.seen_from));
        let data = Scratch::new(o.tag);
        let mut auth = "bsdtcp";
        let mut conf_extra = o.conf_extra.to_string();
        // Arguments after each program's own (the env lists go before them).
        let (mut listen_args, mut amandad_args) = (Vec::<String>::new(), Vec::<String>::new());
        if let Some(ssl) = ssl {
            auth = "ssl";
            // The listener knows an ssl client by its certificate's CN.
            super::ensure_amandahosts_line(&format!("{} backup amdialin", ssl.cn));
            conf_extra.push_str(&format!("ssl-dir \"{}\"\n", ssl.server.display()));
            listen_args.extend([
                "--auth".into(),
                "ssl".into(),
                "--ssl-dir".into(),
                ssl.server.display().to_string(),
            ]);
            let client_conf = data.join("amanda-client.conf");
            std::fs::write(
                &client_conf,
                format!("ssl-dir \"{}\"\n", ssl.client.display()),
            )
            .expect("amanda-client.conf");
            chown_amanda(&client_conf);
            o.amandad_env
                .push("AMANDA_RS_AMANDAD__DIAL_OUT__AUTH=ssl".into());
            amandad_args.extend(["--client-conf".into(), client_conf.display().to_string()]);
        }
        let dles = super::small_dles(&data, o.dles);
        let list: Vec<(&str, &Path, &str)> =
            dles.iter().map(|d| (o.host, d.as_path(), "dial")).collect();
        let extra = format!("    maxdumps 4\n    dialin yes\n{}", o.dumptype_extra);
        let mut conf = DumperConf::new(
            o.tag,
            &format!("inparallel 4\n{conf_extra}"),
            &[Dt {
                name: "dial",
                auth,
                port: 10080,
                program: Program::Gnutar,
                extra: &extra,
            }],
            &list,
        );
        let run_dir = conf.work.join("run");
        std::fs::create_dir_all(&run_dir).expect("mkdir run");
        chown_amanda(&run_dir);
        conf.netns = Some(t.server.clone());
        conf.env = vec![
            ("AMANDA_RS_RUN_DIR".into(), run_dir.display().to_string()),
            ("AMANDA_RS_DUMPER__DIALIN_WAIT_SECS".into(), "120".into()),
        ];
        let mut env = vec![
            format!("AMANDA_RS_RUN_DIR={}", run_dir.display()),
            "AMANDA_RS_DNS_CHECK=false".into(),
            "AMANDA_RS_DUMPER__DIALIN_HEARTBEAT_SECS=2".into(),
        ];
        env.extend(o.listener_env);
        let listen = format!("{SERVER_IP}:10080");
        let work = conf.work.path().display().to_string();
        let log = data.join("listen.log").display().to_string();
        let args = [
            "listen",
            "--listen",
            &listen,
            "--config-dir",
            &work,
            "--log",
            &log,
        ];
        spawn_debug(&t, &t.server, &env, "dumper", &args, &listen_args);
        let runtar = super::install_runtar();
        let mut env = vec![
            format!("AMANDA_RS_AMANDAD__DIAL_OUT__SERVER={SERVER_IP}:10080"),
            "AMANDA_RS_AMANDAD__DIAL_OUT__CONFIG=config".into(),
            format!("AMANDA_RS_AMANDAD__DIAL_OUT__HOSTNAME={}", o.host),
        ];
        env.extend(o.amandad_env);
        let log = data.join("amandad.log").display().to_string();
        let settings = runtar.settings().display().to_string();
        let args = [
            "--dial-out",
            "amdump",
            "--log",
            &log,
            "--settings",
            &settings,
        ];
        spawn_debug(&t, &t.client, &env, "amandad", &args, &amandad_args);
        DialinLab {
            t,
            host: o.host.to_string(),
            conf,
            data,
            dles,
            _runtar: runtar,
            _machine: machine,
        }
    }

    /// The client's log.
    pub fn amandad_log(&self) -> String {
        std::fs::read_to_string(self.data.join("amandad.log")).unwrap_or_default()
    }

    /// Both ends' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- listen.log ---\n{}\n--- amandad.log ---\n{}",
            std::fs::read_to_string(self.data.join("listen.log")).unwrap_or_default(),
            self.amandad_log()
        )
    }

    /// Waits until one of the logs contains `what`; false after `limit`.
    pub fn wait_log(&self, what: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.logs().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Waits until the listener holds the client's connection.
    pub fn wait_holding(&self, limit: Duration) {
        assert!(
            self.wait_log(
                &format!("holding the dial-in connection of {}", self.host),
                limit
            ),
            "no HOLD connection within {limit:?}:\n{}",
            self.logs()
        );
    }

    /// A night in which every DLE ends OK; its report.
    pub fn night(&self, what: &str) -> String {
        let (status, report) = self.conf.run();
        assert!(
            status.success(),
            "dumper run ({what}) failed ({status}):\n{report}\n{}",
            self.logs()
        );
        assert_eq!(
            report.matches("  OK").count(),
            self.dles.len(),
            "every DLE dumped ({what}):\n{report}\n{}",
            self.logs()
        );
        report
    }

    /// `dumper restore` of every DLE, each identical to its source.
    pub fn restore_all_identical(&self) {
        for d in &self.dles {
            let into = self.data.join(format!(
                "restored-{}",
                d.file_name().unwrap().to_string_lossy()
            ));
            self.conf.restore(&self.host, d, &into);
            super::assert_same_tree(d, &into, true);
        }
    }
}

/// Starts the workspace's `bin` with `args` and then `more` in the namespace `ns`, through
/// `env` with `AMANDA_RS_LOG=debug` and then `vars` (so that a lab's own settings may
/// override the level).
fn spawn_debug(t: &Topology, ns: &str, vars: &[String], bin: &str, args: &[&str], more: &[String]) {
    let bin = super::workspace_bin(bin).display().to_string();
    let mut argv = vec!["AMANDA_RS_LOG=debug"];
    argv.extend(vars.iter().map(String::as_str));
    argv.push(&bin);
    argv.extend(args);
    argv.extend(more.iter().map(String::as_str));
    t.spawn(ns, "env", &argv);
}
