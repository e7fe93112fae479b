//! Issue 12, the server side: `dumper run` with `compress server fast|best|custom` (zstd)
//! and `encrypt server` (amcrypt-ossl), alone and on top of the real client's `compress
//! client fast`, against the real Debian amandad under inetd and against ours. Every holding
//! file's header says how to undo its stages (spec §11.5), `dumper restore` and Debian's
//! `amrestore -p | tar -x` both give back the source tree, and the report's OUT-KB is the
//! stored payload. Bad server programs (missing, exit 1, killed by a signal, writing
//! garbage) each fail their dump with a clear error and leave nothing on the holding disk;
//! `dumper check` names the missing one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::amdump_machine;
use crate::util::crypt::am_passphrase;
use crate::util::{self, Dt, DumperConf, Launch, Program, Scratch, start_ours, start_real_amandad};

const ZSTD: &str = "/usr/bin/zstd";
const AMCRYPT: &str = "/usr/sbin/amcrypt-ossl";

/// One mode: its dumptype name, the dumptype lines, and what the holding file's first
/// header line says after `lev 0 ` (`comp`) and after the program (`tail`, spec §11.5).
struct Mode {
    name: &'static str,
    lines: String,
    comp: &'static str,
    tail: String,
}

fn encrypt_server() -> String {
    format!(
        "    encrypt server\n    server_encrypt \"{AMCRYPT}\"\n    server_decrypt_option \"-d\""
    )
}

fn server_modes() -> Vec<Mode> {
    let enc = format!("crypt enc server_encrypt {AMCRYPT} server_decrypt_option -d");
    vec![
        Mode {
            name: "sfast",
            lines: "    compress server fast".into(),
            comp: "comp .gz",
            tail: String::new(),
        },
        Mode {
            name: "sbest",
            lines: "    compress server best".into(),
            comp: "comp .gz",
            tail: String::new(),
        },
        Mode {
            name: "szstd",
            lines: format!("    compress server custom\n    server_custom_compress \"{ZSTD}\""),
            comp: "comp cust",
            tail: format!(" server_custom_compress {ZSTD}"),
        },
        Mode {
            name: "senc",
            lines: encrypt_server(),
            comp: "comp N",
            tail: format!(" {enc}"),
        },
    ]
}

/// The real client's `compress client fast` under server encryption.
fn client_fast_server_encrypt() -> Mode {
    Mode {
        name: "cfast-senc",
        lines: format!("    compress client fast\n{}", encrypt_server()),
        comp: "comp .gz",
        tail: format!(" crypt enc server_encrypt {AMCRYPT} server_decrypt_option -d"),
    }
}

/// A tree worth compressing: the tricky tree plus a text file.
fn make_tree(root: &Path) {
    util::make_compressible_tree(root, 20_000);
}

/// The report line of `disk`: (ORIG-KB, OUT-KB, COMP%, STATUS).
fn report_line(out: &str, disk: &Path) -> Option<(String, String, String, String)> {
    let d = disk.display().to_string();
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(d.as_str()))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 10 && f[2] == "0").then(|| {
                (
                    f[3].to_owned(),
                    f[4].to_owned(),
                    f[5].to_owned(),
                    f[f.len() - 1].to_owned(),
                )
            })
        })
}

/// Dumps one DLE per mode through the client on `port`, then checks each holding file's
/// header, the report's sizes, and both restores.
fn dump_and_restore_every_mode(
    tag: &str,
    auth: &str,
    port: u16,
    modes: &[Mode],
    log: &dyn Fn() -> String,
) {
    am_passphrase();
    let data = Scratch::new(&format!("{tag}-data"));
    let dles = util::dirs_named(&data, modes.iter().map(|m| m.name), make_tree);
    let dts: Vec<Dt<'_>> = modes
        .iter()
        .map(|m| Dt {
            name: m.name,
            auth,
            port,
            program: Program::Gnutar,
            extra: &m.lines,
        })
        .collect();
    let list: Vec<(&str, &Path, &str)> = modes
        .iter()
        .zip(&dles)
        .map(|(m, p)| ("localhost", p.as_path(), m.name))
        .collect();
    let conf = DumperConf::new(tag, "", &dts, &list);
    let (status, out) = conf.run();
    // amcrypt-ossl warns on stderr on every run (OpenSSL 3): STRANGE, as with Amanda.
    assert!(
        matches!(status.code(), Some(0) | Some(2)),
        "dumper run ({tag}) failed ({status}):\n{out}\n{}",
        log()
    );
    let (files, tmp) = conf.holding_files();
    assert!(tmp.is_empty(), "no .tmp left: {tmp:?}");
    assert_eq!(files.len(), modes.len(), "{files:?}\n{out}");
    for (m, dle) in modes.iter().zip(&dles) {
        let file = files
            .iter()
            .find(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&format!("_{}.0", m.name)))
            })
            .unwrap_or_else(|| panic!("{}: no holding file in {files:?}", m.name));
        let bytes = fs::read(file).expect("read holding file");
        let head = String::from_utf8_lossy(&bytes[..32768]);
        let first = head.lines().next().unwrap_or_default();
        let after_level = first
            .split_once("  lev 0 ")
            .map(|x| x.1)
            .unwrap_or_default();
        let after_program = after_level
            .strip_prefix(m.comp)
            .and_then(|r| r.strip_prefix(" program "))
            .and_then(|r| r.split_once(' ').map(|x| x.1).or(Some("")))
            .unwrap_or_else(|| panic!("{}: header {first:?} should say {:?}", m.name, m.comp));
        assert_eq!(
            after_program,
            m.tail.trim_start(),
            "{}: header first line {first:?}",
            m.name
        );
        // OUT-KB is the stored payload; COMP% is OUT-KB over ORIG-KB.
        let payload = (bytes.len() - 32768) as u64;
        let (orig, out_kb, comp, st) =
            report_line(&out, dle).unwrap_or_else(|| panic!("{}: no report line:\n{out}", m.name));
        assert!(st == "OK" || st == "STRANGE", "{}: {st}\n{out}", m.name);
        assert_eq!(
            out_kb,
            payload.div_ceil(1024).to_string(),
            "{}:\n{out}",
            m.name
        );
        let orig: f64 = orig
            .parse()
            .unwrap_or_else(|_| panic!("ORIG-KB {orig}\n{out}"));
        let comp: f64 = comp
            .parse()
            .unwrap_or_else(|_| panic!("COMP% {comp}\n{out}"));
        let want = payload.div_ceil(1024) as f64 * 100.0 / orig;
        assert!(
            (comp - want).abs() < 0.1,
            "{}: COMP% {comp}, {want} expected",
            m.name
        );
        if m.name != "senc" {
            assert!(comp < 60.0, "{}: compressed, COMP% {comp}\n{out}", m.name);
        }

        let into = data.join(format!("restored-{}", m.name));
        conf.restore("localhost", dle, &into);
        util::assert_same_tree(dle, &into, true);

        let am = Command::new("runuser")
            .args(["-u", util::AMANDA_USER, "--", "amrestore", "-p"])
            .arg(file)
            .current_dir("/tmp")
            .output()
            .expect("amrestore");
        assert!(
            am.status.success(),
            "{}: amrestore -p failed: {}",
            m.name,
            String::from_utf8_lossy(&am.stderr)
        );
        let into = data.join(format!("amrestored-{}", m.name));
        fs::create_dir_all(&into).expect("mkdir");
        util::extract_tar(&am.stdout, &into);
        util::assert_same_tree(dle, &into, true);
    }
}

#[test]
fn server_compression_and_encryption_from_the_real_client_restore_with_dumper_and_amrestore() {
    let _guard = amdump_machine!(
        "/usr/lib/amanda/amandad",
        util::INETD,
        ZSTD,
        AMCRYPT,
        "/usr/sbin/amrestore"
    );
    let port = util::free_port();
    let inetd = start_real_amandad("bsdtcp", port);
    let log_dir = inetd.dir.path().to_path_buf();
    let mut modes = server_modes();
    modes.push(client_fast_server_encrypt());
    dump_and_restore_every_mode("cs-real", "bsdtcp", port, &modes, &|| {
        fs::read_to_string(log_dir.join("inetd.log")).unwrap_or_default()
    });
}

#[test]
fn server_compression_and_encryption_from_our_amandad_restore_with_dumper_and_amrestore() {
    let _guard = amdump_machine!(ZSTD, AMCRYPT, "/usr/sbin/amrestore");
    let ours = start_ours("bsdtcp", Launch::Standalone);
    dump_and_restore_every_mode("cs-ours", "bsdtcp", ours.port, &server_modes(), &|| {
        ours.log()
    });
}

#[test]
fn bad_server_filter_programs_fail_their_dump_clearly_and_leave_nothing_on_holding() {
    let _guard = amdump_machine!();
    let ours = start_ours("bsdtcp", Launch::Standalone);
    let data = Scratch::new("cs-bad-data");
    let bin = data.join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p.display().to_string()
    };
    let killed = script("killed", "head -c 1000 >/dev/null; kill -KILL $$");
    let garbage = script(
        "garbage",
        "if [ \"$1\" = -d ]; then cat; else cat >/dev/null; echo garbage; fi",
    );
    let missing = bin.join("no-such-compressor").display().to_string();
    // (dumptype, program, what the failure must say)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "missing",
            missing.clone(),
            format!("cannot start {missing}"),
        ),
        ("exit1", "/bin/false".into(), "/bin/false (pid".into()),
        ("killed", killed.clone(), format!("{killed} (pid")),
        ("garbage", garbage.clone(), "would not restore".into()),
    ];
    let lines: Vec<String> = cases
        .iter()
        .map(|(_, p, _)| format!("    compress server custom\n    server_custom_compress \"{p}\""))
        .collect();
    let dles = util::dirs_named(&data, cases.iter().map(|c| c.0), make_tree);
    util::chown_amanda(data.path());
    let dts: Vec<Dt<'_>> = cases
        .iter()
        .zip(&lines)
        .map(|((n, _, _), l)| Dt {
            name: n,
            auth: "bsdtcp",
            port: ours.port,
            program: Program::Gnutar,
            extra: l,
        })
        .collect();
    let list: Vec<(&str, &Path, &str)> = cases
        .iter()
        .zip(&dles)
        .map(|((n, _, _), p)| ("localhost", p.as_path(), *n))
        .collect();
    let conf = DumperConf::new("cs-bad", "", &dts, &list);
    let (status, out) = conf.run();
    assert!(!status.success(), "the run must fail:\n{out}");
    for ((name, _, want), dle) in cases.iter().zip(&dles) {
        let d = dle.display().to_string();
        let failed = out
            .lines()
            .find(|l| l.contains(&d) && l.contains("FAILED") && l.contains('['))
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no FAILED line with a reason:\n{out}\n{}",
                    ours.log()
                )
            });
        assert!(
            failed.contains(want.as_str()),
            "{name}: {failed:?} should say {want:?}"
        );
    }
    assert!(out.contains("exit code 1"), "exit status named:\n{out}");
    assert!(out.contains("SIGKILL"), "signal named:\n{out}");
    let (files, tmp) = conf.holding_files();
    assert!(
        files.is_empty() && tmp.is_empty(),
        "nothing on holding: {files:?} {tmp:?}"
    );
    // `dumper check` says so before a night fails.
    let (status, check) = conf.check(&[]);
    assert!(!status.success(), "{check}");
    assert!(
        check
            .lines()
            .any(|l| l.contains(&format!("server filter {missing}")) && l.contains("cannot be run")),
        "{check}"
    );
    assert!(
        check
            .lines()
            .any(|l| l.contains("server filter /bin/false") && l.contains("is executable")),
        "{check}"
    );
}
