//! Fuzz entry points: each takes arbitrary bytes and must never panic.
//!
//! `fuzz/fuzz_targets/<name>.rs` call these under libFuzzer; the integration test
//! `fuzz_corpora` replays the committed corpus `fuzz/corpus/<name>/` through [`TARGETS`] on
//! stable. What this module must NOT do: touch files, sockets or clocks.

use portpool_alloc::services::Services;
use proto::ports::{PortRange, Transport};

/// Fuzz targets: (name under fuzz/corpus/, entry point).
pub const TARGETS: &[proto::fuzz::Target] = &[
    ("portpool_services", portpool_services),
    ("portpool_range", portpool_range),
    ("portpool_site", portpool_site),
];

/// `/etc/services` text: lenient and strict parses agree, and every lookup Amanda's rule
/// makes over the ports mentioned answers consistently.
pub fn portpool_services(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (lenient, errors) = Services::parse_lenient("fuzz", &text);
    match Services::parse("fuzz", &text) {
        Ok(strict) => {
            assert!(errors.is_empty());
            assert_eq!(strict, lenient);
        }
        Err(first) => assert_eq!(Some(&first), errors.first()),
    }
    for proto in [Transport::Udp, Transport::Tcp] {
        let all = PortRange::new(1, u16::MAX).expect("valid");
        for (port, name) in lenient.foreign_in(all, proto) {
            assert_eq!(lenient.foreign_owner(port, proto), Some(name.as_str()));
        }
    }
}

/// A port range as typed on the command line or in a config (`850,859`, `850-859`).
pub fn portpool_range(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(range) = text.parse::<PortRange>() {
        assert!(range.lo() >= 1 && range.lo() <= range.hi());
        assert_eq!(range.to_string().parse::<PortRange>().ok(), Some(range));
        assert_eq!(
            range.amanda_notation().parse::<PortRange>().ok(),
            Some(range)
        );
    }
}

/// amanda.conf text, then (after the first NUL) a disklist: the site `portpool check` reads
/// from them, linted and rendered.
pub fn portpool_site(data: &[u8]) {
    let (conf_text, disklist) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"localhost /a d\n"[..]),
    };
    let text = String::from_utf8_lossy(conf_text);
    let Ok(config) = conf::Config::parse_str("amanda.conf", &text) else {
        return;
    };
    let Ok(dl) = conf::Disklist::parse(&config.value, "disklist", disklist) else {
        return;
    };
    let services = Services::parse("/etc/services", "domain-s 853/udp\n").expect("valid");
    let site = crate::conf_adapter::site_from(
        &config.value,
        &dl.value,
        None,
        None,
        services,
        std::path::Path::new("amanda.conf"),
    );
    let findings = crate::check::check(&site);
    let _ = crate::check::render(&site, &findings);
}
