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
//!   `proxy.answer_timeout_secs`, naming the proxy and the wait.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ssl_util::{Kind, Trees, start_ours_ssl, trees};
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

/// A dumper configuration for `dles` on 127.0.0.1:`port` with `auth`, one connect try,
/// going through `proxy_url` (`AMANDA_RS_PROXY__URL`; empty: `https_proxy` is set instead),
/// with exceptions the environment cannot widen.
fn conf(
    tag: &str,
    auth: &str,
    port: u16,
    globals: &str,
    dles: &[PathBuf],
    proxy: &str,
    by_env: bool,
) -> DumperConf {
    let list = disklist("127.0.0.1", dles, "p");
    let mut c = DumperConf::new(
        tag,
        &format!("connect-tries 1\n{globals}"),
        &[Dt {
            name: "p",
            auth,
            port,
            program: Program::Gnutar,
            extra: "",
        }],
        &list,
    );
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

fn ssl_dir(tree: &Path) -> String {
    format!("ssl-dir \"{}\"", tree.display())
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
    conf(tag, "ssl", port, &ssl_dir(&t.server), dles, proxy, by_env)
}

#[test]
fn outbound_ssl_through_tinyproxy_check_run_restore_identical_and_the_proxy_logs_the_connect() {
    let _m = proxy_machine!();
    let t = trees(Kind::Main);
    let data = Scratch::new("proxy-dles");
    let dles = dles(&data);
    let ours = start_ours_ssl(&ssl_dir(&t.client), "");
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
    for d in &dles {
        let into = data.join(format!(
            "restored-{}",
            d.file_name().unwrap().to_string_lossy()
        ));
        night.restore("127.0.0.1", d, &into);
        util::assert_same_tree(d, &into, true);
    }
}

#[test]
fn outbound_proxy_refusing_the_clients_port_gives_dumper_check_the_403() {
    let _m = proxy_machine!();
    let t = trees(Kind::Main);
    let data = Scratch::new("proxy-403");
    let dles = dles(&data);
    let ours = start_ours_ssl(&ssl_dir(&t.client), "");
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
        "bsdtcp",
        ours.port,
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
        "bsdtcp",
        util::free_port(),
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
