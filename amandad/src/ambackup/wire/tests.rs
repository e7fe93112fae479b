//! `wire` against the real 3.5.1 ambackup/ambackupd conversation (fixtures from
//! shared/traces/real-amanda-3.5.1/ambackup-bsdtcp-*, issue 14) and hostile input.

use std::path::PathBuf;

use proto::features::{Feature, Features};
use proto::frame::FrameReader;
use proto::pkt::PacketType;
use proto::sendbackup::Stream;
use proto::tcp::Packet;

use super::*;

const CFG: &str = "ab-bsdtcp-10063-10535";

fn fixture(trace: &str, file: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/ambackup")
        .join(trace)
        .join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every frame of a byte stream, as (handle, payload).
fn frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut r = FrameReader::new();
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(f) = r.next(&mut input).expect("frames") {
        out.push((f.handle, f.payload.into_owned()));
    }
    out
}

/// The body of the first packet of type `ty` on handle 1.
fn packet(bytes: &[u8], ty: PacketType) -> Vec<u8> {
    frames(bytes)
        .into_iter()
        .filter(|(h, p)| *h == 1 && !p.is_empty())
        .map(|(_, p)| Packet::parse(&p).expect("packet").into_owned())
        .find(|p| p.ptype == ty)
        .map(|p| p.body.to_vec())
        .expect("packet of that type")
}

fn real_features() -> Features {
    Features::parse(b"ffffffff9efefbfffffffffffffff3fffbf71f").expect("features")
}

/// What follows the SECURITY line of a REQ.
fn after_security(body: &[u8]) -> &[u8] {
    let nl = body.iter().position(|&b| b == b'\n').expect("line");
    &body[nl + 1..]
}

#[test]
fn requests_are_byte_identical_to_the_real_amservice() {
    let f = real_features();
    let noop = packet(&fixture("bsdtcp-list", "tcp0-a2b.bin"), PacketType::Req);
    assert_eq!(
        after_security(&noop),
        noop_body(&f, "localhost", CFG).unwrap()
    );
    assert!(noop.starts_with(b"SECURITY USER backup\n"));
    let list = packet(&fixture("bsdtcp-list", "tcp1-a2b.bin"), PacketType::Req);
    assert_eq!(
        after_security(&list),
        ambackupd_body(&f, "localhost", CFG, Command::ListDle).unwrap()
    );
    let check = packet(&fixture("bsdtcp-check", "tcp2-a2b.bin"), PacketType::Req);
    assert_eq!(
        after_security(&check),
        ambackupd_body(&f, "localhost", CFG, Command::Check).unwrap()
    );
    let backup = packet(
        &fixture("bsdtcp-error-no-such-dle", "tcp2-a2b.bin"),
        PacketType::Req,
    );
    assert_eq!(
        after_security(&backup),
        ambackupd_body(&f, "localhost", CFG, Command::Backup(b"/no/such/dle")).unwrap()
    );
}

#[test]
fn a_disk_name_the_server_would_cut_is_refused_before_sending() {
    let f = real_features();
    for bad in [&b"/a b"[..], b"/a\nSERVICE x", b"", b"/a\tb"] {
        assert!(matches!(
            ambackupd_body(&f, "localhost", CFG, Command::Backup(bad)),
            Err(RequestError::BadDiskName(_))
        ));
    }
    assert!(ambackupd_body(&f, "local;host", CFG, Command::Check).is_err());
    assert!(ambackupd_body(&f, "localhost", "a b", Command::Check).is_err());
}

#[test]
fn the_noop_reply_gives_the_server_features() {
    let rep = packet(&fixture("bsdtcp-list", "tcp0-b2a.bin"), PacketType::Rep);
    assert_eq!(noop_features(&rep), Some(real_features()));
    assert_eq!(noop_features(b"ERROR noop: invalid service\n"), None);
}

#[test]
fn listdle_json_gives_each_disk_and_its_message() {
    let rep = packet(&fixture("bsdtcp-list", "tcp1-b2a.bin"), PacketType::Rep);
    let ListReply::Dles(dles) = parse_list(&rep) else {
        panic!("not a list");
    };
    assert_eq!(
        dles,
        vec![
            Listed {
                disk: "/tmp/amanda-harness/data-ambackup/second_dle".into(),
                message: "DLE /tmp/amanda-harness/data-ambackup/second_dle".into(),
            },
            Listed {
                disk: "/tmp/amanda-harness/data/plain".into(),
                message: "DLE /tmp/amanda-harness/data/plain".into(),
            },
        ]
    );
}

#[test]
fn a_listdle_reply_cut_short_by_3_5_1_is_malformed_not_a_panic() {
    // The server counts characters, not bytes: the JSON loses its end (spec §14.3).
    let rep = packet(
        &fixture("bsdtcp-error-non-ascii-list", "tcp1-b2a.bin"),
        PacketType::Rep,
    );
    assert!(matches!(parse_list(&rep), ListReply::Malformed(_)));
    assert!(matches!(parse_list(b"{\"a\":1}"), ListReply::Malformed(_)));
    assert!(matches!(
        parse_list(b"[{\"message\":\"x\"}]"),
        ListReply::Malformed(_)
    ));
    assert_eq!(
        parse_list(b"ERROR No dle for host 'localhost'\n\n"),
        ListReply::Errors(vec!["ERROR No dle for host 'localhost'".into()])
    );
}

#[test]
fn check_reply_becomes_a_legacy_selfcheck_request() {
    let rep = packet(&fixture("bsdtcp-check", "tcp2-b2a.bin"), PacketType::Rep);
    let reply = parse_check(&rep);
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    let req = reply.selfcheck.expect("selfcheck request");
    let text = String::from_utf8(req).expect("utf-8");
    let first = text.lines().next().expect("line");
    assert!(first.starts_with("OPTIONS features="), "{first}");
    assert!(first.ends_with(&format!(";maxdumps=1;hostname=localhost;config={CFG}")));
    let hex = first
        .strip_prefix("OPTIONS features=")
        .and_then(|r| r.split(';').next())
        .expect("features");
    let f = Features::parse(hex.as_bytes()).expect("hex");
    assert!(!f.has(Feature::SELFCHECK_MESSAGE));
    assert_eq!(f.with(Feature::SELFCHECK_MESSAGE), real_features());
    // Both DLEs, each whole (the server puts no newline between them).
    assert_eq!(text.matches("<dle>").count(), 2, "{text}");
    assert_eq!(text.matches("</dle>").count(), 2, "{text}");
    assert!(text.contains("<disk>/tmp/amanda-harness/data/plain</disk>"));
}

#[test]
fn check_errors_are_shown_and_no_selfcheck_runs_without_goptions() {
    let rep = packet(
        &fixture("bsdtcp-error-no-host-check", "tcp2-b2a.bin"),
        PacketType::Rep,
    );
    let reply = parse_check(&rep);
    assert_eq!(reply.errors, vec!["ERROR No host 'localhost'".to_string()]);
    assert_eq!(reply.selfcheck, None);
}

#[test]
fn selfcheck_report_hides_ok_lines_and_counts_errors() {
    let rep = b"OPTIONS features=ff;\nOK /a\nERROR /b: no such file\nOK /c\nERROR x\n";
    let r = selfcheck_report(rep, false);
    assert_eq!(r.errors, 2);
    assert_eq!(r.lines, vec!["ERROR /b: no such file", "ERROR x"]);
    assert_eq!(selfcheck_report(rep, true).lines.len(), 5);
}

#[test]
fn backup_reply_names_the_streams_and_the_sendbackup_request() {
    let rep = packet(&fixture("bsdtcp-backup", "tcp2-b2a.bin"), PacketType::Rep);
    let reply = parse_backup(&rep).expect("backup reply");
    assert_eq!(
        reply.streams,
        vec![
            (Stream::Data, 499_999),
            (Stream::Mesg, 499_998),
            (Stream::Index, 499_997),
            (Stream::State, 499_996),
        ]
    );
    let text = String::from_utf8(reply.request.clone()).expect("utf-8");
    assert!(text.starts_with("OPTIONS features="), "{text}");
    assert!(
        !text.contains("CONNECT") && !text.contains("GOPTIONS"),
        "{text}"
    );
    assert!(text.contains("<level>0</level>"), "{text}");
    // Our sendbackup takes it (the request of the dump).
    let dle = proto::dle::xml::parse_single_dle(&reply.request[text.find("<dle>").unwrap()..])
        .expect("dle");
    assert_eq!(
        dle.disk.as_deref(),
        Some(&b"/tmp/amanda-harness/data-ambackup/second_dle"[..])
    );
}

#[test]
fn backup_refusals_and_broken_replies() {
    let rep = packet(
        &fixture("bsdtcp-error-no-such-dle", "tcp2-b2a.bin"),
        PacketType::Rep,
    );
    assert_eq!(
        parse_backup(&rep),
        Err(BackupRefused::Errors(vec![
            "ERROR No '/no/such/dle' dle for host 'localhost'".into()
        ]))
    );
    // Each refused for its own fault, named in the refusal.
    for (bad, why) in [
        (&b"GOPTIONS features=ff\n<dle></dle>"[..], "no CONNECT line"),
        (b"CONNECT DATA 499999\n<dle></dle>", "no MESG stream"),
        (
            b"CONNECT DATA 1 MESG 499998\nGOPTIONS x\n",
            "DATA has no valid handle",
        ),
        (
            b"CONNECT DATA 499999 MESG 499999\nGOPTIONS x\n",
            "MESG or its handle twice",
        ),
        (
            b"CONNECT DATA 499999 MESG\nGOPTIONS x\n",
            "MESG has no valid handle",
        ),
        (
            b"CONNECT DATA 499999 MESG 499998 BOGUS 7\nGOPTIONS x\n",
            "unknown stream \"BOGUS\"",
        ),
        (
            b"CONNECT DATA 99999999999 MESG 499998\nGOPTIONS x\n",
            "DATA has no valid handle",
        ),
        (b"CONNECT MESG 499998\nGOPTIONS x\n", "no DATA stream"),
    ] {
        match parse_backup(bad) {
            Err(BackupRefused::Malformed(e)) => assert!(e.contains(why), "{e:?} lacks {why:?}"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

#[test]
fn the_real_servers_mesg_stream_ends_with_backup_done() {
    let mut m = ServerMesg::new();
    let mut printed = Vec::new();
    for (h, p) in frames(&fixture("bsdtcp-backup", "tcp2-b2a.bin")) {
        if h == 499_998 && !p.is_empty() {
            printed.extend(m.push(&p).expect("lines"));
        }
    }
    assert!(m.ended());
    assert_eq!(m.outcome(), Outcome::Done);
    assert_eq!(
        printed,
        vec![
            "start backup: /tmp/amanda-harness/data-ambackup/second_dle",
            "backup done: /tmp/amanda-harness/data-ambackup/second_dle",
        ]
    );
}

#[test]
fn mesg_lines_split_anywhere_failures_and_silence() {
    let mut m = ServerMesg::new();
    let mut all = Vec::new();
    for chunk in [
        &b"start back"[..],
        b"up: /a\nbackup fai",
        b"led: /a: chunker failed\nMESG",
        b" END\njunk\n",
    ] {
        all.extend(m.push(chunk).unwrap());
    }
    assert_eq!(
        all,
        vec!["start backup: /a", "backup failed: /a: chunker failed"]
    );
    assert!(m.ended());
    assert!(matches!(m.outcome(), Outcome::Failed(l) if l.contains("chunker failed")));
    let mut quiet = ServerMesg::new();
    quiet.push(b"start backup: /a\n").unwrap();
    assert!(matches!(quiet.outcome(), Outcome::Failed(_)));
}

#[test]
fn a_server_that_never_ends_its_mesg_line_is_bounded() {
    let mut m = ServerMesg::new();
    let chunk = vec![b'x'; 4096];
    let mut failed = false;
    for _ in 0..(MAX_MESG_LINE / chunk.len() + 2) {
        if m.push(&chunk).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "an endless MESG line was accepted");
    assert!(m.partial.len() <= MAX_MESG_LINE);
}
