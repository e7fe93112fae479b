//! Issue 14, bad input at the listener's door: a dial-in (`amandad --dial-out`, service
//! `amdialin`) that `.amandahosts` does not allow gets the real amandad's refusal text; one
//! from a host the disklist does not have gets ambackupd's `No host '<h>'`; one from a host
//! whose dumptype is not `dialin yes` is told so. Each refusal reaches the client's log, and
//! the client keeps trying with its backoff instead of spinning. On loopback, with the
//! listener's own `.amandahosts` (`amandahosts_path`), so the machine's file is not touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::require_root;
use crate::util::{self, Dt, DumperConf, Program, Scratch, chown_amanda};

/// A listener on loopback with the given `.amandahosts`, and the configuration `config`
/// with a `dialin yes` host `dialhost` and an ordinary host `plainhost`.
struct Door {
    conf: DumperConf,
    port: u16,
    listener: Child,
}

impl Door {
    fn new(tag: &str, amandahosts: &str) -> Door {
        let data = Scratch::new(&format!("{tag}-data"));
        let dle = data.join("d");
        fs::create_dir_all(&dle).expect("mkdir");
        let conf = DumperConf::new(
            tag,
            "inparallel 2\n",
            &[
                Dt {
                    extra: "    dialin yes\n",
                    ..Dt::new("dial", "bsdtcp", 10080, Program::Gnutar)
                },
                Dt::new("plain", "bsdtcp", 10080, Program::Gnutar),
            ],
            &[
                ("dialhost", dle.as_path(), "dial"),
                ("plainhost", dle.as_path(), "plain"),
            ],
        );
        let hosts = conf.work.join("amandahosts");
        fs::write(&hosts, amandahosts).expect("amandahosts");
        chown_amanda(&hosts);
        fs::set_permissions(&hosts, fs::Permissions::from_mode(0o600)).expect("chmod");
        let run_dir = conf.work.join("run");
        fs::create_dir_all(&run_dir).expect("mkdir run");
        chown_amanda(&run_dir);
        let port = util::free_port();
        let listener = util::spawn_logged(
            Command::new(util::workspace_bin("dumper"))
                .env("AMANDA_RS_RUN_DIR", &run_dir)
                .env("AMANDA_RS_AMANDAHOSTS_PATH", &hosts)
                .env("AMANDA_RS_LOG", "debug")
                .args(["listen", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--config-dir")
                .arg(conf.work.path())
                .arg("--log")
                .arg(conf.work.join("listen.log")),
            &conf.work.join("listen.out"),
        );
        util::wait_listening_tcp(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_secs(10),
        );
        Door {
            conf,
            port,
            listener,
        }
    }

    /// `amandad --dial-out` as `host` until its log has `want` (or `limit` passes), then
    /// `linger` more; returns its log.
    fn dial_until(&self, host: &str, want: &str, limit: Duration, linger: Duration) -> String {
        let log = self.conf.work.join(format!("amandad-{host}.log"));
        let mut child = util::spawn_logged(
            Command::new(util::workspace_bin("amandad"))
                .env(
                    "AMANDA_RS_AMANDAD__DIAL_OUT__SERVER",
                    format!("127.0.0.1:{}", self.port),
                )
                .env("AMANDA_RS_AMANDAD__DIAL_OUT__CONFIG", "config")
                .env("AMANDA_RS_AMANDAD__DIAL_OUT__HOSTNAME", host)
                .env("AMANDA_RS_LOG", "debug")
                .args(["--dial-out", "amdump", "--log"])
                .arg(&log),
            &self.conf.work.join(format!("amandad-{host}.out")),
        );
        let start = Instant::now();
        let seen = || fs::read_to_string(&log).unwrap_or_default().contains(want);
        while start.elapsed() < limit && !seen() {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(linger);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        let listen = fs::read_to_string(self.conf.work.join("listen.log")).unwrap_or_default();
        assert!(
            text.contains(want),
            "no {want:?} in amandad's log within {limit:?}:\n{text}\n--- listen.log ---\n{listen}"
        );
        text
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
    }
}

fn in_dir(p: &Path) -> String {
    p.display().to_string()
}

// issue 14: the real amandad's texts for a dial-in the listener must refuse.
#[test]
fn outbound_dialin_refusals_carry_the_real_texts_and_the_client_backs_off() {
    require_root!();
    let _machine = util::MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());

    // .amandahosts without amdialin: amandad's NAK, naming the file and the service.
    let door = Door::new("outbound-door-nak", "localhost backup noop\n");
    let hosts = in_dir(&door.conf.work.join("amandahosts"));
    let want = "is not allowed to execute the service amdialin";
    let (limit, now) = (Duration::from_secs(30), Duration::ZERO);
    let log = door.dial_until("dialhost", want, limit, now);
    assert!(
        log.contains("user backup from localhost") && log.contains(&hosts),
        "{log}"
    );
    drop(door);

    // Allowed, but the host is not in the disklist, or is not marked dial-in.
    let door = Door::new("outbound-door-host", "localhost backup noop amdialin\n");
    let log = door.dial_until("stranger", "No host 'stranger'", limit, now);
    assert!(!log.contains("holding"), "{log}");
    // Refused again after a backoff, not in a loop: a few tries in 8 s, not thousands
    // (1 s doubling: about 4).
    let want = "plainhost is not marked dial-in";
    let log = door.dial_until("plainhost", want, limit, Duration::from_secs(8));
    let tries = log.matches("plainhost is not marked dial-in").count();
    assert!(
        tries <= 6,
        "{tries} refusals logged: the client must back off\n{log}"
    );
}
