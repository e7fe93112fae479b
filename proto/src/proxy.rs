//! The client side of an HTTP CONNECT tunnel (RFC 9110 §9.3.6), as values: the proxy URL
//! (`http://[user:pass@]host:port`), the `CONNECT host:port` request with its optional
//! `Proxy-Authorization: Basic`, and an incremental reader of the proxy's answer that
//! ends in [`Established`] (with the bytes after the header, which already belong to the
//! tunnel) or a typed [`ProxyError`] naming the proxy and its status line (issue 14).
//!
//! The answer is read byte by byte up to the end of its header and never past
//! [`MAX_ANSWER_HEADER`] bytes: a proxy (or whatever answers on its port) cannot make us
//! hold more. Any 2xx opens the tunnel; a 2xx's `Content-Length`/`Transfer-Encoding` are
//! ignored, as RFC 9110 says. Bare-LF line ends are tolerated (some proxies send them).
//!
//! What this module must not do: open sockets, read clocks or decide whether a host goes
//! through a proxy (the shells do I/O and timeouts; `conf` holds the settings and the
//! `no_proxy` rules).

use std::fmt;
use std::net::IpAddr;

use base64::Engine;

/// The most bytes a proxy's answer header (status line, fields, empty line) may take.
pub const MAX_ANSWER_HEADER: usize = 16 * 1024;

/// User and password for `Proxy-Authorization: Basic` (already percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user (no `:`, no control characters).
    pub user: String,
    /// The password (no control characters).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password (logs, panics).
        write!(
            f,
            "Credentials {{ user: {:?}, password: \"***\" }}",
            self.user
        )
    }
}

/// An HTTP proxy: `http://[user:pass@]host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// Port (the URL must give one: there is no convention for a backup proxy's port).
    pub port: u16,
    /// For `Proxy-Authorization: Basic`.
    pub credentials: Option<Credentials>,
}

impl fmt::Display for ProxyUrl {
    /// `host:port` (`[v6]:port`), never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", authority(&self.host, self.port))
    }
}

/// Why a proxy URL is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `http://...` (https proxies, socks are not supported).
    #[error("must be http://host:port (found {0:?}); https:// and socks proxies are not supported")]
    Scheme(String),
    /// Nothing where the host should be.
    #[error("has no host")]
    NoHost,
    /// No `:port` after the host.
    #[error("has no port (write http://host:port)")]
    NoPort,
    /// The port is not a number in 1..=65535.
    #[error("port {0:?} is not a number between 1 and 65535")]
    BadPort(String),
    /// A character a host name cannot have (or an unclosed `[`).
    #[error("host {0:?} is not a host name or IP address")]
    BadHost(String),
    /// A path, query or fragment after the port.
    #[error("has {0:?} after host:port (only http://[user:pass@]host:port is read)")]
    Trailing(String),
    /// Bad user or password (a `%` not followed by two hex digits, control characters, a
    /// `:` in the user).
    #[error("user:password {0}")]
    BadCredentials(&'static str),
}

impl ProxyUrl {
    /// Parses `http://[user:pass@]host:port[/]` (the `http://` may be left out); user and
    /// password may be percent-encoded.
    pub fn parse(text: &str) -> Result<ProxyUrl, UrlError> {
        let text = text.trim();
        // No scheme at all (`proxy:3128`) is read as http://, as curl and most tools do.
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(UrlError::Scheme(format!("{scheme}://"))),
            None => text,
        };
        // A single trailing slash is what many tools write; anything else is refused.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(i) = rest.find(['/', '?', '#']) {
            return Err(UrlError::Trailing(rest[i..].to_owned()));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = userinfo.map(parse_userinfo).transpose()?;
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::BadHost(hostport.to_owned()))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::BadHost(h.to_owned()));
            }
            let port = after.strip_prefix(':').ok_or(UrlError::NoPort)?;
            (h, port)
        } else {
            let (h, port) = hostport.rsplit_once(':').ok_or(if hostport.is_empty() {
                UrlError::NoHost
            } else {
                UrlError::NoPort
            })?;
            (h, port)
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if !is_host(host) {
            return Err(UrlError::BadHost(host.to_owned()));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(UrlError::BadPort(port.to_owned())),
        };
        Ok(ProxyUrl {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

fn parse_userinfo(u: &str) -> Result<Credentials, UrlError> {
    let (user, password) = u.split_once(':').unwrap_or((u, ""));
    let user = percent_decode(user)?;
    let password = percent_decode(password)?;
    if user.contains(':') {
        return Err(UrlError::BadCredentials(
            "has a ':' in the user name, which Basic authentication cannot carry",
        ));
    }
    if user.chars().chain(password.chars()).any(char::is_control) {
        return Err(UrlError::BadCredentials("has control characters"));
    }
    Ok(Credentials { user, password })
}

fn percent_decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(UrlError::BadCredentials(
                    "has a '%' not followed by two hex digits",
                ))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::BadCredentials("is not UTF-8 once decoded"))
}

/// A host name or IP address as it may stand in a request line: letters, digits, `-`,
/// `.`, `_` (names), or an IPv6 address. Nothing that could end the line or the field.
pub fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && (h.parse::<IpAddr>().is_ok()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
}

/// `host:port`, with an IPv6 address in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a CONNECT request cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot ask the HTTP proxy for a tunnel to {0:?}: not a host name or IP address")]
pub struct RequestError(pub String);

/// `CONNECT host:port HTTP/1.1` with `Host:` and, when `credentials` are given,
/// `Proxy-Authorization: Basic`.
pub fn connect_request(
    host: &str,
    port: u16,
    credentials: Option<&Credentials>,
) -> Result<Vec<u8>, RequestError> {
    if !is_host(host) {
        return Err(RequestError(host.to_owned()));
    }
    let target = authority(host, port);
    let mut r = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = credentials {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        r.push_str("Proxy-Authorization: Basic ");
        r.push_str(&token);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    Ok(r.into_bytes())
}

/// The tunnel is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// The 2xx status code.
    pub status: u16,
    /// Bytes the proxy sent after its header: the first bytes from the target.
    pub rest: Vec<u8>,
}

/// Why the proxy did not open the tunnel. `Display` names the proxy, the target and the
/// proxy's status line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// 403: the proxy's rules refuse this target (host or port).
    #[error(
        "HTTP proxy {proxy} refused the tunnel to {target}: \"{status_line}\" (the proxy's rules do not allow CONNECT to this host or port)"
    )]
    Forbidden {
        /// The proxy (`host:port`).
        proxy: String,
        /// What was asked for (`host:port`).
        target: String,
        /// The status line, as received (printable characters only).
        status_line: String,
    },
    /// 407: the proxy wants credentials, or refused the ones sent.
    #[error(
        "HTTP proxy {proxy} refused the tunnel to {target}: \"{status_line}\" ({}{})",
        if *.sent_credentials { "it refused the user:password of the proxy URL" } else { "it requires authentication: put user:password in the proxy URL" },
        .challenge.as_ref().map(|c| format!("; it asks for {c}")).unwrap_or_default()
    )]
    AuthRequired {
        /// The proxy.
        proxy: String,
        /// What was asked for.
        target: String,
        /// The status line.
        status_line: String,
        /// Whether the request carried `Proxy-Authorization`.
        sent_credentials: bool,
        /// The first `Proxy-Authenticate` field's value (`Basic realm="..."`), if any.
        challenge: Option<String>,
    },
    /// Any other non-2xx status (502 when the target refused the proxy, 504, ...).
    #[error("HTTP proxy {proxy} did not open the tunnel to {target}: \"{status_line}\"")]
    Status {
        /// The proxy.
        proxy: String,
        /// What was asked for.
        target: String,
        /// The status code.
        status: u16,
        /// The status line.
        status_line: String,
    },
    /// Not an HTTP answer (or a broken one).
    #[error("HTTP proxy {proxy} gave a malformed answer to CONNECT {target}: {what}")]
    Malformed {
        /// The proxy.
        proxy: String,
        /// What was asked for.
        target: String,
        /// What is wrong, with the first bytes received.
        what: String,
    },
    /// The header did not end within [`MAX_ANSWER_HEADER`] bytes.
    #[error(
        "HTTP proxy {proxy} sent more than {limit} bytes of answer header to CONNECT {target} without ending it"
    )]
    TooLarge {
        /// The proxy.
        proxy: String,
        /// What was asked for.
        target: String,
        /// The bound.
        limit: usize,
    },
    /// The proxy closed the connection before its answer was complete.
    #[error(
        "HTTP proxy {proxy} closed the connection before answering CONNECT {target}{}",
        if .received == &0 { String::new() } else { format!(" ({} bytes of an answer received)", .received) }
    )]
    Closed {
        /// The proxy.
        proxy: String,
        /// What was asked for.
        target: String,
        /// Bytes of the answer received.
        received: usize,
    },
}

impl ProxyError {
    /// The status code, when the proxy gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProxyError::Forbidden { .. } => Some(403),
            ProxyError::AuthRequired { .. } => Some(407),
            ProxyError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads a proxy's answer to one CONNECT: feed it what the socket gives with
/// [`Handshake::handle_bytes`] until it returns `Ok(Some(..))` or an error; call
/// [`Handshake::handle_eof`] if the proxy closes first.
#[derive(Debug)]
pub struct Handshake {
    proxy: String,
    target: String,
    sent_credentials: bool,
    limit: usize,
    header: Vec<u8>,
    done: bool,
}

impl Handshake {
    /// For the answer of `proxy` (named in errors) to a CONNECT to `target` (`host:port`).
    pub fn new(
        proxy: impl Into<String>,
        target: impl Into<String>,
        sent_credentials: bool,
    ) -> Self {
        Handshake {
            proxy: proxy.into(),
            target: target.into(),
            sent_credentials,
            limit: MAX_ANSWER_HEADER,
            header: Vec::new(),
            done: false,
        }
    }

    /// With another header bound (tests).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The proxy, as errors name it.
    pub fn proxy(&self) -> &str {
        &self.proxy
    }

    /// Bytes of the answer header taken so far.
    pub fn received(&self) -> usize {
        self.header.len()
    }

    /// Takes bytes from the proxy. `Ok(None)`: the header is not complete yet.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<Established>, ProxyError> {
        if self.done {
            return Err(self.malformed("bytes after the handshake ended".into()));
        }
        for (i, &b) in data.iter().enumerate() {
            self.header.push(b);
            // Early verdict on garbage: an answer that does not start like HTTP is not
            // read to the bound (a TLS server or amandad on the proxy's port).
            if self.header.len() <= 5 && !b"HTTP/".starts_with(&self.header) {
                return Err(self.malformed(format!(
                    "it does not begin with \"HTTP/\" but with {}",
                    printable(&self.header)
                )));
            }
            if b == b'\n' && ends_header(&self.header) {
                self.done = true;
                return self.verdict(data[i + 1..].to_vec()).map(Some);
            }
            if self.header.len() >= self.limit {
                self.done = true;
                return Err(ProxyError::TooLarge {
                    proxy: self.proxy.clone(),
                    target: self.target.clone(),
                    limit: self.limit,
                });
            }
        }
        Ok(None)
    }

    /// The proxy closed its side before the end of its header.
    pub fn handle_eof(&mut self) -> ProxyError {
        self.done = true;
        ProxyError::Closed {
            proxy: self.proxy.clone(),
            target: self.target.clone(),
            received: self.header.len(),
        }
    }

    fn malformed(&self, what: String) -> ProxyError {
        ProxyError::Malformed {
            proxy: self.proxy.clone(),
            target: self.target.clone(),
            what,
        }
    }

    fn verdict(&self, rest: Vec<u8>) -> Result<Established, ProxyError> {
        let mut lines = self
            .header
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let shown = printable(status_line);
        let status = parse_status_line(status_line)
            .ok_or_else(|| self.malformed(format!("bad status line \"{shown}\"")))?;
        let mut challenge = None;
        for field in lines.filter(|l| !l.is_empty()) {
            let Some(colon) = memchr::memchr(b':', field) else {
                return Err(
                    self.malformed(format!("header field without ':' \"{}\"", printable(field)))
                );
            };
            let (name, value) = field.split_at(colon);
            if name.is_empty() || name.iter().any(|b| !is_token(*b)) {
                return Err(
                    self.malformed(format!("bad header field name \"{}\"", printable(name)))
                );
            }
            if challenge.is_none() && name.eq_ignore_ascii_case(b"proxy-authenticate") {
                challenge = Some(printable(value[1..].trim_ascii()));
            }
        }
        let (proxy, target, status_line) = (self.proxy.clone(), self.target.clone(), shown);
        match status {
            200..=299 => Ok(Established { status, rest }),
            403 => Err(ProxyError::Forbidden {
                proxy,
                target,
                status_line,
            }),
            407 => Err(ProxyError::AuthRequired {
                proxy,
                target,
                status_line,
                sent_credentials: self.sent_credentials,
                challenge,
            }),
            _ => Err(ProxyError::Status {
                proxy,
                target,
                status,
                status_line,
            }),
        }
    }
}

/// Whether `h` (ending in `\n`) ends with an empty line: `\n\n` or `\n\r\n`.
fn ends_header(h: &[u8]) -> bool {
    h.ends_with(b"\n\n") || h.ends_with(b"\n\r\n")
}

/// `HTTP/1.x SP 3DIGIT [SP reason]` → the code.
fn parse_status_line(l: &[u8]) -> Option<u16> {
    let rest = l.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match rest.get(3) {
        None | Some(b' ') => {}
        Some(_) => return None,
    }
    if rest.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return None;
    }
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=599).contains(&code).then_some(code)
}

/// An HTTP token character (field names).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// At most 200 bytes, control and non-ASCII bytes escaped: safe to print in a log line.
fn printable(b: &[u8]) -> String {
    let mut s: String = b
        .iter()
        .take(200)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.len() > 200 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hs() -> Handshake {
        Handshake::new("127.0.0.1:3128", "198.18.1.2:10080", false)
    }

    #[test]
    fn the_request_names_the_target_with_ipv6_in_brackets_and_basic_credentials() {
        assert_eq!(
            connect_request("198.18.1.2", 10080, None).unwrap(),
            b"CONNECT 198.18.1.2:10080 HTTP/1.1\r\nHost: 198.18.1.2:10080\r\n\r\n"
        );
        assert_eq!(
            connect_request("::1", 10080, None).unwrap(),
            b"CONNECT [::1]:10080 HTTP/1.1\r\nHost: [::1]:10080\r\n\r\n"
        );
        let c = Credentials {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        // RFC 7617's example.
        let r = String::from_utf8(connect_request("client", 1, Some(&c)).unwrap()).unwrap();
        assert!(
            r.contains("\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"),
            "{r}"
        );
        assert!(format!("{c:?}").contains("***") && !format!("{c:?}").contains("sesame"));
    }

    #[test]
    fn a_target_that_could_inject_header_lines_is_refused() {
        for bad in ["a\r\nX: y", "a b", "", "a/b", "a:b"] {
            assert!(connect_request(bad, 1, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_parse_with_credentials_ipv6_and_percent_encoding() {
        let u = ProxyUrl::parse("http://proxy.example:3128").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.credentials),
            ("proxy.example", 3128, None)
        );
        let u = ProxyUrl::parse(" HTTP://u%40x:p%3As@[2001:db8::1]:8080/ ").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.to_string(), "[2001:db8::1]:8080");
        let c = u.credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u@x", "p:s"));
        assert_eq!(
            ProxyUrl::parse("proxy:3128").unwrap().to_string(),
            "proxy:3128"
        );
        let u = ProxyUrl::parse("http://user@10.0.0.1:1").unwrap();
        assert_eq!(u.credentials.unwrap().password, "");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (
                "ftp://proxy:3128",
                "must be http://host:port (found \"ftp://\")",
            ),
            ("https://p:3128", "https:// and socks"),
            ("socks5://p:1080", "socks"),
            ("http://p", "has no port"),
            ("http://:3128", "has no host"),
            ("http://p:0", "port \"0\""),
            ("http://p:70000", "port \"70000\""),
            ("http://p:+80", "port \"+80\""),
            ("http://p:3128/path", "\"/path\" after host:port"),
            ("http://p q:3128", "host \"p q\""),
            ("http://[::1:3128", "is not a host"),
            ("http://[nothost]:1", "host \"nothost\""),
            ("http://u%zz:p@p:1", "two hex digits"),
            ("http://u%3Ax:p@p:1", "':' in the user"),
            ("http://u:%0a@p:1", "control characters"),
        ];
        for (url, want) in cases {
            let e = ProxyUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn a_200_opens_the_tunnel_and_keeps_the_bytes_after_the_header() {
        let mut h = hs();
        let answer = b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\nQ\x00frame";
        assert_eq!(
            h.handle_bytes(answer).unwrap(),
            Some(Established {
                status: 200,
                rest: b"Q\x00frame".to_vec()
            })
        );
        // Byte by byte, bare LF, HTTP/1.0, no reason phrase.
        let mut h = hs();
        let answer = b"HTTP/1.0 200\n\nX";
        let mut got = None;
        for b in answer.chunks(1) {
            if let Some(e) = h.handle_bytes(b).unwrap() {
                got = Some(e);
                break;
            }
        }
        assert_eq!(
            got.unwrap(),
            Established {
                status: 200,
                rest: Vec::new()
            }
        );
        // A 2xx body length is ignored (RFC 9110): what follows is the tunnel.
        let mut h = hs();
        let e = h
            .handle_bytes(b"HTTP/1.1 204 ok\r\nContent-Length: 5\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!((e.status, e.rest), (204, b"abc".to_vec()));
    }

    #[test]
    fn refusals_name_the_proxy_the_target_and_the_status_line() {
        let e = hs()
            .handle_bytes(b"HTTP/1.1 403 Access violation\r\nContent-Length: 3\r\n\r\nno!")
            .unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert_eq!(
            e.to_string(),
            "HTTP proxy 127.0.0.1:3128 refused the tunnel to 198.18.1.2:10080: \"HTTP/1.1 403 Access violation\" (the proxy's rules do not allow CONNECT to this host or port)"
        );
        let e = hs()
            .handle_bytes(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxY-AuthentiCate: Basic realm=\"corp\"\r\n\r\n",
            )
            .unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("\"HTTP/1.1 407 Proxy Authentication Required\""),
            "{t}"
        );
        assert!(
            t.contains("requires authentication: put user:password in the proxy URL"),
            "{t}"
        );
        assert!(t.contains("it asks for Basic realm=\\\"corp\\\""), "{t}");
        let e = Handshake::new("p:1", "c:2", true)
            .handle_bytes(b"HTTP/1.1 407 no\r\n\r\n")
            .unwrap_err();
        assert!(e.to_string().contains("refused the user:password"), "{e}");
        let e = hs()
            .handle_bytes(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.status(), Some(502));
        assert!(
            e.to_string().contains(
                "did not open the tunnel to 198.18.1.2:10080: \"HTTP/1.1 502 Bad Gateway\""
            ),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_malformed_at_once_and_escaped() {
        let e = hs().handle_bytes(b"\x16\x03\x01").unwrap_err();
        assert!(
            e.to_string()
                .contains("does not begin with \"HTTP/\" but with \\x16"),
            "{e}"
        );
        // Each refused for its own fault, named in the error.
        for (bad, why) in [
            (
                &b"HTTP/2 200 ok\r\n\r\n"[..],
                "bad status line \"HTTP/2 200 ok\"",
            ),
            (
                b"HTTP/1.1 20 ok\r\n\r\n",
                "bad status line \"HTTP/1.1 20 ok\"",
            ),
            (
                b"HTTP/1.1 2000 ok\r\n\r\n",
                "bad status line \"HTTP/1.1 2000 ok\"",
            ),
            (
                b"HTTP/1.1 099 x\r\n\r\n",
                "bad status line \"HTTP/1.1 099 x\"",
            ),
            (
                b"HTTP/1.1 200 ok\r\nno colon\r\n\r\n",
                "without ':' \"no colon\"",
            ),
            (
                b"HTTP/1.1 200 ok\r\n: empty name\r\n\r\n",
                "bad header field name \"\"",
            ),
            (b"HTTP/1.1 200 o\x01k\r\n\r\n", "\"HTTP/1.1 200 o\\x01k\""),
        ] {
            let e = hs().handle_bytes(bad).unwrap_err();
            assert!(matches!(e, ProxyError::Malformed { .. }), "{bad:?}: {e}");
            assert!(e.to_string().ends_with(why), "{bad:?}: {e}");
        }
    }

    // issue 14: a proxy that never ends its header is not read past the bound.
    #[test]
    fn an_endless_header_stops_at_the_bound() {
        let mut h = hs();
        assert_eq!(h.handle_bytes(b"HTTP/1.1 200 ok\r\n").unwrap(), None);
        let field = b"X-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut err = None;
        for _ in 0..10_000 {
            match h.handle_bytes(field) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("no end of header was sent"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("the bound stops it");
        assert!(
            matches!(
                e,
                ProxyError::TooLarge {
                    limit: MAX_ANSWER_HEADER,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(h.received(), MAX_ANSWER_HEADER);
        assert!(
            h.handle_bytes(b"\r\n").is_err(),
            "finished handshakes take nothing more"
        );
    }

    #[test]
    fn a_close_before_the_end_says_how_much_came() {
        let mut h = hs();
        h.handle_bytes(b"HTTP/1.1 200").unwrap();
        assert_eq!(
            h.handle_eof().to_string(),
            "HTTP proxy 127.0.0.1:3128 closed the connection before answering CONNECT 198.18.1.2:10080 (12 bytes of an answer received)"
        );
    }

    proptest! {
        // Whatever the chunking, the verdict and the tunnel's bytes are the same.
        #[test]
        fn chunking_does_not_change_the_verdict(
            status in 100u16..600,
            fields in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,40}", 0..8),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let mut answer = format!("HTTP/1.1 {status} why\r\n").into_bytes();
            for f in &fields {
                answer.extend_from_slice(f.as_bytes());
                answer.extend_from_slice(b"\r\n");
            }
            answer.extend_from_slice(b"\r\n");
            answer.extend_from_slice(&rest);
            let whole = hs().handle_bytes(&answer);
            let mut h = hs();
            let mut chunked = Ok(None);
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= answer.len() { break; }
                let end = (at + c).min(answer.len());
                chunked = h.handle_bytes(&answer[at..end]);
                match &chunked {
                    Ok(Some(e)) => {
                        // The rest of this chunk is in e.rest; later ones are the tunnel's.
                        let mut all = e.rest.clone();
                        all.extend_from_slice(&answer[end..]);
                        chunked = Ok(Some(Established { status: e.status, rest: all }));
                        break;
                    }
                    Err(_) => break,
                    Ok(None) => {}
                }
                at = end;
            }
            prop_assert_eq!(&whole, &chunked);
            match whole {
                Ok(Some(e)) => {
                    prop_assert!((200..300).contains(&status));
                    prop_assert_eq!(e.rest, rest);
                }
                Err(e) => prop_assert_eq!(e.status(), Some(status)),
                Ok(None) => prop_assert!(false, "a complete header gives a verdict"),
            }
        }

        #[test]
        fn requests_for_any_host_are_one_request_line_and_host_field(
            host in "[a-z0-9.-]{1,30}", port in 1u16..
        ) {
            let r = connect_request(&host, port, None).unwrap();
            let text = String::from_utf8(r).unwrap();
            prop_assert_eq!(text.matches("\r\n").count(), 3);
            let first_line = format!("CONNECT {host}:{port} HTTP/1.1\r\n");
            prop_assert!(text.starts_with(&first_line));
        }
    }
}
