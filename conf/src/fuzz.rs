//! Fuzz entry points: each takes arbitrary bytes and must never panic.
//!
//! `fuzz/fuzz_targets/<name>.rs` call these under libFuzzer; the integration test
//! `fuzz_corpora` replays the committed corpus `fuzz/corpus/<name>/` through [`TARGETS`] on
//! stable, so every input the fuzzer found interesting stays a regression test.
//!
//! What this module must not do: touch the real file system (inputs go through
//! [`crate::fs::MemFs`]).

use std::path::Path;
use std::sync::OnceLock;

use crate::amandahosts::AmandaHosts;
use crate::client::ClientConfig;
use crate::disklist::Disklist;
use crate::fs::MemFs;
use crate::security::SecurityConf;
use crate::server::Config;

/// Fuzz targets: (name under fuzz/corpus/, entry point).
pub const TARGETS: &[proto::fuzz::Target] = &[
    ("conf_amanda", conf_amanda),
    ("conf_disklist", conf_disklist),
    ("conf_amandahosts", conf_amandahosts),
    ("conf_client", conf_client),
];

/// Splits at the first NUL: the main file, and an included file `/c/inc.conf`.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, b"define dumptype inc {\n index\n}\n"),
    }
}

/// amanda.conf text (before the first NUL; after it, the file `includefile "inc.conf"`
/// reads). The port lint over the result is portpool's fuzz target `portpool_site`.
pub fn conf_amanda(data: &[u8]) {
    let (main, inc) = split(data);
    let fs = MemFs::new().with("/c/inc.conf", inc.to_vec());
    match Config::parse_with(&fs, "amanda.conf", main, Some(Path::new("/c"))) {
        Ok(l) => {
            for w in &l.warnings {
                let _ = w.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn disklist_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = concat!(
            "inparallel 4\nreserved-udp-port 850,852\n",
            "define application-tool app_amgtar {\n plugin \"amgtar\"\n property \"ATIME-PRESERVE\" \"no\"\n}\n",
            "define script-tool sc {\n plugin \"script-email\"\n execute_on pre-dle-backup, post-dle-backup\n}\n",
            "define dumptype global {\n index yes\n auth \"bsd\"\n}\n",
            "define dumptype comp-root {\n global\n compress client fast\n}\n",
            "define dumptype user-tar {\n global\n program \"APPLICATION\"\n application \"app_amgtar\"\n maxdumps 2\n}\n",
            "define interface le0 {\n use 400 kbps\n}\n",
        );
        match Config::parse_str("amanda.conf", text) {
            Ok(l) => l.value,
            Err(e) => panic!("fuzz fixture config is invalid: {e}"),
        }
    })
}

/// A disklist resolved against a small fixed configuration.
pub fn conf_disklist(data: &[u8]) {
    let config = disklist_config();
    if let Ok(l) = Disklist::parse(config, "disklist", data) {
        for e in &l.value.entries {
            let _ = e.disk_lossy();
        }
    }
}

/// `.amandahosts` text, checked against a few requests; also parsed as an
/// amanda-security.conf (both are line files of the client).
pub fn conf_amandahosts(data: &[u8]) {
    let h = AmandaHosts::parse("/var/backups/.amandahosts", data, "backup");
    for (peer, lo, user, svc) in [
        ("localhost", true, "backup", "noop"),
        ("server.example.com", false, "root", "amindexd"),
        ("x", false, "backup", "bogus"),
    ] {
        let _ = h.check(peer, lo, user, svc).map_err(|r| r.to_string());
    }
    if let Some(first) = h.entries.first() {
        let user = first.user.clone().unwrap_or_default();
        let _ = h.check(&first.host, false, &user, "sendbackup");
    }
    let _ = SecurityConf::parse("/etc/amanda-security.conf", data)
        .map(|c| c.value.allows_path("runtar:gnutar_path", "/bin/tar"));
}

/// amanda-client.conf text (with an include file after the first NUL).
pub fn conf_client(data: &[u8]) {
    let (main, inc) = split(data);
    let fs = MemFs::new().with("/c/inc.conf", inc.to_vec());
    let _ = ClientConfig::parse_with(&fs, "amanda-client.conf", main, Some(Path::new("/c")))
        .map(|l| l.value.auth.to_string())
        .map_err(|e| e.to_string());
}
