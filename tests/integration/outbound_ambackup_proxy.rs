//! Issue 14: our `ambackup` reaches the server's listener through an HTTP CONNECT proxy
//! (Debian's real tinyproxy, a private instance on loopback), with the settings
//! `amandad --dial-out` and dumper use (`[proxy] url`, `https_proxy`, `no_proxy`).
//!
//! - auth ssl through the proxy: backup, `dumper restore` identical, and the proxy's log
//!   shows the tunnel;
//! - a proxy whose rule refuses the listener's port: the error names the proxy and its 403;
//! - auth bsdtcp through a proxy is not tried: the server would see the proxy's source
//!   port, never a reserved one, and the error says to use auth ssl.

use std::fs;
use std::path::PathBuf;

use crate::ssl_util::{Kind, trees};
use crate::util::ambackup::{AMBACKUP, AmbackupLab, Client, Listener, SslTrees};
use crate::util::tinyproxy::{TINYPROXY, Tinyproxy};
use crate::util::{self, Scratch};
use crate::{require_root, require_tool};

/// What every test here needs, or a loud skip (a failure under CI).
macro_rules! require_lab {
    () => {
        require_root!();
        require_tool!(AMBACKUP);
        require_tool!(TINYPROXY);
        require_tool!(util::INETD);
        require_tool!("/usr/sbin/amssl");
        require_tool!("/usr/bin/openssl");
    };
}

/// One DLE (the tricky tree) of host 127.0.0.1, backed up by our ambackup over `auth`
/// (`ssl`: the client is named by its certificate's CN) to an inetd-run listener.
fn ambackup_lab(tag: &str, ssl: bool) -> (Scratch, Vec<PathBuf>, AmbackupLab, Option<impl Sized>) {
    let data = Scratch::new(&format!("{tag}-data"));
    let dle = data.join("tricky");
    util::make_tricky_tree(&dle);
    let dles = vec![dle];
    let t = ssl.then(|| trees(Kind::Main));
    let lab = AmbackupLab::loopback(
        tag,
        if ssl { "127.0.0.1" } else { "localhost" },
        &dles,
        "127.0.0.1 backup noop ambackupd\nlocalhost backup noop ambackupd\n",
        Listener::Inetd,
        t.as_ref().map(|t| SslTrees {
            server: &t.server,
            client: &t.client,
        }),
    );
    (data, dles, lab, t)
}

/// Our ambackup with `[proxy] url` set to `proxy`'s (a settings file of its own).
fn ours_through(lab: &AmbackupLab, proxy: &Tinyproxy, args: &[&str]) -> (bool, String) {
    let settings = lab.conf.work.join("ambackup-proxy.toml");
    fs::write(&settings, format!("[proxy]\nurl = \"{}\"\n", proxy.url())).expect("settings");
    let settings = settings.display().to_string();
    let mut all = vec!["--settings", settings.as_str()];
    all.extend_from_slice(args);
    let (st, out) = lab.client(Client::Ours, &all);
    (st.success(), out)
}

// issue 14: our ambackup over ssl through tinyproxy backs up, the dump restores identical,
// and the proxy's log shows the tunnel to the listener.
#[test]
fn outbound_ambackup_ours_over_ssl_through_tinyproxy_backs_up_and_restores_identical() {
    require_lab!();
    let (_data, dles, lab, _t) = ambackup_lab("outbound-abp-ssl", true);
    let proxy = Tinyproxy::start(lab.port);
    let (ok, out) = ours_through(&lab, &proxy, &["backup"]);
    assert!(
        ok,
        "ambackup backup through the proxy:\n{out}\n{}\n{}",
        lab.log(),
        proxy.log()
    );
    for d in &dles {
        let want = format!("backup done: {}", d.display());
        assert!(out.lines().any(|l| l == want), "no {want:?} in:\n{out}");
        let into = lab.conf.work.join("restore");
        lab.conf.restore("127.0.0.1", d, &into);
        util::assert_same_tree(d, &into, false);
    }
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", lab.port);
    assert!(
        proxy.log().contains(&connect),
        "tinyproxy's log shows the tunnel ({connect:?}):\n{}",
        proxy.log()
    );
}

// issue 14: a proxy that does not allow the listener's port: ambackup fails naming the
// proxy and its 403; bsdtcp through a proxy is refused before any connection, saying why.
#[test]
fn outbound_ambackup_ours_refused_by_the_proxy_names_its_403_and_bsdtcp_says_use_ssl() {
    require_lab!();
    let (_data, _dles, lab, _t) = ambackup_lab("outbound-abp-403", true);
    let proxy = Tinyproxy::start(lab.port + 1);
    let (ok, out) = ours_through(&lab, &proxy, &["list"]);
    let want = format!(
        "through HTTP proxy 127.0.0.1:{} (from proxy.url): HTTP proxy 127.0.0.1:{} refused the tunnel to 127.0.0.1:{}: \"HTTP/1.1 403 Access violation\"",
        proxy.port, proxy.port, lab.port
    );
    assert!(
        !ok && out.contains(&want),
        "ambackup names the proxy's 403:\nwanted: {want}\n{out}\n{}",
        proxy.log()
    );
    drop(lab);

    let (_data, _dles, lab, _t) = ambackup_lab("outbound-abp-bsdtcp", false);
    let proxy = Tinyproxy::start(lab.port);
    let (ok, out) = ours_through(&lab, &proxy, &["list"]);
    let want = format!(
        "auth bsdtcp cannot go through HTTP proxy 127.0.0.1:{} (from proxy.url): the server would see the proxy's address and source port",
        proxy.port
    );
    assert!(
        !ok && out.contains(&want) && out.contains("use auth \"ssl\""),
        "ambackup says why bsdtcp cannot go through a proxy:\nwanted: {want}\n{out}"
    );
    assert!(
        !proxy.log().contains("CONNECT 127.0.0.1"),
        "nothing was tried through the proxy:\n{}",
        proxy.log()
    );
}
