//! The reference pairing: the real Amanda 3.5.1 server backs up the real Amanda client, with
//! the same helpers the amanda-rs interoperability tests use. When this fails, the machine
//! (packages, /etc/services, .amandahosts) is broken, not amanda-rs.

use std::path::PathBuf;

use crate::amdump_machine;
use crate::util::{self, RealServer, Scratch, ServerOptions};

#[test]
fn real_server_backs_up_and_restores_real_client_over_bsd() {
    let _machine = amdump_machine!("/usr/lib/amanda/amandad", util::INETD);

    let data = Scratch::new("ref-data");
    let dle = data.join("tree");
    util::make_tricky_tree(&dle);
    let port = util::free_port();
    let _client = util::start_real_amandad("bsd", port);
    let server = RealServer::new(
        "localhost",
        std::slice::from_ref(&dle),
        &ServerOptions::new("bsd", port),
    );

    let (ok, out) = server.amcheck();
    assert!(ok, "amcheck failed:\n{out}");
    let (status, out, log) = server.amdump();
    assert!(status.success(), "amdump failed ({status}):\n{out}\n{log}");
    assert!(log.contains("DONE taper"), "no DONE taper line:\n{log}");

    let restored: PathBuf = data.join("restored");
    server.restore(&dle, &restored);
    util::assert_same_tree(&dle, &restored, true);
}
