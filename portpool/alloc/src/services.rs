//! `/etc/services`, parsed the way Amanda consults it.
//!
//! Amanda never binds a port that `/etc/services` assigns (for the same protocol) to a
//! service whose *official* name does not contain `amanda`: it calls `getservbyport()`,
//! which returns the first matching line, and skips the port unless that name contains
//! "amanda" (`bind_portrange2: Skip port 853: Owned by domain-s.`, spec §5.3). This module
//! is the pure parser and that rule; it must not read files (the caller passes the text),
//! and it never panics on any input.

use std::collections::BTreeMap;
use std::fmt;

use proto::ports::{PortRange, Transport};

/// What Amanda's rule looks for in a service name.
pub const AMANDA_SERVICE_NAME: &str = "amanda";

/// The default path.
pub const DEFAULT_PATH: &str = "/etc/services";

/// One malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {what}")]
pub struct ServicesError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub what: String,
}

/// The services database: for each (protocol, port), the official name of the first line
/// that lists it. Only `tcp` and `udp` entries are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    first: BTreeMap<(Transport, u16), String>,
    /// Where the text came from, for messages (`/etc/services`).
    pub path: String,
}

impl Services {
    /// An empty database (nothing is skipped).
    pub fn empty() -> Self {
        Services {
            first: BTreeMap::new(),
            path: DEFAULT_PATH.to_owned(),
        }
    }

    /// Strict parse: the first malformed line is an error naming path:line:column.
    pub fn parse(path: &str, text: &str) -> Result<Services, ServicesError> {
        let (services, mut errors) = Self::parse_lenient(path, text);
        if errors.is_empty() {
            Ok(services)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// glibc's reading: malformed lines are ignored (and returned, for `portpool check`).
    pub fn parse_lenient(path: &str, text: &str) -> (Services, Vec<ServicesError>) {
        let mut services = Services {
            first: BTreeMap::new(),
            path: path.to_owned(),
        };
        let mut errors = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            match parse_line(raw) {
                Ok(None) => {}
                Ok(Some((name, port, proto))) => {
                    let Some(proto) = proto else { continue };
                    services.first.entry((proto, port)).or_insert(name);
                }
                Err((column, what)) => errors.push(ServicesError {
                    path: path.to_owned(),
                    line: index + 1,
                    column,
                    what,
                }),
            }
        }
        (services, errors)
    }

    /// The official name `getservbyport(port, proto)` would return.
    pub fn name_of(&self, port: u16, proto: Transport) -> Option<&str> {
        self.first.get(&(proto, port)).map(String::as_str)
    }

    /// The name of the service that makes Amanda skip `port`: listed, and not an Amanda
    /// name.
    pub fn foreign_owner(&self, port: u16, proto: Transport) -> Option<&str> {
        self.name_of(port, proto)
            .filter(|name| !name.contains(AMANDA_SERVICE_NAME))
    }

    /// Every port of `range` that Amanda would skip, with the owning name, ascending.
    pub fn foreign_in(&self, range: PortRange, proto: Transport) -> Vec<(u16, String)> {
        self.first
            .range((proto, range.lo())..=(proto, range.hi()))
            .filter(|(_, name)| !name.contains(AMANDA_SERVICE_NAME))
            .map(|((_, port), name)| (*port, name.clone()))
            .collect()
    }

    /// The port of a named service (official name), e.g. `amanda`/udp → 10080.
    pub fn port_of(&self, name: &str, proto: Transport) -> Option<u16> {
        self.first
            .iter()
            .find(|((p, _), n)| *p == proto && n.as_str() == name)
            .map(|((_, port), _)| *port)
    }

    /// Number of (protocol, port) entries kept.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

impl fmt::Display for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} tcp/udp entries)", self.path, self.first.len())
    }
}

/// One line: `Ok(None)` for blank/comment lines; the protocol is `None` when it is neither
/// tcp nor udp (ddp, sctp...). Errors carry a 1-based column.
type Entry = (String, u16, Option<Transport>);

fn parse_line(raw: &str) -> Result<Option<Entry>, (usize, String)> {
    let content = raw.split('#').next().unwrap_or("");
    let mut fields = Fields::new(content);
    let Some((_, name)) = fields.next() else {
        return Ok(None);
    };
    let Some((column, port_proto)) = fields.next() else {
        return Err((
            content.len() + 1,
            format!("service {name:?} has no port/protocol field"),
        ));
    };
    let Some((port_text, proto_text)) = port_proto.split_once('/') else {
        return Err((column, format!("{port_proto:?} is not PORT/PROTOCOL")));
    };
    if port_text.is_empty() || !port_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err((column, format!("{port_text:?} is not a port number")));
    }
    let port = port_text
        .parse::<u16>()
        .map_err(|_| (column, format!("{port_text:?} is larger than 65535")))?;
    if proto_text.is_empty() {
        return Err((
            column + port_text.len() + 1,
            "the protocol after '/' is missing".to_owned(),
        ));
    }
    let proto = match proto_text {
        "tcp" => Some(Transport::Tcp),
        "udp" => Some(Transport::Udp),
        _ => None,
    };
    Ok(Some((name.to_owned(), port, proto)))
}

/// Whitespace-separated fields with their 1-based columns.
struct Fields<'a> {
    rest: &'a str,
    offset: usize,
}

impl<'a> Fields<'a> {
    fn new(text: &'a str) -> Self {
        Fields {
            rest: text,
            offset: 0,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let is_blank = |c: char| c == ' ' || c == '\t' || c == '\r';
        let trimmed = self.rest.trim_start_matches(is_blank);
        self.offset += self.rest.len() - trimmed.len();
        if trimmed.is_empty() {
            self.rest = trimmed;
            return None;
        }
        let end = trimmed.find(is_blank).unwrap_or(trimmed.len());
        let (field, rest) = trimmed.split_at(end);
        let column = self.offset + 1;
        self.offset += end;
        self.rest = rest;
        Some((column, field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEBIAN_EXCERPT: &str = "\
# Network services, Internet style
tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer
domain\t\t53/tcp\t\t\t\t# Domain Name Server
domain\t\t53/udp
domain-s\t853/tcp\t\t\t\t# DNS over TLS [RFC7858]
domain-s\t853/udp\t\t\t\t# DNS over DTLS [RFC8094]
exec\t\t512/tcp
biff\t\t512/udp\t\tcomsat
amanda\t\t10080/tcp\t\t\t# amanda backup services
amanda\t\t10080/udp
kamanda\t\t10081/tcp
at-rtmp\t\t201/ddp
";

    #[test]
    fn domain_s_makes_amanda_skip_853_in_850_859() {
        let s = Services::parse("/etc/services", DEBIAN_EXCERPT).unwrap();
        let range = PortRange::new(850, 859).unwrap();
        assert_eq!(
            s.foreign_in(range, Transport::Udp),
            vec![(853, "domain-s".to_owned())]
        );
        assert_eq!(s.foreign_owner(853, Transport::Tcp), Some("domain-s"));
        assert_eq!(s.foreign_owner(852, Transport::Udp), None);
    }

    #[test]
    fn names_containing_amanda_are_not_foreign() {
        let s = Services::parse("/etc/services", DEBIAN_EXCERPT).unwrap();
        assert_eq!(s.name_of(10080, Transport::Udp), Some("amanda"));
        assert_eq!(s.foreign_owner(10080, Transport::Udp), None);
        assert_eq!(
            s.foreign_owner(10081, Transport::Tcp),
            None,
            "kamanda contains amanda"
        );
        assert_eq!(s.port_of("amanda", Transport::Udp), Some(10080));
    }

    #[test]
    fn first_line_wins_and_protocols_are_separate() {
        let s = Services::parse("x", "exec 512/tcp\nbiff 512/udp comsat\nother 512/tcp\n").unwrap();
        assert_eq!(s.name_of(512, Transport::Tcp), Some("exec"));
        assert_eq!(s.name_of(512, Transport::Udp), Some("biff"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn malformed_lines_name_line_and_column() {
        let err = Services::parse("/etc/services", "ok 1/tcp\n  bad 99999/udp\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 7));
        assert!(err.to_string().starts_with("/etc/services:2:7: "));
        let err = Services::parse("f", "lonely\n").unwrap_err();
        assert!(err.what.contains("no port/protocol"));
        let (s, errors) = Services::parse_lenient("f", "a 1/tcp\nb x/tcp\nc 3/udp\n");
        assert_eq!((s.len(), errors.len()), (2, 1));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,400}") {
            let _ = Services::parse_lenient("p", &text);
        }

        #[test]
        fn generated_entries_round_trip(entries in proptest::collection::vec(
            ("[a-z][a-z0-9-]{0,12}", 1u16.., prop_oneof![Just("tcp"), Just("udp")]), 0..20)) {
            let text: String = entries.iter().map(|(n, p, pr)| format!("{n}\t{p}/{pr}\t# c\n")).collect();
            let s = Services::parse("p", &text).unwrap();
            for (name, port, proto) in &entries {
                let proto = if *proto == "tcp" { Transport::Tcp } else { Transport::Udp };
                let first = entries.iter().find(|(_, p2, pr2)| p2 == port && *pr2 == proto.as_str()).unwrap();
                prop_assert_eq!(s.name_of(*port, proto), Some(first.0.as_str()));
                let _ = name;
            }
        }
    }
}
