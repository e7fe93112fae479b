//! selfcheck tests: the reply compared with the real Debian client's for the same request.

use std::path::{Path, PathBuf};

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
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/lib/amanda/selfcheck").exists() {
        crate::services::util::skip_unless_ci("needs root and the real amanda-client");
        return None;
    }
    let mut child = std::process::Command::new("runuser")
        .args([
            "-u",
            "backup",
            "--",
            "/usr/lib/amanda/selfcheck",
            "amandad",
            "bsdtcp",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(req.as_bytes()).ok()?;
    Some(child.wait_with_output().ok()?.stdout)
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
    inner.gnutar_path = PathBuf::from("/bin/tar");
    inner.runtar_path = Some(PathBuf::from("/usr/lib/amanda/runtar"));
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
        gnutar_dle("/tmp", "bsdtcp").replace("<record>YES</record>", "<compress>FAST</compress>");
    let body = run(&ctx, &format!("{}{dle}", opts("h")));
    let msgs = parse_json_reply(&body).unwrap();
    assert!(
        msgs.iter()
            .any(|m| m.severity == Severity::Error
                && m.message.starts_with(b"client-side compression")),
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
