//! sendsize tests: request handling, estimates against real tar, and the whole reply against
//! the real Debian client's sendsize when it is installed (run as root).

use std::path::Path;

use super::*;
use crate::services::context::tests::{test_context, test_dle, test_inner};

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn opts(host: &str) -> String {
    format!(
        "OPTIONS features={F};maxdumps=2;hostname={host};config=DailySet1;timestamp=20240101020304;\n"
    )
}

fn levels_xml(levels: &[i32]) -> String {
    levels
        .iter()
        .map(|l| format!("  <level>{l}</level>\n"))
        .collect()
}

fn gnutar_dle(disk: &str, levels: &[i32]) -> String {
    let lv = levels_xml(levels);
    format!(
        "<dle>\n  <program>GNUTAR</program>\n  <estimate>CLIENT </estimate>\n  <disk>{disk}</disk>\n{lv}  <spindle>-1</spindle>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
    )
}

fn amgtar_dle(disk: &str, levels: &[i32], props: &str) -> String {
    let lv = levels_xml(levels);
    format!(
        "<dle>\n  <program>APPLICATION</program>\n  <backup-program>\n    <plugin>amgtar</plugin>\n{props}  </backup-program>\n  <estimate>CLIENT </estimate>\n  <disk>{disk}</disk>\n{lv}  <spindle>-1</spindle>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
    )
}

/// Runs the service like the loop: the job on this thread, collecting every partial body.
fn run(ctx: &ServiceContext, args: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    match start(ctx, args.as_bytes()) {
        Start::Reply(r) => (r, Vec::new()),
        Start::Job(job) => {
            let mut partials = Vec::new();
            let mut cb = |b: &[u8]| partials.push(b.to_vec());
            let body = job(&mut cb);
            (body, partials)
        }
        Start::Backup(_) => panic!("sendsize never makes a backup"),
    }
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/f"), vec![1u8; 3000]).unwrap();
    std::fs::write(root.join("a/b/g"), vec![2u8; 100_000]).unwrap();
    std::fs::write(root.join("top file"), b"x").unwrap();
}

#[test]
fn request_errors_are_the_real_texts() {
    let ctx = test_context();
    let (r, _) = run(&ctx, "GNUTAR /x 0 1970:1:1:0:0:0 -1 OPTIONS |;\n");
    assert_eq!(r, b"ERROR [Missing OPTIONS line in sendsize input]\n");
    let last = |req: &str| lines(&run(&ctx, req).0).pop().unwrap();
    for (req, error) in [
        (
            "OPTIONS features=ffffffff;\nOPTIONS hostname=x;\n".to_owned(),
            "ERROR [Multiple OPTIONS line in sendsize input]",
        ),
        (
            "OPTIONS hostname=h;\nGNUTAR /x 0\n".to_owned(),
            "ERROR FORMAT ERROR IN REQUEST PACKET 'no dumpdate'",
        ),
        (
            format!(
                "{}<dle><program>GNUTAR</program><disk>/x</disk></dle>",
                opts("h")
            ),
            "ERROR Missing level in request",
        ),
    ] {
        assert_eq!(last(&req), error, "{req:?}");
    }
    let (r, _) = run(
        &ctx,
        &format!("{}<dle><program>GNUTAR</program>", opts("h")),
    );
    assert!(
        lines(&r)[1].starts_with("ERROR FORMAT ERROR IN REQUEST PACKET '"),
        "{r:?}"
    );
}

#[test]
fn estimates_equal_real_tar_for_level_0_and_1_and_are_published_line_by_line() {
    let (_root, ctx, data, disk) = test_dle(tree);
    let (body, partials) = run(
        &ctx,
        &format!("{}{}", opts("h1"), gnutar_dle(&disk, &[0, 1])),
    );
    let l = lines(&body);
    assert_eq!(
        l[0],
        format!(
            "OPTIONS features={};",
            crate::services::features::advertised_hex()
        )
    );
    let want0 = crate::tar::estimate::tests::real_tar_bytes(&data, true, &[])
        .unwrap()
        .div_ceil(1024);
    assert_eq!(l[1], format!("{disk} 0 SIZE {want0}"));
    // No level-0 chain yet: level 1 is a full (the copy of nothing), like the real client.
    assert_eq!(l[2], format!("{disk} 1 SIZE {want0}"));
    assert_eq!(l.len(), 3);
    assert_eq!(partials.first().map(|p| lines(p).len()), Some(1));
    assert_eq!(partials.last(), Some(&body));
    // No state file is left behind by an estimate.
    assert_eq!(crate::tar::listed::state_files(&ctx.tar.gnutar_list_dir), 0);
}

#[test]
fn levels_above_9_and_server_estimates_follow_the_real_rules() {
    let (root, ctx, _, disk) = test_dle(tree);
    let (body, _) = run(&ctx, &format!("{}{}", opts("h2"), gnutar_dle(&disk, &[10])));
    assert_eq!(lines(&body)[1], format!("{disk} 10 SIZE -2"));
    let server = gnutar_dle(&disk, &[0]).replace("CLIENT ", "SERVER ");
    let (body, _) = run(&ctx, &format!("{}{}", opts("h2"), server));
    assert_eq!(lines(&body)[1], format!("{disk} 0 SIZE -1"));
    let missing = root.path().join("missing").display().to_string();
    let (body, _) = run(
        &ctx,
        &format!("{}{}", opts("h2"), gnutar_dle(&missing, &[0])),
    );
    let l = lines(&body);
    assert_eq!(l[1], format!("{missing} 0 SIZE -1"), "{l:?}");
    assert!(l[2].starts_with(&format!("{missing} 0 ERROR \"")), "{l:?}");
}

#[test]
fn amgtar_estimates_and_property_errors() {
    let (_root, ctx, data, disk) = test_dle(tree);
    let (body, _) = run(
        &ctx,
        &format!("{}{}", opts("h3"), amgtar_dle(&disk, &[0], "")),
    );
    let want0 = crate::tar::estimate::tests::real_tar_bytes(&data, true, &[])
        .unwrap()
        .div_ceil(1024);
    assert_eq!(lines(&body)[1], format!("{disk} 0 SIZE {want0}"));
    let props = "    <property>\n      <name>ONE-FILE-SYSTEM</name>\n      <value>maybe</value>\n    </property>\n";
    let (body, _) = run(
        &ctx,
        &format!("{}{}", opts("h3"), amgtar_dle(&disk, &[0], props)),
    );
    let l = lines(&body);
    assert_eq!(
        l[1],
        format!("{disk} 0 ERROR \"bad ONE-FILE-SYSTEM property value 'maybe'\"")
    );
    assert_eq!(l[2], format!("{disk} 0 SIZE {want0}"));
}

/// The real Debian client, if installed and we are root: `runuser -u backup -- sendsize`.
fn real_sendsize(req: &str) -> Option<Vec<u8>> {
    crate::services::util::real_client_service("sendsize", req)
}

fn readable_tree() -> tempfile::TempDir {
    let dir = crate::services::util::readable_tempdir("amandad-rs-sendsize-");
    let data = dir.path().join("data");
    tree(&data);
    for name in [
        "file with spaces.txt",
        "héllo wörld ✓.txt",
        "tab\tin name.txt",
        "quote\"s and 'apos'.txt",
        "back\\slash.txt",
    ] {
        std::fs::write(data.join(name), name.as_bytes()).unwrap();
    }
    std::fs::create_dir(data.join("empty dir")).unwrap();
    std::fs::write(data.join("empty-file"), b"").unwrap();
    std::os::unix::fs::symlink("top file", data.join("link")).unwrap();
    std::fs::write(
        data.join(format!("{}.txt", "long".repeat(30))),
        vec![0u8; 70_000],
    )
    .unwrap();
    dir
}

/// The real client's reply, with its feature string replaced by the one we advertise.
fn as_ours(real: &[u8]) -> String {
    String::from_utf8_lossy(real).replace(F, &crate::services::features::advertised_hex())
}

/// `req` answered by the real client (`None` when it cannot run) and by us with our state
/// under `dir`, both with the feature string we advertise: (ours, real).
fn both_answer(dir: &Path, req: &str) -> Option<(String, String)> {
    let real = as_ours(&real_sendsize(req)?);
    let (ours, _) = run(&ServiceContext::new(test_inner(dir)), req);
    Some((String::from_utf8_lossy(&ours).into_owned(), real))
}

#[test]
fn reply_equals_the_real_clients_sendsize() {
    let dir = readable_tree();
    let data = dir.path().join("data").display().to_string();
    let host = format!("amandad-rs-test-{}", std::process::id());
    for dle in [gnutar_dle(&data, &[0]), amgtar_dle(&data, &[0], "")] {
        let req = format!("{}{dle}", opts(&host));
        let Some((ours, real)) = both_answer(dir.path(), &req) else {
            return;
        };
        assert_eq!(ours, real, "request:\n{req}");
    }
}

#[test]
fn missing_disks_and_level_order_match_the_real_client() {
    let dir = readable_tree();
    let data = dir.path().join("data").display().to_string();
    let missing = dir.path().join("nosuch").display().to_string();
    let host = format!("amandad-rs-test2-{}", std::process::id());
    let req = format!(
        "{}{}{}",
        opts(&host).replace("maxdumps=2", "maxdumps=1"),
        gnutar_dle(&data, &[0, 1]),
        amgtar_dle(&missing, &[0, 1], "")
    );
    let Some((ours, real)) = both_answer(dir.path(), &req) else {
        return;
    };
    // Host-specific: the debug file the real client points to.
    let cut = |s: &str| {
        s.lines()
            .map(|l| l.split(": see ").next().unwrap_or(l).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(cut(&ours), cut(&real));
}

fn exclude_dle(dle: &str) -> String {
    dle.replace(
        "  <record>YES</record>\n",
        "  <record>YES</record>\n  <exclude>\n    <file>*.txt</file>\n    <file>./a/b</file>\n  </exclude>\n",
    )
}

#[test]
fn excluded_files_estimate_like_the_real_client() {
    let dir = readable_tree();
    let data = dir.path().join("data").display().to_string();
    let host = format!("amandad-rs-test3-{}", std::process::id());
    for dle in [
        exclude_dle(&gnutar_dle(&data, &[0])),
        exclude_dle(&amgtar_dle(&data, &[0], "")),
    ] {
        let req = format!("{}{dle}", opts(&host));
        let Some((ours, real)) = both_answer(dir.path(), &req) else {
            return;
        };
        assert_eq!(ours, real, "request:\n{req}");
        // really excluded: smaller than the whole tree
        let all = crate::tar::estimate::tests::real_tar_bytes(&dir.path().join("data"), true, &[])
            .unwrap();
        assert!(
            !real.contains(&format!(" 0 SIZE {}\n", all.div_ceil(1024))),
            "{real}"
        );
    }
}

/// A level-0 chain file written by our sendbackup, handed to the real client: its level-1
/// estimate and ours agree, so switching between the two keeps the incremental chain.
#[test]
fn the_real_client_continues_our_incremental_chain() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/lib/amanda/sendsize").exists() {
        crate::services::util::skip_unless_ci("needs root and the real amanda-client");
        return;
    }
    let dir = readable_tree();
    let data_path = dir.path().join("data");
    let data = data_path.display().to_string();
    let host = format!("amandad-rs-chain-{}", std::process::id());
    let lists = Path::new("/var/lib/amanda/gnutar-lists");
    let mut inner = test_inner(dir.path());
    inner.tar.gnutar_list_dir = lists.to_path_buf();
    let ctx = ServiceContext::new(inner);
    let base = crate::tar::listed::chain_base(lists, host.as_bytes(), data.as_bytes());
    let level0 = crate::tar::listed::level_file(&base, 0);
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(level0.clone());
    // Our level 0 backup writes <host><disk>_0.
    let args = format!(
        "{}<dle>\n  <program>GNUTAR</program>\n  <disk>{data}</disk>\n  <level>0</level>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n  <datapath>AMANDA</datapath>\n</dle>\n",
        opts(&host)
    );
    let plan = match crate::services::backup::start(&ctx, args.as_bytes()) {
        Start::Backup(p) => *p,
        _ => panic!("backup refused"),
    };
    let (_, mesg, _) = crate::services::backup::tests::run_dump(plan);
    assert!(String::from_utf8_lossy(&mesg).ends_with("sendbackup: end\n"));
    assert!(level0.exists());
    // The real client runs as backup: give it the file as the real client would own it.
    let backup = nix::unistd::User::from_name("backup").unwrap().unwrap();
    nix::unistd::chown(&level0, Some(backup.uid), Some(backup.gid)).unwrap();
    std::fs::write(data_path.join("a/changed"), vec![7u8; 12_345]).unwrap();
    let req = format!("{}{}", opts(&host), gnutar_dle(&data, &[0, 1]));
    let real = real_sendsize(&req).unwrap();
    let (ours, _) = run(&ctx, &req);
    let real = as_ours(&real);
    assert_eq!(String::from_utf8_lossy(&ours), real);
    let size = |level: i32| -> i64 {
        let line = real
            .lines()
            .find(|l| l.contains(&format!(" {level} SIZE ")));
        line.and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (l1, l0) = (size(1), size(0));
    assert!(
        l1 < l0,
        "level 1 ({l1}) is an incremental of our level 0 ({l0})"
    );
}
