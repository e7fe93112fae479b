//! The lint, on sites built by hand.

use super::*;
use crate::site::{Privilege, SecurityFile, SiteDle};
use portpool_alloc::services::Services;

fn dle(host: &str, auth: Auth) -> SiteDle {
    SiteDle {
        origin: Origin::File {
            path: "disklist".into(),
            line: 1,
            column: 1,
        },
        ..SiteDle::new(host, "/home", auth).with_client_port(10080)
    }
}

use crate::site::Origin;

fn seed_site() -> Site {
    let mut site = Site::new("daily");
    site.inparallel = Setting::at(20, "amanda.conf", 3, 1);
    site.server.reserved_udp = Setting::at(PortRange::new(850, 859).unwrap(), "amanda.conf", 4, 1);
    site.services =
        Some(Services::parse("/etc/services", "domain-s 853/udp\namanda 10080/udp\n").unwrap());
    site.dles = (0..30)
        .map(|i| dle(&format!("client{i}"), Auth::Bsd))
        .collect();
    site
}

#[test]
fn nine_usable_ports_for_twenty_dumpers_is_an_error_that_says_what_to_change() {
    let findings = check(&seed_site());
    let cap = findings.iter().find(|f| f.code == "capacity").unwrap();
    assert_eq!(cap.severity, Severity::Error);
    assert_eq!(cap.origin, "amanda.conf:4:1");
    assert!(
        cap.message
            .contains("850,859 has 9 usable ports but needs 21"),
        "{}",
        cap.message
    );
    assert_eq!(cap.fix, "set reserved-udp-port 850,871, or inparallel 8");
    let lost = findings.iter().find(|f| f.code == "services").unwrap();
    assert!(lost.message.contains("853 is domain-s in /etc/services"));
    assert_eq!(exit_code(&findings), 2);
}

#[test]
fn a_range_outside_the_security_file_is_the_cant_bind_error() {
    let mut site = seed_site();
    site.inparallel.value = 4;
    site.server.reserved_udp = Setting::at(PortRange::new(850, 870).unwrap(), "amanda.conf", 4, 1);
    site.security = Some(SecurityFile {
        path: "/etc/amanda-security.conf".into(),
        udp_port_range: Some(Setting::at(
            PortRange::new(840, 860).unwrap(),
            "/etc/amanda-security.conf",
            2,
            1,
        )),
        tcp_port_range: None,
    });
    let findings = check(&site);
    let f = findings.iter().find(|f| f.code == "security-file").unwrap();
    assert!(f.message.contains("refuses ports 861-870"), "{}", f.message);
    assert!(f.message.contains("Can't bind a socket to connect to"));
    assert_eq!(
        f.fix,
        "set reserved-udp-port 850,860, or udp_port_range=840,870 in /etc/amanda-security.conf"
    );
}

#[test]
fn a_non_root_server_cannot_bind_reserved_ports() {
    let mut site = seed_site();
    site.inparallel.value = 4;
    site.privilege = Some(Privilege {
        uid: 34,
        cap_net_bind_service: false,
        unprivileged_port_start: 1024,
    });
    let findings = check(&site);
    assert!(
        findings
            .iter()
            .any(|f| f.code == "privilege" && f.severity == Severity::Error)
    );
    site.privilege = Some(Privilege {
        uid: 34,
        cap_net_bind_service: true,
        unprivileged_port_start: 1024,
    });
    assert!(!check(&site).iter().any(|f| f.code == "privilege"));
}

#[test]
fn client_conf_disagreeing_with_amanda_conf_is_a_warning() {
    let mut site = seed_site();
    site.inparallel.value = 4;
    let mut client = site.server.clone();
    client.reserved_udp = Setting::at(
        PortRange::new(840, 860).unwrap(),
        "amanda-client.conf",
        7,
        1,
    );
    site.client_conf = Some(("/etc/amanda/amanda-client.conf".into(), client));
    let findings = check(&site);
    let f = findings.iter().find(|f| f.code == "client-conf").unwrap();
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.message
            .contains("840,860 in /etc/amanda/amanda-client.conf but 850,859 in amanda.conf")
    );
}

/// A site with `inparallel`, reserved UDP ports 840-850 and `services` as /etc/services.
fn udp_site(name: &str, inparallel: u32, services: &str) -> Site {
    let mut site = Site::new(name);
    site.inparallel.value = inparallel;
    site.server.reserved_udp = Setting::at(PortRange::new(840, 850).unwrap(), "amanda.conf", 4, 1);
    site.services = Some(Services::parse("/etc/services", services).unwrap());
    site
}

#[test]
fn a_consistent_site_has_no_finding_and_exit_code_0() {
    let mut site = udp_site("ok", 4, "amanda 10080/udp\n");
    site.dles = vec![dle("a", Auth::Bsd), dle("b", Auth::Bsdudp)];
    let findings = check(&site);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(exit_code(&findings), 0);
    assert!(render(&site, &findings).contains("consistent"));
}

#[test]
fn bsd_without_client_port_nor_services_entry_is_flagged() {
    let mut site = udp_site("x", 2, "amanda 10080/tcp\n");
    let mut d = dle("a", Auth::Bsd);
    d.client_port_set = false;
    site.dles = vec![d];
    let findings = check(&site);
    assert!(findings.iter().any(|f| f.code == "client-port"));
    assert_eq!(exit_code(&findings), 1);
}

#[test]
fn bsdtcp_capacity_counts_dumps_at_once_not_dumpers() {
    let mut site = Site::new("tcp");
    site.inparallel.value = 20;
    site.server.reserved_tcp = Setting::at(PortRange::new(600, 604).unwrap(), "amanda.conf", 5, 1);
    // Three hosts with maxdumps 1: at most 3 dumps at once.
    site.dles = (0..9)
        .map(|i| dle(&format!("h{}", i % 3), Auth::Bsdtcp))
        .collect();
    assert!(!check(&site).iter().any(|f| f.code == "capacity"));
    site.dles = (0..9)
        .map(|i| dle(&format!("h{i}"), Auth::Bsdtcp))
        .collect();
    let f = check(&site)
        .into_iter()
        .find(|f| f.code == "capacity")
        .unwrap();
    assert!(f.message.contains("up to 9 dumps at once"), "{}", f.message);
}

/// Issue 10: amcheck of one host with 100 DLEs over bsd got no selfcheck answer (the reply
/// is about 295 KB, one datagram holds 65,503 bytes). `portpool check` warns about such
/// hosts; bsdtcp hosts and small ones are fine.
#[test]
fn a_bsd_host_with_too_many_dles_for_one_selfcheck_datagram_is_a_warning() {
    let mut site = seed_site();
    site.dles.clear();
    for i in 0..100 {
        let mut d = dle("big", Auth::Bsd);
        d.disk = format!("/srv/dle{i:03}");
        site.application_dles.insert(("big".into(), d.disk.clone()));
        site.dles.push(d);
        let mut d = dle("tcp", Auth::Bsdtcp);
        d.disk = format!("/srv/dle{i:03}");
        site.application_dles.insert(("tcp".into(), d.disk.clone()));
        site.dles.push(d);
    }
    for i in 0..20 {
        let mut d = dle("small", Auth::Bsdudp);
        d.disk = format!("/srv/dle{i:03}");
        site.dles.push(d);
    }
    let findings = check(&site);
    let hits: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.code == "selfcheck-datagram")
        .collect();
    assert_eq!(hits.len(), 1, "{findings:#?}");
    assert_eq!(hits[0].severity, Severity::Warning);
    assert!(
        hits[0]
            .message
            .starts_with("big has 100 DLEs on auth bsd: "),
        "{}",
        hits[0].message
    );
    assert!(hits[0].fix.contains("bsdtcp"));
    // About the size measured for 100 amgtar DLEs (294,981 bytes).
    let est =
        selfcheck_reply_estimate((0..100).map(|_| ("/tmp/amanda-rs-tests/x-1-1/dle-00", true)));
    assert!((250_000..350_000).contains(&est), "{est}");
    // 100 GNUTAR DLEs with short names still fit; 200 do not.
    assert!(selfcheck_reply_estimate((0..100).map(|_| ("/srv/a", false))) < UDP_REPLY_LIMIT);
    assert!(selfcheck_reply_estimate((0..200).map(|_| ("/srv/a", false))) > UDP_REPLY_LIMIT);
}

// The cases of conf's former port lint (issue 11: one lint), on configurations parsed by
// conf, as `portpool check` reads them.

fn site_of(conf_text: &str, disklist: &[u8], security: Option<&[u8]>) -> Site {
    let config = conf::Config::parse_str("amanda.conf", conf_text)
        .unwrap()
        .value;
    let dl = conf::Disklist::parse(&config, "disklist", disklist)
        .unwrap()
        .value;
    let sec = security.map(|t| {
        conf::security::SecurityConf::parse("/etc/amanda-security.conf", t)
            .unwrap()
            .value
    });
    crate::conf_adapter::site_from(
        &config,
        &dl,
        None,
        sec.as_ref()
            .map(|s| (std::path::Path::new("/etc/amanda-security.conf"), s)),
        Services::parse("/etc/services", "").unwrap(),
        std::path::Path::new("amanda.conf"),
    )
}

fn capacity(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.code == "capacity").collect()
}

#[test]
fn a_udp_range_smaller_than_inparallel_names_the_line_and_the_numbers() {
    let disklist: String = (0..30).map(|i| format!("h{i} /d{i} d\n")).collect();
    let site = site_of(
        "inparallel 20\nreserved-udp-port 850,859\ndefine dumptype d {\n auth \"bsd\"\n}\n",
        disklist.as_bytes(),
        None,
    );
    let f = check(&site);
    let c = capacity(&f);
    assert_eq!(c.len(), 1, "{f:#?}");
    assert_eq!(c[0].origin, "amanda.conf:2:1");
    assert!(
        c[0].message
            .starts_with("reserved-udp-port 850,859 has 10 usable ports but needs 21"),
        "{}",
        c[0].message
    );
    assert!(
        c[0].fix.contains("reserved-udp-port 850,870"),
        "{}",
        c[0].fix
    );
}

#[test]
fn a_bsdtcp_only_config_needs_no_udp_range() {
    let site = site_of(
        "inparallel 20\nreserved-udp-port 850,851\ndefine dumptype d {\n}\n",
        b"localhost /a d\n",
        None,
    );
    assert!(capacity(&check(&site)).is_empty(), "{:#?}", check(&site));
}

#[test]
fn the_disklist_bounds_the_need_and_the_security_file_narrows_the_range() {
    let conf_text = "inparallel 6\nreserved-udp-port 850,852\ndefine dumptype d {\n auth \"bsd\"\n maxdumps 6\n}\n";
    let dl = b"localhost /a d\nlocalhost /b d\nlocalhost /c d\nlocalhost /d d\n";
    let f = check(&site_of(conf_text, dl, None));
    let c = capacity(&f);
    assert_eq!(c.len(), 1, "{f:#?}");
    assert!(
        c[0].message
            .starts_with("reserved-udp-port 850,852 has 3 usable ports but needs 5 (4 DLEs"),
        "{}",
        c[0].message
    );
    // Two DLEs fit three ports (two dumpers and the planner).
    let f = check(&site_of(
        conf_text,
        b"localhost /a d\nlocalhost /b d\n",
        None,
    ));
    assert!(capacity(&f).is_empty(), "{f:#?}");
    let f = check(&site_of(conf_text, dl, Some(b"udp_port_range=840,851\n")));
    assert!(
        f.iter().any(|x| x.code == "security-file"),
        "the range reaches outside udp_port_range: {f:#?}"
    );
}
