//! Issue 13's acceptance: auth ssl against the real Amanda 3.5.1, both ways, with
//! certificates made by the real amssl.
//!
//! - The real amcheck, amdump and amfetchdump back up our amandad `-auth=ssl` under inetd;
//!   our dumper backs up the real `amandad -auth=ssl` under inetd; every restore is
//!   identical, and a capture of each night holds no tar header and no DLE path.
//! - Refusals, both sides: a certificate of another CA, a fingerprint that is not the one
//!   on file, a host name that does not match, a client not in `.amandahosts`.
//! - Through a NAT that rewrites source ports, ssl passes where bsdtcp is refused with
//!   "port ... not secure".

use std::fs;
use std::path::{Path, PathBuf};

use crate::netns::{CLIENT_IP, Topology};
use crate::ssl_util::{
    self, Capture, Kind, RealSslAmandad, SECLEVEL1, Trees, copy_tree, fingerprint_line, ssl_dir,
    start_ours_ssl, trees, write_private,
};
use crate::util::{self, Dt, DumperConf, Program, RealServer, Scratch, ServerOptions, disklist};
use crate::{require_root, require_tool};

/// Everything the ssl tests need, or a loud skip (a failure under CI).
macro_rules! require_ssl_tools {
    () => {
        require_root!();
        require_tool!("/usr/sbin/amdump");
        require_tool!("/usr/sbin/amssl");
        require_tool!(util::INETD);
        require_tool!("/usr/bin/tcpdump");
        require_tool!("/usr/bin/openssl");
    };
}

/// The start of most tests here: the tools ([`require_ssl_tools`]), then the machine lock and
/// the certificate trees of `kind`.
macro_rules! ssl_machine {
    ($kind:expr) => {{
        require_ssl_tools!();
        (util::lock_amdump_machine(), trees($kind))
    }};
}

/// Two DLEs: the tricky tree and a directory with a name easy to look for on the wire.
fn dles(data: &Scratch) -> Vec<PathBuf> {
    let a = data.join("plain");
    util::make_tricky_tree(&a);
    let b = data.join("ssl-secret-dle-name");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(
        b.join("notes.txt"),
        "a line a passer-by must not read\n".repeat(500),
    )
    .expect("write");
    fs::write(
        b.join("random.bin"),
        (0..300_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("write");
    vec![a, b]
}

/// Restores each of `dles` with `restore(dle, into)` into `data` (what it returns, such
/// as a tool's output, is not needed); each must be identical to its source.
fn assert_restores<R>(data: &Scratch, dles: &[PathBuf], restore: impl Fn(&Path, &Path) -> R) {
    for d in dles {
        let into = data.join(format!(
            "restored-{}",
            d.file_name().unwrap().to_string_lossy()
        ));
        restore(d, &into);
        util::assert_same_tree(d, &into, true);
    }
}

/// One small DLE in `data`, for the refusals.
fn one_dle(data: &Scratch) -> PathBuf {
    let d = data.join("d");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("f"), "x").expect("write");
    d
}

/// Asserts that `text` holds each of `needles`; `context` is printed with it otherwise.
fn assert_mentions(text: &str, needles: &[&str], context: &str) {
    for n in needles {
        assert!(text.contains(n), "no {n:?} in:\n{text}\n{context}");
    }
}

#[test]
fn ssl_real_amcheck_amdump_amfetchdump_against_our_amandad_restore_identical_and_encrypted() {
    let (_m, t) = ssl_machine!(Kind::Main);
    let data = Scratch::new("ssl-dles");
    let dles = dles(&data);
    let ours = start_ours_ssl(&ssl_dir(&t.client), "");
    let mut opts = ServerOptions::new("ssl", ours.port);
    opts.extra_conf = ssl_dir(&t.server);
    opts.extra_dumptype = SECLEVEL1.to_string();
    // The disklist host is the client certificate's CN (amssl's rule: the server checks the
    // fingerprint in remote/<host>/).
    let server = RealServer::new("127.0.0.1", &dles, &opts);
    let capture = Capture::start("lo", &format!("tcp port {}", ours.port));
    let (ok, out) = server.amcheck();
    assert!(
        ok && out.contains("0 problems found"),
        "amcheck over ssl:\n{out}\n{}",
        ours.log()
    );
    let (status, out, log) = server.amdump();
    let pcap = capture.stop();
    assert!(
        status.success(),
        "amdump over ssl ({status}):\n{out}\n{log}\n{}",
        ours.log()
    );
    assert_eq!(log.matches("DONE taper").count(), dles.len(), "{log}");
    assert_restores(&data, &dles, |d, into| server.restore(d, into));
    ssl_util::assert_nothing_in_clear(&pcap, &[&dles[0], &dles[1]]);
}

#[test]
fn ssl_our_dumper_backs_up_the_real_amandad_restore_identical_and_encrypted() {
    let (_m, t) = ssl_machine!(Kind::Main);
    let data = Scratch::new("ssl-dles");
    let dles = dles(&data);
    let real = RealSslAmandad::start("127.0.0.1", &ssl_dir(&t.client), None);
    let list = disklist("127.0.0.1", &dles, "s");
    let conf = DumperConf::new(
        "ssl-dumper",
        &ssl_dir(&t.server),
        &[Dt::new("s", "ssl", real.port, Program::Gnutar)],
        &list,
    );
    let capture = Capture::start("lo", &format!("tcp port {}", real.port));
    let (status, out) = conf.check(&[]);
    assert!(status.success(), "dumper check over ssl:\n{out}");
    let (status, report) = conf.run();
    let pcap = capture.stop();
    assert!(
        status.success(),
        "dumper run over ssl ({status}):\n{report}"
    );
    assert_eq!(report.matches("  OK").count(), dles.len(), "{report}");
    assert_restores(&data, &dles, |d, into| conf.restore("127.0.0.1", d, into));
    ssl_util::assert_nothing_in_clear(&pcap, &[&dles[0], &dles[1]]);
}

// ---------------------------------------------------------------------------------------
// Refusals by our amandad (the real amcheck is the server)

/// A copy of the other CA's `side` tree ("server" or "client") that trusts both CAs (so
/// only its peer refuses) and checks no fingerprint; and that CA file. The caller holds
/// `main` for the whole test: trees are made anew once nobody holds them, with a new CA.
fn other_ca_side(main: &Trees, work: &Scratch, side: &str) -> (PathBuf, PathBuf) {
    let other = trees(Kind::OtherCa);
    let from = if side == "server" {
        &other.server
    } else {
        &other.client
    };
    let tree = copy_tree(from, &work.join(side));
    fs::remove_dir_all(tree.join("remote")).expect("rm remote");
    let cas = ssl_util::both_cas(main, &other, &work.join("cas.pem"));
    (tree, cas)
}

/// A copy of the main `side` tree whose `remote/<peer>/fingerprint` holds another
/// certificate's line; and that file. The caller holds `main` (see [`other_ca_side`]).
fn wrong_fingerprint(main: &Trees, work: &Scratch, side: &str, peer: &str) -> (PathBuf, PathBuf) {
    let other = trees(Kind::OtherCa);
    let (from, wrong) = if side == "server" {
        (&main.server, &other.client)
    } else {
        (&main.client, &other.server)
    };
    let tree = copy_tree(from, &work.join(side));
    let fp = tree.join("remote").join(peer).join("fingerprint");
    let line = fingerprint_line(&wrong.join("me/crt.pem"));
    write_private(&fp, &format!("{line}\n"));
    (tree, fp)
}

/// The real amcheck against our amandad: the server side's ssl lines, our client conf and
/// settings. Returns amcheck's output and our amandad's log; amcheck must fail.
fn amcheck_refused(
    server_conf: &str,
    dumptype: &str,
    host: &str,
    client_conf: &str,
    settings: &str,
) -> (String, String) {
    let data = Scratch::new("ssl-dles");
    let d = one_dle(&data);
    let ours = start_ours_ssl(client_conf, settings);
    let mut opts = ServerOptions::new("ssl", ours.port);
    opts.extra_conf = server_conf.to_string();
    opts.extra_dumptype = format!("{SECLEVEL1}\n{dumptype}");
    let server = RealServer::new(host, &[d], &opts);
    let (ok, out) = server.amcheck();
    assert!(
        !ok,
        "amcheck passed where our amandad should refuse:\n{out}\n{}",
        ours.log()
    );
    (out, ours.log())
}

#[test]
fn ssl_our_amandad_refuses_a_server_certificate_of_another_ca() {
    let (_m, main) = ssl_machine!(Kind::Main);
    let work = Scratch::new("ssl-otherca");
    // The server presents a certificate of another CA, and trusts both CAs itself.
    let (s, cas) = other_ca_side(&main, &work, "server");
    let ca = format!("ssl-ca-cert-file \"{}\"", cas.display());
    let (out, log) = amcheck_refused(&ssl_dir(&s), &ca, "127.0.0.1", &ssl_dir(&main.client), "");
    // Our amandad's log names the CA check.
    let needles = ["certificate verify failed", "not a CA of the CA file"];
    assert_mentions(&log, &needles, &format!("amcheck:\n{out}"));
}

#[test]
fn ssl_our_amandad_refuses_a_server_whose_fingerprint_is_not_on_file() {
    let (_m, main) = ssl_machine!(Kind::Main);
    let work = Scratch::new("ssl-fp");
    let (c, fp) = wrong_fingerprint(&main, &work, "client", "localhost");
    let (out, log) = amcheck_refused(&ssl_dir(&main.server), "", "127.0.0.1", &ssl_dir(&c), "");
    // Our amandad's log names the fingerprint file.
    let needles = ["No fingerprint match", &fp.display().to_string()];
    assert_mentions(&log, &needles, &format!("amcheck:\n{out}"));
}

#[test]
fn ssl_our_amandad_refuses_a_server_certificate_whose_name_is_not_the_servers() {
    // The server's certificate says 127.0.0.2; the server connects from 127.0.0.1.
    let (_m, cn2) = ssl_machine!(Kind::ServerCn2);
    let (out, log) = amcheck_refused(
        &ssl_dir(&cn2.server),
        "",
        "127.0.0.1",
        &ssl_dir(&cn2.client),
        "",
    );
    // Our amandad's log has Amanda's text.
    let needles = ["Common name of certicate (127.0.0.2) doesn't resolv to IP (127.0.0.1:"];
    assert_mentions(&log, &needles, &format!("amcheck:\n{out}"));
}

#[test]
fn ssl_our_amandad_refuses_a_server_whose_certificate_name_is_not_in_amandahosts() {
    let (_m, main) = ssl_machine!(Kind::Main);
    let work = Scratch::new("ssl-hosts");
    let hosts = work.join("amandahosts");
    write_private(&hosts, "otherhost backup amdump\n");
    let settings = format!("amandahosts_path = \"{}\"", hosts.display());
    let (out, _log) = amcheck_refused(
        &ssl_dir(&main.server),
        "",
        "127.0.0.1",
        &ssl_dir(&main.client),
        &settings,
    );
    // The certificate's CN (localhost) is the name .amandahosts is searched for: amcheck
    // shows our NAK naming it.
    let needles = ["user backup from localhost is not allowed to execute the service noop"];
    assert_mentions(&out, &needles, "");
}

// ---------------------------------------------------------------------------------------
// Refusals by our dumper (the real amandad is the client)

/// `dumper check` against the real amandad (`bind`, client conf, .amandahosts) with our
/// server-side ssl lines; it must fail, and its output mention each of `needles`.
fn check_refused(
    bind: &str,
    client_conf: &str,
    hosts: Option<&str>,
    server_conf: &str,
    needles: &[&str],
) {
    let data = Scratch::new("ssl-dles");
    let d = one_dle(&data);
    let real = RealSslAmandad::start(bind, client_conf, hosts);
    let conf = DumperConf::new(
        "ssl-refused",
        server_conf,
        &[Dt::new("s", "ssl", real.port, Program::Gnutar)],
        &[(bind, d.as_path(), "s")],
    );
    let (status, out) = conf.check(&[]);
    assert!(
        !status.success(),
        "dumper check passed where it should refuse:\n{out}"
    );
    assert_mentions(&out, needles, "");
}

#[test]
fn ssl_our_dumper_refuses_a_client_certificate_of_another_ca() {
    let (_m, main) = ssl_machine!(Kind::Main);
    let work = Scratch::new("ssl-otherca");
    let (c, cas) = other_ca_side(&main, &work, "client");
    let client_conf = format!("{}\nssl-ca-cert-file \"{}\"", ssl_dir(&c), cas.display());
    // dumper check names the CA check.
    let needles = [
        "SSL_connect failed: certificate verify failed",
        "CN=amanda-rs-other-ca",
        "not a CA of the CA file",
    ];
    check_refused(
        "127.0.0.1",
        &client_conf,
        None,
        &ssl_dir(&main.server),
        &needles,
    );
}

#[test]
fn ssl_our_dumper_refuses_a_client_whose_fingerprint_is_not_on_file() {
    let (_m, main) = ssl_machine!(Kind::Main);
    let work = Scratch::new("ssl-fp");
    let (s, fp) = wrong_fingerprint(&main, &work, "server", "127.0.0.1");
    // dumper check names the fingerprint file.
    let needles = ["No fingerprint match", &fp.display().to_string()];
    check_refused(
        "127.0.0.1",
        &ssl_dir(&main.client),
        None,
        &ssl_dir(&s),
        &needles,
    );
}

/// Refusals of our dumper by or of the real amandad with the main certificate trees as they
/// are: `test name: (the real amandad's address, its .amandahosts, what dumper check says)`.
macro_rules! main_trees_refusals {
    ($($(#[$doc:meta])* $name:ident: ($bind:expr, $hosts:expr, $needle:expr);)*) => {$(
        $(#[$doc])*
        #[test]
        fn $name() {
            let (_m, main) = ssl_machine!(Kind::Main);
            let (client, server) = (ssl_dir(&main.client), ssl_dir(&main.server));
            check_refused($bind, &client, $hosts, &server, &[$needle]);
        }
    )*};
}

main_trees_refusals! {
    /// The client listens on 127.0.0.2; its certificate says 127.0.0.1: Amanda's text.
    ssl_our_dumper_refuses_a_client_certificate_whose_name_is_not_the_host: (
        "127.0.0.2",
        None,
        "Common name of certicate (127.0.0.1) doesn't resolv to IP (127.0.0.2:"
    );
    /// The real amandad's NAK names our certificate's CN.
    ssl_our_dumper_is_refused_by_a_client_whose_amandahosts_lacks_its_name: (
        "127.0.0.1",
        Some("otherhost backup amdump\n"),
        "user backup from localhost is not allowed to execute the service noop"
    );
}

// ---------------------------------------------------------------------------------------
// Through a NAT that rewrites source ports

#[test]
fn ssl_passes_a_port_rewriting_nat_where_bsdtcp_is_refused_not_secure() {
    require_ssl_tools!();
    let Some(net) = Topology::create() else {
        return;
    };
    let _m = util::lock_amdump_machine();
    util::ensure_amandahosts_line("198.18.1.254 backup amdump");
    // The router hides the server behind its own address and new source ports.
    net.nft(
        &net.router,
        "table ip nat {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 198.18.0.0/24 ip daddr 198.18.1.0/24 ip protocol tcp masquerade to :20000-30000\n  }\n}\n",
    )
    .expect("NAT on the router");
    let t = trees(Kind::Main);
    let data = Scratch::new("ssl-nat");
    let dles = dles(&data);
    // Our amandad in the client namespace: bsdtcp on 10080, ssl on 10081. Behind a NAT the
    // peer's address has no name and the server's certificate names another host.
    let client_conf = data.join("amanda-client.conf");
    fs::write(
        &client_conf,
        format!(
            "{}\nssl-check-host no\nssl-check-certificate-host no\n",
            ssl_dir(&t.client)
        ),
    )
    .expect("conf");
    util::chown_amanda(data.path());
    let runtar = util::install_runtar();
    let bin = util::workspace_bin("amandad").display().to_string();
    let settings = runtar.settings().display().to_string();
    for (auth, port) in [("bsdtcp", 10080), ("ssl", 10081)] {
        let log = data
            .join(format!("amandad-{auth}.log"))
            .display()
            .to_string();
        let listen = format!("tcp:{CLIENT_IP}:{port}");
        let conf = client_conf.display().to_string();
        net.spawn(
            &net.client,
            &bin,
            &[
                &format!("-auth={auth}"),
                "amdump",
                "--log",
                &log,
                "--listen",
                &listen,
                "--settings",
                &settings,
                "--client-conf",
                &conf,
            ],
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let host = CLIENT_IP.to_string();
    let make = |auth: &str, port: u16, globals: &str, extra: &str| {
        let list = disklist(host.as_str(), &dles, "n");
        let mut c = DumperConf::new(
            &format!("ssl-nat-{auth}"),
            globals,
            &[Dt {
                name: "n",
                auth,
                port,
                program: Program::Gnutar,
                extra,
            }],
            &list,
        );
        c.netns = Some(net.server.clone());
        c
    };
    let bsdtcp = make("bsdtcp", 10080, "", "");
    let (status, out) = bsdtcp.check(&[]);
    assert!(
        !status.success() && out.contains("not secure"),
        "bsdtcp through the NAT:\n{out}"
    );
    let ssl = make(
        "ssl",
        10081,
        &ssl_dir(&t.server),
        "    ssl-check-certificate-host no\n",
    );
    let (status, out) = ssl.check(&[]);
    let log = fs::read_to_string(data.join("amandad-ssl.log")).unwrap_or_default();
    assert!(
        status.success(),
        "ssl through the NAT, dumper check:\n{out}\n{log}"
    );
    let (status, report) = ssl.run();
    assert!(
        status.success(),
        "ssl through the NAT, dumper run:\n{report}\n{log}"
    );
    assert_restores(&data, &dles, |d, into| ssl.restore(&host, d, into));
    drop(runtar);
}
