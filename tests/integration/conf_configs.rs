//! `conf` against real configurations: the examples Debian's amanda-server and
//! amanda-client packages install (copied to tests/fixtures/conf/debian/), the configs the
//! real-Amanda harness writes (tests/fixtures/conf/harness/, its heredoc with fixed
//! values), and broken configs whose exact messages are pinned (tests/fixtures/conf/broken/).

use std::path::{Path, PathBuf};

use conf::fs::{ChrootFs, MemFs};
use conf::{
    AmandaHosts, AuthSetting, ClientConfig, Config, ConfigLocation, Disklist, SecurityConf,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conf")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Builds a fake root with files at absolute paths, for configs whose includefiles are
/// absolute (/etc/amanda/...).
fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (dest, src) in files {
        let p = dir.path().join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, read(src)).unwrap();
    }
    dir
}

fn ok<T>(r: Result<conf::Loaded<T>, conf::Errors>, what: &str) -> conf::Loaded<T> {
    r.unwrap_or_else(|e| panic!("{what} should parse without errors:\n{e}"))
}

/// The fixture `rel` as amanda-client.conf named `name` (no includes); it must parse cleanly.
fn client_conf(name: &str, rel: &str) -> ClientConfig {
    ok(
        ClientConfig::parse_with(&MemFs::new(), name, &read(rel), None),
        rel,
    )
    .value
}

#[test]
fn debian_example_amanda_conf_parses_and_resolves_its_definitions() {
    let rel = "debian/server/amanda.conf";
    let l = ok(
        Config::parse_with(&MemFs::new(), "amanda.conf", &read(rel), None),
        rel,
    );
    let c = l.value;
    assert_eq!(c.org, "DailySet1");
    assert_eq!(c.inparallel, 4);
    assert_eq!(c.dumpcycle, 28, "dumpcycle 4 weeks");
    assert_eq!(c.tapecycle, 25);
    assert_eq!(c.netusage_kibps, 8000);
    assert_eq!(
        c.holdingdisks.len(),
        1,
        "old-style holdingdisk hd1 {{}} selects it"
    );
    assert_eq!(c.holdingdisks[0].use_kib, -102400);
    assert_eq!(c.holdingdisks[0].chunksize_kib, 1024 * 1024);
    let t = c.tapetypes.get("HP-DAT").unwrap();
    assert_eq!(t.length_kib, 1930 * 1024);
    assert_eq!(
        t.part_size_kib,
        3 * 1024 * 1024,
        "inherited from tapetype global"
    );
    let d = c.dumptype("comp-user-tar").unwrap();
    assert_eq!(d.program, conf::Program::Gnutar);
    assert_eq!(d.compress, conf::value::Compress::ClientFast);
    assert_eq!(d.priority, 1);
    assert_eq!(d.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
    let a = c.dumptype("dt_amgtar").unwrap();
    assert_eq!(a.application.as_ref().unwrap().plugin, "amgtar");
    assert_eq!(c.scripts.get("sc-email").unwrap().execute_on.len(), 12);
    assert_eq!(c.interfaces.get("local").unwrap().use_kibps, 8000);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    // The example disklist names interface le0, which the example amanda.conf only has in
    // a comment: real Amanda refuses it too ("undefined network interface").
    let e = Disklist::parse(&c, "disklist", &read("debian/server/disklist")).unwrap_err();
    assert_eq!(
        e.messages(),
        ["disklist:50:5: interface \"le0\" is not defined"]
    );
    let mut text = read("debian/server/amanda.conf");
    text.extend_from_slice(b"define interface le0 {\n    use 400 kbps\n}\n");
    let c = ok(
        Config::parse_with(&MemFs::new(), "amanda.conf", &text, None),
        "amanda.conf+le0",
    )
    .value;
    let dl = ok(
        Disklist::parse(&c, "disklist", &read("debian/server/disklist")),
        "examples/disklist",
    )
    .value;
    assert_eq!(dl.entries.len(), 32);
    let slow = dl
        .entries
        .iter()
        .find(|e| e.host == "slowsrv" && e.disk == b"/usr")
        .unwrap();
    assert_eq!(slow.spindle, 2);
    assert_eq!(slow.interface.name, "le0");
    assert_eq!(slow.dumptype.compress, conf::value::Compress::ServerFast);
    assert_eq!(slow.dumptype.exclude.lists, [&b".exclude"[..]]);
    let big = dl.entries.iter().find(|e| e.disk == b"/diskA/ag").unwrap();
    assert_eq!(big.device.as_deref(), Some(&b"/diskA"[..]));
    assert_eq!(big.dumptype.exclude.files, [&b"./big1"[..], b"./big2"]);
    assert_eq!(big.dumptype.include.files, [&b"./[a-g]*"[..]]);
    let master = dl.entries.iter().find(|e| e.host == "master").unwrap();
    assert_eq!(
        (master.spindle, master.interface.name.as_str()),
        (-1, "local")
    );
}

#[test]
fn debian_quick_example_with_absolute_includes_parses() {
    let root = root_with(&[
        (
            "/etc/amanda/DailySet1/amanda.conf",
            "debian/server/quick/amanda.conf",
        ),
        (
            "/etc/amanda/DailySet1/tapetypes",
            "debian/server/quick/tapetypes",
        ),
        (
            "/etc/amanda/DailySet1/dumptypes",
            "debian/server/quick/dumptypes",
        ),
        (
            "/etc/amanda/DailySet1/disklist",
            "debian/server/quick/disklist",
        ),
    ]);
    let fs = ChrootFs::new(root.path());
    let loc = ConfigLocation::resolve("DailySet1");
    let c = ok(Config::load_with(&fs, &loc), "quick/amanda.conf").value;
    assert_eq!(c.tapetype, "CD650");
    assert_eq!(c.tapetypes.get("cd650").unwrap().length_kib, 666000);
    let lev = c.dumptype("lev-medium").unwrap();
    assert_eq!(lev.auth, AuthSetting::Other("ssh".into()));
    assert_eq!(lev.maxpromoteday, 6);
    assert_eq!(lev.exclude.lists, [&b".amanda-exclude.list"[..]]);
    assert!(lev.exclude.optional);
    assert_eq!(
        lev.application
            .as_ref()
            .unwrap()
            .properties
            .first("check-device"),
        Some("NO")
    );
    let dl = ok(Disklist::load_with(&fs, &c), "quick/disklist").value;
    assert_eq!(dl.entries.len(), 1);
    assert_eq!(dl.entries[0].spindle, 1);
    assert_eq!(
        dl.entries[0].location.to_string(),
        "/etc/amanda/DailySet1/disklist:8:1"
    );
}

#[test]
fn debian_amserverconfig_templates_parse_with_their_includes() {
    for template in [
        "amanda-harddisk.conf",
        "amanda-single-tape.conf",
        "amanda-tape-changer.conf",
        "amanda-S3.conf",
        "amanda-CAStor.conf",
    ] {
        let main = format!("debian/template.d/{template}");
        let root = root_with(&[
            ("/etc/amanda/DailySet1/amanda.conf", &main),
            (
                "/etc/amanda/DailySet1/advanced.conf",
                "debian/template.d/advanced.conf",
            ),
            (
                "/etc/amanda/template.d/dumptypes",
                "debian/template.d/dumptypes",
            ),
            (
                "/etc/amanda/template.d/tapetypes",
                "debian/template.d/tapetypes",
            ),
        ]);
        let loc = ConfigLocation::resolve("DailySet1");
        let l = ok(
            Config::load_with(&ChrootFs::new(root.path()), &loc),
            template,
        );
        let c = l.value;
        assert!(l.warnings.is_empty(), "{template}: {:?}", l.warnings);
        assert_eq!(
            c.dumptype("gui-encrypt").unwrap().auth,
            AuthSetting::Known(proto::Auth::Bsdtcp),
            "{template}"
        );
        assert!(c.tapetypes.get(&c.tapetype).is_some(), "{template}");
        assert_eq!(
            c.interfaces.get("local").unwrap().use_kibps,
            8000,
            "{template}"
        );
    }
}

#[test]
fn debian_client_examples_parse() {
    let c = client_conf("amanda-client.conf", "debian/client/amanda-client.conf");
    assert_eq!(c.conf, "DailySet1");
    assert_eq!(c.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
    assert_eq!(c.tapedev, "tape:/dev/YOUR-TAPE-DEVICE-HERE");
    let pg = client_conf(
        "amanda-client-postgresql.conf",
        "debian/client/amanda-client-postgresql.conf",
    );
    assert_eq!(pg.properties.first("foo-PG-PORT"), Some("5432"));
    assert_eq!(pg.ssh_keys, "/var/lib/amanda/.ssh/id_rsa_amrecover");
    let etc = client_conf("amanda-client.conf", "debian/client/etc-amanda-client.conf");
    assert_eq!(etc.conf, "harness");
    assert_eq!(etc.gnutar_list_dir, "/var/lib/amanda/gnutar-lists");
}

#[test]
fn debian_security_conf_and_harness_amandahosts() {
    let s = ok(
        SecurityConf::parse(
            "/etc/amanda-security.conf",
            &read("debian/amanda-security.conf"),
        ),
        "amanda-security.conf",
    )
    .value;
    assert_eq!(
        s.tcp_port_range.unwrap().value,
        proto::PortRange::new(512, 1024).unwrap()
    );
    assert_eq!(
        s.udp_port_range.unwrap().value,
        proto::PortRange::new(840, 860).unwrap()
    );
    let h = AmandaHosts::parse(
        "/var/backups/.amandahosts",
        &read("debian/amandahosts-harness"),
        "backup",
    );
    assert!(h.check("localhost", true, "backup", "sendbackup").is_ok());
    assert!(h.check("localhost", true, "root", "amidxtaped").is_ok());
    assert_eq!(
        h.check("localhost", true, "root", "noop")
            .unwrap_err()
            .to_string(),
        "user root from localhost is not allowed to execute the service noop: Please add the line \"localhost root amdump\" to /var/backups/.amandahosts on the client"
    );
}

fn harness(dir: &str) -> (Config, Disklist) {
    let conf_dir = format!("/etc/amanda/{dir}");
    let root = root_with(&[
        (
            &format!("{conf_dir}/amanda.conf"),
            &format!("harness/{dir}/amanda.conf"),
        ),
        (
            &format!("{conf_dir}/disklist"),
            &format!("harness/{dir}/disklist"),
        ),
    ]);
    let fs = ChrootFs::new(root.path());
    let l = ok(Config::load_with(&fs, &ConfigLocation::resolve(dir)), dir);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let dl = ok(Disklist::load_with(&fs, &l.value), dir).value;
    (l.value, dl)
}

#[test]
fn harness_bsdtcp_config_resolves_to_what_the_dumper_needs() {
    let (c, dl) = harness("bsdtcp");
    assert_eq!(c.inparallel, 4);
    assert_eq!(c.holdingdisks.len(), 1);
    assert_eq!(c.holdingdisks[0].use_kib, 500 * 1024);
    assert_eq!(c.holdingdisks[0].chunksize_kib, 1024);
    assert_eq!(
        c.changers.get("vtl").unwrap().properties.first("num-slot"),
        Some("20")
    );
    assert_eq!(
        c.etimeout,
        conf::server::Etimeout::PerDisk(std::time::Duration::from_secs(60))
    );
    assert_eq!(dl.entries.len(), 2);
    let e = &dl.entries[1];
    assert_eq!(
        e.disk,
        "/tmp/amanda-harness/data/dle with space é".as_bytes()
    );
    let d = &e.dumptype;
    assert_eq!(d.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
    assert_eq!(d.client_port, "10080");
    assert_eq!(d.program, conf::Program::Application);
    let app = d.application.as_ref().unwrap();
    assert_eq!(
        (app.name.as_str(), app.plugin.as_str()),
        ("app_amgtar", "amgtar")
    );
    assert_eq!(app.properties.first("ATIME-PRESERVE"), Some("no"));
    assert_eq!(d.compress, conf::value::Compress::None);
    assert_eq!(d.estimate, [conf::value::Estimate::Client]);
    assert!(d.index && d.record);
    assert_eq!((d.priority, d.maxdumps), (2, 1));
    let site = site_of(&c, &dl, None, "/etc/amanda/bsdtcp/amanda.conf");
    let findings = portpool::check::check(&site);
    assert!(
        !findings
            .iter()
            .any(|f| f.severity == portpool::check::Severity::Error),
        "{findings:#?}"
    );
}

/// The site `portpool check` (and `dumper check`) lints, from a parsed configuration.
fn site_of(
    c: &Config,
    dl: &Disklist,
    security: Option<&SecurityConf>,
    path: &str,
) -> portpool::site::Site {
    portpool::conf_adapter::site_from(
        c,
        dl,
        None,
        security.map(|s| (std::path::Path::new("/etc/amanda-security.conf"), s)),
        portpool_alloc::Services::parse("/etc/services", "domain-s 853/udp\n").unwrap(),
        std::path::Path::new(path),
    )
}

#[test]
fn harness_port_exhaustion_config_is_caught_by_the_capacity_check() {
    let (c, dl) = harness("bsd-port-exhaustion");
    let security = SecurityConf::parse(
        "/etc/amanda-security.conf",
        &read("debian/amanda-security.conf"),
    )
    .unwrap()
    .value;
    let site = site_of(
        &c,
        &dl,
        Some(&security),
        "/etc/amanda/bsd-port-exhaustion/amanda.conf",
    );
    let findings = portpool::check::check(&site);
    let capacity: Vec<&portpool::check::Finding> =
        findings.iter().filter(|f| f.code == "capacity").collect();
    assert_eq!(capacity.len(), 1, "{findings:#?}");
    assert_eq!(
        capacity[0].origin,
        "/etc/amanda/bsd-port-exhaustion/amanda.conf:59:1"
    );
    assert!(
        capacity[0]
            .message
            .starts_with("reserved-udp-port 850,852 has 3 usable ports but needs 7"),
        "{}",
        capacity[0].message
    );
}

/// The broken configs and the exact messages they give.
const BROKEN: &[(&str, &[&str])] = &[
    (
        "port-range-dash.conf",
        &["port-range-dash.conf:12:19: expected a port range \"lo,hi\", found \"850-859\""],
    ),
    (
        "unterminated-string.conf",
        &[
            "unterminated-string.conf:1:5: unterminated quoted string (a newline inside quotes must be escaped with \\)",
        ],
    ),
    (
        "unclosed-block.conf",
        &["unclosed-block.conf:1:24: \"{\" is not closed by a \"}\" before the end of the file"],
    ),
    (
        "stray-close-brace.conf",
        &["stray-close-brace.conf:2:1: \"}\" without a matching \"{\""],
    ),
    (
        "brace-not-at-eol.conf",
        &["brace-not-at-eol.conf:1:21: expected end of line after \"{\", found \"index\""],
    ),
    (
        "close-brace-same-line.conf",
        &[
            "close-brace-same-line.conf:2:15: expected end of line (a \"}\" must be on a line of its own), found \"}\"",
        ],
    ),
    (
        "string-expected.conf",
        &["string-expected.conf:1:10: expected a quoted string like \"backup\", found \"backup\""],
    ),
    (
        "integer-expected.conf",
        &["integer-expected.conf:1:12: expected an integer, found \"many\""],
    ),
    (
        "inparallel-zero.conf",
        &["inparallel-zero.conf:1:12: inparallel must be positive, found 0"],
    ),
    (
        "undefined-parent.conf",
        &[
            "undefined-parent.conf:2:5: dumptype \"glob\" is not defined (a bare name in a dumptype block inherits from an earlier definition)",
        ],
    ),
    (
        "undefined-holdingdisk.conf",
        &["undefined-holdingdisk.conf:4:13: holdingdisk \"hd2\" is not defined"],
    ),
    (
        "bad-program.conf",
        &[
            "bad-program.conf:2:13: program must be \"DUMP\", \"GNUTAR\", \"STAR\" or \"APPLICATION\", found \"gnutar\"",
        ],
    ),
    (
        "duplicate-dumptype.conf",
        &[
            "duplicate-dumptype.conf:3:17: dumptype \"A\" is already defined at duplicate-dumptype.conf:1:1",
        ],
    ),
    (
        "port-range-out-of-range.conf",
        &[
            "port-range-out-of-range.conf:1:19: reserved-tcp-port must be within 1..1023, found 512,2000",
            "port-range-out-of-range.conf:2:21: unreserved-tcp-port must be within 1024..65535, found 100,200",
        ],
    ),
    (
        "bad-values.conf",
        &[
            "bad-values.conf:2:11: expected yes, no, true, false, on, off, y, n, t, f, 0 or 1, found \"maybe\"",
            "bad-values.conf:3:14: expected none, client fast, client best, client custom, server fast, server best or server custom, found \"client server\"",
            "bad-values.conf:4:14: expected client, server or calcsize, found \"fast\"",
        ],
    ),
    (
        "undefined-application.conf",
        &["undefined-application.conf:2:17: application \"app_amgtar\" is not defined"],
    ),
    (
        "missing-include.conf",
        &["missing-include.conf:4:13: cannot read missing.conf: No such file or directory"],
    ),
];

#[test]
fn broken_configs_give_file_line_column_messages() {
    for (file, expected) in BROKEN {
        let text = read(&format!("broken/{file}"));
        let got = match Config::parse_with(&MemFs::new(), file, &text, None) {
            Ok(_) => panic!("{file} should not parse"),
            Err(e) => e.messages(),
        };
        assert_eq!(got, *expected, "{file}");
    }
}

#[test]
fn broken_client_config_and_disklist_give_file_line_column_messages() {
    let e = ClientConfig::parse_with(
        &MemFs::new(),
        "client-define-dumptype.conf",
        &read("broken/client-define-dumptype.conf"),
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.messages(),
        ["client-define-dumptype.conf:2:8: expected application or script, found \"dumptype\""]
    );
    let (c, _) = harness("bsdtcp");
    let e = Disklist::parse(&c, "disklist-errors", &read("broken/disklist-errors")).unwrap_err();
    assert_eq!(
        e.messages(),
        [
            "disklist-errors:2:14: dumptype \"nosuch\" is not defined",
            "disklist-errors:3:22: expected an integer spindle, found \"x\"",
            "disklist-errors:4:24: interface \"eth9\" is not defined",
            "disklist-errors:5:11: duplicate disk record, previous on line 1",
        ]
    );
}
