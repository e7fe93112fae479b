//! Issue 14: a dial-in client that reaches the outside only through an HTTP CONNECT proxy
//! (`amandad --dial-out` with `https_proxy` or `[proxy] url`), against Debian's real
//! tinyproxy and squid run privately in the middle namespace.
//!
//! ```text
//!   server ns                  router ns (the proxy)              client ns
//!   198.18.0.1:10080           198.18.1.254:3128, CONNECT to      198.18.1.2, may reach
//!   dumper listen, run         198.18.0.1:10080 only; forwards    198.18.1.254:3128 only
//!                              nothing
//! ```
//!
//! - tinyproxy: a night of a few DLEs over the tunnels, `dumper restore` identical, the
//!   proxy's log shows the CONNECTs;
//! - squid with `read_timeout 20 seconds`: a dump quiet for 60 s passes with the dial-in
//!   heartbeat and fails without it;
//! - a proxy whose rules allow another port only: amandad's log names the proxy's 403 and
//!   redials with backoff; `dumper check` says the host holds no connection;
//! - squid's rule tightened (`-k reconfigure`) after a night (restored identical, the
//!   tunnels in squid's log) while the HOLD tunnel stays up:
//!   `dumper check --ports` names the proxy's 403, which the client reports on the HOLD.

use std::fs;
use std::time::{Duration, Instant};

use crate::netns::{SERVER_IP, Topology};
use crate::ssl_util;
use crate::util::dialin::{DialinLab, DialinOptions, DialinSsl, HOST};
use crate::util::squid::SQUID;
use crate::util::{self, AMANDA_USER, Scratch};
use crate::{require_root, require_tool};

const TINYPROXY: &str = "/usr/bin/tinyproxy";

/// The proxy's address, on the client's side of the middle namespace.
const PROXY_IP: &str = "198.18.1.254";
/// The proxy's port.
const PROXY_PORT: u16 = 3128;
/// Where the proxy's connections to the server come from.
const PROXY_OUT_IP: &str = "198.18.0.254";

/// The middle namespace forwards nothing: the proxy is the only way through.
const ROUTER_RULES: &str = "table inet fw {
  chain forward {
    type filter hook forward priority 0; policy drop;
  }
}
";

/// The client may open connections to the proxy's port only.
fn client_rules() -> String {
    format!(
        "table inet fw {{
  chain input {{
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
  }}
  chain output {{
    type filter hook output priority 0; policy drop;
    oif lo accept
    ct state established,related accept
    ip daddr {PROXY_IP} tcp dport {PROXY_PORT} accept
  }}
}}
"
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tinyproxy,
    Squid,
}

impl Kind {
    /// The proxy's program.
    fn program(self) -> &'static str {
        match self {
            Kind::Tinyproxy => TINYPROXY,
            Kind::Squid => SQUID,
        }
    }
}

/// A private proxy in the middle namespace (killed with the topology).
struct Proxy {
    kind: Kind,
    dir: Scratch,
}

impl Proxy {
    /// Starts `kind` on [`PROXY_IP`]:[`PROXY_PORT`], allowing CONNECT to `SERVER_IP:port`
    /// only.
    fn start(t: &Topology, kind: Kind, port: u16) -> Proxy {
        let dir = Scratch::new(match kind {
            Kind::Tinyproxy => "oproxy-tiny",
            Kind::Squid => "oproxy-squid",
        });
        let conf = dir.join("proxy.conf");
        fs::write(&conf, Proxy::conf_text(kind, &dir, port)).expect("proxy.conf");
        util::chown_amanda(dir.path());
        let conf = conf.display().to_string();
        let args = match kind {
            Kind::Tinyproxy => ["-d", "-c", &conf],
            Kind::Squid => ["-N", "-f", &conf],
        };
        t.spawn(&t.router, kind.program(), &args);
        let p = Proxy { kind, dir };
        let start = Instant::now();
        loop {
            let out = t.run(&t.router, "ss", &["-ltnH"]);
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{PROXY_IP}:{PROXY_PORT}")) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{kind:?} did not listen on {PROXY_IP}:{PROXY_PORT}:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The configuration allowing CONNECT to `SERVER_IP:port` only.
    fn conf_text(kind: Kind, dir: &Scratch, port: u16) -> String {
        let d = dir.path().display();
        match kind {
            Kind::Tinyproxy => format!(
                "User {AMANDA_USER}\nGroup {AMANDA_USER}\nPort {PROXY_PORT}\nListen {PROXY_IP}\n\
                 Timeout 600\nLogFile \"{d}/access.log\"\nLogLevel Info\nPidFile \"{d}/proxy.pid\"\n\
                 MaxClients 50\nAllow 198.18.1.0/24\nDisableViaHeader Yes\nConnectPort {port}\n"
            ),
            Kind::Squid => util::squid::conf(
                dir.path(),
                &format!("{PROXY_IP}:{PROXY_PORT}"),
                "198.18.1.0/24",
                &SERVER_IP.to_string(),
                port,
            ),
        }
    }

    /// Allows CONNECT to `port` only from now on (issue 14): `squid -k reconfigure`
    /// re-reads the rules and keeps the tunnels it relays (tinyproxy 1.11 run with `-d`
    /// dies on SIGHUP instead). Returns when squid listens again.
    fn allow_only(&self, t: &Topology, port: u16) {
        assert_eq!(self.kind, Kind::Squid, "only squid is reconfigured");
        let conf = self.dir.join("proxy.conf");
        fs::write(&conf, Proxy::conf_text(self.kind, &self.dir, port)).expect("proxy.conf");
        let listening = || {
            fs::read_to_string(self.dir.join("cache.log"))
                .unwrap_or_default()
                .matches("Accepting HTTP Socket connections")
                .count()
        };
        let before = listening();
        let conf = conf.display().to_string();
        let out = t.run(&t.router, SQUID, &["-k", "reconfigure", "-f", &conf]);
        assert!(out.status.success(), "squid -k reconfigure: {out:?}");
        let start = Instant::now();
        while listening() <= before {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "squid did not come back from its reconfigure:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://{PROXY_IP}:{PROXY_PORT}")
    }

    fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- {:?} access.log ---\n{}\n--- cache.log ---\n{}",
            self.kind,
            self.access_log(),
            fs::read_to_string(self.dir.join("cache.log")).unwrap_or_default()
        )
    }
}

/// The start of a test through the proxy `kind`: root, nft and the proxy's program, or a
/// loud skip (a failure under CI); then [`lab`] (without a topology: the skip as well).
macro_rules! proxy_lab {
    ($tag:expr, $dles:expr, $kind:expr, $($rest:expr),+ $(,)?) => {{
        require_root!();
        require_tool!("/usr/sbin/nft");
        require_tool!($kind.program());
        match lab($tag, $dles, $kind, $($rest),+) {
            Some(lab_and_proxy) => lab_and_proxy,
            None => return,
        }
    }};
}

/// The network, the proxy, the listener and the dialing client, over auth ssl when `ssl` is
/// given. The client finds the proxy through `https_proxy` (tinyproxy) or `[proxy] url`
/// (squid).
fn lab(
    tag: &str,
    dles: usize,
    kind: Kind,
    allowed_port: u16,
    extra_amandad_env: Vec<String>,
    ssl: Option<DialinSsl<'_>>,
) -> Option<(DialinLab, Proxy)> {
    let t = Topology::create()?;
    t.nft(&t.router, ROUTER_RULES).expect("router rules");
    t.nft(&t.client, &client_rules()).expect("client rules");
    let proxy = Proxy::start(&t, kind, allowed_port);
    let mut amandad_env = vec![match kind {
        Kind::Tinyproxy => format!("https_proxy={}", proxy.url()),
        Kind::Squid => format!("AMANDA_RS_PROXY__URL={}", proxy.url()),
    }];
    amandad_env.extend(extra_amandad_env);
    let lab = DialinLab::start_with(
        t,
        DialinOptions {
            tag,
            host: HOST,
            dles,
            seen_from: PROXY_OUT_IP,
            listener_env: vec![],
            amandad_env,
            dumptype_extra: "",
            conf_extra: "",
        },
        ssl,
    );
    Some((lab, proxy))
}

// issue 14: a dial-in night through tinyproxy, restored identical; the proxy saw the HOLD and
// the sessions as CONNECT tunnels.
#[test]
fn outbound_dialin_night_through_tinyproxy_restores_identical_and_the_proxy_logs_the_tunnels() {
    let (lab, proxy) = proxy_lab!("oproxy-tiny", 4, Kind::Tinyproxy, 10080, vec![], None);
    lab.wait_holding(Duration::from_secs(30));
    assert!(
        lab.amandad_log().contains(&format!(
            "through HTTP proxy {PROXY_IP}:{PROXY_PORT} (https_proxy)"
        )),
        "amandad says it went through the proxy:\n{}",
        lab.logs()
    );
    lab.night("full");
    lab.restore_all_identical();
    assert_tunnels(&lab, &proxy);
}

/// The proxy's log shows more tunnels to the listener than there are DLEs (the HOLD, the
/// estimates' and the dumps' sessions; squid logs a tunnel when it closes).
fn assert_tunnels(lab: &DialinLab, proxy: &Proxy) {
    let connect = format!("CONNECT {SERVER_IP}:10080 ");
    let tunnels = proxy.access_log().matches(&connect).count();
    assert!(
        tunnels > lab.dles.len(),
        "the proxy's log shows {tunnels} tunnels ({connect:?}):\n{}",
        proxy.logs()
    );
}

// issue 14: a proxy that refuses the listener's port: the client names the proxy's 403 and
// redials with backoff; the server can only say that the host holds no connection.
#[test]
fn outbound_dialin_refused_by_the_proxy_is_named_in_amandads_log_and_dumper_check_says_no_connection()
 {
    let (mut lab, proxy) = proxy_lab!("oproxy-403", 1, Kind::Tinyproxy, 10081, vec![], None);
    let want = format!(
        "through HTTP proxy {PROXY_IP}:{PROXY_PORT} (from https_proxy): HTTP proxy {PROXY_IP}:{PROXY_PORT} refused the tunnel to {SERVER_IP}:10080: \"HTTP/1.1 403 Access violation\""
    );
    let start = Instant::now();
    while lab.amandad_log().matches(&want).count() < 2 && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab.amandad_log();
    assert!(
        log.matches(&want).count() >= 2 && log.contains("dialing again in"),
        "amandad's log names the proxy's 403 and retries:\nwanted: {want}\n{}\n{}",
        lab.logs(),
        proxy.logs()
    );
    lab.conf
        .env
        .push(("AMANDA_RS_DUMPER__DIALIN_WAIT_SECS".into(), "3".into()));
    let (status, out) = lab.conf.check(&[]);
    assert!(!status.success(), "dumper check passed:\n{out}");
    assert!(
        out.contains(&format!(
            "{HOST}: no dial-in connection from the client (is amandad --dial-out running there?)"
        )),
        "dumper check says the host holds no connection:\n{out}"
    );
}

// issue 14: squid's rule tightened after a night, while the client's HOLD tunnel stays
// up: the session `dumper check --ports` asks for is refused by the proxy, the client
// reports that on the HOLD, and the check names the proxy and its 403 (instead of waiting
// out the session and pointing at the client's log).
#[test]
fn outbound_dialin_proxy_rule_tightened_while_held_dumper_check_ports_names_the_proxys_403() {
    let (lab, proxy) = proxy_lab!("oproxy-tight", 1, Kind::Squid, 10080, vec![], None);
    lab.wait_holding(Duration::from_secs(30));
    // The night through squid first: restored identical, its log shows the tunnels.
    lab.night("full");
    lab.restore_all_identical();
    assert_tunnels(&lab, &proxy);
    let holds = |log: &str| log.matches("dial-out: holding a connection").count();
    let held = holds(&lab.amandad_log());
    proxy.allow_only(&lab.t, 10081);
    let started = Instant::now();
    let (status, out) = lab.conf.check(&["--ports"]);
    let took = started.elapsed();
    let log = lab.amandad_log();
    assert!(!status.success(), "dumper check passed:\n{out}");
    let want = format!(
        "{HOST}: the client could not open the dial-in session: through HTTP proxy {PROXY_IP}:{PROXY_PORT} (from proxy.url): HTTP proxy {PROXY_IP}:{PROXY_PORT} refused the tunnel to {SERVER_IP}:10080: \"HTTP/1.1 403 Forbidden\""
    );
    let line = out
        .lines()
        .find(|l| l.contains("dial-in path:"))
        .unwrap_or_default();
    assert!(
        line.starts_with("  ERROR   dial-in path: ") && line.contains(&want),
        "dumper check --ports names the proxy's 403 on the dial-in path line:\nwanted: {want}\n{out}\n{}\n{}",
        lab.logs(),
        proxy.logs()
    );
    // Named, not waited out (the session wait is 60 s).
    assert!(
        took < Duration::from_secs(50),
        "check took {took:?}:\n{out}"
    );
    // The held tunnel stayed up all along: the refusal came over it.
    assert_eq!(
        holds(&log),
        held,
        "the HOLD connection was not redialed:\n{log}"
    );
    assert!(!log.contains("dialing again"), "{log}");
}

/// One DLE whose tar stays quiet for 60 s, dumped through squid (`read_timeout 20
/// seconds`) with the dial-in sessions' heartbeat on both ends, or off on both ends.
/// Whether the night passed, and its report with the logs.
fn quiet_dump_through_squid(heartbeat: bool) -> Option<(bool, String)> {
    let tag = if heartbeat {
        "oproxy-squid-hb"
    } else {
        "oproxy-squid-nohb"
    };
    let tars = Scratch::new(tag);
    let tar = util::quiet_tar(tars.path(), 60);
    let mut amandad_env = vec![
        format!("AMANDA_RS_GNUTAR_PATH={}", tar.display()),
        "AMANDA_RS_AMANDAD__RUNTAR_PATH=/nonexistent".into(),
    ];
    if !heartbeat {
        amandad_env.push("AMANDA_RS_AMANDAD__DIAL_OUT__SESSION_HEARTBEAT_SECS=0".into());
    }
    // A dial-in dump that broke on its link is retried (`retry_dump`): without the
    // heartbeat every try fails the same way.
    let (mut lab, proxy) = lab(tag, 1, Kind::Squid, 10080, amandad_env, None)?;
    lab.conf.env.push((
        "AMANDA_RS_DUMPER__DIALIN_SESSION_HEARTBEAT_SECS".into(),
        if heartbeat { "10" } else { "0" }.into(),
    ));
    lab.wait_holding(Duration::from_secs(30));
    let (status, report) = lab.conf.run();
    Some((
        status.success() && report.matches("  OK").count() == 1,
        format!("{report}\n{}\n{}", lab.logs(), proxy.logs()),
    ))
}

// issue 14: TCP keepalive stops at the proxy; the dial-in session's own heartbeat keeps a
// quiet dump's tunnel open through squid's read_timeout, and without it squid closes it.
#[test]
fn outbound_dialin_dump_quiet_for_60s_passes_squid_read_timeout_20s_with_the_heartbeat_and_fails_without()
 {
    require_root!();
    require_tool!("/usr/sbin/nft");
    require_tool!(SQUID);
    let Some((ok, report)) = quiet_dump_through_squid(true) else {
        return;
    };
    assert!(ok, "with the heartbeat the quiet dump must pass:\n{report}");
    assert!(
        report.contains(&format!("CONNECT {SERVER_IP}:10080")),
        "squid's log shows the tunnels:\n{report}"
    );
    let (ok, report) = quiet_dump_through_squid(false).expect("the topology was made once");
    util::squid::assert_cut_by_read_timeout(ok, &report);
}

// issue 14: the dial-in night over auth ssl through tinyproxy: TLS runs inside the tunnels
// (the held connection's and each session's, after its preamble), and amandad knows the
// server by its certificate's CN, the configured server name, though every connection has
// the proxy's address.
#[test]
fn outbound_dialin_over_ssl_through_tinyproxy_restores_identical() {
    require_root!();
    require_tool!("/usr/sbin/amssl");
    require_tool!("/usr/bin/openssl");
    let trees = ssl_util::trees(ssl_util::Kind::DialinProxy);
    let ssl = DialinSsl::of(&trees, HOST);
    let (lab, proxy) = proxy_lab!("oproxy-ssl", 3, Kind::Tinyproxy, 10080, vec![], Some(ssl));
    lab.wait_holding(Duration::from_secs(60));
    assert!(
        lab.amandad_log()
            .contains(&format!("dial-out: ssl to {PROXY_IP}:{PROXY_PORT}")),
        "the held connection is TLS inside the tunnel:\n{}",
        lab.logs()
    );
    lab.night("full over ssl");
    lab.restore_all_identical();
    assert_tunnels(&lab, &proxy);
}
