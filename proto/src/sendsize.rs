//! sendsize reply (REP) and partial reply (PREP) bodies (spec §6.6).
//!
//! The client writes, after its `OPTIONS` line, one line per (DLE, level):
//! `<qdisk> <level> SIZE <kb>` (`-1`: "use a server estimate", `-2`: "cannot estimate this
//! level"), or `<qdisk> <level> ERROR <quoted message>`; host-wide problems are
//! `ERROR <text>` lines. amandad sends everything written so far as a PREP (cumulative, not
//! incremental) and everything at the end as the REP.
//!
//! [`SendsizeReply::parse`] reads a body like planner's `handle_result`; what the planner
//! then does with unknown disks or unrequested levels is described on
//! [`SendsizeReply::first_unexpected`].
//!
//! What this module must not do: decide estimates, or look up disks.

use crate::features::{Features, FeaturesError};
use crate::options::reply_features;
use crate::quote::{
    ByteString, is_space, parse_c_int, quote_string, quote_string_always, quoted_field_len,
    split_quoted_line, unquote_string, until_nul,
};

/// The result for one (DLE, level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EstimateResult {
    /// `SIZE <n>`: size in KiB; `-1` asks for a server estimate, `-2` drops the level.
    Size(i64),
    /// `ERROR <quoted message>`.
    Error(ByteString),
    /// `WARNING <quoted message>` (clients with `fe_sendsize_rep_warning`).
    Warning(ByteString),
}

impl EstimateResult {
    /// `SIZE -1`: the client asks the server to estimate.
    pub const USE_SERVER_ESTIMATE: EstimateResult = EstimateResult::Size(-1);
    /// `SIZE -2`: this level cannot be estimated; the planner drops it.
    pub const CANNOT_ESTIMATE: EstimateResult = EstimateResult::Size(-2);
}

/// `<qdisk> <level> SIZE|ERROR|WARNING ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateLine {
    /// The disk name (unquoted).
    pub disk: ByteString,
    /// The level (real clients report errors as level 0).
    pub level: i32,
    /// The result.
    pub result: EstimateResult,
}

impl EstimateLine {
    /// The line as the client writes it, with its newline.
    ///
    /// A disk literally named `OPTIONS`, `ERROR` or `WARNING` is written in double quotes:
    /// unquoted, the planner would read the line as an options or host-error line (the real
    /// client writes it unquoted and is misread).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = match self.disk.as_bytes() {
            b"OPTIONS" | b"ERROR" | b"WARNING" => quote_string_always(&self.disk),
            d => quote_string(d),
        };
        out.extend_from_slice(format!(" {} ", self.level).as_bytes());
        match &self.result {
            EstimateResult::Size(kb) => out.extend_from_slice(format!("SIZE {kb}").as_bytes()),
            EstimateResult::Error(m) => {
                out.extend_from_slice(b"ERROR ");
                out.extend_from_slice(&quote_string(m));
            }
            EstimateResult::Warning(m) => {
                out.extend_from_slice(b"WARNING ");
                out.extend_from_slice(&quote_string(m));
            }
        }
        out.push(b'\n');
        out
    }
}

/// One line of a sendsize reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    /// `OPTIONS ...`: the raw line and its `features=` (as planner reads it).
    Options {
        /// The whole line.
        line: ByteString,
        /// `None` if there is no `features=`.
        features: Option<Result<Features, FeaturesError>>,
    },
    /// A per-DLE result.
    Estimate(EstimateLine),
    /// `ERROR <text>`: a host-wide error; `text` starts after `ERROR `.
    HostError(ByteString),
    /// `WARNING <text>`: reported like an error by the planner.
    HostWarning(ByteString),
}

impl ReplyLine {
    /// The line as the client writes it (for `Options`, the stored line), with its newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = match self {
            ReplyLine::Options { line, .. } => line.to_vec(),
            ReplyLine::Estimate(e) => return e.encode(),
            ReplyLine::HostError(t) => [b"ERROR ".as_slice(), t].concat(),
            ReplyLine::HostWarning(t) => [b"WARNING ".as_slice(), t].concat(),
        };
        out.push(b'\n');
        out
    }
}

/// A line planner's `handle_result` cannot read: it fails the host with
/// [`badly_formatted_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad sendsize reply line {line_number}: {reason}: {line}")]
pub struct BadMessage {
    /// 1-based line number in the body.
    pub line_number: usize,
    /// The line.
    pub line: ByteString,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// planner's text for a reply it could not parse: `badly formatted response from <host>`.
pub fn badly_formatted_response(host: &str) -> String {
    format!("badly formatted response from {host}")
}

/// planner's text for a host-wide `ERROR`/`WARNING` line: `<host>: <text>` where `<text>`
/// keeps the space that followed the keyword (so there are two spaces after the colon), and
/// `<host>NAK : ...` when the packet was a NAK.
pub fn host_error_text(host: &str, text: &[u8], nak: bool) -> String {
    let nak = if nak { "NAK " } else { "" };
    format!("{host}{nak}:  {}", String::from_utf8_lossy(text))
}

/// A parsed sendsize REP or PREP body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendsizeReply {
    /// The lines, in order.
    pub lines: Vec<ReplyLine>,
}

/// Splits a body into lines like planner's `skip_quoted_line` ([`split_quoted_line`]).
fn quoted_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = until_nul(body);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = split_quoted_line(rest);
        rest = next;
        Some(line)
    })
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|&b| b == b'\n' || !is_space(b))
        .unwrap_or(s.len());
    &s[n..]
}

impl SendsizeReply {
    /// Parses a body like planner's `handle_result`. The first unreadable line is an error
    /// (the planner stops there and fails the whole host).
    pub fn parse(body: &[u8]) -> Result<SendsizeReply, BadMessage> {
        let mut lines = Vec::new();
        for (i, line) in quoted_lines(body).enumerate() {
            let bad = |reason| BadMessage {
                line_number: i + 1,
                line: line.into(),
                reason,
            };
            if line.starts_with(b"OPTIONS ") {
                lines.push(ReplyLine::Options {
                    line: line.into(),
                    features: reply_features(line),
                });
                continue;
            }
            if let Some(t) = line.strip_prefix(b"ERROR ") {
                lines.push(ReplyLine::HostError(t.into()));
                continue;
            }
            if let Some(t) = line.strip_prefix(b"WARNING ") {
                lines.push(ReplyLine::HostWarning(t.into()));
                continue;
            }
            if line.is_empty() {
                return Err(bad("empty line"));
            }
            let disk_len = quoted_field_len(line);
            let disk = unquote_string(&line[..disk_len]);
            let rest = skip_ws(line.get(disk_len + 1..).unwrap_or_default());
            let level = parse_c_int(rest).ok_or_else(|| bad("no level"))?;
            let level = i32::try_from(level).unwrap_or(if level < 0 { i32::MIN } else { i32::MAX });
            let digits = rest
                .iter()
                .skip(usize::from(matches!(rest.first(), Some(b'+' | b'-'))));
            let int_len = usize::from(matches!(rest.first(), Some(b'+' | b'-')))
                + digits.take_while(|b| b.is_ascii_digit()).count();
            let rest = skip_ws(&rest[int_len..]);
            let result = if let Some(n) = rest.strip_prefix(b"SIZE ") {
                EstimateResult::Size(parse_c_int(n).ok_or_else(|| bad("bad SIZE"))?)
            } else if rest.starts_with(b"ERROR ") || rest.starts_with(b"WARNING ") {
                let warning = rest.starts_with(b"WARNING ");
                let kw = if warning { 7 } else { 5 };
                let msg = skip_ws(&rest[kw..]);
                let msg = unquote_string(&msg[..quoted_field_len(msg)]).into();
                if warning {
                    EstimateResult::Warning(msg)
                } else {
                    EstimateResult::Error(msg)
                }
            } else {
                return Err(bad("expected SIZE, ERROR or WARNING"));
            };
            lines.push(ReplyLine::Estimate(EstimateLine {
                disk: disk.into(),
                level,
                result,
            }));
        }
        Ok(SendsizeReply { lines })
    }

    /// The client's features from its `OPTIONS` line (the last one wins, as in planner).
    pub fn features(&self) -> Option<Result<Features, FeaturesError>> {
        self.lines.iter().rev().find_map(|l| match l {
            ReplyLine::Options { features, .. } => features.clone(),
            _ => None,
        })
    }

    /// The per-DLE lines.
    pub fn estimates(&self) -> impl Iterator<Item = &EstimateLine> {
        self.lines.iter().filter_map(|l| match l {
            ReplyLine::Estimate(e) => Some(e),
            _ => None,
        })
    }

    /// The index of the first estimate line the planner would call a "bad message": a disk
    /// it did not ask about (`known_disk` false), or a level > 0 it did not request
    /// (`requested` false; level 0 is always accepted because clients report errors there).
    pub fn first_unexpected(
        &self,
        known_disk: impl Fn(&[u8]) -> bool,
        requested: impl Fn(&[u8], i32) -> bool,
    ) -> Option<usize> {
        self.lines.iter().position(|l| match l {
            ReplyLine::Estimate(e) => {
                !known_disk(&e.disk) || (e.level > 0 && !requested(&e.disk, e.level))
            }
            _ => false,
        })
    }

    /// The body as the client writes it.
    pub fn encode(&self) -> Vec<u8> {
        self.lines.iter().flat_map(ReplyLine::encode).collect()
    }
}

/// Accumulates a sendsize reply on the client: every PREP and the REP carry everything
/// written so far (spec §3.2, §8.2 item 21).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CumulativeReply {
    body: Vec<u8>,
}

impl CumulativeReply {
    /// Starts with the `OPTIONS` line (see `options::sendsize_reply_options`).
    pub fn new(options_line: &[u8]) -> CumulativeReply {
        CumulativeReply {
            body: options_line.to_vec(),
        }
    }

    /// Appends a result line.
    pub fn push(&mut self, line: &EstimateLine) {
        self.body.extend_from_slice(&line.encode());
    }

    /// Appends a host-wide `ERROR <text>` line.
    pub fn push_error(&mut self, text: &[u8]) {
        self.body
            .extend_from_slice(&ReplyLine::HostError(text.into()).encode());
    }

    /// The body of the next PREP or of the REP: everything so far.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    #[test]
    fn trace_rep_parses_and_reencodes() {
        let body = format!(
            "OPTIONS features={F};\n/tmp/amanda-harness/data/plain 0 SIZE 560\n\"/tmp/amanda-harness/data/dle with space é\" 0 SIZE 10\n"
        );
        let r = SendsizeReply::parse(body.as_bytes()).unwrap();
        assert_eq!(r.features(), Some(Ok(Features::amanda_3_5_1())));
        let e: Vec<_> = r.estimates().collect();
        assert_eq!(
            e[0],
            &EstimateLine {
                disk: "/tmp/amanda-harness/data/plain".into(),
                level: 0,
                result: EstimateResult::Size(560)
            }
        );
        assert_eq!(e[1].disk, "/tmp/amanda-harness/data/dle with space é");
        assert_eq!(r.encode(), body.as_bytes());
    }

    #[test]
    fn cumulative_prep_bodies() {
        let mut rep = CumulativeReply::new(format!("OPTIONS features={F};\n").as_bytes());
        rep.push(&EstimateLine {
            disk: "/home".into(),
            level: 0,
            result: EstimateResult::Size(1048576),
        });
        let prep = rep.body().to_vec();
        rep.push(&EstimateLine {
            disk: "/home".into(),
            level: 1,
            result: EstimateResult::Size(2048),
        });
        assert!(rep.body().starts_with(&prep));
        assert_eq!(
            rep.body(),
            format!("OPTIONS features={F};\n/home 0 SIZE 1048576\n/home 1 SIZE 2048\n").as_bytes()
        );
    }

    #[test]
    fn errors_warnings_and_special_sizes() {
        let body = b"OPTIONS ;\n\"/a b\" 0 ERROR \"could not open /x: Permission denied\"\n/c 1 SIZE -2\n/c 0 SIZE -1\n/d 0 WARNING w\nERROR [Missing OPTIONS line]\n";
        let r = SendsizeReply::parse(body).unwrap();
        assert_eq!(r.features(), None);
        assert_eq!(
            r.lines[1],
            ReplyLine::Estimate(EstimateLine {
                disk: "/a b".into(),
                level: 0,
                result: EstimateResult::Error("could not open /x: Permission denied".into())
            })
        );
        assert_eq!(
            r.lines[2],
            ReplyLine::Estimate(EstimateLine {
                disk: "/c".into(),
                level: 1,
                result: EstimateResult::CANNOT_ESTIMATE
            })
        );
        assert_eq!(
            r.lines[3],
            ReplyLine::Estimate(EstimateLine {
                disk: "/c".into(),
                level: 0,
                result: EstimateResult::USE_SERVER_ESTIMATE
            })
        );
        assert_eq!(
            r.lines[5],
            ReplyLine::HostError("[Missing OPTIONS line]".into())
        );
        assert_eq!(r.encode(), body);
        assert_eq!(host_error_text("h", b"[x]", false), "h:  [x]");
    }

    #[test]
    fn bad_messages() {
        assert_eq!(
            SendsizeReply::parse(b"/x zero SIZE 1\n")
                .unwrap_err()
                .reason,
            "no level"
        );
        assert_eq!(
            SendsizeReply::parse(b"/x 0 SIZE big\n").unwrap_err().reason,
            "bad SIZE"
        );
        let e = SendsizeReply::parse(b"OPTIONS ;\n/x 0 SIZES 1\n").unwrap_err();
        assert_eq!(
            (e.line_number, e.reason),
            (2, "expected SIZE, ERROR or WARNING")
        );
        assert_eq!(
            badly_formatted_response("h"),
            "badly formatted response from h"
        );
        let r = SendsizeReply::parse(b"/x 0 SIZE 1\n/y 2 SIZE 1\n/x 3 SIZE 1\n").unwrap();
        assert_eq!(r.first_unexpected(|d| d == b"/x", |_, l| l == 3), Some(1));
        assert_eq!(r.first_unexpected(|_| true, |_, l| l == 3), Some(1));
        assert_eq!(r.first_unexpected(|_| true, |_, _| true), None);
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(disk in proptest::collection::vec(1u8..=255, 1..32), level in 0i32..400, kb in -2i64..1 << 40, msg in proptest::collection::vec(1u8..=255, 0..32), which in 0u8..3) {
            let result = match which { 0 => EstimateResult::Size(kb), 1 => EstimateResult::Error(msg.into()), _ => EstimateResult::Warning(msg.into()) };
            let line = EstimateLine { disk: disk.into(), level, result };
            let r = SendsizeReply::parse(&line.encode()).unwrap();
            prop_assert_eq!(r.lines, vec![ReplyLine::Estimate(line)]);
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = SendsizeReply::parse(&s) { let _ = r.encode(); let _ = r.features(); }
        }
    }
}
