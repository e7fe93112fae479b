//! sendbackup tests: request parsing against the real client's texts, and whole dumps of
//! temporary trees with the real GNU tar.

use proto::crc::Crc32c;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::*;
use crate::services::context::tests::{test_context, test_dle, test_inner};
use crate::tar::tests::tar_list;

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn opts() -> String {
    format!(
        "OPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;timestamp=20240101020304;\n"
    )
}

fn gnutar_xml(disk: &str, level: i32, index: bool) -> String {
    format!(
        "{}<dle>\n  <program>GNUTAR</program>\n  <disk>{disk}</disk>\n  <level>{level}</level>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n{}  <datapath>AMANDA</datapath>\n</dle>\n",
        opts(),
        if index { "  <index>YES</index>\n" } else { "" }
    )
}

fn amgtar_xml(disk: &str, level: i32, props: &str) -> String {
    format!(
        "{}<dle>\n  <program>APPLICATION</program>\n  <backup-program>\n    <plugin>amgtar</plugin>\n{props}  </backup-program>\n  <disk>{disk}</disk>\n  <level>{level}</level>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n",
        opts()
    )
}

fn reply_of(ctx: &ServiceContext, args: &str) -> Vec<u8> {
    match start(ctx, args.as_bytes()) {
        Start::Reply(r) => r,
        Start::Backup(p) => p.rep,
        Start::Job(_) => panic!("sendbackup never makes a job"),
    }
}

#[test]
fn rep_is_connect_and_options_without_state() {
    let ctx = test_context();
    let rep = reply_of(&ctx, &gnutar_xml("/home", 0, true));
    let want = format!(
        "CONNECT DATA 150 MESG 151 INDEX 152\nOPTIONS features={};\n",
        crate::services::features::advertised_hex()
    );
    assert_eq!(String::from_utf8(rep).unwrap(), want);
    let rep = reply_of(&ctx, &gnutar_xml("/home", 0, false));
    assert!(rep.starts_with(b"CONNECT DATA 150 MESG 151 INDEX -1\n"));
}

#[test]
fn legacy_request_lines_are_accepted() {
    let ctx = test_context();
    let args = "OPTIONS features=ffffffff;hostname=h;\nGNUTAR /home  0 1970:1:1:0:0:0 OPTIONS |;auth=bsdtcp;index;\n";
    match start(&ctx, args.as_bytes()) {
        Start::Backup(p) => {
            assert!(p.index);
            assert_eq!(p.spec.level(), 0);
        }
        _ => panic!("expected a backup"),
    }
}

#[test]
fn request_errors_use_the_real_texts() {
    let ctx = test_context();
    let r = reply_of(&ctx, "GNUTAR /x 0 1970:1:1:0:0:0 OPTIONS |;\n");
    assert_eq!(r, b"ERROR [Missing OPTIONS line in sendbackup input]\n");
    let r = reply_of(
        &ctx,
        &format!("{}GNUTAR /x 0 1970:1:1:0:0:0 |;\n", "OPTIONS hostname=h;\n"),
    );
    assert_eq!(
        r,
        b"ERROR FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'\n"
    );
    let r = reply_of(&ctx, &opts());
    assert_eq!(
        r,
        b"ERROR FORMAT ERROR IN REQUEST PACKET 'Document was empty or contained only whitespace'\n"
    );
    let two = format!(
        "{}{}",
        gnutar_xml("/a", 0, true),
        &gnutar_xml("/b", 0, true)[opts().len()..]
    );
    let r = reply_of(&ctx, &two);
    assert_eq!(
        r,
        b"ERROR FORMAT ERROR IN REQUEST PACKET 'Only one DLE allowed'\n"
    );
    let r = reply_of(&ctx, &gnutar_xml("/a", 0, true).replace("bsdtcp", "bsd"));
    assert_eq!(
        r,
        b"ERROR [client configured for auth=bsdtcp while server requested 'bsd']\n"
    );
    // issue 12: client compression is done, but a custom one needs its program.
    let r = reply_of(
        &ctx,
        &gnutar_xml("/a", 0, true).replace("<record>YES</record>", "<compress>CUSTOM</compress>"),
    );
    assert_eq!(
        String::from_utf8_lossy(&r),
        "ERROR [client custom compression with no compression program specified]\n"
    );
    let r = reply_of(&ctx, &amgtar_xml("/a", 0, "").replace("amgtar", "amstar"));
    assert!(String::from_utf8_lossy(&r).starts_with("ERROR [Application 'amstar': not supported"));
    let r = reply_of(
        &ctx,
        "OPTIONS hostname=h;frob=1;\nGNUTAR /x 0 1970:1:1:0:0:0 OPTIONS |;\n",
    );
    assert!(
        r.starts_with(b"ERROR [unknown option \"frob=1\"]\nCONNECT DATA 150"),
        "{}",
        String::from_utf8_lossy(&r)
    );
}

/// Runs a planned dump to completion like the event loop does (blocking reads in two
/// threads), returning (DATA bytes, MESG bytes, INDEX bytes).
pub(crate) fn run_dump(plan: BackupPlan) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let spawned = match BackupRun::spawn(plan.spec) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), BackupRun::spawn_failure_mesg(&e), Vec::new()),
    };
    let Spawned {
        mut run,
        mut child,
        data,
        messages,
    } = spawned;
    let mut mesg = run.mesg_header().to_vec();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(data);
        let mut all = Vec::new();
        f.read_to_end(&mut all).unwrap();
        all
    });
    let mut out = StreamOutput::default();
    let mut f = std::fs::File::from(messages as OwnedFd);
    let mut buf = [0u8; 777];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        run.on_messages(&buf[..n], &mut out);
    }
    let data = reader.join().unwrap();
    let mut crc = Crc32c::new();
    for c in data.chunks(4096) {
        crc.update(c);
    }
    let status = child.wait().unwrap();
    run.finish(status, (crc.value(), crc.value()), None, &mut out);
    mesg.extend_from_slice(&out.mesg);
    (data, mesg, out.index)
}

fn plan_of(ctx: &ServiceContext, args: &str) -> BackupPlan {
    match start(ctx, args.as_bytes()) {
        Start::Backup(p) => *p,
        Start::Reply(r) => panic!("refused: {}", String::from_utf8_lossy(&r)),
        Start::Job(_) => unreachable!(),
    }
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub dir")).unwrap();
    std::fs::write(root.join("file with spaces.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("sub dir/notes"), vec![b'n'; 5000]).unwrap();
}

fn mesg_lines(m: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(m)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn gnutar_dump_produces_the_real_mesg_index_crc_and_state_chain() {
    let (_root, ctx, data_dir, disk) = test_dle(tree);
    let (data, mesg, index) = run_dump(plan_of(&ctx, &gnutar_xml(&disk, 0, true)));
    let lines = mesg_lines(&mesg);
    assert_eq!(
        lines[0],
        format!("sendbackup: start [client.example.com:{disk} level 0]")
    );
    assert_eq!(lines[1], "sendbackup: info BACKUP=/usr/bin/tar");
    assert_eq!(
        lines[2],
        "sendbackup: info RECOVER_CMD=/usr/bin/tar -xpGf - ..."
    );
    assert_eq!(lines[3], "sendbackup: info end");
    let mut crc = Crc32c::new();
    crc.update(&data);
    let n = lines.len();
    assert_eq!(lines[n - 1], "sendbackup: end");
    assert_eq!(
        lines[n - 2],
        format!("sendbackup: size {}", data.len().div_ceil(1024))
    );
    assert_eq!(
        lines[n - 3],
        format!("sendbackup: client-CRC {}", crc.value())
    );
    assert_eq!(
        lines[n - 4],
        format!("sendbackup: native-CRC {}", crc.value())
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("| Total bytes written: ")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("Directory is new")),
        "{lines:?}"
    );
    assert_eq!(
        String::from_utf8(index).unwrap(),
        "/\n/sub dir/\n/file with spaces.txt\n/sub dir/notes\n"
    );
    let listed = tar_list(&data);
    assert!(listed.contains("./sub dir/notes"), "{listed}");
    // The chain: <list dir>/<host><sanitised disk>_0 exists, no .new left.
    let base = crate::tar::listed::chain_base(
        &ctx.tar.gnutar_list_dir,
        b"client.example.com",
        disk.as_bytes(),
    );
    assert!(crate::tar::listed::level_file(&base, 0).exists());
    assert!(!crate::tar::listed::new_file(&base, 0).exists());
    let dates = amandates::load(&ctx.tar.amandates).unwrap();
    assert!(dates.date(disk.as_bytes(), 0) > 0, "amandates updated");

    // A level 1 after a change holds only the change.
    std::fs::write(data_dir.join("new file"), b"x").unwrap();
    let (data, mesg, index) = run_dump(plan_of(&ctx, &gnutar_xml(&disk, 1, true)));
    assert!(
        mesg_lines(&mesg)
            .last()
            .is_some_and(|l| l == "sendbackup: end"),
        "{}",
        String::from_utf8_lossy(&mesg)
    );
    let listed = tar_list(&data);
    assert!(
        listed.contains("./new file") && !listed.contains("./sub dir/notes"),
        "{listed}"
    );
    assert!(String::from_utf8(index).unwrap().contains("/new file\n"));
    assert!(crate::tar::listed::level_file(&base, 1).exists());
}

#[test]
fn amgtar_dump_produces_the_application_header_and_honours_properties() {
    let (_root, ctx, data_dir, disk) = test_dle(tree);
    std::fs::write(data_dir.join("skip.o"), b"obj").unwrap();
    let props = "    <property>\n      <name>EXCLUDE-FILE</name>\n      <value>*.o</value>\n    </property>\n    <property>\n      <name>ATIME-PRESERVE</name>\n      <value>NO</value>\n    </property>\n";
    let (data, mesg, index) = run_dump(plan_of(&ctx, &amgtar_xml(&disk, 0, props)));
    let lines = mesg_lines(&mesg);
    assert_eq!(
        &lines[..4],
        [
            "sendbackup: info BACKUP=APPLICATION",
            "sendbackup: info APPLICATION=amgtar",
            "sendbackup: info RECOVER_CMD=/usr/lib/amanda/application/amgtar restore [./file-to-restore]+",
            "sendbackup: info end",
        ]
    );
    let mut crc = Crc32c::new();
    crc.update(&data);
    let n = lines.len();
    assert_eq!(
        &lines[n - 4..],
        [
            format!("sendbackup: size {}", data.len().div_ceil(1024)),
            format!("sendbackup: native-CRC {}", crc.value()),
            format!("sendbackup: client-CRC {}", crc.value()),
            "sendbackup: end".to_owned(),
        ]
    );
    let listed = tar_list(&data);
    assert!(!listed.contains("skip.o"), "{listed}");
    assert!(String::from_utf8(index).unwrap().starts_with("/\n"));
    // No temporary exclude file is left behind.
    assert_eq!(std::fs::read_dir(&ctx.tar.tmp_dir).unwrap().count(), 0);
}

#[test]
fn a_failing_tar_is_reported_and_the_chain_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let ctx = ServiceContext::new(test_inner(root.path()));
    let missing = root.path().join("missing").display().to_string();
    let (_, mesg, _) = run_dump(plan_of(&ctx, &amgtar_xml(&missing, 0, "")));
    let text = String::from_utf8_lossy(&mesg);
    assert!(
        text.contains("sendbackup: error [/usr/bin/tar exited with status 2"),
        "{text}"
    );
    assert!(text.ends_with("sendbackup: end\n"), "{text}");
    let (_, mesg, _) = run_dump(plan_of(&ctx, &gnutar_xml(&missing, 0, true)));
    let text = String::from_utf8_lossy(&mesg);
    assert!(text.contains("sendbackup: error [dump ("), "{text}");
    assert!(text.contains("/usr/bin/tar returned 2]"), "{text}");
    assert!(!text.contains("sendbackup: end"), "{text}");
    assert_eq!(crate::tar::listed::state_files(&ctx.tar.gnutar_list_dir), 0);
}

#[test]
fn spawn_failures_still_tell_the_dumper_why() {
    let root = tempfile::tempdir().unwrap();
    let mut inner = test_inner(root.path());
    inner.tar.gnutar_list_dir = root.path().join("no-such-list-dir");
    let ctx = ServiceContext::new(inner);
    let (_, mesg, _) = run_dump(plan_of(&ctx, &amgtar_xml("/tmp", 0, "")));
    let text = String::from_utf8_lossy(&mesg);
    assert!(
        text.starts_with("sendbackup: info BACKUP=APPLICATION\n"),
        "{text}"
    );
    assert!(text.contains("sendbackup: error [error opening "), "{text}");
    assert!(text.ends_with("sendbackup: end\n"), "{text}");
}

/// The INDEX and MESG frames of the real client's amgtar dump of the harness's `plain` tree
/// (bsdtcp-amdump trace: handles 499997 INDEX, 499998 MESG).
fn trace_streams() -> Option<(Vec<u8>, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/traces/bsdtcp-amdump/tcp4-b2a.bin");
    let d = std::fs::read(path).ok()?;
    let (mut index, mut mesg) = (Vec::new(), Vec::new());
    let mut i = 0;
    while let Some(h) = d.get(i..i + 8) {
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let handle = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let payload = d.get(i + 8..i + 8 + len)?;
        match handle {
            499_997 => index.extend_from_slice(payload),
            499_998 => mesg.extend_from_slice(payload),
            _ => {}
        }
        i += 8 + len;
    }
    Some((index, mesg))
}

#[test]
fn amgtar_index_and_mesg_match_the_real_clients_trace_byte_for_byte() {
    let Some((want_index, want_mesg)) = trace_streams() else {
        eprintln!("SKIPPED: trace fixtures not found");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let ctx = ServiceContext::new(test_inner(root.path()));
    // The harness's `plain` tree (shared/traces/real-amanda-3.5.1/README.md).
    let p = root.path().join("plain");
    std::fs::create_dir_all(p.join("sub dir/deeper")).unwrap();
    std::fs::create_dir_all(p.join("empty dir")).unwrap();
    for (name, content) in [
        ("back\\slash.txt", &b"b"[..]),
        ("empty-file", b""),
        ("file with spaces.txt", b"s"),
        ("héllo wörld ✓.txt", b"u"),
        ("numbers.txt", b"1\n"),
        ("plain.txt", b"p"),
        ("quote\"s and 'apos'.txt", b"q"),
        ("random.bin", b"r"),
        ("tab\tin name.txt", b"t"),
        ("sub dir/nested file.txt", b"n"),
        ("sub dir/deeper/x", b"x"),
    ] {
        std::fs::write(p.join(name), content).unwrap();
    }
    std::os::unix::fs::symlink("plain.txt", p.join("link-to-plain")).unwrap();
    let props = "    <property>\n      <name>atime-preserve</name>\n      <value>no</value>\n    </property>\n";
    let (_, mesg, index) = run_dump(plan_of(
        &ctx,
        &amgtar_xml(&p.display().to_string(), 0, props),
    ));
    assert_eq!(
        String::from_utf8_lossy(&index),
        String::from_utf8_lossy(&want_index)
    );
    // Same lines, except the numbers that depend on the data and the speed.
    let shape = |m: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(m)
            .lines()
            .map(|l| {
                let cut = match l.find("CRC ") {
                    Some(i) => i + 4,
                    None => l
                        .find(|c: char| c.is_ascii_digit())
                        .filter(|_| !l.contains("info "))
                        .unwrap_or(l.len()),
                };
                l[..cut].to_owned()
            })
            .collect()
    };
    assert_eq!(shape(&mesg), shape(&want_mesg));
}

#[test]
fn the_data_pipe_is_made_large() {
    let (r, _w) = data_pipe().unwrap();
    let size = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DATA_PIPE_SIZE);
    // Above pipe-max-size the kernel refuses (unless root); the pipe then keeps 64 KiB.
    assert!(
        size == DATA_PIPE_SIZE || (max < DATA_PIPE_SIZE && size == 65536),
        "{size}"
    );
}

/// issue 12: the MESG header of each client compression/encryption variant is the one the
/// real 3.5.1 client sends (spec §11.3): the gunzip step before RECOVER_CMD only for client
/// fast/best, COMPRESS_SUFFIX=.gz for every compress mode but none (amgtar) or for client
/// fast/best only (legacy GNUTAR), and no program or decrypt-option lines.
#[test]
fn mesg_header_of_each_filter_variant_is_the_real_clients() {
    let ctx = test_context();
    let amgtar = "/usr/lib/amanda/application/amgtar restore [./file-to-restore]+";
    let head = |xml: String| {
        let plan = plan_of(&ctx, &xml);
        String::from_utf8(header_lines(&plan.spec)).unwrap()
    };
    let with = |elements: &str| {
        amgtar_xml("/a", 0, "").replace("  <record>", &format!("{elements}  <record>"))
    };
    let enc = "  <encrypt>CUSTOM<custom-encrypt-program>/usr/sbin/amcrypt-ossl</custom-encrypt-program>\n    <decrypt-option>-d</decrypt-option>\n  </encrypt>\n";
    let cases = [
        ("", format!("RECOVER_CMD={amgtar}\n"), false),
        (
            "  <compress>FAST</compress>\n",
            format!("RECOVER_CMD=/bin/gzip -dc |{amgtar}\n"),
            true,
        ),
        (
            "  <compress>BEST</compress>\n",
            format!("RECOVER_CMD=/bin/gzip -dc |{amgtar}\n"),
            true,
        ),
        (
            "  <compress>CUSTOM<custom-compress-program>/usr/bin/zstd</custom-compress-program>\n  </compress>\n",
            format!("RECOVER_CMD={amgtar}\n"),
            true,
        ),
        (
            "  <compress>SERVER-FAST</compress>\n",
            format!("RECOVER_CMD={amgtar}\n"),
            true,
        ),
        (enc, format!("RECOVER_CMD={amgtar}\n"), false),
    ];
    for (elements, recover, suffix) in cases {
        let h = head(with(elements));
        let want = format!(
            "sendbackup: info BACKUP=APPLICATION\nsendbackup: info APPLICATION=amgtar\nsendbackup: info {recover}{}sendbackup: info end\n",
            if suffix {
                "sendbackup: info COMPRESS_SUFFIX=.gz\n"
            } else {
                ""
            }
        );
        assert_eq!(h, want, "{elements}");
    }
    let fast_enc = head(with(&format!("  <compress>FAST</compress>\n{enc}")));
    assert!(fast_enc.contains("RECOVER_CMD=/bin/gzip -dc |/usr/lib/amanda/application/amgtar"));
    assert!(
        !fast_enc.contains("ENCRYPT") && !fast_enc.contains("DECRYPT"),
        "{fast_enc}"
    );

    let legacy =
        |c: &str| head(gnutar_xml("/a", 0, true).replace("  <record>", &format!("{c}  <record>")));
    assert!(legacy("  <compress>FAST</compress>\n").ends_with(
        "sendbackup: info RECOVER_CMD=/bin/gzip -dc |/usr/bin/tar -xpGf - ...\nsendbackup: info COMPRESS_SUFFIX=.gz\nsendbackup: info end\n"
    ));
    assert!(legacy("  <compress>SERVER-FAST</compress>\n").ends_with(
        "sendbackup: info RECOVER_CMD=/usr/bin/tar -xpGf - ...\nsendbackup: info end\n"
    ));
}

/// issue 12: a program outside `amandad.filter_programs` is refused before any stream opens.
#[test]
fn a_filter_program_the_client_does_not_allow_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut inner = test_inner(root.path());
    inner.filter_programs = vec!["/usr/bin/zstd".into()];
    let ctx = ServiceContext::new(inner);
    let xml = amgtar_xml("/a", 0, "").replace(
        "  <record>",
        "  <encrypt>CUSTOM<custom-encrypt-program>/bin/sh</custom-encrypt-program>\n    <decrypt-option>-d</decrypt-option>\n  </encrypt>\n  <record>",
    );
    assert_eq!(
        String::from_utf8(reply_of(&ctx, &xml)).unwrap(),
        "ERROR [client_encrypt /bin/sh is not one of this client's amandad.filter_programs]\n"
    );
}
