use super::*;
use proptest::prelude::*;

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

/// The first and the error object of the bsd-error-missing-dle-amcheck trace, verbatim.
const TRACE_SAMPLE: &str = r#"MESSAGE JSON
  {
    "source_filename" : "selfcheck.c",
    "source_line" : "207",
    "severity" : "info",
    "process" : "selfcheck",
    "running_on" : "amanda-client",
    "component" : "amanda",
    "module" : "amanda",
    "code" : "3600000",
    "version" : "3.5.1",
    "hostname" : "localhost",
    "message" : "version '3.5.1"
  },
  {
    "source_filename" : "client_util.c",
    "source_line" : "1920",
    "severity" : "error",
    "process" : "amgtar",
    "running_on" : "amanda-client",
    "component" : "application",
    "module" : "amgtar",
    "code" : "3600062",
    "errnocode" : "ENOENT",
    "errnostr" : "No such file or directory",
    "merrno" : "2",
    "dirname" : "/tmp/amanda-harness/no-such-dir",
    "message" : "can not stat '/tmp/amanda-harness/no-such-dir': No such file or directory"
  },
  {
    "source_filename" : "selfcheck.c",
    "source_line" : "1665",
    "severity" : "info",
    "process" : "selfcheck",
    "running_on" : "amanda-client",
    "component" : "amanda",
    "module" : "amanda",
    "code" : "3600071",
    "avail" : "81821696",
    "dirname" : "/etc",
    "hostname" : "localhost",
    "message" : "dir '/etc' has more than 81821696 KB available"
  }"#;

#[test]
fn constructors_reproduce_the_real_clients_bytes() {
    let msgs = vec![
        msg::version(b"localhost"),
        msg::cannot_stat_dir(Origin::AMGTAR, b"/tmp/amanda-harness/no-such-dir", 2).relayed(),
        msg::space(b"/etc", Ok(81821696), 64, b"localhost"),
    ];
    assert_eq!(
        String::from_utf8(encode_json_reply(&msgs)).unwrap(),
        TRACE_SAMPLE
    );
}

#[test]
fn parse_json_reply_is_exact() {
    let msgs = parse_json_reply(TRACE_SAMPLE.as_bytes()).unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[1].errnocode.as_ref().unwrap(), "ENOENT");
    assert_eq!(msgs[1].merrno, None);
    assert_eq!(msgs[1].args[0], ("merrno".into(), "2".into()));
    assert_eq!(encode_json_reply(&msgs), TRACE_SAMPLE.as_bytes());
}

#[test]
fn native_errno_fields_come_first() {
    let m = msg::cannot_stat_dir(Origin::SELFCHECK, b"/x", 13);
    let s = String::from_utf8(m.encode()).unwrap();
    assert!(s.contains("\"code\" : \"3600062\",\n    \"merrno\" : \"13\",\n    \"errnocode\" : \"EACCES\",\n    \"errnostr\" : \"Permission denied\",\n    \"dirname\" : \"/x\",\n"), "{s}");
    assert_eq!(
        parse_json_reply(&encode_json_reply(std::slice::from_ref(&m))).unwrap(),
        vec![JsonMessage {
            quoted_message: None,
            ..m
        }]
    );
}

#[test]
fn legacy_lines_match_tv4() {
    assert_eq!(
        msg::version(b"client.example.com").legacy_line(),
        b"OK version '3.5.1\n"
    );
    assert_eq!(
        msg::distro(b"Debian", b"h").legacy_line(),
        b"OK distro Debian\n"
    );
    assert_eq!(
        msg::platform(b"Debian GNU/Linux 10 (buster)", b"h").legacy_line(),
        b"OK platform \"Debian GNU/Linux 10 (buster)\"\n"
    );
    assert_eq!(
        msg::options(F.as_bytes(), b"client.example.com").legacy_line(),
        format!("OPTIONS features={F};hostname=client.example.com;\n").into_bytes()
    );
    assert_eq!(
        msg::disk_ok(b"h", b"/home", b"/home").legacy_line(),
        b"OK /home\n"
    );
    assert_eq!(
        msg::cannot_stat_dir(Origin::SELFCHECK, b"/no such", 2).legacy_line(),
        b"ERROR [can not stat '\"/no such\"': No such file or directory]\n"
    );
    assert_eq!(
        msg::format_error(Some(b"XML: Invalid frob element"), b"h").legacy_line(),
        b"ERROR [FORMAT ERROR IN REQUEST PACKET \"XML: Invalid frob element\"]\n"
    );
}

#[test]
fn writer_chooses_the_form_from_server_features() {
    let mut w = ReplyWriter::new(&Features::amanda_3_5_1());
    assert_eq!(w.header(), b"MESSAGE JSON\n");
    let a = w.message(&msg::version(b"h"));
    let b = w.message(&msg::version(b"h"));
    assert!(a.starts_with(b"  {\n"));
    assert!(b.starts_with(b",\n  {\n"));
    let mut legacy = ReplyWriter::new(&Features::minimal_gnutar_client());
    assert!(!legacy.is_json());
    assert_eq!(legacy.message(&msg::version(b"h")), b"OK version '3.5.1\n");
}

#[test]
fn messages_from_the_traces() {
    let m = msg::access(
        Origin::AMGTAR,
        b"/bin/tar",
        "execute",
        "executable",
        None,
        0,
        34,
    );
    assert_eq!(m.message, "/bin/tar executable (ruid:0 euid:34)");
    assert_eq!(
        (m.source_filename.as_bytes(), m.source_line),
        (&b"client_util.c"[..], 1870)
    );
    let m = msg::access(
        Origin::SELFCHECK,
        b"/dev/null",
        "read/write",
        "read/writable",
        Some(13),
        34,
        34,
    );
    assert_eq!(
        m.message,
        "can not read/write '/dev/null': Permission denied (ruid:34 euid:34)"
    );
    assert_eq!(
        msg::amgtar_gtar_version(b"1.34", b"/d", b"/d", b"h").message,
        "amgtar gtar-version 1.34"
    );
    assert_eq!(msg::amgtar_ok(b"/d", b"/d", b"h").message, "amgtar");
    assert_eq!(msg::distro(b"Debian", b"h").source_line, 1695);
    assert_eq!(msg::platform(b"x", b"h").source_line, 1699);
    assert_eq!(msg::options(b"x", b"h").source_line, 213);
    assert_eq!(
        msg::space(b"/d", Ok(10), 64, b"h").message,
        "dir '/d' needs 64 KB, only has 10 KB available"
    );
    assert_eq!(
        msg::space(b"/d", Ok(0), 64, b"h").message,
        "dir '/d' needs 64 KB, has nothing available"
    );
    assert_eq!(
        msg::space(b"/d", Err(2), 64, b"h").message,
        "cannot get filesystem usage for '/d: No such file or directory"
    );
    assert_eq!(
        msg::auth_mismatch(b"bsd", b"bsdtcp", b"h", b"/d", b"/d").message,
        "client configured for auth=bsd while server requested 'bsdtcp'"
    );
    assert_eq!(JsonMessage::build(Origin::SELFCHECK, 1, &[], None), None);
}

#[test]
fn json_escaping_like_ammessage() {
    assert_eq!(
        json_escape(b"a\"b\\c\n\t\r\x08\x0c\x0b\x01\x1f\xc3\xa9"),
        b"a\\\"b\\\\c\\n\\t\\r\\b\\f\\v\\u0001\\u001F\xc3\xa9"
    );
}

#[test]
fn amcheck_reader_json_and_legacy() {
    let r = read_reply(TRACE_SAMPLE.as_bytes());
    assert!(r.json);
    assert_eq!(r.results.len(), 3);
    let problems: Vec<_> = r.problems().collect();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].code, Some(3600062));
    assert_eq!(
        problems[0].message,
        "can not stat '/tmp/amanda-harness/no-such-dir': No such file or directory"
    );

    let legacy = format!(
        "OK version '3.5.1\nOPTIONS features={F};hostname=h;\nOK /home\nERROR [can not stat /x]\nodd line\n"
    );
    let r = read_reply(legacy.as_bytes());
    assert!(!r.json);
    assert_eq!(r.features, Some(Ok(Features::amanda_3_5_1())));
    assert_eq!(r.results.len(), 4);
    assert_eq!(
        r.problems()
            .map(|p| p.message.to_string())
            .collect::<Vec<_>>(),
        vec!["[can not stat /x]", "odd line"]
    );
}

proptest! {
    #[test]
    fn encode_parse_round_trip(
        args in proptest::collection::vec(("[a-z_-]{1,8}", proptest::collection::vec(1u8..=255, 0..16)), 0..4),
        message in proptest::collection::vec(1u8..=255, 0..32),
        errno in proptest::option::of(1i32..40),
        sev in 0usize..6,
    ) {
        let severity = [Severity::Success, Severity::Info, Severity::Message, Severity::Warning, Severity::Error, Severity::Critical][sev];
        let m = JsonMessage {
            source_filename: "selfcheck.c".into(), source_line: 1, severity,
            process: "selfcheck".into(), running_on: RUNNING_ON_CLIENT.into(), component: "amanda".into(), module: "amanda".into(),
            code: 3600000, merrno: errno, errnocode: errno.map(|_| "E".into()), errnostr: errno.map(|_| "s".into()),
            args: args.into_iter().filter(|(k, _)| k != "message" && k != "merrno" && k != "errnocode" && k != "errnostr").map(|(k, v)| (k.into(), v.into())).collect(),
            message: message.into(), quoted_message: None, hint: None,
        };
        let body = encode_json_reply(&[m.clone(), m.clone()]);
        prop_assert_eq!(parse_json_reply(&body).unwrap(), vec![m.clone(), m]);
    }

    #[test]
    fn readers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_reply(&s);
        let mut with_header = b"MESSAGE JSON\n".to_vec();
        with_header.extend_from_slice(&s);
        let _ = read_reply(&with_header);
        let _ = parse_json_reply(&with_header);
    }
}
