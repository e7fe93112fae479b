//! The wire-level security checks of auth bsd/bsdudp/bsdtcp, and amandad's REQ intake
//! (spec §2.6, §3.2, §3.4, §4.1 steps 3-4).
//!
//! A REQ body starts with `SECURITY USER <user>\n`, then `SERVICE <name>\n`, then the
//! service's arguments. On every received packet Amanda 3.5.1 strips a leading SECURITY line;
//! on a REQ it also checks, in this order (`bsd_recv_security_ok`):
//!
//! 1. the sender's port is reserved (< 1024), when the auth requires it;
//! 2. the remaining body starts with `SERVICE `;
//! 3. there was a SECURITY line;
//! 4. its first word after `SECURITY` is `USER`, followed by a user name.
//!
//! [`check_received`] does exactly that and returns the remote user and the service name the
//! `.amandahosts` check needs. The shell then runs that check (crate `conf`) and, for a REQ
//! that passed, [`parse_service_request`] splits the body like amandad's `protocol_accept`.
//! Every failure is a [`RequestError`] whose message is byte for byte the real amandad's, and
//! [`RequestError::nak_body`] is the NAK body it sends (`ERROR <message>\n`).
//!
//! [`admit`] chains them around the caller's `.amandahosts` check and choice of service,
//! for the intakes of amandad and of `dumper listen`.
//!
//! Also here: the bsdtcp refusal frame amandad writes before reading anything when the
//! peer's name does not check out ([`preread_refusal_frame`], spec §3.4), with 3.5.1's quirk.
//!
//! What this module must not do: resolve names, read `.amandahosts` (that is `conf`), decide
//! which services are enabled, or touch a socket.

use std::fmt;

use crate::frame::{self, FrameTooLong};
use crate::pkt::PacketType;

/// Ports below this are reserved (`IPPORT_RESERVED`); a REQ must come from one.
pub const IPPORT_RESERVED: u16 = 1024;

/// What a REQ body starts with, before the user name.
pub const SECURITY_USER_PREFIX: &[u8] = b"SECURITY USER ";

/// The handle amandad's bsdtcp refusal frame is written on.
pub const PREREAD_NAK_HANDLE: u32 = 1;

/// Whether the sender of a REQ must use a reserved port. `bsd`, `bsdudp` and `bsdtcp` require
/// it; Amanda's `ssl` auth does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRule {
    /// The source port must be below [`IPPORT_RESERVED`].
    Reserved,
    /// Any source port.
    Any,
}

/// The sender of a received packet, as the checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer<'a> {
    /// The peer's name as amandad prints it: reverse DNS, or the numeric address when that
    /// failed (`getnameinfo` without `NI_NAMEREQD`).
    pub name: &'a str,
    /// The peer's source port (the UDP port, or the control connection's TCP port).
    pub port: u16,
}

/// A REQ that passed the wire checks. Next: the `.amandahosts` check for (`peer.name`,
/// `remote_user`, `service`), then [`parse_service_request`] on `body`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatedRequest<'a> {
    /// The user named on the SECURITY line: everything after `USER ` (spaces kept).
    pub remote_user: &'a [u8],
    /// The rest of the SERVICE line, used for the `.amandahosts` service column. Untrusted:
    /// it may contain anything but `\n`.
    pub service: &'a [u8],
    /// The body with the SECURITY line removed (it starts with `SERVICE `).
    pub body: &'a [u8],
}

/// The outcome of [`check_received`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked<'a> {
    /// A REQ that passed.
    Request(AuthenticatedRequest<'a>),
    /// Any other type: nothing is checked, a leading SECURITY line is removed. amandad
    /// ignores these on its new-request path.
    Other {
        /// The packet's type.
        ptype: PacketType,
        /// The body without its SECURITY line.
        body: &'a [u8],
    },
}

/// A REQ body split like amandad's `protocol_accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRequest<'a> {
    /// The service name: the word after `SERVICE`. Untrusted; compare it with the enabled
    /// services before using it in a path.
    pub service: &'a [u8],
    /// What is written to the service's stdin: everything after the byte that ended the
    /// service name (normally the `OPTIONS` line and the DLEs). Never empty.
    pub arguments: &'a [u8],
}

/// A REQ refused on the wire. `Display` is exactly the real amandad's message (non-UTF-8
/// bytes shown lossily; [`RequestError::message`] has the exact bytes) and
/// [`RequestError::nak_body`] the NAK body it sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The REQ came from an unreserved port.
    #[error("host {host}: port {port} not secure")]
    NotSecure {
        /// The peer name.
        host: String,
        /// The peer's port.
        port: u16,
    },
    /// The body (after the SECURITY line) does not start with `SERVICE ` followed by a name.
    /// The text's "as" is Amanda's typo, kept because it is what goes on the wire.
    #[error("packet as no SERVICE line")]
    NoServiceLine,
    /// The REQ has no SECURITY line.
    #[error("no bsd SECURITY for P_REQ")]
    NoSecurity,
    /// The SECURITY line has no word after `SECURITY`, or no user after `USER`.
    #[error("SECURITY line: {}", String::from_utf8_lossy(.line))]
    SecurityLine {
        /// The whole SECURITY line, without `\n`.
        line: Vec<u8>,
    },
    /// The SECURITY line's first word is not `USER`.
    #[error("REQ SECURITY line parse error, expecting USER, got {}", String::from_utf8_lossy(.got))]
    ExpectingUser {
        /// The word found instead.
        got: Vec<u8>,
    },
    /// The body does not split into `SERVICE <name> <arguments>`.
    #[error("invalid REQ")]
    InvalidReq,
}

impl RequestError {
    /// The exact message bytes (what `Display` shows, without lossy decoding).
    pub fn message(&self) -> Vec<u8> {
        let with = |prefix: &[u8], tail: &[u8]| [prefix, tail].concat();
        match self {
            RequestError::SecurityLine { line } => with(b"SECURITY line: ", line),
            RequestError::ExpectingUser { got } => {
                with(b"REQ SECURITY line parse error, expecting USER, got ", got)
            }
            other => other.to_string().into_bytes(),
        }
    }

    /// The NAK body amandad sends for this error: `ERROR <message>\n`.
    pub fn nak_body(&self) -> Vec<u8> {
        nak_body(&self.message())
    }
}

/// A user name that cannot go on a SECURITY line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The name is empty (the receiver would report `SECURITY line: SECURITY USER `).
    #[error("SECURITY USER name is empty")]
    Empty,
    /// The name contains `\n` or NUL, which would end the line or the packet.
    #[error("SECURITY USER name {name:?} contains a newline or NUL at offset {offset}")]
    Forbidden {
        /// The name (lossy).
        name: String,
        /// Offset of the offending byte.
        offset: usize,
    },
}

/// Appends `SECURITY USER <user>\n` to `out` (what `bsd_prefix_packet` puts in front of a
/// REQ body). On error `out` is unchanged.
pub fn write_security_user_line(user: &[u8], out: &mut Vec<u8>) -> Result<(), UserError> {
    if user.is_empty() {
        return Err(UserError::Empty);
    }
    if let Some(offset) = memchr::memchr2(b'\n', 0, user) {
        return Err(UserError::Forbidden {
            name: String::from_utf8_lossy(user).into_owned(),
            offset,
        });
    }
    out.reserve(SECURITY_USER_PREFIX.len() + user.len() + 1);
    out.extend_from_slice(SECURITY_USER_PREFIX);
    out.extend_from_slice(user);
    out.push(b'\n');
    Ok(())
}

/// The `SECURITY` line of a packet's body, read the same way for UDP datagrams and TCP
/// packets (and by the receiver's check, [`split_security_line`]).
pub trait SecurityLine {
    /// The whole body.
    fn body_bytes(&self) -> &[u8];

    /// The `SECURITY ...` line at the start of the body (without its `\n`), if any.
    fn security_line(&self) -> Option<&[u8]> {
        split_security_line(self.body_bytes()).0
    }

    /// The user named by a `SECURITY USER <user>` line, if the body starts with one.
    fn security_user(&self) -> Option<&[u8]> {
        self.security_line().and_then(security_line_user)
    }

    /// The body after the `SECURITY` line (the whole body if there is none).
    fn body_without_security(&self) -> &[u8] {
        split_security_line(self.body_bytes()).1
    }
}

/// Splits a body into its leading SECURITY line (without `\n`) and the rest. A body has a
/// SECURITY line iff it starts with `SECURITY ` and contains a `\n`; otherwise the whole body
/// is returned unchanged.
pub fn split_security_line(body: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if !body.starts_with(b"SECURITY ") {
        return (None, body);
    }
    match memchr::memchr(b'\n', body) {
        Some(nl) => {
            let (line, rest) = body.split_at(nl);
            (Some(line), rest.get(1..).unwrap_or_default())
        }
        None => (None, body),
    }
}

/// The user of a SECURITY line (as returned by [`split_security_line`]) if it is a valid
/// `SECURITY USER <user>` line.
pub fn security_line_user(line: &[u8]) -> Option<&[u8]> {
    parse_security_line(line).ok()
}

/// The receiver's parse of a SECURITY line: after `SECURITY `, spaces are skipped, the next
/// word must be `USER`, and everything after the single space that ends it is the user name.
fn parse_security_line(line: &[u8]) -> Result<&[u8], RequestError> {
    let whole = || RequestError::SecurityLine {
        line: line.to_vec(),
    };
    let after = line.strip_prefix(b"SECURITY ").ok_or_else(whole)?;
    let start = after.iter().position(|&b| b != b' ').ok_or_else(whole)?;
    let (_, word_and_rest) = after.split_at(start);
    let (word, rest) = match memchr::memchr(b' ', word_and_rest) {
        Some(sp) => {
            let (word, rest) = word_and_rest.split_at(sp);
            (word, rest.get(1..).unwrap_or_default())
        }
        None => (word_and_rest, &[][..]),
    };
    if word != b"USER" {
        return Err(RequestError::ExpectingUser { got: word.to_vec() });
    }
    if rest.is_empty() {
        return Err(whole());
    }
    Ok(rest)
}

/// The service name the security check extracts: the SERVICE line's text after `SERVICE `,
/// newlines skipped first, up to the next `\n`. `None` if the body does not start with
/// `SERVICE ` or nothing follows.
fn service_line(body: &[u8]) -> Option<&[u8]> {
    let after = body.strip_prefix(b"SERVICE ")?;
    let start = after.iter().position(|&b| b != b'\n')?;
    let (_, from) = after.split_at(start);
    Some(match memchr::memchr(b'\n', from) {
        Some(nl) => from.split_at(nl).0,
        None => from,
    })
}

/// Runs the wire checks of a received packet (`bsd_recv_security_ok`; see the module docs
/// for the order). `peer` is the sender; `rule` says whether its port must be reserved.
///
/// Call this on every packet that starts a new exchange on the client (amandad). A REQ that
/// passes comes back as [`Checked::Request`]; any other type as [`Checked::Other`]. On `Err`,
/// answer with a NAK whose body is [`RequestError::nak_body`] on the packet's own handle.
pub fn check_received<'a>(
    ptype: PacketType,
    peer: Peer<'_>,
    rule: PortRule,
    body: &'a [u8],
) -> Result<Checked<'a>, RequestError> {
    let (security, rest) = split_security_line(body);
    if ptype != PacketType::Req {
        return Ok(Checked::Other { ptype, body: rest });
    }
    if rule == PortRule::Reserved && peer.port >= IPPORT_RESERVED {
        return Err(RequestError::NotSecure {
            host: peer.name.to_owned(),
            port: peer.port,
        });
    }
    let service = service_line(rest).ok_or(RequestError::NoServiceLine)?;
    let line = security.ok_or(RequestError::NoSecurity)?;
    let remote_user = parse_security_line(line)?;
    Ok(Checked::Request(AuthenticatedRequest {
        remote_user,
        service,
        body: rest,
    }))
}

/// Splits a checked REQ body into service name and arguments like amandad's
/// `protocol_accept`: the first space-separated word must be `SERVICE`; the service name is
/// the next word ended by a space or `\n`; at least one byte must follow that delimiter.
/// Otherwise [`RequestError::InvalidReq`] (NAK `ERROR invalid REQ\n`).
///
/// Call this after [`check_received`] and the `.amandahosts` check: amandad reports their
/// errors first.
pub fn parse_service_request(body: &[u8]) -> Result<ServiceRequest<'_>, RequestError> {
    // The next word ended by a delimiter, and what follows that delimiter; a word that
    // runs to the end is no word.
    fn word(s: &[u8], delim: fn(&u8) -> bool) -> Result<(&[u8], &[u8]), RequestError> {
        let start = s
            .iter()
            .position(|b| !delim(b))
            .ok_or(RequestError::InvalidReq)?;
        let s = &s[start..];
        let end = s.iter().position(delim).ok_or(RequestError::InvalidReq)?;
        Ok((&s[..end], s.get(end + 1..).unwrap_or_default()))
    }
    let (keyword, rest) = word(body, |b| *b == b' ')?;
    if keyword != b"SERVICE" {
        return Err(RequestError::InvalidReq);
    }
    let (service, arguments) = word(rest, |b| *b == b' ' || *b == b'\n')?;
    if arguments.is_empty() {
        return Err(RequestError::InvalidReq);
    }
    Ok(ServiceRequest { service, arguments })
}

/// What [`admit`] makes of a packet that starts a new exchange; `S` is the caller's
/// service type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission<'a, S> {
    /// Run `service` for `user` with `args` (the body after the SERVICE line).
    Accept {
        /// The service.
        service: S,
        /// The remote user of the SECURITY line (lossy).
        user: String,
        /// What follows the service name (`OPTIONS ...\n` and the command); never empty.
        args: &'a [u8],
    },
    /// Answer with a NAK with this body on the packet's own handle.
    Nak(Vec<u8>),
    /// Not a REQ: amandad ignores it.
    Ignore(PacketType),
}

/// amandad's intake of a new packet, in its order: [`check_received`], then `hosts` (the
/// caller's `.amandahosts` check of the remote user and the SERVICE line, `Err` carrying
/// the refusal text), then [`parse_service_request`], then `serves` (the caller's choice of
/// service by name, `Err` carrying the NAK body).
pub fn admit<'a, S>(
    ptype: PacketType,
    peer: Peer<'_>,
    rule: PortRule,
    body: &'a [u8],
    hosts: impl FnOnce(&str, &str) -> Result<(), String>,
    serves: impl FnOnce(&[u8]) -> Result<S, Vec<u8>>,
) -> Admission<'a, S> {
    let checked = match check_received(ptype, peer, rule, body) {
        Err(e) => return Admission::Nak(e.nak_body()),
        Ok(Checked::Other { ptype, .. }) => return Admission::Ignore(ptype),
        Ok(Checked::Request(r)) => r,
    };
    let user = String::from_utf8_lossy(checked.remote_user).into_owned();
    if let Err(text) = hosts(&user, &String::from_utf8_lossy(checked.service)) {
        return Admission::Nak(nak_body(text.as_bytes()));
    }
    let split = match parse_service_request(checked.body) {
        Ok(split) => split,
        Err(e) => return Admission::Nak(e.nak_body()),
    };
    match serves(split.service) {
        Ok(service) => Admission::Accept {
            service,
            user,
            args: split.arguments,
        },
        Err(nak) => Admission::Nak(nak),
    }
}

/// A NAK body: `ERROR <message>\n` (amandad's form for security and request errors).
pub fn nak_body(message: &[u8]) -> Vec<u8> {
    [b"ERROR ", message, b"\n"].concat()
}

/// How a bsdtcp refusal frame carries its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalStyle {
    /// Amanda 3.5.1: the type byte overwrites the first character of the text, and the
    /// frame is as long as the text (an empty text makes an end-of-stream frame).
    Amanda351,
    /// Amanda 3.5.2 and later: the type byte is followed by the whole text.
    Intact,
}

/// Appends the frame amandad writes on handle 1 when it refuses a bsdtcp connection before
/// reading anything (the peer's name does not resolve back to its address, spec §3.4,
/// §4.1). `message` is the bare reason, e.g. `<name> doesn't resolve to <addr>`: there is no
/// `ERROR ` prefix, no `\n` and no NUL. A server parses the payload as a NAK whose body is
/// the text after the type byte. On error `out` is unchanged.
pub fn preread_refusal_frame(
    message: &[u8],
    style: RefusalStyle,
    out: &mut Vec<u8>,
) -> Result<(), FrameTooLong> {
    let nak = PacketType::Nak.code();
    let tail = match style {
        RefusalStyle::Amanda351 if message.is_empty() => {
            out.extend_from_slice(&frame::eof_frame(PREREAD_NAK_HANDLE));
            return Ok(());
        }
        RefusalStyle::Amanda351 => message.get(1..).unwrap_or_default(),
        RefusalStyle::Intact => message,
    };
    let header = frame::encode_header(PREREAD_NAK_HANDLE, 1 + tail.len())?;
    out.reserve(frame::HEADER_LEN + 1 + tail.len());
    out.extend_from_slice(&header);
    out.push(nak);
    out.extend_from_slice(tail);
    Ok(())
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: Peer<'static> = Peer {
        name: "server.example.com",
        port: 852,
    };

    fn req(body: &[u8]) -> Result<Checked<'_>, RequestError> {
        check_received(PacketType::Req, PEER, PortRule::Reserved, body)
    }

    #[test]
    fn good_request_yields_user_service_and_stripped_body() {
        let body = b"SECURITY USER backup\nSERVICE noop\nOPTIONS features=ff;\n";
        let Checked::Request(r) = req(body).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.remote_user, b"backup");
        assert_eq!(r.service, b"noop");
        assert_eq!(r.body, b"SERVICE noop\nOPTIONS features=ff;\n");
        let s = parse_service_request(r.body).unwrap();
        assert_eq!(s.service, b"noop");
        assert_eq!(s.arguments, b"OPTIONS features=ff;\n");
    }

    #[test]
    fn tv13_nak_for_unreserved_port_matches_real_amandad() {
        let peer = Peer {
            name: "server.example.com",
            port: 40123,
        };
        let e = check_received(
            PacketType::Req,
            peer,
            PortRule::Reserved,
            b"SECURITY USER backup\nSERVICE noop\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "host server.example.com: port 40123 not secure"
        );
        assert_eq!(
            e.nak_body(),
            b"ERROR host server.example.com: port 40123 not secure\n"
        );
        // The port check comes first, before anything about the body.
        let e = check_received(PacketType::Req, peer, PortRule::Reserved, b"").unwrap_err();
        assert!(matches!(e, RequestError::NotSecure { port: 40123, .. }));
        // Port 1023 is reserved; ssl-style rules skip the check.
        let ok = Peer { port: 1023, ..peer };
        assert!(
            check_received(
                PacketType::Req,
                ok,
                PortRule::Reserved,
                b"SECURITY USER b\nSERVICE noop\n"
            )
            .is_ok()
        );
        assert!(
            check_received(
                PacketType::Req,
                peer,
                PortRule::Any,
                b"SECURITY USER b\nSERVICE noop\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn missing_service_line_nak_keeps_amandas_typo() {
        let e = req(b"SECURITY USER backup\nOPTIONS x\n").unwrap_err();
        assert_eq!(e.nak_body(), b"ERROR packet as no SERVICE line\n");
        // `SERVICE ` followed by nothing but newlines has no service either.
        assert_eq!(
            req(b"SECURITY USER b\nSERVICE \n\n"),
            Err(RequestError::NoServiceLine)
        );
        // The service check comes before the SECURITY check.
        assert_eq!(req(b"SERVICE"), Err(RequestError::NoServiceLine));
    }

    #[test]
    fn missing_security_line_is_refused() {
        assert_eq!(
            req(b"SERVICE noop\nOPTIONS x\n").unwrap_err().nak_body(),
            b"ERROR no bsd SECURITY for P_REQ\n"
        );
        // Without a newline there is no SECURITY line at all, so no SERVICE line either.
        assert_eq!(
            req(b"SECURITY USER backup"),
            Err(RequestError::NoServiceLine)
        );
    }

    #[test]
    fn security_line_must_name_a_user() {
        let e = req(b"SECURITY USR backup\nSERVICE noop\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "REQ SECURITY line parse error, expecting USER, got USR"
        );
        let e = req(b"SECURITY   \nSERVICE noop\n").unwrap_err();
        assert_eq!(e.to_string(), "SECURITY line: SECURITY   ");
        let e = req(b"SECURITY USER\nSERVICE noop\n").unwrap_err();
        assert_eq!(e.to_string(), "SECURITY line: SECURITY USER");
        let e = req(b"SECURITY USER \nSERVICE noop\n").unwrap_err();
        assert_eq!(e.to_string(), "SECURITY line: SECURITY USER ");
        // Spaces before USER are skipped; spaces in the user name are kept.
        let Checked::Request(r) = req(b"SECURITY   USER  a b\nSERVICE noop\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.remote_user, b" a b");
    }

    #[test]
    fn error_message_keeps_raw_bytes() {
        let e = req(b"SECURITY \xffX u\nSERVICE noop\n").unwrap_err();
        assert_eq!(
            e.nak_body(),
            b"ERROR REQ SECURITY line parse error, expecting USER, got \xffX\n"
        );
    }

    #[test]
    fn other_types_are_not_checked_but_stripped() {
        let peer = Peer {
            name: "h",
            port: 40000,
        };
        assert_eq!(
            check_received(PacketType::Ack, peer, PortRule::Reserved, b""),
            Ok(Checked::Other {
                ptype: PacketType::Ack,
                body: b""
            })
        );
        assert_eq!(
            check_received(
                PacketType::Rep,
                peer,
                PortRule::Reserved,
                b"SECURITY x\nOPTIONS\n"
            ),
            Ok(Checked::Other {
                ptype: PacketType::Rep,
                body: b"OPTIONS\n"
            })
        );
    }

    #[test]
    fn service_request_needs_arguments() {
        assert_eq!(
            parse_service_request(b"SERVICE noop"),
            Err(RequestError::InvalidReq)
        );
        assert_eq!(
            parse_service_request(b"SERVICE noop\n"),
            Err(RequestError::InvalidReq)
        );
        assert_eq!(RequestError::InvalidReq.nak_body(), b"ERROR invalid REQ\n");
        assert_eq!(
            parse_service_request(b"SERVICE\nnoop x"),
            Err(RequestError::InvalidReq)
        );
        assert_eq!(
            parse_service_request(b"SERVICES noop x"),
            Err(RequestError::InvalidReq)
        );
        let s = parse_service_request(b"SERVICE  \nnoop x").unwrap();
        assert_eq!((s.service, s.arguments), (&b"noop"[..], &b"x"[..]));
        let s = parse_service_request(b"SERVICE noop \nOPTIONS").unwrap();
        assert_eq!(s.arguments, b"\nOPTIONS");
    }

    #[test]
    fn security_user_line_is_written_like_bsd_prefix_packet() {
        let mut out = Vec::new();
        write_security_user_line(b"backup", &mut out).unwrap();
        assert_eq!(out, b"SECURITY USER backup\n");
        assert_eq!(
            write_security_user_line(b"", &mut out),
            Err(UserError::Empty)
        );
        assert!(write_security_user_line(b"a\nb", &mut out).is_err());
        assert_eq!(out, b"SECURITY USER backup\n");
        let (line, rest) = split_security_line(b"SECURITY USER backup\nSERVICE x\n");
        assert_eq!(security_line_user(line.unwrap()), Some(&b"backup"[..]));
        assert_eq!(rest, b"SERVICE x\n");
    }

    #[test]
    fn preread_refusal_loses_first_character_in_351() {
        let msg = b"localhost doesn't resolve to 127.0.0.2";
        let mut out = Vec::new();
        preread_refusal_frame(msg, RefusalStyle::Amanda351, &mut out).unwrap();
        let mut want = vec![0, 0, 0, msg.len() as u8, 0, 0, 0, 1, 4];
        want.extend_from_slice(&msg[1..]);
        assert_eq!(out, want);

        let mut out = Vec::new();
        preread_refusal_frame(msg, RefusalStyle::Intact, &mut out).unwrap();
        let mut want = vec![0, 0, 0, msg.len() as u8 + 1, 0, 0, 0, 1, 4];
        want.extend_from_slice(msg);
        assert_eq!(out, want);

        let mut out = Vec::new();
        preread_refusal_frame(b"", RefusalStyle::Amanda351, &mut out).unwrap();
        assert_eq!(out, frame::eof_frame(1));
    }

    proptest! {
        #[test]
        fn checks_never_panic(
            ptype in proptest::sample::select(PacketType::ALL.to_vec()),
            port in any::<u16>(),
            body in proptest::collection::vec(proptest::sample::select(
                vec![b'S', b'E', b'C', b'U', b'R', b'I', b'T', b'Y', b'V', b' ', b'\n', b'x']), 0..60),
        ) {
            let peer = Peer { name: "h", port };
            if let Ok(Checked::Request(r)) = check_received(ptype, peer, PortRule::Reserved, &body) {
                prop_assert!(!r.remote_user.is_empty());
                prop_assert!(r.body.starts_with(b"SERVICE "));
                let _ = parse_service_request(r.body);
            }
        }

        #[test]
        fn written_user_is_read_back(user in proptest::collection::vec(any::<u8>().prop_filter("", |b| *b != b'\n' && *b != 0), 1..30)) {
            let mut body = Vec::new();
            write_security_user_line(&user, &mut body).unwrap();
            body.extend_from_slice(b"SERVICE noop\nOPTIONS x\n");
            let Ok(Checked::Request(r)) = req(&body) else { panic!("refused") };
            prop_assert_eq!(r.remote_user, &user[..]);
        }
    }
}
