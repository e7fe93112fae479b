//! Issue 14: a client behind NAT that accepts no connection at all, backed up on the
//! server's schedule over connections it opens itself (`dialin yes`, `amandad --dial-out`,
//! the listener's `amdialin` service).
//!
//! ```text
//!   server ns                router ns                         client ns
//!   198.18.0.1 (no route     masquerades 198.18.1.0/24;        198.18.1.2, input policy
//!   to 198.18.1.0/24)        counts (and drops) new            drop except established
//!   dumper listen, run       connections server -> client      amandad --dial-out
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{SERVER_IP, Topology, nft_counter};
use crate::ssl_util::{self, Kind};
use crate::util;
use crate::util::dialin::{DialinLab, DialinOptions, DialinSsl};
use crate::{require_root, require_tool};

/// The client's name in the disklist: nothing resolves it, nothing needs to.
const HOST: &str = "natclient";

/// The router's address on the server's side: what the server sees of the client.
const NAT_IP: &str = "198.18.0.254";

/// Router: masquerade the client network, and count every new connection from the server's
/// network towards it (and drop it: the client must never need one).
const ROUTER_RULES: &str = "table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 198.18.1.0/24 ip daddr != 198.18.1.0/24 masquerade
  }
}
table inet fw {
  counter to_client { }
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr 198.18.0.0/24 ip daddr 198.18.1.0/24 ct state new counter name to_client drop
  }
}
";

/// Client: nothing comes in but the answers to what it opened.
const CLIENT_RULES: &str = "table inet fw {
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
  }
}
";

/// Root, nft, and a NAT lab of `n` DLEs: the network above, then [`DialinLab`] (the
/// listener in the server namespace, our amandad dialing out from the client namespace,
/// seen from [`NAT_IP`]); returns from the test when the namespaces cannot be made (outside
/// CI).
macro_rules! nat_lab {
    ($tag:expr, $n:expr) => {
        nat_lab!($tag, $n, None)
    };
    ($tag:expr, $n:expr, $ssl:expr) => {{
        require_root!();
        require_tool!("/usr/sbin/nft");
        match nat_lab($tag, $n, $ssl) {
            Some(lab) => lab,
            None => return,
        }
    }};
}

fn nat_lab(tag: &str, n: usize, ssl: Option<DialinSsl<'_>>) -> Option<DialinLab> {
    let t = Topology::create()?;
    // The server cannot route to the client network at all.
    let out = t.run(&t.server, "ip", &["route", "del", "default"]);
    assert!(out.status.success(), "{out:?}");
    t.nft(&t.router, ROUTER_RULES).expect("router rules");
    t.nft(&t.client, CLIENT_RULES).expect("client rules");
    let options = DialinOptions {
        tag,
        host: HOST,
        dles: n,
        seen_from: NAT_IP,
        listener_env: Vec::new(),
        amandad_env: Vec::new(),
        dumptype_extra: "",
        conf_extra: "",
    };
    Some(DialinLab::start_with(t, options, ssl))
}

/// New connections the router saw from the server's network to the client's.
fn connections_to_client(lab: &DialinLab) -> u64 {
    nft_counter(&lab.t.router, "to_client")
}

/// The levels of the DLEs the report says are OK.
fn ok_levels(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.starts_with(&format!("  {HOST} ")) && l.trim_end().ends_with("OK"))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

// issue 14: the NAT and outbound-only acceptance night.
#[test]
fn outbound_only_client_behind_nat_is_backed_up_full_then_incremental_with_no_inbound_connection() {
    let lab = nat_lab!("nat-night", 20);
    lab.wait_holding(Duration::from_secs(30));
    check_reaches_it(&lab);
    // --ports probes the dial-in path the way a night uses it: a session from the NAT.
    let (status, ports) = lab.conf.check(&["--ports"]);
    let want = format!(
        "dial-in path: the client holds its connection and opened a session from {NAT_IP}:"
    );
    assert!(
        status.success() && ports.contains(&want),
        "dumper check --ports ({status}):\n{ports}\n{}",
        lab.logs()
    );
    full_then_level_1_restored(&lab);
}

/// `dumper check` passes and says the host is reached over its dial-in connection.
fn check_reaches_it(lab: &DialinLab) {
    let (status, check) = lab.conf.check(&[]);
    assert!(
        status.success() && check.contains("reached over the connection it dials in"),
        "dumper check ({status}):\n{check}\n{}",
        lab.logs()
    );
}

/// A full night, a change on the client, a level-1 night, every DLE restored identical,
/// and not one connection from the server towards the client network.
fn full_then_level_1_restored(lab: &DialinLab) {
    let n = lab.dles.len();
    let first = lab.night("full");
    assert_eq!(ok_levels(&first), vec!["0"; n], "fulls first:\n{first}");
    // Something changes on the client; the second night is level 1.
    std::fs::write(lab.dles[1].join("new.txt"), "after the full\n").expect("write");
    std::fs::remove_file(lab.dles[2].join("a.txt")).expect("rm");
    let second = lab.night("level 1");
    assert_eq!(ok_levels(&second), vec!["1"; n], "then level 1:\n{second}");
    lab.restore_all_identical();
    assert_eq!(
        connections_to_client(lab),
        0,
        "the server opened connections towards the client network:\n{}",
        lab.logs()
    );
}

/// The start of the ssl dial-in tests: amssl and openssl (to make the trees), or a loud
/// skip (a failure under CI).
macro_rules! ssl_tools {
    () => {
        require_root!();
        require_tool!("/usr/sbin/amssl");
        require_tool!("/usr/bin/openssl");
    };
}

// issue 14: the NAT night over auth ssl. The held connection is TLS (amandad the client,
// the listener the server), each session's preamble goes in clear and then the dumper is
// its TLS client; nobody's address says who it is (the NAT's is all the server sees), the
// certificates do: the client's CN is its disklist name, the server's its address.
#[test]
fn outbound_dialin_over_ssl_behind_nat_full_then_level_1_restores_identical() {
    ssl_tools!();
    let trees = ssl_util::trees(Kind::DialinNat);
    let lab = nat_lab!("nat-ssl", 4, Some(DialinSsl::of(&trees, HOST)));
    lab.wait_holding(Duration::from_secs(60));
    check_reaches_it(&lab);
    let (status, ports) = lab.conf.check(&["--ports"]);
    assert!(
        status.success() && ports.contains(&format!("opened a session from {NAT_IP}:")),
        "dumper check --ports probes the path over ssl too ({status}):\n{ports}\n{}",
        lab.logs()
    );
    let logs = lab.logs();
    assert!(
        logs.contains("dial-out: ssl to 198.18.0.1:10080"),
        "the held connection is TLS:\n{logs}"
    );
    full_then_level_1_restored(&lab);
    let logs = lab.logs();
    assert!(
        logs.contains("passed to its worker") && !logs.contains("ssl connection refused"),
        "{logs}"
    );
}

// issue 14: over auth ssl the host a client holds for is its certificate's: a client with
// a valid certificate for another host (impostor) that says hostname=natclient is refused
// with a text naming both, and no night can reach it as natclient.
#[test]
fn outbound_dialin_over_ssl_refuses_a_certificate_of_another_host() {
    ssl_tools!();
    let trees = ssl_util::trees(Kind::DialinImpostor);
    let lab = nat_lab!(
        "nat-ssl-impostor",
        1,
        Some(DialinSsl::of(&trees, "impostor"))
    );
    let text =
        format!("ERROR the certificate of impostor may not hold the dial-in connection of {HOST}");
    assert!(
        lab.wait_log(&text, Duration::from_secs(60)),
        "no refusal:\n{}",
        lab.logs()
    );
    let amandad = lab.amandad_log();
    assert!(
        amandad.contains(&format!(
            "the certificate of impostor may not hold the dial-in connection of {HOST}"
        )),
        "the client's log names the refusal:\n{amandad}"
    );
    assert!(
        !lab.logs()
            .contains(&format!("holding the dial-in connection of {HOST}")),
        "{}",
        lab.logs()
    );
}

// issue 14: the client's link goes down for 30 s in the middle of a night, and the router
// forgets its NAT mappings meanwhile (as a home router that restarts): the client redials,
// the dumps that were in flight fail on their dead connections and are retried over new
// sessions, every DLE ends dumped.
#[test]
fn outbound_client_link_cut_for_30s_mid_night_redials_and_every_dle_ends_dumped() {
    let mut lab = nat_lab!("nat-cut", 4);
    // Dumps slow enough to be cut in the middle: 4 DLEs of 10 MB, through a router that
    // passes 2 MB/s from the client.
    for (i, d) in lab.dles.iter().enumerate() {
        let big = util::Noise::new(0x9e37_79b9 ^ i as u64).bytes(10 << 20);
        std::fs::write(d.join("big.bin"), big).expect("write");
    }
    lab.conf
        .env
        .push(("AMANDA_RS_DUMPER__DIALIN_WAIT_SECS".into(), "180".into()));
    let slow = format!(
        "{ROUTER_RULES}table inet slow {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    ct state invalid drop\n    ip saddr 198.18.1.0/24 limit rate over 2 mbytes/second drop\n  }}\n}}\n"
    );
    let router = lab.t.router.clone();
    lab.t
        .sysctl(&router, "net.netfilter.nf_conntrack_tcp_loose", "0")
        .expect("sysctl");
    lab.t.nft(&lab.t.router, &slow).expect("slow link");
    lab.wait_holding(Duration::from_secs(30));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.t.server])
        .arg(util::workspace_bin("dumper"))
        .arg("run")
        .arg(&lab.conf.conf)
        .args(["--progress", "plain", "--retry-delay", "1"])
        .envs(lab.conf.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = cmd.spawn().expect("spawn dumper run");
    // Cut once data flows (a holding .tmp file appears), for 30 s.
    let start = Instant::now();
    while lab.conf.holding_files().1.is_empty() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let cut = format!(
        "{ROUTER_RULES}table inet cut {{\n  chain forward {{\n    type filter hook forward priority -10; policy drop;\n  }}\n}}\n"
    );
    let established = "net.netfilter.nf_conntrack_tcp_timeout_established";
    lab.t.nft(&router, &cut).expect("cut the link");
    lab.t.sysctl(&router, established, "5").expect("sysctl");
    std::thread::sleep(Duration::from_secs(30));
    lab.t
        .sysctl(&router, established, "432000")
        .expect("sysctl");
    lab.t.nft(&router, &slow).expect("restore the link");
    let out = run.wait_with_output().expect("dumper run");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.matches("  OK").count(),
        lab.dles.len(),
        "every DLE ends dumped ({}):\n{report}\n{}",
        out.status,
        lab.logs()
    );
    let logs = lab.logs();
    assert!(
        logs.matches(&format!("holding the dial-in connection of {HOST}"))
            .count()
            >= 2,
        "the client redialed after the cut:\n{logs}"
    );
    assert!(
        report.contains("(attempt 2)"),
        "the dumps in flight were retried:\n{report}\n{logs}"
    );
    lab.restore_all_identical();
    assert_eq!(connections_to_client(&lab), 0, "{logs}");
}

// issue 14: 1,000 connections to the listener that never speak (from the same NAT address
// as the real client) do not keep the real client's night from running.
#[test]
fn outbound_1000_silent_dialins_do_not_starve_the_real_client() {
    let lab = nat_lab!("nat-flood", 3);
    lab.wait_holding(Duration::from_secs(30));
    let flood = format!(
        "import resource, socket, time\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n\
         held = []\n\
         for i in range(1000):\n\
         \x20   try:\n\
         \x20       s = socket.create_connection(('{SERVER_IP}', 10080), timeout=5)\n\
         \x20       held.append(s)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print('connected', len(held), flush=True)\n\
         time.sleep(600)\n"
    );
    lab.t.spawn(&lab.t.client, "python3", &["-c", &flood]);
    // Let the flood get going before the night asks for its sessions.
    std::thread::sleep(Duration::from_secs(3));
    let report = lab.night("under a flood of silent connections");
    assert_eq!(ok_levels(&report), vec!["0"; 3], "{report}");
    lab.restore_all_identical();
    let logs = lab.logs();
    assert!(
        logs.contains("closing the oldest that has not made a request"),
        "the flood reached the listener's bound:\n{}",
        &logs[..logs.len().min(20_000)]
    );
}
