//! REQ bodies (after the `SECURITY` line), the service's input, and amandad's NAK and
//! reply-appended error texts (spec §2.6, §3.2, §6.1).
//!
//! A REQ body is `SERVICE <name>\n` followed by the *arguments*: what amandad writes to the
//! service's stdin, starting with the `OPTIONS` line. [`RequestBody::parse`] splits it like
//! amandad's `protocol_accept`; [`ServiceInput::split`] then splits the arguments like the
//! services do (`agets` lines: `#` comments, backslash-newline continuation, newlines kept
//! inside double quotes; the XML part, if any, is the raw rest after the `OPTIONS` line).
//!
//! The NAK and error texts are functions here so that every daemon uses the exact wording
//! of 3.5.1.
//!
//! What this module must not do: interpret the service arguments (see `dle`, `options`).

use std::fmt;

use crate::features::{Feature, Features};
use crate::options::{Options, ParsedOptions};
use crate::pkt::PacketType;
use crate::quote::{ByteString, Strtok, until_nul};

/// The services amandad knows (spec §3.5), and amanda-rs's own `amdialin`: one vocabulary
/// for amandad, `dumper listen` and the tools (each serves a subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `noop`: answers with the client's features.
    Noop,
    /// `selfcheck` (amcheck).
    Selfcheck,
    /// `sendsize` (planner estimates).
    Sendsize,
    /// `sendbackup` (dumper).
    Sendbackup,
    /// `amindexd`.
    Amindexd,
    /// `amidxtaped`.
    Amidxtaped,
    /// `amdumpd`.
    Amdumpd,
    /// `senddiscover`.
    Senddiscover,
    /// `restore`.
    Restore,
    /// `ambackupd`.
    Ambackupd,
    /// `amdialin`: a `dialin yes` client's HOLD connection to `dumper listen` (amanda-rs
    /// only; the real amandad refuses it as an invalid service).
    Amdialin,
}

impl Service {
    /// Every service: amandad's table order, then amanda-rs's.
    pub const ALL: [Service; 11] = [
        Service::Noop,
        Service::Sendsize,
        Service::Sendbackup,
        Service::Selfcheck,
        Service::Amindexd,
        Service::Amidxtaped,
        Service::Amdumpd,
        Service::Senddiscover,
        Service::Restore,
        Service::Ambackupd,
        Service::Amdialin,
    ];

    /// The name on the wire and of the program in amlibexecdir.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Noop => "noop",
            Service::Selfcheck => "selfcheck",
            Service::Sendsize => "sendsize",
            Service::Sendbackup => "sendbackup",
            Service::Amindexd => "amindexd",
            Service::Amidxtaped => "amidxtaped",
            Service::Amdumpd => "amdumpd",
            Service::Senddiscover => "senddiscover",
            Service::Restore => "restore",
            Service::Ambackupd => "ambackupd",
            Service::Amdialin => "amdialin",
        }
    }

    /// Whether the real Amanda 3.5.1 knows the service (`amdialin` is amanda-rs's).
    pub const fn is_amandas(self) -> bool {
        !matches!(self, Service::Amdialin)
    }

    /// Looks a service up by its exact (case-sensitive) name.
    pub fn from_name(name: &[u8]) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| s.name().as_bytes() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A REQ body split as amandad does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// The service name as sent (it may name no known [`Service`]).
    pub service: ByteString,
    /// Everything after the delimiter that ended the name: the service's stdin.
    pub arguments: ByteString,
}

/// Why amandad refuses a REQ body before looking at the service: it answers
/// [`nak_invalid_req`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body does not start with `SERVICE`.
    #[error("REQ body does not start with SERVICE")]
    NoServiceKeyword,
    /// `SERVICE` is not followed by a name.
    #[error("REQ body has no service name")]
    NoServiceName,
    /// Nothing follows the service name (amandad requires at least one byte).
    #[error("REQ body has no arguments after the service name")]
    NoArguments,
}

impl RequestBody {
    /// Splits like `protocol_accept`: first token (up to a space) must be `SERVICE`; the
    /// name runs to a space or newline; the arguments are the non-empty rest. The body ends
    /// at its first NUL.
    pub fn parse(body: &[u8]) -> Result<RequestBody, RequestError> {
        let mut t = Strtok::new(body);
        if t.next_token(b" ") != Some(b"SERVICE".as_slice()) {
            return Err(RequestError::NoServiceKeyword);
        }
        let service = t.next_token(b" \n").ok_or(RequestError::NoServiceName)?;
        let arguments = t.next_token(b"").ok_or(RequestError::NoArguments)?;
        Ok(RequestBody {
            service: service.into(),
            arguments: arguments.into(),
        })
    }

    /// The known service named by the request, if any.
    pub fn known_service(&self) -> Option<Service> {
        Service::from_name(&self.service)
    }

    /// The body as servers write it: `SERVICE <name>\n` + arguments.
    pub fn encode(&self) -> Vec<u8> {
        request_body(&self.service, &self.arguments)
    }
}

/// `SERVICE <service>\n` followed by `arguments` (usually [`Options::encode`] plus the DLEs).
pub fn request_body(service: &[u8], arguments: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + service.len() + arguments.len());
    out.extend_from_slice(b"SERVICE ");
    out.extend_from_slice(service);
    out.push(b'\n');
    out.extend_from_slice(arguments);
    out
}

/// The noop request amcheck and planner send first to every host (spec §6.4):
/// `SERVICE noop\nOPTIONS features=<ours>;\n`.
pub fn noop_request(ours: &Features) -> Vec<u8> {
    let options = Options {
        features: Some(ours.clone()),
        ..Options::default()
    };
    request_body(b"noop", &options.encode())
}

/// Reads logical lines the way Amanda's `agets` does: a `#` outside quotes and not escaped
/// starts a comment that runs to the end of the line; a backslash before a newline joins the
/// lines (the backslash is dropped); a newline inside double quotes is part of the line.
/// Input ends at its first NUL.
#[derive(Debug, Clone)]
pub struct AgetsLines<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> AgetsLines<'a> {
    /// Starts reading `input`.
    pub fn new(input: &'a [u8]) -> AgetsLines<'a> {
        AgetsLines {
            input: until_nul(input),
            pos: 0,
        }
    }

    /// What has not been read yet.
    pub fn remainder(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }
}

impl Iterator for AgetsLines<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        let mut in_quote = false;
        let mut escape = false;
        let mut saw_newline_or_comment = false;
        while let Some(&ch) = self.input.get(self.pos) {
            self.pos += 1;
            if ch == b'#' && !escape && !in_quote {
                match memchr::memchr(b'\n', self.remainder()) {
                    Some(n) => self.pos += n + 1,
                    None => self.pos = self.input.len(),
                }
                saw_newline_or_comment = true;
                break;
            }
            if ch == b'\n' && !in_quote {
                if escape {
                    escape = false;
                    line.pop();
                    continue;
                }
                saw_newline_or_comment = true;
                break;
            }
            if ch == b'\\' {
                escape = !escape;
            } else {
                if ch == b'"' && !escape {
                    in_quote = !in_quote;
                }
                escape = false;
            }
            line.push(ch);
        }
        if line.is_empty() && !saw_newline_or_comment {
            return None;
        }
        Some(line)
    }
}

/// The arguments of a selfcheck, sendsize or sendbackup request, split like the services
/// read their stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    /// The first `OPTIONS` line, parsed; `None` if there was none (the services then fail
    /// with "Missing OPTIONS line in ... input").
    pub options: Option<ParsedOptions>,
    /// How many further `OPTIONS` lines were seen (selfcheck and sendsize treat any as a
    /// fatal "Multiple OPTIONS line"; sendbackup re-parses them).
    pub extra_options_lines: usize,
    /// Non-empty lines that are not `OPTIONS` lines: the legacy DLE lines. In XML mode only
    /// the lines before the `OPTIONS` line.
    pub legacy_lines: Vec<ByteString>,
    /// In XML mode, everything after the `OPTIONS` line, unprocessed.
    pub xml: Option<ByteString>,
}

impl ServiceInput {
    /// Splits service arguments. XML mode is chosen when the server's features (from the
    /// `OPTIONS` line, default set if absent) contain `fe_req_xml` **and** so do `ours`:
    /// a 3.5 server sends XML only to clients that advertised it (spec §6.1).
    pub fn split(arguments: &[u8], ours: &Features) -> ServiceInput {
        let mut lines = AgetsLines::new(arguments);
        let mut input = ServiceInput {
            options: None,
            extra_options_lines: 0,
            legacy_lines: Vec::new(),
            xml: None,
        };
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            if let Some(value) = line.strip_prefix(b"OPTIONS ") {
                if input.options.is_some() {
                    input.extra_options_lines += 1;
                    continue;
                }
                let parsed = Options::parse(value);
                let xml = parsed.options.effective_features().has(Feature::REQ_XML)
                    && ours.has(Feature::REQ_XML);
                input.options = Some(parsed);
                if xml {
                    input.xml = Some(lines.remainder().into());
                    break;
                }
                continue;
            }
            input.legacy_lines.push(line.into());
        }
        input
    }
}

/// NAK for a malformed body: `ERROR invalid REQ\n`.
pub fn nak_invalid_req() -> Vec<u8> {
    b"ERROR invalid REQ\n".to_vec()
}

/// NAK when the service is not enabled:
/// `ERROR <svc>: invalid service, add '<svc>' as argument to amandad\n`.
pub fn nak_invalid_service(service: &[u8]) -> Vec<u8> {
    concat(&[
        b"ERROR ",
        service,
        b": invalid service, add '",
        service,
        b"' as argument to amandad\n",
    ])
}

/// NAK when amandad was started with an unknown service word:
/// `ERROR invalid '<name>' service as argument to amandad` (3.5.1 sends no newline).
pub fn nak_invalid_service_argument(name: &[u8]) -> Vec<u8> {
    concat(&[
        b"ERROR invalid '",
        name,
        b"' service as argument to amandad",
    ])
}

/// NAK for amanda-client.conf errors: `ERROR <first>[ (additional errors not displayed)]`
/// (no newline, as 3.5.1).
pub fn nak_config_errors(first: &[u8], more: bool) -> Vec<u8> {
    let tail: &[u8] = if more {
        b" (additional errors not displayed)"
    } else {
        b""
    };
    concat(&[b"ERROR ", first, tail])
}

/// NAK for a failed security check: `ERROR <reason>\n`.
pub fn nak_security(reason: &[u8]) -> Vec<u8> {
    concat(&[b"ERROR ", reason, b"\n"])
}

/// NAK when the service program is not executable: `ERROR execute access to '<path>' denied\n`.
pub fn nak_execute_denied(path: &[u8]) -> Vec<u8> {
    concat(&[b"ERROR execute access to '", path, b"' denied\n"])
}

/// NAK when the arguments cannot be written to the service:
/// `ERROR error writing arguments to <svc>: <strerror>\n`.
pub fn nak_error_writing_arguments(service: &[u8], error: &[u8]) -> Vec<u8> {
    concat(&[
        b"ERROR error writing arguments to ",
        service,
        b": ",
        error,
        b"\n",
    ])
}

/// NAK for a packet of the wrong type during an exchange: `ERROR unexpected packet type <T>\n`.
pub fn nak_unexpected_packet_type(t: PacketType) -> Vec<u8> {
    format!("ERROR unexpected packet type {}\n", t.name()).into_bytes()
}

/// NAK when the service produced no reply within 6 hours: `ERROR timeout on reply pipe\n`.
pub fn nak_timeout_on_reply_pipe() -> Vec<u8> {
    b"ERROR timeout on reply pipe\n".to_vec()
}

/// NAK when reading the service's stdout fails: `ERROR read error on reply pipe: <strerror>\n`.
pub fn nak_read_error_on_reply_pipe(error: &[u8]) -> Vec<u8> {
    concat(&[b"ERROR read error on reply pipe: ", error, b"\n"])
}

/// How a service process ended, for [`rep_service_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceExit {
    /// Exited with a non-zero code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// Appended to the REP for each line the service wrote to stderr before the REP was sent:
/// `ERROR service <svc>: <line>\n` (`<svc>` is the service name, not its path).
pub fn rep_service_stderr_line(service: &[u8], line: &[u8]) -> Vec<u8> {
    concat(&[b"ERROR service ", service, b": ", line, b"\n"])
}

/// Appended to the REP when the service had already failed when its stdout ended:
/// `ERROR service <path> failed: pid <n> exited with code <c>\n` (or `with signal <s>`).
pub fn rep_service_failed(path: &[u8], pid: u32, exit: ServiceExit) -> Vec<u8> {
    let tail = match exit {
        ServiceExit::Code(c) => format!(" failed: pid {pid} exited with code {c}\n"),
        ServiceExit::Signal(s) => format!(" failed: pid {pid} exited with signal {s}\n"),
    };
    concat(&[b"ERROR service ", path, tail.as_bytes()])
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_like_protocol_accept() {
        let r = RequestBody::parse(b"SERVICE noop\nOPTIONS features=01;\n").unwrap();
        assert_eq!(r.service, "noop");
        assert_eq!(r.arguments, "OPTIONS features=01;\n");
        assert_eq!(r.known_service(), Some(Service::Noop));
        assert_eq!(r.encode(), b"SERVICE noop\nOPTIONS features=01;\n");
        // nothing after the name
        for (body, error) in [
            (&b"SERVICE noop\n"[..], RequestError::NoArguments),
            (b"SERVICE noop", RequestError::NoArguments),
            (b"SERVICE \n", RequestError::NoServiceName),
            (b"SERVICEnoop x", RequestError::NoServiceKeyword),
            (b"", RequestError::NoServiceKeyword),
        ] {
            assert_eq!(RequestBody::parse(body), Err(error), "{body:?}");
        }
        // a space after the name: arguments start right after it
        let r = RequestBody::parse(b"SERVICE frobnicate x").unwrap();
        assert_eq!(r.arguments, "x");
        assert_eq!(r.known_service(), None);
    }

    #[test]
    fn tv1_noop_request() {
        assert_eq!(
            noop_request(&Features::amanda_3_5_1()),
            b"SERVICE noop\nOPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;\n"
        );
    }

    #[test]
    fn nak_texts_are_exactly_amandads() {
        assert_eq!(
            nak_invalid_service(b"frobnicate"),
            b"ERROR frobnicate: invalid service, add 'frobnicate' as argument to amandad\n"
        );
        assert_eq!(
            nak_invalid_service_argument(b"foo"),
            b"ERROR invalid 'foo' service as argument to amandad"
        );
        assert_eq!(
            nak_execute_denied(b"/usr/lib/amanda/noop"),
            b"ERROR execute access to '/usr/lib/amanda/noop' denied\n"
        );
        assert_eq!(
            nak_unexpected_packet_type(PacketType::Prep),
            b"ERROR unexpected packet type PREP\n"
        );
        assert_eq!(
            nak_timeout_on_reply_pipe(),
            b"ERROR timeout on reply pipe\n"
        );
        assert_eq!(
            nak_config_errors(b"bad", true),
            b"ERROR bad (additional errors not displayed)"
        );
        assert_eq!(
            rep_service_stderr_line(b"sendbackup", b"oops"),
            b"ERROR service sendbackup: oops\n"
        );
        assert_eq!(
            rep_service_failed(b"/usr/lib/amanda/sendbackup", 4242, ServiceExit::Code(1)),
            b"ERROR service /usr/lib/amanda/sendbackup failed: pid 4242 exited with code 1\n"
        );
        assert_eq!(
            rep_service_failed(b"/x", 1, ServiceExit::Signal(9)),
            b"ERROR service /x failed: pid 1 exited with signal 9\n"
        );
    }

    #[test]
    fn agets_comments_continuations_and_quotes() {
        let lines: Vec<_> = AgetsLines::new(b"a b # c\nd\\\ne\n\"x\ny\"\n\nlast").collect();
        assert_eq!(
            lines,
            vec![
                b"a b ".to_vec(),
                b"de".to_vec(),
                b"\"x\ny\"".to_vec(),
                b"".to_vec(),
                b"last".to_vec()
            ]
        );
        assert_eq!(AgetsLines::new(b"").count(), 0);
        assert_eq!(
            AgetsLines::new(b"#only").collect::<Vec<_>>(),
            vec![Vec::<u8>::new()]
        );
        assert_eq!(
            AgetsLines::new(b"a\\#b\n").collect::<Vec<_>>(),
            vec![b"a\\#b".to_vec()]
        );
    }

    #[test]
    fn service_input_xml_mode_needs_both_sides() {
        let f = "ffffffff9efefbfffffffffffffff3fffbf71f";
        let args = format!("OPTIONS features={f};hostname=h;\n<dle>\n  <disk>/a</disk>\n</dle>\n");
        let ours = Features::amanda_3_5_1();
        let input = ServiceInput::split(args.as_bytes(), &ours);
        assert_eq!(input.xml.unwrap(), "<dle>\n  <disk>/a</disk>\n</dle>\n");
        assert!(input.legacy_lines.is_empty());
        assert_eq!(input.options.unwrap().options.hostname.unwrap(), "h");

        let legacy = format!(
            "OPTIONS features={f};\nGNUTAR /home  0 1970:1:1:0:0:0 -1  OPTIONS |;auth=bsd;index;\n"
        );
        let input = ServiceInput::split(legacy.as_bytes(), &Features::minimal_gnutar_client());
        assert_eq!(input.xml, None);
        assert_eq!(
            input.legacy_lines,
            vec![ByteString::from(
                "GNUTAR /home  0 1970:1:1:0:0:0 -1  OPTIONS |;auth=bsd;index;"
            )]
        );

        let none = ServiceInput::split(b"GNUTAR /x 0 OPTIONS |;\n", &ours);
        assert!(none.options.is_none());
        let twice = ServiceInput::split(b"OPTIONS ;\nOPTIONS ;\n", &ours);
        assert_eq!(twice.extra_options_lines, 1);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = RequestBody::parse(&s);
            let _ = ServiceInput::split(&s, &Features::amanda_3_5_1());
        }

        #[test]
        fn encode_parse_round_trip(name in "[a-z]{1,12}", args in proptest::collection::vec(1u8..=255, 1..64)) {
            let body = request_body(name.as_bytes(), &args);
            let r = RequestBody::parse(&body).unwrap();
            prop_assert_eq!(r.service, ByteString::from(name));
            prop_assert_eq!(r.arguments.as_bytes(), &args[..]);
        }
    }
}
