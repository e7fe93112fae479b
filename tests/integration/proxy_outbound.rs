//! Issue 14, HTTP CONNECT proxies: our dumper reaches our amandad through Debian's real
//! tinyproxy (a private instance on a loopback port with its own configuration and log,
//! never the system service).
//!
//! - auth ssl through the proxy: `dumper check`, `dumper run`, `dumper restore` identical,
//!   and tinyproxy's log shows the CONNECT to the client's port;
//! - a proxy whose rules refuse the client's port: `dumper check` names the proxy and its
//!   403;
//! - auth bsdtcp through the proxy: amandad sees the proxy's source port and refuses it
//!   (`port N not secure`), and the error tells the admin to use auth ssl;
//! - a proxy that accepts and never answers: the attempt ends after
//!   `proxy.answer_timeout_secs`, naming the proxy and the wait;
//! - squid with `read_timeout 20 seconds`: an ssl dump quiet for 60 s passes with the
//!   heartbeat our amandad grants on the noop (`dumper.proxy_heartbeat_secs`) and fails
//!   without it; the real amandad through the same squid takes the ask on its noop, grants
//!   nothing, never gets a heartbeat, and check, run and restore pass;
//! - a scripted client behind tinyproxy that holds its selfcheck reply: it gets heartbeat
//!   frames only when its noop reply granted them.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ssl_util::{Kind, OursSsl, RealSslAmandad, Trees, start_ours_ssl, trees};
use crate::util::squid::{LocalSquid, SQUID};
use crate::util::{self, Dt, DumperConf, Launch, Program, Scratch, disklist};
use crate::{require_root, require_tool};

use crate::util::tinyproxy::{TINYPROXY, Tinyproxy};

/// The start of the proxy tests: the tools they need, or a loud skip (a failure under CI);
/// then the machine lock ([`util::lock_amdump_machine`]).
macro_rules! proxy_machine {
    () => {{
        require_root!();
        require_tool!(TINYPROXY);
        require_tool!(util::INETD);
        require_tool!("/usr/sbin/amssl");
        require_tool!("/usr/bin/openssl");
        util::lock_amdump_machine()
    }};
}

/// Two DLEs: the tricky tree and a plain directory.
fn dles(data: &Scratch) -> Vec<PathBuf> {
    let a = data.join("tricky");
    util::make_tricky_tree(&a);
    let b = data.join("plain");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(b.join("notes.txt"), "through the proxy\n".repeat(2000)).expect("write");
    vec![a, b]
}

/// The dumptype `p` of [`conf`]: gnutar with `auth` to 127.0.0.1:`port`.
fn dt(auth: &str, port: u16) -> Dt<'_> {
    Dt::new("p", auth, port, Program::Gnutar)
}

/// A dumper configuration for `dles` with the dumptype `dt` (named `p`), one connect try,
/// going through `proxy_url` (`AMANDA_RS_PROXY__URL`; empty: `https_proxy` is set instead),
/// with exceptions the environment cannot widen.
fn conf(
    tag: &str,
    dt: Dt<'_>,
    globals: &str,
    dles: &[PathBuf],
    proxy: &str,
    by_env: bool,
) -> DumperConf {
    let list = disklist("127.0.0.1", dles, dt.name);
    let mut c = DumperConf::new(tag, &format!("connect-tries 1\n{globals}"), &[dt], &list);
    let var = if by_env {
        "https_proxy"
    } else {
        "AMANDA_RS_PROXY__URL"
    };
    c.env.push((var.into(), proxy.into()));
    // The runner's own no_proxy (often "localhost,127.0.0.1") must not bypass the proxy.
    c.env.push((
        "AMANDA_RS_PROXY__NO_PROXY".into(),
        "no-such-host.invalid".into(),
    ));
    c
}

/// `dumper restore` of each of `dles` into `data`, each identical to its source.
fn restore_all_identical(c: &DumperConf, data: &Scratch, dles: &[PathBuf]) {
    for d in dles {
        let into = data.join(format!(
            "restored-{}",
            d.file_name().unwrap().to_string_lossy()
        ));
        c.restore("127.0.0.1", d, &into);
        util::assert_same_tree(d, &into, true);
    }
}

fn ssl_dir(tree: &Path) -> String {
    format!("ssl-dir \"{}\"", tree.display())
}

/// The main certificate trees, and [`dles`] in a scratch directory named after `tag`.
fn trees_and_dles(tag: &str) -> (Arc<Trees>, Scratch, Vec<PathBuf>) {
    let t = trees(Kind::Main);
    let data = Scratch::new(tag);
    let dles = dles(&data);
    (t, data, dles)
}

/// Our amandad over auth ssl with the client's tree of `t`.
fn ours_ssl(t: &Trees) -> OursSsl {
    start_ours_ssl(&ssl_dir(&t.client), "")
}

/// [`conf`] for auth ssl with the server's tree of `t`.
fn ssl_conf(
    tag: &str,
    port: u16,
    t: &Trees,
    dles: &[PathBuf],
    proxy: &str,
    by_env: bool,
) -> DumperConf {
    conf(
        tag,
        dt("ssl", port),
        &ssl_dir(&t.server),
        dles,
        proxy,
        by_env,
    )
}

#[test]
fn outbound_ssl_through_tinyproxy_check_run_restore_identical_and_the_proxy_logs_the_connect() {
    let _m = proxy_machine!();
    let (t, data, dles) = trees_and_dles("proxy-dles");
    let ours = ours_ssl(&t);
    let proxy = Tinyproxy::start(ours.port);
    // check through https_proxy, the night through the setting.
    let by_env = ssl_conf("proxy-ssl-env", ours.port, &t, &dles, &proxy.url(), true);
    let (status, out) = by_env.check(&[]);
    assert!(
        status.success(),
        "dumper check through the proxy:\n{out}\n{}",
        ours.log()
    );
    assert!(
        out.contains(&format!(
            "OK      through HTTP proxy 127.0.0.1:{} (from https_proxy)",
            proxy.port
        )),
        "dumper check says which way the client is reached:\n{out}"
    );
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", ours.port);
    assert!(
        proxy.log().contains(&connect),
        "tinyproxy's log shows no {connect:?} after dumper check:\n{}",
        proxy.log()
    );
    let tunnels_after_check = proxy.log().matches(&connect).count();
    let night = ssl_conf("proxy-ssl", ours.port, &t, &dles, &proxy.url(), false);
    let (status, report) = night.run();
    assert!(
        status.success(),
        "dumper run through the proxy ({status}):\n{report}\n{}",
        ours.log()
    );
    assert_eq!(report.matches("  OK").count(), dles.len(), "{report}");
    assert!(
        proxy.log().matches(&connect).count() > tunnels_after_check,
        "the night's connections went through the proxy:\n{}",
        proxy.log()
    );
    restore_all_identical(&night, &data, &dles);
}

#[test]
fn outbound_proxy_refusing_the_clients_port_gives_dumper_check_the_403() {
    let _m = proxy_machine!();
    let (t, _data, dles) = trees_and_dles("proxy-403");
    let ours = ours_ssl(&t);
    // The proxy allows CONNECT to another port only.
    let other = util::free_port();
    let proxy = Tinyproxy::start(other);
    let c = ssl_conf("proxy-403", ours.port, &t, &dles, &proxy.url(), false);
    let (status, out) = c.check(&[]);
    assert!(!status.success(), "dumper check passed:\n{out}");
    let want = format!(
        "through HTTP proxy 127.0.0.1:{} (from proxy.url): HTTP proxy 127.0.0.1:{} refused the tunnel to 127.0.0.1:{}: \"HTTP/1.1 403 Access violation\"",
        proxy.port, proxy.port, ours.port
    );
    assert!(
        out.contains(&want) && out.contains("the proxy's rules do not allow CONNECT"),
        "dumper check names the proxy's 403:\n{out}\nwanted: {want}"
    );
}

#[test]
fn outbound_bsdtcp_through_a_proxy_is_refused_not_secure_and_the_error_says_use_ssl() {
    let _m = proxy_machine!();
    let data = Scratch::new("proxy-bsdtcp");
    let dles = dles(&data);
    let ours = util::start_ours("bsdtcp", Launch::Inetd);
    let proxy = Tinyproxy::start(ours.port);
    let c = conf(
        "proxy-bsdtcp",
        dt("bsdtcp", ours.port),
        "",
        &dles,
        &proxy.url(),
        false,
    );
    let (status, out) = c.check(&[]);
    assert!(!status.success(), "dumper check passed:\n{out}");
    assert!(
        out.contains("not secure")
            && out.contains(&format!("went through HTTP proxy 127.0.0.1:{}", proxy.port))
            && out.contains("use auth \"ssl\""),
        "bsdtcp through the proxy is refused by amandad's reserved-port check, and the error says why:\n{out}\n{}",
        ours.log()
    );
}

#[test]
fn outbound_a_silent_proxy_ends_the_attempt_naming_the_proxy_and_the_wait() {
    require_root!();
    let _m = util::lock_amdump_machine();
    let data = Scratch::new("proxy-silent");
    let dles = dles(&data);
    // Accepts (the kernel does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut c = conf(
        "proxy-silent",
        dt("bsdtcp", util::free_port()),
        "",
        &dles,
        &format!("http://{addr}"),
        false,
    );
    c.env
        .push(("AMANDA_RS_PROXY__ANSWER_TIMEOUT_SECS".into(), "2".into()));
    // The first call builds the binaries; the bound below is for the check alone.
    let _ = util::workspace_bin("dumper");
    let started = std::time::Instant::now();
    let (status, out) = c.check(&[]);
    assert!(!status.success(), "dumper check passed:\n{out}");
    assert!(
        out.contains(&format!(
            "HTTP proxy {addr} did not answer the CONNECT within 2 s"
        )),
        "dumper check names the silent proxy and the wait:\n{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a 2 s answer timeout and one connect try took {:?}:\n{out}",
        started.elapsed()
    );
    drop(silent);
}

/// The dumper's debug lines about the proxied connections' heartbeat.
const HEARTBEAT_LOG: (&str, &str) = ("AMANDA_RS_LOG", "warn,dumper::net::control=debug");

/// One ssl DLE whose client-side filter says nothing for 60 s, dumped by our amandad
/// through squid (`read_timeout 20 seconds`) with `dumper.proxy_heartbeat_secs` 10 or 0.
/// Whether the night passed, its report with the logs, and how long squid's longest tunnel
/// lasted.
fn quiet_ssl_dump_through_squid(t: &Trees, heartbeat: bool) -> (bool, String, Duration) {
    let tag = if heartbeat {
        "proxy-squid-hb"
    } else {
        "proxy-squid-nohb"
    };
    let data = Scratch::new(tag);
    let dle = data.join("quiet");
    fs::create_dir_all(&dle).expect("mkdir");
    fs::write(dle.join("notes.txt"), "quiet through squid\n".repeat(500)).expect("write");
    // The client's "compression": silent for 60 s, then the bytes as they are.
    let filter = data.join("quiet-filter");
    fs::write(&filter, "#!/bin/sh\nsleep 60\nexec /bin/cat\n").expect("write filter");
    fs::set_permissions(&filter, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod filter");
    util::chown_amanda(data.path());
    let ours = ours_ssl(t);
    let squid = LocalSquid::start(&format!("{tag}-squid"), ours.port);
    let extra = format!(
        "    compress client custom\n    client_custom_compress \"{}\"\n",
        filter.display()
    );
    let mut c = conf(
        tag,
        Dt {
            extra: &extra,
            ..dt("ssl", ours.port)
        },
        &ssl_dir(&t.server),
        &[dle],
        &squid.url(),
        false,
    );
    c.env.push((
        "AMANDA_RS_DUMPER__PROXY_HEARTBEAT_SECS".into(),
        if heartbeat { "10" } else { "0" }.into(),
    ));
    c.env.push((HEARTBEAT_LOG.0.into(), HEARTBEAT_LOG.1.into()));
    let (status, report) = c.run();
    // squid's access log: `<end time> <elapsed ms> <client> TCP_TUNNEL/200 ...`.
    let longest = squid
        .access_log()
        .lines()
        .filter(|l| l.contains("TCP_TUNNEL"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
        .map_or(Duration::ZERO, Duration::from_millis);
    (
        status.success() && report.matches("  OK").count() == 1,
        format!("{report}\n{}\n{}", ours.log(), squid.logs()),
        longest,
    )
}

// issue 14: TCP keepalive stops at the proxy; the heartbeat our amandad grants on the
// noop keeps a quiet dump's tunnel open through squid's read_timeout, and without it
// squid closes the tunnel.
#[test]
fn outbound_ssl_dump_quiet_for_60s_through_squid_read_timeout_20s_passes_with_the_heartbeat_and_fails_without()
 {
    let _m = proxy_machine!();
    require_tool!(SQUID);
    let t = trees(Kind::Main);
    let (ok, report, longest) = quiet_ssl_dump_through_squid(&t, true);
    assert!(ok, "with the heartbeat the quiet dump must pass:\n{report}");
    assert!(
        longest >= Duration::from_secs(60),
        "the dump's tunnel lasted {longest:?}, through the 60 s of quiet:\n{report}"
    );
    assert!(
        report.contains("session heartbeat every 10 s through the proxy"),
        "our amandad granted the heartbeat:\n{report}"
    );
    assert!(
        report.contains("CONNECT 127.0.0.1:"),
        "squid's log shows the tunnels:\n{report}"
    );
    let (ok, report, longest) = quiet_ssl_dump_through_squid(&t, false);
    util::squid::assert_cut_by_read_timeout(ok, &report);
    assert!(
        longest < Duration::from_secs(60)
            && longest >= util::squid::READ_TIMEOUT - Duration::from_secs(2),
        "squid closed the quiet tunnel after its read_timeout, not {longest:?}:\n{report}"
    );
}

// issue 14: the real Amanda 3.5.1 amandad through the same squid: its noop takes the
// heartbeat ask (`heartbeat=10;` in OPTIONS) and answers as always, so the dumper sends it
// no heartbeat; check, run and restore pass.
#[test]
fn outbound_real_amandad_through_squid_ignores_the_heartbeat_ask_and_check_run_restore_pass() {
    let _m = proxy_machine!();
    require_tool!(SQUID);
    require_tool!("/usr/lib/amanda/amandad");
    let (t, data, dles) = trees_and_dles("proxy-real");
    let real = RealSslAmandad::start("127.0.0.1", &ssl_dir(&t.client), None);
    let squid = LocalSquid::start("proxy-real-squid", real.port);
    let mut c = ssl_conf("proxy-real", real.port, &t, &dles, &squid.url(), false);
    c.env.push((HEARTBEAT_LOG.0.into(), HEARTBEAT_LOG.1.into()));
    let asked =
        "no session heartbeat through the proxy (asked 10 s; the client's noop did not grant it)";
    let (status, out) = c.check(&[]);
    assert!(
        status.success() && out.contains(asked),
        "dumper check through squid asked and the real noop granted nothing:\n{out}\n{}",
        squid.logs()
    );
    let (status, report) = c.run();
    assert!(
        status.success() && report.contains(asked),
        "dumper run through squid ({status}):\n{report}\n{}",
        squid.logs()
    );
    assert_eq!(report.matches("  OK").count(), dles.len(), "{report}");
    assert!(
        !report.contains("session heartbeat every"),
        "the real amandad got no heartbeat:\n{report}"
    );
    assert!(
        squid
            .access_log()
            .contains(&format!("CONNECT 127.0.0.1:{}", real.port)),
        "squid's log shows the tunnels:\n{}",
        squid.logs()
    );
    restore_all_identical(&c, &data, &dles);
}

/// What a [`scripted_client`] got: the noop's body, and the handle of every frame that came
/// while it held its second reply.
struct Got {
    noop: String,
    held_frames: Vec<u32>,
}

/// A bsdtcp client on a free 127.0.0.1 port for one connection: it answers the noop as the
/// real amandad does (granting the heartbeat in its reply when `grant`), then holds the
/// next request's reply for `hold`, recording every frame that comes meanwhile.
fn scripted_client(grant: bool, hold: Duration) -> (u16, std::thread::JoinHandle<Got>) {
    use proto::frame::FrameReader;
    use proto::pkt::PacketType;
    use proto::tcp::Packet;
    use std::io::Read;
    use util::fake_amandad::{frame, send_packet, take_packet};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let features = proto::features::Features::amanda_3_5_1().to_hex();
        let mut got = Got {
            noop: String::new(),
            held_frames: Vec::new(),
        };
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 65536];
        let mut held_since: Option<std::time::Instant> = None;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if held_since.is_some_and(|t| t.elapsed() >= hold) {
                break;
            }
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => continue,
            };
            let mut input = &buf[..n];
            while let Ok(Some(f)) = reader.next(&mut input) {
                if held_since.is_some() {
                    got.held_frames.push(f.handle);
                    continue;
                }
                let Some((ptype, body)) = take_packet(&mut s, &f) else {
                    continue;
                };
                match ptype {
                    PacketType::Req => {
                        if !body.starts_with("SERVICE noop") {
                            held_since = Some(std::time::Instant::now());
                            continue;
                        }
                        let mut rep = format!("OPTIONS features={features};\n").into_bytes();
                        if grant && let Some(every) = proto::heartbeat::asked(body.as_bytes()) {
                            rep = proto::heartbeat::grant(rep, every);
                        }
                        got.noop = body;
                        let _ = send_packet(&mut s, f.handle, Packet::new(PacketType::Rep, rep));
                    }
                    // The noop's REP was ACKed: its handle is closed.
                    PacketType::Ack => {
                        let _ = frame(&mut s, f.handle, &[]);
                    }
                    _ => {}
                }
            }
        }
        got
    });
    (port, thread)
}

/// `dumper check` of one bsdtcp DLE through tinyproxy to a [`scripted_client`] that holds
/// its selfcheck reply for 5 s, with `dumper.proxy_heartbeat_secs` 1.
fn check_against_scripted_client(grant: bool) -> Got {
    let data = Scratch::new("proxy-scripted");
    let dles = dles(&data);
    let (port, client) = scripted_client(grant, Duration::from_secs(5));
    let proxy = Tinyproxy::start(port);
    let mut c = conf(
        "proxy-scripted",
        dt("bsdtcp", port),
        "",
        &dles[..1],
        &proxy.url(),
        false,
    );
    c.env
        .push(("AMANDA_RS_DUMPER__PROXY_HEARTBEAT_SECS".into(), "1".into()));
    // The verdict does not matter (the client's selfcheck reply never comes); its frames do.
    let _ = c.check(&[]);
    client.join().expect("the scripted client")
}

// issue 14: a client that does not grant the heartbeat on its noop (as the real amandad
// never does) gets no heartbeat frame however long the dumper waits; one that grants it gets
// one about every interval.
#[test]
fn outbound_heartbeat_frames_reach_only_a_client_whose_noop_granted_them() {
    let _m = proxy_machine!();
    let beat = proto::dialin::LINE_HANDLE;
    let got = check_against_scripted_client(false);
    assert!(
        got.noop.contains(";heartbeat=1;"),
        "the noop through the proxy asked for the heartbeat: {:?}",
        got.noop
    );
    assert!(
        !got.held_frames.contains(&beat),
        "a client that granted nothing got heartbeat frames: {:?}",
        got.held_frames
    );
    let got = check_against_scripted_client(true);
    let beats = got.held_frames.iter().filter(|&&h| h == beat).count();
    assert!(
        (3..=7).contains(&beats),
        "a client that granted a 1 s heartbeat got {beats} in 5 s: {:?}",
        got.held_frames
    );
}
