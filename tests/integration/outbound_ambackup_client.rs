//! Our `ambackup` (the client side of a client-initiated backup, issue 14 point 2) against
//! the REAL server's `ambackupd` (the real amandad with `noop ambackupd` under a private
//! inetd): `list`, `check`, `backup` of two DLEs over connections the client opens, then
//! the real `amflush` and `amfetchdump` restore each DLE identical, the same backup over
//! auth ssl (TLS, certificates of the real `amssl`) — both on two hosts: the amandad in a
//! server network namespace behind a firewall that lets in only its port, our ambackup in
//! a client namespace that accepts nothing but answers (util::netpair). On loopback: the
//! server's refusal of a DLE it does not have, shown with a non-zero exit, and a server
//! certificate of another CA.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::ssl_util;
use crate::util::ambackup::assert_dle_lines;
use crate::util::real_ambackupd::RealAmbackupd;
use crate::util::{self, Scratch};
use crate::{require_root, require_tool};

/// Root, the real amandad, ambackupd, inetd, and the `extra` tools the test needs.
macro_rules! require_real_ambackupd {
    ($($extra:expr),*) => {
        require_root!();
        require_tool!("/usr/lib/amanda/amandad");
        require_tool!("/usr/lib/amanda/ambackupd");
        $(require_tool!($extra);)*
        require_tool!(util::INETD);
    };
}

/// Our ambackup, as root (it binds a reserved source port, as amservice does), against
/// `ab`'s configuration; the server's `noop` must answer.
fn ambackup(ab: &RealAmbackupd, args: &[&str]) -> (ExitStatus, String) {
    let (status, out) = ambackup_unchecked(ab, args);
    // ambackup asks noop first; a refusal would be a warning on stderr.
    assert!(!out.contains("ambackup: noop:"), "noop failed:\n{out}");
    (status, out)
}

/// [`ambackup`] without the noop check.
fn ambackup_unchecked(ab: &RealAmbackupd, args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = ab.client_cmd(util::workspace_bin("ambackup"));
    cmd.args(["--config", &ab.server.name])
        .args(args)
        .current_dir("/tmp");
    let t = std::time::Instant::now();
    let (status, out) = util::run_with_timeout(&mut cmd, Duration::from_secs(300));
    eprintln!("ambackup {args:?}: {status} in {:?}\n{out}", t.elapsed());
    (status, out)
}

fn two_dles(data: &Scratch) -> Vec<PathBuf> {
    let first = data.join("first");
    util::make_tricky_tree(&first);
    let second = data.join("second");
    fs::create_dir_all(second.join("sub")).expect("mkdir");
    for i in 1..=3 {
        fs::write(
            second.join(format!("f{i}.txt")),
            format!("ambackup file {i}\n"),
        )
        .expect("write");
    }
    let numbers: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    fs::write(second.join("sub/numbers.txt"), numbers).expect("write");
    fs::write(second.join("sub/name with blanks.txt"), "x\n").expect("write");
    vec![first, second]
}

/// `list`, `check` and `backup` of every DLE, each checked as the real ambackup's output
/// says it worked.
fn list_check_backup(ab: &RealAmbackupd, dles: &[PathBuf]) {
    let (status, out) = ambackup(ab, &["list"]);
    assert!(status.success(), "list: {status}\n{out}");
    assert_dle_lines(&out, dles, &["DLE "], "list", "");
    let (status, out) = ambackup(ab, &["check"]);
    assert!(status.success(), "check: {status}\n{out}");
    assert!(out.lines().any(|l| l == "check succeeded"), "check:\n{out}");
    let (status, out) = ambackup(ab, &["backup"]);
    assert!(
        status.success(),
        "backup: {status}\n{out}\n{}",
        ab.trace_logs()
    );
    let lines = ["Doing backup of ", "backup done: "];
    assert_dle_lines(&out, dles, &lines, "backup", "");
}

/// The first line of the Amanda header of every dump (first chunk) on a holding disk.
fn holding_headers(holding: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for day in fs::read_dir(holding).expect("holding").flatten() {
        for f in fs::read_dir(day.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp")
                || name
                    .split('.')
                    .next_back()
                    .is_some_and(|e| e.parse::<u32>().is_err())
            {
                continue;
            }
            let bytes = fs::read(f.path()).expect("holding file");
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(32768)]).into_owned();
            out.push(head.lines().next().unwrap_or_default().to_string());
        }
    }
    out
}

/// The real amflush, then each of `dles` restored identical by amfetchdump (into a scratch
/// directory `tag`); and the traffic went through the server namespace's firewall.
fn flush_restore_identical(ab: &RealAmbackupd, dles: &[PathBuf], tag: &str) {
    ab.amflush();
    let restore = Scratch::new(tag);
    for (n, dle) in dles.iter().enumerate() {
        let into = restore.join(format!("restored-{n}"));
        ab.server.restore(dle, &into);
        util::assert_same_tree(dle, &into, false);
    }
    ab.net().expect("two namespaces").assert_used();
}

/// Issue 14, acceptance "our client against the real server's ambackupd": list, check and
/// backup of 2 DLEs, then a level 1 of one, restored identical (level 0 + level 1) by the
/// real amflush + amfetchdump; the client in its own network namespace reaching the
/// server's only by its address.
#[test]
fn outbound_our_ambackup_lists_checks_and_backs_up_to_the_real_ambackupd() {
    require_real_ambackupd!("/usr/sbin/amflush", "/usr/sbin/nft");
    let _g = util::lock_amdump_machine();
    let data = Scratch::new("ab-client-data");
    let dles = two_dles(&data);
    let ab = RealAmbackupd::start_netpair(&dles);
    let host = ab.server.client_host.clone();
    list_check_backup(&ab, &dles);
    let logs = ab.trace_logs();
    assert_eq!(
        logs.lines()
            .filter(|l| l.starts_with(&format!("SUCCESS dumper {host} ")))
            .count(),
        2,
        "ambackupd's trace logs:\n{logs}"
    );

    ab.amflush();

    // A level 1 of the first DLE (ambackupd takes the level from curinfo: forced here),
    // from our gnutar-lists state of the level 0.
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(dles[0].join("new in level 1.txt"), "new\n").expect("write");
    fs::remove_file(dles[0].join("empty-file")).expect("rm");
    ab.server.force_level_1(&dles[0]);
    let first = dles[0].display().to_string();
    let (status, out) = ambackup(&ab, &["backup", &first]);
    assert!(status.success(), "level 1 backup: {status}\n{out}");
    let logs = ab.trace_logs();
    assert!(
        logs.lines().any(
            |l| l.starts_with(&format!("SUCCESS dumper {host} {first} "))
                && l.split(' ').nth(5) == Some("1")
        ),
        "no level 1 of {first} in:\n{logs}"
    );
    flush_restore_identical(&ab, &dles, "ab-client-restore");
}

/// Issue 14: a DLE the server does not have is refused with ambackupd's own ERROR line,
/// and our ambackup exits non-zero (the real one exits 0).
#[test]
fn outbound_our_ambackup_shows_the_real_ambackupd_refusal_and_fails() {
    require_real_ambackupd!();
    let _g = util::lock_amdump_machine();
    let data = Scratch::new("ab-client-refused");
    let dle = data.join("only");
    fs::create_dir_all(&dle).expect("mkdir");
    fs::write(dle.join("a.txt"), "a\n").expect("write");
    let ab = RealAmbackupd::start(std::slice::from_ref(&dle));

    let (status, out) = ambackup(&ab, &["backup", "/no/such/dle"]);
    assert!(
        !status.success(),
        "backup of a DLE the server lacks exited 0:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "ERROR No '/no/such/dle' dle for host 'localhost'"),
        "no ambackupd refusal in:\n{out}"
    );
}

/// Issue 14 over auth ssl, on two namespaces: our ambackup is the TLS client (the client
/// tree of amssl, CN amb-client, its host name and the name ambackupd files the DLEs
/// under), the real amandad `-auth=ssl` runs ambackupd (CN amb-server); list, check,
/// backup of 2 DLEs with `compress client fast` (our gzip on this host), restored identical.
#[test]
fn outbound_our_ambackup_backs_up_to_the_real_ambackupd_over_ssl() {
    require_real_ambackupd!("/usr/sbin/amflush", "/usr/sbin/amssl", "/usr/sbin/nft");
    let _g = util::lock_amdump_machine();
    let trees = ssl_util::trees(ssl_util::Kind::Netpair);
    let data = Scratch::new("ab-client-ssl-data");
    let dles = two_dles(&data);
    let ab = RealAmbackupd::start_ssl_netpair(
        &dles,
        &trees.server,
        &trees.client,
        "    compress client fast",
    );
    list_check_backup(&ab, &dles);
    // The dumps on the holding disk are our gzip's: their headers say so.
    let headers = holding_headers(&ab.server.work.join("holding"));
    assert_eq!(headers.len(), 2, "{headers:?}");
    for h in &headers {
        assert!(h.contains(" comp .gz "), "not client-compressed: {h}");
    }
    flush_restore_identical(&ab, &dles, "ab-client-ssl-restore");
}

/// Issue 14, auth ssl: a server whose certificate is of another CA than the client's is
/// refused in the handshake, said so, and ambackup exits non-zero.
#[test]
fn outbound_our_ambackup_refuses_a_server_certificate_of_another_ca() {
    require_real_ambackupd!("/usr/sbin/amssl");
    let _g = util::lock_amdump_machine();
    let main = ssl_util::trees(ssl_util::Kind::Main);
    let other = ssl_util::trees(ssl_util::Kind::OtherCa);
    let data = Scratch::new("ab-client-ssl-ca");
    let dle = data.join("only");
    fs::create_dir_all(&dle).expect("mkdir");
    fs::write(dle.join("a.txt"), "a\n").expect("write");
    let ab = RealAmbackupd::start_ssl(std::slice::from_ref(&dle), &other.server, &main.client, "");

    let (status, out) = ambackup_unchecked(&ab, &["list"]);
    assert!(
        !status.success(),
        "list against a server of another CA exited 0:\n{out}"
    );
    assert!(out.contains("SSL_connect failed"), "{out}");
    assert!(!out.contains("DLE "), "{out}");
}
