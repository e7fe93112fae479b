//! The dumper's acceptance: `dumper run` backs up the real Debian Amanda 3.5.1 client and
//! our amandad, for auth bsd, bsdudp and bsdtcp, with `program "GNUTAR"` and with
//! `program "APPLICATION"` + amgtar; every DLE is dumped, `dumper restore` gives back
//! identical trees, and a level 1 after changes restores correctly on top of level 0.
//! Debian's `amrestore` reads our holding files. Twenty DLEs share nine reserved UDP ports
//! and all succeed, with the waits in the report. A client that dies in the middle of a dump
//! fails only that dump, leaves no complete-looking file, and sets the exit status.
//! `dumper check` gives clear per-host results.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::amdump_machine;
use crate::util::fake_amandad::{FakeAmandad, Script};
use crate::util::ours::OurAmandad;
use crate::util::{
    self, Dt, DumperConf, Launch, Program, Scratch, disklist, start_ours, start_real_amandad,
};

/// Our amandad (bsdtcp, standalone), a scratch directory `<tag>-data` and the tricky tree at
/// `<tag>-data/<tree>`.
fn ours_and_tricky_tree(tag: &str, tree: &str) -> (OurAmandad, Scratch, PathBuf) {
    let ours = start_ours("bsdtcp", Launch::Standalone);
    let data = Scratch::new(&format!("{tag}-data"));
    let tree = data.join(tree);
    util::make_tricky_tree(&tree);
    (ours, data, tree)
}

/// An empty DLE `dir` under `data` and its client, a fake amandad on 127.0.0.1 that dies in
/// the middle of the dump (`hang`: first it goes quiet until dropped).
fn dying_client(data: &Scratch, dir: &str, hang: bool) -> (PathBuf, FakeAmandad) {
    let disk = data.join(dir);
    fs::create_dir_all(&disk).expect("mkdir");
    (
        disk,
        FakeAmandad::start(HashMap::new(), Script::Dies { hang }),
    )
}

/// The tricky tree (GNUTAR) and a DLE whose own name has a space and UTF-8 (amgtar).
fn make_dles(data: &Scratch) -> (PathBuf, PathBuf) {
    let a = data.join("plain");
    util::make_tricky_tree(&a);
    let b = data.join("dle with space é");
    fs::create_dir_all(b.join("sub")).expect("mkdir");
    for i in 1..=5 {
        fs::write(b.join(format!("f{i}.txt")), format!("dle2 file {i}\n")).expect("write");
    }
    fs::write(b.join("sub/x y ü.txt"), "x\n").expect("write");
    (a, b)
}

/// Changes for the level 1: one file deleted, one added, one rewritten, a directory added.
fn change(tree: &Path) {
    let victim = fs::read_dir(tree)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file() && !p.is_symlink())
        .expect("a file to delete");
    fs::remove_file(victim).expect("rm");
    fs::write(tree.join("new after full.txt"), b"level 1 only\n").expect("write");
    fs::create_dir_all(tree.join("new dir")).expect("mkdir");
    fs::write(tree.join("new dir/inside"), b"inside\n").expect("write");
    // Ensure the change is seen as newer than the full (1-second mtimes).
    std::thread::sleep(Duration::from_millis(1100));
}

/// Full, restore, change, level 1, restore on top: for one client and auth.
fn round_trip(auth: &str, port: u16, tag: &str, log: impl Fn() -> String) {
    let data = Scratch::new(&format!("{tag}-data"));
    let (gnutar, amgtar) = make_dles(&data);
    let conf = DumperConf::new(
        tag,
        "",
        &[
            Dt::new("gt", auth, port, Program::Gnutar),
            Dt::new("app", auth, port, Program::Amgtar),
        ],
        &[("localhost", &gnutar, "gt"), ("localhost", &amgtar, "app")],
    );
    // Each night must succeed; its report, and the client's log if it did not.
    let night = |which: &str| {
        let (status, out) = conf.run();
        assert!(
            status.success(),
            "{which} dumper run ({auth}, {tag}) failed ({status}):\n{out}\n{}",
            log()
        );
        out
    };
    // Where a DLE is restored after the night of `level`.
    let restored = |level: u32, dle: &Path| {
        let name = dle.file_name().unwrap().to_string_lossy();
        data.join(format!("restored-{level}-{name}"))
    };
    let out = night("first");
    let (files, tmp) = conf.holding_files();
    assert_eq!(
        files.len(),
        2,
        "two level-0 holding files: {files:?}\n{out}"
    );
    assert!(tmp.is_empty(), "no .tmp left: {tmp:?}");
    for dle in [&gnutar, &amgtar] {
        let into = restored(0, dle);
        conf.restore("localhost", dle, &into);
        util::assert_same_tree(dle, &into, true);
    }

    change(&gnutar);
    change(&amgtar);
    let out = night("second");
    let (files, _) = conf.holding_files();
    let level1: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".1"))
        .collect();
    assert_eq!(
        level1.len(),
        2,
        "two level-1 holding files: {files:?}\n{out}"
    );
    for dle in [&gnutar, &amgtar] {
        let into = restored(1, dle);
        let said = conf.restore("localhost", dle, &into);
        assert!(
            said.contains("level 1"),
            "the chain has the level 1: {said}"
        );
        util::assert_same_tree(dle, &into, false);
    }
}

fn real_client(auth: &str) {
    let _guard = amdump_machine!("/usr/lib/amanda/amandad", util::INETD);
    let port = util::free_port();
    let inetd = start_real_amandad(auth, port);
    let log_dir = inetd.dir.path().to_path_buf();
    round_trip(auth, port, &format!("dr-real-{auth}"), || {
        fs::read_to_string(log_dir.join("inetd.log")).unwrap_or_default()
    });
}

fn our_client(auth: &str) {
    let _guard = amdump_machine!();
    let ours = start_ours(auth, Launch::Standalone);
    round_trip(auth, ours.port, &format!("dr-ours-{auth}"), || ours.log());
}

#[test]
fn dumper_backs_up_the_real_client_over_bsdtcp_gnutar_and_amgtar() {
    real_client("bsdtcp");
}

#[test]
fn dumper_backs_up_the_real_client_over_bsd_gnutar_and_amgtar() {
    real_client("bsd");
}

#[test]
fn dumper_backs_up_the_real_client_over_bsdudp_gnutar_and_amgtar() {
    real_client("bsdudp");
}

#[test]
fn dumper_backs_up_our_amandad_over_bsdtcp_gnutar_and_amgtar() {
    our_client("bsdtcp");
}

#[test]
fn dumper_backs_up_our_amandad_over_bsd_gnutar_and_amgtar() {
    our_client("bsd");
}

#[test]
fn dumper_backs_up_our_amandad_over_bsdudp_gnutar_and_amgtar() {
    our_client("bsdudp");
}

#[test]
fn debian_amrestore_reads_our_holding_file_and_gives_our_tar_stream() {
    let _guard = amdump_machine!("/usr/sbin/amrestore");
    let (ours, _data, tree) = ours_and_tricky_tree("dr-amrestore", "tree");
    let conf = DumperConf::new(
        "dr-amrestore",
        "",
        &[Dt::new("gt", "bsdtcp", ours.port, Program::Gnutar)],
        &[("localhost", &tree, "gt")],
    );
    let (status, out) = conf.run();
    assert!(
        status.success(),
        "dumper run failed:\n{out}\n{}",
        ours.log()
    );
    let (files, _) = conf.holding_files();
    let file = files.first().expect("a holding file");
    let ours_bytes = fs::read(file).expect("read holding file");
    assert!(ours_bytes.starts_with(b"AMANDA: FILE "), "an Amanda header");
    let our_tar = &ours_bytes[32768..];
    let out = util::run_ok(
        Command::new("runuser")
            .args(["-u", util::AMANDA_USER, "--", "amrestore", "-p"])
            .arg(file)
            .current_dir("/tmp"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host localhost"),
        "amrestore read our header: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), our_tar.len(), "same length");
    assert!(out.stdout == our_tar, "amrestore's tar stream equals ours");
}

#[test]
fn twenty_dles_share_nine_reserved_udp_ports_all_succeed_and_the_waits_are_reported() {
    let _guard = amdump_machine!("/usr/lib/amanda/amandad", util::INETD);
    // The real client: its requests take long enough (its event loop ticks in seconds)
    // that twenty concurrent dumps need more than nine ports at once.
    let port = util::free_port();
    let inetd = start_real_amandad("bsd", port);
    let data = Scratch::new("dr-ports-data");
    let mut dles = Vec::new();
    for i in 0..20 {
        let d = data.join(format!("dle{i:02}"));
        fs::create_dir_all(&d).expect("mkdir");
        let bulk: Vec<u8> = (0..256 * 1024u32).map(|x| (x * 7 + i) as u8).collect();
        fs::write(d.join("bulk.bin"), bulk).expect("write");
        fs::write(d.join("small.txt"), format!("dle {i}\n")).expect("write");
        dles.push(d);
    }
    let disklist = disklist("localhost", &dles, "bsd20");
    let conf = DumperConf::new(
        "dr-ports",
        "inparallel 20\nreserved-udp-port 850,859",
        &[Dt {
            name: "bsd20",
            auth: "bsd",
            port,
            program: Program::Gnutar,
            extra: "    maxdumps 20",
        }],
        &disklist,
    );
    let (status, out) = conf.run();
    assert!(status.success(), "dumper run failed ({status}):\n{out}");
    drop(inetd);
    let (files, tmp) = conf.holding_files();
    assert_eq!(files.len(), 20, "every DLE dumped:\n{out}");
    assert!(tmp.is_empty());
    assert!(!out.contains("FAILED"), "no dump failed:\n{out}");
    assert!(
        out.contains("WAITS"),
        "the report has a WAITS section:\n{out}"
    );
    assert!(
        out.contains("for udp 850-859: no ports:") && out.contains("usable in udp 850-859"),
        "the report says which dumps waited for a port and why:\n{out}"
    );
    eprintln!("{out}");
    for d in dles.iter().take(3) {
        let into = data.join(format!("r-{}", d.file_name().unwrap().to_string_lossy()));
        conf.restore("localhost", d, &into);
        util::assert_same_tree(d, &into, true);
    }
}

#[test]
fn a_client_that_dies_mid_dump_fails_only_its_dump_and_leaves_no_complete_file() {
    let _guard = amdump_machine!();
    let (ours, data, good) = ours_and_tricky_tree("dr-dies", "good");
    let (doomed, fake) = dying_client(&data, "doomed", false);
    let conf = DumperConf::new(
        "dr-dies",
        "",
        &[
            Dt::new("good", "bsdtcp", ours.port, Program::Gnutar),
            Dt::new("dying", "bsdtcp", fake.port, Program::Gnutar),
        ],
        &[
            ("127.0.0.1", &doomed, "dying"),
            ("localhost", &good, "good"),
        ],
    );
    // What a run killed last night left behind: a partial dump nobody writes any more.
    let killed = conf.work.join("holding/20250101000000");
    fs::create_dir_all(&killed).expect("mkdir");
    fs::write(killed.join("localhost._old.0.tmp"), b"partial").expect("write");
    let _ = Command::new("chown")
        .args(["-R", "backup:backup"])
        .arg(conf.work.join("holding"))
        .status();
    let (status, out) = conf.run();
    drop(fake);
    assert!(
        out.contains("removed 1 partial dump file(s) an interrupted run left") && !killed.exists(),
        "the killed run's partial file is swept and noted:
{out}"
    );
    assert_eq!(
        status.code().map(|c| c & 4),
        Some(4),
        "exit status has amdump's `a DLE failed` bit ({status}):\n{out}"
    );
    assert!(
        out.contains("127.0.0.1")
            && out.contains("FAILED")
            && out.contains("connection closed by the client"),
        "the report names the failed dump and why:\n{out}"
    );
    let (files, tmp) = conf.holding_files();
    assert!(tmp.is_empty(), "no .tmp left: {tmp:?}");
    assert_eq!(
        files.len(),
        1,
        "only the good dump has a holding file: {files:?}\n{out}"
    );
    assert!(
        files[0].to_string_lossy().contains("localhost."),
        "{files:?}"
    );
    let into = data.join("restored-good");
    conf.restore("localhost", &good, &into);
    util::assert_same_tree(&good, &into, true);
}

#[test]
fn sigterm_stops_the_night_with_a_report_and_no_partial_file() {
    let _guard = amdump_machine!();
    let data = Scratch::new("dr-term-data");
    let (disk, fake) = dying_client(&data, "stuck", true);
    let conf = DumperConf::new(
        "dr-term",
        "",
        &[Dt::new("stuck", "bsdtcp", fake.port, Program::Gnutar)],
        &[("127.0.0.1", &disk, "stuck")],
    );
    let mut child = conf.spawn_run();
    // Wait until the dump is under way (its .tmp exists), then ask the night to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while conf.holding_files().1.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!conf.holding_files().1.is_empty(), "the dump never started");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(fake);
    let Some(status) = status else {
        let _ = child.kill();
        panic!("dumper did not stop within 20 s of SIGTERM");
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(
        status.code().map(|c| c & 8),
        Some(8),
        "amdump's MISSING bit ({status}):\n{out}"
    );
    assert!(
        out.contains("interrupted by SIGTERM") && out.contains("MISSING"),
        "the report says what happened:\n{out}"
    );
    assert!(
        conf.holding_files().1.is_empty() && conf.holding_files().0.is_empty(),
        "no partial holding file, nothing that looks complete: {:?}",
        conf.holding_files()
    );
}

#[test]
fn dumper_check_reports_each_host_and_fails_for_an_unreachable_client() {
    let _guard = amdump_machine!();
    let (ours, _data, tree) = ours_and_tricky_tree("dr-check", "tree");
    // Nothing listens on this port.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let conf = DumperConf::new(
        "dr-check",
        "connect-tries 1\nreq-tries 1",
        &[
            Dt::new("ok", "bsdtcp", ours.port, Program::Gnutar),
            Dt::new("dead", "bsdtcp", dead, Program::Gnutar),
        ],
        &[("localhost", &tree, "ok"), ("127.0.0.1", &tree, "dead")],
    );
    let mut cmd = Command::new(util::workspace_bin("dumper"));
    cmd.arg("check").arg(&conf.conf);
    let (status, out) = util::run_with_timeout(&mut cmd, Duration::from_secs(300));
    assert_eq!(
        status.code(),
        Some(1),
        "an unreachable client is an error:\n{out}"
    );
    assert!(out.contains(" localhost (auth bsdtcp"), "{out}");
    assert!(out.contains("OK      noop"), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{dead}")) && out.contains("Connection refused"),
        "the error names the peer and the cause:\n{out}"
    );
    assert!(out.contains("holding disk hd1"), "{out}");
    assert!(out.contains("portpool check"), "{out}");
    let _ = SocketAddr::from(([127, 0, 0, 1], dead));
}
