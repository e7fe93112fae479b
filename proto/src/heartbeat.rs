//! The heartbeat of a connection the dumper opened to a client through an HTTP CONNECT
//! proxy (issue 14): how the dumper asks for it and how our amandad grants it.
//!
//! TCP keepalive stops at the proxy, and proxies close tunnels that stay quiet (squid's
//! `read_timeout`). Both ends of such a connection then send the dial-in sessions' heartbeat
//! frame ([`crate::dialin::session_heartbeat`]) while quiet and drop the other's. The real
//! Amanda 3.5.1 amandad must never get that frame, so it is negotiated on the `noop` that
//! opens the connection:
//!
//! - the dumper adds `heartbeat=<secs>;` to the noop REQ's OPTIONS line. The real noop
//!   reads and ignores its input (spec §6.4), so it answers as always; the other services
//!   report unknown options as errors (spec §6.1), so only the noop carries it;
//! - our amandad answers `OPTIONS features=<hex>;heartbeat=<secs>;`, and from then on sends
//!   and drops heartbeats on that connection; servers read only `features=` there;
//! - the dumper sends and drops them only once the REP said `heartbeat=`.
//!
//! What this module must not do: decide when a beat is due (the shells' timers do) or ask
//! for the heartbeat on any request but a noop.

use std::time::Duration;

use crate::features::Features;

/// The longest interval either end accepts, seconds.
pub const MAX_SECS: u64 = 3600;

/// The noop REQ ([`crate::request::noop_request`]) asking for a heartbeat every `every`
/// (whole seconds, 1 to [`MAX_SECS`]).
pub fn noop_request_asking(ours: &Features, every: Duration) -> Vec<u8> {
    with_option(crate::request::noop_request(ours), every)
}

/// The noop REP of ours granting a heartbeat every `every`.
pub fn grant(reply: Vec<u8>, every: Duration) -> Vec<u8> {
    with_option(reply, every)
}

/// The interval a noop REQ (the body after `SERVICE noop`, or all of it) asks for: `None`
/// when it asks for none or for one outside 1 to [`MAX_SECS`] seconds.
pub fn asked(body: &[u8]) -> Option<Duration> {
    option_secs(body)
}

/// The interval a noop REP granted: `None` from a client that does not speak it (the real
/// amandad) or a value outside 1 to [`MAX_SECS`] seconds.
pub fn granted(body: &[u8]) -> Option<Duration> {
    option_secs(body)
}

/// Appends `heartbeat=<secs>;` to the first `OPTIONS` line of `body` (or adds the line).
fn with_option(body: Vec<u8>, every: Duration) -> Vec<u8> {
    let secs = every.as_secs().clamp(1, MAX_SECS);
    let token = format!("heartbeat={secs};");
    let line_start = body
        .split_inclusive(|&b| b == b'\n')
        .scan(0, |at, line| {
            let start = *at;
            *at += line.len();
            Some((start, line))
        })
        .find(|(_, line)| line.starts_with(b"OPTIONS "));
    let Some((start, line)) = line_start else {
        let mut out = body;
        out.extend_from_slice(format!("OPTIONS {token}\n").as_bytes());
        return out;
    };
    let end = start + line.strip_suffix(b"\n").unwrap_or(line).len();
    let mut out = body;
    out.splice(end..end, token.into_bytes());
    out
}

/// `heartbeat=<secs>` of the first `OPTIONS` line, in range.
fn option_secs(body: &[u8]) -> Option<Duration> {
    let line = body
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"OPTIONS "))?;
    let value = line
        .split(|&b| b == b';')
        .find_map(|tok| tok.strip_prefix(b"heartbeat="))?;
    if value.is_empty() || value.len() > 4 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (1..=MAX_SECS)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    const TEN: Duration = Duration::from_secs(10);

    // issue 14: the ask rides on the noop's OPTIONS line, after the features the real
    // server sends, and our amandad reads it back.
    #[test]
    fn the_noop_asks_on_its_options_line_and_amandad_reads_the_interval() {
        let f = Features::amanda_3_5_1();
        let req = noop_request_asking(&f, TEN);
        let plain = crate::request::noop_request(&f);
        let want = String::from_utf8(plain)
            .unwrap()
            .replace(";\n", ";heartbeat=10;\n");
        assert_eq!(String::from_utf8(req.clone()).unwrap(), want);
        assert!(want.contains(";heartbeat=10;\n"), "{want}");
        assert_eq!(asked(&req), Some(TEN));
        // A parser that reads only features= (the real server's) still finds them.
        let line = req
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"OPTIONS "))
            .unwrap();
        assert_eq!(Options::parse_line(line).unwrap().options.features, Some(f));
    }

    // issue 14: a real amandad's noop REP grants nothing; ours grants the interval.
    #[test]
    fn only_a_reply_that_says_heartbeat_grants_it() {
        let real = b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;\n".to_vec();
        assert_eq!(granted(&real), None);
        let ours = grant(real.clone(), TEN);
        assert_eq!(
            ours,
            b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;heartbeat=10;\n"
        );
        assert_eq!(granted(&ours), Some(TEN));
        assert_eq!(grant(Vec::new(), TEN), b"OPTIONS heartbeat=10;\n");
    }

    // issue 14: a hostile or broken interval is no heartbeat at all (never a busy loop of
    // beats nor an overflow).
    #[test]
    fn intervals_out_of_range_or_malformed_are_refused() {
        for bad in [
            "0",
            "3601",
            "99999",
            "-1",
            "",
            "1e3",
            " 10",
            "10 ",
            "+10",
            "18446744073709551616",
        ] {
            let body = format!("OPTIONS features=01;heartbeat={bad};\n");
            assert_eq!(asked(body.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(
            asked(b"OPTIONS heartbeat=3600;\n"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            asked(b"OPTIONS heartbeat=1\n"),
            Some(Duration::from_secs(1))
        );
        // Only the OPTIONS line counts, and only a whole token.
        assert_eq!(asked(b"GARBAGE heartbeat=10;\n"), None);
        assert_eq!(asked(b"OPTIONS xheartbeat=10;\n"), None);
        assert_eq!(asked(b"SERVICE noop\n"), None);
        // The interval asked for is whole seconds within the bound.
        let r = noop_request_asking(&Features::amanda_3_5_1(), Duration::from_secs(99_999));
        assert_eq!(asked(&r), Some(Duration::from_secs(MAX_SECS)));
    }
}
