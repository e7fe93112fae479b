//! Rate-limited logging of refusals: the log grows by at most one summary line per
//! interval however many requests and connections are refused.
//!
//! The first refusal after a quiet interval is logged at once (an admin looking at a
//! failing amcheck sees why); the rest of that interval, and of every following interval
//! with refusals, go into one line, "refused N requests/connections from M peers in the
//! last 60 s: ...", with the count per reason and one example. Each refusal is still logged
//! at debug by the caller. Sans-IO: time is an argument, lines are returned.
//!
//! What this module must not do: write the log itself, or keep more than a bounded set of
//! peer addresses.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why a request, datagram or connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The peer's name failed amandad's forward-confirmed check.
    NameCheck,
    /// A request refused with a NAK (port, .amandahosts, service).
    Nak,
    /// A connection closed to stay under the connection cap.
    OverCap,
    /// A connection closed for making no accepted request in time.
    Unauthenticated,
    /// A connection closed, or a datagram dropped, to stay within the partial-input budget.
    Budget,
    /// The name lookup queue was full.
    ResolverBusy,
    /// A connection closed because its peer did not read its replies.
    Stalled,
    /// A connection closed because it did not carry Amanda frames.
    BadFraming,
    /// A data-stream connection from another address than the requesting server's.
    WrongDataPeer,
    /// A request beyond the per-connection limit.
    TooManyRequests,
    /// Descriptors ran out while accepting.
    NoDescriptors,
    /// A datagram that is not an Amanda packet.
    Malformed,
    /// A reply that could not be sent (a handle too long to echo, a local firewall).
    SendFailed,
    /// auth ssl: the TLS handshake or a certificate check failed.
    Tls,
}

const REASONS: usize = 14;

impl Reason {
    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Reason::NameCheck => "failed the name check",
            Reason::Nak => "refused with a NAK",
            Reason::OverCap => "connections over the cap",
            Reason::Unauthenticated => "connections without a request in time",
            Reason::Budget => "over the partial-input budget",
            Reason::ResolverBusy => "name lookups busy",
            Reason::Stalled => "connections not reading their replies",
            Reason::BadFraming => "connections not speaking Amanda frames",
            Reason::WrongDataPeer => "data connections from another address than the server's",
            Reason::TooManyRequests => "requests over the per-connection limit",
            Reason::NoDescriptors => "connections while out of descriptors",
            Reason::Malformed => "malformed datagrams",
            Reason::SendFailed => "replies that could not be sent",
            Reason::Tls => "ssl connections refused (TLS or certificate checks)",
        }
    }

    const ALL: [Reason; REASONS] = [
        Reason::NameCheck,
        Reason::Nak,
        Reason::OverCap,
        Reason::Unauthenticated,
        Reason::Budget,
        Reason::ResolverBusy,
        Reason::Stalled,
        Reason::BadFraming,
        Reason::WrongDataPeer,
        Reason::TooManyRequests,
        Reason::NoDescriptors,
        Reason::Malformed,
        Reason::SendFailed,
        Reason::Tls,
    ];
}

/// Distinct peers counted per interval, at most.
const MAX_PEERS: usize = 65_536;

/// Characters of the example kept.
const MAX_EXAMPLE: usize = 300;

struct Window {
    start: Instant,
    counts: [u64; REASONS],
    total: u64,
    peers: HashSet<IpAddr>,
    peers_capped: bool,
    example: Option<String>,
}

impl Window {
    fn new(start: Instant) -> Window {
        Window {
            start,
            counts: [0; REASONS],
            total: 0,
            peers: HashSet::new(),
            peers_capped: false,
            example: None,
        }
    }
}

/// The refusal counter.
pub struct RefusalLog {
    interval: Duration,
    /// Log the first refusal after a quiet interval at once.
    announce_first: bool,
    /// Open while refusals keep coming; closed after an interval without any.
    window: Option<Window>,
}

impl RefusalLog {
    /// `announce_first`: log the first refusal after a quiet interval at once (not for a
    /// process that serves one connection: it would be a line per connection).
    pub fn new(interval: Duration, announce_first: bool) -> RefusalLog {
        RefusalLog {
            interval: interval.max(Duration::from_secs(1)),
            announce_first,
            window: None,
        }
    }

    /// Counts a refusal of `peer` (if known). Returns a line to log now when this is the
    /// first refusal after a quiet interval; otherwise it goes into the next summary.
    pub fn record(
        &mut self,
        now: Instant,
        peer: Option<IpAddr>,
        reason: Reason,
        detail: &str,
    ) -> Option<String> {
        if self.window.is_none() && !self.announce_first {
            self.window = Some(Window::new(now));
        }
        let Some(w) = &mut self.window else {
            self.window = Some(Window::new(now));
            let who = peer.map(|p| format!(" from {p}")).unwrap_or_default();
            return Some(format!(
                "refused{who} ({}): {}; further refusals are summarised every {} s",
                reason.label(),
                clip(detail),
                self.interval.as_secs()
            ));
        };
        w.counts[reason.index()] += 1;
        w.total += 1;
        if let Some(p) = peer {
            if w.peers.len() < MAX_PEERS {
                w.peers.insert(p);
            } else if !w.peers.contains(&p) {
                w.peers_capped = true;
            }
        }
        if w.example.is_none() {
            let who = peer.map(|p| format!("{p}: ")).unwrap_or_default();
            w.example = Some(format!("{who}{}", clip(detail)));
        }
        None
    }

    /// When [`RefusalLog::poll`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.window.as_ref().map(|w| w.start + self.interval)
    }

    /// The summary line of an interval that ended with refusals in it; closes the window
    /// after an interval without any.
    pub fn poll(&mut self, now: Instant) -> Option<String> {
        let w = self.window.as_ref()?;
        if now < w.start + self.interval {
            return None;
        }
        if w.total == 0 {
            self.window = None;
            return None;
        }
        let w = self.window.replace(Window::new(now))?;
        let mut line = format!(
            "refused {} requests/connections from {}{} peers in the last {} s:",
            w.total,
            if w.peers_capped { "more than " } else { "" },
            w.peers.len(),
            now.saturating_duration_since(w.start).as_secs()
        );
        let mut first = true;
        for r in Reason::ALL {
            let n = w.counts[r.index()];
            if n > 0 {
                let sep = if first { " " } else { ", " };
                first = false;
                let _ = write!(line, "{sep}{n} {}", r.label());
            }
        }
        if let Some(e) = &w.example {
            let _ = write!(line, "; e.g. {e}");
        }
        Some(line)
    }
}

fn clip(s: &str) -> String {
    let s = s.trim_end();
    match s.char_indices().nth(MAX_EXAMPLE) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + n)))
    }

    /// Issue 10: every refusal logged a line (67 MiB of REQs grew the log by 127 MB).
    /// Under a steady flood: one line at the start, then one summary per interval.
    #[test]
    fn a_flood_of_refusals_logs_one_summary_per_interval() {
        let mut r = RefusalLog::new(Duration::from_secs(60), true);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // 10 minutes, 1000 refusals a second from 10,000 addresses.
        for ms in 0..600_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if let Some(l) = r.poll(now) {
                lines.push(l);
            }
            let reason = if ms % 2 == 0 {
                Reason::Nak
            } else {
                Reason::OverCap
            };
            if let Some(l) = r.record(now, ip(ms as u32 % 10_000), reason, "port 40000 not secure")
            {
                lines.push(l);
            }
        }
        assert_eq!(lines.len(), 1 + 9, "{lines:#?}");
        assert!(
            lines[0]
                .starts_with("refused from 127.0.0.0 (refused with a NAK): port 40000 not secure")
        );
        assert_eq!(
            lines[1],
            "refused 59999 requests/connections from 10000 peers in the last 60 s: 29999 refused with a NAK, 30000 connections over the cap; e.g. 127.0.0.1: port 40000 not secure"
        );
    }

    #[test]
    fn a_quiet_interval_closes_the_window_and_the_next_refusal_is_logged_at_once() {
        let mut r = RefusalLog::new(Duration::from_secs(60), true);
        let t0 = Instant::now();
        assert!(r.record(t0, ip(1), Reason::NameCheck, "x").is_some());
        assert!(r.record(t0, ip(1), Reason::NameCheck, "x").is_none());
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(60)));
        let s = r.poll(t0 + Duration::from_secs(60)).unwrap();
        assert!(
            s.starts_with("refused 1 requests/connections from 1 peers"),
            "{s}"
        );
        assert!(r.poll(t0 + Duration::from_secs(120)).is_none());
        assert_eq!(r.deadline(), None);
        assert!(
            r.record(t0 + Duration::from_secs(130), ip(2), Reason::Nak, "y")
                .is_some()
        );
    }

    #[test]
    fn a_one_connection_process_announces_nothing_and_summarises_the_rest() {
        let mut r = RefusalLog::new(Duration::from_secs(60), false);
        let t0 = Instant::now();
        assert!(r.record(t0, ip(1), Reason::Nak, "x").is_none());
        assert!(r.record(t0, ip(1), Reason::Nak, "x").is_none());
        let s = r.poll(t0 + Duration::from_secs(60)).unwrap();
        assert!(
            s.starts_with("refused 2 requests/connections from 1 peers"),
            "{s}"
        );
    }
}
