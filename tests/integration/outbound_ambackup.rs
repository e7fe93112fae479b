//! Issue 14, client-initiated backups: the real Debian `ambackup` (with the real amservice,
//! bsdtcp from a reserved port) against our `dumper listen` and its `ambackupd`.
//!
//! - list, check and backup of two DLEs under inetd, then a level 1 after a change;
//!   `dumper restore` of each chain is identical to the source: the real client in a client
//!   network namespace, our listener in a server namespace behind a firewall that lets in
//!   only its port, the client accepting nothing but answers (util::netpair); ours against
//!   ours on loopback;
//! - refusals with the real texts: a client that `.amandahosts` does not allow (the real
//!   amandad's NAK), a DLE not in the disklist, a host not in the disklist; a dump that
//!   fails on the server reaches the client as `backup failed: <disk>: <reason>`;
//! - auth ssl, on the same two namespaces: the real ambackup (TLS client with its amssl
//!   certificate, CN amb-client) backs up to our listener (TLS server, CN amb-server), and
//!   the dump restores identical;
//! - our CHECK, BACKUP and error replies equal the real ambackupd's captured bodies
//!   (tests/fixtures/ambackup);
//! - 1,000 connections that never speak do not keep a real `ambackup list` out of a
//!   standalone listener, whose memory stays bounded.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ssl_util::{Kind, trees};
use crate::util::ambackup::{AMBACKUP, AmbackupLab, Client, Listener, SslTrees, assert_dle_lines};
use crate::util::{self, Scratch};
use crate::{require_root, require_tool};

/// What every test here needs, or a loud skip (a failure under CI).
macro_rules! require_ambackup {
    () => {
        require_root!();
        require_tool!(AMBACKUP);
        require_tool!("/usr/sbin/amservice");
        require_tool!(util::INETD);
    };
}

/// Two DLEs: the tricky tree and a plain one (names without blanks: ambackup sends the
/// disk unquoted and ambackupd cuts it at a blank, spec §14.2).
fn two_dles(data: &Scratch) -> Vec<PathBuf> {
    let a = data.join("tricky");
    let b = data.join("second");
    util::make_tricky_tree(&a);
    fs::create_dir_all(b.join("sub")).expect("mkdir");
    for i in 1..=3 {
        fs::write(b.join(format!("f{i}.txt")), format!("ambackup file {i}\n")).expect("write");
    }
    fs::write(
        b.join("sub/noise.bin"),
        util::Noise::new(7).low_bytes(300_000),
    )
    .expect("write");
    vec![a, b]
}

const ALLOW: &str = "localhost backup noop ambackupd\n";

/// Two DLEs of host `localhost` in a lab allowed by [`ALLOW`]; the data lives as long as
/// the returned scratch directory.
fn localhost_lab(tag: &str, how: Listener) -> (Scratch, Vec<PathBuf>, AmbackupLab) {
    two_dle_lab(tag, "localhost", ALLOW, how)
}

/// [`localhost_lab`] with a standalone listener (at most `max_connections`, each given
/// `req_timeout` seconds for its REQ), and the listener's address.
fn standalone_lab(
    tag: &str,
    max_connections: usize,
    req_timeout: u64,
) -> (Scratch, Vec<PathBuf>, AmbackupLab, SocketAddr) {
    let how = Listener::Standalone {
        max_connections,
        req_timeout,
    };
    let (data, dles, lab) = localhost_lab(tag, how);
    let addr = SocketAddr::from(([127, 0, 0, 1], lab.port));
    (data, dles, lab, addr)
}

/// Two DLEs of `host` in a loopback lab whose `.amandahosts` is `allow`; the data lives as
/// long as the returned scratch directory.
fn two_dle_lab(
    tag: &str,
    host: &str,
    allow: &str,
    how: Listener,
) -> (Scratch, Vec<PathBuf>, AmbackupLab) {
    let data = Scratch::new(&format!("{tag}-data"));
    let dles = two_dles(&data);
    let lab = AmbackupLab::loopback(tag, host, &dles, allow, how, None);
    (data, dles, lab)
}

/// `ambackup list` succeeds and names every DLE.
fn assert_lists(lab: &AmbackupLab, dles: &[PathBuf], what: &str) {
    assert_lists_by(lab, Client::Real, dles, what);
}

/// [`assert_lists`] with `client`'s ambackup.
fn assert_lists_by(lab: &AmbackupLab, client: Client, dles: &[PathBuf], what: &str) {
    let (st, out) = lab.client(client, &["list"]);
    assert!(
        st.success(),
        "ambackup list ({what}):\n{out}\n{}",
        lab.log()
    );
    assert_dle_lines(&out, dles, &["DLE "], what, "");
}

/// Two DLEs of the client namespace's host in a lab on two namespaces
/// ([`AmbackupLab::in_netpair`]); the data lives as long as the returned scratch directory.
fn netpair_lab(tag: &str, ssl: Option<SslTrees<'_>>) -> (Scratch, Vec<PathBuf>, AmbackupLab) {
    let data = Scratch::new(&format!("{tag}-data"));
    let dles = two_dles(&data);
    let lab = AmbackupLab::in_netpair(tag, &dles, ssl);
    (data, dles, lab)
}

// issue 14, acceptance "the real ambackup (Debian) against our server": on two hosts, the
// client reaching the listener only by its address, through firewalls that let nothing
// into the client.
#[test]
fn outbound_ambackup_real_client_lists_checks_and_backs_up_then_restores_identical() {
    require_ambackup!();
    require_tool!("/usr/sbin/nft");
    let (_data, dles, lab) = netpair_lab("outbound-ab", None);
    full_then_incremental(&lab, Client::Real, &dles);
    lab.net().expect("two namespaces").assert_used();
}

/// Ours against ours: amanda-rs's `ambackup` and `dumper listen` (issue 14, deliver 2).
#[test]
fn outbound_ambackup_our_client_against_our_listener_backs_up_then_restores_identical() {
    require_ambackup!();
    let (_data, dles, lab) = localhost_lab("outbound-abo", Listener::Inetd);
    full_then_incremental(&lab, Client::Ours, &dles);
}

/// list, check, a full backup of both DLEs, a change, a backup at the level the dumper's
/// policy picks (1), and each chain restored identical.
fn full_then_incremental(lab: &AmbackupLab, client: Client, dles: &[PathBuf]) {
    assert_lists_by(lab, client, dles, "inetd");

    let (st, out) = lab.client(client, &["check"]);
    assert!(
        st.success() && out.contains("check succeeded"),
        "ambackup check:\n{out}\n{}",
        lab.log()
    );
    assert!(!out.contains("ERROR"), "{out}");

    let backup = |round: &str| {
        let (st, out) = lab.client(client, &["backup"]);
        assert!(
            st.success(),
            "ambackup backup ({round}):\n{out}\n{}",
            lab.log()
        );
        let lines = ["start backup: ", "backup done: "];
        assert_dle_lines(&out, dles, &lines, round, &lab.log());
    };
    backup("full");
    let (done, tmp) = lab.conf.holding_files();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(
        done.iter().all(|p| p.to_string_lossy().ends_with(".0")),
        "{done:?}"
    );
    // The index of each DLE, in the directory ambackupd made (3.5.1 does not make it).
    let index = lab.conf.work.join("state/index").join(&lab.host);
    let indexes = fs::read_dir(&index)
        .unwrap_or_else(|e| panic!("{}: {e}", index.display()))
        .count();
    assert_eq!(indexes, 2);
    // A report per BACKUP in logdir, as `dumper run` keeps one per night.
    let logdir = lab.conf.work.join("state/log");
    let reports: Vec<String> = fs::read_dir(&logdir)
        .unwrap_or_else(|e| panic!("{}: {e}", logdir.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ambackupd."))
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert_eq!(reports.len(), 2);
    for d in dles {
        let disk = d.display().to_string();
        assert!(reports.iter().any(|r| r.contains(&disk)), "{reports:?}");
    }

    // A change, then the level the dumper's policy picks: 1.
    fs::write(dles[1].join("f2.txt"), "changed after the full\n").expect("write");
    fs::remove_file(dles[1].join("f3.txt")).expect("rm");
    fs::write(dles[1].join("new.txt"), "new after the full\n").expect("write");
    backup("incremental");
    let (done, _) = lab.conf.holding_files();
    assert_eq!(
        done.iter()
            .filter(|p| p.to_string_lossy().ends_with(".1"))
            .count(),
        2,
        "{done:?}"
    );

    for (i, d) in dles.iter().enumerate() {
        let into = lab.conf.work.join(format!("restore{i}"));
        let said = lab.conf.restore(&lab.host, d, &into);
        assert!(said.contains("level 1"), "{said}");
        util::assert_same_tree(d, &into, false);
    }
}

#[test]
fn outbound_ambackup_refusals_carry_the_real_amandad_and_ambackupd_texts() {
    require_ambackup!();
    // .amandahosts allows noop but not ambackupd: the real amandad's NAK.
    let (_data, _, lab) = two_dle_lab(
        "outbound-ab-hosts",
        "localhost",
        "localhost backup noop\n",
        Listener::Inetd,
    );
    let (_, out) = lab.ambackup(&["list"]);
    let hosts = lab.conf.work.join("amandahosts");
    let want = format!(
        "user backup from localhost is not allowed to execute the service ambackupd: {}: invalid service ambackupd",
        hosts.display()
    );
    assert!(out.contains(&want), "no {want:?} in:\n{out}");
    drop(lab);

    let (_data, dles, lab) = localhost_lab("outbound-ab-refuse", Listener::Inetd);
    // A DLE that is not in the disklist.
    let (_, out) = lab.ambackup(&["backup", "/no/such/dle"]);
    assert!(
        out.contains("ERROR No '/no/such/dle' dle for host 'localhost'"),
        "{out}\n{}",
        lab.log()
    );
    // A host that is not in the disklist.
    lab.write_disklist(&format!(
        "no-such-client.invalid {} ambackup\n",
        dles[0].display()
    ));
    let (_, out) = lab.ambackup(&["list"]);
    assert!(
        out.contains("ERROR No host 'localhost'"),
        "{out}\n{}",
        lab.log()
    );
    let (_, out) = lab.ambackup(&["backup", &dles[0].display().to_string()]);
    assert!(out.contains("ERROR No host 'localhost'"), "{out}");
    let (done, tmp) = lab.conf.holding_files();
    assert!(done.is_empty() && tmp.is_empty(), "{done:?} {tmp:?}");
    // A dump that fails on the server after the data came: the client is told why on
    // MESG, and nothing is left on the holding disk.
    lab.write_disklist(&format!(
        "localhost {} ambackup-failing\n",
        dles[0].display()
    ));
    let (_, out) = lab.ambackup(&["backup"]);
    let want = format!("backup failed: {}: ", dles[0].display());
    let line = out.lines().find(|l| l.starts_with(&want));
    assert!(
        line.is_some_and(|l| l.contains("/bin/false")),
        "no {want:?} naming the filter in:\n{out}\n{}",
        lab.log()
    );
    let (done, tmp) = lab.conf.holding_files();
    assert!(done.is_empty() && tmp.is_empty(), "{done:?} {tmp:?}");
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn outbound_ambackup_a_thousand_silent_connections_do_not_starve_a_real_list() {
    require_ambackup!();
    let (_data, dles, lab, addr) = standalone_lab("outbound-ab-flood", 64, 30);
    let pid = lab.pid().expect("standalone");
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut peak = 0;
    for i in 0..1000 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => silent.push(s),
            Err(e) => panic!("connection {i} of the flood: {e}"),
        }
        if i % 100 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    // The flood is still open (the newest 64 inside the listener); a real client gets in.
    assert_lists(&lab, &dles, "under the flood");
    peak = peak.max(rss_kib(pid));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    eprintln!(
        "1000 silent connections + a real list: peak RSS of the listener {peak} KiB, in {:?}",
        started.elapsed()
    );
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(
        lab.log()
            .contains("closing the oldest that has not made a request"),
        "{}",
        lab.log()
    );
    drop(silent);
}

/// Reads until the listener closes (or `limit`): what it sent, and how long it took.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (got, t0.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if t0.elapsed() > limit {
            return (got, t0.elapsed());
        }
    }
}

#[test]
fn outbound_ambackup_listener_bounds_hostile_first_frames_and_silent_peers() {
    require_ambackup!();
    let (_data, dles, lab, addr) = standalone_lab("outbound-ab-hostile", 8, 2);
    // A REQ from an unreserved port: the real amandad's NAK.
    let mut s = TcpStream::connect(addr).expect("connect");
    let port = s.local_addr().expect("addr").port();
    let body =
        b"\0SECURITY USER backup\nSERVICE ambackupd\nOPTIONS features=ff;config=x;\nLISTDLE\n\0";
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&frame).expect("write");
    // (The listener then waits for our close of handle 1, as amandad does.)
    let (got, _) = read_to_close(&mut s, Duration::from_secs(3));
    let want = format!("\x04ERROR host localhost: port {port} not secure\n");
    assert!(
        String::from_utf8_lossy(&got).contains(&want),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // A first frame announcing 1 MiB: closed at once, nothing allocated for it.
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut hdr = (1u32 << 20).to_be_bytes().to_vec();
    hdr.extend_from_slice(&1u32.to_be_bytes());
    s.write_all(&hdr).expect("write");
    let (got, took) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(
        got.is_empty() && took < Duration::from_secs(2),
        "{got:?} {took:?}"
    );
    // A peer that says nothing is closed after the REQ timeout (2 s here).
    let mut s = TcpStream::connect(addr).expect("connect");
    let (got, took) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    // And a real client still gets its list.
    assert_lists(&lab, &dles, "after the hostile peers");
    let log = lab.log();
    assert!(
        log.contains("more than the 65536 this connection accepts"),
        "{log}"
    );
    assert!(log.contains("no REQ within 2 s"), "{log}");
}

// issue 14: the same over auth ssl, on two namespaces; the client is named by its
// certificate's CN, which is its host name there.
#[test]
fn outbound_ambackup_over_ssl_backs_up_and_restores_identical() {
    require_ambackup!();
    require_tool!("/usr/sbin/amssl");
    require_tool!("/usr/bin/openssl");
    require_tool!("/usr/sbin/nft");
    let t = trees(Kind::Netpair);
    let ssl = SslTrees {
        server: &t.server,
        client: &t.client,
    };
    let (_data, dles, lab) = netpair_lab("outbound-ab-ssl", Some(ssl));
    let (st, out) = lab.ambackup(&["list"]);
    assert!(
        st.success(),
        "ambackup list over ssl:\n{out}\n{}",
        lab.log()
    );
    let (st, out) = lab.ambackup(&["backup"]);
    assert!(
        st.success(),
        "ambackup backup over ssl:\n{out}\n{}",
        lab.log()
    );
    for d in &dles {
        let want = format!("backup done: {}", d.display());
        assert!(
            out.lines().any(|l| l == want),
            "no {want:?} in:\n{out}\n{}",
            lab.log()
        );
        let into = lab.conf.work.join(format!(
            "restore-{}",
            d.file_name().unwrap().to_string_lossy()
        ));
        lab.conf.restore(&lab.host, d, &into);
        util::assert_same_tree(d, &into, false);
    }
    // issue 14: the real amservice spun on a TLS connection our side just dropped.
    let left = lab.amservices_after(Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "amservice still running: {left:?}\n{}",
        lab.log()
    );
    lab.net().expect("two namespaces").assert_used();
}

#[test]
fn outbound_ambackup_systemd_socket_serves_a_real_list() {
    require_ambackup!();
    let (_data, dles, lab) = localhost_lab("outbound-ab-systemd", Listener::Systemd);
    assert_lists(&lab, &dles, "systemd socket");
}

/// The real ambackupd's bodies (tests/fixtures/ambackup/README.md).
fn fixture(name: &str) -> Vec<u8> {
    let p = util::fixture(&format!("ambackup/{name}"));
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// issue 14: our CHECK, BACKUP and error replies are the real ambackupd's, byte for byte, for
// the request the real ambackup sent (the harness's configuration; GOPTIONS names the
// real server's features there).
#[test]
fn outbound_ambackup_replies_match_the_real_ambackupd_byte_for_byte() {
    use dumper::listen::ambackupd::{self, Command};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    fs::write(
        dir.path().join("amanda.conf"),
        format!(
            "org \"ab\"\ninfofile \"{d}/curinfo\"\nindexdir \"{d}/index\"\nlogdir \"{d}/log\"\n{}\
define dumptype ambackup {{\n auth \"bsdtcp\"\n program \"APPLICATION\"\n application \"app_amgtar\"\n compress none\n index yes\n record yes\n}}\n\
define dumptype ambackup-gnutar {{\n auth \"bsdtcp\"\n program \"GNUTAR\"\n compress none\n index yes\n}}\n",
            util::holding_and_amgtar(&d, "500 mbytes")
        ),
    )
    .expect("amanda.conf");
    let plan_with = |disklist: &str| {
        fs::write(dir.path().join("disklist"), disklist).expect("disklist");
        dumper::plan::load(&dir.path().join("amanda.conf").display().to_string()).expect("plan")
    };
    let two = "localhost /tmp/amanda-harness/data-ambackup/second_dle ambackup\n\
localhost /tmp/amanda-harness/data/plain ambackup\nlocalhost /g ambackup-gnutar\n";
    let plan = plan_with(two);
    let request = |name: &str| {
        let req = fixture(name);
        let body = req
            .strip_prefix(b"SECURITY USER backup\n".as_slice())
            .expect("SECURITY line");
        let split = proto::security::parse_service_request(body).expect("REQ");
        assert_eq!(split.service, b"ambackupd");
        ambackupd::parse_request(split.arguments).expect("ambackupd request")
    };
    let real_server = proto::features::Features::parse(b"ffffffff9efefbfffffffffffffff3fffbf71f")
        .expect("features");
    let g = ambackupd::goptions(&real_server, 1, "localhost", "ab-bsdtcp-10063-10535");

    let check = request("check-req.bin");
    assert_eq!(check.command, Command::Check);
    assert_eq!(check.config.as_deref(), Some("ab-bsdtcp-10063-10535"));
    let dles = ambackupd::application_dles(&plan, "localhost").expect("dles");
    let ours = ambackupd::check_reply(&g, &dles, &check.features);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&fixture("check-rep.bin"))
    );

    let backup = request("backup-req.bin");
    let Command::Backup(disk) = &backup.command else {
        panic!("{:?}", backup.command)
    };
    let spec = ambackupd::backup_dle(&plan, "localhost", disk).expect("dle");
    let streams = ambackupd::backup_streams(&backup.features, &real_server);
    let ours = ambackupd::backup_reply(&streams, &g, spec, 0, &backup.features);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&fixture("backup-rep.bin"))
    );

    let refused = |r: ambackupd::Refusal| ambackupd::error_reply(&r);
    let e = ambackupd::backup_dle(&plan, "localhost", b"/no/such/dle").expect_err("no such");
    assert_eq!(refused(e), fixture("error-no-such-dle.bin"));
    let e = ambackupd::backup_dle(&plan, "localhost", b"/g").expect_err("gnutar");
    assert_eq!(refused(e), fixture("error-gnutar-dle.bin"));
    let plan = plan_with("localhost /g ambackup-gnutar\n");
    let e = ambackupd::application_dles(&plan, "localhost").expect_err("no application");
    assert_eq!(refused(e), fixture("error-no-application-dle.bin"));
    let plan = plan_with("no-such-client.invalid /g ambackup\n");
    let e = ambackupd::application_dles(&plan, "localhost").expect_err("no host");
    assert_eq!(refused(e), fixture("error-no-host.bin"));
}

/// Whether a TCP connection to `addr` from inside namespace `ns` opens within 1 s.
fn connects_from(ns: &str, addr: std::net::SocketAddr) -> bool {
    util::netpair::in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
}

/// A listener on `addr`, made inside namespace `ns` (a socket stays in the namespace it was
/// made in).
fn listen_in(ns: &str, addr: std::net::SocketAddr) -> std::net::TcpListener {
    util::netpair::in_netns(ns, move || {
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    })
}

// issue 14: the two hosts the ambackup tests run on: each resolves the other by name, the
// server's firewall lets in only the listener's port, nothing opens a connection into the
// client, and the namespaces and their /etc/netns files are gone after, also after a panic.
#[test]
fn outbound_ambackup_netpair_lets_in_only_the_listener_and_nothing_into_the_client() {
    use util::netpair::{CLIENT_ADDR, CLIENT_NAME, NetPair, SERVER_ADDR, SERVER_NAME};
    require_root!();
    require_tool!("/usr/sbin/nft");
    let mut net = NetPair::create();
    net.firewall(10080);
    let resolve = |ns: &str, what: &str| {
        let out = net.cmd(ns, "getent").args(["hosts", what]).output();
        String::from_utf8_lossy(&out.expect("getent").stdout).into_owned()
    };
    let server_ip = SERVER_ADDR.to_string();
    let client_ip = CLIENT_ADDR.to_string();
    assert!(resolve(&net.client, SERVER_NAME).starts_with(&server_ip));
    assert!(resolve(&net.server, &client_ip).contains(CLIENT_NAME));
    assert!(resolve(&net.server, CLIENT_NAME).starts_with(&client_ip));
    // The machine's own /etc/hosts does not know them.
    let machine = fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!machine.contains(SERVER_NAME) && !machine.contains(CLIENT_NAME));

    let to = |ip: std::net::Ipv4Addr, port| std::net::SocketAddr::from((ip, port));
    let _listener = listen_in(&net.server, to(SERVER_ADDR, 10080));
    let _other = listen_in(&net.server, to(SERVER_ADDR, 10081));
    let _on_client = listen_in(&net.client, to(CLIENT_ADDR, 10080));
    assert!(connects_from(&net.client, to(SERVER_ADDR, 10080)));
    assert!(!connects_from(&net.client, to(SERVER_ADDR, 10081)));
    assert!(!connects_from(&net.server, to(CLIENT_ADDR, 10080)));
    net.assert_used();

    let names = [net.server.clone(), net.client.clone()];
    drop(net);
    eprintln!("(the panic below is this test's own: a pair must go also when a test fails)");
    let failed = std::panic::catch_unwind(|| {
        let net = NetPair::create();
        let names = [net.server.clone(), net.client.clone()];
        panic!("{names:?}");
    });
    let message = failed.expect_err("panicked");
    let panicked = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    let list = util::run_ok(std::process::Command::new("ip").args(["netns", "list"]));
    let list = String::from_utf8_lossy(&list.stdout);
    for ns in names
        .iter()
        .map(String::as_str)
        .chain(panicked.split('"').filter(|w| w.starts_with("amb-")))
    {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left behind"
        );
    }
}
