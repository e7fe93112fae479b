//! Shared helpers of the integration tests, one file per concern:
//!
//! - [`process`]: the workspace's binaries, running commands with a time limit;
//! - [`child`]: a daemon started until it listens, killed on drop, its log shown on a panic;
//! - [`scratch`]: scratch directories, files handed to the Amanda user;
//! - [`net`]: free loopback ports, waiting for a listener;
//! - [`tree`]: the tricky test tree, its comparison, extracting a tar stream;
//! - [`machine`]: machine-wide Amanda files (/etc/amandahosts);
//! - [`inetd`]: a private openbsd-inetd, the real amandad under it;
//! - [`real_amanda`]: the real Amanda 3.5.1 server tools (amcheck, amdump, amfetchdump) run
//!   as the Amanda user;
//! - [`real_ambackupd`]: the real server-side ambackupd for client-initiated backups;
//! - [`ours`], [`dumper_conf`]: our amandad (with its setuid helper installed) and our dumper;
//! - [`hostile`], [`fake_amandad`], [`vtapes`]: hostile peers for amandad, a scripted fake
//!   amandad for the dumper, the taper's vtape configurations;
//! - [`workers`]: the threads of hostile peers and their connection-holding rounds;
//! - [`ambackup`]: our `dumper listen` and the real `ambackup` against it (issue 14);
//! - [`dialin`]: `dumper listen` and `amandad --dial-out` in network namespaces (issue 14);
//! - [`netpair`]: a server and a client namespace joined by one veth pair, with their own
//!   /etc/hosts and an optional firewall (issue 14's ambackup tests).
//! - [`squid`]: Debian's squid as a private CONNECT proxy (issue 14).
//!
//! The helpers the test modules use are re-exported here (`crate::util::Scratch`), so a test
//! module does not need to know which file holds one. Everything here stays on 127.0.0.0/8 (or inside network
//! namespaces a test made itself) and cleans up after itself in `Drop`, also when a test
//! fails.

#![allow(dead_code)] // each test module uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub mod ambackup;
pub mod child;
pub mod crypt;
pub mod dialin;
pub mod dumper_conf;
pub mod fake_amandad;
pub mod hostile;
pub mod inetd;
pub mod machine;
pub mod net;
pub mod netpair;
pub mod ours;
pub mod process;
pub mod real_amanda;
pub mod real_ambackupd;
pub mod scratch;
pub mod squid;
pub mod tinyproxy;
pub mod tree;
pub mod vtapes;
pub mod workers;

pub use dumper_conf::{Dt, DumperConf, disklist};
pub use inetd::{INETD, Inetd, start_real_amandad};
pub use machine::{ensure_amandahosts_line, lock_amdump_machine};
pub use net::{free_port, wait_bound_udp, wait_listening_tcp};
pub use ours::{Launch, RuntarInstall, install_runtar, start_ours};
pub use process::{
    output_within, pipe_through, run_ok, run_with_timeout, spawn_logged, workspace_bin,
};
pub use real_amanda::{Program, RealServer, ServerOptions, amquote};
pub use scratch::{Scratch, chown_amanda};
pub use testkit::Noise;
pub use tree::{
    assert_same_tree, dirs_named, extract_tar, make_compressible_tree, make_tricky_tree, quiet_tar,
    set_mtime, small_dles,
};

/// The Amanda user of Debian's packages.
pub const AMANDA_USER: &str = "backup";

/// Serialises tests that edit machine-wide Amanda files (/etc/amandahosts, /etc/amanda/...).
pub static MACHINE_LOCK: Mutex<()> = Mutex::new(());

/// True when the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when the environment says it is CI (`CI=true`): there a test that cannot run its
/// real peer must fail, since a skip would pass silently (issue 10).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns early from a test that needs root, saying so loudly; fails it under CI.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::util::is_root() {
            if $crate::util::under_ci() {
                panic!(
                    "{} needs root, and CI=true: a skip would pass",
                    module_path!()
                );
            }
            eprintln!(
                "\n*** SKIPPED {}: needs root (run the tests as root, as .ci/run does) ***\n",
                module_path!()
            );
            return;
        }
    };
}

/// Returns early from a test whose external tool is missing, saying so loudly; fails it
/// under CI.
#[macro_export]
macro_rules! require_tool {
    ($path:expr) => {
        if !std::path::Path::new($path).exists() {
            if $crate::util::under_ci() {
                panic!(
                    "{} needs {}, and CI=true: a skip would pass",
                    module_path!(),
                    $path
                );
            }
            eprintln!(
                "\n*** SKIPPED {}: {} is not installed (run scripts/setup) ***\n",
                module_path!(),
                $path
            );
            return;
        }
    };
}

/// The path of a file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The amanda.conf lines of the holding disk `hd1` (`<work>/holding`, `use` as given) and of
/// the `app_amgtar` application that the test configurations share.
pub fn holding_and_amgtar(work: &str, use_: &str) -> String {
    format!(
        r#"define holdingdisk hd1 {{
    directory "{work}/holding"
    use {use_}
}}
holdingdisk "hd1"
define application-tool app_amgtar {{
    plugin "amgtar"
    property "ATIME-PRESERVE" "no"
}}
"#
    )
}
