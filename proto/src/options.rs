//! The `OPTIONS` line of request and reply bodies (spec §6.1).
//!
//! Requests carry `OPTIONS features=<hex>;maxdumps=<n>;hostname=<h>;config=<c>;timestamp=<t>;`
//! (keys present only if the client advertised the matching feature). The client parses it
//! like `parse_g_options`: `;`-separated, any order, and every problem becomes an
//! `ERROR [...]` line on the service's stdout, i.e. in the REP. [`Options::parse`] returns
//! those problems as [`OptionsDiagnostic`]s whose `Display` is the exact 3.5.1 text, so our
//! client can answer exactly like the real one.
//!
//! Replies carry `OPTIONS features=<hex>;` (sendsize, sendbackup, noop), optionally with
//! `hostname=`/`maxdumps=`, or a lone `OPTIONS ;`.
//!
//! What this module must not do: decide which keys to send beyond the feature gating the
//! real server applies, or drop a problem the real client would report.

use std::fmt;

use crate::features::{Feature, Features, FeaturesError};
use crate::quote::{ByteString, Strtok, parse_c_i32};

/// The client caps `maxdumps` at this value (`MAXMAXDUMPS`).
pub const MAX_MAXDUMPS: u32 = 16;

/// The parsed content of an `OPTIONS` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `features=`; `None` if absent or unparsable (see [`Options::effective_features`]).
    pub features: Option<Features>,
    /// `maxdumps=`, already capped at [`MAX_MAXDUMPS`]; `None` if absent or invalid.
    pub maxdumps: Option<u32>,
    /// `hostname=`: the host name as written in the server's disklist.
    pub hostname: Option<ByteString>,
    /// `config=`: the server's configuration name (never contains `/`).
    pub config: Option<ByteString>,
    /// `auth=` (parsed by clients, not sent by 3.5 servers).
    pub auth: Option<ByteString>,
    /// `timestamp=`: the run timestamp `YYYYMMDDhhmmss`.
    pub timestamp: Option<ByteString>,
    /// `data-shm-control-name=` (auth `local` only).
    pub data_shm_control_name: Option<ByteString>,
    /// Unknown `key=value` tokens, in order, as received.
    pub unknown: Vec<ByteString>,
}

/// A problem the real client reports while parsing an `OPTIONS` line. `Display` gives the
/// text inside `ERROR [...]`; [`OptionsDiagnostic::error_line`] the whole REP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsDiagnostic {
    /// A key given twice (the last one wins); the `&str` is the key.
    Multiple(&'static str),
    /// `features=` that `am_string_to_feature` refuses; the default set is used instead.
    BadFeatures(ByteString),
    /// `maxdumps=` that is not a positive integer.
    BadMaxdumps(ByteString),
    /// `config=` containing `/`; the config is ignored.
    InvalidConfig,
    /// An unknown token, e.g. `frobnicate=1`.
    Unknown(ByteString),
}

impl OptionsDiagnostic {
    /// The line the real client prints into its reply: `ERROR [<text>]\n`.
    pub fn error_line(&self) -> Vec<u8> {
        // The values go out as the bytes that came in (Display would make them lossy UTF-8).
        let text = match self {
            OptionsDiagnostic::BadFeatures(v) => [&b"bad features value \""[..], v, b"\""].concat(),
            OptionsDiagnostic::BadMaxdumps(v) => [&b"bad maxdumps value \""[..], v, b"\""].concat(),
            OptionsDiagnostic::Unknown(v) => [&b"unknown option \""[..], v, b"\""].concat(),
            other => other.to_string().into_bytes(),
        };
        error_line(&text)
    }
}

/// A key given again: the client says so and takes the last value.
fn repeated<T>(slot: &Option<T>, key: &'static str, diagnostics: &mut Vec<OptionsDiagnostic>) {
    if slot.is_some() {
        diagnostics.push(OptionsDiagnostic::Multiple(key));
    }
}

/// A plain `key=value` option.
fn set_once(
    slot: &mut Option<ByteString>,
    key: &'static str,
    value: &[u8],
    diagnostics: &mut Vec<OptionsDiagnostic>,
) {
    repeated(slot, key, diagnostics);
    *slot = Some(value.into());
}

/// `ERROR [<text>]\n`: how the client reports a problem with a request in its reply.
pub(crate) fn error_line(text: &[u8]) -> Vec<u8> {
    [&b"ERROR ["[..], text, b"]\n"].concat()
}

impl fmt::Display for OptionsDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // [sic] 3.5.1 doubles the word for this key.
            OptionsDiagnostic::Multiple("data-shm-control-name") => {
                f.write_str("multiple data-shm-control-name option option")
            }
            OptionsDiagnostic::Multiple(key) => write!(f, "multiple {key} option"),
            OptionsDiagnostic::BadFeatures(v) => write!(f, "bad features value \"{v}\""),
            OptionsDiagnostic::BadMaxdumps(v) => write!(f, "bad maxdumps value \"{v}\""),
            OptionsDiagnostic::InvalidConfig => f.write_str("invalid character in config option"),
            OptionsDiagnostic::Unknown(v) => write!(f, "unknown option \"{v}\""),
        }
    }
}

/// [`Options::parse`]'s result: the values plus what the real client would complain about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    /// The values.
    pub options: Options,
    /// Problems, in the order the real client prints them.
    pub diagnostics: Vec<OptionsDiagnostic>,
}

impl Options {
    /// Parses the text after `OPTIONS ` (without the newline) like `parse_g_options`:
    /// tokens separated by one or more `;`, matched by prefix in the order features,
    /// hostname, auth, maxdumps, config, timestamp, data-shm-control-name. A repeated key
    /// replaces the earlier value; a bad `features=` leaves [`Options::features`] at `None`.
    pub fn parse(value: &[u8]) -> ParsedOptions {
        let mut o = Options::default();
        let mut diagnostics = Vec::new();
        let mut tokens = Strtok::new(value);
        while let Some(tok) = tokens.next_token(b";") {
            if let Some(v) = tok.strip_prefix(b"features=") {
                repeated(&o.features, "features", &mut diagnostics);
                o.features = match Features::parse(v) {
                    Ok(f) => Some(f),
                    Err(_) => {
                        diagnostics.push(OptionsDiagnostic::BadFeatures(v.into()));
                        None
                    }
                };
            } else if let Some(v) = tok.strip_prefix(b"hostname=") {
                set_once(&mut o.hostname, "hostname", v, &mut diagnostics);
            } else if let Some(v) = tok.strip_prefix(b"auth=") {
                set_once(&mut o.auth, "auth", v, &mut diagnostics);
            } else if let Some(v) = tok.strip_prefix(b"maxdumps=") {
                repeated(&o.maxdumps, "maxdumps", &mut diagnostics);
                match parse_c_i32(v) {
                    Some(n) if n > 0 => {
                        o.maxdumps =
                            Some(u32::try_from(n).unwrap_or(MAX_MAXDUMPS).min(MAX_MAXDUMPS));
                    }
                    _ => diagnostics.push(OptionsDiagnostic::BadMaxdumps(v.into())),
                }
            } else if let Some(v) = tok.strip_prefix(b"config=") {
                repeated(&o.config, "config", &mut diagnostics);
                if v.contains(&b'/') {
                    o.config = None;
                    diagnostics.push(OptionsDiagnostic::InvalidConfig);
                } else {
                    o.config = Some(v.into());
                }
            } else if let Some(v) = tok.strip_prefix(b"timestamp=") {
                set_once(&mut o.timestamp, "timestamp", v, &mut diagnostics);
            } else if let Some(v) = tok.strip_prefix(b"data-shm-control-name=") {
                let name = &mut o.data_shm_control_name;
                set_once(name, "data-shm-control-name", v, &mut diagnostics);
            } else {
                diagnostics.push(OptionsDiagnostic::Unknown(tok.into()));
                o.unknown.push(tok.into());
            }
        }
        ParsedOptions {
            options: o,
            diagnostics,
        }
    }

    /// [`Options::parse`] of a whole line: `OPTIONS <value>` with or without its newline.
    /// `None` if the line does not start with `OPTIONS `.
    pub fn parse_line(line: &[u8]) -> Option<ParsedOptions> {
        let value = line.strip_prefix(b"OPTIONS ")?;
        Some(Options::parse(value.strip_suffix(b"\n").unwrap_or(value)))
    }

    /// The peer's features as the real client uses them: the default 2.4.2p2 set when
    /// `features=` was absent or bad.
    pub fn effective_features(&self) -> Features {
        self.features
            .clone()
            .unwrap_or_else(Features::default_2_4_2p2)
    }

    /// `maxdumps` as the real client uses it: 1 when absent or bad.
    pub fn effective_maxdumps(&self) -> u32 {
        self.maxdumps.unwrap_or(1)
    }

    /// The request options a 3.5.1 server sends: each key only if the **client** advertised
    /// its feature (36 features, 34 maxdumps, 35 hostname, 78 config, 148 timestamp).
    pub fn for_request(
        ours: &Features,
        client: &Features,
        maxdumps: u32,
        hostname: &[u8],
        config: &[u8],
        timestamp: Option<&[u8]>,
    ) -> Options {
        Options {
            features: client
                .has(Feature::REQ_OPTIONS_FEATURES)
                .then(|| ours.clone()),
            maxdumps: client
                .has(Feature::REQ_OPTIONS_MAXDUMPS)
                .then_some(maxdumps),
            hostname: client
                .has(Feature::REQ_OPTIONS_HOSTNAME)
                .then(|| hostname.into()),
            config: client
                .has(Feature::REQ_OPTIONS_CONFIG)
                .then(|| config.into()),
            timestamp: timestamp
                .filter(|_| client.has(Feature::REQ_OPTIONS_TIMESTAMP))
                .map(ByteString::from),
            ..Options::default()
        }
    }

    /// The `OPTIONS` line as servers write it, newline included: the present keys in the
    /// order features, maxdumps, hostname, config, timestamp, data-shm-control-name, auth,
    /// each followed by `;`. Unknown tokens are not written.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"OPTIONS ".to_vec();
        if let Some(f) = &self.features {
            push_kv(&mut out, b"features=", f.to_hex().as_bytes());
        }
        if let Some(m) = self.maxdumps {
            push_kv(&mut out, b"maxdumps=", m.to_string().as_bytes());
        }
        let texts: [(&[u8], &Option<ByteString>); 5] = [
            (b"hostname=", &self.hostname),
            (b"config=", &self.config),
            (b"timestamp=", &self.timestamp),
            (b"data-shm-control-name=", &self.data_shm_control_name),
            (b"auth=", &self.auth),
        ];
        for (key, value) in texts {
            if let Some(v) = value {
                push_kv(&mut out, key, v);
            }
        }
        out.push(b'\n');
        out
    }
}

fn push_kv(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out.push(b';');
}

/// The noop service's whole reply: `OPTIONS features=<ours>;\n`.
pub fn noop_reply(ours: &Features) -> Vec<u8> {
    format!("OPTIONS features={};\n", ours.to_hex()).into_bytes()
}

/// The sendsize reply's `OPTIONS` line: `features=` if the **server** has feature 39,
/// `maxdumps=` with 37, `hostname=` with 38 (3.5 servers set only 39), then `\n`.
pub fn sendsize_reply_options(
    ours: &Features,
    server: &Features,
    maxdumps: u32,
    hostname: &[u8],
) -> Vec<u8> {
    let mut out = b"OPTIONS ".to_vec();
    if server.has(Feature::REP_OPTIONS_FEATURES) {
        push_kv(&mut out, b"features=", ours.to_hex().as_bytes());
    }
    if server.has(Feature::REP_OPTIONS_MAXDUMPS) {
        push_kv(&mut out, b"maxdumps=", maxdumps.to_string().as_bytes());
    }
    if server.has(Feature::REP_OPTIONS_HOSTNAME) {
        push_kv(&mut out, b"hostname=", hostname);
    }
    out.push(b'\n');
    out
}

/// The sendbackup reply's `OPTIONS` line: `features=` with server feature 39, `hostname=`
/// with 38, a lone `;` if neither, then `\n`.
pub fn sendbackup_reply_options(ours: &Features, server: &Features, hostname: &[u8]) -> Vec<u8> {
    let mut out = b"OPTIONS ".to_vec();
    let features = server.has(Feature::REP_OPTIONS_FEATURES);
    let host = server.has(Feature::REP_OPTIONS_HOSTNAME);
    if features {
        push_kv(&mut out, b"features=", ours.to_hex().as_bytes());
    }
    if host {
        push_kv(&mut out, b"hostname=", hostname);
    }
    if !features && !host {
        out.push(b';');
    }
    out.push(b'\n');
    out
}

/// How amcheck and planner read a reply's `OPTIONS ` line: the first `features=` must
/// follow a blank or `;`, its value runs to the next `;`. `None` if there is no such key;
/// otherwise the parse result (an error is what the server reports as a bad features value).
pub fn reply_features(line: &[u8]) -> Option<Result<Features, FeaturesError>> {
    let at = memchr::memmem::find(line, b"features=")?;
    let before = *line.get(at.checked_sub(1)?)?;
    if !(crate::quote::is_space(before) || before == b';') {
        return None;
    }
    let value = line.get(at + b"features=".len()..)?;
    let value = match memchr::memchr2(b';', b'\n', value) {
        Some(end) => &value[..end],
        None => value,
    };
    Some(Features::parse(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    /// The parse of `value`, and the `ERROR [...]` line its first problem sends.
    fn parse_with_error(value: &[u8]) -> (ParsedOptions, Vec<u8>) {
        let p = Options::parse(value);
        let line = p.diagnostics.first().expect("a problem").error_line();
        (p, line)
    }

    #[test]
    fn request_line_matches_the_trace_byte_for_byte() {
        let f = Features::amanda_3_5_1();
        let o = Options::for_request(
            &f,
            &f,
            1,
            b"localhost",
            b"h-bsdtcp-10080-30682",
            Some(b"20261122044426"),
        );
        let want = format!(
            "OPTIONS features={F};maxdumps=1;hostname=localhost;config=h-bsdtcp-10080-30682;timestamp=20261122044426;\n"
        );
        assert_eq!(String::from_utf8(o.encode()).unwrap(), want);
        // amcheck omits the timestamp
        let o = Options::for_request(&f, &f, 1, b"localhost", b"c", None);
        assert_eq!(
            o.encode(),
            format!("OPTIONS features={F};maxdumps=1;hostname=localhost;config=c;\n").into_bytes()
        );
        // an old client gets only what it advertised
        let o = Options::for_request(&f, &Features::default_2_4_2p2(), 1, b"h", b"c", Some(b"t"));
        assert_eq!(
            o.encode(),
            format!("OPTIONS features={F};maxdumps=1;hostname=h;\n").into_bytes()
        );
    }

    #[test]
    fn parse_accepts_any_order_and_empty_tokens() {
        let p = Options::parse(format!("config=DailySet1;;hostname=client;features={F};maxdumps=4;timestamp=20240101020304;").as_bytes());
        assert!(p.diagnostics.is_empty());
        let o = p.options;
        assert_eq!(o.features, Some(Features::amanda_3_5_1()));
        assert_eq!(o.maxdumps, Some(4));
        assert_eq!(o.hostname.unwrap(), "client");
        assert_eq!(o.config.unwrap(), "DailySet1");
        assert_eq!(o.timestamp.unwrap(), "20240101020304");
    }

    #[test]
    fn parse_line_takes_the_whole_line() {
        let p = Options::parse_line(b"OPTIONS features=01;hostname=h;\n").unwrap();
        assert_eq!(p.options.hostname.unwrap(), "h");
        assert!(Options::parse_line(b"SERVICE noop\n").is_none());
    }

    #[test]
    fn unknown_key_produces_the_real_clients_error_line() {
        let (p, error) = parse_with_error(b"features=01;frobnicate=1;");
        assert_eq!(p.options.unknown, vec![ByteString::from("frobnicate=1")]);
        assert_eq!(error, b"ERROR [unknown option \"frobnicate=1\"]\n");
    }

    #[test]
    fn maxdumps_is_capped_and_validated() {
        assert_eq!(Options::parse(b"maxdumps=99;").options.maxdumps, Some(16));
        assert_eq!(Options::parse(b"maxdumps= 3x;").options.maxdumps, Some(3));
        let p = Options::parse(b"maxdumps=0;");
        assert_eq!(p.options.effective_maxdumps(), 1);
        assert_eq!(p.diagnostics[0].to_string(), "bad maxdumps value \"0\"");
        assert_eq!(
            Options::parse(b"maxdumps=x;").diagnostics[0],
            OptionsDiagnostic::BadMaxdumps("x".into())
        );
    }

    #[test]
    fn config_with_slash_is_refused() {
        let (p, error) = parse_with_error(b"config=../etc;");
        assert_eq!(p.options.config, None);
        assert_eq!(error, b"ERROR [invalid character in config option]\n");
    }

    #[test]
    fn bad_or_missing_features_mean_the_default_set() {
        let (p, error) = parse_with_error(b"features=zz;");
        assert_eq!(p.options.features, None);
        assert_eq!(error, b"ERROR [bad features value \"zz\"]\n");
        assert_eq!(p.options.effective_features(), Features::default_2_4_2p2());
        assert_eq!(
            Options::parse(b"").options.effective_features(),
            Features::default_2_4_2p2()
        );
    }

    #[test]
    fn repeated_keys_are_reported() {
        let p = Options::parse(
            b"hostname=a;hostname=b;data-shm-control-name=x;data-shm-control-name=y;",
        );
        assert_eq!(p.options.hostname.unwrap(), "b");
        assert_eq!(p.diagnostics[0].to_string(), "multiple hostname option");
        assert_eq!(
            p.diagnostics[1].to_string(),
            "multiple data-shm-control-name option option"
        );
    }

    #[test]
    fn reply_forms() {
        let f = Features::amanda_3_5_1();
        assert_eq!(
            noop_reply(&f),
            format!("OPTIONS features={F};\n").into_bytes()
        );
        assert_eq!(
            sendsize_reply_options(&f, &f, 1, b"h"),
            format!("OPTIONS features={F};\n").into_bytes()
        );
        assert_eq!(
            sendbackup_reply_options(&f, &f, b"h"),
            format!("OPTIONS features={F};\n").into_bytes()
        );
        assert_eq!(
            sendbackup_reply_options(&f, &Features::empty(), b"h"),
            b"OPTIONS ;\n"
        );
        let server = Features::empty().with(Feature::REP_OPTIONS_HOSTNAME);
        assert_eq!(
            sendbackup_reply_options(&f, &server, b"h"),
            b"OPTIONS hostname=h;\n"
        );
    }

    #[test]
    fn server_reads_reply_features_like_amcheck() {
        let line = format!("OPTIONS features={F};hostname=localhost;");
        assert_eq!(
            reply_features(line.as_bytes()),
            Some(Ok(Features::amanda_3_5_1()))
        );
        assert_eq!(reply_features(b"OPTIONS ;"), None);
        assert_eq!(reply_features(b"OPTIONS xfeatures=01;"), None);
        assert!(matches!(
            reply_features(b"OPTIONS features=zz;"),
            Some(Err(_))
        ));
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            maxdumps in proptest::option::of(1u32..=16),
            host in proptest::option::of("[a-z0-9.-]{0,20}"),
            config in proptest::option::of("[A-Za-z0-9_-]{1,20}"),
            ts in proptest::option::of("[0-9]{14}"),
            with_features in any::<bool>(),
        ) {
            let o = Options {
                features: with_features.then(Features::amanda_3_5_1),
                maxdumps,
                hostname: host.map(ByteString::from),
                config: config.map(ByteString::from),
                timestamp: ts.map(ByteString::from),
                ..Options::default()
            };
            let line = o.encode();
            let value = line.strip_prefix(b"OPTIONS ").unwrap().strip_suffix(b"\n").unwrap();
            let p = Options::parse(value);
            prop_assert!(p.diagnostics.is_empty());
            prop_assert_eq!(p.options, o);
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..128)) {
            let p = Options::parse(&s);
            for d in p.diagnostics { let _ = d.error_line(); }
            let _ = reply_features(&s);
        }
    }
}
