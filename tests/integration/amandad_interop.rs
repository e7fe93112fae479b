//! Issue 3's acceptance: the real Amanda 3.5.1 server (Debian) backs up our amandad.
//!
//! For auth bsd, bsdudp and bsdtcp, with our amandad under openbsd-inetd and standalone, the
//! real `amcheck` must report no problem, `amdump` must dump every DLE, and `amfetchdump`
//! must give back trees identical to the originals (contents, modes, owners, mtimes,
//! symlinks, empty directories, names with spaces, tabs, quotes, backslashes and UTF-8). A
//! level 1 after changes, restored on top of level 0, must equal the changed tree. And bad
//! requests must get exactly the real amandad's answers (a differential test that sends the
//! same packets to both).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::amdump_machine;
use crate::util::{
    self, Launch, Program, RealServer, Scratch, ServerOptions, disklist, start_ours,
};

/// Two DLEs: the tricky tree, and a directory whose own name has a space and UTF-8.
fn make_dles(data: &Scratch) -> Vec<PathBuf> {
    let a = data.join("plain");
    util::make_tricky_tree(&a);
    let b = data.join("dle with space é");
    fs::create_dir_all(&b).expect("mkdir");
    for i in 1..=5 {
        fs::write(b.join(format!("f{i}.txt")), format!("dle2 file {i}\n")).expect("write");
    }
    fs::write(b.join("x y ü.txt"), "x\n").expect("write");
    vec![a, b]
}

/// Our amandad (`auth`, started by `launch`) and a real server configuration that dumps
/// `dles` from it with `program`.
fn ours_and_server(
    auth: &str,
    launch: Launch,
    program: Program,
    dles: &[PathBuf],
) -> (util::ours::OurAmandad, RealServer) {
    let ours = start_ours(auth, launch);
    let mut opts = ServerOptions::new(auth, ours.port);
    opts.program = program;
    let server = RealServer::new("localhost", dles, &opts);
    (ours, server)
}

/// Runs the real `amdump`; if it fails, fails the test with `what`, its output and log, and
/// our amandad's log. Returns the log.
fn amdump_ok(server: &RealServer, ours: &util::ours::OurAmandad, what: &str) -> String {
    let (status, out, log) = server.amdump();
    assert!(
        status.success(),
        "{what} failed ({status}):\n{out}\n{log}\n{}",
        ours.log()
    );
    log
}

fn round_trip(auth: &str, launch: Launch, program: Program) {
    let _guard = amdump_machine!("/usr/sbin/amdump", util::INETD);
    let data = Scratch::new("dles");
    let dles = make_dles(&data);
    let (ours, server) = ours_and_server(auth, launch, program, &dles);

    let (ok, out) = server.amcheck();
    assert!(
        ok,
        "amcheck against our amandad ({auth}, {launch:?}) failed:\n{out}\n{}",
        ours.log()
    );
    assert!(
        out.contains("Client check: 1 host checked") && out.contains("0 problems found"),
        "amcheck output:\n{out}"
    );
    let log = amdump_ok(&server, &ours, "amdump");
    let levels = RealServer::dumped_levels(&log);
    assert_eq!(
        levels.len(),
        dles.len(),
        "every DLE dumped: {levels:?}\n{log}"
    );
    // Dumped and also written to the (virtual) tape, where amfetchdump looks first.
    assert_eq!(
        log.lines().filter(|l| l.starts_with("DONE taper ")).count(),
        dles.len(),
        "every DLE taped:\n{log}"
    );
    for dle in &dles {
        let restored = data.join(format!(
            "restored-{}",
            dle.file_name().unwrap().to_string_lossy()
        ));
        server.restore(dle, &restored);
        util::assert_same_tree(dle, &restored, true);
    }
}

/// One `#[test]` per case, each a [`round_trip`] with the auth, launch and program given.
macro_rules! round_trip_tests {
    ($($name:ident: $auth:literal, $launch:ident, $program:ident;)*) => {$(
        #[test]
        fn $name() {
            round_trip($auth, Launch::$launch, Program::$program);
        }
    )*};
}

round_trip_tests! {
    real_server_backs_up_our_amandad_bsd_inetd: "bsd", Inetd, Amgtar;
    real_server_backs_up_our_amandad_bsdudp_inetd: "bsdudp", Inetd, Amgtar;
    real_server_backs_up_our_amandad_bsdtcp_inetd: "bsdtcp", Inetd, Amgtar;
    real_server_backs_up_our_amandad_bsd_standalone: "bsd", Standalone, Amgtar;
    real_server_backs_up_our_amandad_bsdudp_standalone: "bsdudp", Standalone, Amgtar;
    real_server_backs_up_our_amandad_bsdtcp_standalone: "bsdtcp", Standalone, Amgtar;
    real_server_backs_up_our_amandad_gnutar_program_bsdtcp: "bsdtcp", Inetd, Gnutar;
    real_server_backs_up_our_amandad_gnutar_program_bsd_standalone: "bsd", Standalone, Gnutar;
}

/// Changes, additions and deletions between level 0 and level 1.
fn change_tree(root: &Path) {
    fs::write(root.join("numbers.txt"), "changed\n").expect("change");
    fs::write(root.join("new file ✓.txt"), "added\n").expect("add");
    fs::create_dir_all(root.join("new dir/inner")).expect("add dir");
    fs::write(root.join("new dir/inner/z"), "z\n").expect("add");
    fs::remove_file(root.join("file with spaces.txt")).expect("delete");
    fs::remove_dir_all(root.join("empty dir")).expect("delete dir");
    fs::remove_file(root.join("link-to-plain")).expect("delete link");
    std::os::unix::fs::symlink("numbers.txt", root.join("link-to-plain")).expect("relink");
}

fn level_1_on_top_of_level_0(auth: &str, program: Program) {
    let _guard = amdump_machine!("/usr/sbin/amdump", util::INETD);
    let data = Scratch::new("incr");
    let dle = data.join("tree");
    util::make_tricky_tree(&dle);
    let dles = std::slice::from_ref(&dle);
    let (ours, server) = ours_and_server(auth, Launch::Inetd, program, dles);

    let log = amdump_ok(&server, &ours, "level 0 amdump");
    assert_eq!(
        RealServer::dumped_levels(&log).first().map(|l| l.1),
        Some(0)
    );

    // A second later, so that GNU tar's listed-incremental timestamps separate the runs.
    std::thread::sleep(Duration::from_millis(1100));
    change_tree(&dle);
    server.force_level_1(&dle);
    std::thread::sleep(Duration::from_millis(1100));
    let log = amdump_ok(&server, &ours, "level 1 amdump");
    assert_eq!(
        RealServer::dumped_levels(&log).first().map(|l| l.1),
        Some(1),
        "the second run must be a level 1:\n{log}"
    );
    let restored = data.join("restored");
    server.restore(&dle, &restored);
    // Extracting level 1 on top of level 0 touches directories; their mtimes are not compared.
    util::assert_same_tree(&dle, &restored, false);
}

#[test]
fn level_1_after_changes_restores_on_top_of_level_0_amgtar() {
    level_1_on_top_of_level_0("bsdtcp", Program::Amgtar);
}

#[test]
fn level_1_after_changes_restores_on_top_of_level_0_gnutar() {
    level_1_on_top_of_level_0("bsd", Program::Gnutar);
}

// ---------------------------------------------------------------------------------------
// Differential tests: the same packets to the real amandad and to ours.

/// Where a client's source port comes from: reserved (we are root) or not.
fn source_ports(reserved: bool) -> std::ops::Range<u16> {
    if reserved { 600..1000 } else { 40000..41000 }
}

/// The daemon's own feature string differs from the real one; the rest of a reply must not.
fn mask_features(text: String) -> String {
    match text.find("features=") {
        Some(i) => format!("{}features=<..>", &text[..i]),
        None => text,
    }
}

/// The ACK of the REP whose first line (the header) is in `rep`.
fn ack_of(rep: &str) -> String {
    let header = rep.lines().next().unwrap_or("").replace(" REP ", " ACK ");
    format!("{header}\n")
}

/// The body of a request: `SECURITY USER` (when given), `SERVICE` and a 3.5.1 server's
/// features.
fn request_body(user: Option<&str>, service: &str) -> String {
    let security = user.map_or(String::new(), |u| format!("SECURITY USER {u}\n"));
    format!(
        "{security}SERVICE {service}\nOPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;\n"
    )
}

/// A UDP socket on a reserved port (we are root), or on an unreserved one.
fn udp_from(reserved: bool) -> UdpSocket {
    for port in source_ports(reserved) {
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .expect("timeout");
            return s;
        }
    }
    panic!("no free port");
}

/// Sends `dgram` from `sock` to the daemon on `port` and returns the replies (body after the
/// header line, plus the type), until 1.5 s pass without one.
fn exchange_udp(sock: &UdpSocket, port: u16, dgram: &[u8]) -> Vec<String> {
    sock.send_to(dgram, ("127.0.0.1", port)).expect("send");
    let mut replies = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(" REP ") {
            // ACK it so the daemon does not retransmit.
            let _ = sock.send_to(ack_of(&text).as_bytes(), ("127.0.0.1", port));
        }
        replies.push(mask_features(text));
    }
    replies
}

/// Replaces the number in `... port N not secure` by `N`: it is the sender's port, which
/// differs between the run against the real amandad and the run against ours.
fn mask_port(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(i) = out.find(": port ") {
        let start = i + ": port ".len();
        let end = out[start..].find(' ').map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "N");
    }
    out
}

/// The real amandad (under inetd) and ours, with the same auth, for differential tests:
/// the real one's port, the real one (stopped on drop), ours.
fn real_and_ours(auth: &str, launch: Launch) -> (u16, util::Inetd, util::ours::OurAmandad) {
    let real_port = util::free_port();
    let real = util::start_real_amandad(auth, real_port);
    (real_port, real, start_ours(auth, launch))
}

/// Sends every `(name, from a reserved port, bytes)` case to both daemons through
/// `exchange(port, reserved, bytes)` and fails naming each case whose answers differ after
/// `normalise` (the port in "port N not secure" is the sender's, which differs between runs).
fn assert_same_answers<A: PartialEq + std::fmt::Debug>(
    cases: &[(&str, bool, Vec<u8>)],
    real_port: u16,
    ours: &util::ours::OurAmandad,
    exchange: impl Fn(u16, bool, &[u8]) -> A,
    normalise: impl Fn(&A) -> A,
) {
    let mut differences = Vec::new();
    for (name, reserved, bytes) in cases {
        let real = exchange(real_port, *reserved, bytes);
        let mine = exchange(ours.port, *reserved, bytes);
        if normalise(&real) != normalise(&mine) {
            differences.push(format!("{name}:\n  real: {real:?}\n  ours: {mine:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "answers differ:\n{}\n{}",
        differences.join("\n"),
        ours.log()
    );
}

fn req(handle: &str, user: Option<&str>, service: &str) -> Vec<u8> {
    let body = request_body(user, service);
    format!("Amanda 3.5 REQ HANDLE {handle} SEQ 12345\n{body}").into_bytes()
}

#[test]
fn bad_udp_requests_get_the_same_answer_as_from_the_real_amandad() {
    let _guard = amdump_machine!("/usr/lib/amanda/amandad", util::INETD);
    let (real_port, _real, ours) = real_and_ours("bsd", Launch::Standalone);
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("good noop", true, req("000-00000001", Some("backup"), "noop")),
        ("unreserved source port", false, req("000-00000002", Some("backup"), "noop")),
        ("user not in .amandahosts", true, req("000-00000003", Some("nobody"), "noop")),
        ("unknown service", true, req("000-00000004", Some("backup"), "frobnicate")),
        ("no SECURITY line", true, req("000-00000005", None, "noop")),
        ("SECURITY without USER", true, b"Amanda 3.5 REQ HANDLE 000-00000006 SEQ 1\nSECURITY FOO bar\nSERVICE noop\nOPTIONS x;\n".to_vec()),
        ("nothing after the service", true, b"Amanda 3.5 REQ HANDLE 000-00000007 SEQ 1\nSECURITY USER backup\nSERVICE noop\n".to_vec()),
        ("not Amanda", true, b"Hello there\n".to_vec()),
        ("unknown packet type", true, b"Amanda 3.5 FOO HANDLE 000-00000008 SEQ 1\n".to_vec()),
        ("stray ACK", true, b"Amanda 3.5 ACK HANDLE 000-00000009 SEQ 1\n".to_vec()),
        ("empty datagram", true, Vec::new()),
        ("binary garbage", true, (0..=255u8).cycle().take(3000).collect()),
    ];
    assert_same_answers(
        &cases,
        real_port,
        &ours,
        |port, reserved, dgram| exchange_udp(&udp_from(reserved), port, dgram),
        |replies| replies.iter().map(|s| mask_port(s)).collect(),
    );
    // And the daemon is still fine.
    let sock = udp_from(true);
    let after = exchange_udp(
        &sock,
        ours.port,
        &req("000-00000099", Some("backup"), "noop"),
    );
    assert!(
        after.iter().any(|r| r.contains(" REP ")),
        "noop after the garbage: {after:?}"
    );
}

/// A bsdtcp exchange: connects from a reserved port (or not), sends the REQ frame, returns
/// the decoded reply frames as (handle, type byte, body) until the connection goes quiet.
fn exchange_tcp(port: u16, reserved: bool, payload: &[u8]) -> Vec<(u32, Option<u8>, String)> {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let mut bound = false;
    for p in source_ports(reserved) {
        if sock
            .bind(&SocketAddr::from(([127, 0, 0, 1], p)).into())
            .is_ok()
        {
            bound = true;
            break;
        }
    }
    assert!(bound, "no source port");
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut frame = Vec::new();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(payload);
    s.write_all(&frame).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut out = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
        let handle = u32::from_be_bytes(rest[4..8].try_into().unwrap());
        let Some(payload) = rest.get(8..8 + len) else {
            break;
        };
        let body = String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).into_owned();
        out.push((handle, payload.first().copied(), mask_features(body)));
        rest = &rest[8 + len..];
    }
    out
}

fn tcp_req(user: Option<&str>, service: &str) -> Vec<u8> {
    [&[0u8][..], request_body(user, service).as_bytes(), &[0]].concat()
}

#[test]
fn bad_bsdtcp_requests_get_the_same_answer_as_from_the_real_amandad() {
    let _guard = amdump_machine!("/usr/lib/amanda/amandad", util::INETD);
    let (real_port, _real, ours) = real_and_ours("bsdtcp", Launch::Inetd);
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        (
            "unreserved source port",
            false,
            tcp_req(Some("backup"), "noop"),
        ),
        (
            "user not in .amandahosts",
            true,
            tcp_req(Some("nobody"), "noop"),
        ),
        (
            "unknown service",
            true,
            tcp_req(Some("backup"), "frobnicate"),
        ),
        ("no SECURITY line", true, tcp_req(None, "noop")),
    ];
    assert_same_answers(&cases, real_port, &ours, exchange_tcp, |frames| {
        let masked = frames.iter().map(|(h, t, b)| (*h, *t, mask_port(b)));
        masked.collect()
    });
}

#[test]
fn oversized_and_garbage_frames_do_not_crash_or_hang_our_amandad() {
    let _guard = amdump_machine!(util::INETD);
    let ours = start_ours("bsdtcp", Launch::Standalone);
    let addr = SocketAddr::from(([127, 0, 0, 1], ours.port));
    let attacks: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1].to_vec(),
        [0, 0, 0, 10, 0, 0, 0, 1, 9, 9].to_vec(),
        (0..=255u8).cycle().take(100_000).collect(),
    ];
    for bytes in attacks {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Still serving.
    let replies = exchange_tcp(ours.port, true, &tcp_req(Some("backup"), "noop"));
    assert!(
        replies.iter().any(|(_, t, _)| *t == Some(1)),
        "no REP for a noop after the garbage: {replies:?}\n{}",
        ours.log()
    );
}

/// The streams a bsd sendbackup REP announces, and their ports.
pub(crate) fn bsd_stream_ports(rep: &str) -> Vec<(proto::sendbackup::Stream, u16)> {
    let body = rep.split_once('\n').map_or("", |(_, b)| b);
    // Which streams to expect depends on the client's features, as in the real dumper.
    let features = body
        .split("features=")
        .nth(1)
        .and_then(|f| f.split(';').next())
        .and_then(|f| proto::features::Features::parse(f.as_bytes()).ok())
        .unwrap_or_else(proto::features::Features::amanda_3_5_1);
    match proto::sendbackup::parse_reply(proto::pkt::PacketType::Rep, body.as_bytes(), &features) {
        Ok(proto::sendbackup::Reply::Connect { ids, .. }) => ids
            .to_connect()
            .map(|(which, port)| (which, u16::try_from(port).expect("a port")))
            .collect(),
        other => panic!("sendbackup REP {rep:?}: {other:?}"),
    }
}

/// Connects to every stream from 127.0.0.1, as the server does, and reads them to the end:
/// (MESG text, DATA bytes).
pub(crate) fn read_bsd_streams(ports: &[(proto::sendbackup::Stream, u16)]) -> (String, Vec<u8>) {
    let mut streams: Vec<(proto::sendbackup::Stream, TcpStream)> = ports
        .iter()
        .map(|(which, port)| {
            let s = TcpStream::connect(("127.0.0.1", *port)).expect("connect to a data stream");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            (*which, s)
        })
        .collect();
    let mut mesg = String::new();
    let mut archive = Vec::new();
    for (which, s) in &mut streams {
        match which {
            proto::sendbackup::Stream::Mesg => {
                s.read_to_string(&mut mesg).expect("read MESG");
            }
            proto::sendbackup::Stream::Data => {
                s.read_to_end(&mut archive).expect("read DATA");
            }
            _ => {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
    }
    (mesg, archive)
}

/// Under loss the server's ACK of the sendbackup REP can vanish while the server, which has
/// the REP, already connects to the data streams. Those connections must be taken as the
/// ACK (the real client accepts them too), not closed: closing them loses the dump.
#[test]
fn data_connections_before_a_lost_ack_still_get_the_whole_dump() {
    let _guard = amdump_machine!(util::INETD);
    let ours = start_ours("bsd", Launch::Standalone);
    let data = Scratch::new("lost-ack");
    let dle = data.join("dle");
    fs::create_dir_all(&dle).expect("mkdir");
    fs::write(dle.join("f.txt"), "lost ack\n".repeat(1000)).expect("write");

    let body = format!(
        "SERVICE sendbackup\nOPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;maxdumps=1;hostname=localhost;config=lostack;\n\
         <dle>\n  <program>GNUTAR</program>\n  <disk>{d}</disk>\n  <level>0</level>\n  <auth>bsd</auth>\n  <record>NO</record>\n</dle>\n",
        d = dle.display()
    );
    let dgram = format!("Amanda 3.5 REQ HANDLE 000-0000a0c4 SEQ 1\nSECURITY USER backup\n{body}");
    let sock = udp_from(true);
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    sock.send_to(dgram.as_bytes(), ("127.0.0.1", ours.port))
        .expect("send REQ");
    // Wait for the REP, and pretend our ACK was lost: send none.
    let mut buf = [0u8; 65536];
    let rep = loop {
        let n = sock.recv(&mut buf).expect("a REP within 20 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(" REP ") {
            break text;
        }
    };
    let (mesg, archive) = read_bsd_streams(&bsd_stream_ports(&rep));
    assert!(
        mesg.contains("sendbackup: size") && mesg.contains("sendbackup: end"),
        "the whole MESG stream without any ACK:\n{mesg}\n{}",
        ours.log()
    );
    assert!(
        archive.len() >= 9000,
        "DATA: {} bytes\n{}",
        archive.len(),
        ours.log()
    );
    // The REP is still being retransmitted for want of an ACK; acknowledge it now.
    let _ = sock.send_to(ack_of(&rep).as_bytes(), ("127.0.0.1", ours.port));
}

/// Issue 10: the real amcheck of one host with 100 DLEs over bsd got no selfcheck answer
/// from our amandad (the 295 KB REP never fit in a datagram) and said "timeout waiting for
/// ACK" after 60 s. Now the reply is cut to one datagram and says, as an error amcheck
/// shows, how many DLEs were left out and that bsdtcp has no such limit; `dumper check`
/// warns about the host (portpool's check).
#[test]
fn amcheck_of_100_dles_over_bsd_names_what_did_not_fit_instead_of_timing_out() {
    let _guard = amdump_machine!("/usr/sbin/amcheck", util::INETD);
    let data = Scratch::new("dles100");
    let dles: Vec<PathBuf> = (0..100)
        .map(|i| {
            let d = data.join(format!("dle-{i:02}"));
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("f"), "x\n").expect("write");
            d
        })
        .collect();
    let ours = start_ours("bsd", Launch::Standalone);
    let server = RealServer::new("localhost", &dles, &ServerOptions::new("bsd", ours.port));
    let start = std::time::Instant::now();
    let (ok, out) = server.amcheck();
    let took = start.elapsed();
    assert!(
        !out.contains("timeout waiting for ACK") && took < Duration::from_secs(50),
        "amcheck waited {took:?}:\n{out}\n{}",
        ours.log()
    );
    assert!(
        out.contains("DLEs are left out and count as not checked")
            && out.contains("auth bsdtcp has no such limit"),
        "amcheck does not show the notice:\n{out}"
    );
    assert!(!ok, "a cut reply is a problem amcheck counts:\n{out}");
    assert!(!out.contains("0 problems found"), "{out}");

    let disklist = disklist("localhost", &dles, "rs");
    let conf = util::DumperConf::new(
        "dles100-dumper",
        "",
        &[util::Dt::new("rs", "bsd", ours.port, Program::Amgtar)],
        &disklist,
    );
    let (_, text) = conf.check(&[]);
    assert!(
        text.contains("[selfcheck-datagram]")
            && text.contains("localhost has 100 DLEs on auth bsd"),
        "dumper check does not warn about the host:\n{text}"
    );
    // Our dumper asks for the legacy line form (no fe_selfcheck_message), which fits.
    assert!(
        text.contains("localhost: selfcheck of 100 DLE(s)"),
        "dumper check's own selfcheck:\n{text}"
    );
}
