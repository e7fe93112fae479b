//! selfcheck tests: the reply compared with the real Debian client's for the same request.

use std::path::PathBuf;

use super::*;
use crate::services::context::ContextInner;
use crate::services::context::tests::test_context;
use proto::selfcheck::parse_json_reply;

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn opts(host: &str) -> String {
    format!("OPTIONS features={F};maxdumps=1;hostname={host};config=DailySet1;\n")
}

fn gnutar_dle(disk: &str, auth: &str) -> String {
    format!(
        "<dle>\n  <program>GNUTAR</program>\n  <estimate>CLIENT </estimate>\n  <disk>{disk}</disk>\n  <auth>{auth}</auth>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
    )
}

fn amgtar_dle(disk: &str) -> String {
    format!(
        "<dle>\n  <program>APPLICATION</program>\n  <backup-program>\n    <plugin>amgtar</plugin>\n    <property>\n      <name>atime-preserve</name>\n      <value>no</value>\n    </property>\n  </backup-program>\n  <estimate>CLIENT </estimate>\n  <disk>{disk}</disk>\n  <auth>bsdtcp</auth>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
    )
}

fn run(ctx: &ServiceContext, args: &str) -> Vec<u8> {
    match start(ctx, args.as_bytes()) {
        Start::Job(job) => job(&mut |_| {}),
        Start::Reply(r) => r,
        Start::Backup(_) => panic!("selfcheck never makes a backup"),
    }
}

fn real_selfcheck(req: &str) -> Option<Vec<u8>> {
    crate::services::util::real_client_service("selfcheck", req)
}

/// (code, severity, process, message) with host-specific values blanked.
fn normalized(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body)
        .replace(F, "FEATURES")
        .replace(&crate::services::features::advertised_hex(), "FEATURES");
    let msgs = parse_json_reply(text.as_bytes()).expect("JSON reply");
    msgs.iter()
        .map(|m| {
            let mut s = String::from_utf8_lossy(&m.message).into_owned();
            if let Some(i) = s.find(" (ruid:") {
                s.truncate(i);
            }
            if s.starts_with("dir '") {
                s = s.split(" has more than ").next().unwrap_or(&s).to_owned();
            }
            if s.starts_with("amgtar gtar-version")
                || s.starts_with("platform")
                || s.starts_with("distro")
            {
                s = s.split(' ').next().unwrap_or(&s).to_owned();
            }
            let keys: Vec<String> = m
                .args
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            format!(
                "{} {} {} {} [{}] {}",
                m.code,
                m.severity.name(),
                String::from_utf8_lossy(&m.process),
                String::from_utf8_lossy(&m.source_filename),
                keys.join(","),
                s
            )
        })
        .collect()
}

fn real_like_context() -> ServiceContext {
    let mut inner = ContextInner::debian_defaults("bsdtcp");
    inner.tar.gnutar_path = PathBuf::from("/bin/tar");
    inner.tar.runtar_path = Some(PathBuf::from("/usr/lib/amanda/runtar"));
    ServiceContext::new(inner)
}

#[test]
fn replies_match_the_real_client_for_existing_and_missing_dles() {
    let dir = tempfile::Builder::new()
        .prefix("amandad-rs-selfcheck-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = data.display().to_string();
    let missing = dir.path().join("no-such-dir").display().to_string();
    let ctx = real_like_context();
    for dles in [
        format!(
            "{}{}",
            gnutar_dle(&data, "bsdtcp"),
            gnutar_dle(&missing, "bsd")
        ),
        format!("{}{}", amgtar_dle(&missing), amgtar_dle(&data)),
        format!("{}{}", gnutar_dle(&data, "bsdtcp"), amgtar_dle(&data)),
    ] {
        let req = format!("{}{dles}", opts("localhost"));
        let Some(real) = real_selfcheck(&req) else {
            return;
        };
        let ours = run(&ctx, &req);
        assert_eq!(
            normalized(&ours),
            normalized(&real),
            "request:\n{req}\nours:\n{}",
            String::from_utf8_lossy(&ours)
        );
    }
}

#[test]
fn legacy_form_for_servers_without_feature_113() {
    let ctx = test_context();
    let body = run(
        &ctx,
        "OPTIONS features=ffffffff;hostname=h;\nGNUTAR /nonexistent/amanda-rs 0 OPTIONS |;auth=bsd;index;\n",
    );
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "OK version '3.5.1");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OPTIONS features=") && l.ends_with(";hostname=h;")),
        "{text}"
    );
    assert!(
        lines.contains(&"ERROR [client configured for auth=bsdtcp while server requested 'bsd']"),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.starts_with("ERROR [h: Could not access /nonexistent/amanda-rs (/nonexistent/amanda-rs): No such file or directory]")), "{text}");
    // our helper warning is not an error for a legacy server
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OK amandad-runtar is not installed")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("OK ") || l.starts_with("ERROR [") || l.starts_with("OPTIONS ")),
        "{text}"
    );
}

#[test]
fn request_errors_end_the_reply() {
    let ctx = test_context();
    let body = run(
        &ctx,
        &format!("{}<dle><program>GNUTAR</program>", opts("h")),
    );
    let msgs = parse_json_reply(&body).unwrap();
    assert_eq!(msgs.last().unwrap().code, 3_600_007);
    let body = run(&ctx, "OPTIONS features=ffffffff;\nGNUTAR\n");
    assert!(String::from_utf8_lossy(&body).ends_with("ERROR [FORMAT ERROR IN REQUEST PACKET]\n"));
    assert_eq!(
        run(&ctx, ""),
        b"ERROR [Missing OPTIONS line in selfcheck input]\n"
    );
}

#[test]
fn unsupported_dumptypes_are_errors_and_a_missing_helper_is_a_warning() {
    let ctx = test_context();
    let dle =
        gnutar_dle("/tmp", "bsdtcp").replace("<record>YES</record>", "<kencrypt>YES</kencrypt>");
    let body = run(&ctx, &format!("{}{dle}", opts("h")));
    let msgs = parse_json_reply(&body).unwrap();
    assert!(
        msgs.iter()
            .any(|m| m.severity == Severity::Error && m.message.starts_with(b"kencrypt")),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(msgs.iter().any(|m| m.severity == Severity::Warning
        && m.message.starts_with(b"amandad-runtar is not installed")));
    let dle = amgtar_dle("/tmp").replace("amgtar", "amstar");
    let body = run(&ctx, &format!("{}{dle}", opts("h")));
    let msgs = parse_json_reply(&body).unwrap();
    assert!(
        msgs.iter().any(|m| m.code == 3_600_033),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// A reply of `dles` DLEs like amgtar's (five messages each, one error every ten DLEs).
fn big_reply(dles: usize, json: bool) -> (ReplyWriter, Vec<Item>) {
    let f = proto::features::Features::parse(F.as_bytes()).unwrap();
    let mut features = f.clone();
    if !json {
        features = proto::features::Features::parse(b"").unwrap_or(f);
    }
    let writer = ReplyWriter::new(&features);
    let host = b"client.example".to_vec();
    let mut items = vec![
        Item::Raw(Vec::new()),
        Item::Msg(None, Box::new(msg::version(&host))),
        Item::Msg(None, Box::new(msg::options(F.as_bytes(), &host))),
    ];
    for g in 0..dles {
        let disk = format!("/srv/data/volume-{g:03}/some/longer/path");
        let d = disk.as_bytes();
        for _ in 0..4 {
            items.push(Item::Msg(Some(g), Box::new(msg::amgtar_ok(d, d, &host))));
        }
        if g % 10 == 3 {
            items.push(Item::Msg(
                Some(g),
                Box::new(msg::could_not_access(libc::ENOENT, b"access", &host, d, d)),
            ));
        } else {
            items.push(Item::Msg(Some(g), Box::new(msg::disk_ok(&host, d, d))));
        }
    }
    items.push(Item::Msg(
        None,
        Box::new(msg::space(b"/tmp", Ok(1 << 30), 64, &host)),
    ));
    (writer, items)
}

/// Issue 10: the selfcheck REP of 100 DLEs over bsd (294,981 bytes) was never sent, and
/// amcheck timed out. It is cut to one datagram: the host's messages, every error, a notice
/// that names the DLEs left out and bsdtcp, then whole DLEs.
#[test]
fn an_oversized_reply_over_udp_keeps_errors_and_names_what_was_left_out() {
    let (writer, items) = big_reply(100, true);
    let whole = render(Some(writer.clone()), &items);
    assert!(whole.len() > 3 * MAX_UDP_BODY, "{}", whole.len());
    let cut = fit_datagram(writer, &items, 100, MAX_UDP_BODY, "bsd");
    assert!(cut.len() <= MAX_UDP_BODY, "{}", cut.len());
    let msgs = parse_json_reply(&cut).expect("still a JSON reply");
    let texts: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message).into_owned())
        .collect();
    let notice = msgs
        .iter()
        .find(|m| m.code == 3_600_099)
        .expect("the notice");
    assert_eq!(
        notice.severity,
        Severity::Error,
        "amcheck counts it as a problem"
    );
    let text = String::from_utf8_lossy(&notice.message);
    assert!(
        text.contains("the selfcheck reply for 100 DLEs is "),
        "{text}"
    );
    assert!(text.contains("auth bsdtcp has no such limit"), "{text}");
    assert!(text.contains("count as not checked"), "{text}");
    // Every one of the ten errors is there, before any DLE's OK.
    let errors: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.severity == Severity::Error && m.code != 3_600_099)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(errors.len(), 10, "{texts:#?}");
    let first_ok = msgs
        .iter()
        .position(|m| m.arg("disk").is_some() && m.severity != Severity::Error)
        .unwrap();
    assert!(errors.iter().all(|&e| e < first_ok));
    // The count in the notice is the number of DLEs not wholly in the reply.
    let whole_dles = (0..100)
        .filter(|g| {
            let disk = format!("/srv/data/volume-{g:03}/some/longer/path");
            msgs.iter()
                .filter(|m| m.arg("disk").is_some_and(|d| **d == *disk.as_bytes()))
                .count()
                == 5
        })
        .count();
    assert!(whole_dles > 0 && whole_dles < 100);
    assert!(
        text.contains(&format!(
            "the results of {} DLEs are left out",
            100 - whole_dles
        )),
        "{text} ({whole_dles} whole)"
    );
    // The host-wide check after the DLEs is kept.
    assert!(texts.iter().any(|t| t.contains("/tmp")), "{texts:#?}");
}

#[test]
fn a_reply_that_fits_is_sent_unchanged_and_bsdtcp_is_never_cut() {
    let (writer, items) = big_reply(5, true);
    let whole = render(Some(writer.clone()), &items);
    assert!(whole.len() < MAX_UDP_BODY);
    assert_eq!(fit_datagram(writer, &items, 5, MAX_UDP_BODY, "bsd"), whole);
    let mut inner = ContextInner::debian_defaults("bsdtcp");
    inner.auth = "bsdtcp".into();
    let check = Check::new(ServiceContext::new(inner));
    assert_eq!(check.datagram_limit(), None);
    let check = Check::new(ServiceContext::new(ContextInner::debian_defaults("bsdudp")));
    assert_eq!(check.datagram_limit(), Some(MAX_UDP_BODY));
}

#[test]
fn the_legacy_form_is_cut_the_same_way() {
    let (writer, items) = big_reply(2000, false);
    assert!(!writer.is_json());
    let cut = fit_datagram(writer, &items, 2000, MAX_UDP_BODY, "bsdudp");
    assert!(cut.len() <= MAX_UDP_BODY);
    let text = String::from_utf8_lossy(&cut);
    let first = text
        .lines()
        .position(|l| l.starts_with("ERROR [the selfcheck reply"))
        .unwrap();
    let first_ok = text
        .lines()
        .position(|l| l.starts_with("OK ") && l.contains("volume"))
        .unwrap();
    assert!(first < first_ok, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("ERROR [client.example: Could not access"))
            .count(),
        200
    );
}

/// issue 12: client compression and encryption are supported; the programs a dump would
/// start are checked (present, executable), gzip is in-process and needs nothing.
#[test]
fn client_filters_are_checked_for_their_programs() {
    let ctx = test_context();
    let with = |xml: &str| {
        let dle = gnutar_dle("/tmp", "bsdtcp").replace("<record>YES</record>", xml);
        let body = run(&ctx, &format!("{}{dle}", opts("h")));
        (
            parse_json_reply(&body).unwrap(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    };
    // Whether Debian's directories exist depends on the machine (/var/log/amanda comes with
    // Amanda), so a failed space check (3600068) is not counted; this test is about the filters.
    let (msgs, body) = with("<compress>FAST</compress>");
    assert!(
        !msgs
            .iter()
            .any(|m| m.severity == Severity::Error && m.code != 3_600_068),
        "{body}"
    );

    let (msgs, body) = with(
        "<compress>CUSTOM<custom-compress-program>/bin/cat</custom-compress-program>\n  </compress>\n  <encrypt>CUSTOM<custom-encrypt-program>/nonexistent/amcrypt</custom-encrypt-program>\n    <decrypt-option>-d</decrypt-option>\n  </encrypt>",
    );
    assert!(
        msgs.iter()
            .any(|m| m.code == 3_600_064 && m.message.starts_with(b"/bin/cat executable")),
        "{body}"
    );
    assert!(
        msgs.iter().any(|m| m.severity == Severity::Error
            && String::from_utf8_lossy(&m.message).contains("/nonexistent/amcrypt")),
        "{body}"
    );

    let (msgs, body) = with("<compress>CUSTOM</compress>");
    assert!(
        msgs.iter().any(|m| m.severity == Severity::Error
            && m.message
                .ends_with(b"client custom compression with no compression program specified")),
        "{body}"
    );
}
