//! Issue 12's client-side acceptance: the real Amanda 3.5.1 server (amcheck, amdump,
//! amfetchdump) backs up our amandad, under inetd, over bsd, bsdudp and bsdtcp, with
//! client compression and encryption: `compress client fast`, `client best`, `client custom`
//! (/usr/bin/zstd), `encrypt client` with amcrypt-ossl and with amgpgcrypt, client fast with
//! encrypt client, and client best with the legacy `program "GNUTAR"`. amcheck must find no problem (it refused these dumptypes before:
//! "does not support fast compression"), every restore must be identical to the source, the
//! tape header must say how to undo each stage, and the CRCs must be on the right bytes
//! (native-CRC of the tar stream amfetchdump gives back, client-CRC = server-CRC of what was
//! stored). And programs that fail (missing, exit 1, killed by a signal, garbage and exit
//! without reading their input) each give a clear failed dump naming the program.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::amdump_machine;
use crate::util::crypt::{GpgLock, am_passphrase, amgpgcrypt_keys};
use crate::util::real_amanda::split_quoted;
use crate::util::{self, Launch, RealServer, Scratch, ServerOptions, start_ours};

const OSSL: &str = "/usr/sbin/amcrypt-ossl";
const GPG: &str = "/usr/sbin/amgpgcrypt";
const ZSTD: &str = "/usr/bin/zstd";

/// One dumptype of the run: its name, its lines, and what the tape header must say.
struct Variant {
    name: &'static str,
    lines: String,
    header: Vec<String>,
}

fn encrypt_lines(program: &str) -> String {
    format!(
        "    encrypt client\n    client_encrypt \"{program}\"\n    client_decrypt_option \"-d\"\n"
    )
}

fn crypt_header(program: &str) -> String {
    format!("crypt enc client_encrypt {program} client_decrypt_option -d")
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "fast",
            lines: "    compress client fast\n".into(),
            header: vec!["comp .gz program APPLICATION".into()],
        },
        Variant {
            name: "best",
            lines: "    compress client best\n".into(),
            header: vec!["comp .gz program APPLICATION".into()],
        },
        Variant {
            name: "zstd",
            lines: format!("    compress client custom\n    client_custom_compress \"{ZSTD}\"\n"),
            header: vec![format!(
                "comp cust program APPLICATION client_custom_compress {ZSTD}"
            )],
        },
        Variant {
            name: "ossl",
            lines: encrypt_lines(OSSL),
            header: vec![format!("comp N program APPLICATION {}", crypt_header(OSSL))],
        },
        Variant {
            name: "gpg",
            lines: encrypt_lines(GPG),
            header: vec![format!("comp N program APPLICATION {}", crypt_header(GPG))],
        },
        Variant {
            name: "gnutar-best",
            // Not on top of `rs` (its amgtar application cannot go with program GNUTAR).
            lines: "    program \"GNUTAR\"\n    estimate client\n    index yes\n    record yes\n    maxdumps 1\n    compress client best\n".into(),
            header: vec!["comp .gz program /".into()], // the configured tar
        },
        Variant {
            name: "fast-ossl",
            lines: format!("    compress client fast\n{}", encrypt_lines(OSSL)),
            header: vec![format!(
                "comp .gz program APPLICATION {}",
                crypt_header(OSSL)
            )],
        },
    ]
}

/// A tree worth compressing (several gzip members) with the tricky names.
fn make_dle(root: &Path) {
    util::make_compressible_tree(root, 200_000);
}

/// Adds `defs` (the variants' dumptypes, see [`define`]) to the configuration and gives each
/// of `dles` the dumptype `rs-<name>` of its name in `names`.
fn assign_dumptypes<'a>(
    server: &RealServer,
    dles: &[PathBuf],
    names: impl IntoIterator<Item = &'a str>,
    defs: &str,
) {
    let conf = server.work.join("config/amanda.conf");
    let mut text = fs::read_to_string(&conf).expect("amanda.conf");
    text.push_str(defs);
    fs::write(&conf, text).expect("amanda.conf");
    let disklist: String = dles
        .iter()
        .zip(names)
        .map(|(d, name)| {
            format!(
                "{} {} rs-{name}\n",
                server.client_host,
                util::amquote(&d.display().to_string())
            )
        })
        .collect();
    fs::write(server.work.join("config/disklist"), disklist).expect("disklist");
}

/// A dumptype on top of the test's `rs`, or (legacy GNUTAR) on its own with the same auth
/// and port.
fn define(name: &str, lines: &str, opts: &ServerOptions) -> String {
    let base = if lines.contains("program \"GNUTAR\"") {
        format!(
            "    auth \"{}\"\n    client_port \"{}\"\n",
            opts.auth, opts.client_port
        )
    } else {
        "    rs\n".to_string()
    };
    format!("define dumptype rs-{name} {{\n{base}{lines}}}\n")
}

/// The first line of the tape header of `disk`'s dump.
fn tape_header(server: &RealServer, disk: &Path) -> String {
    let want = format!(" {} ", disk.display());
    let mut stack = vec![server.work.join("vtapes")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(bytes) = fs::read(&p) else { continue };
            let head = &bytes[..bytes.len().min(32768)];
            let first = String::from_utf8_lossy(head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            if first.starts_with("AMANDA: SPLIT_FILE") && first.contains(&want) {
                return first;
            }
        }
    }
    panic!("no tape file for {}", disk.display());
}

/// The three CRCs (`crc:size`) of `disk`'s `DONE taper` line.
fn taper_crcs(log: &str, disk: &Path) -> [String; 3] {
    let disk = disk.display().to_string();
    for l in log.lines().filter(|l| l.starts_with("DONE taper ")) {
        let w = split_quoted(l);
        if w.get(5) == Some(&disk) && w.len() > 11 {
            return [w[9].clone(), w[10].clone(), w[11].clone()];
        }
    }
    panic!("no DONE taper line for {disk}:\n{log}");
}

fn crc32c_hex(data: &[u8]) -> String {
    let mut c = proto::crc::Crc32c::new();
    c.update(data);
    c.value().to_string()
}

/// `amfetchdump -a -p` of `disk`: the decoded stream. amcrypt-ossl writes OpenSSL 3's two
/// deprecation warnings on every run, and amgpgcrypt GnuPG 2's "obsolete option" warning,
/// which makes amfetchdump exit 1 with complete data (spec §11.6); that, and only that, is
/// tolerated (the tree comparison checks the data).
fn fetch(server: &RealServer, disk: &Path) -> Vec<u8> {
    let out = server
        .amfetchdump(disk, None)
        .output()
        .expect("amfetchdump");
    let err = String::from_utf8_lossy(&out.stderr);
    let benign = err.lines().all(|l| {
        !l.contains("filter stderr")
            || l.contains("deprecated key derivation")
            || l.contains("-iter or -pbkdf2")
            || l.contains("\"--secret-keyring\" is an obsolete option")
    });
    assert!(
        !out.stdout.is_empty() && (out.status.success() || benign),
        "amfetchdump {} failed ({}):\n{err}",
        disk.display(),
        out.status
    );
    out.stdout
}

fn round_trip(auth: &str) {
    let _guard = amdump_machine!("/usr/sbin/amdump", util::INETD, ZSTD, OSSL, GPG);
    am_passphrase();
    amgpgcrypt_keys();
    let _gpg = GpgLock::take();
    let data = Scratch::new("codec");
    let variants = variants();
    let names = || variants.iter().map(|v| v.name);
    let dles = util::dirs_named(&data, names(), make_dle);
    let ours = start_ours(auth, Launch::Inetd);
    let opts = ServerOptions::new(auth, ours.port);
    let server = RealServer::new("localhost", &dles, &opts);
    let defs: String = variants
        .iter()
        .map(|v| define(v.name, &v.lines, &opts))
        .collect();
    assign_dumptypes(&server, &dles, names(), &defs);

    let (ok, out) = server.amcheck();
    assert!(
        ok && out.contains("0 problems found") && !out.contains("does not support"),
        "amcheck ({auth}) with client compression/encryption:\n{out}\n{}",
        ours.log()
    );
    let (_status, out, log) = server.amdump();
    for (v, dle) in variants.iter().zip(&dles) {
        let disk = dle.display().to_string();
        assert!(
            log.lines()
                .any(|l| l.starts_with("DONE taper ") && split_quoted(l).get(5) == Some(&disk)),
            "{} ({auth}) not dumped:\n{out}\n{log}\n{}",
            v.name,
            ours.log()
        );
        let header = tape_header(&server, dle);
        for want in &v.header {
            assert!(
                header.contains(&format!(" lev 0 {want}")),
                "{}: tape header {header:?} lacks {want:?}",
                v.name
            );
        }
        let stream = fetch(&server, dle);
        let [native, client, stored] = taper_crcs(&log, dle);
        // native-CRC covers the tar stream (amcrypt-ossl's NUL padding comes after it).
        let size: usize = native.split(':').nth(1).unwrap().parse().unwrap();
        assert!(size <= stream.len(), "{}: native size {size}", v.name);
        assert_eq!(
            crc32c_hex(&stream[..size]),
            native,
            "{}: native-CRC",
            v.name
        );
        assert_eq!(
            client, stored,
            "{}: client-CRC is of what was stored",
            v.name
        );
        assert_ne!(
            client, native,
            "{}: DATA carried the filtered bytes",
            v.name
        );
        let restored = data.join(format!("restored-{}", v.name));
        fs::create_dir_all(&restored).expect("mkdir");
        util::extract_tar(&stream[..size], &restored);
        util::assert_same_tree(dle, &restored, true);
    }
}

#[test]
fn real_server_dumps_our_amandad_with_client_compression_and_encryption_bsd() {
    round_trip("bsd");
}

#[test]
fn real_server_dumps_our_amandad_with_client_compression_and_encryption_bsdudp() {
    round_trip("bsdudp");
}

#[test]
fn real_server_dumps_our_amandad_with_client_compression_and_encryption_bsdtcp() {
    round_trip("bsdtcp");
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// issue 12: a compression or encryption program that is missing, exits 1, is killed by a
/// signal, or writes garbage and exits without reading its input fails its dump, with an
/// error naming the program and how it ended; the others of the run are not affected.
#[test]
fn bad_client_filter_programs_each_fail_their_dump_clearly() {
    let _guard = amdump_machine!("/usr/sbin/amdump", util::INETD);
    let data = Scratch::new("codec-bad");
    let bin = Scratch::new("codec-bin");
    util::chown_amanda(bin.path());
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let exit1 = script(
        bin.path(),
        "exit1",
        "cat >/dev/null\necho 'exit1: broken' >&2\nexit 1",
    );
    let killed = script(bin.path(), "killed", "head -c 1000 >/dev/null\nkill -9 $$");
    let garbage = script(
        bin.path(),
        "garbage",
        "head -c 100000 /dev/urandom\nhead -c 300000 /dev/urandom >&2\nexit 0",
    );
    let missing = bin.join("missing");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "missing",
            format!(
                "    compress client custom\n    client_custom_compress \"{}\"\n",
                missing.display()
            ),
            format!("cannot start {}", missing.display()),
        ),
        (
            "exit1",
            encrypt_lines(&exit1.display().to_string()),
            format!("{} (pid", exit1.display()),
        ),
        (
            "killed",
            format!(
                "    compress client fast\n{}",
                encrypt_lines(&killed.display().to_string())
            ),
            "was killed by signal 9 (SIGKILL)".into(),
        ),
        (
            "garbage",
            format!(
                "    compress client custom\n    client_custom_compress \"{}\"\n",
                garbage.display()
            ),
            "without reading all its input".into(),
        ),
    ];
    let dles = util::dirs_named(&data, cases.iter().map(|c| c.0), make_dle);
    let good = data.join("good");
    make_dle(&good);
    let ours = start_ours("bsdtcp", Launch::Inetd);
    let opts = ServerOptions::new("bsdtcp", ours.port);
    let mut all = dles.clone();
    all.push(good.clone());
    let server = RealServer::new("localhost", &all, &opts);
    let mut defs: String = cases.iter().map(|(n, l, _)| define(n, l, &opts)).collect();
    defs.push_str(&define("good", "    compress client fast\n", &opts));
    let names = cases.iter().map(|c| c.0).chain(["good"]);
    assign_dumptypes(&server, &all, names, &defs);

    let (status, out, log) = server.amdump();
    assert!(
        !status.success(),
        "amdump must report the failures:\n{out}\n{log}"
    );
    for ((name, _, want), dle) in cases.iter().zip(&dles) {
        let disk = dle.display().to_string();
        let fails: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("FAIL dumper ") && split_quoted(l).get(3) == Some(&disk))
            .collect();
        eprintln!("{name}: {}", fails.join("\n  "));
        assert!(
            fails.iter().any(|l| l.contains(want.as_str())),
            "{name}: no FAIL dumper line with {want:?}:\n{log}\n{}",
            ours.log()
        );
        assert!(
            !log.lines()
                .any(|l| l.starts_with("DONE taper ") && split_quoted(l).get(5) == Some(&disk)),
            "{name}: a failed dump must not reach the tape:\n{log}"
        );
    }
    let disk = good.display().to_string();
    assert!(
        log.lines()
            .any(|l| l.starts_with("DONE taper ") && split_quoted(l).get(5) == Some(&disk)),
        "the good DLE of the same run is dumped:\n{log}"
    );
}
