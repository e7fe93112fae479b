//! Issue 6: backups across a real packet filter, on two hosts made of network namespaces
//! (see `netns`): the client behind the nftables rules `portpool rules` generates, with
//! everything else dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{CLIENT_IP, SERVER_IP, Topology};
use crate::util::{self, Program, RealServer, Scratch, ServerOptions};
use crate::{require_root, require_tool};

/// The client's firewall from `portpool rules CONFIG --side <client> --default-drop`.
fn client_rules(config_dir: &Path) -> String {
    let out = Command::new(util::workspace_bin("portpool"))
        .arg("rules")
        .arg(config_dir)
        .args(["--side", &CLIENT_IP.to_string()])
        .args(["--server-address", &SERVER_IP.to_string()])
        .arg("--default-drop")
        .output()
        .expect("portpool rules");
    assert!(
        out.status.success(),
        "portpool rules: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 rules")
}

/// Starts our amandad in the client namespace, listening on the client's address.
fn start_ours_in(t: &Topology, auth: &str, log: &Path) {
    util::install_runtar();
    let proto = if auth == "bsdtcp" { "tcp" } else { "udp" };
    let bin = util::workspace_bin("amandad");
    let listen = format!("{proto}:{CLIENT_IP}:10080");
    let auth_arg = format!("-auth={auth}");
    t.spawn(
        &t.client,
        &bin,
        &[
            &auth_arg,
            "amdump",
            "--log",
            &log.display().to_string(),
            "--listen",
            &listen,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
}

fn real_server_through_the_client_firewall(auth: &str) {
    require_root!();
    require_tool!("/usr/sbin/amdump");
    require_tool!("/usr/sbin/nft");
    let Some(t) = Topology::create() else { return };
    let _machine = util::MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    util::ensure_amandahosts_line(&format!("{SERVER_IP} backup amdump"));
    let data = Scratch::new("fw-real");
    let dle = data.join("tree");
    util::make_tricky_tree(&dle);
    let mut opts = ServerOptions::new(auth, 10080);
    opts.program = Program::Amgtar;
    let mut server = RealServer::new(&CLIENT_IP.to_string(), std::slice::from_ref(&dle), &opts);
    server.netns = Some(t.server.clone());
    let rules = client_rules(&server.work.join("config"));
    t.nft(&t.client, &rules).expect("load the client's rules");
    let log: PathBuf = data.join("amandad.log");
    start_ours_in(&t, auth, &log);

    let (ok, out) = server.amcheck();
    let amandad_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ok,
        "amcheck through the firewall failed:\n{out}\n{rules}\n{}",
        amandad_log()
    );
    let (status, out, dlog) = server.amdump();
    assert!(
        status.success(),
        "amdump through the firewall failed:\n{out}\n{dlog}\n{}",
        amandad_log()
    );
    assert_eq!(RealServer::dumped_levels(&dlog).len(), 1, "{dlog}");
    let restored = data.join("restored");
    server.restore(&dle, &restored);
    util::assert_same_tree(&dle, &restored, true);
}

#[test]
fn real_amanda_server_backs_up_our_amandad_behind_generated_rules_bsdtcp() {
    real_server_through_the_client_firewall("bsdtcp");
}

#[test]
fn real_amanda_server_backs_up_our_amandad_behind_generated_rules_bsd() {
    real_server_through_the_client_firewall("bsd");
}
